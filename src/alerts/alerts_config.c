/* alerts_config.c - the alerts service's keys and Alertmanager's alertmanager.yml.
 *
 *   listen: ["127.0.0.1:9093"]
 *   alertmanager: alertmanager.yml   # a file, or the mapping inline; absent: one
 *                                    # receiver "default" with no integrations
 *   external_url: http://alerts.example:9093   # links in notifications
 *   data_retention: 120h             # how long expired silences and the
 *                                    # notification log are kept
 *
 * alertmanager.yml is read as Alertmanager 0.25 reads it, with its checks and
 * its messages (undefined receivers, matchers on the root route, zero intervals,
 * duplicated group_by labels...). What cairn does not do yet is refused with a
 * message that says so, never silently ignored: receivers other than webhook,
 * email and slack, http_config, templates, and Go templates in fields other than
 * Alertmanager's default ones.
 */
#include "alerts_internal.h"

#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define P CFG_PATH

struct globals {
    struct am_conf *ac;             /* for templated fields */
    struct am_http http;
    uint64_t resolve_timeout_ms;
    char *smtp_from, *smtp_hello, *smtp_smarthost, *smtp_user, *smtp_pass, *smtp_identity,
         *smtp_secret, *slack_api_url, *pagerduty_url, *opsgenie_api_url, *opsgenie_api_key;
    bool smtp_require_tls;
};

static void globals_free(struct globals *g)
{
    free(g->http.authorization);
    free(g->smtp_from);
    free(g->smtp_hello);
    free(g->smtp_smarthost);
    free(g->smtp_user);
    free(g->smtp_pass);
    free(g->pagerduty_url);
    free(g->opsgenie_api_url);
    free(g->opsgenie_api_key);
    free(g->smtp_identity);
    free(g->smtp_secret);
    free(g->slack_api_url);
}

/* A string that may hold a Go template: Alertmanager's default for the field is
 * accepted (NULL: render the default), plain text is kept, another template is
 * parsed into the configuration's template set (refused where ac is NULL). */
static int get_text(struct cfg *c, struct am_conf *ac, const cfg_node *n, const char *path,
                    const char *deflt, char **out)
{
    char *s = NULL;
    if (cfg_get_string(c, n, path, &s))
        return -EINVAL;
    if (deflt && strcmp(s, deflt) == 0) {
        free(s);
        *out = NULL;
        return 0;
    }
    if (strstr(s, "{{")) {
        char err[400], *name = NULL;
        int r = ac ? am__tmpl_field(ac, path, s, &name, err, sizeof(err)) : -ENOTSUP;
        free(s);
        if (r == -ENOTSUP)
            return cfg_error(c, n, path, "a Go template is not supported in this field by cairn yet");
        if (r)
            return cfg_error(c, n, path, "%s", err);
        free(*out);
        *out = name;
        return 0;
    }
    free(*out);
    *out = s;
    return 0;
}


static int get_secret_or_file(struct cfg *c, const cfg_node *v, const cfg_node *file,
                              const char *path, const char *base_dir, char **out)
{
    if (v)
        return cfg_get_string(c, v, path, out);
    if (!file)
        return 0;
    char *rel = NULL;
    if (cfg_get_string(c, file, path, &rel))
        return -EINVAL;
    char full[4096];
    snprintf(full, sizeof(full), "%s%s%s", rel[0] == '/' ? "" : base_dir, rel[0] == '/' ? "" : "/",
             rel);
    free(rel);
    struct cfg_errors e = { 0 };
    char *text;
    size_t len;
    if (cfg_read_file(full, &text, &len, &e)) {
        cfg_errors_free(&e);
        return cfg_error(c, file, path, "cannot read %s", full);
    }
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        text[--len] = 0;
    *out = text;
    return 0;
}


static int get_secret_or_file(struct cfg *c, const cfg_node *v, const cfg_node *file,
                              const char *path, const char *base_dir, char **out);

/* http_config: basic_auth, authorization (or the older bearer_token), and
 * tls_config.insecure_skip_verify; follow_redirects and enable_http2 are accepted
 * (cairn does not follow redirects and speaks HTTP/1.1 to receivers); proxies,
 * OAuth 2 and client certificates are refused. */
static int parse_http_config(struct cfg *c, const cfg_node *n, const char *path,
                             const char *base_dir, struct am_http *h)
{
    static const char *const keys[] = { "basic_auth", "authorization", "bearer_token",
                                        "bearer_token_file", "tls_config", "follow_redirects",
                                        "enable_http2", "proxy_url", "oauth2", NULL };
    cfg_node *v[9];
    char p[340];
    if (!n || cfg_is_null(n))
        return 0;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    char *auth = NULL;
    if (v[0]) {
        static const char *const bk[] = { "username", "password", "password_file", NULL };
        cfg_node *bv[3];
        P(p, "%s.basic_auth", path);
        char *user = NULL, *pass = NULL;
        if (cfg_map_fields(c, v[0], p, bk, bv) == 0) {
            char q[360];
            P(q, "%s.username", p);
            if (bv[0])
                bad |= cfg_get_string(c, bv[0], q, &user);
            P(q, "%s.password", p);
            bad |= get_secret_or_file(c, bv[1], bv[2], q, base_dir, &pass);
            struct buf raw = BUF_INIT;
            buf_printf(&raw, "%s:%s", user ? user : "", pass ? pass : "");
            static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            struct buf b = BUF_INIT;
            buf_puts(&b, "Basic ");
            const unsigned char *r = (const unsigned char *)(raw.data ? buf_head(&raw) : "");
            size_t rn = buf_used(&raw);
            for (size_t i = 0; i < rn; i += 3) {
                uint32_t x = (uint32_t)r[i] << 16 | (i + 1 < rn ? (uint32_t)r[i + 1] << 8 : 0) |
                             (i + 2 < rn ? r[i + 2] : 0);
                buf_putc(&b, tbl[x >> 18 & 63]);
                buf_putc(&b, tbl[x >> 12 & 63]);
                buf_putc(&b, i + 1 < rn ? tbl[x >> 6 & 63] : '=');
                buf_putc(&b, i + 2 < rn ? tbl[x & 63] : '=');
            }
            auth = buf_steal(&b);
            buf_free(&b);
            buf_free(&raw);
        } else {
            bad = -EINVAL;
        }
        free(user);
        free(pass);
    }
    if (v[1]) {
        static const char *const ak[] = { "type", "credentials", "credentials_file", NULL };
        cfg_node *av[3];
        P(p, "%s.authorization", path);
        if (auth)
            bad = cfg_error(c, v[1], p, "at most one of basic_auth, oauth2, bearer_token & "
                                        "bearer_token_file, authorization must be configured");
        else if (cfg_map_fields(c, v[1], p, ak, av) == 0) {
            char q[360], *type = NULL, *cred = NULL;
            P(q, "%s.type", p);
            if (av[0])
                bad |= cfg_get_string(c, av[0], q, &type);
            P(q, "%s.credentials", p);
            bad |= get_secret_or_file(c, av[1], av[2], q, base_dir, &cred);
            if (type && !strcasecmp(type, "basic"))
                bad = cfg_error(c, av[0], q, "authorization type cannot be set to \"basic\", use "
                                             "\"basic_auth\" instead");
            struct buf b = BUF_INIT;
            buf_printf(&b, "%s %s", type ? type : "Bearer", cred ? cred : "");
            auth = buf_steal(&b);
            buf_free(&b);
            free(type);
            free(cred);
        } else {
            bad = -EINVAL;
        }
    }
    if (v[2] || v[3]) {
        P(p, "%s.bearer_token", path);
        char *tok = NULL;
        if (auth)
            bad = cfg_error(c, v[2] ? v[2] : v[3], p, "at most one of basic_auth, oauth2, "
                                                      "bearer_token & bearer_token_file, "
                                                      "authorization must be configured");
        else if (get_secret_or_file(c, v[2], v[3], p, base_dir, &tok) == 0 && tok) {
            struct buf b = BUF_INIT;
            buf_printf(&b, "Bearer %s", tok);
            auth = buf_steal(&b);
            buf_free(&b);
        }
        free(tok);
    }
    if (v[4] && !cfg_is_null(v[4])) {
        static const char *const tk[] = { "insecure_skip_verify", "ca_file", "cert_file", "key_file",
                                          "server_name", "min_version", NULL };
        cfg_node *tv[6];
        P(p, "%s.tls_config", path);
        if (cfg_map_fields(c, v[4], p, tk, tv) == 0) {
            char q[360];
            P(q, "%s.insecure_skip_verify", p);
            if (tv[0])
                bad |= cfg_get_bool(c, tv[0], q, &h->insecure);
            for (int i = 1; i < 6; i++)
                if (tv[i])
                    bad = cfg_error(c, tv[i], p, "%s is not supported by cairn yet (the system's CAs "
                                                 "verify receivers, or insecure_skip_verify)", tk[i]);
        } else {
            bad = -EINVAL;
        }
    }
    for (int i = 5; i < 7; i++) {
        bool ignored;
        P(p, "%s.%s", path, keys[i]);
        if (v[i])
            bad |= cfg_get_bool(c, v[i], p, &ignored);
    }
    for (int i = 7; i < 9; i++)
        if (v[i] && !cfg_is_null(v[i])) {
            P(p, "%s.%s", path, keys[i]);
            bad = cfg_error(c, v[i], p, "%s is not supported by cairn yet", keys[i]);
        }
    free(h->authorization);
    h->authorization = auth;
    return bad;
}

