/* demo_app.c - role "demo-app": a small web application to serve and test with.
 *
 *   /                  HTML page naming the instance; loads the two assets below
 *   /static/app.js     cacheable (Cache-Control: public, max-age=3600, ETag,
 *   /static/style.css  Last-Modified; conditional GET answers 304)
 *   /api/hello         dynamic JSON naming the instance (Cache-Control: no-store)
 *   /healthz           200 "ok", or 503 while health is set to fail
 *   /-/faults          GET shows, POST sets the fault injection settings
 *   /metrics, /-/healthy, /-/ready
 *
 * Fault injection, for testing what sits in front: per request with the query
 * parameters latency=DURATION and status=CODE, or for every request with
 * POST /-/faults?latency=200ms&error_rate=0.5&healthy=false (reset=1 clears).
 * The settings are process-wide atomics read by every worker thread.
 */
#include "demo_app.h"
#include "assets.h"
#include "core/httpd.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/router.h"
#include "core/service.h"
#include "core/otlp.h"
#include "core/trace.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#define DEMO_MAX_LISTEN 8
#define DEMO_ASSET_MTIME 1767225600   /* 2026-01-01T00:00:00Z: same on every instance */
#define DEMO_DRAIN_MS 5000

struct demo_conf {
    struct net_addr listen[DEMO_MAX_LISTEN];
    size_t nlisten;
    int threads;
    char *instance;
    uint64_t latency_ms;
    double error_rate;
    bool healthy;
    struct otlp_settings tracing;
};

/* ---- configuration ---- */

static void demo_free_conf(void *p)
{
    struct demo_conf *c = p;
    if (!c)
        return;
    free(c->instance);
    otlp_settings_free(&c->tracing);
    free(c);
}

static int demo_parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "threads", "instance", "latency",
                                        "error_rate", "healthy", "tracing", NULL };
    cfg_node *v[8];
    struct demo_conf *dc = calloc(1, sizeof(*dc));
    if (!dc)
        return cfg_error(c, map, path, "out of memory");
    svc->conf = dc;
    dc->threads = 1;
    dc->healthy = true;
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    if (!v[1]) {
        bad = cfg_error(c, map, path, "missing key \"listen\" (a list of addresses)");
    } else {
        size_t n = cfg_is_seq(v[1]) ? cfg_len(v[1]) : 1;
        snprintf(p, sizeof(p), "%s.listen", path);
        if (!cfg_is_seq(v[1]) && !cfg_is_scalar(v[1]))
            bad = cfg_error(c, v[1], p, "expected a list of addresses");
        else if (n == 0 || n > DEMO_MAX_LISTEN)
            bad = cfg_error(c, v[1], p, "expected 1 to %d addresses", DEMO_MAX_LISTEN);
        else
            for (size_t i = 0; i < n; i++) {
                const cfg_node *it = cfg_is_seq(v[1]) ? cfg_seq_item(c, v[1], i) : v[1];
                snprintf(p, sizeof(p), "%s.listen[%zu]", path, i);
                if (cfg_get_addr(c, it, p, &dc->listen[dc->nlisten]) == 0) {
                    char a[NET_ADDRSTRLEN];
                    net_addr_format(&dc->listen[dc->nlisten], a, sizeof(a));
                    service_add_endpoint(svc, "http", "http://%s/", a);
                    service_add_bind(svc, &dc->listen[dc->nlisten], SOCK_STREAM);
                    dc->nlisten++;
                } else {
                    bad = -EINVAL;
                }
            }
    }
    if (v[2]) {
        long long t;
        snprintf(p, sizeof(p), "%s.threads", path);
        if (cfg_get_int(c, v[2], p, 1, 256, &t) == 0)
            dc->threads = (int)t;
        else
            bad = -EINVAL;
    }
    snprintf(p, sizeof(p), "%s.instance", path);
    if (v[3] && cfg_get_string(c, v[3], p, &dc->instance))
        bad = -EINVAL;
    if (!dc->instance)
        dc->instance = strdup(svc->name);
    snprintf(p, sizeof(p), "%s.latency", path);
    if (v[4] && cfg_get_duration(c, v[4], p, &dc->latency_ms))
        bad = -EINVAL;
    snprintf(p, sizeof(p), "%s.error_rate", path);
    if (v[5] && cfg_get_float(c, v[5], p, 0, 1, &dc->error_rate))
        bad = -EINVAL;
    snprintf(p, sizeof(p), "%s.healthy", path);
    if (v[6] && cfg_get_bool(c, v[6], p, &dc->healthy))
        bad = -EINVAL;
    snprintf(p, sizeof(p), "%s.tracing", path);
    if (otlp_parse_settings(c, v[7], p, &dc->tracing))
        bad = -EINVAL;
    return bad ? -EINVAL : 0;
}

