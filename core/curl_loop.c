/* curl_loop.c — libcurl multi <-> rk_loop glue (see curl_loop.h). */
#include "curl_loop.h"

#include <stdlib.h>

static void cl_drive(rk_curl_loop *cl, curl_socket_t s, int ev)
{
	int running;
	cl->in_curl++;
	curl_multi_socket_action(cl->multi, s, ev, &running);
	cl->in_curl--;
	cl->process(cl->owner);
}

static void fd_cb(void *ud, int fd, uint32_t events)
{
	struct rk_curl_sock *si = ud;
	rk_curl_loop *cl = si->cl;
	int ev = 0;
	if (cl->before_read && (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)))
		cl->before_read(cl->owner, fd);
	if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
		ev |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		ev |= CURL_CSELECT_OUT;
	if (events & EPOLLERR)
		ev |= CURL_CSELECT_ERR;
	cl_drive(cl, fd, ev);
}

static void watch_error(rk_curl_loop *cl, curl_socket_t s, const rk_err *e)
{
	if (cl->peer)
		rk_error(cl->sub, "watching socket %d for %s: %s", (int)s, cl->peer, e->msg);
	else
		rk_error(cl->sub, "watching socket %d: %s", (int)s, e->msg);
}

static int sock_cb(CURL *ez, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)ez;
	rk_curl_loop *cl = userp;
	struct rk_curl_sock *si = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (si) {
			rk_watch_cancel(si->w);
			struct rk_curl_sock **pp = &cl->socks;
			while (*pp && *pp != si)
				pp = &(*pp)->next;
			if (*pp)
				*pp = si->next;
			free(si);
			curl_multi_assign(cl->multi, s, NULL);
		}
		return 0;
	}
	uint32_t ev = 0;
	if (what & CURL_POLL_IN)
		ev |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev |= EPOLLOUT;
	rk_err e;
	if (si) {
		if (rk_watch_modify(si->w, ev, &e) < 0)
			watch_error(cl, s, &e);
		return 0;
	}
	si = calloc(1, sizeof *si);
	if (!si)
		return -1;
	si->fd = s;
	si->cl = cl;
	si->w = rk_loop_watch_fd(cl->loop, s, ev, fd_cb, si, &e);
	if (!si->w) {
		watch_error(cl, s, &e);
		free(si);
		return -1;
	}
	si->next = cl->socks;
	cl->socks = si;
	curl_multi_assign(cl->multi, s, si);
	return 0;
}

static void timer_fired(void *ud)
{
	rk_curl_loop *cl = ud;
	cl->timer = NULL;
	cl_drive(cl, CURL_SOCKET_TIMEOUT, 0);
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	(void)m;
	rk_curl_loop *cl = userp;
	if (cl->timer) {
		rk_timer_cancel(cl->timer);
		cl->timer = NULL;
	}
	if (timeout_ms >= 0)
		cl->timer = rk_loop_timer(cl->loop, (uint64_t)timeout_ms, timer_fired, cl);
	return 0;
}

void rk_curl_loop_init(rk_curl_loop *cl)
{
	curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
	curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
}

void rk_curl_loop_fini(rk_curl_loop *cl)
{
	while (cl->socks) {
		struct rk_curl_sock *si = cl->socks;
		cl->socks = si->next;
		rk_watch_cancel(si->w);
		if (cl->multi)
			curl_multi_assign(cl->multi, si->fd, NULL);
		free(si);
	}
	if (cl->multi) {
		/* stop curl from calling back into a half-freed owner */
		curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, NULL);
		curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, NULL);
		curl_multi_cleanup(cl->multi);
		cl->multi = NULL;
	}
	if (cl->timer) {
		rk_timer_cancel(cl->timer);
		cl->timer = NULL;
	}
}

size_t rk_curl_loop_sockets(const rk_curl_loop *cl)
{
	size_t n = 0;
	for (const struct rk_curl_sock *si = cl->socks; si; si = si->next)
		n++;
	return n;
}
