/* net.c — netlink primitives (libnl-3/libnl-route-3), named netns, TAP and sysctls. See net.h.
 * Every call opens its own netlink socket: a socket belongs to the namespace it was created in,
 * and callers switch namespaces between calls. */
#include "net.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <limits.h>
#include <stdlib.h>
#include <linux/if_tun.h>
#include <linux/magic.h>
#include <linux/rtnetlink.h>

#include <netlink/netlink.h>
#include <netlink/errno.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>
#include <netlink/route/neighbour.h>
#include "nl_lazy.h" /* libnl is loaded with dlopen by the first nl_open */

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

/* ---- validation -------------------------------------------------------------------------- */

int rk_net_valid_ifname(const char *name)
{
	if (!name || !*name || strlen(name) >= RK_NET_IFNAMSIZ)
		return 0;
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      *p == '.' || *p == '-'))
			return 0;
	return 1;
}

static int check_ifname(const char *name, rk_err *e)
{
	if (rk_net_valid_ifname(name))
		return 0;
	return rk_errf(e, EINVAL,
		       "invalid link name '%.40s': use 1 to 15 characters of [A-Za-z0-9_.-] (kernel IFNAMSIZ)",
		       name ? name : "(null)");
}

int rk_net_parse_cidr(const char *cidr, unsigned *addr_be, int *prefix, rk_err *e)
{
	char buf[32];
	if (!cidr || strlen(cidr) >= sizeof buf)
		return rk_errf(e, EINVAL, "invalid IPv4 address '%.40s': expected a.b.c.d/len", cidr ? cidr : "(null)");
	strcpy(buf, cidr);
	int len = 32;
	char *slash = strchr(buf, '/');
	if (slash) {
		*slash = 0;
		char *end;
		long v = strtol(slash + 1, &end, 10);
		if (!slash[1] || *end || v < 0 || v > 32)
			return rk_errf(e, EINVAL, "invalid prefix length in '%s': expected 0..32", cidr);
		len = (int)v;
	}
	struct in_addr a;
	if (inet_pton(AF_INET, buf, &a) != 1)
		return rk_errf(e, EINVAL, "invalid IPv4 address '%s': expected a.b.c.d/len", cidr);
	if (addr_be)
		*addr_be = a.s_addr;
	if (prefix)
		*prefix = len;
	return 0;
}

/* ---- netlink plumbing -------------------------------------------------------------------- */

static void sock_freep(struct nl_sock **s)
{
	if (*s)
		nl_socket_free(*s);
}
static void link_putp(struct rtnl_link **l)
{
	if (*l)
		rtnl_link_put(*l);
}
static void addr_putp(struct nl_addr **a)
{
	if (*a)
		nl_addr_put(*a);
}
static void cache_freep(struct nl_cache **c)
{
	if (*c)
		nl_cache_free(*c);
}
#define AUTO_SOCK __attribute__((cleanup(sock_freep))) struct nl_sock
#define AUTO_LINK __attribute__((cleanup(link_putp))) struct rtnl_link
#define AUTO_NLADDR __attribute__((cleanup(addr_putp))) struct nl_addr
#define AUTO_CACHE __attribute__((cleanup(cache_freep))) struct nl_cache

/* libnl folds errno into its own codes; give back the closest errno for rk_err.code. */
static int nle_errno(int nle)
{
	switch (nle < 0 ? -nle : nle) {
	case NLE_EXIST:
		return EEXIST;
	case NLE_OBJ_NOTFOUND:
		return ENOENT;
	case NLE_NODEV:
		return ENODEV;
	case NLE_NOADDR:
		return EADDRNOTAVAIL;
	case NLE_PERM:
	case NLE_NOACCESS:
		return EPERM;
	case NLE_INVAL:
		return EINVAL;
	case NLE_BUSY:
		return EBUSY;
	case NLE_NOMEM:
		return ENOMEM;
	case NLE_OPNOTSUPP:
		return EOPNOTSUPP;
	case NLE_RANGE:
		return ERANGE;
	case NLE_DUMP_INTR:
		return EAGAIN;
	default:
		return EIO;
	}
}

