/* dns_internal.h - role "dns": configuration, generations, workers, GSLB members.
 *
 * Owns: struct dns_conf (parsed by dns_config.c), struct dns_gen (a configuration
 * with its loaded zones and GSLB runtime; reference-counted by workers and zone
 * transfers, freed on worker 0's loop), struct dns_worker (one per thread: its
 * loop, UDP/TCP sockets, RRL table, batch buffers), struct dns_member (a GSLB
 * member, shared by every name and generation that names it with the same check,
 * watching a core/health target), struct dns_svc (the service).
 * Files: dns_main.c (start, reload, admin API, stop), dns_server.c (sockets, query
 * loop, RRL, AXFR/IXFR, NOTIFY), dns_wire.c and dns_zone.c (the wire format and
 * zone files), dns_gslb.c (members and answer selection), dns_config.c.
 * Threads: workers read their generation and members' states (relaxed atomics)
 * only; reloads, health checks and NOTIFY run on worker 0 (the main thread). */
#ifndef CAIRN_DNS_INTERNAL_H
#define CAIRN_DNS_INTERNAL_H

#include "core/buf.h"
#include "dns.h"
#include "dns_wire.h"
#include "core/health.h"
#include "core/httpc.h"
#include "core/httpd.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/stack.h"

#include <pthread.h>

#define DNS_MAX_LISTEN 8

/* ---- configuration ---- */

struct dns_member_conf {
    char *address;              /* as written */
    int family;                 /* AF_INET or AF_INET6 */
    uint8_t ip[16];
    unsigned weight;
};

struct dns_pool_conf {
    char *region;
    struct net_cidr *networks;
    size_t nnetworks;
    char (*countries)[3];       /* ISO 3166 codes, upper case (with geoip:) */
    size_t ncountries;
    char (*continents)[3];      /* AF AN AS EU NA OC SA */
    size_t ncontinents;
    struct dns_member_conf *members;
    size_t nmembers;
};

enum dns_policy { DNS_POLICY_FAILOVER, DNS_POLICY_WEIGHTED, DNS_POLICY_NEAREST };
enum dns_all_down { DNS_DOWN_ANSWER, DNS_DOWN_NODATA, DNS_DOWN_SERVFAIL };

struct dns_gslb_conf {
    char *name;                 /* text */
    uint8_t lname[DNS_NAME_MAX];
    uint8_t lnamelen;
    uint32_t ttl;
    enum dns_policy policy;
    enum dns_all_down all_down;
    int max_answers;
    bool have_health;
    struct health_check_conf health; /* with its own port: a member is an address */
    struct dns_pool_conf *pools;
    size_t npools;
};

struct dns_zone_conf {
    char *origin;
    char *file;                 /* resolved path, or NULL for a generated zone */
    struct net_addr *secondaries;   /* NOTIFY targets, also allowed to transfer */
    size_t nsecondaries;
    struct net_cidr *allow_transfer;
    size_t nallow;
};

struct dns_rrl_conf {
    bool enabled;
    uint32_t rate;              /* responses per second per bucket */
    uint32_t slip;              /* every slip-th limited response goes out truncated; 0 = none */
    int v4_prefix, v6_prefix;
    uint32_t table_size;
    struct net_cidr *exempt;
    size_t nexempt;
};

struct dns_conf {
    struct net_addr listen[DNS_MAX_LISTEN];
    size_t nlisten;
    struct net_addr admin;
    bool have_admin;
    int threads;
    struct dns_zone_conf *zones;
    size_t nzones;
    struct dns_gslb_conf *gslb;
    size_t ngslb;
    struct dns_rrl_conf rrl;
    uint16_t edns_size;
    uint64_t tcp_idle_ms;
    uint32_t tcp_max_conns;
    char *geoip_path;           /* geoip: a MaxMind database (GeoLite2/GeoIP2 Country or City) */
    struct MMDB_s *geoip;       /* open, read-only: shared by every worker */
};

int dns__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void dns__free_conf(void *conf);

/* ---- health-checked members (shared by every GSLB name and generation) ---- */

struct dns_svc;