const struct role_ops demo_app_role = {
    .name = "demo-app",
    .summary = "sample web application with static assets, an API and fault injection",
    .parse = demo_parse,
    .main = demo_app_main,
    .free_conf = demo_free_conf,
};

/* ---- runtime ---- */

enum route { R_INDEX, R_JS, R_CSS, R_HELLO, R_HEALTHZ, R_FAULTS, R_BUILTIN, R_OTHER, R_COUNT };
static const char *const route_names[R_COUNT] = { "/", "/static/app.js", "/static/style.css",
                                                  "/api/hello", "/healthz", "/-/faults",
                                                  "builtin", "other" };

struct asset {
    const char *body;
    size_t len;
    const char *ctype;
    char etag[24];
};

struct demo {
    const struct demo_conf *conf;
    const char *instance;
    struct metrics_registry *reg;
    struct metric_family *requests;
    struct metric *duration;
    struct metric *inflight;
    /* fault settings, shared by all threads */
    uint64_t latency_ms;
    uint64_t error_ppm;         /* error rate in parts per million */
    bool healthy;
    struct service_ctx *sc;     /* the skeleton running this service */
    struct asset js, css;
    char last_modified[30];
    struct httpd_conf hconf;
    struct http_router router;
    struct service_http_pool pool;
    struct demo_worker *workers;        /* pool.w[i]'s role state (its hw.data) */
    int nworkers;
    struct otlp_exporter *otlp;         /* spans to the trace store, or NULL */
};

struct demo_worker {
    struct demo *d;
    struct loop *loop;
    struct metric *counts[R_COUNT][6];  /* by route and status class 1xx..5xx */
    char trace_id[33];                  /* of the request being handled */
    struct trace_ctx span;              /* its server span */
    uint8_t parent[8];
    bool has_parent;
};

struct delayed {
    struct loop_timer timer;
    struct trace_ctx span;              /* the request's, restored when it is answered */
    uint8_t parent[8];
    bool has_parent;
    struct httpd_req *r;
    enum route rt;
    int status;
    const char *ctype;
    struct buf body;
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void asset_init(struct asset *a, const char *body, size_t len, const char *ctype)
{
    a->body = body;
    a->len = len;
    a->ctype = ctype;
    snprintf(a->etag, sizeof(a->etag), "\"%016llx\"", (unsigned long long)fnv1a(body, len));
}

static void count(struct demo_worker *w, enum route rt, int status)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 0;
    struct metric **m = &w->counts[rt][cls];
    if (!*m) {
        static const char *const codes[] = { "other", "1xx", "2xx", "3xx", "4xx", "5xx" };
        *m = metrics_get2(w->d->requests, route_names[rt], codes[cls]);
    }
    metric_inc(*m);
}

static void finish(struct demo_worker *w, struct httpd_req *r, enum route rt, int status)
{
    count(w, rt, status);
    uint64_t now = cairn_now_ns();
    metric_observe(w->d->duration, (double)(now - r->start_ns) / 1e9);
    if (w->d->otlp && otlp_sampled(&w->span)) {
        uint64_t end = otlp_now_ns();
        char name[96], target[256];
        snprintf(name, sizeof(name), "%.*s %.*s", (int)MIN(r->h.method.n, (size_t)15), r->h.method.p,
                 (int)MIN(r->h.path.n, (size_t)64), r->h.path.p);
        snprintf(target, sizeof(target), "%.*s", (int)MIN(r->h.target.n, (size_t)250), r->h.target.p);
        char method[16];
        snprintf(method, sizeof(method), "%.*s", (int)MIN(r->h.method.n, (size_t)15), r->h.method.p);
        struct otlp_attr a[] = {
            { "http.request.method", method, 0 }, { "url.path", target, 0 },
            { "http.response.status_code", NULL, status }, { "cairn.instance", w->d->instance, 0 },
        };
        struct otlp_span sp = { &w->span, w->has_parent ? w->parent : NULL, name, OTLP_SERVER,
                                end - (now - r->start_ns), end, status >= 500, a, ARRAY_SIZE(a) };
        otlp_export(w->d->otlp, &sp);
    }
}

