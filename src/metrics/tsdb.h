/* tsdb.h - the time-series store of role "metrics": an in-memory head of
 * compressed chunks, an inverted index, and a write-ahead log.
 *
 * A series is a sorted label set (the metric name is the label __name__) with a
 * reference number. Samples are appended in time order into the series' open
 * chunk; at TSDB_CHUNK_MAX_SAMPLES it is sealed and a new one opens. Every new
 * series and every sample is also written to the WAL; tsdb_commit() writes what is
 * buffered and, when asked, fdatasync()s it, which is when a push may be
 * acknowledged. On open the head snapshot (if any) is loaded and the WAL written
 * after it is replayed; a torn or corrupted tail is cut at the last good record
 * (CRC32 per record) with a warning.
 *
 * Everything here runs on one thread (the service's loop).
 */
#ifndef CAIRN_TSDB_H
#define CAIRN_TSDB_H

#include "core/buf.h"
#include "core/common.h"
#include "tsdb_chunk.h"

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

/* Opens the store; with dir set, replays and then appends to dir/wal/. Returns 0
 * or a negated errno with a message in err. */
int tsdb_open(struct tsdb *db, const char *dir, char *err, size_t errlen);
void tsdb_close(struct tsdb *db);

/* Labels: builds a sorted, owned label set from pairs (names unique; empty
 * values dropped, as Prometheus does). */
int tsdb_labels_make(struct tsdb_labels *out, const struct tsdb_label *pairs, size_t n);
void tsdb_labels_free(struct tsdb_labels *l);
const char *tsdb_labels_get(const struct tsdb_labels *l, const char *name);
uint64_t tsdb_labels_hash(const struct tsdb_labels *l);
bool tsdb_labels_eq(const struct tsdb_labels *a, const struct tsdb_labels *b);

/* A holder that keeps a series pointer across loop turns (a target's scrape cache,
 * a rule's written series) pins it; the head frees only unpinned series once all
 * their samples are in blocks (after a block cut). */
static inline void tsdb_pin(struct tsdb_series *s)
{
    if (s)
        s->pins++;
}
static inline void tsdb_unpin(struct tsdb_series *s)
{
    if (s && s->pins)
        s->pins--;
}

/* Finds or creates the series of a label set (sorted, from tsdb_labels_make; a
 * created series takes ownership of *l and clears it). *created tells which.
 * Returns the series, or NULL when the series limit refuses it or memory ran out. */
struct tsdb_series *tsdb_series_get(struct tsdb *db, struct tsdb_labels *l, bool *created);
struct tsdb_series *tsdb_series_by_ref(const struct tsdb *db, uint64_t ref);

enum { TSDB_OK = 0, TSDB_OUT_OF_ORDER = 1, TSDB_DUPLICATE = 2, TSDB_NOMEM = 3 };
/* Appends a sample; an older timestamp is out of order, the same timestamp with
 * another value a duplicate (both refused and counted), with the same value a
 * no-op. */
int tsdb_append(struct tsdb *db, struct tsdb_series *s, int64_t t, double v);
/* Writes the buffered WAL records; with sync, waits until they are on disk. */
int tsdb_commit(struct tsdb *db, bool sync);
/* Writes the head to dir/snapshot and deletes the WAL segments it covers: the
 * next open loads it instead of replaying them (a graceful stop takes one; so
 * does the service when the WAL has grown past a bound). */
int tsdb_snapshot(struct tsdb *db);
/* The same, but when background the file's fsyncs, rename and the deletion of the
 * WAL segments it covers happen on a thread (tsdb_maintain reports the outcome);
 * while one is under way another is not started. */
int tsdb_snapshot_background(struct tsdb *db);
/* Cuts the head into blocks while it spans more than 1.5 block ranges, then
 * compacts blocks that the head has left behind; returns blocks written or a
 * negated errno. The service calls it from its loop every second or so. */
int tsdb_maintain(struct tsdb *db);
/* Writes every sample of the head into a block under out_dir, with hard links to
 * every block beside it: a consistent copy of the store (Prometheus's admin
 * snapshot). */
