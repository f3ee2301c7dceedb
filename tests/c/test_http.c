/* test_http.c — core/http against a real local HTTP/1.1 server (tests/lib/httpserver.py under
 * Debian's /usr/bin/python3): streamed downloads, validators and 304, 404, a body cut short, the
 * size cap, low-speed and total timeouts, cancellation, refused connections, requests over a unix
 * socket with a JSON body, concurrent transfers. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "http.h"
#include "loop.h"
#include "tap.h"

static const char *src_dir(void)
{
	static char d[1024];
	if (getenv("RIKLET_SRC_DIR"))
		return getenv("RIKLET_SRC_DIR");
	snprintf(d, sizeof d, "%s", __FILE__);
	char *p = strstr(d, "/tests/c/");
	if (p)
		*p = 0;
	else
		snprintf(d, sizeof d, ".");
	return d;
}

static rk_loop *L;
static rk_http *H;
static char tmp[256], base[128], sock[300];
static pid_t srv;
static int port;

/* a copy of one result */
struct res {
	int called, fail;
	long status;
	char error[1200], etag[256], lm[256], body[2048];
	uint64_t bytes;
	int64_t cl;
};

static void done_cb(void *ud, const rk_http_result *r)
{
	struct res *o = ud;
	o->called++;
	o->fail = r->fail;
	o->status = r->status;
	o->bytes = r->bytes;
	o->cl = r->content_length;
	snprintf(o->error, sizeof o->error, "%s", r->error ? r->error : "");
	snprintf(o->etag, sizeof o->etag, "%s", r->etag ? r->etag : "");
	snprintf(o->lm, sizeof o->lm, "%s", r->last_modified ? r->last_modified : "");
	snprintf(o->body, sizeof o->body, "%.*s", (int)r->body_len, r->body);
	if (!rk_http_active(H))
		rk_loop_stop(L, 0);
}

static void guard(void *ud)
{
	(void)ud;
	printf("# guard timer fired: the loop never finished\n");
	rk_loop_stop(L, 1);
}

/* Run one request to its end (or the 60 s guard). */
static void run1(rk_http_opts *o, struct res *r)
{
	memset(r, 0, sizeof *r);
	rk_err e;
	rk_http_req *q = rk_http_start(H, o, done_cb, r, &e);
	if (!q) {
		r->fail = -1;
		snprintf(r->error, sizeof r->error, "%s", e.msg);
		return;
	}
	rk_timer *g = rk_loop_timer(L, 60000, guard, NULL);
	rk_loop_run(L);
	rk_timer_cancel(g);
}

static void modes(const char *json)
{
	char p[300];
	snprintf(p, sizeof p, "%s/www/.modes.json", tmp);
	FILE *f = fopen(p, "w");
	fputs(json, f);
	fclose(f);
}

static off_t fsize(const char *p)
{
	struct stat st;
	return stat(p, &st) < 0 ? -1 : st.st_size;
}

static void stop_cb(void *ud)
{
	(void)ud;
	rk_loop_stop(L, 0);
}

static void cancel_cb(void *ud)
{
	rk_http_cancel(ud);
}

