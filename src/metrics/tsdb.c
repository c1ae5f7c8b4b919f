/* tsdb.c - the head: labels, postings, series, appends, retention; open and close.
 *
 * The store's other parts: tsdb_wal.c (write-ahead log and its parallel replay),
 * tsdb_snapshot.c (head snapshots), tsdb_select.c (matchers and selection over the
 * head and the blocks), tsdb_compact.c (cutting blocks, compaction, retention of
 * blocks, the background job, the admin snapshot); tsdb_internal.h joins them.
 */
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

double tsdb_stale_nan(void)
{
    uint64_t u = TSDB_STALE_NAN_BITS;
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* ---- labels ---- */

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const struct tsdb_label *)a)->name, ((const struct tsdb_label *)b)->name);
}

int tsdb_labels_make(struct tsdb_labels *out, const struct tsdb_label *pairs, size_t n)
{
    struct tsdb_label tmp[TSDB_MAX_LABELS];
    size_t k = 0, bytes = 0;
    if (n > TSDB_MAX_LABELS)
        return -E2BIG;
    for (size_t i = 0; i < n; i++) {
        if (!pairs[i].value[0])
            continue;
        tmp[k++] = pairs[i];
        bytes += strlen(pairs[i].name) + strlen(pairs[i].value) + 2;
    }
    qsort(tmp, k, sizeof(tmp[0]), cmp_label);
    for (size_t i = 1; i < k; i++)
        if (strcmp(tmp[i - 1].name, tmp[i].name) == 0)
            return -EEXIST;
    struct tsdb_label *l = malloc(k * sizeof(*l) + bytes + 1);
    if (!l)
        return -ENOMEM;
    char *p = (char *)(l + k);
    for (size_t i = 0; i < k; i++) {
        size_t a = strlen(tmp[i].name) + 1, b = strlen(tmp[i].value) + 1;
        memcpy(p, tmp[i].name, a);
        l[i].name = p;
        p += a;
        memcpy(p, tmp[i].value, b);
        l[i].value = p;
        p += b;
    }
    out->n = (uint16_t)k;
    out->l = l;
    return 0;
}

void tsdb_labels_free(struct tsdb_labels *l)
{
    free(l->l);
    l->l = NULL;
    l->n = 0;
}

const char *tsdb_labels_get(const struct tsdb_labels *l, const char *name)
{
    for (uint16_t i = 0; i < l->n; i++)
        if (strcmp(l->l[i].name, name) == 0)
            return l->l[i].value;
    return NULL;
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    h ^= 0xff;
    h *= 1099511628211ull;
    return h;
}

uint64_t tsdb_labels_hash(const struct tsdb_labels *l)
{
    uint64_t h = 14695981039346656037ull;
    for (uint16_t i = 0; i < l->n; i++)
        h = fnv(fnv(h, l->l[i].name), l->l[i].value);
    return h;
}

int tsdb_labels_cmp(const struct tsdb_labels *a, const struct tsdb_labels *b)
{
    for (uint16_t i = 0; i < a->n && i < b->n; i++) {
        int c = strcmp(a->l[i].name, b->l[i].name);
        if (c)
            return c;
        c = strcmp(a->l[i].value, b->l[i].value);
        if (c)
            return c;
    }
    return (int)a->n - (int)b->n;
}

int tsdb_series_cmp(const void *a, const void *b)
{
    return tsdb_labels_cmp(&(*(struct tsdb_series *const *)a)->labels,
                           &(*(struct tsdb_series *const *)b)->labels);
}

bool tsdb_labels_eq(const struct tsdb_labels *a, const struct tsdb_labels *b)
{
    if (a->n != b->n)
        return false;
    for (uint16_t i = 0; i < a->n; i++)
        if (strcmp(a->l[i].name, b->l[i].name) || strcmp(a->l[i].value, b->l[i].value))
            return false;
    return true;
}

/* ---- postings: "name\xffvalue" -> series in ref order ---- */

uint64_t tsdb__pkey_hash(const char *name, const char *value)
{
    return fnv(fnv(14695981039346656037ull, name), value);
}

struct plist *tsdb__plist_find(const struct tsdb_postings *p, const char *name, const char *value,
                                uint64_t h)
{
    if (!p->size)
        return NULL;
    size_t nl = strlen(name);
    for (struct plist *e = p->table[h & (p->size - 1)]; e; e = e->next)
        if (e->hash == h && e->namelen == nl && memcmp(e->key, name, nl) == 0 &&
            strcmp(e->key + nl + 1, value) == 0)
            return e;
    return NULL;
}

