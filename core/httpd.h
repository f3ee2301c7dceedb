/* httpd.h — an HTTP/1.1 server on riklet's event loop (libmicrohttpd in external epoll mode: no
 * thread, no parser of ours). Listens on TCP HOST:PORT or on unix:/path. Every request is handed
 * to the handler once its body is complete; the connection is suspended until the answer is given
 * (rk_httpd_respond, or a stream: rk_httpd_stream + rk_httpd_write + rk_httpd_end), so an answer
 * may wait on anything. Limits: a body cap (413), a connection cap (503), a header deadline and an
 * idle timeout (the connection is closed).
 *
 * Lifetime: the handler owns a reference to the request (rk_httpd_req_unref when done with it);
 * the server keeps its own until the connection is finished. After the client went away
 * (rk_httpd_req_gone), answers and writes are dropped and return -1. */
#ifndef RK_HTTPD_H
#define RK_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include "loop.h"

typedef struct rk_httpd rk_httpd;
typedef struct rk_httpd_req rk_httpd_req;

struct rk_httpd_opts {
	const char *listen;	   /* "HOST:PORT" (HOST may be [v6]) or "unix:/path" */
	size_t body_max;	   /* bytes; 0 = 8 MiB */
	unsigned conn_max;	   /* open connections; a later one gets 503 when accepted; 0 = 256 */
	unsigned header_timeout_s; /* a request (headers and body) must arrive within this; 0 = 30 */
	unsigned idle_timeout_s;   /* a connection idle this long is closed; 0 = 60 */
	int unix_mode;		   /* permissions of a unix socket; 0 = 0660 */
};

/* The handler is called on the loop thread, never from inside libmicrohttpd. It must eventually
 * answer (or the connection stays open until the server is freed) and unref the request. */
typedef void (*rk_httpd_handler)(void *ud, rk_httpd_req *r);
/* Called (once) when a streamed request's buffer drained below the low-water mark or its client
 * went away: a writer that waited may go on. */
typedef void (*rk_httpd_notify)(void *ud, rk_httpd_req *r);

rk_httpd *rk_httpd_new(rk_loop *l, const struct rk_httpd_opts *o, rk_httpd_handler h, void *ud, rk_err *e);
/* Closes the listening socket and every connection (requests still held get gone = 1). */
void rk_httpd_free(rk_httpd *s);
/* The TCP port bound (useful with port 0), or 0 for a unix socket. */
int rk_httpd_port(rk_httpd *s);

const char *rk_httpd_req_method(rk_httpd_req *r);
const char *rk_httpd_req_path(rk_httpd_req *r);
const char *rk_httpd_req_body(rk_httpd_req *r, size_t *len);
/* Iterate headers (kind 0) or query arguments (kind 1): cb(ud, name, value) for each. */
void rk_httpd_req_each(rk_httpd_req *r, int kind, void (*cb)(void *ud, const char *k, const char *v), void *ud);
/* Non-zero once the client is gone (or the answer is fully sent). */
int rk_httpd_req_gone(rk_httpd_req *r);
void rk_httpd_req_ref(rk_httpd_req *r);
void rk_httpd_req_unref(rk_httpd_req *r);

/* headers: NULL-terminated array of name, value pairs (may be NULL). Returns -1 when the request
 * was already answered or its client is gone. */
int rk_httpd_respond(rk_httpd_req *r, int status, const char *const *headers, const void *body, size_t len, rk_err *e);
/* Start a streamed answer (chunked); then write and end. */
int rk_httpd_stream(rk_httpd_req *r, int status, const char *const *headers, rk_err *e);
/* Queue bytes; returns the bytes buffered now (the caller waits when that is too much: see
 * rk_httpd_on_drain), or -1 when the client is gone. */
long rk_httpd_write(rk_httpd_req *r, const void *data, size_t len, rk_err *e);
int rk_httpd_end(rk_httpd_req *r);
/* cb once the buffer is below low bytes, or the client is gone. One waiter at a time. */
void rk_httpd_on_drain(rk_httpd_req *r, size_t low, rk_httpd_notify cb, void *ud);

#endif
