/* s3: SigV4 against AWS's published examples, the aws-chunked decoder, CRC32C,
 * the XML reader, bucket names, and the data files' block checks. */
#include "core/http1.h"
#include "s3/s3_internal.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char secret[] = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
static const char empty_sha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

TEST(s3_sigv4_matches_the_aws_example)
{
    /* "GET Object" from AWS's SigV4 documentation for S3 */
    static const char req[] = "GET /test.txt HTTP/1.1\r\nHost: examplebucket.s3.amazonaws.com\r\n"
                              "Range: bytes=0-9\r\nx-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\r\n"
                              "x-amz-date: 20130524T000000Z\r\n"
                              "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41\r\n\r\n";
    struct http_request h;
    struct http1_scan sc = { 0 };
    CHECK(http1_parse_request(req, sizeof(req) - 1, &sc, &http1_default_limits, &h) > 0);
    struct s3_sig s;
    const struct http_header *az = NULL;
    for (size_t i = 0; i < h.nheaders; i++)
        if (strv_caseeq_cstr(h.headers[i].name, "authorization"))
            az = &h.headers[i];
    CHECK_INT(s3_sig_parse_header(az->value, &s), S3E_NONE);
    CHECK_STR(s.access, "AKIAIOSFODNN7EXAMPLE");
    CHECK_STR(s.region, "us-east-1");
    strcpy(s.amzdate, "20130524T000000Z");
    struct buf can = BUF_INIT;
    CHECK_INT(s3_sig_canonical(&can, &h, &s, empty_sha), 0);
    buf_putc(&can, 0);
    CHECK_STR(buf_head(&can), "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
                              "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
                              "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
                              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    uint8_t key[32];
    char sig[65];
    s3c_signing_key(secret, s.date, s.region, s.service, key);
    s3_sig_sign(key, &s, strv_make(buf_head(&can), buf_used(&can) - 1), sig);
    CHECK_STR(sig, s.signature);
    buf_free(&can);
    CHECK_INT(s3_sig_parse_header(STRV("AWS4-HMAC-SHA256 Credential=x, Signature=y"), &s),
              S3E_AUTH_HEADER_MALFORMED);
}

TEST(s3_canonical_query_and_path)
{
    static const char req[] = "GET /b/a%20b+c~%2F?prefix=x%2By&delimiter=%2F&list-type=2&empty HTTP/1.1\r\n"
                              "Host: h\r\nX-Amz-Date:   a   b  \r\n\r\n";
    struct http_request h;
    struct http1_scan sc = { 0 };
    CHECK(http1_parse_request(req, sizeof(req) - 1, &sc, &http1_default_limits, &h) > 0);
    struct s3_sig s;
    memset(&s, 0, sizeof(s));
    strcpy(s.signed_headers, "host;x-amz-date");
    struct buf can = BUF_INIT;
    CHECK_INT(s3_sig_canonical(&can, &h, &s, "UNSIGNED-PAYLOAD"), 0);
    buf_putc(&can, 0);
    /* the path encoded once ('/' from %2F kept as a slash: S3 does not double-encode),
     * query sorted and encoded, values folded */
    CHECK_STR(buf_head(&can), "GET\n/b/a%20b%2Bc~/\ndelimiter=%2F&empty=&list-type=2&prefix=x%2By\n"
                              "host:h\nx-amz-date:a b\n\nhost;x-amz-date\nUNSIGNED-PAYLOAD");
    buf_free(&can);
}


static int sink(void *arg, const char *p, size_t n)
{
    return buf_append(arg, p, n) ? -1 : 0;
}

TEST(s3_aws_chunked_signatures_match_the_aws_example)
{
    /* "Signature Calculations for the Authorization Header: Transferring Payload in
     * Multiple Chunks": 65536 + 1024 bytes of 'a' */
    struct s3_sig s;
    memset(&s, 0, sizeof(s));
    strcpy(s.date, "20130524");
    strcpy(s.region, "us-east-1");
    strcpy(s.service, "s3");
    strcpy(s.amzdate, "20130524T000000Z");
    strcpy(s.signature, "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9");
    uint8_t key[32];
    s3c_signing_key(secret, s.date, s.region, s.service, key);
    struct buf body = BUF_INIT;
    buf_puts(&body, "10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n");
    for (int i = 0; i < 65536; i++)
        buf_putc(&body, 'a');
    buf_puts(&body, "\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n");
    for (int i = 0; i < 1024; i++)
        buf_putc(&body, 'a');
    buf_puts(&body, "\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n");
    /* fed in odd pieces */
    struct s3_chunked d;
    struct buf out = BUF_INIT;
    CHECK_INT(s3_chunked_init(&d, true, false, key, &s), 0);
    int r = 0;
    for (size_t off = 0; off < buf_used(&body) && r == 0; off += 777)
        r = s3_chunked_feed(&d, buf_head(&body) + off, MIN((size_t)777, buf_used(&body) - off), sink, &out);
    CHECK_INT(r, 1);
    CHECK_INT((long long)buf_used(&out), 66560);
    s3_chunked_free(&d);
    /* one flipped data byte breaks the chain */
    buf_head(&body)[200] = 'b';
    buf_reset(&out);
    CHECK_INT(s3_chunked_init(&d, true, false, key, &s), 0);
    CHECK_INT(s3_chunked_feed(&d, buf_head(&body), buf_used(&body), sink, &out), -S3E_SIGNATURE_MISMATCH);
    s3_chunked_free(&d);
    /* signed chunks with a signed trailer (vector from an independent implementation
     * of the same rules) */
    static const char st[] =
        "3;chunk-signature=e911d05c1a01ba430c96ab3bd82a248c6995be8f4db64535e784a24c5567504a\r\nabc\r\n"
        "0;chunk-signature=72b8084eba886bba10c630f4f65aad0b086cf78510a76d5ca2a961016d316780\r\n"
        "x-amz-checksum-crc32c:sOO8/Q==\r\n"
        "x-amz-trailer-signature:8d74e614577e5b6fad7788e5773acd9aea0e0e37c31709ed403d12d0a6ee9d40\r\n\r\n";
    char bad[sizeof(st)];
    memcpy(bad, st, sizeof(st));
    bad[strstr(bad, "sOO8") - bad] = 'X';    /* a trailer changed in transit */
    for (int pass = 0; pass < 2; pass++) {
        buf_reset(&out);
        CHECK_INT(s3_chunked_init(&d, true, true, key, &s), 0);
        CHECK_INT(s3_chunked_feed(&d, pass ? bad : st, sizeof(st) - 1, sink, &out),
                  pass ? -S3E_SIGNATURE_MISMATCH : 1);
        s3_chunked_free(&d);
    }
    /* unsigned with a trailer */
    static const char tr[] = "3\r\nabc\r\n0\r\nx-amz-checksum-crc32c:AAAAAA==\r\n\r\n";
    buf_reset(&out);
    CHECK_INT(s3_chunked_init(&d, false, true, NULL, &s), 0);
    CHECK_INT(s3_chunked_feed(&d, tr, sizeof(tr) - 1, sink, &out), 1);
    char v[32];
    CHECK_STR(s3_chunked_trailer(&d, "x-amz-checksum-crc32c", v, sizeof(v)), "AAAAAA==");
    s3_chunked_free(&d);
    CHECK_INT(s3_chunked_init(&d, false, false, NULL, &s), 0);
    CHECK_INT(s3_chunked_feed(&d, "zz\r\n", 4, sink, &out), -S3E_INVALID_CHUNK);
    s3_chunked_free(&d);
    buf_free(&out);
    buf_free(&body);
}

/* CRC-32C one bit at a time: the reference the fast paths must agree with. */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

TEST(s3_crc32c_long_buffers_match_the_bitwise_definition)
{
    size_t big = 3 * 65536 + 123;
    uint8_t *p = malloc(big);
    uint32_t x = 12345;
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
    /* lengths around the three-stream stride (3 x 8 KiB), a block, and more */
    static const size_t lens[] = { 0, 1, 7, 8, 24575, 24576, 24577, 49152, 65536, 100003, 3 * 65536 + 123 };
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        CHECK_INT(s3_crc32c(0, p, lens[i]), crc32c_bitwise(0, p, lens[i]));
    /* continued from a state, from an odd offset */
    uint32_t a = s3_crc32c(0, p, 5);
    CHECK_INT(s3_crc32c(a, p + 5, big - 5), crc32c_bitwise(0, p, big));
    free(p);
}

TEST(s3_crc32c_xml_and_names)
{
    CHECK_INT(s3_crc32c(0, "123456789", 9), 0xE3069283);     /* the CRC-32C check value */
    CHECK_INT(s3_crc32c(s3_crc32c(0, "1234", 4), "56789", 5), 0xE3069283);
    static const char x[] = "<?xml version=\"1.0\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                            "<Object><Key>a&amp;b</Key></Object><Object><Key>c</Key></Object></Delete>";
    struct s3_xnode *n = s3_xml_parse(x, sizeof(x) - 1);
    CHECK(n && strcmp(n->name, "Delete") == 0);
    CHECK_STR(s3_xml_text(n, "Object") ? s3_xml_text(n->child, "Key") : "", "a&b");
    s3_xml_free(n);
    CHECK(s3_xml_parse("<a><b></a>", 10) == NULL);
    static const char bomb[] = "<!DOCTYPE a [<!ENTITY x \"xx\">]><a>&x;</a>";
    CHECK(s3_xml_parse(bomb, sizeof(bomb) - 1) == NULL);
    CHECK(s3__bucket_name_ok("my-bucket.v2"));
    CHECK(!s3__bucket_name_ok("ab"));
    CHECK(!s3__bucket_name_ok("Upper"));
    CHECK(!s3__bucket_name_ok("a..b"));
    CHECK(!s3__bucket_name_ok("192.168.1.1"));
    CHECK(!s3__bucket_name_ok("-start"));
    CHECK_INT(s3_parse_amzdate("20130524T000000Z"), 1369353600);
    CHECK_INT(s3_parse_amzdate("2013-05-24"), -1);
}

TEST(s3_data_files_check_every_block)
{
    char dir[] = "/tmp/cairn-s3-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char sub[64];
    snprintf(sub, sizeof(sub), "%s/data", dir);
    mkdir(sub, 0755);
    struct s3_writer w;
    CHECK_INT(s3_writer_open(&w, dir, 1u << S3_CK_CRC32C), 0);
    size_t n = 3 * S3_BLOCK + 100;
    char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 13);
    for (size_t off = 0; off < n; off += 1000)
        CHECK_INT(s3_writer_write(&w, data + off, MIN((size_t)1000, n - off)), 0);
    uint8_t md5[16];
    CHECK_INT(s3_writer_finish(&w, md5), 0);
    char ck[64];
    s3_writer_checksum(&w, S3_CK_CRC32C, ck, sizeof(ck));
    CHECK(ck[0] != 0);
    char id[40];
    snprintf(id, sizeof(id), "%s", w.id);
    s3_writer_done(&w);
    struct s3_reader r;
    CHECK_INT(s3_reader_open(&r, dir, id, n), 0);
    char *back = malloc(n);
    CHECK_INT(s3_reader_read(&r, 0, back, n), (long long)n);
    CHECK(memcmp(back, data, n) == 0);
    CHECK_INT(s3_reader_read(&r, S3_BLOCK - 5, back, 10), 10);
    CHECK(memcmp(back, data + S3_BLOCK - 5, 10) == 0);
    s3_reader_close(&r);
    /* flip one byte of block 2: reads that touch it fail, others still work */
    char path[128];
    snprintf(path, sizeof(path), "%s/data/%.2s/%s", dir, id, id);
    int fd = open(path, O_RDWR);
    char c;
    CHECK_INT(pread(fd, &c, 1, 2 * S3_BLOCK + 7), 1);
    c ^= 1;
    CHECK_INT(pwrite(fd, &c, 1, 2 * S3_BLOCK + 7), 1);
    close(fd);
    CHECK_INT(s3_reader_open(&r, dir, id, n), 0);
    CHECK_INT(s3_reader_read(&r, 0, back, 100), 100);
    CHECK_INT(s3_reader_read(&r, 2 * S3_BLOCK, back, 100), -EIO);
    s3_reader_close(&r);
    char list[80];
    snprintf(list, sizeof(list), "%s %zu\n", id, n);
    s3_files_unlink(dir, list);
    CHECK(access(path, F_OK) != 0);
    /* a large write hashes on its own thread: the same digests as in one go */
    size_t big = (5u << 20) + 12345;
    char *bd = malloc(big);
    for (size_t i = 0; i < big; i++)
        bd[i] = (char)(i * 2654435761u >> 13);
    CHECK_INT(s3_writer_open(&w, dir, (1u << S3_CK_SHA256) | (1u << S3_CK_CRC32C)), 0);
    for (size_t off = 0; off < big; off += 100003)
        CHECK_INT(s3_writer_write(&w, bd + off, MIN((size_t)100003, big - off)), 0);
    CHECK(w.threaded);
    CHECK_INT(s3_writer_finish(&w, md5), 0);
    uint8_t want[32];
    unsigned wl = 0;
    EVP_Digest(bd, big, want, &wl, EVP_md5(), NULL);
    CHECK(memcmp(md5, want, 16) == 0);
    char got[64], exp[64];
    s3_writer_checksum(&w, S3_CK_SHA256, got, sizeof(got));
    EVP_Digest(bd, big, want, &wl, EVP_sha256(), NULL);
    s3_b64(want, 32, exp, sizeof(exp));
    CHECK_STR(got, exp);
    s3_writer_checksum(&w, S3_CK_CRC32C, got, sizeof(got));
    uint32_t c32 = s3_crc32c(0, bd, big);
    uint8_t be[4] = { (uint8_t)(c32 >> 24), (uint8_t)(c32 >> 16), (uint8_t)(c32 >> 8), (uint8_t)c32 };
    s3_b64(be, 4, exp, sizeof(exp));
    CHECK_STR(got, exp);
    snprintf(id, sizeof(id), "%s", w.id);
    s3_writer_done(&w);
    CHECK_INT(s3_reader_open(&r, dir, id, big), 0);
    char *bb = malloc(big);
    CHECK_INT(s3_reader_read(&r, 0, bb, big), (long long)big);
    CHECK(memcmp(bb, bd, big) == 0);
    s3_reader_close(&r);
    free(bb);
    free(bd);
    /* an aborted large write leaves no file and no thread */
    CHECK_INT(s3_writer_open(&w, dir, 0), 0);
    char *zero = calloc(1, 3u << 20);
    CHECK_INT(s3_writer_write(&w, zero, 3u << 20), 0);
    char apath[sizeof(w.path)];
    memcpy(apath, w.path, sizeof(apath));
    s3_writer_abort(&w);
    free(zero);
    CHECK(access(apath, F_OK) != 0);
    free(data);
    free(back);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
}
