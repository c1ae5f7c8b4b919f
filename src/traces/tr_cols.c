/* tr_cols.c - a block page's search columns: writing them from linked trace views
 * and building trace views back from them (see traces_internal.h for the layout).
 *
 * Every number is a varint (starts and durations zigzag, starts as the difference
 * from the page's previous span); strings are dictionary ids; the attribute
 * columns keep the KeyValue fields as they arrived, so a view built here reads
 * them with the same code as a view of the Span messages.
 */
#include "traces_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TC_MAX_SPANS (1u << 24)             /* per page: far above what 256 KiB holds */

static uint64_t zz(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzz(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static uint32_t intern(struct hmap *m, uint32_t *n, struct buf *table, const void *p, size_t len)
{
    uintptr_t id = (uintptr_t)hmap_get(m, len ? p : "", len);
    if (id)
        return (uint32_t)(id - 1);
    if (hmap_put(m, len ? p : "", len, (void *)(uintptr_t)(*n + 1)))
        return UINT32_MAX;
    pb_put_varint(table, len);
    buf_append(table, p, len);
    return (*n)++;
}

/* The bytes of every field number f of message m, keys included. */
static void fields_of(struct buf *out, struct pb m, uint32_t want)
{
    while (m.p < m.end) {
        const uint8_t *at = m.p;
        uint32_t f;
        int wt;
        struct pb sub;
        uint64_t x;
        if (pb_field(&m, &f, &wt, &sub, &x))
            return;
        if (f == want && wt == 2)
            buf_append(out, at, (size_t)(m.p - at));
    }
}

int tc_add(struct tc_writer *w, const struct tr_trace_view *v)
{
    struct buf tmp = BUF_INIT;
    pb_put_varint(&w->col[TC_TRACE], v->n);
    for (size_t i = 0; i < v->n; i++) {
        const struct tr_span *s = &v->s[i];
        /* 0: a root (no parent id), 1: a parent not in the trace, 2 + its index */
        pb_put_varint(&w->col[TC_PARENT], s->parent >= 0 ? (uint64_t)s->parent + 2 : s->pid ? 1 : 0);
        pb_put_varint(&w->col[TC_START], zz(s->start - w->prev_start));
        w->prev_start = s->start;
        pb_put_varint(&w->col[TC_DUR], zz(s->end - s->start));
        pb_put_varint(&w->col[TC_KS], s->kind);
        pb_put_varint(&w->col[TC_KS], s->status);
        uint32_t ids[3] = {
            intern(&w->dict, &w->ndict, &w->col[TC_DICT], s->service.p, s->service.n),
            intern(&w->dict, &w->ndict, &w->col[TC_DICT], s->name.p, s->name.n),
            intern(&w->dict, &w->ndict, &w->col[TC_DICT], s->status_msg.p, s->status_msg.n),
        };
        buf_reset(&tmp);
        fields_of(&tmp, s->res, 1);
        uint32_t rid = intern(&w->res, &w->nres, &w->col[TC_RES], buf_head(&tmp), buf_used(&tmp));
        if (ids[0] == UINT32_MAX || ids[1] == UINT32_MAX || ids[2] == UINT32_MAX || rid == UINT32_MAX) {
            buf_free(&tmp);
            return -ENOMEM;
        }
        pb_put_varint(&w->col[TC_SVC], ids[0]);
        pb_put_varint(&w->col[TC_NAME], ids[1]);
        pb_put_varint(&w->col[TC_SMSG], ids[2]);
        pb_put_varint(&w->resids, rid);
        buf_reset(&tmp);
        fields_of(&tmp, s->raw, 9);
        pb_put_varint(&w->col[TC_ATTR], buf_used(&tmp));
        buf_append(&w->col[TC_ATTR], buf_head(&tmp), buf_used(&tmp));
    }
    buf_free(&tmp);
    w->ntraces++;
    w->nspans += (uint32_t)v->n;
    return 0;
}

void tc_finish(struct tc_writer *w)
{
    /* the dictionary and the resource table lead with their counts */
    struct buf b = BUF_INIT;
    pb_put_varint(&b, w->ndict);
    buf_append(&b, buf_head(&w->col[TC_DICT]), buf_used(&w->col[TC_DICT]));
    buf_free(&w->col[TC_DICT]);
    w->col[TC_DICT] = b;
    b = BUF_INIT;
    pb_put_varint(&b, w->nres);
    buf_append(&b, buf_head(&w->col[TC_RES]), buf_used(&w->col[TC_RES]));
    buf_append(&b, buf_head(&w->resids), buf_used(&w->resids));
    buf_free(&w->col[TC_RES]);
    w->col[TC_RES] = b;
    buf_reset(&w->resids);
}

void tc_reset(struct tc_writer *w)
{
    for (int c = 0; c < TC_N; c++)
        buf_reset(&w->col[c]);
    buf_reset(&w->resids);
    hmap_free(&w->dict);
    hmap_free(&w->res);
    memset(&w->dict, 0, sizeof(w->dict));
    memset(&w->res, 0, sizeof(w->res));
    w->ndict = w->nres = 0;
    w->prev_start = 0;
    w->ntraces = w->nspans = 0;
}

void tc_free(struct tc_writer *w)
{
    tc_reset(w);
    for (int c = 0; c < TC_N; c++)
        buf_free(&w->col[c]);
    buf_free(&w->resids);
}

/* ---- reading ---- */

static struct pb col_pb(const struct buf *b)
{
    const uint8_t *p = (const uint8_t *)buf_head(b);
    return (struct pb){ p, p + buf_used(b) };
}

static int get(struct pb *c, uint64_t *v)
{
    return pb_varint(c, v) ? -EINVAL : 0;
}

static int fetch(struct tc_page *pg, int col)
{
    int r = pg->fetch(pg->arg, col, &pg->raw[col]);
    if (!r)
        pg->bytes += buf_used(&pg->raw[col]);
    return r;
}

/* A table of length-prefixed strings: count, then each. */
static int read_table(struct pb *c, struct strv **out, uint32_t *n)
{
    uint64_t cnt, l;
    if (get(c, &cnt) || cnt > (uint64_t)(c->end - c->p))
        return -EINVAL;
    struct strv *t = calloc(cnt ? cnt : 1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (uint64_t i = 0; i < cnt; i++) {
        if (get(c, &l) || l > (uint64_t)(c->end - c->p)) {
            free(t);
            return -EINVAL;
        }
        t[i] = strv_make((const char *)c->p, l);
        c->p += l;
    }
    *out = t;
    *n = (uint32_t)cnt;
    return 0;
}

int tc_page_load(struct tc_page *pg, int (*fetchfn)(void *arg, int col, struct buf *out), void *arg)
{
    tc_page_free(pg);
    pg->fetch = fetchfn;
    pg->arg = arg;
    int r = 0;
    for (int c = 0; c < TC_LAZY_FROM && !r; c++)
        r = fetch(pg, c);
    if (r)
        return r;
    struct pb c = col_pb(&pg->raw[TC_TRACE]);
    uint64_t x, total = 0;
    uint32_t nt = 0;
    while (c.p < c.end) {
        if (get(&c, &x) || (total += x) > TC_MAX_SPANS)
            return -EINVAL;
        nt++;
    }
    pg->ntraces = nt;
    pg->nspans = (uint32_t)total;
    size_t ns = total ? total : 1;
    pg->first = calloc(nt + 1, sizeof(*pg->first));
    pg->parent = calloc(ns, sizeof(*pg->parent));
    pg->start = calloc(ns, sizeof(*pg->start));
    pg->dur = calloc(ns, sizeof(*pg->dur));
    pg->kind = calloc(ns, sizeof(*pg->kind));
    pg->status = calloc(ns, sizeof(*pg->status));
    pg->svc = calloc(ns, sizeof(*pg->svc));
    pg->name = calloc(ns, sizeof(*pg->name));
    pg->smsg = calloc(ns, sizeof(*pg->smsg));
    if (!pg->first || !pg->parent || !pg->start || !pg->dur || !pg->kind || !pg->status || !pg->svc || !pg->name ||
        !pg->smsg)
        return -ENOMEM;
    c = col_pb(&pg->raw[TC_TRACE]);
    for (uint32_t t = 0, at = 0; t < nt; t++) {
        get(&c, &x);
        pg->first[t] = at;
        at += (uint32_t)x;
        pg->first[t + 1] = at;
    }
    struct pb d = col_pb(&pg->raw[TC_DICT]);
    if ((r = read_table(&d, &pg->dict, &pg->ndict)))
        return r;
    struct pb par = col_pb(&pg->raw[TC_PARENT]), st = col_pb(&pg->raw[TC_START]), du = col_pb(&pg->raw[TC_DUR]),
              ks = col_pb(&pg->raw[TC_KS]), sv = col_pb(&pg->raw[TC_SVC]), nm = col_pb(&pg->raw[TC_NAME]),
              sm = col_pb(&pg->raw[TC_SMSG]);
    int64_t prev = 0;
    for (uint32_t t = 0; t < nt; t++) {
        uint32_t n = pg->first[t + 1] - pg->first[t];
        for (uint32_t i = pg->first[t]; i < pg->first[t + 1]; i++) {
            uint64_t p, s, du_, k, stt, a, b, m;
            if (get(&par, &p) || get(&st, &s) || get(&du, &du_) || get(&ks, &k) || get(&ks, &stt) ||
                get(&sv, &a) || get(&nm, &b) || get(&sm, &m) || p > (uint64_t)n + 1 || p == i - pg->first[t] + 2 ||
                a >= pg->ndict || b >= pg->ndict || m >= pg->ndict)
                return -EINVAL;
            pg->parent[i] = (int32_t)p - 2;     /* -2: a root, -1: an orphan */
            prev += unzz(s);
            pg->start[i] = prev;
            pg->dur[i] = unzz(du_);
            pg->kind[i] = (uint32_t)k;
            pg->status[i] = (uint32_t)stt;
            pg->svc[i] = (uint32_t)a;
            pg->name[i] = (uint32_t)b;
            pg->smsg[i] = (uint32_t)m;
        }
    }
    return 0;
}

/* The attribute columns, read on first use; a page whose attribute columns cannot
 * be read gives its spans no attributes (and says so once). */
static int load_attrs(struct tc_page *pg)
{
    pg->attrs_loaded = true;
    size_t ns = pg->nspans ? pg->nspans : 1;
    pg->attr = calloc(ns, sizeof(*pg->attr));
    pg->res = calloc(ns, sizeof(*pg->res));
    if (!pg->attr || !pg->res || fetch(pg, TC_ATTR) || fetch(pg, TC_RES))
        goto bad;
    struct pb a = col_pb(&pg->raw[TC_ATTR]);
    for (uint32_t i = 0; i < pg->nspans; i++) {
        uint64_t l;
        if (get(&a, &l) || l > (uint64_t)(a.end - a.p))
            goto bad;
        pg->attr[i] = (struct pb){ a.p, a.p + l };
        a.p += l;
    }
    struct pb r = col_pb(&pg->raw[TC_RES]);
    struct strv *tab = NULL;
    uint32_t nres = 0;
    if (read_table(&r, &tab, &nres))
        goto bad;
    for (uint32_t i = 0; i < pg->nspans; i++) {
        uint64_t id;
        if (get(&r, &id) || id >= nres) {
            free(tab);
            goto bad;
        }
        pg->res[i] = (struct pb){ (const uint8_t *)tab[id].p, (const uint8_t *)tab[id].p + tab[id].n };
    }
    free(tab);
    return 0;
bad:
    pg->attrs_bad = true;
    free(pg->attr);
    free(pg->res);
    pg->attr = pg->res = NULL;
    return -EINVAL;
}

static int view_load(struct tr_lazy *l)
{
    struct tc_page *pg = (struct tc_page *)((char *)l - offsetof(struct tc_page, lazy));
    if (!pg->attrs_loaded)
        load_attrs(pg);
    if (pg->attrs_bad)
        return -EINVAL;
    for (size_t i = 0; i < pg->v->n; i++) {
        pg->v->s[i].raw = pg->attr[pg->v_first + i];
        pg->v->s[i].res = pg->res[pg->v_first + i];
    }
    return 0;
}

int tc_page_view(struct tc_page *pg, uint32_t t, struct tr_trace_view *v)
{
    tr_view_reset(v);
    if (t >= pg->ntraces)
        return -EINVAL;
    uint32_t f = pg->first[t], n = pg->first[t + 1] - f;
    if (n > v->cap) {
        struct tr_span *ns = realloc(v->s, n * sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        v->s = ns;
        v->cap = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct tr_span *s = &v->s[i];
        uint32_t k = f + i;
        memset(s, 0, sizeof(*s));
        s->name = pg->dict[pg->name[k]];
        s->service = pg->dict[pg->svc[k]];
        s->status_msg = pg->dict[pg->smsg[k]];
        s->state = strv_make("", 0);
        s->kind = pg->kind[k];
        s->status = pg->status[k];
        s->start = pg->start[k];
        s->end = pg->start[k] + pg->dur[k];
        s->parent = pg->parent[k] < 0 ? -1 : pg->parent[k];
        if (!i || s->start < v->start)
            v->start = s->start;
        if (!i || s->end > v->end)
            v->end = s->end;
    }
    v->n = n;
    v->root = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (v->s[i].parent >= 0)
            v->s[v->s[i].parent].nchildren++;
        else if (v->root < 0 && pg->parent[f + i] == -2)
            v->root = (int)i;
    }
    pg->v = v;
    pg->v_first = f;
    pg->lazy.load = view_load;
    pg->lazy.done = false;
    v->lazy = &pg->lazy;
    return 0;
}

void tc_page_free(struct tc_page *pg)
{
    for (int c = 0; c < TC_N; c++)
        buf_free(&pg->raw[c]);
    free(pg->first);
    free(pg->parent);
    free(pg->start);
    free(pg->dur);
    free(pg->kind);
    free(pg->status);
    free(pg->svc);
    free(pg->name);
    free(pg->smsg);
    free(pg->dict);
    free(pg->attr);
    free(pg->res);
    memset(pg, 0, sizeof(*pg));
}
