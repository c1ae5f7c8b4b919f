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
 * series of vanished ones get staleness markers. dns_sd_configs is below.
 */
#include "prom_internal.h"
#include "core/log.h"

#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <pthread.h>
#include <resolv.h>

static void dns_refresh(struct prom_svc *ps, bool force);

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
        for (size_t i = 0; i < ps->sd[j].ndns; i++)
            prom__static_free(&ps->sd[j].dns[i]);
        free(ps->sd[j].dns);
        for (size_t i = 0; i < ps->sd[j].nk8s; i++)
            prom__static_free(&ps->sd[j].k8s[i]);
        free(ps->sd[j].k8s);
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
            if (!name || !relabel_label_name_ok(name)) {
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
    size_t total = sj->ndns + sj->nk8s;
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
    for (size_t g = 0; g < sj->ndns; g++)
        v[(*n)++] = &sj->dns[g];
    for (size_t g = 0; g < sj->nk8s; g++)
        v[(*n)++] = &sj->k8s[g];
    *out = v;
}

static void sd_tick(struct loop_timer *t)
{
    struct prom_svc *ps = t->data;
    dns_refresh(ps, false);
    prom__k8s_refresh(ps, false);
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
    ps->sd_gen++;
    bool any = false;
    for (size_t j = 0; j < pc->njobs; j++)
        any |= pc->jobs[j].nfile_sd > 0 || pc->jobs[j].ndns_sd > 0 || pc->jobs[j].nk8s_sd > 0;
    prom__sd_scan(ps, true);
    dns_refresh(ps, true);
    prom__k8s_refresh(ps, true);
    loop_timer_init(&ps->sd_timer, sd_tick, ps);
    if (any)
        loop_timer_start(&ps->loop, &ps->sd_timer, 1000);
}

/* ---- dns_sd_configs ----
 *
 * Each job's names are looked up together every refresh_interval by a short-lived
 * thread (libresolv, blocking, 1 s per try, 2 tries); its answer comes back to the
 * loop. As in Prometheus: SRV records give target:port with __meta_dns_srv_record_target
 * and __meta_dns_srv_record_port, A/AAAA records give address:port, MX records give
 * exchange:port with __meta_dns_mx_record_target; every target has __meta_dns_name.
 * A name that does not exist gives no targets; a lookup that fails (timeout,
 * SERVFAIL) keeps the job's previous targets. */

struct dns_job {
    struct prom_svc *ps;
    uint64_t gen;
    size_t job;
    struct prom_dns_sd *cfgs;       /* copies */
    size_t ncfgs;
    bool have_resolver;
    struct net_addr resolver;
    /* result */
    struct prom_static *groups;
    size_t ngroups;
    bool failed;
    char err[256];
};

static void dns_job_free(struct dns_job *dj)
{
    for (size_t i = 0; i < dj->ncfgs; i++)
        cfg_free_string_list(dj->cfgs[i].names, dj->cfgs[i].nnames);
    free(dj->cfgs);
    for (size_t i = 0; i < dj->ngroups; i++)
        prom__static_free(&dj->groups[i]);
    free(dj->groups);
    free(dj);
}

static void add_group(struct dns_job *dj, const char *target, const char *name,
                      const char *l1, const char *v1, const char *l2, const char *v2)
{
    struct prom_static *nv = realloc(dj->groups, (dj->ngroups + 1) * sizeof(*nv));
    if (!nv)
        return;
    dj->groups = nv;
    struct prom_static *g = &dj->groups[dj->ngroups++];
    memset(g, 0, sizeof(*g));
    g->targets = calloc(1, sizeof(char *));
    g->labels = calloc(3, sizeof(*g->labels));
    if (!g->targets || !g->labels)
        return;
    g->targets[0] = strdup(target);
    g->ntargets = 1;
    g->labels[g->nlabels].name = strdup("__meta_dns_name");
    g->labels[g->nlabels++].value = strdup(name);
    if (l1) {
        g->labels[g->nlabels].name = strdup(l1);
        g->labels[g->nlabels++].value = strdup(v1);
    }
    if (l2) {
        g->labels[g->nlabels].name = strdup(l2);
        g->labels[g->nlabels++].value = strdup(v2);
    }
}

