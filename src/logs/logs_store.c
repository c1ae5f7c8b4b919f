/* logs_store.c - the log store: tenants, streams, an inverted index from labels to
 * streams, per-stream chunks compressed with zstd, a write-ahead log, and
 * immutable block files on disk.
 *
 * An accepted push is first appended to the WAL (one write() for the whole push,
 * before the answer, so that it survives kill -9), then to each stream's head.
 * A head is cut into a chunk once it holds chunk_target_bytes. A flush (every
 * flush_interval, when unflushed data passes max_memory_bytes, and at a stop)
 * writes every head and cut chunk into a new block file (written to a temporary
 * name, fsynced, renamed), then starts a new WAL segment and deletes the old ones;
 * a flush that fails (a full disk) keeps everything in memory and in the WAL and
 * is retried. At start the blocks' indexes are read and the WAL is replayed.
 *
 * Entry encoding (heads, chunks and WAL records alike):
 *   varint zigzag(ts - previous ts), str line, varint nmeta, (str name, str value)...
 * where str is varint length, the bytes and a NUL.
 *
 * WAL segment wal/NNNNNNNN: records of u32 length, u32 CRC-32 of the payload,
 * payload: str tenant, varint nlabels, (str name, str value)..., varint n, entries.
 *
 * Block file blocks/NNNNNNNN.blk, one immutable object:
 *   "CLB2", the chunks' compressed bytes, the index, then a footer of u64 index
 *   offset, u32 index length, u32 CRC-32 of the index, "CLB2". The index: varint
 *   nstreams; per stream str tenant, varint nlabels, (str name, str value)...,
 *   varint nchunks; per chunk varint zigzag mint, varint maxt - mint, varint n,
 *   varint raw, varint clen, varint offset, varint token-filter bits, the filter.
 */
#include "logs_internal.h"
#include "core/fileio.h"
#include "core/log.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define LS_ZSTD_LEVEL 3
#define LS_MAX_DEPTH_LABELS 64

/* ---- encoding ---- */

static void put_varint(struct buf *b, uint64_t v)
{
    char tmp[10];
    int k = 0;
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        tmp[k++] = (char)(c | (v ? 0x80 : 0));
    } while (v);
    buf_append(b, tmp, (size_t)k);
}

static void put_str(struct buf *b, const char *s, size_t n)
{
    put_varint(b, n);
    buf_append(b, s, n);
    buf_putc(b, 0);
}

static uint64_t zz(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzz(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

struct rd {
    const uint8_t *p, *end;
    bool bad;
};

static uint64_t get_varint(struct rd *r)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            break;
        uint8_t c = *r->p++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return x;
    }
    r->bad = true;
    return 0;
}

static const char *get_str(struct rd *r, size_t *n)
{
    uint64_t len = get_varint(r);
    if (r->bad || len + 1 > (uint64_t)(r->end - r->p) || r->p[len] != 0) {
        r->bad = true;
        *n = 0;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += len + 1;
    *n = (size_t)len;
    return s;
}

static void put_entry(struct buf *b, int64_t prev, const struct ls_entry *e)
{
    put_varint(b, zz(e->ts - prev));
    put_str(b, e->line, e->n);
    put_varint(b, (uint64_t)e->nmeta);
    for (int i = 0; i < e->nmeta; i++) {
        put_str(b, e->meta[i].name, strlen(e->meta[i].name));
        put_str(b, e->meta[i].value, strlen(e->meta[i].value));
    }
}

/* A decoded entry: the line and its metadata stay in the decoded bytes. */
struct dent {
    int64_t ts;
    const char *line;
    uint32_t n;
    uint32_t nmeta;
    const uint8_t *meta, *meta_end;
};

/* Decodes n entries from bytes into out (appended). */
static int decode_entries(const uint8_t *p, size_t len, uint32_t n, struct dent **out, size_t *nout, size_t *cap)
{
    struct rd r = { p, p + len, false };
    int64_t ts = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (*nout == *cap) {
            size_t c = *cap ? *cap * 2 : 256;
            struct dent *v = realloc(*out, c * sizeof(*v));
            if (!v)
                return -ENOMEM;
            *out = v;
            *cap = c;
        }
        struct dent *d = &(*out)[(*nout)++];
        ts += unzz(get_varint(&r));
        size_t ln;
        d->ts = ts;
        d->line = get_str(&r, &ln);
        d->n = (uint32_t)ln;
        d->nmeta = (uint32_t)get_varint(&r);
        d->meta = r.p;
        for (uint32_t k = 0; k < d->nmeta * 2 && !r.bad; k++)
            get_str(&r, &ln);
        d->meta_end = r.p;
        if (r.bad)
            return -EIO;
    }
    return 0;
}

/* ---- token filters: which chunks may hold a word ----
 *
 * A chunk's lines are cut into tokens (runs of letters, digits, '_' and bytes past
 * ASCII); a Bloom filter of 5 bits per distinct token and 3 probes (about 9% false
 * positives) answers "may this chunk hold the token" without decompressing it. A
 * query's `|= "literal"` filter yields the literal's whole tokens (those with a
 * separator on both sides inside the literal); a chunk missing any of them is
 * skipped. */

#define TOK_MIN_BITS 512u
#define TOK_MAX_BITS (1u << 22)

static bool tok_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80 || c == '_';
}

static uint64_t tok_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h ^ (h >> 31);
}

static bool tok_test(const uint8_t *bits, uint32_t nbits, uint64_t h)
{
    uint32_t h1 = (uint32_t)h, h2 = (uint32_t)(h >> 32) | 1;
    for (uint32_t k = 0; k < 3; k++) {
        uint32_t bit = (uint32_t)(((uint64_t)h1 + (uint64_t)k * h2) % nbits);
        if (!(bits[bit >> 3] & (1u << (bit & 7))))
            return false;
    }
    return true;
}

static void tok_set(uint8_t *bits, uint32_t nbits, uint64_t h)
{
    uint32_t h1 = (uint32_t)h, h2 = (uint32_t)(h >> 32) | 1;
    for (uint32_t k = 0; k < 3; k++) {
        uint32_t bit = (uint32_t)(((uint64_t)h1 + (uint64_t)k * h2) % nbits);
        bits[bit >> 3] |= (uint8_t)(1u << (bit & 7));
    }
}

/* Builds a chunk's token filter from its decoded lines: the tokens' hashes are
 * deduplicated in an open-addressing set (one pass, no sorting), then set in a
 * filter sized by their number. */
static void tok_build(struct ls_chunk *c, const struct dent *d, size_t nd)
{
    size_t cap = 1u << 14, n = 0;
    uint64_t *set = calloc(cap, sizeof(*set));  /* 0: empty (a zero hash is taken as 1) */
    if (!set)
        return;
    for (size_t i = 0; i < nd; i++) {
        const char *p = d[i].line, *end = p + d[i].n;
        while (p < end) {
            while (p < end && !tok_char((unsigned char)*p))
                p++;
            const char *t = p;
            while (p < end && tok_char((unsigned char)*p))
                p++;
            if (p == t)
                continue;
            uint64_t h = tok_hash(t, (size_t)(p - t));
            if (!h)
                h = 1;
            size_t j = h & (cap - 1);
            while (set[j] && set[j] != h)
                j = (j + 1) & (cap - 1);
            if (set[j])
                continue;
            set[j] = h;
            if (++n * 2 > cap) {
                size_t ncap = cap * 2;
                uint64_t *ns = calloc(ncap, sizeof(*ns));
                if (!ns) {
                    free(set);
                    return;
                }
                for (size_t k = 0; k < cap; k++) {
                    if (!set[k])
                        continue;
                    size_t q = set[k] & (ncap - 1);
                    while (ns[q])
                        q = (q + 1) & (ncap - 1);
                    ns[q] = set[k];
                }
                free(set);
                set = ns;
                cap = ncap;
            }
        }
    }
    /* 5 bits per distinct token, 3 probes: about 9% false positives */
    uint64_t want = ((uint64_t)n * 5 + 63) / 64 * 64;
    uint32_t nbits = want < TOK_MIN_BITS ? TOK_MIN_BITS : want > TOK_MAX_BITS ? TOK_MAX_BITS : (uint32_t)want;
    uint8_t *bits = calloc(nbits / 8, 1);
    if (bits) {
        for (size_t k = 0; k < cap; k++)
            if (set[k])
                tok_set(bits, nbits, set[k]);
        c->tok = bits;
        c->tok_bits = nbits;
    }
    free(set);
}

