/* tr_cols.c - a block page's search columns: writing them from linked trace views
 * and building trace views back from them (see traces_internal.h for the layout).
 *
 * Every number is a varint (starts and durations zigzag, starts as the difference
 * from the page's previous span); strings are dictionary ids. A span attribute
 * key's column holds the key's distinct KeyValues (as they arrived), then the
 * spans that have the key (as differences of their index in the page) with the id
 * of theirs; the key directory (TC_KEYS) names the key columns and their sizes. Resources' attributes are a table of
 * their KeyValue fields and an id per span.
 */
#include "traces_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TC_MAX_SPANS (1u << 24)             /* per page: far above what 256 KiB holds */
#define TC_MAX_KEYS 1024                    /* key columns per page; past it the page has none */

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

/* The bytes of every field numbered want of message m, keys included. */
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

/* The key column of key, created on first use; NULL on no memory or past
 * TC_MAX_KEYS (keys_over: searches read such a page's spans for attributes). */
static struct tc_key_w *key_col(struct tc_writer *w, struct strv key)
{
    uintptr_t k = (uintptr_t)hmap_get(&w->keys, key.n ? key.p : "", key.n);
    if (k)
        return &w->akeys[k - 1];
    if (w->nkeys == TC_MAX_KEYS) {
        w->keys_over = true;
        return NULL;
    }
    if (w->nkeys == w->cap_keys) {
        uint32_t nc = w->cap_keys ? w->cap_keys * 2 : 16;
        struct tc_key_w *na = realloc(w->akeys, nc * sizeof(*na));
        if (!na)
            return NULL;
        w->akeys = na;
        w->cap_keys = nc;
    }
    struct tc_key_w *c = &w->akeys[w->nkeys];
    memset(c, 0, sizeof(*c));
    c->klen = key.n;
    if (!(c->key = strv_dup(key)) || hmap_put(&w->keys, key.n ? key.p : "", key.n, (void *)(uintptr_t)(w->nkeys + 1))) {
        free(c->key);
        return NULL;
    }
    w->nkeys++;
    return c;
}

/* A span's own attributes into their key columns: the KeyValues a view of the
 * Span message would read (malformed ones skipped, the message's end at a
 * malformed field). */
static int span_attrs(struct tc_writer *w, struct pb m, uint32_t span)
{
    while (m.p < m.end) {
        uint32_t f;
        int wt;
        struct pb sub;
        uint64_t x;
        struct tr_kv kv;
        if (pb_field(&m, &f, &wt, &sub, &x))
            return 0;
        if (f != 9 || wt != 2 || tr_kv_decode(sub, &kv))
            continue;
        struct tc_key_w *c = key_col(w, kv.key);
        if (!c && w->keys_over)
            continue;
        uint32_t id = c ? intern(&c->vals, &c->nvals, &c->table, sub.p, (size_t)(sub.end - sub.p)) : UINT32_MAX;
        if (id == UINT32_MAX)
            return -ENOMEM;
        pb_put_varint(&c->b, span - c->last);
        c->last = span;
        pb_put_varint(&c->b, id);
    }
    return 0;
}

int tc_add(struct tc_writer *w, const struct tr_trace_view *v)
{
    struct buf tmp = BUF_INIT;
    struct pb last_res = { NULL, NULL };
    uint32_t rid = 0;
    int r = 0;
    pb_put_varint(&w->col[TC_TRACE], v->n);
    for (size_t i = 0; i < v->n && !r; i++) {
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
        /* the spans of a ResourceSpans share its bytes: one lookup per resource */
        if (!i || s->res.p != last_res.p || s->res.end != last_res.end) {
            buf_reset(&tmp);
            fields_of(&tmp, s->res, 1);
            rid = intern(&w->res, &w->nres, &w->col[TC_RES], buf_head(&tmp), buf_used(&tmp));
            last_res = s->res;
        }
        if (ids[0] == UINT32_MAX || ids[1] == UINT32_MAX || ids[2] == UINT32_MAX || rid == UINT32_MAX) {
            r = -ENOMEM;
            break;
        }
        pb_put_varint(&w->col[TC_SVC], ids[0]);
        pb_put_varint(&w->col[TC_NAME], ids[1]);
        pb_put_varint(&w->col[TC_SMSG], ids[2]);
        pb_put_varint(&w->resids, rid);
        r = span_attrs(w, s->raw, w->nspans + (uint32_t)i);
    }
    buf_free(&tmp);
    w->nspans += (uint32_t)v->n;
    return r;
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
    for (uint32_t k = 0; k < w->nkeys; k++) {  /* a key's values, then its spans */
        struct tc_key_w *c = &w->akeys[k];
        b = BUF_INIT;
        pb_put_varint(&b, c->nvals);
        buf_append(&b, buf_head(&c->table), buf_used(&c->table));
        buf_append(&b, buf_head(&c->b), buf_used(&c->b));
        buf_free(&c->b);
        c->b = b;
    }
}

