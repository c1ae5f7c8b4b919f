/* la_config.c - the log-agent role's keys and Promtail's configuration:
 *
 *   log-agent:
 *     role: log-agent
 *     listen: ["127.0.0.1:9080"]     # /metrics, /-/ready, /ready
 *     data: log-agent                # positions (unless the config names a file), under data_dir
 *     promtail: promtail.yml         # Promtail's YAML, a file or the mapping inline; absent: ship
 *                                    # this stack's own service logs to its logs service, and
 *                                    # receive syslog on 127.0.0.1:5514 (UDP and TCP)
 *
 * From Promtail's file: server (its listen address, when listen: is not given),
 * positions {filename, sync_period}, clients [{url, tenant_id, batchwait,
 * batchsize, external_labels, backoff_config {min_period, max_period}, timeout}],
 * scrape_configs [{job_name, static_configs [{targets, labels (with __path__,
 * __path_exclude__)}], relabel_configs, pipeline_stages, syslog {listen_address,
 * listen_protocol, labels, label_structured_data, use_incoming_timestamp}}].
 */
#include "logagent_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P(buf, ...) CFG_PATH(buf, __VA_ARGS__)

struct pctx {
    struct la_conf *lc;
    const struct service *svc;
    const char *dir;
    bool server_listen;
};

static int parse_labels_map(struct cfg *c, const cfg_node *n, const char *path, struct relabel_label **out,
                            size_t *count)
{
    size_t len = cfg_len(n);
    struct relabel_label *l = calloc(len + 1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    *out = l;
    *count = 0;
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        char *k = NULL, *v = NULL;
        char p[300];
        cfg_node *kn = cfg_map_key(c, n, i);
        if (!kn)
            return cfg_error(c, n, path, "expected a mapping of label names to values");
        if (cfg_get_string(c, kn, path, &k)) {
            bad = -EINVAL;
            continue;
        }
        P(p, "%s.%s", path, k);
        if (cfg_get_string(c, cfg_map_value(c, n, i), p, &v)) {
            free(k);
            bad = -EINVAL;
            continue;
        }
        if (!relabel_label_name_ok(k))
            bad = cfg_error(c, kn, p, "\"%s\" is not a valid label name", k);
        l[(*count)++] = (struct relabel_label){ k, v };
    }
    return bad;
}

static void labels_free(struct relabel_label *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((void *)l[i].name);
        free((void *)l[i].value);
    }
    free(l);
}

static int parse_client(struct cfg *c, const cfg_node *n, const char *path, struct la_client_conf *cc)
{
    static const char *const keys[] = { "url", "tenant_id", "batchwait", "batchsize", "external_labels",
                                        "backoff_config", "timeout", "headers", NULL };
    cfg_node *v[8];
    char p[300];
    int bad = cfg_map_fields(c, n, path, keys, v);
    cc->batch_wait_ms = 1000;
    cc->batch_size = 1048576;
    cc->backoff_min_ms = 500;
    cc->backoff_max_ms = 30000;     /* Promtail: 5m, but never gives up here (files are the buffer) */
    cc->timeout_ms = 10000;
    P(p, "%s.url", path);
    if (!v[0])
        bad = cfg_error(c, n, path, "missing key \"url\" (http://HOST:3100/loki/api/v1/push)");
    else
        bad |= stack_url(c, v[0], p, &cc->url);
    P(p, "%s.tenant_id", path);
    if (v[1])
        bad |= cfg_get_string(c, v[1], p, &cc->tenant);
    P(p, "%s.batchwait", path);
    if (v[2])
        bad |= cfg_get_duration(c, v[2], p, &cc->batch_wait_ms);
    P(p, "%s.batchsize", path);
    long long bs;
    if (v[3] && !(bad |= cfg_get_int(c, v[3], p, 1024, 64LL << 20, &bs)))
        cc->batch_size = (uint64_t)bs;
    P(p, "%s.external_labels", path);
    if (v[4])
        bad |= parse_labels_map(c, v[4], p, &cc->external, &cc->nexternal);
    P(p, "%s.backoff_config", path);
    if (v[5]) {
        static const char *const bk[] = { "min_period", "max_period", "max_retries", NULL };
        cfg_node *b[3];
        bad |= cfg_map_fields(c, v[5], p, bk, b);
        char q[320];
        P(q, "%s.min_period", p);
        if (b[0])
            bad |= cfg_get_duration(c, b[0], q, &cc->backoff_min_ms);
        P(q, "%s.max_period", p);
        if (b[1])
            bad |= cfg_get_duration(c, b[1], q, &cc->backoff_max_ms);
    }
    P(p, "%s.timeout", path);
    if (v[6])
        bad |= cfg_get_duration(c, v[6], p, &cc->timeout_ms);
    return bad ? -EINVAL : 0;
}

