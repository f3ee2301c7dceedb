/* image.c — image references (docker's grammar, normalised like docker), OCI layout index lookup,
 * cache naming, and the per-instance overlayfs rootfs. */
#include "image.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

#define REF_INPUT_MAX 2048

static int is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
static int is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}
static int is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int rk_image_digest_valid(const char *d)
{
	if (!d || strncmp(d, "sha256:", 7))
		return 0;
	for (int i = 0; i < 64; i++)
		if (!is_hex(d[7 + i]))
			return 0;
	return d[71] == 0;
}

static int check_digest(const char *d, rk_err *e)
{
	const char *colon = strchr(d, ':');
	if (!colon)
		return rk_errf(e, EINVAL, "digest '%s' is not of the form sha256:<64 hex digits>", d);
	if ((size_t)(colon - d) != 6 || strncmp(d, "sha256", 6))
		return rk_errf(e, EINVAL, "digest algorithm '%.*s' is not supported (only sha256)",
			       (int)(colon - d > 32 ? 32 : colon - d), d);
	size_t n = strlen(colon + 1);
	if (n != 64)
		return rk_errf(e, EINVAL, "sha256 digest has %zu hex digits, expected 64", n);
	for (size_t i = 0; i < 64; i++)
		if (!is_hex(colon[1 + i]))
			return rk_errf(e, EINVAL,
				       "sha256 digest must be 64 lowercase hex digits (bad character at %zu)", i);
	return 0;
}

/* docker tag grammar: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static int check_tag(const char *t, rk_err *e)
{
	size_t n = strlen(t);
	if (n == 0)
		return rk_errf(e, EINVAL, "empty tag after ':'");
	if (n > RK_IMAGE_TAG_MAX)
		return rk_errf(e, EINVAL, "tag is %zu characters long (max %d)", n, RK_IMAGE_TAG_MAX);
	if (!(is_alnum(t[0]) || t[0] == '_'))
		return rk_errf(e, EINVAL, "tag '%s' must start with a letter, digit or '_'", t);
	for (size_t i = 1; i < n; i++)
		if (!(is_alnum(t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-'))
			return rk_errf(e, EINVAL, "tag '%s' contains '%c' (allowed: letters, digits, '_', '.', '-')", t,
				       t[i]);
	return 0;
}

/* registry host: DNS labels separated by '.', optional ":port" (1..65535). */
static int check_domain(const char *d, rk_err *e)
{
	if (d[0] == '[')
		return rk_errf(e, EINVAL, "registry '%s': IPv6 addresses are not supported, use a host name", d);
	const char *colon = strchr(d, ':');
	size_t hlen = colon ? (size_t)(colon - d) : strlen(d);
	if (hlen == 0)
		return rk_errf(e, EINVAL, "registry '%s' has an empty host name", d);
	size_t label = 0;
	for (size_t i = 0; i < hlen; i++) {
		char c = d[i];
		if (c == '.') {
			if (label == 0 || d[i - 1] == '-')
				return rk_errf(e, EINVAL, "registry host '%.*s' has an empty or malformed label",
					       (int)hlen, d);
			label = 0;
			continue;
		}
		if (!(is_alnum(c) || c == '-'))
			return rk_errf(e, EINVAL, "registry host '%.*s' contains '%c'", (int)hlen, d, c);
		if (c == '-' && label == 0)
			return rk_errf(e, EINVAL, "registry host '%.*s' has a label starting with '-'", (int)hlen, d);
		label++;
	}
	if (label == 0 || d[hlen - 1] == '-')
		return rk_errf(e, EINVAL, "registry host '%.*s' has an empty or malformed label", (int)hlen, d);
	if (colon) {
		const char *p = colon + 1;
		long port = 0;
		if (!*p)
			return rk_errf(e, EINVAL, "registry '%s' has an empty port after ':'", d);
		for (; *p; p++) {
			if (*p < '0' || *p > '9' || port > 65535)
				return rk_errf(e, EINVAL, "registry '%s' has an invalid port", d);
			port = port * 10 + (*p - '0');
		}
		if (port < 1 || port > 65535)
			return rk_errf(e, EINVAL, "registry '%s': port must be 1..65535", d);
	}
	return 0;
}

