/* fw.c — riklet-owned iptables chains through libiptc: rules encoded by hand as xt blobs, read
 * back and compared in their canonical `iptables -S` text, changed by difference in one commit
 * per table. See fw.h for the model.
 *
 * Blob layouts (kernel uapi, revisions the iptables 1.8 CLI writes or the kernel accepts):
 *   match  tcp/udp   rev 0  struct xt_tcp / xt_udp            (-p tcp -m tcp --dport P)
 *   match  comment   rev 0  struct xt_comment_info            (-m comment --comment "...")
 *   match  addrtype  rev 1  struct xt_addrtype_info_v1        (-m addrtype --dst-type LOCAL)
 *   match  conntrack rev 3  struct xt_conntrack_mtinfo3       (-m conntrack --ctstate ...)
 *   target DNAT       rev 2 struct nf_nat_range2 (the CLI's choice: `iptables -S` prints other
 *                     revisions as "[unsupported revision]"); rev 1 / rev 0 (compat) on kernels
 *                     without it, asked with IPT_SO_GET_REVISION_TARGET like the CLI does
 *   target MASQUERADE rev 0 struct nf_nat_ipv4_multi_range_compat
 *   ACCEPT / DROP / RETURN / jumps: struct xt_standard_target, resolved by libiptc. */
#include "fw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>

#include "iptc_lazy.h" /* <libiptc/libiptc.h>, its calls through dlopen */
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/xt_addrtype.h>
#include <linux/netfilter/xt_comment.h>
#include <linux/netfilter/xt_conntrack.h>
#include <linux/netfilter/xt_tcpudp.h>
#include <linux/netfilter/nf_conntrack_common.h>

#define SUBSYS "fw"

/* ---- chains riklet owns ------------------------------------------------------------------ */

struct owned_chain {
	const char *table, *chain;
};
static const struct owned_chain OWNED[] = {
	{"nat", RK_FW_CHAIN_DNAT},
	{"nat", RK_FW_CHAIN_POST},
	{"filter", RK_FW_CHAIN_FWD},
};
#define N_OWNED (sizeof OWNED / sizeof OWNED[0])

/* Jumps from built-in chains: inserted at the top of the built-in chain. */
struct jump {
	const char *table, *from, *to;
	int dst_local; /* -m addrtype --dst-type LOCAL */
};
static const struct jump JUMPS[] = {
	{"nat", "PREROUTING", RK_FW_CHAIN_DNAT, 1},
	{"nat", "OUTPUT", RK_FW_CHAIN_DNAT, 1},
	{"nat", "POSTROUTING", RK_FW_CHAIN_POST, 0},
	{"filter", "FORWARD", RK_FW_CHAIN_FWD, 0},
};
#define N_JUMPS (sizeof JUMPS / sizeof JUMPS[0])

static const char *TABLES[] = {"nat", "filter"};

static int is_owned_chain(const char *table, const char *chain)
{
	for (size_t i = 0; i < N_OWNED; i++)
		if (!strcmp(OWNED[i].table, table) && !strcmp(OWNED[i].chain, chain))
			return 1;
	return 0;
}

/* ---- decoded rule: the public struct + what only jumps use --------------------------------- */

struct drule {
	rk_fw_rule r;
	int dst_local;	 /* -m addrtype --dst-type LOCAL */
	char extra[160]; /* foreign parts, printed as-is */
};

/* ---- small parsers ------------------------------------------------------------------------- */

static int parse_addr(const char *s, const char *field, const rk_fw_rule *r, uint32_t *addr, uint32_t *mask, int *neg,
		      rk_err *e)
{
	*neg = 0;
	*addr = *mask = 0;
	if (!s[0])
		return 0;
	if (s[0] == '!') {
		*neg = 1;
		s++;
	}
	char buf[24];
	snprintf(buf, sizeof buf, "%s", s);
	int len = 32;
	char *slash = strchr(buf, '/');
	if (slash) {
		*slash = 0;
		char *end;
		long v = strtol(slash + 1, &end, 10);
		if (!slash[1] || *end || v < 0 || v > 32)
			return rk_errf(e, EINVAL, "rule in %s: %s '%s': prefix length must be 0..32", r->chain, field,
				       s);
		len = (int)v;
	}
	struct in_addr a;
	if (inet_pton(AF_INET, buf, &a) != 1)
		return rk_errf(e, EINVAL, "rule in %s: %s '%s' is not an IPv4 address or CIDR (a.b.c.d/len)", r->chain,
			       field, s);
	*mask = len ? htonl(0xffffffffu << (32 - len)) : 0;
	*addr = a.s_addr & *mask;
	return 0;
}

static int valid_ifname(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 15)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '+' && i == n - 1)
			continue;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '.' || c == '-'))
			return 0;
	}
	return strcmp(s, ".") && strcmp(s, "..");
}

static int parse_if(const char *s, const char *field, const rk_fw_rule *r, char name[IFNAMSIZ],
		    unsigned char mask[IFNAMSIZ], int *neg, rk_err *e)
{
	memset(name, 0, IFNAMSIZ);
	memset(mask, 0, IFNAMSIZ);
	*neg = 0;
	if (!s[0])
		return 0;
	if (s[0] == '!') {
		*neg = 1;
		s++;
	}
	if (!valid_ifname(s))
		return rk_errf(e, EINVAL,
			       "rule in %s: %s '%.20s' is not an interface name (1..15 chars of [A-Za-z0-9_.-], "
			       "optional trailing +)",
			       r->chain, field, s);
	size_t n = strlen(s);
	if (s[n - 1] == '+') {
		memcpy(name, s, n - 1);
		memset(mask, 0xff, n - 1);
	} else {
		memcpy(name, s, n);
		memset(mask, 0xff, n + 1);
	}
	return 0;
}

/* ctstate names in the order iptables prints them. */
static const struct {
	const char *name;
	unsigned bit;
} CTSTATES[] = {
	{"INVALID", XT_CONNTRACK_STATE_INVALID},
	{"NEW", XT_CONNTRACK_STATE_BIT(IP_CT_NEW)},
	{"RELATED", XT_CONNTRACK_STATE_BIT(IP_CT_RELATED)},
	{"ESTABLISHED", XT_CONNTRACK_STATE_BIT(IP_CT_ESTABLISHED)},
	{"UNTRACKED", XT_CONNTRACK_STATE_UNTRACKED},
	{"SNAT", XT_CONNTRACK_STATE_SNAT},
	{"DNAT", XT_CONNTRACK_STATE_DNAT},
};

static int parse_ctstate(const char *s, const rk_fw_rule *r, unsigned *mask, rk_err *e)
{
	*mask = 0;
	char buf[64];
	snprintf(buf, sizeof buf, "%s", s);
	char *save = NULL;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t i;
		for (i = 0; i < sizeof CTSTATES / sizeof CTSTATES[0]; i++)
			if (!strcmp(t, CTSTATES[i].name))
				break;
		if (i == sizeof CTSTATES / sizeof CTSTATES[0])
			return rk_errf(e, EINVAL,
				       "rule in %s: ctstate '%s': unknown state '%s' (use NEW, ESTABLISHED, RELATED, "
				       "INVALID, UNTRACKED, SNAT, DNAT)",
				       r->chain, s, t);
		*mask |= CTSTATES[i].bit;
	}
	if (s[0] && !*mask)
		return rk_errf(e, EINVAL, "rule in %s: ctstate '%s' names no state", r->chain, s);
	return 0;
}

