/* bk_s3.c - a repository in S3 (cairn's s3 role, Ceph RGW or AWS), in restic's
 * default layout under the prefix: config, keys/, data/XX/, index/, snapshots/,
 * locks/ - the same objects `restic -r s3:URL/BUCKET/PREFIX` reads and writes.
 *
 * The engine is synchronous and runs on one thread at a time per backend call
 * (a backup's workers each save their own packs): each call runs the core S3
 * client on a private loop until it answers, under the backend's mutex. Whole
 * calls are retried by the client (network errors, 5xx, 429); ranged reads here.
 */
#include "backup_internal.h"
#include "core/http1.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define S3_TRIES 3
#define LIST_MAX_BYTES (64u << 20)

struct s3be {
    struct bk_backend be;
    struct s3c_conf conf;               /* a copy: prefix ends with '/' (or is empty) */
    char *prefix;
    pthread_mutex_t mu;
};

struct wait {
    struct loop *loop;
    int status, err;
    struct buf body;
    int64_t length;
    bool done;
};

static void on_result(void *arg, const struct s3c_result *res)
{
    struct wait *w = arg;
    w->status = res->status;
    w->err = res->err;
    buf_append(&w->body, res->body.p, res->body.n);
    w->length = -1;
    for (size_t i = 0; res->resp && i < res->resp->nheaders; i++)
        if (strv_caseeq_cstr(res->resp->headers[i].name, "content-length")) {
            uint64_t v;
            if (!strv_to_u64(res->resp->headers[i].value, &v))
                w->length = (int64_t)v;
        }
    w->done = true;
    loop_stop(w->loop);
}

/* one whole call on a private loop */
static int call(struct s3be *s, const char *method, const char *key, const char *query, const void *body, size_t len,
                struct wait *w)
{
    struct loop loop;
    int e = loop_init(&loop);
    if (e)
        return e;
    w->loop = &loop;
    struct s3c *c = s3c_new(&loop, &s->conf);
    if (!c || !s3c_call(c, method, key, query, body, len, on_result, w))
        e = -ENOMEM;
    else
        loop_run(&loop);
    s3c_free(&c);
    loop_destroy(&loop);
    if (!e && !w->done)
        e = -EIO;
    if (!e && w->status == 0)
        e = w->err ? w->err : -EIO;
    return e;
}

static void key_of(enum bk_ftype t, const char *name, char *out, size_t n)
{
    if (t == BK_CONFIG)
        snprintf(out, n, "config");
    else if (t == BK_DATA)
        snprintf(out, n, "data/%.2s/%s", name, name);
    else
        snprintf(out, n, "%s/%s", bk_ftype_dir[t], name);
}

static int status_err(int st)
{
    return st == 404 ? -ENOENT : st == 403 || st == 401 ? -EACCES : st == 416 ? -ERANGE : -EIO;
}

static int s3_save(struct bk_backend *be, enum bk_ftype t, const char *name, const void *p, size_t n)
{
    struct s3be *s = (struct s3be *)be;
    char key[256];
    key_of(t, name, key, sizeof(key));
    struct wait w = { 0 };
    pthread_mutex_lock(&s->mu);
    int e = call(s, "PUT", key, NULL, p, n, &w);
    pthread_mutex_unlock(&s->mu);
    if (!e && (w.status < 200 || w.status >= 300))
        e = status_err(w.status);
    if (e)
        log_warn("S3 PUT failed", "key", key, "status", log_int(w.status), "body", buf_head(&w.body));
    buf_free(&w.body);
    return e;
}

/* ranged reads through the streamed GET */
struct rd {
    struct loop *loop;
    struct buf *out;
    int status, err;
    bool done;
    size_t start;
};

static void rd_head(void *arg, const struct http_response *resp)
{
    ((struct rd *)arg)->status = resp->status;
}

static void rd_data(void *arg, const char *p, size_t n)
{
    struct rd *r = arg;
    if (r->status >= 200 && r->status < 300 && buf_append(r->out, p, n))
        r->err = -ENOMEM;
}

static void rd_done(void *arg, bool reusable)
{
    struct rd *r = arg;
    (void)reusable;
    r->done = true;
    loop_stop(r->loop);
}

static void rd_failed(void *arg, int err, enum httpc_stage stage, unsigned flags)
{
    struct rd *r = arg;
    (void)stage;
    (void)flags;
    r->err = err ? err : -EIO;
    r->done = true;
    loop_stop(r->loop);
}

static const struct httpc_stream_ops rd_ops = { .head = rd_head, .data = rd_data, .done = rd_done,
                                                .failed = rd_failed };

