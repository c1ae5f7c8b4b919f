/* ui_config.c - the ui role's keys in the stack file:
 *
 *   console:
 *     role: ui
 *     listen: ["127.0.0.1:3000"]
 *     metrics: metrics                 # the services the console reads (by name);
 *     logs: logs                       # default: the stack's first service of that
 *     traces: traces                   # role; "" or false: none
 *     alerts: alerts
 *     dashboards: [dash/app.json]      # Grafana dashboard JSON files (the model, or
 *                                      # {"dashboard": model} as Grafana's API gives)
 *     users:                           # absent: no login (loopback by default)
 *       - {name: admin, password_hash: "$7$..."}   # crypt(3) scrypt or yescrypt
 *     session_ttl: 12h
 */
#include "ui_internal.h"
#include "core/log.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P(buf, ...) CFG_PATH(buf, __VA_ARGS__)

void ui__dashboard_free(struct ui_dashboard *d)
{
    free(d->uid);
    free(d->title);
    free(d->json);
}

int ui__dashboard_load(const char *text, size_t n, const char *fallback_uid, struct ui_dashboard *d,
                          char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(text, n, 0, &je);
    if (!root) {
        snprintf(err, errlen, "not JSON: line %d column %d: %s", je.line, je.column, je.text);
        return -EINVAL;
    }
    json_t *model = root;
    if (json_is_object(json_object_get(root, "dashboard")))
        model = json_object_get(root, "dashboard");
    int rc = -EINVAL;
    if (!json_is_object(model)) {
        snprintf(err, errlen, "expected a Grafana dashboard (a JSON object)");
    } else if (!json_is_array(json_object_get(model, "panels"))) {
        snprintf(err, errlen, "expected a Grafana dashboard: no \"panels\" list");
    } else {
        const char *uid = json_string_value(json_object_get(model, "uid"));
        const char *title = json_string_value(json_object_get(model, "title"));
        if (!uid || !*uid)
            uid = fallback_uid;
        if (strlen(uid) > 64 || strspn(uid, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != strlen(uid)) {
            snprintf(err, errlen, "uid \"%.80s\": expected 1 to 64 letters, digits, '-', '_' or '.'", uid);
        } else {
            d->uid = strdup(uid);
            d->title = strdup(title && *title ? title : uid);
            d->json = json_dumps(model, JSON_COMPACT);
            rc = d->uid && d->title && d->json ? 0 : -ENOMEM;
            if (rc) {
                snprintf(err, errlen, "out of memory");
                ui__dashboard_free(d);
            }
        }
    }
    json_decref(root);
    return rc;
}

static int add_dashboard(struct ui_conf *uc, const struct ui_dashboard *d)
{
    for (size_t i = 0; i < uc->ndashboards; i++)
        if (!strcmp(uc->dashboards[i].uid, d->uid))
            return -EEXIST;
    struct ui_dashboard *nd = realloc(uc->dashboards, (uc->ndashboards + 1) * sizeof(*nd));
    if (!nd)
        return -ENOMEM;
    uc->dashboards = nd;
    uc->dashboards[uc->ndashboards++] = *d;
    return 0;
}

static int parse_dashboards(struct cfg *c, const cfg_node *n, const char *path, const struct service *svc,
                            struct ui_conf *uc)
{
    char **files = NULL;
    size_t nfiles = 0;
    if (cfg_get_string_list(c, n, path, &files, &nfiles))
        return -EINVAL;
    int bad = 0;
    for (size_t i = 0; i < nfiles; i++) {
        char p[256];
        P(p, "%s[%zu]", path, i);
        const cfg_node *item = cfg_is_seq(n) ? cfg_seq_item(c, n, i) : n;
        char *file = stack_path(svc->stack, files[i]);
        char *text = NULL;
        size_t len = 0;
        struct cfg_errors errs = { 0 };
        if (!file || cfg_read_file(file, &text, &len, &errs)) {
            bad = cfg_error(c, item, p, "cannot read dashboard %s: %s", files[i],
                            errs.n ? errs.msgs[0] : "out of memory");
        } else if (len > UI_MAX_DASHBOARD_BYTES) {
            bad = cfg_error(c, item, p, "dashboard %s: larger than %u bytes", files[i], UI_MAX_DASHBOARD_BYTES);
        } else {
            /* the file's name without directory and extension is the uid it lacks one */
            const char *base = strrchr(files[i], '/') ? strrchr(files[i], '/') + 1 : files[i];
            char uid[65];
            snprintf(uid, sizeof(uid), "%.*s", (int)(strcspn(base, ".") < 64 ? strcspn(base, ".") : 64), base);
            struct ui_dashboard d = { 0 };
            char err[200];
            if (ui__dashboard_load(text, len, uid, &d, err, sizeof(err))) {
                bad = cfg_error(c, item, p, "dashboard %s: %s", files[i], err);
            } else if (add_dashboard(uc, &d)) {
                bad = cfg_error(c, item, p, "dashboard %s: uid \"%s\" is used by another dashboard", files[i], d.uid);
                ui__dashboard_free(&d);
            }
        }
        cfg_errors_free(&errs);
        free(text);
        free(file);
    }
    cfg_free_string_list(files, nfiles);
    return bad ? -EINVAL : 0;
}

static int parse_users(struct cfg *c, const cfg_node *n, const char *path, struct ui_conf *uc)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of {name, password_hash}");
    int bad = 0;
    uc->users = calloc(cfg_len(n) ? cfg_len(n) : 1, sizeof(*uc->users));
    if (!uc->users)
        return cfg_error(c, n, path, "out of memory");
    for (size_t i = 0; i < cfg_len(n); i++) {
        const cfg_node *m = cfg_seq_item(c, n, i);
        static const char *const keys[] = { "name", "password_hash", NULL };
        cfg_node *v[3];
        char p[256];
        P(p, "%s[%zu]", path, i);
        if (cfg_map_fields(c, m, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct ui_user *us = &uc->users[uc->nusers++];
        char q[300];
        P(q, "%s.name", p);
        if (!v[0])
            bad = cfg_error(c, m, p, "missing key \"name\"");
        else if (!cfg_get_string(c, v[0], q, &us->name) &&
                 (!*us->name || strlen(us->name) > 63 || strpbrk(us->name, ":\"\\ \t")))
            bad = cfg_error(c, v[0], q, "expected 1 to 63 characters without ':', '\"', '\\' or blanks");
        P(q, "%s.password_hash", p);
        if (!v[1])
            bad = cfg_error(c, m, p, "missing key \"password_hash\" (make one with: mkpasswd -m scrypt)");
        else if (!cfg_get_string(c, v[1], q, &us->hash) && strncmp(us->hash, "$7$", 3) &&
                 strncmp(us->hash, "$y$", 3))
            bad = cfg_error(c, v[1], q, "expected a scrypt ($7$) or yescrypt ($y$) hash, as mkpasswd -m scrypt "
                                        "prints");
        for (size_t k = 0; us->name && k + 1 < uc->nusers; k++)
            if (uc->users[k].name && !strcmp(uc->users[k].name, us->name))
                bad = cfg_error(c, v[0], q, "user \"%s\" is listed twice", us->name);
    }
    return bad ? -EINVAL : 0;
}

int ui__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    struct ui_conf *uc = calloc(1, sizeof(*uc));
    if (!uc)
        return -ENOMEM;
    svc->conf = uc;
    uc->session_ttl_ms = 12ULL * 3600 * 1000;
    static const char *const keys[] = { "role", "listen", "metrics", "logs", "traces", "alerts",
                                        "dashboards", "users", "session_ttl", NULL };
    cfg_node *v[ARRAY_SIZE(keys)];
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    P(p, "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, uc->listen, UI_MAX_LISTEN, &uc->nlisten, "http", "http",
                                "127.0.0.1:3000", false);
    /* the sources: a service name, "" or false for none, absent for the stack's first of the role */
    static const int src_of_key[] = { UI_METRICS, UI_LOGS, UI_JAEGER, UI_ALERTS };
    for (int k = 0; k < 4; k++) {
        const cfg_node *n = v[2 + k];
        if (!n)
            continue;
        P(p, "%s.%s", path, keys[2 + k]);
        char *name = NULL;
        if (cfg_is_scalar(n) && !strcmp(cfg_scalar(n), "false"))
            name = strdup("");
        else if (cfg_get_string(c, n, p, &name))
            bad = -EINVAL;
        else if (!strcmp(name, "true"))
            bad = cfg_error(c, n, p, "expected a service name (or false)");
        uc->source_name[src_of_key[k]] = name;
        if (src_of_key[k] == UI_JAEGER && name)
            uc->source_name[UI_TEMPO] = strdup(name);
    }
    P(p, "%s.dashboards", path);
    if (v[6])
        bad |= parse_dashboards(c, v[6], p, svc, uc);
    P(p, "%s.users", path);
    if (v[7])
        bad |= parse_users(c, v[7], p, uc);
    P(p, "%s.session_ttl", path);
    if (v[8] && !(bad |= cfg_get_duration(c, v[8], p, &uc->session_ttl_ms)) && uc->session_ttl_ms < 60000)
        bad = cfg_error(c, v[8], p, "expected at least 1m");
    /* the built-in dashboards, one per role, after the stack file's (which win on a uid) */
    for (size_t i = 0; i < ui_nassets; i++) {
        const struct ui_asset *a = &ui_assets[i];
        if (strncmp(a->path, "dashboards/", 11))
            continue;
        struct buf raw = { 0 };
        struct ui_dashboard d = { 0 };
        char err[200];
        if (buf_inflate((const char *)a->gz, a->gz_len, a->len, &raw) ||
            ui__dashboard_load(raw.data, buf_used(&raw), a->path + 11, &d, err, sizeof(err))) {
            log_error("built-in dashboard unreadable", "file", a->path);
        } else {
            d.builtin = true;
            if (add_dashboard(uc, &d))
                ui__dashboard_free(&d);
        }
        buf_free(&raw);
    }
    return bad ? -EINVAL : 0;
}

void ui__free_conf(void *conf)
{
    struct ui_conf *uc = conf;
    if (!uc)
        return;
    for (int i = 0; i < UI_NSOURCES; i++)
        free(uc->source_name[i]);
    for (size_t i = 0; i < uc->nusers; i++) {
        free(uc->users[i].name);
        free(uc->users[i].hash);
    }
    free(uc->users);
    for (size_t i = 0; i < uc->ndashboards; i++)
        ui__dashboard_free(&uc->dashboards[i]);
    free(uc->dashboards);
    free(uc);
}
