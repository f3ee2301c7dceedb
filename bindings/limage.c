/* limage.c — `riklet.image.c`: the exact parts of image handling, over core/image.h. Synchronous
 * (no waits). lua/riklet/image.lua (`riklet.image`) builds pull/unpack on top and re-exports these.
 * Misuse raises; expected failures return nil, message.
 *
 *   c.parse_ref(s) -> {registry=, repository=, tag=, digest=, layout=, canonical=, transport=, key=}
 *                     (strings; "" when absent; layout set only for "oci:/dir[:tag]" sources)
 *   c.layout_lookup(layout_dir, ref_name) -> "sha256:<hex>" | nil, err, missing:boolean
 *                     (missing is true when the layout or the tag is absent, false when damaged)
 *   c.layout_drop_untagged(layout_dir) -> number of untagged descriptors dropped | nil, err
 *   c.digest_key(digest) -> "sha256_<hex>" | nil, err
 *   c.digest_valid(s) -> boolean
 *   c.overlay_mount(lower, upper, work, target) -> true | nil, err
 *   c.overlay_umount(target) -> true | nil, err          (not mounted is success; busy detaches)
 *   c.is_mountpoint(path) -> boolean | nil, err
 *   c.tmpfs_mount(target, size_bytes | nil) -> true | nil, err   (mode 0777, nodev, nosuid)
 *   c.realpath(path) -> absolute path with no symbolic link, '.' or '..' | nil, err
 *
 * overlay_mount (mount(2) of overlayfs can take long on a busy disk) and layout_drop_untagged (an
 * fsynced rewrite of index.json) run on the worker pool and yield the calling task (lrk_offload);
 * outside a task they run right away. RIKLET_TEST_SLOW_IMAGE_MS=N (tests only) makes both sleep N ms
 * inside their job, wherever it runs, so a test can see whether the loop waits for them. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "image.h"
#include "lrk.h"

static void setstr(lua_State *L, const char *k, const char *v)
{
	lua_pushstring(L, v);
	lua_setfield(L, -2, k);
}

/* c.parse_ref(s) -> table | nil, err */
static int l_parse_ref(lua_State *L)
{
	const char *s = luaL_checkstring(L, 1);
	if (strlen(s) != lua_objlen(L, 1))
		return lrk_fail(L, "image reference contains a NUL byte");
	rk_image_ref r;
	rk_err e = {0};
	if (rk_image_ref_parse(s, &r, &e) < 0)
		return lrk_fail_err(L, &e);
	char buf[4096], key[512];
	if (rk_image_ref_key(&r, key, sizeof key, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, 0, 8);
	setstr(L, "registry", r.registry);
	setstr(L, "repository", r.repository);
	setstr(L, "tag", r.tag);
	setstr(L, "digest", r.digest);
	setstr(L, "layout", r.layout);
	rk_image_ref_format(&r, buf, sizeof buf);
	setstr(L, "canonical", buf);
	rk_image_ref_transport(&r, buf, sizeof buf);
	setstr(L, "transport", buf);
	setstr(L, "key", key);
	return 1;
}

/* c.layout_lookup(layout_dir, ref_name) -> digest | nil, err, missing */
static int l_layout_lookup(lua_State *L)
{
	const char *layout = luaL_checkstring(L, 1), *ref = luaL_checkstring(L, 2);
	char d[80];
	rk_err e = {0};
	if (rk_image_layout_lookup(layout, ref, d, sizeof d, &e) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, e.msg);
		lua_pushboolean(L, e.code == ENOENT);
		return 3;
	}
	lua_pushstring(L, d);
	return 1;
}

/* ---- the calls that wait on the disk, as worker pool jobs ---- */
struct imgjob {
	char *arg[4]; /* layout_dir | lower, upper, work, target */
	int rc, n;
	long slow_ms;
	rk_err e;
};

static struct imgjob *imgjob_new(lua_State *L, int nargs)
{
	const char *a[4] = {0};
	for (int i = 0; i < nargs; i++)
		a[i] = luaL_checkstring(L, i + 1);
	struct imgjob *j = calloc(1, sizeof *j);
	for (int i = 0; j && i < nargs; i++)
		if (!(j->arg[i] = strdup(a[i]))) {
			for (int k = 0; k < i; k++)
				free(j->arg[k]);
			free(j);
			j = NULL;
		}
	if (!j)
		luaL_error(L, "out of memory");
	const char *slow = getenv("RIKLET_TEST_SLOW_IMAGE_MS");
	j->slow_ms = slow ? strtol(slow, NULL, 10) : 0;
	return j;
}