static void serve_asset(struct demo_worker *w, struct httpd_req *r, const struct asset *a,
                        enum route rt)
{
    struct demo *d = w->d;
    httpd_header(r, "Cache-Control", "public, max-age=3600");
    httpd_header(r, "ETag", a->etag);
    httpd_header(r, "Last-Modified", d->last_modified);
    const struct http_header *inm = httpd_req_header(r, "If-None-Match");
    const struct http_header *ims = httpd_req_header(r, "If-Modified-Since");
    bool not_modified = false;
    if (inm) {
        not_modified = http_etag_list_matches(inm->value, a->etag);
    } else if (ims) {
        time_t t;
        if (http_date_parse(ims->value, &t) == 0 && t >= DEMO_ASSET_MTIME)
            not_modified = true;
    }
    if (not_modified) {
        finish(w, r, rt, 304);
        httpd_respond(r, 304, NULL, NULL, 0);
        return;
    }
    finish(w, r, rt, 200);
    httpd_respond(r, 200, a->ctype, a->body, a->len);
}

static void faults_json(struct demo *d, struct buf *b)
{
    uint64_t lat = __atomic_load_n(&d->latency_ms, __ATOMIC_RELAXED);
    uint64_t ppm = __atomic_load_n(&d->error_ppm, __ATOMIC_RELAXED);
    bool healthy = __atomic_load_n(&d->healthy, __ATOMIC_RELAXED);
    buf_printf(b, "{\"instance\":\"");
    buf_json_escape(b, d->instance, strlen(d->instance));
    buf_printf(b, "\",\"latency_ms\":%llu,\"error_rate\":%g,\"healthy\":%s}\n",
               (unsigned long long)lat, (double)ppm / 1e6, healthy ? "true" : "false");
}

/* POST /-/faults: settings come from the query string or a form body. */
static int faults_update(struct demo *d, struct strv params, char *err, size_t errlen)
{
    char v[64];
    uint64_t lat = __atomic_load_n(&d->latency_ms, __ATOMIC_RELAXED);
    uint64_t ppm = __atomic_load_n(&d->error_ppm, __ATOMIC_RELAXED);
    bool healthy = __atomic_load_n(&d->healthy, __ATOMIC_RELAXED);
    if (http_query_param(params, "reset", v, sizeof(v))) {
        lat = d->conf->latency_ms;
        ppm = (uint64_t)(d->conf->error_rate * 1e6);
        healthy = d->conf->healthy;
    }
    if (http_query_param(params, "latency", v, sizeof(v))) {
        if (cfg_parse_duration(v, &lat) || lat > 600000) {
            snprintf(err, errlen, "latency: expected a duration up to 10m like 250ms, got \"%s\"", v);
            return -EINVAL;
        }
    }
    if (http_query_param(params, "error_rate", v, sizeof(v))) {
        char *end;
        double rate = strtod(v, &end);
        if (!*v || *end || !(rate >= 0 && rate <= 1)) {
            snprintf(err, errlen, "error_rate: expected a number from 0 to 1, got \"%s\"", v);
            return -EINVAL;
        }
        ppm = (uint64_t)(rate * 1e6 + 0.5);
    }
    if (http_query_param(params, "healthy", v, sizeof(v))) {
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
            healthy = true;
        else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
            healthy = false;
        else {
            snprintf(err, errlen, "healthy: expected true or false, got \"%s\"", v);
            return -EINVAL;
        }
    }
    __atomic_store_n(&d->latency_ms, lat, __ATOMIC_RELAXED);
    __atomic_store_n(&d->error_ppm, ppm, __ATOMIC_RELAXED);
    __atomic_store_n(&d->healthy, healthy, __ATOMIC_RELAXED);
    log_info("faults updated", "latency_ms", log_int((long long)lat), "error_rate",
             log_dbl((double)ppm / 1e6), "healthy", healthy ? "true" : "false");
    return 0;
}

static void delayed_free(struct delayed *dl)
{
    loop_timer_stop(&dl->timer);
    buf_free(&dl->body);
    free(dl);
}

