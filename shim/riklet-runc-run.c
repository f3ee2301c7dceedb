/* riklet-runc-run — the runtime riklet hands to conmon: one runtime invocation (for conmon) for a
 * container that may start at once (a Pod of one container, a restart), and a runtime whose own
 * output never blocks it nor mixes with the container's.
 *
 *   riklet-runc-run RUNC [GLOBAL OPTIONS] create [OPTIONS] [--] ID
 *     -> runs RUNC [GLOBAL OPTIONS] create [OPTIONS] [--] ID with --pid-file DIR/NAME made
 *        DIR/.riklet-create.NAME, then starts the container as `runc start` does (through runc's
 *        exec.fifo, or RUNC [GLOBAL OPTIONS] start ID), and renames the pid file into DIR/NAME
 *        once it started
 *   riklet-runc-run --create RUNC [GLOBAL OPTIONS] create [OPTIONS] [--] ID
 *     -> runs RUNC [GLOBAL OPTIONS] create [OPTIONS] [--] ID (the command unchanged: riklet runs
 *        `runc start` itself once every container of the Pod exists)
 *
 * conmon runs its runtime as `RUNTIME [--runtime-arg...] create --bundle B --pid-file P
 * [--runtime-opt...] ID` and takes the runtime's end as the container's creation; riklet passes
 * the real runc as the first --runtime-arg. Without --create the container runs when this process
 * ends, and P appears (renamed into place) only then, so conmon (pid file, exit status, its pipes
 * as the container's stdio) and riklet (P's rename) see what they see after `runc run --detach`.
 * Any other command (conmon's `exec`) is passed on unchanged (exec'd: no process of its own).
 *
 * Why create + start and not `runc run --detach`: conmon gives its runtime the container's stdout and stderr pipes,
 * and runc passes its own stdio to the container (runc's docs/terminals.md, "detached
 * pass-through": the runc process's fds, untouched; there is no option giving the container other
 * fds than runc's own 0-2: --preserve-fds and LISTEN_FDS add fds from 3 on, --console-socket gives
 * it a terminal instead). conmon (2.1.6) reads those pipes only once the runtime has exited, so a
 * runtime writing more than a pipe holds (64 KiB: a failing hook's output in runc's error, a chatty
 * runtime) blocked until riklet's deadline; under `run --detach` the container writes into the same
 * pipes before runc returns, and nothing can tell its bytes from runc's (the drains of them cut the
 * container's early output: the stdout one, reverted in 368be37, and the stderr one this replaces).
 * `runc create` sets the container up but runs none of its code (its init waits for `runc start`;
 * runc 1.1 runs the poststart hooks then too): everything on the pipes during create is the
 * runtime's. So create runs as a child while this process reads both pipes (through read ends of
 * its own, /proc/self/fd/1 and 2), keeps each stream's first and last 2 KiB and writes them back at
 * create's end, before the container can write anything: conmon logs them (or passes the stderr on
 * as the runtime's message when it failed) ahead of the container's output, and nothing of the
 * container's is read. The start is no second runc process (a `runc start` took 6-11 ms, median
 * 10.9 at load 4.3): this process does what runc 1.1's start does, opening the container's
 * <--root>/<ID>/exec.fifo, reading the init's byte and removing the fifo (start_by_fifo()), and
 * runs `runc start` only when something there is not what runc 1.1 leaves (another runtime or
 * version: no such fifo) or NOTIFY_SOCKET is set; runc's --log says which, in an "info" line.
 * `runc start`'s stdout and stderr are a pipe of this process (start passes no stdio to the
 * container), read the same way and written to stderr at its end. A failed start is followed by
 * `runc delete --force ID` (what `run --detach` leaves after a failure: nothing) and the pid file
 * is not renamed; the reason is on stderr (and, from the fifo, an "error" line in runc's --log).
 * Signals conmon forwards to its runtime are passed on to create or start (one arriving in
 * between, or while the fifo is waited on: no start, the container deleted, this process ends by
 * it); the exit status is the runtime's. Every runc it runs has PDEATHSIG SIGKILL, as conmon gives this
 * process: conmon killed (riklet's deadline) ends this process and the runc it runs.
 *
 * If RUNC cannot be executed, the reason is appended to runc's --log (JSON lines, where riklet
 * reads runc's own errors) and to stderr, and it exits 127.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

/* runc's global options that take a value (runc 1.1), so that a value is never taken for the
 * command */
