/* httpd.c — the HTTP server on the loop (see httpd.h): libmicrohttpd with MHD_USE_EPOLL and no
 * thread of its own; its epoll fd is watched by riklet's loop and MHD_run is called when it is
 * readable or when MHD's own timeout is due. Requests wait for their answer suspended
 * (MHD_suspend_connection); streams are callback responses that suspend while their buffer is
 * empty. A suspended connection is not watched by MHD, so a stream waiting for data checks every
 * second whether its client closed (MSG_PEEK). riklet accepts the connections itself and hands
 * them to MHD (MHD_add_connection) while fewer than conn_max are open; past the cap a new
 * connection is answered 503 at once, before its request is read (see "refusing" below), so the
 * cap is counted on connections, not on the requests that happen to complete. libmicrohttpd is
 * loaded with dlopen by the first rk_httpd_new (Debian's brings GnuTLS and about ten libraries:
 * ~3 MiB resident that riklet without an HTTP server never uses). */
#include "httpd.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* the functions used, through pointers filled by mhd_load() */
#define MHD_FNS(X)                                                                                                     \
	X(start_daemon)                                                                                                \
	X(stop_daemon)                                                                                                 \
	X(run)                                                                                                         \
	X(get_timeout)                                                                                                 \
	X(get_daemon_info)                                                                                             \
	X(get_connection_info)                                                                                         \
	X(add_connection)                                                                                              \
	X(get_connection_values)                                                                                       \
	X(lookup_connection_value)                                                                                     \
	X(create_response_from_buffer)                                                                                 \
	X(create_response_from_callback)                                                                               \
	X(add_response_header)                                                                                         \
	X(queue_response)                                                                                              \
	X(destroy_response)                                                                                            \
	X(suspend_connection)                                                                                          \
	X(resume_connection)
#define MHD_PTR(f) __typeof__(MHD_##f) *f;
static struct {
	int loaded;
	MHD_FNS(MHD_PTR)
} mhd;

