/* trace.c - traceparent parsing and generation. */
#include "core/trace.h"

#include <errno.h>

static int hex_lower(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int parse_hex(const char *p, uint8_t *out, size_t nbytes)
{
    bool nonzero = false;
    for (size_t i = 0; i < nbytes; i++) {
        int h = hex_lower(p[2 * i]), l = hex_lower(p[2 * i + 1]);
        if (h < 0 || l < 0)
            return -EINVAL;
        out[i] = (uint8_t)(h << 4 | l);
        nonzero |= out[i] != 0;
    }
    return nonzero ? 0 : -EINVAL;
}

int trace_parse(struct strv v, struct trace_ctx *out)
{
    if (v.n < TRACEPARENT_LEN)
        return -EINVAL;
    const char *p = v.p;
    uint8_t version;
    if (hex_lower(p[0]) < 0 || hex_lower(p[1]) < 0)
        return -EINVAL;
    version = (uint8_t)(hex_lower(p[0]) << 4 | hex_lower(p[1]));
    if (version == 0xff)
        return -EINVAL;
    if (version == 0 && v.n != TRACEPARENT_LEN)
        return -EINVAL;
    if (version > 0 && v.n > TRACEPARENT_LEN && p[TRACEPARENT_LEN] != '-')
        return -EINVAL;
    if (p[2] != '-' || p[35] != '-' || p[52] != '-')
        return -EINVAL;
    struct trace_ctx t;
    uint8_t flags;
    if (parse_hex(p + 3, t.trace_id, 16) || parse_hex(p + 36, t.span_id, 8))
        return -EINVAL;
    if (hex_lower(p[53]) < 0 || hex_lower(p[54]) < 0)
        return -EINVAL;
    flags = (uint8_t)(hex_lower(p[53]) << 4 | hex_lower(p[54]));
    t.flags = flags;
    *out = t;
    return 0;
}

static void random_nonzero(uint8_t *p, size_t n)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = cairn_rand64();
            memcpy(p + i, &r, MIN((size_t)8, n - i));
        }
    } while (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

void trace_new(struct trace_ctx *out)
{
    random_nonzero(out->trace_id, 16);
    random_nonzero(out->span_id, 8);
    out->flags = 1;
}

void trace_child(const struct trace_ctx *parent, struct trace_ctx *out)
{
    memcpy(out->trace_id, parent->trace_id, 16);
    random_nonzero(out->span_id, 8);
    out->flags = parent->flags;
}

static void put_hex(char *o, const uint8_t *p, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        o[2 * i] = hx[p[i] >> 4];
        o[2 * i + 1] = hx[p[i] & 15];
    }
}

void trace_format(const struct trace_ctx *t, char out[TRACEPARENT_LEN + 1])
{
    memcpy(out, "00-", 3);
    put_hex(out + 3, t->trace_id, 16);
    out[35] = '-';
    put_hex(out + 36, t->span_id, 8);
    out[52] = '-';
    put_hex(out + 53, &t->flags, 1);
    out[55] = '\0';
}

void trace_id_hex(const struct trace_ctx *t, char out[33])
{
    put_hex(out, t->trace_id, 16);
    out[32] = '\0';
}
