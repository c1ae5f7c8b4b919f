/* prom_rules.c - recording and alerting rules as Prometheus 2.42 evaluates them,
 * and the notifier that sends alerts to Alertmanager (API v2).
 *
 * Rule files are Prometheus's (groups: name, interval, limit, rules with record
 * or alert, expr, for, labels, annotations). Each group runs on its own timer at
 * times aligned to its interval (offset by a hash of its name, so groups spread
 * out). A recording rule's result is written back as samples, with staleness
 * markers for series that disappear. An alerting rule keeps its active alerts:
 * new ones are pending, firing once they have been active for `for`, and
 * resolved when they vanish (kept 15 minutes to send the resolution); ALERTS and
 * ALERTS_FOR_STATE series record them, and ALERTS_FOR_STATE restores active-since
 * times after a restart. Firing alerts are sent to every configured Alertmanager
 * after each evaluation that changes them and at least every minute, with endsAt
 * four intervals ahead; resolved ones once, with endsAt the resolution time.
 *
 * Labels and annotations are Go templates (see "templates" below).
 */
#include "prom_internal.h"
#include "core/gotmpl.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RESEND_DELAY_MS 60000
#define RESOLVED_RETENTION_MS (15 * 60000)
#define OUTAGE_TOLERANCE_MS (3600000)

/* ---- templates ----
 *
 * Labels and annotations are Go templates run by src/core/gotmpl.c, with
 * Prometheus's data (.Labels, .ExternalLabels, .Value, and $labels,
 * $externalLabels, $value defined before the text as Prometheus defines them) and
 * its functions humanize, humanize1024, humanizePercentage, humanizeDuration,
 * humanizeTimestamp, toUpper, toLower, title, match, reReplaceAll, safeHtml,
 * stripPort, plus Go's builtins. `query` (PromQL from a template) is not provided:
 * a template that calls it is refused when the file is loaded. A template that
 * fails when it runs gives "<error expanding template: ...>", as in Prometheus.
 */

struct prom_tmpl {
    struct gt_set *set;
};

static void tmpl_free(struct prom_tmpl *t)
{
    if (!t)
        return;
    gt_set_free(&t->set);
    free(t);
}

static void humanize(struct buf *b, const char *fn, double v)
{
    static const char *const big[] = { "k", "M", "G", "T", "P", "E", "Z", "Y" };
    static const char *const small[] = { "m", "u", "n", "p", "f", "a", "z", "y" };
    if (!strcmp(fn, "humanizePercentage")) {
        buf_printf(b, "%.4g%%", v * 100);
        return;
    }
    if (!strcmp(fn, "humanizeTimestamp")) {
        if (isnan(v) || isinf(v)) {
            buf_printf(b, "%.4g", v);
            return;
        }
        time_t t = (time_t)v;
        struct tm tm;
        gmtime_r(&t, &tm);
        char s[64];
        strftime(s, sizeof(s), "%Y-%m-%d %H:%M:%S", &tm);
        double frac = v - floor(v);
        if (frac > 0)
            buf_printf(b, "%s.%09.0f +0000 UTC", s, frac * 1e9);
        else
            buf_printf(b, "%s +0000 UTC", s);
        return;
    }
    bool dur = !strcmp(fn, "humanizeDuration");
    if (isnan(v) || isinf(v) || v == 0) {
        buf_printf(b, dur && v == 0 ? "%.4gs" : "%.4g", v);
        return;
    }
    if (dur && fabs(v) >= 1) {
        const char *sign = v < 0 ? "-" : "";
        v = fabs(v);
        long long d = (long long)v;
        long long sec = d % 60, min = (d / 60) % 60, hr = (d / 3600) % 24, days = d / 86400;
        if (days)
            buf_printf(b, "%s%lldd %lldh %lldm %llds", sign, days, hr, min, sec);
        else if (hr)
            buf_printf(b, "%s%lldh %lldm %llds", sign, hr, min, sec);
        else if (min)
            buf_printf(b, "%s%lldm %llds", sign, min, sec);
        else
            buf_printf(b, "%s%.4gs", sign, v);
        return;
    }
    if (!dur && fabs(v) >= 1) {
        double k = !strcmp(fn, "humanize1024") ? 1024 : 1000;
        const char *pfx = "";
        static const char *const bin[] = { "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi" };
        for (int i = 0; i < 8 && fabs(v) >= k; i++) {
            pfx = k == 1024 ? bin[i] : big[i];
            v /= k;
        }
        buf_printf(b, "%.4g%s", v, pfx);
        return;
    }
    const char *pfx = "";
    for (int i = 0; i < 8 && fabs(v) < 1; i++) {
        pfx = small[i];
        v *= 1000;
    }
    buf_printf(b, dur ? "%.4g%ss" : "%.4g%s", v, pfx);
}


static double num_arg(const struct gt_value *v)
{
    return v->k == GT_NUM ? v->num : v->k == GT_STR ? strtod(v->s, NULL) : 0;
}

#define HUMANIZE_FN(fname, key)                                                              \
    static struct gt_value *fname(struct gt_arena *a, struct gt_value **v, size_t n, char *err, \
                                  size_t errlen)                                             \
    {                                                                                        \
        if (n != 1) {                                                                        \
            snprintf(err, errlen, "wrong number of args: want 1 got %zu", n);                \
            return NULL;                                                                     \
        }                                                                                    \
        struct buf b = BUF_INIT;                                                             \
        humanize(&b, key, num_arg(v[0]));                                                    \
        buf_putc(&b, 0);                                                                     \
        struct gt_value *r = gt_str(a, buf_head(&b));                                        \
        buf_free(&b);                                                                        \
        return r;                                                                            \
    }
HUMANIZE_FN(f_humanize, "humanize")
HUMANIZE_FN(f_humanize1024, "humanize1024")
HUMANIZE_FN(f_humanize_pct, "humanizePercentage")
HUMANIZE_FN(f_humanize_dur, "humanizeDuration")
HUMANIZE_FN(f_humanize_ts, "humanizeTimestamp")

/* stripPort: the host of host:port or [v6]:port */
static struct gt_value *f_strip_port(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                     size_t errlen)
{
    if (n != 1 || v[0]->k != GT_STR) {
        snprintf(err, errlen, "stripPort wants one string");
        return NULL;
    }
    char *s = (char *)gt_strdup(a, v[0]->s, strlen(v[0]->s));
    if (!s)
        return NULL;
    char *c = strrchr(s, ':');
    if (s[0] == '[' && strchr(s, ']')) {
        *strchr(s, ']') = 0;
        s++;
    } else if (c && strchr(s, ':') == c) {
        *c = 0;
    }
    return gt_str(a, s);
}

/* What `query` runs against: set around each evaluation's template runs (the role
 * has one thread). */
static struct {
    const struct prom_svc *ps;
    int64_t ts;
} tctx;

enum { TAG_SAMPLES = 1 };

static struct gt_value *sample_value(struct gt_arena *a, const struct tsdb_labels *l, double v)
{
    struct gt_value *m = gt_map(a, 2, 0);
    if (!m)
        return NULL;
    m->keys[0] = "Labels";
    struct gt_value *lm = gt_map(a, l->n, 0);
    if (!lm)
        return NULL;
    lm->missing_empty = true;
    for (uint16_t i = 0; i < l->n; i++) {
        lm->keys[i] = gt_strdup(a, l->l[i].name, strlen(l->l[i].name));
        lm->items[i] = gt_str(a, l->l[i].value);
    }
    m->items[0] = lm;
    m->keys[1] = "Value";
    m->items[1] = gt_num(a, v);
    return m;
}

/* query "expr": an instant query at the rule's evaluation time; the result is a
 * list of samples (.Labels, .Value), a scalar as one sample without labels. */