static int takes_value(const char *a)
{
	static const char *const opts[] = {"--root", "--log", "--log-format", "--criu", "--rootless", NULL};
	if (a[0] != '-' || strchr(a, '='))
		return 0;
	for (int i = 0; opts[i]; i++)
		if (!strcmp(a, opts[i]))
			return 1;
	return 0;
}

/* runc create's --pid-file, as urfave/cli takes it: --pid-file P, -pid-file P, --pid-file=P */
static int pid_file_option(const char *a)
{
	const char *o = a[0] == '-' && a[1] == '-' ? a + 2 : a[0] == '-' ? a + 1 : NULL;
	return o && (!strcmp(o, "pid-file") || !strncmp(o, "pid-file=", 9));
}

/* a JSON line appended to runc's --log (where riklet reads runc's own errors: level "error"), as
 * runc writes them; nothing without --log */
static void runc_log(int argc, char **argv, const char *level, const char *msg)
{
	for (int i = 2; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--log"))
			continue;
		int fd = open(argv[i + 1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			char line[1400], clean[1024], stamp[40] = "";
			/* the message holds no '"' or '\\' but what a path may: dropped, it is a hint */
			snprintf(clean, sizeof clean, "%s", msg);
			for (char *p = clean; *p; p++)
				if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
					*p = '?';
			time_t now = time(NULL);
			struct tm tm;
			if (gmtime_r(&now, &tm))
				strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
			int n = snprintf(line, sizeof line, "{\"level\":\"%s\",\"msg\":\"%s\",\"time\":\"%s\"}\n",
					 level, clean, stamp);
			if (n > 0 && write(fd, line, (size_t)n) < 0) {
				/* nothing more to tell anyone */
			}
			close(fd);
		}
		break;
	}
}

static void fail(int argc, char **argv, const char *runc, int err)
{
	char msg[1024];
	snprintf(msg, sizeof msg, "riklet-runc-run: cannot execute the runtime %s: %s", runc, strerror(err));
	fprintf(stderr, "%s\n", msg);
	runc_log(argc, argv, "error", msg);
	exit(127);
}

/* What was read from one of the runtime's streams: its first and last KEEP bytes, and how many in
 * all. */
#define KEEP 2048
struct kept {
	char head[KEEP], tail[KEEP];
	size_t nhead, ntail;
	unsigned long long total;
};

static void keep(struct kept *k, const char *p, size_t n)
{
	k->total += n;
	size_t h = n < KEEP - k->nhead ? n : KEEP - k->nhead;
	memcpy(k->head + k->nhead, p, h);
	k->nhead += h;
	p += h;
	n -= h;
	if (n >= KEEP) {
		memcpy(k->tail, p + n - KEEP, KEEP);
		k->ntail = KEEP;
	} else if (n > 0) {
		size_t drop = k->ntail + n > KEEP ? k->ntail + n - KEEP : 0;
		memmove(k->tail, k->tail + drop, k->ntail - drop);
		memcpy(k->tail + k->ntail - drop, p, n);
		k->ntail += n - drop;
	}
}

/* A stream read while the runtime runs: rfd (non-blocking) and what was kept of it. */
struct stream {
	int rfd;
	const char *name;
	struct kept k;
};

/* read what the pipe holds now */
static void drain(struct stream *s)
{
	char buf[16384];
	ssize_t r;
	while (s->rfd >= 0 && (r = read(s->rfd, buf, sizeof buf)) > 0)
		keep(&s->k, buf, (size_t)r);
}

/* write what was kept to fd, through a non-blocking write end of its own (fds 1 and 2 are the
 * container's: their flags stay as they are); what does not fit is dropped */
static void give_back(int fd, const struct stream *s)
{
	const struct kept *k = &s->k;
	if (k->total == 0)
		return;
	char path[32];
	struct stat sb;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	/* (a file or a terminal cannot block: written through fd itself, at its offset) */
	int pipe_fd = fstat(fd, &sb) == 0 && S_ISFIFO(sb.st_mode);
	int wfd = pipe_fd ? open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC) : dup(fd);
	if (wfd < 0)
		return;
	char note[160];
	int nn = snprintf(note, sizeof note, "\n[riklet-runc-run: %llu bytes of the runtime's %s cut here]\n",
			  k->total - k->nhead - k->ntail, s->name);
	struct {
		const char *p;
		size_t n;
	} parts[] = {{k->head, k->nhead},
		     {note, k->total > k->nhead + k->ntail && nn > 0 ? (size_t)nn : 0},
		     {k->tail, k->ntail}};
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		if (parts[i].n > 0 && write(wfd, parts[i].p, parts[i].n) < 0)
			break;
	close(wfd);
}

