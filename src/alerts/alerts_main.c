/* alerts_main.c - role "alerts": start, the loop, reload, stop.
 *
 * One thread serves the API and runs the dispatcher; email is sent from short-
 * lived threads (alerts_notify.c). State lives in <data_dir>/<service name>/:
 * silences.json and nflog.json. A reload (SIGHUP or POST /-/reload) parses the
 * stack file again; a bad file leaves everything as it was, a good one replaces
 * the configuration and routes every alert again, as Alertmanager does; the
 * notification log keeps the new groups from re-sending what was sent.
 */
#include "alerts_internal.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* <data_dir>/<service name>, as start opens it */
static char *am_data_dir(const struct service *svc)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", svc->stack->data_dir, svc->name) < 0)
        return NULL;
    return p;
}

const struct role_ops alerts_role = {
    .data_dir = am_data_dir,
    .name = "alerts",
    .deploy = ROLE_DEPLOY_STORE,
    .summary = "Alertmanager-compatible alert routing: grouping, inhibition, silences, notifications",
    .parse = am__parse,
    .main = alerts_main,
    .free_conf = am__free_conf,
};

static void gc_cb(struct loop_timer *t)
{
    struct am_svc *s = t->data;
    am__store_gc(s, am__now_ns());
    loop_timer_start(&s->loop, t, 60000);
}

/* The skeleton's reload hook: the configuration re-read into st replaces the
 * running one and every alert is routed again. */
static int am_reload(struct service_ctx *sc, struct stack *st, struct cfg_errors *errs)
{
    struct am_svc *s = sc->role;
    struct stack *owned = malloc(sizeof(*owned));
    if (!owned) {
        cfg_errors_add(errs, "out of memory");
        return -ENOMEM;
    }
    stack_move(owned, st);
    struct am_conf *nc = stack_find(owned, s->svc->name)->conf;
    nc->nlisten = s->conf->nlisten;
    memcpy(nc->listen, s->conf->listen, sizeof(nc->listen));
    /* groups point into the old route tree: drop them before the swap */
    am__groups_free(s);
    s->conf = nc;
    if (s->stack) {
        stack_free(s->stack);
        free(s->stack);
    }
    s->stack = owned;
    s->alerts_gen++;            /* inhibition caches follow the new rules */
    am__groups_rebuild(s);
    log_info("configuration reloaded", "receivers", log_int((long long)nc->nreceivers), "groups",
             log_int((long long)s->ngroups));
    return 0;
}

static void am_reloaded(struct service_ctx *sc, bool ok)
{
    struct am_svc *s = sc->role;
    metric_set(s->m_reload_ok, ok ? 1 : 0);
    if (ok)
        metric_set(s->m_reload_ts, cairn_wall_time());
}

static int setup_metrics(struct am_svc *s)
{
    struct metrics_registry *reg = s->reg;
    static const char *const status[] = { "status", NULL };
    static const char *const integ[] = { "integration", NULL };
    struct metric_family *rx = metrics_family(reg, METRIC_COUNTER, "alertmanager_alerts_received_total",
                                              "The total number of received alerts.", status, NULL, 0);
    s->m_received_firing = rx ? metrics_get1(rx, "firing") : NULL;
    s->m_received_resolved = rx ? metrics_get1(rx, "resolved") : NULL;
    s->m_invalid = metrics_counter(reg, "alertmanager_alerts_invalid_total",
                                   "The total number of received alerts that were invalid.");
    s->f_notifications = metrics_family(reg, METRIC_COUNTER, "alertmanager_notifications_total",
                                        "The total number of attempted notifications.", integ, NULL, 0);
    s->f_notif_failed = metrics_family(reg, METRIC_COUNTER, "alertmanager_notifications_failed_total",
                                       "The total number of failed notifications.", integ, NULL, 0);
    s->f_requests = metrics_family(reg, METRIC_COUNTER, "alertmanager_notification_requests_total",
                                   "The total number of attempted notification requests.", integ,
                                   NULL, 0);
    s->f_requests_failed = metrics_family(reg, METRIC_COUNTER,
                                          "alertmanager_notification_requests_failed_total",
                                          "The total number of failed notification requests.",
                                          integ, NULL, 0);
    static const double lat[] = { 1, 5, 10, 15, 20 };
    s->f_latency = metrics_family(reg, METRIC_HISTOGRAM, "alertmanager_notification_latency_seconds",
                                  "The latency of notifications in seconds.", integ, lat, 5);
    s->m_reload_ok = metrics_gauge(reg, "alertmanager_config_last_reload_successful",
                                   "Whether the last configuration reload attempt was successful.");
    s->m_reload_ts = metrics_gauge(reg, "alertmanager_config_last_reload_success_timestamp_seconds",
                                   "Timestamp of the last successful configuration reload.");
    s->m_flushes = metrics_counter(reg, "cairn_alerts_group_flushes_total",
                                   "Aggregation group flushes (runs of the notification pipeline).");
    if (!s->m_flushes || !s->m_received_firing || !s->m_received_resolved || !s->m_invalid || !s->f_notifications ||
        !s->f_notif_failed || !s->f_requests || !s->f_requests_failed || !s->f_latency ||
        !s->m_reload_ok || !s->m_reload_ts)
        return -ENOMEM;
    /* every integration shows up at 0 before its first notification */
    static const char *const names[] = { "webhook", "email", "slack", "pagerduty", "opsgenie" };
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        metrics_get1(s->f_notifications, names[i]);
        metrics_get1(s->f_notif_failed, names[i]);
    }
    metric_set(s->m_reload_ok, 1);
    metric_set(s->m_reload_ts, cairn_wall_time());
    return 0;
}