static int mhd_load(rk_err *e)
{
	if (mhd.loaded)
		return 0;
	void *h = dlopen("libmicrohttpd.so.12", RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return rk_errf(e, ENOENT,
			       "cannot load libmicrohttpd (%s): install it with apt-get install libmicrohttpd12",
			       dlerror());
#define MHD_SYM(f)                                                                                                     \
	if (!(*(void **)&mhd.f = dlsym(h, "MHD_" #f)))                                                                 \
		return rk_errf(e, ENOENT,                                                                              \
			       "libmicrohttpd.so.12 has no MHD_" #f ": install libmicrohttpd12 0.9.75 or later");
	MHD_FNS(MHD_SYM)
	mhd.loaded = 1;
	return 0;
}
#define MHD_start_daemon mhd.start_daemon
#define MHD_stop_daemon mhd.stop_daemon
#define MHD_run mhd.run
#define MHD_get_timeout mhd.get_timeout
#define MHD_get_daemon_info mhd.get_daemon_info
#define MHD_get_connection_info mhd.get_connection_info
#define MHD_add_connection mhd.add_connection
#define MHD_get_connection_values mhd.get_connection_values
#define MHD_lookup_connection_value mhd.lookup_connection_value
#define MHD_create_response_from_buffer mhd.create_response_from_buffer
#define MHD_create_response_from_callback mhd.create_response_from_callback
#define MHD_add_response_header mhd.add_response_header
#define MHD_queue_response mhd.queue_response
#define MHD_destroy_response mhd.destroy_response
#define MHD_suspend_connection mhd.suspend_connection
#define MHD_resume_connection mhd.resume_connection

enum { R_READING, R_DISPATCHED, R_ANSWERED, R_QUEUED, R_STREAM };

struct kv {
	char *k, *v;
};

struct conn_info {
	struct MHD_Connection *c;
	uint64_t since; /* connect, or end of the last request: the header deadline counts from here */
	int in_request;
	struct conn_info *prev, *next;
};

struct rk_httpd_req {
	rk_httpd *srv;
	struct MHD_Connection *conn;
	int refs;
	int state;
	int early;   /* an error answer was queued before the body was read */
	int too_big; /* a chunked body passed the cap: discarded, 413 at its end */
	int abort;   /* the client is gone or the server stops: end the connection */
	int gone;
	int suspended;
	int ended; /* stream: no more writes */
	size_t discarded;
	char *method, *path;
	char *body;
	size_t blen, bcap;
	struct kv *kvs[2];
	size_t nkv[2];
	struct MHD_Response *resp;
	int status;
	char *sbuf;
	size_t slen, scap;
	rk_httpd_notify drain_cb;
	void *drain_ud;
	size_t drain_low;
	rk_timer *peek;
	struct rk_httpd_req *prev, *next;
};

/* A connection past the cap: answered 503, then its input is read and dropped until the client
 * closes, 1 s passes or 64 KiB came (closing with unread input would reset the connection and the
 * client could lose the answer). */
struct refusing {
	rk_httpd *srv;
	int fd;
	size_t discarded;
	rk_watch *w;
	rk_timer *t;
	struct refusing *prev, *next;
};

struct rk_httpd {
	rk_loop *loop;
	struct MHD_Daemon *d;
	rk_watch *w;
	int lfd;	       /* the listening socket (ours: riklet accepts) */
	rk_watch *lw;	       /* on lfd; NULL while accepting is paused (out of fds) */
	rk_timer *lpause;      /* ... until this fires */
	struct refusing *refs; /* connections answered 503, being closed */
	unsigned nrefusing;
	unsigned long refused; /* since the cap was last reached (for the log) */
	char name[128];	       /* the listen address, for log lines */
	rk_timer *timer, *sweep;
	rk_httpd_handler handler;
	void *ud;
	struct rk_httpd_opts o;
	char *unix_path;
	ino_t unix_ino;
	int port;
	unsigned nconn;
	struct conn_info *conns;
	struct rk_httpd_req *reqs;
	int running; /* inside MHD_run: kicks are folded into the re-arm at its end */
};

static void srv_run(rk_httpd *s);

static void set_timer(rk_httpd *s, uint64_t ms);

static void on_timer(void *ud)
{
	rk_httpd *s = ud;
	s->timer = NULL;
	srv_run(s);
}

static void set_timer(rk_httpd *s, uint64_t ms)
{
	if (s->timer)
		rk_timer_cancel(s->timer);
	s->timer = rk_loop_timer(s->loop, ms, on_timer, s);
}

static void srv_run(rk_httpd *s)
{
	s->running = 1;
	MHD_run(s->d);
	s->running = 0;
	MHD_UNSIGNED_LONG_LONG t;
	if (MHD_get_timeout(s->d, &t) == MHD_YES)
		set_timer(s, t > 60000 ? 60000 : t);
	else if (s->timer) {
		rk_timer_cancel(s->timer);
		s->timer = NULL;
	}
}

/* Something changed outside MHD_run (an answer, a write): run MHD on the next turn. */
static void kick(rk_httpd *s)
{
	if (s && !s->running)
		set_timer(s, 0);
}

static void on_epoll(void *ud, int fd, uint32_t events)
{
	srv_run(ud);
}

/* ---- requests ---- */

static void kv_free(struct kv *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(a[i].k);
		free(a[i].v);
	}
	free(a);
}

static void req_free(rk_httpd_req *r)
{
	if (r->peek)
		rk_timer_cancel(r->peek);
	if (r->resp)
		MHD_destroy_response(r->resp);
	free(r->method);
	free(r->path);
	free(r->body);
	free(r->sbuf);
	kv_free(r->kvs[0], r->nkv[0]);
	kv_free(r->kvs[1], r->nkv[1]);
	free(r);
}

void rk_httpd_req_ref(rk_httpd_req *r)
{
	r->refs++;
}

void rk_httpd_req_unref(rk_httpd_req *r)
{
	if (--r->refs == 0)
		req_free(r);
}

static void resume(rk_httpd_req *r)
{
	if (r->peek) {
		rk_timer_cancel(r->peek);
		r->peek = NULL;
	}
	if (r->suspended && r->conn) {
		r->suspended = 0;
		MHD_resume_connection(r->conn);
		kick(r->srv);
	}
}

static void fire_drain(rk_httpd_req *r)
{
	rk_httpd_notify cb = r->drain_cb;
	if (!cb)
		return;
	r->drain_cb = NULL;
	cb(r->drain_ud, r);
}

const char *rk_httpd_req_method(rk_httpd_req *r)
{
	return r->method;
}
const char *rk_httpd_req_path(rk_httpd_req *r)
{
	return r->path;
}
const char *rk_httpd_req_body(rk_httpd_req *r, size_t *len)
{
	*len = r->blen;
	return r->body ? r->body : "";
}
int rk_httpd_req_gone(rk_httpd_req *r)
{
	return r->gone;
}

void rk_httpd_req_each(rk_httpd_req *r, int kind, void (*cb)(void *ud, const char *k, const char *v), void *ud)
{
	for (size_t i = 0; i < r->nkv[kind]; i++)
		cb(ud, r->kvs[kind][i].k, r->kvs[kind][i].v);
}

struct kv_collect {
	rk_httpd_req *r;
	int kind;
};

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct kv_collect *c = cls;
	rk_httpd_req *r = c->r;
	if (r->nkv[c->kind] >= 256) /* MHD's header memory (32 kB) bounds this anyway */
		return MHD_NO;
	struct kv *n = realloc(r->kvs[c->kind], (r->nkv[c->kind] + 1) * sizeof *n);
	if (!n)
		return MHD_NO;
	r->kvs[c->kind] = n;
	n[r->nkv[c->kind]++] = (struct kv){strdup(key ? key : ""), strdup(value ? value : "")};
	return MHD_YES;
}

static struct MHD_Response *make_response(const char *const *headers, const void *body, size_t len)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return NULL;
	for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
		MHD_add_response_header(resp, headers[i], headers[i + 1]);
	return resp;
}

static struct conn_info *conn_of(struct MHD_Connection *c);

/* Content-Length headers that disagree (RFC 9112 6.3: unrecoverable; a proxy in front could frame
 * the body by the other one and pass the rest on as a second, smuggled request). */
static enum MHD_Result check_cl(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	const char **seen = cls; /* [0] the first value, [1] set on a conflict */
	if (!key || strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
		return MHD_YES;
	if (!value)
		value = "";
	if (!seen[0]) {
		seen[0] = value;
		return MHD_YES;
	}
	if (!strcmp(seen[0], value))
		return MHD_YES;
	seen[1] = value;
	return MHD_NO;
}

/* The request is read (or refused): the deadline stops here. It covers the headers and the body,
 * so a client sending its body a byte at a time cannot hold a connection for ever. */
static void request_read(struct MHD_Connection *c)
{
	struct conn_info *ci = conn_of(c);
	if (ci)
		ci->in_request = 1;
}

/* An error answer given by the server itself (limits), before the handler saw the request. */
static enum MHD_Result queue_early(rk_httpd_req *r, struct MHD_Connection *c, int status, const char *msg)
{
	r->early = 1;
	request_read(c);
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
	MHD_add_response_header(resp, "Connection", "close");
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void dispatch(void *ud)
{
	rk_httpd_req *r = ud;
	if (r->srv && !r->gone)
		r->srv->handler(r->srv->ud, r); /* the handler takes over this reference */
	else
		rk_httpd_req_unref(r);
}

static struct conn_info *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				 const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	rk_httpd *s = cls;
	rk_httpd_req *r = *con_cls;
	char msg[256];
	if (!r) {
		r = calloc(1, sizeof *r);
		if (!r)
			return MHD_NO;
		r->srv = s;
		r->conn = c;
		r->refs = 1; /* the server's, dropped when MHD is done with the connection */
		r->method = strdup(method);
		r->path = strdup(url);
		r->next = s->reqs;
		if (s->reqs)
			s->reqs->prev = r;
		s->reqs = r;
		*con_cls = r;
		if (!r->method || !r->path)
			return MHD_NO;
		const char *cls[2] = {NULL, NULL};
		MHD_get_connection_values(c, MHD_HEADER_KIND, check_cl, cls);
		if (cls[1])
			return queue_early(r, c, 400,
					   "riklet: the request has Content-Length headers that disagree: send one\n");
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > s->o.body_max) {
			snprintf(msg, sizeof msg, "riklet: the request body is %s bytes, more than the %zu allowed\n",
				 cl, s->o.body_max);
			return queue_early(r, c, 413, msg);
		}
		return MHD_YES;
	}
	if (r->abort)
		return MHD_NO;
	if (r->early) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		size_t n = *upload_size;
		*upload_size = 0;
		if (r->too_big || r->blen + n > s->o.body_max) {
			r->too_big = 1;
			r->discarded += n;
			/* reading a huge chunked body only to refuse it: close instead */
			return r->discarded > 4 * s->o.body_max ? MHD_NO : MHD_YES;
		}
		if (r->blen + n + 1 > r->bcap) {
			size_t cap = r->bcap ? r->bcap : 4096;
			while (cap < r->blen + n + 1)
				cap *= 2;
			char *b = realloc(r->body, cap);
			if (!b)
				return MHD_NO;
			r->body = b;
			r->bcap = cap;
		}
		memcpy(r->body + r->blen, upload, n);
		r->blen += n;
		r->body[r->blen] = 0;
		return MHD_YES;
	}
	switch (r->state) {
	case R_READING:
		if (r->too_big) {
			snprintf(msg, sizeof msg, "riklet: the request body is more than the %zu bytes allowed\n",
				 s->o.body_max);
			return queue_early(r, c, 413, msg);
		}
		struct kv_collect kc = {r, 0};
		MHD_get_connection_values(c, MHD_HEADER_KIND, collect_kv, &kc);
		kc.kind = 1;
		MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_kv, &kc);
		r->state = R_DISPATCHED;
		request_read(c);
		MHD_suspend_connection(c);
		r->suspended = 1;
		r->refs++; /* the handler's */
		rk_loop_defer(s->loop, dispatch, r);
		return MHD_YES;
	case R_ANSWERED: {
		enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, r->resp);
		MHD_destroy_response(r->resp);
		r->resp = NULL;
		r->state = r->ended ? R_STREAM : R_QUEUED;
		return ret;
	}
	default:
		return MHD_YES;
	}
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	rk_httpd *s = cls;
	struct conn_info *ci = conn_of(c);
	if (ci) {
		ci->in_request = 0;
		ci->since = rk_now_ms();
	}
	rk_httpd_req *r = *con_cls;
	if (!r)
		return;
	*con_cls = NULL;
	if (r->prev)
		r->prev->next = r->next;
	else
		s->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->gone = 1;
	r->conn = NULL;
	r->suspended = 0;
	if (r->peek) {
		rk_timer_cancel(r->peek);
		r->peek = NULL;
	}
	fire_drain(r);
	rk_httpd_req_unref(r);
}

