/* Unit tests: XOR chunks, the TSDB head and WAL, the exposition parser. */
#include "metrics/prom_internal.h"
#include "metrics/prom_text.h"
#include "metrics/tsdb.h"
#include "metrics/tsdb_chunk.h"
#include "test.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

TEST(tsdb_chunk_roundtrip)
{
    struct tsdb_chunk c;
    tsdb_chunk_init(&c);
    int64_t ts[TSDB_CHUNK_MAX_SAMPLES];
    double vs[TSDB_CHUNK_MAX_SAMPLES];
    int64_t t = 1700000000000;
    for (int i = 0; i < TSDB_CHUNK_MAX_SAMPLES; i++) {
        /* regular steps, jitter, big jumps, and values of every kind */
        t += i % 17 == 0 ? 1000000 : i % 5 == 0 ? 15003 : 15000 - (i % 3);
        ts[i] = t;
        vs[i] = i % 11 == 0 ? NAN : i % 7 == 0 ? -INFINITY : i < 40 ? (double)(i / 4) : i * 0.1 + 1e9;
        CHECK_INT(tsdb_chunk_append(&c, ts[i], vs[i]), 0);
    }
    tsdb_chunk_seal(&c);
    /* a regular series compresses to a few bytes per sample */
    CHECK(tsdb_chunk_bytes(&c) < 16 * TSDB_CHUNK_MAX_SAMPLES);
    struct tsdb_chunk_iter it;
    tsdb_chunk_iter_init(&it, c.b, c.nbits, c.n);
    int64_t gt;
    double gv;
    int n = 0;
    while (tsdb_chunk_next(&it, &gt, &gv)) {
        CHECK_INT(gt, ts[n]);
        CHECK(isnan(vs[n]) ? isnan(gv) : gv == vs[n]);
        n++;
    }
    CHECK(!it.err);
    CHECK_INT(n, TSDB_CHUNK_MAX_SAMPLES);
    /* a truncated chunk ends with an error, not a read past the end */
    tsdb_chunk_iter_init(&it, c.b, c.nbits / 2, c.n);
    n = 0;
    while (tsdb_chunk_next(&it, &gt, &gv))
        n++;
    CHECK(it.err);
    CHECK(n < TSDB_CHUNK_MAX_SAMPLES);
    tsdb_chunk_free(&c);
}

/* Values whose XOR windows are as wide as 64 bits, at every bit offset, read back;
 * every cut of the chunk reads no byte past its end (each cut is copied into a
 * buffer of exactly its bytes: ASan sees an over-read) and ends in an error unless
 * whole. */
TEST(tsdb_chunk_wide_windows_and_every_cut)
{
    struct tsdb_chunk c;
    tsdb_chunk_init(&c);
    int64_t ts[100];
    double vs[100];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 100; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t bits = i % 3 ? x : x | 1 | (1ull << 62);
        memcpy(&vs[i], &bits, sizeof(bits));
        ts[i] = 1000 + 15000 * (int64_t)i + (i % 4 ? 0 : (int64_t)(x % 100000));
        CHECK_INT(tsdb_chunk_append(&c, ts[i], vs[i]), 0);
    }
    tsdb_chunk_seal(&c);
    for (uint32_t cut = 0; cut <= c.nbits; cut++) {
        size_t nbytes = (cut + 7) / 8;
        uint8_t *exact = malloc(nbytes ? nbytes : 1);
        memcpy(exact, c.b, nbytes);
        struct tsdb_chunk_iter it;
        tsdb_chunk_iter_init(&it, exact, cut, c.n);
        int64_t gt;
        double gv;
        int n = 0;
        while (tsdb_chunk_next(&it, &gt, &gv)) {
            CHECK_INT(gt, ts[n]);
            CHECK(memcmp(&gv, &vs[n], sizeof(gv)) == 0);
            n++;
        }
        CHECK(cut == c.nbits ? (n == 100 && !it.err) : (n < 100 && it.err));
        free(exact);
    }
    tsdb_chunk_free(&c);
}

