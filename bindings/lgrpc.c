/* lgrpc.c — `riklet.grpc`: gRPC calls from Lua tasks over core/grpc, messages as plain tables
 * (bindings/lpb.c). Every wait yields the calling task.
 *
 *   grpc.channel(url, opts) -> channel | nil, err
 *   ch:unary(path, req_type, req, resp_type[, opts]) -> resp | nil, err, code
 *   ch:server_stream(path, req_type, req, resp_type[, opts]) -> stream | nil, err
 *   ch:client_stream(path, req_type, resp_type[, opts]) -> stream | nil, err
 *   stream:recv() -> msg | nil, err, code          (code 0 with err "end of stream": clean end)
 *   stream:headers() -> true | nil, err, code      (waits until the server accepted the call)
 *   stream:ready() -> true | nil, err, code        (waits until the server answered at the HTTP/2
 *                                                   level, or headers came: see on_ready in grpc.h)
 *   stream:send(tbl) -> true | nil, err            (never waits; raises on a bad table)
 *   stream:close_send(); stream:finish() -> resp | nil, err, code
 *   stream:close(); stream:status() -> ended, code, message; stream:pending() -> bytes
 *   ch:close(); ch:stats() -> {sockets=, calls=}; ch.url
 *   grpc.status_name(code) -> "UNAVAILABLE"; grpc.codes -> {OK=0, ..., UNAUTHENTICATED=16}
 * Codes are gRPC status codes; err says what failed, on which server and method. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "grpc.h"
#include "lrk.h"

#define CHAN_MT "riklet.grpc.channel"
#define CALL_MT "riklet.grpc.call"

/* bindings/lpb.c */
const ProtobufCMessageDescriptor *lpb_checktype(lua_State *L, int idx);
void lpb_push(lua_State *L, const ProtobufCMessage *m, int enums_as_numbers);
ProtobufCMessage *lpb_check(lua_State *L, int idx, const ProtobufCMessageDescriptor *d);

struct lcall;

struct lchan {
	rk_grpc_channel *ch;
	rk_loop *loop;
	struct lcall *calls; /* open calls, to detach them when the channel closes */
};

struct msgnode {
	ProtobufCMessage *m;
	struct msgnode *next;
};

enum { W_NONE, W_RECV, W_FINISH, W_HEADERS, W_READY };

struct lcall {
	rk_grpc_call *c; /* NULL once ended or cancelled */
	struct lchan *lch;
	struct lcall *prev, *next;
	const ProtobufCMessageDescriptor *req, *resp;
	struct msgnode *qh, *qt;
	int done, status, headers, ready;
	char *err;
	int waiting;
	lrk_wait w;
	int self_ref; /* unary calls: keeps the (unexposed) userdata alive until it ends */
	int wake_deferred;
};

static void lc_unlink(struct lcall *lc)
{
	if (!lc->lch)
		return;
	if (lc->prev)
		lc->prev->next = lc->next;
	else if (lc->lch->calls == lc)
		lc->lch->calls = lc->next;
	if (lc->next)
		lc->next->prev = lc->prev;
	lc->prev = lc->next = NULL;
	lc->lch = NULL;
}

static void lc_set_end(struct lcall *lc, int status, const char *msg)
{
	lc->done = 1;
	lc->status = status;
	free(lc->err);
	lc->err = strdup(msg && *msg ? msg : rk_grpc_status_name(status));
	lc->c = NULL;
	lc_unlink(lc);
}

static ProtobufCMessage *q_pop(struct lcall *lc)
{
	struct msgnode *n = lc->qh;
	if (!n)
		return NULL;
	lc->qh = n->next;
	if (!lc->qh)
		lc->qt = NULL;
	ProtobufCMessage *m = n->m;
	free(n);
	return m;
}

static void q_free(struct lcall *lc)
{
	ProtobufCMessage *m;
	while ((m = q_pop(lc)))
		protobuf_c_message_free_unpacked(m, NULL);
}

