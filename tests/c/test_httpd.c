/* test_httpd.c — the HTTP server on the loop, driven by the real curl in a child process while
 * the loop serves: a body on GET with headers and query arguments, TCP and a unix socket, an
 * answer that waits (another request is served meanwhile), a stream whose first chunk arrives
 * before its end, a client that leaves a stream that never ends (seen gone), the body cap (413,
 * announced and chunked), the connection cap (503), the header deadline (connection closed), and
 * the unix socket removed at close. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "httpd.h"
#include "loop.h"
#include "tap.h"

static rk_loop *L;
static char dir[] = "/tmp/rk-httpd-XXXXXX";
static rk_httpd_req *forever;
static int client_status = -1;

static void answer(rk_httpd_req *r, int status, const char *body)
{
	static const char *const h[] = {"Content-Type", "text/plain", NULL};
	rk_err e = {0};
	rk_httpd_respond(r, status, h, body, strlen(body), &e);
	rk_httpd_req_unref(r);
}

struct echo {
	char buf[4096];
};
static void add_kv(void *ud, const char *k, const char *v)
{
	struct echo *x = ud;
	size_t n = strlen(x->buf);
	snprintf(x->buf + n, sizeof x->buf - n, " %s=%s", k, v);
}

static void slow_answer(void *ud)
{
	answer(ud, 200, "slow");
}

static void stream_second(void *ud)
{
	rk_httpd_req *r = ud;
	rk_httpd_write(r, "b\n", 2, NULL);
	rk_httpd_end(r);
	rk_httpd_req_unref(r);
}

static void handler(void *ud, rk_httpd_req *r)
{
	const char *p = rk_httpd_req_path(r);
	if (!strcmp(p, "/echo")) {
		struct echo x = {{0}};
		size_t bl;
		const char *b = rk_httpd_req_body(r, &bl);
		snprintf(x.buf, sizeof x.buf, "%s %s body=%.*s", rk_httpd_req_method(r), p, (int)bl, b);
		rk_httpd_req_each(r, 1, add_kv, &x);
		struct echo h = {{0}};
		rk_httpd_req_each(r, 0, add_kv, &h);
		if (strstr(h.buf, "X-Test=yes"))
			strcat(x.buf, " header-ok");
		answer(r, 200, x.buf);
	} else if (!strcmp(p, "/slow")) {
		rk_loop_timer(L, 1500, slow_answer, r);
	} else if (!strcmp(p, "/stream")) {
		rk_httpd_stream(r, 200, NULL, NULL);
		rk_httpd_write(r, "a\n", 2, NULL);
		rk_loop_timer(L, 2000, stream_second, r);
	} else if (!strcmp(p, "/forever")) {
		rk_httpd_stream(r, 200, NULL, NULL);
		rk_httpd_write(r, "x\n", 2, NULL);
		forever = r; /* kept: its client leaves */
	} else {
		answer(r, 404, "no such route");
	}
}

static void stop(void *ud)
{
	rk_loop_stop(L, 0);
}

static void client_done(void *ud, pid_t pid, int st)
{
	client_status = st;
	rk_loop_timer(L, 3000, stop, NULL); /* time for the forever stream to notice its client left */
}

static const char *slurp(const char *name)
{
	static char buf[4096];
	char path[256];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	buf[0] = 0;
	if (f) {
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		buf[n] = 0;
		fclose(f);
	}
	return buf;
}