/* repository path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static int check_component(const char *c, size_t n, rk_err *e)
{
	if (n == 0)
		return rk_errf(e, EINVAL, "repository has an empty path component (double or trailing '/')");
	for (size_t i = 0; i < n; i++) {
		if (c[i] >= 'A' && c[i] <= 'Z')
			return rk_errf(e, EINVAL, "repository name '%.*s' must be lowercase", (int)n, c);
		if (!(is_lower_alnum(c[i]) || c[i] == '.' || c[i] == '_' || c[i] == '-'))
			return rk_errf(
				e, EINVAL,
				"repository component '%.*s' contains '%c' (allowed: lowercase letters, digits, '.', "
				"'_', '-')",
				(int)n, c, c[i]);
	}
	if (!is_lower_alnum(c[0]) || !is_lower_alnum(c[n - 1]))
		return rk_errf(e, EINVAL,
			       "repository component '%.*s' must start and end with a lowercase letter or digit",
			       (int)n, c);
	for (size_t i = 1; i < n;) {
		if (is_lower_alnum(c[i])) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && !is_lower_alnum(c[j]))
			j++;
		size_t sl = j - i;
		int okay = (sl == 1 && (c[i] == '.' || c[i] == '_')) || (sl == 2 && c[i] == '_' && c[i + 1] == '_');
		if (!okay) {
			okay = 1;
			for (size_t k = i; k < j; k++)
				if (c[k] != '-')
					okay = 0;
		}
		if (!okay)
			return rk_errf(
				e, EINVAL,
				"repository component '%.*s' contains '%.*s' (allowed: lowercase letters, digits, "
				"and single '.', '_', '__' or dashes between them)",
				(int)n, c, (int)sl, c + i);
		i = j;
	}
	return 0;
}

static int check_layout_path(const char *p, rk_err *e)
{
	size_t n = strlen(p);
	if (p[0] != '/')
		return rk_errf(e, EINVAL, "oci layout path '%s' must be absolute", p);
	if (n >= sizeof(((rk_image_ref *)0)->layout))
		return rk_errf(e, ENAMETOOLONG, "oci layout path is %zu bytes long (max %zu)", n,
			       sizeof(((rk_image_ref *)0)->layout) - 1);
	for (size_t i = 0; i < n; i++)
		if (!(is_alnum(p[i]) || p[i] == '/' || p[i] == '.' || p[i] == '_' || p[i] == '-' || p[i] == '+'))
			return rk_errf(e, EINVAL,
				       "oci layout path '%s' contains '%c' (allowed: letters, digits, / . _ - +)", p,
				       p[i]);
	/* no "." or ".." components, no empty components */
	const char *s = p + 1;
	while (*s) {
		const char *slash = strchr(s, '/');
		size_t cl = slash ? (size_t)(slash - s) : strlen(s);
		if ((cl == 1 && s[0] == '.') || (cl == 2 && s[0] == '.' && s[1] == '.'))
			return rk_errf(e, EINVAL, "oci layout path '%s' must not contain '.' or '..' components", p);
		if (cl == 0 && slash)
			return rk_errf(e, EINVAL, "oci layout path '%s' contains '//'", p);
		s += cl + (slash ? 1 : 0);
	}
	return 0;
}

