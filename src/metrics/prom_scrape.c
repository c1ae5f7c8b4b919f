/* prom_scrape.c - scraping targets into the TSDB, as Prometheus does.
 *
 * Each target is scraped every interval (the first at an offset spread over the
 * interval by a hash of its URL) with a GET bounded by the timeout. The body is
 * parsed (gzip undone) and every sample is appended at the scrape's start time
 * (or its own timestamp with honor_timestamps) under the target's labels: job,
 * instance and the static labels; a sample's own label of the same name is kept
 * as exported_<name> unless honor_labels. A scrape that fails to parse or
 * exceeds sample_limit stores none of its samples. Series that were in the
 * previous scrape and are not in this one (or all of them, when the scrape
 * fails) get Prometheus's staleness marker. Every scrape also records up,
 * scrape_duration_seconds, scrape_samples_scraped,
 * scrape_samples_post_metric_relabeling and scrape_series_added.
 */
#include "prom_internal.h"
#include "core/log.h"
#include "prom_text.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

int64_t prom__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ---- the per-target series cache ---- */

static struct prom_cache_entry *cache_find(struct prom_target *t, const char *key, size_t len,
                                           uint64_t h, bool insert)
{
    if (insert && (t->cacheused + 1) * 2 > t->cachesize) {
        size_t ns = t->cachesize ? t->cachesize * 2 : 256;
        struct prom_cache_entry *nc = calloc(ns, sizeof(*nc));
        if (!nc)
            return NULL;
        for (size_t i = 0; i < t->cachesize; i++) {
            struct prom_cache_entry *e = &t->cache[i];
            if (!e->key)
                continue;
            size_t j = e->hash & (ns - 1);
            while (nc[j].key)
                j = (j + 1) & (ns - 1);
            nc[j] = *e;
        }
        free(t->cache);
        t->cache = nc;
        t->cachesize = ns;
    }
    if (!t->cachesize)
        return NULL;
    size_t j = h & (t->cachesize - 1);
    while (t->cache[j].key) {
        struct prom_cache_entry *e = &t->cache[j];
        if (e->hash == h && e->keylen == len && memcmp(e->key, key, len) == 0)
            return e;
        j = (j + 1) & (t->cachesize - 1);
    }
    if (!insert)
        return NULL;
    struct prom_cache_entry *e = &t->cache[j];
    e->key = malloc(len ? len : 1);
    if (!e->key)
        return NULL;
    memcpy(e->key, key, len);
    e->keylen = (uint32_t)len;
    e->hash = h;
    e->s = NULL;
    e->seen = 0;
    t->cacheused++;
    return e;
}

/* Removes entries not seen in the current epoch, marking their series stale. */
static void cache_sweep(struct prom_target *t, int64_t ts, bool all)
{
    struct prom_svc *ps = t->ps;
    size_t n = t->cachesize;
    if (!n)
        return;
    struct prom_cache_entry *old = t->cache;
    struct prom_cache_entry *keep = calloc(n, sizeof(*keep));
    if (!keep)
        return;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        struct prom_cache_entry *e = &old[i];
        if (!e->key)
            continue;
        if (!all && e->seen == t->epoch) {
            size_t j = e->hash & (n - 1);
            while (keep[j].key)
                j = (j + 1) & (n - 1);
            keep[j] = *e;
            used++;
            continue;
        }
        if (e->s && e->s->has_last && !tsdb_is_stale(e->s->last_v) && e->s->last_t < ts)
            tsdb_append(&ps->db, e->s, ts, tsdb_stale_nan());
        tsdb_unpin(e->s);
        free(e->key);
    }
    free(old);
    t->cache = keep;
    t->cacheused = used;
}

/* ---- one scrape ---- */

struct pending {
    struct tsdb_series *s;
    int64_t t;
    double v;
};

struct scrape_ctx {
    struct prom_target *t;
    char *mname, *mtype, *mhelp, *munit;   /* the family whose comments are being read */
    struct pending *p;
    size_t np, capp;
    uint64_t scraped;
    uint64_t kept;
    uint64_t added;
    bool over_limit;
    bool nomem;
};


/* ---- metadata ---- */

static uint64_t hash_str(const char *s)
{
    return hash_bytes(s, strlen(s));
}

