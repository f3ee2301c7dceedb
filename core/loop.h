/* loop.h — the one event loop: fds (epoll), timers (min-heap, epoll timeout), signals (signalfd),
 * child exits (SIGCHLD reaping as a child subreaper, pidfd for processes that are not our children),
 * and deferred callbacks. Single-threaded; every callback runs on the loop thread.
 *
 * Handles returned here stay owned by the loop. A cancel is always safe, also from inside the
 * handle's own callback; after cancel (or after a one-shot fired) the handle must not be used. */
#ifndef RK_LOOP_H
#define RK_LOOP_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/epoll.h>
#include "rk.h"

typedef struct rk_loop rk_loop;
typedef struct rk_watch rk_watch;
typedef struct rk_timer rk_timer;

typedef void (*rk_fd_cb)(void *ud, int fd, uint32_t events);
typedef void (*rk_timer_cb)(void *ud);
/* wstatus is a waitpid() status, or -1 when the process was not our child (exit code unknown). */
typedef void (*rk_child_cb)(void *ud, pid_t pid, int wstatus);
typedef void (*rk_signal_cb)(void *ud, int signo);
typedef void (*rk_defer_cb)(void *ud);

/* Creates the loop, blocks SIGCHLD/SIGINT/SIGTERM/SIGHUP/SIGPIPE for signalfd and makes this
 * process a child subreaper (orphaned container processes are reparented to us). */
rk_loop *rk_loop_new(rk_err *e);
void rk_loop_free(rk_loop *l);

/* Watch fd for events (EPOLLIN, EPOLLOUT, ...; level-triggered). */
rk_watch *rk_loop_watch_fd(rk_loop *l, int fd, uint32_t events, rk_fd_cb cb, void *ud, rk_err *e);
int rk_watch_modify(rk_watch *w, uint32_t events, rk_err *e);
/* Serve w between paced callbacks too (see rk_loop_defer_paced), at most RK_LOOP_URGENT_US apart,
 * with what its callback asks for at once (rk_loop_defer callbacks, timers due now): for fds an
 * operator or a client waits on (the HTTP API), whose callbacks are short. */
int rk_watch_set_urgent(rk_watch *w, rk_err *e);
#define RK_LOOP_URGENT_US 1000
/* ... for at most this long a turn (a quarter of RK_LOOP_BUDGET_MS, not counted in it: the paced
 * work's share is as with a plain fd, whatever a client sends); past it, at the next turn's top */
#define RK_LOOP_URGENT_MAX_US 5000
void rk_watch_cancel(rk_watch *w);

/* One-shot timer after ms milliseconds. Cancelling takes it out of the timer heap and frees it at
 * once (a million cancelled long timers hold no memory); cancelling from inside its own callback
 * is allowed, after it fired is not. */
rk_timer *rk_loop_timer(rk_loop *l, uint64_t ms, rk_timer_cb cb, void *ud);
void rk_timer_cancel(rk_timer *t);

/* Call cb(ud) once the current dispatch round is over (never re-entrantly). */
void rk_loop_defer(rk_loop *l, rk_defer_cb cb, void *ud);
/* The same for a ud from malloc that cb frees: the loop frees it when cb never runs (the loop is
 * freed first, e.g. at exit). */
void rk_loop_defer_owned(rk_loop *l, rk_defer_cb cb, void *ud);

/* Be told once when pid exits. Our children are reaped by the loop (SIGCHLD) and give a status;
 * any other process is watched through a pidfd and gives -1. If the child already exited and was
 * reaped before the watch was added, cb still fires (on the next round) with its status.
 * Returns < 0 if the process does not exist (ESRCH) or cannot be watched. */
int rk_loop_watch_child(rk_loop *l, pid_t pid, rk_child_cb cb, void *ud, rk_err *e);
/* Drop the watch on pid (cb will not fire). */
void rk_loop_unwatch_child(rk_loop *l, pid_t pid);

/* Handle signo (SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2) on the loop. One callback per signal. */
int rk_loop_on_signal(rk_loop *l, int signo, rk_signal_cb cb, void *ud, rk_err *e);

/* Monotonic milliseconds; rk_now_us: microseconds. */
uint64_t rk_now_ms(void);
uint64_t rk_now_us(void);
/* Wall clock seconds (for records). */
double rk_wall_time(void);

/* Loop lag: the time one turn (all the callbacks run between two epoll_wait calls) kept the loop
 * busy, during which nothing else (a timer, a container exit, an API request) could be served.
 * A turn longer than RK_LOOP_SLOW_MS is logged as a warning naming its slowest step. */
#define RK_LOOP_SLOW_MS 100
struct rk_loop_stats {
	uint64_t turns;
	uint64_t lag_last_us;		  /* the last turn */
	uint64_t lag_max_us;		  /* the longest turn since the loop started */
	uint64_t lag_recent_us;		  /* the longest turn of the last one to two minutes */
	uint64_t slow_turns;		  /* turns of RK_LOOP_SLOW_MS or more */
	char slowest[256];		  /* the slowest step of the longest turn, when it was told (rk_loop_blame) */
	size_t timers, watches, children; /* armed now */
};
void rk_loop_get_stats(rk_loop *l, struct rk_loop_stats *st);
/* Say what the current turn was doing for us microseconds ("Lua task at agent.lua:120"); the
 * longest step of a turn names a slow turn in the warning. */
void rk_loop_blame(rk_loop *l, uint64_t us, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The same, paced by the turn's budget: once a turn has run RK_LOOP_BUDGET_MS (rk_loop_set_budget;
 * 0: no budget), the paced callbacks left of the round wait for the next turn, in order, after
 * epoll_wait(0), the due timers and the rk_loop_defer callbacks (at least one paced callback runs
 * per turn). For bulk work (the resumes of 1,000 tasks ready at once), not for what answers an fd
 * (an HTTP request's dispatch: rk_loop_defer). Work that can wait (a task's resume from an fd
 * callback, a long Lua loop) asks rk_loop_over_budget and paces itself; rk_loop_turn_us is how
 * long the current turn has run. */
void rk_loop_defer_paced(rk_loop *l, rk_defer_cb cb, void *ud);
/* Paced, with a ud from malloc that cb frees (freed by the loop if cb never runs: rk_loop_defer_owned) */
void rk_loop_defer_paced_owned(rk_loop *l, rk_defer_cb cb, void *ud);
#define RK_LOOP_BUDGET_MS 20
uint64_t rk_loop_set_budget(rk_loop *l, uint64_t ms); /* -> the previous one */
/* The turn has used its budget, or an urgent watch is ready (rk_watch_set_urgent: an API request
 * waits; looked at most every RK_LOOP_URGENT_US): what can wait goes to the paced queue now, and
 * the request is served before the next paced step. */
int rk_loop_over_budget(rk_loop *l);
uint64_t rk_loop_turn_us(rk_loop *l);

/* Run until rk_loop_stop(); returns the code given to stop. */
int rk_loop_run(rk_loop *l);
void rk_loop_stop(rk_loop *l, int code);

#endif
