/* lrk.c — the bindings framework: module registry, task coroutines, and wait/wake by yielding.
 *
 * Every task is a Lua coroutine held in a slot. A binding that waits takes a token (slot + a
 * globally unique sequence number) and yields; whoever completes the wait presents the token,
 * and a stale token (the task was already woken, e.g. by its timeout, or it ended) does nothing.
 * So a timer and an I/O completion can race for the same wait without use-after-free. */
#include "lrk.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"

#include <stdatomic.h>

static struct lrk_module *modules;
void lrk_module_add(struct lrk_module *m)
{
	m->next = modules;
	modules = m;
}

struct timed_wake;
struct keychain;

struct lrk_task {
	lua_State *co;
	int ref;      /* registry ref keeping the coroutine alive */
	uint64_t seq; /* the wait in progress (0: not waiting) */
	int in_use;
	uint32_t next_free;
	struct timed_wake *tw; /* the timeout armed for the wait in progress, cancelled when it ends */
	int first;	       /* its resumes go ahead of the paced ones (task_core.set_first) */
	char where[72];	       /* where the task's function is defined, to name a slow loop turn */
};

#define SHUTDOWN_HOOKS_MAX 16
static struct {
	lua_State *L; /* main state */
	rk_loop *loop;
	struct lrk_task *tasks;
	uint32_t ntasks, cap, free_head; /* free list through next_free; UINT32_MAX = empty */
	uint64_t seq;
	rk_pool *pool;
	struct keychain *chains; /* keys with offloaded work in flight */
	void (*hooks[SHUTDOWN_HOOKS_MAX])(void);
	int nhooks;
} G = {.free_head = UINT32_MAX};

static void drop_timer(struct lrk_task *t);

static const char TASKMAP_KEY = 0; /* registry[&TASKMAP_KEY] = { [thread] = slot } */

rk_loop *lrk_loop(lua_State *L)
{
	return G.loop;
}
lua_State *lrk_main(void)
{
	return G.L;
}

void lrk_setfuncs(lua_State *L, const luaL_Reg *fns)
{
	for (; fns && fns->name; fns++) {
		lua_pushcfunction(L, fns->func);
		lua_setfield(L, -2, fns->name);
	}
}

int *lrk_push_fd(lua_State *L, int fd, const char *tname)
{
	int *u = lua_newuserdata(L, sizeof *u);
	*u = fd;
	luaL_getmetatable(L, tname);
	lua_setmetatable(L, -2);
	return u;
}

int lrk_close_fd(lua_State *L, const char *tname)
{
	int *u = luaL_checkudata(L, 1, tname);
	if (*u >= 0)
		close(*u);
	*u = -1;
	return 0;
}

void lrk_newclass(lua_State *L, const char *tname, const luaL_Reg *methods, lua_CFunction gc)
{
	luaL_newmetatable(L, tname);
	lua_newtable(L);
	lrk_setfuncs(L, methods);
	lua_setfield(L, -2, "__index");
	if (gc) {
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pushstring(L, tname);
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
}

/* __index of lrk_newclass_fields: upvalue 1 = methods, upvalue 2 = getter */
static int fields_index(lua_State *L)
{
	lua_CFunction getter = lua_tocfunction(L, lua_upvalueindex(2));
	int n = getter(L);
	if (n)
		return n;
	lua_settop(L, 2);
	lua_gettable(L, lua_upvalueindex(1));
	return 1;
}

void lrk_newclass_fields(lua_State *L, const char *tname, const luaL_Reg *methods, lua_CFunction getter,
			 lua_CFunction gc)
{
	luaL_newmetatable(L, tname);
	lua_newtable(L);
	lrk_setfuncs(L, methods);
	lua_pushcfunction(L, getter);
	lua_pushcclosure(L, fields_index, 2);
	lua_setfield(L, -2, "__index");
	if (gc) {
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pushstring(L, tname);
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);
}

int lrk_fail(lua_State *L, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	lua_pushnil(L);
	lua_pushstring(L, buf);
	return 2;
}

int lrk_fail_err(lua_State *L, const rk_err *e)
{
	lua_pushnil(L);
	lua_pushstring(L, e->msg[0] ? e->msg : "unknown error");
	return 2;
}

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
	return 1;
}