static int s3_load(struct bk_backend *be, enum bk_ftype t, const char *name, uint64_t off, uint64_t len,
                   struct buf *out)
{
    struct s3be *s = (struct s3be *)be;
    char key[256], range[64];
    key_of(t, name, key, sizeof(key));
    if (len)
        snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off, (unsigned long long)(off + len - 1));
    else
        snprintf(range, sizeof(range), "bytes=%llu-", (unsigned long long)off);
    int e = -EIO;
    size_t start = out->len;
    for (int tries = 0; tries < S3_TRIES; tries++) {
        out->len = start;
        struct loop loop;
        if ((e = loop_init(&loop)))
            return e;
        struct rd r = { .loop = &loop, .out = out };
        pthread_mutex_lock(&s->mu);
        struct s3c *c = s3c_new(&loop, &s->conf);
        if (!c || !s3c_get_stream(c, key, off || len ? range : NULL, &rd_ops, &r))
            r.err = -ENOMEM;
        else
            loop_run(&loop);
        s3c_free(&c);
        pthread_mutex_unlock(&s->mu);
        loop_destroy(&loop);
        e = r.err;
        if (!e && (r.status < 200 || r.status >= 300))
            e = status_err(r.status);
        if (!e && len && out->len - start != len)
            e = -EIO;
        if (!e || e == -ENOENT || e == -EACCES || e == -ERANGE || e == -ENOMEM)
            break;
        usleep(200000 * (unsigned)(tries + 1));
    }
    if (e)
        out->len = start;
    return e;
}

static int s3_stat(struct bk_backend *be, enum bk_ftype t, const char *name, uint64_t *size)
{
    struct s3be *s = (struct s3be *)be;
    char key[256];
    key_of(t, name, key, sizeof(key));
    struct wait w = { 0 };
    pthread_mutex_lock(&s->mu);
    int e = call(s, "HEAD", key, NULL, NULL, 0, &w);
    pthread_mutex_unlock(&s->mu);
    if (!e && (w.status < 200 || w.status >= 300))
        e = status_err(w.status);
    if (!e)
        *size = w.length >= 0 ? (uint64_t)w.length : 0;
    buf_free(&w.body);
    return e;
}

/* the text between <tag> and </tag> after *pos; advances *pos */
static bool xml_next(const char *s, size_t n, size_t *pos, const char *tag, struct strv *out)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = memmem(s + *pos, n - *pos, open, strlen(open));
    if (!a)
        return false;
    a += strlen(open);
    const char *b = memmem(a, (size_t)(s + n - a), close, strlen(close));
    if (!b)
        return false;
    *out = strv_make(a, (size_t)(b - a));
    *pos = (size_t)(b - s) + strlen(close);
    return true;
}

static int s3_list(struct bk_backend *be, enum bk_ftype t, bk_list_cb cb, void *arg)
{
    struct s3be *s = (struct s3be *)be;
    char want[512];
    snprintf(want, sizeof(want), "%s%s/", s->prefix, bk_ftype_dir[t]);
    char token[1024] = "";
    int e = 0;
    for (int page = 0; page < 100000 && !e; page++) {
        struct buf q = BUF_INIT;
        buf_puts(&q, "list-type=2&max-keys=1000&prefix=");
        http_uri_encode(&q, want, strlen(want), false);
        if (token[0]) {
            buf_puts(&q, "&continuation-token=");
            http_uri_encode(&q, token, strlen(token), false);
        }
        struct wait w = { 0 };
        pthread_mutex_lock(&s->mu);
        e = call(s, "GET", NULL, buf_head(&q), NULL, 0, &w);
        pthread_mutex_unlock(&s->mu);
        buf_free(&q);
        if (!e && w.status != 200)
            e = status_err(w.status);
        if (e || buf_used(&w.body) > LIST_MAX_BYTES) {
            buf_free(&w.body);
            return e ? e : -EFBIG;
        }
        const char *x = buf_head(&w.body);
        size_t n = buf_used(&w.body), pos = 0;
        struct strv contents;
        while (!e && xml_next(x, n, &pos, "Contents", &contents)) {
            struct strv k, sz;
            size_t p2 = 0;
            if (!xml_next(contents.p, contents.n, &p2, "Key", &k))
                continue;
            p2 = 0;
            uint64_t size = 0;
            if (xml_next(contents.p, contents.n, &p2, "Size", &sz))
                strv_to_u64(sz, &size);
            const char *slash = memrchr(k.p, '/', k.n);
            const char *base = slash ? slash + 1 : k.p;
            size_t bl = (size_t)(k.p + k.n - base);
            char name[128];
            if (bl == 0 || bl >= sizeof(name))
                continue;
            memcpy(name, base, bl);
            name[bl] = 0;
            e = cb(arg, name, size);
        }
        struct strv trunc, next;
        size_t p3 = 0, p4 = 0;
        bool more = xml_next(x, n, &p3, "IsTruncated", &trunc) && strv_eq_cstr(trunc, "true") &&
                    xml_next(x, n, &p4, "NextContinuationToken", &next) && next.n < sizeof(token);
        if (more) {
            memcpy(token, next.p, next.n);
            token[next.n] = 0;
        }
        buf_free(&w.body);
        if (!more)
            break;
    }
    return e < 0 ? e : e;
}

