/* edge_proxy.c - routing, access control, rate limits, balancing and proxying.
 *
 * A request is matched against the routes in file order (host, path, headers),
 * checked against the listener's and the route's allow/deny lists and the
 * route's rate limit, and forwarded to a server of the route's backend over a
 * keep-alive connection from the worker's pool. The response is streamed back as
 * it arrives, with flow control: reading from the server pauses while the client
 * has more than PAUSE_BYTES unsent.
 *
 * Retries: a request is tried again on another server when the connection fails
 * before any response byte arrives (connect error, reset, a pooled connection
 * found dead) or, for idempotent methods, when the server answers 502/503/504 and
 * another server could take it, or does not answer within the response timeout,
 * up to the backend's `retries`. Failures count towards passive ejection of the
 * server, which never takes out more than eject.max_percent of a backend; with
 * every server down or ejected the backend is in panic mode (edge__pick).
 */
#include "edge_proxy.h"
#include "core/stream.h"
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "edge_cache.h"
#include "core/log.h"
#include "core/otlp.h"
#include "core/trace.h"

#include <errno.h>
#include "core/httpc.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>


static void try_send(struct proxy_req *pr);

/* ---- small helpers ---- */

static bool host_matches(const char *pattern, struct strv host)
{
    /* strip the port */
    for (size_t i = host.n; i > 0; i--) {
        if (host.p[i - 1] == ':') {
            host.n = i - 1;
            break;
        }
        if (host.p[i - 1] < '0' || host.p[i - 1] > '9')
            break;
    }
    size_t pl = strlen(pattern);
    if (pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.com" matches "a.example.com", not "example.com" */
        size_t sl = pl - 1;     /* ".example.com" */
        if (host.n <= sl)
            return false;
        return strncasecmp(host.p + host.n - sl, pattern + 1, sl) == 0;
    }
    return host.n == pl && strncasecmp(host.p, pattern, pl) == 0;
}

static const struct edge_route *match_route(const struct edge_conf *c, const struct httpd_req *r)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct edge_route *rt = &c->routes[i];
        if (rt->host && !host_matches(rt->host, r->h.host))
            continue;
        if (rt->path_re) {
            /* one match block per worker thread, not one per request */
            struct edge_worker *w = r->worker->data;
            if (!w->re_md && !(w->re_md = pcre2_match_data_create(1, NULL)))
                continue;
            if (pcre2_match(rt->path_re, (PCRE2_SPTR)r->h.path.p, r->h.path.n, 0, 0, w->re_md,
                            NULL) < 0)
                continue;
        } else {
            size_t pl = strlen(rt->path);
            if (rt->path_exact ? !strv_eq_cstr(r->h.path, rt->path)
                               : !(r->h.path.n >= pl && memcmp(r->h.path.p, rt->path, pl) == 0))
                continue;
        }
        bool ok = true;
        for (size_t k = 0; k < rt->nheaders && ok; k++) {
            const struct http_header *h = httpd_req_header(r, rt->headers[k].name);
            ok = h && (strcmp(rt->headers[k].value, "*") == 0 ||
                       strv_eq_cstr(h->value, rt->headers[k].value));
        }
        if (ok)
            return rt;
    }
    return NULL;
}

void edge__simple_reply(struct httpd_req *r, int status, const char *msg)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, http_status_reason(status), msg);
    httpd_header(r, "Cache-Control", "no-store");
    httpd_respond(r, status, "text/plain; charset=utf-8", body, (size_t)n);
}

void edge__count_request(struct edge_gen *g, const struct edge_route *rt, int status)
{
    struct edge *e = g->e;
    static const char *const codes[] = { "other", "1xx", "2xx", "3xx", "4xx", "5xx" };
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 0;
    if (!rt) {
        const char *v[] = { "none", "", codes[cls] };
        metric_inc(metrics_get(e->m_requests, v));
        return;
    }
    /* looked up once per route and class; worker threads share the pointer */
    struct metric **slot = &g->routes[rt->index].req[cls];
    struct metric *m = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!m) {
        const char *v[] = { rt->label, rt->backend ? rt->backend->name : "", codes[cls] };
        m = metrics_get(e->m_requests, v);
        __atomic_store_n(slot, m, __ATOMIC_RELEASE);
    }
    metric_inc(m);
}

/* ---- rate limiting ---- */

static bool rate_allow(struct edge_gen *g, const struct edge_route *rt, struct httpd_req *r,
                       double *retry_after)
{
    uint64_t key;
    if (rt->rl_header) {
        const struct http_header *h = httpd_req_header(r, rt->rl_header);
        if (!h)
            return true;        /* no key: not limited by this rule */
        key = ((uint64_t)edge__hash(h->value.p, h->value.n) << 32) | edge__hash(h->value.p, h->value.n / 2);
    } else {
        const struct sockaddr *sa = r->peer;
        if (sa->sa_family == AF_INET)
            key = ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
        else
            key = ((uint64_t)edge__hash(&((const struct sockaddr_in6 *)sa)->sin6_addr, 16) << 32) |
                  edge__hash(&((const struct sockaddr_in6 *)sa)->sin6_addr, 8);
    }
    key |= 1;   /* 0 marks an empty way */
    struct rl_set *set = &g->routes[rt->index].rl[edge__hash(&key, sizeof(key)) % RL_SETS];
    uint64_t now = cairn_now_ms();
    while (__atomic_exchange_n(&set->lock, 1, __ATOMIC_ACQUIRE))
        ;
    struct rl_entry *hit = NULL, *oldest = &set->e[0];
    for (int i = 0; i < RL_WAYS; i++) {
        if (set->e[i].key == key)
            hit = &set->e[i];
        if (set->e[i].last_ms < oldest->last_ms)
            oldest = &set->e[i];
    }
    if (!hit) {
        hit = oldest;
        hit->key = key;
        hit->tokens = rt->burst;
        hit->last_ms = now;
    }
    double t = hit->tokens + (double)(now - hit->last_ms) / 1000.0 * rt->rps;
    if (t > rt->burst)
        t = rt->burst;
    hit->last_ms = now;
    bool ok = t >= 1.0;
    if (ok)
        t -= 1.0;
    else
        *retry_after = (1.0 - t) / rt->rps;
    hit->tokens = t;
    __atomic_store_n(&set->lock, 0, __ATOMIC_RELEASE);
    return ok;
}

/* ---- server selection ---- */

static bool tried(const uint64_t *bits, size_t i)
{
    return i < 256 && (bits[i / 64] >> (i % 64)) & 1;
}

/* A server takes requests when it is weighted, not drained by the admin and, except
 * in panic mode, healthy and not ejected. */
static bool serviceable(const struct edge_server *s, uint64_t now, bool panic)
{
    if (s->weight == 0 || __atomic_load_n(&s->admin_drain, __ATOMIC_RELAXED))
        return false;
    return panic || (__atomic_load_n(&s->up, __ATOMIC_RELAXED) &&
                     __atomic_load_n(&s->ejected_until_ms, __ATOMIC_RELAXED) <= now);
}

/* Serviceable and below the backend's per-server limit. */
static bool available(const struct edge_server *s, uint64_t now, bool panic)
{
    int max = s->backend->max_conns;
    return serviceable(s, now, panic) && (!max || __atomic_load_n(&s->inflight, __ATOMIC_RELAXED) < max);
}

/* Slow start: a recovered server takes a growing share of new requests. */
static bool slow_start_skip(const struct edge_backend *b, const struct edge_server *s, uint64_t now)
{
    if (!b->slow_start_ms)
        return false;
    uint64_t rec = __atomic_load_n(&s->recovered_ms, __ATOMIC_RELAXED);
    if (!rec || now - rec >= b->slow_start_ms)
        return false;
    double share = (double)(now - rec) / (double)b->slow_start_ms;
    return (double)(cairn_rand64() % 10000) / 10000.0 >= MAX(share, 0.05);
}

