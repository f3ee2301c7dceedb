/* loop.c — the one event loop (see loop.h): epoll for fds, a min-heap of timers driving the epoll
 * timeout, signalfd for signals, SIGCHLD reaping (we are a child subreaper) dispatched by pid,
 * pidfd for processes that are not our children, and a deferred-callback queue. */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

struct rk_watch {
	rk_loop *loop;
	int fd;
	rk_fd_cb cb;
	void *ud;
	int dead;
	int urgent;	 /* in the loop's urgent set (rk_watch_set_urgent) */
	uint32_t events; /* as last asked */
	struct rk_watch *next_dead;
	struct rk_watch *prev, *next; /* every live watch, so rk_loop_free frees them all */
};

#define NOT_IN_HEAP SIZE_MAX
struct rk_timer {
	uint64_t due;
	uint64_t order; /* FIFO among equal due times */
	rk_timer_cb cb;
	void *ud;
	size_t idx; /* position in the heap; NOT_IN_HEAP while its callback runs */
	rk_loop *loop;
	int cancelled;
};

struct child {
	pid_t pid;
	rk_child_cb cb;
	void *ud;
	int pidfd; /* >= 0 when watched through a pidfd (not our child) */
	rk_watch *watch;
	struct child *next;
};

/* Exits reaped before anyone watched them (e.g. a container's init that died right after start). */
#define UNCLAIMED_MAX 256
struct unclaimed {
	pid_t pid;
	int status;
};

struct deferred {
	rk_defer_cb cb;
	void *ud;
	int owned; /* ud is free()d by the loop when it never runs (rk_loop_defer_owned) */
	struct deferred *next;
};

struct rk_loop {
	int epfd;
	int sigfd;
	sigset_t sigs;
	rk_signal_cb sig_cb[65];
	void *sig_ud[65];
	rk_timer **heap;
	size_t nheap, capheap;
	uint64_t timer_order;
	struct child *children;
	struct unclaimed unclaimed[UNCLAIMED_MAX];
	size_t nunclaimed;
	struct deferred *dq_head, *dq_tail;
	struct deferred *pq_head, *pq_tail; /* paced: run within the turn's budget */
	struct rk_watch *dead_watches;
	struct rk_watch *watches;
	int stopped, stop_code;
	/* loop lag: how long one turn (everything between two epoll_wait calls) kept the loop busy */
	struct rk_loop_stats st;
	uint64_t window_start, window_max, prev_window_max;
	char blame[256]; /* the slowest step of the current turn, as told by rk_loop_blame */
	uint64_t blame_us;
	uint64_t turn_start_us;	 /* when the current turn began (epoll_wait returned) */
	uint64_t turn_cpu_us;	 /* the loop thread's CPU time then ... */
	uint64_t turn_delay_us;	 /* ... and its wait for a CPU so far (thread_times) */
	int schedstat_fd;	 /* /proc/thread-self/schedstat, or -1 */
	uint64_t budget_us;	 /* a turn's budget for deferred work (0: none) */
	int urg_epfd;		 /* the urgent watches (an API request): served between paced steps too */
	uint64_t urg_checked_us; /* when they were last looked at during paced work */
	int in_urgent;		 /* serving them (no nested serving) */
	uint64_t urg_peeked_us;	 /* rk_loop_over_budget's last look (urgent_waiting) ... */
	int urg_seen;		 /* ... and what it saw */
	uint64_t urg_spent_us;	 /* the turn's time serving them between paced steps (serve_urgent) */
};

uint64_t rk_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The loop thread's time on a CPU and waiting on a run queue, microseconds, from its schedstat
 * (fd open on /proc/thread-self/schedstat: one read per turn); without it, the CPU time only. */
