/* lhttpd.c — `riklet.httpd_core`: the HTTP server of core/httpd.c for Lua. Every request runs
 * its handler as a new task, which may wait before it answers. riklet.httpd (Lua) adds routing.
 *
 *   httpd_core.listen(addr, opts, fn) -> server | nil, err
 *       addr "HOST:PORT" or "unix:/path"; opts {body_max=, conn_max=, header_timeout=,
 *       idle_timeout=, unix_mode=}; fn(req, info) runs as a task per request, info =
 *       {method=, path=, body=, headers = {lowercased name = value}, query = {name = value}}
 *   server:port() -> TCP port (0 for a unix socket); server:close()
 *   req:respond(status, headers, body) -> true | nil, err       headers: {name = value} or nil
 *   req:stream(status, headers) -> true | nil, err              then:
 *   req:write(data[, high]) -> true | nil, err    waits while more than high bytes (default
 *                                         1 MiB) are buffered for the client, until a quarter is left
 *   req:finish()                          ends the stream
 *   req:gone() -> boolean                 the client left (or the answer is sent)
 * A request collected without an answer is answered 500. */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "httpd.h"
#include "lrk.h"

#define SRV_MT "riklet.httpd.server"
#define REQ_MT "riklet.httpd.req"
#define WRITE_HIGH (1u << 20)
#define WRITE_LOW (256u << 10)

struct server {
	rk_httpd *s;
	int fn_ref;
	int self_ref; /* a listening server is referenced from the registry until close(): one the
		       * caller dropped would otherwise be collected and its socket closed */
};

struct req {
	rk_httpd_req *r;
	int answered;
	int waiting;
	lrk_wait wt;
};

static void push_kv(void *ud, const char *k, const char *v)
{
	lua_State *L = ud;
	char low[256];
	size_t n = strlen(k);
	if (n >= sizeof low)
		n = sizeof low - 1;
	for (size_t i = 0; i < n; i++)
		low[i] = (char)tolower((unsigned char)k[i]);
	lua_pushlstring(L, low, n);
	lua_pushstring(L, v);
	lua_settable(L, -3);
}

static void push_query(void *ud, const char *k, const char *v)
{
	lua_State *L = ud;
	lua_pushstring(L, k);
	lua_pushstring(L, v);
	lua_settable(L, -3);
}

static void on_request(void *ud, rk_httpd_req *r)
{
	struct server *sv = ud;
	lua_State *L = lrk_main();
	lua_rawgeti(L, LUA_REGISTRYINDEX, sv->fn_ref);
	struct req *q = lua_newuserdata(L, sizeof *q);
	*q = (struct req){.r = r};
	luaL_getmetatable(L, REQ_MT);
	lua_setmetatable(L, -2);
	lua_createtable(L, 0, 5);
	lua_pushstring(L, rk_httpd_req_method(r));
	lua_setfield(L, -2, "method");
	lua_pushstring(L, rk_httpd_req_path(r));
	lua_setfield(L, -2, "path");
	size_t bl;
	const char *b = rk_httpd_req_body(r, &bl);
	lua_pushlstring(L, b, bl);
	lua_setfield(L, -2, "body");
	lua_newtable(L);
	rk_httpd_req_each(r, 0, push_kv, L);
	lua_setfield(L, -2, "headers");
	lua_newtable(L);
	rk_httpd_req_each(r, 1, push_query, L);
	lua_setfield(L, -2, "query");
	lrk_spawn(L, 2);
}

static struct server *check_server(lua_State *L)
{
	struct server *sv = luaL_checkudata(L, 1, SRV_MT);
	if (!sv->s)
		luaL_error(L, "this HTTP server is closed");
	return sv;
}

static unsigned opt_uint(lua_State *L, int idx, const char *name)
{
	lua_getfield(L, idx, name);
	lua_Number n = lua_isnil(L, -1) ? 0 : luaL_checknumber(L, -1);
	lua_pop(L, 1);
	if (n < 0 || n > 4e9)
		luaL_error(L, "httpd option %s is out of range", name);
	return (unsigned)n;
}

static int l_listen(lua_State *L)
{
	const char *addr = luaL_checkstring(L, 1);
	if (!lua_isnoneornil(L, 2))
		luaL_checktype(L, 2, LUA_TTABLE);
	else {
		lua_newtable(L);
		lua_replace(L, 2);
	}
	luaL_checktype(L, 3, LUA_TFUNCTION);
	struct rk_httpd_opts o = {.listen = addr};
	lua_getfield(L, 2, "body_max");
	o.body_max = lua_isnil(L, -1) ? 0 : (size_t)luaL_checknumber(L, -1);
	lua_pop(L, 1);
	o.conn_max = opt_uint(L, 2, "conn_max");
	o.header_timeout_s = opt_uint(L, 2, "header_timeout");
	o.idle_timeout_s = opt_uint(L, 2, "idle_timeout");
	o.unix_mode = (int)opt_uint(L, 2, "unix_mode");
	struct server *sv = lua_newuserdata(L, sizeof *sv);
	*sv = (struct server){.fn_ref = LUA_NOREF, .self_ref = LUA_NOREF};
	luaL_getmetatable(L, SRV_MT);
	lua_setmetatable(L, -2);
	rk_err e = {0};
	sv->s = rk_httpd_new(lrk_loop(L), &o, on_request, sv, &e);
	if (!sv->s)
		return lrk_fail_err(L, &e);
	lua_pushvalue(L, 3);
	sv->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushvalue(L, -1);
	sv->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 1;
}

