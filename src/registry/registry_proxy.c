/* registry_proxy.c - a pull-through cache of an upstream registry (proxy.remote).
 *
 * A manifest asked by tag is asked of the upstream every time (a tag moves), and
 * served from the local store when the upstream cannot be reached; one asked by
 * digest, and every blob, is fetched once and kept. Fetches run on the worker's
 * loop: manifests whole (httpc_send, at most REG_MAX_MANIFEST), blobs streamed
 * into an upload file, hashed as they arrive, then verified against their digest
 * and stored as if pushed. The upstream's auth is the Docker token scheme (or
 * basic): a 401 names a realm, the token is asked there with proxy.username's
 * credentials (or anonymously), kept per repository until it expires, and the
 * request sent again once.
 */
#include "registry_internal.h"
#include "core/httpc.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ACCEPT_ALL "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " \
                   "application/vnd.docker.distribution.manifest.v2+json, "                            \
                   "application/vnd.docker.distribution.manifest.list.v2+json"

struct reg_fetch {
    struct reg_worker *w;
    bool blob;
    char repo[REG_MAX_NAME + 1];
    char ref[256];
    reg_fetch_cb cb;
    void *arg;
    int attempts;                   /* sends so far (a 401 earns one more) */
    struct httpc_call *call;
    struct buf raw;                 /* a blob's request as sent */
    /* a blob's body */
    int status;
    char challenge[600];            /* WWW-Authenticate of a 401 */
    char upath[700];
    int fd;
    EVP_MD_CTX *md;
    struct reg_store_op *store;     /* the fetched blob being stored (in S3) */
    char *location;                 /* a redirect to follow (a blob on a CDN or in S3) */
    int redirects;
};

static void fetch_free(struct reg_fetch *f)
{
    reg_store_cancel(f->store);
    free(f->location);
    if (f->fd >= 0) {
        close(f->fd);
        unlink(f->upath);
    }
    EVP_MD_CTX_free(f->md);
    buf_free(&f->raw);
    free(f);
}

static void finish(struct reg_fetch *f, int status)
{
    f->call = NULL;
    reg_fetch_cb cb = f->cb;
    void *arg = f->arg;
    fetch_free(f);
    cb(arg, status);
}

void reg_fetch_cancel(struct reg_fetch *f)
{
    if (!f)
        return;
    if (f->call)
        httpc_cancel(f->call);
    fetch_free(f);
}

/* ---- upstream auth ---- */

static struct reg_token *token_for(struct reg_worker *w, const char *repo)
{
    time_t now = time(NULL);
    for (size_t i = 0; i < ARRAY_SIZE(w->tokens); i++)
        if (w->tokens[i].auth && strcmp(w->tokens[i].repo, repo) == 0 && w->tokens[i].exp > now)
            return &w->tokens[i];
    return NULL;
}

static void token_keep(struct reg_worker *w, const char *repo, const char *auth, long ttl)
{
    struct reg_token *t = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(w->tokens) && !t; i++)
        if (w->tokens[i].auth && strcmp(w->tokens[i].repo, repo) == 0)
            t = &w->tokens[i];
    if (!t)
        t = &w->tokens[w->tok_next++ % ARRAY_SIZE(w->tokens)];
    free(t->auth);
    snprintf(t->repo, sizeof(t->repo), "%s", repo);
    t->auth = strdup(auth);
    t->exp = time(NULL) + MAX(ttl - 10, 10);
}

static void basic(const struct reg_conf *c, char *out, size_t cap)
{
    char up[600];
    int n = snprintf(up, sizeof(up), "%s:%s", c->proxy_user, c->proxy_password ? c->proxy_password : "");
    unsigned char b64[820];
    EVP_EncodeBlock(b64, (const unsigned char *)up, MIN(n, (int)sizeof(up) - 1));
    snprintf(out, cap, "Basic %s", b64);
    memset(up, 0, sizeof(up));
}

void reg_challenge_param(const char *ch, const char *key, char *out, size_t cap)
{
    out[0] = 0;
    size_t kl = strlen(key);
    for (const char *p = ch; (p = strstr(p, key)); p += kl) {
        if ((p != ch && p[-1] != ' ' && p[-1] != ',') || p[kl] != '=')
            continue;
        const char *v = p + kl + 1;
        bool quoted = *v == '"';
        v += quoted;
        size_t n = quoted ? strcspn(v, "\"") : strcspn(v, ", ");
        snprintf(out, cap, "%.*s", (int)MIN(n, cap - 1), v);
        return;
    }
}

static bool send_request(struct reg_fetch *f);

