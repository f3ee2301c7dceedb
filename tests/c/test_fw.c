/* test_fw.c — core/fw against the kernel's real iptables (legacy xtables), inside a network
 * namespace this test creates: the host's tables are never touched. What libiptc wrote is read
 * back with `iptables-legacy -S`, which must print exactly what the CLI would have written. */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fw.h"
#include "tap.h"

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static rk_fw_rule R(const char *table, const char *chain, const char *proto, int dport, const char *to,
		    const char *target, const char *comment)
{
	rk_fw_rule r;
	memset(&r, 0, sizeof r);
	snprintf(r.table, sizeof r.table, "%s", table);
	snprintf(r.chain, sizeof r.chain, "%s", chain);
	snprintf(r.proto, sizeof r.proto, "%s", proto ? proto : "");
	r.dport = dport;
	snprintf(r.to, sizeof r.to, "%s", to ? to : "");
	snprintf(r.target, sizeof r.target, "%s", target);
	snprintf(r.comment, sizeof r.comment, "%s", comment ? comment : "");
	return r;
}

static rk_fw_rule dnat(const char *proto, int port, const char *to, const char *owner)
{
	return R("nat", "RIKLET", proto, port, to, "DNAT", owner);
}

#define SAME(got, want, ...)                                                                                           \
	do {                                                                                                           \
		const char *g_ = (got), *w_ = (want);                                                                  \
		int s_ = !strcmp(g_, w_);                                                                              \
		ok(s_, __VA_ARGS__);                                                                                   \
		if (!s_)                                                                                               \
			printf("# got:\n%s# expected:\n%s", g_, w_);                                                   \
	} while (0)