static void thread_times(int fd, uint64_t *cpu_us, uint64_t *delay_us)
{
	char b[96];
	unsigned long long run_ns, delay_ns;
	ssize_t n = fd >= 0 ? pread(fd, b, sizeof b - 1, 0) : -1;
	if (n > 0) {
		b[n] = 0;
		if (sscanf(b, "%llu %llu", &run_ns, &delay_ns) == 2) {
			*cpu_us = run_ns / 1000u;
			*delay_us = delay_ns / 1000u;
			return;
		}
	}
	struct timespec ts;
	*cpu_us = clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0
		? 0
		: (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	*delay_us = 0;
}

uint64_t rk_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

double rk_wall_time(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- timers: binary min-heap on (due, order) ---- */
static int tless(rk_timer *a, rk_timer *b)
{
	return a->due < b->due || (a->due == b->due && a->order < b->order);
}

static void heap_up(rk_loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!tless(l->heap[i], l->heap[p]))
			break;
		rk_timer *t = l->heap[i];
		l->heap[i] = l->heap[p];
		l->heap[p] = t;
		l->heap[i]->idx = i;
		t->idx = p;
		i = p;
	}
}

static void heap_down(rk_loop *l, size_t i)
{
	for (;;) {
		size_t a = 2 * i + 1, b = a + 1, m = i;
		if (a < l->nheap && tless(l->heap[a], l->heap[m]))
			m = a;
		if (b < l->nheap && tless(l->heap[b], l->heap[m]))
			m = b;
		if (m == i)
			break;
		rk_timer *t = l->heap[i];
		l->heap[i] = l->heap[m];
		l->heap[m] = t;
		l->heap[i]->idx = i;
		t->idx = m;
		i = m;
	}
}

/* Take the timer at i out of the heap; the array shrinks when it is mostly empty, so a burst of
 * long timers that were cancelled gives its memory back. */
static rk_timer *heap_remove(rk_loop *l, size_t i)
{
	rk_timer *t = l->heap[i];
	l->nheap--;
	if (i != l->nheap) {
		l->heap[i] = l->heap[l->nheap];
		l->heap[i]->idx = i;
		heap_down(l, i);
		heap_up(l, i);
	}
	t->idx = NOT_IN_HEAP;
	if (l->capheap > 256 && l->nheap < l->capheap / 4) {
		rk_timer **nh = realloc(l->heap, l->capheap / 2 * sizeof *nh);
		if (nh) {
			l->heap = nh;
			l->capheap /= 2;
		}
	}
	return t;
}

static rk_timer *heap_pop(rk_loop *l)
{
	return heap_remove(l, 0);
}

rk_timer *rk_loop_timer(rk_loop *l, uint64_t ms, rk_timer_cb cb, void *ud)
{
	if (l->nheap == l->capheap) {
		size_t nc = l->capheap ? l->capheap * 2 : 64;
		rk_timer **nh = realloc(l->heap, nc * sizeof *nh);
		if (!nh)
			return NULL;
		l->heap = nh;
		l->capheap = nc;
	}
	rk_timer *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->due = rk_now_ms() + ms;
	t->order = l->timer_order++;
	t->cb = cb;
	t->ud = ud;
	t->loop = l;
	t->idx = l->nheap;
	l->heap[l->nheap++] = t;
	heap_up(l, l->nheap - 1);
	return t;
}

void rk_timer_cancel(rk_timer *t)
{
	if (!t || t->cancelled)
		return;
	t->cancelled = 1;
	if (t->idx != NOT_IN_HEAP)
		free(heap_remove(t->loop, t->idx)); /* out of the heap and its memory back at once */
						    /* else its callback is running: run_timers frees it afterwards */
}

/* ---- deferred ---- */
static void defer(rk_loop *l, rk_defer_cb cb, void *ud, int owned, int paced)
{
	struct deferred *d = malloc(sizeof *d);
	if (!d) {
		rk_error("loop", "out of memory queueing a deferred callback");
		if (owned)
			free(ud);
		return;
	}
	d->cb = cb;
	d->ud = ud;
	d->owned = owned;
	d->next = NULL;
	struct deferred **head = paced ? &l->pq_head : &l->dq_head, **tail = paced ? &l->pq_tail : &l->dq_tail;
	if (*tail)
		(*tail)->next = d;
	else
		*head = d;
	*tail = d;
}

void rk_loop_defer(rk_loop *l, rk_defer_cb cb, void *ud)
{
	defer(l, cb, ud, 0, 0);
}

void rk_loop_defer_owned(rk_loop *l, rk_defer_cb cb, void *ud)
{
	defer(l, cb, ud, 1, 0);
}

void rk_loop_defer_paced(rk_loop *l, rk_defer_cb cb, void *ud)
{
	defer(l, cb, ud, 0, 1);
}

