/* edge_cache.c - an RFC 9111 shared cache in memory with S3-FIFO eviction.
 *
 * Each cached route has a store: a hash table of objects under one mutex (lookups
 * and inserts are short; bodies are immutable once stored and reference-counted,
 * so serving one never holds the lock). Objects are keyed by host and request
 * target; Vary'ing responses are kept as separate objects carrying the request
 * field values they were selected by.
 *
 * Eviction is S3-FIFO (Yang et al., SOSP 2023): new objects enter a small FIFO
 * (10% of the budget); an object accessed again before it leaves it moves to the
 * main FIFO, others leave and are remembered in a ghost table, so that a quick
 * return goes straight to main. The main FIFO gives objects with recent hits
 * another round. One-hit wonders (scans) thus never push out the working set,
 * which plain LRU lets them do.
 *
 * The cache's other parts: edge_cache_directives.c (Cache-Control and the other
 * fields' grammar), edge_cache_share.c (coalescing concurrent misses and sharing a
 * response while it is stored), edge_cache_disk.c (the disk tier);
 * edge_cache_internal.h joins them.
 */
#include "edge_cache_internal.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <brotli/encode.h>
#include <zlib.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- store ---- */

struct edge_cache_store *edge_cache_store_new(const char *label, uint64_t budget, uint64_t max_object,
                                    double heuristic, bool compress, struct metrics_registry *reg)
{
    struct edge_cache_store *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return NULL;
    snprintf(cs->label, sizeof(cs->label), "%s", label);
    pthread_mutex_init(&cs->lock, NULL);
    cs->budget = budget;
    cs->max_object = max_object;
    cs->heuristic = heuristic;
    cs->compress = compress;
    static const char *const l[] = { "cache", NULL };
    struct metric_family *f = metrics_family(reg, METRIC_COUNTER, "edge_cache_evictions_total",
                                             "Objects evicted to stay within the memory budget.", l,
                                             NULL, 0);
    cs->m_evictions = f ? metrics_get1(f, label) : NULL;
    return cs;
}

const char *edge_cache_store_label(const struct edge_cache_store *cs)
{
    return cs->label;
}

void edge_cache_store_resize(struct edge_cache_store *cs, uint64_t budget, uint64_t max_object, double heuristic,
                        bool compress)
{
    pthread_mutex_lock(&cs->lock);
    cs->compress = compress;
    cs->budget = budget;
    cs->max_object = max_object;
    cs->heuristic = heuristic;
    pthread_mutex_unlock(&cs->lock);
}

/* A compressed variant of an object's body, made once and kept with it. */
struct zvar {
    size_t len;
    char data[];
};

void edge_cache__obj_free(struct edge_cache_obj *o)
{
    free(o->gz);
    free(o->br);
    free(o->key);
    free(o->vary);
    free(o->vary_vals);
    free(o->hdrs);
    free(o->body);
    free(o->etag);
    free(o->last_modified);
    free(o->tags);
    free(o);
}

void edge_cache_obj_get(struct edge_cache_obj *o)
{
    __atomic_add_fetch(&o->refs, 1, __ATOMIC_RELAXED);
}

void edge_cache_obj_put(struct edge_cache_obj *o)
{
    if (o && __atomic_sub_fetch(&o->refs, 1, __ATOMIC_ACQ_REL) == 0)
        edge_cache__obj_free(o);
}

static void fifo_unlink(struct edge_cache_store *cs, struct edge_cache_obj *o)
{
    struct fifo *f = &cs->q[o->q];
    if (o->qprev)
        o->qprev->qnext = o->qnext;
    else
        f->head = o->qnext;
    if (o->qnext)
        o->qnext->qprev = o->qprev;
    else
        f->tail = o->qprev;
    o->qnext = o->qprev = NULL;
    f->bytes -= o->size;
}

static void fifo_push(struct edge_cache_store *cs, struct edge_cache_obj *o, int q)
{
    struct fifo *f = &cs->q[q];
    o->q = q;
    o->qprev = NULL;
    o->qnext = f->head;
    if (f->head)
        f->head->qprev = o;
    else
        f->tail = o;
    f->head = o;
    f->bytes += o->size;
}

/* Removes o from the table and its FIFO and drops the store's reference. */
static void unlink_obj(struct edge_cache_store *cs, struct edge_cache_obj *o)
{
    if (!o->linked)
        return;
    struct edge_cache_obj **pp = &cs->buckets[o->h % BUCKETS];
    while (*pp && *pp != o)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = o->hnext;
    fifo_unlink(cs, o);
    o->linked = false;
    cs->used -= o->size;
    cs->count--;
    edge_cache_obj_put(o);
}

static void evict(struct edge_cache_store *cs)
{
    while (cs->used > cs->budget && (cs->q[Q_SMALL].tail || cs->q[Q_MAIN].tail)) {
        bool from_small = cs->q[Q_SMALL].tail &&
                          (cs->q[Q_SMALL].bytes > cs->budget / 10 || !cs->q[Q_MAIN].tail);
        struct edge_cache_obj *o = from_small ? cs->q[Q_SMALL].tail : cs->q[Q_MAIN].tail;
        if (from_small) {
            fifo_unlink(cs, o);
            if (o->freq > 0) {
                o->freq = 0;
                fifo_push(cs, o, Q_MAIN);
                continue;
            }
            fifo_push(cs, o, Q_SMALL);  /* unlink_obj expects it queued */
            cs->ghost[o->h % GHOSTS] = o->h;
        } else if (o->freq > 0) {
            o->freq--;
            fifo_unlink(cs, o);
            fifo_push(cs, o, Q_MAIN);
            continue;
        }
        unlink_obj(cs, o);
        metric_inc(cs->m_evictions);
    }
}


