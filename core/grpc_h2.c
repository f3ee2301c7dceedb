/* grpc_h2.c — gRPC over cleartext HTTP/2 ("h2c", prior knowledge) with libnghttp2 on a
 * non-blocking socket of the rk_loop (see grpc.h, grpc_h2.h). No libcurl, no TLS library.
 *
 * A channel has one connection that new calls go to (more only while an old one drains after a
 * GOAWAY). nghttp2 callbacks only record facts (headers, messages, stream ends); user callbacks run
 * afterwards from ch_process(), outside nghttp2, so user code may start, send on or cancel any call
 * and free the channel. rk_grpc_* calls never run user callbacks: what they change is flushed and
 * dispatched from a 0 ms timer (many sends in one loop turn leave in one write).
 *
 * Liveness: connect within connect_timeout_ms; the server's first bytes must be an HTTP/2 SETTINGS
 * frame within handshake_timeout_ms (else the log says what came: nothing, an HTTP/1.1 status line,
 * or bytes in hex); while calls are open and nothing arrives for keepalive_idle_s, a PING goes out
 * and must be answered within user_timeout_ms; TCP_USER_TIMEOUT bounds unacknowledged data. */
#include "grpc_h2.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <nghttp2/nghttp2.h>

#define SUB "grpc"
#define MAX_FRAME 16384u	    /* SETTINGS_MAX_FRAME_SIZE we accept (the protocol's minimum) */
#define STREAM_WINDOW (1u << 20)    /* per-stream receive window */
#define CONN_WINDOW (4u << 20)	    /* connection receive window */
#define MAX_HEADER_LIST (64u << 10) /* SETTINGS_MAX_HEADER_LIST_SIZE */
#define GRPC_MESSAGE_MAX 1024	    /* bytes of grpc-message kept */

enum { C_CONNECTING, C_OPEN };

struct h2_chan;

struct h2_conn {
	struct h2_chan *ch;
	struct h2_conn *next; /* ch->conns */
	int fd;
	rk_watch *w;
	uint32_t wev;
	int state;
	nghttp2_session *sess;
	struct addrinfo *ai, *cur; /* addresses to try, the one tried now */
	int last_errno;		   /* of the last failed connect */
	char addr[80];		   /* "127.0.0.1:4995" */
	uint64_t connected_at, last_rx;
	int answered; /* the server's first bytes were an HTTP/2 SETTINGS frame */
	uint8_t first[64];
	size_t first_len, rx_bytes;
	rk_timer *timer; /* connect, then handshake */
	rk_timer *ka;	 /* keepalive PING */
	int ping_out;
	uint64_t ping_at;
	uint8_t *wbuf;
	size_t wlen, woff, wcap;
	size_t ncalls; /* calls carried */
	int goaway;    /* GOAWAY received: no new calls here */
	uint32_t goaway_code;
	char goaway_msg[160];
	uint8_t fhdr[9]; /* frame boundaries, followed to name an oversized frame */
	size_t fhdr_len, fskip;
	size_t big_frame; /* a frame header announcing more than MAX_FRAME bytes */
	int big_type;
	char err[300];	 /* nghttp2's own words for a protocol error */
	char ended[300]; /* the GOAWAY this client sent for a protocol error: code and reason */
};

struct h2_call {
	int h2; /* 1 (grpc_h2.h) */
	struct h2_chan *ch;
	struct h2_call *prev, *next;
	struct h2_conn *conn;
	int32_t sid; /* 0 until the request was submitted */
	int refs;
	char *path;
	const ProtobufCMessageDescriptor *resp;
	rk_grpc_call_cbs cbs;
	void *ud;
	uint64_t deadline_ms, header_timeout_ms, sent_at;
	rk_timer *deadline, *hdr_timer;
	/* send */
	uint8_t *tx;
	size_t tx_len, tx_off, tx_cap;
	int send_closed, deferred, rst_sent;
	/* receive */
	rk_grpc_rx rx;
	struct rk_grpc_rxmsg *rxq_head, *rxq_tail;
	int http_status, hdr_block_done, headers_pending, ready_pending, ready_seen;
	int grpc_status; /* -1 = not seen */
	char *grpc_message;
	int remote_ended, stream_closed;
	uint32_t close_error;
	/* end */
	int local_status; /* -1, or a status decided here */
	char local_msg[1100];
	int finished, cancelled;
	int queued; /* on ch's news list (holding a reference) */
	struct h2_call *news_next;
};

struct h2_chan {
	int h2; /* 1 */
	rk_loop *loop;
	char *url, *host, *port, *authority, *prefix, *user_agent;
	rk_grpc_opts o;
	struct h2_call *calls;
	struct h2_conn *conns;		  /* all open connections */
	struct h2_conn *conn;		  /* the one new calls go to */
	struct h2_call *news, *news_tail; /* calls with something to tell their user, in order */
	rk_timer *kick;
	int processing, closing;
};

#define CH(p) ((struct h2_chan *)(void *)(p))
#define CALL(p) ((struct h2_call *)(void *)(p))

static void ch_process(struct h2_chan *ch);
static void ch_free_now(struct h2_chan *ch);
static void ch_kick(struct h2_chan *ch);
static void conn_flush(struct h2_conn *cn);
static void conn_close(struct h2_conn *cn, const char *why);
static void call_submit(struct h2_call *c);
static void call_finish(struct h2_call *c, int status, const char *msg);

/* ---- what the server sent, for a log line ------------------------------------------------------ */

/* "HTTP/1.1 400 Bad Request" quoted, printable text quoted, else "N bytes: 68 65 ..." in hex. */
static void describe_bytes(const uint8_t *b, size_t n, size_t total, char *out, size_t outsz)
{
	size_t printable = 0, line = 0;
	while (line < n && b[line] != '\r' && b[line] != '\n')
		line++;
	for (size_t i = 0; i < line; i++)
		printable += b[i] >= 0x20 && b[i] < 0x7f;
	size_t o = 0;
	if (line >= 5 && printable == line && !memcmp(b, "HTTP/", 5)) {
		o += (size_t)snprintf(out, outsz, "\"");
		for (size_t i = 0; i < line && o + 3 < outsz; i++)
			out[o++] = b[i] == '"' ? '\'' : (char)b[i];
		snprintf(out + o, outsz - o, "\"");
		return;
	}
	o = (size_t)snprintf(out, outsz, "%zu byte%s that are not HTTP/2:", total, total == 1 ? "" : "s");
	for (size_t i = 0; i < n && i < 16 && o + 4 < outsz; i++)
		o += (size_t)snprintf(out + o, outsz - o, " %02x", b[i]);
	if (n > 16 && o + 5 < outsz)
		o += (size_t)snprintf(out + o, outsz - o, " ...");
	if (printable && o + 4 < outsz) { /* the same as text, where it is text */
		o += (size_t)snprintf(out + o, outsz - o, " (\"");
		for (size_t i = 0; i < n && i < 40 && o + 3 < outsz; i++)
			out[o++] = b[i] >= 0x20 && b[i] < 0x7f && b[i] != '"' ? (char)b[i] : '.';
		snprintf(out + o, outsz - o, "\")");
	}
}

