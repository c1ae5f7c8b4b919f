/*
 * floor_dns: the least a UDP DNS server can do per query, as a yardstick for
 * bench-dns. One thread, epoll, recvmmsg of up to 32 datagrams and one
 * sendmmsg of the same bytes back with the QR bit and NXDOMAIN set: no parsing,
 * no zone, no counters. What it reaches per CPU-second is what the kernel's
 * UDP path (receive, route, conntrack, delivery and wake-up of the client)
 * costs on the machine; no server that answers through sockets can pass it.
 *
 *   floor_dns PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32

static struct mmsghdr in[BATCH], out[BATCH];
static struct iovec iin[BATCH], iout[BATCH];
static struct sockaddr_in peer[BATCH];
static unsigned char buf[BATCH][1232];

/* Answers what the socket holds, BATCH at a time; returns once it is empty. */
static void drain(int fd)
{
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iin[i] = (struct iovec){ buf[i], sizeof(buf[i]) };
            in[i].msg_hdr = (struct msghdr){ .msg_name = &peer[i], .msg_namelen = sizeof(peer[i]),
                                             .msg_iov = &iin[i], .msg_iovlen = 1 };
        }
        int n = recvmmsg(fd, in, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (in[i].msg_len < 12)
                continue;
            buf[i][2] |= 0x80;
            buf[i][3] = (unsigned char)((buf[i][3] & 0xf0) | 3);
            iout[k] = (struct iovec){ buf[i], in[i].msg_len };
            out[k].msg_hdr = (struct msghdr){ .msg_name = &peer[i], .msg_namelen = in[i].msg_hdr.msg_namelen,
                                              .msg_iov = &iout[k], .msg_iovlen = 1 };
            k++;
        }
        if (k)
            sendmmsg(fd, out, (unsigned)k, MSG_DONTWAIT);
        if (n < BATCH)
            return;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: floor_dns PORT\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), rcvbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(fd, (struct sockaddr *)&a, sizeof(a))) {
        perror("floor_dns: bind");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    for (;;) {
        struct epoll_event e;
        if (epoll_wait(ep, &e, 1, -1) == 1)
            drain(fd);
    }
}