/* ---- streams ---- */

static void peek_client(void *ud)
{
	rk_httpd_req *r = ud;
	r->peek = NULL;
	if (!r->conn || !r->suspended)
		return;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	char b;
	ssize_t n = ci ? recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) : 0;
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		r->abort = 1;
		resume(r);
		return;
	}
	r->peek = rk_loop_timer(r->srv->loop, 1000, peek_client, r);
}

static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
	rk_httpd_req *r = cls;
	if (r->abort)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (r->slen) {
		size_t n = r->slen < max ? r->slen : max;
		memcpy(buf, r->sbuf, n);
		memmove(r->sbuf, r->sbuf + n, r->slen - n);
		r->slen -= n;
		if (r->drain_cb && r->slen < r->drain_low)
			fire_drain(r);
		return (ssize_t)n;
	}
	if (r->ended == 1)
		return MHD_CONTENT_READER_END_OF_STREAM;
	/* nothing to send yet: wait for a write without MHD polling us */
	MHD_suspend_connection(r->conn);
	r->suspended = 1;
	if (!r->peek && r->srv)
		r->peek = rk_loop_timer(r->srv->loop, 1000, peek_client, r);
	return 0;
}

int rk_httpd_respond(rk_httpd_req *r, int status, const char *const *headers, const void *body, size_t len, rk_err *e)
{
	if (r->gone || !r->conn)
		return rk_errf(e, EPIPE, "the client is gone");
	if (r->state != R_DISPATCHED)
		return rk_errf(e, EALREADY, "this request was already answered");
	r->resp = make_response(headers, body, len);
	if (!r->resp)
		return rk_errf(e, ENOMEM, "out of memory building the answer");
	r->status = status;
	r->state = R_ANSWERED;
	resume(r);
	return 0;
}

