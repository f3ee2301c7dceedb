/* lfs.c — `riklet.fs`: the filesystem operations the agent needs, over core/rk.h and dirwatch.
 * All return value | nil, err on expected failure. write_atomic and rm_rf run on the worker pool
 * and yield the calling task (see below); same results.
 *
 *   fs.read(path[, max=16 MiB[, {follow=bool}]]) -> string   a regular file only, never a wait on a
 *                       FIFO, a symbolic link refused unless follow, a file over max refused unread
 *   fs.write_atomic(path, data[, mode="0644"[, {sync = false}]]) -> true   (sync false: replaced by
 *     rename all the same, without the two fsyncs: survives a crash of riklet, not of the machine;
 *     up to 64 KiB done on the loop thread, no worker, when nothing for the path is on the pool)
 *   fs.sync(path...) -> true                     fsync of each file or directory, in order, on the
 *                                                worker pool (what fs.write_atomic{sync = false} wrote)
 *   fs.append(path, data) -> true                fs.mkdir_p(path[, mode="0755"]) -> true
 *   (modes are octal strings: Lua has no octal literals, so a number is refused)
 *   fs.rm_rf(path) -> true (never crosses a mount) fs.unlink(path) -> true (absent is fine)
 *   fs.exists(path) -> boolean                   fs.stat(path) -> {type=, size=, mtime=, ino=, dev=}
 *   fs.list(dir) -> sorted array of names        fs.safe_name(s[, max=128]) -> boolean
 *   fs.rename(a, b) -> true                      fs.tail(path, max_bytes) -> last bytes of a file
 *   fs.link(existing, new) -> true               (a hard link)
 *   fs.read_from(path, offset[, max]) -> data, next_offset
 *   fs.open_read(path) -> reader; reader:read([max=65536]) -> data ("" at end of file, more later
 *                       if the file grows; still readable after the file is unlinked); reader:close()
 *                       reader:stat() (fstat: the open file's) reader:seek(offset) -> true
 *   fs.lock(path) -> lock (exclusive flock, not waiting; lock:close()) | nil, "locked by pid N"
 *   fs.watch_dir(dir) -> watcher; watcher:read() -> array of {kind="written"|"removed"|"overflow"|"gone", name=}
 *                       (yields until events); watcher:close() (a read waiting on it returns an
 *                       empty array) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "dirwatch.h"
#include "pool.h"
#include "lrk.h"

#define WATCH_MT "riklet.fs.watcher"

/* File modes are octal strings ("0700"): Lua has no octal literals, and 0700 in Lua is seven
 * hundred. A number is refused so that mistake cannot happen silently. */
static int check_mode(lua_State *L, int idx, int dflt)
{
	if (lua_isnoneornil(L, idx))
		return dflt;
	if (lua_type(L, idx) != LUA_TSTRING)
		return luaL_argerror(L, idx,
				     "the mode must be an octal string such as \"0700\" (Lua has no octal literals)");
	const char *s = lua_tostring(L, idx);
	char *end;
	long m = strtol(s, &end, 8);
	if (!*s || *end || m < 0 || m > 07777)
		return luaL_argerror(L, idx, "the mode must be an octal string such as \"0700\"");
	return (int)m;
}

/* What a file that is not a regular file is, for the error message. */
static const char *file_kind(mode_t m)
{
	return S_ISDIR(m)     ? "a directory"
		: S_ISFIFO(m) ? "a FIFO (named pipe)"
		: S_ISCHR(m)  ? "a character device"
		: S_ISBLK(m)  ? "a block device"
		: S_ISSOCK(m) ? "a socket"
			      : "not a regular file";
}

/* fs.read(path[, max=16 MiB[, {follow=bool}]]) -> data | nil, err
 * Regular files only, and never a wait: the file is opened O_NONBLOCK (a FIFO dropped where a
 * manifest or a record is expected would block open() and freeze the loop), a symbolic link is
 * refused unless follow (O_NOFOLLOW), and anything but a regular file or a file larger than max
 * is refused from fstat, before reading. */
