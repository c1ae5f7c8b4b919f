/* edge_proxy_cache.c - what the cache decides for a proxied request (the CDN
 * tier): lookup or pass, coalescing onto a fetch in flight, answering from a
 * response another request is storing, revalidated and stale answers, RFC 9111
 * 4.4 invalidation after unsafe methods, and the background refresh of
 * stale-while-revalidate. The proxy (edge_proxy.c) calls in at the request
 * (edge__cache_lookup_or_pass), at the response head (edge__cache_on_head,
 * edge__serve_revalidated, edge__serve_stale) and at its end
 * (edge__cache_invalidate); the store itself is edge_cache.c.
 */
#include "edge_proxy.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void cache_count(struct proxy_req *pr, enum cache_result result);

/* The origin failed and a stale object may stand in (stale-if-error, grace). */
void edge__serve_stale(struct proxy_req *pr)
{
    struct httpd_req *r = pr->r;
    struct edge_cache_obj *o = pr->c.stale;
    edge__drop_upstream(pr);
    edge__finish_inflight(pr);
    httpd_req_on_abort(r, NULL, NULL);
    httpd_req_on_drain(r, NULL, NULL);
    pr->c.xcache = "STALE";
    edge__access_log(pr, 200);
    edge__count_request(pr->gen, pr->route, 200);
    cache_count(pr, CR_STALE);
    char rid[40];
    memcpy(rid, pr->request_id, sizeof(rid));
    edge_cache_obj_get(o);
    edge__pr_free(pr);
    edge_cache_serve(r, o, "STALE", rid);
    edge_cache_obj_put(o);
}

static void cache_count(struct proxy_req *pr, enum cache_result result)
{
    static const char *const names[] = { "hit", "miss", "expired", "pass", "stale" };
    struct edge *e = pr->w->e;
    if (!pr->route->cache || !e->m_cache)
        return;
    struct metric **m = &pr->gen->routes[pr->route->index].cache_m[result];
    struct metric *got = __atomic_load_n(m, __ATOMIC_ACQUIRE);
    if (!got) {
        got = metrics_get2(e->m_cache, pr->route->label, names[result]);
        __atomic_store_n(m, got, __ATOMIC_RELEASE);
    }
    metric_inc(got);
}

/* RFC 9111 4.4: a successful unsafe request invalidates the target's stored
 * responses, and those of the same-origin URIs in its Location and
 * Content-Location. */
void edge__cache_invalidate(struct proxy_req *pr)
{
    struct edge_cache_store *cs = pr->gen->routes[pr->route->index].cache;
    if (cs) {
        edge_cache_purge_key(cs, pr->c.key, pr->c.keylen);   /* RFC 9111 4.4 */
        /* and the same-origin URIs in Location and Content-Location */
        for (size_t i = 0; i < 2; i++) {
            if (!pr->c.inv_loc[i] || !pr->c.inv_loc[i][0])
                continue;
            struct strv v = strv_cstr(pr->c.inv_loc[i]);
            const char *hostend = memchr(pr->c.key, '\n', pr->c.keylen);
            size_t hl = hostend ? (size_t)(hostend - pr->c.key) : 0;
            if (strv_has_prefix(v, "http://") || strv_has_prefix(v, "https://")) {
                const char *hs = memchr(v.p, '/', v.n) + 2;
                const char *slash = memchr(hs, '/', (size_t)(v.p + v.n - hs));
                if (!slash || (size_t)(slash - hs) != hl || strncasecmp(hs, pr->c.key, hl) != 0)
                    continue;   /* another origin: left alone */
                v = strv_make(slash, (size_t)(v.p + v.n - slash));
            }
            if (v.p[0] != '/' || hl + 1 + v.n >= sizeof(pr->c.key))
                continue;
            char k[sizeof(pr->c.key)];
            memcpy(k, pr->c.key, hl + 1);
            memcpy(k + hl + 1, v.p, v.n);
            edge_cache_purge_key(cs, k, hl + 1 + v.n);
        }
    }
}

/* The response's head has arrived: start storing it when it may be stored, and
 * keep the fields an invalidation will need. */