static double load_of(const struct edge_server *s)
{
    return (double)(__atomic_load_n(&s->inflight, __ATOMIC_RELAXED) + 1) / (double)s->weight;
}

/* The hash key of a request: the configured header or cookie, else the client IP
 * (written into ip). */
struct strv edge__hash_key_of(const struct edge_backend *b, struct httpd_req *r, char *ip, size_t iplen)
{
    struct strv key = STRV_NULL;
    if (b->hash_key == HASH_HEADER) {
        const struct http_header *h = httpd_req_header(r, b->hash_name);
        if (h)
            key = h->value;
    } else if (b->hash_key == HASH_COOKIE) {
        const struct http_header *h = httpd_req_header(r, "cookie");
        size_t nl = strlen(b->hash_name);
        for (const char *p = h ? h->value.p : NULL, *end = h ? h->value.p + h->value.n : NULL;
             p && p < end;) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *ce = semi ? semi : end;
            if ((size_t)(ce - p) > nl && memcmp(p, b->hash_name, nl) == 0 && p[nl] == '=')
                return strv_make(p + nl + 1, (size_t)(ce - p - (ptrdiff_t)nl - 1));
            p = ce;
        }
    }
    if (!key.p) {
        httpd_req_peer(r, ip, iplen);
        key = strv_cstr(ip);
    }
    return key;
}

/* One pass of the balance policy over the servers available (in panic mode:
 * ignoring health and ejection) and not in tb. */
static struct edge_server *pick_from(struct edge_backend *b, struct edge_worker *w, const uint64_t *tb,
                                     struct strv key, uint64_t now, bool panic)
{
    size_t n = b->nservers;
    struct edge_server *best = NULL;
    if (!n)
        return NULL;

    if (b->balance == BAL_HASH && b->nring) {
        uint32_t h = edge__hash(key.p, key.n);
        size_t lo = 0, hi = b->nring;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (b->ring[mid] < h)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t k = 0; k < b->nring; k++) {
            size_t i = b->ring_server[(lo + k) % b->nring];
            if (!tried(tb, i) && available(&b->servers[i], now, panic))
                return &b->servers[i];
        }
        return NULL;
    }
    if (b->balance == BAL_RANDOM2) {
        struct edge_server *a = NULL, *c = NULL;
        for (int k = 0; k < 8 && !(a && c); k++) {
            struct edge_server *s = &b->servers[cairn_rand64() % n];
            if (tried(tb, (size_t)(s - b->servers)) || !available(s, now, panic) || slow_start_skip(b, s, now))
                continue;
            if (!a)
                a = s;
            else if (s != a)
                c = s;
        }
        if (a && c)
            return load_of(a) <= load_of(c) ? a : c;
        if (a)
            return a;
        /* few candidates: fall through to a scan */
    }
    if (b->balance == BAL_LEAST_CONN || b->balance == BAL_RANDOM2) {
        unsigned start = (unsigned)(cairn_rand64() % n);
        for (size_t k = 0; k < n; k++) {
            size_t i = (start + k) % n;
            struct edge_server *s = &b->servers[i];
            if (tried(tb, i) || !available(s, now, panic))
                continue;
            if (best && slow_start_skip(b, s, now))
                continue;
            if (!best || load_of(s) < load_of(best))
                best = s;
        }
        return best;
    }
    /* round robin, weighted by repetition of each server's turn; a backend of an
     * older configuration generation (request in flight across a reload) has no
     * position in the worker's array and starts anywhere */
    unsigned local = (unsigned)cairn_rand64();
    const struct edge_conf *wc = w->gen ? w->gen->conf : NULL;
    unsigned *pos = wc && b->index < wc->nbackends && &wc->backends[b->index] == b ? &w->rr[b->index] : &local;
    for (size_t k = 0; k < n * 2; k++) {
        size_t i = (*pos)++ % n;
        struct edge_server *s = &b->servers[i];
        if (tried(tb, i) || !available(s, now, panic))
            continue;
        if (slow_start_skip(b, s, now) && k < n)
            continue;
        if (s->weight > 1 && (cairn_rand64() % s->weight) != 0)
            (*pos)--;   /* stay on a heavy server for about weight turns */
        return s;
    }
    return NULL;
}

/* Panic mode (Envoy's panic threshold; nginx never marks the only server of a group
 * unavailable): when no server of a backend is healthy and unejected, health and
 * ejection are ignored and requests spread over all servers, so a protection that
 * misjudged every server cannot itself take the site down. `when_all_down: fail`
 * answers 503 instead. Entering and leaving are logged and exported. */
static void set_panic(struct edge_backend *b, struct edge_worker *w, bool on)
{
    if (__atomic_exchange_n(&b->panic, on ? 1 : 0, __ATOMIC_RELAXED) == (on ? 1 : 0))
        return;
    metric_set(metrics_get1(w->e->m_backend_panic, b->name), on ? 1 : 0);
    if (on)
        log_warn("backend in panic: no server healthy, requests go to all servers", "backend", b->name);
    else
        log_info("backend out of panic", "backend", b->name);
}

bool edge__backend_all_down(const struct edge_backend *b, uint64_t now)
{
    for (size_t i = 0; i < b->nservers; i++)
        if (serviceable(&b->servers[i], now, false))
            return false;
    return true;
}

/* Chooses a server of b by its balance policy among those available and not in
 * tried (a bitmap, or NULL); key is the hash key for balance: hash. Shared by
 * HTTP requests, L4 connections and background revalidations. */
struct edge_server *edge__pick(struct edge_backend *b, struct edge_worker *w, const uint64_t *tried_bits,
                               struct strv key)
{
    static const uint64_t none[4];
    const uint64_t *tb = tried_bits ? tried_bits : none;
    uint64_t now = cairn_now_ms();
    struct edge_server *s = pick_from(b, w, tb, key, now, false);
    if (s) {
        if (__atomic_load_n(&b->panic, __ATOMIC_RELAXED))
            set_panic(b, w, false);
        return s;
    }
    if (b->all_down_fail || !edge__backend_all_down(b, now))
        return NULL;
    set_panic(b, w, true);
    return pick_from(b, w, tb, key, now, true);
}

static struct edge_server *pick(struct proxy_req *pr)
{
    char ip[64];
    struct strv key = pr->b->balance == BAL_HASH ? edge__hash_key_of(pr->b, pr->r, ip, sizeof(ip)) : STRV_NULL;
    return edge__pick(pr->b, pr->w, pr->tried, key);
}

/* ---- upstream connections: core/httpc, a pool per server on each worker ---- */

void edge__worker_free_pools(struct edge_worker *w)
{
    for (size_t i = 0; i < w->nslots; i++)
        httpc_pool_flush(w->up, &w->pools[i]);
}

/* (Re)builds the worker's per-server pools and round-robin positions for c. The
 * connections of requests still in flight under the old pools are closed after
 * their response (httpc_pool_flush), as an older generation's are. */
