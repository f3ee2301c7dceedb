/* oci.c — config.json edits with cJSON (umoci's generated config is the template) and runc state. */
#include "oci.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static cJSON *obj_child(cJSON *parent, const char *key)
{
	cJSON *o = cJSON_GetObjectItemCaseSensitive(parent, key);
	if (cJSON_IsObject(o))
		return o;
	if (o)
		cJSON_DeleteItemFromObjectCaseSensitive(parent, key);
	o = cJSON_CreateObject();
	cJSON_AddItemToObject(parent, key, o);
	return o;
}

static void set_item(cJSON *parent, const char *key, cJSON *v)
{
	if (cJSON_GetObjectItemCaseSensitive(parent, key))
		cJSON_ReplaceItemInObjectCaseSensitive(parent, key, v);
	else
		cJSON_AddItemToObject(parent, key, v);
}

static int check_hostname(const char *h, rk_err *e)
{
	size_t n = strlen(h);
	if (n == 0 || n > 63)
		return rk_errf(e, EINVAL, "hostname '%.80s' must be 1..63 characters", h);
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		/* Linux takes any byte; keep to what every resolver and tool prints safely */
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '.' || c == '_'))
			return rk_errf(e, EINVAL,
				       "hostname '%.80s' contains '%c' (allowed: letters, digits, '-', '.', '_')", h,
				       c);
	}
	return 0;
}

/* env: template entries are kept in order, an entry whose name is overridden takes the new value
 * in place; new names are appended. */
static int apply_env(cJSON *process, const char *const *env, rk_err *e)
{
	cJSON *arr = cJSON_GetObjectItemCaseSensitive(process, "env");
	if (!cJSON_IsArray(arr)) {
		arr = cJSON_CreateArray();
		set_item(process, "env", arr);
	}
	for (const char *const *kv = env; *kv; kv++) {
		const char *eq = strchr(*kv, '=');
		if (!eq || eq == *kv)
			return rk_errf(e, EINVAL, "environment entry '%.100s' is not NAME=VALUE", *kv);
		size_t kl = (size_t)(eq - *kv) + 1; /* compare "NAME=" */
		cJSON *it, *found = NULL;
		cJSON_ArrayForEach(it, arr)
		{
			if (cJSON_IsString(it) && !strncmp(it->valuestring, *kv, kl)) {
				found = it;
				break;
			}
		}
		if (found) {
			char *dup = strdup(*kv);
			if (!dup)
				return rk_errf(e, ENOMEM, "out of memory");
			free(found->valuestring);
			found->valuestring = dup;
		} else {
			cJSON_AddItemToArray(arr, cJSON_CreateString(*kv));
		}
	}
	return 0;
}

static void apply_netns(cJSON *linux_, const char *type, const char *path)
{
	cJSON *ns = cJSON_GetObjectItemCaseSensitive(linux_, "namespaces");
	if (!cJSON_IsArray(ns)) {
		ns = cJSON_CreateArray();
		set_item(linux_, "namespaces", ns);
	}
	cJSON *it;
	cJSON_ArrayForEach(it, ns)
	{
		cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "type");
		if (cJSON_IsString(t) && !strcmp(t->valuestring, type)) {
			if (path)
				set_item(it, "path", cJSON_CreateString(path));
			return;
		}
	}
	cJSON *n = cJSON_CreateObject();
	cJSON_AddStringToObject(n, "type", type);
	if (path)
		cJSON_AddStringToObject(n, "path", path);
	cJSON_AddItemToArray(ns, n);
}

static void drop_user_namespace(cJSON *linux_)
{
	cJSON *ns = cJSON_GetObjectItemCaseSensitive(linux_, "namespaces");
	if (cJSON_IsArray(ns)) {
		for (int i = cJSON_GetArraySize(ns) - 1; i >= 0; i--) {
			cJSON *t = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ns, i), "type");
			if (cJSON_IsString(t) && !strcmp(t->valuestring, "user"))
				cJSON_DeleteItemFromArray(ns, i);
		}
	}
	cJSON_DeleteItemFromObjectCaseSensitive(linux_, "uidMappings");
	cJSON_DeleteItemFromObjectCaseSensitive(linux_, "gidMappings");
}

