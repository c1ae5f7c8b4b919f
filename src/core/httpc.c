/* httpc.c - HTTP/1.1 client connections and pools. */
#include "core/httpc.h"
#include "core/stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

enum hc_state { HC_CONNECTING, HC_HANDSHAKE, HC_ACTIVE, HC_IDLE, HC_CLOSED };

struct httpc_conn {
    struct loop_io io;
    struct loop_timer idle_timer;
    struct loop_defer defer;
    struct httpc *hc;
    enum hc_state state;
    struct net_addr addr;
    bool tls;
    char *host;
    SSL *ssl;
    struct buf wbuf, rbuf, body;
    struct http1_scan scan;
    struct http1_chunked chunked;
    struct http_response resp;
    size_t head_len;
    bool have_head, got_bytes, reused;
    bool no_pool;                   /* made with the caller's TLS context: closed after use */
    struct httpc_pool *pool;        /* a caller's pool (streamed calls), or NULL: the client's */
    /* streamed responses */
    bool paused, peer_closed;
    enum { MODE_NONE, MODE_LENGTH, MODE_CHUNKED, MODE_CLOSE } mode;
    uint64_t remaining;
    struct httpc_call *call;
    struct httpc_conn *next;           /* in the idle pool */
};

struct httpc_call {
    struct httpc *hc;
    struct httpc_conn *conn;
    struct loop_timer timer;
    httpc_cb cb;
    void *arg;
    struct buf req;                 /* serialized request, kept for a retry */
    struct net_addr addr;
    bool tls, is_head, retried, idempotent;
    int early_err;                  /* failure found before any I/O, reported from the timer */
    char *host;
    struct tls_ctx *tls_ctx;        /* the request's own context, until its connection is made */
    char *sni;                      /* NULL: host */
    /* streamed calls */
    const struct httpc_stream_ops *ops;
    bool stream, upgrade;
};

struct httpc {
    struct loop *loop;
    struct httpc_opts o;
    struct httpc_conn *idle;
    size_t nidle;
    struct httpc_conn **all;           /* every open connection, for httpc_free */
    size_t nall, capall;
    uint64_t connects, reuses;
};

static void conn_event(struct loop_io *io, uint32_t events);
static void conn_close(struct httpc_conn *c);
static int call_start(struct httpc_call *call, bool allow_reuse);

void httpc_opts_defaults(struct httpc_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->idle_timeout_ms = 30000;
    o->max_idle = 64;
    o->limits = http1_default_limits;
    o->limits.max_body = 64u << 20;
}

struct httpc *httpc_new(struct loop *loop, const struct httpc_opts *opts)
{
    struct httpc *hc = calloc(1, sizeof(*hc));
    if (!hc)
        return NULL;
    hc->loop = loop;
    if (opts)
        hc->o = *opts;
    else
        httpc_opts_defaults(&hc->o);
    return hc;
}

static void track(struct httpc *hc, struct httpc_conn *c)
{
    if (hc->nall == hc->capall) {
        size_t cap = hc->capall ? hc->capall * 2 : 16;
        struct httpc_conn **a = realloc(hc->all, cap * sizeof(*a));
        if (!a)
            return;
        hc->all = a;
        hc->capall = cap;
    }
    hc->all[hc->nall++] = c;
}

static void untrack(struct httpc *hc, struct httpc_conn *c)
{
    for (size_t i = 0; i < hc->nall; i++)
        if (hc->all[i] == c) {
            hc->all[i] = hc->all[--hc->nall];
            return;
        }
}

static void call_free(struct httpc_call *call)
{
    loop_timer_stop(&call->timer);
    buf_free(&call->req);
    free(call->host);
    free(call->sni);
    free(call);
}

/* Delivers the outcome and frees the call. */
static void call_done(struct httpc_call *call, const struct httpc_response *resp)
{
    if (call->conn)
        call->conn->call = NULL;
    call->conn = NULL;
    httpc_cb cb = call->cb;
    void *arg = call->arg;
    call_free(call);
    cb(resp, arg);
}

static void call_fail(struct httpc_call *call, int err)
{
    struct httpc_response r = { .error = err };
    call_done(call, &r);
}