static int parse_syslog(struct cfg *c, const cfg_node *n, const char *path, struct la_syslog_conf *sc)
{
    static const char *const keys[] = { "listen_address", "listen_protocol", "labels", "label_structured_data",
                                        "use_incoming_timestamp", "idle_timeout", "max_message_length", NULL };
    cfg_node *v[7];
    char p[300];
    int bad = cfg_map_fields(c, n, path, keys, v);
    P(p, "%s.listen_address", path);
    if (!v[0])
        bad = cfg_error(c, n, path, "missing key \"listen_address\"");
    else
        bad |= cfg_get_addr(c, v[0], p, &sc->addr);
    sc->tcp = true;
    sc->udp = true;
    P(p, "%s.listen_protocol", path);
    if (v[1]) {
        char *proto = NULL;
        if (cfg_get_string(c, v[1], p, &proto) == 0) {
            if (!strcmp(proto, "tcp"))
                sc->udp = false;
            else if (!strcmp(proto, "udp"))
                sc->tcp = false;
            else if (strcmp(proto, "both"))
                bad = cfg_error(c, v[1], p, "expected tcp, udp or both");
        } else {
            bad = -EINVAL;
        }
        free(proto);
    }
    P(p, "%s.labels", path);
    if (v[2])
        bad |= parse_labels_map(c, v[2], p, &sc->labels, &sc->nlabels);
    P(p, "%s.label_structured_data", path);
    if (v[3])
        bad |= cfg_get_bool(c, v[3], p, &sc->structured_data);
    P(p, "%s.use_incoming_timestamp", path);
    if (v[4])
        bad |= cfg_get_bool(c, v[4], p, &sc->incoming_ts);
    return bad ? -EINVAL : 0;
}

static int parse_job(struct cfg *c, const cfg_node *n, const char *path, struct la_job *j)
{
    static const char *const keys[] = { "job_name", "static_configs", "relabel_configs", "pipeline_stages", "syslog",
                                        NULL };
    cfg_node *v[5];
    char p[300];
    int bad = cfg_map_fields(c, n, path, keys, v);
    P(p, "%s.job_name", path);
    if (!v[0])
        bad = cfg_error(c, n, path, "missing key \"job_name\"");
    else
        bad |= cfg_get_string(c, v[0], p, &j->name);
    if (!v[1] == !v[4])
        bad = cfg_error(c, n, path, "a job has static_configs or syslog (one of them)");
    P(p, "%s.static_configs", path);
    if (v[1]) {
        if (!cfg_is_seq(v[1]))
            return cfg_error(c, v[1], p, "expected a list of {targets, labels}");
        j->targets = calloc(cfg_len(v[1]) + 1, sizeof(*j->targets));
        if (!j->targets)
            return -ENOMEM;
        for (size_t i = 0; i < cfg_len(v[1]); i++) {
            static const char *const sk[] = { "targets", "labels", NULL };
            cfg_node *s[2];
            char q[320];
            P(q, "%s[%zu]", p, i);
            const cfg_node *item = cfg_seq_item(c, v[1], i);
            struct la_target *t = &j->targets[j->ntargets++];
            bad |= cfg_map_fields(c, item, q, sk, s);
            if (!s[1]) {
                bad = cfg_error(c, item, q, "missing key \"labels\" (with __path__)");
                continue;
            }
            char q2[340];
            P(q2, "%s.labels", q);
            struct relabel_label *l = NULL;
            size_t nl = 0;
            bad |= parse_labels_map(c, s[1], q2, &l, &nl);
            /* __path__ and __path_exclude__ are taken out of the labels */
            t->labels = calloc(nl + 1, sizeof(*t->labels));
            for (size_t k = 0; k < nl && t->labels; k++) {
                if (!strcmp(l[k].name, "__path__"))
                    t->path_glob = strdup(l[k].value);
                else if (!strcmp(l[k].name, "__path_exclude__"))
                    t->exclude_glob = strdup(l[k].value);
                else {
                    t->labels[t->nlabels++] = (struct relabel_label){ strdup(l[k].name), strdup(l[k].value) };
                    continue;
                }
            }
            labels_free(l, nl);
            if (!t->path_glob)
                bad = cfg_error(c, s[1], q2, "missing label __path__ (a file or a glob of files to tail)");
        }
    }
    P(p, "%s.relabel_configs", path);
    if (v[2])
        bad |= relabel_parse(c, v[2], p, &j->relabel, &j->nrelabel);
    P(p, "%s.pipeline_stages", path);
    if (v[3])
        bad |= la__stages_parse(c, v[3], p, &j->stages, &j->nstages);
    P(p, "%s.syslog", path);
    if (v[4]) {
        if (!(j->syslog = calloc(1, sizeof(*j->syslog))))
            return -ENOMEM;
        bad |= parse_syslog(c, v[4], p, j->syslog);
    }
    return bad ? -EINVAL : 0;
}