int rk_httpd_stream(rk_httpd_req *r, int status, const char *const *headers, rk_err *e)
{
	if (r->gone || !r->conn)
		return rk_errf(e, EPIPE, "the client is gone");
	if (r->state != R_DISPATCHED)
		return rk_errf(e, EALREADY, "this request was already answered");
	r->resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_stream, r, NULL);
	if (!r->resp)
		return rk_errf(e, ENOMEM, "out of memory building the answer");
	for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
		MHD_add_response_header(r->resp, headers[i], headers[i + 1]);
	r->status = status;
	r->state = R_ANSWERED;
	r->ended = 2; /* streaming, open */
	resume(r);
	return 0;
}

long rk_httpd_write(rk_httpd_req *r, const void *data, size_t len, rk_err *e)
{
	if (r->gone || !r->conn || r->abort)
		return rk_errf(e, EPIPE, "the client is gone");
	if (r->ended != 2)
		return rk_errf(e, EINVAL, "not a streamed answer, or already ended");
	if (r->slen + len > r->scap) {
		size_t cap = r->scap ? r->scap : 16384;
		while (cap < r->slen + len)
			cap *= 2;
		char *b = realloc(r->sbuf, cap);
		if (!b)
			return rk_errf(e, ENOMEM, "out of memory buffering the answer");
		r->sbuf = b;
		r->scap = cap;
	}
	memcpy(r->sbuf + r->slen, data, len);
	r->slen += len;
	resume(r);
	return (long)r->slen;
}

