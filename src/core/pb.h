/* pb.h - the protocol buffers wire format, by hand: a bounded reader over a byte
 * range and a writer into a struct buf. Enough for the messages cairn speaks
 * (Prometheus remote write and read, Loki's PushRequest, OTLP); no reflection, no
 * generated code. A reader never reads past its range. */
#ifndef CAIRN_PB_H
#define CAIRN_PB_H

#include "core/buf.h"

#include <stdint.h>

struct pb {
    const uint8_t *p, *end;
};

/* A varint; 0, or -1 when it runs past the end or past 64 bits. */
int pb_varint(struct pb *b, uint64_t *v);
/* Reads a field key and its value: varints and fixed64/fixed32 into *val, a
 * length-delimited field's bytes into *sub. 0, or -1 on malformed input (groups
 * included). */
int pb_field(struct pb *b, uint32_t *field, int *wt, struct pb *sub, uint64_t *val);
void pb_put_varint(struct buf *b, uint64_t v);
/* A length-delimited field. */
void pb_put_bytes(struct buf *b, uint32_t field, const void *p, size_t n);
/* A field key; a varint field; fixed64/fixed32 fields (little-endian); a double
 * field; an embedded message (the bytes of m). */
void pb_put_key(struct buf *b, uint32_t field, int wt);
void pb_put_uint(struct buf *b, uint32_t field, uint64_t v);
void pb_put_fixed64(struct buf *b, uint32_t field, uint64_t v);
void pb_put_fixed32(struct buf *b, uint32_t field, uint32_t v);
void pb_put_double(struct buf *b, uint32_t field, double v);
void pb_put_msg(struct buf *b, uint32_t field, const struct buf *m);

#endif
