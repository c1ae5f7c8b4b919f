/* libFuzzer harness: the LogQL parser, its printer (format_query: the output must
 * parse again and print the same), and the evaluator with every pipeline stage
 * over a few fixed streams (JSON, logfmt, access-log and ANSI lines, structured
 * metadata), with a bounded number of steps and series. */
#include "core/logql_eval.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct lq_label s1[] = { { "app", "a" }, { "env", "prod" } };
static const struct lq_label s2[] = { { "app", "b" }, { "k", "s" } };
static const struct lq_label meta[] = { { "k", "m" }, { "trace_id", "abc" } };
static const struct lq_labels streams[] = { { (struct lq_label *)s1, 2 }, { (struct lq_label *)s2, 2 } };
static const struct lq_labels metas[] = { { NULL, 0 }, { (struct lq_label *)meta, 2 } };
static const char *const lines[] = {
    "level=info msg=\"hello world\" took=12ms size=3MB v=1.5 addr=10.0.0.7",
    "{\"level\":\"error\",\"req\":{\"path\":\"/api\",\"ms\":12},\"arr\":[1,2],\"v\":\"x\\u00e9\"}",
    "10.1.2.3 - - \"GET /index.html HTTP/1.1\" 200 512",
    "\x1b[31mred\x1b[0m k=v k2=\"unterminated",
};

static int src_select(void *ctx, const struct lq_node *log, int64_t from, int64_t to, bool backward,
                      lq_stream_fn on_stream, lq_entry_fn on_entry, void *arg, char *err, size_t errlen)
{
    (void)ctx, (void)backward, (void)err, (void)errlen;
    const struct lq_matcher *m = log->matchers;
    int nm = log->nmatchers;
    struct strv lit[8];
    (void)lq_required_literals(log, lit, 8);
    for (int s = 0; s < 2; s++) {
        bool ok = true;
        for (int i = 0; i < nm && ok; i++) {
            const char *v = "";
            for (int k = 0; k < streams[s].n; k++)
                if (!strcmp(streams[s].v[k].name, m[i].name))
                    v = streams[s].v[k].value;
            ok = lq_matcher_matches(&m[i], v, strlen(v));
        }
        if (!ok || on_stream(arg, &streams[s]))
            continue;
        for (int64_t t = 0; t < 40; t++) {
            int64_t ts = t * 5000000000LL;
            if (ts <= from || ts > to)
                continue;
            const char *l = lines[(t + s) % 4];
            if (on_entry(arg, ts, l, strlen(l), &metas[(t + s) % 2]))
                break;
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    struct lq_query *q;
    char err[512];
    if (lq_parse((const char *)data, size, &q, err, sizeof(err)))
        return 0;
    struct buf a = { 0 }, b = { 0 };
    lq_format(&a, q->root);
    struct lq_query *q2;
    if (lq_parse(a.len ? buf_head(&a) : "", buf_used(&a), &q2, err, sizeof(err)) == 0) {
        lq_format(&b, q2->root);
        if (buf_used(&a) != buf_used(&b) || memcmp(buf_head(&a), buf_head(&b), buf_used(&a)) != 0)
            abort();    /* the printer must be a fixed point */
        lq_query_free(&q2);
    }
    buf_free(&a);
    buf_free(&b);
    struct lq_source src = { NULL, src_select };
    struct lq_params p = { .start = 60000000000LL, .end = 180000000000LL, .step = 30000000000LL, .limit = 50,
                           .max_series = 100, .max_entries = 100000 };
    struct lq_result res;
    if (lq_eval(q, &p, &src, &res, err, sizeof(err)) == 0)
        lq_result_free(&res);
    p.instant = true;
    p.end = p.start;
    if (lq_eval(q, &p, &src, &res, err, sizeof(err)) == 0)
        lq_result_free(&res);
    lq_query_free(&q);
    return 0;
}