void edge_cache_store_free(struct edge_cache_store *cs)
{
    if (!cs)
        return;
    edge_cache__disk_index_free(cs);
    free(cs->disk_dir);
    while (cs->fills) {
        struct inflight *f = cs->fills;
        cs->fills = f->next;
        free(f->key);
        free(f);
    }
    for (size_t b = 0; b < BUCKETS; b++)
        while (cs->buckets[b])
            unlink_obj(cs, cs->buckets[b]);
    pthread_mutex_destroy(&cs->lock);
    free(cs);
}

uint64_t edge_cache__key_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

size_t edge_cache_key(const struct httpd_req *r, char *out, size_t outlen)
{
    struct strv host = r->h.host, t = r->h.target;
    if (host.n + t.n + 2 > outlen)
        return 0;
    size_t o = 0;
    for (size_t i = 0; i < host.n; i++) {
        char c = host.p[i];
        out[o++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    if (o && out[o - 1] == '.')
        o--;    /* "example.com." and "example.com" are one host */
    out[o++] = '\n';
    memcpy(out + o, t.p, t.n);
    o += t.n;
    out[o] = '\0';
    return o;
}

/* The request's values for a Vary list, '\n'-joined (absent = "\x01"). */
char *edge_cache__vary_values(const struct httpd_req *r, const char *vary)
{
    struct buf b = BUF_INIT;
    const char *p = vary;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ')
            p++;
        if (p == s)
            continue;
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)MIN((size_t)(p - s), sizeof(name) - 1), s);
        /* all fields of that name, combined (RFC 9110 5.3); the values of the
         * Accept-* fields whose tokens are case-insensitive (language tags,
         * content codings, charsets) are compared without case (RFC 9111 4.1) */
        bool fold = strcmp(name, "accept-language") == 0 || strcmp(name, "accept-encoding") == 0 ||
                    strcmp(name, "accept-charset") == 0;    /* names are stored lower-cased */
        bool any = false;
        for (size_t i = 0; i < r->h.nheaders; i++) {
            if (!strv_caseeq_cstr(r->h.headers[i].name, name))
                continue;
            if (any)
                buf_putc(&b, ',');
            struct strv v = strv_trim(r->h.headers[i].value);
            /* "a, b", " a ,b" and two fields "a" and "b" select the same variant:
             * list elements are trimmed and joined with "," */
            bool first = true;
            const char *q = v.p, *qe = v.p + v.n;
            while (q <= qe) {
                const char *c = memchr(q, ',', (size_t)(qe - q));
                const char *ee = c ? c : qe;
                struct strv el = strv_trim(strv_make(q, (size_t)(ee - q)));
                if (!first)
                    buf_putc(&b, ',');
                if (!fold)
                    buf_append(&b, el.p, el.n);
                for (size_t k = 0; fold && k < el.n; k++) {
                    char ch = el.p[k];
                    buf_putc(&b, ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch);
                }
                first = false;
                if (!c)
                    break;
                q = c + 1;
            }
            any = true;
        }
        if (!any)
            buf_putc(&b, '\x01');
        buf_putc(&b, '\n');
    }
    return buf_steal(&b);
}


