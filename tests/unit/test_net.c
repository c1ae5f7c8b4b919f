#include "core/net.h"
#include "test.h"

#include <arpa/inet.h>
#include <unistd.h>

TEST(net_addr_parse_good)
{
    struct net_addr a;
    char s[NET_ADDRSTRLEN];
    CHECK_INT(net_addr_parse("127.0.0.1:8080", &a), 0);
    CHECK_INT(a.ss.ss_family, AF_INET);
    CHECK_INT(net_addr_port(&a), 8080);
    net_addr_format(&a, s, sizeof(s));
    CHECK_STR(s, "127.0.0.1:8080");
    CHECK_INT(net_addr_parse("[::1]:53", &a), 0);
    CHECK_INT(a.ss.ss_family, AF_INET6);
    net_addr_format(&a, s, sizeof(s));
    CHECK_STR(s, "[::1]:53");
    CHECK_INT(net_addr_parse("0.0.0.0:65535", &a), 0);
}

TEST(net_addr_parse_bad)
{
    static const char *const bad[] = {
        "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:80x",
        "::1:53", "[::1]53", "[127.0.0.1]:80", "localhost:80", " 127.0.0.1:80",
        "127.0.0.1:080", "[::1]:", "1.2.3:80", "127.0.0.1:-1",
    };
    struct net_addr a;
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (net_addr_parse(bad[i], &a) == 0)
            test_fail(__FILE__, __LINE__, "accepted bad address \"%s\"", bad[i]);
}

static struct sockaddr_storage ip(const char *s)
{
    struct net_addr a;
    net_ip_parse(s, 1, &a);
    return a.ss;
}

TEST(net_cidr_match)
{
    struct net_cidr c;
    CHECK_INT(net_cidr_parse("10.0.0.0/8", &c), 0);
    struct sockaddr_storage x = ip("10.200.3.4"), y = ip("11.0.0.1");
    CHECK(net_cidr_match(&c, (struct sockaddr *)&x));
    CHECK(!net_cidr_match(&c, (struct sockaddr *)&y));
    struct sockaddr_storage m = ip("::ffff:10.1.2.3");
    CHECK(net_cidr_match(&c, (struct sockaddr *)&m));

    CHECK_INT(net_cidr_parse("192.168.1.77/26", &c), 0);   /* host bits cleared */
    struct sockaddr_storage in = ip("192.168.1.100"), out = ip("192.168.1.128");
    CHECK(net_cidr_match(&c, (struct sockaddr *)&in));
    CHECK(!net_cidr_match(&c, (struct sockaddr *)&out));

    CHECK_INT(net_cidr_parse("2001:db8::/32", &c), 0);
    struct sockaddr_storage v6 = ip("2001:db8:1::5"), v6b = ip("2001:db9::1");
    CHECK(net_cidr_match(&c, (struct sockaddr *)&v6));
    CHECK(!net_cidr_match(&c, (struct sockaddr *)&v6b));
    CHECK(!net_cidr_match(&c, (struct sockaddr *)&x));

    CHECK_INT(net_cidr_parse("0.0.0.0/0", &c), 0);
    CHECK(net_cidr_match(&c, (struct sockaddr *)&y));
    CHECK_INT(net_cidr_parse("::/0", &c), 0);
    CHECK(net_cidr_match(&c, (struct sockaddr *)&v6));
    CHECK_INT(net_cidr_parse("1.2.3.4", &c), 0);
    CHECK_INT(c.prefix, 32);
}

TEST(net_cidr_parse_bad)
{
    static const char *const bad[] = { "", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x",
                                       "10.0.0/8", "/8", "10.0.0.0/08", "foo" };
    struct net_cidr c;
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (net_cidr_parse(bad[i], &c) == 0)
            test_fail(__FILE__, __LINE__, "accepted bad CIDR \"%s\"", bad[i]);
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &l);
    return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                   : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

TEST(net_listen_reuseport_v4_v6)
{
    struct net_addr a;
    net_addr_parse("127.0.0.1:1", &a);
    ((struct sockaddr_in *)&a.ss)->sin_port = 0;
    int fd1 = net_listen_tcp(&a, 16, true);
    CHECK(fd1 >= 0);
    uint16_t port = bound_port(fd1);
    ((struct sockaddr_in *)&a.ss)->sin_port = htons(port);
    int fd2 = net_listen_tcp(&a, 16, true);      /* a second worker's socket */
    CHECK(fd2 >= 0);
    int fd3 = net_listen_tcp(&a, 16, false);     /* without SO_REUSEPORT: in use */
    CHECK(fd3 < 0);
    close(fd1);
    close(fd2);

    struct net_addr b;
    net_addr_parse("[::1]:1", &b);
    ((struct sockaddr_in6 *)&b.ss)->sin6_port = 0;
    int fd6 = net_listen_tcp(&b, 16, true);
    CHECK(fd6 >= 0);
    if (fd6 >= 0)
        close(fd6);
}
