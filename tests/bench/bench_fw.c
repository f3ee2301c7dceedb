/* bench_fw.c — core/fw vs the iptables CLI: N port mappings in one libiptc commit, side by side
 * with N `iptables-legacy -t nat -A` calls (upstream riklet's way), then one more change at N
 * existing mappings. Run inside a private network namespace (bench_fw.sh does that). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fw.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void mapping(rk_fw_rule *r, int i, int port)
{
	memset(r, 0, sizeof *r);
	strcpy(r->table, "nat");
	strcpy(r->chain, RK_FW_CHAIN_DNAT);
	strcpy(r->proto, "tcp");
	r->dport = (uint16_t)port;
	snprintf(r->to, sizeof r->to, "10.89.%d.%d:80", 1 + i / 250, 1 + i % 250);
	snprintf(r->comment, sizeof r->comment, "riklet:inst%d", i);
	strcpy(r->target, "DNAT");
}

static int sh(const char *cmd) { return system(cmd); }

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1000;
	if (n < 1 || n > 20000)
		n = 1000;
	rk_fw_rule *rules = calloc(n + 1, sizeof *rules);
	for (int i = 0; i < n; i++)
		mapping(&rules[i], i, 20000 + i);
	rk_err e = {0};
	rk_fw_stats st;

	/* 1. core/fw: the whole set, one commit */
	double t0 = now();
	if (rk_fw_apply(rules, n, NULL, &st, &e) < 0) {
		fprintf(stderr, "bench: %s\n", e.msg);
		return 1;
	}
	double t_fw = now() - t0;
	unsigned commits = st.commits;

	/* 2. one more change at n existing mappings: replace one, add one */
	mapping(&rules[n / 2], n / 2, 40000);
	mapping(&rules[n], n, 40001);
	t0 = now();
	if (rk_fw_apply(rules, n + 1, NULL, &st, &e) < 0) {
		fprintf(stderr, "bench: %s\n", e.msg);
		return 1;
	}
	double t_change = now() - t0;
	unsigned ch_add = st.added, ch_del = st.deleted;

	/* 3. re-apply the same set: nothing to do */
	t0 = now();
	rk_fw_apply(rules, n + 1, NULL, &st, &e);
	double t_noop = now() - t0;

	rk_fw_flush_all(&e);

	/* 4. the CLI loop: one process, one full table read+write per rule */
	sh("iptables-legacy -t nat -N RIKLET && iptables-legacy -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j RIKLET");
	char cmd[512];
	t0 = now();
	for (int i = 0; i < n; i++) {
		snprintf(cmd, sizeof cmd,
			 "iptables-legacy -w -t nat -A RIKLET -p tcp --dport %d -m comment --comment riklet:inst%d -j DNAT "
			 "--to-destination %s",
			 rules[i].dport, i, rules[i].to);
		if (sh(cmd) != 0) {
			fprintf(stderr, "bench: iptables-legacy failed at rule %d\n", i);
			return 1;
		}
	}
	double t_cli = now() - t0;
	t0 = now();
	sh("iptables-legacy -w -t nat -A RIKLET -p tcp --dport 40002 -m comment --comment riklet:x -j DNAT --to-destination 10.89.0.9:80");
	double t_cli_one = now() - t0;

	char l[5][64];
	snprintf(l[0], 64, "core/fw: %d mappings, one apply", n);
	snprintf(l[1], 64, "iptables-legacy -A x %d (upstream's way)", n);
	snprintf(l[2], 64, "core/fw: one change at %d (+%u -%u)", n, ch_add, ch_del);
	snprintf(l[3], 64, "core/fw: re-apply %d unchanged", n + 1);
	snprintf(l[4], 64, "iptables-legacy -A: one more at %d", n);
	printf("| %-44s | %10s | %7s |\n", "operation", "time", "commits");
	printf("|----------------------------------------------|------------|---------|\n");
	printf("| %-44s | %7.1f ms | %7u |\n", l[0], t_fw * 1e3, commits);
	printf("| %-44s | %7.1f ms | %7d |\n", l[1], t_cli * 1e3, n);
	printf("| %-44s | %7.2f ms | %7u |\n", l[2], t_change * 1e3, 1u);
	printf("| %-44s | %7.2f ms | %7u |\n", l[3], t_noop * 1e3, 0u);
	printf("| %-44s | %7.2f ms | %7d |\n", l[4], t_cli_one * 1e3, 1);
	printf("\nspeed-up of core/fw over the CLI loop: %.0fx (target >= 50x)\n", t_cli / t_fw);
	free(rules);
	return t_cli / t_fw >= 50 ? 0 : 2;
}
