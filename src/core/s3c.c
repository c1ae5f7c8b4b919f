/* s3c.c - an S3 client on the event loop (see s3c.h). */
#include "core/s3c.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct s3c {
    struct loop *loop;
    const struct s3c_conf *conf;
    struct httpc *hc;
    struct tls_ctx *tls;
    struct httpc_pool pool;         /* for streamed GETs */
    struct s3c_op *orphans;         /* calls nobody waits for (no callback) */
};

struct s3c_op {
    struct s3c *c;
    struct s3c_op *next, **pprev;   /* on c->orphans */
    s3c_cb cb;
    void *arg;
    /* a call */
    char method[8];
    char *key, *query;
    const void *body;
    size_t len;
    int tries;
    struct httpc_call *call;
    struct loop_timer retry;
    /* a file: one PUT, or a multipart upload */
    struct s3c_op *sub;
    int fd;
    uint64_t size, off;
    char *data;                     /* the part (or whole file) being sent */
    char *upload_id;
    struct buf etags;               /* the CompleteMultipartUpload body being built */
    int part;
};

/* ---- configuration ---- */

int s3c_conf_parse(struct cfg *c, const cfg_node *n, const char *path, const struct stack *st,
                   struct s3c_conf *out)
{
    static const char *const keys[] = { "endpoint", "bucket", "region", "prefix", "access_key", "secret_key_file",
                                        "secret_key_env", "secret_key", "access_key_file", "access_key_env", NULL };
    cfg_node *v[10];
    memset(out, 0, sizeof(*out));
    if (cfg_map_fields(c, n, path, keys, v) || !v[0] || !v[1] || (!v[4] && !v[8] && !v[9]))
        return cfg_error(c, n, path, "expected {endpoint: URL, bucket: B, access_key: K, secret_key_file: F, ...}");
    char p[300];
    int bad = 0;
    CFG_PATH(p, "%s.endpoint", path);
    bad |= stack_url(c, v[0], p, &out->endpoint);
    CFG_PATH(p, "%s.bucket", path);
    bad |= cfg_get_string(c, v[1], p, &out->bucket);
    CFG_PATH(p, "%s.region", path);
    if (v[2])
        bad |= cfg_get_string(c, v[2], p, &out->region);
    CFG_PATH(p, "%s.prefix", path);
    if (v[3])
        bad |= cfg_get_string(c, v[3], p, &out->prefix);
    if (stack_secret(c, v[8], v[9], v[4], n, path, "access_key", st, &out->access_key))
        bad = -EINVAL;
    if (stack_secret(c, v[5], v[6], v[7], n, path, "secret_key", st, &out->secret_key))
        bad = -EINVAL;
    if (!out->region)
        out->region = strdup("us-east-1");
    if (!out->prefix)
        out->prefix = strdup("");
    return bad || !out->region || !out->prefix ? -EINVAL : 0;
}

void s3c_conf_free(struct s3c_conf *conf)
{
    stack_url_free(&conf->endpoint);
    free(conf->bucket);
    free(conf->region);
    free(conf->prefix);
    free(conf->access_key);
    if (conf->secret_key)
        memset(conf->secret_key, 0, strlen(conf->secret_key));
    free(conf->secret_key);
    memset(conf, 0, sizeof(*conf));
}

/* ---- signing ---- */

void s3c_hmac(const void *key, size_t klen, const void *msg, size_t mlen, uint8_t out[32])
{
    unsigned len = 32;
    HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &len);
}

