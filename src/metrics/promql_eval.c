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
 *
 * The evaluator's other parts: promql_func.c (functions over range vectors,
 * instant vectors and scalars), promql_agg.c (aggregation), promql_binop.c
 * (binary operators and vector matching); promql_internal.h joins them.
 */
#include "promql_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- values ---- */

void *promql__fail(struct promql_ev *ev, int code, const char *fmt, ...)
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

void *promql__oom(struct promql_ev *ev)
{
    return promql__fail(ev, PROMQL_EEXEC, "out of memory");
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* True when evaluation must stop (an error, or the deadline passed). */
bool promql__stopped(struct promql_ev *ev)
{
    if (ev->err)
        return true;
    if (ev->deadline && (++ev->ticks & 63) == 0 && mono_ns() > ev->deadline)
        promql__fail(ev, PROMQL_ETIMEOUT, "query timed out in query execution");
    return ev->err != 0;
}



/* The time a selector or subquery is evaluated at for step i (before offset). */
static int64_t ref_time(const struct promql_ev *ev, const struct promql_node *n, size_t i)
{
    switch (n->at) {
    case PQ_AT_TIME: return n->at_ms;
    case PQ_AT_START: return ev->qstart;
    case PQ_AT_END: return ev->qend;
    default: return promql__step_time(ev, i);
    }
}

struct pq_val *promql__val_new(struct promql_ev *ev, enum promql_type t)
{
    struct pq_val *v = calloc(1, sizeof(*v));
    if (!v)
        return promql__oom(ev);
    v->type = t;
    if (t == PROMQL_SCALAR) {
        v->sc = calloc(ev->nsteps, sizeof(double));
        if (!v->sc) {
            free(v);
            return promql__oom(ev);
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

void promql__val_free(struct promql_ev *ev, struct pq_val *v)
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
struct pq_ser *promql__val_add(struct promql_ev *ev, struct pq_val *v, struct tsdb_labels *lab, bool own)
{
    if (v->ns == v->caps) {
        size_t nc = v->caps ? v->caps * 2 : 16;
        struct pq_ser *a = realloc(v->s, nc * sizeof(*a));
        if (!a)
            return promql__oom(ev);
        v->s = a;
        v->caps = nc;
    }
    struct pq_ser *s = &v->s[v->ns];
    memset(s, 0, sizeof(*s));
    s->v = calloc(ev->nsteps, sizeof(double) + 1);
    if (!s->v)
        return promql__oom(ev);
    s->ok = (uint8_t *)(s->v + ev->nsteps);
    s->lab = *lab;
    s->own = own;
    if (own)
        memset(lab, 0, sizeof(*lab));
    v->ns++;
    return s;
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

void promql__smap_free(struct smap *m)
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
long promql__smap_get(struct smap *m, const char *k, size_t kl, bool insert)
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

void promql__key_labels(struct buf *b, const struct tsdb_labels *l)
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

void promql__lb_from(struct lb *b, const struct tsdb_labels *l)
{
    b->n = l->n;
    if (l->n)
        memcpy(b->p, l->l, l->n * sizeof(b->p[0]));
}

void promql__lb_del(struct lb *b, const char *name)
{
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->p[i].name, name) == 0) {
            b->p[i] = b->p[--b->n];
            return;
        }
}

void promql__lb_set(struct lb *b, const char *name, const char *value)
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

bool promql__in_list(char **l, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i], s) == 0)
            return true;
    return false;
}

void promql__lb_keep(struct lb *b, char **names, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (promql__in_list(names, n, b->p[i].name))
            b->p[k++] = b->p[i];
    b->n = k;
}

int promql__lb_make(struct promql_ev *ev, struct lb *b, struct tsdb_labels *out)
{
    int r = tsdb_labels_make(out, b->p, b->n);
    if (r) {
        promql__fail(ev, PROMQL_EEXEC, r == -ENOMEM ? "out of memory" : "bad label set");
        return -1;
    }
    return 0;
}

/* An owned copy of a label set. */
int promql__labels_copy(struct promql_ev *ev, const struct tsdb_labels *l, struct tsdb_labels *out)
{
    struct lb b;
    promql__lb_from(&b, l);
    return promql__lb_make(ev, &b, out);
}

/* Prometheus's labels.String(): {a="b", c="d"}. */
void promql__labels_str(struct buf *b, const struct tsdb_labels *l)
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

/* The output series for a label set (taken when own; borrowed otherwise). With
 * strict, an existing one is an error. */
