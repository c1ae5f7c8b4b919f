/* registry_bg.c - what the registry does beside answering: online garbage
 * collection and webhook notifications, on a thread and loop of their own.
 *
 * Garbage collection, every gc.interval, while pushes and pulls go on:
 *   1. links that no manifest of their repository names (nor are one) and that
 *      nobody touched within gc.grace are removed: a blob pushed for a manifest
 *      not pushed yet, or found by HEAD and about to be named, is touched, so it
 *      stays through the grace;
 *   2. blob files older than the grace that no repository links to are removed,
 *      each in one SQLite transaction with the check. A manifest is stored in one
 *      transaction with the check that every blob it names is linked, and an
 *      upload's rename into place with its link, so a manifest can never name a
 *      blob that collection removes;
 *   3. uploads untouched for gc.uploads are removed.
 * With S3 storage, step 2 forgets the stored blobs nothing links (in one
 * transaction) and deletes their objects; every copy has a key of its own, so a
 * blob stored again meanwhile is another object.
 *
 * Notifications: each endpoint has a queue (at most REG_MAX_QUEUE events, the
 * oldest dropped and counted beyond it) that the request threads append to and
 * this loop sends from, REG_MAX_BATCH events per POST in Distribution's envelope;
 * a failed POST (error, or a status outside 2xx and 3xx) is sent again at once up
 * to threshold failures in a row, then every backoff, until it goes through.
 * Events still queued at a stop are lost, as in Distribution's in-memory queue.
 */
#include "registry_internal.h"
#include "core/httpc.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REG_MAX_QUEUE 10000
#define REG_MAX_BATCH 64

struct reg_notice {
    struct reg_notice *next;
    size_t len;
    char json[];
};

struct reg_sink {
    struct reg_bg *bg;
    const struct reg_endpoint *e;
    struct reg_notice *head, *tail; /* queued (under bg->mu) */
    size_t n;
    bool kicked;                    /* a kick is posted to the loop */
    struct reg_notice *batch;       /* in flight (loop thread only) */
    size_t nbatch;
    struct httpc_call *call;
    struct loop_timer retry;
    long failures;
    struct metric *m_sent, *m_failed, *m_dropped, *m_pending;
};

struct reg_bg {
    struct reg_svc *s;
    struct loop loop;
    bool loop_inited, running;
    pthread_t thread;
    struct httpc *hc;
    struct tls_ctx *tls;
    struct reg_db *db;
    struct s3c *s3;                 /* deletes in the bucket, with S3 storage */
    struct loop_timer gc;
    pthread_mutex_t mu;
    struct reg_sink *sinks;
    size_t nsinks;
    char instance[40];
    struct metric *m_gc_runs, *m_gc_blobs, *m_gc_bytes, *m_gc_uploads;
};

/* ---- garbage collection ---- */

static bool stopping(const struct reg_bg *bg)
{
    return service_stopping(bg->s->sc);
}

/* Removes the blob files of one directory that are older than cutoff and unlinked. */
static void gc_dir(struct reg_bg *bg, const char *alg, const char *dir, time_t cutoff, long long *files,
                   long long *bytes)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) && !stopping(bg)) {
        if (de->d_name[0] == '.')
            continue;
        char path[1200], digest[300];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (lstat(path, &st) || !S_ISREG(st.st_mode) || st.st_mtime >= cutoff)
            continue;
        if (strchr(de->d_name, '.')) {  /* a manifest's temporary file left by a crash */
            if (unlink(path) == 0)
                (*files)++;
            continue;
        }
        snprintf(digest, sizeof(digest), "%s:%s", alg, de->d_name);
        if (!reg_digest_ok(digest))
            continue;
        if (reg_gc_remove_blob(bg->db, path, digest) == 1) {
            (*files)++;
            *bytes += (long long)st.st_size;
        }
    }
    if (d)
        closedir(d);
}

