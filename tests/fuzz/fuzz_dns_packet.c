/* libFuzzer harness: DNS query parsing and the whole answer path (lookup,
 * compression, truncation, EDNS/ECS, GSLB selection callback) over a zone with
 * wildcards, delegations, CNAME chains and names of every type. */
#include "dns/dns_wire.h"
#include "dns/dns_zone.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char zone_text[] =
    "$ORIGIN f.test.\n$TTL 300\n"
    "@ SOA ns1 host 1 3600 600 86400 60\n@ NS ns1\n@ NS ns2.other.\n@ MX 10 mail\n"
    "ns1 A 192.0.2.1\nns1 AAAA 2001:db8::1\nmail A 192.0.2.2\n"
    "www CNAME web\nweb A 192.0.2.3\nloop1 CNAME loop2\nloop2 CNAME loop1\n"
    "*.w A 192.0.2.4\n*.w TXT \"x\"\n*.wc CNAME web\nsub NS ns.sub\nns.sub A 192.0.2.5\n"
    "srv SRV 1 2 3 web\nptr PTR web\ncaa CAA 0 issue \"x\"\nu TYPE9999 \\# 2 0102\n"
    "big TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n"
    "big TXT \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"\n"
    "big TXT \"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"\n"
    "big TXT \"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\"\n"
    "big TXT \"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\"\n"
    "big TXT \"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\"\n"
    "big TXT \"gggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg\"\n";

static struct dns_zone *zone;
static uint8_t *out;

static void gslb(void *arg, int idx, uint16_t qtype, const struct dns_query *q,
                 const struct sockaddr *peer, struct dns_gslb_answer *a)
{
    (void)arg;
    (void)idx;
    (void)peer;
    a->ttl = 5;
    a->n = q->qnamelen % 4;
    for (int i = 0; i < a->n; i++)
        memset(a->addr[i], i + 1, qtype == DNS_T_A ? 4 : 16);
    a->scope = q->ecs ? q->ecs_source : 0;
    a->fail = q->id % 7 == 0 ? 2 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!zone) {
        char err[256];
        if (dns_zone_load_text(&zone, "f.test", "f.zone", zone_text, sizeof(zone_text) - 1, false,
                               err, sizeof(err)))
            abort();
        struct dns_node *n = dns_zone_add_name(zone, (const uint8_t *)"\4gslb\1f\4test", 13);
        if (!n)
            abort();
        n->gslb = 0;
        out = malloc(65535);
    }
    struct dns_zone *zones[] = { zone };
    struct dns_view v = { .zones = zones, .nzones = 1, .gslb = gslb, .edns_size = 1232 };
    struct dns_query q;
    struct sockaddr_in peer = { .sin_family = AF_INET };
    int prc = dns_parse_query(data, size, &q);
    if (prc < 0)
        return 0;
    for (int tcp = 0; tcp < 2; tcp++) {
        struct dns_result res;
        size_t n = dns_answer(&v, &q, prc, (struct sockaddr *)&peer, tcp, out, 65535, &res);
        if (n < 12 || (!tcp && n > 1232 && n > q.udp_size))
            abort();
        /* what we write must parse as a message again (as a query, once QR is cleared) */
        out[2] &= 0x7f;
        struct dns_query back;
        if (dns_parse_query(out, n, &back) == -1)
            abort();
    }
    return 0;
}
