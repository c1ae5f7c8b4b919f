/* prom_config.c - the metrics service's keys and Prometheus's prometheus.yml.
 *
 *   listen: ["127.0.0.1:9090"]
 *   prometheus: prometheus.yml      # a file, or the mapping inline; absent: scrape
 *                                   # every service of the stack
 *   retention: 15d
 *   retention_size: 10GiB           # oldest chunks dropped past this (0 = no limit)
 *   max_series: 1000000             # active series limit (0 = none)
 *   query_timeout: 2m               # a query running longer fails (503, "timeout")
 *   query_max_samples: 50000000     # samples a query may hold at once
 *   query_lookback_delta: 5m        # how far back an instant selector looks
 *   resolver: 127.0.0.1:53          # the DNS server for dns_sd_configs (default:
 *                                   # /etc/resolv.conf)
 *   block_duration: 2h              # the head is cut into on-disk blocks of this range
 *   enable_admin_api: false         # POST /api/v1/admin/tsdb/snapshot
 */
#include "prom_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/nameser.h>

#define P CFG_PATH

static int parse_labels(struct cfg *c, const cfg_node *n, const char *path,
                        struct tsdb_label **out, size_t *count)
{
    if (!cfg_is_map(n))
        return cfg_error(c, n, path, "expected a mapping of label names to values");
    size_t k = cfg_len(n);
    *out = calloc(k ? k : 1, sizeof(**out));
    *count = 0;
    if (!*out)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < k; i++) {
        const char *name = cfg_scalar(cfg_map_key(c, n, i));
        const cfg_node *v = cfg_map_value(c, n, i);
        char p[300];
        P(p, "%s.%s", path, name ? name : "?");
        if (!name || !relabel_label_name_ok(name)) {
            bad = cfg_error(c, cfg_map_key(c, n, i), path, "invalid label name \"%s\"",
                            name ? name : "");
            continue;
        }
        char *val = NULL;
        if (cfg_get_string(c, v, p, &val)) {
            bad = -EINVAL;
            continue;
        }
        (*out)[*count].name = strdup(name);
        (*out)[*count].value = val;
        (*count)++;
    }
    return bad;
}


/* Prometheus's patFileSDName: ^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$ */
static bool file_sd_name_ok(const char *s)
{
    const char *star = strchr(s, '*');
    if (star && (strchr(star + 1, '*') || strchr(star, '/')))
        return false;
    const char *dot = strrchr(s, '.');
    if (!dot || (star && dot < star))
        return false;
    static const char *const ext[] = { ".json", ".yml", ".yaml", ".JSON", ".YML", ".YAML" };
    for (size_t i = 0; i < ARRAY_SIZE(ext); i++)
        if (!strcmp(dot, ext[i]))
            return true;
    return false;
}

static int parse_file_sd(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                         struct prom_job *j)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of {files, refresh_interval}");
    j->file_sd = calloc(cfg_len(n) + 1, sizeof(*j->file_sd));
    if (!j->file_sd)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "files", "refresh_interval", NULL };
        cfg_node *v[2];
        char p[340], q[360];
        P(p, "%s[%zu]", path, i);
        const cfg_node *it = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, it, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct prom_file_sd *f = &j->file_sd[j->nfile_sd++];
        f->refresh_ms = 300000;
        P(q, "%s.refresh_interval", p);
        if (v[1])
            bad |= cfg_get_duration(c, v[1], q, &f->refresh_ms);
        P(q, "%s.files", p);
        char **list = NULL;
        size_t k = 0;
        if (!v[0] || cfg_get_string_list(c, v[0], q, &list, &k)) {
            bad = v[0] ? -EINVAL : cfg_error(c, it, p, "file service discovery config must contain "
                                                       "at least one path name");
            continue;
        }
        if (k == 0)
            bad = cfg_error(c, v[0], q, "file service discovery config must contain at least one "
                                        "path name");
        f->files = calloc(k + 1, sizeof(char *));
        for (size_t m = 0; f->files && m < k; m++) {
            if (!file_sd_name_ok(list[m]))
                bad = cfg_error(c, v[0], q, "path name \"%s\" is not valid for file discovery",
                                list[m]);
            size_t len = strlen(base_dir) + strlen(list[m]) + 2;
            f->files[f->nfiles] = malloc(len);
            if (!f->files[f->nfiles])
                break;
            snprintf(f->files[f->nfiles++], len, "%s%s%s", list[m][0] == '/' ? "" : base_dir,
                     list[m][0] == '/' ? "" : "/", list[m]);
        }
        cfg_free_string_list(list, k);
    }
    return bad;
}

