/* http.c — HTTP/1.1 client on libcurl multi inside the rk_loop (see http.h).
 *
 * libcurl callbacks only record facts (bytes written, headers seen, a local failure); done
 * callbacks run afterwards from h_process(), outside libcurl, so user code may call anything. */
#include "http.h"

#include "curl_lazy.h"
#include "curl_loop.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define SUB "http"
#define ERR_EXCERPT 512		  /* bytes of a non-2xx body kept to quote */
#define ERR_BODY_MAX (64u * 1024) /* a non-2xx body longer than this is not read to its end */
#define HDR_MAX 1024

struct rk_http_req {
	struct rk_http *h;
	struct rk_http_req *prev, *next;
	CURL *easy;
	struct curl_slist *hdrs;
	char *what; /* "GET http://host/x" or "PUT /x on unix socket /run/s": names it in errors */
	rk_http_done_cb cb;
	void *ud;
	char errbuf[CURL_ERROR_SIZE];
	int fd; /* out_path, or -1 */
	uint64_t max;
	long timeout_ms, low_speed_bytes, low_speed_time_s;
	uint64_t started;

	uint64_t bytes;
	char *body; /* memory mode, or a non-2xx excerpt */
	size_t body_len, body_cap;
	int to_file;
	int skipped_rest; /* non-2xx body longer than ERR_BODY_MAX: stopped reading on purpose */
	char etag[HDR_MAX], last_modified[HDR_MAX], content_type[256], content_length[32];

	int local_fail; /* enum rk_http_fail decided here, with local_msg */
	char local_msg[512];
	int done;
	CURLcode result;
	int finished;
};

struct rk_http {
	rk_curl_loop cl; /* the multi handle, its sockets and timer on the loop */
	struct rk_http_req *reqs;
	int processing, closing;
};

static void h_free_now(struct rk_http *h);

static int status_ok(long s)
{
	return s >= 200 && s < 300;
}

/* ---- requests --------------------------------------------------------------------------------- */

