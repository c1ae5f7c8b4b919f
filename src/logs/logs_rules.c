/* logs_rules.c - Loki's ruler: LogQL alerting and recording rules in Loki's (and
 * Prometheus's) rule-file format, evaluated per group every interval as instant
 * queries over the default tenant.
 *
 * Recording rules: each result sample becomes a series named by `record` (plus the
 * rule's labels), sent with Prometheus remote write (snappy protobuf WriteRequest)
 * to remote_write_url (default: the stack's metrics service).
 * Alerting rules: a result series is pending, then firing once it has lasted `for`;
 * active alerts are posted to Alertmanager's API v2 (default: the stack's alerts
 * service) every evaluation, and a resolved one once with its end time.
 * Annotation and alert label values are Go templates with Prometheus's data:
 * {{ $labels.app }}, {{ $value }} (and .Labels, .Value).
 */
#include "logs_internal.h"
#include "core/log.h"
#include "core/gotmpl.h"
#include "core/httpc.h"
#include "core/pb.h"

#include <errno.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lr_alert {
    char *key;                          /* the series' label string */
    struct lq_label *l;                 /* labels (the rule's added), one allocation */
    int nl;
    int64_t active_since;               /* ns */
    double value;
    bool firing, seen;
    int64_t resolved_at;                /* ns; 0 while active */
};

struct lr_rule {
    struct gt_set *tmpl;                /* the annotation and label templates, "a0", "l0", ... */
    char *name;                         /* record or alert */
    bool alert;
    char *expr;
    struct lq_query *q;
    uint64_t for_ms;
    struct lq_label *labels, *annotations;
    int nlabels, nannotations;
    struct lr_alert *alerts;
    int nalerts, capalerts;
};

struct lr_group {
    char *name;
    char *file;
    int64_t last_eval;                  /* ns */
    double eval_seconds;
    uint64_t interval_ms;
    struct lr_rule *rules;
    int nrules;
    struct loop_timer timer;
    struct logs_svc *s;
};

struct logs_ruler {
    struct lr_group *groups;
    int ngroups;
    struct stack_url am, rw;
    bool have_am, have_rw;
    struct httpc *hc;
    uint64_t evals, failures;
};

static void free_pairs(struct lq_label *l, int n)
{
    for (int i = 0; i < n; i++) {
        free((void *)l[i].name);
        free((void *)l[i].value);
    }
    free(l);
}

static int parse_pairs(struct cfg *c, const cfg_node *n, const char *path, struct lq_label **out, int *count)
{
    if (!n || cfg_is_null(n))
        return 0;
    size_t len = cfg_len(n);
    struct lq_label *l = calloc(len + 1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    *out = l;
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        char *k = NULL, *v = NULL;
        cfg_node *kn = cfg_map_key(c, n, i);
        if (!kn)
            return cfg_error(c, n, path, "expected a mapping");
        if (cfg_get_string(c, kn, path, &k) || cfg_get_string(c, cfg_map_value(c, n, i), path, &v)) {
            free(k);
            free(v);
            bad = -EINVAL;
            continue;
        }
        l[(*count)++] = (struct lq_label){ k, v };
    }
    return bad;
}

