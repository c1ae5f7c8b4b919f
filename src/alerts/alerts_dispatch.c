/* alerts_dispatch.c - routing, aggregation groups and the notification pipeline.
 *
 * As dispatch/dispatch.go: an alert goes to every route it matches; on each, its
 * group labels (group_by, or all labels for `...`) pick an aggregation group. A
 * new group flushes after group_wait (at once when its first alert started more
 * than group_wait ago), then every group_interval. A flush runs the pipeline of
 * notify/notify.go on a sorted snapshot of the group's alerts:
 *
 *   inhibited, outside active_time_intervals, inside mute_time_intervals or
 *   silenced alerts are dropped; then, per integration of the receiver, the
 *   notification log decides (DedupStage.needsUpdate): notify when an alert fires
 *   that was not notified, when every alert resolved after a firing notification,
 *   when a resolved alert is new and send_resolved is on, or when repeat_interval
 *   has passed; the send is retried with exponential backoff until the flush's
 *   deadline (group_interval, at least 10 s); success is logged with the firing
 *   and resolved fingerprints.
 *
 * After a flush in which every integration succeeded, resolved alerts that did
 * not change meanwhile leave the group; an empty group is removed.
 */
#include "alerts_internal.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_TIMEOUT_MS 10000

static size_t gbucket(const struct am_svc *s, const struct am_route *r, uint64_t fp)
{
    uint64_t h = fp ^ ((uint64_t)(r->id + 1) * 0x9E3779B97F4A7C15ull);
    return (size_t)(h ^ (h >> 31)) & (s->gcap - 1);
}

static struct am_group *group_find(struct am_svc *s, const struct am_route *r, uint64_t fp,
                                   const struct am_lset *labels)
{
    if (!s->gcap)
        return NULL;
    for (struct am_group *g = s->gtab[gbucket(s, r, fp)]; g; g = g->hnext)
        if (g->route == r && g->labels_fp == fp && am__lset_eq(&g->labels, labels))
            return g;
    return NULL;
}

static int gtab_grow(struct am_svc *s)
{
    size_t ncap = s->gcap ? s->gcap * 2 : 64;
    struct am_group **nt = calloc(ncap, sizeof(*nt));
    if (!nt)
        return -ENOMEM;
    free(s->gtab);
    s->gtab = nt;
    s->gcap = ncap;
    for (struct am_group *g = s->groups; g; g = g->next) {
        size_t b = gbucket(s, g->route, g->labels_fp);
        g->hnext = s->gtab[b];
        s->gtab[b] = g;
    }
    return 0;
}

static void flush_free(struct am_flush *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->g->route->recv->nints && f->sends; i++) {
        struct am_send *sd = &f->sends[i];
        am__send_cancel(sd);
        free(sd->alerts);
        free(sd->firing);
        free(sd->resolved);
        free(sd->nflog_key);
    }
    free(f->sends);
    for (size_t i = 0; i < f->nalerts; i++)
        am__alert_unref(f->alerts[i]);
    free(f->alerts);
    free(f);
}

static void group_free(struct am_svc *s, struct am_group *g)
{
    loop_timer_stop(&g->timer);
    flush_free(g->flushing);
    size_t b = gbucket(s, g->route, g->labels_fp);
    for (struct am_group **pp = &s->gtab[b]; *pp; pp = &(*pp)->hnext)
        if (*pp == g) {
            *pp = g->hnext;
            break;
        }
    if (g->prev)
        g->prev->next = g->next;
    else
        s->groups = g->next;
    if (g->next)
        g->next->prev = g->prev;
    s->ngroups--;
    for (size_t i = 0; i < g->nalerts; i++)
        am__alert_unref(g->alerts[i]);
    free(g->alerts);
    am__lset_free(&g->labels);
    free(g->key);
    free(g);
}

void am__groups_free(struct am_svc *s)
{
    while (s->groups)
        group_free(s, s->groups);
    free(s->gtab);
    s->gtab = NULL;
    s->gcap = 0;
}

/* types.AlertSlice's order: job, then instance (an alert that has the label
 * first), then model.LabelSet.Before. */
