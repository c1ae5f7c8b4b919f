/* tr_main.c - role "traces": start, listeners, housekeeping, span metrics, stop.
 *
 * One worker thread serves every API and owns the store: exports and queries run
 * on it one at a time, so the store needs no locks. A timer writes complete
 * traces into blocks, compacts and applies retention; a graceful stop writes
 * everything into a block.
 *
 * Span metrics (Tempo's metrics generator names) are computed as spans arrive:
 * traces_spanmetrics_calls_total and traces_spanmetrics_latency per service,
 * span name, kind and status (each latency bucket with the trace of its last
 * span as its exemplar, in the OpenMetrics rendering); the service graph pairs a
 * client span with its server child in another service
 * (traces_service_graph_request_total, _failed_total, _server_seconds), and
 * /api/dependencies reads the same edges.
 */
#include "traces_internal.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TR_DRAIN_MS 10000
#define TR_TICK_MS 1000
#define TR_MAX_SERIES 10000                     /* span-metrics label sets, all tenants */

/* the store's directory, as start opens it */
static char *tr_data_dir(const struct service *svc)
{
    const struct traces_conf *c = svc->conf;
    return stack_data_path(svc->stack, c->data);
}

const struct role_ops traces_role = {
    .data_dir = tr_data_dir,
    .name = "traces",
    .deploy = ROLE_DEPLOY_STORE,
    .summary = "trace store: OTLP and Zipkin in; Jaeger, Tempo (TraceQL) and Zipkin query APIs",
    .parse = traces__parse,
    .main = traces_main,
    .free_conf = traces__free_conf,
};

static double g_head_spans(void *arg)
{
    return (double)((struct tr_store *)arg)->head_spans;
}

static double g_head_bytes(void *arg)
{
    return (double)((struct tr_store *)arg)->head_bytes;
}

static double g_blocks(void *arg)
{
    return (double)((struct tr_store *)arg)->nblocks;
}

static double g_flushes(void *arg)
{
    return (double)((struct tr_store *)arg)->flushes;
}

static double g_compactions(void *arg)
{
    return (double)((struct tr_store *)arg)->compactions;
}

static double g_search_skipped(void *arg)
{
    return (double)((struct tr_store *)arg)->search_skipped;
}

static double g_wal(void *arg)
{
    return (double)((struct tr_store *)arg)->wal_total;
}

static double g_flush_errors(void *arg)
{
    return (double)((struct tr_store *)arg)->flush_errors;
}

static double g_block_bytes(void *arg)
{
    struct tr_store *st = arg;
    double n = 0;
    for (size_t i = 0; i < st->nblocks; i++)
        n += (double)st->blocks[i]->size;
    return n;
}

/* ---- span metrics and the service graph ---- */

static struct metric_family *f_calls, *f_latency, *f_edges, *f_edge_failed, *f_edge_latency;
static size_t nseries;

/* One half of a client -> server call, waiting for the other: exporters send each
 * service's spans when they end, so a server span often arrives before the client
 * span that is its parent (the client ends last), and either may come first. */
struct pending {
    bool is_server;                             /* which half this is */
    char service[129];
    bool failed;                                /* the server's status, with is_server */
    double seconds;
    int64_t start;
    uint64_t at_ms;
};

static struct hmap pending_clients;             /* the client span's id (8) -> struct pending */
static uint64_t pending_sweep_ms;