static int nl_fail(rk_err *e, int nle, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int nl_fail(rk_err *e, int nle, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	const char *hint = "";
	int code = nle_errno(nle);
	if (code == EPERM)
		hint = " (riklet needs CAP_NET_ADMIN: run it as root)";
	else if (code == EAGAIN)
		hint = " (a change during the dump; try again)";
	return rk_errf(e, code, "%s: netlink: %s%s", what, nl_geterror(nle), hint);
}

static struct nl_sock *nl_open(rk_err *e)
{
	if (rk_nl_load(e) < 0)
		return NULL;
	struct nl_sock *s = nl_socket_alloc();
	if (!s) {
		rk_errf(e, ENOMEM, "netlink: cannot allocate a socket");
		return NULL;
	}
	int r = nl_connect(s, NETLINK_ROUTE);
	if (r < 0) {
		nl_fail(e, r, "netlink: cannot open a NETLINK_ROUTE socket");
		nl_socket_free(s);
		return NULL;
	}
	return s;
}

/* ---- dumps: libnl's request and receive loop, no cache ----------------------------------------- */
/* The reads of a re-adoption (net.view in each of 1,000 namespaces, net.links of 1,000 veths) take
 * each message of the kernel's dump in libnl's receive callback: libnl's caches allocated an object
 * per link, address and route, with its attributes copied, only to be walked once and freed (at
 * 1,000 Pods, ~3,000 caches per restart). libnl still does the request, the receive loop (each
 * message's length against what was read, the sequence, NLMSG_ERROR; NLM_F_DUMP_INTR is an error
 * once the dump is drained) and the attributes (nlmsg_parse under the policies below: a u32 shorter
 * than 4 bytes, a name without its NUL, a message shorter than its fixed header are errors). */
static const struct nla_policy link_policy[IFLA_MAX + 1] = {
	[IFLA_IFNAME] = {.type = NLA_STRING},
	[IFLA_MASTER] = {.type = NLA_U32},
	[IFLA_MTU] = {.type = NLA_U32},
	[IFLA_LINKINFO] = {.type = NLA_NESTED},
};
static const struct nla_policy linkinfo_policy[IFLA_INFO_MAX + 1] = {
	[IFLA_INFO_KIND] = {.type = NLA_STRING},
};
static const struct nla_policy route_policy[RTA_MAX + 1] = {
	[RTA_TABLE] = {.type = NLA_U32},
};

static void mac_str(const unsigned char *b, rk_net_link *o)
{
	snprintf(o->mac, sizeof o->mac, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
}

static int msg_bad(rk_err *e, const struct nlmsghdr *h, int nle)
{
	return rk_errf(e, EPROTO, "netlink: a malformed message from the kernel (type %u, %u bytes): %s", h->nlmsg_type,
		       h->nlmsg_len, nl_geterror(nle));
}

int rk_net_link_msg(struct nlmsghdr *h, rk_net_link *o, rk_err *e)
{
	if (h->nlmsg_type != RTM_NEWLINK)
		return 0;
	if (rk_nl_load(e) < 0)
		return -1;
	struct nlattr *tb[IFLA_MAX + 1], *li[IFLA_INFO_MAX + 1];
	int r = nlmsg_parse(h, sizeof(struct ifinfomsg), tb, IFLA_MAX, link_policy);
	if (r >= 0 && tb[IFLA_LINKINFO])
		r = nla_parse_nested(li, IFLA_INFO_MAX, tb[IFLA_LINKINFO], linkinfo_policy);
	if (r < 0)
		return msg_bad(e, h, r);
	const struct ifinfomsg *ifi = nlmsg_data(h);
	memset(o, 0, sizeof *o);
	o->index = ifi->ifi_index;
	o->up = !!(ifi->ifi_flags & IFF_UP);
	if (tb[IFLA_IFNAME])
		nla_strlcpy(o->name, tb[IFLA_IFNAME], sizeof o->name);
	if (tb[IFLA_MASTER])
		o->master = (int)nla_get_u32(tb[IFLA_MASTER]);
	if (tb[IFLA_MTU])
		o->mtu = nla_get_u32(tb[IFLA_MTU]);
	if (tb[IFLA_LINKINFO] && li[IFLA_INFO_KIND])
		nla_strlcpy(o->kind, li[IFLA_INFO_KIND], sizeof o->kind);
	if (tb[IFLA_ADDRESS] && nla_len(tb[IFLA_ADDRESS]) == 6)
		mac_str(nla_data(tb[IFLA_ADDRESS]), o);
	return 1;
}

struct dump {
	int (*fn)(struct nlmsghdr *h, void *ud, rk_err *e); /* < 0 with e filled stops the dump */
	void *ud;
	rk_err *e;
	int failed;
};

static int dump_cb(struct nl_msg *m, void *arg)
{
	struct dump *d = arg;
	if (d->fn(nlmsg_hdr(m), d->ud, d->e) < 0) {
		d->failed = 1;
		return -NLE_FAILURE; /* (recvmsgs stops on a negative return) */
	}
	return NL_OK;
}

/* A NETLINK_ROUTE socket for dumps (dump_req), set up once: every message of each dump's answer
 * goes to d->fn, d being the one struct dump of the socket's life. NULL with e filled. */
static struct nl_sock *nl_open_dump(struct dump *d, rk_err *e)
{
	struct nl_sock *s = nl_open(e);
	if (!s)
		return NULL;
	/* one read of up to 64 KiB (more than the 32 KiB the kernel puts in one read of a dump): without
	 * it libnl peeks at each read's size first, two recvmsg per read; a read that does not fit is
	 * an error (NLE_MSG_TRUNC), nothing is lost silently */
	int r = nl_socket_set_msg_buf_size(s, 64 * 1024);
	if (r >= 0)
		r = nl_socket_modify_cb(s, NL_CB_VALID, NL_CB_CUSTOM, dump_cb, d);
	if (r < 0) {
		nl_fail(e, r, "netlink: cannot set up a socket for a dump");
		nl_socket_free(s);
		return NULL;
	}
	return s;
}

/* Dump request type (RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE) for family, its fixed header hdrlen
 * bytes, on s from nl_open_dump(d): d->fn sees every message of the answer. 0, or < 0 with d->e
 * filled (what names the dump). */
static int dump_req(struct nl_sock *s, int type, unsigned char family, size_t hdrlen, struct dump *d, const char *what)
{
	/* (ifi_family, ifa_family and rtm_family are each their header's first byte) */
	unsigned char body[sizeof(struct ifinfomsg)] = {family};
	int r = nl_send_simple(s, type, NLM_F_DUMP, body, hdrlen);
	if (r >= 0)
		r = nl_recvmsgs_default(s);
	if (d->failed)
		return rk_err_prefix(d->e, "%s", what);
	if (r < 0)
		return nl_fail(d->e, r, "%s", what);
	return 0;
}

struct link_acc {
	rk_net_link *v;
	size_t n, cap;
};

static int link_acc_cb(struct nlmsghdr *h, void *ud, rk_err *e)
{
	struct link_acc *a = ud;
	if (rk_grow(&a->v, &a->cap, a->n, sizeof *a->v, 64) < 0)
		return rk_errf(e, ENOMEM, "out of memory");
	int r = rk_net_link_msg(h, &a->v[a->n], e);
	if (r > 0)
		a->n++;
	return r;
}

/* 1 + *out on found, 0 absent, < 0 error. */
static int link_lookup(struct nl_sock *s, const char *name, struct rtnl_link **out, rk_err *e)
{
	*out = NULL;
	int r = rtnl_link_get_kernel(s, 0, name, out);
	if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV)
		return 0;
	if (r < 0)
		return nl_fail(e, r, "looking up link %s", name);
	return 1;
}

static void link_fill(struct rtnl_link *l, rk_net_link *o)
{
	memset(o, 0, sizeof *o);
	o->index = rtnl_link_get_ifindex(l);
	const char *n = rtnl_link_get_name(l);
	snprintf(o->name, sizeof o->name, "%s", n ? n : "");
	const char *k = rtnl_link_get_type(l);
	snprintf(o->kind, sizeof o->kind, "%s", k ? k : "");
	o->up = !!(rtnl_link_get_flags(l) & IFF_UP);
	o->master = rtnl_link_get_master(l);
	o->mtu = rtnl_link_get_mtu(l);
	struct nl_addr *mac = rtnl_link_get_addr(l);
	if (mac && nl_addr_get_len(mac) == 6)
		mac_str(nl_addr_get_binary_addr(mac), o);
}

int rk_net_link_get(const char *name, rk_net_link *out, rk_err *e)
{
	if (check_ifname(name, e) < 0)
		return -1;
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	AUTO_LINK *l = NULL;
	int r = link_lookup(s, name, &l, e);
	if (r > 0 && out)
		link_fill(l, out);
	return r;
}

int rk_net_link_list(rk_net_link **out, size_t *n, rk_err *e)
{
	*out = NULL;
	*n = 0;
	struct link_acc a = {0};
	struct dump d = {link_acc_cb, &a, e, 0};
	AUTO_SOCK *s = nl_open_dump(&d, e);
	if (!s)
		return -1;
	if (dump_req(s, RTM_GETLINK, AF_UNSPEC, sizeof(struct ifinfomsg), &d, "listing links") < 0) {
		free(a.v);
		return -1;
	}
	*out = a.v ? a.v : calloc(1, sizeof *a.v);
	if (!*out)
		return rk_errf(e, ENOMEM, "listing links: out of memory");
	*n = a.n;
	return 0;
}

int rk_net_link_del(const char *name, rk_err *e)
{
	if (check_ifname(name, e) < 0)
		return -1;
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	AUTO_LINK *l = NULL;
	int r = link_lookup(s, name, &l, e);
	if (r <= 0)
		return r;
	r = rtnl_link_delete(s, l);
	if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV)
		return 0; /* went away meanwhile (e.g. the other end of a veth was deleted) */
	if (r < 0)
		return nl_fail(e, r, "deleting link %s", name);
	return 0;
}