/* Push the end result of a call on L: for recv/headers nil, err, code; for finish the response. */
static int push_end(lua_State *L, struct lcall *lc, int kind)
{
	if (kind == W_FINISH && lc->status == RK_GRPC_OK) {
		ProtobufCMessage *m = q_pop(lc);
		if (m) {
			lpb_push(L, m, 0);
			protobuf_c_message_free_unpacked(m, NULL);
			return 1;
		}
		lua_pushnil(L);
		lua_pushstring(L, "the server ended the call with OK but sent no response message");
		lua_pushinteger(L, RK_GRPC_INTERNAL);
		return 3;
	}
	lua_pushnil(L);
	lua_pushstring(L, lc->status == RK_GRPC_OK ? "end of stream" : lc->err);
	lua_pushinteger(L, lc->status);
	return 3;
}

static void release_self(struct lcall *lc)
{
	if (lc->self_ref != LUA_NOREF) {
		luaL_unref(lrk_main(), LUA_REGISTRYINDEX, lc->self_ref);
		lc->self_ref = LUA_NOREF;
	}
}

/* Wake the task waiting on lc (if any) with what it waits for. Loop context only. */
static void wake(struct lcall *lc)
{
	if (lc->waiting == W_NONE)
		return;
	int kind = lc->waiting;
	lua_State *co = lrk_wake_begin(lc->w);
	if (!co) { /* the task is gone */
		lc->waiting = W_NONE;
		return;
	}
	int n;
	if (kind == W_RECV && lc->qh) {
		ProtobufCMessage *m = q_pop(lc);
		lpb_push(co, m, 0);
		protobuf_c_message_free_unpacked(m, NULL);
		n = 1;
	} else if ((kind == W_HEADERS && lc->headers) || (kind == W_READY && lc->ready)) {
		lua_pushboolean(co, 1);
		n = 1;
	} else if (lc->done) {
		n = push_end(co, lc, kind);
	} else {
		return; /* nothing for this waiter yet */
	}
	lc->waiting = W_NONE;
	if (lc->done)
		release_self(lc);
	lrk_wake_end(lc->w, n); /* runs Lua now: lc may be closed by it, not freed (it is on its stack) */
}

static void on_headers(void *ud)
{
	struct lcall *lc = ud;
	lc->headers = 1;
	if (lc->waiting == W_HEADERS)
		wake(lc);
}

static void on_message(void *ud, ProtobufCMessage *m, const uint8_t *b, size_t n)
{
	struct lcall *lc = ud;
	struct msgnode *node = malloc(sizeof *node);
	if (!node) {
		protobuf_c_message_free_unpacked(m, NULL);
		return;
	}
	node->m = m;
	node->next = NULL;
	if (lc->qt)
		lc->qt->next = node;
	else
		lc->qh = node;
	lc->qt = node;
	if (lc->waiting == W_RECV)
		wake(lc);
}

static void on_done(void *ud, int status, const char *msg)
{
	struct lcall *lc = ud;
	lc_set_end(lc, status, msg);
	if (lc->waiting != W_NONE)
		wake(lc);
	else
		release_self(lc);
}

static void on_ready(void *ud)
{
	struct lcall *lc = ud;
	lc->ready = 1;
	if (lc->waiting == W_READY)
		wake(lc);
}

static const rk_grpc_call_cbs lcall_cbs = {on_headers, on_message, on_done, on_ready};

static void deferred_wake(void *ud)
{
	struct lcall *lc = ud;
	lc->wake_deferred = 0;
	wake(lc);
}

static struct lchan *check_chan(lua_State *L, int idx)
{
	struct lchan *c = luaL_checkudata(L, idx, CHAN_MT);
	if (!c->ch)
		luaL_error(L, "gRPC channel is closed");
	return c;
}

static struct lcall *check_call(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, CALL_MT);
}