struct pq_ser *promql__out_series(struct promql_ev *ev, struct outset *o, struct tsdb_labels *lab,
                                 bool own, bool strict)
{
    promql__key_labels(&ev->key, lab);
    long id = promql__smap_get(&o->map, buf_head(&ev->key), buf_used(&ev->key), true);
    if (id == -2) {
        if (own)
            tsdb_labels_free(lab);
        return promql__oom(ev);
    }
    if ((size_t)id < o->val->ns) {
        if (own)
            tsdb_labels_free(lab);
        if (strict)
            return promql__fail(ev, PROMQL_EEXEC, "vector cannot contain metrics with the same labelset");
        return &o->val->s[id];
    }
    return promql__val_add(ev, o->val, lab, own);
}

/* The output series (index + 1) for a copy of labels l; 0 after an error. */
size_t promql__out_copy(struct promql_ev *ev, struct outset *o, const struct tsdb_labels *l)
{
    struct tsdb_labels lab;
    if (promql__labels_copy(ev, l, &lab))
        return 0;
    struct pq_ser *d = promql__out_series(ev, o, &lab, true, false);
    return d ? (size_t)(d - o->val->s) + 1 : 0;
}

bool promql__out_put(struct promql_ev *ev, struct pq_ser *s, size_t i, double x)
{
    if (s->ok[i]) {
        promql__fail(ev, PROMQL_EEXEC, "vector cannot contain metrics with the same labelset");
        return false;
    }
    return promql__put(ev, s, i, x);
}

bool promql__outset_init(struct promql_ev *ev, struct outset *o)
{
    memset(o, 0, sizeof(*o));
    o->val = promql__val_new(ev, PROMQL_VECTOR);
    return o->val != NULL;
}

/* Ends an output set: returns its value, or NULL (freed) after an error. */
struct pq_val *promql__outset_done(struct promql_ev *ev, struct outset *o)
{
    promql__smap_free(&o->map);
    if (ev->err) {
        promql__val_free(ev, o->val);
        return NULL;
    }
    return o->val;
}

/* A copy of l without __name__ (owned). */
int promql__drop_name(struct promql_ev *ev, const struct tsdb_labels *l, struct tsdb_labels *out)
{
    struct lb b;
    promql__lb_from(&b, l);
    promql__lb_del(&b, "__name__");
    return promql__lb_make(ev, &b, out);
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
            promql__oom(ev);
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
                promql__oom(ev);
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
struct pq_val *promql__eval_vsel(struct promql_ev *ev, const struct promql_node *n, bool want_ts)
{
    struct pq_val *out = promql__val_new(ev, PROMQL_VECTOR);
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
    for (size_t si = 0; si < k && !promql__stopped(ev); si++) {
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
                if (!(s = promql__val_add(ev, out, &l, false)))
                    break;
            }
            if (!promql__put(ev, s, i, want_ts ? (double)ev->rt[j - 1] / 1000.0 : ev->rv[j - 1]))
                break;
        }
    }
    if (ev->err) {
        promql__val_free(ev, out);
        return NULL;
    }
    return out;
}

/* ---- range vectors, streamed one series at a time ---- */


