/* ui_proxy.c - the console's one origin: /api/<source>/<path> is <path> on the
 * stack's service for that source, so the browser never talks to another server.
 *
 *   /api/metrics/...  the metrics service (Prometheus HTTP API)
 *   /api/logs/...     the logs service (Loki API; /loki/api/v1/tail as a WebSocket)
 *   /api/jaeger/...   the traces service's Jaeger query API
 *   /api/tempo/...    the traces service's Tempo API (TraceQL)
 *   /api/alerts/...   the alerts service (Alertmanager API v2)
 *
 * Bodies are passed whole (httpc's buffered calls, its keep-alive pool), with
 * Content-Type, Accept and X-Scope-OrgID; answers keep their status and type and
 * are gzipped for the browser when it accepts that. A WebSocket upgrade becomes a
 * byte tunnel once the service answers 101.
 */
#include "ui_internal.h"
#include "core/log.h"
#include "core/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UI_PROXY_TIMEOUT_MS 60000
#define UI_TAIL_IDLE_MS 3600000

static const char *const source_prefix[UI_NSOURCES] = { "/api/metrics", "/api/logs", "/api/jaeger", "/api/tempo",
                                                        "/api/alerts" };
static const char *const source_role[UI_NSOURCES] = { "metrics", "logs", "traces", "traces", "alerts" };
static const char *const source_endpoint[UI_NSOURCES] = { "http", "http", "jaeger", "http", "http" };

void ui__resolve_sources(struct ui *u)
{
    const struct stack *st = u->sc->svc->stack;      /* as started: a reload re-reads only this service */
    for (int s = 0; s < UI_NSOURCES; s++) {
        struct ui_upstream *up = &u->up[s];
        memset(up, 0, sizeof(*up));
        const char *want = u->conf->source_name[s];
        if (want && !*want)
            continue;                       /* turned off */
        const struct service *svc = NULL;
        for (size_t i = 0; i < st->nservices && !svc; i++) {
            const struct service *c = &st->services[i];
            if (want ? !strcmp(c->name, want) : (c->role && !strcmp(c->role->name, source_role[s])))
                svc = c;
        }
        if (!svc) {
            if (want)
                log_warn("console source not in the stack", "source", source_prefix[s] + 5, "service", want);
            continue;
        }
        for (size_t k = 0; k < svc->nendpoints && !up->ok; k++) {
            const char *url = svc->endpoints[k].url;
            if (strcmp(svc->endpoints[k].what, source_endpoint[s]) || strncmp(url, "http://", 7))
                continue;
            snprintf(up->host, sizeof(up->host), "%s", url + 7);
            char *slash = strchr(up->host, '/');
            if (slash)
                *slash = 0;
            up->ok = net_resolve(up->host, &up->addr) == 0;
        }
        if (!up->ok)
            log_warn("console source has no HTTP endpoint", "source", source_prefix[s] + 5, "service", svc->name);
    }
}

struct pcall {
    struct ui *u;
    struct httpd_req *r;
    struct httpc_call *call;
    bool gzip_ok;
};

static void proxied(const struct httpc_response *resp, void *arg)
{
    struct pcall *pc = arg;
    struct httpd_req *r = pc->r;
    struct ui *u = pc->u;
    httpd_req_on_abort(r, NULL, NULL);
    if (resp->error) {
        metric_inc(u->m_proxy_errors);
        ui__error(r, 502, "the service behind %.*s: %s", (int)(r->h.path.n > 40 ? 40 : r->h.path.n), r->h.path.p,
                  cairn_strerror(resp->error));
        free(pc);
        return;
    }
    const char *ctype = NULL;
    char ct[128];
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
        if (strv_caseeq_cstr(h->name, "Content-Type") && h->value.n < sizeof(ct)) {
            memcpy(ct, h->value.p, h->value.n);
            ct[h->value.n] = 0;
            ctype = ct;
        } else if (strv_caseeq_cstr(h->name, "Retry-After") || strv_caseeq_cstr(h->name, "Location")) {
            httpd_header_strv(r, h->name, h->value);
        }
    }
    ui__security_headers(r);
    httpd_header(r, "Cache-Control", "no-store");
    struct buf gz = { 0 };
    if (pc->gzip_ok && resp->body.n > 1024 && !buf_gzip(resp->body.p, resp->body.n, 5, &gz)) {
        httpd_header(r, "Content-Encoding", "gzip");
        httpd_header(r, "Vary", "Accept-Encoding");
        httpd_respond(r, resp->status, ctype, buf_head(&gz), buf_used(&gz));
    } else {
        httpd_respond(r, resp->status, ctype, resp->body.p, resp->body.n);
    }
    buf_free(&gz);
    free(pc);
}

