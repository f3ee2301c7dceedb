/* pool.h — a few worker threads for blocking work (fsync, recursive removal), so the loop thread
 * never waits on a disk. Shaped like libuv's threadpool: one FIFO job queue, N threads, and
 * completions signalled to the loop through an eventfd; every done callback runs on the loop
 * thread, in the order the jobs finished.
 *
 * A work function runs on a worker thread: it may touch only its own job data (no loop, no Lua, no
 * libiptc, nothing else that is not thread-safe). Workers block every signal, so signals keep
 * going to the loop's signalfd. */
#ifndef RK_POOL_H
#define RK_POOL_H

#include <stddef.h>
#include <stdint.h>
#include "loop.h"

typedef struct rk_pool rk_pool;

typedef void (*rk_work_fn)(void *ud);
/* On the loop thread once work(ud) has returned. cancelled is 1 only from rk_pool_free: the loop
 * is shutting down, so only free ud (the work itself has still run to its end). */
typedef void (*rk_done_fn)(void *ud, int cancelled);

/* nthreads 0: the default (the number of CPUs, clamped to 2..4). No thread runs at first: a
 * submit starts one when every live worker is busy (up to nthreads), and a worker idle for
 * RK_POOL_IDLE_MS exits (an idle riklet holds no worker stacks). */
rk_pool *rk_pool_new(rk_loop *l, unsigned nthreads, rk_err *e);
#define RK_POOL_IDLE_MS 2000
/* How long a worker waits for a job before it exits (tests make it short). */
void rk_pool_set_idle_ms(rk_pool *p, unsigned ms);

/* A job: the caller owns the memory (usually embedded in its own request struct) and keeps it
 * until done runs, so submitting never fails. */
struct rk_pool_job {
	rk_work_fn work;
	rk_done_fn done;
	void *ud;
	struct rk_pool_job *next; /* the pool's */
};
/* Queue work(ud); done(ud, 0) runs on the loop thread after it. Should no worker thread run and
 * none start (pthread_create failing), work runs here, on the loop thread. */
void rk_pool_submit(rk_pool *p, struct rk_pool_job *j);

struct rk_pool_stats {
	unsigned threads;  /* live now */
	size_t queued;	   /* waiting for a worker */
	size_t running;	   /* on a worker now */
	uint64_t finished; /* jobs completed since the pool started */
	unsigned max_threads;
	uint64_t started, exited; /* threads started, and exited after idling, since then */
};
void rk_pool_stats(rk_pool *p, struct rk_pool_stats *st);

/* Let the workers finish every queued job (a record being written is still written), join them,
 * call the outstanding done callbacks with cancelled = 1, and free the pool. */
void rk_pool_free(rk_pool *p);

#endif
