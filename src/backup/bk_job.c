/* bk_job.c - one run of a backup job, shared by the service and `cairn backup`:
 * the repository opened (or created), a shared lock, the backup of the job's
 * paths or of a cairn store's frozen copy, then forget and prune under the
 * exclusive lock when the job has a retention policy.
 *
 * A store is backed up through the contract every store role serves on its HTTP
 * port (core/service.h): POST /-/snapshot?name=cairn-backup-<job> makes a
 * consistent copy in <its data>/snapshots/<name> and answers its directory; the
 * job backs that directory up and DELETEs it. The fixed name keeps the snapshot's
 * path the same from run to run, so the previous snapshot is the parent and
 * retention groups them.
 */
#include "backup_conf.h"
#include "core/fileio.h"
#include "core/httpc.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

char *backup__password(const struct backup_conf *bc, bool create, char *err, size_t errlen)
{
    if (bc->password)
        return strdup(bc->password);
    if (bc->password_env) {
        const char *v = getenv(bc->password_env);
        if (!v || !*v) {
            snprintf(err, errlen, "the environment variable %s (password_env) is not set", bc->password_env);
            return NULL;
        }
        return strdup(v);
    }
    char *text = NULL;
    size_t len = 0;
    struct cfg_errors tmp = { 0 };
    if (access(bc->password_file, F_OK) != 0 && errno == ENOENT && create) {
        /* a new repository and no password yet: make one, as restic would ask for */
        uint8_t rnd[24];
        char hex[49];
        cairn_random(rnd, sizeof(rnd));
        cairn_hex(rnd, sizeof(rnd), hex);
        char *dir = strdup(bc->password_file);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash && slash != dir) {
            *slash = 0;
            cairn_mkdir_p(dir, 0700);
        }
        free(dir);
        int fd = open(bc->password_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || cairn_write_all(fd, hex, strlen(hex)) || cairn_write_all(fd, "\n", 1) || fsync(fd)) {
            snprintf(err, errlen, "cannot write a new password to %s: %s", bc->password_file, cairn_strerror(-errno));
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        close(fd);
        log_info("a new repository password was written: keep a copy, nothing restores without it", "file",
                 bc->password_file);
    }
    if (cfg_read_file(bc->password_file, &text, &len, &tmp)) {
        snprintf(err, errlen, "cannot read the password file %s", bc->password_file);
        cfg_errors_free(&tmp);
        return NULL;
    }
    cfg_errors_free(&tmp);
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        text[--len] = 0;
    if (!len) {
        snprintf(err, errlen, "the password file %s is empty", bc->password_file);
        free(text);
        return NULL;
    }
    return text;
}

int backup__open_repo(const struct service *svc, struct bk_repo *r, bool create, char *err, size_t errlen)
{
    const struct backup_conf *bc = svc->conf;
    struct bk_backend *be = NULL;
    int e = bk_backend_open(&bc->repo, &be, err, errlen);
    if (e)
        return e;
    uint64_t sz;
    bool exists = be->ops->stat(be, BK_CONFIG, "config", &sz) == 0;
    char *pw = backup__password(bc, create && !exists, err, errlen);
    if (!pw) {
        be->ops->free(be);
        return -EACCES;
    }
    if (!exists && create) {
        e = bk_repo_init(r, be, pw, strlen(pw), err, errlen);
        if (!e)
            log_info("repository created", "repository", be->desc, "id", r->id);
    } else {
        e = bk_repo_open(r, be, pw, strlen(pw), err, errlen);
    }
    memset(pw, 0, strlen(pw));
    free(pw);
    if (e) {
        r->be = be;
        bk_repo_close(r);
        return e;
    }
    return 0;
}

/* ---- a blocking HTTP call on a private loop (the job runs on its own thread) ---- */

struct sync_call {
    struct loop *loop;
    int status, err;
    struct buf body;
};

static void sync_done(const struct httpc_response *resp, void *arg)
{
    struct sync_call *s = arg;
    s->err = resp->error;
    s->status = resp->status;
    buf_append(&s->body, resp->body.p, resp->body.n);
    loop_stop(s->loop);
}

static int http_call(const char *method, const struct stack_url *u, const char *target, struct sync_call *out)
{
    struct loop loop;
    int e = loop_init(&loop);
    if (e)
        return e;
    struct httpc_opts o;
    httpc_opts_defaults(&o);
    struct httpc *hc = httpc_new(&loop, &o);
    struct httpc_request req = { .method = method, .addr = u->addr, .host = u->host, .target = target,
                                 .timeout_ms = 600000 };
    out->loop = &loop;
    if (!hc || !httpc_send(hc, &req, sync_done, out))
        e = -ENOMEM;
    else
        loop_run(&loop);
    httpc_free(&hc);
    loop_destroy(&loop);
    return e ? e : out->err;
}

