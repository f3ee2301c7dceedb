/* proc.c — posix_spawn wrapper: argv only, explicit stdio (and up to two extra fds, as fds 3 and 4), clean signal
 * state in the child. */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

extern char **environ;

pid_t rk_proc_spawn(char *const *argv, const struct rk_proc_opts *o, rk_err *e)
{
	static const struct rk_proc_opts defaults = RK_PROC_OPTS_INIT;
	if (!o)
		o = &defaults;
	if (!argv || !argv[0] || !argv[0][0]) {
		rk_errf(e, EINVAL, "cannot spawn an empty command");
		return -1;
	}
	if ((o->extra_fd >= 0 && o->extra_fd < 3) || (o->extra_fd2 >= 0 && o->extra_fd2 < 3)) {
		rk_errf(e, EINVAL, "cannot run %s: an extra fd would replace its stdio", argv[0]);
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);

	if (o->stdin_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, o->stdin_fd, 0);
	else
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (o->stdout_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, o->stdout_fd, 1);
	else
		posix_spawn_file_actions_addopen(&fa, 1, o->stdout_path ? o->stdout_path : "/dev/null",
						 O_WRONLY | O_CREAT | O_APPEND, 0640);
	if (o->stderr_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, o->stderr_fd, 2);
	else if (o->stderr_to_stdout)
		posix_spawn_file_actions_adddup2(&fa, 1, 2);
	else
		posix_spawn_file_actions_addopen(&fa, 2, o->stderr_path ? o->stderr_path : "/dev/null",
						 O_WRONLY | O_CREAT | O_APPEND, 0640);
	/* last: the dups onto 0-2 above read their sources first. dup2 onto itself would keep the
	 * close-on-exec flag, and the dup onto 3 would replace a source that is 3 or 4: such a source is
	 * moved away first */
	int src[2] = {o->extra_fd, o->extra_fd2}, moved[2] = {-1, -1};
	for (int i = 0; i < 2; i++) {
		if (src[i] != 3 && src[i] != 4)
			continue;
		if ((src[i] = moved[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 5)) < 0) {
			int err = errno;
			posix_spawn_file_actions_destroy(&fa);
			posix_spawnattr_destroy(&at);
			if (moved[0] >= 0)
				close(moved[0]);
			rk_errf(e, err, "cannot run %s: cannot pass it fd %d: %s", argv[0], 3 + i, strerror(err));
			return -1;
		}
	}
	for (int i = 0; i < 2; i++)
		if (src[i] >= 0)
			posix_spawn_file_actions_adddup2(&fa, src[i], 3 + i);
	if (o->cwd)
		posix_spawn_file_actions_addchdir_np(&fa, o->cwd);

	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
	if (o->new_session)
		flags |= POSIX_SPAWN_SETSID;
	else if (o->new_pgroup) {
		flags |= POSIX_SPAWN_SETPGROUP;
		posix_spawnattr_setpgroup(&at, 0);
	}
	posix_spawnattr_setflags(&at, flags);

	/* never NOTIFY_SOCKET (riklet's own, from systemd: riklet.service is Type=notify): runc given
	 * it relays the container's sd_notify readiness, and `runc start` waits for a READY=1 that
	 * a container never sends (a Pod FAILED after riklet's 60 s deadline) */
	char *const *env = o->env ? o->env : environ;
	size_t n = 0, drop = 0;
	while (env[n])
		drop += !strncmp(env[n++], "NOTIFY_SOCKET=", 14);
	char *kept[drop ? n + 1 : 1];
	if (drop) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (strncmp(env[i], "NOTIFY_SOCKET=", 14))
				kept[k++] = env[i];
		kept[k] = NULL;
		env = kept;
	}
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	for (int i = 0; i < 2; i++)
		if (moved[i] >= 0)
			close(moved[i]);
	if (rc != 0) {
		rk_errf(e, rc, "cannot run %s: %s%s", argv[0], strerror(rc),
			rc == ENOENT ? " (is it installed and on PATH?)" : "");
		return -1;
	}
	return pid;
}

void rk_proc_describe(int st, char *buf, size_t len)
{
	if (st < 0)
		snprintf(buf, len, "exited (exit code unknown: it was not riklet's child)");
	else if (WIFEXITED(st))
		snprintf(buf, len, "exited with code %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "stopped (status 0x%x)", st);
}

int rk_pidfd_open(pid_t pid, rk_err *e)
{
	if (pid <= 0)
		return rk_errf(e, EINVAL, "cannot open a pidfd for pid %d", (int)pid);
	/* (pidfds are close-on-exec whatever the flags) */
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return rk_errf(e, errno, "cannot open a pidfd for process %d: %s", (int)pid, strerror(errno));
	return fd;
}

int rk_pidfd_signal(int fd, int sig, rk_err *e)
{
	if (syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) < 0)
		return rk_errf(e, errno, "cannot signal the process: %s", strerror(errno));
	return 0;
}
