/* ws.c - see ws.h. */
#include "core/ws.h"
#include "core/common.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct ws_conn {
    struct loop_io io;
    int fd;
    struct buf in, out;
    const struct ws_ops *ops;
    void *arg;
    bool closing, closed;
};

bool ws_is_upgrade(struct httpd_req *r)
{
    const struct http_header *up = httpd_req_header(r, "Upgrade"), *key = httpd_req_header(r, "Sec-WebSocket-Key"),
                             *ver = httpd_req_header(r, "Sec-WebSocket-Version");
    return !r->h2 && !r->tls && strv_eq_cstr(r->h.method, "GET") && up && strv_caseeq_cstr(up->value, "websocket") &&
           key && key->value.n && key->value.n < 100 && ver && strv_eq_cstr(ver->value, "13");
}

static void ws_free(struct ws_conn *ws)
{
    if (ws->fd >= 0) {
        loop_io_del(&ws->io);
        close(ws->fd);
    }
    buf_free(&ws->in);
    buf_free(&ws->out);
    free(ws);
}

static void ws_end(struct ws_conn *ws)
{
    if (ws->closed)
        return;
    ws->closed = true;
    if (ws->ops->on_close)
        ws->ops->on_close(ws, ws->arg);
    ws_free(ws);
}

/* Writes what is queued; false when the connection broke. */
static bool flush_out(struct ws_conn *ws)
{
    while (buf_used(&ws->out)) {
        ssize_t w = send(ws->fd, buf_head(&ws->out), buf_used(&ws->out), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            loop_io_mod(&ws->io, EPOLLIN | EPOLLOUT);
            return true;
        }
        if (w <= 0)
            return false;
        buf_consume(&ws->out, (size_t)w);
    }
    buf_compact(&ws->out);
    loop_io_mod(&ws->io, EPOLLIN);
    return true;
}

static void frame(struct ws_conn *ws, uint8_t opcode, const char *p, size_t n)
{
    uint8_t h[10];
    size_t k = 0;
    h[k++] = 0x80 | opcode;
    if (n < 126) {
        h[k++] = (uint8_t)n;
    } else if (n < 65536) {
        h[k++] = 126;
        h[k++] = (uint8_t)(n >> 8);
        h[k++] = (uint8_t)n;
    } else {
        h[k++] = 127;
        for (int i = 7; i >= 0; i--)
            h[k++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    buf_append(&ws->out, h, k);
    buf_append(&ws->out, p, n);
}

int ws_send_text(struct ws_conn *ws, const char *p, size_t n)
{
    if (ws->closing || ws->closed)
        return -EPIPE;
    if (buf_used(&ws->out) > WS_MAX_PENDING)
        return -EAGAIN;
    frame(ws, 0x1, p, n);
    if (!flush_out(ws)) {
        ws_end(ws);
        return -EPIPE;
    }
    return 0;
}

size_t ws_pending(const struct ws_conn *ws)
{
    return buf_used(&ws->out);
}

void ws_close(struct ws_conn *ws, uint16_t code, const char *reason)
{
    if (ws->closed)
        return;
    char b[128];
    size_t rn = reason ? strlen(reason) : 0;
    if (rn > 120)
        rn = 120;
    b[0] = (char)(code >> 8);
    b[1] = (char)code;
    if (rn)
        memcpy(b + 2, reason, rn);
    frame(ws, 0x8, b, rn + 2);
    ws->closing = true;
    flush_out(ws);
    ws_end(ws);
}

/* Parses complete frames from the client (masked, as RFC 6455 requires). */
static bool read_frames(struct ws_conn *ws)
{
    for (;;) {
        const uint8_t *p = (const uint8_t *)buf_head(&ws->in);
        size_t n = buf_used(&ws->in);
        if (n < 2)
            return true;
        uint8_t op = p[0] & 0x0f;
        bool masked = p[1] & 0x80;
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (n < 4)
                return true;
            len = (uint64_t)p[2] << 8 | p[3];
            h = 4;
        } else if (len == 127) {
            if (n < 10)
                return true;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            h = 10;
        }
        if (!masked || len > WS_MAX_FRAME)
            return false;
        if (n < h + 4 + len)
            return true;
        const uint8_t *mask = p + h;
        char *data = (char *)buf_head(&ws->in) + h + 4;
        for (uint64_t i = 0; i < len; i++)
            data[i] ^= (char)mask[i % 4];
        switch (op) {
        case 0x8:           /* close: answered, then done */
            frame(ws, 0x8, data, len >= 2 ? 2 : 0);
            flush_out(ws);
            return false;
        case 0x9:           /* ping */
            frame(ws, 0xA, data, (size_t)len);
            if (!flush_out(ws))
                return false;
            break;
        case 0xA:
            break;
        default:
            if (ws->ops->on_message)
                ws->ops->on_message(ws, ws->arg, data, (size_t)len);
            if (ws->closed)
                return true;
        }
        buf_consume(&ws->in, h + 4 + (size_t)len);
    }
}

static void on_io(struct loop_io *io, uint32_t events)
{
    struct ws_conn *ws = io->data;
    if (events & EPOLLOUT) {
        if (!flush_out(ws)) {
            ws_end(ws);
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
            if (buf_reserve(&ws->in, 4096)) {
                ws_end(ws);
                return;
            }
            ssize_t k = recv(ws->fd, buf_tail(&ws->in), buf_room(&ws->in), MSG_DONTWAIT);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0 && errno == EAGAIN)
                break;
            if (k <= 0 || buf_used(&ws->in) > WS_MAX_FRAME * 2) {
                ws_end(ws);
                return;
            }
            buf_commit(&ws->in, (size_t)k);
            if (!read_frames(ws)) {
                ws_end(ws);
                return;
            }
            if (ws->closed)
                return;
        }
        buf_compact(&ws->in);
    }
}

struct ws_conn *ws_accept(struct httpd_req *r, struct loop *loop, const struct ws_ops *ops, void *arg)
{
    if (!ws_is_upgrade(r)) {
        httpd_respond(r, 400, "text/plain; charset=utf-8", "expected a WebSocket upgrade\n", 29);
        return NULL;
    }
    const struct http_header *key = httpd_req_header(r, "Sec-WebSocket-Key");
    char k[160];
    int kn = snprintf(k, sizeof(k), "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)key->value.n, key->value.p);
    unsigned char sha[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)k, (size_t)kn, sha);
    char accept[64];
    EVP_EncodeBlock((unsigned char *)accept, sha, SHA_DIGEST_LENGTH);
    struct ws_conn *ws = calloc(1, sizeof(*ws));
    if (!ws) {
        httpd_respond(r, 500, "text/plain; charset=utf-8", "out of memory\n", 14);
        return NULL;
    }
    ws->ops = ops;
    ws->arg = arg;
    SSL *ssl = NULL;
    httpd_req_hijack(r, &ws->fd, &ssl, &ws->in);
    buf_printf(&ws->out,
               "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Accept: %s\r\n\r\n",
               accept);
    loop_io_init(&ws->io, ws->fd, on_io, ws);
    if (loop_io_add(loop, &ws->io, EPOLLIN)) {
        close(ws->fd);
        ws->fd = -1;
        ws_free(ws);
        return NULL;
    }
    if (!flush_out(ws)) {
        ws->closed = true;
        ws_free(ws);
        return NULL;
    }
    if (buf_used(&ws->in) && !read_frames(ws)) {       /* frames sent with the upgrade */
        ws->closed = true;
        ws_free(ws);
        return NULL;
    }
    return ws;
}