static void meta_put(struct prom_svc *ps, const char *name, const char *type, const char *help,
                     const char *unit)
{
    if ((ps->metaused + 1) * 2 > ps->metasize) {
        if (ps->metaused >= PROM_META_MAX_NAMES)
            return;
        size_t ns = ps->metasize ? ps->metasize * 2 : 1024;
        struct prom_meta_entry *nm = calloc(ns, sizeof(*nm));
        if (!nm)
            return;
        for (size_t i = 0; i < ps->metasize; i++) {
            if (!ps->meta[i].name)
                continue;
            size_t j = hash_str(ps->meta[i].name) & (ns - 1);
            while (nm[j].name)
                j = (j + 1) & (ns - 1);
            nm[j] = ps->meta[i];
        }
        free(ps->meta);
        ps->meta = nm;
        ps->metasize = ns;
    }
    size_t j = hash_str(name) & (ps->metasize - 1);
    while (ps->meta[j].name && strcmp(ps->meta[j].name, name) != 0)
        j = (j + 1) & (ps->metasize - 1);
    struct prom_meta_entry *e = &ps->meta[j];
    if (!e->name) {
        if (!(e->name = strdup(name)))
            return;
        ps->metaused++;
    }
    for (int i = 0; i < e->nv; i++)
        if (strcmp(e->v[i].type, type) == 0 && strcmp(e->v[i].help, help) == 0 &&
            strcmp(e->v[i].unit, unit) == 0)
            return;
    if (e->nv == PROM_META_PER_NAME)
        return;
    e->v[e->nv].type = strdup(type);
    e->v[e->nv].help = strdup(help);
    e->v[e->nv].unit = strdup(unit);
    if (!e->v[e->nv].type || !e->v[e->nv].help || !e->v[e->nv].unit) {
        free(e->v[e->nv].type);
        free(e->v[e->nv].help);
        free(e->v[e->nv].unit);
        return;
    }
    e->nv++;
}

void prom__meta_free(struct prom_svc *ps)
{
    for (size_t i = 0; i < ps->metasize; i++) {
        free(ps->meta[i].name);
        for (int k = 0; k < ps->meta[i].nv; k++) {
            free(ps->meta[i].v[k].type);
            free(ps->meta[i].v[k].help);
            free(ps->meta[i].v[k].unit);
        }
    }
    free(ps->meta);
    ps->meta = NULL;
    ps->metasize = ps->metaused = 0;
}

static void meta_flush(struct scrape_ctx *cx, bool store)
{
    if (cx->mname && store) {
        const char *type = cx->mtype ? cx->mtype : "unknown";
        if (strcmp(type, "untyped") == 0)
            type = "unknown";
        meta_put(cx->t->ps, cx->mname, type, cx->mhelp ? cx->mhelp : "", cx->munit ? cx->munit : "");
    }
    free(cx->mname);
    free(cx->mtype);
    free(cx->mhelp);
    free(cx->munit);
    cx->mname = cx->mtype = cx->mhelp = cx->munit = NULL;
}

static void on_meta(void *arg, const struct prom_meta *m)
{
    struct scrape_ctx *cx = arg;
    if (!cx->mname || strcmp(cx->mname, m->name) != 0) {
        meta_flush(cx, true);
        cx->mname = strdup(m->name);
    }
    char **dst = m->kind[0] == 'H' ? &cx->mhelp : m->kind[0] == 'T' ? &cx->mtype : &cx->munit;
    free(*dst);
    *dst = strdup(m->text);
}

