/* httpd.c - HTTP/1.1 server connections on the event loop. */
#include "core/httpd.h"
#include "core/stream.h"
#include "core/metrics.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

enum conn_state {
    CS_HANDSHAKE,   /* TLS handshake in progress */
    CS_H2,          /* an HTTP/2 connection: streams carry the requests */
    CS_HEAD,        /* reading a request head */
    CS_BODY,        /* reading a request body */
    CS_HANDLER,     /* request handed to the handler, no response finished yet */
    CS_CLOSING,     /* flushing the last response, then linger */
    CS_LINGER,      /* write side shut; draining input briefly so the peer sees our reply */
    CS_CLOSED,
};

enum timer_kind { T_NONE, T_IDLE, T_HEADER, T_BODY, T_WRITE, T_LINGER };

#define READ_CHUNK 16384
#define STREAM_CHUNK (256u << 10)
#define WBUF_HIGH (1u << 20)
#define LINGER_MS 2000
#define MAX_FREE_CONNS 64

struct httpd_conn {
    struct loop_io io;
    struct loop_timer timer;
    struct loop_defer defer;
    struct httpd_worker *w;
    const struct httpd_conf *conf;
    SSL *ssl;
    struct buf rbuf, wbuf, hdrs, body;
    struct http1_scan scan;
    struct http1_chunked chunked;
    size_t head_len;        /* bytes of the current head in rbuf */
    size_t raw_pos;         /* chunked: bytes of rbuf decoded so far */
    size_t req_end;         /* bytes of rbuf the current request occupies */
    enum conn_state state;
    enum timer_kind timer_kind;
    bool in_handler, in_process;
    bool close_later;       /* a caller is streaming: a failed write closes from the loop */
    bool input_drained;     /* the last read emptied the socket and no input edge came since */
    bool opened;            /* on_open was called */
    bool close_after;       /* no keep-alive after this response */
    bool resp_started, resp_chunked, resp_nobody;
    /* a streamed request body (conf->stream_body): read while the handler runs */
    bool streaming;                 /* the body is not read to its end yet */
    const struct httpd_body_ops *body_ops;  /* set by httpd_req_read_body */
    void *body_arg;
    uint64_t body_left;             /* Content-Length bodies: bytes still to come */
    const char *head_at;            /* where the head's views point (re-parsed when it moves) */
    struct httpd_req *req;          /* from the worker's pool while a request is active */
    struct h2_conn *h2;             /* HTTP/2 state when ALPN chose h2 */
    /* a body sent from the caller's memory after wbuf (httpd_respond_ext) */
    const char *ext;
    size_t ext_len, ext_off;
    void (*ext_release)(void *arg);
    void *ext_arg;
    union {                 /* the client's address (TCP only: no sockaddr_storage) */
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    struct httpd_conn *next, *prev;
};

static void conn_event(struct loop_io *io, uint32_t events);
static void conn_timer(struct loop_timer *t);
static void conn_resume(struct httpd_conn *c);
static void conn_close(struct httpd_conn *c);
static int conn_flush(struct httpd_conn *c);

static inline bool conn_pending(const struct httpd_conn *c)
{
    return buf_used(&c->wbuf) || c->ext;
}

static void ext_done(struct httpd_conn *c)
{
    if (!c->ext)
        return;
    void (*rel)(void *) = c->ext_release;
    void *arg = c->ext_arg;
    c->ext = NULL;
    c->ext_len = c->ext_off = 0;
    c->ext_release = NULL;
    if (rel)
        rel(arg);
}
static int h2_start(struct httpd_conn *c);
static int h2c_start(struct httpd_conn *c);
static void h2_io(struct httpd_conn *c);
static void h2_free(struct httpd_conn *c);
static void h2_goaway(struct httpd_conn *c);
static void h2_respond_start(struct httpd_req *r, int status, const char *ctype, int64_t len);
static void h2_respond_write(struct httpd_req *r, const void *data, size_t len);
static void h2_respond_finish(struct httpd_req *r);
static void h2_abort(struct httpd_req *r);
static size_t h2_pending(const struct httpd_req *r);
static struct buf *h2_hdrs(struct httpd_req *r);

void httpd_conf_defaults(struct httpd_conf *conf)
{
    memset(conf, 0, sizeof(*conf));
    conf->limits = http1_default_limits;
    conf->header_timeout_ms = 10000;
    conf->body_timeout_ms = 30000;
    conf->idle_timeout_ms = 60000;
    conf->max_conns = 10000;
    conf->server = "cairn";
    conf->h2c = true;
}

void httpd_worker_init(struct httpd_worker *w, struct loop *loop)
{
    memset(w, 0, sizeof(*w));
    w->loop = loop;
}

#define POOL_BUF_SIZE 16384

/* Gives the connection a pooled read buffer if it has none. */
static void buf_take(struct httpd_worker *w, struct buf *b)
{
    if (b->data)
        return;
    if (!w->nbuf_pool) {
        buf_reserve(b, POOL_BUF_SIZE);     /* a fresh one of the pooled size */
        return;
    }
    b->data = w->buf_pool[--w->nbuf_pool];
    b->cap = POOL_BUF_SIZE;
    b->off = b->len = 0;
    b->data[0] = '\0';
}

/* Returns an empty buffer's memory to the pool (or frees it). */
static void buf_give(struct httpd_worker *w, struct buf *b)
{
    if (!b->data || buf_used(b))
        return;
    if (b->cap == POOL_BUF_SIZE && w->nbuf_pool < ARRAY_SIZE(w->buf_pool)) {
        w->buf_pool[w->nbuf_pool++] = b->data;
        *b = BUF_INIT;
        return;
    }
    buf_free(b);
}

static struct httpd_req *req_take(struct httpd_worker *w)
{
    if (w->nreq_pool)
        return w->req_pool[--w->nreq_pool];
    return malloc(sizeof(struct httpd_req));
}

static void req_give(struct httpd_worker *w, struct httpd_req **pr)
{
    if (!*pr)
        return;
    if (w->nreq_pool < ARRAY_SIZE(w->req_pool))
        w->req_pool[w->nreq_pool++] = *pr;
    else
        free(*pr);
    *pr = NULL;
}

/* An idle keep-alive connection keeps nothing but its socket. */
static void conn_idle_release(struct httpd_conn *c)
{
    if (c->state != CS_HEAD || buf_used(&c->rbuf) || conn_pending(c))
        return;
    req_give(c->w, &c->req);
    buf_give(c->w, &c->rbuf);
    buf_give(c->w, &c->wbuf);
    buf_give(c->w, &c->body);
    buf_give(c->w, &c->hdrs);
}

static void set_timer(struct httpd_conn *c, enum timer_kind kind, uint32_t ms)
{
    c->timer_kind = kind;
    if (kind == T_NONE || ms == 0)
        loop_timer_stop(&c->timer);
    else
        loop_timer_start(c->w->loop, &c->timer, ms);
}

/* ---- accepting ---- */

static void conn_free_mem(struct httpd_conn *c)
{
    buf_free(&c->rbuf);
    buf_free(&c->wbuf);
    buf_free(&c->hdrs);
    buf_free(&c->body);
    free(c);
}

static struct httpd_conn *conn_alloc(struct httpd_worker *w)
{
    struct httpd_conn *c = w->free_conns;
    if (c) {
        w->free_conns = c->next;
        w->nfree--;
        struct buf rb = c->rbuf, wb = c->wbuf, hb = c->hdrs, bb = c->body;
        memset(c, 0, sizeof(*c));
        c->rbuf = rb;
        c->wbuf = wb;
        c->hdrs = hb;
        c->body = bb;
        buf_reset(&c->rbuf);
        buf_reset(&c->wbuf);
        buf_reset(&c->hdrs);
        buf_reset(&c->body);
        return c;
    }
    return calloc(1, sizeof(*c));
}

static void conn_start(struct httpd_worker *w, const struct httpd_conf *conf, int fd,
                       const struct sockaddr_storage *peer)
{
    struct httpd_conn *c = conn_alloc(w);
    if (!c) {
        close(fd);
        return;
    }
    c->w = w;
    c->conf = conf;
    memcpy(&c->peer, peer, peer->ss_family == AF_INET6 ? sizeof(c->peer.in6) : sizeof(c->peer.in));
    loop_io_init(&c->io, fd, conn_event, c);
    loop_timer_init(&c->timer, conn_timer, c);
    c->state = CS_HEAD;
    if (conf->tls) {
        c->ssl = tls_conn_new(conf->tls, fd, true, NULL);
        if (!c->ssl) {
            close(fd);
            conn_free_mem(c);
            return;
        }
        c->state = CS_HANDSHAKE;
    }
    /* TLS may need to write while reading, so it watches both directions;
     * plain connections add EPOLLOUT only while a write is blocked. */
    uint32_t ev = EPOLLIN | EPOLLRDHUP | EPOLLET | (c->ssl ? EPOLLOUT : 0);
    if (loop_io_add(w->loop, &c->io, ev)) {
        tls_conn_free(&c->ssl);
        close(fd);
        conn_free_mem(c);
        return;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    c->opened = true;
    if (conf->on_open && !conf->on_open(conf->handler_arg, &c->peer.sa))
        conn_close(c);
    set_timer(c, T_HEADER, conf->header_timeout_ms);
    /* Data may already be waiting (TCP_DEFER_ACCEPT-like); the edge-triggered
     * registration reports it, so nothing more to do here. */
}

static void listener_cb(struct loop_io *io, uint32_t events)
{
    struct httpd_listener *l = io->data;
    struct httpd_worker *w = l->w;
    UNUSED(events);
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage ss;
        int fd = net_accept(io->fd, &ss);
        if (fd < 0)
            break;  /* EAGAIN, or EMFILE and friends: level-triggered, we come back */
        if (w->draining || w->nconns >= l->conf->max_conns) {
            close(fd);
            continue;
        }
        net_set_nodelay(fd);
        conn_start(w, l->conf, fd, &ss);
    }
}

int httpd_listen(struct httpd_worker *w, const struct net_addr *addr,
                 const struct httpd_conf *conf)
{
    struct httpd_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    int fd = net_listen_tcp(addr, 1024, true);
    if (fd < 0) {
        free(l);
        return fd;
    }
    l->w = w;
    l->conf = conf;
    l->addr = *addr;
    loop_io_init(&l->io, fd, listener_cb, l);
    int r = loop_io_add(w->loop, &l->io, EPOLLIN);
    if (r) {
        close(fd);
        free(l);
        return r;
    }
    l->next = w->listeners;
    w->listeners = l;
    return 0;
}

struct httpd_listener *httpd_listener_find(struct httpd_worker *w, const struct net_addr *addr)
{
    for (struct httpd_listener *l = w->listeners; l; l = l->next)
        if (net_addr_eq(&l->addr, addr))
            return l;
    return NULL;
}

void httpd_listener_set_conf(struct httpd_listener *l, const struct httpd_conf *conf)
{
    l->conf = conf;
}

void httpd_listener_close(struct httpd_worker *w, struct httpd_listener *l)
{
    for (struct httpd_listener **p = &w->listeners; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            loop_io_del(&l->io);
            close(l->io.fd);
            free(l);
            return;
        }
    }
}

