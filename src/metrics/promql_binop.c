/* promql_binop.c - PromQL binary operators: arithmetic, comparison (bool),
 * set operators, vector matching with on/ignoring and group_left/group_right. */
#include "promql_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    promql__val_free(ev, r);
    return l;
}

/* vector op scalar (or scalar op vector when swap). */
static struct pq_val *binop_vs(struct promql_ev *ev, const struct promql_node *n, struct pq_val *vec,
                               struct pq_val *sc, bool swap)
{
    struct outset o;
    if (!promql__outset_init(ev, &o))
        return NULL;
    bool drop = drops_name(n->op) || n->bool_mod;
    for (size_t si = 0; si < vec->ns && !promql__stopped(ev); si++) {
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
                    if (promql__drop_name(ev, &s->lab, &lab) || !(d = promql__out_series(ev, &o, &lab, true, false)))
                        break;
                } else if (promql__labels_copy(ev, &s->lab, &lab) || !(d = promql__out_series(ev, &o, &lab, true, false))) {
                    break;
                }
            }
            if (!promql__out_put(ev, d, i, x))
                break;
        }
    }
    return promql__outset_done(ev, &o);
}

/* The matching signature of a series: the values of the on() labels, or of
 * all labels but the ignoring() ones and __name__. */
static void signature(struct buf *b, const struct promql_node *n, const struct tsdb_labels *l)
{
    buf_reset(b);
    buf_reserve(b, 1);
    for (uint16_t i = 0; i < l->n; i++) {
        const char *name = l->l[i].name;
        bool listed = promql__in_list(n->labels, n->nlabels, name);
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
        return promql__oom(ev);
    for (size_t i = 0; i < v->ns; i++) {
        signature(&ev->key, n, &v->s[i].lab);
        sig[i] = promql__smap_get(m, buf_head(&ev->key), buf_used(&ev->key), true);
        if (sig[i] < 0) {
            free(sig);
            return promql__oom(ev);
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
    if (!ls || !rs || !lstamp || !rstamp || !ld || !rd || !promql__outset_init(ev, &o)) {
        promql__oom(ev);
        goto out;
    }
    for (size_t i = 0; i < ev->nsteps && !promql__stopped(ev); i++) {
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
            if (!ld[k] && !(ld[k] = promql__out_copy(ev, &o, &l->s[k].lab)))
                break;
            if (!promql__out_put(ev, &o.val->s[ld[k] - 1], i, l->s[k].v[i]))
                break;
        }
        if (n->op != PQ_OR || ev->err)
            continue;
        for (size_t k = 0; k < r->ns; k++) {
            if (!r->s[k].ok[i] || lstamp[rs[k]] == st)
                continue;
            if (!rd[k] && !(rd[k] = promql__out_copy(ev, &o, &r->s[k].lab)))
                break;
            if (!promql__out_put(ev, &o.val->s[rd[k] - 1], i, r->s[k].v[i]))
                break;
        }
    }
out:;
    struct pq_val *res = o.val ? promql__outset_done(ev, &o) : NULL;
    promql__smap_free(&m);
    free(ls);
    free(rs);
    free(lstamp);
    free(rstamp);
    free(ld);
    free(rd);
    promql__val_free(ev, l);
    promql__val_free(ev, r);
    return res;
}

/* The labels of a vector-matching result (Prometheus's resultMetric). */
static int result_labels(struct promql_ev *ev, const struct promql_node *n, const struct tsdb_labels *l,
                         const struct tsdb_labels *r, struct tsdb_labels *out)
{
    struct lb b;
    promql__lb_from(&b, l);
    if (drops_name(n->op) || n->bool_mod)
        promql__lb_del(&b, "__name__");
    if (n->card == 0) {
        if (n->on) {
            promql__lb_keep(&b, n->labels, n->nlabels);
        } else {
            for (size_t i = 0; i < n->nlabels; i++)
                promql__lb_del(&b, n->labels[i]);
        }
    }
    for (size_t i = 0; i < n->ninclude; i++) {
        const char *v = tsdb_labels_get(r, n->include[i]);
        if (v && *v)
            promql__lb_set(&b, n->include[i], v);
        else
            promql__lb_del(&b, n->include[i]);
    }
    return promql__lb_make(ev, &b, out);
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
    if (!ls || !rs || !rstamp || !mstamp || !rat || !cache_r || !cache_o || !promql__outset_init(ev, &o)) {
        promql__oom(ev);
        goto out;
    }
    for (size_t i = 0; i < ev->nsteps && !promql__stopped(ev); i++) {
        if (!any_at(L, i) || !any_at(R, i))
            continue;
        uint32_t st = (uint32_t)i + 1;
        for (size_t k = 0; k < R->ns; k++) {
            if (!R->s[k].ok[i])
                continue;
            long sg = rs[k];
            if (rstamp[sg] == st) {
                struct lb b;
                promql__lb_from(&b, &R->s[k].lab);
                if (n->on)
                    promql__lb_keep(&b, n->labels, n->nlabels);
                else {
                    for (size_t j = 0; j < n->nlabels; j++)
                        promql__lb_del(&b, n->labels[j]);
                    promql__lb_del(&b, "__name__");
                }
                struct tsdb_labels ml;
                if (promql__lb_make(ev, &b, &ml))
                    break;
                buf_reset(&eb);
                promql__labels_str(&eb, &ml);
                buf_puts(&eb, " on the ");
                buf_puts(&eb, swapped ? "left" : "right");
                buf_puts(&eb, " hand-side of the operation: [");
                promql__labels_str(&eb, &R->s[k].lab);
                buf_puts(&eb, ", ");
                promql__labels_str(&eb, &R->s[rat[sg]].lab);
                buf_putc(&eb, 0);
                tsdb_labels_free(&ml);
                promql__fail(ev, PROMQL_EEXEC, "found duplicate series for the match group %s];many-to-many matching not allowed: matching labels must be unique on one side",
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
                    promql__fail(ev, PROMQL_EEXEC, "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
                    break;
                }
                mstamp[sg] = st;
            }
            if (!cache_o[k] || cache_r[k] != rk) {
                struct tsdb_labels lab;
                if (result_labels(ev, n, &L->s[k].lab, &R->s[rk].lab, &lab))
                    break;
                struct pq_ser *d = promql__out_series(ev, &o, &lab, true, false);
                if (!d)
                    break;
                cache_o[k] = (size_t)(d - o.val->s) + 1;
                cache_r[k] = rk;
            }
            struct pq_ser *d = &o.val->s[cache_o[k] - 1];
            if (d->ok[i]) {
                promql__fail(ev, PROMQL_EEXEC, n->card ? "multiple matches for labels: grouping labels must ensure unique matches"
                                               : "vector cannot contain metrics with the same labelset");
                break;
            }
            if (!promql__put(ev, d, i, x))
                break;
        }
    }
out:;
    struct pq_val *res = o.val ? promql__outset_done(ev, &o) : NULL;
    buf_free(&eb);
    promql__smap_free(&m);
    free(ls);
    free(rs);
    free(rstamp);
    free(mstamp);
    free(rat);
    free(cache_r);
    free(cache_o);
    promql__val_free(ev, l);
    promql__val_free(ev, r);
    return res;
}

struct pq_val *promql__eval_bin(struct promql_ev *ev, const struct promql_node *n)
{
    struct pq_val *l = promql__eval(ev, n->kids[0]);
    if (!l)
        return NULL;
    struct pq_val *r = promql__eval(ev, n->kids[1]);
    if (!r) {
        promql__val_free(ev, l);
        return NULL;
    }
    if (l->type == PROMQL_SCALAR && r->type == PROMQL_SCALAR)
        return binop_ss(ev, n, l, r);
    if (l->type == PROMQL_VECTOR && r->type == PROMQL_VECTOR)
        return binop_vv(ev, n, l, r);
    struct pq_val *res = l->type == PROMQL_VECTOR ? binop_vs(ev, n, l, r, false)
                                                  : binop_vs(ev, n, r, l, true);
    promql__val_free(ev, l);
    promql__val_free(ev, r);
    return res;
}

struct pq_val *promql__eval_neg(struct promql_ev *ev, const struct promql_node *n)
{
    struct pq_val *v = promql__eval(ev, n->kids[0]);
    if (!v)
        return NULL;
    if (v->type == PROMQL_SCALAR) {
        for (size_t i = 0; i < ev->nsteps; i++)
            v->sc[i] = -v->sc[i];
        return v;
    }
    struct outset o;
    if (!promql__outset_init(ev, &o)) {
        promql__val_free(ev, v);
        return NULL;
    }
    for (size_t si = 0; si < v->ns && !ev->err; si++) {
        struct tsdb_labels lab;
        if (promql__drop_name(ev, &v->s[si].lab, &lab))
            break;
        struct pq_ser *d = promql__out_series(ev, &o, &lab, true, true);
        if (!d)
            break;
        for (size_t i = 0; i < ev->nsteps; i++)
            if (v->s[si].ok[i] && !promql__put(ev, d, i, -v->s[si].v[i]))
                break;
    }
    promql__val_free(ev, v);
    return promql__outset_done(ev, &o);
}
