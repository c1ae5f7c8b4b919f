/* httpc.c - HTTP/1.1 client connections and pools. */
#include "core/httpc.h"
#include "core/stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

enum hc_state { HC_CONNECTING, HC_HANDSHAKE, HC_ACTIVE, HC_IDLE, HC_CLOSED };

struct hc_conn {
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
    struct httpc_call *call;
    struct hc_conn *next;           /* in the idle pool */
};

struct httpc_call {
    struct httpc *hc;
    struct hc_conn *conn;
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
};

struct httpc {
    struct loop *loop;
    struct httpc_opts o;
    struct hc_conn *idle;
    size_t nidle;
    struct hc_conn **all;           /* every open connection, for httpc_free */
    size_t nall, capall;
    uint64_t connects, reuses;
};

static void conn_event(struct loop_io *io, uint32_t events);
static void conn_close(struct hc_conn *c);
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

static void track(struct httpc *hc, struct hc_conn *c)
{
    if (hc->nall == hc->capall) {
        size_t cap = hc->capall ? hc->capall * 2 : 16;
        struct hc_conn **a = realloc(hc->all, cap * sizeof(*a));
        if (!a)
            return;
        hc->all = a;
        hc->capall = cap;
    }
    hc->all[hc->nall++] = c;
}

static void untrack(struct httpc *hc, struct hc_conn *c)
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
    struct hc_conn *c = arg;
    buf_free(&c->wbuf);
    buf_free(&c->rbuf);
    buf_free(&c->body);
    free(c->host);
    free(c);
}

static void pool_remove(struct hc_conn *c)
{
    struct httpc *hc = c->hc;
    for (struct hc_conn **p = &hc->idle; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            hc->nidle--;
            break;
        }
    }
    c->next = NULL;
}

static void conn_close(struct hc_conn *c)
{
    if (c->state == HC_CLOSED)
        return;
    if (c->state == HC_IDLE)
        pool_remove(c);
    c->state = HC_CLOSED;
    loop_timer_stop(&c->idle_timer);
    loop_io_del(&c->io);
    tls_conn_free(&c->ssl);
    close(c->io.fd);
    untrack(c->hc, c);
    loop_defer(c->hc->loop, &c->defer, conn_free_deferred, c);
}

/* A connection failed while serving its call. */
static void conn_fail(struct hc_conn *c, int err)
{
    struct httpc_call *call = c->call;
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
        struct hc_conn *c = hc->all[hc->nall - 1];
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

static ssize_t c_read(struct hc_conn *c, void *p, size_t n)
{
    return stream_read(c->io.fd, c->ssl, p, n);
}

static ssize_t c_write(struct hc_conn *c, const void *p, size_t n)
{
    return stream_write(c->io.fd, c->ssl, p, n);
}

static int flush(struct hc_conn *c)
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

static void to_pool(struct hc_conn *c)
{
    struct httpc *hc = c->hc;
    if (hc->nidle >= hc->o.max_idle) {
        conn_close(c);
        return;
    }
    buf_reset(&c->rbuf);
    buf_reset(&c->body);
    c->state = HC_IDLE;
    c->next = hc->idle;
    hc->idle = c;
    hc->nidle++;
    loop_timer_start(hc->loop, &c->idle_timer, hc->o.idle_timeout_ms);
}

/* The response is complete: deliver it, then pool or close the connection. */
static void complete(struct hc_conn *c, bool reusable)
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
static void process(struct hc_conn *c, bool eof)
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

static void on_readable(struct hc_conn *c)
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

static void conn_event(struct loop_io *io, uint32_t events)
{
    struct hc_conn *c = io->data;
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
        }
        /* fall through */
    case HC_ACTIVE:
        if (buf_used(&c->wbuf) && flush(c) < 0)
            return;
        if (c->state == HC_ACTIVE)
            on_readable(c);
        return;
    }
}

/* ---- calls ---- */

static void call_timeout(struct loop_timer *t)
{
    struct httpc_call *call = t->data;
    struct hc_conn *c = call->conn;
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

static struct hc_conn *pool_take(struct httpc *hc, const struct httpc_call *call)
{
    for (struct hc_conn **p = &hc->idle; *p; p = &(*p)->next) {
        struct hc_conn *c = *p;
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
    struct hc_conn *c = allow_reuse && !call->tls_ctx ? pool_take(hc, call) : NULL;
    if (c) {
        c->reused = true;
        hc->reuses++;
    } else {
        c = calloc(1, sizeof(*c));
        if (!c)
            return -ENOMEM;
        c->hc = hc;
        c->addr = call->addr;
        c->tls = call->tls;
        c->host = strdup(call->host);
        int fd = net_connect_tcp(&call->addr);
        if (fd < 0 || !c->host) {
            if (fd >= 0)
                close(fd);
            free(c->host);
            free(c);
            return fd < 0 ? fd : -ENOMEM;
        }
        loop_io_init(&c->io, fd, conn_event, c);
        loop_timer_init(&c->idle_timer, idle_timeout, c);
        if (call->tls) {
            struct tls_ctx *ctx = call->tls_ctx ? call->tls_ctx : hc->o.tls;
            const char *name = call->sni ? call->sni : call->host;
            char ip[NET_ADDRSTRLEN];
            if (!*name)
                net_ip_format((const struct sockaddr *)&call->addr.ss, ip, sizeof(ip));
            if (!ctx || !(c->ssl = tls_conn_new(ctx, fd, false, name)) ||
                (!*name && tls_conn_verify_ip(c->ssl, ip))) {
                tls_conn_free(&c->ssl);
                close(fd);
                free(c->host);
                free(c);
                return -EPROTO;
            }
            /* a context of the caller's may not outlive this call: never pooled */
            c->no_pool = call->tls_ctx != NULL;
            call->tls_ctx = NULL;
        }
        if (loop_io_add(hc->loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
            tls_conn_free(&c->ssl);
            close(fd);
            free(c->host);
            free(c);
            return -EIO;
        }
        c->state = HC_CONNECTING;
        track(hc, c);
        hc->connects++;
    }
    c->call = call;
    call->conn = c;
    c->have_head = false;
    c->got_bytes = false;
    c->head_len = 0;
    memset(&c->scan, 0, sizeof(c->scan));
    buf_reset(&c->rbuf);
    buf_reset(&c->body);
    buf_reset(&c->wbuf);
    buf_append(&c->wbuf, buf_head(&call->req), buf_used(&call->req));
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
    struct hc_conn *c = call->conn;
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
