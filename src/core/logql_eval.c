/* logql_eval.c - LogQL evaluation: range aggregations over log pipelines, vector
 * aggregations, binary operators with vector matching, label_replace, vector(),
 * and log queries.
 *
 * Every metric sub-expression evaluates to a struct val: a scalar (a value per
 * step) or a list of series (an optional value per step). Range aggregations
 * first gather each output series' samples over the whole query span
 * (start - offset - range, end - offset], sorted by time, then slide the window
 * (t - range, t] over them step by step.
 */
#include "core/logql_eval.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lq__range_fn_name(enum lq_range_fn fn);
const char *lq__vagg_name(enum lq_vagg_op op);

/* ---- label sets ---- */

uint64_t lq_labels_hash(const struct lq_label *l, int n)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        for (const char *p = l[i].name; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
        for (const char *p = l[i].value; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        h = (h ^ 0xfe) * 1099511628211ULL;
    }
    return h;
}

static bool labels_eq(const struct lq_label *a, int na, const struct lq_label *b, int nb)
{
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i].name, b[i].name) || strcmp(a[i].value, b[i].value))
            return false;
    return true;
}

/* One allocation: the array, then the strings. */
static struct lq_label *labels_dup(const struct lq_label *l, int n)
{
    size_t sz = (size_t)(n ? n : 1) * sizeof(*l);
    for (int i = 0; i < n; i++)
        sz += strlen(l[i].name) + strlen(l[i].value) + 2;
    struct lq_label *out = malloc(sz);
    if (!out)
        return NULL;
    char *p = (char *)(out + (n ? n : 1));
    for (int i = 0; i < n; i++) {
        size_t a = strlen(l[i].name) + 1, b = strlen(l[i].value) + 1;
        memcpy(p, l[i].name, a);
        out[i].name = p;
        p += a;
        memcpy(p, l[i].value, b);
        out[i].value = p;
        p += b;
    }
    return out;
}

void lq_labels_string(struct buf *b, const struct lq_label *l, int n)
{
    buf_putc(b, '{');
    for (int i = 0; i < n; i++) {
        if (i)
            buf_puts(b, ", ");
        buf_puts(b, l[i].name);
        buf_putc(b, '=');
        buf_go_quote(b, l[i].value);
    }
    buf_putc(b, '}');
}

static int label_name_cmp(const void *a, const void *b)
{
    return strcmp(((const struct lq_label *)a)->name, ((const struct lq_label *)b)->name);
}

static int label_find(const struct lq_label *l, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(l[i].name, name) == 0)
            return i;
    return -1;
}

static bool name_in(const char *name, const char **names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* ---- values ---- */

struct val {
    bool scalar;
    double *sv;
    struct lq_series *s;
    int n, cap;
};

struct ev {
    const struct lq_params *p;
    const struct lq_source *src;
    int nsteps;
    char *err;
    size_t errlen;
    struct lq_stats *stats;
    uint64_t budget;                /* entries left to read; 0 unlimited */
};

static int ev_fail(struct ev *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ev_fail(struct ev *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* Every 4096 entries: is the query past its deadline? */
static bool past_deadline(struct ev *e)
{
    if (!e->p->deadline_ns || (e->stats->entries & 4095) || cairn_now_ns() < e->p->deadline_ns)
        return false;
    ev_fail(e, -ETIMEDOUT, "query timed out: narrow the time range or the stream selector");
    return true;
}

static void series_free(struct lq_series *s)
{
    free(s->l);
    free(s->v);
    free(s->has);
    memset(s, 0, sizeof(*s));
}

static void val_free(struct val *v)
{
    free(v->sv);
    for (int i = 0; i < v->n; i++)
        series_free(&v->s[i]);
    free(v->s);
    memset(v, 0, sizeof(*v));
}

/* Appends a series with labels l (copied) and no points. */
static struct lq_series *val_add(struct ev *e, struct val *v, const struct lq_label *l, int nl, uint64_t h)
{
    if (e->p->max_series && (uint64_t)v->n >= e->p->max_series) {
        ev_fail(e, -E2BIG, "maximum of series (%llu) reached for a single query", (unsigned long long)e->p->max_series);
        return NULL;
    }
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 16;
        struct lq_series *s = realloc(v->s, (size_t)cap * sizeof(*s));
        if (!s)
            goto oom;
        v->s = s;
        v->cap = cap;
    }
    struct lq_series *s = &v->s[v->n];
    memset(s, 0, sizeof(*s));
    s->l = labels_dup(l, nl);
    s->nl = nl;
    s->h = h;
    s->v = calloc((size_t)e->nsteps, sizeof(double));
    s->has = calloc((size_t)e->nsteps, 1);
    if (!s->l || !s->v || !s->has) {
        series_free(s);
        goto oom;
    }
    v->n++;
    return s;
oom:
    ev_fail(e, -ENOMEM, "out of memory");
    return NULL;
}

/* A small hash index from a label-set hash to series positions. */
struct hidx {
    uint64_t *h;
    int *pos;
    size_t cap, n;
};

static void hidx_free(struct hidx *x)
{
    free(x->h);
    free(x->pos);
    memset(x, 0, sizeof(*x));
}

static int hidx_grow(struct hidx *x)
{
    size_t cap = x->cap ? x->cap * 2 : 64;
    uint64_t *h = calloc(cap, sizeof(*h));
    int *pos = malloc(cap * sizeof(*pos));
    if (!h || !pos) {
        free(h);
        free(pos);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cap; i++)
        pos[i] = -1;
    for (size_t i = 0; i < x->cap; i++) {
        if (x->pos[i] < 0)
            continue;
        size_t j = x->h[i] & (cap - 1);
        while (pos[j] >= 0)
            j = (j + 1) & (cap - 1);
        h[j] = x->h[i];
        pos[j] = x->pos[i];
    }
    free(x->h);
    free(x->pos);
    x->h = h;
    x->pos = pos;
    x->cap = cap;
    return 0;
}

/* Iterates the positions stored under hash h: *it starts at 0; returns -1 at the end. */
static int hidx_next(const struct hidx *x, uint64_t h, size_t *it)
{
    if (!x->cap)
        return -1;
    size_t j = (*it ? *it : (h & (x->cap - 1)) + 1) - 1;
    while (x->pos[j] >= 0) {
        size_t cur = j;
        j = (j + 1) & (x->cap - 1);
        if (x->h[cur] == h) {
            *it = j + 1;
            return x->pos[cur];
        }
    }
    *it = 0;
    return -1;
}

static int hidx_put(struct hidx *x, uint64_t h, int pos)
{
    if ((x->n + 1) * 2 > x->cap && hidx_grow(x))
        return -ENOMEM;
    size_t j = h & (x->cap - 1);
    while (x->pos[j] >= 0)
        j = (j + 1) & (x->cap - 1);
    x->h[j] = h;
    x->pos[j] = pos;
    x->n++;
    return 0;
}

/* Finds or adds the series with labels l in v. */
static struct lq_series *val_get(struct ev *e, struct val *v, struct hidx *x, const struct lq_label *l, int nl)
{
    uint64_t h = lq_labels_hash(l, nl);
    size_t it = 0;
    int p;
    while ((p = hidx_next(x, h, &it)) >= 0)
        if (labels_eq(v->s[p].l, v->s[p].nl, l, nl))
            return &v->s[p];
    struct lq_series *s = val_add(e, v, l, nl, h);
    if (!s)
        return NULL;
    if (hidx_put(x, h, v->n - 1)) {
        ev_fail(e, -ENOMEM, "out of memory");
        return NULL;
    }
    return s;
}

/* ---- gathering samples for a range aggregation ---- */

struct sample {
    int64_t ts;
    double v;
};

struct sseries {                    /* an output series' samples before windowing */
    struct lq_label *l;
    int nl;
    uint64_t h;
    struct sample *v;
    size_t n, cap;
    bool sorted;
    int64_t last;
};

struct gather {
    struct ev *e;
    const struct lq_node *rn, *log;
    struct lq_lb lb;
    const struct lq_labels *stream;
    struct sseries *ss;
    int nss, capss;
    struct hidx idx;
    struct lq_label tmp[LQ_MAX_LABELS];
    bool filters_only;
    struct sseries *stream_series;  /* filters_only: the stream's one output series */
    int rc;
};

static struct sseries *gather_series(struct gather *g, const struct lq_label *l, int nl)
{
    uint64_t h = lq_labels_hash(l, nl);
    size_t it = 0;
    int p;
    while ((p = hidx_next(&g->idx, h, &it)) >= 0)
        if (labels_eq(g->ss[p].l, g->ss[p].nl, l, nl))
            return &g->ss[p];
    if (g->e->p->max_series && (uint64_t)g->nss >= g->e->p->max_series * 4 + 1000) {
        g->rc = ev_fail(g->e, -E2BIG, "maximum of series (%llu) reached for a single query",
                        (unsigned long long)g->e->p->max_series);
        return NULL;
    }
    if (g->nss == g->capss) {
        int cap = g->capss ? g->capss * 2 : 16;
        struct sseries *v = realloc(g->ss, (size_t)cap * sizeof(*v));
        if (!v)
            goto oom;
        g->ss = v;
        g->capss = cap;
    }
    struct sseries *s = &g->ss[g->nss];
    memset(s, 0, sizeof(*s));
    s->l = labels_dup(l, nl);
    s->nl = nl;
    s->h = h;
    s->sorted = true;
    s->last = INT64_MIN;
    if (!s->l)
        goto oom;
    if (hidx_put(&g->idx, h, g->nss))
        goto oom;
    g->nss++;
    return s;
oom:
    g->rc = ev_fail(g->e, -ENOMEM, "out of memory");
    return NULL;
}

static int sample_add(struct gather *g, struct sseries *s, int64_t ts, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct sample *nv = realloc(s->v, cap * sizeof(*nv));
        if (!nv)
            return g->rc = ev_fail(g->e, -ENOMEM, "out of memory");
        s->v = nv;
        s->cap = cap;
    }
    if (ts < s->last)
        s->sorted = false;
    s->last = ts;
    s->v[s->n++] = (struct sample){ ts, v };
    return 0;
}

/* The labels of a range aggregation's output: grouping applied (by keeps, without
 * drops; an unwrapped label is always dropped). */
static int group_labels(const struct lq_grouping *grp, const char *drop, const struct lq_label *in, int n,
                        struct lq_label *out)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        bool keep;
        if (drop && strcmp(in[i].name, drop) == 0)
            keep = false;
        else if (!grp->present)
            keep = true;
        else if (grp->without)
            keep = !name_in(in[i].name, grp->names, grp->n);
        else
            keep = name_in(in[i].name, grp->names, grp->n);
        if (keep)
            out[k++] = in[i];
    }
    return k;
}

