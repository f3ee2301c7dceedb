/* grpc_h2.h — private to core/grpc*.c: the h2c transport of core/grpc (gRPC over libnghttp2 on a
 * non-blocking socket of the rk_loop), used for http:// channels; https:// channels keep libcurl
 * (core/grpc.c), which is then the only thing that loads it.
 *
 * Both transports' channel and call structs start with `int h2` (1 here, 0 for libcurl's), so the
 * public rk_grpc_* functions in grpc.c dispatch on it. The semantics are those of grpc.h. */
#ifndef RK_GRPC_H2_H
#define RK_GRPC_H2_H

#include "grpc.h"

struct rk_grpc_tag {
	int h2;
};
#define RK_GRPC_IS_H2(p) (((const struct rk_grpc_tag *)(const void *)(p))->h2)

rk_grpc_channel *rk_h2_channel_new(rk_loop *l, const char *url, const rk_grpc_opts *o, rk_err *e);
void rk_h2_channel_free(rk_grpc_channel *ch);
const char *rk_h2_channel_url(const rk_grpc_channel *ch);
size_t rk_h2_channel_sockets(const rk_grpc_channel *ch);
size_t rk_h2_channel_calls(const rk_grpc_channel *ch);
rk_grpc_call *rk_h2_call_start(rk_grpc_channel *ch, const char *path, uint64_t deadline_ms,
			       const ProtobufCMessageDescriptor *resp, const rk_grpc_call_cbs *cbs, void *ud,
			       rk_err *e);
void rk_h2_call_set_header_timeout(rk_grpc_call *c, uint64_t ms);
int rk_h2_call_send_raw(rk_grpc_call *c, const void *buf, size_t len, rk_err *e);
void rk_h2_call_close_send(rk_grpc_call *c);
void rk_h2_call_cancel(rk_grpc_call *c);
size_t rk_h2_call_pending(const rk_grpc_call *c);

/* Shared by both transports (grpc.c). A received message as a queue node: decoded as resp, or
 * its bytes (raw, len) when resp is NULL; NULL with *status and e set when it cannot be. */
struct rk_grpc_rxmsg {
	ProtobufCMessage *msg;
	uint8_t *raw;
	size_t len;
	struct rk_grpc_rxmsg *next;
};
struct rk_grpc_rxmsg *rk_grpc__rxmsg_new(const ProtobufCMessageDescriptor *resp, const uint8_t *msg, size_t ml,
					 int *status, rk_err *e);
void rk_grpc__rxmsg_free_all(struct rk_grpc_rxmsg *m);
/* Fill the zero fields of o with the defaults of grpc.h. */
void rk_grpc__opts_defaults(rk_grpc_opts *o);
/* The gRPC status for an HTTP status that came without grpc-status. */
int rk_grpc__http_status(int http);
/* Append one message, framed (5-byte header), to a send buffer of *tx_len bytes in *tx_cap
 * (grown as needed); -1 when out of memory (the buffer is unchanged). */
int rk_grpc__tx_frame(uint8_t **tx, size_t *tx_len, size_t *tx_cap, const void *buf, size_t len);

#endif
