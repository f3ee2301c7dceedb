/* lsandbox.c — `riklet.sandbox`: operator policies run in their own Lua state.
 *
 * A box is a separate LuaJIT state (lua_newstate with a counting allocator), so a policy shares no
 * metatable, library table or global with the agent. Each call runs under three limits, and once
 * one is hit the call fails whatever the policy does next (its own pcall cannot swallow it):
 *  - memory: the allocator refuses to grow the state past `memory` bytes;
 *  - instructions: a count hook (JIT off, so every bytecode is counted) stops it after
 *    `instructions`; after any limit the hook raises on every instruction, so each pcall level
 *    the error passes through fails again at its next instruction;
 *  - wall clock: the same hook checks `deadline` seconds. Time inside C functions is bounded too:
 *    pattern functions refuse a pattern whose worst case on the subject exceeds PATTERN_STEPS
 *    matcher steps, table.sort refuses more than SORT_MAX elements, and every other library
 *    function is linear in data the memory cap bounds.
 * Arguments go in and results come out as plain data, copied with raw access: strings, numbers,
 * booleans, the JSON null (a light userdata given as opts.null) and tables of those (string or
 * number keys); never a function, userdata, thread or metatable. A cyclic, deeper than MAX_DEPTH
 * or bigger than MAX_VALUES value is refused with the path of the offending field.
 *
 *   sandbox.new{memory=, instructions=, deadline=, null=} -> box | nil, err
 *   box:load(name, source, chunkname[, base]) -> true | false, err, kind
 *       compile `source` (text only, never bytecode) with a fresh allowlisted environment (plus
 *       `base` = module `base`), run it, keep the table it returns as module `name`.
 *   box:call(name, fname, ...) -> true, results... | false, err, kind
 *       kind: "missing" (no such module/function), "argument" (an argument cannot cross),
 *       "limit" (memory, instructions or deadline hit: discard the box), "error" (the policy
 *       raised, or returned something that cannot cross). err has the policy's traceback.
 *   box:memory() -> bytes held by this state; box:close() (idempotent, also on __gc)
 *   sandbox.memory() -> bytes held by all sandbox states together */
#include <ctype.h>
#include <luajit.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrk.h"

#define BOX_MT "riklet.sandbox.box"
#define HOOK_EVERY 100	  /* instructions between two looks at the budget and the clock */
#define MAX_DEPTH 200	  /* nesting of a value crossing the boundary (JSON's limit too) */
#define MAX_VALUES 100000 /* values crossing the boundary in one call, each direction */
#define MAX_RESULTS 16
#define PATTERN_STEPS 2e7	   /* worst-case matcher steps of one pattern call (~0.2 s) */
#define SORT_MAX 100000		   /* elements table.sort accepts */
#define MAX_CALL_DEPTH 100	   /* nesting of library functions calling back into the policy */
#define HANDLER_RESERVE (1u << 20) /* extra bytes the error handler may use to write a traceback */
#define MESSAGE_MAX 4096	   /* bytes of a policy's error message kept (then "... (cut, N bytes)") */

static size_t g_total; /* bytes held by every sandbox state */
static const char MODULES_KEY = 0;

enum { PH_IDLE, PH_ARGS, PH_COMPILE, PH_RUN };

struct box {
	lua_State *S;
	size_t used, limit;
	long long budget, counted;
	uint64_t deadline_ms, window_ms;
	const char *tripped; /* "memory", "instructions", "deadline" or NULL */
	int in_handler, phase, missing, dead, cdepth;
	void *null;
	int handler_ref, docall_ref, doload_ref, env_ref;
};

static struct box *box_of(lua_State *S)
{
	void *ud;
	lua_getallocf(S, &ud);
	return ud;
}

static void *box_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
	struct box *b = ud;
	if (!p)
		osize = 0;
	if (nsize == 0) {
		free(p);
		b->used -= osize;
		g_total -= osize;
		return NULL;
	}
	size_t cap = b->limit + (b->in_handler ? HANDLER_RESERVE : 0);
	if (nsize > osize && b->used - osize + nsize > cap) {
		if (!b->tripped)
			b->tripped = "memory";
		return NULL;
	}
	void *q = realloc(p, nsize);
	if (!q)
		return NULL;
	b->used = b->used - osize + nsize;
	g_total = g_total - osize + nsize;
	return q;
}

static const char *trip_message(struct box *b, char *buf, size_t n)
{
	if (!b->tripped)
		snprintf(buf, n, "%s", "");
	else if (!strcmp(b->tripped, "memory"))
		snprintf(buf, n, "policy went over its memory cap (%zu MiB)", b->limit >> 20);
	else if (!strcmp(b->tripped, "instructions"))
		snprintf(buf, n, "policy ran past its instruction budget (%lld instructions: an endless loop?)",
			 b->budget);
	else
		snprintf(buf, n, "policy ran past its deadline of %.2f s", (double)b->window_ms / 1000.0);
	return buf;
}