int lrk_pcall(lua_State *L, int nargs, int nresults, const char *what)
{
	int base = lua_gettop(L) - nargs;
	lua_pushcfunction(L, traceback);
	lua_insert(L, base);
	int rc = lua_pcall(L, nargs, nresults, base);
	lua_remove(L, base);
	if (rc)
		rk_error("lua", "%s failed: %s", what ? what : "Lua callback", lua_tostring(L, -1));
	return rc;
}

char **lrk_to_argv(lua_State *L, int idx, const char *what, char *why, size_t whylen)
{
	if (lua_type(L, idx) != LUA_TTABLE) {
		snprintf(why, whylen, "%s must be a table, not a %s", what, luaL_typename(L, idx));
		return NULL;
	}
	size_t n = lua_objlen(L, idx);
	if (n == 0) {
		snprintf(why, whylen, "%s must not be empty", what);
		return NULL;
	}
	char **argv = calloc(n + 1, sizeof *argv);
	if (!argv) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, idx, (int)i + 1);
		size_t len;
		const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
		if (!s || memchr(s, 0, len) || !(argv[i] = strdup(s))) {
			if (!s)
				snprintf(why, whylen, "%s[%d] is not a string", what, (int)i + 1);
			else if (memchr(s, 0, len)) /* exec would silently cut it there */
				snprintf(why, whylen, "%s[%d] holds a NUL byte", what, (int)i + 1);
			else
				snprintf(why, whylen, "out of memory");
			lua_pop(L, 1);
			lrk_free_argv(argv);
			return NULL;
		}
		lua_pop(L, 1);
	}
	return argv;
}

char **lrk_check_argv(lua_State *L, int idx)
{
	char why[64];
	char **argv = lrk_to_argv(L, idx, "argv", why, sizeof why);
	if (!argv)
		luaL_error(L, "%s", why); /* nothing is allocated any more */
	return argv;
}

void lrk_free_argv(char **argv)
{
	if (!argv)
		return;
	for (char **p = argv; *p; p++)
		free(*p);
	free(argv);
}

/* ---- tasks ---- */
static int slot_of(lua_State *L, lua_State *co)
{
	lua_pushlightuserdata(L, (void *)&TASKMAP_KEY);
	lua_rawget(L, LUA_REGISTRYINDEX);
	lua_pushlightuserdata(L, co);
	lua_rawget(L, -2);
	int slot = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : -1;
	lua_pop(L, 2);
	return slot;
}

static void taskmap_set(lua_State *co, int slot)
{
	lua_State *L = G.L;
	lua_pushlightuserdata(L, (void *)&TASKMAP_KEY);
	lua_rawget(L, LUA_REGISTRYINDEX);
	lua_pushlightuserdata(L, co);
	if (slot >= 0)
		lua_pushinteger(L, slot);
	else
		lua_pushnil(L);
	lua_rawset(L, -3);
	lua_pop(L, 1);
}

int lrk_in_task(lua_State *L)
{
	return slot_of(L, L) >= 0;
}

static void release(uint32_t slot)
{
	struct lrk_task *t = &G.tasks[slot];
	drop_timer(t);
	taskmap_set(t->co, -1);
	luaL_unref(G.L, LUA_REGISTRYINDEX, t->ref);
	t->co = NULL;
	t->in_use = 0;
	t->seq = 0;
	t->next_free = G.free_head;
	G.free_head = slot;
}

static void resume_task(uint32_t slot, int nargs);
static void wake_end_now(lrk_wait w, int nresults);

/* A task that yields by itself (plain coroutine.yield) is resumed on the next loop round. */
struct requeue {
	uint32_t slot;
	uint64_t seq;
};

static void requeue_cb(void *ud)
{
	struct requeue *r = ud;
	lrk_wait w = {r->slot, r->seq};
	free(r);
	if (lrk_wake_begin(w))
		wake_end_now(w, 0); /* its turn in the deferred queue has come: now */
}

/* Tell the loop which task kept it busy, for the slow-turn warning (only for resumes that took a
 * while: finding the line costs a little). */