static const char *frame_name(int t)
{
	static const char *n[] = {"DATA",	  "HEADERS", "PRIORITY", "RST_STREAM",	  "SETTINGS",
				  "PUSH_PROMISE", "PING",    "GOAWAY",	 "WINDOW_UPDATE", "CONTINUATION"};
	return t >= 0 && t < (int)(sizeof n / sizeof *n) ? n[t] : "unknown-type";
}

/* ---- calls: life and end ------------------------------------------------------------------------- */

static void call_unref(struct h2_call *c)
{
	if (--c->refs > 0)
		return;
	rk_grpc__rxmsg_free_all(c->rxq_head);
	free(c->tx);
	rk_grpc_rx_free(&c->rx);
	free(c->path);
	free(c->grpc_message);
	free(c);
}

/* c has something for its user (headers, a message, its end): dispatch it from ch_process. */
static void call_news(struct h2_call *c)
{
	if (c->queued || c->finished)
		return;
	c->queued = 1;
	c->refs++;
	c->news_next = NULL;
	if (c->ch->news_tail)
		c->ch->news_tail->news_next = c;
	else
		c->ch->news = c;
	c->ch->news_tail = c;
}

/* Off its stream (RST_STREAM if the server may still think it open), timers and lists; idempotent. */
static void call_detach(struct h2_call *c)
{
	if (c->deadline) {
		rk_timer_cancel(c->deadline);
		c->deadline = NULL;
	}
	if (c->hdr_timer) {
		rk_timer_cancel(c->hdr_timer);
		c->hdr_timer = NULL;
	}
	struct h2_conn *cn = c->conn;
	if (cn) {
		if (cn->sess && c->sid > 0) {
			nghttp2_session_set_stream_user_data(cn->sess, c->sid, NULL);
			if (!c->stream_closed && !c->rst_sent) {
				c->rst_sent = 1;
				nghttp2_submit_rst_stream(cn->sess, NGHTTP2_FLAG_NONE, c->sid, NGHTTP2_CANCEL);
				ch_kick(c->ch);
			}
		}
		cn->ncalls--;
		c->conn = NULL;
	}
	if (c->prev)
		c->prev->next = c->next;
	else if (c->ch->calls == c)
		c->ch->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void call_finish(struct h2_call *c, int status, const char *msg)
{
	if (c->finished)
		return;
	c->finished = 1;
	call_detach(c);
	if (!c->cancelled && c->cbs.on_done)
		c->cbs.on_done(c->ud, status, msg ? msg : "");
	call_unref(c); /* the reference held while the call is open */
}

static int reset_to_status(uint32_t code)
{
	switch (code) {
	case NGHTTP2_REFUSED_STREAM:
		return RK_GRPC_UNAVAILABLE;
	case NGHTTP2_CANCEL:
		return RK_GRPC_CANCELLED;
	case NGHTTP2_ENHANCE_YOUR_CALM:
		return RK_GRPC_RESOURCE_EXHAUSTED;
	case NGHTTP2_INADEQUATE_SECURITY:
		return RK_GRPC_PERMISSION_DENIED;
	default:
		return RK_GRPC_INTERNAL;
	}
}

/* The stream ended (or failed here): decide how the call ended. */
static void call_complete(struct h2_call *c)
{
	char msg[1300];
	struct h2_chan *ch = c->ch;
	if (c->local_status >= 0) {
		snprintf(msg, sizeof msg, "%s %s: %s", ch->url, c->path, c->local_msg);
		call_finish(c, c->local_status, msg);
	} else if (c->grpc_status >= 0 && (c->grpc_status != RK_GRPC_OK || !c->rx.len)) {
		/* the server said how it ended; a stream reset after the trailers does not change that */
		call_finish(c, c->grpc_status, c->grpc_message ? c->grpc_message : "");
	} else if (c->rx.len) {
		snprintf(msg, sizeof msg,
			 "%s %s: stream ended inside a message (%zu bytes of a truncated frame left over)", ch->url,
			 c->path, c->rx.len);
		call_finish(c, RK_GRPC_INTERNAL, msg);
	} else if (c->stream_closed && !c->remote_ended && c->close_error != NGHTTP2_NO_ERROR) {
		snprintf(msg, sizeof msg, "%s %s: the server reset the stream (RST_STREAM %s)", ch->url, c->path,
			 nghttp2_http2_strerror(c->close_error));
		call_finish(c, reset_to_status(c->close_error), msg);
	} else if (c->http_status != 200) {
		snprintf(msg, sizeof msg, "%s %s: HTTP status %d and no grpc-status (is this a gRPC server?)", ch->url,
			 c->path, c->http_status);
		call_finish(c, rk_grpc__http_status(c->http_status), msg);
	} else {
		snprintf(msg, sizeof msg, "%s %s: the server closed the stream without a grpc-status", ch->url,
			 c->path);
		call_finish(c, RK_GRPC_INTERNAL, msg);
	}
}

static void call_fail(struct h2_call *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void call_fail(struct h2_call *c, int status, const char *fmt, ...)
{
	if (c->local_status >= 0 || c->finished)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->local_msg, sizeof c->local_msg, fmt, ap);
	va_end(ap);
	c->local_status = status;
	call_news(c);
}

/* ---- nghttp2 callbacks: record facts only ------------------------------------------------------- */

static struct h2_call *stream_call(nghttp2_session *s, int32_t sid)
{
	return sid > 0 ? nghttp2_session_get_stream_user_data(s, sid) : NULL;
}

/* Follow frame boundaries in what the server sent, to name a frame larger than we accept (nghttp2
 * only says that it ended the connection). */
static void track_frames(struct h2_conn *cn, const uint8_t *b, size_t n)
{
	while (n && !cn->big_frame) {
		if (cn->fskip) {
			size_t k = cn->fskip < n ? cn->fskip : n;
			cn->fskip -= k;
			b += k;
			n -= k;
			continue;
		}
		cn->fhdr[cn->fhdr_len++] = *b++;
		n--;
		if (cn->fhdr_len < sizeof cn->fhdr)
			continue;
		cn->fhdr_len = 0;
		cn->fskip = (size_t)cn->fhdr[0] << 16 | (size_t)cn->fhdr[1] << 8 | cn->fhdr[2];
		if (cn->fskip > MAX_FRAME) {
			cn->big_frame = cn->fskip;
			cn->big_type = cn->fhdr[3];
		}
	}
}

/* This client ends the connection over a protocol error: keep the code and nghttp2's reason. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct h2_conn *cn = ud;
	if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR && !cn->ended[0])
		snprintf(cn->ended, sizeof cn->ended, "%s%s%.*s", nghttp2_http2_strerror(f->goaway.error_code),
			 f->goaway.opaque_data_len ? ": " : "",
			 (int)(f->goaway.opaque_data_len < 200 ? f->goaway.opaque_data_len : 200),
			 (const char *)f->goaway.opaque_data);
	return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl, const uint8_t *val,
		     size_t vl, uint8_t flags, void *ud)
{
	struct h2_call *c = stream_call(s, f->hd.stream_id);
	if (!c || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (nl == 7 && !memcmp(name, ":status", 7)) {
		c->http_status = 0;
		for (size_t i = 0; i < vl && i < 3 && isdigit(val[i]); i++)
			c->http_status = c->http_status * 10 + (val[i] - '0');
	} else if (nl == 11 && !memcmp(name, "grpc-status", 11)) {
		long v = 0;
		size_t i = 0;
		for (; i < vl && i < 6 && isdigit(val[i]); i++)
			v = v * 10 + (val[i] - '0');
		c->grpc_status = (i && i == vl && v <= 0xffff) ? (int)v : RK_GRPC_UNKNOWN;
	} else if (nl == 12 && !memcmp(name, "grpc-message", 12)) {
		size_t k = vl < GRPC_MESSAGE_MAX ? vl : GRPC_MESSAGE_MAX;
		free(c->grpc_message);
		c->grpc_message = malloc(k + 1);
		if (c->grpc_message)
			rk_grpc_percent_decode((const char *)val, k, c->grpc_message, k + 1);
	}
	return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct h2_conn *cn = ud;
	struct h2_call *c;
	switch (f->hd.type) {
	case NGHTTP2_PING:
		if (f->hd.flags & NGHTTP2_FLAG_ACK)
			cn->ping_out = 0;
		break;
	case NGHTTP2_GOAWAY:
		cn->goaway = 1;
		cn->goaway_code = f->goaway.error_code;
		snprintf(cn->goaway_msg, sizeof cn->goaway_msg, "%s", nghttp2_http2_strerror(f->goaway.error_code));
		/* the server's bytes: printable ASCII only (a newline forged a log line) */
		if (f->goaway.opaque_data_len) {
			size_t n = strlen(cn->goaway_msg), k = f->goaway.opaque_data_len;
			const uint8_t *d = f->goaway.opaque_data;
			n += (size_t)snprintf(cn->goaway_msg + n, sizeof cn->goaway_msg - n, ": \"");
			for (size_t i = 0; i < k && i < 100 && n + 3 < sizeof cn->goaway_msg; i++)
				cn->goaway_msg[n++] = d[i] >= 0x20 && d[i] < 0x7f && d[i] != '"' ? (char)d[i] : '.';
			snprintf(cn->goaway_msg + n, sizeof cn->goaway_msg - n, "\"");
		}
		/* calls past its last stream id were not processed: say so (nghttp2 closes them as if
		 * reset with REFUSED_STREAM, which the log then showed as if the server had sent that) */
		for (c = cn->ch->calls; c; c = c->next)
			if (c->conn == cn && c->sid > f->goaway.last_stream_id && !c->remote_ended)
				call_fail(c, RK_GRPC_UNAVAILABLE, "the server sent GOAWAY %s", cn->goaway_msg);
		if (cn->ch->conn == cn)
			cn->ch->conn = NULL; /* new calls open a new connection */
		break;
	case NGHTTP2_HEADERS:
		c = stream_call(s, f->hd.stream_id);
		if (!c)
			break;
		if (!c->hdr_block_done) {
			c->hdr_block_done = 1;
			/* a trailers-only reply carries grpc-status in this very block: not an acceptance */
			if (c->http_status == 200 && c->grpc_status < 0)
				c->headers_pending = 1;
		}
		if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
			c->remote_ended = 1;
		call_news(c);
		break;
	case NGHTTP2_DATA:
		c = stream_call(s, f->hd.stream_id);
		if (c && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
			c->remote_ended = 1;
			call_news(c);
		}
		break;
	}
	return 0;
}

