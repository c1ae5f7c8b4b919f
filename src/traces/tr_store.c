/* tr_store.c - the trace store: a head of recent traces in memory, a WAL, and
 * immutable blocks on disk.
 *
 * Ingest: an export's spans are grouped per trace; each trace's new spans are
 * appended to its head entry as TracesData protobuf (one ResourceSpans per
 * resource and scope run), after one WAL write per export, before the answer.
 *
 * A trace that has had no new span for trace_idle is complete; complete traces
 * are written into a block once they add up to max_block_bytes or the oldest
 * has waited max_block_duration (and all of them on a stop). A block is one file,
 * written to a temporary name, fsynced and renamed, then the WAL is rewritten
 * with what is left in the head:
 *
 *     "CTB2"
 *     pages      per page: a zstd frame of the TracesData bytes of its traces, in
 *                id order, then one zstd frame per search column (tr_cols.c)
 *     index      per trace: id 16, page 4, offset 4, length 4, spans 4, start 8, end 8
 *     pages tbl  per page: file offset 8, compressed 4, raw 4, start 8, end 8,
 *                Bloom offset 8, Bloom bits 4, first trace 4
 *     blooms     per page: the tokens of its spans (service, name, attributes)
 *     columns    per page and column: file offset 8, compressed 4, raw 4
 *     services   service -> operations (name, kind), for the services API
 *     tenant
 *     footer     offsets, counts, time range, CRC-32 of index..tenant, the
 *                columns' offset, "CTB2END!"
 *
 * Blocks of the first format ("CTB1": no columns, an 88-byte footer) are read as
 * before and searched row by row until compaction rewrites them.
 *
 * The file is mapped; a trace by id is a binary search of the index in each
 * block of its tenant plus the head. A search tests a page's Bloom filter, then
 * builds each trace's view from the page's columns (the attribute columns only if
 * the query reads an attribute), and decompresses the page's spans only when a
 * trace matches. Compaction merges a tenant's blocks eight at
 * a time (parts of one trace are joined); retention drops blocks whose newest span
 * ended before the period.
 */
#include "traces_internal.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define TR_ZSTD_LEVEL 3
#define TR_PAGE_RAW (256u << 10)
#define TR_COMPACT_FAN 8
#define TR_COMPACT_MAX_BYTES (1ull << 30)
#define TR_FOOTER1 88                       /* "CTB1" */
#define TR_FOOTER 96
#define TR_COL 16                           /* a column's entry: offset 8, compressed 4, raw 4 */
#define BLOOM_K 6
#define TR_WAL_SEGMENT (64u << 20)           /* a WAL segment's size before the next one */
#define TR_WAL_PINNED 4                     /* segments one trace may keep alive */

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static int64_t wall_ns(void)
{
    return (int64_t)(cairn_wall_time() * 1e9);
}

/* ---- tenants ---- */

struct tr_tenant *tr_store_tenant(struct tr_store *st, const char *name, bool create)
{
    struct tr_tenant *t = hmap_get(&st->tenants, name, strlen(name));
    if (t || !create)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t || !(t->name = strdup(name)) || hmap_put(&st->tenants, name, strlen(name), t)) {
        if (t)
            free(t->name);
        free(t);
        return NULL;
    }
    t->tokens = st->conf->burst_bytes;
    t->tokens_at = cairn_now_ms();
    return t;
}

static void note_op(struct tr_tenant *t, struct strv svc, struct strv name, uint32_t kind, int64_t at)
{
    if (!svc.n)
        svc = strv_cstr("unknown_service");
    if (!name.p)
        name = strv_make("", 0);
    struct tr_service_info *si = hmap_get(&t->services, svc.p, svc.n);
    if (!si) {
        if (!(si = calloc(1, sizeof(*si))) || !(si->name = strv_dup(svc)) ||
            hmap_put(&t->services, svc.p, svc.n, si)) {
            if (si)
                free(si->name);
            free(si);
            return;
        }
    }
    if (at > si->last)
        si->last = at;
    char key[1024];
    size_t kn = name.n < sizeof(key) - 2 ? name.n : sizeof(key) - 2;
    memcpy(key, name.p, kn);
    key[kn] = 0;
    key[kn + 1] = (char)kind;
    struct tr_op *op = hmap_get(&si->ops, key, kn + 2);
    if (!op) {
        if (!(op = calloc(1, sizeof(*op))) || !(op->name = strv_dup(name)) || hmap_put(&si->ops, key, kn + 2, op)) {
            if (op)
                free(op->name);
            free(op);
            return;
        }
        op->kind = kind;
    }
    if (at > op->last)
        op->last = at;
}

static void tenant_free(struct tr_tenant *t)
{
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&t->head, &it, &slot);) {
        struct tr_head_trace *h = slot->value;
        buf_free(&h->data);
        free(h);
    }
    hmap_free(&t->head);
    for (size_t it = 0; hmap_next(&t->services, &it, &slot);) {
        struct tr_service_info *si = slot->value;
        const struct hmap_slot *s2;
        for (size_t j = 0; hmap_next(&si->ops, &j, &s2);) {
            struct tr_op *op = s2->value;
            free(op->name);
            free(op);
        }
        hmap_free(&si->ops);
        free(si->name);
        free(si);
    }
    hmap_free(&t->services);
    for (size_t it = 0; hmap_next(&t->edges, &it, &slot);) {
        struct tr_edge *e = slot->value;
        free(e->client);
        free(e->server);
        free(e);
    }
    hmap_free(&t->edges);
    free(t->name);
    free(t);
}

/* ---- the head ---- */

static struct tr_head_trace *head_get(struct tr_store *st, struct tr_tenant *t, const uint8_t id[16])
{
    struct tr_head_trace *h = hmap_get(&t->head, id, 16);
    if (h)
        return h;
    if (!(h = calloc(1, sizeof(*h))))
        return NULL;
    memcpy(h->id, id, 16);
    if (hmap_put(&t->head, id, 16, h)) {
        free(h);
        return NULL;
    }
    st->head_traces++;
    return h;
}

/* Appends a TracesData part to a trace of the head (replace: instead of what it
 * held), written in WAL segment seg. */
static int head_append(struct tr_store *st, struct tr_tenant *t, const uint8_t id[16], const uint8_t *p, size_t n,
                       uint64_t now_ms, uint32_t seg, bool replace)
{
    struct tr_head_trace *h = head_get(st, t, id);
    if (!h)
        return -ENOMEM;
    if (replace && buf_used(&h->data)) {
        t->head_bytes -= buf_used(&h->data);
        st->head_bytes -= buf_used(&h->data);
        st->head_spans -= h->nspans;
        h->nspans = 0;
        buf_reset(&h->data);
    }
    if (!buf_used(&h->data) || replace)
        h->wal_first = seg;
    if (buf_append(&h->data, p, n))
        return -ENOMEM;
    struct tr_trace_view v = { 0 };
    if (tr_view_add(&v, p, n) == 0) {
        for (size_t i = 0; i < v.n; i++) {
            if (!h->nspans || v.s[i].start < h->start)
                h->start = v.s[i].start;
            if (!h->nspans || v.s[i].end > h->end)
                h->end = v.s[i].end;
            h->nspans++;
            st->head_spans++;
            note_op(t, v.s[i].service, v.s[i].name, v.s[i].kind, v.s[i].start);
        }
    }
    tr_view_free(&v);
    h->last_ms = now_ms;
    t->head_bytes += n;
    st->head_bytes += n;
    return 0;
}

/* ---- the WAL ---- */

static int wal_open(struct tr_store *st, uint32_t seq, bool truncate)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/wal/%08u.wal", st->dir, seq);
    uint64_t size;
    int fd = cairn_open_append(path, truncate, &size);
    if (fd < 0)
        return fd;
    if (st->wal_fd >= 0)
        close(st->wal_fd);
    st->wal_fd = fd;
    st->wal_seq = seq;
    st->wal_size = size;
    return 0;
}

/* A record: length 4, CRC 4, then its type (0: the traces' new spans, 1: the
 * traces' whole data, replacing what replay had, 2: traces written into a block,
 * ids only), the tenant (varint length + bytes) and the traces: id 16, varint
 * length, TracesData. */
static void rec_begin(struct buf *b, const char *tenant, size_t *at, int type)
{
    *at = b->len;
    buf_append(b, "\0\0\0\0\0\0\0\0", 8);
    buf_putc(b, (char)type);
    pb_put_varint(b, strlen(tenant));
    buf_puts(b, tenant);
}