static struct gt_value *f_query(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                size_t errlen)
{
    if (n != 1 || v[0]->k != GT_STR) {
        snprintf(err, errlen, "query wants one string");
        return NULL;
    }
    if (!tctx.ps) {
        snprintf(err, errlen, "query is not available here");
        return NULL;
    }
    struct promql_node *q = promql_parse(v[0]->s, err, errlen);
    if (!q)
        return NULL;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const struct prom_conf *pc = tctx.ps->conf;
    struct promql_opts o = {
        .lookback_ms = (int64_t)pc->lookback_ms,
        .max_samples = pc->query_max_samples,
        .deadline_ns = (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec + (int64_t)pc->query_timeout_ms * 1000000,
    };
    struct promql_result res;
    int r = promql_eval(&tctx.ps->db, q, tctx.ts, tctx.ts, 0, &o, &res, err, errlen);
    promql_free(q);
    if (r)
        return NULL;
    struct gt_value *out = NULL;
    if (res.type == PROMQL_SCALAR) {
        out = gt_list(a, 1, TAG_SAMPLES);
        struct tsdb_labels none = { 0, NULL };
        if (out)
            out->items[0] = sample_value(a, &none, res.scalar);
    } else if (res.type == PROMQL_VECTOR) {
        out = gt_list(a, res.ns, TAG_SAMPLES);
        for (size_t i = 0; out && i < res.ns; i++)
            out->items[i] = sample_value(a, &res.s[i].labels, res.s[i].v[0]);
    } else {
        snprintf(err, errlen, "query must return a vector or a scalar");
    }
    promql_result_free(&res);
    return out;
}

static struct gt_value *f_first(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                size_t errlen)
{
    (void)a;
    if (n != 1 || v[0]->k != GT_LIST) {
        snprintf(err, errlen, "first wants a query result");
        return NULL;
    }
    if (!v[0]->n) {
        snprintf(err, errlen, "first() called on vector with no elements");
        return NULL;
    }
    return v[0]->items[0];
}

static struct gt_value *f_label(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                size_t errlen)
{
    if (n != 2 || v[0]->k != GT_STR || v[1]->k != GT_MAP) {
        snprintf(err, errlen, "label wants a name and a sample");
        return NULL;
    }
    struct gt_value *l = gt_map_get(gt_map_get(v[1], "Labels"), v[0]->s);
    return l ? l : gt_str(a, "");
}

static struct gt_value *f_value(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                size_t errlen)
{
    (void)a;
    struct gt_value *x = n == 1 && v[0]->k == GT_MAP ? gt_map_get(v[0], "Value") : NULL;
    if (!x)
        snprintf(err, errlen, "value wants a sample");
    return x;
}

static struct gt_value *f_strvalue(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                   size_t errlen)
{
    if (n != 1 || v[0]->k != GT_MAP) {
        snprintf(err, errlen, "strvalue wants a sample");
        return NULL;
    }
    struct gt_value *l = gt_map_get(gt_map_get(v[0], "Labels"), "__value__");
    return l ? l : gt_str(a, "");
}

static const char *sort_label;

static int cmp_by_label(const void *pa, const void *pb)
{
    const struct gt_value *a = gt_map_get(gt_map_get(*(struct gt_value *const *)pa, "Labels"), sort_label);
    const struct gt_value *b = gt_map_get(gt_map_get(*(struct gt_value *const *)pb, "Labels"), sort_label);
    return strcmp(a ? a->s : "", b ? b->s : "");
}

static struct gt_value *f_sort_by_label(struct gt_arena *a, struct gt_value **v, size_t n,
                                        char *err, size_t errlen)
{
    if (n != 2 || v[0]->k != GT_STR || v[1]->k != GT_LIST) {
        snprintf(err, errlen, "sortByLabel wants a label name and a query result");
        return NULL;
    }
    struct gt_value *out = gt_list(a, v[1]->n, v[1]->tag);
    if (!out)
        return NULL;
    memcpy(out->items, v[1]->items, v[1]->n * sizeof(*out->items));
    sort_label = v[0]->s;
    qsort(out->items, out->n, sizeof(*out->items), cmp_by_label);
    return out;
}

static struct gt_value *f_args(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                               size_t errlen)
{
    (void)err;
    (void)errlen;
    struct gt_value *m = gt_map(a, n, 0);
    for (size_t i = 0; m && i < n; i++) {
        char k[32];
        snprintf(k, sizeof(k), "arg%zu", i);
        m->keys[i] = gt_strdup(a, k, strlen(k));
        m->items[i] = v[i];
    }
    if (m)
        gt_map_sort(m);
    return m;
}

static void self_url(struct buf *b)
{
    char self[NET_ADDRSTRLEN];
    if (tctx.ps)
        net_addr_format(&tctx.ps->conf->listen[0], self, sizeof(self));
    else
        snprintf(self, sizeof(self), "localhost:9090");
    buf_printf(b, "http://%s", self);
}

static struct gt_value *link_fn(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                size_t errlen, int tab)
{
    if (n != 1 || v[0]->k != GT_STR) {
        snprintf(err, errlen, "wants one expression");
        return NULL;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "/graph?g0.expr=");
    gt_url_query_escape(&b, v[0]->s);
    buf_printf(&b, "&g0.tab=%d", tab);
    buf_putc(&b, 0);
    struct gt_value *r = gt_str(a, buf_head(&b));
    buf_free(&b);
    return r;
}

static struct gt_value *f_graph_link(struct gt_arena *a, struct gt_value **v, size_t n, char *e,
                                     size_t l)
{
    return link_fn(a, v, n, e, l, 0);
}

static struct gt_value *f_table_link(struct gt_arena *a, struct gt_value **v, size_t n, char *e,
                                     size_t l)
{
    return link_fn(a, v, n, e, l, 1);
}

static struct gt_value *f_external_url(struct gt_arena *a, struct gt_value **v, size_t n, char *e,
                                       size_t l)
{
    (void)v;
    (void)n;
    (void)e;
    (void)l;
    struct buf b = BUF_INIT;
    self_url(&b);
    buf_putc(&b, 0);
    struct gt_value *r = gt_str(a, buf_head(&b));
    buf_free(&b);
    return r;
}

static struct gt_value *f_path_prefix(struct gt_arena *a, struct gt_value **v, size_t n, char *e,
                                      size_t l)
{
    (void)v;
    (void)n;
    (void)e;
    (void)l;
    return gt_str(a, "");
}

static struct gt_value *f_parse_duration(struct gt_arena *a, struct gt_value **v, size_t n,
                                         char *err, size_t errlen)
{
    uint64_t ms;
    if (n != 1 || v[0]->k != GT_STR || cfg_parse_duration(v[0]->s, &ms)) {
        snprintf(err, errlen, "not a valid duration string: \"%s\"",
                 n == 1 && v[0]->k == GT_STR ? v[0]->s : "");
        return NULL;
    }
    return gt_num(a, (double)ms / 1000);
}

static struct prom_tmpl *tmpl_compile(const char *src, char *err, size_t errlen)
{
    struct prom_tmpl *t = calloc(1, sizeof(*t));
    if (!t || !(t->set = gt_set_new(false))) {
        free(t);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    static const struct { const char *name; gt_func fn; } fns[] = {
        { "humanize", f_humanize }, { "humanize1024", f_humanize1024 },
        { "humanizePercentage", f_humanize_pct }, { "humanizeDuration", f_humanize_dur },
        { "humanizeTimestamp", f_humanize_ts }, { "stripPort", f_strip_port }, { "query", f_query },
        { "first", f_first }, { "label", f_label }, { "value", f_value },
        { "strvalue", f_strvalue }, { "sortByLabel", f_sort_by_label }, { "args", f_args },
        { "graphLink", f_graph_link }, { "tableLink", f_table_link },
        { "externalURL", f_external_url }, { "pathPrefix", f_path_prefix },
        { "parseDuration", f_parse_duration },
    };
    int fr = gt_add_text_funcs(t->set);
    for (size_t i = 0; !fr && i < ARRAY_SIZE(fns); i++)
        fr = gt_set_func(t->set, fns[i].name, fns[i].fn);
    if (fr) {
        tmpl_free(t);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* Prometheus defines these variables in front of every template */
    struct buf text = BUF_INIT;
    buf_puts(&text, "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}");
    buf_puts(&text, src);
    buf_putc(&text, 0);
    int r = gt_parse(t->set, "__alert", buf_head(&text), err, errlen);
    buf_free(&text);
    if (r) {
        tmpl_free(t);
        return NULL;
    }
    return t;
}

struct tmpl_data {
    const struct tsdb_labels *labels;
    const struct tsdb_label *ext;
    size_t next;
    double value;
};

static struct gt_value *labels_map(struct gt_arena *a, const struct tsdb_label *l, size_t n,
                                   bool skip_name)
{
    struct gt_value *m = gt_map(a, n, 0);
    if (!m)
        return NULL;
    m->missing_empty = true;
    m->n = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip_name && !strcmp(l[i].name, "__name__"))
            continue;
        m->keys[m->n] = l[i].name;
        m->items[m->n++] = gt_str(a, l[i].value);
    }
    gt_map_sort(m);
    return m;
}

static void tmpl_exec(const struct prom_tmpl *t, const struct tmpl_data *d, struct buf *out)
{
    struct gt_arena *a = gt_arena_new();
    struct gt_value *data = a ? gt_map(a, 3, 0) : NULL;
    char err[400];
    int r = -ENOMEM;
    if (data) {
        data->keys[0] = "Labels";
        data->items[0] = labels_map(a, d->labels->l, d->labels->n, false);
        data->keys[1] = "ExternalLabels";
        data->items[1] = labels_map(a, d->ext, d->next, false);
        data->keys[2] = "Value";
        data->items[2] = gt_num(a, d->value);
        gt_map_sort(data);
        size_t mark = buf_used(out);
        r = data->items[0] && data->items[1] && data->items[2]
                ? gt_exec(t->set, "__alert", data, a, out, err, sizeof(err)) : -ENOMEM;
        if (r) {
            out->len = out->off + mark;
            buf_printf(out, "<error expanding template: %s>", r == -ENOMEM ? "out of memory" : err);
        }
    }
    gt_arena_free(&a);
}

/* ---- configuration ---- */

static void free_pairs(struct tsdb_label *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((void *)l[i].name);
        free((void *)l[i].value);
    }
    free(l);
}

