/* tsdb.c - head series, postings, WAL. */
#include "tsdb.h"
#include "tsdb_block.h"
#include "core/log.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define WAL_SEGMENT_MAX (128u << 20)
#define WAL_RECORD_MAX (64u << 20)
enum { REC_SERIES = 1, REC_SAMPLES = 2 };

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

struct plist {
    char *key;                  /* name, then 0xff, then value */
    size_t namelen;
    uint64_t hash;
    struct tsdb_series **s;
    uint32_t n, cap;
    struct plist *next;
};

struct tsdb_postings {
    struct plist **table;
    size_t size, count;
};

static uint64_t pkey_hash(const char *name, const char *value)
{
    return fnv(fnv(14695981039346656037ull, name), value);
}

static struct plist *plist_find(const struct tsdb_postings *p, const char *name, const char *value,
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
    uint64_t h = pkey_hash(name, value);
    struct plist *e = plist_find(p, name, value, h);
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
    struct plist *e = plist_find(db->postings, name, value, pkey_hash(name, value));
    return e ? e->n : 0;
}

/* ---- series ---- */

static void series_free(struct tsdb_series *s)
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

static struct tsdb_series *series_lookup(const struct tsdb *db, const struct tsdb_labels *l,
                                         uint64_t h)
{
    if (!db->tablesize)
        return NULL;
    for (struct tsdb_series *s = db->table[h & (db->tablesize - 1)]; s; s = s->hnext)
        if (s->hash == h && tsdb_labels_eq(&s->labels, l))
            return s;
    return NULL;
}

static void wal_flush_samples(struct tsdb *db);
static void wal_record(struct tsdb *db, int type, const void *p, size_t n);

/* Loading a series of reference ref: the slots of collected series before it stay
 * empty, so the next insert gets ref. False for a reference already used (or an
 * implausible gap: a damaged file). */
static bool slots_upto(struct tsdb *db, uint64_t ref)
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

static struct tsdb_series *series_insert(struct tsdb *db, struct tsdb_labels *l, uint64_t h,
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
        wal_flush_samples(db);
        wal_record(db, REC_SERIES, buf_head(&b), buf_used(&b));
        buf_free(&b);
    }
    return s;
}

struct tsdb_series *tsdb_series_get(struct tsdb *db, struct tsdb_labels *l, bool *created)
{
    uint64_t h = tsdb_labels_hash(l);
    struct tsdb_series *s = series_lookup(db, l, h);
    *created = false;
    if (s)
        return s;
    if (db->max_series && db->active >= db->max_series) {
        db->st.series_refused++;
        return NULL;
    }
    s = series_insert(db, l, h, true);
    *created = s != NULL;
    return s;
}

/* Where appends count: the store's own counters, or a replay worker's (merged after). */
struct acc {
    struct tsdb_stats *st;
    int64_t *mint, *maxt, *head_mint;
};

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

static int seal_head(struct tsdb_series *s)
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
static int64_t range_of(int64_t t, int64_t r)
{
    return t >= 0 ? t / r : -((-t + r - 1) / r);
}

static int append_acc(const struct tsdb *db, struct acc *ac, struct tsdb_series *s, int64_t t, double v)
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
        (s->head.n && range_of(t, db->block_range_ms) != range_of(s->head.mint, db->block_range_ms)))
        if (seal_head(s))
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

static int append_mem(struct tsdb *db, struct tsdb_series *s, int64_t t, double v)
{
    struct acc ac = { &db->st, &db->mint, &db->maxt, &db->head_mint };
    return append_acc(db, &ac, s, t, v);
}

int tsdb_append(struct tsdb *db, struct tsdb_series *s, int64_t t, double v)
{
    int r = append_mem(db, s, t, v);
    if (r == TSDB_OK && db->dir) {
        uint8_t rec[24];
        memcpy(rec, &s->ref, 8);
        memcpy(rec + 8, &t, 8);
        memcpy(rec + 16, &v, 8);
        buf_append(&db->samplebuf, rec, 24);
        db->pending_samples++;
        if (buf_used(&db->samplebuf) > (1u << 20))
            wal_flush_samples(db);
    }
    return r;
}

static void block_drop(struct tsdb *db, size_t i);

void tsdb_apply_retention(struct tsdb *db, int64_t now_ms)
{
    if (db->retention_ms <= 0 || db->job)
        return;                 /* a block being written reads what this would free */
    int64_t cut = now_ms - db->retention_ms;
    while (db->nblocks && db->blocks[0]->maxt < cut) {
        log_info("block past retention deleted", "block", db->blocks[0]->ulid, "maxt",
                 log_int((long long)db->blocks[0]->maxt));
        block_drop(db, 0);
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
        block_drop(db, 0);
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

/* ---- WAL ---- */

static void wal_record(struct tsdb *db, int type, const void *p, size_t n)
{
    uint8_t hdr[9];
    uint32_t len = (uint32_t)n, crc = (uint32_t)crc32(0L, p, (uInt)n);
    hdr[0] = (uint8_t)type;
    memcpy(hdr + 1, &len, 4);
    memcpy(hdr + 5, &crc, 4);
    buf_append(&db->walbuf, hdr, 9);
    buf_append(&db->walbuf, p, n);
}

static void wal_flush_samples(struct tsdb *db)
{
    if (!db->pending_samples)
        return;
    struct buf b = BUF_INIT;
    buf_append(&b, &db->pending_samples, 4);
    buf_append(&b, buf_head(&db->samplebuf), buf_used(&db->samplebuf));
    wal_record(db, REC_SAMPLES, buf_head(&b), buf_used(&b));
    buf_free(&b);
    buf_reset(&db->samplebuf);
    db->pending_samples = 0;
}

static int wal_open_segment(struct tsdb *db, uint32_t seg, bool create)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/wal/%08u", db->dir, seg);
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (fd < 0)
        return -errno;
    if (db->wal_fd >= 0)
        close(db->wal_fd);
    db->wal_fd = fd;
    db->wal_segment = seg;
    struct stat st;
    db->wal_segment_bytes = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

int tsdb_commit(struct tsdb *db, bool sync)
{
    if (!db->dir)
        return 0;
    wal_flush_samples(db);
    size_t n = buf_used(&db->walbuf);
    const char *p = n ? buf_head(&db->walbuf) : NULL;
    while (n) {
        ssize_t w = write(db->wal_fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            log_error("wal write failed", "err", strerror(errno));
            /* keep the bytes: the next commit tries again */
            buf_consume(&db->walbuf, buf_used(&db->walbuf) - n);
            return e;
        }
        p += w;
        n -= (size_t)w;
        db->wal_segment_bytes += (uint64_t)w;
        db->st.wal_bytes += (uint64_t)w;
    }
    buf_reset(&db->walbuf);
    if (sync) {
        if (fdatasync(db->wal_fd)) {
            log_error("wal fsync failed", "err", strerror(errno));
            return -errno;
        }
        db->st.wal_fsyncs++;
    }
    if (db->wal_segment_bytes > WAL_SEGMENT_MAX) {
        fdatasync(db->wal_fd);
        int r = wal_open_segment(db, db->wal_segment + 1, true);
        if (r)
            return r;
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- parallel WAL replay ----
 *
 * The reading thread checks each record and creates series in WAL order; samples
 * go to worker threads by series reference, so each series is appended to by one
 * thread, in WAL order. Workers count into their own statistics, merged at the end. */

#define REPLAY_BATCH 4096
#define REPLAY_QUEUE 8          /* batches waiting per worker: bounds the memory */

struct rsample {
    struct tsdb_series *s;
    int64_t t;
    double v;
};

struct rbatch {
    struct rsample *x;
    size_t n;
};

struct rworker {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rbatch q[REPLAY_QUEUE];
    size_t head, count;
    bool done;
    struct rbatch fill;         /* being filled by the reader */
    const struct tsdb *db;
    struct tsdb_stats st;
    int64_t mint, maxt, head_mint;
};

struct replay {
    struct rworker *w;
    size_t nw;
};

static void *replay_worker(void *arg)
{
    struct rworker *w = arg;
    struct acc ac = { &w->st, &w->mint, &w->maxt, &w->head_mint };
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->count && !w->done)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->count) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        struct rbatch b = w->q[w->head];
        w->head = (w->head + 1) % REPLAY_QUEUE;
        w->count--;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        for (size_t i = 0; i < b.n; i++)
            append_acc(w->db, &ac, b.x[i].s, b.x[i].t, b.x[i].v);
        free(b.x);
    }
}

static void replay_submit(struct rworker *w)
{
    if (!w->fill.n)
        return;
    pthread_mutex_lock(&w->mu);
    while (w->count == REPLAY_QUEUE)
        pthread_cond_wait(&w->cv, &w->mu);
    w->q[(w->head + w->count) % REPLAY_QUEUE] = w->fill;
    w->count++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    w->fill.x = NULL;
    w->fill.n = 0;
}

/* Hands a sample to its series' worker; false when memory ran out (the caller
 * appends it itself then). */
static bool replay_sample(struct replay *rp, struct tsdb_series *s, int64_t t, double v)
{
    struct rworker *w = &rp->w[s->ref % rp->nw];
    if (!w->fill.x && !(w->fill.x = malloc(REPLAY_BATCH * sizeof(*w->fill.x))))
        return false;
    w->fill.x[w->fill.n++] = (struct rsample){ s, t, v };
    if (w->fill.n == REPLAY_BATCH)
        replay_submit(w);
    return true;
}

/* Starts up to one worker per core (none on one core: replay stays inline). */
static void replay_start(struct tsdb *db, struct replay *rp)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n = cores > 8 ? 8 : cores > 1 ? (size_t)cores : 0;
    rp->nw = 0;
    rp->w = n ? calloc(n, sizeof(*rp->w)) : NULL;
    for (size_t i = 0; rp->w && i < n; i++) {
        struct rworker *w = &rp->w[i];
        w->db = db;
        w->mint = INT64_MAX;
        w->maxt = INT64_MIN;
        w->head_mint = INT64_MAX;
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
        if (pthread_create(&w->th, NULL, replay_worker, w)) {
            pthread_mutex_destroy(&w->mu);
            pthread_cond_destroy(&w->cv);
            break;
        }
        rp->nw++;
    }
    if (!rp->nw) {
        free(rp->w);
        rp->w = NULL;
    }
}

