/* common.c - error messages, clocks, string views, randomness. */
#include "core/common.h"

#include <errno.h>
#include <linux/sched.h>
#include <linux/sched/types.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

const char *cairn_strerror(int err)
{
    if (err < 0)
        err = -err;
    return strerror(err);
}

uint64_t cairn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t cairn_now_ms(void)
{
    return cairn_now_ns() / 1000000ull;
}

double cairn_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool strv_eq(struct strv a, struct strv b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

bool strv_eq_cstr(struct strv a, const char *s)
{
    return strv_eq(a, strv_cstr(s));
}

static inline unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

bool strv_caseeq(struct strv a, struct strv b)
{
    if (a.n != b.n)
        return false;
    for (size_t i = 0; i < a.n; i++)
        if (ascii_lower((unsigned char)a.p[i]) != ascii_lower((unsigned char)b.p[i]))
            return false;
    return true;
}

bool strv_caseeq_cstr(struct strv a, const char *s)
{
    return strv_caseeq(a, strv_cstr(s));
}

bool strv_has_prefix(struct strv a, const char *prefix)
{
    size_t n = strlen(prefix);
    return a.n >= n && memcmp(a.p, prefix, n) == 0;
}

struct strv strv_trim(struct strv a)
{
    while (a.n && (a.p[0] == ' ' || a.p[0] == '\t')) {
        a.p++;
        a.n--;
    }
    while (a.n && (a.p[a.n - 1] == ' ' || a.p[a.n - 1] == '\t'))
        a.n--;
    return a;
}

char *strv_dup(struct strv a)
{
    char *s = malloc(a.n + 1);
    if (!s)
        return NULL;
    if (a.n)
        memcpy(s, a.p, a.n);
    s[a.n] = '\0';
    return s;
}

int strv_to_u64(struct strv a, uint64_t *out)
{
    uint64_t v = 0;
    if (a.n == 0 || a.n > 19)
        return -EINVAL;
    for (size_t i = 0; i < a.n; i++) {
        if (a.p[i] < '0' || a.p[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(a.p[i] - '0');
    }
    *out = v;
    return 0;
}

static __thread uint64_t rng_state;

void cairn_random(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len) {
        ssize_t r = getrandom(p, len, 0);
        if (r > 0) {
            p += r;
            len -= (size_t)r;
        } else if (r == -1 && errno == EINTR) {
            continue;
        } else {
            for (; len; len--)
                *p++ = (unsigned char)cairn_rand64();
        }
    }
}

uint64_t cairn_rand64(void)
{
    if (unlikely(rng_state == 0)) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
            seed = cairn_now_ns() ^ ((uint64_t)getpid() << 32);
        rng_state = seed | 1;
    }
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

void *cairn_calloc(size_t n, size_t size)
{
    return calloc(n, size);
}

char *cairn_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int cairn_sched_slice(uint64_t ns)
{
    struct sched_attr a;        /* the kernel's (no glibc wrapper) */
    memset(&a, 0, sizeof(a));
    if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0))
        return -errno;
    if (a.sched_policy != SCHED_NORMAL)     /* real-time policies have no slice */
        return -EINVAL;
    a.size = sizeof(a);
    a.sched_flags = 0;
    a.sched_runtime = ns;
    if (syscall(SYS_sched_setattr, 0, &a, 0))
        return -errno;
    return 0;
}

int cairn_ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int cairn_mkdir_p(const char *path, unsigned mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, (mode_t)mode) == -1 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, (mode_t)mode) == -1 && errno != EEXIST)
        return -errno;
    return 0;
}

/* ---- the shortest digits that read back as the same double ----
 *
 * A value is m * 2^e (m the 53-bit significand). Its P-digit decimal rounding is
 * D * 10^-s with D = round(m * 2^e * 10^s), computed exactly in 128-bit integers
 * whenever the operands fit (m * 10^s, or m * 2^e, below 2^127): about 1e-5 to
 * 1e22, where query results live. D reads back as the value when it lies within
 * half a gap of the next doubles (exact integer comparison; a tie reads back when
 * the significand is even, as strtod rounds). P = 15,
 * 16, then 17 (17 always reads back), so the digits are the shortest. Outside that
 * range the caller falls back on snprintf and strtod. */

typedef unsigned __int128 u128;

static u128 pow10_tab[39];

__attribute__((constructor)) static void pow10_init(void)
{
    pow10_tab[0] = 1;
    for (int i = 1; i < 39; i++)
        pow10_tab[i] = pow10_tab[i - 1] * 10;
}

