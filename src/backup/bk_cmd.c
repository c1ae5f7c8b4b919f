/* bk_cmd.c - the commands on a stack file's backup repository:
 *
 *   cairn backup    -c FILE JOB                      run one job now
 *   cairn snapshots -c FILE [--json]                 list snapshots
 *   cairn restore   -c FILE SNAPSHOT --target DIR    restore (SNAPSHOT: id prefix or latest)
 *   cairn restore   -c FILE [SNAPSHOT] --service NAME   put a store back in place
 *   cairn repo check  -c FILE [--read-data]
 *   cairn repo forget -c FILE [--keep-last N ...] [--job JOB] [--prune]
 *   cairn repo prune  -c FILE
 *   cairn repo init   -c FILE
 *   cairn repo unlock -c FILE                        remove stale locks
 *
 * With several backup services in the file, --backup NAME says which. They work
 * whether or not the service runs: the repository's locks keep them apart.
 */
#include "backup.h"
#include "backup_conf.h"
#include "core/fileio.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_USAGE 2

struct cmdopts {
    const char *config, *backup, *target, *service, *job;
    bool json, read_data, prune, quiet;
    struct bk_keep keep;
    char *keep_tags[16];
    char *args[8];
    int nargs;
};

static int usage_err(const char *cmd, const char *msg, const char *arg)
{
    fprintf(stderr, "cairn %s: %s%s%s (try: cairn help %s)\n", cmd, msg, arg ? " " : "", arg ? arg : "", cmd);
    return EXIT_USAGE;
}

static int int_arg(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < -1 || v > 1000000)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse(const char *cmd, int argc, char **argv, struct cmdopts *o)
{
    memset(o, 0, sizeof(*o));
    o->keep.tags = o->keep_tags;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VAL() do { if (!v) return usage_err(cmd, "missing a value after", a); i++; } while (0)
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            VAL();
            o->config = v;
        } else if (!strncmp(a, "--config=", 9)) {
            o->config = a + 9;
        } else if (!strcmp(a, "--backup")) {
            VAL();
            o->backup = v;
        } else if (!strcmp(a, "--target")) {
            VAL();
            o->target = v;
        } else if (!strcmp(a, "--service")) {
            VAL();
            o->service = v;
        } else if (!strcmp(a, "--job")) {
            VAL();
            o->job = v;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--read-data")) {
            o->read_data = true;
        } else if (!strcmp(a, "--prune")) {
            o->prune = true;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = true;
        } else if (!strncmp(a, "--keep-", 7)) {
            VAL();
            const char *k = a + 7;
            int *dst = !strcmp(k, "last") ? &o->keep.last : !strcmp(k, "hourly") ? &o->keep.hourly
                     : !strcmp(k, "daily") ? &o->keep.daily : !strcmp(k, "weekly") ? &o->keep.weekly
                     : !strcmp(k, "monthly") ? &o->keep.monthly : !strcmp(k, "yearly") ? &o->keep.yearly : NULL;
            if (dst) {
                if (int_arg(v, dst))
                    return usage_err(cmd, "expected a count after", a);
            } else if (!strcmp(k, "within")) {
                if (cfg_parse_duration(v, &o->keep.within_ms))
                    return usage_err(cmd, "expected a duration (7d, 12h) after", a);
            } else if (!strcmp(k, "tag")) {
                if (o->keep.ntags == ARRAY_SIZE(o->keep_tags))
                    return usage_err(cmd, "too many", a);
                o->keep_tags[o->keep.ntags++] = (char *)v;
            } else {
                return usage_err(cmd, "unknown option", a);
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            return -1;
        } else if (a[0] == '-' && a[1]) {
            return usage_err(cmd, "unknown option", a);
        } else {
            if (o->nargs == (int)ARRAY_SIZE(o->args))
                return usage_err(cmd, "too many arguments", NULL);
            o->args[o->nargs++] = argv[i];
        }
#undef VAL
    }
    return 0;
}

/* the stack and its backup service */
static int load(const char *cmd, const struct cmdopts *o, const struct role_ops *const *roles, struct stack *st,
                const struct service **svc)
{
    struct cfg_errors errs = { 0 };
    if (!o->config) {
        fprintf(stderr, "cairn %s: needs -c FILE (the stack file whose backup service holds the repository)\n", cmd);
        return EXIT_USAGE;
    }
    if (stack_load(st, o->config, NULL, roles, &errs)) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        cfg_errors_free(&errs);
        stack_free(st);
        return EXIT_USAGE;
    }
    cfg_errors_free(&errs);
    log_setup(st->log_level, st->log_format);
    *svc = NULL;
    size_t n = 0;
    for (size_t i = 0; i < st->nservices; i++) {
        if (st->services[i].role != &backup_role)
            continue;
        if (o->backup ? !strcmp(st->services[i].name, o->backup) : !n)
            *svc = &st->services[i];
        n++;
    }
    if (!*svc) {
        if (o->backup)
            fprintf(stderr, "cairn %s: no backup service named %s in %s\n", cmd, o->backup, o->config);
        else
            fprintf(stderr, "cairn %s: %s has no service with role: backup\n", cmd, o->config);
        stack_free(st);
        return EXIT_USAGE;
    }
    if (n > 1 && !o->backup) {
        fprintf(stderr, "cairn %s: %s has %zu backup services: say which with --backup NAME\n", cmd, o->config, n);
        stack_free(st);
        return EXIT_USAGE;
    }
    return 0;
}

