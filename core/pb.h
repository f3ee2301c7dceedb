/* pb.h — protobuf-c unpacking that keeps the length of every string.
 *
 * protobuf-c hands string fields over as C strings, so "advgood\0zzz" would arrive as "advgood".
 * rk_pb_unpack unpacks like protobuf_c_message_unpack (free the result with
 * protobuf_c_message_free_unpacked(m, NULL)) and, for each string field whose bytes hold a NUL,
 * also records the whole bytes as an unknown field of its message with the field's number and
 * wire type LENGTH_PREFIXED (a known field's number never comes out of protobuf-c as unknown).
 * rk_pb_string_len gives the real length of a string field of such a message. */
#ifndef RK_PB_H
#define RK_PB_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

ProtobufCMessage *rk_pb_unpack(const ProtobufCMessageDescriptor *d, size_t len, const uint8_t *data);

/* The bytes and length of string field f of m (item k of a repeated field, else k = 0) whose C
 * string is s: the recorded whole bytes when the field held a NUL, else s itself. */
const char *rk_pb_string(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, size_t k, const char *s,
			 size_t *len);

#endif
