/* Unit tests for the alerts role's pure parts: fingerprints and label-set order as
 * Prometheus's model package computes them, the matcher syntax of alertmanager.yml
 * and amtool, RFC 3339 times, and the alertmanager.yml checks. */
#include "alerts/alerts_internal.h"
#include "test.h"

#include <stdlib.h>

static struct am_lset lset(const char *const *kv, size_t n)
{
    struct am_lset ls = { calloc(n + 1, sizeof(struct am_label)), n };
    for (size_t i = 0; i < n; i++) {
        ls.l[i].name = strdup(kv[2 * i]);
        ls.l[i].value = strdup(kv[2 * i + 1]);
    }
    am__lset_sort(&ls);
    return ls;
}

TEST(alerts_fingerprint_matches_alertmanager)
{
    /* values read from Debian's Alertmanager 0.25 for the same label sets */
    struct am_lset a = lset((const char *const[]){ "job", "x", "alertname", "Foo", "instance", "b" }, 3);
    char fp[20];
    snprintf(fp, sizeof(fp), "%016llx", (unsigned long long)am__lset_fingerprint(&a));
    CHECK_STR(fp, "f7d6bef386373708");
    struct am_lset e = { NULL, 0 };
    CHECK(am__lset_fingerprint(&e) == 14695981039346656037ull);
    struct buf b = BUF_INIT;
    am__lset_format(&b, &a);
    buf_putc(&b, 0);
    CHECK_STR(buf_head(&b), "{alertname=\"Foo\", instance=\"b\", job=\"x\"}");
    buf_free(&b);
    am__lset_free(&a);
}

TEST(alerts_lset_before)
{
    struct am_lset a = lset((const char *const[]){ "a", "1" }, 1);
    struct am_lset b = lset((const char *const[]){ "a", "1", "b", "2" }, 2);
    struct am_lset c = lset((const char *const[]){ "a", "2" }, 1);
    struct am_lset d = lset((const char *const[]){ "b", "0" }, 1);
    CHECK(am__lset_before(&a, &b));     /* fewer labels first */
    CHECK(!am__lset_before(&b, &a));
    CHECK(am__lset_before(&a, &c));     /* then by value */
    CHECK(am__lset_before(&d, &a));     /* a lacks "b"... d lacks "a": the set without the
                                           smaller name wins */
    CHECK(!am__lset_before(&a, &a));
    am__lset_free(&a);
    am__lset_free(&b);
    am__lset_free(&c);
    am__lset_free(&d);
}