static int cmp_alert(const void *pa, const void *pb)
{
    const struct am_alert *a = *(struct am_alert *const *)pa, *b = *(struct am_alert *const *)pb;
    static const char *const keys[] = { "job", "instance" };
    for (int k = 0; k < 2; k++) {
        const char *x = am__lset_get(&a->labels, keys[k]);
        const char *y = am__lset_get(&b->labels, keys[k]);
        if (!x && !y)
            continue;
        if (!x)
            return 1;
        if (!y)
            return -1;
        int c = strcmp(x, y);
        if (c)
            return c;
    }
    if (am__lset_before(&a->labels, &b->labels))
        return -1;
    if (am__lset_before(&b->labels, &a->labels))
        return 1;
    return 0;
}

void am__group_sorted(struct am_alert **v, size_t n)
{
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_alert);
}

static void run_flush(struct am_group *g);

static void group_timer_cb(struct loop_timer *t)
{
    struct am_group *g = t->data;
    if (g->flushing) {
        g->flush_due = true;
        return;
    }
    loop_timer_start(&g->s->loop, &g->timer, g->route->group_interval_ms);
    g->has_flushed = true;
    run_flush(g);
}

static bool interval_active(const struct am_conf *ac, char **names, size_t n, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        const struct am_time_intervals *ti = am__interval_find(ac, names[i]);
        if (ti && am__interval_contains(ti, now))
            return true;
    }
    return false;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool u64_has(const uint64_t *v, size_t n, uint64_t x)
{
    return n && bsearch(&x, v, n, sizeof(*v), u64_cmp) != NULL;
}

/* every element of sub is in set */
static bool subset(const uint64_t *sub, size_t nsub, const uint64_t *set, size_t nset)
{
    for (size_t i = 0; i < nsub; i++)
        if (!u64_has(set, nset, sub[i]))
            return false;
    return true;
}

static void flush_done(struct am_flush *f);

/* Called by alerts_notify.c when an integration has finished (or given up). */
void am__send_finished(struct am_send *sd, bool ok, bool retry, const char *err)
{
    struct am_flush *f = sd->f;
    struct am_svc *s = f->g->s;
    const char *iname = am__integration_name(sd->in->kind);
    if (!ok) {
        uint64_t now = loop_now(&s->loop);
        if (retry && now + sd->backoff_ms < f->deadline_ms) {
            if (sd->attempts == 1 || (sd->attempts % 10) == 0)
                log_warn("notify attempt failed, will retry later", "receiver",
                         f->g->route->recv->name, "integration", iname, "attempts",
                         log_int(sd->attempts), "err", err);
            /* backoff.ExponentialBackOff: 500 ms, x1.5, +-50 % jitter, at most 60 s */
            uint64_t jitter = sd->backoff_ms / 2;
            uint64_t wait = sd->backoff_ms - jitter + (jitter ? cairn_rand64() % (2 * jitter + 1) : 0);
            loop_timer_start(&s->loop, &sd->retry, wait);
            sd->backoff_ms = sd->backoff_ms * 3 / 2;
            if (sd->backoff_ms > 60000)
                sd->backoff_ms = 60000;
            return;
        }
        log_error("notify for alerts failed", "receiver", f->g->route->recv->name, "integration",
                  iname, "attempts", log_int(sd->attempts), "group", f->g->key, "err", err);
        f->failed = true;
    } else {
        if (sd->attempts > 1)
            log_info("notify success", "receiver", f->g->route->recv->name, "integration", iname,
                     "attempts", log_int(sd->attempts));
        int64_t repeat = (int64_t)f->g->route->repeat_interval_ms * 1000000;
        int64_t ret = (int64_t)s->conf->retention_ms * 1000000;
        int64_t now = am__now_ns();
        am__nflog_set(s, sd->nflog_key, sd->firing, sd->nfiring, sd->resolved, sd->nresolved, now,
                      now + (2 * repeat < ret ? 2 * repeat : ret));
    }
    sd->done = true;
    if (--f->pending == 0)
        flush_done(f);
}

static void retry_cb(struct loop_timer *t)
{
    am__send_start(t->data);
}

