#include "core/metrics.h"
#include "test.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

static struct metric *shared_counter;

static void *bump(void *arg)
{
    UNUSED(arg);
    for (int i = 0; i < 10000; i++)
        metric_inc(shared_counter);
    return NULL;
}

TEST(metrics_per_thread_counters_sum)
{
    struct metrics_registry *reg = metrics_registry_new();
    shared_counter = metrics_counter(reg, "t_events_total", "Events.");
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, bump, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    metric_inc(shared_counter);
    CHECK(metric_value(shared_counter) == 40001);
    metrics_registry_free(&reg);
    CHECK(reg == NULL);
}

TEST(metrics_render_text_format)
{
    struct metrics_registry *reg = metrics_registry_new();
    static const char *const labels[] = { "code", "path", NULL };
    struct metric_family *f = metrics_family(reg, METRIC_COUNTER, "t_requests_total",
                                             "Requests.\nSecond line \\ here", labels, NULL, 0);
    CHECK(f != NULL);
    metric_add(metrics_get2(f, "200", "/a\"b\\c\nd"), 3);
    metric_add(metrics_get2(f, "200", "/a\"b\\c\nd"), 2);
    struct metric *g = metrics_gauge(reg, "t_temperature", "Temp.");
    metric_set(g, 21.5);
    metric_add(g, -1);
    static const double b[] = { 0.1, 1 };
    struct metric *h = metrics_histogram(reg, "t_latency_seconds", "Latency.", b, 2);
    metric_observe(h, 0.05);
    metric_observe(h, 0.5);
    metric_observe(h, 5);
    struct buf out = BUF_INIT;
    metrics_render(reg, &out);
    const char *s = buf_head(&out);
    CHECK_CONTAINS(s, "# HELP t_requests_total Requests.\\nSecond line \\\\ here\n");
    CHECK_CONTAINS(s, "# TYPE t_requests_total counter\n");
    CHECK_CONTAINS(s, "t_requests_total{code=\"200\",path=\"/a\\\"b\\\\c\\nd\"} 5\n");
    CHECK_CONTAINS(s, "t_temperature 20.5\n");
    CHECK_CONTAINS(s, "t_latency_seconds_bucket{le=\"0.1\"} 1\n");
    CHECK_CONTAINS(s, "t_latency_seconds_bucket{le=\"1\"} 2\n");
    CHECK_CONTAINS(s, "t_latency_seconds_bucket{le=\"+Inf\"} 3\n");
    CHECK_CONTAINS(s, "t_latency_seconds_sum 5.55\n");
    CHECK_CONTAINS(s, "t_latency_seconds_count 3\n");
    buf_free(&out);
    metrics_registry_free(&reg);
}

TEST(metrics_render_openmetrics_with_exemplars)
{
    struct metrics_registry *reg = metrics_registry_new();
    struct metric *c = metrics_counter(reg, "t_events_total", "Events \"quoted\".");
    struct metric *u = metrics_counter(reg, "t_untyped", "A counter without _total.");
    metric_inc(c);
    metric_inc(u);
    static const double b[] = { 0.1, 1 };
    struct metric *h = metrics_histogram(reg, "t_latency_seconds", "Latency.", b, 2);
    metric_observe_exemplar(h, 0.05, "4bf92f3577b34da6a3ce929d0e0e4736");
    metric_observe_exemplar(h, 0.07, "00000000000000000000000000000001");     /* the last one wins */
    metric_observe(h, 0.5);                                                   /* no exemplar */
    metric_observe_exemplar(h, 7, "00000000000000000000000000000002");
    struct buf out = BUF_INIT;
    metrics_render_openmetrics(reg, &out);
    const char *s = buf_head(&out);
    CHECK_CONTAINS(s, "# HELP t_events Events \\\"quoted\\\".\n# TYPE t_events counter\nt_events_total 1\n");
    CHECK_CONTAINS(s, "# TYPE t_untyped unknown\nt_untyped 1\n");
    CHECK_CONTAINS(s, "t_latency_seconds_bucket{le=\"0.1\"} 2 # {trace_id=\"00000000000000000000000000000001\"} 0.07 ");
    CHECK_CONTAINS(s, "t_latency_seconds_bucket{le=\"1\"} 3\n");
    CHECK_CONTAINS(s, "t_latency_seconds_bucket{le=\"+Inf\"} 4 # {trace_id=\"00000000000000000000000000000002\"} 7 ");
    CHECK(strlen(s) > 6 && strcmp(s + strlen(s) - 6, "# EOF\n") == 0);
    buf_free(&out);
    /* the text format shows no exemplar */
    metrics_render(reg, &out);
    CHECK(strstr(buf_head(&out), "trace_id") == NULL);
    CHECK_CONTAINS(buf_head(&out), "# TYPE t_events_total counter\n");
    buf_free(&out);
    metrics_registry_free(&reg);
}

