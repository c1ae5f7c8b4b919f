/* promql_func.c - PromQL functions: over range vectors (rate, increase,
 * *_over_time, ...), streamed one series at a time, and over instant vectors and
 * scalars (math, dates, labels, histogram_quantile, sort, ...). */
#include "promql_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Prometheus's promql__quantile(): linear interpolation between the closest ranks;
 * sorts v. */
double promql__quantile(double q, double *v, size_t n)
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
        linear_regression(t, v, n, promql__step_time(ev, i), &slope, &icept);
        *out = slope * c->p1[i] + icept;
        return true;
    }
    case MF_HOLT: {
        double sf = c->p1[i], tf = c->p2[i];
        if (sf <= 0 || sf >= 1) {
            promql__fail(ev, PROMQL_EEXEC, "invalid smoothing factor. Expected: 0 < sf < 1, got: %g", sf);
            return false;
        }
        if (tf <= 0 || tf >= 1) {
            promql__fail(ev, PROMQL_EEXEC, "invalid trend factor. Expected: 0 < tf < 1, got: %g", tf);
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
                promql__oom(ev);
                return false;
            }
            c->tmp = a;
            c->tmpcap = n;
        }
        memcpy(c->tmp, v, n * sizeof(*v));
        *out = promql__quantile(c->p1[i], c->tmp, n);
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
        promql__window(ev, r, w, i, &lo, &hi, &ws, &we);
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
                if (promql__labels_copy(ev, r->lab, &l))
                    return false;
            } else if (promql__drop_name(ev, r->lab, &l)) {
                return false;
            }
            if (!(s = promql__out_series(ev, &c->o, &l, true, true)))
                return false;
        }
        if (!promql__put(ev, s, i, x))
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
        if (!(p1 = promql__eval(ev, n->kids[0])))
            return NULL;
        marg = n->kids[1];
    } else if (c.f == MF_PREDICT || c.f == MF_HOLT) {
        if (!(p1 = promql__eval(ev, n->kids[1])))
            return NULL;
        if (c.f == MF_HOLT && !(p2 = promql__eval(ev, n->kids[2]))) {
            promql__val_free(ev, p1);
            return NULL;
        }
    }
    c.p1 = p1 ? p1->sc : NULL;
    c.p2 = p2 ? p2->sc : NULL;
    if (c.f == MF_ABSENT && !(c.any = calloc(ev->nsteps, 1))) {
        promql__oom(ev);
        goto out;
    }
    if (!promql__outset_init(ev, &c.o))
        goto out;
    promql__for_each_range(ev, marg, mfn_series, &c);
    res = promql__outset_done(ev, &c.o);
    if (res && c.f == MF_ABSENT) {
        promql__val_free(ev, res);
        res = absent_labels_value(ev, promql__unparen(marg), c.any);
    }
out:
    free(c.tmp);
    free(c.any);
    promql__val_free(ev, p1);
    promql__val_free(ev, p2);
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
                promql__lb_set(&b, m->name, m->value);
            else if (nd < ARRAY_SIZE(dup))
                dup[nd++] = m->name;
        }
        for (size_t i = 0; i < nd; i++)
            promql__lb_del(&b, dup[i]);
    }
    struct pq_val *out = promql__val_new(ev, PROMQL_VECTOR);
    if (!out)
        return NULL;
    struct pq_ser *s = NULL;
    for (size_t i = 0; i < ev->nsteps; i++) {
        if (present[i])
            continue;
        if (!s) {
            struct tsdb_labels l;
            if (promql__lb_make(ev, &b, &l) || !(s = promql__val_add(ev, out, &l, true)))
                break;
        }
        if (!promql__put(ev, s, i, 1))
            break;
    }
    if (ev->err) {
        promql__val_free(ev, out);
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
    bool want_ts = strcmp(f, "timestamp") == 0 && promql__unparen(n->kids[0])->kind == PQ_VSEL;
    if (want_ts)
        in = promql__eval_vsel(ev, promql__unparen(n->kids[0]), true);
    else
        in = promql__eval(ev, n->kids[0]);
    if (!in)
        return NULL;
    if (n->nkids > 1 && !(a1 = promql__eval(ev, n->kids[1])))
        goto out_in;
    if (n->nkids > 2 && !(a2 = promql__eval(ev, n->kids[2])))
        goto out_in;
    struct outset o;
    if (!promql__outset_init(ev, &o))
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
    for (size_t si = 0; si < in->ns && !promql__stopped(ev); si++) {
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
            case K_TIMESTAMP: y = want_ts ? x : (double)promql__step_time(ev, i) / 1000; break;
            default: y = x; break;
            }
            if (!dst) {
                struct tsdb_labels l;
                int r = kind == K_SORT ? promql__labels_copy(ev, &src->lab, &l) : promql__drop_name(ev, &src->lab, &l);
                if (r || !(dst = promql__out_series(ev, &o, &l, true, false)))
                    break;
            }
            if (!promql__out_put(ev, dst, i, y))
                break;
        }
        if (ev->err)
            break;
    }
    struct pq_val *res = promql__outset_done(ev, &o);
    if (res && kind == K_SORT)
        res->sort = !strcmp(f, "sort") ? 1 : -1;
    promql__val_free(ev, in);
    promql__val_free(ev, a1);
    promql__val_free(ev, a2);
    return res;
