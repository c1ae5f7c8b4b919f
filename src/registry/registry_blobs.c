/* registry_blobs.c - where blob bytes live: files under <path>/blobs, or S3.
 *
 * With storage.s3, layers and configs go to the bucket, each copy under a key of
 * its own (blobs/<alg>/<hex>/<random>), recorded in the stored table with its
 * size; manifests, tags and links stay in <path> with the metadata. An upload is
 * verified on the disk first (its bytes hash to the digest), then PUT (multipart
 * past 16 MiB), then recorded and linked in one transaction, and only then
 * acknowledged. GETs stream from the bucket (Range passed on) to the client,
 * reading from S3 no faster than the client takes the bytes.
 */
#include "registry_internal.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEND_CHUNK (256u << 10)
#define SEND_HIGH (1u << 20)        /* pending bytes past which reading waits */

/* ---- storing ---- */

struct reg_store_op {
    struct reg_worker *w;
    struct s3c_op *put;
    char repo[REG_MAX_NAME + 1];
    char digest[140];
    char key[300];
    char upath[700];
    long long size;
    reg_store_cb cb;
    void *arg;
};

static void store_done(struct reg_store_op *op, int rc)
{
    reg_store_cb cb = op->cb;
    void *arg = op->arg;
    free(op);
    cb(arg, rc);
}

static void put_done(void *arg, const struct s3c_result *res)
{
    struct reg_store_op *op = arg;
    op->put = NULL;
    if (res->status != 200) {
        log_warn("cannot store a blob in S3", "digest", op->digest, "status", log_int(res->status), "error",
                 res->err ? cairn_strerror(res->err) : "");
        store_done(op, -EIO);
        return;
    }
    int r = reg_stored_link(op->w->db, op->repo, op->digest, op->key, op->size);
    if (r == 1)         /* another copy was recorded first: this one is nobody's */
        s3c_call(op->w->s3, "DELETE", op->key, NULL, NULL, 0, NULL, NULL);
    if (r >= 0)
        unlink(op->upath);
    store_done(op, r < 0 ? r : 0);
}

