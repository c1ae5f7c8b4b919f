/* registry_api.c - the OCI Distribution API (v1.1).
 *
 *   GET  /v2/                                        API version check
 *   HEAD|GET|DELETE /v2/<name>/blobs/<digest>        (Range on GET)
 *   POST /v2/<name>/blobs/uploads/[?digest=|?mount=&from=]
 *   GET|PATCH|PUT|DELETE /v2/<name>/blobs/uploads/<id>[?digest=]
 *   HEAD|GET|PUT|DELETE /v2/<name>/manifests/<tag|digest>
 *   GET  /v2/<name>/tags/list[?n=&last=]             (Link header for the next page)
 *   GET  /v2/<name>/referrers/<digest>[?artifactType=]
 *   GET  /v2/_catalog[?n=&last=]
 *
 * Blob bodies (PATCH, PUT and POST of uploads) are streamed into the upload's
 * file; manifests are read whole (at most 4 MiB) and checked: JSON, a known media
 * type, every blob or manifest they name present. Errors are the spec's JSON
 * bodies with its codes.
 */
#include "registry_internal.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"

struct rreq {
    struct httpd_req *r;
    struct reg_worker *w;
    struct reg_svc *s;
    char name[REG_MAX_NAME + 1];
    char ref[256];                  /* digest, tag or upload id */
    enum { K_BASE, K_BLOB, K_UPLOAD, K_MANIFEST, K_TAGS, K_REFERRERS, K_CATALOG } kind;
    int fd;                         /* an upload being written */
    char upath[700];
    uint64_t offset;
    struct buf body;                /* a manifest's bytes */
    char actor[64];                 /* the token's user */
    uint64_t room;                  /* bytes the quotas leave for an upload */
    EVP_MD_CTX *md;                 /* SHA-256 of the upload's bytes, as they are written */
    uint64_t synced;                /* where the upload's writeback was last started */
    struct reg_fetch *fetch;        /* the pull-through cache asking its upstream */
    struct reg_store_op *store;     /* an upload being stored (in S3) */
    bool fetched;                   /* ... done: answer from the local store */
    int upstream_status;            /* ... failed with this (0: it did not) */
};

static void rreq_free(struct rreq *q)
{
    reg_fetch_cancel(q->fetch);
    reg_store_cancel(q->store);
    if (q->fd >= 0)
        close(q->fd);
    buf_free(&q->body);
    EVP_MD_CTX_free(q->md);
    free(q);
}

/* Takes the hash of upload id if it covers exactly its first off bytes; a new one
 * for an empty upload; else NULL (the end reads the file back). */