struct edge_cache_obj *edge_cache_lookup(struct edge_cache_store *cs, const char *key, size_t keylen,
                          const struct httpd_req *r)
{
    uint64_t h = edge_cache__key_hash(key, keylen);
    struct edge_cache_obj *found = NULL;
    pthread_mutex_lock(&cs->lock);
    for (struct edge_cache_obj *o = cs->buckets[h % BUCKETS]; o; o = o->hnext) {
        if (o->h != h || o->keylen != keylen || memcmp(o->key, key, keylen) != 0)
            continue;
        if (o->vary) {
            char *vals = edge_cache__vary_values(r, o->vary);
            bool match = vals && strcmp(vals, o->vary_vals) == 0;
            free(vals);
            if (!match)
                continue;
        }
        found = o;
        break;
    }
    if (found) {
        if (found->freq < 3)
            found->freq++;
        __atomic_add_fetch(&found->refs, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&cs->lock);
    if (!found && cs->disk_dir)
        found = edge_cache__disk_lookup(cs, key, keylen, r, h);
    return found;
}

static int64_t current_age(const struct edge_cache_obj *o, time_t now)
{
    int64_t resident = now > o->response_time ? (int64_t)(now - o->response_time) : 0;
    return o->initial_age + resident;
}

bool edge_cache_obj_fresh(const struct edge_cache_obj *o, const struct edge_cache_cc *rc, time_t now)
{
    if (o->no_cache || (rc && rc->no_cache))
        return false;
    int64_t age = current_age(o, now);
    int64_t lifetime = o->lifetime;
    if (rc && rc->max_age >= 0 && age > rc->max_age)
        return false;
    if (rc && rc->min_fresh >= 0 && lifetime - age < rc->min_fresh)
        return false;
    if (age < lifetime)
        return true;
    /* max-stale lets a client accept stale content, unless the origin forbade it */
    if (rc && rc->max_stale >= 0 && !o->must_revalidate && age - lifetime <= rc->max_stale)
        return true;
    return false;
}

bool edge_cache_obj_usable_on_error(const struct edge_cache_obj *o, int64_t grace_s, time_t now)
{
    if (o->must_revalidate)
        return false;
    int64_t stale_for = current_age(o, now) - o->lifetime;
    return stale_for <= MAX(o->sie, grace_s);
}

bool edge_cache_obj_stale_while_revalidate(const struct edge_cache_obj *o, time_t now)
{
    if (o->swr < 0 || o->must_revalidate || o->no_cache)
        return false;
    int64_t stale_for = current_age(o, now) - o->lifetime;
    return stale_for >= 0 && stale_for <= o->swr;
}

bool edge_cache_obj_claim_refresh(struct edge_cache_obj *o)
{
    return __atomic_exchange_n(&o->refreshing, 1, __ATOMIC_ACQ_REL) == 0;
}

void edge_cache_obj_release_refresh(struct edge_cache_obj *o)
{
    __atomic_store_n(&o->refreshing, 0, __ATOMIC_RELEASE);
}

const char *edge_cache_obj_key(const struct edge_cache_obj *o, size_t *len)
{
    *len = o->keylen;
    return o->key;
}

size_t edge_cache_obj_body_len(const struct edge_cache_obj *o)
{
    return o->body_len;
}

bool edge_cache_obj_has_validators(const struct edge_cache_obj *o)
{
    return o->etag || o->last_modified;
}

void edge_cache_obj_conditional_headers(const struct edge_cache_obj *o, struct buf *b)
{
    if (o->etag) {
        buf_puts(b, "If-None-Match: ");
        buf_puts(b, o->etag);
        buf_puts(b, "\r\n");
    }
    if (o->last_modified) {
        buf_puts(b, "If-Modified-Since: ");
        buf_puts(b, o->last_modified);
        buf_puts(b, "\r\n");
    }
}

/* Weak comparison of an If-None-Match list with an entity tag. */
static bool inm_matches(struct strv inm, const char *etag)
{
    if (http_etag_list_matches(inm, etag))
        return true;
    /* our compressed variants' tags: "tag-gzip", "tag-br" */
    struct strv e = strv_cstr(etag), t;
    if (e.n >= 2 && e.p[0] == 'W' && e.p[1] == '/') {
        e.p += 2;
        e.n -= 2;
    }
    while (e.n >= 2 && http_etag_next(&inm, &t)) {
        if (t.n <= e.n || memcmp(t.p, e.p, e.n - 1) != 0 || t.p[t.n - 1] != '"')
            continue;
        struct strv suffix = strv_make(t.p + e.n - 1, t.n - e.n);
        if (strv_eq_cstr(suffix, "-gzip") || strv_eq_cstr(suffix, "-br"))
            return true;
    }
    return false;
}

/* Compressible media types: text, and the usual structured text formats. */
static bool compressible_type(struct strv ct)
{
    static const char *const types[] = { "application/json", "application/javascript",
                                         "application/xml", "application/xhtml+xml",
                                         "application/rss+xml", "application/atom+xml",
                                         "application/manifest+json", "image/svg+xml",
                                         "application/wasm" };
    if (strv_has_prefix(ct, "text/"))
        return true;
    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
        if (ct.n >= strlen(types[i]) && strncasecmp(ct.p, types[i], strlen(types[i])) == 0)
            return true;
    return false;
}

static struct zvar *make_gzip(const char *in, size_t n)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, n);
    struct zvar *v = malloc(sizeof(*v) + cap);
    if (!v) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)v->data;
    z.avail_out = (uInt)cap;
    int r = deflate(&z, Z_FINISH);
    v->len = z.total_out;
    deflateEnd(&z);
    if (r != Z_STREAM_END) {
        free(v);
        return NULL;
    }
    return v;
}

static struct zvar *make_brotli(const char *in, size_t n)
{
    size_t cap = BrotliEncoderMaxCompressedSize(n);
    struct zvar *v = cap ? malloc(sizeof(*v) + cap) : NULL;
    if (!v)
        return NULL;
    v->len = cap;
    if (!BrotliEncoderCompress(5, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, n, (const uint8_t *)in,
                               &v->len, (uint8_t *)v->data)) {
        free(v);
        return NULL;
    }
    return v;
}

/* q-value of a coding in Accept-Encoding (0 when absent or refused). */
static double accept_q(struct strv ae, const char *coding)
{
    size_t cl = strlen(coding);
    const char *p = ae.p, *end = ae.p + ae.n;
    double star = 0;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        const char *s = p;
        while (p < end && *p != ',' && *p != ';' && *p != ' ')
            p++;
        size_t l = (size_t)(p - s);
        double q = 1;
        while (p < end && *p != ',') {
            if (*p == 'q' && p + 1 < end && p[1] == '=')
                q = strtod(p + 2, NULL);
            p++;
        }
        if (l == cl && strncasecmp(s, coding, cl) == 0)
            return q;
        if (l == 1 && *s == '*')
            star = q;
    }
    return star;
}

/* The variant to send for r's Accept-Encoding, made on first use; NULL for the
 * identity body. Sets *coding. Made outside any lock: two threads may both
 * compress once, and the loser frees its copy. */
static const struct zvar *variant_for(struct edge_cache_obj *o, const struct httpd_req *r, const char **coding)
{
    const struct http_header *ae = httpd_req_header((struct httpd_req *)r, "accept-encoding");
    if (!o->compressible || !ae)
        return NULL;
    double qb = accept_q(ae->value, "br"), qg = accept_q(ae->value, "gzip");
    struct zvar **slot;
    bool br = qb > 0 && qb >= qg;
    if (br)
        slot = &o->br;
    else if (qg > 0)
        slot = &o->gz;
    else
        return NULL;
    struct zvar *v = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!v) {
        struct zvar *made = br ? make_brotli(o->body, o->body_len) : make_gzip(o->body, o->body_len);
        if (!made)
            return NULL;
        struct zvar *expected = NULL;
        if (__atomic_compare_exchange_n(slot, &expected, made, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            v = made;
        } else {
            free(made);
            v = expected;
        }
    }
    if (v->len >= o->body_len)
        return NULL;    /* it did not get smaller */
    *coding = br ? "br" : "gzip";
    return v;
}

static void release_obj(void *arg)
{
    edge_cache_obj_put(arg);
}

