/* grpc.c — gRPC framing shared by both transports, the public rk_grpc_* entry points (dispatching
 * http:// channels to core/grpc_h2.c), and gRPC over HTTP/2 with libcurl multi inside the rk_loop
 * for https:// (see grpc.h).
 *
 * libcurl callbacks only record facts (bytes read, frames parsed, headers seen); user callbacks run
 * afterwards from ch_process(), outside libcurl, so user code may call anything (libcurl refuses
 * most multi calls from inside its own callbacks). */
#include "grpc.h"
#include "grpc_h2.h"

#include <ctype.h>
#include "curl_lazy.h"
#include "curl_loop.h"
#include "pb.h"
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received, TCP_USER_TIMEOUT */
#include <netinet/in.h>
#include <sys/socket.h>

#define SUB "grpc"

struct rk_grpc_call {
	int h2; /* 0: this transport (see grpc_h2.h) */
	struct rk_grpc_channel *ch;
	struct rk_grpc_call *prev, *next; /* channel's list */
	int refs;
	CURL *easy;
	struct curl_slist *hdrs;
	char *path;
	const ProtobufCMessageDescriptor *resp;
	rk_grpc_call_cbs cbs;
	void *ud;
	rk_timer *deadline;
	char errbuf[CURL_ERROR_SIZE];

	/* send side */
	uint8_t *tx;
	size_t tx_len, tx_off, tx_cap;
	int send_closed;  /* close_send() called */
	int paused;	  /* read callback returned PAUSE */
	int want_unpause; /* data or EOF queued while paused */

	/* receive side */
	rk_grpc_rx rx;
	struct rk_grpc_rxmsg *rxq_head, *rxq_tail;
	int http_status;
	int hdr_block_done;  /* first header block finished */
	int headers_pending; /* on_headers to deliver */
	int headers_seen;
	int grpc_status; /* -1 = not seen */
	char *grpc_message;

	/* liveness: is a peer there, and does it speak HTTP/2? */
	int own_conn;	       /* libcurl opened a socket for this call (not a reused connection) */
	int connected;	       /* TCP (and TLS) up, request on its way (CURLOPT_PREREQFUNCTION) */
	int conn_fd;	       /* that connection's socket, -1 when not known */
	uint64_t connected_at; /* rk_now_ms() */
	int answered;	       /* the peer sent its first bytes on that connection */
	int ready_pending, ready_seen;
	int peeked; /* first bytes looked at (or EOF/error seen) before libcurl read them */
	int rx_eof, rx_errno, not_h2;
	char first[40];
	size_t first_len;
	uint64_t header_timeout_ms;
	rk_timer *answer_timer;
	rk_timer *trailers_timer; /* grpc-status came, libcurl has not ended the transfer yet */

	/* end */
	int local_status; /* -1, or a status decided here (bad frame, too big) */
	char local_msg[1100];
	int curl_done;
	CURLcode curl_result;
	int finished;
	int cancelled;
};

struct rk_grpc_channel {
	int h2; /* 0: this transport (see grpc_h2.h) */
	rk_loop *loop;
	rk_curl_loop cl;
	char *url; /* without trailing slash */
	int tls;
	rk_grpc_opts o;
	char *ca_file, *cert_file, *key_file, *user_agent;
	struct rk_grpc_call *calls;
	int processing; /* inside ch_process */
	int closing;	/* free requested while processing */
	int unpause_pending;
	int multiplex; /* calls share one connection (not h2c on libcurl < 7.89.0) */
};

static const char *status_names[] = {
	"OK",	     "CANCELLED",      "UNKNOWN",	    "INVALID_ARGUMENT",	  "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",	    "INTERNAL",		  "UNAVAILABLE",
	"DATA_LOSS", "UNAUTHENTICATED"};

const char *rk_grpc_status_name(int code)
{
	if (code >= 0 && code < (int)(sizeof status_names / sizeof *status_names))
		return status_names[code];
	return "UNKNOWN_STATUS";
}

/* ---- framing ---------------------------------------------------------------------------------- */