static uint64_t opt_ms(lua_State *L, int idx, const char *name)
{
	if (!lua_istable(L, idx))
		return 0;
	lua_getfield(L, idx, name);
	double t = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
	lua_pop(L, 1);
	return t > 0 ? (uint64_t)(t * 1000 + 0.5) : 0;
}

/* Create the call userdata (left on the stack) and start the core call. Returns NULL and pushes
 * nil, err on failure (2 values above the userdata's slot are NOT left: the stack is nil, err). */
static struct lcall *start_call(lua_State *L, struct lchan *lch, int chan_idx, const char *path,
				const ProtobufCMessageDescriptor *req, const ProtobufCMessageDescriptor *resp,
				uint64_t deadline_ms, uint64_t header_timeout_ms)
{
	struct lcall *lc = lua_newuserdata(L, sizeof *lc);
	memset(lc, 0, sizeof *lc);
	lc->self_ref = LUA_NOREF;
	lc->req = req;
	lc->resp = resp;
	luaL_getmetatable(L, CALL_MT);
	lua_setmetatable(L, -2);
	/* the call keeps its channel alive */
	lua_createtable(L, 1, 0);
	lua_pushvalue(L, chan_idx);
	lua_rawseti(L, -2, 1);
	lua_setfenv(L, -2);
	rk_err e;
	lc->c = rk_grpc_call_start(lch->ch, path, deadline_ms, resp, &lcall_cbs, lc, &e);
	if (!lc->c) {
		lc->done = 1;
		lua_pop(L, 1);
		lrk_fail_err(L, &e);
		return NULL;
	}
	if (header_timeout_ms)
		rk_grpc_call_set_header_timeout(lc->c, header_timeout_ms);
	lc->lch = lch;
	lc->next = lch->calls;
	if (lch->calls)
		lch->calls->prev = lc;
	lch->calls = lc;
	return lc;
}

/* Pack the table at idx as lc->req and queue it. Raises on a bad table; nil, err on failure. */
static int send_table(lua_State *L, struct lcall *lc, int idx)
{
	ProtobufCMessage *m = lpb_check(L, idx, lc->req);
	rk_err e;
	int r = rk_grpc_call_send(lc->c, m, &e);
	lua_pop(L, 1); /* the message's anchor */
	if (r < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

static int wait_for(lua_State *L, struct lcall *lc, int kind)
{
	if (lc->waiting != W_NONE)
		return luaL_error(L, "another task is already waiting on this gRPC call");
	lc->w = lrk_wait_begin(L);
	lc->waiting = kind;
	return lua_yield(L, 0);
}

/* grpc.channel(url, opts) -> channel | nil, err
 *   url: "http://host:port" (h2c) or "https://host:port" (TLS)
 *   opts: ca_file, cert_file, key_file (TLS); max_recv (bytes, default 4 MiB);
 *         connect_timeout (s, default 10); handshake_timeout (s, default 10: h2c SETTINGS after
 *         connecting); keepalive_idle (s, default 30: silence before an HTTP/2 PING on h2c and TCP
 *         keepalive probes), keepalive_interval (s, default 10: between probes); keepalive_timeout
 *         (s, default 20: an unanswered PING, and TCP_USER_TIMEOUT for data or probes) */
static int l_channel(lua_State *L)
{
	const char *url = luaL_checkstring(L, 1);
	rk_grpc_opts o = {0};
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "ca_file");
		o.ca_file = lua_tostring(L, -1);
		lua_getfield(L, 2, "cert_file");
		o.cert_file = lua_tostring(L, -1);
		lua_getfield(L, 2, "key_file");
		o.key_file = lua_tostring(L, -1);
		lua_getfield(L, 2, "max_recv");
		o.max_recv = (size_t)lua_tonumber(L, -1);
		lua_getfield(L, 2, "connect_timeout");
		o.connect_timeout_ms = (long)(lua_tonumber(L, -1) * 1000);
		lua_getfield(L, 2, "keepalive_idle");
		o.keepalive_idle_s = (long)lua_tonumber(L, -1);
		lua_getfield(L, 2, "keepalive_interval");
		o.keepalive_intvl_s = (long)lua_tonumber(L, -1);
		lua_getfield(L, 2, "handshake_timeout");
		o.handshake_timeout_ms = (long)(lua_tonumber(L, -1) * 1000);
		lua_getfield(L, 2, "keepalive_timeout");
		o.user_timeout_ms = (long)(lua_tonumber(L, -1) * 1000);
		/* strings stay referenced by the opts table during the call; the channel copies them */
		lua_pop(L, 9);
	} else if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
	}
	struct lchan *c = lua_newuserdata(L, sizeof *c);
	memset(c, 0, sizeof *c);
	luaL_getmetatable(L, CHAN_MT);
	lua_setmetatable(L, -2);
	rk_err e;
	c->loop = lrk_loop(L);
	c->ch = rk_grpc_channel_new(c->loop, url, &o, &e);
	if (!c->ch)
		return lrk_fail_err(L, &e);
	return 1;
}

