/* tsdb_chunk.h - compressed sample chunks (delta-of-delta timestamps, XOR floats).
 *
 * The encoding of Facebook's Gorilla paper, as Prometheus uses it: the first
 * timestamp and value in full, then the timestamp delta, then delta-of-deltas in
 * buckets of 14, 17, 20 or 64 bits, and each value XORed with the previous one,
 * storing only its meaningful bits. A regular scrape costs about one bit per
 * timestamp and a few bits per slowly changing value.
 *
 * The reader never reads past the chunk's byte length: a corrupted chunk ends the
 * iteration with an error instead.
 */
#ifndef CAIRN_TSDB_CHUNK_H
#define CAIRN_TSDB_CHUNK_H

#include "common.h"

#define TSDB_CHUNK_MAX_SAMPLES 120

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
};

/* Iterates n samples over nbits of b. */
void tsdb_chunk_iter_init(struct tsdb_chunk_iter *it, const uint8_t *b, uint32_t nbits,
                          uint16_t n);
/* Returns true with the next sample, false at the end or on corruption (it->err). */
bool tsdb_chunk_next(struct tsdb_chunk_iter *it, int64_t *t, double *v);

#endif