static int copy_http(struct am_http *dst, const struct am_http *src)
{
    dst->insecure = src->insecure;
    dst->authorization = src->authorization ? strdup(src->authorization) : NULL;
    return src->authorization && !dst->authorization ? -ENOMEM : 0;
}

/* A URL field given as v, else the text deflt (reported at n). */
static int url_field(struct cfg *c, const cfg_node *n, const cfg_node *v, const char *path,
                     const char *deflt, struct stack_url *u)
{
    char *url = NULL;
    if (v) {
        if (cfg_get_string(c, v, path, &url))
            return -EINVAL;
    } else if (!(url = strdup(deflt))) {
        return -ENOMEM;
    }
    yaml_node_t fake = *(v ? v : n);
    fake.type = YAML_SCALAR_NODE;
    fake.data.scalar.value = (yaml_char_t *)url;
    fake.data.scalar.length = strlen(url);
    fake.data.scalar.style = YAML_PLAIN_SCALAR_STYLE;
    int r = stack_url(c, &fake, path, u);
    free(url);
    return r;
}

/* send_resolved and http_config (else the global one) of an HTTP integration */
static int send_and_http(struct cfg *c, const cfg_node *send, const cfg_node *http, const char *path,
                         const char *base_dir, const struct globals *g, struct am_integration *in)
{
    char p[300];
    int bad = 0;
    P(p, "%s.send_resolved", path);
    if (send)
        bad |= cfg_get_bool(c, send, p, &in->send_resolved);
    P(p, "%s.http_config", path);
    if (http)
        bad |= parse_http_config(c, http, p, base_dir, &in->http);
    else
        bad |= copy_http(&in->http, &g->http);
    return bad;
}

/* A key read as text: kept, or made a template when it holds one (at v, or n). */
static int key_field(struct cfg *c, struct am_conf *ac, const cfg_node *v, const cfg_node *n,
                     const char *path, char *key, char **out)
{
    if (!strstr(key, "{{")) {
        *out = key;
        return 0;
    }
    char err[400];
    int r = am__tmpl_field(ac, path, key, out, err, sizeof(err));
    free(key);
    return r ? cfg_error(c, v ? v : n, path, "%s", err) : 0;
}

static int parse_global(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                        struct globals *g)
{
    static const char *const keys[] = {
        "resolve_timeout", "smtp_from", "smtp_hello", "smtp_smarthost", "smtp_auth_username",
        "smtp_auth_password", "smtp_auth_password_file", "smtp_auth_identity", "smtp_auth_secret",
        "smtp_require_tls", "slack_api_url", "slack_api_url_file", "http_config",
        "pagerduty_url", "opsgenie_api_url", "opsgenie_api_key", "opsgenie_api_key_file",
        /* defaults for receivers cairn refuses; accepted so a real file loads */
        "wechat_api_url", "wechat_api_secret", "wechat_api_corp_id", "victorops_api_url",
        "victorops_api_key", "victorops_api_key_file", "telegram_api_url", "webex_api_url", NULL };
    cfg_node *v[26];
    char p[300];
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.resolve_timeout", path);
    if (v[0])
        bad |= cfg_get_duration(c, v[0], p, &g->resolve_timeout_ms);
    char **dst[] = { &g->smtp_from, &g->smtp_hello, &g->smtp_smarthost, &g->smtp_user };
    for (int i = 0; i < 4; i++) {
        P(p, "%s.%s", path, keys[1 + i]);
        if (v[1 + i])
            bad |= cfg_get_string(c, v[1 + i], p, dst[i]);
    }
    P(p, "%s.smtp_auth_password", path);
    bad |= get_secret_or_file(c, v[5], v[6], p, base_dir, &g->smtp_pass);
    P(p, "%s.smtp_auth_identity", path);
    if (v[7])
        bad |= cfg_get_string(c, v[7], p, &g->smtp_identity);
    P(p, "%s.smtp_auth_secret", path);
    if (v[8])
        bad |= cfg_get_string(c, v[8], p, &g->smtp_secret);
    P(p, "%s.smtp_require_tls", path);
    if (v[9])
        bad |= cfg_get_bool(c, v[9], p, &g->smtp_require_tls);
    P(p, "%s.slack_api_url", path);
    bad |= get_secret_or_file(c, v[10], v[11], p, base_dir, &g->slack_api_url);
    P(p, "%s.http_config", path);
    bad |= parse_http_config(c, v[12], p, base_dir, &g->http);
    P(p, "%s.pagerduty_url", path);
    if (v[13])
        bad |= cfg_get_string(c, v[13], p, &g->pagerduty_url);
    P(p, "%s.opsgenie_api_url", path);
    if (v[14])
        bad |= cfg_get_string(c, v[14], p, &g->opsgenie_api_url);
    P(p, "%s.opsgenie_api_key", path);
    bad |= get_secret_or_file(c, v[15], v[16], p, base_dir, &g->opsgenie_api_key);
    return bad ? -EINVAL : 0;
}

static const char *const unsupported_receivers[] = { "pushover_configs", "victorops_configs",
    "wechat_configs", "sns_configs", "telegram_configs", "webex_configs", "discord_configs", NULL };

static int parse_webhook(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                         const struct globals *g, struct am_integration *in)
{
    static const char *const keys[] = { "url", "url_file", "send_resolved", "max_alerts",
                                        "http_config", NULL };
    cfg_node *v[5];
    char p[300];
    in->kind = AM_WEBHOOK;
    in->send_resolved = true;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.url", path);
    if (v[0] && v[1])
        bad = cfg_error(c, n, path, "at most one of url & url_file must be configured");
    else if (v[0])
        bad |= stack_url(c, v[0], p, &in->url);
    else if (v[1]) {
        char *u = NULL;
        if (get_secret_or_file(c, NULL, v[1], p, base_dir, &u) == 0) {
            bad |= url_field(c, v[1], NULL, p, u, &in->url);
        } else {
            bad = -EINVAL;
        }
        free(u);
    } else
        bad = cfg_error(c, n, path, "one of url or url_file must be configured");
    P(p, "%s.max_alerts", path);
    long long x;
    if (v[3]) {
        if (cfg_get_int(c, v[3], p, 0, 1 << 30, &x) == 0)
            in->max_alerts = (int)x;
        else
            bad = -EINVAL;
    }
    bad |= send_and_http(c, v[2], v[4], path, base_dir, g, in);
    return bad;
}

static int split_to(struct am_integration *in)
{
    const char *s = in->to_text;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        while (l && isspace((unsigned char)*s))
            s++, l--;
        while (l && isspace((unsigned char)s[l - 1]))
            l--;
        if (l) {
            char **nt = realloc(in->to, (in->nto + 1) * sizeof(*nt));
            if (!nt)
                return -ENOMEM;
            in->to = nt;
            in->to[in->nto] = strndup(s, l);
            if (!in->to[in->nto])
                return -ENOMEM;
            in->nto++;
        }
        if (!e)
            break;
        s = e + 1;
    }
    return 0;
}