static void gc_run(struct reg_bg *bg)
{
    const struct reg_conf *c = bg->s->conf;
    time_t now = time(NULL);
    time_t cutoff = now - (time_t)(c->gc_grace_ms / 1000);
    int links = reg_gc_links(bg->db, (long long)cutoff);
    long long files = 0, bytes = 0, uploads = 0;
    static const char *const algs[] = { "sha256", "sha512" };
    for (size_t a = 0; a < ARRAY_SIZE(algs) && !stopping(bg); a++) {
        char top[700];
        snprintf(top, sizeof(top), "%s/blobs/%s", c->path, algs[a]);
        DIR *d = opendir(top);
        struct dirent *de;
        while (d && (de = readdir(d)) && !stopping(bg)) {
            if (de->d_name[0] == '.' || strlen(de->d_name) != 2)
                continue;
            char sub[720];
            snprintf(sub, sizeof(sub), "%s/%s", top, de->d_name);
            gc_dir(bg, algs[a], sub, cutoff, &files, &bytes);
        }
        if (d)
            closedir(d);
    }
    if (bg->s3) {   /* blobs in the bucket that nothing links: forgotten, then deleted */
        struct buf keys = BUF_INIT;
        int n = reg_gc_stored(bg->db, (long long)cutoff, &keys, &bytes);
        for (const char *k = keys.data; n > 0 && k < buf_head(&keys) + buf_used(&keys); k += strlen(k) + 1)
            s3c_call(bg->s3, "DELETE", k, NULL, NULL, 0, NULL, NULL);     /* failures logged */
        files += n > 0 ? n : 0;
        buf_free(&keys);
    }
    char up[700];
    snprintf(up, sizeof(up), "%s/uploads", c->path);
    DIR *d = opendir(up);
    struct dirent *de;
    time_t ucut = now - (time_t)(c->upload_expiry_ms / 1000);
    while (d && (de = readdir(d)) && !stopping(bg)) {
        char path[1200];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", up, de->d_name);
        if (de->d_name[0] != '.' && lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_mtime < ucut &&
            unlink(path) == 0)
            uploads++;
    }
    if (d)
        closedir(d);
    metric_inc(bg->m_gc_runs);
    metric_add(bg->m_gc_blobs, (double)files);
    metric_add(bg->m_gc_bytes, (double)bytes);
    metric_add(bg->m_gc_uploads, (double)uploads);
    if (links < 0)
        log_warn("garbage collection could not read the metadata");
    if (links > 0 || files || uploads)
        log_info("garbage collected", "links", log_int(links), "blobs", log_int(files), "bytes", log_int(bytes),
                 "uploads", log_int(uploads));
}

static void gc_tick(struct loop_timer *t)
{
    struct reg_bg *bg = t->data;
    if (stopping(bg))
        return;
    gc_run(bg);
    loop_timer_start(&bg->loop, t, bg->s->conf->gc_interval_ms);
}

/* ---- notifications ---- */

static void sink_send(struct reg_sink *k);

static void batch_free(struct reg_sink *k)
{
    while (k->batch) {
        struct reg_notice *n = k->batch;
        k->batch = n->next;
        free(n);
    }
    k->nbatch = 0;
}

/* Takes the next batch from the queue and sends it, unless one is in flight. */
static void sink_kick(void *arg)
{
    struct reg_sink *k = arg;
    struct reg_bg *bg = k->bg;
    pthread_mutex_lock(&bg->mu);
    k->kicked = false;
    if (k->batch || !k->head) {
        pthread_mutex_unlock(&bg->mu);
        return;
    }
    struct reg_notice **tail = &k->batch;
    while (k->head && k->nbatch < REG_MAX_BATCH) {
        struct reg_notice *n = k->head;
        k->head = n->next;
        n->next = NULL;
        *tail = n;
        tail = &n->next;
        k->nbatch++;
        k->n--;
    }
    if (!k->head)
        k->tail = NULL;
    metric_set(k->m_pending, (double)k->n);
    pthread_mutex_unlock(&bg->mu);
    sink_send(k);
}

static void sink_retry(struct loop_timer *t)
{
    sink_send(t->data);
}