static int parse_dns_sd(struct cfg *c, const cfg_node *n, const char *path, struct prom_job *j)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of {names, type, port, refresh_interval}");
    j->dns_sd = calloc(cfg_len(n) + 1, sizeof(*j->dns_sd));
    if (!j->dns_sd)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "names", "type", "port", "refresh_interval", NULL };
        cfg_node *v[4];
        char p[340], q[360];
        P(p, "%s[%zu]", path, i);
        const cfg_node *it = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, it, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct prom_dns_sd *d = &j->dns_sd[j->ndns_sd++];
        d->type = ns_t_srv;
        d->refresh_ms = 30000;
        P(q, "%s.names", p);
        if (!v[0] || cfg_get_string_list(c, v[0], q, &d->names, &d->nnames) || !d->nnames) {
            bad = v[0] ? (d->names ? cfg_error(c, v[0], q, "DNS-SD config must contain at least "
                                                         "one SRV record name")
                                   : -EINVAL)
                       : cfg_error(c, it, p, "DNS-SD config must contain at least one SRV record name");
            continue;
        }
        P(q, "%s.type", p);
        const char *t = v[1] ? cfg_scalar(v[1]) : "SRV";
        if (!t || (strcasecmp(t, "SRV") && strcasecmp(t, "A") && strcasecmp(t, "AAAA") &&
                   strcasecmp(t, "MX"))) {
            bad = cfg_error(c, v[1], q, "invalid DNS-SD records type %s", t ? t : "");
            continue;
        }
        d->type = !strcasecmp(t, "A") ? ns_t_a : !strcasecmp(t, "AAAA") ? ns_t_aaaa
                : !strcasecmp(t, "MX") ? ns_t_mx : ns_t_srv;
        P(q, "%s.port", p);
        long long port = 0;
        if (v[2] && cfg_get_int(c, v[2], q, 0, 65535, &port))
            bad = -EINVAL;
        d->port = (uint16_t)port;
        if (d->type != ns_t_srv && !d->port)
            bad = cfg_error(c, it, p, "a port is required in DNS-SD configs for all record types "
                                      "except SRV");
        P(q, "%s.refresh_interval", p);
        if (v[3])
            bad |= cfg_get_duration(c, v[3], q, &d->refresh_ms);
    }
    return bad;
}

#define K8S_SA "/var/run/secrets/kubernetes.io/serviceaccount"

/* kubernetes_sd_configs, as Prometheus reads them: role (pod, service, endpoints,
 * node), api_server (absent: the cluster the pod runs in, with its service account),
 * namespaces {names, own_namespace}, selectors [{role, label, field}],
 * bearer_token(_file) or authorization {credentials(_file)}, tls_config {ca_file,
 * insecure_skip_verify}. */
/* A file named by the configuration, made absolute against its directory (malloc'd;
 * p is taken over). */
static char *config_file(const char *base_dir, char *p)
{
    char *out = NULL;
    if (!p || p[0] == '/')
        return p;
    if (asprintf(&out, "%s/%s", base_dir, p) < 0)
        out = NULL;
    free(p);
    return out;
}

