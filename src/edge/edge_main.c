/* edge_main.c - role "edge": worker threads, listeners, admin API, shutdown. */
#include "edge_internal.h"
#include "log.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#define EDGE_DRAIN_MS 5000

const struct role_ops edge_role = {
    .name = "edge",
    .summary = "HTTP load balancer and reverse proxy: routing, health checks, TLS, limits",
    .parse = edge__parse,
    .main = edge_main,
    .free_conf = edge__free_conf,
};

/* ---- admin API ---- */

static void json_str(struct buf *b, const char *s)
{
    buf_putc(b, '"');
    buf_json_escape(b, s, strlen(s));
    buf_putc(b, '"');
}

static void backends_json(struct edge *e, struct buf *b)
{
    uint64_t now = cairn_now_ms();
    buf_puts(b, "{\"backends\":[");
    for (size_t i = 0; i < e->conf->nbackends; i++) {
        const struct edge_backend *be = &e->conf->backends[i];
        static const char *const bal[] = { "round_robin", "least_conn", "random2", "hash" };
        buf_printf(b, "%s{\"name\":", i ? "," : "");
        json_str(b, be->name);
        buf_printf(b, ",\"balance\":\"%s\",\"health_checks\":%s,\"servers\":[", bal[be->balance],
                   be->health.enabled ? "true" : "false");
        for (size_t k = 0; k < be->nservers; k++) {
            const struct edge_server *s = &be->servers[k];
            uint64_t ej = __atomic_load_n(&s->ejected_until_ms, __ATOMIC_RELAXED);
            bool up = __atomic_load_n(&s->up, __ATOMIC_RELAXED);
            bool drain = __atomic_load_n(&s->admin_drain, __ATOMIC_RELAXED);
            const char *state = drain ? "drain" : !up ? "down" : ej > now ? "ejected" : "up";
            buf_printf(b, "%s{\"address\":", k ? "," : "");
            json_str(b, s->name);
            buf_printf(b, ",\"state\":\"%s\",\"healthy\":%s,\"weight\":%u,\"inflight\":%d,"
                          "\"requests\":%llu,\"failures\":%llu,\"last_check\":",
                       state, up ? "true" : "false", s->weight,
                       __atomic_load_n(&s->inflight, __ATOMIC_RELAXED),
                       (unsigned long long)__atomic_load_n(&s->requests, __ATOMIC_RELAXED),
                       (unsigned long long)__atomic_load_n(&s->failures, __ATOMIC_RELAXED));
            json_str(b, s->last_check);
            buf_putc(b, '}');
        }
        buf_puts(b, "]}");
    }
    buf_puts(b, "]}\n");
}

/* POST /api/backends/NAME/servers/ADDR/(drain|enable) */
static bool admin_server_action(struct edge *e, struct httpd_req *r)
{
    char path[256];
    snprintf(path, sizeof(path), "%.*s", (int)MIN(r->h.path.n, (size_t)255), r->h.path.p);
    char name[64], addr[80], action[16];
    if (sscanf(path, "/api/backends/%63[^/]/servers/%79[^/]/%15s", name, addr, action) != 3)
        return false;
    if (!strv_eq_cstr(r->h.method, "POST")) {
        httpd_header(r, "Allow", "POST");
        httpd_respond(r, 405, "application/json", "{\"error\":\"use POST\"}\n", 20);
        return true;
    }
    bool drain;
    if (strcmp(action, "drain") == 0)
        drain = true;
    else if (strcmp(action, "enable") == 0)
        drain = false;
    else
        return false;
    for (size_t i = 0; i < e->conf->nbackends; i++) {
        struct edge_backend *be = &e->conf->backends[i];
        if (strcmp(be->name, name) != 0)
            continue;
        for (size_t k = 0; k < be->nservers; k++) {
            if (strcmp(be->servers[k].name, addr) == 0) {
                __atomic_store_n(&be->servers[k].admin_drain, drain ? 1 : 0, __ATOMIC_RELAXED);
                log_info(drain ? "server drained by admin" : "server enabled by admin", "backend",
                         name, "server", addr);
                struct buf b = BUF_INIT;
                backends_json(e, &b);
                httpd_respond(r, 200, "application/json", buf_head(&b), buf_used(&b));
                buf_free(&b);
                return true;
            }
        }
    }
    httpd_respond(r, 404, "application/json", "{\"error\":\"no such backend or server\"}\n", 38);
    return true;
}

