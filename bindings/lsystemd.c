/* lsystemd.c — `riklet.systemd`: readiness and status for the service manager (sd_notify(3)).
 *
 *   systemd.notify(state) -> true | false (not run by a service manager) | nil, err
 *       state: "READY=1", "STOPPING=1", "STATUS=...", several separated by newlines.
 *
 * libsystemd's sd_notify rather than a hand-written NOTIFY_SOCKET datagram: it handles abstract
 * and path sockets, passes credentials, and follows the protocol as systemd changes it; libsystemd0
 * is on every Debian system (Priority: required). Without NOTIFY_SOCKET it does nothing. */
#include <errno.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "lrk.h"

static int l_notify(lua_State *L)
{
	const char *s = luaL_checkstring(L, 1);
	int r = sd_notify(0, s);
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
