/* curl_lazy.h — libcurl, loaded with dlopen the first time riklet needs HTTP (scheduler mode).
 * Debian's libcurl pulls about 35 libraries (OpenSSL, GnuTLS, Kerberos, LDAP, ...) into a process:
 * about 6 MiB resident at start, which standalone mode and most commands never use. Include this
 * instead of <curl/curl.h>; the curl_* functions below then go through the table loaded by
 * rk_curl_load() (call it before any of them; it is idempotent). */
#ifndef RK_CURL_LAZY_H
#define RK_CURL_LAZY_H

#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include "rk.h"

struct rk_curl_api {
	CURLcode (*global_init)(long);
	curl_version_info_data *(*version_info)(CURLversion);
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
	CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
	CURLcode (*easy_pause)(CURL *, int);
	void (*easy_cleanup)(CURL *);
	const char *(*easy_strerror)(CURLcode);
	CURLM *(*multi_init)(void);
	CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
	CURLMcode (*multi_add_handle)(CURLM *, CURL *);
	CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
	CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
	CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
	CURLMsg *(*multi_info_read)(CURLM *, int *);
	CURLMcode (*multi_cleanup)(CURLM *);
	const char *(*multi_strerror)(CURLMcode);
	struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
	void (*slist_free_all)(struct curl_slist *);
};
extern struct rk_curl_api rk_curl;

/* Load libcurl and initialise it once. Returns 0, or -1 with e saying what to install. */
int rk_curl_load(rk_err *e);

/* curl.h defines these three as function-like macros (type checking disabled or not) */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init rk_curl.global_init
#define curl_version_info rk_curl.version_info
#define curl_easy_init rk_curl.easy_init
#define curl_easy_setopt rk_curl.easy_setopt
#define curl_easy_getinfo rk_curl.easy_getinfo
#define curl_easy_pause rk_curl.easy_pause
#define curl_easy_cleanup rk_curl.easy_cleanup
#define curl_easy_strerror rk_curl.easy_strerror
#define curl_multi_init rk_curl.multi_init
#define curl_multi_setopt rk_curl.multi_setopt
#define curl_multi_add_handle rk_curl.multi_add_handle
#define curl_multi_remove_handle rk_curl.multi_remove_handle
#define curl_multi_socket_action rk_curl.multi_socket_action
#define curl_multi_assign rk_curl.multi_assign
#define curl_multi_info_read rk_curl.multi_info_read
#define curl_multi_cleanup rk_curl.multi_cleanup
#define curl_multi_strerror rk_curl.multi_strerror
#define curl_slist_append rk_curl.slist_append
#define curl_slist_free_all rk_curl.slist_free_all

#endif
