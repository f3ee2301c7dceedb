/* test_net.c — core/net against the real kernel, inside a network and mount namespace this test
 * creates (the host's links are never touched). Checks with netlink and with `ip -j`. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "net.h"
#include "tap.h"

static char nsdir[256];

/* Run a shell command, capture stdout (NUL-terminated, static buffer). */
static int has(const char *hay, const char *needle)
{
	return hay && strstr(hay, needle) != NULL;
}

static void setup_namespaces(void)
{
	if (geteuid() != 0)
		tap_skip_all("needs root (creates network namespaces and links)");
	if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0)
		tap_skip_all("unshare(CLONE_NEWNET|CLONE_NEWNS) failed: %s", strerror(errno));
	if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		tap_skip_all("cannot make / private in the test mount namespace: %s", strerror(errno));
	snprintf(nsdir, sizeof nsdir, "/tmp/rk-test-net-%d", (int)getpid());
	mkdir(nsdir, 0755);
	/* a tmpfs so nothing we mount there can outlive the test's mount namespace */
	if (mount("tmpfs", nsdir, "tmpfs", 0, "size=1m") < 0)
		tap_skip_all("mount tmpfs on %s: %s", nsdir, strerror(errno));
	strcat(nsdir, "/netns");
}

/* ---- hostile dump messages: built here, each handed over in a buffer of exactly its length (the
 * sanitizer build sees any read past it) ---- */
struct mb {
	_Alignas(struct nlmsghdr) unsigned char b[512];
	size_t len;
};

static void mb_start(struct mb *m, int type, const void *hdr, size_t hdrlen)
{
	memset(m, 0, sizeof *m);
	struct nlmsghdr *h = (struct nlmsghdr *)m->b;
	h->nlmsg_type = (unsigned short)type;
	memcpy(m->b + NLMSG_HDRLEN, hdr, hdrlen);
	m->len = NLMSG_HDRLEN + NLMSG_ALIGN(hdrlen);
}

/* an attribute whose header says nla_len (normally 4 + len), then len bytes of data */
static size_t mb_attr_len(struct mb *m, int type, const void *data, size_t len, unsigned nla_len)
{
	size_t at = m->len;
	struct rtattr *a = (struct rtattr *)(m->b + at);
	a->rta_type = (unsigned short)type;
	a->rta_len = (unsigned short)nla_len;
	if (len)
		memcpy(m->b + at + 4, data, len);
	m->len = at + RTA_ALIGN(4 + len);
	return at;
}

static size_t mb_attr(struct mb *m, int type, const void *data, size_t len)
{
	return mb_attr_len(m, type, data, len, (unsigned)(4 + len));
}

static void mb_nest_end(struct mb *m, size_t at)
{
	((struct rtattr *)(m->b + at))->rta_len = (unsigned short)(m->len - at);
}

/* a malloc'ed copy of exactly len bytes (len < m->len: the message cut short), nlmsg_len = hlen */
static struct nlmsghdr *mb_end(struct mb *m, size_t len, size_t hlen)
{
	((struct nlmsghdr *)m->b)->nlmsg_len = (unsigned)hlen;
	struct nlmsghdr *h = malloc(len);
	memcpy(h, m->b, len);
	return h;
}