static int postings_add(struct tsdb_postings *p, const char *name, const char *value,
                        struct tsdb_series *s)
{
    uint64_t h = tsdb__pkey_hash(name, value);
    struct plist *e = tsdb__plist_find(p, name, value, h);
    if (!e) {
        if (p->count + 1 > p->size / 2) {
            size_t ns = p->size ? p->size * 2 : 1024;
            struct plist **t = calloc(ns, sizeof(*t));
            if (!t)
                return -ENOMEM;
            for (size_t i = 0; i < p->size; i++)
                for (struct plist *x = p->table[i], *nx; x; x = nx) {
                    nx = x->next;
                    x->next = t[x->hash & (ns - 1)];
                    t[x->hash & (ns - 1)] = x;
                }
            free(p->table);
            p->table = t;
            p->size = ns;
        }
        size_t nl = strlen(name), vl = strlen(value);
        e = calloc(1, sizeof(*e));
        if (!e || !(e->key = malloc(nl + vl + 2))) {
            free(e);
            return -ENOMEM;
        }
        memcpy(e->key, name, nl);
        e->key[nl] = (char)0xff;
        memcpy(e->key + nl + 1, value, vl + 1);
        e->namelen = nl;
        e->hash = h;
        e->next = p->table[h & (p->size - 1)];
        p->table[h & (p->size - 1)] = e;
        p->count++;
    }
    if (e->n == e->cap) {
        uint32_t nc = e->cap ? e->cap * 2 : 4;
        struct tsdb_series **ns = realloc(e->s, nc * sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        e->s = ns;
        e->cap = nc;
    }
    e->s[e->n++] = s;
    return 0;
}

static void postings_free(struct tsdb_postings *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->size; i++)
        for (struct plist *x = p->table[i], *nx; x; x = nx) {
            nx = x->next;
            free(x->key);
            free(x->s);
            free(x);
        }
    free(p->table);
    free(p);
}

size_t tsdb_postings_count(const struct tsdb *db, const char *name, const char *value)
{
    struct plist *e = tsdb__plist_find(db->postings, name, value, tsdb__pkey_hash(name, value));
    return e ? e->n : 0;
}

/* ---- series ---- */

void tsdb__series_free(struct tsdb_series *s)
{
    free(s->ooo_t);
    free(s->ooo_v);
    for (uint32_t i = 0; i < s->nchunks; i++)
        free(s->chunks[i].b);
    free(s->chunks);
    tsdb_chunk_free(&s->head);
    tsdb_labels_free(&s->labels);
    free(s);
}

struct tsdb_series *tsdb_series_by_ref(const struct tsdb *db, uint64_t ref)
{
    return ref >= 1 && ref <= db->nseries ? db->series[ref - 1] : NULL;
}

struct tsdb_series *tsdb__series_lookup(const struct tsdb *db, const struct tsdb_labels *l,
                                         uint64_t h)
{
    if (!db->tablesize)
        return NULL;
    for (struct tsdb_series *s = db->table[h & (db->tablesize - 1)]; s; s = s->hnext)
        if (s->hash == h && tsdb_labels_eq(&s->labels, l))
            return s;
    return NULL;
}


/* Loading a series of reference ref: the slots of collected series before it stay
 * empty, so the next insert gets ref. False for a reference already used (or an
 * implausible gap: a damaged file). */
bool tsdb__slots_upto(struct tsdb *db, uint64_t ref)
{
    if (ref <= db->nseries || ref - db->nseries > (1u << 22))
        return false;
    while (db->nseries + 1 < ref) {
        if (db->nseries == db->capseries) {
            size_t nc = db->capseries ? db->capseries * 2 : 4096;
            struct tsdb_series **a = realloc(db->series, nc * sizeof(*a));
            if (!a)
                return false;
            db->series = a;
            db->capseries = nc;
        }
        db->series[db->nseries++] = NULL;
    }
    return true;
}

