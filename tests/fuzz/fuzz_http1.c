/* libFuzzer harness: HTTP/1.1 request and response heads and the chunked decoder.
 * The input is parsed whole, then again fed in two pieces to check that the
 * incremental result matches. */
#include "core/http1.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct http_request r1, r2;
    struct http1_scan sc = { 0 };
    int whole = http1_parse_request(s, size, &sc, &http1_default_limits, &r1);

    size_t cut = size ? data[0] % (size + 1) : 0;
    struct http1_scan sc2 = { 0 };
    int part = http1_parse_request(s, cut, &sc2, &http1_default_limits, &r2);
    if (part == 0)
        part = http1_parse_request(s, size, &sc2, &http1_default_limits, &r2);
    if (part > 0 && whole > 0 && part != whole)
        abort();
    if (whole > 0 && part > 0 && !strv_eq(r1.path, r2.path))
        abort();

    if (whole > 0 && (r1.chunked || r1.content_length >= 0)) {
        struct http1_chunked c = { 0 };
        struct buf out = BUF_INIT;
        size_t used = 0;
        http1_chunked_feed(&c, s + whole, size - (size_t)whole, &used, &out, 1 << 20);
        if (used > size - (size_t)whole)
            abort();
        buf_free(&out);
    }

    struct http_response resp;
    struct http1_scan sc3 = { 0 };
    http1_parse_response(s, size, &sc3, &http1_default_limits, &resp);

    struct http1_chunked c = { 0 };
    struct buf out = BUF_INIT;
    size_t used = 0;
    http1_chunked_feed(&c, s, size, &used, &out, 1 << 16);
    buf_free(&out);
    return 0;
}