static void box_hook(lua_State *S, lua_Debug *ar)
{
	(void)ar;
	struct box *b = box_of(S);
	if (!b->tripped) {
		b->counted += HOOK_EVERY;
		if (b->counted > b->budget)
			b->tripped = "instructions";
		else if (rk_now_ms() > b->deadline_ms)
			b->tripped = "deadline";
	}
	if (b->tripped) {
		/* from now on every instruction raises: no pcall level can carry on */
		lua_sethook(S, box_hook, LUA_MASKCOUNT, 1);
		char buf[160];
		luaL_error(S, "%s", trip_message(b, buf, sizeof buf));
	}
}

static void arm(struct box *b)
{
	b->counted = 0;
	b->tripped = NULL;
	b->in_handler = 0;
	b->cdepth = 0;
	b->missing = 0;
	b->deadline_ms = rk_now_ms() + b->window_ms;
}

/* ---- bounded library functions (inside the sandbox) ---------------------------------------- */

/* End of the [set] starting at p[i] == '[' (as Lua's classend). */
static size_t class_end(const char *p, size_t pl, size_t i)
{
	i++;
	if (i < pl && p[i] == '^')
		i++;
	do {
		if (i >= pl)
			return pl;
		if (p[i++] == '%' && i < pl)
			i++;
	} while (i < pl && p[i] != ']');
	return i + 1;
}

/* Does %x match byte c (as Lua's match_class)? -1: a class letter this check does not know. */
static int class_byte(int x, int c)
{
	int r;
	switch (tolower(x)) {
	case 'a':
		r = isalpha(c);
		break;
	case 'c':
		r = iscntrl(c);
		break;
	case 'd':
		r = isdigit(c);
		break;
	case 'l':
		r = islower(c);
		break;
	case 'p':
		r = ispunct(c);
		break;
	case 's':
		r = isspace(c);
		break;
	case 'u':
		r = isupper(c);
		break;
	case 'w':
		r = isalnum(c);
		break;
	case 'x':
		r = isxdigit(c);
		break;
	case 'z':
		r = c == 0;
		break;
	default:
		return isalpha(x) ? -1 : x == c;
	}
	return isupper(x) ? !r : r != 0;
}

/* The bytes the single-character item at p[i] matches (in[c] = 1), as Lua's singlematch, or all
 * of them when unsure; returns the index after the item. */
static size_t item_set(const char *p, size_t pl, size_t i, unsigned char in[256])
{
	const unsigned char *u = (const unsigned char *)p;
	size_t e = i + 1;
	int unsure = 0;
	for (int c = 0; c < 256; c++) {
		int m = 0;
		if (p[i] == '.') {
			m = 1;
		} else if (p[i] == '%' && i + 1 < pl) {
			e = i + 2;
			m = class_byte(u[i + 1], c);
		} else if (p[i] == '[') {
			e = class_end(p, pl, i);
			size_t ec = e - 1, j = i + 1;
			int neg = j < pl && p[j] == '^';
			if (e > pl || p[e - 1] != ']') { /* malformed: the library raises */
				unsure = 1;
				break;
			}
			for (j += (size_t)neg; j < ec; j++) {
				if (p[j] == '%' && j + 1 < ec) {
					int r = class_byte(u[++j], c);
					unsure |= r < 0;
					m |= r > 0;
				} else if (p[j + 1] == '-' && j + 2 < ec) {
					m |= u[j] <= c && c <= u[j + 2];
					j += 2;
				} else {
					m |= u[j] == c;
				}
			}
			m = neg ? !m : m;
		} else {
			m = u[i] == c;
		}
		unsure |= m < 0;
		in[c] = m > 0;
	}
	if (unsure)
		memset(in, 1, 256);
	return e;
}

static size_t longest_run(const unsigned char *s, size_t n, const unsigned char in[256])
{
	size_t best = 0, cur = 0;
	for (size_t i = 0; i < n; i++) {
		cur = in[s[i]] ? cur + 1 : 0;
		if (cur > best)
			best = cur;
	}
	return best;
}

/* log of an upper bound of the steps Lua's backtracking matcher takes for pattern p on subject s:
 * a quantified item (* + -) tries at most (longest run of subject bytes it matches + 1) lengths, a
 * start position, %b or back-reference at most n + 1; these choices are ordered positions in the
 * subject, so also at most C(n + k, k) together; times 2 per `?`, times the pattern length. */