static int h2_msg(void *ud, const uint8_t *msg, size_t ml, int *status, rk_err *e)
{
	struct h2_call *c = ud;
	struct rk_grpc_rxmsg *m = rk_grpc__rxmsg_new(c->resp, msg, ml, status, e);
	if (!m)
		return -1;
	if (c->rxq_tail)
		c->rxq_tail->next = m;
	else
		c->rxq_head = m;
	c->rxq_tail = m;
	call_news(c);
	return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len, void *ud)
{
	struct h2_call *c = stream_call(s, sid);
	if (!c || c->local_status >= 0 || c->http_status != 200)
		return 0; /* not gRPC messages (an error page): the HTTP status says what happened */
	int st = RK_GRPC_INTERNAL;
	rk_err e;
	if (rk_grpc_rx_feed(&c->rx, data, len, c->ch->o.max_recv, h2_msg, c, &st, &e) < 0) {
		call_fail(c, st, "%s", e.msg);
		if (!c->rst_sent) {
			c->rst_sent = 1;
			nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
		}
	}
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	struct h2_call *c = stream_call(s, sid);
	if (c) {
		c->stream_closed = 1;
		c->close_error = code;
		call_news(c);
	}
	return 0;
}

static int on_error(nghttp2_session *s, int lib_code, const char *msg, size_t len, void *ud)
{
	struct h2_conn *cn = ud;
	if (!cn->err[0])
		snprintf(cn->err, sizeof cn->err, "%.*s", (int)len, msg);
	return 0;
}

