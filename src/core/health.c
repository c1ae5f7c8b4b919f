/* health.c - active health checks: targets shared by their watchers.
 *
 * A target is found by its key: the address, the name and every field of the
 * check. The verdict rule: a target in HEALTH_UNKNOWN takes the first result as
 * its state; after that, fall failures in a row take it down and rise successes
 * bring it back. An optimistic target starts up with its success streak full.
 */
#include "core/health.h"
#include "core/common.h"
#include "core/config.h"
#include "core/httpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define KEY_MAX 1024

struct health_target {
    struct health_checker *hc;
    char key[KEY_MAX];
    char name[NET_ADDRSTRLEN + 8];
    struct net_addr addr;
    struct health_check_conf c;     /* strings point into the key's copies below */
    char *path, *host, *cert, *key_file;
    struct tls_ctx *client_tls;     /* when a client certificate is presented */
    int state;                      /* atomic: enum health_state */
    int ok_streak, fail_streak;
    char last[96];
    struct loop_timer timer, tcp_timer;
    struct loop_io tcp_io;
    int tcp_fd;
    struct httpc_call *call;
    struct health_watch *watchers;
    struct health_target *next;
};

int health_checker_init(struct health_checker *hc, struct loop *loop, const char *user_agent)
{
    memset(hc, 0, sizeof(*hc));
    hc->loop = loop;
    hc->user_agent = user_agent;
    char err[256];
    if (tls_client_new(&hc->tls, false, NULL, NULL, 0, err, sizeof(err)))
        hc->tls = NULL;         /* HTTPS checks then fail, each saying so */
    struct httpc_opts o;
    httpc_opts_defaults(&o);
    o.max_idle = 0;             /* every check on a new connection, as a client would */
    o.tls = hc->tls;
    hc->http = httpc_new(loop, &o);
    return hc->http ? 0 : -ENOMEM;
}

static void target_stop(struct health_target *t)
{
    loop_timer_stop(&t->timer);
    loop_timer_stop(&t->tcp_timer);
    if (t->tcp_fd >= 0) {
        loop_io_del(&t->tcp_io);
        close(t->tcp_fd);
        t->tcp_fd = -1;
    }
    if (t->call) {
        httpc_cancel(t->call);
        t->call = NULL;
    }
}

static void target_free(struct health_target *t)
{
    target_stop(t);
    tls_ctx_free(&t->client_tls);
    free(t->path);
    free(t->host);
    free(t->cert);
    free(t->key_file);
    free(t);
}

void health_checker_destroy(struct health_checker *hc)
{
    while (hc->targets) {
        struct health_target *t = hc->targets;
        hc->targets = t->next;
        for (struct health_watch *w = t->watchers; w; w = w->next)
            w->target = NULL;
        target_free(t);
    }
    httpc_free(&hc->http);
    tls_ctx_free(&hc->tls);
}

bool health_checker_settled(const struct health_checker *hc)
{
    for (const struct health_target *t = hc->targets; t; t = t->next)
        if (__atomic_load_n(&t->state, __ATOMIC_RELAXED) == HEALTH_UNKNOWN)
            return false;
    return true;
}

int health_target_state(const struct health_target *t)
{
    return __atomic_load_n(&t->state, __ATOMIC_RELAXED);
}

const char *health_target_last(const struct health_target *t)
{
    return t->last;
}

static void set_state(struct health_target *t, int up, const char *why)
{
    int was = __atomic_exchange_n(&t->state, up, __ATOMIC_RELAXED);
    if (was == up)
        return;
    for (struct health_watch *w = t->watchers, *next; w; w = next) {
        next = w->next;
        w->cb(w, up, was, why);
    }
}

