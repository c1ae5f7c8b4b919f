/* tsdb_chunk.h - compressed sample chunks (delta-of-delta timestamps, XOR floats).
 *
 * The encoding of Facebook's Gorilla paper, as Prometheus uses it: the first
 * timestamp and value in full, then the timestamp delta, then delta-of-deltas in
 * buckets of 14, 17, 20 or 64 bits, and each value XORed with the previous one,
 * storing only its meaningful bits. A regular scrape costs about one bit per
 * timestamp and a few bits per slowly changing value.
 *
 * Blocks also use a second encoding, TSDB_ENC_DEC, for chunks whose values are all
 * decimals with at most 7 digits after the point (counters, most gauges): the values
 * as integers scaled by 10^k, stored like the timestamps as delta-of-deltas in
 * variable-width buckets, the first timestamp left to the chunk's metadata (mint).
 * A steady counter then costs a bit a value instead of XOR's dozens.
 *
 * The reader never reads past the chunk's byte length: a corrupted chunk ends the
 * iteration with an error instead.
 */
#ifndef CAIRN_TSDB_CHUNK_H
#define CAIRN_TSDB_CHUNK_H

#include "core/common.h"

#define TSDB_CHUNK_MAX_SAMPLES 120

enum { TSDB_ENC_XOR = 0, TSDB_ENC_DEC = 1 };

struct tsdb_chunk {
    uint8_t *b;
    uint32_t nbits, capbytes;
    uint16_t n;                 /* samples */
    int64_t mint, maxt;
    /* encoder state */
    int64_t t, tdelta;
    uint64_t vbits;
    uint8_t leading, trailing;
};

void tsdb_chunk_init(struct tsdb_chunk *c);
void tsdb_chunk_free(struct tsdb_chunk *c);
/* Appends a sample (t must not go backwards). Returns 0 or -ENOMEM. */
int tsdb_chunk_append(struct tsdb_chunk *c, int64_t t, double v);
/* Shrinks the buffer to the bytes in use (when the chunk is complete). */
void tsdb_chunk_seal(struct tsdb_chunk *c);
static inline size_t tsdb_chunk_bytes(const struct tsdb_chunk *c) { return (c->nbits + 7) / 8; }

struct tsdb_chunk_iter {
    const uint8_t *b;
    uint32_t nbits, pos;
    uint16_t n, i;
    int64_t t, tdelta;
    uint64_t vbits;
    uint8_t leading, trailing;
    bool err;
    uint8_t enc, scale;         /* TSDB_ENC_DEC: 10^scale */
    int64_t x, xdelta;          /* TSDB_ENC_DEC: the scaled value and its delta */
};

/* Iterates n samples over nbits of b, an XOR chunk. */
void tsdb_chunk_iter_init(struct tsdb_chunk_iter *it, const uint8_t *b, uint32_t nbits,
                          uint16_t n);
/* The same for a chunk of either encoding; mint is its first timestamp (kept in
 * the chunk's metadata, not in a TSDB_ENC_DEC chunk's bits). */
void tsdb_chunk_iter_init_enc(struct tsdb_chunk_iter *it, const uint8_t *b, uint32_t nbits,
                              uint16_t n, uint8_t enc, int64_t mint);

/* Re-encodes an XOR chunk (first timestamp mint) as TSDB_ENC_DEC into *out
 * (malloc'd) when every value allows it and the result is smaller; returns its
 * bits, or 0 (nothing made). */
uint32_t tsdb_chunk_recode(const uint8_t *b, uint32_t nbits, uint16_t n, int64_t mint,
                           uint8_t **out);
/* Returns true with the next sample, false at the end or on corruption (it->err). */
bool tsdb_chunk_next(struct tsdb_chunk_iter *it, int64_t *t, double *v);

#endif