static volatile pid_t child = -1;
static volatile sig_atomic_t signalled; /* the last signal conmon sent */
static const int fwd_sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define NFWD (sizeof fwd_sigs / sizeof fwd_sigs[0])
static void forward(int sig)
{
	signalled = sig;
	if (child > 0)
		kill(child, sig);
}

static int g_argc;
static char **g_argv;
static char *g_pid_opt;	   /* (create's --pid-file value: reachable to the end, no leak to report) */
static const char *g_root; /* runc's --root, when given: the containers' state directories */

/* Run argv as a child (its stdout and stderr: out_fd when >= 0) while reading the n streams;
 * -> its wait status (127 << 8 when it cannot be run) */
static int run_reading(char **argv, int out_fd, struct stream *st, int n, int fwd)
{
	pid_t parent = getpid();
	/* the signals to forward are held from the fork until child is set: one arriving in between
	 * was taken by the child's copy of forward() before its exec, and lost (runc ran on) */
	sigset_t held, old;
	sigemptyset(&held);
	for (size_t i = 0; i < NFWD; i++)
		sigaddset(&held, fwd_sigs[i]);
	sigprocmask(SIG_BLOCK, &held, &old);
	pid_t pid = fork();
	if (pid == 0) {
		for (size_t i = 0; i < NFWD; i++)
			signal(fwd_sigs[i], SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		/* conmon gives its runtime PDEATHSIG SIGKILL: its end (riklet's deadline, conmon.stop)
		 * ends the runtime. This process is that runtime for conmon; the runc it runs must end
		 * with it too, or it goes on to create (start) a container no conmon is there for */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		if (out_fd >= 0 && (dup2(out_fd, STDOUT_FILENO) < 0 || dup2(out_fd, STDERR_FILENO) < 0))
			_exit(127);
		execv(argv[0], argv);
		fail(g_argc, g_argv, argv[0], errno);
	}
	if (pid < 0) {
		int err = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		fprintf(stderr, "riklet-runc-run: cannot fork to run the runtime %s: %s\n", argv[0], strerror(err));
		return 127 << 8;
	}
	if (fwd) {
		child = pid;
		if (signalled)
			kill(pid, signalled); /* (it came before this run) */
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (out_fd >= 0)
		close(out_fd);
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int status = 0;
	for (;;) {
		struct pollfd p[4];
		int np = 0;
		if (pidfd >= 0)
			p[np++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
		for (int i = 0; i < n && np < 4; i++)
			if (st[i].rfd >= 0)
				p[np++] = (struct pollfd){.fd = st[i].rfd, .events = POLLIN};
		/* (without a pidfd, Linux < 5.3: the child's end is looked for every 10 ms) */
		int r = poll(p, (nfds_t)np, pidfd >= 0 ? -1 : 10);
		if (r < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++)
			drain(&st[i]);
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			status = 127 << 8;
			break;
		}
		/* a stream at its end (start's pipe closed by a process start left behind) is not
		 * polled again: its POLLHUP would come back at once */
		for (int i = 0, j = pidfd >= 0; i < n; i++)
			if (st[i].rfd >= 0 && j < np && p[j].fd == st[i].rfd) {
				if ((p[j].revents & (POLLHUP | POLLERR)) && !(p[j].revents & POLLIN))
					st[i].rfd = -1 - st[i].rfd; /* (kept to be closed: -1 - fd) */
				j++;
			}
	}
	child = -1;
	for (int i = 0; i < n; i++) {
		if (st[i].rfd < -1)
			st[i].rfd = -1 - st[i].rfd;
		drain(&st[i]); /* what is left is the runtime's too: the container runs none of its code yet */
	}
	if (pidfd >= 0)
		close(pidfd);
	return status;
}

/* end as the runtime ended: by its signal, or with its exit code */
static void end_as(int status)
{
	if (WIFSIGNALED(status)) {
		signal(WTERMSIG(status), SIG_DFL);
		raise(WTERMSIG(status));
	}
	exit(WIFEXITED(status) ? WEXITSTATUS(status) : 127);
}

/* a read end of our own of fd's pipe (non-blocking), or -1 when fd is no pipe (a file, /dev/null,
 * a terminal: nothing to block the runtime) */
static int reader(int fd)
{
	struct stat st;
	char path[32];
	if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode))
		return -1;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	return open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
}

