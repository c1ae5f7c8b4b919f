/* tsdb_select.c - label matchers and selection of series and samples over the
 * head and the on-disk blocks; label names and values. */
#include "tsdb_internal.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- matching and selection ---- */

static bool series_in_range(const struct tsdb_series *s, int64_t mint, int64_t maxt)
{
    if (s->nooo && s->ooo_t[s->nooo - 1] >= mint && s->ooo_t[0] <= maxt)
        return true;
    for (uint32_t i = 0; i < s->nchunks; i++)
        if (s->chunks[i].maxt >= mint && s->chunks[i].mint <= maxt)
            return true;
    return s->head.n && s->head.maxt >= mint && s->head.mint <= maxt;
}

static size_t select_head(const struct tsdb *db, const struct tsdb_matcher *m, size_t nm,
                          int64_t mint, int64_t maxt, struct tsdb_series ***out)
{
    *out = NULL;
    /* start from the shortest postings list of an equality matcher */
    const struct plist *best = NULL;
    bool have_eq = false;
    for (size_t i = 0; i < nm; i++)
        if (m[i].op == TSDB_EQ && m[i].value[0]) {
            const struct plist *p = tsdb__plist_find(db->postings, m[i].name, m[i].value,
                                               tsdb__pkey_hash(m[i].name, m[i].value));
            if (!p)
                return 0;
            if (!have_eq || p->n < best->n)
                best = p;
            have_eq = true;
        }
    size_t cand = have_eq ? best->n : db->nseries;
    struct tsdb_series **res = malloc((cand ? cand : 1) * sizeof(*res));
    if (!res)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < cand; i++) {
        struct tsdb_series *s = have_eq ? best->s[i] : db->series[i];
        bool ok = true;
        for (size_t j = 0; j < nm && ok; j++) {
            const char *v = tsdb_labels_get(&s->labels, m[j].name);
            ok = tsdb_matcher_matches(&m[j], v ? v : "");
        }
        if (ok && series_in_range(s, mint, maxt))
            res[k++] = s;
    }
    if (!k) {
        free(res);
        return 0;
    }
    *out = res;
    return k;
}

/* A series found in blocks by one query, with the chunks it has there. */
struct qent {
    uint64_t hash;
    struct tsdb_labels labels;  /* strings point into the blocks' mappings */
    struct tsdb_series *head;   /* the head's series with these labels, if any */
    struct tsdb_sealed *chunks;
    uint32_t n, cap;
    bool used;
    struct qent *next;
};

struct qtab {
    struct qent **t;
    size_t size, count;
};

static struct qent *qtab_find(const struct qtab *q, const struct tsdb_labels *l, uint64_t h)
{
    if (!q->size)
        return NULL;
    for (struct qent *e = q->t[h & (q->size - 1)]; e; e = e->next)
        if (e->hash == h && tsdb_labels_eq(&e->labels, l))
            return e;
    return NULL;
}

static void qtab_free(struct qtab *q)
{
    for (size_t i = 0; i < q->size; i++)
        for (struct qent *e = q->t[i], *nx; e; e = nx) {
            nx = e->next;
            free(e->labels.l);
            free(e->chunks);
            free(e);
        }
    free(q->t);
}

void tsdb__block_labels(const struct tsdb_block *b, const struct tsdb_bseries *bs,
                         struct tsdb_label *pairs)
{
    for (uint16_t i = 0; i < bs->nlabels; i++)
        pairs[i] = (struct tsdb_label){ tsdb_block_sym(b, bs->lsym[2 * i]),
                                        tsdb_block_sym(b, bs->lsym[2 * i + 1]) };
}

