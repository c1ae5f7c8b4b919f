/* logagent_internal.h - the log agent: Promtail's configuration, file targets,
 * pipeline stages, the client that ships to a Loki push API, the syslog receiver.
 */
#ifndef CAIRN_LOGAGENT_INTERNAL_H
#define CAIRN_LOGAGENT_INTERNAL_H

#include "logagent.h"
#include "core/config.h"
#include "core/hmap.h"
#include "core/httpc.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/relabel.h"
#include "core/service.h"
#include "core/stack.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define LA_MAX_LISTEN 4
#define LA_MAX_LINE (256u << 10)        /* a longer line is cut there */
#define LA_MAX_LABELS 64

/* ---- pipeline stages (Promtail's pipeline_stages) ---- */

enum la_stage_kind {
    LA_REGEX, LA_JSON, LA_LOGFMT, LA_LABELS, LA_STATIC_LABELS, LA_LABELDROP, LA_TIMESTAMP, LA_OUTPUT, LA_DROP,
    LA_MATCH, LA_MULTILINE, LA_TEMPLATE, LA_REPLACE,
};

struct la_kv {                          /* a mapping entry: name and source (or value) */
    char *name, *src;
};

struct la_stage {
    enum la_stage_kind kind;
    char *source;                       /* regex, json, logfmt, timestamp, output, drop, template */
    pcre2_code *re;                     /* regex, drop expression, multiline firstline, replace */
    struct la_kv *kv;                   /* json expressions, logfmt mapping, labels, static labels */
    size_t nkv;
    char **names;                       /* labeldrop */
    size_t nnames;
    char *format;                       /* timestamp: RFC3339, Unix, UnixMs, ... or a Go layout */
    char *value;                        /* drop: value; template: the template; replace: replacement */
    uint64_t older_than_ms;             /* drop */
    uint64_t longer_than;               /* drop */
    bool drop_all;                      /* drop with no condition but source */
    /* match */
    char *selector;
    void *query;                        /* struct lq_query * (the selector and its line filters) */
    bool action_drop;
    struct la_stage *stages;
    size_t nstages;
    /* multiline */
    uint64_t max_wait_ms;
    uint32_t max_lines;
    void *tmpl;                         /* template: struct gt_set * */
};

/* An entry in the agent: line, timestamp (ns), labels (owned). */
struct la_entry {
    int64_t ts;
    char *line;
    size_t n;
    struct relabel_set labels;          /* owned strings (relabel_set_put copies) */
};

/* Runs stages on e with extracted data kept in extracted; false: dropped. */
struct la_extracted {
    struct relabel_set v;
};
bool la__pipeline(const struct la_stage *st, size_t n, struct la_entry *e, struct la_extracted *x);
int la__stages_parse(struct cfg *c, const cfg_node *n, const char *path, struct la_stage **out, size_t *count);
void la__stages_free(struct la_stage *st, size_t n);

/* ---- configuration ---- */

struct la_client_conf {
    struct stack_url url;
    char *tenant;
    uint64_t batch_wait_ms, batch_size;
    uint64_t backoff_min_ms, backoff_max_ms;
    struct relabel_label *external;
    size_t nexternal;
    uint64_t timeout_ms;
};

struct la_syslog_conf {
    struct net_addr addr;
    bool udp, tcp;
    struct relabel_label *labels;       /* static labels */
    size_t nlabels;
    bool structured_data;               /* label_structured_data */
    bool incoming_ts;                   /* use_incoming_timestamp */
};

struct la_target {                      /* one static_configs entry of a job */
    char *path_glob;                    /* __path__ */
    char *exclude_glob;                 /* __path_exclude__ */
    struct relabel_label *labels;
    size_t nlabels;
};

struct la_job {
    char *name;
    struct la_target *targets;
    size_t ntargets;
    struct relabel_rule *relabel;
    size_t nrelabel;
    struct la_stage *stages;
    size_t nstages;
    struct la_syslog_conf *syslog;      /* a syslog job, else file targets */
};

struct la_conf {
    struct net_addr listen[LA_MAX_LISTEN];
    size_t nlisten;
    char *data;                         /* positions and state, under data_dir */
    char *positions_file;               /* default <data>/positions.yaml */
    uint64_t positions_sync_ms;
    struct la_client_conf *clients;
    size_t nclients;
    struct la_job *jobs;
    size_t njobs;
    bool generated;                     /* no promtail: key: ship this stack's own logs */
    uint64_t poll_ms;                   /* how often files are looked at */
    uint64_t buffer_bytes;              /* entries held in memory while the store is away */
    char *config_text;
};

int la__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void la__free_conf(void *conf);

/* ---- the running agent ---- */

struct la_file;
struct la_client;

struct la_svc {
    const struct service *svc;
    struct la_conf *conf;
    struct service_ctx *sc;
    struct service_http_pool pool;
    struct httpd_conf hconf;
    struct loop *loop;
    struct httpc *hc;
    struct la_client *clients;
    size_t nclients;
    const struct la_job *jobs;          /* the configuration's, or generated for this stack */
    size_t njobs;
    const struct la_client_conf *cconf;
    size_t ncconf;
    struct la_job *gen_jobs;
    struct la_client_conf *gen_clients;
    size_t ngen_jobs, ngen_clients;
    struct hmap files;                  /* path -> struct la_file * */
    struct loop_timer poll, sync;
    struct hmap positions;              /* path -> position string "inode:offset" (loaded) */
    char *positions_path;
    /* syslog */
    int udp_fd;
    struct loop_io udp_io;
    int tcp_fd;
    struct loop_io tcp_io;
    struct la_syslog_conn *conns;
    const struct la_job *syslog_job;
    struct metric *m_read_lines, *m_read_bytes, *m_sent, *m_sent_bytes, *m_dropped, *m_retries, *m_files,
        *m_syslog, *m_syslog_bad, *m_buffered;
};

/* Hands an entry (its labels final) to every client; the client takes the line. */
void la__ship(struct la_svc *s, struct la_entry *e, struct la_file *from, uint64_t end_offset);
int la__clients_start(struct la_svc *s);
void la__clients_stop(struct la_svc *s);
uint64_t la__clients_buffered(const struct la_svc *s);
/* Files: called when a batch with entries of f up to offset was accepted. */
void la__file_acked(struct la_svc *s, struct la_file *f, uint64_t offset);
/* f goes away: entries still queued no longer ack it. */
void la__clients_forget(struct la_svc *s, struct la_file *f);
int la__files_start(struct la_svc *s);
void la__files_stop(struct la_svc *s);
void la__positions_sync(struct la_svc *s);
int la__syslog_start(struct la_svc *s);
void la__syslog_stop(struct la_svc *s);
/* Syslog parsing (untrusted bytes): RFC 5424, else RFC 3164; fields as Promtail's
 * __syslog_* labels into e->labels, the message as the line. */
int la__syslog_parse(const char *msg, size_t n, struct la_entry *e, bool structured_data, bool incoming_ts);
/* Runs a job's relabeling and stages on an entry; false when dropped. */
bool la__process(struct la_svc *s, const struct la_job *job, struct la_entry *e);

#endif
