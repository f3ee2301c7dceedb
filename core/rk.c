/* rk.c — errors, logging and small filesystem helpers shared by all core/ modules. */
#include "rk.h"

#include <stdatomic.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>

int rk_errf(rk_err *e, int code, const char *fmt, ...)
{
	if (!e)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	e->code = code ? code : -1;
	return -1;
}

int rk_err_prefix(rk_err *e, const char *fmt, ...)
{
	if (!e)
		return -1;
	char pre[512], old[sizeof e->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof pre, fmt, ap);
	va_end(ap);
	memcpy(old, e->msg, sizeof old);
	/* the prefix goes first; the old message is cut if the whole does not fit */
	size_t n = strlen(pre);
	if (n > sizeof e->msg - 3)
		n = sizeof e->msg - 3;
	memcpy(e->msg, pre, n);
	memcpy(e->msg + n, ": ", 2);
	size_t room = sizeof e->msg - n - 3, m = strnlen(old, room);
	memcpy(e->msg + n + 2, old, m);
	e->msg[n + 2 + m] = 0;
	return -1;
}

/* ---- logging ---- */
static int log_level = RK_LOG_INFO, log_json, log_journal = -1;
static const char *level_names[] = {"error", "warn", "info", "debug"};

/* stderr is the journal when JOURNAL_STREAM (set by systemd) names its device and inode: lines then
 * carry the syslog priority as "<N>" (sd-daemon.h's SD_ERR..SD_DEBUG) and no time stamp (the
 * journal has its own). */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void rk_log_setup(int level, int json)
{
	log_level = level;
	log_json = json;
	log_journal = stderr_is_journal();
}

int rk_log_level(void)
{
	return log_level;
}

int rk_log_parse_level(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(s, level_names[i]))
			return i;
	if (!strcmp(s, "warning"))
		return RK_LOG_WARN;
	return -1;
}

size_t rk_utf8_seq(const unsigned char *s, size_t len, size_t i)
{
	unsigned c = s[i];
	size_t n;
	unsigned lo = 0x80, hi = 0xbf;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		if (c == 0xf4)
			hi = 0x8f; /* past U+10FFFF */
	} else
		return 0;
	if (i + n > len)
		return 0;
	for (size_t k = 1; k < n; k++) {
		unsigned b = s[i + k];
		if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf))
			return 0;
	}
	return n;
}

/* Append the len bytes of s JSON-escaped to buf at *n, never past cap: control characters and
 * NUL as \u00XX, a byte that is not valid UTF-8 as \ufffd, only whole sequences. Returns 0 when
 * all of s fit, -1 when it was cut. */
static int json_escape(char *buf, size_t *n, size_t cap, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		unsigned char c = u[i];
		size_t k = rk_utf8_seq(u, len, i);
		if (*n + 7 > cap)
			return -1;
		if (c == '"' || c == '\\') {
			buf[(*n)++] = '\\';
			buf[(*n)++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			*n += (size_t)snprintf(buf + *n, cap - *n, "\\u%04x", c);
		} else if (!k) {
			memcpy(buf + *n, "\\ufffd", 6);
			*n += 6;
			k = 1;
		} else {
			memcpy(buf + *n, s + i, k);
			*n += k;
		}
		i += k ? k : 1;
	}
	return 0;
}

/* One line, built in a buffer and written with one write(2): lines from riklet never interleave
 * and a log line costs one system call. JSON lines are always whole objects: a message too long
 * for the line is cut (whole UTF-8 sequences) and marked "cut": true. */
void rk_log_msg(int level, const char *subsys, const char *msg, size_t len)
{
	if (level > log_level)
		return;
	char line[8192];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[64];
	snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	if (level < 0)
		level = 0;
	if (level > 3)
		level = 3;
	if (!subsys)
		subsys = "riklet";
	size_t n;
	if (log_json) {
		static const char tail[] = "\",\"cut\":true}\n";
		size_t room = sizeof line - sizeof tail; /* the longest tail always fits */
		n = (size_t)snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"area\":\"", when,
				     level_names[level]);
		json_escape(line, &n, 256 + n, subsys, strlen(subsys));
		memcpy(line + n, "\",\"msg\":\"", 9);
		n += 9;
		if (json_escape(line, &n, room, msg, len) < 0) {
			memcpy(line + n, tail, sizeof tail - 1);
			n += sizeof tail - 1;
		} else {
			memcpy(line + n, "\"}\n", 3);
			n += 3;
		}
	} else {
		int m = (int)strnlen(msg, len);
		if (log_journal > 0) {
			static const int prio[] = {3, 4, 6, 7}; /* err, warning, info, debug */
			n = (size_t)snprintf(line, sizeof line, "<%d>%s [%s] %.*s\n", prio[level], level_names[level],
					     subsys, m, msg);
		} else {
			n = (size_t)snprintf(line, sizeof line, "%s %-5s [%s] %.*s\n", when, level_names[level], subsys,
					     m, msg);
		}
		if (n >= sizeof line) { /* cut: keep the newline */
			n = sizeof line - 1;
			line[n - 1] = '\n';
		}
	}
	for (size_t off = 0; off < n;) {
		ssize_t w = write(2, line + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
}

void rk_logv(int level, const char *subsys, const char *fmt, va_list ap)
{
	if (level > log_level)
		return;
	char msg[4096];
	int m = vsnprintf(msg, sizeof msg, fmt, ap);
	if (m < 0)
		m = 0;
	rk_log_msg(level, subsys, msg, (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1);
}

void rk_log(int level, const char *subsys, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	rk_logv(level, subsys, fmt, ap);
	va_end(ap);
}

/* ---- files ---- */
int rk_read_file(const char *path, size_t max, char **out, size_t *len, rk_err *e)
{
	RK_AUTOCLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rk_errf(e, errno, "cannot open %s: %s", path, strerror(errno));
	return rk_read_fd(fd, path, max, out, len, e);
}

int rk_read_fd(int fd, const char *path, size_t max, char **out, size_t *len, rk_err *e)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	if (!buf)
		return rk_errf(e, ENOMEM, "out of memory reading %s", path);
	for (;;) {
		if (n == cap) {
			if (cap >= max) {
				free(buf);
				return rk_errf(e, EFBIG, "%s is larger than %zu bytes", path, max);
			}
			cap *= 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb) {
				free(buf);
				return rk_errf(e, ENOMEM, "out of memory reading %s", path);
			}
			buf = nb;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = errno;
			free(buf);
			return rk_errf(e, err, "cannot read %s: %s", path, strerror(err));
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			free(buf);
			return rk_errf(e, EFBIG, "%s is larger than %zu bytes", path, max);
		}
	}
	buf[n] = 0;
	*out = buf;
	if (len)
		*len = n;
	return 0;
}