static void conn_free_deferred(void *arg)
{
    struct httpc_conn *c = arg;
    buf_free(&c->wbuf);
    buf_free(&c->rbuf);
    buf_free(&c->body);
    free(c->host);
    free(c);
}

static void pool_remove(struct httpc_conn *c)
{
    struct httpc *hc = c->hc;
    struct httpc_conn **head = c->pool ? &c->pool->idle : &hc->idle;
    for (struct httpc_conn **p = head; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            if (c->pool)
                c->pool->nidle--;
            else
                hc->nidle--;
            break;
        }
    }
    c->next = NULL;
}

static void conn_close(struct httpc_conn *c)
{
    if (c->state == HC_CLOSED)
        return;
    if (c->state == HC_IDLE)
        pool_remove(c);
    c->state = HC_CLOSED;
    loop_timer_stop(&c->idle_timer);
    loop_io_del(&c->io);
    tls_conn_free(&c->ssl);
    if (c->io.fd >= 0)
        close(c->io.fd);
    untrack(c->hc, c);
    loop_defer(c->hc->loop, &c->defer, conn_free_deferred, c);
}

static void stream_failed(struct httpc_call *call, int err, enum httpc_stage stage, unsigned flags)
{
    const struct httpc_stream_ops *ops = call->ops;
    void *arg = call->arg;
    call->conn = NULL;
    call_free(call);
    ops->failed(arg, err, stage, flags);
}

/* A streamed call's connection failed at stage (closed here). */
static void conn_fail_at(struct httpc_conn *c, int err, enum httpc_stage stage)
{
    struct httpc_call *call = c->call;
    unsigned flags = (c->reused ? HTTPC_F_REUSED : 0) | (c->got_bytes ? HTTPC_F_GOT_BYTES : 0);
    c->call = NULL;
    conn_close(c);
    if (call)
        stream_failed(call, err ? err : -ECONNRESET, stage, flags);
}

/* A connection failed while serving its call. */
static void conn_fail(struct httpc_conn *c, int err)
{
    struct httpc_call *call = c->call;
    if (call && call->stream) {
        enum httpc_stage st = c->state == HC_CONNECTING ? HTTPC_CONNECT
                              : c->state == HC_HANDSHAKE ? HTTPC_TLS
                              : c->have_head            ? HTTPC_BODY
                                                        : HTTPC_EXCHANGE;
        conn_fail_at(c, err, st);
        return;
    }
    bool stale = c->reused && !c->got_bytes;
    conn_close(c);
    if (!call)
        return;
    call->conn = NULL;
    if (stale && call->idempotent && !call->retried) {
        call->retried = true;
        if (call_start(call, false) == 0)
            return;
    }
    call_fail(call, err ? err : -ECONNRESET);
}

static void idle_timeout(struct loop_timer *t)
{
    conn_close(t->data);
}

void httpc_free(struct httpc **phc)
{
    struct httpc *hc = *phc;
    if (!hc)
        return;
    while (hc->nall) {
        struct httpc_conn *c = hc->all[hc->nall - 1];
        if (c->call) {
            c->call->conn = NULL;
            call_free(c->call);
            c->call = NULL;
        }
        conn_close(c);
    }
    /* free deferred connections now */
    while (hc->loop->defer_head) {
        struct loop_defer *d = hc->loop->defer_head;
        hc->loop->defer_head = d->next;
        d->queued = false;
        d->cb(d->arg);
    }
    free(hc->all);
    free(hc);
    *phc = NULL;
}

/* ---- I/O ---- */

static ssize_t c_read(struct httpc_conn *c, void *p, size_t n)
{
    return stream_read(c->io.fd, c->ssl, p, n);
}

static ssize_t c_write(struct httpc_conn *c, const void *p, size_t n)
{
    return stream_write(c->io.fd, c->ssl, p, n);
}

static int flush(struct httpc_conn *c)
{
    while (buf_used(&c->wbuf)) {
        ssize_t n = c_write(c, buf_head(&c->wbuf), buf_used(&c->wbuf));
        if (n == -EAGAIN)
            return 1;
        if (n <= 0) {
            conn_fail(c, n ? (int)n : -EPIPE);
            return -1;
        }
        buf_consume(&c->wbuf, (size_t)n);
    }
    return 0;
}