/* The request body: the call's queued frames; DEFERRED until there is more or close_send. */
static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
			 nghttp2_data_source *src, void *ud)
{
	struct h2_call *c = stream_call(s, sid);
	if (!c) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	size_t avail = c->tx_len - c->tx_off, k = avail < len ? avail : len;
	if (k) {
		memcpy(buf, c->tx + c->tx_off, k);
		c->tx_off += k;
		if (c->tx_off == c->tx_len)
			c->tx_off = c->tx_len = 0;
	}
	if (c->tx_off == c->tx_len && c->send_closed) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return (ssize_t)k;
	}
	if (!k) {
		c->deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)k;
}

static nghttp2_session_callbacks *h2_callbacks(void)
{
	static nghttp2_session_callbacks *cbs;
	if (!cbs && nghttp2_session_callbacks_new(&cbs) == 0) {
		nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
		nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
		nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
		nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
		nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
	}
	return cbs;
}

/* ---- connection ----------------------------------------------------------------------------------- */

static void conn_watch(struct h2_conn *cn, uint32_t ev)
{
	if (cn->w && ev != cn->wev) {
		rk_err e;
		if (rk_watch_modify(cn->w, ev, &e) < 0)
			rk_error(SUB, "watching the connection to %s: %s", cn->ch->url, e.msg);
		cn->wev = ev;
	}
}

/* Every call still on cn that has not ended gets why (UNAVAILABLE), then cn is freed. */
static void conn_close(struct h2_conn *cn, const char *why)
{
	struct h2_chan *ch = cn->ch;
	for (struct h2_call *c = ch->calls; c; c = c->next) {
		if (c->conn != cn)
			continue;
		if (!c->remote_ended && !c->stream_closed)
			call_fail(c, RK_GRPC_UNAVAILABLE, "%s", why);
		if (cn->sess && c->sid > 0)
			nghttp2_session_set_stream_user_data(cn->sess, c->sid, NULL);
		c->conn = NULL;
		c->stream_closed = 1;
		call_news(c);
	}
	if (ch->conn == cn)
		ch->conn = NULL;
	for (struct h2_conn **pp = &ch->conns; *pp; pp = &(*pp)->next)
		if (*pp == cn) {
			*pp = cn->next;
			break;
		}
	if (cn->timer)
		rk_timer_cancel(cn->timer);
	if (cn->ka)
		rk_timer_cancel(cn->ka);
	if (cn->w)
		rk_watch_cancel(cn->w);
	if (cn->fd >= 0)
		close(cn->fd);
	if (cn->sess)
		nghttp2_session_del(cn->sess);
	if (cn->ai)
		freeaddrinfo(cn->ai);
	free(cn->wbuf);
	free(cn);
	ch_kick(ch);
}

