/* service.c - the service skeleton: signals, reload, admin endpoints, workers.
 *
 * The order of a run: registry, role start (workers, listeners), signals on
 * workers[0], threads for workers[1..], readiness, loops[0] until a stop; then
 * join, admin listener down, role finish, registry freed. A stop posts the role's
 * stop_worker to every loop; each loop stops when its worker says so.
 */
#include "core/service.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>

#define TRIM_DEFAULT_MS 10000

static const char *stop_signal_name(int signo)
{
    return signo == SIGINT ? "SIGINT" : signo == SIGTERM ? "SIGTERM" : "signal";
}

static void stop_worker_default(void *arg)
{
    loop_stop(arg);
}

void service_stop(struct service_ctx *sc, const char *why)
{
    if (__atomic_exchange_n(&sc->stopping, 1, __ATOMIC_RELAXED))
        return;
    log_info("stopping", "signal", why);
    if (sc->admin_inited)
        httpd_drain(&sc->admin_hw, NULL, NULL);
    for (int i = 0; i < sc->nworkers; i++) {
        if (sc->ops->stop_worker)
            loop_post(sc->workers[i].loop, sc->ops->stop_worker, sc->workers[i].arg);
        else
            loop_post(sc->workers[i].loop, stop_worker_default, sc->workers[i].loop);
    }
}

int service_reload(struct service_ctx *sc, struct cfg_errors *errs)
{
    const struct service *svc = sc->svc;
    if (!sc->ops->reload) {
        log_info("nothing to reload for this role", "role", svc->role->name);
        return 0;
    }
    struct stack st;
    /* a file is read again; the embedded default stack is its own text */
    const char *text = svc->stack->source ? NULL : svc->stack->text;
    int r = stack_load_one(&st, svc->stack->file, text, svc->name, svc->role, errs);
    if (r == 0)
        r = sc->ops->reload(sc, &st, errs);
    bool ok = r == 0;
    stack_free(&st);            /* empty when the role took it over */
    if (!ok) {
        if (errs->n == 0)
            cfg_errors_add(errs, "%s", cairn_strerror(r));
        for (size_t i = 0; i < errs->n; i++)
            log_error("reload refused", "error", errs->msgs[i]);
        log_error("reload refused: the current configuration keeps serving");
    }
    metric_set(sc->m_reload_ok, ok ? 1 : 0);
    if (ok)
        metric_set(sc->m_reload_ts, cairn_wall_time());
    if (sc->ops->reloaded)
        sc->ops->reloaded(sc, ok);
    return ok ? 0 : -EINVAL;
}

static void on_signal(struct loop *l, int signo, void *arg)
{
    struct service_ctx *sc = arg;
    UNUSED(l);
    if (signo == SIGHUP) {
        struct cfg_errors errs = { 0 };
        if (!service_stopping(sc))
            service_reload(sc, &errs);
        cfg_errors_free(&errs);
        return;
    }
    service_stop(sc, stop_signal_name(signo));
}

static void reload_request(struct service_ctx *sc, struct httpd_req *r)
{
    if (!strv_eq_cstr(r->h.method, "POST") && !strv_eq_cstr(r->h.method, "PUT")) {
        httpd_header(r, "Allow", "POST, PUT");
        httpd_respond(r, 405, "text/plain; charset=utf-8", LIT("Only POST or PUT requests allowed\n"));
        return;
    }
    struct cfg_errors errs = { 0 };
    if (service_reload(sc, &errs) == 0) {
        httpd_respond(r, 200, "text/plain; charset=utf-8", "", 0);
    } else {
        struct buf b = BUF_INIT;
        buf_puts(&b, "failed to reload config, the current configuration keeps serving:\n");
        for (size_t i = 0; i < errs.n; i++)
            buf_printf(&b, "%s\n", errs.msgs[i]);
        int status = sc->ops->reload_error_status ? sc->ops->reload_error_status : 400;
        httpd_respond(r, status, "text/plain; charset=utf-8", buf_head(&b), buf_used(&b));
        buf_free(&b);
    }
    cfg_errors_free(&errs);
}

