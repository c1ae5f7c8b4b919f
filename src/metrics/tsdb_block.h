/* tsdb_block.h - the immutable on-disk blocks of role "metrics".
 *
 * A block holds the samples of a time range [mint, maxt] for every series that had
 * samples in it, in a directory blocks/<ULID>/:
 *
 *   chunks     "CAIRNCK1", then the compressed chunks of each series back to back
 *   index      a header, the symbol table (every label name and value once, sorted),
 *              the series (sorted by labels; labels as symbol numbers, then the
 *              metadata of their chunks), the postings (label name -> value -> the
 *              series numbers that have it), and a CRC32 over the whole file
 *   meta.json  the same facts for people and tools (cairn reads the index header)
 *
 * Both files are mapped read-only. The index is checked completely when the block
 * opens (its CRC, then every offset, number and order), so a damaged index is
 * refused there and lookups never leave the mapping; each series' chunks carry
 * their own CRC32, checked whenever they are read (a mismatch skips them and is
 * counted, it never crashes a query).
 *
 * A block is written to blocks/<ULID>.tmp, synced, then renamed: a crash leaves
 * either no block or a whole one.
 */
#ifndef CAIRN_TSDB_BLOCK_H
#define CAIRN_TSDB_BLOCK_H

#include "tsdb_matcher.h"
#include "tsdb_types.h"

#define TSDB_ULID_LEN 26

struct tsdb_bname {
    uint32_t name, first, n;    /* symbol; its values are vals[first, first + n) */
};
struct tsdb_bval {
    uint32_t value, first, n;   /* symbol; its n series are encoded from post + first */
};

struct tsdb_block {
    char *dir;                  /* NULL when opened from memory */
    char ulid[TSDB_ULID_LEN + 1];
    int64_t mint, maxt;         /* inclusive */
    uint32_t level;             /* 1: cut from the head; n: made by compaction */
    uint64_t nsamples, nchunks;
    uint64_t bytes;             /* of its files */
    uint32_t nparents;          /* the blocks this one was compacted from */
    const char *parents;        /* nparents * TSDB_ULID_LEN characters */
    /* the mappings */
    const uint8_t *ix, *ck;
    size_t ixlen, cklen;
    bool mapped;
    /* index sections, checked on open */
    uint32_t nsym, nser, nnames, nvals;
    uint64_t npost;             /* bytes of postings */
    const uint32_t *symoff, *seroff;
    const uint8_t *post;
    const char *symdata;
    const uint8_t *serdata;
    size_t symlen, serlen;
    const struct tsdb_bname *names;
    const struct tsdb_bval *vals;
    uint64_t bad_chunks;        /* series whose chunk CRC did not match when read */
};

/* One series of a block, decoded. */
struct tsdb_bseries {
    uint16_t nlabels;
    uint32_t nchunks;
    uint32_t crc;
    uint64_t off, len;          /* its chunk bytes in the chunks file */
    int64_t mint, maxt;
    const uint8_t *meta;        /* chunk metadata, decoded by tsdb_block_chunks() */
    size_t metalen;
    uint32_t lsym[2 * TSDB_MAX_LABELS];
};

/* ---- writing ---- */

struct tsdb_bw_series {
    const struct tsdb_labels *labels;
    const struct tsdb_sealed *chunks;   /* in time order, within [mint, maxt] */
    uint32_t nchunks;
};

/* What a block is written from: its symbols (every label name and value of the
 * series, sorted, unique) and the series one at a time in label order (next
 * returns 1 with one, 0 at the end, or a negated errno; what it points to must
 * stay valid until the next call). Chunks are streamed to the file. */
struct tsdb_bw_src {
    const char **syms;
    uint32_t nsym;
    int (*next)(void *arg, struct tsdb_bw_series *out);
    void *arg;
};

/* Writes a block into parent (created if missing) and returns its ULID. parents
 * lists the blocks a compaction merged (nparents * TSDB_ULID_LEN characters).
 * Returns 0 or a negated errno with a message in err. */
int tsdb_block_write_src(const char *parent, int64_t mint, int64_t maxt, uint32_t level,
                         const char *parents, uint32_t nparents, const struct tsdb_bw_src *src,
                         char ulid[TSDB_ULID_LEN + 1], char *err, size_t errlen);
/* The same from an array of n series sorted by labels (tsdb_labels_cmp). */
int tsdb_block_write(const char *parent, int64_t mint, int64_t maxt, uint32_t level,
                     const char *parents, uint32_t nparents, const struct tsdb_bw_series *s,
                     size_t n, char ulid[TSDB_ULID_LEN + 1], char *err, size_t errlen);
/* Removes a block directory (or a leftover .tmp one). */
int tsdb_block_remove(const char *dir);

/* ---- reading ---- */

/* Opens dir (a block directory). Returns 0, or a negated errno with a message in err
 * (-EINVAL: the block is damaged). */
int tsdb_block_open(struct tsdb_block *b, const char *dir, char *err, size_t errlen);
/* The same over index and chunks bytes in memory (kept by the caller). */
int tsdb_block_open_mem(struct tsdb_block *b, const uint8_t *ix, size_t ixlen, const uint8_t *ck,
                        size_t cklen, char *err, size_t errlen);
void tsdb_block_close(struct tsdb_block *b);

static inline const char *tsdb_block_sym(const struct tsdb_block *b, uint32_t s)
{
    return b->symdata + b->symoff[s];
}
/* Decodes series id (< b->nser). Returns 0 (the index was checked on open). */
int tsdb_block_series(const struct tsdb_block *b, uint32_t id, struct tsdb_bseries *out);
/* Fills out[0, s->nchunks) with the series' chunks (pointing into the mapping)
 * after checking their CRC; returns the count, 0 when they are damaged. */
uint32_t tsdb_block_chunks(struct tsdb_block *b, const struct tsdb_bseries *s,
                           struct tsdb_sealed *out);
/* The series matching every matcher, ascending, as a malloc'd array. */
size_t tsdb_block_select(const struct tsdb_block *b, const struct tsdb_matcher *m, size_t nm,
                         uint32_t **out);
/* The postings of name=value (NULL when none) and their series numbers, decoded
 * into out (room for v->n); returns how many. */
const struct tsdb_bval *tsdb_block_postings(const struct tsdb_block *b, const char *name,
                                            const char *value);
uint32_t tsdb_block_postings_decode(const struct tsdb_block *b, const struct tsdb_bval *v,
                                    uint32_t *out);
/* The label names: index into b->names, or -1. */
int64_t tsdb_block_name(const struct tsdb_block *b, const char *name);

/* A new ULID (48-bit milliseconds, 80 random bits, Crockford base32). */
void tsdb_ulid(char out[TSDB_ULID_LEN + 1], uint64_t ms);

#endif
