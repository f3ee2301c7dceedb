/* lhttp.c — `riklet.http`: HTTP requests from Lua tasks over core/http (libcurl multi on the loop).
 *
 *   http.start(opts) -> req | nil, err        starts the request, never waits
 *   req:wait() -> res | nil, err, kind        yields until it ended (one waiter at a time)
 *   req:cancel()                              stops it; a task waiting in req:wait() gets
 *                                             nil, "cancelled", "cancelled". Idempotent.
 *   req:bytes() -> body bytes received so far
 *   http.request(opts) -> res | nil, err, kind   start + wait
 *   http.sha256(s) -> lowercase hex            (libcrypto, loaded on first use)
 * opts: url (http:// or https://; with unix_socket "http://localhost/PATH"), method ("GET"),
 *   unix_socket, headers {Name = value}, body (string), json (string: body with Content-Type
 *   application/json), out (stream a 2xx body into this file, created 0600), max_bytes,
 *   timeout, connect_timeout (seconds), low_speed_bytes + low_speed_time (bytes/s for seconds),
 *   if_none_match, if_modified_since, follow (redirects).
 * res: {status=, bytes=, content_length= (nil if not announced), etag=, last_modified=,
 *   content_type=, body= (in memory; with out: the start of a non-2xx body), url= (effective)}.
 *   An HTTP error status is a res (the caller decides); kind names a failure: "transport",
 *   "timeout", "too_big", "truncated", "file", "cancelled". Misuse (bad option types) raises. */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "lrk.h"

#define REQ_MT "riklet.http.req"

static rk_http *client;

struct lreq {
	rk_http_req *r; /* NULL once ended or cancelled */
	int refs;	/* the userdata + a pending deferred wake */
	int ended;
	int waiting;
	lrk_wait w;
	int self_ref; /* the userdata, kept alive while a task waits: http.request leaves no other
		       * reference to it once its C frame yields */
	/* the result, copied */
	int fail;
	char *error;
	long status;
	char *etag, *last_modified, *content_type, *url, *body;
	size_t body_len;
	uint64_t bytes;
	int64_t content_length;
};

static const char *kinds[] = {"ok", "transport", "timeout", "too_big", "truncated", "file", "cancelled"};
#define FAIL_CANCELLED 6

static void lreq_unref(struct lreq *q)
{
	if (--q->refs > 0)
		return;
	if (q->r)
		rk_http_cancel(q->r);
	free(q->error);
	free(q->etag);
	free(q->last_modified);
	free(q->content_type);
	free(q->url);
	free(q->body);
	free(q);
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void setfield_str(lua_State *L, const char *k, const char *v)
{
	if (!v)
		return;
	lua_pushstring(L, v);
	lua_setfield(L, -2, k);
}

static int push_result(lua_State *L, struct lreq *q)
{
	if (q->fail) {
		lua_pushnil(L);
		lua_pushstring(L, q->error ? q->error : "failed");
		lua_pushstring(L, kinds[q->fail]);
		return 3;
	}
	lua_createtable(L, 0, 9);
	lua_pushinteger(L, (lua_Integer)q->status);
	lua_setfield(L, -2, "status");
	lua_pushnumber(L, (lua_Number)q->bytes);
	lua_setfield(L, -2, "bytes");
	if (q->content_length >= 0) {
		lua_pushnumber(L, (lua_Number)q->content_length);
		lua_setfield(L, -2, "content_length");
	}
	setfield_str(L, "etag", q->etag);
	setfield_str(L, "last_modified", q->last_modified);
	setfield_str(L, "content_type", q->content_type);
	setfield_str(L, "url", q->url);
	lua_pushlstring(L, q->body ? q->body : "", q->body_len);
	lua_setfield(L, -2, "body");
	return 1;
}

static void wake(struct lreq *q)
{
	if (!q->waiting)
		return;
	q->waiting = 0;
	if (q->self_ref != LUA_NOREF) { /* q stays alive: the caller holds a reference (on_done, deferred_wake) */
		luaL_unref(lrk_main(), LUA_REGISTRYINDEX, q->self_ref);
		q->self_ref = LUA_NOREF;
	}
	lua_State *co = lrk_wake_begin(q->w);
	if (!co)
		return;
	lrk_wake_end(q->w, push_result(co, q));
}

static void on_done(void *ud, const rk_http_result *res)
{
	struct lreq *q = ud;
	q->r = NULL;
	q->ended = 1;
	q->fail = res->fail;
	q->error = dup_or_null(res->error);
	q->status = res->status;
	q->etag = dup_or_null(res->etag);
	q->last_modified = dup_or_null(res->last_modified);
	q->content_type = dup_or_null(res->content_type);
	q->url = dup_or_null(res->effective_url);
	q->bytes = res->bytes;
	q->content_length = res->content_length;
	q->body = malloc(res->body_len + 1);
	if (q->body) {
		memcpy(q->body, res->body, res->body_len);
		q->body[res->body_len] = 0;
		q->body_len = res->body_len;
	}
	q->refs++; /* the wake runs Lua, which may drop the last reference */
	wake(q);
	lreq_unref(q);
}

static struct lreq *check_req(lua_State *L)
{
	struct lreq **qq = luaL_checkudata(L, 1, REQ_MT);
	if (!*qq)
		luaL_error(L, "HTTP request handle is closed");
	return *qq;
}

static const char *opt_str(lua_State *L, int idx, const char *k)
{
	lua_getfield(L, idx, k);
	const char *s = NULL;
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "http option %s must be a string", k);
		s = lua_tostring(L, -1);
	}
	lua_pop(L, 1); /* the string stays alive: it is held by the opts table */
	return s;
}