int rk_httpd_end(rk_httpd_req *r)
{
	if (r->ended != 2)
		return -1;
	r->ended = 1;
	resume(r);
	return 0;
}

void rk_httpd_on_drain(rk_httpd_req *r, size_t low, rk_httpd_notify cb, void *ud)
{
	r->drain_cb = cb;
	r->drain_ud = ud;
	r->drain_low = low;
	if (r->gone || r->slen < low)
		fire_drain(r);
}

/* ---- connections: count and header deadline ---- */

static void sweep(void *ud)
{
	rk_httpd *s = ud;
	s->sweep = NULL;
	uint64_t now = rk_now_ms();
	for (struct conn_info *ci = s->conns; ci; ci = ci->next) {
		if (ci->in_request || now - ci->since < (uint64_t)s->o.header_timeout_s * 1000)
			continue;
		const union MHD_ConnectionInfo *i = MHD_get_connection_info(ci->c, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (i) {
			rk_debug("httpd", "closing a connection that sent no complete request within %u s",
				 s->o.header_timeout_s);
			shutdown(i->connect_fd, SHUT_RDWR); /* MHD sees the end and closes it */
		}
		ci->since = now; /* once */
	}
	if (s->conns)
		s->sweep = rk_loop_timer(s->loop, 1000, sweep, s);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	rk_httpd *s = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		struct conn_info *ci = calloc(1, sizeof *ci);
		*socket_context = ci;
		s->nconn++;
		if (!ci)
			return;
		ci->c = c;
		ci->since = rk_now_ms();
		ci->next = s->conns;
		if (s->conns)
			s->conns->prev = ci;
		s->conns = ci;
		if (!s->sweep)
			s->sweep = rk_loop_timer(s->loop, 1000, sweep, s);
		return;
	}
	s->nconn--;
	if (s->refused && s->nconn + 1 == s->o.conn_max) {
		rk_info("httpd", "%s: back under the cap of %u connections (%lu new connections were answered 503)",
			s->o.listen, s->o.conn_max, s->refused);
		s->refused = 0;
	}
	struct conn_info *ci = *socket_context;
	if (!ci)
		return;
	if (ci->prev)
		ci->prev->next = ci->next;
	else
		s->conns = ci->next;
	if (ci->next)
		ci->next->prev = ci->prev;
	free(ci);
	*socket_context = NULL;
}