out_in:
    promql__val_free(ev, in);
    promql__val_free(ev, a1);
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
    const char *dst = promql_str(n->kids[1]);
    struct tsdb_matcher re;
    memset(&re, 0, sizeof(re));
    if (replace) {
        char e[300];
        if (tsdb_matcher_init(&re, "x", TSDB_RE, promql_str(n->kids[4]), e, sizeof(e)))
            return promql__fail(ev, PROMQL_EEXEC, "invalid regular expression in label_replace(): %s", promql_str(n->kids[4]));
        if (!relabel_label_name_ok(dst)) {
            tsdb_matcher_free(&re);
            return promql__fail(ev, PROMQL_EEXEC, "invalid destination label name in label_replace(): %s", dst);
        }
    } else {
        if (!relabel_label_name_ok(dst))
            return promql__fail(ev, PROMQL_EEXEC, "invalid destination label name in label_join(): %s", dst);
        for (size_t i = 3; i < n->nkids; i++)
            if (!relabel_label_name_ok(promql_str(n->kids[i])))
                return promql__fail(ev, PROMQL_EEXEC, "invalid source label name in label_join(): %s", promql_str(n->kids[i]));
    }
    struct pq_val *in = promql__eval(ev, n->kids[0]), *res = NULL;
    if (!in)
        goto out;
    struct outset o;
    if (!promql__outset_init(ev, &o))
        goto out;
    struct buf val = BUF_INIT;
    for (size_t si = 0; si < in->ns && !promql__stopped(ev); si++) {
        struct pq_ser *src = &in->s[si];
        struct lb b;
        promql__lb_from(&b, &src->lab);
        buf_reset(&val);
        bool set = true;
        if (replace) {
            const char *sv = tsdb_labels_get(&src->lab, promql_str(n->kids[3]));
            if (!sv)
                sv = "";
            int r = pcre2_match(re.re, (PCRE2_SPTR)sv, strlen(sv), 0, 0, re.md, NULL);
            if (r < 0) {
                set = false;
            } else {
                expand(&val, promql_str(n->kids[2]), re.re, sv, pcre2_get_ovector_pointer(re.md),
                       (int)pcre2_get_ovector_count(re.md));
            }
        } else {
            for (size_t i = 3; i < n->nkids; i++) {
                if (i > 3)
                    buf_puts(&val, promql_str(n->kids[2]));
                const char *sv = tsdb_labels_get(&src->lab, promql_str(n->kids[i]));
                if (sv)
                    buf_puts(&val, sv);
            }
        }
        buf_putc(&val, 0);
        if (set)
            promql__lb_set(&b, dst, buf_head(&val));
        struct tsdb_labels l;
        if (promql__lb_make(ev, &b, &l))
            break;
        struct pq_ser *d = promql__out_series(ev, &o, &l, true, false);
        if (!d)
            break;
        for (size_t i = 0; i < ev->nsteps; i++)
            if (src->ok[i] && !promql__out_put(ev, d, i, src->v[i]))
                break;
        if (ev->err)
            break;
    }
    buf_free(&val);
    res = promql__outset_done(ev, &o);
out:
    promql__val_free(ev, in);
    tsdb_matcher_free(&re);
    return res;
}

/* The input series of each group, so a per-step pass over a group does not scan
 * every series: order[first[g] .. first[g + 1]) are group g's series (gid < 0:
 * in no group), in input order. */
bool promql__group_members(struct promql_ev *ev, const long *gid, size_t ns, size_t ng, size_t **order,
                          size_t **first)
{
    *order = malloc((ns + 1) * sizeof(**order));
    *first = calloc(ng + 2, sizeof(**first));
    if (!*order || !*first) {
        promql__oom(ev);
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
    struct pq_val *q = promql__eval(ev, n->kids[0]);
    if (!q)
        return NULL;
    struct pq_val *in = promql__eval(ev, n->kids[1]), *res = NULL;
    if (!in) {
        promql__val_free(ev, q);
        return NULL;
    }
    struct smap groups = { 0 };
    size_t *order = NULL, *first = NULL;
    long *gid = calloc(in->ns + 1, sizeof(*gid));
    double *ub = calloc(in->ns + 1, sizeof(*ub));
    struct bucket *bk = calloc(in->ns + 1, sizeof(*bk));
    struct tsdb_labels *glab = calloc(in->ns + 1, sizeof(*glab));
    struct outset o;
    if (!gid || !ub || !bk || !glab || !promql__outset_init(ev, &o)) {
        promql__oom(ev);
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
        promql__lb_from(&b, &in->s[si].lab);
        promql__lb_del(&b, "le");
        promql__lb_del(&b, "__name__");
        struct tsdb_labels l;
        if (promql__lb_make(ev, &b, &l))
            goto outo;
        promql__key_labels(&ev->key, &l);
        long id = promql__smap_get(&groups, buf_head(&ev->key), buf_used(&ev->key), true);
        if (id < 0) {
            tsdb_labels_free(&l);
            promql__oom(ev);
            goto outo;
        }
        if ((size_t)id == ng) {
            glab[ng++] = l;
        } else {
            tsdb_labels_free(&l);
        }
        gid[si] = id;
    }
    if (!promql__group_members(ev, gid, in->ns, ng, &order, &first))
        goto outo;
    for (size_t g = 0; g < ng && !promql__stopped(ev); g++) {
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
            if (!d && !(d = promql__out_series(ev, &o, &glab[g], true, false)))   /* takes glab[g] */
                break;
            if (!promql__out_put(ev, d, i, x))
                break;
        }
    }
outo:
    res = promql__outset_done(ev, &o);
    for (size_t g = 0; g < ng; g++)
        tsdb_labels_free(&glab[g]);
out:
    free(order);
    free(first);
    promql__smap_free(&groups);
    free(gid);
    free(ub);
    free(bk);
    free(glab);
    promql__val_free(ev, q);
    promql__val_free(ev, in);
    return res;
}

