/* registry_auth.c - the Docker token scheme, with the registry as its own token
 * server.
 *
 * With users configured, /v2/ requests need "Authorization: Bearer <token>"; without
 * one (or with too little in it) the answer is 401 with
 *   WWW-Authenticate: Bearer realm="http://HOST/token",service="cairn-registry",
 *                     scope="repository:NAME:pull,push"
 * and the client asks GET /token?service=...&scope=... with basic auth (or none: then
 * only public repositories can be pulled). A token is a JWT (HS256, signed with a key
 * made at start, valid 5 minutes) whose "access" claim lists what the user may do
 * of what was asked. Without users the registry is open, as Distribution without auth.
 */
#include "registry_internal.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_TTL 300
#define SERVICE "cairn-registry"

bool reg_pattern_match(const char *pat, const char *name)
{
    size_t n = strlen(pat);
    if (n && pat[n - 1] == '*')
        return strncmp(pat, name, n - 1) == 0;
    return strcmp(pat, name) == 0;
}

static unsigned allowed(const struct reg_conf *c, const struct reg_user *u, const char *repo)
{
    unsigned a = 0;
    for (size_t i = 0; i < c->npublic; i++)
        if (reg_pattern_match(c->public_repos[i], repo))
            a |= REG_PULL;
    for (size_t g = 0; u && g < u->ngrants; g++)
        if (reg_pattern_match(u->grants[g].pattern, repo))
            a |= (u->grants[g].pull ? REG_PULL : 0) | (u->grants[g].push ? REG_PUSH : 0) |
                 (u->grants[g].del ? REG_DELETE : 0);
    return a;
}

static void b64url(struct buf *b, const unsigned char *p, size_t n)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        buf_putc(b, al[v >> 18 & 63]);
        buf_putc(b, al[v >> 12 & 63]);
        if (i + 1 < n)
            buf_putc(b, al[v >> 6 & 63]);
        if (i + 2 < n)
            buf_putc(b, al[v & 63]);
    }
}

static int unb64url(const char *s, size_t n, unsigned char *out, size_t cap)
{
    size_t o = 0;
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int d = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26
              : c >= '0' && c <= '9' ? c - '0' + 52 : c == '-' ? 62 : c == '_' ? 63 : -1;
        if (d < 0)
            return -1;
        v = v << 6 | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(v >> bits);
        }
    }
    return (int)o;
}

static void sign(const struct reg_svc *s, const char *data, size_t n, unsigned char mac[32])
{
    unsigned l = 32;
    HMAC(EVP_sha256(), s->token_key, sizeof(s->token_key), (const unsigned char *)data, n, mac, &l);
}

/* The user whose basic credentials the request carries: 1 (found), 0 (none given),
 * -1 (wrong). */
static int basic_user(const struct reg_conf *c, struct httpd_req *r, const struct reg_user **u)
{
    const struct http_header *h = httpd_req_header(r, "authorization");
    *u = NULL;
    if (!h || !strv_has_prefix(h->value, "Basic "))
        return 0;
    unsigned char dec[512];
    struct strv v = strv_trim(strv_make(h->value.p + 6, h->value.n - 6));
    if (v.n >= sizeof(dec))
        return -1;
    int n = EVP_DecodeBlock(dec, (const unsigned char *)v.p, (int)v.n);
    if (n <= 0)
        return -1;
    while (n > 0 && dec[n - 1] == 0)
        n--;
    dec[n] = 0;
    char *colon = strchr((char *)dec, ':');
    if (!colon)
        return -1;
    *colon = 0;
    for (size_t i = 0; i < c->nusers; i++) {
        const struct reg_user *x = &c->users[i];
        size_t pl = strlen(x->password), gl = strlen(colon + 1);
        if (strcmp(x->name, (char *)dec) == 0 && pl == gl && CRYPTO_memcmp(x->password, colon + 1, pl) == 0) {
            *u = x;
            return 1;
        }
    }
    return -1;
}

