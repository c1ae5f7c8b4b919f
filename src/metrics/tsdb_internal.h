/* tsdb_internal.h - what the store's files share (tsdb.c, tsdb_wal.c,
 * tsdb_snapshot.c, tsdb_select.c, tsdb_compact.c): the postings table, the
 * append accumulator, the replay workers, and the cross-file functions
 * (tsdb__name). Nothing outside the store includes it.
 */
#ifndef CAIRN_TSDB_INTERNAL_H
#define CAIRN_TSDB_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include "tsdb.h"
#include "tsdb_block.h"

#include <pcre2.h>
#include <pthread.h>

#define WAL_SEGMENT_MAX (128u << 20)
#define WAL_RECORD_MAX (64u << 20)
enum { REC_SERIES = 1, REC_SAMPLES = 2 };

struct plist {
    char *key;                  /* name, then 0xff, then value */
    size_t namelen;
    uint64_t hash;
    struct tsdb_series **s;
    uint32_t n, cap;
    struct plist *next;
};

struct tsdb_postings {
    struct plist **table;
    size_t size, count;
};

/* Where appends count: the store's own counters, or a replay worker's (merged after). */
struct acc {
    struct tsdb_stats *st;
    int64_t *mint, *maxt, *head_mint;
};

#define REPLAY_BATCH 4096
#define REPLAY_QUEUE 8          /* batches waiting per worker: bounds the memory */

struct rsample {
    struct tsdb_series *s;
    int64_t t;
    double v;
};

struct rbatch {
    struct rsample *x;
    size_t n;
};

struct rworker {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rbatch q[REPLAY_QUEUE];
    size_t head, count;
    bool done;
    struct rbatch fill;         /* being filled by the reader */
    const struct tsdb *db;
    struct tsdb_stats st;
    int64_t mint, maxt, head_mint;
};

struct replay {
    struct rworker *w;
    size_t nw;
};

/* A snapshot whose file is written and now goes to disk: fdatasync, rename, the
 * directory's fsync, then the WAL segments before `next` deleted. Done on a thread
 * of its own by the service (the fsyncs can take long), inline otherwise. */
struct tsdb_snap {
    pthread_t th;
    bool threaded;
    int done;                   /* set by the thread, atomically */
    FILE *f;
    uint32_t next;
    uint64_t t0, bytes, series;
    int r;                      /* the outcome */
    size_t removed;             /* WAL segments deleted */
    char dir[4200];
};

/* tsdb.c */
uint64_t tsdb__pkey_hash(const char *name, const char *value);
struct plist *tsdb__plist_find(const struct tsdb_postings *p, const char *name, const char *value,
                                uint64_t h);
void tsdb__series_free(struct tsdb_series *s);
struct tsdb_series *tsdb__series_lookup(const struct tsdb *db, const struct tsdb_labels *l,
                                         uint64_t h);
bool tsdb__slots_upto(struct tsdb *db, uint64_t ref);
struct tsdb_series *tsdb__series_insert(struct tsdb *db, struct tsdb_labels *l, uint64_t h,
                                         bool log_it);
int tsdb__seal_head(struct tsdb_series *s);
int64_t tsdb__range_of(int64_t t, int64_t r);
int tsdb__append_acc(const struct tsdb *db, struct acc *ac, struct tsdb_series *s, int64_t t, double v);
int tsdb__append_mem(struct tsdb *db, struct tsdb_series *s, int64_t t, double v);

/* tsdb_wal.c */
int tsdb__cmp_u32(const void *a, const void *b);
void tsdb__wal_record(struct tsdb *db, int type, const void *p, size_t n);
void tsdb__wal_flush_samples(struct tsdb *db);
int tsdb__wal_open_segment(struct tsdb *db, uint32_t seg, bool create);
void tsdb__replay_start(struct tsdb *db, struct replay *rp);
void tsdb__replay_stop(struct tsdb *db, struct replay *rp);
off_t tsdb__replay_segment(struct tsdb *db, struct replay *rp, const char *path, bool *torn);

/* tsdb_snapshot.c */
void tsdb__snap_drain(struct tsdb *db);
int tsdb__snap_load(struct tsdb *db, uint32_t *first_seg, char *err, size_t errlen);

/* tsdb_select.c */
void tsdb__block_labels(const struct tsdb_block *b, const struct tsdb_bseries *bs,
                         struct tsdb_label *pairs);
size_t tsdb__sort_unique(const char **a, size_t n);

/* tsdb_compact.c */
void tsdb__block_drop(struct tsdb *db, size_t i);
int tsdb__blocks_load(struct tsdb *db, char *err, size_t errlen);
void tsdb__head_mint_recompute(struct tsdb *db);
size_t tsdb__head_gc(struct tsdb *db);
void tsdb__job_drain(struct tsdb *db, bool closing);

#endif
