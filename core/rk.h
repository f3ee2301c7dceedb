/* rk.h — conventions shared by every core/ module: the error struct, cleanup helpers, logging.
 * core/ never includes Lua headers. */
#ifndef RK_H
#define RK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

/* Fallible functions return < 0 and fill an rk_err (crun's libcrun_error_t habit).
 * code is an errno value where one applies, else -1. msg says what failed, on what, and why. */
typedef struct rk_err {
	int code;
	char msg[1024];
} rk_err;

/* Fill e (if non-NULL) and return -1: `return rk_errf(e, errno, "open %s: %s", p, strerror(errno));` */
int rk_errf(rk_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefix an existing message: "while X: <old message>". Returns -1. */
int rk_err_prefix(rk_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void rk_freep(void *p)
{
	free(*(void **)p);
}
static inline void rk_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define RK_AUTOFREE __attribute__((cleanup(rk_freep)))
#define RK_AUTOCLOSE __attribute__((cleanup(rk_closep)))

/* Room for one more element in a growable array *v of *cap elements of size elem, n in use: when
 * full, doubled (first: the capacity of the first allocation). 0, or -1 (out of memory: *v and
 * *cap unchanged). */
static inline int rk_grow(void *v, size_t *cap, size_t n, size_t elem, size_t first)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : first;
	void *nv = realloc(*(void **)v, nc * elem);
	if (!nv)
		return -1;
	*(void **)v = nv;
	*cap = nc;
	return 0;
}

/* Logging: one line per event, text or JSON, to stderr. */
enum rk_log_level { RK_LOG_ERROR = 0, RK_LOG_WARN, RK_LOG_INFO, RK_LOG_DEBUG };
void rk_log_setup(int level, int json);
int rk_log_level(void);
int rk_log_parse_level(const char *s); /* "error".."debug" → level, -1 if unknown */
void rk_log(int level, const char *subsys, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void rk_logv(int level, const char *subsys, const char *fmt, va_list ap);
/* The same for a message of len bytes that may hold anything (NUL, invalid UTF-8: escaped in JSON). */
void rk_log_msg(int level, const char *subsys, const char *msg, size_t len);
/* Length of the valid UTF-8 sequence (RFC 3629) at s[i] (1-4), or 0 when the byte there starts none. */
size_t rk_utf8_seq(const unsigned char *s, size_t len, size_t i);
#define rk_error(sub, ...) rk_log(RK_LOG_ERROR, sub, __VA_ARGS__)
#define rk_warn(sub, ...) rk_log(RK_LOG_WARN, sub, __VA_ARGS__)
#define rk_info(sub, ...) rk_log(RK_LOG_INFO, sub, __VA_ARGS__)
#define rk_debug(sub, ...) rk_log(RK_LOG_DEBUG, sub, __VA_ARGS__)

/* Small file helpers used across modules. */
/* Read a whole file (NUL-terminated) into *out; max caps the size. */
int rk_read_file(const char *path, size_t max, char **out, size_t *len, rk_err *e);
/* The same from an open fd (read to its end); path only names it in errors. */
int rk_read_fd(int fd, const char *path, size_t max, char **out, size_t *len, rk_err *e);
/* Write atomically: tmp file in the same dir, fsync, rename, fsync dir. */
int rk_write_file_atomic(const char *path, const void *buf, size_t len, int mode, rk_err *e);
/* The same replace-by-rename (readers see the old or the new file, never a part), without the
 * fsyncs: for files that are rebuilt after a crash anyway (a bundle's config.json, written on the
 * event loop before runc create: a create interrupted by a crash is rolled back and redone). */
int rk_write_file_replace(const char *path, const void *buf, size_t len, int mode, rk_err *e);
/* mkdir -p */
int rk_mkdir_p(const char *path, int mode, rk_err *e);
/* rm -rf that never crosses a mount point (refuses to descend into another filesystem). */
int rk_rm_rf(const char *path, rk_err *e);
/* A name safe to use as one path component: [A-Za-z0-9._-], 1..max chars, not "." or "..". */
int rk_safe_name(const char *s, size_t max);

/* A library riklet loads with dlopen on first use (core/curl_lazy.c, core/nl_lazy.c): dlopen
 * soname (RTLD_NOW | RTLD_LOCAL) and dlsym each of syms[0..n) into its slot. Returns the handle,
 * or NULL with e saying what failed (not found, or a symbol missing: the version needed) and what
 * to install (pkg: the Debian package). */
struct rk_dlsym {
	const char *name;
	void **slot;
};
void *rk_dlopen_syms(const char *soname, const struct rk_dlsym *syms, size_t n, const char *pkg, const char *need,
		     rk_err *e);

#endif
