/* net.h — network primitives over netlink (libnl-3, libnl-route-3): named network namespaces,
 * veth pairs, bridges, TAP devices, IPv4 addresses and routes, link state, and the few sysctls
 * riklet needs. Synchronous (netlink answers in microseconds) and idempotent where it makes
 * sense, so that re-adoption after a crash converges instead of failing on leftovers:
 * creating what exists returns 1 instead of 0, deleting what is gone returns 0.
 *
 * Link, address and route calls act on the network namespace of the calling thread. To act inside
 * another namespace, bracket the calls with rk_netns_enter / rk_netns_leave (riklet runs on one
 * thread, so nothing else observes the switch). */
#ifndef RK_NET_H
#define RK_NET_H

#include <stddef.h>
#include "rk.h"

#define RK_NET_IFNAMSIZ 16 /* kernel IFNAMSIZ: at most 15 characters + NUL */

/* A link name the kernel and riklet accept: 1..15 chars of [A-Za-z0-9_.-], not "." or "..".
 * Returns 1 if valid, else 0. */
int rk_net_valid_ifname(const char *name);
/* Parse "a.b.c.d/len" (len 0..32; "a.b.c.d" alone means /32). Returns 0, or -1 with e filled. */
int rk_net_parse_cidr(const char *cidr, unsigned *addr_be, int *prefix, rk_err *e);

/* ---- network namespaces ------------------------------------------------------------------ */
/* A named netns is a file DIR/NAME on which a namespace is bind-mounted (like `ip netns add`);
 * DIR is made a shared mount point so that later mount namespaces (containers) see it.
 * NAME must be a safe path component ([A-Za-z0-9._-], <= 64 chars). */
/* Create: 0 created, 1 already existed (and was a live namespace), < 0 error.
 * A file left without a namespace mounted on it (crash mid-create) is repaired. */
int rk_netns_add(const char *dir, const char *name, rk_err *e);
/* Delete (umount + unlink). 0 also when it did not exist. */
int rk_netns_del(const char *dir, const char *name, rk_err *e);
/* 1 if DIR/NAME is a mounted namespace, 0 if not, < 0 on bad input. */
int rk_netns_exists(const char *dir, const char *name, rk_err *e);
/* Validated path DIR/NAME into buf. */
int rk_netns_path(const char *dir, const char *name, char *buf, size_t len, rk_err *e);
/* Names of the namespaces in DIR (entries that are mounted namespaces). *names is one malloc'ed
 * block (free(*names) frees all); *n their count. A missing DIR gives 0 names. */
int rk_netns_list(const char *dir, char ***names, size_t *n, rk_err *e);
/* Undo what rk_netns_add did to DIR itself: unmount the bind mount of DIR onto itself (made so
 * namespaces propagate), only when it is that (same filesystem as its parent) and DIR is empty.
 * 1 unmounted, 0 nothing of riklet's there, < 0 on failure. */
int rk_netns_dir_release(const char *dir, rk_err *e);
/* Switch the calling thread into the namespace at path (a DIR/NAME file or /proc/PID/ns/net).
 * Returns an fd for the namespace we were in (>= 0), to give to rk_netns_leave. */
int rk_netns_enter(const char *path, rk_err *e);
/* Go back to the namespace saved by rk_netns_enter and close saved. */
int rk_netns_leave(int saved, rk_err *e);

/* ---- links --------------------------------------------------------------------------------- */
typedef struct rk_net_link {
	int index;
	char name[RK_NET_IFNAMSIZ];
	char kind[16]; /* "veth", "bridge", "tun", ... ("" for devices without a kind, e.g. lo) */
	int up;	       /* IFF_UP set */
	int master;    /* ifindex of the bridge it is enslaved to, 0 if none */
	unsigned mtu;
	char mac[18]; /* "aa:bb:cc:dd:ee:ff" or "" */
} rk_net_link;

/* Look a link up by name: 1 found (out filled if non-NULL), 0 absent, < 0 error. */
int rk_net_link_get(const char *name, rk_net_link *out, rk_err *e);
/* All links of the current namespace (malloc'ed array, free()). */
int rk_net_link_list(rk_net_link **out, size_t *n, rk_err *e);
/* Delete a link: 0 (also when it did not exist). Deleting one end of a veth deletes both. */
int rk_net_link_del(const char *name, rk_err *e);
/* Set a link up (up=1) or down (up=0). */
int rk_net_link_set_up(const char *name, int up, rk_err *e);
/* Enslave name to bridge master (master NULL or "" = release). Idempotent. */
int rk_net_link_set_master(const char *name, const char *master, rk_err *e);
/* Move a link into the namespace open on nsfd (it disappears from the current namespace). */
int rk_net_link_set_netns(const char *name, int nsfd, rk_err *e);
/* Set the MTU. */
int rk_net_link_set_mtu(const char *name, unsigned mtu, rk_err *e);