static int parse_file(struct logs_svc *s, struct logs_ruler *ru, const char *file, struct cfg_errors *errs)
{
    struct cfg c;
    memset(&c, 0, sizeof(c));
    if (cfg_load_file(&c, file, errs)) {
        cfg_free(&c);
        return -EINVAL;
    }
    const cfg_node *root = cfg_root(&c);
    static const char *const keys[] = { "groups", NULL };
    cfg_node *v[1];
    int bad = 0;
    if (!root || cfg_is_null(root) || cfg_map_fields(&c, root, "", keys, v) || !v[0] || !cfg_is_seq(v[0])) {
        bad = root && !cfg_is_null(root) ? cfg_error(&c, root, "groups", "expected a list of groups") : 0;
        cfg_free(&c);
        return bad;
    }
    for (size_t i = 0; i < cfg_len(v[0]); i++) {
        char p[300];
        CFG_PATH(p, "groups[%zu]", i);
        const cfg_node *gn = cfg_seq_item(&c, v[0], i);
        static const char *const gk[] = { "name", "interval", "limit", "rules", "source_tenants", NULL };
        cfg_node *gv[5];
        if (cfg_map_fields(&c, gn, p, gk, gv)) {
            bad = -EINVAL;
            continue;
        }
        struct lr_group *ng = realloc(ru->groups, (size_t)(ru->ngroups + 1) * sizeof(*ng));
        if (!ng) {
            bad = -ENOMEM;
            break;
        }
        ru->groups = ng;
        struct lr_group *g = &ru->groups[ru->ngroups++];
        memset(g, 0, sizeof(*g));
        g->s = s;
        g->interval_ms = 60000;
        g->file = strdup(file);
        char q[340];
        CFG_PATH(q, "%s.name", p);
        if (!gv[0] || cfg_get_string(&c, gv[0], q, &g->name))
            bad = gv[0] ? -EINVAL : cfg_error(&c, gn, p, "missing key \"name\"");
        CFG_PATH(q, "%s.interval", p);
        if (gv[1])
            bad |= cfg_get_duration(&c, gv[1], q, &g->interval_ms);
        if (!g->interval_ms)
            g->interval_ms = 60000;
        const cfg_node *rs = gv[3];
        size_t nr = rs && cfg_is_seq(rs) ? cfg_len(rs) : 0;
        g->rules = calloc(nr + 1, sizeof(*g->rules));
        if (!g->rules) {
            bad = -ENOMEM;
            break;
        }
        for (size_t k = 0; k < nr; k++) {
            char rp[360];
            CFG_PATH(rp, "%s.rules[%zu]", p, k);
            const cfg_node *rn = cfg_seq_item(&c, rs, k);
            static const char *const rk[] = { "record", "alert", "expr", "for", "labels", "annotations",
                                              "keep_firing_for", NULL };
            cfg_node *rv[7];
            if (cfg_map_fields(&c, rn, rp, rk, rv)) {
                bad = -EINVAL;
                continue;
            }
            struct lr_rule *r = &g->rules[g->nrules++];
            r->alert = rv[1] != NULL;
            char kp[380];
            if (!rv[0] == !rv[1]) {
                bad = cfg_error(&c, rn, rp, "a rule has record or alert (one of them)");
                continue;
            }
            CFG_PATH(kp, "%s.%s", rp, r->alert ? "alert" : "record");
            bad |= cfg_get_string(&c, r->alert ? rv[1] : rv[0], kp, &r->name);
            CFG_PATH(kp, "%s.expr", rp);
            if (!rv[2] || cfg_get_string(&c, rv[2], kp, &r->expr)) {
                bad = rv[2] ? -EINVAL : cfg_error(&c, rn, rp, "missing key \"expr\"");
                continue;
            }
            char err[1024];
            if (lq_parse(r->expr, strlen(r->expr), &r->q, err, sizeof(err))) {
                bad = cfg_error(&c, rv[2], kp, "%s", err);
                continue;
            }
            if (!lq_is_metric(r->q))
                bad = cfg_error(&c, rv[2], kp, "a rule's expression is a metric query, not a log query");
            CFG_PATH(kp, "%s.for", rp);
            if (rv[3])
                bad |= cfg_get_duration(&c, rv[3], kp, &r->for_ms);
            CFG_PATH(kp, "%s.labels", rp);
            bad |= parse_pairs(&c, rv[4], kp, &r->labels, &r->nlabels);
            CFG_PATH(kp, "%s.annotations", rp);
            bad |= parse_pairs(&c, rv[5], kp, &r->annotations, &r->nannotations);
            if (r->alert && (r->nlabels || r->nannotations)) {
                r->tmpl = gt_set_new(false);
                if (!r->tmpl || gt_add_text_funcs(r->tmpl)) {
                    bad = -ENOMEM;
                    continue;
                }
                for (int x = 0; x < r->nlabels + r->nannotations; x++) {
                    bool lab = x < r->nlabels;
                    const struct lq_label *pr = lab ? &r->labels[x] : &r->annotations[x - r->nlabels];
                    char name[16], terr[300];
                    snprintf(name, sizeof(name), "%c%d", lab ? 'l' : 'a', lab ? x : x - r->nlabels);
                    struct buf t = { 0 };
                    buf_puts(&t, "{{$labels := .Labels}}{{$value := .Value}}");
                    buf_puts(&t, pr->value);
                    buf_putc(&t, 0);
                    if (gt_parse(r->tmpl, name, buf_head(&t), terr, sizeof(terr)))
                        bad = cfg_error(&c, lab ? rv[4] : rv[5], kp, "%s: %s", pr->name, terr);
                    buf_free(&t);
                }
            }
        }
    }
    cfg_free(&c);
    return bad;
}