int rk_image_ref_parse(const char *s, rk_image_ref *r, rk_err *e)
{
	memset(r, 0, sizeof *r);
	if (!s || !*s)
		return rk_errf(e, EINVAL, "empty image reference");
	size_t n = strnlen(s, REF_INPUT_MAX + 1);
	if (n > REF_INPUT_MAX)
		return rk_errf(e, EINVAL, "image reference is longer than %d bytes", REF_INPUT_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f)
			return rk_errf(e, EINVAL, "image reference contains a forbidden byte 0x%02x at offset %zu", c,
				       i);
	}
	char buf[REF_INPUT_MAX + 1];
	memcpy(buf, s, n + 1);

	if (!strncmp(buf, "oci:", 4)) {
		char *path = buf + 4;
		char *lastslash = strrchr(path, '/');
		char *colon = strrchr(path, ':');
		if (colon && (!lastslash || colon > lastslash)) {
			*colon = 0;
			if (check_tag(colon + 1, e) < 0)
				return rk_err_prefix(e, "image '%.200s'", s);
			snprintf(r->tag, sizeof r->tag, "%s", colon + 1);
		} else {
			snprintf(r->tag, sizeof r->tag, "latest");
		}
		if (check_layout_path(path, e) < 0)
			return rk_err_prefix(e, "image '%.200s'", s);
		if (strlen(path) > 1 && path[strlen(path) - 1] == '/')
			path[strlen(path) - 1] = 0;
		snprintf(r->layout, sizeof r->layout, "%s", path);
		return 0;
	}
	if (strstr(buf, "://"))
		return rk_errf(e, EINVAL,
			       "image '%.200s': a reference has no scheme (write host/name:tag, or oci:/path:tag)", s);

	char *at = strchr(buf, '@');
	if (at) {
		*at = 0;
		if (strchr(at + 1, '@'))
			return rk_errf(e, EINVAL, "image '%.200s' has more than one '@'", s);
		if (check_digest(at + 1, e) < 0)
			return rk_err_prefix(e, "image '%.200s'", s);
		snprintf(r->digest, sizeof r->digest, "%s", at + 1);
	}
	char *name = buf;
	char *lastslash = strrchr(name, '/');
	char *colon = strrchr(name, ':');
	if (colon && (!lastslash || colon > lastslash)) {
		*colon = 0;
		if (check_tag(colon + 1, e) < 0)
			return rk_err_prefix(e, "image '%.200s'", s);
		snprintf(r->tag, sizeof r->tag, "%s", colon + 1);
	}
	if (!*name)
		return rk_errf(e, EINVAL, "image '%.200s' has no repository name", s);

	char *repo = name;
	char *slash = strchr(name, '/');
	if (slash) {
		size_t fl = (size_t)(slash - name);
		int is_domain =
			memchr(name, '.', fl) || memchr(name, ':', fl) || (fl == 9 && !strncmp(name, "localhost", 9));
		if (is_domain) {
			*slash = 0;
			if (check_domain(name, e) < 0)
				return rk_err_prefix(e, "image '%.200s'", s);
			if (strlen(name) > RK_IMAGE_NAME_MAX)
				return rk_errf(e, EINVAL, "image '%.200s': registry name is too long", s);
			const char *reg = !strcmp(name, "index.docker.io") || !strcmp(name, "registry-1.docker.io")
				? "docker.io"
				: name;
			memcpy(r->registry, reg, strlen(reg) + 1); /* length checked above */
			repo = slash + 1;
		}
	}
	if (!r->registry[0])
		snprintf(r->registry, sizeof r->registry, "docker.io");
	/* components */
	for (const char *c = repo;;) {
		const char *sl = strchr(c, '/');
		size_t cl = sl ? (size_t)(sl - c) : strlen(c);
		if (cl && memchr(c, ':', cl))
			return rk_errf(e, EINVAL,
				       "image '%.200s': ':' is only allowed before the tag or in a registry port", s);
		if (check_component(c, cl, e) < 0)
			return rk_err_prefix(e, "image '%.200s'", s);
		if (!sl)
			break;
		c = sl + 1;
	}
	int library = !strcmp(r->registry, "docker.io") && !strchr(repo, '/');
	size_t total = strlen(r->registry) + 1 + (library ? 8 : 0) + strlen(repo);
	if (total > RK_IMAGE_NAME_MAX)
		return rk_errf(e, EINVAL, "image '%.200s': name is %zu characters long (max %d)", s, total,
			       RK_IMAGE_NAME_MAX);
	/* fits: total <= RK_IMAGE_NAME_MAX was checked above */
	size_t off = library ? 8 : 0;
	memcpy(r->repository, "library/", off);
	memcpy(r->repository + off, repo, strlen(repo) + 1);
	if (!r->tag[0] && !r->digest[0])
		snprintf(r->tag, sizeof r->tag, "latest");
	return 0;
}