void edge__admin(struct httpd_req *r, void *arg)
{
    struct edge *e = arg;
    if (httpd_serve_builtin(r, e->reg, !__atomic_load_n(&e->stopping, __ATOMIC_RELAXED)))
        return;
    if (strv_eq_cstr(r->h.path, "/api/backends")) {
        struct buf b = BUF_INIT;
        backends_json(e, &b);
        httpd_respond(r, 200, "application/json", buf_head(&b), buf_used(&b));
        buf_free(&b);
        return;
    }
    if (strv_has_prefix(r->h.path, "/api/backends/") && admin_server_action(e, r))
        return;
    httpd_respond(r, 404, "text/plain; charset=utf-8", "not found\n", 10);
}

/* ---- metrics ---- */

static double active_conns(void *arg)
{
    struct edge *e = arg;
    double n = 0;
    for (int i = 0; i < e->nworkers; i++)
        n += (double)__atomic_load_n(&e->workers[i].hw.nconns, __ATOMIC_RELAXED);
    return n;
}

static int setup_metrics(struct edge *e)
{
    e->reg = metrics_registry_new();
    if (!e->reg)
        return -ENOMEM;
    static const char *const rl[] = { "route", "backend", "code", NULL };
    static const char *const sl[] = { "backend", "server", NULL };
    e->m_requests = metrics_family(e->reg, METRIC_COUNTER, "edge_requests_total",
                                   "Requests answered, by route, backend and status class.", rl, NULL, 0);
    e->m_server_up = metrics_family(e->reg, METRIC_GAUGE, "edge_server_up",
                                    "1 when the server passes its health checks.", sl, NULL, 0);
    e->m_duration = metrics_histogram(e->reg, "edge_request_duration_seconds",
                                      "Time from request to the end of the response.",
                                      metrics_latency_buckets, metrics_latency_nbuckets);
    e->m_retries = metrics_counter(e->reg, "edge_retries_total", "Requests tried again on another server.");
    e->m_upstream_connects = metrics_counter(e->reg, "edge_upstream_connects_total",
                                             "New connections opened to servers.");
    e->m_upstream_errors = metrics_counter(e->reg, "edge_upstream_errors_total",
                                           "Failed attempts to get a response from a server.");
    e->m_bytes_out = metrics_counter(e->reg, "edge_response_bytes_total", "Response body bytes sent.");
    e->m_denied = metrics_counter(e->reg, "edge_denied_total", "Requests refused by allow/deny rules.");
    e->m_limited = metrics_counter(e->reg, "edge_rate_limited_total", "Requests refused with 429.");
    metrics_callback(e->reg, METRIC_GAUGE, "edge_connections_active", "Open client connections.",
                     active_conns, e);
    metrics_add_process(e->reg);
    return e->m_requests && e->m_server_up && e->m_duration ? 0 : -ENOMEM;
}

/* ---- workers ---- */

static void worker_drained(struct httpd_worker *hw, void *arg)
{
    struct edge_worker *w = arg;
    UNUSED(hw);
    if (w->index == 0 && w->admin_hw.nconns)
        httpd_close_all(&w->admin_hw);
    loop_stop(&w->loop);
}

static void worker_deadline(struct loop_timer *t)
{
    struct edge_worker *w = t->data;
    httpd_close_all(&w->hw);
    loop_stop(&w->loop);
}

