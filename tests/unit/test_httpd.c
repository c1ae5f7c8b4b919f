/* HTTP server, client and TLS, over real loopback sockets. */
#include "core/httpc.h"
#include "core/httpd.h"
#include "test.h"
#include "core/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct srv {
    struct loop loop;
    struct httpd_worker w;
    struct httpd_conf conf;
    uint16_t port;
    pthread_t th;
    int handled;
};

struct slow {
    struct loop_timer t;
    struct httpd_req *r;
};

static void slow_fire(struct loop_timer *t)
{
    struct slow *s = t->data;
    httpd_respond(s->r, 200, "text/plain", "slow\n", 5);
    free(s);
}

static void handler(struct httpd_req *r, void *arg)
{
    struct srv *s = arg;
    s->handled++;
    if (strv_eq_cstr(r->h.path, "/slow")) {
        struct slow *sl = calloc(1, sizeof(*sl));
        sl->r = r;
        loop_timer_init(&sl->t, slow_fire, sl);
        loop_timer_start(r->worker->loop, &sl->t, 50);
        return;
    }
    if (strv_eq_cstr(r->h.path, "/stream")) {
        httpd_respond_start(r, 200, "text/plain", -1);
        httpd_respond_write(r, "part1-", 6);
        httpd_respond_write(r, "part2", 5);
        httpd_respond_finish(r);
        return;
    }
    char body[256];
    int n = snprintf(body, sizeof(body), "%.*s %.*s body=%zu:%.*s", (int)r->h.method.n,
                     r->h.method.p, (int)r->h.path.n, r->h.path.p, r->body.n,
                     (int)MIN(r->body.n, (size_t)64), r->body.p);
    httpd_header(r, "X-Test", "yes");
    httpd_respond(r, 200, "text/plain", body, (size_t)n);
}

static void srv_start(struct srv *s, struct tls_ctx *tls)
{
    memset(s, 0, sizeof(*s));
    loop_init(&s->loop);
    httpd_worker_init(&s->w, &s->loop);
    httpd_conf_defaults(&s->conf);
    s->conf.handler = handler;
    s->conf.handler_arg = s;
    s->conf.tls = tls;
    s->conf.header_timeout_ms = 300;
    struct net_addr a;
    net_addr_parse("127.0.0.1:1", &a);
    ((struct sockaddr_in *)&a.ss)->sin_port = 0;
    CHECK_INT(httpd_listen(&s->w, &a, &s->conf), 0);
    struct sockaddr_in sin;
    socklen_t l = sizeof(sin);
    getsockname(s->w.listeners->io.fd, (struct sockaddr *)&sin, &l);
    s->port = ntohs(sin.sin_port);
}

static void *srv_thread(void *arg)
{
    struct srv *s = arg;
    loop_run(&s->loop);
    return NULL;
}

static void stop_cb(void *arg)
{
    loop_stop(arg);
}

static void srv_stop(struct srv *s, bool threaded)
{
    if (threaded) {
        loop_post(&s->loop, stop_cb, &s->loop);
        pthread_join(s->th, NULL);
    }
    httpd_worker_destroy(&s->w);
    loop_destroy(&s->loop);
}