static double pattern_log_steps(const char *p, size_t pl, const char *s, size_t n, int anchorable)
{
	int k = 0, opt = 0;
	double logn = log((double)n + 1), prod = 0;
	size_t i = 0;
	if (anchorable && pl > 0 && p[0] == '^') {
		i = 1;
	} else {
		k++;
		prod += logn;
	}
	while (i < pl) {
		if (p[i] == '(' || p[i] == ')' || (p[i] == '$' && i + 1 == pl)) {
			i++;
			continue;
		}
		if (p[i] == '%' && i + 1 < pl && (p[i + 1] == 'b' || isdigit((unsigned char)p[i + 1]))) {
			k++;
			prod += logn;
			i += p[i + 1] == 'b' ? 4 : 2;
			continue;
		}
		if (p[i] == '%' && i + 1 < pl && p[i + 1] == 'f') {
			i += 2;
			if (i < pl && p[i] == '[')
				i = class_end(p, pl, i);
			continue;
		}
		unsigned char in[256];
		i = item_set(p, pl, i, in);
		if (i < pl && (p[i] == '*' || p[i] == '+' || p[i] == '-')) {
			k++;
			prod += log((double)longest_run((const unsigned char *)s, n, in) + 1);
			i++;
		} else if (i < pl && p[i] == '?') {
			opt++;
			i++;
		}
	}
	double nn = (double)n + 1;
	double comb = lgamma(nn + k) - lgamma(nn) - lgamma((double)k + 1);
	return fmin(comb, prod) + opt * log(2.0) + log((double)pl + 1);
}

/* Library functions that call back into the policy (pcall, xpcall, coroutine.resume and wrap,
 * gsub, sort, tostring, format) go through protected_call: it looks at the limits before and
 * after, and once one is hit it raises again instead of returning, so no pcall level can carry on
 * (the hook alone cannot ensure that: near the top of the Lua stack LuaJIT cannot call it). It
 * also bounds how deep such calls nest: each is a C frame, and LuaJIT does not limit them (a
 * gsub calling itself from its replacement function overflowed the C stack). */
static void check_limits(lua_State *S, struct box *b)
{
	if (!b->tripped && rk_now_ms() > b->deadline_ms)
		b->tripped = "deadline";
	if (b->tripped) {
		char buf[160];
		lua_sethook(S, box_hook, LUA_MASKCOUNT, 1);
		luaL_error(S, "%s", trip_message(b, buf, sizeof buf));
	}
}

static int protected_call(lua_State *S, int nargs, int errfunc)
{
	struct box *b = box_of(S);
	check_limits(S, b);
	if (b->cdepth >= MAX_CALL_DEPTH)
		luaL_error(S, "library calls back into the policy nested deeper than %d", MAX_CALL_DEPTH);
	b->cdepth++;
	int rc = lua_pcall(S, nargs, LUA_MULTRET, errfunc);
	b->cdepth--;
	check_limits(S, b);
	return rc;
}

static int bounded_pcall(lua_State *S)
{
	luaL_checkany(S, 1);
	int rc = protected_call(S, lua_gettop(S) - 1, 0);
	lua_pushboolean(S, rc == 0);
	lua_insert(S, 1);
	return lua_gettop(S);
}

static int bounded_xpcall(lua_State *S)
{
	luaL_checkany(S, 2);
	lua_pushvalue(S, 2);
	lua_remove(S, 2);
	lua_insert(S, 1); /* handler, f, args... (LuaJIT's xpcall passes extra arguments) */
	int rc = protected_call(S, lua_gettop(S) - 2, 1);
	lua_pushboolean(S, rc == 0);
	lua_replace(S, 1);
	return lua_gettop(S);
}

/* The library's own function (upvalue 1) with these arguments, through protected_call; its errors
 * are raised again. */
static int call_original(lua_State *S)
{
	lua_pushvalue(S, lua_upvalueindex(1));
	lua_insert(S, 1);
	if (protected_call(S, lua_gettop(S) - 1, 0))
		return lua_error(S);
	return lua_gettop(S);
}

/* coroutine.wrap(f): the wrapped function resumes through protected_call too. */
static int bounded_wrap(lua_State *S)
{
	lua_pushvalue(S, lua_upvalueindex(1));
	lua_insert(S, 1);
	lua_call(S, lua_gettop(S) - 1, 1);
	lua_pushcclosure(S, call_original, 1);
	return 1;
}

/* string.find/match/gmatch/gsub: the library's own function (upvalue 1) after the bound check.
 * upvalue 2: 1 find (plain allowed), 2 match/gsub, 3 gmatch (no anchor). */