static void token_done(const struct httpc_response *resp, void *arg)
{
    struct reg_fetch *f = arg;
    f->call = NULL;
    json_t *j = !resp->error && resp->status == 200 ? json_loadb(resp->body.p, resp->body.n, 0, NULL) : NULL;
    json_t *t = json_object_get(j, "token");
    if (!json_is_string(t))
        t = json_object_get(j, "access_token");
    if (!json_is_string(t)) {
        log_warn("the upstream registry's token endpoint gave no token", "status", log_int(resp->status),
                 "repository", f->repo);
        json_decref(j);
        finish(f, resp->status == 401 || resp->status == 403 ? 401 : 502);
        return;
    }
    json_t *ttl = json_object_get(j, "expires_in");
    char auth[8300];
    snprintf(auth, sizeof(auth), "Bearer %s", json_string_value(t));
    token_keep(f->w, f->repo, auth, json_is_integer(ttl) ? (long)json_integer_value(ttl) : 60);
    json_decref(j);
    if (!send_request(f))
        finish(f, 502);
}

/* After a 401: earns credentials as the challenge asks, then sends again; or gives up. */
static void authenticate(struct reg_fetch *f)
{
    const struct reg_conf *c = f->w->s->conf;
    if (f->attempts > 1) {
        finish(f, 401);
        return;
    }
    if (strncasecmp(f->challenge, "Basic", 5) == 0) {
        if (!c->proxy_user) {
            finish(f, 401);
            return;
        }
        char b[900];
        basic(c, b, sizeof(b));
        token_keep(f->w, f->repo, b, 3600);
        if (!send_request(f))
            finish(f, 502);
        return;
    }
    char realm[400], service[200], scope[400];
    reg_challenge_param(f->challenge, "realm", realm, sizeof(realm));
    reg_challenge_param(f->challenge, "service", service, sizeof(service));
    reg_challenge_param(f->challenge, "scope", scope, sizeof(scope));
    if (strncasecmp(f->challenge, "Bearer", 6) != 0 || !realm[0]) {
        finish(f, 401);
        return;
    }
    struct buf url = BUF_INIT;
    buf_puts(&url, realm);
    buf_puts(&url, strchr(realm, '?') ? "&service=" : "?service=");
    http_uri_encode(&url, service, strlen(service), false);
    buf_puts(&url, "&scope=");
    if (!scope[0])
        snprintf(scope, sizeof(scope), "repository:%s:pull", f->repo);
    http_uri_encode(&url, scope, strlen(scope), false);
    buf_putc(&url, 0);
    struct stack_url u;
    char err[300];
    if (stack_url_parse(buf_head(&url), &u, err, sizeof(err))) {
        log_warn("the upstream registry's token realm is unusable", "realm", realm, "error", err);
        buf_free(&url);
        finish(f, 502);
        return;
    }
    buf_free(&url);
    char b[900];
    const char *hdrs[2] = { NULL, NULL };
    char line[920];
    if (c->proxy_user) {
        basic(c, b, sizeof(b));
        snprintf(line, sizeof(line), "Authorization: %s", b);
        hdrs[0] = line;
    }
    struct httpc_request req = { .method = "GET", .addr = u.addr, .host = u.host, .target = u.target,
                                 .headers = hdrs, .tls = u.tls, .timeout_ms = 30000 };
    f->call = httpc_send(f->w->hc, &req, token_done, f);
    stack_url_free(&u);
    memset(line, 0, sizeof(line));
    if (!f->call)
        finish(f, 502);
}

/* ---- manifests ---- */

static void manifest_done(const struct httpc_response *resp, void *arg)
{
    struct reg_fetch *f = arg;
    f->call = NULL;
    if (resp->error) {
        finish(f, 502);
        return;
    }
    if (resp->status == 401) {
        f->challenge[0] = 0;
        for (size_t i = 0; i < resp->nheaders; i++)
            if (strv_caseeq_cstr(resp->headers[i].name, "www-authenticate"))
                snprintf(f->challenge, sizeof(f->challenge), "%.*s", (int)resp->headers[i].value.n,
                         resp->headers[i].value.p);
        authenticate(f);
        return;
    }
    if (resp->status != 200) {
        finish(f, resp->status == 404 ? 404 : 502);
        return;
    }
    char ctype[128] = "";
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strv_caseeq_cstr(resp->headers[i].name, "content-type"))
            snprintf(ctype, sizeof(ctype), "%.*s", (int)MIN(resp->headers[i].value.n, sizeof(ctype) - 1),
                     resp->headers[i].value.p);
    char *semi = strchr(ctype, ';');
    if (semi)
        *semi = 0;
    struct reg_manifest m;
    struct buf refs = BUF_INIT;
    bool index = false;
    const char *err = reg_manifest_parse(resp->body.p, resp->body.n, ctype, &m, &refs, &index);
    bool by_digest = strchr(f->ref, ':') != NULL;
    if (!err && by_digest && strcmp(m.digest, f->ref) != 0)
        err = "its digest is not the one asked";
    const char *missing;
    int rc = err ? -EINVAL
                 : reg_manifest_put(f->w->db, f->w->s->conf->path, f->repo, by_digest ? NULL : f->ref, &m,
                                    resp->body.p, resp->body.n, &refs, index, false, &missing);
    if (err)
        log_warn("the upstream registry sent a bad manifest", "repository", f->repo, "reference", f->ref, "error",
                 err);
    reg_manifest_free(&m);
    buf_free(&refs);
    finish(f, rc ? 502 : 0);
}