TEST(tsdb_chunk_constant_is_tiny)
{
    struct tsdb_chunk c;
    tsdb_chunk_init(&c);
    for (int i = 0; i < 120; i++)
        tsdb_chunk_append(&c, 1000 + 15000 * (int64_t)i, 42.0);
    /* 16 bytes for the first sample, then 2 bits a sample */
    CHECK(tsdb_chunk_bytes(&c) <= 16 + 8 + 2 + 30);
    tsdb_chunk_free(&c);
}

static struct tsdb_series *series(struct tsdb *db, const char *name, const char *job)
{
    struct tsdb_label p[] = { { "job", job }, { "__name__", name }, { "empty", "" } };
    struct tsdb_labels l;
    if (tsdb_labels_make(&l, p, 3))
        return NULL;
    bool created;
    struct tsdb_series *s = tsdb_series_get(db, &l, &created);
    if (!created)
        tsdb_labels_free(&l);
    return s;
}

TEST(tsdb_head_select_and_wal_replay)
{
    char dir[] = "/tmp/cairn-tsdb-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct tsdb db;
    char err[256];
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    struct tsdb_series *a = series(&db, "up", "a"), *b = series(&db, "up", "b"),
                       *c = series(&db, "other", "a");
    CHECK(a && b && c && a != b);
    CHECK(series(&db, "up", "a") == a);
    CHECK_INT(a->labels.n, 2);          /* the empty label is dropped */
    for (int i = 0; i < 300; i++) {
        CHECK_INT(tsdb_append(&db, a, 1000 * i, i), TSDB_OK);
        CHECK_INT(tsdb_append(&db, b, 1000 * i, -i), TSDB_OK);
    }
    tsdb_append(&db, c, 5000, 1);
    CHECK_INT(tsdb_append(&db, a, 1000, 7), TSDB_OUT_OF_ORDER);
    CHECK_INT(tsdb_append(&db, a, 299000, 299), TSDB_OK);      /* same sample again */
    CHECK_INT(tsdb_append(&db, a, 299000, 1), TSDB_DUPLICATE);
    CHECK_INT(a->nchunks, 2);
    struct tsdb_matcher m[2];
    CHECK_INT(tsdb_matcher_init(&m[0], "__name__", TSDB_EQ, "up", err, sizeof(err)), 0);
    CHECK_INT(tsdb_matcher_init(&m[1], "job", TSDB_RE, "a|c", err, sizeof(err)), 0);
    struct tsdb_series **out;
    CHECK_INT(tsdb_select(&db, m, 2, 0, 1000000, &out), 1);
    CHECK(out[0] == a);
    free(out);
    CHECK_INT(tsdb_select(&db, m, 1, 0, 1000000, &out), 2);
    free(out);
    /* the time range excludes series without samples in it */
    CHECK_INT(tsdb_select(&db, m, 1, 400000, 500000, &out), 0);
    tsdb_matcher_free(&m[1]);
    CHECK_INT(tsdb_matcher_init(&m[1], "job", TSDB_RE, "(", err, sizeof(err)), -22);
    tsdb_matcher_free(&m[1]);
    tsdb_matcher_free(&m[0]);
    /* iterate a range across chunks */
    struct tsdb_iter it;
    tsdb_iter_init(&it, a, 100000, 150000);
    int64_t t;
    double v;
    int n = 0;
    while (tsdb_iter_next(&it, &t, &v)) {
        CHECK_INT(t, 100000 + 1000 * n);
        n++;
    }
    CHECK_INT(n, 51);
    CHECK_INT(tsdb_commit(&db, true), 0);
    tsdb_close(&db);

    /* replay, then a torn tail is cut at the last good record */
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    CHECK_INT(db.nseries, 3);
    struct tsdb_series *ra = tsdb_series_by_ref(&db, 1);
    CHECK(ra && ra->has_last && ra->last_t == 299000 && ra->last_v == 299);
    tsdb_append(&db, ra, 300000, 300);
    tsdb_commit(&db, true);
    tsdb_close(&db);
    char seg[300];
    snprintf(seg, sizeof(seg), "%s/wal/00000001", dir);
    struct stat st;
    CHECK_INT(stat(seg, &st), 0);
    CHECK_INT(truncate(seg, st.st_size - 5), 0);
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    ra = tsdb_series_by_ref(&db, 1);
    CHECK(ra && ra->last_t == 299000);      /* the torn record is gone, the rest is there */
    tsdb_close(&db);
    unlink(seg);
    snprintf(seg, sizeof(seg), "%s/wal", dir);
    rmdir(seg);
    rmdir(dir);
}