/* Adds the series of one block matching m with chunks in [mint, maxt]. */
static int select_block(const struct tsdb *db, struct tsdb_block *b, const struct tsdb_matcher *m,
                        size_t nm, int64_t mint, int64_t maxt, struct qtab *q)
{
    uint32_t *ids;
    size_t k = tsdb_block_select(b, m, nm, &ids);
    struct tsdb_label pairs[TSDB_MAX_LABELS];
    struct tsdb_bseries bs;
    int r = 0;
    for (size_t i = 0; i < k && !r; i++) {
        if (tsdb_block_series(b, ids[i], &bs) || bs.maxt < mint || bs.mint > maxt)
            continue;
        tsdb__block_labels(b, &bs, pairs);
        struct tsdb_labels l = { bs.nlabels, pairs };
        uint64_t h = tsdb_labels_hash(&l);
        struct qent *e = qtab_find(q, &l, h);
        if (!e) {
            if (q->count + 1 > q->size / 2) {
                size_t ns = q->size ? q->size * 2 : 256;
                struct qent **t = calloc(ns, sizeof(*t));
                if (!t) {
                    r = -ENOMEM;
                    break;
                }
                for (size_t j = 0; j < q->size; j++)
                    for (struct qent *x = q->t[j], *nx; x; x = nx) {
                        nx = x->next;
                        x->next = t[x->hash & (ns - 1)];
                        t[x->hash & (ns - 1)] = x;
                    }
                free(q->t);
                q->t = t;
                q->size = ns;
            }
            e = calloc(1, sizeof(*e));
            if (!e || !(e->labels.l = malloc(bs.nlabels * sizeof(*pairs) + 1))) {
                free(e);
                r = -ENOMEM;
                break;
            }
            memcpy(e->labels.l, pairs, bs.nlabels * sizeof(*pairs));
            e->labels.n = bs.nlabels;
            e->hash = h;
            e->head = tsdb__series_lookup(db, &l, h);
            e->next = q->t[h & (q->size - 1)];
            q->t[h & (q->size - 1)] = e;
            q->count++;
        }
        if (e->n + bs.nchunks > e->cap) {
            uint32_t nc = e->cap ? e->cap * 2 : 8;
            while (nc < e->n + bs.nchunks)
                nc *= 2;
            struct tsdb_sealed *a = realloc(e->chunks, nc * sizeof(*a));
            if (!a) {
                r = -ENOMEM;
                break;
            }
            e->chunks = a;
            e->cap = nc;
        }
        e->n += tsdb_block_chunks(b, &bs, e->chunks + e->n);
    }
    free(ids);
    return r;
}

/* A series for one query: the head's (if any) with the blocks' chunks before its own. */
static struct tsdb_series *tmp_series(struct qent *e)
{
    struct tsdb_series *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    const struct tsdb_series *h = e->head;
    uint32_t hn = h ? h->nchunks : 0;
    if (h) {
        *t = *h;
        t->hnext = NULL;
    }
    t->chunks = malloc((e->n + hn + 1) * sizeof(*t->chunks));
    if (!t->chunks) {
        free(t);
        return NULL;
    }
    memcpy(t->chunks, e->chunks, e->n * sizeof(*t->chunks));
    if (hn)
        memcpy(t->chunks + e->n, h->chunks, hn * sizeof(*t->chunks));
    t->nchunks = t->capchunks = e->n + hn;
    t->tmp = TSDB_TMP_CHUNKS;
    if (!h) {
        t->labels = e->labels;
        t->hash = e->hash;
        e->labels.l = NULL;
        e->labels.n = 0;
        t->tmp |= TSDB_TMP_LABELS;
    }
    return t;
}

void tsdb_series_release(struct tsdb_series *s)
{
    if (!s || !s->tmp)
        return;
    free(s->chunks);
    if (s->tmp & TSDB_TMP_LABELS)
        free(s->labels.l);
    free(s);
}

void tsdb_select_free(struct tsdb_series **s, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        tsdb_series_release(s[i]);
    free(s);
}

size_t tsdb_select(const struct tsdb *db, const struct tsdb_matcher *m, size_t nm, int64_t mint,
                   int64_t maxt, struct tsdb_series ***out)
{
    struct tsdb_series **head;
    size_t k = select_head(db, m, nm, mint, maxt, &head);
    bool any = false;
    for (size_t i = 0; i < db->nblocks && !any; i++)
        any = db->blocks[i]->mint <= maxt && db->blocks[i]->maxt >= mint;
    if (!any) {
        *out = head;
        return k;
    }
    struct qtab q = { NULL, 0, 0 };
    for (size_t i = 0; i < db->nblocks; i++)
        if (db->blocks[i]->mint <= maxt && db->blocks[i]->maxt >= mint &&
            select_block(db, db->blocks[i], m, nm, mint, maxt, &q))
            break;
    struct tsdb_series **res = malloc((k + q.count + 1) * sizeof(*res));
    size_t n = 0;
    for (size_t i = 0; res && i < k; i++) {
        struct qent *e = qtab_find(&q, &head[i]->labels, head[i]->hash);
        if (e) {
            e->used = true;
            struct tsdb_series *t = tmp_series(e);
            if (t)
                res[n++] = t;
        } else {
            res[n++] = head[i];
        }
    }
    for (size_t i = 0; res && i < q.size; i++)
        for (struct qent *e = q.t[i]; e; e = e->next)
            if (!e->used && e->n) {
                struct tsdb_series *t = tmp_series(e);
                if (t)
                    res[n++] = t;
            }
    free(head);
    qtab_free(&q);
    if (!n) {
        free(res);
        res = NULL;
    }
    *out = res;
    return n;
}

void tsdb_iter_init(struct tsdb_iter *it, const struct tsdb_series *s, int64_t mint, int64_t maxt)
{
    memset(it, 0, sizeof(*it));
    it->s = s;
    it->mint = mint;
    it->maxt = maxt;
}

