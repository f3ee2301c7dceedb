/* lproc.c — `riklet.proc`: spawn processes and wait for them without blocking the loop.
 *
 *   proc.spawn(argv, opts) -> process | nil, err
 *       opts: env (array of "K=V"; nil inherits), cwd, stdout, stderr (file paths, appended;
 *       nil = /dev/null), stderr_to_stdout (bool), new_session (bool), new_pgroup (bool: its own
 *       process group; off by default: runc create's container must never share a group riklet
 *       may kill), sync_pipe (an environment variable NAME: the child gets the write end of a
 *       pipe as fd 3 and NAME=3 in its environment, as conmon's _OCI_SYNCPIPE wants),
 *       start_pipe (NAME: the child gets one end of a unix socket pair as fd 4 and NAME=4, as
 *       conmon's _OCI_STARTPIPE wants; riklet's end holds one unread byte, so that its close,
 *       riklet's death included, makes the child's read fail with ECONNRESET instead of returning
 *       the end of the stream: conmon 2.1.6 then exits before it starts anything)
 *     with sync_pipe: -> process, pipe   pipe is a riklet.usock sock on the read end
 *       (pipe:read() -> data | nil at the end: every holder of the write end closed it; pipe:close())
 *     with start_pipe: -> process, pipe, pipe_err, start   start is a riklet.usock sock on riklet's
 *       end (start:send("1") lets the child go on; start:close() without it: the child's read fails)
 *     process.pid; process:wait() -> code, signal (yields; code nil when killed by a signal)
 *     process:kill([signo=15]) -> true | nil, err; process:exited() -> boolean
 *   proc.run(argv, opts) -> {code=, signal=, stdout=, stderr=, timed_out=} | nil, err
 *       opts as spawn (stdout/stderr are captured, 1 MiB each at most) plus timeout (seconds)
 *       and input (string written to stdin). The command runs in its own process group (unless
 *       new_session, or own_group = false for a command that starts something meant to outlive
 *       it). When the timeout runs out the whole group is killed with SIGKILL and the pipes are
 *       closed, so the call returns at the deadline even if a grandchild that left the group still
 *       holds them (timed_out = true; code and signal nil if the command did not even die within
 *       a second of SIGKILL, e.g. stuck in the kernel).
 *   proc.watch(pid) -> code, signal | nil, nil, err (see there)
 *   proc.pidfd(pid) -> pidfd | nil, err, errname   a handle on the process that has pid now
 *       (errname "ENOSYS": no pidfds in this kernel, "ESRCH": no such process, "EMFILE"...);
 *       pidfd:signal(signo) -> true | nil, err, errname ("ESRCH": it ended, nothing was sent,
 *       whatever has its pid now included); pidfd:close() (idempotent; __gc closes it too)
 *   proc.describe(code, signal) -> "exited with code 3" | "killed by signal 9 (Killed)" */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "lrk.h"
#include "pool.h"
#include "proc.h"

#define PROC_MT "riklet.proc.process"
#define CAPTURE_MAX (1u << 20)

/* Everything this module keeps in loop callbacks, so that what is still pending at exit is freed
 * (lrk_shutdown) instead of leaking. */
struct held {
	struct held *prev, *next;
	void (*free)(void *self);
};
static struct held held_all = {&held_all, &held_all, NULL};

static void hold(struct held *h, void (*fn)(void *))
{
	h->free = fn;
	h->next = held_all.next;
	h->prev = &held_all;
	held_all.next->prev = h;
	held_all.next = h;
}

static void unhold(struct held *h)
{
	h->prev->next = h->next;
	h->next->prev = h->prev;
	h->prev = h->next = h;
}

static void free_held(void)
{
	while (held_all.next != &held_all) {
		struct held *h = held_all.next;
		unhold(h);
		h->free(h);
	}
}

struct lproc {
	struct held h; /* first: freed through it */
	pid_t pid;
	int exited, status;
	int orphaned; /* the Lua handle is gone: free on exit */
	int waiting;
	lrk_wait w;
};

