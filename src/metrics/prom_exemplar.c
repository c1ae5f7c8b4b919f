/* prom_exemplar.c - exemplar storage and /api/v1/query_exemplars.
 *
 * Scraped OpenMetrics exemplars (a trace id and one observation, attached to a
 * histogram bucket or a counter) go into one circular buffer of max_exemplars
 * records, oldest overwritten first, as Prometheus's exemplar storage keeps them.
 * A record names its series by reference; a scrape that shows the same exemplar
 * again (same labels, value and time as the series' newest) adds nothing, an older
 * one is refused as out of order. Memory only: exemplars do not survive a restart.
 * Everything runs on the role's loop thread.
 */
#include "prom_internal.h"

#include "core/hmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Packed label pairs ("name\0value\0..."): a trace id takes 42 bytes. */
#define EX_LABEL_BYTES 112

struct prom_ex_rec {
    uint64_t ref;                   /* the series; 0: an empty slot */
    int64_t t;
    double v;
    uint16_t nbytes;
    char lab[EX_LABEL_BYTES];
};

void prom_exemplars_init(struct prom_exemplars *x, size_t max)
{
    memset(x, 0, sizeof(*x));
    x->max = max;
}

void prom_exemplars_free(struct prom_exemplars *x)
{
    free(x->ring);
    hmap_free(&x->last);
    memset(x, 0, sizeof(*x));
}

void prom_exemplars_resize(struct prom_exemplars *x, size_t max)
{
    if (max == x->max)
        return;
    /* a new size starts empty (Prometheus keeps what fits; a reload that changes
     * max_exemplars is rare and the records are only samples of traces) */
    prom_exemplars_free(x);
    x->max = max;
}

static size_t pack(const struct prom_exemplar *e, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < e->nlabels; i++) {
        size_t a = strlen(e->labels[i].name) + 1, b = strlen(e->labels[i].value) + 1;
        if (n + a + b > EX_LABEL_BYTES)
            return SIZE_MAX;
        memcpy(out + n, e->labels[i].name, a);
        memcpy(out + n + a, e->labels[i].value, b);
        n += a + b;
    }
    return n;
}

