/* promql_eval.c - evaluation of a PromQL tree over the tsdb.
 *
 * Every node is evaluated once for all steps of the query (start + i*step) and
 * yields a value: a scalar (one double per step), a string, or a vector (series,
 * each with a dense array of values and a presence byte per step). Range vectors
 * never exist as values: a function taking one streams the series of its matrix
 * selector or subquery one at a time, computing every step's window from that
 * series' raw samples before reading the next.
 *
 * Outputs are merged by label set; two inputs that give the same labels at the
 * same step are an error ("vector cannot contain metrics with the same
 * labelset"), as Prometheus checks per step. Functions over range vectors check
 * it per series, as Prometheus 2.42 does.
 */
#include "promql.h"
#include "prom_relabel.h"

#include <errno.h>
#include <math.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_LOOKBACK (5 * 60 * 1000)
#define DEFAULT_MAX_SAMPLES 50000000ull

/* ---- values ---- */

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

static void *fail(struct promql_ev *ev, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void *fail(struct promql_ev *ev, int code, const char *fmt, ...)
{
    if (!ev->err) {
        ev->err = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ev->msg, ev->msglen, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

static void *oom(struct promql_ev *ev)
{
    return fail(ev, PROMQL_EEXEC, "out of memory");
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* True when evaluation must stop (an error, or the deadline passed). */
static bool stopped(struct promql_ev *ev)
{
    if (ev->err)
        return true;
    if (ev->deadline && (++ev->ticks & 63) == 0 && mono_ns() > ev->deadline)
        fail(ev, PROMQL_ETIMEOUT, "query timed out in query execution");
    return ev->err != 0;
}

static bool charge(struct promql_ev *ev, uint64_t n)
{
    ev->cur += n;
    if (ev->cur > ev->peak)
        ev->peak = ev->cur;
    if (ev->cur > ev->max_samples) {
        fail(ev, PROMQL_EEXEC, "query processing would load too many samples into memory in query execution");
        return false;
    }
    return true;
}

static int64_t step_time(const struct promql_ev *ev, size_t i)
{
    return ev->start + (int64_t)i * ev->step;
}

/* The time a selector or subquery is evaluated at for step i (before offset). */
static int64_t ref_time(const struct promql_ev *ev, const struct promql_node *n, size_t i)
{
    switch (n->at) {
    case PQ_AT_TIME: return n->at_ms;
    case PQ_AT_START: return ev->qstart;
    case PQ_AT_END: return ev->qend;
    default: return step_time(ev, i);
    }
}

static struct pq_val *val_new(struct promql_ev *ev, enum promql_type t)
{
    struct pq_val *v = calloc(1, sizeof(*v));
    if (!v)
        return oom(ev);
    v->type = t;
    if (t == PROMQL_SCALAR) {
        v->sc = calloc(ev->nsteps, sizeof(double));
        if (!v->sc) {
            free(v);
            return oom(ev);
        }
    }
    return v;
}

static void ser_free(struct pq_ser *s)
{
    if (s->own)
        tsdb_labels_free(&s->lab);
    free(s->v);
}

static void val_free(struct promql_ev *ev, struct pq_val *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->ns; i++) {
        ev->cur -= MIN(ev->cur, v->s[i].npresent);
        ser_free(&v->s[i]);
    }
    free(v->s);
    free(v->sc);
    free(v->str);
    free(v);
}

/* Appends a series with no points; labels are taken (own) or borrowed. */
static struct pq_ser *val_add(struct promql_ev *ev, struct pq_val *v, struct tsdb_labels *lab, bool own)
{
    if (v->ns == v->caps) {
        size_t nc = v->caps ? v->caps * 2 : 16;
        struct pq_ser *a = realloc(v->s, nc * sizeof(*a));
        if (!a)
            return oom(ev);
        v->s = a;
        v->caps = nc;
    }
    struct pq_ser *s = &v->s[v->ns];
    memset(s, 0, sizeof(*s));
    s->v = calloc(ev->nsteps, sizeof(double) + 1);
    if (!s->v)
        return oom(ev);
    s->ok = (uint8_t *)(s->v + ev->nsteps);
    s->lab = *lab;
    s->own = own;
    if (own)
        memset(lab, 0, sizeof(*lab));
    v->ns++;
    return s;
}

static bool put(struct promql_ev *ev, struct pq_ser *s, size_t i, double x)
{
    s->v[i] = x;
    if (!s->ok[i]) {
        s->ok[i] = 1;
        s->npresent++;
        return charge(ev, 1);
    }
    return true;
}

/* ---- string map ---- */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static void smap_free(struct smap *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->klen);
    free(m->h);
    free(m->slot);
    memset(m, 0, sizeof(*m));
}

/* The id of key k; inserted when missing and insert is set. Returns the id, -1
 * when missing, or -2 out of memory. */
static long smap_get(struct smap *m, const char *k, size_t kl, bool insert)
{
    uint64_t h = hash_bytes(k, kl);
    if (m->cap) {
        for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
            int32_t s = m->slot[i];
            if (s < 0)
                break;
            if (m->h[s] == h && m->klen[s] == kl && memcmp(m->keys[s], k, kl) == 0)
                return s;
        }
    }
    if (!insert)
        return -1;
    if ((m->n + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        int32_t *ns = malloc(nc * sizeof(*ns));
        if (!ns)
            return -2;
        memset(ns, 0xff, nc * sizeof(*ns));
        for (size_t j = 0; j < m->n; j++) {
            size_t i = m->h[j] & (nc - 1);
            while (ns[i] >= 0)
                i = (i + 1) & (nc - 1);
            ns[i] = (int32_t)j;
        }
        free(m->slot);
        m->slot = ns;
        m->cap = nc;
    }
    if (m->n == m->capn) {
        size_t nc = m->capn ? m->capn * 2 : 32;
        char **a = realloc(m->keys, nc * sizeof(*a));
        if (a)
            m->keys = a;
        uint32_t *b = realloc(m->klen, nc * sizeof(*b));
        if (b)
            m->klen = b;
        uint64_t *c = realloc(m->h, nc * sizeof(*c));
        if (c)
            m->h = c;
        if (!a || !b || !c)
            return -2;
        m->capn = nc;
    }
    char *copy = malloc(kl + 1);
    if (!copy)
        return -2;
    memcpy(copy, k, kl);
    copy[kl] = 0;
    size_t id = m->n++;
    m->keys[id] = copy;
    m->klen[id] = (uint32_t)kl;
    m->h[id] = h;
    size_t i = h & (m->cap - 1);
    while (m->slot[i] >= 0)
        i = (i + 1) & (m->cap - 1);
    m->slot[i] = (int32_t)id;
    return (long)id;
}

/* ---- labels ---- */

static void key_labels(struct buf *b, const struct tsdb_labels *l)
{
    buf_reset(b);
    buf_reserve(b, 1);
    for (uint16_t i = 0; i < l->n; i++) {
        buf_puts(b, l->l[i].name);
        buf_putc(b, '\xff');
        buf_puts(b, l->l[i].value);
        buf_putc(b, '\xfe');
    }
}

/* A label set under construction: pointers to strings that outlive it. */
struct lb {
    struct tsdb_label p[TSDB_MAX_LABELS + 2];
    size_t n;
};

static void lb_from(struct lb *b, const struct tsdb_labels *l)
{
    b->n = l->n;
    if (l->n)
        memcpy(b->p, l->l, l->n * sizeof(b->p[0]));
}

static void lb_del(struct lb *b, const char *name)
{
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->p[i].name, name) == 0) {
            b->p[i] = b->p[--b->n];
            return;
        }
}

static void lb_set(struct lb *b, const char *name, const char *value)
{
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->p[i].name, name) == 0) {
            b->p[i].value = value;
            return;
        }
    if (b->n < ARRAY_SIZE(b->p)) {
        b->p[b->n].name = name;
        b->p[b->n++].value = value;
    }
}

static bool in_list(char **l, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i], s) == 0)
            return true;
    return false;
}

static void lb_keep(struct lb *b, char **names, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (in_list(names, n, b->p[i].name))
            b->p[k++] = b->p[i];
    b->n = k;
}

static int lb_make(struct promql_ev *ev, struct lb *b, struct tsdb_labels *out)
{
    int r = tsdb_labels_make(out, b->p, b->n);
    if (r) {
        fail(ev, PROMQL_EEXEC, r == -ENOMEM ? "out of memory" : "bad label set");
        return -1;
    }
    return 0;
}

/* An owned copy of a label set. */
static int labels_copy(struct promql_ev *ev, const struct tsdb_labels *l, struct tsdb_labels *out)
{
    struct lb b;
    lb_from(&b, l);
    return lb_make(ev, &b, out);
}

/* Prometheus's labels.String(): {a="b", c="d"}. */
static void labels_str(struct buf *b, const struct tsdb_labels *l)
{
    buf_putc(b, '{');
    for (uint16_t i = 0; i < l->n; i++) {
        if (i)
            buf_puts(b, ", ");
        buf_puts(b, l->l[i].name);
        buf_puts(b, "=");
        buf_json_str(b, l->l[i].value);
    }
    buf_putc(b, '}');
}

/* ---- output sets: series merged by label set ---- */

struct outset {
    struct pq_val *val;
    struct smap map;
};

/* The output series for a label set (taken when own; borrowed otherwise). With
 * strict, an existing one is an error. */
static struct pq_ser *out_series(struct promql_ev *ev, struct outset *o, struct tsdb_labels *lab,
                                 bool own, bool strict)
{
    key_labels(&ev->key, lab);
    long id = smap_get(&o->map, buf_head(&ev->key), buf_used(&ev->key), true);
    if (id == -2) {
        if (own)
            tsdb_labels_free(lab);
        return oom(ev);
    }
    if ((size_t)id < o->val->ns) {
        if (own)
            tsdb_labels_free(lab);
        if (strict)
            return fail(ev, PROMQL_EEXEC, "vector cannot contain metrics with the same labelset");
        return &o->val->s[id];
    }
    return val_add(ev, o->val, lab, own);
}

/* The output series (index + 1) for a copy of labels l; 0 after an error. */
static size_t out_copy(struct promql_ev *ev, struct outset *o, const struct tsdb_labels *l)
{
    struct tsdb_labels lab;
    if (labels_copy(ev, l, &lab))
        return 0;
    struct pq_ser *d = out_series(ev, o, &lab, true, false);
    return d ? (size_t)(d - o->val->s) + 1 : 0;
}

static bool out_put(struct promql_ev *ev, struct pq_ser *s, size_t i, double x)
{
    if (s->ok[i]) {
        fail(ev, PROMQL_EEXEC, "vector cannot contain metrics with the same labelset");
        return false;
    }
    return put(ev, s, i, x);
}

static bool outset_init(struct promql_ev *ev, struct outset *o)
{
    memset(o, 0, sizeof(*o));
    o->val = val_new(ev, PROMQL_VECTOR);
    return o->val != NULL;
}

