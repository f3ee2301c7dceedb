/* lnet.c — `riklet.net`: core/net (netlink, named netns, TAP, sysctls) for Lua. Synchronous:
 * netlink answers in microseconds, so nothing here yields.
 *
 * Misuse (wrong argument types) raises; an expected failure returns nil, message.
 * Every link/address/route/sysctl call takes an optional last argument opts = {netns = PATH}: the
 * call then runs inside that namespace (entered on this thread and left before returning).
 * Creating what exists succeeds: the second result says "created" or "exists".
 *
 *   net.valid_ifname(s) -> boolean
 *   net.ip4(str) -> n (host-order integer) | nil, err   net.ip4str(n) -> "a.b.c.d"
 *   net.parse_cidr("a.b.c.d/len") -> n, len | nil, err
 *   net.netns_add(dir, name) -> path, "created"|"exists"
 *   net.netns_del(dir, name) -> true              net.netns_exists(dir, name) -> boolean
 *   net.netns_path(dir, name) -> path             net.netns_list(dir) -> {name, ...}
 *   net.link(name[, opts]) -> {index, name, kind, up, master, mtu, mac} | false (absent)
 *   net.links([opts]) -> array of link tables
 *   net.link_del(name[, opts]) -> true            (also when absent)
 *   net.link_up(name[, opts]) / net.link_down(name[, opts]) -> true
 *   net.link_set_master(name, bridge|nil[, opts]) -> true
 *   net.link_set_netns(name, netns_path[, opts]) -> true
 *   net.link_set_mtu(name, mtu[, opts]) -> true
 *   net.bridge_add(name[, opts]) -> true, "created"|"exists"
 *   net.veth_add(name, peer, peer_netns_path|nil[, opts]) -> true, "created"|"exists"
 *   net.tap_add(name[, opts]) -> true, "created"|"exists"   (opts.uid: owner)
 *   net.addr_add(ifname, cidr[, opts]) -> true, "created"|"exists"
 *   net.addr_del(ifname, cidr[, opts]) -> true    (also when absent)
 *   net.addrs(ifname[, opts]) -> {"a.b.c.d/len", ...}
 *   net.view(ifname[, opts]) -> {found=, up=, lo_up=, addrs={...}, gateway=}   (one socket for all)
 *   net.neigh_del(ifname, ip[, opts]) -> true      (forget an ARP entry; also when absent)
 *   net.route_add(dst, {via=, dev=, netns=}) -> true      (dst "default" or CIDR; replaces)
 *   net.route_del(dst[, {via=, dev=, netns=}]) -> true    (also when absent)
 *   net.sysctl_set(key, value[, opts]) -> true    net.sysctl_get(key[, opts]) -> string
 *   net.ip_forward(on[, opts]) -> true            net.route_localnet(ifname, on[, opts]) -> true
 *   net.lock(name, info) -> true | nil, err[, holder_info]   (network-namespace-wide, netlock.h)
 *   net.netns_dir_release(dir) -> released | nil, err   (unmount riklet's bind of an empty dir) */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "lrk.h"
#include "net.h"
#include "netlock.h"

/* ---- running an operation inside opts.netns ----------------------------------------------- */

/* Returns the saved-namespace fd (>= 0) if opts at idx names a netns and we entered it, -1 if
 * there is none, -2 on failure (e filled). */
static int ns_enter_opt(lua_State *L, int idx, rk_err *e)
{
	if (lua_isnoneornil(L, idx))
		return -1;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_getfield(L, idx, "netns");
	const char *p = lua_tostring(L, -1);
	lua_pop(L, 1);
	if (!p)
		return -1;
	int saved = rk_netns_enter(p, e);
	return saved < 0 ? -2 : saved;
}

static void ns_leave(int saved)
{
	if (saved >= 0)
		rk_netns_leave(saved, NULL);
}