static int parse_email(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                       const struct globals *g, struct am_integration *in)
{
    static const char *const keys[] = { "to", "from", "smarthost", "hello", "auth_username",
                                        "auth_password", "auth_password_file", "auth_secret",
                                        "auth_identity", "headers", "html", "text", "require_tls",
                                        "tls_config", "send_resolved", NULL };
    cfg_node *v[15];
    char p[300];
    in->kind = AM_EMAIL;
    in->require_tls = g->smtp_require_tls;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.to", path);
    if (!v[0])
        bad = cfg_error(c, n, path, "missing to address in email config");
    else if (get_text(c, NULL, v[0], p, "{{ template \"email.to\" . }}", &in->to_text) == 0 && in->to_text)
        bad |= split_to(in);
    else
        bad = -EINVAL;
    char **dst[] = { &in->from, &in->smarthost, &in->hello, &in->auth_username };
    const char *gdef[] = { g->smtp_from, g->smtp_smarthost, g->smtp_hello, g->smtp_user };
    for (int i = 0; i < 4; i++) {
        P(p, "%s.%s", path, keys[1 + i]);
        if (v[1 + i])
            bad |= cfg_get_string(c, v[1 + i], p, dst[i]);
        else if (gdef[i])
            *dst[i] = strdup(gdef[i]);
    }
    if (!in->hello)
        in->hello = strdup("localhost");
    P(p, "%s.auth_password", path);
    bad |= get_secret_or_file(c, v[5], v[6], p, base_dir, &in->auth_password);
    if (!v[5] && !v[6] && g->smtp_pass)
        in->auth_password = strdup(g->smtp_pass);
    P(p, "%s.auth_secret", path);
    if (v[7])
        bad |= cfg_get_string(c, v[7], p, &in->auth_secret);
    else if (g->smtp_secret)
        in->auth_secret = strdup(g->smtp_secret);
    P(p, "%s.auth_identity", path);
    if (v[8])
        bad |= cfg_get_string(c, v[8], p, &in->auth_identity);
    else if (g->smtp_identity)
        in->auth_identity = strdup(g->smtp_identity);
    if (!in->from && !bad)
        bad = cfg_error(c, n, path, "no global SMTP from set");
    if (!in->smarthost && !bad)
        bad = cfg_error(c, n, path, "no global SMTP smarthost set");
    if (in->smarthost && !strrchr(in->smarthost, ':'))
        bad = cfg_error(c, v[2] ? v[2] : n, path, "address %s: missing port in address",
                        in->smarthost);
    P(p, "%s.headers", path);
    if (v[9]) {
        if (!cfg_is_map(v[9])) {
            bad = cfg_error(c, v[9], p, "expected a mapping of header names to values");
        } else {
            in->headers = calloc(cfg_len(v[9]) + 1, sizeof(*in->headers));
            for (size_t i = 0; in->headers && i < cfg_len(v[9]); i++) {
                const char *name = cfg_scalar(cfg_map_key(c, v[9], i));
                char hp[340];
                P(hp, "%s.%s", p, name ? name : "?");
                const char *deflt = NULL;
                if (name && !strcasecmp(name, "subject"))
                    deflt = "{{ template \"email.default.subject\" . }}";
                else if (name && !strcasecmp(name, "to"))
                    deflt = "{{ .To }}";
                else if (name && !strcasecmp(name, "from"))
                    deflt = "{{ .From }}";
                char *val = NULL;
                if (!name || get_text(c, g->ac, cfg_map_value(c, v[9], i), hp, deflt, &val)) {
                    bad = -EINVAL;
                    continue;
                }
                if (!val)
                    continue;
                if (!strcasecmp(name, "subject")) {
                    free(in->subject);
                    in->subject = val;
                    continue;
                }
                in->headers[in->nheaders].name = strdup(name);
                in->headers[in->nheaders++].value = val;
            }
        }
    }
    P(p, "%s.html", path);
    if (v[10])
        bad |= get_text(c, g->ac, v[10], p, "{{ template \"email.default.html\" . }}", &in->html);
    P(p, "%s.text", path);
    if (v[11])
        bad |= get_text(c, g->ac, v[11], p, NULL, &in->text);
    P(p, "%s.require_tls", path);
    if (v[12])
        bad |= cfg_get_bool(c, v[12], p, &in->require_tls);
    P(p, "%s.tls_config", path);
    if (v[13] && !cfg_is_null(v[13])) {
        static const char *const tk[] = { "insecure_skip_verify", "ca_file", "server_name", NULL };
        cfg_node *tv[3];
        if (cfg_map_fields(c, v[13], p, tk, tv) == 0) {
            char tp[340];
            P(tp, "%s.insecure_skip_verify", p);
            if (tv[0])
                bad |= cfg_get_bool(c, tv[0], tp, &in->insecure_skip_verify);
            P(tp, "%s.ca_file", p);
            if (tv[1])
                bad |= cfg_get_string(c, tv[1], tp, &in->ca_file);
            P(tp, "%s.server_name", p);
            if (tv[2])
                bad |= cfg_get_string(c, tv[2], tp, &in->server_name);
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.send_resolved", path);
    if (v[14])
        bad |= cfg_get_bool(c, v[14], p, &in->send_resolved);
    return bad;
}

static int parse_slack(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                       const struct globals *g, struct am_integration *in)
{
    static const char *const keys[] = {
        "api_url", "api_url_file", "send_resolved", "http_config", "channel", "username", "color",
        "title", "title_link", "pretext", "text", "footer", "fallback", "icon_emoji", "icon_url",
        "callback_id", "image_url", "thumb_url", "link_names", "short_fields", "mrkdwn_in",
        "fields", "actions", NULL };
    static const char *const defaults[] = {
        NULL, NULL, NULL, NULL, NULL,
        "{{ template \"slack.default.username\" . }}",
        "{{ if eq .Status \"firing\" }}danger{{ else }}good{{ end }}",
        "{{ template \"slack.default.title\" . }}",
        "{{ template \"slack.default.titlelink\" . }}",
        "{{ template \"slack.default.pretext\" . }}",
        "{{ template \"slack.default.text\" . }}",
        "{{ template \"slack.default.footer\" . }}",
        "{{ template \"slack.default.fallback\" . }}",
        "{{ template \"slack.default.iconemoji\" . }}",
        "{{ template \"slack.default.iconurl\" . }}",
        "{{ template \"slack.default.callbackid\" . }}" };
    cfg_node *v[23];
    char p[300];
    in->kind = AM_SLACK;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.api_url", path);
    char *api = NULL;
    if (v[0] || v[1])
        bad |= get_secret_or_file(c, v[0], v[1], p, base_dir, &api);
    else if (g->slack_api_url)
        api = strdup(g->slack_api_url);
    if (!api && !bad)
        bad = cfg_error(c, n, path, "no global Slack API URL set");
    if (api) {
        bad |= url_field(c, v[0] ? v[0] : v[1] ? v[1] : n, NULL, p, api, &in->url);
        free(api);
    }
    bad |= send_and_http(c, v[2], v[3], path, base_dir, g, in);
    char **dst[] = { NULL, NULL, NULL, NULL, &in->channel, &in->username, &in->color, &in->title,
                     &in->title_link, &in->pretext, &in->stext, &in->footer, &in->fallback,
                     &in->icon_emoji, &in->icon_url, &in->callback_id };
    for (int i = 4; i < 16; i++) {
        P(p, "%s.%s", path, keys[i]);
        if (v[i])
            bad |= get_text(c, g->ac, v[i], p, defaults[i], dst[i]);
    }
    for (int i = 16; i < 23; i++) {
        P(p, "%s.%s", path, keys[i]);
        if (v[i] && i != 18 && i != 19 && i != 20 && !cfg_is_null(v[i]))
            bad = cfg_error(c, v[i], p, "%s is not supported by cairn yet", keys[i]);
    }
    return bad;
}

/* A PagerDuty field: the text or template given, else deflt (a template or plain
 * text; NULL leaves the field out). */
static int pd_field(struct cfg *c, struct am_conf *ac, const cfg_node *n, const cfg_node *v,
                    const char *path, const char *deflt, char **out)
{
    if (v)
        return get_text(c, ac, v, path, NULL, out);
    if (!deflt)
        return 0;
    if (!strstr(deflt, "{{"))
        return (*out = strdup(deflt)) ? 0 : -ENOMEM;
    char err[400];
    int r = am__tmpl_field(ac, path, deflt, out, err, sizeof(err));
    return r ? cfg_error(c, n, path, "%s", err) : 0;
}

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const struct am_label *)a)->name, ((const struct am_label *)b)->name);
}

/* details: a map of names to texts or templates, sorted by name, with room for
 * extra more */
static int details_field(struct cfg *c, struct am_conf *ac, const cfg_node *n, const cfg_node *v,
                         const char *path, size_t extra, struct am_integration *in)
{
    int bad = 0;
    size_t nd = v && cfg_is_map(v) ? cfg_len(v) : 0;
    if (v && !cfg_is_null(v) && !cfg_is_map(v))
        bad = cfg_error(c, v, path, "expected a map");
    in->details = calloc(nd + extra + 1, sizeof(*in->details));
    if (!in->details)
        return -ENOMEM;
    for (size_t i = 0; i < nd; i++) {
        const cfg_node *k = cfg_map_key(c, v, i), *val = cfg_map_value(c, v, i);
        struct am_label *d = &in->details[in->ndetails];
        if (cfg_get_string(c, k, path, &d->name)) {
            bad = -EINVAL;
            continue;
        }
        in->ndetails++;
        char dp[400];
        P(dp, "%s.%s", path, d->name);
        bad |= pd_field(c, ac, n, val, dp, NULL, &d->value);
    }
    qsort(in->details, in->ndetails, sizeof(*in->details), cmp_label);
    return bad;
}

/* A list of maps with the given keys (up to four), each field a text or template
 * ("" when absent), into refs: PagerDuty images {src, alt, href} and links {href,
 * text}, OpsGenie responders {id, name, username, type}. */
static int ref_list(struct cfg *c, struct am_conf *ac, const cfg_node *v, const char *path,
                    const char *const *keys, struct am_pd_ref **out, size_t *count)
{
    if (!v || cfg_is_null(v))
        return 0;
    if (!cfg_is_seq(v))
        return cfg_error(c, v, path, "expected a list");
    *out = calloc(cfg_len(v) + 1, sizeof(**out));
    if (!*out)
        return -ENOMEM;
    int bad = 0;
    char p[400];
    for (size_t i = 0; i < cfg_len(v); i++) {
        const cfg_node *item = cfg_seq_item(c, v, i);
        cfg_node *f[4] = { NULL, NULL, NULL, NULL };
        P(p, "%s[%zu]", path, i);
        if (cfg_map_fields(c, item, p, keys, f)) {
            bad = -EINVAL;
            continue;
        }
        struct am_pd_ref *r = &(*out)[(*count)++];
        char **dst[4] = { &r->a, &r->b, &r->c, &r->d };
        for (int k = 0; k < 4 && keys[k]; k++) {
            char q[400];
            P(q, "%s.%s", p, keys[k]);
            bad |= pd_field(c, ac, item, f[k], q, "", dst[k]);
        }
    }
    return bad;
}

