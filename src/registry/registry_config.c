/* registry_config.c - the registry role's keys in the stack file:
 *
 *   registry:
 *     role: registry
 *     listen: ["127.0.0.1:5000"]
 *     storage: {path: registry}     # under data_dir (default: the service's name)
 *     threads: 2
 */
#include "registry_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int reg__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "storage", "threads", NULL };
    cfg_node *v[4];
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
    return bad || !rc->path ? -EINVAL : 0;
}

void reg__free_conf(void *conf)
{
    struct reg_conf *rc = conf;
    if (!rc)
        return;
    free(rc->path);
    free(rc);
}
