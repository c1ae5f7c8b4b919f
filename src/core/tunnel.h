/* tunnel.h - byte tunnels: two connected sockets (either may be TLS) joined, bytes
 * copied both ways, with backpressure and half-close, until both ends are done,
 * an error, or timeout_ms without traffic. What a proxy does after a 101
 * (WebSocket) or in L4 mode. A set is one loop's tunnels, closed together at a
 * stop. */
#ifndef CAIRN_TUNNEL_H
#define CAIRN_TUNNEL_H

#include "core/buf.h"
#include "core/loop.h"

#include <openssl/ssl.h>
#include <stdint.h>

struct tunnel;
struct tunnel_set {
    struct loop *loop;
    struct tunnel *head;
    size_t n;                   /* open tunnels */
};

/* Starts a tunnel between a (the client) and b (the server). to_a and to_b hold
 * bytes already due to each side (or are NULL); they are moved into the tunnel.
 * on_close(arg) runs once when the tunnel ends (also when it cannot start). On
 * failure both sockets are closed. Returns 0, -ENOMEM or -EIO. */
int tunnel_start(struct tunnel_set *set, int fd_a, SSL *ssl_a, struct buf *to_a, int fd_b, SSL *ssl_b,
                 struct buf *to_b, uint64_t timeout_ms, void (*on_close)(void *arg), void *arg);
/* Closes every tunnel of the set and frees them at once (the loop may not run again). */
void tunnel_close_all(struct tunnel_set *set);

#endif