/* RUNC [GLOBAL OPTIONS] VERB [ARG] ID, into a (3 + nglobal + 3 entries) */
static char **command(char **a, char **out, int nglobal, const char *verb, const char *arg, const char *id)
{
	int n = 0;
	for (int i = 0; i <= nglobal; i++)
		a[n++] = out[i];
	a[n++] = (char *)verb;
	if (arg)
		a[n++] = (char *)arg;
	a[n++] = (char *)"--"; /* an id may start with '-' (riklet passes create's "--" too: --help.json) */
	a[n++] = (char *)id;
	a[n] = NULL;
	return a;
}

/* Run argv (runc VERB) with its stdout and stderr on a pipe of our own, read into *s while it runs
 * (start and delete pass no stdio to the container); -> its wait status (1 << 8: no pipe, not run) */
static int run_piped(char **argv, const char *verb, struct stream *s, int fwd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "riklet-runc-run: cannot make a pipe for runc %s: %s\n", verb, strerror(errno));
		return 1 << 8;
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	s->rfd = p[0];
	int status = run_reading(argv, p[1], s, 1, fwd);
	close(p[0]);
	s->rfd = -1;
	return status;
}

/* Start the created container as `runc start` does it (runc 1.1.5: start.go, libcontainer's
 * exec() and handleFifoResult()): the container's init, once created, blocks opening
 * <root>/<id>/exec.fifo for writing; start opens it for reading, which lets the init write one
 * byte ("0"), run the startContainer hooks and exec the container's process (its write end is
 * close-on-exec); start reads to the end, takes >0 bytes as started (0: "cannot start an already
 * running container") and removes the fifo (runc then says "running": its state is "created" while
 * the init is alive and exec.fifo exists). runc start waits on a blocking open, checking every
 * 100 ms that the init is alive (not gone nor a zombie) and, when it is not, reads the fifo once
 * more without blocking: data there is a container that started and ended in between.
 *
 * Here: the init's pid and start time from state.json (read whole, at most 4 MiB, parsed with
 * cJSON; runc's own check that the pid is still
 * the init), a pidfd of it, the fifo opened non-blocking (no wait for the writer) after checking it
 * is a FIFO, then a poll on the fifo and the pidfd: the end of the fifo (the init's exec) or the
 * init's end ends the wait, never a blocked open. Nothing of this touched the container until the
 * open; anything unexpected before it (no --root, a state directory or state.json unlike runc
 * 1.1's, no exec.fifo or not a FIFO, the init not running, no pidfd_open) is FIFO_NOT_TAKEN with
 * why, and `runc start` runs instead; so is NOTIFY_SOCKET in the environment (runc start then
 * relays the container's sd_notify readiness, and waits for it). -> FIFO_STARTED (*status 0),
 * FIFO_FAILED (*status: 1 << 8, or the signal that came; the message on stderr and in --log) */