static int l_read(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	size_t max = (size_t)luaL_optnumber(L, 2, 16 << 20);
	int follow = 0;
	if (lua_istable(L, 3)) {
		lua_getfield(L, 3, "follow");
		follow = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	RK_AUTOCLOSE int fd = open(p, O_RDONLY | O_NONBLOCK | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
	if (fd < 0 && errno == ELOOP && !follow)
		return lrk_fail(L, "%s is a symbolic link: riklet reads only regular files here, not links", p);
	if (fd < 0)
		return lrk_fail(L, "cannot open %s: %s", p, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0)
		return lrk_fail(L, "cannot stat %s: %s", p, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return lrk_fail(L, "%s is %s: riklet reads only regular files here", p, file_kind(st.st_mode));
	if ((size_t)st.st_size > max)
		return lrk_fail(L, "%s is larger than %zu bytes (%lld bytes)", p, max, (long long)st.st_size);
	/* the size may change while reading: rk_read_fd refuses more than max all the same */
	char *buf;
	size_t n;
	rk_err e = {0};
	if (rk_read_fd(fd, p, max, &buf, &n, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushlstring(L, buf, n);
	free(buf);
	return 1;
}

/* ---- calls that wait on the disk run on the worker pool (lrk_offload) ----
 * fs.write_atomic (two fsyncs) and fs.rm_rf (a whole tree) yield the calling task while a worker
 * thread does the work, so the loop keeps serving everything else. Calls on the same path run in
 * call order; fs.unlink of a path with such work in flight waits for it (a removed record cannot
 * be brought back by a write that was still on its way). Outside a task they run right away. */
struct fsjob {
	char *path;
	char *data;
	size_t len;
	int mode;
	int nosync;
	int rc;
	rk_err e;
};

static struct fsjob *fsjob_new(lua_State *L, const char *path, const char *data, size_t len)
{
	struct fsjob *j = calloc(1, sizeof *j);
	if (j && !(j->path = strdup(path)))
		goto oom;
	if (j && data && !(j->data = malloc(len ? len : 1)))
		goto oom;
	if (!j)
		goto oom;
	if (data)
		memcpy(j->data, data, len);
	j->len = len;
	return j;
oom:
	if (j)
		free(j->path);
	free(j);
	luaL_error(L, "out of memory");
	return NULL;
}

static void fsjob_free(void *ud)
{
	struct fsjob *j = ud;
	free(j->path);
	free(j->data);
	free(j);
}

static int fsjob_push(lua_State *L, void *ud)
{
	struct fsjob *j = ud;
	if (j->rc < 0)
		return lrk_fail_err(L, &j->e);
	lua_pushboolean(L, 1);
	return 1;
}

static void write_work(void *ud)
{
	struct fsjob *j = ud;
	j->rc = j->nosync ? rk_write_file_replace(j->path, j->data, j->len, j->mode, &j->e)
			  : rk_write_file_atomic(j->path, j->data, j->len, j->mode, &j->e);
}

static void rm_rf_work(void *ud)
{
	struct fsjob *j = ud;
	j->rc = rk_rm_rf(j->path, &j->e);
}

static void unlink_work(void *ud)
{
	struct fsjob *j = ud;
	if (unlink(j->path) < 0 && errno != ENOENT)
		j->rc = rk_errf(&j->e, errno, "cannot remove %s: %s", j->path, strerror(errno));
}

/* fsync each NUL-separated path of j->data in order; the first failure ends it */
static void sync_work(void *ud)
{
	struct fsjob *j = ud;
	for (size_t off = 0; off < j->len; off += strlen(j->data + off) + 1) {
		const char *p = j->data + off;
		/* symbolic links followed (an operator may move STATE/records to another disk by one),
		 * and a directory whose file system cannot fsync one (EINVAL) is not an error: as
		 * rk_write_file_replace does */
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || (fsync(fd) < 0 && !(errno == EINVAL && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)))) {
			int err = errno;
			if (fd >= 0)
				close(fd);
			j->rc = rk_errf(&j->e, err, "cannot sync %s to disk: %s", p, strerror(err));
			return;
		}
		close(fd);
	}
}

/* fs.sync(path...) -> true | nil, err (yields in a task): makes durable what a write without sync
 * left in the page cache (files first, then the directory holding their renames). Ordered with the
 * first path's writes: a write_atomic of it made meanwhile waits for the sync (else its rename
 * could land between the file's fsync and the directory's, which would then make durable a name
 * whose data was never synced) */
static int l_sync(lua_State *L)
{
	int n = lua_gettop(L);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		size_t len;
		const char *p = luaL_checklstring(L, i, &len);
		if (memchr(p, 0, len))
			return luaL_argerror(L, i, "path holds a NUL byte");
		luaL_addlstring(&b, p, len + 1);
	}
	luaL_pushresult(&b);
	size_t len;
	const char *d = lua_tolstring(L, -1, &len);
	struct fsjob *j = fsjob_new(L, n ? luaL_checkstring(L, 1) : "", d, len);
	return lrk_offload(L, n ? luaL_checkstring(L, 1) : NULL, sync_work, fsjob_push, fsjob_free, j);
}

/* fs.write_atomic(path, data[, mode="0644"[, {sync = false}]]) -> true | nil, err (yields in a task) */
#define INLINE_WRITE_MAX 65536
static int l_write_atomic(lua_State *L)
{
	size_t len;
	const char *p = luaL_checkstring(L, 1), *d = luaL_checklstring(L, 2, &len);
	int mode = check_mode(L, 3, 0644);
	int nosync = 0;
	if (lua_istable(L, 4)) {
		lua_getfield(L, 4, "sync");
		nosync = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	/* a small write without fsync waits on no disk: done here, as oci.c writes a bundle's config,
	 * unless work on the same path is still on the pool (call order); a handoff to a worker and
	 * back took 1-10 ms of a Pod start on a loaded machine, for three record writes on its path */
	if (nosync && len <= INLINE_WRITE_MAX && !lrk_offload_busy(p)) {
		rk_err e = {0};
		if (rk_write_file_replace(p, d, len, mode, &e) < 0)
			return lrk_fail_err(L, &e);
		lua_pushboolean(L, 1);
		return 1;
	}
	struct fsjob *j = fsjob_new(L, p, d, len);
	j->mode = mode;
	j->nosync = nosync;
	return lrk_offload(L, p, write_work, fsjob_push, fsjob_free, j);
}

static int l_append(lua_State *L)
{
	size_t len;
	const char *p = luaL_checkstring(L, 1), *d = luaL_checklstring(L, 2, &len);
	int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		return lrk_fail(L, "cannot open %s: %s", p, strerror(errno));
	ssize_t w = write(fd, d, len);
	int err = errno;
	close(fd);
	if (w != (ssize_t)len)
		return lrk_fail(L, "cannot write %s: %s", p, strerror(err));
	lua_pushboolean(L, 1);
	return 1;
}

static int l_mkdir_p(lua_State *L)
{
	rk_err e = {0};
	if (rk_mkdir_p(luaL_checkstring(L, 1), check_mode(L, 2, 0755), &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

/* fs.rm_rf(path) -> true | nil, err (yields in a task) */
static int l_rm_rf(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	return lrk_offload(L, p, rm_rf_work, fsjob_push, fsjob_free, fsjob_new(L, p, NULL, 0));
}

static int l_unlink(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	if (lrk_offload_busy(p) && lrk_in_task(L))
		return lrk_offload(L, p, unlink_work, fsjob_push, fsjob_free, fsjob_new(L, p, NULL, 0));
	if (unlink(p) < 0 && errno != ENOENT)
		return lrk_fail(L, "cannot remove %s: %s", p, strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

/* fs.link(existing, new): link(2) without a child process (the Function driver links the cached
 * rootfs into an instance dir on every create). */
static int l_link(lua_State *L)
{
	const char *a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
	if (link(a, b) < 0)
		return lrk_fail(L, "cannot link %s to %s: %s", b, a, strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

static int l_rename(lua_State *L)
{
	const char *a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
	if (rename(a, b) < 0)
		return lrk_fail(L, "cannot rename %s to %s: %s", a, b, strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

static int l_exists(lua_State *L)
{
	struct stat st;
	lua_pushboolean(L, lstat(luaL_checkstring(L, 1), &st) == 0);
	return 1;
}

static void push_stat(lua_State *L, const struct stat *st)
{
	lua_createtable(L, 0, 5);
	lua_pushstring(L,
		       S_ISDIR(st->st_mode)	      ? "dir"
			       : S_ISREG(st->st_mode) ? "file"
			       : S_ISLNK(st->st_mode) ? "link"
						      : "other");
	lua_setfield(L, -2, "type");
	lua_pushnumber(L, (double)st->st_size);
	lua_setfield(L, -2, "size");
	lua_pushnumber(L, (double)st->st_mtim.tv_sec + st->st_mtim.tv_nsec / 1e9);
	lua_setfield(L, -2, "mtime");
	lua_pushnumber(L, (double)st->st_ino);
	lua_setfield(L, -2, "ino");
	lua_pushnumber(L, (double)st->st_dev);
	lua_setfield(L, -2, "dev");
}

static int l_stat(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	struct stat st;
	if (lstat(p, &st) < 0)
		return lrk_fail(L, "cannot stat %s: %s", p, strerror(errno));
	push_stat(L, &st);
	return 1;
}

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int l_list(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	DIR *d = opendir(p);
	if (!d)
		return lrk_fail(L, "cannot read directory %s: %s", p, strerror(errno));
	size_t n = 0, cap = 16;
	char **names = malloc(cap * sizeof *names);
	struct dirent *de;
	while (names && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap *= 2) * sizeof *names);
			if (!nn)
				break;
			names = nn;
		}
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	if (!names)
		return luaL_error(L, "out of memory");
	qsort(names, n, sizeof *names, cmp);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushstring(L, names[i]);
		lua_rawseti(L, -2, (int)i + 1);
		free(names[i]);
	}
	free(names);
	return 1;
}

/* A Lua string may hold a NUL that C would stop at ("a\0/../x" would pass as "a"): refused. */
static int l_safe_name(lua_State *L)
{
	size_t len = 0;
	const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
	lua_pushboolean(L, s && strlen(s) == len && rk_safe_name(s, (size_t)luaL_optinteger(L, 2, 128)));
	return 1;
}

/* fs.tail(path, max) -> the last max bytes of the file (whole file if smaller) */
static int l_tail(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	off_t max = (off_t)luaL_optnumber(L, 2, 65536);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lrk_fail(L, "cannot open %s: %s", p, strerror(errno));
	struct stat st;
	fstat(fd, &st);
	off_t off = st.st_size > max ? st.st_size - max : 0;
	size_t want = (size_t)(st.st_size - off);
	char *buf = malloc(want + 1);
	ssize_t r = buf ? pread(fd, buf, want, off) : -1;
	close(fd);
	if (r < 0) {
		free(buf);
		return lrk_fail(L, "cannot read %s", p);
	}
	lua_pushlstring(L, buf, (size_t)r);
	free(buf);
	return 1;
}

/* fs.read_from(path, offset[, max=65536]) -> data, new_offset (data "" at end of file) */
static int l_read_from(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	off_t off = (off_t)luaL_checknumber(L, 2);
	size_t max = (size_t)luaL_optnumber(L, 3, 65536);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lrk_fail(L, "cannot open %s: %s", p, strerror(errno));
	char *buf = malloc(max ? max : 1);
	ssize_t r = buf ? pread(fd, buf, max, off) : -1;
	close(fd);
	if (r < 0) {
		free(buf);
		return lrk_fail(L, "cannot read %s: %s", p, strerror(errno));
	}
	lua_pushlstring(L, buf, (size_t)r);
	lua_pushnumber(L, (double)(off + r));
	free(buf);
	return 2;
}

/* fs.lock(path) -> lock | nil, err — an exclusive flock held until lock:close() or exit.
 * Fails at once (does not wait) when another process holds it. */
#define LOCK_MT "riklet.fs.lock"
static int l_lock(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return lrk_fail(L, "cannot open lock file %s: %s", p, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		for (char *q = pid; *q; q++)
			if (*q == '\n')
				*q = 0;
		close(fd);
		if (err == EWOULDBLOCK)
			return lrk_fail(L, "%s is locked by another riklet (pid %s)", p, pid[0] ? pid : "unknown");
		return lrk_fail(L, "cannot lock %s: %s", p, strerror(err));
	}
	char pid[32];
	int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
	if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) < 0)
		rk_warn("fs", "cannot write pid into %s", p);
	lrk_push_fd(L, fd, LOCK_MT);
	return 1;
}

static int l_lock_close(lua_State *L)
{
	return lrk_close_fd(L, LOCK_MT);
}

/* ---- reader: an open file read sequentially ----
 * Holding the fd keeps the bytes reachable after the file is removed: `riklet run` follows a
 * container's log while the instance is destroyed (its directory removed) and still prints the
 * container's last words. */
#define READER_MT "riklet.fs.reader"

/* fs.open_read(path) -> reader | nil, err */
static int l_open_read(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	int *u = lrk_push_fd(L, -1, READER_MT);
	*u = open(p, O_RDONLY | O_CLOEXEC);
	if (*u < 0)
		return lrk_fail(L, "cannot open %s: %s", p, strerror(errno));
	return 1;
}

/* reader:read([max=65536]) -> data ("" at end of file) | nil, err */
static int l_reader_read(lua_State *L)
{
	int *u = luaL_checkudata(L, 1, READER_MT);
	size_t max = (size_t)luaL_optnumber(L, 2, 65536);
	if (*u < 0)
		return luaL_error(L, "reader:read: the reader is closed");
	char *buf = malloc(max ? max : 1);
	if (!buf)
		return lrk_fail(L, "out of memory");
	ssize_t r;
	do
		r = read(*u, buf, max);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		int err = errno;
		free(buf);
		return lrk_fail(L, "cannot read: %s", strerror(err));
	}
	lua_pushlstring(L, buf, (size_t)r);
	free(buf);
	return 1;
}

/* reader:stat() -> fs.stat's table, of the open file (not of whatever its path names now) */
static int l_reader_stat(lua_State *L)
{
	int *u = luaL_checkudata(L, 1, READER_MT);
	struct stat st;
	if (*u < 0)
		return luaL_error(L, "reader:stat: the reader is closed");
	if (fstat(*u, &st) < 0)
		return lrk_fail(L, "cannot stat: %s", strerror(errno));
	push_stat(L, &st);
	return 1;
}

/* reader:seek(offset) -> true: the next read starts at offset (from the file's start) */
static int l_reader_seek(lua_State *L)
{
	int *u = luaL_checkudata(L, 1, READER_MT);
	off_t off = (off_t)luaL_checknumber(L, 2);
	if (*u < 0)
		return luaL_error(L, "reader:seek: the reader is closed");
	if (lseek(*u, off, SEEK_SET) < 0)
		return lrk_fail(L, "cannot seek: %s", strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

/* reader:close() — idempotent */
static int l_reader_close(lua_State *L)
{
	return lrk_close_fd(L, READER_MT);
}

/* ---- directory watcher ---- */
struct watcher {
	int fd;
	rk_watch *w;
	int waiting;
	lrk_wait wt;
	int pending; /* events arrived while nobody was waiting */
};

static struct watcher *check_watcher(lua_State *L)
{
	struct watcher *w = luaL_checkudata(L, 1, WATCH_MT);
	if (w->fd < 0)
		luaL_error(L, "directory watcher is closed");
	return w;
}

struct collect {
	lua_State *L;
	int n;
};

static void collect_cb(void *ud, int kind, const char *name)
{
	struct collect *c = ud;
	static const char *kinds[] = {"", "written", "removed", "overflow", "gone"};
	lua_createtable(c->L, 0, 2);
	lua_pushstring(c->L, kinds[kind]);
	lua_setfield(c->L, -2, "kind");
	lua_pushstring(c->L, name);
	lua_setfield(c->L, -2, "name");
	lua_rawseti(c->L, -2, ++c->n);
}

static void watch_ready(void *ud, int fd, uint32_t ev)
{
	struct watcher *w = ud;
	if (!w->waiting) {
		w->pending = 1;
		rk_watch_modify(w->w, 0, NULL); /* stop level-triggered wakeups until someone reads */
		return;
	}
	lua_State *co = lrk_wake_begin(w->wt);
	w->waiting = 0;
	if (!co)
		return;
	lua_newtable(co);
	struct collect c = {co, 0};
	rk_err e = {0};
	rk_dirwatch_read(fd, collect_cb, &c, &e);
	lrk_wake_end(w->wt, 1);
}

static int l_watch_dir(lua_State *L)
{
	const char *dir = luaL_checkstring(L, 1);
	rk_err e = {0};
	int fd = rk_dirwatch_open(dir, &e);
	if (fd < 0)
		return lrk_fail_err(L, &e);
	struct watcher *w = lua_newuserdata(L, sizeof *w);
	*w = (struct watcher){.fd = fd};
	luaL_getmetatable(L, WATCH_MT);
	lua_setmetatable(L, -2);
	w->w = rk_loop_watch_fd(lrk_loop(L), fd, EPOLLIN, watch_ready, w, &e);
	if (!w->w) {
		close(fd);
		w->fd = -1;
		return lrk_fail_err(L, &e);
	}
	return 1;
}

static int l_watcher_read(lua_State *L)
{
	struct watcher *w = check_watcher(L);
	if (w->waiting)
		return luaL_error(L, "another task is already reading this directory watcher");
	if (w->pending) {
		w->pending = 0;
		rk_watch_modify(w->w, EPOLLIN, NULL);
	}
	w->wt = lrk_wait_begin(L);
	w->waiting = 1;
	return lua_yield(L, 0);
}

/* A reader waiting when its watcher is closed gets an empty list (from the loop, never from inside
 * the closing Lua call). */
static void watcher_closed_cb(void *ud)
{
	lrk_wait *wt = ud;
	lua_State *co = lrk_wake_begin(*wt);
	if (co) {
		lua_newtable(co);
		lrk_wake_end(*wt, 1);
	}
	free(wt);
}

/* close() of an inotify instance waits in the kernel for its marks' release: up to 18 ms, > 5 ms
 * in 8 of 40 closes measured alone (2026-12-01), and 14-19 ms in 4 of 7 traced Pod starts, where
 * the loop thread waited with it right after the pid file's event (conmon.lua's watch_pid): the
 * fd is closed on a worker thread (out of epoll already); on the loop only without a pool. */
struct fd_close {
	struct rk_pool_job job;
	int fd;
};
static void fd_close_work(void *ud)
{
	close(((struct fd_close *)ud)->fd);
}
static void fd_close_done(void *ud, int cancelled)
{
	(void)cancelled;
	free(ud);
}
static void close_off_loop(int fd)
{
	struct fd_close *c = lrk_pool() ? malloc(sizeof *c) : NULL;
	if (!c) {
		close(fd);
		return;
	}
	*c = (struct fd_close){.job = {.work = fd_close_work, .done = fd_close_done}, .fd = fd};
	c->job.ud = c;
	rk_pool_submit(lrk_pool(), &c->job);
}

static int l_watcher_close(lua_State *L)
{
	struct watcher *w = luaL_checkudata(L, 1, WATCH_MT);
	if (w->fd >= 0) {
		rk_watch_cancel(w->w);
		close_off_loop(w->fd);
		w->fd = -1;
		lrk_wait *wt = w->waiting ? malloc(sizeof *wt) : NULL;
		w->waiting = 0;
		if (wt) {
			*wt = w->wt;
			rk_loop_defer_owned(lrk_loop(L), watcher_closed_cb, wt);
		}
	}
	return 0;
}

static int open_fs(lua_State *L)
{
	static const luaL_Reg wm[] = {{"read", l_watcher_read}, {"close", l_watcher_close}, {NULL, NULL}};
	lrk_newclass(L, WATCH_MT, wm, l_watcher_close);
	static const luaL_Reg lm[] = {{"close", l_lock_close}, {NULL, NULL}};
	lrk_newclass(L, LOCK_MT, lm, l_lock_close);
	static const luaL_Reg rm[] = {{"read", l_reader_read},
				      {"stat", l_reader_stat},
				      {"seek", l_reader_seek},
				      {"close", l_reader_close},
				      {NULL, NULL}};
	lrk_newclass(L, READER_MT, rm, l_reader_close);
	static const luaL_Reg fns[] = {{"read", l_read},
				       {"write_atomic", l_write_atomic},
				       {"append", l_append},
				       {"mkdir_p", l_mkdir_p},
				       {"sync", l_sync},
				       {"rm_rf", l_rm_rf},
				       {"unlink", l_unlink},
				       {"rename", l_rename},
				       {"link", l_link},
				       {"exists", l_exists},
				       {"stat", l_stat},
				       {"list", l_list},
				       {"safe_name", l_safe_name},
				       {"tail", l_tail},
				       {"watch_dir", l_watch_dir},
				       {"read_from", l_read_from},
				       {"lock", l_lock},
				       {"open_read", l_open_read},
				       {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.fs", open_fs)