static void worker_drain(void *arg)
{
    struct edge_worker *w = arg;
    loop_timer_start(&w->loop, &w->deadline, EDGE_DRAIN_MS);
    if (w->index == 0) {
        edge__health_stop(w->e);
        httpd_drain(&w->admin_hw, NULL, NULL);
    }
    edge__worker_free_pools(w);
    httpd_drain(&w->hw, worker_drained, w);
}

static void on_signal(struct loop *l, int signo, void *arg)
{
    struct edge *e = arg;
    UNUSED(l);
    if (signo == SIGHUP) {
        log_warn("SIGHUP: configuration reload is not implemented yet for edge; restart to apply changes");
        return;
    }
    if (__atomic_exchange_n(&e->stopping, 1, __ATOMIC_RELAXED))
        return;
    log_info("stopping", "signal", signo == SIGINT ? "SIGINT" : "SIGTERM");
    for (int i = 0; i < e->nworkers; i++)
        loop_post(&e->workers[i].loop, worker_drain, &e->workers[i]);
}

/* Bursts of connections leave freed memory scattered through the heap; give it
 * back to the kernel every few seconds so that RSS follows what is in use. */
static void trim_cb(struct loop_timer *t)
{
    malloc_trim(0);
    loop_timer_start(t->loop, t, 2000);
}

static void *worker_thread(void *arg)
{
    struct edge_worker *w = arg;
    loop_run(&w->loop);
    return NULL;
}

static int worker_init(struct edge *e, struct edge_worker *w, int index)
{
    w->e = e;
    w->index = index;
    int r = loop_init(&w->loop);
    if (r)
        return r;
    httpd_worker_init(&w->hw, &w->loop);
    httpd_worker_init(&w->admin_hw, &w->loop);
    w->hw.data = w;
    w->admin_hw.data = w;
    loop_timer_init(&w->deadline, worker_deadline, w);
    const struct edge_conf *c = e->conf;
    w->server_base = calloc(c->nbackends ? c->nbackends : 1, sizeof(size_t));
    w->rr = calloc(c->nbackends ? c->nbackends : 1, sizeof(unsigned));
    if (!w->server_base || !w->rr)
        return -ENOMEM;
    for (size_t b = 0; b < c->nbackends; b++) {
        w->server_base[b] = w->nslots;
        w->nslots += c->backends[b].nservers;
        w->rr[b] = (unsigned)index * 7919u;     /* threads start at different servers */
    }
    w->idle = calloc(w->nslots ? w->nslots : 1, sizeof(*w->idle));
    if (!w->idle)
        return -ENOMEM;
    for (size_t i = 0; i < c->nlisten; i++) {
        r = httpd_listen(&w->hw, &c->listen[i].addr, &e->lctx[i].hconf);
        if (r) {
            char a[NET_ADDRSTRLEN];
            net_addr_format(&c->listen[i].addr, a, sizeof(a));
            log_error("cannot listen", "addr", a, "err", cairn_strerror(r));
            return r;
        }
    }
    if (index == 0 && c->have_admin) {
        r = httpd_listen(&w->admin_hw, &c->admin, &e->admin_conf);
        if (r) {
            char a[NET_ADDRSTRLEN];
            net_addr_format(&c->admin, a, sizeof(a));
            log_error("cannot listen (admin)", "addr", a, "err", cairn_strerror(r));
            return r;
        }
    }
    return 0;
}

static void worker_destroy(struct edge_worker *w)
{
    if (!w->e)
        return;
    edge__worker_free_pools(w);
    httpd_worker_destroy(&w->hw);
    httpd_worker_destroy(&w->admin_hw);
    loop_destroy(&w->loop);
    free(w->idle);
    free(w->server_base);
    free(w->rr);
}