/* Ends an output set: returns its value, or NULL (freed) after an error. */
static struct pq_val *outset_done(struct promql_ev *ev, struct outset *o)
{
    smap_free(&o->map);
    if (ev->err) {
        val_free(ev, o->val);
        return NULL;
    }
    return o->val;
}

/* A copy of l without __name__ (owned). */
static int drop_name(struct promql_ev *ev, const struct tsdb_labels *l, struct tsdb_labels *out)
{
    struct lb b;
    lb_from(&b, l);
    lb_del(&b, "__name__");
    return lb_make(ev, &b, out);
}

/* ---- reading the store ---- */

/* The series of a selector with samples in [mint, maxt], sorted by labels (the
 * order Prometheus's storage gives them in). */
static size_t select_series(struct promql_ev *ev, const struct promql_node *n, int64_t mint,
                            int64_t maxt, struct tsdb_series ***out)
{
    size_t k = tsdb_select(ev->db, n->m, n->nm, mint, maxt, out);
    if (k > 1)
        qsort(*out, k, sizeof(**out), tsdb_series_cmp);
    struct sel_keeper *kp = ev->keeper;
    if (k && kp->nkeep == kp->capkeep) {
        size_t nc = kp->capkeep ? kp->capkeep * 2 : 8;
        struct sel_keep *a = realloc(kp->keep, nc * sizeof(*a));
        if (!a) {
            tsdb_select_free(*out, k);
            *out = NULL;
            oom(ev);
            return 0;
        }
        kp->keep = a;
        kp->capkeep = nc;
    }
    if (k)
        kp->keep[kp->nkeep++] = (struct sel_keep){ *out, k };
    return k;
}

/* Loads a series' samples in [mint, maxt] into the scratch arrays; stale
 * markers are kept when keep_stale (instant selectors stop at them). */
static size_t load_raw(struct promql_ev *ev, const struct tsdb_series *s, int64_t mint, int64_t maxt,
                       bool keep_stale)
{
    struct tsdb_iter it;
    tsdb_iter_init(&it, s, mint, maxt);
    size_t n = 0;
    int64_t t;
    double v;
    while (tsdb_iter_next(&it, &t, &v)) {
        if (!keep_stale && tsdb_is_stale(v))
            continue;
        if (n == ev->rcap) {
            size_t nc = ev->rcap ? ev->rcap * 2 : 1024;
            int64_t *a = realloc(ev->rt, nc * sizeof(*a));
            if (a)
                ev->rt = a;
            double *b = realloc(ev->rv, nc * sizeof(*b));
            if (b)
                ev->rv = b;
            if (!a || !b) {
                oom(ev);
                return 0;
            }
            ev->rcap = nc;
        }
        ev->rt[n] = t;
        ev->rv[n++] = v;
    }
    return n;
}

/* Instant vector selector: at each step the newest sample in [t - lookback, t]
 * (t = the step or the @ time, minus offset), unless that sample is a staleness
 * marker. With want_ts the value is the sample's timestamp in seconds. */
static struct pq_val *eval_vsel(struct promql_ev *ev, const struct promql_node *n, bool want_ts)
{
    struct pq_val *out = val_new(ev, PROMQL_VECTOR);
    if (!out)
        return NULL;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (size_t i = 0; i < ev->nsteps; i++) {
        int64_t te = ref_time(ev, n, i) - n->offset;
        lo = MIN(lo, te - ev->lookback);
        hi = MAX(hi, te);
    }
    struct tsdb_series **ss;
    size_t k = select_series(ev, n, lo, hi, &ss);
    for (size_t si = 0; si < k && !stopped(ev); si++) {
        size_t nr = load_raw(ev, ss[si], lo, hi, true);
        if (!nr)
            continue;
        struct pq_ser *s = NULL;
        size_t j = 0;
        for (size_t i = 0; i < ev->nsteps; i++) {
            int64_t te = ref_time(ev, n, i) - n->offset;
            if (n->at)
                j = 0;
            while (j < nr && ev->rt[j] <= te)
                j++;
            if (j == 0 || ev->rt[j - 1] < te - ev->lookback || tsdb_is_stale(ev->rv[j - 1]))
                continue;
            if (!s) {
                struct tsdb_labels l = ss[si]->labels;
                if (!(s = val_add(ev, out, &l, false)))
                    break;
            }
            if (!put(ev, s, i, want_ts ? (double)ev->rt[j - 1] / 1000.0 : ev->rv[j - 1]))
                break;
        }
    }
    if (ev->err) {
        val_free(ev, out);
        return NULL;
    }
    return out;
}

/* ---- range vectors, streamed one series at a time ---- */

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

static struct pq_val *eval(struct promql_ev *ev, const struct promql_node *n);

static const struct promql_node *unparen(const struct promql_node *n)
{
    while (n->kind == PQ_PAREN)
        n = n->kids[0];
    return n;
}

/* Evaluates a subquery's inner expression over the range its windows need:
 * aligned to multiples of its step, as Prometheus aligns them. */
static struct pq_val *eval_subquery_inner(struct promql_ev *ev, const struct promql_node *n,
                                          int64_t *istart, int64_t *istep, size_t *insteps)
{
    int64_t step = n->step ? n->step : ev->default_step;
    int64_t first = ref_time(ev, n, 0) - n->offset, last = ref_time(ev, n, ev->nsteps - 1) - n->offset;
    int64_t lo = first - n->range;
    int64_t s = step * (lo / step);
    if (s < lo)
        s += step;
    if (last < s)
        last = s - step;   /* no inner steps */
    size_t ns = last >= s ? (size_t)((last - s) / step) + 1 : 0;
    if (ns == 0)
        return val_new(ev, PROMQL_VECTOR);
    if (ns > 10 * 1000 * 1000 || ns > ev->max_samples)
        return fail(ev, PROMQL_EEXEC, "query processing would load too many samples into memory in query execution");
    struct promql_ev sub = *ev;
    sub.start = s;
    sub.end = s + (int64_t)(ns - 1) * step;
    sub.step = step;
    sub.nsteps = ns;
    sub.key = BUF_INIT;
    sub.rt = NULL;
    sub.rv = NULL;
    sub.rcap = 0;
    struct pq_val *v = eval(&sub, n->kids[0]);
    buf_free(&sub.key);
    free(sub.rt);
    free(sub.rv);
    ev->cur = sub.cur;
    ev->peak = MAX(ev->peak, sub.peak);
    ev->ticks = sub.ticks;
    if (sub.err) {
        ev->err = sub.err;
        return NULL;
    }
    *istart = s;
    *istep = step;
    *insteps = ns;
    return v;
}

/* Calls fn for every series of a range vector argument (matrix selector or
 * subquery) with its samples; returns false on error. */
static bool for_each_range(struct promql_ev *ev, const struct promql_node *n, raw_fn fn, void *arg)
{
    n = unparen(n);
    struct win w = { .range = n->range, .offset = n->offset, .node = n };
    if (n->kind == PQ_MSEL) {
        int64_t lo = INT64_MAX, hi = INT64_MIN;
        for (size_t i = 0; i < ev->nsteps; i++) {
            int64_t te = ref_time(ev, n, i) - n->offset;
            lo = MIN(lo, te - n->range);
            hi = MAX(hi, te);
        }
        struct tsdb_series **ss;
        size_t k = select_series(ev, n, lo, hi, &ss);
        for (size_t si = 0; si < k && !stopped(ev); si++) {
            size_t nr = load_raw(ev, ss[si], lo, hi, false);
            if (ev->err)
                break;
            if (!charge(ev, nr))
                break;
            struct raw r = { &ss[si]->labels, ev->rt, ev->rv, nr };
            bool ok = fn(ev, &r, &w, arg);
            ev->cur -= MIN(ev->cur, nr);
            if (!ok)
                break;
        }
        return !ev->err;
    }
    if (n->kind != PQ_SUBQ) {
        fail(ev, PROMQL_EBAD, "expected a range vector");
        return false;
    }
    int64_t s = 0, step = 1;
    size_t ns = 0;
    struct pq_val *v = eval_subquery_inner(ev, n, &s, &step, &ns);
    if (!v)
        return false;
    int64_t *t = malloc((ns ? ns : 1) * sizeof(*t));
    double *x = malloc((ns ? ns : 1) * sizeof(*x));
    if (!t || !x) {
        oom(ev);
    } else {
        for (size_t si = 0; si < v->ns && !stopped(ev); si++) {
            size_t k = 0;
            for (size_t i = 0; i < ns; i++)
                if (v->s[si].ok[i]) {
                    t[k] = s + (int64_t)i * step;
                    x[k++] = v->s[si].v[i];
                }
            struct raw r = { &v->s[si].lab, t, x, k };
            if (!fn(ev, &r, &w, arg))
                break;
        }
    }
    free(t);
    free(x);
    val_free(ev, v);
    return !ev->err;
}

/* Moves [*lo, *hi) to the samples of step i's window. */
static void window(const struct promql_ev *ev, const struct raw *r, const struct win *w, size_t i,
                   size_t *lo, size_t *hi, int64_t *ws, int64_t *we)
{
    int64_t te = ref_time(ev, w->node, i) - w->offset, ts = te - w->range;
    if (w->node->at || i == 0) {
        *lo = 0;
        *hi = 0;
    }
    while (*lo < r->n && r->t[*lo] < ts)
        (*lo)++;
    if (*hi < *lo)
        *hi = *lo;
    while (*hi < r->n && r->t[*hi] <= te)
        (*hi)++;
    *ws = ts;
    *we = te;
}

/* ---- functions over range vectors ---- */

static double kahan_inc(double inc, double sum, double *c)
{
    double t = sum + inc;
    if (fabs(sum) >= fabs(inc))
        *c += (sum - t) + inc;
    else
        *c += (inc - t) + sum;
    return t;
}

static void linear_regression(const int64_t *t, const double *v, size_t n, int64_t icept,
                              double *slope, double *intercept)
{
    double sx = 0, cx = 0, sy = 0, cy = 0, sxy = 0, cxy = 0, sx2 = 0, cx2 = 0;
    bool consty = true;
    for (size_t i = 0; i < n; i++) {
        if (consty && i > 0 && v[i] != v[0])
            consty = false;
        double x = (double)(t[i] - icept) / 1e3;
        sx = kahan_inc(x, sx, &cx);
        sy = kahan_inc(v[i], sy, &cy);
        sxy = kahan_inc(x * v[i], sxy, &cxy);
        sx2 = kahan_inc(x * x, sx2, &cx2);
    }
    if (consty) {
        if (isinf(v[0])) {
            *slope = NAN;
            *intercept = NAN;
        } else {
            *slope = 0;
            *intercept = v[0];
        }
        return;
    }
    double dn = (double)n;
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    double cov = sxy - sx * sy / dn, var = sx2 - sx * sx / dn;
    *slope = cov / var;
    *intercept = sy / dn - *slope * sx / dn;
}

