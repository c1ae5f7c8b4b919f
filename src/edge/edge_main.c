/* edge_main.c - role "edge": worker threads, listeners, admin API, shutdown. */
#include "edge_internal.h"
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "edge_cache.h"
#include "core/log.h"
#include "core/service.h"

#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>

#define EDGE_DRAIN_MS 5000

const struct role_ops edge_role = {
    .name = "edge",
    .deploy = ROLE_DEPLOY_PUBLIC,
    .summary = "HTTP load balancer and reverse proxy: routing, health checks, TLS, limits",
    .parse = edge__parse,
    .main = edge_main,
    .free_conf = edge__free_conf,
};

/* ---- admin API ---- */

static void backends_json(struct edge *e, struct buf *b)
{
    uint64_t now = cairn_now_ms();
    buf_puts(b, "{\"backends\":[");
    for (size_t i = 0; i < e->gen->conf->nbackends; i++) {
        const struct edge_backend *be = &e->gen->conf->backends[i];
        static const char *const bal[] = { "round_robin", "least_conn", "random2", "hash" };
        buf_printf(b, "%s{\"name\":", i ? "," : "");
        buf_json_str(b, be->name);
        bool all_down = edge__backend_all_down(be, now);
        buf_printf(b, ",\"balance\":\"%s\",\"health_checks\":%s,\"when_all_down\":\"%s\","
                      "\"panic\":%s,\"servers\":[",
                   bal[be->balance], be->health.enabled ? "true" : "false",
                   be->all_down_fail ? "fail" : "serve_all", all_down && !be->all_down_fail ? "true" : "false");
        for (size_t k = 0; k < be->nservers; k++) {
            const struct edge_server *s = &be->servers[k];
            uint64_t ej = __atomic_load_n(&s->ejected_until_ms, __ATOMIC_RELAXED);
            bool up = __atomic_load_n(&s->up, __ATOMIC_RELAXED);
            bool drain = __atomic_load_n(&s->admin_drain, __ATOMIC_RELAXED);
            const char *state = drain ? "drain" : !up ? "down" : ej > now ? "ejected" : "up";
            buf_printf(b, "%s{\"address\":", k ? "," : "");
            buf_json_str(b, s->name);
            buf_printf(b, ",\"state\":\"%s\",\"healthy\":%s,\"weight\":%u,\"inflight\":%d,"
                          "\"requests\":%llu,\"failures\":%llu,\"last_check\":",
                       state, up ? "true" : "false", s->weight,
                       __atomic_load_n(&s->inflight, __ATOMIC_RELAXED),
                       (unsigned long long)__atomic_load_n(&s->requests, __ATOMIC_RELAXED),
                       (unsigned long long)__atomic_load_n(&s->failures, __ATOMIC_RELAXED));
            buf_json_str(b, s->watch.target ? health_target_last(s->watch.target) : "");
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
        httpd_respond(r, 405, "application/json", LIT("{\"error\":\"use POST\"}\n"));
        return true;
    }
    bool drain;
    if (strcmp(action, "drain") == 0)
        drain = true;
    else if (strcmp(action, "enable") == 0)
        drain = false;
    else
        return false;
    for (size_t i = 0; i < e->gen->conf->nbackends; i++) {
        struct edge_backend *be = &e->gen->conf->backends[i];
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
    httpd_respond(r, 404, "application/json", LIT("{\"error\":\"no such backend or server\"}\n"));
    return true;
}

static void edge_admin(struct service_ctx *sc, struct httpd_req *r)
{
    struct edge *e = sc->role;
    if (strv_eq_cstr(r->h.path, "/api/cache/purge")) {
        if (!strv_eq_cstr(r->h.method, "POST")) {
            httpd_header(r, "Allow", "POST");
            httpd_respond(r, 405, "application/json", LIT("{\"error\":\"use POST\"}\n"));
            return;
        }
        char host[256] = "", prefix[1024] = "", tag[256] = "", url[1300] = "", all[8] = "";
        struct strv q = r->h.query.n ? r->h.query : r->body;
        bool h = http_query_param(q, "host", host, sizeof(host));
        bool p = http_query_param(q, "prefix", prefix, sizeof(prefix));
        bool t = http_query_param(q, "tag", tag, sizeof(tag));
        bool u = http_query_param(q, "url", url, sizeof(url));
        bool a = http_query_param(q, "all", all, sizeof(all)) && strcmp(all, "1") == 0;
        if (!p && !t && !u && !a) {
            static const char msg[] =
                "{\"error\":\"give url=HOST/PATH, prefix=/PATH (and host=), tag=TAG or all=1\"}\n";
            httpd_respond(r, 400, "application/json", msg, sizeof(msg) - 1);
            return;
        }
        size_t n = 0;
        for (size_t i = 0; i < e->ncaches; i++) {
            struct edge_cache_store *cs = e->caches[i];
            if (u) {
                /* url: host/target (a scheme is ignored) */
                const char *s2 = strstr(url, "://") ? strstr(url, "://") + 3 : url;
                const char *slash = strchr(s2, '/');
                char key[1300];
                int kl = slash ? snprintf(key, sizeof(key), "%.*s\n%s", (int)(slash - s2), s2, slash)
                               : snprintf(key, sizeof(key), "%s\n/", s2);
                for (int k = 0; k < kl && key[k] != '\n'; k++)
                    key[k] = (char)((key[k] >= 'A' && key[k] <= 'Z') ? key[k] + 32 : key[k]);
                n += edge_cache_purge_key(cs, key, (size_t)kl);
            }
            if (p || t || a)
                n += edge_cache_purge(cs, h ? host : NULL, p ? prefix : NULL, t ? tag : NULL, a);
        }
        log_info("cache purge", "objects", log_int((long long)n));
        char body[64];
        int bl = snprintf(body, sizeof(body), "{\"purged\":%zu}\n", n);
        httpd_respond(r, 200, "application/json", body, (size_t)bl);
        return;
    }
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

static double cache_objects(void *arg)
{
    struct edge *e = arg;
    double n = 0;
    for (size_t i = 0; i < e->ncaches; i++)
        n += (double)edge_cache_store_count(e->caches[i]);
    return n;
}

static double cache_bytes(void *arg)
{
    struct edge *e = arg;
    double n = 0;
    for (size_t i = 0; i < e->ncaches; i++)
        n += (double)edge_cache_store_bytes(e->caches[i]);
    return n;
}

static int setup_metrics(struct edge *e)
{
    static const char *const rl[] = { "route", "backend", "code", NULL };
    static const char *const sl[] = { "backend", "server", NULL };
    e->m_requests = metrics_family(e->reg, METRIC_COUNTER, "edge_requests_total",
                                   "Requests answered, by route, backend and status class.", rl, NULL, 0);
    e->m_server_up = metrics_family(e->reg, METRIC_GAUGE, "edge_server_up",
                                    "1 when the server passes its health checks.", sl, NULL, 0);
    static const char *const bl[] = { "backend", NULL };
    e->m_backend_panic = metrics_family(e->reg, METRIC_GAUGE, "edge_backend_panic",
                                        "1 while no server of the backend is healthy and requests go to all.",
                                        bl, NULL, 0);
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
    e->m_cache_bytes = metrics_counter(e->reg, "edge_cache_hit_bytes_total",
                                       "Body bytes of objects served from the caches (identity size).");
    e->m_coalesced = metrics_counter(e->reg, "edge_cache_coalesced_total",
                                     "Cache misses that waited for another request's fetch.");
    metrics_callback(e->reg, METRIC_GAUGE, "edge_connections_active", "Open client connections.",
                     active_conns, e);
    static const char *const cl[] = { "cache", "result", NULL };
    e->m_cache = metrics_family(e->reg, METRIC_COUNTER, "edge_cache_requests_total",
                                "Requests on cached routes by result: hit, miss, expired, pass.", cl, NULL, 0);
    metrics_callback(e->reg, METRIC_GAUGE, "edge_cache_objects", "Objects stored in the caches.",
                     cache_objects, e);
    metrics_callback(e->reg, METRIC_GAUGE, "edge_cache_bytes", "Bytes stored in the caches.",
                     cache_bytes, e);
    return e->m_requests && e->m_server_up && e->m_duration ? 0 : -ENOMEM;
}


/* ---- configuration generations ---- */

static void gen_ref(struct edge_gen *g)
{
    __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
}

static void gen_free(struct edge_gen *g)
{
    for (size_t i = 0; i < EDGE_MAX_LISTEN; i++)
        tls_ctx_free(&g->lctx[i].tls);
    if (g->backend_tls) {
        for (size_t i = 0; i < g->conf->nbackends; i++)
            tls_ctx_free(&g->backend_tls[i]);
        free(g->backend_tls);
    }
    if (g->routes) {
        for (size_t i = 0; i < g->conf->nroutes; i++)
            free(g->routes[i].rl);
        free(g->routes);
    }
    if (g->owns_stack)
        stack_free(&g->stack);
    free(g);
}

static void gen_unref(struct edge_gen *g)
{
    if (__atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) == 0)
        gen_free(g);
}

static uint64_t ip_key(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr | (1ull << 40);
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return ((uint64_t)edge__hash(a, 16) << 32 | edge__hash(a, 8)) | 1;
}

/* Adds delta to the client's count; returns the new count (0 when uncounted). */
int edge__conn_count(struct edge *e, const struct sockaddr *sa, int delta)
{
    uint64_t key = ip_key(sa);
    struct cl_set *set = &e->conn_limits[edge__hash(&key, sizeof(key)) % CL_SETS];
    int n = 0;
    while (__atomic_exchange_n(&set->lock, 1, __ATOMIC_ACQUIRE))
        ;
    int free_way = -1;
    for (int i = 0; i < CL_WAYS; i++) {
        if (set->count[i] > 0 && set->key[i] == key) {
            set->count[i] += delta;
            n = set->count[i];
            free_way = -2;
            break;
        }
        if (set->count[i] <= 0 && free_way == -1)
            free_way = i;
    }
    if (free_way >= 0 && delta > 0) {
        set->key[free_way] = key;
        set->count[free_way] = delta;
        n = delta;
    }
    __atomic_store_n(&set->lock, 0, __ATOMIC_RELEASE);
    return n;
}

/* Connections pin the generation they were accepted under, and count towards
 * their client's max_conns_per_ip. */
static bool conn_opened(void *arg, const struct sockaddr *peer)
{
    struct edge_lctx *lc = arg;
    gen_ref(lc->gen);
    int limit = lc->gen->conf->max_conns_per_ip;
    if (!limit)
        return true;
    if (edge__conn_count(lc->e, peer, 1) > limit) {
        metric_inc(lc->e->m_denied);
        return false;
    }
    return true;
}

static void conn_closed(void *arg, const struct sockaddr *peer)
{
    struct edge_lctx *lc = arg;
    if (lc->gen->conf->max_conns_per_ip)
        edge__conn_count(lc->e, peer, -1);
    gen_unref(lc->gen);
}

/* self_signed: listeners get a certificate made at first start (the default
 * stack's HTTPS port), kept for later starts. */
static void make_self_signed(const struct edge_listener *l)
{
    for (size_t k = 0; k < l->ncerts; k++) {
        if (access(l->certs[k].cert, R_OK) == 0 && access(l->certs[k].key, R_OK) == 0)
            continue;
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", l->certs[k].cert);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = '\0';
            cairn_mkdir_p(dir, 0755);
        }
        char err[256];
        if (tls_make_self_signed(l->certs[k].cert, l->certs[k].key, "localhost", err, sizeof(err)))
            log_error("cannot make a self-signed certificate", "err", err);
        else
            log_info("made a self-signed certificate", "cert", l->certs[k].cert);
    }
}

/* Builds a generation: listener configurations with their TLS contexts and the
 * per-route runtime state. Returns NULL after logging why. */
static struct edge_gen *gen_new(struct edge *e, const struct edge_conf *c)
{
    struct edge_gen *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->e = e;
    g->refs = 1;
    g->conf = c;
    g->id = e->next_gen++;
    if (edge__gen_routes_init(g)) {
        log_error("out of memory");
        goto fail;
    }
    /* a cached route keeps its store across reloads (found by its label) */
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct edge_route *rt = &c->routes[i];
        if (!rt->cache)
            continue;
        struct edge_cache_store *cs = NULL;
        for (size_t k = 0; k < e->ncaches && !cs; k++)
            if (strcmp(edge_cache_store_label(e->caches[k]), rt->label) == 0)
                cs = e->caches[k];
        if (cs) {
            edge_cache_store_resize(cs, rt->cache_memory, rt->cache_max_object, rt->cache_heuristic,
                               rt->cache_compress);
        } else if (e->ncaches < EDGE_MAX_CACHES) {
            cs = edge_cache_store_new(rt->label, rt->cache_memory, rt->cache_max_object, rt->cache_heuristic,
                                 rt->cache_compress, e->reg);
            if (!cs) {
                log_error("out of memory");
                goto fail;
            }
            e->caches[e->ncaches++] = cs;
            if (rt->cache_disk) {
                int dr = edge_cache_store_open_disk(cs, rt->cache_disk, rt->cache_disk_size);
                if (dr)
                    log_error("cannot use the cache disk tier", "dir", rt->cache_disk, "err",
                              cairn_strerror(dr));
            }
        }
        g->routes[i].cache = cs;
    }
    g->backend_tls = calloc(c->nbackends ? c->nbackends : 1, sizeof(*g->backend_tls));
    if (!g->backend_tls)
        goto fail;
    for (size_t i = 0; i < c->nbackends; i++) {
        const struct edge_backend *b = &c->backends[i];
        if (!b->tls)
            continue;
        char err[512];
        static const char *const alpn[] = { "http/1.1" };
        if (tls_client_new(&g->backend_tls[i], b->tls_verify, b->tls_ca, alpn, 1, err, sizeof(err)) ||
            (b->tls_cert && tls_client_use_cert(g->backend_tls[i], b->tls_cert, b->tls_key, err, sizeof(err)))) {
            log_error("backend TLS setup failed", "backend", b->name, "err", err);
            goto fail;
        }
    }
    for (size_t i = 0; i < c->nlisten; i++) {
        struct edge_lctx *lc = &g->lctx[i];
        lc->e = e;
        lc->gen = g;
        lc->l = &c->listen[i];
        httpd_conf_defaults(&lc->hconf);
        lc->hconf.handler = edge__proxy;
        lc->hconf.handler_arg = lc;
        lc->hconf.on_open = conn_opened;
        lc->hconf.on_close = conn_closed;
        lc->hconf.server = NULL;
        lc->hconf.header_timeout_ms = (uint32_t)c->header_timeout_ms;
        lc->hconf.idle_timeout_ms = (uint32_t)c->idle_timeout_ms;
        lc->hconf.body_timeout_ms = (uint32_t)c->body_timeout_ms;
        lc->hconf.limits.max_body = c->max_body;
        lc->hconf.limits.max_header_bytes = c->max_header_bytes;
        lc->hconf.limits.max_headers = c->max_headers;
        lc->hconf.limits.max_request_line = MIN(c->max_header_bytes, (size_t)8192);
        lc->hconf.max_conns = c->max_conns;
        if (lc->l->tls && lc->l->self_signed)
            make_self_signed(lc->l);
        if (lc->l->tls) {
            struct tls_cert_conf certs[16];
            size_t n = MIN(lc->l->ncerts, ARRAY_SIZE(certs));
            for (size_t k = 0; k < n; k++) {
                certs[k].cert = lc->l->certs[k].cert;
                certs[k].key = lc->l->certs[k].key;
            }
            /* HTTP listeners offer h2 first (browsers, h2load); L4 ones offer nothing */
            static const char *const alpn[] = { "h2", "http/1.1" };
            char err[512];
            if (tls_server_new(&lc->tls, certs, n, lc->l->tcp ? NULL : alpn, lc->l->tcp ? 0 : 2, err,
                               sizeof(err))) {
                log_error("TLS setup failed", "err", err);
                goto fail;
            }
            lc->hconf.tls = lc->tls;
        }
    }
    return g;
fail:
    gen_free(g);
    return NULL;
}