static void blame(uint32_t slot, lua_State *co, uint64_t us, int yielded)
{
	char at[96] = "";
	lua_Debug ar;
	for (int lvl = 0; yielded && lua_getstack(co, lvl, &ar); lvl++) {
		if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0) {
			snprintf(at, sizeof at, ", now waiting at %s:%d", ar.short_src, ar.currentline);
			break;
		}
	}
	rk_loop_blame(G.loop, us, "the Lua task of %s%s", G.tasks[slot].where, yielded ? at : " (it ended)");
}

static void resume_task(uint32_t slot, int nargs)
{
	struct lrk_task *t = &G.tasks[slot];
	lua_State *co = t->co;
	uint64_t t0 = rk_now_us();
	int rc = lua_resume(co, nargs);
	uint64_t took = rk_now_us() - t0;
	if (took >= 1000)
		blame(slot, co, took, rc == LUA_YIELD);
	if (rc == LUA_YIELD) {
		t = &G.tasks[slot]; /* the array may have grown */
		if (t->seq == 0) {
			lua_settop(co, 0);
			struct requeue *r = malloc(sizeof *r);
			t->seq = ++G.seq;
			if (r) {
				*r = (struct requeue){slot, t->seq};
				rk_loop_defer_paced_owned(G.loop, requeue_cb, r);
			}
		}
		return;
	}
	if (rc != 0) {
		const char *msg = lua_tostring(co, -1);
		luaL_traceback(G.L, co, msg ? msg : "(error object is not a string)", 0);
		rk_error("lua", "task failed: %s", lua_tostring(G.L, -1));
		lua_pop(G.L, 1);
	}
	release(slot);
}

static uint32_t alloc_slot(void)
{
	if (G.free_head != UINT32_MAX) {
		uint32_t s = G.free_head;
		G.free_head = G.tasks[s].next_free;
		return s;
	}
	if (G.ntasks == G.cap) {
		uint32_t nc = G.cap ? G.cap * 2 : 64;
		struct lrk_task *nt = realloc(G.tasks, nc * sizeof *nt);
		if (!nt)
			return UINT32_MAX;
		G.tasks = nt;
		G.cap = nc;
	}
	return G.ntasks++;
}

void lrk_spawn(lua_State *L, int nargs)
{
	uint32_t slot = alloc_slot();
	if (slot == UINT32_MAX)
		luaL_error(L, "out of memory starting a task");
	struct lrk_task nt = {.in_use = 1};
	lua_Debug ar;
	lua_pushvalue(L, -1 - nargs);
	if (lua_getinfo(L, ">S", &ar))
		snprintf(nt.where, sizeof nt.where, "%s:%d", ar.short_src, ar.linedefined);
	lua_State *co = lua_newthread(L);
	int ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_xmove(L, co, nargs + 1);
	nt.co = co;
	nt.ref = ref;
	G.tasks[slot] = nt;
	taskmap_set(co, (int)slot);
	resume_task(slot, nargs);
}

lrk_wait lrk_wait_begin(lua_State *L)
{
	int slot = slot_of(L, L);
	if (slot < 0)
		luaL_error(L,
			   "this call waits, so it must run inside a riklet task (task.spawn), "
			   "not in the main chunk or a plain coroutine");
	drop_timer(&G.tasks[slot]); /* a timeout of an earlier wait can never fire usefully now */
	G.tasks[slot].seq = ++G.seq;
	return (lrk_wait){(uint32_t)slot, G.tasks[slot].seq};
}

lua_State *lrk_wake_begin(lrk_wait w)
{
	if (w.slot >= G.ntasks || !G.tasks[w.slot].in_use || G.tasks[w.slot].seq != w.seq || !w.seq)
		return NULL;
	return G.tasks[w.slot].co;
}

static void wake_end_now(lrk_wait w, int nresults)
{
	G.tasks[w.slot].seq = 0;
	drop_timer(&G.tasks[w.slot]);
	resume_task(w.slot, nresults);
}

static void deferred_resume(void *ud);
struct pending_wake {
	lrk_wait w;
	int nargs;
};

/* Past the turn's budget (a burst of completions: 1,000 record writes done, 1,000 exits), the
 * resume waits for the next turn in the loop's deferred queue, in the order the waits ended; the
 * wait is claimed now (a timeout or a second waker finds it stale) and the values stay on the
 * task's stack. */