/* Reads s over [0, 1000 s] and checks that sample n is at 1000 n ms with value n * k;
 * returns how many there were, or -1 at the first that is not. */
static int check_linear(struct tsdb_series *s, double k)
{
    struct tsdb_iter it;
    tsdb_iter_init(&it, s, 0, 1000000);
    int64_t t;
    double v;
    int n = 0;
    while (tsdb_iter_next(&it, &t, &v)) {
        if (t != 1000 * n || v != n * k)
            return -1;
        n++;
    }
    return n;
}

TEST(tsdb_snapshot_in_the_background)
{
    char dir[] = "/tmp/cairn-tsdb-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct tsdb db;
    char err[256];
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    db.background = true;
    struct tsdb_series *a = series(&db, "up", "a");
    for (int i = 0; i < 300; i++)
        tsdb_append(&db, a, 1000 * i, i);
    CHECK_INT(tsdb_snapshot_background(&db), 0);
    CHECK(db.snap != NULL);
    /* appends go on meanwhile, into the new segment */
    for (int i = 300; i < 310; i++)
        CHECK_INT(tsdb_append(&db, a, 1000 * i, i), TSDB_OK);
    CHECK_INT(tsdb_snapshot_background(&db), 0);     /* one at a time: nothing new yet */
    for (int k = 0; k < 2000 && db.snap; k++) {      /* tsdb_maintain reports it once synced */
        tsdb_maintain(&db);
        if (db.snap)
            usleep(5000);
    }
    CHECK(db.snap == NULL);
    CHECK_INT(db.st.snapshots, 1);
    char path[300];
    snprintf(path, sizeof(path), "%s/wal/00000001", dir);
    CHECK(access(path, F_OK) != 0);      /* the covered segment is gone */
    snprintf(path, sizeof(path), "%s/snapshot", dir);
    CHECK_INT(access(path, F_OK), 0);
    tsdb_commit(&db, true);
    CHECK_INT(tsdb_snapshot_background(&db), 0);     /* a second one, still syncing at close */
    tsdb_close(&db);                                 /* waits for it */
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    struct tsdb_series *ra = tsdb_series_by_ref(&db, 1);
    CHECK(ra && ra->last_t == 309000 && ra->last_v == 309);
    CHECK_INT(check_linear(ra, 1), 310);
    tsdb_close(&db);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
}

