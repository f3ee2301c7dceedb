/* test_metrics.c — core/metrics: /proc/stat, /proc/meminfo, mountinfo parsing and the JSON document. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "tap.h"

int main(void)
{
	rk_err e;
	rk_cpu_sample a, b;
	ok(rk_metrics_cpu_sample(&a, &e) == 0, "cpu sample from /proc/stat");
	is_int(a.ncpu, sysconf(_SC_NPROCESSORS_ONLN), "cpu count = online CPUs");
	ok(a.total > 0 && a.idle <= a.total, "jiffies plausible");
	volatile unsigned long spin = 0;
	for (unsigned long i = 0; i < 200000000ul; i++)
		spin += i;
	usleep(200000);
	rk_metrics_cpu_sample(&b, &e);
	double p = rk_metrics_cpu_idle_pct(&a, &b);
	ok(p >= 0 && p <= 100, "idle over the interval in [0,100]: %.1f", p);
	rk_cpu_sample zero = {0};
	double since_boot = rk_metrics_cpu_idle_pct(&zero, &b);
	ok(since_boot > 0 && since_boot <= 100, "first sample: idle since boot %.1f", since_boot);
	ok(rk_metrics_cpu_idle_pct(&b, &b) >= 0, "no time passed: no division by zero");

	uint64_t mt, ma;
	ok(rk_metrics_memory(&mt, &ma, &e) == 0, "memory from /proc/meminfo");
	ok(mt > (64u << 20) && ma <= mt && ma > 0, "total %llu >= available %llu bytes", (unsigned long long)mt,
	   (unsigned long long)ma);

	/* a crafted mountinfo: dedupe by device, skip non-/dev sources, decode escapes */
	char path[] = "/tmp/riklet-mountinfo.XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	fprintf(f,
		"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
		"23 22 0:5 / /proc rw - proc proc rw\n"
		"24 22 254:0 /x /tmp rw - ext4 /dev/vda rw\n"
		"25 22 0:23 / /dev/shm rw - tmpfs tmpfs rw\n"
		"26 22 7:1 / /tm\\040p rw - ext4 /dev/loop\\0401 rw\n"
		"garbage line\n");
	fclose(f);
	rk_disk *d;
	size_t n;
	ok(rk_metrics_disks(path, &d, &n, &e) == 0, "crafted mountinfo parsed");
	is_int(n, 1, "one disk: /dev/vda once (the escaped mount point does not exist: skipped)");
	if (n)
		is_str(d[0].name, "/dev/vda", "disk name is the device");
	free(d);
	unlink(path);
	ok(rk_metrics_disks("/nonexistent/mountinfo", &d, &n, &e) < 0 && strstr(e.msg, "/nonexistent"),
	   "missing mountinfo: error names it: %s", e.msg);

	rk_cpu_sample prev = {0};
	char *js = rk_metrics_node_json(&prev, &e);
	ok(js != NULL, "node JSON: %s", js ? js : e.msg);
	cJSON *r = cJSON_Parse(js);
	cJSON *cpu = cJSON_GetObjectItem(r, "cpu"), *mem = cJSON_GetObjectItem(r, "memory"),
	      *disks = cJSON_GetObjectItem(r, "disks");
	ok(cJSON_IsNumber(cJSON_GetObjectItem(cpu, "total")) && cJSON_IsNumber(cJSON_GetObjectItem(cpu, "free")),
	   "cpu.total, cpu.free numbers");
	ok(cJSON_IsNumber(cJSON_GetObjectItem(mem, "total")) && cJSON_IsNumber(cJSON_GetObjectItem(mem, "free")),
	   "memory.total, memory.free numbers");
	ok(cJSON_IsArray(disks), "disks is an array");
	cJSON *it;
	int good = 1;
	cJSON_ArrayForEach(it, disks) good &= cJSON_IsString(cJSON_GetObjectItem(it, "disk_name")) &&
		cJSON_IsNumber(cJSON_GetObjectItem(it, "total")) && cJSON_IsNumber(cJSON_GetObjectItem(it, "free")) &&
		cJSON_GetArraySize(it) == 3;
	ok(good, "every disk has exactly disk_name, total, free");
	ok(cJSON_GetArraySize(r) == 3 && cJSON_GetArraySize(cpu) == 2 && cJSON_GetArraySize(mem) == 2, "no extra keys");
	ok(prev.total > 0, "the previous sample is kept for the next interval");
	cJSON_Delete(r);
	free(js);
	tap_done();
}