void edge__cache_on_head(struct proxy_req *pr, const struct http_response *resp)
{
    if (pr->c.store && resp->status != 304)
        pr->c.fill = edge_cache_fill_begin(pr->c.store, pr->c.key, pr->c.keylen, pr->r, resp, pr->req_wall);
    if (pr->c.invalidate) {
        const struct http_header *lh = http_find_header(resp->headers, resp->nheaders, "location");
        const struct http_header *ch = http_find_header(resp->headers, resp->nheaders, "content-location");
        pr->c.inv_loc[0] = lh ? strv_dup(lh->value) : NULL;
        pr->c.inv_loc[1] = ch ? strv_dup(ch->value) : NULL;
    }
}

/* The origin confirmed the stale object (304): refresh it and answer from it. */
/* From the response head: a 304 for the stale object this request revalidates.
 * The exchange finishes on its own (a 304 has no body) and its connection goes
 * back to the pool. */
void edge__serve_revalidated(struct proxy_req *pr, const struct http_response *resp)
{
    struct httpd_req *r = pr->r;
    struct edge_cache_obj *fresh = edge_cache_refresh(pr->c.store ? pr->c.store : pr->gen->routes[pr->route->index].cache,
                                       pr->c.reval, resp, pr->req_wall);
    struct edge_cache_obj *use = fresh ? fresh : pr->c.reval;
    httpc_detach(pr->call);
    pr->call = NULL;
    edge__server_result(pr, true);
    edge__finish_inflight(pr);
    httpd_req_on_abort(r, NULL, NULL);
    httpd_req_on_drain(r, NULL, NULL);
    pr->status = 200;
    edge__access_log(pr, 200);
    edge__count_request(pr->gen, pr->route, 200);
    char rid[40];
    memcpy(rid, pr->request_id, sizeof(rid));
    edge_cache_obj_get(use);          /* edge__pr_free drops the revalidation reference */
    edge__pr_free(pr);
    edge_cache_serve(r, use, "EXPIRED", rid);
    edge_cache_obj_put(use);
    if (fresh)
        edge_cache_obj_put(fresh);    /* edge_cache_refresh's reference for its caller */
}

static void bg_free(struct bg_refresh *j)
{
    struct edge_worker *w = j->w;
    if (j->prev)
        j->prev->next = j->next;
    else
        w->bg_jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    for (size_t i = 0; i < j->nsend; i++)
        free(j->send[i]);
    for (size_t i = 0; i < j->nfields; i++)
        free(j->fields[i]);
    free(j->send);
    free(j->fields);
    edge_cache_obj_put(j->o);
    free(j);
}

static void bg_done(const struct httpc_response *resp, void *arg)
{
    struct bg_refresh *j = arg;
    j->call = NULL;
    if (!resp->error && (resp->status == 304 || (resp->status >= 200 && resp->status < 500))) {
        /* the client's fields, as views, for Vary and the other rules on storing */
        struct http_header hs[HTTP_MAX_HEADERS];
        size_t n = 0;
        for (size_t i = 0; i < j->nfields && n < HTTP_MAX_HEADERS; i++) {
            const char *colon = strchr(j->fields[i], ':');
            if (!colon)
                continue;
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            hs[n].name = strv_make(j->fields[i], (size_t)(colon - j->fields[i]));
            hs[n].value = strv_cstr(v);
            n++;
        }
        edge_cache_background_result(j->cs, j->o, resp->status, resp->headers, resp->nheaders, resp->body,
                                hs, n, j->req_time);
    } else {
        edge_cache_obj_release_refresh(j->o);     /* a later request may try again */
    }
    bg_free(j);
}

