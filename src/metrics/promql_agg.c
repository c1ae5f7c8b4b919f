/* promql_agg.c - PromQL aggregation operators (sum, avg, topk, quantile,
 * count_values, ...) with by/without. */
#include "promql_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

struct pq_val *promql__eval_agg(struct promql_ev *ev, const struct promql_node *n)
{
    struct pq_val *param = NULL, *in = NULL, *res = NULL;
    if (n->nkids > 1 && n->agg != PQ_COUNT_VALUES && !(param = promql__eval(ev, n->kids[1])))
        return NULL;
    if (!(in = promql__eval(ev, n->kids[0]))) {
        promql__val_free(ev, param);
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
    if (!gid || !promql__outset_init(ev, &o)) {
        promql__oom(ev);
        goto out;
    }
    /* group of each input series */
    for (size_t si = 0; si < ns; si++) {
        struct lb b;
        promql__lb_from(&b, &in->s[si].lab);
        if (n->without) {
            for (size_t k = 0; k < n->nlabels; k++)
                promql__lb_del(&b, n->labels[k]);
            promql__lb_del(&b, "__name__");
        } else {
            promql__lb_keep(&b, n->labels, n->nlabels);
        }
        struct tsdb_labels l;
        if (promql__lb_make(ev, &b, &l))
            goto out;
        promql__key_labels(&ev->key, &l);
        long id = promql__smap_get(&groups, buf_head(&ev->key), buf_used(&ev->key), true);
        if (id < 0) {
            tsdb_labels_free(&l);
            promql__oom(ev);
            goto out;
        }
        if ((size_t)id == ng) {
            if (ng == capg) {
                size_t nc = capg ? capg * 2 : 16;
                struct tsdb_labels *a = realloc(glab, nc * sizeof(*a));
                if (!a) {
                    tsdb_labels_free(&l);
                    promql__oom(ev);
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
            promql__oom(ev);
            goto topk_out;
        }
        if (!promql__group_members(ev, gid, ns, ng, &order, &first))
            goto topk_out;
        for (size_t i = 0; i < nst && !promql__stopped(ev); i++) {
            double p = param ? param->sc[i] : 0;
            int64_t k = 0;
            if (a == PQ_TOPK || a == PQ_BOTTOMK) {
                if (!(p >= -9.2e18 && p <= 9.2e18)) {
                    promql__fail(ev, PROMQL_EEXEC, "Scalar value %g overflows int64", p);
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
                    double x = promql__quantile(p, vals, m);
                    if (!outs[g] && !(outs[g] = promql__out_copy(ev, &o, &glab[g])))
                        break;
                    if (!promql__out_put(ev, &o.val->s[outs[g] - 1], i, x))
                        break;
                    continue;
                }
                if (a == PQ_COUNT_VALUES) {
                    for (size_t j = 0; j < m; j++) {
                        promql_format_float(label_val, sizeof(label_val), vals[j]);
                        struct lb b;
                        promql__lb_from(&b, &glab[g]);
                        promql__lb_set(&b, promql_str(n->kids[1]), label_val);
                        struct tsdb_labels l;
                        if (promql__lb_make(ev, &b, &l))
                            break;
                        promql__key_labels(&ev->key, &l);
                        long id = promql__smap_get(&cv, buf_head(&ev->key), buf_used(&ev->key), true);
                        if (id < 0) {
                            tsdb_labels_free(&l);
                            promql__oom(ev);
                            break;
                        }
                        if ((size_t)id == ncvs) {
                            size_t *na = realloc(cvs, (ncvs + 1) * sizeof(*na));
                            if (!na) {
                                tsdb_labels_free(&l);
                                promql__oom(ev);
                                break;
                            }
                            cvs = na;
                            struct pq_ser *d = promql__out_series(ev, &o, &l, true, false);
                            if (!d)
                                break;
                            cvs[ncvs++] = (size_t)(d - o.val->s);
                        } else {
                            tsdb_labels_free(&l);
                        }
                        struct pq_ser *d = &o.val->s[cvs[id]];
                        if (!promql__put(ev, d, i, d->ok[i] ? d->v[i] + 1 : 1))
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
                    if (!outs[si] && !(outs[si] = promql__out_copy(ev, &o, &in->s[si].lab)))
                        break;
                    struct pq_ser *d = &o.val->s[outs[si] - 1];
                    if (!promql__out_put(ev, d, i, in->s[si].v[i]))
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
        promql__smap_free(&cv);
        goto out;
    }
    /* the running aggregations: state per group and step */
    size_t cells = ng * nst;
    acc = malloc((cells + 1) * sizeof(double));
    mean = malloc((cells + 1) * sizeof(double));
    cnt = calloc(cells + 1, sizeof(double));
    if (!acc || !mean || !cnt) {
        promql__oom(ev);
        goto out;
    }
    for (size_t si = 0; si < ns && !promql__stopped(ev); si++) {
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
                if (!(d = promql__val_add(ev, o.val, &glab[g], true)))
                    break;
            }
            if (!promql__put(ev, d, i, x))
                break;
        }
    }
out:
    res = promql__outset_done(ev, &o);
    for (size_t g = 0; g < ng; g++)
        tsdb_labels_free(&glab[g]);
    free(glab);
    promql__smap_free(&groups);
    free(gid);
    free(acc);
    free(mean);
    free(cnt);
    promql__val_free(ev, param);
    promql__val_free(ev, in);
    return res;
}
