/* proc.h — spawn an argv (never through a shell) with env, cwd and stdio wired to files or fds.
 * Waiting is the loop's business: rk_loop_watch_child(pid, ...). */
#ifndef RK_PROC_H
#define RK_PROC_H

#include <sys/types.h>
#include "rk.h"

struct rk_proc_opts {
	char *const *env;	 /* NULL: inherit riklet's environment (never NOTIFY_SOCKET: dropped) */
	const char *cwd;	 /* NULL: riklet's cwd */
	const char *stdout_path; /* appended to, created 0640; NULL: /dev/null */
	const char *stderr_path; /* as stdout_path; ignored when stderr_to_stdout */
	int stderr_to_stdout;
	int stdin_fd, stdout_fd, stderr_fd; /* >= 0: dup'ed onto 0/1/2, overriding the paths */
	int new_session;		    /* setsid() in the child */
	int new_pgroup;			    /* its own process group (pgid = pid), to kill it with its children */
	int extra_fd;  /* >= 3: dup'ed onto fd 3 of the child (a sync pipe's write end); -1: none */
	int extra_fd2; /* >= 3: dup'ed onto fd 4 of the child (conmon's start pipe); -1: none */
};
#define RK_PROC_OPTS_INIT                                                                                              \
	{                                                                                                              \
		.stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .extra_fd = -1, .extra_fd2 = -1                      \
	}

/* Returns the pid (> 0) or -1 with e set ("cannot run runc: No such file or directory"). The child
 * starts with an empty signal mask and default dispositions, whatever the loop blocked. */
pid_t rk_proc_spawn(char *const *argv, const struct rk_proc_opts *o, rk_err *e);

/* Describe a waitpid status for humans: "exited with code 3", "killed by signal 9 (SIGKILL)". */
void rk_proc_describe(int wstatus, char *buf, size_t len);

/* A pidfd (Linux >= 5.3) for pid: a handle on that very process, which a signal sent through it
 * cannot reach once the pid is recycled. Returns the fd (close-on-exec) or -1 with e set; e->code
 * ENOSYS: the kernel has none (signal by pid), ESRCH: no such process. */
int rk_pidfd_open(pid_t pid, rk_err *e);

/* Send sig to the process of pidfd fd. Returns 0 or -1 with e set; e->code ESRCH: it has ended
 * (nothing was sent: whatever now has its pid is not reached). */
int rk_pidfd_signal(int fd, int sig, rk_err *e);

#endif
