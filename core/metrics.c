/* metrics.c — node CPU, memory and disk metrics from /proc and statvfs (see metrics.h). */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

int rk_metrics_cpu_sample(rk_cpu_sample *s, rk_err *e)
{
	FILE *f = fopen("/proc/stat", "re");
	if (!f)
		return rk_errf(e, errno, "cannot read /proc/stat for CPU metrics: %s (is /proc mounted?)",
			       strerror(errno));
	char line[1024];
	int found = 0;
	memset(s, 0, sizeof *s);
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, "cpu ", 4)) {
			unsigned long long v[8] = {0};
			int n = sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
				       &v[4], &v[5], &v[6], &v[7]);
			if (n < 4)
				break;
			s->idle = v[3] + v[4];
			for (int i = 0; i < 8; i++)
				s->total += v[i];
			found = 1;
		} else if (!strncmp(line, "cpu", 3) && line[3] >= '0' && line[3] <= '9') {
			s->ncpu++;
		}
	}
	fclose(f);
	if (!found)
		return rk_errf(e, EINVAL, "/proc/stat has no parsable aggregate \"cpu\" line");
	if (s->ncpu == 0)
		s->ncpu = 1;
	return 0;
}

double rk_metrics_cpu_idle_pct(const rk_cpu_sample *prev, const rk_cpu_sample *cur)
{
	uint64_t dt = cur->total - prev->total, di = cur->idle - prev->idle;
	if (cur->total < prev->total || cur->idle < prev->idle || dt == 0) {
		/* no time passed (or counters went back): fall back to the average since boot */
		if (!cur->total)
			return 100.0;
		return 100.0 * (double)cur->idle / (double)cur->total;
	}
	double p = 100.0 * (double)di / (double)dt;
	return p < 0 ? 0 : p > 100 ? 100 : p;
}

int rk_metrics_memory(uint64_t *total, uint64_t *available, rk_err *e)
{
	FILE *f = fopen("/proc/meminfo", "re");
	if (!f)
		return rk_errf(e, errno, "cannot read /proc/meminfo for memory metrics: %s", strerror(errno));
	char line[256];
	int have = 0;
	unsigned long long kb, free_kb = 0, buffers = 0, cached = 0;
	*total = *available = 0;
	while (fgets(line, sizeof line, f)) {
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) {
			*total = kb * 1024;
			have |= 1;
		} else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
			*available = kb * 1024;
			have |= 2;
		} else if (sscanf(line, "MemFree: %llu kB", &kb) == 1) {
			free_kb = kb;
		} else if (sscanf(line, "Buffers: %llu kB", &kb) == 1) {
			buffers = kb;
		} else if (sscanf(line, "Cached: %llu kB", &kb) == 1) {
			cached = kb;
		}
	}
	fclose(f);
	if (!(have & 1))
		return rk_errf(e, EINVAL, "/proc/meminfo has no MemTotal line");
	if (!(have & 2)) /* kernels before 3.14 */
		*available = (free_kb + buffers + cached) * 1024;
	return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo */
static void unescape(char *s)
{
	char *o = s;
	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '7' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
		    p[3] <= '7') {
			*o++ = (char)((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
			p += 3;
		} else {
			*o++ = *p;
		}
	}
	*o = 0;
}

