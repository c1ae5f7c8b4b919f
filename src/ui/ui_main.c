/* ui_main.c - role "ui": the web console of a stack.
 *
 * One worker thread serves the pages (one HTML page, its script and styles
 * embedded in the binary, gzipped, under content-hashed names cached for a year),
 * the console's own API (/api/ui/stack: every service of the stack with its
 * readiness, polled every two seconds; /api/ui/dashboards) and the proxy to the
 * stack's metrics, logs, traces and alerts services (ui_proxy.c). Everything the
 * browser does beyond that is the script's: it reads the services' standard APIs.
 */
#include "ui_internal.h"
#include "core/log.h"
#include "core/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UI_DRAIN_MS 5000
#define UI_PROBE_MS 2000
#define UI_PROBE_TIMEOUT_MS 1500

const struct role_ops ui_role = {
    .name = "ui",
    .summary = "web console: stack map, metrics, dashboards, logs, traces, alerts",
    .parse = ui__parse,
    .main = ui_main,
    .free_conf = ui__free_conf,
};

/* ---- responses ---- */

void ui__security_headers(struct httpd_req *r)
{
    httpd_header(r, "Content-Security-Policy",
                 "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                 "form-action 'self'; frame-ancestors 'none'");
    httpd_header(r, "X-Content-Type-Options", "nosniff");
    httpd_header(r, "Referrer-Policy", "same-origin");
    httpd_header(r, "X-Frame-Options", "DENY");
}

void ui__json(struct httpd_req *r, int status, const char *json, size_t n)
{
    ui__security_headers(r);
    httpd_header(r, "Cache-Control", "no-store");
    httpd_respond(r, status, "application/json", json, n);
}

void ui__error(struct httpd_req *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"error\",\"error\":");
    buf_json_str(&b, msg);
    buf_putc(&b, '}');
    ui__json(r, status, buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static const struct ui_asset *asset_find(const char *path, size_t n)
{
    for (size_t i = 0; i < ui_nassets; i++)
        if (strlen(ui_assets[i].path) == n && !memcmp(ui_assets[i].path, path, n))
            return &ui_assets[i];
    return NULL;
}

bool ui__accepts_gzip(struct httpd_req *r)
{
    const struct http_header *h = httpd_req_header(r, "Accept-Encoding");
    if (!h)
        return false;
    for (size_t i = 0; i + 4 <= h->value.n; i++)
        if (!strncasecmp(h->value.p + i, "gzip", 4))
            return true;
    return false;
}

static void serve_asset(struct httpd_req *r, const struct ui_asset *a)
{
    ui__security_headers(r);
    httpd_header(r, "Cache-Control", a->immutable ? "public, max-age=31536000, immutable" : "no-cache");
    httpd_header(r, "ETag", a->etag);
    httpd_header(r, "Vary", "Accept-Encoding");
    const struct http_header *inm = httpd_req_header(r, "If-None-Match");
    if (inm && strv_eq_cstr(inm->value, a->etag)) {
        httpd_respond(r, 304, NULL, NULL, 0);
        return;
    }
    if (ui__accepts_gzip(r)) {
        httpd_header(r, "Content-Encoding", "gzip");
        httpd_respond(r, 200, a->ctype, a->gz, a->gz_len);
        return;
    }
    struct buf raw = { 0 };
    if (buf_inflate((const char *)a->gz, a->gz_len, a->len, &raw))
        httpd_respond(r, 500, "text/plain; charset=utf-8", "asset damaged\n", 14);
    else
        httpd_respond(r, 200, a->ctype, buf_head(&raw), buf_used(&raw));
    buf_free(&raw);
}

/* ---- the stack and its services' readiness ---- */

static void probe_done(const struct httpc_response *resp, void *arg)
{
    struct ui_probe *p = arg;
    p->inflight = false;
    int st = resp->error ? 0 : resp->status == 200 ? 2 : 1;
    uint64_t now = (uint64_t)(cairn_wall_time() * 1000);
    if (st != p->state)
        p->since_ms = now;
    p->state = st;
    p->checked_ms = now;
}

static void probe_tick(struct loop_timer *t)
{
    struct ui *u = t->data;
    for (size_t i = 0; i < u->nprobes; i++) {
        struct ui_probe *p = &u->probes[i];
        if (!p->host[0] || p->inflight)
            continue;
        struct httpc_request req = { .method = "GET", .addr = p->addr, .host = p->host, .target = "/-/ready",
                                     .timeout_ms = UI_PROBE_TIMEOUT_MS };
        if (httpc_send(u->hc, &req, probe_done, p))
            p->inflight = true;
    }
    loop_timer_start(&u->pool.w[0].loop, &u->probe_timer, UI_PROBE_MS);
}

static int probes_init(struct ui *u, const struct stack *st)
{
    u->probes = calloc(st->nservices ? st->nservices : 1, sizeof(*u->probes));
    if (!u->probes)
        return -ENOMEM;
    u->nprobes = st->nservices;
    for (size_t i = 0; i < st->nservices; i++) {
        const struct service *s = &st->services[i];
        struct ui_probe *p = &u->probes[i];
        p->svc = s;
        p->state = -1;
        /* where the metrics role scrapes it: its admin listener, else its HTTP one */
        const char *url = NULL;
        for (size_t k = 0; k < s->nendpoints; k++)
            if (!strcmp(s->endpoints[k].what, "admin"))
                url = s->endpoints[k].url;
        for (size_t k = 0; !url && k < s->nendpoints; k++)
            if (!strcmp(s->endpoints[k].what, "http"))
                url = s->endpoints[k].url;
        if (!url || strncmp(url, "http://", 7))
            continue;
        snprintf(p->host, sizeof(p->host), "%s", url + 7);
        char *slash = strchr(p->host, '/');
        if (slash)
            *slash = 0;
        if (net_resolve(p->host, &p->addr))
            p->host[0] = 0;
    }
    return 0;
}

static void serve_stack(struct ui *u, struct httpd_req *r, const char *user)
{
    static const char *const states[] = { "unknown", "down", "up", "ready" };
    static const char *const source_names[UI_NSOURCES] = { "metrics", "logs", "jaeger", "tempo", "alerts" };
    struct buf b = { 0 };
    buf_puts(&b, "{\"stack\":");
    buf_json_str(&b, u->sc->svc->stack->file);
    buf_puts(&b, ",\"console\":");
    buf_json_str(&b, u->sc->svc->name);
    buf_puts(&b, ",\"user\":");
    buf_json_str(&b, user);
    buf_puts(&b, ",\"sources\":{");
    for (int s = 0; s < UI_NSOURCES; s++)
        buf_printf(&b, "%s\"%s\":%s", s ? "," : "", source_names[s], u->up[s].ok ? "true" : "false");
    buf_puts(&b, "},\"services\":[");
    for (size_t i = 0; i < u->nprobes; i++) {
        const struct ui_probe *p = &u->probes[i];
        const struct service *s = p->svc;
        buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(&b, s->name);
        buf_puts(&b, ",\"role\":");
        buf_json_str(&b, s->role ? s->role->name : "");
        buf_puts(&b, ",\"endpoints\":[");
        for (size_t k = 0; k < s->nendpoints; k++) {
            buf_puts(&b, k ? ",{\"what\":" : "{\"what\":");
            buf_json_str(&b, s->endpoints[k].what);
            buf_puts(&b, ",\"url\":");
            buf_json_str(&b, s->endpoints[k].url);
            buf_putc(&b, '}');
        }
        buf_printf(&b, "],\"state\":\"%s\",\"since\":%llu,\"checked\":%llu}",
                   p->host[0] ? states[p->state + 1] : "unknown", (unsigned long long)p->since_ms,
                   (unsigned long long)p->checked_ms);
    }
    buf_puts(&b, "]}");
    ui__json(r, 200, buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static void serve_dashboards(struct ui *u, struct httpd_req *r)
{
    const struct ui_conf *c = u->conf;
    struct strv rest = strv_make(r->h.path.p + 18, r->h.path.n - 18);      /* after /api/ui/dashboards */
    if (rest.n == 0 || (rest.n == 1 && rest.p[0] == '/')) {
        struct buf b = { 0 };
        buf_puts(&b, "{\"dashboards\":[");
        for (size_t i = 0; i < c->ndashboards; i++) {
            buf_puts(&b, i ? ",{\"uid\":" : "{\"uid\":");
            buf_json_str(&b, c->dashboards[i].uid);
            buf_puts(&b, ",\"title\":");
            buf_json_str(&b, c->dashboards[i].title);
            buf_printf(&b, ",\"builtin\":%s}", c->dashboards[i].builtin ? "true" : "false");
        }
        buf_puts(&b, "]}");
        ui__json(r, 200, buf_head(&b), buf_used(&b));
        buf_free(&b);
        return;
    }
    if (rest.p[0] == '/') {
        rest.p++, rest.n--;
        for (size_t i = 0; i < c->ndashboards; i++)
            if (strv_eq_cstr(rest, c->dashboards[i].uid)) {
                const char *j = c->dashboards[i].json;
                struct buf gz = { 0 };
                if (ui__accepts_gzip(r) && strlen(j) > 1024 && !buf_gzip(j, strlen(j), 6, &gz)) {
                    httpd_header(r, "Content-Encoding", "gzip");
                    ui__json(r, 200, buf_head(&gz), buf_used(&gz));
                } else {
                    ui__json(r, 200, j, strlen(j));
                }
                buf_free(&gz);
                return;
            }
    }
    ui__error(r, 404, "no such dashboard");
}

/* ---- requests ---- */

static bool is_page(struct strv p)
{
    static const char *const exact[] = { "/", "/alerts", "/silences", "/dashboards", "/explore/metrics",
                                         "/explore/logs", "/explore/traces", "/services" };
    for (size_t i = 0; i < ARRAY_SIZE(exact); i++)
        if (strv_eq_cstr(p, exact[i]))
            return true;
    static const char *const prefix[] = { "/services/", "/trace/", "/dashboards/" };
    for (size_t i = 0; i < ARRAY_SIZE(prefix); i++)
        if (strv_has_prefix(p, prefix[i]) && p.n > strlen(prefix[i]))
            return true;
    return false;
}

static void handle(struct httpd_req *r, void *arg)
{
    struct ui *u = arg;
    metric_inc(u->m_requests);
    if (service_handle_builtin(u->sc, r))
        return;
    char user[64];
    if (!ui__authorize(u, r, user, sizeof(user)))
        return;
    if (ui__serve_auth(u, r))
        return;
    struct strv path = r->h.path;
    bool get = strv_eq_cstr(r->h.method, "GET") || strv_eq_cstr(r->h.method, "HEAD");
    if (ui__proxy(u, r))
        return;
    const struct ui_asset *a;
    if (get && strv_has_prefix(path, "/assets/") && (a = asset_find(path.p, path.n))) {
        serve_asset(r, a);
    } else if (get && strv_eq_cstr(path, "/favicon.ico") && (a = asset_find("favicon", 7))) {
        serve_asset(r, a);
    } else if (get && strv_eq_cstr(path, "/login") && (a = asset_find("login.html", 10))) {
        if (!u->conf->nusers) {
            ui__security_headers(r);
            httpd_header(r, "Location", "/");
            httpd_respond(r, 303, "text/plain; charset=utf-8", "see other\n", 10);
        } else {
            serve_asset(r, a);
        }
    } else if (get && strv_eq_cstr(path, "/api/ui/stack")) {
        serve_stack(u, r, user);
    } else if (get && strv_has_prefix(path, "/api/ui/dashboards")) {
        serve_dashboards(u, r);
    } else if (get && is_page(path) && (a = asset_find("index.html", 10))) {
        serve_asset(r, a);
    } else if (!get && (is_page(path) || strv_has_prefix(path, "/api/ui/"))) {
        ui__security_headers(r);
        httpd_header(r, "Allow", "GET, HEAD");
        httpd_respond(r, 405, "text/plain; charset=utf-8", "method not allowed\n", 19);
    } else {
        ui__security_headers(r);
        httpd_respond(r, 404, "text/plain; charset=utf-8", "not found\n", 10);
    }
}

/* ---- life ---- */

static int ui_start(struct service_ctx *sc)
{
    struct ui *u = sc->role;
    u->sc = sc;
    u->m_requests = metrics_counter(sc->reg, "cairn_ui_requests_total", "Console requests answered.");
    u->m_proxied = metrics_counter(sc->reg, "cairn_ui_proxied_requests_total",
                                   "Requests passed to the stack's metrics, logs, traces and alerts services.");
    u->m_proxy_errors = metrics_counter(sc->reg, "cairn_ui_proxy_errors_total",
                                        "Proxied requests whose service could not be reached.");
    u->m_logins = metrics_counter(sc->reg, "cairn_ui_logins_total", "Successful logins.");
    u->m_login_failures = metrics_counter(sc->reg, "cairn_ui_login_failures_total", "Refused logins.");
    if (!u->m_requests || !u->m_proxied || !u->m_proxy_errors || !u->m_logins || !u->m_login_failures)
        return -ENOMEM;
    cairn_random(u->secret, sizeof(u->secret));
    httpd_conf_defaults(&u->hconf);
    u->hconf.handler = handle;
    u->hconf.handler_arg = u;
    u->hconf.server = NULL;
    u->hconf.limits.max_body = 1u << 20;
    int r = probes_init(u, sc->svc->stack);
    if (r)
        return r;
    r = service_http_pool_start(sc, &u->pool, 1, &u->hconf, u->conf->listen, u->conf->nlisten, UI_DRAIN_MS);
    if (r)
        return r;
    struct httpc_opts o;
    httpc_opts_defaults(&o);
    o.limits.max_body = 256u << 20;
    u->hc = httpc_new(&u->pool.w[0].loop, &o);
    if (!u->hc)
        return -ENOMEM;
    u->tunnels.loop = &u->pool.w[0].loop;
    ui__resolve_sources(u);
    loop_timer_init(&u->probe_timer, probe_tick, u);
    probe_tick(&u->probe_timer);
    char first[NET_ADDRSTRLEN];
    net_addr_format(&u->conf->listen[0], first, sizeof(first));
    log_info("console serving", "addr", first, "services", log_int((long long)u->nprobes), "dashboards",
             log_int((long long)u->conf->ndashboards), "login", u->conf->nusers ? "users" : "none");
    return 0;
}

static int ui_reload(struct service_ctx *sc, struct stack *st, struct cfg_errors *errs)
{
    struct ui *u = sc->role;
    (void)errs;
    const struct service *s = stack_find(st, sc->svc->name);
    const struct ui_conf *nc = s->conf;
    if (nc->nlisten != u->conf->nlisten || memcmp(nc->listen, u->conf->listen, sizeof(nc->listen))) {
        cfg_errors_add(errs, "%s: listen: a changed address needs a restart", sc->svc->name);
        return -EINVAL;
    }
    /* sessions of users no longer listed end now */
    size_t it = 0;
    const struct hmap_slot *sl;
    while (hmap_next(&u->sessions, &it, &sl)) {
        struct ui_session *se = sl->value;
        bool kept = false;
        for (size_t i = 0; i < nc->nusers; i++)
            kept |= !strcmp(nc->users[i].name, se->user);
        if (!kept)
            se->expires_ms = 0;
    }
    stack_free(&u->stack);
    stack_move(&u->stack, st);
    u->conf = stack_find(&u->stack, sc->svc->name)->conf;
    log_info("console reloaded", "dashboards", log_int((long long)u->conf->ndashboards), "users",
             log_int((long long)u->conf->nusers));
    return 0;
}

static void ui_finish(struct service_ctx *sc)
{
    struct ui *u = sc->role;
    if (u->pool.ninit)
        loop_timer_stop(&u->probe_timer);
    tunnel_close_all(&u->tunnels);
    httpc_free(&u->hc);
    service_http_pool_free(&u->pool);
    ui__sessions_free(u);
    free(u->probes);
    stack_free(&u->stack);
}

static const struct service_ops ui_ops = {
    .start = ui_start,
    .reload = ui_reload,
    .stop_worker = service_http_pool_stop_worker,
    .finish = ui_finish,
};

int ui_main(const struct service *svc)
{
    struct ui u;
    memset(&u, 0, sizeof(u));
    u.conf = svc->conf;
    return service_run(svc, &ui_ops, &u);
}
