/* logs_internal.h - the logs role's shared types: configuration, the store
 * (tenants, streams, chunks, blocks, WAL) and the service.
 */
#ifndef CAIRN_LOGS_INTERNAL_H
#define CAIRN_LOGS_INTERNAL_H

#include "logs.h"
#include "core/logql.h"
#include "core/logql_eval.h"
#include "core/config.h"
#include "core/hmap.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/service.h"

#define LOGS_MAX_LISTEN 4
#define LOGS_MAX_PUSH (64u << 20)           /* bytes of a push body, decoded */

struct logs_limits {
    double ingestion_rate;              /* bytes/s per tenant (ingestion_rate_mb) */
    double ingestion_burst;             /* bytes */
    double stream_rate, stream_burst;   /* per stream */
    uint64_t max_line_size;             /* bytes; 0 none */
    bool max_line_truncate;
    uint32_t max_label_names;           /* per series */
    uint32_t max_label_name_length, max_label_value_length;
    uint32_t max_streams;               /* active streams per tenant; 0 none */
    bool reject_old;
    uint64_t reject_old_max_age_ms;
    uint64_t creation_grace_ms;
    uint64_t ooo_window_ms;             /* how far behind a stream's newest entry a write may be */
    uint32_t max_entries_per_query;     /* the `limit` of a log query */
    uint32_t max_series;                /* of a metric query */
    uint64_t max_query_length_ms;       /* 0 none */
    uint64_t query_timeout_ms;
};

struct logs_retention {                 /* a per-stream rule: streams matching the selector */
    char *selector;
    struct lq_query *q;
    uint64_t period_ms;
};

struct logs_conf {
    struct net_addr listen[LOGS_MAX_LISTEN];
    size_t nlisten;
    char *data;                         /* directory, relative to data_dir */
    char *default_tenant;               /* auth off: the tenant of requests without X-Scope-OrgID */
    bool auth;                          /* true: X-Scope-OrgID required */
    struct logs_limits limits;
    uint64_t retention_ms;              /* 0: keep forever */
    struct logs_retention *rules;
    size_t nrules;
    uint64_t flush_interval_ms;         /* heads older than this are written into a block */
    uint64_t chunk_target_bytes;        /* raw bytes of a chunk before it is cut */
    uint64_t max_memory_bytes;          /* unflushed bytes that trigger a flush */
    char **rule_files;                  /* LogQL rules (Loki's rule-file format) */
    size_t nrule_files;
    char *alertmanager_url;             /* default: the stack's alerts service */
    char *remote_write_url;             /* default: the stack's metrics service */
};

/* ---- the store ---- */

struct ls_block;

struct ls_chunk {
    int64_t mint, maxt;
    uint32_t n, raw, clen;
    uint8_t *mem;                       /* compressed bytes not yet in a block */
    struct ls_block *blk;
    uint64_t off, new_off;              /* new_off: while a block is written */
    uint8_t *tok;                       /* Bloom filter of the lines' tokens (tok_bits bits), or NULL */
    uint32_t tok_bits;
};

struct ls_stream {
    uint32_t idx;
    struct lq_labels labels;            /* sorted; strings after the array */
    char *key;                          /* {a="b", c="d"} */
    struct buf head;                    /* encoded entries not yet in a chunk */
    int64_t head_mint, head_maxt, head_prev;
    uint32_t head_n;
    struct ls_chunk *chunks;
    uint32_t nchunks, capchunks;
    int64_t maxt;                       /* newest entry ever accepted */
    double tokens;                      /* per-stream rate limit */
    uint64_t tokens_at;
    uint64_t head_since_ms;             /* when the head got its first entry (monotonic) */
};

struct ls_ids {
    uint32_t *v;
    uint32_t n, cap;
};

struct ls_tenant {
    char *id;
    struct hmap streams;                /* key -> struct ls_stream * */
    struct ls_stream **sv;
    uint32_t ns, caps;
    struct hmap postings;               /* "name\xffvalue" -> struct ls_ids * */
    struct hmap names;                  /* name -> struct hmap * (values -> postings) */
    double tokens;
    uint64_t tokens_at;
    uint64_t active;                    /* streams with an entry since start */
};

struct ls_block {
    char *path;
    int fd;
    int64_t mint, maxt;
    uint64_t size;
    uint32_t seq;
    bool dead;                          /* deleted by retention */
    bool compacting;                    /* being merged into a new block */
};

struct logs_store {
    char *dir;
    const struct logs_conf *conf;
    struct hmap tenants;                /* id -> struct ls_tenant * */
    struct ls_block **blocks;
    uint32_t nblocks, capblocks, next_block;
    int wal_fd;
    uint32_t wal_seq;
    uint64_t wal_size;
    uint64_t unflushed;                 /* bytes in heads and unflushed chunks */
    uint64_t last_flush_ms;
    int flush_error;                    /* the last flush failed (disk full...) */
    /* counters */
    uint64_t lines_in, bytes_in, lines_refused, chunks_cut, flushes, blocks_deleted, compactions;
    uint64_t wal_errors;
};