static void edge_note(struct traces_svc *s, const char *tenant, const char *client, struct strv server, bool failed,
                      double seconds, int64_t at)
{
    struct tr_tenant *t = tr_store_tenant(&s->store, tenant, true);
    if (!t)
        return;
    char key[300];
    int kn = snprintf(key, sizeof(key), "%s%c%.*s", client, 0, (int)(server.n > 128 ? 128 : server.n), server.p);
    if (kn <= 0 || (size_t)kn >= sizeof(key))
        return;
    struct tr_edge *e = hmap_get(&t->edges, key, (size_t)kn);
    if (!e) {
        if (t->edges.n >= 10000 || !(e = calloc(1, sizeof(*e))))
            return;
        e->client = strdup(client);
        e->server = strv_dup(server);
        if (!e->client || !e->server || hmap_put(&t->edges, key, (size_t)kn, e)) {
            free(e->client);
            free(e->server);
            free(e);
            return;
        }
    }
    e->calls++;
    e->errors += failed;
    if (at > e->last)
        e->last = at;
    if (nseries < TR_MAX_SERIES) {
        char sv[129];
        snprintf(sv, sizeof(sv), "%.*s", (int)(server.n > 128 ? 128 : server.n), server.p);
        const char *lv[] = { client, sv };
        struct metric *m = metrics_get(f_edges, lv);
        if (m)
            metric_inc(m);
        if (failed && (m = metrics_get(f_edge_failed, lv)))
            metric_inc(m);
        if ((m = metrics_get(f_edge_latency, lv)))
            metric_observe(m, seconds);
    }
}

void traces__span_metrics(struct traces_svc *s, const char *tenant, const uint8_t *p, size_t n)
{
    struct tr_trace_view v = { 0 };
    if (tr_view_add(&v, p, n)) {
        tr_view_free(&v);
        return;
    }
    static const char *const kinds[] = { "SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
                                         "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER" };
    static const char *const codes[] = { "STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR" };
    uint64_t now = cairn_now_ms();
    for (size_t i = 0; i < v.n; i++) {
        const struct tr_span *sp = &v.s[i];
        char svc[129], name[129];
        snprintf(svc, sizeof(svc), "%.*s", (int)(sp->service.n > 128 ? 128 : sp->service.n), sp->service.p);
        snprintf(name, sizeof(name), "%.*s", (int)(sp->name.n > 128 ? 128 : sp->name.n), sp->name.p);
        double secs = sp->end > sp->start ? (double)(sp->end - sp->start) / 1e9 : 0;
        if (nseries < TR_MAX_SERIES) {
            const char *lv[] = { svc[0] ? svc : "unknown_service", name, kinds[sp->kind < 6 ? sp->kind : 0],
                                 codes[sp->status < 3 ? sp->status : 0] };
            struct metric *m = metrics_get(f_calls, lv);
            if (m) {
                if (metric_value(m) == 0)
                    nseries++;
                metric_inc(m);
            }
            if ((m = metrics_get(f_latency, lv))) {
                char tid[33];       /* the exemplar: this span's trace */
                cairn_hex(sp->tid, 16, tid);
                metric_observe_exemplar(m, secs, tid);
            }
        }
        /* the service graph: a client span and the server span whose parent it is,
         * paired in whichever order they arrive */
        bool client = sp->kind == 3 || sp->kind == 4, server = (sp->kind == 2 || sp->kind == 5) && sp->pid;
        if (!client && !server)
            continue;
        const uint8_t *key = client ? sp->sid : sp->pid;
        const char *me = svc[0] ? svc : "unknown_service";
        struct pending *pd = hmap_get(&pending_clients, key, 8);
        if (pd && pd->is_server == server) {    /* the same half again: the newer stands */
            free(hmap_del(&pending_clients, key, 8));
            pd = NULL;
        }
        if (pd) {
            const char *csvc = client ? me : pd->service, *ssvc = client ? pd->service : me;
            if (strcmp(csvc, ssvc)) {
                if (client)
                    edge_note(s, tenant, csvc, strv_cstr(ssvc), pd->failed, pd->seconds, pd->start);
                else
                    edge_note(s, tenant, csvc, strv_cstr(ssvc), sp->status == 2, secs, sp->start);
            }
            free(hmap_del(&pending_clients, key, 8));
            continue;
        }
        if (!(pd = calloc(1, sizeof(*pd))))
            continue;
        pd->is_server = server;
        snprintf(pd->service, sizeof(pd->service), "%s", me);
        pd->failed = sp->status == 2;
        pd->seconds = secs;
        pd->start = sp->start;
        pd->at_ms = now;
        if (pending_clients.n > 100000 || hmap_put(&pending_clients, key, 8, pd))
            free(pd);
    }
    tr_view_free(&v);
    /* halves whose other half never came (an uninstrumented peer) are forgotten */
    if (now - pending_sweep_ms > 10000) {
        pending_sweep_ms = now;
        const struct hmap_slot *slot;
        for (size_t it = 0; hmap_next(&pending_clients, &it, &slot);) {
            struct pending *pd = slot->value;
            if (now - pd->at_ms > 10000) {
                char k[8];
                memcpy(k, slot->key, 8);
                hmap_del(&pending_clients, k, 8);
                free(pd);
                it = 0;                         /* the table may have moved */
            }
        }
    }
}