static void free_rule(struct prom_rule *r)
{
    free(r->name);
    free(r->expr_text);
    promql_free(r->expr);
    for (size_t i = 0; i < r->nlabels; i++)
        tmpl_free(r->label_tmpl ? r->label_tmpl[i] : NULL);
    for (size_t i = 0; i < r->nannotations; i++)
        tmpl_free(r->ann_tmpl ? r->ann_tmpl[i] : NULL);
    free(r->label_tmpl);
    free(r->ann_tmpl);
    free_pairs(r->labels, r->nlabels);
    free_pairs(r->annotations, r->nannotations);
}

void prom__rules_free_conf(struct prom_conf *pc)
{
    for (size_t i = 0; i < pc->ngroups; i++) {
        for (size_t k = 0; k < pc->groups[i].nrules; k++)
            free_rule(&pc->groups[i].rules[k]);
        free(pc->groups[i].rules);
        free(pc->groups[i].name);
        free(pc->groups[i].file);
    }
    free(pc->groups);
    free(pc->ams);
    relabel_free(pc->alert_relabel, pc->nalert_relabel);
}

static bool metric_name_ok(const char *s)
{
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_' || *s == ':'))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == ':'))
            return false;
    return true;
}

/* A mapping of label names to template strings. */
static int parse_tmpl_map(struct cfg *c, const cfg_node *n, const char *path, struct tsdb_label **out,
                          size_t *nout, struct prom_tmpl ***tmpl, bool check_names)
{
    if (!cfg_is_map(n))
        return cfg_error(c, n, path, "expected a mapping of names to strings");
    size_t k = cfg_len(n);
    *out = calloc(k + 1, sizeof(**out));
    *tmpl = calloc(k + 1, sizeof(**tmpl));
    if (!*out || !*tmpl)
        return cfg_error(c, n, path, "out of memory");
    int bad = 0;
    for (size_t i = 0; i < k; i++) {
        const cfg_node *kn = cfg_map_key(c, n, i), *vn = cfg_map_value(c, n, i);
        const char *name = cfg_scalar(kn);
        char p[400];
        CFG_PATH(p, "%s.%s", path, name ? name : "?");
        if (!name || (check_names && !relabel_label_name_ok(name))) {
            bad = cfg_error(c, kn, path, "invalid label name \"%s\"", name ? name : "");
            continue;
        }
        char *val = NULL;
        if (!cfg_is_scalar(vn) || cfg_get_string(c, vn, p, &val)) {
            if (!cfg_is_scalar(vn))
                bad = cfg_error(c, vn, p, "expected a string");
            else
                bad = -EINVAL;
            continue;
        }
        char err[200];
        struct prom_tmpl *t = tmpl_compile(val, err, sizeof(err));
        if (!t) {
            bad = cfg_error(c, vn, p, "%s", err);
            free(val);
            continue;
        }
        (*out)[*nout].name = strdup(name);
        (*out)[*nout].value = val;
        (*tmpl)[*nout] = t;
        (*nout)++;
    }
    return bad;
}

static int parse_rule(struct cfg *c, const cfg_node *n, const char *path, struct prom_rule *r)
{
    static const char *const keys[] = { "record", "alert", "expr", "for", "labels", "annotations",
                                        "keep_firing_for", NULL };
    cfg_node *v[7];
    char p[400];
    if (!cfg_is_map(n))
        return cfg_error(c, n, path, "expected a rule (record or alert, expr, ...)");
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    if (v[0] && v[1])
        return cfg_error(c, n, path, "only one of 'record' and 'alert' must be set");
    if (!v[0] && !v[1])
        return cfg_error(c, n, path, "one of 'record' or 'alert' must be set");
    r->alert = v[1] != NULL;
    CFG_PATH(p, "%s.%s", path, r->alert ? "alert" : "record");
    if (cfg_get_string(c, r->alert ? v[1] : v[0], p, &r->name))
        return -EINVAL;
    if (!r->alert && !metric_name_ok(r->name))
        bad = cfg_error(c, v[0], p, "invalid recording rule name: %s", r->name);
    if (r->alert && !*r->name)
        bad = cfg_error(c, v[1], p, "invalid alert name: \"\"");
    CFG_PATH(p, "%s.expr", path);
    if (!v[2]) {
        bad = cfg_error(c, n, path, "field 'expr' must be set in rule");
    } else if (cfg_get_string(c, v[2], p, &r->expr_text) == 0) {
        char err[600];
        r->expr = promql_parse(r->expr_text, err, sizeof(err));
        if (!r->expr)
            bad = cfg_error(c, v[2], p, "could not parse expression: %s", err);
    } else {
        bad = -EINVAL;
    }
    if (!r->alert && (v[3] || v[5] || v[6]))
        bad = cfg_error(c, n, path, "invalid field '%s' in recording rule",
                        v[3] ? "for" : v[5] ? "annotations" : "keep_firing_for");
    CFG_PATH(p, "%s.for", path);
    if (v[3])
        bad |= cfg_get_duration(c, v[3], p, &r->for_ms);
    CFG_PATH(p, "%s.keep_firing_for", path);
    if (v[6])
        bad |= cfg_get_duration(c, v[6], p, &r->keep_firing_ms);
    CFG_PATH(p, "%s.labels", path);
    if (v[4] && !cfg_is_null(v[4]))
        bad |= parse_tmpl_map(c, v[4], p, &r->labels, &r->nlabels, &r->label_tmpl, true);
    CFG_PATH(p, "%s.annotations", path);
    if (v[5] && !cfg_is_null(v[5]))
        bad |= parse_tmpl_map(c, v[5], p, &r->annotations, &r->nannotations, &r->ann_tmpl, false);
    for (size_t i = 0; i < r->nlabels; i++)
        if (!r->alert && strcmp(r->labels[i].name, "__name__") == 0)
            bad = cfg_error(c, v[4], path, "invalid recording rule label name: __name__");
    return bad;
}

