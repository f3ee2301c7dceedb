/* netlock.c — a network-namespace-wide lock on abstract unix socket names (see netlock.h). */
#include "netlock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define OWNER_SEP "/owner/"

static char held_name[64];

/* Bind an abstract name: -1 with errno on failure, else the fd (kept open for good). */
static int bind_abstract(const char *name)
{
	struct sockaddr_un a;
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	size_t n = strlen(name);
	if (n > sizeof a.sun_path - 1)
		n = sizeof a.sun_path - 1;
	memcpy(a.sun_path + 1, name, n); /* sun_path[0] = 0: the abstract namespace */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* The INFO published next to NAME, from this namespace's /proc/net/unix ("@NAME/owner/INFO"). */
static void find_holder(const char *name, char *out, size_t outsz)
{
	out[0] = 0;
	FILE *f = fopen("/proc/net/unix", "re");
	if (!f)
		return;
	char prefix[128], line[512];
	int pl = snprintf(prefix, sizeof prefix, "@%s" OWNER_SEP, name);
	while (fgets(line, sizeof line, f)) {
		char *p = strstr(line, prefix);
		if (!p)
			continue;
		p += pl;
		p[strcspn(p, "\n")] = 0;
		snprintf(out, outsz, "%s", p);
		break;
	}
	fclose(f);
}

int rk_netlock_take(const char *name, const char *info, char *holder, size_t holdersz, rk_err *e)
{
	if (holder && holdersz)
		holder[0] = 0;
	if (!name || !*name || strlen(name) >= sizeof held_name)
		return rk_errf(e, EINVAL, "bad network lock name");
	if (!strcmp(held_name, name))
		return 0;
	if (bind_abstract(name) < 0) {
		int err = errno;
		if (err == EADDRINUSE && holder && holdersz)
			find_holder(name, holder, holdersz);
		return rk_errf(e, err, "cannot take the network namespace lock @%s: %s", name, strerror(err));
	}
	char oname[128];
	snprintf(oname, sizeof oname, "%s" OWNER_SEP "%s", name, info ? info : "");
	if (bind_abstract(oname) < 0) /* only the message of a refused riklet is poorer for it */
		rk_debug("net", "cannot publish the network lock's owner @%s: %s", oname, strerror(errno));
	snprintf(held_name, sizeof held_name, "%s", name);
	return 0;
}
