/* lcore.c — `riklet.core`: process-level bits for the Lua agent: logging, exit, clocks, signals,
 * the command line and where the Lua tree is. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/utsname.h>

#include "lrk.h"

static const char *g_lua_dir, *g_pol_dir;
static int g_lua_on_malloc; /* the Lua state allocates through glibc's malloc (main.c new_state) */
static int g_argc;
static char **g_argv;

void lrk_core_set_paths(const char *lua_dir, const char *policy_dir, int argc, char **argv);
void lrk_core_set_lua_on_malloc(int on);
void lrk_core_set_lua_on_malloc(int on)
{
	g_lua_on_malloc = on;
}
void lrk_core_set_paths(const char *lua_dir, const char *policy_dir, int argc, char **argv)
{
	g_lua_dir = strdup(lua_dir);
	g_pol_dir = strdup(policy_dir);
	g_argc = argc;
	g_argv = argv;
}

/* core.log(level, subsys, message) — level "error"|"warn"|"info"|"debug" */
static int l_log(lua_State *L)
{
	int lvl = rk_log_parse_level(luaL_checkstring(L, 1));
	if (lvl < 0)
		return luaL_argerror(L, 1, "level must be error, warn, info or debug");
	size_t len;
	const char *msg = luaL_checklstring(L, 3, &len);
	rk_log_msg(lvl, luaL_checkstring(L, 2), msg, len);
	return 0;
}

/* core.log_setup(level, json:boolean) -> true or nil, err */
static int l_log_setup(lua_State *L)
{
	int lvl = rk_log_parse_level(luaL_checkstring(L, 1));
	if (lvl < 0)
		return lrk_fail(L, "unknown log level '%s' (use error, warn, info or debug)", lua_tostring(L, 1));
	rk_log_setup(lvl, lua_toboolean(L, 2));
	lua_pushboolean(L, 1);
	return 1;
}

/* core.log_enabled(level) -> boolean */
static int l_log_enabled(lua_State *L)
{
	lua_pushboolean(L, rk_log_parse_level(luaL_checkstring(L, 1)) <= rk_log_level());
	return 1;
}

/* core.exit(code) — stop the loop; riklet exits with code once the current task yields. */
static int l_exit(lua_State *L)
{
	rk_loop_stop(lrk_loop(L), (int)luaL_optinteger(L, 1, 0));
	return 0;
}

/* core.now() -> monotonic seconds (float); core.time() -> wall-clock seconds (float) */
static int l_now(lua_State *L)
{
	lua_pushnumber(L, (double)rk_now_ms() / 1000.0);
	return 1;
}
static int l_time(lua_State *L)
{
	lua_pushnumber(L, rk_wall_time());
	return 1;
}

/* core.args() -> array of command-line arguments (without argv[0]) */
static int l_args(lua_State *L)
{
	lua_createtable(L, g_argc, 0);
	for (int i = 1; i < g_argc; i++) {
		lua_pushstring(L, g_argv[i]);
		lua_rawseti(L, -2, i);
	}
	return 1;
}

/* core.paths() -> {lua=, policies=, exe=} */
static int l_paths(lua_State *L)
{
	lua_newtable(L);
	lua_pushstring(L, g_lua_dir);
	lua_setfield(L, -2, "lua");
	lua_pushstring(L, g_pol_dir);
	lua_setfield(L, -2, "policies");
	char exe[4096];
	ssize_t r = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (r > 0) {
		exe[r] = 0;
		lua_pushstring(L, exe);
		lua_setfield(L, -2, "exe");
	}
	return 1;
}

/* core.hostname() -> string */
static int l_hostname(lua_State *L)
{
	struct utsname u;
	if (uname(&u) < 0)
		return lrk_fail(L, "uname: %s", strerror(errno));
	lua_pushstring(L, u.nodename);
	return 1;
}

/* core.getpid() -> pid; core.getuid() -> uid */
static int l_getpid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}
static int l_getuid(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)geteuid());
	return 1;
}

/* core.on_signal(name, fn) — name "INT"|"TERM"|"HUP"|"USR1"|"USR2"; fn(name) runs as a new task
 * on every delivery. Returns true or nil, err. */
