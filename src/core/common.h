/* common.h - small definitions shared by every cairn module.
 *
 * Error convention (libuv style): functions return 0 or a non-negative count on
 * success and a negated errno value on failure; cairn_strerror() turns one into a
 * message. Errors travel in return values, never in a global.
 */
#ifndef CAIRN_COMMON_H
#define CAIRN_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#define CAIRN_VERSION "0.1.0"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* A string literal and its length, for (pointer, length) parameters. */
#define LIT(s) ("" s ""), (sizeof(s) - 1)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define UNUSED(x) ((void)(x))
#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Debug-build invariant check; compiled out with NDEBUG. */
#ifndef NDEBUG
#include <stdio.h>
#include <stdlib.h>
#define BUG_ON(cond)                                                        \
    do {                                                                    \
        if (unlikely(cond)) {                                               \
            fprintf(stderr, "BUG at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                        \
        }                                                                   \
    } while (0)
#else
#define BUG_ON(cond) ((void)0)
#endif

/* Message for a negated errno code (or a positive one). */
const char *cairn_strerror(int err);

/* Monotonic and wall clocks. */
uint64_t cairn_now_ms(void);      /* CLOCK_MONOTONIC, milliseconds */
uint64_t cairn_now_ns(void);      /* CLOCK_MONOTONIC, nanoseconds */
double cairn_wall_time(void);     /* CLOCK_REALTIME, seconds */

/* A string view: pointer and length, not NUL-terminated. */
struct strv {
    const char *p;
    size_t n;
};
#define STRV(s) ((struct strv){ (s), sizeof(s) - 1 })
#define STRV_NULL ((struct strv){ NULL, 0 })

static inline struct strv strv_make(const char *p, size_t n)
{
    return (struct strv){ p, n };
}
static inline struct strv strv_cstr(const char *s)
{
    return (struct strv){ s, s ? strlen(s) : 0 };
}
bool strv_eq(struct strv a, struct strv b);
bool strv_eq_cstr(struct strv a, const char *s);
bool strv_caseeq_cstr(struct strv a, const char *s);   /* ASCII case-insensitive */
bool strv_caseeq(struct strv a, struct strv b);
bool strv_has_prefix(struct strv a, const char *prefix);
struct strv strv_trim(struct strv a);                  /* strips SP and HTAB */
/* Copies into a NUL-terminated heap string; NULL on allocation failure. */
char *strv_dup(struct strv a);

/* Parses a decimal unsigned integer that must fill the whole view. */
int strv_to_u64(struct strv a, uint64_t *out);

/* Random bytes from the kernel, falling back to a seeded PRNG. */
void cairn_random(void *buf, size_t len);
/* Fast per-thread PRNG (xorshift) for non-cryptographic uses. */
uint64_t cairn_rand64(void);

/* Safe allocation helpers that never abort: they return NULL on failure. */
void *cairn_calloc(size_t n, size_t size);
char *cairn_strdup(const char *s);

/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void cairn_hex(const void *p, size_t n, char *out);

/* The decimal digits of v into out (20 bytes, not NUL-terminated); returns how
 * many. Two digits a step, for the hot paths that print thousands of numbers. */
size_t cairn_u64_digits(uint64_t v, char out[20]);

/* The shortest decimal digits (15, 16 or 17 significant, trailing zeros dropped;
 * NUL-terminated) that read back as |v|, computed exactly: |v| = 0.d1d2... *
 * 10^(*exp10 + 1), *prec the precision (15-17) that gave them. Returns how many
 * digits, or 0 for 0, NaN, infinities, subnormals and magnitudes beyond about
 * 1e22, for which the caller tries %.15g, %.16g and %.17g with strtod itself. */
int cairn_shortest_digits(double v, char digits[24], int *exp10, int *prec);

/* mkdir -p; 0 or a negated errno. */
int cairn_mkdir_p(const char *path, unsigned mode);
/* An RFC 3339 time ("2026-12-02T10:00:00.5Z", "...+01:00") as Unix nanoseconds.
 * 0, or -EINVAL (malformed, or past what int64 nanoseconds hold). */
int cairn_parse_rfc3339(const char *s, size_t n, int64_t *ns);

/* Number of online CPUs (at least 1). */
int cairn_ncpus(void);
/* Asks the kernel to schedule the calling thread in slices of ns nanoseconds
 * (EEVDF's sched_attr.sched_runtime for SCHED_OTHER, Linux 6.12 on; clamped to
 * 0.1-100 ms there): a shorter slice runs the thread sooner after it wakes, at the
 * same share of the CPU. Its policy and nice value are kept; threads it creates
 * after inherit the slice. Returns 0 or -errno (ENOSYS, EINVAL on older kernels). */
int cairn_sched_slice(uint64_t ns);

#endif
