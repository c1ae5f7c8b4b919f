/* dns: GSLB answer selection (dns__gslb_select) from a stack file's gslb: names -
 * the nearest pool by client network or EDNS Client Subnet, failover to the next
 * pool, weights, max_answers, and when_all_down. */
#include "core/stack.h"
#include "dns/dns.h"
#include "dns/dns_internal.h"
#include "test.h"

#include <arpa/inet.h>
#include <stdlib.h>

struct gslb_fixture {
    struct stack st;
    struct dns_svc s;
    struct dns_gen g;
    struct dns_worker w;
    struct dns_zone *zone;
};

static bool setup(struct gslb_fixture *f, const char *gslb_yaml)
{
    static const struct role_ops *const roles[] = { &dns_role, NULL };
    memset(f, 0, sizeof(*f));
    char text[2048];
    snprintf(text, sizeof(text),
             "services:\n  dns:\n    role: dns\n    listen: [\"127.0.0.1:5399\"]\n"
             "    zones: [{origin: example.test}]\n    gslb:\n%s", gslb_yaml);
    struct cfg_errors e = { 0 };
    if (stack_load(&f->st, "g.yaml", text, roles, &e)) {
        for (size_t i = 0; i < e.n; i++)
            fprintf(stderr, "  | %s\n", e.msgs[i]);
        cfg_errors_free(&e);
        return false;
    }
    cfg_errors_free(&e);
    f->s.reg = metrics_registry_new();
    static const char *const l_member[] = { "name", "region", "member", NULL };
    f->s.m_member_up = metrics_family(f->s.reg, METRIC_GAUGE, "m", "h", l_member, NULL, 0);
    struct dns_conf *conf = f->st.services[0].conf;
    char err[256];
    if (dns_zone_load(&f->zone, "example.test", NULL, "127.0.0.1", err, sizeof(err)))
        return false;
    f->g.s = &f->s;
    f->g.conf = conf;
    f->g.zones = &f->zone;
    f->g.nzones = 1;
    if (dns__gslb_build(&f->s, &f->g, err, sizeof(err))) {
        fprintf(stderr, "  | %s\n", err);
        return false;
    }
    f->s.gen = &f->g;
    f->w.s = &f->s;
    f->w.gen = &f->g;
    f->w.rng = 42;
    return true;
}

static void teardown(struct gslb_fixture *f)
{
    dns__gslb_release(&f->s, &f->g);
    dns_zone_free(f->zone);
    metrics_registry_free(&f->s.reg);
    stack_free(&f->st);
}

/* The answer to a client at ip (ecs: its EDNS Client Subnet, or NULL) as
 * dotted quads joined by spaces, sorted. */
static const char *answer(struct gslb_fixture *f, const char *ip, const char *ecs, char *out, size_t outlen)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    inet_pton(AF_INET, ip, &sin.sin_addr);
    struct dns_query q;
    memset(&q, 0, sizeof(q));
    q.qtype = DNS_T_A;
    if (ecs) {
        q.ecs = true;
        q.ecs_family = 1;
        inet_pton(AF_INET, ecs, q.ecs_addr);
        q.ecs_source = 24;
    }
    struct dns_gslb_answer a;
    memset(&a, 0, sizeof(a));
    dns__gslb_select(&f->w, 0, DNS_T_A, &q, (const struct sockaddr *)&sin, &a);
    char ips[DNS_GSLB_MAX_ANSWERS][16];
    for (int i = 0; i < a.n; i++)
        inet_ntop(AF_INET, a.addr[i], ips[i], sizeof(ips[i]));
    qsort(ips, (size_t)a.n, sizeof(ips[0]), (int (*)(const void *, const void *))strcmp);
    out[0] = 0;
    if (a.fail)
        snprintf(out, outlen, a.fail == 2 ? "SERVFAIL" : "NODATA");
    for (int i = 0; i < a.n; i++)
        snprintf(out + strlen(out), outlen - strlen(out), "%s%s", i ? " " : "", ips[i]);
    return out;
}

static struct dns_member *member(struct gslb_fixture *f, size_t pool, size_t k)
{
    return f->g.gslb[0].pools[pool].members[k];
}