int main(void)
{
	if (geteuid() != 0)
		tap_skip_all("needs root (programs iptables in a private network namespace)");
	if (unshare(CLONE_NEWNET) < 0)
		tap_skip_all("unshare(CLONE_NEWNET) failed: %s", strerror(errno));
	if (!run("iptables-legacy -V 2>/dev/null")[0])
		tap_skip_all("iptables-legacy is not installed (Debian: apt-get install iptables)");
	rk_err e = {0};
	rk_fw_stats st;
	char buf[1024];

	/* --- validation: the message names the field --- */
	rk_fw_rule bad = dnat("tcp", 80, "10.0.0.2:80", "riklet:x");
	strcpy(bad.chain, "INPUT");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "riklet writes only"), "foreign chain refused: %s",
	   e.msg);
	bad = dnat("tcp", 80, "10.0.0.2:80", "riklet:x");
	strcpy(bad.target, "MASQUERADE");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "not allowed"), "MASQUERADE in RIKLET refused: %s",
	   e.msg);
	bad = dnat("", 0, "10.0.0.2:80", "riklet:x");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "needs proto"), "DNAT port without proto refused: %s",
	   e.msg);
	bad = dnat("tcp", 80, "", "riklet:x");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "needs 'to'"), "DNAT without to refused: %s", e.msg);
	bad = dnat("sctp", 80, "10.0.0.2", "riklet:x");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "proto"), "proto sctp refused: %s", e.msg);
	bad = dnat("tcp", 80, "10.0.0.2:80", "riklet:\"; rm -rf /");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "comment"), "comment with a quote refused: %s", e.msg);
	bad = dnat("tcp", 80, "10.0.0.2:99999", "riklet:x");
	ok(rk_fw_rule_validate(&bad, &e) < 0, "port 99999 refused: %s", e.msg);
	bad = dnat("tcp", 80, "10.0.0.2:80", "riklet:x");
	strcpy(bad.iif, "../etc");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "iif"), "iif '../etc' refused: %s", e.msg);
	bad = dnat("tcp", 80, "10.0.0.2:80", "riklet:x");
	strcpy(bad.src, "10.0.0.0/33");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "src"), "src /33 refused: %s", e.msg);
	bad = dnat("tcp", 80, "10.0.0.2:80", "riklet:x");
	strcpy(bad.ctstate, "BOGUS");
	ok(rk_fw_rule_validate(&bad, &e) < 0 && strstr(e.msg, "ctstate"), "ctstate BOGUS refused: %s", e.msg);
	memset(bad.comment, 'x', sizeof bad.comment); /* not NUL-terminated */
	ok(rk_fw_rule_validate(&bad, &e) < 0, "unterminated field refused");

	/* --- canonical text --- */
	rk_fw_rule f = dnat("tcp", 8080, "10.89.0.2:80", "riklet:a");
	strcpy(f.src, "192.168.7.9/24");
	strcpy(f.iif, "eth0");
	rk_fw_rule_format(&f, buf, sizeof buf, &e);
	is_str(buf,
	       "-A RIKLET -s 192.168.7.0/24 -i eth0 -p tcp -m tcp --dport 8080 -m comment --comment \"riklet:a\" -j "
	       "DNAT "
	       "--to-destination 10.89.0.2:80",
	       "format: address masked like iptables does");
	is_int(rk_fw_rule_format(&f, NULL, 0, &e), (long long)strlen(buf), "format into no buffer: the length only");
	char small[8];
	is_int(rk_fw_rule_format(&f, small, sizeof small, &e), (long long)strlen(buf),
	       "format into 8 bytes: the length");
	is_str(small, "-A RIKL", "and the text cut like snprintf");

	/* --- something that is not riklet's, which must survive everything --- */
	run("iptables-legacy -t nat -N OTHER && iptables-legacy -t nat -A OTHER -p tcp --dport 1 -j RETURN && "
	    "iptables-legacy -t nat -A OUTPUT -p tcp --dport 2 -j OTHER && iptables-legacy -A FORWARD -j DROP");

	/* --- the whole desired set --- */
	rk_fw_rule set1[8];
	size_t n1 = 0;
	set1[n1++] = dnat("tcp", 8080, "10.89.0.2:80", "riklet:a");
	set1[n1++] = dnat("udp", 5353, "10.89.0.3:53", "riklet:b");
	set1[n1] = dnat("tcp", 9090, "10.89.0.4:90", "riklet:c");
	strcpy(set1[n1].src, "192.168.0.0/24");
	strcpy(set1[n1++].iif, "eth0");
	set1[n1] = R("nat", "RIKLET-POSTROUTING", NULL, 0, NULL, "MASQUERADE", "riklet:pods");
	strcpy(set1[n1].src, "10.89.0.0/16");
	strcpy(set1[n1++].dst, "!10.89.0.0/16");
	set1[n1] = R("filter", "RIKLET-FORWARD", NULL, 0, NULL, "ACCEPT", "riklet:pods");
	strcpy(set1[n1].oif, "riklet0");
	strcpy(set1[n1++].ctstate, "ESTABLISHED,RELATED");
	set1[n1] = R("filter", "RIKLET-FORWARD", NULL, 0, NULL, "ACCEPT", "riklet:pods");
	strcpy(set1[n1++].iif, "riklet0");

	is_int(rk_fw_apply(set1, n1, NULL, &st, &e), 0, "apply the first set");
	ok(st.added == 6 && st.deleted == 0 && st.jumps_added == 4 && st.commits == 2,
	   "6 rules and 4 jumps added, 2 commits (one per table): +%u -%u jumps %u commits %u", st.added, st.deleted,
	   st.jumps_added, st.commits);
	const char *nat_want = "-P PREROUTING ACCEPT\n"
			       "-P INPUT ACCEPT\n"
			       "-P OUTPUT ACCEPT\n"
			       "-P POSTROUTING ACCEPT\n"
			       "-N OTHER\n"
			       "-N RIKLET\n"
			       "-N RIKLET-POSTROUTING\n"
			       "-A PREROUTING -m addrtype --dst-type LOCAL -j RIKLET\n"
			       "-A OUTPUT -m addrtype --dst-type LOCAL -j RIKLET\n"
			       "-A OUTPUT -p tcp -m tcp --dport 2 -j OTHER\n"
			       "-A POSTROUTING -j RIKLET-POSTROUTING\n"
			       "-A OTHER -p tcp -m tcp --dport 1 -j RETURN\n"
			       "-A RIKLET -p tcp -m tcp --dport 8080 -m comment --comment \"riklet:a\" -j DNAT "
			       "--to-destination 10.89.0.2:80\n"
			       "-A RIKLET -p udp -m udp --dport 5353 -m comment --comment \"riklet:b\" -j DNAT "
			       "--to-destination 10.89.0.3:53\n"
			       "-A RIKLET -s 192.168.0.0/24 -i eth0 -p tcp -m tcp --dport 9090 -m comment --comment "
			       "\"riklet:c\" -j DNAT "
			       "--to-destination 10.89.0.4:90\n"
			       "-A RIKLET-POSTROUTING -s 10.89.0.0/16 ! -d 10.89.0.0/16 -m comment --comment "
			       "\"riklet:pods\" -j MASQUERADE\n";
	SAME(run("iptables-legacy -t nat -S"), nat_want, "iptables-legacy -t nat -S shows exactly the rules");
	const char *filter_want = "-P INPUT ACCEPT\n"
				  "-P FORWARD ACCEPT\n"
				  "-P OUTPUT ACCEPT\n"
				  "-N RIKLET-FORWARD\n"
				  "-A FORWARD -j RIKLET-FORWARD\n"
				  "-A FORWARD -j DROP\n"
				  "-A RIKLET-FORWARD -o riklet0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment "
				  "--comment \"riklet:pods\" -j ACCEPT\n"
				  "-A RIKLET-FORWARD -i riklet0 -m comment --comment \"riklet:pods\" -j ACCEPT\n";
	SAME(run("iptables-legacy -S"), filter_want, "iptables-legacy -S (filter) shows exactly the rules, jump first");

	/* --- list: what riklet chains hold, as iptables prints it --- */
	rk_fw_rule *ls;
	size_t nl;
	is_int(rk_fw_list(&ls, &nl, &e), 0, "list");
	is_int(nl, 6, "list has the 6 rules");
	int texts_ok = nl == 6;
	for (size_t i = 0; i < nl; i++) {
		char line[600];
		snprintf(line, sizeof line, "%s\n", ls[i].text);
		if (!strstr(!strcmp(ls[i].table, "nat") ? nat_want : filter_want, line) || ls[i].foreign)
			texts_ok = 0, printf("# unexpected: %s\n", ls[i].text);
	}
	ok(texts_ok, "every listed rule's text is a line of iptables -S");
	ok(nl == 6 && !strcmp(ls[1].comment, "riklet:b") && ls[1].dport == 5353 && !strcmp(ls[1].to, "10.89.0.3:53") &&
		   !strcmp(ls[1].proto, "udp"),
	   "listed fields decode (comment, dport, to, proto)");
	free(ls);

	/* --- same set again: nothing to do, no duplicate jump --- */
	is_int(rk_fw_apply(set1, n1, NULL, &st, &e), 0, "apply the same set again");
	ok(st.added == 0 && st.deleted == 0 && st.kept == 6 && st.jumps_added == 0 && st.commits == 0,
	   "no change, no commit: +%u -%u =%u commits %u", st.added, st.deleted, st.kept, st.commits);
	SAME(run("iptables-legacy -t nat -S"), nat_want, "nat table unchanged");
	const char *nat_now = run("iptables-legacy -t nat -S");
	is_int(count(nat_now, "-j RIKLET\n"), 2, "one jump from PREROUTING, one from OUTPUT");

	/* --- change the set: only the difference --- */
	rk_fw_rule set2[8];
	memcpy(set2, set1, sizeof set1);
	set2[1] = dnat("tcp", 8443, "10.89.0.5:443", "riklet:d"); /* replaces riklet:b */
	is_int(rk_fw_apply(set2, n1, NULL, &st, &e), 0, "apply a changed set");
	ok(st.added == 1 && st.deleted == 1 && st.kept == 5 && st.commits == 1,
	   "one added, one deleted, five kept, one commit: +%u -%u =%u commits %u", st.added, st.deleted, st.kept,
	   st.commits);
	nat_now = run("iptables-legacy -t nat -S RIKLET");
	SAME(nat_now,
	     "-N RIKLET\n"
	     "-A RIKLET -p tcp -m tcp --dport 8080 -m comment --comment \"riklet:a\" -j DNAT --to-destination "
	     "10.89.0.2:80\n"
	     "-A RIKLET -p tcp -m tcp --dport 8443 -m comment --comment \"riklet:d\" -j DNAT --to-destination "
	     "10.89.0.5:443\n"
	     "-A RIKLET -s 192.168.0.0/24 -i eth0 -p tcp -m tcp --dport 9090 -m comment --comment \"riklet:c\" -j DNAT "
	     "--to-destination 10.89.0.4:90\n",
	     "the new rule sits where the set puts it");

	/* --- one owner at a time --- */
	rk_fw_rule mine[2] = {dnat("tcp", 7001, "10.89.0.7:1", "riklet:e"),
			      dnat("udp", 7002, "10.89.0.7:2", "riklet:e")};
	is_int(rk_fw_apply(mine, 2, "riklet:e", &st, &e), 0, "owner-scoped apply adds riklet:e's rules");
	ok(st.added == 2 && st.deleted == 0, "2 added, none of the others deleted (+%u -%u)", st.added, st.deleted);
	is_int(count(run("iptables-legacy -t nat -S RIKLET"), "-A RIKLET"), 5, "RIKLET has 3 + 2 rules");
	is_int(rk_fw_apply(NULL, 0, "riklet:e", &st, &e), 0, "owner-scoped apply of nothing removes riklet:e's rules");
	ok(st.deleted == 2 && st.added == 0, "2 deleted (-%u)", st.deleted);
	SAME(run("iptables-legacy -t nat -S RIKLET"), nat_now, "the other owners' rules are as before");
	rk_fw_rule wrong = dnat("tcp", 7003, "10.89.0.7:3", "riklet:f");
	ok(rk_fw_apply(&wrong, 1, "riklet:e", &st, &e) < 0 && strstr(e.msg, "scoped"),
	   "a rule of another owner in a scoped "
	   "change is refused: %s",
	   e.msg);

	/* --- several owners in one commit (re-adoption): the others untouched --- */
	rk_fw_rule two[3] = {dnat("tcp", 7001, "10.89.0.7:1", "riklet:e"), dnat("tcp", 7004, "10.89.0.8:1", "riklet:g"),
			     dnat("udp", 7005, "10.89.0.8:2", "riklet:g")};
	const char *eg[2] = {"riklet:g", "riklet:e"};
	is_int(rk_fw_apply_owners(two, 3, eg, 2, &st, &e), 0, "apply scoped to riklet:e and riklet:g");
	ok(st.added == 3 && st.deleted == 0 && st.commits == 1,
	   "3 added in one commit, none deleted (+%u -%u, %u commits)", st.added, st.deleted, st.commits);
	is_int(rk_fw_apply_owners(two + 1, 1, eg, 2, &st, &e), 0,
	       "again with riklet:e's rule gone and one of riklet:g's");
	ok(st.added == 0 && st.deleted == 2 && st.kept == 1, "2 deleted, 1 kept (+%u -%u =%u)", st.added, st.deleted,
	   st.kept);
	is_int(rk_fw_apply_owners(NULL, 0, eg, 2, &st, &e), 0, "and with nothing: both owners' rules go");
	SAME(run("iptables-legacy -t nat -S RIKLET"), nat_now, "the other owners' rules are as before");
	ok(rk_fw_apply_owners(&wrong, 1, eg, 2, &st, &e) < 0 && strstr(e.msg, "not one of the 2 owners"),
	   "a rule of an owner outside the scope is refused: %s", e.msg);

	/* --- leftovers of a crash: adopted, not a failure --- */
	run("iptables-legacy -t nat -A RIKLET -p tcp --dport 7000 -m comment --comment riklet:gone -j DNAT "
	    "--to-destination 10.89.0.9:70;"
	    "iptables-legacy -t nat -A RIKLET -p tcp --dport 8080 -m comment --comment riklet:a -j DNAT "
	    "--to-destination 10.89.0.2:80;"
	    "iptables-legacy -t nat -I PREROUTING -m addrtype --dst-type LOCAL -j RIKLET;"
	    "iptables-legacy -t nat -A RIKLET -p tcp --dport 7777 -m comment --comment riklet:gone -m limit --limit "
	    "1/s -j DNAT --to-destination 10.89.0.9:77");
	is_int(count(run("iptables-legacy -t nat -S PREROUTING"), "-j RIKLET"), 2, "crash left a duplicate jump");
	is_int(rk_fw_list(&ls, &nl, &e), 0, "list sees the leftovers");
	int foreign = 0;
	for (size_t i = 0; i < nl; i++)
		foreign += ls[i].foreign;
	ok(nl == 9 && foreign == 1, "9 rules listed, the one with -m limit flagged foreign (%zu, %d)", nl, foreign);
	free(ls);
	is_int(rk_fw_apply(set2, n1, NULL, &st, &e), 0, "apply over the leftovers");
	ok(st.deleted == 3 && st.added == 0,
	   "the gone instance's rules and the duplicate removed, nothing re-added (+%u -%u)", st.added, st.deleted);
	SAME(run("iptables-legacy -t nat -S RIKLET"), nat_now, "RIKLET converged");
	is_int(count(run("iptables-legacy -t nat -S PREROUTING"), "-j RIKLET"), 1, "the duplicate jump is gone");
	/* a rule the CLI wrote (DNAT revision 2) identical to a wanted one is adopted as is */
	run("iptables-legacy -t nat -F RIKLET; iptables-legacy -t nat -A RIKLET -p tcp --dport 8080 -m comment "
	    "--comment "
	    "riklet:a -j DNAT --to-destination 10.89.0.2:80");
	is_int(rk_fw_apply(set2, n1, NULL, &st, &e), 0, "apply over a chain the CLI refilled");
	ok(st.kept == 4 && st.added == 2 && st.deleted == 0, "the CLI-written identical rule is kept (=%u +%u -%u)",
	   st.kept, st.added, st.deleted);
	SAME(run("iptables-legacy -t nat -S RIKLET"), nat_now, "RIKLET converged again, in order");
	/* a fresh process state: chains deleted behind our back are recreated */
	run("iptables-legacy -F RIKLET-FORWARD; iptables-legacy -D FORWARD -j RIKLET-FORWARD; iptables-legacy -X "
	    "RIKLET-FORWARD");
	is_int(rk_fw_apply(set2, n1, NULL, &st, &e), 0, "apply after the filter chain was deleted by hand");
	SAME(run("iptables-legacy -S"), filter_want, "filter chain and jump are back");

	/* --- empty set: chains empty, jumps stay --- */
	is_int(rk_fw_apply(NULL, 0, NULL, &st, &e), 0, "apply the empty set");
	is_int(count(run("iptables-legacy -t nat -S"), "-A RIKLET"), 0, "nat: riklet chains empty");
	is_int(count(run("iptables-legacy -S"), "-A RIKLET-FORWARD"), 0, "filter: riklet chain empty");
	ok(strstr(run("iptables-legacy -t nat -S"), "-N RIKLET\n") &&
		   strstr(run("iptables-legacy -t nat -S"), "-A PREROUTING -m addrtype --dst-type LOCAL -j RIKLET"),
	   "chains and jumps stay");

	/* --- many rules, one commit --- */
	static rk_fw_rule many[600];
	for (int i = 0; i < 600; i++) {
		char to[32];
		snprintf(to, sizeof to, "10.89.%d.%d:80", 1 + i / 200, 1 + i % 200);
		many[i] = dnat(i % 2 ? "udp" : "tcp", 20000 + i, to, "riklet:many");
	}
	is_int(rk_fw_apply(many, 600, NULL, &st, &e), 0, "600 rules");
	ok(st.added == 600 && st.commits == 1, "600 added in %u commit(s)", st.commits);
	is_int(count(run("iptables-legacy -t nat -S RIKLET"), "-A RIKLET"), 600, "iptables sees 600");
	many[300] = dnat("tcp", 30000, "10.89.9.9:80", "riklet:many");
	is_int(rk_fw_apply(many, 600, NULL, &st, &e), 0, "change one of 600");
	ok(st.added == 1 && st.deleted == 1 && st.kept == 599, "+%u -%u =%u", st.added, st.deleted, st.kept);
	ok(strstr(run("iptables-legacy -t nat -S RIKLET | sed -n 302p"), "--dport 30000"),
	   "the changed rule is at its place");

	/* --- more duplicate jumps than the old fixed arrays held (64 on apply, 256 on flush) --- */
	run("{ echo '*nat'; for i in $(seq 100); do echo '-I PREROUTING -m addrtype --dst-type LOCAL -j RIKLET'; "
	    "done; echo COMMIT; } | iptables-legacy-restore --noflush");
	is_int(count(run("iptables-legacy -t nat -S PREROUTING"), "-j RIKLET"), 101, "101 jumps to RIKLET");
	is_int(rk_fw_apply(many, 600, NULL, &st, &e), 0, "apply over 100 duplicate jumps");
	is_int(count(run("iptables-legacy -t nat -S PREROUTING"), "-j RIKLET"), 1, "all 100 duplicates removed");
	run("{ echo '*nat'; for i in $(seq 300); do echo '-I PREROUTING -m addrtype --dst-type LOCAL -j RIKLET'; "
	    "done; echo COMMIT; } | iptables-legacy-restore --noflush");

	/* --- flush_all: riklet's chains and jumps go, the rest stays --- */
	is_int(rk_fw_flush_all(&e), 0, "flush all");
	const char *after = run("iptables-legacy -t nat -S; iptables-legacy -S");
	is_int(count(after, "RIKLET"), 0, "no riklet chain or jump left");
	ok(strstr(after, "-A OTHER -p tcp -m tcp --dport 1 -j RETURN") &&
		   strstr(after, "-A OUTPUT -p tcp -m tcp --dport 2 -j OTHER") && strstr(after, "-A FORWARD -j DROP"),
	   "rules riklet does not own survived");
	is_int(rk_fw_flush_all(&e), 0, "flush all again: fine");
	/* a jump from a chain riklet does not own keeps the chain (emptied) */
	rk_fw_apply(set1, n1, NULL, &st, &e);
	run("iptables-legacy -t nat -A OTHER -j RIKLET");
	is_int(rk_fw_flush_all(&e), 0, "flush with a foreign jump to RIKLET");
	after = run("iptables-legacy -t nat -S");
	ok(strstr(after, "-N RIKLET\n") && !strstr(after, "-A RIKLET ") && !strstr(after, "RIKLET-POSTROUTING"),
	   "RIKLET kept empty (still referenced), RIKLET-POSTROUTING deleted");
	ok(strstr(after, "-A OTHER -j RIKLET"), "the foreign jump was not touched");
	tap_done();
}
