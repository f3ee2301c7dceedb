/* fw.h — riklet's iptables rules through libiptc (legacy xtables), in chains riklet owns:
 *
 *   nat    RIKLET              DNAT per exposed port; jumped to from PREROUTING and OUTPUT with
 *                              `-m addrtype --dst-type LOCAL` (upstream riklet's layout)
 *   nat    RIKLET-POSTROUTING  MASQUERADE for riklet's own subnets; jumped to from POSTROUTING
 *   filter RIKLET-FORWARD      accepts for riklet's interfaces; jumped to from FORWARD
 *
 * The caller states the whole desired rule set (or the whole set of one owner); fw reads what its
 * chains hold, computes the difference and writes it in one libiptc commit per table. Leftovers
 * (from a crash, from an older riklet) are adopted: identical rules are kept, others removed.
 * Rules outside these chains are never touched, except the jumps to them in the built-in chains,
 * which fw creates once and never duplicates. Every call takes the xtables lock
 * (/run/xtables.lock, like the iptables CLI) and retries when the table changed under it. */
#ifndef RK_FW_H
#define RK_FW_H

#include <stddef.h>
#include <stdint.h>
#include "rk.h"

#define RK_FW_CHAIN_DNAT "RIKLET"
#define RK_FW_CHAIN_POST "RIKLET-POSTROUTING"
#define RK_FW_CHAIN_FWD "RIKLET-FORWARD"

/* One rule. Strings are "" when unused. src/dst/iif/oif may start with '!' (negation, like
 * iptables' `! -d`). An interface ending in '+' matches by prefix.
 * Allowed (table, chain, target):
 *   nat/RIKLET              DNAT (needs `to`), RETURN, ACCEPT
 *   nat/RIKLET-POSTROUTING  MASQUERADE, RETURN, ACCEPT
 *   filter/RIKLET-FORWARD   ACCEPT, DROP, RETURN */
typedef struct rk_fw_rule {
	char table[8];	/* "nat" | "filter" */
	char chain[32]; /* one of the RK_FW_CHAIN_* */
	char src[20];	/* "" | "[!]a.b.c.d[/len]" */
	char dst[20];
	char iif[17]; /* "" | "[!]name[+]" */
	char oif[17];
	char proto[8];	   /* "" | "tcp" | "udp" */
	uint16_t dport;	   /* 0: any; needs proto */
	char ctstate[64];  /* "" | comma list of NEW,ESTABLISHED,RELATED,INVALID,UNTRACKED,SNAT,DNAT */
	char target[32];   /* DNAT | MASQUERADE | ACCEPT | DROP | RETURN */
	char to[24];	   /* DNAT only: "a.b.c.d[:port]" (a port needs proto tcp or udp) */
	char comment[256]; /* owner tag, e.g. "riklet:<instance-id>"; printable, no quotes or backslash */
	int foreign;	   /* set by rk_fw_list: the rule holds parts riklet never writes (see text) */
	char text[512];	   /* set by rk_fw_list: the rule as `iptables -S` prints it */
} rk_fw_rule;

typedef struct rk_fw_stats {
	unsigned added, deleted, kept; /* rules in riklet chains */
	unsigned jumps_added;	       /* jumps created in built-in chains */
	unsigned commits;	       /* libiptc commits done (0 when nothing changed) */
} rk_fw_stats;

/* Check a rule; the message names the field and the rule. */
int rk_fw_rule_validate(const rk_fw_rule *r, rk_err *e);
/* The rule as `iptables -t TABLE -S` prints it ("-A CHAIN ..."); canonical (addresses masked,
 * /32 explicit). Returns the length (as snprintf: the text is cut to len - 1 bytes, buf may be NULL
 * when len is 0), or -1 with e filled if the rule is invalid. */
int rk_fw_rule_format(const rk_fw_rule *r, char *buf, size_t len, rk_err *e);

/* Make riklet's chains and jumps exist (also done by rk_fw_apply). */
int rk_fw_ensure(rk_err *e);
/* Converge riklet's chains to rules[0..n).
 * owner NULL: the rules are the whole desired set; every other rule in riklet chains is removed.
 * owner set:  only rules whose comment equals owner are considered (added or removed); every
 *             given rule must carry that comment. Rules of other owners stay as they are.
 * Order within a chain follows the array. Duplicates in rules are applied once.
 * stats may be NULL. Nothing is written when the chains already match. */
int rk_fw_apply(const rk_fw_rule *rules, size_t n, const char *owner, rk_fw_stats *stats, rk_err *e);
/* rk_fw_apply scoped to the rules of several owners at once, in one commit per table (re-adopting
 * 1,000 instances: one read and write of each table, not one per instance): every given rule must
 * carry one of owners[0..nowners); rules of other owners stay as they are. nowners 0: nothing is in
 * scope (only chains and jumps are made). */
int rk_fw_apply_owners(const rk_fw_rule *rules, size_t n, const char *const *owners, size_t nowners, rk_fw_stats *stats,
		       rk_err *e);
/* Load libip4tc (with dlopen: core/iptc_lazy.c), as every call here does first: riklet check tells
 * a missing or wrong library apart from the iptables commands' state. Returns 0, or -1 with e
 * naming the library, what is wrong with it and the package to install. */
int rk_fw_load(rk_err *e);
/* The rules currently in riklet's chains (both tables), in chain order; *out malloc'ed (free()). */
int rk_fw_list(rk_fw_rule **out, size_t *n, rk_err *e);
/* The xtables lock, taken without waiting: 1 taken (also when there is no lock file to take),
 * 0 busy (another program holds it), -1 error. While taken, rk_fw_apply, rk_fw_ensure and
 * rk_fw_flush_all use it and do not wait; without it they wait for it up to 3 s, blocking.
 * Release with rk_fw_unlock. libiptc is not thread-safe: call all of fw from one thread. */
int rk_fw_lock_try(rk_err *e);
void rk_fw_unlock(void);

/* Remove riklet's jumps and chains (for `riklet cleanup`). A chain still referenced from a chain
 * riklet does not own is emptied but kept, with a warning. */
int rk_fw_flush_all(rk_err *e);

#endif