struct tsdb_series *tsdb__series_insert(struct tsdb *db, struct tsdb_labels *l, uint64_t h,
                                         bool log_it)
{
    if (db->nseries + 1 > db->tablesize) {
        size_t ns = db->tablesize ? db->tablesize * 2 : 4096;
        struct tsdb_series **t = calloc(ns, sizeof(*t));
        if (!t)
            return NULL;
        for (size_t i = 0; i < db->nseries; i++) {
            struct tsdb_series *x = db->series[i];
            if (!x)
                continue;
            x->hnext = t[x->hash & (ns - 1)];
            t[x->hash & (ns - 1)] = x;
        }
        free(db->table);
        db->table = t;
        db->tablesize = ns;
    }
    if (db->nseries == db->capseries) {
        size_t nc = db->capseries ? db->capseries * 2 : 4096;
        struct tsdb_series **a = realloc(db->series, nc * sizeof(*a));
        if (!a)
            return NULL;
        db->series = a;
        db->capseries = nc;
    }
    struct tsdb_series *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->ref = db->nseries + 1;
    s->hash = h;
    s->labels = *l;
    l->l = NULL;
    l->n = 0;
    tsdb_chunk_init(&s->head);
    for (uint16_t i = 0; i < s->labels.n; i++)
        if (postings_add(db->postings, s->labels.l[i].name, s->labels.l[i].value, s)) {
            /* postings keep what they got; the series stays unreachable by label */
            break;
        }
    db->series[db->nseries++] = s;
    db->active++;
    s->hnext = db->table[h & (db->tablesize - 1)];
    db->table[h & (db->tablesize - 1)] = s;
    db->st.series_created++;
    if (log_it && db->dir) {
        struct buf b = BUF_INIT;
        uint8_t hdr[10];
        memcpy(hdr, &s->ref, 8);
        memcpy(hdr + 8, &s->labels.n, 2);
        buf_append(&b, hdr, 10);
        for (uint16_t i = 0; i < s->labels.n; i++) {
            const char *ss[2] = { s->labels.l[i].name, s->labels.l[i].value };
            for (int k = 0; k < 2; k++) {
                uint16_t len = (uint16_t)strlen(ss[k]);
                buf_append(&b, &len, 2);
                buf_append(&b, ss[k], len);
            }
        }
        tsdb__wal_flush_samples(db);
        tsdb__wal_record(db, REC_SERIES, buf_head(&b), buf_used(&b));
        buf_free(&b);
    }
    return s;
}

struct tsdb_series *tsdb_series_get(struct tsdb *db, struct tsdb_labels *l, bool *created)
{
    uint64_t h = tsdb_labels_hash(l);
    struct tsdb_series *s = tsdb__series_lookup(db, l, h);
    *created = false;
    if (s)
        return s;
    if (db->max_series && db->active >= db->max_series) {
        db->st.series_refused++;
        return NULL;
    }
    s = tsdb__series_insert(db, l, h, true);
    *created = s != NULL;
    return s;
}

/* Keeps an out-of-order sample in the series' sorted side buffer. */
static int ooo_insert(struct acc *ac, struct tsdb_series *s, int64_t t, double v)
{
    uint32_t lo = 0, hi = s->nooo;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (s->ooo_t[mid] < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < s->nooo && s->ooo_t[lo] == t) {
        uint64_t a, b;
        memcpy(&a, &v, 8);
        memcpy(&b, &s->ooo_v[lo], 8);
        if (a == b)
            return TSDB_OK;
        ac->st->duplicates++;
        return TSDB_DUPLICATE;
    }
    if (s->nooo == s->capooo) {
        uint32_t nc = s->capooo ? s->capooo * 2 : 8;
        int64_t *nt = realloc(s->ooo_t, nc * sizeof(*nt));
        if (!nt)
            return TSDB_NOMEM;
        s->ooo_t = nt;
        double *nv = realloc(s->ooo_v, nc * sizeof(*nv));
        if (!nv)
            return TSDB_NOMEM;
        s->ooo_v = nv;
        s->capooo = nc;
    }
    memmove(s->ooo_t + lo + 1, s->ooo_t + lo, (s->nooo - lo) * sizeof(*s->ooo_t));
    memmove(s->ooo_v + lo + 1, s->ooo_v + lo, (s->nooo - lo) * sizeof(*s->ooo_v));
    s->ooo_t[lo] = t;
    s->ooo_v[lo] = v;
    s->nooo++;
    if (t < *ac->mint)
        *ac->mint = t;
    if (t < *ac->head_mint)
        *ac->head_mint = t;
    ac->st->samples_appended++;
    ac->st->ooo_accepted++;
    return TSDB_OK;
}

