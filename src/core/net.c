/* net.c - addresses, CIDR, listeners. */
#include "core/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int parse_port(const char *s, uint16_t *out)
{
    if (!*s || strlen(s) > 5)
        return -EINVAL;
    unsigned v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (v == 0 || v > 65535 || (s[0] == '0'))
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

int net_ip_parse(const char *s, uint16_t port, struct net_addr *out)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, s, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        out->len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        out->len = sizeof(*in6);
        return 0;
    }
    return -EINVAL;
}

int net_resolve(const char *hostport, struct net_addr *out)
{
    if (net_addr_parse(hostport, out) == 0)
        return 0;
    const char *colon = hostport ? strrchr(hostport, ':') : NULL;
    uint16_t p;
    if (!colon || colon == hostport || (size_t)(colon - hostport) > 253 || parse_port(colon + 1, &p))
        return -EINVAL;
    char name[256];
    memcpy(name, hostport, (size_t)(colon - hostport));
    name[colon - hostport] = 0;
    if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != strlen(name))
        return -EINVAL;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    if (getaddrinfo(name, colon + 1, &hints, &res) || !res)
        return -ENOENT;
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int net_addr_parse(const char *s, struct net_addr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port;
    if (!s || !*s)
        return -EINVAL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
            return -EINVAL;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        if (!strchr(host, ':'))
            return -EINVAL;     /* brackets are for IPv6 only */
        port = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof(host) || memchr(s, ':', (size_t)(colon - s)))
            return -EINVAL;     /* IPv6 needs brackets */
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port = colon + 1;
    }
    uint16_t p;
    if (parse_port(port, &p))
        return -EINVAL;
    int r = net_ip_parse(host, p, out);
    if (r)
        return r;
    if (s[0] != '[' && out->ss.ss_family != AF_INET)
        return -EINVAL;
    return 0;
}

void net_ip_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outlen);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)outlen);
    else
        snprintf(out, outlen, "?");
}

uint16_t net_addr_port(const struct net_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return 0;
}

void net_addr_format(const struct net_addr *a, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    net_ip_format((const struct sockaddr *)&a->ss, ip, sizeof(ip));
    if (a->ss.ss_family == AF_INET6)
        snprintf(out, outlen, "[%s]:%u", ip, net_addr_port(a));
    else
        snprintf(out, outlen, "%s:%u", ip, net_addr_port(a));
}

bool net_addr_eq(const struct net_addr *a, const struct net_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

int net_cidr_parse(const char *s, struct net_cidr *out)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t iplen = slash ? (size_t)(slash - s) : strlen(s);
    if (iplen == 0 || iplen >= sizeof(ip))
        return -EINVAL;
    memcpy(ip, s, iplen);
    ip[iplen] = '\0';
    memset(out, 0, sizeof(*out));
    int maxbits;
    if (inet_pton(AF_INET, ip, out->addr) == 1) {
        out->family = AF_INET;
        maxbits = 32;
    } else if (inet_pton(AF_INET6, ip, out->addr) == 1) {
        out->family = AF_INET6;
        maxbits = 128;
    } else {
        return -EINVAL;
    }
    unsigned bits = (unsigned)maxbits;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return -EINVAL;
        bits = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -EINVAL;
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > (unsigned)maxbits || (slash[1] == '0' && slash[2]))
            return -EINVAL;
    }
    out->prefix = (uint8_t)bits;
    /* Zero host bits so that matching compares whole bytes. */
    for (int i = 0; i < maxbits / 8; i++) {
        int keep = (int)bits - i * 8;
        if (keep >= 8)
            continue;
        out->addr[i] &= keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
    }
    return 0;
}

static bool prefix_match(const uint8_t *net, const uint8_t *a, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(net, a, full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == net[full];
}

bool net_cidr_match(const struct net_cidr *c, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        if (c->family != AF_INET)
            return false;
        return prefix_match(c->addr, (const uint8_t *)&in4->sin_addr, c->prefix);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a = in6->sin6_addr.s6_addr;
        if (c->family == AF_INET6)
            return prefix_match(c->addr, a, c->prefix);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return prefix_match(c->addr, a + 12, c->prefix);
    }
    return false;
}

int net_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
        return -errno;
    return 0;
}

int net_set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1)
        return -errno;
    return 0;
}

static int bound_socket(const struct net_addr *a, int type, bool reuseport)
{
    int fd = socket(a->ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
        goto fail;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        goto fail;
    if (a->ss.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
        goto fail;
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1)
        goto fail;
    return fd;
fail:;
    int e = -errno;
    close(fd);
    return e;
}

int net_listen_tcp(const struct net_addr *a, int backlog, bool reuseport)
{
    int fd = bound_socket(a, SOCK_STREAM, reuseport);
    if (fd < 0)
        return fd;
    if (listen(fd, backlog) == -1) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

int net_bind_udp(const struct net_addr *a, bool reuseport)
{
    return bound_socket(a, SOCK_DGRAM, reuseport);
}

int net_accept(int lfd, struct sockaddr_storage *peer)
{
    for (;;) {
        socklen_t sl = sizeof(*peer);
        int fd = accept4(lfd, (struct sockaddr *)peer, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno != EINTR && errno != ECONNABORTED)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

int net_connect_tcp(const struct net_addr *a)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    net_set_nodelay(fd);
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == -1 && errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}