void tc_keys_dir(struct tc_writer *w, const uint32_t *clen)
{
    struct buf *d = &w->col[TC_KEYS];
    buf_reset(d);
    pb_put_varint(d, w->keys_over);     /* 1: some keys have no column */
    pb_put_varint(d, w->nkeys);
    for (uint32_t k = 0; k < w->nkeys; k++) {
        const struct tc_key_w *c = &w->akeys[k];
        pb_put_varint(d, c->klen);
        buf_append(d, c->key, c->klen);         /* a key may hold a NUL */
        pb_put_varint(d, buf_used(&c->b));
        pb_put_varint(d, clen ? clen[k] : buf_used(&c->b));
    }
}

void tc_reset(struct tc_writer *w)
{
    for (int c = 0; c < TC_N; c++)
        buf_reset(&w->col[c]);
    buf_reset(&w->resids);
    for (uint32_t k = 0; k < w->nkeys; k++) {
        free(w->akeys[k].key);
        buf_free(&w->akeys[k].b);
        buf_free(&w->akeys[k].table);
        hmap_free(&w->akeys[k].vals);
    }
    w->nkeys = 0;
    w->keys_over = false;
    hmap_free(&w->dict);
    hmap_free(&w->res);
    hmap_free(&w->keys);
    memset(&w->dict, 0, sizeof(w->dict));
    memset(&w->res, 0, sizeof(w->res));
    memset(&w->keys, 0, sizeof(w->keys));
    w->ndict = w->nres = 0;
    w->prev_start = 0;
    w->nspans = 0;
}

void tc_free(struct tc_writer *w)
{
    tc_reset(w);
    for (int c = 0; c < TC_N; c++)
        buf_free(&w->col[c]);
    buf_free(&w->resids);
    free(w->akeys);
    w->akeys = NULL;
    w->cap_keys = 0;
}

/* ---- reading ---- */

struct tc_key {
    struct strv key;
    uint64_t rel;                           /* past the end of the page's last column */
    uint32_t clen, rlen;
    bool loaded;
    struct buf raw;
    struct pb *vals;                        /* per span of the page: its KeyValue, or empty */
};

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
    int r = pg->fetch(pg->arg, col, 0, 0, 0, &pg->raw[col]);
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

int tc_page_load(struct tc_page *pg, tc_fetch_fn fetchfn, void *arg)
{
    static uint64_t gens;                   /* page loads in this process */
    tc_page_free(pg);
    pg->fetch = fetchfn;
    pg->arg = arg;
    pg->gen = __atomic_add_fetch(&gens, 1, __ATOMIC_RELAXED);
    int r = 0;
    for (int c = 0; c < TC_EAGER && !r; c++)
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

/* The key directory, on the first attribute lookup. */
static int load_keys(struct tc_page *pg)
{
    pg->keys_loaded = true;
    if (fetch(pg, TC_KEYS))
        return -EINVAL;
    struct pb d = col_pb(&pg->raw[TC_KEYS]);
    uint64_t over, n, rel = 0;
    if (get(&d, &over) || over || get(&d, &n) || n > (uint64_t)(d.end - d.p))
        return -EINVAL;                     /* keys without a column: the spans must say */
    pg->keys = calloc(n ? n : 1, sizeof(*pg->keys));
    if (!pg->keys)
        return -ENOMEM;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t l, rl, cl;
        if (get(&d, &l) || l > (uint64_t)(d.end - d.p))
            return -EINVAL;
        struct tc_key *key = &pg->keys[pg->nkeys++];
        key->key = strv_make((const char *)d.p, l);
        d.p += l;
        if (get(&d, &rl) || get(&d, &cl) || rl > TC_MAX_SPANS * 64ull || cl > UINT32_MAX)
            return -EINVAL;
        key->rel = rel;
        key->rlen = (uint32_t)rl;
        key->clen = (uint32_t)cl;
        rel += cl;
    }
    return 0;
}