/* ---- sending ---- */

static void sent_cb(const struct httpc_response *resp, void *arg)
{
    const char *what = arg;
    if (resp->error || resp->status / 100 != 2)
        log_warn("logs ruler: a send failed", "to", what, "status", log_int(resp->status), "error",
                 resp->error ? cairn_strerror(resp->error) : "");
}

static void post(struct logs_ruler *ru, const struct stack_url *u, const char *const *headers, struct buf *body,
                 const char *what)
{
    struct httpc_request req = {
        .method = "POST", .addr = u->addr, .host = u->host, .target = u->target, .headers = headers,
        .body = buf_head(body), .body_len = buf_used(body), .tls = u->tls, .timeout_ms = 10000,
    };
    if (!httpc_send(ru->hc, &req, sent_cb, (void *)what))
        log_warn("logs ruler: cannot send", "to", what);
}

static void fmt_time(struct buf *b, int64_t ns)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[40];
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
    buf_printf(b, "\"%s.%03lldZ\"", s, (long long)(ns % 1000000000 / 1000000));
}

static int lcmp(const void *a, const void *b)
{
    return strcmp(((const struct lq_label *)a)->name, ((const struct lq_label *)b)->name);
}

/* The result series' labels plus the rule's (the rule's win), sorted. */
static int merged(const struct lr_rule *r, const struct lq_series *s, struct lq_label *out, int max)
{
    int n = 0;
    for (int i = 0; i < s->nl && n < max; i++) {
        bool over = false;
        for (int k = 0; k < r->nlabels; k++)
            over |= !strcmp(r->labels[k].name, s->l[i].name);
        if (!over)
            out[n++] = s->l[i];
    }
    for (int k = 0; k < r->nlabels && n < max; k++)
        out[n++] = r->labels[k];
    qsort(out, (size_t)n, sizeof(*out), lcmp);
    return n;
}

static void record(struct logs_ruler *ru, const struct lr_rule *r, const struct lq_result *res, int64_t now)
{
    if (!ru->have_rw || !res->ns)
        return;
    struct buf req = { 0 };
    for (int i = 0; i < res->ns; i++) {
        if (!res->s[i].has[0])
            continue;
        struct lq_label l[LQ_MAX_LABELS];
        int n = merged(r, &res->s[i], l, LQ_MAX_LABELS - 1);
        struct buf ts = { 0 }, lb = { 0 };
        pb_put_bytes(&lb, 1, "__name__", 8);
        pb_put_bytes(&lb, 2, r->name, strlen(r->name));
        pb_put_bytes(&ts, 1, buf_head(&lb), buf_used(&lb));
        for (int k = 0; k < n; k++) {
            buf_reset(&lb);
            pb_put_bytes(&lb, 1, l[k].name, strlen(l[k].name));
            pb_put_bytes(&lb, 2, l[k].value, strlen(l[k].value));
            pb_put_bytes(&ts, 1, buf_head(&lb), buf_used(&lb));
        }
        buf_reset(&lb);
        double v = res->s[i].v[0];
        uint64_t bits;
        memcpy(&bits, &v, 8);
        buf_putc(&lb, 0x09);                /* field 1, fixed64: the value */
        buf_append(&lb, &bits, 8);
        pb_put_varint(&lb, 2 << 3);         /* field 2, varint: the time in ms */
        pb_put_varint(&lb, (uint64_t)(now / 1000000));
        pb_put_bytes(&ts, 2, buf_head(&lb), buf_used(&lb));
        pb_put_bytes(&req, 1, buf_head(&ts), buf_used(&ts));
        buf_free(&ts);
        buf_free(&lb);
    }
    if (!buf_used(&req)) {
        buf_free(&req);
        return;
    }
    size_t max = snappy_max_compressed_length(buf_used(&req)), clen = max;
    struct buf body = { 0 };
    if (buf_reserve(&body, max) == 0 && snappy_compress(buf_head(&req), buf_used(&req), buf_tail(&body), &clen) == SNAPPY_OK) {
        buf_commit(&body, clen);
        static const char *const h[] = { "Content-Type: application/x-protobuf", "Content-Encoding: snappy",
                                         "X-Prometheus-Remote-Write-Version: 0.1.0", NULL };
        post(ru, &ru->rw, h, &body, "remote_write");
    }
    buf_free(&body);
    buf_free(&req);
}