static bool chunks_next(struct tsdb_iter *it, int64_t *t, double *v);

/* Chunks and out-of-order samples merged by time (a time in both: the chunk's). */
bool tsdb_iter_next(struct tsdb_iter *it, int64_t *t, double *v)
{
    const struct tsdb_series *s = it->s;
    if (!s->nooo)
        return chunks_next(it, t, v);
    if (!it->have_c && !it->done)
        it->have_c = chunks_next(it, &it->ct, &it->cv);
    while (it->oi < s->nooo && s->ooo_t[it->oi] < it->mint)
        it->oi++;
    bool have_o = it->oi < s->nooo && s->ooo_t[it->oi] <= it->maxt;
    if (have_o && (!it->have_c || s->ooo_t[it->oi] < it->ct)) {
        *t = s->ooo_t[it->oi];
        *v = s->ooo_v[it->oi++];
        return true;
    }
    if (!it->have_c)
        return false;
    if (have_o && s->ooo_t[it->oi] == it->ct)
        it->oi++;
    *t = it->ct;
    *v = it->cv;
    it->have_c = false;
    return true;
}

static bool chunks_next(struct tsdb_iter *it, int64_t *t, double *v)
{
    const struct tsdb_series *s = it->s;
    while (!it->done) {
        if (!it->started) {
            if (it->chunk < s->nchunks) {
                const struct tsdb_sealed *c = &s->chunks[it->chunk];
                if (c->maxt < it->mint) {
                    it->chunk++;
                    continue;
                }
                tsdb_chunk_iter_init_enc(&it->ci, c->b, c->nbits, c->n, c->enc, c->mint);
            } else if (it->chunk == s->nchunks && s->head.n) {
                tsdb_chunk_iter_init(&it->ci, s->head.b, s->head.nbits, s->head.n);
            } else {
                it->done = true;
                return false;
            }
            it->started = true;
        }
        while (tsdb_chunk_next(&it->ci, t, v)) {
            if (*t < it->mint || (it->emitted && *t <= it->last))
                continue;
            if (*t > it->maxt) {
                it->done = true;
                return false;
            }
            it->emitted = true;
            it->last = *t;
            return true;
        }
        it->started = false;
        it->chunk++;
    }
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

size_t tsdb__sort_unique(const char **a, size_t n)
{
    qsort(a, n, sizeof(*a), cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (!u || strcmp(a[u - 1], a[i]))
            a[u++] = a[i];
    return u;
}

size_t tsdb_label_names(const struct tsdb *db, const char ***out)
{
    const struct tsdb_postings *p = db->postings;
    size_t cap = p->count;
    for (size_t i = 0; i < db->nblocks; i++)
        cap += db->blocks[i]->nnames;
    const char **a = malloc((cap ? cap : 1) * sizeof(*a));
    size_t n = 0;
    *out = NULL;
    if (!a)
        return 0;
    for (size_t i = 0; i < p->size; i++)
        for (const struct plist *e = p->table[i]; e; e = e->next)
            if (e->n && (a[n] = strndup(e->key, e->namelen)))
                n++;
    for (size_t i = 0; i < db->nblocks; i++) {
        const struct tsdb_block *b = db->blocks[i];
        for (uint32_t k = 0; k < b->nnames; k++)
            if ((a[n] = strdup(tsdb_block_sym(b, b->names[k].name))))
                n++;
    }
    qsort(a, n, sizeof(*a), cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && strcmp(a[u - 1], a[i]) == 0) {
            free((void *)a[i]);
            continue;
        }
        a[u++] = a[i];
    }
    *out = a;
    return u;
}

size_t tsdb_label_values(const struct tsdb *db, const char *name, const char ***out)
{
    const struct tsdb_postings *p = db->postings;
    size_t nl = strlen(name), n = 0, cap = p->count;
    for (size_t i = 0; i < db->nblocks; i++)
        cap += db->blocks[i]->nvals;
    const char **a = malloc((cap ? cap : 1) * sizeof(*a));
    *out = NULL;
    if (!a)
        return 0;
    for (size_t i = 0; i < p->size; i++)
        for (const struct plist *e = p->table[i]; e; e = e->next)
            if (e->namelen == nl && memcmp(e->key, name, nl) == 0 && e->n)
                a[n++] = e->key + nl + 1;
    for (size_t i = 0; i < db->nblocks; i++) {
        const struct tsdb_block *b = db->blocks[i];
        int64_t ni = tsdb_block_name(b, name);
        if (ni < 0)
            continue;
        for (uint32_t k = b->names[ni].first; k < b->names[ni].first + b->names[ni].n; k++)
            a[n++] = tsdb_block_sym(b, b->vals[k].value);
    }
    *out = a;
    return tsdb__sort_unique(a, n);
}

void tsdb_free_strings(const char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((void *)a[i]);
    free(a);
}