int edge_main(const struct service *svc)
{
    struct edge e;
    int code = 1;
    memset(&e, 0, sizeof(e));
    e.svc = svc;
    e.conf = svc->conf;
    const struct edge_conf *c = e.conf;
    if (setup_metrics(&e) || edge__proxy_handle_init(&e)) {
        log_error("out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->nlisten; i++) {
        struct edge_lctx *lc = &e.lctx[i];
        lc->e = &e;
        lc->l = &c->listen[i];
        httpd_conf_defaults(&lc->hconf);
        lc->hconf.handler = edge__proxy;
        lc->hconf.handler_arg = lc;
        lc->hconf.server = NULL;
        lc->hconf.header_timeout_ms = (uint32_t)c->header_timeout_ms;
        lc->hconf.idle_timeout_ms = (uint32_t)c->idle_timeout_ms;
        lc->hconf.body_timeout_ms = (uint32_t)c->body_timeout_ms;
        lc->hconf.limits.max_body = c->max_body;
        lc->hconf.max_conns = c->max_conns;
        if (lc->l->tls) {
            struct tls_cert_conf certs[16];
            size_t n = MIN(lc->l->ncerts, ARRAY_SIZE(certs));
            for (size_t k = 0; k < n; k++) {
                certs[k].cert = lc->l->certs[k].cert;
                certs[k].key = lc->l->certs[k].key;
            }
            static const char *const alpn[] = { "http/1.1" };
            char err[512];
            if (tls_server_new(&lc->tls, certs, n, alpn, 1, err, sizeof(err))) {
                log_error("TLS setup failed", "err", err);
                goto out;
            }
            lc->hconf.tls = lc->tls;
        }
    }
    httpd_conf_defaults(&e.admin_conf);
    e.admin_conf.handler = edge__admin;
    e.admin_conf.handler_arg = &e;
    e.nworkers = c->threads;
    e.workers = calloc((size_t)e.nworkers, sizeof(*e.workers));
    if (!e.workers)
        goto out;
    for (int i = 0; i < e.nworkers; i++)
        if (worker_init(&e, &e.workers[i], i))
            goto out_workers;
    static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
    if (loop_signals(&e.workers[0].loop, sigs, ARRAY_SIZE(sigs), on_signal, &e))
        goto out_workers;
    signal(SIGPIPE, SIG_IGN);
    if (edge__health_start(&e, &e.workers[0].loop)) {
        log_error("cannot start health checks");
        goto out_workers;
    }
    int started = 1;
    for (int i = 1; i < e.nworkers; i++, started++)
        if (pthread_create(&e.workers[i].thread, NULL, worker_thread, &e.workers[i])) {
            log_error("cannot start thread");
            for (int k = 1; k < started; k++)
                loop_post(&e.workers[k].loop, worker_drain, &e.workers[k]);
            for (int k = 1; k < started; k++)
                pthread_join(e.workers[k].thread, NULL);
            edge__health_stop(&e);
            goto out_workers;
        }
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->listen[0].addr, first, sizeof(first));
    log_info("edge serving", "addr", first, "listeners", log_int((long long)c->nlisten), "routes",
             log_int((long long)c->nroutes), "backends", log_int((long long)c->nbackends), "threads",
             log_int(e.nworkers));
    struct loop_timer trim;
    loop_timer_init(&trim, trim_cb, NULL);
    loop_timer_start(&e.workers[0].loop, &trim, 2000);
    service_notify_ready();
    loop_run(&e.workers[0].loop);
    loop_timer_stop(&trim);
    for (int i = 1; i < e.nworkers; i++)
        pthread_join(e.workers[i].thread, NULL);
    edge__health_stop(&e);
    log_info("stopped");
    code = 0;
out_workers:
    for (int i = 0; i < e.nworkers; i++)
        worker_destroy(&e.workers[i]);
    free(e.workers);
out:
    for (size_t i = 0; i < c->nlisten; i++)
        tls_ctx_free(&e.lctx[i].tls);
    if (e.routes) {
        for (size_t i = 0; i < c->nroutes; i++)
            free(e.routes[i].rl);
        free(e.routes);
    }
    metrics_registry_free(&e.reg);
    return code;
}
