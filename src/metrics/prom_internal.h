/* prom_internal.h - role "metrics": configuration, scrape targets, the service.
 *
 * Owns: struct prom_conf (prometheus.yml as parsed by prom_config.c: jobs, service
 * discovery, relabeling, rule files, alerting), struct prom_target (one per scraped
 * endpoint, with its series cache), struct prom_svc (the service: the TSDB, the
 * HTTP API, targets, rule groups, metadata).
 * Files: prom_main.c (start, reload, stop), prom_scrape.c (scrapes), prom_sd.c
 * (file and DNS discovery), prom_api.c (the HTTP API, remote_write and
 * remote_read), prom_query.c (PromQL over the API), prom_rules.c (rules and
 * notifications to Alertmanager), prom_text.c (the exposition format).
 * Threads: one - everything runs on the service's loop; DNS lookups and block
 * writes run on threads of their own and post their results back to it. */
#ifndef CAIRN_PROM_INTERNAL_H
#define CAIRN_PROM_INTERNAL_H

#include "core/hmap.h"
#include "core/httpc.h"
#include "core/httpd.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "prom.h"
#include "prom_text.h"
#include "promql.h"
#include "core/relabel.h"
#include "core/service.h"
#include "core/stack.h"
#include "tsdb.h"

#define PROM_MAX_LISTEN 4

struct prom_static {
    char **targets;             /* "host:port" */
    size_t ntargets;
    struct tsdb_label *labels;  /* owned strings */
    size_t nlabels;
};

struct prom_file_sd {           /* one file_sd_configs entry */
    char **files;               /* patterns, absolute (resolved against the config's dir) */
    size_t nfiles;
    uint64_t refresh_ms;
};

struct prom_dns_sd {            /* one dns_sd_configs entry */
    char **names;
    size_t nnames;
    int type;                   /* ns_t_srv, ns_t_a, ns_t_aaaa or ns_t_mx */
    uint16_t port;
    uint64_t refresh_ms;
};

enum prom_k8s_role { K8S_POD, K8S_SERVICE, K8S_ENDPOINTS, K8S_NODE };

struct prom_k8s_sd {            /* one kubernetes_sd_configs entry */
    enum prom_k8s_role role;
    char *api_server;           /* https://host:port; NULL: the cluster the pod is in
                                   (KUBERNETES_SERVICE_HOST/_PORT, read at each refresh) */
    char **namespaces;          /* none (and not own_namespace): every namespace */
    size_t nnamespaces;
    bool own_namespace;         /* also the pod's own (read from its service account) */
    char *label_selector, *field_selector;   /* selectors of the role's own objects */
    char *token_file;           /* bearer token, read at each refresh (tokens rotate) */
    char *token;
    char *ca_file;              /* NULL: the system store */
    bool insecure;              /* tls_config.insecure_skip_verify */
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
    struct relabel_rule *relabel, *metric_relabel;
    size_t nrelabel, nmetric_relabel;
    struct prom_file_sd *file_sd;
    size_t nfile_sd;
    struct prom_dns_sd *dns_sd;
    size_t ndns_sd;
    struct prom_k8s_sd *k8s_sd;
    size_t nk8s_sd;
};

/* Recording and alerting rules (Prometheus rule files). */
struct prom_tmpl;
struct prom_rule {
    char *name;                 /* record: or alert: */
    bool alert;
    char *expr_text;
    struct promql_node *expr;
    uint64_t for_ms, keep_firing_ms;
    struct tsdb_label *labels, *annotations;    /* owned strings; values are templates */
    size_t nlabels, nannotations;
    struct prom_tmpl **label_tmpl, **ann_tmpl;
};

struct prom_group {
    char *name, *file;
    uint64_t interval_ms, limit;
    struct prom_rule *rules;
    size_t nrules;
};

struct prom_am {                /* an Alertmanager to send alerts to */
    struct net_addr addr;
    char host[128];
    char path[256];             /* path_prefix + /api/v2/alerts */
    bool tls;
    uint64_t timeout_ms;
};

