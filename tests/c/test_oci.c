/* test_oci.c — config.json edits (round trip through cJSON) and runc state parsing. */
#include "oci.h"
#include "tap.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* What `umoci unpack` writes as root (abridged), plus the rootless leftovers we must drop. */
static const char *TEMPLATE =
	"{\"ociVersion\":\"1.0.0\",\"process\":{\"terminal\":true,\"consoleSize\":{\"height\":1,\"width\":2},"
	"\"user\":{\"uid\":0,\"gid\":0},"
	"\"args\":[\"/bin/busybox\",\"echo\",\"hi\"],"
	"\"env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"TERM=xterm\",\"FOO=bar\"],"
	"\"cwd\":\"/\"},"
	"\"root\":{\"path\":\"rootfs\",\"readonly\":true},\"hostname\":\"umoci-default\","
	"\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
	"{\"destination\":\"/etc/resolv.conf\",\"type\":\"bind\",\"source\":\"/old\",\"options\":[\"rbind\"]}],"
	"\"annotations\":{\"org.opencontainers.image.os\":\"linux\"},"
	"\"linux\":{\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}]},"
	"\"uidMappings\":[{\"containerID\":0,\"hostID\":1000,\"size\":1}],"
	"\"gidMappings\":[{\"containerID\":0,\"hostID\":1000,\"size\":1}],"
	"\"namespaces\":[{\"type\":\"pid\"},{\"type\":\"network\"},{\"type\":\"ipc\"},{\"type\":\"user\"},"
	"{\"type\":\"mount\"}]}}";

static char tmp[] = "/tmp/rk-test-oci-XXXXXX";

static cJSON *load(const char *path)
{
	char *text = NULL;
	rk_err e;
	if (rk_read_file(path, 1 << 20, &text, NULL, &e) < 0)
		return NULL;
	cJSON *j = cJSON_Parse(text);
	free(text);
	return j;
}

static cJSON *at(cJSON *j, const char *a, const char *b, const char *c)
{
	j = cJSON_GetObjectItemCaseSensitive(j, a);
	if (b)
		j = cJSON_GetObjectItemCaseSensitive(j, b);
	if (c)
		j = cJSON_GetObjectItemCaseSensitive(j, c);
	return j;
}

static const char *str_at(cJSON *arr, int i)
{
	cJSON *x = cJSON_GetArrayItem(arr, i);
	return cJSON_IsString(x) ? x->valuestring : NULL;
}

static cJSON *ns_of(cJSON *j, const char *type)
{
	cJSON *it;
	cJSON_ArrayForEach(it, at(j, "linux", "namespaces", NULL))
	{
		cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "type");
		if (cJSON_IsString(t) && !strcmp(t->valuestring, type))
			return it;
	}
	return NULL;
}