/* Apply a change built by fn to an existing link. */
static int link_change(const char *name, const char *what, void (*fn)(struct rtnl_link *, long), long arg, rk_err *e)
{
	if (check_ifname(name, e) < 0)
		return -1;
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	AUTO_LINK *l = NULL;
	int r = link_lookup(s, name, &l, e);
	if (r < 0)
		return r;
	if (r == 0)
		return rk_errf(e, ENODEV, "%s on link %s: no such link in this network namespace", what, name);
	AUTO_LINK *ch = rtnl_link_alloc();
	if (!ch)
		return rk_errf(e, ENOMEM, "%s on link %s: out of memory", what, name);
	fn(ch, arg);
	r = rtnl_link_change(s, l, ch, 0);
	if (r < 0)
		return nl_fail(e, r, "%s on link %s", what, name);
	return 0;
}

static void ch_up(struct rtnl_link *c, long up)
{
	if (up)
		rtnl_link_set_flags(c, IFF_UP);
	else
		rtnl_link_unset_flags(c, IFF_UP);
}
static void ch_master(struct rtnl_link *c, long idx)
{
	rtnl_link_set_master(c, (int)idx);
}
static void ch_netns(struct rtnl_link *c, long fd)
{
	rtnl_link_set_ns_fd(c, (int)fd);
}
static void ch_mtu(struct rtnl_link *c, long mtu)
{
	rtnl_link_set_mtu(c, (unsigned)mtu);
}

int rk_net_link_set_up(const char *name, int up, rk_err *e)
{
	return link_change(name, up ? "setting up" : "setting down", ch_up, up, e);
}

int rk_net_link_set_master(const char *name, const char *master, rk_err *e)
{
	int idx = 0;
	if (master && *master) {
		rk_net_link m;
		int r = rk_net_link_get(master, &m, e);
		if (r < 0)
			return r;
		if (r == 0)
			return rk_errf(e, ENODEV, "attaching %s to bridge %s: no such bridge", name, master);
		if (strcmp(m.kind, "bridge"))
			return rk_errf(e, EINVAL, "attaching %s to %s: %s is a '%s' link, not a bridge", name, master,
				       master, m.kind);
		idx = m.index;
	}
	char what[64];
	snprintf(what, sizeof what, "attaching to bridge %s", idx ? master : "(none)");
	return link_change(name, what, ch_master, idx, e);
}

int rk_net_link_set_netns(const char *name, int nsfd, rk_err *e)
{
	if (nsfd < 0)
		return rk_errf(e, EBADF, "moving link %s to another namespace: no namespace fd", name);
	return link_change(name, "moving to another network namespace", ch_netns, nsfd, e);
}

int rk_net_link_set_mtu(const char *name, unsigned mtu, rk_err *e)
{
	if (mtu < 68 || mtu > 65535)
		return rk_errf(e, EINVAL, "setting MTU %u on %s: out of range 68..65535", mtu, name ? name : "");
	return link_change(name, "setting the MTU", ch_mtu, (long)mtu, e);
}

/* Link `name` exists: 1 if it is of kind `kind`, else error naming what it is. */
static int exists_as(const char *name, const char *kind, const char *what, rk_err *e)
{
	rk_net_link l;
	int r = rk_net_link_get(name, &l, e);
	if (r <= 0)
		return r;
	if (strcmp(l.kind, kind))
		return rk_errf(e, EEXIST,
			       "creating %s %s: a link named %s already exists and is a '%s' device, not a %s; "
			       "delete it (ip link del %s) or choose another name",
			       what, name, name, l.kind[0] ? l.kind : "plain", what, name);
	return 1;
}