static void verdict(struct health_target *t, bool ok, const char *why)
{
    snprintf(t->last, sizeof(t->last), "%s", why);
    int st = __atomic_load_n(&t->state, __ATOMIC_RELAXED);
    if (ok) {
        t->fail_streak = 0;
        t->ok_streak++;
        if (st == HEALTH_UNKNOWN || (st == HEALTH_DOWN && t->ok_streak >= t->c.rise))
            set_state(t, HEALTH_UP, why);
    } else {
        t->ok_streak = 0;
        t->fail_streak++;
        if (st == HEALTH_UNKNOWN || (st == HEALTH_UP && t->fail_streak >= t->c.fall))
            set_state(t, HEALTH_DOWN, why);
    }
    loop_timer_start(t->hc->loop, &t->timer, t->c.interval_ms);
}

static void http_done(const struct httpc_response *resp, void *arg)
{
    struct health_target *t = arg;
    char why[96];
    t->call = NULL;
    if (resp->error) {
        snprintf(why, sizeof(why), "http: %s", cairn_strerror(resp->error));
        verdict(t, false, why);
        return;
    }
    snprintf(why, sizeof(why), "http status %d", resp->status);
    verdict(t, resp->status >= t->c.status_min && resp->status <= t->c.status_max, why);
}

static void tcp_done(struct health_target *t, int err)
{
    loop_timer_stop(&t->tcp_timer);
    if (t->tcp_fd >= 0) {
        loop_io_del(&t->tcp_io);
        close(t->tcp_fd);
        t->tcp_fd = -1;
    }
    char why[96];
    if (err)
        snprintf(why, sizeof(why), "tcp: %s", err == ETIMEDOUT ? "connect timed out" : strerror(err));
    else
        snprintf(why, sizeof(why), "tcp connect ok");
    verdict(t, err == 0, why);
}

static void tcp_event(struct loop_io *io, uint32_t events)
{
    int err = 0;
    socklen_t l = sizeof(err);
    UNUSED(events);
    getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    tcp_done(io->data, err);
}

static void tcp_timeout(struct loop_timer *timer)
{
    tcp_done(timer->data, ETIMEDOUT);
}

static void run_check(struct loop_timer *timer)
{
    struct health_target *t = timer->data;
    struct health_checker *hc = t->hc;
    if (t->c.http) {
        char ua[128];
        snprintf(ua, sizeof(ua), "User-Agent: %s", hc->user_agent ? hc->user_agent : "cairn-health");
        const char *hdrs[] = { ua, "Connection: close", NULL };
        struct httpc_request req = {
            .method = "GET",
            .addr = t->addr,
            .host = t->c.host ? t->c.host : t->name,
            .target = t->c.path ? t->c.path : "/",
            .headers = hdrs,
            .timeout_ms = (uint32_t)t->c.timeout_ms,
            .tls = t->c.tls,
            .tls_ctx = t->client_tls,
        };
        t->call = httpc_send(hc->http, &req, http_done, t);
        if (!t->call)
            verdict(t, false, "http: out of memory");
        return;
    }
    int fd = net_connect_tcp(&t->addr);
    if (fd < 0) {
        char why[96];
        snprintf(why, sizeof(why), "tcp: %s", cairn_strerror(fd));
        verdict(t, false, why);
        return;
    }
    t->tcp_fd = fd;
    loop_io_init(&t->tcp_io, fd, tcp_event, t);
    loop_io_add(hc->loop, &t->tcp_io, EPOLLOUT);
    loop_timer_start(hc->loop, &t->tcp_timer, t->c.timeout_ms);
}

static void make_key(char *key, const struct net_addr *addr, const char *name,
                     const struct health_check_conf *c)
{
    char a[NET_ADDRSTRLEN];
    net_addr_format(addr, a, sizeof(a));
    snprintf(key, KEY_MAX, "%s|%s|%d|%d|%s|%s|%s|%s|%d-%d|%llu|%llu|%d|%d", a, name, c->http, c->tls,
             c->path ? c->path : "/", c->host ? c->host : "", c->tls_cert ? c->tls_cert : "",
             c->tls_key ? c->tls_key : "", c->status_min, c->status_max,
             (unsigned long long)c->interval_ms, (unsigned long long)c->timeout_ms, c->rise, c->fall);
}