static void to_pool(struct httpc_conn *c)
{
    struct httpc *hc = c->hc;
    struct httpc_pool *p = c->pool;
    if (p ? p->nidle >= p->max_idle : hc->nidle >= hc->o.max_idle) {
        conn_close(c);
        return;
    }
    if (p) {
        /* an idle pooled connection of a proxy keeps no buffers */
        buf_free(&c->rbuf);
        buf_free(&c->wbuf);
        buf_free(&c->body);
    } else {
        buf_reset(&c->rbuf);
        buf_reset(&c->body);
    }
    c->state = HC_IDLE;
    struct httpc_conn **head = p ? &p->idle : &hc->idle;
    c->next = *head;
    *head = c;
    if (p)
        p->nidle++;
    else
        hc->nidle++;
    loop_timer_start(hc->loop, &c->idle_timer, p && p->idle_ms ? p->idle_ms : hc->o.idle_timeout_ms);
}

/* The response is complete: deliver it, then pool or close the connection. */
static void complete(struct httpc_conn *c, bool reusable)
{
    struct httpc_call *call = c->call;
    struct httpc_response r = {
        .status = c->resp.status,
        .headers = c->resp.headers,
        .nheaders = c->resp.nheaders,
        .body = c->resp.chunked ? buf_strv(&c->body)
                                : strv_make(buf_head(&c->rbuf) + c->head_len,
                                            buf_used(&c->rbuf) - c->head_len),
        .reused = c->reused,
    };
    if (!c->resp.chunked && c->resp.content_length >= 0)
        r.body.n = (size_t)c->resp.content_length;
    bool keep = reusable && c->resp.keep_alive && c->state == HC_ACTIVE && !c->no_pool;
    /* Detach first so that the callback may start a new request on this client. */
    c->call = NULL;
    call->conn = NULL;
    httpc_cb cb = call->cb;
    void *arg = call->arg;
    call_free(call);
    cb(&r, arg);
    if (c->state != HC_ACTIVE)
        return;
    if (keep)
        to_pool(c);
    else
        conn_close(c);
}

/* Tries to finish the response from what is buffered. eof: the peer closed. */
static void process(struct httpc_conn *c, bool eof)
{
    if (!c->call)
        return;
    if (!c->have_head) {
        for (;;) {
            int r = http1_parse_response(buf_head(&c->rbuf), buf_used(&c->rbuf), &c->scan,
                                         &c->hc->o.limits, &c->resp);
            if (r == 0) {
                if (eof)
                    conn_fail(c, -EPROTO);
                return;
            }
            if (r < 0) {
                conn_fail(c, -EPROTO);
                return;
            }
            if (c->resp.status >= 100 && c->resp.status < 200) {
                /* interim response: drop it and read the final one */
                buf_consume(&c->rbuf, (size_t)r);
                memset(&c->scan, 0, sizeof(c->scan));
                continue;
            }
            c->head_len = (size_t)r;
            c->have_head = true;
            memset(&c->chunked, 0, sizeof(c->chunked));
            c->scan.pos = 0;    /* now the chunked decode cursor */
            break;
        }
    }
    bool nobody = c->call->is_head || c->resp.status == 204 || c->resp.status == 304;
    if (nobody) {
        complete(c, true);
        return;
    }
    size_t have = buf_used(&c->rbuf) - c->head_len;
    if (c->resp.chunked) {
        size_t consumed = 0;
        int r = http1_chunked_feed(&c->chunked, buf_head(&c->rbuf) + c->head_len + c->scan.pos,
                                   have - c->scan.pos, &consumed, &c->body,
                                   c->hc->o.limits.max_body);
        c->scan.pos += consumed;
        if (r < 0) {
            conn_fail(c, -EPROTO);
            return;
        }
        if (r == 1) {
            /* re-parse the head: the read buffer may have moved */
            struct http1_scan s = { 0 };
            http1_parse_response(buf_head(&c->rbuf), c->head_len, &s, &c->hc->o.limits, &c->resp);
            complete(c, c->head_len + c->scan.pos == buf_used(&c->rbuf));
        } else if (eof) {
            conn_fail(c, -EPROTO);
        }
        return;
    }
    if (c->resp.content_length >= 0) {
        if (have >= (size_t)c->resp.content_length) {
            struct http1_scan s = { 0 };
            http1_parse_response(buf_head(&c->rbuf), c->head_len, &s, &c->hc->o.limits, &c->resp);
            complete(c, have == (size_t)c->resp.content_length);
        } else if (eof) {
            conn_fail(c, -EPROTO);
        } else if ((uint64_t)c->resp.content_length > c->hc->o.limits.max_body) {
            conn_fail(c, -EFBIG);
        }
        return;
    }
    /* delimited by close */
    if (have > c->hc->o.limits.max_body) {
        conn_fail(c, -EFBIG);
        return;
    }
    if (eof) {
        struct http1_scan s = { 0 };
        http1_parse_response(buf_head(&c->rbuf), c->head_len, &s, &c->hc->o.limits, &c->resp);
        c->resp.keep_alive = false;
        complete(c, false);
    }
}