static void hostile_messages(void)
{
	rk_err e = {0};
	rk_net_link l;
	struct mb m;
	struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = 7, .ifi_flags = IFF_UP};
	unsigned mtu = 1400, master = 3;
	const unsigned char mac[6] = {2, 0, 0, 0, 0, 9};
	mb_start(&m, RTM_NEWLINK, &ifi, sizeof ifi);
	mb_attr(&m, IFLA_IFNAME, "eth0", 5);
	mb_attr(&m, IFLA_MTU, &mtu, 4);
	mb_attr(&m, IFLA_MASTER, &master, 4);
	mb_attr(&m, IFLA_ADDRESS, mac, 6);
	size_t nest = mb_attr(&m, IFLA_LINKINFO, NULL, 0);
	mb_attr(&m, IFLA_INFO_KIND, "veth", 5);
	mb_nest_end(&m, nest);
	struct nlmsghdr *h = mb_end(&m, m.len, m.len);
	ok(rk_net_link_msg(h, &l, &e) == 1 && l.index == 7 && l.up && !strcmp(l.name, "eth0") && l.mtu == 1400 &&
		   l.master == 3 && !strcmp(l.kind, "veth") && !strcmp(l.mac, "02:00:00:00:00:09"),
	   "a crafted link message is read like the kernel's (%s %s mtu %u master %d %s)", l.name, l.kind, l.mtu,
	   l.master, l.mac);
	h->nlmsg_type = RTM_NEWADDR;
	is_int(rk_net_link_msg(h, &l, &e), 0, "another kind of message is not a link");
	free(h);

	/* a message shorter than its ifinfomsg: nlmsg_len says so, and the read ends there too */
	mb_start(&m, RTM_NEWLINK, &ifi, sizeof ifi);
	h = mb_end(&m, NLMSG_HDRLEN + 4, NLMSG_HDRLEN + 4);
	ok(rk_net_link_msg(h, &l, &e) < 0 && has(e.msg, "malformed"), "a link message cut inside its header: %s",
	   e.msg);
	rk_net_view nv = {0};
	ok(rk_net_view_msg(h, "eth0", &nv, &e) < 0 && !nv.found, "the view refuses it too: %s", e.msg);
	free(h);

	/* an MTU of 2 bytes (a u32 read would go past it) */
	mb_start(&m, RTM_NEWLINK, &ifi, sizeof ifi);
	mb_attr(&m, IFLA_IFNAME, "eth0", 5);
	mb_attr(&m, IFLA_MTU, &mtu, 2);
	h = mb_end(&m, m.len - 2, m.len - 2); /* (the attribute's padding too) */
	ok(rk_net_link_msg(h, &l, &e) < 0 && has(e.msg, "malformed"), "a 2-byte MTU: %s", e.msg);
	free(h);

	/* a name without its NUL, at the very end of the message */
	mb_start(&m, RTM_NEWLINK, &ifi, sizeof ifi);
	mb_attr(&m, IFLA_IFNAME, "eth0", 4);
	h = mb_end(&m, m.len, m.len);
	ok(rk_net_link_msg(h, &l, &e) < 0 && has(e.msg, "malformed"), "a name without its NUL: %s", e.msg);
	free(h);

	/* an attribute (and a nested one) claiming more bytes than the message has: not read */
	mb_start(&m, RTM_NEWLINK, &ifi, sizeof ifi);
	nest = mb_attr(&m, IFLA_LINKINFO, NULL, 0);
	mb_attr_len(&m, IFLA_INFO_KIND, "veth", 5, 200);
	mb_nest_end(&m, nest);
	mb_attr_len(&m, IFLA_IFNAME, "eth0", 5, 300);
	h = mb_end(&m, m.len, m.len);
	ok(rk_net_link_msg(h, &l, &e) == 1 && !l.name[0] && !l.kind[0] && l.index == 7,
	   "attributes longer than the message are left out (name '%s', kind '%s')", l.name, l.kind);
	free(h);

	/* addresses and routes of the view */
	memset(&nv, 0, sizeof nv);
	nv.index = 7;
	struct ifaddrmsg ifa = {.ifa_family = AF_INET, .ifa_prefixlen = 24, .ifa_index = 7};
	const unsigned char ip[4] = {10, 1, 2, 3};
	mb_start(&m, RTM_NEWADDR, &ifa, sizeof ifa);
	mb_attr(&m, IFA_LOCAL, ip, 3);
	h = mb_end(&m, m.len, m.len);
	ok(rk_net_view_msg(h, "eth0", &nv, &e) == 0 && nv.naddrs == 0, "a 3-byte address is not taken");
	free(h);
	mb_start(&m, RTM_NEWADDR, &ifa, sizeof ifa);
	mb_attr(&m, IFA_LOCAL, ip, 4);
	h = mb_end(&m, m.len, m.len);
	ok(rk_net_view_msg(h, "eth0", &nv, &e) == 0 && nv.naddrs == 1 && !strcmp(nv.addrs[0], "10.1.2.3/24"),
	   "a 4-byte one is (%s)", nv.naddrs ? nv.addrs[0] : "");
	free(h);
	mb_start(&m, RTM_NEWADDR, &ifa, sizeof ifa);
	h = mb_end(&m, NLMSG_HDRLEN + 4, NLMSG_HDRLEN + 4);
	ok(rk_net_view_msg(h, "eth0", &nv, &e) < 0 && has(e.msg, "malformed"), "an address message cut short: %s",
	   e.msg);
	free(h);
	struct rtmsg rt = {.rtm_family = AF_INET, .rtm_table = RT_TABLE_MAIN};
	unsigned char table = RT_TABLE_MAIN;
	mb_start(&m, RTM_NEWROUTE, &rt, sizeof rt);
	mb_attr(&m, RTA_TABLE, &table, 1);
	mb_attr(&m, RTA_GATEWAY, ip, 4);
	h = mb_end(&m, m.len, m.len);
	ok(rk_net_view_msg(h, "eth0", &nv, &e) < 0 && has(e.msg, "malformed") && !nv.gateway[0],
	   "a route with a 1-byte table: %s", e.msg);
	free(h);
	mb_start(&m, RTM_NEWROUTE, &rt, sizeof rt);
	mb_attr(&m, RTA_GATEWAY, ip, 4);
	h = mb_end(&m, m.len, m.len);
	ok(rk_net_view_msg(h, "eth0", &nv, &e) == 0 && !strcmp(nv.gateway, "10.1.2.3"),
	   "a default route's gateway is taken (%s)", nv.gateway);
	free(h);
}