static int write_file_replace(const char *path, const void *buf, size_t len, int mode, int durable, rk_err *e)
{
	/* unique per write, not only per process: a write on a worker thread and one on the loop
	 * thread to the same path must not share (and truncate) one temp file; the name still ends in
	 * .tmp.<pid>, which is how leftovers of a killed riklet are recognised */
	static atomic_ulong seq;
	char tmp[4096];
	if (snprintf(tmp, sizeof tmp, "%s.%lu.tmp.%d", path, atomic_fetch_add(&seq, 1), (int)getpid()) >=
	    (int)sizeof tmp)
		return rk_errf(e, ENAMETOOLONG, "path too long: %s", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return rk_errf(e, errno, "cannot create %s: %s", tmp, strerror(errno));
	const char *p = buf;
	size_t left = len;
	while (left) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			int err = errno;
			close(fd);
			unlink(tmp);
			return rk_errf(e, err, "cannot write %s: %s", tmp, strerror(err));
		}
		p += w;
		left -= (size_t)w;
	}
	if ((durable && fsync(fd) < 0) || close(fd) < 0) {
		int err = errno;
		unlink(tmp);
		return rk_errf(e, err, "cannot flush %s: %s", tmp, strerror(err));
	}
	if (rename(tmp, path) < 0) {
		int err = errno;
		unlink(tmp);
		return rk_errf(e, err, "cannot rename %s to %s: %s", tmp, path, strerror(err));
	}
	if (!durable)
		return 0;
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", path);
	RK_AUTOCLOSE int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0)
		fsync(dfd);
	return 0;
}

int rk_write_file_atomic(const char *path, const void *buf, size_t len, int mode, rk_err *e)
{
	return write_file_replace(path, buf, len, mode, 1, e);
}

int rk_write_file_replace(const char *path, const void *buf, size_t len, int mode, rk_err *e)
{
	return write_file_replace(path, buf, len, mode, 0, e);
}

int rk_mkdir_p(const char *path, int mode, rk_err *e)
{
	char buf[4096];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return rk_errf(e, ENAMETOOLONG, "path too long: %s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return rk_errf(e, errno, "cannot create directory %s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return rk_errf(e, errno, "cannot create directory %s: %s", buf, strerror(errno));
	return 0;
}

static int rm_at(int dfd, const char *name, dev_t dev, rk_err *e)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : rk_errf(e, errno, "cannot stat %s: %s", name, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		if (st.st_dev != dev)
			return rk_errf(e, EBUSY, "refusing to remove %s: a filesystem is mounted there", name);
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return rk_errf(e, errno, "cannot open directory %s: %s", name, strerror(errno));
		DIR *d = fdopendir(fd);
		if (!d) {
			close(fd);
			return rk_errf(e, errno, "cannot read directory %s: %s", name, strerror(errno));
		}
		struct dirent *de;
		int rc = 0;
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (rm_at(dirfd(d), de->d_name, dev, e) < 0) {
				rc = -1;
				break;
			}
		}
		closedir(d);
		if (rc < 0)
			return rc;
		if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
			return rk_errf(e, errno, "cannot remove directory %s: %s", name, strerror(errno));
		return 0;
	}
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		return rk_errf(e, errno, "cannot remove %s: %s", name, strerror(errno));
	return 0;
}

int rk_rm_rf(const char *path, rk_err *e)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : rk_errf(e, errno, "cannot stat %s: %s", path, strerror(errno));
	if (rm_at(AT_FDCWD, path, st.st_dev, e) < 0)
		return rk_err_prefix(e, "while removing %s", path);
	return 0;
}

int rk_safe_name(const char *s, size_t max)
{
	size_t n = 0;
	if (!s || !*s)
		return 0;
	for (const char *p = s; *p; p++, n++) {
		char c = *p;
		if (n >= max)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return 0;
	}
	return strcmp(s, ".") && strcmp(s, "..");
}

void *rk_dlopen_syms(const char *soname, const struct rk_dlsym *syms, size_t n, const char *pkg, const char *need,
		     rk_err *e)
{
	void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		rk_errf(e, ENOENT, "cannot load %s: %s; install it with: apt-get install %s", soname, dlerror(), pkg);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		*syms[i].slot = dlsym(h, syms[i].name);
		if (!*syms[i].slot) {
			dlclose(h);
			rk_errf(e, ENOSYS, "%s has no %s: riklet needs %s; install it with: apt-get install %s", soname,
				syms[i].name, need, pkg);
			return NULL;
		}
	}
	return h;
}