static struct health_target *target_new(struct health_checker *hc, const char *key,
                                        const struct net_addr *addr, const char *name,
                                        const struct health_check_conf *c, bool optimistic)
{
    struct health_target *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->hc = hc;
    snprintf(t->key, sizeof(t->key), "%s", key);
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->addr = *addr;
    t->c = *c;
    t->tcp_fd = -1;
    t->path = c->path ? strdup(c->path) : NULL;   /* the user's conf may go before the target */
    t->host = c->host ? strdup(c->host) : NULL;
    t->cert = c->tls_cert ? strdup(c->tls_cert) : NULL;
    t->key_file = c->tls_key ? strdup(c->tls_key) : NULL;
    if ((c->path && !t->path) || (c->host && !t->host) || (c->tls_cert && !t->cert) ||
        (c->tls_key && !t->key_file)) {
        target_free(t);
        return NULL;
    }
    t->c.path = t->path;
    t->c.host = t->host;
    t->c.tls_cert = t->cert;
    t->c.tls_key = t->key_file;
    if (t->c.tls && t->cert) {
        char err[256];
        if (tls_client_new(&t->client_tls, false, NULL, NULL, 0, err, sizeof(err)) ||
            tls_client_use_cert(t->client_tls, t->cert, t->key_file, err, sizeof(err)))
            snprintf(t->last, sizeof(t->last), "tls: %.80s", err);
    }
    if (optimistic) {
        t->state = HEALTH_UP;
        t->ok_streak = c->rise;
    } else {
        t->state = HEALTH_UNKNOWN;
    }
    loop_timer_init(&t->timer, run_check, t);
    loop_timer_init(&t->tcp_timer, tcp_timeout, t);
    /* spread the first checks over a quarter interval */
    loop_timer_start(hc->loop, &t->timer, cairn_rand64() % (c->interval_ms / 4 + 1));
    return t;
}

int health_watch_start(struct health_checker *hc, struct health_watch *w, const struct net_addr *addr,
                       const char *name, const struct health_check_conf *c, bool optimistic)
{
    char key[KEY_MAX];
    make_key(key, addr, name, c);
    struct health_target *t = hc->targets;
    while (t && strcmp(t->key, key) != 0)
        t = t->next;
    if (!t) {
        t = target_new(hc, key, addr, name, c, optimistic);
        if (!t)
            return -ENOMEM;
        t->next = hc->targets;
        hc->targets = t;
    }
    w->target = t;
    w->next = t->watchers;
    t->watchers = w;
    return 0;
}