int main(void)
{
	if (system("command -v curl >/dev/null 2>&1"))
		tap_skip_all("curl is not installed (apt-get install curl)");
	if (!mkdtemp(dir))
		tap_skip_all("mkdtemp: %s", strerror(errno));
	rk_err e = {0};
	L = rk_loop_new(&e);
	ok(L != NULL, "loop");
	struct rk_httpd_opts o = {.listen = "127.0.0.1:0", .body_max = 1 << 20, .conn_max = 3, .header_timeout_s = 2};
	rk_httpd *s = rk_httpd_new(L, &o, handler, NULL, &e);
	ok(s != NULL, "listening on 127.0.0.1 port 0: %s", e.msg);
	int port = s ? rk_httpd_port(s) : 0;
	ok(port > 0, "the bound port is known (%d)", port);
	char sock[300];
	snprintf(sock, sizeof sock, "unix:%s/api.sock", dir);
	o.listen = sock;
	rk_httpd *su = rk_httpd_new(L, &o, handler, NULL, &e);
	ok(su != NULL, "listening on a unix socket: %s", e.msg);
	o.listen = "/nonsense";
	ok(rk_httpd_new(L, &o, handler, NULL, &e) == NULL && strstr(e.msg, "HOST:PORT"), "a bad address is refused: %s",
	   e.msg);
	if (!s || !su)
		tap_done();

	char script[8192];
	snprintf(script, sizeof script,
		 "cd %s; U=http://127.0.0.1:%d\n"
		 /* the connection cap: 3 idle connections held, the next request is refused */
		 "exec 3<>/dev/tcp/127.0.0.1/%d 4<>/dev/tcp/127.0.0.1/%d 5<>/dev/tcp/127.0.0.1/%d\n"
		 "sleep 0.3; curl -s -o cap.body -w '%%{http_code}' $U/echo > cap.code\n"
		 "exec 3>&- 4>&- 5>&-; sleep 0.3\n"
		 "curl -s -X GET --data-binary '{\"a\":1}' -H 'X-Test: yes' \"$U/echo?x=1&y=two\" > get.out\n"
		 "curl -s --unix-socket api.sock http://riklet/echo > unix.out\n"
		 "curl -s -o /dev/null -w '%%{http_code}' $U/nope > 404.code\n"
		 "head -c 2000000 /dev/zero > big; curl -s -o big.body -w '%%{http_code}' --data-binary @big $U/echo > "
		 "big.code\n"
		 "curl -s -o chunk.body -w '%%{http_code}' -H 'Transfer-Encoding: chunked' --data-binary @big $U/echo "
		 "> chunk.code\n"
		 /* a waiting answer does not hold up another request */
		 "curl -s $U/slow > slow.out & sleep 0.3; curl -s $U/echo > e2.out; [ -s slow.out ] || echo waiting > "
		 "order.out; wait\n"
		 /* the first chunk of a stream arrives before the end */
		 "curl -sN $U/stream > stream.out & sleep 1; cp stream.out early.out; wait\n"
		 "timeout 1 curl -sN $U/forever > forever.out\n"
		 /* headers never completed: closed by the header deadline */
		 "exec 6<>/dev/tcp/127.0.0.1/%d; printf 'GET /echo HTTP/1.1\\r\\nHost: x\\r\\n' >&6\n"
		 "timeout 6 cat <&6 >/dev/null; echo $? > slowloris.code\n",
		 dir, port, port, port, port, port);
	pid_t pid = fork();
	if (pid == 0) {
		sigset_t all;
		sigfillset(&all);
		sigprocmask(SIG_UNBLOCK, &all, NULL);
		execl("/bin/bash", "bash", "-c", script, (char *)NULL);
		_exit(127);
	}
	ok(rk_loop_watch_child(L, pid, client_done, NULL, &e) == 0, "client started");
	rk_loop_run(L);

	ok(WIFEXITED(client_status), "the client script ran (status %d)", client_status);
	is_str(slurp("cap.code"), "503", "a request beyond the connection cap is answered 503");
	ok(strstr(slurp("cap.body"), "too many connections") != NULL, "... saying why: %s", slurp("cap.body"));
	is_str(slurp("get.out"), "GET /echo body={\"a\":1} x=1 y=two header-ok",
	       "a GET with a body: method, path, body, query and headers reach the handler");
	is_str(slurp("unix.out"), "GET /echo body=", "served on the unix socket");
	is_str(slurp("404.code"), "404", "the handler's status is sent");
	is_str(slurp("big.code"), "413", "a 2 MB body over a 1 MiB cap is refused with 413");
	ok(strstr(slurp("big.body"), "1048576") != NULL, "... saying the cap: %s", slurp("big.body"));
	is_str(slurp("chunk.code"), "413", "a chunked body over the cap is refused with 413 too");
	is_str(slurp("order.out"), "waiting\n", "another request is answered while one waits for its answer");
	is_str(slurp("slow.out"), "slow", "the waiting answer comes");
	is_str(slurp("early.out"), "a\n", "the first chunk of a stream arrives before its end");
	is_str(slurp("stream.out"), "a\nb\n", "the whole stream arrives");
	is_str(slurp("forever.out"), "x\n", "a stream that never ends sends what was written");
	ok(forever && rk_httpd_req_gone(forever), "a stream whose client left is seen gone");
	ok(forever && rk_httpd_write(forever, "y", 1, &e) < 0, "writing to it fails: %s", e.msg);
	if (forever)
		rk_httpd_req_unref(forever);
	is_str(slurp("slowloris.code"), "0\n",
	       "a connection that never completes its headers is closed (deadline 2 s)");

	rk_httpd_free(s);
	rk_httpd_free(su);
	char path[300];
	snprintf(path, sizeof path, "%s/api.sock", dir);
	struct stat st;
	ok(stat(path, &st) < 0 && errno == ENOENT, "the unix socket is removed at close");
	run("rm -rf %s", dir);
	rk_loop_free(L);
	tap_done();
}