enum { FIFO_STARTED, FIFO_FAILED, FIFO_NOT_TAKEN };

/* runc's container ids (runc 1.1 validateID: ^[\w+-\.]+$, not "." or ".."): a name in --root */
static int runc_id(const char *id)
{
	if (!*id || !strcmp(id, ".") || !strcmp(id, ".."))
		return 0;
	for (const char *p = id; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      strchr("_+-.", *p)))
			return 0;
	return 1;
}

/* runc's state.json (the most of it read) and the init's pid and start time in it */
#define STATE_MAX (4 << 20)

/* a JSON number that is a whole number in [1, max], -> 0 otherwise (absent, another type) */
static unsigned long long whole(const cJSON *v, double max)
{
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1 && v->valuedouble <= max))
		return 0;
	unsigned long long n = (unsigned long long)v->valuedouble;
	return (double)n == v->valuedouble ? n : 0;
}

/* the init's pid and start time from <dir>/state.json (dfd: dir), read whole (at most STATE_MAX
 * bytes) and parsed; -> 0, or -1 with why */
static int init_of_state(int dfd, const char *dir, unsigned long long *pid, unsigned long long *start, char *why,
			 size_t whylen)
{
	struct stat sb;
	int sfd = openat(dfd, "state.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	const char *bad = sfd < 0 || fstat(sfd, &sb) < 0 ? strerror(errno)
		: !S_ISREG(sb.st_mode)			 ? "not a regular file"
		: sb.st_size > STATE_MAX		 ? "larger than 4 MiB"
							 : NULL;
	if (bad) {
		snprintf(why, whylen, "cannot read %.400s/state.json: %s", dir, bad);
		if (sfd >= 0)
			close(sfd);
		return -1;
	}
	/* (runc replaces it by a rename: the size of the one opened stays) */
	size_t len = (size_t)sb.st_size, got = 0;
	char *buf = malloc(len + 1);
	ssize_t r = 0;
	while (buf && got < len && ((r = read(sfd, buf + got, len - got)) > 0 || (r < 0 && errno == EINTR)))
		got += r > 0 ? (size_t)r : 0;
	int err = errno;
	close(sfd);
	if (!buf || r < 0) {
		snprintf(why, whylen, "cannot read %.400s/state.json: %s", dir, buf ? strerror(err) : "out of memory");
		free(buf);
		return -1;
	}
	cJSON *st = cJSON_ParseWithLength(buf, got);
	free(buf);
	*pid = whole(cJSON_GetObjectItemCaseSensitive(st, "init_process_pid"), 4194304);
	*start = whole(cJSON_GetObjectItemCaseSensitive(st, "init_process_start"), 9007199254740992.0);
	cJSON_Delete(st);
	if (!st || !*pid || !*start) {
		snprintf(why, whylen, "%.400s/state.json: %s", dir,
			 st ? "no init_process_pid and init_process_start (whole numbers)" : "not JSON");
		return -1;
	}
	return 0;
}

static int start_by_fifo(const char *root, const char *id, int *status, char *why, size_t whylen)
{
	const char *notify = getenv("NOTIFY_SOCKET");
	if (!root) {
		snprintf(why, whylen, "no --root given");
		return FIFO_NOT_TAKEN;
	}
	if (notify && *notify) {
		snprintf(why, whylen, "NOTIFY_SOCKET is set: runc start relays the container's readiness");
		return FIFO_NOT_TAKEN;
	}
	if (!runc_id(id)) {
		snprintf(why, whylen, "the id is not one runc takes");
		return FIFO_NOT_TAKEN;
	}
	char dir[4096];
	if (snprintf(dir, sizeof dir, "%s/%s", root, id) >= (int)sizeof dir) {
		snprintf(why, whylen, "the state directory's path is too long");
		return FIFO_NOT_TAKEN;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		snprintf(why, whylen, "no state directory %.400s: %s", dir, strerror(errno));
		return FIFO_NOT_TAKEN;
	}
	int ret = FIFO_NOT_TAKEN, pidfd = -1, fd = -1;
	unsigned long long pid = 0, start = 0;
	ssize_t n;
	if (init_of_state(dfd, dir, &pid, &start, why, whylen) < 0)
		goto out;
	pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
	if (pidfd < 0) {
		snprintf(why, whylen, "no pidfd of the container's init (pid %llu): %s", pid, strerror(errno));
		goto out;
	}
	/* (the pid's process now, after the pidfd: the init if its start time is the one runc saw) */
	char path[64], stat_buf[1024];
	snprintf(path, sizeof path, "/proc/%llu/stat", pid);
	int pfd = open(path, O_RDONLY | O_CLOEXEC);
	n = pfd >= 0 ? read(pfd, stat_buf, sizeof stat_buf - 1) : -1;
	if (pfd >= 0)
		close(pfd);
	const char *rp = n > 0 ? (stat_buf[n] = 0, strrchr(stat_buf, ')')) : NULL;
	char state = 0;
	unsigned long long started = 0;
	/* fields 3 (state) and 22 (starttime) of proc_pid_stat(5): 1 and 20 after the ')' */
	if (rp &&
	    sscanf(rp + 1, " %c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu", &state,
		   &started) != 2)
		rp = NULL;
	if (!rp || started != start || state == 'Z' || state == 'X') {
		snprintf(why, whylen, "the container's init (pid %llu) is not running", pid);
		goto out;
	}
	struct stat sb, fb;
	if (fstatat(dfd, "exec.fifo", &sb, AT_SYMLINK_NOFOLLOW) < 0) {
		snprintf(why, whylen, "no %.400s/exec.fifo: %s", dir, strerror(errno));
		goto out;
	}
	if (!S_ISFIFO(sb.st_mode)) {
		snprintf(why, whylen, "%.400s/exec.fifo is not a FIFO", dir);
		goto out;
	}
	/* (the signals conmon forwards are held from here, and taken only in the wait: one that came
	 * before the open is no start, as between create and start) */
	sigset_t held, old;
	sigemptyset(&held);
	for (size_t i = 0; i < NFWD; i++)
		sigaddset(&held, fwd_sigs[i]);
	sigprocmask(SIG_BLOCK, &held, &old);
	if (signalled) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		*status = signalled;
		snprintf(why, whylen, "signal %d before the start", (int)signalled);
		ret = FIFO_FAILED;
		goto out;
	}
	fd = openat(dfd, "exec.fifo", O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &fb) < 0 || fb.st_dev != sb.st_dev || fb.st_ino != sb.st_ino) {
		snprintf(why, whylen, "cannot open %.400s/exec.fifo: %s", dir, fd < 0 ? strerror(errno) : "replaced");
		sigprocmask(SIG_SETMASK, &old, NULL);
		goto out;
	}
	/* Opened: the init goes on. The end of the fifo, or of the init, ends the wait; a signal from
	 * conmon too (what it did to runc start: the container is then deleted) */
	ret = FIFO_FAILED;
	unsigned long long got = 0;
	int eof = 0, ended = 0;
	while (!eof && !ended && !signalled) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
		if (ppoll(p, 2, NULL, &old) < 0) {
			if (errno == EINTR)
				continue;
			snprintf(why, whylen, "poll on %.400s/exec.fifo: %s", dir, strerror(errno));
			break;
		}
		ended = p[1].revents != 0;
		/* (read until the pipe is empty; 0: every writer gone) */
		char buf[64];
		ssize_t r;
		while ((r = read(fd, buf, sizeof buf)) > 0)
			got += (unsigned long long)r;
		if (r == 0 && (p[0].revents || ended))
			eof = 1;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (signalled && !eof && !ended) {
		*status = signalled;
		snprintf(why, whylen, "signal %d while starting through %.400s/exec.fifo", (int)signalled, dir);
	} else if (got == 0) {
		*status = 1 << 8;
		if (ended)
			snprintf(
				why, whylen,
				"the container's init (pid %llu) ended before it started (nothing in %.400s/exec.fifo)",
				pid, dir);
		else if (eof)
			snprintf(why, whylen, "nothing read from %.400s/exec.fifo: the container was started already",
				 dir);
	} else if (unlinkat(dfd, "exec.fifo", 0) < 0) {
		*status = 1 << 8;
		snprintf(why, whylen, "cannot remove %.400s/exec.fifo (runc would take the container for created): %s",
			 dir, strerror(errno));
	} else {
		*status = 0;
		ret = FIFO_STARTED;
	}
