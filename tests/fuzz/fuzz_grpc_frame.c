/* fuzz_grpc_frame.c — libFuzzer target: gRPC message framing and reassembly as riklet receives a
 * response body. The input is cut into chunks (sizes taken from its first bytes, like HTTP/2 DATA
 * frames of any size), appended to a reassembly buffer, and every complete 5-byte-prefixed message
 * is taken out with rk_grpc_frame_parse (the one framing function of core/grpc.c) and unpacked as
 * each message type riklet receives. Checks: nothing is read outside the buffer, a message never
 * claims more than was received or more than the cap, consumed = 5 + message length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/empty.pb-c.h"
#include "grpc.h"
#include "worker.pb-c.h"

#define MAX_MSG (64 * 1024) /* a small cap, so that "too large" is reached too */

static const ProtobufCMessageDescriptor *const received[] = {
	&worker__instance_scheduling__descriptor, /* Register: the scheduler's instructions */
	&google__protobuf__empty__descriptor,	  /* SendStatusUpdates: its answer */
};

static void take(const uint8_t *msg, size_t n)
{
	for (size_t i = 0; i < sizeof received / sizeof *received; i++) {
		ProtobufCMessage *m = protobuf_c_message_unpack(received[i], NULL, n, msg);
		if (m)
			protobuf_c_message_free_unpacked(m, NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = 1 + data[0] % 64; /* chunk sizes 1..64, varied by the bytes below */
	data++, size--;
	uint8_t *rx = NULL;
	size_t rx_len = 0, pos = 0;
	int failed = 0;
	while (pos < size && !failed) {
		size_t k = step + (data[pos] & 7);
		if (k > size - pos)
			k = size - pos;
		uint8_t *nrx = realloc(rx, rx_len + k);
		if (!nrx)
			break;
		rx = nrx;
		memcpy(rx + rx_len, data + pos, k); /* a fresh allocation per chunk: reads past show up */
		rx_len += k;
		pos += k;
		size_t off = 0;
		for (;;) {
			const uint8_t *msg = NULL;
			size_t ml = 0, used = 0;
			int st = 0;
			rk_err e = {0};
			int r = rk_grpc_frame_parse(rx + off, rx_len - off, MAX_MSG, &msg, &ml, &used, &st, &e);
			if (r == 0)
				break;
			if (r < 0) {
				if (!e.msg[0] || st == 0)
					abort(); /* an error must say what and carry a status */
				failed = 1;
				break;
			}
			if (ml > MAX_MSG || used != 5 + ml || used > rx_len - off || msg != rx + off + 5)
				abort();
			take(msg, ml);
			off += used;
		}
		if (off) {
			memmove(rx, rx + off, rx_len - off);
			rx_len -= off;
		}
	}
	free(rx);
	return 0;
}