static int parse_pagerduty(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                           const struct globals *g, struct am_integration *in)
{
    static const char *const keys[] = {
        "routing_key", "routing_key_file", "service_key", "service_key_file", "url", "send_resolved",
        "http_config", "client", "client_url", "description", "details", "images", "links", "source",
        "severity", "class", "component", "group", NULL };
    cfg_node *v[18];
    char p[300];
    in->kind = AM_PAGERDUTY;
    in->send_resolved = true;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    if (v[2] || v[3]) {
        P(p, "%s.%s", path, v[2] ? "service_key" : "service_key_file");
        return cfg_error(c, v[2] ? v[2] : v[3], p,
                         "the Events API v1 (service_key) is not supported by cairn yet (routing_key is)");
    }
    P(p, "%s.routing_key", path);
    char *key = NULL;
    bad |= get_secret_or_file(c, v[0], v[1], p, base_dir, &key);
    if (!key && !bad)
        return cfg_error(c, n, path, "missing service or routing key in PagerDuty config");
    if (key)
        bad |= key_field(c, g->ac, v[0] ? v[0] : v[1], n, p, key, &in->routing_key);
    P(p, "%s.url", path);
    bad |= url_field(c, n, v[4], p, g->pagerduty_url ? g->pagerduty_url : "https://events.pagerduty.com/v2/enqueue",
                     &in->url);
    bad |= send_and_http(c, v[5], v[6], path, base_dir, g, in);
    /* the fields and their defaults (Alertmanager's DefaultPagerdutyConfig) */
    static const int idx[] = { 7, 8, 9, 14, 15, 16, 17 };
    static const char *const defaults[] = {
        "{{ template \"pagerduty.default.client\" . }}", "{{ template \"pagerduty.default.clientURL\" . }}",
        "{{ template \"pagerduty.default.description\" .}}", "error", NULL, NULL, NULL };
    char **dst[] = { &in->client, &in->client_url, &in->description, &in->severity, &in->pd_class,
                     &in->component, &in->group };
    for (size_t i = 0; i < ARRAY_SIZE(idx); i++) {
        P(p, "%s.%s", path, keys[idx[i]]);
        bad |= pd_field(c, g->ac, n, v[idx[i]], p, defaults[i], dst[i]);
    }
    /* as Alertmanager decides them from the configured text: an empty severity is
     * "error", an empty source the client's */
    if (in->severity && !*in->severity) {
        free(in->severity);
        if (!(in->severity = strdup("error")))
            bad = -ENOMEM;
    }
    P(p, "%s.source", path);
    if (v[13])
        bad |= pd_field(c, g->ac, n, v[13], p, NULL, &in->source);
    if ((!in->source || !*in->source) && in->client) {
        free(in->source);
        if (!(in->source = strdup(in->client)))
            bad = -ENOMEM;
    }
    /* details: the given ones, then the defaults for names not given */
    static const char *const dnames[] = { "firing", "resolved", "num_firing", "num_resolved" };
    static const char *const dvals[] = {
        "{{ template \"pagerduty.default.instances\" .Alerts.Firing }}",
        "{{ template \"pagerduty.default.instances\" .Alerts.Resolved }}",
        "{{ .Alerts.Firing | len }}", "{{ .Alerts.Resolved | len }}" };
    P(p, "%s.details", path);
    bad |= details_field(c, g->ac, n, v[10], p, 4, in);
    if (!in->details)
        return -ENOMEM;
    for (size_t i = 0; i < 4; i++) {
        bool given = false;
        for (size_t k = 0; k < in->ndetails; k++)
            given |= strcmp(in->details[k].name, dnames[i]) == 0;
        if (given)
            continue;
        struct am_label *d = &in->details[in->ndetails++];
        char dp[400];
        P(dp, "%s.%s", p, dnames[i]);
        if (!(d->name = strdup(dnames[i])))
            return -ENOMEM;
        bad |= pd_field(c, g->ac, n, NULL, dp, dvals[i], &d->value);
    }
    qsort(in->details, in->ndetails, sizeof(*in->details), cmp_label);
    static const char *const ikeys[] = { "src", "alt", "href", NULL };
    static const char *const lkeys[] = { "href", "text", NULL };
    P(p, "%s.images", path);
    bad |= ref_list(c, g->ac, v[11], p, ikeys, &in->images, &in->nimages);
    P(p, "%s.links", path);
    bad |= ref_list(c, g->ac, v[12], p, lkeys, &in->links, &in->nlinks);
    return bad;
}

/* OpsGenie responders: one of id, name, username given, type one of team, teams,
 * user, escalation, schedule (or a template) */
static int og_responders(struct cfg *c, struct am_conf *ac, const cfg_node *v, const char *path,
                         struct am_pd_ref **out, size_t *count)
{
    static const char *const keys[] = { "id", "name", "username", "type", NULL };
    static const char *const types[] = { "team", "teams", "user", "escalation", "schedule", NULL };
    int bad = ref_list(c, ac, v, path, keys, out, count);
    for (size_t i = 0; i < *count; i++) {
        struct am_pd_ref *r = &(*out)[i];
        const cfg_node *item = cfg_seq_item(c, v, i);
        char p[400];
        P(p, "%s[%zu]", path, i);
        if (!*r->a && !*r->b && !*r->c)
            bad = cfg_error(c, item, p, "opsGenieConfig responder has to have at least one of id, "
                                        "username or name specified");
        if (r->d[0] != '\x01') {
            for (char *t = r->d; *t; t++)
                *t = (char)tolower((unsigned char)*t);
            bool ok = false;
            for (int k = 0; types[k]; k++)
                ok |= strcmp(r->d, types[k]) == 0;
            if (!ok)
                bad = cfg_error(c, item, p, "opsGenieConfig responder type \"%s\" does not match valid "
                                            "options ^(team|teams|user|escalation|schedule)$", r->d);
        }
    }
    return bad;
}

static int parse_opsgenie(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                          const struct globals *g, struct am_integration *in)
{
    static const char *const keys[] = {
        "api_key", "api_key_file", "api_url", "send_resolved", "http_config", "message", "description",
        "source", "details", "responders", "tags", "note", "priority", "entity", "actions",
        "update_alerts", NULL };
    cfg_node *v[16];
    char p[300];
    in->kind = AM_OPSGENIE;
    in->send_resolved = true;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.api_key", path);
    char *key = NULL;
    bad |= get_secret_or_file(c, v[0], v[1], p, base_dir, &key);
    if (!key && !bad && g->opsgenie_api_key && !(key = strdup(g->opsgenie_api_key)))
        return -ENOMEM;
    if (!key && !bad)
        return cfg_error(c, n, path, "no global OpsGenie API Key set either inline or in a file");
    if (key) {
        /* a key read from a file loses its surrounding white space */
        char *e = key + strlen(key);
        while (e > key && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = 0;
    }
    if (key)
        bad |= key_field(c, g->ac, v[0] ? v[0] : v[1], n, p, key, &in->api_key);
    P(p, "%s.api_url", path);
    bad |= url_field(c, n, v[2], p, g->opsgenie_api_url ? g->opsgenie_api_url : "https://api.opsgenie.com/",
                     &in->url);
    bad |= send_and_http(c, v[3], v[4], path, base_dir, g, in);
    static const int idx[] = { 5, 6, 7, 10, 11, 12, 13, 14 };
    static const char *const defaults[] = {
        "{{ template \"opsgenie.default.message\" . }}", "{{ template \"opsgenie.default.description\" . }}",
        "{{ template \"opsgenie.default.source\" . }}", NULL, NULL, NULL, NULL, NULL };
    char **dst[] = { &in->message, &in->og_description, &in->og_source, &in->tags, &in->note,
                     &in->priority, &in->entity, &in->actions };
    for (size_t i = 0; i < ARRAY_SIZE(idx); i++) {
        P(p, "%s.%s", path, keys[idx[i]]);
        bad |= pd_field(c, g->ac, n, v[idx[i]], p, defaults[i], dst[i]);
    }
    P(p, "%s.details", path);
    bad |= details_field(c, g->ac, n, v[8], p, 0, in);
    P(p, "%s.responders", path);
    bad |= og_responders(c, g->ac, v[9], p, &in->images, &in->nimages);
    P(p, "%s.update_alerts", path);
    bool update = false;
    if (v[15])
        bad |= cfg_get_bool(c, v[15], p, &update);
    if (update)
        bad = cfg_error(c, v[15], p, "update_alerts is not supported by cairn yet");
    return bad;
}

static void integration_free(struct am_integration *in)
{
    free(in->http.authorization);
    stack_url_free(&in->url);
    cfg_free_string_list(in->to, in->nto);
    free(in->to_text);
    char *fields[] = { in->from, in->hello, in->smarthost, in->auth_username, in->auth_password,
                       in->auth_identity, in->auth_secret, in->ca_file, in->server_name, in->subject, in->html,
                       in->text, in->channel, in->username, in->color, in->title, in->title_link,
                       in->pretext, in->stext, in->footer, in->fallback, in->icon_emoji,
                       in->icon_url, in->callback_id, in->routing_key, in->client, in->client_url,
                       in->description, in->severity, in->source, in->pd_class, in->component,
                       in->group, in->api_key, in->message, in->og_description, in->og_source,
                       in->tags, in->note, in->priority, in->entity, in->actions };
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
        free(fields[i]);
    for (size_t i = 0; i < in->ndetails; i++) {
        free(in->details[i].name);
        free(in->details[i].value);
    }
    free(in->details);
    struct am_pd_ref *refs[2] = { in->images, in->links };
    size_t nrefs[2] = { in->nimages, in->nlinks };
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < nrefs[k]; i++) {
            free(refs[k][i].a);
            free(refs[k][i].b);
            free(refs[k][i].c);
            free(refs[k][i].d);
        }
        free(refs[k]);
    }
    for (size_t i = 0; i < in->nheaders; i++) {
        free(in->headers[i].name);
        free(in->headers[i].value);
    }
    free(in->headers);
}

