/* loci.c — `riklet.oci`: OCI bundle config edits and runc state parsing, over core/oci.h.
 * Synchronous. The runc CLI driver is lua/riklet/runc.lua. Misuse (wrong types, unknown option)
 * raises; expected failures return nil, message.
 *
 *   oci.edit_config(template_path, out_path, opts) -> true | nil, err
 *       opts (all optional): args = {"/bin/sh", ...} (replaces the image's entrypoint+cmd),
 *       env = {"K=V", ...} (overrides by name, appends new), hostname, root_path, netns_path,
 *       cgroups_path, cwd, mounts = {{source=, destination=, readonly=bool}, ...} (or
 *       {type = "tmpfs", destination=, readonly=bool}: a fresh tmpfs, no source),
 *       memory_limit (bytes), cpu_quota (us per period), cpu_period (us, default 100000),
 *       uid, gid (process.user; a gid drops the image's additional groups).
 *       Always: terminal=false, root.readonly=false, no user namespace / id mappings.
 *   oci.parse_state(json) -> {id=, pid=, status=, bundle=, created=} | nil, err */
#include <string.h>

#include "lrk.h"
#include "oci.h"

static const char *const known_opts[] = {"args", "env",	   "hostname",	   "root_path", "netns_path", "cgroups_path",
					 "cwd",	 "mounts", "memory_limit", "cpu_quota", "cpu_period", "uid",
					 "gid",	 NULL};

static const char *opt_str(lua_State *L, int idx, const char *k)
{
	lua_getfield(L, idx, k);
	const char *s = NULL;
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "oci.edit_config: opts.%s must be a string", k);
		s = lua_tostring(L, -1);
	}
	lua_pop(L, 1); /* the string stays referenced by the opts table */
	return s;
}

