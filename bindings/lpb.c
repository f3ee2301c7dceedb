/* lpb.c — protobuf-c messages <-> plain Lua tables, driven only by the message descriptors (no
 * per-message glue), and `riklet.pb` over it.
 *
 * Table shape: one key per field name. Scalars are numbers (64-bit integers become Lua numbers,
 * exact up to 2^53; a decimal string is accepted on input), bools are booleans, strings and bytes
 * are strings, enums are value names ("RUNNING"; numbers accepted on input, unknown values come
 * out as numbers), nested messages are tables, repeated fields are arrays (always present on
 * output, possibly empty). A oneof member or a field with presence (proto2 optional, message
 * fields) is absent when unset; a proto3 plain scalar always comes out, with its default value.
 * Input tables are checked strictly: an unknown key or a value of the wrong type raises an error
 * naming the field (it is a programming error, not a runtime condition).
 *
 * C entry points for other bindings (declared where used; bindings/ has no header for them):
 *   const ProtobufCMessageDescriptor *lpb_find(const char *full_name);
 *   const ProtobufCMessageDescriptor *lpb_checktype(lua_State *L, int idx);   raises if unknown
 *   void lpb_push(lua_State *L, const ProtobufCMessage *m, int enums_as_numbers);
 *   ProtobufCMessage *lpb_check(lua_State *L, int idx, const ProtobufCMessageDescriptor *d);
 *       builds the message from the table at idx in Lua-owned memory and pushes one anchor value:
 *       the message stays valid while that anchor is on the stack (pop it when done). Raises on
 *       a bad table, and leaks nothing when it does. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "lrk.h"
#include "pb.h"
#include "worker.pb-c.h"

const ProtobufCMessageDescriptor *lpb_find(const char *full_name);
const ProtobufCMessageDescriptor *lpb_checktype(lua_State *L, int idx);
void lpb_push(lua_State *L, const ProtobufCMessage *m, int enums_as_numbers);
ProtobufCMessage *lpb_check(lua_State *L, int idx, const ProtobufCMessageDescriptor *d);

/* Every top-level message riklet speaks; nested types are reached through their fields. */
static const ProtobufCMessageDescriptor *const known[] = {
	&common__worker_registration__descriptor, &common__worker_metric__descriptor,
	&common__instance_metric__descriptor,	  &common__worker_status__descriptor,
	&worker__instance_scheduling__descriptor, &google__protobuf__empty__descriptor,
};

const ProtobufCMessageDescriptor *lpb_find(const char *name)
{
	for (size_t i = 0; i < sizeof known / sizeof *known; i++)
		if (!strcmp(known[i]->name, name))
			return known[i];
	return NULL;
}

const ProtobufCMessageDescriptor *lpb_checktype(lua_State *L, int idx)
{
	const char *name = luaL_checkstring(L, idx);
	const ProtobufCMessageDescriptor *d = lpb_find(name);
	if (!d)
		luaL_error(L,
			   "unknown protobuf message type '%s' (known: common.WorkerRegistration, "
			   "common.WorkerStatus, common.WorkerMetric, common.InstanceMetric, "
			   "worker.InstanceScheduling, google.protobuf.Empty)",
			   name);
	return d;
}

/* ---- message -> table --------------------------------------------------------------------- */

/* Item k of field f (k = 0 when not repeated) of message m, stored at p. */
static void push_value(lua_State *L, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, size_t k,
		       const void *p, int enums_num)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		lua_pushnumber(L, *(const int32_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		lua_pushnumber(L, *(const uint32_t *)p);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		lua_pushnumber(L, (lua_Number) * (const int64_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		lua_pushnumber(L, (lua_Number) * (const uint64_t *)p);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		lua_pushnumber(L, *(const float *)p);
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		lua_pushnumber(L, *(const double *)p);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		lua_pushboolean(L, *(const protobuf_c_boolean *)p);
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)p;
		const ProtobufCEnumValue *ev =
			enums_num ? NULL : protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		if (ev)
			lua_pushstring(L, ev->name);
		else
			lua_pushnumber(L, v);
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		size_t n; /* the whole string, NULs included (rk_pb_unpack kept its length) */
		const char *s = rk_pb_string(m, f, k, *(char *const *)p, &n);
		lua_pushlstring(L, s, n);
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;
		lua_pushlstring(L, b->data ? (const char *)b->data : "", b->len);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
		if (sub)
			lpb_push(L, sub, enums_num);
		else
			lua_pushnil(L);
		break;
	}
	default:
		lua_pushnil(L);
	}
}