/* A reloaded server keeps the drain, ejection and slow start of its namesake in the old
 * configuration, so that a reload neither sends traffic to a server known to be
 * down nor waits rise x interval for the others. */
static void carry_state(const struct edge_conf *old, const struct edge_conf *nc)
{
    for (size_t b = 0; b < nc->nbackends; b++) {
        const struct edge_backend *ob = NULL;
        for (size_t k = 0; k < old->nbackends; k++)
            if (strcmp(old->backends[k].name, nc->backends[b].name) == 0)
                ob = &old->backends[k];
        if (!ob)
            continue;
        for (size_t i = 0; i < nc->backends[b].nservers; i++) {
            struct edge_server *s = &nc->backends[b].servers[i];
            for (size_t k = 0; k < ob->nservers; k++) {
                const struct edge_server *o = &ob->servers[k];
                if (!net_addr_eq(&o->addr, &s->addr))
                    continue;
                s->admin_drain = __atomic_load_n(&o->admin_drain, __ATOMIC_RELAXED);
                s->ejected_until_ms = __atomic_load_n(&o->ejected_until_ms, __ATOMIC_RELAXED);
                s->recovered_ms = o->recovered_ms;
            }
        }
    }
}

/* ---- workers ---- */

#define RETIRE_GRACE_MS 2000