static int bounded_pattern(lua_State *S)
{
	size_t n, pl;
	const char *p;
	int how = (int)lua_tointeger(S, lua_upvalueindex(2));
	const char *subject = luaL_checklstring(S, 1, &n);
	p = luaL_checklstring(S, 2, &pl);
	int plain = how == 1 && lua_toboolean(S, 4);
	if (plain) {
		/* The library's plain search is quadratic (a 4 MB needle in 8 MB ran for 8 minutes, its
		 * deadline seen only after it returned): glibc's memmem is linear. Positions as LuaJIT's
		 * find: a negative init counts from the end, one past the end is clamped to it. */
		lua_Integer init = luaL_optinteger(S, 3, 1);
		if (init < 0)
			init += (lua_Integer)n;
		else
			init--;
		if (init < 0)
			init = 0;
		if ((size_t)init > n)
			init = (lua_Integer)n;
		const char *q = memmem(subject + init, n - (size_t)init, p, pl);
		if (!q) {
			lua_pushnil(S);
			return 1;
		}
		lua_pushinteger(S, (lua_Integer)(q - subject) + 1);
		lua_pushinteger(S, (lua_Integer)(q - subject) + (lua_Integer)pl);
		return 2;
	}
	if (pattern_log_steps(p, pl, subject, n, how != 3) > log(PATTERN_STEPS))
		return luaL_error(S,
				  "pattern \"%.40s\" on a subject of %d bytes could backtrack for too long (over %.0e "
				  "steps): use a simpler pattern, a plain find, or check the length first",
				  p, (int)n, PATTERN_STEPS);
	return call_original(S);
}

static int bounded_sort(lua_State *S)
{
	luaL_checktype(S, 1, LUA_TTABLE);
	if (lua_objlen(S, 1) > SORT_MAX)
		return luaL_error(S, "table.sort: %d elements, a policy may sort at most %d", (int)lua_objlen(S, 1),
				  SORT_MAX);
	return call_original(S);
}

static void wrap(lua_State *S, const char *lib, const char *name, lua_CFunction f, int how)
{
	lua_getglobal(S, lib);
	lua_getfield(S, -1, name);
	lua_pushinteger(S, how);
	lua_pushcclosure(S, f, 2);
	lua_setfield(S, -2, name);
	lua_pop(S, 1);
}

/* ---- plain data across the boundary ------------------------------------------------------------ */

struct copy {
	lua_State *from, *to;
	void *null;
	int values, depth, index, plain_only;
	const char *what; /* "argument" or "result" */
	const void *seen[MAX_DEPTH + 1];
	struct {
		int num;
		lua_Number n;
		const char *s;
		size_t len;
	} path[MAX_DEPTH + 1];
	char err[512];
};

/* Only the scalars: seen[i] and path[i] are written before they are read (entering level i), err
 * by copy_fail. A designated initializer zeroed all 8.5 KiB of the struct, twice per policy call:
 * 17 % of the instructions of an admission call (callgrind). */
static void copy_init(struct copy *c, lua_State *from, lua_State *to, void *null, const char *what, int plain_only)
{
	c->from = from;
	c->to = to;
	c->null = null;
	c->values = c->depth = c->index = 0;
	c->plain_only = plain_only;
	c->what = what;
	c->err[0] = '\0';
}

