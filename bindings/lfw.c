/* lfw.c — `riklet.fw`: core/fw (riklet-owned iptables chains, one libiptc commit per table) for
 * Lua. The commit itself runs on the loop thread (a thousand rules take milliseconds, and libiptc
 * is not thread-safe); the xtables lock is not waited for there: while another program holds it,
 * apply/ensure/flush_all yield the calling task and retry every 10 ms, for up to 3 s.
 *
 * A rule is a plain table (the same shape policies/network.lua returns):
 *   { chain = "RIKLET" | "RIKLET-POSTROUTING" | "RIKLET-FORWARD",   -- required
 *     table = "nat" | "filter",        -- optional: follows from chain
 *     target = "DNAT" | "MASQUERADE" | "ACCEPT" | "DROP" | "RETURN",
 *                                      -- optional: DNAT in RIKLET, MASQUERADE in
 *                                      -- RIKLET-POSTROUTING, ACCEPT in RIKLET-FORWARD
 *     proto = "tcp" | "udp", dport = 8080,  to = "10.89.0.2:80",   -- DNAT
 *     src = "[!]CIDR", dst = "[!]CIDR", iif = "[!]name[+]", oif = "[!]name[+]",
 *     ctstate = "RELATED,ESTABLISHED",
 *     comment = "riklet:<instance-id>" }  -- the owner tag
 * e.g. {chain="RIKLET", proto="tcp", dport=8080, to="10.0.0.2:80", comment="riklet:inst1"}.
 * Rules from fw.list() also carry text (as `iptables -S` prints it) and foreign = true when the
 * rule has parts riklet never writes (someone else put it there).
 *
 * An unknown key or a bad value in a rule is an expected failure (rules come from policies):
 * nil, "rule N: ..." naming the key. A non-table argument raises.
 *
 *   fw.apply(rules[, {owner = "riklet:id"} | {owners = {"riklet:a", "riklet:b", ...}}])
 *       -> {added, deleted, kept, jumps_added, commits} | nil, err
 *       rules is the whole desired set, or with owner the whole set of that owner, with owners the
 *       whole set of each of them, in one commit (others untouched)
 *   fw.list() -> array of rules currently in riklet's chains
 *   fw.load() -> true | nil, err          libip4tc loaded (every other call loads it first); err
 *                                         names the library, and the package to install (riklet check)
 *   fw.ensure() -> true                   chains and jumps only
 *   fw.flush_all() -> true                remove riklet's chains and jumps (riklet cleanup)
 *   fw.format(rule) -> "-A RIKLET ..." | nil, err
 *   fw.validate(rule) -> true | nil, err */
#include <errno.h>
#include <string.h>

#include "fw.h"
#include "lrk.h"

static const char *KEYS[] = {"chain", "table", "target",  "proto",   "dport", "to",	 "src", "dst",
			     "iif",   "oif",   "ctstate", "comment", "text",  "foreign", NULL};

static int copy_field(lua_State *L, int idx, const char *k, char *dst, size_t cap, int n, char *err, size_t errlen)
{
	lua_getfield(L, idx, k);
	int t = lua_type(L, -1);
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	if (t != LUA_TSTRING) {
		snprintf(err, errlen, "rule %d: %s must be a string, not a %s", n, k, lua_typename(L, t));
		lua_pop(L, 1);
		return -1;
	}
	size_t len;
	const char *s = lua_tolstring(L, -1, &len);
	if (len >= cap || strlen(s) != len) {
		snprintf(err, errlen, "rule %d: %s '%.40s' is too long (at most %zu characters) or holds a NUL", n, k,
			 s, cap - 1);
		lua_pop(L, 1);
		return -1;
	}
	memcpy(dst, s, len + 1);
	lua_pop(L, 1);
	return 0;
}