/* Points the worker's listeners at generation g (binding new addresses, closing
 * dropped ones) and retires the connections of the previous generation. */
static int worker_use_gen(struct edge_worker *w, struct edge_gen *g)
{
    struct edge_gen *old = w->gen;
    const struct edge_conf *c = g->conf;
    int r = edge__worker_pools_init(w, c);
    if (r)
        return r;
    r = edge__l4_use_gen(w, g);
    if (r)
        return r;
    for (size_t i = 0; i < c->nlisten; i++) {
        if (c->listen[i].tcp)
            continue;
        struct httpd_listener *l = httpd_listener_find(&w->hw, &c->listen[i].addr);
        if (l) {
            httpd_listener_set_conf(l, &g->lctx[i].hconf);
            continue;
        }
        r = httpd_listen(&w->hw, &c->listen[i].addr, &g->lctx[i].hconf);
        if (r) {
            char a[NET_ADDRSTRLEN];
            net_addr_format(&c->listen[i].addr, a, sizeof(a));
            log_error("cannot listen", "addr", a, "err", cairn_strerror(r));
            return r;
        }
    }
    if (old) {
        for (size_t i = 0; i < old->conf->nlisten; i++) {
            if (old->conf->listen[i].tcp)
                continue;
            bool kept = false;
            for (size_t k = 0; k < c->nlisten; k++)
                kept |= !c->listen[k].tcp && net_addr_eq(&old->conf->listen[i].addr, &c->listen[k].addr);
            struct httpd_listener *l = kept ? NULL : httpd_listener_find(&w->hw, &old->conf->listen[i].addr);
            if (l)
                httpd_listener_close(&w->hw, l);
            httpd_retire(&w->hw, &old->lctx[i].hconf, RETIRE_GRACE_MS);
        }
    }
    gen_ref(g);
    w->gen = g;
    if (old)
        gen_unref(old);
    return 0;
}