static void rec_trace(struct buf *b, const uint8_t id[16], const void *p, size_t n)
{
    buf_append(b, id, 16);
    pb_put_varint(b, n);
    buf_append(b, p, n);
}

static void rec_end(struct buf *b, size_t at)
{
    uint32_t len = (uint32_t)(b->len - at - 8);
    uint32_t crc = (uint32_t)crc32_z(0, (const Bytef *)b->data + at + 8, len);
    memcpy(b->data + at, &len, 4);
    memcpy(b->data + at + 4, &crc, 4);
}

static int wal_write(struct tr_store *st, const struct buf *recs)
{
    if (st->wal_size >= TR_WAL_SEGMENT) {
        int r = wal_open(st, st->wal_seq + 1, true);
        if (r)
            return r;
    }
    off_t start = (off_t)st->wal_size;
    int r = cairn_write_all(st->wal_fd, buf_head(recs), buf_used(recs));
    if (r) {
        if (ftruncate(st->wal_fd, start) == -1)
            log_error("traces: cannot cut a partial WAL record", "error", cairn_strerror(errno));
        st->wal_errors++;
        return r;
    }
    st->wal_size += buf_used(recs);
    st->wal_total += buf_used(recs);
    return 0;
}

static void head_drop(struct tr_store *st, struct tr_tenant *t, struct tr_head_trace *h)
{
    hmap_del(&t->head, h->id, 16);
    t->head_bytes -= buf_used(&h->data);
    st->head_bytes -= buf_used(&h->data);
    st->head_spans -= h->nspans;
    st->head_traces--;
    buf_free(&h->data);
    free(h);
}

static int replay_record(struct tr_store *st, const uint8_t *p, size_t n, uint32_t seg)
{
    if (!n || p[0] > 2)
        return -EINVAL;
    bool replace = p[0] == 1, flushed = p[0] == 2;
    struct pb b = { p + 1, p + n };
    uint64_t tl;
    if (pb_varint(&b, &tl) || tl > (uint64_t)(b.end - b.p) || tl > 255)
        return -EINVAL;
    char tenant[256];
    memcpy(tenant, b.p, tl);
    tenant[tl] = 0;
    b.p += tl;
    struct tr_tenant *t = tr_store_tenant(st, tenant, true);
    if (!t)
        return -ENOMEM;
    uint64_t now = cairn_now_ms();
    while (b.p < b.end) {
        uint64_t len;
        if (b.end - b.p < 16)
            return -EINVAL;
        const uint8_t *id = b.p;
        b.p += 16;
        if (flushed) {                      /* these went into a block: not the head's any more */
            struct tr_head_trace *h = hmap_get(&t->head, id, 16);
            if (h)
                head_drop(st, t, h);
            continue;
        }
        if (pb_varint(&b, &len) || len > (uint64_t)(b.end - b.p))
            return -EINVAL;
        if (head_append(st, t, id, b.p, len, now, seg, replace))
            return -ENOMEM;
        b.p += len;
    }
    return 0;
}

static int replay_wal(struct tr_store *st, uint32_t seq, uint64_t *records)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/wal/%08u.wal", st->dir, seq);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) == -1) {
        int e = -errno;
        close(fd);
        return e;
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *data = size ? malloc(size) : NULL;
    if (size && (!data || pread(fd, data, size, 0) != (ssize_t)size)) {
        free(data);
        close(fd);
        return -EIO;
    }
    size_t off = 0;
    while (off + 8 <= size) {
        uint32_t len = get_u32(data + off), crc = get_u32(data + off + 4);
        if (len > size - off - 8 || (uint32_t)crc32_z(0, data + off + 8, len) != crc)
            break;
        if (replay_record(st, data + off + 8, len, seq))
            break;
        off += 8 + len;
        (*records)++;
    }
    if (off < size) {
        log_warn("traces: WAL tail cut (torn or corrupt)", "file", path, "kept", log_int((long long)off),
                 "dropped", log_int((long long)(size - off)));
        if (ftruncate(fd, (off_t)off) == -1)
            log_error("traces: cannot cut the WAL", "error", cairn_strerror(errno));
    }
    free(data);
    close(fd);
    st->wal_total += off;
    return 0;
}

static void wal_unlink(struct tr_store *st, uint32_t seq)
{
    char path[600];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/wal/%08u.wal", st->dir, seq);
    if (stat(path, &sb) == 0) {
        st->wal_total -= (uint64_t)sb.st_size < st->wal_total ? (uint64_t)sb.st_size : st->wal_total;
        unlink(path);
    }
}

/* Drops the WAL segments no trace of the head needs any more. A trace that keeps
 * old segments alive (it has been growing for TR_WAL_PINNED segments) has its
 * whole data written again into the current segment, as a replacing record. */
static int wal_gc(struct tr_store *st)
{
    uint32_t min = st->wal_seq;
    const struct hmap_slot *ts, *hs;
    for (size_t it = 0; hmap_next(&st->tenants, &it, &ts);) {
        struct tr_tenant *t = ts->value;
        for (size_t j = 0; hmap_next(&t->head, &j, &hs);) {
            struct tr_head_trace *h = hs->value;
            if (h->wal_first < min)
                min = h->wal_first;
        }
    }
    int r = 0;
    if (st->wal_seq - min >= TR_WAL_PINNED) {
        if ((r = wal_open(st, st->wal_seq + 1, true)))
            return r;
        struct buf b = BUF_INIT;
        for (size_t it = 0; !r && hmap_next(&st->tenants, &it, &ts);) {
            struct tr_tenant *t = ts->value;
            for (size_t j = 0; !r && hmap_next(&t->head, &j, &hs);) {
                struct tr_head_trace *h = hs->value;
                if (h->wal_first >= st->wal_seq)
                    continue;
                size_t at;
                buf_reset(&b);
                rec_begin(&b, t->name, &at, 1);
                rec_trace(&b, h->id, buf_head(&h->data), buf_used(&h->data));
                rec_end(&b, at);
                if (!(r = wal_write(st, &b)))
                    h->wal_first = st->wal_seq;
            }
        }
        buf_free(&b);
        if (r)
            return r;
        min = st->wal_seq;
    }
    for (uint32_t seq = st->wal_oldest; seq < min; seq++)
        wal_unlink(st, seq);
    if (min > st->wal_oldest)
        st->wal_oldest = min;
    return 0;
}

/* ---- ingest ---- */

struct in_span {
    const uint8_t *tid;
    struct pb span, rs, ss;                 /* the span; its ResourceSpans and ScopeSpans */
    uint32_t rsi, ssi;                      /* which of the request's */
};

static int cmp_in(const void *a, const void *b)
{
    const struct in_span *x = a, *y = b;
    int c = memcmp(x->tid, y->tid, 16);
    if (c)
        return c;
    if (x->rsi != y->rsi)
        return x->rsi < y->rsi ? -1 : 1;
    if (x->ssi != y->ssi)
        return x->ssi < y->ssi ? -1 : 1;
    return x->span.p < y->span.p ? -1 : x->span.p > y->span.p;
}

/* Writes msg without its field `skip` (the children) into out. */
static void put_without(struct buf *out, struct pb msg, uint32_t skip)
{
    const uint8_t *start = msg.p;
    uint32_t f;
    int wt;
    struct pb sub;
    uint64_t v;
    while (msg.p < msg.end) {
        const uint8_t *at = msg.p;
        if (pb_field(&msg, &f, &wt, &sub, &v))
            break;
        if (f == skip) {
            buf_append(out, start, (size_t)(at - start));
            start = msg.p;
        }
    }
    buf_append(out, start, (size_t)(msg.p - start));
}

struct attr_check {
    uint32_t max;
    bool over;
};

static int attr_over(const struct tr_kv *kv, void *arg)
{
    struct attr_check *c = arg;
    if (kv->key.n > c->max || ((kv->type == TR_V_STR || kv->type == TR_V_BYTES) && kv->s.n > c->max)) {
        c->over = true;
        return 1;
    }
    return 0;
}

