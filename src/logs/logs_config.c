/* logs_config.c - the logs role's keys in the stack file:
 *
 *   logs:
 *     role: logs
 *     listen: ["127.0.0.1:3100"]
 *     data: logs                       # under data_dir (default: the service's name)
 *     auth: false                      # true: X-Scope-OrgID required on every request
 *     default_tenant: fake             # the tenant of requests without X-Scope-OrgID
 *     retention: 0s                    # 0: keep forever
 *     retention_stream:                # per stream selector, the shortest match wins
 *       - {selector: '{env="dev"}', period: 24h}
 *     flush_interval: 30m              # heads older than this are written into a block
 *     chunk_target_size: 1536KB        # raw bytes of a chunk before it is cut
 *     max_unflushed: 256MB             # unflushed bytes that trigger a flush
 *     rules: [rules.yml]               # LogQL alerting and recording rules (Loki's format)
 *     alertmanager_url: http://127.0.0.1:9093/api/v2/alerts   # default: the stack's alerts
 *     remote_write_url: http://127.0.0.1:9090/api/v1/write    # default: the stack's metrics
 *     limits:                          # Loki's names and defaults
 *       ingestion_rate_mb: 4
 *       ingestion_burst_size_mb: 6
 *       per_stream_rate_limit: 3MB
 *       per_stream_rate_limit_burst: 15MB
 *       max_line_size: 256KB
 *       max_line_size_truncate: false
 *       max_label_names_per_series: 15
 *       max_label_name_length: 1024
 *       max_label_value_length: 2048
 *       max_global_streams_per_user: 5000
 *       reject_old_samples: true
 *       reject_old_samples_max_age: 168h
 *       creation_grace_period: 10m
 *       out_of_order_window: 1h
 *       max_entries_limit_per_query: 5000
 *       max_query_series: 500
 *       max_query_length: 721h
 *       query_timeout: 1m
 */
#include "logs_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P(buf, ...) CFG_PATH(buf, __VA_ARGS__)

static int parse_limits(struct cfg *c, const cfg_node *map, const char *path, struct logs_limits *l)
{
    static const char *const keys[] = {
        "ingestion_rate_mb", "ingestion_burst_size_mb", "per_stream_rate_limit", "per_stream_rate_limit_burst",
        "max_line_size", "max_line_size_truncate", "max_label_names_per_series", "max_label_name_length",
        "max_label_value_length", "max_global_streams_per_user", "reject_old_samples", "reject_old_samples_max_age",
        "creation_grace_period", "out_of_order_window", "max_entries_limit_per_query", "max_query_series",
        "max_query_length", "query_timeout", NULL,
    };
    cfg_node *v[ARRAY_SIZE(keys)];
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    double d;
    uint64_t u;
    long long i;
    bool b;
#define KEY(k) CFG_PATH(p, "%s.%s", path, keys[k])
    KEY(0);
    if (v[0] && !(bad |= cfg_get_float(c, v[0], p, 0, 1e6, &d)))
        l->ingestion_rate = d * 1048576.0;
    KEY(1);
    if (v[1] && !(bad |= cfg_get_float(c, v[1], p, 0, 1e6, &d)))
        l->ingestion_burst = d * 1048576.0;
    KEY(2);
    if (v[2] && !(bad |= cfg_get_size(c, v[2], p, &u)))
        l->stream_rate = (double)u;
    KEY(3);
    if (v[3] && !(bad |= cfg_get_size(c, v[3], p, &u)))
        l->stream_burst = (double)u;
    KEY(4);
    if (v[4])
        bad |= cfg_get_size(c, v[4], p, &l->max_line_size);
    KEY(5);
    if (v[5] && !(bad |= cfg_get_bool(c, v[5], p, &b)))
        l->max_line_truncate = b;
    static const int ints[] = { 6, 7, 8, 9, 14, 15 };
    for (size_t k = 0; k < ARRAY_SIZE(ints); k++) {
        int x = ints[k];
        KEY(x);
        if (!v[x] || (bad |= cfg_get_int(c, v[x], p, 0, 100000000, &i)))
            continue;
        uint32_t *dst = x == 6 ? &l->max_label_names : x == 7 ? &l->max_label_name_length : x == 8 ? &l->max_label_value_length
                        : x == 9 ? &l->max_streams : x == 14 ? &l->max_entries_per_query : &l->max_series;
        *dst = (uint32_t)i;
    }
    KEY(10);
    if (v[10] && !(bad |= cfg_get_bool(c, v[10], p, &b)))
        l->reject_old = b;
    KEY(11);
    if (v[11])
        bad |= cfg_get_duration(c, v[11], p, &l->reject_old_max_age_ms);
    KEY(12);
    if (v[12])
        bad |= cfg_get_duration(c, v[12], p, &l->creation_grace_ms);
    KEY(13);
    if (v[13])
        bad |= cfg_get_duration(c, v[13], p, &l->ooo_window_ms);
    KEY(16);
    if (v[16])
        bad |= cfg_get_duration(c, v[16], p, &l->max_query_length_ms);
    KEY(17);
    if (v[17])
        bad |= cfg_get_duration(c, v[17], p, &l->query_timeout_ms);
#undef KEY
    return bad ? -EINVAL : 0;
}