struct swap_job {
    struct edge_worker *w;
    struct edge_gen *g;
};

static void worker_swap_job(void *arg)
{
    struct swap_job *j = arg;
    if (worker_use_gen(j->w, j->g))
        log_error("worker could not switch to the new configuration", "worker", log_int(j->w->index));
    gen_unref(j->g);    /* the reference the job carried */
    free(j);
}

/* Makes the service in st (loaded by the caller, taken over on success) the
 * current generation: DNS answers applied, health state carried over, then
 * every worker switches. Runs on worker 0. */
static int edge_switch(struct edge *e, struct stack *st, struct cfg_errors *errs, const char *why)
{
    const struct service *svc = e->svc;
    struct edge_gen *cur = e->gen;
    const struct service *ns = stack_find(st, svc->name);
    struct edge_conf *nc = ns->conf;
    if (nc->threads != e->nworkers)
        log_warn("threads changed: takes effect at the next restart");
    if (cur->conf->have_admin != nc->have_admin ||
        (nc->have_admin && !net_addr_eq(&cur->conf->admin, &nc->admin)))
        log_warn("admin address changed: takes effect at the next restart");
    if (edge__resolve_servers(nc, errs))
        return -EINVAL;
    edge__dns_apply(e, nc);
    carry_state(cur->conf, nc);
    struct edge_gen *g = gen_new(e, nc);
    if (!g) {
        cfg_errors_add(errs, "the new configuration could not be set up (see the log)");
        return -EINVAL;
    }
    stack_move(&g->stack, st);
    g->owns_stack = true;
    /* health checks move to the new servers: started first, so that a server
     * that stays keeps its check, its state and its timing */
    if (edge__health_start(g))
        log_error("cannot start health checks for the new configuration");
    edge__health_stop(cur);
    edge__dns_update(e, nc);
    e->gen = g;
    for (int i = 0; i < e->nworkers; i++) {
        struct swap_job *j = malloc(sizeof(*j));
        if (!j)
            continue;
        j->w = &e->workers[i];
        j->g = g;
        gen_ref(g);
        loop_post(&e->workers[i].loop, worker_swap_job, j);
    }
    gen_unref(cur);     /* the edge's own reference moves to g (taken by gen_new) */
    log_info("configuration reloaded", "generation", log_int(g->id), "why", why, "routes",
             log_int((long long)nc->nroutes), "backends", log_int((long long)nc->nbackends));
    return 0;
}

