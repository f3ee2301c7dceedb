/* test_loop.c — the event loop: timers in order, cancel, defer, fd watches, child exits (our own,
 * an exit reaped before the watch, and a process that is not our child), signals, stop; timer
 * cancel gives memory back; loop lag is measured; a turn's budget bounds the deferred work it runs;
 * an urgent watch is served between paced callbacks; the worker pool runs jobs off the loop thread
 * and delivers their completions on it while the loop keeps turning. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "loop.h"
#include "pool.h"
#include "proc.h"
#include "tap.h"

static char order[64];
static void mark(void *ud)
{
	size_t n = strlen(order);
	order[n] = *(const char *)ud;
	order[n + 1] = 0;
}
static void stop_cb(void *ud)
{
	rk_loop_stop(ud, 7);
}

static int child_status = -2;
static pid_t child_pid;
static void child_cb(void *ud, pid_t pid, int st)
{
	child_pid = pid;
	child_status = st;
	rk_loop_stop(ud, 0);
}

static int fd_events;
static void fd_cb(void *ud, int fd, uint32_t ev)
{
	char b[16];
	ssize_t n = read(fd, b, sizeof b);
	fd_events += n > 0;
	rk_loop_stop(ud, 0);
}

static int got_signal;
static void sig_cb(void *ud, int signo)
{
	got_signal = signo;
	rk_loop_stop(ud, 0);
}

static void nop(void *ud) {}

/* worker pool jobs */
static pthread_t loop_thread;
struct pjob {
	struct rk_pool_job job;
	int ms;		       /* how long the work blocks */
	int on_worker;	       /* work ran on another thread than the loop's */
	int done_on_loop;      /* done ran on the loop thread */
	int cancelled;	       /* done was told the pool is shutting down */
	uint64_t finished_at;  /* when work returned */
	uint64_t delivered_at; /* when done ran */
};
static int jobs_left;
static rk_loop *g_loop;
static void pwork(void *ud)
{
	struct pjob *j = ud;
	j->on_worker = !pthread_equal(pthread_self(), loop_thread);
	struct timespec ts = {0, (long)j->ms * 1000000L};
	nanosleep(&ts, NULL);
	j->finished_at = rk_now_ms();
}
static void pdone(void *ud, int cancelled)
{
	struct pjob *j = ud;
	j->done_on_loop = pthread_equal(pthread_self(), loop_thread);
	j->cancelled = cancelled;
	j->delivered_at = rk_now_ms();
	if (--jobs_left == 0 && !cancelled)
		rk_loop_stop(g_loop, 0);
}
static int ticks;
static void tick(void *ud)
{
	ticks++;
	if (jobs_left > 0)
		rk_loop_timer(ud, 5, tick, ud);
}
static void busy(void *ud)
{
	uint64_t t = rk_now_ms();
	while (rk_now_ms() - t < 150)
		;
	rk_loop_blame(ud, 150000, "the busy test callback");
	rk_loop_stop(ud, 0);
}

