/* libFuzzer harness: what the s3 role reads from a client before trusting it -
 * the SigV4 Authorization header and presigned query, the canonical request
 * built from a parsed HTTP head, the aws-chunked decoder (signed and with
 * trailers, fed whole and in two pieces: the same bytes must come out), and the
 * XML request bodies. The first byte picks the target. */
#include "core/http1.h"
#include "s3/s3_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink(void *arg, const char *p, size_t n)
{
    return buf_append(arg, p, n) ? -1 : 0;
}

static void chunked(const char *s, size_t n, bool sign, bool trailer)
{
    struct s3_sig sig;
    memset(&sig, 0, sizeof(sig));
    strcpy(sig.date, "20260101");
    strcpy(sig.region, "us-east-1");
    strcpy(sig.service, "s3");
    strcpy(sig.amzdate, "20260101T000000Z");
    memset(sig.signature, 'a', 64);
    uint8_t key[32] = { 1 };
    struct s3_chunked a, b;
    struct buf oa = BUF_INIT, ob = BUF_INIT;
    if (s3_chunked_init(&a, sign, trailer, key, &sig) || s3_chunked_init(&b, sign, trailer, key, &sig))
        abort();
    int ra = s3_chunked_feed(&a, s, n, sink, &oa);
    size_t cut = n ? (unsigned char)s[0] % (n + 1) : 0;
    int rb = s3_chunked_feed(&b, s, cut, sink, &ob);
    if (rb == 0)
        rb = s3_chunked_feed(&b, s + cut, n - cut, sink, &ob);
    /* the same verdict, and the same bytes when both accepted everything */
    if (ra == 1 && rb == 1 && !strv_eq(buf_strv(&oa), buf_strv(&ob)))
        abort();
    char v[128];
    s3_chunked_trailer(&a, "x-amz-checksum-crc32", v, sizeof(v));
    s3_chunked_free(&a);
    s3_chunked_free(&b);
    buf_free(&oa);
    buf_free(&ob);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 5) {
    case 0: {
        struct s3_sig sig;
        s3_sig_parse_header(strv_make(s, n), &sig);
        s3_sig_parse_query(strv_make(s, n), &sig);
        break;
    }
    case 1: {
        /* a request head, canonicalised with the headers it names */
        struct http_request h;
        struct http1_scan sc = { 0 };
        if (http1_parse_request(s, n, &sc, &http1_default_limits, &h) > 0) {
            struct s3_sig sig;
            memset(&sig, 0, sizeof(sig));
            const struct http_header *hd = NULL;
            for (size_t i = 0; i < h.nheaders; i++)
                if (strv_caseeq_cstr(h.headers[i].name, "x-sig"))
                    hd = &h.headers[i];
            snprintf(sig.signed_headers, sizeof(sig.signed_headers), "%.*s",
                     hd ? (int)hd->value.n : 4, hd ? hd->value.p : "host");
            struct buf out = BUF_INIT;
            s3_sig_canonical(&out, &h, &sig, "UNSIGNED-PAYLOAD");
            buf_free(&out);
        }
        break;
    }
    case 2:
        chunked(s, n, false, true);
        break;
    case 3:
        chunked(s, n, true, (n & 1) != 0);
        break;
    case 4: {
        struct s3_xnode *x = s3_xml_parse(s, n);
        if (x) {
            s3_xml_text(x, "Key");
            struct buf b = BUF_INIT;
            s3_xml_escape(&b, s, n);
            buf_free(&b);
        }
        s3_xml_free(x);
        break;
    }
    }
    return 0;
}