/* A single byte range of the request that applies to o (RFC 9110 14.1-14.2).
 * Returns 1 with [from, to], 0 for "send it all" (no Range, several ranges, a
 * Range we do not understand, or an If-Range that does not match), or -1 when
 * the range is unsatisfiable. */
static int range_of(const struct httpd_req *r, const struct edge_cache_obj *o, uint64_t *from, uint64_t *to)
{
    const struct http_header *rh = httpd_req_header((struct httpd_req *)r, "range");
    if (!rh)
        return 0;
    const struct http_header *ir = httpd_req_header((struct httpd_req *)r, "if-range");
    if (ir) {
        bool match = false;
        if (ir->value.n && ir->value.p[0] == '"')
            match = o->etag && strv_eq_cstr(ir->value, o->etag);    /* strong comparison */
        else if (o->last_modified)
            match = strv_eq_cstr(ir->value, o->last_modified);
        if (!match)
            return 0;
    }
    struct strv v = strv_trim(rh->value);
    if (!strv_has_prefix(v, "bytes=") || memchr(v.p, ',', v.n))
        return 0;
    v.p += 6;
    v.n -= 6;
    const char *dash = memchr(v.p, '-', v.n);
    if (!dash)
        return 0;
    struct strv a = strv_trim(strv_make(v.p, (size_t)(dash - v.p)));
    struct strv b = strv_trim(strv_make(dash + 1, (size_t)(v.p + v.n - dash - 1)));
    uint64_t len = o->body_len, x, y;
    if (!a.n) {
        /* suffix: the last y bytes */
        if (strv_to_u64(b, &y) || y == 0)
            return y == 0 && !strv_to_u64(b, &y) ? -1 : 0;
        if (!len)
            return -1;
        *from = y >= len ? 0 : len - y;
        *to = len - 1;
        return 1;
    }
    if (strv_to_u64(a, &x))
        return 0;
    if (b.n && (strv_to_u64(b, &y) || y < x))
        return 0;
    if (x >= len)
        return -1;
    *from = x;
    *to = b.n ? MIN(y, len - 1) : len - 1;
    return 1;
}

/* The stored fields of o, then Age, X-Cache and X-Request-Id; coding names the
 * content coding sent (NULL: identity). */
void edge_cache__serve_fields(struct httpd_req *r, const struct edge_cache_obj *o, bool not_modified, const char *coding,
                         const char *xcache, const char *request_id, time_t now)
{
    bool have_vary = false;
    const char *p = o->hdrs, *end = o->hdrs + o->hdrs_len;
    struct strv name, val;
    while (edge_cache__field_next(&p, end, &name, &val, NULL)) {
        /* a 304 carries only the fields that describe the representation */
        bool keep = !not_modified || strv_caseeq_cstr(name, "etag") || strv_caseeq_cstr(name, "cache-control") ||
                    strv_caseeq_cstr(name, "expires") || strv_caseeq_cstr(name, "vary") ||
                    strv_caseeq_cstr(name, "date") || strv_caseeq_cstr(name, "last-modified");
        if (keep && o->compressible && strv_caseeq_cstr(name, "vary")) {
            have_vary = true;
            httpd_headerf(r, "Vary", "%.*s, Accept-Encoding", (int)val.n, val.p);
        } else if (keep && coding && strv_caseeq_cstr(name, "etag") && val.n >= 2 && val.p[val.n - 1] == '"') {
            /* another representation, another entity tag */
            httpd_headerf(r, "ETag", "%.*s-%s\"", (int)val.n - 1, val.p, coding);
        } else if (keep) {
            httpd_header_strv(r, name, val);
        }
    }
    if (o->compressible && !have_vary)
        httpd_header(r, "Vary", "Accept-Encoding");
    if (coding)
        httpd_header(r, "Content-Encoding", coding);
    httpd_headerf(r, "Age", "%lld", (long long)current_age(o, now));
    httpd_header(r, "X-Cache", xcache);
    if (request_id)
        httpd_header(r, "X-Request-Id", request_id);
}

void edge_cache_serve(struct httpd_req *r, struct edge_cache_obj *o, const char *xcache, const char *request_id)
{
    time_t now = time(NULL);
    r->no_default_headers = true;
    /* the client's own conditional request (RFC 9111 4.3.2) */
    const struct http_header *inm = httpd_req_header(r, "if-none-match");
    const struct http_header *ims = httpd_req_header(r, "if-modified-since");
    bool not_modified = false;
    if (o->status == 200) {
        if (inm)
            not_modified = o->etag && inm_matches(inm->value, o->etag);
        else if (ims && o->last_modified) {
            time_t t1, t2;
            not_modified = http_date_parse(ims->value, &t1) == 0 &&
                           http_date_parse(strv_cstr(o->last_modified), &t2) == 0 && t2 <= t1;
        }
    }
    /* the representation to send: a compressed variant when the client takes one */
    const char *coding = NULL;
    const struct zvar *zv = NULL;
    uint64_t from = 0, to = 0;
    int rr = o->status == 200 && !not_modified ? range_of(r, o, &from, &to) : 0;
    if (!not_modified && rr == 0 && o->status == 200)
        zv = variant_for(o, r, &coding);
    edge_cache__serve_fields(r, o, not_modified, coding, xcache, request_id, now);
    if (not_modified) {
        httpd_respond(r, 304, NULL, NULL, 0);
        return;
    }
    if (zv) {
        edge_cache_obj_get(o);
        httpd_respond_ext(r, o->status, NULL, zv->data, zv->len, release_obj, o);
        return;
    }
    if (rr > 0) {
        httpd_headerf(r, "Content-Range", "bytes %llu-%llu/%zu", (unsigned long long)from,
                      (unsigned long long)to, o->body_len);
        httpd_respond(r, 206, NULL, o->body + from, (size_t)(to - from + 1));
        return;
    }
    if (rr < 0) {
        httpd_headerf(r, "Content-Range", "bytes */%zu", o->body_len);
        httpd_respond(r, 416, NULL, NULL, 0);
        return;
    }
    /* the body is sent from the object itself (headers and body in one sendmsg;
     * on this kernel that costs less CPU than sendfile from a memfd, which was
     * measured and dropped); the reference keeps it alive */
    edge_cache_obj_get(o);
    httpd_respond_ext(r, o->status, NULL, o->body, o->body_len, release_obj, o);
}