TEST(metrics_rejects_bad_names_and_type_clash)
{
    struct metrics_registry *reg = metrics_registry_new();
    CHECK(metrics_family(reg, METRIC_COUNTER, "1bad", "", NULL, NULL, 0) == NULL);
    CHECK(metrics_family(reg, METRIC_COUNTER, "bad-name", "", NULL, NULL, 0) == NULL);
    static const char *const l[] = { "__reserved", NULL };
    CHECK(metrics_family(reg, METRIC_COUNTER, "ok_total", "", l, NULL, 0) == NULL);
    CHECK(metrics_family(reg, METRIC_COUNTER, "x_total", "", NULL, NULL, 0) != NULL);
    CHECK(metrics_family(reg, METRIC_GAUGE, "x_total", "", NULL, NULL, 0) == NULL);
    static const double unsorted[] = { 1, 0.5 };
    CHECK(metrics_family(reg, METRIC_HISTOGRAM, "h", "", NULL, unsorted, 2) == NULL);
    metrics_registry_free(&reg);
}

TEST(metrics_format_values)
{
    char s[64];
    metrics_format_value(s, sizeof(s), NAN);
    CHECK_STR(s, "NaN");
    metrics_format_value(s, sizeof(s), INFINITY);
    CHECK_STR(s, "+Inf");
    metrics_format_value(s, sizeof(s), -INFINITY);
    CHECK_STR(s, "-Inf");
    metrics_format_value(s, sizeof(s), 42);
    CHECK_STR(s, "42");
    metrics_format_value(s, sizeof(s), 0.1);
    CHECK_STR(s, "0.1");
    metrics_format_value(s, sizeof(s), 1e300);
    CHECK(strtod(s, NULL) == 1e300);
}

/* The shortest of %.15g, %.16g and %.17g that reads back: what the exact path must
 * print, digit for digit. */
static void reference_format(char *out, size_t outlen, double v)
{
    for (int p = 15; p <= 17; p++) {
        snprintf(out, outlen, "%.*g", p, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

TEST(metrics_format_values_shortest_exact)
{
    char got[64], want[64];
    int mismatches = 0;
    for (int i = 0; i < 300000; i++) {
        double v;
        switch (i % 6) {
        case 0: {           /* any finite bit pattern */
            uint64_t b = rng();
            memcpy(&v, &b, sizeof(v));
            if (!isfinite(v))
                continue;
            break;
        }
        case 1: v = (double)(rng() % 1000000) / (double)(1 + rng() % 3600); break;    /* rates */
        case 2: v = ldexp((double)(rng() >> 11), (int)(rng() % 200) - 120); break;
        case 3: v = pow(10, (int)(rng() % 40) - 12) * (1 + (rng() % 3 ? 0 : 1e-15)); break;
        case 4: v = nextafter(pow(10, (int)(rng() % 30) - 8), (rng() & 1) ? 0 : INFINITY); break;
        default: v = -((double)(rng() % 100000000) / 7.0) * pow(10, (int)(rng() % 12) - 6); break;
        }
        if (v == (double)(long long)v && fabs(v) < 1e15)
            continue;       /* integers take their own path */
        metrics_format_value(got, sizeof(got), v);
        reference_format(want, sizeof(want), v);
        if (strcmp(got, want) != 0 && mismatches++ < 5)
            fprintf(stderr, "format %.17g: got %s, want %s\n", v, got, want);
    }
    CHECK_INT(mismatches, 0);
    metrics_format_value(got, sizeof(got), 1.0 / 60);
    CHECK_STR(got, "0.016666666666666666");
    metrics_format_value(got, sizeof(got), 0.1 + 0.2);
    CHECK_STR(got, "0.30000000000000004");
    metrics_format_value(got, sizeof(got), 1e-5);
    CHECK_STR(got, "1e-05");
    metrics_format_value(got, sizeof(got), -2.5e20);
    CHECK_STR(got, "-2.5e+20");
    metrics_format_value(got, sizeof(got), 123456.789);
    CHECK_STR(got, "123456.789");
}

TEST(metrics_process_collectors)
{
    struct metrics_registry *reg = metrics_registry_new();
    CHECK_INT(metrics_add_process(reg), 0);
    struct buf out = BUF_INIT;
    metrics_render(reg, &out);
    CHECK_CONTAINS(buf_head(&out), "process_resident_memory_bytes ");
    CHECK_CONTAINS(buf_head(&out), "process_open_fds ");
    CHECK_CONTAINS(buf_head(&out), "# TYPE process_cpu_seconds_total counter");
    buf_free(&out);
    metrics_registry_free(&reg);
}
