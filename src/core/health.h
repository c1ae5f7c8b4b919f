/* health.h - active health checks, shared by every role that checks servers.
 *
 * A struct health_checker runs on one loop (a service's main loop) and owns its
 * targets: an address with a check (HTTP(S) GET of a path whose status must fall
 * in a range, or a TCP connect), run every `interval`, each bounded by `timeout`.
 * A target goes down after `fall` failures in a row and comes back after `rise`
 * successes. Users (an edge backend's server, a DNS GSLB member) watch a target
 * through a struct health_watch embedded in their own object; every user that
 * names the same address with the same check shares one target, so it is checked
 * once however many backends, names or configuration generations name it. A
 * target lives while it has watchers: a reload that starts the new watches before
 * stopping the old ones keeps the targets, their state and their timing.
 *
 * The first state of a new target is either unknown (the first verdict decides,
 * up or down; health_checker_settled() tells when every target has one, so a
 * service can wait for them before serving) or up (optimistic: it takes `fall`
 * failures to go down, so a stack starting all at once is not refused for rise x
 * interval), as the user that creates it asks.
 *
 * Thread rules: everything runs on the checker's loop, except
 * health_target_state(), an atomic read for any thread.
 */
#ifndef CAIRN_HEALTH_H
#define CAIRN_HEALTH_H

#include "core/config.h"
#include "core/loop.h"
#include "core/net.h"
#include "core/tls.h"

#include <stdbool.h>
#include <stdint.h>

enum health_state { HEALTH_UNKNOWN = -1, HEALTH_DOWN = 0, HEALTH_UP = 1 };

struct health_check_conf {
    bool enabled;                   /* false: `tcp: false`, no checks */
    bool http;                      /* false: a TCP connect */
    bool tls;                       /* HTTPS (certificates are not verified) */
    uint16_t port;                  /* the port checked, when the form names one */
    char *path;                     /* HTTP target, "/" when NULL */
    char *host;                     /* Host header; NULL: the target's name */
    char *tls_cert, *tls_key;       /* client certificate to present, or NULL (not parsed:
                                       set by a role from its own TLS settings) */
    int status_min, status_max;     /* accepted statuses */
    uint64_t interval_ms, timeout_ms;
    int rise, fall;
};

/* Parses a `health:` mapping, the one grammar of every role:
 *   {http: {path, status, host[, port, tls]} | tcp: true|false | tcp: {port},
 *    interval: 2s, timeout: 1s, rise: 2, fall: 2}
 * With own_port (a DNS member is an address without a port) the check names its
 * port: http.port (80, or 443 with tls: true) and tcp: {port: N}; without it the
 * check goes to the server's own address and `tcp` is a boolean. Defaults: status
 * 200-399, path /. Returns 0, or -EINVAL after recording errors. Strings are
 * malloc'd: free with health_conf_free. */
int health_conf_parse(struct cfg *c, const cfg_node *n, const char *path, struct health_check_conf *h,
                      bool own_port);
void health_conf_free(struct health_check_conf *h);

struct health_target;
struct health_watch;

/* Called on the checker's loop when the target's state changes (was is the state
 * before: HEALTH_UNKNOWN for a first verdict); why says what the check saw. */
typedef void (*health_change_cb)(struct health_watch *w, int up, int was, const char *why);

struct health_watch {
    health_change_cb cb;
    void *data;                     /* the user's */
    struct health_target *target;   /* set by health_watch_start */
    struct health_watch *next;      /* the target's watchers */
};

struct health_checker {
    struct loop *loop;
    struct httpc *http;
    struct tls_ctx *tls;            /* HTTPS checks without a client certificate */
    const char *user_agent;
    struct health_target *targets;
};

/* Sets up a checker on loop; user_agent is sent with HTTP checks (kept, not copied).
 * Returns 0 or -ENOMEM. */
int health_checker_init(struct health_checker *hc, struct loop *loop, const char *user_agent);
/* Stops every check and frees every target (watches left are cut loose). */
void health_checker_destroy(struct health_checker *hc);
/* True once no watched target is in HEALTH_UNKNOWN. */
bool health_checker_settled(const struct health_checker *hc);

/* Watches addr with check c: the shared target when one matches (addr, name, every
 * field of c), else a new one whose first check runs within a quarter interval
 * (optimistic: it starts up). name is the target's name for the Host header and
 * messages ("10.0.0.1:80"). cb and data must be set in w. Returns 0 or -ENOMEM. */
int health_watch_start(struct health_checker *hc, struct health_watch *w, const struct net_addr *addr,
                       const char *name, const struct health_check_conf *c, bool optimistic);
/* Stops watching; the target goes with its last watcher. */
void health_watch_stop(struct health_checker *hc, struct health_watch *w);

int health_target_state(const struct health_target *t);
/* What the last check saw ("http status 200", "tcp: Connection refused"). */
const char *health_target_last(const struct health_target *t);

#endif
