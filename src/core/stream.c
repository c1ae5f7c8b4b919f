/* stream.c - reads and writes on a socket, through TLS when there is an SSL. */
#include "core/stream.h"
#include "core/tls.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

ssize_t stream_read(int fd, SSL *ssl, void *p, size_t n)
{
    if (ssl)
        return tls_read(ssl, p, n);
    for (;;) {
        ssize_t r = read(fd, p, n);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

ssize_t stream_write(int fd, SSL *ssl, const void *p, size_t n)
{
    if (ssl)
        return tls_write(ssl, p, n);
    for (;;) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}