/* The whole tokens of a literal: those with a separator on both sides inside it. */
static int literal_tokens(struct strv lit, uint64_t *out, int max)
{
    int n = 0;
    const char *p = lit.p, *end = lit.p + lit.n;
    while (p < end && n < max) {
        if (tok_char((unsigned char)*p)) {
            const char *t = p;
            while (p < end && tok_char((unsigned char)*p))
                p++;
            if (t > lit.p && p < end) {
                uint64_t h = tok_hash(t, (size_t)(p - t));
                out[n++] = h ? h : 1;
            }
            continue;
        }
        p++;
    }
    return n;
}

/* ---- tenants and streams ---- */

struct ls_tenant *logs_store_tenant(struct logs_store *st, const char *id)
{
    return hmap_get(&st->tenants, id, strlen(id));
}

static struct ls_tenant *tenant_get(struct logs_store *st, const char *id)
{
    struct ls_tenant *t = logs_store_tenant(st, id);
    if (t)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t || !(t->id = strdup(id)) || hmap_put(&st->tenants, id, strlen(id), t)) {
        if (t)
            free(t->id);
        free(t);
        return NULL;
    }
    t->tokens = st->conf->limits.ingestion_burst;
    t->tokens_at = cairn_now_ms();
    return t;
}

static int ids_add(struct ls_ids *ids, uint32_t v)
{
    if (ids->n == ids->cap) {
        uint32_t cap = ids->cap ? ids->cap * 2 : 4;
        uint32_t *nv = realloc(ids->v, cap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        ids->v = nv;
        ids->cap = cap;
    }
    ids->v[ids->n++] = v;
    return 0;
}

static int index_add(struct ls_tenant *t, const char *name, const char *value, uint32_t idx)
{
    char key[4096];
    int k = snprintf(key, sizeof(key), "%s\xff%s", name, value);
    if (k < 0 || (size_t)k >= sizeof(key))
        return -E2BIG;
    struct ls_ids *ids = hmap_get(&t->postings, key, (size_t)k);
    if (!ids) {
        if (!(ids = calloc(1, sizeof(*ids))) || hmap_put(&t->postings, key, (size_t)k, ids)) {
            free(ids);
            return -ENOMEM;
        }
        struct hmap *vals = hmap_get(&t->names, name, strlen(name));
        if (!vals) {
            if (!(vals = calloc(1, sizeof(*vals))) || hmap_put(&t->names, name, strlen(name), vals)) {
                free(vals);
                return -ENOMEM;
            }
        }
        if (hmap_put(vals, value, strlen(value), ids))
            return -ENOMEM;
    }
    return ids_add(ids, idx);
}

static char *labels_key(const struct lq_label *l, int n)
{
    struct buf b = { 0 };
    lq_labels_string(&b, l, n);
    buf_putc(&b, 0);
    return buf_steal(&b);
}

static struct ls_stream *stream_find(struct ls_tenant *t, const char *key)
{
    return hmap_get(&t->streams, key, strlen(key));
}

/* Creates a stream (labels sorted, non-empty values). */
static struct ls_stream *stream_create(struct logs_store *st, struct ls_tenant *t, const struct lq_label *l, int n,
                                       char *key)
{
    (void)st;
    size_t sz = (size_t)(n ? n : 1) * sizeof(struct lq_label);
    for (int i = 0; i < n; i++)
        sz += strlen(l[i].name) + strlen(l[i].value) + 2;
    struct ls_stream *s = calloc(1, sizeof(*s));
    struct lq_label *lv = malloc(sz);
    if (!s || !lv)
        goto oom;
    char *p = (char *)(lv + (n ? n : 1));
    for (int i = 0; i < n; i++) {
        size_t a = strlen(l[i].name) + 1, b = strlen(l[i].value) + 1;
        memcpy(p, l[i].name, a);
        lv[i].name = p;
        p += a;
        memcpy(p, l[i].value, b);
        lv[i].value = p;
        p += b;
    }
    s->labels.v = lv;
    s->labels.n = n;
    s->key = key;
    s->maxt = INT64_MIN;
    s->tokens = st->conf->limits.stream_burst;
    s->tokens_at = cairn_now_ms();
    if (t->ns == t->caps) {
        uint32_t cap = t->caps ? t->caps * 2 : 64;
        struct ls_stream **v = realloc(t->sv, cap * sizeof(*v));
        if (!v)
            goto oom;
        t->sv = v;
        t->caps = cap;
    }
    s->idx = t->ns;
    if (hmap_put(&t->streams, key, strlen(key), s))
        goto oom;
    t->sv[t->ns++] = s;
    for (int i = 0; i < n; i++)
        if (index_add(t, lv[i].name, lv[i].value, s->idx))
            log_error("logs: cannot index a stream label", "stream", key);
    return s;
oom:
    free(s);
    free(lv);
    free(key);
    return NULL;
}

/* ---- heads and chunks ---- */

static void head_append(struct logs_store *st, struct ls_stream *s, const struct ls_entry *e)
{
    size_t before = s->head.len;
    if (!s->head_n) {
        s->head_mint = s->head_maxt = e->ts;
        s->head_prev = 0;
        s->head_since_ms = cairn_now_ms();
    }
    put_entry(&s->head, s->head_prev, e);
    s->head_prev = e->ts;
    if (e->ts < s->head_mint)
        s->head_mint = e->ts;
    if (e->ts > s->head_maxt)
        s->head_maxt = e->ts;
    s->head_n++;
    if (e->ts > s->maxt)
        s->maxt = e->ts;
    st->unflushed += s->head.len - before;
}

static int dent_cmp(const void *a, const void *b)
{
    const struct dent *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;   /* arrival order: decoded in order */
}

/* Cuts the head into a chunk: entries sorted by time, re-encoded, compressed. */
static int head_cut(struct logs_store *st, struct ls_stream *s)
{
    if (!s->head_n)
        return 0;
    struct dent *d = NULL;
    size_t nd = 0, cap = 0;
    int r = decode_entries((const uint8_t *)buf_head(&s->head), buf_used(&s->head), s->head_n, &d, &nd, &cap);
    if (r) {
        free(d);
        return r;
    }
    /* arrival order breaks ties: line pointers increase with arrival */
    qsort(d, nd, sizeof(*d), dent_cmp);
    struct buf raw = { 0 };
    int64_t prev = 0;
    struct ls_chunk c;
    memset(&c, 0, sizeof(c));
    for (size_t i = 0; i < nd; i++) {
        put_varint(&raw, zz(d[i].ts - prev));
        prev = d[i].ts;
        put_str(&raw, d[i].line, d[i].n);
        put_varint(&raw, d[i].nmeta);
        struct rd m = { d[i].meta, d[i].meta_end, false };
        for (uint32_t k = 0; k < d[i].nmeta * 2; k++) {
            size_t n;
            const char *str = get_str(&m, &n);
            put_str(&raw, str, n);
        }
    }
    tok_build(&c, d, nd);
    free(d);
    size_t bound = ZSTD_compressBound(buf_used(&raw));
    uint8_t *comp = malloc(bound);
    if (!comp || buf_used(&raw) > UINT32_MAX) {
        free(comp);
        buf_free(&raw);
        return -ENOMEM;
    }
    size_t clen = ZSTD_compress(comp, bound, buf_head(&raw), buf_used(&raw), LS_ZSTD_LEVEL);
    if (ZSTD_isError(clen)) {
        free(comp);
        buf_free(&raw);
        return -EIO;
    }
    uint8_t *shrunk = realloc(comp, clen ? clen : 1);
    c.mem = shrunk ? shrunk : comp;
    c.mint = s->head_mint;
    c.maxt = s->head_maxt;
    c.n = s->head_n;
    c.raw = (uint32_t)buf_used(&raw);
    c.clen = (uint32_t)clen;
    buf_free(&raw);
    if (s->nchunks == s->capchunks) {
        uint32_t nc = s->capchunks ? s->capchunks * 2 : 4;
        struct ls_chunk *v = realloc(s->chunks, nc * sizeof(*v));
        if (!v) {
            free(c.mem);
            free(c.tok);
            return -ENOMEM;
        }
        s->chunks = v;
        s->capchunks = nc;
    }
    s->chunks[s->nchunks++] = c;
    st->unflushed -= buf_used(&s->head) < st->unflushed ? buf_used(&s->head) : st->unflushed;
    st->unflushed += clen;
    buf_free(&s->head);
    s->head_n = 0;
    st->chunks_cut++;
    return 0;
}

/* ---- the WAL ---- */

static int wal_open(struct logs_store *st, uint32_t seq)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/wal/%08u", st->dir, seq);
    uint64_t size;
    int fd = cairn_open_append(path, 0, &size);
    if (fd < 0)
        return fd;
    if (st->wal_fd >= 0)
        close(st->wal_fd);
    st->wal_fd = fd;
    st->wal_seq = seq;
    st->wal_size = size;
    return 0;
}

