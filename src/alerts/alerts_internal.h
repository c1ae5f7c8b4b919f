/* alerts_internal.h - role "alerts": types shared by the files of the role.
 *
 * The role is an Alertmanager 0.25 in one event-loop thread:
 *
 *   API (POST /api/v2/alerts) -> alert store -> route tree -> aggregation groups
 *   group timer (group_wait, then group_interval) -> flush:
 *       inhibition -> active/mute time intervals -> silences
 *       -> per integration: dedup against the notification log (repeat_interval)
 *       -> send with retries (webhook and slack over the loop's HTTP client,
 *          email over SMTP in a short-lived thread) -> notification log entry.
 *
 * Times are nanoseconds since the Unix epoch (0 is Go's zero time) so that the
 * RFC 3339 timestamps Prometheus sends come back exactly as they came in.
 * Silences and the notification log live in <data_dir>/<service>/ and are
 * rewritten (write, fsync, rename) whenever they change, so neither a restart
 * nor a kill -9 makes the service forget a silence or send a notification twice.
 */
#ifndef CAIRN_ALERTS_INTERNAL_H
#define CAIRN_ALERTS_INTERNAL_H

#include "alerts.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/httpc.h"
#include "core/httpd.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/service.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>

#define AM_MAX_LISTEN 4
#define AM_MAX_LABELS 128           /* labels (and annotations) per alert */
#define AM_MAX_LABEL_LEN 16384      /* bytes per label name or value */
#define AM_MAX_BODY (16u << 20)     /* a POST body */
#define AM_MAX_MATCHERS 64
#define AM_ROUTE_DEPTH 32

/* ---- labels and matchers (alerts_match.c) ---- */

struct am_label {
    char *name;
    char *value;
};

struct am_lset {                    /* sorted by name, names unique */
    struct am_label *l;
    size_t n;
};

enum am_mtype { AM_EQ, AM_NE, AM_RE, AM_NRE };

struct am_matcher {
    enum am_mtype type;
    char *name;
    char *value;
    pcre2_code *re;                 /* AM_RE and AM_NRE: ^(?:value)$ */
    pcre2_match_data *md;           /* reused by every match (the role has one thread) */
};

struct am_matchers {
    struct am_matcher *m;
    size_t n;
};

/* Parses one matcher such as severity="page", env=~"prod|stage", team!=ops,
 * as Alertmanager's config and amtool write them. 0, or -EINVAL with a message. */
int am__matcher_parse(const char *s, struct am_matcher *out, char *err, size_t errlen);
/* A list: `{a="b", c=~"d"}` or `a="b", c=~"d"`. */
int am__matchers_parse(const char *s, struct am_matchers *out, char *err, size_t errlen);
int am__matcher_init(struct am_matcher *m, enum am_mtype t, const char *name, const char *value,
                     char *err, size_t errlen);
void am__matcher_free(struct am_matcher *m);
void am__matchers_free(struct am_matchers *ms);
bool am__matcher_matches(const struct am_matcher *m, const char *value);
bool am__matchers_match(const struct am_matchers *ms, const struct am_lset *ls);
/* Sorts as Alertmanager sorts a route's matchers (name, value, type). */
void am__matchers_sort(struct am_matchers *ms);
/* Appends `{a="b",c=~"d"}`, the form of a route key. */
void am__matchers_format(struct buf *b, const struct am_matchers *ms);
const char *am__mtype_str(enum am_mtype t);

const char *am__lset_get(const struct am_lset *ls, const char *name);
bool am__lset_eq(const struct am_lset *a, const struct am_lset *b);
int am__lset_copy(struct am_lset *dst, const struct am_lset *src);
void am__lset_free(struct am_lset *ls);
/* Sorts by name; returns -EINVAL if a name repeats. */
int am__lset_sort(struct am_lset *ls);
/* Prometheus's model.LabelSet.Fingerprint: FNV-1a over sorted pairs. */
uint64_t am__lset_fingerprint(const struct am_lset *ls);
/* model.LabelSet.Before: by size, then by the sorted union of names. */
bool am__lset_before(const struct am_lset *a, const struct am_lset *b);
/* Go's LabelSet.String(): {a="b", c="d"} with %q quoting. */
void am__lset_format(struct buf *b, const struct am_lset *ls);
/* A JSON object of the labels, in name order (as Go's encoding/json writes maps). */
void am__lset_json(struct buf *b, const struct am_lset *ls);
bool am__label_name_ok(const char *s);