static int parse_receiver(struct cfg *c, const cfg_node *n, const char *path, const char *base_dir,
                          const struct globals *g, struct am_receiver *rc)
{
    static const char *const keys[] = { "name", "webhook_configs", "email_configs", "slack_configs",
                                        "pagerduty_configs", "opsgenie_configs", "pushover_configs",
                                        "victorops_configs", "wechat_configs", "sns_configs",
                                        "telegram_configs", "webex_configs", "discord_configs", NULL };
    cfg_node *v[13];
    char p[300];
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.name", path);
    if (!v[0])
        bad = cfg_error(c, n, path, "missing name in receiver");
    else
        bad |= cfg_get_string(c, v[0], p, &rc->name);
    size_t total = 0;
    for (int k = 1; k <= 5; k++)
        if (v[k] && !cfg_is_null(v[k])) {
            if (!cfg_is_seq(v[k])) {
                P(p, "%s.%s", path, keys[k]);
                bad = cfg_error(c, v[k], p, "expected a list");
                v[k] = NULL;
            } else {
                total += cfg_len(v[k]);
            }
        }
    for (int k = 6; k < 13; k++)
        if (v[k] && !cfg_is_null(v[k])) {
            P(p, "%s.%s", path, keys[k]);
            bad = cfg_error(c, v[k], p, "%s receivers are not supported by cairn yet (webhook, "
                                        "email, slack, pagerduty and opsgenie are)", unsupported_receivers[k - 6]);
        }
    rc->ints = calloc(total ? total : 1, sizeof(*rc->ints));
    if (!rc->ints)
        return -ENOMEM;
    for (int k = 1; k <= 5; k++) {
        if (!v[k] || cfg_is_null(v[k]))
            continue;
        for (size_t i = 0; i < cfg_len(v[k]); i++) {
            struct am_integration *in = &rc->ints[rc->nints++];
            in->idx = (int)i;
            P(p, "%s.%s[%zu]", path, keys[k], i);
            const cfg_node *item = cfg_seq_item(c, v[k], i);
            if (k == 1)
                bad |= parse_webhook(c, item, p, base_dir, g, in);
            else if (k == 2)
                bad |= parse_email(c, item, p, base_dir, g, in);
            else if (k == 3)
                bad |= parse_slack(c, item, p, base_dir, g, in);
            else if (k == 4)
                bad |= parse_pagerduty(c, item, p, base_dir, g, in);
            else
                bad |= parse_opsgenie(c, item, p, base_dir, g, in);
        }
    }
    return bad;
}

/* ---- time intervals ---- */

static int parse_ranges(struct cfg *c, const cfg_node *n, const char *path, int kind,
                        struct am_time_range **out, size_t *count)
{
    static const char *const wd[] = { "sunday", "monday", "tuesday", "wednesday", "thursday",
                                      "friday", "saturday" };
    static const char *const mo[] = { "january", "february", "march", "april", "may", "june",
                                      "july", "august", "september", "october", "november",
                                      "december" };
    char **list;
    size_t k;
    if (cfg_get_string_list(c, n, path, &list, &k))
        return -EINVAL;
    *out = calloc(k ? k : 1, sizeof(**out));
    int bad = 0;
    for (size_t i = 0; *out && i < k; i++) {
        char a[64], b[64];
        const char *colon = strchr(list[i], ':');
        snprintf(a, sizeof(a), "%.*s", colon ? (int)(colon - list[i]) : 63, list[i]);
        snprintf(b, sizeof(b), "%s", colon ? colon + 1 : list[i]);
        int v[2];
        char *s[2] = { a, b };
        for (int j = 0; j < 2; j++) {
            char *e;
            for (char *q = s[j]; *q; q++)
                *q = (char)tolower((unsigned char)*q);
            v[j] = INT32_MIN;
            if (kind == 0) {
                for (int d = 0; d < 7; d++)
                    if (!strcmp(s[j], wd[d]))
                        v[j] = d;
            } else if (kind == 2) {
                for (int d = 0; d < 12; d++)
                    if (!strcmp(s[j], mo[d]))
                        v[j] = d + 1;
            }
            if (v[j] == INT32_MIN && kind != 0) {
                long x = strtol(s[j], &e, 10);
                if (*s[j] && !*e)
                    v[j] = (int)x;
            }
        }
        const char *what = kind == 0 ? "weekday" : kind == 1 ? "day of month" : kind == 2 ? "month" : "year";
        bool ok = v[0] != INT32_MIN && v[1] != INT32_MIN;
        if (ok && kind == 1)
            ok = v[0] && v[1] && v[0] >= -31 && v[0] <= 31 && v[1] >= -31 && v[1] <= 31 &&
                 !(v[0] > 0 && v[1] > 0 && v[0] > v[1]) && !(v[0] < 0 && v[1] < 0 && v[0] > v[1]);
        else if (ok && kind == 2)
            ok = v[0] >= 1 && v[0] <= 12 && v[1] >= 1 && v[1] <= 12 && v[0] <= v[1];
        else if (ok)
            ok = v[0] <= v[1] && v[0] >= 0;
        if (!ok) {
            bad = cfg_error(c, n, path, "invalid %s range \"%s\"", what, list[i]);
            continue;
        }
        (*out)[(*count)++] = (struct am_time_range){ v[0], v[1] };
    }
    cfg_free_string_list(list, k);
    return *out ? bad : -ENOMEM;
}

static int parse_hhmm(const char *s, int *min)
{
    int h, m;
    char extra;
    if (sscanf(s, "%d:%d%c", &h, &m, &extra) != 2 || h < 0 || h > 24 || m < 0 || m > 59 ||
        (h == 24 && m) || strlen(s) != 5)
        return -EINVAL;
    *min = h * 60 + m;
    return 0;
}

static int parse_interval(struct cfg *c, const cfg_node *n, const char *path,
                          struct am_time_interval *ti)
{
    static const char *const keys[] = { "times", "weekdays", "days_of_month", "months", "years",
                                        "location", NULL };
    cfg_node *v[6];
    char p[300];
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    if (v[0]) {
        P(p, "%s.times", path);
        if (!cfg_is_seq(v[0]))
            return cfg_error(c, v[0], p, "expected a list of {start_time, end_time}");
        ti->times = calloc(cfg_len(v[0]) + 1, sizeof(*ti->times));
        for (size_t i = 0; ti->times && i < cfg_len(v[0]); i++) {
            static const char *const tk[] = { "start_time", "end_time", NULL };
            cfg_node *tv[2];
            char tp[340];
            P(tp, "%s[%zu]", p, i);
            const cfg_node *it = cfg_seq_item(c, v[0], i);
            if (cfg_map_fields(c, it, tp, tk, tv)) {
                bad = -EINVAL;
                continue;
            }
            if (!tv[0] || !tv[1]) {
                bad = cfg_error(c, it, tp, "both start and end times must be provided");
                continue;
            }
            int s0, s1;
            if (parse_hhmm(cfg_scalar(tv[0]) ? cfg_scalar(tv[0]) : "", &s0) ||
                parse_hhmm(cfg_scalar(tv[1]) ? cfg_scalar(tv[1]) : "", &s1) || s0 >= s1) {
                bad = cfg_error(c, it, tp, "invalid time range: start_time must be before "
                                           "end_time, both as HH:MM from 00:00 to 24:00");
                continue;
            }
            ti->times[ti->ntimes++] = (struct am_time_range){ s0, s1 };
        }
    }
    struct am_time_range **outs[] = { &ti->weekdays, &ti->mdays, &ti->months, &ti->years };
    size_t *counts[] = { &ti->nweekdays, &ti->nmdays, &ti->nmonths, &ti->nyears };
    for (int k = 0; k < 4; k++) {
        P(p, "%s.%s", path, keys[1 + k]);
        if (v[1 + k])
            bad |= parse_ranges(c, v[1 + k], p, k, outs[k], counts[k]);
    }
    if (v[5]) {
        P(p, "%s.location", path);
        if (cfg_get_string(c, v[5], p, &ti->location) == 0) {
            char zf[512];
            snprintf(zf, sizeof(zf), "/usr/share/zoneinfo/%s", ti->location);
            if (strcmp(ti->location, "UTC") && strcmp(ti->location, "Local") &&
                (strstr(ti->location, "..") || access(zf, R_OK) != 0))
                bad = cfg_error(c, v[5], p, "unknown time zone %s", ti->location);
        } else {
            bad = -EINVAL;
        }
    }
    return bad;
}

