/* main.c — riklet's entry point: create the loop and the Lua state, find the Lua tree, and run
 * riklet.main in the first task. Everything that decides anything is in lua/. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "lrk.h"

void lrk_init(lua_State *L, rk_loop *loop);
void lrk_core_set_paths(const char *lua_dir, const char *policy_dir, int argc, char **argv);
void lrk_core_set_lua_on_malloc(int on);

static int is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The Lua tree: $RIKLET_LUA_DIR, else the source tree when this binary lives in the build dir it
 * was built in, else share/riklet next to the binary's bin/ (a package built with another prefix
 * than the build's: /usr/bin/riklet -> /usr/share/riklet), else the configured data dir. */
static void find_tree(char *lua_dir, char *pol_dir, size_t n)
{
	const char *env = getenv("RIKLET_LUA_DIR");
	char exe[PATH_MAX] = "";
	ssize_t r = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[r > 0 ? r : 0] = 0;
	const char *base;
	if (env && *env) {
		snprintf(lua_dir, n, "%s", env);
		snprintf(pol_dir, n, "%s/../policies", env);
		return;
	}
	size_t bl = strlen(RIKLET_BUILD_DIR);
	char near[PATH_MAX] = "";
	char *slash = strrchr(exe, '/');
	if (slash && slash - exe >= 4 && !strncmp(slash - 4, "/bin", 4))
		snprintf(near, sizeof near, "%.*s/share/riklet", (int)(slash - 4 - exe), exe);
	char near_lua[PATH_MAX + 8];
	snprintf(near_lua, sizeof near_lua, "%s/lua", near);
	if (!strncmp(exe, RIKLET_BUILD_DIR, bl) && exe[bl] == '/' && is_dir(RIKLET_SRC_DIR "/lua"))
		base = RIKLET_SRC_DIR;
	else if (*near && is_dir(near_lua))
		base = near;
	else
		base = RIKLET_DATA_DIR;
	snprintf(lua_dir, n, "%s/lua", base);
	snprintf(pol_dir, n, "%s/policies", base);
}

/* Every re-adopted container's conmon is watched through a pidfd (after a restart the conmons are
 * no longer riklet's children), and each runc or conmon run in flight holds pipes: at 1,000 Pods
 * that passes the soft limit of 1024 open files most nodes give a service (systemd's default), and
 * watches fail with EMFILE. Run with the soft limit at the hard one, as Go programs do since 1.19;
 * containers keep their own (process.rlimits of their config, 1024 in the images' defaults). */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			rk_warn("main",
				"cannot raise the open files limit from %llu to %llu: %s; with many Pods, raise it "
				"(LimitNOFILE= in the unit, ulimit -n)",
				(unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
	}
}

/* The Lua state's memory from glibc's malloc rather than LuaJIT's own allocator: LuaJIT's keeps
 * every page a burst of work touched (1,000 Pods created at once), glibc's gives the free ones back
 * at malloc_trim (core.trim, run by the daemon once such a burst is over). RIKLET_LUA_ALLOC=luajit
 * keeps LuaJIT's (for measurements: tests/bench/bench_mem.sh). */
static void *lua_glibc_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	(void)ud;
	(void)osize;
	if (nsize == 0) {
		free(ptr);
		return NULL;
	}
	return realloc(ptr, nsize);
}

/* what luaL_newstate sets: an error outside any protected call ends riklet, saying what it was */
static int lua_panic(lua_State *L)
{
	const char *m = lua_tostring(L, -1);
	fprintf(stderr, "riklet: PANIC: unprotected error in a call to the Lua API (%s)\n", m ? m : "?");
	fflush(stderr);
	return 0;
}

/* The sanitizer build keeps LuaJIT's allocator: LuaJIT is not instrumented, and its whole heap
 * through ASan's malloc (quarantine, redzones) would only slow the sanitizer pass down. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RK_LUA_ALLOC_DEFAULT "luajit"
#endif
#endif
#ifndef RK_LUA_ALLOC_DEFAULT
#define RK_LUA_ALLOC_DEFAULT "glibc"
#endif

static lua_State *new_state(void)
{
	const char *a = getenv("RIKLET_LUA_ALLOC");
	if (!a)
		a = RK_LUA_ALLOC_DEFAULT;
	if (!strcmp(a, "luajit"))
		return luaL_newstate();
	lua_State *L = lua_newstate(lua_glibc_alloc, NULL);
	if (!L)
		return luaL_newstate(); /* a LuaJIT built without GC64 refuses other allocators */
	lrk_core_set_lua_on_malloc(1);
	lua_atpanic(L, lua_panic);
	return L;
}

int main(int argc, char **argv)
{
	rk_err e = {0};
	const char *lvl = getenv("RIKLET_LOG_LEVEL");
	const char *fmt = getenv("RIKLET_LOG_FORMAT"); /* until the command line is read */
	rk_log_setup(lvl && rk_log_parse_level(lvl) >= 0 ? rk_log_parse_level(lvl) : RK_LOG_INFO,
		     fmt && !strcmp(fmt, "json"));
	raise_nofile();
	rk_loop *loop = rk_loop_new(&e);
	if (!loop) {
		fprintf(stderr, "riklet: cannot start the event loop: %s\n", e.msg);
		return 1;
	}
	/* RIKLET_LOOP_BUDGET_MS: a loop turn's budget for paced work (core/loop.h), 1-1000; 0: none */
	const char *budget = getenv("RIKLET_LOOP_BUDGET_MS");
	if (budget && *budget) {
		char *end;
		long ms = strtol(budget, &end, 10);
		if (*end || ms < 0 || ms > 1000) {
			fprintf(stderr,
				"riklet: RIKLET_LOOP_BUDGET_MS=%s: give milliseconds from 0 (no budget) to 1000\n",
				budget);
			return 1;
		}
		rk_loop_set_budget(loop, (uint64_t)ms);
	}
	char lua_dir[PATH_MAX], pol_dir[PATH_MAX];
	find_tree(lua_dir, pol_dir, sizeof lua_dir);
	if (!is_dir(lua_dir)) {
		fprintf(stderr,
			"riklet: cannot find its Lua scripts in %s.\n"
			"Install riklet with `cmake --install build`, run it from its build directory, or set "
			"RIKLET_LUA_DIR to the lua/ directory of the source tree.\n",
			lua_dir);
		return 1;
	}
	lua_State *L = new_state();
	if (!L) {
		fprintf(stderr, "riklet: cannot create the Lua state (out of memory)\n");
		return 1;
	}
	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", lua_dir, lua_dir);
	lua_setfield(L, -2, "path");
	lua_pushstring(L, "");
	lua_setfield(L, -2, "cpath"); /* no C modules from disk: everything is built in */
	lua_pop(L, 1);
	lrk_core_set_paths(lua_dir, pol_dir, argc, argv);
	lrk_init(L, loop);

	/* The first task: require("riklet.main").main(). It ends the loop with core.exit(code). */
	lua_getglobal(L, "require");
	lua_pushstring(L, "riklet.main");
	if (lrk_pcall(L, 1, 1, "loading riklet.main")) {
		fprintf(stderr, "riklet: cannot load its main script: %s\n", lua_tostring(L, -1));
		return 1;
	}
	lua_getfield(L, -1, "main");
	lrk_spawn(L, 0);
	int code = rk_loop_run(loop);
	fflush(stdout);
	/* Workloads outlive riklet by design: nothing to tear down here but our own memory (and the
	 * worker pool's last writes, finished by lrk_shutdown). */
	lua_close(L);
	lrk_shutdown();
	rk_loop_free(loop);
	return code;
}