struct reg_store_op *reg_blob_store(struct reg_worker *w, const char *repo, const char *upath, const char *digest,
                                    EVP_MD_CTX *hashed, reg_store_cb cb, void *arg)
{
    const struct reg_conf *c = w->s->conf;
    if (!c->use_s3) {
        cb(arg, reg_blob_commit(w->db, c->path, repo, upath, digest, hashed));
        return NULL;
    }
    int r = reg_blob_verify(upath, digest, hashed);
    int have = r ? r : reg_stored_link(w->db, repo, digest, NULL, 0);     /* in the bucket already? */
    if (have != -ENOENT) {
        if (!have)
            unlink(upath);
        cb(arg, have);
        return NULL;
    }
    struct stat st;
    struct reg_store_op *op = r || stat(upath, &st) ? NULL : calloc(1, sizeof(*op));
    if (!op) {
        cb(arg, r ? r : -ENOMEM);
        return NULL;
    }
    op->w = w;
    op->cb = cb;
    op->arg = arg;
    op->size = (long long)st.st_size;
    snprintf(op->repo, sizeof(op->repo), "%s", repo);
    snprintf(op->digest, sizeof(op->digest), "%s", digest);
    snprintf(op->upath, sizeof(op->upath), "%s", upath);
    uint8_t rnd[8];
    RAND_bytes(rnd, sizeof(rnd));
    snprintf(op->key, sizeof(op->key), "blobs/%.6s/%s/%02x%02x%02x%02x%02x%02x%02x%02x", digest, digest + 7, rnd[0],
             rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    op->put = s3c_put_file(w->s3, op->key, upath, (uint64_t)st.st_size, put_done, op);
    if (!op->put) {
        free(op);
        cb(arg, -EIO);
        return NULL;
    }
    return op;
}

void reg_store_cancel(struct reg_store_op *op)
{
    if (!op)
        return;
    s3c_cancel(op->put);
    free(op);
}

long long reg_blob_len(struct reg_worker *w, const char *digest)
{
    long long size = reg_blob_size(w->s->conf->path, digest);     /* files, and manifests with S3 */
    if (size < 0 && w->s->conf->use_s3 && reg_stored_get(w->db, digest, NULL, 0, &size) != 1)
        size = -ENOENT;
    return size;
}

/* ---- sending ---- */

struct sender {
    struct reg_worker *w;
    struct httpd_req *r;
    int fd;                         /* a file */
    uint64_t left;
    char *iobuf;
    struct httpc_call *call;        /* S3 */
    bool failed, retried, paused;
    char key[300], range[80];
};

static void sender_free(struct sender *sd)
{
    if (sd->fd >= 0)
        close(sd->fd);
    if (sd->call)
        httpc_cancel(sd->call);
    free(sd->iobuf);
    free(sd);
}

static void sender_abort(struct httpd_req *r, void *arg)
{
    (void)r;
    sender_free(arg);
}

static void file_pump(struct httpd_req *r, void *arg)
{
    struct sender *sd = arg;
    httpd_req_on_drain(r, NULL, NULL);
    while (sd->left) {
        if (httpd_req_pending(r) > SEND_HIGH) {
            httpd_req_on_drain(r, file_pump, sd);
            return;
        }
        ssize_t n = read(sd->fd, sd->iobuf, (size_t)MIN((uint64_t)SEND_CHUNK, sd->left));
        if (n <= 0) {
            httpd_req_on_abort(r, NULL, NULL);
            sender_free(sd);
            httpd_req_abort(r);
            return;
        }
        sd->left -= (uint64_t)n;
        httpd_respond_write(r, sd->iobuf, (size_t)n);
    }
    httpd_req_on_abort(r, NULL, NULL);
    sender_free(sd);
    httpd_respond_finish(r);
}

static void s3_get(struct sender *sd);

static void s3_head(void *arg, const struct http_response *resp)
{
    struct sender *sd = arg;
    if (resp->status != 200 && resp->status != 206) {
        sd->failed = true;
        log_warn("cannot read a blob from S3", "key", sd->key, "status", log_int(resp->status));
    }
}

static void s3_drained(struct httpd_req *r, void *arg)
{
    struct sender *sd = arg;
    httpd_req_on_drain(r, NULL, NULL);
    if (sd->paused && sd->call) {
        sd->paused = false;
        httpc_resume(sd->call);
    }
}

static void s3_data(void *arg, const char *p, size_t n)
{
    struct sender *sd = arg;
    if (sd->failed)
        return;
    n = (size_t)MIN((uint64_t)n, sd->left);
    sd->left -= n;
    httpd_respond_write(sd->r, p, n);
    if (httpd_req_pending(sd->r) > SEND_HIGH && sd->call && !sd->paused) {
        sd->paused = true;
        httpc_pause(sd->call);
        httpd_req_on_drain(sd->r, s3_drained, sd);
    }
}

static void s3_done(void *arg, bool reusable)
{
    struct sender *sd = arg;
    struct httpd_req *r = sd->r;
    (void)reusable;
    sd->call = NULL;
    bool ok = !sd->failed && sd->left == 0;
    httpd_req_on_abort(r, NULL, NULL);
    httpd_req_on_drain(r, NULL, NULL);
    sender_free(sd);
    if (ok)
        httpd_respond_finish(r);
    else
        httpd_req_abort(r);
}

static void s3_failed(void *arg, int err, enum httpc_stage stage, unsigned flags)
{
    struct sender *sd = arg;
    (void)stage;
    sd->call = NULL;
    /* a pooled connection the server had closed: once more on a new one */
    if ((flags & HTTPC_F_REUSED) && !(flags & HTTPC_F_GOT_BYTES) && !sd->retried) {
        sd->retried = true;
        s3_get(sd);
        return;
    }
    log_warn("reading a blob from S3 failed", "key", sd->key, "error", cairn_strerror(err));
    struct httpd_req *r = sd->r;
    httpd_req_on_abort(r, NULL, NULL);
    httpd_req_on_drain(r, NULL, NULL);
    sender_free(sd);
    httpd_req_abort(r);
}

static const struct httpc_stream_ops s3_ops = { NULL, s3_head, s3_data, s3_done, s3_failed };

static void s3_get(struct sender *sd)
{
    sd->call = s3c_get_stream(sd->w->s3, sd->key, sd->range[0] ? sd->range : NULL, &s3_ops, sd);
    if (!sd->call) {
        struct httpd_req *r = sd->r;
        httpd_req_on_abort(r, NULL, NULL);
        sender_free(sd);
        httpd_req_abort(r);
    }
}

void reg_blob_send(struct reg_worker *w, struct httpd_req *r, const char *digest, uint64_t from, uint64_t len)
{
    struct sender *sd = calloc(1, sizeof(*sd));
    if (!sd) {
        httpd_req_abort(r);
        return;
    }
    sd->w = w;
    sd->r = r;
    sd->left = len;
    char path[800];
    reg_blob_path(w->s->conf->path, digest, path, sizeof(path));
    sd->fd = open(path, O_RDONLY | O_CLOEXEC);
    httpd_req_on_abort(r, sender_abort, sd);
    if (sd->fd >= 0) {
        if (lseek(sd->fd, (off_t)from, SEEK_SET) < 0 || !(sd->iobuf = malloc(SEND_CHUNK))) {
            httpd_req_on_abort(r, NULL, NULL);
            sender_free(sd);
            httpd_req_abort(r);
            return;
        }
        file_pump(r, sd);
        return;
    }
    long long size;
    if (!w->s->conf->use_s3 || reg_stored_get(w->db, digest, sd->key, sizeof(sd->key), &size) != 1) {
        httpd_req_on_abort(r, NULL, NULL);
        sender_free(sd);
        httpd_req_abort(r);
        return;
    }
    if (from || len != (uint64_t)size)
        snprintf(sd->range, sizeof(sd->range), "bytes=%llu-%llu", (unsigned long long)from,
                 (unsigned long long)(from + len - 1));
    s3_get(sd);
}

int reg_blobs_worker_init(struct reg_worker *w, struct loop *loop)
{
    if (!w->s->conf->use_s3)
        return 0;
    return (w->s3 = s3c_new(loop, &w->s->conf->s3)) ? 0 : -ENOMEM;
}

void reg_blobs_worker_free(struct reg_worker *w)
{
    s3c_free(&w->s3);
}