static int am_start(struct service_ctx *sc)
{
    struct am_svc *s = sc->role;
    const struct service *svc = s->svc;
    s->sc = sc;
    s->reg = sc->reg;
    if (setup_metrics(s) || loop_init(&s->loop)) {
        log_error("out of memory");
        return -ENOMEM;
    }
    s->loop_inited = true;
    struct service_worker w = { &s->loop, &s->loop };
    int r = service_set_workers(sc, &w, 1);
    if (r)
        return r;
    snprintf(s->dir, sizeof(s->dir), "%s/%s", svc->stack->data_dir, svc->name);
    r = cairn_mkdir_p(s->dir, 0755);
    if (r) {
        log_error("cannot create the data directory", "dir", s->dir, "error", cairn_strerror(r));
        return r;
    }
    am__state_load(s);
    /* two clients: https receivers verified against the system's CAs, and those
     * whose http_config asks for insecure_skip_verify */
    char terr[256];
    static const char *const alpn[] = { "http/1.1" };
    if (tls_client_new(&s->tls, true, NULL, alpn, 1, terr, sizeof(terr)) ||
        tls_client_new(&s->tls_insecure, false, NULL, alpn, 1, terr, sizeof(terr)))
        log_warn("TLS client setup failed: https receivers will fail", "error", terr);
    struct httpc_opts ho;
    httpc_opts_defaults(&ho);
    ho.tls = s->tls;
    s->hc = httpc_new(&s->loop, &ho);
    ho.tls = s->tls_insecure;
    s->hc_insecure = httpc_new(&s->loop, &ho);
    if (!s->hc || !s->hc_insecure) {
        log_error("out of memory");
        return -ENOMEM;
    }
    httpd_worker_init(&s->hw, &s->loop);
    s->http_inited = true;
    httpd_conf_defaults(&s->hconf);
    s->hconf.limits.max_body = AM_MAX_BODY;
    s->hconf.handler = am__handle;
    s->hconf.handler_arg = s;
    for (size_t i = 0; i < s->conf->nlisten; i++) {
        r = httpd_listen(&s->hw, &s->conf->listen[i], &s->hconf);
        if (r) {
            char a[NET_ADDRSTRLEN];
            net_addr_format(&s->conf->listen[i], a, sizeof(a));
            log_error("cannot listen", "addr", a, "err", cairn_strerror(r));
            return r;
        }
    }
    loop_timer_init(&s->gc_timer, gc_cb, s);
    loop_timer_start(&s->loop, &s->gc_timer, 60000);
    char first[NET_ADDRSTRLEN];
    net_addr_format(&s->conf->listen[0], first, sizeof(first));
    log_info("alerts serving", "addr", first, "receivers", log_int((long long)s->conf->nreceivers),
             "silences", log_int((long long)s->nsilences), "dir", s->dir);
    return 0;
}

static void am_finish(struct service_ctx *sc)
{
    struct am_svc *s = sc->role;
    if (s->loop_inited)
        loop_timer_stop(&s->gc_timer);
    am__groups_free(s);
    /* email threads post their result to this loop: let them finish first */
    for (int i = 0; s->loop_inited && s->smtp_threads > 0 && i < 150; i++)
        loop_run_once(&s->loop, 100);
    if (s->http_inited)
        httpd_worker_destroy(&s->hw);
    httpc_free(&s->hc);
    httpc_free(&s->hc_insecure);
    tls_ctx_free(&s->tls);
    tls_ctx_free(&s->tls_insecure);
    loop_timer_stop(&s->sync_timer);
    if (s->journal_fd >= 0) {
        fdatasync(s->journal_fd);
        close(s->journal_fd);
    }
    am__store_free(s);
    if (s->stack) {
        stack_free(s->stack);
        free(s->stack);
    }
    if (s->loop_inited)
        loop_destroy(&s->loop);
}

/* the backup contract: the silences and the notification log as they are now */
static int am_snapshot(struct service_ctx *sc, const char *dir, char *err, size_t errlen)
{
    struct am_svc *s = sc->role;
    int r = am__state_export(s, dir);
    if (r)
        snprintf(err, errlen, "writing the state to %s: %s", dir, cairn_strerror(r));
    return r;
}

static const char *am_snapshot_base(struct service_ctx *sc)
{
    struct am_svc *s = sc->role;
    return s->dir;
}

static const struct service_ops am_ops = {
    .start = am_start,
    .snapshot = am_snapshot,
    .snapshot_base = am_snapshot_base,
    .reload = am_reload,
    .reloaded = am_reloaded,
    .finish = am_finish,
    .reload_error_status = 500,     /* as Alertmanager */
};

int alerts_main(const struct service *svc)
{
    struct am_svc *s = calloc(1, sizeof(*s));
    if (!s)
        return 1;
    s->svc = svc;
    s->conf = svc->conf;
    s->journal_fd = -1;
    loop_timer_init(&s->sync_timer, NULL, s);
    loop_timer_init(&s->gc_timer, NULL, s);
    s->start_ns = am__now_ns();
    int code = service_run(svc, &am_ops, s);
    free(s);
    return code;
}
