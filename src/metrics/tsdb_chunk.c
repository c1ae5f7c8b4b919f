/* tsdb_chunk.c - Gorilla-style XOR chunks. */
#include "tsdb_chunk.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void tsdb_chunk_init(struct tsdb_chunk *c)
{
    memset(c, 0, sizeof(*c));
}

void tsdb_chunk_free(struct tsdb_chunk *c)
{
    free(c->b);
    memset(c, 0, sizeof(*c));
}

static int put_bits(struct tsdb_chunk *c, uint64_t v, unsigned nb)
{
    uint64_t need64 = ((uint64_t)c->nbits + nb + 7) / 8;
    if (need64 > UINT32_MAX / 4)
        return -ENOMEM;         /* never for a real chunk; a damaged encoder state */
    uint32_t need = (uint32_t)need64;
    if (need > c->capbytes) {
        uint32_t cap = c->capbytes ? c->capbytes * 2 : 32;
        while (cap < need)
            cap *= 2;
        uint8_t *nbuf = realloc(c->b, cap);
        if (!nbuf)
            return -ENOMEM;
        memset(nbuf + c->capbytes, 0, cap - c->capbytes);
        c->b = nbuf;
        c->capbytes = cap;
    }
    while (nb) {
        uint32_t byte = c->nbits / 8, off = c->nbits % 8;
        unsigned room = 8 - off, take = nb < room ? nb : room;
        uint8_t bits = (uint8_t)((v >> (nb - take)) & ((1u << take) - 1));
        c->b[byte] |= (uint8_t)(bits << (room - take));
        c->nbits += take;
        nb -= take;
    }
    return 0;
}

static uint64_t f2u(double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    return u;
}