int rk_image_ref_format(const rk_image_ref *r, char *buf, size_t n)
{
	if (r->layout[0])
		return snprintf(buf, n, "oci:%s:%s", r->layout, r->tag);
	return snprintf(buf, n, "%s/%s%s%s%s%s", r->registry, r->repository, r->tag[0] ? ":" : "", r->tag,
			r->digest[0] ? "@" : "", r->digest);
}

int rk_image_ref_transport(const rk_image_ref *r, char *buf, size_t n)
{
	if (r->layout[0])
		return snprintf(buf, n, "oci:%s:%s", r->layout, r->tag);
	if (r->digest[0])
		return snprintf(buf, n, "docker://%s/%s@%s", r->registry, r->repository, r->digest);
	return snprintf(buf, n, "docker://%s/%s:%s", r->registry, r->repository, r->tag);
}

static uint64_t fnv1a64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

int rk_image_ref_key(const rk_image_ref *r, char *buf, size_t n, rk_err *e)
{
	char canon[2048];
	rk_image_ref_format(r, canon, sizeof canon);
	char out[sizeof canon * 3 + 1];
	size_t o = 0;
	static const char hex[] = "0123456789abcdef";
	for (const char *p = canon; *p && o + 4 < sizeof out; p++) {
		unsigned char c = (unsigned char)*p;
		if (is_alnum((char)c) || c == '.' || c == '-') {
			out[o++] = (char)c;
		} else {
			out[o++] = '_';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = 0;
	if (o > 200)
		snprintf(out + 180, sizeof out - 180, "-%016llx", (unsigned long long)fnv1a64(canon));
	if (out[0] == '.') /* never "." or ".." or a hidden name */
		out[0] = '_';
	if (snprintf(buf, n, "%s", out) >= (int)n)
		return rk_errf(e, ENAMETOOLONG, "buffer too small for the image key");
	return 0;
}

int rk_image_digest_key(const char *digest, char *out, size_t n, rk_err *e)
{
	if (!rk_image_digest_valid(digest))
		return rk_errf(e, EINVAL, "'%.100s' is not a valid sha256 digest (sha256:<64 lowercase hex>)",
			       digest ? digest : "(null)");
	if (n < 72)
		return rk_errf(e, ENAMETOOLONG, "buffer too small for a digest key");
	snprintf(out, n, "sha256_%s", digest + 7);
	return 0;
}

int rk_image_layout_lookup(const char *layout, const char *ref_name, char *digest, size_t n, rk_err *e)
{
	char path[4096];
	if (snprintf(path, sizeof path, "%s/index.json", layout) >= (int)sizeof path)
		return rk_errf(e, ENAMETOOLONG, "layout path too long: %s", layout);
	RK_AUTOFREE char *text = NULL;
	if (rk_read_file(path, 16 << 20, &text, NULL, e) < 0)
		return -1; /* e->code ENOENT when the layout does not exist yet */
	cJSON *root = cJSON_Parse(text);
	if (!root)
		return rk_errf(e, EBADMSG, "%s is not valid JSON (damaged OCI layout; remove %s to pull again)", path,
			       layout);
	int rc = rk_errf(e, ENOENT, "tag '%s' not found in OCI layout %s", ref_name, layout);
	cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "manifests");
	if (!cJSON_IsArray(m)) {
		rc = rk_errf(e, EBADMSG, "%s has no \"manifests\" array (damaged OCI layout; remove %s to pull again)",
			     path, layout);
		goto out;
	}
	cJSON *d;
	cJSON_ArrayForEach(d, m)
	{
		cJSON *ann = cJSON_GetObjectItemCaseSensitive(d, "annotations");
		cJSON *rn = cJSON_GetObjectItemCaseSensitive(ann, "org.opencontainers.image.ref.name");
		if (!cJSON_IsString(rn) || strcmp(rn->valuestring, ref_name))
			continue;
		cJSON *dg = cJSON_GetObjectItemCaseSensitive(d, "digest");
		if (!cJSON_IsString(dg) || !rk_image_digest_valid(dg->valuestring)) {
			rc = rk_errf(e, EBADMSG, "%s: tag '%s' has a missing or unsupported digest", path, ref_name);
			goto out;
		}
		if (n < 72) {
			rc = rk_errf(e, ENAMETOOLONG, "buffer too small for a digest");
			goto out;
		}
		snprintf(digest, n, "%s", dg->valuestring);
		rc = 0;
		break;
	}
out:
	cJSON_Delete(root);
	return rc;
}

int rk_image_layout_drop_untagged(const char *layout, int *removed, rk_err *e)
{
	char path[4096];
	if (removed)
		*removed = 0;
	if (snprintf(path, sizeof path, "%s/index.json", layout) >= (int)sizeof path)
		return rk_errf(e, ENAMETOOLONG, "layout path too long: %s", layout);
	RK_AUTOFREE char *text = NULL;
	if (rk_read_file(path, 16 << 20, &text, NULL, e) < 0)
		return -1;
	cJSON *root = cJSON_Parse(text);
	cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "manifests");
	if (!cJSON_IsArray(m)) {
		cJSON_Delete(root);
		return rk_errf(e, EBADMSG, "%s is not a valid OCI index (damaged layout; remove %s to pull again)",
			       path, layout);
	}
	int n = 0;
	for (int i = cJSON_GetArraySize(m) - 1; i >= 0; i--) {
		cJSON *ann = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(m, i), "annotations");
		if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ann, "org.opencontainers.image.ref.name"))) {
			cJSON_DeleteItemFromArray(m, i);
			n++;
		}
	}
	int rc = 0;
	if (n) {
		char *out = cJSON_PrintUnformatted(root);
		rc = out ? rk_write_file_atomic(path, out, strlen(out), 0644, e)
			 : rk_errf(e, ENOMEM, "out of memory printing %s", path);
		free(out);
	}
	cJSON_Delete(root);
	if (rc == 0 && removed)
		*removed = n;
	return rc;
}

