/* promql_internal.h - what the evaluator's files share (promql_eval.c,
 * promql_func.c, promql_agg.c, promql_binop.c): the values a node yields (pq_val:
 * a scalar, a string or a vector of pq_ser), the evaluation state (promql_ev), the
 * output set that merges series by label set, the label builder, the raw-sample
 * windows of range functions, and the cross-file functions (promql__name).
 */
#ifndef CAIRN_PROMQL_INTERNAL_H
#define CAIRN_PROMQL_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include "promql.h"
#include "core/relabel.h"

#include <pcre2.h>

#define DEFAULT_LOOKBACK (5 * 60 * 1000)
#define DEFAULT_MAX_SAMPLES 50000000ull

struct pq_ser {
    struct tsdb_labels lab;
    bool own;                   /* lab allocated for this series (else the store's) */
    double *v;                  /* nsteps values */
    uint8_t *ok;                /* nsteps presence bytes (same allocation as v) */
    size_t npresent;
};

struct pq_val {
    enum promql_type type;
    double *sc;                 /* SCALAR */
    struct pq_ser *s;           /* VECTOR */
    size_t ns, caps;
    char *str;                  /* STRING */
    int sort;                   /* 1 sort, -1 sort_desc: ordering of an instant result */
};

/* A string-keyed map to dense ids, for label sets and match signatures. */
struct smap {
    char **keys;
    uint32_t *klen;
    uint64_t *h;
    size_t n, capn;
    int32_t *slot;
    size_t cap;
};

struct promql_ev {
    const struct tsdb *db;
    int64_t start, end, step;   /* the range being evaluated (a subquery's own) */
    size_t nsteps;
    int64_t qstart, qend;       /* the query's, for @ start() and end() */
    int64_t lookback, default_step;
    uint64_t max_samples, cur, peak;
    int64_t deadline;
    unsigned ticks;
    int err;
    char *msg;
    size_t msglen;
    struct buf key;             /* scratch */
    int64_t *rt;                /* scratch for raw samples */
    double *rv;
    size_t rcap;
    /* selections: series read from blocks live until the query ends, as the
     * values borrow their labels (shared with subqueries' evaluators) */
    struct sel_keeper *keeper;
};

struct sel_keeper {
    struct sel_keep { struct tsdb_series **s; size_t n; } *keep;
    size_t nkeep, capkeep;
};

/* A label set under construction: pointers to strings that outlive it. */
struct lb {
    struct tsdb_label p[TSDB_MAX_LABELS + 2];
    size_t n;
};

struct outset {
    struct pq_val *val;
    struct smap map;
};

struct raw {
    const struct tsdb_labels *lab;
    const int64_t *t;
    const double *v;
    size_t n;
};

/* Window of step i: [te - range, te]. */
struct win {
    int64_t range, offset;
    const struct promql_node *node;    /* for @ */
};

typedef bool (*raw_fn)(struct promql_ev *ev, const struct raw *r, const struct win *w, void *arg);


/* promql_eval.c */
void *promql__fail(struct promql_ev *ev, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void *promql__oom(struct promql_ev *ev);
bool promql__stopped(struct promql_ev *ev);
struct pq_val *promql__val_new(struct promql_ev *ev, enum promql_type t);
void promql__val_free(struct promql_ev *ev, struct pq_val *v);
struct pq_ser *promql__val_add(struct promql_ev *ev, struct pq_val *v, struct tsdb_labels *lab, bool own);
void promql__smap_free(struct smap *m);
long promql__smap_get(struct smap *m, const char *k, size_t kl, bool insert);
void promql__key_labels(struct buf *b, const struct tsdb_labels *l);
void promql__lb_from(struct lb *b, const struct tsdb_labels *l);
void promql__lb_del(struct lb *b, const char *name);
void promql__lb_set(struct lb *b, const char *name, const char *value);
bool promql__in_list(char **l, size_t n, const char *s);
void promql__lb_keep(struct lb *b, char **names, size_t n);
int promql__lb_make(struct promql_ev *ev, struct lb *b, struct tsdb_labels *out);
int promql__labels_copy(struct promql_ev *ev, const struct tsdb_labels *l, struct tsdb_labels *out);
void promql__labels_str(struct buf *b, const struct tsdb_labels *l);
struct pq_ser *promql__out_series(struct promql_ev *ev, struct outset *o, struct tsdb_labels *lab,
                                 bool own, bool strict);
size_t promql__out_copy(struct promql_ev *ev, struct outset *o, const struct tsdb_labels *l);
bool promql__out_put(struct promql_ev *ev, struct pq_ser *s, size_t i, double x);
bool promql__outset_init(struct promql_ev *ev, struct outset *o);
struct pq_val *promql__outset_done(struct promql_ev *ev, struct outset *o);
int promql__drop_name(struct promql_ev *ev, const struct tsdb_labels *l, struct tsdb_labels *out);
struct pq_val *promql__eval_vsel(struct promql_ev *ev, const struct promql_node *n, bool want_ts);
const struct promql_node *promql__unparen(const struct promql_node *n);
bool promql__for_each_range(struct promql_ev *ev, const struct promql_node *n, raw_fn fn, void *arg);
void promql__window(const struct promql_ev *ev, const struct raw *r, const struct win *w, size_t i,
                   size_t *lo, size_t *hi, int64_t *ws, int64_t *we);
struct pq_val *promql__eval(struct promql_ev *ev, const struct promql_node *n);

/* promql_func.c */
double promql__quantile(double q, double *v, size_t n);
bool promql__group_members(struct promql_ev *ev, const long *gid, size_t ns, size_t ng, size_t **order,
                          size_t **first);
struct pq_val *promql__eval_call(struct promql_ev *ev, const struct promql_node *n);

/* promql_agg.c */
struct pq_val *promql__eval_agg(struct promql_ev *ev, const struct promql_node *n);

/* promql_binop.c */
struct pq_val *promql__eval_bin(struct promql_ev *ev, const struct promql_node *n);
struct pq_val *promql__eval_neg(struct promql_ev *ev, const struct promql_node *n);

/* The hot helpers, inline in every file. */

/* Counts n more samples held; past max_samples the query fails (never an OOM). */
static inline bool promql__charge(struct promql_ev *ev, uint64_t n)
{
    ev->cur += n;
    if (ev->cur > ev->peak)
        ev->peak = ev->cur;
    if (ev->cur > ev->max_samples) {
        promql__fail(ev, PROMQL_EEXEC,
                     "query processing would load too many samples into memory in query execution");
        return false;
    }
    return true;
}

static inline bool promql__put(struct promql_ev *ev, struct pq_ser *s, size_t i, double x)
{
    s->v[i] = x;
    if (!s->ok[i]) {
        s->ok[i] = 1;
        s->npresent++;
        return promql__charge(ev, 1);
    }
    return true;
}

static inline int64_t promql__step_time(const struct promql_ev *ev, size_t i)
{
    return ev->start + (int64_t)i * ev->step;
}

#endif