static const struct {
	const char *name;
	int no;
} signames[] = {{"INT", SIGINT}, {"TERM", SIGTERM}, {"HUP", SIGHUP}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}};
static int sig_refs[65];

static void on_sig(void *ud, int signo)
{
	lua_State *L = lrk_main();
	lua_rawgeti(L, LUA_REGISTRYINDEX, sig_refs[signo]);
	lua_pushstring(L, (const char *)ud);
	lrk_spawn(L, 1);
}

static int l_on_signal(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++) {
		if (strcmp(name, signames[i].name))
			continue;
		int no = signames[i].no;
		lua_settop(L, 2);
		if (sig_refs[no])
			luaL_unref(L, LUA_REGISTRYINDEX, sig_refs[no]);
		sig_refs[no] = luaL_ref(L, LUA_REGISTRYINDEX);
		rk_err e = {0};
		if (rk_loop_on_signal(lrk_loop(L), no, on_sig, (void *)signames[i].name, &e) < 0)
			return lrk_fail_err(L, &e);
		lua_pushboolean(L, 1);
		return 1;
	}
	return luaL_argerror(L, 1, "signal must be INT, TERM, HUP, USR1 or USR2");
}

/* core.loop_stats() -> {lag_max_ms, lag_recent_ms, lag_last_ms, turns, slow_turns, slowest, timers,
 * watches, children, tasks, pool_threads, pool_pending, pool_done}. lag_*: how long one loop turn
 * kept everything else waiting (max since start, max of the last 1-2 minutes, last turn);
 * slowest: what ran in the longest turn, when known. */
static int l_loop_stats(lua_State *L)
{
	lrk_loop_stats(L);
	return 1;
}

/* core.trim() — malloc_trim(0): the C heap's free pages back to the kernel (after start-up). */
static int l_trim(lua_State *L)
{
	lua_pushboolean(L, malloc_trim(0));
	return 1;
}

/* core.heap() -> {malloc_kib, malloc_used_kib, malloc_free_kib, malloc_top_kib, mmap_kib,
 * lua_in_malloc}: glibc's
 * heap, every arena summed (mallinfo2): malloc_kib what it holds from the kernel (sbrk'd arenas +
 * mmapped blocks), used / free the chunks in use / free in it, top the free end malloc_trim can
 * give back whole (free chunks inside the heap go back page by page). The Lua state lives on this
 * malloc (main.c; lua_in_malloc false with RIKLET_LUA_ALLOC=luajit and in the sanitizer build), so
 * used then includes collectgarbage("count"). For `riklet ps --json` and the benchmarks: where a
 * node's RSS goes. */
static int l_heap(lua_State *L)
{
	struct mallinfo2 m = mallinfo2();
	const struct {
		const char *name;
		size_t bytes;
	} f[] = {{"malloc_kib", m.arena + m.hblkhd},
		 {"malloc_used_kib", m.uordblks + m.hblkhd},
		 {"malloc_free_kib", m.fordblks},
		 {"malloc_top_kib", m.keepcost},
		 {"mmap_kib", m.hblkhd}};
	lua_createtable(L, 0, 6);
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		lua_pushnumber(L, (double)f[i].bytes / 1024);
		lua_setfield(L, -2, f[i].name);
	}
	lua_pushboolean(L, g_lua_on_malloc);
	lua_setfield(L, -2, "lua_in_malloc");
	return 1;
}

static int open_core(lua_State *L)
{
	static const luaL_Reg fns[] = {{"log", l_log},
				       {"log_setup", l_log_setup},
				       {"log_enabled", l_log_enabled},
				       {"exit", l_exit},
				       {"now", l_now},
				       {"time", l_time},
				       {"args", l_args},
				       {"paths", l_paths},
				       {"hostname", l_hostname},
				       {"getpid", l_getpid},
				       {"getuid", l_getuid},
				       {"on_signal", l_on_signal},
				       {"loop_stats", l_loop_stats},
				       {"trim", l_trim},
				       {"heap", l_heap},
				       {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	lua_pushstring(L, RIKLET_VERSION);
	lua_setfield(L, -2, "version");
	return 1;
}
LRK_MODULE("riklet.core", open_core)