/* ---- storing ---- */

static bool heuristic_status(int s)
{
    /* RFC 9110 15.1: heuristically cacheable by default */
    return s == 200 || s == 203 || s == 204 || s == 300 || s == 301 || s == 308 || s == 404 ||
           s == 405 || s == 410 || s == 414 || s == 501;
}

static bool stored_field(struct strv name)
{
    static const char *const skip[] = { "connection", "keep-alive", "proxy-connection", "te",
                                        "transfer-encoding", "upgrade", "trailer", "content-length",
                                        "age", "x-cache", "x-request-id", "surrogate-control",
                                        "proxy-authenticate" };
    for (size_t i = 0; i < ARRAY_SIZE(skip); i++)
        if (strv_caseeq_cstr(name, skip[i]))
            return false;
    return true;
}

/* Cache-Control: no-transform forbids changing the content coding (RFC 9111 5.2.2.6). */
static bool cc_has_no_transform(const struct http_response *resp)
{
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strv_caseeq_cstr(resp->headers[i].name, "cache-control")) {
            struct strv v = resp->headers[i].value;
            for (size_t k = 0; k + 12 <= v.n; k++)
                if (strncasecmp(v.p + k, "no-transform", 12) == 0)
                    return true;
        }
    return false;
}

static char *dup_field(const struct http_header *h, size_t n, const char *name)
{
    const struct http_header *f = http_find_header(h, n, name);
    return f ? strv_dup(f->value) : NULL;
}

/* Surrogate-Control (W3C Edge Architecture 1.0), the directives meant for this
 * cache: untargeted ones and those targeted at SURROGATE_TOKEN. Sets *max_age
 * (-1: none) and returns whether no-store applies. A directive with spaces around
 * its "=" is ignored, as is one it does not know. */
static bool surrogate_control(const struct http_header *h, size_t n, int64_t *max_age)
{
    bool no_store = false;
    *max_age = -1;
    for (size_t i = 0; i < n; i++) {
        if (!strv_caseeq_cstr(h[i].name, "surrogate-control"))
            continue;
        const char *p = h[i].value.p, *end = p + h[i].value.n;
        while (p < end) {
            const char *c = memchr(p, ',', (size_t)(end - p));
            struct strv d = strv_trim(strv_make(p, (size_t)((c ? c : end) - p)));
            p = c ? c + 1 : end;
            const char *semi = memchr(d.p, ';', d.n);
            if (semi) {
                struct strv target = strv_trim(strv_make(semi + 1, (size_t)(d.p + d.n - semi - 1)));
                if (!strv_caseeq_cstr(target, SURROGATE_TOKEN))
                    continue;   /* meant for another device */
                d.n = (size_t)(semi - d.p);
            }
            const char *eq = memchr(d.p, '=', d.n);
            struct strv name = eq ? strv_make(d.p, (size_t)(eq - d.p)) : d;
            if (strv_caseeq_cstr(name, "no-store")) {
                no_store = true;
            } else if (eq && strv_caseeq_cstr(name, "max-age")) {
                /* max-age=N[+M]: N seconds fresh (M, for stale use, is not used) */
                struct strv v = strv_make(eq + 1, (size_t)(d.p + d.n - eq - 1));
                const char *plus = memchr(v.p, '+', v.n);
                if (plus)
                    v.n = (size_t)(plus - v.p);
                int64_t x = edge_cache__delta_seconds(v);
                if (x >= 0)
                    *max_age = x;
            }
        }
    }
    return no_store;
}

/* Freshness and age of a response received at response_time for a request sent
 * at request_time (RFC 9111 4.2.1 and 4.2.3); a Surrogate-Control max-age for
 * this cache (sc_max_age >= 0) takes the place of Cache-Control and Expires. */
static void compute_times(struct edge_cache_obj *o, const struct http_response *resp, const struct edge_cache_cc *cc,
                          int64_t sc_max_age, double heuristic, time_t request_time, time_t response_time)
{
    time_t date = response_time, t;
    const struct http_header *dh = http_find_header(resp->headers, resp->nheaders, "date");
    if (dh && http_date_parse(dh->value, &t) == 0)
        date = t;
    int64_t age_value = 0;
    const struct http_header *ah = http_find_header(resp->headers, resp->nheaders, "age");
    uint64_t av;
    if (ah && strv_to_u64(strv_trim(ah->value), &av) == 0)
        age_value = (int64_t)MIN(av, (uint64_t)2147483648ull);
    int64_t apparent = response_time > date ? (int64_t)(response_time - date) : 0;
    int64_t delay = response_time > request_time ? (int64_t)(response_time - request_time) : 0;
    int64_t corrected = age_value + delay;
    o->initial_age = MAX(apparent, corrected);
    o->response_time = response_time;
    if (cc->s_maxage >= 0) {
        o->lifetime = cc->s_maxage;
    } else if (cc->max_age >= 0) {
        o->lifetime = cc->max_age;
    } else {
        const struct http_header *eh = http_find_header(resp->headers, resp->nheaders, "expires");
        if (eh) {
            time_t exp;
            /* an invalid Expires (such as "0") means already expired */
            o->lifetime = http_date_parse(eh->value, &exp) == 0 && exp > date ? (int64_t)(exp - date) : 0;
        } else {
            const struct http_header *lm = http_find_header(resp->headers, resp->nheaders, "last-modified");
            time_t lmt;
            if (lm && heuristic_status(resp->status) && http_date_parse(lm->value, &lmt) == 0 && lmt < date)
                o->lifetime = (int64_t)((double)(date - lmt) * heuristic);
            else
                o->lifetime = 0;
        }
    }
    if (sc_max_age >= 0)
        o->lifetime = sc_max_age;
}

