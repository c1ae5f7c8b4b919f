/* pb.c - see pb.h. */
#include "core/pb.h"

#include <string.h>

int pb_varint(struct pb *b, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end)
            return -1;
        uint8_t c = *b->p++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Reads a field key; for length-delimited fields sets *sub to its bytes. */
int pb_field(struct pb *b, uint32_t *field, int *wt, struct pb *sub, uint64_t *val)
{
    uint64_t key;
    if (pb_varint(b, &key))
        return -1;
    *field = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case 0:
        return pb_varint(b, val);
    case 1:
        if (b->end - b->p < 8)
            return -1;
        memcpy(val, b->p, 8);
        b->p += 8;
        return 0;
    case 2: {
        uint64_t len;
        if (pb_varint(b, &len) || len > (uint64_t)(b->end - b->p))
            return -1;
        sub->p = b->p;
        sub->end = b->p + len;
        b->p += len;
        return 0;
    }
    case 5:
        if (b->end - b->p < 4)
            return -1;
        *val = 0;
        memcpy(val, b->p, 4);
        b->p += 4;
        return 0;
    default:
        return -1;
    }
}

void pb_put_varint(struct buf *b, uint64_t v)
{
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        buf_putc(b, (char)(c | (v ? 0x80 : 0)));
    } while (v);
}

void pb_put_bytes(struct buf *b, uint32_t field, const void *p, size_t n)
{
    pb_put_varint(b, (uint64_t)field << 3 | 2);
    pb_put_varint(b, n);
    buf_append(b, p, n);
}

void pb_put_key(struct buf *b, uint32_t field, int wt)
{
    pb_put_varint(b, (uint64_t)field << 3 | (uint64_t)wt);
}

void pb_put_uint(struct buf *b, uint32_t field, uint64_t v)
{
    pb_put_key(b, field, 0);
    pb_put_varint(b, v);
}

void pb_put_fixed64(struct buf *b, uint32_t field, uint64_t v)
{
    pb_put_key(b, field, 1);
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    buf_append(b, x, 8);
}

void pb_put_fixed32(struct buf *b, uint32_t field, uint32_t v)
{
    pb_put_key(b, field, 5);
    uint8_t x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    buf_append(b, x, 4);
}

void pb_put_double(struct buf *b, uint32_t field, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    pb_put_fixed64(b, field, u);
}

void pb_put_msg(struct buf *b, uint32_t field, const struct buf *m)
{
    pb_put_bytes(b, field, buf_head(m), buf_used(m));
}