int tsdb__seal_head(struct tsdb_series *s)
{
    if (s->nchunks == s->capchunks) {
        uint32_t nc = s->capchunks ? s->capchunks * 2 : 4;
        struct tsdb_sealed *a = realloc(s->chunks, nc * sizeof(*a));
        if (!a)
            return TSDB_NOMEM;
        s->chunks = a;
        s->capchunks = nc;
    }
    tsdb_chunk_seal(&s->head);
    struct tsdb_sealed *c = &s->chunks[s->nchunks++];
    c->b = s->head.b;
    c->nbits = s->head.nbits;
    c->n = s->head.n;
    c->mint = s->head.mint;
    c->maxt = s->head.maxt;
    c->enc = TSDB_ENC_XOR;
    tsdb_chunk_init(&s->head);
    return TSDB_OK;
}

/* floor(t / r) for the block range a time falls in */
int64_t tsdb__range_of(int64_t t, int64_t r)
{
    int64_t q = t / r;              /* toward zero; one less below it (no overflow near INT64_MIN) */
    return t % r < 0 ? q - 1 : q;
}

int tsdb__append_acc(const struct tsdb *db, struct acc *ac, struct tsdb_series *s, int64_t t, double v)
{
    if (t < db->min_valid && !db->replaying) {
        ac->st->out_of_bounds++;
        return TSDB_OUT_OF_ORDER;
    }
    if (t < db->min_valid)
        return TSDB_OK;         /* replayed from a WAL that a block already holds */
    if (s->has_last) {
        if (t < s->last_t) {
            if (db->replaying || (db->ooo_window_ms > 0 && t >= *ac->maxt - db->ooo_window_ms))
                return ooo_insert(ac, s, t, v);
            ac->st->out_of_order++;
            return TSDB_OUT_OF_ORDER;
        }
        if (t == s->last_t) {
            uint64_t a, b;
            memcpy(&a, &v, 8);
            memcpy(&b, &s->last_v, 8);
            if (a == b)
                return TSDB_OK;
            ac->st->duplicates++;
            return TSDB_DUPLICATE;
        }
    }
    /* a chunk never spans two block ranges, so cutting a block takes whole chunks */
    if (s->head.n >= TSDB_CHUNK_MAX_SAMPLES ||
        (s->head.n && tsdb__range_of(t, db->block_range_ms) != tsdb__range_of(s->head.mint, db->block_range_ms)))
        if (tsdb__seal_head(s))
            return TSDB_NOMEM;
    if (tsdb_chunk_append(&s->head, t, v))
        return TSDB_NOMEM;
    if (t < *ac->head_mint)
        *ac->head_mint = t;
    s->has_last = true;
    s->last_t = t;
    s->last_v = v;
    if (ac->st->samples_appended == 0 || t < *ac->mint)
        *ac->mint = t;
    if (ac->st->samples_appended == 0 || t > *ac->maxt)
        *ac->maxt = t;
    ac->st->samples_appended++;
    return TSDB_OK;
}

int tsdb__append_mem(struct tsdb *db, struct tsdb_series *s, int64_t t, double v)
{
    struct acc ac = { &db->st, &db->mint, &db->maxt, &db->head_mint };
    return tsdb__append_acc(db, &ac, s, t, v);
}

int tsdb_append(struct tsdb *db, struct tsdb_series *s, int64_t t, double v)
{
    int r = tsdb__append_mem(db, s, t, v);
    if (r == TSDB_OK && db->dir) {
        uint8_t rec[24];
        memcpy(rec, &s->ref, 8);
        memcpy(rec + 8, &t, 8);
        memcpy(rec + 16, &v, 8);
        buf_append(&db->samplebuf, rec, 24);
        db->pending_samples++;
        if (buf_used(&db->samplebuf) > (1u << 20))
            tsdb__wal_flush_samples(db);
    }
    return r;
}


