/* s3_config.c - the s3 role's keys in the stack file:
 *
 *   s3:
 *     role: s3
 *     listen: ["127.0.0.1:9000"]
 *     data: s3                      # under data_dir (default: the service's name)
 *     region: us-east-1
 *     threads: 2
 *     domains: [localhost]          # virtual-hosted style: BUCKET.localhost:9000
 *     keys:
 *       - {access_key: AKIA..., secret_key_file: F | secret_key_env: VAR | secret_key: S,
 *          grants: [{bucket: "*", actions: [read, write]}]}
 *     public_buckets: [assets]      # anonymous GET/HEAD and listing
 *     multipart_expiry: 7d          # incomplete uploads are aborted after this
 */
#include "s3_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P(buf, ...) snprintf(buf, sizeof(buf), __VA_ARGS__)

static int parse_grants(struct cfg *c, const cfg_node *n, const char *path, struct s3_key *k)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of {bucket, actions}");
    k->grants = calloc(cfg_len(n) + 1, sizeof(*k->grants));
    if (!k->grants)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "bucket", "actions", NULL };
        cfg_node *v[2];
        char p[480], q[520];
        P(p, "%s[%zu]", path, i);
        if (cfg_map_fields(c, cfg_seq_item(c, n, i), p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct s3_grant *g = &k->grants[k->ngrants++];
        P(q, "%s.bucket", p);
        if (!v[0])
            bad = cfg_error(c, cfg_seq_item(c, n, i), p, "missing key \"bucket\" (a name or \"*\")");
        else if (cfg_get_string(c, v[0], q, &g->bucket) == 0 && strcmp(g->bucket, "*") != 0 &&
                 !s3__bucket_name_ok(g->bucket))
            bad = cfg_error(c, v[0], q, "\"%s\" is not a valid bucket name", g->bucket);
        P(q, "%s.actions", p);
        char **acts = NULL;
        size_t na = 0;
        if (!v[1] || cfg_get_string_list(c, v[1], q, &acts, &na)) {
            bad = v[1] ? -EINVAL : cfg_error(c, cfg_seq_item(c, n, i), p, "missing key \"actions\" ([read, write])");
            continue;
        }
        for (size_t a = 0; a < na; a++) {
            if (strcmp(acts[a], "read") == 0)
                g->read = true;
            else if (strcmp(acts[a], "write") == 0)
                g->write = true;
            else
                bad = cfg_error(c, v[1], q, "unknown action \"%s\" (expected read or write)", acts[a]);
        }
        cfg_free_string_list(acts, na);
    }
    return bad;
}

static int parse_keys(struct cfg *c, const cfg_node *n, const char *path, struct s3_conf *sc,
                      const struct service *svc)
{
    if (!cfg_is_seq(n) || cfg_len(n) == 0)
        return cfg_error(c, n, path, "expected a list of {access_key, secret_key_file, grants}");
    sc->keys = calloc(cfg_len(n), sizeof(*sc->keys));
    if (!sc->keys)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(n); i++) {
        static const char *const keys[] = { "access_key", "secret_key_file", "secret_key_env",
                                            "secret_key", "grants", NULL };
        cfg_node *v[5];
        char p[400], q[440];
        P(p, "%s[%zu]", path, i);
        const cfg_node *it = cfg_seq_item(c, n, i);
        if (cfg_map_fields(c, it, p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        struct s3_key *k = &sc->keys[sc->nkeys++];
        P(q, "%s.access_key", p);
        if (!v[0])
            bad = cfg_error(c, it, p, "missing key \"access_key\"");
        else if (cfg_get_string(c, v[0], q, &k->access) == 0 &&
                 (strlen(k->access) < 3 || strlen(k->access) > 128 || strchr(k->access, '/')))
            bad = cfg_error(c, v[0], q, "an access key is 3 to 128 characters without '/'");
        if (stack_secret(c, v[1], v[2], v[3], it, p, "secret_key", svc->stack, &k->secret))
            bad = -EINVAL;
        if (k->secret && strlen(k->secret) > 200)
            bad = cfg_error(c, it, p, "the secret key is longer than 200 characters");
        P(q, "%s.grants", p);
        if (!v[4])
            bad = cfg_error(c, it, p, "missing key \"grants\" (e.g. [{bucket: \"*\", actions: [read, write]}])");
        else
            bad |= parse_grants(c, v[4], q, k);
    }
    return bad;
}

int s3__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "data", "region", "keys", "public_buckets",
                                        "threads", "domains", "multipart_expiry", NULL };
    cfg_node *v[9];
    struct s3_conf *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return cfg_error(c, map, path, "out of memory");
    svc->conf = sc;
    sc->threads = 2;
    sc->upload_expiry_ms = 7ull * 24 * 3600 * 1000;
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    P(p, "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, sc->listen, S3_MAX_LISTEN, &sc->nlisten, "http",
                                "http", "127.0.0.1:9000", false);
    P(p, "%s.data", path);
    if (v[2])
        bad |= cfg_get_string(c, v[2], p, &sc->data);
    else
        sc->data = strdup(svc->name);
    P(p, "%s.region", path);
    if (v[3])
        bad |= cfg_get_string(c, v[3], p, &sc->region);
    else
        sc->region = strdup("us-east-1");
    P(p, "%s.keys", path);
    if (v[4])
        bad |= parse_keys(c, v[4], p, sc, svc);
    else
        sc->keys_generated = true;
    P(p, "%s.public_buckets", path);
    if (v[5] && cfg_get_string_list(c, v[5], p, &sc->public_buckets, &sc->npublic) == 0) {
        for (size_t i = 0; i < sc->npublic; i++)
            if (!s3__bucket_name_ok(sc->public_buckets[i]))
                bad = cfg_error(c, v[5], p, "\"%s\" is not a valid bucket name", sc->public_buckets[i]);
    } else if (v[5]) {
        bad = -EINVAL;
    }
    P(p, "%s.threads", path);
    long long t;
    if (v[6]) {
        if (cfg_get_int(c, v[6], p, 1, 64, &t) == 0)
            sc->threads = (int)t;
        else
            bad = -EINVAL;
    }
    P(p, "%s.domains", path);
    if (v[7])
        bad |= cfg_get_string_list(c, v[7], p, &sc->domains, &sc->ndomains);
    else if ((sc->domains = calloc(2, sizeof(char *))) && (sc->domains[0] = strdup("localhost")))
        sc->ndomains = 1;
    P(p, "%s.multipart_expiry", path);
    if (v[8])
        bad |= cfg_get_duration(c, v[8], p, &sc->upload_expiry_ms);
    if (!sc->data || !sc->region)
        bad = -ENOMEM;
    return bad ? -EINVAL : 0;
}

void s3__free_conf(void *conf)
{
    struct s3_conf *sc = conf;
    if (!sc)
        return;
    for (size_t i = 0; i < sc->nkeys; i++) {
        free(sc->keys[i].access);
        if (sc->keys[i].secret)
            memset(sc->keys[i].secret, 0, strlen(sc->keys[i].secret));
        free(sc->keys[i].secret);
        for (size_t g = 0; g < sc->keys[i].ngrants; g++)
            free(sc->keys[i].grants[g].bucket);
        free(sc->keys[i].grants);
    }
    free(sc->keys);
    cfg_free_string_list(sc->public_buckets, sc->npublic);
    cfg_free_string_list(sc->domains, sc->ndomains);
    free(sc->data);
    free(sc->region);
    free(sc);
}