static void join_host_port(char *out, size_t n, const char *host, unsigned port)
{
    size_t l = strlen(host);
    if (l && host[l - 1] == '.')
        l--;
    snprintf(out, n, strchr(host, ':') ? "[%.*s]:%u" : "%.*s:%u", (int)l, host, port);
}

static void lookup(struct dns_job *dj, res_state rs, const struct prom_dns_sd *d, const char *name)
{
    unsigned char ans[8192];
    int n = res_nquery(rs, name, ns_c_in, d->type, ans, sizeof(ans));
    if (n < 0) {
        if (h_errno == HOST_NOT_FOUND || h_errno == NO_DATA)
            return;                 /* NXDOMAIN or no such records: no targets */
        dj->failed = true;
        snprintf(dj->err, sizeof(dj->err), "lookup %s failed: %s", name, hstrerror(h_errno));
        return;
    }
    ns_msg msg;
    if (ns_initparse(ans, n, &msg) < 0) {
        dj->failed = true;
        snprintf(dj->err, sizeof(dj->err), "lookup %s: malformed answer", name);
        return;
    }
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        ns_rr rr;
        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 || (int)ns_rr_type(rr) != d->type)
            continue;
        const unsigned char *rd = ns_rr_rdata(rr);
        char host[NS_MAXDNAME], target[NS_MAXDNAME + 16], port[8];
        if (d->type == ns_t_a && ns_rr_rdlen(rr) == 4) {
            inet_ntop(AF_INET, rd, host, sizeof(host));
            join_host_port(target, sizeof(target), host, d->port);
            add_group(dj, target, name, NULL, NULL, NULL, NULL);
        } else if (d->type == ns_t_aaaa && ns_rr_rdlen(rr) == 16) {
            inet_ntop(AF_INET6, rd, host, sizeof(host));
            join_host_port(target, sizeof(target), host, d->port);
            add_group(dj, target, name, NULL, NULL, NULL, NULL);
        } else if (d->type == ns_t_srv && ns_rr_rdlen(rr) > 6) {
            unsigned p = (unsigned)rd[4] << 8 | rd[5];
            if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 6, host, sizeof(host)) < 0)
                continue;
            join_host_port(target, sizeof(target), host, p);
            snprintf(port, sizeof(port), "%u", p);
            char t[NS_MAXDNAME + 2];
            snprintf(t, sizeof(t), "%s.", host);
            add_group(dj, target, name, "__meta_dns_srv_record_target", t,
                      "__meta_dns_srv_record_port", port);
        } else if (d->type == ns_t_mx && ns_rr_rdlen(rr) > 2) {
            if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 2, host, sizeof(host)) < 0)
                continue;
            join_host_port(target, sizeof(target), host, d->port);
            char t[NS_MAXDNAME + 2];
            snprintf(t, sizeof(t), "%s.", host);
            add_group(dj, target, name, "__meta_dns_mx_record_target", t, NULL, NULL);
        }
    }
}

static void dns_done(void *arg)
{
    struct dns_job *dj = arg;
    struct prom_svc *ps = dj->ps;
    ps->sd_threads--;
    if (dj->gen != ps->sd_gen || dj->job >= ps->nsd) {
        dns_job_free(dj);
        return;
    }
    struct prom_sd_job *sj = &ps->sd[dj->job];
    sj->dns_running = false;
    metric_inc(ps->m_dns_lookups);
    if (dj->failed) {
        metric_inc(ps->m_dns_failures);
        log_error("dns_sd: lookup failed, keeping the previous targets", "job",
                  ps->conf->jobs[dj->job].name, "error", dj->err);
        dns_job_free(dj);
        return;
    }
    bool same = dj->ngroups == sj->ndns;
    for (size_t i = 0; same && i < dj->ngroups; i++) {
        const struct prom_static *x = &dj->groups[i], *y = &sj->dns[i];
        same = x->nlabels == y->nlabels && !strcmp(x->targets[0], y->targets[0]);
        for (size_t k = 0; same && k < x->nlabels; k++)
            same = !strcmp(x->labels[k].value, y->labels[k].value);
    }
    if (!same) {
        for (size_t i = 0; i < sj->ndns; i++)
            prom__static_free(&sj->dns[i]);
        free(sj->dns);
        sj->dns = dj->groups;
        sj->ndns = dj->ngroups;
        dj->groups = NULL;
        dj->ngroups = 0;
        prom__targets_rebuild(ps);
        log_info("dns_sd: targets updated", "job", ps->conf->jobs[dj->job].name, "targets",
                 log_int((long long)sj->ndns));
    }
    dns_job_free(dj);
}