/* Bridge: 0 created, 1 existed (as a bridge), < 0 error (e.g. the name is taken by a non-bridge). */
int rk_net_bridge_add(const char *name, rk_err *e);
/* veth pair: host end `name` stays here; `peer` is created directly inside the namespace open on
 * peer_nsfd (-1: here). 0 created, 1 `name` already existed as a veth, < 0 error. */
int rk_net_veth_add(const char *name, const char *peer, int peer_nsfd, rk_err *e);
/* Persistent TAP device (TUNSETIFF IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, TUNSETPERSIST). owner_uid < 0:
 * no owner. 0 created, 1 existed as a tun/tap device, < 0 error. */
int rk_net_tap_add(const char *name, int owner_uid, rk_err *e);

/* ---- addresses and routes ----------------------------------------------------------------- */
/* Add IPv4 "a.b.c.d/len" to link. 0 added, 1 was already there. */
int rk_net_addr_add(const char *ifname, const char *cidr, rk_err *e);
/* Remove it: 0 (also when it or the link was already gone). */
int rk_net_addr_del(const char *ifname, const char *cidr, rk_err *e);
/* IPv4 addresses of a link as "a.b.c.d/len" strings; one malloc'ed block (free(*out)). */
int rk_net_addr_list(const char *ifname, char ***out, size_t *n, rk_err *e);
/* Add or replace a route in the main table. dst is "default" or a CIDR; via a gateway IPv4 or
 * NULL; dev a link name or NULL (at least one of via/dev). Re-adding converges (NLM_F_REPLACE). */
int rk_net_route_add(const char *dst, const char *via, const char *dev, rk_err *e);
/* Delete a route to dst (and via/dev if given): 0 also when absent. */
int rk_net_route_del(const char *dst, const char *via, const char *dev, rk_err *e);

/* What a Pod's end of the network is, read from the current namespace through one netlink socket
 * (re-adoption checks every Pod: one namespace switch and one socket for all, instead of one per
 * repair call). found/up: link ifname exists / is up; lo_up: lo is up; addrs: ifname's IPv4
 * addresses ("a.b.c.d/len", the first RK_NET_VIEW_ADDRS); gateway: the gateway of the main table's
 * default route ("" when there is none or it has no gateway). 0, or < 0 with e filled. */
#define RK_NET_VIEW_ADDRS 8
typedef struct rk_net_view {
	int found, up, lo_up;
	int index; /* ifname's ifindex (0: not found) */
	size_t naddrs;
	char addrs[RK_NET_VIEW_ADDRS][20];
	char gateway[16];
} rk_net_view;
int rk_net_view_get(const char *ifname, rk_net_view *out, rk_err *e);

/* ---- one message of a dump, exposed for tests ----------------------------------------------- */
/* rk_net_link_list and rk_net_view_get run libnl's receive loop (nl_recvmsgs: each message's
 * length checked against what was read, the sequence, NLMSG_ERROR, NLM_F_DUMP_INTR) and give each
 * message to these. h holds h->nlmsg_len bytes; nothing past them is read (nlmsg_parse, with
 * policies: a message shorter than its fixed header, a u32 shorter than 4 bytes, a name without
 * its NUL are errors). */
struct nlmsghdr;
/* An RTM_NEWLINK message as *out: 1; 0 another kind of message; < 0 malformed (e says why). */
int rk_net_link_msg(struct nlmsghdr *h, rk_net_link *out, rk_err *e);
/* An RTM_NEWLINK, RTM_NEWADDR or RTM_NEWROUTE message of rk_net_view_get's dumps, for link ifname,
 * into *v (start from a zeroed one; addresses count once v->index is known): 0, < 0 malformed. */
int rk_net_view_msg(struct nlmsghdr *h, const char *ifname, rk_net_view *v, rk_err *e);

/* Forget the neighbour (ARP) entry of IPv4 ip on link ifname: 0, also when there is none or the
 * link is gone. An address handed to a new interface (a freed pod address given to the next Pod,
 * whose veth has a new MAC) is unreachable until a stale entry for it expires; dropping the entry
 * makes the node resolve it again at once. */
int rk_net_neigh_del(const char *ifname, const char *ip, rk_err *e);

/* ---- sysctls (of the current namespace, through /proc/sys) ------------------------------- */
/* key in dotted form under net., e.g. "net.ipv4.ip_forward". Components [A-Za-z0-9_-]. */
int rk_net_sysctl_set(const char *key, const char *value, rk_err *e);
/* Read into buf (trailing newline stripped). */
int rk_net_sysctl_get(const char *key, char *buf, size_t len, rk_err *e);
/* net.ipv4.ip_forward = on. */
int rk_net_set_ip_forward(int on, rk_err *e);
/* net.ipv4.conf.<ifname>.route_localnet = on (ifname may contain dots). */
int rk_net_set_route_localnet(const char *ifname, int on, rk_err *e);

#endif
