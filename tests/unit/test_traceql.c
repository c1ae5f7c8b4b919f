/* Unit tests for the traces role's query side (src/traces/): TraceQL parse errors
 * and evaluation over a small trace (filters, types, structure, pipelines), the
 * Bloom tokens a query implies, Go durations, trace ids, and the OTLP JSON and
 * Zipkin decoders read back through a trace view. */
#include "traces/traces_internal.h"
#include "test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* frontend GET / (server, 500) -> db (client, error) -> query (internal)
 *                              -> cache (client, hit=true)                 */
static const char TRACE[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"frontend\"}}]},"
    "\"scopeSpans\":[{\"spans\":["
    "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000001\",\"name\":\"GET /\",\"kind\":2,"
    "\"startTimeUnixNano\":\"1000\",\"endTimeUnixNano\":\"2001000\",\"attributes\":[{\"key\":\"http.status_code\",\"value\":{\"intValue\":\"500\"}}]},"
    "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000002\",\"parentSpanId\":\"0000000000000001\",\"name\":\"db\",\"kind\":3,"
    "\"startTimeUnixNano\":\"2000\",\"endTimeUnixNano\":\"5000\",\"status\":{\"code\":2,\"message\":\"deadlock\"},\"attributes\":[{\"key\":\"ratio\",\"value\":{\"doubleValue\":0.5}}]},"
    "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000003\",\"parentSpanId\":\"0000000000000001\",\"name\":\"cache\",\"kind\":3,"
    "\"startTimeUnixNano\":\"3000\",\"endTimeUnixNano\":\"4000\",\"attributes\":[{\"key\":\"hit\",\"value\":{\"boolValue\":true}}]}]}]},"
    "{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"postgres\"}}]},"
    "\"scopeSpans\":[{\"spans\":["
    "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000004\",\"parentSpanId\":\"0000000000000002\",\"name\":\"query\",\"kind\":1,"
    "\"startTimeUnixNano\":\"2500\",\"endTimeUnixNano\":\"4500\",\"attributes\":[{\"key\":\"http.status_code\",\"value\":{\"stringValue\":\"500\"}}]}]}]}]}";

static struct buf pb;
static struct tr_trace_view view;
/* the same trace twice on a page of search columns, and a view of the second */
static struct tc_writer colw;
static struct tc_page page;
static struct tr_trace_view cview;

static int fetch_col(void *arg, int frame, uint64_t rel, uint32_t clen, uint32_t rlen, struct buf *out)
{
    struct tc_writer *w = arg;
    (void)rel, (void)clen, (void)rlen;
    const struct buf *b = frame < TC_N ? &w->col[frame] : &w->akeys[frame - TC_N].b;
    buf_reset(out);
    return buf_append(out, buf_head(b), buf_used(b));
}

static void load(void)
{
    char err[256];
    if (buf_used(&pb))
        return;
    CHECK(tr_otlp_json_to_pb(TRACE, strlen(TRACE), &pb, err, sizeof(err)) == 0);
    CHECK(tr_view_add(&view, (const uint8_t *)buf_head(&pb), buf_used(&pb)) == 0);
    tr_view_link(&view);
    CHECK(tc_add(&colw, &view) == 0 && tc_add(&colw, &view) == 0);
    tc_finish(&colw);
    tc_keys_dir(&colw, NULL);
    CHECK(tc_page_load(&page, fetch_col, &colw) == 0 && page.ntraces == 2 && page.nspans == 8);
}

/* The names of the spans a query's spansets hold in v, sorted, joined by ","; "-"
 * for no match. */
static void eval_names(const struct tq_query *tq, const struct tr_trace_view *v, char *got, size_t gotlen);

/* A query's match on the trace's view and on the view built from its columns. */
static void check_q(const char *q, const char *want)
{
    load();
    struct tq_query *tq = NULL;
    char err[512];
    if (tq_parse(q, strlen(q), &tq, err, sizeof(err))) {
        test_fail(__FILE__, __LINE__, "%s: %s", q, err);
        return;
    }
    char got[256], cgot[256];
    eval_names(tq, &view, got, sizeof(got));
    if (strcmp(got, want))
        test_fail(__FILE__, __LINE__, "%s: got %s, want %s", q, got, want);
    CHECK(tc_page_view(&page, 1, &cview) == 0);
    eval_names(tq, &cview, cgot, sizeof(cgot));
    if (strcmp(cgot, want))
        test_fail(__FILE__, __LINE__, "%s on the columns: got %s, want %s", q, cgot, want);
    tq_free(tq);
}

static void eval_names(const struct tq_query *tq, const struct tr_trace_view *v, char *got, size_t gotlen)
{
    struct tq_result res;
    int n = tq_eval(tq, v, &res);
    snprintf(got, gotlen, "-");
    if (n > 0) {
        char *names[16];
        size_t k = 0;
        for (size_t s = 0; s < res.n; s++)
            for (size_t i = 0; i < res.sets[s].n && k < 16; i++)
                names[k++] = strv_dup(v->s[res.sets[s].spans[i]].name);
        /* bubble sort: a handful of names */
        for (size_t i = 0; i < k; i++)
            for (size_t j = i + 1; j < k; j++)
                if (strcmp(names[j], names[i]) < 0) {
                    char *t = names[i];
                    names[i] = names[j];
                    names[j] = t;
                }
        got[0] = 0;
        for (size_t i = 0; i < k; i++) {
            strncat(got, names[i], gotlen - strlen(got) - 2);
            if (i + 1 < k)
                strncat(got, ",", gotlen - strlen(got) - 1);
            free(names[i]);
        }
    }
    tq_result_free(&res);
}

static void check_err(const char *q, const char *want)
{
    struct tq_query *tq = NULL;
    char err[512];
    if (tq_parse(q, strlen(q), &tq, err, sizeof(err)) == 0) {
        test_fail(__FILE__, __LINE__, "%s parsed, expected an error with %s", q, want);
        tq_free(tq);
        return;
    }
    if (!strstr(err, want))
        test_fail(__FILE__, __LINE__, "%s: error %s lacks %s", q, err, want);
}

TEST(traceql_filters)
{
    check_q("{ }", "GET /,cache,db,query");
    check_q("{ name = \"db\" }", "db");
    check_q("{ status = error }", "db");
    check_q("{ kind = client }", "cache,db");
    check_q("{ span.http.status_code = 500 }", "GET /");          /* the string "500" is another type */
    check_q("{ .http.status_code = \"500\" }", "query");
    check_q("{ span.http.status_code >= 400 && resource.service.name = \"frontend\" }", "GET /");
    check_q("{ .ratio > 0.25 || .hit = true }", "cache,db");
    check_q("{ duration > 1ms }", "GET /");
    check_q("{ duration <= 1000ns }", "cache");
    check_q("{ name =~ \"c.*\" }", "cache");
    check_q("{ name =~ \"ach\" }", "-");                              /* anchored */
    check_q("{ name !~ \"GET.*|q.*\" }", "cache,db");
    check_q("{ statusMessage = \"deadlock\" }", "db");
    check_q("{ rootName = \"GET /\" && rootServiceName = \"frontend\" && traceDuration > 1ms }", "GET /,cache,db,query");
    check_q("{ span.missing = nil && name = \"db\" }", "db");
    check_q("{ !(kind = client) }", "GET /,query");
    check_q("{ resource.service.name != \"frontend\" }", "query");
}

TEST(traceql_structure_and_pipelines)
{
    check_q("{ name = \"GET /\" } > { kind = client }", "cache,db");
    check_q("{ name = \"GET /\" } >> { }", "cache,db,query");
    check_q("{ name = \"query\" } < { }", "db");
    check_q("{ name = \"query\" } << { }", "GET /,db");
    check_q("{ name = \"db\" } ~ { }", "cache");
    check_q("{ name = \"GET /\" } !> { }", "GET /,query");
    check_q("{ status = error } && { .hit = true }", "cache,db");
    check_q("{ status = error } && { .nothere = 1 }", "-");
    check_q("{ status = error } || { .nothere = 1 }", "db");
    check_q("{ } | count() = 4", "GET /,cache,db,query");
    check_q("{ } | count() > 4", "-");
    check_q("{ kind = client } | avg(duration) = 2000ns", "cache,db");
    check_q("{ kind = client } | max(duration) > 2us", "cache,db");
    check_q("{ } | by(resource.service.name) | count() = 1", "query");
    check_q("{ } | { kind = client } | count() = 2", "cache,db");
    check_q("({ name = \"db\" } || { name = \"cache\" }) | select(span.hit)", "cache,db");
    check_q("{ } | by(kind) | coalesce() | count() = 4", "GET /,cache,db,query");
}

TEST(traceql_errors_and_tokens)
{
    check_err("{ span.x = }", "parse error");
    check_err("{ name = \"x\"", "expected }");
    check_err("{ name =~ 5 }", "regular expression must be a string");
    check_err("{ name =~ \"(\" }", "invalid regular expression");
    check_err("{ } | count()", "must be compared");
    check_err("{ } | frobnicate()", "pipeline stage");
    check_err("name = \"x\"", "spanset filter");
    check_err("{ duration > 5 parsecs }", "parse error");
    struct tq_query *tq = NULL;
    char err[256];
    const char *q = "{ span.a = \"x\" && name = \"n\" && .b = 3 } > { resource.service.name = \"s\" } || { .c = \"y\" }";
    CHECK(tq_parse(q, strlen(q), &tq, err, sizeof(err)) == 0);
    char *tok[16];
    size_t n = tq_tokens(tq, tok, 16);
    CHECK(n == 0);                  /* an || at the top: no token is certain */
    tq_free(tq);
    q = "{ span.a = \"x\" && name = \"n\" && .b = 3 && .d > 1 } > { resource.service.name = \"s\" }";
    CHECK(tq_parse(q, strlen(q), &tq, err, sizeof(err)) == 0);
    n = tq_tokens(tq, tok, 16);
    CHECK(n == 4);
    if (n == 4) {                   /* the intrinsic first: && evaluates it first */
        CHECK(!strcmp(tok[0], "n\tn\t"));
        CHECK(!strcmp(tok[1], "a\ta\tx"));
        CHECK(!strcmp(tok[2], "a\tb\t3"));
        CHECK(!strcmp(tok[3], "a\tservice.name\ts"));
    }
    for (size_t i = 0; i < n; i++)
        free(tok[i]);
    tq_free(tq);
}

TEST(traces_durations_and_ids)
{
    int64_t ns;
    CHECK(tr_parse_go_duration("4.5us", 5, &ns) == 0 && ns == 4500);
    CHECK(tr_parse_go_duration("1h2m3s", 6, &ns) == 0 && ns == 3723000000000LL);
    CHECK(tr_parse_go_duration("1.5ms", 5, &ns) == 0 && ns == 1500000);
    CHECK(tr_parse_go_duration("0", 1, &ns) == 0 && ns == 0);
    CHECK(tr_parse_go_duration("10", 2, &ns) != 0);
    CHECK(tr_parse_go_duration("5 s", 3, &ns) != 0);
    CHECK(tr_parse_go_duration("", 0, &ns) != 0);
    uint8_t id[16];
    CHECK(tr_parse_trace_id(strv_cstr("a12"), id) == 0 && id[15] == 0x12 && id[14] == 0x0a && id[0] == 0);
    CHECK(tr_parse_trace_id(strv_cstr("0102030405060708090a0b0c0d0e0f10"), id) == 0 && id[0] == 1 && id[15] == 0x10);
    CHECK(tr_parse_trace_id(strv_cstr("xyz"), id) != 0);
    CHECK(tr_parse_trace_id(strv_cstr("0102030405060708090a0b0c0d0e0f1011"), id) != 0);
}

TEST(traces_decoders)
{
    load();
    CHECK(view.n == 4);
    CHECK(view.root >= 0 && strv_eq_cstr(view.s[view.root].name, "GET /"));
    int db = -1;
    for (size_t i = 0; i < view.n; i++)
        if (strv_eq_cstr(view.s[i].name, "db"))
            db = (int)i;
    CHECK(db >= 0 && view.s[db].status == 2 && strv_eq_cstr(view.s[db].status_msg, "deadlock"));
    CHECK(db >= 0 && view.s[db].parent == view.root && view.s[view.root].nchildren == 2);
    /* Zipkin: 64-bit ids, kind, tags, error, annotations, the local endpoint */
    const char *z = "[{\"traceId\":\"5af7183fb1d4cf5f\",\"id\":\"352bff9a74ca9ad2\",\"kind\":\"CLIENT\",\"name\":\"get\","
                    "\"timestamp\":1556604172355737,\"duration\":1431,\"localEndpoint\":{\"serviceName\":\"backend\"},"
                    "\"annotations\":[{\"timestamp\":1556604172355800,\"value\":\"wr\"}],\"tags\":{\"a\":\"b\",\"error\":\"timeout\"}}]";
    struct buf zb = BUF_INIT;
    char err[256];
    CHECK(tr_zipkin_json_to_pb(z, strlen(z), &zb, err, sizeof(err)) == 0);
    struct tr_trace_view v = { 0 };
    CHECK(tr_view_add(&v, (const uint8_t *)buf_head(&zb), buf_used(&zb)) == 0 && v.n == 1);
    if (v.n == 1) {
        CHECK(v.s[0].tid[0] == 0 && v.s[0].tid[8] == 0x5a && v.s[0].kind == 3 && v.s[0].status == 2);
        CHECK(v.s[0].start == 1556604172355737000LL && v.s[0].end - v.s[0].start == 1431000);
        CHECK(strv_eq_cstr(v.s[0].service, "backend") && strv_eq_cstr(v.s[0].status_msg, "timeout"));
        struct buf out = BUF_INIT;
        tr_view_link(&v);
        tr_render_zipkin(&v, &out);
        buf_putc(&out, 0);
        CHECK(strstr(buf_head(&out), "\"traceId\":\"5af7183fb1d4cf5f\"") != NULL);
        CHECK(strstr(buf_head(&out), "\"annotations\":[{\"timestamp\":1556604172355800,\"value\":\"wr\"}]") != NULL);
        CHECK(strstr(buf_head(&out), "\"a\":\"b\"") != NULL && strstr(buf_head(&out), "\"error\":\"timeout\"") != NULL);
        buf_free(&out);
    }
    tr_view_free(&v);
    buf_free(&zb);
    CHECK(tr_zipkin_json_to_pb("[{\"id\":\"1\"}]", 12, &zb, err, sizeof(err)) != 0 && strstr(err, "traceId"));
    buf_free(&zb);
    const char *bad = "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"spanId\":\"12\"}]}]}]}";
    CHECK(tr_otlp_json_to_pb(bad, strlen(bad), &zb, err, sizeof(err)) != 0 && strstr(err, "spanId"));
    buf_free(&zb);
}

/* The search columns: every intrinsic as the span view has it, the attributes
 * read only when a query reaches one, and columns that disagree refused. */
TEST(traces_search_columns)
{
    load();
    for (uint32_t t = 0; t < 2; t++) {
        CHECK(tc_page_view(&page, t, &cview) == 0 && cview.n == view.n);
        CHECK(cview.root == view.root && cview.start == view.start && cview.end == view.end);
        for (size_t i = 0; i < view.n && i < cview.n; i++) {
            const struct tr_span *a = &view.s[i], *b = &cview.s[i];
            CHECK(strv_eq(a->name, b->name) && strv_eq(a->service, b->service) && strv_eq(a->status_msg, b->status_msg));
            CHECK(a->kind == b->kind && a->status == b->status && a->start == b->start && a->end == b->end);
            CHECK(a->parent == b->parent && a->nchildren == b->nchildren);
        }
    }
    struct tc_page pg = { 0 };
    struct tr_trace_view v = { 0 };
    struct tq_query *tq = NULL;
    char err[256];
    struct tq_result res;
    CHECK(tc_page_load(&pg, fetch_col, &colw) == 0 && tc_page_view(&pg, 0, &v) == 0);
    CHECK(tq_parse("{ span.http.status_code = 500 && duration > 1s }", 48, &tq, err, sizeof(err)) == 0);
    CHECK(tq_eval(tq, &v, &res) == 0 && !pg.keys_loaded);    /* no span lasts 1s: no attribute read */
    tq_result_free(&res);
    tq_free(tq);
    /* one key's column read of the three keys the page has */
    CHECK(tq_parse("{ duration > 1ms && span.http.status_code = 500 }", 49, &tq, err, sizeof(err)) == 0);
    CHECK(tq_eval(tq, &v, &res) == 1 && pg.keys_loaded && pg.nkeys == 3 && pg.keys_read == 1 && !pg.attrs_bad);
    tq_result_free(&res);
    tq_free(tq);
    /* a parent index past the trace, a dictionary id past the dictionary */
    static const struct { int col; uint64_t v; } bads[] = { { TC_PARENT, 9 }, { TC_NAME, 99 } };
    for (size_t k = 0; k < ARRAY_SIZE(bads); k++) {
        struct tc_writer bad = { 0 };
        CHECK(tc_add(&bad, &view) == 0);
        tc_finish(&bad);
        tc_keys_dir(&bad, NULL);
        buf_reset(&bad.col[bads[k].col]);
        for (int i = 0; i < 4; i++)
            pb_put_varint(&bad.col[bads[k].col], bads[k].v);
        CHECK(tc_page_load(&pg, fetch_col, &bad) == -EINVAL);
        tc_free(&bad);
    }
    /* more keys than a page gives columns: a lookup says the spans must be read */
    struct buf raw = BUF_INIT;
    for (int k = 0; k < 1100; k++) {
        char key[16];
        struct buf kv = BUF_INIT, any = BUF_INIT;
        int kn = snprintf(key, sizeof(key), "k%d", k);
        pb_put_bytes(&any, 1, "v", 1);
        pb_put_bytes(&kv, 1, key, (size_t)kn);
        pb_put_msg(&kv, 2, &any);
        pb_put_msg(&raw, 9, &kv);
        buf_free(&kv);
        buf_free(&any);
    }
    struct tr_span wide = view.s[0];
    wide.raw = (struct pb){ (const uint8_t *)buf_head(&raw), (const uint8_t *)buf_head(&raw) + buf_used(&raw) };
    struct tr_trace_view one = { .s = &wide, .n = 1, .root = 0 };
    struct tc_writer ww = { 0 };
    CHECK(tc_add(&ww, &one) == 0 && ww.nkeys == 1024 && ww.keys_over);
    tc_finish(&ww);
    tc_keys_dir(&ww, NULL);
    CHECK(tc_page_load(&pg, fetch_col, &ww) == 0 && tc_page_view(&pg, 0, &v) == 0);
    CHECK(tq_parse("{ span.k5 = \"v\" }", 17, &tq, err, sizeof(err)) == 0);
    CHECK(tq_eval(tq, &v, &res) == 0 && pg.attrs_bad);
    tq_result_free(&res);
    tq_free(tq);
    tc_free(&ww);
    buf_free(&raw);
    tc_page_free(&pg);
    tr_view_free(&v);
}

TEST(traces_cleanup)
{
    tr_view_free(&view);
    tr_view_free(&cview);
    tc_page_free(&page);
    tc_free(&colw);
    buf_free(&pb);
}