static int parse_k8s_sd(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                        struct prom_job *j)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of {role, api_server, namespaces, ...}");
    j->k8s_sd = calloc(cfg_len(n) + 1, sizeof(*j->k8s_sd));
    if (!j->k8s_sd)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "role", "api_server", "namespaces", "selectors", "bearer_token",
                                            "bearer_token_file", "authorization", "tls_config",
                                            "follow_redirects", "enable_http2", "attach_metadata", NULL };
        cfg_node *v[ARRAY_SIZE(keys)];
        char p[340], q[360];
        P(p, "%s[%zu]", path, i);
        const cfg_node *it = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, it, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct prom_k8s_sd *k = &j->k8s_sd[j->nk8s_sd++];
        P(q, "%s.role", p);
        const char *role = v[0] ? cfg_scalar(v[0]) : NULL;
        static const char *const roles[] = { "pod", "service", "endpoints", "node" };
        int r = -1;
        for (int x = 0; role && x < 4; x++)
            if (!strcmp(role, roles[x]))
                r = x;
        if (!v[0])
            bad = cfg_error(c, it, p, "role missing (one of pod, service, endpoints, node)");
        else if (r < 0)
            bad = cfg_error(c, v[0], q, "unknown Kubernetes SD role \"%s\" (pod, service, endpoints, node; "
                                        "endpointslice and ingress are not read yet)", role ? role : "");
        k->role = r < 0 ? K8S_POD : (enum prom_k8s_role)r;
        P(q, "%s.api_server", p);
        if (v[1]) {
            bad |= cfg_get_string(c, v[1], q, &k->api_server);
            if (k->api_server && strncmp(k->api_server, "https://", 8) && strncmp(k->api_server, "http://", 7))
                bad = cfg_error(c, v[1], q, "expected an http:// or https:// URL");
        } else {
            /* in a pod: the API server's Service (found at each refresh, so that a file
             * naming no api_server checks anywhere) and the pod's service account */
            k->token_file = strdup(K8S_SA "/token");
            k->ca_file = strdup(K8S_SA "/ca.crt");
        }
        if (v[2]) {
            static const char *const nk[] = { "names", "own_namespace", NULL };
            cfg_node *nv[2];
            P(q, "%s.namespaces", p);
            if (cfg_map_fields(c, v[2], q, nk, nv) == 0) {
                char q2[380];
                P(q2, "%s.names", q);
                if (nv[0])
                    bad |= cfg_get_string_list(c, nv[0], q2, &k->namespaces, &k->nnamespaces);
                P(q2, "%s.own_namespace", q);
                if (nv[1])
                    bad |= cfg_get_bool(c, nv[1], q2, &k->own_namespace);
            } else {
                bad = -EINVAL;
            }
        }
        P(q, "%s.selectors", p);
        for (size_t s = 0; v[3] && cfg_is_seq(v[3]) && s < cfg_len(v[3]); s++) {
            static const char *const sk[] = { "role", "label", "field", NULL };
            cfg_node *sv[3];
            char q2[380];
            P(q2, "%s[%zu]", q, s);
            if (cfg_map_fields(c, cfg_seq_item(c, v[3], s), q2, sk, sv)) {
                bad = -EINVAL;
                continue;
            }
            if (!sv[0] || !cfg_scalar(sv[0]) || strcmp(cfg_scalar(sv[0]), roles[k->role])) {
                bad = cfg_error(c, cfg_seq_item(c, v[3], s), q2, "selectors of role %s only (for this role)",
                                roles[k->role]);
                continue;
            }
            if (sv[1])
                bad |= cfg_get_string(c, sv[1], q2, &k->label_selector);
            if (sv[2])
                bad |= cfg_get_string(c, sv[2], q2, &k->field_selector);
        }
        if (v[3] && !cfg_is_seq(v[3]))
            bad = cfg_error(c, v[3], q, "expected a list of {role, label, field}");
        P(q, "%s.bearer_token", p);
        if (v[4])
            bad |= cfg_get_string(c, v[4], q, &k->token);
        P(q, "%s.bearer_token_file", p);
        char *tf = NULL;
        if (v[5] && !(bad |= cfg_get_string(c, v[5], q, &tf))) {
            free(k->token_file);
            k->token_file = config_file(base_dir, tf);
        }
        if (v[6]) {
            static const char *const ak[] = { "type", "credentials", "credentials_file", NULL };
            cfg_node *av[3];
            P(q, "%s.authorization", p);
            if (cfg_map_fields(c, v[6], q, ak, av) == 0) {
                char q2[380];
                P(q2, "%s.credentials", q);
                if (av[1])
                    bad |= cfg_get_string(c, av[1], q2, &k->token);
                P(q2, "%s.credentials_file", q);
                if (av[2] && !(bad |= cfg_get_string(c, av[2], q2, &tf))) {
                    free(k->token_file);
                    k->token_file = config_file(base_dir, tf);
                }
            } else {
                bad = -EINVAL;
            }
        }
        if (v[7]) {
            static const char *const tk[] = { "ca_file", "insecure_skip_verify", "server_name", NULL };
            cfg_node *tv[3];
            P(q, "%s.tls_config", p);
            if (cfg_map_fields(c, v[7], q, tk, tv) == 0) {
                char q2[380];
                P(q2, "%s.ca_file", q);
                char *ca = NULL;
                if (tv[0] && !(bad |= cfg_get_string(c, tv[0], q2, &ca))) {
                    free(k->ca_file);
                    k->ca_file = config_file(base_dir, ca);
                }
                P(q2, "%s.insecure_skip_verify", q);
                if (tv[1])
                    bad |= cfg_get_bool(c, tv[1], q2, &k->insecure);
            } else {
                bad = -EINVAL;
            }
        }
    }
    return bad;
}