static void format_ctstate(unsigned mask, char *buf, size_t len)
{
	buf[0] = 0;
	size_t o = 0;
	for (size_t i = 0; i < sizeof CTSTATES / sizeof CTSTATES[0]; i++)
		if (mask & CTSTATES[i].bit)
			o += snprintf(buf + o, o < len ? len - o : 0, "%s%s", o ? "," : "", CTSTATES[i].name);
}

/* "a.b.c.d[:port]" */
static int parse_to(const rk_fw_rule *r, uint32_t *ip, uint16_t *port, rk_err *e)
{
	char buf[24];
	snprintf(buf, sizeof buf, "%s", r->to);
	*port = 0;
	char *colon = strchr(buf, ':');
	if (colon) {
		*colon = 0;
		char *end;
		long v = strtol(colon + 1, &end, 10);
		if (!colon[1] || *end || v < 1 || v > 65535)
			return rk_errf(e, EINVAL, "rule in %s: to '%s': port must be 1..65535", r->chain, r->to);
		*port = (uint16_t)v;
	}
	struct in_addr a;
	if (inet_pton(AF_INET, buf, &a) != 1)
		return rk_errf(e, EINVAL, "rule in %s: to '%s' is not IPv4[:port]", r->chain, r->to);
	*ip = a.s_addr;
	return 0;
}

static int bounded(const char *s, size_t cap)
{
	return memchr(s, 0, cap) != NULL;
}

int rk_fw_rule_validate(const rk_fw_rule *r, rk_err *e)
{
	if (!r)
		return rk_errf(e, EINVAL, "no rule");
	if (!bounded(r->table, sizeof r->table) || !bounded(r->chain, sizeof r->chain) ||
	    !bounded(r->src, sizeof r->src) || !bounded(r->dst, sizeof r->dst) || !bounded(r->iif, sizeof r->iif) ||
	    !bounded(r->oif, sizeof r->oif) || !bounded(r->proto, sizeof r->proto) ||
	    !bounded(r->ctstate, sizeof r->ctstate) || !bounded(r->target, sizeof r->target) ||
	    !bounded(r->to, sizeof r->to) || !bounded(r->comment, sizeof r->comment))
		return rk_errf(e, EINVAL, "rule: a field is not NUL-terminated");
	if (!is_owned_chain(r->table, r->chain))
		return rk_errf(e, EINVAL,
			       "rule in table '%s' chain '%s': riklet writes only nat/RIKLET, nat/RIKLET-POSTROUTING "
			       "and filter/RIKLET-FORWARD",
			       r->table, r->chain);
	const char *t = r->target;
	int ok;
	if (!strcmp(r->chain, RK_FW_CHAIN_DNAT))
		ok = !strcmp(t, "DNAT") || !strcmp(t, "RETURN") || !strcmp(t, "ACCEPT");
	else if (!strcmp(r->chain, RK_FW_CHAIN_POST))
		ok = !strcmp(t, "MASQUERADE") || !strcmp(t, "RETURN") || !strcmp(t, "ACCEPT");
	else
		ok = !strcmp(t, "ACCEPT") || !strcmp(t, "DROP") || !strcmp(t, "RETURN");
	if (!ok)
		return rk_errf(e, EINVAL, "rule in %s: target '%s' is not allowed there (%s)", r->chain, t,
			       !strcmp(r->chain, RK_FW_CHAIN_DNAT)	     ? "use DNAT, RETURN or ACCEPT"
				       : !strcmp(r->chain, RK_FW_CHAIN_POST) ? "use MASQUERADE, RETURN or ACCEPT"
									     : "use ACCEPT, DROP or RETURN");
	uint32_t a, m;
	int neg;
	if (parse_addr(r->src, "src", r, &a, &m, &neg, e) < 0 || parse_addr(r->dst, "dst", r, &a, &m, &neg, e) < 0)
		return -1;
	char n[IFNAMSIZ];
	unsigned char mk[IFNAMSIZ];
	if (parse_if(r->iif, "iif", r, n, mk, &neg, e) < 0 || parse_if(r->oif, "oif", r, n, mk, &neg, e) < 0)
		return -1;
	if (r->iif[0] && !strcmp(r->chain, RK_FW_CHAIN_POST))
		return rk_errf(e, EINVAL, "rule in %s: iif cannot be matched in POSTROUTING", r->chain);
	if (r->oif[0] && !strcmp(r->chain, RK_FW_CHAIN_DNAT))
		return rk_errf(e, EINVAL, "rule in %s: oif cannot be matched before routing (PREROUTING)", r->chain);
	if (r->proto[0] && strcmp(r->proto, "tcp") && strcmp(r->proto, "udp"))
		return rk_errf(e, EINVAL, "rule in %s: proto '%s': use tcp or udp", r->chain, r->proto);
	if (r->dport && !r->proto[0])
		return rk_errf(e, EINVAL, "rule in %s: dport %u needs proto tcp or udp", r->chain, r->dport);
	unsigned cs;
	if (parse_ctstate(r->ctstate, r, &cs, e) < 0)
		return -1;
	if (!strcmp(t, "DNAT")) {
		uint32_t ip;
		uint16_t port;
		if (!r->to[0])
			return rk_errf(e, EINVAL, "rule in %s: DNAT needs 'to' (IP or IP:PORT)", r->chain);
		if (parse_to(r, &ip, &port, e) < 0)
			return -1;
		if (port && !r->proto[0])
			return rk_errf(e, EINVAL, "rule in %s: DNAT to %s with a port needs proto tcp or udp", r->chain,
				       r->to);
	} else if (r->to[0]) {
		return rk_errf(e, EINVAL, "rule in %s: 'to' is only for DNAT (target is %s)", r->chain, t);
	}
	for (const unsigned char *p = (const unsigned char *)r->comment; *p; p++)
		if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\' || *p == '\'' || *p == '`' || *p == '$')
			return rk_errf(e, EINVAL,
				       "rule in %s: comment '%.60s' has a character riklet does not write (printable "
				       "ASCII without quotes, backslash, backquote or $)",
				       r->chain, r->comment);
	return 0;
}

/* ---- encoding ------------------------------------------------------------------------------ */

#define ENTRY_MAX 2048
struct blob {
	union {
		struct ipt_entry e;
		unsigned char b[ENTRY_MAX];
	} u;
};

static void *add_match(struct blob *bl, unsigned *off, const char *name, int rev, size_t datalen)
{
	struct xt_entry_match *m = (void *)(bl->u.b + *off);
	unsigned sz = XT_ALIGN(sizeof(struct xt_entry_match) + datalen);
	memset(m, 0, sz);
	m->u.match_size = sz;
	/* riklet's own names (validated targets, owned chains, match names): all fit */
	memcpy(m->u.user.name, name, strnlen(name, sizeof m->u.user.name - 1));
	m->u.user.revision = rev;
	*off += sz;
	return m->data;
}