static int copy_fail(struct copy *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int copy_fail(struct copy *c, const char *fmt, ...)
{
	size_t o = (size_t)snprintf(c->err, sizeof c->err, "%s %d", c->what, c->index);
	for (int i = 0; i < c->depth && o < sizeof c->err; i++) {
		if (c->path[i].num)
			o += (size_t)snprintf(c->err + o, sizeof c->err - o, "[%.14g]", c->path[i].n);
		else
			o += (size_t)snprintf(c->err + o, sizeof c->err - o, ".%.*s",
					      (int)(c->path[i].len > 40 ? 40 : c->path[i].len), c->path[i].s);
	}
	if (o < sizeof c->err - 2) {
		c->err[o++] = ' ';
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err + o, sizeof c->err - o, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static int copy_value(struct copy *c, int idx);

static int copy_table(struct copy *c, int idx)
{
	lua_State *F = c->from, *T = c->to;
	const void *p = lua_topointer(F, idx);
	for (int i = 0; i < c->depth; i++)
		if (c->seen[i] == p)
			return copy_fail(c, "is a cyclic table (it contains itself): only plain data can cross");
	if (c->depth >= MAX_DEPTH)
		return copy_fail(c, "is nested deeper than %d levels", MAX_DEPTH);
	if (c->plain_only && lua_getmetatable(F, idx)) {
		lua_pop(F, 1);
		return copy_fail(c, "is a table with a metatable: only plain data can leave a policy");
	}
	if (!lua_checkstack(F, 4) || !lua_checkstack(T, 4))
		return copy_fail(c, "is nested too deep for the Lua stack");
	/* sized once for what it holds: grown key by key, a table of 8 fields was rehashed 4 times
	 * (most of a policy call's cost is these copies: 1,000 Pods re-asked at a restart) */
	int narr = (int)lua_objlen(F, idx), nall = 0;
	/* counted no further than the values left may fill: a hostile result's table of a million
	 * keys costs no more C-side CPU here than its copy, which fails at MAX_VALUES */
	int room = MAX_VALUES - c->values > 0 ? MAX_VALUES - c->values : 0;
	lua_pushnil(F);
	while (lua_next(F, idx)) {
		lua_pop(F, 1);
		if (++nall >= room) {
			lua_pop(F, 1);
			break;
		}
	}
	if (nall > room)
		nall = room;
	if (narr > nall)
		narr = nall;
	lua_createtable(T, narr, nall - narr);
	c->seen[c->depth] = p;
	lua_pushnil(F);
	while (lua_next(F, idx)) {
		int kt = lua_type(F, -2);
		c->path[c->depth].num = kt == LUA_TNUMBER;
		if (kt == LUA_TNUMBER) {
			c->path[c->depth].n = lua_tonumber(F, -2);
			lua_pushnumber(T, c->path[c->depth].n);
		} else if (kt == LUA_TSTRING) {
			c->path[c->depth].s = lua_tolstring(F, -2, &c->path[c->depth].len);
			lua_pushlstring(T, c->path[c->depth].s, c->path[c->depth].len);
		} else {
			return copy_fail(c, "has a key of type %s: keys are strings or numbers", lua_typename(F, kt));
		}
		c->depth++;
		if (copy_value(c, lua_gettop(F)) < 0)
			return -1;
		c->depth--;
		lua_rawset(T, -3);
		lua_pop(F, 1);
	}
	return 0;
}

static int copy_value(struct copy *c, int idx)
{
	lua_State *F = c->from, *T = c->to;
	if (++c->values > MAX_VALUES)
		return copy_fail(c, "is too big: at most %d values cross the sandbox in one call", MAX_VALUES);
	switch (lua_type(F, idx)) {
	case LUA_TNIL:
		lua_pushnil(T);
		return 0;
	case LUA_TBOOLEAN:
		lua_pushboolean(T, lua_toboolean(F, idx));
		return 0;
	case LUA_TNUMBER:
		lua_pushnumber(T, lua_tonumber(F, idx));
		return 0;
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(F, idx, &n);
		lua_pushlstring(T, s, n);
		return 0;
	}
	case LUA_TLIGHTUSERDATA:
		if (c->null && lua_touserdata(F, idx) == c->null) {
			lua_pushlightuserdata(T, c->null);
			return 0;
		}
		return copy_fail(c, "is a light userdata: only json.null can cross");
	case LUA_TTABLE:
		return copy_table(c, idx);
	default:
		return copy_fail(c, "is a %s: only strings, numbers, booleans, null and tables of them can cross",
				 lua_typename(F, lua_type(F, idx)));
	}
}

/* ---- calls into the box -------------------------------------------------------------------------- */

struct callctx {
	struct box *b;
	lua_State *L;
	int first, nargs;
	const char *name, *fname;
	const char *src, *chunk, *base;
	size_t len;
};

/* The policy's error message as one line of text for the log, the record and the scheduler:
 * control bytes (a newline could forge a log line, a NUL cut the text) and bytes that are not
 * UTF-8 escaped as in json.quote, cut after MESSAGE_MAX bytes (a megabyte-long error() would
 * travel as the instance's reason). Pushes the result. */
static const char *push_message(lua_State *S, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	luaL_Buffer buf;
	luaL_buffinit(S, &buf);
	size_t i = 0;
	while (i < n && i < MESSAGE_MAX) {
		unsigned c = u[i];
		char esc[16];
		size_t k = rk_utf8_seq(u, n, i);
		if (c == '\n')
			luaL_addstring(&buf, "\\n");
		else if (c == '\t')
			luaL_addstring(&buf, "\\t");
		else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof esc, "\\u%04x", c);
			luaL_addstring(&buf, esc);
		} else if (!k) {
			snprintf(esc, sizeof esc, "\\x%02x", c);
			luaL_addstring(&buf, esc);
		} else {
			luaL_addlstring(&buf, s + i, k);
			i += k;
			continue;
		}
		i++;
	}
	if (i < n) {
		char more[64];
		snprintf(more, sizeof more, "... (cut, %zu bytes)", n);
		luaL_addstring(&buf, more);
	}
	luaL_pushresult(&buf);
	return lua_tostring(S, -1);
}

/* Error handler inside the box: the message (never running an error object's metamethods, made
 * safe by push_message) and the policy's traceback. */
static int box_handler(lua_State *S)
{
	struct box *b = box_of(S);
	b->in_handler = 1;
	const char *msg;
	if (lua_type(S, 1) == LUA_TSTRING || lua_type(S, 1) == LUA_TNUMBER) {
		size_t n;
		const char *s = lua_tolstring(S, 1, &n);
		msg = push_message(S, s, n);
	} else
		msg = lua_pushfstring(S, "(error object is a %s value; a policy should raise a string)",
				      luaL_typename(S, 1));
	if (b->phase == PH_COMPILE || b->phase == PH_ARGS || b->missing)
		return 1;
	luaL_traceback(S, S, msg, 1);
	return 1;
}