static void on_readable(struct httpc_conn *c)
{
    for (;;) {
        if (buf_reserve(&c->rbuf, 16384)) {
            conn_fail(c, -ENOMEM);
            return;
        }
        ssize_t n = c_read(c, buf_tail(&c->rbuf), buf_room(&c->rbuf));
        if (n > 0) {
            c->got_bytes = true;
            buf_commit(&c->rbuf, (size_t)n);
            process(c, false);
            if (c->state != HC_ACTIVE || !c->call)
                return;
            continue;
        }
        if (n == -EAGAIN)
            return;
        if (n == 0) {
            process(c, true);
            return;
        }
        conn_fail(c, (int)n);
        return;
    }
}

static void stream_pull(struct httpc_conn *c);

/* A streamed call's new connection is ready: tell the caller, then send. */
static bool stream_connected(struct httpc_conn *c)
{
    struct httpc_call *call = c->call;
    if (call && call->stream && call->ops->connected) {
        call->ops->connected(call->arg);
        if (c->call != call || c->state != HC_ACTIVE)
            return false;
    }
    return true;
}

static void conn_event(struct loop_io *io, uint32_t events)
{
    struct httpc_conn *c = io->data;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->peer_closed = true;
    switch (c->state) {
    case HC_CLOSED:
        return;
    case HC_IDLE:
        /* the server closed, or sent something unasked: the connection is done */
        conn_close(c);
        return;
    case HC_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
            err = errno;
        if (err) {
            conn_fail(c, -err);
            return;
        }
        c->state = c->ssl ? HC_HANDSHAKE : HC_ACTIVE;
        if (c->state == HC_ACTIVE && !stream_connected(c))
            return;
    }
        /* fall through */
    case HC_HANDSHAKE:
        if (c->state == HC_HANDSHAKE) {
            int r = tls_handshake(c->ssl);
            if (r == -EAGAIN)
                return;
            if (r < 0) {
                conn_fail(c, -EPROTO);
                return;
            }
            c->state = HC_ACTIVE;
            if (!stream_connected(c))
                return;
        }
        /* fall through */
    case HC_ACTIVE:
        if (buf_used(&c->wbuf) && flush(c) < 0)
            return;
        if (c->state != HC_ACTIVE)
            return;
        if (c->call && c->call->stream)
            stream_pull(c);
        else
            on_readable(c);
        return;
    }
}

/* Opens a connection to addr, with TLS through ctx when tls (the name sent is sni;
 * without one the certificate must name addr's IP, when the context verifies).
 * Returns it connecting and tracked, or NULL with *err. */