static int cmd_backup(const struct service *svc, const struct cmdopts *o)
{
    if (o->nargs != 1) {
        fprintf(stderr, "cairn backup: expected one JOB (usage: cairn backup -c FILE JOB)\n");
        return EXIT_USAGE;
    }
    const struct backup_conf *bc = svc->conf;
    const struct bk_job *job = backup__job(bc, o->args[0]);
    if (!job) {
        fprintf(stderr, "cairn backup: no job named %s (jobs:", o->args[0]);
        for (size_t i = 0; i < bc->njobs; i++)
            fprintf(stderr, " %s", bc->jobs[i].name);
        fprintf(stderr, ")\n");
        return EXIT_USAGE;
    }
    struct bk_run run;
    int e = backup__run_job(svc, job, o->quiet, NULL, &run);
    if (e && !run.snapshot[0]) {
        fprintf(stderr, "cairn backup: %s\n", run.err);
        return 1;
    }
    char added[32], stored[32];
    bk_fmt_bytes((double)run.st.bytes_added, added, sizeof(added));
    bk_fmt_bytes((double)run.st.bytes_stored, stored, sizeof(stored));
    if (!o->quiet)
        printf("Files: %llu new, %llu changed, %llu unmodified\nAdded to the repository: %s (%s stored)\n"
               "snapshot %.8s saved in %.2fs\n",
               (unsigned long long)run.st.files_new, (unsigned long long)run.st.files_changed,
               (unsigned long long)run.st.files_unmodified, added, stored, run.snapshot, run.seconds);
    if (e) {
        fprintf(stderr, "cairn backup: %s\n", run.err);
        return 1;
    }
    if (run.st.errors) {
        fprintf(stderr, "cairn backup: snapshot %.8s saved, but %llu files or directories could not be read\n",
                run.snapshot, (unsigned long long)run.st.errors);
        return 1;
    }
    return 0;
}

static int cmd_snapshots(struct bk_repo *r, const struct cmdopts *o)
{
    struct bk_snapshot *s;
    size_t n;
    char err[512];
    if (bk_snapshots_load(r, &s, &n, err, sizeof(err))) {
        fprintf(stderr, "cairn snapshots: %s\n", err);
        return 1;
    }
    if (o->json) {
        /* restic's snapshots --json: each document with its id and short_id */
        struct buf b = BUF_INIT;
        buf_putc(&b, '[');
        for (size_t i = 0; i < n; i++) {
            const char *j = s[i].json;
            size_t l = strlen(j);
            while (l && (j[l - 1] == '\n' || j[l - 1] == ' '))
                l--;
            if (l && j[l - 1] == '}')
                l--;
            buf_puts(&b, i ? "," : "");
            buf_append(&b, j, l);
            buf_printf(&b, ",\"id\":\"%s\",\"short_id\":\"%.8s\"}", s[i].name, s[i].name);
        }
        buf_puts(&b, "]\n");
        fwrite(buf_head(&b), 1, buf_used(&b), stdout);
        buf_free(&b);
    } else {
        printf("%-8s  %-19s  %-16s  %-30s  %s\n", "ID", "Time", "Host", "Tags", "Paths");
        for (size_t i = 0; i < n; i++) {
            char t[32], tags[256] = "";
            time_t sec = (time_t)(s[i].time_ns / 1000000000);
            struct tm tm;
            localtime_r(&sec, &tm);
            strftime(t, sizeof(t), "%Y-%m-%d %H:%M:%S", &tm);
            for (size_t k = 0; k < s[i].ntags; k++) {
                size_t l = strlen(tags);
                snprintf(tags + l, sizeof(tags) - l, "%s%s", k ? "," : "", s[i].tags[k]);
            }
            printf("%.8s  %s  %-16s  %-30s  %s\n", s[i].name, t, s[i].hostname ? s[i].hostname : "", tags,
                   s[i].npaths ? s[i].paths[0] : "");
            for (size_t k = 1; k < s[i].npaths; k++)
                printf("%*s%s\n", 8 + 2 + 19 + 2 + 16 + 2 + 30 + 2, "", s[i].paths[k]);
        }
        printf("%zu snapshot%s\n", n, n == 1 ? "" : "s");
    }
    bk_snapshots_free(s, n);
    return 0;
}

