/* iptc_lazy.h — libip4tc, loaded with dlopen the first time riklet reads or writes an iptables
 * table (core/fw.c): with --network none, and in every command that touches no rule, it is never
 * loaded (tests/bench/bench_mem.sh). Included by core/fw.c after <libiptc/libiptc.h>: the iptc_*
 * calls below then go through the table rk_iptc_load() fills (idempotent and thread-safe: fw runs
 * on the worker pool; call it before any of them). */
#ifndef RK_IPTC_LAZY_H
#define RK_IPTC_LAZY_H

#include <libiptc/libiptc.h>
#include "rk.h"

/* every libiptc function riklet calls */
#define RK_IPTC_SYMS(X)                                                                                                \
	X(iptc_commit)                                                                                                 \
	X(iptc_create_chain)                                                                                           \
	X(iptc_delete_chain)                                                                                           \
	X(iptc_delete_num_entry)                                                                                       \
	X(iptc_first_rule)                                                                                             \
	X(iptc_flush_entries)                                                                                          \
	X(iptc_free)                                                                                                   \
	X(iptc_get_references)                                                                                         \
	X(iptc_get_target)                                                                                             \
	X(iptc_init)                                                                                                   \
	X(iptc_insert_entry)                                                                                           \
	X(iptc_is_chain)                                                                                               \
	X(iptc_next_rule)                                                                                              \
	X(iptc_strerror)

struct rk_iptc_api {
#define RK_IPTC_FIELD(f) __typeof__(f) *f;
	RK_IPTC_SYMS(RK_IPTC_FIELD)
#undef RK_IPTC_FIELD
};
extern struct rk_iptc_api rk_iptc;

/* Load libip4tc. Returns 0, or -1 with e saying what to install. */
int rk_iptc_load(rk_err *e);

#ifndef RK_IPTC_LAZY_IMPL
#define iptc_commit rk_iptc.iptc_commit
#define iptc_create_chain rk_iptc.iptc_create_chain
#define iptc_delete_chain rk_iptc.iptc_delete_chain
#define iptc_delete_num_entry rk_iptc.iptc_delete_num_entry
#define iptc_first_rule rk_iptc.iptc_first_rule
#define iptc_flush_entries rk_iptc.iptc_flush_entries
#define iptc_free rk_iptc.iptc_free
#define iptc_get_references rk_iptc.iptc_get_references
#define iptc_get_target rk_iptc.iptc_get_target
#define iptc_init rk_iptc.iptc_init
#define iptc_insert_entry rk_iptc.iptc_insert_entry
#define iptc_is_chain rk_iptc.iptc_is_chain
#define iptc_next_rule rk_iptc.iptc_next_rule
#define iptc_strerror rk_iptc.iptc_strerror
#endif

#endif