/* Appends records; all or nothing (a short write is cut off again). */
static int wal_write(struct logs_store *st, const struct buf *recs)
{
    const char *p = buf_head(recs);
    size_t left = buf_used(recs);
    off_t start = (off_t)st->wal_size;
    while (left) {
        ssize_t w = write(st->wal_fd, p, left);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            if (ftruncate(st->wal_fd, start) == -1)
                log_error("logs: cannot cut a partial WAL record", "error", cairn_strerror(-errno));
            st->wal_errors++;
            return e;
        }
        p += w;
        left -= (size_t)w;
    }
    st->wal_size += buf_used(recs);
    return 0;
}

static void wal_record(struct buf *out, const char *tenant, const struct lq_label *l, int nl, const struct ls_entry *e,
                       int n)
{
    size_t at = out->len;
    buf_append(out, "\0\0\0\0\0\0\0\0", 8);
    size_t body = out->len;
    put_str(out, tenant, strlen(tenant));
    put_varint(out, (uint64_t)nl);
    for (int i = 0; i < nl; i++) {
        put_str(out, l[i].name, strlen(l[i].name));
        put_str(out, l[i].value, strlen(l[i].value));
    }
    put_varint(out, (uint64_t)n);
    int64_t prev = 0;
    for (int i = 0; i < n; i++) {
        put_entry(out, prev, &e[i]);
        prev = e[i].ts;
    }
    uint32_t len = (uint32_t)(out->len - body);
    uint32_t crc = (uint32_t)crc32_z(0, (const Bytef *)out->data + body, len);
    memcpy(out->data + at, &len, 4);
    memcpy(out->data + at + 4, &crc, 4);
}

/* ---- push ---- */

static void take_tokens(double *tokens, uint64_t *at, double rate, double burst)
{
    uint64_t now = cairn_now_ms();
    *tokens += rate * (double)(now - *at) / 1000.0;
    if (*tokens > burst)
        *tokens = burst;
    *at = now;
}

