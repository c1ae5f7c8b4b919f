/* edge_health.c - active health checks for backend servers.
 *
 * Every server of a backend with `health:` is checked every `interval` from
 * worker 0's loop: an HTTP GET of the path (status in the accepted range) or a
 * TCP connect, each bounded by `timeout`. A server goes down after `fall`
 * consecutive failures and comes back after `rise` consecutive successes; both
 * transitions are logged and visible in the admin API and in edge_server_up.
 */
#include "edge_internal.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

void edge__server_set_up(struct edge *e, struct edge_server *s, bool up, const char *why)
{
    int was = __atomic_exchange_n(&s->up, up ? 1 : 0, __ATOMIC_RELAXED);
    metric_set(metrics_get2(e->m_server_up, s->backend->name, s->name), up ? 1 : 0);
    if (was == (up ? 1 : 0))
        return;
    if (up) {
        __atomic_store_n(&s->recovered_ms, cairn_now_ms(), __ATOMIC_RELAXED);
        log_info("server up", "backend", s->backend->name, "server", s->name, "check", why);
    } else {
        log_warn("server down", "backend", s->backend->name, "server", s->name, "check", why);
    }
}

static void verdict(struct edge_check *ck, bool ok, const char *why)
{
    struct edge_server *s = ck->srv;
    const struct edge_health *h = &s->backend->health;
    snprintf(s->last_check, sizeof(s->last_check), "%s", why);
    if (ok) {
        s->fail_streak = 0;
        if (++s->ok_streak >= h->rise)
            edge__server_set_up(ck->e, s, true, why);
    } else {
        s->ok_streak = 0;
        if (++s->fail_streak >= h->fall)
            edge__server_set_up(ck->e, s, false, why);
    }
    loop_timer_start(ck->timer.loop, &ck->timer, h->interval_ms);
}

static void http_done(const struct httpc_response *resp, void *arg)
{
    struct edge_check *ck = arg;
    const struct edge_health *h = &ck->srv->backend->health;
    char why[96];
    ck->call = NULL;
    if (resp->error) {
        snprintf(why, sizeof(why), "http: %s", cairn_strerror(resp->error));
        verdict(ck, false, why);
        return;
    }
    snprintf(why, sizeof(why), "http status %d", resp->status);
    verdict(ck, resp->status >= h->status_min && resp->status <= h->status_max, why);
}

static void tcp_close(struct edge_check *ck)
{
    loop_timer_stop(&ck->tcp_timer);
    if (ck->tcp_fd >= 0) {
        loop_io_del(&ck->tcp_io);
        close(ck->tcp_fd);
        ck->tcp_fd = -1;
    }
}

static void tcp_event(struct loop_io *io, uint32_t events)
{
    struct edge_check *ck = io->data;
    int err = 0;
    socklen_t l = sizeof(err);
    UNUSED(events);
    getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    tcp_close(ck);
    char why[96];
    snprintf(why, sizeof(why), err ? "tcp: %s" : "tcp connect ok", strerror(err));
    verdict(ck, err == 0, why);
}

static void tcp_timeout(struct loop_timer *t)
{
    struct edge_check *ck = t->data;
    tcp_close(ck);
    verdict(ck, false, "tcp: connect timed out");
}

static void run_check(struct loop_timer *t)
{
    struct edge_check *ck = t->data;
    struct edge_server *s = ck->srv;
    const struct edge_health *h = &s->backend->health;
    if (h->http) {
        struct httpc_request req = {
            .method = "GET",
            .addr = s->addr,
            .host = h->host ? h->host : s->name,
            .target = h->path,
            .timeout_ms = (uint32_t)h->timeout_ms,
            .tls = s->backend->tls,
        };
        static const char *const hdrs[] = { "User-Agent: cairn-edge-health", "Connection: close", NULL };
        req.headers = hdrs;
        ck->call = httpc_send(ck->gen->checker, &req, http_done, ck);
        if (!ck->call)
            verdict(ck, false, "http: out of memory");
        return;
    }
    int fd = net_connect_tcp(&s->addr);
    if (fd < 0) {
        char why[96];
        snprintf(why, sizeof(why), "tcp: %s", cairn_strerror(fd));
        verdict(ck, false, why);
        return;
    }
    ck->tcp_fd = fd;
    loop_io_init(&ck->tcp_io, fd, tcp_event, ck);
    loop_io_add(t->loop, &ck->tcp_io, EPOLLOUT);
    loop_timer_start(t->loop, &ck->tcp_timer, h->timeout_ms);
}

int edge__health_start(struct edge_gen *g, struct loop *loop)
{
    struct edge *e = g->e;
    const struct edge_conf *c = g->conf;
    size_t n = 0;
    for (size_t b = 0; b < c->nbackends; b++)
        if (c->backends[b].health.enabled)
            n += c->backends[b].nservers;
    for (size_t b = 0; b < c->nbackends; b++)
        for (size_t i = 0; i < c->backends[b].nservers; i++) {
            struct edge_server *s = &c->backends[b].servers[i];
            metric_set(metrics_get2(e->m_server_up, s->backend->name, s->name), s->up ? 1 : 0);
        }
    if (!n)
        return 0;
    struct httpc_opts o;
    httpc_opts_defaults(&o);
    o.max_idle = 0;
    o.tls = g->check_tls;
    g->checker = httpc_new(loop, &o);
    g->checks = calloc(n, sizeof(*g->checks));
    if (!g->checker || !g->checks)
        return -ENOMEM;
    for (size_t b = 0; b < c->nbackends; b++) {
        struct edge_backend *be = &c->backends[b];
        if (!be->health.enabled)
            continue;
        for (size_t i = 0; i < be->nservers; i++) {
            struct edge_check *ck = &g->checks[g->nchecks++];
            ck->e = e;
            ck->gen = g;
            ck->srv = &be->servers[i];
            ck->tcp_fd = -1;
            /* Until a verdict, a new server counts as up (a stack starting together
             * would otherwise refuse traffic for rise x interval); a server carried
             * over from the previous configuration keeps its state. */
            if (ck->srv->up && !ck->srv->fail_streak)
                ck->srv->ok_streak = MAX(ck->srv->ok_streak, be->health.rise);
            loop_timer_init(&ck->timer, run_check, ck);
            loop_timer_init(&ck->tcp_timer, tcp_timeout, ck);
            /* spread the first checks over the interval */
            loop_timer_start(loop, &ck->timer, (cairn_rand64() % (be->health.interval_ms / 4 + 1)));
        }
    }
    return 0;
}

void edge__health_stop(struct edge_gen *g)
{
    for (size_t i = 0; i < g->nchecks; i++) {
        struct edge_check *ck = &g->checks[i];
        loop_timer_stop(&ck->timer);
        tcp_close(ck);
        if (ck->call) {
            httpc_cancel(ck->call);
            ck->call = NULL;
        }
    }
    httpc_free(&g->checker);
    free(g->checks);
    g->checks = NULL;
    g->nchecks = 0;
}
