/* common.c - error messages, clocks, string views, randomness. */
#include "core/common.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <stdio.h>
#include <sys/stat.h>
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