static int parse_rule_file(struct cfg *parent, const char *file, uint64_t default_interval,
                           struct prom_conf *pc)
{
    struct cfg c;
    memset(&c, 0, sizeof(c));
    if (cfg_load_file(&c, file, parent->errs)) {
        cfg_free(&c);
        return -EINVAL;
    }
    const cfg_node *root = cfg_root(&c);
    int bad = 0;
    static const char *const keys[] = { "groups", NULL };
    cfg_node *v[1];
    if (cfg_is_null(root) || !root) {
        cfg_free(&c);
        return 0;
    }
    if (cfg_map_fields(&c, root, "", keys, v)) {
        cfg_free(&c);
        return -EINVAL;
    }
    const cfg_node *gs = v[0];
    size_t ng = gs ? cfg_len(gs) : 0;
    if (gs && !cfg_is_seq(gs) && !cfg_is_null(gs)) {
        bad = cfg_error(&c, gs, "groups", "expected a list of groups");
        ng = 0;
    }
    size_t first = pc->ngroups;
    for (size_t i = 0; i < ng; i++) {
        char p[300];
        CFG_PATH(p, "groups[%zu]", i);
        const cfg_node *gn = cfg_seq_item(&c, gs, i);
        static const char *const gk[] = { "name", "interval", "limit", "rules", "source_tenants", NULL };
        cfg_node *gv[5];
        if (!cfg_is_map(gn) || cfg_map_fields(&c, gn, p, gk, gv)) {
            bad = cfg_is_map(gn) ? -EINVAL : cfg_error(&c, gn, p, "expected a group");
            continue;
        }
        struct prom_group *a = realloc(pc->groups, (pc->ngroups + 1) * sizeof(*a));
        if (!a) {
            bad = cfg_error(&c, gn, p, "out of memory");
            break;
        }
        pc->groups = a;
        struct prom_group *g = &pc->groups[pc->ngroups++];
        memset(g, 0, sizeof(*g));
        g->file = strdup(file);
        g->interval_ms = default_interval;
        char q[340];
        CFG_PATH(q, "%s.name", p);
        if (!gv[0])
            bad = cfg_error(&c, gn, p, "groupname must not be empty");
        else if (cfg_get_string(&c, gv[0], q, &g->name) == 0 && !*g->name)
            bad = cfg_error(&c, gv[0], q, "groupname must not be empty");
        for (size_t k = first; g->name && k + 1 < pc->ngroups; k++)
            if (pc->groups[k].name && strcmp(pc->groups[k].name, g->name) == 0)
                bad = cfg_error(&c, gv[0], q, "groupname: \"%s\" is repeated in the same file", g->name);
        CFG_PATH(q, "%s.interval", p);
        if (gv[1] && cfg_get_duration(&c, gv[1], q, &g->interval_ms) == 0 && g->interval_ms == 0)
            bad = cfg_error(&c, gv[1], q, "interval must be more than 0s");
        long long lim;
        CFG_PATH(q, "%s.limit", p);
        if (gv[2] && cfg_get_int(&c, gv[2], q, 0, 1LL << 40, &lim) == 0)
            g->limit = (uint64_t)lim;
        if (gv[4])
            bad = cfg_error(&c, gv[4], p, "source_tenants is not supported");
        const cfg_node *rs = gv[3];
        size_t nr = rs && cfg_is_seq(rs) ? cfg_len(rs) : 0;
        if (rs && !cfg_is_seq(rs) && !cfg_is_null(rs))
            bad = cfg_error(&c, rs, p, "rules: expected a list");
        g->rules = calloc(nr + 1, sizeof(*g->rules));
        for (size_t k = 0; g->rules && k < nr; k++) {
            CFG_PATH(q, "%s.rules[%zu]", p, k);
            bad |= parse_rule(&c, cfg_seq_item(&c, rs, k), q, &g->rules[g->nrules++]);
        }
    }
    cfg_free(&c);
    return bad;
}

static int parse_alerting(struct cfg *c, const cfg_node *n, const char *path, struct prom_conf *pc)
{
    static const char *const keys[] = { "alertmanagers", "alert_relabel_configs", NULL };
    cfg_node *v[2];
    if (cfg_is_null(n))
        return 0;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    if (v[1]) {
        char rp[300];
        CFG_PATH(rp, "%s.alert_relabel_configs", path);
        bad |= relabel_parse(c, v[1], rp, &pc->alert_relabel, &pc->nalert_relabel);
    }
    size_t na = v[0] ? cfg_len(v[0]) : 0;
    for (size_t i = 0; i < na; i++) {
        char p[300];
        CFG_PATH(p, "%s.alertmanagers[%zu]", path, i);
        const cfg_node *an = cfg_seq_item(c, v[0], i);
        static const char *const ak[] = { "static_configs", "scheme", "path_prefix", "timeout",
                                          "api_version", NULL };
        cfg_node *av[5];
        if (!cfg_is_map(an) || cfg_map_fields(c, an, p, ak, av)) {
            bad = cfg_is_map(an) ? -EINVAL : cfg_error(c, an, p, "expected an Alertmanager");
            continue;
        }
        char *scheme = NULL, *prefix = NULL, *api = NULL;
        uint64_t timeout = 10000;
        if (av[1])
            bad |= cfg_get_string(c, av[1], p, &scheme);
        if (av[2])
            bad |= cfg_get_string(c, av[2], p, &prefix);
        if (av[3])
            bad |= cfg_get_duration(c, av[3], p, &timeout);
        if (av[4] && cfg_get_string(c, av[4], p, &api) == 0 && strcmp(api, "v2") != 0)
            bad = cfg_error(c, av[4], p, "api_version %s is not supported (v2 is)", api);
        if (scheme && strcmp(scheme, "http") && strcmp(scheme, "https"))
            bad = cfg_error(c, av[1], p, "expected http or https");
        size_t ns = av[0] ? cfg_len(av[0]) : 0;
        for (size_t s = 0; s < ns; s++) {
            const cfg_node *sn = cfg_seq_item(c, av[0], s);
            static const char *const sk[] = { "targets", "labels", NULL };
            cfg_node *sv[2];
            char q[340];
            CFG_PATH(q, "%s.static_configs[%zu]", p, s);
            if (!cfg_is_map(sn) || cfg_map_fields(c, sn, q, sk, sv)) {
                bad = -EINVAL;
                continue;
            }
            char **t = NULL;
            size_t nt = 0;
            if (sv[0] && cfg_get_string_list(c, sv[0], q, &t, &nt)) {
                bad = -EINVAL;
                continue;
            }
            for (size_t k = 0; k < nt; k++) {
                struct prom_am *a = realloc(pc->ams, (pc->nams + 1) * sizeof(*a));
                if (!a)
                    break;
                pc->ams = a;
                struct prom_am *am = &pc->ams[pc->nams];
                memset(am, 0, sizeof(*am));
                /* a name is looked up when alerts are first sent to it, so that checking
                 * the file needs no DNS (a Kubernetes Service name, say) */
                char nm[128];
                if (cfg_get_hostport(c, cfg_is_seq(sv[0]) ? cfg_seq_item(c, sv[0], k) : sv[0], q, &am->addr, nm,
                                     sizeof(nm)) < 0) {
                    bad = -EINVAL;
                    continue;
                }
                snprintf(am->host, sizeof(am->host), "%s", t[k]);
                const char *pf = prefix ? prefix : "";
                size_t pl = strlen(pf);
                while (pl && pf[pl - 1] == '/')
                    pl--;
                snprintf(am->path, sizeof(am->path), "%s%.*s/api/v2/alerts", pl && pf[0] != '/' ? "/" : "",
                         (int)pl, pf);
                am->tls = scheme && !strcmp(scheme, "https");
                am->timeout_ms = timeout;
                pc->nams++;
            }
            cfg_free_string_list(t, nt);
        }
        free(scheme);
        free(prefix);
        free(api);
    }
    return bad;
}

int prom__rules_parse(struct cfg *c, const cfg_node *files, const cfg_node *alerting, const char *path,
                      const char *base_dir, struct prom_conf *pc)
{
    int bad = 0;
    char p[300];
    if (files && !cfg_is_null(files)) {
        char **pats;
        size_t np;
        CFG_PATH(p, "%s.rule_files", path);
        if (cfg_get_string_list(c, files, p, &pats, &np))
            return -EINVAL;
        for (size_t i = 0; i < np; i++) {
            char full[4096];
            if (pats[i][0] == '/' || strcmp(base_dir, ".") == 0)
                snprintf(full, sizeof(full), "%s", pats[i]);
            else
                snprintf(full, sizeof(full), "%s/%s", base_dir, pats[i]);
            glob_t g;
            int gr = glob(full, 0, NULL, &g);
            if (gr == GLOB_NOMATCH)
                continue;   /* Prometheus: a pattern matching nothing is fine */
            if (gr) {
                bad = cfg_error(c, files, p, "cannot expand \"%s\"", pats[i]);
                continue;
            }
            for (size_t k = 0; k < g.gl_pathc; k++)
                bad |= parse_rule_file(c, g.gl_pathv[k], pc->evaluation_interval_ms, pc);
            globfree(&g);
        }
        cfg_free_string_list(pats, np);
    }
    if (alerting) {
        CFG_PATH(p, "%s.alerting", path);
        bad |= parse_alerting(c, alerting, p, pc);
    }
    return bad ? -EINVAL : 0;
}