/* A blocking client socket with a 3 s receive timeout. */
static int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { 3, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads until EOF, timeout, or until `until` appears `times` times. */
static char *read_all(int fd, const char *until, int times)
{
    struct buf b = BUF_INIT;
    for (;;) {
        buf_reserve(&b, 4096);
        ssize_t n = read(fd, buf_tail(&b), buf_room(&b));
        if (n <= 0)
            break;
        buf_commit(&b, (size_t)n);
        if (until) {
            int c = 0;
            for (const char *p = buf_head(&b); (p = strstr(p, until)); p++)
                c++;
            if (c >= times)
                break;
        }
    }
    return buf_steal(&b);
}

static void send_str(int fd, const char *s)
{
    CHECK_INT(write(fd, s, strlen(s)), (long long)strlen(s));
}

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

struct client_state {
    int done;
    int status[4];
    char body[4][128];
    int err;
};

static void on_resp(const struct httpc_response *r, void *arg)
{
    struct client_state *cs = arg;
    cs->err = r->error;
    if (cs->done < 4) {
        cs->status[cs->done] = r->status;
        snprintf(cs->body[cs->done], sizeof(cs->body[0]), "%.*s", (int)r->body.n, r->body.p);
    }
    cs->done++;
}

static void run_until(struct loop *l, int *flag, int want)
{
    uint64_t start = cairn_now_ms();
    while (*flag < want && cairn_now_ms() - start < 5000)
        loop_run_once(l, 50);
}

static void client_roundtrips(struct srv *s, struct tls_ctx *client_tls)
{
    struct httpc_opts o;
    httpc_opts_defaults(&o);
    o.tls = client_tls;
    struct httpc *hc = httpc_new(&s->loop, &o);
    struct client_state cs = { 0 };
    struct httpc_request req = { .method = "GET", .host = "localhost", .tls = client_tls != NULL };
    net_addr_parse("127.0.0.1:1", &req.addr);
    ((struct sockaddr_in *)&req.addr.ss)->sin_port = htons(s->port);
    const char *paths[] = { "/a", "/stream", "/slow" };
    for (int i = 0; i < 3; i++) {
        req.target = paths[i];
        CHECK(httpc_send(hc, &req, on_resp, &cs) != NULL);
        run_until(&s->loop, &cs.done, i + 1);
    }
    CHECK_INT(cs.done, 3);
    CHECK_INT(cs.status[0], 200);
    CHECK_STR(cs.body[0], "GET /a body=0:");
    CHECK_STR(cs.body[1], "part1-part2");
    CHECK_STR(cs.body[2], "slow\n");
    struct httpc_stats st;
    httpc_stats(hc, &st);
    CHECK_INT(st.connects, 1);      /* keep-alive: one connection for all three */
    CHECK_INT(st.reuses, 2);
    CHECK_INT(st.idle, 1);

    /* a POST with a body */
    req.method = "POST";
    req.target = "/p";
    req.body = "payload";
    req.body_len = 7;
    CHECK(httpc_send(hc, &req, on_resp, &cs) != NULL);
    run_until(&s->loop, &cs.done, 4);
    CHECK_STR(cs.body[3], "POST /p body=7:payload");
    httpc_free(&hc);
}

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

static char tmpdir[64];

static void make_certs(void)
{
    if (tmpdir[0])
        return;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/cairn-tls-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    char c[128], k[128], err[256];
    snprintf(c, sizeof(c), "%s/a.pem", tmpdir);
    snprintf(k, sizeof(k), "%s/a.key", tmpdir);
    CHECK_INT(tls_make_self_signed(c, k, "a.test", err, sizeof(err)), 0);
    snprintf(c, sizeof(c), "%s/b.pem", tmpdir);
    snprintf(k, sizeof(k), "%s/b.key", tmpdir);
    CHECK_INT(tls_make_self_signed(c, k, "b.test", err, sizeof(err)), 0);
}

static struct tls_ctx *server_tls(void)
{
    make_certs();
    char ca[128], ka[128], cb[128], kb[128], err[256];
    snprintf(ca, sizeof(ca), "%s/a.pem", tmpdir);
    snprintf(ka, sizeof(ka), "%s/a.key", tmpdir);
    snprintf(cb, sizeof(cb), "%s/b.pem", tmpdir);
    snprintf(kb, sizeof(kb), "%s/b.key", tmpdir);
    struct tls_cert_conf certs[] = { { ca, ka }, { cb, kb } };
    static const char *const alpn[] = { "http/1.1" };
    struct tls_ctx *t = NULL;
    int r = tls_server_new(&t, certs, 2, alpn, 1, err, sizeof(err));
    if (r)
        test_fail(__FILE__, __LINE__, "tls_server_new: %s", err);
    return t;
}

TEST(tls_server_sni_alpn_and_client)
{
    struct tls_ctx *st = server_tls();
    if (!st)
        return;
    struct srv s;
    srv_start(&s, st);
    pthread_create(&s.th, NULL, srv_thread, &s);

    static const char *const names[] = { "b.test", "a.test", "other.test" };
    static const char *const want_cn[] = { "b.test", "a.test", "a.test" };
    for (int i = 0; i < 3; i++) {
        SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)"\x02h2\x08http/1.1", 12);
        int fd = dial(s.port);
        SSL *ssl = SSL_new(cctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, names[i]);
        CHECK_INT(SSL_connect(ssl), 1);
        X509 *peer = SSL_get1_peer_certificate(ssl);
        char cn[64] = "";
        if (peer)
            X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
        CHECK_STR(cn, want_cn[i]);
        X509_free(peer);
        char alpn[32];
        tls_alpn(ssl, alpn, sizeof(alpn));
        CHECK_STR(alpn, "http/1.1");
        CHECK(SSL_version(ssl) >= TLS1_2_VERSION);
        const char *req = "GET /tls HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n";
        SSL_write(ssl, req, (int)strlen(req));
        char buf[1024];
        int n, total = 0;
        while ((n = SSL_read(ssl, buf + total, (int)sizeof(buf) - 1 - total)) > 0)
            total += n;
        buf[total] = '\0';
        CHECK_CONTAINS(buf, "GET /tls body=0:");
        SSL_free(ssl);
        close(fd);
        SSL_CTX_free(cctx);
    }
    srv_stop(&s, true);
    tls_ctx_free(&st);
    CHECK(st == NULL);
}

TEST(tls_httpc_over_tls)
{
    struct tls_ctx *st = server_tls();
    if (!st)
        return;
    struct tls_ctx *ct = NULL;
    char err[256];
    CHECK_INT(tls_client_new(&ct, false, NULL, NULL, 0, err, sizeof(err)), 0);
    struct srv s;
    srv_start(&s, st);
    client_roundtrips(&s, ct);
    srv_stop(&s, false);
    tls_ctx_free(&ct);

    /* a verifying client trusts the server's self-signed cert as its CA */
    char ca[128];
    snprintf(ca, sizeof(ca), "%s/a.pem", tmpdir);
    CHECK_INT(tls_client_new(&ct, true, ca, NULL, 0, err, sizeof(err)), 0);
    srv_start(&s, st);
    client_roundtrips(&s, ct);
    srv_stop(&s, false);
    tls_ctx_free(&ct);
    tls_ctx_free(&st);
}

TEST(tls_bad_files_are_reported)
{
    struct tls_ctx *t = NULL;
    char err[256] = "";
    struct tls_cert_conf c = { "/nonexistent.pem", "/nonexistent.key" };
    CHECK(tls_server_new(&t, &c, 1, NULL, 0, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "/nonexistent.pem");
    CHECK(t == NULL);
}