static int apply_mounts(cJSON *root, const rk_oci_mount *m, size_t n, rk_err *e)
{
	cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "mounts");
	if (!cJSON_IsArray(arr)) {
		arr = cJSON_CreateArray();
		set_item(root, "mounts", arr);
	}
	for (size_t i = 0; i < n; i++) {
		if (!m[i].destination || m[i].destination[0] != '/')
			return rk_errf(e, EINVAL, "mount %zu: the destination must be an absolute path", i);
		if (!m[i].tmpfs && (!m[i].source || m[i].source[0] != '/'))
			return rk_errf(e, EINVAL, "bind mount %zu: source and destination must be absolute paths", i);
		/* replace a template mount with the same destination */
		for (int j = cJSON_GetArraySize(arr) - 1; j >= 0; j--) {
			cJSON *d = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(arr, j), "destination");
			if (cJSON_IsString(d) && !strcmp(d->valuestring, m[i].destination))
				cJSON_DeleteItemFromArray(arr, j);
		}
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "destination", m[i].destination);
		if (m[i].tmpfs) {
			cJSON_AddStringToObject(o, "type", "tmpfs");
			cJSON_AddStringToObject(o, "source", "tmpfs");
			const char *opts[] = {"nosuid", "nodev", "mode=1777", m[i].readonly ? "ro" : "rw"};
			cJSON_AddItemToObject(o, "options", cJSON_CreateStringArray(opts, 4));
		} else {
			cJSON_AddStringToObject(o, "type", "bind");
			cJSON_AddStringToObject(o, "source", m[i].source);
			const char *opts[] = {"rbind", m[i].readonly ? "ro" : "rw"};
			cJSON_AddItemToObject(o, "options", cJSON_CreateStringArray(opts, 2));
		}
		cJSON_AddItemToArray(arr, o);
	}
	return 0;
}

static int apply(cJSON *root, const rk_oci_edit *ed, rk_err *e)
{
	if (!cJSON_IsObject(root))
		return rk_errf(e, EINVAL, "the document is not a JSON object");
	cJSON *process = obj_child(root, "process");
	cJSON *linux_ = obj_child(root, "linux");
	cJSON *rootfs = obj_child(root, "root");

	set_item(process, "terminal", cJSON_CreateFalse());
	cJSON_DeleteItemFromObjectCaseSensitive(process, "consoleSize");
	set_item(rootfs, "readonly", cJSON_CreateFalse());
	drop_user_namespace(linux_);

	if (ed->args) {
		int n = 0;
		while (ed->args[n])
			n++;
		if (n == 0)
			return rk_errf(e, EINVAL, "process args must not be empty");
		set_item(process, "args", cJSON_CreateStringArray(ed->args, n));
	} else {
		cJSON *a = cJSON_GetObjectItemCaseSensitive(process, "args");
		if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0)
			return rk_errf(e, EINVAL, "the image defines no entrypoint or cmd, and no command was given");
	}
	if (ed->env && apply_env(process, ed->env, e) < 0)
		return -1;
	if (ed->cwd) {
		if (ed->cwd[0] != '/')
			return rk_errf(e, EINVAL, "working directory '%.100s' must be absolute", ed->cwd);
		set_item(process, "cwd", cJSON_CreateString(ed->cwd));
	}
	if (ed->hostname) {
		if (check_hostname(ed->hostname, e) < 0)
			return -1;
		set_item(root, "hostname", cJSON_CreateString(ed->hostname));
		apply_netns(linux_, "uts", NULL);
	}
	if (ed->root_path) {
		if (ed->root_path[0] != '/')
			return rk_errf(e, EINVAL, "root path '%.200s' must be absolute", ed->root_path);
		set_item(rootfs, "path", cJSON_CreateString(ed->root_path));
	}
	if (ed->netns_path) {
		if (ed->netns_path[0] != '/')
			return rk_errf(e, EINVAL, "network namespace path '%.200s' must be absolute", ed->netns_path);
		apply_netns(linux_, "network", ed->netns_path);
	}
	if (ed->cgroups_path)
		set_item(linux_, "cgroupsPath", cJSON_CreateString(ed->cgroups_path));
	if (ed->has_uid || ed->has_gid) {
		cJSON *user = obj_child(process, "user");
		if (ed->has_uid)
			set_item(user, "uid", cJSON_CreateNumber((double)ed->uid));
		if (ed->has_gid) {
			set_item(user, "gid", cJSON_CreateNumber((double)ed->gid));
			cJSON_DeleteItemFromObjectCaseSensitive(user, "additionalGids");
		}
	}
	if (ed->nmounts && apply_mounts(root, ed->mounts, ed->nmounts, e) < 0)
		return -1;
	if (ed->memory_limit < 0 || ed->cpu_quota < 0)
		return rk_errf(e, EINVAL, "memory limit and cpu quota must not be negative");
	if (ed->memory_limit > 0) {
		if (ed->memory_limit < (1 << 20))
			return rk_errf(e, EINVAL, "memory limit %lld bytes is below 1 MiB",
				       (long long)ed->memory_limit);
		cJSON *mem = obj_child(obj_child(linux_, "resources"), "memory");
		set_item(mem, "limit", cJSON_CreateNumber((double)ed->memory_limit));
	}
	if (ed->cpu_quota > 0) {
		uint64_t period = ed->cpu_period ? ed->cpu_period : 100000;
		if (period < 1000 || period > 1000000)
			return rk_errf(e, EINVAL, "cpu period %llu us must be within 1000..1000000",
				       (unsigned long long)period);
		if (ed->cpu_quota < 1000)
			return rk_errf(e, EINVAL, "cpu quota %lld us is below the kernel's 1000 us minimum",
				       (long long)ed->cpu_quota);
		cJSON *cpu = obj_child(obj_child(linux_, "resources"), "cpu");
		set_item(cpu, "quota", cJSON_CreateNumber((double)ed->cpu_quota));
		set_item(cpu, "period", cJSON_CreateNumber((double)period));
	}
	return 0;
}