static int gather_stream(void *arg, const struct lq_labels *stream)
{
    struct gather *g = arg;
    g->stream = stream;
    g->stream_series = NULL;
    return g->rc;
}

static int gather_entry(void *arg, int64_t ts, const char *line, size_t n, const struct lq_labels *meta)
{
    struct gather *g = arg;
    struct ev *e = g->e;
    const struct lq_node *log = g->log;
    e->stats->entries++;
    e->stats->bytes += n;
    if (e->budget && e->stats->entries > e->budget) {
        g->rc = ev_fail(e, -E2BIG, "the query would read too many entries: narrow the time range or the stream selector");
        return 1;
    }
    if (past_deadline(e)) {
        g->rc = -ETIMEDOUT;
        return 1;
    }
    size_t orig = n;
    if (g->filters_only && !(meta && meta->n) && !log->unwrap) {
        /* line filters only: the labels are the stream's, the series is found once */
        lq_lb_reset(&g->lb, g->stream);
        if (!lq_pipeline_run(log->stages, log->nstages, ts, &line, &n, &g->lb))
            return 0;
        if (!g->stream_series) {
            int k = group_labels(&g->rn->grp, NULL, g->stream->v, g->stream->n, g->tmp);
            if (!(g->stream_series = gather_series(g, g->tmp, k)))
                return 1;
        }
        double v = g->rn->rfn == LQ_R_BYTES || g->rn->rfn == LQ_R_BYTES_RATE ? (double)orig : 1;
        return sample_add(g, g->stream_series, ts, v) ? 1 : 0;
    }
    lq_lb_reset(&g->lb, g->stream);
    lq_lb_add_meta(&g->lb, meta);
    if (!lq_pipeline_run(log->stages, log->nstages, ts, &line, &n, &g->lb))
        return 0;
    double v = 1;
    if (g->rn->rfn == LQ_R_BYTES || g->rn->rfn == LQ_R_BYTES_RATE)
        v = (double)orig;
    if (log->unwrap) {
        size_t vn = 0;
        const char *s = lq_lb_get(&g->lb, log->unwrap_label, &vn);
        if (!s)
            return 0;
        char err[200];
        int r = 0;
        if (!g->lb.err) {
            if (log->unwrap_conv == LQ_CONV_DURATION)
                r = lq_parse_go_duration(s, vn, &v, err, sizeof(err));
            else if (log->unwrap_conv == LQ_CONV_BYTES)
                r = lq_parse_bytes(s, vn, &v, err, sizeof(err));
            else
                r = lq_parse_float(s, vn, &v, err, sizeof(err));
            if (r) {
                v = 0;
                lq_lb_set(&g->lb, "__error__", 9, "SampleExtractionErr", 19);
                lq_lb_set(&g->lb, "__error_details__", 17, err, strlen(err));
            }
        }
        if (!lq_pipeline_run(log->post, log->npost, ts, &line, &n, &g->lb))
            return 0;
    }
    struct lq_label all[LQ_MAX_LABELS];
    int na = lq_lb_labels(&g->lb, all);
    int k = group_labels(&g->rn->grp, log->unwrap ? log->unwrap_label : NULL, all, na, g->tmp);
    /* an error always stays visible, whatever the grouping */
    if (g->lb.err && label_find(g->tmp, k, "__error__") < 0) {
        for (int i = 0; i < na; i++)
            if (!strncmp(all[i].name, "__error", 7))
                g->tmp[k++] = all[i];
        qsort(g->tmp, (size_t)k, sizeof(*g->tmp), label_name_cmp);
    }
    struct sseries *s = gather_series(g, g->tmp, k);
    if (!s)
        return 1;
    return sample_add(g, s, ts, v) ? 1 : 0;
}

static int sample_cmp(const void *a, const void *b)
{
    const struct sample *x = a, *y = b;
    return x->ts < y->ts ? -1 : x->ts > y->ts;
}

/* ---- range functions over one window ---- */

