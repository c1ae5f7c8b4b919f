/* registry_main.c - role "registry": start, workers, stop.
 *
 * Every worker thread has its own loop, its own SO_REUSEPORT listeners and its own
 * SQLite connection to the registry's metadata.
 */
#include "registry_internal.h"
#include "core/log.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REG_DRAIN_MS 10000

const struct role_ops registry_role = {
    .name = "registry",
    .deploy = ROLE_DEPLOY_STORE,
    .summary = "OCI Distribution registry: push, pull, chunked uploads, tags, referrers",
    .parse = reg__parse,
    .main = registry_main,
    .free_conf = reg__free_conf,
};

static int reg_start(struct service_ctx *sc)
{
    struct reg_svc *s = sc->role;
    struct reg_conf *c = s->conf;
    s->sc = sc;
    pthread_mutex_init(&s->hash_mu, NULL);
    static const char *const labels[] = { "method", "code", NULL };
    s->f_requests = metrics_family(sc->reg, METRIC_COUNTER, "cairn_registry_requests_total",
                                   "Registry requests answered, by method and status.", labels, NULL, 0);
    if (!s->f_requests)
        return -ENOMEM;
    char *full = stack_data_path(s->svc->stack, c->path);
    if (!full)
        return -ENOMEM;
    free(c->path);
    c->path = full;
    static const char *const subdirs[] = { "blobs", "uploads" };
    for (size_t i = 0; i < ARRAY_SIZE(subdirs); i++) {
        char d[600];
        snprintf(d, sizeof(d), "%s/%s", c->path, subdirs[i]);
        int r = cairn_mkdir_p(d, 0755);
        if (r) {
            log_error("cannot create the storage directory", "dir", d, "error", cairn_strerror(r));
            return r;
        }
    }
    if (RAND_bytes(s->token_key, sizeof(s->token_key)) != 1) {
        log_error("no random bytes for the token key");
        return -EIO;
    }
    if (c->tls_cert) {
        char err[512];
        struct tls_cert_conf cert = { c->tls_cert, c->tls_key };
        static const char *const alpn[] = { "h2", "http/1.1" };
        if (tls_server_new(&s->tls, &cert, 1, alpn, 2, err, sizeof(err))) {
            log_error("cannot load the TLS certificate", "error", err);
            return -EINVAL;
        }
    }
    if (c->proxied) {   /* https upstreams, and the https places they redirect blobs to */
        char err[512];
        static const char *const alpn[] = { "http/1.1" };
        if (tls_client_new(&s->up_tls, true, NULL, alpn, 1, err, sizeof(err))) {
            log_error("cannot set up TLS to the upstream registry", "error", err);
            return -EINVAL;
        }
    }
    httpd_conf_defaults(&s->hconf);
    s->hconf.tls = s->tls;
    s->hconf.limits.max_body = REG_MAX_MANIFEST;
    s->hconf.handler = reg__handle;
    s->hconf.handler_arg = s;
    s->hconf.stream_body = reg__stream_body;
    s->hconf.server = "cairn-registry";
    s->nworkers = c->threads;
    s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
    if (!s->workers)
        return -ENOMEM;
    for (int i = 0; i < s->nworkers; i++) {
        char err[512];
        s->workers[i].s = s;
        if (!(s->workers[i].db = reg_db_open(c->path, err, sizeof(err)))) {
            log_error("cannot open the metadata database", "error", err);
            return -EIO;
        }
    }
    int r = reg_bg_start(s, sc->reg);
    if (r)
        return r;
    r = service_http_pool_start(sc, &s->pool, s->nworkers, &s->hconf, c->listen, c->nlisten, REG_DRAIN_MS);
    for (int i = 0; i < s->pool.ninit; i++)
        s->pool.w[i].hw.data = &s->workers[i];
    if (r)
        return r;
    for (int i = 0; i < s->pool.ninit; i++)
        if ((r = reg_blobs_worker_init(&s->workers[i], &s->pool.w[i].loop)) ||
            (c->proxied && (r = reg_proxy_worker_init(&s->workers[i], &s->pool.w[i].loop))))
            return r;
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->listen[0], first, sizeof(first));
    if (c->proxied)
        log_info("registry is a pull-through cache", "upstream", c->proxy_url.text);
    log_info(c->nusers ? "registry serving (token auth)" : "registry serving (no users: anonymous pull, push and delete)",
             "addr", first, "scheme", s->tls ? "https" : "http", "dir", c->path, "users",
             log_int((long long)c->nusers), "threads", log_int(s->nworkers), "gc_interval_ms",
             log_int((long long)c->gc_interval_ms), "endpoints", log_int((long long)c->nendpoints));
    return 0;
}

static void reg_finish(struct service_ctx *sc)
{
    struct reg_svc *s = sc->role;
    reg_bg_stop(s);
    for (int i = 0; i < REG_HASHES; i++)
        EVP_MD_CTX_free(s->hashes[i].md);
    pthread_mutex_destroy(&s->hash_mu);
    /* the clients on the workers' loops go before the loops */
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        reg_proxy_worker_free(&s->workers[i]);
        reg_blobs_worker_free(&s->workers[i]);
    }
    service_http_pool_free(&s->pool);
    tls_ctx_free(&s->tls);
    for (int i = 0; s->workers && i < s->nworkers; i++)
        reg_db_close(s->workers[i].db);
    tls_ctx_free(&s->up_tls);
    free(s->workers);
}

static const struct service_ops reg_ops = {
    .start = reg_start,
    .stop_worker = service_http_pool_stop_worker,
    .finish = reg_finish,
};

int registry_main(const struct service *svc)
{
    struct reg_svc s;
    memset(&s, 0, sizeof(s));
    s.svc = svc;
    s.conf = svc->conf;
    return service_run(svc, &reg_ops, &s);
}