static void aborted(struct httpd_req *r, void *arg)
{
    struct pcall *pc = arg;
    (void)r;
    httpc_cancel(pc->call);
    free(pc);
}

/* ---- WebSocket: the upgrade request, then a tunnel ---- */

struct wscall {
    struct ui *u;
    struct httpd_req *r;
    struct httpc_call *call;
    struct httpc_pool pool;
    char *raw;
};

static void ws_end(struct wscall *wc)
{
    httpc_pool_flush(wc->u->hc, &wc->pool);
    free(wc->raw);
    free(wc);
}

static void ws_head(void *arg, const struct http_response *resp)
{
    struct wscall *wc = arg;
    struct httpd_req *r = wc->r;
    httpd_req_on_abort(r, NULL, NULL);
    if (resp->status != 101) {
        httpc_detach(wc->call);
        ui__error(r, resp->status >= 400 ? resp->status : 502, "the service refused the WebSocket with status %d",
                  resp->status);
        ws_end(wc);
        return;
    }
    struct buf to_client = BUF_INIT, to_server = BUF_INIT;
    int sfd, cfd;
    SSL *sssl, *cssl;
    httpc_hijack(wc->call, &sfd, &sssl, &to_client);
    httpd_req_hijack(r, &cfd, &cssl, &to_server);
    if (tunnel_start(&wc->u->tunnels, cfd, cssl, &to_client, sfd, sssl, &to_server, UI_TAIL_IDLE_MS, NULL, NULL))
        log_warn("cannot start a tunnel");
    buf_free(&to_client);
    buf_free(&to_server);
    ws_end(wc);
}

static void ws_data(void *arg, const char *p, size_t n)
{
    (void)arg, (void)p, (void)n;
}

static void ws_done(void *arg, bool reusable)
{
    (void)arg, (void)reusable;                  /* answered in ws_head */
}

static void ws_failed(void *arg, int err, enum httpc_stage stage, unsigned flags)
{
    struct wscall *wc = arg;
    (void)stage, (void)flags;
    httpd_req_on_abort(wc->r, NULL, NULL);
    metric_inc(wc->u->m_proxy_errors);
    ui__error(wc->r, 502, "the logs service: %s", cairn_strerror(err));
    ws_end(wc);
}

static void ws_aborted(struct httpd_req *r, void *arg)
{
    struct wscall *wc = arg;
    (void)r;
    httpc_cancel(wc->call);
    ws_end(wc);
}

static const struct httpc_stream_ops ws_ops = {
    .head = ws_head, .data = ws_data, .done = ws_done, .failed = ws_failed,
};