static int parse_intervals(struct cfg *c, const cfg_node *n, const char *path, struct am_conf *ac)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of {name, time_intervals}");
    struct am_time_intervals *nv = realloc(ac->intervals,
                                           (ac->nintervals + cfg_len(n)) * sizeof(*nv) + 1);
    if (!nv)
        return -ENOMEM;
    ac->intervals = nv;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "name", "time_intervals", NULL };
        cfg_node *v[2];
        char p[300];
        P(p, "%s[%zu]", path, i);
        const cfg_node *it = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, it, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct am_time_intervals *t = &ac->intervals[ac->nintervals++];
        memset(t, 0, sizeof(*t));
        char np[340];
        P(np, "%s.name", p);
        if (!v[0] || cfg_get_string(c, v[0], np, &t->name)) {
            bad = v[0] ? -EINVAL : cfg_error(c, it, p, "missing name in time interval");
            continue;
        }
        for (size_t k = 0; k + 1 < ac->nintervals; k++)
            if (!strcmp(ac->intervals[k].name, t->name))
                bad = cfg_error(c, v[0], np, "time interval \"%s\" is not unique", t->name);
        if (!v[1] || cfg_is_null(v[1]))
            continue;
        P(np, "%s.time_intervals", p);
        if (!cfg_is_seq(v[1])) {
            bad = cfg_error(c, v[1], np, "expected a list");
            continue;
        }
        t->v = calloc(cfg_len(v[1]) + 1, sizeof(*t->v));
        if (!t->v)
            return -ENOMEM;
        for (size_t k = 0; k < cfg_len(v[1]); k++) {
            char ip[360];
            P(ip, "%s[%zu]", np, k);
            bad |= parse_interval(c, cfg_seq_item(c, v[1], k), ip, &t->v[t->n++]);
        }
    }
    return bad;
}

const struct am_time_intervals *am__interval_find(const struct am_conf *ac, const char *name)
{
    for (size_t i = 0; i < ac->nintervals; i++)
        if (!strcmp(ac->intervals[i].name, name))
            return &ac->intervals[i];
    return NULL;
}

static bool in_ranges(const struct am_time_range *r, size_t n, int v)
{
    if (!n)
        return true;
    for (size_t i = 0; i < n; i++)
        if (v >= r[i].start && v <= r[i].end)
            return true;
    return false;
}

static bool interval_contains(const struct am_time_interval *ti, int64_t now_ns)
{
    time_t t = (time_t)(now_ns / 1000000000);
    struct tm tm;
    if (ti->location && strcmp(ti->location, "UTC")) {
        /* the role runs on one thread: switching TZ around localtime_r is safe */
        const char *old = getenv("TZ");
        char *saved = old ? strdup(old) : NULL;
        if (strcmp(ti->location, "Local"))
            setenv("TZ", ti->location, 1);
        tzset();
        localtime_r(&t, &tm);
        if (saved) {
            setenv("TZ", saved, 1);
            free(saved);
        } else {
            unsetenv("TZ");
        }
        tzset();
    } else {
        gmtime_r(&t, &tm);
    }
    if (ti->ntimes) {
        int m = tm.tm_hour * 60 + tm.tm_min;
        bool ok = false;
        for (size_t i = 0; i < ti->ntimes; i++)
            ok |= m >= ti->times[i].start && m < ti->times[i].end;
        if (!ok)
            return false;
    }
    if (!in_ranges(ti->weekdays, ti->nweekdays, tm.tm_wday))
        return false;
    if (ti->nmdays) {
        static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        int y = tm.tm_year + 1900;
        int len = mdays[tm.tm_mon] + (tm.tm_mon == 1 && y % 4 == 0 && (y % 100 || y % 400 == 0));
        bool ok = false;
        for (size_t i = 0; i < ti->nmdays; i++) {
            int s = ti->mdays[i].start, e = ti->mdays[i].end;
            if (s < 0)
                s = len + s + 1;
            if (e < 0)
                e = len + e + 1;
            ok |= tm.tm_mday >= s && tm.tm_mday <= e;
        }
        if (!ok)
            return false;
    }
    if (!in_ranges(ti->months, ti->nmonths, tm.tm_mon + 1))
        return false;
    return in_ranges(ti->years, ti->nyears, tm.tm_year + 1900);
}

bool am__interval_contains(const struct am_time_intervals *ti, int64_t now_ns)
{
    for (size_t i = 0; i < ti->n; i++)
        if (interval_contains(&ti->v[i], now_ns))
            return true;
    return false;
}

/* ---- routes ---- */

static int parse_matcher_list(struct cfg *c, const cfg_node *n, const char *path,
                              struct am_matchers *ms)
{
    char **list;
    size_t k;
    if (cfg_get_string_list(c, n, path, &list, &k))
        return -EINVAL;
    int bad = 0;
    for (size_t i = 0; i < k; i++) {
        struct am_matchers one;
        char err[300];
        if (am__matchers_parse(list[i], &one, err, sizeof(err))) {
            bad = cfg_error(c, n, path, "%s", err);
            continue;
        }
        struct am_matcher *nm = realloc(ms->m, (ms->n + one.n + 1) * sizeof(*nm));
        if (!nm) {
            am__matchers_free(&one);
            bad = -ENOMEM;
            break;
        }
        ms->m = nm;
        memcpy(ms->m + ms->n, one.m, one.n * sizeof(*one.m));
        ms->n += one.n;
        free(one.m);
    }
    cfg_free_string_list(list, k);
    return bad;
}