static int cmp_double_nan_first(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    if (isnan(x))
        return isnan(y) ? 0 : -1;
    if (isnan(y))
        return 1;
    return x < y ? -1 : x > y;
}

/* Prometheus's quantile(): linear interpolation between the closest ranks;
 * sorts v. */
static double quantile(double q, double *v, size_t n)
{
    if (n == 0 || isnan(q))
        return NAN;
    if (q < 0)
        return -INFINITY;
    if (q > 1)
        return INFINITY;
    qsort(v, n, sizeof(*v), cmp_double_nan_first);
    double rank = q * (double)(n - 1);
    double lo = fmax(0, floor(rank)), hi = fmin((double)n - 1, lo + 1);
    double w = rank - floor(rank);
    return v[(size_t)lo] * (1 - w) + v[(size_t)hi] * w;
}

enum mfn {
    MF_RATE, MF_INCREASE, MF_DELTA, MF_IRATE, MF_IDELTA, MF_DERIV, MF_PREDICT, MF_HOLT,
    MF_RESETS, MF_CHANGES, MF_AVG, MF_SUM, MF_MIN, MF_MAX, MF_COUNT, MF_LAST, MF_PRESENT,
    MF_STDDEV, MF_STDVAR, MF_QUANTILE, MF_ABSENT
};

struct mctx {
    enum mfn f;
    struct outset o;
    const double *p1, *p2;      /* scalar parameters per step */
    double *tmp;
    size_t tmpcap;
    uint8_t *any;               /* absent_over_time: steps with a sample */
};

static bool extrapolated(const int64_t *t, const double *v, size_t n, int64_t ws, int64_t we,
                         int64_t range, bool counter, bool rate, double *out)
{
    if (n < 2)
        return false;
    double result = v[n - 1] - v[0];
    if (counter) {
        double last = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i] < last)
                result += last;
            last = v[i];
        }
    }
    double to_start = (double)(t[0] - ws) / 1000, to_end = (double)(we - t[n - 1]) / 1000;
    double sampled = (double)(t[n - 1] - t[0]) / 1000;
    double avg = sampled / (double)(n - 1);
    if (counter && result > 0 && v[0] >= 0) {
        double to_zero = sampled * (v[0] / result);
        if (to_zero < to_start)
            to_start = to_zero;
    }
    double thr = avg * 1.1, interval = sampled;
    interval += to_start < thr ? to_start : avg / 2;
    interval += to_end < thr ? to_end : avg / 2;
    double factor = interval / sampled;
    if (rate)
        factor /= (double)range / 1000;
    *out = result * factor;
    return true;
}

static bool mfn_apply(struct promql_ev *ev, struct mctx *c, const int64_t *t, const double *v,
                      size_t n, int64_t ws, int64_t we, int64_t range, size_t i, double *out)
{
    switch (c->f) {
    case MF_RATE: return extrapolated(t, v, n, ws, we, range, true, true, out);
    case MF_INCREASE: return extrapolated(t, v, n, ws, we, range, true, false, out);
    case MF_DELTA: return extrapolated(t, v, n, ws, we, range, false, false, out);
    case MF_IRATE:
    case MF_IDELTA: {
        if (n < 2)
            return false;
        double last = v[n - 1], prev = v[n - 2];
        double r = (c->f == MF_IRATE && last < prev) ? last : last - prev;
        if (c->f == MF_IRATE) {
            int64_t dt = t[n - 1] - t[n - 2];
            if (dt == 0)
                return false;
            r /= (double)dt / 1000;
        }
        *out = r;
        return true;
    }
    case MF_DERIV: {
        if (n < 2)
            return false;
        double slope, icept;
        linear_regression(t, v, n, t[0], &slope, &icept);
        *out = slope;
        return true;
    }
    case MF_PREDICT: {
        if (n < 2)
            return false;
        double slope, icept;
        linear_regression(t, v, n, step_time(ev, i), &slope, &icept);
        *out = slope * c->p1[i] + icept;
        return true;
    }
    case MF_HOLT: {
        double sf = c->p1[i], tf = c->p2[i];
        if (sf <= 0 || sf >= 1) {
            fail(ev, PROMQL_EEXEC, "invalid smoothing factor. Expected: 0 < sf < 1, got: %g", sf);
            return false;
        }
        if (tf <= 0 || tf >= 1) {
            fail(ev, PROMQL_EEXEC, "invalid trend factor. Expected: 0 < tf < 1, got: %g", tf);
            return false;
        }
        if (n < 2)
            return false;
        double s0 = 0, s1 = v[0], b = v[1] - v[0];
        for (size_t k = 1; k < n; k++) {
            double x = sf * v[k];
            if (k > 1)
                b = tf * (s1 - s0) + (1 - tf) * b;
            double y = (1 - sf) * (s1 + b);
            s0 = s1;
            s1 = x + y;
        }
        *out = s1;
        return true;
    }
    case MF_RESETS:
    case MF_CHANGES: {
        if (n == 0)
            return false;
        double cnt = 0, prev = v[0];
        for (size_t k = 1; k < n; k++) {
            double cur = v[k];
            if (c->f == MF_RESETS ? cur < prev : (cur != prev && !(isnan(cur) && isnan(prev))))
                cnt++;
            prev = cur;
        }
        *out = cnt;
        return true;
    }
    default:
        break;
    }
    if (n == 0)
        return false;
    switch (c->f) {
    case MF_AVG: {
        double mean = 0, count = 0;
        for (size_t k = 0; k < n; k++) {
            count++;
            if (isinf(mean)) {
                if (isinf(v[k]) && (mean > 0) == (v[k] > 0))
                    continue;
                if (!isinf(v[k]) && !isnan(v[k]))
                    continue;
            }
            mean += v[k] / count - mean / count;
        }
        *out = mean;
        return true;
    }
    case MF_SUM: {
        double s = 0;
        for (size_t k = 0; k < n; k++)
            s += v[k];
        *out = s;
        return true;
    }
    case MF_MIN:
    case MF_MAX: {
        double m = v[0];
        for (size_t k = 0; k < n; k++)
            if (c->f == MF_MAX ? (v[k] > m || isnan(m)) : (v[k] < m || isnan(m)))
                m = v[k];
        *out = m;
        return true;
    }
    case MF_COUNT: *out = (double)n; return true;
    case MF_LAST: *out = v[n - 1]; return true;
    case MF_PRESENT: *out = 1; return true;
    case MF_STDDEV:
    case MF_STDVAR: {
        double count = 0, mean = 0, cmean = 0, aux = 0, caux = 0;
        for (size_t k = 0; k < n; k++) {
            count++;
            double delta = v[k] - (mean + cmean);
            mean = kahan_inc(delta / count, mean, &cmean);
            aux = kahan_inc(delta * (v[k] - (mean + cmean)), aux, &caux);
        }
        double var = (aux + caux) / count;
        *out = c->f == MF_STDDEV ? sqrt(var) : var;
        return true;
    }
    case MF_QUANTILE: {
        if (n > c->tmpcap) {
            double *a = realloc(c->tmp, n * sizeof(*a));
            if (!a) {
                oom(ev);
                return false;
            }
            c->tmp = a;
            c->tmpcap = n;
        }
        memcpy(c->tmp, v, n * sizeof(*v));
        *out = quantile(c->p1[i], c->tmp, n);
        return true;
    }
    default:
        return false;
    }
}

static bool mfn_series(struct promql_ev *ev, const struct raw *r, const struct win *w, void *arg)
{
    struct mctx *c = arg;
    struct pq_ser *s = NULL;
    size_t lo = 0, hi = 0;
    if (!r->n)
        return true;
    for (size_t i = 0; i < ev->nsteps; i++) {
        int64_t ws, we;
        window(ev, r, w, i, &lo, &hi, &ws, &we);
        if (c->f == MF_ABSENT) {
            if (hi > lo)
                c->any[i] = 1;
            continue;
        }
        double x;
        if (!mfn_apply(ev, c, r->t + lo, r->v + lo, hi - lo, ws, we, w->range, i, &x)) {
            if (ev->err)
                return false;
            continue;
        }
        if (!s) {
            struct tsdb_labels l;
            if (c->f == MF_LAST) {
                if (labels_copy(ev, r->lab, &l))
                    return false;
            } else if (drop_name(ev, r->lab, &l)) {
                return false;
            }
            if (!(s = out_series(ev, &c->o, &l, true, true)))
                return false;
        }
        if (!put(ev, s, i, x))
            return false;
    }
    return true;
}

static const struct { const char *name; enum mfn f; } mfns[] = {
    { "rate", MF_RATE }, { "increase", MF_INCREASE }, { "delta", MF_DELTA },
    { "irate", MF_IRATE }, { "idelta", MF_IDELTA }, { "deriv", MF_DERIV },
    { "predict_linear", MF_PREDICT }, { "holt_winters", MF_HOLT }, { "resets", MF_RESETS },
    { "changes", MF_CHANGES }, { "avg_over_time", MF_AVG }, { "sum_over_time", MF_SUM },
    { "min_over_time", MF_MIN }, { "max_over_time", MF_MAX }, { "count_over_time", MF_COUNT },
    { "last_over_time", MF_LAST }, { "present_over_time", MF_PRESENT },
    { "stddev_over_time", MF_STDDEV }, { "stdvar_over_time", MF_STDVAR },
    { "quantile_over_time", MF_QUANTILE }, { "absent_over_time", MF_ABSENT },
};

static struct pq_val *absent_labels_value(struct promql_ev *ev, const struct promql_node *arg,
                                          const uint8_t *present);

static struct pq_val *eval_matrix_call(struct promql_ev *ev, const struct promql_node *n, int mi)
{
    struct mctx c;
    memset(&c, 0, sizeof(c));
    c.f = mfns[mi].f;
    struct pq_val *p1 = NULL, *p2 = NULL, *res = NULL;
    const struct promql_node *marg = n->kids[0];
    if (c.f == MF_QUANTILE) {
        if (!(p1 = eval(ev, n->kids[0])))
            return NULL;
        marg = n->kids[1];
    } else if (c.f == MF_PREDICT || c.f == MF_HOLT) {
        if (!(p1 = eval(ev, n->kids[1])))
            return NULL;
        if (c.f == MF_HOLT && !(p2 = eval(ev, n->kids[2]))) {
            val_free(ev, p1);
            return NULL;
        }
    }
    c.p1 = p1 ? p1->sc : NULL;
    c.p2 = p2 ? p2->sc : NULL;
    if (c.f == MF_ABSENT && !(c.any = calloc(ev->nsteps, 1))) {
        oom(ev);
        goto out;
    }
    if (!outset_init(ev, &c.o))
        goto out;
    for_each_range(ev, marg, mfn_series, &c);
    res = outset_done(ev, &c.o);
    if (res && c.f == MF_ABSENT) {
        val_free(ev, res);
        res = absent_labels_value(ev, unparen(marg), c.any);
    }
out:
    free(c.tmp);
    free(c.any);
    val_free(ev, p1);
    val_free(ev, p2);
    return res;
}