static size_t elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_ENUM:
		return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	}
	return 0;
}

static int is_pointer_type(ProtobufCType t)
{
	return t == PROTOBUF_C_TYPE_STRING || t == PROTOBUF_C_TYPE_MESSAGE;
}

void lpb_push(lua_State *L, const ProtobufCMessage *m, int enums_num)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	luaL_checkstack(L, 8, "protobuf message nested too deeply");
	lua_createtable(L, 0, (int)d->n_fields);
	const char *base = (const char *)m;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *p = base + f->offset;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			const char *arr = *(char *const *)p;
			size_t es = elem_size(f->type);
			lua_createtable(L, (int)n, 0);
			for (size_t k = 0; k < n; k++) {
				push_value(L, m, f, k, arr + k * es, enums_num);
				lua_rawseti(L, -2, (int)k + 1);
			}
			lua_setfield(L, -2, f->name);
			continue;
		}
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
				continue;
		} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
			if (is_pointer_type(f->type)) {
				if (!*(void *const *)p)
					continue;
			} else if (f->quantifier_offset &&
				   !*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
				continue;
			}
		}
		if (f->type == PROTOBUF_C_TYPE_MESSAGE && !*(void *const *)p)
			continue;
		push_value(L, m, f, 0, p, enums_num);
		lua_setfield(L, -2, f->name);
	}
}

/* ---- table -> message --------------------------------------------------------------------- */

struct build {
	lua_State *L;
	int anchor; /* absolute index of the anchor table */
	int nanch;
	const char *path; /* for messages: "common.WorkerStatus.instance" */
};

static void *b_alloc(struct build *b, size_t n)
{
	void *p = lua_newuserdata(b->L, n ? n : 1);
	memset(p, 0, n ? n : 1);
	lua_rawseti(b->L, b->anchor, ++b->nanch);
	return p;
}

static int b_fail(struct build *b, const ProtobufCFieldDescriptor *f, const char *want, int vidx)
{
	return luaL_error(b->L, "protobuf field %s.%s: expected %s, got %s", b->path, f->name, want,
			  luaL_typename(b->L, vidx));
}

static double b_number(struct build *b, const ProtobufCFieldDescriptor *f, int v)
{
	if (lua_type(b->L, v) == LUA_TNUMBER)
		return lua_tonumber(b->L, v);
	if (lua_type(b->L, v) == LUA_TSTRING) {
		const char *s = lua_tostring(b->L, v);
		char *end;
		errno = 0;
		double d = strtod(s, &end);
		if (end != s && !*end && !errno && isfinite(d))
			return d;
	}
	b_fail(b, f, "a number", v);
	return 0;
}

/* d must be a whole number with lo <= d < hi_excl (the bounds are powers of two, exact as
 * doubles), checked before any cast: casting a double out of the target's range is undefined. */
static void b_int_check(struct build *b, const ProtobufCFieldDescriptor *f, double d, double lo, double hi_excl)
{
	if (!(d >= lo && d < hi_excl) || d != floor(d))
		luaL_error(b->L, "protobuf field %s.%s: %.17g is not an integer in [%.17g, %.17g)", b->path, f->name, d,
			   lo, hi_excl);
}

static ProtobufCMessage *build_msg(struct build *b, int idx, const ProtobufCMessageDescriptor *d);