/* Copies the span with attribute keys and string values cut to max bytes. */
static void truncate_attrs(struct buf *out, struct pb span, uint32_t max)
{
    uint32_t f;
    int wt;
    struct pb sub;
    uint64_t v;
    while (span.p < span.end) {
        const uint8_t *at = span.p;
        if (pb_field(&span, &f, &wt, &sub, &v))
            break;
        struct tr_kv kv;
        if (f != 9 || wt != 2 || tr_kv_decode(sub, &kv)) {
            buf_append(out, at, (size_t)(span.p - at));
            continue;
        }
        struct buf kb = BUF_INIT, ab = BUF_INIT;
        pb_put_bytes(&kb, 1, kv.key.p, kv.key.n < max ? kv.key.n : max);
        if (kv.type == TR_V_STR || kv.type == TR_V_BYTES) {
            size_t n = kv.s.n < max ? kv.s.n : max;
            if (kv.type == TR_V_STR)    /* never cut a UTF-8 sequence in two */
                while (n && n < kv.s.n && ((unsigned char)kv.s.p[n] & 0xc0) == 0x80)
                    n--;
            pb_put_bytes(&ab, kv.type == TR_V_STR ? 1 : 7, kv.s.p, n);
            pb_put_msg(&kb, 2, &ab);
        } else {
            struct pb val = sub;            /* copy the value as it was */
            uint32_t f2;
            int wt2;
            struct pb s2;
            uint64_t v2;
            while (val.p < val.end && !pb_field(&val, &f2, &wt2, &s2, &v2))
                if (f2 == 2 && wt2 == 2)
                    pb_put_bytes(&kb, 2, s2.p, (size_t)(s2.end - s2.p));
        }
        pb_put_msg(out, 9, &kb);
        buf_free(&kb);
        buf_free(&ab);
    }
}

static void refuse(struct tr_ingest_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(struct tr_ingest_result *res, const char *fmt, ...)
{
    if (res->msg[0])
        return;                             /* the first reason is the one reported */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->msg, sizeof(res->msg), fmt, ap);
    va_end(ap);
}

int tr_store_ingest(struct tr_store *st, const char *tenant, const uint8_t *p, size_t n,
                    struct tr_ingest_result *res)
{
    memset(res, 0, sizeof(*res));
    const struct traces_conf *c = st->conf;
    struct in_span *sp = NULL;
    size_t nsp = 0, cap = 0;
    struct pb req = { p, p + n }, rs, ss, sub;
    uint32_t f, rsi = 0, ssi = 0;
    int wt;
    uint64_t v;
    int rc = 0;
    while (req.p < req.end) {
        if (pb_field(&req, &f, &wt, &rs, &v)) {
            rc = -EINVAL;
            break;
        }
        if (f != 1 || wt != 2)
            continue;
        rsi++;
        struct pb m = rs;
        while (m.p < m.end) {
            if (pb_field(&m, &f, &wt, &ss, &v)) {
                rc = -EINVAL;
                break;
            }
            if (f != 2 || wt != 2)
                continue;
            ssi++;
            struct pb s2 = ss;
            while (s2.p < s2.end) {
                if (pb_field(&s2, &f, &wt, &sub, &v)) {
                    rc = -EINVAL;
                    break;
                }
                if (f != 2 || wt != 2)
                    continue;
                /* the ids: 16 and 8 bytes, not all zero */
                struct pb q = sub;
                const uint8_t *tid = NULL, *sid = NULL;
                uint32_t f2;
                int wt2;
                struct pb s3;
                uint64_t v2;
                bool bad = false;
                while (q.p < q.end) {
                    if (pb_field(&q, &f2, &wt2, &s3, &v2)) {
                        bad = true;
                        break;
                    }
                    if (f2 == 1 && wt2 == 2 && s3.end - s3.p == 16)
                        tid = s3.p;
                    else if (f2 == 2 && wt2 == 2 && s3.end - s3.p == 8)
                        sid = s3.p;
                }
                static const uint8_t zero[16];
                if (bad || !tid || !sid || !memcmp(tid, zero, 16) || !memcmp(sid, zero, 8)) {
                    res->rejected++;
                    refuse(res, "%s", bad ? "a span is not a valid protobuf Span" :
                           "a span has no valid trace id (16 bytes, not all zero) or span id (8 bytes, not all zero)");
                    continue;
                }
                if (nsp == cap) {
                    cap = cap ? cap * 2 : 64;
                    struct in_span *ns = realloc(sp, cap * sizeof(*ns));
                    if (!ns) {
                        free(sp);
                        return -ENOMEM;
                    }
                    sp = ns;
                }
                sp[nsp++] = (struct in_span){ tid, sub, rs, ss, rsi, ssi };
            }
            if (rc)
                break;
        }
        if (rc)
            break;
    }
    if (rc) {
        free(sp);
        snprintf(res->msg, sizeof(res->msg), "malformed ExportTraceServiceRequest protobuf");
        return rc;
    }
    struct tr_tenant *t = tr_store_tenant(st, tenant, true);
    if (!t) {
        free(sp);
        return -ENOMEM;
    }
    /* the tenant's ingestion rate, for the request as a whole (as Tempo) */
    uint64_t now = cairn_now_ms();
    t->tokens += c->rate_bytes * (double)(now - t->tokens_at) / 1000.0;
    if (t->tokens > c->burst_bytes)
        t->tokens = c->burst_bytes;
    t->tokens_at = now;
    if ((double)n > t->tokens) {
        res->status = 429;
        res->retry_after = 1;
        res->rejected += nsp;
        snprintf(res->msg, sizeof(res->msg),
                 "RATE_LIMITED: ingestion rate limit (local: %.0f bytes, burst: %.0f bytes) exceeded while adding %zu bytes for user %s",
                 c->rate_bytes, c->burst_bytes, n, tenant);
        st->spans_refused += nsp;
        free(sp);
        return 0;
    }
    t->tokens -= (double)n;
    if (nsp)
        qsort(sp, nsp, sizeof(*sp), cmp_in);
    /* per trace: its TracesData part, grouped by resource and scope */
    struct buf wal = BUF_INIT, part = BUF_INIT, rsb = BUF_INIT, ssb = BUF_INIT, tmp = BUF_INIT;
    struct { const uint8_t *id; size_t off, len; uint32_t nspans; } *parts = NULL;
    size_t nparts = 0;
    size_t at;
    rec_begin(&wal, tenant, &at, 0);
    int64_t min_end = c->max_span_age_ms ? wall_ns() - (int64_t)c->max_span_age_ms * 1000000 : INT64_MIN;
    for (size_t i = 0; i < nsp;) {
        size_t j = i;
        while (j < nsp && !memcmp(sp[j].tid, sp[i].tid, 16))
            j++;
        buf_reset(&part);
        uint32_t kept = 0;
        for (size_t k = i; k < j;) {
            size_t l = k;
            buf_reset(&ssb);
            put_without(&ssb, sp[k].ss, 2);
            size_t ssb_base = buf_used(&ssb);
            while (l < j && sp[l].ssi == sp[k].ssi) {
                struct pb s = sp[l].span;
                if (c->max_span_age_ms) {
                    struct pb q = s;
                    uint32_t f2;
                    int wt2;
                    struct pb s3;
                    uint64_t v2;
                    int64_t end = 0;
                    while (q.p < q.end && !pb_field(&q, &f2, &wt2, &s3, &v2))
                        if (f2 == 8)
                            end = (int64_t)v2;
                    if (end < min_end) {
                        res->rejected++;
                        refuse(res, "a span ended more than %llus ago (the oldest accepted)",
                               (unsigned long long)(c->max_span_age_ms / 1000));
                        l++;
                        continue;
                    }
                }
                struct attr_check ac = { c->max_attribute_bytes, false };
                if (ac.max)
                    tr_attrs_each(s, 9, attr_over, &ac);
                if (ac.over) {
                    buf_reset(&tmp);
                    truncate_attrs(&tmp, s, ac.max);
                    pb_put_bytes(&ssb, 2, buf_head(&tmp), buf_used(&tmp));
                } else {
                    pb_put_bytes(&ssb, 2, s.p, (size_t)(s.end - s.p));
                }
                kept++;
                l++;
            }
            if (buf_used(&ssb) > ssb_base) {
                buf_reset(&rsb);
                put_without(&rsb, sp[k].rs, 2);
                pb_put_msg(&rsb, 2, &ssb);
                pb_put_msg(&part, 1, &rsb);
            }
            k = l;
        }
        if (kept) {
            struct tr_head_trace *h = hmap_get(&t->head, sp[i].tid, 16);
            uint64_t have = h ? buf_used(&h->data) : 0;
            if (c->max_bytes_per_trace && have + buf_used(&part) > c->max_bytes_per_trace) {
                char hex[33];
                tr_hex_id(sp[i].tid, 16, hex);
                res->rejected += kept;
                refuse(res, "TRACE_TOO_LARGE: max size of trace (%llu) exceeded while adding %zu bytes to trace %s for tenant %s",
                       (unsigned long long)c->max_bytes_per_trace, buf_used(&part), hex, tenant);
            } else {
                if (!(nparts & 63)) {
                    void *np = realloc(parts, (nparts + 64) * sizeof(*parts));
                    if (!np) {
                        rc = -ENOMEM;
                        break;
                    }
                    parts = np;
                }
                rec_trace(&wal, sp[i].tid, buf_head(&part), buf_used(&part));
                size_t hdr = wal.len - buf_used(&part);
                parts[nparts].id = sp[i].tid;
                parts[nparts].off = hdr;
                parts[nparts].len = buf_used(&part);
                parts[nparts].nspans = kept;
                nparts++;
                res->accepted += kept;
            }
        }
        i = j;
    }
    rec_end(&wal, at);
    if (!rc && nparts) {
        rc = wal_write(st, &wal);
        if (rc) {
            res->status = 503;
            res->retry_after = 5;
            res->rejected += res->accepted;
            res->accepted = 0;
            snprintf(res->msg, sizeof(res->msg), "cannot write the WAL: %s; nothing of this export was stored",
                     cairn_strerror(rc));
            rc = 0;
            nparts = 0;
        }
    }
    for (size_t i = 0; !rc && i < nparts; i++)
        rc = head_append(st, t, parts[i].id, (const uint8_t *)wal.data + parts[i].off, parts[i].len, now, st->wal_seq,
                         false);
    st->spans_in += res->accepted;
    st->spans_refused += res->rejected;
    if (res->accepted)
        st->bytes_in += n;
    free(parts);
    free(sp);
    buf_free(&wal);
    buf_free(&part);
    buf_free(&rsb);
    buf_free(&ssb);
    buf_free(&tmp);
    return rc;
}