static void pending_free(void)
{
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&pending_clients, &it, &slot);)
        free(slot->value);
    hmap_free(&pending_clients);
}

/* ---- the service ---- */

static void on_tick(struct loop_timer *t)
{
    struct traces_svc *s = t->data;
    tr_store_tick(&s->store, false);
    if (!service_stopping(s->sc))
        loop_timer_start(&s->pool.w[0].loop, &s->tick, TR_TICK_MS);
}

static int tr_start(struct service_ctx *sc)
{
    struct traces_svc *s = sc->role;
    struct traces_conf *c = s->conf;
    s->sc = sc;
    struct metrics_registry *reg = sc->reg;
    static const char *const span_labels[] = { "service", "span_name", "span_kind", "status_code", NULL };
    static const char *const edge_labels[] = { "client", "server", NULL };
    s->m_spans = metrics_counter(reg, "cairn_traces_spans_received_total", "Spans accepted.");
    s->m_refused = metrics_counter(reg, "cairn_traces_spans_refused_total",
                                   "Spans refused (invalid ids, a limit, a failed write).");
    s->m_queries = metrics_counter(reg, "cairn_traces_queries_total", "Searches answered.");
    s->m_query_errors = metrics_counter(reg, "cairn_traces_query_errors_total", "Searches refused or failed.");
    f_calls = metrics_family(reg, METRIC_COUNTER, "traces_spanmetrics_calls_total",
                             "Spans received, per service, span name, kind and status.", span_labels, NULL, 0);
    f_latency = metrics_family(reg, METRIC_HISTOGRAM, "traces_spanmetrics_latency",
                               "Span durations in seconds, per service, span name, kind and status.", span_labels,
                               metrics_latency_buckets, metrics_latency_nbuckets);
    f_edges = metrics_family(reg, METRIC_COUNTER, "traces_service_graph_request_total",
                             "Requests between two services (a client span and its server child).", edge_labels, NULL, 0);
    f_edge_failed = metrics_family(reg, METRIC_COUNTER, "traces_service_graph_request_failed_total",
                                   "Failed requests between two services.", edge_labels, NULL, 0);
    f_edge_latency = metrics_family(reg, METRIC_HISTOGRAM, "traces_service_graph_request_server_seconds",
                                    "Server-side durations of requests between two services.", edge_labels,
                                    metrics_latency_buckets, metrics_latency_nbuckets);
    if (!s->m_spans || !s->m_refused || !s->m_queries || !s->m_query_errors || !f_calls || !f_latency || !f_edges ||
        !f_edge_failed || !f_edge_latency ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_traces_head_spans", "Spans in memory, not yet in a block.",
                         g_head_spans, &s->store) ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_traces_head_bytes", "Bytes of spans not yet in a block.",
                         g_head_bytes, &s->store) ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_traces_blocks", "Block files on disk.", g_blocks, &s->store) ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_traces_block_bytes", "Bytes of block files on disk.", g_block_bytes,
                         &s->store) ||
        metrics_callback(reg, METRIC_COUNTER, "cairn_traces_flushes_total", "Blocks written from the head.", g_flushes,
                         &s->store) ||
        metrics_callback(reg, METRIC_COUNTER, "cairn_traces_compactions_total", "Blocks merged.", g_compactions,
                         &s->store) ||
        metrics_callback(reg, METRIC_COUNTER, "cairn_traces_flush_errors_total", "Block writes that failed.",
                         g_flush_errors, &s->store) ||
        metrics_callback(reg, METRIC_COUNTER, "cairn_traces_search_column_rejects_total",
                         "Block traces a search rejected from their search columns, without reading their spans.",
                         g_search_skipped, &s->store) ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_traces_wal_bytes", "Bytes in the WAL.", g_wal, &s->store))
        return -ENOMEM;
    char *full = stack_data_path(s->svc->stack, c->data);
    if (!full)
        return -ENOMEM;
    char err[512];
    int r = tr_store_open(&s->store, full, c, err, sizeof(err));
    if (r) {
        log_error("cannot open the trace store", "dir", full, "error", err);
        free(full);
        return r;
    }
    for (int a = 0; a < TR_API_N; a++) {
        httpd_conf_defaults(&s->hconf[a]);
        s->hconf[a].limits.max_body = TR_MAX_BODY;
        s->hconf[a].handler = traces__handle;
        s->hconf[a].handler_arg = s;
        s->hconf[a].server = NULL;
    }
    r = service_http_pool_start(sc, &s->pool, 1, &s->hconf[TR_API_OTLP], c->addrs[TR_API_OTLP], c->naddrs[TR_API_OTLP],
                                TR_DRAIN_MS);
    for (int a = 1; !r && a < TR_API_N; a++)
        for (size_t k = 0; !r && k < c->naddrs[a]; k++)
            if ((r = httpd_listen(&s->pool.w[0].hw, &c->addrs[a][k], &s->hconf[a]))) {
                char as[NET_ADDRSTRLEN];
                net_addr_format(&c->addrs[a][k], as, sizeof(as));
                log_error("cannot listen", "addr", as, "err", cairn_strerror(r));
            }
    if (r) {
        free(full);
        return r;
    }
    loop_timer_init(&s->tick, on_tick, s);
    loop_timer_start(&s->pool.w[0].loop, &s->tick, TR_TICK_MS);
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->addrs[TR_API_OTLP][0], first, sizeof(first));
    log_info("traces serving", "otlp", first, "dir", full, "blocks", log_int((long long)s->store.nblocks),
             "head_spans", log_int((long long)s->store.head_spans));
    free(full);
    return 0;
}