void rk_loop_defer_paced_owned(rk_loop *l, rk_defer_cb cb, void *ud)
{
	defer(l, cb, ud, 1, 1);
}

/* ---- fd watches ---- */
rk_watch *rk_loop_watch_fd(rk_loop *l, int fd, uint32_t events, rk_fd_cb cb, void *ud, rk_err *e)
{
	rk_watch *w = calloc(1, sizeof *w);
	if (!w) {
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	w->loop = l;
	w->fd = fd;
	w->cb = cb;
	w->ud = ud;
	w->events = events;
	struct epoll_event ev = {.events = events, .data.ptr = w};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		rk_errf(e, errno, "cannot watch fd %d: %s", fd, strerror(errno));
		free(w);
		return NULL;
	}
	w->next = l->watches;
	if (l->watches)
		l->watches->prev = w;
	l->watches = w;
	return w;
}

static int watch_epfd(rk_watch *w)
{
	return w->urgent ? w->loop->urg_epfd : w->loop->epfd;
}

int rk_watch_modify(rk_watch *w, uint32_t events, rk_err *e)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};
	if (epoll_ctl(watch_epfd(w), EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return rk_errf(e, errno, "cannot change the watch on fd %d: %s", w->fd, strerror(errno));
	w->events = events;
	return 0;
}

int rk_watch_set_urgent(rk_watch *w, rk_err *e)
{
	if (w->urgent)
		return 0;
	rk_loop *l = w->loop;
	struct epoll_event ev = {.events = w->events, .data.ptr = w};
	if (epoll_ctl(l->urg_epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0)
		return rk_errf(e, errno, "cannot watch fd %d among the urgent ones: %s", w->fd, strerror(errno));
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->urgent = 1;
	return 0;
}

void rk_watch_cancel(rk_watch *w)
{
	if (!w || w->dead)
		return;
	/* The fd may already be closed by its owner; EBADF/ENOENT are fine then. */
	epoll_ctl(watch_epfd(w), EPOLL_CTL_DEL, w->fd, NULL);
	if (w->prev)
		w->prev->next = w->next;
	else
		w->loop->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->dead = 1;
	w->next_dead = w->loop->dead_watches; /* freed after the current dispatch round */
	w->loop->dead_watches = w;
}

/* ---- children ---- */
static struct child **child_find(rk_loop *l, pid_t pid)
{
	for (struct child **pc = &l->children; *pc; pc = &(*pc)->next)
		if ((*pc)->pid == pid)
			return pc;
	return NULL;
}

static void child_free(struct child *c)
{
	if (c->watch)
		rk_watch_cancel(c->watch);
	if (c->pidfd >= 0)
		close(c->pidfd);
	free(c);
}

static void child_fire(rk_loop *l, pid_t pid, int status)
{
	struct child **pc = child_find(l, pid);
	if (!pc) {
		/* Nobody watches it (yet): remember the status for a watch added later. */
		if (l->nunclaimed == UNCLAIMED_MAX) {
			memmove(l->unclaimed, l->unclaimed + 1, (UNCLAIMED_MAX - 1) * sizeof l->unclaimed[0]);
			l->nunclaimed--;
		}
		l->unclaimed[l->nunclaimed++] = (struct unclaimed){pid, status};
		return;
	}
	struct child *c = *pc;
	*pc = c->next;
	rk_child_cb cb = c->cb;
	void *ud = c->ud;
	child_free(c);
	cb(ud, pid, status);
}

static void reap_all(rk_loop *l)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG | __WALL);
		if (pid <= 0)
			break;
		child_fire(l, pid, st);
	}
}

static void pidfd_ready(void *ud, int fd, uint32_t events)
{
	struct child *c = ud;
	rk_loop *l = c->watch->loop;
	pid_t pid = c->pid;
	/* It may have become our child meanwhile (reparented to us): then reap for a real status. */
	int st;
	pid_t r = waitpid(pid, &st, WNOHANG | __WALL);
	child_fire(l, pid, r == pid ? st : -1);
}

struct late_exit {
	rk_loop *loop;
	pid_t pid;
	int status;
};

static void fire_late(void *ud)
{
	struct late_exit *le = ud;
	child_fire(le->loop, le->pid, le->status);
	free(le);
}

