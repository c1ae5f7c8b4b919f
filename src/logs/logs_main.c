/* logs_main.c - role "logs": start, housekeeping timer, stop.
 *
 * One worker thread serves the API and owns the store: pushes and queries run on
 * it one at a time, so the store needs no locks. A timer cuts and flushes heads
 * and applies retention; a graceful stop flushes everything into a block.
 */
#include "logs_internal.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOGS_DRAIN_MS 10000
#define LOGS_TICK_MS 1000

/* the store's directory, as start opens it */
static char *logs_data_dir(const struct service *svc)
{
    const struct logs_conf *c = svc->conf;
    return stack_data_path(svc->stack, c->data);
}

const struct role_ops logs_role = {
    .data_dir = logs_data_dir,
    .name = "logs",
    .deploy = ROLE_DEPLOY_STORE,
    .summary = "log store with Loki's push and query API and LogQL",
    .parse = logs__parse,
    .main = logs_main,
    .free_conf = logs__free_conf,
};

static double g_streams(void *arg)
{
    struct logs_store *st = arg;
    double n = 0;
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&st->tenants, &it, &slot);)
        n += ((struct ls_tenant *)slot->value)->ns;
    return n;
}

static double g_unflushed(void *arg)
{
    return (double)((struct logs_store *)arg)->unflushed;
}

static double g_blocks(void *arg)
{
    return (double)((struct logs_store *)arg)->nblocks;
}

static double g_chunks_cut(void *arg)
{
    return (double)((struct logs_store *)arg)->chunks_cut;
}

static double g_flushes(void *arg)
{
    return (double)((struct logs_store *)arg)->flushes;
}

static double g_bytes_in(void *arg)
{
    return (double)((struct logs_store *)arg)->bytes_in;
}

static double g_wal(void *arg)
{
    return (double)((struct logs_store *)arg)->wal_size;
}

static void on_tick(struct loop_timer *t)
{
    struct logs_svc *s = t->data;
    logs_store_tick(&s->store);
    if (!service_stopping(s->sc))
        loop_timer_start(&s->pool.w[0].loop, &s->tick, LOGS_TICK_MS);
}

static int logs_start(struct service_ctx *sc)
{
    struct logs_svc *s = sc->role;
    struct logs_conf *c = s->conf;
    s->sc = sc;
    struct metrics_registry *reg = sc->reg;
    s->m_lines = metrics_counter(reg, "cairn_logs_lines_received_total", "Log lines accepted by the push API.");
    s->m_refused = metrics_counter(reg, "cairn_logs_lines_refused_total",
                                   "Log lines refused by a limit (too old, too long, rate...).");
    s->m_queries = metrics_counter(reg, "cairn_logs_queries_total", "LogQL queries answered.");
    s->m_query_errors = metrics_counter(reg, "cairn_logs_query_errors_total", "LogQL queries refused or failed.");
    if (!s->m_lines || !s->m_refused || !s->m_queries || !s->m_query_errors ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_logs_streams", "Streams in the store, all tenants.", g_streams,
                         &s->store) ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_logs_unflushed_bytes",
                         "Bytes in heads and cut chunks not yet written into a block.", g_unflushed, &s->store) ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_logs_blocks", "Block files on disk.", g_blocks, &s->store) ||
        metrics_callback(reg, METRIC_COUNTER, "cairn_logs_chunks_cut_total", "Chunks cut from stream heads.",
                         g_chunks_cut, &s->store) ||
        metrics_callback(reg, METRIC_COUNTER, "cairn_logs_flushes_total", "Blocks written.", g_flushes, &s->store) ||
        metrics_callback(reg, METRIC_COUNTER, "cairn_logs_bytes_received_total", "Bytes of log lines accepted.",
                         g_bytes_in, &s->store) ||
        metrics_callback(reg, METRIC_GAUGE, "cairn_logs_wal_bytes", "Bytes in the current WAL segment.", g_wal,
                         &s->store))
        return -ENOMEM;
    char *full = stack_data_path(s->svc->stack, c->data);
    if (!full)
        return -ENOMEM;
    char err[512];
    int r = logs_store_open(&s->store, full, c, err, sizeof(err));
    if (r) {
        log_error("cannot open the log store", "dir", full, "error", err);
        free(full);
        return r;
    }
    httpd_conf_defaults(&s->hconf);
    s->hconf.limits.max_body = LOGS_MAX_PUSH;
    s->hconf.handler = logs__handle;
    s->hconf.handler_arg = s;
    s->hconf.server = NULL;
    r = service_http_pool_start(sc, &s->pool, 1, &s->hconf, c->listen, c->nlisten, LOGS_DRAIN_MS);
    if (r) {
        free(full);
        return r;
    }
    if ((r = logs__rules_start(s))) {
        free(full);
        return r;
    }
    loop_timer_init(&s->tick, on_tick, s);
    loop_timer_start(&s->pool.w[0].loop, &s->tick, LOGS_TICK_MS);
    char first[NET_ADDRSTRLEN];
    net_addr_format(&c->listen[0], first, sizeof(first));
    log_info("logs serving", "addr", first, "dir", full, "tenant", c->auth ? "(X-Scope-OrgID required)" : c->default_tenant,
             "blocks", log_int((long long)s->store.nblocks));
    free(full);
    return 0;
}

static void logs_finish(struct service_ctx *sc)
{
    struct logs_svc *s = sc->role;
    if (s->pool.ninit)
        loop_timer_stop(&s->tick);
    logs__tail_stop(s);
    logs__rules_stop(s);
    service_http_pool_free(&s->pool);
    if (s->store.dir) {
        logs_store_flush(&s->store, "stop");
        logs_store_close(&s->store);
    }
}

/* the backup contract: blocks (immutable) hard-linked, the WAL copied as it is
 * at this moment, on the store's own thread: the state a restart after a crash
 * here would recover, and the role opens such a directory as it is */
static int logs_snapshot(struct service_ctx *sc, const char *dir, char *err, size_t errlen)
{
    struct logs_svc *s = sc->role;
    int r = cairn_snapshot_tree(s->store.dir, dir, cairn_under_prefix, "blocks/");
    if (r)
        snprintf(err, errlen, "copying %s: %s", s->store.dir, cairn_strerror(r));
    return r;
}

static const char *logs_snapshot_base(struct service_ctx *sc)
{
    struct logs_svc *s = sc->role;
    return s->store.dir;
}

static const struct service_ops logs_ops = {
    .start = logs_start,
    .stop_worker = service_http_pool_stop_worker,
    .finish = logs_finish,
    .snapshot = logs_snapshot,
    .snapshot_base = logs_snapshot_base,
};

int logs_main(const struct service *svc)
{
    struct logs_svc s;
    memset(&s, 0, sizeof(s));
    s.svc = svc;
    s.conf = svc->conf;
    return service_run(svc, &logs_ops, &s);
}