static void fmt_time(char *out, size_t n, int64_t ns)
{
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void refuse(struct ls_push_result *res, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(struct ls_push_result *res, int status, const char *fmt, ...)
{
    res->refused++;
    if (!res->status || status == 429)
        res->status = status;
    if (res->why.len > 64 * 1024)
        return;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&res->why, fmt, ap);
    va_end(ap);
    buf_putc(&res->why, '\n');
}

int logs_store_push(struct logs_store *st, const char *tenant, struct ls_push_stream *ps, int nps,
                    struct ls_push_result *res)
{
    const struct logs_limits *lim = &st->conf->limits;
    struct ls_tenant *t = tenant_get(st, tenant);
    if (!t)
        return -ENOMEM;
    int64_t now_ns = (int64_t)(cairn_wall_time() * 1e9);
    /* the tenant's rate: the whole push or nothing */
    uint64_t total = 0, lines = 0;
    for (int i = 0; i < nps; i++)
        for (int j = 0; j < ps[i].n; j++) {
            total += ps[i].e[j].n;
            lines++;
        }
    if (lim->ingestion_rate > 0) {
        take_tokens(&t->tokens, &t->tokens_at, lim->ingestion_rate, lim->ingestion_burst);
        if ((double)total > t->tokens) {
            res->refused += (uint32_t)lines;
            res->status = 429;
            buf_printf(&res->why,
                       "Ingestion rate limit exceeded for user %s (limit: %.0f bytes/sec) while attempting to ingest "
                       "'%llu' lines totaling '%llu' bytes, reduce log volume or contact your Loki administrator to "
                       "see if the limit can be increased\n",
                       tenant, lim->ingestion_rate, (unsigned long long)lines, (unsigned long long)total);
            st->lines_refused += lines;
            return 0;
        }
        t->tokens -= (double)total;
    }
    struct buf recs = { 0 };
    struct ls_stream **targets = calloc((size_t)(nps ? nps : 1), sizeof(*targets));
    char **newkeys = calloc((size_t)(nps ? nps : 1), sizeof(*newkeys));
    if (!targets || !newkeys) {
        free(targets);
        free(newkeys);
        return -ENOMEM;
    }
    int rc = 0;
    for (int i = 0; i < nps; i++) {
        struct ls_push_stream *p = &ps[i];
        char *key = labels_key(p->labels, p->nlabels);
        if (!key) {
            rc = -ENOMEM;
            break;
        }
        /* series limits */
        const char *bad = NULL;
        char why[200];
        if (p->nlabels == 0)
            bad = "error at least one label pair is required per stream";
        else if (lim->max_label_names && (uint32_t)p->nlabels > lim->max_label_names) {
            snprintf(why, sizeof(why), "has %d label names; limit %u", p->nlabels, lim->max_label_names);
            bad = why;
        }
        for (int k = 0; k < p->nlabels && !bad; k++) {
            if (strlen(p->labels[k].name) > lim->max_label_name_length) {
                snprintf(why, sizeof(why), "has label name too long: '%.40s...'", p->labels[k].name);
                bad = why;
            } else if (strlen(p->labels[k].value) > lim->max_label_value_length) {
                snprintf(why, sizeof(why), "has label value too long: '%.40s...'", p->labels[k].value);
                bad = why;
            }
        }
        if (bad) {
            for (int j = 0; j < p->n; j++)
                refuse(res, 400, "entry for stream '%s' %s", key, bad);
            p->n = 0;
            free(key);
            continue;
        }
        struct ls_stream *s = stream_find(t, key);
        if (!s) {
            /* another stream of this push may have created it */
            for (int k = 0; k < i && !s; k++)
                if (newkeys[k] && strcmp(newkeys[k], key) == 0)
                    s = targets[k];
        }
        if (!s && lim->max_streams && t->ns >= lim->max_streams) {
            for (int j = 0; j < p->n; j++)
                refuse(res, 429,
                       "Maximum active stream limit exceeded when trying to create stream %s, reduce the number of "
                       "active streams (reduce labels or reduce label values), or contact your Loki administrator to "
                       "see if the limit can be increased, user: '%s'",
                       key, tenant);
            p->n = 0;
            free(key);
            continue;
        }
        /* entry limits: kept entries are compacted to the front */
        int64_t maxt = s ? s->maxt : INT64_MIN;
        uint64_t sbytes = 0;
        int w = 0;
        for (int j = 0; j < p->n; j++) {
            struct ls_entry *e = &p->e[j];
            char tb[40], ob[40];
            if (lim->max_line_size && e->n > lim->max_line_size) {
                if (lim->max_line_truncate) {
                    e->n = lim->max_line_size;
                } else {
                    refuse(res, 400,
                           "Max entry size '%llu' bytes exceeded for stream '%s' while adding an entry with length "
                           "'%zu' bytes",
                           (unsigned long long)lim->max_line_size, key, e->n);
                    continue;
                }
            }
            if (lim->reject_old && e->ts < now_ns - (int64_t)lim->reject_old_max_age_ms * 1000000) {
                fmt_time(tb, sizeof(tb), e->ts);
                fmt_time(ob, sizeof(ob), now_ns - (int64_t)lim->reject_old_max_age_ms * 1000000);
                refuse(res, 400, "entry for stream '%s' has timestamp too old: %s, oldest acceptable timestamp is: %s",
                       key, tb, ob);
                continue;
            }
            if (e->ts > now_ns + (int64_t)lim->creation_grace_ms * 1000000) {
                fmt_time(tb, sizeof(tb), e->ts);
                refuse(res, 400, "entry for stream '%s' has timestamp too new: %s", key, tb);
                continue;
            }
            if (maxt != INT64_MIN && e->ts < maxt - (int64_t)lim->ooo_window_ms * 1000000) {
                fmt_time(tb, sizeof(tb), e->ts);
                fmt_time(ob, sizeof(ob), maxt - (int64_t)lim->ooo_window_ms * 1000000);
                refuse(res, 400, "entry too far behind, entry timestamp is: %s, oldest acceptable timestamp is: %s", tb,
                       ob);
                continue;
            }
            if (e->ts > maxt)
                maxt = e->ts;
            sbytes += e->n;
            p->e[w++] = *e;
        }
        p->n = w;
        if (w && lim->stream_rate > 0 && s) {
            take_tokens(&s->tokens, &s->tokens_at, lim->stream_rate, lim->stream_burst);
            if ((double)sbytes > s->tokens) {
                for (int j = 0; j < w; j++)
                    refuse(res, 429,
                           "Per stream rate limit exceeded (limit: %.0f bytes/sec) while attempting to ingest for "
                           "stream '%s' totaling %lluB, consider splitting a stream via additional labels or contact "
                           "your Loki administrator to see if the limit can be increased",
                           lim->stream_rate, key, (unsigned long long)sbytes);
                p->n = 0;
                free(key);
                continue;
            }
            s->tokens -= (double)sbytes;
        }
        if (!p->n) {
            free(key);
            continue;
        }
        if (!s)
            newkeys[i] = key;
        else
            free(key);
        targets[i] = s;
        wal_record(&recs, tenant, p->labels, p->nlabels, p->e, p->n);
    }
    if (!rc && recs.len)
        rc = wal_write(st, &recs);
    buf_free(&recs);
    if (rc) {
        for (int i = 0; i < nps; i++)
            free(newkeys[i]);
        free(newkeys);
        free(targets);
        return rc;
    }
    /* durable: now into memory */
    for (int i = 0; i < nps; i++) {
        struct ls_push_stream *p = &ps[i];
        if (!p->n)
            continue;
        struct ls_stream *s = targets[i];
        if (!s && newkeys[i]) {
            /* an earlier stream of this push with the same key created it meanwhile */
            s = stream_find(t, newkeys[i]);
            if (s) {
                free(newkeys[i]);
            } else if (!(s = stream_create(st, t, p->labels, p->nlabels, newkeys[i]))) {
                newkeys[i] = NULL;
                rc = -ENOMEM;
                break;
            }
            newkeys[i] = NULL;
        }
        if (!s)
            continue;
        if (s->maxt == INT64_MIN)
            t->active++;
        for (int j = 0; j < p->n; j++) {
            head_append(st, s, &p->e[j]);
            res->accepted++;
        }
        st->lines_in += (uint64_t)p->n;
        for (int j = 0; j < p->n; j++)
            st->bytes_in += p->e[j].n;
        if (buf_used(&s->head) >= st->conf->chunk_target_bytes)
            head_cut(st, s);
    }
    for (int i = 0; i < nps; i++)
        free(newkeys[i]);
    free(newkeys);
    free(targets);
    st->lines_refused += res->refused;
    return rc;
}

/* ---- replay ---- */

static int replay_record(struct logs_store *st, const uint8_t *p, size_t len)
{
    struct rd r = { p, p + len, false };
    size_t tn;
    const char *tenant = get_str(&r, &tn);
    uint64_t nl = get_varint(&r);
    if (r.bad || nl > 1024)
        return -EIO;
    struct lq_label l[1024];
    for (uint64_t i = 0; i < nl; i++) {
        size_t n;
        l[i].name = get_str(&r, &n);
        l[i].value = get_str(&r, &n);
    }
    uint64_t n = get_varint(&r);
    if (r.bad)
        return -EIO;
    struct ls_tenant *t = tenant_get(st, tenant);
    if (!t)
        return -ENOMEM;
    char *key = labels_key(l, (int)nl);
    if (!key)
        return -ENOMEM;
    struct ls_stream *s = stream_find(t, key);
    if (s)
        free(key);
    else if (!(s = stream_create(st, t, l, (int)nl, key)))
        return -ENOMEM;
    if (s->maxt == INT64_MIN)
        t->active++;
    int64_t ts = 0;
    struct lq_label meta[256];
    for (uint64_t i = 0; i < n && !r.bad; i++) {
        struct ls_entry e;
        size_t ln;
        ts += unzz(get_varint(&r));
        e.ts = ts;
        e.line = get_str(&r, &ln);
        e.n = ln;
        uint64_t nm = get_varint(&r);
        if (nm > 256)
            return -EIO;
        for (uint64_t k = 0; k < nm; k++) {
            meta[k].name = get_str(&r, &ln);
            meta[k].value = get_str(&r, &ln);
        }
        e.meta = meta;
        e.nmeta = (int)nm;
        if (r.bad)
            return -EIO;
        head_append(st, s, &e);
        if (buf_used(&s->head) >= st->conf->chunk_target_bytes)
            head_cut(st, s);
    }
    return r.bad ? -EIO : 0;
}

static int replay_segment(struct logs_store *st, const char *path, uint64_t *records)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) == -1) {
        close(fd);
        return -errno;
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *data = malloc(size ? size : 1);
    if (!data) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t k = pread(fd, data + got, size - got, (off_t)got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    size_t off = 0;
    while (off + 8 <= got) {
        uint32_t len, crc;
        memcpy(&len, data + off, 4);
        memcpy(&crc, data + off + 4, 4);
        if (len > got - off - 8 || (uint32_t)crc32_z(0, data + off + 8, len) != crc)
            break;
        if (replay_record(st, data + off + 8, len))
            break;
        off += 8 + (size_t)len;
        (*records)++;
    }
    if (off < got) {
        log_warn("logs: the WAL ends in a torn record, cut off", "file", path, "offset", log_int((long long)off),
                 "bytes", log_int((long long)(got - off)));
        if (ftruncate(fd, (off_t)off) == -1)
            log_error("logs: cannot cut the WAL", "file", path, "error", cairn_strerror(-errno));
    }
    free(data);
    close(fd);
    return 0;
}

/* ---- blocks ---- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int add_block(struct logs_store *st, struct ls_block *b)
{
    if (st->nblocks == st->capblocks) {
        uint32_t cap = st->capblocks ? st->capblocks * 2 : 16;
        struct ls_block **v = realloc(st->blocks, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        st->blocks = v;
        st->capblocks = cap;
    }
    st->blocks[st->nblocks++] = b;
    return 0;
}

/* ---- writing blocks ---- */

static bool pick_unflushed(const struct ls_chunk *ch)
{
    return ch->mem != NULL;
}

static bool pick_compacting(const struct ls_chunk *ch)
{
    return !ch->mem && ch->blk && ch->blk->compacting;
}

/* A chunk's compressed bytes: in memory, or read from its block into *tmp. */
static const uint8_t *chunk_compressed(const struct ls_chunk *ch, uint8_t **tmp)
{
    *tmp = NULL;
    if (ch->mem)
        return ch->mem;
    uint8_t *b = malloc(ch->clen ? ch->clen : 1);
    if (!b)
        return NULL;
    size_t got = 0;
    while (got < ch->clen) {
        ssize_t k = pread(ch->blk->fd, b + got, ch->clen - got, (off_t)(ch->off + got));
        if (k <= 0) {
            free(b);
            return NULL;
        }
        got += (size_t)k;
    }
    *tmp = b;
    return b;
}

/* Writes the chunks pick() selects, of every stream, into a new block file
 * (temporary name, fsync, rename, directory fsync), then points them at it (their
 * memory freed). Nothing changes when it fails. */
static int write_block(struct logs_store *st, bool (*pick)(const struct ls_chunk *), struct ls_block **out,
                       uint64_t *bytes)
{
    const struct hmap_slot *slot;
    uint32_t seq = st->next_block;
    char path[700], tmp[720], dir[600];
    snprintf(dir, sizeof(dir), "%s/blocks", st->dir);
    snprintf(path, sizeof(path), "%s/%08u.blk", dir, seq);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1)
        return -errno;
    struct buf idx = { 0 };
    uint64_t off = 4;
    int64_t bmint = INT64_MAX, bmaxt = INT64_MIN;
    int r = cairn_write_all(fd, "CLB2", 4);
    uint64_t nstreams = 0;
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);) {
        struct ls_tenant *t = slot->value;
        for (uint32_t i = 0; i < t->ns; i++)
            for (uint32_t c = 0; c < t->sv[i]->nchunks; c++)
                if (pick(&t->sv[i]->chunks[c])) {
                    nstreams++;
                    break;
                }
    }
    put_varint(&idx, nstreams);
    for (size_t it = 0; !r && hmap_next(&st->tenants, &it, &slot);) {
        struct ls_tenant *t = slot->value;
        for (uint32_t i = 0; i < t->ns && !r; i++) {
            struct ls_stream *s = t->sv[i];
            uint64_t n = 0;
            for (uint32_t c = 0; c < s->nchunks; c++)
                n += pick(&s->chunks[c]);
            if (!n)
                continue;
            put_str(&idx, t->id, strlen(t->id));
            put_varint(&idx, (uint64_t)s->labels.n);
            for (int k = 0; k < s->labels.n; k++) {
                put_str(&idx, s->labels.v[k].name, strlen(s->labels.v[k].name));
                put_str(&idx, s->labels.v[k].value, strlen(s->labels.v[k].value));
            }
            put_varint(&idx, n);
            for (uint32_t c = 0; c < s->nchunks && !r; c++) {
                struct ls_chunk *ch = &s->chunks[c];
                if (!pick(ch))
                    continue;
                uint8_t *tb;
                const uint8_t *bytes_of = chunk_compressed(ch, &tb);
                if (!bytes_of) {
                    r = -EIO;
                    break;
                }
                put_varint(&idx, zz(ch->mint));
                put_varint(&idx, (uint64_t)(ch->maxt - ch->mint));
                put_varint(&idx, ch->n);
                put_varint(&idx, ch->raw);
                put_varint(&idx, ch->clen);
                put_varint(&idx, off);
                put_varint(&idx, ch->tok ? ch->tok_bits : 0);
                if (ch->tok)
                    buf_append(&idx, ch->tok, ch->tok_bits / 8);
                r = cairn_write_all(fd, bytes_of, ch->clen);
                free(tb);
                ch->new_off = off;
                off += ch->clen;
                if (ch->mint < bmint)
                    bmint = ch->mint;
                if (ch->maxt > bmaxt)
                    bmaxt = ch->maxt;
            }
        }
    }
    if (!r) {
        uint8_t footer[20];
        uint64_t io = off;
        uint32_t il = (uint32_t)buf_used(&idx), crc = (uint32_t)crc32_z(0, (const Bytef *)buf_head(&idx), il);
        memcpy(footer, &io, 8);
        memcpy(footer + 8, &il, 4);
        memcpy(footer + 12, &crc, 4);
        memcpy(footer + 16, "CLB2", 4);
        r = cairn_write_all(fd, buf_head(&idx), il);
        if (!r)
            r = cairn_write_all(fd, footer, sizeof(footer));
        off += il + sizeof(footer);
    }
    buf_free(&idx);
    if (!r && fsync(fd) == -1)
        r = -errno;
    close(fd);
    if (!r && rename(tmp, path) == -1)
        r = -errno;
    if (!r)
        r = cairn_fsync_dir(dir);
    if (r) {
        unlink(tmp);
        return r;
    }
    struct ls_block *b = calloc(1, sizeof(*b));
    int bfd = open(path, O_RDONLY | O_CLOEXEC);
    if (!b || bfd == -1 || !(b->path = strdup(path)) || add_block(st, b)) {
        /* the block is on disk and a restart reads it; but not using it now means
           the chunks stay where they are: take the file back out */
        if (bfd != -1)
            close(bfd);
        if (b)
            free(b->path);
        free(b);
        unlink(path);
        return -ENOMEM;
    }
    b->fd = bfd;
    b->seq = seq;
    b->mint = bmint;
    b->maxt = bmaxt;
    b->size = off;
    st->next_block = seq + 1;
    /* the chunks now live in the new block */
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);) {
        struct ls_tenant *t = slot->value;
        for (uint32_t i = 0; i < t->ns; i++)
            for (uint32_t c = 0; c < t->sv[i]->nchunks; c++) {
                struct ls_chunk *ch = &t->sv[i]->chunks[c];
                if (!pick(ch))
                    continue;
                free(ch->mem);
                ch->mem = NULL;
                ch->blk = b;
                ch->off = ch->new_off;
            }
    }
    *out = b;
    *bytes = off;
    return 0;
}

