/* registry_config.c - the registry role's keys in the stack file:
 *
 *   registry:
 *     role: registry
 *     listen: ["127.0.0.1:5000"]
 *     storage: {path: registry}     # under data_dir (default: the service's name)
 *       s3: {endpoint: URL, bucket: B, region: R, prefix: P, access_key: K,
 *            secret_key_file: F}    # layers and configs in S3; the rest in path
 *     threads: 2
 *     users:                        # absent: anonymous pull, push and delete
 *       - {name: ci, password_file: F | password_env: VAR | password: P,
 *          grants: [{repositories: PATTERN, actions: [pull, push, delete]}]}
 *     public: [PATTERN]             # anyone may pull these
 *     tls: {cert: F, key: F}        # HTTPS instead of plain HTTP
 *     gc: {interval: 1h, grace: 1h, uploads: 168h}   # online garbage collection
 *     quotas: [{repositories: PATTERN, bytes: 10GiB}]
 *     proxy: {remote: URL, username: U, password_file: F}   # a pull-through cache
 *     notifications:                # Distribution's webhook endpoints
 *       endpoints:
 *         - {name: N, url: U, headers: {K: [V]}, timeout: 5s, threshold: 3, backoff: 1s,
 *            ignoredmediatypes: [T], ignore: {mediatypes: [T], actions: [pull]}}
 *
 * A PATTERN is a repository name, or a prefix followed by a star ("team/" then '*').
 */
#include "registry_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_users(struct cfg *c, const cfg_node *n, const char *path, struct reg_conf *rc,
                       const struct service *svc)
{
    if (!cfg_is_seq(n) || !cfg_len(n))
        return cfg_error(c, n, path, "expected a list of {name, password_file, grants}");
    rc->users = calloc(cfg_len(n), sizeof(*rc->users));
    if (!rc->users)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "name", "password_file", "password_env", "password", "grants", NULL };
        cfg_node *v[5];
        char p[300], q[340];
        CFG_PATH(p, "%s[%zu]", path, i);
        const cfg_node *it = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, it, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct reg_user *u = &rc->users[rc->nusers++];
        CFG_PATH(q, "%s.name", p);
        if (!v[0] || cfg_get_string(c, v[0], q, &u->name) || !u->name[0] || strchr(u->name, ':'))
            bad = cfg_error(c, v[0] ? v[0] : it, p, "a user needs a name without ':'");
        if (stack_secret(c, v[1], v[2], v[3], it, p, "password", svc->stack, &u->password))
            bad = -EINVAL;
        CFG_PATH(q, "%s.grants", p);
        if (!v[4] || !cfg_is_seq(v[4])) {
            bad = cfg_error(c, v[4] ? v[4] : it, q, "expected a list of {repositories, actions}");
            continue;
        }
        u->grants = calloc(cfg_len(v[4]) + 1, sizeof(*u->grants));
        for (size_t g = 0; u->grants && g < cfg_len(v[4]); g++) {
            static const char *const gk[] = { "repositories", "actions", NULL };
            cfg_node *gv[2];
            char r[380], t[420];
            CFG_PATH(r, "%s[%zu]", q, g);
            if (cfg_map_fields(c, cfg_seq_item(c, v[4], g), r, gk, gv) || !gv[0] || !gv[1]) {
                bad = cfg_error(c, cfg_seq_item(c, v[4], g), r, "expected {repositories: PATTERN, actions: [...]}");
                continue;
            }
            struct reg_grant *gr = &u->grants[u->ngrants++];
            CFG_PATH(t, "%s.repositories", r);
            bad |= cfg_get_string(c, gv[0], t, &gr->pattern);
            char **acts = NULL;
            size_t na = 0;
            CFG_PATH(t, "%s.actions", r);
            if (cfg_get_string_list(c, gv[1], t, &acts, &na)) {
                bad = -EINVAL;
                continue;
            }
            for (size_t a = 0; a < na; a++) {
                if (strcmp(acts[a], "pull") == 0)
                    gr->pull = true;
                else if (strcmp(acts[a], "push") == 0)
                    gr->push = true;
                else if (strcmp(acts[a], "delete") == 0)
                    gr->del = true;
                else
                    bad = cfg_error(c, gv[1], t, "unknown action \"%s\" (pull, push or delete)", acts[a]);
            }
            cfg_free_string_list(acts, na);
        }
    }
    return bad;
}

