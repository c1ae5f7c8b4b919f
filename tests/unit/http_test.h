/* http_test.h - what the httpd, httpc and tls unit tests share: a real httpd
 * on a loop (optionally on its own thread) answering a few paths, a blocking
 * client socket, an httpc round trip, and self-signed certificates. */
#ifndef CAIRN_HTTP_TEST_H
#define CAIRN_HTTP_TEST_H

#include "core/httpc.h"
#include "core/httpd.h"
#include "core/tls.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
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

__attribute__((unused)) static void slow_fire(struct loop_timer *t)
{
    struct slow *s = t->data;
    httpd_respond(s->r, 200, "text/plain", "slow\n", 5);
    free(s);
}

__attribute__((unused)) static void slow_abort(struct httpd_req *r, void *arg)
{
    struct slow *sl = arg;
    (void)r;
    loop_timer_stop(&sl->t);
    free(sl);
}

__attribute__((unused)) static void handler(struct httpd_req *r, void *arg)
{
    struct srv *s = arg;
    s->handled++;
    if (strv_eq_cstr(r->h.path, "/slow")) {
        struct slow *sl = calloc(1, sizeof(*sl));
        sl->r = r;
        loop_timer_init(&sl->t, slow_fire, sl);
        loop_timer_start(r->worker->loop, &sl->t, 50);
        httpd_req_on_abort(r, slow_abort, sl);     /* the client left first */
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

__attribute__((unused)) static void srv_start(struct srv *s, struct tls_ctx *tls)
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

__attribute__((unused)) static void *srv_thread(void *arg)
{
    struct srv *s = arg;
    loop_run(&s->loop);
    return NULL;
}

__attribute__((unused)) static void stop_cb(void *arg)
{
    loop_stop(arg);
}

__attribute__((unused)) static void srv_stop(struct srv *s, bool threaded)
{
    if (threaded) {
        loop_post(&s->loop, stop_cb, &s->loop);
        pthread_join(s->th, NULL);
    }
    httpd_worker_destroy(&s->w);
    loop_destroy(&s->loop);
}

/* A blocking client socket with a 3 s receive timeout. */
__attribute__((unused)) static int dial(uint16_t port)
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
__attribute__((unused)) static char *read_all(int fd, const char *until, int times)
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

__attribute__((unused)) static void send_str(int fd, const char *s)
{
    CHECK_INT(write(fd, s, strlen(s)), (long long)strlen(s));
}

struct client_state {
    int done;
    int status[4];
    char body[4][128];
    int err;
};

__attribute__((unused)) static void on_resp(const struct httpc_response *r, void *arg)
{
    struct client_state *cs = arg;
    cs->err = r->error;
    if (cs->done < 4) {
        cs->status[cs->done] = r->status;
        snprintf(cs->body[cs->done], sizeof(cs->body[0]), "%.*s", (int)r->body.n, r->body.p);
    }
    cs->done++;
}

__attribute__((unused)) static void run_until(struct loop *l, int *flag, int want)
{
    uint64_t start = cairn_now_ms();
    while (*flag < want && cairn_now_ms() - start < 5000)
        loop_run_once(l, 50);
}

__attribute__((unused)) static void client_roundtrips(struct srv *s, struct tls_ctx *client_tls)
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

__attribute__((unused)) static char tmpdir[64];

__attribute__((unused)) static void make_certs(void)
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

__attribute__((unused)) static struct tls_ctx *server_tls(void)
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

#endif
