/* core/httpc: the HTTP client against a real httpd on loopback. */
#include "http_test.h"

TEST(httpc_keepalive_pool_against_httpd)
{
    struct srv s;
    srv_start(&s, NULL);
    client_roundtrips(&s, NULL);
    srv_stop(&s, false);
}

TEST(httpc_connection_refused_reports_error)
{
    struct loop l;
    loop_init(&l);
    struct httpc *hc = httpc_new(&l, NULL);
    struct client_state cs = { 0 };
    struct httpc_request req = { .method = "GET", .target = "/" };
    net_addr_parse("127.0.0.1:1", &req.addr);   /* nothing listens on port 1 */
    httpc_send(hc, &req, on_resp, &cs);
    run_until(&l, &cs.done, 1);
    CHECK_INT(cs.done, 1);
    CHECK_INT(cs.err, -ECONNREFUSED);
    httpc_free(&hc);
    loop_destroy(&l);
}

TEST(httpc_timeout_and_cancel)
{
    struct srv s;
    srv_start(&s, NULL);
    struct httpc *hc = httpc_new(&s.loop, NULL);
    struct client_state cs = { 0 };
    struct httpc_request req = { .method = "GET", .host = "localhost", .target = "/slow", .timeout_ms = 10 };
    net_addr_parse("127.0.0.1:1", &req.addr);
    ((struct sockaddr_in *)&req.addr.ss)->sin_port = htons(s.port);
    /* /slow answers after 50 ms: a 10 ms bound fails the call with -ETIMEDOUT */
    CHECK(httpc_send(hc, &req, on_resp, &cs) != NULL);
    run_until(&s.loop, &cs.done, 1);
    CHECK_INT(cs.done, 1);
    CHECK_INT(cs.err, -ETIMEDOUT);
    /* a cancelled call never calls back, and the client stays usable */
    struct client_state cancelled = { 0 };
    req.timeout_ms = 0;
    struct httpc_call *call = httpc_send(hc, &req, on_resp, &cancelled);
    CHECK(call != NULL);
    httpc_cancel(call);
    req.target = "/after";
    CHECK(httpc_send(hc, &req, on_resp, &cs) != NULL);
    run_until(&s.loop, &cs.done, 2);
    CHECK_INT(cs.done, 2);
    CHECK_INT(cancelled.done, 0);
    httpc_free(&hc);
    srv_stop(&s, false);
}

/* ---- streamed calls ---- */

struct stream_seen {
    int connected, heads, dones, fails, status;
    bool reusable;
    int err;
    enum httpc_stage stage;
    unsigned flags;
    char body[256];
    size_t nbody;
    int pieces;
    struct httpc_call *call;
    bool pause_first;
};

static void s_connected(void *arg)
{
    ((struct stream_seen *)arg)->connected++;
}

static void s_head(void *arg, const struct http_response *resp)
{
    struct stream_seen *s = arg;
    s->heads++;
    s->status = resp->status;
}

static void s_data(void *arg, const char *p, size_t n)
{
    struct stream_seen *s = arg;
    s->pieces++;
    if (s->nbody + n < sizeof(s->body)) {
        memcpy(s->body + s->nbody, p, n);
        s->nbody += n;
        s->body[s->nbody] = 0;
    }
    if (s->pause_first) {
        s->pause_first = false;
        httpc_pause(s->call);
    }
}

static void s_done(void *arg, bool reusable)
{
    struct stream_seen *s = arg;
    s->dones++;
    s->reusable = reusable;
}

static void s_failed(void *arg, int err, enum httpc_stage stage, unsigned flags)
{
    struct stream_seen *s = arg;
    s->fails++;
    s->err = err;
    s->stage = stage;
    s->flags = flags;
}

static const struct httpc_stream_ops s_ops = { s_connected, s_head, s_data, s_done, s_failed };

static int ended(const struct stream_seen *s)
{
    return s->dones + s->fails;
}

