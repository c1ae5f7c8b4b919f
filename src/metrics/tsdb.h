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
#include "tsdb_matcher.h"
#include "tsdb_types.h"

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
