/* ui_auth.c - who may use the console.
 *
 * Without users: the console is open to whoever reaches its address (loopback by
 * default), as Grafana with anonymous access. With users: a login page, a session
 * per login (a random 256-bit id in an HttpOnly, SameSite=Strict cookie), kept
 * in memory for session_ttl. Either way every state-changing call (POST, PUT,
 * PATCH, DELETE: a silence, a logout) must carry the page's CSRF token in
 * X-CSRF-Token, which another site's page can neither read nor send; a form post
 * may carry it as the field csrf. Passwords are checked with crypt(3) (scrypt or
 * yescrypt hashes, as mkpasswd makes them), in constant time by construction.
 */
#include "ui_internal.h"
#include "core/log.h"
#include "core/metrics.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COOKIE "cairn_session"

static bool is_public_path(struct strv path)
{
    return strv_eq_cstr(path, "/login") || strv_has_prefix(path, "/assets/") ||
           strv_eq_cstr(path, "/favicon.ico") || strv_eq_cstr(path, "/-/healthy") ||
           strv_eq_cstr(path, "/-/ready") || strv_eq_cstr(path, "/metrics");
}

static bool state_changing(struct strv m)
{
    return !strv_eq_cstr(m, "GET") && !strv_eq_cstr(m, "HEAD") && !strv_eq_cstr(m, "OPTIONS");
}

