/* lrk.h — the bindings framework: how C modules are exposed to Lua and how a binding waits.
 * bindings/ adapt core/ to Lua and never decide anything.
 *
 * Conventions (STYLE.md):
 *  - misuse (wrong type/arity) raises (luaL_check*); an expected failure returns `nil, message`
 *    (use lrk_fail / lrk_fail_err).
 *  - handles are typed userdata with a named metatable "riklet.<module>.<type>", an idempotent
 *    :close() and __gc as a safety net.
 *  - a comment above each binding gives its Lua signature and what it returns.
 *  - a binding that waits yields the calling coroutine (see lrk_wait_begin) and never blocks. */
#ifndef LRK_H
#define LRK_H

#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "loop.h"

/* Register a Lua module from any file in bindings/, no central list to edit:
 *   static int open_net(lua_State *L) { luaL_register-like...; return 1; }
 *   LRK_MODULE("riklet.net", open_net)
 * Modules are put in package.preload, so Lua does `local net = require "riklet.net"`. */
struct lrk_module {
	const char *name;
	lua_CFunction open;
	struct lrk_module *next;
};
void lrk_module_add(struct lrk_module *m);
#define LRK_MODULE(lname, fn)                                                                                          \
	static struct lrk_module lrk_mod_##fn = {lname, fn, 0};                                                        \
	__attribute__((constructor)) static void lrk_mod_reg_##fn(void)                                                \
	{                                                                                                              \
		lrk_module_add(&lrk_mod_##fn);                                                                         \
	}

/* Set a table of functions into the table at the top of the stack (Lua 5.1 has no luaL_setfuncs). */
void lrk_setfuncs(lua_State *L, const luaL_Reg *fns);
/* Create a metatable named tname with methods (as __index) and optional __gc. Leaves nothing. */
void lrk_newclass(lua_State *L, const char *tname, const luaL_Reg *methods, lua_CFunction gc);

/* A handle that is one fd (an int userdata of class tname, -1 once closed): lrk_push_fd pushes a new
 * one holding fd; lrk_close_fd(L, tname) is a :close() / __gc for such a class (idempotent). */
int *lrk_push_fd(lua_State *L, int fd, const char *tname);
int lrk_close_fd(lua_State *L, const char *tname);

/* Like lrk_newclass, for a type with computed fields: getter(L) sees (self, key) and returns 1 with
 * the value pushed, or 0 to fall back to the methods. */
void lrk_newclass_fields(lua_State *L, const char *tname, const luaL_Reg *methods, lua_CFunction getter,
			 lua_CFunction gc);

/* The main Lua state (never a coroutine): use it for work done from loop callbacks. */
lua_State *lrk_main(void);

/* The event loop of this Lua state. */
rk_loop *lrk_loop(lua_State *L);

/* ---- waiting ------------------------------------------------------------------------------
 * A binding that waits:
 *     lrk_wait w = lrk_wait_begin(L);   // raises if L is not a riklet task coroutine
 *     ...arm a loop watcher that keeps w...
 *     return lua_yield(L, 0);
 * When the event comes (in a loop callback, never from inside Lua):
 *     lua_State *co = lrk_wake_begin(w);    // NULL: stale (task already resumed/ended): just return
 *     if (co) { lua_pushinteger(co, 42); lrk_wake_end(w, 1); }   // resumes now; results = 42
 * Tokens are plain values (slot + unique sequence); a stale token is harmless. */
typedef struct lrk_wait {
	uint32_t slot;
	uint64_t seq;
} lrk_wait;
lrk_wait lrk_wait_begin(lua_State *L);
lua_State *lrk_wake_begin(lrk_wait w);
void lrk_wake_end(lrk_wait w, int nresults);
/* Is L a riklet task coroutine (so it may wait)? */
int lrk_in_task(lua_State *L);

/* Start fn (at stack top, with nargs args above it) as a new task coroutine; runs it now until it
 * first waits. An error in a task is logged with its traceback and never stops the agent. */
void lrk_spawn(lua_State *L, int nargs);

/* ---- blocking work off the loop -----------------------------------------------------------
 * For a call that would block the loop thread on a disk (fsync, a recursive removal):
 *     return lrk_offload(L, path, work, push, release, job);
 * In a task, work(job) runs on the worker pool and the task yields; back on the loop thread,
 * push(co, job) pushes the results (returns their count), release(job) frees it and the task
 * resumes with them. Outside a task (a plain coroutine, a callback on the main state) everything
 * runs right here and the results are returned. Jobs with the same key (NULL: none) run one after
 * another in call order. work must not touch Lua or the loop. */
typedef int (*lrk_push_fn)(lua_State *L, void *ud);
int lrk_offload(lua_State *L, const char *key, void (*work)(void *ud), lrk_push_fn push, void (*release)(void *ud),
		void *ud);
/* Is work for this key queued or running on the pool? */
int lrk_offload_busy(const char *key);
struct rk_pool *lrk_pool(void);
/* Non-zero once lrk_shutdown has begun (safe to read from a worker thread). */
int lrk_stopping(void);

/* Push the loop's and the pool's statistics as a table (core.loop_stats()). */
void lrk_loop_stats(lua_State *L);

/* Called once after lua_close, before rk_loop_free: finishes the pool's work and frees what
 * bindings still hold in loop callbacks (hooks run in reverse order of registration). */
void lrk_at_shutdown(void (*fn)(void));
void lrk_shutdown(void);

/* A non-blocking fd (socket, a pipe's read end) as a riklet.usock sock (lusock.c): pushes it (1)
 * or nil, err (2; fd closed). */
int lrk_usock_push(lua_State *L, int fd);

/* Expected failures: push nil, message; return 2. */
int lrk_fail(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int lrk_fail_err(lua_State *L, const rk_err *e);

/* Protected call of the function below nargs args, with a traceback; logs and returns non-zero on
 * error (the error message is left on the stack). */
int lrk_pcall(lua_State *L, int nargs, int nresults, const char *what);

/* argv from a Lua array of strings at idx: NULL-terminated, malloc'ed (free with lrk_free_argv).
 * Raises on a non-string element or one holding a NUL byte (nothing left allocated). */
char **lrk_check_argv(lua_State *L, int idx);
/* The same without raising: NULL with the reason (naming the array `what`) in why, for callers
 * that hold memory of their own. */
char **lrk_to_argv(lua_State *L, int idx, const char *what, char *why, size_t whylen);
void lrk_free_argv(char **argv);

#endif