static double opt_num(lua_State *L, int idx, const char *k)
{
	lua_getfield(L, idx, k);
	double v = 0;
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TNUMBER)
			luaL_error(L, "oci.edit_config: opts.%s must be a number", k);
		v = lua_tonumber(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

struct edit_bufs {
	char **args, **env;
	rk_oci_mount *mounts;
};

static int edit_cleanup(struct edit_bufs *b)
{
	lrk_free_argv(b->args);
	lrk_free_argv(b->env);
	free(b->mounts);
	return 0;
}

/* oci.edit_config(template_path, out_path, opts) -> true | nil, err */
static int l_edit_config(lua_State *L)
{
	const char *tpl = luaL_checkstring(L, 1), *out = luaL_checkstring(L, 2);
	rk_oci_edit ed = {0};
	if (lua_isnoneornil(L, 3))
		lua_newtable(L), lua_replace(L, 3);
	luaL_checktype(L, 3, LUA_TTABLE);
	/* unknown keys are a programming error: say which */
	lua_pushnil(L);
	while (lua_next(L, 3)) {
		lua_pop(L, 1);
		int known = 0;
		if (lua_type(L, -1) == LUA_TSTRING)
			for (const char *const *k = known_opts; *k; k++)
				known |= !strcmp(*k, lua_tostring(L, -1));
		if (!known)
			return luaL_error(L, "oci.edit_config: unknown option '%s'",
					  lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)");
	}
	ed.hostname = opt_str(L, 3, "hostname");
	ed.root_path = opt_str(L, 3, "root_path");
	ed.netns_path = opt_str(L, 3, "netns_path");
	ed.cgroups_path = opt_str(L, 3, "cgroups_path");
	ed.cwd = opt_str(L, 3, "cwd");
	ed.memory_limit = (int64_t)opt_num(L, 3, "memory_limit");
	ed.cpu_quota = (int64_t)opt_num(L, 3, "cpu_quota");
	ed.cpu_period = (uint64_t)opt_num(L, 3, "cpu_period");
	lua_getfield(L, 3, "uid");
	lua_getfield(L, 3, "gid");
	for (int i = 0; i < 2; i++) {
		if (lua_isnil(L, i - 2))
			continue;
		lua_Number n = luaL_checknumber(L, i - 2);
		if (n < 0 || n > 4294967294.0 || n != (lua_Number)(uint32_t)n)
			return luaL_error(L, "oci.edit_config: opts.%s must be a whole number from 0 to 4294967294",
					  i ? "gid" : "uid");
		*(i ? &ed.has_gid : &ed.has_uid) = 1;
		*(i ? &ed.gid : &ed.uid) = (uint32_t)n;
	}
	lua_pop(L, 2);

	/* mounts: validate types before allocating anything that a raise would leak */
	lua_getfield(L, 3, "mounts");
	int mi = lua_gettop(L);
	size_t nm = 0;
	if (!lua_isnil(L, mi)) {
		luaL_checktype(L, mi, LUA_TTABLE);
		nm = lua_objlen(L, mi);
		for (size_t i = 1; i <= nm; i++) {
			lua_rawgeti(L, mi, (int)i);
			if (!lua_istable(L, -1))
				return luaL_error(L, "oci.edit_config: opts.mounts[%d] must be a table", (int)i);
			lua_getfield(L, -1, "source");
			lua_getfield(L, -2, "destination");
			lua_getfield(L, -3, "type");
			int tmpfs = lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "tmpfs");
			if (!lua_isnil(L, -1) && !tmpfs)
				return luaL_error(L, "oci.edit_config: opts.mounts[%d].type must be \"tmpfs\" or nil",
						  (int)i);
			if (lua_type(L, -2) != LUA_TSTRING || (!tmpfs && lua_type(L, -3) != LUA_TSTRING))
				return luaL_error(
					L, "oci.edit_config: opts.mounts[%d] needs string source and destination",
					(int)i);
			lua_pop(L, 4);
		}
	}
	lua_getfield(L, 3, "args");
	int ai = lua_gettop(L);
	lua_getfield(L, 3, "env");
	int ei = lua_gettop(L);
	if (!lua_isnil(L, ai))
		luaL_checktype(L, ai, LUA_TTABLE);
	if (!lua_isnil(L, ei))
		luaL_checktype(L, ei, LUA_TTABLE);

	struct edit_bufs b = {0};
	if (!lua_isnil(L, ai))
		b.args = lrk_check_argv(L, ai);		  /* may raise: nothing allocated yet */
	if (!lua_isnil(L, ei) && lua_objlen(L, ei) > 0) { /* an empty env list changes nothing */
		/* may raise: free args first if it would — check element types by hand */
		size_t n = lua_objlen(L, ei);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, ei, (int)i);
			int okay = lua_type(L, -1) == LUA_TSTRING;
			lua_pop(L, 1);
			if (!okay) {
				edit_cleanup(&b);
				return luaL_error(L, "oci.edit_config: opts.env[%d] must be a \"K=V\" string", (int)i);
			}
		}
		char why[64];
		if (!(b.env = lrk_to_argv(L, ei, "opts.env", why, sizeof why))) { /* out of memory, a NUL */
			edit_cleanup(&b);
			return luaL_error(L, "oci.edit_config: %s", why);
		}
	}
	if (nm) {
		b.mounts = calloc(nm, sizeof *b.mounts);
		if (!b.mounts) {
			edit_cleanup(&b);
			return lrk_fail(L, "out of memory");
		}
		for (size_t i = 0; i < nm; i++) {
			lua_rawgeti(L, mi, (int)i + 1);
			lua_getfield(L, -1, "source");
			b.mounts[i].source = lua_tostring(L, -1);
			lua_getfield(L, -2, "destination");
			b.mounts[i].destination = lua_tostring(L, -1);
			lua_getfield(L, -3, "readonly");
			b.mounts[i].readonly = lua_toboolean(L, -1);
			lua_getfield(L, -4, "type");
			b.mounts[i].tmpfs = lua_isstring(L, -1);
			lua_pop(L, 5); /* strings stay referenced by the mounts table */
		}
	}
	ed.args = (const char *const *)b.args;
	ed.env = (const char *const *)b.env;
	ed.mounts = b.mounts;
	ed.nmounts = nm;
	rk_err e = {0};
	int rc = rk_oci_config_edit(tpl, out, &ed, &e);
	edit_cleanup(&b);
	if (rc < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

/* oci.parse_state(json) -> table | nil, err */
static int l_parse_state(lua_State *L)
{
	rk_oci_state st;
	rk_err e = {0};
	if (rk_oci_state_parse(luaL_checkstring(L, 1), &st, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, 0, 5);
	lua_pushstring(L, st.id);
	lua_setfield(L, -2, "id");
	lua_pushinteger(L, st.pid);
	lua_setfield(L, -2, "pid");
	lua_pushstring(L, st.status);
	lua_setfield(L, -2, "status");
	lua_pushstring(L, st.bundle);
	lua_setfield(L, -2, "bundle");
	lua_pushstring(L, st.created);
	lua_setfield(L, -2, "created");
	return 1;
}

static int open_oci(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"edit_config", l_edit_config},
		{"parse_state", l_parse_state},
		{NULL, NULL},
	};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.oci", open_oci)