static void replay_stop(struct tsdb *db, struct replay *rp)
{
    for (size_t i = 0; i < rp->nw; i++) {
        struct rworker *w = &rp->w[i];
        replay_submit(w);
        pthread_mutex_lock(&w->mu);
        w->done = true;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->th, NULL);
        free(w->fill.x);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        if (w->st.samples_appended) {
            if (!db->st.samples_appended || w->mint < db->mint)
                db->mint = w->mint;
            if (!db->st.samples_appended || w->maxt > db->maxt)
                db->maxt = w->maxt;
        }
        if (w->head_mint < db->head_mint)
            db->head_mint = w->head_mint;
        db->st.samples_appended += w->st.samples_appended;
        db->st.out_of_order += w->st.out_of_order;
        db->st.duplicates += w->st.duplicates;
        db->st.ooo_accepted += w->st.ooo_accepted;
    }
    free(rp->w);
    rp->w = NULL;
    rp->nw = 0;
}

/* Replays one segment; returns the offset of the end of the last good record. */
static off_t replay_segment(struct tsdb *db, struct replay *rp, const char *path, bool *torn)
{
    FILE *f = fopen(path, "rb");
    off_t good = 0;
    *torn = false;
    if (!f)
        return 0;
    uint8_t *payload = NULL;
    size_t cap = 0;
    for (;;) {
        uint8_t hdr[9];
        size_t r = fread(hdr, 1, 9, f);
        if (r == 0)
            break;
        uint32_t len, crc;
        memcpy(&len, hdr + 1, 4);
        memcpy(&crc, hdr + 5, 4);
        if (r < 9 || len > WAL_RECORD_MAX || (hdr[0] != REC_SERIES && hdr[0] != REC_SAMPLES)) {
            *torn = true;
            break;
        }
        if (len > cap) {
            uint8_t *np = realloc(payload, len);
            if (!np) {
                *torn = true;
                break;
            }
            payload = np;
            cap = len;
        }
        if (fread(payload, 1, len, f) != len || (uint32_t)crc32(0L, payload, len) != crc) {
            *torn = true;
            break;
        }
        bool bad = false;
        if (hdr[0] == REC_SERIES) {
            uint64_t ref;
            uint16_t n;
            size_t o = 10;
            struct tsdb_label pairs[TSDB_MAX_LABELS];
            char *strs[TSDB_MAX_LABELS * 2];
            int ns = 0;
            if (len < 10) {
                bad = true;
            } else {
                memcpy(&ref, payload, 8);
                memcpy(&n, payload + 8, 2);
                bad = n > TSDB_MAX_LABELS || !slots_upto(db, ref);
                for (uint16_t i = 0; i < n && !bad; i++)
                    for (int k = 0; k < 2 && !bad; k++) {
                        uint16_t sl;
                        if (o + 2 > len) {
                            bad = true;
                            break;
                        }
                        memcpy(&sl, payload + o, 2);
                        o += 2;
                        if (o + sl > len) {
                            bad = true;
                            break;
                        }
                        strs[ns] = strndup((const char *)payload + o, sl);
                        if (!strs[ns]) {
                            bad = true;
                            break;
                        }
                        ns++;
                        o += sl;
                    }
                if (!bad) {
                    for (uint16_t i = 0; i < n; i++)
                        pairs[i] = (struct tsdb_label){ strs[2 * i], strs[2 * i + 1] };
                    struct tsdb_labels l;
                    if (tsdb_labels_make(&l, pairs, n) == 0) {
                        if (!series_insert(db, &l, tsdb_labels_hash(&l), false)) {
                            tsdb_labels_free(&l);
                            bad = true;
                        }
                    } else {
                        bad = true;
                    }
                }
            }
            for (int i = 0; i < ns; i++)
                free(strs[i]);
        } else {
            uint32_t n;
            if (len < 4) {
                bad = true;
            } else {
                memcpy(&n, payload, 4);
                if ((uint64_t)n * 24 + 4 != len)
                    bad = true;
                for (uint32_t i = 0; i < n && !bad; i++) {
                    uint64_t ref;
                    int64_t t;
                    double v;
                    memcpy(&ref, payload + 4 + 24 * i, 8);
                    memcpy(&t, payload + 12 + 24 * i, 8);
                    memcpy(&v, payload + 20 + 24 * i, 8);
                    struct tsdb_series *s = tsdb_series_by_ref(db, ref);
                    if (!s) {
                        bad = true;
                        break;
                    }
                    if (!rp->nw || !replay_sample(rp, s, t, v))
                        append_mem(db, s, t, v);
                }
            }
        }
        if (bad) {
            *torn = true;
            break;
        }
        db->st.replayed_records++;
        good = ftello(f);
    }
    free(payload);
    fclose(f);
    return good;
}

/* ---- head snapshot ----
 *
 * dir/snapshot holds every series with its chunks (the open one with its encoder
 * state) and the number of the first WAL segment that is not in it. Taking one:
 * flush the WAL, start a new segment, write the snapshot (temporary file, fsync,
 * rename), then delete the older segments. A crash at any point leaves either the
 * old snapshot with all the segments it needs, or the new one (older segments
 * left over are ignored and deleted on open). Records are CRC-checked; a damaged
 * snapshot is ignored with an error (the WAL segments it covered are gone then).
 */

#define SNAP_MAGIC "CAIRNSN2"      /* SN1: the same without out-of-order samples */

static void put(struct buf *b, const void *p, size_t n)
{
    buf_append(b, p, n);
}

static void snap_series(struct buf *b, const struct tsdb_series *s)
{
    put(b, &s->ref, 8);
    put(b, &s->labels.n, 2);
    for (uint16_t i = 0; i < s->labels.n; i++) {
        const char *ss[2] = { s->labels.l[i].name, s->labels.l[i].value };
        for (int k = 0; k < 2; k++) {
            uint16_t len = (uint16_t)strlen(ss[k]);
            put(b, &len, 2);
            put(b, ss[k], len);
        }
    }
    uint8_t hl = s->has_last;
    put(b, &hl, 1);
    put(b, &s->last_t, 8);
    put(b, &s->last_v, 8);
    put(b, &s->nchunks, 4);
    for (uint32_t i = 0; i < s->nchunks; i++) {
        const struct tsdb_sealed *c = &s->chunks[i];
        put(b, &c->mint, 8);
        put(b, &c->maxt, 8);
        put(b, &c->n, 2);
        put(b, &c->nbits, 4);
        put(b, c->b, (c->nbits + 7) / 8);
    }
    put(b, &s->nooo, 4);
    for (uint32_t i = 0; i < s->nooo; i++) {
        put(b, &s->ooo_t[i], 8);
        put(b, &s->ooo_v[i], 8);
    }
    const struct tsdb_chunk *h = &s->head;
    put(b, &h->n, 2);
    put(b, &h->nbits, 4);
    put(b, &h->mint, 8);
    put(b, &h->maxt, 8);
    put(b, &h->t, 8);
    put(b, &h->tdelta, 8);
    put(b, &h->vbits, 8);
    put(b, &h->leading, 1);
    put(b, &h->trailing, 1);
    if (h->n)
        put(b, h->b, (h->nbits + 7) / 8);
}