void httpd_retire(struct httpd_worker *w, const struct httpd_conf *conf, uint32_t grace_ms)
{
    for (struct httpd_conn *c = w->conns; c; c = c->next) {
        if (c->conf != conf)
            continue;
        c->close_after = true;
        if (c->state == CS_H2)
            h2_goaway(c);
        else if (c->state == CS_HEAD && buf_used(&c->rbuf) == 0 && c->timer_kind != T_HEADER)
            set_timer(c, T_IDLE, grace_ms);
    }
}

static void close_listeners(struct httpd_worker *w)
{
    while (w->listeners) {
        struct httpd_listener *l = w->listeners;
        w->listeners = l->next;
        loop_io_del(&l->io);
        close(l->io.fd);
        free(l);
    }
}

static void check_drained(struct httpd_worker *w)
{
    if (w->draining && w->nconns == 0 && w->on_drained) {
        void (*cb)(struct httpd_worker *, void *) = w->on_drained;
        w->on_drained = NULL;
        cb(w, w->drained_arg);
    }
}

void httpd_drain(struct httpd_worker *w, void (*on_drained)(struct httpd_worker *, void *),
                 void *arg)
{
    w->draining = true;
    w->on_drained = on_drained;
    w->drained_arg = arg;
    close_listeners(w);
    struct httpd_conn *c = w->conns;
    while (c) {
        struct httpd_conn *next = c->next;
        if ((c->state == CS_HEAD && buf_used(&c->rbuf) == 0) || c->state == CS_HANDSHAKE)
            conn_close(c);
        else if (c->state == CS_H2)
            h2_goaway(c);
        else
            c->close_after = true;
        c = next;
    }
    check_drained(w);
}

void httpd_close_all(struct httpd_worker *w)
{
    while (w->conns)
        conn_close(w->conns);
}

static void free_list(struct httpd_worker *w)
{
    while (w->free_conns) {
        struct httpd_conn *c = w->free_conns;
        w->free_conns = c->next;
        conn_free_mem(c);
    }
    w->nfree = 0;
}

void httpd_worker_destroy(struct httpd_worker *w)
{
    close_listeners(w);
    w->on_drained = NULL;
    httpd_close_all(w);
    /* conn_close defers recycling; run what is pending now. */
    while (w->loop->defer_head) {
        struct loop_defer *d = w->loop->defer_head;
        w->loop->defer_head = d->next;
        d->queued = false;
        d->cb(d->arg);
    }
    free_list(w);
    while (w->nreq_pool)
        free(w->req_pool[--w->nreq_pool]);
    while (w->nbuf_pool)
        free(w->buf_pool[--w->nbuf_pool]);
    free(w->scratch);
    w->scratch = NULL;
}

/* ---- closing ---- */

static void conn_recycle(void *arg)
{
    struct httpd_conn *c = arg;
    struct httpd_worker *w = c->w;
    if (w->nfree >= MAX_FREE_CONNS || c->rbuf.cap > 65536 || c->wbuf.cap > 262144 ||
        c->body.cap > 65536) {
        conn_free_mem(c);
        return;
    }
    c->next = w->free_conns;
    w->free_conns = c;
    w->nfree++;
}

static void conn_close_ex(struct httpd_conn *c, bool keep_fd);

static void conn_close(struct httpd_conn *c)
{
    conn_close_ex(c, false);
}

static void conn_close_deferred(void *arg)
{
    struct httpd_conn *c = arg;
    if (c->state == CS_CLOSED)
        conn_recycle(c);    /* closed meanwhile: its recycling was this defer's */
    else
        conn_close(c);
}

/* Closes after a failed write. While a caller streams a response into the
 * connection (httpd_respond_write from its own event), the close - and the
 * request's abort callback, which frees the caller's state - runs from the loop
 * instead, after the caller has returned. */
static void conn_fail(struct httpd_conn *c)
{
    if (c->close_later)
        loop_defer(c->w->loop, &c->defer, conn_close_deferred, c);
    else
        conn_close(c);
}

static void conn_close_ex(struct httpd_conn *c, bool keep_fd)
{
    if (c->state == CS_CLOSED)
        return;
    enum conn_state was = c->state;
    c->state = CS_CLOSED;
    if (was == CS_HANDLER && c->req->on_abort) {
        void (*cb)(struct httpd_req *, void *) = c->req->on_abort;
        c->req->on_abort = NULL;
        cb(c->req, c->req->abort_arg);
    }
    if (c->h2)
        h2_free(c);
    ext_done(c);
    loop_timer_stop(&c->timer);
    loop_io_del(&c->io);
    if (!keep_fd) {
        tls_conn_free(&c->ssl);
        close(c->io.fd);
    }
    c->ssl = NULL;
    struct httpd_worker *w = c->w;
    req_give(w, &c->req);
    buf_reset(&c->rbuf);
    buf_reset(&c->wbuf);
    buf_reset(&c->body);
    buf_reset(&c->hdrs);
    buf_give(w, &c->rbuf);
    buf_give(w, &c->wbuf);
    buf_give(w, &c->body);
    buf_give(w, &c->hdrs);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    w->nconns--;
    loop_defer(w->loop, &c->defer, conn_recycle, c);
    if (c->opened && c->conf->on_close)
        c->conf->on_close(c->conf->handler_arg, &c->peer.sa);
    check_drained(w);
}

