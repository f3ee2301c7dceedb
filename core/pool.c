/* pool.c — worker threads for blocking work (see pool.h): a mutex-protected FIFO of jobs, a
 * condition variable the workers sleep on, and an eventfd the loop watches for finished jobs. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>

/* A worker thread's slot: empty, running (started, not yet exited), or exited (to be joined). */
enum { SLOT_EMPTY, SLOT_RUNNING, SLOT_EXITED };

struct rk_pool {
	rk_loop *loop;
	pthread_mutex_t mu;
	pthread_cond_t cv;			   /* CLOCK_MONOTONIC: an idle worker's timed wait */
	struct rk_pool_job *q_head, *q_tail;	   /* waiting for a worker */
	struct rk_pool_job *done_head, *done_tail; /* finished, done callback not run yet */
	size_t queued, running;
	uint64_t finished;
	int stopping;
	int efd;
	rk_watch *w;
	unsigned max_threads, live, idle; /* live: started, not exited; idle: waiting for a job */
	unsigned idle_ms;
	uint64_t started, exited; /* threads started and exited idle since the pool was made */
	int start_failing;	  /* the last pthread_create failed (said once, until one succeeds) */
	unsigned char slot[8];
	pthread_t threads[8];
	struct worker_arg {
		rk_pool *p;
		unsigned i;
	} args[8]; /* what each slot's thread is started with */
};