/* ---- functions over instant vectors and scalars ---- */

/* absent(): 1 with the labels of the selector's equality matchers at the steps
 * where nothing was present. */
static struct pq_val *absent_labels_value(struct promql_ev *ev, const struct promql_node *arg,
                                          const uint8_t *present)
{
    struct lb b = { .n = 0 };
    if (arg->kind == PQ_VSEL || arg->kind == PQ_MSEL) {
        const char *dup[TSDB_MAX_LABELS];
        size_t nd = 0;
        for (size_t i = 0; i < arg->nm; i++) {
            const struct tsdb_matcher *m = &arg->m[i];
            if (strcmp(m->name, "__name__") == 0)
                continue;
            bool has = false;
            for (size_t k = 0; k < b.n; k++)
                if (strcmp(b.p[k].name, m->name) == 0)
                    has = true;
            if (m->op == TSDB_EQ && !has)
                lb_set(&b, m->name, m->value);
            else if (nd < ARRAY_SIZE(dup))
                dup[nd++] = m->name;
        }
        for (size_t i = 0; i < nd; i++)
            lb_del(&b, dup[i]);
    }
    struct pq_val *out = val_new(ev, PROMQL_VECTOR);
    if (!out)
        return NULL;
    struct pq_ser *s = NULL;
    for (size_t i = 0; i < ev->nsteps; i++) {
        if (present[i])
            continue;
        if (!s) {
            struct tsdb_labels l;
            if (lb_make(ev, &b, &l) || !(s = val_add(ev, out, &l, true)))
                break;
        }
        if (!put(ev, s, i, 1))
            break;
    }
    if (ev->err) {
        val_free(ev, out);
        return NULL;
    }
    return out;
}

static double go_round(double x, double to)
{
    double inv = 1.0 / to;
    return floor(x * inv + 0.5) / inv;
}

static double sgn(double x)
{
    return x < 0 ? -1 : x > 0 ? 1 : x;
}

enum dfn { DF_DOM, DF_DOW, DF_DOY, DF_DIM, DF_HOUR, DF_MINUTE, DF_MONTH, DF_YEAR };

static double date_part(enum dfn f, double secs)
{
    if (!(secs > -6e16 && secs < 6e16))
        return NAN;     /* beyond what a calendar date can express */
    time_t t = (time_t)(int64_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return NAN;
    switch (f) {
    case DF_DOM: return tm.tm_mday;
    case DF_DOW: return tm.tm_wday;
    case DF_DOY: return tm.tm_yday + 1;
    case DF_HOUR: return tm.tm_hour;
    case DF_MINUTE: return tm.tm_min;
    case DF_MONTH: return tm.tm_mon + 1;
    case DF_YEAR: return tm.tm_year + 1900;
    case DF_DIM: {
        static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        int y = tm.tm_year + 1900, m = tm.tm_mon;
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        return days[m] + (m == 1 && leap);
    }
    }
    return NAN;
}

static double deg(double x) { return x * 180 / M_PI; }
static double rad(double x) { return x * M_PI / 180; }

static const struct { const char *name; double (*fn)(double); } math_fns[] = {
    { "abs", fabs }, { "ceil", ceil }, { "floor", floor }, { "exp", exp }, { "sqrt", sqrt },
    { "ln", log }, { "log2", log2 }, { "log10", log10 }, { "sin", sin }, { "cos", cos },
    { "tan", tan }, { "asin", asin }, { "acos", acos }, { "atan", atan }, { "sinh", sinh },
    { "cosh", cosh }, { "tanh", tanh }, { "asinh", asinh }, { "acosh", acosh },
    { "atanh", atanh }, { "deg", deg }, { "rad", rad }, { "sgn", sgn },
};

static const char *const date_names[] = {
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"
};

/* Go math.Max / math.Min: NaN wins. */
static double go_max(double a, double b)
{
    if (isnan(a) || isnan(b))
        return NAN;
    return a > b ? a : b;
}

static double go_min(double a, double b)
{
    if (isnan(a) || isnan(b))
        return NAN;
    return a < b ? a : b;
}

/* Element-wise functions of one vector: math, clamps, round, dates, timestamp. */
static struct pq_val *eval_simple(struct promql_ev *ev, const struct promql_node *n)
{
    const char *f = n->func->name;
    struct pq_val *in = NULL, *a1 = NULL, *a2 = NULL;
    int date = -1;
    for (size_t i = 0; i < ARRAY_SIZE(date_names); i++)
        if (strcmp(f, date_names[i]) == 0)
            date = (int)i;
    bool want_ts = strcmp(f, "timestamp") == 0 && unparen(n->kids[0])->kind == PQ_VSEL;
    if (want_ts)
        in = eval_vsel(ev, unparen(n->kids[0]), true);
    else
        in = eval(ev, n->kids[0]);
    if (!in)
        return NULL;
    if (n->nkids > 1 && !(a1 = eval(ev, n->kids[1])))
        goto out_in;
    if (n->nkids > 2 && !(a2 = eval(ev, n->kids[2])))
        goto out_in;
    struct outset o;
    if (!outset_init(ev, &o))
        goto out_in;
    enum { K_MATH, K_DATE, K_ROUND, K_CLAMP_MIN, K_CLAMP_MAX, K_CLAMP, K_TIMESTAMP, K_SORT } kind;
    double (*math)(double) = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(math_fns); i++)
        if (strcmp(f, math_fns[i].name) == 0)
            math = math_fns[i].fn;
    if (math)
        kind = K_MATH;
    else if (date >= 0)
        kind = K_DATE;
    else if (!strcmp(f, "round"))
        kind = K_ROUND;
    else if (!strcmp(f, "clamp_min"))
        kind = K_CLAMP_MIN;
    else if (!strcmp(f, "clamp_max"))
        kind = K_CLAMP_MAX;
    else if (!strcmp(f, "clamp"))
        kind = K_CLAMP;
    else if (!strcmp(f, "timestamp"))
        kind = K_TIMESTAMP;
    else
        kind = K_SORT;      /* sort, sort_desc: the values as they are, names kept */
    for (size_t si = 0; si < in->ns && !stopped(ev); si++) {
        struct pq_ser *src = &in->s[si], *dst = NULL;
        for (size_t i = 0; i < ev->nsteps; i++) {
            if (!src->ok[i])
                continue;
            double x = src->v[i], y;
            switch (kind) {
            case K_MATH: y = math(x); break;
            case K_DATE: y = date_part((enum dfn)date, x); break;
            case K_ROUND: y = go_round(x, a1 ? a1->sc[i] : 1); break;
            case K_CLAMP_MIN: y = go_max(x, a1->sc[i]); break;
            case K_CLAMP_MAX: y = go_min(x, a1->sc[i]); break;
            case K_CLAMP:
                if (a2->sc[i] < a1->sc[i])
                    continue;
                y = go_max(a1->sc[i], go_min(a2->sc[i], x));
                break;
            case K_TIMESTAMP: y = want_ts ? x : (double)step_time(ev, i) / 1000; break;
            default: y = x; break;
            }
            if (!dst) {
                struct tsdb_labels l;
                int r = kind == K_SORT ? labels_copy(ev, &src->lab, &l) : drop_name(ev, &src->lab, &l);
                if (r || !(dst = out_series(ev, &o, &l, true, false)))
                    break;
            }
            if (!out_put(ev, dst, i, y))
                break;
        }
        if (ev->err)
            break;
    }
    struct pq_val *res = outset_done(ev, &o);
    if (res && kind == K_SORT)
        res->sort = !strcmp(f, "sort") ? 1 : -1;
    val_free(ev, in);
    val_free(ev, a1);
    val_free(ev, a2);
    return res;
out_in:
    val_free(ev, in);
    val_free(ev, a1);
    return NULL;
}