static int parse_promtail(struct cfg *c, const cfg_node *root, const char *path, const char *dir, void *arg)
{
    (void)dir;
    struct pctx *x = arg;
    struct la_conf *lc = x->lc;
    static const char *const keys[] = { "server", "positions", "clients", "client", "scrape_configs", "target_config",
                                        "limits_config", NULL };
    cfg_node *v[7];
    char p[300];
    int bad = cfg_map_fields(c, root, path, keys, v);
    if (v[0]) {
        static const char *const sk[] = { "http_listen_address", "http_listen_port", "grpc_listen_port",
                                          "log_level", "disable", NULL };
        cfg_node *s[5];
        P(p, "%s.server", path);
        bad |= cfg_map_fields(c, v[0], p, sk, s);
        if (s[1] && !x->server_listen) {
            long long port;
            char q[320];
            P(q, "%s.http_listen_port", p);
            char *addr = NULL;
            if (s[0])
                cfg_get_string(c, s[0], q, &addr);
            if (!(bad |= cfg_get_int(c, s[1], q, 1, 65535, &port))) {
                char text[300];
                snprintf(text, sizeof(text), "%s:%lld", addr && *addr ? addr : "127.0.0.1", port);
                if (net_addr_parse(text, &lc->listen[0]) == 0)
                    lc->nlisten = 1;
                else
                    bad = cfg_error(c, s[1], q, "cannot listen on %s", text);
            }
            free(addr);
        }
    }
    if (v[1]) {
        static const char *const pk[] = { "filename", "sync_period", "ignore_invalid_yaml", NULL };
        cfg_node *s[3];
        P(p, "%s.positions", path);
        bad |= cfg_map_fields(c, v[1], p, pk, s);
        char q[320];
        P(q, "%s.filename", p);
        if (s[0])
            bad |= cfg_get_string(c, s[0], q, &lc->positions_file);
        P(q, "%s.sync_period", p);
        if (s[1])
            bad |= cfg_get_duration(c, s[1], q, &lc->positions_sync_ms);
    }
    const cfg_node *clients = v[2] ? v[2] : v[3];
    P(p, "%s.clients", path);
    if (clients) {
        size_t nc = cfg_is_seq(clients) ? cfg_len(clients) : 1;
        lc->clients = calloc(nc + 1, sizeof(*lc->clients));
        if (!lc->clients)
            return -ENOMEM;
        for (size_t i = 0; i < nc; i++) {
            char q[320];
            P(q, "%s[%zu]", p, i);
            bad |= parse_client(c, cfg_is_seq(clients) ? cfg_seq_item(c, clients, i) : clients, q,
                                &lc->clients[lc->nclients++]);
        }
    } else {
        bad = cfg_error(c, root, path, "missing key \"clients\" (where to push: [{url: http://HOST:3100/loki/api/v1/push}])");
    }
    P(p, "%s.scrape_configs", path);
    if (v[4]) {
        if (!cfg_is_seq(v[4]))
            return cfg_error(c, v[4], p, "expected a list of jobs");
        lc->jobs = calloc(cfg_len(v[4]) + 1, sizeof(*lc->jobs));
        if (!lc->jobs)
            return -ENOMEM;
        int syslogs = 0;
        for (size_t i = 0; i < cfg_len(v[4]); i++) {
            char q[320];
            P(q, "%s[%zu]", p, i);
            bad |= parse_job(c, cfg_seq_item(c, v[4], i), q, &lc->jobs[lc->njobs++]);
            if (lc->jobs[lc->njobs - 1].syslog && ++syslogs > 1)
                bad = cfg_error(c, cfg_seq_item(c, v[4], i), q, "one syslog job per agent");
        }
    }
    return bad ? -EINVAL : 0;
}

