/* Unit tests for LogQL (src/core/logql_*.c) and the hash map (src/core/hmap.c):
 * parse errors with Loki's messages, the canonical printer, the pipeline over
 * single lines, Go durations and byte sizes, and the evaluator over a small
 * in-memory source. */
#include "core/hmap.h"
#include "core/logql_eval.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>

static char err[1024];

static struct lq_query *parse(const char *q)
{
    struct lq_query *out = NULL;
    if (lq_parse(q, strlen(q), &out, err, sizeof(err)))
        return NULL;
    return out;
}

static void check_format(const char *q, const char *want)
{
    struct lq_query *p = parse(q);
    CHECK(p != NULL);
    if (!p) {
        test_fail(__FILE__, __LINE__, "parse %s: %s", q, err);
        return;
    }
    struct buf b = { 0 };
    lq_format(&b, p->root);
    buf_putc(&b, 0);
    if (strcmp(buf_head(&b), want))
        test_fail(__FILE__, __LINE__, "format(%s) = %s, want %s", q, buf_head(&b), want);
    buf_free(&b);
    lq_query_free(&p);
}

static void check_error(const char *q, const char *want)
{
    struct lq_query *p = parse(q);
    if (p) {
        test_fail(__FILE__, __LINE__, "%s parsed, expected an error with %s", q, want);
        lq_query_free(&p);
        return;
    }
    if (!strstr(err, want))
        test_fail(__FILE__, __LINE__, "%s: error %s lacks %s", q, err, want);
}

TEST(logql_parse_and_format)
{
    check_format("{app=\"a\"}", "{app=\"a\"}");
    check_format("sum by(app)(rate({app=\"a\"}|=\"x\"[5m]))", "sum by (app)(rate({app=\"a\"} |= \"x\"[5m]))");
    check_format("1 + 2 * 3 ^ 2 ^ 2", "(1 + (2 * (3 ^ (2 ^ 2))))");
    check_format("count_over_time({a=\"b\"} | logfmt | took > 1m30s and size < 2KB [1m] offset 5m)",
                 "count_over_time({a=\"b\"} | logfmt | (took>1m30s and size<2000B)[1m] offset 5m)");
    check_format("quantile_over_time(0.9, {a=\"b\"} | json | unwrap duration(d) | __error__=\"\" [1m]) by (x)",
                 "quantile_over_time(0.9, {a=\"b\"} | json | unwrap duration(d) | __error__=\"\"[1m]) by (x)");
}

TEST(logql_parse_errors)
{
    check_error("{app=\"a\"", "syntax error");
    check_error("0x1A", "unable to parse literal as a float");
    check_error("1 and 2", "unexpected literal for left leg of logical/set binary operation");
    check_error("-count_over_time({a=\"b\"}[1m])", "expecting NUMBER");
    check_error("count_over_time({a=\"b\"} | unwrap x [1m])", "invalid aggregation count_over_time with unwrap");
    check_error("avg_over_time({a=\"b\"}[1m])", "invalid aggregation avg_over_time without unwrap");
    check_error("rate({a=\"b\"}[1m]) by (x)", "grouping not allowed for rate aggregation");
    check_error("{a=\"b\"} | x == ip(\"1.2.3.4\")", "syntax error: unexpected ip");
    check_error("{a=\"b\"} |~ ip(\"1.2.3.4\")", "ip: invalid operation");
    check_error("{a=\"b\"} |= ip(\"bogus\")", "ip: invalid pattern");
    check_error("{a=\"b\"} |> \"<x> y\"", "named captures are not allowed");
    check_error("{a=~\"(\"}", "error parsing regexp");
    check_error("topk(1.5, count_over_time({a=\"b\"}[1m]))", "invalid parameter");
    check_error("{a=~\".*\"}", "at least one regexp or equality matcher");
}

static bool run(const char *q, const char *line, struct lq_lb *lb, const char **out, size_t *n)
{
    struct lq_query *p = parse(q);
    if (!p) {
        test_fail(__FILE__, __LINE__, "parse %s: %s", q, err);
        return false;
    }
    static struct lq_label base[] = { { "app", "a" } };
    struct lq_labels bl = { base, 1 };
    lq_lb_reset(lb, &bl);
    *out = line;
    *n = strlen(line);
    bool keep = lq_pipeline_run(p->root->stages, p->root->nstages, 0, out, n, lb);
    lq_query_free(&p);
    return keep;
}

