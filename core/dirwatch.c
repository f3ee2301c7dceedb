/* dirwatch.c — inotify on one directory, reduced to written / removed / overflow events. */
#include "dirwatch.h"

#include <errno.h>
#include <string.h>
#include <sys/inotify.h>

int rk_dirwatch_open(const char *dir, rk_err *e)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0)
		return rk_errf(e, errno, "inotify_init1: %s", strerror(errno));
	if (inotify_add_watch(fd, dir,
			      IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF |
				      IN_ONLYDIR) < 0) {
		int err = errno;
		close(fd);
		return rk_errf(e, err, "cannot watch directory %s: %s", dir, strerror(err));
	}
	return fd;
}

int rk_dirwatch_read(int fd, rk_dirwatch_cb cb, void *ud, rk_err *e)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0)
			return rk_errf(e, n < 0 ? errno : EIO, "reading inotify events: %s",
				       n < 0 ? strerror(errno) : "end of file");
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			const char *name = ev->len ? ev->name : "";
			if (ev->mask & IN_Q_OVERFLOW)
				cb(ud, RK_DW_OVERFLOW, "");
			else if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
				cb(ud, RK_DW_GONE, "");
			else if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO))
				cb(ud, RK_DW_WRITTEN, name);
			else if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
				cb(ud, RK_DW_REMOVED, name);
			p += sizeof *ev + ev->len;
		}
	}
}
