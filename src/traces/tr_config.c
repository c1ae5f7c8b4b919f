/* tr_config.c - the traces role's keys in the stack file:
 *
 *   traces:
 *     role: traces
 *     listen: ["127.0.0.1:4318"]       # OTLP/HTTP: POST /v1/traces
 *     grpc: ["127.0.0.1:4317"]         # OTLP/gRPC (optional)
 *     zipkin: ["127.0.0.1:9411"]       # Zipkin v2 in and query API (optional)
 *     jaeger: ["127.0.0.1:16686"]      # Jaeger query API (optional)
 *     tempo: ["127.0.0.1:3200"]        # Tempo API (optional)
 *     data: traces                     # under data_dir (default: the service's name)
 *     auth: false                      # true: X-Scope-OrgID required
 *     default_tenant: single-tenant    # Tempo's tenant when multitenancy is off
 *     retention: 336h                  # Tempo's block_retention; 0: keep forever
 *     trace_idle_period: 10s           # a trace this long without spans is complete
 *     max_block_duration: 5m           # complete traces wait at most this for a block
 *     max_block_bytes: 64MB            # ... or until this many bytes are complete
 *     query_timeout: 30s
 *     limits:                          # Tempo's names and defaults
 *       ingestion_rate_limit_bytes: 15MB     # per second, per tenant
 *       ingestion_burst_size_bytes: 20MB
 *       max_bytes_per_trace: 5MB
 *       max_attribute_bytes: 2048            # longer keys and string values are cut
 *       max_span_age: 0s                     # refuse spans that ended longer ago; 0: none
 *       max_search_results: 20               # Jaeger's and Tempo's default limit
 */
#include "traces_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P(buf, ...) CFG_PATH(buf, __VA_ARGS__)

static int parse_limits(struct cfg *c, const cfg_node *map, const char *path, struct traces_conf *tc)
{
    static const char *const keys[] = { "ingestion_rate_limit_bytes", "ingestion_burst_size_bytes",
                                        "max_bytes_per_trace", "max_attribute_bytes", "max_span_age",
                                        "max_search_results", NULL };
    cfg_node *v[ARRAY_SIZE(keys)];
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    uint64_t u;
    long long i;
    P(p, "%s.%s", path, keys[0]);
    if (v[0] && !(bad |= cfg_get_size(c, v[0], p, &u)))
        tc->rate_bytes = (double)u;
    P(p, "%s.%s", path, keys[1]);
    if (v[1] && !(bad |= cfg_get_size(c, v[1], p, &u)))
        tc->burst_bytes = (double)u;
    P(p, "%s.%s", path, keys[2]);
    if (v[2])
        bad |= cfg_get_size(c, v[2], p, &tc->max_bytes_per_trace);
    P(p, "%s.%s", path, keys[3]);
    if (v[3] && !(bad |= cfg_get_int(c, v[3], p, 0, 1 << 24, &i)))
        tc->max_attribute_bytes = (uint32_t)i;
    P(p, "%s.%s", path, keys[4]);
    if (v[4])
        bad |= cfg_get_duration(c, v[4], p, &tc->max_span_age_ms);
    P(p, "%s.%s", path, keys[5]);
    if (v[5] && !(bad |= cfg_get_int(c, v[5], p, 1, 100000, &i)))
        tc->search_default_limit = (uint32_t)i;
    return bad ? -EINVAL : 0;
}

int traces__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    struct traces_conf *tc = calloc(1, sizeof(*tc));
    if (!tc)
        return -ENOMEM;
    svc->conf = tc;
    tc->retention_ms = 336ULL * 3600 * 1000;
    tc->trace_idle_ms = 10000;
    tc->max_block_duration_ms = 5ULL * 60 * 1000;
    tc->max_block_bytes = 64ULL << 20;
    tc->max_bytes_per_trace = 5000000;
    tc->rate_bytes = 15e6;
    tc->burst_bytes = 20e6;
    tc->max_attribute_bytes = 2048;
    tc->search_default_limit = 20;
    tc->query_timeout_ms = 30000;
    static const char *const keys[] = { "role", "listen", "grpc", "zipkin", "jaeger", "tempo", "data", "auth",
                                        "default_tenant", "retention", "trace_idle_period", "max_block_duration",
                                        "max_block_bytes", "query_timeout", "limits", NULL };
    cfg_node *v[ARRAY_SIZE(keys)];
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    static const char *const what[TR_API_N] = { "otlp", "grpc", "zipkin", "jaeger", "http" };
    static const char *const like[TR_API_N] = { "127.0.0.1:4318", "127.0.0.1:4317", "127.0.0.1:9411",
                                                "127.0.0.1:16686", "127.0.0.1:3200" };
    for (int a = 0; a < TR_API_N; a++) {
        P(p, "%s.%s", path, keys[1 + a]);
        if (a == TR_API_OTLP || v[1 + a])
            bad |= service_listen_addrs(c, map, v[1 + a], p, svc, tc->addrs[a], TR_MAX_LISTEN, &tc->naddrs[a],
                                        what[a], a == TR_API_GRPC ? "grpc" : "http", like[a], false);
    }
    /* "http" is the endpoint the metrics role scrapes: Tempo's port (as Tempo's
     * /metrics), else the OTLP one; "otlp" is where the stack's services send spans */
    if (!v[1 + TR_API_TEMPO] && tc->naddrs[TR_API_OTLP]) {
        char a[NET_ADDRSTRLEN];
        net_addr_format(&tc->addrs[TR_API_OTLP][0], a, sizeof(a));
        service_add_endpoint(svc, "http", "http://%s/", a);
    }
    P(p, "%s.data", path);
    if (v[6])
        bad |= cfg_get_string(c, v[6], p, &tc->data);
    else
        tc->data = strdup(svc->name);
    P(p, "%s.auth", path);
    if (v[7])
        bad |= cfg_get_bool(c, v[7], p, &tc->auth);
    P(p, "%s.default_tenant", path);
    if (v[8])
        bad |= cfg_get_string(c, v[8], p, &tc->default_tenant);
    else
        tc->default_tenant = strdup("single-tenant");
    P(p, "%s.retention", path);
    if (v[9])
        bad |= cfg_get_duration(c, v[9], p, &tc->retention_ms);
    P(p, "%s.trace_idle_period", path);
    if (v[10])
        bad |= cfg_get_duration(c, v[10], p, &tc->trace_idle_ms);
    P(p, "%s.max_block_duration", path);
    if (v[11])
        bad |= cfg_get_duration(c, v[11], p, &tc->max_block_duration_ms);
    P(p, "%s.max_block_bytes", path);
    if (v[12])
        bad |= cfg_get_size(c, v[12], p, &tc->max_block_bytes);
    P(p, "%s.query_timeout", path);
    if (v[13])
        bad |= cfg_get_duration(c, v[13], p, &tc->query_timeout_ms);
    P(p, "%s.limits", path);
    if (v[14])
        bad |= parse_limits(c, v[14], p, tc);
    if (!tc->data || !tc->default_tenant)
        bad = -ENOMEM;
    return bad ? -EINVAL : 0;
}

void traces__free_conf(void *conf)
{
    struct traces_conf *tc = conf;
    if (!tc)
        return;
    free(tc->data);
    free(tc->default_tenant);
    free(tc);
}
