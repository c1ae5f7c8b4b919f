/* libFuzzer harness: the TraceQL parser over untrusted text, and the evaluator of
 * whatever parses, over a small trace (a root, two children, a grandchild). */
#include "traces/traces_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char TRACE[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"api\"}}]},"
    "\"scopeSpans\":[{\"spans\":["
    "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000001\",\"name\":\"GET /\",\"kind\":2,"
    "\"startTimeUnixNano\":\"1000\",\"endTimeUnixNano\":\"900000\",\"attributes\":[{\"key\":\"http.status_code\",\"value\":{\"intValue\":\"500\"}}]},"
    "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000002\",\"parentSpanId\":\"0000000000000001\",\"name\":\"db\",\"kind\":3,"
    "\"startTimeUnixNano\":\"2000\",\"endTimeUnixNano\":\"5000\",\"status\":{\"code\":2},\"attributes\":[{\"key\":\"ratio\",\"value\":{\"doubleValue\":0.5}}]},"
    "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000003\",\"parentSpanId\":\"0000000000000001\",\"name\":\"cache\",\"kind\":3,"
    "\"startTimeUnixNano\":\"3000\",\"endTimeUnixNano\":\"4000\",\"attributes\":[{\"key\":\"hit\",\"value\":{\"boolValue\":true}}]},"
    "{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000004\",\"parentSpanId\":\"0000000000000002\",\"name\":\"query\",\"kind\":1,"
    "\"startTimeUnixNano\":\"2500\",\"endTimeUnixNano\":\"4500\"}]}]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    static struct buf pb;
    static struct tr_trace_view v;
    if (!buf_used(&pb)) {
        char err[256];
        if (tr_otlp_json_to_pb(TRACE, strlen(TRACE), &pb, err, sizeof(err)) ||
            tr_view_add(&v, (const uint8_t *)buf_head(&pb), buf_used(&pb)))
            abort();
        tr_view_link(&v);
    }
    struct tq_query *q = NULL;
    char err[512];
    if (tq_parse((const char *)data, size, &q, err, sizeof(err)) == 0) {
        struct tq_result res;
        tq_eval(q, &v, &res);
        tq_result_free(&res);
        char *tok[16];
        size_t n = tq_tokens(q, tok, 16);
        for (size_t i = 0; i < n; i++)
            free(tok[i]);
        tq_free(q);
    }
    return 0;
}
