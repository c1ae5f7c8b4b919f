/* ui_internal.h - the ui role's types, shared by its files only.
 *
 *   browser ──HTTP──> ui_main.c  pages and assets (embedded, gzip, hashed names),
 *                                /api/ui/... (stack, dashboards, session)
 *                      ui_auth.c  users, sessions, login/logout, CSRF
 *                      ui_proxy.c /api/<source>/... to the stack's metrics, logs,
 *                                 traces and alerts services (WebSocket too)
 */
#ifndef CAIRN_UI_INTERNAL_H
#define CAIRN_UI_INTERNAL_H

#include "ui.h"
#include "core/hmap.h"
#include "core/httpc.h"
#include "core/httpd.h"
#include "core/service.h"
#include "core/tunnel.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UI_MAX_LISTEN 8
#define UI_MAX_DASHBOARD_BYTES (4u << 20)

/* ---- embedded files (build/gen/ui_assets.c, made by scripts/embed_ui.py) ---- */
struct ui_asset {
    const char *path;                   /* "/assets/app.1a2b3c4d5e.js", "dashboards/edge.json" */
    const char *ctype;
    const unsigned char *gz;            /* gzip of the file */
    size_t gz_len, len;                 /* compressed and original sizes */
    const char *etag;                   /* "\"<hash>\"" */
    bool immutable;                     /* a content-hashed name: cached for a year */
};
extern const struct ui_asset ui_assets[];
extern const size_t ui_nassets;

/* ---- configuration ---- */

/* A source the console proxies: a service of the stack found by name. */
enum ui_source { UI_METRICS, UI_LOGS, UI_JAEGER, UI_TEMPO, UI_ALERTS, UI_NSOURCES };

struct ui_user {
    char *name;
    char *hash;                         /* crypt(3) form: $7$ (scrypt) or $y$ (yescrypt) */
};

struct ui_dashboard {
    char *uid, *title;
    char *json;                         /* the Grafana dashboard model, as read */
    bool builtin;
};

struct ui_conf {
    struct net_addr listen[UI_MAX_LISTEN];
    size_t nlisten;
    char *source_name[UI_NSOURCES];     /* service names (metrics, logs, traces, traces, alerts) */
    struct ui_user *users;
    size_t nusers;
    uint64_t session_ttl_ms;
    struct ui_dashboard *dashboards;    /* the stack file's, then the built-in ones */
    size_t ndashboards;
};

int ui__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
/* Reads one dashboard's JSON (a file's or an embedded one's, at most
 * UI_MAX_DASHBOARD_BYTES): the model, or the model under "dashboard"; uid and title
 * from it (fallback_uid when it has none). Returns 0, or -EINVAL with why in err. */
int ui__dashboard_load(const char *text, size_t n, const char *fallback_uid, struct ui_dashboard *d, char *err,
                       size_t errlen);
void ui__dashboard_free(struct ui_dashboard *d);
void ui__free_conf(void *conf);

/* ---- runtime ---- */

struct ui_upstream {                    /* where a source is, found at start */
    bool ok;
    struct net_addr addr;
    char host[96];
};

struct ui_probe {                       /* a service's readiness, polled */
    const struct service *svc;
    char host[96];                      /* where its /-/ready is (host:port), or "" */
    struct net_addr addr;
    int state;                          /* -1 unknown, 0 down, 1 up not ready, 2 ready */
    uint64_t since_ms;                  /* wall ms of the last change */
    uint64_t checked_ms;
    bool inflight;
};

struct ui_session {
    char user[64];
    char csrf[65];
    uint64_t expires_ms;
};

struct ui {
    const struct ui_conf *conf;
    struct stack stack;                 /* the running configuration, after reloads */
    struct service_ctx *sc;
    struct httpd_conf hconf;
    struct service_http_pool pool;
    struct httpc *hc;
    struct ui_upstream up[UI_NSOURCES];
    struct ui_probe *probes;
    size_t nprobes;
    struct loop_timer probe_timer;
    struct hmap sessions;               /* session id (hex) -> struct ui_session */
    struct tunnel_set tunnels;          /* live tails (WebSocket) */
    uint8_t secret[32];                 /* for CSRF tokens without users */
    struct metric *m_requests, *m_proxied, *m_proxy_errors, *m_logins, *m_login_failures;
};

/* ui_auth.c */
/* Answers the request itself (401 page/redirect, 403 CSRF) and returns false when it
 * may not go on; fills user (empty without users:) when it may. */
bool ui__authorize(struct ui *u, struct httpd_req *r, char *user, size_t userlen);
bool ui__serve_auth(struct ui *u, struct httpd_req *r);     /* /login, /logout, /api/ui/session */
void ui__sessions_free(struct ui *u);
/* The session id (64 hex digits) in a Cookie header's value, or false. */
bool ui__cookie_session(struct strv cookie, char id[65]);
/* The cookie value and csrf token of a request's session (NULL when none). */
const struct ui_session *ui__session(struct ui *u, struct httpd_req *r);
/* The CSRF token the page gets (per session with users:, else one per process). */
void ui__csrf_token(struct ui *u, struct httpd_req *r, char out[65]);

/* ui_proxy.c */
void ui__resolve_sources(struct ui *u);
bool ui__proxy(struct ui *u, struct httpd_req *r);          /* /api/{metrics,logs,jaeger,tempo,alerts}/... */

/* ui_main.c */
void ui__security_headers(struct httpd_req *r);
void ui__json(struct httpd_req *r, int status, const char *json, size_t n);
bool ui__accepts_gzip(struct httpd_req *r);
/* {"status":"error","error":"<message>"}, as the Prometheus and Loki APIs answer. */
void ui__error(struct httpd_req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