static void *add_target(struct blob *bl, unsigned *off, const char *name, int rev, size_t datalen)
{
	struct xt_entry_target *t = (void *)(bl->u.b + *off);
	unsigned sz = XT_ALIGN(sizeof(struct xt_entry_target) + datalen);
	memset(t, 0, sz);
	t->u.target_size = sz;
	/* riklet's own names (validated targets, owned chains, match names): all fit */
	memcpy(t->u.user.name, name, strnlen(name, sizeof t->u.user.name - 1));
	t->u.user.revision = rev;
	*off += sz;
	return t->data;
}

/* Highest DNAT revision (<= 2) the kernel has, asked once like iptables does. */
static int dnat_revision(void)
{
	static int rev = -1;
	if (rev >= 0)
		return rev;
	rev = 2;
	int fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (fd < 0)
		return rev;
	for (int r = 2; r >= 0; r--) {
		struct xt_get_revision q;
		memset(&q, 0, sizeof q);
		strcpy(q.name, "DNAT");
		q.revision = r;
		socklen_t len = sizeof q;
		if (getsockopt(fd, IPPROTO_IP, IPT_SO_GET_REVISION_TARGET, &q, &len) == 0) {
			rev = r;
			break;
		}
		if (errno != EPROTONOSUPPORT)
			break; /* the module is not loaded yet (ENOENT): the kernel will load it; keep 2 */
	}
	close(fd);
	return rev;
}

/* Build the entry for a validated rule (+ addrtype for jumps). */
static int encode(const rk_fw_rule *r, int dst_local, struct blob *bl, rk_err *e)
{
	memset(bl, 0, sizeof *bl);
	struct ipt_entry *en = &bl->u.e;
	int neg;
	if (parse_addr(r->src, "src", r, &en->ip.src.s_addr, &en->ip.smsk.s_addr, &neg, e) < 0)
		return -1;
	if (neg)
		en->ip.invflags |= IPT_INV_SRCIP;
	if (parse_addr(r->dst, "dst", r, &en->ip.dst.s_addr, &en->ip.dmsk.s_addr, &neg, e) < 0)
		return -1;
	if (neg)
		en->ip.invflags |= IPT_INV_DSTIP;
	if (parse_if(r->iif, "iif", r, en->ip.iniface, en->ip.iniface_mask, &neg, e) < 0)
		return -1;
	if (neg)
		en->ip.invflags |= IPT_INV_VIA_IN;
	if (parse_if(r->oif, "oif", r, en->ip.outiface, en->ip.outiface_mask, &neg, e) < 0)
		return -1;
	if (neg)
		en->ip.invflags |= IPT_INV_VIA_OUT;
	unsigned off = sizeof(struct ipt_entry);
	if (!strcmp(r->proto, "tcp"))
		en->ip.proto = IPPROTO_TCP;
	else if (!strcmp(r->proto, "udp"))
		en->ip.proto = IPPROTO_UDP;
	if (r->dport && en->ip.proto == IPPROTO_TCP) {
		struct xt_tcp *t = add_match(bl, &off, "tcp", 0, sizeof *t);
		t->spts[0] = 0, t->spts[1] = 0xffff;
		t->dpts[0] = t->dpts[1] = r->dport;
	} else if (r->dport) {
		struct xt_udp *u = add_match(bl, &off, "udp", 0, sizeof *u);
		u->spts[0] = 0, u->spts[1] = 0xffff;
		u->dpts[0] = u->dpts[1] = r->dport;
	}
	if (dst_local) {
		struct xt_addrtype_info_v1 *a = add_match(bl, &off, "addrtype", 1, sizeof *a);
		a->dest = XT_ADDRTYPE_LOCAL;
	}
	if (r->ctstate[0]) {
		unsigned cs;
		if (parse_ctstate(r->ctstate, r, &cs, e) < 0)
			return -1;
		struct xt_conntrack_mtinfo3 *c = add_match(bl, &off, "conntrack", 3, sizeof *c);
		c->match_flags = XT_CONNTRACK_STATE;
		c->state_mask = cs;
	}
	if (r->comment[0]) {
		struct xt_comment_info *c = add_match(bl, &off, "comment", 0, sizeof *c);
		snprintf(c->comment, sizeof c->comment, "%s", r->comment);
	}
	en->target_offset = off;
	if (!strcmp(r->target, "DNAT")) {
		uint32_t ip;
		uint16_t port;
		if (parse_to(r, &ip, &port, e) < 0)
			return -1;
		unsigned flags = NF_NAT_RANGE_MAP_IPS | (port ? NF_NAT_RANGE_PROTO_SPECIFIED : 0);
		int rev = dnat_revision();
		if (rev == 0) {
			struct nf_nat_ipv4_multi_range_compat *m = add_target(bl, &off, "DNAT", 0, sizeof *m);
			m->rangesize = 1;
			m->range[0].flags = flags;
			m->range[0].min_ip = m->range[0].max_ip = ip;
			m->range[0].min.all = m->range[0].max.all = htons(port);
		} else {
			/* nf_nat_range2 starts with nf_nat_range: fill the common part */
			struct nf_nat_range *m =
				add_target(bl, &off, "DNAT", rev,
					   rev == 2 ? sizeof(struct nf_nat_range2) : sizeof(struct nf_nat_range));
			m->flags = flags;
			m->min_addr.ip = m->max_addr.ip = ip;
			m->min_proto.all = m->max_proto.all = htons(port);
		}
	} else if (!strcmp(r->target, "MASQUERADE")) {
		struct nf_nat_ipv4_multi_range_compat *m = add_target(bl, &off, "MASQUERADE", 0, sizeof *m);
		m->rangesize = 1;
	} else {
		/* ACCEPT, DROP, RETURN or a chain: a standard target that libiptc resolves */
		add_target(bl, &off, r->target, 0, sizeof(int));
	}
	en->next_offset = off;
	return 0;
}

/* ---- decoding and canonical text ----------------------------------------------------------- */

static void add_extra(struct drule *d, const char *fmt, const char *a)
{
	size_t o = strlen(d->extra);
	snprintf(d->extra + o, sizeof d->extra - o, fmt, a);
	d->r.foreign = 1;
}

static void fmt_addr(char *out, size_t len, uint32_t a, uint32_t m, int neg)
{
	if (!m && !neg) {
		out[0] = 0;
		return;
	}
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a, ip, sizeof ip);
	uint32_t hm = ntohl(m);
	int plen = 0;
	while (plen < 32 && (hm & (0x80000000u >> plen)))
		plen++;
	snprintf(out, len, "%s%s/%d", neg ? "!" : "", ip, plen);
}

/* 0, or -1 when the text does not fit in out (a 16-byte kernel name, negated, with a '+'). */
static int fmt_if(char *out, size_t len, const char *name, const unsigned char *mask, int neg)
{
	char n[IFNAMSIZ + 1];
	memcpy(n, name, IFNAMSIZ);
	n[IFNAMSIZ] = 0;
	size_t nl = strlen(n), ml = 0;
	while (ml < IFNAMSIZ && mask[ml] == 0xff)
		ml++;
	if (!nl && !ml) {
		out[0] = 0;
		return 0;
	}
	int w = snprintf(out, len, "%s%s%s", neg ? "!" : "", n, ml == nl ? "+" : "");
	return w >= 0 && (size_t)w < len ? 0 : -1;
}