int edge__worker_pools_init(struct edge_worker *w, const struct edge_conf *c)
{
    edge__worker_free_pools(w);
    free(w->pools);
    w->pools = NULL;
    free(w->server_base);
    free(w->rr);
    w->nslots = 0;

    w->server_base = calloc(c->nbackends ? c->nbackends : 1, sizeof(size_t));
    w->rr = calloc(c->nbackends ? c->nbackends : 1, sizeof(unsigned));
    if (!w->server_base || !w->rr)
        return -ENOMEM;
    for (size_t b = 0; b < c->nbackends; b++) {
        w->server_base[b] = w->nslots;
        w->nslots += c->backends[b].nservers;
        w->rr[b] = (unsigned)w->index * 7919u;     /* threads start at different servers */
    }
    w->pools = calloc(w->nslots ? w->nslots : 1, sizeof(*w->pools));
    if (!w->pools)
        return -ENOMEM;
    for (size_t b = 0; b < c->nbackends; b++)
        for (size_t i = 0; i < c->backends[b].nservers; i++)
            httpc_pool_init(&w->pools[w->server_base[b] + i], MAX_IDLE_PER_SERVER,
                            (uint32_t)c->backends[b].idle_timeout_ms);
    return 0;
}

static size_t slot_of(struct edge_worker *w, const struct edge_server *s)
{
    return w->server_base[s->backend->index] + (size_t)(s - s->backend->servers);
}

static const struct httpc_stream_ops up_ops;

/* Sends the request on a pooled connection to the chosen server, or a new one.
 * A request of an older configuration generation than the worker's gets a
 * connection of its own, closed after its response. */
static struct httpc_call *up_start(struct proxy_req *pr, int *err, bool *reused)
{
    struct edge_worker *w = pr->w;
    struct httpc_stream_req req = {
        .addr = pr->srv->addr,
        .raw = buf_head(&pr->req),
        .raw_len = buf_used(&pr->req),
        .is_head = pr->r && pr->r->h.is_head,
        .upgrade = pr->upgrade,
        .tls = pr->gen->backend_tls[pr->b->index],
        .sni = pr->b->tls_sni,
        .pool = pr->gen == w->gen && !service_stopping(w->e->sc) ? &w->pools[slot_of(w, pr->srv)] : NULL,
    };
    struct httpc_call *call = httpc_stream(w->up, &req, &up_ops, pr, err, reused);
    if (call && !*reused)
        metric_inc(w->e->m_upstream_connects);
    return call;
}

/* ---- request lifecycle ---- */

void edge__pr_free(struct proxy_req *pr)
{
    free(pr->c.inv_loc[0]);
    free(pr->c.inv_loc[1]);
    edge_cache_fill_abort(&pr->c.fill);
    if (pr->c.stale)
        edge_cache_obj_put(pr->c.stale);
    if (pr->c.filling) {
        pr->c.filling = false;
        edge_cache_coalesce_done(pr->gen->routes[pr->route->index].cache, pr->c.key, pr->c.keylen);
    }
    if (pr->c.reval)
        edge_cache_obj_put(pr->c.reval);
    edge_cache_stream_put(pr->c.st);
    if (pr->detached) {
        if (pr->dprev)
            pr->dprev->dnext = pr->dnext;
        else
            pr->w->detached = pr->dnext;
        if (pr->dnext)
            pr->dnext->dprev = pr->dprev;
    }
    if (pr->retrying)
        __atomic_sub_fetch(&pr->b->retries_active, 1, __ATOMIC_RELAXED);
    loop_timer_stop(&pr->timer);
    buf_free(&pr->req);
    free(pr);
}

/* Passive ejection never takes out more than eject.max_percent of a backend's
 * servers (Envoy's max_ejection_percent): with the default 50, the only server of
 * a backend is never ejected, one of two may be. Counted without a lock: two
 * threads ejecting at once may exceed the share by one for one ejection period. */
static bool eject_allowed(const struct edge_backend *b, const struct edge_server *s, uint64_t now)
{
    size_t out = 1;
    for (size_t i = 0; i < b->nservers; i++)
        if (&b->servers[i] != s && __atomic_load_n(&b->servers[i].ejected_until_ms, __ATOMIC_RELAXED) > now)
            out++;
    return out * 100 <= (size_t)b->eject_max_percent * b->nservers;
}

void edge__server_result(struct proxy_req *pr, bool ok)
{
    struct edge_server *s = pr->srv;
    struct edge_backend *b = pr->b;
    if (ok) {
        __atomic_store_n(&s->consecutive_fail, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->eject_capped, 0, __ATOMIC_RELAXED);
        return;
    }
    __atomic_add_fetch(&s->failures, 1, __ATOMIC_RELAXED);
    int f = __atomic_add_fetch(&s->consecutive_fail, 1, __ATOMIC_RELAXED);
    if (b->eject_after && f >= b->eject_after) {
        uint64_t now = cairn_now_ms();
        if (!eject_allowed(b, s, now)) {
            __atomic_store_n(&s->consecutive_fail, 0, __ATOMIC_RELAXED);
            if (!__atomic_exchange_n(&s->eject_capped, 1, __ATOMIC_RELAXED))
                log_warn("server not ejected: eject.max_percent of the backend already out", "backend",
                         b->name, "server", s->name, "failures", log_int(f), "max_percent",
                         log_int(b->eject_max_percent));
            return;
        }
        uint64_t until = now + b->eject_ms;
        uint64_t prev = __atomic_exchange_n(&s->ejected_until_ms, until, __ATOMIC_RELAXED);
        __atomic_store_n(&s->consecutive_fail, 0, __ATOMIC_RELAXED);
        if (prev < cairn_now_ms())
            log_warn("server ejected", "backend", b->name, "server", s->name, "failures",
                     log_int(f), "for_ms", log_int((long long)b->eject_ms));
    }
}

static void method_of(const struct httpd_req *r, char out[16])
{
    snprintf(out, 16, "%.*s", (int)MIN(r->h.method.n, (size_t)15), r->h.method.p);
}

/* The client span of the attempt that is ending: status is the server's answer
 * (0 when none came), why the reason it failed (NULL when it did not). One span per
 * attempt: a retried request has one for every server it tried. */
static void export_attempt(struct proxy_req *pr, int status, const char *why, uint64_t now, uint64_t wall)
{
    struct edge *e = pr->w->e;
    bool mine = pr->tclient;
    pr->tclient = false;
    if (!mine || !e->otlp || !pr->r || !pr->srv || !otlp_sampled(&pr->tc))
        return;
    char method[16], cname[96];
    method_of(pr->r, method);
    snprintf(cname, sizeof(cname), "%s %s", method, pr->b->name);
    struct otlp_attr ca[5] = {
        { "http.request.method", method, 0 }, { "server.address", pr->srv->name, 0 },
        { "cairn.attempt", NULL, pr->attempts },
    };
    size_t n = 3;
    if (status)
        ca[n++] = (struct otlp_attr){ "http.response.status_code", NULL, status };
    if (why)
        ca[n++] = (struct otlp_attr){ "error.type", why, 0 };
    struct otlp_span cs = { &pr->client_tc, pr->tc.span_id, cname, OTLP_CLIENT,
                            wall - (now - pr->t_attempt), wall, why || status >= 500, ca, n };
    otlp_export(e->otlp, &cs);
}