/* A template of the rule ("l3", "a0") with the alert's labels and value. */
static void expand(const struct lr_rule *r, const char *name, const struct lq_label *l, int nl, double value,
                   struct buf *out)
{
    struct gt_arena *ar = gt_arena_new();
    struct gt_value *labels = ar ? gt_map(ar, (size_t)nl, 0) : NULL, *data = ar ? gt_map(ar, 2, 0) : NULL;
    char err[300];
    if (!labels || !data) {
        gt_arena_free(&ar);
        return;
    }
    labels->missing_empty = true;
    for (int i = 0; i < nl; i++) {
        labels->keys[i] = l[i].name;
        labels->items[i] = gt_str(ar, l[i].value);
    }
    gt_map_sort(labels);
    data->keys[0] = "Labels";
    data->items[0] = labels;
    data->keys[1] = "Value";
    data->items[1] = gt_num(ar, value);
    gt_map_sort(data);
    size_t at = out->len;
    if (gt_exec(r->tmpl, name, data, ar, out, err, sizeof(err))) {
        out->len = at;
        buf_puts(out, err);
    }
    gt_arena_free(&ar);
}

static void alert_json(struct buf *b, const struct lr_rule *r, const struct lr_alert *a, bool *first)
{
    buf_puts(b, *first ? "{\"labels\":{" : ",{\"labels\":{");
    *first = false;
    buf_puts(b, "\"alertname\":");
    buf_json_str(b, r->name);
    for (int i = 0; i < a->nl; i++) {
        if (!strcmp(a->l[i].name, "alertname"))
            continue;
        buf_putc(b, ',');
        buf_json_str(b, a->l[i].name);
        buf_putc(b, ':');
        buf_json_str(b, a->l[i].value);
    }
    buf_puts(b, "},\"annotations\":{");
    for (int i = 0; i < r->nannotations; i++) {
        if (i)
            buf_putc(b, ',');
        buf_json_str(b, r->annotations[i].name);
        buf_putc(b, ':');
        struct buf v = { 0 };
        char name[16];
        snprintf(name, sizeof(name), "a%d", i);
        expand(r, name, a->l, a->nl, a->value, &v);
        buf_putc(&v, 0);
        buf_json_str(b, buf_head(&v));
        buf_free(&v);
    }
    buf_puts(b, "},\"startsAt\":");
    fmt_time(b, a->active_since);
    if (a->resolved_at) {
        buf_puts(b, ",\"endsAt\":");
        fmt_time(b, a->resolved_at);
    }
    buf_puts(b, ",\"generatorURL\":\"/loki/api/v1/query?query=");
    struct buf enc = { 0 };
    gt_url_query_escape(&enc, r->expr);
    buf_json_escape(b, buf_head(&enc), buf_used(&enc));
    buf_free(&enc);
    buf_puts(b, "\"}");
}