int main(void)
{
	rk_err e = {0};
	ok(mkdtemp(tmp) != NULL, "tmp dir");
	char tpl[4200], out[4200];
	snprintf(tpl, sizeof tpl, "%s/template.json", tmp);
	snprintf(out, sizeof out, "%s/config.json", tmp);
	ok(rk_write_file_atomic(tpl, TEMPLATE, strlen(TEMPLATE), 0644, &e) == 0, "write template");

	/* 1. defaults only: image args kept, terminal off, rootless leftovers gone */
	rk_oci_edit ed = {0};
	ok(rk_oci_config_edit(tpl, out, &ed, &e) == 0, "edit with no changes (%s)", e.msg);
	cJSON *j = load(out);
	ok(j != NULL, "output is JSON");
	ok(cJSON_IsFalse(at(j, "process", "terminal", NULL)), "terminal=false");
	ok(!at(j, "process", "consoleSize", NULL), "consoleSize dropped");
	ok(cJSON_IsFalse(at(j, "root", "readonly", NULL)), "root.readonly=false");
	is_str(str_at(at(j, "process", "args", NULL), 0), "/bin/busybox", "image entrypoint kept");
	is_str(str_at(at(j, "process", "args", NULL), 2), "hi", "image cmd kept");
	ok(!at(j, "linux", "uidMappings", NULL) && !at(j, "linux", "gidMappings", NULL), "uid/gid mappings dropped");
	ok(!ns_of(j, "user"), "user namespace dropped");
	ok(ns_of(j, "pid") && ns_of(j, "mount"), "other namespaces kept");
	is_str(cJSON_GetObjectItem(at(j, "annotations", NULL, NULL), "org.opencontainers.image.os")->valuestring,
	       "linux", "unrelated fields kept");
	cJSON_Delete(j);

	/* 2. everything */
	const char *args[] = {"/bin/sh", "-c", "echo $FOO", NULL};
	const char *env[] = {"FOO=over", "NEW=1", "TERM=dumb", NULL};
	rk_oci_mount mounts[] = {{"/etc/hosts", "/etc/hosts", 1, 0},
				 {"/run/x/resolv.conf", "/etc/resolv.conf", 1, 0},
				 {NULL, "/scratch", 0, 1}};
	rk_oci_edit full = {.args = args,
			    .env = env,
			    .hostname = "web-1",
			    .root_path = "/var/lib/riklet/instances/i1/rootfs",
			    .netns_path = "/run/netns/rk-i1",
			    .cgroups_path = "/riklet/i1",
			    .cwd = "/tmp",
			    .mounts = mounts,
			    .nmounts = 3,
			    .memory_limit = 64 << 20,
			    .cpu_quota = 50000};
	ok(rk_oci_config_edit(tpl, out, &full, &e) == 0, "full edit (%s)", e.msg);
	j = load(out);
	cJSON *a = at(j, "process", "args", NULL);
	ok(cJSON_GetArraySize(a) == 3 && !strcmp(str_at(a, 2), "echo $FOO"), "args replaced");
	cJSON *env_a = at(j, "process", "env", NULL);
	is_int(cJSON_GetArraySize(env_a), 4, "env: 3 template entries + 1 new");
	is_str(str_at(env_a, 0), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	       "PATH kept first");
	is_str(str_at(env_a, 1), "TERM=dumb", "TERM overridden in place");
	is_str(str_at(env_a, 2), "FOO=over", "FOO overridden in place");
	is_str(str_at(env_a, 3), "NEW=1", "NEW appended");
	is_str(at(j, "hostname", NULL, NULL)->valuestring, "web-1", "hostname");
	ok(ns_of(j, "uts") != NULL, "uts namespace added for the hostname");
	is_str(at(j, "root", "path", NULL)->valuestring, "/var/lib/riklet/instances/i1/rootfs", "root.path");
	cJSON *net = ns_of(j, "network");
	ok(net && cJSON_IsString(cJSON_GetObjectItem(net, "path")) &&
		   !strcmp(cJSON_GetObjectItem(net, "path")->valuestring, "/run/netns/rk-i1"),
	   "network namespace path");
	int nnet = 0;
	cJSON *it;
	cJSON_ArrayForEach(it, at(j, "linux", "namespaces", NULL)) nnet +=
		!strcmp(cJSON_GetObjectItem(it, "type")->valuestring, "network");
	is_int(nnet, 1, "one network namespace entry");
	is_str(at(j, "linux", "cgroupsPath", NULL)->valuestring, "/riklet/i1", "cgroupsPath");
	is_str(at(j, "process", "cwd", NULL)->valuestring, "/tmp", "cwd");
	ok(at(j, "linux", "resources", "memory") &&
		   cJSON_GetObjectItem(at(j, "linux", "resources", "memory"), "limit")->valuedouble == 64 << 20,
	   "memory limit");
	cJSON *cpu = at(j, "linux", "resources", "cpu");
	ok(cpu && cJSON_GetObjectItem(cpu, "quota")->valuedouble == 50000 &&
		   cJSON_GetObjectItem(cpu, "period")->valuedouble == 100000,
	   "cpu quota + default period");
	ok(cJSON_IsArray(at(j, "linux", "resources", "devices")), "device rules kept");
	cJSON *m = at(j, "mounts", NULL, NULL);
	int nres = 0, found_hosts = 0, found_tmpfs = 0;
	cJSON_ArrayForEach(it, m)
	{
		const char *d = cJSON_GetObjectItem(it, "destination")->valuestring;
		if (!strcmp(d, "/etc/resolv.conf")) {
			nres++;
			ok(!strcmp(cJSON_GetObjectItem(it, "source")->valuestring, "/run/x/resolv.conf"),
			   "resolv.conf mount replaced");
		}
		if (!strcmp(d, "/etc/hosts"))
			found_hosts = !strcmp(str_at(cJSON_GetObjectItem(it, "options"), 1), "ro");
		if (!strcmp(d, "/scratch"))
			found_tmpfs = !strcmp(cJSON_GetObjectItem(it, "type")->valuestring, "tmpfs") &&
				!strcmp(cJSON_GetObjectItem(it, "source")->valuestring, "tmpfs") &&
				!strcmp(str_at(cJSON_GetObjectItem(it, "options"), 0), "nosuid") &&
				!strcmp(str_at(cJSON_GetObjectItem(it, "options"), 3), "rw");
	}
	ok(found_tmpfs, "tmpfs mount: type and source tmpfs, nosuid, rw");
	is_int(nres, 1, "one resolv.conf mount");
	ok(found_hosts, "hosts bind mount, read-only");
	cJSON_Delete(j);

	/* 3. in place, twice: idempotent */
	ok(rk_oci_config_edit(out, out, &full, &e) == 0, "edit in place (%s)", e.msg);
	j = load(out);
	is_int(cJSON_GetArraySize(at(j, "process", "env", NULL)), 4, "in-place re-edit does not duplicate env");
	is_int(cJSON_GetArraySize(at(j, "linux", "namespaces", NULL)), 5, "nor namespaces (pid net ipc mount uts)");
	cJSON_Delete(j);
	int leftovers = 0; /* a temp file is <path>.<n>.tmp.<pid>: none may stay */
	DIR *d = opendir(tmp);
	for (struct dirent *de; d && (de = readdir(d));)
		leftovers += strstr(de->d_name, ".tmp.") != NULL;
	if (d)
		closedir(d);
	ok(d && leftovers == 0, "no temp file left (%d)", leftovers);

	/* 4. refusals, and the output untouched on failure */
	const char *badenv[] = {"NOEQUALS", NULL};
	const char *emptyargs[] = {NULL};
	struct {
		rk_oci_edit ed;
		const char *needle;
	} bads[] = {
		{{.env = badenv}, "NAME=VALUE"},
		{{.args = emptyargs}, "must not be empty"},
		{{.hostname = "bad host"}, "contains ' '"},
		{{.hostname = "a$(id)"}, "contains '$'"},
		{{.root_path = "rootfs"}, "must be absolute"},
		{{.netns_path = "netns"}, "must be absolute"},
		{{.memory_limit = 100}, "below 1 MiB"},
		{{.cpu_quota = 10}, "1000 us"},
		{{.cpu_quota = 5000, .cpu_period = 10}, "cpu period"},
		{{.mounts = mounts, .nmounts = 1, .cwd = "x"}, "must be absolute"},
	};
	for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
		int rc = rk_oci_config_edit(out, out, &bads[i].ed, &e);
		ok(rc < 0 && strstr(e.msg, bads[i].needle) && strstr(e.msg, out), "refused: %s", e.msg);
	}
	j = load(out);
	is_int(cJSON_GetArraySize(at(j, "process", "env", NULL)), 4, "failed edits left the file as it was");
	cJSON_Delete(j);
	char missing[4300];
	snprintf(missing, sizeof missing, "%s/nope.json", tmp);
	ok(rk_oci_config_edit(missing, out, &ed, &e) < 0 && e.code == ENOENT, "missing template: %s", e.msg);
	rk_write_file_atomic(tpl, "{\"process\":", 11, 0644, &e);
	ok(rk_oci_config_edit(tpl, out, &ed, &e) < 0 && strstr(e.msg, "not valid JSON"), "corrupt template: %s", e.msg);
	rk_write_file_atomic(tpl, "{\"process\":{}}", 14, 0644, &e);
	ok(rk_oci_config_edit(tpl, out, &ed, &e) < 0 && strstr(e.msg, "no entrypoint or cmd"), "no args anywhere: %s",
	   e.msg);

	/* 5. runc state */
	rk_oci_state st;
	const char *state = "{\"ociVersion\":\"1.0.2-dev\",\"id\":\"i1-web\",\"pid\":4242,\"status\":\"running\","
			    "\"bundle\":\"/var/lib/riklet/instances/i1/bundle\",\"rootfs\":\"/x\","
			    "\"created\":\"2024-01-02T03:04:05.123456789Z\",\"owner\":\"\"}";
	ok(rk_oci_state_parse(state, &st, &e) == 0, "parse runc state");
	is_str(st.id, "i1-web", "state id");
	is_int(st.pid, 4242, "state pid");
	is_str(st.status, "running", "state status");
	is_str(st.bundle, "/var/lib/riklet/instances/i1/bundle", "state bundle");
	is_str(st.created, "2024-01-02T03:04:05.123456789Z", "state created");
	ok(rk_oci_state_parse("{\"id\":\"x\",\"pid\":0,\"status\":\"stopped\"}", &st, &e) == 0 && st.pid == 0 &&
		   !strcmp(st.status, "stopped"),
	   "stopped state");
	ok(rk_oci_state_parse("container does not exist", &st, &e) < 0 && strstr(e.msg, "not a JSON object"),
	   "garbage: %s", e.msg);
	ok(rk_oci_state_parse("{\"pid\":1}", &st, &e) < 0, "missing id/status");
	ok(rk_oci_state_parse(NULL, &st, &e) < 0, "NULL");

	ok(rk_rm_rf(tmp, &e) == 0, "cleanup");
	tap_done();
}
