/* s3_main.c - role "s3": start, workers, the credentials written at first
 * start, periodic clean-up, stop.
 *
 * Every worker thread has its own loop, its own SO_REUSEPORT listeners and its
 * own SQLite connection. At start, data files that no row names (a write cut
 * short by a crash) are removed; every hour, multipart uploads older than
 * multipart_expiry are aborted.
 */
#include "s3_internal.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S3_DRAIN_MS 10000
#define S3_GC_MS (3600 * 1000)

const struct role_ops s3_role = {
    .name = "s3",
    .deploy = ROLE_DEPLOY_STORE,
    .summary = "S3-compatible object storage: SigV4, buckets, objects, multipart, listing",
    .parse = s3__parse,
    .main = s3_main,
    .free_conf = s3__free_conf,
};

/* No keys in the stack file: one key pair, made at first start and kept in
 * <data>/credentials in awscli's format (profile "cairn"), mode 0600. */
static int load_or_make_credentials(struct s3_svc *s)
{
    struct s3_conf *c = s->conf;
    char path[600];
    snprintf(path, sizeof(path), "%s/credentials", c->data);
    char access[160] = "", secret[160] = "";
    FILE *f = fopen(path, "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f)) {
            char k[64], v[160];
            if (sscanf(line, " %63[a-z_] = %159s", k, v) == 2) {
                if (strcmp(k, "aws_access_key_id") == 0)
                    snprintf(access, sizeof(access), "%s", v);
                else if (strcmp(k, "aws_secret_access_key") == 0)
                    snprintf(secret, sizeof(secret), "%s", v);
            }
        }
        fclose(f);
        if (!access[0] || !secret[0]) {
            log_error("the credentials file has no key pair", "file", path);
            return -EINVAL;
        }
    } else {
        char hx[41];
        s3_random_hex(hx, 10);
        snprintf(access, sizeof(access), "CAIRN");
        for (int i = 0; i < 15; i++)
            access[5 + i] = (char)toupper((unsigned char)hx[i]);
        access[20] = 0;
        uint8_t raw[30];
        char b64[64];
        s3_random_hex(hx, 20);
        for (int i = 0; i < 30; i++)
            raw[i] = (uint8_t)(hx[i] * 31 + hx[39 - i % 10]);
        s3_random_hex(hx, 20);
        for (int i = 0; i < 20; i++)
            raw[i] ^= (uint8_t)hx[i];
        s3_b64(raw, 30, b64, sizeof(b64));
        for (char *p = b64; *p; p++)
            if (*p == '/')
                *p = 'x';
        snprintf(secret, sizeof(secret), "%.40s", b64);
        char tmp[620];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        char text[400];
        int n = snprintf(text, sizeof(text), "[cairn]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
                         access, secret);
        bool ok = write(fd, text, (size_t)n) == n && fsync(fd) == 0;
        close(fd);
        if (!ok || rename(tmp, path)) {
            unlink(tmp);
            return -EIO;
        }
        log_info("s3 credentials written (awscli profile \"cairn\")", "file", path);
    }
    c->keys = calloc(1, sizeof(*c->keys));
    if (!c->keys)
        return -ENOMEM;
    c->nkeys = 1;
    c->keys[0].access = strdup(access);
    c->keys[0].secret = strdup(secret);
    c->keys[0].grants = calloc(1, sizeof(struct s3_grant));
    if (!c->keys[0].access || !c->keys[0].secret || !c->keys[0].grants)
        return -ENOMEM;
    c->keys[0].ngrants = 1;
    c->keys[0].grants[0] = (struct s3_grant){ strdup("*"), true, true };
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->listen[0], first, sizeof(first));
    log_info("s3 access: AWS_SHARED_CREDENTIALS_FILE=FILE aws --profile cairn --endpoint-url URL s3 ls",
             "file", path, "url", first);
    return 0;
}

static void gc_tick(struct loop_timer *t)
{
    struct s3_svc *s = t->data;
    char *files = NULL;
    int n = s3_upload_expire(s->workers[0].db, (long long)s->conf->upload_expiry_ms, &files);
    if (n > 0) {
        s3_files_unlink(s->conf->data, files);
        log_info("stale multipart uploads aborted", "uploads", log_int(n));
    }
    free(files);
    size_t lc = s3_lc_sweep(s->workers[0].db, s->conf->data, (long long)(cairn_wall_time() * 1000));
    if (lc)
        log_info("lifecycle rules applied", "expired", log_int((long long)lc));
    loop_timer_start(&s->pool.w[0].loop, t, S3_GC_MS);
}

