/* grpc.h — a gRPC client over HTTP/2, driven by the rk_loop.
 *
 * A channel is one base URL; calls on it are multiplexed over one connection. "http://host:port"
 * (h2c with prior knowledge, what RIK speaks) runs over libnghttp2 on a non-blocking socket of the
 * loop (core/grpc_h2.c): no libcurl. "https://host:port" (TLS) runs on libcurl's multi interface,
 * loaded with dlopen only then (core/curl_lazy.h). Every call is the same bidirectional shape at
 * this level: unary = send one message + close_send, server streaming = the same with many
 * replies, client streaming = many sends then close_send.
 * Set RIKLET_CURL_VERBOSE=1 to have libcurl trace every https:// call on stderr.
 *
 * Callbacks (on_headers, on_message, on_done) only ever run from loop callbacks, never from inside
 * a libcurl callback and never re-entrantly from an rk_grpc_* call, so they may start, send on or
 * cancel any call (including their own) and may free the channel. */
#ifndef RK_GRPC_H
#define RK_GRPC_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include "loop.h"
#include "rk.h"

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum rk_grpc_status {
	RK_GRPC_OK = 0,
	RK_GRPC_CANCELLED = 1,
	RK_GRPC_UNKNOWN = 2,
	RK_GRPC_INVALID_ARGUMENT = 3,
	RK_GRPC_DEADLINE_EXCEEDED = 4,
	RK_GRPC_NOT_FOUND = 5,
	RK_GRPC_ALREADY_EXISTS = 6,
	RK_GRPC_PERMISSION_DENIED = 7,
	RK_GRPC_RESOURCE_EXHAUSTED = 8,
	RK_GRPC_FAILED_PRECONDITION = 9,
	RK_GRPC_ABORTED = 10,
	RK_GRPC_OUT_OF_RANGE = 11,
	RK_GRPC_UNIMPLEMENTED = 12,
	RK_GRPC_INTERNAL = 13,
	RK_GRPC_UNAVAILABLE = 14,
	RK_GRPC_DATA_LOSS = 15,
	RK_GRPC_UNAUTHENTICATED = 16,
};
/* "OK", "ALREADY_EXISTS", ...; "STATUS_<n>" style "UNKNOWN_STATUS" for anything else. */
const char *rk_grpc_status_name(int code);

#define RK_GRPC_DEFAULT_MAX_RECV (4u * 1024 * 1024)

typedef struct rk_grpc_opts {
	const char *ca_file;	 /* https: CA bundle to verify the server (NULL: system store) */
	const char *cert_file;	 /* https: optional client certificate (PEM) */
	const char *key_file;	 /* https: its private key (PEM) */
	size_t max_recv;	 /* largest message accepted; 0 = RK_GRPC_DEFAULT_MAX_RECV */
	long connect_timeout_ms; /* TCP connect (and TLS handshake); 0 = 10000 */
	/* h2c: once connected, the server's first HTTP/2 bytes (its SETTINGS) must arrive within this,
	 * else the call ends UNAVAILABLE saying so (a peer that accepts and never answers); 0 = 10000.
	 * For https:// the TLS handshake plays this part (bounded by connect_timeout_ms). */
	long handshake_timeout_ms;
	/* Keepalive. h2c: after keepalive_idle_s with nothing received while calls are open, an
	 * HTTP/2 PING goes out; no answer within user_timeout_ms ends the connection (its calls end
	 * UNAVAILABLE saying so). Both: TCP keepalive probes after keepalive_idle_s, every
	 * keepalive_intvl_s, and TCP_USER_TIMEOUT = user_timeout_ms (data or probes unacknowledged
	 * that long close the connection; an idle live peer acknowledges the probes). libcurl 7.88
	 * sends no HTTP/2 PING on a multi handle, so https:// relies on the TCP part alone. */
	long keepalive_idle_s;	/* 0 = 30 */
	long keepalive_intvl_s; /* between TCP probes; 0 = 10 */
	long user_timeout_ms;	/* 0 = 20000 */
	const char *user_agent; /* NULL = "riklet-grpc/<nghttp2 or curl version>" */
} rk_grpc_opts;

typedef struct rk_grpc_channel rk_grpc_channel;
typedef struct rk_grpc_call rk_grpc_call;

typedef struct rk_grpc_call_cbs {
	/* Response headers arrived (HTTP 200, not a trailers-only reply): the server accepted the call.
	 * Optional. */
	void (*on_headers)(void *ud);
	/* One response message, decoded with the call's response descriptor (owned by the callee: free
	 * it with protobuf_c_message_free_unpacked(msg, NULL)), or raw bytes when the call was started
	 * without a descriptor (msg == NULL; buf/len valid only during the callback). */
	void (*on_message)(void *ud, ProtobufCMessage *msg, const uint8_t *buf, size_t len);
	/* The call ended: status RK_GRPC_OK or an error with a message (never NULL). Called exactly
	 * once unless the call was cancelled; the call handle is invalid after it returns. */
	void (*on_done)(void *ud, int status, const char *message);
	/* The call's connection is up and the server answered at the HTTP/2 level (its SETTINGS on a
	 * new h2c connection; the TLS handshake for https://; a reused connection), or response headers
	 * arrived. Fires at most once, before on_headers. Optional. A gRPC server may hold the headers
	 * of a server stream until its first message (grpcio and grpc-go do): this is the earliest
	 * sign that such a call is in the server's hands. */
	void (*on_ready)(void *ud);
} rk_grpc_call_cbs;

