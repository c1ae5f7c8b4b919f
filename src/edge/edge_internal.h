/* edge_internal.h - the edge role's runtime, shared by its source files.
 *
 * Owns: struct edge (one per service: caches, metrics, the health checker, the DNS
 * resolver of dns: backends, the current generation), struct edge_gen (an
 * immutable configuration and what is built from it: listener contexts with TLS,
 * per-route rate limiters; reference-counted by connections, workers and the edge),
 * and struct edge_worker (one per thread: its loop, httpd worker, upstream pools,
 * queue, tunnels, L4 listeners).
 * Files: edge_main.c (start, reload, admin API, stop), edge_proxy.c (routing, access
 * control, balancing, proxying, retries, the cache's use), edge_health.c (active
 * checks through core/health), edge_l4.c and edge_tunnel.c (TCP mode, Upgrade),
 * edge_dns.c (servers from DNS), edge_cache.c (the store), edge_config.c.
 * Threads: a worker touches only its own edge_worker and what its generation
 * holds; server state shared across threads (health, ejection, in-flight, panic) is
 * atomics in edge_conf's structures; the generation is switched on worker 0 and
 * handed to the others through their loops' post queues. */
#ifndef CAIRN_EDGE_INTERNAL_H
#define CAIRN_EDGE_INTERNAL_H

#include "edge_conf.h"
#include "core/service.h"
#include "core/httpc.h"
#include "core/httpd.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/tls.h"
#include "core/tunnel.h"

#include <pthread.h>

struct edge;
struct edge_worker;
struct edge_gen;

/* One listener's httpd configuration and context. */
struct edge_lctx {
    struct edge *e;
    struct edge_gen *gen;
    const struct edge_listener *l;
    struct httpd_conf hconf;
    struct tls_ctx *tls;
};

/* Rate limiting: per route, a set-associative table of token buckets shared by
 * all threads, one spinlock per set. Bounded memory: the least recently used
 * bucket of a set is replaced. */
#define RL_SETS 4096
#define RL_WAYS 4
struct rl_entry {
    uint64_t key;
    double tokens;
    uint64_t last_ms;
};
struct rl_set {
    int lock;
    struct rl_entry e[RL_WAYS];
};

struct edge_cache_store;

struct edge_route_rt {
    struct rl_set *rl;
    struct edge_cache_store *cache;      /* owned by struct edge: caches outlive reloads */
    struct metric *cache_m[5];      /* edge_cache_requests_total by result, looked up once */
    struct metric *req[6];          /* by status class */
};

/* A configuration generation: an immutable edge_conf and everything built from
 * it. Reload makes a new one; the old one lives on, reference-counted, while any
 * connection accepted under it is open (each holds a reference, as does each
 * worker's current pointer and the edge's). */
struct edge_gen {
    struct edge *e;
    int refs;
    unsigned id;
    struct stack stack;             /* owner of conf for reloaded generations */
    bool owns_stack;
    const struct edge_conf *conf;
    struct edge_lctx lctx[EDGE_MAX_LISTEN];
    struct edge_route_rt *routes;
    struct tls_ctx **backend_tls;   /* client contexts, by backend index (NULL: plain) */
};

/* Open connections per client IP, shared by all threads (and all generations:
 * connections outlive reloads). Set-associative like the rate limiter; a full
 * set admits the connection uncounted rather than refuse it. */
#define CL_SETS 4096
#define CL_WAYS 4
struct cl_set {
    int lock;
    uint64_t key[CL_WAYS];
    int count[CL_WAYS];
};

struct edge_dns;

#define EDGE_MAX_CACHES 64

struct edge {
    const struct service *svc;
    struct otlp_exporter *otlp;     /* spans to the trace store, or NULL */
    struct cl_set *conn_limits;
    struct edge_cache_store *caches[EDGE_MAX_CACHES];
    size_t ncaches;
    struct metric_family *m_cache;  /* edge_cache_requests_total{cache,result} */
    struct edge_dns *dns;           /* resolver for DNS backends, or NULL */
    struct edge_gen *gen;           /* current; changed on worker 0 only */
    unsigned next_gen;
    struct edge_worker *workers;
    int nworkers;
    struct service_ctx *sc;         /* the skeleton running this edge */
    struct health_checker health;   /* active checks (worker 0's loop) */
    bool health_inited;
    /* metrics */
    struct metrics_registry *reg;
    struct metric_family *m_requests;       /* route, backend, code */
    struct metric_family *m_server_up;      /* backend, server */
    struct metric_family *m_server_req;     /* backend, server */
    struct metric_family *m_backend_panic;  /* backend */
    struct metric *m_duration;
    struct metric *m_retries, *m_upstream_connects, *m_bytes_out, *m_denied, *m_limited;
    struct metric *m_upstream_errors;
    struct metric *m_coalesced;
    struct metric *m_cache_bytes;
};

struct proxy_req;

struct l4_listener;
struct tunnel;
struct l4_conn;
struct bg_refresh;

struct edge_worker {
    struct edge *e;
    void *re_md;                    /* pcre2 match data for path_regex routes, made once */
    struct l4_listener *l4;         /* this worker's TCP-mode listeners */
    struct tunnel_set tunnels;      /* open tunnels (closed at shutdown) */
    struct httpc *bg_client;        /* background cache revalidations */
    struct bg_refresh *bg_jobs;
    struct proxy_req *detached;     /* fetches whose client left, finished for others */
    struct l4_conn *l4_pending;     /* L4 connections still connecting */
    struct edge_gen *gen;           /* the generation new requests use (a reference) */
    int index;
    struct loop loop;
    struct httpd_worker hw;
    struct loop_timer deadline;
    struct httpc *up;               /* connections to the servers */
    struct httpc_pool *pools;       /* their idle ones, per server (flattened) */
    size_t *server_base;            /* backend index -> first slot in pools[] */
    size_t nslots;
    unsigned *rr;                   /* round robin position per backend */
    struct proxy_req *queue_head, *queue_tail;  /* waiting for a server below max_conns */
    struct loop_timer queue_poll;   /* retries the queue while it is not empty */
    struct loop_defer queue_defer;
};

int edge__gen_routes_init(struct edge_gen *g);
void edge__proxy(struct httpd_req *r, void *arg);
void edge__worker_free_pools(struct edge_worker *w);
void edge__queue_flush(struct edge_worker *w);
int edge__worker_pools_init(struct edge_worker *w, const struct edge_conf *c);
int edge__health_start(struct edge_gen *g);
void edge__health_stop(struct edge_gen *g);
int edge__l4_use_gen(struct edge_worker *w, struct edge_gen *g);
void edge__l4_close_all(struct edge_worker *w);
void edge__bg_stop(struct edge_worker *w);
int edge__dns_init(struct edge *e, struct edge_conf *conf);
int edge__dns_start(struct edge *e);
void edge__dns_update(struct edge *e, const struct edge_conf *conf);
void edge__dns_stop(struct edge *e);
void edge__dns_apply(struct edge *e, struct edge_conf *conf);
int edge__regenerate(struct edge *e, const char *why);
bool edge__backend_all_down(const struct edge_backend *b, uint64_t now);
struct edge_server *edge__pick(struct edge_backend *b, struct edge_worker *w, const uint64_t *tried,
                               struct strv key);
int edge__conn_count(struct edge *e, const struct sockaddr *sa, int delta);

#endif
