/* Unit tests: DNS names, the zone-file parser, query parsing and answers. */
#include "dns/dns_wire.h"
#include "dns/dns_zone.h"
#include "test.h"

#include <arpa/inet.h>
#include <stdlib.h>

static const char zone_text[] =
    "$ORIGIN t.test.\n"
    "$TTL 1h\n"
    "@ IN SOA ns1 host ( 7 3600 600\n 86400 ; comment\n 120 )\n"
    "  NS ns1\n"
    "  MX 10 mail\n"
    "ns1 300 IN A 192.0.2.1\n"
    "www IN CNAME web\n"
    "web A 192.0.2.2\n"
    "web A 192.0.2.2\n"                  /* a duplicate is dropped */
    "web IN 60 AAAA 2001:db8::2\n"       /* class and TTL in either order */
    "*.w TXT \"wild \\\"card\\\"\" \\065b\n"
    "a.b.c A 192.0.2.3\n"
    "sub NS ns.sub\n"
    "ns.sub A 192.0.2.4\n"
    "x\\.y A 192.0.2.5\n"
    "u TYPE65000 \\# 3 abcdef\n"
    "c CAA 0 issue \"ca.example\"\n";

static struct dns_zone *load(void)
{
    struct dns_zone *z = NULL;
    char err[256];
    int r = dns_zone_load_text(&z, "t.test", "t.zone", zone_text, sizeof(zone_text) - 1, false, err,
                               sizeof(err));
    if (r)
        fprintf(stderr, "zone: %s\n", err);
    return z;
}

TEST(dns_name_text)
{
    uint8_t w[DNS_NAME_MAX];
    const char *msg;
    static const uint8_t org[] = "\1t\4test";
    CHECK_INT(dns_name_from_text("www", 3, org, sizeof(org), w, &msg), 4 + sizeof(org));
    CHECK(memcmp(w, "\3www\1t\4test\0", 12) == 0);
    CHECK_INT(dns_name_from_text("a\\.b.", 5, NULL, 0, w, &msg), 5);
    CHECK(memcmp(w, "\3a.b\0", 5) == 0);
    CHECK_INT(dns_name_from_text("\\065.", 5, NULL, 0, w, &msg), 3);
    CHECK(w[1] == 'A');
    CHECK_INT(dns_name_from_text("a..b.", 5, NULL, 0, w, &msg), -1);
    CHECK_INT(dns_name_from_text("\\256.", 5, NULL, 0, w, &msg), -1);
    char big[300];
    memset(big, 'a', 64);
    big[64] = '.';
    CHECK_INT(dns_name_from_text(big, 65, NULL, 0, w, &msg), -1);
    char t[64];
    dns_name_to_text((const uint8_t *)"\3a.b\1c\0", t, sizeof(t));
    CHECK_STR(t, "a\\.b.c.");
}

TEST(dns_zone_parse)
{
    struct dns_zone *z = load();
    CHECK(z != NULL);
    if (!z)
        return;
    CHECK_INT(z->serial, 7);
    CHECK_INT(z->neg_ttl, 120);
    CHECK_INT(z->nrecords, 14);
    const struct dns_node *n = dns_zone_find(z, (const uint8_t *)"\3web\1t\4test", 12);
    CHECK(n != NULL);
    if (n) {
        const struct dns_rrset *a = dns_node_rrset(n, DNS_T_A);
        CHECK(a && a->nrr == 1 && a->ttl == 3600);
        const struct dns_rrset *aaaa = dns_node_rrset(n, DNS_T_AAAA);
        CHECK(aaaa && aaaa->ttl == 60);
    }
    /* empty non-terminals exist; the delegation is known below the cut */
    CHECK(dns_zone_find(z, (const uint8_t *)"\1b\1c\1t\4test", 12) != NULL);
    const struct dns_node *ns = dns_zone_find(z, (const uint8_t *)"\2ns\3sub\1t\4test", 15);
    CHECK(ns && ns->cut && ns->cut != ns);
    const struct dns_node *w = dns_zone_find(z, (const uint8_t *)"\1w\1t\4test", 10);
    CHECK(w && w->wild);
    dns_zone_free(z);
}

static void zone_error(const char *text, const char *want)
{
    struct dns_zone *z = NULL;
    char err[256] = "";
    int r = dns_zone_load_text(&z, "t.test", "t.zone", text, strlen(text), false, err, sizeof(err));
    CHECK_INT(r, -22);
    if (!strstr(err, want))
        test_fail(__FILE__, __LINE__, "error \"%s\" lacks \"%s\"", err, want);
    dns_zone_free(z);
}