static void export_spans(struct proxy_req *pr, int status, uint64_t now)
{
    struct edge *e = pr->w->e;
    struct httpd_req *r = pr->r;
    if (!e->otlp || !r)
        return;
    if (!pr->tinit) {                       /* answered without an upstream (cache hit, limit) */
        const struct http_header *in = httpd_req_header(r, "traceparent");
        otlp_begin(e->otlp, in ? &in->value : NULL, &pr->tc, pr->tparent, &pr->thas_parent);
        pr->tinit = true;
    }
    if (!otlp_sampled(&pr->tc))
        return;
    uint64_t wall = otlp_now_ns();
    char method[16], target[256], name[96];
    method_of(r, method);
    snprintf(target, sizeof(target), "%.*s", (int)MIN(r->h.target.n, (size_t)250), r->h.target.p);
    snprintf(name, sizeof(name), "%s %s", method, pr->route->label);
    struct otlp_attr a[] = {
        { "http.request.method", method, 0 }, { "url.path", target, 0 },
        { "http.response.status_code", NULL, status }, { "cairn.route", pr->route->label, 0 },
        { "cairn.backend", pr->b->name, 0 }, { "cairn.server", pr->srv ? pr->srv->name : "-", 0 },
        { "cairn.cache", pr->c.xcache ? pr->c.xcache : "-", 0 }, { "cairn.attempts", NULL, pr->attempts },
    };
    struct otlp_span sp = { &pr->tc, pr->thas_parent ? pr->tparent : NULL, name, OTLP_SERVER,
                            wall - (now - pr->t_start), wall, status >= 500, a, ARRAY_SIZE(a) };
    otlp_export(e->otlp, &sp);
    /* the last attempt: the server's answer, or the reason the edge answered itself */
    export_attempt(pr, pr->status, pr->fail_why, now, wall);
}

void edge__access_log(struct proxy_req *pr, int status)
{
    struct edge *e = pr->w->e;
    uint64_t now = cairn_now_ns();
    metric_observe(e->m_duration, (double)(now - pr->t_start) / 1e9);
    metric_add(e->m_bytes_out, (double)pr->bytes);
    export_spans(pr, status, now);
    if (!pr->gen->conf->access_log)
        return;
    char ip[64], path[512], host[256];
    struct httpd_req *r = pr->r;
    httpd_req_peer(r, ip, sizeof(ip));
    snprintf(path, sizeof(path), "%.*s", (int)MIN(r->h.target.n, (size_t)500), r->h.target.p);
    snprintf(host, sizeof(host), "%.*s", (int)MIN(r->h.host.n, (size_t)250), r->h.host.p);
    char method[16];
    snprintf(method, sizeof(method), "%.*s", (int)MIN(r->h.method.n, (size_t)15), r->h.method.p);
    double conn_ms = pr->t_connect ? (double)(pr->t_connect - pr->t_start) / 1e6 : -1;
    double queue_ms = (double)pr->queue_ns / 1e6;
    double first_ms = pr->t_first ? (double)(pr->t_first - pr->t_start) / 1e6 : -1;
    char trace_id[33] = "-";
    if (pr->tinit)
        trace_id_hex(&pr->tc, trace_id);
    else if (pr->r) {
        const struct http_header *in = httpd_req_header(pr->r, "traceparent");
        struct trace_ctx t;
        if (in && trace_parse(in->value, &t) == 0)
            trace_id_hex(&t, trace_id);
    }
    log_info("access", "client", ip, "method", method, "host", host, "target", path, "route",
             pr->route->label, "backend", pr->b->name, "server", pr->srv ? pr->srv->name : "-",
             "status", log_int(status), "bytes", log_int((long long)pr->bytes), "attempts",
             log_int(pr->attempts), "t_queue_ms", log_dbl(queue_ms), "t_connect_ms", log_dbl(conn_ms),
             "t_first_byte_ms",
             log_dbl(first_ms), "t_total_ms", log_dbl((double)(now - pr->t_start) / 1e6),
             "cache", pr->c.xcache ? pr->c.xcache : "-", "request_id", pr->request_id, "trace_id", trace_id);
}

static void queue_kick(struct edge_worker *w);

void edge__finish_inflight(struct proxy_req *pr)
{
    if (pr->srv) {
        __atomic_sub_fetch(&pr->srv->inflight, 1, __ATOMIC_RELAXED);
        if (pr->b->max_conns)
            queue_kick(pr->w);
    }
}

/* Closes the request's server connection, if any (it cannot be reused midway). */
void edge__drop_upstream(struct proxy_req *pr)
{
    if (pr->call) {
        httpc_cancel(pr->call);
        pr->call = NULL;
    }
}

static void queue_unlink(struct proxy_req *pr);

/* The client went away (or the server stops): drop the upstream side. */
void edge__pr_abort(struct httpd_req *r, void *arg)
{
    struct proxy_req *pr = arg;
    UNUSED(r);
    queue_unlink(pr);
    if (pr->c.waiter) {
        struct edge_cache_store *cs = pr->gen->routes[pr->route->index].cache;
        if (pr->c.st ? edge_cache_stream_cancel(pr->c.st, pr->c.waiter) : edge_cache_waiter_cancel(cs, pr->c.waiter))
            free(pr->c.waiter);
        else
            pr->c.waiter->data = NULL;    /* the wake-up on its way frees it */
        pr->c.waiter = NULL;
        loop_timer_stop(&pr->timer);
        edge__count_request(pr->gen, pr->route, 499);
        edge__pr_free(pr);
        return;
    }
    if (pr->call && edge_cache_fill_shared(pr->c.fill)) {
        /* other requests are sending this response as it arrives: fetch on for
         * them (and the cache), without a client */
        edge__count_request(pr->gen, pr->route, 499);
        pr->r = NULL;
        pr->detached = true;
        pr->dprev = NULL;
        pr->dnext = pr->w->detached;
        if (pr->dnext)
            pr->dnext->dprev = pr;
        pr->w->detached = pr;
        if (pr->paused) {
            pr->paused = false;
            httpc_resume(pr->call);
        }
        return;
    }
    edge__drop_upstream(pr);
    edge__finish_inflight(pr);
    edge__count_request(pr->gen, pr->route, 499);
    edge__pr_free(pr);
}

/* Answers with an error of our own (nothing was sent to the client yet). */
static void fail(struct proxy_req *pr, int status, const char *msg)
{
    struct httpd_req *r = pr->r;
    pr->fail_why = msg;
    if (pr->c.stale && !pr->head_sent) {
        edge__serve_stale(pr);
        return;
    }
    edge__drop_upstream(pr);
    edge__finish_inflight(pr);
    if (!r) {
        edge__pr_free(pr);    /* a detached fetch broke off */
        return;
    }
    httpd_req_on_abort(r, NULL, NULL);
    httpd_req_on_drain(r, NULL, NULL);
    if (pr->head_sent) {
        /* mid-body: the client must not mistake a truncated body for a whole one */
        edge__access_log(pr, pr->status);
        edge__count_request(pr->gen, pr->route, pr->status);
        httpd_req_abort(r);
        edge__pr_free(pr);
        return;
    }
    edge__access_log(pr, status);
    edge__count_request(pr->gen, pr->route, status);
    httpd_header(r, "X-Request-Id", pr->request_id);
    edge__pr_free(pr);
    edge__simple_reply(r, status, msg);
}

/* Retry budget: retries in progress may not exceed max(min, percent% of the
 * requests in progress on the backend), so that retries cannot multiply the load
 * on a backend that is already failing. */
static bool retry_allowed(struct proxy_req *pr)
{
    struct edge_backend *b = pr->b;
    if (pr->retrying)
        return true;
    int inflight = 0;
    for (size_t i = 0; i < b->nservers; i++)
        inflight += __atomic_load_n(&b->servers[i].inflight, __ATOMIC_RELAXED);
    int cap = MAX(b->retry_min, inflight * b->retry_percent / 100);
    if (__atomic_add_fetch(&b->retries_active, 1, __ATOMIC_RELAXED) > cap) {
        __atomic_sub_fetch(&b->retries_active, 1, __ATOMIC_RELAXED);
        return false;
    }
    pr->retrying = true;
    return true;
}

/* The pooled connection a request was sent on had been closed by the server
 * before any answer: not an attempt, and not the server's fault, so the same
 * server may be picked again (another pooled connection, or a new one). */
