/* bk_config.c - the backup role's keys in the stack file, and cron schedules:
 *
 *   backup:
 *     role: backup
 *     listen: ["127.0.0.1:9095"]             # /metrics, /-/ready, /api/jobs, POST /api/jobs/<name>/run
 *     repository: {path: backups/repo}       # or {s3: {endpoint: URL, bucket: B, prefix: P,
 *                                            #   access_key_file: F, secret_key_file: F}}
 *     password_file: backups/password        # or password_env: NAME
 *     threads: 0                             # workers of a backup; 0: one per CPU
 *     jobs:
 *       - name: files
 *         paths: [/srv/data]
 *         exclude: ["*.tmp"]
 *         schedule: "0 3 * * *"              # cron: minute hour day-of-month month day-of-week
 *         keep: {last: 3, daily: 7, weekly: 4}   # also hourly, monthly, yearly, within, tags
 *         prune: true                        # after forget (the default when keep is set)
 *         tags: [nightly]
 *       - name: metrics
 *         service: metrics                   # a cairn store, through its /-/snapshot
 *       - name: etcd
 *         etcd: "http://127.0.0.1:2379"      # an etcd cluster, through its v3 snapshot
 */
#include "backup_conf.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#define P(buf, ...) CFG_PATH(buf, __VA_ARGS__)

/* ---- cron ---- */

static const char *const months[] = { "jan", "feb", "mar", "apr", "may", "jun",
                                      "jul", "aug", "sep", "oct", "nov", "dec" };