/* match: {name: value} and match_re: {name: regex}, the legacy forms */
static int parse_match_map(struct cfg *c, const cfg_node *n, const char *path, bool re,
                           struct am_matchers *ms)
{
    if (!cfg_is_map(n))
        return cfg_error(c, n, path, "expected a mapping of label names to %s",
                         re ? "regular expressions" : "values");
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        const char *name = cfg_scalar(cfg_map_key(c, n, i));
        const char *val = cfg_scalar(cfg_map_value(c, n, i));
        if (!name || !am__label_name_ok(name)) {
            bad = cfg_error(c, cfg_map_key(c, n, i), path, "\"%s\" is not a valid label name",
                            name ? name : "");
            continue;
        }
        struct am_matcher *nm = realloc(ms->m, (ms->n + 1) * sizeof(*nm));
        if (!nm)
            return -ENOMEM;
        ms->m = nm;
        char err[300];
        /* Alertmanager keeps a match_re value as its anchored form ^(?:re)$, which is
         * what shows in route keys (group keys) */
        struct buf anchored = BUF_INIT;
        if (re)
            buf_printf(&anchored, "^(?:%s)$", val ? val : "");
        int rc = am__matcher_init(&ms->m[ms->n], re ? AM_RE : AM_EQ, name,
                                  re ? buf_head(&anchored) : val ? val : "", err, sizeof(err));
        buf_free(&anchored);
        if (rc)
            bad = cfg_error(c, cfg_map_value(c, n, i), path, "%s", err);
        else
            ms->n++;
    }
    return bad;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int parse_route(struct cfg *c, const cfg_node *n, const char *path, struct am_conf *ac,
                       struct am_route *parent, struct am_route *r, int depth)
{
    static const char *const keys[] = { "receiver", "group_by", "continue", "matchers", "match",
                                        "match_re", "group_wait", "group_interval",
                                        "repeat_interval", "mute_time_intervals",
                                        "active_time_intervals", "routes", NULL };
    cfg_node *v[12];
    char p[300];
    r->parent = parent;
    r->id = ac->nroutes++;
    if (depth > AM_ROUTE_DEPTH)
        return cfg_error(c, n, path, "routes nested deeper than %d", AM_ROUTE_DEPTH);
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.receiver", path);
    if (v[0])
        bad |= cfg_get_string(c, v[0], p, &r->receiver);
    else if (parent && parent->receiver)
        r->receiver = strdup(parent->receiver);
    if (!parent && !v[0])
        bad = cfg_error(c, n, path, "root route must specify a default receiver");
    P(p, "%s.group_by", path);
    if (v[1]) {
        if (cfg_get_string_list(c, v[1], p, &r->group_by, &r->ngroup_by) == 0) {
            for (size_t i = 0; i < r->ngroup_by; i++) {
                if (!strcmp(r->group_by[i], "...")) {
                    r->group_by_all = true;
                    if (r->ngroup_by > 1)
                        bad = cfg_error(c, v[1], p, "cannot have wildcard group_by (`...`) and "
                                                    "other other labels at the same time");
                } else if (!am__label_name_ok(r->group_by[i])) {
                    bad = cfg_error(c, v[1], p, "invalid label name \"%s\" in group_by list",
                                    r->group_by[i]);
                }
                for (size_t k = 0; k < i; k++)
                    if (!strcmp(r->group_by[k], r->group_by[i]))
                        bad = cfg_error(c, v[1], p, "duplicated label %s in group_by",
                                        r->group_by[i]);
            }
            qsort(r->group_by, r->ngroup_by, sizeof(char *), cmp_str);
        } else {
            bad = -EINVAL;
        }
    } else if (parent) {
        r->group_by_all = parent->group_by_all;
        r->group_by = calloc(parent->ngroup_by + 1, sizeof(char *));
        for (size_t i = 0; r->group_by && i < parent->ngroup_by; i++)
            r->group_by[r->ngroup_by++] = strdup(parent->group_by[i]);
    }
    P(p, "%s.continue", path);
    if (v[2]) {
        bad |= cfg_get_bool(c, v[2], p, &r->cont);
        if (!parent && r->cont)
            bad = cfg_error(c, v[2], p, "cannot have continue in root route");
    }
    P(p, "%s.matchers", path);
    if (v[3])
        bad |= parse_matcher_list(c, v[3], p, &r->matchers);
    P(p, "%s.match", path);
    if (v[4])
        bad |= parse_match_map(c, v[4], p, false, &r->matchers);
    P(p, "%s.match_re", path);
    if (v[5])
        bad |= parse_match_map(c, v[5], p, true, &r->matchers);
    if (!parent && r->matchers.n)
        bad = cfg_error(c, v[3] ? v[3] : v[4] ? v[4] : v[5], path,
                        "root route must not have any matchers");
    am__matchers_sort(&r->matchers);
    uint64_t *tm[] = { &r->group_wait_ms, &r->group_interval_ms, &r->repeat_interval_ms };
    uint64_t defaults[] = { 30000, 300000, 14400000 };
    for (int i = 0; i < 3; i++) {
        P(p, "%s.%s", path, keys[6 + i]);
        if (v[6 + i])
            bad |= cfg_get_duration(c, v[6 + i], p, tm[i]);
        else
            *tm[i] = parent ? (i == 0 ? parent->group_wait_ms : i == 1 ? parent->group_interval_ms
                                                                       : parent->repeat_interval_ms)
                            : defaults[i];
        if (i && v[6 + i] && *tm[i] == 0)
            bad = cfg_error(c, v[6 + i], p, "%s cannot be zero", keys[6 + i]);
    }
    for (int k = 0; k < 2; k++) {
        P(p, "%s.%s", path, keys[9 + k]);
        if (!v[9 + k])
            continue;
        if (!parent)
            bad = cfg_error(c, v[9 + k], p, "root route must not have any %s", keys[9 + k]);
        char ***dst = k ? &r->active : &r->mute;
        size_t *cnt = k ? &r->nactive : &r->nmute;
        bad |= cfg_get_string_list(c, v[9 + k], p, dst, cnt);
    }
    struct buf key = BUF_INIT;
    if (parent)
        buf_printf(&key, "%s/", parent->key);
    am__matchers_format(&key, &r->matchers);
    r->key = buf_steal(&key);
    buf_free(&key);
    P(p, "%s.routes", path);
    if (v[11] && !cfg_is_null(v[11])) {
        if (!cfg_is_seq(v[11]))
            return cfg_error(c, v[11], p, "expected a list of routes");
        r->routes = calloc(cfg_len(v[11]) + 1, sizeof(*r->routes));
        if (!r->routes)
            return -ENOMEM;
        for (size_t i = 0; i < cfg_len(v[11]); i++) {
            char cp[340];
            P(cp, "%s[%zu]", p, i);
            bad |= parse_route(c, cfg_seq_item(c, v[11], i), cp, ac, r, &r->routes[r->nroutes++],
                               depth + 1);
        }
    }
    return bad;
}

static int link_routes(struct cfg *c, const cfg_node *n, struct am_conf *ac, struct am_route *r)
{
    int bad = 0;
    for (size_t i = 0; i < ac->nreceivers; i++)
        if (r->receiver && ac->receivers[i].name && !strcmp(r->receiver, ac->receivers[i].name))
            r->recv = &ac->receivers[i];
    if (!r->recv && r->receiver)
        bad = cfg_error(c, n, "route", "undefined receiver \"%s\" used in route", r->receiver);
    for (int k = 0; k < 2; k++) {
        char **names = k ? r->active : r->mute;
        size_t cnt = k ? r->nactive : r->nmute;
        for (size_t i = 0; i < cnt; i++)
            if (!am__interval_find(ac, names[i]))
                bad = cfg_error(c, n, "route", "undefined time interval \"%s\" used in route",
                                names[i]);
    }
    for (size_t i = 0; i < r->nroutes; i++)
        bad |= link_routes(c, n, ac, &r->routes[i]);
    return bad;
}

size_t am__route_match(struct am_route *r, const struct am_lset *ls, struct am_route **out,
                       size_t max)
{
    if (!am__matchers_match(&r->matchers, ls))
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < r->nroutes; i++) {
        size_t k = am__route_match(&r->routes[i], ls, out + n, max - n);
        n += k;
        if (k && !r->routes[i].cont)
            break;
        if (n >= max)
            break;
    }
    if (n == 0 && max)
        out[n++] = r;
    return n;
}

static int parse_inhibit(struct cfg *c, const cfg_node *n, const char *path, struct am_inhibit *ir)
{
    static const char *const keys[] = { "source_matchers", "target_matchers", "source_match",
                                        "source_match_re", "target_match", "target_match_re",
                                        "equal", NULL };
    cfg_node *v[7];
    char p[300];
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    for (int i = 0; i < 6; i++) {
        if (!v[i])
            continue;
        P(p, "%s.%s", path, keys[i]);
        struct am_matchers *ms = (i == 0 || i == 2 || i == 3) ? &ir->source : &ir->target;
        if (i < 2)
            bad |= parse_matcher_list(c, v[i], p, ms);
        else
            bad |= parse_match_map(c, v[i], p, i == 3 || i == 5, ms);
    }
    P(p, "%s.equal", path);
    if (v[6])
        bad |= cfg_get_string_list(c, v[6], p, &ir->equal, &ir->nequal);
    for (size_t i = 0; i < ir->nequal; i++)
        if (!am__label_name_ok(ir->equal[i]))
            bad = cfg_error(c, v[6], p, "invalid label name \"%s\"", ir->equal[i]);
    return bad;
}