#define IN_NS(L, optidx, e, call)                                                                                      \
	({                                                                                                             \
		int saved_ = ns_enter_opt(L, optidx, &(e));                                                            \
		int r_ = -1;                                                                                           \
		if (saved_ != -2) {                                                                                    \
			r_ = (call);                                                                                   \
			ns_leave(saved_);                                                                              \
		}                                                                                                      \
		r_;                                                                                                    \
	})

static int created(lua_State *L, int r)
{
	lua_pushboolean(L, 1);
	lua_pushstring(L, r == 1 ? "exists" : "created");
	return 2;
}

static int push_true(lua_State *L)
{
	lua_pushboolean(L, 1);
	return 1;
}

static const char *opt_str(lua_State *L, int idx, const char *k)
{
	if (lua_isnoneornil(L, idx))
		return NULL;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_getfield(L, idx, k);
	const char *s = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
	lua_pop(L, 1); /* the string stays alive: it is referenced by the table */
	return s;
}

/* ---- helpers ------------------------------------------------------------------------------- */

/* net.valid_ifname(s) -> boolean */
static int l_valid_ifname(lua_State *L)
{
	lua_pushboolean(L, lua_type(L, 1) == LUA_TSTRING && rk_net_valid_ifname(lua_tostring(L, 1)));
	return 1;
}

/* net.ip4(str) -> integer in host order | nil, err */
static int l_ip4(lua_State *L)
{
	const char *s = luaL_checkstring(L, 1);
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		return lrk_fail(L, "'%s' is not an IPv4 address", s);
	lua_pushnumber(L, (lua_Number)ntohl(a.s_addr));
	return 1;
}

/* net.ip4str(n) -> "a.b.c.d" */
static int l_ip4str(lua_State *L)
{
	lua_Number n = luaL_checknumber(L, 1);
	if (n < 0 || n > 4294967295.0)
		return luaL_argerror(L, 1, "not a 32-bit address");
	struct in_addr a = {htonl((uint32_t)n)};
	char buf[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a, buf, sizeof buf);
	lua_pushstring(L, buf);
	return 1;
}