/* Decode one entry; target is the name libiptc resolved (or, for a blob we built, its name). */
static void decode(const struct ipt_entry *en, const char *target, const char *table, const char *chain,
		   struct drule *d)
{
	memset(d, 0, sizeof *d);
	rk_fw_rule *r = &d->r;
	snprintf(r->table, sizeof r->table, "%s", table);
	snprintf(r->chain, sizeof r->chain, "%s", chain);
	const struct ipt_ip *ip = &en->ip;
	fmt_addr(r->src, sizeof r->src, ip->src.s_addr, ip->smsk.s_addr, ip->invflags & IPT_INV_SRCIP);
	fmt_addr(r->dst, sizeof r->dst, ip->dst.s_addr, ip->dmsk.s_addr, ip->invflags & IPT_INV_DSTIP);
	char ift[IFNAMSIZ + 4];
	if (fmt_if(r->iif, sizeof r->iif, ip->iniface, ip->iniface_mask, ip->invflags & IPT_INV_VIA_IN) < 0) {
		fmt_if(ift, sizeof ift, ip->iniface, ip->iniface_mask, ip->invflags & IPT_INV_VIA_IN);
		r->iif[0] = 0; /* too long for the field: shown whole among the foreign parts */
		add_extra(d, ift[0] == '!' ? " ! -i %s" : " -i %s", ift + (ift[0] == '!'));
	}
	if (fmt_if(r->oif, sizeof r->oif, ip->outiface, ip->outiface_mask, ip->invflags & IPT_INV_VIA_OUT) < 0) {
		fmt_if(ift, sizeof ift, ip->outiface, ip->outiface_mask, ip->invflags & IPT_INV_VIA_OUT);
		r->oif[0] = 0;
		add_extra(d, ift[0] == '!' ? " ! -o %s" : " -o %s", ift + (ift[0] == '!'));
	}
	if (ip->proto == IPPROTO_TCP)
		strcpy(r->proto, "tcp");
	else if (ip->proto == IPPROTO_UDP)
		strcpy(r->proto, "udp");
	else if (ip->proto) {
		char p[16];
		snprintf(p, sizeof p, "%u", ip->proto);
		add_extra(d, " -p %s", p);
	}
	if (ip->invflags & IPT_INV_PROTO)
		add_extra(d, " %s", "(! -p)");
	if (ip->flags & IPT_F_FRAG)
		add_extra(d, " %s", "-f");
	if (ip->flags & IPT_F_GOTO)
		add_extra(d, " %s", "(goto)");
	for (unsigned off = sizeof *en; off + sizeof(struct xt_entry_match) <= en->target_offset;) {
		const struct xt_entry_match *m = (const void *)((const char *)en + off);
		if (m->u.match_size < sizeof *m)
			break;
		size_t dl = m->u.match_size - sizeof *m;
		const char *nm = m->u.user.name;
		if ((!strcmp(nm, "tcp") && dl >= sizeof(struct xt_tcp)) ||
		    (!strcmp(nm, "udp") && dl >= sizeof(struct xt_udp))) {
			const struct xt_tcp *t = (const void *)m->data;
			const struct xt_udp *u = (const void *)m->data;
			int tcp = !strcmp(nm, "tcp");
			const uint16_t *sp = tcp ? t->spts : u->spts, *dp = tcp ? t->dpts : u->dpts;
			int simple = sp[0] == 0 && sp[1] == 0xffff && dp[0] == dp[1] && dp[0] &&
				(tcp ? !t->option && !t->flg_mask && !t->invflags : !u->invflags) &&
				!strcmp(r->proto, nm);
			if (simple && !r->dport)
				r->dport = dp[0];
			else
				add_extra(d, " -m %s (ports)", nm);
		} else if (!strcmp(nm, "comment") && dl >= sizeof(struct xt_comment_info) && !r->comment[0]) {
			const struct xt_comment_info *c = (const void *)m->data;
			snprintf(r->comment, sizeof r->comment, "%.*s", (int)sizeof c->comment, c->comment);
		} else if (!strcmp(nm, "addrtype") && m->u.user.revision == 1 &&
			   dl >= sizeof(struct xt_addrtype_info_v1)) {
			const struct xt_addrtype_info_v1 *a = (const void *)m->data;
			if (a->dest == XT_ADDRTYPE_LOCAL && !a->source && !a->flags)
				d->dst_local = 1;
			else
				add_extra(d, " -m %s (other types)", nm);
		} else if (!strcmp(nm, "conntrack") && m->u.user.revision == 3 &&
			   dl >= sizeof(struct xt_conntrack_mtinfo3) && !r->ctstate[0]) {
			const struct xt_conntrack_mtinfo3 *c = (const void *)m->data;
			if ((c->match_flags & ~XT_CONNTRACK_STATE_ALIAS) == XT_CONNTRACK_STATE && !c->invert_flags)
				format_ctstate(c->state_mask, r->ctstate, sizeof r->ctstate);
			else
				add_extra(d, " -m %s (other options)", nm);
		} else {
			add_extra(d, " -m %s", nm);
		}
		off += m->u.match_size;
	}
	snprintf(r->target, sizeof r->target, "%s", target ? target : "");
	const struct xt_entry_target *t = (const void *)((const char *)en + en->target_offset);
	size_t tl = t->u.target_size > sizeof *t ? t->u.target_size - sizeof *t : 0;
	if (!strcmp(r->target, "DNAT") || !strcmp(r->target, "MASQUERADE")) {
		int dnat = r->target[0] == 'D';
		unsigned flags = 0;
		uint32_t minip = 0, maxip = 0;
		uint16_t minp = 0, maxp = 0;
		int ok = 1;
		if (t->u.user.revision == 0 && tl >= sizeof(struct nf_nat_ipv4_multi_range_compat)) {
			const struct nf_nat_ipv4_multi_range_compat *m = (const void *)t->data;
			ok = m->rangesize == 1;
			flags = m->range[0].flags;
			minip = m->range[0].min_ip, maxip = m->range[0].max_ip;
			minp = m->range[0].min.all, maxp = m->range[0].max.all;
		} else if (dnat && (t->u.user.revision == 1 || t->u.user.revision == 2) &&
			   tl >= sizeof(struct nf_nat_range)) {
			const struct nf_nat_range *m = (const void *)t->data;
			flags = m->flags;
			minip = m->min_addr.ip, maxip = m->max_addr.ip;
			minp = m->min_proto.all, maxp = m->max_proto.all;
			if (t->u.user.revision == 2 && tl >= sizeof(struct nf_nat_range2) &&
			    ((const struct nf_nat_range2 *)t->data)->base_proto.all)
				ok = 0;
		} else {
			ok = 0;
		}
		if (dnat) {
			if (ok && flags == NF_NAT_RANGE_MAP_IPS && minip == maxip) {
				inet_ntop(AF_INET, &minip, r->to, sizeof r->to);
			} else if (ok && flags == (NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED) &&
				   minip == maxip && minp == maxp) {
				char a[INET_ADDRSTRLEN];
				inet_ntop(AF_INET, &minip, a, sizeof a);
				snprintf(r->to, sizeof r->to, "%s:%u", a, ntohs(minp));
			} else {
				add_extra(d, " %s", "(DNAT ranges or options)");
			}
		} else if (!ok || flags) {
			add_extra(d, " %s", "(MASQUERADE options)");
		}
	} else if (strcmp(r->target, "ACCEPT") && strcmp(r->target, "DROP") && strcmp(r->target, "RETURN") &&
		   strncmp(r->target, "RIKLET", 6)) {
		add_extra(d, " (target %s)", r->target[0] ? r->target : "none");
	}
}

