/* edge_l4.c - L4 (TCP) listeners: each accepted connection is joined to a server
 * of the listener's backend by a tunnel, with the same balancing, health state
 * and ejection as HTTP, and TLS termination when the listener has certificates.
 * A failed connect is retried on another server (the backend's `retries`). */
#include "edge_internal.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct l4_listener {
    struct loop_io io;
    struct edge_worker *w;
    struct edge_lctx *lc;           /* current generation's listener */
    struct net_addr addr;
    struct l4_listener *next;
};

struct l4_conn {
    struct edge_worker *w;
    struct edge_backend *b;
    struct edge_gen *gen;
    int cfd;
    SSL *cssl;
    int sfd;
    struct loop_io io;
    struct loop_timer timer;
    struct loop_defer defer;
    struct edge_server *srv;
    uint64_t tried[4];
    int attempts;
    bool counted;                   /* towards max_conns_per_ip */
    struct sockaddr_storage peer;
    struct l4_conn *prev, *next;    /* the worker's pending list */
};

static void pending_unlink(struct l4_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->w->l4_pending = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void l4_try(struct l4_conn *lc);

static struct edge_server *l4_pick(struct l4_conn *c)
{
    char ip[64] = "";
    if (c->b->balance == BAL_HASH)
        net_ip_format((const struct sockaddr *)&c->peer, ip, sizeof(ip));
    return edge__pick(c->b, c->w, c->tried, strv_cstr(ip));
}

static void l4_free(void *arg)
{
    free(arg);
}

static void l4_give_up(struct l4_conn *c)
{
    pending_unlink(c);
    if (c->counted)
        edge__conn_count(c->w->e, (const struct sockaddr *)&c->peer, -1);
    loop_timer_stop(&c->timer);
    if (c->sfd >= 0) {
        loop_io_del(&c->io);
        close(c->sfd);
        c->sfd = -1;
    }
    tls_conn_free(&c->cssl);
    close(c->cfd);
    loop_defer(&c->w->loop, &c->defer, l4_free, c);
}

static void l4_fail_attempt(struct l4_conn *c)
{
    loop_timer_stop(&c->timer);
    if (c->sfd >= 0) {
        loop_io_del(&c->io);
        close(c->sfd);
        c->sfd = -1;
    }
    if (c->srv) {
        __atomic_add_fetch(&c->srv->failures, 1, __ATOMIC_RELAXED);
        metric_inc(c->w->e->m_upstream_errors);
    }
    if (c->attempts > c->b->retries) {
        l4_give_up(c);
        return;
    }
    l4_try(c);
}

/* A tunnel's client that counts towards max_conns_per_ip until the tunnel ends. */
struct l4_counted {
    struct edge *e;
    struct sockaddr_storage peer;
};

static void l4_uncount(void *arg)
{
    struct l4_counted *k = arg;
    edge__conn_count(k->e, (const struct sockaddr *)&k->peer, -1);
    free(k);
}

static void l4_connected(struct loop_io *io, uint32_t events)
{
    struct l4_conn *c = io->data;
    int err = 0;
    socklen_t l = sizeof(err);
    UNUSED(events);
    getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
        l4_fail_attempt(c);
        return;
    }
    loop_timer_stop(&c->timer);
    loop_io_del(&c->io);
    int sfd = c->sfd;
    c->sfd = -1;
    uint64_t timeout = c->b->idle_timeout_ms > 3600000 ? c->b->idle_timeout_ms : 3600000;
    struct l4_counted *k = NULL;
    if (c->counted && (k = malloc(sizeof(*k)))) {
        k->e = c->w->e;
        k->peer = c->peer;
    } else if (c->counted) {
        edge__conn_count(c->w->e, (const struct sockaddr *)&c->peer, -1);
    }
    if (tunnel_start(&c->w->tunnels, c->cfd, c->cssl, NULL, sfd, NULL, NULL, timeout, k ? l4_uncount : NULL, k))
        log_warn("cannot start a tunnel");
    __atomic_add_fetch(&c->srv->requests, 1, __ATOMIC_RELAXED);
    c->cssl = NULL;
    pending_unlink(c);
    loop_defer(&c->w->loop, &c->defer, l4_free, c);
}

static void l4_timeout(struct loop_timer *t)
{
    l4_fail_attempt(t->data);
}