static void push_modules(lua_State *S)
{
	lua_pushlightuserdata(S, (void *)&MODULES_KEY);
	lua_rawget(S, LUA_REGISTRYINDEX);
}

static int box_docall(lua_State *S)
{
	struct callctx *cc = lua_touserdata(S, 1);
	struct box *b = cc->b;
	lua_settop(S, 0);
	luaL_checkstack(S, 3 * MAX_DEPTH + cc->nargs + 20, "policy arguments");
	push_modules(S);
	lua_getfield(S, 1, cc->name);
	if (!lua_istable(S, 2)) {
		b->missing = 1;
		return luaL_error(S, "policy %s is not loaded", cc->name);
	}
	lua_getfield(S, 2, cc->fname); /* may run the module's own __index (e.g. to base), in budget */
	if (!lua_isfunction(S, 3)) {
		b->missing = 1;
		return luaL_error(S, "policy %s has no function '%s'", cc->name, cc->fname);
	}
	struct copy c;
	copy_init(&c, cc->L, S, b->null, "argument", 0);
	b->phase = PH_ARGS;
	for (int i = 0; i < cc->nargs; i++) {
		c.index = i + 1;
		c.depth = 0;
		if (copy_value(&c, cc->first + i) < 0)
			return luaL_error(S, "%s", c.err);
	}
	b->phase = PH_RUN;
	lua_call(S, cc->nargs, LUA_MULTRET);
	/* room to walk the results without growing the stack outside a protected call */
	luaL_checkstack(S, 3 * MAX_DEPTH + 20, "policy results");
	return lua_gettop(S) - 2;
}

static int box_doload(lua_State *S)
{
	struct callctx *cc = lua_touserdata(S, 1);
	struct box *b = cc->b;
	lua_settop(S, 0);
	b->phase = PH_COMPILE;
	if (luaL_loadbufferx(S, cc->src, cc->len, cc->chunk, "t"))
		return lua_error(S);
	b->phase = PH_RUN;
	lua_rawgeti(S, LUA_REGISTRYINDEX, b->env_ref);
	lua_call(S, 0, 1);
	if (cc->base) {
		push_modules(S);
		lua_getfield(S, -1, cc->base);
		lua_setfield(S, -3, "base");
		lua_pop(S, 1);
	}
	lua_setfenv(S, 1);
	lua_call(S, 0, 1);
	if (!lua_istable(S, -1)) {
		b->missing = 1;
		return luaL_error(S, "must return a table of functions, it returned a %s", luaL_typename(S, -1));
	}
	push_modules(S);
	lua_pushvalue(S, -2);
	lua_setfield(S, -2, cc->name);
	return 0;
}

/* What a box's error left on its stack, as a message for the agent. */
static void push_box_error(lua_State *L, struct box *b, int rc)
{
	char buf[160];
	const char *msg = lua_type(b->S, -1) == LUA_TSTRING ? lua_tostring(b->S, -1) : "(no message)";
	if (rc == LUA_ERRMEM && b->tripped)
		msg = trip_message(b, buf, sizeof buf);
	else if (rc == LUA_ERRERR)
		msg = b->tripped ? trip_message(b, buf, sizeof buf)
				 : "error in the error handler (the policy exhausted its stack?)";
	lua_pushboolean(L, 0);
	lua_pushstring(L, msg);
	lua_pushstring(L, b->tripped ? "limit" : b->missing ? "missing" : b->phase == PH_ARGS ? "argument" : "error");
}

static struct box *check_open(lua_State *L)
{
	struct box *b = luaL_checkudata(L, 1, BOX_MT);
	if (!b->S)
		luaL_error(L, "this policy sandbox is closed");
	return b;
}

/* A box that hit a limit is not used again: its policy may have left it in any state. */
static int refuse_dead(lua_State *L, struct box *b)
{
	if (!b->dead)
		return 0;
	lua_pushboolean(L, 0);
	lua_pushstring(L, "this policy sandbox hit a limit earlier and is discarded");
	lua_pushstring(L, "limit");
	return 3;
}

/* Run fn_ref (box_docall or box_doload) with cc in the box, under fresh limits. */
static int run_in_box(struct box *b, struct callctx *cc, int fn_ref, int nresults)
{
	lua_State *S = b->S;
	lua_settop(S, 0);
	arm(b);
	b->phase = PH_IDLE;
	lua_rawgeti(S, LUA_REGISTRYINDEX, b->handler_ref);
	lua_rawgeti(S, LUA_REGISTRYINDEX, fn_ref);
	lua_pushlightuserdata(S, cc);
	int rc = lua_pcall(S, 1, nresults, 1);
	b->in_handler = 0;
	b->dead = b->tripped != NULL;
	return rc;
}