static void conn_closef(struct h2_conn *cn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_closef(struct h2_conn *cn, const char *fmt, ...)
{
	char why[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	conn_close(cn, why);
}

/* The peer's words so far: nghttp2's error, an oversized frame, a GOAWAY. */
static void conn_peer_said(struct h2_conn *cn, char *out, size_t outsz)
{
	out[0] = 0;
	if (cn->big_frame)
		snprintf(out, outsz,
			 ": the server sent a %s frame of %zu bytes, more than the %u this client allows (it is not "
			 "following HTTP/2)",
			 frame_name(cn->big_type), cn->big_frame, MAX_FRAME);
	else if (cn->ended[0])
		snprintf(out, outsz, ": the server broke the HTTP/2 protocol (%s)", cn->ended);
	else if (cn->goaway)
		snprintf(out, outsz, " (GOAWAY %s)", cn->goaway_msg);
	else if (cn->err[0])
		snprintf(out, outsz, " (HTTP/2 protocol error: %s)", cn->err);
}

static void conn_not_h2(struct h2_conn *cn)
{
	char what[200];
	describe_bytes(cn->first, cn->first_len, cn->rx_bytes, what, sizeof what);
	if (cn->first_len >= 5 && !memcmp(cn->first, "HTTP/", 5))
		conn_closef(cn, "the server does not speak HTTP/2: it sent %s (an HTTP/1 server, not a gRPC server)",
			    what);
	else
		conn_closef(cn, "the server does not speak HTTP/2: it sent %s (is this a gRPC server?)", what);
}

/* A server's first HTTP/2 frame is SETTINGS: type 4, stream 0, length a multiple of 6. 1: it is, 0:
 * not yet known, -1: it is not. */
static int first_bytes_h2(const uint8_t *b, size_t n)
{
	static const uint8_t hdr_ok_flags = 0; /* a first SETTINGS is never an ACK */
	if (n >= 3 && ((uint32_t)b[0] << 16 | (uint32_t)b[1] << 8 | b[2]) % 6)
		return -1;
	if (n >= 4 && b[3] != NGHTTP2_SETTINGS)
		return -1;
	if (n >= 5 && b[4] != hdr_ok_flags)
		return -1;
	if (n >= 9 && (b[5] | b[6] | b[7] | b[8]))
		return -1;
	return n >= 9 ? 1 : 0;
}

static void ka_fired(void *ud);

static void ka_arm(struct h2_conn *cn, uint64_t ms)
{
	if (cn->ka)
		rk_timer_cancel(cn->ka);
	cn->ka = rk_loop_timer(cn->ch->loop, ms, ka_fired, cn);
}

static void ka_fired(void *ud)
{
	struct h2_conn *cn = ud;
	struct h2_chan *ch = cn->ch;
	cn->ka = NULL;
	uint64_t now = rk_now_ms(), idle = (uint64_t)ch->o.keepalive_idle_s * 1000,
		 tmo = (uint64_t)ch->o.user_timeout_ms;
	if (cn->ping_out) {
		if (now - cn->ping_at >= tmo) {
			conn_closef(
				cn,
				"the server stopped acknowledging: no answer to an HTTP/2 PING within %g s (sent after "
				"%g s with nothing received): the connection is dead",
				(double)tmo / 1000, (double)idle / 1000);
			ch_process(ch);
			return;
		}
		ka_arm(cn, tmo - (now - cn->ping_at));
		return;
	}
	if (!cn->ncalls || now - cn->last_rx < idle) {
		ka_arm(cn, cn->ncalls ? idle - (now - cn->last_rx) : idle);
		return;
	}
	if (nghttp2_submit_ping(cn->sess, NGHTTP2_FLAG_NONE, NULL) == 0) {
		cn->ping_out = 1;
		cn->ping_at = now;
		rk_debug(SUB, "%s: nothing received for %g s: HTTP/2 PING sent", ch->url,
			 (double)(now - cn->last_rx) / 1000);
	}
	ka_arm(cn, tmo);
	conn_flush(cn);
	ch_process(ch);
}

static void conn_timer_fired(void *ud)
{
	struct h2_conn *cn = ud;
	struct h2_chan *ch = cn->ch;
	cn->timer = NULL;
	if (cn->state == C_CONNECTING) {
		conn_closef(cn, "no connection within %g s (connect timeout): %s did not answer the TCP handshake",
			    (double)ch->o.connect_timeout_ms / 1000, cn->addr);
	} else if (!cn->answered && cn->first_len) {
		conn_not_h2(cn);
	} else if (!cn->answered) {
		conn_closef(cn,
			    "connected, but no HTTP/2 SETTINGS from the server within %g s: it accepts connections and "
			    "says nothing (a hung process, or not an HTTP/2 server)",
			    (double)ch->o.handshake_timeout_ms / 1000);
	}
	ch_process(ch);
}

static void conn_opened(struct h2_conn *cn)
{
	struct h2_chan *ch = cn->ch;
	nghttp2_option *opt = NULL;
	nghttp2_option_new(&opt);
	if (opt) {
		nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
		nghttp2_option_set_max_send_header_block_length(opt, MAX_HEADER_LIST);
	}
	int r = nghttp2_session_client_new2(&cn->sess, h2_callbacks(), cn, opt);
	nghttp2_option_del(opt);
	if (r) {
		cn->sess = NULL;
		conn_closef(cn, "cannot start an HTTP/2 session: %s", nghttp2_strerror(r));
		return;
	}
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
		{NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST},
	};
	nghttp2_submit_settings(cn->sess, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof *iv);
	nghttp2_session_set_local_window_size(cn->sess, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
	cn->state = C_OPEN;
	cn->connected_at = cn->last_rx = rk_now_ms();
	if (cn->timer)
		rk_timer_cancel(cn->timer);
	cn->timer = rk_loop_timer(ch->loop, (uint64_t)ch->o.handshake_timeout_ms, conn_timer_fired, cn);
	ka_arm(cn, (uint64_t)ch->o.keepalive_idle_s * 1000);
	conn_watch(cn, EPOLLIN);
	for (struct h2_call *c = ch->calls; c; c = c->next)
		if (c->conn == cn && !c->sid)
			call_submit(c);
	conn_flush(cn);
}

static void conn_io(void *ud, int fd, uint32_t events);
static int conn_read(struct h2_conn *cn);

/* Connect to the next address of cn; closes cn (failing its calls) when none is left. */
static void conn_try(struct h2_conn *cn)
{
	struct h2_chan *ch = cn->ch;
	for (; cn->cur; cn->cur = cn->cur->ai_next) {
		struct addrinfo *a = cn->cur;
		char ip[INET6_ADDRSTRLEN] = "?";
		if (a->ai_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, ip, sizeof ip);
		else if (a->ai_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, ip, sizeof ip);
		snprintf(cn->addr, sizeof cn->addr, a->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", ip, ch->port);
		int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			cn->last_errno = errno;
			continue;
		}
		int one = 1, idle = (int)ch->o.keepalive_idle_s, intvl = (int)ch->o.keepalive_intvl_s;
		unsigned ut = (unsigned)ch->o.user_timeout_ms;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
		if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut) < 0)
			rk_debug(SUB, "TCP_USER_TIMEOUT on the connection to %s: %s", ch->url, strerror(errno));
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
			cn->last_errno = errno;
			close(fd);
			continue;
		}
		rk_err e;
		cn->fd = fd;
		cn->wev = EPOLLOUT;
		cn->w = rk_loop_watch_fd(ch->loop, fd, EPOLLOUT, conn_io, cn, &e);
		if (!cn->w) {
			conn_closef(cn, "cannot watch the connection to %s: %s", cn->addr, e.msg);
			return;
		}
		return; /* connect's end comes as EPOLLOUT, also when it was immediate */
	}
	int err = cn->last_errno;
	conn_closef(cn, "cannot connect to %s: %s%s", cn->addr, strerror(err),
		    err == ECONNREFUSED ? " (nothing listens there: is the scheduler running, on that port?)" : "");
}