int rk_net_bridge_add(const char *name, rk_err *e)
{
	if (check_ifname(name, e) < 0)
		return -1;
	int r = exists_as(name, "bridge", "bridge", e);
	if (r != 0)
		return r;
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	AUTO_LINK *l = rtnl_link_bridge_alloc();
	if (!l)
		return rk_errf(e, ENOMEM, "creating bridge %s: out of memory", name);
	rtnl_link_set_name(l, name);
	r = rtnl_link_add(s, l, NLM_F_CREATE | NLM_F_EXCL);
	if (r == -NLE_EXIST)
		return exists_as(name, "bridge", "bridge", e); /* raced with someone else */
	if (r < 0)
		return nl_fail(e, r, "creating bridge %s", name);
	return 0;
}

int rk_net_veth_add(const char *name, const char *peer, int peer_nsfd, rk_err *e)
{
	if (check_ifname(name, e) < 0 || check_ifname(peer, e) < 0)
		return -1;
	int r = exists_as(name, "veth", "veth", e);
	if (r != 0)
		return r;
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	AUTO_LINK *l = rtnl_link_veth_alloc();
	if (!l)
		return rk_errf(e, ENOMEM, "creating veth %s: out of memory", name);
	rtnl_link_set_name(l, name);
	struct rtnl_link *p = rtnl_link_veth_get_peer(l); /* owned by l */
	rtnl_link_set_name(p, peer);
	if (peer_nsfd >= 0)
		rtnl_link_set_ns_fd(p, peer_nsfd);
	rtnl_link_put(p); /* get_peer took a reference */
	r = rtnl_link_add(s, l, NLM_F_CREATE | NLM_F_EXCL);
	if (r == -NLE_EXIST) {
		int x = exists_as(name, "veth", "veth", e);
		if (x != 0)
			return x;
		return rk_errf(e, EEXIST,
			       "creating veth %s with peer %s: the peer name %s is already taken %s; delete it "
			       "or choose another name",
			       name, peer, peer, peer_nsfd >= 0 ? "inside the target network namespace" : "here");
	}
	if (r < 0)
		return nl_fail(e, r, "creating veth pair %s/%s", name, peer);
	return 0;
}

int rk_net_tap_add(const char *name, int owner_uid, rk_err *e)
{
	if (check_ifname(name, e) < 0)
		return -1;
	int r = exists_as(name, "tun", "TAP device", e);
	if (r != 0)
		return r;
	RK_AUTOCLOSE int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return rk_errf(e, errno,
			       "creating TAP %s: open /dev/net/tun: %s (is the tun module loaded? modprobe tun)", name,
			       strerror(errno));
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		return rk_errf(e, errno, "creating TAP %s: TUNSETIFF: %s", name, strerror(errno));
	if (owner_uid >= 0 && ioctl(fd, TUNSETOWNER, (unsigned long)owner_uid) < 0)
		return rk_errf(e, errno, "creating TAP %s: TUNSETOWNER %d: %s", name, owner_uid, strerror(errno));
	if (ioctl(fd, TUNSETPERSIST, 1) < 0)
		return rk_errf(e, errno, "creating TAP %s: TUNSETPERSIST: %s", name, strerror(errno));
	return 0;
}

/* ---- addresses --------------------------------------------------------------------------- */

static int ifindex_of(struct nl_sock *s, const char *name, const char *what, int must, rk_err *e)
{
	AUTO_LINK *l = NULL;
	int r = link_lookup(s, name, &l, e);
	if (r < 0)
		return r;
	if (r == 0)
		return must ? rk_errf(e, ENODEV, "%s: no link named %s in this network namespace", what, name) : 0;
	return rtnl_link_get_ifindex(l);
}

static int addr_op(const char *ifname, const char *cidr, int add, rk_err *e)
{
	if (check_ifname(ifname, e) < 0)
		return -1;
	char what[96];
	snprintf(what, sizeof what, "%s address %s %s %s", add ? "adding" : "removing", cidr ? cidr : "",
		 add ? "to" : "from", ifname);
	unsigned a;
	int plen;
	if (rk_net_parse_cidr(cidr, &a, &plen, e) < 0)
		return rk_err_prefix(e, "%s", what);
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	int idx = ifindex_of(s, ifname, what, add, e);
	if (idx <= 0)
		return idx; /* error, or deleting from a link that is gone */
	AUTO_NLADDR *local = nl_addr_build(AF_INET, &a, 4);
	if (!local)
		return rk_errf(e, ENOMEM, "%s: out of memory", what);
	nl_addr_set_prefixlen(local, plen);
	struct rtnl_addr *ra = rtnl_addr_alloc();
	if (!ra)
		return rk_errf(e, ENOMEM, "%s: out of memory", what);
	rtnl_addr_set_ifindex(ra, idx);
	rtnl_addr_set_family(ra, AF_INET);
	rtnl_addr_set_local(ra, local);
	rtnl_addr_set_prefixlen(ra, plen);
	int r = add ? rtnl_addr_add(s, ra, 0) : rtnl_addr_delete(s, ra, 0);
	rtnl_addr_put(ra);
	if (add && r == -NLE_EXIST)
		return 1;
	if (!add && (r == -NLE_NOADDR || r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV))
		return 0;
	if (r < 0)
		return nl_fail(e, r, "%s", what);
	return 0;
}

int rk_net_addr_add(const char *ifname, const char *cidr, rk_err *e)
{
	return addr_op(ifname, cidr, 1, e);
}
int rk_net_addr_del(const char *ifname, const char *cidr, rk_err *e)
{
	return addr_op(ifname, cidr, 0, e);
}