static int all_strings(lua_State *L, int idx)
{
	for (size_t i = 1, n = lua_objlen(L, idx); i <= n; i++) {
		lua_rawgeti(L, idx, (int)i);
		int ok = lua_type(L, -1) == LUA_TSTRING;
		lua_pop(L, 1);
		if (!ok)
			return 0;
	}
	return 1;
}

/* Raise on bad arguments (argv at 1, opts at 2) before anything is allocated: a raise leaks
 * nothing. */
static void check_args(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (lua_objlen(L, 1) == 0)
		luaL_argerror(L, 1, "argv must not be empty");
	if (!all_strings(L, 1))
		luaL_argerror(L, 1, "argv must hold only strings");
	if (lua_isnoneornil(L, 2))
		return;
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_getfield(L, 2, "env");
	if (!lua_isnil(L, -1) && (!lua_istable(L, -1) || lua_objlen(L, -1) == 0 || !all_strings(L, lua_gettop(L))))
		luaL_argerror(L, 2, "env must be a non-empty array of \"K=V\" strings");
	lua_pop(L, 1);
}

/* Call only after check_args: never raises; -1 with the reason in why (out of memory, a NUL). */
static int fill_opts(lua_State *L, int idx, struct rk_proc_opts *o, char ***env, char *why, size_t whylen)
{
	*env = NULL;
	if (lua_isnoneornil(L, idx))
		return 0;
	lua_getfield(L, idx, "env");
	if (!lua_isnil(L, -1) && !(*env = lrk_to_argv(L, lua_gettop(L), "env", why, whylen))) {
		lua_pop(L, 1);
		return -1;
	}
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
	lua_getfield(L, idx, "new_pgroup");
	o->new_pgroup = lua_toboolean(L, -1);
	lua_pop(L, 3);
	return 0;
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
	unhold(&p->h);
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

/* ---- spawning off the loop ----
 * posix_spawn suspends the calling thread until the child has exec'd (vfork semantics): tens of
 * milliseconds for a big binary such as runc on a loaded machine. In a task the spawn itself runs
 * on the worker pool (the child's exit is still reaped by the loop: children belong to the
 * process, not to the thread that spawned them). */
struct spawn {
	struct rk_pool_job job;
	char **argv, **env;
	char *cwd, *out, *err;
	struct rk_proc_opts o;
	int pipe_r, pipe_w;   /* sync_pipe: the ends kept and given (as fd 3); -1: none */
	int start_r, start_w; /* start_pipe: the ends kept and given (as fd 4); -1: none */
	pid_t pid;
	rk_err e;
};

static void spawn_free(void *ud)
{
	struct spawn *s = ud;
	lrk_free_argv(s->argv);
	lrk_free_argv(s->env);
	free(s->cwd);
	free(s->out);
	free(s->err);
	if (s->pipe_r >= 0)
		close(s->pipe_r);
	if (s->pipe_w >= 0)
		close(s->pipe_w);
	if (s->start_r >= 0)
		close(s->start_r);
	if (s->start_w >= 0)
		close(s->start_w);
	free(s);
}

extern char **environ;

/* env (NULL: riklet's environment) without NAME=..., plus NAME=FD (one digit): malloc'ed, NULL with
 * why set. */
static char **env_with_fd(char **env, const char *name, char fd, char *why, size_t whylen)
{
	size_t n = 0, len = strlen(name);
	char **src = env ? env : environ;
	while (src[n])
		n++;
	char **out = calloc(n + 2, sizeof *out);
	size_t k = 0;
	for (size_t i = 0; out && i < n; i++) {
		if (!strncmp(src[i], name, len) && src[i][len] == '=')
			continue;
		if (!(out[k++] = strdup(src[i])))
			goto oom;
	}
	if (!out || !(out[k] = malloc(len + 3)))
		goto oom;
	memcpy(out[k], name, len);
	memcpy(out[k] + len, (char[]){'=', fd, 0}, 3);
	return out;
oom:
	lrk_free_argv(out);
	snprintf(why, whylen, "out of memory");
	return NULL;
}

/* The environment variable named by opts[field] (opts at 2): NULL when absent, "" with why when bad. */
static const char *pipe_env_name(lua_State *L, const char *field, char *why, size_t whylen)
{
	if (!lua_istable(L, 2))
		return NULL;
	lua_getfield(L, 2, field);
	const char *name = lua_tostring(L, -1);
	lua_pop(L, 1); /* still referenced by the opts table */
	if (name && (!*name || strchr(name, '='))) {
		snprintf(why, whylen, "%s must name an environment variable", field);
		return "";
	}
	return name;
}

/* opts.sync_pipe and opts.start_pipe (at 2): the pipes and the environment that names them to the
 * child. -1 with why. */
static int add_pipes(lua_State *L, struct spawn *s, char *why, size_t whylen)
{
	const char *sync = pipe_env_name(L, "sync_pipe", why, whylen);
	const char *start = pipe_env_name(L, "start_pipe", why, whylen);
	if ((sync && !*sync) || (start && !*start))
		return -1;
	for (int i = 0; i < 2; i++) {
		const char *name = i ? start : sync;
		if (!name)
			continue;
		char **env = env_with_fd(s->env, name, i ? '4' : '3', why, whylen);
		if (!env)
			return -1;
		lrk_free_argv(s->env);
		s->env = env;
		s->o.env = env;
	}
	int fds[2];
	if (sync) {
		if (pipe2(fds, O_CLOEXEC) < 0) {
			snprintf(why, whylen, "cannot create a pipe: %s", strerror(errno));
			return -1;
		}
		fcntl(fds[0], F_SETFL, O_NONBLOCK); /* read on the loop; the child's end stays blocking */
		s->pipe_r = fds[0];
		s->pipe_w = s->o.extra_fd = fds[1];
	}
	if (start) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
			snprintf(why, whylen, "cannot create a socket pair: %s", strerror(errno));
			return -1;
		}
		s->start_r = fds[0];
		s->start_w = s->o.extra_fd2 = fds[1];
		/* the byte riklet's end never reads: closed with it unread, the child's read fails */
		if (send(fds[1], "h", 1, MSG_NOSIGNAL) != 1) {
			snprintf(why, whylen, "cannot write to a socket pair: %s", strerror(errno));
			return -1;
		}
		fcntl(fds[0], F_SETFL, O_NONBLOCK);
	}
	return 0;
}