static const char *const days[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat" };

static int cron_value(const char *s, size_t n, int field, int *out)
{
    if (n == 3 && (field == 3 || field == 4)) {
        const char *const *names = field == 3 ? months : days;
        int cnt = field == 3 ? 12 : 7;
        for (int i = 0; i < cnt; i++)
            if (!strncasecmp(s, names[i], 3)) {
                *out = field == 3 ? i + 1 : i;
                return 0;
            }
        return -1;
    }
    if (!n || n > 2)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int bk_cron_parse(const char *spec, struct bk_cron *c, char *err, size_t errlen)
{
    static const int lo[5] = { 0, 0, 1, 1, 0 }, hi[5] = { 59, 23, 31, 12, 7 };
    static const char *const fields[5] = { "minute", "hour", "day of month", "month", "day of week" };
    static const struct { const char *name, *spec; } macros[] = {
        { "@yearly", "0 0 1 1 *" }, { "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
        { "@weekly", "0 0 * * 0" }, { "@daily", "0 0 * * *" }, { "@midnight", "0 0 * * *" },
        { "@hourly", "0 * * * *" },
    };
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < ARRAY_SIZE(macros); i++)
        if (!strcmp(spec, macros[i].name))
            spec = macros[i].spec;
    const char *p = spec;
    for (int f = 0; f < 5; f++) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = p;
        while (*end && *end != ' ' && *end != '\t')
            end++;
        if (end == p) {
            snprintf(err, errlen, "expected 5 fields (minute hour day-of-month month day-of-week), got %d", f);
            return -EINVAL;
        }
        if (!(end - p == 1 && *p == '*'))
            c->restricted[f] = true;
        /* a list of items: *, N, A-B, each optionally /STEP */
        for (const char *it = p; it < end;) {
            const char *comma = memchr(it, ',', (size_t)(end - it));
            const char *ie = comma ? comma : end;
            const char *slash = memchr(it, '/', (size_t)(ie - it));
            const char *re = slash ? slash : ie;
            int a, b, step = 1;
            if (re - it == 1 && *it == '*') {
                a = lo[f];
                b = f == 4 ? 6 : hi[f];
            } else {
                const char *dash = memchr(it, '-', (size_t)(re - it));
                if (cron_value(it, (size_t)((dash ? dash : re) - it), f, &a) ||
                    (dash && cron_value(dash + 1, (size_t)(re - dash - 1), f, &b))) {
                    snprintf(err, errlen, "%s: \"%.*s\" is not a value", fields[f], (int)(ie - it), it);
                    return -EINVAL;
                }
                if (!dash)
                    b = slash ? hi[f] : a;
            }
            if (slash && (cron_value(slash + 1, (size_t)(ie - slash - 1), 0, &step) || step < 1)) {
                snprintf(err, errlen, "%s: bad step in \"%.*s\"", fields[f], (int)(ie - it), it);
                return -EINVAL;
            }
            if (a < lo[f] || b > hi[f] || a > b) {
                snprintf(err, errlen, "%s: %d-%d is outside %d-%d", fields[f], a, b, lo[f], hi[f]);
                return -EINVAL;
            }
            for (int v = a; v <= b; v += step)
                c->bits[f] |= 1ULL << (f == 4 && v == 7 ? 0 : v);
            it = comma ? comma + 1 : end;
        }
        p = end;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p) {
        snprintf(err, errlen, "more than 5 fields");
        return -EINVAL;
    }
    return 0;
}

bool bk_cron_match(const struct bk_cron *c, const struct tm *tm)
{
    if (!(c->bits[0] >> tm->tm_min & 1) || !(c->bits[1] >> tm->tm_hour & 1) || !(c->bits[3] >> (tm->tm_mon + 1) & 1))
        return false;
    bool dom = c->bits[2] >> tm->tm_mday & 1, dow = c->bits[4] >> tm->tm_wday & 1;
    /* as cron: with both day fields restricted, either one matching is enough */
    if (c->restricted[2] && c->restricted[4])
        return dom || dow;
    return dom && dow;
}

/* ---- keys ---- */

static int parse_keep(struct cfg *c, const cfg_node *map, const char *path, struct bk_keep *k)
{
    static const char *const keys[] = { "last", "hourly", "daily", "weekly", "monthly", "yearly", "within", "tags", NULL };
    cfg_node *v[ARRAY_SIZE(keys)];
    int bad = cfg_map_fields(c, map, path, keys, v);
    int *ints[6] = { &k->last, &k->hourly, &k->daily, &k->weekly, &k->monthly, &k->yearly };
    char p[256];
    long long x;
    for (int i = 0; i < 6; i++) {
        P(p, "%s.%s", path, keys[i]);
        if (v[i] && !(bad |= cfg_get_int(c, v[i], p, -1, 1000000, &x)))
            *ints[i] = (int)x;
    }
    P(p, "%s.within", path);
    if (v[6])
        bad |= cfg_get_duration(c, v[6], p, &k->within_ms);
    P(p, "%s.tags", path);
    if (v[7])
        bad |= cfg_get_string_list(c, v[7], p, &k->tags, &k->ntags);
    return bad ? -EINVAL : 0;
}

static int parse_job(struct cfg *c, const cfg_node *map, const char *path, struct bk_job *j)
{
    static const char *const keys[] = { "name", "paths", "exclude", "schedule", "keep", "prune", "service", "tags",
                                        "etcd", NULL };
    cfg_node *v[ARRAY_SIZE(keys)];
    if (!cfg_is_map(map))
        return cfg_error(c, map, path,
                         "expected a job: {name: N, paths: [...] | service: S | etcd: URL, schedule: CRON, keep: {...}}");
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    P(p, "%s.name", path);
    if (!v[0])
        bad |= cfg_error(c, map, path, "a job needs a name");
    else if (!(bad |= cfg_get_string(c, v[0], p, &j->name))) {
        for (const char *s = j->name; *s; s++)
            if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
                bad |= cfg_error(c, v[0], p, "a job name is letters, digits, '-', '_' and '.'");
    }
    P(p, "%s.paths", path);
    if (v[1])
        bad |= cfg_get_string_list(c, v[1], p, &j->paths, &j->npaths);
    P(p, "%s.exclude", path);
    if (v[2])
        bad |= cfg_get_string_list(c, v[2], p, &j->exclude, &j->nexclude);
    P(p, "%s.schedule", path);
    if (v[3] && !(bad |= cfg_get_string(c, v[3], p, &j->schedule))) {
        char err[200];
        if (bk_cron_parse(j->schedule, &j->cron, err, sizeof(err)))
            bad |= cfg_error(c, v[3], p, "%s", err);
    }
    P(p, "%s.keep", path);
    if (v[4])
        bad |= parse_keep(c, v[4], p, &j->keep);
    j->prune = !bk_keep_empty(&j->keep);
    P(p, "%s.prune", path);
    if (v[5])
        bad |= cfg_get_bool(c, v[5], p, &j->prune);
    P(p, "%s.service", path);
    if (v[6])
        bad |= cfg_get_string(c, v[6], p, &j->service);
    P(p, "%s.tags", path);
    if (v[7])
        bad |= cfg_get_string_list(c, v[7], p, &j->tags, &j->ntags);
    for (size_t i = 0; i < j->ntags; i++)
        if (strchr(j->tags[i], ','))
            bad |= cfg_error(c, v[7], p, "a tag cannot contain a comma (restic splits tags on commas)");
    P(p, "%s.etcd", path);
    if (v[8] && !(bad |= stack_url(c, v[8], p, &j->etcd))) {
        j->has_etcd = true;
        if (j->etcd.tls)
            bad |= cfg_error(c, v[8], p, "https to etcd is not supported yet: give its http:// client URL");
    }
    if (!bad && (j->npaths > 0) + (j->service != NULL) + j->has_etcd != 1)
        bad |= cfg_error(c, map, path, "a job backs up paths:, a service: or an etcd: cluster, one of them");
    return bad ? -EINVAL : 0;
}

static int parse_repo(struct cfg *c, const cfg_node *map, const char *path, struct service *svc,
                      struct bk_repo_conf *rc)
{
    static const char *const keys[] = { "path", "s3", NULL };
    cfg_node *v[ARRAY_SIZE(keys)];
    if (!cfg_is_map(map))
        return cfg_error(c, map, path, "expected {path: DIR} or {s3: {endpoint: URL, bucket: B, ...}}");
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    if (!v[0] == !v[1])
        return bad | cfg_error(c, map, path, "a repository is a path: or an s3: bucket, one of the two");
    if (v[0]) {
        char *s = NULL;
        P(p, "%s.path", path);
        if (!(bad |= cfg_get_string(c, v[0], p, &s))) {
            rc->path = stack_path(svc->stack, s);
            if (!rc->path)
                bad = -ENOMEM;
        }
        free(s);
    } else {
        P(p, "%s.s3", path);
        rc->is_s3 = true;
        bad |= s3c_conf_parse(c, v[1], p, svc->stack, &rc->s3);
    }
    return bad ? -EINVAL : 0;
}

int backup__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    struct backup_conf *bc = calloc(1, sizeof(*bc));
    if (!bc)
        return -ENOMEM;
    svc->conf = bc;
    static const char *const keys[] = { "role", "listen", "repository", "password_file", "password_env", "password",
                                        "jobs", "threads", NULL };
    cfg_node *v[ARRAY_SIZE(keys)];
    int bad = cfg_map_fields(c, map, path, keys, v);
    char p[256];
    P(p, "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, bc->addrs, BK_MAX_LISTEN, &bc->naddrs, "http", "http",
                                "127.0.0.1:9095", false);
    P(p, "%s.repository", path);
    if (!v[2])
        bad |= cfg_error(c, map, path, "a backup service needs a repository: {path: DIR} or {s3: {...}}");
    else
        bad |= parse_repo(c, v[2], p, svc, &bc->repo);
    /* the password is read when the repository is opened (a password file may be
     * made then: see backup__password) */
    if (!!v[3] + !!v[4] + !!v[5] != 1)
        bad |= cfg_error(c, map, path, "give exactly one of password_file, password_env, password");
    P(p, "%s.password_file", path);
    char *s = NULL;
    if (v[3] && !(bad |= cfg_get_string(c, v[3], p, &s)) && !(bc->password_file = stack_path(svc->stack, s)))
        bad = -ENOMEM;
    free(s);
    P(p, "%s.password_env", path);
    if (v[4])
        bad |= cfg_get_string(c, v[4], p, &bc->password_env);
    P(p, "%s.password", path);
    if (v[5])
        bad |= cfg_get_string(c, v[5], p, &bc->password);
    P(p, "%s.jobs", path);
    if (v[6]) {
        if (!cfg_is_seq(v[6])) {
            bad |= cfg_error(c, v[6], p, "expected a list of jobs");
        } else {
            bc->njobs = cfg_len(v[6]);
            bc->jobs = calloc(bc->njobs ? bc->njobs : 1, sizeof(*bc->jobs));
            if (!bc->jobs)
                return -ENOMEM;
            for (size_t i = 0; i < bc->njobs; i++) {
                P(p, "%s.jobs[%zu]", path, i);
                bad |= parse_job(c, cfg_seq_item(c, v[6], i), p, &bc->jobs[i]);
                for (size_t k = 0; k < i && !bad; k++)
                    if (bc->jobs[i].name && bc->jobs[k].name && !strcmp(bc->jobs[i].name, bc->jobs[k].name))
                        bad |= cfg_error(c, cfg_seq_item(c, v[6], i), p, "two jobs are named %s", bc->jobs[i].name);
            }
        }
    }
    P(p, "%s.threads", path);
    long long t;
    if (v[7] && !(bad |= cfg_get_int(c, v[7], p, 0, 256, &t)))
        bc->threads = (int)t;
    return bad ? -EINVAL : 0;
}

void backup__free_conf(void *conf)
{
    struct backup_conf *bc = conf;
    if (!bc)
        return;
    free(bc->repo.path);
    if (bc->repo.is_s3)
        s3c_conf_free(&bc->repo.s3);
    if (bc->password) {
        memset(bc->password, 0, strlen(bc->password));
        free(bc->password);
    }
    free(bc->password_file);
    free(bc->password_env);
    for (size_t i = 0; i < bc->njobs; i++) {
        struct bk_job *j = &bc->jobs[i];
        free(j->name);
        cfg_free_string_list(j->paths, j->npaths);
        cfg_free_string_list(j->exclude, j->nexclude);
        free(j->schedule);
        cfg_free_string_list(j->keep.tags, j->keep.ntags);
        free(j->service);
        cfg_free_string_list(j->tags, j->ntags);
        if (j->has_etcd)
            stack_url_free(&j->etcd);
    }
    free(bc->jobs);
    free(bc);
}

const struct bk_job *backup__job(const struct backup_conf *bc, const char *name)
{
    for (size_t i = 0; i < bc->njobs; i++)
        if (!strcmp(bc->jobs[i].name, name))
            return &bc->jobs[i];
    return NULL;
}