/* RFC 3339 times in nanoseconds since the epoch; 0 is Go's zero time. */
int am__time_parse(const char *s, int64_t *ns);
void am__time_format(struct buf *b, int64_t ns);
int64_t am__now_ns(void);

/* ---- configuration (alerts_config.c) ---- */

struct am_time_range { int start, end; };      /* inclusive ranges */

struct am_time_interval {           /* one entry of a time_intervals list */
    struct am_time_range *times;    /* minutes of the day, [start, end) */
    size_t ntimes;
    struct am_time_range *weekdays; /* 0 = Sunday */
    size_t nweekdays;
    struct am_time_range *mdays;    /* 1..31, or negative from the month's end */
    size_t nmdays;
    struct am_time_range *months;   /* 1..12 */
    size_t nmonths;
    struct am_time_range *years;
    size_t nyears;
    char *location;                 /* tz name, NULL for UTC */
};

struct am_time_intervals {          /* a named mute/active time interval */
    char *name;
    struct am_time_interval *v;
    size_t n;
};

enum am_integration_kind { AM_WEBHOOK, AM_EMAIL, AM_SLACK, AM_PAGERDUTY, AM_OPSGENIE };


struct am_http {                    /* http_config: what cairn does of it */
    char *authorization;            /* the Authorization header value, or NULL */
    bool insecure;                  /* tls_config.insecure_skip_verify */
};

struct am_integration {
    enum am_integration_kind kind;
    struct am_http http;
    int idx;                        /* index among the receiver's configs of this kind */
    bool send_resolved;
    /* webhook */
    struct stack_url url;
    int max_alerts;
    /* email */
    char **to;                      /* split at commas */
    size_t nto;
    char *to_text;
    char *from, *hello, *smarthost, *auth_username, *auth_password, *auth_identity, *auth_secret;
    bool require_tls, insecure_skip_verify;
    char *ca_file, *server_name;
    struct am_label *headers;       /* extra headers (plain text) */
    size_t nheaders;
    char *subject;                  /* NULL: the default subject */
    char *html;                     /* NULL: the default body */
    char *text;
    /* slack */
    char *channel, *username, *color, *title, *title_link, *pretext, *stext, *footer,
         *fallback, *icon_emoji, *icon_url, *callback_id;
    /* pagerduty (Events API v2): each field plain text or a template ("\x01name"),
     * the defaults included; NULL = left out */
    char *routing_key, *client, *client_url, *description, *severity, *source, *pd_class,
         *component, *group;
    struct am_label *details;       /* custom_details, sorted by name */
    size_t ndetails;
    struct am_pd_ref {              /* images: src, alt, href; links: href, text;
                                     * opsgenie responders: id, name, username, type */
        char *a, *b, *c, *d;
    } *images, *links;
    size_t nimages, nlinks;
    /* opsgenie (Alert API v2): api_key, message, description, source as above, then
     * details (config's, over the common labels), responders in images */
    char *api_key, *message, *og_description, *og_source, *tags, *note, *priority, *entity,
         *actions;
    /* runtime: sends in flight to this integration and those waiting for a slot, so a
     * storm of groups does not open thousands of connections to one receiver */
    int inflight;
    struct am_send *wait_head, *wait_tail;
};

struct am_receiver {
    char *name;
    struct am_integration *ints;
    size_t nints;
};

struct am_route {
    struct am_route *parent;
    char *receiver;
    struct am_receiver *recv;
    char **group_by;                /* sorted */
    size_t ngroup_by;
    bool group_by_all;
    uint64_t group_wait_ms, group_interval_ms, repeat_interval_ms;
    struct am_matchers matchers;
    bool cont;
    char **mute, **active;          /* time interval names */
    size_t nmute, nactive;
    struct am_route *routes;
    size_t nroutes;
    char *key;                      /* Alertmanager's route key: {}/{a="b"} */
    int id;                         /* position in a depth-first walk */
};

struct am_inhibit {
    struct am_matchers source, target;
    char **equal;
    size_t nequal;
};

struct am_conf {
    struct net_addr listen[AM_MAX_LISTEN];
    size_t nlisten;
    char *external_url;             /* without a trailing slash */
    uint64_t retention_ms;          /* silences and notification log entries */
    uint64_t resolve_timeout_ms;
    struct am_route *route;
    struct am_receiver *receivers;
    size_t nreceivers;
    struct am_inhibit *inhibit;
    size_t ninhibit;
    struct am_time_intervals *intervals;
    size_t nintervals;
    char *config_text;              /* shown by /api/v2/status */
    int nroutes;
    struct gt_set *tmpl_text, *tmpl_html;   /* Go templates (alerts_tmpl.c) */
};