void s3c_signing_key(const char *secret, const char *date, const char *region, const char *service,
                     uint8_t key[32])
{
    char k[300];
    int n = snprintf(k, sizeof(k), "AWS4%s", secret);
    uint8_t a[32], b[32];
    s3c_hmac(k, (size_t)MIN(n, (int)sizeof(k) - 1), date, strlen(date), a);
    s3c_hmac(a, 32, region, strlen(region), b);
    s3c_hmac(b, 32, service, strlen(service), a);
    s3c_hmac(a, 32, "aws4_request", 12, key);
    memset(k, 0, sizeof(k));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The query in canonical form: pairs sorted, "key" as "key=". */
static void canonical_query(struct buf *out, const char *query)
{
    if (!query || !*query)
        return;
    char *copy = strdup(query), *pairs[32], *save = NULL;
    size_t n = 0;
    for (char *p = copy ? strtok_r(copy, "&", &save) : NULL; p && n < ARRAY_SIZE(pairs); p = strtok_r(NULL, "&", &save))
        pairs[n++] = p;
    qsort(pairs, n, sizeof(*pairs), cmp_str);
    for (size_t i = 0; i < n; i++)
        buf_printf(out, "%s%s%s", i ? "&" : "", pairs[i], strchr(pairs[i], '=') ? "" : "=");
    free(copy);
}

/* The request target and its Authorization and x-amz-date header lines. */
static void sign(const struct s3c_conf *conf, const char *method, const char *key, const char *query,
                 struct buf *target, char *auth, size_t authcap, char *date_line, size_t datecap)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char amzdate[20], day[10];
    strftime(amzdate, sizeof(amzdate), "%Y%m%dT%H%M%SZ", &tm);
    strftime(day, sizeof(day), "%Y%m%d", &tm);
    /* the path: the endpoint's own path, then /bucket/prefix+key */
    struct buf path = BUF_INIT;
    size_t el = strlen(conf->endpoint.target);
    while (el && conf->endpoint.target[el - 1] == '/')
        el--;
    buf_append(&path, conf->endpoint.target, el);
    buf_putc(&path, '/');
    http_uri_encode(&path, conf->bucket, strlen(conf->bucket), false);
    if (key && *key) {
        buf_putc(&path, '/');
        char full[2048];
        snprintf(full, sizeof(full), "%s%s", conf->prefix, key);
        http_uri_encode(&path, full, strlen(full), true);
    }
    buf_putc(&path, 0);
    struct buf cq = BUF_INIT;
    canonical_query(&cq, query);
    buf_putc(&cq, 0);
    struct buf cr = BUF_INIT;
    buf_printf(&cr, "%s\n%s\n%s\nhost:%s\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:%s\n\n"
                    "host;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD",
               method, buf_head(&path), buf_head(&cq), conf->endpoint.host, amzdate);
    unsigned char h[32];
    char hx[65], scope[200], sts[400];
    EVP_Digest(buf_head(&cr), buf_used(&cr), h, NULL, EVP_sha256(), NULL);
    cairn_hex(h, 32, hx);
    snprintf(scope, sizeof(scope), "%s/%s/s3/aws4_request", day, conf->region);
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope, hx);
    uint8_t skey[32], sig[32];
    s3c_signing_key(conf->secret_key, day, conf->region, "s3", skey);
    s3c_hmac(skey, 32, sts, strlen(sts), sig);
    char sighex[65];
    cairn_hex(sig, 32, sighex);
    snprintf(auth, authcap,
             "Authorization: AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
             "Signature=%s",
             conf->access_key, scope, sighex);
    snprintf(date_line, datecap, "x-amz-date: %s", amzdate);
    buf_reset(target);
    buf_puts(target, buf_head(&path));
    if (buf_used(&cq) > 1) {
        buf_putc(target, '?');
        buf_puts(target, buf_head(&cq));
    }
    buf_putc(target, 0);
    buf_free(&path);
    buf_free(&cq);
    buf_free(&cr);
}

/* ---- the client ---- */

static void op_free(struct s3c_op *op);

struct s3c *s3c_new(struct loop *loop, const struct s3c_conf *conf)
{
    struct s3c *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = loop;
    c->conf = conf;
    if (conf->endpoint.tls) {
        char err[300];
        static const char *const alpn[] = { "http/1.1" };
        if (tls_client_new(&c->tls, true, NULL, alpn, 1, err, sizeof(err)))
            log_warn("TLS client setup failed: the S3 endpoint will fail", "error", err);
    }
    struct httpc_opts o;
    httpc_opts_defaults(&o);
    o.tls = c->tls;
    o.limits.max_body = 8u << 20;
    httpc_pool_init(&c->pool, 8, 30000);
    if (!(c->hc = httpc_new(loop, &o))) {
        tls_ctx_free(&c->tls);
        free(c);
        return NULL;
    }
    return c;
}

void s3c_free(struct s3c **cp)
{
    struct s3c *c = *cp;
    if (!c)
        return;
    while (c->orphans)
        op_free(c->orphans);
    httpc_pool_flush(c->hc, &c->pool);
    httpc_free(&c->hc);
    tls_ctx_free(&c->tls);
    free(c);
    *cp = NULL;
}

static void op_free(struct s3c_op *op)
{
    if (!op)
        return;
    if (op->pprev) {
        *op->pprev = op->next;
        if (op->next)
            op->next->pprev = op->pprev;
    }
    loop_timer_stop(&op->retry);
    if (op->call)
        httpc_cancel(op->call);
    op_free(op->sub);
    if (op->fd >= 0)
        close(op->fd);
    free(op->key);
    free(op->query);
    free(op->data);
    free(op->upload_id);
    buf_free(&op->etags);
    free(op);
}

void s3c_cancel(struct s3c_op *op)
{
    op_free(op);
}

static bool op_send(struct s3c_op *op);