/* Starts a revalidation of o in the background; the client is answered from o. */
static void bg_refresh_start(struct proxy_req *pr, struct edge_cache_obj *o)
{
    struct edge_worker *w = pr->w;
    struct edge_backend *b = pr->b;
    struct httpd_req *r = pr->r;
    char ip[64];
    struct strv key = b->balance == BAL_HASH ? edge__hash_key_of(b, r, ip, sizeof(ip)) : STRV_NULL;
    struct edge_server *srv = edge__pick(b, w, NULL, key);
    struct tls_ctx *tctx = pr->gen->backend_tls[b->index];
    if (!srv || (!w->bg_client && !(w->bg_client = httpc_new(&w->loop, NULL)))) {
        edge_cache_obj_release_refresh(o);
        return;
    }
    struct bg_refresh *j = calloc(1, sizeof(*j));
    if (!j) {
        edge_cache_obj_release_refresh(o);
        return;
    }
    j->w = w;
    j->cs = pr->gen->routes[pr->route->index].cache;
    j->o = o;
    edge_cache_obj_get(o);
    j->req_time = time(NULL);
    /* the request as the proxy would send it, as lines for the client (which
     * writes the request line and Host itself) */
    struct buf rq = BUF_INIT;
    edge__build_request(pr, pr->listener, &rq, o);
    char host[512] = "";
    size_t cap = 1;
    for (const char *p = buf_head(&rq); rq.data && (p = strstr(p, "\r\n")); p += 2)
        cap++;
    j->send = calloc(cap, sizeof(char *));
    j->fields = calloc(r->h.nheaders + 1, sizeof(char *));
    j->next = w->bg_jobs;
    if (w->bg_jobs)
        w->bg_jobs->prev = j;
    w->bg_jobs = j;
    if (!j->send || !j->fields || !rq.data) {
        buf_free(&rq);
        edge_cache_obj_release_refresh(o);
        bg_free(j);
        return;
    }
    char *line = strstr(buf_head(&rq), "\r\n");     /* past the request line */
    for (char *e; line && (e = strstr(line + 2, "\r\n")) && e > line + 2 && j->nsend < cap - 1; line = e) {
        *e = '\0';
        if (strncasecmp(line + 2, "host: ", 6) == 0)
            snprintf(host, sizeof(host), "%s", line + 8);
        else if ((j->send[j->nsend] = strdup(line + 2)))
            j->nsend++;
    }
    buf_free(&rq);
    for (size_t i = 0; i < r->h.nheaders; i++) {
        const struct http_header *h = &r->h.headers[i];
        if (asprintf(&j->fields[j->nfields], "%.*s: %.*s", (int)h->name.n, h->name.p, (int)h->value.n,
                     h->value.p) >= 0)
            j->nfields++;
    }
    char target[2048];
    snprintf(target, sizeof(target), "%.*s", (int)MIN(r->h.target.n, sizeof(target) - 1), r->h.target.p);
    struct httpc_request req = {
        .method = "GET",
        .addr = srv->addr,
        .host = host,
        .target = target,
        .headers = (const char *const *)j->send,
        .tls = tctx != NULL,
        .tls_ctx = tctx,
        .sni = b->tls_sni ? b->tls_sni : "",     /* as the proxy's own connections */
        .timeout_ms = (uint32_t)MIN(b->response_timeout_ms, (uint64_t)UINT32_MAX),
    };
    j->call = httpc_send(w->bg_client, &req, bg_done, j);
    if (!j->call) {
        edge_cache_obj_release_refresh(o);
        bg_free(j);
    }
}

void edge__bg_stop(struct edge_worker *w)
{
    while (w->detached) {
        struct proxy_req *pr = w->detached;
        edge__drop_upstream(pr);
        edge__finish_inflight(pr);
        edge__pr_free(pr);
    }
    while (w->bg_jobs) {
        struct bg_refresh *j = w->bg_jobs;
        if (j->call)
            httpc_cancel(j->call);
        bg_free(j);
    }
    httpc_free(&w->bg_client);
}


/* ---- answering from a response another request is storing ---- */

static void stream_pump(struct proxy_req *pr);

static void stream_wake(void *arg)
{
    struct edge_cache_waiter *wt = arg;
    struct proxy_req *pr = wt->data;
    free(wt);
    if (!pr)
        return;     /* its client went away meanwhile */
    pr->c.waiter = NULL;
    stream_pump(pr);
}

static void stream_drain(struct httpd_req *r, void *arg)
{
    struct proxy_req *pr = arg;
    UNUSED(r);
    if (!pr->c.pumping && !pr->c.waiter)
        stream_pump(pr);
}

static void stream_finish(struct proxy_req *pr, bool whole)
{
    struct httpd_req *r = pr->r;
    httpd_req_on_abort(r, NULL, NULL);
    httpd_req_on_drain(r, NULL, NULL);
    if (!whole) {
        /* the fetch broke off after the head was sent: the client sees the
         * connection close short of Content-Length, as from a proxied fetch */
        edge__count_request(pr->gen, pr->route, 502);
        edge__pr_free(pr);
        httpd_req_abort(r);
        return;
    }
    edge__access_log(pr, pr->status);
    edge__count_request(pr->gen, pr->route, pr->status);
    edge__pr_free(pr);
    httpd_respond_finish(r);
}

/* Sends what the stream has that the client has not had yet, as fast as the
 * client takes it; then waits for more, or finishes. */