static const char *label(struct lq_lb *lb, const char *name)
{
    size_t n;
    const char *v = lq_lb_get(lb, name, &n);
    return v ? v : "(none)";
}

TEST(logql_pipeline)
{
    struct lq_lb lb;
    lq_lb_init(&lb);
    const char *out;
    size_t n;
    CHECK(run("{app=\"a\"} |= \"GET\" != \"500\" | logfmt", "method=GET status=200 app=x", &lb, &out, &n));
    CHECK(!strcmp(label(&lb, "status"), "200") && !strcmp(label(&lb, "app_extracted"), "x"));
    CHECK(!run("{app=\"a\"} |= \"GET\" != \"500\"", "GET 500", &lb, &out, &n));
    CHECK(run("{app=\"a\"} | json | line_format \"{{.r_p}}!\"", "{\"r\":{\"p\":\"/x\"},\"n\":1.50}", &lb, &out, &n));
    CHECK(n == 3 && !memcmp(out, "/x!", 3) && !strcmp(label(&lb, "n"), "1.50"));
    CHECK(run("{app=\"a\"} | json", "not json", &lb, &out, &n));
    CHECK(!strcmp(label(&lb, "__error__"), "JSONParserErr"));
    CHECK(run("{app=\"a\"} | logfmt | took > 1s", "took=oops", &lb, &out, &n));
    CHECK(!strcmp(label(&lb, "__error__"), "LabelFilterErr"));
    CHECK(!strcmp(label(&lb, "__error_details__"), "time: invalid duration \"oops\""));
    CHECK(run("{app=\"a\"} | pattern \"<ip> - <_> [<ts>] <req>\"", "1.2.3.4 - u [now] GET /", &lb, &out, &n));
    CHECK(!strcmp(label(&lb, "ip"), "1.2.3.4") && !strcmp(label(&lb, "req"), "GET /"));
    CHECK(run("{app=\"a\"} |= ip(\"10.0.0.0/8\")", "from 10.1.2.3:80", &lb, &out, &n));
    CHECK(!run("{app=\"a\"} |= ip(\"10.0.0.0/8\")", "from 110.1.2.3", &lb, &out, &n));
    CHECK(run("{app=\"a\"} | regexp \"(?P<w>\\\\w+)$\" | label_format up=\"{{ToUpper .w}}\" | drop w",
              "hello world", &lb, &out, &n));
    CHECK(!strcmp(label(&lb, "up"), "WORLD") && !strcmp(label(&lb, "w"), "(none)"));
    CHECK(run("{app=\"a\"} | decolorize", "\x1b[1;31mred\x1b[0m", &lb, &out, &n));
    CHECK(n == 3 && !memcmp(out, "red", 3));
    lq_lb_free(&lb);
}

TEST(logql_conversions)
{
    double v;
    char e[200];
    CHECK(lq_parse_go_duration("1h2m3.5s", 8, &v, e, sizeof(e)) == 0 && v == 3723.5);
    CHECK(lq_parse_go_duration("1d", 2, &v, e, sizeof(e)) != 0 && strstr(e, "unknown unit \"d\""));
    CHECK(lq_parse_go_duration("2", 1, &v, e, sizeof(e)) != 0 && strstr(e, "missing unit"));
    CHECK(lq_parse_bytes("3MB", 3, &v, e, sizeof(e)) == 0 && v == 3e6);
    CHECK(lq_parse_bytes("1.5 KiB", 7, &v, e, sizeof(e)) == 0 && v == 1536);
    CHECK(lq_parse_bytes("oops", 4, &v, e, sizeof(e)) != 0 && strstr(e, "parsing \"\""));
    CHECK(lq_parse_float("1e3", 3, &v, e, sizeof(e)) == 0 && v == 1000);
    CHECK(lq_parse_float("0x10", 4, &v, e, sizeof(e)) != 0);
}