/* the store's HTTP endpoint */
static int store_url(const struct service *svc, const char *name, struct stack_url *u, char *err, size_t errlen)
{
    const struct service *t = stack_find(svc->stack, name);
    if (!t) {
        snprintf(err, errlen, "no service named %s in the stack", name);
        return -ENOENT;
    }
    if (!t->role->data_dir) {
        snprintf(err, errlen, "service %s (role %s) keeps no store to back up", name, t->role->name);
        return -EINVAL;
    }
    /* the endpoint named "http" (the one the metrics role scrapes, which serves the
     * skeleton's endpoints), else the first http:// one */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < t->nendpoints; i++) {
            if (pass == 0 ? !strcmp(t->endpoints[i].what, "http") : !strncmp(t->endpoints[i].url, "http://", 7)) {
                char url[128];
                snprintf(url, sizeof(url), "%s", t->endpoints[i].url);
                return stack_url_parse(url, u, err, errlen);
            }
        }
    snprintf(err, errlen, "service %s has no HTTP endpoint to ask for a snapshot", name);
    return -EINVAL;
}

static void stack_tag(const struct service *svc, char *out, size_t n)
{
    const char *f = svc->stack->file;
    const char *b = strrchr(f, '/');
    b = b ? b + 1 : f;
    if (!strcmp(b, "<default>"))
        b = "default";
    size_t l = strcspn(b, ".");
    snprintf(out, n, "stack=%.*s", (int)l, b);
}

/* ---- etcd: a snapshot through the v3 maintenance API's JSON gateway ---- */

struct etcd_dl {
    struct loop *loop;
    int fd, status, err;
    struct buf line;
    uint64_t bytes;
    char msg[300];
};

static void etcd_line(struct etcd_dl *d, const char *p, size_t n)
{
    if (d->err || !n)
        return;
    json_error_t je;
    json_t *j = json_loadb(p, n, 0, &je);
    const char *blob = json_string_value(json_object_get(json_object_get(j, "result"), "blob"));
    json_t *error = json_object_get(j, "error");
    if (error || !blob) {
        const char *m = json_string_value(json_object_get(error, "message"));
        snprintf(d->msg, sizeof(d->msg), "etcd: %s", m ? m : "an answer that is not a snapshot chunk");
        d->err = -EPROTO;
    } else {
        size_t bl = strlen(blob);
        uint8_t *raw = malloc(bl / 4 * 3 + 3);
        long k = raw ? bk_b64_decode(blob, raw, bl / 4 * 3 + 3) : -1;
        if (k < 0) {
            snprintf(d->msg, sizeof(d->msg), "etcd: a chunk is not base64");
            d->err = -EPROTO;
        } else if ((d->err = cairn_write_all(d->fd, raw, (size_t)k))) {
            snprintf(d->msg, sizeof(d->msg), "writing the etcd snapshot: %s", cairn_strerror(d->err));
        } else {
            d->bytes += (uint64_t)k;
        }
        free(raw);
    }
    json_decref(j);
}

static void etcd_head(void *arg, const struct http_response *resp)
{
    ((struct etcd_dl *)arg)->status = resp->status;
}

static void etcd_data(void *arg, const char *p, size_t n)
{
    struct etcd_dl *d = arg;
    if (buf_append(&d->line, p, n)) {
        d->err = -ENOMEM;
        return;
    }
    /* one JSON document per line */
    for (;;) {
        const char *h = buf_head(&d->line);
        const char *nl = memchr(h, '\n', buf_used(&d->line));
        if (!nl)
            break;
        if (d->status == 200)
            etcd_line(d, h, (size_t)(nl - h));
        buf_consume(&d->line, (size_t)(nl - h) + 1);
    }
    if (buf_used(&d->line) > (64u << 20)) {
        snprintf(d->msg, sizeof(d->msg), "etcd: a line of the answer is too long");
        d->err = -EPROTO;
    }
}

static void etcd_done(void *arg, bool reusable)
{
    struct etcd_dl *d = arg;
    (void)reusable;
    if (d->status == 200)
        etcd_line(d, buf_head(&d->line), buf_used(&d->line));
    else if (!d->err)
        snprintf(d->msg, sizeof(d->msg), "etcd answered %d: %.200s", d->status, buf_head(&d->line));
    loop_stop(d->loop);
}

static void etcd_failed(void *arg, int err, enum httpc_stage stage, unsigned flags)
{
    struct etcd_dl *d = arg;
    (void)stage;
    (void)flags;
    d->err = err ? err : -EIO;
    snprintf(d->msg, sizeof(d->msg), "etcd: %s", cairn_strerror(d->err));
    loop_stop(d->loop);
}