/* Go regexp's Expand for $1, ${1}, $name, ${name}, $$. */
static void expand(struct buf *b, const char *tmpl, pcre2_code *re, const char *subj,
                   const PCRE2_SIZE *ov, int nmatch)
{
    for (const char *p = tmpl; *p; p++) {
        if (*p != '$') {
            buf_putc(b, *p);
            continue;
        }
        if (p[1] == '$') {
            buf_putc(b, '$');
            p++;
            continue;
        }
        const char *s = p + 1, *e;
        bool brace = *s == '{';
        if (brace)
            s++;
        e = s;
        while ((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') || (*e >= '0' && *e <= '9') || *e == '_')
            e++;
        if (e == s || (brace && *e != '}')) {
            buf_putc(b, '$');   /* not a reference: literal */
            continue;
        }
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)MIN((size_t)(e - s), sizeof(name) - 1), s);
        int g = -1;
        bool digits = true;
        for (const char *q = name; *q; q++)
            if (*q < '0' || *q > '9')
                digits = false;
        if (digits)
            g = strlen(name) < 9 ? atoi(name) : -1;
        else
            g = pcre2_substring_number_from_name(re, (PCRE2_SPTR)name);
        if (g >= 0 && g < nmatch && ov[2 * g] != PCRE2_UNSET)
            buf_append(b, subj + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
        p = brace ? e : e - 1;
    }
}

static struct pq_val *eval_label_fn(struct promql_ev *ev, const struct promql_node *n)
{
    bool replace = strcmp(n->func->name, "label_replace") == 0;
    const char *dst = n->kids[1]->str;
    struct tsdb_matcher re;
    memset(&re, 0, sizeof(re));
    if (replace) {
        char e[300];
        if (tsdb_matcher_init(&re, "x", TSDB_RE, n->kids[4]->str, e, sizeof(e)))
            return fail(ev, PROMQL_EEXEC, "invalid regular expression in label_replace(): %s", n->kids[4]->str);
        if (!prom_label_name_ok(dst)) {
            tsdb_matcher_free(&re);
            return fail(ev, PROMQL_EEXEC, "invalid destination label name in label_replace(): %s", dst);
        }
    } else {
        if (!prom_label_name_ok(dst))
            return fail(ev, PROMQL_EEXEC, "invalid destination label name in label_join(): %s", dst);
        for (size_t i = 3; i < n->nkids; i++)
            if (!prom_label_name_ok(n->kids[i]->str))
                return fail(ev, PROMQL_EEXEC, "invalid source label name in label_join(): %s", n->kids[i]->str);
    }
    struct pq_val *in = eval(ev, n->kids[0]), *res = NULL;
    if (!in)
        goto out;
    struct outset o;
    if (!outset_init(ev, &o))
        goto out;
    struct buf val = BUF_INIT;
    for (size_t si = 0; si < in->ns && !stopped(ev); si++) {
        struct pq_ser *src = &in->s[si];
        struct lb b;
        lb_from(&b, &src->lab);
        buf_reset(&val);
        bool set = true;
        if (replace) {
            const char *sv = tsdb_labels_get(&src->lab, n->kids[3]->str);
            if (!sv)
                sv = "";
            int r = pcre2_match(re.re, (PCRE2_SPTR)sv, strlen(sv), 0, 0, re.md, NULL);
            if (r < 0) {
                set = false;
            } else {
                expand(&val, n->kids[2]->str, re.re, sv, pcre2_get_ovector_pointer(re.md),
                       (int)pcre2_get_ovector_count(re.md));
            }
        } else {
            for (size_t i = 3; i < n->nkids; i++) {
                if (i > 3)
                    buf_puts(&val, n->kids[2]->str);
                const char *sv = tsdb_labels_get(&src->lab, n->kids[i]->str);
                if (sv)
                    buf_puts(&val, sv);
            }
        }
        buf_putc(&val, 0);
        if (set)
            lb_set(&b, dst, buf_head(&val));
        struct tsdb_labels l;
        if (lb_make(ev, &b, &l))
            break;
        struct pq_ser *d = out_series(ev, &o, &l, true, false);
        if (!d)
            break;
        for (size_t i = 0; i < ev->nsteps; i++)
            if (src->ok[i] && !out_put(ev, d, i, src->v[i]))
                break;
        if (ev->err)
            break;
    }
    buf_free(&val);
    res = outset_done(ev, &o);
out:
    val_free(ev, in);
    tsdb_matcher_free(&re);
    return res;
}

/* The input series of each group, so a per-step pass over a group does not scan
 * every series: order[first[g] .. first[g + 1]) are group g's series (gid < 0:
 * in no group), in input order. */
static bool group_members(struct promql_ev *ev, const long *gid, size_t ns, size_t ng, size_t **order,
                          size_t **first)
{
    *order = malloc((ns + 1) * sizeof(**order));
    *first = calloc(ng + 2, sizeof(**first));
    if (!*order || !*first) {
        oom(ev);
        return false;
    }
    for (size_t si = 0; si < ns; si++)
        if (gid[si] >= 0)
            (*first)[gid[si] + 2]++;
    for (size_t g = 2; g < ng + 2; g++)
        (*first)[g] += (*first)[g - 1];
    for (size_t si = 0; si < ns; si++)
        if (gid[si] >= 0)
            (*order)[(*first)[gid[si] + 1]++] = si;
    return true;
}

/* histogram_quantile over classic buckets (series with an "le" label). */
struct bucket {
    double ub, count;
};

static int cmp_bucket(const void *a, const void *b)
{
    double x = ((const struct bucket *)a)->ub, y = ((const struct bucket *)b)->ub;
    return x < y ? -1 : x > y;
}

static double bucket_quantile(double q, struct bucket *b, size_t n)
{
    if (isnan(q))
        return NAN;
    if (q < 0)
        return -INFINITY;
    if (q > 1)
        return INFINITY;
    qsort(b, n, sizeof(*b), cmp_bucket);
    if (n == 0 || !(isinf(b[n - 1].ub) && b[n - 1].ub > 0))
        return NAN;
    /* coalesce equal bounds */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && b[k - 1].ub == b[i].ub)
            b[k - 1].count += b[i].count;
        else
            b[k++] = b[i];
    }
    n = k;
    double mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (b[i].count > mx)
            mx = b[i].count;
        else if (b[i].count < mx)
            b[i].count = mx;
    }
    if (n < 2)
        return NAN;
    double obs = b[n - 1].count;
    if (obs == 0)
        return NAN;
    double rank = q * obs;
    size_t i = 0;
    while (i < n - 1 && !(b[i].count >= rank))
        i++;
    if (i == n - 1)
        return b[n - 2].ub;
    if (i == 0 && b[0].ub <= 0)
        return b[0].ub;
    double start = 0, end = b[i].ub, count = b[i].count;
    if (i > 0) {
        start = b[i - 1].ub;
        count -= b[i - 1].count;
        rank -= b[i - 1].count;
    }
    return start + (end - start) * (rank / count);
}

static struct pq_val *eval_histogram_quantile(struct promql_ev *ev, const struct promql_node *n)
{
    struct pq_val *q = eval(ev, n->kids[0]);
    if (!q)
        return NULL;
    struct pq_val *in = eval(ev, n->kids[1]), *res = NULL;
    if (!in) {
        val_free(ev, q);
        return NULL;
    }
    struct smap groups = { 0 };
    size_t *order = NULL, *first = NULL;
    long *gid = calloc(in->ns + 1, sizeof(*gid));
    double *ub = calloc(in->ns + 1, sizeof(*ub));
    struct bucket *bk = calloc(in->ns + 1, sizeof(*bk));
    struct tsdb_labels *glab = calloc(in->ns + 1, sizeof(*glab));
    struct outset o;
    if (!gid || !ub || !bk || !glab || !outset_init(ev, &o)) {
        oom(ev);
        goto out;
    }
    size_t ng = 0;
    for (size_t si = 0; si < in->ns; si++) {
        gid[si] = -1;
        const char *le = tsdb_labels_get(&in->s[si].lab, "le");
        if (!le)
            continue;
        char *end;
        double x = strtod(le, &end);    /* takes "+Inf" as Go's ParseFloat does */
        if (end == le || *end)
            continue;
        ub[si] = x;
        struct lb b;
        lb_from(&b, &in->s[si].lab);
        lb_del(&b, "le");
        lb_del(&b, "__name__");
        struct tsdb_labels l;
        if (lb_make(ev, &b, &l))
            goto outo;
        key_labels(&ev->key, &l);
        long id = smap_get(&groups, buf_head(&ev->key), buf_used(&ev->key), true);
        if (id < 0) {
            tsdb_labels_free(&l);
            oom(ev);
            goto outo;
        }
        if ((size_t)id == ng) {
            glab[ng++] = l;
        } else {
            tsdb_labels_free(&l);
        }
        gid[si] = id;
    }
    if (!group_members(ev, gid, in->ns, ng, &order, &first))
        goto outo;
    for (size_t g = 0; g < ng && !stopped(ev); g++) {
        struct pq_ser *d = NULL;
        for (size_t i = 0; i < ev->nsteps; i++) {
            size_t nb = 0;
            for (size_t k = first[g]; k < first[g + 1]; k++) {
                size_t si = order[k];
                if (in->s[si].ok[i]) {
                    bk[nb].ub = ub[si];
                    bk[nb++].count = in->s[si].v[i];
                }
            }
            if (!nb)
                continue;
            double x = bucket_quantile(q->sc[i], bk, nb);
            if (!d && !(d = out_series(ev, &o, &glab[g], true, false)))   /* takes glab[g] */
                break;
            if (!out_put(ev, d, i, x))
                break;
        }
    }
outo:
    res = outset_done(ev, &o);
    for (size_t g = 0; g < ng; g++)
        tsdb_labels_free(&glab[g]);
out:
    free(order);
    free(first);
    smap_free(&groups);
    free(gid);
    free(ub);
    free(bk);
    free(glab);
    val_free(ev, q);
    val_free(ev, in);
    return res;
}

static struct pq_val *eval_call(struct promql_ev *ev, const struct promql_node *n)
{
    const char *f = n->func->name;
    for (size_t i = 0; i < ARRAY_SIZE(mfns); i++)
        if (strcmp(f, mfns[i].name) == 0)
            return eval_matrix_call(ev, n, (int)i);
    if (!strcmp(f, "time") || !strcmp(f, "pi")) {
        struct pq_val *v = val_new(ev, PROMQL_SCALAR);
        if (v)
            for (size_t i = 0; i < ev->nsteps; i++)
                v->sc[i] = f[0] == 't' ? (double)step_time(ev, i) / 1000 : M_PI;
        return v;
    }
    if (!strcmp(f, "vector")) {
        struct pq_val *s = eval(ev, n->kids[0]);
        if (!s)
            return NULL;
        struct pq_val *v = val_new(ev, PROMQL_VECTOR);
        struct tsdb_labels l = { 0, NULL };
        struct pq_ser *d = v ? val_add(ev, v, &l, true) : NULL;
        if (d)
            for (size_t i = 0; i < ev->nsteps; i++)
                put(ev, d, i, s->sc[i]);
        val_free(ev, s);
        if (ev->err) {
            val_free(ev, v);
            return NULL;
        }
        return v;
    }
    if (!strcmp(f, "scalar")) {
        struct pq_val *in = eval(ev, n->kids[0]);
        if (!in)
            return NULL;
        struct pq_val *v = val_new(ev, PROMQL_SCALAR);
        if (v)
            for (size_t i = 0; i < ev->nsteps; i++) {
                size_t c = 0;
                double x = NAN;
                for (size_t si = 0; si < in->ns; si++)
                    if (in->s[si].ok[i]) {
                        c++;
                        x = in->s[si].v[i];
                    }
                v->sc[i] = c == 1 ? x : NAN;
            }
        val_free(ev, in);
        return v;
    }
    if (!strcmp(f, "absent")) {
        struct pq_val *in = eval(ev, n->kids[0]);
        if (!in)
            return NULL;
        uint8_t *present = calloc(ev->nsteps, 1);
        struct pq_val *v = NULL;
        if (!present) {
            oom(ev);
        } else {
            for (size_t si = 0; si < in->ns; si++)
                for (size_t i = 0; i < ev->nsteps; i++)
                    present[i] |= in->s[si].ok[i];
            v = absent_labels_value(ev, unparen(n->kids[0]), present);
        }
        free(present);
        val_free(ev, in);
        return v;
    }
    if (!strcmp(f, "label_replace") || !strcmp(f, "label_join"))
        return eval_label_fn(ev, n);
    if (!strcmp(f, "histogram_quantile"))
        return eval_histogram_quantile(ev, n);
    if (!strcmp(f, "histogram_count") || !strcmp(f, "histogram_sum") || !strcmp(f, "histogram_fraction")) {
        /* native histograms only: float series give nothing */
        for (size_t i = 0; i < n->nkids; i++) {
            struct pq_val *a = eval(ev, n->kids[i]);
            if (!a)
                return NULL;
            val_free(ev, a);
        }
        return val_new(ev, PROMQL_VECTOR);
    }
    if (n->nkids == 0) {
        /* date functions default to vector(time()) */
        struct pq_val *v = val_new(ev, PROMQL_VECTOR);
        struct tsdb_labels l = { 0, NULL };
        struct pq_ser *d = v ? val_add(ev, v, &l, true) : NULL;
        int date = -1;
        for (size_t i = 0; i < ARRAY_SIZE(date_names); i++)
            if (strcmp(f, date_names[i]) == 0)
                date = (int)i;
        if (d && date >= 0)
            for (size_t i = 0; i < ev->nsteps; i++)
                put(ev, d, i, date_part((enum dfn)date, (double)step_time(ev, i) / 1000));
        if (ev->err) {
            val_free(ev, v);
            return NULL;
        }
        return v;
    }
    return eval_simple(ev, n);
}

/* ---- aggregation ---- */