static void sink_done(const struct httpc_response *resp, void *arg)
{
    struct reg_sink *k = arg;
    k->call = NULL;
    if (!resp->error && resp->status >= 200 && resp->status < 400) {
        metric_add(k->m_sent, (double)k->nbatch);
        batch_free(k);
        k->failures = 0;
        sink_kick(k);
        return;
    }
    metric_inc(k->m_failed);
    if (k->failures++ == 0) {
        char why[120];
        if (resp->error)
            snprintf(why, sizeof(why), "%s", cairn_strerror(resp->error));
        else
            snprintf(why, sizeof(why), "status %d", resp->status);
        log_warn("notification endpoint failed; retrying until it takes the events", "endpoint", k->e->name,
                 "error", why, "events", log_int((long long)k->nbatch));
    }
    if (stopping(k->bg))
        return;
    if (k->failures >= k->e->threshold)
        loop_timer_start(&k->bg->loop, &k->retry, k->e->backoff_ms);
    else
        sink_send(k);
}

static void sink_send(struct reg_sink *k)
{
    struct buf body = BUF_INIT;
    buf_puts(&body, "{\"events\":[");
    for (struct reg_notice *n = k->batch; n; n = n->next) {
        buf_append(&body, n->json, n->len);
        if (n->next)
            buf_putc(&body, ',');
    }
    buf_puts(&body, "]}\n");
    const char *hdrs[64];
    size_t nh = 0;
    hdrs[nh++] = "Content-Type: application/vnd.docker.distribution.events.v1+json";
    for (size_t i = 0; i < k->e->nheaders && nh < ARRAY_SIZE(hdrs) - 1; i++)
        hdrs[nh++] = k->e->headers[i];
    hdrs[nh] = NULL;
    const struct stack_url *u = &k->e->url;
    struct httpc_request req = {
        .method = "POST", .addr = u->addr, .host = u->host, .target = u->target, .headers = hdrs,
        .body = buf_head(&body), .body_len = buf_used(&body), .tls = u->tls,
        .timeout_ms = (uint32_t)MIN(k->e->timeout_ms, 600000u),
    };
    k->call = httpc_send(k->bg->hc, &req, sink_done, k);
    buf_free(&body);
    if (!k->call)
        loop_timer_start(&k->bg->loop, &k->retry, k->e->backoff_ms);
}

static bool ignored(const struct reg_endpoint *e, unsigned action, const char *media_type)
{
    if (e->ignore_actions & action)
        return true;
    for (size_t i = 0; media_type && i < e->nignore_types; i++)
        if (strcmp(e->ignore_types[i], media_type) == 0)
            return true;
    return false;
}

static void rfc3339(char *out, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char base[40];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%.20s.%09dZ", base, (int)ts.tv_nsec);
}