static void req_free(rk_http_req *r)
{
	if (r->easy) {
		curl_multi_remove_handle(r->h->cl.multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	if (r->hdrs)
		curl_slist_free_all(r->hdrs);
	if (r->fd >= 0)
		close(r->fd);
	if (r->prev)
		r->prev->next = r->next;
	else if (r->h->reqs == r)
		r->h->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	free(r->what);
	free(r->body);
	free(r);
}

static int body_append(rk_http_req *r, const char *p, size_t n)
{
	if (r->body_len + n + 1 > r->body_cap) {
		size_t nc = r->body_cap ? r->body_cap : 1024;
		while (nc < r->body_len + n + 1)
			nc *= 2;
		char *nb = realloc(r->body, nc);
		if (!nb)
			return -1;
		r->body = nb;
		r->body_cap = nc;
	}
	memcpy(r->body + r->body_len, p, n);
	r->body_len += n;
	r->body[r->body_len] = 0;
	return 0;
}

static void local_fail(rk_http_req *r, int fail, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void local_fail(rk_http_req *r, int fail, const char *fmt, ...)
{
	if (r->local_fail)
		return;
	r->local_fail = fail;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->local_msg, sizeof r->local_msg, fmt, ap);
	va_end(ap);
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
	rk_http_req *r = ud;
	size_t len = size * n;
	long status = 0;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (r->to_file && !status_ok(status)) {
		/* an error page: keep its start to quote, never write it to the file */
		if (r->body_len < ERR_EXCERPT) {
			size_t k = ERR_EXCERPT - r->body_len < len ? ERR_EXCERPT - r->body_len : len;
			if (body_append(r, p, k) < 0)
				return 0;
		}
		r->bytes += len;
		if (r->bytes > ERR_BODY_MAX) {
			r->skipped_rest = 1;
			return 0;
		}
		return len;
	}
	if (r->max && r->bytes + len > r->max) {
		local_fail(r, RK_HTTP_ETOOBIG, "the response is larger than the limit of %" PRIu64 " bytes", r->max);
		return 0;
	}
	if (r->to_file) {
		size_t off = 0;
		while (off < len) {
			ssize_t w = write(r->fd, p + off, len - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				local_fail(r, RK_HTTP_EFILE, "cannot write the download after %" PRIu64 " bytes: %s",
					   r->bytes + off, w < 0 ? strerror(errno) : "short write");
				return 0;
			}
			off += (size_t)w;
		}
	} else if (body_append(r, p, len) < 0) {
		local_fail(r, RK_HTTP_ETOOBIG, "out of memory holding a %" PRIu64 "-byte response", r->bytes + len);
		return 0;
	}
	r->bytes += len;
	return len;
}

/* "Name: value\r\n" → value into out when name matches (case-insensitive). */
static int hdr_value(const char *line, size_t n, const char *name, char *out, size_t outsz)
{
	size_t nl = strlen(name);
	if (n <= nl || strncasecmp(line, name, nl) || line[nl] != ':')
		return 0;
	const char *v = line + nl + 1, *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	size_t vl = (size_t)(end - v);
	if (vl >= outsz)
		vl = outsz - 1;
	memcpy(out, v, vl);
	out[vl] = 0;
	return 1;
}

static size_t hdr_cb(char *p, size_t size, size_t n, void *ud)
{
	rk_http_req *r = ud;
	size_t len = size * n;
	if (len >= 5 && !strncmp(p, "HTTP/", 5)) {
		/* a new response (after a redirect or a 100 Continue): forget the previous one's */
		r->etag[0] = r->last_modified[0] = r->content_type[0] = r->content_length[0] = 0;
		return len;
	}
	if (!hdr_value(p, len, "ETag", r->etag, sizeof r->etag) &&
	    !hdr_value(p, len, "Last-Modified", r->last_modified, sizeof r->last_modified) &&
	    !hdr_value(p, len, "Content-Length", r->content_length, sizeof r->content_length))
		hdr_value(p, len, "Content-Type", r->content_type, sizeof r->content_type);
	return len;
}

static void req_complete(rk_http_req *r)
{
	rk_http_result res;
	memset(&res, 0, sizeof res);
	char msg[1200];
	long status = 0;
	curl_off_t cl = -1;
	char *eff = NULL;
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &eff);
	if (cl < 0 && r->content_length[0]) /* libcurl does not say when it refused the size itself */
		cl = (curl_off_t)strtoll(r->content_length, NULL, 10);
	res.status = status;
	res.bytes = r->bytes;
	res.content_length = cl;
	res.etag = r->etag[0] ? r->etag : NULL;
	res.last_modified = r->last_modified[0] ? r->last_modified : NULL;
	res.content_type = r->content_type[0] ? r->content_type : NULL;
	res.body = r->body ? r->body : "";
	res.body_len = r->body_len;
	res.effective_url = eff;
	double secs = (double)(rk_now_ms() - r->started) / 1000;
	CURLcode cr = r->result;
	if (r->skipped_rest && cr == CURLE_WRITE_ERROR)
		cr = CURLE_OK;
	if (r->local_fail) {
		res.fail = r->local_fail;
		snprintf(msg, sizeof msg, "%s: %s", r->what, r->local_msg);
	} else if (cr == CURLE_PARTIAL_FILE ||
		   (cr == CURLE_OK && status_ok(status) && cl >= 0 && (uint64_t)cl != r->bytes && !r->skipped_rest)) {
		res.fail = RK_HTTP_ETRUNCATED;
		if (cl >= 0)
			snprintf(msg, sizeof msg,
				 "%s: the server closed the connection after %" PRIu64 " of %" PRId64
				 " bytes (download cut short)",
				 r->what, r->bytes, (int64_t)cl);
		else
			snprintf(msg, sizeof msg,
				 "%s: the server closed the connection after %" PRIu64
				 " bytes, before the end of its chunked body (download cut short)",
				 r->what, r->bytes);
	} else if (cr == CURLE_OPERATION_TIMEDOUT) {
		res.fail = RK_HTTP_ETIMEOUT;
		if (strstr(r->errbuf, "too slow"))
			snprintf(msg, sizeof msg,
				 "%s: too slow: less than %ld bytes/s for %ld s (%" PRIu64 " bytes received in %.1f s)",
				 r->what, r->low_speed_bytes, r->low_speed_time_s, r->bytes, secs);
		else if (r->timeout_ms && secs * 1000 >= (double)r->timeout_ms * 0.99)
			snprintf(msg, sizeof msg, "%s: not finished within %g s (%" PRIu64 " bytes received)", r->what,
				 (double)r->timeout_ms / 1000, r->bytes);
		else
			snprintf(msg, sizeof msg, "%s: %s", r->what, r->errbuf[0] ? r->errbuf : "timed out");
	} else if (cr == CURLE_FILESIZE_EXCEEDED) {
		res.fail = RK_HTTP_ETOOBIG;
		snprintf(msg, sizeof msg,
			 "%s: the server announces %" PRId64 " bytes, over the limit of %" PRIu64 " bytes", r->what,
			 (int64_t)cl, r->max);
	} else if (cr != CURLE_OK) {
		res.fail = RK_HTTP_ETRANSPORT;
		snprintf(msg, sizeof msg, "%s: %s%s%s", r->what, curl_easy_strerror(cr), r->errbuf[0] ? ": " : "",
			 r->errbuf);
	}
	if (res.fail)
		res.error = msg;
	r->finished = 1; /* a cancel from the callback is a no-op; r is freed after it */
	r->cb(r->ud, &res);
	req_free(r);
}

/* ---- transfers done ------------------------------------------------------------------------ */

static void h_process(void *ud)
{
	struct rk_http *h = ud;
	if (h->cl.in_curl)
		return;
	h->processing++;
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(h->cl.multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		rk_http_req *r = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		if (r) {
			r->done = 1;
			r->result = m->data.result;
		}
	}
	/* one at a time from the head: a callback may cancel or start others */
	for (;;) {
		rk_http_req *r = h->reqs;
		while (r && !r->done)
			r = r->next;
		if (!r || h->closing)
			break;
		req_complete(r);
	}
	h->processing--;
	if (!h->processing && h->closing)
		h_free_now(h);
}

/* ---- public ---------------------------------------------------------------------------------- */

rk_http *rk_http_new(rk_loop *l, rk_err *e)
{
	if (rk_curl_load(e) < 0)
		return NULL;
	struct rk_http *h = calloc(1, sizeof *h);
	if (!h || !(h->cl.multi = curl_multi_init())) {
		free(h);
		rk_errf(e, ENOMEM, "out of memory creating the HTTP client");
		return NULL;
	}
	h->cl.loop = l;
	h->cl.sub = SUB;
	h->cl.owner = h;
	h->cl.process = h_process;
	rk_curl_loop_init(&h->cl);
	return h;
}

size_t rk_http_active(const rk_http *h)
{
	size_t n = 0;
	for (const rk_http_req *r = h->reqs; r; r = r->next)
		n += !r->finished;
	return n;
}

static void h_free_now(struct rk_http *h)
{
	while (h->reqs)
		req_free(h->reqs);
	rk_curl_loop_fini(&h->cl);
	free(h);
}

void rk_http_free(rk_http *h)
{
	if (!h || h->closing)
		return;
	h->closing = 1;
	if (h->processing || h->cl.in_curl)
		return; /* freed when the current dispatch ends */
	h_free_now(h);
}

/* url without its user:password@ part, for messages and logs. */
static void redact(const char *url, char *out, size_t outsz)
{
	const char *p = strstr(url, "://"), *host = p ? p + 3 : url;
	const char *end = host + strcspn(host, "/?#"), *at = memchr(host, '@', (size_t)(end - host));
	if (!at)
		snprintf(out, outsz, "%s", url);
	else
		snprintf(out, outsz, "%.*s***@%s", (int)(host - url), url, at + 1);
}

static int bad_header(const char *s)
{
	return strchr(s, '\r') || strchr(s, '\n') || !strchr(s, ':');
}

rk_http_req *rk_http_start(rk_http *h, const rk_http_opts *o, rk_http_done_cb cb, void *ud, rk_err *e)
{
	if (h->closing) {
		rk_errf(e, EBADF, "the HTTP client is closed");
		return NULL;
	}
	const char *method = o->method ? o->method : "GET";
	if (!o->url || (strncmp(o->url, "http://", 7) && strncmp(o->url, "https://", 8))) {
		rk_errf(e, EINVAL, "'%s' is not an http:// or https:// URL", o->url ? o->url : "(null)");
		return NULL;
	}
	if (strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(method) || !*method) {
		rk_errf(e, EINVAL, "'%s' is not an HTTP method", method);
		return NULL;
	}
	for (const char **hp = o->headers; hp && *hp; hp++)
		if (bad_header(*hp)) {
			rk_errf(e, EINVAL, "request header '%s' must be 'Name: value' on one line", *hp);
			return NULL;
		}
	rk_http_req *r = calloc(1, sizeof *r);
	if (!r) {
		rk_errf(e, ENOMEM, "out of memory");
		return NULL;
	}
	r->h = h;
	r->fd = -1;
	r->cb = cb;
	r->ud = ud;
	r->started = rk_now_ms();
	r->timeout_ms = o->timeout_ms;
	r->low_speed_bytes = o->low_speed_bytes;
	r->low_speed_time_s = o->low_speed_time_s;
	r->to_file = o->out_path != NULL;
	r->max = o->max_bytes ? o->max_bytes : (r->to_file ? 0 : RK_HTTP_DEFAULT_MAX_MEM);
	size_t wl = strlen(method) + strlen(o->url) + (o->unix_socket ? strlen(o->unix_socket) : 0) + 32;
	r->what = malloc(wl);
	if (r->what && o->unix_socket) {
		const char *path = strchr(o->url + (o->url[4] == 's' ? 8 : 7), '/');
		snprintf(r->what, wl, "%s %s on unix socket %s", method, path ? path : "/", o->unix_socket);
	} else if (r->what) {
		char shown[2048];
		redact(o->url, shown, sizeof shown);
		snprintf(r->what, wl, "%s %s", method, shown);
	}
	r->easy = curl_easy_init();
	if (!r->what || !r->easy) {
		rk_errf(e, ENOMEM, "out of memory starting %s %s", method, o->url);
		goto fail;
	}
	if (o->out_path) {
		r->fd = open(o->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (r->fd < 0) {
			rk_errf(e, errno, "cannot create %s for %s: %s", o->out_path, r->what, strerror(errno));
			goto fail;
		}
	}
	struct curl_slist *hl = NULL;
	hl = curl_slist_append(hl, "Expect:");
	for (const char **hp = o->headers; hp && *hp; hp++)
		hl = curl_slist_append(hl, *hp);
	r->hdrs = hl;

	CURL *ez = r->easy;
	curl_easy_setopt(ez, CURLOPT_URL, o->url);
	curl_easy_setopt(ez, CURLOPT_PRIVATE, r);
	curl_easy_setopt(ez, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(ez, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(ez, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(ez, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(ez, CURLOPT_HEADERFUNCTION, hdr_cb);
	curl_easy_setopt(ez, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(ez, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(ez, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(ez, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(ez, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000L);
	if (o->timeout_ms > 0)
		curl_easy_setopt(ez, CURLOPT_TIMEOUT_MS, o->timeout_ms);
	if (o->low_speed_bytes > 0 && o->low_speed_time_s > 0) {
		curl_easy_setopt(ez, CURLOPT_LOW_SPEED_LIMIT, o->low_speed_bytes);
		curl_easy_setopt(ez, CURLOPT_LOW_SPEED_TIME, o->low_speed_time_s);
	}
	if (r->max)
		curl_easy_setopt(ez, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max);
	if (o->unix_socket)
		curl_easy_setopt(ez, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
	if (o->follow_redirects) {
		curl_easy_setopt(ez, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(ez, CURLOPT_MAXREDIRS, 10L);
		curl_easy_setopt(ez, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	}
	if (!strcmp(method, "HEAD")) {
		curl_easy_setopt(ez, CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET") || o->body) {
		curl_easy_setopt(ez, CURLOPT_CUSTOMREQUEST, method);
	}
	if (o->body) {
		curl_easy_setopt(ez, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
		curl_easy_setopt(ez, CURLOPT_COPYPOSTFIELDS, o->body);
		curl_easy_setopt(ez, CURLOPT_CUSTOMREQUEST, method);
	}
	if (getenv("RIKLET_CURL_VERBOSE"))
		curl_easy_setopt(ez, CURLOPT_VERBOSE, 1L);

	/* link before add: add_handle may run the timer callback */
	r->next = h->reqs;
	if (h->reqs)
		h->reqs->prev = r;
	h->reqs = r;
	CURLMcode mc = curl_multi_add_handle(h->cl.multi, ez);
	if (mc != CURLM_OK) {
		rk_errf(e, EIO, "cannot start %s: %s", r->what, curl_multi_strerror(mc));
		req_free(r);
		return NULL;
	}
	return r;
fail:
	if (r->easy)
		curl_easy_cleanup(r->easy);
	r->easy = NULL;
	if (r->fd >= 0)
		close(r->fd);
	free(r->what);
	free(r);
	return NULL;
}

void rk_http_cancel(rk_http_req *r)
{
	if (!r || r->finished)
		return;
	r->finished = 1;
	req_free(r);
}

uint64_t rk_http_req_bytes(const rk_http_req *r)
{
	return r->bytes;
}