static inline u128 pow10_u128(int n)
{
    return pow10_tab[n];
}

/* Whether a decimal diff away from v (in units where v's gap to the next double is
 * gap; half that below a power of two) reads back as v: within half a gap, or
 * exactly half and v's significand even (a tie goes to even). */
static bool reads_back(u128 diff, u128 gap, bool half_gap, uint64_t m)
{
    u128 twice = (half_gap ? 4 : 2) * diff;
    return twice < gap || (twice == gap && !(m & 1));
}

/* The P-digit rounding of v = m * 2^e at decimal exponent x (v in [10^x, 10^(x+1))):
 * *d, and whether it reads back as v. False in *fits when the numbers do not fit. */
static bool round_digits(uint64_t m, int e, bool lower_half_gap, int P, int x, bool round, uint64_t *d,
                         bool *exact_back)
{
    int s = P - 1 - x;
    if (s >= 0 && e <= 0) {
        int k = -e;
        if (s > 22 || k > 126)
            return false;
        u128 scale = pow10_u128(s);
        u128 num = (u128)m * scale;
        u128 q = k ? num >> k : num;
        u128 r = k ? num - (q << k) : 0;
        u128 half = k ? (u128)1 << (k - 1) : 0;
        if (round && k && (r > half || (r == half && (q & 1))))
            q++;
        *d = (uint64_t)q;
        /* |D * 2^k - m * 10^s| against half a gap (10^s / 2; a quarter below a power of two) */
        u128 a = q << k, diff = a > num ? a - num : num - a;
        bool below = a < num;
        *exact_back = reads_back(diff, scale, below && lower_half_gap, m);
        return true;
    }
    if (s >= 0) {           /* e > 0: v * 10^s is an integer; no rounding */
        if (e > 60 || s > 18)
            return false;
        u128 q = ((u128)m << e) * pow10_u128(s);
        if (q >> 64)
            return false;
        *d = (uint64_t)q;
        *exact_back = true;
        return true;
    }
    /* s < 0: D = round(m * 2^e / 10^-s) */
    if (e < 0 || e > 73 || -s > 38)
        return false;
    u128 num = (u128)m << e;
    u128 div = pow10_u128(-s);
    u128 q = num / div, r = num % div;
    if (round && (2 * r > div || (2 * r == div && (q & 1))))
        q++;
    *d = (uint64_t)q;
    /* |D * 10^-s - m * 2^e| against 2^e / 2 (2^e / 4 below a power of two) */
    u128 a = q * div, diff = a > num ? a - num : num - a;
    bool below = a < num;
    u128 gap = (u128)1 << e;
    *exact_back = reads_back(diff, gap, below && lower_half_gap, m);
    return true;
}

/* For cairn_shortest_digits: the value num * 2^-k (units of 10^-s, gap scale)
 * whose 17 digits truncated are q17, rounded to 17 - log10(div) digits in *d;
 * whether that reads back. Inlined with a constant div (no division instruction). */
static inline __attribute__((always_inline)) bool rounding_reads_back(u128 num, int k, uint64_t q17, uint64_t div,
                                                                      u128 scale, bool lower_half_gap, uint64_t m,
                                                                      uint64_t *d)
{
    uint64_t q = q17 / div;
    u128 rest = num - ((u128)(q * div) << k), unit = (u128)div << k;
    if (2 * rest > unit || (2 * rest == unit && (q & 1)))
        q++;
    u128 at = (u128)(q * div) << k;
    bool under = at < num;
    *d = q;
    return reads_back(under ? num - at : at - num, scale, under && lower_half_gap, m);
}

static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* The last n digits of v (n < 10), zero-padded, written backwards ending at end. */
static inline void digits_back32(uint32_t v, char *end, size_t n)
{
    while (n >= 2) {
        memcpy(end - 2, digit_pairs + 2 * (v % 100), 2);
        v /= 100;
        end -= 2;
        n -= 2;
    }
    if (n)
        end[-1] = (char)('0' + v % 10);
}

/* The last n digits of v, zero-padded, written backwards ending at end: eight at
 * a time in two independent 32-bit halves (a 17-digit value is otherwise a chain
 * of eight dependent divisions). */
static void digits_back(uint64_t v, char *end, size_t n)
{
    for (; n >= 8; n -= 8, end -= 8) {
        uint64_t q = v / 100000000;
        uint32_t r = (uint32_t)(v - q * 100000000);
        digits_back32(r / 10000, end - 4, 4);
        digits_back32(r % 10000, end, 4);
        v = q;
    }
    digits_back32((uint32_t)v, end, n);
}