/* ---- I/O ---- */

static ssize_t conn_read(struct httpd_conn *c, void *p, size_t n)
{
    return stream_read(c->io.fd, c->ssl, p, n);
}

static ssize_t conn_write(struct httpd_conn *c, const void *p, size_t n)
{
    return stream_write(c->io.fd, c->ssl, p, n);
}

static void start_linger(struct httpd_conn *c)
{
    if (c->ssl)
        SSL_shutdown(c->ssl);
    shutdown(c->io.fd, SHUT_WR);
    c->state = CS_LINGER;
    set_timer(c, T_LINGER, LINGER_MS);
}

/* Writes what is buffered. Returns 0 when all is written, 1 when the socket is
 * full, -1 when the connection was closed. */
static int conn_flush(struct httpd_conn *c)
{
again:
    while (conn_pending(c)) {
        ssize_t n;
        if (c->ext) {
            /* headers from wbuf and the body from the caller's memory, in one call */
            struct iovec iov[2];
            int niov = 0;
            if (buf_used(&c->wbuf))
                iov[niov++] = (struct iovec){ buf_head(&c->wbuf), buf_used(&c->wbuf) };
            iov[niov++] = (struct iovec){ (void *)(c->ext + c->ext_off), c->ext_len - c->ext_off };
            struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)niov };
            do {
                n = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL);
            } while (n == -1 && errno == EINTR);
            if (n == -1)
                n = errno == EAGAIN ? -EAGAIN : -errno;
            if (n > 0) {
                size_t left = (size_t)n, w = MIN(left, buf_used(&c->wbuf));
                buf_consume(&c->wbuf, w);
                left -= w;
                c->ext_off += left;
                if (c->ext_off == c->ext_len)
                    ext_done(c);
                continue;
            }
        } else {
            n = conn_write(c, buf_head(&c->wbuf), buf_used(&c->wbuf));
        }
        if (n == -EAGAIN) {
            if (c->timer_kind == T_NONE || c->timer_kind == T_WRITE)
                set_timer(c, T_WRITE, c->conf->idle_timeout_ms);
            if (!(c->io.events & EPOLLOUT))
                loop_io_mod(&c->io, c->io.events | EPOLLOUT);
            return 1;
        }
        if (n <= 0) {
            conn_fail(c);
            return -1;
        }
        buf_consume(&c->wbuf, (size_t)n);
    }
    if (c->timer_kind == T_WRITE)
        set_timer(c, T_NONE, 0);
    if (!c->ssl && (c->io.events & EPOLLOUT))
        loop_io_mod(&c->io, c->io.events & ~(uint32_t)EPOLLOUT);
    if (c->state == CS_HANDLER && c->req->on_drain) {
        c->req->on_drain(c->req, c->req->drain_arg);
        /* it may have written more and finished the response (a closing one too):
         * what it wrote goes out before any linger */
        if (c->state == CS_CLOSED)
            return -1;
        if (conn_pending(c))
            goto again;
    }
    if (c->state == CS_CLOSING) {
        start_linger(c);
    }
    return 0;
}

/* ---- requests ---- */

/* Answers a request we refuse (parse error, timeout) and closes afterwards. */
static void conn_error(struct httpd_conn *c, int status)
{
    char date[30];
    http_date_format(time(NULL), date);
    const char *reason = http_status_reason(status);
    buf_printf(&c->wbuf,
               "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
               "Content-Length: %zu\r\nConnection: close\r\n\r\n%d %s\n",
               status, reason, date, strlen(reason) + 5, status, reason);
    c->state = CS_CLOSING;
    set_timer(c, T_NONE, 0);
    conn_flush(c);
}

static void dispatch(struct httpd_conn *c)
{
    struct httpd_req *r = c->req;
    r->h2 = NULL;
    r->conn = c;
    r->worker = c->w;
    r->peer = &c->peer.sa;
    r->tls = c->ssl != NULL;
    r->start_ns = cairn_now_ns();
    r->on_abort = NULL;
    r->abort_arg = NULL;
    r->on_drain = NULL;
    r->drain_arg = NULL;
    r->no_default_headers = false;
    c->resp_started = false;
    c->state = CS_HANDLER;
    set_timer(c, T_NONE, 0);
    c->in_handler = true;
    c->conf->handler(r, c->conf->handler_arg);
    c->in_handler = false;
}

/* Re-parses the head after the read buffer may have moved under the views. */
static void refresh_head(struct httpd_conn *c)
{
    struct http1_scan s = { 0 };
    struct http1_limits hl = c->conf->limits;
    hl.max_body = UINT64_MAX;       /* the body's size was judged with the head */
    int r = http1_parse_request(buf_head(&c->rbuf), c->head_len, &s, &hl, &c->req->h);
    BUG_ON(r != (int)c->head_len);
    (void)r;
}

/* Removes n bytes that follow the head from the read buffer (a streamed body's
 * bytes once delivered): the head stays where it is. */
static void cut_after_head(struct httpd_conn *c, size_t n)
{
    char *p = buf_head(&c->rbuf) + c->head_len;
    size_t rest = buf_used(&c->rbuf) - c->head_len - n;
    memmove(p, p + n, rest);
    c->rbuf.len -= n;
}

/* Hands a streamed body's buffered bytes to the handler. Returns 0 for more
 * input, 1 when the body ended or the handler stopped it, -1 when the
 * connection closed. */
static int body_pump(struct httpd_conn *c)
{
    struct httpd_req *r = c->req;
    const struct httpd_body_ops *ops = c->body_ops;
    size_t avail = buf_used(&c->rbuf) - c->head_len;
    if (buf_head(&c->rbuf) != c->head_at) {
        refresh_head(c);        /* the read buffer grew and moved */
        c->head_at = buf_head(&c->rbuf);
    }
    int stop = 0;
    bool end = false;
    if (!r->h.chunked) {
        size_t n = (size_t)MIN((uint64_t)avail, c->body_left);
        if (n) {
            c->in_handler = true;
            stop = ops->data(r, c->body_arg, buf_head(&c->rbuf) + c->head_len, n);
            c->in_handler = false;
            if (c->state == CS_CLOSED)
                return -1;
            cut_after_head(c, n);
            c->body_left -= n;
        }
        end = c->body_left == 0;
    } else {
        size_t consumed = 0;
        buf_reset(&c->body);
        int fr = http1_chunked_feed(&c->chunked, buf_head(&c->rbuf) + c->head_len, avail,
                                    &consumed, &c->body, UINT64_MAX / 2);
        cut_after_head(c, consumed);
        if (fr < 0) {
            conn_close(c);      /* the handler hears of it through its abort callback */
            return -1;
        }
        if (buf_used(&c->body)) {
            c->in_handler = true;
            stop = ops->data(r, c->body_arg, buf_head(&c->body), buf_used(&c->body));
            c->in_handler = false;
            if (c->state == CS_CLOSED)
                return -1;
        }
        end = fr == 1;
    }
    if (c->state != CS_HANDLER || c->req != r || !c->streaming)
        return 1;           /* answered (and perhaps done) from the callback */
    if (!stop && !end) {
        set_timer(c, T_BODY, c->conf->body_timeout_ms);
        return 0;
    }
    c->streaming = false;
    c->body_ops = NULL;
    set_timer(c, T_NONE, 0);
    if (stop) {
        c->close_after = true;      /* the rest of the body is never read */
        return 1;
    }
    c->in_handler = true;
    ops->end(r, c->body_arg);
    c->in_handler = false;
    return c->state == CS_CLOSED ? -1 : 1;
}