TEST(tsdb_snapshot_roundtrip)
{
    char dir[] = "/tmp/cairn-tsdb-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct tsdb db;
    char err[256];
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    struct tsdb_series *a = series(&db, "up", "a"), *b = series(&db, "up", "b");
    for (int i = 0; i < 250; i++) {
        tsdb_append(&db, a, 1000 * i, i * 0.5);
        tsdb_append(&db, b, 1000 * i, -i);
    }
    CHECK_INT(tsdb_snapshot(&db), 0);
    /* more after the snapshot: new samples and a new series, in the new WAL segment */
    struct tsdb_series *c = series(&db, "late", "x");
    for (int i = 250; i < 260; i++)
        tsdb_append(&db, a, 1000 * i, i * 0.5);
    tsdb_append(&db, c, 5000, 42);
    tsdb_commit(&db, true);
    tsdb_close(&db);                    /* no snapshot: like a kill after the commit */
    char seg[300];
    snprintf(seg, sizeof(seg), "%s/wal/00000001", dir);
    CHECK(access(seg, F_OK) != 0);      /* the covered segment is gone */
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    CHECK_INT(db.nseries, 3);
    struct tsdb_series *ra = tsdb_series_by_ref(&db, 1);
    CHECK(ra && ra->last_t == 259000 && ra->last_v == 129.5);
    /* every sample reads back, across sealed chunks, the restored open chunk and the WAL */
    CHECK_INT(check_linear(ra, 0.5), 260);
    struct tsdb_iter it;
    int64_t t;
    double v;
    int n;
    /* the restored open chunk keeps encoding where it left off */
    CHECK_INT(tsdb_append(&db, ra, 260000, 130), TSDB_OK);
    tsdb_iter_init(&it, ra, 259000, 261000);
    n = 0;
    while (tsdb_iter_next(&it, &t, &v))
        n++;
    CHECK_INT(n, 2);
    CHECK(tsdb_series_by_ref(&db, 3)->last_v == 42);
    CHECK_INT(tsdb_snapshot(&db), 0);
    tsdb_close(&db);
    /* a damaged snapshot stops the open with a clear error and touches nothing */
    char snap[300];
    snprintf(snap, sizeof(snap), "%s/snapshot", dir);
    struct stat st;
    CHECK_INT(stat(snap, &st), 0);
    CHECK_INT(truncate(snap, st.st_size - 3), 0);
    CHECK(tsdb_open(&db, dir, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "head snapshot damaged");
    tsdb_close(&db);
    CHECK_INT(stat(snap, &st), 0);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
}

static int collect_times(const struct tsdb_series *s, int64_t *ts, int max)
{
    struct tsdb_iter it;
    tsdb_iter_init(&it, s, 0, INT64_MAX);
    int64_t t;
    double v;
    int n = 0;
    while (tsdb_iter_next(&it, &t, &v))
        if (n < max)
            ts[n++] = t;
    return n;
}

TEST(tsdb_out_of_order_window)
{
    char dir[] = "/tmp/cairn-tsdb-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct tsdb db;
    char err[256];
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    db.ooo_window_ms = 60000;
    struct tsdb_series *a = series(&db, "m", "a");
    for (int i = 0; i <= 100; i++)
        CHECK_INT(tsdb_append(&db, a, 1000 * i, i), TSDB_OK);
    CHECK_INT(tsdb_append(&db, a, 50500, 50.5), TSDB_OK);     /* within the window */
    CHECK_INT(tsdb_append(&db, a, 45500, 45.5), TSDB_OK);
    CHECK_INT(tsdb_append(&db, a, 50500, 50.5), TSDB_OK);     /* the same again: no-op */
    CHECK_INT(tsdb_append(&db, a, 50500, 7), TSDB_DUPLICATE);
    CHECK_INT(tsdb_append(&db, a, 10000, 1), TSDB_OUT_OF_ORDER); /* older than the window */
    CHECK_INT(db.st.ooo_accepted, 2);
    int64_t ts[200];
    CHECK_INT(collect_times(a, ts, 200), 103);
    bool sorted = true;
    for (int i = 1; i < 103; i++)
        sorted &= ts[i] > ts[i - 1];
    CHECK(sorted);
    CHECK(ts[46] == 45500 && ts[52] == 50500);
    /* a range that holds only out-of-order samples between in-order ones */
    struct tsdb_iter it;
    tsdb_iter_init(&it, a, 50100, 50900);
    int64_t t;
    double v;
    CHECK(tsdb_iter_next(&it, &t, &v) && t == 50500 && v == 50.5);
    CHECK(!tsdb_iter_next(&it, &t, &v));
    tsdb_commit(&db, true);
    tsdb_close(&db);
    /* the WAL replays them (whatever the window), and a snapshot keeps them */
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    a = tsdb_series_by_ref(&db, 1);
    CHECK(a && a->nooo == 2);
    CHECK_INT(collect_times(a, ts, 200), 103);
    CHECK_INT(tsdb_snapshot(&db), 0);
    tsdb_close(&db);
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    a = tsdb_series_by_ref(&db, 1);
    CHECK(a && a->nooo == 2 && a->ooo_t[0] == 45500);
    CHECK_INT(collect_times(a, ts, 200), 103);
    /* retention drops them with the rest */
    db.retention_ms = 1;
    tsdb_apply_retention(&db, 50000);
    CHECK(a->nooo == 1 && a->ooo_t[0] == 50500);
    tsdb_close(&db);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
}

TEST(tsdb_retention_by_size)
{
    struct tsdb db;
    char err[256];
    CHECK_INT(tsdb_open(&db, NULL, err, sizeof(err)), 0);
    struct tsdb_series *a = series(&db, "m", "a"), *b = series(&db, "m", "b");
    /* b starts later: its chunks are the newest */
    for (int i = 0; i < 1200; i++) {
        tsdb_append(&db, a, 1000 * i, i * 1.5);
        tsdb_append(&db, b, 1000 * (i + 600), i * 2.5);
    }
    uint64_t total = tsdb_chunk_bytes_total(&db);
    CHECK(total > 0);
    CHECK_INT(tsdb_apply_retention_size(&db, total), 0);      /* under the limit: nothing */
    size_t dropped = tsdb_apply_retention_size(&db, total / 2);
    CHECK(dropped > 0);
    CHECK(tsdb_chunk_bytes_total(&db) <= total / 2);
    /* the oldest went first: a lost more than b, and what is left starts later */
    CHECK(a->nchunks < b->nchunks);
    struct tsdb_iter it;
    tsdb_iter_init(&it, a, 0, INT64_MAX);
    int64_t t;
    double v;
    CHECK(tsdb_iter_next(&it, &t, &v) && t > 0);
    CHECK(b->has_last && b->last_t == 1000 * (1199 + 600));  /* the open chunk stays */
    tsdb_close(&db);
}

struct collected {
    int n;
    char names[8][64];
    double v[8];
    int64_t ts[8];
    int nlabels[8];
    bool ex[8];
    double ex_v[8];
    int64_t ex_ts[8];
    char ex_label[8][160];      /* the first exemplar label, name=value */
};

static int collect(void *arg, const struct prom_sample *s)
{
    struct collected *c = arg;
    if (c->n < 8) {
        snprintf(c->names[c->n], 64, "%s", s->name);
        c->v[c->n] = s->value;
        c->ts[c->n] = s->has_ts ? s->ts_ms : -1;
        c->nlabels[c->n] = (int)s->nlabels;
        c->ex[c->n] = s->ex.has;
        if (s->ex.has) {
            c->ex_v[c->n] = s->ex.value;
            c->ex_ts[c->n] = s->ex.has_ts ? s->ex.ts_ms : -1;
            snprintf(c->ex_label[c->n], 160, "%s=%s", s->ex.labels[0].name, s->ex.labels[0].value);
        }
    }
    c->n++;
    return 0;
}

TEST(prom_text_parse_formats)
{
    static const char text[] =
        "# HELP x_total help text\n"
        "# TYPE x_total counter\n"
        "x_total{a=\"1\",b=\"q\\\"\\\\\\n\"} 3.5 1700000000000\n"
        "\n"
        "y NaN\n"
        "z{} +Inf\n"
        "w{a=\"x\",} -1e3\n";
    struct collected c = { 0 };
    char err[128];
    CHECK_INT(prom_text_parse(text, sizeof(text) - 1, false, 0, collect, NULL, &c, err, sizeof(err)), 0);
    CHECK_INT(c.n, 4);
    CHECK_STR(c.names[0], "x_total");
    CHECK(c.v[0] == 3.5 && c.ts[0] == 1700000000000);
    CHECK_INT(c.nlabels[0], 2);
    CHECK(isnan(c.v[1]));
    CHECK(isinf(c.v[2]) && c.v[2] > 0);
    CHECK(c.v[3] == -1000 && c.nlabels[3] == 1);
    static const char om[] = "# TYPE a counter\na_total 1 1700000000.5 # {id=\"x\"} 1\n# EOF\n";
    memset(&c, 0, sizeof(c));
    CHECK_INT(prom_text_parse(om, sizeof(om) - 1, true, 0, collect, NULL, &c, err, sizeof(err)), 0);
    CHECK(c.n == 1 && c.ts[0] == 1700000000500);
    CHECK(c.ex[0] && c.ex_v[0] == 1 && c.ex_ts[0] == -1 && strcmp(c.ex_label[0], "id=x") == 0);
    static const char om2[] = "a_bucket{le=\"1\"} 2 # {trace_id=\"ab\",span_id=\"cd\"} 0.5 1700000001.25\n"
                              "a_bucket{le=\"+Inf\"} 2\n# EOF\n";
    memset(&c, 0, sizeof(c));
    CHECK_INT(prom_text_parse(om2, sizeof(om2) - 1, true, 0, collect, NULL, &c, err, sizeof(err)), 0);
    CHECK(c.n == 2 && c.ex[0] && !c.ex[1] && c.ex_v[0] == 0.5 && c.ex_ts[0] == 1700000001250);
    CHECK_STR(c.ex_label[0], "trace_id=ab");
    /* malformed exemplars fail the scrape, as Prometheus's parser does */
    char long_ex[400];
    snprintf(long_ex, sizeof(long_ex), "a 1 # {trace_id=\"%0129d\"} 1\n# EOF\n", 0);
    const char *const bad_ex[] = { "a 1 # x\n# EOF\n", "a 1 # {id=\"x\"}\n# EOF\n",
                                   "a 1 # {id=\"x\"} v\n# EOF\n", "a 1 # {id=\"x\"} 1 2 3\n# EOF\n",
                                   long_ex };
    for (size_t i = 0; i < sizeof(bad_ex) / sizeof(bad_ex[0]); i++) {
        memset(&c, 0, sizeof(c));
        if (prom_text_parse(bad_ex[i], strlen(bad_ex[i]), true, 0, collect, NULL, &c, err, sizeof(err)) == 0)
            test_fail(__FILE__, __LINE__, "accepted bad exemplar %s", bad_ex[i]);
    }
    static const char *const bad[] = { "x{a=\"1\" 2\n", "x 1 2 3\n", "x{a=1} 2\n", "1x 2\n",
                                       "x{a=\"\\q\"} 1\n", "x{a=\"1\",a=\"2\"} 1\n", "x abc\n" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&c, 0, sizeof(c));
        int r = prom_text_parse(bad[i], strlen(bad[i]), false, 0, collect, NULL, &c, err, sizeof(err));
        if (r == 0)
            test_fail(__FILE__, __LINE__, "accepted bad input %s", bad[i]);
        CHECK(strncmp(err, "line 1: ", 8) == 0);
    }
    /* OpenMetrics needs its # EOF */
    CHECK(prom_text_parse("a 1\n", 4, true, 0, collect, NULL, &c, err, sizeof(err)) != 0);
    /* the label limit */
    CHECK(prom_text_parse("a{x=\"1\",y=\"2\"} 1\n", 17, false, 1, collect, NULL, &c, err,
                          sizeof(err)) != 0);
}

