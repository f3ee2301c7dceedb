/* pb.c — protobuf-c unpacking that keeps the length of every string (see pb.h).
 *
 * protobuf-c allocates each string field as exactly its length + 1 bytes. Unpacking through an
 * allocator that logs (address, size) of every allocation tells the real length of each string
 * afterwards: a string whose strlen is shorter held a NUL. The memory itself comes from malloc,
 * so the message is freed as usual. */
#include "pb.h"

#include <stdlib.h>
#include <string.h>

struct alloc_log {
	struct alloc_ent {
		const void *p;
		size_t size, seq;
	} * e;
	size_t n, cap, failed;
};

static void *log_alloc(void *ud, size_t size)
{
	struct alloc_log *lg = ud;
	void *p = malloc(size ? size : 1);
	if (!p)
		return NULL;
	if (lg->n == lg->cap) {
		size_t cap = lg->cap ? lg->cap * 2 : 64;
		struct alloc_ent *e = realloc(lg->e, cap * sizeof *e);
		if (!e) {
			lg->failed = 1; /* lengths unknown: the unpack is refused below */
			return p;
		}
		lg->e = e;
		lg->cap = cap;
	}
	lg->e[lg->n] = (struct alloc_ent){p, size, lg->n};
	lg->n++;
	return p;
}

static void log_free(void *ud, void *p)
{
	(void)ud;
	free(p); /* an address may be reused: the latest allocation of it wins (seq) */
}

static int ent_cmp(const void *a, const void *b)
{
	const struct alloc_ent *x = a, *y = b;
	if (x->p != y->p)
		return (uintptr_t)x->p < (uintptr_t)y->p ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Size of the latest allocation at p, or 0 when p was not allocated by the unpack (a default). */
static size_t alloc_size(const struct alloc_log *lg, const void *p)
{
	size_t lo = 0, hi = lg->n, found = 0;
	while (lo < hi) { /* the last entry with address p */
		size_t mid = lo + (hi - lo) / 2;
		if ((uintptr_t)lg->e[mid].p <= (uintptr_t)p)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && lg->e[lo - 1].p == p)
		found = lg->e[lo - 1].size;
	return found;
}

static int add_unknown(ProtobufCMessage *m, uint32_t tag, const char *s, size_t len)
{
	ProtobufCMessageUnknownField *u =
		realloc(m->unknown_fields, (m->n_unknown_fields + 1) * sizeof *m->unknown_fields);
	if (!u)
		return -1;
	m->unknown_fields = u;
	uint8_t *data = malloc(len ? len : 1);
	if (!data)
		return -1;
	memcpy(data, s, len);
	u[m->n_unknown_fields++] = (ProtobufCMessageUnknownField){tag, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, len, data};
	return 0;
}

/* Record the whole bytes of every NUL-holding string of m and its sub-messages. */
static int record_strings(const struct alloc_log *lg, ProtobufCMessage *m, int depth)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	if (depth > 100)
		return -1;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		char *base = (char *)m + f->offset;
		size_t n = 1;
		char **items = (char **)base;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			n = *(size_t *)((char *)m + f->quantifier_offset);
			items = *(char ***)base;
		} else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (*(uint32_t *)((char *)m + f->quantifier_offset) != f->id)
				continue;
		}
		if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
			for (size_t k = 0; k < n; k++)
				if (items[k] && record_strings(lg, (ProtobufCMessage *)items[k], depth + 1) < 0)
					return -1;
			continue;
		}
		if (f->type != PROTOBUF_C_TYPE_STRING)
			continue;
		int any = 0;
		for (size_t k = 0; k < n && !any; k++) {
			size_t sz = items[k] ? alloc_size(lg, items[k]) : 0;
			any = sz > 0 && strlen(items[k]) != sz - 1;
		}
		/* a repeated field with one such string records all its items, in order */
		for (size_t k = 0; any && k < n; k++) {
			size_t sz = items[k] ? alloc_size(lg, items[k]) : 0;
			size_t len = sz ? sz - 1 : (items[k] ? strlen(items[k]) : 0);
			if (add_unknown(m, f->id, items[k] ? items[k] : "", len) < 0)
				return -1;
		}
	}
	return 0;
}

ProtobufCMessage *rk_pb_unpack(const ProtobufCMessageDescriptor *d, size_t len, const uint8_t *data)
{
	struct alloc_log lg = {0};
	ProtobufCAllocator a = {log_alloc, log_free, &lg};
	ProtobufCMessage *m = protobuf_c_message_unpack(d, &a, len, data);
	if (m && lg.n)
		qsort(lg.e, lg.n, sizeof *lg.e, ent_cmp);
	if (m && (lg.failed || record_strings(&lg, m, 0) < 0)) {
		protobuf_c_message_free_unpacked(m, NULL);
		m = NULL;
	}
	free(lg.e);
	return m;
}

const char *rk_pb_string(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, size_t k, const char *s,
			 size_t *len)
{
	for (unsigned i = 0; i < m->n_unknown_fields; i++) {
		const ProtobufCMessageUnknownField *u = &m->unknown_fields[i];
		if (u->tag == f->id && u->wire_type == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED && k-- == 0) {
			*len = u->len;
			return (const char *)u->data;
		}
	}
	*len = s ? strlen(s) : 0;
	return s ? s : "";
}