int rk_loop_watch_child(rk_loop *l, pid_t pid, rk_child_cb cb, void *ud, rk_err *e)
{
	if (pid <= 0)
		return rk_errf(e, EINVAL, "cannot watch pid %d", (int)pid);
	if (child_find(l, pid))
		return rk_errf(e, EEXIST, "pid %d is already watched", (int)pid);
	struct child *c = calloc(1, sizeof *c);
	if (!c)
		return rk_errf(e, ENOMEM, "out of memory");
	c->pid = pid;
	c->cb = cb;
	c->ud = ud;
	c->pidfd = -1;
	for (size_t i = 0; i < l->nunclaimed; i++) {
		if (l->unclaimed[i].pid != pid)
			continue;
		struct late_exit *le = malloc(sizeof *le);
		if (!le) {
			free(c);
			return rk_errf(e, ENOMEM, "out of memory");
		}
		*le = (struct late_exit){l, pid, l->unclaimed[i].status};
		memmove(l->unclaimed + i, l->unclaimed + i + 1, (l->nunclaimed - i - 1) * sizeof l->unclaimed[0]);
		l->nunclaimed--;
		c->next = l->children;
		l->children = c;
		rk_loop_defer(l, fire_late, le);
		return 0;
	}
	siginfo_t si = {0};
	int is_child = waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0;
	if (!is_child) {
		int fd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (fd < 0) {
			int err = errno;
			free(c);
			return rk_errf(e, err, "cannot watch process %d: %s", (int)pid,
				       err == ESRCH ? "no such process (it has already exited)" : strerror(err));
		}
		c->pidfd = fd;
		c->watch = rk_loop_watch_fd(l, fd, EPOLLIN, pidfd_ready, c, e);
		if (!c->watch) {
			close(fd);
			free(c);
			return -1;
		}
	}
	c->next = l->children;
	l->children = c;
	if (is_child && si.si_pid == pid)
		reap_all(l); /* already a zombie: reaping now fires the callback */
	return 0;
}

void rk_loop_unwatch_child(rk_loop *l, pid_t pid)
{
	struct child **pc = child_find(l, pid);
	if (!pc)
		return;
	struct child *c = *pc;
	*pc = c->next;
	child_free(c);
}

/* ---- signals ---- */
int rk_loop_on_signal(rk_loop *l, int signo, rk_signal_cb cb, void *ud, rk_err *e)
{
	if (signo <= 0 || signo > 64 || signo == SIGCHLD)
		return rk_errf(e, EINVAL, "cannot handle signal %d on the loop", signo);
	if (!sigismember(&l->sigs, signo)) {
		sigaddset(&l->sigs, signo);
		if (sigprocmask(SIG_BLOCK, &l->sigs, NULL) < 0 || signalfd(l->sigfd, &l->sigs, SFD_CLOEXEC) < 0)
			return rk_errf(e, errno, "cannot route signal %d to the loop: %s", signo, strerror(errno));
	}
	l->sig_cb[signo] = cb;
	l->sig_ud[signo] = ud;
	return 0;
}

static void signal_ready(void *ud, int fd, uint32_t events)
{
	rk_loop *l = ud;
	struct signalfd_siginfo si;
	while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
		int s = (int)si.ssi_signo;
		if (s == SIGCHLD)
			reap_all(l);
		else if (s > 0 && s <= 64 && l->sig_cb[s])
			l->sig_cb[s](l->sig_ud[s], s);
		else if (s == SIGINT || s == SIGTERM)
			rk_loop_stop(l, 128 + s);
	}
}

static void urgent_ready(void *ud, int fd, uint32_t events);