int la__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    struct la_conf *lc = calloc(1, sizeof(*lc));
    if (!lc)
        return -ENOMEM;
    svc->conf = lc;
    lc->positions_sync_ms = 10000;
    lc->poll_ms = 250;
    lc->buffer_bytes = 64ULL << 20;
    static const char *const keys[] = { "role", "listen", "data", "promtail", NULL };
    cfg_node *v[4];
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    struct pctx x = { lc, svc, NULL, v[1] != NULL };
    P(p, "%s.promtail", path);
    int nr = stack_native_config(c, v[3], p, svc, "promtail", NULL, parse_promtail, &x, &lc->config_text);
    if (nr < 0)
        bad = -EINVAL;
    else if (nr == 1)
        lc->generated = true;
    P(p, "%s.listen", path);
    if (v[1] || !lc->nlisten)
        bad |= service_listen_addrs(c, map, v[1], p, svc, lc->listen, LA_MAX_LISTEN, &lc->nlisten, "http", "http",
                                    "127.0.0.1:9080", false);
    else {
        char a[NET_ADDRSTRLEN];
        net_addr_format(&lc->listen[0], a, sizeof(a));
        service_add_endpoint(svc, "http", "http://%s/", a);
        service_add_bind(svc, &lc->listen[0], SOCK_STREAM);
    }
    P(p, "%s.data", path);
    if (v[2])
        bad |= cfg_get_string(c, v[2], p, &lc->data);
    else
        lc->data = strdup(svc->name);
    if (lc->generated) {
        struct net_addr a;
        if (net_addr_parse("127.0.0.1:5514", &a) == 0) {
            service_add_endpoint(svc, "syslog", "syslog://127.0.0.1:5514");
            service_add_bind(svc, &a, SOCK_STREAM);
            service_add_bind(svc, &a, SOCK_DGRAM);
        }
    }
    for (size_t i = 0; i < lc->njobs; i++)
        if (lc->jobs[i].syslog) {
            char a[NET_ADDRSTRLEN];
            net_addr_format(&lc->jobs[i].syslog->addr, a, sizeof(a));
            service_add_endpoint(svc, "syslog", "syslog://%s", a);
            if (lc->jobs[i].syslog->tcp)
                service_add_bind(svc, &lc->jobs[i].syslog->addr, SOCK_STREAM);
            if (lc->jobs[i].syslog->udp)
                service_add_bind(svc, &lc->jobs[i].syslog->addr, SOCK_DGRAM);
        }
    if (!lc->data)
        bad = -ENOMEM;
    return bad ? -EINVAL : 0;
}

void la__free_conf(void *conf)
{
    struct la_conf *lc = conf;
    if (!lc)
        return;
    for (size_t i = 0; i < lc->nclients; i++) {
        stack_url_free(&lc->clients[i].url);
        free(lc->clients[i].tenant);
        labels_free(lc->clients[i].external, lc->clients[i].nexternal);
    }
    free(lc->clients);
    for (size_t i = 0; i < lc->njobs; i++) {
        struct la_job *j = &lc->jobs[i];
        free(j->name);
        for (size_t t = 0; t < j->ntargets; t++) {
            free(j->targets[t].path_glob);
            free(j->targets[t].exclude_glob);
            labels_free(j->targets[t].labels, j->targets[t].nlabels);
        }
        free(j->targets);
        relabel_free(j->relabel, j->nrelabel);
        la__stages_free(j->stages, j->nstages);
        if (j->syslog)
            labels_free(j->syslog->labels, j->syslog->nlabels);
        free(j->syslog);
    }
    free(lc->jobs);
    free(lc->data);
    free(lc->positions_file);
    free(lc->config_text);
    free(lc);
}