static struct prom_exemplar trace_ex(const char *tid, double v, int64_t ts_ms)
{
    struct prom_exemplar e = { .has = true, .nlabels = 1, .value = v, .has_ts = ts_ms >= 0, .ts_ms = ts_ms };
    e.labels[0] = (struct tsdb_label){ "trace_id", tid };
    return e;
}

TEST(prom_exemplars_dedup_order_wrap_and_query)
{
    char dir[] = "/tmp/cairn-ex-XXXXXX", err[256], cmd[64];
    CHECK(mkdtemp(dir) != NULL);
    struct tsdb db;
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    struct tsdb_series *a = series(&db, "lat_bucket", "a"), *b = series(&db, "lat_bucket", "b"),
                       *c = series(&db, "lat_bucket", "c");
    struct prom_exemplars x;
    prom_exemplars_init(&x, 4);
    struct prom_exemplar e1 = trace_ex("t1", 0.5, 1000);
    CHECK_INT(prom_exemplars_add(&x, a->ref, &e1, 0), 0);
    CHECK_INT(prom_exemplars_add(&x, a->ref, &e1, 0), 0);          /* scraped again: kept once */
    CHECK(x.n == 1 && x.appended == 1);
    struct prom_exemplar old = trace_ex("t0", 0.1, 500);
    CHECK_INT(prom_exemplars_add(&x, a->ref, &old, 0), -ERANGE);   /* older than a's newest */
    struct prom_exemplar nots = trace_ex("t2", 0.2, -1);
    CHECK_INT(prom_exemplars_add(&x, c->ref, &nots, 2000), 0);     /* the scrape's time */
    CHECK(x.last.n == 2);
    for (int i = 3; i <= 6; i++) {                                  /* wraps: t1 and c's t2 go */
        char tid[8];
        snprintf(tid, sizeof(tid), "t%d", i);
        struct prom_exemplar e = trace_ex(tid, i, 1000 * i);
        CHECK_INT(prom_exemplars_add(&x, (i % 2 ? a : b)->ref, &e, 0), 0);
    }
    CHECK(x.n == 4 && x.last.n == 2);       /* c left the buffer, and the map */
    struct promql_node *q = promql_parse("sum(rate(lat_bucket{job=\"a\"}[5m]))", err, sizeof(err));
    CHECK(q != NULL);
    struct buf out = BUF_INIT;
    CHECK_INT(prom_exemplars_query(&x, &db, q, 0, 10000, &out), 0);
    CHECK_STR(buf_head(&out), "{\"status\":\"success\",\"data\":[{\"seriesLabels\":{\"__name__\":\"lat_bucket\","
                              "\"job\":\"a\"},\"exemplars\":[{\"labels\":{\"trace_id\":\"t3\"},\"value\":\"3\","
                              "\"timestamp\":3.000},{\"labels\":{\"trace_id\":\"t5\"},\"value\":\"5\","
                              "\"timestamp\":5.000}]}]}");
    buf_reset(&out);
    CHECK_INT(prom_exemplars_query(&x, &db, q, 4000, 10000, &out), 0);   /* the range */
    CHECK(strstr(buf_head(&out), "t3") == NULL && strstr(buf_head(&out), "t5") != NULL);
    buf_free(&out);
    promql_free(q);
    prom_exemplars_free(&x);
    tsdb_close(&db);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
}