/* argv at 1, opts at 2, already checked (check_args): copies everything the spawn needs. */
static struct spawn *spawn_new(lua_State *L)
{
	struct spawn *s = calloc(1, sizeof *s);
	if (!s)
		luaL_error(L, "out of memory");
	s->o = (struct rk_proc_opts)RK_PROC_OPTS_INIT;
	s->pipe_r = s->pipe_w = s->start_r = s->start_w = -1;
	char why[96] = "out of memory";
	/* Nothing here raises while s is held: free it first, then raise. */
	if (!(s->argv = lrk_to_argv(L, 1, "argv", why, sizeof why)) ||
	    fill_opts(L, 2, &s->o, &s->env, why, sizeof why) < 0 || (s->o.cwd && !(s->cwd = strdup(s->o.cwd))) ||
	    (s->o.stdout_path && !(s->out = strdup(s->o.stdout_path))) ||
	    (s->o.stderr_path && !(s->err = strdup(s->o.stderr_path))) || add_pipes(L, s, why, sizeof why) < 0) {
		spawn_free(s);
		luaL_error(L, "%s", why);
		return NULL; /* not reached: luaL_error does not return */
	}
	s->o.cwd = s->cwd; /* the copies: the Lua strings may be gone when a worker spawns */
	s->o.stdout_path = s->out;
	s->o.stderr_path = s->err;
	return s;
}

static void spawn_work(void *ud)
{
	struct spawn *s = ud;
	if (lrk_stopping()) { /* queued when riklet began to stop: its result would reach nobody */
		s->pid = -1;
		rk_errf(&s->e, ECANCELED, "%s not started: riklet is stopping", s->argv[0]);
		return;
	}
	s->pid = rk_proc_spawn(s->argv, &s->o, &s->e);
}

