/* curl_loop.h — the glue between a libcurl multi handle and the rk_loop, shared by the HTTP client
 * (http.c) and the https:// gRPC transport (grpc.c): libcurl's socket callback becomes fd watches,
 * its timer callback one loop timer, and every curl_multi_socket_action is followed by the
 * owner's process callback (outside libcurl, where user callbacks may run). */
#ifndef RK_CURL_LOOP_H
#define RK_CURL_LOOP_H

#include "curl_lazy.h"
#include "loop.h"

struct rk_curl_sock {
	curl_socket_t fd;
	rk_watch *w;
	struct rk_curl_loop *cl;
	struct rk_curl_sock *next;
};

typedef struct rk_curl_loop {
	rk_loop *loop;
	CURLM *multi;
	rk_timer *timer;
	struct rk_curl_sock *socks; /* the sockets libcurl asked to watch */
	int in_curl;		    /* inside curl_multi_socket_action */
	const char *sub;	    /* log subsystem */
	const char *peer;	    /* "watching socket 5 for <peer>" in errors; NULL: not named */
	void *owner;
	void (*process)(void *owner);		  /* after each curl_multi_socket_action */
	void (*before_read)(void *owner, int fd); /* NULL, or called before libcurl reads fd */
} rk_curl_loop;

/* Install the socket and timer callbacks on cl->multi (set loop, multi, sub, owner, process, and
 * optionally peer and before_read first). */
void rk_curl_loop_init(rk_curl_loop *cl);
/* Stop watching every socket, detach the callbacks, clean up cl->multi (may be NULL), cancel the
 * timer. The transfers must be removed from the multi handle before. */
void rk_curl_loop_fini(rk_curl_loop *cl);
size_t rk_curl_loop_sockets(const rk_curl_loop *cl);

#endif