/* box:call(name, fname, ...) -> true, results... | false, err, kind */
static int l_call(lua_State *L)
{
	struct box *b = check_open(L);
	struct callctx cc = {.b = b, .L = L, .name = luaL_checkstring(L, 2), .fname = luaL_checkstring(L, 3)};
	cc.first = 4;
	cc.nargs = lua_gettop(L) - 3;
	luaL_checkstack(L, 3 * MAX_DEPTH + MAX_RESULTS + 20, "policy call");
	int top = lua_gettop(L);
	if (refuse_dead(L, b))
		return 3;
	lua_State *S = b->S;
	int rc = run_in_box(b, &cc, b->docall_ref, LUA_MULTRET);
	lua_settop(L, top);
	if (rc) {
		push_box_error(L, b, rc);
		lua_settop(S, 0);
		if (!b->dead) /* give back what the failed call held (a deep stack, a half-built table) */
			lua_gc(S, LUA_GCCOLLECT, 0);
		return 3;
	}
	if (b->tripped) { /* a limit hit that the policy caught and returned from: fail anyway */
		char buf[160];
		lua_settop(S, 0);
		lua_pushboolean(L, 0);
		lua_pushstring(L, trip_message(b, buf, sizeof buf));
		lua_pushstring(L, "limit");
		return 3;
	}
	int nres = lua_gettop(S) - 1;
	if (nres > MAX_RESULTS) {
		lua_settop(S, 0);
		lua_pushboolean(L, 0);
		lua_pushfstring(L, "returned %d values, at most %d", nres, MAX_RESULTS);
		lua_pushstring(L, "error");
		return 3;
	}
	lua_pushboolean(L, 1);
	struct copy c;
	copy_init(&c, S, L, b->null, "result", 1);
	for (int i = 0; i < nres; i++) {
		c.index = i + 1;
		c.depth = 0;
		if (copy_value(&c, i + 2) < 0) {
			lua_settop(L, top);
			lua_settop(S, 0);
			lua_pushboolean(L, 0);
			lua_pushstring(L, c.err);
			lua_pushstring(L, "error");
			return 3;
		}
	}
	lua_settop(S, 0);
	return 1 + nres;
}

/* box:load(name, source, chunkname[, base]) -> true | false, err, kind */
static int l_load(lua_State *L)
{
	struct box *b = check_open(L);
	struct callctx cc = {.b = b, .L = L, .name = luaL_checkstring(L, 2)};
	cc.src = luaL_checklstring(L, 3, &cc.len);
	cc.chunk = luaL_checkstring(L, 4);
	cc.base = luaL_optstring(L, 5, NULL);
	if (refuse_dead(L, b))
		return 3;
	lua_State *S = b->S;
	int rc = run_in_box(b, &cc, b->doload_ref, 0);
	if (rc || b->tripped) {
		if (!rc)
			lua_pushnil(S);
		push_box_error(L, b, rc ? rc : LUA_ERRERR);
		if (b->phase == PH_COMPILE) {
			lua_pop(L, 1);
			lua_pushstring(L, "compile");
		}
		lua_settop(S, 0);
		return 3;
	}
	lua_settop(S, 0);
	lua_pushboolean(L, 1);
	return 1;
}

/* ---- creating a box ------------------------------------------------------------------------------- */

/* Runs in the new state with every opened library, then strips them: what it returns builds the
 * environment of one policy chunk (shallow copies of the libraries, so a policy changing
 * string.upper changes it for itself only). */
static const char PRELUDE[] =
	"local keep = { assert=1, error=1, ipairs=1, next=1, pairs=1, pcall=1, select=1, tonumber=1,\n"
	"  tostring=1, type=1, unpack=1, xpcall=1, setmetatable=1, getmetatable=1, rawequal=1, rawget=1,\n"
	"  rawset=1, string=1, table=1, math=1, os=1, coroutine=1, bit=1, _G=1 }\n"
	"local G = _G\n"
	"for k in pairs(G) do if not keep[k] then G[k] = nil end end\n"
	"for k in pairs(os) do if k ~= 'time' and k ~= 'clock' and k ~= 'date' then os[k] = nil end end\n"
	"string.dump = nil\n"
	"getmetatable('').__metatable = 'string'\n"
	"local pairs = pairs\n"
	"local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end\n"
	"local libs = { string = string, table = table, math = math, os = os, coroutine = coroutine, bit = bit }\n"
	"return function()\n"
	"  local env = {}\n"
	"  for k in pairs(keep) do env[k] = G[k] end\n"
	"  for k, t in pairs(libs) do env[k] = copy(t) end\n"
	"  env._G = env\n"
	"  return env\n"
	"end\n";