/* ---- evaluation ---- */

enum astate { A_PENDING, A_FIRING, A_INACTIVE };

struct prom_alert {
    struct tsdb_labels labels;
    struct tsdb_label *ann;     /* rendered annotations (owned values) */
    size_t nann;
    enum astate state;
    int64_t active_at, fired_at, resolved_at, last_sent, valid_until, last_seen;
    double value;
    bool seen;
};

struct rule_rt {
    const struct prom_rule *r;
    struct prom_alert *alerts;
    size_t nalerts;
    struct tsdb_series **written, **prev;   /* series written by this and the last evaluation */
    size_t nwritten, nprev, capwritten, capprev;
    char health[16];
    char last_error[512];
    int64_t last_eval;
    double eval_secs;
    bool restored;
};

struct prom_group_rt {
    struct prom_svc *ps;
    const struct prom_group *g;
    struct loop_timer timer;
    struct rule_rt *rules;
    int64_t last_eval, next;
    double eval_secs;
};

static void alert_free(struct prom_alert *a)
{
    tsdb_labels_free(&a->labels);
    free_pairs(a->ann, a->nann);
    a->ann = NULL;
    a->nann = 0;
}

static void rfc3339(struct buf *b, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[40];
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
    buf_puts(b, s);
    if (ms % 1000)
        buf_printf(b, ".%03d", (int)(ms % 1000));
    buf_putc(b, 'Z');
}

/* Appends a sample to the series of a label set, remembering it as written. */
static void write_sample(struct prom_svc *ps, struct rule_rt *rr, struct tsdb_label *pairs, size_t n,
                         int64_t t, double v)
{
    struct tsdb_labels l;
    if (tsdb_labels_make(&l, pairs, n))
        return;
    bool created;
    struct tsdb_series *s = tsdb_series_get(&ps->db, &l, &created);
    if (!created)
        tsdb_labels_free(&l);
    if (!s)
        return;
    tsdb_append(&ps->db, s, t, v);
    if (rr->nwritten == rr->capwritten) {
        size_t nc = rr->capwritten ? rr->capwritten * 2 : 16;
        struct tsdb_series **a = realloc(rr->written, nc * sizeof(*a));
        if (!a)
            return;
        rr->written = a;
        rr->capwritten = nc;
    }
    rr->written[rr->nwritten++] = s;
    tsdb_pin(s);                /* held until the evaluation after next */
}

/* Staleness markers for the series the last evaluation wrote and this one did not. */
static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
    return x < y ? -1 : x > y;
}

static void mark_stale(struct prom_svc *ps, struct rule_rt *rr, int64_t t)
{
    /* both lists sorted by address, then one merge pass */
    if (rr->nwritten > 1)
        qsort(rr->written, rr->nwritten, sizeof(*rr->written), cmp_ptr);
    for (size_t i = 0, k = 0; i < rr->nprev; i++) {
        while (k < rr->nwritten && (uintptr_t)rr->written[k] < (uintptr_t)rr->prev[i])
            k++;
        if (k == rr->nwritten || rr->written[k] != rr->prev[i])
            tsdb_append(&ps->db, rr->prev[i], t, tsdb_stale_nan());
    }
    for (size_t i = 0; i < rr->nprev; i++)
        tsdb_unpin(rr->prev[i]);
    struct tsdb_series **tmp = rr->prev;
    size_t tcap = rr->capprev;
    rr->prev = rr->written;
    rr->nprev = rr->nwritten;
    rr->capprev = rr->capwritten;
    rr->written = tmp;
    rr->capwritten = tcap;
    rr->nwritten = 0;
}

static void set_error(struct rule_rt *rr, const char *msg)
{
    snprintf(rr->health, sizeof(rr->health), "err");
    snprintf(rr->last_error, sizeof(rr->last_error), "%s", msg);
}

static void eval_recording(struct prom_group_rt *gr, struct rule_rt *rr, const struct promql_result *res,
                           int64_t ts)
{
    const struct prom_rule *r = rr->r;
    if (gr->g->limit && res->ns > gr->g->limit) {
        char m[200];
        snprintf(m, sizeof(m), "exceeded limit of %llu with %zu series",
                 (unsigned long long)gr->g->limit, res->ns);
        set_error(rr, m);
        return;
    }
    if (res->type == PROMQL_SCALAR) {
        struct tsdb_label p[TSDB_MAX_LABELS + 1];
        size_t n = 0;
        p[n++] = (struct tsdb_label){ "__name__", r->name };
        for (size_t i = 0; i < r->nlabels && n < ARRAY_SIZE(p); i++)
            p[n++] = r->labels[i];
        write_sample(gr->ps, rr, p, n, ts, res->scalar);
        return;
    }
    for (size_t i = 0; i < res->ns; i++) {
        struct tsdb_label p[TSDB_MAX_LABELS + 40];
        size_t n = 0;
        const struct tsdb_labels *l = &res->s[i].labels;
        for (uint16_t k = 0; k < l->n; k++)
            if (strcmp(l->l[k].name, "__name__"))
                p[n++] = l->l[k];
        for (size_t k = 0; k < r->nlabels && n < ARRAY_SIZE(p) - 1; k++) {
            size_t j = 0;
            while (j < n && strcmp(p[j].name, r->labels[k].name))
                j++;
            p[j] = r->labels[k];
            if (j == n)
                n++;
        }
        p[n++] = (struct tsdb_label){ "__name__", r->name };
        write_sample(gr->ps, rr, p, n, ts, res->s[i].v[0]);
    }
}

/* An index of a rule's alerts by label hash (open addressing, rebuilt for each
 * evaluation: alerts move when one is removed). slot = alert index + 1. */
struct alert_index {
    uint32_t *slot;
    size_t cap;
};

static void index_add(struct alert_index *ix, const struct rule_rt *rr, size_t i)
{
    size_t h = (size_t)tsdb_labels_hash(&rr->alerts[i].labels);
    while (ix->slot[h & (ix->cap - 1)])
        h++;
    ix->slot[h & (ix->cap - 1)] = (uint32_t)i + 1;
}

static bool index_build(struct alert_index *ix, const struct rule_rt *rr, size_t extra)
{
    ix->cap = 16;
    while (ix->cap < 2 * (rr->nalerts + extra) + 2)
        ix->cap *= 2;
    ix->slot = calloc(ix->cap, sizeof(*ix->slot));
    if (!ix->slot)
        return false;
    for (size_t i = 0; i < rr->nalerts; i++)
        index_add(ix, rr, i);
    return true;
}

static struct prom_alert *find_alert(const struct alert_index *ix, struct rule_rt *rr,
                                     const struct tsdb_labels *l)
{
    for (size_t h = (size_t)tsdb_labels_hash(l);; h++) {
        uint32_t s = ix->slot[h & (ix->cap - 1)];
        if (!s)
            return NULL;
        if (s <= rr->nalerts && tsdb_labels_eq(&rr->alerts[s - 1].labels, l))
            return &rr->alerts[s - 1];
    }
}

/* The newest ALERTS_FOR_STATE value of an alert within the outage tolerance. */
static bool restore_for_state(struct prom_svc *ps, const struct tsdb_labels *l, int64_t now, double *out)
{
    struct tsdb_label p[TSDB_MAX_LABELS + 1];
    size_t n = 0;
    for (uint16_t k = 0; k < l->n; k++)
        p[n++] = l->l[k];
    p[n++] = (struct tsdb_label){ "__name__", "ALERTS_FOR_STATE" };
    struct tsdb_labels want;
    if (tsdb_labels_make(&want, p, n))
        return false;
    struct tsdb_matcher m;
    char err[64];
    bool found = false;
    if (tsdb_matcher_init(&m, "__name__", TSDB_EQ, "ALERTS_FOR_STATE", err, sizeof(err)) == 0) {
        struct tsdb_series **ss;
        size_t k = tsdb_select(&ps->db, &m, 1, now - OUTAGE_TOLERANCE_MS, now, &ss);
        for (size_t i = 0; i < k && !found; i++) {
            if (!tsdb_labels_eq(&ss[i]->labels, &want))
                continue;
            struct tsdb_iter it;
            tsdb_iter_init(&it, ss[i], now - OUTAGE_TOLERANCE_MS, now);
            int64_t t;
            double v;
            while (tsdb_iter_next(&it, &t, &v))
                if (!tsdb_is_stale(v)) {
                    *out = v;
                    found = true;
                }
        }
        tsdb_select_free(ss, k);
        tsdb_matcher_free(&m);
    }
    tsdb_labels_free(&want);
    return found;
}