static void delayed_fire(struct loop_timer *t)
{
    struct delayed *dl = t->data;
    struct httpd_req *r = dl->r;
    struct demo_worker *w = r->worker->data;
    httpd_req_on_abort(r, NULL, NULL);
    w->span = dl->span;
    memcpy(w->parent, dl->parent, 8);
    w->has_parent = dl->has_parent;
    finish(w, r, dl->rt, dl->status);
    httpd_respond(r, dl->status, dl->ctype, buf_head(&dl->body), buf_used(&dl->body));
    delayed_free(dl);
}

static void delayed_abort(struct httpd_req *r, void *arg)
{
    UNUSED(r);
    delayed_free(arg);
}

/* Sends a response now, or after the injected latency. */
static void reply(struct demo_worker *w, struct httpd_req *r, enum route rt, uint64_t delay_ms,
                  int status, const char *ctype, const char *body, size_t len)
{
    if (delay_ms == 0) {
        finish(w, r, rt, status);
        httpd_respond(r, status, ctype, body, len);
        return;
    }
    struct delayed *dl = calloc(1, sizeof(*dl));
    if (!dl || buf_append(&dl->body, body, len)) {
        free(dl);
        finish(w, r, rt, 500);
        httpd_respond(r, 500, "text/plain", LIT("out of memory\n"));
        return;
    }
    dl->r = r;
    dl->span = w->span;
    memcpy(dl->parent, w->parent, 8);
    dl->has_parent = w->has_parent;
    dl->rt = rt;
    dl->status = status;
    dl->ctype = ctype;
    loop_timer_init(&dl->timer, delayed_fire, dl);
    loop_timer_start(w->loop, &dl->timer, delay_ms);
    httpd_req_on_abort(r, delayed_abort, dl);
}

/* Per-request fault settings: ?latency= and ?status= first, then the process-wide
 * ones. Returns false after answering 400 for a bad parameter. */
static bool request_faults(struct demo_worker *w, struct httpd_req *r, enum route rt,
                           uint64_t *delay, int *forced)
{
    struct demo *d = w->d;
    char tmp[64];
    *delay = __atomic_load_n(&d->latency_ms, __ATOMIC_RELAXED);
    *forced = 0;
    if (http_query_param(r->h.query, "latency", tmp, sizeof(tmp))) {
        uint64_t ms;
        if (cfg_parse_duration(tmp, &ms) || ms > 600000) {
            reply(w, r, rt, 0, 400, "text/plain; charset=utf-8",
                  LIT("latency: expected a duration up to 10m like 250ms\n"));
            return false;
        }
        *delay = ms;
    }
    if (http_query_param(r->h.query, "status", tmp, sizeof(tmp))) {
        char *end;
        long st = strtol(tmp, &end, 10);
        if (*end || st < 200 || st > 599) {
            reply(w, r, rt, 0, 400, "text/plain; charset=utf-8",
                  LIT("status: expected an HTTP status from 200 to 599\n"));
            return false;
        }
        *forced = (int)st;
    }
    uint64_t ppm = __atomic_load_n(&d->error_ppm, __ATOMIC_RELAXED);
    if (!*forced && ppm && cairn_rand64() % 1000000 < ppm)
        *forced = 500;
    if (*forced >= 300) {
        char body[96];
        int n = snprintf(body, sizeof(body), "{\"error\":\"injected fault\",\"status\":%d}\n", *forced);
        httpd_header(r, "Cache-Control", "no-store");
        reply(w, r, rt, *delay, *forced, "application/json", body, (size_t)n);
        return false;
    }
    if (!*forced)
        *forced = 200;
    return true;
}

static void h_index(struct httpd_req *r, void *arg)
{
    struct demo *d = arg;
    struct demo_worker *w = r->worker->data;
    uint64_t delay;
    int status;
    if (!request_faults(w, r, R_INDEX, &delay, &status))
        return;
    char page[sizeof(demo_index_fmt) + 256];
    int n = snprintf(page, sizeof(page), demo_index_fmt, d->instance, d->instance);
    httpd_header(r, "Cache-Control", "no-cache");
    reply(w, r, R_INDEX, delay, status, "text/html; charset=utf-8", page, (size_t)n);
}