static struct tsdb_series *series_for(struct prom_target *t, const struct prom_sample *s,
                                      bool *added, bool *dropped)
{
    struct tsdb_label pairs[TSDB_MAX_LABELS + 48];
    char exported[TSDB_MAX_LABELS][160];
    size_t n = 0;
    const struct prom_job *job = t->job;
    *dropped = false;
    *added = false;
    pairs[n++] = (struct tsdb_label){ "__name__", s->name };
    for (size_t i = 0; i < s->nlabels; i++) {
        bool clash = false;
        for (size_t k = 0; k < t->nlabels; k++)
            if (strcmp(t->labels[k].name, s->labels[i].name) == 0)
                clash = true;
        if (clash && !job->honor_labels) {
            snprintf(exported[i], sizeof(exported[i]), "exported_%s", s->labels[i].name);
            pairs[n++] = (struct tsdb_label){ exported[i], s->labels[i].value };
        } else if (!(clash && job->honor_labels && !s->labels[i].value[0])) {
            pairs[n++] = s->labels[i];
        }
    }
    for (size_t k = 0; k < t->nlabels; k++) {
        bool present = false;
        if (job->honor_labels)
            for (size_t i = 0; i < s->nlabels; i++)
                if (strcmp(t->labels[k].name, s->labels[i].name) == 0)
                    present = true;
        if (!present)
            pairs[n++] = t->labels[k];
    }
    struct tsdb_labels l;
    int r;
    if (job->nmetric_relabel) {
        struct relabel_set *ls = calloc(1, sizeof(*ls));
        if (!ls)
            return NULL;
        for (size_t i = 0; i < n; i++)
            relabel_set_put(ls, pairs[i].name, pairs[i].value);
        if (!relabel_apply(job->metric_relabel, job->nmetric_relabel, ls) ||
            !relabel_set_get(ls, "__name__")) {
            *dropped = true;
            relabel_set_clear(ls);
            free(ls);
            return NULL;
        }
        struct tsdb_label tl[RELABEL_MAX_LABELS];
        for (size_t i = 0; i < ls->n; i++)
            tl[i] = (struct tsdb_label){ ls->l[i].name, ls->l[i].value };
        r = tsdb_labels_make(&l, tl, ls->n);
        relabel_set_clear(ls);
        free(ls);
    } else {
        r = tsdb_labels_make(&l, pairs, n);
    }
    if (r)
        return NULL;
    bool created;
    struct tsdb_series *se = tsdb_series_get(&t->ps->db, &l, &created);
    if (!created)
        tsdb_labels_free(&l);
    *added = created;
    return se;
}

static int on_sample(void *arg, const struct prom_sample *s)
{
    struct scrape_ctx *cx = arg;
    struct prom_target *t = cx->t;
    cx->scraped++;
    if (t->job->sample_limit && cx->scraped > t->job->sample_limit) {
        cx->over_limit = true;
        return 1;
    }
    uint64_t h = hash_bytes(s->series, s->series_len);
    struct prom_cache_entry *e = cache_find(t, s->series, s->series_len, h, true);
    if (!e) {
        cx->nomem = true;
        return 1;
    }
    if (!e->s && !e->dropped) {
        bool added = false, dropped = false;
        e->s = series_for(t, s, &added, &dropped);
        tsdb_pin(e->s);         /* the cache holds it across scrapes */
        e->dropped = dropped;
        if (added)
            cx->added++;
    }
    e->seen = t->epoch;
    if (e->dropped)
        return 0;
    cx->kept++;
    if (!e->s)
        return 0;       /* refused by the series limit: counted by the TSDB */
    if (cx->np == cx->capp) {
        size_t nc = cx->capp ? cx->capp * 2 : 1024;
        struct pending *np = realloc(cx->p, nc * sizeof(*np));
        if (!np) {
            cx->nomem = true;
            return 1;
        }
        cx->p = np;
        cx->capp = nc;
    }
    int64_t ts = (s->has_ts && t->job->honor_timestamps) ? s->ts_ms : t->scrape_ts;
    cx->p[cx->np++] = (struct pending){ e->s, ts, s->value };
    if (s->ex.has)
        prom_exemplars_add(&t->ps->exemplars, e->s->ref, &s->ex, t->scrape_ts);
    return 0;
}

static void report(struct prom_target *t, int idx, const char *name, double v)
{
    struct prom_svc *ps = t->ps;
    if (!t->report[idx]) {
        struct tsdb_label pairs[42];
        size_t n = 0;
        pairs[n++] = (struct tsdb_label){ "__name__", name };
        for (size_t k = 0; k < t->nlabels; k++)
            pairs[n++] = t->labels[k];
        struct tsdb_labels l;
        if (tsdb_labels_make(&l, pairs, n))
            return;
        bool created;
        t->report[idx] = tsdb_series_get(&ps->db, &l, &created);
        tsdb_pin(t->report[idx]);
        if (!created)
            tsdb_labels_free(&l);
        if (!t->report[idx])
            return;
    }
    tsdb_append(&ps->db, t->report[idx], t->scrape_ts, v);
}

