/* bk_chunker.c - restic's content-defined chunking: a Rabin fingerprint over a
 * 64-byte window with the repository's irreducible polynomial of degree 53, cut
 * where the low 20 bits of the digest are zero, chunks of 512 KiB to 8 MiB.
 *
 * The cut points must be exactly restic's so that data cairn backs up
 * deduplicates against data restic wrote (and back): the window starts with one
 * byte of value 1 slid in, the first MinSize - 64 bytes of a chunk are skipped
 * without hashing, and a chunk ends after the byte whose digest matched.
 * Arithmetic is over GF(2): polynomials are bit sets, addition is XOR.
 */
#include "backup_internal.h"

#include <stddef.h>

static int pol_deg(uint64_t x)
{
    return x ? 63 - __builtin_clzll(x) : -1;
}

static uint64_t pol_mod(uint64_t x, uint64_t d)
{
    int dd = pol_deg(d);
    for (int diff = pol_deg(x) - dd; x && diff >= 0; diff = pol_deg(x) - dd)
        x ^= d << diff;
    return x;
}

/* x * f mod g, for polynomials of degree below 63 */
static uint64_t pol_mulmod(uint64_t x, uint64_t f, uint64_t g)
{
    uint64_t res = 0;
    x = pol_mod(x, g);
    for (int i = 0; i <= pol_deg(f); i++) {
        if (f & (1ULL << i))
            res ^= x;
        x = pol_mod(x << 1, g);
    }
    return pol_mod(res, g);
}

static uint64_t pol_gcd(uint64_t x, uint64_t f)
{
    while (f) {
        uint64_t r = pol_mod(x, f);
        x = f;
        f = r;
    }
    return x;
}

/* Ben-Or: x is irreducible when gcd(x, X^(2^i) - X mod x) = 1 for i <= deg/2 */
bool bk_pol_irreducible(uint64_t x)
{
    if (pol_deg(x) < 1)
        return false;
    uint64_t q = 2;                     /* X */
    for (int i = 1; i <= pol_deg(x) / 2; i++) {
        q = pol_mulmod(q, q, x);        /* X^(2^i) */
        if (pol_gcd(x, pol_mod(q ^ 2, x)) != 1)
            return false;
    }
    return true;
}

uint64_t bk_pol_random(void)
{
    for (;;) {
        uint64_t f = cairn_rand64();
        f &= (1ULL << 54) - 1;
        f |= (1ULL << 53) | 1;
        if (bk_pol_irreducible(f))
            return f;
    }
}

/* A new chunk: restic starts every chunk's window from zeros with one byte of
 * value 1 slid in, then skips MinSize - 64 bytes without hashing. The window is
 * not kept: the byte leaving it is read back from the chunk, which the caller
 * keeps contiguous in memory (for the first 64 hashed bytes it is one of the
 * window's initial bytes: zeros, then the 1). */
static void chunker_reset(struct bk_chunker *c)
{
    uint64_t d = 0;
    d ^= c->out[0];
    d = ((d << 8) | 1) ^ c->mod[d >> c->shift];
    c->digest = d;
    c->hashed = 0;
    c->count = 0;
    c->pre = BK_MIN_CHUNK - BK_WINDOW;
}

int bk_chunker_init(struct bk_chunker *c, uint64_t pol)
{
    int k = pol_deg(pol);
    if (k < 9 || k > 53)
        return -1;
    c->pol = pol;
    c->shift = k - 8;
    for (int b = 0; b < 256; b++) {
        uint64_t h = pol_mod((uint64_t)b, pol);
        for (int i = 0; i < BK_WINDOW - 1; i++)
            h = pol_mod(h << 8, pol);
        c->out[b] = h;
        c->mod[b] = pol_mod((uint64_t)b << k, pol) | ((uint64_t)b << k);
    }
    for (int b = 0; b < 256; b++)
        c->slide[b] = (c->out[b] << 8) ^ c->mod[c->out[b] >> c->shift];
    chunker_reset(c);
    return 0;
}

void bk_chunker_restart(struct bk_chunker *c)
{
    chunker_reset(c);
}

