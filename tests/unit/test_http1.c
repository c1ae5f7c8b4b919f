#include "core/http1.h"
#include "test.h"

#include <stdlib.h>

static int parse(const char *s, struct http_request *r)
{
    struct http1_scan sc = { 0 };
    return http1_parse_request(s, strlen(s), &sc, &http1_default_limits, r);
}

TEST(http1_parse_simple_get)
{
    struct http_request r;
    const char *s = "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n"
                    "X-Empty:\r\nX-Pad:   v  \r\n\r\n";
    CHECK_INT(parse(s, &r), (int)strlen(s));
    CHECK(strv_eq_cstr(r.method, "GET"));
    CHECK(strv_eq_cstr(r.path, "/a/b"));
    CHECK(strv_eq_cstr(r.query, "x=1&y=2"));
    CHECK(strv_eq_cstr(r.host, "example.com"));
    CHECK_INT(r.minor, 1);
    CHECK_INT(r.nheaders, 4);
    CHECK(strv_eq_cstr(r.headers[2].value, ""));
    CHECK(strv_eq_cstr(r.headers[3].value, "v"));
    CHECK(r.keep_alive);
    CHECK_INT(r.content_length, -1);
    CHECK(!r.chunked);
}

TEST(http1_byte_at_a_time_equals_whole)
{
    const char *s = "\r\nPOST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                    "Connection: close\r\n\r\nhello";
    size_t head = strlen(s) - 5;
    struct http1_scan sc = { 0 };
    struct http_request r;
    int got = 0;
    for (size_t n = 1; n <= strlen(s); n++) {
        got = http1_parse_request(s, n, &sc, &http1_default_limits, &r);
        if (n < head)
            CHECK_INT(got, 0);
        if (got)
            break;
    }
    CHECK_INT(got, (int)head);
    CHECK(strv_eq_cstr(r.method, "POST"));
    CHECK_INT(r.content_length, 5);
    CHECK(!r.keep_alive);
}

TEST(http1_http10_keepalive_rules)
{
    struct http_request r;
    CHECK(parse("GET / HTTP/1.0\r\n\r\n", &r) > 0);
    CHECK(!r.keep_alive);
    CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r) > 0);
    CHECK(r.keep_alive);
    CHECK(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", &r) > 0);
    CHECK(!r.keep_alive);
}