static int fmt_append(char *buf, size_t len, size_t *o, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fmt_append(char *buf, size_t len, size_t *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(*o < len ? buf + *o : NULL, *o < len ? len - *o : 0, fmt, ap); /* snprintf's contract */
	va_end(ap);
	*o += n;
	return n;
}

static void neg_opt(char *buf, size_t len, size_t *o, const char *opt, const char *v)
{
	if (!v[0])
		return;
	if (v[0] == '!')
		fmt_append(buf, len, o, " ! %s %s", opt, v + 1);
	else
		fmt_append(buf, len, o, " %s %s", opt, v);
}

/* iptables -S text of a decoded (canonical) rule. Order follows how encode() lays matches out,
 * which is how `iptables -S` prints the rules riklet writes. */
static size_t format_drule(const struct drule *d, char *buf, size_t len)
{
	const rk_fw_rule *r = &d->r;
	size_t o = 0;
	if (len) /* len 0 (buf may be NULL): only the length is wanted */
		buf[0] = 0;
	fmt_append(buf, len, &o, "-A %s", r->chain);
	neg_opt(buf, len, &o, "-s", r->src);
	neg_opt(buf, len, &o, "-d", r->dst);
	neg_opt(buf, len, &o, "-i", r->iif);
	neg_opt(buf, len, &o, "-o", r->oif);
	if (r->proto[0])
		fmt_append(buf, len, &o, " -p %s", r->proto);
	if (r->dport)
		fmt_append(buf, len, &o, " -m %s --dport %u", r->proto, r->dport);
	if (d->dst_local)
		fmt_append(buf, len, &o, " -m addrtype --dst-type LOCAL");
	if (r->ctstate[0])
		fmt_append(buf, len, &o, " -m conntrack --ctstate %s", r->ctstate);
	if (r->comment[0])
		fmt_append(buf, len, &o, " -m comment --comment \"%s\"", r->comment);
	if (d->extra[0])
		fmt_append(buf, len, &o, "%s", d->extra);
	if (r->target[0])
		fmt_append(buf, len, &o, " -j %s", r->target);
	if (r->to[0])
		fmt_append(buf, len, &o, " --to-destination %s", r->to);
	return o;
}

/* Canonical form of a desired rule: encode, decode, so it compares with what the kernel holds. */
static int canon(const rk_fw_rule *r, int dst_local, struct drule *d, struct blob *bl, rk_err *e)
{
	if (encode(r, dst_local, bl, e) < 0)
		return -1;
	const struct xt_entry_target *t = (const void *)(bl->u.b + bl->u.e.target_offset);
	decode(&bl->u.e, t->u.user.name, r->table, r->chain, d);
	return 0;
}

int rk_fw_rule_format(const rk_fw_rule *r, char *buf, size_t len, rk_err *e)
{
	if (rk_fw_rule_validate(r, e) < 0)
		return -1;
	struct blob bl;
	struct drule d;
	if (canon(r, 0, &d, &bl, e) < 0)
		return -1;
	return (int)format_drule(&d, buf, len);
}

/* ---- the xtables lock ----------------------------------------------------------------------
 * libiptc is not thread-safe, so every libiptc call stays on the loop thread (one at a time by
 * construction) and only the wait for this lock is taken off it: the binding tries it with
 * rk_fw_lock_try and, while another program holds it, retries from a timer, yielding its task. */

#define LOCK_HELD_BY_CALLER -3
static int held_lock = -1; /* taken by rk_fw_lock_try: an fd, or -2 (no lock file: going without) */

static const char *xt_lock_path(void)
{
	const char *path = getenv("XTABLES_LOCKFILE");
	return path && *path ? path : "/run/xtables.lock";
}

int rk_fw_lock_try(rk_err *e)
{
	if (held_lock != -1)
		return 1;
	const char *path = xt_lock_path();
	int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		rk_debug(SUBSYS, "cannot open the xtables lock %s (%s); going on without it", path, strerror(errno));
		held_lock = -2;
		return 1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		held_lock = fd;
		return 1;
	}
	int err = errno;
	close(fd);
	if (err == EWOULDBLOCK || err == EINTR)
		return 0;
	return rk_errf(e, err, "iptables: cannot take the xtables lock %s: %s", path, strerror(err));
}

void rk_fw_unlock(void)
{
	if (held_lock >= 0)
		close(held_lock);
	held_lock = -1;
}

static int xt_lock(rk_err *e)
{
	if (held_lock != -1)
		return LOCK_HELD_BY_CALLER; /* rk_fw_lock_try took it: rk_fw_unlock releases it */
	const char *path = xt_lock_path();
	int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		rk_debug(SUBSYS, "cannot open the xtables lock %s (%s); going on without it", path, strerror(errno));
		return -2; /* no lock, not an error */
	}
	for (int i = 0; i < 300; i++) { /* up to 3 s: other holders keep it for milliseconds */
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		if (errno != EWOULDBLOCK && errno != EINTR)
			break;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	int err = errno;
	close(fd);
	return rk_errf(e, err,
		       "iptables: the xtables lock %s stayed held for 3 s by another program (an iptables command "
		       "or another firewall manager); find it with `fuser -v %s` and retry",
		       path, path);
}

static void xt_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* ---- per-table work ------------------------------------------------------------------------ */

static int iptc_fail(rk_err *e, const char *what, const char *table)
{
	int err = errno;
	const char *hint = "";
	if (err == EPERM || err == EACCES)
		hint = " (riklet needs CAP_NET_ADMIN: run it as root)";
	else if (err == ENOENT || err == EINVAL || err == ENOPROTOOPT)
		hint = " (is the iptables legacy backend available? check `iptables-legacy -t TABLE -S` and "
		       "`modprobe ip_tables iptable_nat`; dmesg may name the refused rule)";
	return rk_errf(e, err ? err : EIO, "iptables table %s: %s: %s%s", table, what, iptc_strerror(err), hint);
}