TEST(httpc_stream_pools_frames_and_pauses)
{
    struct srv s;
    srv_start(&s, NULL);
    struct httpc *hc = httpc_new(&s.loop, NULL);
    struct httpc_pool pool;
    httpc_pool_init(&pool, 4, 10000);
    struct httpc_stream_req req = { .pool = &pool };
    net_addr_parse("127.0.0.1:1", &req.addr);
    ((struct sockaddr_in *)&req.addr.ss)->sin_port = htons(s.port);
    static const char get_a[] = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char get_stream[] = "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char head_a[] = "HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n";
    int err = 0;
    bool reused = true;

    /* a new connection: connected, head, body, done; then it is pooled */
    struct stream_seen a = { 0 };
    req.raw = get_a;
    req.raw_len = sizeof(get_a) - 1;
    CHECK(httpc_stream(hc, &req, &s_ops, &a, &err, &reused) != NULL);
    CHECK(!reused);
    for (int i = 0; i < 100 && !ended(&a); i++)
        loop_run_once(&s.loop, 20);
    CHECK(a.connected == 1 && a.heads == 1 && a.dones == 1 && a.reusable);
    CHECK_INT(a.status, 200);
    CHECK_STR(a.body, "GET /a body=0:");
    CHECK_INT(pool.nidle, 1);

    /* the pooled connection again; a chunked body comes out decoded; reading paused
     * after the first piece waits for httpc_resume */
    struct stream_seen b = { .pause_first = true };
    req.raw = get_stream;
    req.raw_len = sizeof(get_stream) - 1;
    b.call = httpc_stream(hc, &req, &s_ops, &b, &err, &reused);
    CHECK(b.call != NULL && reused);
    CHECK_INT(pool.nidle, 0);
    for (int i = 0; i < 100 && b.pieces == 0; i++)
        loop_run_once(&s.loop, 20);
    for (int i = 0; i < 5; i++)
        loop_run_once(&s.loop, 20);
    if (b.dones == 0) {     /* the whole body may have come in the first piece */
        CHECK(b.pieces >= 1);
        httpc_resume(b.call);
        for (int i = 0; i < 100 && !ended(&b); i++)
            loop_run_once(&s.loop, 20);
    }
    CHECK(b.connected == 0 && b.dones == 1 && b.reusable);
    CHECK_STR(b.body, "part1-part2");

    /* HEAD: a Content-Length but no body */
    struct stream_seen h = { 0 };
    req.raw = head_a;
    req.raw_len = sizeof(head_a) - 1;
    req.is_head = true;
    CHECK(httpc_stream(hc, &req, &s_ops, &h, &err, &reused) != NULL);
    for (int i = 0; i < 100 && !ended(&h); i++)
        loop_run_once(&s.loop, 20);
    CHECK(h.dones == 1 && h.nbody == 0 && h.reusable);

    /* a connection refused: the connect stage */
    struct stream_seen f = { 0 };
    struct httpc_stream_req bad = { .raw = get_a, .raw_len = sizeof(get_a) - 1 };
    net_addr_parse("127.0.0.1:1", &bad.addr);
    struct httpc_call *fc = httpc_stream(hc, &bad, &s_ops, &f, &err, &reused);
    if (fc) {
        for (int i = 0; i < 100 && !ended(&f); i++)
            loop_run_once(&s.loop, 20);
        CHECK(f.fails == 1 && f.stage == HTTPC_CONNECT && f.err == -ECONNREFUSED);
    } else {
        CHECK_INT(err, -ECONNREFUSED);
    }
    httpc_pool_flush(hc, &pool);
    CHECK_INT(pool.nidle, 0);
    httpc_free(&hc);
    srv_stop(&s, false);
}

TEST(httpc_stream_bad_head_and_dead_pooled_connection)
{
    /* a raw server: answers garbage to the first request, then closes the second
     * connection without a byte */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 && listen(lfd, 4) == 0);
    socklen_t sl = sizeof(sin);
    getsockname(lfd, (struct sockaddr *)&sin, &sl);
    struct loop l;
    loop_init(&l);
    struct httpc *hc = httpc_new(&l, NULL);
    struct httpc_stream_req req = { .raw = "GET / HTTP/1.1\r\nHost: x\r\n\r\n", .raw_len = 27 };
    net_addr_parse("127.0.0.1:1", &req.addr);
    ((struct sockaddr_in *)&req.addr.ss)->sin_port = sin.sin_port;
    int err = 0;
    bool reused;
    struct stream_seen a = { 0 };
    CHECK(httpc_stream(hc, &req, &s_ops, &a, &err, &reused) != NULL);
    int cfd = -1;
    for (int i = 0; i < 100 && cfd < 0; i++) {
        loop_run_once(&l, 10);
        cfd = accept(lfd, NULL, NULL);
    }
    CHECK(cfd >= 0);
    CHECK(write(cfd, "HTTP/1.1 2OO OK\r\n\r\n", 19) == 19);
    for (int i = 0; i < 100 && !ended(&a); i++)
        loop_run_once(&l, 20);
    CHECK(a.fails == 1 && a.stage == HTTPC_BAD_HEAD && (a.flags & HTTPC_F_GOT_BYTES));
    close(cfd);

    /* closed before any byte of the response */
    struct stream_seen b = { 0 };
    CHECK(httpc_stream(hc, &req, &s_ops, &b, &err, &reused) != NULL);
    cfd = -1;
    for (int i = 0; i < 100 && cfd < 0; i++) {
        loop_run_once(&l, 10);
        cfd = accept(lfd, NULL, NULL);
    }
    CHECK(cfd >= 0);
    close(cfd);
    for (int i = 0; i < 100 && !ended(&b); i++)
        loop_run_once(&l, 20);
    CHECK(b.fails == 1 && b.stage == HTTPC_EXCHANGE && !(b.flags & HTTPC_F_GOT_BYTES));
    httpc_free(&hc);
    loop_destroy(&l);
    close(lfd);
}