struct prom_conf {
    struct net_addr listen[PROM_MAX_LISTEN];
    size_t nlisten;
    uint64_t retention_ms;
    uint64_t retention_bytes;       /* retention_size; 0 = none */
    uint64_t ooo_window_ms;         /* storage.tsdb.out_of_order_time_window */
    uint64_t max_exemplars;         /* storage.exemplars.max_exemplars (100000; 0: none) */
    uint64_t max_series;
    uint64_t block_ms;              /* block_duration */
    bool admin_api;                 /* enable_admin_api */
    uint64_t query_timeout_ms, query_max_samples, lookback_ms;
    uint64_t scrape_interval_ms, scrape_timeout_ms, evaluation_interval_ms;
    struct tsdb_label *external_labels;
    size_t nexternal;
    struct prom_job *jobs;
    size_t njobs;
    char *config_text;          /* the Prometheus YAML, for /api/v1/status/config */
    struct prom_group *groups;
    size_t ngroups;
    struct prom_am *ams;
    size_t nams;
    struct relabel_rule *alert_relabel;    /* alerting.alert_relabel_configs */
    size_t nalert_relabel;
    bool generated;             /* scrape configs made from the stack's services */
    bool have_resolver;         /* resolver: the DNS server dns_sd_configs asks */
    struct net_addr resolver;
};

int prom__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void prom__free_conf(void *conf);
/* prom_rules.c: rule_files (globs relative to base_dir) and alerting. */
int prom__rules_parse(struct cfg *c, const cfg_node *files, const cfg_node *alerting, const char *path,
                      const char *base_dir, struct prom_conf *pc);
void prom__rules_free_conf(struct prom_conf *pc);

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
    bool unresolved;            /* the host name did not resolve yet: retried each scrape */
    struct tsdb_label labels[40];   /* the target's labels after relabeling, sorted */
    size_t nlabels;
    struct relabel_set lset;      /* owns the strings labels[] points to */
    struct relabel_set discovered;
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

/* prom_api.c: one "name":"value" pair (a comma before all but the first, i = 0),
 * and a label set as a JSON object, as the HTTP API writes them. */
void prom__pair_json(struct buf *b, size_t i, const char *name, const char *value);
void prom__labels_json(struct buf *b, const struct tsdb_label *l, size_t n);

/* prom_exemplar.c: scraped exemplars in a circular buffer of max records (0: none
 * kept), and /api/v1/query_exemplars over it. */
struct prom_ex_rec;
struct prom_exemplars {
    struct prom_ex_rec *ring;
    size_t cap, max, n, next;   /* n records held; next: where the next one goes */
    struct hmap last;           /* series ref -> 1 + the index of its newest record */
    uint64_t appended, refused;
};
void prom_exemplars_init(struct prom_exemplars *x, size_t max);
void prom_exemplars_resize(struct prom_exemplars *x, size_t max);
void prom_exemplars_free(struct prom_exemplars *x);
/* Adds one scraped exemplar of series ref (scrape_ts when it has no time of its
 * own): 0, or -ERANGE out of order, -E2BIG labels too long, -ENOMEM. */
int prom_exemplars_add(struct prom_exemplars *x, uint64_t ref, const struct prom_exemplar *e, int64_t scrape_ts);
/* Appends the answer of query_exemplars: the exemplars in [start, end] of the
 * series that any selector of q matches, grouped by series. */
int prom_exemplars_query(const struct prom_exemplars *x, const struct tsdb *db, const struct promql_node *q,
                         int64_t start, int64_t end, struct buf *b);

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
    struct relabel_set *dropped;  /* discovered labels of targets relabeling dropped */
    size_t ndropped;
    struct prom_meta_entry *meta;   /* open addressing by name */
    size_t metasize, metaused;
    struct loop_timer commit_timer, retention_timer;
    struct service_ctx *sc;     /* the skeleton running this service */
    int stage;                  /* how far start went: what finish undoes */
    int64_t start_ms;           /* wall clock */
    struct metric *m_scrapes, *m_scrape_failures, *m_rw_requests, *m_rw_samples, *m_rw_errors;
    struct prom_group_rt *groups;   /* rule groups being evaluated */
    size_t ngroups;
    struct httpc *am_client;
    struct metric *m_rule_evals, *m_rule_failures, *m_notifications, *m_notify_errors;
    struct prom_sd_job *sd;     /* per job of conf: target groups found by discovery */
    size_t nsd;
    uint64_t sd_gen;            /* bumped when sd is rebuilt: late DNS answers are dropped */
    int sd_threads;             /* DNS lookups running */
    struct loop_timer sd_timer;
    struct metric *m_sd_reads, *m_sd_failures, *m_dns_lookups, *m_dns_failures;
    struct httpc *k8s_hc;       /* kubernetes_sd_configs' calls to the API server */
    struct k8s_refresh *k8s_active;     /* refreshes in flight */
    struct metric *m_k8s_refreshes, *m_k8s_failures;
    struct prom_exemplars exemplars;
};