int rk_metrics_disks(const char *mountinfo, rk_disk **out, size_t *n, rk_err *e)
{
	const char *path = mountinfo ? mountinfo : "/proc/self/mountinfo";
	*out = NULL;
	*n = 0;
	FILE *f = fopen(path, "re");
	if (!f)
		return rk_errf(e, errno, "cannot read %s for disk metrics: %s", path, strerror(errno));
	size_t cap = 0;
	struct {
		unsigned maj, min;
	} *devs = NULL;
	size_t ndev = 0;
	char *line = NULL;
	size_t lcap = 0;
	int rc = 0;
	while (getline(&line, &lcap, f) > 0) {
		/* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
		unsigned maj, min;
		char mnt[4096], *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mnt) != 3)
			continue;
		char fstype[64], source[4096];
		if (sscanf(sep + 3, "%63s %4095s", fstype, source) != 2)
			continue;
		unescape(source);
		unescape(mnt);
		if (strncmp(source, "/dev/", 5) != 0)
			continue;
		int seen = 0;
		for (size_t i = 0; i < ndev; i++)
			if (devs[i].maj == maj && devs[i].min == min)
				seen = 1;
		if (seen)
			continue;
		struct statvfs sv;
		if (statvfs(mnt, &sv) < 0)
			continue;
		if (ndev % 16 == 0) {
			void *nd = realloc(devs, (ndev + 16) * sizeof *devs);
			if (!nd) {
				rc = rk_errf(e, ENOMEM, "out of memory listing disks");
				break;
			}
			devs = nd;
		}
		devs[ndev].maj = maj;
		devs[ndev].min = min;
		ndev++;
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 8;
			rk_disk *nd = realloc(*out, nc * sizeof *nd);
			if (!nd) {
				rc = rk_errf(e, ENOMEM, "out of memory listing disks");
				break;
			}
			*out = nd;
			cap = nc;
		}
		rk_disk *d = &(*out)[(*n)++];
		snprintf(d->name, sizeof d->name, "%.255s", source);
		snprintf(d->mountpoint, sizeof d->mountpoint, "%.511s", mnt);
		d->total = (uint64_t)sv.f_blocks * sv.f_frsize;
		d->free = (uint64_t)sv.f_bavail * sv.f_frsize;
	}
	free(line);
	free(devs);
	fclose(f);
	if (rc < 0) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

int rk_metrics_fs(const char *path, rk_fs_usage *u, rk_err *e)
{
	struct statvfs sv;
	if (statvfs(path, &sv) < 0)
		return rk_errf(e, errno, "cannot measure the file system of %s: %s", path, strerror(errno));
	u->total = (uint64_t)sv.f_blocks * sv.f_frsize;
	u->free = (uint64_t)sv.f_bavail * sv.f_frsize;
	u->files = sv.f_files;
	u->files_free = sv.f_favail;
	return 0;
}

char *rk_metrics_node_json(rk_cpu_sample *prev, rk_err *e)
{
	rk_cpu_sample cur;
	uint64_t mt, ma;
	rk_disk *disks = NULL;
	size_t nd = 0;
	if (rk_metrics_cpu_sample(&cur, e) < 0 || rk_metrics_memory(&mt, &ma, e) < 0 ||
	    rk_metrics_disks(NULL, &disks, &nd, e) < 0)
		return NULL;
	double idle = rk_metrics_cpu_idle_pct(prev, &cur);
	*prev = cur;
	cJSON *root = cJSON_CreateObject(), *cpu = cJSON_CreateObject(), *mem = cJSON_CreateObject(),
	      *arr = cJSON_CreateArray();
	cJSON_AddNumberToObject(cpu, "total", cur.ncpu);
	cJSON_AddNumberToObject(cpu, "free", round(idle * 10) / 10);
	cJSON_AddItemToObject(root, "cpu", cpu);
	cJSON_AddNumberToObject(mem, "total", (double)mt);
	cJSON_AddNumberToObject(mem, "free", (double)ma);
	cJSON_AddItemToObject(root, "memory", mem);
	for (size_t i = 0; i < nd; i++) {
		cJSON *d = cJSON_CreateObject();
		cJSON_AddStringToObject(d, "disk_name", disks[i].name);
		cJSON_AddNumberToObject(d, "total", (double)disks[i].total);
		cJSON_AddNumberToObject(d, "free", (double)disks[i].free);
		cJSON_AddItemToArray(arr, d);
	}
	cJSON_AddItemToObject(root, "disks", arr);
	free(disks);
	char *s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!s)
		rk_errf(e, ENOMEM, "out of memory formatting node metrics");
	return s;
}