static bool dir_empty(const char *p)
{
    struct stat sb;
    if (stat(p, &sb) < 0)
        return true;
    DIR *d = opendir(p);
    struct dirent *de;
    bool empty = true;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            empty = false;
    if (d)
        closedir(d);
    return empty;
}

static int cmd_restore(struct bk_repo *r, const struct service *svc, const struct cmdopts *o)
{
    if (o->nargs > 1 || (!o->target == !o->service) || (o->target && o->nargs != 1)) {
        fprintf(stderr, "cairn restore: usage: cairn restore -c FILE SNAPSHOT --target DIR, or "
                        "cairn restore -c FILE [SNAPSHOT] --service NAME\n");
        return EXIT_USAGE;
    }
    struct bk_snapshot *s;
    size_t n;
    char err[512];
    if (bk_snapshots_load(r, &s, &n, err, sizeof(err))) {
        fprintf(stderr, "cairn restore: %s\n", err);
        return 1;
    }
    int code = 1;
    const struct bk_snapshot *sn = NULL;
    const struct service *store = NULL;
    char *data = NULL, tmp[PATH_MAX + 32] = "";
    if (o->service) {
        store = stack_find(svc->stack, o->service);
        if (!store || !store->role->data_dir) {
            fprintf(stderr, "cairn restore: %s is not a service with a store in %s\n", o->service, svc->stack->file);
            code = EXIT_USAGE;
            goto out;
        }
        char want[160];
        snprintf(want, sizeof(want), "service=%s", o->service);
        const char *which = o->nargs ? o->args[0] : "latest";
        for (size_t i = n; i-- > 0 && !sn;)
            if (bk_snapshot_has_tag(&s[i], want) && (!strcmp(which, "latest") || !strncmp(s[i].name, which, strlen(which))))
                sn = &s[i];
        if (!sn) {
            fprintf(stderr, "cairn restore: no snapshot %s of service %s\n", which, o->service);
            goto out;
        }
        data = store->role->data_dir(store);
        if (!data || !dir_empty(data)) {
            fprintf(stderr, "cairn restore: the data directory %s of %s is not empty: stop the service and move it "
                            "aside first (a restore never overwrites a store)\n", data ? data : "?", o->service);
            goto out;
        }
        snprintf(tmp, sizeof(tmp), "%s.restore-%d", data, (int)getpid());
    } else {
        sn = bk_snapshot_find(s, n, o->args[0], err, sizeof(err));
        if (!sn) {
            fprintf(stderr, "cairn restore: %s\n", err);
            goto out;
        }
    }
    struct bk_restore_opts ro = { .target = o->service ? tmp : o->target, .quiet = o->quiet };
    struct bk_restore_result res;
    int e = bk_restore(r, sn, &ro, &res, err, sizeof(err));
    if (e) {
        fprintf(stderr, "cairn restore: %s\n", err);
        goto out;
    }
    if (o->service) {
        /* the store's frozen copy sits at its original path under tmp: move it into place */
        char from[PATH_MAX * 2];
        snprintf(from, sizeof(from), "%s%s", tmp, sn->npaths ? sn->paths[0] : "");
        rmdir(data);
        char *parent = strdup(data);
        char *slash = parent ? strrchr(parent, '/') : NULL;
        if (slash && slash != parent) {
            *slash = 0;
            cairn_mkdir_p(parent, 0755);
        }
        free(parent);
        if (rename(from, data) < 0) {
            fprintf(stderr, "cairn restore: moving %s to %s: %s\n", from, data, cairn_strerror(-errno));
            goto out;
        }
        cairn_remove_tree(tmp);
        tmp[0] = 0;
    }
    if (!o->quiet)
        printf("restored snapshot %.8s: %llu files, %llu directories, %.1f MiB in %.2fs to %s\n", sn->name,
               (unsigned long long)res.files, (unsigned long long)res.dirs, (double)res.bytes / 1048576, res.seconds,
               o->service ? data : o->target);
    code = res.errors ? 1 : 0;
out:
    if (tmp[0])
        cairn_remove_tree(tmp);
    free(data);
    bk_snapshots_free(s, n);
    return code;
}

