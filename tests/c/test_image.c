/* test_image.c — image references, OCI layout lookup, cache keys, overlay mount/umount. */
#include "image.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *H64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static void good(const char *in, const char *reg, const char *repo, const char *tag, const char *dig)
{
	rk_image_ref r;
	rk_err e = {0};
	int rc = rk_image_ref_parse(in, &r, &e);
	ok(rc == 0, "parse '%s'%s%s", in, rc ? ": " : "", rc ? e.msg : "");
	if (rc)
		return;
	is_str(r.registry, reg, "  registry of '%s'", in);
	is_str(r.repository, repo, "  repository of '%s'", in);
	is_str(r.tag, tag, "  tag of '%s'", in);
	is_str(r.digest, dig, "  digest of '%s'", in);
}

static void bad(const char *in, const char *needle)
{
	rk_image_ref r;
	rk_err e = {0};
	int rc = rk_image_ref_parse(in, &r, &e);
	ok(rc < 0 && strstr(e.msg, needle), "refuse '%.60s' (%s)", in, rc < 0 ? e.msg : "accepted!");
}

static void write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	fputs(s, f);
	fclose(f);
}

int main(void)
{
	char dig[80], buf[4096];
	snprintf(dig, sizeof dig, "sha256:%s", H64);

	good("alpine", "docker.io", "library/alpine", "latest", "");
	good("alpine:3.19", "docker.io", "library/alpine", "3.19", "");
	good("user/app", "docker.io", "user/app", "latest", "");
	good("docker.io/alpine", "docker.io", "library/alpine", "latest", "");
	good("index.docker.io/library/alpine:edge", "docker.io", "library/alpine", "edge", "");
	good("127.0.0.1:5000/busybox:v1", "127.0.0.1:5000", "busybox", "v1", "");
	good("localhost/a/b/c", "localhost", "a/b/c", "latest", "");
	good("localhost:5000/a__b/c-d--e/f.g_h:T_1.0-x", "localhost:5000", "a__b/c-d--e/f.g_h", "T_1.0-x", "");
	good("reg.example.com/path/name", "reg.example.com", "path/name", "latest", "");
	snprintf(buf, sizeof buf, "busybox@%s", dig);
	good(buf, "docker.io", "library/busybox", "", dig);
	snprintf(buf, sizeof buf, "127.0.0.1:5000/x/busybox:1@%s", dig);
	good(buf, "127.0.0.1:5000", "x/busybox", "1", dig);

	/* hostile and malformed */
	bad("", "empty image reference");
	bad("Alpine", "must be lowercase");
	bad("alpine:", "empty tag");
	bad("alpine:-x", "must start");
	bad("alpine:a/b", "invalid port");
	bad("../../etc/passwd", "malformed label");
	bad("etc/../../passwd", "must start and end");
	bad("a/../b", "must start and end");
	bad("a//b", "empty path component");
	bad("a/", "empty path component");
	bad("/a", "empty path component");
	bad("alpine; rm -rf /", "forbidden byte 0x20");
	bad("alpine$(id)", "contains '$'");
	bad("a/b|c", "contains '|'");
	bad("alp\nine", "forbidden byte 0x0a");
	bad("alpine\xc3\xa9", "forbidden byte 0xc3");
	bad("docker://alpine", "no scheme");
	bad("alpine@sha256:abc", "64");
	bad("alpine@md5:0123", "not supported");
	bad("alpine@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", "lowercase hex");
	bad("a@b@c", "more than one '@'");
	bad("host:99999/a", "port");
	bad("host:/a", "empty port");
	bad("-bad.host/a", "label starting with '-'");
	bad("[::1]:5000/a", "IPv6");
	bad("a:b:c", "':' is only allowed");
	bad("@sha256:0123", "");
	{
		char big[3000];
		memset(big, 'a', sizeof big - 1);
		big[sizeof big - 1] = 0;
		bad(big, "longer than");
		big[300] = 0;
		bad(big, "max 255");
		char tag[300];
		memset(tag, 'b', sizeof tag - 1);
		tag[sizeof tag - 1] = 0;
		snprintf(buf, sizeof buf, "a:%s", tag);
		bad(buf, "max 128");
	}

	/* oci: sources */
	{
		rk_image_ref r;
		rk_err e = {0};
		ok(rk_image_ref_parse("oci:/var/lib/img/bb:v1", &r, &e) == 0 && !strcmp(r.layout, "/var/lib/img/bb") &&
			   !strcmp(r.tag, "v1") && !r.registry[0],
		   "oci:/var/lib/img/bb:v1 → layout + tag (%s)", e.msg);
		ok(rk_image_ref_parse("oci:/srv/layout", &r, &e) == 0 && !strcmp(r.tag, "latest"),
		   "oci: without tag → latest");
		rk_image_ref_transport(&r, buf, sizeof buf);
		is_str(buf, "oci:/srv/layout:latest", "oci transport string");
		bad("oci:relative/x:t", "must be absolute");
		bad("oci:/a/../etc:t", "'..'");
		bad("oci:/a/./b", "'.'");
		bad("oci:/a b", "forbidden byte");
		bad("oci:/a,b:t", "contains ','");
	}

	/* canonical forms, transport, keys */
	{
		rk_image_ref r;
		rk_err e = {0};
		rk_image_ref_parse("alpine", &r, &e);
		rk_image_ref_format(&r, buf, sizeof buf);
		is_str(buf, "docker.io/library/alpine:latest", "canonical alpine");
		rk_image_ref_transport(&r, buf, sizeof buf);
		is_str(buf, "docker://docker.io/library/alpine:latest", "transport alpine");
		rk_image_ref_key(&r, buf, sizeof buf, &e);
		is_str(buf, "docker.io_2flibrary_2falpine_3alatest", "key alpine");
		ok(rk_safe_name(buf, 255), "key is a safe name");

		char b2[4096];
		snprintf(b2, sizeof b2, "127.0.0.1:5000/x/busybox:1@%s", dig);
		rk_image_ref_parse(b2, &r, &e);
		rk_image_ref_transport(&r, buf, sizeof buf);
		snprintf(b2, sizeof b2, "docker://127.0.0.1:5000/x/busybox@%s", dig);
		is_str(buf, b2, "transport prefers the digest");

		/* a long name gets cut + hashed, distinct names stay distinct */
		char longname[300], k1[512], k2[512];
		memset(longname, 'a', 240);
		strcpy(longname + 240, "/x1");
		rk_image_ref_parse(longname, &r, &e);
		rk_image_ref_key(&r, k1, sizeof k1, &e);
		longname[242] = '2';
		rk_image_ref_parse(longname, &r, &e);
		rk_image_ref_key(&r, k2, sizeof k2, &e);
		ok(strlen(k1) <= 200 && rk_safe_name(k1, 255), "long key bounded (%zu) and safe", strlen(k1));
		ok(strcmp(k1, k2) != 0, "long keys of different names differ");

		char out[100];
		ok(rk_image_digest_key(dig, out, sizeof out, &e) == 0 && !strncmp(out, "sha256_", 7) &&
			   !strcmp(out + 7, H64),
		   "digest key");
		ok(rk_image_digest_key("sha256:../../x", out, sizeof out, &e) < 0, "digest key refuses junk: %s",
		   e.msg);
		ok(rk_image_digest_key("sha512:aa", out, sizeof out, &e) < 0, "digest key refuses other algorithms");
	}

	/* random hostile input: never crashes; whatever is accepted yields safe names and paths */
	{
		static const char cs[] = "aZ09._-/:@\\$;|&`'\" \n\t%*?~!#^()[]{}<>=+,sha256\x01\xff";
		unsigned seed = 12345;
		int accepted = 0, unsafe = 0;
		for (int i = 0; i < 200000; i++) {
			char in[64];
			int n = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 40;
			for (int j = 0; j < n; j++)
				in[j] = cs[((seed = seed * 1103515245u + 12345u) >> 16) % (sizeof cs - 1)];
			in[n] = 0;
			if (i % 3 == 0 && n > 2)
				memcpy(in, "oci:/", n > 5 ? 5 : (size_t)n);
			rk_image_ref r;
			rk_err e2;
			if (rk_image_ref_parse(in, &r, &e2) < 0)
				continue;
			accepted++;
			char k[512];
			if (rk_image_ref_key(&r, k, sizeof k, &e2) < 0 || !rk_safe_name(k, 255) ||
			    strstr(r.repository, "..") || strchr(r.registry, '/') || strstr(r.layout, "/../") ||
			    strstr(r.layout, "/./") || strpbrk(r.layout, ",:\\ "))
				unsafe++, printf("# unsafe: '%s'\n", in);
		}
		ok(unsafe == 0, "200000 random references: %d accepted, none unsafe", accepted);
	}

	/* index.json lookup */
	char tmp[] = "/tmp/rk-test-image-XXXXXX";
	ok(mkdtemp(tmp) != NULL, "tmp dir %s", tmp);
	{
		rk_err e = {0};
		char path[4200], d[100];
		ok(rk_image_layout_lookup(tmp, "t", d, sizeof d, &e) < 0 && e.code == ENOENT,
		   "lookup in an empty dir: ENOENT (%s)", e.msg);
		snprintf(path, sizeof path, "%s/index.json", tmp);
		snprintf(buf, sizeof buf,
			 "{\"schemaVersion\":2,\"manifests\":["
			 "{\"mediaType\":\"application/"
			 "vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:%s\",\"size\":1,"
			 "\"annotations\":{\"org.opencontainers.image.ref.name\":\"other\"}},"
			 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":349,"
			 "\"annotations\":{\"org.opencontainers.image.ref.name\":\"t\"}},"
			 "{\"digest\":\"sha256:../../"
			 "etc\",\"annotations\":{\"org.opencontainers.image.ref.name\":\"evil\"}}]}",
			 "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", dig);
		write_file(path, buf);
		ok(rk_image_layout_lookup(tmp, "t", d, sizeof d, &e) == 0 && !strcmp(d, dig), "lookup tag t → digest");
		ok(rk_image_layout_lookup(tmp, "nope", d, sizeof d, &e) < 0 && e.code == ENOENT &&
			   strstr(e.msg, "nope"),
		   "missing tag: ENOENT (%s)", e.msg);
		ok(rk_image_layout_lookup(tmp, "evil", d, sizeof d, &e) < 0 && e.code == EBADMSG,
		   "a hostile digest in index.json is refused (%s)", e.msg);
		int dropped = -1;
		snprintf(buf, sizeof buf,
			 "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"sha256:%s\",\"size\":1},"
			 "{\"digest\":\"%s\",\"size\":2,\"annotations\":{\"org.opencontainers.image.ref.name\":\"t\"}},"
			 "{\"digest\":\"sha256:%s\",\"size\":3,\"annotations\":{\"other\":\"x\"}}]}",
			 H64, dig, H64);
		write_file(path, buf);
		ok(rk_image_layout_drop_untagged(tmp, &dropped, &e) == 0 && dropped == 2,
		   "drop 2 untagged descriptors (%s)", e.msg);
		ok(rk_image_layout_lookup(tmp, "t", d, sizeof d, &e) == 0 && !strcmp(d, dig), "the tagged one stays");
		ok(rk_image_layout_drop_untagged(tmp, &dropped, &e) == 0 && dropped == 0, "again: nothing to drop");
		write_file(path, "{not json");
		ok(rk_image_layout_drop_untagged(tmp, &dropped, &e) < 0 && strstr(e.msg, "damaged"),
		   "drop on a damaged index: %s", e.msg);
		ok(rk_image_layout_lookup(tmp, "t", d, sizeof d, &e) < 0 && e.code == EBADMSG &&
			   strstr(e.msg, "damaged"),
		   "corrupt index.json (%s)", e.msg);
		write_file(path, "{\"manifests\":3}");
		ok(rk_image_layout_lookup(tmp, "t", d, sizeof d, &e) < 0 && e.code == EBADMSG, "no manifests array");
	}

	/* overlay */
	if (geteuid() != 0) {
		printf("# skipping overlay tests: not root\n");
	} else {
		rk_err e = {0};
		char lower[4200], upper[4200], work[4200], target[4200], f[4300];
		snprintf(lower, sizeof lower, "%s/lower", tmp);
		snprintf(upper, sizeof upper, "%s/inst/upper", tmp);
		snprintf(work, sizeof work, "%s/inst/work", tmp);
		snprintf(target, sizeof target, "%s/inst/rootfs", tmp);
		mkdir(lower, 0755);
		snprintf(f, sizeof f, "%s/hello", lower);
		write_file(f, "from lower\n");
		ok(rk_image_is_mountpoint(target, &e) == 0, "target not a mount point yet");
		int rc = rk_image_overlay_mount(lower, upper, work, target, &e);
		ok(rc == 0, "overlay mount (%s)", rc ? e.msg : "ok");
		ok(rk_image_is_mountpoint(target, &e) == 1, "target is a mount point");
		snprintf(f, sizeof f, "%s/hello", target);
		FILE *fp = fopen(f, "r");
		char line[64] = "";
		if (fp) {
			fgets(line, sizeof line, fp);
			fclose(fp);
		}
		is_str(line, "from lower\n", "lower file visible through the overlay");
		snprintf(f, sizeof f, "%s/new", target);
		write_file(f, "x");
		snprintf(f, sizeof f, "%s/new", upper);
		ok(access(f, F_OK) == 0, "writes land in upper");
		snprintf(f, sizeof f, "%s/new", lower);
		ok(access(f, F_OK) != 0, "lower untouched");
		ok(rk_image_overlay_mount(lower, upper, work, target, &e) < 0 && e.code == EBUSY,
		   "double mount refused (%s)", e.msg);
		ok(rk_image_overlay_mount("/tmp/a,b", upper, work, target, &e) < 0 && strstr(e.msg, "','"),
		   "option injection refused (%s)", e.msg);
		ok(rk_image_overlay_mount("relative", upper, work, target, &e) < 0, "relative lower refused");
		snprintf(f, sizeof f, "%s/missing", tmp);
		ok(rk_image_overlay_mount(f, upper, work, target, &e) < 0 && strstr(e.msg, "damaged"),
		   "absent lower: %s", e.msg);
		/* busy: a process holding a cwd in the mount */
		snprintf(f, sizeof f, "%s/held", target);
		int fd = open(target, O_RDONLY | O_DIRECTORY);
		ok(rk_image_overlay_umount(target, &e) == 0, "umount (busy → detached) (%s)", e.msg);
		if (fd >= 0)
			close(fd);
		ok(rk_image_is_mountpoint(target, &e) == 0, "no longer a mount point");
		ok(rk_image_overlay_umount(target, &e) == 0, "umount again is a no-op");
		snprintf(f, sizeof f, "%s/nowhere", tmp);
		ok(rk_image_overlay_umount(f, &e) == 0, "umount of an absent path is a no-op");
	}
	rk_err e = {0};
	ok(rk_rm_rf(tmp, &e) == 0, "cleanup %s", e.msg);
	tap_done();
}
