/* prom_sd.c - file-based service discovery (file_sd_configs), as Prometheus does it.
 *
 * Each pattern (a path whose last element may hold one `*`) names JSON or YAML
 * files holding a list of target groups: [{targets: ["host:port"], labels: {..}}].
 * Every target gets the group's labels and __meta_filepath. The files are stat()ed
 * every second, so an edit, a new file or a removed one takes effect within about
 * a second (Prometheus watches with inotify and re-reads every refresh_interval;
 * cairn re-reads at refresh_interval too). A file that does not parse is logged
 * and its previous target groups stay, as in Prometheus. When the groups change,
 * the targets are rebuilt as on a reload: unchanged targets keep their state, the
 * series of vanished ones get staleness markers.
 */
#include "prom_internal.h"
#include "log.h"

#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void prom__static_free(struct prom_static *st)
{
    cfg_free_string_list(st->targets, st->ntargets);
    for (size_t i = 0; i < st->nlabels; i++) {
        free((void *)st->labels[i].name);
        free((void *)st->labels[i].value);
    }
    free(st->labels);
}

static void file_free(struct prom_sd_file *f)
{
    for (size_t i = 0; i < f->ngroups; i++)
        prom__static_free(&f->groups[i]);
    free(f->groups);
    free(f->path);
}

void prom__sd_free(struct prom_svc *ps)
{
    loop_timer_stop(&ps->sd_timer);
    for (size_t j = 0; j < ps->nsd; j++) {
        for (size_t i = 0; i < ps->sd[j].nfiles; i++)
            file_free(&ps->sd[j].files[i]);
        free(ps->sd[j].files);
    }
    free(ps->sd);
    ps->sd = NULL;
    ps->nsd = 0;
}

/* Parses one file into target groups; 0, or -EINVAL with the first error in err. */
static int read_groups(const char *path, struct prom_static **out, size_t *nout, char *err,
                       size_t errlen)
{
    struct cfg c;
    struct cfg_errors errs = { 0 };
    memset(&c, 0, sizeof(c));
    *out = NULL;
    *nout = 0;
    int bad = cfg_load_file(&c, path, &errs);
    const cfg_node *root = bad ? NULL : cfg_root(&c);
    if (!bad && root && !cfg_is_null(root) && !cfg_is_seq(root))
        bad = cfg_error(&c, root, "", "expected a list of target groups {targets, labels}");
    size_t n = root && cfg_is_seq(root) ? cfg_len(root) : 0;
    struct prom_static *g = bad ? NULL : calloc(n + 1, sizeof(*g));
    if (!bad && !g)
        bad = -ENOMEM;
    for (size_t i = 0; !bad && i < n; i++) {
        static const char *const keys[] = { "targets", "labels", NULL };
        cfg_node *v[2];
        char p[64];
        CFG_PATH(p, "[%zu]", i);
        struct prom_static *st = &g[(*nout)++];
        if (cfg_map_fields(&c, cfg_seq_item(&c, root, i), p, keys, v)) {
            bad = -EINVAL;
            break;
        }
        if (v[0] && cfg_get_string_list(&c, v[0], p, &st->targets, &st->ntargets)) {
            bad = -EINVAL;
            break;
        }
        for (size_t k = 0; k < st->ntargets; k++) {
            const char *t = st->targets[k];
            const char *colon = strrchr(t, ':');
            if (!colon || colon == t || !colon[1] || strchr(t, '/'))
                bad = cfg_error(&c, v[0], p, "expected host:port, got \"%s\"", t);
        }
        size_t nl = v[1] && cfg_is_map(v[1]) ? cfg_len(v[1]) : 0;
        if (v[1] && !cfg_is_map(v[1]) && !cfg_is_null(v[1]))
            bad = cfg_error(&c, v[1], p, "expected a mapping of label names to values");
        st->labels = calloc(nl + 2, sizeof(*st->labels));
        if (!st->labels) {
            bad = -ENOMEM;
            break;
        }
        for (size_t k = 0; !bad && k < nl; k++) {
            const char *name = cfg_scalar(cfg_map_key(&c, v[1], k));
            char *val = NULL;
            if (!name || !prom_label_name_ok(name)) {
                bad = cfg_error(&c, cfg_map_key(&c, v[1], k), p, "\"%s\" is not a valid label name",
                                name ? name : "");
                break;
            }
            if (cfg_get_string(&c, cfg_map_value(&c, v[1], k), p, &val)) {
                bad = -EINVAL;
                break;
            }
            st->labels[st->nlabels].name = strdup(name);
            st->labels[st->nlabels++].value = val;
        }
        st->labels[st->nlabels].name = strdup("__meta_filepath");
        st->labels[st->nlabels++].value = strdup(path);
    }
    if (bad) {
        snprintf(err, errlen, "%s", errs.n ? errs.msgs[0] : "out of memory");
        for (size_t i = 0; g && i < *nout; i++)
            prom__static_free(&g[i]);
        free(g);
        *nout = 0;
        g = NULL;
    }
    *out = g;
    cfg_free(&c);
    cfg_errors_free(&errs);
    return bad ? -EINVAL : 0;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct prom_sd_file *)a)->path, ((const struct prom_sd_file *)b)->path);
}

