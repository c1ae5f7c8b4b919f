/*
 * floor: the least an HTTP server can do per request, as a yardstick for
 * bench-cdn. One thread, epoll, and for every request head read from a
 * keep-alive connection one sendmsg of a fixed response (head and a body of N
 * bytes kept in memory). No parsing beyond finding the end of each head, no
 * cache, no logging: what it reaches on a machine is the kernel's and the load
 * generator's limit, which no cache can pass.
 *
 *   floor PORT BYTES
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t have;        /* bytes of an unfinished request head */
    size_t pending;     /* responses owed */
    size_t off;         /* bytes of the current response already sent */
    char in[8192];
};

static char head[128], *body;
static size_t head_len, body_len;

/* Sends what is owed; false when the connection is to be closed. */
static int flush(struct conn *c)
{
    while (c->pending) {
        size_t total = head_len + body_len, o = c->off;
        struct iovec v[2];
        int n = 0;
        if (o < head_len) {
            v[n++] = (struct iovec){ head + o, head_len - o };
            o = head_len;
        }
        v[n++] = (struct iovec){ body + (o - head_len), total - o };
        struct msghdr m = { .msg_iov = v, .msg_iovlen = (size_t)n };
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN;
        c->off += (size_t)w;
        if (c->off == total) {
            c->off = 0;
            c->pending--;
        }
    }
    return 1;
}

/* Counts complete request heads (bodies are not expected). */
static int readable(struct conn *c)
{
    for (;;) {
        ssize_t r = read(c->fd, c->in + c->have, sizeof(c->in) - c->have);
        if (r == 0)
            return 0;
        if (r < 0)
            return errno == EAGAIN;
        c->have += (size_t)r;
        char *p = c->in, *e = c->in + c->have, *end;
        while ((end = memmem(p, (size_t)(e - p), "\r\n\r\n", 4))) {
            c->pending++;
            p = end + 4;
        }
        c->have = (size_t)(e - p);
        memmove(c->in, p, c->have);
        if (c->have == sizeof(c->in))
            return 0;   /* a head too large */
        if ((size_t)r < sizeof(c->in))
            return 1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floor PORT BYTES\n");
        return 2;
    }
    body_len = strtoul(argv[2], NULL, 10);
    body = malloc(body_len + 1);
    if (!body)
        return 1;
    for (size_t i = 0; i < body_len; i++)
        body[i] = (char)('a' + i % 26);
    head_len = (size_t)snprintf(head, sizeof(head),
                                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
                                body_len);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 4096)) {
        perror("floor: bind");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = calloc(1, sizeof(*c));
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct epoll_event e = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (!readable(c) || !flush(c)) {
                close(c->fd);
                free(c);
            }
        }
    }
}