int prom_exemplars_add(struct prom_exemplars *x, uint64_t ref, const struct prom_exemplar *e, int64_t scrape_ts)
{
    if (!x->max)
        return 0;
    struct prom_ex_rec r = { .ref = ref, .t = e->has_ts ? e->ts_ms : scrape_ts, .v = e->value };
    size_t n = pack(e, r.lab);
    if (n == SIZE_MAX) {
        x->refused++;
        return -E2BIG;
    }
    r.nbytes = (uint16_t)n;
    uintptr_t at = (uintptr_t)hmap_get(&x->last, &ref, sizeof(ref));
    if (at && x->ring[at - 1].ref == ref) {
        const struct prom_ex_rec *l = &x->ring[at - 1];
        if (l->t == r.t && l->v == r.v && l->nbytes == r.nbytes && memcmp(l->lab, r.lab, n) == 0)
            return 0;                           /* shown again by the next scrape */
        if (r.t < l->t) {
            x->refused++;
            return -ERANGE;                     /* out of order */
        }
    }
    if (x->n < x->max && x->next == x->cap) {  /* grow until max */
        size_t nc = x->cap ? x->cap * 2 : 256;
        if (nc > x->max)
            nc = x->max;
        struct prom_ex_rec *nr = realloc(x->ring, nc * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        x->ring = nr;
        x->cap = nc;
    }
    size_t i = x->next;
    if (x->n == x->max) {
        /* the oldest record goes: so does its series' entry if it was the newest,
         * so that the map holds only series still in the buffer */
        uint64_t old = x->ring[i].ref;
        if ((uintptr_t)hmap_get(&x->last, &old, sizeof(old)) == i + 1)
            hmap_del(&x->last, &old, sizeof(old));
    }
    x->ring[i] = r;
    x->next = (i + 1) % x->max;
    if (x->n < x->max)
        x->n++;
    if (hmap_put(&x->last, &ref, sizeof(ref), (void *)(uintptr_t)(i + 1)))
        return -ENOMEM;
    x->appended++;
    return 0;
}

/* The selectors of a query: each vector or matrix selector's matchers. */
static void collect_selectors(const struct promql_node *n, const struct promql_node ***out, size_t *nout,
                              size_t cap)
{
    if (!n)
        return;
    if ((n->kind == PQ_VSEL || n->kind == PQ_MSEL) && *nout < cap)
        (*out)[(*nout)++] = n;
    for (size_t i = 0; i < n->nkids; i++)
        collect_selectors(n->kids[i], out, nout, cap);
}

static bool selector_matches(const struct promql_node *sel, const struct tsdb_labels *l)
{
    for (size_t i = 0; i < sel->nm; i++) {
        const char *v = tsdb_labels_get(l, sel->m[i].name);
        if (!tsdb_matcher_matches(&sel->m[i], v ? v : ""))
            return false;
    }
    return true;
}

/* The packed pairs of a record as a JSON object. */
static void packed_json(struct buf *b, const char *p, size_t n)
{
    buf_putc(b, '{');
    for (size_t o = 0, k = 0; o < n; k++) {
        const char *name = p + o, *value = name + strlen(name) + 1;
        prom__pair_json(b, k, name, value);
        o = (size_t)(value - p) + strlen(value) + 1;
    }
    buf_putc(b, '}');
}

#define MAX_SELECTORS 64

int prom_exemplars_query(const struct prom_exemplars *x, const struct tsdb *db, const struct promql_node *q,
                         int64_t start, int64_t end, struct buf *b)
{
    const struct promql_node *selv[MAX_SELECTORS], **sels = selv;
    size_t nsel = 0;
    collect_selectors(q, &sels, &nsel, MAX_SELECTORS);
    struct hmap out = { 0 };            /* series ref -> its exemplars, as JSON */
    uint64_t *order = NULL;             /* the series in the order first met */
    size_t norder = 0, caporder = 0;
    int ret = 0;
    size_t first = x->n < x->max ? 0 : x->next;
    for (size_t k = 0; k < x->n && !ret; k++) {
        const struct prom_ex_rec *r = &x->ring[(first + k) % x->max];
        if (r->t < start || r->t > end)
            continue;
        const struct tsdb_series *s = tsdb_series_by_ref(db, r->ref);
        if (!s || s->dead)
            continue;
        bool hit = false;
        for (size_t i = 0; i < nsel && !hit; i++)
            hit = selector_matches(sels[i], &s->labels);
        if (!hit)
            continue;
        struct buf *e = hmap_get(&out, &r->ref, sizeof(r->ref));
        if (!e) {
            if (norder == caporder) {
                size_t nc = caporder ? caporder * 2 : 16;
                uint64_t *no = realloc(order, nc * sizeof(*no));
                if (!no) {
                    ret = -ENOMEM;
                    break;
                }
                order = no;
                caporder = nc;
            }
            if (!(e = calloc(1, sizeof(*e))) || hmap_put(&out, &r->ref, sizeof(r->ref), e)) {
                free(e);
                ret = -ENOMEM;
                break;
            }
            order[norder++] = r->ref;
        } else {
            buf_putc(e, ',');
        }
        buf_puts(e, "{\"labels\":");
        packed_json(e, r->lab, r->nbytes);
        char v[64];
        prom_format_float(v, sizeof(v), r->v);
        buf_printf(e, ",\"value\":\"%s\",\"timestamp\":%.3f}", v, (double)r->t / 1000.0);
    }
    buf_puts(b, "{\"status\":\"success\",\"data\":[");
    for (size_t i = 0; i < norder; i++) {
        struct buf *e = hmap_get(&out, &order[i], sizeof(order[i]));
        const struct tsdb_series *s = tsdb_series_by_ref(db, order[i]);
        buf_puts(b, i ? ",{\"seriesLabels\":" : "{\"seriesLabels\":");
        prom__labels_json(b, s->labels.l, s->labels.n);
        buf_puts(b, ",\"exemplars\":[");
        buf_append(b, buf_head(e), buf_used(e));
        buf_puts(b, "]}");
    }
    buf_puts(b, "]}");
    for (size_t i = 0; i < norder; i++) {
        struct buf *e = hmap_get(&out, &order[i], sizeof(order[i]));
        buf_free(e);
        free(e);
    }
    hmap_free(&out);
    free(order);
    return ret;
}