/* ch:unary(path, req_type, req, resp_type[, {timeout = s, header_timeout = s}]) -> resp | nil, err, code
 * Waits (yields) for the response. */
static int l_unary(lua_State *L)
{
	struct lchan *lch = check_chan(L, 1);
	const char *path = luaL_checkstring(L, 2);
	const ProtobufCMessageDescriptor *req = lpb_checktype(L, 3);
	luaL_checktype(L, 4, LUA_TTABLE);
	const ProtobufCMessageDescriptor *resp = lpb_checktype(L, 5);
	if (!lrk_in_task(L))
		return luaL_error(L, "ch:unary waits, so it must run inside a riklet task (task.spawn)");
	/* check the request before anything starts */
	lpb_check(L, 4, req);
	lua_pop(L, 1);
	struct lcall *lc =
		start_call(L, lch, 1, path, req, resp, opt_ms(L, 6, "timeout"), opt_ms(L, 6, "header_timeout"));
	if (!lc)
		return 2;
	lua_pushvalue(L, -1);
	lc->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	int r = send_table(L, lc, 4);
	if (lua_isnil(L, -r)) {
		rk_grpc_call_cancel(lc->c);
		lc_set_end(lc, RK_GRPC_CANCELLED, "send failed");
		release_self(lc);
		return r;
	}
	lua_pop(L, r);
	rk_grpc_call_close_send(lc->c);
	return wait_for(L, lc, W_FINISH);
}

/* ch:server_stream(path, req_type, req, resp_type[, {timeout = s, header_timeout = s}]) -> stream | nil, err
 * Returns at once; read with stream:recv(). */
static int l_server_stream(lua_State *L)
{
	struct lchan *lch = check_chan(L, 1);
	const char *path = luaL_checkstring(L, 2);
	const ProtobufCMessageDescriptor *req = lpb_checktype(L, 3);
	luaL_checktype(L, 4, LUA_TTABLE);
	const ProtobufCMessageDescriptor *resp = lpb_checktype(L, 5);
	lpb_check(L, 4, req);
	lua_pop(L, 1);
	struct lcall *lc =
		start_call(L, lch, 1, path, req, resp, opt_ms(L, 6, "timeout"), opt_ms(L, 6, "header_timeout"));
	if (!lc)
		return 2;
	int ud = lua_gettop(L);
	int r = send_table(L, lc, 4);
	if (lua_isnil(L, -r)) {
		rk_grpc_call_cancel(lc->c);
		lc_set_end(lc, RK_GRPC_CANCELLED, "send failed");
		return r;
	}
	lua_settop(L, ud);
	rk_grpc_call_close_send(lc->c);
	return 1;
}

/* ch:client_stream(path, req_type, resp_type[, {timeout = s, header_timeout = s}]) -> stream | nil, err
 * Send with stream:send(tbl), end with stream:finish(). */