static struct httpc_conn *conn_new(struct httpc *hc, const struct net_addr *addr, bool tls,
                                   struct tls_ctx *ctx, const char *sni, int *err)
{
    struct httpc_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    int fd = net_connect_tcp(addr);
    if (fd < 0) {
        free(c);
        *err = fd;
        return NULL;
    }
    c->hc = hc;
    c->addr = *addr;
    c->tls = tls;
    loop_io_init(&c->io, fd, conn_event, c);
    loop_timer_init(&c->idle_timer, idle_timeout, c);
    *err = 0;
    if (tls) {
        char ip[NET_ADDRSTRLEN];
        bool named = sni && *sni;
        if (!named)
            net_ip_format((const struct sockaddr *)&addr->ss, ip, sizeof(ip));
        if (!ctx || !(c->ssl = tls_conn_new(ctx, fd, false, sni)) ||
            (!named && tls_conn_verify_ip(c->ssl, ip)))
            *err = -EPROTO;
    }
    if (!*err && loop_io_add(hc->loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET))
        *err = -EIO;
    if (*err) {
        tls_conn_free(&c->ssl);
        close(fd);
        free(c);
        return NULL;
    }
    c->state = HC_CONNECTING;
    track(hc, c);
    hc->connects++;
    return c;
}

/* Gives c to call, with bytes to send and the read state of a new exchange. */
static void conn_attach(struct httpc_conn *c, struct httpc_call *call, const void *bytes, size_t len)
{
    c->call = call;
    call->conn = c;
    c->have_head = false;
    c->got_bytes = false;
    c->paused = false;
    c->peer_closed = false;
    c->head_len = 0;
    memset(&c->scan, 0, sizeof(c->scan));
    buf_reset(&c->rbuf);
    buf_reset(&c->body);
    buf_reset(&c->wbuf);
    buf_append(&c->wbuf, bytes, len);
}

/* ---- streamed responses ---- */

/* The response is whole: the connection goes back to its pool (or is closed)
 * before the caller hears of it, so that its next request may take it. */
static void stream_done(struct httpc_conn *c, bool reusable)
{
    struct httpc_call *call = c->call;
    bool keep = reusable && c->resp.keep_alive && c->state == HC_ACTIVE && !c->no_pool;
    c->call = NULL;
    call->conn = NULL;
    if (keep)
        to_pool(c);
    else
        conn_close(c);
    const struct httpc_stream_ops *ops = call->ops;
    void *arg = call->arg;
    call_free(call);
    ops->done(arg, keep);
}

/* Delivers n body bytes; false when the caller ended the call meanwhile. */
static bool stream_data(struct httpc_conn *c, struct httpc_call *call, const char *p, size_t n)
{
    if (n)
        call->ops->data(call->arg, p, n);
    return c->call == call && c->state == HC_ACTIVE;
}