/* The skeleton's reload hook: every worker switches to the service re-read into st. */
static int edge_reload(struct service_ctx *sc, struct stack *st, struct cfg_errors *errs)
{
    return edge_switch(sc->role, st, errs, "reload");
}

/* A new generation from the same stack text (DNS answers changed). */
int edge__regenerate(struct edge *e, const char *why)
{
    struct edge_gen *cur = e->gen;
    const struct stack *src = cur->owns_stack ? &cur->stack : e->svc->stack;
    struct stack st;
    struct cfg_errors errs = { 0 };
    int r = stack_load_one(&st, src->file, src->text, e->svc->name, &edge_role, &errs);
    if (r == 0)
        r = edge_switch(e, &st, &errs, why);
    if (r) {
        stack_free(&st);
        log_error("cannot rebuild the configuration", "why", why);
    }
    cfg_errors_free(&errs);
    return r;
}

static void worker_drained(struct httpd_worker *hw, void *arg)
{
    struct edge_worker *w = arg;
    UNUSED(hw);
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
    if (w->index == 0)
        edge__health_stop(w->e->gen);
    edge__worker_free_pools(w);
    edge__l4_close_all(w);
    httpd_drain(&w->hw, worker_drained, w);
}

static int worker_init(struct edge *e, struct edge_worker *w, int index)
{
    w->e = e;
    w->index = index;
    int r = loop_init(&w->loop);
    if (r)
        return r;
    httpd_worker_init(&w->hw, &w->loop);
    w->tunnels.loop = &w->loop;
    w->hw.data = w;
    loop_timer_init(&w->deadline, worker_deadline, w);
    loop_timer_init(&w->queue_poll, NULL, w);   /* its callback is set when used */
    struct httpc_opts ho;
    httpc_opts_defaults(&ho);
    w->up = httpc_new(&w->loop, &ho);
    if (!w->up)
        return -ENOMEM;
    return worker_use_gen(w, e->gen);
}