int rk_oci_config_edit(const char *template_path, const char *out_path, const rk_oci_edit *ed, rk_err *e)
{
	RK_AUTOFREE char *text = NULL;
	if (rk_read_file(template_path, 4 << 20, &text, NULL, e) < 0)
		return rk_err_prefix(e, "reading the OCI config template");
	cJSON *root = cJSON_Parse(text);
	if (!root)
		return rk_errf(e, EBADMSG,
			       "%s is not valid JSON (the unpacked image is damaged; remove it to unpack again)",
			       template_path);
	int rc = apply(root, ed, e);
	if (rc < 0) {
		cJSON_Delete(root);
		return rk_err_prefix(e, "editing %s", out_path);
	}
	char *out = cJSON_Print(root);
	cJSON_Delete(root);
	if (!out)
		return rk_errf(e, ENOMEM, "out of memory printing %s", out_path);
	/* no fsync on the loop: a create interrupted by a crash is rolled back and redone */
	rc = rk_write_file_replace(out_path, out, strlen(out), 0644, e);
	free(out);
	return rc;
}

int rk_oci_state_parse(const char *json, rk_oci_state *st, rk_err *e)
{
	memset(st, 0, sizeof *st);
	cJSON *root = cJSON_Parse(json ? json : "");
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return rk_errf(e, EBADMSG, "runc state output is not a JSON object: %.200s", json ? json : "");
	}
	cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
	cJSON *status = cJSON_GetObjectItemCaseSensitive(root, "status");
	cJSON *pid = cJSON_GetObjectItemCaseSensitive(root, "pid");
	cJSON *bundle = cJSON_GetObjectItemCaseSensitive(root, "bundle");
	cJSON *created = cJSON_GetObjectItemCaseSensitive(root, "created");
	int rc = 0;
	if (!cJSON_IsString(id) || !cJSON_IsString(status)) {
		rc = rk_errf(e, EBADMSG, "runc state output lacks \"id\" or \"status\": %.200s", json);
		goto out;
	}
	snprintf(st->id, sizeof st->id, "%s", id->valuestring);
	snprintf(st->status, sizeof st->status, "%s", status->valuestring);
	if (cJSON_IsNumber(pid))
		st->pid = pid->valueint;
	if (cJSON_IsString(bundle))
		snprintf(st->bundle, sizeof st->bundle, "%s", bundle->valuestring);
	if (cJSON_IsString(created))
		snprintf(st->created, sizeof st->created, "%s", created->valuestring);
out:
	cJSON_Delete(root);
	return rc;
}