bool prom__sd_scan(struct prom_svc *ps, bool force)
{
    const struct prom_conf *pc = ps->conf;
    bool changed = false;
    uint64_t now = loop_now(&ps->loop);
    for (size_t j = 0; j < pc->njobs && j < ps->nsd; j++) {
        const struct prom_job *job = &pc->jobs[j];
        struct prom_sd_job *sj = &ps->sd[j];
        if (!job->nfile_sd)
            continue;
        bool refresh = force || now >= sj->next_refresh_ms;
        if (refresh) {
            uint64_t every = job->file_sd[0].refresh_ms;
            for (size_t k = 1; k < job->nfile_sd; k++)
                if (job->file_sd[k].refresh_ms < every)
                    every = job->file_sd[k].refresh_ms;
            sj->next_refresh_ms = now + (every ? every : 300000);
        }
        for (size_t i = 0; i < sj->nfiles; i++)
            sj->files[i].seen = false;
        for (size_t k = 0; k < job->nfile_sd; k++) {
            for (size_t m = 0; m < job->file_sd[k].nfiles; m++) {
                glob_t gl;
                if (glob(job->file_sd[k].files[m], 0, NULL, &gl) != 0)
                    continue;
                for (size_t g = 0; g < gl.gl_pathc; g++) {
                    const char *path = gl.gl_pathv[g];
                    struct stat st;
                    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                        continue;
                    int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
                    struct prom_sd_file *f = NULL;
                    for (size_t i = 0; i < sj->nfiles && !f; i++)
                        if (!strcmp(sj->files[i].path, path))
                            f = &sj->files[i];
                    if (f && f->seen)
                        continue;           /* two patterns name the same file */
                    if (!f) {
                        struct prom_sd_file *nv = realloc(sj->files, (sj->nfiles + 1) * sizeof(*nv));
                        if (!nv)
                            continue;
                        sj->files = nv;
                        f = &sj->files[sj->nfiles++];
                        memset(f, 0, sizeof(*f));
                        f->path = strdup(path);
                        f->mtime_ns = -1;
                    }
                    f->seen = true;
                    if (!refresh && f->mtime_ns == mt && f->size == (int64_t)st.st_size)
                        continue;
                    f->mtime_ns = mt;
                    f->size = (int64_t)st.st_size;
                    struct prom_static *groups;
                    size_t ng;
                    char err[512];
                    metric_inc(ps->m_sd_reads);
                    if (read_groups(path, &groups, &ng, err, sizeof(err))) {
                        metric_inc(ps->m_sd_failures);
                        log_error("file_sd: cannot read target groups, keeping the previous ones",
                                  "job", job->name, "file", path, "error", err);
                        continue;
                    }
                    bool same = ng == f->ngroups;
                    for (size_t a = 0; same && a < ng; a++) {
                        const struct prom_static *x = &groups[a], *y = &f->groups[a];
                        same = x->ntargets == y->ntargets && x->nlabels == y->nlabels;
                        for (size_t b = 0; same && b < x->ntargets; b++)
                            same = !strcmp(x->targets[b], y->targets[b]);
                        for (size_t b = 0; same && b < x->nlabels; b++)
                            same = !strcmp(x->labels[b].name, y->labels[b].name) &&
                                   !strcmp(x->labels[b].value, y->labels[b].value);
                    }
                    for (size_t a = 0; a < f->ngroups; a++)
                        prom__static_free(&f->groups[a]);
                    free(f->groups);
                    f->groups = groups;
                    f->ngroups = ng;
                    changed |= !same;
                }
                globfree(&gl);
            }
        }
        /* files that are gone take their targets with them */
        for (size_t i = 0; i < sj->nfiles;) {
            if (!sj->files[i].seen) {
                log_info("file_sd: file removed", "job", job->name, "file", sj->files[i].path);
                changed |= sj->files[i].ngroups > 0;
                file_free(&sj->files[i]);
                sj->files[i] = sj->files[--sj->nfiles];
                continue;
            }
            i++;
        }
        if (sj->nfiles > 1)
            qsort(sj->files, sj->nfiles, sizeof(*sj->files), cmp_file);
    }
    return changed;
}

void prom__sd_groups(const struct prom_svc *ps, size_t j, const struct prom_static ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (j >= ps->nsd)
        return;
    const struct prom_sd_job *sj = &ps->sd[j];
    size_t total = 0;
    for (size_t i = 0; i < sj->nfiles; i++)
        total += sj->files[i].ngroups;
    if (!total)
        return;
    const struct prom_static **v = calloc(total, sizeof(*v));
    if (!v)
        return;
    for (size_t i = 0; i < sj->nfiles; i++)
        for (size_t g = 0; g < sj->files[i].ngroups; g++)
            v[(*n)++] = &sj->files[i].groups[g];
    *out = v;
}

static void sd_tick(struct loop_timer *t)
{
    struct prom_svc *ps = t->data;
    if (prom__sd_scan(ps, false)) {
        prom__targets_rebuild(ps);
        log_info("file_sd: targets updated", "targets", log_int((long long)ps->ntargets));
    }
    loop_timer_start(&ps->loop, t, 1000);
}

void prom__sd_start(struct prom_svc *ps)
{
    const struct prom_conf *pc = ps->conf;
    ps->sd = calloc(pc->njobs + 1, sizeof(*ps->sd));
    ps->nsd = ps->sd ? pc->njobs : 0;
    bool any = false;
    for (size_t j = 0; j < pc->njobs; j++)
        any |= pc->jobs[j].nfile_sd > 0;
    prom__sd_scan(ps, true);
    loop_timer_init(&ps->sd_timer, sd_tick, ps);
    if (any)
        loop_timer_start(&ps->loop, &ps->sd_timer, 1000);
}