static bool valid_snapshot_name(struct strv n)
{
    bool ok = n.n > 0 && n.n < 64 && n.p[0] != '.';
    for (size_t i = 0; ok && i < n.n; i++)
        ok = (n.p[i] >= '0' && n.p[i] <= '9') || (n.p[i] >= 'a' && n.p[i] <= 'z') ||
             (n.p[i] >= 'A' && n.p[i] <= 'Z') || n.p[i] == '-' || n.p[i] == '_' || n.p[i] == '.';
    return ok;
}

/* POST /-/snapshot and DELETE /-/snapshot/<name>: the store-copy contract */
static void snapshot_request(struct service_ctx *sc, struct httpd_req *r)
{
    struct strv p = r->h.path;
    const char *base = sc->ops->snapshot_base(sc);
    char name[64], dir[4400], err[512] = "";
    struct buf b = BUF_INIT;
    if (strv_eq_cstr(p, "/-/snapshot") && strv_eq_cstr(r->h.method, "POST")) {
        /* ?name=NAME: a fixed name (a backup job's, so that its snapshots keep one
         * path); one left over by an interrupted backup is replaced */
        if (!http_query_param(r->h.query, "name", name, sizeof(name)) || !valid_snapshot_name(strv_cstr(name))) {
            time_t now = time(NULL);
            struct tm tm;
            uint8_t rnd[8];
            gmtime_r(&now, &tm);
            cairn_random(rnd, sizeof(rnd));
            size_t o = strftime(name, sizeof(name), "%Y%m%dT%H%M%SZ-", &tm);
            cairn_hex(rnd, sizeof(rnd), name + o);
        }
        snprintf(dir, sizeof(dir), "%s/snapshots/%s", base, name);
        int e = cairn_remove_tree(dir);
        if (!e)
            e = cairn_mkdir_p(dir, 0700);
        if (!e && (e = sc->ops->snapshot(sc, dir, err, sizeof(err))) != 0)
            cairn_remove_tree(dir);
        if (e) {
            buf_printf(&b, "snapshot failed: %s\n", err[0] ? err : cairn_strerror(e));
            httpd_respond(r, 500, "text/plain; charset=utf-8", buf_head(&b), buf_used(&b));
        } else {
            char abs[PATH_MAX];
            buf_printf(&b, "{\"name\":\"%s\",\"dir\":", name);
            buf_json_str(&b, realpath(dir, abs) ? abs : dir);
            buf_puts(&b, "}\n");
            log_info("store snapshot written", "dir", dir);
            httpd_respond(r, 200, "application/json", buf_head(&b), buf_used(&b));
        }
    } else if (strv_has_prefix(p, "/-/snapshot/") && strv_eq_cstr(r->h.method, "DELETE")) {
        struct strv n = strv_make(p.p + 12, p.n - 12);
        bool ok = valid_snapshot_name(n);
        snprintf(dir, sizeof(dir), "%s/snapshots/%.*s", base, (int)n.n, n.p);
        struct stat sb;
        if (!ok || stat(dir, &sb) < 0) {
            httpd_respond(r, 404, "text/plain; charset=utf-8", LIT("no such snapshot\n"));
        } else {
            int e = cairn_remove_tree(dir);
            if (e) {
                buf_printf(&b, "cannot remove the snapshot: %s\n", cairn_strerror(e));
                httpd_respond(r, 500, "text/plain; charset=utf-8", buf_head(&b), buf_used(&b));
            } else {
                httpd_respond(r, 204, NULL, NULL, 0);
            }
        }
    } else {
        httpd_respond(r, 405, "text/plain; charset=utf-8", LIT("POST /-/snapshot or DELETE /-/snapshot/NAME\n"));
    }
    buf_free(&b);
}

bool service_handle_builtin(struct service_ctx *sc, struct httpd_req *r)
{
    if (httpd_serve_builtin(r, sc->reg, sc->ready && !service_stopping(sc)))
        return true;
    if (sc->ops->reload && strv_eq_cstr(r->h.path, "/-/reload")) {
        reload_request(sc, r);
        return true;
    }
    if (sc->ops->snapshot && sc->ops->snapshot_base &&
        (strv_eq_cstr(r->h.path, "/-/snapshot") || strv_has_prefix(r->h.path, "/-/snapshot/"))) {
        snapshot_request(sc, r);
        return true;
    }
    return false;
}