static void k8s_sd_free(struct prom_k8s_sd *k)
{
    free(k->api_server);
    cfg_free_string_list(k->namespaces, k->nnamespaces);
    free(k->label_selector);
    free(k->field_selector);
    free(k->token_file);
    free(k->token);
    free(k->ca_file);
}

static int parse_job(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                     struct prom_conf *pc, struct prom_job *j)
{
    static const char *const keys[] = { "job_name", "scrape_interval", "scrape_timeout",
                                        "metrics_path", "scheme", "params", "honor_labels",
                                        "honor_timestamps", "sample_limit", "label_limit",
                                        "body_size_limit", "static_configs", "relabel_configs",
                                        "metric_relabel_configs", "file_sd_configs",
                                        "dns_sd_configs", "kubernetes_sd_configs", NULL };
    cfg_node *v[17];
    char p[300];
    j->interval_ms = pc->scrape_interval_ms;
    j->timeout_ms = pc->scrape_timeout_ms;
    j->honor_timestamps = true;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.job_name", path);
    if (!v[0])
        bad = cfg_error(c, n, path, "missing key \"job_name\"");
    else
        bad |= cfg_get_string(c, v[0], p, &j->name);
    P(p, "%s.scrape_interval", path);
    if (v[1])
        bad |= cfg_get_duration(c, v[1], p, &j->interval_ms);
    P(p, "%s.scrape_timeout", path);
    if (v[2])
        bad |= cfg_get_duration(c, v[2], p, &j->timeout_ms);
    else if (j->timeout_ms > j->interval_ms)
        j->timeout_ms = j->interval_ms;
    if (j->interval_ms < 100)
        bad = cfg_error(c, v[1] ? v[1] : n, path, "scrape_interval must be at least 100ms");
    if (j->timeout_ms > j->interval_ms)
        bad = cfg_error(c, v[2] ? v[2] : n, path,
                        "scrape timeout greater than scrape interval for scrape config with job "
                        "name \"%s\"", j->name ? j->name : "");
    P(p, "%s.metrics_path", path);
    if (v[3])
        bad |= cfg_get_string(c, v[3], p, &j->metrics_path);
    if (!j->metrics_path)
        j->metrics_path = strdup("/metrics");
    P(p, "%s.scheme", path);
    if (v[4]) {
        if (cfg_get_string(c, v[4], p, &j->scheme) == 0 && strcmp(j->scheme, "http") &&
            strcmp(j->scheme, "https"))
            bad = cfg_error(c, v[4], p, "expected http or https");
    }
    if (!j->scheme)
        j->scheme = strdup("http");
    P(p, "%s.params", path);
    if (v[5]) {
        if (!cfg_is_map(v[5])) {
            bad = cfg_error(c, v[5], p, "expected a mapping of names to lists of values");
        } else {
            struct buf q = BUF_INIT;
            for (size_t i = 0; i < cfg_len(v[5]); i++) {
                const char *name = cfg_scalar(cfg_map_key(c, v[5], i));
                char **vals;
                size_t nv;
                char pp[340];
                P(pp, "%s.%s", p, name ? name : "?");
                if (!name || cfg_get_string_list(c, cfg_map_value(c, v[5], i), pp, &vals, &nv)) {
                    bad = -EINVAL;
                    continue;
                }
                for (size_t k = 0; k < nv; k++) {
                    if (buf_used(&q))
                        buf_putc(&q, '&');
                    for (const char *s = name; *s; s++)
                        buf_printf(&q, (*s == ' ' || *s == '&' || *s == '=' || *s == '%' ||
                                        *s == '#' || *s == '+') ? "%%%02X" : "%c", (unsigned char)*s);
                    buf_putc(&q, '=');
                    for (const char *s = vals[k]; *s; s++)
                        buf_printf(&q, (*s == ' ' || *s == '&' || *s == '=' || *s == '%' ||
                                        *s == '#' || *s == '+') ? "%%%02X" : "%c", (unsigned char)*s);
                }
                cfg_free_string_list(vals, nv);
            }
            j->query = buf_used(&q) ? buf_steal(&q) : NULL;
            buf_free(&q);
        }
    }
    P(p, "%s.honor_labels", path);
    if (v[6])
        bad |= cfg_get_bool(c, v[6], p, &j->honor_labels);
    P(p, "%s.honor_timestamps", path);
    if (v[7])
        bad |= cfg_get_bool(c, v[7], p, &j->honor_timestamps);
    long long x;
    P(p, "%s.sample_limit", path);
    if (v[8] && cfg_get_int(c, v[8], p, 0, 1LL << 40, &x) == 0)
        j->sample_limit = (uint64_t)x;
    else if (v[8])
        bad = -EINVAL;
    P(p, "%s.label_limit", path);
    if (v[9] && cfg_get_int(c, v[9], p, 0, TSDB_MAX_LABELS, &x) == 0)
        j->label_limit = (uint64_t)x;
    else if (v[9])
        bad = -EINVAL;
    P(p, "%s.body_size_limit", path);
    if (v[10])
        bad |= cfg_get_size(c, v[10], p, &j->body_size_limit);
    P(p, "%s.static_configs", path);
    if (v[11]) {
        if (!cfg_is_seq(v[11])) {
            bad = cfg_error(c, v[11], p, "expected a list of {targets, labels}");
        } else {
            j->nstatics = cfg_len(v[11]);
            j->statics = calloc(j->nstatics ? j->nstatics : 1, sizeof(*j->statics));
            for (size_t i = 0; j->statics && i < j->nstatics; i++) {
                static const char *const sk[] = { "targets", "labels", NULL };
                cfg_node *sv[2];
                char sp[340], q[360];
                P(sp, "%s[%zu]", p, i);
                if (cfg_map_fields(c, cfg_seq_item(c, v[11], i), sp, sk, sv)) {
                    bad = -EINVAL;
                    continue;
                }
                P(q, "%s.targets", sp);
                if (sv[0] && cfg_get_string_list(c, sv[0], q, &j->statics[i].targets,
                                                 &j->statics[i].ntargets) == 0) {
                    for (size_t k = 0; k < j->statics[i].ntargets; k++) {
                        const char *t = j->statics[i].targets[k];
                        const char *colon = strrchr(t, ':');
                        if (!colon || colon == t || !colon[1] || strchr(t, '/'))
                            bad = cfg_error(c, sv[0], q, "expected host:port, got \"%s\"", t);
                    }
                } else if (sv[0]) {
                    bad = -EINVAL;
                }
                P(q, "%s.labels", sp);
                if (sv[1])
                    bad |= parse_labels(c, sv[1], q, &j->statics[i].labels,
                                        &j->statics[i].nlabels);
            }
        }
    }
    P(p, "%s.relabel_configs", path);
    if (v[12])
        bad |= relabel_parse(c, v[12], p, &j->relabel, &j->nrelabel);
    P(p, "%s.metric_relabel_configs", path);
    if (v[13])
        bad |= relabel_parse(c, v[13], p, &j->metric_relabel, &j->nmetric_relabel);
    P(p, "%s.file_sd_configs", path);
    if (v[14] && !cfg_is_null(v[14]))
        bad |= parse_file_sd(c, v[14], p, base_dir, j);
    P(p, "%s.dns_sd_configs", path);
    if (v[15] && !cfg_is_null(v[15]))
        bad |= parse_dns_sd(c, v[15], p, j);
    P(p, "%s.kubernetes_sd_configs", path);
    if (v[16] && !cfg_is_null(v[16]))
        bad |= parse_k8s_sd(c, v[16], p, base_dir, j);
    return bad ? -EINVAL : 0;
}