/* A source of two streams, an entry every 10 s from 10 s to 100 s. */
static int src(void *ctx, const struct lq_node *log, int64_t from, int64_t to, bool backward, lq_stream_fn on_stream,
               lq_entry_fn on_entry, void *arg, char *e, size_t el)
{
    (void)ctx, (void)e, (void)el;
    static struct lq_label l1[] = { { "app", "a" } }, l2[] = { { "app", "b" } };
    static struct lq_labels s[] = { { l1, 1 }, { l2, 1 } };
    for (int i = 0; i < 2; i++) {
        bool ok = true;
        for (int m = 0; m < log->nmatchers; m++)
            ok &= lq_matcher_matches(&log->matchers[m], s[i].v[0].value, 1);
        if (!ok || on_stream(arg, &s[i]))
            continue;
        for (int64_t k = 1; k <= 10; k++) {
            int64_t ts = (backward ? 110 - 10 * k : 10 * k) * 1000000000LL;
            if (ts > from && ts <= to && on_entry(arg, ts, i ? "v=2 lvl=err" : "v=1 lvl=info", i ? 11 : 12, NULL))
                break;
        }
    }
    return 0;
}

TEST(logql_evaluate)
{
    struct lq_query *q = parse("sum(count_over_time({app=~\"a|b\"}[30s])) + 1");
    CHECK(q != NULL);
    struct lq_source s = { NULL, src };
    struct lq_params p = { .start = 60000000000LL, .end = 100000000000LL, .step = 20000000000LL, .limit = 10,
                           .max_series = 100 };
    struct lq_result r;
    CHECK(q && lq_eval(q, &p, &s, &r, err, sizeof(err)) == 0);
    CHECK_INT(r.type, LQ_RES_MATRIX);
    CHECK_INT(r.ns, 1);
    CHECK_INT(r.nsteps, 3);
    if (r.ns == 1)
        CHECK(r.s[0].has[0] && r.s[0].v[0] == 7 && r.s[0].v[2] == 7);   /* 3 per stream in (30s, 60s] */
    lq_result_free(&r);
    lq_query_free(&q);
    q = parse("max_over_time({app=\"b\"} | logfmt | unwrap v [1m]) by (lvl) > bool 1");
    p.instant = true;
    p.end = p.start;
    CHECK(q && lq_eval(q, &p, &s, &r, err, sizeof(err)) == 0);
    CHECK_INT(r.type, LQ_RES_VECTOR);
    CHECK(r.ns == 1 && r.s[0].nl == 1 && !strcmp(r.s[0].l[0].value, "err") && r.s[0].v[0] == 1);
    lq_result_free(&r);
    lq_query_free(&q);
    /* a log query: at most limit entries, newest first */
    q = parse("{app=\"a\"} |= \"info\"");
    struct lq_params lp = { .start = 0, .end = 200000000000LL, .limit = 3, .backward = true };
    CHECK(q && lq_eval(q, &lp, &s, &r, err, sizeof(err)) == 0);
    CHECK(r.type == LQ_RES_STREAMS && r.nst == 1 && r.st[0].n == 3 && r.st[0].ts[0] == 100000000000LL && r.st[0].ts[2] == 80000000000LL);
    lq_result_free(&r);
    lq_query_free(&q);
}

TEST(hmap_put_get_delete)
{
    struct hmap m = { 0 };
    char k[32];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(k, sizeof(k), "key-%d", i);
        CHECK(hmap_put(&m, k, (size_t)n, (void *)(intptr_t)(i + 1)) == 0);
    }
    CHECK_INT(m.n, 2000);
    for (int i = 0; i < 2000; i += 2) {
        int n = snprintf(k, sizeof(k), "key-%d", i);
        CHECK(hmap_del(&m, k, (size_t)n) == (void *)(intptr_t)(i + 1));
    }
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(k, sizeof(k), "key-%d", i);
        void *v = hmap_get(&m, k, (size_t)n);
        CHECK(i % 2 ? v == (void *)(intptr_t)(i + 1) : v == NULL);
    }
    size_t it = 0, count = 0;
    const struct hmap_slot *slot;
    while (hmap_next(&m, &it, &slot))
        count++;
    CHECK_INT(count, 1000);
    hmap_free(&m);
}