static void alerts(struct logs_ruler *ru, struct lr_rule *r, const struct lq_result *res, int64_t now,
                   struct buf *out, bool *first)
{
    for (int i = 0; i < r->nalerts; i++)
        r->alerts[i].seen = false;
    for (int i = 0; i < res->ns; i++) {
        if (!res->s[i].has[0])
            continue;
        struct lq_label l[LQ_MAX_LABELS];
        int n = merged(r, &res->s[i], l, LQ_MAX_LABELS);
        /* the rule's label values are templates over the series' own labels */
        struct buf lv[16];
        int nlv = 0;
        for (int k = 0; k < r->nlabels && k < 16 && r->tmpl; k++) {
            char name[16];
            snprintf(name, sizeof(name), "l%d", k);
            memset(&lv[nlv], 0, sizeof(lv[nlv]));
            expand(r, name, res->s[i].l, res->s[i].nl, res->s[i].v[0], &lv[nlv]);
            buf_putc(&lv[nlv], 0);
            for (int x = 0; x < n; x++)
                if (!strcmp(l[x].name, r->labels[k].name))
                    l[x].value = buf_head(&lv[nlv]);
            nlv++;
        }
        struct buf key = { 0 };
        lq_labels_string(&key, l, n);
        buf_putc(&key, 0);
        struct lr_alert *a = NULL;
        for (int k = 0; k < r->nalerts && !a; k++)
            if (!strcmp(r->alerts[k].key, buf_head(&key)) && !r->alerts[k].resolved_at)
                a = &r->alerts[k];
        if (!a) {
            if (r->nalerts == r->capalerts) {
                int cap = r->capalerts ? r->capalerts * 2 : 8;
                struct lr_alert *v = realloc(r->alerts, (size_t)cap * sizeof(*v));
                if (!v) {
                    buf_free(&key);
                    for (int k = 0; k < nlv; k++)
                        buf_free(&lv[k]);
                    continue;
                }
                r->alerts = v;
                r->capalerts = cap;
            }
            a = &r->alerts[r->nalerts++];
            memset(a, 0, sizeof(*a));
            a->key = buf_steal(&key);
            a->l = calloc((size_t)(n ? n : 1), sizeof(*a->l));
            for (int k = 0; a->l && k < n; k++)
                a->l[k] = (struct lq_label){ strdup(l[k].name), strdup(l[k].value) };
            a->nl = a->l ? n : 0;
            a->active_since = now;
        }
        buf_free(&key);
        for (int k = 0; k < nlv; k++)
            buf_free(&lv[k]);
        a->seen = true;
        a->value = res->s[i].v[0];
        if (!a->firing && now - a->active_since >= (int64_t)r->for_ms * 1000000) {
            a->firing = true;
            log_info("logs ruler: alert firing", "alert", r->name, "labels", a->key);
        }
    }
    /* gone from the result: resolved (sent once), then forgotten */
    int w = 0;
    for (int i = 0; i < r->nalerts; i++) {
        struct lr_alert *a = &r->alerts[i];
        if (!a->seen && !a->resolved_at) {
            a->resolved_at = now;
            if (a->firing) {
                alert_json(out, r, a, first);
                log_info("logs ruler: alert resolved", "alert", r->name, "labels", a->key);
            }
        } else if (a->firing) {
            alert_json(out, r, a, first);
        }
        if (a->resolved_at) {
            free(a->key);
            free_pairs(a->l, a->nl);
            continue;
        }
        r->alerts[w++] = *a;
    }
    r->nalerts = w;
    (void)ru;
}

static void eval_group(struct loop_timer *t)
{
    struct lr_group *g = t->data;
    struct logs_svc *s = g->s;
    struct logs_ruler *ru = s->ruler;
    int64_t now = (int64_t)(cairn_wall_time() * 1e9);
    uint64_t t0 = cairn_now_ns();
    struct buf am = { 0 };
    bool first = true;
    buf_putc(&am, '[');
    for (int i = 0; i < g->nrules; i++) {
        struct lr_rule *r = &g->rules[i];
        struct lq_params p = { .start = now, .end = now, .instant = true, .limit = 100,
                               .max_series = s->conf->limits.max_series };
        struct ls_query_ctx ctx = { &s->store, s->conf->default_tenant, 0, 0 };
        struct lq_source src = { &ctx, logs_store_select };
        struct lq_result res;
        char err[1024];
        ru->evals++;
        if (lq_eval(r->q, &p, &src, &res, err, sizeof(err))) {
            ru->failures++;
            log_warn("logs ruler: a rule failed", "group", g->name, "rule", r->name, "error", err);
            continue;
        }
        if (res.type == LQ_RES_SCALAR) {
            lq_result_free(&res);
            continue;
        }
        if (r->alert)
            alerts(ru, r, &res, now, &am, &first);
        else
            record(ru, r, &res, now);
        lq_result_free(&res);
    }
    buf_putc(&am, ']');
    g->last_eval = now;
    g->eval_seconds = (double)(cairn_now_ns() - t0) / 1e9;
    if (!first && ru->have_am) {
        static const char *const h[] = { "Content-Type: application/json", NULL };
        post(ru, &ru->am, h, &am, "alertmanager");
    }
    buf_free(&am);
    if (!service_stopping(s->sc))
        loop_timer_start(&s->pool.w[0].loop, &g->timer, g->interval_ms);
}