static void schedule(struct prom_target *t)
{
    if (!service_stopping(t->ps->sc))
        loop_timer_start(&t->ps->loop, &t->timer, t->job->interval_ms);
}

static void scrape_done(const struct httpc_response *resp, void *arg)
{
    struct prom_target *t = arg;
    struct prom_svc *ps = t->ps;
    struct scrape_ctx cx = { .t = t };
    char err[256] = "";
    struct buf unz = BUF_INIT;
    t->call = NULL;
    t->epoch++;
    metric_inc(ps->m_scrapes);
    if (resp->error == -EADDRNOTAVAIL && t->unresolved) {
        snprintf(err, sizeof(err), "Get \"%.120s\": dial tcp: lookup %.64s: no such host", t->url,
                 t->instance);
    } else if (resp->error) {
        snprintf(err, sizeof(err), "Get \"%.160s\": %s", t->url,
                 resp->error == -ETIMEDOUT ? "context deadline exceeded" : cairn_strerror(resp->error));
    } else if (resp->status != 200) {
        snprintf(err, sizeof(err), "server returned HTTP status %d", resp->status);
    } else {
        struct strv body = resp->body;
        bool om = false;
        for (size_t i = 0; i < resp->nheaders; i++) {
            const struct http_header *h = &resp->headers[i];
            if (strv_caseeq(h->name, strv_cstr("Content-Encoding")) &&
                strv_caseeq(h->value, strv_cstr("gzip"))) {
                int r = buf_inflate(body.p, body.n, t->job->body_size_limit, &unz);
                if (r) {
                    snprintf(err, sizeof(err), r == -EFBIG ? "body size limit exceeded"
                                                           : "gzip: invalid compressed body");
                    break;
                }
                body = buf_strv(&unz);
            }
            if (strv_caseeq(h->name, strv_cstr("Content-Type")) &&
                h->value.n >= 26 && strncasecmp(h->value.p, "application/openmetrics-text", 28) == 0)
                om = true;
        }
        if (!err[0]) {
            char perr[200];
            int r = prom_text_parse(body.p, body.n, om, t->job->label_limit, on_sample, on_meta,
                                    &cx, perr, sizeof(perr));
            if (cx.over_limit)
                snprintf(err, sizeof(err), "sample limit exceeded");
            else if (cx.nomem)
                snprintf(err, sizeof(err), "out of memory");
            else if (r)
                snprintf(err, sizeof(err), "%s", perr);
        }
    }
    buf_free(&unz);
    double dur = (double)(cairn_now_ns() - t->started_ns) / 1e9;
    bool ok = !err[0];
    meta_flush(&cx, ok);
    if (ok) {
        for (size_t i = 0; i < cx.np; i++)
            tsdb_append(&ps->db, cx.p[i].s, cx.p[i].t, cx.p[i].v);
        cache_sweep(t, t->scrape_ts, false);
    } else {
        /* a failed scrape: everything it had goes stale */
        cache_sweep(t, t->scrape_ts, true);
        metric_inc(ps->m_scrape_failures);
    }
    free(cx.p);
    report(t, 0, "up", ok ? 1 : 0);
    report(t, 1, "scrape_duration_seconds", dur);
    report(t, 2, "scrape_samples_scraped", ok ? (double)cx.scraped : 0);
    report(t, 3, "scrape_samples_post_metric_relabeling", ok ? (double)cx.kept : 0);
    report(t, 4, "scrape_series_added", ok ? (double)cx.added : 0);
    if (ok != (strcmp(t->health, "up") == 0)) {
        if (ok)
            log_info("target up", "job", t->job->name, "instance", t->instance);
        else
            log_warn("target down", "job", t->job->name, "instance", t->instance, "err", err);
    }
    t->health = ok ? "up" : "down";
    snprintf(t->last_error, sizeof(t->last_error), "%s", err);
    t->last_duration = dur;
    t->last_samples = cx.scraped;
    schedule(t);
}

