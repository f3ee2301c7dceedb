/* test_pool_hostile.c (hostile) — the worker pool's on-demand threads (core/pool.c): with an idle
 * time of 1 ms, jobs are submitted at the moment workers give up waiting and exit (every delay
 * from 0 to 3 ms, thousands of times), in bursts far over the thread cap, and beside jobs that
 * block until released. Every job must run exactly once, off the loop thread, its done callback
 * once on the loop thread; no job waits for a thread that will never come; the thread count never
 * passes the cap, and the pool ends with every thread accounted for (started = exited + live). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "loop.h"
#include "pool.h"
#include "tap.h"

static pthread_t loop_thread;
static rk_loop *L;
static rk_pool *P;

struct hjob {
	struct rk_pool_job job;
	atomic_int ran;	  /* work calls */
	int done;	  /* done calls */
	int bad_thread;	  /* work on the loop thread, or done off it */
	atomic_int *gate; /* work blocks until *gate != 0 */
};

static atomic_int max_seen; /* most threads live at once, seen from inside a job */
static int pending;	    /* jobs whose done has not run */

static void hwork(void *ud)
{
	struct hjob *j = ud;
	if (pthread_equal(pthread_self(), loop_thread))
		j->bad_thread = 1;
	atomic_fetch_add(&j->ran, 1);
	struct rk_pool_stats st;
	rk_pool_stats(P, &st);
	int m = atomic_load(&max_seen);
	while ((int)st.threads > m && !atomic_compare_exchange_weak(&max_seen, &m, (int)st.threads))
		;
	while (j->gate && !atomic_load(j->gate)) {
		struct timespec ts = {0, 1000000L};
		nanosleep(&ts, NULL);
	}
}

static void hdone(void *ud, int cancelled)
{
	struct hjob *j = ud;
	if (!pthread_equal(pthread_self(), loop_thread) || cancelled)
		j->bad_thread = 1;
	j->done++;
	if (--pending == 0)
		rk_loop_stop(L, 0);
}

static void submit(struct hjob *j, atomic_int *gate)
{
	memset(j, 0, sizeof *j);
	j->gate = gate;
	j->job = (struct rk_pool_job){.work = hwork, .done = hdone, .ud = j};
	pending++;
	rk_pool_submit(P, &j->job);
}

static void sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
	nanosleep(&ts, NULL);
}

/* a timer that gives up the wait: a job never delivered must fail the test, not hang it */
static int timed_out;
static void give_up(void *ud)
{
	timed_out = 1;
	rk_loop_stop(ud, 1);
}

static void stop0(void *ud)
{
	rk_loop_stop(ud, 0);
}

/* run the loop until every pending done ran (or 30 s) */
static int drain(void)
{
	if (pending == 0)
		return 1;
	timed_out = 0;
	rk_timer *t = rk_loop_timer(L, 30000, give_up, L);
	rk_loop_run(L);
	if (!timed_out)
		rk_timer_cancel(t);
	return !timed_out;
}

static int check(struct hjob *js, int n, const char *what)
{
	int bad = 0;
	for (int i = 0; i < n; i++)
		if (atomic_load(&js[i].ran) != 1 || js[i].done != 1 || js[i].bad_thread) {
			if (!bad)
				printf("# %s: job %d ran %d times, done %d times, wrong thread %d\n", what, i,
				       atomic_load(&js[i].ran), js[i].done, js[i].bad_thread);
			bad++;
		}
	return bad;
}