static void stream_pump(struct proxy_req *pr)
{
    pr->c.pumping = true;
    for (;;) {
        if (httpd_req_pending(pr->r) > PAUSE_BYTES) {
            pr->c.pumping = false;
            return;     /* stream_drain goes on */
        }
        const char *p;
        size_t n;
        enum edge_cache_stream_rc rc = edge_cache_stream_next(pr->c.st, pr->c.st_off, &p, &n, NULL);
        if (rc == CACHE_STREAM_WAIT) {
            struct edge_cache_waiter *wt = calloc(1, sizeof(*wt));
            if (!wt) {
                stream_finish(pr, false);
                return;
            }
            wt->loop = &pr->w->loop;
            wt->cb = stream_wake;
            wt->arg = wt;
            wt->data = pr;
            rc = edge_cache_stream_next(pr->c.st, pr->c.st_off, &p, &n, wt);
            if (rc == CACHE_STREAM_WAIT) {
                pr->c.waiter = wt;
                pr->c.pumping = false;
                return;
            }
            free(wt);
        }
        if (rc == CACHE_STREAM_DONE || rc == CACHE_STREAM_FAILED) {
            stream_finish(pr, rc == CACHE_STREAM_DONE);
            return;
        }
        if (rc == CACHE_STREAM_DATA) {
            n = MIN(n, (size_t)PAUSE_BYTES);
            pr->c.st_off += n;
            pr->bytes += n;
            httpd_respond_write(pr->r, p, n);
        }
    }
}

/* A request that waited for another's fetch answers from its response while it
 * arrives (X-Cache: HIT: this request made no origin fetch). */
static void stream_start(struct proxy_req *pr, struct edge_cache_stream *st)
{
    pr->c.st = st;
    pr->c.st_off = 0;
    if (!pr->request_id[0])
        snprintf(pr->request_id, sizeof(pr->request_id), "%016llx", (unsigned long long)cairn_rand64());
    pr->c.xcache = "HIT";
    pr->status = 200;
    cache_count(pr, CR_HIT);
    metric_add(pr->w->e->m_cache_bytes, (double)edge_cache_stream_length(st));
    edge_cache_stream_head(pr->r, st, "HIT", pr->request_id);
    httpd_req_on_drain(pr->r, stream_drain, pr);
    stream_pump(pr);
}

/* The fetch this request waited for is over: look again (a hit now, usually).
 * Runs on the waiting request's own thread; arg is the waiter. */
static void coalesce_wake(void *arg)
{
    struct edge_cache_waiter *wt = arg;
    struct proxy_req *pr = wt->data;
    free(wt);
    if (!pr)
        return;     /* it gave up meanwhile */
    pr->c.waiter = NULL;
    loop_timer_stop(&pr->timer);
    struct edge_cache_stream *st = edge_cache_stream_find(pr->gen->routes[pr->route->index].cache, pr->c.key,
                                                pr->c.keylen, pr->r);
    if (st) {
        stream_start(pr, st);
        return;
    }
    if (!edge__cache_lookup_or_pass(pr))
        edge__proxy_go(pr);
}

static void coalesce_timeout(struct loop_timer *t)
{
    struct proxy_req *pr = t->data;
    struct edge_cache_store *cs = pr->gen->routes[pr->route->index].cache;
    if (!edge_cache_waiter_cancel(cs, pr->c.waiter)) {
        pr->c.waiter->data = NULL;    /* the wake-up is on its way: it frees the waiter */
        pr->c.waiter = NULL;
    } else {
        free(pr->c.waiter);
        pr->c.waiter = NULL;
    }
    if (!edge__cache_lookup_or_pass(pr))
        edge__proxy_go(pr);
}

/* The cache's part of a request on a cached route. Returns true when the
 * request was answered from the cache or waits for another request's fetch
 * (pr is not the caller's to use then). */