size_t bk_chunker_next(struct bk_chunker *c, const uint8_t *p, size_t n)
{
    size_t i = 0;
    if (c->pre) {
        if (c->pre >= n) {
            c->pre -= n;
            c->count += n;
            return 0;
        }
        i = c->pre;
        c->count += c->pre;
        c->pre = 0;
    }
    uint64_t digest = c->digest, add = c->count;
    const uint64_t *out = c->out, *mod = c->mod;
    const int shift = c->shift;
    /* the first bytes of the window: what leaves is the initial zeros and the 1 */
    while (i < n && c->hashed < BK_WINDOW) {
        uint8_t o = c->hashed == BK_WINDOW - 1 ? 1 : 0;
        digest ^= out[o];
        digest = ((digest << 8) | p[i]) ^ mod[digest >> shift];
        i++;
        add++;
        c->hashed++;
        if (((digest & BK_SPLIT_MASK) == 0 || add >= BK_MAX_CHUNK) && add >= BK_MIN_CHUNK) {
            chunker_reset(c);
            return i;
        }
    }
    /* the steady state: add >= MinSize from here, so a zero mask cuts; stop at
     * MaxSize */
    size_t lim = n;
    if (lim - i > BK_MAX_CHUNK - add)
        lim = i + (size_t)(BK_MAX_CHUNK - add);
    size_t start = i;
    const uint64_t *slide = c->slide;
    /* Four cut searches side by side. Past the first 64 bytes of a chunk the
     * digest at a position is the fingerprint of the 64 bytes ending there, so a
     * region's digests can start from its own 64 bytes before it: the next
     * regions are hashed while the current one is, as independent dependency
     * chains (the loop is bound by the latency of one chain). The first cut in
     * position order wins, exactly as one pass would find it. */
    if (shift == 45) {
        const size_t L = 16384;
        while (lim - i >= 4 * L) {
            uint64_t d0 = digest, d1 = 0, d2 = 0, d3 = 0;
            const uint8_t *q0 = p + i, *q1 = q0 + L, *q2 = q1 + L, *q3 = q2 + L;
            for (size_t k = 0; k < BK_WINDOW; k++) {
                d1 = ((d1 << 8) | q1[(ptrdiff_t)k - BK_WINDOW]) ^ mod[d1 >> 45];
                d2 = ((d2 << 8) | q2[(ptrdiff_t)k - BK_WINDOW]) ^ mod[d2 >> 45];
                d3 = ((d3 << 8) | q3[(ptrdiff_t)k - BK_WINDOW]) ^ mod[d3 >> 45];
            }
            size_t c1 = 0, c2 = 0, c3 = 0;
            for (size_t k = 0; k < L; k++) {
                uint64_t t0 = (d0 << 8) ^ q0[k] ^ slide[q0[(ptrdiff_t)k - BK_WINDOW]];
                uint64_t t1 = (d1 << 8) ^ q1[k] ^ slide[q1[(ptrdiff_t)k - BK_WINDOW]];
                uint64_t t2 = (d2 << 8) ^ q2[k] ^ slide[q2[(ptrdiff_t)k - BK_WINDOW]];
                uint64_t t3 = (d3 << 8) ^ q3[k] ^ slide[q3[(ptrdiff_t)k - BK_WINDOW]];
                __asm__("" : "+r"(t0), "+r"(t1), "+r"(t2), "+r"(t3));
                d0 = t0 ^ mod[d0 >> 45];
                d1 = t1 ^ mod[d1 >> 45];
                d2 = t2 ^ mod[d2 >> 45];
                d3 = t3 ^ mod[d3 >> 45];
                if (__builtin_expect(((d0 & BK_SPLIT_MASK) == 0) | ((d1 & BK_SPLIT_MASK) == 0) |
                                     ((d2 & BK_SPLIT_MASK) == 0) | ((d3 & BK_SPLIT_MASK) == 0), 0)) {
                    if ((d0 & BK_SPLIT_MASK) == 0) {
                        chunker_reset(c);
                        return i + k + 1;
                    }
                    if (!c1 && (d1 & BK_SPLIT_MASK) == 0)
                        c1 = i + L + k + 1;
                    if (!c2 && (d2 & BK_SPLIT_MASK) == 0)
                        c2 = i + 2 * L + k + 1;
                    if (!c3 && (d3 & BK_SPLIT_MASK) == 0)
                        c3 = i + 3 * L + k + 1;
                }
            }
            if (c1 || c2 || c3) {
                chunker_reset(c);
                return c1 ? c1 : c2 ? c2 : c3;
            }
            digest = d3;
            i += 4 * L;
        }
    }
    /* restic's polynomials have degree 53: a constant shift keeps the loop's
     * dependency chain short (a shift by %cl is slower on x86) */
    /* Reduction mod P is linear over GF(2), so the byte leaving the window folds
     * into one table of its own (slide[o] = out[o] * x^8 mod P, unreduced the same
     * way) off the loop's dependency chain: digest = digest*x^8 + b + slide[o]. */
#define STEP(SHIFT)                                                                  \
    for (; i < lim; i++) {                                                           \
        uint64_t t_ = (digest << 8) ^ p[i] ^ slide[p[i - BK_WINDOW]];                 \
        __asm__("" : "+r"(t_)); /* keeps the compiler from moving an xor onto the chain */ \
        digest = t_ ^ mod[digest >> (SHIFT)];                                        \
        if ((digest & BK_SPLIT_MASK) == 0) {                                         \
            chunker_reset(c);                                                        \
            return i + 1;                                                            \
        }                                                                            \
    }
    if (shift == 45) {
        STEP(45)
    } else {
        STEP(shift)
    }
#undef STEP
    add += i - start;
    if (add >= BK_MAX_CHUNK && i > 0) {
        chunker_reset(c);
        return i;
    }
    c->digest = digest;
    c->count = add;
    return 0;
}