void lrk_wake_end(lrk_wait w, int nresults)
{
	struct pending_wake *p;
	if (rk_loop_over_budget(G.loop) && (p = malloc(sizeof *p))) {
		G.tasks[w.slot].seq = 0;
		drop_timer(&G.tasks[w.slot]);
		*p = (struct pending_wake){w, nresults};
		if (G.tasks[w.slot].first)
			rk_loop_defer_owned(G.loop, deferred_resume, p);
		else
			rk_loop_defer_paced_owned(G.loop, deferred_resume, p);
		return;
	}
	wake_end_now(w, nresults);
}

/* ---- riklet.task core: the primitives lua/riklet/task.lua builds on ----
 * Lua tokens are numbers: seq * 65536 + slot (exact for 2^37 waits and 65536 live tasks). */
static lrk_wait tok_check(lua_State *L, int idx)
{
	double d = luaL_checknumber(L, idx);
	uint64_t v = (uint64_t)d;
	return (lrk_wait){(uint32_t)(v & 0xffff), v >> 16};
}

/* task_core.spawn(fn, ...) -> nothing. Runs fn as a new task now, until it first waits. */
static int l_spawn(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	lrk_spawn(L, lua_gettop(L) - 1);
	return 0;
}

/* task_core.prepare() -> token. The running task will wait (see suspend); any earlier token of it
 * becomes stale. */
static int l_prepare(lua_State *L)
{
	lrk_wait w = lrk_wait_begin(L);
	if (w.slot > 0xffff)
		return luaL_error(L, "too many live tasks (more than 65536)");
	lua_pushnumber(L, (double)(w.seq * 65536 + w.slot));
	return 1;
}

/* task_core.suspend(token) -> values given to wake. Yields the running task. */
static int l_suspend(lua_State *L)
{
	lrk_wait w = tok_check(L, 1);
	if (!lrk_wake_begin(w) || G.tasks[w.slot].co != L)
		return luaL_error(L, "suspend: the token is not this task's current wait");
	lua_settop(L, 0);
	return lua_yield(L, 0);
}

static void deferred_resume(void *ud)
{
	struct pending_wake *p = ud;
	lrk_wait w = p->w;
	int n = p->nargs;
	free(p);
	if (w.slot < G.ntasks && G.tasks[w.slot].in_use)
		resume_task(w.slot, n);
}

/* Claim the wait now (so no other waker can take it) and resume on the next loop round (first:
 * ahead of the paced task resumes, see l_wake_first). */
static int wake_now(lua_State *L, lrk_wait w, int first, int nargs, int ahead)
{
	lua_State *co = lrk_wake_begin(w);
	if (!co)
		return 0;
	struct pending_wake *p = malloc(sizeof *p);
	if (!p)
		return luaL_error(L, "out of memory");
	G.tasks[w.slot].seq = 0;
	drop_timer(&G.tasks[w.slot]);
	for (int i = 0; i < nargs; i++)
		lua_pushvalue(L, first + i);
	lua_xmove(L, co, nargs);
	*p = (struct pending_wake){w, nargs};
	if (ahead || G.tasks[w.slot].first)
		rk_loop_defer_owned(G.loop, deferred_resume, p);
	else
		rk_loop_defer_paced_owned(G.loop, deferred_resume, p);
	return 1;
}

/* task_core.wake(token, ...) -> true if that wait was still pending (it will resume with ...). */
static int l_wake(lua_State *L)
{
	lrk_wait w = tok_check(L, 1);
	lua_pushboolean(L, wake_now(L, w, 2, lua_gettop(L) - 1, 0));
	return 1;
}

/* task_core.wake_first(token, ...) -> the same, but the task resumes in the next turn ahead of the
 * task resumes the turn's budget paces (for a semaphore's slot handed over: a slot of an external
 * resource, e.g. a runc process, is not left idle while 1,000 ready tasks go first). */
static int l_wake_first(lua_State *L)
{
	lrk_wait w = tok_check(L, 1);
	lua_pushboolean(L, wake_now(L, w, 2, lua_gettop(L) - 1, 1));
	return 1;
}