/* Store the Lua value at v into the slot p of field f. */
static void b_value(struct build *b, const ProtobufCFieldDescriptor *f, int v, void *p)
{
	lua_State *L = b->L;
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: {
		double d = b_number(b, f, v);
		b_int_check(b, f, d, -2147483648.0, 2147483648.0);
		*(int32_t *)p = (int32_t)d;
		break;
	}
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32: {
		double d = b_number(b, f, v);
		b_int_check(b, f, d, 0, 4294967296.0);
		*(uint32_t *)p = (uint32_t)d;
		break;
	}
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		if (lua_type(L, v) == LUA_TSTRING) {
			char *end;
			errno = 0;
			long long x = strtoll(lua_tostring(L, v), &end, 10);
			if (errno || *end || end == lua_tostring(L, v))
				b_fail(b, f, "an integer", v);
			*(int64_t *)p = x;
		} else {
			double d = b_number(b, f, v);
			b_int_check(b, f, d, -9223372036854775808.0, 9223372036854775808.0);
			*(int64_t *)p = (int64_t)d;
		}
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		if (lua_type(L, v) == LUA_TSTRING) {
			char *end;
			errno = 0;
			unsigned long long x = strtoull(lua_tostring(L, v), &end, 10);
			if (errno || *end || end == lua_tostring(L, v) || lua_tostring(L, v)[0] == '-')
				b_fail(b, f, "an unsigned integer", v);
			*(uint64_t *)p = x;
		} else {
			double d = b_number(b, f, v);
			b_int_check(b, f, d, 0, 18446744073709551616.0);
			*(uint64_t *)p = (uint64_t)d;
		}
		break;
	case PROTOBUF_C_TYPE_FLOAT: {
		double d = b_number(b, f, v);
		if (d > FLT_MAX || d < -FLT_MAX) /* out of a float's range: the conversion is undefined */
			luaL_error(L, "protobuf field %s.%s: %g is out of the range of a float", b->path, f->name, d);
		*(float *)p = (float)d;
		break;
	}
	case PROTOBUF_C_TYPE_DOUBLE:
		*(double *)p = b_number(b, f, v);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		if (lua_type(L, v) != LUA_TBOOLEAN)
			b_fail(b, f, "a boolean", v);
		*(protobuf_c_boolean *)p = lua_toboolean(L, v);
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		if (lua_type(L, v) == LUA_TSTRING) {
			const ProtobufCEnumValue *ev =
				protobuf_c_enum_descriptor_get_value_by_name(ed, lua_tostring(L, v));
			if (!ev) {
				luaL_Buffer lb;
				luaL_buffinit(L, &lb);
				for (unsigned i = 0; i < ed->n_values; i++) {
					if (i)
						luaL_addstring(&lb, ", ");
					luaL_addstring(&lb, ed->values[i].name);
				}
				luaL_pushresult(&lb);
				luaL_error(L, "protobuf field %s.%s: '%s' is not a %s (one of: %s)", b->path, f->name,
					   lua_tostring(L, v), ed->name, lua_tostring(L, -1));
			}
			*(int *)p = ev->value;
		} else if (lua_type(L, v) == LUA_TNUMBER) {
			double d = lua_tonumber(L, v);
			b_int_check(b, f, d, -2147483648.0, 2147483648.0);
			*(int *)p = (int)d;
		} else {
			b_fail(b, f, "an enum name or number", v);
		}
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		if (lua_type(L, v) != LUA_TSTRING && lua_type(L, v) != LUA_TNUMBER)
			b_fail(b, f, "a string", v);
		size_t n;
		lua_pushvalue(L, v);
		const char *s = lua_tolstring(L, -1, &n);
		if (strlen(s) != n)
			luaL_error(L, "protobuf field %s.%s: a string field cannot hold NUL bytes (use bytes)", b->path,
				   f->name);
		lua_rawseti(L, b->anchor, ++b->nanch); /* keeps s alive */
		*(const char **)p = s;
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		if (lua_type(L, v) != LUA_TSTRING)
			b_fail(b, f, "a string", v);
		size_t n;
		const char *s = lua_tolstring(L, v, &n);
		lua_pushvalue(L, v);
		lua_rawseti(L, b->anchor, ++b->nanch);
		ProtobufCBinaryData *bd = p;
		bd->data = (uint8_t *)s;
		bd->len = n;
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		if (lua_type(L, v) != LUA_TTABLE)
			b_fail(b, f, "a table", v);
		const char *saved = b->path;
		lua_pushfstring(L, "%s.%s", saved, f->name);
		b->path = lua_tostring(L, -1);
		lua_rawseti(L, b->anchor, ++b->nanch);
		*(ProtobufCMessage **)p = build_msg(b, v, f->descriptor);
		b->path = saved;
		break;
	}
	}
}

