/* lproc.c — `riklet.proc`: spawn processes and wait for them without blocking the loop.
 *
 *   proc.spawn(argv, opts) -> process | nil, err
 *       opts: env (array of "K=V"; nil inherits), cwd, stdout, stderr (file paths, appended;
 *       nil = /dev/null), stderr_to_stdout (bool), new_session (bool)
 *     process.pid; process:wait() -> code, signal (yields; code nil when killed by a signal)
 *     process:kill([signo=15]) -> true | nil, err; process:exited() -> boolean
 *   proc.run(argv, opts) -> {code=, signal=, stdout=, stderr=, timed_out=} | nil, err
 *       opts as spawn (stdout/stderr are captured, 1 MiB each at most) plus timeout (seconds;
 *       the process is killed with SIGKILL when it runs out) and input (string written to stdin).
 *   proc.describe(code, signal) -> "exited with code 3" | "killed by signal 9 (Killed)" */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "lrk.h"
#include "proc.h"

#define PROC_MT "riklet.proc.process"
#define CAPTURE_MAX (1u << 20)

struct lproc {
	pid_t pid;
	int exited, status;
	int orphaned; /* the Lua handle is gone: free on exit */
	int waiting;
	lrk_wait w;
};

static void fill_opts(lua_State *L, int idx, struct rk_proc_opts *o, char ***env)
{
	*env = NULL;
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_getfield(L, idx, "env");
	if (!lua_isnil(L, -1))
		*env = lrk_check_argv(L, lua_gettop(L));
	lua_pop(L, 1);
	o->env = *env;
	lua_getfield(L, idx, "cwd");
	o->cwd = lua_tostring(L, -1);
	lua_getfield(L, idx, "stdout");
	o->stdout_path = lua_tostring(L, -1);
	lua_getfield(L, idx, "stderr");
	o->stderr_path = lua_tostring(L, -1);
	lua_pop(L, 3); /* strings stay alive: they are referenced by the opts table */
	lua_getfield(L, idx, "stderr_to_stdout");
	o->stderr_to_stdout = lua_toboolean(L, -1);
	lua_getfield(L, idx, "new_session");
	o->new_session = lua_toboolean(L, -1);
	lua_pop(L, 2);
}

static void push_status(lua_State *L, int st)
{
	if (st >= 0 && WIFEXITED(st)) {
		lua_pushinteger(L, WEXITSTATUS(st));
		lua_pushnil(L);
	} else if (st >= 0 && WIFSIGNALED(st)) {
		lua_pushnil(L);
		lua_pushinteger(L, WTERMSIG(st));
	} else {
		lua_pushnil(L);
		lua_pushnil(L);
	}
}

static void on_exit_cb(void *ud, pid_t pid, int st)
{
	struct lproc *p = ud;
	p->exited = 1;
	p->status = st;
	if (p->orphaned) {
		free(p);
		return;
	}
	if (p->waiting) {
		p->waiting = 0;
		lua_State *co = lrk_wake_begin(p->w);
		if (co) {
			push_status(co, st);
			lrk_wake_end(p->w, 2);
		}
	}
}

static struct lproc *check_proc(lua_State *L)
{
	struct lproc **pp = luaL_checkudata(L, 1, PROC_MT);
	if (!*pp)
		luaL_error(L, "process handle is closed");
	return *pp;
}

static int l_spawn(lua_State *L)
{
	char **argv = lrk_check_argv(L, 1);
	struct rk_proc_opts o = RK_PROC_OPTS_INIT;
	char **env;
	fill_opts(L, 2, &o, &env);
	rk_err e = {0};
	pid_t pid = rk_proc_spawn(argv, &o, &e);
	lrk_free_argv(argv);
	lrk_free_argv(env);
	if (pid < 0)
		return lrk_fail_err(L, &e);
	struct lproc *p = calloc(1, sizeof *p);
	struct lproc **pp = lua_newuserdata(L, sizeof *pp);
	*pp = p;
	luaL_getmetatable(L, PROC_MT);
	lua_setmetatable(L, -2);
	if (!p)
		return luaL_error(L, "out of memory");
	p->pid = pid;
	if (rk_loop_watch_child(lrk_loop(L), pid, on_exit_cb, p, &e) < 0)
		return lrk_fail_err(L, &e);
	return 1;
}