/* Compaction: once there are LS_COMPACT_BLOCKS blocks, every block but the newest is
 * merged into one (the chunks' compressed bytes copied as they are), then the old
 * files are deleted. A failure leaves the blocks as they were. */
#define LS_COMPACT_BLOCKS 8

static void compact(struct logs_store *st)
{
    if (st->nblocks < LS_COMPACT_BLOCKS)
        return;
    for (uint32_t i = 0; i < st->nblocks; i++)
        st->blocks[i]->compacting = i + 1 < st->nblocks;
    uint32_t n = st->nblocks - 1;
    struct ls_block *nb;
    uint64_t bytes;
    int r = write_block(st, pick_compacting, &nb, &bytes);
    if (r) {
        for (uint32_t i = 0; i < st->nblocks; i++)
            st->blocks[i]->compacting = false;
        log_error("logs: compaction failed; the blocks stay as they are", "error", cairn_strerror(r));
        return;
    }
    uint32_t w = 0;
    for (uint32_t i = 0; i < st->nblocks; i++) {
        struct ls_block *b = st->blocks[i];
        if (!b->compacting) {
            st->blocks[w++] = b;
            continue;
        }
        if (unlink(b->path) == -1)
            log_error("logs: cannot delete a compacted block", "file", b->path, "error", cairn_strerror(-errno));
        close(b->fd);
        free(b->path);
        free(b);
    }
    st->nblocks = w;
    st->compactions++;
    log_info("logs: blocks compacted", "from", log_int((long long)n), "file", nb->path, "bytes", log_int((long long)bytes));
}

int logs_store_flush(struct logs_store *st, const char *why)
{
    /* cut every head */
    const struct hmap_slot *slot;
    uint64_t nchunks = 0;
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);) {
        struct ls_tenant *t = slot->value;
        for (uint32_t i = 0; i < t->ns; i++) {
            int r = head_cut(st, t->sv[i]);
            if (r)
                return r;
            for (uint32_t c = 0; c < t->sv[i]->nchunks; c++)
                nchunks += t->sv[i]->chunks[c].mem != NULL;
        }
    }
    st->last_flush_ms = cairn_now_ms();
    if (!nchunks) {
        st->flush_error = 0;
        return 0;
    }
    struct ls_block *nb;
    uint64_t bytes;
    int r = write_block(st, pick_unflushed, &nb, &bytes);
    if (r) {
        log_error("logs: cannot write a block; data stays in memory and in the WAL, retried later", "error",
                  cairn_strerror(r));
        st->flush_error = r;
        return r;
    }
    const char *path = nb->path;
    uint64_t off = bytes;
    /* a new WAL segment; the old ones are covered by the block */
    uint32_t old = st->wal_seq;
    r = wal_open(st, old + 1);
    if (r) {
        log_error("logs: cannot start a WAL segment", "error", cairn_strerror(r));
    } else {
        for (uint32_t s = 0; s <= old; s++) {
            char wp[600];
            snprintf(wp, sizeof(wp), "%s/wal/%08u", st->dir, s);
            unlink(wp);
        }
    }
    st->unflushed = 0;
    st->flush_error = 0;
    st->flushes++;
    log_info("logs: flushed a block", "why", why, "file", path, "chunks", log_int((long long)nchunks), "bytes",
             log_int((long long)off));
    compact(st);
    return 0;
}