void health_watch_stop(struct health_checker *hc, struct health_watch *w)
{
    struct health_target *t = w->target;
    if (!t)
        return;
    w->target = NULL;
    for (struct health_watch **pp = &t->watchers; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    if (t->watchers)
        return;
    for (struct health_target **pp = &hc->targets; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    target_free(t);
}

/* ---- the health: grammar ---- */

static int parse_status_range(const char *s, int *lo, int *hi)
{
    int a, b, n = 0;
    if (sscanf(s, "%d-%d%n", &a, &b, &n) == 2 && (size_t)n == strlen(s)) {
    } else if (sscanf(s, "%d%n", &a, &n) == 1 && (size_t)n == strlen(s)) {
        b = a;
    } else {
        return -EINVAL;
    }
    if (a < 100 || b > 599 || a > b)
        return -EINVAL;
    *lo = a;
    *hi = b;
    return 0;
}

static int get_port(struct cfg *c, const cfg_node *n, const char *path, uint16_t *port)
{
    long long x;
    if (cfg_get_int(c, n, path, 1, 65535, &x))
        return -EINVAL;
    *port = (uint16_t)x;
    return 0;
}

static int parse_http(struct cfg *c, const cfg_node *n, const char *path, struct health_check_conf *h,
                      bool own_port)
{
    static const char *const keys_port[] = { "path", "status", "host", "port", "tls", NULL };
    static const char *const keys[] = { "path", "status", "host", NULL };
    cfg_node *v[5] = { 0 };
    char q[300];
    h->http = true;
    if (cfg_map_fields(c, n, path, own_port ? keys_port : keys, v))
        return -EINVAL;
    int bad = 0;
    CFG_PATH(q, "%s.path", path);
    if (v[0] && cfg_get_string(c, v[0], q, &h->path) == 0 && h->path[0] != '/')
        bad = cfg_error(c, v[0], q, "expected a path starting with /");
    CFG_PATH(q, "%s.status", path);
    if (v[1] && (!cfg_is_scalar(v[1]) ||
                 parse_status_range(cfg_scalar(v[1]), &h->status_min, &h->status_max)))
        bad = cfg_error(c, v[1], q, "expected a status like 200 or a range like 200-399");
    CFG_PATH(q, "%s.host", path);
    if (v[2])
        bad |= cfg_get_string(c, v[2], q, &h->host);
    CFG_PATH(q, "%s.tls", path);
    if (v[4])
        bad |= cfg_get_bool(c, v[4], q, &h->tls);
    h->port = h->tls ? 443 : 80;
    CFG_PATH(q, "%s.port", path);
    if (v[3])
        bad |= get_port(c, v[3], q, &h->port);
    if (!h->path && !(h->path = strdup("/")))
        bad = cfg_error(c, n, path, "out of memory");
    return bad ? -EINVAL : 0;
}

int health_conf_parse(struct cfg *c, const cfg_node *n, const char *path, struct health_check_conf *h,
                      bool own_port)
{
    static const char *const keys[] = { "http", "tcp", "interval", "timeout", "rise", "fall", NULL };
    cfg_node *v[6];
    char p[300];
    long long x;
    memset(h, 0, sizeof(*h));
    h->enabled = true;
    h->interval_ms = 2000;
    h->timeout_ms = 1000;
    h->rise = 2;
    h->fall = 2;
    h->status_min = 200;
    h->status_max = 399;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    if ((v[0] != NULL) == (v[1] != NULL))
        return cfg_error(c, n, path, "give one of \"http\" or \"tcp\"");
    if (v[0]) {
        CFG_PATH(p, "%s.http", path);
        bad |= parse_http(c, v[0], p, h, own_port);
    } else if (own_port) {
        static const char *const tk[] = { "port", NULL };
        cfg_node *tv[1];
        CFG_PATH(p, "%s.tcp", path);
        if (cfg_map_fields(c, v[1], p, tk, tv))
            bad = -EINVAL;
        else if (!tv[0])
            bad = cfg_error(c, v[1], p, "missing key \"port\"");
        else {
            char q[320];
            CFG_PATH(q, "%s.port", p);
            bad |= get_port(c, tv[0], q, &h->port);
        }
    } else {
        CFG_PATH(p, "%s.tcp", path);
        bad |= cfg_get_bool(c, v[1], p, &h->enabled);
    }
    CFG_PATH(p, "%s.interval", path);
    if (v[2] && cfg_get_duration(c, v[2], p, &h->interval_ms) == 0 && h->interval_ms < 100)
        bad = cfg_error(c, v[2], p, "expected at least 100ms");
    CFG_PATH(p, "%s.timeout", path);
    if (v[3] && cfg_get_duration(c, v[3], p, &h->timeout_ms) == 0 && h->timeout_ms < 10)
        bad = cfg_error(c, v[3], p, "expected at least 10ms");
    CFG_PATH(p, "%s.rise", path);
    if (v[4]) {
        if (cfg_get_int(c, v[4], p, 1, 100, &x) == 0)
            h->rise = (int)x;
        else
            bad = -EINVAL;
    }
    CFG_PATH(p, "%s.fall", path);
    if (v[5]) {
        if (cfg_get_int(c, v[5], p, 1, 100, &x) == 0)
            h->fall = (int)x;
        else
            bad = -EINVAL;
    }
    return bad ? -EINVAL : 0;
}

void health_conf_free(struct health_check_conf *h)
{
    free(h->path);
    free(h->host);
    free(h->tls_cert);
    free(h->tls_key);
    h->path = h->host = h->tls_cert = h->tls_key = NULL;
}