static void op_retry(struct loop_timer *t)
{
    struct s3c_op *op = t->data;
    if (!op_send(op)) {
        struct s3c_result res = { .status = 0, .err = -ENOMEM };
        s3c_cb cb = op->cb;
        void *arg = op->arg;
        op_free(op);
        if (cb)
            cb(arg, &res);
    }
}

static void op_done(const struct httpc_response *resp, void *arg)
{
    struct s3c_op *op = arg;
    op->call = NULL;
    bool transient = resp->error || resp->status >= 500 || resp->status == 429;
    if (transient && op->tries < S3C_TRIES) {
        loop_timer_start(op->c->loop, &op->retry, S3C_RETRY_MS * (uint64_t)op->tries);
        return;
    }
    struct s3c_result res = { .status = resp->error ? 0 : resp->status, .err = resp->error, .body = resp->body,
                              .resp = resp };
    s3c_cb cb = op->cb;
    void *cbarg = op->arg;
    /* the callback may start the next call of a file's upload (using op's
     * memory): free the call only after it */
    op->cb = NULL;
    if (cb)
        cb(cbarg, &res);
    else if (res.status < 200 || res.status >= 300)
        log_warn("an S3 call failed", "method", op->method, "key", op->key, "status", log_int(res.status));
    op_free(op);
}

static bool op_send(struct s3c_op *op)
{
    const struct s3c_conf *conf = op->c->conf;
    struct buf target = BUF_INIT;
    char auth[600], date[64];
    sign(conf, op->method, op->key, op->query, &target, auth, sizeof(auth), date, sizeof(date));
    const char *hdrs[] = { auth, date, "x-amz-content-sha256: UNSIGNED-PAYLOAD", NULL };
    struct httpc_request req = { .method = op->method, .addr = conf->endpoint.addr, .host = conf->endpoint.host,
                                 .target = buf_head(&target), .headers = hdrs, .body = op->body,
                                 .body_len = op->len, .tls = conf->endpoint.tls, .timeout_ms = 120000 };
    op->tries++;
    op->call = httpc_send(op->c->hc, &req, op_done, op);
    buf_free(&target);
    return op->call != NULL;
}

static struct s3c_op *op_new(struct s3c *c, s3c_cb cb, void *arg)
{
    struct s3c_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->c = c;
    op->cb = cb;
    op->arg = arg;
    op->fd = -1;
    loop_timer_init(&op->retry, op_retry, op);
    return op;
}

struct s3c_op *s3c_call(struct s3c *c, const char *method, const char *key, const char *query, const void *body,
                        size_t len, s3c_cb cb, void *arg)
{
    struct s3c_op *op = op_new(c, cb, arg);
    if (!op)
        return NULL;
    snprintf(op->method, sizeof(op->method), "%s", method);
    op->key = strdup(key ? key : "");
    op->query = strdup(query ? query : "");
    op->body = body;
    op->len = len;
    if (!cb) {          /* the client's own: freed with it if still out */
        op->next = c->orphans;
        if (c->orphans)
            c->orphans->pprev = &op->next;
        op->pprev = &c->orphans;
        c->orphans = op;
    }
    if (!op->key || !op->query || !op_send(op)) {
        op_free(op);
        return NULL;
    }
    return op;
}

/* ---- files ---- */

static void file_end(struct s3c_op *f, int status, int err)
{
    struct s3c_result res = { .status = status, .err = err };
    s3c_cb cb = f->cb;
    void *arg = f->arg;
    f->sub = NULL;
    if (status != 200 && f->upload_id) {    /* abandon the parts sent (nobody waits for it) */
        char q[400];
        snprintf(q, sizeof(q), "uploadId=%s", f->upload_id);
        s3c_call(f->c, "DELETE", f->key, q, NULL, 0, NULL, NULL);
    }
    op_free(f);
    cb(arg, &res);
}

static void file_next_part(struct s3c_op *f);