out:
	if (fd >= 0)
		close(fd);
	if (pidfd >= 0)
		close(pidfd);
	close(dfd);
	return ret;
}

/* create (out) while both of the container's pipes are read; then, when start_it, start with a
 * pipe of its own; -> never returns */
static void create_and_start(char **out, int nglobal, const char *id, const char *pidfile, const char *tmp_pid,
			     int start_it)
{
	struct sigaction sa = {.sa_handler = forward};
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NFWD; i++)
		sigaction(fwd_sigs[i], &sa, NULL);
	static struct stream io[2];
	io[0].rfd = reader(STDOUT_FILENO), io[0].name = "stdout";
	io[1].rfd = reader(STDERR_FILENO), io[1].name = "stderr";
	int status = run_reading(out, -1, io, 2, 1);
	for (int i = 0; i < 2; i++) {
		give_back(1 + i, &io[i]); /* before the container runs: ahead of its output */
		if (io[i].rfd >= 0)
			close(io[i].rfd);
	}
	if (!start_it)
		end_as(status);
	int created = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (created && !signalled) {
		static struct stream st = {.name = "stderr"};
		char *a[nglobal + 6], why[1024], msg[1200];
		int how = start_by_fifo(g_root, id, &status, why, sizeof why);
		if (how == FIFO_NOT_TAKEN) {
			snprintf(msg, sizeof msg, "riklet-runc-run: %s: runc start (not through exec.fifo: %s)", id,
				 why);
			runc_log(g_argc, g_argv, "info", msg);
			status = run_piped(command(a, out, nglobal, "start", NULL, id), "start", &st, 1);
		} else if (how == FIFO_STARTED) {
			snprintf(msg, sizeof msg,
				 "riklet-runc-run: %s started through runc's exec.fifo (no runc start)", id);
			runc_log(g_argc, g_argv, "info", msg);
		} else {
			/* (on stderr as runc start's error would be: conmon's message of the runtime's failure;
			 * through give_back, as the container may be writing into that pipe already) */
			int len = snprintf(msg, sizeof msg, "riklet-runc-run: cannot start %s: %s\n", id, why);
			keep(&st.k, msg, len > 0 && len < (int)sizeof msg ? (size_t)len : strlen(msg));
			msg[strcspn(msg, "\n")] = 0;
			runc_log(g_argc, g_argv, "error", msg);
		}
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && tmp_pid && rename(tmp_pid, pidfile) < 0) {
			/* (through give_back too: the container runs, and may have filled the pipe) */
			int len = snprintf(msg, sizeof msg,
					   "riklet-runc-run: cannot rename the pid file %.400s to %.400s: %s\n",
					   tmp_pid, pidfile, strerror(errno));
			keep(&st.k, msg, len > 0 && len < (int)sizeof msg ? (size_t)len : strlen(msg));
			status = 1 << 8;
		}
		give_back(STDERR_FILENO, &st);
		if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			/* the container is ours (created above): nothing is left, as after a failed run */
			static struct stream del = {.name = "stderr"};
			int ds = run_piped(command(a, out, nglobal, "delete", "--force", id), "delete", &del, 0);
			if (!(WIFEXITED(ds) && WEXITSTATUS(ds) == 0))
				give_back(STDERR_FILENO, &del);
		}
	} else if (created) {
		/* a signal between create and start: what runc run would have got (the container is ours) */
		char *a[nglobal + 6];
		int ds = run_reading(command(a, out, nglobal, "delete", "--force", id), -1, NULL, 0, 0);
		(void)ds;
		status = signalled;
	}
	if (tmp_pid)
		unlink(tmp_pid); /* (ours: gone once renamed) */
	end_as(status);
}

