/* edge_conf.h - the edge role's configuration types and its parser.
 *
 * Internal to the edge role (edge.h is its public face). The configuration is parsed into immutable
 * structures (struct edge_conf); the few fields that change at run time (server
 * health, in-flight counts, ejection) are atomics in struct edge_server, shared by
 * every worker thread and the health checker.
 */
#ifndef CAIRN_EDGE_CONF_H
#define CAIRN_EDGE_CONF_H

#include "edge.h"
#include "core/otlp.h"
#include "core/config.h"
#include "core/health.h"
#include "core/net.h"
#include "core/stack.h"

#define EDGE_MAX_LISTEN 16
#define EDGE_MAX_SERVERS 256
#define EDGE_RING_POINTS 160        /* virtual nodes per unit of weight on the hash ring */

enum edge_balance { BAL_ROUND_ROBIN, BAL_LEAST_CONN, BAL_RANDOM2, BAL_HASH };
enum edge_hash_key { HASH_CLIENT_IP, HASH_HEADER, HASH_COOKIE };

struct edge_cidrs {
    struct net_cidr *v;
    size_t n;
};

struct edge_cert {
    char *cert, *key;
};

struct edge_backend;

struct edge_listener {
    struct net_addr addr;
    bool tcp;                       /* L4 mode: bytes to backend, no HTTP */
    char *backend_name;             /* tcp mode */
    struct edge_backend *backend;
    bool tls;
    bool self_signed;               /* make the certificate files at start when missing */
    struct edge_cert *certs;
    size_t ncerts;
    struct edge_cidrs allow, deny;
};

struct edge_kv {
    char *name, *value;
};

struct edge_header_ops {
    struct edge_kv *set;
    size_t nset;
    char **remove;
    size_t nremove;
};

struct edge_route {
    char *host;                     /* NULL: any; "*.example.com": wildcard */
    char *path;                     /* prefix, or exact when path_exact, or a regex */
    bool path_exact;
    void *path_re;                  /* pcre2_code of path_regex (fully anchored), or NULL */
    struct edge_kv *headers;        /* all must match (value "*" = present) */
    size_t nheaders;
    char *backend_name;
    struct edge_backend *backend;
    struct edge_cidrs allow, deny;
    bool rate_limit;
    double rps, burst;
    char *rl_header;                /* key: this header's value; NULL: client IP */
    bool redirect_https;
    struct edge_header_ops req_ops, resp_ops;
    /* cache: (the CDN tier) */
    bool cache;
    uint64_t cache_memory;          /* byte budget of the route's store */
    uint64_t cache_max_object;      /* larger responses are passed, not stored */
    double cache_heuristic;         /* fraction of (Date - Last-Modified), RFC 9111 4.2.2 */
    uint64_t cache_grace_ms;        /* serve stale this long when the origin fails */
    bool cache_compress;            /* gzip/br variants of compressible objects */
    char *cache_disk;               /* directory of the disk tier, or NULL */
    uint64_t cache_disk_size;
    size_t index;                   /* position, for per-thread state */
    char label[64];                 /* for metrics and logs */
};

/* Runtime state shared by threads: atomics only. */
struct edge_server {
    struct net_addr addr;
    char name[NET_ADDRSTRLEN];
    bool named;                     /* given as name:port: looked up when a configuration starts */
    unsigned weight;
    struct edge_backend *backend;
    int up;                         /* health verdict (1 at start; the check's verdict after) */
    int admin_drain;                /* set by the admin API */
    uint64_t ejected_until_ms;      /* passive outlier ejection */
    int inflight;
    int consecutive_fail;
    int eject_capped;               /* ejection refused by max_percent (logged once) */
    uint64_t recovered_ms;          /* when it came back, for slow start */
    uint64_t requests, failures;
    struct health_watch watch;      /* its check (core/health; worker 0 only) */
};

struct edge_backend {
    char *name;
    struct edge_server *servers;
    size_t nservers;
    enum edge_balance balance;
    enum edge_hash_key hash_key;
    char *hash_name;                /* header or cookie name */
    struct health_check_conf health; /* to the server's own address; tls and client
                                       certificate follow the backend's tls: */
    /* servers found in DNS instead of listed: A/AAAA of name on port, or SRV */
    bool dns;
    bool dns_srv;
    char *dns_name;
    uint16_t dns_port;
    uint64_t dns_interval_ms;
    bool dns_have_resolver;
    struct net_addr dns_resolver;
    int max_conns;                  /* requests in flight per server; 0 = unlimited */
    int queue_size;                 /* requests waiting for a free server, per thread */
    uint64_t queue_timeout_ms;
    bool tls;                       /* speak TLS to the servers */
    bool tls_verify;
    char *tls_ca, *tls_sni, *tls_cert, *tls_key;
    int retries;
    int retry_percent, retry_min;   /* budget: retries in progress <= max(min, percent% of requests in progress) */
    int retries_active;             /* runtime (atomic) */
    uint64_t connect_timeout_ms, response_timeout_ms, idle_timeout_ms;
    int eject_after;                /* consecutive failures before ejection; 0 = off */
    uint64_t eject_ms;
    int eject_max_percent;          /* never more than this share of servers ejected at once */
    bool all_down_fail;             /* when_all_down: fail (503) instead of panic (serve all) */
    int panic;                      /* runtime (atomic): no server healthy, requests go to all */
    uint64_t slow_start_ms;
    uint32_t *ring;                 /* sorted hash points (hash balance) */
    uint16_t *ring_server;
    size_t nring;
    size_t index;
};

struct edge_conf {
    struct edge_listener listen[EDGE_MAX_LISTEN];
    size_t nlisten;
    bool have_admin;
    struct net_addr admin;
    int threads;
    bool short_slices;              /* workers ask for the kernel's shortest slice */
    bool access_log;
    struct otlp_settings tracing;   /* spans to the trace store */
    struct edge_route *routes;
    size_t nroutes;
    struct edge_backend *backends;
    size_t nbackends;
    uint64_t header_timeout_ms, idle_timeout_ms, body_timeout_ms;
    uint64_t max_body;
    size_t max_header_bytes, max_headers;
    size_t max_conns;
    int max_conns_per_ip;
};

int edge__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
int edge__build_ring(struct edge_backend *b);
void edge__free_conf(void *conf);
/* Looks up the servers given by name (name:port), when a configuration is about to
 * run (start, reload): 0, or -ENOENT with each name that does not resolve in errs. */
int edge__resolve_servers(struct edge_conf *c, struct cfg_errors *errs);
bool edge__cidrs_allow(const struct edge_cidrs *allow, const struct edge_cidrs *deny,
                       const struct sockaddr *sa);
uint32_t edge__hash(const void *p, size_t n);

#endif
