/* libFuzzer harness: the traces role's decoders over untrusted bytes. The first
 * byte picks OTLP JSON, Zipkin v2 JSON or OTLP protobuf; whatever decodes is
 * ingested into a store (validation, limits, the WAL, the head), read back as a
 * trace view and rendered in every API's shape. */
#include "traces/traces_internal.h"

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
        if (st.head_bytes > (1u << 20))
            tr_store_tick(&st, true);
    }
    buf_free(&pb);
    return 0;
}