/* the turn budget: NSPIN deferred callbacks of 5 ms queued at once, a 1 ms ticker and a ready fd */
#define NSPIN 200
static int spun, spun_in_order = 1, fd_seen_at = -1, spin_ticks;
static uint64_t last_tick_us, max_tick_gap_us;
static void spin5(void *ud)
{
	intptr_t i = (intptr_t)ud;
	if (i != spun)
		spun_in_order = 0;
	uint64_t t = rk_now_us();
	while (rk_now_us() - t < 5000)
		;
	if (++spun == NSPIN)
		rk_loop_stop(g_loop, 0);
}
static int answered_at = -1;
static void spin_answer(void *ud)
{
	answered_at = spun;
}
static void spin_fd(void *ud, int fd, uint32_t ev)
{
	char c;
	if (read(fd, &c, 1) == 1 && fd_seen_at < 0) {
		fd_seen_at = spun;
		rk_loop_defer(g_loop, spin_answer, NULL); /* e.g. an HTTP request's dispatch */
	}
}
/* urgent watches: a byte arrives (written by the 10th of 60 paced callbacks of 1 ms) on an urgent fd */
#define NUSPIN 60
static int u_spun, u_seen_at = -1, u_answered_at = -1, u_wfd = -1;
static void spin1(void *ud)
{
	if ((intptr_t)ud == 10 && write(u_wfd, "x", 1) != 1)
		u_seen_at = -2;
	uint64_t t = rk_now_us();
	while (rk_now_us() - t < 1000)
		;
	if (++u_spun == NUSPIN)
		rk_loop_stop(g_loop, 0);
}
static void u_answer(void *ud)
{
	u_answered_at = u_spun;
}
static void u_fd(void *ud, int fd, uint32_t ev)
{
	char c;
	if (read(fd, &c, 1) == 1 && u_seen_at == -1) {
		u_seen_at = u_spun;
		rk_loop_defer(g_loop, u_answer, NULL);
	}
}
/* an API flood: an urgent fd always ready (never drained), its callback 2 ms, beside 40 paced
 * callbacks of 1 ms */
#define NFLOOD 40
static int f_steps, f_served, f_calm;
static void flood_step(void *ud)
{
	f_calm += !rk_loop_over_budget(g_loop); /* (a task's pace: a flood must not make every step yield) */
	uint64_t t = rk_now_us();
	while (rk_now_us() - t < 1000)
		;
	if (++f_steps == NFLOOD)
		rk_loop_stop(g_loop, 0);
}
static void flood_fd(void *ud, int fd, uint32_t ev)
{
	f_served++;
	uint64_t t = rk_now_us();
	while (rk_now_us() - t < 2000)
		;
}
static void spin_tick(void *ud)
{
	uint64_t now = rk_now_us();
	if (now - last_tick_us > max_tick_gap_us)
		max_tick_gap_us = now - last_tick_us;
	last_tick_us = now;
	spin_ticks++;
	if (spun < NSPIN)
		rk_loop_timer(ud, 1, spin_tick, ud);
}