int main(void)
{
	rk_err e = {0};
	loop_thread = pthread_self();
	L = rk_loop_new(&e);
	ok(L != NULL, "loop: %s", e.msg);
	P = rk_pool_new(L, 3, &e);
	ok(P != NULL, "pool of 3: %s", e.msg);
	rk_pool_set_idle_ms(P, 1);
	struct rk_pool_stats st;

	/* 1. one job at a time, each after a delay that sweeps the moment the idle worker exits */
	enum { ROUNDS = 3000 };
	static struct hjob one[ROUNDS];
	int lost = 0;
	for (int i = 0; i < ROUNDS; i++) {
		submit(&one[i], NULL);
		if (!drain()) {
			lost++;
			break;
		}
		sleep_us(i % 31 * 100); /* 0 .. 3.0 ms: before, at and after the 1 ms idle exit */
	}
	is_int(lost, 0, "%d jobs submitted 0-3 ms after the last one ended (idle exit 1 ms): none waits forever",
	       ROUNDS);
	is_int(check(one, ROUNDS, "one at a time"), 0, "each ran once on a worker, its done once on the loop");
	rk_pool_stats(P, &st);
	ok(st.started >= 100 && st.exited >= 100, "workers came and went meanwhile (%llu started, %llu exited)",
	   (unsigned long long)st.started, (unsigned long long)st.exited);

	/* 2. bursts of 200 jobs, 50 times, some while the workers of the last burst are exiting */
	static struct hjob burst[200];
	int bad = 0;
	lost = 0;
	for (int r = 0; r < 50 && !lost; r++) {
		for (int i = 0; i < 200; i++)
			submit(&burst[i], NULL);
		if (!drain())
			lost++;
		bad += check(burst, 200, "burst");
		sleep_us(r % 5 * 500);
	}
	is_int(lost, 0, "50 bursts of 200 jobs on 3 threads: every burst finished");
	is_int(bad, 0, "each job of each burst ran once, done once");
	ok(atomic_load(&max_seen) <= 3, "never more than 3 threads live (most seen: %d)", atomic_load(&max_seen));

	/* 3. two jobs that block (a hung disk): the third thread still runs the others */
	static atomic_int gate;
	static struct hjob blocked[2], others[20];
	atomic_store(&gate, 0);
	submit(&blocked[0], &gate);
	submit(&blocked[1], &gate);
	for (int i = 0; i < 20; i++) {
		submit(&others[i], NULL);
		sleep_us(i % 4 * 700);
	}
	/* wait for the 20 others only: their dones come while the blocked two still run */
	timed_out = 0;
	rk_timer *t = rk_loop_timer(L, 30000, give_up, L);
	while (!timed_out) {
		int n = 0;
		for (int i = 0; i < 20; i++)
			n += others[i].done;
		if (n == 20)
			break;
		rk_loop_timer(L, 5, stop0, L);
		rk_loop_run(L);
	}
	if (!timed_out)
		rk_timer_cancel(t);
	is_int(check(others, 20, "beside blocked"), 0, "two jobs blocked: 20 others ran meanwhile on the third thread");
	rk_pool_stats(P, &st);
	is_int((int)st.running, 2, "the two blocked ones still run");
	/* 3 more while all 3 threads are taken (2 blocked, 1 busy): they wait, then run */
	static struct hjob third;
	submit(&third, &gate);
	static struct hjob queued[3];
	for (int i = 0; i < 3; i++)
		submit(&queued[i], NULL);
	sleep_us(20000);
	rk_pool_stats(P, &st);
	ok(st.threads <= 3 && st.queued == 3, "every thread blocked: 3 jobs queued (%zu), no fourth thread (%u)",
	   st.queued, st.threads);
	atomic_store(&gate, 1);
	ok(drain(), "released: everything finishes");
	is_int(check(blocked, 2, "blocked") + check(&third, 1, "third") + check(queued, 3, "queued"), 0,
	       "each of them ran once, done once");

	/* 4. the threads left all exit; the books balance */
	uint64_t w0 = rk_now_ms();
	do {
		sleep_us(5000);
		rk_pool_stats(P, &st);
	} while (st.threads > 0 && rk_now_ms() - w0 < 10000);
	ok(st.threads == 0 && st.started == st.exited && st.queued == 0 && st.running == 0,
	   "idle: no thread left, %llu started = %llu exited", (unsigned long long)st.started,
	   (unsigned long long)st.exited);
	uint64_t total = ROUNDS + 50 * 200 + 2 + 20 + 1 + 3;
	is_int((long long)st.finished, (long long)total, "finished counts every job");
	rk_pool_free(P);
	rk_loop_free(L);
	tap_done();
}