static double u2f(uint64_t u)
{
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* Signed values in nb bits, two's complement. */
static int put_signed(struct tsdb_chunk *c, int64_t v, unsigned nb)
{
    return put_bits(c, (uint64_t)v & (nb == 64 ? ~0ull : ((1ull << nb) - 1)), nb);
}

/* A signed integer in the smallest bucket that holds it: '0' (zero), '10' + 7 bits,
 * '110' + 14, '1110' + 24, '11110' + 40, '11111' + 64. */
static int put_varbit(struct tsdb_chunk *c, int64_t v)
{
    if (v == 0)
        return put_bits(c, 0, 1);
    if (v >= -64 && v <= 63)
        return put_bits(c, 2, 2) || put_signed(c, v, 7) ? -ENOMEM : 0;
    if (v >= -8192 && v <= 8191)
        return put_bits(c, 6, 3) || put_signed(c, v, 14) ? -ENOMEM : 0;
    if (v >= -(1 << 23) && v < (1 << 23))
        return put_bits(c, 14, 4) || put_signed(c, v, 24) ? -ENOMEM : 0;
    if (v >= -(1ll << 39) && v < (1ll << 39))
        return put_bits(c, 30, 5) || put_signed(c, v, 40) ? -ENOMEM : 0;
    return put_bits(c, 31, 5) || put_signed(c, v, 64) ? -ENOMEM : 0;
}

static int put_xor(struct tsdb_chunk *c, double v)
{
    uint64_t x = f2u(v) ^ c->vbits;
    c->vbits = f2u(v);
    if (x == 0)
        return put_bits(c, 0, 1);
    uint8_t lead = (uint8_t)__builtin_clzll(x), trail = (uint8_t)__builtin_ctzll(x);
    if (lead > 31)
        lead = 31;              /* 5 bits */
    if (c->n > 1 && c->leading != 0xff && lead >= c->leading && trail >= c->trailing) {
        unsigned sig = 64u - c->leading - c->trailing;
        if (put_bits(c, 2, 2))  /* '10': same window */
            return -ENOMEM;
        return put_bits(c, x >> c->trailing, sig);
    }
    unsigned sig = 64u - lead - trail;
    c->leading = lead;
    c->trailing = trail;
    if (put_bits(c, 3, 2) || put_bits(c, lead, 5) || put_bits(c, sig & 63, 6))   /* 64 -> 0 */
        return -ENOMEM;
    return put_bits(c, x >> trail, sig);
}

int tsdb_chunk_append(struct tsdb_chunk *c, int64_t t, double v)
{
    int r;
    if (c->n == 0) {
        c->leading = 0xff;
        r = put_bits(c, (uint64_t)t, 64);
        if (!r)
            r = put_bits(c, f2u(v), 64);
        c->vbits = f2u(v);
        c->mint = t;
    } else if (c->n == 1) {
        int64_t d = (int64_t)((uint64_t)t - (uint64_t)c->t);
        r = put_signed(c, d, 64);
        c->tdelta = d;
        if (!r)
            r = put_xor(c, v);
    } else {
        /* wrapping arithmetic: a restored or corrupted state must not be UB */
        int64_t d = (int64_t)((uint64_t)t - (uint64_t)c->t);
        int64_t dod = (int64_t)((uint64_t)d - (uint64_t)c->tdelta);
        if (dod == 0)
            r = put_bits(c, 0, 1);
        else if (dod >= -8192 && dod <= 8191)
            r = put_bits(c, 2, 2) || put_signed(c, dod, 14);
        else if (dod >= -65536 && dod <= 65535)
            r = put_bits(c, 6, 3) || put_signed(c, dod, 17);
        else if (dod >= -524288 && dod <= 524287)
            r = put_bits(c, 14, 4) || put_signed(c, dod, 20);
        else
            r = put_bits(c, 15, 4) || put_signed(c, dod, 64);
        c->tdelta = d;
        if (!r)
            r = put_xor(c, v);
    }
    if (r)
        return -ENOMEM;
    c->t = t;
    c->maxt = t;
    c->n++;
    return 0;
}

void tsdb_chunk_seal(struct tsdb_chunk *c)
{
    uint32_t used = (uint32_t)tsdb_chunk_bytes(c);
    if (used && used < c->capbytes) {
        uint8_t *nb = realloc(c->b, used);
        if (nb) {
            c->b = nb;
            c->capbytes = used;
        }
    }
}

void tsdb_chunk_iter_init(struct tsdb_chunk_iter *it, const uint8_t *b, uint32_t nbits,
                          uint16_t n)
{
    memset(it, 0, sizeof(*it));
    it->b = b;
    it->nbits = nbits;
    it->n = n;
}

void tsdb_chunk_iter_init_enc(struct tsdb_chunk_iter *it, const uint8_t *b, uint32_t nbits,
                              uint16_t n, uint8_t enc, int64_t mint)
{
    tsdb_chunk_iter_init(it, b, nbits, n);
    it->enc = enc;
    it->t = mint;
    if (enc > TSDB_ENC_DEC)
        it->err = true;
}

/* The 64 bits from the read position on, the first in the top bit; bits past the
 * chunk's bytes read as zero, and past nbits they mean nothing (callers check). */
static inline uint64_t peek64(const struct tsdb_chunk_iter *it)
{
    uint32_t byte = it->pos / 8, nbytes = (it->nbits + 7) / 8;
    uint64_t w;
    if (byte + 8 <= nbytes) {
        memcpy(&w, it->b + byte, 8);
        w = __builtin_bswap64(w);
    } else {
        w = 0;
        for (uint32_t i = 0; i < 8; i++)
            w = w << 8 | (byte + i < nbytes ? it->b[byte + i] : 0u);
    }
    return w << (it->pos % 8);
}

static bool get_bits(struct tsdb_chunk_iter *it, unsigned nb, uint64_t *out)
{
    if (nb > 64 || it->pos + nb > it->nbits) {
        it->err = true;
        return false;
    }
    if (!nb) {
        *out = 0;
        return true;
    }
    unsigned off = it->pos % 8;
    uint64_t v = peek64(it) >> (64 - nb);
    if (nb > 64 - off)          /* the last bits are in a ninth byte */
        v |= (uint64_t)(it->b[it->pos / 8 + 8] >> (8 - (nb - (64 - off))));
    it->pos += nb;
    *out = v;
    return true;
}

/* A unary prefix: how many 1 bits (at most max) before a 0, the 0 consumed unless
 * max ones were read. */
static bool get_ones(struct tsdb_chunk_iter *it, unsigned max, unsigned *ones)
{
    uint64_t w = ~peek64(it);
    unsigned n = w ? (unsigned)__builtin_clzll(w) : 64;
    if (n > max)
        n = max;
    unsigned used = n + (n < max);
    if (it->pos + used > it->nbits) {
        it->err = true;
        return false;
    }
    it->pos += used;
    *ones = n;
    return true;
}

static int64_t sign_extend(uint64_t v, unsigned nb)
{
    if (nb == 64)
        return (int64_t)v;
    uint64_t m = 1ull << (nb - 1);
    return (int64_t)((v ^ m) - m);
}

static bool get_xor(struct tsdb_chunk_iter *it)
{
    uint64_t x;
    unsigned ctl;               /* 0: the same value; 10: the same window; 11: a new one */
    if (!get_ones(it, 2, &ctl))
        return false;
    if (!ctl)
        return true;
    if (ctl == 2) {
        uint64_t lead, sig;
        if (!get_bits(it, 5, &lead) || !get_bits(it, 6, &sig))
            return false;
        if (sig == 0)
            sig = 64;
        if (lead + sig > 64) {
            it->err = true;
            return false;
        }
        it->leading = (uint8_t)lead;
        it->trailing = (uint8_t)(64 - lead - sig);
    } else if (it->leading + it->trailing >= 64 && !(it->leading == 0 && it->trailing == 0)) {
        it->err = true;
        return false;
    }
    unsigned sig = 64u - it->leading - it->trailing;
    if (!get_bits(it, sig, &x))
        return false;
    it->vbits ^= sig == 64 ? x : x << it->trailing;
    return true;
}

static bool get_varbit(struct tsdb_chunk_iter *it, int64_t *out)
{
    static const unsigned widths[] = { 0, 7, 14, 24, 40, 64 };
    unsigned ones;
    uint64_t u;
    if (!get_ones(it, 5, &ones))
        return false;
    *out = 0;
    if (!ones)
        return true;
    if (!get_bits(it, widths[ones], &u))
        return false;
    *out = sign_extend(u, widths[ones]);
    return true;
}

static const double pow10s[] = { 1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7 };

static bool next_dec(struct tsdb_chunk_iter *it, int64_t *t, double *v)
{
    int64_t a, b;
    if (it->i == 0) {
        uint64_t k;
        if (!get_bits(it, 3, &k) || !get_varbit(it, &a))
            return false;
        it->scale = (uint8_t)k;
        it->x = a;              /* it->t is mint already */
    } else if (it->i == 1) {
        if (!get_varbit(it, &a) || !get_varbit(it, &b))
            return false;
        it->tdelta = a;
        it->t = (int64_t)((uint64_t)it->t + (uint64_t)a);
        it->xdelta = b;
        it->x = (int64_t)((uint64_t)it->x + (uint64_t)b);
    } else {
        if (!get_varbit(it, &a) || !get_varbit(it, &b))
            return false;
        it->tdelta = (int64_t)((uint64_t)it->tdelta + (uint64_t)a);
        it->t = (int64_t)((uint64_t)it->t + (uint64_t)it->tdelta);
        it->xdelta = (int64_t)((uint64_t)it->xdelta + (uint64_t)b);
        it->x = (int64_t)((uint64_t)it->x + (uint64_t)it->xdelta);
    }
    it->i++;
    *t = it->t;
    *v = it->scale ? (double)it->x / pow10s[it->scale] : (double)it->x;
    return true;
}

/* Whether every value is x / 10^k for integers |x| < 2^53, exactly, bit for bit. */
static bool scales_to(const double *v, uint16_t n, unsigned k, int64_t *x)
{
    for (uint16_t i = 0; i < n; i++) {
        double s = v[i] * pow10s[k];
        if (!(fabs(s) < 9007199254740992.0))
            return false;       /* also NaN (staleness markers) and infinities */
        int64_t xi = (int64_t)llrint(s);
        double back = k ? (double)xi / pow10s[k] : (double)xi;
        if (memcmp(&back, &v[i], 8))
            return false;       /* not exact, or -0 */
        x[i] = xi;
    }
    return true;
}

uint32_t tsdb_chunk_recode(const uint8_t *b, uint32_t nbits, uint16_t n, int64_t mint, uint8_t **out)
{
    *out = NULL;
    if (!n)
        return 0;
    int64_t *ts = malloc(n * sizeof(*ts)), *xs = malloc(n * sizeof(*xs));
    double *vs = malloc(n * sizeof(*vs));
    uint32_t res = 0;
    struct tsdb_chunk c;
    tsdb_chunk_init(&c);
    if (!ts || !xs || !vs)
        goto out;
    struct tsdb_chunk_iter it;
    tsdb_chunk_iter_init(&it, b, nbits, n);
    uint16_t got = 0;
    while (got < n && tsdb_chunk_next(&it, &ts[got], &vs[got]))
        got++;
    if (got != n || it.err || ts[0] != mint)
        goto out;
    unsigned k = 0;
    while (k < 8 && !scales_to(vs, n, k, xs))
        k++;
    if (k == 8)
        goto out;
    int r = put_bits(&c, k, 3) || put_varbit(&c, xs[0]);
    int64_t td = 0, xd = 0;
    for (uint16_t i = 1; i < n && !r; i++) {
        int64_t d = (int64_t)((uint64_t)ts[i] - (uint64_t)ts[i - 1]);
        int64_t e = (int64_t)((uint64_t)xs[i] - (uint64_t)xs[i - 1]);
        r = put_varbit(&c, (int64_t)((uint64_t)d - (uint64_t)td)) ||
            put_varbit(&c, (int64_t)((uint64_t)e - (uint64_t)xd));
        td = d;
        xd = e;
    }
    if (r || c.nbits >= nbits)
        goto out;
    tsdb_chunk_seal(&c);
    *out = c.b;
    c.b = NULL;
    res = c.nbits;
out:
    tsdb_chunk_free(&c);
    free(ts);
    free(xs);
    free(vs);
    return res;
}

bool tsdb_chunk_next(struct tsdb_chunk_iter *it, int64_t *t, double *v)
{
    uint64_t u;
    if (it->err || it->i >= it->n)
        return false;
    if (it->enc == TSDB_ENC_DEC)
        return next_dec(it, t, v);
    if (it->i == 0) {
        if (!get_bits(it, 64, &u))
            return false;
        it->t = (int64_t)u;
        if (!get_bits(it, 64, &it->vbits))
            return false;
    } else if (it->i == 1) {
        if (!get_bits(it, 64, &u))
            return false;
        it->tdelta = (int64_t)u;
        it->t = (int64_t)((uint64_t)it->t + (uint64_t)it->tdelta);
        if (!get_xor(it))
            return false;
    } else {
        unsigned nb;
        if (!get_ones(it, 4, &nb))
            return false;
        static const unsigned widths[] = { 0, 14, 17, 20, 64 };
        int64_t dod = 0;
        if (nb) {
            if (!get_bits(it, widths[nb], &u))
                return false;
            dod = sign_extend(u, widths[nb]);
        }
        it->tdelta = (int64_t)((uint64_t)it->tdelta + (uint64_t)dod);
        it->t = (int64_t)((uint64_t)it->t + (uint64_t)it->tdelta);
        if (!get_xor(it))
            return false;
    }
    it->i++;
    *t = it->t;
    *v = u2f(it->vbits);
    return true;
}