/* Encodes values into an XOR chunk, recodes it as scaled decimals, and checks the
 * samples come back bit for bit; returns the recoded bits (0: not recoded). */
static uint32_t recode_roundtrip(const double *vs, int n, uint32_t *xor_bits)
{
    struct tsdb_chunk c;
    tsdb_chunk_init(&c);
    int64_t t0 = 1700000000123;
    for (int i = 0; i < n; i++)
        tsdb_chunk_append(&c, t0 + 15000 * i + (i % 3), vs[i]);
    *xor_bits = c.nbits;
    uint8_t *out;
    uint32_t bits = tsdb_chunk_recode(c.b, c.nbits, c.n, t0, &out);
    if (bits) {
        struct tsdb_chunk_iter it;
        tsdb_chunk_iter_init_enc(&it, out, bits, (uint16_t)n, TSDB_ENC_DEC, t0);
        int64_t t;
        double v;
        int k = 0;
        while (tsdb_chunk_next(&it, &t, &v)) {
            CHECK_INT(t, t0 + 15000 * k + (k % 3));
            CHECK(memcmp(&v, &vs[k], 8) == 0);
            k++;
        }
        CHECK(!it.err);
        CHECK_INT(k, n);
        /* a truncated chunk ends with an error, never reads past its bits */
        tsdb_chunk_iter_init_enc(&it, out, bits / 2, (uint16_t)n, TSDB_ENC_DEC, t0);
        while (tsdb_chunk_next(&it, &t, &v))
            ;
        CHECK(it.err);
        free(out);
    }
    tsdb_chunk_free(&c);
    return bits;
}