static void admin_handle(struct httpd_req *r, void *arg)
{
    struct service_ctx *sc = arg;
    if (service_handle_builtin(sc, r))
        return;
    if (sc->ops->admin)
        sc->ops->admin(sc, r);
    else
        httpd_respond(r, 404, "text/plain; charset=utf-8", LIT("not found\n"));
}

int service_set_workers(struct service_ctx *sc, const struct service_worker *workers, int n)
{
    if (n < 1)
        return -EINVAL;
    sc->workers = calloc((size_t)n, sizeof(*sc->workers));
    sc->threads = calloc((size_t)n, sizeof(*sc->threads));
    if (!sc->workers || !sc->threads)
        return -ENOMEM;
    memcpy(sc->workers, workers, (size_t)n * sizeof(*workers));
    sc->nworkers = n;
    static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
    return loop_signals(workers[0].loop, sigs, ARRAY_SIZE(sigs), on_signal, sc);
}

int service_admin_listen(struct service_ctx *sc, const struct net_addr *addr)
{
    if (!sc->nworkers)
        return -EINVAL;
    if (!sc->admin_inited) {
        httpd_worker_init(&sc->admin_hw, sc->workers[0].loop);
        httpd_conf_defaults(&sc->admin_conf);
        sc->admin_conf.handler = admin_handle;
        sc->admin_conf.handler_arg = sc;
        sc->admin_inited = true;
    }
    int r = httpd_listen(&sc->admin_hw, addr, &sc->admin_conf);
    if (r) {
        char a[NET_ADDRSTRLEN];
        net_addr_format(addr, a, sizeof(a));
        log_error("cannot listen (admin)", "addr", a, "err", cairn_strerror(r));
    }
    return r;
}

/* Bursts of connections leave freed memory scattered through the heap; give it
 * back to the kernel every few seconds so that RSS follows what is in use. */
static void trim_cb(struct loop_timer *t)
{
    struct service_ctx *sc = t->data;
    malloc_trim(0);
    loop_timer_start(t->loop, t, sc->ops->trim_ms ? sc->ops->trim_ms : TRIM_DEFAULT_MS);
}

static void *worker_thread(void *arg)
{
    loop_run(arg);
    return NULL;
}

/* Starts workers 1..n-1; on failure stops and joins those started. */
static int start_threads(struct service_ctx *sc)
{
    for (int i = 1; i < sc->nworkers; i++) {
        if (pthread_create(&sc->threads[i], NULL, worker_thread, sc->workers[i].loop) == 0)
            continue;
        log_error("cannot start a worker thread");
        __atomic_store_n(&sc->stopping, 1, __ATOMIC_RELAXED);
        for (int k = 1; k < i; k++) {
            if (sc->ops->stop_worker)
                loop_post(sc->workers[k].loop, sc->ops->stop_worker, sc->workers[k].arg);
            else
                loop_post(sc->workers[k].loop, stop_worker_default, sc->workers[k].loop);
        }
        for (int k = 1; k < i; k++)
            pthread_join(sc->threads[k], NULL);
        return -EAGAIN;
    }
    return 0;
}