static int parse_gc(struct cfg *c, const cfg_node *n, const char *path, struct reg_conf *rc)
{
    static const char *const keys[] = { "interval", "grace", "uploads", NULL };
    cfg_node *v[3];
    if (cfg_is_scalar(n)) {         /* gc: false turns it off */
        bool on;
        if (cfg_get_bool(c, n, path, &on))
            return -EINVAL;
        if (!on)
            rc->gc_interval_ms = 0;
        return 0;
    }
    if (cfg_map_fields(c, n, path, keys, v))
        return cfg_error(c, n, path, "expected {interval, grace, uploads} or false");
    uint64_t *dst[] = { &rc->gc_interval_ms, &rc->gc_grace_ms, &rc->upload_expiry_ms };
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        char p[300];
        CFG_PATH(p, "%s.%s", path, keys[i]);
        if (v[i])
            bad |= cfg_get_duration(c, v[i], p, dst[i]);
    }
    return bad;
}

static int parse_quotas(struct cfg *c, const cfg_node *n, const char *path, struct reg_conf *rc)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of {repositories, bytes}");
    rc->quotas = calloc(cfg_len(n) + 1, sizeof(*rc->quotas));
    if (!rc->quotas)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "repositories", "bytes", NULL };
        cfg_node *v[2];
        char p[300], q[340];
        CFG_PATH(p, "%s[%zu]", path, i);
        const cfg_node *it = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, it, p, keys, v) || !v[0] || !v[1]) {
            bad = cfg_error(c, it, p, "expected {repositories: PATTERN, bytes: SIZE}");
            continue;
        }
        struct reg_quota *qt = &rc->quotas[rc->nquotas++];
        CFG_PATH(q, "%s.repositories", p);
        bad |= cfg_get_string(c, v[0], q, &qt->pattern);
        CFG_PATH(q, "%s.bytes", p);
        bad |= cfg_get_size(c, v[1], q, &qt->bytes);
    }
    return bad;
}

static int parse_actions(struct cfg *c, const cfg_node *n, const char *path, unsigned *out)
{
    char **acts = NULL;
    size_t na = 0;
    if (cfg_get_string_list(c, n, path, &acts, &na))
        return -EINVAL;
    static const char *const names[] = { "push", "pull", "delete", "mount" };
    int bad = 0;
    for (size_t a = 0; a < na; a++) {
        size_t k = 0;
        while (k < ARRAY_SIZE(names) && strcmp(acts[a], names[k]) != 0)
            k++;
        if (k == ARRAY_SIZE(names))
            bad = cfg_error(c, n, path, "unknown action \"%s\" (push, pull, delete or mount)", acts[a]);
        else
            *out |= 1u << k;
    }
    cfg_free_string_list(acts, na);
    return bad;
}

static int push_str(char ***v, size_t *n, char *str)
{
    char **nv = str ? realloc(*v, (*n + 2) * sizeof(*nv)) : NULL;
    if (!nv) {
        free(str);
        return -ENOMEM;
    }
    nv[(*n)++] = str;
    nv[*n] = NULL;
    *v = nv;
    return 0;
}

/* Moves the strings of src (then freed) to the end of *dst. */
static int append_list(char ***dst, size_t *nd, char **src, size_t ns)
{
    int r = 0;
    for (size_t i = 0; i < ns; i++)
        r |= push_str(dst, nd, src[i]);
    free(src);
    return r;
}

static int parse_headers(struct cfg *c, const cfg_node *n, const char *path, struct reg_endpoint *e)
{
    if (!cfg_is_map(n))
        return cfg_error(c, n, path, "expected a mapping of header names to values");
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        const char *name = cfg_scalar(cfg_map_key(c, n, i));
        char p[340];
        CFG_PATH(p, "%s.%s", path, name ? name : "?");
        char **vals = NULL;
        size_t nv = 0;
        if (!name || !name[0] || strpbrk(name, ": \r\n") ||
            cfg_get_string_list(c, cfg_map_value(c, n, i), p, &vals, &nv)) {
            bad = cfg_error(c, n, p, "expected a header name and its value (or values)");
            continue;
        }
        for (size_t k = 0; k < nv; k++) {
            size_t len = strlen(name) + strlen(vals[k]) + 3;
            char *line = strpbrk(vals[k], "\r\n") ? NULL : malloc(len);
            if (!line) {
                bad = cfg_error(c, n, p, "a header value cannot span lines");
                continue;
            }
            snprintf(line, len, "%s: %s", name, vals[k]);
            bad |= push_str(&e->headers, &e->nheaders, line);
        }
        cfg_free_string_list(vals, nv);
    }
    return bad;
}

