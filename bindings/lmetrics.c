/* lmetrics.c — `riklet.metrics`: node metrics for the scheduler front-end (core/metrics).
 *
 *   metrics.node_json() -> json | nil, err     PROTOCOL.md's node document; cpu.free is the idle
 *                                              percentage since the previous call (first: since boot)
 *   metrics.cpu() -> {total = ncpu, idle_jiffies =, total_jiffies =} | nil, err
 *   metrics.memory() -> {total = bytes, free = bytes (MemAvailable)} | nil, err
 *   metrics.disks() -> { {disk_name =, mountpoint =, total =, free =}, ... } | nil, err
 *   metrics.fs(path) -> {total =, free = bytes, files =, files_free = inodes} | nil, err */
#include <stdlib.h>

#include "lrk.h"
#include "metrics.h"

static rk_cpu_sample prev_sample; /* one node, one reporter: the previous sample lives here */

/* metrics.node_json() -> json | nil, err */
static int l_node_json(lua_State *L)
{
	rk_err e;
	char *s = rk_metrics_node_json(&prev_sample, &e);
	if (!s)
		return lrk_fail_err(L, &e);
	lua_pushstring(L, s);
	free(s);
	return 1;
}

/* metrics.cpu() -> {total =, idle_jiffies =, total_jiffies =} | nil, err */
static int l_cpu(lua_State *L)
{
	rk_err e;
	rk_cpu_sample s;
	if (rk_metrics_cpu_sample(&s, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, 0, 3);
	lua_pushinteger(L, s.ncpu);
	lua_setfield(L, -2, "total");
	lua_pushnumber(L, (lua_Number)s.idle);
	lua_setfield(L, -2, "idle_jiffies");
	lua_pushnumber(L, (lua_Number)s.total);
	lua_setfield(L, -2, "total_jiffies");
	return 1;
}

/* metrics.memory() -> {total =, free =} | nil, err */
static int l_memory(lua_State *L)
{
	rk_err e;
	uint64_t t, a;
	if (rk_metrics_memory(&t, &a, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, 0, 2);
	lua_pushnumber(L, (lua_Number)t);
	lua_setfield(L, -2, "total");
	lua_pushnumber(L, (lua_Number)a);
	lua_setfield(L, -2, "free");
	return 1;
}

/* metrics.disks() -> { {disk_name =, mountpoint =, total =, free =}, ... } | nil, err */
static int l_disks(lua_State *L)
{
	rk_err e;
	rk_disk *d;
	size_t n;
	if (rk_metrics_disks(NULL, &d, &n, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_createtable(L, 0, 4);
		lua_pushstring(L, d[i].name);
		lua_setfield(L, -2, "disk_name");
		lua_pushstring(L, d[i].mountpoint);
		lua_setfield(L, -2, "mountpoint");
		lua_pushnumber(L, (lua_Number)d[i].total);
		lua_setfield(L, -2, "total");
		lua_pushnumber(L, (lua_Number)d[i].free);
		lua_setfield(L, -2, "free");
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(d);
	return 1;
}

/* metrics.fs(path) -> {total =, free =, files =, files_free =} | nil, err */
static int l_fs(lua_State *L)
{
	rk_err e;
	rk_fs_usage u;
	if (rk_metrics_fs(luaL_checkstring(L, 1), &u, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, 0, 4);
	lua_pushnumber(L, (lua_Number)u.total);
	lua_setfield(L, -2, "total");
	lua_pushnumber(L, (lua_Number)u.free);
	lua_setfield(L, -2, "free");
	lua_pushnumber(L, (lua_Number)u.files);
	lua_setfield(L, -2, "files");
	lua_pushnumber(L, (lua_Number)u.files_free);
	lua_setfield(L, -2, "files_free");
	return 1;
}

static int open_metrics(lua_State *L)
{
	static const luaL_Reg fns[] = {{"node_json", l_node_json}, {"cpu", l_cpu}, {"memory", l_memory},
				       {"disks", l_disks},	   {"fs", l_fs},   {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.metrics", open_metrics)
