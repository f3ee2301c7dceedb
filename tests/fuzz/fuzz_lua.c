/* fuzz_lua.c — libFuzzer harness for riklet's Lua-side parsers: one LuaJIT state with every riklet
 * binding (as `riklet test` has), and the script tests/fuzz/FUZZ_NAME.lua, which returns
 * function(data). Each input is passed to that function; a Lua error out of it is a finding (the
 * code under test must answer bad input with nil, reason — never raise), so is any sanitizer
 * report from the C underneath (ljson.c, lpb.c, lfs.c ...).
 *
 * libFuzzer sees the coverage of the C code only; the Lua code is made visible to it with a line
 * hook that bumps one of 64 Ki 8-bit counters per (chunk, line), registered like a compiled
 * module's counters. JIT is off (hooks do not run in traces). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrk.h"
#include <luajit.h>

void lrk_init(lua_State *L, rk_loop *loop);
void lrk_core_set_paths(const char *lua_dir, const char *policy_dir, int argc, char **argv);
void __sanitizer_cov_8bit_counters_init(uint8_t *start, uint8_t *stop);
void __sanitizer_cov_pcs_init(const uintptr_t *pcs_beg, const uintptr_t *pcs_end);

#define NCOV (1 << 16)
static uint8_t cov[NCOV];
static uintptr_t cov_pcs[2 * NCOV]; /* (pc, flags) pairs: fake pcs, one per counter */
static lua_State *L;
static int fn_ref;

__attribute__((constructor)) static void cov_register(void)
{
	for (size_t i = 0; i < NCOV; i++)
		cov_pcs[2 * i] = (uintptr_t)&cov[i];
	__sanitizer_cov_8bit_counters_init(cov, cov + NCOV);
	__sanitizer_cov_pcs_init(cov_pcs, cov_pcs + 2 * NCOV);
}

static void line_hook(lua_State *S, lua_Debug *ar)
{
	if (!lua_getinfo(S, "S", ar))
		return;
	uintptr_t h = (uintptr_t)ar->source * 0x9E3779B97F4A7C15u ^ (uintptr_t)ar->currentline * 0x85EBCA6Bu;
	uint8_t *c = &cov[(h >> 16) & (NCOV - 1)];
	if (*c < 255)
		(*c)++;
}

static int traceback(lua_State *S)
{
	luaL_traceback(S, S, lua_tostring(S, 1), 1);
	return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	rk_err e = {0};
	rk_log_setup(RK_LOG_ERROR, 0); /* quiet: the code under test logs (warn) what it refuses */
	rk_loop *loop = rk_loop_new(&e);
	L = luaL_newstate();
	if (!loop || !L) {
		fprintf(stderr, "fuzz: cannot create the loop or the Lua state\n");
		exit(1);
	}
	luaL_openlibs(L);
	luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
	lua_getglobal(L, "package");
	lua_pushstring(L, RIKLET_SRC_DIR "/lua/?.lua;" RIKLET_SRC_DIR "/tests/fuzz/?.lua");
	lua_setfield(L, -2, "path");
	lua_pop(L, 1);
	lrk_core_set_paths(RIKLET_SRC_DIR "/lua", RIKLET_SRC_DIR "/policies", *argc, *argv);
	lrk_init(L, loop);
	lua_pushcfunction(L, traceback);
	lua_getglobal(L, "require");
	lua_pushstring(L, FUZZ_NAME);
	if (lua_pcall(L, 1, 1, 1) || !lua_isfunction(L, -1)) {
		fprintf(stderr, "fuzz: loading tests/fuzz/%s.lua: %s\n", FUZZ_NAME, lua_tostring(L, -1));
		exit(1);
	}
	fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pop(L, 1);
	lua_sethook(L, line_hook, LUA_MASKLINE, 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int top = lua_gettop(L);
	lua_pushcfunction(L, traceback);
	lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
	lua_pushlstring(L, (const char *)data, size);
	if (lua_pcall(L, 1, 0, top + 1)) {
		fprintf(stderr, "fuzz %s: the code under test raised instead of returning an error:\n%s\n", FUZZ_NAME,
			lua_tostring(L, -1));
		abort();
	}
	lua_settop(L, top);
	return 0;
}
