/* tap.h — a tiny TAP producer for the C unit tests (crun's habit). Exit 77 = skipped (ctest). */
#ifndef RK_TAP_H
#define RK_TAP_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static int tap_n, tap_failed;
#define ok(cond, ...)                                                                                                  \
	do {                                                                                                           \
		++tap_n;                                                                                               \
		int c_ = !!(cond);                                                                                     \
		if (!c_)                                                                                               \
			tap_failed++;                                                                                  \
		printf("%s %d - ", c_ ? "ok" : "not ok", tap_n);                                                       \
		printf(__VA_ARGS__);                                                                                   \
		printf("\n");                                                                                          \
		if (!c_)                                                                                               \
			printf("#   at %s:%d: %s\n", __FILE__, __LINE__, #cond);                                       \
		fflush(stdout);                                                                                        \
	} while (0)
#define is_int(a, b, ...)                                                                                              \
	do {                                                                                                           \
		long long a_ = (a), b_ = (b);                                                                          \
		ok(a_ == b_, __VA_ARGS__);                                                                             \
		if (a_ != b_)                                                                                          \
			printf("#   got %lld, expected %lld\n", a_, b_);                                               \
	} while (0)
#define is_str(a, b, ...)                                                                                              \
	do {                                                                                                           \
		const char *a_ = (a), *b_ = (b);                                                                       \
		int e_ = a_ && b_ && !strcmp(a_, b_);                                                                  \
		ok(e_, __VA_ARGS__);                                                                                   \
		if (!e_)                                                                                               \
			printf("#   got '%s', expected '%s'\n", a_ ? a_ : "(null)", b_ ? b_ : "(null)");               \
	} while (0)
#define tap_skip_all(...)                                                                                              \
	do {                                                                                                           \
		printf("1..0 # SKIP ");                                                                                \
		printf(__VA_ARGS__);                                                                                   \
		printf("\n");                                                                                          \
		exit(77);                                                                                              \
	} while (0)
/* Run a shell command (tests only) and return its stdout (static buffer, up to 1 MiB). */
#include <stdarg.h>
__attribute__((format(printf, 1, 2), unused)) static const char *run(const char *fmt, ...)
{
	static char out[1 << 20];
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	out[0] = 0;
	FILE *p = popen(cmd, "r");
	if (!p)
		return out;
	size_t n = fread(out, 1, sizeof out - 1, p);
	out[n] = 0;
	pclose(p);
	return out;
}
#define tap_done()                                                                                                     \
	do {                                                                                                           \
		printf("1..%d\n", tap_n);                                                                              \
		return tap_failed ? 1 : 0;                                                                             \
	} while (0)
#endif