static int resolve(const char *hostport, struct net_addr *out, char *host, size_t hostlen);

static void scrape_start(struct loop_timer *tm)
{
    struct prom_target *t = tm->data;
    if (t->call)
        return;
    t->started_ns = cairn_now_ns();
    t->scrape_ts = prom__now_ms();
    t->last_scrape_ms = t->scrape_ts;
    if (t->unresolved) {
        /* a name that did not resolve: try again, and fail this scrape as Prometheus
         * does (up 0, "no such host") while it still does not */
        if (resolve(t->instance, &t->addr, t->host, sizeof(t->host)) == 0) {
            t->unresolved = false;
        } else {
            struct httpc_response fail = { .error = -EADDRNOTAVAIL };
            scrape_done(&fail, t);
            return;
        }
    }
    static const char *const hdrs[] = {
        "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "Accept-Encoding: gzip",
        "User-Agent: cairn-metrics",
        NULL,
    };
    char timeout_hdr[64];
    snprintf(timeout_hdr, sizeof(timeout_hdr), "X-Prometheus-Scrape-Timeout-Seconds: %g",
             (double)t->job->timeout_ms / 1000.0);
    const char *h[5] = { hdrs[0], hdrs[1], hdrs[2], timeout_hdr, NULL };
    struct httpc_request req = {
        .method = "GET",
        .addr = t->addr,
        .host = t->host,
        .target = t->target,
        .headers = h,
        .tls = t->tls,
        .timeout_ms = (uint32_t)t->job->timeout_ms,
    };
    t->call = httpc_send(t->hc, &req, scrape_done, t);
    if (!t->call)
        schedule(t);
}

/* Resolves "host:port" (a name is looked up once, at start). */
static int resolve(const char *hostport, struct net_addr *out, char *host, size_t hostlen)
{
    int r = net_resolve(hostport, out);
    if (r)
        return r;
    snprintf(host, hostlen, "%s", hostport);
    return 0;
}

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const struct tsdb_label *)a)->name, ((const struct tsdb_label *)b)->name);
}