static const struct httpc_stream_ops etcd_ops = { .head = etcd_head, .data = etcd_data, .done = etcd_done,
                                                  .failed = etcd_failed };

/* The snapshot into dir/etcd-snapshot.db, as `etcdctl snapshot save` writes it
 * (the database, then the SHA-256 of it, which is checked here). */
static int etcd_snapshot(const struct stack_url *u, const char *dir, char *err, size_t errlen)
{
    char path[4200];
    int e = cairn_mkdir_p(dir, 0700);
    snprintf(path, sizeof(path), "%s/etcd-snapshot.db", dir);
    struct etcd_dl d = { .fd = -1 };
    if (!e && (d.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        e = -errno;
    if (e) {
        snprintf(err, errlen, "%.300s: %s", path, cairn_strerror(e));
        return e;
    }
    struct loop loop;
    if ((e = loop_init(&loop))) {
        close(d.fd);
        return e;
    }
    d.loop = &loop;
    struct httpc_opts o;
    httpc_opts_defaults(&o);
    struct httpc *hc = httpc_new(&loop, &o);
    struct httpc_pool pool;
    httpc_pool_init(&pool, 1, 1000);
    struct buf raw = BUF_INIT;
    buf_printf(&raw, "POST /v3/maintenance/snapshot HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: 2\r\n\r\n{}", u->host);
    struct httpc_stream_req req = { .addr = u->addr, .raw = buf_head(&raw), .raw_len = buf_used(&raw), .pool = &pool };
    bool reused;
    int se = 0;
    if (!hc || !httpc_stream(hc, &req, &etcd_ops, &d, &se, &reused)) {
        d.err = se ? se : -ENOMEM;
        snprintf(d.msg, sizeof(d.msg), "etcd: %s", cairn_strerror(d.err));
    } else {
        loop_run(&loop);
    }
    if (hc)
        httpc_pool_flush(hc, &pool);
    httpc_free(&hc);
    loop_destroy(&loop);
    buf_free(&raw);
    buf_free(&d.line);
    e = d.err;
    if (!e && d.status != 200) {
        e = -EPROTO;
        if (!d.msg[0])
            snprintf(d.msg, sizeof(d.msg), "etcd answered %d", d.status);
    }
    /* the last 32 bytes are the SHA-256 of the rest: a cut snapshot is refused */
    if (!e && d.bytes < 32) {
        e = -EPROTO;
        snprintf(d.msg, sizeof(d.msg), "etcd: the snapshot is empty");
    }
    if (!e) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        uint8_t buf[1 << 16], want[32], got[32];
        uint64_t left = d.bytes - 32, off = 0;
        unsigned int gl = 32;
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        while (left) {
            ssize_t k = pread(d.fd, buf, left < sizeof(buf) ? left : sizeof(buf), (off_t)off);
            if (k <= 0)
                break;
            EVP_DigestUpdate(md, buf, (size_t)k);
            left -= (uint64_t)k;
            off += (uint64_t)k;
        }
        EVP_DigestFinal_ex(md, got, &gl);
        EVP_MD_CTX_free(md);
        if (left || pread(d.fd, want, 32, (off_t)(d.bytes - 32)) != 32 || memcmp(want, got, 32)) {
            e = -EBADMSG;
            snprintf(d.msg, sizeof(d.msg), "etcd: the snapshot's SHA-256 does not match (cut short?)");
        }
    }
    if (!e && fsync(d.fd) < 0)
        e = -errno;
    close(d.fd);
    if (e)
        snprintf(err, errlen, "%s", d.msg[0] ? d.msg : cairn_strerror(e));
    return e;
}

int backup__run_job(const struct service *svc, const struct bk_job *job, bool quiet, const int *cancel,
                    struct bk_run *out)
{
    const struct backup_conf *bc = svc->conf;
    struct bk_repo r;
    double t0 = cairn_wall_time();
    memset(out, 0, sizeof(*out));
    int e = backup__open_repo(svc, &r, true, out->err, sizeof(out->err));
    if (e)
        return e;
    if ((e = bk_lock(&r, false, out->err, sizeof(out->err))) || (e = bk_index_load(&r, out->err, sizeof(out->err)))) {
        bk_repo_close(&r);
        return e;
    }
    /* tags: the stack, the job, and for a store its service and role */
    char t_stack[160], t_job[160], t_svc[160], t_role[160];
    char *tags[64];
    size_t nt = 0;
    stack_tag(svc, t_stack, sizeof(t_stack));
    snprintf(t_job, sizeof(t_job), "job=%s", job->name);
    tags[nt++] = t_stack;
    tags[nt++] = t_job;
    struct stack_url u = { 0 };
    char snapname[128] = "", snapdir[4096] = "";
    char *paths[1];
    struct bk_backup_opts o = { .paths = job->paths, .npaths = job->npaths, .excludes = job->exclude,
                                .nexcludes = job->nexclude, .threads = bc->threads, .quiet = quiet,
                                .cancel = cancel };
    if (job->service) {
        const struct service *t = stack_find(svc->stack, job->service);
        snprintf(t_svc, sizeof(t_svc), "service=%s", job->service);
        snprintf(t_role, sizeof(t_role), "role=%s", t ? t->role->name : "?");
        tags[nt++] = t_svc;
        tags[nt++] = t_role;
        if ((e = store_url(svc, job->service, &u, out->err, sizeof(out->err))))
            goto out;
        struct sync_call sc = { 0 };
        char target[256];
        snprintf(snapname, sizeof(snapname), "cairn-backup-%s", job->name);
        snprintf(target, sizeof(target), "/-/snapshot?name=%s", snapname);
        e = http_call("POST", &u, target, &sc);
        json_error_t je;
        json_t *j = !e && sc.status == 200 ? json_loadb(buf_head(&sc.body), buf_used(&sc.body), 0, &je) : NULL;
        const char *dir = json_string_value(json_object_get(j, "dir"));
        if (dir)
            snprintf(snapdir, sizeof(snapdir), "%s", dir);
        else
            snprintf(out->err, sizeof(out->err), "asking %s for a snapshot: %s", job->service,
                     e ? cairn_strerror(e) : sc.status ? buf_head(&sc.body) : "no answer");
        json_decref(j);
        buf_free(&sc.body);
        if (!dir) {
            e = e ? e : -EIO;
            snapname[0] = 0;
            goto out;
        }
        paths[0] = snapdir;
        o.paths = paths;
        o.npaths = 1;
    }
    char etcddir[4096] = "";
    if (job->has_etcd) {
        /* a fixed place, so that one run's snapshot is the next one's parent */
        snprintf(etcddir, sizeof(etcddir), "%s/%s/etcd-%s", svc->stack->data_dir, svc->name, job->name);
        tags[nt++] = "source=etcd";
        if ((e = etcd_snapshot(&job->etcd, etcddir, out->err, sizeof(out->err))))
            goto out;
        paths[0] = etcddir;
        o.paths = paths;
        o.npaths = 1;
    }
    for (size_t i = 0; i < job->ntags && nt < ARRAY_SIZE(tags); i++)
        tags[nt++] = job->tags[i];
    o.tags = tags;
    o.ntags = nt;
    struct bk_backup_result res;
    e = bk_backup(&r, &o, &res, out->err, sizeof(out->err));
    out->st = res.st;
    if (!e) {
        memcpy(out->snapshot, res.snapshot, sizeof(out->snapshot));
        log_info("backup done", "job", job->name, "snapshot", res.snapshot, "files",
                 log_int((long long)(res.st.files_new + res.st.files_changed + res.st.files_unmodified)), "added",
                 log_int((long long)res.st.bytes_added), "stored", log_int((long long)res.st.bytes_stored),
                 "errors", log_int((long long)res.st.errors));
    }
    bk_unlock(&r);
    if (!e && job->prune) {
        /* retention: the job's own snapshots only */
        const char *g[2] = { t_stack, t_job };
        char err[512];
        FILE *devnull = quiet ? NULL : stdout;
        if ((e = bk_lock(&r, true, err, sizeof(err))) == 0) {
            e = bk_forget(&r, &job->keep, g, 2, true, devnull, err, sizeof(err));
            bk_unlock(&r);
        }
        if (e)
            snprintf(out->err, sizeof(out->err), "forget/prune after the backup: %.400s", err);
    }
out:
    if (etcddir[0]) {
        char f[4200];
        snprintf(f, sizeof(f), "%s/etcd-snapshot.db", etcddir);
        unlink(f);                      /* in the repository now, or failed */
    }
    if (snapname[0]) {
        struct sync_call sc = { 0 };
        char target[256];
        snprintf(target, sizeof(target), "/-/snapshot/%s", snapname);
        if (http_call("DELETE", &u, target, &sc) || sc.status != 204)
            log_warn("could not release the store snapshot", "service", job->service, "dir", snapdir);
        buf_free(&sc.body);
    }
    stack_url_free(&u);
    bk_repo_close(&r);
    out->ok = e == 0;
    out->seconds = cairn_wall_time() - t0;
    return e;
}