static void push(struct rk_pool_job **head, struct rk_pool_job **tail, struct rk_pool_job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

static void *worker(void *arg)
{
	struct worker_arg a = *(struct worker_arg *)arg;
	rk_pool *p = a.p;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		/* Wait for a job; a worker idle for idle_ms exits (its stack goes back), unless it is
		 * the pool's last one while jobs are queued (none are when it is idle). */
		int timed_out = 0;
		while (!p->q_head && !p->stopping && !timed_out) {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += p->idle_ms / 1000;
			ts.tv_nsec += (long)(p->idle_ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			p->idle++;
			int rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
			p->idle--;
			timed_out = rc == ETIMEDOUT && !p->q_head;
		}
		struct rk_pool_job *j = p->q_head;
		if (!j) {
			if (timed_out && !p->stopping)
				p->exited++;
			break; /* stopping with nothing left to do, or idle too long */
		}
		p->q_head = j->next;
		if (!p->q_head)
			p->q_tail = NULL;
		p->queued--;
		p->running++;
		pthread_mutex_unlock(&p->mu);
		j->work(j->ud);
		pthread_mutex_lock(&p->mu);
		p->running--;
		p->finished++;
		push(&p->done_head, &p->done_tail, j);
		uint64_t one = 1;
		/* cannot fail short of a counter overflow; the loop reads it to zero every round */
		if (write(p->efd, &one, sizeof one) < 0)
			(void)0;
	}
	p->live--;
	p->slot[a.i] = SLOT_EXITED; /* joined by the next start in this slot, or by rk_pool_free */
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Run the done callbacks of every finished job, oldest first. */
static void run_done(rk_pool *p, int cancelled)
{
	pthread_mutex_lock(&p->mu);
	struct rk_pool_job *j = p->done_head;
	p->done_head = p->done_tail = NULL;
	pthread_mutex_unlock(&p->mu);
	while (j) {
		struct rk_pool_job *next = j->next;
		if (j->done)
			j->done(j->ud, cancelled);
		j = next;
	}
}

static void efd_ready(void *ud, int fd, uint32_t events)
{
	uint64_t n;
	if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
		rk_warn("pool", "cannot read the worker pool's eventfd: %s", strerror(errno));
	run_done(ud, 0);
}

rk_pool *rk_pool_new(rk_loop *l, unsigned nthreads, rk_err *e)
{
	if (nthreads == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		nthreads = cpus < 2 ? 2 : cpus > 4 ? 4 : (unsigned)cpus;
	}
	if (nthreads > sizeof((rk_pool *)0)->threads / sizeof(pthread_t))
		nthreads = sizeof((rk_pool *)0)->threads / sizeof(pthread_t);
	rk_pool *p = calloc(1, sizeof *p);
	if (!p) {
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	p->loop = l;
	p->max_threads = nthreads;
	p->idle_ms = RK_POOL_IDLE_MS;
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		rk_errf(e, errno, "cannot create the worker pool's eventfd: %s", strerror(errno));
		pthread_cond_destroy(&p->cv);
		free(p);
		return NULL;
	}
	p->w = rk_loop_watch_fd(l, p->efd, EPOLLIN, efd_ready, p, e);
	if (!p->w) {
		close(p->efd);
		pthread_cond_destroy(&p->cv);
		free(p);
		return NULL;
	}
	return p;
}

void rk_pool_set_idle_ms(rk_pool *p, unsigned ms)
{
	pthread_mutex_lock(&p->mu);
	p->idle_ms = ms ? ms : 1;
	pthread_cond_broadcast(&p->cv); /* idle workers wait again with the new time */
	pthread_mutex_unlock(&p->mu);
}

/* With p->mu held: start one more worker if every live one is busy and there is room. A worker
 * that cannot be started leaves the job queued for the live ones; with none live, the caller
 * (rk_pool_submit) runs it on the loop thread rather than lose it. */
static void start_worker(rk_pool *p)
{
	if (p->idle >= p->queued || p->live >= p->max_threads)
		return;
	unsigned i = 0;
	while (i < p->max_threads && p->slot[i] == SLOT_RUNNING)
		i++;
	if (i == p->max_threads)
		return;
	if (p->slot[i] == SLOT_EXITED) /* it has left the pool's lock for good: this join is short */
		pthread_join(p->threads[i], NULL);
	p->slot[i] = SLOT_EMPTY;
	p->args[i] = (struct worker_arg){p, i};
	/* Threads inherit the creator's signal mask: start them with every signal blocked, so a
	 * signal riklet handles (SIGUSR1 ...) never lands on a worker with its default action. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&p->threads[i], NULL, worker, &p->args[i]);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		if (!p->start_failing)
			rk_warn("pool",
				"cannot start a worker thread (%s) with %u running: %s; raise the limit on "
				"threads (ulimit -u, systemd's TasksMax, the pids cgroup's pids.max)",
				strerror(rc), p->live,
				p->live ? "file-system work waits for the running ones"
					: "file-system work runs on the event loop meanwhile (riklet stalls during "
					  "each job)");
		p->start_failing = 1;
		return;
	}
	if (p->start_failing)
		rk_info("pool", "worker threads start again");
	p->start_failing = 0;
	p->slot[i] = SLOT_RUNNING;
	p->live++;
	p->started++;
}

void rk_pool_submit(rk_pool *p, struct rk_pool_job *j)
{
	pthread_mutex_lock(&p->mu);
	push(&p->q_head, &p->q_tail, j);
	p->queued++;
	start_worker(p);
	int none = p->live == 0;
	if (none) { /* no thread could be started: do it here (blocking), never drop it */
		p->q_head = j->next;
		if (!p->q_head)
			p->q_tail = NULL;
		p->queued--;
	} else {
		pthread_cond_signal(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	if (none) {
		j->work(j->ud);
		pthread_mutex_lock(&p->mu);
		p->finished++;
		push(&p->done_head, &p->done_tail, j);
		pthread_mutex_unlock(&p->mu);
		uint64_t one = 1;
		if (write(p->efd, &one, sizeof one) < 0)
			(void)0;
	}
}

void rk_pool_stats(rk_pool *p, struct rk_pool_stats *st)
{
	pthread_mutex_lock(&p->mu);
	*st = (struct rk_pool_stats){p->live,	     p->queued,	 p->running, p->finished,
				     p->max_threads, p->started, p->exited};
	pthread_mutex_unlock(&p->mu);
}

void rk_pool_free(rk_pool *p)
{
	if (!p)
		return;
	unsigned char started[8];
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cv);
	memcpy(started, p->slot, sizeof started); /* running or exited: to join */
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->max_threads; i++)
		if (started[i] != SLOT_EMPTY)
			pthread_join(p->threads[i], NULL);
	run_done(p, 1);
	rk_watch_cancel(p->w);
	close(p->efd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
