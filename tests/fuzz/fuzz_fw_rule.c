/* fuzz_fw_rule.c — libFuzzer target: the iptables rule builder's inputs (core/fw.c). A rule is
 * built from the input, either field by field (lines: table, chain, src, dst, iif, oif, proto,
 * dport, ctstate, target, to, comment; a first byte 'R' instead fills the struct with raw bytes,
 * fields not NUL-terminated included) and given to rk_fw_rule_validate and rk_fw_rule_format
 * (encode into the kernel's binary form, decode back, print as `iptables -S`), the latter into
 * buffers of every small size. No rule reaches the kernel. Checks: a valid rule formats, the text
 * is NUL-terminated within the buffer and the same whatever the buffer size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fw.h"

static void field(char *dst, size_t cap, const char **p, const char *end)
{
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));
	size_t n = (size_t)((nl ? nl : end) - *p);
	memset(dst, 0, cap);
	memcpy(dst, *p, n < cap - 1 ? n : cap - 1);
	*p = nl ? nl + 1 : end;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	rk_fw_rule r;
	memset(&r, 0, sizeof r);
	if (size && data[0] == 'R') {
		memcpy(&r, data + 1, size - 1 < sizeof r ? size - 1 : sizeof r);
	} else {
		const char *p = (const char *)data, *end = p + size;
		char dport[8];
		field(r.table, sizeof r.table, &p, end);
		field(r.chain, sizeof r.chain, &p, end);
		field(r.src, sizeof r.src, &p, end);
		field(r.dst, sizeof r.dst, &p, end);
		field(r.iif, sizeof r.iif, &p, end);
		field(r.oif, sizeof r.oif, &p, end);
		field(r.proto, sizeof r.proto, &p, end);
		field(dport, sizeof dport, &p, end);
		r.dport = (uint16_t)atoi(dport);
		field(r.ctstate, sizeof r.ctstate, &p, end);
		field(r.target, sizeof r.target, &p, end);
		field(r.to, sizeof r.to, &p, end);
		field(r.comment, sizeof r.comment, &p, end);
	}
	rk_err e = {0};
	int valid = rk_fw_rule_validate(&r, &e) == 0;
	if (!valid && !e.msg[0])
		abort(); /* a refusal must say why */
	char full[1024];
	int n = rk_fw_rule_format(&r, full, sizeof full, &e);
	if (valid != (n >= 0) || (n >= 0 && (size_t)n >= sizeof full))
		abort();
	if (n < 0)
		return 0;
	for (size_t len = 0; len < 48; len++) { /* heap buffers of the exact size: a write past shows */
		char *b = malloc(len ? len : 1);
		int m = rk_fw_rule_format(&r, len ? b : NULL, len, &e);
		if (m != n || (len && (strlen(b) >= len || strncmp(b, full, len - 1))))
			abort();
		free(b);
	}
	return 0;
}
