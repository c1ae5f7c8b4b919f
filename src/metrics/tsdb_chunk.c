/* tsdb_chunk.c - Gorilla-style XOR chunks. */
#include "tsdb_chunk.h"

#include <errno.h>
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

static bool get_bits(struct tsdb_chunk_iter *it, unsigned nb, uint64_t *out)
{
    if (nb > 64 || it->pos + nb > it->nbits) {
        it->err = true;
        return false;
    }
    uint64_t v = 0;
    while (nb) {
        uint32_t byte = it->pos / 8, off = it->pos % 8;
        unsigned room = 8 - off, take = nb < room ? nb : room;
        uint8_t bits = (uint8_t)((it->b[byte] >> (room - take)) & ((1u << take) - 1));
        v = (take == 64 ? 0 : v << take) | bits;
        it->pos += take;
        nb -= take;
    }
    *out = v;
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
    uint64_t ctl, x;
    if (!get_bits(it, 1, &ctl))
        return false;
    if (!ctl)
        return true;
    if (!get_bits(it, 1, &ctl))
        return false;
    if (ctl) {
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

bool tsdb_chunk_next(struct tsdb_chunk_iter *it, int64_t *t, double *v)
{
    uint64_t u;
    if (it->err || it->i >= it->n)
        return false;
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
        unsigned nb = 0;
        for (int k = 0; k < 4; k++) {
            if (!get_bits(it, 1, &u))
                return false;
            if (!u)
                break;
            nb++;
        }
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