static void imgjob_free(void *ud)
{
	struct imgjob *j = ud;
	for (int i = 0; i < 4; i++)
		free(j->arg[i]);
	free(j);
}

static void imgjob_slow(struct imgjob *j)
{
	if (j->slow_ms > 0) {
		struct timespec ts = {j->slow_ms / 1000, (j->slow_ms % 1000) * 1000000L};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}

static int imgjob_push_true(lua_State *L, void *ud)
{
	struct imgjob *j = ud;
	if (j->rc < 0)
		return lrk_fail_err(L, &j->e);
	lua_pushboolean(L, 1);
	return 1;
}

static int imgjob_push_n(lua_State *L, void *ud)
{
	struct imgjob *j = ud;
	if (j->rc < 0)
		return lrk_fail_err(L, &j->e);
	lua_pushinteger(L, j->n);
	return 1;
}

static void drop_untagged_work(void *ud)
{
	struct imgjob *j = ud;
	imgjob_slow(j);
	j->rc = rk_image_layout_drop_untagged(j->arg[0], &j->n, &j->e);
}

static void overlay_mount_work(void *ud)
{
	struct imgjob *j = ud;
	imgjob_slow(j);
	j->rc = rk_image_overlay_mount(j->arg[0], j->arg[1], j->arg[2], j->arg[3], &j->e);
}

/* c.layout_drop_untagged(layout_dir) -> number dropped | nil, err (yields in a task) */
static int l_layout_drop_untagged(lua_State *L)
{
	struct imgjob *j = imgjob_new(L, 1);
	return lrk_offload(L, j->arg[0], drop_untagged_work, imgjob_push_n, imgjob_free, j);
}

/* c.digest_key(digest) -> "sha256_<hex>" | nil, err */
static int l_digest_key(lua_State *L)
{
	char out[80];
	rk_err e = {0};
	if (rk_image_digest_key(luaL_checkstring(L, 1), out, sizeof out, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushstring(L, out);
	return 1;
}

/* c.digest_valid(s) -> boolean */
static int l_digest_valid(lua_State *L)
{
	lua_pushboolean(L, lua_type(L, 1) == LUA_TSTRING && rk_image_digest_valid(lua_tostring(L, 1)));
	return 1;
}

/* c.overlay_mount(lower, upper, work, target) -> true | nil, err (yields in a task) */
static int l_overlay_mount(lua_State *L)
{
	struct imgjob *j = imgjob_new(L, 4);
	return lrk_offload(L, j->arg[3], overlay_mount_work, imgjob_push_true, imgjob_free, j);
}

/* c.tmpfs_mount(target, size_bytes | nil) -> true | nil, err */
static int l_tmpfs_mount(lua_State *L)
{
	rk_err e = {0};
	lua_Number size = luaL_optnumber(L, 2, 0);
	if (size < 0 || size > 1125899906842624.0)
		return lrk_fail(L, "tmpfs size %.0f is out of range", size);
	if (rk_image_tmpfs_mount(luaL_checkstring(L, 1), (unsigned long long)size, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

/* c.overlay_umount(target) -> true | nil, err */
static int l_overlay_umount(lua_State *L)
{
	rk_err e = {0};
	if (rk_image_overlay_umount(luaL_checkstring(L, 1), &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

/* c.is_mountpoint(path) -> boolean | nil, err */
static int l_is_mountpoint(lua_State *L)
{
	rk_err e = {0};
	int r = rk_image_is_mountpoint(luaL_checkstring(L, 1), &e);
	if (r < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, r);
	return 1;
}

/* c.realpath(path) -> resolved | nil, err */
static int l_realpath(lua_State *L)
{
	size_t n;
	const char *p = luaL_checklstring(L, 1, &n);
	if (strlen(p) != n)
		return lrk_fail(L, "path holds a NUL byte");
	char buf[PATH_MAX];
	if (!realpath(p, buf))
		return lrk_fail(L, "%s: %s", p, strerror(errno));
	lua_pushstring(L, buf);
	return 1;
}

static int open_image_c(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"parse_ref", l_parse_ref},
		{"layout_lookup", l_layout_lookup},
		{"layout_drop_untagged", l_layout_drop_untagged},
		{"digest_key", l_digest_key},
		{"digest_valid", l_digest_valid},
		{"overlay_mount", l_overlay_mount},
		{"overlay_umount", l_overlay_umount},
		{"tmpfs_mount", l_tmpfs_mount},
		{"is_mountpoint", l_is_mountpoint},
		{"realpath", l_realpath},
		{NULL, NULL},
	};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.image.c", open_image_c)