void tsdb_apply_retention(struct tsdb *db, int64_t now_ms)
{
    if (db->retention_ms <= 0 || db->job)
        return;                 /* a block being written reads what this would free */
    int64_t cut = now_ms - db->retention_ms;
    while (db->nblocks && db->blocks[0]->maxt < cut) {
        log_info("block past retention deleted", "block", db->blocks[0]->ulid, "maxt",
                 log_int((long long)db->blocks[0]->maxt));
        tsdb__block_drop(db, 0);
    }
    for (size_t i = 0; i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        uint32_t o = 0;
        while (o < s->nooo && s->ooo_t[o] < cut)
            o++;
        if (o) {
            memmove(s->ooo_t, s->ooo_t + o, (s->nooo - o) * sizeof(*s->ooo_t));
            memmove(s->ooo_v, s->ooo_v + o, (s->nooo - o) * sizeof(*s->ooo_v));
            s->nooo -= o;
        }
        uint32_t k = 0;
        while (k < s->nchunks && s->chunks[k].maxt < cut)
            free(s->chunks[k++].b);
        if (k) {
            memmove(s->chunks, s->chunks + k, (s->nchunks - k) * sizeof(*s->chunks));
            s->nchunks -= k;
        }
    }
}

struct chunk_ref {
    int64_t maxt;
    uint32_t series;
    uint32_t bytes;
};

static int cmp_chunk_ref(const void *a, const void *b)
{
    const struct chunk_ref *x = a, *y = b;
    return x->maxt < y->maxt ? -1 : x->maxt > y->maxt;
}

uint64_t tsdb_chunk_bytes_total(const struct tsdb *db)
{
    uint64_t total = 0;
    for (size_t i = 0; i < db->nseries; i++) {
        const struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        for (uint32_t k = 0; k < s->nchunks; k++)
            total += (s->chunks[k].nbits + 7) / 8;
        total += tsdb_chunk_bytes(&s->head);
    }
    return total;
}

size_t tsdb_apply_retention_size(struct tsdb *db, uint64_t max_bytes)
{
    if (!max_bytes || db->job)
        return 0;
    uint64_t total = tsdb_chunk_bytes_total(db) + tsdb_blocks_bytes(db);
    size_t blocks = 0;
    /* whole blocks first, the oldest first, then the head's oldest chunks */
    while (total > max_bytes && db->nblocks) {
        total -= db->blocks[0]->bytes;
        log_info("block deleted by retention_size", "block", db->blocks[0]->ulid, "bytes",
                 log_int((long long)db->blocks[0]->bytes));
        tsdb__block_drop(db, 0);
        blocks++;
    }
    if (total <= max_bytes)
        return blocks;
    /* the oldest sealed chunks go first, whichever series they belong to; a
     * series' chunks are in time order, so dropping a prefix of each is enough */
    size_t n = 0;
    for (size_t i = 0; i < db->nseries; i++)
        n += db->series[i] ? db->series[i]->nchunks : 0;
    struct chunk_ref *refs = malloc((n ? n : 1) * sizeof(*refs));
    if (!refs)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < db->nseries; i++) {
        const struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        for (uint32_t c = 0; c < s->nchunks; c++)
            refs[k++] = (struct chunk_ref){ s->chunks[c].maxt, (uint32_t)i,
                                            (s->chunks[c].nbits + 7) / 8 };
    }
    qsort(refs, n, sizeof(*refs), cmp_chunk_ref);
    uint32_t *drop = calloc(db->nseries ? db->nseries : 1, sizeof(*drop));
    size_t dropped = 0;
    for (size_t i = 0; drop && i < n && total > max_bytes; i++) {
        drop[refs[i].series]++;
        total -= refs[i].bytes;
        dropped++;
    }
    for (size_t i = 0; drop && i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        uint32_t d = drop[i] < s->nchunks ? drop[i] : s->nchunks;
        for (uint32_t c = 0; c < d; c++)
            free(s->chunks[c].b);
        if (d) {
            memmove(s->chunks, s->chunks + d, (s->nchunks - d) * sizeof(*s->chunks));
            s->nchunks -= d;
        }
    }
    db->st.chunks_dropped_for_size += dropped;
    free(drop);
    free(refs);
    return dropped + blocks;
}