/* ---- blocks ---- */

static uint64_t tok_hash(const char *kind, struct strv a, struct strv b)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *k = kind; *k; k++)
        h = (h ^ (uint8_t)*k) * 1099511628211ULL;
    for (size_t i = 0; i < a.n; i++)
        h = (h ^ (uint8_t)a.p[i]) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (size_t i = 0; i < b.n; i++)
        h = (h ^ (uint8_t)b.p[i]) * 1099511628211ULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

uint64_t tr_token(const char *kind, struct strv a, struct strv b)
{
    return tok_hash(kind, a, b);
}

static bool bloom_test(const uint8_t *bits, uint32_t nbits, uint64_t h)
{
    if (!nbits)
        return true;
    uint32_t a = (uint32_t)h, b = (uint32_t)(h >> 32) | 1;
    for (int i = 0; i < BLOOM_K; i++) {
        uint32_t x = (a + (uint32_t)i * b) % nbits;
        if (!(bits[x >> 3] & (1u << (x & 7))))
            return false;
    }
    return true;
}

static void bloom_set(uint8_t *bits, uint32_t nbits, uint64_t h)
{
    uint32_t a = (uint32_t)h, b = (uint32_t)(h >> 32) | 1;
    for (int i = 0; i < BLOOM_K; i++) {
        uint32_t x = (a + (uint32_t)i * b) % nbits;
        bits[x >> 3] |= (uint8_t)(1u << (x & 7));
    }
}

struct bw {
    int fd;
    char tmp[600], final[600];
    uint64_t off;
    struct buf page, index, pages, blooms, toks;
    struct hmap seen;                       /* a page's distinct tokens */
    struct hmap res_seen;                   /* a page's resources and scopes, tokenized once */
    bool skip_res;
    uint32_t ntraces, npages, page_first;
    int64_t pstart, pend, min_start, max_end;
    uint64_t spans;
    struct tr_tenant svcs;                  /* services and operations (only .services used) */
    struct tc_writer cols;                  /* the page's search columns */
    struct buf coldir;
    ZSTD_CCtx *cctx;                        /* one for every frame of the block */
    struct buf zbuf;                        /* a frame, compressed */
    struct buf kv;
    int err;
};

static int tok_add(struct bw *w, uint64_t h)
{
    if (hmap_get(&w->seen, &h, 8))
        return 0;
    if (hmap_put(&w->seen, &h, 8, (void *)1))
        return -ENOMEM;
    return buf_append(&w->toks, &h, 8);
}

struct tok_ctx {
    struct bw *w;
};

static int tok_attr(const struct tr_kv *kv, int where, void *arg)
{
    struct bw *w = arg;
    if (w->skip_res && (where == 2 || where == 3))
        return 0;
    if (kv->type == TR_V_ARRAY || kv->type == TR_V_KVLIST || kv->type == TR_V_NONE)
        return 0;
    if (kv->type == TR_V_STR && kv->s.n > 256)
        return 0;                           /* long texts are not searched by equality */
    buf_reset(&w->kv);
    tr_kv_string(kv, &w->kv);
    tok_add(w, tok_hash("a", kv->key, buf_strv(&w->kv)));
    return 0;
}

/* Appends b to out as one zstd frame (the block's one compression context); its
 * compressed size into *cl. */
static int frame_compress(struct bw *w, const struct buf *b, struct buf *out, uint32_t *cl)
{
    if (buf_used(b) > UINT32_MAX)
        return -EFBIG;
    size_t bound = ZSTD_compressBound(buf_used(b));
    if (!w->cctx && !(w->cctx = ZSTD_createCCtx()))
        return -ENOMEM;
    if (buf_reserve(out, bound))
        return -ENOMEM;
    size_t n = ZSTD_compressCCtx(w->cctx, buf_tail(out), bound, buf_head(b), buf_used(b), TR_ZSTD_LEVEL);
    if (ZSTD_isError(n))
        return -EIO;
    buf_commit(out, n);
    *cl = (uint32_t)n;
    return 0;
}

/* Writes b as one zstd frame at w->off; its compressed size into *cl. */
static int frame_write(struct bw *w, const struct buf *b, size_t *cl)
{
    uint32_t n;
    buf_reset(&w->zbuf);
    int r = frame_compress(w, b, &w->zbuf, &n);
    if (!r)
        r = cairn_write_all(w->fd, buf_head(&w->zbuf), n);
    *cl = n;
    return r;
}

static void page_close(struct bw *w)
{
    if (!buf_used(&w->page) || w->err)
        return;
    size_t cl;
    int r = frame_write(w, &w->page, &cl);
    if (r) {
        w->err = r;
        return;
    }
    uint64_t data_off = w->off;
    w->off += cl;
    tc_finish(&w->cols);
    /* the key columns are compressed first: the key directory holds their sizes,
     * and they follow the other columns */
    struct buf keys = BUF_INIT;
    uint32_t *kl = calloc(w->cols.nkeys ? w->cols.nkeys : 1, sizeof(*kl));
    if (!kl)
        r = -ENOMEM;
    for (uint32_t k = 0; !r && k < w->cols.nkeys; k++)
        r = frame_compress(w, &w->cols.akeys[k].b, &keys, &kl[k]);
    if (!r)
        tc_keys_dir(&w->cols, kl);
    free(kl);
    for (int c = 0; c < TC_N && !r; c++) {
        size_t ccl;
        if ((r = frame_write(w, &w->cols.col[c], &ccl)))
            break;
        uint8_t ce[TR_COL];
        put_u64(ce, w->off);
        put_u32(ce + 8, (uint32_t)ccl);
        put_u32(ce + 12, (uint32_t)buf_used(&w->cols.col[c]));
        buf_append(&w->coldir, ce, TR_COL);
        w->off += ccl;
    }
    if (!r && !(r = cairn_write_all(w->fd, buf_head(&keys), buf_used(&keys))))
        w->off += buf_used(&keys);
    buf_free(&keys);
    if (r) {
        w->err = r;
        return;
    }
    tc_reset(&w->cols);
    size_t ntok = buf_used(&w->toks) / 8;
    uint32_t nbits = (uint32_t)((ntok * 10 + 63) & ~(size_t)63);
    if (nbits < 64)
        nbits = 64;
    uint8_t *bits = calloc(nbits / 8, 1);
    if (!bits) {
        w->err = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < ntok; i++) {
        uint64_t h;
        memcpy(&h, w->toks.data + w->toks.off + 8 * i, 8);
        bloom_set(bits, nbits, h);
    }
    uint8_t e[TR_PG];
    put_u64(e, data_off);
    put_u32(e + 8, (uint32_t)cl);
    put_u32(e + 12, (uint32_t)buf_used(&w->page));
    put_u64(e + 16, (uint64_t)w->pstart);
    put_u64(e + 24, (uint64_t)w->pend);
    put_u64(e + 32, buf_used(&w->blooms));
    put_u32(e + 40, nbits);
    put_u32(e + 44, w->page_first);
    buf_append(&w->pages, e, TR_PG);
    buf_append(&w->blooms, bits, nbits / 8);
    free(bits);
    w->npages++;
    w->page_first = w->ntraces;
    buf_reset(&w->page);
    buf_reset(&w->toks);
    hmap_free(&w->seen);
    memset(&w->seen, 0, sizeof(w->seen));
    hmap_free(&w->res_seen);
    memset(&w->res_seen, 0, sizeof(w->res_seen));
}