int prom__targets_start(struct prom_svc *ps)
{
    const struct prom_conf *pc = ps->conf;
    size_t n = 0;
    for (size_t j = 0; j < pc->njobs; j++) {
        for (size_t s = 0; s < pc->jobs[j].nstatics; s++)
            n += pc->jobs[j].statics[s].ntargets;
        const struct prom_static **found;
        size_t nfound;
        prom__sd_groups(ps, j, &found, &nfound);
        for (size_t s = 0; s < nfound; s++)
            n += found[s]->ntargets;
        free(found);
    }
    ps->targets = calloc(n ? n : 1, sizeof(*ps->targets));
    if (!ps->targets)
        return -ENOMEM;
    for (size_t j = 0; j < pc->njobs; j++) {
        const struct prom_job *job = &pc->jobs[j];
        /* static_configs first, then the groups file_sd found */
        const struct prom_static **found;
        size_t nfound;
        prom__sd_groups(ps, j, &found, &nfound);
        size_t ngroups = job->nstatics + nfound;
        struct httpc_opts o;
        httpc_opts_defaults(&o);
        o.limits.max_body = job->body_size_limit ? job->body_size_limit : (512u << 20);
        o.max_idle = 64;
        struct httpc *hc = httpc_new(&ps->loop, &o);
        if (!hc) {
            free(found);
            return -ENOMEM;
        }
        bool hc_used = false;
        for (size_t s = 0; s < ngroups; s++) {
            const struct prom_static *st = s < job->nstatics ? &job->statics[s]
                                                             : found[s - job->nstatics];
            for (size_t k = 0; k < st->ntargets; k++) {
                struct prom_target *t = &ps->targets[ps->ntargets];
                t->ps = ps;
                t->job = job;
                t->hc = hc_used ? NULL : hc;   /* the first target of a job owns it */
                hc_used = true;
                /* the discovered labels, then relabel_configs, as Prometheus does */
                char ival[32], tval[32];
                snprintf(ival, sizeof(ival), "%llus", (unsigned long long)(job->interval_ms / 1000));
                snprintf(tval, sizeof(tval), "%llus", (unsigned long long)(job->timeout_ms / 1000));
                relabel_set_put(&t->discovered, "__address__", st->targets[k]);
                relabel_set_put(&t->discovered, "__scheme__", job->scheme);
                relabel_set_put(&t->discovered, "__metrics_path__", job->metrics_path);
                relabel_set_put(&t->discovered, "__scrape_interval__", ival);
                relabel_set_put(&t->discovered, "__scrape_timeout__", tval);
                relabel_set_put(&t->discovered, "job", job->name);
                for (size_t l = 0; l < st->nlabels; l++)
                    relabel_set_put(&t->discovered, st->labels[l].name, st->labels[l].value);
                for (size_t l = 0; l < t->discovered.n; l++)
                    relabel_set_put(&t->lset, t->discovered.l[l].name, t->discovered.l[l].value);
                if (!relabel_apply(job->relabel, job->nrelabel, &t->lset) ||
                    !relabel_set_get(&t->lset, "__address__")) {
                    struct relabel_set *nd = realloc(ps->dropped, (ps->ndropped + 1) * sizeof(*nd));
                    if (nd) {
                        ps->dropped = nd;
                        ps->dropped[ps->ndropped++] = t->discovered;
                    } else {
                        relabel_set_clear(&t->discovered);
                    }
                    memset(&t->discovered, 0, sizeof(t->discovered));
                    relabel_set_clear(&t->lset);
                    if (t->hc) {
                        hc_used = false;
                        t->hc = NULL;
                    }
                    continue;
                }
                const char *addr = relabel_set_get(&t->lset, "__address__");
                if (!relabel_set_get(&t->lset, "instance"))
                    relabel_set_put(&t->lset, "instance", addr);
                snprintf(t->instance, sizeof(t->instance), "%s", addr);
                if (resolve(t->instance, &t->addr, t->host, sizeof(t->host))) {
                    log_warn("cannot resolve target yet, will retry at each scrape", "job", job->name,
                             "target", t->instance);
                    t->unresolved = true;
                    snprintf(t->host, sizeof(t->host), "%s", t->instance);
                }
                const char *scheme = relabel_set_get(&t->lset, "__scheme__");
                const char *mpath = relabel_set_get(&t->lset, "__metrics_path__");
                t->tls = scheme && strcmp(scheme, "https") == 0;
                snprintf(t->target, sizeof(t->target), "%.200s%s%.190s", mpath ? mpath : "/metrics",
                         job->query ? "?" : "", job->query ? job->query : "");
                snprintf(t->url, sizeof(t->url), "%.8s://%.127s%.360s", t->tls ? "https" : "http",
                         t->instance, t->target);
                /* labels starting with __ go away after relabeling */
                for (size_t l = 0; l < t->lset.n;) {
                    if (strncmp(t->lset.l[l].name, "__", 2) == 0) {
                        relabel_set_put(&t->lset, t->lset.l[l].name, NULL);
                        continue;
                    }
                    l++;
                }
                size_t nl = 0;
                for (size_t l = 0; l < t->lset.n && nl < ARRAY_SIZE(t->labels); l++)
                    t->labels[nl++] = (struct tsdb_label){ t->lset.l[l].name, t->lset.l[l].value };
                qsort(t->labels, nl, sizeof(t->labels[0]), cmp_label);
                t->nlabels = nl;
                t->health = "unknown";
                loop_timer_init(&t->timer, scrape_start, t);
                ps->ntargets++;
                /* spread first scrapes over the interval, like Prometheus's offsets */
                uint64_t off = hash_bytes(t->url, strlen(t->url)) % (job->interval_ms ? job->interval_ms : 1);
                loop_timer_start(&ps->loop, &t->timer, off % 1000);
            }
        }
        if (!hc_used)
            httpc_free(&hc);
        free(found);
    }
    /* targets of a job share its client: point the others at it */
    for (size_t i = 0; i < ps->ntargets; i++)
        if (!ps->targets[i].hc)
            for (size_t k = 0; k < i; k++)
                if (ps->targets[k].job == ps->targets[i].job && ps->targets[k].hc) {
                    ps->targets[i].hc = ps->targets[k].hc;
                    break;
                }
    return 0;
}