static int parse_prometheus(struct cfg *c, const cfg_node *n, const char *path,
                            const char *base_dir, struct prom_conf *pc)
{
    static const char *const keys[] = { "global", "scrape_configs", "rule_files", "alerting",
                                        "remote_write", "remote_read", "storage", NULL };
    cfg_node *v[7];
    char p[300];
    pc->scrape_interval_ms = 60000;
    pc->scrape_timeout_ms = 10000;
    pc->evaluation_interval_ms = 60000;
    if (cfg_is_null(n))
        return 0;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    if (v[0]) {
        static const char *const gk[] = { "scrape_interval", "scrape_timeout",
                                          "evaluation_interval", "external_labels", NULL };
        cfg_node *gv[4];
        P(p, "%s.global", path);
        if (cfg_map_fields(c, v[0], p, gk, gv) == 0) {
            char q[320];
            P(q, "%s.scrape_interval", p);
            if (gv[0])
                bad |= cfg_get_duration(c, gv[0], q, &pc->scrape_interval_ms);
            P(q, "%s.scrape_timeout", p);
            if (gv[1])
                bad |= cfg_get_duration(c, gv[1], q, &pc->scrape_timeout_ms);
            else if (pc->scrape_timeout_ms > pc->scrape_interval_ms)
                pc->scrape_timeout_ms = pc->scrape_interval_ms;
            P(q, "%s.evaluation_interval", p);
            if (gv[2])
                bad |= cfg_get_duration(c, gv[2], q, &pc->evaluation_interval_ms);
            P(q, "%s.external_labels", p);
            if (gv[3])
                bad |= parse_labels(c, gv[3], q, &pc->external_labels, &pc->nexternal);
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.scrape_configs", path);
    if (v[1]) {
        if (!cfg_is_seq(v[1])) {
            bad = cfg_error(c, v[1], p, "expected a list of scrape configs");
        } else {
            pc->njobs = cfg_len(v[1]);
            pc->jobs = calloc(pc->njobs ? pc->njobs : 1, sizeof(*pc->jobs));
            if (!pc->jobs)
                return -ENOMEM;
            for (size_t i = 0; i < pc->njobs; i++) {
                char q[320];
                P(q, "%s[%zu]", p, i);
                bad |= parse_job(c, cfg_seq_item(c, v[1], i), q, base_dir, pc, &pc->jobs[i]);
                for (size_t k = 0; k < i; k++)
                    if (pc->jobs[i].name && pc->jobs[k].name &&
                        strcmp(pc->jobs[i].name, pc->jobs[k].name) == 0)
                        bad = cfg_error(c, cfg_seq_item(c, v[1], i), q,
                                        "found multiple scrape configs with job name \"%s\"",
                                        pc->jobs[i].name);
            }
        }
    }
    if (v[2] || v[3])
        bad |= prom__rules_parse(c, v[2], v[3], path, base_dir, pc);
    if (v[6] && !cfg_is_null(v[6])) {
        /* storage: {tsdb: {out_of_order_time_window: 30m}} (Prometheus 2.39+) */
        static const char *const sk[] = { "tsdb", "exemplars", NULL };
        static const char *const tk[] = { "out_of_order_time_window", NULL };
        cfg_node *sv[2], *tv[1];
        P(p, "%s.storage", path);
        if (cfg_map_fields(c, v[6], p, sk, sv) == 0) {
            char q[320];
            P(q, "%s.tsdb", p);
            if (sv[0] && !cfg_is_null(sv[0])) {
                if (cfg_map_fields(c, sv[0], q, tk, tv) == 0) {
                    char r[340];
                    P(r, "%s.out_of_order_time_window", q);
                    if (tv[0])
                        bad |= cfg_get_duration(c, tv[0], r, &pc->ooo_window_ms);
                } else {
                    bad = -EINVAL;
                }
            }
            if (sv[1] && !cfg_is_null(sv[1])) {
                static const char *const ek[] = { "max_exemplars", NULL };
                cfg_node *ev[1];
                P(q, "%s.exemplars", p);
                if (cfg_map_fields(c, sv[1], q, ek, ev) == 0) {
                    char r[340];
                    long long mx;
                    P(r, "%s.max_exemplars", q);
                    if (ev[0] && !(bad |= cfg_get_int(c, ev[0], r, 0, 10000000, &mx)))
                        pc->max_exemplars = (uint64_t)mx;
                } else {
                    bad = -EINVAL;
                }
            }
        } else {
            bad = -EINVAL;
        }
    }
    static const char *const later[] = { NULL, NULL, NULL, NULL, "remote_write", "remote_read" };
    for (int i = 4; i < 6; i++)
        if (v[i] && !cfg_is_null(v[i]))
            bad = cfg_error(c, v[i], path, "%s is not supported by cairn yet", later[i]);
    return bad ? -EINVAL : 0;
}

static int parse_prometheus_cb(struct cfg *c, const cfg_node *root, const char *path, const char *dir,
                               void *arg)
{
    return parse_prometheus(c, root, path, dir, arg);
}

int prom__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "prometheus", "retention",
                                        "max_series", "query_timeout", "query_max_samples",
                                        "query_lookback_delta", "resolver", "retention_size",
                                        "block_duration", "enable_admin_api", NULL };
    cfg_node *v[12];
    char p[256];
    struct prom_conf *pc = calloc(1, sizeof(*pc));
    if (!pc)
        return cfg_error(c, map, path, "out of memory");
    svc->conf = pc;
    pc->retention_ms = 15ull * 86400 * 1000;
    pc->max_exemplars = 100000;
    pc->max_series = 0;
    pc->query_timeout_ms = 120000;
    pc->query_max_samples = 50000000;
    pc->lookback_ms = 300000;
    int bad = cfg_map_fields(c, map, path, keys, v);
    P(p, "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, pc->listen, PROM_MAX_LISTEN, &pc->nlisten,
                                "http", "http", "127.0.0.1:9090", false);
    P(p, "%s.prometheus", path);
    int nr = stack_native_config(c, v[2], p, svc, "prometheus", NULL, parse_prometheus_cb, pc,
                                 &pc->config_text);
    if (nr < 0) {
        bad = -EINVAL;
    } else if (nr == 1) {
        pc->generated = true;
        pc->scrape_interval_ms = 15000;
        pc->scrape_timeout_ms = 10000;
        pc->evaluation_interval_ms = 15000;
    } else if (!pc->config_text) {
        pc->config_text = strdup("# the prometheus: mapping inline in the stack file\n");
    }
    P(p, "%s.retention", path);
    if (v[3])
        bad |= cfg_get_duration(c, v[3], p, &pc->retention_ms);
    P(p, "%s.max_series", path);
    long long x;
    if (v[4] && cfg_get_int(c, v[4], p, 0, 1LL << 40, &x) == 0)
        pc->max_series = (uint64_t)x;
    else if (v[4])
        bad = -EINVAL;
    P(p, "%s.query_timeout", path);
    if (v[5])
        bad |= cfg_get_duration(c, v[5], p, &pc->query_timeout_ms);
    P(p, "%s.query_max_samples", path);
    if (v[6] && cfg_get_int(c, v[6], p, 1, 1LL << 40, &x) == 0)
        pc->query_max_samples = (uint64_t)x;
    else if (v[6])
        bad = -EINVAL;
    P(p, "%s.query_lookback_delta", path);
    if (v[7] && cfg_get_duration(c, v[7], p, &pc->lookback_ms) == 0 && pc->lookback_ms == 0)
        bad = cfg_error(c, v[7], p, "must be more than 0s");
    else if (v[7] && pc->lookback_ms == 0)
        bad = -EINVAL;
    P(p, "%s.retention_size", path);
    if (v[9])
        bad |= cfg_get_size(c, v[9], p, &pc->retention_bytes);
    P(p, "%s.block_duration", path);
    pc->block_ms = 2 * 3600 * 1000;
    if (v[10] && cfg_get_duration(c, v[10], p, &pc->block_ms) == 0 && pc->block_ms < 60000)
        bad = cfg_error(c, v[10], p, "must be at least 1m");
    else if (v[10] && pc->block_ms < 60000)
        bad = -EINVAL;
    P(p, "%s.enable_admin_api", path);
    if (v[11])
        bad |= cfg_get_bool(c, v[11], p, &pc->admin_api);
    P(p, "%s.resolver", path);
    if (v[8]) {
        if (cfg_get_addr(c, v[8], p, &pc->resolver))
            bad = -EINVAL;
        else if (pc->resolver.ss.ss_family != AF_INET)
            bad = cfg_error(c, v[8], p, "the resolver must be an IPv4 address");
        else
            pc->have_resolver = true;
    }
    return bad ? -EINVAL : 0;
}