int rk_net_addr_list(const char *ifname, char ***out, size_t *n, rk_err *e)
{
	*out = NULL;
	*n = 0;
	if (check_ifname(ifname, e) < 0)
		return -1;
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	int idx = ifindex_of(s, ifname, "listing addresses", 1, e);
	if (idx < 0)
		return -1;
	AUTO_CACHE *c = NULL;
	int r = rtnl_addr_alloc_cache(s, &c);
	if (r < 0)
		return nl_fail(e, r, "listing addresses of %s", ifname);
	int cnt = nl_cache_nitems(c);
	/* one block: pointer array followed by the strings (each at most 19 bytes) */
	char **v = malloc((cnt + 1) * (sizeof(char *) + 20));
	if (!v)
		return rk_errf(e, ENOMEM, "listing addresses: out of memory");
	char *str = (char *)(v + cnt + 1);
	size_t k = 0;
	for (struct nl_object *o = nl_cache_get_first(c); o; o = nl_cache_get_next(o)) {
		struct rtnl_addr *ra = (struct rtnl_addr *)o;
		if (rtnl_addr_get_ifindex(ra) != idx || rtnl_addr_get_family(ra) != AF_INET || k >= (size_t)cnt)
			continue;
		struct nl_addr *l = rtnl_addr_get_local(ra);
		if (!l || nl_addr_get_len(l) != 4)
			continue;
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, nl_addr_get_binary_addr(l), ip, sizeof ip);
		v[k] = str + k * 20;
		snprintf(v[k], 20, "%s/%d", ip, rtnl_addr_get_prefixlen(ra));
		k++;
	}
	v[k] = NULL;
	*out = v;
	*n = k;
	return 0;
}

/* ---- neighbours ---------------------------------------------------------------------------- */

int rk_net_neigh_del(const char *ifname, const char *ip, rk_err *e)
{
	if (check_ifname(ifname, e) < 0)
		return -1;
	char what[96];
	snprintf(what, sizeof what, "forgetting the neighbour %s on %s", ip ? ip : "(null)", ifname);
	struct in_addr a;
	if (!ip || inet_pton(AF_INET, ip, &a) != 1)
		return rk_errf(e, EINVAL, "%s: not an IPv4 address", what);
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	int idx = ifindex_of(s, ifname, what, 0, e);
	if (idx <= 0)
		return idx; /* error, or the link (and its neighbours) is gone */
	AUTO_NLADDR *dst = nl_addr_build(AF_INET, &a, 4);
	if (!dst)
		return rk_errf(e, ENOMEM, "%s: out of memory", what);
	struct rtnl_neigh *n = rtnl_neigh_alloc();
	if (!n)
		return rk_errf(e, ENOMEM, "%s: out of memory", what);
	rtnl_neigh_set_ifindex(n, idx);
	rtnl_neigh_set_family(n, AF_INET);
	rtnl_neigh_set_dst(n, dst);
	int r = rtnl_neigh_delete(s, n, 0);
	rtnl_neigh_put(n);
	if (r == -NLE_OBJ_NOTFOUND || r == -NLE_NOADDR || r == -NLE_NODEV)
		return 0;
	if (r < 0)
		return nl_fail(e, r, "%s", what);
	return 0;
}

int rk_net_view_msg(struct nlmsghdr *h, const char *ifname, rk_net_view *v, rk_err *e)
{
	if (h->nlmsg_type == RTM_NEWLINK) {
		rk_net_link l;
		if (rk_net_link_msg(h, &l, e) < 0)
			return -1;
		if (!strcmp(l.name, ifname)) {
			v->found = 1;
			v->up = l.up;
			v->index = l.index;
		} else if (!strcmp(l.name, "lo"))
			v->lo_up = l.up;
		return 0;
	}
	if (h->nlmsg_type != RTM_NEWADDR && h->nlmsg_type != RTM_NEWROUTE)
		return 0;
	if (rk_nl_load(e) < 0)
		return -1;
	if (h->nlmsg_type == RTM_NEWADDR) {
		struct nlattr *tb[IFA_MAX + 1];
		int r = nlmsg_parse(h, sizeof(struct ifaddrmsg), tb, IFA_MAX, NULL);
		if (r < 0)
			return msg_bad(e, h, r);
		const struct ifaddrmsg *ifa = nlmsg_data(h);
		if (v->index <= 0 || (int)ifa->ifa_index != v->index || ifa->ifa_family != AF_INET ||
		    v->naddrs >= RK_NET_VIEW_ADDRS)
			return 0;
		const struct nlattr *l = tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
		if (!l || nla_len(l) != 4)
			return 0;
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, nla_data(l), ip, sizeof ip);
		snprintf(v->addrs[v->naddrs++], sizeof v->addrs[0], "%s/%d", ip, ifa->ifa_prefixlen);
		return 0;
	}
	/* the main table's default routes with one next hop (not RTA_MULTIPATH): the last one's gateway */
	struct nlattr *tb[RTA_MAX + 1];
	int r = nlmsg_parse(h, sizeof(struct rtmsg), tb, RTA_MAX, route_policy);
	if (r < 0)
		return msg_bad(e, h, r);
	const struct rtmsg *rt = nlmsg_data(h);
	unsigned table = tb[RTA_TABLE] ? nla_get_u32(tb[RTA_TABLE]) : rt->rtm_table;
	if (rt->rtm_family != AF_INET || table != RT_TABLE_MAIN || rt->rtm_dst_len != 0 || tb[RTA_MULTIPATH] ||
	    !(tb[RTA_GATEWAY] || tb[RTA_OIF]))
		return 0;
	if (tb[RTA_GATEWAY] && nla_len(tb[RTA_GATEWAY]) == 4)
		inet_ntop(AF_INET, nla_data(tb[RTA_GATEWAY]), v->gateway, sizeof v->gateway);
	return 0;
}

struct view_acc {
	const char *ifname;
	rk_net_view *out;
};

static int view_cb(struct nlmsghdr *h, void *ud, rk_err *e)
{
	struct view_acc *a = ud;
	return rk_net_view_msg(h, a->ifname, a->out, e);
}