static int parse_rules(struct cfg *c, const cfg_node *n, const char *path, struct logs_conf *lc)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of {selector, period}");
    lc->rules = calloc(cfg_len(n) + 1, sizeof(*lc->rules));
    if (!lc->rules)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "selector", "period", NULL };
        cfg_node *v[2];
        char p[300], q[320];
        P(p, "%s[%zu]", path, i);
        const cfg_node *item = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, item, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct logs_retention *r = &lc->rules[lc->nrules++];
        P(q, "%s.selector", p);
        if (!v[0] || !v[1]) {
            bad = cfg_error(c, item, p, "expected {selector: '{app=\"x\"}', period: 24h}");
            continue;
        }
        if (cfg_get_string(c, v[0], q, &r->selector)) {
            bad = -EINVAL;
            continue;
        }
        char err[300];
        if (lq_parse(r->selector, strlen(r->selector), &r->q, err, sizeof(err)) || r->q->root->kind != LQ_N_LOG ||
            r->q->root->nstages) {
            bad = cfg_error(c, v[0], q, "expected a stream selector like {app=\"x\"}%s%s", r->q ? "" : ": ",
                            r->q ? "" : err);
            continue;
        }
        P(q, "%s.period", p);
        bad |= cfg_get_duration(c, v[1], q, &r->period_ms);
    }
    return bad ? -EINVAL : 0;
}

int logs__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    struct logs_conf *lc = calloc(1, sizeof(*lc));
    if (!lc)
        return -ENOMEM;
    svc->conf = lc;
    lc->limits = (struct logs_limits){
        .ingestion_rate = 4 * 1048576.0,
        .ingestion_burst = 6 * 1048576.0,
        .stream_rate = 3e6,
        .stream_burst = 15e6,
        .max_line_size = 256000,
        .max_label_names = 15,
        .max_label_name_length = 1024,
        .max_label_value_length = 2048,
        .max_streams = 5000,
        .reject_old = true,
        .reject_old_max_age_ms = 168ULL * 3600 * 1000,
        .creation_grace_ms = 10ULL * 60 * 1000,
        .ooo_window_ms = 3600ULL * 1000,
        .max_entries_per_query = 5000,
        .max_series = 500,
        .max_query_length_ms = 721ULL * 3600 * 1000,
        .query_timeout_ms = 60000,
    };
    lc->flush_interval_ms = 30ULL * 60 * 1000;
    lc->chunk_target_bytes = 1536000;
    lc->max_memory_bytes = 256ULL << 20;
    static const char *const keys[] = {
        "role", "listen", "data", "auth", "default_tenant", "retention", "retention_stream", "flush_interval",
        "chunk_target_size", "max_unflushed", "limits", "rules", "alertmanager_url", "remote_write_url", NULL,
    };
    cfg_node *v[ARRAY_SIZE(keys)];
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    P(p, "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, lc->listen, LOGS_MAX_LISTEN, &lc->nlisten, "http", "http",
                                "127.0.0.1:3100", false);
    P(p, "%s.data", path);
    if (v[2])
        bad |= cfg_get_string(c, v[2], p, &lc->data);
    else
        lc->data = strdup(svc->name);
    P(p, "%s.auth", path);
    if (v[3])
        bad |= cfg_get_bool(c, v[3], p, &lc->auth);
    P(p, "%s.default_tenant", path);
    if (v[4])
        bad |= cfg_get_string(c, v[4], p, &lc->default_tenant);
    else
        lc->default_tenant = strdup("fake");
    P(p, "%s.retention", path);
    if (v[5])
        bad |= cfg_get_duration(c, v[5], p, &lc->retention_ms);
    P(p, "%s.retention_stream", path);
    if (v[6])
        bad |= parse_rules(c, v[6], p, lc);
    P(p, "%s.flush_interval", path);
    if (v[7]) {
        bad |= cfg_get_duration(c, v[7], p, &lc->flush_interval_ms);
        if (!bad && lc->flush_interval_ms < 1000)
            bad = cfg_error(c, v[7], p, "at least 1s");
    }
    P(p, "%s.chunk_target_size", path);
    if (v[8]) {
        bad |= cfg_get_size(c, v[8], p, &lc->chunk_target_bytes);
        if (!bad && (lc->chunk_target_bytes < 1024 || lc->chunk_target_bytes > (64u << 20)))
            bad = cfg_error(c, v[8], p, "between 1KB and 64MB");
    }
    P(p, "%s.max_unflushed", path);
    if (v[9])
        bad |= cfg_get_size(c, v[9], p, &lc->max_memory_bytes);
    P(p, "%s.limits", path);
    if (v[10])
        bad |= parse_limits(c, v[10], p, &lc->limits);
    P(p, "%s.rules", path);
    if (v[11])
        bad |= cfg_get_string_list(c, v[11], p, &lc->rule_files, &lc->nrule_files);
    P(p, "%s.alertmanager_url", path);
    if (v[12])
        bad |= cfg_get_string(c, v[12], p, &lc->alertmanager_url);
    P(p, "%s.remote_write_url", path);
    if (v[13])
        bad |= cfg_get_string(c, v[13], p, &lc->remote_write_url);
    if (!lc->data || !lc->default_tenant)
        bad = -ENOMEM;
    return bad ? -EINVAL : 0;
}

void logs__free_conf(void *conf)
{
    struct logs_conf *lc = conf;
    if (!lc)
        return;
    for (size_t i = 0; i < lc->nrules; i++) {
        free(lc->rules[i].selector);
        lq_query_free(&lc->rules[i].q);
    }
    free(lc->rules);
    cfg_free_string_list(lc->rule_files, lc->nrule_files);
    free(lc->alertmanager_url);
    free(lc->remote_write_url);
    free(lc->data);
    free(lc->default_tenant);
    free(lc);
}