struct edge_cache_fill *edge_cache_fill_begin(struct edge_cache_store *cs, const char *key, size_t keylen,
                                    const struct httpd_req *r, const struct http_response *resp,
                                    time_t request_time)
{
    if (!cs || !strv_eq_cstr(r->h.method, "GET"))
        return NULL;
    struct edge_cache_cc rcc, cc;
    edge_cache_cc_parse(r->h.headers, r->h.nheaders, &rcc);
    edge_cache_cc_parse(resp->headers, resp->nheaders, &cc);
    /* must-understand: store only statuses whose caching rules we know, and then
     * no-store does not apply (RFC 9111 5.2.2.3) */
    static const int understood[] = { 200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410,
                                      414, 501 };
    bool known = false;
    for (size_t i = 0; i < ARRAY_SIZE(understood); i++)
        known |= resp->status == understood[i];
    if (cc.must_understand && !known)
        return NULL;
    int64_t sc_max_age;
    if (surrogate_control(resp->headers, resp->nheaders, &sc_max_age))
        return NULL;    /* Surrogate-Control: no-store */
    if (rcc.no_store || (cc.no_store && !(cc.must_understand && known)) || cc.private_)
        return NULL;
    if (resp->status == 206)
        return NULL;
    /* RFC 9111 3.5: a request with Authorization only with these */
    if (httpd_req_header((struct httpd_req *)r, "authorization") &&
        !(cc.public_ || cc.must_revalidate || cc.s_maxage >= 0))
        return NULL;
    /* all Vary fields, combined (a "*" in any of them: never reusable) */
    struct buf vb = BUF_INIT;
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
        if (!strv_caseeq_cstr(h->name, "vary"))
            continue;
        if (memchr(h->value.p, '*', h->value.n)) {
            buf_free(&vb);
            return NULL;
        }
        struct strv v = strv_trim(h->value);
        if (!v.n)
            continue;
        if (buf_used(&vb))
            buf_puts(&vb, ", ");
        buf_append(&vb, v.p, v.n);
    }
    struct http_header vary_comb = { STRV("vary"), buf_strv(&vb) };
    const struct http_header *vary = buf_used(&vb) ? &vary_comb : NULL;
    bool explicit = cc.max_age >= 0 || cc.s_maxage >= 0 || sc_max_age >= 0 ||
                    http_find_header(resp->headers, resp->nheaders, "expires");
    if ((!explicit && !cc.public_ && !cc.no_cache && !heuristic_status(resp->status)) ||
        (resp->content_length > 0 && (uint64_t)resp->content_length > cs->max_object)) {
        buf_free(&vb);
        return NULL;
    }
    struct edge_cache_fill *f = calloc(1, sizeof(*f));
    struct edge_cache_obj *o = calloc(1, sizeof(*o));
    if (!f || !o) {
        free(f);
        free(o);
        buf_free(&vb);
        return NULL;
    }
    f->cs = cs;
    f->o = o;
    o->refs = 1;
    o->cs = cs;
    o->key = malloc(keylen + 1);
    if (o->key) {
        memcpy(o->key, key, keylen);
        o->key[keylen] = '\0';
    }
    o->keylen = keylen;
    o->h = edge_cache__key_hash(key, keylen);
    o->status = resp->status;
    o->no_cache = cc.no_cache;
    o->must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage >= 0;
    o->swr = cc.stale_while_revalidate;
    o->sie = cc.stale_if_error;
    pthread_mutex_lock(&cs->lock);
    double heuristic = cs->heuristic;
    pthread_mutex_unlock(&cs->lock);
    compute_times(o, resp, &cc, sc_max_age, heuristic, request_time, time(NULL));
    if (vary) {
        char *v = strv_dup(vary->value);
        for (char *p = v; p && *p; p++)
            *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
        o->vary = v;
        o->vary_vals = v ? edge_cache__vary_values(r, v) : NULL;
    }
    buf_free(&vb);
    struct buf hb = BUF_INIT, tags = BUF_INIT;
    const struct http_header *conn = http_find_header(resp->headers, resp->nheaders, "connection");
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
        if (conn && h->name.n < 64) {
            /* fields named by Connection are hop-by-hop (RFC 9110 7.6.1) */
            char tok[64];
            for (size_t k = 0; k < h->name.n; k++)
                tok[k] = (char)((h->name.p[k] >= 'A' && h->name.p[k] <= 'Z') ? h->name.p[k] + 32 : h->name.p[k]);
            tok[h->name.n] = '\0';
            if (http_list_has_token(conn->value, tok))
                continue;
        }
        /* no-cache="f" / private="f": the response is reused without those fields
         * (RFC 9111 5.2.2.4 and 5.2.2.7) */
        if (h->name.n < 64 && (cc.no_cache_fields.n || cc.private_fields.n)) {
            char tok[64];
            for (size_t k = 0; k < h->name.n; k++)
                tok[k] = (char)((h->name.p[k] >= 'A' && h->name.p[k] <= 'Z') ? h->name.p[k] + 32 : h->name.p[k]);
            tok[h->name.n] = '\0';
            if (http_list_has_token(cc.no_cache_fields, tok) || http_list_has_token(cc.private_fields, tok))
                continue;
        }
        if (strv_caseeq_cstr(h->name, "surrogate-key") || strv_caseeq_cstr(h->name, "cache-tag")) {
            for (size_t k = 0; k < h->value.n; k++)
                buf_putc(&tags, h->value.p[k] == ',' ? ' ' : h->value.p[k]);
            buf_putc(&tags, ' ');
        }
        if (!stored_field(h->name))
            continue;
        buf_append(&hb, h->name.p, h->name.n);
        buf_puts(&hb, ": ");
        buf_append(&hb, h->value.p, h->value.n);
        buf_puts(&hb, "\r\n");
    }
    o->hdrs_len = buf_used(&hb);
    o->hdrs = buf_steal(&hb);
    o->tags = buf_used(&tags) ? buf_steal(&tags) : (buf_free(&tags), NULL);
    o->etag = dup_field(resp->headers, resp->nheaders, "etag");
    o->last_modified = dup_field(resp->headers, resp->nheaders, "last-modified");
    const struct http_header *ct = http_find_header(resp->headers, resp->nheaders, "content-type");
    o->compressible = cs->compress && ct && compressible_type(ct->value) &&
                      !http_find_header(resp->headers, resp->nheaders, "content-encoding") &&
                      !(cc_has_no_transform(resp));
    if (!o->key || !o->hdrs || (vary && (!o->vary || !o->vary_vals))) {
        edge_cache_fill_abort(&f);
        return NULL;
    }
    return f;
}