size_t cairn_u64_digits(uint64_t v, char out[20])
{
    /* the digit count from the bit length (1233 / 4096 is log10(2) from below),
     * then one comparison */
    size_t n = (size_t)(((64 - __builtin_clzll(v | 1)) * 1233) >> 12);
    n += (v | 1) >= (uint64_t)pow10_u128((int)n);
    digits_back(v, out + n, n);
    return n;
}

int cairn_shortest_digits(double v, char digits[24], int *exp10, int *prec)
{
    double a = fabs(v);
    if (!isfinite(v) || a == 0)
        return 0;
    uint64_t bits;
    memcpy(&bits, &a, sizeof(bits));
    int bexp = (int)(bits >> 52);           /* a = m * 2^e, m in [2^52, 2^53) */
    if (bexp == 0)
        return 0;                           /* subnormals: the slow path */
    uint64_t m = (bits & ((1ull << 52) - 1)) | (1ull << 52);
    int e = bexp - 1075, be = bexp - 1022;
    bool lower_half_gap = m == (1ull << 52);
    /* the decimal exponent, exactly: 10^x <= a < 10^(x+1) when the 17 digits of
     * a at x, truncated, are 17 digits. First guess: a >= 2^(be-1), so x is
     * floor((be-1) * log10(2)) (78913 / 2^18 is log10(2) to 6 digits) or one more */
    int x = ((be - 1) * 78913) >> 18;
    uint64_t d;
    bool back;
    for (int tries = 0;; tries++) {
        if (tries == 3 || !round_digits(m, e, lower_half_gap, 17, x, false, &d, &back))
            return 0;
        if (d < 10000000000000000ull)
            x--;
        else if (d >= 100000000000000000ull)
            x++;
        else
            break;
    }
    int P = 15;
    if (x <= 16 && e <= 0) {
        /* a below 2^53 with 17 digits at 10^(16-x) and k = -e <= 74 (the 17
         * digits bound 2^k): each rounding, and its distance to a, comes from the
         * one product m * 10^(16-x), in units of 2^-k * 10^-(16-x) */
        int k = -e;
        u128 scale = pow10_u128(16 - x), num = (u128)m * scale;
        uint64_t q17 = (uint64_t)(num >> k);
        if (rounding_reads_back(num, k, q17, 100, scale, lower_half_gap, m, &d))
            P = 15;
        else if (rounding_reads_back(num, k, q17, 10, scale, lower_half_gap, m, &d))
            P = 16;
        else {
            rounding_reads_back(num, k, q17, 1, scale, lower_half_gap, m, &d);
            P = 17;
        }
    } else {
        for (;; P++) {
            if (!round_digits(m, e, lower_half_gap, P, x, true, &d, &back))
                return 0;
            if (back)
                break;
            if (P == 17)
                return 0;                   /* 17 digits always read back: let the slow path say */
        }
    }
    uint64_t lo = (uint64_t)pow10_u128(P - 1);
    if (d >= lo * 10) {                     /* rounded up to the next power of ten */
        d = lo;
        x++;
    }
    digits_back(d, digits + P, (size_t)P);
    int n = P;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    digits[n] = 0;
    *exp10 = x;
    *prec = P;
    return n;
}

void cairn_hex(const void *p, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = 0;
}

int cairn_parse_rfc3339(const char *s, size_t n, int64_t *ns)
{
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *r = strptime(tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!r)
        return -EINVAL;
    int64_t frac = 0;
    if (*r == '.' || *r == ',') {
        int d = 0;
        for (r++; *r >= '0' && *r <= '9'; r++)
            if (d++ < 9)
                frac = frac * 10 + (*r - '0');
        if (!d)
            return -EINVAL;
        while (d++ < 9)
            frac *= 10;
    }
    long off = 0;
    if (*r == '+' || *r == '-') {
        int hh = 0, mm = 0;
        if (sscanf(r + 1, "%2d:%2d", &hh, &mm) != 2)
            return -EINVAL;
        off = (*r == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
        r += 6;
    } else if (*r == 'Z' || *r == 'z') {
        r++;
    } else {
        return -EINVAL;
    }
    if (*r)
        return -EINVAL;
    int64_t sec = (int64_t)timegm(&tm) - off;
    if (sec < -9000000000LL || sec > 9000000000LL)
        return -EINVAL;
    *ns = sec * 1000000000 + frac;
    return 0;
}