/* Fill r from the table at idx (rule number n for messages). 0, or -1 with err. */
static int to_rule(lua_State *L, int idx, int n, rk_fw_rule *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof *r);
	if (!lua_istable(L, idx)) {
		snprintf(err, errlen, "rule %d is a %s, not a table", n, luaL_typename(L, idx));
		return -1;
	}
	/* unknown keys are refused, naming the key */
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		int known = 0;
		if (lua_type(L, -1) == LUA_TSTRING)
			for (const char **k = KEYS; *k; k++)
				if (!strcmp(*k, lua_tostring(L, -1)))
					known = 1;
		if (!known) {
			snprintf(err, errlen,
				 "rule %d: unknown key '%s' (known: chain, table, target, proto, dport, to, src, "
				 "dst, iif, oif, ctstate, comment)",
				 n, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1));
			lua_pop(L, 1);
			return -1;
		}
	}
	if (copy_field(L, idx, "chain", r->chain, sizeof r->chain, n, err, errlen) < 0 ||
	    copy_field(L, idx, "table", r->table, sizeof r->table, n, err, errlen) < 0 ||
	    copy_field(L, idx, "target", r->target, sizeof r->target, n, err, errlen) < 0 ||
	    copy_field(L, idx, "proto", r->proto, sizeof r->proto, n, err, errlen) < 0 ||
	    copy_field(L, idx, "to", r->to, sizeof r->to, n, err, errlen) < 0 ||
	    copy_field(L, idx, "src", r->src, sizeof r->src, n, err, errlen) < 0 ||
	    copy_field(L, idx, "dst", r->dst, sizeof r->dst, n, err, errlen) < 0 ||
	    copy_field(L, idx, "iif", r->iif, sizeof r->iif, n, err, errlen) < 0 ||
	    copy_field(L, idx, "oif", r->oif, sizeof r->oif, n, err, errlen) < 0 ||
	    copy_field(L, idx, "ctstate", r->ctstate, sizeof r->ctstate, n, err, errlen) < 0 ||
	    copy_field(L, idx, "comment", r->comment, sizeof r->comment, n, err, errlen) < 0)
		return -1;
	lua_getfield(L, idx, "dport");
	if (!lua_isnil(L, -1)) {
		lua_Number d = lua_tonumber(L, -1);
		if (!lua_isnumber(L, -1) || d != (lua_Number)(int)d || d < 1 || d > 65535) {
			snprintf(err, errlen, "rule %d: dport must be an integer 1..65535", n);
			lua_pop(L, 1);
			return -1;
		}
		r->dport = (uint16_t)d;
	}
	lua_pop(L, 1);
	if (!r->chain[0]) {
		snprintf(err, errlen, "rule %d: chain is required (RIKLET, RIKLET-POSTROUTING or RIKLET-FORWARD)", n);
		return -1;
	}
	const char *table = !strcmp(r->chain, RK_FW_CHAIN_FWD) ? "filter" : "nat";
	if (!r->table[0])
		strcpy(r->table, table);
	if (!r->target[0])
		strcpy(r->target,
		       !strcmp(r->chain, RK_FW_CHAIN_DNAT)	     ? "DNAT"
			       : !strcmp(r->chain, RK_FW_CHAIN_POST) ? "MASQUERADE"
								     : "ACCEPT");
	return 0;
}

static void set_str(lua_State *L, const char *k, const char *v)
{
	if (v && v[0]) {
		lua_pushstring(L, v);
		lua_setfield(L, -2, k);
	}
}

static void push_rule(lua_State *L, const rk_fw_rule *r)
{
	lua_createtable(L, 0, 12);
	set_str(L, "table", r->table);
	set_str(L, "chain", r->chain);
	set_str(L, "target", r->target);
	set_str(L, "proto", r->proto);
	if (r->dport) {
		lua_pushinteger(L, r->dport);
		lua_setfield(L, -2, "dport");
	}
	set_str(L, "to", r->to);
	set_str(L, "src", r->src);
	set_str(L, "dst", r->dst);
	set_str(L, "iif", r->iif);
	set_str(L, "oif", r->oif);
	set_str(L, "ctstate", r->ctstate);
	set_str(L, "comment", r->comment);
	set_str(L, "text", r->text);
	lua_pushboolean(L, r->foreign);
	lua_setfield(L, -2, "foreign");
}

/* ---- waiting for the xtables lock without blocking the loop ---- */
#define LOCK_RETRY_MS 10
#define LOCK_WAIT_MS 3000

enum fw_op { OP_APPLY, OP_ENSURE, OP_FLUSH };
struct fwjob {
	enum fw_op op;
	rk_fw_rule *rules;
	size_t n;
	char *owner;
	char **owners; /* with owners = {...}: nowners strings */
	size_t nowners;
	uint64_t deadline;
	lrk_wait w;
};