static int bw_open(struct tr_store *st, struct bw *w, uint32_t seq)
{
    memset(w, 0, sizeof(*w));
    snprintf(w->final, sizeof(w->final), "%s/blocks/%08u.ctb", st->dir, seq);
    snprintf(w->tmp, sizeof(w->tmp), "%s/blocks/%08u.ctb.tmp", st->dir, seq);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd == -1)
        return -errno;
    w->min_start = INT64_MAX;
    w->max_end = INT64_MIN;
    int r = cairn_write_all(w->fd, "CTB2", 4);
    w->off = 4;
    return r;
}

/* Adds a trace (ids ascending): its TracesData bytes. */
static void bw_add(struct bw *w, const uint8_t id[16], const uint8_t *p, size_t n)
{
    if (w->err)
        return;
    struct tr_trace_view v = { 0 };
    if (tr_view_add(&v, p, n) || !v.n) {
        tr_view_free(&v);
        return;                             /* nothing readable: not kept */
    }
    size_t nspans = v.n;
    tr_view_link(&v);                       /* the columns hold the linked trace */
    if (buf_used(&w->page) && buf_used(&w->page) + n > TR_PAGE_RAW)
        page_close(w);
    if (!buf_used(&w->page)) {
        w->pstart = INT64_MAX;
        w->pend = INT64_MIN;
    }
    const uint8_t *last_res = NULL, *last_scope = NULL;
    for (size_t i = 0; i < v.n; i++) {
        const struct tr_span *s = &v.s[i];
        /* a resource and scope's tokens once per page: most spans share a few */
        bool seen = i && s->res.p == last_res && s->scope.p == last_scope;
        if (!seen) {
            uint64_t rk = hmap_hash(s->res.p ? (const void *)s->res.p : "", (size_t)(s->res.end - s->res.p)) * 31 +
                          hmap_hash(s->scope.p ? (const void *)s->scope.p : "", (size_t)(s->scope.end - s->scope.p));
            seen = hmap_get(&w->res_seen, &rk, 8) != NULL;
            if (!seen)
                hmap_put(&w->res_seen, &rk, 8, (void *)1);
        }
        last_res = s->res.p;
        last_scope = s->scope.p;
        w->skip_res = seen;
        if (!seen)
            tok_add(w, tok_hash("s", s->service, strv_make("", 0)));
        tok_add(w, tok_hash("n", s->name, strv_make("", 0)));
        tr_span_attrs_all(s, tok_attr, w);
        note_op(&w->svcs, s->service, s->name, s->kind, s->start);
    }
    uint8_t e[TR_IDX];
    memcpy(e, id, 16);
    put_u32(e + 16, w->npages);
    put_u32(e + 20, (uint32_t)buf_used(&w->page));
    put_u32(e + 24, (uint32_t)n);
    put_u32(e + 28, (uint32_t)nspans);
    put_u64(e + 32, (uint64_t)v.start);
    put_u64(e + 40, (uint64_t)v.end);
    buf_append(&w->index, e, TR_IDX);
    buf_append(&w->page, p, n);
    if (tc_add(&w->cols, &v))
        w->err = -ENOMEM;
    w->ntraces++;
    w->spans += nspans;
    if (v.start < w->pstart)
        w->pstart = v.start;
    if (v.end > w->pend)
        w->pend = v.end;
    if (v.start < w->min_start)
        w->min_start = v.start;
    if (v.end > w->max_end)
        w->max_end = v.end;
    tr_view_free(&v);
}

static void bw_discard(struct bw *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    unlink(w->tmp);
    buf_free(&w->page);
    buf_free(&w->index);
    buf_free(&w->pages);
    buf_free(&w->blooms);
    buf_free(&w->toks);
    buf_free(&w->kv);
    buf_free(&w->coldir);
    buf_free(&w->zbuf);
    ZSTD_freeCCtx(w->cctx);
    w->cctx = NULL;
    tc_free(&w->cols);
    hmap_free(&w->seen);
    hmap_free(&w->res_seen);
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&w->svcs.services, &it, &slot);) {
        struct tr_service_info *si = slot->value;
        const struct hmap_slot *s2;
        for (size_t j = 0; hmap_next(&si->ops, &j, &s2);) {
            struct tr_op *op = s2->value;
            free(op->name);
            free(op);
        }
        hmap_free(&si->ops);
        free(si->name);
        free(si);
    }
    hmap_free(&w->svcs.services);
}

static int load_block(struct tr_store *st, const char *path, uint32_t seq, struct tr_block **out);

/* Finishes the block: metadata, footer, fsync, rename. */
static int bw_finish(struct tr_store *st, struct bw *w, const char *tenant, uint32_t level, uint32_t seq,
                     struct tr_block **out)
{
    page_close(w);
    if (w->err) {
        int e = w->err;
        bw_discard(w);
        return e;
    }
    struct buf meta = BUF_INIT;
    uint64_t idx_off = w->off;
    buf_append(&meta, buf_head(&w->index), buf_used(&w->index));
    uint64_t pg_off = idx_off + buf_used(&meta);
    buf_append(&meta, buf_head(&w->pages), buf_used(&w->pages));
    uint64_t bl_off = idx_off + buf_used(&meta);
    buf_append(&meta, buf_head(&w->blooms), buf_used(&w->blooms));
    uint64_t col_off = idx_off + buf_used(&meta);
    buf_append(&meta, buf_head(&w->coldir), buf_used(&w->coldir));
    uint64_t sv_off = idx_off + buf_used(&meta);
    const struct hmap_slot *slot;
    pb_put_varint(&meta, w->svcs.services.n);
    for (size_t it = 0; hmap_next(&w->svcs.services, &it, &slot);) {
        struct tr_service_info *si = slot->value;
        pb_put_varint(&meta, strlen(si->name));
        buf_puts(&meta, si->name);
        pb_put_varint(&meta, si->ops.n);
        const struct hmap_slot *s2;
        for (size_t j = 0; hmap_next(&si->ops, &j, &s2);) {
            struct tr_op *op = s2->value;
            pb_put_varint(&meta, strlen(op->name));
            buf_puts(&meta, op->name);
            pb_put_varint(&meta, op->kind);
            pb_put_varint(&meta, (uint64_t)op->last);
        }
    }
    uint64_t tn_off = idx_off + buf_used(&meta);
    pb_put_varint(&meta, strlen(tenant));
    buf_puts(&meta, tenant);
    uint32_t crc = (uint32_t)crc32_z(0, (const Bytef *)buf_head(&meta), buf_used(&meta));
    uint8_t f[TR_FOOTER];
    memset(f, 0, sizeof(f));
    put_u64(f, idx_off);
    put_u32(f + 8, w->ntraces);
    put_u64(f + 12, pg_off);
    put_u32(f + 20, w->npages);
    put_u64(f + 24, bl_off);
    put_u64(f + 32, sv_off);
    put_u64(f + 40, tn_off);
    put_u64(f + 48, (uint64_t)w->min_start);
    put_u64(f + 56, (uint64_t)w->max_end);
    put_u64(f + 64, w->spans);
    put_u32(f + 72, level);
    put_u32(f + 76, crc);
    put_u64(f + 80, col_off);
    memcpy(f + 88, "CTB2END!", 8);
    int r = cairn_write_all(w->fd, buf_head(&meta), buf_used(&meta));
    buf_free(&meta);
    if (!r)
        r = cairn_write_all(w->fd, f, sizeof(f));
    if (!r && fsync(w->fd) == -1)
        r = -errno;
    if (r) {
        bw_discard(w);
        return r;
    }
    close(w->fd);
    w->fd = -1;
    if (rename(w->tmp, w->final) == -1) {
        r = -errno;
        bw_discard(w);
        return r;
    }
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/blocks", st->dir);
    cairn_fsync_dir(dir);
    bw_discard(w);
    return load_block(st, w->final, seq, out);
}

