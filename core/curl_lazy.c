/* curl_lazy.c — dlopen libcurl on first use (see curl_lazy.h for why). */
#include "curl_lazy.h"

#include <dlfcn.h>
#include <errno.h>

struct rk_curl_api rk_curl;

#define SONAME "libcurl.so.4"

int rk_curl_load(rk_err *e)
{
	static int loaded;
	if (loaded)
		return 0;
	struct rk_dlsym syms[] = {
#define SYM(field, name) {name, (void **)&rk_curl.field}
		SYM(global_init, "curl_global_init"),
		SYM(version_info, "curl_version_info"),
		SYM(easy_init, "curl_easy_init"),
		SYM(easy_setopt, "curl_easy_setopt"),
		SYM(easy_getinfo, "curl_easy_getinfo"),
		SYM(easy_pause, "curl_easy_pause"),
		SYM(easy_cleanup, "curl_easy_cleanup"),
		SYM(easy_strerror, "curl_easy_strerror"),
		SYM(multi_init, "curl_multi_init"),
		SYM(multi_setopt, "curl_multi_setopt"),
		SYM(multi_add_handle, "curl_multi_add_handle"),
		SYM(multi_remove_handle, "curl_multi_remove_handle"),
		SYM(multi_socket_action, "curl_multi_socket_action"),
		SYM(multi_assign, "curl_multi_assign"),
		SYM(multi_info_read, "curl_multi_info_read"),
		SYM(multi_cleanup, "curl_multi_cleanup"),
		SYM(multi_strerror, "curl_multi_strerror"),
		SYM(slist_append, "curl_slist_append"),
		SYM(slist_free_all, "curl_slist_free_all"),
#undef SYM
	};
	void *h = rk_dlopen_syms(SONAME, syms, sizeof syms / sizeof syms[0], "libcurl4", "libcurl 7.88 or newer", e);
	if (!h)
		return -1;
	if (rk_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		dlclose(h);
		return rk_errf(e, EIO, "libcurl initialisation failed");
	}
	loaded = 1; /* never unloaded: libcurl keeps global state */
	return 0;
}