static void push_stats(lua_State *L, const rk_fw_stats *st)
{
	lua_createtable(L, 0, 5);
	lua_pushinteger(L, st->added);
	lua_setfield(L, -2, "added");
	lua_pushinteger(L, st->deleted);
	lua_setfield(L, -2, "deleted");
	lua_pushinteger(L, st->kept);
	lua_setfield(L, -2, "kept");
	lua_pushinteger(L, st->jumps_added);
	lua_setfield(L, -2, "jumps_added");
	lua_pushinteger(L, st->commits);
	lua_setfield(L, -2, "commits");
}

/* Run the job (the lock is held or will be waited for by core) and push its results. */
static int fwjob_run(lua_State *L, struct fwjob *j)
{
	rk_fw_stats st = {0};
	rk_err e = {0};
	int r = j->op == OP_APPLY && j->owners
		? rk_fw_apply_owners(j->rules, j->n, (const char *const *)j->owners, j->nowners, &st, &e)
		: j->op == OP_APPLY  ? rk_fw_apply(j->rules, j->n, j->owner, &st, &e)
		: j->op == OP_ENSURE ? rk_fw_ensure(&e)
				     : rk_fw_flush_all(&e);
	if (r < 0)
		return lrk_fail_err(L, &e);
	if (j->op == OP_APPLY)
		push_stats(L, &st);
	else
		lua_pushboolean(L, 1);
	return 1;
}

static void fwjob_free(struct fwjob *j)
{
	free(j->rules);
	free(j->owner);
	for (size_t i = 0; j->owners && i < j->nowners; i++)
		free(j->owners[i]);
	free(j->owners);
	free(j);
}

static void lock_retry(void *ud)
{
	struct fwjob *j = ud;
	lua_State *co = lrk_wake_begin(j->w);
	if (!co) { /* the task is gone */
		fwjob_free(j);
		return;
	}
	rk_err e = {0};
	int got = rk_fw_lock_try(&e);
	if (got == 0 && rk_now_ms() < j->deadline) {
		if (rk_loop_timer(lrk_loop(co), LOCK_RETRY_MS, lock_retry, j))
			return;
		got = rk_errf(&e, ENOMEM, "out of memory arming the xtables lock retry timer");
	}
	int n;
	if (got < 0)
		n = lrk_fail_err(co, &e);
	else if (got == 0)
		n = lrk_fail(co,
			     "iptables: the xtables lock %s stayed held for 3 s by another program (an iptables "
			     "command or another firewall manager); find it with `fuser -v %s` and retry",
			     getenv("XTABLES_LOCKFILE") ? getenv("XTABLES_LOCKFILE") : "/run/xtables.lock",
			     getenv("XTABLES_LOCKFILE") ? getenv("XTABLES_LOCKFILE") : "/run/xtables.lock");
	else {
		n = fwjob_run(co, j);
		rk_fw_unlock();
	}
	lrk_wait w = j->w;
	fwjob_free(j);
	lrk_wake_end(w, n);
}

/* Take the lock now and run, or (in a task, lock busy) yield and retry from a timer. Outside a
 * task core waits for the lock itself (blocking, up to 3 s). Takes ownership of j. */
static int fwjob_start(lua_State *L, struct fwjob *j)
{
	rk_err e = {0};
	int got = lrk_in_task(L) ? rk_fw_lock_try(&e) : 1;
	if (got != 0) {
		int n = got < 0 ? lrk_fail_err(L, &e) : fwjob_run(L, j);
		if (lrk_in_task(L))
			rk_fw_unlock();
		fwjob_free(j);
		return n;
	}
	j->deadline = rk_now_ms() + LOCK_WAIT_MS;
	j->w = lrk_wait_begin(L);
	if (!rk_loop_timer(lrk_loop(L), LOCK_RETRY_MS, lock_retry, j)) {
		fwjob_free(j);
		return luaL_error(L, "out of memory arming a timer");
	}
	return lua_yield(L, 0);
}

static struct fwjob *fwjob_new(lua_State *L, enum fw_op op)
{
	struct fwjob *j = calloc(1, sizeof *j);
	if (!j)
		luaL_error(L, "out of memory");
	j->op = op;
	return j;
}

/* Copy the owners = {...} option (at index idx) into j. -> 0 | -1 with err filled */
static int copy_owners(lua_State *L, int idx, struct fwjob *j, char *err, size_t errlen)
{
	size_t n = lua_objlen(L, idx);
	j->owners = calloc(n + 1, sizeof *j->owners);
	if (!j->owners)
		return snprintf(err, errlen, "iptables: out of memory for %zu owners", n), -1;
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, idx, (int)i + 1);
		const char *o = lua_tostring(L, -1);
		if (lua_type(L, -1) != LUA_TSTRING || strlen(o) != lua_objlen(L, -1)) {
			lua_pop(L, 1);
			return snprintf(err, errlen, "fw.apply: owners[%zu] is not a string without NUL", i + 1), -1;
		}
		j->owners[i] = strdup(o);
		lua_pop(L, 1);
		if (!j->owners[i])
			return snprintf(err, errlen, "iptables: out of memory for %zu owners", n), -1;
		j->nowners = i + 1;
	}
	return 0;
}