static void free_targets(struct prom_target *ts, size_t n, struct relabel_set *dropped, size_t nd)
{
    for (size_t i = 0; i < n; i++) {
        struct prom_target *t = &ts[i];
        loop_timer_stop(&t->timer);
        if (t->call) {
            httpc_cancel(t->call);
            t->call = NULL;
        }
    }
    /* targets of a job share one client: free each client once, after clearing
     * every pointer to it */
    for (size_t i = 0; i < n; i++) {
        struct httpc *hc = ts[i].hc;
        if (!hc)
            continue;
        for (size_t k = i; k < n; k++)
            if (ts[k].hc == hc)
                ts[k].hc = NULL;
        httpc_free(&hc);
    }
    for (size_t i = 0; i < n; i++) {
        struct prom_target *t = &ts[i];
        for (size_t c = 0; c < t->cachesize; c++) {
            if (t->cache[c].key)
                tsdb_unpin(t->cache[c].s);
            free(t->cache[c].key);
        }
        free(t->cache);
        for (int r = 0; r < 5; r++)
            tsdb_unpin(t->report[r]);
        relabel_set_clear(&t->lset);
        relabel_set_clear(&t->discovered);
    }
    for (size_t i = 0; i < nd; i++)
        relabel_set_clear(&dropped[i]);
    free(dropped);
    free(ts);
}

void prom__targets_stop(struct prom_svc *ps)
{
    free_targets(ps->targets, ps->ntargets, ps->dropped, ps->ndropped);
    ps->targets = NULL;
    ps->ntargets = 0;
    ps->dropped = NULL;
    ps->ndropped = 0;
}

static bool same_target(const struct prom_target *a, const struct prom_target *b)
{
    if (strcmp(a->job->name, b->job->name) || strcmp(a->url, b->url) || a->nlabels != b->nlabels)
        return false;
    for (size_t i = 0; i < a->nlabels; i++)
        if (strcmp(a->labels[i].name, b->labels[i].name) ||
            strcmp(a->labels[i].value, b->labels[i].value))
            return false;
    return true;
}

/* After a reload: targets that stayed keep their series cache (no false
 * staleness), the others' series get staleness markers now. */
void prom__targets_adopt(struct prom_svc *ps, struct prom_target *old, size_t nold,
                         struct relabel_set *odropped, size_t nodropped)
{
    int64_t now = prom__now_ms();
    for (size_t i = 0; i < nold; i++) {
        struct prom_target *o = &old[i];
        struct prom_target *n = NULL;
        for (size_t k = 0; k < ps->ntargets && !n; k++)
            if (!ps->targets[k].cache && same_target(o, &ps->targets[k]))
                n = &ps->targets[k];
        if (n) {
            n->cache = o->cache;
            n->cachesize = o->cachesize;
            n->cacheused = o->cacheused;
            n->epoch = o->epoch;
            memcpy(n->report, o->report, sizeof(n->report));
            memset(o->report, 0, sizeof(o->report));     /* the pins moved too */
            n->health = o->health;
            memcpy(n->last_error, o->last_error, sizeof(n->last_error));
            n->last_scrape_ms = o->last_scrape_ms;
            n->last_duration = o->last_duration;
            n->last_samples = o->last_samples;
            o->cache = NULL;
            o->cachesize = o->cacheused = 0;
            continue;
        }
        cache_sweep(o, now, true);
        for (int r = 0; r < 5; r++)
            if (o->report[r] && o->report[r]->has_last && o->report[r]->last_t < now)
                tsdb_append(&ps->db, o->report[r], now, tsdb_stale_nan());
        log_info("target removed", "job", o->job->name, "instance", o->instance);
    }
    free_targets(old, nold, odropped, nodropped);
}

void prom__targets_rebuild(struct prom_svc *ps)
{
    struct prom_target *old = ps->targets;
    size_t nold = ps->ntargets, nodropped = ps->ndropped;
    struct relabel_set *odropped = ps->dropped;
    ps->targets = NULL;
    ps->ntargets = 0;
    ps->dropped = NULL;
    ps->ndropped = 0;
    if (prom__targets_start(ps))
        log_error("out of memory while starting the new targets");
    prom__targets_adopt(ps, old, nold, odropped, nodropped);
}