static double opt_num(lua_State *L, int idx, const char *k)
{
	lua_getfield(L, idx, k);
	double d = 0;
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TNUMBER)
			luaL_error(L, "http option %s must be a number", k);
		d = lua_tonumber(L, -1);
		if (d < 0)
			luaL_error(L, "http option %s must not be negative", k);
	}
	lua_pop(L, 1);
	return d;
}

static int push_header(char ***arr, size_t *n, const char *k, const char *v)
{
	char **na = realloc(*arr, sizeof **arr * (*n + 2));
	if (!na)
		return -1;
	*arr = na;
	size_t l = strlen(k) + strlen(v) + 3;
	if (!(na[*n] = malloc(l)))
		return -1;
	snprintf(na[*n], l, "%s: %s", k, v);
	na[++*n] = NULL;
	return 0;
}

static void free_headers(char **h)
{
	for (size_t i = 0; h && h[i]; i++)
		free(h[i]);
	free(h);
}

/* Start from the opts table at index 1; pushes the req userdata (1 value) or nil, err (2). */
static int start(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	rk_http_opts o;
	memset(&o, 0, sizeof o);
	o.url = opt_str(L, 1, "url");
	if (!o.url)
		return luaL_error(L, "http: opts.url is required");
	o.method = opt_str(L, 1, "method");
	o.unix_socket = opt_str(L, 1, "unix_socket");
	o.out_path = opt_str(L, 1, "out");
	o.max_bytes = (uint64_t)opt_num(L, 1, "max_bytes");
	o.timeout_ms = (long)(opt_num(L, 1, "timeout") * 1000);
	o.connect_timeout_ms = (long)(opt_num(L, 1, "connect_timeout") * 1000);
	o.low_speed_bytes = (long)opt_num(L, 1, "low_speed_bytes");
	o.low_speed_time_s = (long)opt_num(L, 1, "low_speed_time");
	lua_getfield(L, 1, "follow");
	o.follow_redirects = lua_toboolean(L, -1);
	lua_pop(L, 1);
	size_t blen = 0;
	const char *json = opt_str(L, 1, "json");
	lua_getfield(L, 1, json ? "json" : "body");
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			return luaL_error(L, "http option body must be a string");
		o.body = lua_tolstring(L, -1, &blen);
		o.body_len = blen;
	}
	lua_pop(L, 1);

	char **hdrs = NULL;
	size_t nh = 0;
	int oom = 0;
	if (json)
		oom |= push_header(&hdrs, &nh, "Content-Type", "application/json");
	const char *inm = opt_str(L, 1, "if_none_match"), *ims = opt_str(L, 1, "if_modified_since");
	if (inm)
		oom |= push_header(&hdrs, &nh, "If-None-Match", inm);
	if (ims)
		oom |= push_header(&hdrs, &nh, "If-Modified-Since", ims);
	lua_getfield(L, 1, "headers");
	if (lua_istable(L, -1)) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
				free_headers(hdrs);
				return luaL_error(L, "http option headers must map names to string values");
			}
			oom |= push_header(&hdrs, &nh, lua_tostring(L, -2), lua_tostring(L, -1));
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	o.headers = (const char **)hdrs;

	struct lreq **qq = lua_newuserdata(L, sizeof *qq);
	*qq = NULL;
	luaL_getmetatable(L, REQ_MT);
	lua_setmetatable(L, -2);
	struct lreq *q = calloc(1, sizeof *q);
	if (!q || oom) {
		free(q);
		free_headers(hdrs);
		return lrk_fail(L, "out of memory starting an HTTP request");
	}
	q->refs = 1;
	q->self_ref = LUA_NOREF;
	rk_err e;
	if (!client && !(client = rk_http_new(lrk_loop(L), &e))) {
		free(q);
		free_headers(hdrs);
		return lrk_fail_err(L, &e);
	}
	q->r = rk_http_start(client, &o, on_done, q, &e);
	free_headers(hdrs);
	if (!q->r) {
		free(q);
		return lrk_fail_err(L, &e);
	}
	*qq = q;
	return 1;
}

