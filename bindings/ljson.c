/* ljson.c — `riklet.json`: cJSON <-> Lua tables.
 *
 *   json.decode(str[, max_depth]) -> value | nil, err
 *                                             objects and arrays become tables; arrays carry the
 *                                             metatable json.array_mt, objects json.object_mt, so
 *                                             an empty one round-trips; null is json.null. Refused:
 *                                             a NUL in a string (raw or \u0000: cJSON keeps C
 *                                             strings, so it would arrive truncated), nesting
 *                                             deeper than max_depth (default and most 200), a key
 *                                             twice in one object, a number beyond a double's range
 *   json.encode(value[, pretty]) -> str | nil, err   (a string or key holding a NUL is refused)
 *                                             a table is an array when it has array_mt, or when its
 *                                             keys are exactly 1..n with n > 0; else an object
 *                                             (keys must be strings or numbers)
 *                                             invalid UTF-8 in a string or key is written as
 *                                             U+FFFD per bad byte, never raw (records, ps --json)
 *   json.utf8(str) -> true | nil, byte_offset     is str valid UTF-8 (RFC 3629: no overlongs,
 *                                             surrogates or code points past U+10FFFF)?
 *   json.utf8_fix(str) -> str                  str with each byte of invalid UTF-8 as U+FFFD
 *   json.quote(str[, max]) -> text            str as a quoted literal for a message: JSON escapes,
 *                                             NUL as \u0000, a byte of invalid UTF-8 as \xNN, cut
 *                                             after max bytes (default 60) with "... (N bytes)"
 *   json.null, json.array_mt, json.object_mt, json.array(t) (marks t as an array, returns it)
 * json.decode also refuses text that is not valid UTF-8 (RFC 8259), saying at which byte. */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "lrk.h"

#define MAX_DEPTH 200
static const char NULL_KEY = 0, ARR_KEY = 0, OBJ_KEY = 0;

static void push_reg(lua_State *L, const void *k)
{
	lua_pushlightuserdata(L, (void *)k);
	lua_rawget(L, LUA_REGISTRYINDEX);
}

/* -1: nested deeper than MAX_DEPTH; -2: a key twice in one object (which one wins differs from
 * one parser to the next: a front-end could check one value and riklet use the other), its name in
 * *dup; -3: a number beyond the range of a double (cJSON gives an infinity). */
static int push_value(lua_State *L, const cJSON *v, int depth, const char **dup)
{
	if (depth > MAX_DEPTH)
		return -1;
	luaL_checkstack(L, 4, "json nesting");
	if (cJSON_IsNull(v))
		push_reg(L, &NULL_KEY);
	else if (cJSON_IsBool(v))
		lua_pushboolean(L, cJSON_IsTrue(v));
	else if (cJSON_IsNumber(v)) {
		if (!isfinite(v->valuedouble))
			return -3;
		lua_pushnumber(L, v->valuedouble);
	} else if (cJSON_IsString(v))
		lua_pushstring(L, v->valuestring);
	else if (cJSON_IsArray(v)) {
		lua_createtable(L, cJSON_GetArraySize(v), 0);
		int i = 1;
		for (const cJSON *c = v->child; c; c = c->next) {
			int rc = push_value(L, c, depth + 1, dup);
			if (rc < 0)
				return rc;
			lua_rawseti(L, -2, i++);
		}
		push_reg(L, &ARR_KEY);
		lua_setmetatable(L, -2);
	} else if (cJSON_IsObject(v)) {
		lua_newtable(L);
		for (const cJSON *c = v->child; c; c = c->next) {
			lua_getfield(L, -1, c->string);
			int twice = !lua_isnil(L, -1);
			lua_pop(L, 1);
			if (twice) {
				*dup = c->string;
				return -2;
			}
			int rc = push_value(L, c, depth + 1, dup);
			if (rc < 0)
				return rc;
			lua_setfield(L, -2, c->string);
		}
		push_reg(L, &OBJ_KEY);
		lua_setmetatable(L, -2);
	} else
		lua_pushnil(L);
	return 0;
}

/* Length of the valid UTF-8 sequence at s[i] (1-4), or 0 when the byte there starts none. */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t i)
{
	return rk_utf8_seq(s, len, i);
}