/* open addressing set of strings → index */
struct kset {
	size_t cap;
	const char **keys;
	int *val;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static int kset_init(struct kset *k, size_t n)
{
	k->cap = 16;
	while (k->cap < n * 2 + 1)
		k->cap *= 2;
	k->keys = calloc(k->cap, sizeof *k->keys);
	k->val = calloc(k->cap, sizeof *k->val);
	return k->keys && k->val ? 0 : -1;
}
static void kset_free(struct kset *k)
{
	free(k->keys);
	free(k->val);
}
/* find or insert; returns the value slot */
static int *kset_slot(struct kset *k, const char *key, int insert)
{
	size_t i = hash_str(key) & (k->cap - 1);
	while (k->keys[i]) {
		if (!strcmp(k->keys[i], key))
			return &k->val[i];
		i = (i + 1) & (k->cap - 1);
	}
	if (!insert)
		return NULL;
	k->keys[i] = key;
	return &k->val[i];
}

#define KEY_MAX 768
struct want {
	const rk_fw_rule *r;
	struct blob *bl;
	char key[KEY_MAX];
};

/* A rule from the kernel that riklet cannot write gets a key no wanted rule has (wanted keys end
 * with their target). A key cut at KEY_MAX is marked too, since a cut key could equal a wanted one;
 * the mark goes where it fits. */
static void key_mark_foreign(char *key, size_t size, size_t len)
{
	static const char tag[] = " #foreign";
	size_t at = len < size - sizeof tag ? len : size - sizeof tag;
	memcpy(key + at, tag, sizeof tag);
}

/* A growable list of rule positions (deletes are not capped at any count). */
struct idxs {
	unsigned *v;
	size_t n, cap;
};
static int idxs_push(struct idxs *x, unsigned i)
{
	if (rk_grow(&x->v, &x->cap, x->n, sizeof *x->v, 64) < 0)
		return -1;
	x->v[x->n++] = i;
	return 0;
}

struct have {
	char key[KEY_MAX];
	int in_scope;
	int match; /* index into wants, or -1 */
	int keep;
};

static int ensure_chain(struct xtc_handle *h, const char *table, const char *chain, int *changed, rk_err *e)
{
	if (iptc_is_chain(chain, h))
		return 0;
	if (!iptc_create_chain(chain, h)) {
		iptc_fail(e, "creating a chain", table);
		return rk_err_prefix(e, "chain %s", chain);
	}
	(*changed)++;
	return 0;
}

/* Make exactly one canonical jump from the built-in chain to ours, at the top if it is new. */
static int ensure_jump(struct xtc_handle *h, const struct jump *j, unsigned *added, int *changed, rk_err *e)
{
	rk_fw_rule jr;
	memset(&jr, 0, sizeof jr);
	snprintf(jr.table, sizeof jr.table, "%s", j->table);
	snprintf(jr.chain, sizeof jr.chain, "%s", j->from);
	snprintf(jr.target, sizeof jr.target, "%s", j->to);
	struct blob bl;
	struct drule want;
	if (canon(&jr, j->dst_local, &want, &bl, e) < 0)
		return -1;
	char wkey[KEY_MAX], key[KEY_MAX];
	format_drule(&want, wkey, sizeof wkey);
	unsigned idx = 0;
	struct idxs del = {0};
	int found = 0;
	for (const struct ipt_entry *en = iptc_first_rule(j->from, h); en; en = iptc_next_rule(en, h), idx++) {
		const char *tg = iptc_get_target(en, h);
		if (!tg || strcmp(tg, j->to))
			continue;
		struct drule d;
		decode(en, tg, j->table, j->from, &d);
		size_t kl = format_drule(&d, key, sizeof key);
		if (!found && kl < sizeof key && !strcmp(key, wkey))
			found = 1;
		else if (idxs_push(&del, idx) < 0) { /* a duplicate or an older form of our jump */
			free(del.v);
			return rk_errf(e, ENOMEM, "iptables %s: out of memory listing the jumps to %s", j->table,
				       j->to);
		}
	}
	if (del.n)
		rk_info(SUBSYS, "removing %zu duplicate jump(s) %s -> %s (rule %u%s)", del.n, j->from, j->to,
			del.v[0] + 1, del.n > 1 ? " and after" : "");
	while (del.n > 0) { /* from the last: the positions before it stay valid */
		if (!iptc_delete_num_entry(j->from, del.v[--del.n], h)) {
			free(del.v);
			return iptc_fail(e, "removing a duplicate jump", j->table);
		}
		(*changed)++;
	}
	free(del.v);
	if (!found) {
		if (!iptc_insert_entry(j->from, &bl.u.e, 0, h)) {
			iptc_fail(e, "inserting a jump", j->table);
			return rk_err_prefix(e, "jump %s -> %s", j->from, j->to);
		}
		(*changed)++;
		(*added)++;
	}
	return 0;
}

/* Longest increasing subsequence over seq[0..n) (values distinct); marks keep[i]. */
static int lis_mark(const int *seq, size_t n, int *keep)
{
	if (!n)
		return 0;
	size_t *tail = malloc(n * sizeof *tail), *prev = malloc(n * sizeof *prev);
	if (!tail || !prev) {
		free(tail);
		free(prev);
		return -1;
	}
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		size_t lo = 0, hi = len;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (seq[tail[mid]] < seq[i])
				lo = mid + 1;
			else
				hi = mid;
		}
		prev[i] = lo ? tail[lo - 1] : (size_t)-1;
		tail[lo] = i;
		if (lo == len)
			len++;
	}
	for (size_t i = tail[len - 1]; i != (size_t)-1; i = prev[i])
		keep[i] = 1;
	free(tail);
	free(prev);
	return 0;
}

/* Which rules a change considers: NULL is every rule in riklet's chains; otherwise the rules whose
 * comment is one of owners[0..n) (sorted, for bsearch). */