static void stale_pooled_conn(struct proxy_req *pr)
{
    pr->attempts--;
    pr->dead_pooled = true;     /* nor is it a retry for the retry budget */
    size_t idx = (size_t)(pr->srv - pr->b->servers);
    if (idx < 256)
        pr->tried[idx / 64] &= ~(1ull << (idx % 64));
}

/* Whether a server not tried yet could take the request: an answer of 502/503/504
 * is retried only then; otherwise it is the answer the client gets (as nginx
 * returns the last server's response when proxy_next_upstream runs out). */
static bool another_server(const struct proxy_req *pr)
{
    const struct edge_backend *b = pr->b;
    uint64_t now = cairn_now_ms();
    bool panic = __atomic_load_n(&b->panic, __ATOMIC_RELAXED);
    for (size_t i = 0; i < b->nservers; i++)
        if (!tried(pr->tried, i) && serviceable(&b->servers[i], now, panic))
            return true;
    return false;
}

/* An attempt failed before the response started: retry elsewhere or fail. */
static void attempt_failed(struct proxy_req *pr, int status, const char *msg, bool count_fail)
{
    if (count_fail && pr->srv)
        edge__server_result(pr, false);
    edge__drop_upstream(pr);
    bool again = pr->dead_pooled;   /* the keep-alive race: neither an error nor a retry */
    pr->dead_pooled = false;
    if (!again)
        metric_inc(pr->w->e->m_upstream_errors);
    if (!pr->head_sent && (again || (pr->attempts <= pr->b->retries && retry_allowed(pr)))) {
        export_attempt(pr, 0, msg, cairn_now_ns(), otlp_now_ns());
        edge__finish_inflight(pr);
        pr->srv = NULL;
        if (!again)
            metric_inc(pr->w->e->m_retries);
        try_send(pr);
        return;
    }
    fail(pr, status, msg);
}

static void response_timeout(struct loop_timer *t)
{
    struct proxy_req *pr = t->data;
    if (pr->head_sent || !pr->idempotent) {
        fail(pr, 504, "the server did not answer in time");
        return;
    }
    attempt_failed(pr, 504, "the server did not answer in time", true);
}

/* The response is whole (its connection is back in the pool already). */
static void complete(struct proxy_req *pr)
{
    struct httpd_req *r = pr->r;
    pr->call = NULL;
    if (pr->c.fill)
        edge_cache_fill_commit(&pr->c.fill);
    if (pr->c.invalidate && pr->status < 400)
        edge__cache_invalidate(pr);
    edge__server_result(pr, pr->status < 500);
    edge__finish_inflight(pr);
    if (r) {
        httpd_req_on_abort(r, NULL, NULL);
        httpd_req_on_drain(r, NULL, NULL);
        edge__access_log(pr, pr->status);
        edge__count_request(pr->gen, pr->route, pr->status);
    }
    edge__pr_free(pr);
    if (r)
        httpd_respond_finish(r);
}

/* Hop-by-hop fields (RFC 9110 section 7.6.1) are not forwarded. Compared by
 * length first: this runs for every header of every request and response. */
static bool hop_by_hop_name(struct strv n)
{
    switch (n.n) {
    case 2:
        return strv_caseeq_cstr(n, "te");
    case 7:
        return strv_caseeq_cstr(n, "upgrade") || strv_caseeq_cstr(n, "trailer");
    case 10:
        return strv_caseeq_cstr(n, "connection") || strv_caseeq_cstr(n, "keep-alive");
    case 16:
        return strv_caseeq_cstr(n, "proxy-connection");
    case 17:
        return strv_caseeq_cstr(n, "transfer-encoding");
    case 18:
        return strv_caseeq_cstr(n, "proxy-authenticate");
    case 19:
        return strv_caseeq_cstr(n, "proxy-authorization");
    default:
        return false;
    }
}

/* The Connection field's value when it names more than close/keep-alive, else
 * an empty view: fields it names are hop-by-hop too. */
static struct strv connection_extra(const struct http_header *hdrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (hdrs[i].name.n != 10 || !strv_caseeq_cstr(hdrs[i].name, "connection"))
            continue;
        struct strv v = hdrs[i].value;
        if (strv_caseeq_cstr(v, "close") || strv_caseeq_cstr(v, "keep-alive"))
            return STRV_NULL;
        return v;
    }
    return STRV_NULL;
}

static bool hop_by_hop(struct strv name, struct strv conn_extra)
{
    if (hop_by_hop_name(name))
        return true;
    if (!conn_extra.n || name.n >= 64)
        return false;
    char tok[64];
    for (size_t i = 0; i < name.n; i++)
        tok[i] = (char)((name.p[i] >= 'A' && name.p[i] <= 'Z') ? name.p[i] + 32 : name.p[i]);
    tok[name.n] = '\0';
    return http_list_has_token(conn_extra, tok);
}

static bool in_list(struct strv name, char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strv_caseeq_cstr(name, list[i]))
            return true;
    return false;
}

/* How the response's body is framed, as httpc frames it for the stream. */
static enum body_mode body_mode_of(const struct proxy_req *pr, const struct http_response *resp)
{
    if ((pr->r && pr->r->h.is_head) || resp->status == 204 || resp->status == 304)
        return BODY_NONE;
    if (resp->chunked)
        return BODY_CHUNKED;
    return resp->content_length >= 0 ? BODY_LENGTH : BODY_CLOSE;
}

static void send_head(struct proxy_req *pr, const struct http_response *resp, enum body_mode mode)
{
    struct httpd_req *r = pr->r;
    const struct edge_header_ops *ops = &pr->route->resp_ops;
    r->no_default_headers = true;
    bool have_date = false;
    struct strv cx = connection_extra(resp->headers, resp->nheaders);
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct http_header *h = &resp->headers[i];
        if (hop_by_hop(h->name, cx) ||
            strv_caseeq_cstr(h->name, "content-length") || in_list(h->name, ops->remove, ops->nremove))
            continue;
        if (pr->route->cache && strv_caseeq_cstr(h->name, "surrogate-control"))
            continue;   /* for surrogates, not for clients */
        bool overridden = false;
        for (size_t k = 0; k < ops->nset; k++)
            overridden |= strv_caseeq_cstr(h->name, ops->set[k].name);
        if (overridden)
            continue;
        have_date |= strv_caseeq_cstr(h->name, "date");
        httpd_header_strv(r, h->name, h->value);
    }
    for (size_t k = 0; k < ops->nset; k++)
        httpd_header(r, ops->set[k].name, ops->set[k].value);
    if (!have_date) {
        char d[30];
        http_date_format(time(NULL), d);
        httpd_header(r, "Date", d);
    }
    if (!http_find_header(resp->headers, resp->nheaders, "x-request-id"))
        httpd_header(r, "X-Request-Id", pr->request_id);
    if (pr->c.xcache)
        httpd_header(r, "X-Cache", pr->c.xcache);
    int64_t len = -1;
    if (mode == BODY_NONE)
        len = resp->content_length >= 0 ? resp->content_length : 0;
    else if (mode == BODY_LENGTH)
        len = resp->content_length;
    pr->status = resp->status;
    pr->head_sent = true;
    httpd_respond_start(r, resp->status, NULL, len);
}

static void on_drain(struct httpd_req *r, void *arg)
{
    struct proxy_req *pr = arg;
    UNUSED(r);
    if (pr->paused && pr->call) {
        pr->paused = false;
        httpc_resume(pr->call);
    }
}

/* The server agreed to switch protocols: from here on both connections are a
 * tunnel. The 101 response goes to the client as the server sent it. */
