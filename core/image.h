/* image.h — container images on disk: reference parsing, OCI layout lookup, cache naming and the
 * per-instance overlayfs rootfs. Pulling (skopeo) and unpacking (umoci) are driven from Lua
 * (lua/riklet/image.lua) over riklet.proc; this module holds the parts that must be exact. */
#ifndef RK_IMAGE_H
#define RK_IMAGE_H

#include <stddef.h>
#include "rk.h"

#define RK_IMAGE_NAME_MAX 255 /* registry + "/" + repository, as docker's reference grammar */
#define RK_IMAGE_TAG_MAX 128

/* A parsed image reference.
 *  - registry source ("alpine", "host:5000/a/b:tag", "x@sha256:<hex>"):
 *      layout[0] == 0; registry "docker.io" by default; repository "library/alpine" for docker.io
 *      single names; tag "latest" when neither tag nor digest is given (tag may be "" when only a
 *      digest was given); digest "sha256:<64 lowercase hex>" or "".
 *  - local OCI layout source ("oci:/abs/layout" or "oci:/abs/layout:tag"):
 *      layout = the absolute directory, tag = the ref name in it ("latest" if absent), registry and
 *      repository and digest empty. */
typedef struct rk_image_ref {
	char registry[RK_IMAGE_NAME_MAX + 1];
	char repository[RK_IMAGE_NAME_MAX + 1];
	char tag[RK_IMAGE_TAG_MAX + 1];
	char digest[7 + 64 + 1];
	char layout[1024];
} rk_image_ref;

/* Parse s into r. Returns 0, or -1 with e->msg naming what is wrong with the reference. */
int rk_image_ref_parse(const char *s, rk_image_ref *r, rk_err *e);

/* The canonical form: "docker.io/library/alpine:latest", "h:5000/a/b@sha256:…" (digest wins over
 * the tag; the tag is kept too when both were given), "oci:/abs/layout:tag". Returns the length
 * that was needed (snprintf semantics). */
int rk_image_ref_format(const rk_image_ref *r, char *buf, size_t n);

/* The skopeo transport source: "docker://h/a/b:tag", "docker://h/a/b@sha256:…", "oci:/dir:tag". */
int rk_image_ref_transport(const rk_image_ref *r, char *buf, size_t n);

/* A name safe as one path component identifying this reference (registry, repository and
 * tag/digest): every byte outside [A-Za-z0-9.-] is escaped as "_xx" (injective); names longer
 * than 200 bytes are cut and suffixed with a 64-bit hash of the whole. Returns 0 or -1. */
int rk_image_ref_key(const rk_image_ref *r, char *buf, size_t n, rk_err *e);

/* Read <layout>/index.json and find the descriptor whose annotation
 * "org.opencontainers.image.ref.name" equals ref_name. Writes its digest ("sha256:<hex>",
 * validated) into digest (n >= 72). Returns 0, or -1 (e->code ENOENT when the layout or the tag
 * is absent, so callers can tell "not pulled yet" from a damaged layout). */
int rk_image_layout_lookup(const char *layout, const char *ref_name, char *digest, size_t n, rk_err *e);

/* Rewrite <layout>/index.json (atomically) without the descriptors that carry no
 * "org.opencontainers.image.ref.name": skopeo keeps a replaced image there, untagged, which keeps
 * its blobs alive through `umoci gc`. *removed (may be NULL) gets how many were dropped. */
int rk_image_layout_drop_untagged(const char *layout, int *removed, rk_err *e);

/* "sha256:<64 hex>" → "sha256_<64 hex>" (a path component). Anything else is refused. */
int rk_image_digest_key(const char *digest, char *out, size_t n, rk_err *e);
/* Is digest a well-formed "sha256:<64 lowercase hex>"? */
int rk_image_digest_valid(const char *digest);

/* Mount an overlayfs at target: lowerdir read-only, upperdir and workdir writable (same
 * filesystem, created if missing). The paths must be absolute and free of ',' ':' and '\\'
 * (overlayfs option separators). Returns 0, or -1 (EBUSY when target is already a mount point). */
int rk_image_overlay_mount(const char *lower, const char *upper, const char *work, const char *target, rk_err *e);

/* Mount a tmpfs at target (an existing directory, not a mount point yet): mode 0777, nodev, nosuid,
 * at most size bytes (0: the kernel's default, half the RAM). For Pod emptyDir volumes of medium
 * Memory. Returns 0 or -1. */
int rk_image_tmpfs_mount(const char *target, unsigned long long size, rk_err *e);

/* Unmount target; a busy mount is detached (MNT_DETACH) instead. Not mounted (or absent) is
 * success. Returns 0 or -1. */
int rk_image_overlay_umount(const char *target, rk_err *e);

/* 1 if path is the root of a mount, 0 if not (or absent), -1 on error. */
int rk_image_is_mountpoint(const char *path, rk_err *e);

#endif