static int load_block(struct logs_store *st, const char *path, uint32_t seq)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    struct stat sb;
    uint8_t footer[20];
    if (fstat(fd, &sb) == -1 || sb.st_size < 24 || pread(fd, footer, 20, sb.st_size - 20) != 20 ||
        memcmp(footer + 16, "CLB2", 4) != 0) {
        close(fd);
        return -EIO;
    }
    uint64_t io;
    uint32_t il, crc;
    memcpy(&io, footer, 8);
    memcpy(&il, footer + 8, 4);
    memcpy(&crc, footer + 12, 4);
    if (io + il + 20 != (uint64_t)sb.st_size) {
        close(fd);
        return -EIO;
    }
    uint8_t *idx = malloc(il ? il : 1);
    if (!idx || pread(fd, idx, il, (off_t)io) != (ssize_t)il || (uint32_t)crc32_z(0, idx, il) != crc) {
        free(idx);
        close(fd);
        return -EIO;
    }
    struct ls_block *b = calloc(1, sizeof(*b));
    if (!b || !(b->path = strdup(path)) || add_block(st, b)) {
        if (b)
            free(b->path);
        free(b);
        free(idx);
        close(fd);
        return -ENOMEM;
    }
    b->fd = fd;
    b->seq = seq;
    b->size = (uint64_t)sb.st_size;
    b->mint = INT64_MAX;
    b->maxt = INT64_MIN;
    struct rd r = { idx, idx + il, false };
    uint64_t ns = get_varint(&r);
    int rc = 0;
    for (uint64_t i = 0; i < ns && !r.bad && !rc; i++) {
        size_t tn;
        const char *tenant = get_str(&r, &tn);
        uint64_t nl = get_varint(&r);
        if (r.bad || nl > 1024) {
            rc = -EIO;
            break;
        }
        struct lq_label l[1024];
        for (uint64_t k = 0; k < nl; k++) {
            size_t n;
            l[k].name = get_str(&r, &n);
            l[k].value = get_str(&r, &n);
        }
        struct ls_tenant *t = tenant_get(st, tenant);
        char *key = t ? labels_key(l, (int)nl) : NULL;
        if (!key) {
            rc = -ENOMEM;
            break;
        }
        struct ls_stream *s = stream_find(t, key);
        if (s)
            free(key);
        else if (!(s = stream_create(st, t, l, (int)nl, key))) {
            rc = -ENOMEM;
            break;
        }
        uint64_t nc = get_varint(&r);
        for (uint64_t c = 0; c < nc && !r.bad; c++) {
            struct ls_chunk ch;
            memset(&ch, 0, sizeof(ch));
            ch.mint = unzz(get_varint(&r));
            ch.maxt = ch.mint + (int64_t)get_varint(&r);
            ch.n = (uint32_t)get_varint(&r);
            ch.raw = (uint32_t)get_varint(&r);
            ch.clen = (uint32_t)get_varint(&r);
            ch.off = get_varint(&r);
            uint64_t tb = get_varint(&r);
            if (r.bad || ch.off + ch.clen > io || (tb && (tb < TOK_MIN_BITS || tb > TOK_MAX_BITS || (tb & 7))) ||
                (uint64_t)(r.end - r.p) < tb / 8) {
                r.bad = true;
                break;
            }
            if (tb) {
                if (!(ch.tok = malloc(tb / 8))) {
                    rc = -ENOMEM;
                    break;
                }
                memcpy(ch.tok, r.p, tb / 8);
                ch.tok_bits = (uint32_t)tb;
                r.p += tb / 8;
            }
            ch.blk = b;
            /* a crash between a compaction's new block and the deletion of the old
               ones leaves a chunk in two blocks: the first one read is kept */
            bool dup = false;
            for (uint32_t k = 0; k < s->nchunks && !dup; k++)
                dup = s->chunks[k].mint == ch.mint && s->chunks[k].maxt == ch.maxt && s->chunks[k].n == ch.n &&
                      s->chunks[k].raw == ch.raw && s->chunks[k].clen == ch.clen;
            if (dup) {
                free(ch.tok);
                continue;
            }
            if (s->nchunks == s->capchunks) {
                uint32_t cap = s->capchunks ? s->capchunks * 2 : 4;
                struct ls_chunk *v = realloc(s->chunks, cap * sizeof(*v));
                if (!v) {
                    free(ch.tok);
                    rc = -ENOMEM;
                    break;
                }
                s->chunks = v;
                s->capchunks = cap;
            }
            s->chunks[s->nchunks++] = ch;
            if (ch.maxt > s->maxt) {
                if (s->maxt == INT64_MIN)
                    t->active++;
                s->maxt = ch.maxt;
            }
            if (ch.mint < b->mint)
                b->mint = ch.mint;
            if (ch.maxt > b->maxt)
                b->maxt = ch.maxt;
        }
    }
    free(idx);
    if (r.bad)
        rc = -EIO;
    if (seq >= st->next_block)
        st->next_block = seq + 1;
    return rc;
}

int logs_store_open(struct logs_store *st, const char *dir, const struct logs_conf *conf, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    st->conf = conf;
    st->wal_fd = -1;
    if (!(st->dir = strdup(dir))) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char d[600];
    static const char *const subs[] = { "wal", "blocks" };
    for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
        snprintf(d, sizeof(d), "%s/%s", dir, subs[i]);
        int r = cairn_mkdir_p(d, 0755);
        if (r) {
            snprintf(err, errlen, "cannot create %s: %s", d, cairn_strerror(r));
            return r;
        }
    }
    /* blocks first, then the WAL on top */
    uint32_t *seqs;
    size_t n;
    snprintf(d, sizeof(d), "%s/blocks", dir);
    int r = cairn_list_numbered(d, ".blk", &seqs, &n);
    if (r) {
        snprintf(err, errlen, "cannot list %s: %s", d, cairn_strerror(r));
        return r;
    }
    for (size_t i = 0; i < n; i++) {
        char p[640];
        snprintf(p, sizeof(p), "%s/%08u.blk", d, seqs[i]);
        r = load_block(st, p, seqs[i]);
        if (r == -ENOMEM) {
            free(seqs);
            snprintf(err, errlen, "out of memory reading %s", p);
            return r;
        }
        if (r)
            log_error("logs: a block is unreadable, skipped (left in place)", "file", p, "error", cairn_strerror(r));
    }
    free(seqs);
    snprintf(d, sizeof(d), "%s/wal", dir);
    r = cairn_list_numbered(d, "", &seqs, &n);
    if (r) {
        snprintf(err, errlen, "cannot list %s: %s", d, cairn_strerror(r));
        return r;
    }
    uint64_t records = 0;
    uint32_t last = 0;
    for (size_t i = 0; i < n; i++) {
        char p[640];
        snprintf(p, sizeof(p), "%s/%08u", d, seqs[i]);
        r = replay_segment(st, p, &records);
        if (r)
            log_error("logs: a WAL segment is unreadable", "file", p, "error", cairn_strerror(r));
        last = seqs[i];
    }
    free(seqs);
    r = wal_open(st, n ? last : 0);
    if (r) {
        snprintf(err, errlen, "cannot open the WAL in %s: %s", d, cairn_strerror(r));
        return r;
    }
    st->last_flush_ms = cairn_now_ms();
    if (records)
        log_info("logs: replayed the WAL", "records", log_int((long long)records), "segments", log_int((long long)n));
    return 0;
}