static void start_tunnel(struct proxy_req *pr)
{
    struct httpd_req *r = pr->r;
    struct edge_worker *w = pr->w;
    pr->status = 101;
    edge__access_log(pr, 101);
    edge__count_request(pr->gen, pr->route, 101);
    edge__finish_inflight(pr);
    edge__server_result(pr, true);
    struct buf to_client = BUF_INIT, to_server = BUF_INIT;
    /* take the server's socket over, with the 101 as the server sent it and what
     * followed it */
    int sfd;
    SSL *sssl;
    httpc_hijack(pr->call, &sfd, &sssl, &to_client);
    pr->call = NULL;
    uint64_t timeout = pr->b->idle_timeout_ms > 3600000 ? pr->b->idle_timeout_ms : 3600000;
    edge__pr_free(pr);
    int cfd;
    SSL *cssl;
    httpd_req_hijack(r, &cfd, &cssl, &to_server);
    if (tunnel_start(&w->tunnels, cfd, cssl, &to_client, sfd, sssl, &to_server, timeout, NULL, NULL))
        log_warn("cannot start a tunnel");
    buf_free(&to_client);
    buf_free(&to_server);
}

/* ---- the server's side of a request (httpc's callbacks) ---- */

/* A new connection is up: from now on the response timeout runs. */
static void up_connected(void *arg)
{
    struct proxy_req *pr = arg;
    pr->t_connect = cairn_now_ns();
    loop_timer_stop(&pr->timer);
    pr->timer.cb = response_timeout;
    loop_timer_start(&pr->w->loop, &pr->timer, pr->b->response_timeout_ms);
}

static void up_head(void *arg, const struct http_response *resp)
{
    struct proxy_req *pr = arg;
    pr->t_first = cairn_now_ns();
    loop_timer_stop(&pr->timer);
    int st = resp->status;
    if (pr->idempotent && (st == 502 || st == 503 || st == 504) &&
        pr->attempts <= pr->b->retries && another_server(pr) && retry_allowed(pr)) {
        /* this server cannot serve it now: try another, drop this connection */
        export_attempt(pr, st, NULL, pr->t_first, otlp_now_ns());
        attempt_failed(pr, st, "bad gateway", true);
        return;
    }
    if (st == 101 && pr->upgrade) {
        start_tunnel(pr);
        return;
    }
    if (st == 304 && pr->c.reval) {
        edge__serve_revalidated(pr, resp);
        return;
    }
    if (st >= 500 && pr->c.stale) {
        edge__server_result(pr, false);
        edge__serve_stale(pr);
        return;
    }
    edge__cache_on_head(pr, resp);
    enum body_mode mode = body_mode_of(pr, resp);
    if (pr->c.fill && pr->c.filling && mode == BODY_LENGTH)   /* the waiters stream it */
        edge_cache_fill_share(pr->c.fill, pr->c.key, pr->c.keylen, (uint64_t)resp->content_length);
    send_head(pr, resp, mode);
}

/* Body bytes as they arrive; reading pauses while the client has too much unsent. */
static void up_data(void *arg, const char *p, size_t n)
{
    struct proxy_req *pr = arg;
    edge_cache_fill_data(pr->c.fill, p, n);
    pr->bytes += n;
    if (!pr->r)
        return;     /* a detached fetch: for the cache and the waiters only */
    httpd_respond_write(pr->r, p, n);
    if (httpd_req_pending(pr->r) > PAUSE_BYTES) {
        pr->paused = true;      /* resumed from on_drain */
        httpc_pause(pr->call);
    }
}

static void up_done(void *arg, bool reusable)
{
    UNUSED(reusable);
    complete(arg);
}

static void up_failed(void *arg, int err, enum httpc_stage stage, unsigned flags)
{
    struct proxy_req *pr = arg;
    pr->call = NULL;
    bool reused = flags & HTTPC_F_REUSED;
    switch (stage) {
    case HTTPC_CONNECT:
        attempt_failed(pr, 502, "cannot connect to the server", true);
        return;
    case HTTPC_TLS:
        attempt_failed(pr, 502, "TLS handshake with the server failed", true);
        return;
    case HTTPC_EXCHANGE:
        if (flags & HTTPC_F_GOT_BYTES) {
            attempt_failed(pr, 502, "the server closed the connection", true);
            return;
        }
        /* reset or closed before any byte: on a pooled connection, the keep-alive race */
        if (reused)
            stale_pooled_conn(pr);
        attempt_failed(pr, 502, "connection to the server failed", !reused);
        return;
    case HTTPC_BAD_HEAD:
        edge__server_result(pr, false);
        fail(pr, 502, "the server sent a malformed response");
        return;
    case HTTPC_BODY:
        fail(pr, 502, err == -EPROTO ? "the server sent a malformed chunked body"
                                     : "the server closed the connection mid-body");
        return;
    }
}

static const struct httpc_stream_ops up_ops = {
    .connected = up_connected,
    .head = up_head,
    .data = up_data,
    .done = up_done,
    .failed = up_failed,
};

static void connect_timeout(struct loop_timer *t)
{
    struct proxy_req *pr = t->data;
    attempt_failed(pr, 504, "connecting to the server timed out", true);
}

/* ---- the queue: requests waiting for a server below max_conns ---- */

static void queue_unlink(struct proxy_req *pr)
{
    struct edge_worker *w = pr->w;
    if (!pr->queued)
        return;
    if (pr->qprev)
        pr->qprev->qnext = pr->qnext;
    else
        w->queue_head = pr->qnext;
    if (pr->qnext)
        pr->qnext->qprev = pr->qprev;
    else
        w->queue_tail = pr->qprev;
    pr->qnext = pr->qprev = NULL;
    pr->queued = false;
    pr->queue_ns += cairn_now_ns() - pr->t_queued;
    loop_timer_stop(&pr->timer);
}

static void queue_timeout(struct loop_timer *t)
{
    struct proxy_req *pr = t->data;
    queue_unlink(pr);
    fail(pr, 503, "every server is busy (queue timeout)");
}

/* Serves queued requests in order while servers have room. */
static void queue_run(void *arg)
{
    struct edge_worker *w = arg;
    uint64_t now = cairn_now_ms();
    struct proxy_req *pr = w->queue_head;
    while (pr) {
        struct proxy_req *next = pr->qnext;
        bool room = false;
        for (size_t i = 0; i < pr->b->nservers && !room; i++)
            room = available(&pr->b->servers[i], now, __atomic_load_n(&pr->b->panic, __ATOMIC_RELAXED));
        if (room) {
            queue_unlink(pr);
            try_send(pr);
        }
        pr = next;
    }
    if (w->queue_head)
        loop_timer_start(&w->loop, &w->queue_poll, 10);
}

static void queue_poll_cb(struct loop_timer *t)
{
    queue_run(t->data);
}

static void queue_kick(struct edge_worker *w)
{
    if (w->queue_head)
        loop_defer(&w->loop, &w->queue_defer, queue_run, w);
}

/* No server had room: wait in the queue if one is merely full. */
static bool try_queue(struct proxy_req *pr)
{
    struct edge_backend *b = pr->b;
    struct edge_worker *w = pr->w;
    if (!b->max_conns || !b->queue_size || pr->attempts)
        return false;
    int waiting = 0;
    for (struct proxy_req *q = w->queue_head; q; q = q->qnext)
        waiting += q->b == b;
    if (waiting >= b->queue_size)
        return false;
    uint64_t now = cairn_now_ms();
    bool some = false;
    for (size_t i = 0; i < b->nservers && !some; i++)
        some = serviceable(&b->servers[i], now, __atomic_load_n(&b->panic, __ATOMIC_RELAXED));
    if (!some)
        return false;
    pr->queued = true;
    pr->t_queued = cairn_now_ns();
    pr->qprev = w->queue_tail;
    pr->qnext = NULL;
    if (w->queue_tail)
        w->queue_tail->qnext = pr;
    else
        w->queue_head = pr;
    w->queue_tail = pr;
    pr->timer.cb = queue_timeout;
    loop_timer_start(&w->loop, &pr->timer, b->queue_timeout_ms);
    if (!loop_timer_armed(&w->queue_poll)) {
        w->queue_poll.cb = queue_poll_cb;
        loop_timer_start(&w->loop, &w->queue_poll, 10);
    }
    return true;
}