/* prom_sd.c: file_sd_configs. The files are checked every second (and re-read at
 * each refresh_interval); a change rebuilds the targets as a reload does. */
struct prom_sd_file {
    char *path;
    int64_t mtime_ns;
    int64_t size;
    struct prom_static *groups; /* labels include __meta_filepath */
    size_t ngroups;
    bool seen;
};
struct prom_sd_job {
    struct prom_sd_file *files;
    size_t nfiles;
    uint64_t next_refresh_ms;
    struct prom_static *dns;    /* what dns_sd_configs found (one group per target) */
    size_t ndns;
    bool dns_running;
    uint64_t dns_next_ms;
    struct prom_static *k8s;    /* what kubernetes_sd_configs found (one group per target) */
    size_t nk8s;
    bool k8s_running;
    uint64_t k8s_next_ms;
};
/* prom_k8s.c: kubernetes_sd_configs. Each job's objects are listed from the API
 * server every 10 s (Prometheus watches; a list is the same picture a little
 * later); a change rebuilds the targets. */
void prom__k8s_refresh(struct prom_svc *ps, bool force);
int prom__k8s_targets(enum prom_k8s_role role, const char *text, size_t n, struct prom_static **out, size_t *nout);
void prom__k8s_free(struct prom_svc *ps);
/* Reads every job's files now (at start and after a reload); returns whether any
 * target group changed. */
bool prom__sd_scan(struct prom_svc *ps, bool force);
void prom__sd_start(struct prom_svc *ps);
void prom__sd_free(struct prom_svc *ps);
/* The groups of job j found by discovery (static_configs are in the job). */
void prom__sd_groups(const struct prom_svc *ps, size_t j, const struct prom_static ***out, size_t *n);
void prom__static_free(struct prom_static *st);

/* prom_rules.c: evaluation of the configuration's rule groups. */
struct prom_group_rt;
int prom__rules_start(struct prom_svc *ps);
void prom__rules_stop(struct prom_svc *ps);
/* After a reload: starts the new configuration's groups, keeping the alerts of
 * rules that stay, and frees the old groups. */
void prom__rules_reload(struct prom_svc *ps, struct prom_group_rt *old, size_t nold);
bool prom__rules_handle(struct prom_svc *ps, struct httpd_req *r);

/* prom_scrape.c */
int prom__targets_start(struct prom_svc *ps);
void prom__meta_free(struct prom_svc *ps);
void prom__targets_stop(struct prom_svc *ps);
void prom__targets_adopt(struct prom_svc *ps, struct prom_target *old, size_t nold,
                         struct relabel_set *odropped, size_t nodropped);
/* Builds the targets again from the configuration and discovery, keeping the state
 * of those that stay (a reload, or a file_sd change). */
void prom__targets_rebuild(struct prom_svc *ps);
/* prom_main.c: re-reads the configuration; 0, or -EINVAL with errs filled. */

void prom__handle(struct httpd_req *r, void *arg);
void prom__api_error(struct httpd_req *r, int status, const char *type, const char *msg);
void prom__reply_json(struct httpd_req *r, int status, struct buf *b);
/* Unix seconds (float) or RFC 3339 into ms. */
int prom__parse_time(const char *s, int64_t *ms);

/* prom_query.c: /api/v1/query, query_range, format_query, query_exemplars,
 * rules, alerts and the /graph page; false when the path is not one of them. */
bool prom__query_handle(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f);

int64_t prom__now_ms(void);

#endif
