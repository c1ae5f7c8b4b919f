/* logql_eval.h - evaluating a parsed LogQL query over a source of log entries.
 *
 * A metric query is evaluated once over all its steps: every sub-expression
 * becomes a set of series with one optional value per step (a scalar has one
 * value per step), so range and instant queries share one path (an instant query
 * is one step). A log query gathers at most `limit` entries in the asked
 * direction.
 */
#ifndef CAIRN_LOGQL_EVAL_H
#define CAIRN_LOGQL_EVAL_H

#include "core/logql.h"

/* Called for each entry of a matching stream; returns nonzero to stop this stream. */
typedef int (*lq_entry_fn)(void *arg, int64_t ts, const char *line, size_t n, const struct lq_labels *meta);
/* Called once per stream that matches the selector; returns nonzero to skip it. */
typedef int (*lq_stream_fn)(void *arg, const struct lq_labels *stream);

struct lq_source {
    void *ctx;
    /* Visits the streams matching log's selector, and for each the entries with
     * from < ts <= to, in time order (backward when asked). The source may skip
     * entries that log's leading line filters would refuse (lq_required_literals).
     * Returns 0, or a negative code with a message in err. */
    int (*select)(void *ctx, const struct lq_node *log, int64_t from, int64_t to, bool backward,
                  lq_stream_fn on_stream, lq_entry_fn on_entry, void *arg, char *err, size_t errlen);
};

struct lq_series {
    struct lq_label *l;             /* sorted; names and values in the same allocation */
    int nl;
    uint64_t h;
    double *v;                      /* nsteps values */
    uint8_t *has;                   /* nsteps flags */
};

struct lq_stream_out {
    struct lq_label *l;
    int nl;
    uint64_t h;
    int64_t *ts;
    char **lines;
    size_t *lens;
    int n, cap;
};

enum lq_result_type { LQ_RES_SCALAR, LQ_RES_VECTOR, LQ_RES_MATRIX, LQ_RES_STREAMS };

struct lq_stats {
    uint64_t entries, bytes, lines_out, chunks;
};

struct lq_result {
    enum lq_result_type type;
    int nsteps;
    int64_t start, step;
    double *scalar;                 /* SCALAR: nsteps values */
    struct lq_series *s;
    int ns;
    struct lq_stream_out *st;
    int nst;
    struct lq_stats stats;
};

struct lq_params {
    int64_t start, end, step;       /* ns; an instant query has start == end */
    bool instant;
    int limit;
    bool backward;
    uint64_t max_series;            /* 0: no limit */
    uint64_t max_entries;           /* entries a query may read; 0: no limit */
    uint64_t deadline_ns;           /* CLOCK_MONOTONIC (cairn_now_ns); 0: none. Past it the
                                       query ends with -ETIMEDOUT */
    int64_t interval_ns;            /* log queries: at most one entry per interval per stream */
};

/* Evaluates q. 0 with *res filled, or a negative code with Loki's message in err
 * (-EINVAL: the query is wrong for its data or parameters, answered 400). */
int lq_eval(const struct lq_query *q, const struct lq_params *p, const struct lq_source *src,
            struct lq_result *res, char *err, size_t errlen);
void lq_result_free(struct lq_result *res);

/* Literals every entry that passes log's pipeline contains (the |= filters with
 * one alternative, before any stage that rewrites the line): up to max of them
 * into out. Returns the count. */
int lq_required_literals(const struct lq_node *log, struct strv *out, int max);

/* Appends a label set as Prometheus prints it: {a="b", c="d"}. */
void lq_labels_string(struct buf *b, const struct lq_label *l, int n);
uint64_t lq_labels_hash(const struct lq_label *l, int n);

#endif