static int cmp_size_by_value_desc(const void *a, const void *b, void *arg)
{
    const double *v = arg;
    double x = v[*(const size_t *)a], y = v[*(const size_t *)b];
    /* NaN sorts last */
    if (isnan(x))
        return isnan(y) ? 0 : 1;
    if (isnan(y))
        return -1;
    return x > y ? -1 : x < y;
}

static struct pq_val *eval_agg(struct promql_ev *ev, const struct promql_node *n)
{
    struct pq_val *param = NULL, *in = NULL, *res = NULL;
    if (n->nkids > 1 && n->agg != PQ_COUNT_VALUES && !(param = eval(ev, n->kids[1])))
        return NULL;
    if (!(in = eval(ev, n->kids[0]))) {
        val_free(ev, param);
        return NULL;
    }
    size_t ns = in->ns, nst = ev->nsteps;
    struct smap groups = { 0 };
    long *gid = malloc((ns + 1) * sizeof(*gid));
    struct tsdb_labels *glab = NULL;
    size_t ng = 0, capg = 0;
    struct outset o;
    memset(&o, 0, sizeof(o));
    double *acc = NULL, *mean = NULL, *cnt = NULL;
    if (!gid || !outset_init(ev, &o)) {
        oom(ev);
        goto out;
    }
    /* group of each input series */
    for (size_t si = 0; si < ns; si++) {
        struct lb b;
        lb_from(&b, &in->s[si].lab);
        if (n->without) {
            for (size_t k = 0; k < n->nlabels; k++)
                lb_del(&b, n->labels[k]);
            lb_del(&b, "__name__");
        } else {
            lb_keep(&b, n->labels, n->nlabels);
        }
        struct tsdb_labels l;
        if (lb_make(ev, &b, &l))
            goto out;
        key_labels(&ev->key, &l);
        long id = smap_get(&groups, buf_head(&ev->key), buf_used(&ev->key), true);
        if (id < 0) {
            tsdb_labels_free(&l);
            oom(ev);
            goto out;
        }
        if ((size_t)id == ng) {
            if (ng == capg) {
                size_t nc = capg ? capg * 2 : 16;
                struct tsdb_labels *a = realloc(glab, nc * sizeof(*a));
                if (!a) {
                    tsdb_labels_free(&l);
                    oom(ev);
                    goto out;
                }
                glab = a;
                capg = nc;
            }
            glab[ng++] = l;
        } else {
            tsdb_labels_free(&l);
        }
        gid[si] = id;
    }
    enum promql_agg a = n->agg;
    if (a == PQ_TOPK || a == PQ_BOTTOMK || a == PQ_QUANTILE || a == PQ_COUNT_VALUES) {
        size_t *idx = malloc((ns + 1) * sizeof(*idx));
        double *vals = malloc((ns + 1) * sizeof(*vals));
        /* output index + 1 per input series (topk) or group (quantile) */
        size_t *outs = calloc(ns + 1, sizeof(*outs));
        double *sv = malloc((ns + 1) * sizeof(*sv));
        struct smap cv = { 0 };
        size_t *cvs = NULL;                               /* output index per counted value */
        size_t ncvs = 0, *order = NULL, *first = NULL;
        char label_val[400];
        if (!idx || !vals || !outs || !sv) {
            oom(ev);
            goto topk_out;
        }
        if (!group_members(ev, gid, ns, ng, &order, &first))
            goto topk_out;
        for (size_t i = 0; i < nst && !stopped(ev); i++) {
            double p = param ? param->sc[i] : 0;
            int64_t k = 0;
            if (a == PQ_TOPK || a == PQ_BOTTOMK) {
                if (!(p >= -9.2e18 && p <= 9.2e18)) {
                    fail(ev, PROMQL_EEXEC, "Scalar value %g overflows int64", p);
                    break;
                }
                k = (int64_t)p;
                if (k < 1)
                    continue;
            }
            for (size_t g = 0; g < ng; g++) {
                size_t m = 0;
                for (size_t j = first[g]; j < first[g + 1]; j++) {
                    size_t si = order[j];
                    if (in->s[si].ok[i]) {
                        idx[m] = si;
                        vals[m++] = in->s[si].v[i];
                    }
                }
                if (!m)
                    continue;
                if (a == PQ_QUANTILE) {
                    double x = quantile(p, vals, m);
                    if (!outs[g] && !(outs[g] = out_copy(ev, &o, &glab[g])))
                        break;
                    if (!out_put(ev, &o.val->s[outs[g] - 1], i, x))
                        break;
                    continue;
                }
                if (a == PQ_COUNT_VALUES) {
                    for (size_t j = 0; j < m; j++) {
                        promql_format_float(label_val, sizeof(label_val), vals[j]);
                        struct lb b;
                        lb_from(&b, &glab[g]);
                        lb_set(&b, n->kids[1]->str, label_val);
                        struct tsdb_labels l;
                        if (lb_make(ev, &b, &l))
                            break;
                        key_labels(&ev->key, &l);
                        long id = smap_get(&cv, buf_head(&ev->key), buf_used(&ev->key), true);
                        if (id < 0) {
                            tsdb_labels_free(&l);
                            oom(ev);
                            break;
                        }
                        if ((size_t)id == ncvs) {
                            size_t *na = realloc(cvs, (ncvs + 1) * sizeof(*na));
                            if (!na) {
                                tsdb_labels_free(&l);
                                oom(ev);
                                break;
                            }
                            cvs = na;
                            struct pq_ser *d = out_series(ev, &o, &l, true, false);
                            if (!d)
                                break;
                            cvs[ncvs++] = (size_t)(d - o.val->s);
                        } else {
                            tsdb_labels_free(&l);
                        }
                        struct pq_ser *d = &o.val->s[cvs[id]];
                        if (!put(ev, d, i, d->ok[i] ? d->v[i] + 1 : 1))
                            break;
                    }
                    if (ev->err)
                        break;
                    continue;
                }
                /* topk / bottomk: order by value (NaN last), ties by input order */
                for (size_t j = 0; j < m; j++)
                    sv[idx[j]] = a == PQ_TOPK ? vals[j] : -vals[j];
                qsort_r(idx, m, sizeof(*idx), cmp_size_by_value_desc, sv);
                for (size_t j = 0; j < m && (int64_t)j < k; j++) {
                    size_t si = idx[j];
                    if (!outs[si] && !(outs[si] = out_copy(ev, &o, &in->s[si].lab)))
                        break;
                    struct pq_ser *d = &o.val->s[outs[si] - 1];
                    if (!out_put(ev, d, i, in->s[si].v[i]))
                        break;
                }
                if (ev->err)
                    break;
            }
        }
topk_out:
        free(sv);
        free(order);
        free(first);
        free(idx);
        free(vals);
        free(outs);
        free(cvs);
        smap_free(&cv);
        goto out;
    }
    /* the running aggregations: state per group and step */
    size_t cells = ng * nst;
    acc = malloc((cells + 1) * sizeof(double));
    mean = malloc((cells + 1) * sizeof(double));
    cnt = calloc(cells + 1, sizeof(double));
    if (!acc || !mean || !cnt) {
        oom(ev);
        goto out;
    }
    for (size_t si = 0; si < ns && !stopped(ev); si++) {
        size_t g = (size_t)gid[si];
        double *A = acc + g * nst, *Mn = mean + g * nst, *C = cnt + g * nst;
        const struct pq_ser *s = &in->s[si];
        for (size_t i = 0; i < nst; i++) {
            if (!s->ok[i])
                continue;
            double x = s->v[i];
            if (C[i] == 0) {
                C[i] = 1;
                A[i] = (a == PQ_STDDEV || a == PQ_STDVAR) ? 0 : x;
                Mn[i] = x;
                continue;
            }
            C[i]++;
            switch (a) {
            case PQ_SUM: A[i] += x; break;
            case PQ_MAX: if (A[i] < x || isnan(A[i])) A[i] = x; break;
            case PQ_MIN: if (A[i] > x || isnan(A[i])) A[i] = x; break;
            case PQ_AVG:
                if (isinf(Mn[i])) {
                    if (isinf(x) && (Mn[i] > 0) == (x > 0))
                        break;
                    if (!isinf(x) && !isnan(x))
                        break;
                }
                Mn[i] += x / C[i] - Mn[i] / C[i];
                break;
            case PQ_STDDEV:
            case PQ_STDVAR: {
                double delta = x - Mn[i];
                Mn[i] += delta / C[i];
                A[i] += delta * (x - Mn[i]);
                break;
            }
            default:
                break;
            }
        }
    }
    for (size_t g = 0; g < ng && !ev->err; g++) {
        struct pq_ser *d = NULL;
        for (size_t i = 0; i < nst; i++) {
            size_t c = g * nst + i;
            if (cnt[c] == 0)
                continue;
            double x;
            switch (a) {
            case PQ_COUNT: x = cnt[c]; break;
            case PQ_GROUP: x = 1; break;
            case PQ_AVG: x = mean[c]; break;
            case PQ_STDVAR: x = acc[c] / cnt[c]; break;
            case PQ_STDDEV: x = sqrt(acc[c] / cnt[c]); break;
            default: x = acc[c]; break;
            }
            if (!d) {
                if (!(d = val_add(ev, o.val, &glab[g], true)))
                    break;
            }
            if (!put(ev, d, i, x))
                break;
        }
    }
out:
    res = outset_done(ev, &o);
    for (size_t g = 0; g < ng; g++)
        tsdb_labels_free(&glab[g]);
    free(glab);
    smap_free(&groups);
    free(gid);
    free(acc);
    free(mean);
    free(cnt);
    val_free(ev, param);
    val_free(ev, in);
    return res;
}

/* ---- binary operators ---- */

static bool is_cmp(enum promql_op op) { return op >= PQ_EQLC && op <= PQ_LTE; }

/* Prometheus's vectorElemBinop: the value, and whether a comparison holds. */
static double binop(enum promql_op op, double l, double r, bool *keep)
{
    *keep = true;
    switch (op) {
    case PQ_ADD: return l + r;
    case PQ_SUB: return l - r;
    case PQ_MUL: return l * r;
    case PQ_DIV: return l / r;
    case PQ_POW: return pow(l, r);
    case PQ_MOD: return fmod(l, r);
    case PQ_ATAN2: return atan2(l, r);
    case PQ_EQLC: *keep = l == r; return l;
    case PQ_NEQ: *keep = l != r; return l;
    case PQ_GTR: *keep = l > r; return l;
    case PQ_LSS: *keep = l < r; return l;
    case PQ_GTE: *keep = l >= r; return l;
    case PQ_LTE: *keep = l <= r; return l;
    default: return NAN;
    }
}

static bool drops_name(enum promql_op op)
{
    return op == PQ_ADD || op == PQ_SUB || op == PQ_MUL || op == PQ_DIV || op == PQ_POW || op == PQ_MOD;
}

