/* ws.h - the server side of a WebSocket (RFC 6455) on the event loop, for live
 * streams to browsers and tools (Loki's tail). Text messages out; from the client,
 * control frames (ping answered, close answered and ended) and data frames handed
 * to on_message. Plain TCP only (the connection is taken over from httpd).
 */
#ifndef CAIRN_WS_H
#define CAIRN_WS_H

#include "core/buf.h"
#include "core/httpd.h"
#include "core/loop.h"

#define WS_MAX_FRAME (1u << 20)
#define WS_MAX_PENDING (8u << 20)       /* unsent bytes beyond which the peer is too slow */

struct ws_conn;

struct ws_ops {
    void (*on_message)(struct ws_conn *ws, void *arg, const char *p, size_t n);
    /* The connection is gone (closed by either side, or failed); ws is freed after. */
    void (*on_close)(struct ws_conn *ws, void *arg);
};

/* True when r asks for a WebSocket (GET, Upgrade: websocket, a key, version 13). */
bool ws_is_upgrade(struct httpd_req *r);
/* Answers 101 and takes the connection over from httpd on loop. NULL (after
 * answering 400 or closing) when it cannot. */
struct ws_conn *ws_accept(struct httpd_req *r, struct loop *loop, const struct ws_ops *ops, void *arg);
/* Queues a text message. -EAGAIN when the peer is too slow (the caller may close). */
int ws_send_text(struct ws_conn *ws, const char *p, size_t n);
/* Sends a close frame with code and ends the connection (on_close runs). */
void ws_close(struct ws_conn *ws, uint16_t code, const char *reason);
size_t ws_pending(const struct ws_conn *ws);

#endif
