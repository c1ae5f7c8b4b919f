/* tunnel.c - byte tunnels between two sockets (the edge's WebSocket and other
 * Upgrades and its L4 mode; the console's WebSocket proxy).
 *
 * A tunnel joins two sockets (either may be TLS) and copies bytes both ways.
 * Each side has an output buffer holding what the other side sent and this side
 * has not taken yet; reading from a side stops while the other side's buffer
 * holds more than TUNNEL_HIGH bytes, so a slow reader slows the writer instead of
 * growing memory. When one side ends its stream, the other is told with a write
 * shutdown once everything before it was delivered (half-close is preserved).
 * The tunnel closes when both directions are done, on an error, or after
 * timeout_ms without traffic.
 */
#include "core/tunnel.h"
#include "core/stream.h"
#include "core/tls.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define TUNNEL_HIGH (256u << 10)

struct tunnel;

struct tun_side {
    struct tunnel *t;
    int fd;
    SSL *ssl;
    struct loop_io io;
    struct buf out;         /* bytes waiting to be written to this side */
    bool rd_eof;            /* this side has ended its stream */
    bool wr_shut;           /* we shut this side's write direction */
};

struct tunnel {
    struct tunnel_set *set;
    struct tun_side s[2];
    struct loop_timer idle;
    struct loop_defer defer;
    uint64_t timeout_ms;
    uint64_t bytes[2];      /* bytes read from each side */
    bool closed;
    void (*on_close)(void *arg);
    void *close_arg;
    struct tunnel *prev, *next; /* the set's list */
};

static void tun_free(void *arg)
{
    struct tunnel *t = arg;
    for (int i = 0; i < 2; i++)
        buf_free(&t->s[i].out);
    free(t);
}

static void tun_close(struct tunnel *t)
{
    if (t->closed)
        return;
    t->closed = true;
    if (t->on_close)
        t->on_close(t->close_arg);
    if (t->prev)
        t->prev->next = t->next;
    else
        t->set->head = t->next;
    t->set->n--;
    if (t->next)
        t->next->prev = t->prev;
    loop_timer_stop(&t->idle);
    for (int i = 0; i < 2; i++) {
        struct tun_side *s = &t->s[i];
        loop_io_del(&s->io);
        tls_conn_free(&s->ssl);
        close(s->fd);
    }
    loop_defer(t->set->loop, &t->defer, tun_free, t);
}

static ssize_t side_read(struct tun_side *s, void *p, size_t n)
{
    return stream_read(s->fd, s->ssl, p, n);
}

static ssize_t side_write(struct tun_side *s, const void *p, size_t n)
{
    return stream_write(s->fd, s->ssl, p, n);
}

/* Writes side i's pending output. Returns false when the tunnel closed. */
static bool flush_side(struct tunnel *t, int i)
{
    struct tun_side *s = &t->s[i];
    while (buf_used(&s->out)) {
        ssize_t n = side_write(s, buf_head(&s->out), buf_used(&s->out));
        if (n == -EAGAIN)
            return true;
        if (n <= 0) {
            tun_close(t);
            return false;
        }
        buf_consume(&s->out, (size_t)n);
    }
    /* the other side ended and everything it sent is delivered: pass the end on */
    if (t->s[1 - i].rd_eof && !s->wr_shut) {
        s->wr_shut = true;
        if (s->ssl)
            SSL_shutdown(s->ssl);
        shutdown(s->fd, SHUT_WR);
    }
    if (t->s[0].rd_eof && t->s[1].rd_eof && t->s[0].wr_shut && t->s[1].wr_shut) {
        tun_close(t);
        return false;
    }
    return true;
}

/* Reads from side i into the other side's output while it has room. */
static bool pump(struct tunnel *t, int i)
{
    struct tun_side *s = &t->s[i], *o = &t->s[1 - i];
    char tmp[16384];
    while (!s->rd_eof && buf_used(&o->out) < TUNNEL_HIGH) {
        ssize_t n = side_read(s, tmp, sizeof(tmp));
        if (n == -EAGAIN)
            break;
        if (n < 0) {
            tun_close(t);
            return false;
        }
        if (n == 0) {
            s->rd_eof = true;
            break;
        }
        t->bytes[i] += (uint64_t)n;
        if (buf_append(&o->out, tmp, (size_t)n)) {
            tun_close(t);
            return false;
        }
        if (!flush_side(t, 1 - i))
            return false;
    }
    return flush_side(t, 1 - i);
}

static void tun_event(struct loop_io *io, uint32_t events)
{
    struct tun_side *s = io->data;
    struct tunnel *t = s->t;
    int i = (int)(s - t->s);
    if (t->closed)
        return;
    if ((events & EPOLLERR) && !(events & EPOLLIN)) {
        tun_close(t);
        return;
    }
    loop_timer_start(t->set->loop, &t->idle, t->timeout_ms);
    /* our side drained: the other side may read again */
    if (!flush_side(t, i))
        return;
    if (!pump(t, i))
        return;
    if (buf_used(&s->out) < TUNNEL_HIGH)
        pump(t, 1 - i);
}

static void tun_timeout(struct loop_timer *tm)
{
    tun_close(tm->data);
}

int tunnel_start(struct tunnel_set *set, int fd_a, SSL *ssl_a, struct buf *to_a, int fd_b, SSL *ssl_b,
                 struct buf *to_b, uint64_t timeout_ms, void (*on_close)(void *arg), void *arg)
{
    struct tunnel *t = calloc(1, sizeof(*t));
    if (!t) {
        if (on_close)
            on_close(arg);
        tls_conn_free(&ssl_a);
        tls_conn_free(&ssl_b);
        close(fd_a);
        close(fd_b);
        return -ENOMEM;
    }
    t->set = set;
    t->timeout_ms = timeout_ms;
    int fds[2] = { fd_a, fd_b };
    SSL *ssls[2] = { ssl_a, ssl_b };
    struct buf *tos[2] = { to_a, to_b };
    for (int i = 0; i < 2; i++) {
        struct tun_side *s = &t->s[i];
        s->t = t;
        s->fd = fds[i];
        s->ssl = ssls[i];
        if (tos[i]) {
            s->out = *tos[i];
            *tos[i] = BUF_INIT;
        }
        loop_io_init(&s->io, s->fd, tun_event, s);
    }
    loop_timer_init(&t->idle, tun_timeout, t);
    for (int i = 0; i < 2; i++) {
        if (loop_io_add(set->loop, &t->s[i].io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
            if (i == 1)
                loop_io_del(&t->s[0].io);
            for (int k = 0; k < 2; k++) {
                tls_conn_free(&t->s[k].ssl);
                close(t->s[k].fd);
                buf_free(&t->s[k].out);
            }
            if (on_close)
                on_close(arg);
            free(t);
            return -EIO;
        }
    }
    loop_timer_start(set->loop, &t->idle, timeout_ms);
    t->on_close = on_close;
    t->close_arg = arg;
    t->next = set->head;
    if (set->head)
        set->head->prev = t;
    set->head = t;
    set->n++;
    /* bytes may already be waiting on either side */
    if (flush_side(t, 0) && flush_side(t, 1) && pump(t, 0))
        pump(t, 1);
    return 0;
}

void tunnel_close_all(struct tunnel_set *set)
{
    while (set->head)
        tun_close(set->head);
    /* free now: the loop may not run again */
    while (set->loop && set->loop->defer_head) {
        struct loop_defer *d = set->loop->defer_head;
        set->loop->defer_head = d->next;
        d->queued = false;
        d->cb(d->arg);
    }
}
