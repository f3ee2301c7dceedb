/* nl_lazy.c — dlopen libnl-route-3 on the first netlink socket (see nl_lazy.h for why). */
#define RK_NL_LAZY_IMPL
#include "nl_lazy.h"

#include <dlfcn.h>
#include <errno.h>

struct rk_nl_api rk_nl;

#define SONAME "libnl-route-3.so.200"

int rk_nl_load(rk_err *e)
{
	static int loaded;
	if (loaded)
		return 0;
	/* libnl-route-3 needs libnl-3: dlopen loads both, and dlsym on the handle finds either's */
	void *h = dlopen(SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return rk_errf(e, ENOENT,
			       "netlink: cannot load libnl (%s): %s; install it with: apt-get install libnl-3-200 "
			       "libnl-route-3-200",
			       SONAME, dlerror());
	struct {
		const char *name;
		void **slot;
	} syms[] = {
#define RK_NL_SYM(f) {#f, (void **)&rk_nl.f},
		RK_NL_SYMS(RK_NL_SYM)
#undef RK_NL_SYM
	};
	for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
		*syms[i].slot = dlsym(h, syms[i].name);
		if (!*syms[i].slot) {
			dlclose(h);
			return rk_errf(e, ENOSYS, "netlink: %s has no %s: riklet needs libnl 3.7 or newer", SONAME,
				       syms[i].name);
		}
	}
	loaded = 1; /* never unloaded: the sockets and objects riklet holds come from it */
	return 0;
}