TEST(http1_rejects_malformed)
{
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        { "GET / HTTP/1.1\nHost: a\r\n\r\n", 400 },                           /* bare LF */
        { "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400 },              /* obs-fold */
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400 },                        /* space before colon */
        { "GET / HTTP/1.1\r\nHo\x01st: a\r\n\r\n", 400 },                     /* ctl in name */
        { "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400 },                     /* ctl in value */
        { "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400 },                      /* bare CR */
        { "GET / HTTP/1.1\r\n\r\n", 400 },                                    /* no Host */
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },              /* two Hosts */
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400 },
        { "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400 },
        { "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505 },
        { "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400 },
        { "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "GET / FOO/1.1\r\nHost: a\r\n\r\n", 400 },
        { "GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", 413 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct http_request r;
        int got = parse(cases[i].req, &r);
        if (got != -cases[i].status)
            test_fail(__FILE__, __LINE__, "case %zu: got %d, expected %d for %s", i, got,
                      -cases[i].status, cases[i].req);
    }
}

TEST(http1_accepts_identical_content_lengths)
{
    struct http_request r;
    CHECK(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n", &r) > 0);
    CHECK_INT(r.content_length, 5);
}

TEST(http1_limits_414_431)
{
    struct http1_limits lim = http1_default_limits;
    lim.max_request_line = 64;
    lim.max_header_bytes = 256;
    lim.max_headers = 4;
    struct http_request r;
    char line[200];
    memset(line, 'a', sizeof(line));
    memcpy(line, "GET /", 5);
    /* no end of line yet, already too long */
    struct http1_scan sc = { 0 };
    CHECK_INT(http1_parse_request(line, sizeof(line), &sc, &lim, &r), -414);

    char big[600];
    int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nX: %0300d\r\n\r\n", 0);
    memset(&sc, 0, sizeof(sc));
    CHECK_INT(http1_parse_request(big, (size_t)n, &sc, &lim, &r), -431);

    const char *many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    memset(&sc, 0, sizeof(sc));
    CHECK_INT(http1_parse_request(many, strlen(many), &sc, &lim, &r), -431);
}

TEST(http1_pipelined_requests)
{
    const char *s = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    struct http1_scan sc = { 0 };
    struct http_request r;
    int n = http1_parse_request(s, strlen(s), &sc, &http1_default_limits, &r);
    CHECK(n > 0);
    CHECK(strv_eq_cstr(r.path, "/1"));
    memset(&sc, 0, sizeof(sc));
    int m = http1_parse_request(s + n, strlen(s) - (size_t)n, &sc, &http1_default_limits, &r);
    CHECK_INT(m, (int)strlen(s) - n);
    CHECK(strv_eq_cstr(r.path, "/2"));
}

TEST(http1_absolute_form_target)
{
    struct http_request r;
    CHECK(parse("GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n", &r) > 0);
    CHECK(strv_eq_cstr(r.path, "/x"));
    CHECK(strv_eq_cstr(r.query, "y"));
    /* the authority stands in for Host, the target becomes origin-form */
    CHECK(parse("GET http://Other.test:81/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n", &r) > 0);
    CHECK(strv_eq_cstr(r.host, "Other.test:81"));
    CHECK(strv_eq_cstr(r.target, "/x?y"));
    CHECK(parse("GET https://a.test HTTP/1.1\r\n\r\n", &r) > 0);     /* no Host needed */
    CHECK(strv_eq_cstr(r.host, "a.test"));
    CHECK(strv_eq_cstr(r.target, "/"));
    CHECK(strv_eq_cstr(r.path, "/"));
    CHECK_INT(parse("GET ftp://a.test/x HTTP/1.1\r\nHost: a\r\n\r\n", &r), -400);
    CHECK_INT(parse("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", &r), -400);
    CHECK_INT(parse("GET http://a.test?x HTTP/1.1\r\nHost: a\r\n\r\n", &r), -400);
    CHECK_INT(parse("GET http://u@a.test/x HTTP/1.1\r\nHost: a\r\n\r\n", &r), -400);
    CHECK_INT(parse("GET http://a.test/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &r), -400);
}

static int chunked_all(const char *in, size_t len, struct buf *out, size_t step)
{
    struct http1_chunked c = { 0 };
    size_t off = 0;
    int r = 0;
    while (off < len) {
        size_t n = MIN(step, len - off), used = 0;
        r = http1_chunked_feed(&c, in + off, n, &used, out, 1 << 20);
        if (r < 0)
            return r;
        off += used;
        if (r == 1)
            return (int)off;
    }
    return r == 1 ? (int)off : 0;
}

TEST(http1_chunked_decoding)
{
    const char *s = "5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
    size_t len = strlen(s) - 4;
    for (size_t step = 1; step <= 7; step += 3) {
        struct buf out = BUF_INIT;
        CHECK_INT(chunked_all(s, strlen(s), &out, step), (int)len);
        CHECK_STR(buf_head(&out), "hello world0123456789");
        buf_free(&out);
    }
}

TEST(http1_chunked_rejects)
{
    static const char *const bad[] = {
        "x\r\n",                        /* not hex */
        "\r\n",                         /* empty size */
        "5\nhello\r\n0\r\n\r\n",        /* bare LF */
        "5\r\nhelloX\r\n",              /* data not followed by CRLF */
        "1234567890abcdef0\r\n",        /* overflow */
        "5 x\r\n",                      /* junk after size */
        "0\r\n folded: x\r\n\r\n",      /* obs-fold trailer */
        "0\r\nBad Name: x\r\n\r\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct buf out = BUF_INIT;
        int r = chunked_all(bad[i], strlen(bad[i]), &out, 1);
        if (r != -400)
            test_fail(__FILE__, __LINE__, "case %zu: got %d", i, r);
        buf_free(&out);
    }
    /* body larger than the limit */
    struct http1_chunked c = { 0 };
    struct buf out = BUF_INIT;
    size_t used;
    CHECK_INT(http1_chunked_feed(&c, "ffff\r\n", 6, &used, &out, 100), -413);
    buf_free(&out);
}

TEST(http1_response_head)
{
    const char *s = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    struct http1_scan sc = { 0 };
    struct http_response r;
    int n = http1_parse_response(s, strlen(s), &sc, &http1_default_limits, &r);
    CHECK_INT(n, (int)strlen(s) - 3);
    CHECK_INT(r.status, 404);
    CHECK(strv_eq_cstr(r.reason, "Not Found"));
    CHECK_INT(r.content_length, 3);
    CHECK(!r.keep_alive);
    memset(&sc, 0, sizeof(sc));
    CHECK_INT(http1_parse_response("HTTP/1.1 2000 OK\r\n\r\n", 20, &sc, &http1_default_limits, &r), -502);
}

TEST(http1_dates)
{
    char d[30];
    http_date_format(784111777, d);
    CHECK_STR(d, "Sun, 06 Nov 1994 08:49:37 GMT");
    time_t t;
    CHECK_INT(http_date_parse(strv_cstr("Sun, 06 Nov 1994 08:49:37 GMT"), &t), 0);
    CHECK_INT(t, 784111777);
    CHECK_INT(http_date_parse(strv_cstr("Sunday, 06-Nov-94 08:49:37 GMT"), &t), 0);
    CHECK_INT(t, 784111777);
    CHECK_INT(http_date_parse(strv_cstr("Sun Nov  6 08:49:37 1994"), &t), 0);
    CHECK_INT(t, 784111777);
    CHECK(http_date_parse(strv_cstr("yesterday"), &t) < 0);
}

TEST(http1_query_param)
{
    char v[32];
    struct strv q = strv_cstr("a=1&latency=250ms&name=hello%20world+x&flag");
    CHECK(http_query_param(q, "latency", v, sizeof(v)));
    CHECK_STR(v, "250ms");
    CHECK(http_query_param(q, "name", v, sizeof(v)));
    CHECK_STR(v, "hello world x");
    CHECK(http_query_param(q, "flag", v, sizeof(v)));
    CHECK_STR(v, "");
    CHECK(!http_query_param(q, "lat", v, sizeof(v)));
}

TEST(http1_write_chunks)
{
    struct buf b = BUF_INIT;
    http1_write_status(&b, 200);
    http1_write_header(&b, "Transfer-Encoding", "chunked");
    buf_puts(&b, "\r\n");
    http1_write_chunk(&b, "hello world, this is 26 b.", 26);
    http1_write_last_chunk(&b);
    CHECK_STR(buf_head(&b), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "1a\r\nhello world, this is 26 b.\r\n0\r\n\r\n");
    buf_free(&b);
}

TEST(http1_etag_lists)
{
    CHECK(http_etag_list_matches(strv_cstr("\"a\", W/\"b\""), "\"b\""));
    CHECK(http_etag_list_matches(strv_cstr("W/\"b\""), "W/\"b\""));
    CHECK(http_etag_list_matches(strv_cstr("*"), "\"z\""));
    CHECK(!http_etag_list_matches(strv_cstr("\"a\",\"bb\""), "\"b\""));
    CHECK(!http_etag_list_matches(strv_cstr(""), "\"b\""));
    struct strv l = strv_cstr(" \"x\" ,W/\"y\""), t;
    CHECK(http_etag_next(&l, &t) && strv_eq_cstr(t, "\"x\""));
    CHECK(http_etag_next(&l, &t) && strv_eq_cstr(t, "\"y\""));
    CHECK(!http_etag_next(&l, &t));
}
