/* core/health: the health: grammar, and checks against real sockets on loopback. */
#include "core/common.h"
#include "core/config.h"
#include "core/health.h"
#include "core/net.h"
#include "test.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int parse(const char *text, struct health_check_conf *h, bool own_port, struct cfg_errors *e)
{
    struct cfg c;
    memset(e, 0, sizeof(*e));
    if (cfg_load_string(&c, "h.yaml", text, strlen(text), e))
        return -EINVAL;
    int r = health_conf_parse(&c, cfg_root(&c), "health", h, own_port);
    cfg_free(&c);
    /* as everywhere in the stack file, an unknown key is recorded and the rest read */
    return r ? r : e->n ? -EINVAL : 0;
}

TEST(health_conf_grammar)
{
    struct health_check_conf h;
    struct cfg_errors e;
    CHECK_INT(parse("{http: {path: /healthz, status: 200-299, host: a.test}, interval: 500ms, rise: 3}",
                    &h, false, &e), 0);
    CHECK(h.enabled && h.http && !h.tls);
    CHECK_STR(h.path, "/healthz");
    CHECK_STR(h.host, "a.test");
    CHECK_INT(h.status_min, 200);
    CHECK_INT(h.status_max, 299);
    CHECK_INT(h.interval_ms, 500);
    CHECK_INT(h.timeout_ms, 1000);
    CHECK_INT(h.rise, 3);
    CHECK_INT(h.fall, 2);
    health_conf_free(&h);
    cfg_errors_free(&e);

    /* the edge's form: the server's own port, tcp a boolean */
    CHECK_INT(parse("{tcp: false}", &h, false, &e), 0);
    CHECK(!h.enabled);
    health_conf_free(&h);
    cfg_errors_free(&e);
    CHECK(parse("{http: {path: /, port: 81}}", &h, false, &e) < 0);
    CHECK(e.n == 1 && strstr(e.msgs[0], "h.yaml:1:") && strstr(e.msgs[0], "port"));
    health_conf_free(&h);
    cfg_errors_free(&e);

    /* the DNS form: the check names its port */
    CHECK_INT(parse("{http: {tls: true}}", &h, true, &e), 0);
    CHECK(h.http && h.tls && h.port == 443);
    CHECK_STR(h.path, "/");
    health_conf_free(&h);
    cfg_errors_free(&e);
    CHECK_INT(parse("{tcp: {port: 5432}, fall: 5}", &h, true, &e), 0);
    CHECK(!h.http && h.port == 5432 && h.fall == 5);
    health_conf_free(&h);
    cfg_errors_free(&e);

    static const char *const bad[] = {
        "{http: {path: x}}", "{http: {status: 700}}", "{}", "{http: {}, tcp: {port: 1}}",
        "{tcp: {}}", "{http: {}, interval: 50ms}", "{http: {}, timeout: 1ms}", "{http: {}, rise: 0}",
        "{http: {}, fall: many}", "{http: {}, every: 2s}",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        if (parse(bad[i], &h, true, &e) == 0 || e.n == 0)
            test_fail(__FILE__, __LINE__, "accepted %s", bad[i]);
        health_conf_free(&h);
        cfg_errors_free(&e);
    }
}

struct seen {
    int changes, last_up, last_was;
};

static void changed(struct health_watch *w, int up, int was, const char *why)
{
    struct seen *s = w->data;
    UNUSED(why);
    s->changes++;
    s->last_up = up;
    s->last_was = was;
}

static bool run_until(struct loop *l, struct seen *s, int changes)
{
    for (int i = 0; i < 200 && s->changes < changes; i++)
        loop_run_once(l, 10);
    return s->changes >= changes;
}

TEST(health_tcp_checks_shared_and_stopped)
{
    struct loop l;
    CHECK_INT(loop_init(&l), 0);
    struct health_checker hc;
    CHECK_INT(health_checker_init(&hc, &l, "test"), 0);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 && listen(lfd, 16) == 0);
    socklen_t sl = sizeof(sin);
    getsockname(lfd, (struct sockaddr *)&sin, &sl);
    struct net_addr addr;
    char name[32];
    snprintf(name, sizeof(name), "127.0.0.1:%d", ntohs(sin.sin_port));
    CHECK_INT(net_addr_parse(name, &addr), 0);
    struct health_check_conf c = { .enabled = true, .interval_ms = 100, .timeout_ms = 200,
                                    .rise = 1, .fall = 2, .status_min = 200, .status_max = 399 };

    /* not optimistic: the first verdict decides */
    struct seen s1 = { 0 }, s2 = { 0 };
    struct health_watch w1 = { .cb = changed, .data = &s1 }, w2 = { .cb = changed, .data = &s2 };
    CHECK_INT(health_watch_start(&hc, &w1, &addr, name, &c, false), 0);
    CHECK_INT(health_target_state(w1.target), HEALTH_UNKNOWN);
    CHECK(!health_checker_settled(&hc));
    CHECK(run_until(&l, &s1, 1));
    CHECK_INT(s1.last_up, HEALTH_UP);
    CHECK_INT(s1.last_was, HEALTH_UNKNOWN);
    CHECK(health_checker_settled(&hc));
    CHECK_STR(health_target_last(w1.target), "tcp connect ok");

    /* a second user of the same check shares the target and its state */
    CHECK_INT(health_watch_start(&hc, &w2, &addr, name, &c, true), 0);
    CHECK(w2.target == w1.target);

    /* the server goes away: down after fall (2) failures, told to both */
    close(lfd);
    CHECK(run_until(&l, &s1, 2));
    CHECK_INT(s1.last_up, HEALTH_DOWN);
    CHECK_INT(s1.last_was, HEALTH_UP);
    CHECK_INT(s2.changes, 1);
    CHECK_CONTAINS(health_target_last(w1.target), "tcp: ");

    /* the target lives while one watcher is left */
    health_watch_stop(&hc, &w1);
    CHECK(w1.target == NULL && w2.target != NULL && hc.targets != NULL);
    health_watch_stop(&hc, &w2);
    CHECK(hc.targets == NULL);

    /* optimistic: up before any check */
    struct seen s3 = { 0 };
    struct health_watch w3 = { .cb = changed, .data = &s3 };
    c.interval_ms = 150;    /* another check: another target */
    CHECK_INT(health_watch_start(&hc, &w3, &addr, name, &c, true), 0);
    CHECK_INT(health_target_state(w3.target), HEALTH_UP);
    health_checker_destroy(&hc);
    CHECK(w3.target == NULL);
    loop_destroy(&l);
}