/* The timeout of a wait. It belongs to the task's current wait: when that wait ends in any way
 * (woken, new wait, task ended) the timer is cancelled and its values released at once, so a
 * million satisfied q:get(3600) leave nothing behind for an hour. */
struct timed_wake {
	lrk_wait w;
	int ref; /* table of values */
	rk_timer *timer;
};

static void drop_timer(struct lrk_task *t)
{
	struct timed_wake *tw = t->tw;
	if (!tw)
		return;
	t->tw = NULL;
	rk_timer_cancel(tw->timer);
	luaL_unref(G.L, LUA_REGISTRYINDEX, tw->ref);
	free(tw);
}

static void timed_cb(void *ud)
{
	struct timed_wake *t = ud;
	if (t->w.slot < G.ntasks && G.tasks[t->w.slot].tw == t)
		G.tasks[t->w.slot].tw = NULL; /* firing: it frees itself below */
	lua_State *L = G.L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
	int tbl = lua_gettop(L);
	int n = (int)lua_objlen(L, tbl);
	for (int i = 1; i <= n; i++)
		lua_rawgeti(L, tbl, i);
	wake_now(L, t->w, tbl + 1, n, 0);
	lua_settop(L, tbl - 1);
	luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
	free(t);
}

/* task_core.wake_after(token, ms, ...) -> nothing. Wakes with ... after ms unless woken before; the
 * timer is cancelled as soon as that wait ends otherwise. A stale token arms nothing. */
static int l_wake_after(lua_State *L)
{
	lrk_wait w = tok_check(L, 1);
	double ms = luaL_checknumber(L, 2);
	int n = lua_gettop(L) - 2;
	if (!lrk_wake_begin(w))
		return 0;
	drop_timer(&G.tasks[w.slot]);
	lua_createtable(L, n, 0);
	for (int i = 1; i <= n; i++) {
		lua_pushvalue(L, 2 + i);
		lua_rawseti(L, -2, i);
	}
	struct timed_wake *t = malloc(sizeof *t);
	if (!t)
		return luaL_error(L, "out of memory");
	t->w = w;
	t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	t->timer = rk_loop_timer(G.loop, ms < 0 ? 0 : (uint64_t)ms, timed_cb, t);
	if (!t->timer) {
		luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
		free(t);
		return luaL_error(L, "out of memory arming a timer");
	}
	G.tasks[w.slot].tw = t;
	return 0;
}

/* task_core.turn_ms() -> milliseconds the current loop turn has run; task_core.over_budget() ->
 * true once it has used its budget (RK_LOOP_BUDGET_MS): a long loop in Lua yields then. */
static int l_turn_ms(lua_State *L)
{
	lua_pushnumber(L, (double)rk_loop_turn_us(G.loop) / 1000.0);
	return 1;
}

static int l_over_budget(lua_State *L)
{
	lua_pushboolean(L, rk_loop_over_budget(G.loop));
	return 1;
}

/* task_core.set_budget(ms) -> the previous one: a loop turn's budget for paced work (0: none), as
 * RIKLET_LOOP_BUDGET_MS sets it at start (for tests). */
static int l_set_budget(lua_State *L)
{
	lua_Number ms = luaL_checknumber(L, 1);
	luaL_argcheck(L, ms >= 0 && ms <= 1000, 1, "give milliseconds from 0 (no budget) to 1000");
	lua_pushnumber(L, (lua_Number)rk_loop_set_budget(G.loop, (uint64_t)ms));
	return 1;
}

/* task_core.set_first(on) -> what it was. While on, the running task's resumes (a wake, an fd or
 * exit or pool completion, a timeout) go ahead of the paced task resumes: a task holding a slot of
 * an external resource (a runc slot) that must not sit idle behind 1,000 ready tasks. Raises
 * outside a task. */
static int l_set_first(lua_State *L)
{
	int slot = slot_of(L, L);
	if (slot < 0)
		return luaL_error(L, "set_first must be called inside a riklet task");
	lua_pushboolean(L, G.tasks[slot].first);
	G.tasks[slot].first = lua_toboolean(L, 1);
	return 1;
}

/* task_core.in_task() -> boolean */
static int l_in_task(lua_State *L)
{
	lua_pushboolean(L, lrk_in_task(L));
	return 1;
}