static bool is_hex64(const char *p)
{
    for (int i = 0; i < 64; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

bool ui__cookie_session(struct strv v, char id[65])
{
    size_t k = 0, cl = sizeof(COOKIE) - 1;
    while (k < v.n) {
        while (k < v.n && (v.p[k] == ' ' || v.p[k] == ';'))
            k++;
        size_t s = k;
        while (k < v.n && v.p[k] != ';')
            k++;
        struct strv pair = strv_make(v.p + s, k - s);
        if (pair.n == cl + 1 + 64 && !memcmp(pair.p, COOKIE "=", cl + 1) && is_hex64(pair.p + cl + 1)) {
            memcpy(id, pair.p + cl + 1, 64);
            id[64] = 0;
            return true;
        }
    }
    return false;
}

/* The session id from the Cookie header(s), or false. */
static bool cookie_id(struct httpd_req *r, char id[65])
{
    for (size_t i = 0; i < r->h.nheaders; i++)
        if (strv_caseeq_cstr(r->h.headers[i].name, "Cookie") && ui__cookie_session(r->h.headers[i].value, id))
            return true;
    return false;
}

const struct ui_session *ui__session(struct ui *u, struct httpd_req *r)
{
    char id[65];
    if (!cookie_id(r, id))
        return NULL;
    struct ui_session *s = hmap_get(&u->sessions, id, 64);
    if (!s)
        return NULL;
    if (s->expires_ms < (uint64_t)(cairn_wall_time() * 1000)) {
        free(hmap_del(&u->sessions, id, 64));
        return NULL;
    }
    return s;
}

void ui__csrf_token(struct ui *u, struct httpd_req *r, char out[65])
{
    const struct ui_session *s = ui__session(u, r);
    if (s) {
        memcpy(out, s->csrf, 65);
        return;
    }
    /* without users: one token for this process, an HMAC so that it says nothing of the key */
    unsigned char mac[32];
    unsigned int ml = sizeof(mac);
    HMAC(EVP_sha256(), u->secret, sizeof(u->secret), (const unsigned char *)"csrf", 4, mac, &ml);
    cairn_hex(mac, 32, out);
    out[64] = 0;
}

static bool csrf_ok(struct ui *u, struct httpd_req *r)
{
    char want[65];
    ui__csrf_token(u, r, want);
    const struct http_header *h = httpd_req_header(r, "X-CSRF-Token");
    char got[65] = "";
    if (h && h->value.n == 64) {
        memcpy(got, h->value.p, 64);
        got[64] = 0;
    } else if (!h) {
        struct http_form f;
        httpd_req_form(r, &f);
        const char *v = http_form_get(&f, "csrf");
        if (v && strlen(v) == 64)
            memcpy(got, v, 65);
        http_form_free(&f);
    }
    return got[0] && CRYPTO_memcmp(got, want, 64) == 0;
}

bool ui__authorize(struct ui *u, struct httpd_req *r, char *user, size_t userlen)
{
    user[0] = 0;
    bool is_login = strv_eq_cstr(r->h.path, "/login");
    if (u->conf->nusers && !is_public_path(r->h.path)) {
        const struct ui_session *s = ui__session(u, r);
        if (!s) {
            if (strv_has_prefix(r->h.path, "/api/") || state_changing(r->h.method)) {
                ui__error(r, 401, "login required");
            } else {
                /* a page: to the login page, then back here */
                struct buf loc = { 0 };
                buf_puts(&loc, "/login?next=");
                for (size_t i = 0; i < r->h.target.n && i < 1024; i++) {
                    unsigned char ch = (unsigned char)r->h.target.p[i];
                    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                        strchr("-._~/", ch))
                        buf_putc(&loc, (char)ch);
                    else
                        buf_printf(&loc, "%%%02X", ch);
                }
                buf_putc(&loc, 0);
                ui__security_headers(r);
                httpd_header(r, "Location", buf_head(&loc));
                httpd_header(r, "Cache-Control", "no-store");
                httpd_respond(r, 302, "text/plain; charset=utf-8", "login required\n", 15);
                buf_free(&loc);
            }
            return false;
        }
        snprintf(user, userlen, "%s", s->user);
    }
    if (state_changing(r->h.method) && !is_login && !csrf_ok(u, r)) {
        ui__error(r, 403, "missing or wrong CSRF token (X-CSRF-Token)");
        return false;
    }
    return true;
}

/* ---- /login, /logout, /api/ui/session ---- */

static bool password_ok(const struct ui_user *us, const char *password)
{
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    if (!cd)
        return false;
    const char *h = crypt_r(password, us->hash, cd);
    bool ok = h && h[0] != '*' && strlen(h) == strlen(us->hash) && CRYPTO_memcmp(h, us->hash, strlen(h)) == 0;
    explicit_bzero(cd, sizeof(*cd));
    free(cd);
    return ok;
}

/* A local path to go back to after login (never another site: "//host" or "/\"). */
static const char *safe_next(const char *next)
{
    if (!next || next[0] != '/' || next[1] == '/' || next[1] == '\\' || strpbrk(next, "\r\n"))
        return "/";
    return next;
}

static void set_cookie(struct httpd_req *r, const char *id, uint64_t max_age_s)
{
    char c[200];
    snprintf(c, sizeof(c), COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%llu%s", id,
             (unsigned long long)max_age_s, r->tls ? "; Secure" : "");
    httpd_header(r, "Set-Cookie", c);
}

static void redirect(struct httpd_req *r, const char *to)
{
    ui__security_headers(r);
    httpd_header(r, "Location", to);
    httpd_header(r, "Cache-Control", "no-store");
    httpd_respond(r, 303, "text/plain; charset=utf-8", "see other\n", 10);
}

/* Drops the sessions past their time (at each login: logins are rare, and a
 * lookup drops an expired session it meets). */
static void sweep_sessions(struct ui *u)
{
    uint64_t now = (uint64_t)(cairn_wall_time() * 1000);
    char dead[64][65];
    size_t nd;
    do {
        nd = 0;
        size_t it = 0;
        const struct hmap_slot *sl;
        while (nd < 64 && hmap_next(&u->sessions, &it, &sl))
            if (((struct ui_session *)sl->value)->expires_ms < now) {
                memcpy(dead[nd], sl->key, 64);
                dead[nd++][64] = 0;
            }
        for (size_t i = 0; i < nd; i++)
            free(hmap_del(&u->sessions, dead[i], 64));
    } while (nd == 64);
}

/* A login form posted from another site (login CSRF) is refused: a browser sends
 * Origin with every POST, and it must name this console's own host. */
static bool same_origin(struct httpd_req *r)
{
    const struct http_header *o = httpd_req_header(r, "Origin");
    if (!o)
        return true;                        /* not a browser's cross-site form */
    struct strv v = o->value;
    size_t k = 0;
    while (k + 2 < v.n && !(v.p[k] == '/' && v.p[k + 1] == '/'))
        k++;
    if (k + 2 >= v.n)
        return false;                       /* "null" and other opaque origins */
    return strv_caseeq(strv_make(v.p + k + 2, v.n - k - 2), r->h.host);
}

static void login(struct ui *u, struct httpd_req *r)
{
    if (!same_origin(r)) {
        ui__error(r, 403, "login from another origin refused");
        return;
    }
    sweep_sessions(u);
    struct http_form f;
    httpd_req_form(r, &f);
    const char *name = http_form_get(&f, "user"), *pw = http_form_get(&f, "password");
    const char *next = safe_next(http_form_get(&f, "next"));
    const struct ui_user *us = NULL;
    for (size_t i = 0; name && i < u->conf->nusers; i++)
        if (!strcmp(u->conf->users[i].name, name))
            us = &u->conf->users[i];
    char peer[64];
    httpd_req_peer(r, peer, sizeof(peer));
    /* an unknown user costs the same as a wrong password: the first user's hash is checked */
    bool ok = password_ok(us ? us : &u->conf->users[0], pw ? pw : "") && us;
    if (!ok) {
        metric_inc(u->m_login_failures);
        log_warn("console login refused", "user", name ? name : "", "client", peer);
        struct buf loc = { 0 };
        buf_puts(&loc, "/login?error=1&next=");
        for (const char *p = next; *p && buf_used(&loc) < 1100; p++) {
            unsigned char ch = (unsigned char)*p;
            if (strchr("-._~/", ch) || (ch >= '0' && ch <= '9') || ((ch | 32) >= 'a' && (ch | 32) <= 'z'))
                buf_putc(&loc, (char)ch);
            else
                buf_printf(&loc, "%%%02X", ch);
        }
        buf_putc(&loc, 0);
        redirect(r, buf_head(&loc));
        buf_free(&loc);
        http_form_free(&f);
        return;
    }
    struct ui_session *s = calloc(1, sizeof(*s));
    uint8_t raw[64];
    cairn_random(raw, sizeof(raw));
    char id[65];
    cairn_hex(raw, 32, id);
    id[64] = 0;
    if (!s || hmap_put(&u->sessions, id, 64, s)) {
        free(s);
        ui__error(r, 503, "out of memory");
        http_form_free(&f);
        return;
    }
    snprintf(s->user, sizeof(s->user), "%s", us->name);
    cairn_hex(raw + 32, 32, s->csrf);
    s->csrf[64] = 0;
    s->expires_ms = (uint64_t)(cairn_wall_time() * 1000) + u->conf->session_ttl_ms;
    explicit_bzero(raw, sizeof(raw));
    metric_inc(u->m_logins);
    log_info("console login", "user", us->name, "client", peer);
    set_cookie(r, id, u->conf->session_ttl_ms / 1000);
    redirect(r, next);
    http_form_free(&f);
}

bool ui__serve_auth(struct ui *u, struct httpd_req *r)
{
    struct strv path = r->h.path, m = r->h.method;
    if (strv_eq_cstr(path, "/login") && strv_eq_cstr(m, "POST")) {
        if (!u->conf->nusers)
            redirect(r, "/");
        else
            login(u, r);
        return true;
    }
    if (strv_eq_cstr(path, "/logout") && strv_eq_cstr(m, "POST")) {
        char id[65];
        if (cookie_id(r, id))
            free(hmap_del(&u->sessions, id, 64));
        if (u->conf->nusers)
            set_cookie(r, "", 0);
        redirect(r, u->conf->nusers ? "/login" : "/");
        return true;
    }
    if (strv_eq_cstr(path, "/api/ui/session")) {
        char csrf[65];
        ui__csrf_token(u, r, csrf);
        const struct ui_session *s = ui__session(u, r);
        struct buf b = { 0 };
        buf_puts(&b, "{\"auth\":");
        buf_puts(&b, u->conf->nusers ? "true" : "false");
        buf_puts(&b, ",\"user\":");
        buf_json_str(&b, s ? s->user : "");
        buf_printf(&b, ",\"csrf\":\"%s\"}", csrf);
        ui__json(r, 200, buf_head(&b), buf_used(&b));
        buf_free(&b);
        return true;
    }
    return false;
}

void ui__sessions_free(struct ui *u)
{
    size_t it = 0;
    const struct hmap_slot *sl;
    while (hmap_next(&u->sessions, &it, &sl))
        free(sl->value);
    hmap_free(&u->sessions);
}
