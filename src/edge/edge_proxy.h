/* edge_proxy.h - a proxied request and its upstream connection, shared by the
 * proxy (edge_proxy.c: routing, balancing, forwarding, retries) and the cache's
 * decisions for it (edge_proxy_cache.c). Internal to the edge role.
 *
 * The server's side of a request is a streamed call of core/httpc on a pooled
 * connection of the worker's (one pool per server).
 *
 * Threads: a proxy_req and its call live on one worker's loop from the request
 * to its end (a detached fetch, whose client left, finishes there too).
 */
#ifndef CAIRN_EDGE_PROXY_H
#define CAIRN_EDGE_PROXY_H

#include "core/trace.h"
#include "edge_internal.h"
#include "edge_cache.h"
#include "core/http1.h"

#define PAUSE_BYTES (256u << 10)
#define MAX_IDLE_PER_SERVER 64

enum body_mode { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };

struct proxy_req;

/* A request's cache state: set by edge__cache_lookup_or_pass, read by the proxy
 * where the response arrives (storing, invalidation, stale answers). */
struct edge_cache_req {
    struct edge_cache_store *store; /* the route's store when this GET/HEAD may be stored */
    const char *xcache;             /* X-Cache value to send, or NULL */
    struct edge_cache_obj *reval;   /* stale object being revalidated */
    struct edge_cache_obj *stale;   /* stale object allowed to stand in if the origin fails */
    struct edge_cache_fill *fill;
    bool invalidate;                /* unsafe method: purge the key after success */
    char *inv_loc[2];               /* its Location and Content-Location, copied */
    bool filling;                   /* this request fetches for coalesced waiters */
    bool coalesced;                 /* it waited once already: no second wait */
    struct edge_cache_waiter *waiter;   /* while waiting for another request's fetch or its data */
    struct edge_cache_stream *st;   /* the response another request is storing, sent from there */
    size_t st_off;                  /* how much of it was sent */
    bool pumping;
    char key[1100];
    size_t keylen;
};

struct proxy_req {
    struct httpd_req *r;
    const struct edge_listener *listener;
    struct edge_worker *w;
    struct edge_gen *gen;
    const struct edge_route *route;
    struct edge_backend *b;
    struct edge_server *srv;
    struct httpc_call *call;        /* the exchange with the server, while there is one */
    struct loop_timer timer;        /* response timeout */
    struct buf req;                 /* the request as sent upstream */
    int attempts;
    bool idempotent, head_sent, paused;
    bool upgrade;                   /* Connection: upgrade + Upgrade were forwarded */
    bool retrying;                  /* counted in the backend's retries_active */
    bool dead_pooled;               /* the last attempt met a pooled connection already closed */
    bool queued;
    struct proxy_req *qnext, *qprev;
    struct edge_cache_req c;        /* what the cache decided for it (edge_proxy_cache.c) */
    bool detached;                  /* the client left; fetching on for others (r is NULL) */
    struct proxy_req *dnext, *dprev;
    time_t req_wall;
    uint64_t tried[4];              /* bitmap of servers tried (up to 256) */
    uint64_t t_start, t_connect, t_first;
    uint64_t t_queued, queue_ns;    /* time spent waiting in the queue */
    uint64_t bytes;
    int status;
    char request_id[40];
    /* tracing: the request's server span, and the client span of the attempt */
    struct trace_ctx tc, client_tc;
    uint8_t tparent[8];
    bool tinit, thas_parent, tclient;
    const char *fail_why;                       /* why the edge answered itself (fail()) */
    size_t tp_off;                              /* where req holds the attempt's traceparent (0: none) */
    uint64_t t_attempt;                         /* monotonic start of the last attempt */
};

enum cache_result { CR_HIT, CR_MISS, CR_EXPIRED, CR_PASS, CR_STALE };

#define COALESCE_WAIT_MS 10000

/* ---- background revalidation (stale-while-revalidate) ---- */

struct bg_refresh {
    struct edge_worker *w;
    struct edge_cache_store *cs;
    struct edge_cache_obj *o;
    struct httpc_call *call;
    char **send;                    /* the fields sent, "Name: value", NULL-terminated */
    size_t nsend;
    char **fields;                  /* the client's fields, "Name: value", for storing */
    size_t nfields;
    time_t req_time;
    struct bg_refresh *prev, *next;
};

/* edge_proxy.c */
void edge__simple_reply(struct httpd_req *r, int status, const char *msg);
void edge__count_request(struct edge_gen *g, const struct edge_route *rt, int status);
struct strv edge__hash_key_of(const struct edge_backend *b, struct httpd_req *r, char *ip, size_t iplen);
void edge__pr_free(struct proxy_req *pr);
void edge__server_result(struct proxy_req *pr, bool ok);
void edge__access_log(struct proxy_req *pr, int status);
void edge__finish_inflight(struct proxy_req *pr);
void edge__drop_upstream(struct proxy_req *pr);
void edge__pr_abort(struct httpd_req *r, void *arg);
void edge__build_request(struct proxy_req *pr, const struct edge_listener *l, struct buf *b,
                          const struct edge_cache_obj *refresh);
void edge__proxy_go(struct proxy_req *pr);

/* edge_proxy_cache.c */
void edge__serve_stale(struct proxy_req *pr);
void edge__cache_invalidate(struct proxy_req *pr);
void edge__cache_on_head(struct proxy_req *pr, const struct http_response *resp);
void edge__serve_revalidated(struct proxy_req *pr, const struct http_response *resp);
bool edge__cache_lookup_or_pass(struct proxy_req *pr);

#endif