const struct promql_node *promql__unparen(const struct promql_node *n)
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
        return promql__val_new(ev, PROMQL_VECTOR);
    if (ns > 10 * 1000 * 1000 || ns > ev->max_samples)
        return promql__fail(ev, PROMQL_EEXEC, "query processing would load too many samples into memory in query execution");
    struct promql_ev sub = *ev;
    sub.start = s;
    sub.end = s + (int64_t)(ns - 1) * step;
    sub.step = step;
    sub.nsteps = ns;
    sub.key = BUF_INIT;
    sub.rt = NULL;
    sub.rv = NULL;
    sub.rcap = 0;
    struct pq_val *v = promql__eval(&sub, n->kids[0]);
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
bool promql__for_each_range(struct promql_ev *ev, const struct promql_node *n, raw_fn fn, void *arg)
{
    n = promql__unparen(n);
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
        for (size_t si = 0; si < k && !promql__stopped(ev); si++) {
            size_t nr = load_raw(ev, ss[si], lo, hi, false);
            if (ev->err)
                break;
            if (!promql__charge(ev, nr))
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
        promql__fail(ev, PROMQL_EBAD, "expected a range vector");
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
        promql__oom(ev);
    } else {
        for (size_t si = 0; si < v->ns && !promql__stopped(ev); si++) {
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
    promql__val_free(ev, v);
    return !ev->err;
}

/* Moves [*lo, *hi) to the samples of step i's window. */
void promql__window(const struct promql_ev *ev, const struct raw *r, const struct win *w, size_t i,
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

struct pq_val *promql__eval(struct promql_ev *ev, const struct promql_node *n)
{
    if (promql__stopped(ev))
        return NULL;
    switch (n->kind) {
    case PQ_NUM: {
        struct pq_val *v = promql__val_new(ev, PROMQL_SCALAR);
        if (v)
            for (size_t i = 0; i < ev->nsteps; i++)
                v->sc[i] = n->num;
        return v;
    }
    case PQ_STR: {
        struct pq_val *v = promql__val_new(ev, PROMQL_STRING);
        if (v && !(v->str = strdup(n->str))) {
            promql__val_free(ev, v);
            return promql__oom(ev);
        }
        return v;
    }
    case PQ_PAREN: return promql__eval(ev, n->kids[0]);
    case PQ_VSEL: return promql__eval_vsel(ev, n, false);
    case PQ_CALL: return promql__eval_call(ev, n);
    case PQ_AGG: return promql__eval_agg(ev, n);
    case PQ_BIN: return promql__eval_bin(ev, n);
    case PQ_NEG: return promql__eval_neg(ev, n);
    case PQ_MSEL:
    case PQ_SUBQ:
        return promql__fail(ev, PROMQL_EBAD, "range vector not allowed here");
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
    promql__window(ev, r, w, 0, &lo, &hi, &ws, &we);
    if (hi == lo)
        return true;
    struct promql_result *res = tm->res;
    struct promql_series *a = realloc(res->s, (res->ns + 1) * sizeof(*a));
    if (!a) {
        promql__oom(ev);
        return false;
    }
    res->s = a;
    struct promql_series *s = &a[res->ns];
    memset(s, 0, sizeof(*s));
    if (promql__labels_copy(ev, r->lab, &s->labels))
        return false;
    res->ns++;
    s->n = hi - lo;
    s->t = malloc(s->n * sizeof(*s->t));
    s->v = malloc(s->n * sizeof(*s->v));
    if (!s->t || !s->v) {
        promql__oom(ev);
        return false;
    }
    memcpy(s->t, r->t + lo, s->n * sizeof(*s->t));
    memcpy(s->v, r->v + lo, s->n * sizeof(*s->v));
    return promql__charge(ev, s->n);
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
    const struct promql_node *top = promql__unparen(n);
    if (top->type == PROMQL_MATRIX) {
        if (!instant) {
            snprintf(err, errlen, "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector");
            return PROMQL_EBAD;
        }
        struct top_matrix tm = { res };
        res->type = PROMQL_MATRIX;
        promql__for_each_range(&ev, top, collect_matrix, &tm);
        if (!ev.err && res->ns > 1)
            qsort(res->s, res->ns, sizeof(*res->s), cmp_result_series);
    } else {
        if (!instant && top->type == PROMQL_STRING) {
            snprintf(err, errlen, "invalid expression type \"string\" for range query, must be Scalar or instant Vector");
            return PROMQL_EBAD;
        }
        struct pq_val *v = promql__eval(&ev, n);
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
                            res->s[0].t[i] = promql__step_time(&ev, i);
                            res->s[0].v[i] = v->sc[i];
                        }
                        res->s[0].n = ev.nsteps;
                    } else {
                        promql__oom(&ev);
                    }
                } else {
                    promql__oom(&ev);
                }
            } else {
                res->s = calloc(v->ns + 1, sizeof(*res->s));
                if (!res->s)
                    promql__oom(&ev);
                for (size_t si = 0; res->s && si < v->ns; si++) {
                    struct pq_ser *s = &v->s[si];
                    if (!s->npresent)
                        continue;
                    struct promql_series *d = &res->s[res->ns];
                    if (s->own) {
                        d->labels = s->lab;
                        s->own = false;
                    } else if (promql__labels_copy(&ev, &s->lab, &d->labels)) {
                        break;
                    }
                    res->ns++;
                    d->t = malloc(s->npresent * sizeof(int64_t));
                    d->v = malloc(s->npresent * sizeof(double));
                    if (!d->t || !d->v) {
                        promql__oom(&ev);
                        break;
                    }
                    for (size_t i = 0; i < ev.nsteps; i++)
                        if (s->ok[i]) {
                            d->t[d->n] = promql__step_time(&ev, i);
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
        promql__val_free(&ev, v);
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