/* ---- accepting: the connection cap ---- */

static void refusing_end(struct refusing *f)
{
	rk_httpd *s = f->srv;
	rk_watch_cancel(f->w);
	if (f->t)
		rk_timer_cancel(f->t);
	close(f->fd);
	if (f->prev)
		f->prev->next = f->next;
	else
		s->refs = f->next;
	if (f->next)
		f->next->prev = f->prev;
	s->nrefusing--;
	free(f);
}

static void refusing_timeout(void *ud)
{
	struct refusing *f = ud;
	f->t = NULL;
	refusing_end(f);
}

static void refusing_read(void *ud, int fd, uint32_t events)
{
	struct refusing *f = ud;
	char buf[4096];
	ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n > 0 && (f->discarded += (size_t)n) < 65536)
		return;
	refusing_end(f); /* EOF, an error, or too much */
}

/* The (conn_max + 1)th connection and later: 503 now, without reading the request. */
static void refuse(rk_httpd *s, int fd)
{
	if (!s->refused++)
		rk_warn("httpd",
			"%s: %u connections open, the cap: new connections are answered 503 until some close "
			"(a client holding many connections, or too many clients)",
			s->o.listen, s->nconn);
	char msg[512], body[256];
	int bl = snprintf(body, sizeof body, "riklet: too many connections (%u open, at most %u): try again later\n",
			  s->nconn, s->o.conn_max);
	int ml = snprintf(msg, sizeof msg,
			  "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
			  "Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
			  bl, body);
	send(fd, msg, (size_t)ml, MSG_DONTWAIT | MSG_NOSIGNAL); /* a fresh socket's buffer takes it */
	shutdown(fd, SHUT_WR);
	/* at most conn_max linger (the server's fds stay under 2 * conn_max); past that, closed at once */
	struct refusing *f = s->nrefusing < s->o.conn_max ? calloc(1, sizeof *f) : NULL;
	if (f) {
		f->srv = s;
		f->fd = fd;
		f->w = rk_loop_watch_fd(s->loop, fd, EPOLLIN, refusing_read, f, NULL);
		f->t = f->w ? rk_loop_timer(s->loop, 1000, refusing_timeout, f) : NULL;
	}
	if (!f || !f->t) {
		if (f && f->w)
			rk_watch_cancel(f->w);
		free(f);
		close(fd); /* past the linger limit: closed at once (the 503 may be lost to a reset) */
		return;
	}
	f->next = s->refs;
	if (s->refs)
		s->refs->prev = f;
	s->refs = f;
	s->nrefusing++;
}

static void on_listen(void *ud, int fd, uint32_t events);

static void accept_resume(void *ud)
{
	rk_httpd *s = ud;
	s->lpause = NULL;
	s->lw = rk_loop_watch_fd(s->loop, s->lfd, EPOLLIN, on_listen, s, NULL);
	if (s->lw)
		rk_watch_set_urgent(s->lw, NULL);
	if (!s->lw)
		s->lpause = rk_loop_timer(s->loop, 1000, accept_resume, s);
}