int main(void)
{
	if (access("/usr/bin/python3", X_OK) < 0)
		tap_skip_all("needs /usr/bin/python3 (apt-get install python3)");
	snprintf(tmp, sizeof tmp, "/tmp/rk-test-http.XXXXXX");
	if (!mkdtemp(tmp))
		tap_skip_all("mkdtemp: %s", strerror(errno));
	run("mkdir -p %s/www && head -c 1048576 /dev/urandom > %s/www/big.img && echo hello > %s/www/small.txt", tmp,
	    tmp, tmp);
	snprintf(sock, sizeof sock, "%s/api.sock", tmp);
	char pf[300];
	snprintf(pf, sizeof pf, "%s/port", tmp);
	srv = fork();
	if (srv == 0) {
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		char script[1100], www[300], logp[300];
		snprintf(script, sizeof script, "%s/tests/lib/httpserver.py", src_dir());
		snprintf(www, sizeof www, "%s/www", tmp);
		snprintf(logp, sizeof logp, "%s/server.log", tmp);
		execl("/usr/bin/python3", "python3", script, "--dir", www, "--port-file", pf, "--log", logp, "--unix",
		      sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200 && !port; i++) {
		FILE *f = fopen(pf, "r");
		if (f) {
			if (fscanf(f, "%d", &port) != 1)
				port = 0;
			fclose(f);
		}
		if (!port)
			usleep(50000);
	}
	if (!port) {
		kill(srv, SIGKILL);
		tap_skip_all("the test HTTP server did not start");
	}
	snprintf(base, sizeof base, "http://127.0.0.1:%d", port);

	rk_err e;
	L = rk_loop_new(&e);
	H = rk_http_new(L, &e);
	ok(H != NULL, "client created (libcurl loaded): %s", H ? "" : e.msg);
	if (!H)
		tap_done();

	char url[256], out[300], ref[300];
	struct res r;
	rk_http_opts o;

	/* 1. a streamed download */
	snprintf(url, sizeof url, "%s/big.img", base);
	snprintf(out, sizeof out, "%s/out.img", tmp);
	snprintf(ref, sizeof ref, "%s/www/big.img", tmp);
	o = (rk_http_opts){.url = url, .out_path = out, .timeout_ms = 30000};
	run1(&o, &r);
	is_int(r.called, 1, "download: the callback fired once");
	is_int(r.fail, RK_HTTP_OK, "download: no failure (%s)", r.error);
	is_int(r.status, 200, "download: status 200");
	is_int((long long)r.bytes, 1048576, "download: 1 MiB received");
	is_int(r.cl, 1048576, "download: Content-Length reported");
	is_str(run("cmp %s %s >/dev/null && echo same", out, ref), "same\n",
	       "download: the file holds the bytes served");
	ok(r.etag[0] == '"', "download: ETag reported (%s)", r.etag);
	ok(strstr(r.lm, "GMT") != NULL, "download: Last-Modified reported (%s)", r.lm);
	char etag[256], lm[256];
	snprintf(etag, sizeof etag, "%s", r.etag);
	snprintf(lm, sizeof lm, "%s", r.lm);

	/* 2. conditional: 304, nothing written */
	char h1[300], h2[300];
	snprintf(h1, sizeof h1, "If-None-Match: %s", etag);
	const char *hdrs1[] = {h1, NULL};
	o = (rk_http_opts){.url = url, .out_path = out, .headers = hdrs1};
	run1(&o, &r);
	is_int(r.status, 304, "If-None-Match with the current ETag: 304");
	is_int(fsize(out), 0, "304: nothing written to the file");
	snprintf(h2, sizeof h2, "If-Modified-Since: %s", lm);
	const char *hdrs2[] = {h2, NULL};
	o = (rk_http_opts){.url = url, .out_path = out, .headers = hdrs2};
	run1(&o, &r);
	is_int(r.status, 304, "If-Modified-Since with the Last-Modified: 304");
	const char *hdrs3[] = {"If-None-Match: \"other\"", NULL};
	o = (rk_http_opts){.url = url, .out_path = out, .headers = hdrs3};
	run1(&o, &r);
	is_int(r.status, 200, "If-None-Match with another ETag: 200");
	is_int(fsize(out), 1048576, "200: the whole body written");

	/* 3. 404: a status, not a failure; the error page is not the file */
	snprintf(url, sizeof url, "%s/missing.img", base);
	o = (rk_http_opts){.url = url, .out_path = out};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_OK, "404: not a transport failure");
	is_int(r.status, 404, "404: status reported");
	is_int(fsize(out), 0, "404: the error page is not written to the file");
	ok(strstr(r.body, "no such file") != NULL, "404: the start of the error page kept to quote (%s)", r.body);

	/* 4. a body cut short */
	modes("{\"/big.img\": {\"cut\": 1000}}");
	snprintf(url, sizeof url, "%s/big.img", base);
	o = (rk_http_opts){.url = url, .out_path = out};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETRUNCATED, "cut short: a truncation failure");
	ok(strstr(r.error, "after 1000 of 1048576 bytes") != NULL, "cut short: the error names the bytes (%s)",
	   r.error);
	modes("{\"/big.img\": {\"cut\": 1000, \"chunked\": true}}");
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETRUNCATED, "chunked body cut short: a truncation failure (%s)", r.error);

	/* 5. the size cap: announced, and found while streaming a chunked body */
	modes("{}");
	o = (rk_http_opts){.url = url, .out_path = out, .max_bytes = 4096};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETOOBIG, "over the cap (Content-Length): refused");
	ok(strstr(r.error, "4096") != NULL, "over the cap: the error names the limit (%s)", r.error);
	modes("{\"/big.img\": {\"chunked\": true}}");
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETOOBIG, "over the cap (chunked): stopped (%s)", r.error);
	ok(fsize(out) <= 4096, "over the cap: no more than the cap written (%lld)", (long long)fsize(out));
	o.max_bytes = 1048576;
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_OK, "exactly at the cap (chunked): accepted (%s)", r.error);
	is_int((long long)r.bytes, 1048576, "chunked: every byte received");

	/* 6. timeouts */
	modes("{\"/big.img\": {\"rate\": 2000}}");
	o = (rk_http_opts){.url = url, .out_path = out, .low_speed_bytes = 100000, .low_speed_time_s = 1};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETIMEOUT, "slower than the low-speed limit: timed out");
	ok(strstr(r.error, "too slow") != NULL, "low speed: the error says so (%s)", r.error);
	o = (rk_http_opts){.url = url, .out_path = out, .timeout_ms = 1000};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETIMEOUT, "longer than the total timeout: timed out");
	ok(strstr(r.error, "not finished within 1 s") != NULL, "total timeout: the error says so (%s)", r.error);

	/* 7. cancel: no callback, the loop goes on, nothing left open */
	memset(&r, 0, sizeof r);
	o = (rk_http_opts){.url = url, .out_path = out};
	rk_http_req *q = rk_http_start(H, &o, done_cb, &r, &e);
	rk_loop_timer(L, 500, cancel_cb, q);
	rk_loop_timer(L, 1500, stop_cb, NULL);
	rk_loop_run(L);
	is_int(r.called, 0, "cancelled: no callback");
	is_int(rk_http_active(H), 0, "cancelled: no request left");
	modes("{}");

	/* 8. refused connection, bad header, bad URL */
	o = (rk_http_opts){.url = "http://127.0.0.1:1/x", .out_path = out};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETRANSPORT, "connection refused: a transport failure (%s)", r.error);
	ok(strstr(r.error, "127.0.0.1:1") != NULL, "connection refused: the error names the URL");
	const char *bad[] = {"X-A: 1\r\nX-Injected: 2", NULL};
	o = (rk_http_opts){.url = url, .headers = bad};
	run1(&o, &r);
	ok(r.fail == -1 && strstr(r.error, "one line"), "a header with CR LF is refused (%s)", r.error);
	o = (rk_http_opts){.url = "file:///etc/passwd"};
	run1(&o, &r);
	ok(r.fail == -1, "a file:// URL is refused (%s)", r.error);

	/* 9. unix socket with a JSON body */
	const char *json = "{\"vcpu_count\": 1, \"mem_size_mib\": 128}";
	const char *ct[] = {"Content-Type: application/json", NULL};
	o = (rk_http_opts){.url = "http://localhost/machine-config",
			   .method = "PUT",
			   .unix_socket = sock,
			   .headers = ct,
			   .body = json,
			   .body_len = strlen(json)};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_OK, "unix socket PUT: done (%s)", r.error);
	is_int(r.status, 200, "unix socket PUT: 200");
	ok(strstr(r.body, "\"method\": \"PUT\"") && strstr(r.body, "\"path\": \"/machine-config\""),
	   "unix socket PUT: the server saw the method and path (%s)", r.body);
	ok(strstr(r.body, "mem_size_mib") && strstr(r.body, "application/json"),
	   "unix socket PUT: the server got the body and its type");
	o = (rk_http_opts){.url = "http://localhost/actions/fail",
			   .method = "PATCH",
			   .unix_socket = sock,
			   .body = "{}",
			   .body_len = 2};
	run1(&o, &r);
	is_int(r.status, 400, "unix socket: a 400 answer reported as a status");
	ok(strstr(r.body, "fault_message") != NULL, "unix socket: its body kept (%s)", r.body);
	char nosock[320];
	snprintf(nosock, sizeof nosock, "%s/none.sock", tmp);
	o = (rk_http_opts){.url = "http://localhost/", .unix_socket = nosock};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETRANSPORT, "missing unix socket: a transport failure");
	ok(strstr(r.error, nosock) != NULL, "missing unix socket: the error names the socket (%s)", r.error);
	o = (rk_http_opts){.url = "http://localhost/big", .unix_socket = sock, .max_bytes = 10};
	run1(&o, &r);
	is_int(r.fail, RK_HTTP_ETOOBIG, "in-memory body over its cap: refused (%s)", r.error);

	/* 10. concurrent transfers on one client */
	struct res rs[4];
	char outs[4][300];
	memset(rs, 0, sizeof rs);
	snprintf(url, sizeof url, "%s/big.img", base);
	for (int i = 0; i < 4; i++) {
		snprintf(outs[i], sizeof outs[i], "%s/out%d.img", tmp, i);
		o = (rk_http_opts){.url = url, .out_path = outs[i]};
		rk_http_start(H, &o, done_cb, &rs[i], &e);
	}
	rk_timer *g = rk_loop_timer(L, 60000, guard, NULL);
	rk_loop_run(L);
	rk_timer_cancel(g);
	int all = 1;
	for (int i = 0; i < 4; i++)
		all &= rs[i].called == 1 && rs[i].status == 200 && fsize(outs[i]) == 1048576;
	ok(all, "four concurrent downloads all complete");

	rk_http_free(H);
	rk_loop_free(L);
	kill(srv, SIGKILL);
	waitpid(srv, NULL, 0);
	run("rm -rf %s", tmp);
	tap_done();
}