/* ---- overlayfs ---- */

int rk_image_is_mountpoint(const char *path, rk_err *e)
{
	struct statx sx;
	if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return rk_errf(e, errno, "cannot stat %s: %s", path, strerror(errno));
	}
	if (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
		return (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT) ? 1 : 0;
	/* old kernels: a different device than the parent's */
	char parent[4096];
	if (snprintf(parent, sizeof parent, "%s/..", path) >= (int)sizeof parent)
		return rk_errf(e, ENAMETOOLONG, "path too long: %s", path);
	struct stat a, b;
	if (lstat(path, &a) < 0 || stat(parent, &b) < 0)
		return rk_errf(e, errno, "cannot stat %s: %s", path, strerror(errno));
	return a.st_dev != b.st_dev || a.st_ino == b.st_ino;
}

static int check_overlay_path(const char *what, const char *p, rk_err *e)
{
	if (!p || p[0] != '/')
		return rk_errf(e, EINVAL, "overlay %s '%s' must be an absolute path", what, p ? p : "(null)");
	if (strpbrk(p, ",:\\"))
		return rk_errf(e, EINVAL, "overlay %s '%s' must not contain ',' ':' or '\\'", what, p);
	if (strlen(p) > 1024)
		return rk_errf(e, ENAMETOOLONG, "overlay %s path is too long", what);
	return 0;
}