void httpd_req_read_body(struct httpd_req *r, const struct httpd_body_ops *ops, void *arg)
{
    struct httpd_conn *c = r->conn;
    BUG_ON(r->h2 || !c->streaming || c->body_ops);
    c->body_ops = ops;
    c->body_arg = arg;
    if (r->h.expect_continue && r->h.minor >= 1 && buf_used(&c->rbuf) == c->head_len &&
        !c->resp_started)
        buf_puts(&c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n");
    set_timer(c, T_BODY, c->conf->body_timeout_ms);
    if (!c->in_handler && !c->in_process)
        conn_resume(c);     /* called later, from a timer: read on now */
}

/* Processes buffered input. Returns 0 when it needs more bytes, 1 when it must
 * wait for something else (handler, flush), -1 when the connection closed. */
static int conn_process(struct httpd_conn *c)
{
    const struct http1_limits *lim = &c->conf->limits;
    for (;;) {
        switch (c->state) {
        case CS_HEAD: {
            if (buf_used(&c->rbuf) == 0)
                return 0;
            if (!c->ssl && c->conf->h2c) {
                /* HTTP/2 with prior knowledge on a cleartext connection (RFC 9113 3.3) */
                static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
                size_t n = buf_used(&c->rbuf);
                if (memcmp(buf_head(&c->rbuf), preface, MIN(n, sizeof(preface) - 1)) == 0) {
                    if (n < sizeof(preface) - 1)
                        return 0;
                    return h2c_start(c);
                }
            }
            if (buf_used(&c->wbuf) > WBUF_HIGH || c->ext)
                return 1;   /* let the client read what it asked for first */
            if (c->timer_kind == T_IDLE || c->timer_kind == T_NONE)
                set_timer(c, T_HEADER, c->conf->header_timeout_ms);
            if (!c->req && !(c->req = req_take(c->w))) {
                conn_error(c, 503);
                return c->state == CS_CLOSED ? -1 : 1;
            }
            /* a body the handler may take streamed is not bounded by max_body here */
            struct http1_limits hl = *lim;
            if (c->conf->stream_body)
                hl.max_body = UINT64_MAX;
            int r = http1_parse_request(buf_head(&c->rbuf), buf_used(&c->rbuf), &c->scan, &hl,
                                        &c->req->h);
            if (r == 0)
                return 0;
            if (r < 0) {
                conn_error(c, -r);
                return c->state == CS_CLOSED ? -1 : 1;
            }
            c->head_len = (size_t)r;
            bool has_body = c->req->h.chunked || c->req->h.content_length > 0;
            c->req->streaming = has_body && c->conf->stream_body &&
                                c->conf->stream_body(c->conf->handler_arg, &c->req->h);
            if (c->req->streaming) {
                /* the handler runs now and reads the body with httpd_req_read_body */
                c->streaming = true;
                c->body_ops = NULL;
                c->body_left = c->req->h.chunked ? 0 : (uint64_t)c->req->h.content_length;
                c->raw_pos = c->head_len;
                memset(&c->chunked, 0, sizeof(c->chunked));
                c->req->body = strv_make(buf_head(&c->rbuf) + c->head_len, 0);
                c->req_end = c->head_len;
                c->head_at = buf_head(&c->rbuf);
                dispatch(c);
                if (c->state == CS_CLOSED)
                    return -1;
                continue;
            }
            if (has_body && c->req->h.content_length > 0 &&
                (uint64_t)c->req->h.content_length > lim->max_body) {
                conn_error(c, 413);
                return c->state == CS_CLOSED ? -1 : 1;
            }
            if (has_body) {
                c->state = CS_BODY;
                c->raw_pos = c->head_len;
                memset(&c->chunked, 0, sizeof(c->chunked));
                buf_reset(&c->body);
                if (c->req->h.expect_continue && c->req->h.minor >= 1) {
                    size_t have = buf_used(&c->rbuf) - c->head_len;
                    if (have == 0)
                        buf_puts(&c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n");
                }
                set_timer(c, T_BODY, c->conf->body_timeout_ms);
                continue;
            }
            c->req->body = strv_make(buf_head(&c->rbuf) + c->head_len, 0);
            c->req_end = c->head_len;
            dispatch(c);
            if (c->state == CS_CLOSED)
                return -1;
            continue;
        }
        case CS_BODY: {
            size_t used = buf_used(&c->rbuf);
            if (!c->req->h.chunked) {
                size_t need = c->head_len + (size_t)c->req->h.content_length;
                if (used < need)
                    return 0;
                refresh_head(c);
                c->req->body = strv_make(buf_head(&c->rbuf) + c->head_len,
                                        (size_t)c->req->h.content_length);
                c->req_end = need;
            } else {
                size_t consumed = 0;
                int r = http1_chunked_feed(&c->chunked, buf_head(&c->rbuf) + c->raw_pos,
                                           used - c->raw_pos, &consumed, &c->body, lim->max_body);
                c->raw_pos += consumed;
                if (r < 0) {
                    conn_error(c, r == -500 ? 500 : -r);
                    return c->state == CS_CLOSED ? -1 : 1;
                }
                if (r == 0)
                    return 0;
                refresh_head(c);
                c->req->body = buf_strv(&c->body);
                c->req_end = c->raw_pos;
            }
            dispatch(c);
            if (c->state == CS_CLOSED)
                return -1;
            continue;
        }
        case CS_HANDLER:
            if (!c->streaming || !c->body_ops)
                return 1;
            int p = body_pump(c);
            if (p == 1 && c->state == CS_HEAD)
                continue;       /* answered: a pipelined request may be buffered */
            return p;
        case CS_HANDSHAKE:
            return 0;
        default:
            return 1;
        }
    }
}

/* Called once a response is complete. */
static void request_done(struct httpd_conn *c)
{
    buf_consume(&c->rbuf, c->req_end);
    c->req_end = 0;
    c->head_len = 0;
    memset(&c->scan, 0, sizeof(c->scan));
    c->req->on_abort = NULL;
    c->req->on_drain = NULL;
    if (c->close_after || c->w->draining) {
        c->state = CS_CLOSING;
        if (!c->in_handler && !c->in_process)
            conn_flush(c);
        return;
    }
    c->state = CS_HEAD;
    set_timer(c, T_IDLE, c->conf->idle_timeout_ms);
    if (!c->in_handler && !c->in_process)
        conn_resume(c);
}

static void read_more(struct httpd_conn *c)
{
    /* With edge-triggered epoll a short read means the socket was drained: new
     * data will raise a new edge, so there is no need for a read that would
     * only say EAGAIN. (TLS reads on to EAGAIN.) */
    bool maybe_more = !c->input_drained;
    for (;;) {
        if (c->state == CS_LINGER) {
            char sink[4096];
            ssize_t n = conn_read(c, sink, sizeof(sink));
            if (n > 0)
                continue;
            if (n != -EAGAIN)
                conn_close(c);
            return;
        }
        c->in_process = true;
        int p = conn_process(c);
        c->in_process = false;
        if (p < 0)
            return;
        if (c->state == CS_CLOSING) {
            conn_flush(c);
            return;
        }
        if (p > 0) {
            if (conn_pending(c))
                conn_flush(c);
            return;
        }
        /* Bound what a request may make us buffer: the parser caps the head, the
         * content length is checked against max_body, chunked framing gets slack. */
        const struct http1_limits *lim = &c->conf->limits;
        if (c->state == CS_BODY && c->req->h.chunked &&
            buf_used(&c->rbuf) > c->head_len + 2 * lim->max_body + 65536) {
            conn_error(c, 413);
            return;
        }
        if (!maybe_more) {
            if (conn_pending(c) && conn_flush(c) < 0)
                return;
            conn_idle_release(c);
            return;
        }
        /* An idle connection has no read buffer: read into the worker's scratch
         * space and keep only what arrived, so that a small request costs a
         * small buffer while it waits for its answer. */
        char *dst;
        size_t room;
        bool scratch = !c->rbuf.data;
        if (scratch) {
            if (!c->w->scratch && !(c->w->scratch = malloc(POOL_BUF_SIZE))) {
                conn_error(c, 500);
                return;
            }
            dst = c->w->scratch;
            room = POOL_BUF_SIZE;
        } else {
            /* a streamed body is read in larger pieces: fewer calls per megabyte */
            size_t want = c->streaming ? STREAM_CHUNK : buf_used(&c->rbuf) ? READ_CHUNK : 1;
            if (buf_reserve(&c->rbuf, want)) {
                conn_error(c, 500);
                return;
            }
            dst = buf_tail(&c->rbuf);
            room = buf_room(&c->rbuf);
        }
        ssize_t n = conn_read(c, dst, room);
        if (n > 0) {
            if (scratch) {
                if (buf_append(&c->rbuf, dst, (size_t)n)) {
                    conn_error(c, 500);
                    return;
                }
            } else {
                buf_commit(&c->rbuf, (size_t)n);
            }
            /* TLS reads on until the socket says EAGAIN: a short record with
             * nothing left in OpenSSL can still be followed by bytes in the socket
             * (its read-ahead may have ended on a record boundary), and no new
             * edge comes for them if the client has sent all it will */
            maybe_more = (size_t)n == room || c->ssl;
            c->input_drained = !maybe_more;
            if (c->state == CS_BODY || c->streaming)
                set_timer(c, T_BODY, c->conf->body_timeout_ms);
            continue;
        }
        if (n == -EAGAIN) {
            c->input_drained = true;
            if (conn_pending(c))
                conn_flush(c);
            conn_idle_release(c);
            return;
        }
        /* EOF or error: nothing more will come. */
        if (conn_pending(c) && n == 0 && c->state == CS_HEAD && buf_used(&c->rbuf) == 0) {
            c->state = CS_CLOSING;   /* half-closed client still gets its responses */
            conn_flush(c);
            return;
        }
        conn_close(c);
        return;
    }
}

static void conn_resume(struct httpd_conn *c)
{
    if (c->state == CS_CLOSED)
        return;
    if (conn_pending(c) && conn_flush(c) < 0)
        return;
    if (c->state == CS_CLOSING || c->state == CS_LINGER || c->state == CS_CLOSED)
        return;
    read_more(c);
}

static void conn_event(struct loop_io *io, uint32_t events)
{
    struct httpd_conn *c = io->data;
    if (c->state == CS_CLOSED)
        return;
    if (events & EPOLLERR) {
        conn_close(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
        c->input_drained = false;
    if (c->state == CS_HANDSHAKE) {
        int r = tls_handshake(c->ssl);
        if (r == -EAGAIN)
            return;
        if (r < 0) {
            conn_close(c);
            return;
        }
        c->state = CS_HEAD;
        char alpn[16];
        tls_alpn(c->ssl, alpn, sizeof(alpn));
        if (strcmp(alpn, "h2") == 0 && h2_start(c)) {
            conn_close(c);
            return;
        }
    }
    if (c->state == CS_H2) {
        h2_io(c);
        return;
    }
    if (conn_pending(c) && conn_flush(c) < 0)
        return;
    if ((c->state == CS_HANDLER && !c->body_ops) || c->state == CS_CLOSING)
        return;
    read_more(c);
}

static void conn_timer(struct loop_timer *t)
{
    struct httpd_conn *c = t->data;
    enum timer_kind k = c->timer_kind;
    c->timer_kind = T_NONE;
    switch (k) {
    case T_HEADER:
        if (buf_used(&c->rbuf) && c->state == CS_HEAD)
            conn_error(c, 408);
        else
            conn_close(c);
        break;
    case T_BODY:
        if (c->streaming)
            conn_close(c);      /* the handler owns the request: it hears of the abort */
        else
            conn_error(c, 408);
        break;
    default:
        conn_close(c);
        break;
    }
}

/* ---- responses ---- */

static struct buf *req_hdrs(struct httpd_req *r)
{
    return r->h2 ? h2_hdrs(r) : &r->conn->hdrs;
}

int httpd_header(struct httpd_req *r, const char *name, const char *value)
{
    return http1_write_header(req_hdrs(r), name, value);
}

int httpd_headerf(struct httpd_req *r, const char *name, const char *fmt, ...)
{
    struct buf *b = req_hdrs(r);
    va_list ap;
    va_start(ap, fmt);
    int e = buf_printf(b, "%s: ", name);
    if (!e)
        e = buf_vprintf(b, fmt, ap);
    if (!e)
        e = buf_append(b, "\r\n", 2);
    va_end(ap);
    return e;
}

void httpd_respond_start(struct httpd_req *r, int status, const char *ctype,
                         int64_t content_length)
{
    if (r->h2) {
        h2_respond_start(r, status, ctype, content_length);
        return;
    }
    struct httpd_conn *c = r->conn;
    struct httpd_worker *w = c->w;
    BUG_ON(c->resp_started);
    c->resp_started = true;
    if (c->streaming) {
        /* answered before the body was read (an error): the rest is never read */
        c->streaming = false;
        c->body_ops = NULL;
        c->close_after = true;
    }
    bool keep = r->h.keep_alive && !c->close_after && !w->draining;
    c->resp_nobody = r->h.is_head || status == 204 || status == 304 || status < 200;
    c->resp_chunked = false;

    time_t now = time(NULL);
    if (now != w->date_sec) {
        w->date_sec = now;
        http_date_format(now, w->date);
    }
    struct buf *b = &c->wbuf;
    buf_take(w, b);
    http1_write_status(b, status);
    if (!r->no_default_headers) {
        buf_append(b, "Date: ", 6);
        buf_append(b, w->date, 29);
        buf_append(b, "\r\n", 2);
        if (c->conf->server)
            http1_write_header(b, "Server", c->conf->server);
    }
    if (ctype)
        http1_write_header(b, "Content-Type", ctype);
    if (content_length >= 0) {
        if (status != 204 && status != 304 && status >= 200) {
            buf_append(b, "Content-Length: ", 16);
            buf_put_u64(b, (uint64_t)content_length);
            buf_append(b, "\r\n", 2);
        }
    } else if (!c->resp_nobody) {
        if (r->h.minor >= 1) {
            c->resp_chunked = true;
            buf_puts(b, "Transfer-Encoding: chunked\r\n");
        } else {
            keep = false;   /* HTTP/1.0: the close delimits the body */
        }
    }
    if (!keep) {
        c->close_after = true;
        buf_puts(b, "Connection: close\r\n");
    } else if (r->h.minor == 0) {
        buf_puts(b, "Connection: keep-alive\r\n");
    }
    buf_append(b, buf_head(&c->hdrs), buf_used(&c->hdrs));
    buf_reset(&c->hdrs);
    buf_append(b, "\r\n", 2);
}

void httpd_respond_write(struct httpd_req *r, const void *data, size_t len)
{
    if (r->h2) {
        h2_respond_write(r, data, len);
        return;
    }
    struct httpd_conn *c = r->conn;
    if (c->resp_nobody || !len)
        return;
    if (c->resp_chunked)
        http1_write_chunk(&c->wbuf, data, len);
    else
        buf_append(&c->wbuf, data, len);
    /* Outside the handler (streaming from another event), send at once. */
    if (!c->in_handler && !c->in_process) {
        bool was = c->close_later;
        c->close_later = true;
        conn_flush(c);
        c->close_later = was;
    }
}

void httpd_respond_finish(struct httpd_req *r)
{
    if (r->h2) {
        h2_respond_finish(r);
        return;
    }
    struct httpd_conn *c = r->conn;
    if (c->resp_chunked)
        http1_write_last_chunk(&c->wbuf);
    if (c->state == CS_CLOSED)
        return;
    request_done(c);
}

void httpd_respond(struct httpd_req *r, int status, const char *ctype, const void *body,
                   size_t len)
{
    httpd_respond_start(r, status, ctype, (int64_t)len);
    httpd_respond_write(r, body, len);
    httpd_respond_finish(r);
}

void httpd_respond_ext(struct httpd_req *r, int status, const char *ctype, const void *body,
                       size_t len, void (*release)(void *), void *arg)
{
    struct httpd_conn *c = r->conn;
    if (r->h2 || c->ssl || len < 4096) {
        /* TLS and HTTP/2 copy anyway; small bodies are cheaper copied */
        httpd_respond(r, status, ctype, body, len);
        if (release)
            release(arg);
        return;
    }
    httpd_respond_start(r, status, ctype, (int64_t)len);
    if (c->resp_nobody) {
        httpd_respond_finish(r);
        if (release)
            release(arg);
        return;
    }
    c->ext = body;
    c->ext_len = len;
    c->ext_off = 0;
    c->ext_release = release;
    c->ext_arg = arg;
    httpd_respond_finish(r);
}

void httpd_req_on_abort(struct httpd_req *r, void (*cb)(struct httpd_req *, void *), void *arg)
{
    r->on_abort = cb;
    r->abort_arg = arg;
}

void httpd_req_hijack(struct httpd_req *r, int *fd, SSL **ssl, struct buf *early)
{
    BUG_ON(r->h2);      /* no Upgrade in HTTP/2 */
    struct httpd_conn *c = r->conn;
    *fd = c->io.fd;
    *ssl = c->ssl;
    size_t used = buf_used(&c->rbuf);
    if (used > c->req_end)
        buf_append(early, buf_head(&c->rbuf) + c->req_end, used - c->req_end);
    r->on_abort = NULL;
    conn_close_ex(c, true);
}

void httpd_req_abort(struct httpd_req *r)
{
    if (r->h2) {
        h2_abort(r);
        return;
    }
    r->on_abort = NULL;
    conn_close(r->conn);
}

const struct httpd_conf *httpd_req_conf(const struct httpd_req *r)
{
    return r->conn->conf;
}

size_t httpd_req_pending(const struct httpd_req *r)
{
    if (r->h2)
        return h2_pending(r);
    return buf_used(&r->conn->wbuf);
}

void httpd_req_on_drain(struct httpd_req *r, void (*cb)(struct httpd_req *, void *), void *arg)
{
    r->on_drain = cb;
    r->drain_arg = arg;
}

int httpd_header_strv(struct httpd_req *r, struct strv name, struct strv value)
{
    struct buf *b = req_hdrs(r);
    int e = buf_append(b, name.p, name.n);
    e |= buf_append(b, ": ", 2);
    e |= buf_append(b, value.p, value.n);
    e |= buf_append(b, "\r\n", 2);
    return e ? -ENOMEM : 0;
}

void httpd_req_peer(const struct httpd_req *r, char *out, size_t outlen)
{
    net_ip_format(r->peer, out, outlen);
}

const struct http_header *httpd_req_header(const struct httpd_req *r, const char *name)
{
    return http_find_header(r->h.headers, r->h.nheaders, name);
}

bool httpd_serve_builtin(struct httpd_req *r, struct metrics_registry *reg, bool ready)
{
    struct strv p = r->h.path;
    bool get = strv_eq_cstr(r->h.method, "GET") || r->h.is_head;
    if (strv_eq_cstr(p, "/-/healthy")) {
        if (!get)
            goto not_allowed;
        httpd_respond(r, 200, "text/plain; charset=utf-8", "Healthy.\n", 9);
        return true;
    }
    if (strv_eq_cstr(p, "/-/ready")) {
        if (!get)
            goto not_allowed;
        if (ready)
            httpd_respond(r, 200, "text/plain; charset=utf-8", "Ready.\n", 7);
        else
            httpd_respond(r, 503, "text/plain; charset=utf-8", "Not ready.\n", 11);
        return true;
    }
    if (strv_eq_cstr(p, "/metrics") && reg) {
        if (!get)
            goto not_allowed;
        /* OpenMetrics (exemplars) for a scraper that asks for it, as Prometheus does */
        const struct http_header *acc = httpd_req_header(r, "Accept");
        bool om = acc && memmem(acc->value.p, acc->value.n, "application/openmetrics-text", 28);
        struct buf b = BUF_INIT;
        if (om)
            metrics_render_openmetrics(reg, &b);
        else
            metrics_render(reg, &b);
        httpd_respond(r, 200, om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                                 : "text/plain; version=0.0.4; charset=utf-8",
                      buf_head(&b), buf_used(&b));
        buf_free(&b);
        return true;
    }
    return false;
not_allowed:
    httpd_header(r, "Allow", "GET, HEAD");
    httpd_respond(r, 405, "text/plain; charset=utf-8", "Method Not Allowed\n", 19);
    return true;
}

/* ---- HTTP/2 (RFC 9113) with libnghttp2 ----
 *
 * nghttp2 parses and validates frames and header blocks and keeps the flow
 * control windows; this code maps its streams onto struct httpd_req. Sending is
 * never done from inside nghttp2's receive callbacks (responses written by a
 * handler called from there are flushed once the receive call returns).
 */

#define H2_MAX_STREAMS 128

struct h2_conn {
    nghttp2_session *s;
    struct httpd_conn *c;
    struct h2_stream *streams;
    size_t nstreams;
    bool in_recv;           /* inside nghttp2_session_mem_recv */
    bool goaway;
};

struct h2_stream {
    struct httpd_req req;   /* req.h2 points back here */
    int32_t id;
    struct h2_conn *hc;
    struct buf hstore;      /* request header bytes (offsets below point in) */
    struct {
        uint32_t no, nl, vo, vl;
    } hoff[HTTP_MAX_HEADERS];
    size_t nh;
    uint32_t mo, ml, po, pl, ao, al;    /* :method, :path, :authority */
    size_t header_bytes;
    struct buf body;
    struct buf rhdrs;       /* response fields, "Name: value\r\n" */
    struct buf out;         /* response body not yet taken by nghttp2 */
    struct buf trailers;    /* response trailer fields, "name: value\r\n" */
    bool dispatched, started, finished, eof, nobody, refused;
    struct h2_stream *next, *prev;
};

static void h2_send(struct h2_conn *hc);

static void stream_unlink_free(struct h2_stream *st)
{
    struct h2_conn *hc = st->hc;
    if (st->prev)
        st->prev->next = st->next;
    else
        hc->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    hc->nstreams--;
    buf_free(&st->hstore);
    buf_free(&st->body);
    buf_free(&st->rhdrs);
    buf_free(&st->out);
    buf_free(&st->trailers);
    free(st);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *hc = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2_stream *st = calloc(1, sizeof(*st));
    if (!st)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->id = f->hd.stream_id;
    st->hc = hc;
    st->req.h2 = st;
    st->next = hc->streams;
    if (hc->streams)
        hc->streams->prev = st;
    hc->streams = st;
    hc->nstreams++;
    nghttp2_session_set_stream_user_data(s, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    struct h2_conn *hc = ud;
    UNUSED(flags);
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st || st->refused)
        return 0;
    const struct http1_limits *lim = &hc->c->conf->limits;
    st->header_bytes += nl + vl + 4;
    if (st->header_bytes > lim->max_header_bytes || st->nh == MIN(lim->max_headers, (size_t)HTTP_MAX_HEADERS)) {
        st->refused = true;     /* answered 431 once the head is complete */
        return 0;
    }
    uint32_t off = (uint32_t)buf_used(&st->hstore);
    if (buf_append(&st->hstore, name, nl) || buf_append(&st->hstore, value, vl))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (nl && name[0] == ':') {
        if (nl == 7 && memcmp(name, ":method", 7) == 0) {
            st->mo = off + 7;
            st->ml = (uint32_t)vl;
        } else if (nl == 5 && memcmp(name, ":path", 5) == 0) {
            st->po = off + 5;
            st->pl = (uint32_t)vl;
        } else if (nl == 10 && memcmp(name, ":authority", 10) == 0) {
            st->ao = off + 10;
            st->al = (uint32_t)vl;
        }
        return 0;
    }
    st->hoff[st->nh].no = off;
    st->hoff[st->nh].nl = (uint32_t)nl;
    st->hoff[st->nh].vo = off + (uint32_t)nl;
    st->hoff[st->nh].vl = (uint32_t)vl;
    st->nh++;
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    struct h2_conn *hc = ud;
    UNUSED(flags);
    struct h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st || st->dispatched)
        return 0;
    if (buf_used(&st->body) + len > hc->c->conf->limits.max_body) {
        st->refused = true;
        return 0;
    }
    if (buf_append(&st->body, data, len))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static void h2_dispatch(struct h2_conn *hc, struct h2_stream *st)
{
    struct httpd_conn *c = hc->c;
    struct httpd_req *r = &st->req;
    struct http_request *h = &r->h;
    const char *base = buf_head(&st->hstore);
    st->dispatched = true;
    memset(h, 0, sizeof(*h));
    h->method = strv_make(base + st->mo, st->ml);
    h->target = strv_make(base + st->po, st->pl);
    const char *q = st->pl ? memchr(h->target.p, '?', h->target.n) : NULL;
    h->path = q ? strv_make(h->target.p, (size_t)(q - h->target.p)) : h->target;
    h->query = q ? strv_make(q + 1, (size_t)(h->target.p + h->target.n - q - 1)) : strv_make(h->target.p + h->target.n, 0);
    h->minor = 1;
    h->keep_alive = true;
    h->content_length = -1;
    h->is_head = strv_eq_cstr(h->method, "HEAD");
    int hosts = 0;
    bool host_differs = false;
    for (size_t i = 0; i < st->nh; i++)
        if (st->hoff[i].nl == 4 && memcmp(base + st->hoff[i].no, "host", 4) == 0) {
            hosts++;
            host_differs |= st->al && (st->hoff[i].vl != st->al ||
                                       strncasecmp(base + st->hoff[i].vo, base + st->ao, st->al) != 0);
        }
    bool have_host = hosts > 0;
    if (!have_host && st->al) {
        h->headers[h->nheaders].name = STRV("host");
        h->headers[h->nheaders].value = strv_make(base + st->ao, st->al);
        h->nheaders++;
    }
    for (size_t i = 0; i < st->nh && h->nheaders < HTTP_MAX_HEADERS; i++) {
        struct http_header *hd = &h->headers[h->nheaders++];
        hd->name = strv_make(base + st->hoff[i].no, st->hoff[i].nl);
        hd->value = strv_make(base + st->hoff[i].vo, st->hoff[i].vl);
        if (strv_eq_cstr(hd->name, "host"))
            h->host = hd->value;
        else if (strv_eq_cstr(hd->name, "content-length")) {
            uint64_t v;
            if (strv_to_u64(hd->value, &v) == 0)
                h->content_length = (int64_t)v;
        }
    }
    if (!h->host.n && st->al)
        h->host = strv_make(base + st->ao, st->al);
    r->body = buf_strv(&st->body);
    if (h->content_length < 0 && st->body.len)
        h->content_length = (int64_t)buf_used(&st->body);
    r->conn = c;
    r->worker = c->w;
    r->peer = &c->peer.sa;
    r->tls = true;
    r->start_ns = cairn_now_ns();
    r->on_abort = NULL;
    r->on_drain = NULL;
    r->no_default_headers = false;
    if (st->refused) {
        int status = buf_used(&st->body) > c->conf->limits.max_body / 2 ? 413 : 431;
        const char *reason = http_status_reason(status);
        httpd_respond(r, status, "text/plain; charset=utf-8", reason, strlen(reason));
        return;
    }
    /* one host per request: a second Host, or one naming another host than
     * :authority, is malformed (RFC 9113 8.3.1) */
    if (!st->ml || !st->pl || hosts > 1 || host_differs) {
        httpd_respond(r, 400, "text/plain; charset=utf-8", "Bad Request\n", 12);
        return;
    }
    c->conf->handler(r, c->conf->handler_arg);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *hc = ud;
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct h2_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (st && !st->dispatched)
            h2_dispatch(hc, st);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t err, void *ud)
{
    UNUSED(ud);
    UNUSED(err);
    struct h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    if (st->dispatched && !st->finished && st->req.on_abort) {
        void (*cb)(struct httpd_req *, void *) = st->req.on_abort;
        st->req.on_abort = NULL;
        cb(&st->req, st->req.abort_arg);
    }
    stream_unlink_free(st);
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    UNUSED(s);
    UNUSED(id);
    UNUSED(ud);
    struct h2_stream *st = src->ptr;
    size_t n = MIN(len, buf_used(&st->out));
    if (n) {
        memcpy(buf, buf_head(&st->out), n);
        buf_consume(&st->out, n);
    }
    if (!buf_used(&st->out) && st->eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (buf_used(&st->trailers)) {
            /* the trailer block ends the stream instead of this DATA frame */
            nghttp2_nv nv[16];
            size_t k = 0;
            char *p = buf_head(&st->trailers), *end = p + buf_used(&st->trailers);
            while (p < end && k < ARRAY_SIZE(nv)) {
                char *eol = memchr(p, '\n', (size_t)(end - p)), *colon = eol ? memchr(p, ':', (size_t)(eol - p)) : NULL;
                if (!eol)
                    break;
                if (colon) {
                    char *v = colon + 1;
                    while (v < eol && *v == ' ')
                        v++;
                    size_t vl = (size_t)(eol - v) - (eol > v && eol[-1] == '\r');
                    nv[k++] = (nghttp2_nv){ (uint8_t *)p, (uint8_t *)v, (size_t)(colon - p), vl, NGHTTP2_NV_FLAG_NONE };
                }
                p = eol + 1;
            }
            if (nghttp2_submit_trailer(s, id, nv, k) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    } else if (!n) {
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int h2_start(struct httpd_conn *c)
{
    struct h2_conn *hc = calloc(1, sizeof(*hc));
    if (!hc)
        return -ENOMEM;
    hc->c = c;
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs)) {
        free(hc);
        return -ENOMEM;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    int r = nghttp2_session_server_new(&hc->s, cbs, hc);
    nghttp2_session_callbacks_del(cbs);
    if (r) {
        free(hc);
        return -ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20 },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->conf->limits.max_header_bytes },
    };
    nghttp2_submit_settings(hc->s, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv));
    /* a larger connection window than the 64 KiB default, for uploads */
    nghttp2_session_set_local_window_size(hc->s, NGHTTP2_FLAG_NONE, 0, 16u << 20);
    c->h2 = hc;
    c->state = CS_H2;
    return 0;
}

/* Switches a cleartext connection whose read buffer holds the HTTP/2 preface to
 * HTTP/2: the bytes already read go to nghttp2, then the socket is read on.
 * Returns conn_process's codes (-1 closed, 1 handled). */
static int h2c_start(struct httpd_conn *c)
{
    if (h2_start(c)) {
        conn_close(c);
        return -1;
    }
    struct h2_conn *hc = c->h2;
    hc->in_recv = true;
    ssize_t r = nghttp2_session_mem_recv(hc->s, (const uint8_t *)buf_head(&c->rbuf),
                                         buf_used(&c->rbuf));
    hc->in_recv = false;
    buf_reset(&c->rbuf);
    if (c->state == CS_CLOSED)
        return -1;
    if (r < 0) {
        conn_close(c);
        return -1;
    }
    h2_io(c);
    return c->state == CS_CLOSED ? -1 : 1;
}

static void h2_free(struct httpd_conn *c)
{
    struct h2_conn *hc = c->h2;
    c->h2 = NULL;
    while (hc->streams) {
        struct h2_stream *st = hc->streams;
        if (st->dispatched && !st->finished && st->req.on_abort) {
            void (*cb)(struct httpd_req *, void *) = st->req.on_abort;
            st->req.on_abort = NULL;
            cb(&st->req, st->req.abort_arg);
        }
        stream_unlink_free(st);
    }
    nghttp2_session_del(hc->s);
    free(hc);
}

/* Serializes what nghttp2 has to send and writes it. */
static void h2_send(struct h2_conn *hc)
{
    struct httpd_conn *c = hc->c;
    if (hc->in_recv)
        return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(hc->s, &data);
        if (n < 0) {
            conn_fail(c);
            return;
        }
        if (n == 0)
            break;
        buf_take(c->w, &c->wbuf);
        if (buf_append(&c->wbuf, data, (size_t)n)) {
            conn_fail(c);
            return;
        }
        if (buf_used(&c->wbuf) >= 65536 && conn_flush(c) < 0)
            return;
    }
    if (buf_used(&c->wbuf) && conn_flush(c) < 0)
        return;
    /* streams whose output drained may want to produce more */
    for (struct h2_stream *st = hc->streams; st; st = st->next)
        if (st->started && !st->finished && !buf_used(&st->out) && st->req.on_drain)
            st->req.on_drain(&st->req, st->req.drain_arg);
    if (c->state == CS_CLOSED || !c->h2)
        return;
    if (!nghttp2_session_want_read(hc->s) && !nghttp2_session_want_write(hc->s) &&
        !buf_used(&c->wbuf)) {
        conn_fail(c);
        return;
    }
    if (hc->nstreams == 0 && c->timer_kind != T_IDLE)
        set_timer(c, T_IDLE, c->conf->idle_timeout_ms);
    else if (hc->nstreams && c->timer_kind == T_IDLE)
        set_timer(c, T_NONE, 0);
}

static void h2_io(struct httpd_conn *c)
{
    struct h2_conn *hc = c->h2;
    if (buf_used(&c->wbuf) && conn_flush(c) < 0)
        return;
    for (;;) {
        char *scratch = c->w->scratch;
        if (!scratch && !(scratch = c->w->scratch = malloc(POOL_BUF_SIZE))) {
            conn_close(c);
            return;
        }
        ssize_t n = conn_read(c, scratch, POOL_BUF_SIZE);
        if (n == -EAGAIN)
            break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        hc->in_recv = true;
        ssize_t r = nghttp2_session_mem_recv(hc->s, (const uint8_t *)scratch, (size_t)n);
        hc->in_recv = false;
        if (c->state == CS_CLOSED)
            return;
        if (r < 0) {
            conn_close(c);
            return;
        }
        h2_send(hc);
        if (c->state == CS_CLOSED || !c->h2)
            return;
    }
    h2_send(hc);
}

static void h2_goaway(struct httpd_conn *c)
{
    struct h2_conn *hc = c->h2;
    if (!hc || hc->goaway)
        return;
    hc->goaway = true;
    nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(hc->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    nghttp2_session_terminate_session(hc->s, NGHTTP2_NO_ERROR);
    h2_send(hc);
}

static struct buf *h2_hdrs(struct httpd_req *r)
{
    return &r->h2->rhdrs;
}

static size_t h2_pending(const struct httpd_req *r)
{
    return buf_used(&r->h2->out);
}

/* Connection-specific fields have no place in HTTP/2 (RFC 9113 section 8.2.2). */
static bool h2_forbidden(const char *name, size_t n)
{
    static const char *const bad[] = { "connection", "keep-alive", "proxy-connection",
                                       "transfer-encoding", "upgrade", "te" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (strlen(bad[i]) == n && strncasecmp(name, bad[i], n) == 0)
            return true;
    return false;
}

static void h2_respond_start(struct httpd_req *r, int status, const char *ctype, int64_t len)
{
    struct h2_stream *st = r->h2;
    struct h2_conn *hc = st->hc;
    struct httpd_worker *w = hc->c->w;
    st->started = true;
    st->nobody = r->h.is_head || status == 204 || status == 304 || status < 200;
    /* lower-cased copies of the fields: nghttp2 wants lower case names */
    struct buf tmp = BUF_INIT;
    char sbuf[4];
    if (status < 100 || status > 999)
        status = 500;
    sbuf[0] = (char)('0' + status / 100);
    sbuf[1] = (char)('0' + status / 10 % 10);
    sbuf[2] = (char)('0' + status % 10);
    sbuf[3] = '\0';
    time_t now = time(NULL);
    if (now != w->date_sec) {
        w->date_sec = now;
        http_date_format(now, w->date);
    }
    if (!r->no_default_headers) {
        http1_write_header(&tmp, "date", w->date);
        if (hc->c->conf->server)
            http1_write_header(&tmp, "server", hc->c->conf->server);
    }
    if (ctype)
        http1_write_header(&tmp, "content-type", ctype);
    if (len >= 0 && status != 204 && status != 304 && status >= 200) {
        char n[24];
        snprintf(n, sizeof(n), "%lld", (long long)len);
        http1_write_header(&tmp, "content-length", n);
    }
    buf_append(&tmp, buf_head(&st->rhdrs), buf_used(&st->rhdrs));
    size_t cap = 2;
    for (size_t i = 0; i < buf_used(&tmp); i++)
        cap += buf_head(&tmp)[i] == '\n';
    nghttp2_nv *nv = calloc(cap, sizeof(*nv));
    if (!nv) {
        buf_free(&tmp);
        h2_abort(r);
        return;
    }
    size_t n = 0;
    nv[n++] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)sbuf, 7, 3, NGHTTP2_NV_FLAG_NONE };
    char *p = buf_head(&tmp), *end = p + buf_used(&tmp);
    while (p < end && n < cap) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            size_t nl = (size_t)(colon - p);
            char *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl && v[vl - 1] == '\r')
                vl--;
            for (size_t i = 0; i < nl; i++)
                p[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
            if (!h2_forbidden(p, nl))
                nv[n++] = (nghttp2_nv){ (uint8_t *)p, (uint8_t *)v, nl, vl, NGHTTP2_NV_FLAG_NONE };
        }
        p = eol + 1;
    }
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = read_body };
    nghttp2_submit_response(hc->s, st->id, nv, n, st->nobody ? NULL : &prd);
    free(nv);
    buf_free(&tmp);
    buf_reset(&st->rhdrs);
}