int main(void)
{
	loop_thread = pthread_self();
	rk_err e = {0};
	rk_loop *l = rk_loop_new(&e);
	ok(l != NULL, "loop created: %s", e.msg);

	/* timers fire by due time, FIFO for equal times; a cancelled one never fires */
	rk_loop_timer(l, 30, mark, "c");
	rk_loop_timer(l, 10, mark, "a");
	rk_loop_timer(l, 10, mark, "b");
	rk_timer *x = rk_loop_timer(l, 20, mark, "x");
	rk_timer_cancel(x);
	rk_loop_defer(l, mark, "0");
	rk_loop_timer(l, 40, stop_cb, l);
	uint64_t t0 = rk_now_ms();
	int code = rk_loop_run(l);
	is_str(order, "0abc", "deferred first, then timers in order, cancelled one skipped");
	is_int(code, 7, "run returns the code given to stop");
	ok(rk_now_ms() - t0 >= 39, "the loop waited for the last timer (%llu ms)",
	   (unsigned long long)(rk_now_ms() - t0));

	/* fd watch */
	int p[2];
	ok(pipe(p) == 0, "pipe");
	rk_watch *w = rk_loop_watch_fd(l, p[0], EPOLLIN, fd_cb, l, &e);
	ok(w != NULL, "watch fd");
	ok(write(p[1], "x", 1) == 1, "write");
	rk_loop_run(l);
	is_int(fd_events, 1, "fd callback ran once with data");
	rk_watch_cancel(w);
	rk_watch_cancel(w); /* idempotent */
	close(p[0]);
	close(p[1]);

	/* our own child: exit status */
	char *argv[] = {"sh", "-c", "exit 5", NULL};
	pid_t pid = rk_proc_spawn(argv, NULL, &e);
	ok(pid > 0, "spawned sh: %s", e.msg);
	ok(rk_loop_watch_child(l, pid, child_cb, l, &e) == 0, "watch child");
	rk_loop_run(l);
	ok(child_pid == pid && WIFEXITED(child_status) && WEXITSTATUS(child_status) == 5, "child exit code 5 seen");

	/* riklet's NOTIFY_SOCKET (systemd's) is never a child's: runc start given it waits for the
	 * container's READY=1 */
	setenv("NOTIFY_SOCKET", "/run/systemd/notify", 1);
	char *argv_ns[] = {"sh", "-c", "test -z \"${NOTIFY_SOCKET+set}\" || exit 7", NULL};
	char *env_ns[] = {"A=1", "NOTIFY_SOCKET=/x", NULL};
	struct rk_proc_opts o_ns = RK_PROC_OPTS_INIT;
	o_ns.env = env_ns;
	for (int i = 0; i < 2; i++) {
		pid = rk_proc_spawn(argv_ns, i ? &o_ns : NULL, &e);
		ok(pid > 0 && rk_loop_watch_child(l, pid, child_cb, l, &e) == 0, "spawned sh: %s", e.msg);
		rk_loop_run(l);
		ok(child_pid == pid && WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0,
		   "no NOTIFY_SOCKET in a child's environment (%s)", i ? "an env given" : "riklet's own");
	}
	unsetenv("NOTIFY_SOCKET");

	/* a child reaped before anyone watched it still reports (the unclaimed table) */
	char *argv2[] = {"true", NULL};
	pid = rk_proc_spawn(argv2, NULL, &e);
	rk_loop_timer(l, 100, stop_cb, l); /* let SIGCHLD arrive and be reaped with no watcher */
	rk_loop_run(l);
	child_status = -2;
	ok(rk_loop_watch_child(l, pid, child_cb, l, &e) == 0, "watch after the exit was reaped");
	rk_loop_run(l);
	ok(child_pid == pid && WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0, "late watch gets the status");

	/* a process that is not our child: pidfd, status unknown */
	char *argv3[] = {"sh", "-c", "sleep 0.2 & echo $! > /tmp/rk-test-loop.pid", NULL};
	pid = rk_proc_spawn(argv3, NULL, &e);
	int st;
	waitpid(pid, &st, 0);
	char *buf = NULL;
	ok(rk_read_file("/tmp/rk-test-loop.pid", 64, &buf, NULL, &e) == 0, "read grandchild pid");
	pid_t gc = buf ? (pid_t)atoi(buf) : 0;
	free(buf);
	unlink("/tmp/rk-test-loop.pid");
	child_status = -2;
	ok(gc > 0 && rk_loop_watch_child(l, gc, child_cb, l, &e) == 0, "watch a non-child (pid %d): %s", (int)gc,
	   e.msg);
	rk_loop_run(l);
	ok(child_pid == gc, "non-child exit seen");
	/* as a subreaper the orphan became our child, so a real status may arrive; either is fine */
	ok(child_status == -1 || (child_status >= 0 && WIFEXITED(child_status)), "status is known or -1 (%d)",
	   child_status);
	ok(rk_loop_watch_child(l, 999999, child_cb, l, &e) < 0 && e.code == ESRCH, "watching a missing pid fails: %s",
	   e.msg);

	/* signals through signalfd */
	ok(rk_loop_on_signal(l, SIGUSR1, sig_cb, l, &e) == 0, "handle SIGUSR1");
	kill(getpid(), SIGUSR1);
	rk_loop_run(l);
	is_int(got_signal, SIGUSR1, "SIGUSR1 delivered on the loop");

	/* a cancelled timer leaves the heap at once: 100k long timers armed and cancelled give back
	 * the count (and the memory, shrunk heap) they took */
	struct rk_loop_stats ls;
	rk_loop_get_stats(l, &ls);
	size_t base = ls.timers;
	static rk_timer *many[100000];
	for (int i = 0; i < 100000; i++)
		many[i] = rk_loop_timer(l, 3600u * 1000u + (uint64_t)(i % 977), nop, NULL);
	rk_loop_get_stats(l, &ls);
	is_int((int)ls.timers, (int)base + 100000, "100k timers armed");
	for (int i = 0; i < 100000; i += 2) /* every other one: removal from the middle of the heap */
		rk_timer_cancel(many[i]);
	for (int i = 1; i < 100000; i += 2)
		rk_timer_cancel(many[i]);
	rk_loop_get_stats(l, &ls);
	is_int((int)ls.timers, (int)base, "all cancelled: the timer count is back to its level");
	order[0] = 0;
	rk_loop_timer(l, 20, mark, "2");
	rk_timer *c1 = rk_loop_timer(l, 10, mark, "1");
	rk_loop_timer(l, 5, mark, "0");
	rk_loop_timer(l, 30, stop_cb, l);
	rk_timer_cancel(c1);
	rk_loop_run(l);
	is_str(order, "02", "the heap still fires in order after removals");

	/* loop lag: a callback that keeps the loop busy for 150 ms is measured and named */
	rk_loop_timer(l, 1, busy, l);
	rk_loop_run(l);
	rk_loop_timer(l, 1, stop_cb, l); /* one more turn ends the busy one */
	rk_loop_run(l);
	rk_loop_get_stats(l, &ls);
	ok(ls.lag_max_us >= 140000 && ls.lag_max_us < 1000000, "a 150 ms callback shows as lag_max (%llu us)",
	   (unsigned long long)ls.lag_max_us);
	ok(ls.lag_recent_us >= 140000, "and as the recent max (%llu us)", (unsigned long long)ls.lag_recent_us);
	ok(ls.slow_turns >= 1, "counted as a slow turn (%llu)", (unsigned long long)ls.slow_turns);
	ok(strstr(ls.slowest, "busy test callback") != NULL, "the slowest turn is named: '%s'", ls.slowest);
	ok(ls.lag_last_us < 150000, "the last turn was a quick one (%llu us)", (unsigned long long)ls.lag_last_us);

	/* the turn budget: 200 paced callbacks of 5 ms queued at once (1 s of work) do not hold the
	 * loop for 1 s: once a turn has run RK_LOOP_BUDGET_MS, the rest waits for the next turn, in
	 * order, and a ready fd, what it defers and a 1 ms timer are served in between */
	g_loop = l;
	int sp[2];
	ok(pipe(sp) == 0 && write(sp[1], "x", 1) == 1, "a pipe with a byte to read");
	rk_watch *sw = rk_loop_watch_fd(l, sp[0], EPOLLIN, spin_fd, NULL, &e);
	rk_loop_timer(l, 1, spin_tick, l);
	for (intptr_t i = 0; i < NSPIN; i++)
		rk_loop_defer_paced(l, spin5, (void *)i);
	uint64_t s0 = rk_now_ms();
	last_tick_us = rk_now_us();
	rk_loop_run(l);
	uint64_t spin_ms = rk_now_ms() - s0;
	if (rk_now_us() - last_tick_us > max_tick_gap_us)
		max_tick_gap_us = rk_now_us() - last_tick_us;
	rk_watch_cancel(sw);
	close(sp[0]);
	close(sp[1]);
	is_int(spun, NSPIN, "all 200 deferred callbacks ran");
	ok(spun_in_order, "in the order they were queued, across turns");
	ok(fd_seen_at >= 0 && fd_seen_at <= 2 * RK_LOOP_BUDGET_MS / 5 + 2,
	   "the ready fd was served after %d of them (one turn's budget: %d ms)", fd_seen_at, RK_LOOP_BUDGET_MS);
	ok(answered_at == fd_seen_at,
	   "a callback the fd deferred (rk_loop_defer) ran in its turn, ahead of the paced ones");
	ok(spin_ticks >= 10, "a 1 ms timer ticked %d times in the %llu ms", spin_ticks, (unsigned long long)spin_ms);
	ok(max_tick_gap_us < 200000,
	   "the longest wait of the ticker (from the start to the end) was %.1f ms (the work queued: %d x 5 ms)",
	   max_tick_gap_us / 1000.0, NSPIN);

	/* an urgent watch (rk_watch_set_urgent: the HTTP API's) is served between paced callbacks, with
	 * what it defers, not after the turn's budget (a plain fd: after ~20 of these, the next turn) */
	int up[2];
	ok(pipe(up) == 0, "a pipe for the urgent watch");
	u_wfd = up[1];
	e.msg[0] = 0;
	rk_watch *uw = rk_loop_watch_fd(l, up[0], EPOLLIN, u_fd, NULL, &e);
	ok(uw && rk_watch_set_urgent(uw, &e) == 0, "the watch is urgent: %s", e.msg);
	for (intptr_t i = 0; i < NUSPIN; i++)
		rk_loop_defer_paced(l, spin1, (void *)i);
	rk_loop_run(l);
	rk_watch_cancel(uw);
	close(up[0]);
	close(up[1]);
	ok(u_seen_at >= 11 && u_seen_at <= 12,
	   "a byte written by the 11th paced callback of 1 ms was read after %d of them (at most 12)", u_seen_at);
	ok(u_answered_at == u_seen_at, "what its callback deferred ran at once (after %d)", u_answered_at);

	/* a client that keeps the API busy gets at most RK_LOOP_URGENT_MAX_US of a turn between paced
	 * steps, on top of their budget: the paced work goes on as with a plain watch (one 2 ms serving
	 * per turn of ~18 steps), not one step per 4 servings (8 ms) */
	ok(pipe(up) == 0 && write(up[1], "x", 1) == 1, "a pipe always ready for the flood");
	rk_watch *fw = rk_loop_watch_fd(l, up[0], EPOLLIN, flood_fd, NULL, &e);
	ok(fw && rk_watch_set_urgent(fw, &e) == 0, "the flooded watch is urgent: %s", e.msg);
	uint64_t f0 = rk_now_us();
	for (intptr_t i = 0; i < NFLOOD; i++)
		rk_loop_defer_paced(l, flood_step, NULL);
	rk_loop_run(l);
	uint64_t f_ms = (rk_now_us() - f0) / 1000;
	rk_watch_cancel(fw);
	close(up[0]);
	close(up[1]);
	ok(f_served <= NFLOOD / 2,
	   "a flooded urgent fd (2 ms a serving) was served %d times while %d paced steps of 1 ms ran (%llu ms; at "
	   "most %d)",
	   f_served, f_steps, (unsigned long long)f_ms, NFLOOD / 2);
	ok(f_calm >= NFLOOD / 2,
	   "rk_loop_over_budget said no in %d of the %d steps (at least %d): a flood past its "
	   "share does not make every task yield",
	   f_calm, NFLOOD, NFLOOD / 2);

	/* the worker pool: 8 jobs of 200 ms on 4 threads take ~400 ms, run off the loop thread, and
	 * their completions are delivered on the loop while a 5 ms timer keeps ticking */
	g_loop = l;
	rk_pool *pool = rk_pool_new(l, 4, &e);
	ok(pool != NULL, "pool created: %s", e.msg);
	struct rk_pool_stats ps;
	rk_pool_stats(pool, &ps);
	ok(ps.threads == 0 && ps.max_threads == 4, "no worker thread before the first job (%u live, at most %u)",
	   ps.threads, ps.max_threads);
	static struct pjob pj[8];
	jobs_left = 8;
	for (int i = 0; i < 8; i++) {
		pj[i] = (struct pjob){.ms = 200};
		pj[i].job = (struct rk_pool_job){.work = pwork, .done = pdone, .ud = &pj[i]};
		rk_pool_submit(pool, &pj[i].job);
	}
	rk_pool_stats(pool, &ps);
	is_int((int)ps.threads, 4, "4 worker threads, started by the jobs");
	ok(ps.queued + ps.running == 8, "8 jobs pending (%zu queued, %zu running)", ps.queued, ps.running);
	uint64_t lag_before = ls.lag_max_us;
	t0 = rk_now_ms();
	ticks = 0;
	rk_loop_timer(l, 5, tick, l);
	rk_loop_run(l);
	uint64_t took = rk_now_ms() - t0;
	int all_worker = 1, all_loop = 1, late = 0;
	for (int i = 0; i < 8; i++) {
		all_worker &= pj[i].on_worker;
		all_loop &= pj[i].done_on_loop && !pj[i].cancelled;
		if (pj[i].delivered_at - pj[i].finished_at > 50)
			late++;
	}
	ok(all_worker, "every job ran on a worker thread");
	ok(all_loop, "every completion ran on the loop thread");
	is_int(late, 0, "completions arrive within 50 ms of the work ending");
	ok(took >= 390 && took < 1500, "8 x 200 ms on 4 workers took %llu ms (parallel)", (unsigned long long)took);
	ok(ticks >= 30, "the loop kept turning meanwhile: %d ticks of 5 ms", ticks);
	rk_loop_get_stats(l, &ls);
	ok(ls.lag_max_us == lag_before || ls.lag_last_us < 50000, "no turn blocked during the jobs (last %llu us)",
	   (unsigned long long)ls.lag_last_us);
	rk_pool_stats(pool, &ps);
	ok(ps.finished == 8 && ps.queued == 0 && ps.running == 0, "stats: 8 finished, none pending");

	/* idle workers exit after the idle time; the next job starts one again, and jobs one after
	 * another reuse that one */
	rk_pool_set_idle_ms(pool, 100);
	uint64_t w0 = rk_now_ms();
	do {
		struct timespec ts = {0, 10000000L};
		nanosleep(&ts, NULL);
		rk_pool_stats(pool, &ps);
	} while (ps.threads > 0 && rk_now_ms() - w0 < 10000);
	ok(ps.threads == 0 && ps.exited == 4, "the 4 idle workers exited (%u live, %llu exited in %llu ms)", ps.threads,
	   (unsigned long long)ps.exited, (unsigned long long)(rk_now_ms() - w0));
	rk_pool_set_idle_ms(pool, 60000);
	for (int k = 0; k < 3; k++) {
		jobs_left = 1;
		pj[0] = (struct pjob){.ms = 1};
		pj[0].job = (struct rk_pool_job){.work = pwork, .done = pdone, .ud = &pj[0]};
		rk_pool_submit(pool, &pj[0].job);
		rk_loop_run(l);
	}
	rk_pool_stats(pool, &ps);
	ok(pj[0].on_worker && pj[0].done_on_loop && ps.finished == 11,
	   "jobs after that ran on a worker (%llu finished)", (unsigned long long)ps.finished);
	ok(ps.threads == 1 && ps.started == 5,
	   "on one new thread, started by the first of them (%u live, %llu started)", ps.threads,
	   (unsigned long long)ps.started);

	/* freeing the pool finishes queued work and tells done it is cancelled */
	jobs_left = 3;
	for (int i = 0; i < 3; i++) {
		pj[i] = (struct pjob){.ms = 50};
		pj[i].job = (struct rk_pool_job){.work = pwork, .done = pdone, .ud = &pj[i]};
		rk_pool_submit(pool, &pj[i].job);
	}
	rk_pool_free(pool);
	ok(pj[0].finished_at && pj[1].finished_at && pj[2].finished_at, "pool free ran the queued work to its end");
	ok(pj[0].cancelled && pj[1].cancelled && pj[2].cancelled && jobs_left == 0,
	   "and called every done with cancelled = 1");

	rk_loop_free(l);
	tap_done();
}