int rk_net_view_get(const char *ifname, rk_net_view *out, rk_err *e)
{
	memset(out, 0, sizeof *out);
	if (check_ifname(ifname, e) < 0)
		return -1;
	struct view_acc a = {ifname, out};
	struct dump d = {view_cb, &a, e, 0};
	AUTO_SOCK *s = nl_open_dump(&d, e);
	if (!s)
		return -1;
	if (dump_req(s, RTM_GETLINK, AF_UNSPEC, sizeof(struct ifinfomsg), &d, "listing links") < 0)
		return -1;
	if (out->index > 0) {
		char what[64];
		snprintf(what, sizeof what, "listing addresses of %s", ifname);
		if (dump_req(s, RTM_GETADDR, AF_INET, sizeof(struct ifaddrmsg), &d, what) < 0)
			return -1;
	}
	if (dump_req(s, RTM_GETROUTE, AF_INET, sizeof(struct rtmsg), &d, "listing routes") < 0)
		return -1;
	return 0;
}

/* ---- routes ------------------------------------------------------------------------------ */

static int route_op(const char *dst, const char *via, const char *dev, int add, rk_err *e)
{
	char what[128];
	snprintf(what, sizeof what, "%s route %s%s%s%s%s", add ? "adding" : "deleting", dst ? dst : "(null)",
		 via ? " via " : "", via ? via : "", dev ? " dev " : "", dev ? dev : "");
	if (!dst)
		return rk_errf(e, EINVAL, "%s: no destination", what);
	if (add && !via && !dev)
		return rk_errf(e, EINVAL, "%s: give a gateway (via) or a device (dev)", what);
	unsigned da = 0, ga = 0;
	int dlen = 0;
	if (strcmp(dst, "default") && rk_net_parse_cidr(dst, &da, &dlen, e) < 0)
		return rk_err_prefix(e, "%s", what);
	if (via && rk_net_parse_cidr(via, &ga, NULL, e) < 0)
		return rk_err_prefix(e, "%s", what);
	if (dev && check_ifname(dev, e) < 0)
		return -1;
	AUTO_SOCK *s = nl_open(e);
	if (!s)
		return -1;
	int idx = 0;
	if (dev) {
		idx = ifindex_of(s, dev, what, add, e);
		if (idx < 0)
			return -1;
		if (idx == 0)
			return 0; /* deleting through a link that is gone: its routes went with it */
	}
	struct rtnl_route *rt = rtnl_route_alloc();
	if (!rt)
		return rk_errf(e, ENOMEM, "%s: out of memory", what);
	AUTO_NLADDR *d = nl_addr_build(AF_INET, &da, 4);
	AUTO_NLADDR *g = via ? nl_addr_build(AF_INET, &ga, 4) : NULL;
	if (!d || (via && !g)) {
		rtnl_route_put(rt);
		return rk_errf(e, ENOMEM, "%s: out of memory", what);
	}
	nl_addr_set_prefixlen(d, dlen);
	rtnl_route_set_family(rt, AF_INET);
	rtnl_route_set_table(rt, RT_TABLE_MAIN);
	rtnl_route_set_dst(rt, d);
	if (add) {
		rtnl_route_set_protocol(rt, RTPROT_BOOT);
		rtnl_route_set_scope(rt, via ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
	} else {
		/* wildcards for delete: libnl defaults protocol to static, which would only match
		 * routes added as static */
		rtnl_route_set_scope(rt, RT_SCOPE_NOWHERE);
		rtnl_route_set_protocol(rt, RTPROT_UNSPEC);
	}
	if (via || idx) {
		struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
		if (!nh) {
			rtnl_route_put(rt);
			return rk_errf(e, ENOMEM, "%s: out of memory", what);
		}
		if (g)
			rtnl_route_nh_set_gateway(nh, g);
		if (idx)
			rtnl_route_nh_set_ifindex(nh, idx);
		rtnl_route_add_nexthop(rt, nh); /* rt owns nh */
	}
	int r = add ? rtnl_route_add(s, rt, NLM_F_REPLACE) : rtnl_route_delete(s, rt, 0);
	rtnl_route_put(rt);
	if (!add && (r == -NLE_OBJ_NOTFOUND || r == -NLE_NOADDR || r == -NLE_NODEV))
		return 0;
	if (r < 0) {
		nl_fail(e, r, "%s", what);
		if (add && r == -NLE_INVAL && via)
			rk_err_prefix(e, "(is %s reachable on a connected subnet? add the address first)", via);
		return -1;
	}
	return 0;
}

int rk_net_route_add(const char *dst, const char *via, const char *dev, rk_err *e)
{
	return route_op(dst, via, dev, 1, e);
}
int rk_net_route_del(const char *dst, const char *via, const char *dev, rk_err *e)
{
	return route_op(dst, via, dev, 0, e);
}

/* ---- sysctls ----------------------------------------------------------------------------- */

static int sysctl_path(const char *key, char *path, size_t len, rk_err *e)
{
	if (!key || strncmp(key, "net.", 4) || strlen(key) > 200)
		return rk_errf(e, EINVAL, "sysctl '%.60s': only keys under net. are allowed", key ? key : "(null)");
	size_t o = snprintf(path, len, "/proc/sys/");
	int comp_len = 0;
	for (const char *p = key; *p; p++) {
		char c = *p;
		if (c == '.') {
			if (comp_len == 0)
				return rk_errf(e, EINVAL, "sysctl '%s': empty component", key);
			c = '/';
			comp_len = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
			   c == '-') {
			comp_len++;
		} else {
			return rk_errf(e, EINVAL,
				       "sysctl '%s': invalid character '%c' (use [A-Za-z0-9_-] between dots)", key, c);
		}
		if (o + 1 >= len)
			return rk_errf(e, ENAMETOOLONG, "sysctl '%s': too long", key);
		path[o++] = c;
	}
	if (comp_len == 0)
		return rk_errf(e, EINVAL, "sysctl '%s': empty component", key);
	path[o] = 0;
	return 0;
}

static int write_proc(const char *path, const char *value, const char *what, rk_err *e)
{
	RK_AUTOCLOSE int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return rk_errf(e, errno, "setting %s: open %s: %s", what, path, strerror(errno));
	size_t n = strlen(value);
	ssize_t w = write(fd, value, n);
	if (w < 0)
		return rk_errf(e, errno, "setting %s = %s: write %s: %s", what, value, path, strerror(errno));
	if ((size_t)w != n) /* errno is not set by a short write: do not report a stale one */
		return rk_errf(e, EIO, "setting %s = %s: write %s: the kernel took %zd of %zu bytes", what, value, path,
			       w, n);
	return 0;
}

int rk_net_sysctl_set(const char *key, const char *value, rk_err *e)
{
	char path[256];
	if (sysctl_path(key, path, sizeof path, e) < 0)
		return -1;
	if (!value || !*value || strlen(value) > 64 || strpbrk(value, "\n\r"))
		return rk_errf(e, EINVAL, "sysctl %s: invalid value", key);
	return write_proc(path, value, key, e);
}

int rk_net_sysctl_get(const char *key, char *buf, size_t len, rk_err *e)
{
	char path[256];
	if (!buf || len == 0) /* no room even for the terminating NUL */
		return rk_errf(e, EINVAL, "reading sysctl %s: no buffer to read it into", key);
	if (sysctl_path(key, path, sizeof path, e) < 0)
		return -1;
	RK_AUTOCLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rk_errf(e, errno, "reading sysctl %s: open %s: %s", key, path, strerror(errno));
	ssize_t n = read(fd, buf, len - 1);
	if (n < 0)
		return rk_errf(e, errno, "reading sysctl %s: %s", key, strerror(errno));
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return 0;
}

int rk_net_set_ip_forward(int on, rk_err *e)
{
	return write_proc("/proc/sys/net/ipv4/ip_forward", on ? "1" : "0", "net.ipv4.ip_forward", e);
}

int rk_net_set_route_localnet(const char *ifname, int on, rk_err *e)
{
	if (check_ifname(ifname, e) < 0)
		return -1;
	char path[128], what[64];
	snprintf(path, sizeof path, "/proc/sys/net/ipv4/conf/%s/route_localnet", ifname);
	snprintf(what, sizeof what, "net.ipv4.conf.%s.route_localnet", ifname);
	return write_proc(path, on ? "1" : "0", what, e);
}

/* ---- network namespaces ------------------------------------------------------------------ */

int rk_netns_path(const char *dir, const char *name, char *buf, size_t len, rk_err *e)
{
	if (!dir || dir[0] != '/' || strstr(dir, "/../") || strstr(dir, "/./") ||
	    (strlen(dir) >= 3 && !strcmp(dir + strlen(dir) - 3, "/..")))
		return rk_errf(e, EINVAL, "netns directory '%.80s' must be an absolute path without . or .. parts",
			       dir ? dir : "(null)");
	if (!name || !rk_safe_name(name, 64))
		return rk_errf(e, EINVAL,
			       "invalid netns name '%.80s': use 1 to 64 characters of [A-Za-z0-9._-], not . or ..",
			       name ? name : "(null)");
	if ((size_t)snprintf(buf, len, "%s/%s", dir, name) >= len)
		return rk_errf(e, ENAMETOOLONG, "netns path %s/%s is too long", dir, name);
	return 0;
}

static int is_nsfs(const char *path)
{
	struct statfs sf;
	return statfs(path, &sf) == 0 && (unsigned long)sf.f_type == (unsigned long)NSFS_MAGIC;
}

int rk_netns_exists(const char *dir, const char *name, rk_err *e)
{
	char path[512];
	if (rk_netns_path(dir, name, path, sizeof path, e) < 0)
		return -1;
	return is_nsfs(path);
}

/* Make dir a shared mount point (what `ip netns add` does) so the namespaces mounted under it
 * propagate to mount namespaces created later (containers get the netns path). */
static int make_dir_shared(const char *dir, rk_err *e)
{
	int bound = 0;
	while (mount("", dir, "none", MS_SHARED | MS_REC, NULL) < 0) {
		if (errno != EINVAL || bound)
			return rk_errf(e, errno, "making %s a shared mount point: %s", dir, strerror(errno));
		if (mount(dir, dir, "none", MS_BIND | MS_REC, NULL) < 0)
			return rk_errf(e, errno, "bind-mounting %s onto itself: %s", dir, strerror(errno));
		bound = 1;
	}
	return 0;
}

int rk_netns_add(const char *dir, const char *name, rk_err *e)
{
	char path[512];
	if (rk_netns_path(dir, name, path, sizeof path, e) < 0)
		return -1;
	if (is_nsfs(path))
		return 1;
	if (rk_mkdir_p(dir, 0755, e) < 0)
		return rk_err_prefix(e, "creating netns %s", name);
	if (make_dir_shared(dir, e) < 0)
		return rk_err_prefix(e, "creating netns %s", name);
	int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0)
		return rk_errf(e, errno, "creating netns %s: create %s: %s", name, path, strerror(errno));
	close(fd);
	/* Create the namespace on this thread, pin it with a bind mount, and come back. */
	RK_AUTOCLOSE int saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (saved < 0)
		return rk_errf(e, errno, "creating netns %s: open /proc/thread-self/ns/net: %s", name, strerror(errno));
	if (unshare(CLONE_NEWNET) < 0) {
		int err = errno;
		unlink(path);
		return rk_errf(e, err, "creating netns %s: unshare(CLONE_NEWNET): %s%s", name, strerror(err),
			       err == EPERM ? " (needs CAP_SYS_ADMIN: run riklet as root)" : "");
	}
	int rc = 0;
	if (mount("/proc/thread-self/ns/net", path, "none", MS_BIND, NULL) < 0)
		rc = rk_errf(e, errno, "creating netns %s: bind-mounting the namespace on %s: %s", name, path,
			     strerror(errno));
	if (setns(saved, CLONE_NEWNET) < 0) {
		/* We are stuck in the new namespace: nothing after this would be right. */
		rk_error("net", "cannot return to the original network namespace after creating %s: %s", name,
			 strerror(errno));
		abort();
	}
	if (rc < 0)
		unlink(path);
	return rc;
}