struct pq_val *promql__eval_call(struct promql_ev *ev, const struct promql_node *n)
{
    const char *f = n->func->name;
    for (size_t i = 0; i < ARRAY_SIZE(mfns); i++)
        if (strcmp(f, mfns[i].name) == 0)
            return eval_matrix_call(ev, n, (int)i);
    if (!strcmp(f, "time") || !strcmp(f, "pi")) {
        struct pq_val *v = promql__val_new(ev, PROMQL_SCALAR);
        if (v)
            for (size_t i = 0; i < ev->nsteps; i++)
                v->sc[i] = f[0] == 't' ? (double)promql__step_time(ev, i) / 1000 : M_PI;
        return v;
    }
    if (!strcmp(f, "vector")) {
        struct pq_val *s = promql__eval(ev, n->kids[0]);
        if (!s)
            return NULL;
        struct pq_val *v = promql__val_new(ev, PROMQL_VECTOR);
        struct tsdb_labels l = { 0, NULL };
        struct pq_ser *d = v ? promql__val_add(ev, v, &l, true) : NULL;
        if (d)
            for (size_t i = 0; i < ev->nsteps; i++)
                promql__put(ev, d, i, s->sc[i]);
        promql__val_free(ev, s);
        if (ev->err) {
            promql__val_free(ev, v);
            return NULL;
        }
        return v;
    }
    if (!strcmp(f, "scalar")) {
        struct pq_val *in = promql__eval(ev, n->kids[0]);
        if (!in)
            return NULL;
        struct pq_val *v = promql__val_new(ev, PROMQL_SCALAR);
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
        promql__val_free(ev, in);
        return v;
    }
    if (!strcmp(f, "absent")) {
        struct pq_val *in = promql__eval(ev, n->kids[0]);
        if (!in)
            return NULL;
        uint8_t *present = calloc(ev->nsteps, 1);
        struct pq_val *v = NULL;
        if (!present) {
            promql__oom(ev);
        } else {
            for (size_t si = 0; si < in->ns; si++)
                for (size_t i = 0; i < ev->nsteps; i++)
                    present[i] |= in->s[si].ok[i];
            v = absent_labels_value(ev, promql__unparen(n->kids[0]), present);
        }
        free(present);
        promql__val_free(ev, in);
        return v;
    }
    if (!strcmp(f, "label_replace") || !strcmp(f, "label_join"))
        return eval_label_fn(ev, n);
    if (!strcmp(f, "histogram_quantile"))
        return eval_histogram_quantile(ev, n);
    if (!strcmp(f, "histogram_count") || !strcmp(f, "histogram_sum") || !strcmp(f, "histogram_fraction")) {
        /* native histograms only: float series give nothing */
        for (size_t i = 0; i < n->nkids; i++) {
            struct pq_val *a = promql__eval(ev, n->kids[i]);
            if (!a)
                return NULL;
            promql__val_free(ev, a);
        }
        return promql__val_new(ev, PROMQL_VECTOR);
    }
    if (n->nkids == 0) {
        /* date functions default to vector(time()) */
        struct pq_val *v = promql__val_new(ev, PROMQL_VECTOR);
        struct tsdb_labels l = { 0, NULL };
        struct pq_ser *d = v ? promql__val_add(ev, v, &l, true) : NULL;
        int date = -1;
        for (size_t i = 0; i < ARRAY_SIZE(date_names); i++)
            if (strcmp(f, date_names[i]) == 0)
                date = (int)i;
        if (d && date >= 0)
            for (size_t i = 0; i < ev->nsteps; i++)
                promql__put(ev, d, i, date_part((enum dfn)date, (double)promql__step_time(ev, i) / 1000));
        if (ev->err) {
            promql__val_free(ev, v);
            return NULL;
        }
        return v;
    }
    return eval_simple(ev, n);
}