/* ---- blobs ---- */

static void blob_head(void *arg, const struct http_response *resp)
{
    struct reg_fetch *f = arg;
    f->status = resp->status;
    f->challenge[0] = 0;
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strv_caseeq_cstr(resp->headers[i].name, "www-authenticate"))
            snprintf(f->challenge, sizeof(f->challenge), "%.*s", (int)resp->headers[i].value.n,
                     resp->headers[i].value.p);
    if (resp->status >= 301 && resp->status <= 308 && resp->status != 304 && resp->status != 305) {
        for (size_t i = 0; i < resp->nheaders; i++)
            if (strv_caseeq_cstr(resp->headers[i].name, "location")) {
                free(f->location);
                f->location = strv_dup(resp->headers[i].value);
            }
        return;
    }
    if (resp->status != 200)
        return;
    char id[33];
    f->fd = reg_upload_create(f->w->s->conf->path, id, f->upath, sizeof(f->upath));
    if (strncmp(f->ref, "sha256:", 7) == 0 && (f->md = EVP_MD_CTX_new()))
        EVP_DigestInit_ex(f->md, EVP_sha256(), NULL);
    if (f->fd < 0)
        f->status = 507;
}

static void blob_data(void *arg, const char *p, size_t n)
{
    struct reg_fetch *f = arg;
    if (f->fd < 0)
        return;
    if (f->md)
        EVP_DigestUpdate(f->md, p, n);
    while (n) {
        ssize_t k = write(f->fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            f->status = 507;
            close(f->fd);
            unlink(f->upath);
            f->fd = -1;
            return;
        }
        p += k;
        n -= (size_t)k;
    }
}

static void blob_stored(void *arg, int rc)
{
    struct reg_fetch *f = arg;
    f->store = NULL;
    if (rc) {
        unlink(f->upath);
        if (rc == -EBADMSG)
            log_warn("the upstream registry sent a blob whose bytes do not match its digest", "repository", f->repo,
                     "digest", f->ref);
    }
    finish(f, rc ? (rc == -ENOSPC ? 507 : 502) : 0);
}

static const struct httpc_stream_ops blob_ops;

/* Follows a redirect: an absolute URL elsewhere (a CDN, a presigned S3 URL: no
 * credentials go there) or a path on the upstream. */