struct dns_member {
    char key[512];              /* address and check: equal keys share one member */
    char address[64];
    int family;
    uint8_t ip[16];
    bool checked;               /* has a health check at all */
    struct health_watch watch;  /* its check, when checked (core/health) */
    int up;                     /* -1 unknown, 0 down, 1 up (atomic): the check's verdict */
    uint64_t changed_ms;        /* wall clock of the last transition */
    int refs;                   /* generations using it (main thread) */
    struct dns_svc *s;
    struct dns_member *next;
};

struct dns_pool_rt {
    const struct dns_pool_conf *conf;
    struct dns_member **members;
    struct metric **m_up;
};

struct dns_gslb_rt {
    const struct dns_gslb_conf *conf;
    struct dns_pool_rt *pools;
};

/* ---- generations: what a reload swaps atomically ---- */

struct dns_gen {
    int refs;
    unsigned id;
    struct dns_svc *s;
    struct dns_conf *conf;
    struct stack stack;         /* owns conf after a reload */
    bool owns_stack;
    struct dns_zone **zones;    /* in the order of conf->zones */
    size_t nzones;
    struct dns_gslb_rt *gslb;
    size_t ngslb;
    struct dns_view view;
};

/* ---- workers ---- */

struct dns_rrl_entry {
    uint64_t key;
    int64_t tokens;             /* milli-responses */
    uint64_t last_ms;
    uint32_t limited;
};

struct dns_tcp_conn;

struct dns_worker {
    struct dns_svc *s;
    int index;
    struct loop loop;
    struct dns_gen *gen;
    struct dns_view view;       /* gen's view with this worker as the GSLB argument */
    struct loop_io udp_io[DNS_MAX_LISTEN];
    struct loop_io tcp_io[DNS_MAX_LISTEN];
    int nsock;
    struct dns_tcp_conn *conns;
    uint32_t nconns;
    struct dns_rrl_entry *rrl;
    uint32_t rrl_size;
    uint64_t rng;
    uint32_t rr;                /* rotation of GSLB answers */
    uint8_t *tcp_out;           /* 65535-byte scratch */
    bool stopping;
    /* batch I/O */
    struct udp_batch *batch;
    /* metrics, looked up once */
    struct metric *m_q[2][16];
    struct metric *m_rcode[24];
    struct metric *m_rrl[2];
    struct metric *m_dur;
};

struct dns_svc {
    const struct service *svc;
    struct dns_gen *gen;        /* current (main thread) */
    unsigned next_gen;
    struct dns_worker *workers;
    int nworkers;
    struct metrics_registry *reg;   /* the skeleton's */
    struct health_checker health;   /* GSLB members' checks, on the main loop */
    bool health_inited;
    bool final;                 /* every loop has stopped: generations are freed at once */
    struct dns_member *members;
    int pending_switch;         /* workers that have not taken the new generation yet */
    /* NOTIFY */
    int notify_fd4, notify_fd6;
    struct loop_io notify_io4, notify_io6;
    struct dns_notify *notifies;
    /* metrics */
    struct metric_family *m_member_up;
    struct metric_family *m_serial, *m_records, *m_reloads, *m_notify, *m_axfr, *m_queries,
        *m_rcodes, *m_rrl;
    struct metric *m_tcp_conns;
    struct metric *m_dur;
};

/* dns_gslb.c */
int dns__gslb_build(struct dns_svc *s, struct dns_gen *g, char *err, size_t errlen);
void dns__gslb_release(struct dns_svc *s, struct dns_gen *g);
void dns__gslb_select(void *arg, int idx, uint16_t qtype, const struct dns_query *q,
                      const struct sockaddr *peer, struct dns_gslb_answer *out);
/* True once every checked member has its first verdict. */
bool dns__health_settled(struct dns_svc *s);
void dns__health_stop_all(struct dns_svc *s);
void dns__gslb_json(struct dns_svc *s, struct buf *b);

/* dns_server.c */
int dns__worker_open(struct dns_worker *w);
int dns__worker_start(struct dns_worker *w);
void dns__worker_close(struct dns_worker *w);
void dns__notify_start(struct dns_svc *s, struct dns_gen *g, struct dns_gen *old);
void dns__notify_stop(struct dns_svc *s);

void dns__gen_unref(struct dns_gen *g);

#endif
