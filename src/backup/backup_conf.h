/* backup_conf.h - the backup role's configuration and the job runner shared by
 * the service (bk_main.c) and the commands (bk_cmd.c). */
#ifndef CAIRN_BACKUP_CONF_H
#define CAIRN_BACKUP_CONF_H

#include "backup_internal.h"
#include "core/net.h"

#include <time.h>

#define BK_MAX_LISTEN 4

struct bk_cron {
    uint64_t bits[5];                   /* minute, hour, day of month, month, day of week */
    bool restricted[5];
};
int bk_cron_parse(const char *spec, struct bk_cron *c, char *err, size_t errlen);
bool bk_cron_match(const struct bk_cron *c, const struct tm *tm);

struct bk_job {
    char *name;
    char **paths, **exclude, **tags;
    size_t npaths, nexclude, ntags;
    char *schedule;                     /* NULL: run only when asked */
    struct bk_cron cron;
    struct bk_keep keep;
    bool prune;
    char *service;                      /* a cairn store instead of paths */
    struct stack_url etcd;              /* ... or an etcd cluster's client URL */
    bool has_etcd;
};

struct backup_conf {
    struct net_addr addrs[BK_MAX_LISTEN];
    size_t naddrs;
    struct bk_repo_conf repo;
    char *password, *password_file, *password_env;     /* one of the three */
    struct bk_job *jobs;
    size_t njobs;
    int threads;
};

int backup__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void backup__free_conf(void *conf);
const struct bk_job *backup__job(const struct backup_conf *bc, const char *name);

/* The repository password (malloc'd): from the file, the environment or the stack
 * file. With create and a password file that does not exist, a random password
 * is written to it (mode 0600) for a repository about to be made. */
char *backup__password(const struct backup_conf *bc, bool create, char *err, size_t errlen);
/* Opens the service's repository, creating it on first use as restic init would.
 * Returns 0, or an error code with why in err. */
int backup__open_repo(const struct service *svc, struct bk_repo *r, bool create, char *err, size_t errlen);

/* One run of a job: backup (of its paths, or of a store through its snapshot),
 * then forget and prune when it has a policy. log: progress lines, or NULL. */
struct bk_run {
    bool ok;
    char snapshot[65];
    struct bk_stats st;
    double seconds;
    char err[512];
};
int backup__run_job(const struct service *svc, const struct bk_job *job, bool quiet, const int *cancel,
                    struct bk_run *out);

#endif
