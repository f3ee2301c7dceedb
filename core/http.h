/* http.h — an HTTP/1.1 client on the rk_loop through libcurl's multi interface (libcurl is loaded
 * on first use, core/curl_lazy.h, so a riklet that never fetches pays nothing).
 *
 * Two shapes share one client:
 *  - a download streamed to a file (never whole in memory) with a size cap, a total and a
 *    low-speed timeout, conditional headers, and the response's ETag / Last-Modified (rootfs);
 *  - a small request over a unix socket with a JSON body and a capped in-memory response
 *    (Firecracker's API).
 * The done callback runs from a loop callback, never from inside libcurl and never re-entrantly
 * from an rk_http_* call, so it may start or cancel any request and free the client.
 * Set RIKLET_CURL_VERBOSE=1 to have libcurl trace every transfer on stderr. */
#ifndef RK_HTTP_H
#define RK_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include "loop.h"
#include "rk.h"

#define RK_HTTP_DEFAULT_MAX_MEM (1024u * 1024) /* in-memory response bodies */

typedef struct rk_http rk_http;
typedef struct rk_http_req rk_http_req;

typedef struct rk_http_opts {
	const char *url;	 /* http://, https:// (with unix_socket: http://localhost/path) */
	const char *method;	 /* NULL = GET; "PUT", "PATCH", "POST", "DELETE", "HEAD" */
	const char *unix_socket; /* connect to this socket instead of the URL's host */
	const char **headers;	 /* NULL-terminated "Name: value" lines (no CR or LF in them) */
	const void *body;	 /* request body (copied), body_len bytes */
	size_t body_len;
	/* Stream a 2xx response body into this file (created 0600, truncated; a symbolic link is
	 * refused). NULL: keep the body in memory. A non-2xx body is never written to the file: its
	 * first bytes are kept in memory to quote in an error. */
	const char *out_path;
	uint64_t max_bytes;	 /* body cap: 0 = none for a file, RK_HTTP_DEFAULT_MAX_MEM in memory */
	long timeout_ms;	 /* whole transfer; 0 = none */
	long connect_timeout_ms; /* 0 = 10000 */
	long low_speed_bytes;	 /* fail when slower than this many bytes/s ... */
	long low_speed_time_s;	 /* ... for this many seconds (both 0: no check) */
	int follow_redirects;	 /* http(s) only, at most 10 */
} rk_http_opts;

/* Why a request failed (res->error set). */
enum rk_http_fail {
	RK_HTTP_OK = 0,
	RK_HTTP_ETRANSPORT, /* connect, DNS, TLS, protocol, socket errors */
	RK_HTTP_ETIMEOUT,   /* total or low-speed timeout */
	RK_HTTP_ETOOBIG,    /* body over max_bytes */
	RK_HTTP_ETRUNCATED, /* the server ended the body before Content-Length */
	RK_HTTP_EFILE,	    /* out_path could not be opened or written */
};

typedef struct rk_http_result {
	int fail;	   /* enum rk_http_fail; RK_HTTP_OK even for a 404: see status */
	const char *error; /* what failed, on which URL (NULL when fail == RK_HTTP_OK) */
	long status;	   /* HTTP status of the last response (0 if none) */
	const char *etag;  /* the response's ETag header value, or NULL */
	const char *last_modified;
	const char *content_type;
	uint64_t bytes;		/* body bytes received (written to the file, or in body) */
	int64_t content_length; /* announced, -1 if none */
	const char *body;	/* in-memory body (NUL-terminated), or the start of a non-2xx body */
	size_t body_len;
	const char *effective_url; /* after redirects */
} rk_http_result;

/* Everything in r is valid only during the callback. */
typedef void (*rk_http_done_cb)(void *ud, const rk_http_result *r);

rk_http *rk_http_new(rk_loop *l, rk_err *e);
/* Cancels every request still open (their callbacks do not fire). Safe from a done callback. */
void rk_http_free(rk_http *h);
/* Requests started and not ended (diagnostics). */
size_t rk_http_active(const rk_http *h);

/* Start a request; cb fires exactly once unless the request is cancelled. Returns NULL on a local
 * failure (bad option, cannot open out_path, libcurl missing) with e filled; no callback then. */
rk_http_req *rk_http_start(rk_http *h, const rk_http_opts *o, rk_http_done_cb cb, void *ud, rk_err *e);
/* Stop now: the connection is closed, the output file closed (left as it is: the caller owns its
 * path), no callback fires. Safe from any callback, idempotent until the request ended. */
void rk_http_cancel(rk_http_req *r);
/* Body bytes received so far (progress). */
uint64_t rk_http_req_bytes(const rk_http_req *r);

#endif