struct scope {
	const char **owners;
	size_t n;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int in_scope(const struct scope *sc, const char *comment)
{
	return !sc || (sc->n && bsearch(&comment, sc->owners, sc->n, sizeof *sc->owners, cmp_str));
}

/* Converge one owned chain. wants: the desired rules of this chain, in order. */
static int sync_chain(struct xtc_handle *h, const char *table, const char *chain, struct want *wants, size_t nw,
		      const struct scope *sc, rk_fw_stats *st, int *changed, rk_err *e)
{
	size_t cap = 64, nh = 0;
	struct have *hv = malloc(cap * sizeof *hv);
	int rc = -1;
	struct kset ks = {0};
	int *seq = NULL, *seqkeep = NULL, *wkept = NULL, *isdup = NULL;
	size_t *seqpos = NULL;
	if (!hv)
		goto oom;
	for (const struct ipt_entry *en = iptc_first_rule(chain, h); en; en = iptc_next_rule(en, h)) {
		if (nh == cap) {
			struct have *t = realloc(hv, (cap *= 2) * sizeof *hv);
			if (!t)
				goto oom;
			hv = t;
		}
		struct drule d;
		decode(en, iptc_get_target(en, h), table, chain, &d);
		size_t kl = format_drule(&d, hv[nh].key, sizeof hv[nh].key);
		if (d.r.foreign || kl >= sizeof hv[nh].key)
			key_mark_foreign(hv[nh].key, sizeof hv[nh].key, kl); /* never equal to a wanted rule */
		hv[nh].in_scope = in_scope(sc, d.r.comment);
		hv[nh].match = -1;
		hv[nh].keep = !hv[nh].in_scope;
		nh++;
	}
	if (kset_init(&ks, nw) < 0)
		goto oom;
	isdup = calloc(nw + 1, sizeof *isdup);
	if (!isdup)
		goto oom;
	for (size_t i = 0; i < nw; i++) {
		int *v = kset_slot(&ks, wants[i].key, 1);
		if (*v)
			isdup[i] = 1; /* the same rule listed twice: applied once, where it first appears */
		else
			*v = (int)i + 1;
	}
	/* match existing in-scope rules to wanted ones; each wanted rule at most once */
	wkept = calloc(nw + 1, sizeof *wkept);
	seq = malloc((nh + 1) * sizeof *seq);
	seqpos = malloc((nh + 1) * sizeof *seqpos);
	seqkeep = calloc(nh + 1, sizeof *seqkeep);
	if (!wkept || !seq || !seqpos || !seqkeep)
		goto oom;
	size_t ns = 0;
	for (size_t i = 0; i < nh; i++) {
		if (!hv[i].in_scope)
			continue;
		int *v = kset_slot(&ks, hv[i].key, 0);
		if (v && *v > 0) {
			hv[i].match = *v - 1;
			*v = -*v; /* taken: a second identical rule in the chain is removed */
			seq[ns] = hv[i].match;
			seqpos[ns++] = i;
		}
	}
	if (lis_mark(seq, ns, seqkeep) < 0)
		goto oom;
	for (size_t k = 0; k < ns; k++) {
		if (seqkeep[k]) {
			hv[seqpos[k]].keep = 1;
			wkept[hv[seqpos[k]].match] = 1;
		}
	}
	/* deletions, from the bottom so numbers stay valid */
	for (size_t i = nh; i-- > 0;) {
		if (hv[i].keep)
			continue;
		if (!iptc_delete_num_entry(chain, (unsigned)i, h)) {
			iptc_fail(e, "deleting a rule", table);
			rk_err_prefix(e, "chain %s rule %zu (%s)", chain, i + 1, hv[i].key);
			goto out;
		}
		st->deleted++;
		(*changed)++;
	}
	/* the chain now holds: out-of-scope rules + kept wanted rules (in wanted order).
	 * Place each missing wanted rule right after the previous wanted rule, or before the first
	 * kept one, or at the end. Walk the chain and emit insert positions in increasing order. */
	{
		/* kept wanted index → position in the current chain */
		size_t pos = 0, first_kept_pos = (size_t)-1;
		int *kpos = malloc((nw + 1) * sizeof *kpos);
		if (!kpos)
			goto oom;
		for (size_t i = 0; i < nw; i++)
			kpos[i] = -1;
		for (size_t i = 0; i < nh; i++) {
			if (!hv[i].keep)
				continue;
			if (hv[i].match >= 0) {
				kpos[hv[i].match] = (int)pos;
				if (first_kept_pos == (size_t)-1)
					first_kept_pos = pos;
			}
			pos++;
		}
		size_t chain_len = pos;
		/* insertion point for a new rule: after the last placed wanted rule before it */
		size_t shift = 0; /* rules inserted so far (all before later insertion points) */
		long last = -1;	  /* final position of the previous wanted rule, -1 none */
		for (size_t i = 0; i < nw; i++) {
			if (isdup[i])
				continue;
			if (wkept[i]) {
				last = (long)(kpos[i] + shift);
				st->kept++;
				continue;
			}
			size_t at;
			if (last >= 0)
				at = (size_t)last + 1;
			else if (first_kept_pos != (size_t)-1)
				at = first_kept_pos + shift;
			else
				at = chain_len + shift;
			if (!iptc_insert_entry(chain, &wants[i].bl->u.e, (unsigned)at, h)) {
				free(kpos);
				iptc_fail(e, "adding a rule", table);
				rk_err_prefix(e, "chain %s (%s)", chain, wants[i].key);
				goto out;
			}
			shift++;
			last = (long)at;
			st->added++;
			(*changed)++;
		}
		free(kpos);
	}
	rc = 0;
	goto out;
oom:
	rc = rk_errf(e, ENOMEM, "iptables chain %s: out of memory", chain);
out:
	kset_free(&ks);
	free(hv);
	free(seq);
	free(seqpos);
	free(seqkeep);
	free(wkept);
	free(isdup);
	return rc;
}

/* One table: init, ensure chains and jumps, sync each owned chain, commit once. */
static int apply_table(const char *table, struct want *wants, size_t nw, const struct scope *sc, int sync,
		       rk_fw_stats *st, rk_err *e)
{
	if (rk_iptc_load(e) < 0)
		return -1;
	for (int attempt = 0;; attempt++) {
		rk_fw_stats local = {0};
		int changed = 0, rc = 0;
		struct xtc_handle *h = iptc_init(table);
		if (!h)
			return iptc_fail(e, "reading the table (iptc_init)", table);
		for (size_t i = 0; i < N_OWNED && rc == 0; i++)
			if (!strcmp(OWNED[i].table, table))
				rc = ensure_chain(h, table, OWNED[i].chain, &changed, e);
		for (size_t i = 0; i < N_JUMPS && rc == 0; i++)
			if (!strcmp(JUMPS[i].table, table))
				rc = ensure_jump(h, &JUMPS[i], &local.jumps_added, &changed, e);
		for (size_t i = 0; i < N_OWNED && rc == 0 && sync; i++) {
			if (strcmp(OWNED[i].table, table))
				continue;
			/* the wanted rules of this chain, in order */
			size_t k = 0;
			struct want *cw = malloc((nw + 1) * sizeof *cw);
			if (!cw) {
				rc = rk_errf(e, ENOMEM, "iptables: out of memory");
				break;
			}
			for (size_t j = 0; j < nw; j++)
				if (!strcmp(wants[j].r->table, table) && !strcmp(wants[j].r->chain, OWNED[i].chain))
					cw[k++] = wants[j];
			rc = sync_chain(h, table, OWNED[i].chain, cw, k, sc, &local, &changed, e);
			free(cw);
		}
		if (rc == 0 && changed) {
			if (!iptc_commit(h)) {
				int err = errno;
				iptc_free(h);
				if (err == EAGAIN && attempt < 3) {
					rk_debug(SUBSYS, "table %s changed while we wrote it; retrying", table);
					continue;
				}
				errno = err;
				return iptc_fail(e, "committing the changes", table);
			}
			local.commits++;
		}
		iptc_free(h);
		if (rc < 0)
			return rc;
		st->added += local.added, st->deleted += local.deleted, st->kept += local.kept;
		st->jumps_added += local.jumps_added, st->commits += local.commits;
		return 0;
	}
}

static int do_apply(const rk_fw_rule *rules, size_t n, const struct scope *sc, int sync, rk_fw_stats *stats, rk_err *e);

int rk_fw_ensure(rk_err *e)
{
	return do_apply(NULL, 0, NULL, 0, NULL, e);
}

int rk_fw_apply(const rk_fw_rule *rules, size_t n, const char *owner, rk_fw_stats *stats, rk_err *e)
{
	if (!owner)
		return do_apply(rules, n, NULL, 1, stats, e);
	return rk_fw_apply_owners(rules, n, &owner, 1, stats, e);
}

int rk_fw_apply_owners(const rk_fw_rule *rules, size_t n, const char *const *owners, size_t nowners, rk_fw_stats *stats,
		       rk_err *e)
{
	if (stats)
		*stats = (rk_fw_stats){0};
	for (size_t i = 0; i < nowners; i++)
		if (strlen(owners[i]) >= sizeof((rk_fw_rule *)0)->comment)
			return rk_errf(e, EINVAL, "iptables: owner '%.40s...' is longer than a comment can be",
				       owners[i]);
	struct scope sc = {calloc(nowners + 1, sizeof *sc.owners), nowners};
	if (!sc.owners)
		return rk_errf(e, ENOMEM, "iptables: out of memory for %zu owners", nowners);
	memcpy(sc.owners, owners, nowners * sizeof *owners);
	qsort(sc.owners, nowners, sizeof *sc.owners, cmp_str);
	int rc = do_apply(rules, n, &sc, 1, stats, e);
	free(sc.owners);
	return rc;
}

static int do_apply(const rk_fw_rule *rules, size_t n, const struct scope *sc, int sync, rk_fw_stats *stats, rk_err *e)
{
	rk_fw_stats st = {0};
	struct want *w = calloc(n + 1, sizeof *w);
	struct blob *bl = calloc(n + 1, sizeof *bl);
	int rc = -1;
	if (!w || !bl) {
		rc = rk_errf(e, ENOMEM, "iptables: out of memory for %zu rules", n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const rk_fw_rule *r = &rules[i];
		if (rk_fw_rule_validate(r, e) < 0) {
			rk_err_prefix(e, "iptables: rule %zu of %zu", i + 1, n);
			goto out;
		}
		if (!in_scope(sc, r->comment)) {
			if (sc->n == 1)
				rk_errf(e, EINVAL,
					"iptables: rule %zu of %zu has comment '%s' but the change is scoped to owner "
					"'%s'; "
					"every rule of a scoped change must carry the owner's comment",
					i + 1, n, r->comment, sc->owners[0]);
			else
				rk_errf(e, EINVAL,
					"iptables: rule %zu of %zu has comment '%s', which is not one of the %zu "
					"owners the "
					"change is scoped to; every rule of a scoped change must carry one of their "
					"comments",
					i + 1, n, r->comment, sc->n);
			goto out;
		}
		struct drule d;
		w[i].r = r;
		w[i].bl = &bl[i];
		if (canon(r, 0, &d, &bl[i], e) < 0)
			goto out;
		if (format_drule(&d, w[i].key, sizeof w[i].key) >= sizeof w[i].key) { /* not with the field sizes */
			rk_errf(e, EINVAL, "iptables: rule %zu of %zu is longer than %d characters as text", i + 1, n,
				KEY_MAX - 1);
			goto out;
		}
	}
	int lock = xt_lock(e);
	if (lock == -1)
		goto out;
	rc = 0;
	for (size_t t = 0; t < 2 && rc == 0; t++)
		rc = apply_table(TABLES[t], w, n, sc, sync, &st, e);
	xt_unlock(lock);
	if (rc == 0 && (st.added || st.deleted || st.jumps_added)) {
		char who[40];
		snprintf(who, sizeof who, "%zu owners", sc ? sc->n : 0);
		rk_debug(SUBSYS, "applied %s: +%u -%u =%u rules, +%u jumps, %u commits",
			 !sc		      ? "all"
				 : sc->n == 1 ? sc->owners[0]
					      : who,
			 st.added, st.deleted, st.kept, st.jumps_added, st.commits);
	}
out:
	if (stats)
		*stats = st;
	free(w);
	free(bl);
	return rc;
}

int rk_fw_load(rk_err *e)
{
	return rk_iptc_load(e);
}

int rk_fw_list(rk_fw_rule **out, size_t *n, rk_err *e)
{
	*out = NULL;
	*n = 0;
	if (rk_iptc_load(e) < 0)
		return -1;
	size_t cap = 32, cnt = 0;
	rk_fw_rule *v = malloc(cap * sizeof *v);
	if (!v)
		return rk_errf(e, ENOMEM, "iptables: out of memory");
	for (size_t t = 0; t < 2; t++) {
		struct xtc_handle *h = iptc_init(TABLES[t]);
		if (!h) {
			free(v);
			return iptc_fail(e, "reading the table (iptc_init)", TABLES[t]);
		}
		for (size_t i = 0; i < N_OWNED; i++) {
			if (strcmp(OWNED[i].table, TABLES[t]) || !iptc_is_chain(OWNED[i].chain, h))
				continue;
			for (const struct ipt_entry *en = iptc_first_rule(OWNED[i].chain, h); en;
			     en = iptc_next_rule(en, h)) {
				if (cnt == cap) {
					rk_fw_rule *nv = realloc(v, (cap *= 2) * sizeof *v);
					if (!nv) {
						iptc_free(h);
						free(v);
						return rk_errf(e, ENOMEM, "iptables: out of memory");
					}
					v = nv;
				}
				struct drule d;
				decode(en, iptc_get_target(en, h), TABLES[t], OWNED[i].chain, &d);
				format_drule(&d, d.r.text, sizeof d.r.text);
				v[cnt++] = d.r;
			}
		}
		iptc_free(h);
	}
	*out = v;
	*n = cnt;
	return 0;
}

int rk_fw_flush_all(rk_err *e)
{
	if (rk_iptc_load(e) < 0)
		return -1;
	int lock = xt_lock(e);
	if (lock == -1)
		return -1;
	int rc = 0;
	for (size_t t = 0; t < 2 && rc == 0; t++) {
		const char *table = TABLES[t];
		struct xtc_handle *h = iptc_init(table);
		if (!h) {
			rc = iptc_fail(e, "reading the table (iptc_init)", table);
			break;
		}
		int changed = 0;
		/* jumps from the built-in chains riklet manages */
		for (size_t j = 0; j < N_JUMPS && rc == 0; j++) {
			if (strcmp(JUMPS[j].table, table))
				continue;
			unsigned idx = 0;
			struct idxs del = {0};
			for (const struct ipt_entry *en = iptc_first_rule(JUMPS[j].from, h); en;
			     en = iptc_next_rule(en, h), idx++) {
				const char *tg = iptc_get_target(en, h);
				if (tg && !strcmp(tg, JUMPS[j].to) && idxs_push(&del, idx) < 0) {
					rc = rk_errf(e, ENOMEM, "iptables %s: out of memory listing the jumps", table);
					break;
				}
			}
			while (rc == 0 && del.n > 0) {
				if (!iptc_delete_num_entry(JUMPS[j].from, del.v[--del.n], h)) {
					rc = iptc_fail(e, "removing a jump", table);
					break;
				}
				changed++;
			}
			free(del.v);
		}
		for (size_t i = 0; i < N_OWNED && rc == 0; i++) {
			const char *c = OWNED[i].chain;
			if (strcmp(OWNED[i].table, table) || !iptc_is_chain(c, h))
				continue;
			if (!iptc_flush_entries(c, h)) {
				rc = iptc_fail(e, "flushing a chain", table);
				break;
			}
			changed++;
			unsigned refs = 0;
			if (iptc_get_references(&refs, c, h) && refs > 0) {
				rk_warn(SUBSYS,
					"chain %s/%s is still jumped to from %u rule(s) riklet does not own; left "
					"empty. "
					"Remove those jumps (iptables-legacy -t %s -S | grep %s) and rerun the cleanup",
					table, c, refs, table, c);
				continue;
			}
			if (!iptc_delete_chain(c, h)) {
				rc = iptc_fail(e, "deleting a chain", table);
				break;
			}
		}
		if (rc == 0 && changed && !iptc_commit(h))
			rc = iptc_fail(e, "committing the cleanup", table);
		iptc_free(h);
	}
	xt_unlock(lock);
	return rc;
}