/* Works on what is buffered; eof: the server closed its side. */
static void stream_process(struct httpc_conn *c, bool eof)
{
    struct httpc_call *call = c->call;
    if (!c->have_head) {
        for (;;) {
            int n = http1_parse_response(buf_head(&c->rbuf), buf_used(&c->rbuf), &c->scan,
                                         &http1_default_limits, &c->resp);
            if (n == 0) {
                if (eof)
                    conn_fail_at(c, -ECONNRESET, HTTPC_EXCHANGE);
                return;
            }
            if (n < 0) {
                conn_fail_at(c, -EPROTO, HTTPC_BAD_HEAD);
                return;
            }
            if (c->resp.status < 200 && !(c->resp.status == 101 && call->upgrade)) {
                buf_consume(&c->rbuf, (size_t)n);   /* interim: read the final one */
                memset(&c->scan, 0, sizeof(c->scan));
                continue;
            }
            c->head_len = (size_t)n;
            break;
        }
        c->have_head = true;
        int st = c->resp.status;
        if (call->is_head || st == 204 || st == 304 || st == 101)
            c->mode = MODE_NONE;
        else if (c->resp.chunked)
            c->mode = MODE_CHUNKED;
        else if (c->resp.content_length >= 0)
            c->mode = MODE_LENGTH;
        else
            c->mode = MODE_CLOSE;
        c->remaining = c->mode == MODE_LENGTH ? (uint64_t)c->resp.content_length : 0;
        call->ops->head(call->arg, &c->resp);
        if (c->call != call || c->state != HC_ACTIVE)
            return;         /* ended, or taken over, by the caller */
        buf_consume(&c->rbuf, c->head_len);   /* the head's views are gone from here on */
        memset(&c->chunked, 0, sizeof(c->chunked));
    }
    switch (c->mode) {
    case MODE_NONE:
        stream_done(c, buf_used(&c->rbuf) == 0);
        return;
    case MODE_LENGTH: {
        size_t n = (size_t)MIN((uint64_t)buf_used(&c->rbuf), c->remaining);
        if (!stream_data(c, call, buf_head(&c->rbuf), n))
            return;
        c->remaining -= n;
        buf_consume(&c->rbuf, n);
        if (c->remaining == 0)
            stream_done(c, buf_used(&c->rbuf) == 0);
        else if (eof)
            conn_fail_at(c, -ECONNRESET, HTTPC_BODY);
        return;
    }
    case MODE_CHUNKED: {
        size_t used = 0;
        buf_reset(&c->body);
        int rc = http1_chunked_feed(&c->chunked, buf_head(&c->rbuf), buf_used(&c->rbuf), &used,
                                    &c->body, UINT64_MAX / 2);
        buf_consume(&c->rbuf, used);
        if (!stream_data(c, call, buf_head(&c->body), buf_used(&c->body)))
            return;
        if (rc < 0)
            conn_fail_at(c, -EPROTO, HTTPC_BODY);
        else if (rc == 1)
            stream_done(c, buf_used(&c->rbuf) == 0);
        else if (eof)
            conn_fail_at(c, -ECONNRESET, HTTPC_BODY);
        return;
    }
    case MODE_CLOSE:
        if (!stream_data(c, call, buf_head(&c->rbuf), buf_used(&c->rbuf)))
            return;
        buf_reset(&c->rbuf);
        if (eof)
            stream_done(c, false);
        return;
    }
}

static void stream_pull(struct httpc_conn *c)
{
    bool maybe_more = true;     /* see read_more() in httpd.c: a short read drained the socket */
    while (c->state == HC_ACTIVE && c->call && maybe_more && !c->paused) {
        if (buf_reserve(&c->rbuf, 16384)) {
            conn_fail(c, -ENOMEM);
            return;
        }
        ssize_t n = c_read(c, buf_tail(&c->rbuf), buf_room(&c->rbuf));
        if (n > 0) {
            c->got_bytes = true;
            /* the end may have come with the last bytes: no edge will follow */
            maybe_more = (size_t)n == buf_room(&c->rbuf) || c->ssl || c->peer_closed;
            buf_commit(&c->rbuf, (size_t)n);
            stream_process(c, false);
            continue;
        }
        if (n == -EAGAIN)
            return;
        if (n == 0 && c->got_bytes) {
            stream_process(c, true);
            return;
        }
        conn_fail_at(c, n ? (int)n : -ECONNRESET, HTTPC_EXCHANGE);     /* reset, or closed before a byte */
        return;
    }
}

void httpc_pause(struct httpc_call *call)
{
    if (call->conn)
        call->conn->paused = true;
}

void httpc_resume(struct httpc_call *call)
{
    struct httpc_conn *c = call->conn;
    if (!c || !c->paused)
        return;
    c->paused = false;
    if (c->state == HC_ACTIVE && buf_used(&c->rbuf) && c->have_head) {
        stream_process(c, false);
        if (c->call != call)
            return;
    }
    stream_pull(c);
}

static void quiet_head(void *arg, const struct http_response *resp)
{
    UNUSED(arg);
    UNUSED(resp);
}

static void quiet_data(void *arg, const char *p, size_t n)
{
    UNUSED(arg);
    UNUSED(p);
    UNUSED(n);
}

static void quiet_done(void *arg, bool reusable)
{
    UNUSED(arg);
    UNUSED(reusable);
}

static void quiet_failed(void *arg, int err, enum httpc_stage stage, unsigned flags)
{
    UNUSED(arg);
    UNUSED(err);
    UNUSED(stage);
    UNUSED(flags);
}

static const struct httpc_stream_ops quiet_ops = {
    .head = quiet_head, .data = quiet_data, .done = quiet_done, .failed = quiet_failed,
};