void rk_grpc_frame_header(uint8_t out[5], uint32_t len)
{
	out[0] = 0;
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

int rk_grpc_frame_parse(const uint8_t *buf, size_t len, size_t max, const uint8_t **msg, size_t *msg_len,
			size_t *consumed, int *status, rk_err *e)
{
	if (len < 5)
		return 0;
	uint32_t n = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
	if (buf[0] & 1) {
		*status = RK_GRPC_INTERNAL;
		return rk_errf(e, EPROTO,
			       "server sent a compressed message (flag 0x%02x) but this client "
			       "never offered compression",
			       buf[0]);
	}
	if (buf[0] != 0) {
		*status = RK_GRPC_INTERNAL;
		return rk_errf(e, EPROTO,
			       "malformed gRPC frame: reserved flag bits set (0x%02x); the peer "
			       "is not speaking gRPC framing",
			       buf[0]);
	}
	if (n > max) {
		*status = RK_GRPC_RESOURCE_EXHAUSTED;
		return rk_errf(e, EMSGSIZE, "received message larger than max (%" PRIu32 " vs. %zu bytes)", n, max);
	}
	if (len - 5 < n)
		return 0;
	*msg = buf + 5;
	*msg_len = n;
	*consumed = 5 + (size_t)n;
	return 1;
}

int rk_grpc_rx_feed(rk_grpc_rx *rx, const uint8_t *data, size_t len, size_t max, rk_grpc_msg_fn fn, void *ud,
		    int *status, rk_err *e)
{
	const uint8_t *p = data;
	size_t n = len;
	if (rx->len) { /* a frame begun earlier: continue it in the buffer */
		if (len > SIZE_MAX - rx->len) {
			*status = RK_GRPC_RESOURCE_EXHAUSTED;
			return rk_errf(e, ENOMEM, "response too large to buffer");
		}
		if (rx->len + len > rx->cap) {
			size_t nc = rx->cap ? rx->cap : 256;
			while (nc < rx->len + len)
				nc = nc > SIZE_MAX / 2 ? rx->len + len : nc * 2;
			uint8_t *nb = realloc(rx->buf, nc);
			if (!nb) {
				*status = RK_GRPC_RESOURCE_EXHAUSTED;
				return rk_errf(e, ENOMEM, "out of memory buffering a %zu-byte response", rx->len + len);
			}
			rx->buf = nb;
			rx->cap = nc;
		}
		memcpy(rx->buf + rx->len, data, len);
		rx->len += len;
		p = rx->buf;
		n = rx->len;
	}
	size_t off = 0;
	for (;;) {
		const uint8_t *msg;
		size_t ml, used;
		int r = rk_grpc_frame_parse(p + off, n - off, max, &msg, &ml, &used, status, e);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		if (fn(ud, msg, ml, status, e) < 0)
			return -1;
		off += used;
	}
	size_t left = n - off;
	if (p == rx->buf) {
		if (off)
			memmove(rx->buf, rx->buf + off, left);
		rx->len = left;
	} else if (left) {
		uint8_t *nb = rx->cap >= left ? rx->buf : realloc(rx->buf, left);
		if (!nb) {
			*status = RK_GRPC_RESOURCE_EXHAUSTED;
			return rk_errf(e, ENOMEM, "out of memory buffering a %zu-byte response", left);
		}
		if (nb != rx->buf)
			rx->cap = left;
		rx->buf = nb;
		memcpy(rx->buf, p + off, left);
		rx->len = left;
	}
	if (!rx->len && rx->cap > 65536) { /* a large message went through: do not keep its buffer */
		free(rx->buf);
		rx->buf = NULL;
		rx->cap = 0;
	}
	return 0;
}

struct rk_grpc_rxmsg *rk_grpc__rxmsg_new(const ProtobufCMessageDescriptor *resp, const uint8_t *msg, size_t ml,
					 int *status, rk_err *e)
{
	struct rk_grpc_rxmsg *m = calloc(1, sizeof *m);
	if (m && resp) {
		m->msg = rk_pb_unpack(resp, ml, msg); /* strings keep their length (pb.h) */
		if (!m->msg) {
			free(m);
			*status = RK_GRPC_INTERNAL;
			rk_errf(e, EPROTO,
				"cannot decode a %zu-byte response as %s: not valid protobuf for that type (is the "
				"server "
				"speaking the same .proto?)",
				ml, resp->name);
			return NULL;
		}
	} else if (m && (m->raw = malloc(ml ? ml : 1))) {
		memcpy(m->raw, msg, ml);
		m->len = ml;
	} else {
		free(m);
		*status = RK_GRPC_RESOURCE_EXHAUSTED;
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	return m;
}

void rk_grpc__rxmsg_free_all(struct rk_grpc_rxmsg *m)
{
	while (m) {
		struct rk_grpc_rxmsg *n = m->next;
		if (m->msg)
			protobuf_c_message_free_unpacked(m->msg, NULL);
		free(m->raw);
		free(m);
		m = n;
	}
}

void rk_grpc__opts_defaults(rk_grpc_opts *o)
{
	if (!o->max_recv)
		o->max_recv = RK_GRPC_DEFAULT_MAX_RECV;
	if (o->connect_timeout_ms <= 0)
		o->connect_timeout_ms = 10000;
	if (o->handshake_timeout_ms <= 0)
		o->handshake_timeout_ms = 10000;
	if (o->keepalive_idle_s <= 0)
		o->keepalive_idle_s = 30;
	if (o->keepalive_intvl_s <= 0)
		o->keepalive_intvl_s = 10;
	if (o->user_timeout_ms <= 0)
		o->user_timeout_ms = 20000;
}

void rk_grpc_rx_free(rk_grpc_rx *rx)
{
	free(rx->buf);
	rx->buf = NULL;
	rx->len = rx->cap = 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

void rk_grpc_percent_decode(const char *in, size_t n, char *out, size_t outsz)
{
	size_t o = 0;
	if (!outsz)
		return;
	for (size_t i = 0; i < n && o + 1 < outsz; i++) {
		int h, l;
		/* a control byte stays encoded: the message is logged, and a server's "%0a" forged a log line
		 * ("%00" cut it) */
		if (in[i] == '%' && i + 2 < n && (h = hexval((unsigned char)in[i + 1])) >= 0 &&
		    (l = hexval((unsigned char)in[i + 2])) >= 0 && (h << 4 | l) >= 0x20 && (h << 4 | l) != 0x7f) {
			out[o++] = (char)(h << 4 | l);
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = 0;
}

void rk_grpc_timeout_str(uint64_t ms, char out[16])
{
	if (ms <= 99999999ull)
		snprintf(out, 16, "%" PRIu64 "m", ms);
	else if (ms / 1000 <= 99999999ull)
		snprintf(out, 16, "%" PRIu64 "S", (ms + 999) / 1000);
	else
		snprintf(out, 16, "%" PRIu64 "H", ms / 3600000 > 99999999ull ? (uint64_t)99999999 : ms / 3600000);
}

/* ---- buffers ------------------------------------------------------------------------------- */

static int buf_reserve(uint8_t **b, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 256;
	while (nc < need)
		nc *= 2;
	uint8_t *nb = realloc(*b, nc);
	if (!nb)
		return -1;
	*b = nb;
	*cap = nc;
	return 0;
}

int rk_grpc__tx_frame(uint8_t **tx, size_t *tx_len, size_t *tx_cap, const void *buf, size_t len)
{
	if (buf_reserve(tx, tx_cap, *tx_len + 5 + len) < 0)
		return -1;
	rk_grpc_frame_header(*tx + *tx_len, (uint32_t)len);
	if (len)
		memcpy(*tx + *tx_len + 5, buf, len);
	*tx_len += 5 + len;
	return 0;
}

/* ---- calls ----------------------------------------------------------------------------------- */

static void ch_process(void *ud);
static void cu_call_cancel(rk_grpc_call *c);
static void ch_free_now(struct rk_grpc_channel *ch);

static void call_unref(rk_grpc_call *c)
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

/* Detach from curl and the channel list; idempotent. Never called from inside libcurl. */
static void call_detach(rk_grpc_call *c)
{
	if (c->deadline) {
		rk_timer_cancel(c->deadline);
		c->deadline = NULL;
	}
	if (c->answer_timer) {
		rk_timer_cancel(c->answer_timer);
		c->answer_timer = NULL;
	}
	if (c->trailers_timer) {
		rk_timer_cancel(c->trailers_timer);
		c->trailers_timer = NULL;
	}
	if (c->easy) {
		/* Ended here (cancel, deadline, bad frame) while the server may still think the stream is
		 * open: libcurl 7.88 queues an RST_STREAM it may never flush on an idle connection, so do
		 * not keep that connection; the server then sees it close. */
		if (!c->curl_done || c->local_status >= 0)
			curl_easy_setopt(c->easy, CURLOPT_FORBID_REUSE, 1L);
		curl_multi_remove_handle(c->ch->cl.multi, c->easy);
		curl_easy_cleanup(c->easy);
		c->easy = NULL;
	}
	if (c->hdrs) {
		curl_slist_free_all(c->hdrs);
		c->hdrs = NULL;
	}
	if (c->ch) {
		if (c->prev)
			c->prev->next = c->next;
		else if (c->ch->calls == c)
			c->ch->calls = c->next;
		if (c->next)
			c->next->prev = c->prev;
		c->prev = c->next = NULL;
	}
}

static void call_finish(rk_grpc_call *c, int status, const char *msg)
{
	if (c->finished)
		return;
	c->finished = 1;
	call_detach(c);
	if (!c->cancelled && c->cbs.on_done)
		c->cbs.on_done(c->ud, status, msg ? msg : "");
	call_unref(c); /* the reference held while the call is open */
}

static size_t hdr_cb(char *b, size_t size, size_t n, void *ud)
{
	rk_grpc_call *c = ud;
	size_t len = size * n, l = len;
	while (l && (b[l - 1] == '\r' || b[l - 1] == '\n'))
		l--;
	if (l == 0) {
		if (!c->hdr_block_done) {
			c->hdr_block_done = 1;
			/* a trailers-only reply carries grpc-status in this very block */
			if (c->http_status == 200 && c->grpc_status < 0)
				c->headers_pending = 1;
		}
		return len;
	}
	if (l > 5 && !strncasecmp(b, "HTTP/", 5)) {
		const char *sp = memchr(b, ' ', l);
		if (sp)
			c->http_status = atoi(sp + 1);
		return len;
	}
	const char *colon = memchr(b, ':', l);
	if (!colon)
		return len;
	size_t kl = (size_t)(colon - b);
	const char *v = colon + 1;
	while (v < b + l && (*v == ' ' || *v == '\t'))
		v++;
	size_t vl = (size_t)(b + l - v);
	if (kl == 11 && !strncasecmp(b, "grpc-status", 11)) {
		char tmp[16];
		size_t k = vl < sizeof tmp - 1 ? vl : sizeof tmp - 1;
		memcpy(tmp, v, k);
		tmp[k] = 0;
		char *end;
		long s = strtol(tmp, &end, 10);
		c->grpc_status = (end != tmp && s >= 0 && s <= 0xffff) ? (int)s : RK_GRPC_UNKNOWN;
	} else if (kl == 12 && !strncasecmp(b, "grpc-message", 12)) {
		free(c->grpc_message);
		c->grpc_message = malloc(vl + 1);
		if (c->grpc_message)
			rk_grpc_percent_decode(v, vl, c->grpc_message, vl + 1);
	}
	return len;
}

static void rxq_push(rk_grpc_call *c, struct rk_grpc_rxmsg *m)
{
	if (c->rxq_tail)
		c->rxq_tail->next = m;
	else
		c->rxq_head = m;
	c->rxq_tail = m;
}

/* The write callback refuses the rest of a response: make libcurl drop (not cache) the
 * connection so the server sees the stream end (see call_detach). Only sets a flag. */
static size_t write_fail(rk_grpc_call *c)
{
	curl_easy_setopt(c->easy, CURLOPT_FORBID_REUSE, 1L);
	return 0;
}

/* One whole response message: decode it (or keep its bytes) for the dispatch after libcurl. */
static int curl_msg(void *ud, const uint8_t *msg, size_t ml, int *status, rk_err *e)
{
	rk_grpc_call *c = ud;
	struct rk_grpc_rxmsg *m = rk_grpc__rxmsg_new(c->resp, msg, ml, status, e);
	if (!m)
		return -1;
	rxq_push(c, m);
	return 0;
}

static size_t write_cb(char *b, size_t size, size_t n, void *ud)
{
	rk_grpc_call *c = ud;
	size_t len = size * n;
	if (c->local_status >= 0)
		return write_fail(c); /* already failing */
	int st = RK_GRPC_INTERNAL;
	rk_err e;
	if (rk_grpc_rx_feed(&c->rx, (const uint8_t *)b, len, c->ch->o.max_recv, curl_msg, c, &st, &e) < 0) {
		c->local_status = st;
		snprintf(c->local_msg, sizeof c->local_msg, "%s", e.msg);
		return write_fail(c);
	}
	return len;
}

static size_t read_cb(char *b, size_t size, size_t n, void *ud)
{
	rk_grpc_call *c = ud;
	size_t room = size * n, avail = c->tx_len - c->tx_off;
	if (avail) {
		size_t k = avail < room ? avail : room;
		memcpy(b, c->tx + c->tx_off, k);
		c->tx_off += k;
		if (c->tx_off == c->tx_len)
			c->tx_off = c->tx_len = 0;
		return k;
	}
	if (c->send_closed)
		return 0;
	c->paused = 1;
	return CURL_READFUNC_PAUSE;
}

static void call_unpause(rk_grpc_call *c)
{
	if (!c->paused || !c->easy || c->finished)
		return;
	if (c->ch->cl.in_curl) {
		c->want_unpause = 1;
		c->ch->unpause_pending = 1;
		return;
	}
	c->paused = 0;
	c->want_unpause = 0;
	curl_easy_pause(c->easy, CURLPAUSE_CONT);
}

static void deadline_cb(void *ud)
{
	rk_grpc_call *c = ud;
	struct rk_grpc_channel *ch = c->ch;
	c->deadline = NULL;
	ch->processing++;
	call_finish(c, RK_GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the server answered");
	ch->processing--;
	if (!ch->processing && ch->closing)
		ch_free_now(ch);
}

/* ---- liveness: is a peer there, does it speak HTTP/2, does it answer? ------------------------
 * libcurl bounds the TCP connect (and TLS handshake) itself. After that, an h2c server that
 * accepted the connection must send its SETTINGS: the kernel's byte count on the call's socket
 * (TCP_INFO) tells whether it sent anything, whoever read it, and a peek at the first bytes before
 * libcurl reads them tells what (an HTTP/1 server's "HTTP/1.1 400 ...", or an EOF at once). */

static int sock_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

/* Bytes the kernel received on a TCP socket so far; -1 when it cannot say. */
static long long sock_bytes_received(int fd)
{
	struct tcp_info ti;
	socklen_t tl = sizeof ti;
	memset(&ti, 0, sizeof ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0 ||
	    tl < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
		return -1;
	return (long long)ti.tcpi_bytes_received;
}

static void call_mark_answered(rk_grpc_call *c)
{
	if (c->answered)
		return;
	c->answered = 1;
	if (!c->ready_seen)
		c->ready_pending = 1;
}

static void call_check_answered(rk_grpc_call *c)
{
	if (c->answered || !c->connected || c->not_h2 || c->conn_fd < 0)
		return;
	/* at least a frame header (9 bytes): a FIN alone counts as one; -1: libcurl closed the socket */
	if (sock_bytes_received(c->conn_fd) >= 9)
		call_mark_answered(c);
}

/* Before libcurl reads fd: keep the first bytes an h2c server sent on it, or the EOF/error. */
static void sock_peek(void *ud, int fd)
{
	struct rk_grpc_channel *ch = ud;
	if (ch->tls)
		return;
	for (rk_grpc_call *c = ch->calls; c; c = c->next) {
		if (c->conn_fd != fd || c->peeked || !c->connected || !c->own_conn)
			continue;
		uint8_t b[sizeof c->first];
		ssize_t n = recv(fd, b, sizeof b, MSG_PEEK | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		c->peeked = 1;
		if (n == 0) {
			c->rx_eof = 1;
		} else if (n < 0) {
			c->rx_errno = errno;
		} else {
			memcpy(c->first, b, (size_t)n);
			c->first_len = (size_t)n;
			/* a server's first HTTP/2 frame is SETTINGS: type 4, stream 0, length 6*k */
			uint32_t flen = (uint32_t)b[0] << 16 | (uint32_t)b[1] << 8 | b[2];
			if ((n >= 4 && b[3] != 4) || (n >= 9 && (b[5] | b[6] | b[7] | b[8])) || (n >= 3 && flen % 6))
				c->not_h2 = 1;
			else
				call_mark_answered(c);
		}
		return;
	}
}

/* What the server sent, quoted for a log line: "HTTP/1.1 400 Bad Request". */
static void first_excerpt(const rk_grpc_call *c, char *out, size_t outsz)
{
	size_t o = 0;
	out[o++] = '"';
	for (size_t i = 0; i < c->first_len && o + 6 < outsz; i++) {
		unsigned char ch = (unsigned char)c->first[i];
		if (ch == '\r' || ch == '\n')
			break; /* the first line says enough */
		if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
			out[o++] = (char)ch;
		else
			o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", ch);
	}
	if (o + 2 < outsz) {
		out[o++] = '"';
		out[o] = 0;
	} else {
		out[outsz - 1] = 0;
	}
}

static void answer_fired(void *ud);

/* (Re)arm the timer for the next liveness deadline of c, if any is left. */
static void call_arm_answer(rk_grpc_call *c)
{
	if (c->answer_timer) {
		rk_timer_cancel(c->answer_timer);
		c->answer_timer = NULL;
	}
	if (c->finished || !c->connected)
		return;
	uint64_t now = rk_now_ms(), at = 0;
	if (!c->answered)
		at = c->connected_at + (uint64_t)c->ch->o.handshake_timeout_ms;
	if (c->header_timeout_ms && !c->hdr_block_done) {
		uint64_t h = c->connected_at + c->header_timeout_ms;
		if (!at || h < at)
			at = h;
	}
	if (at)
		c->answer_timer = rk_loop_timer(c->ch->loop, at > now ? at - now : 0, answer_fired, c);
}

static void answer_fired(void *ud)
{
	rk_grpc_call *c = ud;
	struct rk_grpc_channel *ch = c->ch;
	c->answer_timer = NULL;
	if (c->finished)
		return;
	call_check_answered(c);
	uint64_t since = rk_now_ms() - c->connected_at;
	char msg[400], ex[120];
	if (!c->answered && since >= (uint64_t)ch->o.handshake_timeout_ms) {
		if (c->not_h2) {
			first_excerpt(c, ex, sizeof ex);
			snprintf(msg, sizeof msg,
				 "%s %s: connected, but the server does not speak HTTP/2: it sent %s (is this a "
				 "gRPC server?)",
				 ch->url, c->path, ex);
		} else {
			snprintf(msg, sizeof msg,
				 "%s %s: connected, but no HTTP/2 SETTINGS from the server within %g s: it accepts "
				 "connections and says nothing (a hung process, or not an HTTP/2 server)",
				 ch->url, c->path, (double)ch->o.handshake_timeout_ms / 1000);
		}
	} else if (c->header_timeout_ms && !c->hdr_block_done && since >= c->header_timeout_ms) {
		snprintf(msg, sizeof msg, "%s %s: connected, but no HTTP/2 response headers within %g s", ch->url,
			 c->path, (double)c->header_timeout_ms / 1000);
	} else {
		call_arm_answer(c);
		return;
	}
	ch->processing++;
	call_finish(c, RK_GRPC_UNAVAILABLE, msg);
	ch->processing--;
	if (!ch->processing && ch->closing)
		ch_free_now(ch);
}

/* libcurl opened a socket for c: bound how long sent data may stay unacknowledged. */
static int sockopt_cb(void *ud, curl_socket_t fd, curlsocktype purpose)
{
	rk_grpc_call *c = ud;
	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKOPT_OK;
	c->own_conn = 1;
	unsigned int ut = (unsigned int)c->ch->o.user_timeout_ms;
	if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut) < 0)
		rk_debug(SUB, "TCP_USER_TIMEOUT on the connection to %s: %s", c->ch->url, strerror(errno));
	return CURL_SOCKOPT_OK;
}

/* Connected (or a connection reused), the request goes out now. Only records facts. */
static int prereq_cb(void *ud, char *rip, char *lip, int rport, int lport)
{
	(void)rip, (void)lip, (void)rport;
	rk_grpc_call *c = ud;
	struct rk_grpc_channel *ch = c->ch;
	c->connected = 1;
	c->connected_at = rk_now_ms();
	c->conn_fd = -1;
	for (struct rk_curl_sock *si = ch->cl.socks; si; si = si->next)
		if (sock_local_port(si->fd) == lport) {
			c->conn_fd = si->fd;
			break;
		}
	/* TLS: the handshake was the peer's answer. A reused connection answered before. No socket or
	 * no TCP_INFO to ask: do not guess "silent". */
	if (ch->tls || !c->own_conn || c->conn_fd < 0 || sock_bytes_received(c->conn_fd) < 0)
		call_mark_answered(c);
	else
		call_check_answered(c);
	call_arm_answer(c);
	return CURL_PREREQFUNC_OK;
}

static void cu_call_set_header_timeout(rk_grpc_call *c, uint64_t ms)
{
	c->header_timeout_ms = ms;
	call_arm_answer(c);
}

static rk_grpc_call *cu_call_start(rk_grpc_channel *ch, const char *path, uint64_t deadline_ms,
				   const ProtobufCMessageDescriptor *resp, const rk_grpc_call_cbs *cbs, void *ud,
				   rk_err *e)
{
	if (ch->closing) {
		rk_errf(e, EBADF, "gRPC channel %s is closed", ch->url);
		return NULL;
	}
	if (!path || path[0] != '/') {
		rk_errf(e, EINVAL, "gRPC method path must look like /package.Service/Method, got '%s'",
			path ? path : "(null)");
		return NULL;
	}
	rk_grpc_call *c = calloc(1, sizeof *c);
	if (!c) {
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	c->ch = ch;
	c->refs = 1;
	c->resp = resp;
	c->cbs = *cbs;
	c->ud = ud;
	c->grpc_status = -1;
	c->local_status = -1;
	c->conn_fd = -1;
	c->path = strdup(path);
	size_t ul = strlen(ch->url) + strlen(path) + 1;
	char *url = malloc(ul);
	c->easy = curl_easy_init();
	if (!c->path || !url || !c->easy) {
		free(url);
		if (c->easy)
			curl_easy_cleanup(c->easy);
		c->easy = NULL;
		call_unref(c);
		rk_errf(e, ENOMEM, "out of memory starting gRPC call %s", path);
		return NULL;
	}
	snprintf(url, ul, "%s%s", ch->url, path);

	struct curl_slist *h = NULL;
	h = curl_slist_append(h, "content-type: application/grpc");
	h = curl_slist_append(h, "te: trailers");
	h = curl_slist_append(h, "Expect:");
	h = curl_slist_append(h, "Accept:");
	if (deadline_ms) {
		char t[16], line[40];
		rk_grpc_timeout_str(deadline_ms, t);
		snprintf(line, sizeof line, "grpc-timeout: %s", t);
		h = curl_slist_append(h, line);
	}
	c->hdrs = h;

	CURL *ez = c->easy;
	curl_easy_setopt(ez, CURLOPT_URL, url);
	free(url);
	curl_easy_setopt(ez, CURLOPT_PRIVATE, c);
	curl_easy_setopt(ez, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(ez, CURLOPT_POST, 1L);
	curl_easy_setopt(ez, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(ez, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(ez, CURLOPT_READDATA, c);
	curl_easy_setopt(ez, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(ez, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(ez, CURLOPT_HEADERFUNCTION, hdr_cb);
	curl_easy_setopt(ez, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(ez, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(ez, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(ez, CURLOPT_HTTP_VERSION,
			 ch->tls ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
	if (!ch->multiplex) {
		/* libcurl < 7.89 re-runs the prior-knowledge switch on a reused h2c connection and breaks
		 * it ("Error in the HTTP2 framing layer", curl issue 10634, fixed in 7.89.0): there, each
		 * h2c call gets a connection of its own, closed when the call ends. */
		curl_easy_setopt(ez, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(ez, CURLOPT_FORBID_REUSE, 1L);
	}
	curl_easy_setopt(ez, CURLOPT_CONNECTTIMEOUT_MS, ch->o.connect_timeout_ms);
	curl_easy_setopt(ez, CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
	curl_easy_setopt(ez, CURLOPT_SOCKOPTDATA, c);
	curl_easy_setopt(ez, CURLOPT_PREREQFUNCTION, prereq_cb);
	curl_easy_setopt(ez, CURLOPT_PREREQDATA, c);
	curl_easy_setopt(ez, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(ez, CURLOPT_TCP_KEEPIDLE, ch->o.keepalive_idle_s);
	curl_easy_setopt(ez, CURLOPT_TCP_KEEPINTVL, ch->o.keepalive_intvl_s);
	curl_easy_setopt(ez, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(ez, CURLOPT_USERAGENT, ch->user_agent);
	curl_easy_setopt(ez, CURLOPT_PROTOCOLS_STR, ch->tls ? "https" : "http");
	if (ch->tls) {
		if (ch->ca_file)
			curl_easy_setopt(ez, CURLOPT_CAINFO, ch->ca_file);
		if (ch->cert_file)
			curl_easy_setopt(ez, CURLOPT_SSLCERT, ch->cert_file);
		if (ch->key_file)
			curl_easy_setopt(ez, CURLOPT_SSLKEY, ch->key_file);
	}
	if (getenv("RIKLET_CURL_VERBOSE"))
		curl_easy_setopt(ez, CURLOPT_VERBOSE, 1L);

	/* link before add: add_handle may run the timer callback */
	c->next = ch->calls;
	if (ch->calls)
		ch->calls->prev = c;
	ch->calls = c;
	CURLMcode mc = curl_multi_add_handle(ch->cl.multi, ez);
	if (mc != CURLM_OK) {
		rk_errf(e, EIO, "cannot start gRPC call %s on %s: %s", path, ch->url, curl_multi_strerror(mc));
		c->finished = 1;
		call_detach(c);
		call_unref(c);
		return NULL;
	}
	if (deadline_ms)
		c->deadline = rk_loop_timer(ch->loop, deadline_ms, deadline_cb, c);
	return c;
}

static int cu_call_send_raw(rk_grpc_call *c, const void *buf, size_t len, rk_err *e)
{
	if (c->finished)
		return rk_errf(e, EPIPE, "gRPC call %s already ended", c->path);
	if (c->send_closed)
		return rk_errf(e, EPIPE, "gRPC call %s: send after close_send", c->path);
	if (len > UINT32_MAX)
		return rk_errf(e, EMSGSIZE, "message of %zu bytes cannot be framed", len);
	if (c->tx_off && c->tx_off == c->tx_len)
		c->tx_off = c->tx_len = 0;
	if (rk_grpc__tx_frame(&c->tx, &c->tx_len, &c->tx_cap, buf, len) < 0)
		return rk_errf(e, ENOMEM, "out of memory queueing a %zu-byte message", len);
	call_unpause(c);
	return 0;
}

int rk_grpc_call_send(rk_grpc_call *c, const ProtobufCMessage *m, rk_err *e)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t stackbuf[512];
	uint8_t *b = n <= sizeof stackbuf ? stackbuf : malloc(n);
	if (!b)
		return rk_errf(e, ENOMEM, "out of memory packing a %zu-byte message", n);
	protobuf_c_message_pack(m, b);
	int r = rk_grpc_call_send_raw(c, b, n, e);
	if (b != stackbuf)
		free(b);
	return r;
}

static void cu_call_close_send(rk_grpc_call *c)
{
	if (c->send_closed || c->finished)
		return;
	c->send_closed = 1;
	call_unpause(c);
}

static void cu_call_cancel(rk_grpc_call *c)
{
	if (!c || c->cancelled)
		return;
	c->cancelled = 1;
	if (c->finished)
		return;
	struct rk_grpc_channel *ch = c->ch;
	if (ch->cl.in_curl) { /* cannot happen through our callbacks; be safe anyway */
		c->local_status = RK_GRPC_CANCELLED;
		return;
	}
	call_finish(c, RK_GRPC_CANCELLED, "cancelled");
}

static size_t cu_call_pending(const rk_grpc_call *c)
{
	return c->tx_len - c->tx_off;
}

static int curl_to_status(CURLcode r)
{
	switch (r) {
	case CURLE_OPERATION_TIMEDOUT:
		return RK_GRPC_UNAVAILABLE;
	case CURLE_OUT_OF_MEMORY:
		return RK_GRPC_RESOURCE_EXHAUSTED;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return RK_GRPC_INVALID_ARGUMENT;
	default:
		return RK_GRPC_UNAVAILABLE;
	}
}

int rk_grpc__http_status(int http)
{
	switch (http) {
	case 400:
		return RK_GRPC_INTERNAL;
	case 401:
		return RK_GRPC_UNAUTHENTICATED;
	case 403:
		return RK_GRPC_PERMISSION_DENIED;
	case 404:
		return RK_GRPC_UNIMPLEMENTED;
	case 429:
	case 502:
	case 503:
	case 504:
		return RK_GRPC_UNAVAILABLE;
	default:
		return RK_GRPC_UNKNOWN;
	}
}

/* Decide how a transfer that curl reported done ended. */
static void call_complete(rk_grpc_call *c)
{
	char msg[1200];
	struct rk_grpc_channel *ch = c->ch;
	if (c->local_status >= 0) {
		snprintf(msg, sizeof msg, "%s %s: %s", ch->url, c->path, c->local_msg);
		call_finish(c, c->local_status, msg);
		return;
	}
	if (c->grpc_status >= 0) {
		/* the server said how it ended; a stream reset after the trailers does not change that */
		if (c->grpc_status == RK_GRPC_OK && c->rx.len) {
			snprintf(msg, sizeof msg,
				 "%s %s: stream ended inside a message (%zu bytes of a "
				 "truncated frame left over)",
				 ch->url, c->path, c->rx.len);
			call_finish(c, RK_GRPC_INTERNAL, msg);
			return;
		}
		call_finish(c, c->grpc_status, c->grpc_message ? c->grpc_message : "");
		return;
	}
	if (c->curl_result != CURLE_OK && c->not_h2) {
		char ex[120];
		first_excerpt(c, ex, sizeof ex);
		snprintf(msg, sizeof msg,
			 "%s %s: the server does not speak HTTP/2: it sent %s (is this a gRPC server?)", ch->url,
			 c->path, ex);
		call_finish(c, RK_GRPC_UNAVAILABLE, msg);
		return;
	}
	if (c->curl_result != CURLE_OK && c->connected && !c->answered) {
		/* the kernel counted no byte from the server on this connection */
		snprintf(msg, sizeof msg,
			 "%s %s: the server accepted the TCP connection and closed it without sending anything (%s)",
			 ch->url, c->path, c->rx_errno ? strerror(c->rx_errno) : curl_easy_strerror(c->curl_result));
		call_finish(c, RK_GRPC_UNAVAILABLE, msg);
		return;
	}
	if (c->curl_result == CURLE_OPERATION_TIMEDOUT && !c->connected) {
		snprintf(msg, sizeof msg, "%s %s: no connection within %g s (connect timeout%s): %s", ch->url, c->path,
			 (double)ch->o.connect_timeout_ms / 1000, ch->tls ? ", TLS handshake included" : "",
			 c->errbuf[0] ? c->errbuf : curl_easy_strerror(c->curl_result));
		call_finish(c, RK_GRPC_UNAVAILABLE, msg);
		return;
	}
	if ((c->curl_result == CURLE_RECV_ERROR || c->curl_result == CURLE_SEND_ERROR) &&
	    strstr(c->errbuf, "timed out")) {
		/* TCP_USER_TIMEOUT (or keepalive) closed it: what was sent went unacknowledged */
		snprintf(msg, sizeof msg,
			 "%s %s: the server stopped acknowledging what was sent (keepalive probes or data) for "
			 "%g s: the connection is dead (%s)",
			 ch->url, c->path, (double)ch->o.user_timeout_ms / 1000, c->errbuf);
		call_finish(c, RK_GRPC_UNAVAILABLE, msg);
		return;
	}
	if (c->curl_result != CURLE_OK) {
		snprintf(msg, sizeof msg, "%s %s: %s%s%s", ch->url, c->path, curl_easy_strerror(c->curl_result),
			 c->errbuf[0] ? ": " : "", c->errbuf);
		call_finish(c, curl_to_status(c->curl_result), msg);
		return;
	}
	if (c->http_status != 200) {
		snprintf(msg, sizeof msg,
			 "%s %s: HTTP status %d and no grpc-status (is this a gRPC "
			 "server?)",
			 ch->url, c->path, c->http_status);
		call_finish(c, rk_grpc__http_status(c->http_status), msg);
		return;
	}
	if (c->rx.len) {
		snprintf(msg, sizeof msg,
			 "%s %s: stream ended inside a message (%zu bytes of a truncated "
			 "frame left over)",
			 ch->url, c->path, c->rx.len);
		call_finish(c, RK_GRPC_INTERNAL, msg);
		return;
	}
	snprintf(msg, sizeof msg, "%s %s: the server closed the stream without a grpc-status", ch->url, c->path);
	call_finish(c, RK_GRPC_INTERNAL, msg);
}

/* The server sent grpc-status (the call is over for gRPC) but libcurl 7.88 has not ended the
 * transfer: it does not when the response ends before it finished sending the request (a server
 * answering UNIMPLEMENTED or ALREADY_EXISTS on the request headers alone); the call would hang.
 * Everything before the trailers was delivered already: end it with the server's status. */
static void trailers_fired(void *ud)
{
	rk_grpc_call *c = ud;
	struct rk_grpc_channel *ch = c->ch;
	c->trailers_timer = NULL;
	if (c->finished || c->curl_done)
		return;
	ch->processing++;
	c->refs++;
	call_complete(c);
	call_unref(c);
	ch->processing--;
	if (!ch->processing && ch->closing)
		ch_free_now(ch);
}

static void ch_process(void *ud)
{
	struct rk_grpc_channel *ch = ud;
	CURLMsg *m;
	int left;
	ch->processing++;
	for (rk_grpc_call *c = ch->calls; c; c = c->next)
		if (c->connected && !c->answered)
			call_check_answered(c);
	while ((m = curl_multi_info_read(ch->cl.multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		rk_grpc_call *c = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
		if (c) {
			c->curl_done = 1;
			c->curl_result = m->data.result;
		}
	}
	/* snapshot the open calls: callbacks may add or remove calls */
	size_t n = 0, cap = 16;
	rk_grpc_call *stackarr[16], **arr = stackarr;
	for (rk_grpc_call *c = ch->calls; c; c = c->next) {
		if (!c->rxq_head && !c->curl_done && !c->headers_pending && !c->ready_pending && !c->want_unpause &&
		    c->local_status < 0)
			continue;
		if (n == cap) {
			rk_grpc_call **na = malloc(sizeof *na * cap * 2);
			if (!na)
				break;
			memcpy(na, arr, sizeof *na * n);
			if (arr != stackarr)
				free(arr);
			arr = na;
			cap *= 2;
		}
		c->refs++;
		arr[n++] = c;
	}
	for (size_t i = 0; i < n; i++) {
		rk_grpc_call *c = arr[i];
		if ((c->ready_pending || c->headers_pending) && !c->ready_seen && !c->finished) {
			c->ready_pending = 0;
			c->ready_seen = 1;
			if (c->cbs.on_ready && !c->cancelled)
				c->cbs.on_ready(c->ud);
		}
		if (c->headers_pending && !c->finished) {
			c->headers_pending = 0;
			c->headers_seen = 1;
			if (c->cbs.on_headers && !c->cancelled)
				c->cbs.on_headers(c->ud);
		}
		while (c->rxq_head && !c->finished && !c->cancelled) {
			struct rk_grpc_rxmsg *r = c->rxq_head;
			c->rxq_head = r->next;
			if (!c->rxq_head)
				c->rxq_tail = NULL;
			if (c->cbs.on_message) {
				c->cbs.on_message(c->ud, r->msg, r->raw, r->len);
			} else if (r->msg) {
				protobuf_c_message_free_unpacked(r->msg, NULL);
			}
			free(r->raw);
			free(r);
		}
		if (c->curl_done && !c->finished)
			call_complete(c);
		else if (c->local_status == RK_GRPC_CANCELLED && c->cancelled && !c->finished)
			call_finish(c, RK_GRPC_CANCELLED, "cancelled");
		call_unref(c);
	}
	if (arr != stackarr)
		free(arr);
	for (rk_grpc_call *c = ch->calls; c; c = c->next)
		if (c->grpc_status >= 0 && !c->curl_done && !c->finished && !c->trailers_timer)
			c->trailers_timer = rk_loop_timer(ch->loop, 200, trailers_fired, c);
	if (ch->unpause_pending) {
		ch->unpause_pending = 0;
		for (rk_grpc_call *c = ch->calls; c; c = c->next)
			if (c->want_unpause)
				call_unpause(c);
	}
	ch->processing--;
	if (!ch->processing && ch->closing)
		ch_free_now(ch);
}

/* ---- channel ------------------------------------------------------------------------------- */

static rk_grpc_channel *cu_channel_new(rk_loop *l, const char *url, const rk_grpc_opts *o, rk_err *e)
{
	if (rk_curl_load(e) < 0)
		return NULL;
	int tls;
	if (!strncmp(url, "http://", 7))
		tls = 0;
	else if (!strncmp(url, "https://", 8))
		tls = 1;
	else {
		rk_errf(e, EINVAL, "gRPC address '%s' must start with http:// (h2c) or https:// (TLS)", url);
		return NULL;
	}
	curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
	if (!(vi->features & CURL_VERSION_HTTP2)) {
		rk_errf(e, ENOTSUP,
			"this libcurl (%s) has no HTTP/2 support; gRPC needs it (install "
			"libcurl4 built with nghttp2)",
			vi->version);
		return NULL;
	}
	struct rk_grpc_channel *ch = calloc(1, sizeof *ch);
	if (!ch) {
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	ch->loop = l;
	ch->tls = tls;
	ch->multiplex = tls || vi->version_num >= 0x075900;
	if (o)
		ch->o = *o;
	rk_grpc__opts_defaults(&ch->o);
	ch->url = strdup(url);
	if (ch->url) {
		size_t n = strlen(ch->url);
		while (n > 0 && ch->url[n - 1] == '/')
			ch->url[--n] = 0;
	}
	char ua[64];
	snprintf(ua, sizeof ua, "riklet-grpc/%s", vi->version);
	ch->user_agent = strdup(ch->o.user_agent ? ch->o.user_agent : ua);
	ch->ca_file = ch->o.ca_file ? strdup(ch->o.ca_file) : NULL;
	ch->cert_file = ch->o.cert_file ? strdup(ch->o.cert_file) : NULL;
	ch->key_file = ch->o.key_file ? strdup(ch->o.key_file) : NULL;
	ch->o.ca_file = ch->o.cert_file = ch->o.key_file = ch->o.user_agent = NULL;
	ch->cl.multi = curl_multi_init();
	if (!ch->url || !ch->user_agent || !ch->cl.multi) {
		rk_errf(e, ENOMEM, "out of memory creating gRPC channel to %s", url);
		ch_free_now(ch);
		return NULL;
	}
	curl_multi_setopt(ch->cl.multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	ch->cl.loop = l;
	ch->cl.sub = SUB;
	ch->cl.peer = ch->url;
	ch->cl.owner = ch;
	ch->cl.process = ch_process;
	ch->cl.before_read = sock_peek;
	rk_curl_loop_init(&ch->cl);
	return ch;
}

static const char *cu_channel_url(const rk_grpc_channel *ch)
{
	return ch->url;
}

static int cu_channel_multiplexed(const rk_grpc_channel *ch)
{
	return ch->multiplex;
}

static size_t cu_channel_sockets(const rk_grpc_channel *ch)
{
	return rk_curl_loop_sockets(&ch->cl);
}

static size_t cu_channel_calls(const rk_grpc_channel *ch)
{
	size_t n = 0;
	for (const struct rk_grpc_call *c = ch->calls; c; c = c->next)
		n++;
	return n;
}

static void ch_free_now(struct rk_grpc_channel *ch)
{
	while (ch->calls) {
		rk_grpc_call *c = ch->calls;
		c->cancelled = 1;
		call_finish(c, RK_GRPC_CANCELLED, "channel closed");
	}
	rk_curl_loop_fini(&ch->cl);
	free(ch->url);
	free(ch->user_agent);
	free(ch->ca_file);
	free(ch->cert_file);
	free(ch->key_file);
	free(ch);
}

static void cu_channel_free(rk_grpc_channel *ch)
{
	if (!ch || ch->closing)
		return;
	ch->closing = 1;
	if (ch->processing || ch->cl.in_curl)
		return; /* freed when the current dispatch ends */
	ch_free_now(ch);
}

/* ---- public entry points: http:// over nghttp2 (grpc_h2.c), https:// over libcurl (above) ---- */

rk_grpc_channel *rk_grpc_channel_new(rk_loop *l, const char *url, const rk_grpc_opts *o, rk_err *e)
{
	if (!strncmp(url, "http://", 7))
		return rk_h2_channel_new(l, url, o, e);
	if (strncmp(url, "https://", 8)) {
		rk_errf(e, EINVAL, "gRPC address '%s' must start with http:// (h2c) or https:// (TLS)", url);
		return NULL;
	}
	return cu_channel_new(l, url, o, e);
}

void rk_grpc_channel_free(rk_grpc_channel *ch)
{
	if (ch && RK_GRPC_IS_H2(ch))
		rk_h2_channel_free(ch);
	else
		cu_channel_free(ch);
}

const char *rk_grpc_channel_url(const rk_grpc_channel *ch)
{
	return RK_GRPC_IS_H2(ch) ? rk_h2_channel_url(ch) : cu_channel_url(ch);
}

size_t rk_grpc_channel_sockets(const rk_grpc_channel *ch)
{
	return RK_GRPC_IS_H2(ch) ? rk_h2_channel_sockets(ch) : cu_channel_sockets(ch);
}

size_t rk_grpc_channel_calls(const rk_grpc_channel *ch)
{
	return RK_GRPC_IS_H2(ch) ? rk_h2_channel_calls(ch) : cu_channel_calls(ch);
}

int rk_grpc_channel_multiplexed(const rk_grpc_channel *ch)
{
	return RK_GRPC_IS_H2(ch) ? 1 : cu_channel_multiplexed(ch);
}

rk_grpc_call *rk_grpc_call_start(rk_grpc_channel *ch, const char *path, uint64_t deadline_ms,
				 const ProtobufCMessageDescriptor *resp, const rk_grpc_call_cbs *cbs, void *ud,
				 rk_err *e)
{
	if (RK_GRPC_IS_H2(ch))
		return rk_h2_call_start(ch, path, deadline_ms, resp, cbs, ud, e);
	return cu_call_start(ch, path, deadline_ms, resp, cbs, ud, e);
}

void rk_grpc_call_set_header_timeout(rk_grpc_call *c, uint64_t ms)
{
	if (RK_GRPC_IS_H2(c))
		rk_h2_call_set_header_timeout(c, ms);
	else
		cu_call_set_header_timeout(c, ms);
}

int rk_grpc_call_send_raw(rk_grpc_call *c, const void *buf, size_t len, rk_err *e)
{
	return RK_GRPC_IS_H2(c) ? rk_h2_call_send_raw(c, buf, len, e) : cu_call_send_raw(c, buf, len, e);
}

void rk_grpc_call_close_send(rk_grpc_call *c)
{
	if (RK_GRPC_IS_H2(c))
		rk_h2_call_close_send(c);
	else
		cu_call_close_send(c);
}

void rk_grpc_call_cancel(rk_grpc_call *c)
{
	if (!c)
		return;
	if (RK_GRPC_IS_H2(c))
		rk_h2_call_cancel(c);
	else
		cu_call_cancel(c);
}

size_t rk_grpc_call_pending(const rk_grpc_call *c)
{
	return RK_GRPC_IS_H2(c) ? rk_h2_call_pending(c) : cu_call_pending(c);
}