TEST(tsdb_chunk_decimal_recoding)
{
    double counter[120], gauge[120], neg[120], big[120], odd[120], stale[120];
    for (int i = 0; i < 120; i++) {
        counter[i] = 1000.0 + 7 * i;                    /* a steady counter */
        gauge[i] = 20 + ((i * 7) % 100) / 10.0;         /* decimals: 20.7, 21.4, ... */
        neg[i] = -0.125 * (i % 9) + 3.5;                /* three places after the point */
        big[i] = 1e300 * (i + 1);                       /* no exact scaled integer */
        odd[i] = i == 50 ? -0.0 : i;                    /* -0 must keep its sign */
        stale[i] = i == 119 ? tsdb_stale_nan() : i;     /* the staleness marker */
    }
    uint32_t xb, b;
    b = recode_roundtrip(counter, 120, &xb);
    /* jittered timestamps cost ~9 bits a sample, the steady counter ~1 */
    CHECK(b > 0 && b * 2 < xb);
    CHECK(b < 120 * 11);
    b = recode_roundtrip(gauge, 120, &xb);
    CHECK(b > 0 && b < xb / 3);
    CHECK(recode_roundtrip(neg, 120, &xb) > 0);
    CHECK_INT(recode_roundtrip(big, 120, &xb), 0);
    CHECK_INT(recode_roundtrip(odd, 120, &xb), 0);
    CHECK_INT(recode_roundtrip(stale, 120, &xb), 0);
    CHECK(recode_roundtrip(counter, 1, &xb) > 0);       /* one sample */
}