static void block_free(struct tr_block *b)
{
    if (!b)
        return;
    if (b->map)
        munmap((void *)b->map, b->size);
    free(b->path);
    free(b->tenant);
    free(b);
}

static int load_block(struct tr_store *st, const char *path, uint32_t seq, struct tr_block **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) == -1 || sb.st_size < TR_FOOTER1 + 4) {
        close(fd);
        return -EINVAL;
    }
    size_t size = (size_t)sb.st_size;
    const uint8_t *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -errno;
    struct tr_block *b = calloc(1, sizeof(*b));
    if (!b) {
        munmap((void *)m, size);
        return -ENOMEM;
    }
    b->map = m;
    b->size = size;
    b->seq = seq;
    bool v2 = size >= TR_FOOTER + 4 && !memcmp(m, "CTB2", 4) && !memcmp(m + size - 8, "CTB2END!", 8);
    size_t footer = v2 ? TR_FOOTER : TR_FOOTER1;
    const uint8_t *f = m + size - footer;
    uint64_t idx_off = get_u64(f), pg_off = get_u64(f + 12), bl_off = get_u64(f + 24), sv_off = get_u64(f + 32),
             tn_off = get_u64(f + 40);
    b->ntraces = get_u32(f + 8);
    b->npages = get_u32(f + 20);
    b->min_start = (int64_t)get_u64(f + 48);
    b->max_end = (int64_t)get_u64(f + 56);
    b->spans = get_u64(f + 64);
    b->level = get_u32(f + 72);
    uint64_t meta_end = size - footer;
    uint64_t col_off = v2 ? get_u64(f + 80) : sv_off;   /* the blooms end here */
    if ((!v2 && (memcmp(m, "CTB1", 4) || memcmp(f + 80, "CTB1END!", 8))) || idx_off > meta_end || pg_off > meta_end ||
        bl_off > meta_end || sv_off > meta_end || tn_off > meta_end || idx_off + (uint64_t)b->ntraces * TR_IDX != pg_off ||
        pg_off + (uint64_t)b->npages * TR_PG != bl_off || bl_off > col_off || sv_off > tn_off ||
        (v2 && col_off + (uint64_t)b->npages * TC_N * TR_COL != sv_off) ||
        (uint32_t)crc32_z(0, m + idx_off, meta_end - idx_off) != get_u32(f + 76)) {
        block_free(b);
        return -EINVAL;
    }
    b->index = m + idx_off;
    b->pages = m + pg_off;
    b->blooms = m + bl_off;
    b->cols = v2 ? m + col_off : NULL;
    b->data_end = idx_off;
    for (uint32_t i = 0; i < b->npages; i++) {
        const uint8_t *pg = b->pages + (size_t)i * TR_PG;
        if (get_u64(pg) + get_u32(pg + 8) > idx_off || get_u64(pg + 32) + get_u32(pg + 40) / 8 > col_off - bl_off ||
            get_u32(pg + 44) > b->ntraces) {
            block_free(b);
            return -EINVAL;
        }
        for (int c = 0; v2 && c < TC_N; c++) {
            const uint8_t *ce = b->cols + ((size_t)i * TC_N + (size_t)c) * TR_COL;
            if (get_u64(ce) + get_u32(ce + 8) > idx_off) {
                block_free(b);
                return -EINVAL;
            }
        }
    }
    for (uint32_t i = 0; i < b->ntraces; i++) {
        const uint8_t *e = b->index + (size_t)i * TR_IDX;
        uint32_t pg = get_u32(e + 16);
        if (pg >= b->npages || (uint64_t)get_u32(e + 20) + get_u32(e + 24) > get_u32(b->pages + (size_t)pg * TR_PG + 12)) {
            block_free(b);
            return -EINVAL;
        }
    }
    struct pb tn = { m + tn_off, m + meta_end };
    uint64_t l;
    if (pb_varint(&tn, &l) || l > (uint64_t)(tn.end - tn.p) || !(b->tenant = strndup((const char *)tn.p, l)) ||
        !(b->path = strdup(path))) {
        block_free(b);
        return -EINVAL;
    }
    /* services and operations into the tenant's lists */
    struct tr_tenant *t = tr_store_tenant(st, b->tenant, true);
    struct pb sv = { m + sv_off, m + tn_off };
    uint64_t ns;
    if (t && !pb_varint(&sv, &ns)) {
        for (uint64_t i = 0; i < ns; i++) {
            uint64_t sl, no;
            if (pb_varint(&sv, &sl) || sl > (uint64_t)(sv.end - sv.p))
                break;
            struct strv svc = strv_make((const char *)sv.p, sl);
            sv.p += sl;
            if (pb_varint(&sv, &no))
                break;
            for (uint64_t k = 0; k < no; k++) {
                uint64_t ol, kind, last;
                if (pb_varint(&sv, &ol) || ol > (uint64_t)(sv.end - sv.p))
                    goto done;
                struct strv op = strv_make((const char *)sv.p, ol);
                sv.p += ol;
                if (pb_varint(&sv, &kind) || pb_varint(&sv, &last))
                    goto done;
                note_op(t, svc, op, (uint32_t)kind, (int64_t)last);
            }
        }
    }
done:
    *out = b;
    return 0;
}

static int add_block(struct tr_store *st, struct tr_block *b)
{
    if (st->nblocks == st->cap_blocks) {
        size_t nc = st->cap_blocks ? st->cap_blocks * 2 : 16;
        struct tr_block **nb = realloc(st->blocks, nc * sizeof(*nb));
        if (!nb)
            return -ENOMEM;
        st->blocks = nb;
        st->cap_blocks = nc;
    }
    st->blocks[st->nblocks++] = b;
    return 0;
}

static void remove_block(struct tr_store *st, struct tr_block *b)
{
    for (size_t i = 0; i < st->nblocks; i++)
        if (st->blocks[i] == b) {
            memmove(&st->blocks[i], &st->blocks[i + 1], (st->nblocks - i - 1) * sizeof(*st->blocks));
            st->nblocks--;
            break;
        }
    unlink(b->path);
    block_free(b);
}

/* A page's raw bytes (decompressed into out). */
static int page_read(const struct tr_block *b, uint32_t pg, struct buf *out)
{
    const uint8_t *e = b->pages + (size_t)pg * TR_PG;
    uint64_t off = get_u64(e);
    uint32_t cl = get_u32(e + 8), rl = get_u32(e + 12);
    buf_reset(out);
    if (buf_reserve(out, rl))
        return -ENOMEM;
    size_t n = ZSTD_decompress(buf_tail(out), rl, b->map + off, cl);
    if (ZSTD_isError(n) || n != rl)
        return -EIO;
    buf_commit(out, rl);
    return 0;
}

static int cmp_head(const void *a, const void *b)
{
    const struct tr_head_trace *x = *(struct tr_head_trace *const *)a, *y = *(struct tr_head_trace *const *)b;
    return memcmp(x->id, y->id, 16);
}

/* Writes the tenant's complete traces (all: every one) into a block. */
static int flush_tenant(struct tr_store *st, struct tr_tenant *t, bool all, uint64_t now)
{
    struct tr_head_trace **list = NULL;
    size_t n = 0;
    if (t->head.n && !(list = malloc(t->head.n * sizeof(*list))))
        return -ENOMEM;
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&t->head, &it, &slot);) {
        struct tr_head_trace *h = slot->value;
        if (all || now - h->last_ms >= st->conf->trace_idle_ms)
            list[n++] = h;
    }
    if (!n) {
        free(list);
        return 0;
    }
    qsort(list, n, sizeof(*list), cmp_head);
    struct bw w;
    uint32_t seq = st->next_seq++;
    int r = bw_open(st, &w, seq);
    if (r) {
        bw_discard(&w);
        free(list);
        return r;
    }
    for (size_t i = 0; i < n; i++)
        bw_add(&w, list[i]->id, (const uint8_t *)buf_head(&list[i]->data), buf_used(&list[i]->data));
    struct tr_block *b = NULL;
    r = bw_finish(st, &w, t->name, 0, seq, &b);
    if (!r && (r = add_block(st, b)))
        block_free(b);
    if (!r) {
        /* the WAL learns they are in a block, so a replay leaves them out */
        struct buf m = BUF_INIT;
        size_t at;
        rec_begin(&m, t->name, &at, 2);
        for (size_t i = 0; i < n; i++)
            buf_append(&m, list[i]->id, 16);
        rec_end(&m, at);
        if (wal_write(st, &m))
            log_error("traces: cannot note a flush in the WAL; a restart would read those traces twice");
        buf_free(&m);
        for (size_t i = 0; i < n; i++)
            head_drop(st, t, list[i]);
        st->flushes++;
    }
    free(list);
    return r;
}

