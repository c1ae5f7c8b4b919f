/* libFuzzer harness: the traces role's decoders over untrusted bytes. The first
 * byte picks OTLP JSON, Zipkin v2 JSON or OTLP protobuf; whatever decodes is
 * ingested into a store (validation, limits, the WAL, the head), read back as a
 * trace view and rendered in every API's shape; when the head is written into a
 * block, a TraceQL search reads it through its search columns. A first byte of
 * 0xf0 or more makes the rest a page of search columns (each length-prefixed)
 * read as a block's would be. */
#include "traces/traces_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tr_store st;
static struct traces_conf conf;
static bool opened;

static void render(const uint8_t *p, size_t n)
{
    struct tr_trace_view v = { 0 };
    if (tr_view_add(&v, p, n) == 0) {
        tr_view_link(&v);
        struct buf b = BUF_INIT;
        tr_render_jaeger(&v, &b);
        tr_render_otlp_json(&v, &b, "batches");
        tr_render_zipkin(&v, &b);
        buf_free(&b);
    }
    tr_view_free(&v);
}

struct cols_in {
    struct pb col[TC_N];
    struct pb tail;                         /* the key columns */
};

/* Columns as given; a key column at rel bytes past the last column, clen long. */
static int fetch_col(void *arg, int frame, uint64_t rel, uint32_t clen, uint32_t rlen, struct buf *out)
{
    struct cols_in *c = arg;
    struct pb b = c->col[frame < TC_N ? frame : TC_N - 1];
    if (frame >= TC_N) {
        b.p = c->tail.p + (rel < (uint64_t)(c->tail.end - c->tail.p) ? rel : (uint64_t)(c->tail.end - c->tail.p));
        b.end = (uint64_t)(c->tail.end - b.p) < clen ? c->tail.end : b.p + clen;
        if ((size_t)(b.end - b.p) != rlen)
            return -EIO;
    }
    buf_reset(out);
    return buf_append(out, b.p, (size_t)(b.end - b.p));
}

static void columns(const uint8_t *p, size_t n)
{
    struct cols_in in;
    struct pb all = { p, p + n };
    for (int c = 0; c < TC_N; c++) {
        uint64_t l = 0;
        if (pb_varint(&all, &l) || l > (uint64_t)(all.end - all.p))
            l = (uint64_t)(all.end - all.p);
        in.col[c] = (struct pb){ all.p, all.p + l };
        all.p += l;
    }
    in.tail = all;
    struct tc_page pg = { 0 };
    struct tr_trace_view v = { 0 };
    struct tq_query *q = NULL;
    char err[128];
    const char *qs = "{ duration > 1ns && .a =~ \"x|y\" } >> { resource.b != 1 } | count() > 0";
    if (tc_page_load(&pg, fetch_col, &in) == 0 && tq_parse(qs, strlen(qs), &q, err, sizeof(err)) == 0) {
        for (uint32_t t = 0; t < pg.ntraces; t++) {
            struct tq_result res;
            if (tc_page_view(&pg, t, &v) == 0 && tq_eval(q, &v, &res) >= 0)
                tq_result_free(&res);
        }
    }
    tq_free(q);
    tr_view_free(&v);
    tc_page_free(&pg);
}

static int count_match(void *arg, const struct tr_trace_view *v)
{
    struct tq_result res;
    int n = tq_eval(arg, v, &res);
    tq_result_free(&res);
    return n > 0;
}

static int count_fn(void *arg, const uint8_t id[16], const uint8_t *p, size_t n)
{
    (void)arg, (void)id, (void)p, (void)n;
    return 0;
}

/* A search over the blocks: every trace through its columns. */
static void search_blocks(void)
{
    struct tq_query *q = NULL;
    char err[128];
    const char *qs = "{ status = error || span.a = 1 } > { name =~ \"x.*\" }";
    if (tq_parse(qs, strlen(qs), &q, err, sizeof(err)))
        abort();
    struct tr_search s = { .tenant = "fuzz", .from = INT64_MIN, .to = INT64_MAX, .fn = count_fn,
                           .match = count_match, .arg = q };
    tr_store_search(&st, &s);
    tq_free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    if (!opened) {
        char dir[] = "/tmp/fuzz-traces-XXXXXX";
        if (!mkdtemp(dir))
            abort();
        conf.trace_idle_ms = 0;
        conf.max_block_duration_ms = 0;
        conf.max_block_bytes = 1 << 20;
        conf.max_bytes_per_trace = 100000;
        conf.rate_bytes = 1e12;
        conf.burst_bytes = 1e12;
        conf.max_attribute_bytes = 64;
        char err[256];
        if (tr_store_open(&st, dir, &conf, err, sizeof(err)))
            abort();
        opened = true;
    }
    if (data[0] >= 0xf0) {
        columns(data + 1, size - 1);
        return 0;
    }
    struct buf pb = BUF_INIT;
    char err[512];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    int r = 0;
    switch (data[0] % 3) {
    case 0:
        r = tr_otlp_json_to_pb((const char *)p, n, &pb, err, sizeof(err));
        p = (const uint8_t *)buf_head(&pb), n = buf_used(&pb);
        break;
    case 1:
        r = tr_zipkin_json_to_pb((const char *)p, n, &pb, err, sizeof(err));
        p = (const uint8_t *)buf_head(&pb), n = buf_used(&pb);
        break;
    default:
        break;
    }
    if (!r) {
        render(p ? p : (const uint8_t *)"", n);
        struct tr_ingest_result res;
        tr_store_ingest(&st, "fuzz", p ? p : (const uint8_t *)"", n, &res);
        if (st.head_bytes > (256u << 10)) {
            tr_store_tick(&st, true);
            search_blocks();
        }
    }
    buf_free(&pb);
    return 0;
}
