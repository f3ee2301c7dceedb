/* test_loop.c — the event loop: timers in order, cancel, defer, fd watches, child exits (our own,
 * an exit reaped before the watch, and a process that is not our child), signals, stop. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "loop.h"
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

int main(void)
{
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

	rk_loop_free(l);
	tap_done();
}