/* The results of proc.spawn, on the loop thread once the child exists. */
static int spawn_push(lua_State *L, void *ud)
{
	struct spawn *s = ud;
	if (s->pid < 0)
		return lrk_fail_err(L, &s->e);
	struct lproc *p = calloc(1, sizeof *p);
	if (!p) {
		kill(s->pid, SIGKILL); /* nobody could ever wait for it */
		return lrk_fail(L, "out of memory starting %s", s->argv[0]);
	}
	struct lproc **pp = lua_newuserdata(L, sizeof *pp);
	*pp = p;
	luaL_getmetatable(L, PROC_MT);
	lua_setmetatable(L, -2);
	p->pid = s->pid;
	hold(&p->h, free);
	rk_err e = {0};
	if (rk_loop_watch_child(lrk_loop(L), s->pid, on_exit_cb, p, &e) < 0) {
		/* our own fresh child: only out of memory gets here. Never let a wait hang on it. */
		unhold(&p->h);
		p->exited = 1;
		p->status = -1;
		rk_warn("proc", "cannot watch process %d (%s): its exit status will not be known", (int)s->pid, e.msg);
	}
	if (s->pipe_r < 0 && s->start_r < 0)
		return 1;
	int n = 1;
	if (s->pipe_r >= 0) {
		close(s->pipe_w); /* the child has it: the end of the stream is then the child's (and its children's) */
		s->pipe_w = -1;
		int fd = s->pipe_r;
		s->pipe_r = -1;
		n += lrk_usock_push(L, fd); /* process, pipe | process, nil, err */
	}
	if (s->start_r < 0)
		return n;
	for (; n < 3; n++)
		lua_pushnil(L);
	close(s->start_w); /* the child's copy is the only one left */
	s->start_w = -1;
	int fd = s->start_r;
	s->start_r = -1;
	/* a failure closes it: the child's read fails and it ends (start nil, its error 5th) */
	return n + lrk_usock_push(L, fd);
}