void logs_store_close(struct logs_store *st)
{
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);) {
        struct ls_tenant *t = slot->value;
        for (uint32_t i = 0; i < t->ns; i++) {
            struct ls_stream *s = t->sv[i];
            for (uint32_t c = 0; c < s->nchunks; c++) {
                free(s->chunks[c].mem);
                free(s->chunks[c].tok);
            }
            free(s->chunks);
            buf_free(&s->head);
            free((void *)s->labels.v);
            free(s->key);
            free(s);
        }
        free(t->sv);
        hmap_free(&t->streams);
        const struct hmap_slot *ps;
        for (size_t j = 0; hmap_next(&t->postings, &j, &ps);) {
            struct ls_ids *ids = ps->value;
            free(ids->v);
            free(ids);
        }
        hmap_free(&t->postings);
        for (size_t j = 0; hmap_next(&t->names, &j, &ps);) {
            hmap_free(ps->value);
            free(ps->value);
        }
        hmap_free(&t->names);
        free(t->id);
        free(t);
    }
    hmap_free(&st->tenants);
    for (uint32_t i = 0; i < st->nblocks; i++) {
        if (st->blocks[i]->fd >= 0)
            close(st->blocks[i]->fd);
        free(st->blocks[i]->path);
        free(st->blocks[i]);
    }
    free(st->blocks);
    if (st->wal_fd >= 0)
        close(st->wal_fd);
    free(st->dir);
    memset(st, 0, sizeof(*st));
    st->wal_fd = -1;
}

/* ---- retention ---- */

static void apply_retention(struct logs_store *st)
{
    const struct logs_conf *c = st->conf;
    if (!c->retention_ms && !c->nrules)
        return;
    int64_t now = (int64_t)(cairn_wall_time() * 1e9);
    const struct hmap_slot *slot;
    /* drop chunks past their stream's retention */
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);) {
        struct ls_tenant *t = slot->value;
        for (uint32_t i = 0; i < t->ns; i++) {
            struct ls_stream *s = t->sv[i];
            /* the first rule whose selector matches the stream, else the global period */
            uint64_t period = c->retention_ms;
            for (size_t k = 0; k < c->nrules; k++) {
                const struct lq_node *sel = c->rules[k].q->root;
                bool all = true;
                for (int m = 0; m < sel->nmatchers && all; m++) {
                    const char *v = "";
                    for (int x = 0; x < s->labels.n; x++)
                        if (!strcmp(s->labels.v[x].name, sel->matchers[m].name))
                            v = s->labels.v[x].value;
                    all = lq_matcher_matches(&sel->matchers[m], v, strlen(v));
                }
                if (all) {
                    period = c->rules[k].period_ms;
                    break;
                }
            }
            if (!period)
                continue;
            int64_t cutoff = now - (int64_t)period * 1000000;
            uint32_t w = 0;
            for (uint32_t k = 0; k < s->nchunks; k++) {
                if (s->chunks[k].maxt < cutoff && !s->chunks[k].mem) {
                    free(s->chunks[k].tok);
                    continue;
                }
                s->chunks[w++] = s->chunks[k];
            }
            s->nchunks = w;
        }
    }
    /* a block no stream refers to any more goes */
    for (uint32_t b = 0; b < st->nblocks; b++)
        st->blocks[b]->dead = true;
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);) {
        struct ls_tenant *t = slot->value;
        for (uint32_t i = 0; i < t->ns; i++)
            for (uint32_t k = 0; k < t->sv[i]->nchunks; k++)
                if (t->sv[i]->chunks[k].blk)
                    t->sv[i]->chunks[k].blk->dead = false;
    }
    uint32_t w = 0;
    for (uint32_t b = 0; b < st->nblocks; b++) {
        struct ls_block *blk = st->blocks[b];
        if (!blk->dead) {
            st->blocks[w++] = blk;
            continue;
        }
        if (unlink(blk->path) == -1 && errno != ENOENT) {
            blk->dead = false;
            st->blocks[w++] = blk;
            continue;
        }
        log_info("logs: retention deleted a block", "file", blk->path);
        st->blocks_deleted++;
        close(blk->fd);
        free(blk->path);
        free(blk);
    }
    st->nblocks = w;
}

void logs_store_tick(struct logs_store *st)
{
    const struct logs_conf *c = st->conf;
    uint64_t now = cairn_now_ms();
    bool due = now - st->last_flush_ms >= c->flush_interval_ms;
    bool full = st->unflushed >= c->max_memory_bytes;
    bool wal_big = st->wal_size >= c->max_memory_bytes * 2;
    /* after a failed flush, retry at most every 10 s */
    if (st->flush_error && now - st->last_flush_ms < 10000)
        return;
    if (due || full || wal_big)
        logs_store_flush(st, full ? "memory" : wal_big ? "wal size" : "interval");
    apply_retention(st);
}

/* ---- reading ---- */

static int chunk_bytes(struct logs_store *st, const struct ls_chunk *c, uint8_t **out)
{
    (void)st;
    uint8_t *comp = c->mem;
    uint8_t *tmp = NULL;
    if (!comp) {
        tmp = malloc(c->clen ? c->clen : 1);
        if (!tmp)
            return -ENOMEM;
        size_t got = 0;
        while (got < c->clen) {
            ssize_t k = pread(c->blk->fd, tmp + got, c->clen - got, (off_t)(c->off + got));
            if (k <= 0) {
                free(tmp);
                return k == 0 ? -EIO : -errno;
            }
            got += (size_t)k;
        }
        comp = tmp;
    }
    uint8_t *raw = malloc(c->raw ? c->raw : 1);
    if (!raw) {
        free(tmp);
        return -ENOMEM;
    }
    size_t n = ZSTD_decompress(raw, c->raw, comp, c->clen);
    free(tmp);
    if (ZSTD_isError(n) || n != c->raw) {
        free(raw);
        return -EIO;
    }
    *out = raw;
    return 0;
}

static bool stream_matches(const struct ls_stream *s, const struct lq_matcher *m, int nm)
{
    for (int i = 0; i < nm; i++) {
        const char *v = "";
        for (int k = 0; k < s->labels.n; k++)
            if (strcmp(s->labels.v[k].name, m[i].name) == 0) {
                v = s->labels.v[k].value;
                break;
            }
        if (!lq_matcher_matches(&m[i], v, strlen(v)))
            return false;
    }
    return true;
}

/* Candidate streams from the index: the smallest posting list of an equality
 * matcher, or the union of a regex matcher's values; then every matcher checked. */
static int candidates(struct ls_tenant *t, const struct lq_matcher *m, int nm, uint32_t **out, uint32_t *nout)
{
    const struct ls_ids *best = NULL;
    bool have = false;
    for (int i = 0; i < nm; i++) {
        if (m[i].op != LQ_M_EQ || !m[i].value[0])
            continue;
        char key[4096];
        int k = snprintf(key, sizeof(key), "%s\xff%s", m[i].name, m[i].value);
        const struct ls_ids *ids = k > 0 && (size_t)k < sizeof(key) ? hmap_get(&t->postings, key, (size_t)k) : NULL;
        if (!ids) {
            *out = NULL;
            *nout = 0;
            return 0;
        }
        if (!have || ids->n < best->n)
            best = ids;
        have = true;
    }
    if (have) {
        *out = malloc((best->n ? best->n : 1) * sizeof(uint32_t));
        if (!*out)
            return -ENOMEM;
        memcpy(*out, best->v, best->n * sizeof(uint32_t));
        *nout = best->n;
        return 0;
    }
    for (int i = 0; i < nm; i++) {
        if (m[i].op != LQ_M_RE || lq_matcher_matches(&m[i], "", 0))
            continue;
        struct hmap *vals = hmap_get(&t->names, m[i].name, strlen(m[i].name));
        uint32_t n = 0, cap = 0;
        uint32_t *v = NULL;
        const struct hmap_slot *slot;
        for (size_t it = 0; vals && hmap_next(vals, &it, &slot);) {
            if (!lq_matcher_matches(&m[i], slot->key, slot->klen))
                continue;
            const struct ls_ids *ids = slot->value;
            if (n + ids->n > cap) {
                cap = (n + ids->n) * 2;
                uint32_t *nv = realloc(v, cap * sizeof(*nv));
                if (!nv) {
                    free(v);
                    return -ENOMEM;
                }
                v = nv;
            }
            memcpy(v + n, ids->v, ids->n * sizeof(uint32_t));
            n += ids->n;
        }
        if (n)
            qsort(v, n, sizeof(*v), cmp_u32);
        *out = v;
        *nout = n;
        return 0;
    }
    /* no selective matcher: every stream */
    *out = malloc((t->ns ? t->ns : 1) * sizeof(uint32_t));
    if (!*out)
        return -ENOMEM;
    for (uint32_t i = 0; i < t->ns; i++)
        (*out)[i] = i;
    *nout = t->ns;
    return 0;
}