static void h2_respond_write(struct httpd_req *r, const void *data, size_t len)
{
    struct h2_stream *st = r->h2;
    if (st->nobody || !len)
        return;
    buf_append(&st->out, data, len);
    nghttp2_session_resume_data(st->hc->s, st->id);
    struct httpd_conn *c = st->hc->c;
    bool was = c->close_later;
    c->close_later = true;
    h2_send(st->hc);
    c->close_later = was;
}

static void h2_respond_finish(struct httpd_req *r)
{
    struct h2_stream *st = r->h2;
    struct h2_conn *hc = st->hc;
    st->finished = true;
    st->eof = true;
    r->on_abort = NULL;
    r->on_drain = NULL;
    if (!st->nobody)
        nghttp2_session_resume_data(hc->s, st->id);
    h2_send(hc);    /* may close the stream and free r */
}

int httpd_trailer(struct httpd_req *r, const char *name, const char *value)
{
    if (!r->h2)
        return -ENOTSUP;
    struct buf *b = &r->h2->trailers;
    size_t at = b->len;
    int e = http1_write_header(b, name, value);
    for (size_t i = at; !e && i < b->len && b->data[i] != ':'; i++)
        if (b->data[i] >= 'A' && b->data[i] <= 'Z')
            b->data[i] = (char)(b->data[i] + 32);
    return e;
}