/* process:wait() -> code, signal */
static int l_wait(lua_State *L)
{
	struct lproc *p = check_proc(L);
	if (p->exited) {
		push_status(L, p->status);
		return 2;
	}
	if (p->waiting)
		return luaL_error(L, "another task is already waiting for process %d", (int)p->pid);
	p->w = lrk_wait_begin(L);
	p->waiting = 1;
	return lua_yield(L, 0);
}

/* process:kill([signo]) -> true | nil, err */
static int l_kill(lua_State *L)
{
	struct lproc *p = check_proc(L);
	int sig = (int)luaL_optinteger(L, 2, SIGTERM);
	if (p->exited) {
		lua_pushboolean(L, 1);
		return 1;
	}
	if (kill(p->pid, sig) < 0 && errno != ESRCH)
		return lrk_fail(L, "cannot signal process %d: %s", (int)p->pid, strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

static int l_exited(lua_State *L)
{
	lua_pushboolean(L, check_proc(L)->exited);
	return 1;
}

static int l_proc_gc(lua_State *L)
{
	struct lproc **pp = luaL_checkudata(L, 1, PROC_MT);
	if (*pp) {
		if ((*pp)->exited)
			free(*pp);
		else
			(*pp)->orphaned = 1;
		*pp = NULL;
	}
	return 0;
}

/* process.pid */
static int l_proc_fields(lua_State *L)
{
	struct lproc *p = check_proc(L);
	if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "pid")) {
		lua_pushinteger(L, p->pid);
		return 1;
	}
	return 0;
}

/* ---- proc.run: capture output, optional input and timeout ---- */
struct run {
	pid_t pid;
	int exited, status, timed_out, done, orphaned;
	int fd_out, fd_err, fd_in;
	rk_watch *w_out, *w_err, *w_in;
	rk_timer *timer;
	char *buf[2];
	size_t len[2];
	char *input;
	size_t in_len, in_off;
	lrk_wait w;
};

static void run_free(struct run *r)
{
	free(r->buf[0]);
	free(r->buf[1]);
	free(r->input);
	free(r);
}

static void run_maybe_done(struct run *r)
{
	if (r->done || !r->exited || r->fd_out >= 0 || r->fd_err >= 0)
		return;
	r->done = 1;
	if (r->timer)
		rk_timer_cancel(r->timer);
	r->timer = NULL;
	if (r->fd_in >= 0) {
		rk_watch_cancel(r->w_in);
		close(r->fd_in);
		r->fd_in = -1;
	}
	lua_State *co = lrk_wake_begin(r->w);
	if (!co) {
		run_free(r);
		return;
	}
	lua_createtable(co, 0, 5);
	push_status(co, r->status);
	lua_setfield(co, -3, "signal");
	lua_setfield(co, -2, "code");
	lua_pushlstring(co, r->buf[0] ? r->buf[0] : "", r->len[0]);
	lua_setfield(co, -2, "stdout");
	lua_pushlstring(co, r->buf[1] ? r->buf[1] : "", r->len[1]);
	lua_setfield(co, -2, "stderr");
	lua_pushboolean(co, r->timed_out);
	lua_setfield(co, -2, "timed_out");
	lrk_wait w = r->w;
	run_free(r);
	lrk_wake_end(w, 1);
}

