/* tsdb.c - head series, postings, WAL. */
#include "tsdb.h"
#include "log.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pcre2.h>
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
    if (db->max_series && db->nseries >= db->max_series) {
        db->st.series_refused++;
        return NULL;
    }
    s = series_insert(db, l, h, true);
    *created = s != NULL;
    return s;
}

/* Keeps an out-of-order sample in the series' sorted side buffer. */
static int ooo_insert(struct tsdb *db, struct tsdb_series *s, int64_t t, double v)
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
        db->st.duplicates++;
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
    if (t < db->mint)
        db->mint = t;
    db->st.samples_appended++;
    db->st.ooo_accepted++;
    return TSDB_OK;
}

static int append_mem(struct tsdb *db, struct tsdb_series *s, int64_t t, double v)
{
    if (s->has_last) {
        if (t < s->last_t) {
            if (db->replaying || (db->ooo_window_ms > 0 && t >= db->maxt - db->ooo_window_ms))
                return ooo_insert(db, s, t, v);
            db->st.out_of_order++;
            return TSDB_OUT_OF_ORDER;
        }
        if (t == s->last_t) {
            uint64_t a, b;
            memcpy(&a, &v, 8);
            memcpy(&b, &s->last_v, 8);
            if (a == b)
                return TSDB_OK;
            db->st.duplicates++;
            return TSDB_DUPLICATE;
        }
    }
    if (s->head.n >= TSDB_CHUNK_MAX_SAMPLES) {
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
        tsdb_chunk_init(&s->head);
    }
    if (tsdb_chunk_append(&s->head, t, v))
        return TSDB_NOMEM;
    s->has_last = true;
    s->last_t = t;
    s->last_v = v;
    if (db->st.samples_appended == 0 || t < db->mint)
        db->mint = t;
    if (db->st.samples_appended == 0 || t > db->maxt)
        db->maxt = t;
    db->st.samples_appended++;
    return TSDB_OK;
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

void tsdb_apply_retention(struct tsdb *db, int64_t now_ms)
{
    if (db->retention_ms <= 0)
        return;
    int64_t cut = now_ms - db->retention_ms;
    for (size_t i = 0; i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
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
        for (uint32_t k = 0; k < s->nchunks; k++)
            total += (s->chunks[k].nbits + 7) / 8;
        total += tsdb_chunk_bytes(&s->head);
    }
    return total;
}

size_t tsdb_apply_retention_size(struct tsdb *db, uint64_t max_bytes)
{
    if (!max_bytes)
        return 0;
    uint64_t total = tsdb_chunk_bytes_total(db);
    if (total <= max_bytes)
        return 0;
    /* the oldest sealed chunks go first, whichever series they belong to; a
     * series' chunks are in time order, so dropping a prefix of each is enough */
    size_t n = 0;
    for (size_t i = 0; i < db->nseries; i++)
        n += db->series[i]->nchunks;
    struct chunk_ref *refs = malloc((n ? n : 1) * sizeof(*refs));
    if (!refs)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < db->nseries; i++) {
        const struct tsdb_series *s = db->series[i];
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
    return dropped;
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

/* Replays one segment; returns the offset of the end of the last good record. */
static off_t replay_segment(struct tsdb *db, const char *path, bool *torn)
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
                bad = n > TSDB_MAX_LABELS || ref != db->nseries + 1;
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

int tsdb_snapshot(struct tsdb *db)
{
    if (!db->dir)
        return 0;
    uint64_t t0 = cairn_now_ms();
    int r = tsdb_commit(db, true);
    if (r)
        return r;
    uint32_t next = db->wal_segment + 1;
    r = wal_open_segment(db, next, true);
    if (r)
        return r;
    char path[4200], tmp[4220];
    snprintf(path, sizeof(path), "%s/snapshot", db->dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "wbe");
    if (!f)
        return -errno;
    uint64_t n = db->nseries;
    bool ok = fwrite(SNAP_MAGIC, 1, 8, f) == 8 && fwrite(&next, 4, 1, f) == 1 &&
              fwrite(&n, 8, 1, f) == 1;
    struct buf b = BUF_INIT;
    uint64_t bytes = 20;
    for (size_t i = 0; ok && i < db->nseries; i++) {
        buf_reset(&b);
        snap_series(&b, db->series[i]);
        uint32_t len = (uint32_t)buf_used(&b), crc = (uint32_t)crc32(0L, (const Bytef *)buf_head(&b), len);
        ok = fwrite(&len, 4, 1, f) == 1 && fwrite(&crc, 4, 1, f) == 1 &&
             fwrite(buf_head(&b), 1, len, f) == len;
        bytes += 8 + len;
    }
    buf_free(&b);
    if (!ok || fflush(f) || fdatasync(fileno(f))) {
        int e = errno ? -errno : -EIO;
        fclose(f);
        unlink(tmp);
        log_error("snapshot write failed", "file", tmp, "err", strerror(-e));
        return e;
    }
    fclose(f);
    if (rename(tmp, path)) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    char wdir[4200];
    snprintf(wdir, sizeof(wdir), "%s/wal", db->dir);
    int dfd = open(db->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    /* the segments before `next` are in the snapshot now */
    DIR *d = opendir(wdir);
    size_t removed = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char *end;
        unsigned long v = strtoul(de->d_name, &end, 10);
        if (de->d_name[0] >= '0' && de->d_name[0] <= '9' && !*end && v < next) {
            char sp[4500];
            snprintf(sp, sizeof(sp), "%s/%s", wdir, de->d_name);
            removed += unlink(sp) == 0;
        }
    }
    if (d)
        closedir(d);
    db->wal_bytes_at_snapshot = db->st.wal_bytes;
    db->st.snapshots++;
    log_info("head snapshot written", "series", log_int((long long)db->nseries), "bytes",
             log_int((long long)bytes), "wal_segments_removed", log_int((long long)removed), "ms",
             log_int((long long)(cairn_now_ms() - t0)));
    return 0;
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

static int snap_version;

static int snap_load_series(struct tsdb *db, const uint8_t *p, size_t len)
{
    struct rd r = { p, len, 0, false };
    uint64_t ref;
    uint16_t n;
    get(&r, &ref, 8);
    get(&r, &n, 2);
    if (r.bad || n > TSDB_MAX_LABELS || ref != db->nseries + 1)
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
    if (r.bad || r.o != r.n || h->n > TSDB_CHUNK_MAX_SAMPLES)
        return -EINVAL;
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
    snap_version = magic[7] - '0';
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
             snap_load_series(db, p, len) == 0;
    }
    free(p);
    fclose(f);
    if (!ok) {
        snprintf(err, errlen, "%s: head snapshot damaged after %llu series; move it away to start "
                              "without it (the samples it holds are then lost)", path,
                 (unsigned long long)db->nseries);
        return -EINVAL;
    }
    *first_seg = seg;
    log_info("head snapshot loaded", "series", log_int((long long)db->nseries), "samples",
             log_int((long long)db->st.samples_appended), "ms",
             log_int((long long)(cairn_now_ms() - t0)));
    return 0;
}

int tsdb_open(struct tsdb *db, const char *dir, char *err, size_t errlen)
{
    memset(db, 0, sizeof(*db));
    db->wal_fd = -1;
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
    for (size_t i = 0; i < nseg; i++) {
        char sp[4200];
        snprintf(sp, sizeof(sp), "%s/%08u", path, segs[i]);
        bool torn;
        off_t good = replay_segment(db, sp, &torn);
        if (torn) {
            struct stat st;
            long long size = stat(sp, &st) == 0 ? (long long)st.st_size : -1;
            log_warn("wal: torn or corrupted record, cutting the log there", "segment", sp,
                     "good_bytes", log_int((long long)good), "file_bytes", log_int(size));
            if (truncate(sp, good)) {
                snprintf(err, errlen, "%s: cannot truncate: %s", sp, strerror(errno));
                return -errno;
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
    db->replaying = false;
    if (nseg)
        log_info("wal replayed", "segments", log_int((long long)nseg), "records",
                 log_int((long long)db->st.replayed_records), "series",
                 log_int((long long)db->nseries), "samples",
                 log_int((long long)db->st.samples_appended), "ms",
                 log_int((long long)(cairn_now_ms() - t0)));
    int r = wal_open_segment(db, nseg ? segs[nseg - 1] : first ? first : 1, true);
    if (r) {
        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    return 0;
}

void tsdb_close(struct tsdb *db)
{
    if (db->dir && db->wal_fd >= 0)
        tsdb_commit(db, true);
    if (db->wal_fd >= 0)
        close(db->wal_fd);
    for (size_t i = 0; i < db->nseries; i++)
        series_free(db->series[i]);
    free(db->series);
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

size_t tsdb_select(const struct tsdb *db, const struct tsdb_matcher *m, size_t nm, int64_t mint,
                   int64_t maxt, struct tsdb_series ***out)
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
                tsdb_chunk_iter_init(&it->ci, c->b, c->nbits, c->n);
            } else if (it->chunk == s->nchunks && s->head.n) {
                tsdb_chunk_iter_init(&it->ci, s->head.b, s->head.nbits, s->head.n);
            } else {
                it->done = true;
                return false;
            }
            it->started = true;
        }
        while (tsdb_chunk_next(&it->ci, t, v)) {
            if (*t < it->mint)
                continue;
            if (*t > it->maxt) {
                it->done = true;
                return false;
            }
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

size_t tsdb_label_names(const struct tsdb *db, const char ***out)
{
    const struct tsdb_postings *p = db->postings;
    const char **a = malloc((p->count ? p->count : 1) * sizeof(*a));
    size_t n = 0;
    *out = NULL;
    if (!a)
        return 0;
    for (size_t i = 0; i < p->size; i++)
        for (const struct plist *e = p->table[i]; e; e = e->next)
            a[n++] = e->key;        /* "name\xffvalue": compared up to 0xff below */
    /* names: cut at the 0xff separator into a scratch copy */
    char **names = malloc((n ? n : 1) * sizeof(*names));
    size_t k = 0;
    for (size_t i = 0; names && i < n; i++) {
        const char *sep = strchr(a[i], (char)0xff);
        names[k++] = strndup(a[i], (size_t)(sep - a[i]));
    }
    free(a);
    if (!names)
        return 0;
    qsort(names, k, sizeof(*names), cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++) {
        if (u && strcmp(names[u - 1], names[i]) == 0) {
            free(names[i]);
            continue;
        }
        names[u++] = names[i];
    }
    *out = (const char **)names;
    return u;
}

size_t tsdb_label_values(const struct tsdb *db, const char *name, const char ***out)
{
    const struct tsdb_postings *p = db->postings;
    size_t nl = strlen(name), n = 0;
    const char **a = malloc((p->count ? p->count : 1) * sizeof(*a));
    *out = NULL;
    if (!a)
        return 0;
    for (size_t i = 0; i < p->size; i++)
        for (const struct plist *e = p->table[i]; e; e = e->next)
            if (e->namelen == nl && memcmp(e->key, name, nl) == 0 && e->n)
                a[n++] = e->key + nl + 1;
    qsort(a, n, sizeof(*a), cmp_str);
    *out = a;
    return n;
}

void tsdb_free_strings(const char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((void *)a[i]);
    free(a);
}
