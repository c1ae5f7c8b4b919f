/* edge_health.c - active health checks for backend servers.
 *
 * Every server of a backend with `health:` is watched through the service's
 * health checker (core/health.h, on worker 0's loop): an HTTP(S) GET of the path
 * (status in the accepted range) or a TCP connect, each bounded by `timeout`, to
 * the server's own address. A server starts up (a stack starting together would
 * otherwise refuse traffic for rise x interval), goes down after `fall`
 * consecutive failures and comes back after `rise` consecutive successes; both
 * transitions are logged and visible in the admin API and in edge_server_up.
 * Servers named by several backends, or kept across a reload or a DNS change,
 * share one check and its state.
 */
#include "edge_internal.h"
#include "core/log.h"

#include <errno.h>

static void server_changed(struct health_watch *hw, int up, int was, const char *why)
{
    struct edge_server *s = container_of(hw, struct edge_server, watch);
    struct edge *e = hw->data;
    UNUSED(was);
    __atomic_store_n(&s->up, up == HEALTH_UP ? 1 : 0, __ATOMIC_RELAXED);
    metric_set(metrics_get2(e->m_server_up, s->backend->name, s->name), up == HEALTH_UP ? 1 : 0);
    if (up == HEALTH_UP) {
        __atomic_store_n(&s->recovered_ms, cairn_now_ms(), __ATOMIC_RELAXED);
        log_info("server up", "backend", s->backend->name, "server", s->name, "check", why);
    } else {
        log_warn("server down", "backend", s->backend->name, "server", s->name, "check", why);
    }
}

int edge__health_start(struct edge_gen *g)
{
    struct edge *e = g->e;
    const struct edge_conf *c = g->conf;
    for (size_t b = 0; b < c->nbackends; b++) {
        struct edge_backend *be = &c->backends[b];
        for (size_t i = 0; i < be->nservers; i++) {
            struct edge_server *s = &be->servers[i];
            if (be->health.enabled) {
                s->watch.cb = server_changed;
                s->watch.data = e;
                if (health_watch_start(&e->health, &s->watch, &s->addr, s->name, &be->health, true))
                    return -ENOMEM;
                s->up = health_target_state(s->watch.target) == HEALTH_UP;
            }
            metric_set(metrics_get2(e->m_server_up, be->name, s->name), s->up ? 1 : 0);
        }
    }
    return 0;
}

void edge__health_stop(struct edge_gen *g)
{
    const struct edge_conf *c = g->conf;
    for (size_t b = 0; b < c->nbackends; b++)
        for (size_t i = 0; i < c->backends[b].nservers; i++)
            health_watch_stop(&g->e->health, &c->backends[b].servers[i].watch);
}
