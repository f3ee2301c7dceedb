/* riklet-runc-run — the runtime riklet hands to conmon: one runtime invocation for a container that
 * may start at once (a Pod of one container, a restart), and a runtime whose stderr is drained
 * during its create.
 *
 *   riklet-runc-run RUNC [GLOBAL OPTIONS] create [OPTIONS] [--] ID
 *     -> runs RUNC [GLOBAL OPTIONS] run --detach [OPTIONS] [--] ID
 *   riklet-runc-run --create RUNC [GLOBAL OPTIONS] create [OPTIONS] [--] ID
 *     -> runs RUNC [GLOBAL OPTIONS] create [OPTIONS] [--] ID (the command unchanged)
 *
 * conmon runs its runtime as `RUNTIME [--runtime-arg...] create --bundle B --pid-file P
 * [--runtime-opt...] ID` and takes the runtime's end as the container's creation; riklet passes
 * the real runc as the first --runtime-arg. `runc run --detach` creates and starts the container
 * and writes the pid file once it runs, so conmon sees the same as after `runc create` (a pid file
 * and an exit status), and the container's stdio are conmon's pipes all the same. Any other
 * command (conmon's `exec`) is passed on unchanged (exec'd: no process of its own).
 *
 * The runtime's stderr is the container's stderr pipe, which conmon (2.1.6) reads only once the
 * runtime has exited: a runtime writing more than the pipe holds (64 KiB: a failing hook's output
 * in runc's error, a chatty runtime) blocked on its write and the create hung until riklet's
 * deadline. So for create (run) the runtime is run as a child, and while it runs this process
 * looks at the pipe every 10 ms (through a read end of its own, /proc/self/fd/2): once it is full,
 * what is there is read and kept cut (its first and last 2 KiB), and at the runtime's end written
 * back, so that conmon passes the runtime's message on. Until then the pipe is left alone: nothing
 * a container writes in the few ms before `runc run` returns is taken (only a container that fills
 * 64 KiB before then, on a runtime that is slow to return, has the middle of that cut, said so in
 * its log). Signals conmon forwards to its runtime are passed on; the exit status is the runtime's.
 *
 * If RUNC cannot be executed, the reason is appended to runc's --log (JSON lines, where riklet
 * reads runc's own errors) and to stderr, and it exits 127.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

static void fail(int argc, char **argv, const char *runc, int err)
{
	char msg[1024];
	snprintf(msg, sizeof msg, "riklet-runc-run: cannot execute the runtime %s: %s", runc, strerror(err));
	fprintf(stderr, "%s\n", msg);
	for (int i = 2; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--log"))
			continue;
		int fd = open(argv[i + 1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			char line[1400];
			/* the message holds no '"' or '\\' but what a path may: dropped, it is a hint */
			for (char *p = msg; *p; p++)
				if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
					*p = '?';
			int n = snprintf(line, sizeof line, "{\"level\":\"error\",\"msg\":\"%s\"}\n", msg);
			if (n > 0 && write(fd, line, (size_t)n) < 0) {
				/* nothing more to tell anyone */
			}
			close(fd);
		}
		break;
	}
	exit(127);
}

/* What was read from the runtime's stderr: its first and last KEEP bytes, and how many in all. */
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

/* read what the pipe holds now (rfd is non-blocking) */
static void drain(int rfd, struct kept *k)
{
	char buf[16384];
	ssize_t r;
	while ((r = read(rfd, buf, sizeof buf)) > 0)
		keep(k, buf, (size_t)r);
}

/* write what was kept back on the pipe, through a non-blocking write end of its own (fd 2 is shared
 * with the container: its flags stay as they are); what does not fit is dropped */
static void give_back(const struct kept *k)
{
	int wfd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (wfd < 0)
		return;
	char note[160];
	int nn = snprintf(note, sizeof note, "\n[riklet-runc-run: %llu bytes of the runtime's stderr cut here]\n",
			  k->total - k->nhead - k->ntail);
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

static pid_t child = -1;
static void forward(int sig)
{
	if (child > 0)
		kill(child, sig);
}

/* Run argv as a child while watching the pipe of fd 2 (see the top); -> never returns. */
static void run_draining(int argc, char **argv, char **out, int rfd, int keep_create)
{
	int cap = fcntl(STDERR_FILENO, F_GETPIPE_SZ);
	struct sigaction sa = {.sa_handler = forward};
	sigemptyset(&sa.sa_mask);
	const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
	child = fork();
	if (child == 0) {
		execv(out[0], out);
		fail(argc, argv, out[0], errno);
	}
	int pidfd = child > 0 ? (int)syscall(SYS_pidfd_open, child, 0) : -1;
	static struct kept k;
	int status = 0;
	if (child < 0) {
		fprintf(stderr, "riklet-runc-run: cannot fork to run the runtime %s: %s\n", out[0], strerror(errno));
		exit(127);
	}
	for (;;) {
		if (pidfd >= 0) {
			struct pollfd p = {.fd = pidfd, .events = POLLIN};
			if (poll(&p, 1, 10) == 0) {
				int n = 0;
				if (cap > 0 && ioctl(rfd, FIONREAD, &n) == 0 && n + PIPE_BUF > cap)
					drain(rfd, &k); /* full: the runtime is blocked on it */
				continue;
			}
		}
		pid_t w = waitpid(child, &status, pidfd >= 0 ? WNOHANG : 0);
		if (w == child)
			break;
		if (w < 0 && errno != EINTR) {
			status = 127 << 8;
			break;
		}
		if (w == 0 && pidfd >= 0)
			continue; /* (the pidfd said so before the zombie was there: wait again) */
	}
	if (k.total > 0) {
		/* what is left there is the runtime's too when it failed, or when no container process ran */
		if (keep_create || !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
			drain(rfd, &k);
		give_back(&k);
	}
	if (WIFSIGNALED(status)) {
		signal(WTERMSIG(status), SIG_DFL);
		raise(WTERMSIG(status));
	}
	exit(WIFEXITED(status) ? WEXITSTATUS(status) : 127);
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
	const char *runc = argv[1];
	char *out[argc + 2]; /* on the stack: nothing for a leak checker to report at exit(127) */
	int n = 0, cmd_done = 0, create = 0;
	out[n++] = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (!cmd_done && takes_value(a) && i + 1 < argc) {
			out[n++] = argv[i];
			out[n++] = argv[++i];
			continue;
		}
		if (!cmd_done && a[0] != '-') {
			cmd_done = 1; /* the command: the first word that is no global option */
			create = !strcmp(a, "create");
			if (create && !keep_create) {
				out[n++] = "run";
				out[n++] = "--detach";
				continue;
			}
		}
		out[n++] = argv[i];
	}
	out[n] = NULL;
	struct stat st;
	if (create && fstat(STDERR_FILENO, &st) == 0 && S_ISFIFO(st.st_mode)) {
		int rfd = open("/proc/self/fd/2", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (rfd >= 0)
			run_draining(argc, argv, out, rfd, keep_create);
	}
	execv(runc, out);
	fail(argc, argv, runc, errno);
	return 127;
}