bool edge__cache_lookup_or_pass(struct proxy_req *pr)
{
    struct httpd_req *r = pr->r;
    struct edge_cache_store *cs = pr->gen->routes[pr->route->index].cache;
    bool get = strv_eq_cstr(r->h.method, "GET"), head = r->h.is_head;
    pr->c.keylen = edge_cache_key(r, pr->c.key, sizeof(pr->c.key));
    if (!pr->c.keylen) {
        pr->c.xcache = "PASS";
        cache_count(pr, CR_PASS);
        return false;
    }
    if (!get && !head) {
        pr->c.xcache = "PASS";
        pr->c.invalidate = !pr->idempotent || strv_eq_cstr(r->h.method, "DELETE") ||
                         strv_eq_cstr(r->h.method, "PUT");
        cache_count(pr, CR_PASS);
        return false;
    }
    struct edge_cache_cc rcc;
    edge_cache_cc_parse(r->h.headers, r->h.nheaders, &rcc);
    if (rcc.no_store) {
        pr->c.xcache = "PASS";
        cache_count(pr, CR_PASS);
        return false;
    }
    bool range = httpd_req_header(r, "range") != NULL;
    struct edge_cache_obj *o = edge_cache_lookup(cs, pr->c.key, pr->c.keylen, r);
    if (o && edge_cache_obj_fresh(o, &rcc, time(NULL))) {
        pr->c.xcache = "HIT";
        pr->status = 200;
        edge__access_log(pr, 200);
        edge__count_request(pr->gen, pr->route, 200);
        cache_count(pr, CR_HIT);
        char rid[40];
        uint64_t r1 = cairn_rand64();
        snprintf(rid, sizeof(rid), "%016llx", (unsigned long long)r1);
        metric_add(pr->w->e->m_cache_bytes, (double)edge_cache_obj_body_len(o));
        edge__pr_free(pr);
        edge_cache_serve(r, o, "HIT", rid);
        edge_cache_obj_put(o);
        return true;
    }
    if (o && get && !range && !rcc.no_cache && edge_cache_obj_stale_while_revalidate(o, time(NULL))) {
        /* stale-while-revalidate: answer now, refresh behind */
        if (edge_cache_obj_claim_refresh(o))
            bg_refresh_start(pr, o);
        pr->c.xcache = "STALE";
        pr->status = 200;
        edge__access_log(pr, 200);
        edge__count_request(pr->gen, pr->route, 200);
        cache_count(pr, CR_STALE);
        char rid[40];
        snprintf(rid, sizeof(rid), "%016llx", (unsigned long long)cairn_rand64());
        metric_add(pr->w->e->m_cache_bytes, (double)edge_cache_obj_body_len(o));
        edge__pr_free(pr);
        edge_cache_serve(r, o, "STALE", rid);
        edge_cache_obj_put(o);
        return true;
    }
    if (rcc.only_if_cached) {
        if (o)
            edge_cache_obj_put(o);
        edge__pr_free(pr);
        edge__simple_reply(r, 504, "not in the cache (only-if-cached)");
        return true;
    }
    if (range) {
        /* ranges are served from stored objects only; otherwise passed on whole */
        if (o)
            edge_cache_obj_put(o);
        pr->c.xcache = "PASS";
        cache_count(pr, CR_PASS);
        return false;
    }
    if (o && edge_cache_obj_usable_on_error(o, (int64_t)(pr->route->cache_grace_ms / 1000), time(NULL))) {
        edge_cache_obj_get(o);
        pr->c.stale = o;
    }
    pr->c.store = get ? cs : NULL;
    if (!o && get && !pr->c.coalesced) {
        struct edge_cache_waiter *wt = calloc(1, sizeof(*wt));
        if (wt) {
            wt->loop = &pr->w->loop;
            wt->cb = coalesce_wake;
            wt->arg = wt;
            wt->data = pr;
            if (edge_cache_coalesce(cs, pr->c.key, pr->c.keylen, wt)) {
                free(wt);
                pr->c.filling = true;
            } else {
                /* another request is fetching this: wait for it (bounded) */
                pr->c.waiter = wt;
                pr->c.coalesced = true;
                metric_inc(pr->w->e->m_coalesced);
                pr->timer.cb = coalesce_timeout;
                loop_timer_start(&pr->w->loop, &pr->timer, COALESCE_WAIT_MS);
                httpd_req_on_abort(r, edge__pr_abort, pr);
                return true;
            }
        }
    }
    if (o && edge_cache_obj_has_validators(o) && get) {
        pr->c.reval = o;
        pr->c.xcache = "EXPIRED";
        cache_count(pr, CR_EXPIRED);
    } else {
        if (o)
            edge_cache_obj_put(o);
        pr->c.xcache = o ? "EXPIRED" : "MISS";
        cache_count(pr, o ? CR_EXPIRED : CR_MISS);
    }
    return false;
}