static int l_server_port(lua_State *L)
{
	lua_pushinteger(L, rk_httpd_port(check_server(L)->s));
	return 1;
}

static int l_server_close(lua_State *L)
{
	struct server *sv = luaL_checkudata(L, 1, SRV_MT);
	if (sv->s) {
		rk_httpd_free(sv->s);
		sv->s = NULL;
	}
	if (sv->fn_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, sv->fn_ref);
		sv->fn_ref = LUA_NOREF;
	}
	if (sv->self_ref != LUA_NOREF) {
		luaL_unref(L, LUA_REGISTRYINDEX, sv->self_ref);
		sv->self_ref = LUA_NOREF;
	}
	return 0;
}

static struct req *check_req(lua_State *L)
{
	struct req *q = luaL_checkudata(L, 1, REQ_MT);
	if (!q->r)
		luaL_error(L, "this HTTP request is released");
	return q;
}

/* A NULL-terminated name, value array from the table at idx (nil: none); strings stay on the stack
 * slots of the table, so they live as long as the call. */
static const char **headers_of(lua_State *L, int idx)
{
	if (lua_isnoneornil(L, idx))
		return NULL;
	luaL_checktype(L, idx, LUA_TTABLE);
	size_t n = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		n++;
		lua_pop(L, 1);
	}
	const char **h = lua_newuserdata(L, (2 * n + 1) * sizeof *h); /* freed by the GC */
	size_t i = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
			luaL_error(L, "HTTP headers must be a table of name = value strings");
		h[i++] = lua_tostring(L, -2);
		h[i++] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	h[i] = NULL;
	return h;
}

static int l_req_respond(lua_State *L)
{
	struct req *q = check_req(L);
	int status = (int)luaL_checkinteger(L, 2);
	const char **h = headers_of(L, 3);
	size_t len = 0;
	const char *body = luaL_optlstring(L, 4, "", &len);
	rk_err e = {0};
	if (status < 100 || status > 599)
		return luaL_argerror(L, 2, "an HTTP status is 100 to 599");
	if (rk_httpd_respond(q->r, status, (const char *const *)h, body, len, &e) < 0)
		return lrk_fail_err(L, &e);
	q->answered = 1;
	lua_pushboolean(L, 1);
	return 1;
}

static int l_req_stream(lua_State *L)
{
	struct req *q = check_req(L);
	int status = (int)luaL_checkinteger(L, 2);
	const char **h = headers_of(L, 3);
	rk_err e = {0};
	if (rk_httpd_stream(q->r, status, (const char *const *)h, &e) < 0)
		return lrk_fail_err(L, &e);
	q->answered = 1;
	lua_pushboolean(L, 1);
	return 1;
}

static void drained(void *ud, rk_httpd_req *r)
{
	struct req *q = ud;
	if (!q->waiting)
		return;
	q->waiting = 0;
	lua_State *co = lrk_wake_begin(q->wt);
	if (!co)
		return;
	if (rk_httpd_req_gone(r)) {
		lua_pushnil(co);
		lua_pushstring(co, "the client is gone");
		lrk_wake_end(q->wt, 2);
	} else {
		lua_pushboolean(co, 1);
		lrk_wake_end(q->wt, 1);
	}
}

static int l_req_write(lua_State *L)
{
	struct req *q = check_req(L);
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	rk_err e = {0};
	size_t high = (size_t)luaL_optinteger(L, 3, WRITE_HIGH);
	long buffered = rk_httpd_write(q->r, data, len, &e);
	if (buffered < 0)
		return lrk_fail_err(L, &e);
	if ((size_t)buffered <= high || !lrk_in_task(L) || q->waiting) {
		lua_pushboolean(L, 1);
		return 1;
	}
	q->wt = lrk_wait_begin(L);
	q->waiting = 1;
	rk_httpd_on_drain(q->r, high == WRITE_HIGH ? WRITE_LOW : high / 4 + 1, drained,
			  q); /* fires later: the buffer is above the low mark now */
	return lua_yield(L, 0);
}

static int l_req_finish(lua_State *L)
{
	struct req *q = check_req(L);
	rk_httpd_end(q->r);
	return 0;
}

static int l_req_gone(lua_State *L)
{
	struct req *q = check_req(L);
	lua_pushboolean(L, rk_httpd_req_gone(q->r));
	return 1;
}

static int l_req_gc(lua_State *L)
{
	struct req *q = luaL_checkudata(L, 1, REQ_MT);
	if (!q->r)
		return 0;
	if (!q->answered && !rk_httpd_req_gone(q->r)) {
		static const char msg[] = "riklet: internal error: this request was dropped without an answer\n";
		rk_httpd_respond(q->r, 500, NULL, msg, sizeof msg - 1, NULL);
	}
	rk_httpd_end(q->r);
	rk_httpd_on_drain(q->r, 0, NULL, NULL);
	rk_httpd_req_unref(q->r);
	q->r = NULL;
	return 0;
}

static int open_httpd(lua_State *L)
{
	static const luaL_Reg sm[] = {{"port", l_server_port}, {"close", l_server_close}, {NULL, NULL}};
	lrk_newclass(L, SRV_MT, sm, l_server_close);
	static const luaL_Reg rm[] = {{"respond", l_req_respond}, {"stream", l_req_stream}, {"write", l_req_write},
				      {"finish", l_req_finish},	  {"gone", l_req_gone},	    {NULL, NULL}};
	lrk_newclass(L, REQ_MT, rm, l_req_gc);
	static const luaL_Reg fns[] = {{"listen", l_listen}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.httpd_core", open_httpd)