static struct pq_val *binop_ss(struct promql_ev *ev, const struct promql_node *n, struct pq_val *l,
                               struct pq_val *r)
{
    for (size_t i = 0; i < ev->nsteps; i++) {
        bool keep;
        double x = binop(n->op, l->sc[i], r->sc[i], &keep);
        l->sc[i] = is_cmp(n->op) ? (keep ? 1 : 0) : x;
    }
    val_free(ev, r);
    return l;
}

/* vector op scalar (or scalar op vector when swap). */
static struct pq_val *binop_vs(struct promql_ev *ev, const struct promql_node *n, struct pq_val *vec,
                               struct pq_val *sc, bool swap)
{
    struct outset o;
    if (!outset_init(ev, &o))
        return NULL;
    bool drop = drops_name(n->op) || n->bool_mod;
    for (size_t si = 0; si < vec->ns && !stopped(ev); si++) {
        struct pq_ser *s = &vec->s[si], *d = NULL;
        for (size_t i = 0; i < ev->nsteps; i++) {
            if (!s->ok[i])
                continue;
            double lv = s->v[i], rv = sc->sc[i];
            if (swap) {
                double t = lv;
                lv = rv;
                rv = t;
            }
            bool keep;
            double x = binop(n->op, lv, rv, &keep);
            if (is_cmp(n->op) && swap)
                x = rv;
            if (n->bool_mod)
                x = keep ? 1 : 0;
            else if (!keep)
                continue;
            if (!d) {
                struct tsdb_labels lab;
                if (drop) {
                    if (drop_name(ev, &s->lab, &lab) || !(d = out_series(ev, &o, &lab, true, false)))
                        break;
                } else if (labels_copy(ev, &s->lab, &lab) || !(d = out_series(ev, &o, &lab, true, false))) {
                    break;
                }
            }
            if (!out_put(ev, d, i, x))
                break;
        }
    }
    return outset_done(ev, &o);
}

/* The matching signature of a series: the values of the on() labels, or of
 * all labels but the ignoring() ones and __name__. */
static void signature(struct buf *b, const struct promql_node *n, const struct tsdb_labels *l)
{
    buf_reset(b);
    buf_reserve(b, 1);
    for (uint16_t i = 0; i < l->n; i++) {
        const char *name = l->l[i].name;
        bool listed = in_list(n->labels, n->nlabels, name);
        if (n->on ? !listed : (listed || strcmp(name, "__name__") == 0))
            continue;
        buf_puts(b, name);
        buf_putc(b, '\xff');
        buf_puts(b, l->l[i].value);
        buf_putc(b, '\xfe');
    }
}

static long *signatures(struct promql_ev *ev, const struct promql_node *n, struct smap *m,
                        const struct pq_val *v)
{
    long *sig = malloc((v->ns + 1) * sizeof(*sig));
    if (!sig)
        return oom(ev);
    for (size_t i = 0; i < v->ns; i++) {
        signature(&ev->key, n, &v->s[i].lab);
        sig[i] = smap_get(m, buf_head(&ev->key), buf_used(&ev->key), true);
        if (sig[i] < 0) {
            free(sig);
            return oom(ev);
        }
    }
    return sig;
}

static bool any_at(const struct pq_val *v, size_t i)
{
    for (size_t k = 0; k < v->ns; k++)
        if (v->s[k].ok[i])
            return true;
    return false;
}

/* and, or, unless: series keep their labels. */
static struct pq_val *binop_set(struct promql_ev *ev, const struct promql_node *n, struct pq_val *l,
                                struct pq_val *r)
{
    struct smap m = { 0 };
    long *ls = signatures(ev, n, &m, l), *rs = ls ? signatures(ev, n, &m, r) : NULL;
    uint32_t *lstamp = calloc(m.n + 1, sizeof(*lstamp)), *rstamp = calloc(m.n + 1, sizeof(*rstamp));
    size_t *ld = calloc(l->ns + 1, sizeof(*ld)), *rd = calloc(r->ns + 1, sizeof(*rd));   /* output index + 1 */
    struct outset o;
    memset(&o, 0, sizeof(o));
    if (!ls || !rs || !lstamp || !rstamp || !ld || !rd || !outset_init(ev, &o)) {
        oom(ev);
        goto out;
    }
    for (size_t i = 0; i < ev->nsteps && !stopped(ev); i++) {
        uint32_t st = (uint32_t)i + 1;
        for (size_t k = 0; k < r->ns; k++)
            if (r->s[k].ok[i])
                rstamp[rs[k]] = st;
        for (size_t k = 0; k < l->ns; k++)
            if (l->s[k].ok[i])
                lstamp[ls[k]] = st;
        for (size_t k = 0; k < l->ns; k++) {
            if (!l->s[k].ok[i])
                continue;
            bool in_r = rstamp[ls[k]] == st;
            if ((n->op == PQ_AND && !in_r) || (n->op == PQ_UNLESS && in_r))
                continue;
            if (!ld[k] && !(ld[k] = out_copy(ev, &o, &l->s[k].lab)))
                break;
            if (!out_put(ev, &o.val->s[ld[k] - 1], i, l->s[k].v[i]))
                break;
        }
        if (n->op != PQ_OR || ev->err)
            continue;
        for (size_t k = 0; k < r->ns; k++) {
            if (!r->s[k].ok[i] || lstamp[rs[k]] == st)
                continue;
            if (!rd[k] && !(rd[k] = out_copy(ev, &o, &r->s[k].lab)))
                break;
            if (!out_put(ev, &o.val->s[rd[k] - 1], i, r->s[k].v[i]))
                break;
        }
    }
out:;
    struct pq_val *res = o.val ? outset_done(ev, &o) : NULL;
    smap_free(&m);
    free(ls);
    free(rs);
    free(lstamp);
    free(rstamp);
    free(ld);
    free(rd);
    val_free(ev, l);
    val_free(ev, r);
    return res;
}

/* The labels of a vector-matching result (Prometheus's resultMetric). */
static int result_labels(struct promql_ev *ev, const struct promql_node *n, const struct tsdb_labels *l,
                         const struct tsdb_labels *r, struct tsdb_labels *out)
{
    struct lb b;
    lb_from(&b, l);
    if (drops_name(n->op) || n->bool_mod)
        lb_del(&b, "__name__");
    if (n->card == 0) {
        if (n->on) {
            lb_keep(&b, n->labels, n->nlabels);
        } else {
            for (size_t i = 0; i < n->nlabels; i++)
                lb_del(&b, n->labels[i]);
        }
    }
    for (size_t i = 0; i < n->ninclude; i++) {
        const char *v = tsdb_labels_get(r, n->include[i]);
        if (v && *v)
            lb_set(&b, n->include[i], v);
        else
            lb_del(&b, n->include[i]);
    }
    return lb_make(ev, &b, out);
}

