/* prom_internal.h - role "metrics": configuration, scrape targets, the service. */
#ifndef CAIRN_PROM_INTERNAL_H
#define CAIRN_PROM_INTERNAL_H

#include "httpc.h"
#include "httpd.h"
#include "loop.h"
#include "metrics.h"
#include "prom.h"
#include "prom_relabel.h"
#include "stack.h"
#include "tsdb.h"

#define PROM_MAX_LISTEN 4

struct prom_static {
    char **targets;             /* "host:port" */
    size_t ntargets;
    struct tsdb_label *labels;  /* owned strings */
    size_t nlabels;
};

struct prom_job {
    char *name;
    uint64_t interval_ms, timeout_ms;
    char *metrics_path;
    char *scheme;               /* "http" or "https" */
    char *query;                /* params, encoded, without '?' (or NULL) */
    bool honor_labels, honor_timestamps;
    uint64_t sample_limit, label_limit, body_size_limit;
    struct prom_static *statics;
    size_t nstatics;
    struct prom_relabel *relabel, *metric_relabel;
    size_t nrelabel, nmetric_relabel;
};

struct prom_conf {
    struct net_addr listen[PROM_MAX_LISTEN];
    size_t nlisten;
    uint64_t retention_ms;
    uint64_t max_series;
    uint64_t query_timeout_ms, query_max_samples, lookback_ms;
    uint64_t scrape_interval_ms, scrape_timeout_ms, evaluation_interval_ms;
    struct tsdb_label *external_labels;
    size_t nexternal;
    struct prom_job *jobs;
    size_t njobs;
    char *config_text;          /* the Prometheus YAML, for /api/v1/status/config */
    bool generated;             /* scrape configs made from the stack's services */
};

int prom__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void prom__free_conf(void *conf);

/* ---- a scrape target ---- */

struct prom_cache_entry {
    uint64_t hash;
    char *key;                  /* the raw series text */
    uint32_t keylen;
    struct tsdb_series *s;
    uint64_t seen;              /* scrape epoch it was last seen in */
    bool dropped;               /* metric relabeling dropped it */
};

struct prom_svc;

/* Metric metadata from scrapes (# TYPE, # HELP, # UNIT), distinct per name. */
#define PROM_META_PER_NAME 4
#define PROM_META_MAX_NAMES 200000
struct prom_meta_entry {
    char *name;
    struct {
        char *type, *help, *unit;
    } v[PROM_META_PER_NAME];
    int nv;
};

struct prom_target {
    struct prom_svc *ps;
    const struct prom_job *job;
    struct httpc *hc;
    char instance[128];         /* host:port */
    char url[512];
    char host[128];
    char target[400];           /* path?query */
    struct net_addr addr;
    bool tls;
    struct tsdb_label labels[40];   /* the target's labels after relabeling, sorted */
    size_t nlabels;
    struct prom_lset lset;      /* owns the strings labels[] points to */
    struct prom_lset discovered;
    struct loop_timer timer;
    struct httpc_call *call;
    uint64_t started_ns;
    int64_t scrape_ts;
    /* state for /api/v1/targets */
    const char *health;         /* "unknown", "up", "down" */
    char last_error[256];
    int64_t last_scrape_ms;     /* wall clock */
    double last_duration;
    uint64_t last_samples;
    /* series cache and staleness */
    struct prom_cache_entry *cache;
    size_t cachesize, cacheused;
    uint64_t epoch;
    struct tsdb_series *report[5];
};

struct prom_svc {
    const struct service *svc;
    struct prom_conf *conf;
    struct stack *stack;        /* owns conf after a reload */
    struct loop loop;
    struct tsdb db;
    struct httpd_worker hw;
    struct httpd_conf hconf;
    struct metrics_registry *reg;
    struct prom_target *targets;
    size_t ntargets;
    struct prom_lset *dropped;  /* discovered labels of targets relabeling dropped */
    size_t ndropped;
    struct prom_meta_entry *meta;   /* open addressing by name */
    size_t metasize, metaused;
    struct loop_timer commit_timer, retention_timer;
    int stopping;
    int64_t start_ms;           /* wall clock */
    struct metric *m_scrapes, *m_scrape_failures, *m_rw_requests, *m_rw_samples, *m_rw_errors;
};

/* prom_scrape.c */
int prom__targets_start(struct prom_svc *ps);
void prom__meta_free(struct prom_svc *ps);
void prom__targets_stop(struct prom_svc *ps);
void prom__targets_adopt(struct prom_svc *ps, struct prom_target *old, size_t nold,
                         struct prom_lset *odropped, size_t nodropped);
/* prom_main.c: re-reads the configuration; 0, or -EINVAL with errs filled. */
int prom__reload(struct prom_svc *ps, struct cfg_errors *errs);

/* prom_api.c: the form of a request (query string and urlencoded body) */
struct prom_form {
    char *key[256];
    char *val[256];
    size_t n;
};
void prom__handle(struct httpd_req *r, void *arg);
const char *prom__form_get(const struct prom_form *f, const char *key);
void prom__api_error(struct httpd_req *r, int status, const char *type, const char *msg);
void prom__reply_json(struct httpd_req *r, int status, struct buf *b);
/* Unix seconds (float) or RFC 3339 into ms. */
int prom__parse_time(const char *s, int64_t *ms);

/* prom_query.c: /api/v1/query, query_range, format_query, query_exemplars,
 * rules, alerts and the /graph page; false when the path is not one of them. */
bool prom__query_handle(struct prom_svc *ps, struct httpd_req *r, const struct prom_form *f);

int64_t prom__now_ms(void);

#endif