/* A key's column: the KeyValue of each span that has it. */
static int load_key(struct tc_page *pg, struct tc_key *key)
{
    key->loaded = true;
    int k = (int)(key - pg->keys);
    if (pg->fetch(pg->arg, TC_N + k, key->rel, key->clen, key->rlen, &key->raw))
        return -EINVAL;
    pg->bytes += buf_used(&key->raw);
    pg->keys_read++;
    key->vals = calloc(pg->nspans ? pg->nspans : 1, sizeof(*key->vals));
    if (!key->vals)
        return -ENOMEM;
    struct pb c = col_pb(&key->raw);
    struct strv *tab;
    uint32_t n;
    if (read_table(&c, &tab, &n))
        return -EINVAL;
    uint64_t span = 0;
    int r = 0;
    while (c.p < c.end) {
        uint64_t d, id;
        if (get(&c, &d) || (span += d) >= pg->nspans || get(&c, &id) || id >= n) {
            r = -EINVAL;
            break;
        }
        if (!key->vals[span].p)             /* a key twice in a span: the first, as a Span's reader */
            key->vals[span] = (struct pb){ (const uint8_t *)tab[id].p, (const uint8_t *)tab[id].p + tab[id].n };
    }
    free(tab);
    return r;
}

static int load_res(struct tc_page *pg)
{
    pg->res_loaded = true;
    pg->res = calloc(pg->nspans ? pg->nspans : 1, sizeof(*pg->res));
    if (!pg->res || fetch(pg, TC_RES))
        return -EINVAL;
    struct pb r = col_pb(&pg->raw[TC_RES]);
    struct strv *tab = NULL;
    uint32_t nres = 0;
    if (read_table(&r, &tab, &nres))
        return -EINVAL;
    for (uint32_t i = 0; i < pg->nspans; i++) {
        uint64_t id;
        if (get(&r, &id) || id >= nres) {
            free(tab);
            return -EINVAL;
        }
        pg->res[i] = (struct pb){ (const uint8_t *)tab[id].p, (const uint8_t *)tab[id].p + tab[id].n };
    }
    free(tab);
    return 0;
}

/* The key column named name: a query asks for the same few names span after
 * span, so the answer is kept per name pointer while one view is evaluated. */
static struct tc_key *find_key(struct tc_page *pg, const char *name)
{
    for (uint32_t i = 0; i < pg->ncache; i++)
        if (pg->cache[i].name == name)
            return pg->cache[i].k >= 0 ? &pg->keys[pg->cache[i].k] : NULL;
    int k = -1;
    for (uint32_t i = 0; i < pg->nkeys && k < 0; i++)
        if (strv_eq_cstr(pg->keys[i].key, name))
            k = (int)i;
    if (pg->ncache < ARRAY_SIZE(pg->cache)) {
        pg->cache[pg->ncache].name = name;
        pg->cache[pg->ncache++].k = k;
    }
    return k >= 0 ? &pg->keys[k] : NULL;
}

static bool view_find(struct tr_lazy *l, int span, int where, const char *name, struct tr_kv *out)
{
    struct tc_page *pg = (struct tc_page *)((char *)l - offsetof(struct tc_page, lazy));
    uint32_t i = pg->v_first + (uint32_t)span;
    if (where == 2) {
        if (!pg->res_loaded && load_res(pg))
            pg->attrs_bad = true;
        return pg->res && tr_attr_find(pg->res[i], 1, name, out);
    }
    if (!pg->keys_loaded && load_keys(pg))
        pg->attrs_bad = true;
    struct tc_key *key = find_key(pg, name);
    if (!key)
        return false;
    if (!key->loaded && load_key(pg, key)) {
        pg->attrs_bad = true;
        free(key->vals);
        key->vals = NULL;
    }
    return key->vals && key->vals[i].p && !tr_kv_decode(key->vals[i], out);
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
    pg->v_first = f;
    v->page_gen = pg->gen;
    pg->ncache = 0;                         /* names are a query's: kept for one view */
    pg->lazy.find = view_find;
    v->lazy = &pg->lazy;
    return 0;
}

void tc_page_free(struct tc_page *pg)
{
    for (int c = 0; c < TC_N; c++)
        buf_free(&pg->raw[c]);
    for (uint32_t k = 0; k < pg->nkeys; k++) {
        buf_free(&pg->keys[k].raw);
        free(pg->keys[k].vals);
    }
    free(pg->keys);
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
    free(pg->res);
    memset(pg, 0, sizeof(*pg));
}