static int l_client_stream(lua_State *L)
{
	struct lchan *lch = check_chan(L, 1);
	const char *path = luaL_checkstring(L, 2);
	const ProtobufCMessageDescriptor *req = lpb_checktype(L, 3);
	const ProtobufCMessageDescriptor *resp = lpb_checktype(L, 4);
	struct lcall *lc =
		start_call(L, lch, 1, path, req, resp, opt_ms(L, 5, "timeout"), opt_ms(L, 5, "header_timeout"));
	return lc ? 1 : 2;
}

/* ch:close() — ends every call still open on the channel (their waiters get CANCELLED). */
static int l_chan_close(lua_State *L)
{
	struct lchan *c = luaL_checkudata(L, 1, CHAN_MT);
	if (!c->ch)
		return 0;
	while (c->calls) {
		struct lcall *lc = c->calls;
		lc_set_end(lc, RK_GRPC_CANCELLED, "the gRPC channel was closed");
		if (lc->waiting != W_NONE && !lc->wake_deferred) {
			lc->wake_deferred = 1;
			rk_loop_defer(c->loop, deferred_wake, lc);
		}
	}
	rk_grpc_channel_free(c->ch); /* cancels the core calls without callbacks */
	c->ch = NULL;
	return 0;
}

/* ch:stats() -> {sockets = n, calls = n, url = "..."} */
static int l_chan_stats(lua_State *L)
{
	struct lchan *c = check_chan(L, 1);
	lua_createtable(L, 0, 3);
	lua_pushnumber(L, (lua_Number)rk_grpc_channel_sockets(c->ch));
	lua_setfield(L, -2, "sockets");
	lua_pushnumber(L, (lua_Number)rk_grpc_channel_calls(c->ch));
	lua_setfield(L, -2, "calls");
	lua_pushstring(L, rk_grpc_channel_url(c->ch));
	lua_setfield(L, -2, "url");
	return 1;
}

/* stream:recv() -> msg | nil, err, code   (waits; code 0 and "end of stream" on a clean end) */
static int l_recv(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	ProtobufCMessage *m = q_pop(lc);
	if (m) {
		lpb_push(L, m, 0);
		protobuf_c_message_free_unpacked(m, NULL);
		return 1;
	}
	if (lc->done)
		return push_end(L, lc, W_RECV);
	return wait_for(L, lc, W_RECV);
}

/* stream:headers() -> true | nil, err, code   (waits until the server accepted the call) */
static int l_headers(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	if (lc->headers) {
		lua_pushboolean(L, 1);
		return 1;
	}
	if (lc->done)
		return push_end(L, lc, W_HEADERS);
	return wait_for(L, lc, W_HEADERS);
}

/* stream:ready() -> true | nil, err, code   (waits until the server answered on the call's
 * connection at the HTTP/2 level, or sent headers; nil, err, code when the call ended first) */
static int l_ready(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	if (lc->ready || lc->headers) {
		lua_pushboolean(L, 1);
		return 1;
	}
	if (lc->done)
		return push_end(L, lc, W_READY);
	return wait_for(L, lc, W_READY);
}

/* stream:send(tbl) -> true | nil, err   (queues; never waits; raises on a bad table) */
static int l_send(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	if (!lc->c) {
		lpb_check(L, 2, lc->req); /* still report a bad table as such */
		return lrk_fail(L, "the gRPC call already ended: %s", lc->err ? lc->err : "closed");
	}
	return send_table(L, lc, 2);
}

/* stream:close_send() — no more messages from this side. */
static int l_close_send(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	if (lc->c)
		rk_grpc_call_close_send(lc->c);
	return 0;
}

/* stream:finish() -> resp | nil, err, code   (half-closes, then waits for the response) */
static int l_finish(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	if (lc->c)
		rk_grpc_call_close_send(lc->c);
	if (lc->done)
		return push_end(L, lc, W_FINISH);
	return wait_for(L, lc, W_FINISH);
}