static void l4_try(struct l4_conn *c)
{
    for (;;) {
        c->srv = l4_pick(c);
        if (!c->srv) {
            l4_give_up(c);
            return;
        }
        size_t i = (size_t)(c->srv - c->b->servers);
        if (i < 256)
            c->tried[i / 64] |= 1ull << (i % 64);
        c->attempts++;
        int fd = net_connect_tcp(&c->srv->addr);
        if (fd < 0) {
            if (c->attempts > c->b->retries) {
                l4_give_up(c);
                return;
            }
            continue;
        }
        c->sfd = fd;
        loop_io_init(&c->io, fd, l4_connected, c);
        if (loop_io_add(&c->w->loop, &c->io, EPOLLOUT)) {
            close(fd);
            c->sfd = -1;
            l4_give_up(c);
            return;
        }
        loop_timer_start(&c->w->loop, &c->timer, c->b->connect_timeout_ms);
        return;
    }
}

static void l4_accept(struct loop_io *io, uint32_t events)
{
    struct l4_listener *l = io->data;
    struct edge_worker *w = l->w;
    UNUSED(events);
    for (int k = 0; k < 256; k++) {
        struct sockaddr_storage ss;
        int fd = net_accept(io->fd, &ss);
        if (fd < 0)
            return;
        struct edge_lctx *lc = l->lc;
        if (service_stopping(w->e->sc) ||
            !edge__cidrs_allow(&lc->l->allow, &lc->l->deny, (struct sockaddr *)&ss)) {
            if (!service_stopping(w->e->sc))
                metric_inc(w->e->m_denied);
            close(fd);
            continue;
        }
        int limit = lc->gen->conf->max_conns_per_ip;
        if (limit && edge__conn_count(w->e, (struct sockaddr *)&ss, 1) > limit) {
            edge__conn_count(w->e, (struct sockaddr *)&ss, -1);
            metric_inc(w->e->m_denied);
            close(fd);
            continue;
        }
        net_set_nodelay(fd);
        struct l4_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            if (limit)
                edge__conn_count(w->e, (struct sockaddr *)&ss, -1);
            close(fd);
            continue;
        }
        c->counted = limit != 0;
        c->peer = ss;
        c->w = w;
        c->gen = lc->gen;
        c->b = lc->l->backend;
        c->cfd = fd;
        c->sfd = -1;
        if (lc->tls && !(c->cssl = tls_conn_new(lc->tls, fd, true, NULL))) {
            if (c->counted)
                edge__conn_count(w->e, (struct sockaddr *)&ss, -1);
            close(fd);
            free(c);
            continue;
        }
        loop_timer_init(&c->timer, l4_timeout, c);
        c->next = w->l4_pending;
        if (w->l4_pending)
            w->l4_pending->prev = c;
        w->l4_pending = c;
        l4_try(c);
    }
}

static struct l4_listener *l4_find(struct edge_worker *w, const struct net_addr *a)
{
    for (struct l4_listener *l = w->l4; l; l = l->next)
        if (net_addr_eq(&l->addr, a))
            return l;
    return NULL;
}

static void l4_close(struct edge_worker *w, struct l4_listener *l)
{
    for (struct l4_listener **p = &w->l4; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            loop_io_del(&l->io);
            close(l->io.fd);
            free(l);
            return;
        }
}

/* Binds or re-points this worker's L4 listeners for generation g and closes
 * those g no longer has. Tunnels already open are left alone. */
int edge__l4_use_gen(struct edge_worker *w, struct edge_gen *g)
{
    const struct edge_conf *c = g->conf;
    for (size_t i = 0; i < c->nlisten; i++) {
        if (!c->listen[i].tcp)
            continue;
        struct l4_listener *l = l4_find(w, &c->listen[i].addr);
        if (!l) {
            l = calloc(1, sizeof(*l));
            if (!l)
                return -ENOMEM;
            int fd = net_listen_tcp(&c->listen[i].addr, 1024, true);
            if (fd < 0) {
                char a[NET_ADDRSTRLEN];
                net_addr_format(&c->listen[i].addr, a, sizeof(a));
                log_error("cannot listen", "addr", a, "err", cairn_strerror(fd));
                free(l);
                return fd;
            }
            l->w = w;
            l->addr = c->listen[i].addr;
            loop_io_init(&l->io, fd, l4_accept, l);
            if (loop_io_add(&w->loop, &l->io, EPOLLIN)) {
                close(fd);
                free(l);
                return -EIO;
            }
            l->next = w->l4;
            w->l4 = l;
        }
        l->lc = &g->lctx[i];
    }
    for (struct l4_listener *l = w->l4, *next; l; l = next) {
        next = l->next;
        bool kept = false;
        for (size_t i = 0; i < c->nlisten; i++)
            kept |= c->listen[i].tcp && net_addr_eq(&c->listen[i].addr, &l->addr);
        if (!kept)
            l4_close(w, l);
    }
    return 0;
}

void edge__l4_close_all(struct edge_worker *w)
{
    while (w->l4)
        l4_close(w, w->l4);
    while (w->l4_pending)
        l4_give_up(w->l4_pending);
}
