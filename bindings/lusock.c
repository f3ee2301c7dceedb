/* lusock.c — `riklet.usock`: a small client for a local unix stream socket (a VMM's control
 * socket: QEMU's QMP), on the loop, never blocking it.
 *
 *   usock.connect(path) -> sock | nil, err      (non-blocking connect; a socket nobody listens on,
 *                                                or a full backlog, is an error at once)
 *   usock.connect_tcp(ipv4, port[, {netns = PATH}]) -> sock | nil, err   starts a non-blocking
 *                                                TCP connect (a readiness probe), from inside the
 *                                                network namespace PATH if given (the socket is
 *                                                made there; the thread returns at once):
 *                                                sock:wait_writable(), then
 *                                                sock:so_error() -> nil (connected) | message
 *   sock:read() -> data | nil (end of stream) | nil, err   yields until bytes arrive (at most
 *                                                64 KiB per call); one reader at a time
 *   sock:send(data[, offset]) -> true | nil, sent_so_far | nil, err
 *                                                writes data from offset (bytes) on without
 *                                                waiting; nil, N: the socket buffer is full after
 *                                                N bytes: sock:wait_writable() then send again
 *   sock:wait_writable() -> true | nil           yields until more bytes can be sent (nil: closed)
 *   sock:close()                                idempotent; a read or wait pending on it returns
 *                                                nil, "closed" (on the next loop round) */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "loop.h"
#include "lrk.h"
#include "net.h"

#define USOCK_MT "riklet.usock.sock"
#define READ_MAX 65536

struct usock {
	int fd;
	rk_watch *w;
	uint32_t events;
	int reading, writing;
	lrk_wait rw, ww;
};

static struct usock *check_sock(lua_State *L)
{
	struct usock *s = luaL_checkudata(L, 1, USOCK_MT);
	if (s->fd < 0)
		luaL_error(L, "unix socket is closed");
	return s;
}

static void set_events(struct usock *s)
{
	uint32_t ev = (s->reading ? EPOLLIN : 0) | (s->writing ? EPOLLOUT : 0);
	if (ev != s->events && rk_watch_modify(s->w, ev, NULL) == 0)
		s->events = ev;
}

static void sock_ready(void *ud, int fd, uint32_t ev)
{
	struct usock *s = ud;
	if (s->reading && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		s->reading = 0;
		set_events(s);
		char buf[READ_MAX];
		ssize_t n = read(fd, buf, sizeof buf);
		int err = errno;
		lua_State *co = lrk_wake_begin(s->rw);
		if (co) {
			int nres = 1;
			if (n > 0)
				lua_pushlstring(co, buf, (size_t)n);
			else if (n == 0)
				lua_pushnil(co);
			else {
				lua_pushnil(co);
				lua_pushfstring(co, "reading the unix socket: %s", strerror(err));
				nres = 2;
			}
			lrk_wake_end(s->rw, nres);
		}
	}
	if (s->writing && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
		s->writing = 0;
		set_events(s);
		lua_State *co = lrk_wake_begin(s->ww);
		if (co) {
			lua_pushboolean(co, 1);
			lrk_wake_end(s->ww, 1);
		}
	}
}

/* The connected (or connecting) socket fd as a sock object watched on the loop; fd is closed on
 * failure. Also the read end of a pipe (riklet.proc's sync_pipe): lrk_usock_push. */
static int push_sock(lua_State *L, int fd)
{
	struct usock *s = lua_newuserdata(L, sizeof *s);
	*s = (struct usock){.fd = fd};
	luaL_getmetatable(L, USOCK_MT);
	lua_setmetatable(L, -2);
	rk_err e = {0};
	s->w = rk_loop_watch_fd(lrk_loop(L), fd, 0, sock_ready, s, &e);
	if (!s->w) {
		close(fd);
		s->fd = -1;
		return lrk_fail_err(L, &e);
	}
	return 1;
}

static int l_connect(lua_State *L)
{
	size_t len;
	const char *path = luaL_checklstring(L, 1, &len);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (len == 0 || len >= sizeof sa.sun_path)
		return lrk_fail(L, "unix socket path %s is empty or longer than %d bytes", path,
				(int)sizeof sa.sun_path - 1);
	memcpy(sa.sun_path, path, len);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return lrk_fail(L, "cannot create a unix socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int err = errno;
		close(fd);
		return lrk_fail(L, "cannot connect to %s: %s", path, strerror(err));
	}
	return push_sock(L, fd);
}