int rk_netns_del(const char *dir, const char *name, rk_err *e)
{
	char path[512];
	if (rk_netns_path(dir, name, path, sizeof path, e) < 0)
		return -1;
	if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		return rk_errf(e, errno, "deleting netns %s: umount %s: %s", name, path, strerror(errno));
	if (unlink(path) < 0 && errno != ENOENT)
		return rk_errf(e, errno, "deleting netns %s: unlink %s: %s", name, path, strerror(errno));
	return 0;
}

int rk_netns_list(const char *dir, char ***names, size_t *n, rk_err *e)
{
	*names = NULL;
	*n = 0;
	char path[512];
	if (rk_netns_path(dir, "x", path, sizeof path, e) < 0)
		return -1;
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return rk_errf(e, errno, "listing netns directory %s: %s", dir, strerror(errno));
	}
	size_t cap = 16, cnt = 0, bytes = 0;
	char **tmp = malloc(cap * sizeof *tmp);
	struct dirent *de;
	while (tmp && (de = readdir(d))) {
		if (!rk_safe_name(de->d_name, 64) || rk_netns_exists(dir, de->d_name, NULL) != 1)
			continue;
		if (cnt == cap) {
			char **t2 = realloc(tmp, (cap *= 2) * sizeof *tmp);
			if (!t2)
				break;
			tmp = t2;
		}
		tmp[cnt] = strdup(de->d_name);
		if (!tmp[cnt])
			break;
		bytes += strlen(tmp[cnt]) + 1;
		cnt++;
	}
	closedir(d);
	char **v = tmp ? malloc((cnt + 1) * sizeof(char *) + bytes) : NULL;
	if (v) {
		char *s = (char *)(v + cnt + 1);
		for (size_t i = 0; i < cnt; i++) {
			v[i] = strcpy(s, tmp[i]);
			s += strlen(tmp[i]) + 1;
		}
		v[cnt] = NULL;
	}
	for (size_t i = 0; tmp && i < cnt; i++)
		free(tmp[i]);
	free(tmp);
	if (!v)
		return rk_errf(e, ENOMEM, "listing netns directory %s: out of memory", dir);
	*names = v;
	*n = cnt;
	return 0;
}