/* Offset of the first byte that is not valid UTF-8, or len. */
static size_t utf8_bad(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		size_t n = utf8_seq(u, len, i);
		if (!n)
			return i;
		i += n;
	}
	return len;
}

/* What cJSON loses or reports badly, checked on the text before it parses: a NUL inside a
 * string and the nesting depth (cJSON's own limit only says "invalid JSON near byte 1000").
 * Returns 0, or -1 with the reason in err. */
static int prescan(const char *s, size_t len, int max_depth, char *err, size_t errlen)
{
	int depth = 0, in_str = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch == '\0') {
			snprintf(err, errlen, "invalid JSON: a NUL byte at byte %zu", i);
			return -1;
		}
		if (in_str) {
			if (ch == '\\') {
				if (i + 5 < len && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0) {
					snprintf(err, errlen,
						 "invalid JSON: a string holds a NUL character (\\u0000) at byte %zu",
						 i);
					return -1;
				}
				i++;
			} else if (ch == '"')
				in_str = 0;
		} else if (ch == '"')
			in_str = 1;
		else if (ch == '[' || ch == '{') {
			if (++depth > max_depth) {
				snprintf(err, errlen, "invalid JSON: nested deeper than %d levels (at byte %zu)",
					 max_depth, i);
				return -1;
			}
		} else if (ch == ']' || ch == '}')
			depth--;
	}
	return 0;
}

/* json.decode(str[, max_depth]) -> value | nil, err */
static int l_decode(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	int max_depth = (int)luaL_optinteger(L, 2, MAX_DEPTH);
	if (max_depth < 1 || max_depth > MAX_DEPTH)
		return luaL_argerror(L, 2, "max_depth must be 1 to 200");
	char perr[128];
	if (prescan(s, len, max_depth, perr, sizeof perr) < 0)
		return lrk_fail(L, "%s", perr);
	size_t bad = utf8_bad(s, len);
	if (bad < len)
		return lrk_fail(L, "invalid JSON: not valid UTF-8 at byte %zu (byte 0x%02x)", bad,
				(unsigned char)s[bad]);
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
	if (root && end) { /* only whitespace may follow the value */
		while (end < s + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
			end++;
		if (end != s + len) {
			cJSON_Delete(root);
			return lrk_fail(L, "invalid JSON: unexpected data after the value at byte %zu",
					(size_t)(end - s));
		}
	}
	if (!root) {
		size_t off = end ? (size_t)(end - s) : 0;
		if (!end || off > len) {
			const char *ep = cJSON_GetErrorPtr();
			off = ep && ep >= s && ep <= s + len ? (size_t)(ep - s) : 0;
		}
		return lrk_fail(L, "invalid JSON near byte %zu%s", off, len == 0 ? " (the input is empty)" : "");
	}
	int top = lua_gettop(L);
	const char *dup = NULL;
	int rc = push_value(L, root, 0, &dup);
	if (rc < 0) {
		char msg[160];
		if (rc == -2)
			snprintf(msg, sizeof msg, "invalid JSON: the key \"%.60s\" appears twice in one object", dup);
		else if (rc == -3)
			snprintf(msg, sizeof msg, "invalid JSON: a number beyond the range of a double (over 1.8e308)");
		else
			snprintf(msg, sizeof msg, "invalid JSON: nested deeper than %d levels", MAX_DEPTH);
		cJSON_Delete(root);
		lua_settop(L, top);
		return lrk_fail(L, "%s", msg);
	}
	cJSON_Delete(root);
	return 1;
}

static cJSON *to_json(lua_State *L, int idx, int depth, char *err, size_t errlen);

/* s (n bytes, no NUL) with each byte of invalid UTF-8 replaced by U+FFFD; pushed on L. */
static const char *push_utf8_fixed(lua_State *L, const char *s, size_t n)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq(u, n, i);
		if (k) {
			luaL_addlstring(&b, s + i, k);
			i += k;
		} else {
			luaL_addstring(&b, "\xef\xbf\xbd");
			i++;
		}
	}
	luaL_pushresult(&b);
	return lua_tostring(L, -1);
}

