/* registry_config.c - the registry role's keys in the stack file:
 *
 *   registry:
 *     role: registry
 *     listen: ["127.0.0.1:5000"]
 *     storage: {path: registry}     # under data_dir (default: the service's name)
 *     threads: 2
 *     users:                        # absent: anonymous pull, push and delete
 *       - {name: ci, password_file: F | password_env: VAR | password: P,
 *          grants: [{repositories: PATTERN, actions: [pull, push, delete]}]}
 *     public: [PATTERN]             # anyone may pull these
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
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        const cfg_node *it = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, it, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct reg_user *u = &rc->users[rc->nusers++];
        snprintf(q, sizeof(q), "%s.name", p);
        if (!v[0] || cfg_get_string(c, v[0], q, &u->name) || !u->name[0] || strchr(u->name, ':'))
            bad = cfg_error(c, v[0] ? v[0] : it, p, "a user needs a name without ':'");
        if (stack_secret(c, v[1], v[2], v[3], it, p, "password", svc->stack, &u->password))
            bad = -EINVAL;
        snprintf(q, sizeof(q), "%s.grants", p);
        if (!v[4] || !cfg_is_seq(v[4])) {
            bad = cfg_error(c, v[4] ? v[4] : it, q, "expected a list of {repositories, actions}");
            continue;
        }
        u->grants = calloc(cfg_len(v[4]) + 1, sizeof(*u->grants));
        for (size_t g = 0; u->grants && g < cfg_len(v[4]); g++) {
            static const char *const gk[] = { "repositories", "actions", NULL };
            cfg_node *gv[2];
            char r[380], t[420];
            snprintf(r, sizeof(r), "%s[%zu]", q, g);
            if (cfg_map_fields(c, cfg_seq_item(c, v[4], g), r, gk, gv) || !gv[0] || !gv[1]) {
                bad = cfg_error(c, cfg_seq_item(c, v[4], g), r, "expected {repositories: PATTERN, actions: [...]}");
                continue;
            }
            struct reg_grant *gr = &u->grants[u->ngrants++];
            snprintf(t, sizeof(t), "%s.repositories", r);
            bad |= cfg_get_string(c, gv[0], t, &gr->pattern);
            char **acts = NULL;
            size_t na = 0;
            snprintf(t, sizeof(t), "%s.actions", r);
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

int reg__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "storage", "threads", "users", "public", NULL };
    cfg_node *v[6];
    struct reg_conf *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return cfg_error(c, map, path, "out of memory");
    svc->conf = rc;
    rc->threads = 2;
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    snprintf(p, sizeof(p), "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, rc->listen, REG_MAX_LISTEN, &rc->nlisten, "http",
                                "http", "127.0.0.1:5000", false);
    snprintf(p, sizeof(p), "%s.storage", path);
    if (v[2]) {
        static const char *const sk[] = { "path", NULL };
        cfg_node *sv[1];
        if (cfg_map_fields(c, v[2], p, sk, sv) == 0 && sv[0]) {
            char q[280];
            snprintf(q, sizeof(q), "%s.path", p);
            bad |= cfg_get_string(c, sv[0], q, &rc->path);
        } else {
            bad = cfg_error(c, v[2], p, "expected {path: DIR} (S3 storage is not offered yet)");
        }
    }
    if (!rc->path)
        rc->path = strdup(svc->name);
    snprintf(p, sizeof(p), "%s.threads", path);
    long long t;
    if (v[3]) {
        if (cfg_get_int(c, v[3], p, 1, 64, &t) == 0)
            rc->threads = (int)t;
        else
            bad = -EINVAL;
    }
    snprintf(p, sizeof(p), "%s.users", path);
    if (v[4])
        bad |= parse_users(c, v[4], p, rc, svc);
    snprintf(p, sizeof(p), "%s.public", path);
    if (v[5])
        bad |= cfg_get_string_list(c, v[5], p, &rc->public_repos, &rc->npublic);
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
    free(rc->path);
    free(rc);
}