static EVP_MD_CTX *hash_take(struct reg_svc *s, const char *id, uint64_t off)
{
    EVP_MD_CTX *md = NULL;
    pthread_mutex_lock(&s->hash_mu);
    for (int i = 0; i < REG_HASHES; i++) {
        struct reg_upload_hash *h = &s->hashes[i];
        if (h->md && strcmp(h->id, id) == 0) {
            if (h->off == off)
                md = h->md;
            else
                EVP_MD_CTX_free(h->md);
            h->md = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&s->hash_mu);
    if (!md && off == 0 && (md = EVP_MD_CTX_new()) && !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(md);
        md = NULL;
    }
    return md;
}

/* Keeps an upload's hash for its next request, in place of the least recently used. */
static void hash_put(struct reg_svc *s, const char *id, EVP_MD_CTX *md, uint64_t off)
{
    pthread_mutex_lock(&s->hash_mu);
    struct reg_upload_hash *slot = &s->hashes[0];
    for (int i = 0; i < REG_HASHES; i++) {
        struct reg_upload_hash *h = &s->hashes[i];
        if (!h->md) {
            slot = h;
            break;
        }
        if (h->used < slot->used)
            slot = h;
    }
    EVP_MD_CTX_free(slot->md);
    snprintf(slot->id, sizeof(slot->id), "%.32s", id);
    slot->md = md;
    slot->off = off;
    slot->used = ++s->hash_clock;
    pthread_mutex_unlock(&s->hash_mu);
}

/* Counts the answer, by method (the ones the API has, else "other") and status; each
 * worker looks a label set up once and keeps it. */
static void count(struct rreq *q, int status)
{
    static const char *const methods[REG_METHODS] = { "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "other" };
    int mi = 0;
    while (mi < REG_METHODS - 1 && !strv_eq_cstr(q->r->h.method, methods[mi]))
        mi++;
    if (status < 100 || status >= 100 + REG_STATUSES)
        return;
    struct metric **m = &q->w->counts[mi][status - 100];
    if (!*m) {
        char code[8];
        snprintf(code, sizeof(code), "%d", status);
        *m = metrics_get2(q->s->f_requests, methods[mi], code);
    }
    metric_inc(*m);
}

static void reply(struct rreq *q, int status, const char *ctype, const void *body, size_t len)
{
    struct httpd_req *r = q->r;
    count(q, status);
    httpd_header(r, "Docker-Distribution-API-Version", "registry/2.0");
    rreq_free(q);
    httpd_respond(r, status, ctype, body, len);
}

static void fail(struct rreq *q, int status, const char *code, const char *msg)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "{\"errors\":[{\"code\":\"%s\",\"message\":", code);
    buf_json_str(&b, msg);
    buf_puts(&b, ",\"detail\":{}}]}\n");
    reply(q, status, "application/json", buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static bool qparam(const struct httpd_req *r, const char *name, char *out, size_t cap)
{
    return http_query_param(r->h.query, name, out, cap);
}

/* Bytes every quota covering the repository leaves (UINT64_MAX: none covers it);
 * a digest the quota's repositories already hold costs nothing there. *which gets
 * the tightest quota. */
static uint64_t quota_room(struct rreq *q, const char *digest, const struct reg_quota **which)
{
    uint64_t room = UINT64_MAX;
    const struct reg_conf *c = q->s->conf;
    for (size_t i = 0; i < c->nquotas; i++) {
        const struct reg_quota *qt = &c->quotas[i];
        if (!reg_pattern_match(qt->pattern, q->name) ||
            (digest && reg_linked_under(q->w->db, qt->pattern, digest) == 1))
            continue;
        long long used = reg_usage(q->w->db, qt->pattern);
        uint64_t left = used < 0 || (uint64_t)used >= qt->bytes ? 0 : qt->bytes - (uint64_t)used;
        if (left < room) {
            room = left;
            *which = qt;
        }
    }
    return room;
}

/* Whether size more bytes (of digest, when known) fit every quota; else answers
 * DENIED (the request is then gone). */
static bool quota_ok(struct rreq *q, const char *digest, uint64_t size)
{
    const struct reg_quota *qt = NULL;
    if (!q->s->conf->nquotas || size <= quota_room(q, digest, &qt))
        return true;
    char msg[400];
    snprintf(msg, sizeof(msg), "quota exceeded: the repositories \"%s\" may hold %llu bytes together", qt->pattern,
             (unsigned long long)qt->bytes);
    fail(q, 403, "DENIED", msg);
    return false;
}

static void notify(struct rreq *q, unsigned action, bool manifest, const char *digest, const char *media_type,
                   long long size, const char *tag, const char *from)
{
    struct reg_event ev = { .action = action, .manifest = manifest, .repo = q->name, .digest = digest,
                            .media_type = media_type, .tag = tag, .from = from, .actor = q->actor, .size = size };
    reg_notify(q->s, q->r, &ev);
}

int reg_range_parse(struct strv v, bool unit, struct reg_range *g)
{
    memset(g, 0, sizeof(*g));
    v = strv_trim(v);
    if (strv_has_prefix(v, "bytes="))
        v = strv_make(v.p + 6, v.n - 6);
    else if (unit)
        return -1;
    const char *p = v.p, *end = v.p + v.n;
    uint64_t n[2] = { 0, 0 };
    int digits[2] = { 0, 0 };
    for (int k = 0; k < 2; k++) {
        while (p < end && *p >= '0' && *p <= '9' && digits[k] < 19) {
            n[k] = n[k] * 10 + (uint64_t)(*p++ - '0');
            digits[k]++;
        }
        if (k == 0) {
            if (p == end || *p != '-')
                return -1;
            p++;
        }
    }
    if (p != end || (!digits[0] && !digits[1]))
        return -1;
    g->suffix = !digits[0];         /* "-N": the last N bytes */
    g->open = digits[0] && !digits[1];
    g->first = n[0];
    g->last = n[1];
    return 0;
}

bool reg_range_resolve(const struct reg_range *g, uint64_t size, uint64_t *from, uint64_t *to)
{
    if (!size)
        return false;
    if (g->suffix) {
        if (!g->last)
            return false;
        *from = size - MIN(g->last, size);
        *to = size - 1;
        return true;
    }
    if (g->first >= size || (!g->open && g->last < g->first))
        return false;
    *from = g->first;
    *to = g->open ? size - 1 : MIN(g->last, size - 1);
    return true;
}

/* Splits /v2/<name>/<kind>/<ref>. */
static bool route(struct rreq *q)
{
    struct strv p = q->r->h.path;
    if (!strv_has_prefix(p, "/v2/"))
        return false;
    char path[1024];
    if (p.n >= sizeof(path))
        return false;
    memcpy(path, p.p, p.n);
    path[p.n] = 0;
    char *rest = path + 4;
    if (!*rest) {
        q->kind = K_BASE;
        return true;
    }
    if (strcmp(rest, "_catalog") == 0) {
        q->kind = K_CATALOG;
        return true;
    }
    static const struct { const char *sep; int kind; } seps[] = {
        { "/blobs/uploads/", K_UPLOAD }, { "/blobs/uploads", K_UPLOAD }, { "/blobs/", K_BLOB },
        { "/manifests/", K_MANIFEST }, { "/tags/list", K_TAGS }, { "/referrers/", K_REFERRERS },
    };
    /* The split whose reference holds no '/' and comes last: names may contain the
     * words ("team/blobs/app/manifests/v1" is repository team/blobs/app). */
    char *best = NULL;
    size_t best_i = 0;
    for (size_t i = 0; i < ARRAY_SIZE(seps); i++) {
        for (char *f = strstr(rest, seps[i].sep); f; f = strstr(f + 1, seps[i].sep)) {
            const char *ref = f + strlen(seps[i].sep);
            bool no_ref = seps[i].kind == K_TAGS || i == 1;
            if ((no_ref && *ref) || strchr(ref, '/') || f == rest)
                continue;
            if (!best || f > best || (f == best && strlen(seps[i].sep) > strlen(seps[best_i].sep))) {
                best = f;
                best_i = i;
            }
        }
    }
    if (best) {
        const char *ref = best + strlen(seps[best_i].sep);
        if ((size_t)(best - rest) > REG_MAX_NAME || strlen(ref) >= sizeof(q->ref))
            return false;
        memcpy(q->name, rest, (size_t)(best - rest));
        q->name[best - rest] = 0;
        strcpy(q->ref, ref);
        q->kind = seps[best_i].kind;
        return true;
    }
    return false;
}

/* ---- the pull-through cache ---- */

static void get_blob(struct rreq *q);
static void manifest(struct rreq *q);

static void fetch_abort(struct httpd_req *r, void *arg)
{
    (void)r;
    rreq_free(arg);     /* cancels the fetch */
}

static void fetched(void *arg, int status)
{
    struct rreq *q = arg;
    q->fetch = NULL;
    q->fetched = true;
    q->upstream_status = status;
    httpd_req_on_abort(q->r, NULL, NULL);
    if (status == 404) {
        if (q->kind == K_MANIFEST)
            fail(q, 404, "MANIFEST_UNKNOWN", "manifest unknown to the upstream registry");
        else
            fail(q, 404, "BLOB_UNKNOWN", "blob unknown to the upstream registry");
        return;
    }
    /* the store has it now - or, if the upstream failed, maybe from before */
    if (q->kind == K_MANIFEST)
        manifest(q);
    else
        get_blob(q);
}

/* On a miss in a pull-through cache: asks the upstream and comes back to the
 * request when it has answered. False when this is no such miss. */
static bool fetch_upstream(struct rreq *q)
{
    if (!q->s->conf->proxied || q->fetched)
        return false;
    q->fetch = q->kind == K_MANIFEST ? reg_proxy_manifest(q->w, q->name, q->ref, fetched, q)
                                     : reg_proxy_blob(q->w, q->name, q->ref, fetched, q);
    if (!q->fetch) {
        fail(q, 502, "UNKNOWN", "cannot ask the upstream registry");
        return true;
    }
    httpd_req_on_abort(q->r, fetch_abort, q);
    return true;
}

/* The answer to a miss the upstream could not fill either. */
static void upstream_failed(struct rreq *q, const char *code, const char *msg)
{
    if (q->upstream_status)
        fail(q, q->upstream_status == 507 ? 507 : 502, "UNKNOWN",
             q->upstream_status == 401 ? "the upstream registry refused our credentials"
                                       : "the upstream registry could not be asked");
    else
        fail(q, 404, code, msg);
}

/* ---- blobs ---- */

static void get_blob(struct rreq *q)
{
    struct httpd_req *r = q->r;
    if (!reg_digest_ok(q->ref)) {
        fail(q, 400, "DIGEST_INVALID", "provided digest did not match uploaded content");
        return;
    }
    long long size = reg_link_has(q->w->db, q->name, q->ref) == 1 ? reg_blob_len(q->w, q->ref) : -1;
    if (size < 0 && !strv_eq_cstr(r->h.method, "DELETE") && fetch_upstream(q))
        return;
    if (size < 0) {
        upstream_failed(q, "BLOB_UNKNOWN", "blob unknown to registry");
        return;
    }
    if (strv_eq_cstr(r->h.method, "DELETE")) {
        reg_link_del(q->w->db, q->name, q->ref);    /* the file goes with garbage collection */
        notify(q, REG_EV_DELETE, false, q->ref, NULL, size, NULL, NULL);
        reply(q, 202, NULL, NULL, 0);
        return;
    }
    if (r->h.is_head)   /* a pusher that finds the blob may name it in a manifest soon */
        reg_link_touch(q->w->db, q->name, q->ref, (long long)(q->s->conf->gc_grace_ms / 4000));
    else
        notify(q, REG_EV_PULL, false, q->ref, "application/octet-stream", size, NULL, NULL);
    uint64_t from = 0, to = size ? (uint64_t)size - 1 : 0;
    int status = 200;
    const struct http_header *rh = httpd_req_header(r, "range");
    if (rh && strv_has_prefix(rh->value, "bytes=")) {
        struct reg_range g;
        if (reg_range_parse(rh->value, true, &g) || !reg_range_resolve(&g, (uint64_t)size, &from, &to)) {
            httpd_headerf(r, "Content-Range", "bytes */%lld", size);
            fail(q, 416, "BLOB_UNKNOWN", "requested range not satisfiable");
            return;
        }
        status = 206;
        httpd_headerf(r, "Content-Range", "bytes %llu-%llu/%lld", (unsigned long long)from,
                      (unsigned long long)to, size);
    }
    httpd_header(r, "Docker-Content-Digest", q->ref);
    httpd_header(r, "Accept-Ranges", "bytes");
    httpd_header(r, "ETag", q->ref);
    httpd_header(r, "Docker-Distribution-API-Version", "registry/2.0");
    uint64_t len = size ? to - from + 1 : 0;
    count(q, status);
    if (r->h.is_head || len == 0) {
        rreq_free(q);
        httpd_respond_start(r, status, "application/octet-stream", (int64_t)len);
        httpd_respond_finish(r);
        return;
    }
    char digest[140];
    snprintf(digest, sizeof(digest), "%.139s", q->ref);
    struct reg_worker *w = q->w;
    rreq_free(q);
    httpd_respond_start(r, status, "application/octet-stream", (int64_t)len);
    reg_blob_send(w, r, digest, from, len);
}

/* ---- uploads ---- */

static void upload_path(struct rreq *q, const char *id)
{
    snprintf(q->upath, sizeof(q->upath), "%s/uploads/%s", q->s->conf->path, id);
}

static bool upload_id_ok(const char *id)
{
    if (strlen(id) != 32)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static void upload_location(struct rreq *q, const char *id)
{
    httpd_headerf(q->r, "Location", "/v2/%s/blobs/uploads/%s", q->name, id);
    httpd_header(q->r, "Docker-Upload-UUID", id);
    if (q->offset)
        httpd_headerf(q->r, "Range", "0-%llu", (unsigned long long)q->offset - 1);
    else
        httpd_header(q->r, "Range", "0-0");
}

static void store_abort(struct httpd_req *r, void *arg)
{
    (void)r;
    rreq_free(arg);     /* cancels the store; the upload stays for a retry */
}

static void upload_stored(void *arg, int rc)
{
    struct rreq *q = arg;
    q->store = NULL;
    httpd_req_on_abort(q->r, NULL, NULL);
    const char *digest = q->ref;
    if (rc == -EBADMSG) {
        unlink(q->upath);
        fail(q, 400, "DIGEST_INVALID", "provided digest did not match uploaded content");
        return;
    }
    if (rc) {
        fail(q, rc == -ENOSPC ? 507 : 500, "UNKNOWN", cairn_strerror(rc));
        return;
    }
    httpd_headerf(q->r, "Location", "/v2/%s/blobs/%s", q->name, digest);
    httpd_header(q->r, "Docker-Content-Digest", digest);
    notify(q, REG_EV_PUSH, false, digest, "application/octet-stream", (long long)q->offset, NULL, NULL);
    reply(q, 201, NULL, NULL, 0);
}

/* The upload's bytes are whole: check and store them as the blob digest. */
static void upload_finish(struct rreq *q, const char *digest)
{
    if (q->fd >= 0) {
        close(q->fd);
        q->fd = -1;
    }
    if (q->s->conf->nquotas && !quota_ok(q, digest, q->offset)) {
        unlink(q->upath);
        return;
    }
    snprintf(q->ref, sizeof(q->ref), "%s", digest);
    /* with files the store is done (and q answered, and gone) when this returns */
    struct reg_store_op *op = reg_blob_store(q->w, q->name, q->upath, q->ref, q->md, upload_stored, q);
    if (op) {
        q->store = op;
        httpd_req_on_abort(q->r, store_abort, q);
    }
}

static int up_data(struct httpd_req *r, void *arg, const char *p, size_t n)
{
    struct rreq *q = arg;
    (void)r;
    if (q->offset + n > q->room) {
        const struct reg_quota *qt = NULL;
        quota_room(q, NULL, &qt);
        char msg[400];
        snprintf(msg, sizeof(msg), "quota exceeded: the repositories \"%s\" may hold %llu bytes together",
                 qt ? qt->pattern : q->name, qt ? (unsigned long long)qt->bytes : 0ull);
        fail(q, 403, "DENIED", msg);
        return 1;
    }
    while (n) {
        ssize_t k = write(q->fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            fail(q, errno == ENOSPC ? 507 : 500, "UNKNOWN", strerror(errno));
            return 1;
        }
        if (q->md)
            EVP_DigestUpdate(q->md, p, (size_t)k);
        p += k;
        n -= (size_t)k;
        q->offset += (uint64_t)k;
    }
    /* start the writeback of every 8 MiB at once, so that the fdatasync at the end
     * waits for the last few only */
    if (q->offset - q->synced >= (8u << 20)) {
        sync_file_range(q->fd, (off64_t)q->synced, (off64_t)(q->offset - q->synced), SYNC_FILE_RANGE_WRITE);
        q->synced = q->offset;
    }
    return 0;
}

static void up_end(struct httpd_req *r, void *arg)
{
    struct rreq *q = arg;
    char digest[140];
    const char *id = strrchr(q->upath, '/') + 1;
    if (qparam(r, "digest", digest, sizeof(digest)) && (strv_eq_cstr(r->h.method, "PUT") ||
                                                         strv_eq_cstr(r->h.method, "POST"))) {
        if (!reg_digest_ok(digest)) {
            fail(q, 400, "DIGEST_INVALID", "provided digest is not a sha256 or sha512 digest");
            return;
        }
        upload_finish(q, digest);
        return;
    }
    if (strv_eq_cstr(r->h.method, "PUT")) {
        fail(q, 400, "DIGEST_INVALID", "a digest is needed to complete an upload");
        return;
    }
    char idc[40];
    snprintf(idc, sizeof(idc), "%s", id);
    if (q->md) {
        hash_put(q->s, idc, q->md, q->offset);
        q->md = NULL;
    }
    upload_location(q, idc);
    reply(q, 202, NULL, NULL, 0);
}

static const struct httpd_body_ops up_ops = { up_data, up_end };

static void up_abort(struct httpd_req *r, void *arg)
{
    (void)r;
    rreq_free(arg);     /* the bytes written so far stay: the client may resume */
}

/* Appends the request's body to the upload (streamed or whole), then up_end. */
static void upload_body(struct rreq *q)
{
    q->fd = open(q->upath, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (q->fd < 0) {
        fail(q, 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry");
        return;
    }
    struct stat st;
    fstat(q->fd, &st);
    q->offset = q->synced = (uint64_t)st.st_size;
    q->md = hash_take(q->s, strrchr(q->upath, '/') + 1, q->offset);
    /* the last request of an upload names its digest: bytes already held under a
     * quota cost nothing there */
    const struct reg_quota *qt;
    char dg[140];
    bool known = qparam(q->r, "digest", dg, sizeof(dg)) && reg_digest_ok(dg);
    q->room = q->s->conf->nquotas ? quota_room(q, known ? dg : NULL, &qt) : UINT64_MAX;
    const struct http_header *cr = httpd_req_header(q->r, "content-range");
    if (cr && strv_eq_cstr(q->r->h.method, "PATCH")) {
        struct reg_range g;
        if (reg_range_parse(cr->value, false, &g) || g.suffix || g.open || g.first != q->offset || g.last < g.first) {
            upload_location(q, strrchr(q->upath, '/') + 1);
            fail(q, 416, "BLOB_UPLOAD_INVALID", "the chunk does not start where the upload ends");
            return;
        }
    }
    if (q->r->streaming) {
        httpd_req_on_abort(q->r, up_abort, q);
        httpd_req_read_body(q->r, &up_ops, q);
        return;
    }
    if (q->r->body.n && up_data(q->r, q, q->r->body.p, q->r->body.n))
        return;
    up_end(q->r, q);
}

static void new_upload(struct rreq *q)
{
    struct httpd_req *r = q->r;
    char mount[140], from[REG_MAX_NAME + 1], digest[140];
    if (qparam(r, "mount", mount, sizeof(mount)) && reg_digest_ok(mount)) {
        long long size = -1;
        bool ok = qparam(r, "from", from, sizeof(from)) && reg_name_ok(from) &&
                  reg_auth_allows(q->s, r, from, REG_PULL) &&     /* a mount reads the other repository */
                  reg_link_has(q->w->db, from, mount) == 1 && (size = reg_blob_len(q->w, mount)) >= 0;
        if (ok && !quota_ok(q, mount, (uint64_t)size))
            return;
        if (ok && reg_link_add(q->w->db, q->name, mount, size) == 0) {
            httpd_headerf(r, "Location", "/v2/%s/blobs/%s", q->name, mount);
            httpd_header(r, "Docker-Content-Digest", mount);
            notify(q, REG_EV_MOUNT, false, mount, "application/octet-stream", size, NULL, from);
            reply(q, 201, NULL, NULL, 0);
            return;
        }
    }
    char id[33];
    int fd = reg_upload_create(q->s->conf->path, id, q->upath, sizeof(q->upath));
    if (fd < 0) {
        fail(q, 500, "UNKNOWN", cairn_strerror(fd));
        return;
    }
    close(fd);
    if (qparam(r, "digest", digest, sizeof(digest))) {
        upload_body(q);     /* monolithic: POST with the blob and its digest */
        return;
    }
    upload_location(q, id);
    reply(q, 202, NULL, NULL, 0);
}

static void upload(struct rreq *q)
{
    struct httpd_req *r = q->r;
    if (!q->ref[0]) {
        if (strv_eq_cstr(r->h.method, "POST"))
            new_upload(q);
        else
            fail(q, 405, "UNSUPPORTED", "the operation is unsupported");
        return;
    }
    if (!upload_id_ok(q->ref)) {
        fail(q, 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry");
        return;
    }
    upload_path(q, q->ref);
    struct stat st;
    if (stat(q->upath, &st)) {
        fail(q, 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry");
        return;
    }
    q->offset = (uint64_t)st.st_size;
    if (strv_eq_cstr(r->h.method, "GET")) {
        upload_location(q, q->ref);
        reply(q, 204, NULL, NULL, 0);
    } else if (strv_eq_cstr(r->h.method, "DELETE")) {
        EVP_MD_CTX_free(hash_take(q->s, q->ref, UINT64_MAX));
        unlink(q->upath);
        reply(q, 204, NULL, NULL, 0);
    } else if (strv_eq_cstr(r->h.method, "PATCH") || strv_eq_cstr(r->h.method, "PUT")) {
        upload_body(q);
    } else {
        fail(q, 405, "UNSUPPORTED", "the operation is unsupported");
    }
}

/* ---- manifests ---- */

static bool known_type(const char *t)
{
    return strcmp(t, MT_OCI_MANIFEST) == 0 || strcmp(t, MT_OCI_INDEX) == 0 ||
           strcmp(t, MT_DOCKER_MANIFEST) == 0 || strcmp(t, MT_DOCKER_LIST) == 0;
}

static const char *descriptor_digest(json_t *d)
{
    json_t *dg = json_is_object(d) ? json_object_get(d, "digest") : NULL;
    const char *s = json_is_string(dg) ? json_string_value(dg) : NULL;
    return s && reg_digest_ok(s) ? s : NULL;
}

const char *reg_manifest_parse(const char *body, size_t len, const char *ctype, struct reg_manifest *m,
                               struct buf *refs, bool *index)
{
    memset(m, 0, sizeof(*m));
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    const char *err = NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        return "manifest invalid: not a JSON object";
    }
    json_t *mt = json_object_get(j, "mediaType");
    const char *media = json_is_string(mt) ? json_string_value(mt) : ctype ? ctype : "";
    if (!known_type(media) || (json_is_string(mt) && ctype && ctype[0] && strcmp(ctype, media) != 0)) {
        json_decref(j);
        return "manifest invalid: unknown or mismatched media type";
    }
    *index = strcmp(media, MT_OCI_INDEX) == 0 || strcmp(media, MT_DOCKER_LIST) == 0;
    /* the digests it names, each NUL-terminated */
    json_t *list = json_object_get(j, *index ? "manifests" : "layers"), *it;
    size_t i;
    if (!*index) {
        const char *cd = descriptor_digest(json_object_get(j, "config"));
        if (!cd)
            err = "manifest invalid: no config descriptor";
        else
            buf_append(refs, cd, strlen(cd) + 1);
    }
    if (list && !json_is_array(list))
        err = "manifest invalid: descriptors are not a list";
    json_array_foreach(list, i, it) {
        const char *dg = descriptor_digest(it);
        if (!dg) {
            err = "manifest invalid: a descriptor without a valid digest";
            break;
        }
        buf_append(refs, dg, strlen(dg) + 1);
    }
    snprintf(m->media_type, sizeof(m->media_type), "%s", media);
    m->size = (long long)len;
    uint8_t d[32];
    unsigned dl = 0;
    EVP_Digest(body, len, d, &dl, EVP_sha256(), NULL);
    strcpy(m->digest, "sha256:");
    cairn_hex(d, 32, m->digest + 7);
    json_t *at = json_object_get(j, "artifactType");
    const char *atype = json_is_string(at) ? json_string_value(at) : NULL;
    if (!atype && !*index) {
        json_t *cfg = json_object_get(j, "config");
        json_t *cmt = json_is_object(cfg) ? json_object_get(cfg, "mediaType") : NULL;
        atype = json_is_string(cmt) ? json_string_value(cmt) : "";
    }
    snprintf(m->artifact_type, sizeof(m->artifact_type), "%s", atype ? atype : "");
    const char *subject = descriptor_digest(json_object_get(j, "subject"));
    m->subject = subject ? strdup(subject) : NULL;
    json_t *ann = json_object_get(j, "annotations");
    m->annotations = json_is_object(ann) ? json_dumps(ann, JSON_COMPACT) : NULL;
    json_decref(j);
    return err;
}

static void put_manifest(struct rreq *q)
{
    struct httpd_req *r = q->r;
    const char *body = q->body.data ? buf_head(&q->body) : "";
    size_t len = buf_used(&q->body);
    char ctype[128] = "";
    const struct http_header *ct = httpd_req_header(r, "content-type");
    if (ct)
        snprintf(ctype, sizeof(ctype), "%.*s", (int)MIN(ct->value.n, sizeof(ctype) - 1), ct->value.p);
    struct reg_manifest m;
    struct buf refs = BUF_INIT;
    bool index = false;
    const char *err = reg_manifest_parse(body, len, ctype, &m, &refs, &index);
    if (err) {
        reg_manifest_free(&m);
        buf_free(&refs);
        fail(q, 400, "MANIFEST_INVALID", err);
        return;
    }
    bool by_digest = strchr(q->ref, ':') != NULL;
    if (by_digest && strcmp(q->ref, m.digest) != 0) {
        reg_manifest_free(&m);
        buf_free(&refs);
        fail(q, 400, "DIGEST_INVALID", "provided digest did not match uploaded content");
        return;
    }
    if (!quota_ok(q, m.digest, len)) {
        reg_manifest_free(&m);
        buf_free(&refs);
        return;
    }
    /* everything it names must be here (blobs of this repository, or its manifests):
     * checked where it is stored, in one transaction */
    const char *missing = NULL;
    int rc = reg_manifest_put(q->w->db, q->s->conf->path, q->name, by_digest ? NULL : q->ref, &m, body, len, &refs,
                              index, true, &missing);
    if (rc == -ENOENT && missing) {
        char msg[200];
        snprintf(msg, sizeof(msg), "blob unknown to registry: %s", missing);
        reg_manifest_free(&m);
        buf_free(&refs);
        fail(q, 400, index ? "MANIFEST_UNKNOWN" : "MANIFEST_BLOB_UNKNOWN", msg);
        return;
    }
    buf_free(&refs);
    if (rc) {
        reg_manifest_free(&m);
        fail(q, rc == -ENOSPC ? 507 : 500, "UNKNOWN", cairn_strerror(rc));
        return;
    }
    notify(q, REG_EV_PUSH, true, m.digest, m.media_type, m.size, by_digest ? NULL : q->ref, NULL);
    httpd_headerf(r, "Location", "/v2/%s/manifests/%s", q->name, m.digest);
    httpd_header(r, "Docker-Content-Digest", m.digest);
    if (m.subject)
        httpd_header(r, "OCI-Subject", m.subject);
    reg_manifest_free(&m);
    reply(q, 201, NULL, NULL, 0);
}

static int man_data(struct httpd_req *r, void *arg, const char *p, size_t n)
{
    struct rreq *q = arg;
    (void)r;
    if (buf_used(&q->body) + n > REG_MAX_MANIFEST) {
        fail(q, 413, "SIZE_INVALID", "manifest too large");
        return 1;
    }
    buf_append(&q->body, p, n);
    return 0;
}

static void man_end(struct httpd_req *r, void *arg)
{
    (void)r;
    put_manifest(arg);
}

static const struct httpd_body_ops man_ops = { man_data, man_end };

static char *read_manifest(struct rreq *q, const struct reg_manifest *m, size_t *len)
{
    char path[800];
    reg_blob_path(q->s->conf->path, m->digest, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *data = fd >= 0 ? malloc((size_t)m->size + 1) : NULL;
    ssize_t n = data ? pread(fd, data, (size_t)m->size, 0) : -1;
    if (fd >= 0)
        close(fd);
    if (n != m->size) {
        free(data);
        return NULL;
    }
    *len = (size_t)n;
    return data;
}

/* Whether the request's Accept headers name type or a wildcard; a request without
 * any accepts everything. */
static bool accepts(const struct httpd_req *r, const char *type)
{
    bool any = false;
    for (size_t i = 0; i < r->h.nheaders; i++) {
        const struct http_header *h = &r->h.headers[i];
        if (!strv_caseeq_cstr(h->name, "accept"))
            continue;
        any = true;
        const char *p = h->value.p, *end = h->value.p + h->value.n;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end;
            const char *semi = memchr(p, ';', (size_t)(e - p));
            struct strv t = strv_trim(strv_make(p, (size_t)((semi ? semi : e) - p)));
            if (strv_eq_cstr(t, "*/*") || strv_caseeq_cstr(t, type))
                return true;
            p = e + 1;
        }
    }
    return !any;
}

/* Distribution's rules for a client whose Accept leaves out the stored type: an OCI
 * manifest or index is unknown to it; a Docker manifest list fetched by tag is
 * answered with its linux/amd64 manifest. Returns NULL, or why the manifest is
 * unknown to this client; *m, *data and *n may be replaced. */
static const char *negotiate(struct rreq *q, bool by_digest, struct reg_manifest *m, char **data, size_t *n)
{
    if (accepts(q->r, m->media_type))
        return NULL;
    if (strcmp(m->media_type, MT_OCI_MANIFEST) == 0)
        return "OCI manifest found, but accept header does not support OCI manifests";
    if (strcmp(m->media_type, MT_OCI_INDEX) == 0)
        return "OCI index found, but accept header does not support OCI indexes";
    if (strcmp(m->media_type, MT_DOCKER_LIST) != 0 || by_digest)
        return "manifest found, but accept header does not support its media type (schema 1 is not offered)";
    json_t *j = json_loadb(*data, *n, 0, NULL), *it;
    size_t i;
    char child[140] = "";
    json_array_foreach(json_object_get(j, "manifests"), i, it) {
        json_t *pf = json_object_get(it, "platform");
        const char *os = json_string_value(json_object_get(pf, "os"));
        const char *arch = json_string_value(json_object_get(pf, "architecture"));
        const char *dg = descriptor_digest(it);
        if (dg && os && arch && strcmp(os, "linux") == 0 && strcmp(arch, "amd64") == 0) {
            snprintf(child, sizeof(child), "%s", dg);
            break;
        }
    }
    json_decref(j);
    struct reg_manifest cm;
    if (!child[0] || reg_manifest_get(q->w->db, q->name, child, &cm))
        return "manifest list found, but accept header does not support manifest lists and it has no "
               "linux/amd64 manifest";
    size_t cn;
    char *cdata = accepts(q->r, cm.media_type) ? read_manifest(q, &cm, &cn) : NULL;
    if (!cdata) {
        reg_manifest_free(&cm);
        return "manifest list found, but accept header supports neither it nor its linux/amd64 manifest";
    }
    free(*data);
    reg_manifest_free(m);
    *m = cm;
    *data = cdata;
    *n = cn;
    return NULL;
}

static void manifest(struct rreq *q)
{
    struct httpd_req *r = q->r;
    bool by_digest = strchr(q->ref, ':') != NULL;
    if (by_digest ? !reg_digest_ok(q->ref) : !reg_tag_ok(q->ref)) {
        fail(q, 400, by_digest ? "DIGEST_INVALID" : "TAG_INVALID", "invalid reference");
        return;
    }
    if (strv_eq_cstr(r->h.method, "PUT")) {
        if (r->streaming) {
            httpd_req_on_abort(r, up_abort, q);
            httpd_req_read_body(r, &man_ops, q);
        } else {
            buf_append(&q->body, r->body.p, r->body.n);
            put_manifest(q);
        }
        return;
    }
    if (strv_eq_cstr(r->h.method, "DELETE")) {
        struct reg_manifest old;
        bool had = reg_manifest_get(q->w->db, q->name, q->ref, &old) == 0;
        int rc = by_digest ? reg_manifest_del(q->w->db, q->name, q->ref) : reg_tag_del(q->w->db, q->name, q->ref);
        if (rc == -ENOENT) {
            fail(q, 404, "MANIFEST_UNKNOWN", "manifest unknown to registry");
        } else if (rc) {
            fail(q, 500, "UNKNOWN", cairn_strerror(rc));
        } else {
            if (had)
                notify(q, REG_EV_DELETE, true, old.digest, old.media_type, old.size, by_digest ? NULL : q->ref, NULL);
            reply(q, 202, NULL, NULL, 0);
        }
        if (had)
            reg_manifest_free(&old);
        return;
    }
    struct reg_manifest m;
    bool local = reg_manifest_get(q->w->db, q->name, q->ref, &m) == 0;
    /* a tag may have moved upstream: asked every time; a digest only when missing */
    if ((!local || !by_digest) && fetch_upstream(q)) {
        if (local)
            reg_manifest_free(&m);
        return;
    }
    if (!local) {
        upstream_failed(q, "MANIFEST_UNKNOWN", "manifest unknown to registry");
        return;
    }
    size_t n;
    char *data = read_manifest(q, &m, &n);
    const char *why = data ? negotiate(q, by_digest, &m, &data, &n) : NULL;
    if (!data || why) {
        free(data);
        reg_manifest_free(&m);
        if (why)
            fail(q, 404, "MANIFEST_UNKNOWN", why);
        else
            fail(q, 500, "UNKNOWN", "manifest unreadable");
        return;
    }
    httpd_header(r, "Docker-Content-Digest", m.digest);
    httpd_header(r, "ETag", m.digest);
    if (!r->h.is_head)
        notify(q, REG_EV_PULL, true, m.digest, m.media_type, m.size, by_digest ? NULL : q->ref, NULL);
    char ctype[128];
    snprintf(ctype, sizeof(ctype), "%s", m.media_type);
    reg_manifest_free(&m);
    reply(q, 200, ctype, data, n);
    free(data);
}

/* ---- listings ---- */

static void listing(struct rreq *q)
{
    struct httpd_req *r = q->r;
    char nv[16], last[300] = "";
    long n = -1;
    if (qparam(r, "n", nv, sizeof(nv))) {
        char *end;
        n = strtol(nv, &end, 10);
        if (*end || n < 0) {
            fail(q, 400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested");
            return;
        }
    }
    qparam(r, "last", last, sizeof(last));
    struct buf items = BUF_INIT;
    char end[REG_MAX_NAME + 1];
    int rc = q->kind == K_TAGS ? reg_tags(q->w->db, q->name, last, n, &items, end, sizeof(end))
                               : reg_repos(q->w->db, last, n, &items, end, sizeof(end));
    if (rc) {
        buf_free(&items);
        fail(q, 500, "UNKNOWN", "listing failed");
        return;
    }
    if (q->kind == K_TAGS && !buf_used(&items) && !last[0]) {
        buf_free(&items);
        fail(q, 404, "NAME_UNKNOWN", "repository name not known to registry");
        return;
    }
    struct buf b = BUF_INIT;
    if (q->kind == K_TAGS) {
        buf_puts(&b, "{\"name\":");
        buf_json_str(&b, q->name);
        buf_puts(&b, ",\"tags\":[");
    } else {
        buf_puts(&b, "{\"repositories\":[");
    }
    buf_append(&b, items.data ? buf_head(&items) : "", buf_used(&items));
    buf_puts(&b, "]}\n");
    if (end[0]) {
        if (q->kind == K_TAGS)
            httpd_headerf(r, "Link", "</v2/%s/tags/list?n=%ld&last=%s>; rel=\"next\"", q->name, n, end);
        else
            httpd_headerf(r, "Link", "</v2/_catalog?n=%ld&last=%s>; rel=\"next\"", n, end);
    }
    buf_free(&items);
    reply(q, 200, "application/json", buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static void referrers(struct rreq *q)
{
    if (!reg_digest_ok(q->ref)) {
        fail(q, 400, "DIGEST_INVALID", "invalid digest");
        return;
    }
    char at[128];
    bool filter = qparam(q->r, "artifactType", at, sizeof(at));
    struct buf items = BUF_INIT;
    if (reg_referrers(q->w->db, q->name, q->ref, filter ? at : NULL, &items)) {
        buf_free(&items);
        fail(q, 500, "UNKNOWN", "listing failed");
        return;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":[");
    buf_append(&b, items.data ? buf_head(&items) : "", buf_used(&items));
    buf_puts(&b, "]}\n");
    buf_free(&items);
    if (filter)
        httpd_header(q->r, "OCI-Filters-Applied", "artifactType");
    reply(q, 200, MT_OCI_INDEX, buf_head(&b), buf_used(&b));
    buf_free(&b);
}

/* ---- the handler ---- */

bool reg__stream_body(void *arg, const struct http_request *h)
{
    (void)arg;
    /* uploads' bodies go straight to their files; manifests are read by the handler */
    return strv_has_prefix(h->path, "/v2/") &&
           (strv_eq_cstr(h->method, "PATCH") || strv_eq_cstr(h->method, "PUT") || strv_eq_cstr(h->method, "POST"));
}

void reg__handle(struct httpd_req *r, void *arg)
{
    struct reg_svc *s = arg;
    if (service_handle_builtin(s->sc, r))
        return;
    if (strv_eq_cstr(r->h.path, "/token")) {
        reg_auth_token(s, r);
        return;
    }
    struct rreq *q = calloc(1, sizeof(*q));
    if (!q) {
        httpd_respond(r, 503, "text/plain", "out of memory\n", 14);
        return;
    }
    q->r = r;
    q->w = r->worker->data;
    q->s = s;
    q->fd = -1;
    if (!route(q)) {
        fail(q, 404, "NAME_UNKNOWN", "repository name not known to registry");
        return;
    }
    if (q->kind != K_BASE && q->kind != K_CATALOG && !reg_name_ok(q->name)) {
        fail(q, 400, "NAME_INVALID", "invalid repository name");
        return;
    }
    bool get = strv_eq_cstr(r->h.method, "GET") || r->h.is_head;
    if (s->conf->proxied && !get) {
        fail(q, 405, "UNSUPPORTED", "this registry is a pull-through cache: it takes no pushes or deletes");
        return;
    }
    unsigned need = get ? REG_PULL : strv_eq_cstr(r->h.method, "DELETE") ? REG_DELETE : REG_PUSH;
    bool whole = q->kind == K_BASE || q->kind == K_CATALOG;
    if (!reg_auth_check(s, r, whole ? NULL : q->name, need, q->actor, sizeof(q->actor))) {
        rreq_free(q);      /* answered with the challenge */
        return;
    }
    if (q->kind == K_BASE) {
        reply(q, 200, "application/json", "{}\n", 3);
        return;
    }
    switch (q->kind) {
    case K_BLOB:
        if (get || strv_eq_cstr(r->h.method, "DELETE"))
            get_blob(q);
        else
            fail(q, 405, "UNSUPPORTED", "the operation is unsupported");
        return;
    case K_UPLOAD: upload(q); return;
    case K_MANIFEST: manifest(q); return;
    case K_TAGS:
    case K_CATALOG:
        if (get)
            listing(q);
        else
            fail(q, 405, "UNSUPPORTED", "the operation is unsupported");
        return;
    case K_REFERRERS: referrers(q); return;
    default:
        fail(q, 404, "NAME_UNKNOWN", "not found");
    }
}