int am__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void am__free_conf(void *conf);
/* Parses an alertmanager.yml document into ac (the stack keys stay untouched). */
int am__parse_alertmanager(struct cfg *c, const cfg_node *root, const char *path,
                           const char *base_dir, struct am_conf *ac);
const struct am_time_intervals *am__interval_find(const struct am_conf *ac, const char *name);
bool am__interval_contains(const struct am_time_intervals *ti, int64_t now_ns);
/* Appends every route that lset goes to (Alertmanager's Route.Match). */
size_t am__route_match(struct am_route *r, const struct am_lset *ls, struct am_route **out,
                       size_t max);

/* ---- state (alerts_store.c) ---- */

struct am_alert {                   /* immutable once stored; shared by reference */
    unsigned refs;
    uint64_t fp;
    struct am_lset labels;
    struct am_lset annotations;
    int64_t starts_at, ends_at, updated_at;
    bool timeout;                   /* ends_at was set from resolve_timeout */
    bool packed;                    /* one allocation holds the labels and strings */
    char *generator_url;
};

static inline bool am__alert_resolved_at(const struct am_alert *a, int64_t now)
{
    return a->ends_at != 0 && a->ends_at <= now;
}
void am__alert_unref(struct am_alert *a);
static inline struct am_alert *am__alert_ref(struct am_alert *a) { a->refs++; return a; }

enum am_sil_state { SIL_ACTIVE, SIL_PENDING, SIL_EXPIRED };

struct am_silence {
    char id[40];
    struct am_matchers matchers;
    int64_t starts_at, ends_at, updated_at;
    char *created_by, *comment;
};

struct am_nflog_entry {
    char *key;                      /* receiver/integration/idx + "\n" + group key */
    uint64_t *firing, *resolved;    /* sorted alert fingerprints */
    size_t nfiring, nresolved;
    int64_t ts, expires;
};

struct am_group;
struct am_svc;
struct smtp_job;
struct am_inhibit_cache {
    struct am_alert **src;
    size_t n;
};

struct am_flush {                   /* one run of the notification pipeline for a group */
    struct am_group *g;
    struct am_alert **alerts;       /* after muting, sorted */
    size_t nalerts;
    size_t pending;                 /* integrations still sending */
    bool failed;
    int64_t now;
    uint64_t deadline_ms;           /* loop time after which retries stop */
    struct am_send *sends;
};

struct am_send {                    /* one integration's part of a flush */
    struct am_flush *f;
    const struct am_integration *in;
    struct am_alert **alerts;       /* what this integration sends */
    size_t nalerts;
    uint64_t *firing, *resolved;
    size_t nfiring, nresolved;
    char *nflog_key;
    struct loop_timer retry;
    uint64_t backoff_ms;
    int attempts;
    bool done;
    struct httpc_call *call;
    struct smtp_job *job;           /* an email being sent by a thread */
    struct am_send *wnext, *wprev;  /* in the integration's wait queue */
    bool waiting, holds_slot, counted;
    bool tmpl_failed;               /* a template of this send failed to execute */
    uint64_t started_ns;
};

struct am_group {
    struct am_svc *s;
    struct am_route *route;
    struct am_lset labels;
    uint64_t labels_fp;
    char *key;                      /* route key + ":" + labels */
    struct am_alert **alerts;       /* unsorted; one per fingerprint */
    size_t nalerts, cap;
    struct loop_timer timer;
    bool has_flushed;
    bool flush_due;                 /* the timer fired while a flush ran */
    struct am_flush *flushing;
    struct am_group *next, *prev;   /* in the service's list */
    struct am_group *hnext;         /* in its hash bucket */
};

struct am_svc {
    const struct service *svc;
    struct am_conf *conf;
    struct stack *stack;            /* owns conf after a reload */
    struct loop loop;
    struct httpd_worker hw;
    struct httpd_conf hconf;
    struct httpc *hc;               /* https verified against the system's CAs */
    struct httpc *hc_insecure;      /* for tls_config.insecure_skip_verify */
    struct tls_ctx *tls, *tls_insecure;
    struct metrics_registry *reg;
    char dir[4096];
    int64_t start_ns;
    struct service_ctx *sc;     /* the skeleton running this service */
    bool http_inited, loop_inited;

    /* alerts by fingerprint: open addressing, linear probing */
    struct am_alert **alerts;
    size_t nalerts, alerts_cap;
    uint64_t alerts_gen;            /* bumped on every change (inhibition caches) */