TEST(alerts_matchers_parse)
{
    struct am_matchers ms;
    char err[300];
    CHECK_INT(am__matchers_parse("{alertname=\"Foo\", severity=~\"crit.*\",team!=ops , x!~\"a\\\"b\"}",
                                 &ms, err, sizeof(err)), 0);
    CHECK_INT(ms.n, 4);
    CHECK_STR(ms.m[0].value, "Foo");
    CHECK_INT(ms.m[1].type, AM_RE);
    CHECK_STR(ms.m[2].value, "ops");
    CHECK_INT(ms.m[2].type, AM_NE);
    CHECK_STR(ms.m[3].value, "a\"b");
    CHECK(am__matcher_matches(&ms.m[1], "critical"));
    CHECK(!am__matcher_matches(&ms.m[1], "xcritical"));     /* anchored */
    CHECK(!am__matcher_matches(&ms.m[1], "crit\n"));        /* RE2's . has no newline */
    struct buf b = BUF_INIT;
    am__matchers_sort(&ms);
    am__matchers_format(&b, &ms);
    buf_putc(&b, 0);
    CHECK_STR(buf_head(&b), "{alertname=\"Foo\",severity=~\"crit.*\",team!=\"ops\",x!~\"a\\\"b\"}");
    buf_free(&b);
    am__matchers_free(&ms);
    CHECK(am__matchers_parse("a=\"x", &ms, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "unescaped double quote");
    CHECK(am__matchers_parse("1a=b", &ms, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "bad matcher format");
    CHECK(am__matchers_parse("a=~\"(\"", &ms, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "regexp");
    CHECK_INT(am__matchers_parse("", &ms, err, sizeof(err)), 0);
    CHECK_INT(ms.n, 0);
    am__matchers_free(&ms);
}

TEST(alerts_times)
{
    int64_t ns;
    CHECK_INT(am__time_parse("2026-11-26T22:54:04.2585Z", &ns), 0);
    struct buf b = BUF_INIT;
    am__time_format(&b, ns);
    buf_putc(&b, 0);
    CHECK_STR(buf_head(&b), "2026-11-26T22:54:04.2585Z");
    buf_free(&b);
    int64_t off;
    CHECK_INT(am__time_parse("2026-11-26T23:54:04.2585+01:00", &off), 0);
    CHECK(off == ns);
    CHECK_INT(am__time_parse("0001-01-01T00:00:00Z", &ns), 0);
    CHECK(ns == 0);
    CHECK(am__time_parse("2026-11-26 22:54", &ns) != 0);
    CHECK(am__time_parse("2026-13-26T22:54:04Z", &ns) != 0);
    CHECK(am__time_parse("2026-11-26T22:54:04", &ns) != 0);
}

static int parse_text(const char *text, struct am_conf *ac, struct cfg_errors *errs)
{
    struct cfg c;
    memset(&c, 0, sizeof(c));
    memset(ac, 0, sizeof(*ac));
    int r = cfg_load_string(&c, "am.yml", text, strlen(text), errs);
    if (r == 0)
        r = am__parse_alertmanager(&c, cfg_root(&c), "alertmanager", ".", ac);
    cfg_free(&c);
    return r;
}

TEST(alerts_config_routes)
{
    struct am_conf *ac = calloc(1, sizeof(*ac));
    struct cfg_errors errs = { 0 };
    CHECK_INT(parse_text("route:\n  receiver: a\n  group_by: [job, alertname]\n  routes:\n"
                         "    - matchers: ['team=\"db\"']\n      receiver: b\n      continue: true\n"
                         "    - match_re: {sev: crit}\n"
                         "receivers: [{name: a}, {name: b}]\n", ac, &errs), 0);
    CHECK_INT(errs.n, 0);
    CHECK_STR(ac->route->routes[0].key, "{}/{team=\"db\"}");
    CHECK_STR(ac->route->routes[1].key, "{}/{sev=~\"^(?:crit)$\"}");
    CHECK_STR(ac->route->routes[1].receiver, "a");          /* inherited */
    CHECK_STR(ac->route->routes[0].group_by[0], "alertname");    /* sorted */
    CHECK_INT(ac->route->routes[0].group_wait_ms, 30000);
    struct am_lset ls = lset((const char *const[]){ "team", "db", "sev", "crit" }, 2);
    struct am_route *out[8];
    CHECK_INT(am__route_match(ac->route, &ls, out, 8), 2);  /* continue: both children */
    am__lset_free(&ls);
    am__free_conf(ac);
    cfg_errors_free(&errs);

    ac = calloc(1, sizeof(*ac));
    CHECK(parse_text("route:\n  receiver: x\n  continue: true\n  group_by: [a, a]\nreceivers: [{name: a}]\n",
                     ac, &errs) != 0);
    CHECK(errs.n >= 2);
    CHECK_CONTAINS(errs.msgs[0], "am.yml:");
    am__free_conf(ac);
    cfg_errors_free(&errs);
}

TEST(alerts_time_intervals)
{
    struct am_conf *ac = calloc(1, sizeof(*ac));
    struct cfg_errors errs = { 0 };
    CHECK_INT(parse_text("route: {receiver: a}\nreceivers: [{name: a}]\ntime_intervals:\n"
                         "  - name: w\n    time_intervals:\n"
                         "      - {weekdays: ['monday:friday'], times: [{start_time: '09:00', end_time: '17:00'}]}\n"
                         "  - name: last\n    time_intervals: [{days_of_month: ['-1']}]\n",
                         ac, &errs), 0);
    int64_t thu_10 = 1795687200LL * 1000000000;   /* 2026-11-26 (Thursday) 10:00 UTC */
    int64_t thu_18 = thu_10 + 8LL * 3600 * 1000000000;
    int64_t sat_10 = thu_10 + 2LL * 86400 * 1000000000;
    int64_t nov_30 = thu_10 + 4LL * 86400 * 1000000000;
    CHECK(am__interval_contains(am__interval_find(ac, "w"), thu_10));
    CHECK(!am__interval_contains(am__interval_find(ac, "w"), thu_18));
    CHECK(!am__interval_contains(am__interval_find(ac, "w"), sat_10));
    CHECK(am__interval_contains(am__interval_find(ac, "last"), nov_30));
    CHECK(!am__interval_contains(am__interval_find(ac, "last"), thu_10));
    am__free_conf(ac);
    cfg_errors_free(&errs);
}
