/* core/httpd: the HTTP server over real loopback sockets. */
#include "http_test.h"

TEST(httpd_pipelining_errors_and_timeouts)
{
    struct srv s;
    srv_start(&s, NULL);
    pthread_create(&s.th, NULL, srv_thread, &s);

    /* two pipelined requests in one write: two responses, in order */
    int fd = dial(s.port);
    send_str(fd, "GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\n"
                 "Content-Length: 3\r\n\r\nxyz");
    char *out = read_all(fd, "body=", 2);
    CHECK_CONTAINS(out, "GET /one body=0:");
    CHECK_CONTAINS(out, "POST /two body=3:xyz");
    CHECK(strstr(out, "/one") < strstr(out, "/two"));
    CHECK_CONTAINS(out, "X-Test: yes\r\n");
    free(out);
    close(fd);

    /* malformed: 400 then the server closes */
    fd = dial(s.port);
    send_str(fd, "GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    out = read_all(fd, NULL, 0);
    CHECK(strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    CHECK_CONTAINS(out, "Connection: close\r\n");
    free(out);
    close(fd);

    /* header read timeout: 408 */
    fd = dial(s.port);
    send_str(fd, "GET / HTTP/1.1\r\nHost: a\r\n");
    out = read_all(fd, NULL, 0);
    CHECK(strncmp(out, "HTTP/1.1 408 ", 13) == 0);
    free(out);
    close(fd);

    /* chunked request body, fed one byte per write */
    fd = dial(s.port);
    const char *req = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                      "Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    for (const char *p = req; *p; p++)
        CHECK_INT(write(fd, p, 1), 1);
    out = read_all(fd, NULL, 0);
    CHECK_CONTAINS(out, "POST /c body=5:abcde");
    CHECK_CONTAINS(out, "Connection: close");
    free(out);
    close(fd);

    /* streamed (chunked) response and a delayed response on one connection */
    fd = dial(s.port);
    send_str(fd, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    out = read_all(fd, "slow\n", 1);
    CHECK_CONTAINS(out, "Transfer-Encoding: chunked\r\n\r\n6\r\npart1-\r\n5\r\npart2\r\n0\r\n\r\n");
    CHECK_CONTAINS(out, "Content-Length: 5\r\n");
    free(out);
    close(fd);

    /* HEAD: headers with the length, no body */
    fd = dial(s.port);
    send_str(fd, "HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    out = read_all(fd, NULL, 0);
    CHECK_CONTAINS(out, "Content-Length: 15\r\n");
    CHECK(strstr(out, "body=") == NULL);
    free(out);
    close(fd);

    srv_stop(&s, true);
}

/* Streamed request bodies: paths under /up/ stream; the handler counts the bytes
 * and a checksum, /up/deny answers before reading (no 100 Continue, then close). */
struct up {
    size_t n;
    unsigned sum;
};

static int up_data(struct httpd_req *r, void *arg, const char *p, size_t n)
{
    struct up *u = arg;
    (void)r;
    for (size_t i = 0; i < n; i++)
        u->sum = u->sum * 31 + (unsigned char)p[i];
    u->n += n;
    return 0;
}

static void up_end(struct httpd_req *r, void *arg)
{
    struct up *u = arg;
    char body[64];
    int n = snprintf(body, sizeof(body), "got %zu sum %u %.*s", u->n, u->sum, (int)r->h.path.n,
                     r->h.path.p);
    free(u);
    httpd_respond(r, 200, "text/plain", body, (size_t)n);
}

static void up_abort(struct httpd_req *r, void *arg)
{
    (void)r;
    free(arg);
}

static const struct httpd_body_ops up_ops = { up_data, up_end };

static bool up_wants(void *arg, const struct http_request *h)
{
    (void)arg;
    return h->path.n > 4 && memcmp(h->path.p, "/up/", 4) == 0;
}

static void up_handler(struct httpd_req *r, void *arg)
{
    if (!r->streaming) {
        handler(r, arg);
        return;
    }
    if (strv_eq_cstr(r->h.path, "/up/deny")) {
        httpd_respond(r, 403, "text/plain", "no\n", 3);
        return;
    }
    struct up *u = calloc(1, sizeof(*u));
    httpd_req_on_abort(r, up_abort, u);
    httpd_req_read_body(r, &up_ops, u);
}

TEST(httpd_streamed_request_bodies)
{
    struct srv s;
    srv_start(&s, NULL);
    s.conf.stream_body = up_wants;
    s.conf.handler = up_handler;
    pthread_create(&s.th, NULL, srv_thread, &s);

    /* 3 MiB with a Content-Length, then a buffered request on the same connection */
    size_t big = 3u << 20;
    char *data = malloc(big);
    unsigned sum = 0;
    for (size_t i = 0; i < big; i++) {
        data[i] = (char)(i * 7 + (i >> 13));
        sum = sum * 31 + (unsigned char)data[i];
    }
    int fd = dial(s.port);
    char head[160], want[64];
    snprintf(head, sizeof(head), "PUT /up/big HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n", big);
    send_str(fd, head);
    for (size_t off = 0; off < big;) {
        ssize_t n = write(fd, data + off, MIN(big - off, (size_t)100000));
        CHECK(n > 0);
        off += (size_t)n;
    }
    send_str(fd, "POST /after HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok");
    char *out = read_all(fd, "body=", 1);
    snprintf(want, sizeof(want), "got %zu sum %u /up/big", big, sum);
    CHECK_CONTAINS(out, want);
    CHECK_CONTAINS(out, "POST /after body=2:ok");
    free(out);
    close(fd);

    /* chunked, with Expect: 100-continue answered when the handler reads */
    fd = dial(s.port);
    send_str(fd, "PUT /up/c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
    out = read_all(fd, "100 Continue\r\n\r\n", 1);
    CHECK_CONTAINS(out, "HTTP/1.1 100 Continue");
    free(out);
    send_str(fd, "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    out = read_all(fd, "/up/c", 1);
    unsigned s5 = 0;
    for (const char *p = "abcde"; *p; p++)
        s5 = s5 * 31 + (unsigned char)*p;
    snprintf(want, sizeof(want), "got 5 sum %u /up/c", s5);
    CHECK_CONTAINS(out, want);
    free(out);
    close(fd);

    /* refused before the body: no 100 Continue, the answer, then the close */
    fd = dial(s.port);
    send_str(fd, "PUT /up/deny HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n");
    out = read_all(fd, NULL, 0);
    CHECK(strncmp(out, "HTTP/1.1 403 ", 13) == 0);
    CHECK(strstr(out, "100 Continue") == NULL);
    CHECK_CONTAINS(out, "Connection: close\r\n");
    free(out);
    close(fd);

    /* the client leaves mid-body: the abort callback frees the handler's state
     * (LeakSanitizer would see it otherwise) */
    fd = dial(s.port);
    send_str(fd, "PUT /up/gone HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nxyz");
    close(fd);
    fd = dial(s.port);
    send_str(fd, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    out = read_all(fd, NULL, 0);
    CHECK_CONTAINS(out, "GET /x body=0:");
    free(out);
    close(fd);
    free(data);
    srv_stop(&s, true);
}
