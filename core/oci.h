/* oci.h — OCI runtime bundles: generate an instance's config.json from the image's template
 * (written by `umoci unpack`) and parse `runc state`. The runc CLI itself is driven from Lua
 * (lua/riklet/runc.lua) over riklet.proc, so that every wait yields. */
#ifndef RK_OCI_H
#define RK_OCI_H

#include <stdint.h>
#include "rk.h"

typedef struct rk_oci_mount {
	const char *source;	 /* absolute host path (ignored for a tmpfs) */
	const char *destination; /* absolute path in the container */
	int readonly;
	int tmpfs; /* a fresh tmpfs (nosuid, nodev, mode 1777) instead of a bind mount */
} rk_oci_mount;

/* What to change in a config.json. NULL / 0 fields keep the template's value. */
typedef struct rk_oci_edit {
	const char *const *args; /* NULL-terminated; replaces process.args (the image's entrypoint+cmd) */
	const char *const *env;	 /* NULL-terminated "K=V"; overrides the template's entry of the same K,
				    others are appended in order */
	const char *hostname;
	const char *root_path;	    /* absolute path of the instance's rootfs (the overlay) */
	const char *netns_path;	    /* join this network namespace (e.g. /run/netns/X) */
	const char *cgroups_path;   /* linux.cgroupsPath */
	const char *cwd;	    /* process.cwd (absolute) */
	const rk_oci_mount *mounts; /* extra bind or tmpfs mounts */
	size_t nmounts;
	int64_t memory_limit; /* bytes; 0 = no limit */
	int64_t cpu_quota;    /* microseconds per period; 0 = no limit */
	uint64_t cpu_period;  /* microseconds; 0 = 100000 when cpu_quota is set */
	int has_uid, has_gid; /* set process.user.uid / gid (a gid drops additionalGids) */
	uint32_t uid, gid;
} rk_oci_edit;

/* Always applied as well: root.readonly=false, process.terminal=false, user namespace and
 * uid/gid mappings removed (umoci --rootless leftovers; riklet runs as root).
 * Reads template (≤ 4 MiB), writes out atomically (0644). template == out edits in place.
 * Returns 0 or -1 with e->msg naming the file and the field. */
int rk_oci_config_edit(const char *template_path, const char *out_path, const rk_oci_edit *ed, rk_err *e);

/* `runc state ID` output. */
typedef struct rk_oci_state {
	char id[256];
	int pid;	 /* 0 when stopped */
	char status[32]; /* creating | created | running | paused | stopped */
	char bundle[4096];
	char created[64]; /* RFC 3339 */
} rk_oci_state;

/* Parse runc's state JSON. Returns 0 or -1 (malformed). */
int rk_oci_state_parse(const char *json, rk_oci_state *st, rk_err *e);

#endif