TEST(gslb_nearest_by_network_and_ecs_then_failover)
{
    struct gslb_fixture f;
    CHECK(setup(&f, "      - name: app.example.test\n"
                    "        policy: nearest\n"
                    "        pools:\n"
                    "          - {region: eu, networks: [\"10.1.0.0/16\"], members: [192.0.2.1, 192.0.2.2]}\n"
                    "          - {region: us, networks: [\"10.2.0.0/16\"], members: [198.51.100.1]}\n"));
    char buf[256];
    CHECK_STR(answer(&f, "10.1.2.3", NULL, buf, sizeof(buf)), "192.0.2.1 192.0.2.2");
    CHECK_STR(answer(&f, "10.2.2.3", NULL, buf, sizeof(buf)), "198.51.100.1");
    /* a resolver in eu asking for a client in us: the ECS address decides */
    CHECK_STR(answer(&f, "10.1.2.3", "10.2.9.0", buf, sizeof(buf)), "198.51.100.1");
    /* a client in no pool's networks gets the first pool */
    CHECK_STR(answer(&f, "172.16.0.1", NULL, buf, sizeof(buf)), "192.0.2.1 192.0.2.2");
    /* eu down: its clients fail over to us */
    member(&f, 0, 0)->up = 0;
    member(&f, 0, 1)->up = 0;
    CHECK_STR(answer(&f, "10.1.2.3", NULL, buf, sizeof(buf)), "198.51.100.1");
    /* everything down: fail open (the default `answer`) with every member */
    member(&f, 1, 0)->up = 0;
    CHECK_STR(answer(&f, "10.1.2.3", NULL, buf, sizeof(buf)), "192.0.2.1 192.0.2.2");
    teardown(&f);
}

TEST(gslb_when_all_down_and_max_answers)
{
    struct gslb_fixture f;
    CHECK(setup(&f, "      - name: app.example.test\n"
                    "        max_answers: 2\n"
                    "        when_all_down: servfail\n"
                    "        pools:\n"
                    "          - {region: eu, members: [192.0.2.1, 192.0.2.2, 192.0.2.3, 192.0.2.4]}\n"));
    char buf[256];
    /* at most max_answers, rotating over the healthy members */
    int seen[5] = { 0 };
    for (int i = 0; i < 40; i++) {
        answer(&f, "10.0.0.1", NULL, buf, sizeof(buf));
        CHECK(strlen(buf) > 0 && strchr(buf, ' ') && !strchr(strchr(buf, ' ') + 1, ' '));
        for (int k = 1; k <= 4; k++) {
            char ip[16];
            snprintf(ip, sizeof(ip), "192.0.2.%d", k);
            seen[k] += strstr(buf, ip) != NULL;
        }
    }
    for (int k = 1; k <= 4; k++)
        CHECK(seen[k] > 0);
    for (size_t k = 0; k < 4; k++)
        member(&f, 0, k)->up = 0;
    CHECK_STR(answer(&f, "10.0.0.1", NULL, buf, sizeof(buf)), "SERVFAIL");
    teardown(&f);
}

TEST(gslb_weighted)
{
    struct gslb_fixture f;
    CHECK(setup(&f, "      - name: app.example.test\n"
                    "        policy: weighted\n"
                    "        max_answers: 1\n"
                    "        pools:\n"
                    "          - {region: a, members: [{address: 192.0.2.1, weight: 9}, {address: 192.0.2.2, weight: 1}]}\n"));
    char buf[256];
    int heavy = 0;
    for (int i = 0; i < 1000; i++)
        heavy += strcmp(answer(&f, "10.0.0.1", NULL, buf, sizeof(buf)), "192.0.2.1") == 0;
    CHECK(heavy > 800 && heavy < 980);
    teardown(&f);
}

TEST(gslb_failover_ignores_networks)
{
    struct gslb_fixture f;
    CHECK(setup(&f, "      - name: app.example.test\n"
                    "        policy: failover\n"
                    "        pools:\n"
                    "          - {region: eu, networks: [\"10.1.0.0/16\"], members: [192.0.2.1]}\n"
                    "          - {region: us, networks: [\"10.2.0.0/16\"], members: [198.51.100.1]}\n"));
    char buf[256];
    CHECK_STR(answer(&f, "10.2.2.3", NULL, buf, sizeof(buf)), "192.0.2.1");
    member(&f, 0, 0)->up = 0;
    CHECK_STR(answer(&f, "10.2.2.3", NULL, buf, sizeof(buf)), "198.51.100.1");
    teardown(&f);
}