int service_run(const struct service *svc, const struct service_ops *ops, void *role)
{
    struct service_ctx sc;
    int code = 1;
    memset(&sc, 0, sizeof(sc));
    sc.svc = svc;
    sc.ops = ops;
    sc.role = role;
    signal(SIGPIPE, SIG_IGN);
    sc.reg = metrics_registry_new();
    if (!sc.reg || metrics_add_process(sc.reg)) {
        log_error("out of memory");
        goto out;
    }
    sc.m_reload_ok = metrics_gauge(sc.reg, "cairn_config_last_reload_successful",
                                   "Whether the last configuration reload attempt was successful.");
    sc.m_reload_ts = metrics_gauge(sc.reg, "cairn_config_last_reload_success_timestamp_seconds",
                                   "Time of the last successful configuration reload (or of the start).");
    if (!sc.m_reload_ok || !sc.m_reload_ts) {
        log_error("out of memory");
        goto out;
    }
    metric_set(sc.m_reload_ok, 1);
    metric_set(sc.m_reload_ts, cairn_wall_time());
    if (ops->start(&sc))
        goto out_finish;
    if (!sc.nworkers) {
        log_error("the role gave no worker loop");
        goto out_finish;
    }
    if (service_stopping(&sc)) {    /* a signal while starting */
        code = 0;
        goto out_finish;
    }
    if (sc.sched_slice_ns) {        /* the workers started next inherit it */
        int r = cairn_sched_slice(sc.sched_slice_ns);
        if (r)
            log_info("the kernel keeps its own time slice", "err", cairn_strerror(r));
    }
    if (start_threads(&sc))
        goto out_finish;
    struct loop *main_loop = sc.workers[0].loop;
    loop_timer_init(&sc.trim, trim_cb, &sc);
    loop_timer_start(main_loop, &sc.trim, ops->trim_ms ? ops->trim_ms : TRIM_DEFAULT_MS);
    sc.ready = true;
    service_notify_ready();
    loop_run(main_loop);
    loop_timer_stop(&sc.trim);
    for (int i = 1; i < sc.nworkers; i++)
        pthread_join(sc.threads[i], NULL);
    code = 0;
out_finish:
    if (sc.admin_inited)
        httpd_worker_destroy(&sc.admin_hw);
    ops->finish(&sc);
    free(sc.workers);
    free(sc.threads);
out:
    metrics_registry_free(&sc.reg);
    if (code == 0)
        log_info("stopped");
    return code;
}

/* ---- HTTP worker pools ---- */

static void pool_drained(struct httpd_worker *hw, void *arg)
{
    struct service_http_worker *w = arg;
    UNUSED(hw);
    loop_stop(&w->loop);
}

static void pool_deadline(struct loop_timer *t)
{
    struct service_http_worker *w = t->data;
    httpd_close_all(&w->hw);
    loop_stop(&w->loop);
}

void service_http_pool_stop_worker(void *worker_arg)
{
    struct service_http_worker *w = worker_arg;
    loop_timer_start(&w->loop, &w->deadline, w->drain_ms);
    httpd_drain(&w->hw, pool_drained, w);
}

int service_http_pool_start(struct service_ctx *sc, struct service_http_pool *p, int n,
                            const struct httpd_conf *conf, const struct net_addr *addrs, size_t naddrs,
                            uint32_t drain_ms)
{
    p->n = n;
    p->drain_ms = drain_ms;
    p->w = calloc((size_t)n, sizeof(*p->w));
    struct service_worker *sw = calloc((size_t)n, sizeof(*sw));
    if (!p->w || !sw) {
        free(sw);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        struct service_http_worker *w = &p->w[i];
        if (loop_init(&w->loop)) {
            log_error("cannot create event loop");
            free(sw);
            return -ENOMEM;
        }
        p->ninit++;
        httpd_worker_init(&w->hw, &w->loop);
        loop_timer_init(&w->deadline, pool_deadline, w);
        w->drain_ms = drain_ms;
        sw[i].loop = &w->loop;
        sw[i].arg = w;
    }
    int r = service_set_workers(sc, sw, n);
    free(sw);
    for (int i = 0; !r && i < n; i++)
        for (size_t a = 0; !r && a < naddrs; a++)
            if ((r = httpd_listen(&p->w[i].hw, &addrs[a], conf))) {
                char s[NET_ADDRSTRLEN];
                net_addr_format(&addrs[a], s, sizeof(s));
                log_error("cannot listen", "addr", s, "err", cairn_strerror(r));
            }
    return r;
}

void service_http_pool_free(struct service_http_pool *p)
{
    for (int i = 0; i < p->ninit; i++) {
        httpd_worker_destroy(&p->w[i].hw);
        loop_timer_stop(&p->w[i].deadline);
        loop_destroy(&p->w[i].loop);
    }
    free(p->w);
    p->w = NULL;
    p->n = p->ninit = 0;
}