static void proxy_websocket(struct ui *u, const struct ui_upstream *up, struct httpd_req *r, struct strv target)
{
    struct buf raw = { 0 };
    buf_printf(&raw, "GET %.*s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n", (int)target.n, target.p, up->host);
    static const char *const pass[] = { "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
                                        "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "X-Scope-OrgID" };
    for (size_t i = 0; i < r->h.nheaders; i++)
        for (size_t k = 0; k < ARRAY_SIZE(pass); k++)
            if (strv_caseeq_cstr(r->h.headers[i].name, pass[k]))
                buf_printf(&raw, "%s: %.*s\r\n", pass[k], (int)r->h.headers[i].value.n, r->h.headers[i].value.p);
    buf_puts(&raw, "\r\n");
    struct wscall *wc = calloc(1, sizeof(*wc));
    if (!wc || !raw.data) {
        free(wc);
        buf_free(&raw);
        ui__error(r, 503, "out of memory");
        return;
    }
    wc->u = u;
    wc->r = r;
    httpc_pool_init(&wc->pool, 0, 1000);
    size_t rawn = buf_used(&raw);
    wc->raw = buf_steal(&raw);
    struct httpc_stream_req sr = { .addr = up->addr, .raw = wc->raw, .raw_len = rawn, .upgrade = true,
                                   .pool = &wc->pool };
    int err = 0;
    bool reused;
    wc->call = httpc_stream(u->hc, &sr, &ws_ops, wc, &err, &reused);
    if (!wc->call) {
        ws_failed(wc, err, HTTPC_CONNECT, 0);
        return;
    }
    httpd_req_on_abort(r, ws_aborted, wc);
}

bool ui__proxy(struct ui *u, struct httpd_req *r)
{
    int s;
    struct strv path = r->h.path;
    for (s = 0; s < UI_NSOURCES; s++) {
        size_t pl = strlen(source_prefix[s]);
        if (path.n > pl && !memcmp(path.p, source_prefix[s], pl) && path.p[pl] == '/')
            break;
    }
    if (s == UI_NSOURCES)
        return false;
    const struct ui_upstream *up = &u->up[s];
    if (!up->ok) {
        ui__error(r, 503, "this stack has no %s service", source_role[s]);
        return true;
    }
    metric_inc(u->m_proxied);
    size_t pl = strlen(source_prefix[s]);
    struct strv target = strv_make(r->h.target.p + pl, r->h.target.n - pl);
    const struct http_header *upg = httpd_req_header(r, "Upgrade");
    if (upg && strv_caseeq_cstr(upg->value, "websocket") && !r->h2) {
        proxy_websocket(u, up, r, target);
        return true;
    }
    char *tgt = strv_dup(target);
    char method[16];
    snprintf(method, sizeof(method), "%.*s", (int)(r->h.method.n < 15 ? r->h.method.n : 15), r->h.method.p);
    /* the headers the APIs read */
    char *hdrs[8];
    const char *hp[8];
    size_t nh = 0;
    static const char *const pass[] = { "Content-Type", "Accept", "X-Scope-OrgID" };
    for (size_t i = 0; i < r->h.nheaders && nh < 6; i++)
        for (size_t k = 0; k < ARRAY_SIZE(pass); k++)
            if (strv_caseeq_cstr(r->h.headers[i].name, pass[k]) && r->h.headers[i].value.n < 1024 &&
                (hdrs[nh] = malloc(strlen(pass[k]) + r->h.headers[i].value.n + 3))) {
                sprintf(hdrs[nh], "%s: %.*s", pass[k], (int)r->h.headers[i].value.n, r->h.headers[i].value.p);
                hp[nh] = hdrs[nh];
                nh++;
            }
    hp[nh] = NULL;
    struct pcall *pc = calloc(1, sizeof(*pc));
    if (!pc || !tgt) {
        free(pc);
        free(tgt);
        for (size_t i = 0; i < nh; i++)
            free(hdrs[i]);
        ui__error(r, 503, "out of memory");
        return true;
    }
    pc->u = u;
    pc->r = r;
    pc->gzip_ok = ui__accepts_gzip(r);
    struct httpc_request req = { .method = method, .addr = up->addr, .host = up->host, .target = tgt,
                                 .headers = hp, .body = r->body.p, .body_len = r->body.n,
                                 .timeout_ms = UI_PROXY_TIMEOUT_MS };
    pc->call = httpc_send(u->hc, &req, proxied, pc);
    free(tgt);
    for (size_t i = 0; i < nh; i++)
        free(hdrs[i]);
    if (!pc->call) {
        free(pc);
        ui__error(r, 503, "out of memory");
        return true;
    }
    httpd_req_on_abort(r, aborted, pc);
    return true;
}