static int cmd_repo(struct bk_repo *r, const struct cmdopts *o, const char *sub)
{
    char err[512];
    int e;
    if (!strcmp(sub, "check")) {
        if ((e = bk_lock(r, false, err, sizeof(err))) || (e = bk_lock_verify(r, err, sizeof(err)))) {
            fprintf(stderr, "cairn repo check: %s\n", err);
            return 1;
        }
        int errors = bk_check(r, o->read_data, stdout);
        bk_unlock(r);
        return errors ? 1 : 0;
    }
    if (!strcmp(sub, "forget") || !strcmp(sub, "prune")) {
        bool forget = !strcmp(sub, "forget");
        if (forget && bk_keep_empty(&o->keep)) {
            fprintf(stderr, "cairn repo forget: no policy given (--keep-last N, --keep-daily N, ...): nothing would be kept\n");
            return EXIT_USAGE;
        }
        if ((e = bk_lock(r, true, err, sizeof(err)))) {
            fprintf(stderr, "cairn repo %s: %s\n", sub, err);
            return 1;
        }
        char tj[160];
        const char *g[1];
        size_t ng = 0;
        if (o->job) {
            snprintf(tj, sizeof(tj), "job=%s", o->job);
            g[ng++] = tj;
        }
        e = forget ? bk_forget(r, &o->keep, g, ng, o->prune, stdout, err, sizeof(err)) : bk_prune(r, stdout, err, sizeof(err));
        bk_unlock(r);
        if (e) {
            fprintf(stderr, "cairn repo %s: %s\n", sub, err);
            return 1;
        }
        return 0;
    }
    if (!strcmp(sub, "unlock")) {
        char **names;
        size_t n, removed = 0;
        /* the lock scan treats stale locks as absent; taking and dropping an
         * exclusive lock proves none is live, then every lock file goes */
        if ((e = bk_lock(r, true, err, sizeof(err)))) {
            fprintf(stderr, "cairn repo unlock: %s\n", err);
            return 1;
        }
        bk_unlock(r);
        if (!bk_list_names(r, BK_LOCK, &names, &n)) {
            for (size_t i = 0; i < n; i++) {
                if (!r->be->ops->remove(r->be, BK_LOCK, names[i]))
                    removed++;
                free(names[i]);
            }
            free(names);
        }
        printf("removed %zu stale lock%s\n", removed, removed == 1 ? "" : "s");
        return 0;
    }
    fprintf(stderr, "cairn repo: unknown subcommand %s (check, forget, prune, init, unlock)\n", sub);
    return EXIT_USAGE;
}

int backup_cmd(const char *cmd, int argc, char **argv, const struct role_ops *const *roles)
{
    const char *sub = NULL;
    if (!strcmp(cmd, "repo")) {
        if (argc < 1 || argv[0][0] == '-') {
            fprintf(stderr, "cairn repo: expected a subcommand: check, forget, prune, init, unlock\n");
            return EXIT_USAGE;
        }
        sub = argv[0];
        argc--;
        argv++;
    }
    struct cmdopts o;
    int r = parse(cmd, argc, argv, &o);
    if (r)
        return r < 0 ? -1 : r;
    if (sub && o.nargs) {
        fprintf(stderr, "cairn repo %s: unexpected argument %s\n", sub, o.args[0]);
        return EXIT_USAGE;
    }
    struct stack st;
    const struct service *svc;
    if ((r = load(cmd, &o, roles, &st, &svc)))
        return r;
    if (!strcmp(cmd, "backup")) {
        r = cmd_backup(svc, &o);
        stack_free(&st);
        return r;
    }
    struct bk_repo repo;
    char err[512];
    bool init = sub && !strcmp(sub, "init");
    int e = backup__open_repo(svc, &repo, init, err, sizeof(err));
    if (init) {
        if (e)
            fprintf(stderr, "cairn repo init: %s\n", err);
        else
            printf("repository %s at %s ready\n", repo.id, repo.be->desc);
        if (!e)
            bk_repo_close(&repo);
        stack_free(&st);
        return e ? 1 : 0;
    }
    if (e) {
        fprintf(stderr, "cairn %s: %s\n", cmd, err);
        stack_free(&st);
        return 1;
    }
    if ((e = bk_index_load(&repo, err, sizeof(err)))) {
        fprintf(stderr, "cairn %s: %s\n", cmd, err);
        r = 1;
    } else if (!strcmp(cmd, "snapshots")) {
        r = cmd_snapshots(&repo, &o);
    } else if (!strcmp(cmd, "restore")) {
        if ((e = bk_lock(&repo, false, err, sizeof(err))) || (e = bk_lock_verify(&repo, err, sizeof(err)))) {
            fprintf(stderr, "cairn restore: %s\n", err);
            r = 1;
        } else {
            r = cmd_restore(&repo, svc, &o);
        }
    } else {
        r = cmd_repo(&repo, &o, sub);
    }
    bk_repo_close(&repo);
    stack_free(&st);
    return r;
}