static ProtobufCMessage *build_msg(struct build *b, int idx, const ProtobufCMessageDescriptor *d)
{
	lua_State *L = b->L;
	luaL_checkstack(L, 10, "protobuf message nested too deeply");
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	char *m = b_alloc(b, d->sizeof_message);
	protobuf_c_message_init(d, m);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int v = lua_gettop(L);
		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L, "protobuf message %s: keys must be field names, got a %s key", b->path,
				   luaL_typename(L, -2));
		const char *key = lua_tostring(L, -2);
		const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
		if (!f)
			luaL_error(L, "protobuf message %s has no field '%s'", b->path, key);
		void *p = m + f->offset;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			if (lua_type(L, v) != LUA_TTABLE)
				b_fail(b, f, "an array (table)", v);
			size_t n = lua_objlen(L, v), es = elem_size(f->type);
			char *arr = b_alloc(b, n * es);
			for (size_t k = 0; k < n; k++) {
				lua_rawgeti(L, v, (int)k + 1);
				b_value(b, f, lua_gettop(L), arr + k * es);
				lua_pop(L, 1);
			}
			*(size_t *)(m + f->quantifier_offset) = n;
			*(char **)p = arr;
		} else {
			b_value(b, f, v, p);
			if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
				uint32_t *cs = (uint32_t *)(m + f->quantifier_offset);
				if (*cs && *cs != f->id) {
					const ProtobufCFieldDescriptor *o =
						protobuf_c_message_descriptor_get_field(d, *cs);
					luaL_error(
						L,
						"protobuf message %s: fields '%s' and '%s' are in the same oneof; set "
						"only one",
						b->path, o ? o->name : "?", f->name);
				}
				*cs = f->id;
			} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
				   !is_pointer_type(f->type)) {
				*(protobuf_c_boolean *)(m + f->quantifier_offset) = 1;
			}
		}
		lua_settop(L, v - 1); /* keep the key */
	}
	return (ProtobufCMessage *)m;
}

ProtobufCMessage *lpb_check(lua_State *L, int idx, const ProtobufCMessageDescriptor *d)
{
	idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_newtable(L);
	struct build b = {L, lua_gettop(L), 0, d->name};
	ProtobufCMessage *m = build_msg(&b, idx, d);
	lua_settop(L, b.anchor);
	return m;
}

/* ---- riklet.pb ------------------------------------------------------------------------------ */

/* pb.encode(type_name, table) -> bytes   (raises on an unknown type or a bad table) */
static int l_encode(lua_State *L)
{
	const ProtobufCMessageDescriptor *d = lpb_checktype(L, 1);
	ProtobufCMessage *m = lpb_check(L, 2, d);
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = lua_newuserdata(L, n ? n : 1);
	protobuf_c_message_pack(m, buf);
	lua_pushlstring(L, (const char *)buf, n);
	return 1;
}

/* pb.decode(type_name, bytes[, {enums = "number"}]) -> table | nil, err */
static int l_decode(lua_State *L)
{
	const ProtobufCMessageDescriptor *d = lpb_checktype(L, 1);
	size_t n;
	const char *s = luaL_checklstring(L, 2, &n);
	int enums_num = 0;
	if (lua_istable(L, 3)) {
		lua_getfield(L, 3, "enums");
		enums_num = lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), "number");
		lua_pop(L, 1);
	}
	ProtobufCMessage *m = rk_pb_unpack(d, n, (const uint8_t *)s);
	if (!m)
		return lrk_fail(L, "cannot decode %zu bytes as %s: not valid protobuf for that type", n, d->name);
	lpb_push(L, m, enums_num);
	protobuf_c_message_free_unpacked(m, NULL);
	return 1;
}

/* pb.types() -> { "common.WorkerStatus", ... } */
static int l_types(lua_State *L)
{
	lua_createtable(L, (int)(sizeof known / sizeof *known), 0);
	for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
		lua_pushstring(L, known[i]->name);
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 1;
}

/* pb.enum(enum_name) -> { NAME = number, ... }   (common.ResourceStatus, common.WorkloadRequestKind) */
static int l_enum(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const ProtobufCEnumDescriptor *eds[] = {&common__resource_status__descriptor,
						&common__workload_request_kind__descriptor};
	for (size_t i = 0; i < sizeof eds / sizeof *eds; i++) {
		if (strcmp(eds[i]->name, name))
			continue;
		lua_createtable(L, 0, (int)eds[i]->n_values);
		for (unsigned k = 0; k < eds[i]->n_values; k++) {
			lua_pushnumber(L, eds[i]->values[k].value);
			lua_setfield(L, -2, eds[i]->values[k].name);
		}
		return 1;
	}
	return luaL_error(L, "unknown protobuf enum '%s'", name);
}

static int open_pb(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"encode", l_encode}, {"decode", l_decode}, {"types", l_types}, {"enum", l_enum}, {NULL, NULL}};
	lua_newtable(L);
	lrk_setfuncs(L, fns);
	return 1;
}
LRK_MODULE("riklet.pb", open_pb)
