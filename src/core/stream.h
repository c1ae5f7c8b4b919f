/* stream.h - one byte stream: a connected socket, with TLS when it has an SSL.
 *
 * The reads and writes every connection of httpd, httpc, the edge's upstream
 * connections and its tunnels go through, so that plain and TLS sockets, EINTR and
 * the would-block case are handled one way. Non-blocking sockets; any thread (a
 * stream belongs to the loop that owns its connection).
 */
#ifndef CAIRN_STREAM_H
#define CAIRN_STREAM_H

#include <openssl/ssl.h>
#include <sys/types.h>

/* Reads up to n bytes: the count, 0 at end of stream, -EAGAIN when nothing is
 * ready, or another negated errno. */
ssize_t stream_read(int fd, SSL *ssl, void *p, size_t n);
/* Writes up to n bytes (never raising SIGPIPE): the count, -EAGAIN when the
 * socket is full, or another negated errno. */
ssize_t stream_write(int fd, SSL *ssl, const void *p, size_t n);

#endif
