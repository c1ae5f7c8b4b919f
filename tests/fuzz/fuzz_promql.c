/* libFuzzer harness: the PromQL lexer and parser, the printer (whose output must
 * parse again to the same text), and the evaluator over a small store with a
 * bounded sample budget and deadline. */
#include "metrics/promql.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tsdb db;
static bool ready;

static void fill(void)
{
    static const char *const names[] = { "up", "http_requests_total", "latency_bucket" };
    static const char *const les[] = { "0.1", "1", "+Inf" };
    tsdb_open(&db, NULL, NULL, 0);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            struct tsdb_label p[3] = { { "__name__", names[i] }, { "job", j ? "b" : "a" }, { "le", les[j] } };
            struct tsdb_labels l;
            if (tsdb_labels_make(&l, p, 3))
                continue;
            bool created;
            struct tsdb_series *s = tsdb_series_get(&db, &l, &created);
            if (!created)
                tsdb_labels_free(&l);
            for (int k = 0; s && k < 40; k++)
                tsdb_append(&db, s, (int64_t)k * 15000, (double)(k * (j + 1)));
        }
    ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        fill();
    if (size > 4096)
        return 0;
    char *q = malloc(size + 1);
    memcpy(q, data, size);
    q[size] = 0;
    char err[512];
    struct promql_node *n = promql_parse(q, err, sizeof(err));
    if (n) {
        struct buf b = BUF_INIT, b2 = BUF_INIT;
        promql_format(n, &b);
        buf_putc(&b, 0);
        struct promql_node *n2 = promql_parse(buf_head(&b), err, sizeof(err));
        if (!n2)
            abort();    /* the printer wrote something the parser refuses */
        promql_format(n2, &b2);
        buf_putc(&b2, 0);
        if (strcmp(buf_head(&b), buf_head(&b2)) != 0)
            abort();
        promql_free(n2);
        buf_free(&b);
        buf_free(&b2);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        struct promql_opts o = { .max_samples = 100000,
                                 .deadline_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + 100000000 };
        struct promql_result res;
        if (promql_eval(&db, n, 600000, 600000, 0, &o, &res, err, sizeof(err)) == 0)
            promql_result_free(&res);
        if (promql_eval(&db, n, 0, 600000, 60000, &o, &res, err, sizeof(err)) == 0)
            promql_result_free(&res);
        promql_free(n);
    }
    free(q);
    return 0;
}
