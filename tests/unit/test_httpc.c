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