static void free_labels(struct tsdb_label *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((void *)l[i].name);
        free((void *)l[i].value);
    }
    free(l);
}

void prom__free_conf(void *conf)
{
    struct prom_conf *pc = conf;
    if (!pc)
        return;
    for (size_t i = 0; i < pc->njobs; i++) {
        struct prom_job *j = &pc->jobs[i];
        free(j->name);
        free(j->metrics_path);
        free(j->scheme);
        free(j->query);
        for (size_t k = 0; k < j->nstatics; k++) {
            cfg_free_string_list(j->statics[k].targets, j->statics[k].ntargets);
            free_labels(j->statics[k].labels, j->statics[k].nlabels);
        }
        free(j->statics);
        relabel_free(j->relabel, j->nrelabel);
        relabel_free(j->metric_relabel, j->nmetric_relabel);
        for (size_t k = 0; k < j->nfile_sd; k++)
            cfg_free_string_list(j->file_sd[k].files, j->file_sd[k].nfiles);
        free(j->file_sd);
        for (size_t k = 0; k < j->ndns_sd; k++)
            cfg_free_string_list(j->dns_sd[k].names, j->dns_sd[k].nnames);
        free(j->dns_sd);
        for (size_t k = 0; k < j->nk8s_sd; k++)
            k8s_sd_free(&j->k8s_sd[k]);
        free(j->k8s_sd);
    }
    free(pc->jobs);
    free_labels(pc->external_labels, pc->nexternal);
    free(pc->config_text);
    prom__rules_free_conf(pc);
    free(pc);
}