static void eval_alerting(struct prom_group_rt *gr, struct rule_rt *rr, const struct promql_result *res,
                          int64_t ts)
{
    tctx.ps = gr->ps;
    tctx.ts = ts;
    const struct prom_rule *r = rr->r;
    struct prom_svc *ps = gr->ps;
    for (size_t i = 0; i < rr->nalerts; i++)
        rr->alerts[i].seen = false;
    size_t nres = res->type == PROMQL_SCALAR ? 0 : res->ns;
    struct alert_index ix;
    if (!index_build(&ix, rr, nres)) {
        set_error(rr, "out of memory");
        return;
    }
    for (size_t i = 0; i < nres; i++) {
        const struct tsdb_labels *sl = &res->s[i].labels;
        double value = res->s[i].v[0];
        struct tmpl_data d = { sl, ps->conf->external_labels, ps->conf->nexternal, value };
        struct tsdb_label p[TSDB_MAX_LABELS + 40];
        struct buf vals[40];
        size_t n = 0;
        for (uint16_t k = 0; k < sl->n; k++)
            if (strcmp(sl->l[k].name, "__name__"))
                p[n++] = sl->l[k];
        size_t nl = MIN(r->nlabels, ARRAY_SIZE(vals));
        for (size_t k = 0; k < nl; k++) {
            vals[k] = BUF_INIT;
            tmpl_exec(r->label_tmpl[k], &d, &vals[k]);
            buf_putc(&vals[k], 0);
            size_t j = 0;
            while (j < n && strcmp(p[j].name, r->labels[k].name))
                j++;
            p[j] = (struct tsdb_label){ r->labels[k].name, buf_head(&vals[k]) };
            if (j == n)
                n++;
        }
        size_t j = 0;
        while (j < n && strcmp(p[j].name, "alertname"))
            j++;
        p[j] = (struct tsdb_label){ "alertname", r->name };
        if (j == n)
            n++;
        struct tsdb_labels l;
        int mk = tsdb_labels_make(&l, p, n);
        for (size_t k = 0; k < nl; k++)
            buf_free(&vals[k]);
        if (mk)
            continue;
        struct prom_alert *a = find_alert(&ix, rr, &l);
        if (a && a->seen) {
            tsdb_labels_free(&l);
            free(ix.slot);
            set_error(rr, "vector contains metrics with the same labelset after applying alert labels");
            return;
        }
        if (a && a->state == A_INACTIVE) {
            /* a resolved alert that comes back is a new alert, in the same place */
            tsdb_labels_free(&l);
            l = a->labels;
            a->labels = (struct tsdb_labels){ 0, NULL };
            alert_free(a);
            memset(a, 0, sizeof(*a));
            a->labels = l;
            a->state = A_PENDING;
            a->active_at = ts;
        } else if (!a) {
            struct prom_alert *na = realloc(rr->alerts, (rr->nalerts + 1) * sizeof(*na));
            if (!na) {
                tsdb_labels_free(&l);
                continue;
            }
            rr->alerts = na;
            a = &rr->alerts[rr->nalerts++];
            memset(a, 0, sizeof(*a));
            a->labels = l;
            index_add(&ix, rr, rr->nalerts - 1);
            a->state = A_PENDING;
            a->active_at = ts;
            double since;
            if (!rr->restored && r->for_ms && restore_for_state(ps, &l, ts, &since) &&
                (int64_t)(since * 1000) < ts)
                a->active_at = (int64_t)(since * 1000);
        } else {
            tsdb_labels_free(&l);
        }
        a->seen = true;
        a->last_seen = ts;
        a->value = value;
        free_pairs(a->ann, a->nann);
        a->nann = 0;
        a->ann = calloc(r->nannotations + 1, sizeof(*a->ann));
        for (size_t k = 0; a->ann && k < r->nannotations; k++) {
            struct buf b = BUF_INIT;
            tmpl_exec(r->ann_tmpl[k], &d, &b);
            a->ann[a->nann].name = strdup(r->annotations[k].name);
            a->ann[a->nann++].value = b.data ? buf_steal(&b) : strdup("");
        }
    }
    free(ix.slot);
    rr->restored = true;
    size_t active = 0;
    for (size_t i = 0; i < rr->nalerts;) {
        struct prom_alert *a = &rr->alerts[i];
        if (!a->seen) {
            if (a->state == A_PENDING ||
                (a->state == A_INACTIVE && ts - a->resolved_at > RESOLVED_RETENTION_MS)) {
                alert_free(a);
                *a = rr->alerts[--rr->nalerts];
                continue;
            }
            if (a->state == A_FIRING && ts - a->last_seen < (int64_t)r->keep_firing_ms) {
                active++;   /* keep_firing_for: still firing a while after it cleared */
                i++;
                continue;
            }
            if (a->state == A_FIRING) {
                a->state = A_INACTIVE;
                a->resolved_at = ts;
            }
        } else {
            if (a->state == A_PENDING && ts - a->active_at >= (int64_t)r->for_ms) {
                a->state = A_FIRING;
                a->fired_at = ts;
            }
            int64_t iv = (int64_t)MAX(gr->g->interval_ms, (uint64_t)RESEND_DELAY_MS);
            a->valid_until = ts + 4 * iv;
            active++;
        }
        i++;
    }
    if (gr->g->limit && active > gr->g->limit) {
        for (size_t i = 0; i < rr->nalerts; i++)
            alert_free(&rr->alerts[i]);
        rr->nalerts = 0;
        char m[200];
        snprintf(m, sizeof(m), "exceeded limit of %llu with %zu alerts",
                 (unsigned long long)gr->g->limit, active);
        set_error(rr, m);
        return;
    }
    /* ALERTS and ALERTS_FOR_STATE */
    for (size_t i = 0; i < rr->nalerts; i++) {
        struct prom_alert *a = &rr->alerts[i];
        if (a->state == A_INACTIVE)
            continue;
        struct tsdb_label p[TSDB_MAX_LABELS + 2];
        size_t n = 0;
        for (uint16_t k = 0; k < a->labels.n; k++)
            p[n++] = a->labels.l[k];
        p[n++] = (struct tsdb_label){ "__name__", "ALERTS" };
        p[n++] = (struct tsdb_label){ "alertstate", a->state == A_FIRING ? "firing" : "pending" };
        write_sample(ps, rr, p, n, ts, 1);
        if (r->for_ms) {
            p[n - 2] = (struct tsdb_label){ "__name__", "ALERTS_FOR_STATE" };
            write_sample(ps, rr, p, n - 1, ts, (double)a->active_at / 1000);
        }
    }
}

static void notify_done(const struct httpc_response *resp, void *arg)
{
    struct prom_svc *ps = arg;
    if (resp->error || resp->status / 100 != 2) {
        metric_inc(ps->m_notify_errors);
        log_warn("alert notification failed", "status", log_int(resp->status), "error",
                 resp->error ? cairn_strerror(resp->error) : "");
    }
}