int rk_image_overlay_mount(const char *lower, const char *upper, const char *work, const char *target, rk_err *e)
{
	if (check_overlay_path("lowerdir", lower, e) < 0 || check_overlay_path("upperdir", upper, e) < 0 ||
	    check_overlay_path("workdir", work, e) < 0 || check_overlay_path("target", target, e) < 0)
		return -1;
	struct stat st;
	if (stat(lower, &st) < 0)
		return rk_errf(e, errno, "image rootfs %s: %s (the image cache is damaged; remove it to unpack again)",
			       lower, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return rk_errf(e, ENOTDIR, "image rootfs %s is not a directory", lower);
	if (rk_mkdir_p(upper, 0755, e) < 0 || rk_mkdir_p(work, 0700, e) < 0 || rk_mkdir_p(target, 0755, e) < 0)
		return rk_err_prefix(e, "preparing overlay at %s", target);
	int mp = rk_image_is_mountpoint(target, e);
	if (mp < 0)
		return -1;
	if (mp)
		return rk_errf(e, EBUSY, "%s is already a mount point (unmount it first)", target);
	char opts[4096];
	if (snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work) >= (int)sizeof opts)
		return rk_errf(e, ENAMETOOLONG, "overlay options too long for %s", target);
	if (mount("overlay", target, "overlay", MS_NODEV, opts) < 0) {
		int err = errno;
		const char *hint = err == EPERM ? " (riklet must run as root)"
			: err == ENODEV		? " (the overlay filesystem is not available: modprobe overlay)"
			: err == EINVAL		? " (upper and work dirs must be on the same filesystem, not on "
						  "overlayfs; see dmesg)"
						: "";
		return rk_errf(e, err, "cannot mount overlay on %s (lower %s, upper %s): %s%s", target, lower, upper,
			       strerror(err), hint);
	}
	return 0;
}

int rk_image_tmpfs_mount(const char *target, unsigned long long size, rk_err *e)
{
	if (!target || target[0] != '/')
		return rk_errf(e, EINVAL, "tmpfs target '%s' must be an absolute path", target ? target : "(null)");
	int mp = rk_image_is_mountpoint(target, e);
	if (mp < 0)
		return -1;
	if (mp)
		return rk_errf(e, EBUSY, "%s is already a mount point (unmount it first)", target);
	char opts[64];
	if (size)
		snprintf(opts, sizeof opts, "mode=0777,size=%llu", size);
	else
		snprintf(opts, sizeof opts, "mode=0777");
	if (mount("tmpfs", target, "tmpfs", MS_NODEV | MS_NOSUID, opts) < 0) {
		int err = errno;
		return rk_errf(e, err, "cannot mount a tmpfs (%s) on %s: %s%s", opts, target, strerror(err),
			       err == EPERM ? " (riklet must run as root)" : "");
	}
	return 0;
}

int rk_image_overlay_umount(const char *target, rk_err *e)
{
	for (int i = 0; i < 16; i++) {
		int mp = rk_image_is_mountpoint(target, e);
		if (mp <= 0)
			return mp;
		if (umount2(target, UMOUNT_NOFOLLOW) == 0)
			continue;
		int err = errno;
		if (err == EINVAL || err == ENOENT)
			return 0;
		if (err == EBUSY) {
			rk_warn("image", "%s is busy, detaching it (lazy unmount)", target);
			if (umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
				continue;
			err = errno;
		}
		return rk_errf(e, err, "cannot unmount %s: %s", target, strerror(err));
	}
	return rk_errf(e, EBUSY, "%s is still a mount point after 16 unmounts", target);
}