/* stream:pending() -> bytes queued and not yet handed to the connection */
static int l_pending(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	lua_pushnumber(L, lc->c ? (lua_Number)rk_grpc_call_pending(lc->c) : 0);
	return 1;
}

/* stream:status() -> ended (bool), code (nil while open), message */
static int l_status(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	lua_pushboolean(L, lc->done);
	if (!lc->done)
		return 1;
	lua_pushinteger(L, lc->status);
	lua_pushstring(L, lc->err ? lc->err : "");
	return 3;
}

/* stream:close() — cancel the call (RST_STREAM); idempotent. A task waiting on it gets
 * nil, "cancelled", 1. */
static int l_call_close(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	if (lc->c) {
		rk_grpc_call_cancel(lc->c);
		rk_loop *loop = lc->lch ? lc->lch->loop : lrk_loop(L);
		lc_set_end(lc, RK_GRPC_CANCELLED, "cancelled");
		if (lc->waiting != W_NONE && !lc->wake_deferred) {
			lc->wake_deferred = 1;
			rk_loop_defer(loop, deferred_wake, lc);
		}
	}
	return 0;
}

static int l_call_gc(lua_State *L)
{
	struct lcall *lc = check_call(L, 1);
	if (lc->c) {
		rk_grpc_call_cancel(lc->c);
		lc->c = NULL;
	}
	lc_unlink(lc);
	q_free(lc);
	free(lc->err);
	lc->err = NULL;
	lc->done = 1;
	return 0;
}

static int l_chan_gc(lua_State *L)
{
	struct lchan *c = luaL_checkudata(L, 1, CHAN_MT);
	/* calls keep their channel alive, so calls are open here only when the whole state closes */
	while (c->calls)
		lc_set_end(c->calls, RK_GRPC_CANCELLED, "the gRPC channel was closed");
	if (c->ch)
		rk_grpc_channel_free(c->ch);
	c->ch = NULL;
	return 0;
}

/* channel.url */
static int l_chan_fields(lua_State *L)
{
	struct lchan *c = luaL_checkudata(L, 1, CHAN_MT);
	if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "url")) {
		lua_pushstring(L, c->ch ? rk_grpc_channel_url(c->ch) : "");
		return 1;
	}
	return 0;
}

/* grpc.status_name(code) -> "ALREADY_EXISTS" */
static int l_status_name(lua_State *L)
{
	lua_pushstring(L, rk_grpc_status_name((int)luaL_checkinteger(L, 1)));
	return 1;
}

static int open_grpc(lua_State *L)
{
	static const luaL_Reg chan_methods[] = {{"unary", l_unary},
						{"server_stream", l_server_stream},
						{"client_stream", l_client_stream},
						{"close", l_chan_close},
						{"stats", l_chan_stats},
						{NULL, NULL}};
	static const luaL_Reg call_methods[] = {{"recv", l_recv},
						{"headers", l_headers},
						{"ready", l_ready},
						{"send", l_send},
						{"close_send", l_close_send},
						{"finish", l_finish},
						{"pending", l_pending},
						{"status", l_status},
						{"close", l_call_close},
						{NULL, NULL}};
	lrk_newclass(L, CALL_MT, call_methods, l_call_gc);
	lrk_newclass_fields(L, CHAN_MT, chan_methods, l_chan_fields, l_chan_gc);

	static const luaL_Reg fns[] = {{"channel", l_channel}, {"status_name", l_status_name}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	lua_newtable(L);
	for (int i = 0; i <= RK_GRPC_UNAUTHENTICATED; i++) {
		lua_pushinteger(L, i);
		lua_setfield(L, -2, rk_grpc_status_name(i));
	}
	lua_setfield(L, -2, "codes");
	return 1;
}
LRK_MODULE("riklet.grpc", open_grpc)