static void conn_connect_done(struct h2_conn *cn)
{
	int err = 0;
	socklen_t sl = sizeof err;
	if (getsockopt(cn->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
		err = errno;
	if (!err) {
		conn_opened(cn);
		return;
	}
	cn->last_errno = err;
	rk_watch_cancel(cn->w);
	cn->w = NULL;
	close(cn->fd);
	cn->fd = -1;
	cn->cur = cn->cur->ai_next;
	conn_try(cn);
}

/* A new connection for ch (it becomes ch->conn), not connecting yet. NULL with e filled when the
 * address is unusable. */
static struct h2_conn *conn_new(struct h2_chan *ch, rk_err *e)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *ai = NULL;
	int r = getaddrinfo(ch->host, ch->port, &hints, &ai);
	if (r == EAI_NONAME) {
		/* a name: resolved here, on the loop (/etc/hosts or DNS); an IP address never waits */
		hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
		r = getaddrinfo(ch->host, ch->port, &hints, &ai);
	}
	if (r) {
		rk_errf(e, EHOSTUNREACH, "cannot resolve %s: %s", ch->host,
			r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
		return NULL;
	}
	struct h2_conn *cn = calloc(1, sizeof *cn);
	if (!cn) {
		freeaddrinfo(ai);
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	cn->ch = ch;
	cn->fd = -1;
	cn->ai = cn->cur = ai;
	cn->state = C_CONNECTING;
	cn->next = ch->conns;
	ch->conns = cn;
	ch->conn = cn;
	cn->timer = rk_loop_timer(ch->loop, (uint64_t)ch->o.connect_timeout_ms, conn_timer_fired, cn);
	return cn; /* the caller attaches its call, then conn_try() */
}

/* Write what nghttp2 has to send, as far as the socket takes it. May close cn. */
static void conn_flush(struct h2_conn *cn)
{
	if (cn->state != C_OPEN || !cn->sess)
		return;
	for (;;) {
		if (cn->woff < cn->wlen) {
			ssize_t n = send(cn->fd, cn->wbuf + cn->woff, cn->wlen - cn->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n < 0) {
				int err = errno;
				/* the server closed first: what it sent before (or nothing) says more than EPIPE */
				if ((err == EPIPE || err == ECONNRESET) && conn_read(cn) < 0)
					return;
				if ((err == EPIPE || err == ECONNRESET) && !cn->rx_bytes) {
					conn_closef(
						cn,
						"the server accepted the TCP connection and closed it without sending "
						"anything: %s",
						strerror(err));
					return;
				}
				conn_closef(cn, "cannot send to the server at %s: %s%s", cn->addr, strerror(err),
					    err == ETIMEDOUT ? " (what was sent stayed unacknowledged: the server "
							       "stopped acknowledging, the connection is dead)"
							     : "");
				return;
			}
			cn->woff += (size_t)n;
			continue;
		}
		cn->woff = cn->wlen = 0;
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(cn->sess, &data);
		if (n < 0) {
			conn_closef(cn, "HTTP/2 session failed: %s", nghttp2_strerror((int)n));
			return;
		}
		if (n == 0)
			break;
		if ((size_t)n > cn->wcap) {
			size_t nc = cn->wcap ? cn->wcap : 16384;
			while (nc < (size_t)n)
				nc *= 2;
			uint8_t *nb = realloc(cn->wbuf, nc);
			if (!nb) {
				conn_closef(cn, "out of memory sending to the server");
				return;
			}
			cn->wbuf = nb;
			cn->wcap = nc;
		}
		memcpy(cn->wbuf, data, (size_t)n);
		cn->wlen = (size_t)n;
	}
	if (!nghttp2_session_want_read(cn->sess) && !nghttp2_session_want_write(cn->sess) && cn->woff == cn->wlen) {
		char said[400];
		conn_peer_said(cn, said, sizeof said);
		if (cn->ended[0] || cn->big_frame)
			conn_closef(cn, "this client ended the HTTP/2 connection%s", said);
		else
			conn_closef(cn, "the server ended the HTTP/2 connection%s", said);
		return;
	}
	conn_watch(cn, EPOLLIN | (cn->woff < cn->wlen ? EPOLLOUT : 0));
	if (cn->wcap > 65536 && cn->woff == cn->wlen) { /* a burst went out: give its buffer back */
		free(cn->wbuf);
		cn->wbuf = NULL;
		cn->wcap = cn->wlen = cn->woff = 0;
	}
}

/* Read what the socket has. Returns 0, or -1 when cn was closed. */
static int conn_read(struct h2_conn *cn)
{
	uint8_t buf[16384];
	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t n = recv(cn->fd, buf, sizeof buf, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0) {
			int err = n < 0 ? errno : 0;
			char said[400];
			conn_peer_said(cn, said, sizeof said);
			if (!cn->rx_bytes)
				conn_closef(cn,
					    "the server accepted the TCP connection and closed it without sending "
					    "anything%s%s",
					    err ? ": " : "", err ? strerror(err) : "");
			else if (!cn->answered)
				conn_not_h2(cn);
			else if (err == ETIMEDOUT)
				conn_closef(
					cn,
					"the server stopped acknowledging what was sent (keepalive probes or data) for "
					"%g s: the connection is dead (%s)",
					(double)cn->ch->o.user_timeout_ms / 1000, strerror(err));
			else if (err)
				conn_closef(cn, "the connection to %s broke: %s%s", cn->addr, strerror(err), said);
			else
				conn_closef(cn, "the server closed the connection%s", said);
			return -1;
		}
		cn->last_rx = rk_now_ms();
		track_frames(cn, buf, (size_t)n);
		if (!cn->answered) {
			size_t k = sizeof cn->first - cn->first_len;
			k = k < (size_t)n ? k : (size_t)n;
			memcpy(cn->first + cn->first_len, buf, k);
			cn->first_len += k;
			cn->rx_bytes += (size_t)n;
			int h2 = first_bytes_h2(cn->first, cn->first_len);
			if (h2 < 0) {
				conn_not_h2(cn);
				return -1;
			}
			if (h2 > 0) {
				cn->answered = 1;
				if (cn->timer) {
					rk_timer_cancel(cn->timer);
					cn->timer = NULL;
				}
				for (struct h2_call *c = cn->ch->calls; c; c = c->next)
					if (c->conn == cn) {
						c->ready_pending = 1;
						call_news(c);
					}
			}
		} else {
			cn->rx_bytes += (size_t)n;
		}
		ssize_t r = nghttp2_session_mem_recv(cn->sess, buf, (size_t)n);
		if (r < 0) {
			char said[400];
			conn_peer_said(cn, said, sizeof said);
			conn_closef(cn, "HTTP/2 error on the connection: %s%s", nghttp2_strerror((int)r), said);
			return -1;
		}
		if ((size_t)n < sizeof buf)
			return 0;
	}
	return 0;
}

static void conn_io(void *ud, int fd, uint32_t events)
{
	struct h2_conn *cn = ud;
	struct h2_chan *ch = cn->ch;
	ch->processing++;
	if (cn->state == C_CONNECTING) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			conn_connect_done(cn);
	} else if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || conn_read(cn) == 0) {
		conn_flush(cn);
	}
	ch->processing--;
	ch_process(ch);
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

static void kick_fired(void *ud)
{
	struct h2_chan *ch = ud;
	ch->kick = NULL;
	ch->processing++;
	for (struct h2_conn *cn = ch->conns, *next; cn; cn = next) {
		next = cn->next;
		conn_flush(cn);
	}
	ch->processing--;
	ch_process(ch);
}

/* Flush and dispatch from the loop soon (never from inside an rk_grpc_* call). */
static void ch_kick(struct h2_chan *ch)
{
	if (!ch->kick && !ch->closing)
		ch->kick = rk_loop_timer(ch->loop, 0, kick_fired, ch);
}

/* Tell c's user what happened, in order: ready, headers, messages, the end. */
static void call_dispatch(struct h2_call *c)
{
	if ((c->ready_pending || c->headers_pending) && !c->ready_seen && !c->finished) {
		c->ready_seen = 1;
		if (c->cbs.on_ready && !c->cancelled)
			c->cbs.on_ready(c->ud);
	}
	c->ready_pending = 0;
	if (c->headers_pending && !c->finished) {
		c->headers_pending = 0;
		if (c->hdr_timer) {
			rk_timer_cancel(c->hdr_timer);
			c->hdr_timer = NULL;
		}
		if (c->cbs.on_headers && !c->cancelled)
			c->cbs.on_headers(c->ud);
	}
	while (c->rxq_head && !c->finished && !c->cancelled) {
		struct rk_grpc_rxmsg *r = c->rxq_head;
		c->rxq_head = r->next;
		if (!c->rxq_head)
			c->rxq_tail = NULL;
		r->next = NULL;
		if (c->cbs.on_message) {
			c->cbs.on_message(c->ud, r->msg, r->raw, r->len);
			r->msg = NULL; /* the callee's now */
		}
		rk_grpc__rxmsg_free_all(r);
	}
	if (!c->finished && (c->local_status >= 0 || c->remote_ended || c->stream_closed))
		call_complete(c);
}

static void ch_process(struct h2_chan *ch)
{
	ch->processing++;
	struct h2_call *c;
	while ((c = ch->news)) {
		ch->news = c->news_next;
		if (!ch->news)
			ch->news_tail = NULL;
		c->queued = 0;
		call_dispatch(c);
		call_unref(c);
	}
	ch->processing--;
	if (!ch->processing && ch->closing)
		ch_free_now(ch);
}

/* ---- calls: the API --------------------------------------------------------------------------- */

static void hdr_fired(void *ud)
{
	struct h2_call *c = ud;
	c->hdr_timer = NULL;
	if (!c->hdr_block_done)
		call_fail(c, RK_GRPC_UNAVAILABLE, "connected, but no HTTP/2 response headers within %g s",
			  (double)c->header_timeout_ms / 1000);
	ch_process(c->ch);
}

static void hdr_arm(struct h2_call *c)
{
	if (c->hdr_timer) {
		rk_timer_cancel(c->hdr_timer);
		c->hdr_timer = NULL;
	}
	if (!c->header_timeout_ms || !c->sent_at || c->hdr_block_done || c->finished)
		return;
	uint64_t now = rk_now_ms(), at = c->sent_at + c->header_timeout_ms;
	c->hdr_timer = rk_loop_timer(c->ch->loop, at > now ? at - now : 0, hdr_fired, c);
}

/* Send c's request headers on its (open) connection; the body follows as it is queued. */
static void call_submit(struct h2_call *c)
{
	struct h2_chan *ch = c->ch;
	struct h2_conn *cn = c->conn;
	char path[1024], tmo[16];
	snprintf(path, sizeof path, "%s%s", ch->prefix, c->path);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME}
	nghttp2_nv nv[8] = {
		NV(":method", "POST"),
		NV(":scheme", "http"),
		NV(":authority", ch->authority),
		NV(":path", path),
		NV("content-type", "application/grpc"),
		NV("te", "trailers"),
		NV("user-agent", ch->user_agent),
	};
	size_t nn = 7;
	if (c->deadline_ms) {
		rk_grpc_timeout_str(c->deadline_ms, tmo);
		nv[nn++] = (nghttp2_nv)NV("grpc-timeout", tmo);
	}
#undef NV
	nghttp2_data_provider dp = {.read_callback = read_body};
	int32_t sid = nghttp2_submit_request(cn->sess, NULL, nv, nn, &dp, c);
	if (sid < 0) {
		call_fail(c, RK_GRPC_UNAVAILABLE, "cannot start an HTTP/2 stream: %s", nghttp2_strerror(sid));
		ch_kick(ch);
		return;
	}
	c->sid = sid;
	c->sent_at = rk_now_ms();
	if (cn->answered) {
		c->ready_pending = 1;
		call_news(c);
	}
	hdr_arm(c);
	ch_kick(ch);
}