static int setup_metrics(struct s3_svc *s, struct metrics_registry *reg)
{
    static const char *const api[] = { "api", NULL };
    static const char *const api_class[] = { "api", "class", NULL };
    s->f_requests = metrics_family(reg, METRIC_COUNTER, "cairn_s3_requests_total",
                                   "S3 requests answered, by API call.", api, NULL, 0);
    s->f_errors = metrics_family(reg, METRIC_COUNTER, "cairn_s3_request_errors_total",
                                 "S3 requests answered with an error, by API call and status class.",
                                 api_class, NULL, 0);
    s->f_duration = metrics_family(reg, METRIC_HISTOGRAM, "cairn_s3_request_duration_seconds",
                                   "Time from a request's head to its answer (bodies included).", api,
                                   metrics_latency_buckets, metrics_latency_nbuckets);
    s->f_bytes_in = metrics_family(reg, METRIC_COUNTER, "cairn_s3_received_bytes_total",
                                   "Request body bytes received, by API call.", api, NULL, 0);
    s->f_bytes_out = metrics_family(reg, METRIC_COUNTER, "cairn_s3_sent_bytes_total",
                                    "Object bytes sent, by API call.", api, NULL, 0);
    if (!s->f_requests || !s->f_errors || !s->f_duration || !s->f_bytes_in || !s->f_bytes_out)
        return -ENOMEM;
    return s3__metrics_init(s);
}

static int s3_start(struct service_ctx *sc)
{
    struct s3_svc *s = sc->role;
    struct s3_conf *c = s->conf;
    s->sc = sc;
    if (setup_metrics(s, sc->reg))
        return -ENOMEM;
    char *full = stack_data_path(s->svc->stack, c->data);
    if (!full)
        return -ENOMEM;
    free(c->data);
    c->data = full;
    char sub[600];
    snprintf(sub, sizeof(sub), "%s/data", c->data);
    int r = cairn_mkdir_p(sub, 0755);
    if (r) {
        log_error("cannot create the data directory", "dir", sub, "error", cairn_strerror(r));
        return r;
    }
    if (c->keys_generated && (r = load_or_make_credentials(s))) {
        log_error("cannot set up the credentials", "dir", c->data, "error", cairn_strerror(r));
        return r;
    }
    httpd_conf_defaults(&s->hconf);
    s->hconf.limits.max_body = 4u << 20;       /* XML bodies; uploads are streamed */
    s->hconf.handler = s3__handle;
    s->hconf.handler_arg = s;
    s->hconf.stream_body = s3__stream_body;
    s->hconf.server = "cairn-s3";
    s->nworkers = c->threads;
    s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
    if (!s->workers)
        return -ENOMEM;
    for (int i = 0; i < s->nworkers; i++) {
        char err[512];
        s->workers[i].s = s;
        if (!(s->workers[i].db = s3_db_open(c->data, err, sizeof(err)))) {
            log_error("cannot open the metadata database", "error", err);
            return -EIO;
        }
    }
    s3_db_gc_files(s->workers[0].db, c->data);
    r = service_http_pool_start(sc, &s->pool, s->nworkers, &s->hconf, c->listen, c->nlisten, S3_DRAIN_MS);
    for (int i = 0; i < s->pool.ninit; i++)
        s->pool.w[i].hw.data = &s->workers[i];
    if (r)
        return r;
    loop_timer_init(&s->gc, gc_tick, s);
    loop_timer_start(&s->pool.w[0].loop, &s->gc, 1000);
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->listen[0], first, sizeof(first));
    log_info("s3 serving", "addr", first, "dir", c->data, "region", c->region, "threads",
             log_int(s->nworkers));
    return 0;
}

static void s3_finish(struct service_ctx *sc)
{
    struct s3_svc *s = sc->role;
    if (s->pool.ninit)
        loop_timer_stop(&s->gc);
    service_http_pool_free(&s->pool);
    for (int i = 0; s->workers && i < s->nworkers; i++)
        s3_db_close(s->workers[i].db);
    free(s->workers);
}

static const struct service_ops s3_ops = {
    .start = s3_start,
    .stop_worker = service_http_pool_stop_worker,
    .finish = s3_finish,
};

int s3_main(const struct service *svc)
{
    struct s3_svc s;
    memset(&s, 0, sizeof(s));
    s.svc = svc;
    s.conf = svc->conf;
    return service_run(svc, &s3_ops, &s);
}