static void h2_abort(struct httpd_req *r)
{
    struct h2_stream *st = r->h2;
    struct h2_conn *hc = st->hc;
    st->finished = true;
    r->on_abort = NULL;
    nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    h2_send(hc);
}

void httpd_req_form(struct httpd_req *r, struct http_form *f)
{
    memset(f, 0, sizeof(*f));
    http_form_parse(f, r->h.query);
    if (strv_eq_cstr(r->h.method, "POST")) {
        const struct http_header *ct = httpd_req_header(r, "Content-Type");
        if (ct && strv_has_prefix(ct->value, "application/x-www-form-urlencoded"))
            http_form_parse(f, r->body);
    }
}

int httpd_req_tenant(struct httpd_req *r, const char *default_tenant, bool required, char *out, size_t n)
{
    const struct http_header *h = httpd_req_header(r, "X-Scope-OrgID");
    if (h && h->value.n) {
        if (h->value.n >= n || h->value.n > 150 || memchr(h->value.p, '/', h->value.n) ||
            memchr(h->value.p, '|', h->value.n) || memchr(h->value.p, '\0', h->value.n))
            return 400;
        memcpy(out, h->value.p, h->value.n);
        out[h->value.n] = 0;
        return 0;
    }
    if (required)
        return 401;
    snprintf(out, n, "%s", default_tenant);
    return 0;
}