rk_loop *rk_loop_new(rk_err *e)
{
	rk_loop *l = calloc(1, sizeof *l);
	if (!l) {
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	l->budget_us = RK_LOOP_BUDGET_MS * 1000u;
	l->turn_start_us = rk_now_us();
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		rk_errf(e, errno, "epoll_create1: %s", strerror(errno));
		free(l);
		return NULL;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		rk_warn("loop",
			"cannot become a child subreaper (%s): exits of detached containers will be "
			"seen through pidfds without an exit code",
			strerror(errno));
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&l->sigs);
	sigaddset(&l->sigs, SIGCHLD);
	sigaddset(&l->sigs, SIGINT);
	sigaddset(&l->sigs, SIGTERM);
	sigaddset(&l->sigs, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &l->sigs, NULL) < 0 ||
	    (l->sigfd = signalfd(-1, &l->sigs, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		rk_errf(e, errno, "signalfd: %s", strerror(errno));
		close(l->epfd);
		free(l);
		return NULL;
	}
	l->schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	l->urg_epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->urg_epfd < 0)
		rk_errf(e, errno, "epoll_create1: %s", strerror(errno));
	if (l->urg_epfd < 0 || !rk_loop_watch_fd(l, l->sigfd, EPOLLIN, signal_ready, l, e) ||
	    !rk_loop_watch_fd(l, l->urg_epfd, EPOLLIN, urgent_ready, l, e)) {
		rk_watch *w = l->watches;
		while (w) {
			rk_watch *next = w->next;
			free(w);
			w = next;
		}
		if (l->urg_epfd >= 0)
			close(l->urg_epfd);
		if (l->schedstat_fd >= 0)
			close(l->schedstat_fd);
		close(l->sigfd);
		close(l->epfd);
		free(l);
		return NULL;
	}
	return l;
}

static void free_dead(rk_loop *l)
{
	while (l->dead_watches) {
		rk_watch *w = l->dead_watches;
		l->dead_watches = w->next_dead;
		free(w);
	}
}

/* Is an urgent watch ready (an API request waiting)? Looked at most every RK_LOOP_URGENT_US. */
static int urgent_waiting(rk_loop *l, uint64_t now)
{
	if (l->in_urgent || l->urg_spent_us >= RK_LOOP_URGENT_MAX_US)
		return 0; /* (past its share: served at the next turn's top, as a plain fd) */
	if (now - l->urg_peeked_us >= RK_LOOP_URGENT_US) {
		struct epoll_event ev;
		l->urg_peeked_us = now;
		l->urg_seen = epoll_wait(l->urg_epfd, &ev, 1, 0) > 0;
	}
	return l->urg_seen;
}

/* Has the turn's deferred work used its budget? The time spent serving urgent watches between
 * paced steps (at most RK_LOOP_URGENT_MAX_US a turn) is not the paced work's: it gets its budget
 * as with no urgent watch, however busy a client keeps the API. */
static int budget_used(rk_loop *l, uint64_t now)
{
	return l->budget_us && now - l->turn_start_us - l->urg_spent_us >= l->budget_us;
}

int rk_loop_over_budget(rk_loop *l)
{
	uint64_t now = rk_now_us();
	return budget_used(l, now) || urgent_waiting(l, now);
}

uint64_t rk_loop_turn_us(rk_loop *l)
{
	return rk_now_us() - l->turn_start_us;
}

uint64_t rk_loop_set_budget(rk_loop *l, uint64_t ms)
{
	uint64_t was = l->budget_us / 1000u;
	l->budget_us = ms * 1000u;
	return was;
}

static void dispatch(rk_loop *l, struct epoll_event *evs, int n)
{
	for (int i = 0; i < n && !l->stopped; i++) {
		rk_watch *w = evs[i].data.ptr;
		if (!w->dead)
			w->cb(w->ud, w->fd, evs[i].events);
	}
}

/* The urgent set is ready (seen by the turn's epoll_wait): serve it like any fd. */
static void urgent_ready(void *ud, int fd, uint32_t events)
{
	rk_loop *l = ud;
	struct epoll_event evs[16];
	int n = epoll_wait(l->urg_epfd, evs, 16, 0);
	if (n > 0)
		dispatch(l, evs, n);
}

static void run_timers(rk_loop *l);
static int run_queue(rk_loop *l, struct deferred **head, struct deferred **tail, int paced);

/* Between two paced callbacks, every RK_LOOP_URGENT_US: serve the urgent watches that are ready,
 * then what they asked for at once (an HTTP request's dispatch, rk_loop_defer; the answer's send,
 * a timer due now: the timers due are run too), so a request waits for the paced step that runs
 * and a millisecond, not for the rest of the turn's budget and then the next turn's (two budgets:
 * the dispatch ran at the top of the next turn, the send after its paced work). */