static void h_asset(struct httpd_req *r, void *arg)
{
    struct demo *d = arg;
    struct demo_worker *w = r->worker->data;
    bool js = strv_eq_cstr(r->h.path, "/static/app.js");
    enum route rt = js ? R_JS : R_CSS;
    const struct asset *a = js ? &d->js : &d->css;
    uint64_t delay;
    int status;
    if (!request_faults(w, r, rt, &delay, &status))
        return;
    if (delay || status != 200) {
        /* with injected latency: no conditional handling, just the body */
        httpd_header(r, "Cache-Control", "public, max-age=3600");
        httpd_header(r, "ETag", a->etag);
        httpd_header(r, "Last-Modified", d->last_modified);
        reply(w, r, rt, delay, status, a->ctype, a->body, a->len);
        return;
    }
    serve_asset(w, r, a, rt);
}

static void h_hello(struct httpd_req *r, void *arg)
{
    struct demo *d = arg;
    struct demo_worker *w = r->worker->data;
    uint64_t delay;
    int status;
    if (!request_faults(w, r, R_HELLO, &delay, &status))
        return;
    struct buf b = BUF_INIT;
    char date[30];
    http_date_format(time(NULL), date);
    buf_puts(&b, "{\"message\":\"Hello from ");
    buf_json_escape(&b, d->instance, strlen(d->instance));
    buf_puts(&b, "\",\"instance\":\"");
    buf_json_escape(&b, d->instance, strlen(d->instance));
    buf_printf(&b, "\",\"pid\":%d,\"time\":\"%s\",\"trace_id\":\"%s\"}\n", (int)getpid(), date,
               w->trace_id);
    httpd_header(r, "Cache-Control", "no-store");
    reply(w, r, R_HELLO, delay, status, "application/json", buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static void h_healthz(struct httpd_req *r, void *arg)
{
    struct demo *d = arg;
    struct demo_worker *w = r->worker->data;
    httpd_header(r, "Cache-Control", "no-store");
    if (__atomic_load_n(&d->healthy, __ATOMIC_RELAXED) && !service_stopping(d->sc))
        reply(w, r, R_HEALTHZ, 0, 200, "text/plain; charset=utf-8", "ok\n", 3);
    else
        reply(w, r, R_HEALTHZ, 0, 503, "text/plain; charset=utf-8", "unhealthy\n", 10);
}

static void h_faults(struct httpd_req *r, void *arg)
{
    struct demo *d = arg;
    struct demo_worker *w = r->worker->data;
    struct buf b = BUF_INIT;
    int status = 200;
    if (!strv_eq_cstr(r->h.method, "GET") && !r->h.is_head) {
        char err[160];
        struct strv params = r->h.query.n ? r->h.query : r->body;
        if (faults_update(d, params, err, sizeof(err))) {
            buf_printf(&b, "{\"error\":\"");
            buf_json_escape(&b, err, strlen(err));
            buf_puts(&b, "\"}\n");
            status = 400;
        }
    }
    if (status == 200)
        faults_json(d, &b);
    httpd_header(r, "Cache-Control", "no-store");
    finish(w, r, R_FAULTS, status);
    httpd_respond(r, status, "application/json", buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static void h_builtin(struct httpd_req *r, void *arg)
{
    struct demo *d = arg;
    finish(r->worker->data, r, R_BUILTIN, 200);
    service_handle_builtin(d->sc, r);
}

static const struct http_route demo_routes[] = {
    { "GET", "/", false, h_index, NULL },
    { "GET", "/index.html", false, h_index, NULL },
    { "GET", "/static/app.js", false, h_asset, NULL },
    { "GET", "/static/style.css", false, h_asset, NULL },
    { "GET", "/api/hello", false, h_hello, NULL },
    { "GET", "/healthz", false, h_healthz, NULL },
    { "GET", "/-/faults", false, h_faults, NULL },
    { "POST", "/-/faults", false, h_faults, NULL },
    { "PUT", "/-/faults", false, h_faults, NULL },
    { "GET", "/metrics", false, h_builtin, NULL },
    { "GET", "/-/healthy", false, h_builtin, NULL },
    { "GET", "/-/ready", false, h_builtin, NULL },
};

/* Common to every request: who served it and the trace context; then route. */
static void handle(struct httpd_req *r, void *arg)
{
    struct demo *d = arg;
    struct demo_worker *w = r->worker->data;
    httpd_header(r, "X-Served-By", d->instance);
    const struct http_header *tp = httpd_req_header(r, "traceparent");
    otlp_begin(d->otlp, tp ? &tp->value : NULL, &w->span, w->parent, &w->has_parent);
    if (!d->otlp && !w->has_parent)
        w->span.flags = 1;              /* not exporting: the old answer, sampled */
    char tpbuf[TRACEPARENT_LEN + 1];
    trace_format(&w->span, tpbuf);
    trace_id_hex(&w->span, w->trace_id);
    httpd_header(r, "traceparent", tpbuf);

    char allow[128];
    const struct http_route *rt = router_match(&d->router, r->h.method, r->h.path, allow,
                                               sizeof(allow));
    if (rt) {
        rt->handler(r, d);
    } else if (allow[0]) {
        httpd_header(r, "Allow", allow);
        reply(w, r, R_OTHER, 0, 405, "text/plain; charset=utf-8", "method not allowed\n", 19);
    } else {
        reply(w, r, R_OTHER, 0, 404, "text/plain; charset=utf-8", "not found\n", 10);
    }
}

/* ---- threads and shutdown ---- */

static int demo_start(struct service_ctx *sc)
{
    struct demo *d = sc->role;
    const struct demo_conf *conf = d->conf;
    d->sc = sc;
    d->reg = sc->reg;
    static const char *const labels[] = { "route", "code", NULL };
    d->requests = metrics_family(d->reg, METRIC_COUNTER, "demo_http_requests_total",
                                 "HTTP requests answered, by route and status class.", labels, NULL, 0);
    d->duration = metrics_histogram(d->reg, "demo_http_request_duration_seconds",
                                    "Time from request to response, injected latency included.",
                                    metrics_latency_buckets, metrics_latency_nbuckets);
    if (!d->requests || !d->duration)
        return -ENOMEM;
    d->router.routes = demo_routes;
    d->router.nroutes = ARRAY_SIZE(demo_routes);
    d->router.arg = d;
    httpd_conf_defaults(&d->hconf);
    d->hconf.handler = handle;
    d->hconf.handler_arg = d;
    d->hconf.server = "cairn-demo-app";

    d->nworkers = conf->threads;
    d->workers = calloc((size_t)d->nworkers, sizeof(*d->workers));
    if (!d->workers)
        return -ENOMEM;
    int r = service_http_pool_start(sc, &d->pool, d->nworkers, &d->hconf, conf->listen, conf->nlisten,
                                    DEMO_DRAIN_MS);
    d->otlp = otlp_for_service(sc->svc, &conf->tracing, d->reg);
    for (int i = 0; i < d->pool.ninit; i++) {
        d->workers[i].d = d;
        d->workers[i].loop = &d->pool.w[i].loop;
        d->pool.w[i].hw.data = &d->workers[i];
    }
    if (r)
        return r;
    char first[NET_ADDRSTRLEN];
    net_addr_format(&conf->listen[0], first, sizeof(first));
    log_info("demo-app serving", "addr", first, "instance", d->instance, "threads",
             log_int(d->nworkers));
    return 0;
}

static void demo_finish(struct service_ctx *sc)
{
    struct demo *d = sc->role;
    service_http_pool_free(&d->pool);
    otlp_stop(d->otlp);
    free(d->workers);
}

static const struct service_ops demo_ops = {
    .start = demo_start,
    .stop_worker = service_http_pool_stop_worker,
    .finish = demo_finish,
};

int demo_app_main(const struct service *svc)
{
    const struct demo_conf *conf = svc->conf;
    struct demo d;
    memset(&d, 0, sizeof(d));
    d.conf = conf;
    d.instance = conf->instance;
    d.latency_ms = conf->latency_ms;
    d.error_ppm = (uint64_t)(conf->error_rate * 1e6 + 0.5);
    d.healthy = conf->healthy;
    asset_init(&d.js, demo_app_js, sizeof(demo_app_js) - 1, "text/javascript; charset=utf-8");
    asset_init(&d.css, demo_style_css, sizeof(demo_style_css) - 1, "text/css; charset=utf-8");
    http_date_format(DEMO_ASSET_MTIME, d.last_modified);
    return service_run(svc, &demo_ops, &d);
}