static void uuid4(char out[37])
{
    uint8_t b[16];
    RAND_bytes(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void json_field(struct buf *b, const char *name, const char *v, bool comma)
{
    if (comma)
        buf_putc(b, ',');
    buf_printf(b, "\"%s\":", name);
    buf_json_str(b, v ? v : "");
}

static void strv_field(struct buf *b, const char *name, struct strv v)
{
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%.*s", (int)MIN(v.n, sizeof(tmp) - 1), v.p);
    json_field(b, name, tmp, true);
}

void reg_notify(struct reg_svc *s, struct httpd_req *r, const struct reg_event *ev)
{
    struct reg_bg *bg = s->bg;
    if (!bg || !bg->nsinks)
        return;
    static const char *const actions[] = { "push", "pull", "delete", "mount" };
    int ai = __builtin_ctz(ev->action);
    char id[37], ts[48], rid[37];
    uuid4(id);
    uuid4(rid);
    rfc3339(ts, sizeof(ts));
    struct buf b = BUF_INIT;
    buf_puts(&b, "{");
    json_field(&b, "id", id, false);
    json_field(&b, "timestamp", ts, true);
    json_field(&b, "action", actions[ai], true);
    buf_puts(&b, ",\"target\":{");
    json_field(&b, "mediaType", ev->media_type, false);
    buf_printf(&b, ",\"size\":%lld", ev->size);
    json_field(&b, "digest", ev->digest, true);
    buf_printf(&b, ",\"length\":%lld", ev->size);
    json_field(&b, "repository", ev->repo, true);
    if (ev->from)
        json_field(&b, "fromRepository", ev->from, true);
    char url[1200];
    snprintf(url, sizeof(url), "%s://%.*s/v2/%s/%s/%s", r->tls ? "https" : "http", (int)MIN(r->h.host.n, 255),
             r->h.host.p, ev->repo, ev->manifest ? "manifests" : "blobs", ev->digest);
    json_field(&b, "url", url, true);
    if (ev->tag)
        json_field(&b, "tag", ev->tag, true);
    buf_puts(&b, "},\"request\":{");
    json_field(&b, "id", rid, false);
    char addr[NET_ADDRSTRLEN];
    struct net_addr peer = { 0 };
    memcpy(&peer.ss, r->peer, r->peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    peer.len = r->peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    net_addr_format(&peer, addr, sizeof(addr));
    json_field(&b, "addr", addr, true);
    strv_field(&b, "host", r->h.host);
    strv_field(&b, "method", r->h.method);
    const struct http_header *ua = httpd_req_header(r, "user-agent");
    strv_field(&b, "useragent", ua ? ua->value : (struct strv){ "", 0 });
    buf_puts(&b, "},\"actor\":{");
    json_field(&b, "name", ev->actor && ev->actor[0] ? ev->actor : NULL, false);
    buf_puts(&b, "},\"source\":{");
    net_addr_format(&s->conf->listen[0], addr, sizeof(addr));
    json_field(&b, "addr", addr, false);
    json_field(&b, "instanceID", bg->instance, true);
    buf_puts(&b, "}}");
    for (size_t i = 0; i < bg->nsinks; i++) {
        struct reg_sink *k = &bg->sinks[i];
        if (ignored(k->e, ev->action, ev->media_type))
            continue;
        struct reg_notice *n = malloc(sizeof(*n) + buf_used(&b));
        if (!n) {
            metric_inc(k->m_dropped);
            continue;
        }
        n->next = NULL;
        n->len = buf_used(&b);
        memcpy(n->json, buf_head(&b), n->len);
        pthread_mutex_lock(&bg->mu);
        if (k->n >= REG_MAX_QUEUE) {    /* full: the oldest goes */
            struct reg_notice *old = k->head;
            k->head = old->next;
            if (!k->head)
                k->tail = NULL;
            k->n--;
            free(old);
            metric_inc(k->m_dropped);
        }
        if (k->tail)
            k->tail->next = n;
        else
            k->head = n;
        k->tail = n;
        k->n++;
        metric_set(k->m_pending, (double)k->n);
        bool post = !k->kicked;
        k->kicked = true;
        pthread_mutex_unlock(&bg->mu);
        if (post)
            loop_post(&bg->loop, sink_kick, k);
    }
    buf_free(&b);
}

/* ---- the thread ---- */

static void *bg_thread(void *arg)
{
    struct reg_bg *bg = arg;
    loop_run(&bg->loop);
    return NULL;
}

int reg_bg_start(struct reg_svc *s, struct metrics_registry *reg)
{
    const struct reg_conf *c = s->conf;
    struct reg_bg *bg = calloc(1, sizeof(*bg));
    if (!bg)
        return -ENOMEM;
    s->bg = bg;
    bg->s = s;
    pthread_mutex_init(&bg->mu, NULL);
    uuid4(bg->instance);
    bg->m_gc_runs = metrics_counter(reg, "cairn_registry_gc_runs_total", "Garbage collection passes.");
    bg->m_gc_blobs = metrics_counter(reg, "cairn_registry_gc_blobs_deleted_total",
                                     "Blob files garbage collection removed.");
    bg->m_gc_bytes = metrics_counter(reg, "cairn_registry_gc_bytes_freed_total",
                                     "Bytes of the blob files garbage collection removed.");
    bg->m_gc_uploads = metrics_counter(reg, "cairn_registry_gc_uploads_deleted_total",
                                       "Abandoned uploads garbage collection removed.");
    static const char *const ep[] = { "endpoint", NULL };
    struct metric_family *f_sent = metrics_family(reg, METRIC_COUNTER, "cairn_registry_notifications_sent_total",
                                                  "Events an endpoint took.", ep, NULL, 0);
    struct metric_family *f_failed = metrics_family(reg, METRIC_COUNTER,
                                                    "cairn_registry_notification_failures_total",
                                                    "POSTs to an endpoint that failed (and were retried).", ep,
                                                    NULL, 0);
    struct metric_family *f_dropped = metrics_family(reg, METRIC_COUNTER,
                                                     "cairn_registry_notifications_dropped_total",
                                                     "Events dropped because an endpoint's queue was full.", ep,
                                                     NULL, 0);
    struct metric_family *f_pending = metrics_family(reg, METRIC_GAUGE, "cairn_registry_notifications_pending",
                                                     "Events queued for an endpoint.", ep, NULL, 0);
    if (!bg->m_gc_runs || !bg->m_gc_blobs || !bg->m_gc_bytes || !bg->m_gc_uploads || !f_sent || !f_failed ||
        !f_dropped || !f_pending)
        return -ENOMEM;
    if (loop_init(&bg->loop))
        return -ENOMEM;
    bg->loop_inited = true;
    char err[512];
    if (!(bg->db = reg_db_open(c->path, err, sizeof(err)))) {
        log_error("cannot open the metadata database", "error", err);
        return -EIO;
    }
    if (c->nendpoints) {
        static const char *const alpn[] = { "http/1.1" };
        if (tls_client_new(&bg->tls, true, NULL, alpn, 1, err, sizeof(err)))
            log_warn("TLS client setup failed: https endpoints will fail", "error", err);
        struct httpc_opts ho;
        httpc_opts_defaults(&ho);
        ho.tls = bg->tls;
        if (!(bg->hc = httpc_new(&bg->loop, &ho)) || !(bg->sinks = calloc(c->nendpoints, sizeof(*bg->sinks))))
            return -ENOMEM;
        bg->nsinks = c->nendpoints;
        for (size_t i = 0; i < c->nendpoints; i++) {
            struct reg_sink *k = &bg->sinks[i];
            k->bg = bg;
            k->e = &c->endpoints[i];
            loop_timer_init(&k->retry, sink_retry, k);
            k->m_sent = metrics_get1(f_sent, k->e->name);
            k->m_failed = metrics_get1(f_failed, k->e->name);
            k->m_dropped = metrics_get1(f_dropped, k->e->name);
            k->m_pending = metrics_get1(f_pending, k->e->name);
        }
    }
    if (c->use_s3 && !(bg->s3 = s3c_new(&bg->loop, &c->s3)))
        return -ENOMEM;
    loop_timer_init(&bg->gc, gc_tick, bg);
    if (c->gc_interval_ms)
        loop_timer_start(&bg->loop, &bg->gc, c->gc_interval_ms);
    /* the thread takes no signals (they go to the service's first loop): created
     * with all of them blocked, whatever this thread's mask is yet */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int r = pthread_create(&bg->thread, NULL, bg_thread, bg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r)
        return -EAGAIN;
    bg->running = true;
    return 0;
}

static void bg_stop(void *arg)
{
    struct reg_bg *bg = arg;
    loop_stop(&bg->loop);
}

void reg_bg_stop(struct reg_svc *s)
{
    struct reg_bg *bg = s->bg;
    if (!bg)
        return;
    if (bg->running) {
        loop_post(&bg->loop, bg_stop, bg);
        pthread_join(bg->thread, NULL);
    }
    for (size_t i = 0; i < bg->nsinks; i++) {
        struct reg_sink *k = &bg->sinks[i];
        loop_timer_stop(&k->retry);
        batch_free(k);
        while (k->head) {
            struct reg_notice *n = k->head;
            k->head = n->next;
            free(n);
        }
    }
    httpc_free(&bg->hc);
    s3c_free(&bg->s3);
    tls_ctx_free(&bg->tls);
    if (bg->loop_inited) {
        loop_timer_stop(&bg->gc);
        loop_destroy(&bg->loop);
    }
    reg_db_close(bg->db);
    free(bg->sinks);
    pthread_mutex_destroy(&bg->mu);
    free(bg);
    s->bg = NULL;
}