static int is_array(lua_State *L, int idx)
{
	if (lua_getmetatable(L, idx)) {
		push_reg(L, &ARR_KEY);
		int a = lua_rawequal(L, -1, -2);
		push_reg(L, &OBJ_KEY);
		int o = lua_rawequal(L, -1, -3);
		lua_pop(L, 3);
		if (a)
			return 1;
		if (o)
			return 0;
	}
	size_t n = lua_objlen(L, idx), count = 0;
	if (n == 0)
		return 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TNUMBER) {
			lua_pop(L, 1);
			return 0;
		}
		count++;
	}
	return count == n;
}

static cJSON *to_json(lua_State *L, int idx, int depth, char *err, size_t errlen)
{
	if (depth > MAX_DEPTH) {
		snprintf(err, errlen, "value nested deeper than %d levels (a cycle?)", MAX_DEPTH);
		return NULL;
	}
	if (idx < 0)
		idx = lua_gettop(L) + idx + 1;
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		return cJSON_CreateNull();
	case LUA_TBOOLEAN:
		return cJSON_CreateBool(lua_toboolean(L, idx));
	case LUA_TNUMBER: {
		double d = lua_tonumber(L, idx);
		if (!isfinite(d)) {
			snprintf(err, errlen, "cannot encode %g as JSON", d);
			return NULL;
		}
		return cJSON_CreateNumber(d);
	}
	case LUA_TSTRING: {
		size_t n;
		const char *str = lua_tolstring(L, idx, &n);
		if (strlen(str) != n) {
			snprintf(err, errlen, "cannot encode a string holding a NUL byte (\"%.40s\"...)", str);
			return NULL;
		}
		if (utf8_bad(str, n) < n) {
			cJSON *j = cJSON_CreateString(push_utf8_fixed(L, str, n));
			lua_pop(L, 1);
			return j;
		}
		return cJSON_CreateString(str);
	}
	case LUA_TLIGHTUSERDATA:
		push_reg(L, &NULL_KEY);
		if (lua_rawequal(L, -1, idx)) {
			lua_pop(L, 1);
			return cJSON_CreateNull();
		}
		lua_pop(L, 1);
		break;
	case LUA_TTABLE: {
		luaL_checkstack(L, 6, "json nesting");
		if (is_array(L, idx)) {
			cJSON *a = cJSON_CreateArray();
			size_t n = lua_objlen(L, idx);
			for (size_t i = 1; i <= n; i++) {
				lua_rawgeti(L, idx, (int)i);
				cJSON *c = to_json(L, -1, depth + 1, err, errlen);
				lua_pop(L, 1);
				if (!c) {
					cJSON_Delete(a);
					return NULL;
				}
				cJSON_AddItemToArray(a, c);
			}
			return a;
		}
		cJSON *o = cJSON_CreateObject();
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			char kbuf[64];
			const char *k;
			if (lua_type(L, -2) == LUA_TSTRING) {
				size_t kn;
				k = lua_tolstring(L, -2, &kn);
				if (strlen(k) != kn) {
					snprintf(err, errlen, "cannot encode a key holding a NUL byte (\"%.40s\"...)",
						 k);
					lua_pop(L, 2);
					cJSON_Delete(o);
					return NULL;
				}
			} else if (lua_type(L, -2) == LUA_TNUMBER) {
				snprintf(kbuf, sizeof kbuf, "%.14g", lua_tonumber(L, -2));
				k = kbuf;
			} else {
				lua_pop(L, 2);
				cJSON_Delete(o);
				snprintf(err, errlen, "cannot encode a table key of type %s", luaL_typename(L, -2));
				return NULL;
			}
			cJSON *c = to_json(L, -1, depth + 1, err, errlen);
			lua_pop(L, 1);
			if (!c) {
				lua_pop(L, 1);
				cJSON_Delete(o);
				return NULL;
			}
			if (utf8_bad(k, strlen(k)) < strlen(k)) {
				cJSON_AddItemToObject(o, push_utf8_fixed(L, k, strlen(k)), c);
				lua_pop(L, 1);
			} else
				cJSON_AddItemToObject(o, k, c);
		}
		return o;
	}
	}
	snprintf(err, errlen, "cannot encode a %s as JSON", luaL_typename(L, idx));
	return NULL;
}