void edge__queue_flush(struct edge_worker *w)
{
    loop_timer_stop(&w->queue_poll);
    while (w->queue_head) {
        struct proxy_req *pr = w->queue_head;
        queue_unlink(pr);
        fail(pr, 503, "the service is stopping");
    }
}

/* A retry is a new client span: a new span id in the traceparent the request
 * carries (patched in place), and a new start. */
static void next_attempt_span(struct proxy_req *pr)
{
    if (!pr->tp_off)
        return;
    trace_child(&pr->tc, &pr->client_tc);
    pr->tclient = true;
    pr->t_attempt = cairn_now_ns();
    char tp[TRACEPARENT_LEN + 1];
    trace_format(&pr->client_tc, tp);
    memcpy(buf_head(&pr->req) + pr->tp_off, tp, TRACEPARENT_LEN);
}

static void try_send(struct proxy_req *pr)
{
    for (;;) {
        pr->srv = pick(pr);
        if (!pr->srv) {
            if (try_queue(pr))
                return;
            fail(pr, pr->attempts ? 502 : 503,
                 pr->attempts ? "no server could answer" : "no server available");
            return;
        }
        size_t idx = (size_t)(pr->srv - pr->b->servers);
        if (idx < 256)
            pr->tried[idx / 64] |= 1ull << (idx % 64);
        pr->attempts++;
        if (pr->attempts > 1)
            next_attempt_span(pr);
        pr->req_wall = time(NULL);
        __atomic_add_fetch(&pr->srv->inflight, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&pr->srv->requests, 1, __ATOMIC_RELAXED);
        int err = 0;
        bool reused = false;
        pr->call = up_start(pr, &err, &reused);
        if (!pr->call) {
            export_attempt(pr, 0, "cannot connect to the server", cairn_now_ns(), otlp_now_ns());
            edge__finish_inflight(pr);
            edge__server_result(pr, false);
            if (pr->attempts > pr->b->retries) {
                fail(pr, 502, "cannot connect to the server");
                return;
            }
            continue;
        }
        if (!reused) {
            pr->timer.cb = connect_timeout;
            loop_timer_start(&pr->w->loop, &pr->timer, pr->b->connect_timeout_ms);
            /* the response timer replaces it once connected */
            return;
        }
        pr->timer.cb = response_timeout;
        pr->t_connect = cairn_now_ns();
        loop_timer_start(&pr->w->loop, &pr->timer, pr->b->response_timeout_ms);
        return;
    }
}

/* Serializes the request for the server into b: hop-by-hop fields dropped, the
 * route's changes made, forwarding fields added (RFC 7239 Forwarded and the
 * X-Forwarded-* de facto standard). With refresh, the background revalidation of
 * that stored object for this request: a GET with the object's validators in place
 * of the client's conditionals, without Range, Upgrade or body. */
void edge__build_request(struct proxy_req *pr, const struct edge_listener *l, struct buf *b,
                          const struct edge_cache_obj *refresh)
{
    struct httpd_req *r = pr->r;
    const struct edge_header_ops *ops = &pr->route->req_ops;
    const struct edge_cache_obj *reval = refresh ? refresh : pr->c.reval;
    char ip[64];
    httpd_req_peer(r, ip, sizeof(ip));
    const char *proto = l->tls ? "https" : "http";
    if (refresh)
        buf_puts(b, "GET");
    else
        buf_append(b, r->h.method.p, r->h.method.n);
    buf_putc(b, ' ');
    buf_append(b, r->h.target.p, r->h.target.n);
    buf_puts(b, " HTTP/1.1\r\n");
    const struct http_header *xff = NULL, *fwd = NULL, *scap = NULL;
    bool have_tp = false;
    const struct http_header *in_tp = NULL;     /* the client's traceparent, if any */
    struct strv cx = connection_extra(r->h.headers, r->h.nheaders);
    for (size_t i = 0; i < r->h.nheaders; i++) {
        const struct http_header *h = &r->h.headers[i];
        if (hop_by_hop(h->name, cx) ||
            strv_caseeq_cstr(h->name, "content-length") || in_list(h->name, ops->remove, ops->nremove))
            continue;
        if (strv_caseeq_cstr(h->name, "x-forwarded-for")) {
            xff = h;
            continue;
        }
        if (strv_caseeq_cstr(h->name, "forwarded")) {
            fwd = h;
            continue;
        }
        if (pr->route->cache && strv_caseeq_cstr(h->name, "surrogate-capability")) {
            scap = h;
            continue;
        }
        if (strv_caseeq_cstr(h->name, "x-forwarded-proto") || strv_caseeq_cstr(h->name, "x-forwarded-host") ||
            strv_caseeq_cstr(h->name, "host"))
            continue;   /* Host is the request's host (an absolute-form target's authority) */
        if (reval && (strv_caseeq_cstr(h->name, "if-none-match") ||
                      strv_caseeq_cstr(h->name, "if-modified-since")))
            continue;   /* replaced by the cache's own revalidation */
        if (refresh && (strv_caseeq_cstr(h->name, "range") || strv_caseeq_cstr(h->name, "if-range") ||
                        strv_caseeq_cstr(h->name, "if-match") ||
                        strv_caseeq_cstr(h->name, "if-unmodified-since")))
            continue;   /* the whole object is refreshed */
        if (strv_caseeq_cstr(h->name, "x-request-id")) {
            snprintf(pr->request_id, sizeof(pr->request_id), "%.*s", (int)MIN(h->value.n, (size_t)39), h->value.p);
            continue;
        }
        bool overridden = false;
        for (size_t k = 0; k < ops->nset; k++)
            overridden |= strv_caseeq_cstr(h->name, ops->set[k].name);
        if (overridden)
            continue;
        if (strv_caseeq_cstr(h->name, "traceparent")) {
            struct trace_ctx t;
            in_tp = h;
            if (trace_parse(h->value, &t) || pr->w->e->otlp)
                continue;   /* invalid, or this edge's own span is the parent: replaced below */
            have_tp = true;
        }
        buf_append(b, h->name.p, h->name.n);
        buf_puts(b, ": ");
        buf_append(b, h->value.p, h->value.n);
        buf_puts(b, "\r\n");
    }
    bool host_set = false;
    for (size_t k = 0; k < ops->nset; k++) {
        http1_write_header(b, ops->set[k].name, ops->set[k].value);
        host_set |= strcasecmp(ops->set[k].name, "host") == 0;
    }
    if (!host_set && r->h.host.n) {
        buf_puts(b, "Host: ");
        buf_put_strv(b, r->h.host);
        buf_puts(b, "\r\n");
    }
    if (reval)
        edge_cache_obj_conditional_headers(reval, b);
    /* Upgrade (WebSocket and friends): the two hop-by-hop fields go on */
    const struct http_header *up = httpd_req_header(r, "upgrade");
    const struct http_header *conn = httpd_req_header(r, "connection");
    if (!refresh && up && conn && http_list_has_token(conn->value, "upgrade") && r->h.minor >= 1) {
        pr->upgrade = true;
        buf_puts(b, "Connection: Upgrade\r\nUpgrade: ");
        buf_put_strv(b, up->value);
        buf_puts(b, "\r\n");
    }
    if (pr->route->cache) {
        /* a surrogate says so (W3C Edge Architecture): origins may then target
         * Surrogate-Control directives at it */
        buf_puts(b, "Surrogate-Capability: ");
        if (scap) {
            buf_put_strv(b, scap->value);
            buf_append(b, ", ", 2);
        }
        buf_puts(b, SURROGATE_TOKEN "=\"Surrogate/1.0\"\r\n");
    }
    buf_puts(b, "X-Forwarded-For: ");
    if (xff) {
        buf_put_strv(b, xff->value);
        buf_append(b, ", ", 2);
    }
    buf_puts(b, ip);
    buf_puts(b, "\r\nX-Forwarded-Proto: ");
    buf_puts(b, proto);
    if (r->h.host.n) {
        buf_puts(b, "\r\nX-Forwarded-Host: ");
        buf_put_strv(b, r->h.host);
    }
    bool v6 = strchr(ip, ':') != NULL;
    buf_puts(b, "\r\nForwarded: ");
    if (fwd) {
        buf_put_strv(b, fwd->value);
        buf_append(b, ", ", 2);
    }
    buf_puts(b, v6 ? "for=\"[" : "for=");
    buf_puts(b, ip);
    buf_puts(b, v6 ? "]\";proto=" : ";proto=");
    buf_puts(b, proto);
    if (r->h.host.n) {
        buf_puts(b, ";host=\"");
        buf_put_strv(b, r->h.host);
        buf_putc(b, '"');
    }
    buf_puts(b, "\r\n");
    if (!pr->request_id[0]) {
        static const char hx[] = "0123456789abcdef";
        uint64_t r1 = cairn_rand64(), r2 = cairn_rand64();
        uint8_t id[16];
        memcpy(id, &r1, 8);
        memcpy(id + 8, &r2, 8);
        id[6] = (uint8_t)((id[6] & 0x0f) | 0x40);     /* a version 4 UUID */
        id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
        char *o = pr->request_id;
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10)
                *o++ = '-';
            *o++ = hx[id[i] >> 4];
            *o++ = hx[id[i] & 15];
        }
        *o = '\0';
    }
    buf_puts(b, "X-Request-Id: ");
    buf_puts(b, pr->request_id);
    buf_puts(b, "\r\n");
    if (!pr->tinit) {
        /* one trace per request: the incoming one, or a new one */
        otlp_begin(pr->w->e->otlp, in_tp ? &in_tp->value : NULL, &pr->tc, pr->tparent, &pr->thas_parent);
        if (!pr->w->e->otlp && !pr->thas_parent)
            pr->tc.flags = 1;               /* not exporting: sampled, as before */
        pr->tinit = true;
    }
    if (!have_tp) {
        char tp[TRACEPARENT_LEN + 1];
        if (pr->w->e->otlp && !refresh) {
            trace_child(&pr->tc, &pr->client_tc);   /* this attempt's client span */
            pr->tclient = true;
            pr->t_attempt = cairn_now_ns();
            trace_format(&pr->client_tc, tp);
        } else {
            trace_format(&pr->tc, tp);
        }
        buf_puts(b, "traceparent: ");
        if (pr->tclient && !refresh)
            pr->tp_off = buf_used(b);
        buf_append(b, tp, TRACEPARENT_LEN);
        buf_puts(b, "\r\n");
    }
    if (!refresh && (r->body.n || r->h.chunked || r->h.content_length >= 0)) {
        buf_puts(b, "Content-Length: ");
        buf_put_u64(b, r->body.n);
        buf_puts(b, "\r\n");
    }
    buf_puts(b, "\r\n");
    if (!refresh)
        buf_append(b, r->body.p, r->body.n);
}