static int open_task_core(lua_State *L)
{
	static const luaL_Reg fns[] = {{"spawn", l_spawn},	     {"prepare", l_prepare},
				       {"suspend", l_suspend},	     {"wake", l_wake},
				       {"wake_after", l_wake_after}, {"in_task", l_in_task},
				       {"wake_first", l_wake_first}, {"set_first", l_set_first},
				       {"turn_ms", l_turn_ms},	     {"over_budget", l_over_budget},
				       {"set_budget", l_set_budget}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.task_core", open_task_core)

/* ---- blocking work off the loop (see lrk_offload in lrk.h) ---- */
struct offload {
	struct rk_pool_job job;
	lrk_wait w;
	rk_work_fn work;
	lrk_push_fn push;
	void (*release)(void *ud);
	void *ud;
	struct keychain *chain;
	struct offload *next; /* the next job of the same key */
};

/* Jobs of one key run one after another, in the order they were asked for: two writes of the same
 * record never race, and the later one always lands last. */
struct keychain {
	char *key;
	struct offload *head, *tail; /* head is on the pool; the others wait for it */
	struct keychain *next;
};

/* set once riklet stops: read by worker threads (a spawn still queued then is not started) */
static atomic_int stopping;

int lrk_stopping(void)
{
	return atomic_load(&stopping);
}

rk_pool *lrk_pool(void)
{
	static int failed; /* tried once: without a pool, work runs inline (no retry per call) */
	if (!G.pool && !failed) {
		rk_err e = {0};
		G.pool = rk_pool_new(G.loop, 0, &e);
		if (!G.pool) {
			failed = 1;
			rk_warn("lrk", "no worker pool (%s): blocking file work runs on the loop thread", e.msg);
		}
	}
	return G.pool;
}

static void offload_done(void *ud, int cancelled);

static void offload_work(void *ud)
{
	struct offload *o = ud;
	o->work(o->ud);
}

static void offload_submit(struct offload *o)
{
	o->job = (struct rk_pool_job){.work = offload_work, .done = offload_done, .ud = o};
	rk_pool_submit(G.pool, &o->job);
}

static void offload_free(struct offload *o)
{
	if (o->release)
		o->release(o->ud);
	free(o);
}

static void offload_done(void *ud, int cancelled)
{
	struct offload *o = ud;
	struct keychain *c = o->chain;
	if (c) {
		c->head = o->next;
		if (!c->head)
			c->tail = NULL;
		if (c->head && !cancelled) {
			offload_submit(c->head);
		} else if (!c->head) {
			for (struct keychain **pc = &G.chains; *pc; pc = &(*pc)->next)
				if (*pc == c) {
					*pc = c->next;
					break;
				}
			free(c->key);
			free(c);
		}
	}
	lua_State *co = cancelled ? NULL : lrk_wake_begin(o->w);
	if (!co) {
		offload_free(o);
		return;
	}
	int n = o->push(co, o->ud);
	lrk_wait w = o->w;
	offload_free(o);
	lrk_wake_end(w, n);
}

int lrk_offload_busy(const char *key)
{
	for (struct keychain *c = G.chains; key && c; c = c->next)
		if (!strcmp(c->key, key))
			return 1;
	return 0;
}

int lrk_offload(lua_State *L, const char *key, rk_work_fn work, lrk_push_fn push, void (*release)(void *ud), void *ud)
{
	if (!lrk_in_task(L) || !lrk_pool()) {
		work(ud);
		int n = push(L, ud);
		if (release)
			release(ud);
		return n;
	}
	struct offload *o = calloc(1, sizeof *o);
	struct keychain *c = NULL;
	if (o && key) {
		for (c = G.chains; c && strcmp(c->key, key); c = c->next)
			;
		if (!c && (c = calloc(1, sizeof *c)) && !(c->key = strdup(key))) {
			free(c);
			c = NULL;
		}
		if (!c) {
			free(o);
			o = NULL;
		}
	}
	if (!o) {
		if (release)
			release(ud);
		return luaL_error(L, "out of memory queueing work for the worker pool");
	}
	*o = (struct offload){.work = work, .push = push, .release = release, .ud = ud, .chain = c};
	o->w = lrk_wait_begin(L);
	if (c) {
		int first = !c->head;
		if (first) {
			c->next = G.chains;
			G.chains = c;
			c->head = o;
		} else {
			c->tail->next = o;
		}
		c->tail = o;
		if (!first)
			return lua_yield(L, 0); /* submitted when the job before it is done */
	}
	offload_submit(o);
	return lua_yield(L, 0);
}

void lrk_loop_stats(lua_State *L)
{
	struct rk_loop_stats st;
	rk_loop_get_stats(G.loop, &st);
	lua_createtable(L, 0, 12);
	lua_pushnumber(L, (double)st.lag_max_us / 1000.0);
	lua_setfield(L, -2, "lag_max_ms");
	lua_pushnumber(L, (double)st.lag_recent_us / 1000.0);
	lua_setfield(L, -2, "lag_recent_ms");
	lua_pushnumber(L, (double)st.lag_last_us / 1000.0);
	lua_setfield(L, -2, "lag_last_ms");
	lua_pushnumber(L, (double)st.turns);
	lua_setfield(L, -2, "turns");
	lua_pushnumber(L, (double)st.slow_turns);
	lua_setfield(L, -2, "slow_turns");
	lua_pushstring(L, st.slowest);
	lua_setfield(L, -2, "slowest");
	lua_pushinteger(L, (lua_Integer)st.timers);
	lua_setfield(L, -2, "timers");
	lua_pushinteger(L, (lua_Integer)st.watches);
	lua_setfield(L, -2, "watches");
	lua_pushinteger(L, (lua_Integer)st.children);
	lua_setfield(L, -2, "children");
	uint32_t live = 0;
	for (uint32_t i = 0; i < G.ntasks; i++)
		live += G.tasks[i].in_use != 0;
	lua_pushinteger(L, live);
	lua_setfield(L, -2, "tasks");
	struct rk_pool_stats ps = {0};
	if (G.pool)
		rk_pool_stats(G.pool, &ps);
	lua_pushinteger(L, ps.threads);
	lua_setfield(L, -2, "pool_threads");
	lua_pushinteger(L, ps.max_threads);
	lua_setfield(L, -2, "pool_max_threads");
	lua_pushinteger(L, (lua_Integer)(ps.queued + ps.running));
	lua_setfield(L, -2, "pool_pending");
	lua_pushnumber(L, (double)ps.finished);
	lua_setfield(L, -2, "pool_done");
}

void lrk_at_shutdown(void (*fn)(void))
{
	if (G.nhooks < SHUTDOWN_HOOKS_MAX)
		G.hooks[G.nhooks++] = fn;
}

void lrk_shutdown(void)
{
	/* Work already handed to the pool is finished (a record being written is written), and so is
	 * work queued behind it for the same key, here, in order; but no process is started any more
	 * (nobody would watch it). */
	atomic_store(&stopping, 1);
	rk_pool_free(G.pool);
	G.pool = NULL;
	while (G.chains) {
		struct keychain *c = G.chains;
		G.chains = c->next;
		while (c->head) {
			struct offload *o = c->head;
			c->head = o->next;
			o->work(o->ud);
			offload_free(o);
		}
		free(c->key);
		free(c);
	}
	for (int i = G.nhooks - 1; i >= 0; i--)
		G.hooks[i]();
	G.nhooks = 0;
	for (uint32_t i = 0; i < G.ntasks; i++)
		free(G.tasks[i].tw); /* the Lua state is closed: nothing to unref; the loop frees the timers */
	free(G.tasks);
	G.tasks = NULL;
	G.ntasks = G.cap = 0;
	G.free_head = UINT32_MAX;
	G.L = NULL;
}

/* Called by main: remember the state and loop, create the task map, preload every module. */
void lrk_init(lua_State *L, rk_loop *loop);
void lrk_init(lua_State *L, rk_loop *loop)
{
	G.L = L;
	G.loop = loop;
	lua_pushlightuserdata(L, (void *)&TASKMAP_KEY);
	lua_newtable(L);
	lua_rawset(L, LUA_REGISTRYINDEX);
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "preload");
	for (struct lrk_module *m = modules; m; m = m->next) {
		lua_pushcfunction(L, m->open);
		lua_setfield(L, -2, m->name);
	}
	lua_pop(L, 2);
}