void edge_cache_fill_data(struct edge_cache_fill *f, const void *p, size_t n)
{
    if (!f || f->failed)
        return;
    if (buf_used(&f->body) + n > f->cs->max_object || buf_append(&f->body, p, n)) {
        f->failed = true;
        buf_free(&f->body);
        edge_cache__stream_end(f->st, ST_FAILED);
        return;
    }
    if (f->st)
        edge_cache__stream_append(f->st, p, n);
}

void edge_cache_fill_abort(struct edge_cache_fill **pf)
{
    struct edge_cache_fill *f = *pf;
    if (!f)
        return;
    buf_free(&f->body);
    if (f->st) {
        edge_cache__stream_end(f->st, ST_FAILED);
        edge_cache_stream_put(f->st);
    }
    if (f->o)
        edge_cache_obj_put(f->o);
    free(f);
    *pf = NULL;
}


/* Inserts o, replacing what it supersedes (same key and Vary values), and
 * writes it to the disk tier unless it came from there. */

static void insert(struct edge_cache_store *cs, struct edge_cache_obj *o)
{
    edge_cache__insert_ex(cs, o, true);
}

void edge_cache__insert_ex(struct edge_cache_store *cs, struct edge_cache_obj *o, bool to_disk)
{
    o->size = sizeof(*o) + o->keylen + o->hdrs_len + o->body_len + (o->vary ? strlen(o->vary) * 2 : 0);
    pthread_mutex_lock(&cs->lock);
    for (struct edge_cache_obj *x = cs->buckets[o->h % BUCKETS], *next; x; x = next) {
        next = x->hnext;
        if (x->h == o->h && x->keylen == o->keylen && memcmp(x->key, o->key, o->keylen) == 0 &&
            ((!x->vary && !o->vary) || (x->vary && o->vary && strcmp(x->vary, o->vary) == 0 &&
                                        strcmp(x->vary_vals, o->vary_vals) == 0)))
            unlink_obj(cs, x);
        else if (x->h == o->h && x->keylen == o->keylen && memcmp(x->key, o->key, o->keylen) == 0 &&
                 (!x->vary != !o->vary || (x->vary && o->vary && strcmp(x->vary, o->vary) != 0)))
            unlink_obj(cs, x);     /* the origin changed its Vary: old variants go */
    }
    o->hnext = cs->buckets[o->h % BUCKETS];
    cs->buckets[o->h % BUCKETS] = o;
    o->linked = true;
    bool ghost = cs->ghost[o->h % GHOSTS] == o->h;
    fifo_push(cs, o, ghost ? Q_MAIN : Q_SMALL);
    cs->used += o->size;
    cs->count++;
    evict(cs);
    if (to_disk && cs->disk_dir)
        edge_cache__disk_store(cs, o);
    pthread_mutex_unlock(&cs->lock);
}

void edge_cache_fill_commit(struct edge_cache_fill **pf)
{
    struct edge_cache_fill *f = *pf;
    if (!f)
        return;
    if (f->failed) {
        edge_cache_fill_abort(pf);
        return;
    }
    struct edge_cache_obj *o = f->o;
    o->body_len = buf_used(&f->body);
    o->body = buf_steal(&f->body);
    f->o = NULL;
    if (f->st) {
        /* the readers have all of it in the stream (a body that fell short of
         * its declared length is not stored either) */
        bool whole = o->body_len == f->st->cap;
        edge_cache__stream_end(f->st, whole ? ST_DONE : ST_FAILED);
        edge_cache_stream_put(f->st);
        if (!whole) {
            free(o->body);
            o->body = NULL;
        }
    }
    if (!o->body || o->body_len > f->cs->max_object) {
        edge_cache_obj_put(o);
    } else {
        insert(f->cs, o);
    }
    free(f);
    *pf = NULL;
}

/* Fields a 304 does not change in the stored response: those the stored body
 * depends on (RFC 9111 3.2), and its validator. */
static bool updatable_field(struct strv name)
{
    static const char *const fixed[] = { "content-encoding", "content-md5", "content-range",
                                         "content-length", "etag" };
    for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
        if (strv_caseeq_cstr(name, fixed[i]))
            return false;
    return true;
}

