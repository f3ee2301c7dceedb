/* nl_lazy.c — dlopen libnl-route-3 on the first netlink socket (see nl_lazy.h for why). */
#define RK_NL_LAZY_IMPL
#include "nl_lazy.h"

struct rk_nl_api rk_nl;

#define SONAME "libnl-route-3.so.200"

int rk_nl_load(rk_err *e)
{
	static int loaded;
	if (loaded)
		return 0;
	struct rk_dlsym syms[] = {
#define RK_NL_SYM(f) {#f, (void **)&rk_nl.f},
		RK_NL_SYMS(RK_NL_SYM)
#undef RK_NL_SYM
	};
	/* libnl-route-3 needs libnl-3: dlopen loads both, and dlsym on the handle finds either's */
	if (!rk_dlopen_syms(SONAME, syms, sizeof syms / sizeof syms[0], "libnl-3-200 libnl-route-3-200",
			    "libnl 3.7 or newer", e))
		return -1;
	loaded = 1; /* never unloaded: the sockets and objects riklet holds come from it */
	return 0;
}
