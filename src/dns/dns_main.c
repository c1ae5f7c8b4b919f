/* dns_main.c - role "dns": generations, reload, admin API, metrics, start and stop.
 *
 * Worker 0 runs on the main thread and also owns the admin listener, the health
 * checks and NOTIFY; workers 1..n-1 run their own loops. Each has its own UDP
 * and TCP sockets on every listen address (SO_REUSEPORT if n > 1). Everything a reload
 * changes (the configuration, the zones, the GSLB names) lives in a generation:
 * a reload builds a new one completely, then hands it to each worker through its
 * loop's post queue; the old one is freed when the last worker (or zone transfer)
 * lets go of it.
 */
#include "dns_internal.h"
#include "core/log.h"
#include "core/service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct role_ops dns_role = {
    .name = "dns",
    .deploy = ROLE_DEPLOY_PUBLIC,
    .summary = "authoritative DNS server (zone files, EDNS, AXFR/NOTIFY, RRL) with GSLB names",
    .parse = dns__parse,
    .main = dns_main,
    .free_conf = dns__free_conf,
};

/* ---- generations ---- */

static void gen_free(struct dns_gen *g)
{
    dns__gslb_release(g->s, g);
    for (size_t i = 0; i < g->nzones; i++)
        dns_zone_free(g->zones[i]);
    free(g->zones);
    if (g->owns_stack)
        stack_free(&g->stack);
    free(g);
}

static void gen_free_cb(void *arg)
{
    gen_free(arg);
}