struct edge_cache_obj *edge_cache_refresh(struct edge_cache_store *cs, struct edge_cache_obj *old, const struct http_response *resp,
                           time_t request_time)
{
    /* the new object: stored fields updated by the 304's (RFC 9111 4.3.4) */
    struct edge_cache_obj *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    struct buf hb = BUF_INIT;
    const char *p = old->hdrs, *end = old->hdrs + old->hdrs_len;
    struct strv name, val, line;
    while (edge_cache__field_next(&p, end, &name, &val, &line)) {
        bool replaced = false;
        for (size_t i = 0; i < resp->nheaders && !replaced; i++)
            replaced = strv_caseeq(resp->headers[i].name, name) && updatable_field(name);
        if (!replaced)
            buf_append(&hb, line.p, line.n);
    }
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
        if (!stored_field(h->name) || !updatable_field(h->name))
            continue;
        buf_append(&hb, h->name.p, h->name.n);
        buf_puts(&hb, ": ");
        buf_append(&hb, h->value.p, h->value.n);
        buf_puts(&hb, "\r\n");
    }
    /* freshness from the merged fields */
    struct http_response merged;
    memset(&merged, 0, sizeof(merged));
    merged.status = old->status;
    char *mh = buf_steal(&hb);
    size_t mhl = mh ? strlen(mh) : 0;
    const char *q = mh, *qe = mh ? mh + mhl : NULL;
    while (q && merged.nheaders < HTTP_MAX_HEADERS &&
           edge_cache__field_next(&q, qe, &merged.headers[merged.nheaders].name,
                      &merged.headers[merged.nheaders].value, NULL))
        merged.nheaders++;
    struct edge_cache_cc cc;
    edge_cache_cc_parse(merged.headers, merged.nheaders, &cc);
    o->refs = 2;            /* the store's and the caller's */
    o->cs = cs;
    o->key = strdup(old->key);
    o->keylen = old->keylen;
    o->h = old->h;
    o->status = old->status;
    o->vary = old->vary ? strdup(old->vary) : NULL;
    o->vary_vals = old->vary_vals ? strdup(old->vary_vals) : NULL;
    o->hdrs = mh;
    o->hdrs_len = mhl;
    o->body = malloc(old->body_len + 1);
    if (o->body)
        memcpy(o->body, old->body, old->body_len);
    o->body_len = old->body_len;
    o->no_cache = cc.no_cache;
    o->must_revalidate = cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage >= 0;
    o->swr = cc.stale_while_revalidate;
    o->sie = cc.stale_if_error;
    pthread_mutex_lock(&cs->lock);
    double heuristic = cs->heuristic;
    pthread_mutex_unlock(&cs->lock);
    int64_t sc_max_age;
    surrogate_control(merged.headers, merged.nheaders, &sc_max_age);
    compute_times(o, &merged, &cc, sc_max_age, heuristic, request_time, time(NULL));
    o->etag = dup_field(merged.headers, merged.nheaders, "etag");
    o->last_modified = dup_field(merged.headers, merged.nheaders, "last-modified");
    o->tags = old->tags ? strdup(old->tags) : NULL;
    o->compressible = old->compressible;
    if (!o->key || !o->hdrs || !o->body) {
        edge_cache__obj_free(o);
        return NULL;
    }
    insert(cs, o);
    return o;
}

/* ---- purging ---- */


size_t edge_cache_purge_key(struct edge_cache_store *cs, const char *key, size_t keylen)
{
    uint64_t h = edge_cache__key_hash(key, keylen);
    size_t n = 0;
    pthread_mutex_lock(&cs->lock);
    if (cs->disk_dir)
        edge_cache__disk_purge(cs, key, keylen, NULL, NULL, NULL, false);
    for (struct edge_cache_obj *o = cs->buckets[h % BUCKETS], *next; o; o = next) {
        next = o->hnext;
        if (o->h == h && o->keylen == keylen && memcmp(o->key, key, keylen) == 0) {
            unlink_obj(cs, o);
            n++;
        }
    }
    pthread_mutex_unlock(&cs->lock);
    return n;
}

bool edge_cache__has_tag(const char *tags, const char *tag)
{
    size_t tl = strlen(tag);
    for (const char *p = tags; p && *p;) {
        while (*p == ' ')
            p++;
        const char *s = p;
        while (*p && *p != ' ')
            p++;
        if ((size_t)(p - s) == tl && memcmp(s, tag, tl) == 0)
            return true;
    }
    return false;
}

size_t edge_cache_purge(struct edge_cache_store *cs, const char *host, const char *prefix, const char *tag, bool all)
{
    size_t n = 0, hl = host ? strlen(host) : 0, pl = prefix ? strlen(prefix) : 0;
    pthread_mutex_lock(&cs->lock);
    if (cs->disk_dir)
        edge_cache__disk_purge(cs, NULL, 0, host, prefix, tag, all);
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct edge_cache_obj *o = cs->buckets[b], *next; o; o = next) {
            next = o->hnext;
            const char *nl = memchr(o->key, '\n', o->keylen);
            const char *target = nl ? nl + 1 : o->key;
            bool hit = all;
            if (!hit && tag)
                hit = edge_cache__has_tag(o->tags, tag);
            if (!hit && prefix)
                hit = strncmp(target, prefix, pl) == 0 &&
                      (!host || (nl && (size_t)(nl - o->key) == hl && strncasecmp(o->key, host, hl) == 0));
            if (hit) {
                unlink_obj(cs, o);
                n++;
            }
        }
    }
    pthread_mutex_unlock(&cs->lock);
    return n;
}


size_t edge_cache_store_count(struct edge_cache_store *cs)
{
    return __atomic_load_n(&cs->count, __ATOMIC_RELAXED);
}

size_t edge_cache_store_bytes(struct edge_cache_store *cs)
{
    return __atomic_load_n(&cs->used, __ATOMIC_RELAXED);
}
