/* la_main.c - role "log-agent": start, the generated configuration, stop.
 *
 * Without a promtail: key the agent ships its own stack's logs: `cairn up` writes
 * each service's stderr to <data_dir>/log/<service>.log, and the agent tails those
 * with labels {service, role, level} (level read from the logfmt line) into the
 * stack's logs service, and receives syslog on 127.0.0.1:5514 (UDP and TCP) with
 * labels {job="syslog", host, app, level}.
 *
 * One thread: the HTTP port (/metrics, /ready), the file poller, the clients and
 * the syslog sockets share one loop.
 */
#include "logagent_internal.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LA_DRAIN_MS 5000

const struct role_ops log_agent_role = {
    .name = "log-agent",
    .deploy = ROLE_DEPLOY_PER_NODE,
    .summary = "log shipper: tails files and receives syslog into a Loki push API (Promtail's YAML)",
    .parse = la__parse,
    .main = log_agent_main,
    .free_conf = la__free_conf,
};

bool la__process(struct la_svc *s, const struct la_job *job, struct la_entry *e)
{
    (void)s;
    if (job->nrelabel && !relabel_apply(job->relabel, job->nrelabel, &e->labels))
        return false;
    struct la_extracted x;
    memset(&x, 0, sizeof(x));
    bool keep = la__pipeline(job->stages, job->nstages, e, &x);
    relabel_set_clear(&x.v);
    return keep;
}

static void handle(struct httpd_req *r, void *arg)
{
    struct la_svc *s = arg;
    if (service_handle_builtin(s->sc, r))
        return;
    if (strv_eq_cstr(r->h.path, "/ready")) {
        const char *m = s->sc->ready ? "Ready\n" : "Not ready\n";
        httpd_respond(r, s->sc->ready ? 200 : 503, "text/plain; charset=utf-8", m, strlen(m));
        return;
    }
    httpd_respond(r, 404, "text/plain; charset=utf-8", "404 page not found\n", 19);
}

static struct relabel_label lbl(const char *n, const char *v)
{
    return (struct relabel_label){ strdup(n), strdup(v) };
}

