/* netlock.h — a lock scoped to the network namespace: an abstract unix socket name, held for the
 * life of the process (the kernel releases it however the process ends) and invisible from other
 * network namespaces. riklet takes one while it manages the Pod network (bridge, RIKLET-* chains),
 * so a second riklet in the same namespace is refused instead of removing the first's networking. */
#ifndef RK_NETLOCK_H
#define RK_NETLOCK_H

#include <stddef.h>
#include "rk.h"

/* Take the lock NAME (printable, at most 60 bytes) and publish INFO beside it (what a refused
 * process is told: "pid 12, state dir /var/lib/riklet"). Returns 0 (also when this process already
 * holds it), or -1 with e filled: e->code EADDRINUSE when another process holds it, and then
 * holder gets its INFO ("" when it published none). The sockets are close-on-exec: children
 * (conmon outlives riklet) never inherit the lock. */
int rk_netlock_take(const char *name, const char *info, char *holder, size_t holdersz, rk_err *e);

#endif