int rk_netns_enter(const char *path, rk_err *e)
{
	if (!path || path[0] != '/')
		return rk_errf(e, EINVAL, "entering netns '%.80s': not an absolute path", path ? path : "(null)");
	RK_AUTOCLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rk_errf(e, errno, "entering netns %s: open: %s", path, strerror(errno));
	int saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (saved < 0)
		return rk_errf(e, errno, "entering netns %s: open /proc/thread-self/ns/net: %s", path, strerror(errno));
	if (setns(fd, CLONE_NEWNET) < 0) {
		int err = errno;
		close(saved);
		return rk_errf(e, err, "entering netns %s: setns: %s%s", path, strerror(err),
			       err == EINVAL ? " (not a network namespace: was it deleted?)" : "");
	}
	return saved;
}

int rk_netns_leave(int saved, rk_err *e)
{
	if (saved < 0)
		return rk_errf(e, EBADF, "leaving netns: no saved namespace");
	int r = setns(saved, CLONE_NEWNET);
	int err = errno;
	close(saved);
	if (r < 0) {
		rk_error("net", "cannot return to the original network namespace: %s", strerror(err));
		abort(); /* continuing in the wrong namespace would program the wrong host */
	}
	return 0;
}

/* The mount (major:minor) mounted exactly at path, from /proc/self/mountinfo: 1 found (the last,
 * topmost one), 0 none. */
static int mount_at(const char *path, unsigned *maj, unsigned *min)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 0;
	char line[4096];
	int found = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned a, b;
		char mp[PATH_MAX];
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT ... (paths octal-escaped: riklet's have no spaces) */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, mp) == 3 && !strcmp(mp, path)) {
			*maj = a;
			*min = b;
			found = 1;
		}
	}
	fclose(f);
	return found;
}

int rk_netns_dir_release(const char *dir, rk_err *e)
{
	char real[PATH_MAX], parent[PATH_MAX + 4];
	if (!realpath(dir, real))
		return errno == ENOENT ? 0 : rk_errf(e, errno, "%s: %s", dir, strerror(errno));
	int released = 0;
	for (int i = 0; i < 8; i++) {
		unsigned maj, min, pmaj = 0, pmin = 0;
		if (!mount_at(real, &maj, &min))
			break;
		/* positive evidence that this is the bind of the directory onto itself that
		 * make_dir_shared made: same filesystem as its parent directory, and empty */
		snprintf(parent, sizeof parent, "%s/..", real);
		struct stat ps;
		if (stat(parent, &ps) < 0)
			break;
		pmaj = major(ps.st_dev);
		pmin = minor(ps.st_dev);
		if (maj != pmaj || min != pmin)
			break; /* a filesystem of its own there: not riklet's bind */
		DIR *d = opendir(real);
		if (!d)
			return rk_errf(e, errno, "reading %s: %s", real, strerror(errno));
		struct dirent *de;
		int entries = 0;
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				entries++;
		closedir(d);
		if (entries)
			break; /* namespaces someone else keeps there (ip netns shares /run/netns) */
		if (umount2(real, MNT_DETACH) < 0)
			return rk_errf(e, errno, "unmounting the namespace directory %s: %s", real, strerror(errno));
		released = 1;
	}
	return released;
}