static void on_listen(void *ud, int lfd, uint32_t events)
{
	rk_httpd *s = ud;
	for (int i = 0; i < 64; i++) { /* then let the loop turn */
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				rk_warn("httpd",
					"%s: cannot accept a connection: %s; not accepting for 1 s (raise the open "
					"files limit, LimitNOFILE=, if this node needs more connections)",
					s->o.listen, strerror(errno));
				rk_watch_cancel(s->lw);
				s->lw = NULL;
				s->lpause = rk_loop_timer(s->loop, 1000, accept_resume, s);
			} else if (errno == ECONNABORTED || errno == EINTR || errno == EPROTO)
				continue;
			return;
		}
		if (s->nconn >= s->o.conn_max) {
			refuse(s, fd);
			continue;
		}
		if (MHD_add_connection(s->d, fd, (struct sockaddr *)&ss, sl) != MHD_YES) /* MHD closed fd */
			rk_warn("httpd", "%s: libmicrohttpd did not take a new connection: %s", s->o.listen,
				strerror(errno));
		kick(s);
	}
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];
	vsnprintf(buf, sizeof buf, fmt, ap);
	size_t n = strlen(buf);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = 0;
	rk_log(RK_LOG_DEBUG, "httpd", "libmicrohttpd: %s", buf);
}

/* ---- listening ---- */

static int listen_unix(rk_httpd *s, const char *path, rk_err *e)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!*path || strlen(path) >= sizeof sa.sun_path)
		return rk_errf(e, EINVAL, "unix socket path '%s' is empty or longer than %zu bytes", path,
			       sizeof sa.sun_path - 1);
	strcpy(sa.sun_path, path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return rk_errf(e, EEXIST,
				       "%s exists and is not a socket: riklet will not replace it; remove it or choose "
				       "another path",
				       path);
		/* a socket file: removed only when nothing listens on it (a riklet that died) */
		int t = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int in_use = t >= 0 && connect(t, (struct sockaddr *)&sa, sizeof sa) == 0;
		int refused = errno == ECONNREFUSED;
		if (t >= 0)
			close(t);
		if (in_use)
			return rk_errf(e, EADDRINUSE,
				       "%s: another process is listening on this socket (another riklet?)", path);
		if (!refused)
			return rk_errf(
				e, EEXIST,
				"%s exists and riklet cannot tell whether it is in use: remove it if it is stale",
				path);
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return rk_errf(e, errno, "socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, SOMAXCONN) < 0) {
		int err = errno;
		close(fd);
		return rk_errf(e, err, "cannot listen on unix socket %s: %s", path, strerror(err));
	}
	chmod(path, s->o.unix_mode ? (mode_t)s->o.unix_mode : 0660);
	if (stat(path, &st) == 0)
		s->unix_ino = st.st_ino;
	s->unix_path = strdup(path);
	return fd;
}

static int listen_tcp(rk_httpd *s, const char *addr, rk_err *e)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (!colon || colon == addr || !colon[1] || (size_t)(colon - addr) >= sizeof host)
		return rk_errf(e, EINVAL,
			       "listen address '%s': expected HOST:PORT (127.0.0.1:4000, [::1]:4000) or unix:/path",
			       addr);
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = 0;
	char *h = host;
	size_t hl = strlen(h);
	if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
		h[hl - 1] = 0;
		h++;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
	int rc = getaddrinfo(h, colon + 1, &hints, &res);
	if (rc)
		return rk_errf(e, EINVAL, "listen address '%s': %s", addr, gai_strerror(rc));
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		freeaddrinfo(res);
		return rk_errf(e, errno, "socket: %s", strerror(errno));
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
		int err = errno;
		freeaddrinfo(res);
		close(fd);
		return rk_errf(e, err, "cannot listen on %s: %s", addr, strerror(err));
	}
	freeaddrinfo(res);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