void dns__gen_unref(struct dns_gen *g)
{
    if (__atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (g->s->final)
        gen_free(g);
    else
        loop_post(&g->s->workers[0].loop, gen_free_cb, g);
}

static struct dns_gen *gen_new(struct dns_svc *s, struct dns_conf *conf, char *err, size_t errlen)
{
    struct dns_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->refs = 1;
    g->s = s;
    g->conf = conf;
    g->id = ++s->next_gen;
    g->zones = calloc(conf->nzones ? conf->nzones : 1, sizeof(*g->zones));
    if (!g->zones) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    char ns_ip[NET_ADDRSTRLEN];
    net_ip_format((const struct sockaddr *)&conf->listen[0].ss, ns_ip, sizeof(ns_ip));
    for (size_t i = 0; i < conf->nzones; i++) {
        if (dns_zone_load(&g->zones[i], conf->zones[i].origin, conf->zones[i].file, ns_ip, err,
                          errlen))
            goto fail;
        g->nzones++;
        for (size_t k = 0; k < i; k++)
            if (g->zones[k]->originlen == g->zones[i]->originlen &&
                memcmp(g->zones[k]->origin, g->zones[i]->origin, g->zones[i]->originlen) == 0) {
                snprintf(err, errlen, "zone %s is given twice", g->zones[i]->origin_text);
                goto fail;
            }
    }
    if (dns__gslb_build(s, g, err, errlen))
        goto fail;
    g->view.zones = g->zones;
    g->view.nzones = g->nzones;
    g->view.gslb = dns__gslb_select;
    g->view.edns_size = conf->edns_size;
    return g;
fail:
    gen_free(g);
    return NULL;
}

static void worker_use(struct dns_worker *w, struct dns_gen *g)
{
    w->gen = g;
    w->view = g->view;
    w->view.gslb_arg = w;
}

static void worker_switch(void *arg)
{
    struct dns_worker *w = arg;
    struct dns_gen *old = w->gen;
    worker_use(w, __atomic_load_n(&w->s->gen, __ATOMIC_ACQUIRE));
    dns__gen_unref(old);
}

static void zone_metrics(struct dns_svc *s, struct dns_gen *g)
{
    for (size_t i = 0; i < g->nzones; i++) {
        metric_set(metrics_get1(s->m_serial, g->zones[i]->origin_text), g->zones[i]->serial);
        metric_set(metrics_get1(s->m_records, g->zones[i]->origin_text),
                   (double)g->zones[i]->nrecords);
    }
}

/* The skeleton's reload hook: builds a generation from the service re-read into
 * st (zone files loaded, GSLB names built) and switches every worker to it. On any
 * error the current generation keeps serving. Runs on the main thread. */
static int dns_reload(struct service_ctx *sc, struct stack *st, struct cfg_errors *errs)
{
    struct dns_svc *s = sc->role;
    const struct service *nsvc = stack_find(st, s->svc->name);
    struct dns_conf *nc = nsvc->conf;
    const struct dns_conf *oc = s->gen->conf;
    char err[1024] = "";
    bool same = nc->nlisten == oc->nlisten;
    for (size_t i = 0; same && i < nc->nlisten; i++)
        same = net_addr_eq(&nc->listen[i], &oc->listen[i]);
    if (!same)
        log_warn("listen addresses changed: they take effect at the next restart");
    struct dns_gen *g = gen_new(s, nc, err, sizeof(err));
    if (!g) {
        cfg_errors_add(errs, "%s", err);
        return -EINVAL;
    }
    stack_move(&g->stack, st);
    g->owns_stack = true;
    struct dns_gen *old = s->gen;
    /* the new generation's settings that live in the workers stay as started
     * (listen addresses, threads); everything else switches now */
    g->conf->nlisten = old->conf->nlisten;
    memcpy(g->conf->listen, old->conf->listen, sizeof(g->conf->listen));
    __atomic_store_n(&s->gen, g, __ATOMIC_RELEASE);
    for (int i = 0; i < s->nworkers; i++) {
        __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
        if (i == 0)
            worker_switch(&s->workers[0]);
        else
            loop_post(&s->workers[i].loop, worker_switch, &s->workers[i]);
    }
    zone_metrics(s, g);
    dns__notify_start(s, g, old);
    dns__gen_unref(old);
    size_t records = 0;
    for (size_t i = 0; i < g->nzones; i++)
        records += g->zones[i]->nrecords;
    log_info("configuration reloaded", "generation", log_int(g->id), "zones",
             log_int((long long)g->nzones), "records", log_int((long long)records), "gslb",
             log_int((long long)g->ngslb));
    return 0;
}

static void dns_reloaded(struct service_ctx *sc, bool ok)
{
    struct dns_svc *s = sc->role;
    metric_inc(metrics_get1(s->m_reloads, ok ? "ok" : "failed"));
}

/* ---- admin API ---- */

static void zones_json(struct dns_svc *s, struct buf *b)
{
    struct dns_gen *g = s->gen;
    buf_puts(b, "{\"generation\":");
    buf_put_u64(b, g->id);
    buf_puts(b, ",\"zones\":[");
    for (size_t i = 0; i < g->nzones; i++) {
        const struct dns_zone *z = g->zones[i];
        const struct dns_zone_conf *zc = &g->conf->zones[i];
        buf_printf(b, "%s{\"origin\":\"", i ? "," : "");
        buf_json_escape(b, z->origin_text, strlen(z->origin_text));
        buf_puts(b, "\",\"file\":");
        if (zc->file) {
            buf_putc(b, '"');
            buf_json_escape(b, zc->file, strlen(zc->file));
            buf_putc(b, '"');
        } else {
            buf_puts(b, "null");
        }
        buf_printf(b, ",\"serial\":%u,\"records\":%zu,\"names\":%zu,\"secondaries\":%zu}",
                   z->serial, z->nrecords, z->nnodes, zc->nsecondaries);
    }
    buf_puts(b, "]}\n");
}

static void admin(struct service_ctx *sc, struct httpd_req *r)
{
    struct dns_svc *s = sc->role;
    struct buf b = BUF_INIT;
    if (strv_eq_cstr(r->h.path, "/api/gslb")) {
        dns__gslb_json(s, &b);
        httpd_respond(r, 200, "application/json", buf_head(&b), buf_used(&b));
    } else if (strv_eq_cstr(r->h.path, "/api/zones")) {
        zones_json(s, &b);
        httpd_respond(r, 200, "application/json", buf_head(&b), buf_used(&b));
    } else {
        httpd_respond(r, 404, "text/plain; charset=utf-8", "not found\n", 10);
    }
    buf_free(&b);
}

static int setup_metrics(struct dns_svc *s)
{
    static const char *const l_proto_type[] = { "proto", "type", NULL };
    static const char *const l_rcode[] = { "rcode", NULL };
    static const char *const l_action[] = { "action", NULL };
    static const char *const l_member[] = { "name", "region", "member", NULL };
    static const char *const l_zone[] = { "zone", NULL };
    static const char *const l_result[] = { "result", NULL };
    struct metrics_registry *reg = s->reg;
    s->m_queries = metrics_family(reg, METRIC_COUNTER, "dns_queries_total",
                                  "Queries received, by transport and query type.", l_proto_type,
                                  NULL, 0);
    s->m_rcodes = metrics_family(reg, METRIC_COUNTER, "dns_responses_total",
                                 "Responses sent (or rate limited), by response code.", l_rcode,
                                 NULL, 0);
    s->m_rrl = metrics_family(reg, METRIC_COUNTER, "dns_rrl_limited_total",
                              "Responses held back by response rate limiting: dropped, or "
                              "slipped (sent truncated).",
                              l_action, NULL, 0);
    s->m_member_up = metrics_family(reg, METRIC_GAUGE, "dns_gslb_member_up",
                                    "1 when a GSLB member passes its health check.", l_member,
                                    NULL, 0);
    s->m_serial = metrics_family(reg, METRIC_GAUGE, "dns_zone_serial",
                                 "SOA serial of each zone served.", l_zone, NULL, 0);
    s->m_records = metrics_family(reg, METRIC_GAUGE, "dns_zone_records",
                                  "Records loaded in each zone.", l_zone, NULL, 0);
    s->m_reloads = metrics_family(reg, METRIC_COUNTER, "dns_reloads_total",
                                  "Reloads of the configuration and zones, by result.", l_result,
                                  NULL, 0);
    s->m_notify = metrics_family(reg, METRIC_COUNTER, "dns_notify_total",
                                 "NOTIFY messages to secondaries: sent, acked, failed.", l_result,
                                 NULL, 0);
    s->m_axfr = metrics_family(reg, METRIC_COUNTER, "dns_zone_transfers_total",
                               "Outgoing zone transfers: started, done, refused.", l_result, NULL,
                               0);
    s->m_tcp_conns = metrics_gauge(reg, "dns_tcp_connections", "Open TCP connections.");
    s->m_dur = metrics_histogram(reg, "dns_query_duration_seconds",
                                 "Time to answer a UDP query, averaged over each batch read.",
                                 metrics_latency_buckets, metrics_latency_nbuckets);
    if (!s->m_queries || !s->m_rcodes || !s->m_rrl || !s->m_member_up || !s->m_serial ||
        !s->m_records || !s->m_reloads || !s->m_notify || !s->m_axfr || !s->m_tcp_conns ||
        !s->m_dur)
        return -ENOMEM;
    return 0;
}

/* ---- start and stop ---- */

static void worker_stop(void *arg)
{
    struct dns_worker *w = arg;
    w->stopping = true;
    loop_stop(&w->loop);
}

static void dns_finish(struct service_ctx *sc);

static int dns_start(struct service_ctx *sc)
{
    struct dns_svc *s = sc->role;
    const struct dns_conf *conf = s->svc->conf;
    char err[1024];
    s->reg = sc->reg;
    if (setup_metrics(s)) {
        log_error("out of memory");
        return -ENOMEM;
    }
    s->nworkers = conf->threads;
    s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
    struct service_worker *sw = calloc((size_t)s->nworkers, sizeof(*sw));
    if (!s->workers || !sw) {
        free(sw);
        s->nworkers = 0;
        return -ENOMEM;
    }
    for (int i = 0; i < s->nworkers; i++) {
        s->workers[i].s = s;
        s->workers[i].index = i;
        s->workers[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) ^ cairn_now_ns();
        if (loop_init(&s->workers[i].loop)) {
            log_error("cannot create an event loop");
            s->nworkers = i;
            free(sw);
            return -ENOMEM;
        }
        sw[i].loop = &s->workers[i].loop;
        sw[i].arg = &s->workers[i];
    }
    int r = service_set_workers(sc, sw, s->nworkers);
    free(sw);
    if (r)
        return r;
    struct loop *main_loop = &s->workers[0].loop;
    if (health_checker_init(&s->health, main_loop, "cairn-dns-health"))
        return -ENOMEM;
    s->health_inited = true;
    s->gen = gen_new(s, (struct dns_conf *)conf, err, sizeof(err));
    if (!s->gen) {
        log_error("cannot load the zones", "error", err);
        return -EINVAL;
    }
    zone_metrics(s, s->gen);
    for (int i = 0; i < s->nworkers; i++) {
        __atomic_add_fetch(&s->gen->refs, 1, __ATOMIC_RELAXED);
        worker_use(&s->workers[i], s->gen);
        if ((r = dns__worker_open(&s->workers[i])))
            return r;
    }
    if (conf->have_admin && (r = service_admin_listen(sc, &conf->admin)))
        return r;
    /* no answer before every health-checked member has its first verdict: the
     * sockets are bound (so clients queue) but not read until then */
    uint64_t wait_ms = 0;
    for (size_t i = 0; i < conf->ngslb; i++)
        if (conf->gslb[i].have_health && conf->gslb[i].health.timeout_ms > wait_ms)
            wait_ms = conf->gslb[i].health.timeout_ms;
    uint64_t deadline = cairn_now_ms() + wait_ms + 500;
    while (!dns__health_settled(s) && cairn_now_ms() < deadline && !service_stopping(sc))
        loop_run_once(main_loop, 20);
    if (service_stopping(sc))
        return 0;
    for (int i = 0; i < s->nworkers; i++)
        if (dns__worker_start(&s->workers[i])) {
            log_error("cannot start reading the sockets");
            return -EIO;
        }
    dns__notify_start(s, s->gen, NULL);
    char first[NET_ADDRSTRLEN];
    net_addr_format(&conf->listen[0], first, sizeof(first));
    size_t records = 0;
    for (size_t i = 0; i < s->gen->nzones; i++)
        records += s->gen->zones[i]->nrecords;
    log_info("dns serving", "addr", first, "zones", log_int((long long)s->gen->nzones), "records",
             log_int((long long)records), "gslb", log_int((long long)s->gen->ngslb), "threads",
             log_int(s->nworkers));
    return 0;
}

static void dns_finish(struct service_ctx *sc)
{
    struct dns_svc *s = sc->role;
    dns__notify_stop(s);
    for (int i = 0; i < s->nworkers; i++)
        dns__worker_close(&s->workers[i]);
    /* every loop has stopped: free what the post queues still hold */
    s->final = true;
    for (int i = 0; i < s->nworkers; i++)
        loop_run_once(&s->workers[i].loop, 0);
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i].gen)
            dns__gen_unref(s->workers[i].gen);
    if (s->gen)
        dns__gen_unref(s->gen);
    dns__health_stop_all(s);
    if (s->health_inited)
        health_checker_destroy(&s->health);
    for (int i = 0; i < s->nworkers; i++)
        loop_destroy(&s->workers[i].loop);
    free(s->workers);
}

static const struct service_ops dns_ops = {
    .start = dns_start,
    .reload = dns_reload,
    .reloaded = dns_reloaded,
    .stop_worker = worker_stop,
    .admin = admin,
    .finish = dns_finish,
};

int dns_main(const struct service *svc)
{
    struct dns_svc s;
    memset(&s, 0, sizeof(s));
    s.svc = svc;
    s.notify_fd4 = s.notify_fd6 = -1;
    return service_run(svc, &dns_ops, &s);
}