/* net.parse_cidr(s) -> n (host order), prefix | nil, err */
static int l_parse_cidr(lua_State *L)
{
	unsigned a;
	int plen;
	rk_err e = {0};
	if (rk_net_parse_cidr(luaL_checkstring(L, 1), &a, &plen, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushnumber(L, (lua_Number)ntohl(a));
	lua_pushinteger(L, plen);
	return 2;
}

/* ---- netns --------------------------------------------------------------------------------- */

/* net.netns_add(dir, name) -> path, "created"|"exists" */
static int l_netns_add(lua_State *L)
{
	const char *dir = luaL_checkstring(L, 1), *name = luaL_checkstring(L, 2);
	rk_err e = {0};
	char path[512];
	if (rk_netns_path(dir, name, path, sizeof path, &e) < 0)
		return lrk_fail_err(L, &e);
	int r = rk_netns_add(dir, name, &e);
	if (r < 0)
		return lrk_fail_err(L, &e);
	lua_pushstring(L, path);
	lua_pushstring(L, r == 1 ? "exists" : "created");
	return 2;
}

/* net.netns_del(dir, name) -> true */
static int l_netns_del(lua_State *L)
{
	rk_err e = {0};
	if (rk_netns_del(luaL_checkstring(L, 1), luaL_checkstring(L, 2), &e) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.netns_exists(dir, name) -> boolean | nil, err (bad name) */
static int l_netns_exists(lua_State *L)
{
	rk_err e = {0};
	int r = rk_netns_exists(luaL_checkstring(L, 1), luaL_checkstring(L, 2), &e);
	if (r < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, r);
	return 1;
}

/* net.netns_path(dir, name) -> path | nil, err */
static int l_netns_path(lua_State *L)
{
	rk_err e = {0};
	char path[512];
	if (rk_netns_path(luaL_checkstring(L, 1), luaL_checkstring(L, 2), path, sizeof path, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushstring(L, path);
	return 1;
}

/* net.netns_list(dir) -> {name, ...} */
static int l_netns_list(lua_State *L)
{
	rk_err e = {0};
	char **names;
	size_t n;
	if (rk_netns_list(luaL_checkstring(L, 1), &names, &n, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushstring(L, names[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(names);
	return 1;
}

/* ---- links --------------------------------------------------------------------------------- */

static void push_link(lua_State *L, const rk_net_link *l)
{
	lua_createtable(L, 0, 7);
	lua_pushinteger(L, l->index);
	lua_setfield(L, -2, "index");
	lua_pushstring(L, l->name);
	lua_setfield(L, -2, "name");
	lua_pushstring(L, l->kind);
	lua_setfield(L, -2, "kind");
	lua_pushboolean(L, l->up);
	lua_setfield(L, -2, "up");
	lua_pushinteger(L, l->master);
	lua_setfield(L, -2, "master");
	lua_pushinteger(L, l->mtu);
	lua_setfield(L, -2, "mtu");
	lua_pushstring(L, l->mac);
	lua_setfield(L, -2, "mac");
}

/* net.link(name[, opts]) -> link table | false (absent) | nil, err */
static int l_link(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	rk_err e = {0};
	rk_net_link l;
	int r = IN_NS(L, 2, e, rk_net_link_get(name, &l, &e));
	if (r < 0)
		return lrk_fail_err(L, &e);
	if (r == 0)
		lua_pushboolean(L, 0);
	else
		push_link(L, &l);
	return 1;
}

/* net.links([opts]) -> array of link tables */
static int l_links(lua_State *L)
{
	rk_err e = {0};
	rk_net_link *v = NULL;
	size_t n = 0;
	if (IN_NS(L, 1, e, rk_net_link_list(&v, &n, &e)) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		push_link(L, &v[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(v);
	return 1;
}

/* net.link_del(name[, opts]) -> true */
static int l_link_del(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	rk_err e = {0};
	if (IN_NS(L, 2, e, rk_net_link_del(name, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

static int link_updown(lua_State *L, int up)
{
	const char *name = luaL_checkstring(L, 1);
	rk_err e = {0};
	if (IN_NS(L, 2, e, rk_net_link_set_up(name, up, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}
/* net.link_up(name[, opts]) -> true */
static int l_link_up(lua_State *L)
{
	return link_updown(L, 1);
}
/* net.link_down(name[, opts]) -> true */
static int l_link_down(lua_State *L)
{
	return link_updown(L, 0);
}

/* net.link_set_master(name, bridge|nil[, opts]) -> true */
static int l_link_set_master(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1), *master = luaL_optstring(L, 2, NULL);
	rk_err e = {0};
	if (IN_NS(L, 3, e, rk_net_link_set_master(name, master, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.link_set_netns(name, netns_path[, opts]) -> true */
static int l_link_set_netns(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1), *path = luaL_checkstring(L, 2);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lrk_fail(L, "moving link %s to netns %s: open: %s", name, path, strerror(errno));
	rk_err e = {0};
	int r = IN_NS(L, 3, e, rk_net_link_set_netns(name, fd, &e));
	close(fd);
	if (r < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.link_set_mtu(name, mtu[, opts]) -> true */
static int l_link_set_mtu(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	unsigned mtu = (unsigned)luaL_checkinteger(L, 2);
	rk_err e = {0};
	if (IN_NS(L, 3, e, rk_net_link_set_mtu(name, mtu, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.bridge_add(name[, opts]) -> true, "created"|"exists" */
static int l_bridge_add(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	rk_err e = {0};
	int r = IN_NS(L, 2, e, rk_net_bridge_add(name, &e));
	if (r < 0)
		return lrk_fail_err(L, &e);
	return created(L, r);
}

/* net.veth_add(name, peer, peer_netns_path|nil[, opts]) -> true, "created"|"exists" */
static int l_veth_add(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1), *peer = luaL_checkstring(L, 2), *ns = luaL_optstring(L, 3, NULL);
	int fd = -1;
	if (ns) {
		fd = open(ns, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return lrk_fail(L, "creating veth %s: opening the peer's netns %s: %s", name, ns,
					strerror(errno));
	}
	rk_err e = {0};
	int r = IN_NS(L, 4, e, rk_net_veth_add(name, peer, fd, &e));
	if (fd >= 0)
		close(fd);
	if (r < 0)
		return lrk_fail_err(L, &e);
	return created(L, r);
}

/* net.tap_add(name[, {uid=, netns=}]) -> true, "created"|"exists" */
static int l_tap_add(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	int uid = -1;
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "uid");
		if (!lua_isnil(L, -1))
			uid = (int)luaL_checkinteger(L, -1);
		lua_pop(L, 1);
	}
	rk_err e = {0};
	int r = IN_NS(L, 2, e, rk_net_tap_add(name, uid, &e));
	if (r < 0)
		return lrk_fail_err(L, &e);
	return created(L, r);
}

/* ---- addresses and routes ----------------------------------------------------------------- */

/* net.addr_add(ifname, cidr[, opts]) -> true, "created"|"exists" */
static int l_addr_add(lua_State *L)
{
	const char *ifn = luaL_checkstring(L, 1), *cidr = luaL_checkstring(L, 2);
	rk_err e = {0};
	int r = IN_NS(L, 3, e, rk_net_addr_add(ifn, cidr, &e));
	if (r < 0)
		return lrk_fail_err(L, &e);
	return created(L, r);
}

/* net.addr_del(ifname, cidr[, opts]) -> true */
static int l_addr_del(lua_State *L)
{
	const char *ifn = luaL_checkstring(L, 1), *cidr = luaL_checkstring(L, 2);
	rk_err e = {0};
	if (IN_NS(L, 3, e, rk_net_addr_del(ifn, cidr, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.neigh_del(ifname, ip[, opts]) -> true */
static int l_neigh_del(lua_State *L)
{
	const char *ifn = luaL_checkstring(L, 1), *ip = luaL_checkstring(L, 2);
	rk_err e = {0};
	if (IN_NS(L, 3, e, rk_net_neigh_del(ifn, ip, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.addrs(ifname[, opts]) -> {"a.b.c.d/len", ...} */
static int l_addrs(lua_State *L)
{
	const char *ifn = luaL_checkstring(L, 1);
	rk_err e = {0};
	char **v = NULL;
	size_t n = 0;
	if (IN_NS(L, 2, e, rk_net_addr_list(ifn, &v, &n, &e)) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushstring(L, v[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(v);
	return 1;
}

/* net.view(ifname[, opts]) -> {found=, up=, lo_up=, addrs={"a.b.c.d/len", ...}, gateway=} | nil, err
 * (one namespace switch, one netlink socket: see rk_net_view_get) */
static int l_view(lua_State *L)
{
	const char *ifn = luaL_checkstring(L, 1);
	rk_err e = {0};
	rk_net_view v;
	if (IN_NS(L, 2, e, rk_net_view_get(ifn, &v, &e)) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, 0, 5);
	lua_pushboolean(L, v.found);
	lua_setfield(L, -2, "found");
	lua_pushboolean(L, v.up);
	lua_setfield(L, -2, "up");
	lua_pushboolean(L, v.lo_up);
	lua_setfield(L, -2, "lo_up");
	lua_createtable(L, (int)v.naddrs, 0);
	for (size_t i = 0; i < v.naddrs; i++) {
		lua_pushstring(L, v.addrs[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "addrs");
	lua_pushstring(L, v.gateway);
	lua_setfield(L, -2, "gateway");
	return 1;
}

/* net.route_add(dst, {via=, dev=, netns=}) -> true */
static int l_route_add(lua_State *L)
{
	const char *dst = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	const char *via = opt_str(L, 2, "via"), *dev = opt_str(L, 2, "dev");
	rk_err e = {0};
	if (IN_NS(L, 2, e, rk_net_route_add(dst, via, dev, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.route_del(dst[, {via=, dev=, netns=}]) -> true */
static int l_route_del(lua_State *L)
{
	const char *dst = luaL_checkstring(L, 1);
	const char *via = opt_str(L, 2, "via"), *dev = opt_str(L, 2, "dev");
	rk_err e = {0};
	if (IN_NS(L, 2, e, rk_net_route_del(dst, via, dev, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* ---- sysctls ------------------------------------------------------------------------------- */

/* net.sysctl_set(key, value[, opts]) -> true */
static int l_sysctl_set(lua_State *L)
{
	const char *k = luaL_checkstring(L, 1), *v = luaL_checkstring(L, 2);
	rk_err e = {0};
	if (IN_NS(L, 3, e, rk_net_sysctl_set(k, v, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.sysctl_get(key[, opts]) -> string */
static int l_sysctl_get(lua_State *L)
{
	const char *k = luaL_checkstring(L, 1);
	char buf[256];
	rk_err e = {0};
	if (IN_NS(L, 2, e, rk_net_sysctl_get(k, buf, sizeof buf, &e)) < 0)
		return lrk_fail_err(L, &e);
	lua_pushstring(L, buf);
	return 1;
}

/* net.ip_forward(on[, opts]) -> true */
static int l_ip_forward(lua_State *L)
{
	int on = lua_toboolean(L, 1);
	rk_err e = {0};
	if (IN_NS(L, 2, e, rk_net_set_ip_forward(on, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.route_localnet(ifname, on[, opts]) -> true */
static int l_route_localnet(lua_State *L)
{
	const char *ifn = luaL_checkstring(L, 1);
	int on = lua_toboolean(L, 2);
	rk_err e = {0};
	if (IN_NS(L, 3, e, rk_net_set_route_localnet(ifn, on, &e)) < 0)
		return lrk_fail_err(L, &e);
	return push_true(L);
}

/* net.netns_dir_release(dir) -> released (boolean) | nil, err */
static int l_netns_dir_release(lua_State *L)
{
	rk_err e = {0};
	int r = rk_netns_dir_release(luaL_checkstring(L, 1), &e);
	if (r < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, r);
	return 1;
}

/* net.lock(name, info) -> true | nil, err, holder_info
 * The network-namespace-wide lock (core/netlock.h), held until the process exits. holder_info is
 * what the process holding it published ("" if nothing), only when another process holds it. */
static int l_lock(lua_State *L)
{
	rk_err e = {0};
	char holder[256];
	if (rk_netlock_take(luaL_checkstring(L, 1), luaL_optstring(L, 2, ""), holder, sizeof holder, &e) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, e.msg);
		if (e.code != EADDRINUSE)
			return 2;
		lua_pushstring(L, holder);
		return 3;
	}
	return push_true(L);
}

static int open_net(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"valid_ifname", l_valid_ifname},
		{"ip4", l_ip4},
		{"ip4str", l_ip4str},
		{"parse_cidr", l_parse_cidr},
		{"netns_add", l_netns_add},
		{"netns_del", l_netns_del},
		{"netns_exists", l_netns_exists},
		{"netns_path", l_netns_path},
		{"netns_list", l_netns_list},
		{"link", l_link},
		{"links", l_links},
		{"link_del", l_link_del},
		{"link_up", l_link_up},
		{"link_down", l_link_down},
		{"link_set_master", l_link_set_master},
		{"link_set_netns", l_link_set_netns},
		{"link_set_mtu", l_link_set_mtu},
		{"bridge_add", l_bridge_add},
		{"veth_add", l_veth_add},
		{"tap_add", l_tap_add},
		{"addr_add", l_addr_add},
		{"addr_del", l_addr_del},
		{"addrs", l_addrs},
		{"view", l_view},
		{"neigh_del", l_neigh_del},
		{"route_add", l_route_add},
		{"route_del", l_route_del},
		{"sysctl_set", l_sysctl_set},
		{"sysctl_get", l_sysctl_get},
		{"ip_forward", l_ip_forward},
		{"route_localnet", l_route_localnet},
		{"lock", l_lock},
		{"netns_dir_release", l_netns_dir_release},
		{NULL, NULL},
	};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}

LRK_MODULE("riklet.net", open_net)