rk_httpd *rk_httpd_new(rk_loop *l, const struct rk_httpd_opts *o, rk_httpd_handler h, void *ud, rk_err *e)
{
	if (mhd_load(e) < 0)
		return NULL;
	rk_httpd *s = calloc(1, sizeof *s);
	if (!s) {
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	s->loop = l;
	s->handler = h;
	s->ud = ud;
	s->o = *o;
	if (!s->o.body_max)
		s->o.body_max = 8 << 20;
	if (!s->o.conn_max)
		s->o.conn_max = 256;
	if (!s->o.header_timeout_s)
		s->o.header_timeout_s = 30;
	if (!s->o.idle_timeout_s)
		s->o.idle_timeout_s = 60;
	const char *a = o->listen ? o->listen : "";
	int fd;
	if (!strncmp(a, "unix://", 7))
		fd = listen_unix(s, a + 7, e);
	else if (!strncmp(a, "unix:", 5))
		fd = listen_unix(s, a + 5, e);
	else
		fd = listen_tcp(s, a, e);
	if (fd < 0) {
		free(s);
		return NULL;
	}
	s->lfd = fd;
	snprintf(s->name, sizeof s->name, "%s", a); /* o->listen is the caller's */
	s->o.listen = s->name;
	/* the cap is enforced at accept (on_listen); MHD's own limit, a little above, never closes */
	s->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
				0, NULL, NULL, on_access, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
				MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_CONNECTION_TIMEOUT,
				(unsigned)s->o.idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
				(unsigned)(s->o.conn_max + 64), MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
	if (!s->d) {
		rk_errf(e, EIO, "cannot start the HTTP server on %s (libmicrohttpd refused its options)", a);
		goto fail;
	}
	/* the listener and MHD's connections are served between paced steps too (see loop.h) */
	s->lw = rk_loop_watch_fd(l, fd, EPOLLIN, on_listen, s, e);
	if (!s->lw || rk_watch_set_urgent(s->lw, e) < 0)
		goto fail;
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!di) {
		rk_errf(e, EIO, "libmicrohttpd gave no epoll fd");
		goto fail;
	}
	s->w = rk_loop_watch_fd(l, di->epoll_fd, EPOLLIN, on_epoll, s, e);
	if (!s->w || rk_watch_set_urgent(s->w, e) < 0)
		goto fail;
	srv_run(s);
	return s;
fail:
	if (s->lw)
		rk_watch_cancel(s->lw);
	if (s->w)
		rk_watch_cancel(s->w);
	if (s->d)
		MHD_stop_daemon(s->d);
	close(fd);
	if (s->unix_path)
		unlink(s->unix_path);
	free(s->unix_path);
	free(s);
	return NULL;
}

int rk_httpd_port(rk_httpd *s)
{
	return s->port;
}

void rk_httpd_free(rk_httpd *s)
{
	if (!s)
		return;
	/* MHD cannot stop with suspended connections: resume them, ending each */
	for (rk_httpd_req *r = s->reqs; r; r = r->next) {
		r->abort = 1;
		r->srv = NULL;
		if (r->suspended && r->conn) {
			r->suspended = 0;
			MHD_resume_connection(r->conn);
		}
		if (r->peek) {
			rk_timer_cancel(r->peek);
			r->peek = NULL;
		}
	}
	MHD_run(s->d);
	rk_watch_cancel(s->w);
	MHD_stop_daemon(s->d); /* completes every request (gone) */
	if (s->lw)
		rk_watch_cancel(s->lw);
	if (s->lpause)
		rk_timer_cancel(s->lpause);
	close(s->lfd);
	while (s->refs)
		refusing_end(s->refs);
	if (s->timer)
		rk_timer_cancel(s->timer);
	if (s->sweep)
		rk_timer_cancel(s->sweep);
	struct stat st;
	if (s->unix_path && stat(s->unix_path, &st) == 0 && st.st_ino == s->unix_ino)
		unlink(s->unix_path);
	free(s->unix_path);
	free(s);
}