int main(void)
{
	setup_namespaces();
	rk_err e = {0};
	rk_net_link l;

	/* --- validation: hostile names never reach the kernel or the filesystem --- */
	ok(rk_net_valid_ifname("eth0") && rk_net_valid_ifname("rkv-0123456789a"), "valid link names accepted");
	const char *bad[] = {"", "0123456789abcdef", "a/b", "..", ".", "a b", "x;rm", "$(id)", "a\nb", "ab:c"};
	int all_bad = 1;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (rk_net_valid_ifname(bad[i]))
			all_bad = 0;
	ok(all_bad, "bad link names rejected (empty, 16 chars, /, .., spaces, shell chars)");
	ok(rk_net_bridge_add("../x", &e) < 0 && has(e.msg, "invalid link name"), "bridge_add('../x') refused: %s",
	   e.msg);
	char path[512];
	ok(rk_netns_path(nsdir, "../etc", path, sizeof path, &e) < 0 && has(e.msg, "invalid netns name"),
	   "netns name '../etc' refused: %s", e.msg);
	ok(rk_netns_path("relative/dir", "x", path, sizeof path, &e) < 0, "relative netns dir refused");
	ok(rk_netns_path("/run/../etc", "x", path, sizeof path, &e) < 0, "netns dir with .. refused");
	unsigned a;
	int plen;
	ok(rk_net_parse_cidr("10.89.0.2/16", &a, &plen, &e) == 0 && plen == 16, "parse CIDR");
	ok(rk_net_parse_cidr("10.89.0.2/33", &a, &plen, &e) < 0, "prefix 33 refused");
	ok(rk_net_parse_cidr("10.89.0/8", &a, &plen, &e) < 0, "short address refused");

	/* --- bridge --- */
	is_int(rk_net_bridge_add("rktest0", &e), 0, "bridge created");
	is_int(rk_net_bridge_add("rktest0", &e), 1, "bridge add again: already there (idempotent)");
	is_int(rk_net_link_get("rktest0", &l, &e), 1, "bridge found by netlink");
	is_str(l.kind, "bridge", "its kind is bridge");
	int br_index = l.index;
	ok(has(run("ip -j -d link show rktest0"), "\"info_kind\":\"bridge\""), "ip -j -d link shows a bridge");
	is_int(rk_net_link_set_up("rktest0", 1, &e), 0, "bridge up");
	rk_net_link_get("rktest0", &l, &e);
	ok(l.up, "bridge is up");
	run("ip link add rkdummy type veth peer name rkdummyp");
	ok(rk_net_bridge_add("rkdummy", &e) < 0 && has(e.msg, "not a bridge"),
	   "a non-bridge with the name is reported: %s", e.msg);

	/* --- netns --- */
	is_int(rk_netns_add(nsdir, "pod1", &e), 0, "netns pod1 created");
	is_int(rk_netns_add(nsdir, "pod1", &e), 1, "netns pod1 add again: already there");
	is_int(rk_netns_exists(nsdir, "pod1", &e), 1, "netns pod1 exists (nsfs mounted)");
	char **names;
	size_t nn;
	ok(rk_netns_list(nsdir, &names, &nn, &e) == 0 && nn == 1 && !strcmp(names[0], "pod1"), "netns list = {pod1}");
	free(names);
	/* a file without a namespace on it (a crash between create and mount) is repaired */
	char stale[600];
	snprintf(stale, sizeof stale, "%s/stale", nsdir);
	close(open(stale, O_CREAT | O_WRONLY, 0444));
	is_int(rk_netns_exists(nsdir, "stale", &e), 0, "a plain file is not a live netns");
	is_int(rk_netns_add(nsdir, "stale", &e), 0, "netns add over a stale file repairs it");
	is_int(rk_netns_exists(nsdir, "stale", &e), 1, "and it is now a live netns");
	is_int(rk_netns_del(nsdir, "stale", &e), 0, "stale netns deleted");

	/* --- veth into the netns --- */
	char pod1[600];
	rk_netns_path(nsdir, "pod1", pod1, sizeof pod1, &e);
	int nsfd = open(pod1, O_RDONLY | O_CLOEXEC);
	ok(nsfd >= 0, "open netns file");
	is_int(rk_net_veth_add("rkvtest1", "eth0", nsfd, &e), 0, "veth rkvtest1 created with peer eth0 in pod1");
	is_int(rk_net_veth_add("rkvtest1", "eth0", nsfd, &e), 1, "veth add again: already there");
	close(nsfd);
	ok(rk_net_link_get("rkvtest1", &l, &e) == 1 && !strcmp(l.kind, "veth"), "host end is a veth");
	is_int(rk_net_link_get("eth0", &l, &e), 0, "peer eth0 is not in the host namespace");
	ok(has(run("nsenter --net=%s ip -j link show eth0", pod1), "\"ifname\":\"eth0\""), "ip -j in pod1 shows eth0");
	is_int(rk_net_link_set_master("rkvtest1", "rktest0", &e), 0, "veth attached to the bridge");
	is_int(rk_net_link_set_master("rkvtest1", "rktest0", &e), 0, "attach again: fine");
	ok(rk_net_link_get("rkvtest1", &l, &e) == 1 && l.master == br_index, "veth's master is the bridge");
	ok(has(run("ip -j link show rkvtest1"), "\"master\":\"rktest0\""), "ip -j shows master rktest0");
	ok(rk_net_link_set_master("rkvtest1", "rkdummy", &e) < 0 && has(e.msg, "not a bridge"),
	   "attaching to a non-bridge refused: %s", e.msg);
	is_int(rk_net_link_set_up("rkvtest1", 1, &e), 0, "veth host end up");

	/* --- addresses --- */
	is_int(rk_net_addr_add("rktest0", "10.89.0.1/16", &e), 0, "bridge address added");
	is_int(rk_net_addr_add("rktest0", "10.89.0.1/16", &e), 1, "added again: already there");
	char **addrs;
	size_t na;
	ok(rk_net_addr_list("rktest0", &addrs, &na, &e) == 0 && na == 1 && !strcmp(addrs[0], "10.89.0.1/16"),
	   "addr list = {10.89.0.1/16}");
	free(addrs);
	ok(has(run("ip -j addr show rktest0"), "\"local\":\"10.89.0.1\",\"prefixlen\":16"), "ip -j addr shows it");
	ok(rk_net_addr_add("rktest0", "10.89.0.1/40", &e) < 0, "bad prefix refused: %s", e.msg);
	ok(rk_net_addr_add("nosuchlink", "10.1.1.1/24", &e) < 0 && has(e.msg, "no link named nosuchlink"),
	   "address on a missing link: %s", e.msg);

	/* --- inside the pod netns: address, up, default route --- */
	int saved = rk_netns_enter(pod1, &e);
	ok(saved >= 0, "entered pod1");
	ok(rk_net_link_get("eth0", &l, &e) == 1 && !strcmp(l.kind, "veth"), "eth0 visible inside pod1");
	is_int(rk_net_addr_add("eth0", "10.89.0.2/16", &e), 0, "pod address added");
	is_int(rk_net_link_set_up("eth0", 1, &e), 0, "eth0 up");
	is_int(rk_net_link_set_up("lo", 1, &e), 0, "lo up");
	is_int(rk_net_route_add("default", "10.89.0.1", NULL, &e), 0, "default route via the bridge");
	is_int(rk_net_route_add("default", "10.89.0.1", NULL, &e), 0, "default route again: replaced, no error");
	is_int(rk_net_route_add("10.77.0.0/24", NULL, "eth0", &e), 0, "a device route");
	rk_net_view nv;
	ok(rk_net_view_get("eth0", &nv, &e) == 0 && nv.found && nv.up && nv.lo_up && nv.naddrs == 1 &&
		   !strcmp(nv.addrs[0], "10.89.0.2/16") && !strcmp(nv.gateway, "10.89.0.1"),
	   "view of pod1: eth0 up with 10.89.0.2/16, lo up, default route via 10.89.0.1");
	ok(rk_net_view_get("eth1", &nv, &e) == 0 && !nv.found && nv.naddrs == 0 && nv.lo_up,
	   "view of a link that is not there: not found, no address");
	ok(rk_net_view_get("../x", &nv, &e) < 0, "view of a hostile name refused: %s", e.msg);
	char v[32];
	is_int(rk_net_sysctl_set("net.ipv4.conf.eth0.rp_filter", "0", &e), 0, "sysctl in pod1 (per netns)");
	is_int(rk_netns_leave(saved, &e), 0, "left pod1");
	const char *routes = run("nsenter --net=%s ip -j route show", pod1);
	ok(has(routes, "\"dst\":\"default\",\"gateway\":\"10.89.0.1\""), "ip -j route in pod1 shows the default route");
	ok(has(routes, "\"dst\":\"10.77.0.0/24\""), "and the device route");
	ok(!has(run("ip -j route show"), "10.77.0.0"), "the host namespace got no route");
	const char *png = run("nsenter --net=%s busybox ping -c1 -W3 10.89.0.1 2>&1", pod1);
	ok(has(png, " 0% packet loss"), "pod1 reaches the bridge address over the veth (real traffic)");
	if (!has(png, " 0% packet loss"))
		printf("# %s\n", png);

	/* --- TAP --- */
	is_int(rk_net_tap_add("rktaptest", -1, &e), 0, "TAP created");
	is_int(rk_net_tap_add("rktaptest", -1, &e), 1, "TAP add again: already there");
	ok(rk_net_link_get("rktaptest", &l, &e) == 1 && !strcmp(l.kind, "tun"), "TAP kind is tun (kind='%s')", l.kind);
	ok(has(run("ip -j -d link show rktaptest"), "\"type\":\"tap\""), "ip -j -d shows a persistent tap");
	is_int(rk_net_addr_add("rktaptest", "10.90.0.2/30", &e), 0, "TAP address");
	ok(rk_net_tap_add("rkdummy", -1, &e) < 0 && has(e.msg, "not a TAP"), "TAP over a dummy refused: %s", e.msg);

	/* --- sysctls --- */
	is_int(rk_net_set_ip_forward(1, &e), 0, "ip_forward on");
	ok(rk_net_sysctl_get("net.ipv4.ip_forward", v, sizeof v, &e) == 0 && !strcmp(v, "1"), "ip_forward reads 1");
	is_int(rk_net_set_route_localnet("rktest0", 1, &e), 0, "route_localnet on the bridge");
	ok(rk_net_sysctl_get("net.ipv4.conf.rktest0.route_localnet", v, sizeof v, &e) == 0 && !strcmp(v, "1"),
	   "route_localnet reads 1");
	char one = 'x';
	ok(rk_net_sysctl_get("net.ipv4.ip_forward", &one, 0, &e) < 0 && one == 'x',
	   "sysctl_get into a 0-byte buffer refused, nothing written: %s", e.msg);
	ok(rk_net_sysctl_get("net.ipv4.ip_forward", &one, 1, &e) == 0 && one == 0, "a 1-byte buffer gets \"\"");
	ok(rk_net_sysctl_set("kernel.hostname", "x", &e) < 0, "non-net sysctl refused: %s", e.msg);
	ok(rk_net_sysctl_set("net.ipv4/../../x", "1", &e) < 0, "sysctl key with / refused: %s", e.msg);
	ok(rk_net_sysctl_set("net..ipv4", "1", &e) < 0, "sysctl key with empty part refused");
	ok(rk_net_set_route_localnet("../../x", 1, &e) < 0, "route_localnet on a hostile name refused");

	/* --- neighbours --- */
	run("ip neigh replace 10.89.0.77 lladdr 02:00:00:00:00:77 dev rktest0 nud stale");
	ok(has(run("ip neigh show dev rktest0"), "10.89.0.77 lladdr 02:00:00:00:00:77"), "a neighbour entry to forget");
	is_int(rk_net_neigh_del("rktest0", "10.89.0.77", &e), 0, "neighbour forgotten");
	ok(!has(run("ip neigh show dev rktest0"), "10.89.0.77"), "ip neigh no longer shows it");
	is_int(rk_net_neigh_del("rktest0", "10.89.0.77", &e), 0, "forgotten again: fine");
	is_int(rk_net_neigh_del("rknolink", "10.89.0.77", &e), 0, "on a link that is gone: fine");
	ok(rk_net_neigh_del("rktest0", "10.89.0.777", &e) < 0 && has(e.msg, "not an IPv4"),
	   "a bad address is refused: %s", e.msg);

	/* --- teardown, twice --- */
	is_int(rk_net_addr_del("rktest0", "10.89.0.1/16", &e), 0, "bridge address removed");
	is_int(rk_net_addr_del("rktest0", "10.89.0.1/16", &e), 0, "removed again: fine");
	ok(!has(run("ip -j addr show rktest0"), "10.89.0.1"), "ip -j addr no longer shows it");
	saved = rk_netns_enter(pod1, &e);
	is_int(rk_net_route_del("default", NULL, NULL, &e), 0, "default route deleted in pod1");
	is_int(rk_net_route_del("default", NULL, NULL, &e), 0, "deleted again: fine");
	is_int(rk_net_addr_del("eth0", "10.89.0.2/16", &e), 0, "pod address removed");
	is_int(rk_net_link_set_up("lo", 0, &e), 0, "lo down");
	ok(rk_net_view_get("eth0", &nv, &e) == 0 && nv.found && nv.up && !nv.lo_up && nv.naddrs == 0 && !nv.gateway[0],
	   "view of pod1 sees the drift: no address, lo down, no default route");
	rk_netns_leave(saved, &e);
	ok(!has(run("nsenter --net=%s ip -j route show", pod1), "\"dst\":\"default\""),
	   "no default route left in pod1");
	is_int(rk_net_link_del("rkvtest1", &e), 0, "veth deleted");
	is_int(rk_net_link_del("rkvtest1", &e), 0, "deleted again: fine");
	is_int(rk_net_link_get("rkvtest1", NULL, &e), 0, "veth gone");
	ok(!has(run("nsenter --net=%s ip -j link", pod1), "eth0"), "its peer in pod1 went with it");
	is_int(rk_net_link_del("rktaptest", &e), 0, "TAP deleted");
	is_int(rk_net_link_get("rktaptest", NULL, &e), 0, "TAP gone");
	is_int(rk_net_link_del("rktest0", &e), 0, "bridge deleted");
	ok(!has(run("ip -j link"), "rktest0"), "ip -j link: no bridge left");
	is_int(rk_netns_del(nsdir, "pod1", &e), 0, "netns deleted");
	is_int(rk_netns_del(nsdir, "pod1", &e), 0, "deleted again: fine");
	is_int(rk_netns_exists(nsdir, "pod1", &e), 0, "netns gone");
	ok(access(pod1, F_OK) < 0, "its file is gone");
	saved = rk_netns_enter(pod1, &e);
	ok(saved < 0 && has(e.msg, "entering netns"), "entering a deleted netns fails clearly: %s", e.msg);

	rk_net_link *ls;
	ok(rk_net_link_list(&ls, &nn, &e) == 0 && nn >= 2, "link list has lo and rkdummy (%zu links)", nn);
	free(ls);
	hostile_messages();
	tap_done();
}