/* The configuration of a stack's own agent. */
static int generate(struct la_svc *s)
{
    const struct stack *st = s->svc->stack;
    const struct service *logs = NULL;
    for (size_t i = 0; i < st->nservices; i++)
        if (!strcmp(st->services[i].role->name, "logs") && st->services[i].nendpoints && !logs)
            logs = &st->services[i];
    if (logs) {
        char url[200], err[256];
        snprintf(url, sizeof(url), "%sloki/api/v1/push", logs->endpoints[0].url);
        s->gen_clients = calloc(1, sizeof(*s->gen_clients));
        if (!s->gen_clients)
            return -ENOMEM;
        struct la_client_conf *cc = &s->gen_clients[0];
        if (stack_url_parse(url, &cc->url, err, sizeof(err))) {
            log_error("log-agent: cannot use the logs service's address", "url", url, "error", err);
            return -EINVAL;
        }
        cc->batch_wait_ms = 1000;
        cc->batch_size = 1048576;
        cc->backoff_min_ms = 500;
        cc->backoff_max_ms = 30000;
        cc->timeout_ms = 10000;
        s->ngen_clients = 1;
    } else {
        log_warn("log-agent: no logs service in this stack and no promtail: key; lines are read and dropped");
    }
    s->gen_jobs = calloc(2, sizeof(*s->gen_jobs));
    if (!s->gen_jobs)
        return -ENOMEM;
    struct la_job *files = &s->gen_jobs[0], *sys = &s->gen_jobs[1];
    s->ngen_jobs = 2;
    files->name = strdup("cairn");
    files->targets = calloc(st->nservices + 1, sizeof(*files->targets));
    if (!files->name || !files->targets)
        return -ENOMEM;
    for (size_t i = 0; i < st->nservices; i++) {
        const struct service *svc = &st->services[i];
        struct la_target *t = &files->targets[files->ntargets++];
        char p[600];
        snprintf(p, sizeof(p), "%s/log/%s.log", st->data_dir, svc->name);
        t->path_glob = strdup(p);
        t->labels = calloc(3, sizeof(*t->labels));
        if (!t->path_glob || !t->labels)
            return -ENOMEM;
        t->labels[0] = lbl("service", svc->name);
        t->labels[1] = lbl("role", svc->role->name);
        t->labels[2] = lbl("job", "cairn");
        t->nlabels = 3;
    }
    /* level from the logfmt line (the supervisor's and every service's format) */
    files->stages = calloc(2, sizeof(*files->stages));
    if (!files->stages)
        return -ENOMEM;
    files->nstages = 2;
    files->stages[0].kind = LA_LOGFMT;
    files->stages[0].kv = calloc(1, sizeof(struct la_kv));
    files->stages[1].kind = LA_LABELS;
    files->stages[1].kv = calloc(1, sizeof(struct la_kv));
    if (!files->stages[0].kv || !files->stages[1].kv)
        return -ENOMEM;
    files->stages[0].kv[0] = (struct la_kv){ strdup("level"), strdup("level") };
    files->stages[0].nkv = 1;
    files->stages[1].kv[0] = (struct la_kv){ strdup("level"), strdup("") };
    files->stages[1].nkv = 1;
    /* syslog on 5514 */
    sys->name = strdup("syslog");
    sys->syslog = calloc(1, sizeof(*sys->syslog));
    if (!sys->name || !sys->syslog || net_addr_parse("127.0.0.1:5514", &sys->syslog->addr))
        return -ENOMEM;
    sys->syslog->udp = sys->syslog->tcp = true;
    sys->syslog->labels = calloc(1, sizeof(*sys->syslog->labels));
    if (!sys->syslog->labels)
        return -ENOMEM;
    sys->syslog->labels[0] = lbl("job", "syslog");
    sys->syslog->nlabels = 1;
    static const char *const map[][2] = {
        { "__syslog_message_hostname", "host" },
        { "__syslog_message_app_name", "app" },
        { "__syslog_message_severity", "level" },
    };
    sys->relabel = calloc(3, sizeof(*sys->relabel));
    if (!sys->relabel)
        return -ENOMEM;
    for (int i = 0; i < 3; i++) {
        struct relabel_rule *r = &sys->relabel[i];
        r->source = calloc(1, sizeof(char *));
        if (!r->source)
            return -ENOMEM;
        r->source[0] = strdup(map[i][0]);
        r->nsource = 1;
        r->separator = strdup(";");
        r->target = strdup(map[i][1]);
        r->regex_text = strdup("(.*)");
        r->replacement = strdup("$1");
        r->action = RELABEL_REPLACE;
        int code;
        PCRE2_SIZE off;
        r->re = pcre2_compile((PCRE2_SPTR) "^(?:(.*))$", PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
        if (!r->re)
            return -ENOMEM;
    }
    sys->nrelabel = 3;
    return 0;
}

static void free_generated(struct la_svc *s)
{
    if (!s->gen_jobs && !s->gen_clients)
        return;
    /* the generated parts are built like a parsed configuration: free them the same way */
    struct la_conf *tmp = calloc(1, sizeof(*tmp));
    if (!tmp)
        return;
    tmp->jobs = s->gen_jobs;
    tmp->njobs = s->ngen_jobs;
    tmp->clients = s->gen_clients;
    tmp->nclients = s->ngen_clients;
    la__free_conf(tmp);
    s->gen_jobs = NULL;
    s->gen_clients = NULL;
}

static int la_start(struct service_ctx *sc)
{
    struct la_svc *s = sc->role;
    struct la_conf *c = s->conf;
    s->sc = sc;
    s->udp_fd = s->tcp_fd = -1;
    struct metrics_registry *reg = sc->reg;
    s->m_read_lines = metrics_counter(reg, "cairn_log_agent_read_lines_total", "Lines read from files.");
    s->m_read_bytes = metrics_counter(reg, "cairn_log_agent_read_bytes_total", "Bytes of lines read from files.");
    s->m_sent = metrics_counter(reg, "cairn_log_agent_sent_entries_total", "Entries accepted by the store.");
    s->m_sent_bytes = metrics_counter(reg, "cairn_log_agent_sent_bytes_total", "Bytes of lines accepted by the store.");
    s->m_dropped = metrics_counter(reg, "cairn_log_agent_dropped_entries_total",
                                   "Entries dropped: refused by the store (4xx), or syslog past the buffer.");
    s->m_retries = metrics_counter(reg, "cairn_log_agent_push_retries_total", "Pushes retried after 429, 5xx or a connection error.");
    s->m_files = metrics_gauge(reg, "cairn_log_agent_files", "Files being tailed.");
    s->m_syslog = metrics_counter(reg, "cairn_log_agent_syslog_messages_total", "Syslog messages received.");
    s->m_syslog_bad = metrics_counter(reg, "cairn_log_agent_syslog_malformed_total", "Syslog messages that did not parse.");
    s->m_buffered = metrics_gauge(reg, "cairn_log_agent_buffered_bytes", "Bytes waiting to be accepted by the store.");
    if (!s->m_read_lines || !s->m_read_bytes || !s->m_sent || !s->m_sent_bytes || !s->m_dropped || !s->m_retries ||
        !s->m_files || !s->m_syslog || !s->m_syslog_bad || !s->m_buffered)
        return -ENOMEM;
    if (c->generated) {
        int r = generate(s);
        if (r)
            return r;
        s->jobs = s->gen_jobs;
        s->njobs = s->ngen_jobs;
        s->cconf = s->gen_clients;
        s->ncconf = s->ngen_clients;
    } else {
        s->jobs = c->jobs;
        s->njobs = c->njobs;
        s->cconf = c->clients;
        s->ncconf = c->nclients;
    }
    char *dir = stack_data_path(s->svc->stack, c->data);
    if (!dir)
        return -ENOMEM;
    int r = cairn_mkdir_p(dir, 0755);
    if (r) {
        log_error("log-agent: cannot create its directory", "dir", dir, "error", cairn_strerror(r));
        free(dir);
        return r;
    }
    if (c->positions_file) {
        s->positions_path = stack_path(s->svc->stack, c->positions_file);
    } else {
        size_t n = strlen(dir) + 32;
        s->positions_path = malloc(n);
        if (s->positions_path)
            snprintf(s->positions_path, n, "%s/positions.yaml", dir);
    }
    free(dir);
    if (!s->positions_path)
        return -ENOMEM;
    httpd_conf_defaults(&s->hconf);
    s->hconf.handler = handle;
    s->hconf.handler_arg = s;
    r = service_http_pool_start(sc, &s->pool, 1, &s->hconf, c->listen, c->nlisten, LA_DRAIN_MS);
    if (r)
        return r;
    s->loop = &s->pool.w[0].loop;
    struct httpc_opts ho;
    httpc_opts_defaults(&ho);
    if (!(s->hc = httpc_new(s->loop, &ho)))
        return -ENOMEM;
    if ((r = la__clients_start(s)) || (r = la__syslog_start(s)) || (r = la__files_start(s)))
        return r;
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->listen[0], first, sizeof(first));
    log_info("log-agent serving", "addr", first, "jobs", log_int((long long)s->njobs), "clients",
             log_int((long long)s->ncconf), "positions", s->positions_path,
             "config", c->generated ? "generated: this stack's service logs and syslog" : "promtail");
    return 0;
}

static void la_stop_worker(void *arg)
{
    service_http_pool_stop_worker(arg);
}

static void la_finish(struct service_ctx *sc)
{
    struct la_svc *s = sc->role;
    if (s->loop) {
        la__files_stop(s);
        la__syslog_stop(s);
        la__clients_stop(s);
    }
    httpc_free(&s->hc);
    service_http_pool_free(&s->pool);
    free(s->positions_path);
    free_generated(s);
}

static const struct service_ops la_ops = {
    .start = la_start,
    .stop_worker = la_stop_worker,
    .finish = la_finish,
};

int log_agent_main(const struct service *svc)
{
    struct la_svc s;
    memset(&s, 0, sizeof(s));
    s.svc = svc;
    s.conf = svc->conf;
    return service_run(svc, &la_ops, &s);
}