int tsdb_open(struct tsdb *db, const char *dir, char *err, size_t errlen)
{
    memset(db, 0, sizeof(*db));
    db->wal_fd = -1;
    db->block_range_ms = 2 * 3600 * 1000;
    db->max_block_ms = 31ll * 86400 * 1000;
    db->min_valid = INT64_MIN;
    db->head_mint = INT64_MAX;
    db->postings = calloc(1, sizeof(*db->postings));
    if (!db->postings) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (!dir)
        return 0;
    db->dir = strdup(dir);
    char path[4096];
    snprintf(path, sizeof(path), "%s/wal", dir);
    if (cairn_mkdir_p(path, 0755)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -errno;
    }
    DIR *d = opendir(path);
    if (!d) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -errno;
    }
    uint32_t segs[4096];
    size_t nseg = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nseg < ARRAY_SIZE(segs)) {
        char *end;
        unsigned long v = strtoul(de->d_name, &end, 10);
        if (de->d_name[0] >= '0' && de->d_name[0] <= '9' && !*end && v < 0xffffffffu)
            segs[nseg++] = (uint32_t)v;
    }
    closedir(d);
    qsort(segs, nseg, sizeof(segs[0]), tsdb__cmp_u32);
    int br = tsdb__blocks_load(db, err, errlen);
    if (br)
        return br;
    uint32_t first = 0;
    int sr = tsdb__snap_load(db, &first, err, errlen);
    if (sr)
        return sr;
    /* segments older than the snapshot's are in it: a crash left them behind */
    size_t skip = 0;
    while (skip < nseg && segs[skip] < first) {
        char sp[4200];
        snprintf(sp, sizeof(sp), "%s/%08u", path, segs[skip]);
        unlink(sp);
        skip++;
    }
    memmove(segs, segs + skip, (nseg - skip) * sizeof(segs[0]));
    nseg -= skip;
    uint64_t t0 = cairn_now_ms();
    db->replaying = true;
    struct replay rp = { NULL, 0 };
    if (nseg)
        tsdb__replay_start(db, &rp);
    size_t workers = rp.nw;
    for (size_t i = 0; i < nseg; i++) {
        char sp[4200];
        snprintf(sp, sizeof(sp), "%s/%08u", path, segs[i]);
        bool torn;
        off_t good = tsdb__replay_segment(db, &rp, sp, &torn);
        if (torn) {
            struct stat st;
            long long size = stat(sp, &st) == 0 ? (long long)st.st_size : -1;
            log_warn("wal: torn or corrupted record, cutting the log there", "segment", sp,
                     "good_bytes", log_int((long long)good), "file_bytes", log_int(size));
            if (truncate(sp, good)) {
                int e = -errno;
                snprintf(err, errlen, "%s: cannot truncate: %s", sp, strerror(errno));
                tsdb__replay_stop(db, &rp);
                return e;
            }
            /* later segments cannot follow a hole */
            for (size_t k = i + 1; k < nseg; k++) {
                snprintf(sp, sizeof(sp), "%s/%08u", path, segs[k]);
                log_warn("wal: removing a segment after the cut", "segment", sp);
                unlink(sp);
            }
            nseg = i + 1;
            break;
        }
    }
    tsdb__replay_stop(db, &rp);
    db->replaying = false;
    tsdb__head_mint_recompute(db);
    if (db->nblocks)
        tsdb__head_gc(db);            /* series whose samples a block took before a crash */
    if (nseg)
        log_info("wal replayed", "segments", log_int((long long)nseg), "threads",
                 log_int((long long)workers + 1), "records",
                 log_int((long long)db->st.replayed_records), "series",
                 log_int((long long)db->active), "samples",
                 log_int((long long)db->st.samples_appended), "ms",
                 log_int((long long)(cairn_now_ms() - t0)));
    int r = tsdb__wal_open_segment(db, nseg ? segs[nseg - 1] : first ? first : 1, true);
    if (r) {
        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    return 0;
}


void tsdb_close(struct tsdb *db)
{
    tsdb__job_drain(db, true);
    tsdb__snap_drain(db);
    if (db->dir && db->wal_fd >= 0)
        tsdb_commit(db, true);
    if (db->wal_fd >= 0)
        close(db->wal_fd);
    for (size_t i = 0; i < db->nseries; i++)
        if (db->series[i])
            tsdb__series_free(db->series[i]);
    free(db->series);
    for (size_t i = 0; i < db->nblocks; i++) {
        tsdb_block_close(db->blocks[i]);
        free(db->blocks[i]);
    }
    free(db->blocks);
    free(db->table);
    postings_free(db->postings);
    buf_free(&db->walbuf);
    buf_free(&db->samplebuf);
    free(db->dir);
    memset(db, 0, sizeof(*db));
    db->wal_fd = -1;
}