static void deadline_fired(void *ud)
{
	struct h2_call *c = ud;
	struct h2_chan *ch = c->ch;
	c->deadline = NULL;
	ch->processing++;
	call_finish(c, RK_GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the server answered");
	ch->processing--;
	if (!ch->processing && ch->closing)
		ch_free_now(ch);
}

rk_grpc_call *rk_h2_call_start(rk_grpc_channel *chp, const char *path, uint64_t deadline_ms,
			       const ProtobufCMessageDescriptor *resp, const rk_grpc_call_cbs *cbs, void *ud, rk_err *e)
{
	struct h2_chan *ch = CH(chp);
	if (ch->closing) {
		rk_errf(e, EBADF, "gRPC channel %s is closed", ch->url);
		return NULL;
	}
	if (!path || path[0] != '/' || strlen(path) > 512) {
		rk_errf(e, EINVAL, "gRPC method path must look like /package.Service/Method, got '%s'",
			path ? path : "(null)");
		return NULL;
	}
	struct h2_call *c = calloc(1, sizeof *c);
	if (!c || !(c->path = strdup(path))) {
		free(c);
		rk_errf(e, ENOMEM, "out of memory starting gRPC call %s", path);
		return NULL;
	}
	c->h2 = 1;
	c->ch = ch;
	c->refs = 1;
	c->resp = resp;
	c->cbs = *cbs;
	c->ud = ud;
	c->grpc_status = -1;
	c->local_status = -1;
	c->deadline_ms = deadline_ms;
	c->next = ch->calls;
	if (ch->calls)
		ch->calls->prev = c;
	ch->calls = c;
	if (deadline_ms)
		c->deadline = rk_loop_timer(ch->loop, deadline_ms, deadline_fired, c);
	rk_err ce;
	struct h2_conn *fresh = NULL;
	if (!ch->conn && !(fresh = conn_new(ch, &ce))) {
		call_fail(c, RK_GRPC_UNAVAILABLE, "%s", ce.msg);
		ch_kick(ch);
		return (rk_grpc_call *)c;
	}
	c->conn = ch->conn;
	c->conn->ncalls++;
	if (fresh)
		conn_try(fresh); /* may fail (and free) it at once: c then ends from the loop, saying why */
	else if (c->conn->state == C_OPEN)
		call_submit(c);
	return (rk_grpc_call *)c;
}

void rk_h2_call_set_header_timeout(rk_grpc_call *cp, uint64_t ms)
{
	struct h2_call *c = CALL(cp);
	c->header_timeout_ms = ms;
	hdr_arm(c);
}

static void call_resume(struct h2_call *c)
{
	if (c->deferred && c->conn && c->conn->sess && c->sid > 0) {
		c->deferred = 0;
		nghttp2_session_resume_data(c->conn->sess, c->sid);
	}
	ch_kick(c->ch);
}

int rk_h2_call_send_raw(rk_grpc_call *cp, const void *buf, size_t len, rk_err *e)
{
	struct h2_call *c = CALL(cp);
	if (c->finished || c->local_status >= 0)
		return rk_errf(e, EPIPE, "gRPC call %s already ended", c->path);
	if (c->send_closed)
		return rk_errf(e, EPIPE, "gRPC call %s: send after close_send", c->path);
	if (len > UINT32_MAX)
		return rk_errf(e, EMSGSIZE, "message of %zu bytes cannot be framed", len);
	if (c->tx_off && c->tx_off == c->tx_len)
		c->tx_off = c->tx_len = 0;
	if (c->tx_len + 5 + len > c->tx_cap && c->tx_off) { /* slide the unsent part down first */
		memmove(c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
		c->tx_len -= c->tx_off;
		c->tx_off = 0;
	}
	if (rk_grpc__tx_frame(&c->tx, &c->tx_len, &c->tx_cap, buf, len) < 0)
		return rk_errf(e, ENOMEM, "out of memory queueing a %zu-byte message", len);
	call_resume(c);
	return 0;
}

void rk_h2_call_close_send(rk_grpc_call *cp)
{
	struct h2_call *c = CALL(cp);
	if (c->send_closed || c->finished)
		return;
	c->send_closed = 1;
	call_resume(c);
}

void rk_h2_call_cancel(rk_grpc_call *cp)
{
	struct h2_call *c = CALL(cp);
	if (c->cancelled)
		return;
	c->cancelled = 1;
	if (!c->finished)
		call_finish(c, RK_GRPC_CANCELLED, "cancelled");
}

size_t rk_h2_call_pending(const rk_grpc_call *cp)
{
	const struct h2_call *c = CALL(cp);
	return c->tx_len - c->tx_off;
}

/* ---- channel --------------------------------------------------------------------------------- */

/* "http://host:port/prefix" -> host, port, authority, prefix. */
static int parse_url(struct h2_chan *ch, const char *url, rk_err *e)
{
	const char *p = url + 7, *end = p + strcspn(p, "/?#");
	const char *hs = p, *he, *ps = NULL;
	if (*p == '[') {
		hs = p + 1;
		he = memchr(hs, ']', (size_t)(end - hs));
		if (!he)
			return rk_errf(e, EINVAL, "gRPC address '%s': unbalanced '[' in the host", url);
		if (he + 1 < end && he[1] == ':')
			ps = he + 2;
	} else {
		he = memchr(p, ':', (size_t)(end - p));
		if (he)
			ps = he + 1;
		else
			he = end;
	}
	if (he == hs)
		return rk_errf(e, EINVAL, "gRPC address '%s' has no host", url);
	size_t pl = ps ? (size_t)(end - ps) : 0;
	if (ps && (!pl || pl > 5 || strspn(ps, "0123456789") < pl))
		return rk_errf(e, EINVAL, "gRPC address '%s': the port must be a number", url);
	ch->host = strndup(hs, (size_t)(he - hs));
	ch->port = ps ? strndup(ps, pl) : strdup("80");
	ch->authority = strndup(p, (size_t)(end - p));
	ch->prefix = strdup(end);
	if (!ch->host || !ch->port || !ch->authority || !ch->prefix)
		return rk_errf(e, ENOMEM, "out of memory");
	size_t n = strlen(ch->prefix);
	while (n && ch->prefix[n - 1] == '/')
		ch->prefix[--n] = 0;
	return 0;
}

rk_grpc_channel *rk_h2_channel_new(rk_loop *l, const char *url, const rk_grpc_opts *o, rk_err *e)
{
	if (!h2_callbacks()) {
		rk_errf(e, ENOMEM, "out of memory setting up libnghttp2");
		return NULL;
	}
	struct h2_chan *ch = calloc(1, sizeof *ch);
	if (!ch) {
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	ch->h2 = 1;
	ch->loop = l;
	if (o)
		ch->o = *o;
	rk_grpc__opts_defaults(&ch->o);
	char ua[64];
	snprintf(ua, sizeof ua, "riklet-grpc/nghttp2-%s", nghttp2_version(0)->version_str);
	ch->user_agent = strdup(ch->o.user_agent ? ch->o.user_agent : ua);
	ch->o.ca_file = ch->o.cert_file = ch->o.key_file = ch->o.user_agent = NULL;
	ch->url = strdup(url);
	if (!ch->url || !ch->user_agent) {
		rk_errf(e, ENOMEM, "out of memory");
		ch_free_now(ch);
		return NULL;
	}
	size_t n = strlen(ch->url);
	while (n > 7 && ch->url[n - 1] == '/')
		ch->url[--n] = 0;
	if (parse_url(ch, ch->url, e) < 0) {
		ch_free_now(ch);
		return NULL;
	}
	return (rk_grpc_channel *)ch;
}

static void ch_free_now(struct h2_chan *ch)
{
	for (struct h2_call *c; (c = ch->news);) {
		ch->news = c->news_next;
		c->queued = 0;
		call_unref(c);
	}
	ch->news_tail = NULL;
	while (ch->calls) {
		struct h2_call *c = ch->calls;
		c->cancelled = 1;
		call_finish(c, RK_GRPC_CANCELLED, "channel closed");
	}
	ch->closing = 1;
	while (ch->conns) {
		struct h2_conn *cn = ch->conns;
		if (cn->sess) { /* say goodbye if the socket takes it at once; never wait */
			nghttp2_session_terminate_session(cn->sess, NGHTTP2_NO_ERROR);
			const uint8_t *d;
			ssize_t k = nghttp2_session_mem_send(cn->sess, &d);
			if (k > 0 && cn->state == C_OPEN && cn->woff == cn->wlen)
				(void)!send(cn->fd, d, (size_t)k, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		conn_close(cn, "channel closed");
	}
	if (ch->kick)
		rk_timer_cancel(ch->kick);
	free(ch->url);
	free(ch->host);
	free(ch->port);
	free(ch->authority);
	free(ch->prefix);
	free(ch->user_agent);
	free(ch);
}

void rk_h2_channel_free(rk_grpc_channel *chp)
{
	struct h2_chan *ch = CH(chp);
	if (!ch || ch->closing)
		return;
	ch->closing = 1;
	if (ch->processing)
		return; /* freed when the current dispatch ends */
	ch_free_now(ch);
}

const char *rk_h2_channel_url(const rk_grpc_channel *chp)
{
	return CH(chp)->url;
}

size_t rk_h2_channel_sockets(const rk_grpc_channel *chp)
{
	size_t n = 0;
	for (const struct h2_conn *cn = CH(chp)->conns; cn; cn = cn->next)
		n += cn->fd >= 0;
	return n;
}

size_t rk_h2_channel_calls(const rk_grpc_channel *chp)
{
	size_t n = 0;
	for (const struct h2_call *c = CH(chp)->calls; c; c = c->next)
		n++;
	return n;
}