static void run_read(struct run *r, int which)
{
	int *fd = which ? &r->fd_err : &r->fd_out;
	rk_watch **w = which ? &r->w_err : &r->w_out;
	char tmp[16384];
	for (;;) {
		ssize_t n = read(*fd, tmp, sizeof tmp);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0)
			break;
		size_t room = CAPTURE_MAX - r->len[which];
		size_t take = (size_t)n < room ? (size_t)n : room;
		if (take) {
			char *nb = realloc(r->buf[which], r->len[which] + take);
			if (nb) {
				memcpy(nb + r->len[which], tmp, take);
				r->buf[which] = nb;
				r->len[which] += take;
			}
		}
	}
	rk_watch_cancel(*w);
	close(*fd);
	*fd = -1;
	run_maybe_done(r);
}

static void run_out_cb(void *ud, int fd, uint32_t ev)
{
	run_read(ud, 0);
}
static void run_err_cb(void *ud, int fd, uint32_t ev)
{
	run_read(ud, 1);
}

static void run_in_cb(void *ud, int fd, uint32_t ev)
{
	struct run *r = ud;
	while (r->in_off < r->in_len) {
		ssize_t n = write(fd, r->input + r->in_off, r->in_len - r->in_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0)
			break;
		r->in_off += (size_t)n;
	}
	rk_watch_cancel(r->w_in);
	close(r->fd_in);
	r->fd_in = -1;
}

static void run_exit_cb(void *ud, pid_t pid, int st)
{
	struct run *r = ud;
	r->exited = 1;
	r->status = st;
	run_maybe_done(r);
}

static void run_timeout_cb(void *ud)
{
	struct run *r = ud;
	r->timer = NULL;
	r->timed_out = 1;
	kill(r->pid, SIGKILL);
}

