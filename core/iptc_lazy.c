/* iptc_lazy.c — dlopen libip4tc on the first iptables table read (see iptc_lazy.h for why). */
#define RK_IPTC_LAZY_IMPL
#include "iptc_lazy.h"

#include <pthread.h>

struct rk_iptc_api rk_iptc;

#define SONAME "libip4tc.so.2"

int rk_iptc_load(rk_err *e)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static int loaded;
	pthread_mutex_lock(&mu);
	int rc = 0;
	if (!loaded) {
		struct rk_dlsym syms[] = {
#define RK_IPTC_SYM(f) {#f, (void **)&rk_iptc.f},
			RK_IPTC_SYMS(RK_IPTC_SYM)
#undef RK_IPTC_SYM
		};
		if (rk_dlopen_syms(SONAME, syms, sizeof syms / sizeof syms[0], "libip4tc2", "libiptc 1.8 or newer", e))
			loaded = 1; /* never unloaded: libiptc handles come from it */
		else
			rc = -1;
	}
	pthread_mutex_unlock(&mu);
	return rc;
}
