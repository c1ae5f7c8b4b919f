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
    .summary = "OCI Distribution registry: push, pull, chunked uploads, tags, referrers",
    .parse = reg__parse,
    .main = registry_main,
    .free_conf = reg__free_conf,
};

static void worker_drained(struct httpd_worker *hw, void *arg)
{
    struct reg_worker *w = arg;
    UNUSED(hw);
    loop_stop(&w->loop);
}

static void worker_deadline(struct loop_timer *t)
{
    struct reg_worker *w = t->data;
    httpd_close_all(&w->hw);
    loop_stop(&w->loop);
}

static void worker_drain(void *arg)
{
    struct reg_worker *w = arg;
    loop_timer_start(&w->loop, &w->deadline, REG_DRAIN_MS);
    httpd_drain(&w->hw, worker_drained, w);
}

static int reg_start(struct service_ctx *sc)
{
    struct reg_svc *s = sc->role;
    struct reg_conf *c = s->conf;
    s->sc = sc;
    static const char *const labels[] = { "method", "code", NULL };
    s->f_requests = metrics_family(sc->reg, METRIC_COUNTER, "cairn_registry_requests_total",
                                   "Registry requests answered, by method and status.", labels, NULL, 0);
    if (!s->f_requests)
        return -ENOMEM;
    if (c->path[0] != '/') {
        char *full = malloc(strlen(s->svc->stack->data_dir) + strlen(c->path) + 2);
        if (!full)
            return -ENOMEM;
        sprintf(full, "%s/%s", s->svc->stack->data_dir, c->path);
        free(c->path);
        c->path = full;
    }
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
    httpd_conf_defaults(&s->hconf);
    s->hconf.limits.max_body = REG_MAX_MANIFEST;
    s->hconf.handler = reg__handle;
    s->hconf.handler_arg = s;
    s->hconf.stream_body = reg__stream_body;
    s->hconf.server = "cairn-registry";
    s->nworkers = c->threads;
    s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
    struct service_worker *sw = calloc((size_t)s->nworkers, sizeof(*sw));
    if (!s->workers || !sw) {
        free(sw);
        return -ENOMEM;
    }
    for (int i = 0; i < s->nworkers; i++) {
        struct reg_worker *w = &s->workers[i];
        w->s = s;
        char err[512];
        if (!(w->db = reg_db_open(c->path, err, sizeof(err)))) {
            log_error("cannot open the metadata database", "error", err);
            free(sw);
            return -EIO;
        }
        if (loop_init(&w->loop)) {
            free(sw);
            return -ENOMEM;
        }
        s->ninit++;
        httpd_worker_init(&w->hw, &w->loop);
        w->hw.data = w;
        loop_timer_init(&w->deadline, worker_deadline, w);
        sw[i].loop = &w->loop;
        sw[i].arg = w;
    }
    int r = service_set_workers(sc, sw, s->nworkers);
    free(sw);
    if (r)
        return r;
    for (int i = 0; i < s->nworkers; i++)
        for (size_t a = 0; a < c->nlisten; a++) {
            r = httpd_listen(&s->workers[i].hw, &c->listen[a], &s->hconf);
            if (r) {
                char addr[NET_ADDRSTRLEN];
                net_addr_format(&c->listen[a], addr, sizeof(addr));
                log_error("cannot listen", "addr", addr, "err", cairn_strerror(r));
                return r;
            }
        }
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->listen[0], first, sizeof(first));
    log_info(c->nusers ? "registry serving (token auth)" : "registry serving (no users: anonymous pull, push and delete)",
             "addr", first, "dir", c->path, "users", log_int((long long)c->nusers), "threads", log_int(s->nworkers));
    return 0;
}

static void reg_finish(struct service_ctx *sc)
{
    struct reg_svc *s = sc->role;
    for (int i = 0; i < s->ninit; i++) {
        httpd_worker_destroy(&s->workers[i].hw);
        loop_timer_stop(&s->workers[i].deadline);
        loop_destroy(&s->workers[i].loop);
    }
    for (int i = 0; s->workers && i < s->nworkers; i++)
        reg_db_close(s->workers[i].db);
    free(s->workers);
}

static const struct service_ops reg_ops = {
    .start = reg_start,
    .stop_worker = worker_drain,
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