int logs_store_streams(struct logs_store *st, const char *tenant, const struct lq_matcher *m, int nm, int64_t from,
                       int64_t to, struct ls_stream ***out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    struct ls_tenant *t = logs_store_tenant(st, tenant);
    if (!t)
        return 0;
    uint32_t *ids, nids;
    int r = candidates(t, m, nm, &ids, &nids);
    if (r)
        return r;
    struct ls_stream **v = malloc((nids ? nids : 1) * sizeof(*v));
    if (!v) {
        free(ids);
        return -ENOMEM;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < nids; i++) {
        struct ls_stream *s = t->sv[ids[i]];
        if (k && v[k - 1] == s)
            continue;
        if (!stream_matches(s, m, nm))
            continue;
        bool in = s->head_n && s->head_maxt >= from && s->head_mint <= to;
        for (uint32_t c = 0; c < s->nchunks && !in; c++)
            in = s->chunks[c].maxt >= from && s->chunks[c].mint <= to;
        if (in)
            v[k++] = s;
    }
    free(ids);
    *out = v;
    *n = k;
    return 0;
}

static int meta_labels(const struct dent *d, struct lq_label *out, int max)
{
    struct rd r = { d->meta, d->meta_end, false };
    int k = 0;
    for (uint32_t i = 0; i < d->nmeta && k < max; i++) {
        size_t n;
        out[k].name = get_str(&r, &n);
        out[k].value = get_str(&r, &n);
        k++;
    }
    return k;
}

/* Chunks are decompressed (and checked for the required literals) in waves, on
 * as many threads as there are CPUs, then their streams are visited in order. */
#define LS_WAVE_CHUNKS 16

struct ls_job {
    struct logs_store *st;
    const struct ls_chunk *ch;
    const struct strv *lit;
    int nlit;
    const uint64_t *toks;               /* the literals' whole tokens */
    int ntoks;
    uint8_t *raw;                       /* NULL: skipped (or failed: rc) */
    int rc;
};

struct ls_wave {
    struct ls_job *jobs;
    size_t n;
    size_t next;                        /* atomic */
};

static void *wave_worker(void *arg)
{
    struct ls_wave *w = arg;
    for (;;) {
        size_t i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
        if (i >= w->n)
            return NULL;
        struct ls_job *j = &w->jobs[i];
        bool may = true;
        for (int k = 0; k < j->ntoks && may && j->ch->tok; k++)
            may = tok_test(j->ch->tok, j->ch->tok_bits, j->toks[k]);
        if (!may)
            continue;       /* not decompressed at all */
        j->rc = chunk_bytes(j->st, j->ch, &j->raw);
        if (j->rc)
            continue;
        for (int k = 0; k < j->nlit; k++)
            if (!memmem(j->raw, j->ch->raw, j->lit[k].p, j->lit[k].n)) {
                free(j->raw);
                j->raw = NULL;
                break;
            }
    }
}

static void run_wave(struct ls_wave *w)
{
    static int ncpu;
    if (!ncpu)
        ncpu = cairn_ncpus() > 0 ? cairn_ncpus() : 1;
    int nt = (int)w->n < ncpu ? (int)w->n : ncpu;
    pthread_t th[64];
    int started = 0;
    for (int i = 1; i < nt && i < 64; i++)
        if (pthread_create(&th[started], NULL, wave_worker, w) == 0)
            started++;
    wave_worker(w);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
}

static bool chunk_in(const struct ls_chunk *ch, int64_t from, int64_t to)
{
    return !(ch->maxt <= from || ch->mint > to);
}

int logs_store_select(void *ctx, const struct lq_node *log, int64_t from, int64_t to, bool backward,
                      lq_stream_fn on_stream, lq_entry_fn on_entry, void *arg, char *err, size_t errlen)
{
    struct ls_query_ctx *q = ctx;
    /* a chunk without every required literal holds no entry that passes: skipped
       right after its decompression */
    struct strv lit[8];
    int nlit = lq_required_literals(log, lit, 8);
    uint64_t toks[64];
    int ntoks = 0;
    for (int k = 0; k < nlit; k++)
        ntoks += literal_tokens(lit[k], toks + ntoks, 64 - ntoks);
    struct ls_stream **sv;
    uint32_t ns;
    int r = logs_store_streams(q->st, q->tenant, log->matchers, log->nmatchers, from + 1, to, &sv, &ns);
    if (r) {
        snprintf(err, errlen, "out of memory");
        return r;
    }
    struct dent *d = NULL;
    size_t nd = 0, cap = 0;
    struct ls_job *jobs = NULL;
    size_t capjobs = 0;
    for (uint32_t i = 0; i < ns && !r;) {
        /* a wave: streams from i on, until their chunks fill it (at least one stream) */
        uint32_t j = i;
        size_t njobs = 0;
        while (j < ns && (j == i || njobs < LS_WAVE_CHUNKS)) {
            for (uint32_t c = 0; c < sv[j]->nchunks; c++) {
                if (!chunk_in(&sv[j]->chunks[c], from, to))
                    continue;
                if (njobs == capjobs) {
                    capjobs = capjobs ? capjobs * 2 : 32;
                    struct ls_job *nj = realloc(jobs, capjobs * sizeof(*nj));
                    if (!nj) {
                        r = -ENOMEM;
                        break;
                    }
                    jobs = nj;
                }
                jobs[njobs++] = (struct ls_job){ q->st, &sv[j]->chunks[c], lit, nlit, toks, ntoks, NULL, 0 };
            }
            j++;
        }
        if (r) {
            snprintf(err, errlen, "out of memory");
            break;
        }
        struct ls_wave w = { jobs, njobs, 0 };
        run_wave(&w);
        size_t jo = 0;
        for (uint32_t k = i; k < j && !r; k++) {
            struct ls_stream *s = sv[k];
            size_t first = jo;
            while (jo < njobs && jobs[jo].ch >= s->chunks && jobs[jo].ch < s->chunks + s->nchunks)
                jo++;
            if (on_stream(arg, &s->labels))
                continue;
            nd = 0;
            for (size_t x = first; x < jo && !r; x++) {
                q->chunks_read++;
                if (jobs[x].rc) {
                    r = jobs[x].rc;
                    snprintf(err, errlen, "cannot read a chunk: %s", cairn_strerror(r));
                } else if (!jobs[x].raw) {
                    q->chunks_skipped++;
                } else if ((r = decode_entries(jobs[x].raw, jobs[x].ch->raw, jobs[x].ch->n, &d, &nd, &cap))) {
                    snprintf(err, errlen, "a chunk is corrupt");
                }
            }
            if (!r && s->head_n && s->head_maxt > from && s->head_mint <= to &&
                (r = decode_entries((const uint8_t *)buf_head(&s->head), buf_used(&s->head), s->head_n, &d, &nd,
                                    &cap)))
                snprintf(err, errlen, "a head is corrupt");
            if (r)
                break;
            /* time order; equal times keep their order of decoding */
            for (size_t x = 1; x < nd; x++)
                if (d[x].ts < d[x - 1].ts) {
                    qsort(d, nd, sizeof(*d), dent_cmp);
                    break;
                }
            struct lq_label meta[256];
            struct lq_labels ml = { meta, 0 };
            for (size_t x = 0; x < nd; x++) {
                const struct dent *e = backward ? &d[nd - 1 - x] : &d[x];
                if (e->ts <= from || e->ts > to)
                    continue;
                ml.n = e->nmeta ? meta_labels(e, meta, 256) : 0;
                if (on_entry(arg, e->ts, e->line, e->n, &ml))
                    break;
            }
        }
        for (size_t x = 0; x < njobs; x++)
            free(jobs[x].raw);
        i = j;
    }
    free(jobs);
    free(d);
    free(sv);
    return r;
}