static int flush(struct tr_store *st, bool all)
{
    uint64_t now = cairn_now_ms();
    int r = 0, any = 0;
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);) {
        size_t before = st->nblocks;
        int e = flush_tenant(st, slot->value, all, now);
        if (e) {
            r = e;
            break;
        }
        any |= st->nblocks != before;
    }
    if (r) {
        st->flush_errors++;
        if (r != st->last_flush_error)
            log_error("traces: cannot write a block; the traces stay in memory and in the WAL", "dir", st->dir,
                      "error", cairn_strerror(r));
        st->last_flush_error = r;
        return r;
    }
    st->last_flush_error = 0;
    if (any && (r = wal_gc(st)))
        log_error("traces: cannot clean the WAL", "error", cairn_strerror(r));
    return r;
}

/* ---- compaction and retention ---- */

struct cursor {
    struct tr_block *b;
    uint32_t i, page;
    struct buf raw;
    bool loaded;
};

static const uint8_t *cur_id(struct cursor *c)
{
    return c->i < c->b->ntraces ? c->b->index + (size_t)c->i * TR_IDX : NULL;
}

static int cur_bytes(struct cursor *c, const uint8_t **p, size_t *n)
{
    const uint8_t *e = c->b->index + (size_t)c->i * TR_IDX;
    uint32_t pg = get_u32(e + 16);
    if (!c->loaded || c->page != pg) {
        if (page_read(c->b, pg, &c->raw))
            return -EIO;
        c->page = pg;
        c->loaded = true;
    }
    *p = (const uint8_t *)buf_head(&c->raw) + get_u32(e + 20);
    *n = get_u32(e + 24);
    return 0;
}

static int compact_group(struct tr_store *st, struct tr_block **grp, size_t ng, uint32_t level)
{
    struct cursor *cs = calloc(ng, sizeof(*cs));
    if (!cs)
        return -ENOMEM;
    for (size_t i = 0; i < ng; i++)
        cs[i].b = grp[i];
    struct bw w;
    uint32_t seq = st->next_seq++;
    int r = bw_open(st, &w, seq);
    struct buf joined = BUF_INIT;
    while (!r) {
        const uint8_t *min = NULL;
        for (size_t i = 0; i < ng; i++) {
            const uint8_t *id = cur_id(&cs[i]);
            if (id && (!min || memcmp(id, min, 16) < 0))
                min = id;
        }
        if (!min)
            break;
        uint8_t id[16];
        memcpy(id, min, 16);
        buf_reset(&joined);
        for (size_t i = 0; i < ng && !r; i++) {
            const uint8_t *cid = cur_id(&cs[i]);
            if (!cid || memcmp(cid, id, 16))
                continue;
            const uint8_t *p;
            size_t n;
            if ((r = cur_bytes(&cs[i], &p, &n)))
                break;
            buf_append(&joined, p, n);
            cs[i].i++;
        }
        if (!r)
            bw_add(&w, id, (const uint8_t *)buf_head(&joined), buf_used(&joined));
    }
    buf_free(&joined);
    for (size_t i = 0; i < ng; i++)
        buf_free(&cs[i].raw);
    free(cs);
    struct tr_block *b = NULL;
    if (r) {
        bw_discard(&w);
        return r;
    }
    if ((r = bw_finish(st, &w, grp[0]->tenant, level, seq, &b)))
        return r;
    if ((r = add_block(st, b))) {
        unlink(b->path);
        block_free(b);
        return r;
    }
    for (size_t i = 0; i < ng; i++)
        remove_block(st, grp[i]);
    st->compactions++;
    return 0;
}

static void compact(struct tr_store *st)
{
    for (uint32_t level = 0; level < 4; level++) {
        for (size_t i = 0; i < st->nblocks; i++) {
            struct tr_block *grp[TR_COMPACT_FAN];
            size_t ng = 0;
            uint64_t bytes = 0;
            const char *tenant = st->blocks[i]->tenant;
            for (size_t j = 0; j < st->nblocks && ng < TR_COMPACT_FAN; j++) {
                struct tr_block *b = st->blocks[j];
                if (b->level == level && !strcmp(b->tenant, tenant)) {
                    grp[ng++] = b;
                    bytes += b->size;
                }
            }
            if (ng < TR_COMPACT_FAN || bytes > TR_COMPACT_MAX_BYTES)
                continue;
            int r = compact_group(st, grp, ng, level + 1);
            if (r)
                log_error("traces: compaction failed", "error", cairn_strerror(r));
            return;                         /* one group per tick */
        }
    }
}

static void retention(struct tr_store *st)
{
    if (!st->conf->retention_ms)
        return;
    int64_t cut = wall_ns() - (int64_t)st->conf->retention_ms * 1000000;
    for (size_t i = 0; i < st->nblocks;) {
        struct tr_block *b = st->blocks[i];
        if (b->max_end < cut) {
            log_info("traces: block past retention removed", "file", b->path);
            remove_block(st, b);
        } else {
            i++;
        }
    }
}

void tr_store_tick(struct tr_store *st, bool all)
{
    const struct traces_conf *c = st->conf;
    uint64_t now = cairn_now_ms();
    uint64_t complete = 0, oldest = 0;
    const struct hmap_slot *ts, *hs;
    for (size_t it = 0; !all && hmap_next(&st->tenants, &it, &ts);) {
        struct tr_tenant *t = ts->value;
        for (size_t j = 0; hmap_next(&t->head, &j, &hs);) {
            struct tr_head_trace *h = hs->value;
            if (now - h->last_ms >= c->trace_idle_ms) {
                complete += buf_used(&h->data);
                uint64_t waited = now - h->last_ms - c->trace_idle_ms;
                if (waited > oldest)
                    oldest = waited;
            }
        }
    }
    if (all || (complete && (complete >= c->max_block_bytes || oldest >= c->max_block_duration_ms)))
        flush(st, all);
    if (!all) {
        compact(st);
        retention(st);
    }
}

/* ---- reading ---- */

