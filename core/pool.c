/* pool.c — worker threads for blocking work (see pool.h): a mutex-protected FIFO of jobs, a
 * condition variable the workers sleep on, and an eventfd the loop watches for finished jobs. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>

struct rk_pool {
	rk_loop *loop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rk_pool_job *q_head, *q_tail;	   /* waiting for a worker */
	struct rk_pool_job *done_head, *done_tail; /* finished, done callback not run yet */
	size_t queued, running;
	uint64_t finished;
	int stopping;
	int efd;
	rk_watch *w;
	unsigned nthreads;
	pthread_t threads[8];
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
	rk_pool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->q_head && !p->stopping)
			pthread_cond_wait(&p->cv, &p->mu);
		struct rk_pool_job *j = p->q_head;
		if (!j)
			break; /* stopping and nothing left to do */
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
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		rk_errf(e, errno, "cannot create the worker pool's eventfd: %s", strerror(errno));
		free(p);
		return NULL;
	}
	p->w = rk_loop_watch_fd(l, p->efd, EPOLLIN, efd_ready, p, e);
	if (!p->w) {
		close(p->efd);
		free(p);
		return NULL;
	}
	/* Threads inherit the creator's signal mask: start them with every signal blocked, so a
	 * signal riklet handles later (SIGUSR1 ...) never lands on a worker with its default action. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < nthreads; i++) {
		int rc = pthread_create(&p->threads[i], NULL, worker, p);
		if (rc) {
			if (i == 0) {
				pthread_sigmask(SIG_SETMASK, &old, NULL);
				rk_watch_cancel(p->w);
				close(p->efd);
				free(p);
				rk_errf(e, rc, "cannot start a worker thread: %s", strerror(rc));
				return NULL;
			}
			rk_warn("pool", "started %u of %u worker threads (%s)", i, nthreads, strerror(rc));
			break;
		}
		p->nthreads = i + 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return p;
}

void rk_pool_submit(rk_pool *p, struct rk_pool_job *j)
{
	pthread_mutex_lock(&p->mu);
	push(&p->q_head, &p->q_tail, j);
	p->queued++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void rk_pool_stats(rk_pool *p, struct rk_pool_stats *st)
{
	pthread_mutex_lock(&p->mu);
	*st = (struct rk_pool_stats){p->nthreads, p->queued, p->running, p->finished};
	pthread_mutex_unlock(&p->mu);
}

void rk_pool_free(rk_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	run_done(p, 1);
	rk_watch_cancel(p->w);
	close(p->efd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