int am__parse_alertmanager(struct cfg *c, const cfg_node *root, const char *path,
                           const char *base_dir, struct am_conf *ac)
{
    static const char *const keys[] = { "global", "route", "inhibit_rules", "receivers",
                                        "templates", "mute_time_intervals", "time_intervals", NULL };
    cfg_node *v[7];
    char p[300];
    struct globals g = { .ac = ac, .resolve_timeout_ms = 300000, .smtp_require_tls = true };
    if (!root || cfg_is_null(root))
        return cfg_error(c, root, path, "the Alertmanager configuration is empty");
    if (cfg_map_fields(c, root, path, keys, v))
        return -EINVAL;
    int bad = 0;
    char terr[400];
    if (am__tmpl_setup(ac, terr, sizeof(terr)))
        return cfg_error(c, root, path, "templates: %s", terr);
    P(p, "%s.global", path);
    if (v[0] && !cfg_is_null(v[0]))
        bad |= parse_global(c, v[0], p, base_dir, &g);
    ac->resolve_timeout_ms = g.resolve_timeout_ms;
    P(p, "%s.templates", path);
    if (v[4] && !cfg_is_null(v[4])) {
        char **pats = NULL;
        size_t np = 0;
        if (cfg_get_string_list(c, v[4], p, &pats, &np) == 0) {
            for (size_t i = 0; i < np; i++) {
                char full[4096];
                snprintf(full, sizeof(full), "%s%s%s", pats[i][0] == '/' ? "" : base_dir,
                         pats[i][0] == '/' ? "" : "/", pats[i]);
                glob_t gl;
                int gr = glob(full, 0, NULL, &gl);
                for (size_t k = 0; gr == 0 && k < gl.gl_pathc; k++)
                    if (am__tmpl_file(ac, gl.gl_pathv[k], terr, sizeof(terr)))
                        bad = cfg_error(c, v[4], p, "%s", terr);
                if (gr == 0)
                    globfree(&gl);
            }
            cfg_free_string_list(pats, np);
        } else {
            bad = -EINVAL;
        }
    }
    for (int k = 5; k <= 6; k++) {
        P(p, "%s.%s", path, keys[k]);
        if (v[k] && !cfg_is_null(v[k]))
            bad |= parse_intervals(c, v[k], p, ac);
    }
    P(p, "%s.receivers", path);
    if (v[3] && !cfg_is_null(v[3])) {
        if (!cfg_is_seq(v[3])) {
            bad = cfg_error(c, v[3], p, "expected a list of receivers");
        } else {
            ac->receivers = calloc(cfg_len(v[3]) + 1, sizeof(*ac->receivers));
            if (!ac->receivers) {
                globals_free(&g);
                return -ENOMEM;
            }
            for (size_t i = 0; i < cfg_len(v[3]); i++) {
                char rp[340];
                P(rp, "%s[%zu]", p, i);
                const cfg_node *it = cfg_seq_item(c, v[3], i);
                struct am_receiver *rc = &ac->receivers[ac->nreceivers++];
                bad |= parse_receiver(c, it, rp, base_dir, &g, rc);
                for (size_t k = 0; rc->name && k + 1 < ac->nreceivers; k++)
                    if (ac->receivers[k].name && !strcmp(ac->receivers[k].name, rc->name))
                        bad = cfg_error(c, it, rp, "notification config name \"%s\" is not unique",
                                        rc->name);
            }
        }
    }
    P(p, "%s.route", path);
    if (!v[1] || cfg_is_null(v[1])) {
        bad = cfg_error(c, root, path, "no routes provided");
    } else {
        ac->route = calloc(1, sizeof(*ac->route));
        if (!ac->route) {
            globals_free(&g);
            return -ENOMEM;
        }
        int rb = parse_route(c, v[1], p, ac, NULL, ac->route, 0);
        bad |= rb;
        if (!rb)
            bad |= link_routes(c, v[1], ac, ac->route);
    }
    P(p, "%s.inhibit_rules", path);
    if (v[2] && !cfg_is_null(v[2])) {
        if (!cfg_is_seq(v[2])) {
            bad = cfg_error(c, v[2], p, "expected a list of inhibit rules");
        } else {
            ac->inhibit = calloc(cfg_len(v[2]) + 1, sizeof(*ac->inhibit));
            for (size_t i = 0; ac->inhibit && i < cfg_len(v[2]); i++) {
                char ip[340];
                P(ip, "%s[%zu]", p, i);
                bad |= parse_inhibit(c, cfg_seq_item(c, v[2], i), ip, &ac->inhibit[ac->ninhibit++]);
            }
        }
    }
    globals_free(&g);
    return bad ? -EINVAL : 0;
}


/* The text /api/v2/status shows: the file as written, with the values of secret
 * keys replaced by <secret>, as Alertmanager hides them. */
static char *redact_secrets(const char *text)
{
    static const char *const keys[] = { "smtp_auth_password", "smtp_auth_secret", "auth_password",
                                        "auth_secret", "slack_api_url", "api_url", "password",
                                        "credentials", "bearer_token", "routing_key", "service_key",
                                        "api_key", "opsgenie_api_key", NULL };
    struct buf b = BUF_INIT;
    const char *p = text;
    while (*p) {
        size_t klen = 0;
        for (int i = 0; keys[i]; i++) {
            size_t l = strlen(keys[i]);
            bool start = p == text || !(isalnum((unsigned char)p[-1]) || p[-1] == '_');
            if (start && !strncmp(p, keys[i], l) && !(isalnum((unsigned char)p[l]) || p[l] == '_')) {
                const char *q = p + l;
                while (*q == ' ' || *q == '\t')
                    q++;
                if (*q == ':' && klen < l)
                    klen = l;
            }
        }
        if (!klen) {
            buf_putc(&b, *p++);
            continue;
        }
        const char *q = p + klen;
        while (*q != ':')
            q++;
        q++;
        buf_append(&b, p, (size_t)(q - p));
        while (*q == ' ' || *q == '\t')
            buf_putc(&b, *q++);
        if (*q == '\n' || *q == '\r' || *q == '#' || !*q) {
            p = q;
            continue;
        }
        /* skip the value: quoted, or up to the end of the line or of a flow item */
        if (*q == '"' || *q == '\'') {
            char quote = *q++;
            while (*q && *q != quote && *q != '\n')
                q += (*q == '\\' && quote == '"' && q[1]) ? 2 : 1;
            if (*q == quote)
                q++;
        } else {
            while (*q && *q != '\n' && *q != ',' && *q != '}' && !(*q == ' ' && q[1] == '#'))
                q++;
        }
        buf_puts(&b, "<secret>");
        p = q;
    }
    char *out = buf_steal(&b);
    buf_free(&b);
    return out;
}

static const char default_config[] =
    "# generated by cairn: no alertmanager: key, one receiver without integrations\n"
    "route:\n  receiver: default\n  group_by: [alertname]\nreceivers:\n  - name: default\n";

static int parse_alertmanager_cb(struct cfg *c, const cfg_node *root, const char *path, const char *dir,
                                 void *arg)
{
    return am__parse_alertmanager(c, root, path, dir, arg);
}

int am__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "alertmanager", "external_url",
                                        "data_retention", NULL };
    cfg_node *v[5];
    char p[256];
    struct am_conf *ac = calloc(1, sizeof(*ac));
    if (!ac)
        return cfg_error(c, map, path, "out of memory");
    svc->conf = ac;
    ac->retention_ms = 120ull * 3600 * 1000;
    int bad = cfg_map_fields(c, map, path, keys, v);
    P(p, "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, ac->listen, AM_MAX_LISTEN, &ac->nlisten,
                                "http", "http", "127.0.0.1:9093", false);
    P(p, "%s.alertmanager", path);
    char *text = NULL;
    if (stack_native_config(c, v[2], p, svc, "alertmanager", default_config, parse_alertmanager_cb, ac,
                            &text))
        bad = -EINVAL;
    if (text)
        ac->config_text = redact_secrets(text);
    else
        ac->config_text = strdup(v[2] ? "# the alertmanager: mapping inline in the stack file\n"
                                      : default_config);
    free(text);
    P(p, "%s.external_url", path);
    if (v[3]) {
        if (cfg_get_string(c, v[3], p, &ac->external_url) == 0 &&
            strncmp(ac->external_url, "http://", 7) && strncmp(ac->external_url, "https://", 8))
            bad = cfg_error(c, v[3], p, "expected an http:// or https:// URL");
        else if (ac->external_url) {
            size_t l = strlen(ac->external_url);
            while (l && ac->external_url[l - 1] == '/')
                ac->external_url[--l] = 0;
        }
    }
    if (!ac->external_url && ac->nlisten) {
        char s[NET_ADDRSTRLEN];
        net_addr_format(&ac->listen[0], s, sizeof(s));
        struct buf u = BUF_INIT;
        buf_printf(&u, "http://%s", s);
        ac->external_url = buf_steal(&u);
        buf_free(&u);
    }
    P(p, "%s.data_retention", path);
    if (v[4] && cfg_get_duration(c, v[4], p, &ac->retention_ms) == 0 && ac->retention_ms == 0)
        bad = cfg_error(c, v[4], p, "must be more than 0s");
    else if (v[4] && ac->retention_ms == 0)
        bad = -EINVAL;
    return bad ? -EINVAL : 0;
}

static void route_free(struct am_route *r)
{
    free(r->receiver);
    cfg_free_string_list(r->group_by, r->ngroup_by);
    am__matchers_free(&r->matchers);
    cfg_free_string_list(r->mute, r->nmute);
    cfg_free_string_list(r->active, r->nactive);
    for (size_t i = 0; i < r->nroutes; i++)
        route_free(&r->routes[i]);
    free(r->routes);
    free(r->key);
}

void am__free_conf(void *conf)
{
    struct am_conf *ac = conf;
    if (!ac)
        return;
    if (ac->route) {
        route_free(ac->route);
        free(ac->route);
    }
    for (size_t i = 0; i < ac->nreceivers; i++) {
        for (size_t k = 0; k < ac->receivers[i].nints; k++)
            integration_free(&ac->receivers[i].ints[k]);
        free(ac->receivers[i].ints);
        free(ac->receivers[i].name);
    }
    free(ac->receivers);
    for (size_t i = 0; i < ac->ninhibit; i++) {
        am__matchers_free(&ac->inhibit[i].source);
        am__matchers_free(&ac->inhibit[i].target);
        cfg_free_string_list(ac->inhibit[i].equal, ac->inhibit[i].nequal);
    }
    free(ac->inhibit);
    for (size_t i = 0; i < ac->nintervals; i++) {
        struct am_time_intervals *t = &ac->intervals[i];
        for (size_t k = 0; k < t->n; k++) {
            free(t->v[k].times);
            free(t->v[k].weekdays);
            free(t->v[k].mdays);
            free(t->v[k].months);
            free(t->v[k].years);
            free(t->v[k].location);
        }
        free(t->v);
        free(t->name);
    }
    free(ac->intervals);
    free(ac->external_url);
    free(ac->config_text);
    am__tmpl_free(ac);
    free(ac);
}