static void worker_destroy(struct edge_worker *w)
{
    if (!w->e)
        return;
    edge__queue_flush(w);
    edge__bg_stop(w);
    edge__worker_free_pools(w);
    edge__l4_close_all(w);
    tunnel_close_all(&w->tunnels);
    httpd_worker_destroy(&w->hw);
    httpc_free(&w->up);         /* after the requests that used it, before its loop */
    pcre2_match_data_free(w->re_md);
    loop_destroy(&w->loop);
    free(w->pools);
    free(w->server_base);
    free(w->rr);
    if (w->gen)
        gen_unref(w->gen);
    w->gen = NULL;
}

static int edge_start(struct service_ctx *sc)
{
    struct edge *e = sc->role;
    const struct service *svc = e->svc;
    e->sc = sc;
    e->reg = sc->reg;
    e->conn_limits = calloc(CL_SETS, sizeof(*e->conn_limits));
    if (!e->conn_limits || setup_metrics(e)) {
        log_error("out of memory");
        return -ENOMEM;
    }
    /* DNS backends get their first servers before the first generation (the
     * configuration is this process's own; filling its server lists is fine) */
    if (edge__dns_init(e, (struct edge_conf *)svc->conf)) {
        log_error("out of memory");
        return -ENOMEM;
    }
    struct cfg_errors rerrs = { 0 };
    if (edge__resolve_servers((struct edge_conf *)svc->conf, &rerrs)) {
        for (size_t i = 0; i < rerrs.n; i++)
            log_error("cannot start", "error", rerrs.msgs[i]);
        cfg_errors_free(&rerrs);
        return -EINVAL;
    }
    e->gen = gen_new(e, svc->conf);
    if (!e->gen)
        return -EINVAL;
    const struct edge_conf *c = e->gen->conf;
    int n = c->threads;
    /* On a node shared with other work the proxy is runnable more than it is
     * asleep; the shortest slice (0.1 ms) runs it sooner each time, at the same
     * share of the CPU: a lower tail latency (bench/RESULTS.md, bench-edge). */
    if (c->short_slices)
        sc->sched_slice_ns = 100 * 1000;    /* 0.1 ms, the least EEVDF takes */
    e->workers = calloc((size_t)n, sizeof(*e->workers));
    struct service_worker *sw = calloc((size_t)n, sizeof(*sw));
    if (!e->workers || !sw) {
        free(sw);
        return -ENOMEM;
    }
    int r = 0;
    for (int i = 0; i < n && !r; i++) {
        e->nworkers = i + 1;
        r = worker_init(e, &e->workers[i], i);
        sw[i].loop = &e->workers[i].loop;
        sw[i].arg = &e->workers[i];
    }
    if (!r)
        r = service_set_workers(sc, sw, n);
    free(sw);
    if (r)
        return r;
    if (c->have_admin && (r = service_admin_listen(sc, &c->admin)))
        return r;
    if (health_checker_init(&e->health, &e->workers[0].loop, "cairn-edge-health")) {
        log_error("out of memory");
        return -ENOMEM;
    }
    e->health_inited = true;
    if (edge__health_start(e->gen)) {
        log_error("cannot start health checks");
        return -ENOMEM;
    }
    if (edge__dns_start(e)) {
        log_error("cannot start the DNS resolver thread");
        return -EAGAIN;
    }
    e->otlp = otlp_for_service(e->svc, &c->tracing, sc->reg);
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->listen[0].addr, first, sizeof(first));
    log_info("edge serving", "addr", first, "listeners", log_int((long long)c->nlisten), "routes",
             log_int((long long)c->nroutes), "backends", log_int((long long)c->nbackends), "threads",
             log_int(e->nworkers));
    return 0;
}

static void edge_finish(struct service_ctx *sc)
{
    struct edge *e = sc->role;
    if (e->gen && e->health_inited)
        edge__health_stop(e->gen);
    if (e->health_inited)
        health_checker_destroy(&e->health);     /* before the loops go */
    edge__dns_stop(e);
    for (int i = 0; i < e->nworkers; i++)
        worker_destroy(&e->workers[i]);
    otlp_stop(e->otlp);
    e->otlp = NULL;
    free(e->workers);
    if (e->gen)
        gen_unref(e->gen);
    for (size_t i = 0; i < e->ncaches; i++)
        edge_cache_store_free(e->caches[i]);
    free(e->conn_limits);
}

static const struct service_ops edge_ops = {
    .start = edge_start,
    .reload = edge_reload,
    .stop_worker = worker_drain,
    .admin = edge_admin,
    .finish = edge_finish,
    .trim_ms = 2000,
};

int edge_main(const struct service *svc)
{
    struct edge e;
    memset(&e, 0, sizeof(e));
    e.svc = svc;
    return service_run(svc, &edge_ops, &e);
}