/* An entry handed to the store (a push, decoded). */
struct ls_entry {
    int64_t ts;
    const char *line;
    size_t n;
    struct lq_label *meta;
    int nmeta;
};

int logs_store_open(struct logs_store *st, const char *dir, const struct logs_conf *conf, char *err, size_t errlen);
void logs_store_close(struct logs_store *st);

/* One push's worth of entries for one stream. The store checks the limits,
 * refuses what breaks them (reason appended to *why, one line per refused entry),
 * writes the rest to the WAL and only then to memory. Returns the number
 * accepted, or a negative code when nothing could be written (-ENOSPC, -EIO). */
struct ls_push_stream {
    struct lq_label *labels;
    int nlabels;
    struct ls_entry *e;
    int n;
};
struct ls_push_result {
    uint32_t accepted, refused;
    int status;                         /* 400 or 429 for the refusals; 0 when none */
    struct buf why;
};
int logs_store_push(struct logs_store *st, const char *tenant, struct ls_push_stream *streams, int nstreams,
                    struct ls_push_result *res);

/* The LogQL source over one tenant. */
struct ls_query_ctx {
    struct logs_store *st;
    const char *tenant;
    uint64_t chunks_read, chunks_skipped;
};
int logs_store_select(void *ctx, const struct lq_node *log, int64_t from, int64_t to, bool backward,
                      lq_stream_fn on_stream, lq_entry_fn on_entry, void *arg, char *err, size_t errlen);
/* Streams of a tenant matching m (all when nm == 0) with an entry in [from, to]. */
int logs_store_streams(struct logs_store *st, const char *tenant, const struct lq_matcher *m, int nm, int64_t from,
                       int64_t to, struct ls_stream ***out, uint32_t *n);
/* Writes heads and cut chunks into a block and starts a new WAL segment. */
int logs_store_flush(struct logs_store *st, const char *why);
/* Housekeeping from a timer: cut old heads, flush when due, apply retention. */
void logs_store_tick(struct logs_store *st);
struct ls_tenant *logs_store_tenant(struct logs_store *st, const char *id);

/* ---- the service ---- */

struct logs_tailer;
struct logs_ruler;

struct logs_svc {
    const struct service *svc;
    struct logs_conf *conf;
    struct service_ctx *sc;
    struct logs_store store;
    struct service_http_pool pool;
    struct httpd_conf hconf;
    struct loop_timer tick;
    struct logs_tailer *tailers;        /* live tail WebSockets */
    struct logs_ruler *ruler;
    struct metric *m_lines, *m_bytes, *m_refused, *m_streams, *m_queries, *m_query_errors, *m_chunks, *m_flushes,
        *m_blocks, *m_unflushed;
};

int logs__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void logs__free_conf(void *conf);
void logs__handle(struct httpd_req *r, void *arg);
/* Live tail (logs_tail.c): a WebSocket per client; pushes are offered to each. */
struct http_form;
void logs__tail(struct logs_svc *s, struct httpd_req *r, const struct http_form *f, const char *tenant);
void logs__tail_notify(struct logs_svc *s, const char *tenant, const struct ls_push_stream *ps, int nps);
void logs__tail_stop(struct logs_svc *s);
/* The ruler (logs_rules.c): reads the rule files, evaluates each group on a timer. */
int logs__rules_start(struct logs_svc *s);
void logs__rules_stop(struct logs_svc *s);
void logs__rules_api(struct logs_svc *s, struct httpd_req *r, bool alerts_only);

/* Push decoding (untrusted bytes): JSON and protobuf PushRequest into streams of
 * entries whose strings point into the decoded body or into arena. */
struct logs_push {
    struct ls_push_stream *s;
    int n, cap;
    char **blocks;                      /* string memory, freed with the push */
    size_t nblocks, capblocks, used, room;
    void *doc;                          /* a decoded JSON document (json_t) */
    char *raw;                          /* an uncompressed body */
};
/* {"name":"value",...} */
void logs__labels_json(struct buf *b, const struct lq_label *l, int n);
int logs__decode_json(const char *body, size_t n, struct logs_push *out, char *err, size_t errlen);
int logs__decode_proto(const char *body, size_t n, struct logs_push *out, char *err, size_t errlen);
void logs__push_free(struct logs_push *p);
/* Parses a Prometheus-style label set {a="b", ...} into sorted labels (strings
 * allocated in p). */
int logs__parse_labels(struct logs_push *p, const char *s, size_t n, struct lq_label **out, int *nout, char *err,
                       size_t errlen);

#endif
