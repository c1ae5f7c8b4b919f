/* tsdb_types.h - the store's types and limits, without its functions: what the
 * on-disk block code (tsdb_block.c) and the store share, so that neither needs
 * the other's header (tsdb.h has the functions of the store). */
#ifndef CAIRN_TSDB_TYPES_H
#define CAIRN_TSDB_TYPES_H

#include "core/buf.h"
#include "core/common.h"
#include "tsdb_chunk.h"

#include <pthread.h>

#define TSDB_STALE_NAN_BITS 0x7ff0000000000002ull   /* Prometheus's staleness marker */
#define TSDB_MAX_LABELS 128
#define TSDB_MAX_LABEL_BYTES 4096

struct tsdb_label {
    const char *name, *value;
};

/* A label set in one allocation: n pairs sorted by name. */
struct tsdb_labels {
    uint16_t n;
    struct tsdb_label *l;       /* points into the same allocation */
};

struct tsdb_sealed {
    uint8_t *b;
    uint32_t nbits;
    uint16_t n;
    int64_t mint, maxt;
    uint8_t enc;                /* TSDB_ENC_XOR in the head; blocks may hold TSDB_ENC_DEC */
};

struct tsdb_series {
    uint64_t ref;
    uint64_t hash;
    struct tsdb_labels labels;
    struct tsdb_chunk head;
    struct tsdb_sealed *chunks;
    uint32_t nchunks, capchunks;
    bool has_last;
    int64_t last_t;
    double last_v;
    /* samples older than last_t accepted within the out-of-order window: sorted by
     * time, uncompressed, merged with the chunks when read */
    int64_t *ooo_t;
    double *ooo_v;
    uint32_t nooo, capooo;
    struct tsdb_series *hnext;
    /* a series made for one query (tsdb_select): TSDB_TMP_CHUNKS owns its chunks
     * array (blocks' chunks, then the head's), TSDB_TMP_LABELS its labels */
    uint8_t tmp;
    bool dead;                  /* being collected */
    uint32_t pins;              /* holders across loop turns (tsdb_pin) */
};
#define TSDB_TMP_CHUNKS 1
#define TSDB_TMP_LABELS 2

struct tsdb_postings;

struct tsdb_stats {
    uint64_t series_created, series_refused, samples_appended, out_of_order, duplicates,
        wal_bytes, wal_fsyncs, replayed_records, snapshots, chunks_dropped_for_size,
        ooo_accepted, out_of_bounds, blocks_cut, compactions, blocks_deleted, block_errors,
        series_gc;
};

struct tsdb_block;

struct tsdb {
    char *dir;                  /* NULL: memory only */
    struct tsdb_series **series;    /* by ref - 1; NULL where a series was collected */
    size_t nseries, capseries;
    struct tsdb_series **table;
    size_t tablesize;
    struct tsdb_postings *postings;
    size_t max_series;          /* 0 = unlimited */
    int64_t retention_ms;
    /* WAL */
    int wal_fd;
    uint32_t wal_segment;
    uint64_t wal_segment_bytes;
    struct buf walbuf;
    struct buf samplebuf;       /* pending samples record */
    uint32_t pending_samples;
    struct tsdb_stats st;
    int64_t mint, maxt;         /* over all samples, for status */
    uint64_t wal_bytes_at_snapshot;
    /* out_of_order_time_window: a sample older than its series' last one is kept
     * when it is newer than the newest sample of the store minus this (0: refused) */
    int64_t ooo_window_ms;
    bool replaying;             /* the WAL holds only accepted samples: take them all */
    /* on-disk blocks (dir/blocks/<ULID>), sorted by time */
    struct tsdb_block **blocks;
    size_t nblocks;
    int64_t block_range_ms;     /* the head is cut into blocks of this range (2h) */
    int64_t max_block_ms;       /* compaction makes blocks up to this range */
    int64_t min_valid;          /* older samples are in blocks: appends refused */
    int64_t head_mint;          /* the oldest sample in the head (INT64_MAX: none) */
    uint64_t active;            /* series in the head (series[] may have holes) */
    /* block writes: on a thread of their own when background (the service), else
     * inside tsdb_maintain() */
    bool background;
    struct tsdb_job *job;
    struct tsdb_snap *snap;     /* a head snapshot going to disk on its own thread */
};

#endif