static void unauthorized(struct httpd_req *r, const char *realm_host, const char *scope, const char *error)
{
    char ch[700];
    snprintf(ch, sizeof(ch), "Bearer realm=\"%s://%s/token\",service=\"" SERVICE "\"%s%s%s%s%s",
             r->tls ? "https" : "http", realm_host,
             scope ? ",scope=\"" : "", scope ? scope : "", scope ? "\"" : "", error ? ",error=\"" : "",
             error ? error : "");
    if (error)
        strcat(ch, "\"");
    httpd_header(r, "WWW-Authenticate", ch);
    httpd_header(r, "Docker-Distribution-API-Version", "registry/2.0");
    static const char body[] = "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\","
                               "\"detail\":{}}]}\n";
    httpd_respond(r, 401, "application/json", body, sizeof(body) - 1);
}

void reg_auth_token(struct reg_svc *s, struct httpd_req *r)
{
    const struct reg_conf *c = s->conf;
    const struct reg_user *u;
    if (basic_user(c, r, &u) < 0) {
        char host[256];
        snprintf(host, sizeof(host), "%.*s", (int)MIN(r->h.host.n, sizeof(host) - 1), r->h.host.p);
        unauthorized(r, host, NULL, NULL);
        return;
    }
    json_t *access = json_array();
    /* every scope=repository:NAME:ACTIONS parameter */
    const char *p = r->h.query.p, *end = r->h.query.p + r->h.query.n;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        if ((size_t)(amp - p) > 6 && strncmp(p, "scope=", 6) == 0) {
            char scope[600];
            size_t o = 0;
            for (const char *v = p + 6; v < amp && o + 1 < sizeof(scope); v++) {
                unsigned x;
                if (*v == '%' && v + 2 < amp && sscanf(v + 1, "%2x", &x) == 1) {
                    scope[o++] = (char)x;
                    v += 2;
                } else {
                    scope[o++] = *v == '+' ? ' ' : *v;
                }
            }
            scope[o] = 0;
            /* a parameter may hold several scopes separated by spaces */
            for (char *save = NULL, *one = strtok_r(scope, " ", &save); one; one = strtok_r(NULL, " ", &save)) {
                char *c1 = strchr(one, ':'), *c2 = c1 ? strrchr(one, ':') : NULL;
                if (!c1 || c2 == c1 || strncmp(one, "repository:", 11) != 0)
                    continue;
                *c2 = 0;
                const char *name = c1 + 1;
                unsigned may = allowed(c, u, name);
                json_t *acts = json_array();
                for (char *s2 = NULL, *a = strtok_r(c2 + 1, ",", &s2); a; a = strtok_r(NULL, ",", &s2)) {
                    unsigned bit = strcmp(a, "pull") == 0 ? REG_PULL : strcmp(a, "push") == 0 ? REG_PUSH
                                 : strcmp(a, "delete") == 0 || strcmp(a, "*") == 0 ? REG_DELETE : 0;
                    if (bit && (may & bit))
                        json_array_append_new(acts, json_string(a));
                }
                json_array_append_new(access, json_pack("{s:s, s:s, s:o}", "type", "repository", "name", name,
                                                        "actions", acts));
            }
        }
        p = amp + 1;
    }
    time_t now = time(NULL);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:o}", "iss", SERVICE, "sub", u ? u->name : "",
                               "aud", SERVICE, "iat", (json_int_t)now, "nbf", (json_int_t)now - 5, "exp",
                               (json_int_t)now + TOKEN_TTL, "access", access);
    char *payload = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    struct buf t = BUF_INIT;
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    b64url(&t, (const unsigned char *)header, sizeof(header) - 1);
    buf_putc(&t, '.');
    b64url(&t, (const unsigned char *)payload, strlen(payload));
    free(payload);
    unsigned char mac[32];
    sign(s, buf_head(&t), buf_used(&t), mac);
    buf_putc(&t, '.');
    b64url(&t, mac, 32);
    struct tm tm;
    gmtime_r(&now, &tm);
    char issued[32];
    strftime(issued, sizeof(issued), "%Y-%m-%dT%H:%M:%SZ", &tm);
    struct buf b = BUF_INIT;
    buf_printf(&b, "{\"token\":\"%.*s\",\"access_token\":\"%.*s\",\"expires_in\":%d,\"issued_at\":\"%s\"}\n",
               (int)buf_used(&t), buf_head(&t), (int)buf_used(&t), buf_head(&t), TOKEN_TTL, issued);
    buf_free(&t);
    httpd_respond(r, 200, "application/json", buf_head(&b), buf_used(&b));
    buf_free(&b);
}

