/* riklet-runc-run — the runtime riklet hands to conmon for a container that may start at once
 * (a Pod of one container, a restart): one runtime invocation instead of two.
 *
 *   riklet-runc-run RUNC [GLOBAL OPTIONS] create [OPTIONS] [--] ID
 *     -> execs RUNC [GLOBAL OPTIONS] run --detach [OPTIONS] [--] ID
 *
 * conmon runs its runtime as `RUNTIME [--runtime-arg...] create --bundle B --pid-file P
 * [--runtime-opt...] ID` and takes the runtime's end as the container's creation; riklet passes
 * the real runc as the first --runtime-arg. `runc run --detach` creates and starts the container
 * and writes the pid file once it runs, so conmon sees the same as after `runc create` (a pid file
 * and an exit status), and the container's stdio are conmon's pipes all the same. Any other
 * command (conmon's `exec`) is passed on unchanged. No allocation, no library but libc: it costs
 * one exec, not a runc process.
 *
 * If RUNC cannot be executed, the reason is appended to runc's --log (JSON lines, where riklet
 * reads runc's own errors) and to stderr, and it exits 127.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv)
{
	if (argc < 2 || argv[1][0] != '/') {
		fprintf(stderr,
			"usage: riklet-runc-run /path/to/runc [runc arguments]\n"
			"(conmon's --runtime, with the real runc as the first --runtime-arg)\n");
		return 2;
	}
	const char *runc = argv[1];
	char *out[argc + 2]; /* on the stack: nothing for a leak checker to report at exit(127) */
	int n = 0, cmd_done = 0;
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
			if (!strcmp(a, "create")) {
				out[n++] = "run";
				out[n++] = "--detach";
				continue;
			}
		}
		out[n++] = argv[i];
	}
	out[n] = NULL;
	execv(runc, out);
	fail(argc, argv, runc, errno);
	return 127;
}