int main(int argc, char **argv)
{
	int keep_create = argc > 1 && !strcmp(argv[1], "--create");
	if (keep_create) {
		argv++;
		argc--;
	}
	if (argc < 2 || argv[1][0] != '/') {
		fprintf(stderr,
			"usage: riklet-runc-run [--create] /path/to/runc [runc arguments]\n"
			"(conmon's --runtime, with the real runc as the first --runtime-arg)\n");
		return 2;
	}
	g_argc = argc, g_argv = argv;
	const char *runc = argv[1];
	char *out[argc + 1]; /* on the stack: nothing for a leak checker to report at exit(127) */
	int n = 0, cmd_done = 0, create = 0, nglobal = 0;
	const char *pidfile = NULL;
	char *tmp_pid = NULL;
	out[n++] = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (!cmd_done && takes_value(a) && i + 1 < argc) {
			if (!strcmp(a, "--root") || !strcmp(a, "-root"))
				g_root = argv[i + 1];
			out[n++] = argv[i];
			out[n++] = argv[++i];
			continue;
		}
		if (!cmd_done && (!strncmp(a, "--root=", 7) || !strncmp(a, "-root=", 6)))
			g_root = strchr(a, '=') + 1;
		if (!cmd_done && a[0] != '-') {
			cmd_done = 1; /* the command: the first word that is no global option */
			create = !strcmp(a, "create");
			nglobal = n - 1;
		} else if (create && !keep_create && !pidfile && pid_file_option(a) &&
			   (strchr(a, '=') ? a[strlen(a) - 1] != '=' : i + 1 < argc)) {
			/* create's pid file under another name, renamed into place once the container runs:
			 * P.d/.riklet-create.P.name (--pid-file P, --pid-file=P) */
			const char *eq = strchr(a, '=');
			pidfile = eq ? eq + 1 : argv[++i];
			const char *base = strrchr(pidfile, '/');
			size_t dl = base ? (size_t)(base - pidfile + 1) : 0, len = strlen(pidfile) + 48;
			char *opt = g_pid_opt = malloc(len);
			if (!opt) {
				fprintf(stderr, "riklet-runc-run: out of memory\n");
				return 127;
			}
			int pre = eq ? snprintf(opt, len, "--pid-file=") : 0;
			tmp_pid = opt + pre;
			memcpy(tmp_pid, pidfile, dl);
			snprintf(tmp_pid + dl, len - pre - dl, ".riklet-create.%s", pidfile + dl);
			if (!eq)
				out[n++] = argv[i - 1];
			out[n++] = opt;
			continue;
		}
		out[n++] = argv[i];
	}
	out[n] = NULL;
	if (create && n > nglobal + 2) {
		/* (runc create takes one argument, the id: conmon passes it last) */
		create_and_start(out, nglobal, argv[argc - 1], pidfile, tmp_pid, !keep_create);
	}
	execv(runc, out);
	fail(argc, argv, runc, errno);
	return 127;
}
