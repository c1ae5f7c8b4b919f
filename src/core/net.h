/* net.h - socket addresses, CIDR prefixes, listeners and connects.
 *
 * Addresses are literal IPs with a port: "127.0.0.1:8080", "[::1]:53". No name
 * resolution happens here. Every socket is created non-blocking and close-on-exec.
 */
#ifndef CAIRN_NET_H
#define CAIRN_NET_H

#include "core/common.h"
#include <netinet/in.h>
#include <sys/socket.h>

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

#define NET_ADDRSTRLEN 64

/* Parses "IPv4:port" or "[IPv6]:port" strictly (port 1..65535, no names, no
 * spaces). Returns 0 or -EINVAL. */
int net_addr_parse(const char *s, struct net_addr *out);
/* "host:port" where host is a literal IP or a name, looked up now (blocking: at
 * load or start, never on a loop's hot path). Returns 0, -EINVAL when malformed,
 * -ENOENT when the name does not resolve. */
int net_resolve(const char *hostport, struct net_addr *out);
/* Parses a literal IP (no port) into out with the given port. */
int net_ip_parse(const char *s, uint16_t port, struct net_addr *out);
/* Writes "ip:port" / "[ip]:port". */
void net_addr_format(const struct net_addr *a, char *out, size_t outlen);
/* Writes the IP alone. */
void net_ip_format(const struct sockaddr *sa, char *out, size_t outlen);
uint16_t net_addr_port(const struct net_addr *a);
bool net_addr_eq(const struct net_addr *a, const struct net_addr *b);

/* A CIDR prefix ("10.0.0.0/8", "::/0", or a single address meaning /32 or /128). */
struct net_cidr {
    int family;             /* AF_INET or AF_INET6 */
    uint8_t addr[16];       /* network address, host bits zeroed */
    uint8_t prefix;
};
int net_cidr_parse(const char *s, struct net_cidr *out);
/* True when sa lies in c. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4
 * prefixes. */
bool net_cidr_match(const struct net_cidr *c, const struct sockaddr *sa);

/* A listening TCP socket; SO_REUSEPORT lets each worker thread own one. */
int net_listen_tcp(const struct net_addr *a, int backlog, bool reuseport);
int net_bind_udp(const struct net_addr *a, bool reuseport);
/* Starts a non-blocking connect; returns the fd (connect may be in progress). */
/* Accepts one connection on a listening socket, non-blocking and close-on-exec,
 * retrying EINTR and connections aborted before their accept. Returns the fd with
 * the peer in *peer, or a negated errno (-EAGAIN: none waiting; EMFILE and the
 * like: come back on the next readiness). */
int net_accept(int lfd, struct sockaddr_storage *peer);
int net_connect_tcp(const struct net_addr *a);
int net_set_nonblock(int fd);
int net_set_nodelay(int fd);

#endif