/* fw.apply(rules[, {owner=} | {owners={...}}]) -> {added, deleted, kept, jumps_added, commits} | nil, err */
static int l_apply(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	const char *owner = NULL;
	int owners = 0;
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		lua_getfield(L, 2, "owner");
		owner = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
		lua_pop(L, 1); /* still referenced by the options table */
		lua_getfield(L, 2, "owners");
		if (!lua_isnil(L, -1)) {
			luaL_checktype(L, -1, LUA_TTABLE);
			if (owner)
				return luaL_error(L, "fw.apply: give owner or owners, not both");
			owners = lua_gettop(L);
		} else
			lua_pop(L, 1);
	}
	size_t n = lua_objlen(L, 1);
	rk_fw_rule *rules = calloc(n + 1, sizeof *rules);
	if (!rules)
		return lrk_fail(L, "iptables: out of memory for %zu rules", n);
	char err[512];
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, 1, (int)i + 1);
		int r = to_rule(L, lua_gettop(L), (int)i + 1, &rules[i], err, sizeof err);
		lua_pop(L, 1);
		if (r < 0) {
			free(rules);
			return lrk_fail(L, "%s", err);
		}
	}
	struct fwjob *j = calloc(1, sizeof *j);
	if (!j || (owner && !(j->owner = strdup(owner)))) {
		free(j);
		free(rules);
		return luaL_error(L, "out of memory");
	}
	j->op = OP_APPLY;
	j->rules = rules;
	j->n = n;
	if (owners && copy_owners(L, owners, j, err, sizeof err) < 0) {
		fwjob_free(j);
		return lrk_fail(L, "%s", err);
	}
	return fwjob_start(L, j);
}

/* fw.list() -> array of rules */
static int l_list(lua_State *L)
{
	rk_fw_rule *v;
	size_t n;
	rk_err e = {0};
	if (rk_fw_list(&v, &n, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		push_rule(L, &v[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(v);
	return 1;
}

/* fw.load() -> true | nil, err */
static int l_load(lua_State *L)
{
	rk_err e = {0};
	if (rk_fw_load(&e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

/* fw.ensure() -> true | nil, err */
static int l_ensure(lua_State *L)
{
	return fwjob_start(L, fwjob_new(L, OP_ENSURE));
}

/* fw.flush_all() -> true | nil, err */
static int l_flush_all(lua_State *L)
{
	return fwjob_start(L, fwjob_new(L, OP_FLUSH));
}

/* fw.format(rule) -> text | nil, err */
static int l_format(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	rk_fw_rule r;
	char err[512], buf[1024];
	if (to_rule(L, 1, 1, &r, err, sizeof err) < 0)
		return lrk_fail(L, "%s", err);
	rk_err e = {0};
	if (rk_fw_rule_format(&r, buf, sizeof buf, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushstring(L, buf);
	return 1;
}

/* fw.validate(rule) -> true | nil, err */
static int l_validate(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	rk_fw_rule r;
	char err[512];
	if (to_rule(L, 1, 1, &r, err, sizeof err) < 0)
		return lrk_fail(L, "%s", err);
	rk_err e = {0};
	if (rk_fw_rule_validate(&r, &e) < 0)
		return lrk_fail_err(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

static int open_fw(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"apply", l_apply},	    {"list", l_list},	  {"load", l_load},	    {"ensure", l_ensure},
		{"flush_all", l_flush_all}, {"format", l_format}, {"validate", l_validate}, {NULL, NULL},
	};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	lua_pushstring(L, RK_FW_CHAIN_DNAT);
	lua_setfield(L, -2, "CHAIN_DNAT");
	lua_pushstring(L, RK_FW_CHAIN_POST);
	lua_setfield(L, -2, "CHAIN_POST");
	lua_pushstring(L, RK_FW_CHAIN_FWD);
	lua_setfield(L, -2, "CHAIN_FWD");
	return 1;
}

LRK_MODULE("riklet.fw", open_fw)