static int s3_remove(struct bk_backend *be, enum bk_ftype t, const char *name)
{
    struct s3be *s = (struct s3be *)be;
    char key[256];
    key_of(t, name, key, sizeof(key));
    struct wait w = { 0 };
    pthread_mutex_lock(&s->mu);
    int e = call(s, "DELETE", key, NULL, NULL, 0, &w);
    pthread_mutex_unlock(&s->mu);
    if (!e && (w.status < 200 || w.status >= 300))
        e = status_err(w.status);
    buf_free(&w.body);
    return e;
}

static void s3_free(struct bk_backend *be)
{
    struct s3be *s = (struct s3be *)be;
    free(s->prefix);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int s3_tmp_file(struct bk_backend *be, char *path, size_t n)
{
    (void)be;
    const char *dir = getenv("TMPDIR");
    if (snprintf(path, n, "%s/cairn-pack-XXXXXX", dir && *dir ? dir : "/tmp") >= (int)n)
        return -ENAMETOOLONG;
    int fd = mkostemp(path, O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static void put_done(void *arg, const struct s3c_result *res)
{
    struct wait *w = arg;
    w->status = res->status;
    w->err = res->err;
    buf_append(&w->body, res->body.p, res->body.n);
    w->done = true;
    loop_stop(w->loop);
}

/* one PUT of the file (or a multipart upload past S3C_PART) */
static int s3_save_file(struct bk_backend *be, enum bk_ftype t, const char *name, const char *tmp, uint64_t size)
{
    struct s3be *s = (struct s3be *)be;
    char key[256];
    key_of(t, name, key, sizeof(key));
    struct wait w = { 0 };
    struct loop loop;
    int e = loop_init(&loop);
    if (!e) {
        w.loop = &loop;
        /* no lock: each call has its own client and loop, so the workers' packs
         * upload side by side */
        struct s3c *c = s3c_new(&loop, &s->conf);
        if (!c || !s3c_put_file(c, key, tmp, size, put_done, &w))
            e = -ENOMEM;
        else
            loop_run(&loop);
        s3c_free(&c);
        loop_destroy(&loop);
    }
    if (!e && !w.done)
        e = -EIO;
    if (!e && (w.status < 200 || w.status >= 300))
        e = w.status ? status_err(w.status) : (w.err ? w.err : -EIO);
    if (e)
        log_warn("S3 upload failed", "key", key, "status", log_int(w.status), "body", buf_head(&w.body));
    buf_free(&w.body);
    unlink(tmp);
    return e;
}

static const struct bk_backend_ops s3_ops = { s3_save, s3_load, s3_stat, s3_list, s3_remove,
                                              s3_free, s3_tmp_file, s3_save_file };

int bk_s3_open(const struct s3c_conf *conf, struct bk_backend **out, char *err, size_t errlen)
{
    struct s3be *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->conf = *conf;
    size_t pl = strlen(conf->prefix);
    while (pl && conf->prefix[pl - 1] == '/')
        pl--;
    const char *p = conf->prefix;
    while (pl && *p == '/') {
        p++;
        pl--;
    }
    if (asprintf(&s->prefix, "%.*s%s", (int)pl, p, pl ? "/" : "") < 0) {
        free(s);
        return -ENOMEM;
    }
    s->conf.prefix = s->prefix;
    pthread_mutex_init(&s->mu, NULL);
    s->be.ops = &s3_ops;
    snprintf(s->be.desc, sizeof(s->be.desc), "s3:%s/%s/%s", conf->endpoint.text ? conf->endpoint.text : "",
             conf->bucket, s->prefix);
    /* the bucket must be there: a clear error now rather than on the first write */
    struct wait w = { 0 };
    int e = call(s, "HEAD", NULL, NULL, NULL, 0, &w);
    buf_free(&w.body);
    if (e || w.status != 200) {
        snprintf(err, errlen, "repository %s: the bucket does not answer (%s)", s->be.desc,
                 e ? cairn_strerror(e) : w.status == 404 ? "no such bucket" : w.status == 403 ? "access denied"
                                                                                             : "HTTP error");
        s3_free(&s->be);
        return e ? e : status_err(w.status);
    }
    *out = &s->be;
    return 0;
}