    struct am_silence *silences;
    size_t nsilences, silences_cap;

    struct am_nflog_entry *nflog;
    size_t nnflog, nflog_cap;

    struct am_group *groups;
    size_t ngroups;
    struct am_group **gtab;         /* by route and group labels, chained */
    size_t gcap;

    struct am_inhibit_cache *inh;   /* per inhibit rule: its firing source alerts */
    size_t ninh;
    uint64_t inh_gen;

    int journal_fd;                 /* nflog.journal: one JSON line per new log entry */
    size_t journal_lines;
    bool journal_dirty;
    struct loop_timer sync_timer;

    struct loop_timer gc_timer;
    int smtp_threads;               /* running email sends */

    struct metric *m_received_firing, *m_received_resolved, *m_invalid;
    struct metric_family *f_notifications, *f_notif_failed, *f_requests, *f_requests_failed,
                         *f_latency;
    struct metric *m_reload_ok, *m_reload_ts, *m_flushes;
};

/* alerts_store.c */
int am__store_put(struct am_svc *s, struct am_alert *a);     /* takes the reference */
struct am_alert *am__store_get(struct am_svc *s, uint64_t fp);
void am__store_gc(struct am_svc *s, int64_t now);
void am__store_free(struct am_svc *s);
enum am_sil_state am__silence_state(const struct am_silence *sl, int64_t now);
/* Fills ids (up to max) with the active silences that mute ls; returns the count. */
size_t am__silenced_by(struct am_svc *s, const struct am_lset *ls, int64_t now,
                       const char **ids, size_t max);
/* The fingerprint of an alert that inhibits ls, or 0 (and false). */
bool am__inhibited_by(struct am_svc *s, const struct am_lset *ls, int64_t now, uint64_t *by);
int am__silence_set(struct am_svc *s, struct am_silence *sl, char *err, size_t errlen);
int am__silence_expire(struct am_svc *s, const char *id);
struct am_silence *am__silence_find(struct am_svc *s, const char *id);
void am__silence_free(struct am_silence *sl);
struct am_nflog_entry *am__nflog_get(struct am_svc *s, const char *key);
void am__nflog_set(struct am_svc *s, const char *key, const uint64_t *firing, size_t nfiring,
                   const uint64_t *resolved, size_t nresolved, int64_t now, int64_t expires);
int am__state_load(struct am_svc *s);
int am__silences_save(struct am_svc *s);
int am__nflog_save(struct am_svc *s);     /* snapshot, then an empty journal */
int am__state_export(struct am_svc *s, const char *dir);   /* silences + nflog into dir */

/* alerts_dispatch.c */
void am__dispatch(struct am_svc *s, struct am_alert *a);
void am__groups_free(struct am_svc *s);
void am__groups_rebuild(struct am_svc *s);   /* after a reload: route every alert again */
void am__group_sorted(struct am_alert **v, size_t n);

/* alerts_notify.c */
void am__send_start(struct am_send *sd);
void am__send_cancel(struct am_send *sd);
void am__send_finished(struct am_send *sd, bool ok, bool retry, const char *err);
const char *am__integration_name(enum am_integration_kind k);
/* The Alertmanager template data as JSON (the webhook body). */
void am__webhook_body(struct buf *b, struct am_send *sd, size_t max_alerts);
void am__subject(struct buf *b, struct am_send *sd);

/* alerts_tmpl.c: Go templates in receiver fields ("\x01name" marks a templated
 * field) and template files. */
struct gt_set;
int am__tmpl_setup(struct am_conf *ac, char *err, size_t errlen);
int am__tmpl_file(struct am_conf *ac, const char *path, char *err, size_t errlen);
int am__tmpl_field(struct am_conf *ac, const char *name, const char *text, char **out, char *err,
                   size_t errlen);
void am__tmpl_free(struct am_conf *ac);
/* The field's text for this send: plain text as it is, a template executed (into
 * out); on a template error "" and sd->tmpl_failed. */
const char *am__render(struct am_send *sd, const char *v, bool html, struct buf *out);

/* alerts_api.c */
void am__handle(struct httpd_req *r, void *arg);
/* Decodes a JSON array of postable alerts. Returns the count, or -EINVAL with a
 * message naming the field. */
int am__alerts_decode(const char *body, size_t len, int64_t now, uint64_t resolve_timeout_ms,
                      struct am_alert ***out, char *err, size_t errlen);
int am__silence_decode(const char *body, size_t len, struct am_silence *out, char *err,
                       size_t errlen);

/* alerts_main.c */

#endif