static void *dns_thread(void *arg)
{
    struct dns_job *dj = arg;
    struct __res_state rs;
    memset(&rs, 0, sizeof(rs));
    if (res_ninit(&rs) < 0) {
        dj->failed = true;
        snprintf(dj->err, sizeof(dj->err), "res_ninit failed");
    } else {
        if (dj->have_resolver) {
            rs.nscount = 1;
            memcpy(&rs.nsaddr_list[0], &dj->resolver.ss, sizeof(struct sockaddr_in));
        }
        rs.retrans = 1;
        rs.retry = 2;
        for (size_t c = 0; c < dj->ncfgs && !dj->failed; c++)
            for (size_t i = 0; i < dj->cfgs[c].nnames && !dj->failed; i++)
                lookup(dj, &rs, &dj->cfgs[c], dj->cfgs[c].names[i]);
        res_nclose(&rs);
    }
    if (loop_post(&dj->ps->loop, dns_done, dj))
        log_error("dns_sd: cannot hand the answer back to the loop");
    return NULL;
}

/* Starts the lookups of jobs whose refresh is due. */
static void dns_refresh(struct prom_svc *ps, bool force)
{
    const struct prom_conf *pc = ps->conf;
    uint64_t now = loop_now(&ps->loop);
    for (size_t j = 0; j < pc->njobs && j < ps->nsd; j++) {
        const struct prom_job *job = &pc->jobs[j];
        struct prom_sd_job *sj = &ps->sd[j];
        if (!job->ndns_sd || sj->dns_running || (!force && now < sj->dns_next_ms))
            continue;
        uint64_t every = job->dns_sd[0].refresh_ms;
        for (size_t k = 1; k < job->ndns_sd; k++)
            if (job->dns_sd[k].refresh_ms < every)
                every = job->dns_sd[k].refresh_ms;
        sj->dns_next_ms = now + (every ? every : 30000);
        struct dns_job *dj = calloc(1, sizeof(*dj));
        if (!dj)
            continue;
        dj->ps = ps;
        dj->gen = ps->sd_gen;
        dj->job = j;
        dj->have_resolver = pc->have_resolver;
        dj->resolver = pc->resolver;
        dj->cfgs = calloc(job->ndns_sd, sizeof(*dj->cfgs));
        bool ok = dj->cfgs != NULL;
        for (size_t k = 0; ok && k < job->ndns_sd; k++) {
            dj->cfgs[k] = job->dns_sd[k];
            dj->cfgs[k].names = calloc(job->dns_sd[k].nnames + 1, sizeof(char *));
            dj->cfgs[k].nnames = 0;
            dj->ncfgs++;
            ok = dj->cfgs[k].names != NULL;
            for (size_t m = 0; ok && m < job->dns_sd[k].nnames; m++)
                ok = (dj->cfgs[k].names[dj->cfgs[k].nnames++] = strdup(job->dns_sd[k].names[m])) != NULL;
        }
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (!ok || pthread_create(&th, &at, dns_thread, dj)) {
            dns_job_free(dj);
        } else {
            sj->dns_running = true;
            ps->sd_threads++;
        }
        pthread_attr_destroy(&at);
    }
}