static int l_connect_tcp(lua_State *L)
{
	const char *ip = luaL_checkstring(L, 1);
	int port = (int)luaL_checkinteger(L, 2);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (port < 1 || port > 65535 || inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
		return lrk_fail(L, "%s:%d is not an IPv4 address and port", ip, port);
	const char *ns = NULL;
	if (lua_istable(L, 3)) {
		lua_getfield(L, 3, "netns");
		ns = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	int saved = -1;
	if (ns) {
		rk_err e = {0};
		saved = rk_netns_enter(ns, &e);
		if (saved < 0)
			return lrk_fail_err(L, &e);
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err = errno;
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
		err = errno;
		close(fd);
		fd = -2;
	}
	if (saved >= 0)
		rk_netns_leave(saved, NULL);
	if (fd == -1)
		return lrk_fail(L, "cannot create a TCP socket: %s", strerror(err));
	if (fd < 0)
		return lrk_fail(L, "cannot connect to %s:%d: %s", ip, port, strerror(err));
	return push_sock(L, fd);
}

/* sock:so_error() -> nil | message  (the outcome of connect_tcp once writable) */
static int l_so_error(lua_State *L)
{
	struct usock *s = check_sock(L);
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (!err)
		return 0;
	lua_pushstring(L, strerror(err));
	return 1;
}

static int l_read(lua_State *L)
{
	struct usock *s = check_sock(L);
	if (s->reading)
		return luaL_error(L, "another task is already reading this unix socket");
	s->rw = lrk_wait_begin(L);
	s->reading = 1;
	set_events(s);
	return lua_yield(L, 0);
}

static int l_write(lua_State *L)
{
	struct usock *s = check_sock(L);
	size_t len, off = luaL_optinteger(L, 3, 0);
	const char *data = luaL_checklstring(L, 2, &len);
	while (off < len) {
		ssize_t n = send(s->fd, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (s->writing)
				return luaL_error(L, "another task is already writing to this unix socket");
			lua_pushnil(L);
			lua_pushinteger(L, (lua_Integer)off);
			return 2;
		}
		if (n < 0)
			return lrk_fail(L, "writing to the unix socket: %s", strerror(errno));
		off += (size_t)n;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* sock:wait_writable() — yields until the socket can take more bytes (used by write's Lua loop) */
static int l_wait_writable(lua_State *L)
{
	struct usock *s = check_sock(L);
	if (s->writing)
		return luaL_error(L, "another task is already writing to this unix socket");
	s->ww = lrk_wait_begin(L);
	s->writing = 1;
	set_events(s);
	return lua_yield(L, 0);
}

static void closed_cb(void *ud)
{
	lrk_wait *w = ud;
	lua_State *co = lrk_wake_begin(*w);
	if (co) {
		lua_pushnil(co);
		lua_pushstring(co, "closed");
		lrk_wake_end(*w, 2);
	}
	free(w);
}

static void wake_closed(lua_State *L, lrk_wait w)
{
	lrk_wait *p = malloc(sizeof *p);
	if (!p)
		return; /* the task stays asleep: out of memory is fatal elsewhere soon enough */
	*p = w;
	rk_loop_defer_owned(lrk_loop(L), closed_cb, p);
}

static int l_close(lua_State *L)
{
	struct usock *s = luaL_checkudata(L, 1, USOCK_MT);
	if (s->fd < 0)
		return 0;
	rk_watch_cancel(s->w);
	close(s->fd);
	s->fd = -1;
	/* the waiting tasks are resumed from the loop, never from inside this Lua call */
	if (s->reading)
		wake_closed(L, s->rw);
	if (s->writing)
		wake_closed(L, s->ww);
	s->reading = s->writing = 0;
	return 0;
}

static int l_gc(lua_State *L)
{
	struct usock *s = luaL_checkudata(L, 1, USOCK_MT);
	if (s->fd >= 0) {
		rk_watch_cancel(s->w);
		close(s->fd);
		s->fd = -1;
	}
	return 0;
}

static const luaL_Reg sock_methods[] = {
	{"read", l_read},	  {"send", l_write},  {"wait_writable", l_wait_writable},
	{"so_error", l_so_error}, {"close", l_close}, {NULL, NULL}};

int lrk_usock_push(lua_State *L, int fd)
{
	luaL_getmetatable(L, USOCK_MT); /* the class, even when riklet.usock was never required */
	int known = !lua_isnil(L, -1);
	lua_pop(L, 1);
	if (!known)
		lrk_newclass(L, USOCK_MT, sock_methods, l_gc);
	return push_sock(L, fd);
}

static int open_usock(lua_State *L)
{
	lrk_newclass(L, USOCK_MT, sock_methods, l_gc);
	static const luaL_Reg fns[] = {{"connect", l_connect}, {"connect_tcp", l_connect_tcp}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.usock", open_usock)