static void flush_done(struct am_flush *f)
{
    struct am_group *g = f->g;
    struct am_svc *s = g->s;
    if (!f->failed) {
        /* resolved alerts that were notified and did not change leave the group */
        for (size_t i = 0; i < f->nalerts; i++) {
            struct am_alert *a = f->alerts[i];
            if (!am__alert_resolved_at(a, f->now))
                continue;
            for (size_t k = 0; k < g->nalerts; k++)
                if (g->alerts[k] == a) {
                    am__alert_unref(a);
                    g->alerts[k] = g->alerts[--g->nalerts];
                    break;
                }
        }
    }
    g->flushing = NULL;
    flush_free(f);
    if (g->nalerts == 0) {
        group_free(s, g);
        return;
    }
    if (g->flush_due) {
        g->flush_due = false;
        loop_timer_start(&s->loop, &g->timer, 0);
    }
}

static void run_flush(struct am_group *g)
{
    struct am_svc *s = g->s;
    const struct am_conf *ac = s->conf;
    struct am_route *r = g->route;
    int64_t now = am__now_ns();
    metric_inc(s->m_flushes);
    struct am_flush *f = calloc(1, sizeof(*f));
    if (!f)
        return;
    f->g = g;
    f->now = now;
    uint64_t timeout = r->group_interval_ms < MIN_TIMEOUT_MS ? MIN_TIMEOUT_MS : r->group_interval_ms;
    f->deadline_ms = loop_now(&s->loop) + timeout;
    g->flushing = f;
    f->alerts = calloc(g->nalerts + 1, sizeof(*f->alerts));
    if (!f->alerts)
        goto done;
    /* the snapshot holds every alert; muted ones (inhibition, then time intervals,
     * then silences: BuildPipeline's order) are not sent, but a resolved one still
     * leaves the group after a successful flush, as in Alertmanager */
    for (size_t i = 0; i < g->nalerts; i++)
        f->alerts[f->nalerts++] = am__alert_ref(g->alerts[i]);
    am__group_sorted(f->alerts, f->nalerts);
    bool *muted = calloc(f->nalerts + 1, sizeof(bool));
    if (!muted)
        goto done;
    bool muted_by_time = interval_active(ac, r->mute, r->nmute, now) ||
                         (r->nactive && !interval_active(ac, r->active, r->nactive, now));
    size_t visible = 0;
    for (size_t i = 0; i < f->nalerts; i++) {
        struct am_alert *a = f->alerts[i];
        uint64_t by;
        const char *ids[1];
        muted[i] = muted_by_time || am__inhibited_by(s, &a->labels, now, &by) ||
                   am__silenced_by(s, &a->labels, now, ids, 1);
        visible += !muted[i];
    }
    const struct am_receiver *rc = r->recv;
    if (!visible || !rc->nints) {
        free(muted);
        goto done;
    }
    f->sends = calloc(rc->nints, sizeof(*f->sends));
    if (!f->sends) {
        free(muted);
        goto done;
    }
    for (size_t i = 0; i < rc->nints; i++) {
        struct am_send *sd = &f->sends[i];
        const struct am_integration *in = &rc->ints[i];
        sd->f = f;
        sd->in = in;
        sd->done = true;
        loop_timer_init(&sd->retry, retry_cb, sd);
        sd->alerts = calloc(f->nalerts + 1, sizeof(*sd->alerts));
        sd->firing = calloc(f->nalerts + 1, sizeof(*sd->firing));
        sd->resolved = calloc(f->nalerts + 1, sizeof(*sd->resolved));
        if (!sd->alerts || !sd->firing || !sd->resolved)
            continue;
        for (size_t k = 0; k < f->nalerts; k++) {
            struct am_alert *a = f->alerts[k];
            if (muted[k])
                continue;
            if (am__alert_resolved_at(a, now))
                sd->resolved[sd->nresolved++] = a->fp;
            else
                sd->firing[sd->nfiring++] = a->fp;
            if (in->send_resolved || !am__alert_resolved_at(a, now))
                sd->alerts[sd->nalerts++] = a;
        }
        qsort(sd->firing, sd->nfiring, sizeof(uint64_t), u64_cmp);
        qsort(sd->resolved, sd->nresolved, sizeof(uint64_t), u64_cmp);
        struct buf key = BUF_INIT;
        buf_printf(&key, "%s/%s/%d\n%s", rc->name, am__integration_name(in->kind), in->idx, g->key);
        sd->nflog_key = buf_steal(&key);
        buf_free(&key);
        if (!sd->nflog_key)
            continue;
        /* DedupStage.needsUpdate */
        const struct am_nflog_entry *e = am__nflog_get(s, sd->nflog_key);
        bool needs;
        if (!e)
            needs = sd->nfiring > 0;
        else if (!subset(sd->firing, sd->nfiring, e->firing, e->nfiring))
            needs = true;
        else if (sd->nfiring == 0)
            needs = e->nfiring > 0;
        else if (in->send_resolved && !subset(sd->resolved, sd->nresolved, e->resolved, e->nresolved))
            needs = true;
        else
            needs = e->ts < now - (int64_t)r->repeat_interval_ms * 1000000;
        if (!needs)
            continue;
        sd->done = false;
        sd->backoff_ms = 500;
        f->pending++;
    }
    free(muted);
    if (!f->pending)
        goto done;
    for (size_t i = 0; i < rc->nints; i++)
        if (!f->sends[i].done)
            loop_timer_start(&s->loop, &f->sends[i].retry, 0);
    return;
done:
    f->pending = 0;
    flush_done(f);
}

