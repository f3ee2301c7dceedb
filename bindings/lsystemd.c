/* lsystemd.c — `riklet.systemd`: readiness and status for the service manager (sd_notify(3)).
 *
 *   systemd.notify(state) -> true | false (not run by a service manager) | nil, err
 *       state: "READY=1", "STOPPING=1", "STATUS=...", several separated by newlines.
 *
 * libsystemd's sd_notify rather than a hand-written NOTIFY_SOCKET datagram: it handles abstract
 * and path sockets, passes credentials, and follows the protocol as systemd changes it; libsystemd0
 * is on every Debian system (Priority: required). Without NOTIFY_SOCKET it does nothing.
 *
 * libsystemd is loaded with dlopen for each notification and closed after it (riklet sends two in
 * its life: READY=1 and STOPPING=1), and not at all without NOTIFY_SOCKET: linked, it and the six
 * libraries it needs (libgcrypt, libzstd, liblzma, ...) sat in riklet's memory for good, about
 * 1 MiB resident (tests/bench/bench_mem.sh). */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "lrk.h"

static int l_notify(lua_State *L)
{
	const char *s = luaL_checkstring(L, 1);
	const char *sock = getenv("NOTIFY_SOCKET");
	if (!sock || !*sock) { /* what sd_notify answers then: not run by a service manager */
		lua_pushboolean(L, 0);
		return 1;
	}
	void *h = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return lrk_fail(L,
				"cannot notify the service manager (NOTIFY_SOCKET): cannot load libsystemd.so.0 (%s); "
				"install libsystemd0",
				dlerror());
	__typeof__(sd_notify) *notify = (__typeof__(sd_notify) *)dlsym(h, "sd_notify");
	int r = notify ? notify(0, s) : -ENOSYS;
	dlclose(h);
	if (r < 0)
		return lrk_fail(L, "cannot notify the service manager (NOTIFY_SOCKET): %s", strerror(-r));
	lua_pushboolean(L, r > 0);
	return 1;
}

static int open_systemd(lua_State *L)
{
	static const luaL_Reg fns[] = {{"notify", l_notify}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.systemd", open_systemd)