void httpc_detach(struct httpc_call *call)
{
    call->ops = &quiet_ops;
    call->arg = NULL;
}

void httpc_hijack(struct httpc_call *call, int *fd, SSL **ssl, struct buf *early)
{
    struct httpc_conn *c = call->conn;
    *fd = c->io.fd;
    *ssl = c->ssl;
    buf_append(early, buf_head(&c->rbuf), buf_used(&c->rbuf));
    loop_io_del(&c->io);
    c->io.fd = -1;          /* the caller owns the socket now */
    c->ssl = NULL;
    c->call = NULL;
    conn_close(c);
    call->conn = NULL;
    call_free(call);
}

void httpc_pool_init(struct httpc_pool *p, size_t max_idle, uint32_t idle_ms)
{
    memset(p, 0, sizeof(*p));
    p->max_idle = max_idle;
    p->idle_ms = idle_ms;
}

void httpc_pool_flush(struct httpc *hc, struct httpc_pool *p)
{
    while (p->idle)
        conn_close(p->idle);
    /* connections still answering leave the pool: closed after their response */
    for (size_t i = 0; hc && i < hc->nall; i++)
        if (hc->all[i]->pool == p) {
            hc->all[i]->pool = NULL;
            hc->all[i]->no_pool = true;
        }
}

/* Reports a failure found after httpc_stream returned (a pooled connection whose
 * first write failed): from the loop, as every callback. */
static void stream_late_fail(struct loop_timer *t)
{
    struct httpc_call *call = t->data;
    stream_failed(call, call->early_err, HTTPC_EXCHANGE, HTTPC_F_REUSED);
}

struct httpc_call *httpc_stream(struct httpc *hc, const struct httpc_stream_req *req,
                                const struct httpc_stream_ops *ops, void *arg, int *err, bool *reused)
{
    struct httpc_call *call = calloc(1, sizeof(*call));
    if (!call) {
        *err = -ENOMEM;
        return NULL;
    }
    call->hc = hc;
    call->ops = ops;
    call->arg = arg;
    call->stream = true;
    call->upgrade = req->upgrade;
    call->is_head = req->is_head;
    loop_timer_init(&call->timer, stream_late_fail, call);
    struct httpc_conn *c = req->pool ? req->pool->idle : NULL;
    if (c) {
        pool_remove(c);
        loop_timer_stop(&c->idle_timer);
        c->reused = true;
        hc->reuses++;
    } else {
        c = conn_new(hc, &req->addr, req->tls != NULL, req->tls, req->sni, err);
        if (!c) {
            free(call);
            return NULL;
        }
        c->pool = req->pool;
        c->no_pool = req->pool == NULL;     /* not for the client's own pool */
    }
    *reused = c->reused;
    conn_attach(c, call, req->raw, req->raw_len);
    if (c->state == HC_IDLE) {
        c->state = HC_ACTIVE;
        /* a pooled connection: send at once; a failure is reported from the loop */
        while (buf_used(&c->wbuf)) {
            ssize_t n = c_write(c, buf_head(&c->wbuf), buf_used(&c->wbuf));
            if (n == -EAGAIN)
                break;
            if (n <= 0) {
                c->call = NULL;
                conn_close(c);
                call->conn = NULL;
                call->early_err = n ? (int)n : -EPIPE;
                loop_timer_start(hc->loop, &call->timer, 0);
                return call;
            }
            buf_consume(&c->wbuf, (size_t)n);
        }
    }
    return call;
}

/* ---- calls ---- */

static void call_timeout(struct loop_timer *t)
{
    struct httpc_call *call = t->data;
    struct httpc_conn *c = call->conn;
    if (call->early_err) {
        call_fail(call, call->early_err);
        return;
    }
    if (c) {
        c->call = NULL;
        conn_close(c);
    }
    call->conn = NULL;
    call_fail(call, -ETIMEDOUT);
}