static bool is_idempotent(struct strv m)
{
    return strv_eq_cstr(m, "GET") || strv_eq_cstr(m, "HEAD") || strv_eq_cstr(m, "OPTIONS") ||
           strv_eq_cstr(m, "PUT") || strv_eq_cstr(m, "DELETE") || strv_eq_cstr(m, "TRACE");
}

void edge__proxy(struct httpd_req *r, void *arg)
{
    struct edge_lctx *lc = arg;
    struct edge *e = lc->e;
    struct edge_gen *g = lc->gen;
    const struct sockaddr *peer = r->peer;
    if (!edge__cidrs_allow(&lc->l->allow, &lc->l->deny, peer)) {
        metric_inc(e->m_denied);
        httpd_req_abort(r);     /* a denied listener client gets a closed connection */
        return;
    }
    const struct edge_route *rt = match_route(g->conf, r);
    if (!rt) {
        edge__count_request(g, NULL, 404);
        edge__simple_reply(r, 404, "no route matches this host and path");
        return;
    }
    if (!edge__cidrs_allow(&rt->allow, &rt->deny, peer)) {
        metric_inc(e->m_denied);
        edge__count_request(g, rt, 403);
        edge__simple_reply(r, 403, "access denied");
        return;
    }
    if (rt->redirect_https && !r->tls) {
        char loc[1024];
        int hl = (int)r->h.host.n;
        const char *colon = memchr(r->h.host.p, ':', r->h.host.n);
        if (colon && r->h.host.p[0] != '[')
            hl = (int)(colon - r->h.host.p);
        snprintf(loc, sizeof(loc), "https://%.*s%.*s", hl, r->h.host.p, (int)MIN(r->h.target.n, (size_t)900),
                 r->h.target.p);
        httpd_header(r, "Location", loc);
        edge__count_request(g, rt, 308);
        edge__simple_reply(r, 308, "use https");
        return;
    }
    if (rt->rate_limit) {
        double ra = 0;
        if (!rate_allow(g, rt, r, &ra)) {
            metric_inc(e->m_limited);
            httpd_headerf(r, "Retry-After", "%d", (int)ceil(ra));
            edge__count_request(g, rt, 429);
            edge__simple_reply(r, 429, "rate limit exceeded");
            return;
        }
    }
    if (!rt->backend) {
        edge__count_request(g, rt, 404);
        edge__simple_reply(r, 404, "this route has no backend");
        return;
    }
    struct proxy_req *pr = calloc(1, sizeof(*pr));
    if (!pr) {
        edge__simple_reply(r, 503, "out of memory");
        return;
    }
    pr->r = r;
    pr->w = r->worker->data;
    pr->gen = g;
    pr->route = rt;
    pr->b = rt->backend;
    pr->idempotent = is_idempotent(r->h.method);
    pr->t_start = r->start_ns;
    loop_timer_init(&pr->timer, response_timeout, pr);
    pr->listener = lc->l;
    if (rt->cache && g->routes[rt->index].cache && edge__cache_lookup_or_pass(pr))
        return;     /* answered from the cache, or waiting for a coalesced fetch */
    edge__proxy_go(pr);
}

/* Sends the request on to a server. */
void edge__proxy_go(struct proxy_req *pr)
{
    struct httpd_req *r = pr->r;
    edge__build_request(pr, pr->listener, &pr->req, NULL);
    httpd_req_on_abort(r, edge__pr_abort, pr);
    httpd_req_on_drain(r, on_drain, pr);
    try_send(pr);
}

int edge__gen_routes_init(struct edge_gen *g)
{
    const struct edge_conf *c = g->conf;
    g->routes = calloc(c->nroutes ? c->nroutes : 1, sizeof(*g->routes));
    if (!g->routes)
        return -ENOMEM;
    for (size_t i = 0; i < c->nroutes; i++) {
        if (c->routes[i].rate_limit) {
            g->routes[i].rl = calloc(RL_SETS, sizeof(struct rl_set));
            if (!g->routes[i].rl)
                return -ENOMEM;
        }
    }
    return 0;
}