/* json.encode(value[, pretty]) -> string | nil, err */
static int l_encode(lua_State *L)
{
	luaL_checkany(L, 1);
	char err[256] = "";
	cJSON *j = to_json(L, 1, 0, err, sizeof err);
	if (!j)
		return lrk_fail(L, "%s", err);
	char *s = lua_toboolean(L, 2) ? cJSON_Print(j) : cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	if (!s)
		return lrk_fail(L, "out of memory encoding JSON");
	lua_pushstring(L, s);
	cJSON_free(s);
	return 1;
}

/* json.utf8(str) -> true | nil, byte_offset */
static int l_utf8(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	size_t bad = utf8_bad(s, n);
	if (bad == n) {
		lua_pushboolean(L, 1);
		return 1;
	}
	lua_pushnil(L);
	lua_pushnumber(L, (lua_Number)bad);
	return 2;
}

/* json.utf8_fix(str) -> str */
static int l_utf8_fix(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	if (utf8_bad(s, n) < n)
		push_utf8_fixed(L, s, n);
	else
		lua_settop(L, 1);
	return 1;
}

/* json.quote(str[, max]) -> text */
static int l_quote(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	lua_Number maxn = luaL_optnumber(L, 2, 60);
	size_t max = maxn >= 1 && maxn < 1e9 ? (size_t)maxn : 60;
	const unsigned char *u = (const unsigned char *)s;
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	luaL_addchar(&b, '"');
	size_t i = 0;
	while (i < n && i < max) {
		unsigned c = u[i];
		char esc[16];
		size_t k = utf8_seq(u, n, i);
		if (c == '"' || c == '\\') {
			luaL_addchar(&b, '\\');
			luaL_addchar(&b, (char)c);
		} else if (c == '\n')
			luaL_addstring(&b, "\\n");
		else if (c == '\t')
			luaL_addstring(&b, "\\t");
		else if (c == '\r')
			luaL_addstring(&b, "\\r");
		else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof esc, "\\u%04x", c);
			luaL_addstring(&b, esc);
		} else if (!k) {
			snprintf(esc, sizeof esc, "\\x%02x", c);
			luaL_addstring(&b, esc);
			i++;
			continue;
		} else {
			luaL_addlstring(&b, s + i, k);
			i += k;
			continue;
		}
		i++;
	}
	luaL_addchar(&b, '"');
	if (i < n) {
		char more[48];
		snprintf(more, sizeof more, "... (%zu bytes)", n);
		luaL_addstring(&b, more);
	}
	luaL_pushresult(&b);
	return 1;
}

/* json.array(t) -> t, marked as an array */
static int l_array(lua_State *L)
{
	if (lua_isnoneornil(L, 1))
		lua_newtable(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	push_reg(L, &ARR_KEY);
	lua_setmetatable(L, 1);
	return 1;
}

static int open_json(lua_State *L)
{
	lua_pushlightuserdata(L, (void *)&NULL_KEY);
	lua_pushlightuserdata(L, (void *)&NULL_KEY); /* json.null is this unique light userdata */
	lua_rawset(L, LUA_REGISTRYINDEX);
	lua_pushlightuserdata(L, (void *)&ARR_KEY);
	lua_newtable(L);
	lua_pushstring(L, "array");
	lua_setfield(L, -2, "__jsontype");
	lua_rawset(L, LUA_REGISTRYINDEX);
	lua_pushlightuserdata(L, (void *)&OBJ_KEY);
	lua_newtable(L);
	lua_pushstring(L, "object");
	lua_setfield(L, -2, "__jsontype");
	lua_rawset(L, LUA_REGISTRYINDEX);
	static const luaL_Reg fns[] = {{"decode", l_decode}, {"encode", l_encode},     {"array", l_array},
				       {"utf8", l_utf8},     {"utf8_fix", l_utf8_fix}, {"quote", l_quote},
				       {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	push_reg(L, &NULL_KEY);
	lua_setfield(L, -2, "null");
	push_reg(L, &ARR_KEY);
	lua_setfield(L, -2, "array_mt");
	push_reg(L, &OBJ_KEY);
	lua_setfield(L, -2, "object_mt");
	return 1;
}
LRK_MODULE("riklet.json", open_json)