static int find_in_block(const struct tr_block *b, const uint8_t id[16])
{
    uint32_t lo = 0, hi = b->ntraces;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = memcmp(b->index + (size_t)mid * TR_IDX, id, 16);
        if (!c)
            return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int tr_store_get(struct tr_store *st, const char *tenant, const uint8_t id[16], struct buf *out)
{
    int parts = 0;
    struct buf raw = BUF_INIT;
    for (size_t i = 0; i < st->nblocks; i++) {
        const struct tr_block *b = st->blocks[i];
        if (strcmp(b->tenant, tenant))
            continue;
        int k = find_in_block(b, id);
        if (k < 0)
            continue;
        const uint8_t *e = b->index + (size_t)k * TR_IDX;
        if (page_read(b, get_u32(e + 16), &raw))
            continue;
        buf_append(out, buf_head(&raw) + get_u32(e + 20), get_u32(e + 24));
        parts++;
    }
    buf_free(&raw);
    struct tr_tenant *t = tr_store_tenant(st, tenant, false);
    struct tr_head_trace *h = t ? hmap_get(&t->head, id, 16) : NULL;
    if (h) {
        buf_append(out, buf_head(&h->data), buf_used(&h->data));
        parts++;
    }
    return parts;
}

int tr_store_parts(struct tr_store *st, const char *tenant, const uint8_t id[16])
{
    int parts = 0;
    for (size_t i = 0; i < st->nblocks; i++)
        if (!strcmp(st->blocks[i]->tenant, tenant) && find_in_block(st->blocks[i], id) >= 0)
            parts++;
    struct tr_tenant *t = tr_store_tenant(st, tenant, false);
    return parts + (t && hmap_get(&t->head, id, 16) ? 1 : 0);
}

struct col_src {
    const struct tr_block *b;
    uint32_t pg;
    ZSTD_DCtx *dctx;                        /* one for the search: a context per frame costs more than the frame */
};

/* A page's search column or key column, decompressed. */
static int col_fetch(void *arg, int frame, uint64_t rel, uint32_t cl, uint32_t rl, struct buf *out)
{
    const struct col_src *src = arg;
    const uint8_t *dir = src->b->cols + (size_t)src->pg * TC_N * TR_COL;
    uint64_t off;
    if (frame < TC_N) {
        const uint8_t *ce = dir + (size_t)frame * TR_COL;
        off = get_u64(ce);
        cl = get_u32(ce + 8);
        rl = get_u32(ce + 12);
    } else {
        const uint8_t *last = dir + (TC_N - 1) * TR_COL;
        off = get_u64(last) + get_u32(last + 8) + rel;
        if (off > src->b->data_end || cl > src->b->data_end - off)
            return -EINVAL;
    }
    buf_reset(out);
    if (buf_reserve(out, rl ? rl : 1))
        return -ENOMEM;
    size_t n = src->dctx ? ZSTD_decompressDCtx(src->dctx, buf_tail(out), rl, src->b->map + off, cl)
                         : ZSTD_decompress(buf_tail(out), rl, src->b->map + off, cl);
    if (ZSTD_isError(n) || n != rl)
        return -EIO;
    buf_commit(out, rl);
    return 0;
}

int tr_store_search(struct tr_store *st, struct tr_search *q)
{
    struct tr_tenant *t = tr_store_tenant(st, q->tenant, false);
    const uint64_t *toks = q->tokens;
    int stop = 0;
    /* the head first: the newest traces */
    if (t) {
        const struct hmap_slot *slot;
        for (size_t it = 0; !stop && hmap_next(&t->head, &it, &slot);) {
            struct tr_head_trace *h = slot->value;
            if (h->end < q->from || h->start > q->to)
                continue;
            q->inspected_traces++;
            q->inspected_bytes += buf_used(&h->data);
            stop = q->fn(q->arg, h->id, (const uint8_t *)buf_head(&h->data), buf_used(&h->data));
        }
    }
    struct buf raw = BUF_INIT;
    struct tc_page pc = { 0 };
    struct tr_trace_view lv = { 0 };
    ZSTD_DCtx *dctx = q->match ? ZSTD_createDCtx() : NULL;
    /* newest blocks first */
    for (size_t bi = st->nblocks; !stop && bi-- > 0;) {
        const struct tr_block *b = st->blocks[bi];
        if (strcmp(b->tenant, q->tenant) || b->max_end < q->from || b->min_start > q->to)
            continue;
        for (uint32_t pg = 0; !stop && pg < b->npages; pg++) {
            const uint8_t *e = b->pages + (size_t)pg * TR_PG;
            if ((int64_t)get_u64(e + 24) < q->from || (int64_t)get_u64(e + 16) > q->to)
                continue;
            const uint8_t *bits = b->blooms + get_u64(e + 32);
            uint32_t nbits = get_u32(e + 40);
            bool pass = true;
            for (size_t k = 0; pass && k < q->ntokens; k++)
                pass = bloom_test(bits, nbits, toks[k]);
            if (!pass)
                continue;
            if (q->deadline_ms && cairn_now_ms() > q->deadline_ms) {
                q->timed_out = true;
                stop = 1;
                break;
            }
            uint32_t first = get_u32(e + 44);
            struct col_src src = { b, pg, dctx };
            uint32_t ntr = (pg + 1 < b->npages ? get_u32(e + TR_PG + 44) : b->ntraces) - first;
            bool cols = b->cols && q->match && !tc_page_load(&pc, col_fetch, &src) && pc.ntraces == ntr;
            bool loaded = false;
            for (uint32_t i = first; !stop && i < b->ntraces; i++) {
                const uint8_t *x = b->index + (size_t)i * TR_IDX;
                if (get_u32(x + 16) != pg)
                    break;
                if ((int64_t)get_u64(x + 40) < q->from || (int64_t)get_u64(x + 32) > q->to)
                    continue;
                q->inspected_traces++;
                if (cols && !tc_page_view(&pc, i - first, &lv)) {
                    memcpy(lv.id, x, 16);
                    /* attribute columns that cannot be read leave the judgement to fn */
                    if (!q->match(q->arg, &lv) && !pc.attrs_bad) {
                        q->skipped_traces++;
                        continue;
                    }
                }
                if (!loaded) {
                    if (page_read(b, pg, &raw))
                        break;
                    q->inspected_bytes += buf_used(&raw);
                    loaded = true;
                }
                stop = q->fn(q->arg, x, (const uint8_t *)buf_head(&raw) + get_u32(x + 20), get_u32(x + 24));
            }
            q->inspected_bytes += pc.bytes;
            tc_page_free(&pc);
        }
    }
    tr_view_free(&lv);
    ZSTD_freeDCtx(dctx);
    buf_free(&raw);
    st->search_skipped += q->skipped_traces;
    return 0;
}

/* ---- open and close ---- */

int tr_store_open(struct tr_store *st, const char *dir, const struct traces_conf *conf, char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    st->wal_fd = -1;
    st->conf = conf;
    st->next_seq = 1;
    if (!(st->dir = strdup(dir)))
        return -ENOMEM;
    char path[600];
    int r;
    snprintf(path, sizeof(path), "%s/blocks", dir);
    if ((r = cairn_mkdir_p(path, 0755))) {
        snprintf(err, errlen, "cannot create %s: %s", path, cairn_strerror(r));
        return r;
    }
    snprintf(path, sizeof(path), "%s/wal", dir);
    if ((r = cairn_mkdir_p(path, 0755))) {
        snprintf(err, errlen, "cannot create %s: %s", path, cairn_strerror(r));
        return r;
    }
    uint32_t *seqs;
    size_t n;
    snprintf(path, sizeof(path), "%s/blocks", dir);
    if ((r = cairn_list_numbered(path, ".ctb", &seqs, &n))) {
        snprintf(err, errlen, "cannot list %s: %s", path, cairn_strerror(r));
        return r;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/blocks/%08u.ctb", dir, seqs[i]);
        struct tr_block *b;
        if ((r = load_block(st, path, seqs[i], &b))) {
            log_error("traces: unreadable block left aside", "file", path, "error", cairn_strerror(r));
            char bad[620];
            snprintf(bad, sizeof(bad), "%s.bad", path);
            rename(path, bad);
            continue;
        }
        if (add_block(st, b)) {
            block_free(b);
            free(seqs);
            return -ENOMEM;
        }
        if (seqs[i] >= st->next_seq)
            st->next_seq = seqs[i] + 1;
    }
    free(seqs);
    /* leftovers of an interrupted block write */
    snprintf(path, sizeof(path), "%s/blocks", dir);
    uint32_t *tmps;
    if (!cairn_list_numbered(path, ".ctb.tmp", &tmps, &n)) {
        for (size_t i = 0; i < n; i++) {
            snprintf(path, sizeof(path), "%s/blocks/%08u.ctb.tmp", dir, tmps[i]);
            unlink(path);
            if (tmps[i] >= st->next_seq)
                st->next_seq = tmps[i] + 1;
        }
        free(tmps);
    }
    snprintf(path, sizeof(path), "%s/wal", dir);
    if ((r = cairn_list_numbered(path, ".wal", &seqs, &n))) {
        snprintf(err, errlen, "cannot list %s: %s", path, cairn_strerror(r));
        return r;
    }
    uint64_t records = 0;
    for (size_t i = 0; i < n; i++)
        if ((r = replay_wal(st, seqs[i], &records))) {
            snprintf(err, errlen, "cannot replay WAL segment %08u: %s", seqs[i], cairn_strerror(r));
            free(seqs);
            return r;
        }
    uint32_t first = n ? seqs[0] : 1, last = n ? seqs[n - 1] : 1;
    free(seqs);
    if (records)
        log_info("traces: WAL replayed", "records", log_int((long long)records), "traces",
                 log_int((long long)st->head_traces), "spans", log_int((long long)st->head_spans));
    /* appends go on in the newest segment; the older ones go once nothing needs them */
    uint64_t total = st->wal_total;
    if ((r = wal_open(st, last, false))) {
        snprintf(err, errlen, "cannot open the WAL: %s", cairn_strerror(r));
        return r;
    }
    st->wal_total = total;
    st->wal_oldest = first;
    if ((r = wal_gc(st))) {
        snprintf(err, errlen, "cannot clean the WAL: %s", cairn_strerror(r));
        return r;
    }
    return 0;
}

void tr_store_close(struct tr_store *st)
{
    for (size_t i = 0; i < st->nblocks; i++)
        block_free(st->blocks[i]);
    free(st->blocks);
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);)
        tenant_free(slot->value);
    hmap_free(&st->tenants);
    if (st->wal_fd >= 0)
        close(st->wal_fd);
    free(st->dir);
    memset(st, 0, sizeof(*st));
    st->wal_fd = -1;
}