/* url: "http://host:port" or "https://host:port" (a trailing path prefix is kept). */
rk_grpc_channel *rk_grpc_channel_new(rk_loop *l, const char *url, const rk_grpc_opts *o, rk_err *e);
/* Cancels every call still open (their callbacks do not fire) and closes the connection. */
void rk_grpc_channel_free(rk_grpc_channel *ch);
const char *rk_grpc_channel_url(const rk_grpc_channel *ch);
/* Sockets (connections) the channel is watching right now, and calls open on it: diagnostics. */
size_t rk_grpc_channel_sockets(const rk_grpc_channel *ch);
size_t rk_grpc_channel_calls(const rk_grpc_channel *ch);
/* Do calls share one connection? Yes (http:// over nghttp2; https:// over libcurl). */
int rk_grpc_channel_multiplexed(const rk_grpc_channel *ch);

/* Start a call on path ("/worker.Worker/Register"). deadline_ms: 0 = none, else the call ends with
 * DEADLINE_EXCEEDED after that long (also sent to the server as grpc-timeout). resp may be NULL
 * for raw bytes. Returns NULL on a local failure (e filled); no callback fires then. */
rk_grpc_call *rk_grpc_call_start(rk_grpc_channel *ch, const char *path, uint64_t deadline_ms,
				 const ProtobufCMessageDescriptor *resp, const rk_grpc_call_cbs *cbs, void *ud,
				 rk_err *e);
/* Response headers must arrive within ms after the request went out (0: no limit, the default),
 * else the call ends UNAVAILABLE saying so. Call right after rk_grpc_call_start. Not for a server
 * stream whose server sends its headers only with the first message (grpcio, grpc-go). */
void rk_grpc_call_set_header_timeout(rk_grpc_call *c, uint64_t ms);
/* Queue one request message (packed and framed now). Fails after close_send or once the call
 * ended. */
int rk_grpc_call_send(rk_grpc_call *c, const ProtobufCMessage *m, rk_err *e);
int rk_grpc_call_send_raw(rk_grpc_call *c, const void *buf, size_t len, rk_err *e);
/* Half-close: no more request messages. Idempotent. */
void rk_grpc_call_close_send(rk_grpc_call *c);
/* Stop the call now (RST_STREAM); no callback fires afterwards. Safe from inside its callbacks. */
void rk_grpc_call_cancel(rk_grpc_call *c);
/* Bytes queued and not yet taken by the transport (for flow control in callers). */
size_t rk_grpc_call_pending(const rk_grpc_call *c);

/* ---- framing, exposed for tests and tools ---- */
/* Write the 5-byte prefix (flag 0, big-endian len) to out. */
void rk_grpc_frame_header(uint8_t out[5], uint32_t len);
/* Parse one frame from buf: returns 1 and sets *msg, *msg_len and *consumed when a whole frame is
 * there, 0 when more bytes are needed, -1 on a bad frame (compressed flag, reserved bits, larger
 * than max) with e filled and *status set to the gRPC status to end the call with. */
int rk_grpc_frame_parse(const uint8_t *buf, size_t len, size_t max, const uint8_t **msg, size_t *msg_len,
			size_t *consumed, int *status, rk_err *e);
/* Message reassembly: a call's response bytes in (as they come, any split), whole messages out. */
typedef struct rk_grpc_rx {
	uint8_t *buf; /* the start of a frame not complete yet */
	size_t len, cap;
} rk_grpc_rx;
/* One whole message (msg valid only during the call). Return 0, or -1 with *status and e set. */
typedef int (*rk_grpc_msg_fn)(void *ud, const uint8_t *msg, size_t len, int *status, rk_err *e);
/* Hand every whole message in rx + data to fn, in order; keep the rest in rx (at most one frame
 * header + max bytes: a frame larger than max is refused from its header, before its body is
 * buffered). Returns 0, or -1 with *status and e set (bad frame, out of memory, fn failed); rx is
 * then only good for rk_grpc_rx_free. rx->len != 0 when the stream ends: a truncated frame. */
int rk_grpc_rx_feed(rk_grpc_rx *rx, const uint8_t *data, size_t len, size_t max, rk_grpc_msg_fn fn, void *ud,
		    int *status, rk_err *e);
void rk_grpc_rx_free(rk_grpc_rx *rx);
/* Percent-decode a grpc-message value into out (always NUL-terminated); an escaped control byte
 * (below 0x20, 0x7f) stays as it was written, since the message is logged. */
void rk_grpc_percent_decode(const char *in, size_t n, char *out, size_t outsz);
/* grpc-timeout value for ms: "100m", "2S" (at most 8 digits). */
void rk_grpc_timeout_str(uint64_t ms, char out[16]);

#endif