static void serve_urgent(rk_loop *l, uint64_t now)
{
	l->urg_checked_us = now;
	l->urg_seen = 0;
	if (l->in_urgent || l->stopped || l->urg_spent_us >= RK_LOOP_URGENT_MAX_US)
		return;
	l->in_urgent = 1;
	/* a few passes: an answer given at once makes the fds ready again (MHD's resume, the send);
	 * no pass begins once the turn's share is spent (a client keeping the API busy: a pass of 2 ms
	 * after every paced step of 1 ms gave the paced work a tenth of the loop, test_loop) */
	for (int pass = 0; pass < 4 && !l->stopped && l->urg_spent_us + (rk_now_us() - now) < RK_LOOP_URGENT_MAX_US;
	     pass++) {
		struct epoll_event evs[16];
		int n = epoll_wait(l->urg_epfd, evs, 16, 0);
		if (n > 0)
			dispatch(l, evs, n);
		else if (!l->dq_head && !(l->nheap && l->heap[0]->due <= rk_now_ms()))
			break; /* nothing ready, queued ahead or due (a resumed request's send is a timer) */
		if (!l->stopped)
			run_queue(l, &l->dq_head, &l->dq_tail, 0);
		if (!l->stopped)
			run_timers(l);
		free_dead(l);
	}
	l->urg_spent_us += rk_now_us() - now;
	l->in_urgent = 0;
}

/* Run the callbacks of a queue that were queued before this round; callbacks may queue more for
 * the next round. paced: once the turn has used its budget, what is left of the round waits for
 * the next turn, ahead of what this round queued (round robin: fds, timers and the other queue are
 * served in between); at least one callback runs per turn, so the queue always moves. */
static int run_queue(rk_loop *l, struct deferred **head, struct deferred **tail, int paced)
{
	struct deferred *d = *head, *last = *tail;
	*head = *tail = NULL;
	int n = 0;
	while (d) {
		if (paced) {
			uint64_t now = rk_now_us();
			if (n > 0 && budget_used(l, now)) {
				last->next = *head;
				if (!*head)
					*tail = last;
				*head = d;
				break;
			}
			if (l->urg_seen || now - l->urg_checked_us >= RK_LOOP_URGENT_US)
				serve_urgent(l, now);
		}
		struct deferred *next = d->next;
		d->cb(d->ud);
		free(d);
		d = next;
		n++;
	}
	return n;
}

static void run_timers(rk_loop *l)
{
	uint64_t now = rk_now_ms();
	while (l->nheap && l->heap[0]->due <= now) {
		rk_timer *t = heap_pop(l);
		t->cb(t->ud); /* a cancelled timer is not in the heap any more */
		free(t);
		if (l->stopped)
			break;
	}
}

void rk_loop_blame(rk_loop *l, uint64_t us, const char *fmt, ...)
{
	if (us <= l->blame_us)
		return;
	l->blame_us = us;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->blame, sizeof l->blame, fmt, ap);
	va_end(ap);
}

/* One turn is over (the loop is about to wait again): account how long it kept the loop busy. */
static void turn_done(rk_loop *l, uint64_t start)
{
	uint64_t now = rk_now_us(), us = now - start;
	struct rk_loop_stats *st = &l->st;
	st->turns++;
	st->lag_last_us = us;
	if (now - l->window_start > 60u * 1000000u) {
		l->prev_window_max = l->window_max;
		l->window_max = 0;
		l->window_start = now;
	}
	if (us > l->window_max)
		l->window_max = us;
	st->lag_recent_us = l->window_max > l->prev_window_max ? l->window_max : l->prev_window_max;
	if (us > st->lag_max_us) {
		st->lag_max_us = us;
		snprintf(st->slowest, sizeof st->slowest, "%s", l->blame_us ? l->blame : "");
	}
	if (us >= RK_LOOP_SLOW_MS * 1000u) {
		st->slow_turns++;
		/* where the time went: riklet's thread ran, waited for a CPU (a loaded node), or was
		 * blocked in a system call (a lock in the kernel, a disk) */
		uint64_t cpu, delay;
		char where[160];
		thread_times(l->schedstat_fd, &cpu, &delay);
		cpu -= l->turn_cpu_us;
		delay -= l->turn_delay_us;
		if (l->schedstat_fd >= 0)
			snprintf(where, sizeof where,
				 "riklet ran %llu ms of it, waited %llu ms for a CPU and %llu ms in system calls",
				 (unsigned long long)(cpu / 1000), (unsigned long long)(delay / 1000),
				 (unsigned long long)(us > cpu + delay ? (us - cpu - delay) / 1000 : 0));
		else
			snprintf(where, sizeof where, "riklet ran %llu ms of it", (unsigned long long)(cpu / 1000));
		if (l->blame_us)
			rk_warn("loop",
				"the event loop was blocked for %llu ms (timers, container exits and API requests "
				"waited that long; %s); the longest step was %s (%llu ms)",
				(unsigned long long)(us / 1000), where, l->blame,
				(unsigned long long)(l->blame_us / 1000));
		else
			rk_warn("loop",
				"the event loop was blocked for %llu ms (timers, container exits and API requests "
				"waited that long; %s) in C code (no Lua task ran that long)",
				(unsigned long long)(us / 1000), where);
	}
	l->blame_us = 0;
	l->blame[0] = 0;
}