static int l_spawn(lua_State *L)
{
	check_args(L);
	lua_settop(L, 2);
	return lrk_offload(L, NULL, spawn_work, spawn_push, spawn_free, spawn_new(L));
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
#define KILL_GRACE_MS 1000

struct run {
	struct held h; /* first: freed through it */
	pid_t pid;
	int group; /* pid leads its own process group: a timeout kills the group */
	int exited, status, timed_out, returned;
	int fd_out, fd_err, fd_in;
	rk_watch *w_out, *w_err, *w_in;
	rk_timer *timer; /* the timeout, then the grace after SIGKILL */
	char *buf[2];
	size_t len[2];
	char *input;
	size_t in_len, in_off;
	lrk_wait w;
	double timeout;
	int child_fds[3]; /* the child's ends of the pipes, closed once it is spawned */
	struct spawn *sp; /* while the spawn is on the worker pool */
};

static void run_close(struct run *r, int *fd, rk_watch **w)
{
	if (*fd < 0)
		return;
	rk_watch_cancel(*w);
	*w = NULL;
	close(*fd);
	*fd = -1;
}

static void run_free(void *self)
{
	struct run *r = self;
	run_close(r, &r->fd_out, &r->w_out);
	run_close(r, &r->fd_err, &r->w_err);
	run_close(r, &r->fd_in, &r->w_in);
	if (r->timer)
		rk_timer_cancel(r->timer);
	if (!r->exited)
		rk_loop_unwatch_child(lrk_loop(NULL), r->pid);
	free(r->buf[0]);
	free(r->buf[1]);
	free(r->input);
	free(r);
}

/* Resume the caller with the result: when the command exited and its pipes are closed, or at the
 * end of the grace after a timeout's SIGKILL. The struct stays until the exit is seen. */
static void run_return(struct run *r)
{
	r->returned = 1;
	if (r->timer)
		rk_timer_cancel(r->timer);
	r->timer = NULL;
	run_close(r, &r->fd_out, &r->w_out);
	run_close(r, &r->fd_err, &r->w_err);
	run_close(r, &r->fd_in, &r->w_in);
	lua_State *co = lrk_wake_begin(r->w);
	if (co) {
		lua_createtable(co, 0, 5);
		push_status(co, r->exited ? r->status : -1);
		lua_setfield(co, -3, "signal");
		lua_setfield(co, -2, "code");
		lua_pushlstring(co, r->buf[0] ? r->buf[0] : "", r->len[0]);
		lua_setfield(co, -2, "stdout");
		lua_pushlstring(co, r->buf[1] ? r->buf[1] : "", r->len[1]);
		lua_setfield(co, -2, "stderr");
		lua_pushboolean(co, r->timed_out);
		lua_setfield(co, -2, "timed_out");
	}
	lrk_wait w = r->w;
	if (r->exited) {
		unhold(&r->h);
		run_free(r);
	}
	if (co)
		lrk_wake_end(w, 1);
}

static void run_maybe_done(struct run *r)
{
	if (!r->returned && r->exited && r->fd_out < 0 && r->fd_err < 0)
		run_return(r);
}

/* Read what is there; at end of file (or when closing) stop watching. */
static void run_read(struct run *r, int which, int closing)
{
	int *fd = which ? &r->fd_err : &r->fd_out;
	rk_watch **w = which ? &r->w_err : &r->w_out;
	char tmp[16384];
	for (;;) {
		ssize_t n = read(*fd, tmp, sizeof tmp);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && !closing)
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
	run_close(r, fd, w);
}

static void run_out_cb(void *ud, int fd, uint32_t ev)
{
	run_read(ud, 0, 0);
	run_maybe_done(ud);
}
static void run_err_cb(void *ud, int fd, uint32_t ev)
{
	run_read(ud, 1, 0);
	run_maybe_done(ud);
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
	run_close(r, &r->fd_in, &r->w_in);
}

static void run_exit_cb(void *ud, pid_t pid, int st)
{
	struct run *r = ud;
	r->exited = 1;
	r->status = st;
	if (r->returned) { /* returned at a timeout's grace; the exit came later */
		unhold(&r->h);
		run_free(r);
		return;
	}
	run_maybe_done(r);
}

static void run_grace_cb(void *ud)
{
	struct run *r = ud;
	r->timer = NULL;
	rk_warn("proc", "process %d did not die within %d ms of SIGKILL (stuck in the kernel?); giving up on it",
		(int)r->pid, KILL_GRACE_MS);
	run_return(r);
}

static void run_timeout_cb(void *ud)
{
	struct run *r = ud;
	r->timer = NULL;
	r->timed_out = 1;
	/* The group: its children too (a `sh -c` pipeline, a daemon it started). A grandchild that
	 * left the group keeps running but cannot hold the call: the pipes are closed right here. */
	if (r->group)
		kill(-r->pid, SIGKILL);
	if (!r->exited)
		kill(r->pid, SIGKILL);
	if (r->fd_out >= 0)
		run_read(r, 0, 1);
	if (r->fd_err >= 0)
		run_read(r, 1, 1);
	run_close(r, &r->fd_in, &r->w_in);
	if (r->exited)
		run_return(r);
	else
		r->timer = rk_loop_timer(lrk_loop(NULL), KILL_GRACE_MS, run_grace_cb, r);
}

static void run_work(void *ud)
{
	struct run *r = ud;
	spawn_work(r->sp);
}

/* On the loop thread once the command is spawned (or failed to be): watch its pipes and exit. */
static void run_spawned(void *ud, int cancelled)
{
	struct run *r = ud;
	struct spawn *sp = r->sp;
	r->sp = NULL;
	for (int i = 0; i < 3; i++)
		if (r->child_fds[i] >= 0)
			close(r->child_fds[i]);
	pid_t pid = sp->pid;
	rk_err e = sp->e;
	int group = sp->o.new_pgroup || sp->o.new_session;
	spawn_free(sp);
	r->exited = 1; /* nothing to unwatch in run_free yet */
	if (cancelled || pid < 0) {
		lrk_wait w = r->w;
		run_free(r);
		lua_State *co = cancelled ? NULL : lrk_wake_begin(w);
		if (co)
			lrk_wake_end(w, lrk_fail_err(co, &e));
		return;
	}
	r->exited = 0;
	r->pid = pid;
	r->group = group;
	hold(&r->h, run_free);
	rk_loop *loop = lrk_loop(NULL);
	r->w_out = rk_loop_watch_fd(loop, r->fd_out, EPOLLIN, run_out_cb, r, &e);
	r->w_err = rk_loop_watch_fd(loop, r->fd_err, EPOLLIN, run_err_cb, r, &e);
	if (r->fd_in >= 0)
		r->w_in = rk_loop_watch_fd(loop, r->fd_in, EPOLLOUT, run_in_cb, r, &e);
	if (r->timeout > 0)
		r->timer = rk_loop_timer(loop, (uint64_t)(r->timeout * 1000), run_timeout_cb, r);
	if (rk_loop_watch_child(loop, pid, run_exit_cb, r, &e) < 0)
		rk_warn("proc", "cannot watch %d: %s", (int)pid, e.msg);
}

static int l_run(lua_State *L)
{
	check_args(L);
	double timeout = 0;
	size_t in_len = 0;
	const char *input = NULL;
	int own_group = 1;
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "timeout");
		timeout = lua_tonumber(L, -1);
		lua_getfield(L, 2, "input");
		input = lua_tolstring(L, -1, &in_len);
		lua_getfield(L, 2, "own_group");
		own_group = lua_isnil(L, -1) || lua_toboolean(L, -1);
		lua_pop(L, 3);
	}
	lrk_wait w = lrk_wait_begin(L);	 /* raises outside a task, before anything is allocated */
	struct spawn *sp = spawn_new(L); /* raises (out of memory, a NUL) holding nothing */
	struct run *r = calloc(1, sizeof *r);
	if (!r || (input && !(r->input = malloc(in_len ? in_len : 1)))) {
		free(r);
		spawn_free(sp);
		return luaL_error(L, "out of memory");
	}
	if (input)
		memcpy(r->input, input, in_len);
	r->in_len = in_len;
	r->timeout = timeout;
	struct rk_proc_opts o = sp->o;
	char **argv = sp->argv;
	o.new_pgroup = own_group && !o.new_session;
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
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
		int n = lrk_fail(L, "cannot create pipes for %s: %s", argv[0], strerror(err));
		spawn_free(sp);
		free(r->input);
		free(r);
		return n;
	}
	/* The child's ends must be blocking. */
	fcntl(po[1], F_SETFL, 0);
	fcntl(pe[1], F_SETFL, 0);
	if (input)
		fcntl(pi[0], F_SETFL, 0);
	o.stdout_fd = po[1];
	o.stderr_fd = o.stderr_to_stdout ? po[1] : pe[1];
	o.stdin_fd = input ? pi[0] : -1;
	sp->o = o;
	r->child_fds[0] = po[1];
	r->child_fds[1] = pe[1];
	r->child_fds[2] = input ? pi[0] : -1;
	r->fd_out = po[0];
	r->fd_err = pe[0];
	r->fd_in = input ? pi[1] : -1;
	r->w = w;
	r->sp = sp;
	if (lrk_pool()) {
		sp->job = (struct rk_pool_job){.work = run_work, .done = run_spawned, .ud = r};
		rk_pool_submit(lrk_pool(), &sp->job);
		return lua_yield(L, 0);
	}
	spawn_work(sp); /* no worker pool: here */
	if (sp->pid < 0) {
		int n = lrk_fail_err(L, &sp->e);
		r->w = (lrk_wait){0, 0}; /* run_spawned must not resume this task: it is not suspended */
		run_spawned(r, 0);
		return n;
	}
	run_spawned(r, 0);
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