static void send_alerts(struct prom_group_rt *gr, int64_t ts)
{
    struct prom_svc *ps = gr->ps;
    const struct prom_conf *pc = ps->conf;
    struct buf b = BUF_INIT;
    size_t n = 0;
    buf_putc(&b, '[');
    for (size_t ri = 0; ri < gr->g->nrules; ri++) {
        struct rule_rt *rr = &gr->rules[ri];
        for (size_t i = 0; i < rr->nalerts; i++) {
            struct prom_alert *a = &rr->alerts[i];
            bool due = (a->state == A_FIRING && (!a->last_sent || ts - a->last_sent >= RESEND_DELAY_MS ||
                                                 a->last_sent < a->fired_at)) ||
                       (a->state == A_INACTIVE && a->last_sent && a->last_sent < a->resolved_at);
            if (!due)
                continue;
            a->last_sent = ts;
            struct tsdb_label p[TSDB_MAX_LABELS + 64];
            size_t np = 0;
            for (uint16_t k = 0; k < a->labels.n; k++)
                p[np++] = a->labels.l[k];
            for (size_t k = 0; k < pc->nexternal && np < ARRAY_SIZE(p); k++) {
                bool has = false;
                for (size_t j = 0; j < np; j++)
                    has |= !strcmp(p[j].name, pc->external_labels[k].name);
                if (!has)
                    p[np++] = pc->external_labels[k];
            }
            /* alert_relabel_configs see the labels with the external ones, as in Prometheus */
            struct relabel_set *rl = NULL;
            if (pc->nalert_relabel) {
                rl = calloc(1, sizeof(*rl));
                if (!rl)
                    continue;
                for (size_t k = 0; k < np; k++)
                    relabel_set_put(rl, p[k].name, p[k].value);
                if (!relabel_apply(pc->alert_relabel, pc->nalert_relabel, rl) || rl->n == 0) {
                    relabel_set_clear(rl);
                    free(rl);
                    continue;       /* dropped: not sent */
                }
                np = 0;
                for (size_t k = 0; k < rl->n && np < ARRAY_SIZE(p); k++)
                    p[np++] = (struct tsdb_label){ rl->l[k].name, rl->l[k].value };
            }
            if (n++)
                buf_putc(&b, ',');
            buf_puts(&b, "{\"labels\":{");
            for (size_t k = 0; k < np; k++) {
                if (k)
                    buf_putc(&b, ',');
                buf_json_str(&b, p[k].name);
                buf_putc(&b, ':');
                buf_json_str(&b, p[k].value);
            }
            if (rl) {
                relabel_set_clear(rl);
                free(rl);
            }
            buf_puts(&b, "},\"annotations\":{");
            for (size_t k = 0; k < a->nann; k++) {
                if (k)
                    buf_putc(&b, ',');
                buf_json_str(&b, a->ann[k].name);
                buf_putc(&b, ':');
                buf_json_str(&b, a->ann[k].value);
            }
            buf_puts(&b, "},\"startsAt\":\"");
            rfc3339(&b, a->fired_at ? a->fired_at : a->active_at);
            buf_puts(&b, "\",\"endsAt\":\"");
            rfc3339(&b, a->state == A_INACTIVE ? a->resolved_at : a->valid_until);
            buf_puts(&b, "\",\"generatorURL\":");
            struct buf u = BUF_INIT;
            char self[NET_ADDRSTRLEN];
            net_addr_format(&pc->listen[0], self, sizeof(self));
            buf_printf(&u, "http://%s/graph?g0.expr=", self);
            for (const char *c = rr->r->expr_text; *c; c++) {
                if (isalnum((unsigned char)*c) || strchr("-_.~", *c))
                    buf_putc(&u, *c);
                else
                    buf_printf(&u, "%%%02X", (unsigned char)*c);
            }
            buf_putc(&u, 0);
            buf_json_str(&b, buf_head(&u));
            buf_free(&u);
            buf_putc(&b, '}');
        }
    }
    buf_putc(&b, ']');
    if (n && pc->nams && ps->am_client) {
        static const char *const hdrs[] = { "Content-Type: application/json", "User-Agent: cairn", NULL };
        for (size_t i = 0; i < pc->nams; i++) {
            struct prom_am *am = (struct prom_am *)&pc->ams[i];    /* its address, looked up once */
            if (!am->addr.len && net_resolve(am->host, &am->addr)) {
                log_warn("cannot resolve an alertmanager", "host", am->host);
                continue;
            }
            struct httpc_request req = {
                .method = "POST", .addr = am->addr, .host = am->host, .target = am->path,
                .headers = hdrs, .body = buf_head(&b), .body_len = buf_used(&b), .tls = am->tls,
                .timeout_ms = (uint32_t)am->timeout_ms,
            };
            if (httpc_send(ps->am_client, &req, notify_done, ps))
                metric_add(ps->m_notifications, (double)n);
        }
    }
    buf_free(&b);
}

static void group_eval(struct prom_group_rt *gr, int64_t ts)
{
    struct prom_svc *ps = gr->ps;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < gr->g->nrules; i++) {
        struct rule_rt *rr = &gr->rules[i];
        struct timespec r0, r1;
        clock_gettime(CLOCK_MONOTONIC, &r0);
        snprintf(rr->health, sizeof(rr->health), "ok");
        rr->last_error[0] = 0;
        struct promql_result res;
        char err[512];
        struct promql_opts o = {
            .lookback_ms = (int64_t)ps->conf->lookback_ms,
            .max_samples = ps->conf->query_max_samples,
            .deadline_ns = (int64_t)r0.tv_sec * 1000000000 + r0.tv_nsec + (int64_t)ps->conf->query_timeout_ms * 1000000,
            .default_step_ms = (int64_t)gr->g->interval_ms,
        };
        metric_inc(ps->m_rule_evals);
        if (promql_eval(&ps->db, rr->r->expr, ts, ts, 0, &o, &res, err, sizeof(err)) == 0) {
            if (rr->r->alert)
                eval_alerting(gr, rr, &res, ts);
            else
                eval_recording(gr, rr, &res, ts);
            promql_result_free(&res);
        } else {
            set_error(rr, err);
        }
        if (strcmp(rr->health, "ok")) {
            metric_inc(ps->m_rule_failures);
            log_warn("rule evaluation failed", "group", gr->g->name, "rule", rr->r->name, "error",
                     rr->last_error);
        }
        mark_stale(ps, rr, ts);
        clock_gettime(CLOCK_MONOTONIC, &r1);
        rr->last_eval = ts;
        rr->eval_secs = (double)(r1.tv_sec - r0.tv_sec) + (double)(r1.tv_nsec - r0.tv_nsec) / 1e9;
    }
    tsdb_commit(&ps->db, false);
    send_alerts(gr, ts);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    gr->last_eval = ts;
    gr->eval_secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

/* The next evaluation time after now: multiples of the interval, offset by a
 * hash of the group, as Prometheus spreads groups. */
static int64_t next_eval(const struct prom_group *g, int64_t now)
{
    uint64_t h = 14695981039346656037ull;
    for (const char *c = g->name; *c; c++)
        h = (h ^ (uint8_t)*c) * 1099511628211ull;
    for (const char *c = g->file; *c; c++)
        h = (h ^ (uint8_t)*c) * 1099511628211ull;
    int64_t iv = (int64_t)g->interval_ms, off = (int64_t)(h % (uint64_t)iv);
    int64_t base = now - ((now - off) % iv + iv) % iv;
    return base + iv;
}

static void group_timer(struct loop_timer *t)
{
    struct prom_group_rt *gr = t->data;
    int64_t now = prom__now_ms();
    int64_t ts = gr->next;
    if (ts > now + 5)
        ts = now;
    group_eval(gr, ts);
    gr->next = next_eval(gr->g, now);
    int64_t wait = gr->next - prom__now_ms();
    loop_timer_start(&gr->ps->loop, t, (uint64_t)(wait > 0 ? wait : 1));
}

int prom__rules_start(struct prom_svc *ps)
{
    const struct prom_conf *pc = ps->conf;
    if (pc->nams && !ps->am_client) {
        struct httpc_opts ho;
        httpc_opts_defaults(&ho);
        ps->am_client = httpc_new(&ps->loop, &ho);
    }
    if (!pc->ngroups)
        return 0;
    ps->groups = calloc(pc->ngroups, sizeof(*ps->groups));
    if (!ps->groups)
        return -ENOMEM;
    ps->ngroups = pc->ngroups;
    int64_t now = prom__now_ms();
    for (size_t i = 0; i < pc->ngroups; i++) {
        struct prom_group_rt *gr = &ps->groups[i];
        gr->ps = ps;
        gr->g = &pc->groups[i];
        gr->rules = calloc(gr->g->nrules + 1, sizeof(*gr->rules));
        if (!gr->rules)
            return -ENOMEM;
        for (size_t k = 0; k < gr->g->nrules; k++) {
            gr->rules[k].r = &gr->g->rules[k];
            snprintf(gr->rules[k].health, sizeof(gr->rules[k].health), "unknown");
        }
        gr->next = next_eval(gr->g, now);
        loop_timer_init(&gr->timer, group_timer, gr);
        loop_timer_start(&ps->loop, &gr->timer, (uint64_t)MAX(gr->next - now, 1));
    }
    return 0;
}