/* A snapshot whose file is written and now goes to disk: fdatasync, rename, the
 * directory's fsync, then the WAL segments before `next` deleted. Done on a thread
 * of its own by the service (the fsyncs can take long), inline otherwise. */
struct tsdb_snap {
    pthread_t th;
    bool threaded;
    int done;                   /* set by the thread, atomically */
    FILE *f;
    uint32_t next;
    uint64_t t0, bytes, series;
    int r;                      /* the outcome */
    size_t removed;             /* WAL segments deleted */
    char dir[4200];
};

static void *snap_sync(void *arg)
{
    struct tsdb_snap *sn = arg;
    char path[4300], tmp[4320];
    snprintf(path, sizeof(path), "%s/snapshot", sn->dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int r = 0;
    if (fflush(sn->f) || fdatasync(fileno(sn->f)))
        r = errno ? -errno : -EIO;
    if (fclose(sn->f) && !r)
        r = errno ? -errno : -EIO;
    sn->f = NULL;
    if (!r && rename(tmp, path))
        r = -errno;
    if (r) {
        unlink(tmp);
    } else {
        int dfd = open(sn->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        /* the segments before `next` are in the snapshot now */
        char wdir[4300];
        snprintf(wdir, sizeof(wdir), "%s/wal", sn->dir);
        DIR *d = opendir(wdir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            char *end;
            unsigned long v = strtoul(de->d_name, &end, 10);
            if (de->d_name[0] >= '0' && de->d_name[0] <= '9' && !*end && v < sn->next) {
                char sp[4600];
                snprintf(sp, sizeof(sp), "%s/%s", wdir, de->d_name);
                sn->removed += unlink(sp) == 0;
            }
        }
        if (d)
            closedir(d);
    }
    sn->r = r;
    __atomic_store_n(&sn->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Reports a synced snapshot (on the loop thread) and frees it. */
static int snap_finish(struct tsdb *db, struct tsdb_snap *sn)
{
    if (sn->threaded)
        pthread_join(sn->th, NULL);
    int r = sn->r;
    if (r) {
        log_error("snapshot write failed; the WAL stays", "dir", sn->dir, "err", strerror(-r));
    } else {
        db->st.snapshots++;
        log_info("head snapshot written", "series", log_int((long long)sn->series), "bytes",
                 log_int((long long)sn->bytes), "wal_segments_removed", log_int((long long)sn->removed),
                 "ms", log_int((long long)(cairn_now_ms() - sn->t0)));
    }
    free(sn);
    return r;
}

/* Waits for the snapshot going to disk, if any. */
static void snap_drain(struct tsdb *db)
{
    struct tsdb_snap *sn = db->snap;
    db->snap = NULL;
    if (sn)
        snap_finish(db, sn);
}

/* Writes the head into dir/snapshot.tmp (not yet synced) after starting a new WAL
 * segment; NULL on failure (r says why). */
static struct tsdb_snap *snap_write(struct tsdb *db, int *r)
{
    uint64_t t0 = cairn_now_ms();
    *r = tsdb_commit(db, true);
    if (*r)
        return NULL;
    uint32_t next = db->wal_segment + 1;
    *r = wal_open_segment(db, next, true);
    if (*r)
        return NULL;
    struct tsdb_snap *sn = calloc(1, sizeof(*sn));
    if (!sn) {
        *r = -ENOMEM;
        return NULL;
    }
    snprintf(sn->dir, sizeof(sn->dir), "%s", db->dir);
    sn->next = next;
    sn->t0 = t0;
    sn->series = db->active;
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s/snapshot.tmp", db->dir);
    FILE *f = fopen(tmp, "wbe");
    if (!f) {
        *r = -errno;
        free(sn);
        return NULL;
    }
    uint64_t n = db->active;
    bool ok = fwrite(SNAP_MAGIC, 1, 8, f) == 8 && fwrite(&next, 4, 1, f) == 1 &&
              fwrite(&n, 8, 1, f) == 1;
    struct buf b = BUF_INIT;
    uint64_t bytes = 20;
    for (size_t i = 0; ok && i < db->nseries; i++) {
        if (!db->series[i])
            continue;
        buf_reset(&b);
        snap_series(&b, db->series[i]);
        uint32_t len = (uint32_t)buf_used(&b), crc = (uint32_t)crc32(0L, (const Bytef *)buf_head(&b), len);
        ok = fwrite(&len, 4, 1, f) == 1 && fwrite(&crc, 4, 1, f) == 1 &&
             fwrite(buf_head(&b), 1, len, f) == len;
        bytes += 8 + len;
    }
    buf_free(&b);
    if (!ok) {
        *r = errno ? -errno : -EIO;
        fclose(f);
        unlink(tmp);
        log_error("snapshot write failed", "file", tmp, "err", strerror(-*r));
        free(sn);
        return NULL;
    }
    sn->f = f;
    sn->bytes = bytes;
    /* the WAL from `next` on is what the snapshot does not hold */
    db->wal_bytes_at_snapshot = db->st.wal_bytes;
    return sn;
}

int tsdb_snapshot(struct tsdb *db)
{
    if (!db->dir)
        return 0;
    snap_drain(db);
    int r;
    struct tsdb_snap *sn = snap_write(db, &r);
    if (!sn)
        return r;
    snap_sync(sn);
    return snap_finish(db, sn);
}

int tsdb_snapshot_background(struct tsdb *db)
{
    if (!db->dir)
        return 0;
    if (db->snap) {
        if (!__atomic_load_n(&db->snap->done, __ATOMIC_ACQUIRE))
            return 0;           /* one at a time */
        snap_drain(db);
    }
    int r;
    struct tsdb_snap *sn = snap_write(db, &r);
    if (!sn)
        return r;
    if (db->background && pthread_create(&sn->th, NULL, snap_sync, sn) == 0) {
        sn->threaded = true;
        db->snap = sn;
        return 0;
    }
    snap_sync(sn);
    return snap_finish(db, sn);
}

struct rd {
    const uint8_t *p;
    size_t n, o;
    bool bad;
};

static void get(struct rd *r, void *out, size_t n)
{
    if (r->bad || r->o + n > r->n) {
        r->bad = true;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p + r->o, n);
    r->o += n;
}

static uint8_t *get_bytes(struct rd *r, size_t n, size_t cap)
{
    if (r->bad || r->o + n > r->n) {
        r->bad = true;
        return NULL;
    }
    uint8_t *b = calloc(cap > n ? cap : (n ? n : 1), 1);
    if (!b) {
        r->bad = true;
        return NULL;
    }
    memcpy(b, r->p + r->o, n);
    r->o += n;
    return b;
}

/* version: the snapshot format's (1 or 2, from its magic) */
static int snap_load_series(struct tsdb *db, const uint8_t *p, size_t len, int snap_version)
{
    struct rd r = { p, len, 0, false };
    uint64_t ref;
    uint16_t n;
    get(&r, &ref, 8);
    get(&r, &n, 2);
    if (r.bad || n > TSDB_MAX_LABELS || !slots_upto(db, ref))
        return -EINVAL;
    struct tsdb_label pairs[TSDB_MAX_LABELS];
    char *strs[TSDB_MAX_LABELS * 2];
    int ns = 0;
    for (uint16_t i = 0; i < n && !r.bad; i++)
        for (int k = 0; k < 2 && !r.bad; k++) {
            uint16_t sl;
            get(&r, &sl, 2);
            uint8_t *sb = get_bytes(&r, sl, (size_t)sl + 1);
            if (sb)
                strs[ns++] = (char *)sb;
        }
    struct tsdb_series *s = NULL;
    if (!r.bad) {
        for (uint16_t i = 0; i < n; i++)
            pairs[i] = (struct tsdb_label){ strs[2 * i], strs[2 * i + 1] };
        struct tsdb_labels l;
        if (tsdb_labels_make(&l, pairs, n) == 0) {
            s = series_insert(db, &l, tsdb_labels_hash(&l), false);
            if (!s)
                tsdb_labels_free(&l);
        }
    }
    for (int i = 0; i < ns; i++)
        free(strs[i]);
    if (!s)
        return -EINVAL;
    uint8_t hl;
    get(&r, &hl, 1);
    s->has_last = hl;
    get(&r, &s->last_t, 8);
    get(&r, &s->last_v, 8);
    uint32_t nc;
    get(&r, &nc, 4);
    if (r.bad || nc > len / 22)
        return -EINVAL;
    s->chunks = calloc(nc ? nc : 1, sizeof(*s->chunks));
    s->capchunks = nc ? nc : 1;
    if (!s->chunks)
        return -ENOMEM;
    for (uint32_t i = 0; i < nc && !r.bad; i++) {
        struct tsdb_sealed *c = &s->chunks[i];
        get(&r, &c->mint, 8);
        get(&r, &c->maxt, 8);
        get(&r, &c->n, 2);
        get(&r, &c->nbits, 4);
        c->b = get_bytes(&r, (c->nbits + 7) / 8, 0);
        if (c->b)
            s->nchunks++;
    }
    if (snap_version >= 2) {
        uint32_t no;
        get(&r, &no, 4);
        if (r.bad || no > (len - r.o) / 16)
            return -EINVAL;
        if (no) {
            s->ooo_t = malloc(no * sizeof(*s->ooo_t));
            s->ooo_v = malloc(no * sizeof(*s->ooo_v));
            if (!s->ooo_t || !s->ooo_v)
                return -ENOMEM;
            s->capooo = no;
            for (uint32_t i = 0; i < no && !r.bad; i++) {
                get(&r, &s->ooo_t[i], 8);
                get(&r, &s->ooo_v[i], 8);
                if (i && s->ooo_t[i] <= s->ooo_t[i - 1])
                    r.bad = true;       /* the merge needs them sorted */
            }
            s->nooo = no;
            db->st.samples_appended += no;
        }
    }
    struct tsdb_chunk *h = &s->head;
    get(&r, &h->n, 2);
    get(&r, &h->nbits, 4);
    get(&r, &h->mint, 8);
    get(&r, &h->maxt, 8);
    get(&r, &h->t, 8);
    get(&r, &h->tdelta, 8);
    get(&r, &h->vbits, 8);
    get(&r, &h->leading, 1);
    get(&r, &h->trailing, 1);
    if (!r.bad && h->n) {
        size_t nb = (h->nbits + 7) / 8;
        uint32_t cap = 32;
        while (cap < nb + 16)
            cap *= 2;
        free(h->b);
        h->b = get_bytes(&r, nb, cap);
        h->capbytes = h->b ? cap : 0;
    }
    /* the encoder state must be one the encoder can continue from: no bits
     * without samples, at most ~160 bits a sample */
    if (r.bad || r.o != r.n || h->n > TSDB_CHUNK_MAX_SAMPLES || (h->n == 0) != (h->nbits == 0) ||
        h->nbits > 160u * TSDB_CHUNK_MAX_SAMPLES)
        return -EINVAL;
    /* what blocks already hold (a crash between a block cut and its snapshot) */
    uint32_t k = 0;
    while (k < s->nchunks && s->chunks[k].maxt < db->min_valid)
        free(s->chunks[k++].b);
    if (k) {
        memmove(s->chunks, s->chunks + k, (s->nchunks - k) * sizeof(*s->chunks));
        s->nchunks -= k;
    }
    uint32_t o = 0;
    while (o < s->nooo && s->ooo_t[o] < db->min_valid)
        o++;
    if (o) {
        memmove(s->ooo_t, s->ooo_t + o, (s->nooo - o) * sizeof(*s->ooo_t));
        memmove(s->ooo_v, s->ooo_v + o, (s->nooo - o) * sizeof(*s->ooo_v));
        s->nooo -= o;
    }
    for (uint32_t i = 0; i <= s->nchunks; i++) {
        int64_t mn = i < s->nchunks ? s->chunks[i].mint : h->mint;
        int64_t mx = i < s->nchunks ? s->chunks[i].maxt : h->maxt;
        if (i == s->nchunks && !h->n)
            break;
        if (db->st.samples_appended == 0 || mn < db->mint)
            db->mint = mn;
        if (db->st.samples_appended == 0 || mx > db->maxt)
            db->maxt = mx;
        db->st.samples_appended += i < s->nchunks ? s->chunks[i].n : h->n;
    }
    return 0;
}

/* Loads dir/snapshot if there is one; *first_seg gets the first WAL segment to
 * replay (0 without a snapshot). A damaged snapshot is an error: the WAL after it
 * names series by the references it holds, so nothing can be loaded without it,
 * and the files are left as they are for the operator. */
static int snap_load(struct tsdb *db, uint32_t *first_seg, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/snapshot", db->dir);
    *first_seg = 0;
    FILE *f = fopen(path, "rbe");
    if (!f)
        return 0;
    uint64_t t0 = cairn_now_ms();
    char magic[8];
    uint32_t seg = 0;
    uint64_t n = 0;
    bool ok = fread(magic, 1, 8, f) == 8 && (!memcmp(magic, SNAP_MAGIC, 8) ||
                                              !memcmp(magic, "CAIRNSN1", 8)) &&
              fread(&seg, 4, 1, f) == 1 && fread(&n, 8, 1, f) == 1;
    int snap_version = magic[7] - '0';
    uint8_t *p = NULL;
    size_t cap = 0;
    for (uint64_t i = 0; ok && i < n; i++) {
        uint32_t len, crc;
        ok = fread(&len, 4, 1, f) == 1 && fread(&crc, 4, 1, f) == 1 && len <= WAL_RECORD_MAX;
        if (ok && len > cap) {
            uint8_t *np = realloc(p, len);
            ok = np != NULL;
            if (np) {
                p = np;
                cap = len;
            }
        }
        ok = ok && fread(p, 1, len, f) == len && (uint32_t)crc32(0L, p, len) == crc &&
             snap_load_series(db, p, len, snap_version) == 0;
    }
    free(p);
    fclose(f);
    if (!ok) {
        snprintf(err, errlen, "%s: head snapshot damaged after %llu series; move it away to start "
                              "without it (the samples it holds are then lost)", path,
                 (unsigned long long)db->active);
        return -EINVAL;
    }
    *first_seg = seg;
    log_info("head snapshot loaded", "series", log_int((long long)db->active), "samples",
             log_int((long long)db->st.samples_appended), "ms",
             log_int((long long)(cairn_now_ms() - t0)));
    return 0;
}

static int blocks_load(struct tsdb *db, char *err, size_t errlen);
static void head_mint_recompute(struct tsdb *db);
static size_t head_gc(struct tsdb *db);

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
    qsort(segs, nseg, sizeof(segs[0]), cmp_u32);
    int br = blocks_load(db, err, errlen);
    if (br)
        return br;
    uint32_t first = 0;
    int sr = snap_load(db, &first, err, errlen);
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
        replay_start(db, &rp);
    size_t workers = rp.nw;
    for (size_t i = 0; i < nseg; i++) {
        char sp[4200];
        snprintf(sp, sizeof(sp), "%s/%08u", path, segs[i]);
        bool torn;
        off_t good = replay_segment(db, &rp, sp, &torn);
        if (torn) {
            struct stat st;
            long long size = stat(sp, &st) == 0 ? (long long)st.st_size : -1;
            log_warn("wal: torn or corrupted record, cutting the log there", "segment", sp,
                     "good_bytes", log_int((long long)good), "file_bytes", log_int(size));
            if (truncate(sp, good)) {
                int e = -errno;
                snprintf(err, errlen, "%s: cannot truncate: %s", sp, strerror(errno));
                replay_stop(db, &rp);
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
    replay_stop(db, &rp);
    db->replaying = false;
    head_mint_recompute(db);
    if (db->nblocks)
        head_gc(db);            /* series whose samples a block took before a crash */
    if (nseg)
        log_info("wal replayed", "segments", log_int((long long)nseg), "threads",
                 log_int((long long)workers + 1), "records",
                 log_int((long long)db->st.replayed_records), "series",
                 log_int((long long)db->active), "samples",
                 log_int((long long)db->st.samples_appended), "ms",
                 log_int((long long)(cairn_now_ms() - t0)));
    int r = wal_open_segment(db, nseg ? segs[nseg - 1] : first ? first : 1, true);
    if (r) {
        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    return 0;
}

static void job_drain(struct tsdb *db, bool closing);

void tsdb_close(struct tsdb *db)
{
    job_drain(db, true);
    snap_drain(db);
    if (db->dir && db->wal_fd >= 0)
        tsdb_commit(db, true);
    if (db->wal_fd >= 0)
        close(db->wal_fd);
    for (size_t i = 0; i < db->nseries; i++)
        if (db->series[i])
            series_free(db->series[i]);
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

/* ---- matching and selection ---- */

int tsdb_matcher_init(struct tsdb_matcher *m, const char *name, enum tsdb_match_op op,
                      const char *value, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->name = strdup(name);
    m->value = strdup(value);
    m->op = op;
    if (!m->name || !m->value) {
        snprintf(err, errlen, "out of memory");
        tsdb_matcher_free(m);
        return -ENOMEM;
    }
    if (op == TSDB_RE || op == TSDB_NRE) {
        /* RE2 semantics as Prometheus uses them: fully anchored */
        size_t n = strlen(value);
        char *pat = malloc(n + 8);
        if (!pat) {
            tsdb_matcher_free(m);
            return -ENOMEM;
        }
        snprintf(pat, n + 8, "^(?:%s)$", value);
        int ec;
        PCRE2_SIZE eo;
        m->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_DOTALL | PCRE2_UTF | PCRE2_DOLLAR_ENDONLY,
                              &ec, &eo, NULL);
        free(pat);
        if (!m->re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof(msg));
            snprintf(err, errlen, "invalid regular expression \"%s\": %s", value, (char *)msg);
            tsdb_matcher_free(m);
            return -EINVAL;
        }
        m->md = pcre2_match_data_create_from_pattern(m->re, NULL);
        if (!m->md) {
            snprintf(err, errlen, "out of memory");
            tsdb_matcher_free(m);
            return -ENOMEM;
        }
    }
    return 0;
}

void tsdb_matcher_free(struct tsdb_matcher *m)
{
    free(m->name);
    free(m->value);
    if (m->md)
        pcre2_match_data_free(m->md);
    if (m->re)
        pcre2_code_free(m->re);
    memset(m, 0, sizeof(*m));
}

bool tsdb_matcher_matches(const struct tsdb_matcher *m, const char *value)
{
    switch (m->op) {
    case TSDB_EQ:
        return strcmp(value, m->value) == 0;
    case TSDB_NEQ:
        return strcmp(value, m->value) != 0;
    case TSDB_RE:
    case TSDB_NRE: {
        int r = pcre2_match(m->re, (PCRE2_SPTR)value, strlen(value), 0, 0, m->md, NULL);
        return (r >= 0) == (m->op == TSDB_RE);
    }
    }
    return false;
}

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
            const struct plist *p = plist_find(db->postings, m[i].name, m[i].value,
                                               pkey_hash(m[i].name, m[i].value));
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

static void block_labels(const struct tsdb_block *b, const struct tsdb_bseries *bs,
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
        block_labels(b, &bs, pairs);
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
            e->head = series_lookup(db, &l, h);
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

static size_t sort_unique(const char **a, size_t n)
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
    return sort_unique(a, n);
}

void tsdb_free_strings(const char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((void *)a[i]);
    free(a);
}

/* ---- blocks: cutting the head, compaction, retention ----
 *
 * The head is cut when it spans more than 1.5 block ranges: every sample of the
 * oldest range goes into a block (whole chunks, since a chunk never crosses a
 * range boundary; series with out-of-order samples or chunks from an older
 * snapshot are re-encoded), the head lets go of them, appends older than the
 * block's end are refused from then on (min_valid), and a head snapshot drops the
 * WAL behind it. A crash after the block is written but before the snapshot
 * replays samples the block already has: replay skips what is older than
 * min_valid. Blocks that the head has left behind are merged, three ranges at a
 * time (2h, 6h, 18h, ... up to max_block_ms), into blocks with the merged ones as
 * parents; on open, blocks that a newer block lists as parents are deleted (a
 * crash between writing the merge and deleting its inputs).
 */

static int cmp_block(const void *a, const void *b)
{
    const struct tsdb_block *x = *(struct tsdb_block *const *)a, *y = *(struct tsdb_block *const *)b;
    if (x->mint != y->mint)
        return x->mint < y->mint ? -1 : 1;
    return strcmp(x->ulid, y->ulid);
}

static int block_add(struct tsdb *db, const char *ulid, char *err, size_t errlen)
{
    char dir[4400];
    snprintf(dir, sizeof(dir), "%s/blocks/%s", db->dir, ulid);
    struct tsdb_block *b = calloc(1, sizeof(*b));
    struct tsdb_block **a = realloc(db->blocks, (db->nblocks + 1) * sizeof(*a));
    if (!b || !a) {
        free(b);
        if (a)
            db->blocks = a;
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    db->blocks = a;
    int r = tsdb_block_open(b, dir, err, errlen);
    if (r) {
        free(b);
        return r;
    }
    db->blocks[db->nblocks++] = b;
    qsort(db->blocks, db->nblocks, sizeof(*db->blocks), cmp_block);
    return 0;
}

/* Closes and deletes the block at index i. */
static void block_drop(struct tsdb *db, size_t i)
{
    struct tsdb_block *b = db->blocks[i];
    char dir[4400];
    snprintf(dir, sizeof(dir), "%s", b->dir);
    tsdb_block_close(b);
    free(b);
    memmove(db->blocks + i, db->blocks + i + 1, (db->nblocks - i - 1) * sizeof(*db->blocks));
    db->nblocks--;
    tsdb_block_remove(dir);
    db->st.blocks_deleted++;
}

uint64_t tsdb_blocks_bytes(const struct tsdb *db)
{
    uint64_t n = 0;
    for (size_t i = 0; i < db->nblocks; i++)
        n += db->blocks[i]->bytes;
    return n;
}

/* Opens dir/blocks: leftovers of an interrupted write go, so do blocks that a
 * compaction already merged; a damaged block refuses the start (as a damaged
 * snapshot does), naming it. */
static int blocks_load(struct tsdb *db, char *err, size_t errlen)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/blocks", db->dir);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    int r = 0;
    while (!r && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.')
            continue;
        char p[4500];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if (l > 4 && !strcmp(de->d_name + l - 4, ".tmp")) {
            log_warn("removing an unfinished block", "dir", p);
            tsdb_block_remove(p);
            continue;
        }
        if (l != TSDB_ULID_LEN)
            continue;
        r = block_add(db, de->d_name, err, errlen);
        if (r == -EINVAL)
            snprintf(err + strlen(err), errlen - strlen(err),
                     "; move the block away to start without it (its samples are then lost)");
    }
    closedir(d);
    if (r)
        return r;
    /* inputs of a finished compaction */
    for (size_t i = 0; i < db->nblocks; i++) {
        const struct tsdb_block *b = db->blocks[i];
        for (uint32_t k = 0; k < b->nparents; k++)
            for (size_t j = 0; j < db->nblocks; j++)
                if (j != i && !memcmp(db->blocks[j]->ulid, b->parents + (size_t)k * TSDB_ULID_LEN,
                                      TSDB_ULID_LEN)) {
                    log_warn("removing a block that a compaction merged", "dir", db->blocks[j]->dir);
                    block_drop(db, j);
                    if (j < i)
                        i--;
                    b = db->blocks[i];
                    break;
                }
    }
    for (size_t i = 0; i < db->nblocks; i++)
        if (db->blocks[i]->maxt + 1 > db->min_valid)
            db->min_valid = db->blocks[i]->maxt + 1;
    if (db->nblocks)
        log_info("blocks opened", "blocks", log_int((long long)db->nblocks), "bytes",
                 log_int((long long)tsdb_blocks_bytes(db)), "min_valid",
                 log_int((long long)db->min_valid));
    return 0;
}

static void head_mint_recompute(struct tsdb *db)
{
    int64_t m = INT64_MAX;
    for (size_t i = 0; i < db->nseries; i++) {
        const struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        if (s->nchunks && s->chunks[0].mint < m)
            m = s->chunks[0].mint;
        if (s->nooo && s->ooo_t[0] < m)
            m = s->ooo_t[0];
        if (s->head.n && s->head.mint < m)
            m = s->head.mint;
    }
    db->head_mint = m;
}

/* Encodes the samples of s in [lo, hi] into new sealed chunks. */
static int encode_range(const struct tsdb_series *s, int64_t lo, int64_t hi,
                        struct tsdb_sealed **out, uint32_t *n)
{
    struct tsdb_iter it;
    struct tsdb_chunk c;
    uint32_t cap = 0;
    int64_t t;
    double v;
    *out = NULL;
    *n = 0;
    tsdb_chunk_init(&c);
    tsdb_iter_init(&it, s, lo, hi);
    bool more = tsdb_iter_next(&it, &t, &v);
    while (more || c.n) {
        if (!more || c.n >= TSDB_CHUNK_MAX_SAMPLES) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 4;
                struct tsdb_sealed *a = realloc(*out, cap * sizeof(*a));
                if (!a)
                    goto nomem;
                *out = a;
            }
            tsdb_chunk_seal(&c);
            (*out)[(*n)++] = (struct tsdb_sealed){ c.b, c.nbits, c.n, c.mint, c.maxt };
            tsdb_chunk_init(&c);
            if (!more)
                break;
        }
        if (tsdb_chunk_append(&c, t, v))
            goto nomem;
        more = tsdb_iter_next(&it, &t, &v);
    }
    return 0;
nomem:
    tsdb_chunk_free(&c);
    for (uint32_t i = 0; i < *n; i++)
        free((*out)[i].b);
    free(*out);
    *out = NULL;
    *n = 0;
    return -ENOMEM;
}

struct cut_ent {
    struct tsdb_series *s;
    struct tsdb_sealed *chunks;
    uint32_t n;
    bool reenc;
};

static int cmp_cut(const void *a, const void *b)
{
    return tsdb_labels_cmp(&((const struct cut_ent *)a)->s->labels,
                           &((const struct cut_ent *)b)->s->labels);
}

/* After the block holds them: the head keeps only the samples from end on. */
static int keep_from(struct tsdb_series *s, int64_t end)
{
    struct tsdb_sealed *rest;
    uint32_t nrest;
    int r = encode_range(s, end, INT64_MAX, &rest, &nrest);
    if (r)
        return r;
    for (uint32_t i = 0; i < s->nchunks; i++)
        free(s->chunks[i].b);
    free(s->chunks);
    s->chunks = NULL;
    s->nchunks = s->capchunks = 0;
    tsdb_chunk_free(&s->head);
    tsdb_chunk_init(&s->head);
    free(s->ooo_t);
    free(s->ooo_v);
    s->ooo_t = NULL;
    s->ooo_v = NULL;
    s->nooo = s->capooo = 0;
    /* the newest chunk reopens as the head chunk (decoded again into the encoder),
     * the others stay sealed */
    if (nrest) {
        struct tsdb_sealed last = rest[nrest - 1];
        s->chunks = rest;
        s->nchunks = s->capchunks = nrest - 1;
        struct tsdb_chunk_iter ci;
        tsdb_chunk_iter_init(&ci, last.b, last.nbits, last.n);
        int64_t t;
        double v;
        while (tsdb_chunk_next(&ci, &t, &v))
            if (tsdb_chunk_append(&s->head, t, v))
                r = -ENOMEM;
        free(last.b);
        if (!s->nchunks) {
            free(s->chunks);
            s->chunks = NULL;
            s->capchunks = 0;
        }
    } else {
        free(rest);
    }
    return r;
}

struct merge_src {
    struct tsdb_block **b;
    size_t nb;
    uint32_t *pos;              /* next series per block */
    struct tsdb_bseries *cur;   /* decoded series at pos */
    struct tsdb_label *lab;     /* per block: its current series' labels */
    struct tsdb_labels out;
    struct tsdb_label outl[TSDB_MAX_LABELS];
    struct tsdb_sealed *chunks;
    uint32_t cap;
    uint64_t bad;
};

/* ---- background work: one block write at a time ----
 *
 * A cut or a compaction is prepared on the loop thread (which chunks, in which
 * order; samples older than the cut's end are refused from then on), written by a
 * thread (re-encoding, CRCs, files, fsync), and finished on the loop thread (the
 * block opens, the head lets go, parents are deleted). While one is in flight
 * nothing frees chunks or series: retention and head collection wait for it. */

enum { JOB_CUT = 1, JOB_COMPACT = 2 };

struct tsdb_job {
    int kind;
    pthread_t th;
    bool threaded;
    int done;                   /* set by the writer, atomically */
    uint64_t t0;
    char dir[4200];
    /* a cut */
    int64_t end, mint, maxt;
    struct cut_ent *ents;
    size_t n;
    struct tsdb_sealed *pool;   /* copies of the head's chunk entries (bytes shared) */
    struct tsdb_bw_series *bw;
    uint64_t samples;
    /* a compaction */
    struct tsdb_block **blocks;
    size_t nb;
    struct merge_src *m;
    const char **syms;
    size_t nsym;
    char *parents;
    uint32_t level;
    /* the result */
    int r;
    char ulid[TSDB_ULID_LEN + 1];
    char err[512];
};

static void job_free(struct tsdb_job *j)
{
    if (!j)
        return;
    for (size_t i = 0; j->ents && i < j->n; i++)
        if (j->ents[i].reenc) {
            for (uint32_t c = 0; c < j->ents[i].n; c++)
                free(j->ents[i].chunks[c].b);
            free(j->ents[i].chunks);
        }
    free(j->ents);
    free(j->pool);
    free(j->bw);
    if (j->m) {
        free(j->m->pos);
        free(j->m->cur);
        free(j->m->lab);
        free(j->m->chunks);
        free(j->m);
    }
    free(j->blocks);
    free(j->syms);
    free(j->parents);
    free(j);
}

/* Prepares the cut of the head's samples before end into a block of [start, end - 1].
 * NULL with *r = 0 when the head has none (min_valid moves on all the same). */
static struct tsdb_job *cut_prepare(struct tsdb *db, int64_t start, int64_t end, int *r)
{
    *r = 0;
    size_t pooled = 0;
    for (size_t i = 0; i < db->nseries && !*r; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        if (s->head.n && s->head.mint < end && s->head.maxt < end && seal_head(s))
            *r = -ENOMEM;
        for (uint32_t k = 0; k < s->nchunks && s->chunks[k].maxt < end; k++)
            pooled++;
    }
    struct tsdb_job *j = *r ? NULL : calloc(1, sizeof(*j));
    if (j) {
        j->ents = malloc((db->nseries + 1) * sizeof(*j->ents));
        j->pool = malloc((pooled + 1) * sizeof(*j->pool));
    }
    if (!j || !j->ents || !j->pool) {
        job_free(j);
        *r = -ENOMEM;
        return NULL;
    }
    j->kind = JOB_CUT;
    j->t0 = cairn_now_ms();
    j->end = end;
    size_t used = 0;
    for (size_t i = 0; i < db->nseries && !*r; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        bool reenc = (s->nooo && s->ooo_t[0] < end) || (s->head.n && s->head.mint < end);
        uint32_t k = 0;
        while (k < s->nchunks && s->chunks[k].maxt < end)
            k++;
        if (k < s->nchunks && s->chunks[k].mint < end)
            reenc = true;       /* a chunk across the boundary (an older snapshot's) */
        struct cut_ent e = { s, NULL, 0, reenc };
        if (reenc) {
            if (encode_range(s, INT64_MIN, end - 1, &e.chunks, &e.n))
                *r = -ENOMEM;
        } else if (k) {
            /* the head's array may move while the block is written: copy the entries */
            e.chunks = j->pool + used;
            memcpy(e.chunks, s->chunks, k * sizeof(*e.chunks));
            e.n = k;
            used += k;
        }
        if (e.n)
            j->ents[j->n++] = e;
        else if (reenc)
            free(e.chunks);
    }
    if (*r || !j->n) {
        job_free(j);
        if (!*r)
            db->min_valid = MAX(db->min_valid, end);
        return NULL;
    }
    j->bw = malloc((j->n + 1) * sizeof(*j->bw));
    if (!j->bw) {
        job_free(j);
        *r = -ENOMEM;
        return NULL;
    }
    qsort(j->ents, j->n, sizeof(*j->ents), cmp_cut);
    j->mint = start;
    for (size_t i = 0; i < j->n; i++) {
        j->bw[i] = (struct tsdb_bw_series){ &j->ents[i].s->labels, j->ents[i].chunks, j->ents[i].n };
        if (j->ents[i].chunks[0].mint < j->mint)
            j->mint = j->ents[i].chunks[0].mint;
        for (uint32_t c = 0; c < j->ents[i].n; c++)
            j->samples += j->ents[i].chunks[c].n;
    }
    j->maxt = end - 1;
    snprintf(j->dir, sizeof(j->dir), "%s/blocks", db->dir);
    /* from now on the head takes nothing the block might have needed */
    db->min_valid = MAX(db->min_valid, end);
    return j;
}

/* The head lets go of what the written block holds. */
static void cut_finish(struct tsdb *db, struct tsdb_job *j)
{
    for (size_t i = 0; !j->r && i < j->n; i++) {
        struct cut_ent *e = &j->ents[i];
        struct tsdb_series *s = e->s;
        if (e->reenc) {
            if (keep_from(s, j->end))
                log_error("out of memory trimming the head after a block cut");
        } else {
            /* chunks are only appended while the block was written: the prefix is it */
            for (uint32_t c = 0; c < e->n; c++)
                free(s->chunks[c].b);
            memmove(s->chunks, s->chunks + e->n, (s->nchunks - e->n) * sizeof(*s->chunks));
            s->nchunks -= e->n;
        }
    }
    head_mint_recompute(db);
    if (j->r)
        return;
    db->st.blocks_cut++;
    log_info("block cut from the head", "block", j->ulid, "mint", log_int((long long)j->mint), "maxt",
             log_int((long long)j->maxt), "series", log_int((long long)j->n), "samples",
             log_int((long long)j->samples), "ms", log_int((long long)(cairn_now_ms() - j->t0)));
}

/* ---- compaction: a k-way merge of blocks sorted by labels ---- */


static void merge_load(struct merge_src *m, size_t i)
{
    while (m->pos[i] < m->b[i]->nser) {
        if (tsdb_block_series(m->b[i], m->pos[i], &m->cur[i]) == 0) {
            block_labels(m->b[i], &m->cur[i], m->lab + i * TSDB_MAX_LABELS);
            return;
        }
        m->pos[i]++;
    }
}

static int merge_next(void *arg, struct tsdb_bw_series *out)
{
    struct merge_src *m = arg;
    struct tsdb_labels best = { 0, NULL };
    bool have = false;
    for (size_t i = 0; i < m->nb; i++) {
        if (m->pos[i] >= m->b[i]->nser)
            continue;
        struct tsdb_labels l = { m->cur[i].nlabels, m->lab + i * TSDB_MAX_LABELS };
        if (!have || tsdb_labels_cmp(&l, &best) < 0)
            best = l;
        have = true;
    }
    if (!have)
        return 0;
    memcpy(m->outl, best.l, best.n * sizeof(*best.l));
    m->out = (struct tsdb_labels){ best.n, m->outl };
    uint32_t n = 0;
    for (size_t i = 0; i < m->nb; i++) {
        if (m->pos[i] >= m->b[i]->nser)
            continue;
        struct tsdb_labels l = { m->cur[i].nlabels, m->lab + i * TSDB_MAX_LABELS };
        if (tsdb_labels_cmp(&l, &m->out))
            continue;
        if (n + m->cur[i].nchunks > m->cap) {
            uint32_t nc = m->cap ? m->cap : 64;
            while (nc < n + m->cur[i].nchunks)
                nc *= 2;
            struct tsdb_sealed *a = realloc(m->chunks, nc * sizeof(*a));
            if (!a)
                return -ENOMEM;
            m->chunks = a;
            m->cap = nc;
        }
        uint32_t got = tsdb_block_chunks(m->b[i], &m->cur[i], m->chunks + n);
        if (!got)
            m->bad++;
        n += got;
        m->pos[i]++;
        merge_load(m, i);
    }
    /* labels point into a block whose cursor moved on: they stay valid (the
     * mapping), only the per-block label array was rewritten - out has its copy */
    *out = (struct tsdb_bw_series){ &m->out, m->chunks, n };
    return n ? 1 : 2;           /* 2: every copy damaged, nothing to write */
}

static int merge_next_good(void *arg, struct tsdb_bw_series *out)
{
    int r;
    while ((r = merge_next(arg, out)) == 2)
        ;
    return r;
}

/* Prepares the merge of blocks [i, k) into one. */
static struct tsdb_job *compact_prepare(struct tsdb *db, size_t i, size_t k)
{
    size_t nb = k - i;
    struct tsdb_job *j = calloc(1, sizeof(*j));
    struct merge_src *m = calloc(1, sizeof(*m));
    if (!j || !m) {
        free(j);
        free(m);
        return NULL;
    }
    j->kind = JOB_COMPACT;
    j->t0 = cairn_now_ms();
    j->m = m;
    j->nb = nb;
    j->blocks = malloc(nb * sizeof(*j->blocks));
    m->pos = calloc(nb, sizeof(*m->pos));
    m->cur = calloc(nb, sizeof(*m->cur));
    m->lab = calloc(nb * TSDB_MAX_LABELS, sizeof(*m->lab));
    size_t ns = 0;
    for (size_t x = i; x < k; x++)
        ns += db->blocks[x]->nsym;
    j->syms = malloc((ns + 1) * sizeof(*j->syms));
    j->parents = malloc(nb * TSDB_ULID_LEN + 1);
    if (!j->blocks || !m->pos || !m->cur || !m->lab || !j->syms || !j->parents) {
        job_free(j);
        return NULL;
    }
    memcpy(j->blocks, db->blocks + i, nb * sizeof(*j->blocks));
    m->b = j->blocks;
    m->nb = nb;
    j->mint = INT64_MAX;
    j->maxt = INT64_MIN;
    ns = 0;
    for (size_t x = 0; x < nb; x++) {
        const struct tsdb_block *b = j->blocks[x];
        for (uint32_t y = 0; y < b->nsym; y++)
            j->syms[ns++] = tsdb_block_sym(b, y);
        memcpy(j->parents + x * TSDB_ULID_LEN, b->ulid, TSDB_ULID_LEN);
        j->level = MAX(j->level, b->level);
        j->mint = MIN(j->mint, b->mint);
        j->maxt = MAX(j->maxt, b->maxt);
        merge_load(m, x);
    }
    j->nsym = sort_unique(j->syms, ns);
    snprintf(j->dir, sizeof(j->dir), "%s/blocks", db->dir);
    return j;
}

static void compact_finish(struct tsdb *db, struct tsdb_job *j)
{
    db->st.block_errors += j->m->bad;
    if (j->r)
        return;
    /* the inputs go once the merged block is open (parents names them: db->blocks
     * moves when the new one is added) */
    for (size_t k = 0; k < j->nb; k++)
        for (size_t x = 0; x < db->nblocks; x++)
            if (!memcmp(db->blocks[x]->ulid, j->parents + k * TSDB_ULID_LEN, TSDB_ULID_LEN)) {
                block_drop(db, x);
                break;
            }
    db->st.compactions++;
    log_info("blocks compacted", "block", j->ulid, "from", log_int((long long)j->nb), "mint",
             log_int((long long)j->mint), "maxt", log_int((long long)j->maxt), "level",
             log_int((long long)j->level + 1), "ms", log_int((long long)(cairn_now_ms() - j->t0)));
}

/* The writing part: touches only the job (and the blocks it reads). */
static void *job_run(void *arg)
{
    struct tsdb_job *j = arg;
    if (j->kind == JOB_CUT) {
        j->r = tsdb_block_write(j->dir, j->mint, j->maxt, 1, NULL, 0, j->bw, j->n, j->ulid, j->err,
                                sizeof(j->err));
    } else {
        struct tsdb_bw_src src = { j->syms, (uint32_t)j->nsym, merge_next_good, j->m };
        j->r = tsdb_block_write_src(j->dir, j->mint, j->maxt, j->level + 1, j->parents,
                                    (uint32_t)j->nb, &src, j->ulid, j->err, sizeof(j->err));
    }
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Frees the series that have nothing left in the head (every sample is in blocks)
 * and that nothing pins: out of the table, the postings and the series slots (a
 * reference is never given again). Returns how many. */
static size_t head_gc(struct tsdb *db)
{
    size_t dead = 0;
    for (size_t i = 0; i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
        if (s && !s->pins && !s->nchunks && !s->head.n && !s->nooo) {
            s->dead = true;
            dead++;
        }
    }
    if (!dead)
        return 0;
    struct tsdb_postings *p = db->postings;
    for (size_t i = 0; i < p->size; i++)
        for (struct plist **pe = &p->table[i]; *pe;) {
            struct plist *e = *pe;
            uint32_t k = 0;
            for (uint32_t j = 0; j < e->n; j++)
                if (!e->s[j]->dead)
                    e->s[k++] = e->s[j];
            e->n = k;
            if (k) {
                pe = &e->next;
                continue;
            }
            *pe = e->next;
            free(e->key);
            free(e->s);
            free(e);
            p->count--;
        }
    for (size_t i = 0; i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s || !s->dead)
            continue;
        struct tsdb_series **pp = &db->table[s->hash & (db->tablesize - 1)];
        while (*pp && *pp != s)
            pp = &(*pp)->hnext;
        if (*pp)
            *pp = s->hnext;
        series_free(s);
        db->series[i] = NULL;
        db->active--;
    }
    db->st.series_gc += dead;
    return dead;
}

static bool head_needs_cut(const struct tsdb *db)
{
    int64_t r = db->block_range_ms;
    return db->head_mint != INT64_MAX && db->maxt - range_of(db->head_mint, r) * r >= r * 3 / 2;
}

/* The next piece of work: the oldest range of the head while it spans 1.5 ranges,
 * else blocks inside a window of 3, 9, 27, ... ranges that the head has left. */
static struct tsdb_job *next_job(struct tsdb *db, int *r)
{
    *r = 0;
    int64_t br = db->block_range_ms;
    for (int guard = 0; guard < 1000 && head_needs_cut(db); guard++) {
        int64_t start = range_of(db->head_mint, br) * br;
        struct tsdb_job *j = cut_prepare(db, start, start + br, r);
        if (j || *r)
            return j;
        head_mint_recompute(db);
        if (db->head_mint < start + br)
            break;              /* nothing moved: do not spin */
    }
    for (int64_t w = br * 3; w > 0 && w <= db->max_block_ms; w *= 3) {
        for (size_t i = 0; i < db->nblocks;) {
            int64_t win = range_of(db->blocks[i]->mint, w);
            size_t k = i;
            while (k < db->nblocks && range_of(db->blocks[k]->mint, w) == win &&
                   range_of(db->blocks[k]->maxt, w) == win)
                k++;
            if (k - i >= 2 && (win + 1) * w <= db->min_valid) {
                struct tsdb_job *j = compact_prepare(db, i, k);
                if (!j)
                    *r = -ENOMEM;
                return j;
            }
            i = k > i ? k : i + 1;
        }
        if (w > INT64_MAX / 3)
            break;
    }
    return NULL;
}

/* Opens the written block and completes the job; returns 1 for a block made. */
static int job_finish(struct tsdb *db, struct tsdb_job *j, bool closing)
{
    if (j->threaded)
        pthread_join(j->th, NULL);
    if (!j->r)
        j->r = block_add(db, j->ulid, j->err, sizeof(j->err));
    if (j->r)
        log_error(j->kind == JOB_CUT ? "writing a block failed; the head keeps the samples"
                                     : "compaction failed; the blocks stay as they are",
                  "err", j->err);
    int made = !j->r;
    if (j->kind == JOB_CUT) {
        cut_finish(db, j);
        if (made) {
            size_t gone = head_gc(db);
            if (gone)
                log_info("series with every sample in blocks left the head", "series",
                         log_int((long long)gone), "active", log_int((long long)db->active));
            /* the WAL behind the block goes with a snapshot, once the backlog is cut */
            if (!closing && !head_needs_cut(db))
                tsdb_snapshot_background(db);
        }
    } else {
        compact_finish(db, j);
    }
    job_free(j);
    return made;
}

int tsdb_maintain(struct tsdb *db)
{
    if (db->snap && __atomic_load_n(&db->snap->done, __ATOMIC_ACQUIRE))
        snap_drain(db);
    if (!db->dir || db->block_range_ms <= 0)
        return 0;
    int made = 0;
    if (db->job) {
        if (!__atomic_load_n(&db->job->done, __ATOMIC_ACQUIRE))
            return 0;
        struct tsdb_job *j = db->job;
        db->job = NULL;
        made += job_finish(db, j, false);
    }
    for (int steps = 0; steps < 1000; steps++) {
        int r;
        struct tsdb_job *j = next_job(db, &r);
        if (!j)
            return r ? r : made;
        if (db->background && pthread_create(&j->th, NULL, job_run, j) == 0) {
            j->threaded = true;
            db->job = j;
            return made;
        }
        job_run(j);
        made += job_finish(db, j, false);
    }
    return made;
}

/* Waits for the block being written, if any, and completes it. */
static void job_drain(struct tsdb *db, bool closing)
{
    if (!db->job)
        return;
    struct tsdb_job *j = db->job;
    db->job = NULL;
    job_finish(db, j, closing);
}

/* ---- a consistent copy of the store (the admin snapshot API) ---- */

static int link_block(const struct tsdb_block *b, const char *out_dir)
{
    char dst[4400], sp[4500], dp[4500];
    snprintf(dst, sizeof(dst), "%s/%s", out_dir, b->ulid);
    if (mkdir(dst, 0755) && errno != EEXIST)
        return -errno;
    static const char *const files[] = { "index", "chunks", "meta.json" };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        snprintf(sp, sizeof(sp), "%s/%s", b->dir, files[i]);
        snprintf(dp, sizeof(dp), "%s/%s", dst, files[i]);
        if (link(sp, dp) && errno != EEXIST)
            return -errno;
    }
    return 0;
}

int tsdb_export_snapshot(struct tsdb *db, const char *out_dir, bool skip_head, char *err,
                         size_t errlen)
{
    if (cairn_mkdir_p(out_dir, 0755)) {
        snprintf(err, errlen, "%s: %s", out_dir, strerror(errno));
        return -errno;
    }
    for (size_t i = 0; i < db->nblocks; i++) {
        int r = link_block(db->blocks[i], out_dir);
        if (r) {
            snprintf(err, errlen, "linking block %s: %s", db->blocks[i]->ulid, strerror(-r));
            return r;
        }
    }
    if (skip_head || db->head_mint == INT64_MAX)
        return 0;
    /* the head as one block: its chunks as they are, the open one included;
     * series with out-of-order samples re-encoded */
    struct cut_ent *ents = malloc((db->nseries + 1) * sizeof(*ents));
    struct tsdb_bw_series *bw = malloc((db->nseries + 1) * sizeof(*bw));
    int r = ents && bw ? 0 : -ENOMEM;
    size_t n = 0;
    int64_t mint = INT64_MAX, maxt = INT64_MIN;
    for (size_t i = 0; !r && i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        struct cut_ent e = { s, NULL, 0, true };
        if (encode_range(s, INT64_MIN, INT64_MAX, &e.chunks, &e.n)) {
            r = -ENOMEM;
            break;
        }
        if (!e.n) {
            free(e.chunks);
            continue;
        }
        if (e.chunks[0].mint < mint)
            mint = e.chunks[0].mint;
        if (e.chunks[e.n - 1].maxt > maxt)
            maxt = e.chunks[e.n - 1].maxt;
        ents[n++] = e;
    }
    char ulid[TSDB_ULID_LEN + 1];
    if (!r && n) {
        qsort(ents, n, sizeof(*ents), cmp_cut);
        for (size_t i = 0; i < n; i++)
            bw[i] = (struct tsdb_bw_series){ &ents[i].s->labels, ents[i].chunks, ents[i].n };
        r = tsdb_block_write(out_dir, mint, maxt, 1, NULL, 0, bw, n, ulid, err, errlen);
    } else if (r) {
        snprintf(err, errlen, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        for (uint32_t c = 0; c < ents[i].n; c++)
            free(ents[i].chunks[c].b);
        free(ents[i].chunks);
    }
    free(ents);
    free(bw);
    return r;
}