/* ---- pidfds: signal the process that was checked, never a recycled pid ---- */
#define PIDFD_MT "riklet.proc.pidfd"

static const char *errname(int code)
{
	switch (code) {
	case ENOSYS:
		return "ENOSYS";
	case ESRCH:
		return "ESRCH";
	case EMFILE:
		return "EMFILE";
	case ENFILE:
		return "ENFILE";
	case EPERM:
		return "EPERM";
	default:
		return "EOTHER";
	}
}

static int fail_named(lua_State *L, const rk_err *e)
{
	lrk_fail_err(L, e);
	lua_pushstring(L, errname(e->code));
	return 3;
}

/* proc.pidfd(pid) -> pidfd | nil, err, errname */
static int l_pidfd(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	if (pid <= 0)
		return luaL_argerror(L, 1, "pid must be positive");
	rk_err e = {0};
	int fd = rk_pidfd_open(pid, &e);
	if (fd < 0)
		return fail_named(L, &e);
	lrk_push_fd(L, fd, PIDFD_MT);
	return 1;
}

/* pidfd:signal(signo) -> true | nil, err, errname */
static int l_pidfd_signal(lua_State *L)
{
	int *u = luaL_checkudata(L, 1, PIDFD_MT);
	int sig = (int)luaL_checkinteger(L, 2);
	if (*u < 0)
		return luaL_error(L, "pidfd:signal on a closed pidfd");
	rk_err e = {0};
	if (rk_pidfd_signal(*u, sig, &e) < 0)
		return fail_named(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

/* pidfd:close() */
static int l_pidfd_close(lua_State *L)
{
	return lrk_close_fd(L, PIDFD_MT);
}

/* proc.alive(pid) -> boolean */
static int l_alive(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	lua_pushboolean(L, pid > 0 && (kill(pid, 0) == 0 || errno == EPERM));
	return 1;
}

/* proc.watch(pid) -> code, signal | nil, nil, err — waits (yields) for any process, ours or
 * re-adopted, to exit.
 *   code, signal: it exited (code) or was killed (signal). For a process that is not riklet's
 *     child both are nil: it is gone, but its exit code cannot be known. A process that no longer
 *     exists when the watch starts (ESRCH) also gives nil, nil: it is gone.
 *   nil, nil, err: watching FAILED (pidfd_open refused with something other than ESRCH, out of
 *     fds, the pid is already watched, epoll refused): nothing is known about the process, which
 *     may well still run. Never read this as an exit. */
struct pwatch {
	struct held h; /* first: freed through it */
	pid_t pid;
	lrk_wait w;
};

static void pwatch_free(void *self)
{
	free(self);
}

static void watch_cb(void *ud, pid_t pid, int st)
{
	struct pwatch *pw = ud;
	lrk_wait w = pw->w;
	unhold(&pw->h);
	free(pw);
	lua_State *co = lrk_wake_begin(w);
	if (co) {
		push_status(co, st);
		lrk_wake_end(w, 2);
	}
}

static int l_watch(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	lrk_wait w = lrk_wait_begin(L);
	struct pwatch *pw = calloc(1, sizeof *pw);
	if (!pw)
		return luaL_error(L, "out of memory");
	pw->pid = pid;
	pw->w = w;
	rk_err e = {0};
	if (rk_loop_watch_child(lrk_loop(L), pid, watch_cb, pw, &e) < 0) {
		free(pw);
		lua_pushnil(L);
		lua_pushnil(L);
		if (e.code == ESRCH)
			return 2; /* gone before we looked: an exit with an unknown code */
		lua_pushfstring(L, "cannot watch process %d: %s", (int)pid, e.msg[0] ? e.msg : "unknown error");
		return 3;
	}
	hold(&pw->h, pwatch_free);
	return lua_yield(L, 0);
}

/* proc.unwatch(pid) — stop a proc.watch (the waiting task is not resumed by it any more). */
static int l_unwatch(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	rk_loop_unwatch_child(lrk_loop(L), pid);
	for (struct held *h = held_all.next; h != &held_all; h = h->next) {
		if (h->free == pwatch_free && ((struct pwatch *)h)->pid == pid) {
			unhold(h);
			free(h);
			break;
		}
	}
	return 0;
}

static int open_proc(lua_State *L)
{
	static const luaL_Reg methods[] = {{"wait", l_wait}, {"kill", l_kill}, {"exited", l_exited}, {NULL, NULL}};
	lrk_newclass_fields(L, PROC_MT, methods, l_proc_fields, l_proc_gc);
	static const luaL_Reg pidfd_methods[] = {{"signal", l_pidfd_signal}, {"close", l_pidfd_close}, {NULL, NULL}};
	lrk_newclass(L, PIDFD_MT, pidfd_methods, l_pidfd_close);
	static const luaL_Reg fns[] = {{"spawn", l_spawn},     {"run", l_run},	   {"describe", l_describe},
				       {"kill", l_kill_pid},   {"alive", l_alive}, {"watch", l_watch},
				       {"unwatch", l_unwatch}, {"pidfd", l_pidfd}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	static int hooked;
	if (!hooked++)
		lrk_at_shutdown(free_held);
	return 1;
}
LRK_MODULE("riklet.proc", open_proc)