static double quantile(double q, double *v, size_t n)
{
    if (n == 0)
        return NAN;
    if (q < 0)
        return -INFINITY;
    if (q > 1)
        return INFINITY;
    for (size_t i = 1; i < n; i++) {   /* insertion sort: windows are small; NaN first */
        double x = v[i];
        size_t j = i;
        while (j > 0 && (v[j - 1] > x || (isnan(x) && !isnan(v[j - 1])))) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    double rank = q * (double)(n - 1);
    size_t lo = (size_t)fmax(0, floor(rank)), hi = (size_t)fmin((double)(n - 1), lo + 1.0);
    double w = rank - floor(rank);
    return v[lo] * (1 - w) + v[hi] * w;
}

static double counter_rate(const struct sample *s, size_t n, int64_t range_start, int64_t range_end, double range_s)
{
    if (n < 2)
        return 0;
    double result = s[n - 1].v - s[0].v;
    for (size_t i = 1; i < n; i++)
        if (s[i].v < s[i - 1].v)
            result += s[i - 1].v;
    double to_start = (double)(s[0].ts - range_start) / 1e9;
    double to_end = (double)(range_end - s[n - 1].ts) / 1e9;
    double sampled = (double)(s[n - 1].ts - s[0].ts) / 1e9;
    double avg = sampled / (double)(n - 1);
    double threshold = avg * 1.1;
    double extrap = sampled;
    if (to_start >= threshold)
        to_start = avg / 2;
    if (result > 0 && s[0].v >= 0) {
        double to_zero = sampled * (s[0].v / result);
        if (to_zero < to_start)
            to_start = to_zero;
    }
    extrap += to_start;
    if (to_end >= threshold)
        to_end = avg / 2;
    extrap += to_end;
    return result * (extrap / sampled) / range_s;
}

static double range_value(const struct lq_node *rn, const struct sample *s, size_t n, int64_t wstart, int64_t wend,
                          double *scratch)
{
    double range_s = (double)rn->range_ns / 1e9;
    double sum = 0;
    switch (rn->rfn) {
    case LQ_R_COUNT:
        return (double)n;
    case LQ_R_RATE:
        if (!rn->log->unwrap)
            return (double)n / range_s;
        /* the unwrapped values' sum per second */
        for (size_t i = 0; i < n; i++)
            sum += s[i].v;
        return sum / range_s;
    case LQ_R_BYTES_RATE:
    case LQ_R_BYTES:
    case LQ_R_SUM:
        for (size_t i = 0; i < n; i++)
            sum += s[i].v;
        return rn->rfn == LQ_R_RATE || rn->rfn == LQ_R_BYTES_RATE ? sum / range_s : sum;
    case LQ_R_AVG: {
        for (size_t i = 0; i < n; i++)
            sum += s[i].v;
        return sum / (double)n;
    }
    case LQ_R_MIN:
    case LQ_R_MAX: {
        double m = s[0].v;
        for (size_t i = 1; i < n; i++) {
            double x = s[i].v;
            if (rn->rfn == LQ_R_MAX ? (x > m || isnan(m)) : (x < m || isnan(m)))
                m = x;
        }
        return m;
    }
    case LQ_R_STDVAR:
    case LQ_R_STDDEV: {
        double mean = 0, m2 = 0;
        for (size_t i = 0; i < n; i++) {
            double d = s[i].v - mean;
            mean += d / (double)(i + 1);
            m2 += d * (s[i].v - mean);
        }
        double var = m2 / (double)n;
        return rn->rfn == LQ_R_STDDEV ? sqrt(var) : var;
    }
    case LQ_R_QUANTILE:
        for (size_t i = 0; i < n; i++)
            scratch[i] = s[i].v;
        return quantile(rn->param, scratch, n);
    case LQ_R_FIRST:
        return s[0].v;
    case LQ_R_LAST:
        return s[n - 1].v;
    case LQ_R_RATE_COUNTER:
        return counter_rate(s, n, wstart, wend, range_s);
    case LQ_R_ABSENT:
        return 1;
    }
    return NAN;
}

static int eval_range(struct ev *e, const struct lq_node *rn, struct val *out)
{
    const struct lq_params *p = e->p;
    const struct lq_node *log = rn->log;
    struct gather g;
    memset(&g, 0, sizeof(g));
    g.e = e;
    g.rn = rn;
    g.log = log;
    g.filters_only = lq_pipeline_filters_only(log->stages, log->nstages) && !log->unwrap;
    lq_lb_init(&g.lb);
    int64_t from = p->start - rn->offset_ns - rn->range_ns, to = p->end - rn->offset_ns;
    int rc = e->src->select(e->src->ctx, log, from, to, false, gather_stream, gather_entry,
                            &g, e->err, e->errlen);
    if (!rc)
        rc = g.rc;
    lq_lb_free(&g.lb);
    hidx_free(&g.idx);
    double *scratch = NULL;
    size_t scratch_n = 0;
    memset(out, 0, sizeof(*out));
    struct hidx oidx = { 0 };
    if (rn->rfn == LQ_R_ABSENT && !rc) {
        /* 1 at the steps where no series has a sample in the window */
        struct lq_label l[64];
        int nl = 0;
        for (int i = 0; i < log->nmatchers && nl < 64; i++) {
            const struct lq_matcher *m = &log->matchers[i];
            if (m->op != LQ_M_EQ)
                continue;
            bool dup = false;
            for (int j = 0; j < log->nmatchers; j++)
                if (j != i && !strcmp(log->matchers[j].name, m->name) && log->matchers[j].op == LQ_M_EQ)
                    dup = true;
            if (!dup && label_find(l, nl, m->name) < 0)
                l[nl++] = (struct lq_label){ m->name, m->value };
        }
        qsort(l, (size_t)nl, sizeof(*l), label_name_cmp);
        struct lq_series *os = NULL;
        size_t *lo = calloc((size_t)(g.nss ? g.nss : 1), sizeof(size_t));
        for (int i = 0; i < g.nss; i++)
            if (!g.ss[i].sorted)
                qsort(g.ss[i].v, g.ss[i].n, sizeof(struct sample), sample_cmp);
        for (int st = 0; st < e->nsteps && lo; st++) {
            int64_t t = p->start + (int64_t)st * p->step - rn->offset_ns;
            bool any = false;
            for (int i = 0; i < g.nss && !any; i++) {
                struct sseries *s = &g.ss[i];
                while (lo[i] < s->n && s->v[lo[i]].ts <= t - rn->range_ns)
                    lo[i]++;
                if (lo[i] < s->n && s->v[lo[i]].ts <= t)
                    any = true;
            }
            if (any)
                continue;
            if (!os && !(os = val_add(e, out, l, nl, lq_labels_hash(l, nl)))) {
                rc = -ENOMEM;
                break;
            }
            os->v[st] = 1;
            os->has[st] = 1;
        }
        if (!lo)
            rc = ev_fail(e, -ENOMEM, "out of memory");
        free(lo);
        goto done;
    }
    for (int i = 0; i < g.nss && !rc; i++) {
        struct sseries *s = &g.ss[i];
        if (!s->sorted)
            qsort(s->v, s->n, sizeof(struct sample), sample_cmp);
        if (s->n > scratch_n) {
            free(scratch);
            scratch_n = s->n;
            if (!(scratch = malloc(scratch_n * sizeof(double)))) {
                rc = ev_fail(e, -ENOMEM, "out of memory");
                break;
            }
        }
        struct lq_series *os = NULL;
        size_t lo = 0, hi = 0;
        for (int st = 0; st < e->nsteps; st++) {
            int64_t t = p->start + (int64_t)st * p->step - rn->offset_ns;
            while (lo < s->n && s->v[lo].ts <= t - rn->range_ns)
                lo++;
            if (hi < lo)
                hi = lo;
            while (hi < s->n && s->v[hi].ts <= t)
                hi++;
            if (hi == lo)
                continue;
            if (!os && !(os = val_get(e, out, &oidx, s->l, s->nl))) {
                rc = -ENOMEM;
                break;
            }
            os->v[st] = range_value(rn, s->v + lo, hi - lo, t - rn->range_ns, t, scratch);
            os->has[st] = 1;
        }
    }
    /* a series that still carries a pipeline error fails the query, as in Loki */
    for (int i = 0; i < out->n && !rc; i++) {
        int k = label_find(out->s[i].l, out->s[i].nl, "__error__");
        if (k < 0)
            continue;
        struct buf b = { 0 };
        lq_labels_string(&b, out->s[i].l, out->s[i].nl);
        rc = ev_fail(e, -EINVAL,
                     "pipeline error: '%s' for series: '%.*s'.\nUse a label filter to intentionally skip this error. "
                     "(e.g | __error__!=\"%s\").\nTo skip all potential errors you can match empty errors.(e.g "
                     "__error__=\"\")\nThe label filter can also be specified after unwrap. (e.g | unwrap latency | "
                     "__error__=\"\" )\n",
                     out->s[i].l[k].value, (int)buf_used(&b), b.len ? buf_head(&b) : "", out->s[i].l[k].value);
        buf_free(&b);
    }
done:
    free(scratch);
    hidx_free(&oidx);
    for (int i = 0; i < g.nss; i++) {
        free(g.ss[i].l);
        free(g.ss[i].v);
    }
    free(g.ss);
    if (rc)
        val_free(out);
    return rc;
}

/* ---- vector aggregations ---- */

static int eval_node(struct ev *e, const struct lq_node *n, struct val *out);

/* The grouping labels of a series for a vector aggregation. */
static int agg_labels(const struct lq_grouping *g, const struct lq_series *s, struct lq_label *out)
{
    int k = 0;
    for (int i = 0; i < s->nl; i++) {
        bool keep = !g->present ? false : g->without ? !name_in(s->l[i].name, g->names, g->n)
                                                     : name_in(s->l[i].name, g->names, g->n);
        if (keep)
            out[k++] = s->l[i];
    }
    return k;
}

struct kv {
    double v;
    int idx;
};

static int kv_desc(const void *a, const void *b)
{
    const struct kv *x = a, *y = b;
    if (isnan(x->v) != isnan(y->v))
        return isnan(x->v) ? 1 : -1;
    return x->v > y->v ? -1 : x->v < y->v ? 1 : x->idx - y->idx;
}

static int kv_asc(const void *a, const void *b)
{
    const struct kv *x = a, *y = b;
    if (isnan(x->v) != isnan(y->v))
        return isnan(x->v) ? 1 : -1;
    return x->v < y->v ? -1 : x->v > y->v ? 1 : x->idx - y->idx;
}

static int eval_vagg(struct ev *e, const struct lq_node *n, struct val *out)
{
    struct val in;
    int rc = eval_node(e, n->arg, &in);
    if (rc)
        return rc;
    memset(out, 0, sizeof(*out));
    if (in.scalar) {
        val_free(&in);
        return ev_fail(e, -EINVAL, "parse error : unexpected scalar in a vector aggregation");
    }
    if (n->vop == LQ_V_APPROX_TOPK && !e->p->instant) {
        val_free(&in);
        return ev_fail(e, -EINVAL, "approx_topk is only supported on instant queries");
    }
    if (n->vop == LQ_V_SORT || n->vop == LQ_V_SORT_DESC) {
        /* order the series by their value at the last step (instant queries) */
        struct kv *kv = malloc((size_t)(in.n ? in.n : 1) * sizeof(*kv));
        if (!kv) {
            val_free(&in);
            return ev_fail(e, -ENOMEM, "out of memory");
        }
        int last = e->nsteps - 1;
        for (int i = 0; i < in.n; i++)
            kv[i] = (struct kv){ in.s[i].has[last] ? in.s[i].v[last] : NAN, i };
        qsort(kv, (size_t)in.n, sizeof(*kv), n->vop == LQ_V_SORT ? kv_asc : kv_desc);
        struct lq_series *s = malloc((size_t)(in.n ? in.n : 1) * sizeof(*s));
        if (!s) {
            free(kv);
            val_free(&in);
            return ev_fail(e, -ENOMEM, "out of memory");
        }
        for (int i = 0; i < in.n; i++)
            s[i] = in.s[kv[i].idx];
        free(in.s);
        in.s = s;
        in.cap = in.n;
        free(kv);
        *out = in;
        return 0;
    }
    /* groups: output series per grouping label set */
    struct hidx idx = { 0 };
    int *group = malloc((size_t)(in.n ? in.n : 1) * sizeof(int));
    struct lq_label tmp[LQ_MAX_LABELS];
    bool kfn = n->vop == LQ_V_TOPK || n->vop == LQ_V_BOTTOMK || n->vop == LQ_V_APPROX_TOPK;
    struct val groups = { 0 };
    if (!group) {
        rc = ev_fail(e, -ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < in.n; i++) {
        int k = agg_labels(&n->grp, &in.s[i], tmp);
        struct lq_series *gs = val_get(e, &groups, &idx, tmp, k);
        if (!gs) {
            rc = -ENOMEM;
            goto out;
        }
        group[i] = (int)(gs - groups.s);
    }
    if (kfn) {
        /* topk/bottomk keep the input series (their own labels) at the steps they win */
        long k = (long)n->param;
        struct kv *kv = malloc((size_t)(in.n ? in.n : 1) * sizeof(*kv));
        uint8_t *keep = calloc((size_t)(in.n ? in.n : 1) * (size_t)e->nsteps, 1);
        if (!kv || !keep) {
            free(kv);
            free(keep);
            rc = ev_fail(e, -ENOMEM, "out of memory");
            goto out;
        }
        for (int st = 0; st < e->nsteps; st++) {
            for (int gi = 0; gi < groups.n; gi++) {
                int m = 0;
                for (int i = 0; i < in.n; i++)
                    if (group[i] == gi && in.s[i].has[st])
                        kv[m++] = (struct kv){ in.s[i].v[st], i };
                qsort(kv, (size_t)m, sizeof(*kv), n->vop == LQ_V_BOTTOMK ? kv_asc : kv_desc);
                for (int j = 0; j < m && j < k; j++)
                    keep[(size_t)kv[j].idx * (size_t)e->nsteps + (size_t)st] = 1;
            }
        }
        /* instant results in rank order */
        int last = e->nsteps - 1, m = 0;
        for (int i = 0; i < in.n; i++)
            kv[m++] = (struct kv){ in.s[i].has[last] ? in.s[i].v[last] : NAN, i };
        qsort(kv, (size_t)m, sizeof(*kv), n->vop == LQ_V_BOTTOMK ? kv_asc : kv_desc);
        for (int j = 0; j < m; j++) {
            struct lq_series *s = &in.s[kv[j].idx];
            bool any = false;
            for (int st = 0; st < e->nsteps; st++) {
                s->has[st] = s->has[st] && keep[(size_t)kv[j].idx * (size_t)e->nsteps + (size_t)st];
                any |= s->has[st];
            }
            if (!any)
                continue;
            struct lq_series *os = val_add(e, out, s->l, s->nl, s->h);
            if (!os) {
                rc = -ENOMEM;
                break;
            }
            memcpy(os->v, s->v, (size_t)e->nsteps * sizeof(double));
            memcpy(os->has, s->has, (size_t)e->nsteps);
        }
        free(kv);
        free(keep);
        goto out;
    }
    /* the others: one value per group and step */
    double *acc = calloc((size_t)groups.n + 1, sizeof(double) * 3);
    int *cnt = calloc((size_t)groups.n + 1, sizeof(int));
    if (!acc || !cnt) {
        free(acc);
        free(cnt);
        rc = ev_fail(e, -ENOMEM, "out of memory");
        goto out;
    }
    for (int st = 0; st < e->nsteps; st++) {
        memset(cnt, 0, (size_t)(groups.n + 1) * sizeof(int));
        for (int i = 0; i < in.n; i++) {
            if (!in.s[i].has[st])
                continue;
            int gi = group[i];
            double x = in.s[i].v[st];
            double *a = &acc[gi * 3];
            int c = cnt[gi]++;
            switch (n->vop) {
            case LQ_V_SUM:
                a[0] = c ? a[0] + x : x;
                break;
            case LQ_V_AVG:
            case LQ_V_STDDEV:
            case LQ_V_STDVAR: {
                if (!c)
                    a[0] = a[1] = 0;
                double d = x - a[0];
                if (n->vop == LQ_V_AVG) {
                    if (isinf(x) || isinf(a[0]))
                        a[0] = c ? (a[0] * c + x) / (c + 1) : x;  /* keep Inf arithmetic */
                    else
                        a[0] += d / (double)(c + 1);
                } else {
                    a[0] += d / (double)(c + 1);
                    a[1] += d * (x - a[0]);
                }
                break;
            }
            case LQ_V_MIN:
                if (!c || x < a[0] || isnan(a[0]))
                    a[0] = x;
                break;
            case LQ_V_MAX:
                if (!c || x > a[0] || isnan(a[0]))
                    a[0] = x;
                break;
            case LQ_V_COUNT:
                a[0] = c + 1;
                break;
            default:
                break;
            }
        }
        for (int gi = 0; gi < groups.n; gi++) {
            if (!cnt[gi])
                continue;
            double *a = &acc[gi * 3], v = a[0];
            if (n->vop == LQ_V_STDVAR)
                v = a[1] / cnt[gi];
            else if (n->vop == LQ_V_STDDEV)
                v = sqrt(a[1] / cnt[gi]);
            groups.s[gi].v[st] = v;
            groups.s[gi].has[st] = 1;
        }
    }
    free(acc);
    free(cnt);
    for (int gi = 0; gi < groups.n; gi++) {
        bool any = false;
        for (int st = 0; st < e->nsteps; st++)
            any |= groups.s[gi].has[st];
        if (!any)
            continue;
        if (out->n == out->cap) {
            int cap = out->cap ? out->cap * 2 : 16;
            struct lq_series *s = realloc(out->s, (size_t)cap * sizeof(*s));
            if (!s) {
                rc = ev_fail(e, -ENOMEM, "out of memory");
                break;
            }
            out->s = s;
            out->cap = cap;
        }
        out->s[out->n++] = groups.s[gi];
        memset(&groups.s[gi], 0, sizeof(groups.s[gi]));
    }
out:
    free(group);
    hidx_free(&idx);
    val_free(&groups);
    val_free(&in);
    if (rc)
        val_free(out);
    return rc;
}

/* ---- binary operators ---- */

static bool is_cmp(enum lq_binop op)
{
    return op >= LQ_B_EQ && op <= LQ_B_LE;
}

static bool is_set(enum lq_binop op)
{
    return op == LQ_B_OR || op == LQ_B_AND || op == LQ_B_UNLESS;
}

/* a op b; *keep false when a comparison drops the sample. */
static double binop(enum lq_binop op, double a, double b, bool *keep)
{
    *keep = true;
    switch (op) {
    case LQ_B_ADD: return a + b;
    case LQ_B_SUB: return a - b;
    case LQ_B_MUL: return a * b;
    case LQ_B_DIV: return b == 0 ? NAN : a / b;     /* Loki: x / 0 is NaN */
    case LQ_B_MOD: return b == 0 ? NAN : fmod(a, b);
    case LQ_B_POW: return pow(a, b);
    case LQ_B_EQ: *keep = a == b; return a;
    case LQ_B_NE: *keep = a != b; return a;
    case LQ_B_GT: *keep = a > b; return a;
    case LQ_B_GE: *keep = a >= b; return a;
    case LQ_B_LT: *keep = a < b; return a;
    case LQ_B_LE: *keep = a <= b; return a;
    default: return NAN;
    }
}

/* The signature labels of a series for vector matching. */
static int sig_labels(const struct lq_node *n, const struct lq_series *s, struct lq_label *out)
{
    int k = 0;
    for (int i = 0; i < s->nl; i++) {
        bool keep = n->on ? name_in(s->l[i].name, n->match_labels, n->nmatch)
                          : !(n->ignoring && name_in(s->l[i].name, n->match_labels, n->nmatch));
        if (keep)
            out[k++] = s->l[i];
    }
    return k;
}

static int eval_vec_scalar(struct ev *e, const struct lq_node *n, struct val *vec, const double *sv, bool swap,
                           struct val *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < vec->n; i++) {
        struct lq_series *s = &vec->s[i];
        bool any = false;
        for (int st = 0; st < e->nsteps; st++) {
            if (!s->has[st])
                continue;
            double a = s->v[st], b = sv[st], r;
            bool keep;
            r = swap ? binop(n->bop, b, a, &keep) : binop(n->bop, a, b, &keep);
            if (is_cmp(n->bop)) {
                if (n->ret_bool) {
                    r = keep ? 1 : 0;
                    keep = true;
                } else {
                    r = a;      /* the vector's own value, on either side */
                }
            }
            s->has[st] = keep;
            s->v[st] = r;
            any |= keep;
        }
        (void)any;
    }
    /* keep the order (sort() results stay sorted); drop series with no point */
    int k = 0;
    for (int i = 0; i < vec->n; i++) {
        bool any = false;
        for (int st = 0; st < e->nsteps; st++)
            any |= vec->s[i].has[st];
        if (any)
            vec->s[k++] = vec->s[i];
        else
            series_free(&vec->s[i]);
    }
    vec->n = k;
    *out = *vec;
    memset(vec, 0, sizeof(*vec));
    return 0;
}

static int eval_set(struct ev *e, const struct lq_node *n, struct val *l, struct val *r, struct val *out)
{
    struct lq_label tmp[LQ_MAX_LABELS];
    uint64_t *lsig = malloc((size_t)(l->n + 1) * sizeof(uint64_t));
    uint64_t *rsig = malloc((size_t)(r->n + 1) * sizeof(uint64_t));
    if (!lsig || !rsig) {
        free(lsig);
        free(rsig);
        return ev_fail(e, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < l->n; i++)
        lsig[i] = lq_labels_hash(tmp, sig_labels(n, &l->s[i], tmp));
    for (int i = 0; i < r->n; i++)
        rsig[i] = lq_labels_hash(tmp, sig_labels(n, &r->s[i], tmp));
    memset(out, 0, sizeof(*out));
    for (int st = 0; st < e->nsteps; st++) {
        for (int i = 0; i < l->n; i++) {
            if (!l->s[i].has[st] || n->bop == LQ_B_OR)
                continue;
            bool found = false;
            for (int j = 0; j < r->n && !found; j++)
                found = r->s[j].has[st] && rsig[j] == lsig[i];
            if (found != (n->bop == LQ_B_AND))
                l->s[i].has[st] = 0;
        }
        if (n->bop == LQ_B_OR) {
            for (int j = 0; j < r->n; j++) {
                if (!r->s[j].has[st])
                    continue;
                bool found = false;
                for (int i = 0; i < l->n && !found; i++)
                    found = l->s[i].has[st] && lsig[i] == rsig[j];
                if (found)
                    r->s[j].has[st] = 0;
            }
        }
    }
    free(lsig);
    free(rsig);
    struct hidx idx = { 0 };
    int rc = 0;
    struct val *srcs[2] = { l, n->bop == LQ_B_OR ? r : NULL };
    for (int k = 0; k < 2 && !rc; k++) {
        struct val *v = srcs[k];
        for (int i = 0; v && i < v->n; i++) {
            bool any = false;
            for (int st = 0; st < e->nsteps; st++)
                any |= v->s[i].has[st];
            if (!any)
                continue;
            struct lq_series *os = val_get(e, out, &idx, v->s[i].l, v->s[i].nl);
            if (!os) {
                rc = -ENOMEM;
                break;
            }
            for (int st = 0; st < e->nsteps; st++)
                if (v->s[i].has[st] && !os->has[st]) {
                    os->has[st] = 1;
                    os->v[st] = v->s[i].v[st];
                }
        }
    }
    hidx_free(&idx);
    return rc;
}

static int eval_vec_vec(struct ev *e, const struct lq_node *n, struct val *l, struct val *r, struct val *out)
{
    if (is_set(n->bop))
        return eval_set(e, n, l, r, out);
    memset(out, 0, sizeof(*out));
    struct lq_label tmp[LQ_MAX_LABELS];
    /* the "one" side and the "many" side */
    bool right_many = n->group == 2;
    struct val *one = right_many ? l : r, *many = right_many ? r : l;
    uint64_t *osig = malloc((size_t)(one->n + 1) * sizeof(uint64_t));
    uint64_t *msig = malloc((size_t)(many->n + 1) * sizeof(uint64_t));
    struct hidx oidx = { 0 }, ridx = { 0 };
    int rc = 0;
    if (!osig || !msig) {
        rc = ev_fail(e, -ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < one->n; i++)
        osig[i] = lq_labels_hash(tmp, sig_labels(n, &one->s[i], tmp));
    for (int i = 0; i < many->n; i++)
        msig[i] = lq_labels_hash(tmp, sig_labels(n, &many->s[i], tmp));
    for (int i = 0; i < one->n; i++)
        if (hidx_put(&oidx, osig[i], i)) {
            rc = ev_fail(e, -ENOMEM, "out of memory");
            goto out;
        }
    /* per step: the one side must be unique per signature */
    int *match = malloc((size_t)(many->n + 1) * sizeof(int));
    int *used = malloc((size_t)(one->n + 1) * sizeof(int));
    if (!match || !used) {
        free(match);
        free(used);
        rc = ev_fail(e, -ENOMEM, "out of memory");
        goto out;
    }
    for (int st = 0; st < e->nsteps && !rc; st++) {
        for (int i = 0; i < one->n; i++)
            used[i] = -1;
        for (int i = 0; i < one->n && !rc; i++) {
            if (!one->s[i].has[st])
                continue;
            size_t it = 0;
            int j;
            while ((j = hidx_next(&oidx, osig[i], &it)) >= 0) {
                if (j != i && j < i && one->s[j].has[st]) {
                    struct buf b = { 0 };
                    lq_labels_string(&b, one->s[i].l, one->s[i].nl);
                    rc = ev_fail(e, -EINVAL,
                                 "found duplicate series on the %s hand-side of the operation: %.*s;many-to-many "
                                 "matching not allowed: matching labels must be unique on one side",
                                 right_many ? "left" : "right", (int)buf_used(&b), b.len ? buf_head(&b) : "");
                    buf_free(&b);
                    break;
                }
            }
        }
        if (rc)
            break;
        for (int i = 0; i < many->n; i++) {
            match[i] = -1;
            if (!many->s[i].has[st])
                continue;
            size_t it = 0;
            int j;
            while ((j = hidx_next(&oidx, msig[i], &it)) >= 0)
                if (one->s[j].has[st]) {
                    match[i] = j;
                    break;
                }
            if (match[i] < 0)
                continue;
            if (!n->group) {
                if (used[match[i]] >= 0) {
                    rc = ev_fail(e, -EINVAL,
                                 "multiple matches for labels: many-to-one matching must be explicit "
                                 "(group_left/group_right)");
                    break;
                }
                used[match[i]] = i;
            }
        }
        if (rc)
            break;
        for (int i = 0; i < many->n && !rc; i++) {
            if (match[i] < 0)
                continue;
            struct lq_series *ms = &many->s[i], *os1 = &one->s[match[i]];
            double a = right_many ? os1->v[st] : ms->v[st], b = right_many ? ms->v[st] : os1->v[st];
            bool keep;
            double v = binop(n->bop, a, b, &keep);
            if (is_cmp(n->bop)) {
                if (n->ret_bool) {
                    v = keep ? 1 : 0;
                    keep = true;
                } else {
                    v = a;
                }
            }
            if (!keep)
                continue;
            /* result labels */
            int k = 0;
            struct lq_label rl[LQ_MAX_LABELS];
            if (!n->group) {
                k = n->on || n->ignoring ? sig_labels(n, ms, rl) : 0;
                if (!(n->on || n->ignoring)) {
                    memcpy(rl, ms->l, (size_t)ms->nl * sizeof(*rl));
                    k = ms->nl;
                }
            } else {
                memcpy(rl, ms->l, (size_t)ms->nl * sizeof(*rl));
                k = ms->nl;
                for (int x = 0; x < n->ninclude; x++) {
                    int have = label_find(rl, k, n->include[x]);
                    int from = label_find(os1->l, os1->nl, n->include[x]);
                    if (from >= 0) {
                        if (have >= 0)
                            rl[have].value = os1->l[from].value;
                        else if (k < LQ_MAX_LABELS)
                            rl[k++] = os1->l[from];
                    } else if (have >= 0) {
                        rl[have] = rl[--k];
                    }
                }
                qsort(rl, (size_t)k, sizeof(*rl), label_name_cmp);
            }
            struct lq_series *res = val_get(e, out, &ridx, rl, k);
            if (!res) {
                rc = -ENOMEM;
                break;
            }
            if (res->has[st]) {
                rc = ev_fail(e, -EINVAL, "multiple matches for labels: grouping labels must ensure unique matches");
                break;
            }
            res->has[st] = 1;
            res->v[st] = v;
        }
        /* ridx indexes out's series: rebuild it for the next step from out itself */
        hidx_free(&ridx);
        for (int i = 0; i < out->n; i++)
            if (hidx_put(&ridx, out->s[i].h, i)) {
                rc = ev_fail(e, -ENOMEM, "out of memory");
                break;
            }
    }
    free(match);
    free(used);
out:
    free(osig);
    free(msig);
    hidx_free(&oidx);
    hidx_free(&ridx);
    if (rc)
        val_free(out);
    return rc;
}

static int eval_bin(struct ev *e, const struct lq_node *n, struct val *out)
{
    struct val l, r;
    int rc = eval_node(e, n->lhs, &l);
    if (rc)
        return rc;
    if ((rc = eval_node(e, n->rhs, &r))) {
        val_free(&l);
        return rc;
    }
    memset(out, 0, sizeof(*out));
    if (l.scalar && r.scalar) {
        out->scalar = true;
        out->sv = l.sv;
        l.sv = NULL;
        for (int st = 0; st < e->nsteps; st++) {
            bool keep;
            double v = binop(n->bop, out->sv[st], r.sv[st], &keep);
            if (is_cmp(n->bop))
                v = keep ? 1 : 0;
            out->sv[st] = v;
        }
    } else if (l.scalar || r.scalar) {
        if (is_set(n->bop))
            rc = ev_fail(e, -EINVAL, "set operator not allowed in binary scalar expression");
        else
            rc = l.scalar ? eval_vec_scalar(e, n, &r, l.sv, true, out) : eval_vec_scalar(e, n, &l, r.sv, false, out);
    } else {
        rc = eval_vec_vec(e, n, &l, &r, out);
    }
    val_free(&l);
    val_free(&r);
    return rc;
}

/* ---- label_replace ---- */

static int eval_label_replace(struct ev *e, const struct lq_node *n, struct val *out)
{
    struct val in;
    int rc = eval_node(e, n->arg, &in);
    if (rc)
        return rc;
    memset(out, 0, sizeof(*out));
    if (in.scalar) {
        *out = in;
        return 0;
    }
    struct hidx idx = { 0 };
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(n->re, NULL);
    for (int i = 0; i < in.n && !rc && md; i++) {
        struct lq_series *s = &in.s[i];
        int si = label_find(s->l, s->nl, n->src);
        const char *sv = si >= 0 ? s->l[si].value : "";
        struct lq_label rl[LQ_MAX_LABELS];
        memcpy(rl, s->l, (size_t)s->nl * sizeof(*rl));
        int k = s->nl;
        char *val = NULL;
        if (pcre2_match(n->re, (PCRE2_SPTR)sv, strlen(sv), 0, 0, md, NULL) >= 0) {
            /* expand $1, ${1}, $name in the replacement */
            struct buf b = { 0 };
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            uint32_t nov = pcre2_get_ovector_count(md);
            for (const char *p = n->repl; *p; p++) {
                if (*p != '$' || !p[1]) {
                    buf_putc(&b, *p);
                    continue;
                }
                if (p[1] == '$') {
                    buf_putc(&b, '$');
                    p++;
                    continue;
                }
                const char *q = p + 1;
                bool brace = *q == '{';
                if (brace)
                    q++;
                const char *ns = q;
                while (*q && (isalnum((unsigned char)*q) || *q == '_'))
                    q++;
                if (q == ns || (brace && *q != '}')) {
                    buf_putc(&b, *p);
                    continue;
                }
                char name[64];
                snprintf(name, sizeof(name), "%.*s", (int)(q - ns), ns);
                int g = -1;
                char *end;
                long num = strtol(name, &end, 10);
                if (!*end)
                    g = (int)num;
                else
                    g = pcre2_substring_number_from_name(n->re, (PCRE2_SPTR)name);
                if (g >= 0 && (uint32_t)g < nov && ov[2 * g] != PCRE2_UNSET)
                    buf_append(&b, sv + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
                p = brace ? q : q - 1;
            }
            buf_putc(&b, 0);
            val = buf_steal(&b);
            int di = label_find(rl, k, n->dst);
            if (val && val[0]) {
                if (di >= 0)
                    rl[di].value = val;
                else
                    rl[k++] = (struct lq_label){ n->dst, val };
            } else if (di >= 0) {
                rl[di] = rl[--k];
            }
            qsort(rl, (size_t)k, sizeof(*rl), label_name_cmp);
        }
        struct lq_series *os = val_get(e, out, &idx, rl, k);
        free(val);
        if (!os) {
            rc = -ENOMEM;
            break;
        }
        for (int st = 0; st < e->nsteps; st++) {
            if (!s->has[st])
                continue;
            if (os->has[st]) {
                rc = ev_fail(e, -EINVAL, "vector cannot contain metrics with the same labelset");
                break;
            }
            os->has[st] = 1;
            os->v[st] = s->v[st];
        }
    }
    if (!md)
        rc = ev_fail(e, -ENOMEM, "out of memory");
    pcre2_match_data_free(md);
    hidx_free(&idx);
    val_free(&in);
    if (rc)
        val_free(out);
    return rc;
}

static int eval_node(struct ev *e, const struct lq_node *n, struct val *out)
{
    memset(out, 0, sizeof(*out));
    switch (n->kind) {
    case LQ_N_NUM:
        out->scalar = true;
        if (!(out->sv = malloc((size_t)e->nsteps * sizeof(double))))
            return ev_fail(e, -ENOMEM, "out of memory");
        for (int i = 0; i < e->nsteps; i++)
            out->sv[i] = n->num;
        return 0;
    case LQ_N_VECTOR: {
        struct lq_series *s = val_add(e, out, NULL, 0, lq_labels_hash(NULL, 0));
        if (!s)
            return -ENOMEM;
        for (int i = 0; i < e->nsteps; i++) {
            s->v[i] = n->num;
            s->has[i] = 1;
        }
        return 0;
    }
    case LQ_N_RANGE:
        return eval_range(e, n, out);
    case LQ_N_VAGG:
        return eval_vagg(e, n, out);
    case LQ_N_BIN:
        return eval_bin(e, n, out);
    case LQ_N_LABEL_REPLACE:
        return eval_label_replace(e, n, out);
    case LQ_N_LOG:
        return ev_fail(e, -EINVAL, "parse error : a log query is not allowed here");
    }
    return -EINVAL;
}

/* ---- log queries ---- */

struct lgather {
    struct ev *e;
    const struct lq_node *log;
    struct lq_lb lb;
    const struct lq_labels *stream;
    struct lq_stream_out *st;
    int nst, capst;
    struct hidx idx;
    int per_stream;                 /* entries taken from the current stream */
    int rc;
};

static int lg_stream(void *arg, const struct lq_labels *stream)
{
    struct lgather *g = arg;
    g->stream = stream;
    g->per_stream = 0;
    return g->rc;
}

static int lg_entry(void *arg, int64_t ts, const char *line, size_t n, const struct lq_labels *meta)
{
    struct lgather *g = arg;
    struct ev *e = g->e;
    e->stats->entries++;
    e->stats->bytes += n;
    if (e->budget && e->stats->entries > e->budget) {
        g->rc = ev_fail(e, -E2BIG, "the query would read too many entries: narrow the time range or the stream selector");
        return 1;
    }
    if (past_deadline(e)) {
        g->rc = -ETIMEDOUT;
        return 1;
    }
    lq_lb_reset(&g->lb, g->stream);
    lq_lb_add_meta(&g->lb, meta);
    if (!lq_pipeline_run(g->log->stages, g->log->nstages, ts, &line, &n, &g->lb))
        return 0;
    struct lq_label l[LQ_MAX_LABELS];
    int nl = lq_lb_labels(&g->lb, l);
    uint64_t h = lq_labels_hash(l, nl);
    size_t it = 0;
    int p;
    struct lq_stream_out *so = NULL;
    while ((p = hidx_next(&g->idx, h, &it)) >= 0)
        if (labels_eq(g->st[p].l, g->st[p].nl, l, nl)) {
            so = &g->st[p];
            break;
        }
    if (!so) {
        if (g->nst == g->capst) {
            int cap = g->capst ? g->capst * 2 : 16;
            struct lq_stream_out *v = realloc(g->st, (size_t)cap * sizeof(*v));
            if (!v)
                goto oom;
            g->st = v;
            g->capst = cap;
        }
        so = &g->st[g->nst];
        memset(so, 0, sizeof(*so));
        if (!(so->l = labels_dup(l, nl)))
            goto oom;
        so->nl = nl;
        so->h = h;
        if (hidx_put(&g->idx, h, g->nst))
            goto oom;
        g->nst++;
    }
    /* interval: an entry closer than interval to the last one kept is skipped */
    if (e->p->interval_ns && so->n) {
        int64_t last = so->ts[so->n - 1], d = ts > last ? ts - last : last - ts;
        if (d < e->p->interval_ns)
            return 0;
    }
    if (so->n == so->cap) {
        int cap = so->cap ? so->cap * 2 : 16;
        int64_t *ts2 = realloc(so->ts, (size_t)cap * sizeof(*ts2));
        if (!ts2)
            goto oom;
        so->ts = ts2;
        char **l2 = realloc(so->lines, (size_t)cap * sizeof(*l2));
        if (!l2)
            goto oom;
        so->lines = l2;
        size_t *n2 = realloc(so->lens, (size_t)cap * sizeof(*n2));
        if (!n2)
            goto oom;
        so->lens = n2;
        so->cap = cap;
    }
    char *copy = malloc(n + 1);
    if (!copy)
        goto oom;
    memcpy(copy, line, n);
    copy[n] = 0;
    so->ts[so->n] = ts;
    so->lines[so->n] = copy;
    so->lens[so->n] = n;
    so->n++;
    /* entries come in the asked direction per stream: a stream never needs more
       than the limit */
    return ++g->per_stream >= e->p->limit ? 1 : 0;
oom:
    g->rc = ev_fail(e, -ENOMEM, "out of memory");
    return 1;
}

struct pick {
    int64_t ts;
    int s, i;
};

static int pick_cmp(const void *a, const void *b)
{
    const struct pick *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->s != y->s ? x->s - y->s : x->i - y->i;
}

static int eval_log(struct ev *e, const struct lq_node *log, struct lq_result *res)
{
    const struct lq_params *p = e->p;
    struct lgather g;
    memset(&g, 0, sizeof(g));
    g.e = e;
    g.log = log;
    lq_lb_init(&g.lb);
    /* log queries cover [start, end): select takes (from, to] */
    int rc = e->src->select(e->src->ctx, log, p->start - 1, p->end - 1, p->backward, lg_stream,
                            lg_entry, &g, e->err, e->errlen);
    if (!rc)
        rc = g.rc;
    lq_lb_free(&g.lb);
    hidx_free(&g.idx);
    /* keep the limit's worth of entries across streams, in the asked direction */
    size_t total = 0;
    for (int i = 0; i < g.nst; i++)
        total += (size_t)g.st[i].n;
    struct pick *pk = malloc((total ? total : 1) * sizeof(*pk));
    if (!pk && !rc)
        rc = ev_fail(e, -ENOMEM, "out of memory");
    if (!rc && total > (size_t)p->limit) {
        size_t k = 0;
        for (int s = 0; s < g.nst; s++)
            for (int i = 0; i < g.st[s].n; i++)
                pk[k++] = (struct pick){ g.st[s].ts[i], s, i };
        qsort(pk, total, sizeof(*pk), pick_cmp);
        /* mark the ones to keep */
        for (size_t j = 0; j < total; j++) {
            bool keep = p->backward ? j >= total - (size_t)p->limit : j < (size_t)p->limit;
            if (!keep) {
                free(g.st[pk[j].s].lines[pk[j].i]);
                g.st[pk[j].s].lines[pk[j].i] = NULL;
            }
        }
        for (int s = 0; s < g.nst; s++) {
            struct lq_stream_out *so = &g.st[s];
            int w = 0;
            for (int i = 0; i < so->n; i++)
                if (so->lines[i]) {
                    so->ts[w] = so->ts[i];
                    so->lines[w] = so->lines[i];
                    so->lens[w] = so->lens[i];
                    w++;
                }
            so->n = w;
        }
    }
    free(pk);
    /* streams with no entry left go */
    int w = 0;
    for (int s = 0; s < g.nst; s++) {
        if (g.st[s].n) {
            g.st[w++] = g.st[s];
        } else {
            free(g.st[s].l);
            free(g.st[s].ts);
            free(g.st[s].lines);
            free(g.st[s].lens);
        }
    }
    g.nst = w;
    res->type = LQ_RES_STREAMS;
    res->st = g.st;
    res->nst = g.nst;
    for (int s = 0; s < g.nst; s++)
        res->stats.lines_out += (uint64_t)g.st[s].n;
    return rc;
}

int lq_required_literals(const struct lq_node *log, struct strv *out, int max)
{
    int n = 0;
    for (int i = 0; i < log->nstages && n < max; i++) {
        const struct lq_stage *st = &log->stages[i];
        if (st->kind == LQ_S_LINE_FORMAT || st->kind == LQ_S_UNPACK || st->kind == LQ_S_DECOLORIZE)
            break;
        if (st->kind == LQ_S_LINE_FILTER && st->fop == LQ_F_CONTAINS && st->nalts == 1 && !st->alts[0].is_ip &&
            st->alts[0].n)
            out[n++] = strv_make(st->alts[0].s, st->alts[0].n);
    }
    return n;
}

void lq_result_free(struct lq_result *res)
{
    free(res->scalar);
    for (int i = 0; i < res->ns; i++)
        series_free(&res->s[i]);
    free(res->s);
    for (int i = 0; i < res->nst; i++) {
        struct lq_stream_out *so = &res->st[i];
        for (int j = 0; j < so->n; j++)
            free(so->lines[j]);
        free(so->l);
        free(so->ts);
        free(so->lines);
        free(so->lens);
    }
    free(res->st);
    memset(res, 0, sizeof(*res));
}

int lq_eval(const struct lq_query *q, const struct lq_params *p, const struct lq_source *src, struct lq_result *res,
            char *err, size_t errlen)
{
    memset(res, 0, sizeof(*res));
    struct ev e = { .p = p, .src = src, .err = err, .errlen = errlen, .stats = &res->stats, .budget = p->max_entries };
    int64_t step = p->step > 0 ? p->step : 1;
    e.nsteps = p->instant ? 1 : (int)((p->end - p->start) / step) + 1;
    res->start = p->start;
    res->step = step;
    res->nsteps = e.nsteps;
    if (q->root->kind == LQ_N_LOG) {
        int rc = eval_log(&e, q->root, res);
        if (rc)
            lq_result_free(res);
        return rc;
    }
    struct val v;
    int rc = eval_node(&e, q->root, &v);
    if (rc)
        return rc;
    if (v.scalar) {
        res->type = LQ_RES_SCALAR;
        res->scalar = v.sv;
        if (!p->instant) {
            /* a range query answers a matrix of one unlabelled series */
            res->type = LQ_RES_MATRIX;
            struct val m = { 0 };
            struct lq_series *s = val_add(&e, &m, NULL, 0, 0);
            if (!s) {
                free(v.sv);
                res->scalar = NULL;
                return -ENOMEM;
            }
            for (int i = 0; i < e.nsteps; i++) {
                s->v[i] = v.sv[i];
                s->has[i] = 1;
            }
            res->s = m.s;
            res->ns = m.n;
        }
        return 0;
    }
    res->type = p->instant ? LQ_RES_VECTOR : LQ_RES_MATRIX;
    res->s = v.s;
    res->ns = v.n;
    return 0;
}