/* Hands the state of rules that stay (same group, name and expression) from the
 * old groups to the new ones. */
static void adopt(struct prom_group_rt *old, size_t nold, struct prom_svc *ps)
{
    for (size_t i = 0; i < ps->ngroups; i++)
        for (size_t o = 0; o < nold; o++) {
            if (strcmp(ps->groups[i].g->name, old[o].g->name) || strcmp(ps->groups[i].g->file, old[o].g->file))
                continue;
            for (size_t k = 0; k < ps->groups[i].g->nrules; k++)
                for (size_t j = 0; j < old[o].g->nrules; j++) {
                    struct rule_rt *n = &ps->groups[i].rules[k], *p = &old[o].rules[j];
                    if (strcmp(n->r->name, p->r->name) || strcmp(n->r->expr_text, p->r->expr_text) ||
                        !p->r)
                        continue;
                    n->alerts = p->alerts;
                    n->nalerts = p->nalerts;
                    n->prev = p->prev;
                    n->nprev = p->nprev;
                    n->capprev = p->capprev;
                    n->restored = true;
                    p->alerts = NULL;
                    p->nalerts = 0;
                    p->prev = NULL;
                    p->nprev = 0;
                    p->capprev = 0;
                }
        }
}

static void groups_free(struct prom_group_rt *gs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        loop_timer_stop(&gs[i].timer);
        for (size_t k = 0; gs[i].rules && k < gs[i].g->nrules; k++) {
            struct rule_rt *rr = &gs[i].rules[k];
            for (size_t a = 0; a < rr->nalerts; a++)
                alert_free(&rr->alerts[a]);
            free(rr->alerts);
            for (size_t w = 0; w < rr->nwritten; w++)
                tsdb_unpin(rr->written[w]);
            for (size_t w = 0; w < rr->nprev; w++)
                tsdb_unpin(rr->prev[w]);
            free(rr->written);
            free(rr->prev);
        }
        free(gs[i].rules);
    }
    free(gs);
}

void prom__rules_stop(struct prom_svc *ps)
{
    groups_free(ps->groups, ps->ngroups);
    ps->groups = NULL;
    ps->ngroups = 0;
    httpc_free(&ps->am_client);
}

void prom__rules_reload(struct prom_svc *ps, struct prom_group_rt *old, size_t nold)
{
    ps->groups = NULL;
    ps->ngroups = 0;
    if (prom__rules_start(ps))
        log_error("out of memory while starting rule groups");
    adopt(old, nold, ps);
    groups_free(old, nold);
}

/* ---- API ---- */

static void labels_obj(struct buf *b, const struct tsdb_label *l, size_t n)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_json_str(b, l[i].name);
        buf_putc(b, ':');
        buf_json_str(b, l[i].value);
    }
    buf_putc(b, '}');
}

static void alert_json(struct buf *b, const struct prom_alert *a)
{
    buf_puts(b, "{\"labels\":");
    labels_obj(b, a->labels.l, a->labels.n);
    buf_puts(b, ",\"annotations\":");
    labels_obj(b, a->ann, a->nann);
    buf_printf(b, ",\"state\":\"%s\",\"activeAt\":\"", a->state == A_FIRING ? "firing" : "pending");
    rfc3339(b, a->active_at);
    char v[64];
    promql_format_float_e(v, sizeof(v), a->value);
    buf_printf(b, "\",\"value\":\"%s\"}", v);
}

static void h_rules(struct prom_svc *ps, struct httpd_req *r, const char *type)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"success\",\"data\":{\"groups\":[");
    for (size_t i = 0; i < ps->ngroups; i++) {
        struct prom_group_rt *gr = &ps->groups[i];
        if (i)
            buf_putc(&b, ',');
        buf_puts(&b, "{\"name\":");
        buf_json_str(&b, gr->g->name);
        buf_puts(&b, ",\"file\":");
        buf_json_str(&b, gr->g->file);
        buf_puts(&b, ",\"rules\":[");
        size_t shown = 0;
        for (size_t k = 0; k < gr->g->nrules; k++) {
            struct rule_rt *rr = &gr->rules[k];
            const struct prom_rule *ru = rr->r;
            if (type && strcmp(type, ru->alert ? "alert" : "record"))
                continue;
            if (shown++)
                buf_putc(&b, ',');
            if (ru->alert) {
                const char *state = "inactive";
                for (size_t a = 0; a < rr->nalerts; a++) {
                    if (rr->alerts[a].state == A_FIRING)
                        state = "firing";
                    else if (rr->alerts[a].state == A_PENDING && strcmp(state, "firing"))
                        state = "pending";
                }
                buf_printf(&b, "{\"state\":\"%s\",\"name\":", state);
                buf_json_str(&b, ru->name);
                buf_puts(&b, ",\"query\":");
                buf_json_str(&b, ru->expr_text);
                buf_printf(&b, ",\"duration\":%g,\"keepFiringFor\":%g,\"labels\":", (double)ru->for_ms / 1000,
                           (double)ru->keep_firing_ms / 1000);
                labels_obj(&b, ru->labels, ru->nlabels);
                buf_puts(&b, ",\"annotations\":");
                labels_obj(&b, ru->annotations, ru->nannotations);
                buf_puts(&b, ",\"alerts\":[");
                size_t na = 0;
                for (size_t a = 0; a < rr->nalerts; a++) {
                    if (rr->alerts[a].state == A_INACTIVE)
                        continue;
                    if (na++)
                        buf_putc(&b, ',');
                    alert_json(&b, &rr->alerts[a]);
                }
                buf_putc(&b, ']');
            } else {
                buf_puts(&b, "{\"name\":");
                buf_json_str(&b, ru->name);
                buf_puts(&b, ",\"query\":");
                buf_json_str(&b, ru->expr_text);
                buf_puts(&b, ",\"labels\":");
                labels_obj(&b, ru->labels, ru->nlabels);
            }
            buf_puts(&b, ",\"health\":");
            buf_json_str(&b, rr->health);
            if (rr->last_error[0]) {
                buf_puts(&b, ",\"lastError\":");
                buf_json_str(&b, rr->last_error);
            }
            buf_printf(&b, ",\"evaluationTime\":%.9f,\"lastEvaluation\":\"", rr->eval_secs);
            if (rr->last_eval)
                rfc3339(&b, rr->last_eval);
            else
                buf_puts(&b, "0001-01-01T00:00:00Z");
            buf_printf(&b, "\",\"type\":\"%s\"}", ru->alert ? "alerting" : "recording");
        }
        buf_printf(&b, "],\"interval\":%g,\"limit\":%llu,\"evaluationTime\":%.9f,\"lastEvaluation\":\"",
                   (double)gr->g->interval_ms / 1000, (unsigned long long)gr->g->limit, gr->eval_secs);
        if (gr->last_eval)
            rfc3339(&b, gr->last_eval);
        else
            buf_puts(&b, "0001-01-01T00:00:00Z");
        buf_puts(&b, "\"}");
    }
    buf_puts(&b, "]}}");
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

static void h_alerts(struct prom_svc *ps, struct httpd_req *r)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"success\",\"data\":{\"alerts\":[");
    size_t n = 0;
    for (size_t i = 0; i < ps->ngroups; i++)
        for (size_t k = 0; k < ps->groups[i].g->nrules; k++) {
            struct rule_rt *rr = &ps->groups[i].rules[k];
            for (size_t a = 0; a < rr->nalerts; a++) {
                if (rr->alerts[a].state == A_INACTIVE)
                    continue;
                if (n++)
                    buf_putc(&b, ',');
                alert_json(&b, &rr->alerts[a]);
            }
        }
    buf_puts(&b, "]}}");
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

bool prom__rules_handle(struct prom_svc *ps, struct httpd_req *r)
{
    struct strv p = r->h.path;
    if (strv_eq_cstr(p, "/api/v1/rules")) {
        const char *type = NULL;
        struct strv q = r->h.query;
        if (q.n >= 10 && memmem(q.p, q.n, "type=alert", 10))
            type = "alert";
        else if (q.n >= 11 && memmem(q.p, q.n, "type=record", 11))
            type = "record";
        h_rules(ps, r, type);
        return true;
    }
    if (strv_eq_cstr(p, "/api/v1/alerts")) {
        h_alerts(ps, r);
        return true;
    }
    return false;
}