static void tr_finish(struct service_ctx *sc)
{
    struct traces_svc *s = sc->role;
    if (s->pool.ninit)
        loop_timer_stop(&s->tick);
    service_http_pool_free(&s->pool);
    if (s->store.dir) {
        tr_store_tick(&s->store, true);
        tr_store_close(&s->store);
    }
    pending_free();
}

/* the backup contract: blocks (immutable) hard-linked, the WAL copied as it is
 * at this moment, on the store's own thread: the state a restart after a crash
 * here would recover, and the role opens such a directory as it is */
static int tr_snapshot(struct service_ctx *sc, const char *dir, char *err, size_t errlen)
{
    struct traces_svc *s = sc->role;
    int r = cairn_snapshot_tree(s->store.dir, dir, cairn_under_prefix, "blocks/");
    if (r)
        snprintf(err, errlen, "copying %s: %s", s->store.dir, cairn_strerror(r));
    return r;
}

static const char *tr_snapshot_base(struct service_ctx *sc)
{
    struct traces_svc *s = sc->role;
    return s->store.dir;
}

static const struct service_ops tr_ops = {
    .start = tr_start,
    .stop_worker = service_http_pool_stop_worker,
    .finish = tr_finish,
    .snapshot = tr_snapshot,
    .snapshot_base = tr_snapshot_base,
};

int traces_main(const struct service *svc)
{
    struct traces_svc s;
    memset(&s, 0, sizeof(s));
    s.svc = svc;
    s.conf = svc->conf;
    return service_run(svc, &tr_ops, &s);
}