static struct httpc_conn *pool_take(struct httpc *hc, const struct httpc_call *call)
{
    for (struct httpc_conn **p = &hc->idle; *p; p = &(*p)->next) {
        struct httpc_conn *c = *p;
        if (c->tls == call->tls && net_addr_eq(&c->addr, &call->addr) &&
            strcmp(c->host, call->host) == 0) {
            *p = c->next;
            c->next = NULL;
            hc->nidle--;
            loop_timer_stop(&c->idle_timer);
            return c;
        }
    }
    return NULL;
}

static int call_start(struct httpc_call *call, bool allow_reuse)
{
    struct httpc *hc = call->hc;
    struct httpc_conn *c = allow_reuse && !call->tls_ctx ? pool_take(hc, call) : NULL;
    if (c) {
        c->reused = true;
        hc->reuses++;
    } else {
        int err;
        char *host = strdup(call->host);
        if (!host)
            return -ENOMEM;
        struct tls_ctx *ctx = call->tls_ctx ? call->tls_ctx : hc->o.tls;
        c = conn_new(hc, &call->addr, call->tls, ctx, call->sni ? call->sni : call->host, &err);
        if (!c) {
            free(host);
            return err;
        }
        c->host = host;
        /* a context of the caller's may not outlive this call: never pooled */
        c->no_pool = call->tls_ctx != NULL;
        call->tls_ctx = NULL;
    }
    conn_attach(c, call, buf_head(&call->req), buf_used(&call->req));
    if (c->state == HC_IDLE) {
        c->state = HC_ACTIVE;
        flush(c);
    }
    return 0;
}

static bool idempotent(const char *m)
{
    static const char *const ok[] = { "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE" };
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++)
        if (strcmp(m, ok[i]) == 0)
            return true;
    return false;
}

struct httpc_call *httpc_send(struct httpc *hc, const struct httpc_request *req, httpc_cb cb,
                              void *arg)
{
    struct httpc_call *call = calloc(1, sizeof(*call));
    if (!call)
        return NULL;
    call->hc = hc;
    call->cb = cb;
    call->arg = arg;
    call->addr = req->addr;
    call->tls = req->tls;
    call->is_head = strcmp(req->method, "HEAD") == 0;
    call->idempotent = idempotent(req->method);
    char hostbuf[NET_ADDRSTRLEN];
    if (!req->host)
        net_addr_format(&req->addr, hostbuf, sizeof(hostbuf));
    call->host = strdup(req->host ? req->host : hostbuf);
    call->tls_ctx = req->tls ? req->tls_ctx : NULL;
    call->sni = req->tls && req->sni ? strdup(req->sni) : NULL;
    struct buf *b = &call->req;
    int e = buf_printf(b, "%s %s HTTP/1.1\r\nHost: %s\r\n", req->method,
                       req->target ? req->target : "/", call->host ? call->host : "");
    bool has_ua = false;
    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        e |= buf_printf(b, "%s\r\n", req->headers[i]);
        has_ua |= strncasecmp(req->headers[i], "user-agent:", 11) == 0;
    }
    if (!has_ua)
        e |= buf_printf(b, "User-Agent: cairn/%s\r\n", CAIRN_VERSION);
    if (req->body_len || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0)
        e |= buf_printf(b, "Content-Length: %zu\r\n", req->body_len);
    e |= buf_append(b, "\r\n", 2);
    if (req->body_len)
        e |= buf_append(b, req->body, req->body_len);
    if (e || !call->host || (req->tls && req->sni && !call->sni)) {
        call_free(call);
        return NULL;
    }
    loop_timer_init(&call->timer, call_timeout, call);
    loop_timer_start(hc->loop, &call->timer, req->timeout_ms ? req->timeout_ms : 30000);
    int r = call_start(call, true);
    if (r) {
        /* Callbacks never run inside httpc_send: report from the timer. */
        call->early_err = r;
        loop_timer_start(hc->loop, &call->timer, 0);
    }
    return call;
}

void httpc_cancel(struct httpc_call *call)
{
    struct httpc_conn *c = call->conn;
    if (c) {
        c->call = NULL;
        conn_close(c);
    }
    call_free(call);
}

void httpc_stats(const struct httpc *hc, struct httpc_stats *out)
{
    out->connects = hc->connects;
    out->reuses = hc->reuses;
    out->idle = hc->nidle;
}