void rk_loop_get_stats(rk_loop *l, struct rk_loop_stats *out)
{
	*out = l->st;
	uint64_t now = rk_now_us();
	/* a quiet minute ages the recent maximum out even when no turn ran to notice */
	if (now - l->window_start > 120u * 1000000u)
		out->lag_recent_us = 0;
	else if (now - l->window_start > 60u * 1000000u)
		out->lag_recent_us = l->window_max;
	out->timers = l->nheap;
	out->watches = 0;
	for (rk_watch *w = l->watches; w; w = w->next)
		out->watches++;
	out->children = 0;
	for (struct child *c = l->children; c; c = c->next)
		out->children++;
}

int rk_loop_run(rk_loop *l)
{
	struct epoll_event evs[64];
	uint64_t start = rk_now_us();
	l->turn_start_us = start;
	l->urg_spent_us = 0;
	thread_times(l->schedstat_fd, &l->turn_cpu_us, &l->turn_delay_us);
	if (!l->window_start)
		l->window_start = start;
	/* a stop requested before the loop ran (a command that finished at once) is honoured */
	while (!l->stopped) {
		run_queue(l, &l->dq_head, &l->dq_tail, 0);
		if (!l->stopped)
			run_queue(l, &l->pq_head, &l->pq_tail, 1);
		if (l->stopped)
			break;
		int timeout = -1;
		if (l->dq_head || l->pq_head)
			timeout = 0;
		else if (l->nheap) {
			uint64_t now = rk_now_ms(), due = l->heap[0]->due;
			timeout = due <= now ? 0 : (due - now > 60000 ? 60000 : (int)(due - now));
		}
		turn_done(l, start);
		int n = epoll_wait(l->epfd, evs, 64, timeout);
		start = l->turn_start_us = rk_now_us();
		thread_times(l->schedstat_fd, &l->turn_cpu_us, &l->turn_delay_us);
		if (n < 0 && errno != EINTR) {
			rk_error("loop", "epoll_wait failed: %s", strerror(errno));
			return -1;
		}
		l->urg_checked_us = start;
		l->urg_seen = 0;
		l->urg_spent_us = 0;
		dispatch(l, evs, n);
		free_dead(l);
		if (!l->stopped)
			run_timers(l);
	}
	free_dead(l);
	turn_done(l, start); /* the turn that stopped the loop counts too */
	l->stopped = 0;	     /* the loop can be run again */
	return l->stop_code;
}

void rk_loop_stop(rk_loop *l, int code)
{
	l->stopped = 1;
	l->stop_code = code;
}

void rk_loop_free(rk_loop *l)
{
	if (!l)
		return;
	while (l->children) {
		struct child *c = l->children;
		l->children = c->next;
		child_free(c);
	}
	free_dead(l);
	while (l->watches) {
		rk_watch *w = l->watches;
		l->watches = w->next;
		free(w);
	}
	while (l->nheap)
		free(heap_pop(l));
	free(l->heap);
	while (l->dq_head || l->pq_head) {
		struct deferred **h = l->dq_head ? &l->dq_head : &l->pq_head, *d = *h;
		*h = d->next;
		if (d->owned)
			free(d->ud);
		free(d);
	}
	close(l->urg_epfd);
	if (l->schedstat_fd >= 0)
		close(l->schedstat_fd);
	close(l->sigfd);
	close(l->epfd);
	free(l);
}