static struct pq_val *binop_vv(struct promql_ev *ev, const struct promql_node *n, struct pq_val *l,
                               struct pq_val *r)
{
    if (n->op >= PQ_AND)
        return binop_set(ev, n, l, r);
    bool swapped = n->card == 2;
    struct pq_val *L = swapped ? r : l, *R = swapped ? l : r;   /* R is the "one" side */
    struct smap m = { 0 };
    long *ls = signatures(ev, n, &m, L), *rs = ls ? signatures(ev, n, &m, R) : NULL;
    uint32_t *rstamp = calloc(m.n + 1, sizeof(*rstamp)), *mstamp = calloc(m.n + 1, sizeof(*mstamp));
    size_t *rat = calloc(m.n + 1, sizeof(*rat));
    size_t *cache_r = calloc(L->ns + 1, sizeof(*cache_r));
    size_t *cache_o = calloc(L->ns + 1, sizeof(*cache_o));
    struct outset o;
    memset(&o, 0, sizeof(o));
    struct buf eb = BUF_INIT;
    if (!ls || !rs || !rstamp || !mstamp || !rat || !cache_r || !cache_o || !outset_init(ev, &o)) {
        oom(ev);
        goto out;
    }
    for (size_t i = 0; i < ev->nsteps && !stopped(ev); i++) {
        if (!any_at(L, i) || !any_at(R, i))
            continue;
        uint32_t st = (uint32_t)i + 1;
        for (size_t k = 0; k < R->ns; k++) {
            if (!R->s[k].ok[i])
                continue;
            long sg = rs[k];
            if (rstamp[sg] == st) {
                struct lb b;
                lb_from(&b, &R->s[k].lab);
                if (n->on)
                    lb_keep(&b, n->labels, n->nlabels);
                else {
                    for (size_t j = 0; j < n->nlabels; j++)
                        lb_del(&b, n->labels[j]);
                    lb_del(&b, "__name__");
                }
                struct tsdb_labels ml;
                if (lb_make(ev, &b, &ml))
                    break;
                buf_reset(&eb);
                labels_str(&eb, &ml);
                buf_puts(&eb, " on the ");
                buf_puts(&eb, swapped ? "left" : "right");
                buf_puts(&eb, " hand-side of the operation: [");
                labels_str(&eb, &R->s[k].lab);
                buf_puts(&eb, ", ");
                labels_str(&eb, &R->s[rat[sg]].lab);
                buf_putc(&eb, 0);
                tsdb_labels_free(&ml);
                fail(ev, PROMQL_EEXEC, "found duplicate series for the match group %s];many-to-many matching not allowed: matching labels must be unique on one side",
                     buf_head(&eb));
                break;
            }
            rstamp[sg] = st;
            rat[sg] = k;
        }
        if (ev->err)
            break;
        for (size_t k = 0; k < L->ns; k++) {
            if (!L->s[k].ok[i])
                continue;
            long sg = ls[k];
            if (rstamp[sg] != st)
                continue;
            size_t rk = rat[sg];
            double vl = L->s[k].v[i], vr = R->s[rk].v[i];
            if (swapped) {
                double t = vl;
                vl = vr;
                vr = t;
            }
            bool keep;
            double x = binop(n->op, vl, vr, &keep);
            if (n->bool_mod)
                x = keep ? 1 : 0;
            else if (!keep)
                continue;
            if (n->card == 0) {
                if (mstamp[sg] == st) {
                    fail(ev, PROMQL_EEXEC, "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
                    break;
                }
                mstamp[sg] = st;
            }
            if (!cache_o[k] || cache_r[k] != rk) {
                struct tsdb_labels lab;
                if (result_labels(ev, n, &L->s[k].lab, &R->s[rk].lab, &lab))
                    break;
                struct pq_ser *d = out_series(ev, &o, &lab, true, false);
                if (!d)
                    break;
                cache_o[k] = (size_t)(d - o.val->s) + 1;
                cache_r[k] = rk;
            }
            struct pq_ser *d = &o.val->s[cache_o[k] - 1];
            if (d->ok[i]) {
                fail(ev, PROMQL_EEXEC, n->card ? "multiple matches for labels: grouping labels must ensure unique matches"
                                               : "vector cannot contain metrics with the same labelset");
                break;
            }
            if (!put(ev, d, i, x))
                break;
        }
    }
out:;
    struct pq_val *res = o.val ? outset_done(ev, &o) : NULL;
    buf_free(&eb);
    smap_free(&m);
    free(ls);
    free(rs);
    free(rstamp);
    free(mstamp);
    free(rat);
    free(cache_r);
    free(cache_o);
    val_free(ev, l);
    val_free(ev, r);
    return res;
}

static struct pq_val *eval_bin(struct promql_ev *ev, const struct promql_node *n)
{
    struct pq_val *l = eval(ev, n->kids[0]);
    if (!l)
        return NULL;
    struct pq_val *r = eval(ev, n->kids[1]);
    if (!r) {
        val_free(ev, l);
        return NULL;
    }
    if (l->type == PROMQL_SCALAR && r->type == PROMQL_SCALAR)
        return binop_ss(ev, n, l, r);
    if (l->type == PROMQL_VECTOR && r->type == PROMQL_VECTOR)
        return binop_vv(ev, n, l, r);
    struct pq_val *res = l->type == PROMQL_VECTOR ? binop_vs(ev, n, l, r, false)
                                                  : binop_vs(ev, n, r, l, true);
    val_free(ev, l);
    val_free(ev, r);
    return res;
}

static struct pq_val *eval_neg(struct promql_ev *ev, const struct promql_node *n)
{
    struct pq_val *v = eval(ev, n->kids[0]);
    if (!v)
        return NULL;
    if (v->type == PROMQL_SCALAR) {
        for (size_t i = 0; i < ev->nsteps; i++)
            v->sc[i] = -v->sc[i];
        return v;
    }
    struct outset o;
    if (!outset_init(ev, &o)) {
        val_free(ev, v);
        return NULL;
    }
    for (size_t si = 0; si < v->ns && !ev->err; si++) {
        struct tsdb_labels lab;
        if (drop_name(ev, &v->s[si].lab, &lab))
            break;
        struct pq_ser *d = out_series(ev, &o, &lab, true, true);
        if (!d)
            break;
        for (size_t i = 0; i < ev->nsteps; i++)
            if (v->s[si].ok[i] && !put(ev, d, i, -v->s[si].v[i]))
                break;
    }
    val_free(ev, v);
    return outset_done(ev, &o);
}

static struct pq_val *eval(struct promql_ev *ev, const struct promql_node *n)
{
    if (stopped(ev))
        return NULL;
    switch (n->kind) {
    case PQ_NUM: {
        struct pq_val *v = val_new(ev, PROMQL_SCALAR);
        if (v)
            for (size_t i = 0; i < ev->nsteps; i++)
                v->sc[i] = n->num;
        return v;
    }
    case PQ_STR: {
        struct pq_val *v = val_new(ev, PROMQL_STRING);
        if (v && !(v->str = strdup(n->str))) {
            val_free(ev, v);
            return oom(ev);
        }
        return v;
    }
    case PQ_PAREN: return eval(ev, n->kids[0]);
    case PQ_VSEL: return eval_vsel(ev, n, false);
    case PQ_CALL: return eval_call(ev, n);
    case PQ_AGG: return eval_agg(ev, n);
    case PQ_BIN: return eval_bin(ev, n);
    case PQ_NEG: return eval_neg(ev, n);
    case PQ_MSEL:
    case PQ_SUBQ:
        return fail(ev, PROMQL_EBAD, "range vector not allowed here");
    }
    return NULL;
}

/* ---- the entry point ---- */

struct top_matrix {
    struct promql_result *res;
};

static bool collect_matrix(struct promql_ev *ev, const struct raw *r, const struct win *w, void *arg)
{
    struct top_matrix *tm = arg;
    size_t lo = 0, hi = 0;
    int64_t ws, we;
    window(ev, r, w, 0, &lo, &hi, &ws, &we);
    if (hi == lo)
        return true;
    struct promql_result *res = tm->res;
    struct promql_series *a = realloc(res->s, (res->ns + 1) * sizeof(*a));
    if (!a) {
        oom(ev);
        return false;
    }
    res->s = a;
    struct promql_series *s = &a[res->ns];
    memset(s, 0, sizeof(*s));
    if (labels_copy(ev, r->lab, &s->labels))
        return false;
    res->ns++;
    s->n = hi - lo;
    s->t = malloc(s->n * sizeof(*s->t));
    s->v = malloc(s->n * sizeof(*s->v));
    if (!s->t || !s->v) {
        oom(ev);
        return false;
    }
    memcpy(s->t, r->t + lo, s->n * sizeof(*s->t));
    memcpy(s->v, r->v + lo, s->n * sizeof(*s->v));
    return charge(ev, s->n);
}

static int cmp_result_series(const void *a, const void *b)
{
    const struct tsdb_labels *x = &((const struct promql_series *)a)->labels;
    const struct tsdb_labels *y = &((const struct promql_series *)b)->labels;
    for (uint16_t i = 0; i < x->n && i < y->n; i++) {
        int c = strcmp(x->l[i].name, y->l[i].name);
        if (c)
            return c;
        c = strcmp(x->l[i].value, y->l[i].value);
        if (c)
            return c;
    }
    return (int)x->n - (int)y->n;
}

static int cmp_result_value(const void *a, const void *b, void *arg)
{
    int sort_dir = *(const int *)arg;
    double x = ((const struct promql_series *)a)->v[0], y = ((const struct promql_series *)b)->v[0];
    if (isnan(x))
        return isnan(y) ? 0 : (sort_dir > 0 ? -1 : 1);
    if (isnan(y))
        return sort_dir > 0 ? 1 : -1;
    return sort_dir > 0 ? (x < y ? -1 : x > y) : (x > y ? -1 : x < y);
}

int promql_eval(const struct tsdb *db, const struct promql_node *n, int64_t start, int64_t end,
                int64_t step, const struct promql_opts *o, struct promql_result *res, char *err,
                size_t errlen)
{
    memset(res, 0, sizeof(*res));
    bool instant = step == 0;
    if (instant)
        end = start;
    if (end < start || (!instant && step <= 0)) {
        snprintf(err, errlen, "end timestamp must not be before start time");
        return PROMQL_EBAD;
    }
    struct sel_keeper keeper = { NULL, 0, 0 };
    struct promql_ev ev = {
        .db = db, .start = start, .end = end, .step = instant ? 1 : step,
        .qstart = start, .qend = end,
        .lookback = o && o->lookback_ms ? o->lookback_ms : DEFAULT_LOOKBACK,
        .default_step = o && o->default_step_ms > 0 ? o->default_step_ms : 60000,
        .max_samples = o && o->max_samples ? o->max_samples : DEFAULT_MAX_SAMPLES,
        .deadline = o ? o->deadline_ns : 0,
        .msg = err, .msglen = errlen,
        .keeper = &keeper,
    };
    ev.nsteps = instant ? 1 : (size_t)((end - start) / step) + 1;
    if (ev.nsteps > PROMQL_MAX_STEPS * 10ull) {
        snprintf(err, errlen, "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
        return PROMQL_EBAD;
    }
    res->t = start;
    const struct promql_node *top = unparen(n);
    if (top->type == PROMQL_MATRIX) {
        if (!instant) {
            snprintf(err, errlen, "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector");
            return PROMQL_EBAD;
        }
        struct top_matrix tm = { res };
        res->type = PROMQL_MATRIX;
        for_each_range(&ev, top, collect_matrix, &tm);
        if (!ev.err && res->ns > 1)
            qsort(res->s, res->ns, sizeof(*res->s), cmp_result_series);
    } else {
        if (!instant && top->type == PROMQL_STRING) {
            snprintf(err, errlen, "invalid expression type \"string\" for range query, must be Scalar or instant Vector");
            return PROMQL_EBAD;
        }
        struct pq_val *v = eval(&ev, n);
        if (v && v->type == PROMQL_SCALAR && instant) {
            res->type = PROMQL_SCALAR;
            res->scalar = v->sc[0];
        } else if (v && v->type == PROMQL_STRING) {
            res->type = PROMQL_STRING;
            res->str = v->str;
            v->str = NULL;
        } else if (v) {
            res->type = instant ? PROMQL_VECTOR : PROMQL_MATRIX;
            if (v->type == PROMQL_SCALAR) {
                /* a range query of a scalar: one series without labels */
                res->s = calloc(1, sizeof(*res->s));
                if (res->s) {
                    res->ns = 1;
                    res->s[0].t = malloc(ev.nsteps * sizeof(int64_t));
                    res->s[0].v = malloc(ev.nsteps * sizeof(double));
                    if (res->s[0].t && res->s[0].v) {
                        for (size_t i = 0; i < ev.nsteps; i++) {
                            res->s[0].t[i] = step_time(&ev, i);
                            res->s[0].v[i] = v->sc[i];
                        }
                        res->s[0].n = ev.nsteps;
                    } else {
                        oom(&ev);
                    }
                } else {
                    oom(&ev);
                }
            } else {
                res->s = calloc(v->ns + 1, sizeof(*res->s));
                if (!res->s)
                    oom(&ev);
                for (size_t si = 0; res->s && si < v->ns; si++) {
                    struct pq_ser *s = &v->s[si];
                    if (!s->npresent)
                        continue;
                    struct promql_series *d = &res->s[res->ns];
                    if (s->own) {
                        d->labels = s->lab;
                        s->own = false;
                    } else if (labels_copy(&ev, &s->lab, &d->labels)) {
                        break;
                    }
                    res->ns++;
                    d->t = malloc(s->npresent * sizeof(int64_t));
                    d->v = malloc(s->npresent * sizeof(double));
                    if (!d->t || !d->v) {
                        oom(&ev);
                        break;
                    }
                    for (size_t i = 0; i < ev.nsteps; i++)
                        if (s->ok[i]) {
                            d->t[d->n] = step_time(&ev, i);
                            d->v[d->n++] = s->v[i];
                        }
                }
                if (!ev.err && res->ns > 1) {
                    if (instant && v->sort) {
                        qsort_r(res->s, res->ns, sizeof(*res->s), cmp_result_value, &v->sort);
                    } else if (!instant || top->kind != PQ_AGG ||
                               (top->agg != PQ_TOPK && top->agg != PQ_BOTTOMK)) {
                        qsort(res->s, res->ns, sizeof(*res->s), cmp_result_series);
                    }
                }
            }
        }
        val_free(&ev, v);
    }
    res->samples = ev.peak;
    for (size_t i = 0; i < keeper.nkeep; i++)
        tsdb_select_free(keeper.keep[i].s, keeper.keep[i].n);
    free(keeper.keep);
    buf_free(&ev.key);
    free(ev.rt);
    free(ev.rv);
    if (ev.err) {
        promql_result_free(res);
        return ev.err;
    }
    return 0;
}

void promql_result_free(struct promql_result *res)
{
    for (size_t i = 0; i < res->ns; i++) {
        tsdb_labels_free(&res->s[i].labels);
        free(res->s[i].t);
        free(res->s[i].v);
    }
    free(res->s);
    free(res->str);
    memset(res, 0, sizeof(*res));
}