static int parse_endpoint(struct cfg *c, const cfg_node *it, const char *p, struct reg_endpoint *e,
                          bool *disabled)
{
    static const char *const keys[] = { "name", "url", "headers", "timeout", "threshold", "backoff",
                                        "ignoredmediatypes", "ignore", "disabled", NULL };
    cfg_node *v[9];
    char q[340];
    if (cfg_map_fields(c, it, p, keys, v) || !v[1])
        return cfg_error(c, it, p, "expected {name, url, ...}");
    int bad = 0;
    e->timeout_ms = 5000;
    e->backoff_ms = 1000;
    e->threshold = 3;
    CFG_PATH(q, "%s.name", p);
    if (v[0])
        bad |= cfg_get_string(c, v[0], q, &e->name);
    CFG_PATH(q, "%s.url", p);
    bad |= stack_url(c, v[1], q, &e->url);
    if (!e->name && !bad)
        e->name = strdup(e->url.text);
    CFG_PATH(q, "%s.disabled", p);
    if (v[8])
        bad |= cfg_get_bool(c, v[8], q, disabled);
    CFG_PATH(q, "%s.headers", p);
    if (v[2])
        bad |= parse_headers(c, v[2], q, e);
    CFG_PATH(q, "%s.timeout", p);
    if (v[3])
        bad |= cfg_get_duration(c, v[3], q, &e->timeout_ms);
    long long t;
    CFG_PATH(q, "%s.threshold", p);
    if (v[4])
        bad |= cfg_get_int(c, v[4], q, 1, 1000, &t) ? -EINVAL : (e->threshold = (long)t, 0);
    CFG_PATH(q, "%s.backoff", p);
    if (v[5])
        bad |= cfg_get_duration(c, v[5], q, &e->backoff_ms);
    char **types = NULL;
    size_t nt = 0;
    CFG_PATH(q, "%s.ignoredmediatypes", p);
    if (v[6] && (cfg_get_string_list(c, v[6], q, &types, &nt) || append_list(&e->ignore_types, &e->nignore_types, types, nt)))
        bad = -EINVAL;
    if (v[7]) {
        static const char *const ik[] = { "mediatypes", "actions", NULL };
        cfg_node *iv[2];
        CFG_PATH(q, "%s.ignore", p);
        if (cfg_map_fields(c, v[7], q, ik, iv))
            return cfg_error(c, v[7], q, "expected {mediatypes, actions}");
        char r[380];
        CFG_PATH(r, "%s.mediatypes", q);
        types = NULL;
        nt = 0;
        if (iv[0] && (cfg_get_string_list(c, iv[0], r, &types, &nt) ||
                      append_list(&e->ignore_types, &e->nignore_types, types, nt)))
            bad = -EINVAL;
        CFG_PATH(r, "%s.actions", q);
        if (iv[1])
            bad |= parse_actions(c, iv[1], r, &e->ignore_actions);
    }
    return bad;
}

static int parse_notifications(struct cfg *c, const cfg_node *n, const char *path, struct reg_conf *rc)
{
    static const char *const keys[] = { "endpoints", "events", NULL };
    cfg_node *v[2];
    char p[300];
    CFG_PATH(p, "%s.endpoints", path);
    if (cfg_map_fields(c, n, path, keys, v) || !cfg_is_seq(v[0]))
        return cfg_error(c, n, path, "expected {endpoints: [{name, url, ...}]}");
    if (v[1])
        return cfg_error(c, v[1], path, "events options are not offered (references are not sent)");
    rc->endpoints = calloc(cfg_len(v[0]) + 1, sizeof(*rc->endpoints));
    if (!rc->endpoints)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(v[0]); i++) {
        char q[320];
        CFG_PATH(q, "%s[%zu]", p, i);
        bool disabled = false;
        struct reg_endpoint *e = &rc->endpoints[rc->nendpoints++];
        bad |= parse_endpoint(c, cfg_seq_item(c, v[0], i), q, e, &disabled);
        if (disabled)
            reg__free_endpoint(&rc->endpoints[--rc->nendpoints]);
    }
    return bad;
}

void reg__free_endpoint(struct reg_endpoint *e)
{
    free(e->name);
    stack_url_free(&e->url);
    cfg_free_string_list(e->headers, e->nheaders);
    cfg_free_string_list(e->ignore_types, e->nignore_types);
    memset(e, 0, sizeof(*e));
}