/* What the request's token grants on repo (REG_* bits; for repo NULL, REG_PULL when
 * the token is valid at all); -1 when there is no valid token. */
static int token_grants(struct reg_svc *s, struct httpd_req *r, const char *repo, char *actor, size_t cap)
{
    const struct http_header *h = httpd_req_header(r, "authorization");
    if (!h || !strv_has_prefix(h->value, "Bearer "))
        return -1;
    struct strv t = strv_trim(strv_make(h->value.p + 7, h->value.n - 7));
    const char *d1 = memchr(t.p, '.', t.n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(t.p + t.n - d1 - 1)) : NULL;
    if (!d2)
        return -1;
    unsigned char mac[32], given[40];
    sign(s, t.p, (size_t)(d2 - t.p), mac);
    if (unb64url(d2 + 1, (size_t)(t.p + t.n - d2 - 1), given, sizeof(given)) != 32 ||
        CRYPTO_memcmp(mac, given, 32) != 0)
        return -1;
    unsigned char pl[8192];
    int n = unb64url(d1 + 1, (size_t)(d2 - d1 - 1), pl, sizeof(pl) - 1);
    if (n < 0)
        return -1;
    json_t *claims = json_loadb((const char *)pl, (size_t)n, 0, NULL);
    json_t *exp = json_object_get(claims, "exp");
    if (!json_is_integer(exp) || json_integer_value(exp) < (json_int_t)time(NULL)) {
        json_decref(claims);
        return -1;
    }
    int grants = repo ? 0 : REG_PULL;
    json_t *sub = json_object_get(claims, "sub");
    if (actor && json_is_string(sub))
        snprintf(actor, cap, "%s", json_string_value(sub));
    json_t *access = json_object_get(claims, "access"), *it;
    size_t i;
    json_array_foreach(access, i, it) {
        json_t *name = json_object_get(it, "name"), *acts = json_object_get(it, "actions"), *a;
        size_t k;
        if (!repo || !json_is_string(name) || strcmp(json_string_value(name), repo) != 0)
            continue;
        json_array_foreach(acts, k, a) {
            const char *v = json_string_value(a);
            if (!v)
                continue;
            grants |= strcmp(v, "pull") == 0 ? REG_PULL : strcmp(v, "push") == 0 ? REG_PUSH
                    : strcmp(v, "delete") == 0 || strcmp(v, "*") == 0 ? REG_DELETE : 0;
        }
    }
    json_decref(claims);
    return grants;
}

static bool allows(struct reg_svc *s, struct httpd_req *r, const char *repo, unsigned actions, char *actor,
                   size_t cap)
{
    if (!s->conf->nusers)
        return true;
    int g = token_grants(s, r, repo, actor, cap);
    return g >= 0 && ((unsigned)g & actions) == actions;
}

bool reg_auth_allows(struct reg_svc *s, struct httpd_req *r, const char *repo, unsigned actions)
{
    return allows(s, r, repo, actions, NULL, 0);
}

bool reg_auth_check(struct reg_svc *s, struct httpd_req *r, const char *repo, unsigned actions, char *actor,
                    size_t cap)
{
    if (allows(s, r, repo, actions, actor, cap))
        return true;
    char host[256], scope[400];
    snprintf(host, sizeof(host), "%.*s", (int)MIN(r->h.host.n, sizeof(host) - 1), r->h.host.p);
    if (repo)
        snprintf(scope, sizeof(scope), "repository:%s:%s%s%s", repo,
                 actions & (REG_PULL | REG_PUSH) ? "pull" : "", actions & REG_PUSH ? ",push" : "",
                 actions & REG_DELETE ? (actions & (REG_PULL | REG_PUSH) ? ",delete" : "delete") : "");
    bool had = httpd_req_header(r, "authorization") != NULL;
    unauthorized(r, host, repo ? scope : NULL, had ? "insufficient_scope" : NULL);
    return false;
}