static int init_state(lua_State *S)
{
	struct box *b = lua_touserdata(S, 1);
	static const lua_CFunction libs[] = {luaopen_base, luaopen_table, luaopen_string,
					     luaopen_math, luaopen_os,	  luaopen_bit};
	for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
		lua_pushcfunction(S, libs[i]);
		lua_call(S, 0, 0);
	}
	luaJIT_setmode(S, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF); /* compiled traces skip hooks */
	wrap(S, "string", "find", bounded_pattern, 1);
	wrap(S, "string", "match", bounded_pattern, 2);
	wrap(S, "string", "gsub", bounded_pattern, 2);
	wrap(S, "string", "gmatch", bounded_pattern, 3);
	wrap(S, "table", "sort", bounded_sort, 0);
	wrap(S, "string", "format", call_original, 0);
	wrap(S, "os", "time", call_original, 0); /* reads its table argument's fields with __index */
	wrap(S, "coroutine", "resume", call_original, 0);
	wrap(S, "coroutine", "wrap", bounded_wrap, 0);
	wrap(S, "_G", "tostring", call_original, 0);
	lua_register(S, "pcall", bounded_pcall);
	lua_register(S, "xpcall", bounded_xpcall);
	lua_pushlightuserdata(S, (void *)&MODULES_KEY);
	lua_newtable(S);
	lua_rawset(S, LUA_REGISTRYINDEX);
	if (luaL_loadbuffer(S, PRELUDE, sizeof PRELUDE - 1, "=sandbox"))
		return lua_error(S);
	lua_call(S, 0, 1);
	b->env_ref = luaL_ref(S, LUA_REGISTRYINDEX);
	lua_pushcfunction(S, box_handler);
	b->handler_ref = luaL_ref(S, LUA_REGISTRYINDEX);
	lua_pushcfunction(S, box_docall);
	b->docall_ref = luaL_ref(S, LUA_REGISTRYINDEX);
	lua_pushcfunction(S, box_doload);
	b->doload_ref = luaL_ref(S, LUA_REGISTRYINDEX);
	lua_gc(S, LUA_GCSETPAUSE, 150);
	return 0;
}

static double opt_number(lua_State *L, const char *key, double def)
{
	lua_getfield(L, 1, key);
	double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : def;
	lua_pop(L, 1);
	return v;
}

/* sandbox.new{memory=bytes, instructions=n, deadline=seconds, null=json.null} -> box | nil, err */
static int l_new(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct box *b = lua_newuserdata(L, sizeof *b);
	memset(b, 0, sizeof *b);
	b->limit = (size_t)opt_number(L, "memory", 32 << 20);
	b->budget = (long long)opt_number(L, "instructions", 20e6);
	b->window_ms = (uint64_t)(opt_number(L, "deadline", 0.25) * 1000.0);
	lua_getfield(L, 1, "null");
	b->null = lua_type(L, -1) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) : NULL;
	lua_pop(L, 1);
	luaL_getmetatable(L, BOX_MT);
	lua_setmetatable(L, -2);
	b->S = lua_newstate(box_alloc, b);
	if (!b->S)
		return lrk_fail(L, "cannot create the policy sandbox: lua_newstate with a counting allocator failed");
	arm(b);
	if (lua_cpcall(b->S, init_state, b)) {
		char msg[512];
		snprintf(msg, sizeof msg, "cannot set up the policy sandbox: %s", lua_tostring(b->S, -1));
		lua_close(b->S);
		b->S = NULL;
		return lrk_fail(L, "%s", msg);
	}
	lua_sethook(b->S, box_hook, LUA_MASKCOUNT, HOOK_EVERY);
	return 1;
}

/* box:memory() -> bytes held by this box's state */
static int l_box_memory(lua_State *L)
{
	struct box *b = luaL_checkudata(L, 1, BOX_MT);
	lua_pushnumber(L, (lua_Number)(b->S ? b->used : 0));
	return 1;
}

/* box:close() — idempotent */
static int l_close(lua_State *L)
{
	struct box *b = luaL_checkudata(L, 1, BOX_MT);
	if (b->S) {
		lua_close(b->S);
		b->S = NULL;
	}
	return 0;
}

/* sandbox.memory() -> bytes held by all sandbox states */
static int l_memory(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)g_total);
	return 1;
}

static int open_sandbox(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"load", l_load}, {"call", l_call}, {"memory", l_box_memory}, {"close", l_close}, {NULL, NULL}};
	lrk_newclass(L, BOX_MT, methods, l_close);
	static const luaL_Reg fns[] = {{"new", l_new}, {"memory", l_memory}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.sandbox", open_sandbox)