/* The URL of the first service of role in the stack, plus path. */
static bool stack_service_url(const struct stack *st, const char *role, const char *path, struct stack_url *u)
{
    for (size_t i = 0; i < st->nservices; i++)
        if (!strcmp(st->services[i].role->name, role) && st->services[i].nendpoints) {
            char url[300], err[256];
            const char *base = st->services[i].endpoints[0].url;
            size_t bl = strlen(base);
            snprintf(url, sizeof(url), "%.*s%s", (int)(bl && base[bl - 1] == '/' ? bl - 1 : bl), base, path);
            return stack_url_parse(url, u, err, sizeof(err)) == 0;
        }
    return false;
}

int logs__rules_start(struct logs_svc *s)
{
    const struct logs_conf *c = s->conf;
    if (!c->nrule_files)
        return 0;
    struct logs_ruler *ru = calloc(1, sizeof(*ru));
    if (!ru)
        return -ENOMEM;
    s->ruler = ru;
    struct cfg_errors errs;
    memset(&errs, 0, sizeof(errs));
    for (size_t i = 0; i < c->nrule_files; i++) {
        char *path = stack_path(s->svc->stack, c->rule_files[i]);
        int r = path ? parse_file(s, ru, path, &errs) : -ENOMEM;
        free(path);
        if (r) {
            for (size_t k = 0; k < errs.n; k++)
                log_error("logs ruler: a rule file is wrong", "error", errs.msgs[k]);
            cfg_errors_free(&errs);
            return -EINVAL;
        }
    }
    cfg_errors_free(&errs);
    char err[256];
    if (c->alertmanager_url)
        ru->have_am = stack_url_parse(c->alertmanager_url, &ru->am, err, sizeof(err)) == 0;
    else
        ru->have_am = stack_service_url(s->svc->stack, "alerts", "/api/v2/alerts", &ru->am);
    if (c->remote_write_url)
        ru->have_rw = stack_url_parse(c->remote_write_url, &ru->rw, err, sizeof(err)) == 0;
    else
        ru->have_rw = stack_service_url(s->svc->stack, "metrics", "/api/v1/write", &ru->rw);
    struct httpc_opts ho;
    httpc_opts_defaults(&ho);
    if (!(ru->hc = httpc_new(&s->pool.w[0].loop, &ho)))
        return -ENOMEM;
    int nrules = 0;
    for (int i = 0; i < ru->ngroups; i++) {
        loop_timer_init(&ru->groups[i].timer, eval_group, &ru->groups[i]);
        loop_timer_start(&s->pool.w[0].loop, &ru->groups[i].timer, ru->groups[i].interval_ms);
        nrules += ru->groups[i].nrules;
    }
    log_info("logs ruler: rules loaded", "groups", log_int(ru->ngroups), "rules", log_int(nrules), "alertmanager",
             ru->have_am ? ru->am.text : "(none)", "remote_write", ru->have_rw ? ru->rw.text : "(none)");
    return 0;
}

void logs__rules_stop(struct logs_svc *s)
{
    struct logs_ruler *ru = s->ruler;
    if (!ru)
        return;
    for (int i = 0; i < ru->ngroups; i++) {
        struct lr_group *g = &ru->groups[i];
        loop_timer_stop(&g->timer);
        for (int k = 0; k < g->nrules; k++) {
            struct lr_rule *r = &g->rules[k];
            free(r->name);
            free(r->expr);
            lq_query_free(&r->q);
            free_pairs(r->labels, r->nlabels);
            free_pairs(r->annotations, r->nannotations);
            for (int a = 0; a < r->nalerts; a++) {
                free(r->alerts[a].key);
                free_pairs(r->alerts[a].l, r->alerts[a].nl);
            }
            free(r->alerts);
            gt_set_free(&r->tmpl);
        }
        free(g->rules);
        free(g->name);
        free(g->file);
    }
    free(ru->groups);
    httpc_free(&ru->hc);
    if (ru->have_am)
        stack_url_free(&ru->am);
    if (ru->have_rw)
        stack_url_free(&ru->rw);
    free(ru);
    s->ruler = NULL;
}