static void part_done(void *arg, const struct s3c_result *res)
{
    struct s3c_op *f = arg;
    f->sub = NULL;
    if (res->status != 200) {
        file_end(f, res->status ? res->status : 502, res->err);
        return;
    }
    char etag[200] = "";
    for (size_t i = 0; res->resp && i < res->resp->nheaders; i++)
        if (strv_caseeq_cstr(res->resp->headers[i].name, "etag"))
            snprintf(etag, sizeof(etag), "%.*s", (int)MIN(res->resp->headers[i].value.n, sizeof(etag) - 1),
                     res->resp->headers[i].value.p);
    buf_printf(&f->etags, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", f->part, etag);
    file_next_part(f);
}

static void complete_done(void *arg, const struct s3c_result *res)
{
    struct s3c_op *f = arg;
    f->sub = NULL;
    /* a 200 whose body is an <Error> failed after all (S3's way) */
    bool ok = res->status == 200 && !memmem(res->body.p, res->body.n, "<Error>", 7);
    file_end(f, ok ? 200 : res->status == 200 ? 502 : res->status, res->err);
}

static void file_next_part(struct s3c_op *f)
{
    char q[500];
    if (f->off >= f->size) {    /* every part is there */
        buf_puts(&f->etags, "</CompleteMultipartUpload>");
        snprintf(q, sizeof(q), "uploadId=%s", f->upload_id);
        f->sub = s3c_call(f->c, "POST", f->key, q, buf_head(&f->etags), buf_used(&f->etags), complete_done, f);
        if (!f->sub)
            file_end(f, 0, -ENOMEM);
        return;
    }
    size_t n = (size_t)MIN((uint64_t)S3C_PART, f->size - f->off);
    if (pread(f->fd, f->data, n, (off_t)f->off) != (ssize_t)n) {
        file_end(f, 0, -EIO);
        return;
    }
    f->off += n;
    f->part++;
    snprintf(q, sizeof(q), "partNumber=%d&uploadId=%s", f->part, f->upload_id);
    f->sub = s3c_call(f->c, "PUT", f->key, q, f->data, n, part_done, f);
    if (!f->sub)
        file_end(f, 0, -ENOMEM);
}

static void initiate_done(void *arg, const struct s3c_result *res)
{
    struct s3c_op *f = arg;
    f->sub = NULL;
    const char *a = res->status == 200 ? memmem(res->body.p, res->body.n, "<UploadId>", 10) : NULL;
    const char *b = a ? memmem(a, (size_t)(res->body.p + res->body.n - a), "</UploadId>", 11) : NULL;
    if (!b) {
        file_end(f, res->status && res->status != 200 ? res->status : 502, res->err);
        return;
    }
    struct buf id = BUF_INIT;
    char raw[300];
    snprintf(raw, sizeof(raw), "%.*s", (int)MIN((size_t)(b - a - 10), sizeof(raw) - 1), a + 10);
    http_uri_encode(&id, raw, strlen(raw), false);
    buf_putc(&id, 0);
    f->upload_id = strdup(buf_head(&id));
    buf_free(&id);
    buf_puts(&f->etags, "<CompleteMultipartUpload>");
    file_next_part(f);
}

static void whole_done(void *arg, const struct s3c_result *res)
{
    struct s3c_op *f = arg;
    f->sub = NULL;
    file_end(f, res->status, res->err);
}

struct s3c_op *s3c_put_file(struct s3c *c, const char *key, const char *path, uint64_t size, s3c_cb cb, void *arg)
{
    struct s3c_op *f = op_new(c, cb, arg);
    if (!f)
        return NULL;
    f->key = strdup(key);
    f->size = size;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    f->data = malloc(MAX((size_t)MIN(size, (uint64_t)S3C_PART), 1));
    if (!f->key || f->fd < 0 || !f->data) {
        op_free(f);
        return NULL;
    }
    if (size <= S3C_PART) {
        if (pread(f->fd, f->data, (size_t)size, 0) != (ssize_t)size) {
            op_free(f);
            return NULL;
        }
        f->sub = s3c_call(c, "PUT", key, NULL, f->data, (size_t)size, whole_done, f);
    } else {
        f->sub = s3c_call(c, "POST", key, "uploads", NULL, 0, initiate_done, f);
    }
    if (!f->sub) {
        op_free(f);
        return NULL;
    }
    return f;
}

struct httpc_call *s3c_get_stream(struct s3c *c, const char *key, const char *range,
                                  const struct httpc_stream_ops *ops, void *arg)
{
    const struct s3c_conf *conf = c->conf;
    struct buf target = BUF_INIT, raw = BUF_INIT;
    char auth[600], date[64];
    sign(conf, "GET", key, NULL, &target, auth, sizeof(auth), date, sizeof(date));
    buf_printf(&raw, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n%s\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n",
               buf_head(&target), conf->endpoint.host, auth, date);
    if (range)
        buf_printf(&raw, "Range: %s\r\n", range);
    buf_puts(&raw, "\r\n");
    struct httpc_stream_req req = { .addr = conf->endpoint.addr, .raw = buf_head(&raw), .raw_len = buf_used(&raw),
                                    .tls = conf->endpoint.tls ? c->tls : NULL,
                                    .sni = conf->endpoint.tls ? conf->endpoint.host : NULL, .pool = &c->pool };
    int err;
    bool reused;
    struct httpc_call *call = httpc_stream(c->hc, &req, ops, arg, &err, &reused);
    buf_free(&target);
    buf_free(&raw);
    return call;
}