/* http.start(opts) -> req | nil, err */
static int l_start(lua_State *L)
{
	return start(L);
}

/* ud: the stack index of q's userdata */
static int wait_on(lua_State *L, struct lreq *q, int ud)
{
	if (q->ended)
		return push_result(L, q);
	if (q->waiting)
		return luaL_error(L, "another task is already waiting for this HTTP request");
	q->w = lrk_wait_begin(L);
	q->waiting = 1;
	lua_pushvalue(L, ud);
	q->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return lua_yield(L, 0);
}

/* req:wait() -> res | nil, err, kind */
static int l_wait(lua_State *L)
{
	return wait_on(L, check_req(L), 1);
}

/* http.request(opts) -> res | nil, err, kind */
static int l_request(lua_State *L)
{
	lrk_wait_begin(L); /* raises outside a task, before anything starts */
	int n = start(L);
	if (n != 1)
		return n;
	struct lreq **qq = lua_touserdata(L, -1);
	return wait_on(L, *qq, lua_gettop(L));
}

static void deferred_wake(void *ud)
{
	struct lreq *q = ud;
	wake(q);
	lreq_unref(q);
}

/* req:cancel() */
static int l_cancel(lua_State *L)
{
	struct lreq *q = check_req(L);
	if (q->ended)
		return 0;
	if (q->r)
		rk_http_cancel(q->r);
	q->r = NULL;
	q->ended = 1;
	q->fail = FAIL_CANCELLED;
	q->error = strdup("cancelled");
	if (q->waiting) { /* resume it from the loop, not from inside this task */
		q->refs++;
		rk_loop_defer(lrk_loop(L), deferred_wake, q);
	}
	return 0;
}

/* req:bytes() -> body bytes received so far */
static int l_bytes(lua_State *L)
{
	struct lreq *q = check_req(L);
	lua_pushnumber(L, (lua_Number)(q->r ? rk_http_req_bytes(q->r) : q->bytes));
	return 1;
}

static int l_req_gc(lua_State *L)
{
	struct lreq **qq = luaL_checkudata(L, 1, REQ_MT);
	if (*qq)
		lreq_unref(*qq);
	*qq = NULL;
	return 0;
}

/* http.sha256(s) -> hex. libcrypto is already in the process once libcurl is (Debian's links it). */
static int l_sha256(lua_State *L)
{
	static unsigned char *(*fn)(const unsigned char *, size_t, unsigned char *);
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	if (!fn) {
		void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
		if (h)
			*(void **)&fn = dlsym(h, "SHA256");
		if (!fn)
			return luaL_error(L, "cannot load SHA256 from libcrypto.so.3 (apt-get install libssl3)");
	}
	unsigned char d[32];
	char hex[65];
	fn((const unsigned char *)s, n, d);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	lua_pushlstring(L, hex, 64);
	return 1;
}

static void free_client(void)
{
	rk_http_free(client);
	client = NULL;
}

static int open_http(lua_State *L)
{
	static const luaL_Reg req_methods[] = {
		{"wait", l_wait}, {"cancel", l_cancel}, {"bytes", l_bytes}, {NULL, NULL}};
	lrk_newclass(L, REQ_MT, req_methods, l_req_gc);
	static const luaL_Reg fns[] = {{"start", l_start}, {"request", l_request}, {"sha256", l_sha256}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	lrk_at_shutdown(free_client);
	return 1;
}

LRK_MODULE("riklet.http", open_http)
