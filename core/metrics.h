/* metrics.h — node metrics for the scheduler: CPU count and idle percentage over an interval
 * (/proc/stat), memory total and available (/proc/meminfo), and every real block-device filesystem
 * once (/proc/self/mountinfo + statvfs). Per-instance cgroup metrics come later. */
#ifndef RK_METRICS_H
#define RK_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include "rk.h"

/* Cumulative CPU jiffies from /proc/stat's "cpu" line. */
typedef struct rk_cpu_sample {
	uint64_t idle;	/* idle + iowait */
	uint64_t total; /* user + nice + system + idle + iowait + irq + softirq + steal */
	int ncpu;	/* cpuN lines: online CPUs */
} rk_cpu_sample;

int rk_metrics_cpu_sample(rk_cpu_sample *s, rk_err *e);
/* Idle percentage between two samples (prev may be all zero: since boot). 0..100. */
double rk_metrics_cpu_idle_pct(const rk_cpu_sample *prev, const rk_cpu_sample *cur);

/* Bytes: MemTotal and MemAvailable. */
int rk_metrics_memory(uint64_t *total, uint64_t *available, rk_err *e);

typedef struct rk_disk {
	char name[256];	      /* the device, e.g. "/dev/vda1" */
	char mountpoint[512]; /* where it was measured */
	uint64_t total, free; /* bytes; free = available to unprivileged users (f_bavail) */
} rk_disk;
/* Each block device mounted from /dev/... once (first mount wins). *out is malloc'ed. A mount that
 * cannot be measured (statvfs fails) is skipped. mountinfo may be NULL for /proc/self/mountinfo. */
int rk_metrics_disks(const char *mountinfo, rk_disk **out, size_t *n, rk_err *e);

/* The file system holding path (statvfs): bytes total and free to unprivileged users, inodes free
 * and in all. */
typedef struct rk_fs_usage {
	uint64_t total, free, files, files_free;
} rk_fs_usage;
int rk_metrics_fs(const char *path, rk_fs_usage *u, rk_err *e);

/* The node document of PROTOCOL.md, malloc'ed:
 *   {"cpu":{"total":N,"free":PCT},"memory":{"total":B,"free":B},"disks":[{"disk_name":..,"total":B,"free":B}]}
 * cpu.free is measured since *prev, which is then replaced by the new sample. */
char *rk_metrics_node_json(rk_cpu_sample *prev, rk_err *e);

#endif