static int l_run(lua_State *L)
{
	char **argv = lrk_check_argv(L, 1);
	struct rk_proc_opts o = RK_PROC_OPTS_INIT;
	char **env;
	fill_opts(L, 2, &o, &env);
	double timeout = 0;
	size_t in_len = 0;
	const char *input = NULL;
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "timeout");
		timeout = lua_tonumber(L, -1);
		lua_getfield(L, 2, "input");
		input = lua_tolstring(L, -1, &in_len);
		lua_pop(L, 2);
	}
	lrk_wait w = lrk_wait_begin(L); /* raises outside a task, before anything is spawned */
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
	rk_err e = {0};
	if (pipe2(po, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(pe, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    (input && pipe2(pi, O_CLOEXEC | O_NONBLOCK) < 0)) {
		int err = errno;
		for (int i = 0; i < 2; i++) {
			if (po[i] >= 0)
				close(po[i]);
			if (pe[i] >= 0)
				close(pe[i]);
			if (pi[i] >= 0)
				close(pi[i]);
		}
		lrk_free_argv(argv);
		lrk_free_argv(env);
		return lrk_fail(L, "cannot create pipes for %s: %s", lua_tostring(L, -1), strerror(err));
	}
	/* The child's ends must be blocking. */
	fcntl(po[1], F_SETFL, 0);
	fcntl(pe[1], F_SETFL, 0);
	if (input)
		fcntl(pi[0], F_SETFL, 0);
	o.stdout_fd = po[1];
	o.stderr_fd = o.stderr_to_stdout ? po[1] : pe[1];
	o.stdin_fd = input ? pi[0] : -1;
	pid_t pid = rk_proc_spawn(argv, &o, &e);
	lrk_free_argv(argv);
	lrk_free_argv(env);
	close(po[1]);
	close(pe[1]);
	if (input)
		close(pi[0]);
	if (pid < 0) {
		close(po[0]);
		close(pe[0]);
		if (input)
			close(pi[1]);
		return lrk_fail_err(L, &e);
	}
	struct run *r = calloc(1, sizeof *r);
	if (!r)
		return luaL_error(L, "out of memory");
	r->pid = pid;
	r->fd_out = po[0];
	r->fd_err = pe[0];
	r->fd_in = input ? pi[1] : -1;
	r->w = w;
	rk_loop *loop = lrk_loop(L);
	r->w_out = rk_loop_watch_fd(loop, r->fd_out, EPOLLIN, run_out_cb, r, &e);
	r->w_err = rk_loop_watch_fd(loop, r->fd_err, EPOLLIN, run_err_cb, r, &e);
	if (input) {
		r->input = malloc(in_len ? in_len : 1);
		memcpy(r->input, input, in_len);
		r->in_len = in_len;
		r->w_in = rk_loop_watch_fd(loop, r->fd_in, EPOLLOUT, run_in_cb, r, &e);
	}
	if (timeout > 0)
		r->timer = rk_loop_timer(loop, (uint64_t)(timeout * 1000), run_timeout_cb, r);
	if (rk_loop_watch_child(loop, pid, run_exit_cb, r, &e) < 0)
		rk_warn("proc", "cannot watch %d: %s", (int)pid, e.msg);
	return lua_yield(L, 0);
}

/* proc.describe(code, signal) -> string */
static int l_describe(lua_State *L)
{
	char buf[256];
	if (lua_isnumber(L, 1))
		rk_proc_describe(W_EXITCODE((int)lua_tointeger(L, 1), 0), buf, sizeof buf);
	else if (lua_isnumber(L, 2))
		rk_proc_describe(W_EXITCODE(0, (int)lua_tointeger(L, 2)), buf, sizeof buf);
	else
		rk_proc_describe(-1, buf, sizeof buf);
	lua_pushstring(L, buf);
	return 1;
}

/* proc.kill(pid, signo) -> true | nil, err  (for processes riklet did not spawn this run) */
static int l_kill_pid(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	if (pid <= 0)
		return luaL_argerror(L, 1, "pid must be positive");
	if (kill(pid, (int)luaL_optinteger(L, 2, SIGTERM)) < 0)
		return lrk_fail(L, "cannot signal process %d: %s", (int)pid, strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

/* proc.alive(pid) -> boolean */
static int l_alive(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	lua_pushboolean(L, pid > 0 && (kill(pid, 0) == 0 || errno == EPERM));
	return 1;
}

/* proc.watch(pid) -> code, signal — waits for any process (ours or re-adopted) to exit.
 * For a process that is not riklet's child both are nil (the exit code cannot be known). */
static void watch_cb(void *ud, pid_t pid, int st)
{
	lrk_wait *w = ud;
	lua_State *co = lrk_wake_begin(*w);
	if (co) {
		push_status(co, st);
		lrk_wake_end(*w, 2);
	}
	free(w);
}

static int l_watch(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	lrk_wait *w = malloc(sizeof *w);
	if (!w)
		return luaL_error(L, "out of memory");
	*w = lrk_wait_begin(L);
	rk_err e = {0};
	if (rk_loop_watch_child(lrk_loop(L), pid, watch_cb, w, &e) < 0) {
		free(w);
		return lrk_fail_err(L, &e);
	}
	return lua_yield(L, 0);
}

/* proc.unwatch(pid) — stop a proc.watch (the waiting task is not resumed by it any more). */
static int l_unwatch(lua_State *L)
{
	rk_loop_unwatch_child(lrk_loop(L), (pid_t)luaL_checkinteger(L, 1));
	return 0;
}

static int open_proc(lua_State *L)
{
	static const luaL_Reg methods[] = {{"wait", l_wait}, {"kill", l_kill}, {"exited", l_exited}, {NULL, NULL}};
	lrk_newclass_fields(L, PROC_MT, methods, l_proc_fields, l_proc_gc);
	static const luaL_Reg fns[] = {{"spawn", l_spawn},     {"run", l_run},	   {"describe", l_describe},
				       {"kill", l_kill_pid},   {"alive", l_alive}, {"watch", l_watch},
				       {"unwatch", l_unwatch}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.proc", open_proc)