static bool follow(struct reg_fetch *f)
{
    const struct stack_url *up = &f->w->s->conf->proxy_url;
    struct stack_url u;
    char err[300];
    bool same = f->location[0] == '/';
    if (same) {
        u = *up;
    } else if (stack_url_parse(f->location, &u, err, sizeof(err))) {
        log_warn("the upstream registry redirected to an unusable URL", "location", f->location, "error", err);
        return false;
    }
    const char *target = same ? f->location : u.target;
    buf_reset(&f->raw);
    buf_printf(&f->raw, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cairn-registry\r\n", target, u.host);
    struct reg_token *t = same ? token_for(f->w, f->repo) : NULL;
    if (t)
        buf_printf(&f->raw, "Authorization: %s\r\n", t->auth);
    buf_puts(&f->raw, "\r\n");
    f->status = 0;
    struct httpc_stream_req req = { .addr = u.addr, .raw = buf_head(&f->raw), .raw_len = buf_used(&f->raw),
                                    .tls = u.tls ? f->w->s->up_tls : NULL, .sni = u.tls ? u.host : NULL,
                                    .pool = same ? &f->w->up_pool : NULL };
    int e;
    bool reused;
    if (!same && u.tls && !f->w->s->up_tls) {
        log_warn("the upstream registry redirected to https, and TLS to it is not set up", "location", f->location);
        stack_url_free(&u);
        return false;
    }
    f->call = httpc_stream(f->w->hc, &req, &blob_ops, f, &e, &reused);
    if (!same)
        stack_url_free(&u);
    return f->call != NULL;
}

static void blob_done(void *arg, bool reusable)
{
    struct reg_fetch *f = arg;
    (void)reusable;
    f->call = NULL;
    if (f->status == 401) {
        authenticate(f);
        return;
    }
    if (f->location && f->status >= 300 && f->status < 400) {
        if (f->redirects++ < 5 && follow(f))
            return;
        finish(f, 502);
        return;
    }
    if (f->status != 200 || f->fd < 0) {
        finish(f, f->status == 404 ? 404 : f->status == 507 ? 507 : 502);
        return;
    }
    close(f->fd);
    f->fd = -1;
    /* with files, f is finished (and gone) when this returns */
    struct reg_store_op *op = reg_blob_store(f->w, f->repo, f->upath, f->ref, f->md, blob_stored, f);
    if (op)
        f->store = op;
}

static void blob_failed(void *arg, int err, enum httpc_stage stage, unsigned flags)
{
    struct reg_fetch *f = arg;
    (void)err;
    (void)stage;
    f->call = NULL;
    if (f->fd >= 0) {
        close(f->fd);
        unlink(f->upath);
        f->fd = -1;
    }
    /* a pooled connection the upstream had closed: once more on a new one */
    if ((flags & HTTPC_F_REUSED) && !(flags & HTTPC_F_GOT_BYTES) && f->attempts < 3) {
        EVP_MD_CTX_free(f->md);
        f->md = NULL;
        if (send_request(f))
            return;
    }
    finish(f, 502);
}

static const struct httpc_stream_ops blob_ops = { NULL, blob_head, blob_data, blob_done, blob_failed };


/* ---- requests ---- */

/* Sends the request (with the repository's credentials, if any); false when it
 * cannot start. */
static bool send_request(struct reg_fetch *f)
{
    const struct reg_conf *c = f->w->s->conf;
    const struct stack_url *u = &c->proxy_url;
    f->attempts++;
    char target[900];
    size_t pl = strlen(u->target);
    while (pl && u->target[pl - 1] == '/')
        pl--;
    snprintf(target, sizeof(target), "%.*s/v2/%s/%s/%s", (int)pl, u->target, f->repo, f->blob ? "blobs" : "manifests",
             f->ref);
    struct reg_token *t = token_for(f->w, f->repo);
    char auth[8400] = "";
    if (t)
        snprintf(auth, sizeof(auth), "Authorization: %s", t->auth);
    if (!f->blob) {
        const char *hdrs[3] = { "Accept: " ACCEPT_ALL, auth[0] ? auth : NULL, NULL };
        struct httpc_request req = { .method = "GET", .addr = u->addr, .host = u->host, .target = target,
                                     .headers = hdrs, .tls = u->tls, .timeout_ms = 30000 };
        f->call = httpc_send(f->w->hc, &req, manifest_done, f);
        return f->call != NULL;
    }
    buf_reset(&f->raw);
    buf_printf(&f->raw, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cairn-registry\r\n%s%s\r\n", target, u->host, auth,
               auth[0] ? "\r\n" : "");
    f->status = 0;
    struct httpc_stream_req req = { .addr = u->addr, .raw = buf_head(&f->raw), .raw_len = buf_used(&f->raw),
                                    .tls = u->tls ? f->w->s->up_tls : NULL, .sni = u->tls ? u->host : NULL,
                                    .pool = &f->w->up_pool };
    int err;
    bool reused;
    f->call = httpc_stream(f->w->hc, &req, &blob_ops, f, &err, &reused);
    return f->call != NULL;
}

static struct reg_fetch *fetch(struct reg_worker *w, bool blob, const char *repo, const char *ref, reg_fetch_cb cb,
                               void *arg)
{
    struct reg_fetch *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->w = w;
    f->blob = blob;
    f->fd = -1;
    f->cb = cb;
    f->arg = arg;
    snprintf(f->repo, sizeof(f->repo), "%s", repo);
    snprintf(f->ref, sizeof(f->ref), "%s", ref);
    if (!send_request(f)) {
        fetch_free(f);
        return NULL;
    }
    return f;
}

struct reg_fetch *reg_proxy_manifest(struct reg_worker *w, const char *repo, const char *ref, reg_fetch_cb cb,
                                     void *arg)
{
    return fetch(w, false, repo, ref, cb, arg);
}

struct reg_fetch *reg_proxy_blob(struct reg_worker *w, const char *repo, const char *digest, reg_fetch_cb cb,
                                 void *arg)
{
    return fetch(w, true, repo, digest, cb, arg);
}

int reg_proxy_worker_init(struct reg_worker *w, struct loop *loop)
{
    struct httpc_opts o;
    httpc_opts_defaults(&o);
    o.limits.max_body = REG_MAX_MANIFEST;
    o.tls = w->s->up_tls;
    httpc_pool_init(&w->up_pool, 8, 30000);
    return (w->hc = httpc_new(loop, &o)) ? 0 : -ENOMEM;
}

void reg_proxy_worker_free(struct reg_worker *w)
{
    if (w->hc)
        httpc_pool_flush(w->hc, &w->up_pool);
    httpc_free(&w->hc);
    for (size_t i = 0; i < ARRAY_SIZE(w->tokens); i++) {
        free(w->tokens[i].auth);
        w->tokens[i].auth = NULL;
    }
}