static int group_add_alert(struct am_group *g, struct am_alert *a)
{
    for (size_t i = 0; i < g->nalerts; i++)
        if (g->alerts[i]->fp == a->fp) {
            am__alert_unref(g->alerts[i]);
            g->alerts[i] = am__alert_ref(a);
            return 0;
        }
    if (g->nalerts == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 4;
        struct am_alert **nv = realloc(g->alerts, ncap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        g->alerts = nv;
        g->cap = ncap;
    }
    g->alerts[g->nalerts++] = am__alert_ref(a);
    return 0;
}

void am__dispatch(struct am_svc *s, struct am_alert *a)
{
    struct am_route *routes[64];
    size_t nr = am__route_match(s->conf->route, &a->labels, routes, ARRAY_SIZE(routes));
    int64_t now = am__now_ns();
    for (size_t i = 0; i < nr; i++) {
        struct am_route *r = routes[i];
        struct am_lset gl = { calloc(a->labels.n + 1, sizeof(struct am_label)), 0 };
        if (!gl.l)
            return;
        for (size_t k = 0; k < a->labels.n; k++) {
            bool take = r->group_by_all;
            for (size_t j = 0; !take && j < r->ngroup_by; j++)
                take = !strcmp(r->group_by[j], a->labels.l[k].name);
            if (take)
                gl.l[gl.n++] = a->labels.l[k];     /* borrowed until copied below */
        }
        uint64_t fp = am__lset_fingerprint(&gl);
        struct am_group *g = group_find(s, r, fp, &gl);
        if (!g) {
            if ((s->ngroups + 1) > s->gcap && gtab_grow(s)) {
                free(gl.l);
                return;
            }
            g = calloc(1, sizeof(*g));
            if (!g || am__lset_copy(&g->labels, &gl)) {
                free(g);
                free(gl.l);
                return;
            }
            g->s = s;
            g->route = r;
            g->labels_fp = fp;
            struct buf key = BUF_INIT;
            buf_printf(&key, "%s:", r->key);
            am__lset_format(&key, &g->labels);
            g->key = buf_steal(&key);
            buf_free(&key);
            loop_timer_init(&g->timer, group_timer_cb, g);
            size_t b = gbucket(s, r, fp);
            g->hnext = s->gtab[b];
            s->gtab[b] = g;
            g->next = s->groups;
            if (s->groups)
                s->groups->prev = g;
            s->groups = g;
            s->ngroups++;
            loop_timer_start(&s->loop, &g->timer, r->group_wait_ms);
        }
        free(gl.l);
        if (group_add_alert(g, a))
            continue;
        if (!g->has_flushed && a->starts_at + (int64_t)r->group_wait_ms * 1000000 < now)
            loop_timer_start(&s->loop, &g->timer, 0);
    }
}

void am__groups_rebuild(struct am_svc *s)
{
    am__groups_free(s);
    for (size_t i = 0; i < s->alerts_cap; i++)
        if (s->alerts[i])
            am__dispatch(s, s->alerts[i]);
}