int tsdb_export_snapshot(struct tsdb *db, const char *out_dir, bool skip_head, char *err,
                         size_t errlen);
/* Bytes of blocks on disk. */
uint64_t tsdb_blocks_bytes(const struct tsdb *db);
/* Bytes of compressed chunks in the head. */
uint64_t tsdb_chunk_bytes_total(const struct tsdb *db);
/* Retention by size: deletes the oldest blocks, then drops the oldest sealed chunks
 * of the head (across series, by end time), until blocks and chunks take at most
 * max_bytes (0: no limit); returns how many chunks and blocks went. */
size_t tsdb_apply_retention_size(struct tsdb *db, uint64_t max_bytes);
/* Drops chunks (and whole blocks) that ended before now - retention. */
void tsdb_apply_retention(struct tsdb *db, int64_t now_ms);

/* ---- reading ---- */

enum tsdb_match_op { TSDB_EQ, TSDB_NEQ, TSDB_RE, TSDB_NRE };
struct tsdb_matcher {
    char *name, *value;
    enum tsdb_match_op op;
    void *re;                   /* pcre2_code for the regex ops */
    void *md;                   /* its match data, reused by every match (one thread) */
};
/* Compiles a matcher's regex (fully anchored). Returns 0, or -EINVAL with err (and
 * nothing left to free). */
int tsdb_matcher_init(struct tsdb_matcher *m, const char *name, enum tsdb_match_op op,
                      const char *value, char *err, size_t errlen);
void tsdb_matcher_free(struct tsdb_matcher *m);
bool tsdb_matcher_matches(const struct tsdb_matcher *m, const char *value);

/* The series matching every matcher that have a sample in [mint, maxt], from the
 * head and the blocks, as an array freed with tsdb_select_free() (series read from
 * blocks are made for the query and live until then). Returns the count (0 with
 * *out NULL when none). */
size_t tsdb_select(const struct tsdb *db, const struct tsdb_matcher *m, size_t nm, int64_t mint,
                   int64_t maxt, struct tsdb_series ***out);
void tsdb_select_free(struct tsdb_series **s, size_t n);
/* Frees one series of a selection when it was made for the query. */
void tsdb_series_release(struct tsdb_series *s);
/* Orders label sets as Prometheus does (pair by pair, name then value). */
int tsdb_labels_cmp(const struct tsdb_labels *a, const struct tsdb_labels *b);
/* The same for qsort() over an array of series pointers. */
int tsdb_series_cmp(const void *a, const void *b);

struct tsdb_iter {
    const struct tsdb_series *s;
    int64_t mint, maxt;
    uint32_t chunk;             /* index; nchunks means the head chunk */
    struct tsdb_chunk_iter ci;
    bool started, done;
    /* merging the out-of-order samples */
    uint32_t oi;
    bool have_c;
    int64_t ct;
    double cv;
    bool emitted;               /* chunks may overlap (blocks after a crash): */
    int64_t last;               /* a time not after the last one is skipped */
};
void tsdb_iter_init(struct tsdb_iter *it, const struct tsdb_series *s, int64_t mint, int64_t maxt);
bool tsdb_iter_next(struct tsdb_iter *it, int64_t *t, double *v);

/* Label names (sorted, unique) over all series: a malloc'd array of malloc'd
 * strings, freed with tsdb_free_strings(). */
size_t tsdb_label_names(const struct tsdb *db, const char ***out);
void tsdb_free_strings(const char **a, size_t n);
/* Values of one label (sorted): a malloc'd array of pointers into the store. */
size_t tsdb_label_values(const struct tsdb *db, const char *name, const char ***out);
/* Series count per value of a label (for /api/v1/status/tsdb). */
size_t tsdb_postings_count(const struct tsdb *db, const char *name, const char *value);

static inline bool tsdb_is_stale(double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    return u == TSDB_STALE_NAN_BITS;
}
double tsdb_stale_nan(void);

#endif