int reg__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "storage", "threads", "users", "public",
                                        "tls", "gc", "quotas", "notifications", "proxy", NULL };
    cfg_node *v[11];
    struct reg_conf *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return cfg_error(c, map, path, "out of memory");
    svc->conf = rc;
    rc->threads = 2;
    rc->gc_interval_ms = 3600000;
    rc->gc_grace_ms = 3600000;
    rc->upload_expiry_ms = 168 * 3600000ull;
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    CFG_PATH(p, "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, rc->listen, REG_MAX_LISTEN, &rc->nlisten, "http",
                                "http", "127.0.0.1:5000", false);
    CFG_PATH(p, "%s.storage", path);
    if (v[2]) {
        static const char *const sk[] = { "path", "s3", NULL };
        cfg_node *sv[2];
        if (cfg_map_fields(c, v[2], p, sk, sv) == 0 && (sv[0] || sv[1])) {
            char q[280];
            CFG_PATH(q, "%s.path", p);
            if (sv[0])
                bad |= cfg_get_string(c, sv[0], q, &rc->path);
            CFG_PATH(q, "%s.s3", p);
            if (sv[1]) {
                rc->use_s3 = true;
                bad |= s3c_conf_parse(c, sv[1], q, svc->stack, &rc->s3);
            }
        } else {
            bad = cfg_error(c, v[2], p, "expected {path: DIR, s3: {endpoint, bucket, access_key, secret_key_file}}");
        }
    }
    if (!rc->path)
        rc->path = strdup(svc->name);
    CFG_PATH(p, "%s.threads", path);
    long long t;
    if (v[3]) {
        if (cfg_get_int(c, v[3], p, 1, 64, &t) == 0)
            rc->threads = (int)t;
        else
            bad = -EINVAL;
    }
    CFG_PATH(p, "%s.users", path);
    if (v[4])
        bad |= parse_users(c, v[4], p, rc, svc);
    CFG_PATH(p, "%s.public", path);
    if (v[5])
        bad |= cfg_get_string_list(c, v[5], p, &rc->public_repos, &rc->npublic);
    CFG_PATH(p, "%s.tls", path);
    if (v[6]) {
        static const char *const tk[] = { "cert", "key", NULL };
        cfg_node *tv[2];
        if (cfg_map_fields(c, v[6], p, tk, tv) || !tv[0] || !tv[1]) {
            bad = cfg_error(c, v[6], p, "expected {cert: FILE, key: FILE}");
        } else {
            char *cert = NULL, *key = NULL;
            char q[280];
            CFG_PATH(q, "%s.cert", p);
            bad |= cfg_get_string(c, tv[0], q, &cert);
            CFG_PATH(q, "%s.key", p);
            bad |= cfg_get_string(c, tv[1], q, &key);
            rc->tls_cert = cert ? stack_path(svc->stack, cert) : NULL;
            rc->tls_key = key ? stack_path(svc->stack, key) : NULL;
            free(cert);
            free(key);
        }
    }
    CFG_PATH(p, "%s.gc", path);
    if (v[7])
        bad |= parse_gc(c, v[7], p, rc);
    CFG_PATH(p, "%s.quotas", path);
    if (v[8])
        bad |= parse_quotas(c, v[8], p, rc);
    CFG_PATH(p, "%s.notifications", path);
    if (v[9])
        bad |= parse_notifications(c, v[9], p, rc);
    CFG_PATH(p, "%s.proxy", path);
    if (v[10]) {
        static const char *const pk[] = { "remote", "username", "password_file", "password_env", "password", NULL };
        cfg_node *pv[5];
        char q[300];
        if (cfg_map_fields(c, v[10], p, pk, pv) || !pv[0]) {
            bad = cfg_error(c, v[10], p, "expected {remote: URL, username, password_file}");
        } else {
            rc->proxied = true;
            CFG_PATH(q, "%s.remote", p);
            bad |= stack_url(c, pv[0], q, &rc->proxy_url);
            CFG_PATH(q, "%s.username", p);
            if (pv[1]) {
                bad |= cfg_get_string(c, pv[1], q, &rc->proxy_user);
                if (stack_secret(c, pv[2], pv[3], pv[4], v[10], p, "password", svc->stack, &rc->proxy_password))
                    bad = -EINVAL;
            } else if (pv[2] || pv[3] || pv[4]) {
                bad = cfg_error(c, v[10], p, "a password needs a username");
            }
        }
    }
    return bad || !rc->path ? -EINVAL : 0;
}

void reg__free_conf(void *conf)
{
    struct reg_conf *rc = conf;
    if (!rc)
        return;
    for (size_t i = 0; i < rc->nusers; i++) {
        free(rc->users[i].name);
        if (rc->users[i].password)
            memset(rc->users[i].password, 0, strlen(rc->users[i].password));
        free(rc->users[i].password);
        for (size_t g = 0; g < rc->users[i].ngrants; g++)
            free(rc->users[i].grants[g].pattern);
        free(rc->users[i].grants);
    }
    free(rc->users);
    cfg_free_string_list(rc->public_repos, rc->npublic);
    for (size_t i = 0; i < rc->nquotas; i++)
        free(rc->quotas[i].pattern);
    free(rc->quotas);
    for (size_t i = 0; i < rc->nendpoints; i++)
        reg__free_endpoint(&rc->endpoints[i]);
    free(rc->endpoints);
    s3c_conf_free(&rc->s3);
    stack_url_free(&rc->proxy_url);
    free(rc->proxy_user);
    if (rc->proxy_password)
        memset(rc->proxy_password, 0, strlen(rc->proxy_password));
    free(rc->proxy_password);
    free(rc->tls_cert);
    free(rc->tls_key);
    free(rc->path);
    free(rc);
}