TEST(dns_zone_errors)
{
    static const char head[] = "$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\n";
    char t[512];
    snprintf(t, sizeof(t), "%sx A 1.2.3.4.5\n", head);
    zone_error(t, "t.zone:4: A: bad IPv4 address");
    snprintf(t, sizeof(t), "%sx CNAME a\nx A 1.2.3.4\n", head);
    zone_error(t, "t.zone:5: CNAME and other data");
    snprintf(t, sizeof(t), "%sx.other. A 1.2.3.4\n", head);
    zone_error(t, "t.zone:4: x.other. is outside the zone");
    snprintf(t, sizeof(t), "%sx ( A\n1.2.3.4\n", head);
    zone_error(t, "unbalanced parenthesis");
    snprintf(t, sizeof(t), "%sx TXT \"open\n", head);
    zone_error(t, "unterminated quoted string");
    snprintf(t, sizeof(t), "%sx NAPTR 1 2 \"\" \"\" \"\" .\n", head);
    zone_error(t, "unknown record type NAPTR");
    snprintf(t, sizeof(t), "%sx TYPE999 \\# 2 abcdef\n", head);
    zone_error(t, "\\# length does not match");
    snprintf(t, sizeof(t), "%s$INCLUDE /etc/passwd\n", head);
    zone_error(t, "$INCLUDE is not allowed here");
    zone_error("$TTL 60\n@ NS ns\n", "no SOA record");
    zone_error("x A 1.2.3.4\n", "t.zone:1: no TTL given");
}

/* ---- answers ---- */

struct parsed {
    int rcode, an, ns, ar;
    bool aa, tc;
};

static struct parsed ask(const struct dns_view *v, const char *name, uint16_t type, bool edns,
                         bool tcp, uint8_t *out, size_t *outlen)
{
    uint8_t pkt[512];
    size_t n = 12;
    memset(pkt, 0, 12);
    pkt[0] = 0xab;
    pkt[1] = 0xcd;
    pkt[5] = 1;
    const char *msg;
    int l = dns_name_from_text(name, strlen(name), NULL, 0, pkt + n, &msg);
    n += (size_t)l;
    pkt[n++] = (uint8_t)(type >> 8);
    pkt[n++] = (uint8_t)type;
    pkt[n++] = 0;
    pkt[n++] = 1;
    if (edns) {
        static const uint8_t opt[] = { 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0 };
        memcpy(pkt + n, opt, sizeof(opt));
        n += sizeof(opt);
        pkt[11] = 1;
    }
    struct dns_query q;
    int prc = dns_parse_query(pkt, n, &q);
    struct sockaddr_in peer = { .sin_family = AF_INET };
    struct dns_result res;
    *outlen = dns_answer(v, &q, prc, (struct sockaddr *)&peer, tcp, out, 65535, &res);
    struct parsed p = {
        .rcode = out[3] & 0xf, .an = out[7], .ns = out[9], .ar = out[11],
        .aa = (out[2] & 4) != 0, .tc = (out[2] & 2) != 0,
    };
    return p;
}

TEST(dns_answers)
{
    struct dns_zone *z = load();
    CHECK(z != NULL);
    if (!z)
        return;
    struct dns_zone *zones[] = { z };
    struct dns_view v = { .zones = zones, .nzones = 1, .edns_size = 1232 };
    uint8_t *out = malloc(65535);
    size_t len;
    struct parsed p = ask(&v, "WWW.t.test.", DNS_T_A, false, false, out, &len);
    CHECK_INT(p.rcode, 0);
    CHECK(p.aa);
    CHECK_INT(p.an, 2);                 /* the CNAME and the A record it leads to */
    /* the answer's owner is a pointer to the question (its case kept) */
    CHECK(out[12 + 12 + 4] == 0xc0 && out[12 + 12 + 5] == 12);
    CHECK(memcmp(out + 13, "WWW", 3) == 0);
    p = ask(&v, "nope.t.test.", DNS_T_A, true, false, out, &len);
    CHECK_INT(p.rcode, 3);
    CHECK_INT(p.ns, 1);
    CHECK_INT(p.ar, 1);                 /* OPT */
    p = ask(&v, "b.c.t.test.", DNS_T_A, false, false, out, &len);
    CHECK_INT(p.rcode, 0);
    CHECK_INT(p.an, 0);
    CHECK_INT(p.ns, 1);                 /* NODATA at an empty non-terminal */
    p = ask(&v, "x.y.sub.t.test.", DNS_T_A, false, false, out, &len);
    CHECK(!p.aa);
    CHECK_INT(p.ns, 1);
    CHECK_INT(p.ar, 1);                 /* glue */
    p = ask(&v, "anything.w.t.test.", DNS_T_TXT, false, false, out, &len);
    CHECK_INT(p.an, 1);
    p = ask(&v, "other.test.", DNS_T_A, false, false, out, &len);
    CHECK_INT(p.rcode, 5);
    CHECK(!p.aa);
    p = ask(&v, "t.test.", DNS_T_ANY, false, false, out, &len);
    CHECK_INT(p.an, 1);                 /* RFC 8482: one RRset */
    free(out);
    dns_zone_free(z);
}

TEST(dns_parse_limits)
{
    struct dns_query q;
    uint8_t pkt[64] = { 0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 };
    CHECK_INT(dns_parse_query(pkt, 5, &q), -1);
    /* a pointer to itself */
    pkt[12] = 0xc0;
    pkt[13] = 12;
    CHECK_INT(dns_parse_query(pkt, 18, &q), DNS_R_FORMERR);
    /* a label running past the end */
    pkt[12] = 40;
    CHECK_INT(dns_parse_query(pkt, 20, &q), DNS_R_FORMERR);
    /* a response is never answered */
    pkt[2] = 0x80;
    CHECK_INT(dns_parse_query(pkt, 20, &q), -1);
    /* opcode 2 (STATUS) */
    pkt[2] = 2 << 3;
    CHECK_INT(dns_parse_query(pkt, 20, &q), DNS_R_NOTIMP);
}