/* ---- the Prometheus-style rules API Grafana reads ---- */

static void put_alert(struct buf *b, const struct lr_rule *r, const struct lr_alert *a)
{
    buf_puts(b, "{\"labels\":");
    struct lq_label l[LQ_MAX_LABELS];
    int n = 0;
    l[n++] = (struct lq_label){ "alertname", r->name };
    for (int i = 0; i < a->nl && n < LQ_MAX_LABELS; i++)
        if (strcmp(a->l[i].name, "alertname"))
            l[n++] = a->l[i];
    qsort(l, (size_t)n, sizeof(*l), lcmp);
    logs__labels_json(b, l, n);
    buf_puts(b, ",\"annotations\":");
    logs__labels_json(b, r->annotations, r->nannotations);
    buf_printf(b, ",\"state\":\"%s\",\"activeAt\":", a->firing ? "firing" : "pending");
    fmt_time(b, a->active_since);
    buf_puts(b, ",\"value\":\"");
    buf_put_float(b, a->value, 'e');
    buf_puts(b, "\"}");
}

/* GET /prometheus/api/v1/rules and /prometheus/api/v1/alerts. */
void logs__rules_api(struct logs_svc *s, struct httpd_req *r, bool alerts_only)
{
    struct logs_ruler *ru = s->ruler;
    struct buf b = { 0 };
    buf_puts(&b, alerts_only ? "{\"status\":\"success\",\"data\":{\"alerts\":["
                             : "{\"status\":\"success\",\"data\":{\"groups\":[");
    int ka = 0;
    for (int gi = 0; ru && gi < ru->ngroups; gi++) {
        const struct lr_group *g = &ru->groups[gi];
        if (!alerts_only) {
            buf_puts(&b, gi ? ",{\"name\":" : "{\"name\":");
            buf_json_str(&b, g->name);
            buf_puts(&b, ",\"file\":");
            buf_json_str(&b, g->file);
            buf_printf(&b, ",\"interval\":%g,\"lastEvaluation\":", (double)g->interval_ms / 1000);
            if (g->last_eval)
                fmt_time(&b, g->last_eval);
            else
                buf_puts(&b, "\"0001-01-01T00:00:00Z\"");
            buf_printf(&b, ",\"evaluationTime\":%g,\"rules\":[", g->eval_seconds);
        }
        for (int k = 0; k < g->nrules; k++) {
            const struct lr_rule *rl = &g->rules[k];
            if (alerts_only) {
                for (int a = 0; a < rl->nalerts; a++) {
                    if (ka++)
                        buf_putc(&b, ',');
                    put_alert(&b, rl, &rl->alerts[a]);
                }
                continue;
            }
            buf_puts(&b, k ? ",{\"name\":" : "{\"name\":");
            buf_json_str(&b, rl->name);
            buf_puts(&b, ",\"query\":");
            buf_json_str(&b, rl->expr);
            buf_puts(&b, ",\"labels\":");
            logs__labels_json(&b, rl->labels, rl->nlabels);
            buf_puts(&b, ",\"health\":\"ok\"");
            if (rl->alert) {
                bool firing = false, pending = false;
                for (int a = 0; a < rl->nalerts; a++) {
                    firing |= rl->alerts[a].firing;
                    pending |= !rl->alerts[a].firing;
                }
                buf_printf(&b, ",\"type\":\"alerting\",\"state\":\"%s\",\"duration\":%g,\"annotations\":",
                           firing ? "firing" : pending ? "pending" : "inactive", (double)rl->for_ms / 1000);
                logs__labels_json(&b, rl->annotations, rl->nannotations);
                buf_puts(&b, ",\"alerts\":[");
                for (int a = 0; a < rl->nalerts; a++) {
                    if (a)
                        buf_putc(&b, ',');
                    put_alert(&b, rl, &rl->alerts[a]);
                }
                buf_putc(&b, ']');
            } else {
                buf_puts(&b, ",\"type\":\"recording\"");
            }
            buf_putc(&b, '}');
        }
        if (!alerts_only)
            buf_puts(&b, "]}");
    }
    buf_puts(&b, "]}}");
    httpd_respond(r, 200, "application/json", buf_head(&b), buf_used(&b));
    buf_free(&b);
}
