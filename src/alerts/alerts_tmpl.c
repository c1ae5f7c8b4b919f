/* alerts_tmpl.c - Go templates in receiver fields and `templates:` files.
 *
 * The data is Alertmanager's template.Data: .Receiver, .Status, .Alerts (with the
 * methods .Firing and .Resolved), .GroupLabels, .CommonLabels, .CommonAnnotations
 * (KV maps with .SortedPairs, .Names, .Values, .Remove), .ExternalURL; each alert
 * has .Status, .Labels, .Annotations, .StartsAt, .EndsAt, .GeneratorURL,
 * .Fingerprint. The functions are Alertmanager's: toUpper, toLower, title, join,
 * match, reReplaceAll, safeHtml, stringSlice, plus Go's builtins. The default
 * templates (__subject, slack.default.*, email.default.*) are defined so that a
 * user template can call them; they render what cairn's built-in defaults render.
 *
 * A templated field is stored as "\x01" followed by its template's name; plain
 * text is stored as it is.
 */
#include "alerts_internal.h"
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

enum { TAG_KV = 1, TAG_ALERTS, TAG_PAIRS, TAG_TIME };

/* Go's time.Format for UTC times: the reference layout's elements
 * (Mon Jan 2 15:04:05 MST 2006, numeric zones, fractional seconds). */
static void go_time_format(struct buf *b, int64_t ns, const char *layout)
{
    static const char *const months[] = { "January", "February", "March", "April", "May", "June",
                                          "July", "August", "September", "October", "November",
                                          "December" };
    static const char *const days[] = { "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday",
                                        "Friday", "Saturday" };
    time_t t = (time_t)(ns / 1000000000);
    int64_t frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        t--;
    }
    struct tm tm;
    gmtime_r(&t, &tm);
    const char *p = layout;
    while (*p) {
#define TAKE(lit) (strncmp(p, lit, strlen(lit)) == 0 ? (p += strlen(lit), true) : false)
        if (TAKE("January")) buf_puts(b, months[tm.tm_mon]);
        else if (TAKE("Jan")) buf_printf(b, "%.3s", months[tm.tm_mon]);
        else if (TAKE("Monday")) buf_puts(b, days[tm.tm_wday]);
        else if (TAKE("Mon")) buf_printf(b, "%.3s", days[tm.tm_wday]);
        else if (TAKE("MST")) buf_puts(b, "UTC");
        else if (TAKE("2006")) buf_printf(b, "%04d", tm.tm_year + 1900);
        else if (TAKE("002")) buf_printf(b, "%03d", tm.tm_yday + 1);
        else if (TAKE("01")) buf_printf(b, "%02d", tm.tm_mon + 1);
        else if (TAKE("02")) buf_printf(b, "%02d", tm.tm_mday);
        else if (TAKE("03")) buf_printf(b, "%02d", tm.tm_hour % 12 ? tm.tm_hour % 12 : 12);
        else if (TAKE("04")) buf_printf(b, "%02d", tm.tm_min);
        else if (TAKE("05")) buf_printf(b, "%02d", tm.tm_sec);
        else if (TAKE("06")) buf_printf(b, "%02d", (tm.tm_year + 1900) % 100);
        else if (TAKE("15")) buf_printf(b, "%02d", tm.tm_hour);
        else if (TAKE("_2")) buf_printf(b, "%2d", tm.tm_mday);
        else if (TAKE("1")) buf_printf(b, "%d", tm.tm_mon + 1);
        else if (TAKE("2")) buf_printf(b, "%d", tm.tm_mday);
        else if (TAKE("3")) buf_printf(b, "%d", tm.tm_hour % 12 ? tm.tm_hour % 12 : 12);
        else if (TAKE("4")) buf_printf(b, "%d", tm.tm_min);
        else if (TAKE("5")) buf_printf(b, "%d", tm.tm_sec);
        else if (TAKE("PM")) buf_puts(b, tm.tm_hour >= 12 ? "PM" : "AM");
        else if (TAKE("pm")) buf_puts(b, tm.tm_hour >= 12 ? "pm" : "am");
        else if (TAKE("Z07:00") || TAKE("Z0700") || TAKE("Z07")) buf_putc(b, 'Z');
        else if (TAKE("-07:00")) buf_puts(b, "+00:00");
        else if (TAKE("-0700")) buf_puts(b, "+0000");
        else if (TAKE("-07")) buf_puts(b, "+00");
        else if ((p[0] == '.' || p[0] == ',') && (p[1] == '0' || p[1] == '9')) {
            char d = p[1];
            size_t n = 1;
            while (p[n] == d)
                n++;
            if (isdigit((unsigned char)p[n])) {     /* not a fraction: a literal */
                buf_putc(b, *p++);
                continue;
            }
            size_t digits = n - 1 > 9 ? 9 : n - 1;
            char f[16];
            snprintf(f, sizeof(f), "%09lld", (long long)frac);
            f[digits] = 0;
            if (d == '9') {         /* trailing zeros (and the dot) dropped */
                size_t l = strlen(f);
                while (l && f[l - 1] == '0')
                    f[--l] = 0;
                if (l)
                    buf_printf(b, "%c%s", p[0], f);
            } else {
                buf_printf(b, "%c%s", p[0], f);
            }
            p += n;
        } else
            buf_putc(b, *p++);
#undef TAKE
    }
}

static const char builtin_templates[] =
    "{{ define \"__alertmanager\" }}Alertmanager{{ end }}"
    "{{ define \"__alertmanagerURL\" }}{{ .ExternalURL }}/#/alerts?receiver={{ .Receiver | urlquery }}{{ end }}"
    "{{ define \"__subject\" }}[{{ .Status | toUpper }}{{ if eq .Status \"firing\" }}:{{ .Alerts.Firing | len }}{{ end }}] "
    "{{ .GroupLabels.SortedPairs.Values | join \" \" }} "
    "{{ if gt (len .CommonLabels) (len .GroupLabels) }}({{ with .CommonLabels.Remove .GroupLabels.Names }}"
    "{{ .Values | join \" \" }}{{ end }}){{ end }}{{ end }}"
    "{{ define \"__description\" }}{{ end }}"
    "{{ define \"__text_alert_list\" }}{{ range . }}Labels:\n"
    "{{ range .Labels.SortedPairs }} - {{ .Name }} = {{ .Value }}\n{{ end }}Annotations:\n"
    "{{ range .Annotations.SortedPairs }} - {{ .Name }} = {{ .Value }}\n{{ end }}Source: {{ .GeneratorURL }}\n"
    "{{ end }}{{ end }}"
    "{{ define \"slack.default.title\" }}{{ template \"__subject\" . }}{{ end }}"
    "{{ define \"slack.default.username\" }}{{ template \"__alertmanager\" . }}{{ end }}"
    "{{ define \"slack.default.titlelink\" }}{{ template \"__alertmanagerURL\" . }}{{ end }}"
    "{{ define \"slack.default.fallback\" }}{{ template \"slack.default.title\" . }} | "
    "{{ template \"slack.default.titlelink\" . }}{{ end }}"
    "{{ define \"slack.default.callbackid\" }}{{ end }}"
    "{{ define \"slack.default.pretext\" }}{{ end }}"
    "{{ define \"slack.default.iconemoji\" }}{{ end }}"
    "{{ define \"slack.default.iconurl\" }}{{ end }}"
    "{{ define \"slack.default.text\" }}{{ end }}"
    "{{ define \"slack.default.footer\" }}{{ end }}"
    "{{ define \"pagerduty.default.description\" }}{{ template \"__subject\" . }}{{ end }}"
    "{{ define \"pagerduty.default.client\" }}{{ template \"__alertmanager\" . }}{{ end }}"
    "{{ define \"pagerduty.default.clientURL\" }}{{ template \"__alertmanagerURL\" . }}{{ end }}"
    "{{ define \"pagerduty.default.instances\" }}{{ template \"__text_alert_list\" . }}{{ end }}"
    "{{ define \"opsgenie.default.message\" }}{{ template \"__subject\" . }}{{ end }}"
    "{{ define \"opsgenie.default.description\" }}{{ .CommonAnnotations.SortedPairs.Values | join \" \" }}\n"
    "{{ if gt (len .Alerts.Firing) 0 -}}\nAlerts Firing:\n{{ template \"__text_alert_list\" .Alerts.Firing }}\n{{- end }}\n"
    "{{ if gt (len .Alerts.Resolved) 0 -}}\nAlerts Resolved:\n{{ template \"__text_alert_list\" .Alerts.Resolved }}\n{{- end }}\n"
    "{{- end }}"
    "{{ define \"opsgenie.default.source\" }}{{ template \"__alertmanagerURL\" . }}{{ end }}"
    "{{ define \"email.default.subject\" }}{{ template \"__subject\" . }}{{ end }}"
    "{{ define \"email.default.html\" }}<!DOCTYPE html><html><body>"
    "<h2>{{ template \"__subject\" . }}</h2>"
    "<p><a href=\"{{ template \"__alertmanagerURL\" . }}\">View in Alertmanager</a></p>"
    "{{ range .Alerts }}<p><b>{{ .Status }}</b><br/>{{ range .Labels.SortedPairs }}{{ .Name }} = {{ .Value }}<br/>{{ end }}"
    "{{ range .Annotations.SortedPairs }}{{ .Name }} = {{ .Value }}<br/>{{ end }}"
    "<a href=\"{{ .GeneratorURL }}\">Source</a></p>{{ end }}</body></html>{{ end }}";

/* ---- functions (toUpper, toLower, title, match, reReplaceAll and safeHtml are
 * core's, shared with Prometheus's templates) ---- */

static struct gt_value *f_trim(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!gt_want_strings(v, n, 1, e, el))
        return NULL;
    const char *s = v[0]->s;
    while (isspace((unsigned char)*s))
        s++;
    size_t l = strlen(s);
    while (l && isspace((unsigned char)s[l - 1]))
        l--;
    struct gt_value *r = gt_str(a, "");
    if (r)
        r->s = gt_strdup(a, s, l);
    return r;
}

static struct gt_value *f_join(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                               size_t errlen)
{
    if (n != 2 || v[0]->k != GT_STR || v[1]->k != GT_LIST) {
        snprintf(err, errlen, "join wants a separator and a list");
        return NULL;
    }
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < v[1]->n; i++) {
        if (i)
            buf_puts(&b, v[0]->s);
        gt_print(&b, v[1]->items[i]);
    }
    struct gt_value *r = gt_str(a, "");
    if (r)
        r->s = gt_strdup(a, b.data ? buf_head(&b) : "", buf_used(&b));
    buf_free(&b);
    return r;
}

static struct gt_value *f_slice(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                size_t errlen)
{
    (void)err;
    (void)errlen;
    struct gt_value *r = gt_list(a, n, 0);
    for (size_t i = 0; r && i < n; i++)
        r->items[i] = v[i];
    return r;
}

/* ---- methods ---- */

static struct gt_value *kv(struct gt_arena *a, const struct am_lset *ls)
{
    struct gt_value *m = gt_map(a, ls->n, TAG_KV);
    if (!m)
        return NULL;
    m->missing_empty = true;
    for (size_t i = 0; i < ls->n; i++) {
        m->keys[i] = ls->l[i].name;     /* the alert outlives the arena */
        struct gt_value *s = gt_alloc(a, sizeof(*s));
        if (!s)
            return NULL;
        s->k = GT_STR;
        s->s = ls->l[i].value;
        m->items[i] = s;
    }
    return m;                   /* label sets are sorted already */
}

static struct gt_value *methods(struct gt_arena *a, struct gt_value *recv, const char *name,
                                struct gt_value **args, size_t nargs, bool *found, char *err,
                                size_t errlen)
{
    *found = true;
    if (recv->k == GT_MAP && recv->tag == TAG_KV) {
        if (!strcmp(name, "SortedPairs") && !nargs) {
            struct gt_value *l = gt_list(a, recv->n, TAG_PAIRS);
            for (size_t i = 0; l && i < recv->n; i++) {
                struct gt_value *p = gt_map(a, 2, 0);
                if (!p)
                    return NULL;
                p->keys[0] = "Name";
                p->items[0] = gt_str(a, recv->keys[i]);
                p->keys[1] = "Value";
                p->items[1] = recv->items[i];
                l->items[i] = p;
            }
            return l;
        }
        if ((!strcmp(name, "Names") || !strcmp(name, "Values")) && !nargs) {
            struct gt_value *l = gt_list(a, recv->n, 0);
            for (size_t i = 0; l && i < recv->n; i++)
                l->items[i] = name[0] == 'N' ? gt_str(a, recv->keys[i]) : recv->items[i];
            return l;
        }
        if (!strcmp(name, "Remove")) {
            if (nargs != 1 || args[0]->k != GT_LIST) {
                snprintf(err, errlen, "Remove wants a list of names");
                return NULL;
            }
            struct gt_value *m = gt_map(a, recv->n, TAG_KV);
            if (!m)
                return NULL;
            m->missing_empty = true;
            m->n = 0;
            for (size_t i = 0; i < recv->n; i++) {
                bool drop = false;
                for (size_t k = 0; k < args[0]->n && !drop; k++)
                    drop = args[0]->items[k]->k == GT_STR && !strcmp(args[0]->items[k]->s, recv->keys[i]);
                if (!drop) {
                    m->keys[m->n] = recv->keys[i];
                    m->items[m->n++] = recv->items[i];
                }
            }
            return m;
        }
    }
    if (recv->k == GT_STR && recv->tag == TAG_TIME) {
        /* times are seconds since the epoch; outside year 1..9999 (or NaN) they read as zero */
        double secs = recv->num >= -6.2e10 && recv->num <= 2.6e11 ? recv->num : 0;
        int64_t ns = (int64_t)secs * 1000000000 + (int64_t)((secs - floor(secs)) * 1e9 + 0.5);
        if (!strcmp(name, "Format") && nargs == 1 && args[0]->k == GT_STR) {
            struct buf b = BUF_INIT;
            if (ns || recv->num)
                go_time_format(&b, ns, args[0]->s);
            else
                buf_puts(&b, "0001-01-01 00:00:00 +0000 UTC");
            buf_putc(&b, 0);
            struct gt_value *r = gt_str(a, buf_head(&b));
            buf_free(&b);
            return r;
        }
        if ((!strcmp(name, "Unix") || !strcmp(name, "UnixMilli")) && !nargs)
            return gt_num(a, floor(name[4] ? recv->num * 1000 : recv->num));
        if ((!strcmp(name, "UTC") || !strcmp(name, "Local") || !strcmp(name, "String")) && !nargs)
            return recv;
        if (!strcmp(name, "IsZero") && !nargs)
            return gt_bool(a, recv->num == 0);
    }
    if (recv->k == GT_LIST && recv->tag == TAG_ALERTS &&
        (!strcmp(name, "Firing") || !strcmp(name, "Resolved")) && !nargs) {
        struct gt_value *l = gt_list(a, recv->n, TAG_ALERTS);
        if (!l)
            return NULL;
        l->n = 0;
        for (size_t i = 0; i < recv->n; i++) {
            struct gt_value *st = gt_map_get(recv->items[i], "Status");
            if (st && st->k == GT_STR && !strcmp(st->s, name[0] == 'F' ? "firing" : "resolved"))
                l->items[l->n++] = recv->items[i];
        }
        return l;
    }
    if (recv->k == GT_LIST && recv->tag == TAG_PAIRS &&
        (!strcmp(name, "Names") || !strcmp(name, "Values")) && !nargs) {
        struct gt_value *l = gt_list(a, recv->n, 0);
        for (size_t i = 0; l && i < recv->n; i++)
            l->items[i] = gt_map_get(recv->items[i], name[0] == 'N' ? "Name" : "Value");
        return l;
    }
    *found = false;
    return NULL;
}

/* ---- setup ---- */

static int new_set(struct gt_set **out, bool html, char *err, size_t errlen)
{
    struct gt_set *s = gt_set_new(html);
    if (!s)
        return -ENOMEM;
    static const struct { const char *name; gt_func fn; } fns[] = {
        { "join", f_join }, { "stringSlice", f_slice }, { "trimSpace", f_trim },
    };
    int r = gt_add_text_funcs(s);
    for (size_t i = 0; !r && i < ARRAY_SIZE(fns); i++)
        r = gt_set_func(s, fns[i].name, fns[i].fn);
    if (r) {
        gt_set_free(&s);
        return -ENOMEM;
    }
    gt_set_methods(s, methods);
    r = gt_parse(s, "default.tmpl", builtin_templates, err, errlen);
    if (r) {
        gt_set_free(&s);
        return r;
    }
    *out = s;
    return 0;
}

int am__tmpl_setup(struct am_conf *ac, char *err, size_t errlen)
{
    if (ac->tmpl_text)
        return 0;
    int r = new_set(&ac->tmpl_text, false, err, errlen);
    if (!r)
        r = new_set(&ac->tmpl_html, true, err, errlen);
    return r;
}

int am__tmpl_file(struct am_conf *ac, const char *path, char *err, size_t errlen)
{
    struct cfg_errors e = { 0 };
    char *text;
    size_t len;
    if (cfg_read_file(path, &text, &len, &e)) {
        snprintf(err, errlen, "%s", e.n ? e.msgs[0] : "cannot read");
        cfg_errors_free(&e);
        return -EINVAL;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int r = gt_parse(ac->tmpl_text, base, text, err, errlen);
    if (!r)
        r = gt_parse(ac->tmpl_html, base, text, err, errlen);
    free(text);
    return r;
}

int am__tmpl_field(struct am_conf *ac, const char *name, const char *text, char **out, char *err,
                   size_t errlen)
{
    int r = gt_parse(ac->tmpl_text, name, text, err, errlen);
    if (!r)
        r = gt_parse(ac->tmpl_html, name, text, err, errlen);
    if (r)
        return r;
    size_t l = strlen(name);
    *out = malloc(l + 2);
    if (!*out)
        return -ENOMEM;
    (*out)[0] = '\x01';
    memcpy(*out + 1, name, l + 1);
    return 0;
}

void am__tmpl_free(struct am_conf *ac)
{
    gt_set_free(&ac->tmpl_text);
    gt_set_free(&ac->tmpl_html);
}

/* ---- rendering ---- */

static void go_time(struct buf *b, int64_t ns)
{
    if (ns == 0) {
        buf_puts(b, "0001-01-01 00:00:00 +0000 UTC");
        return;
    }
    time_t t = (time_t)(ns / 1000000000);
    int64_t frac = ns % 1000000000;
    struct tm tm;
    gmtime_r(&t, &tm);
    buf_printf(b, "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
               tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (frac) {
        char f[16];
        snprintf(f, sizeof(f), "%09lld", (long long)frac);
        size_t n = 9;
        while (n && f[n - 1] == '0')
            n--;
        buf_printf(b, ".%.*s", (int)n, f);
    }
    buf_puts(b, " +0000 UTC");
}

static struct gt_value *str_from(struct gt_arena *a, struct buf *b)
{
    struct gt_value *v = gt_str(a, "");
    if (v)
        v->s = gt_strdup(a, b->data ? buf_head(b) : "", buf_used(b));
    buf_reset(b);
    return v;
}

static struct gt_value *build_data(struct am_send *sd, struct gt_arena *a)
{
    const struct am_flush *f = sd->f;
    const struct am_group *g = f->g;
    const struct am_conf *ac = g->s->conf;
    struct buf b = BUF_INIT;
    struct gt_value *alerts = gt_list(a, sd->nalerts, TAG_ALERTS);
    if (!alerts)
        return NULL;
    size_t nfiring = 0;
    for (size_t i = 0; i < sd->nalerts; i++) {
        const struct am_alert *al = sd->alerts[i];
        bool res = am__alert_resolved_at(al, f->now);
        nfiring += !res;
        struct gt_value *m = gt_map(a, 7, 0);
        if (!m)
            return NULL;
        m->keys[0] = "Status";
        m->items[0] = gt_str(a, res ? "resolved" : "firing");
        m->keys[1] = "Labels";
        m->items[1] = kv(a, &al->labels);
        m->keys[2] = "Annotations";
        m->items[2] = kv(a, &al->annotations);
        m->keys[3] = "StartsAt";
        go_time(&b, al->starts_at);
        m->items[3] = str_from(a, &b);
        m->keys[4] = "EndsAt";
        go_time(&b, res ? al->ends_at : 0);
        m->items[4] = str_from(a, &b);
        /* times print as Go's time.String() and answer .Format, .Unix, ... */
        if (m->items[3]) {
            m->items[3]->tag = TAG_TIME;
            m->items[3]->num = (double)al->starts_at / 1e9;
        }
        if (m->items[4]) {
            m->items[4]->tag = TAG_TIME;
            m->items[4]->num = res ? (double)al->ends_at / 1e9 : 0;
        }
        m->keys[5] = "GeneratorURL";
        m->items[5] = gt_str(a, al->generator_url ? al->generator_url : "");
        m->keys[6] = "Fingerprint";
        buf_printf(&b, "%016llx", (unsigned long long)al->fp);
        m->items[6] = str_from(a, &b);
        gt_map_sort(m);
        alerts->items[i] = m;
    }
    buf_free(&b);
    /* common labels and annotations: the pairs every alert has */
    struct am_lset common[2] = { { NULL, 0 }, { NULL, 0 } };
    for (int k = 0; k < 2 && sd->nalerts; k++) {
        const struct am_lset *first = k ? &sd->alerts[0]->annotations : &sd->alerts[0]->labels;
        common[k].l = gt_alloc(a, (first->n + 1) * sizeof(struct am_label));
        if (!common[k].l)
            return NULL;
        for (size_t i = 0; i < first->n; i++) {
            bool all = true;
            for (size_t j = 1; all && j < sd->nalerts; j++) {
                const char *x = am__lset_get(k ? &sd->alerts[j]->annotations : &sd->alerts[j]->labels,
                                             first->l[i].name);
                all = x && !strcmp(x, first->l[i].value);
            }
            if (all)
                common[k].l[common[k].n++] = first->l[i];
        }
    }
    struct gt_value *d = gt_map(a, 7, 0);
    if (!d)
        return NULL;
    d->keys[0] = "Receiver";
    d->items[0] = gt_str(a, g->route->recv->name);
    d->keys[1] = "Status";
    d->items[1] = gt_str(a, nfiring ? "firing" : "resolved");
    d->keys[2] = "Alerts";
    d->items[2] = alerts;
    d->keys[3] = "GroupLabels";
    d->items[3] = kv(a, &g->labels);
    d->keys[4] = "CommonLabels";
    d->items[4] = kv(a, &common[0]);
    d->keys[5] = "CommonAnnotations";
    d->items[5] = kv(a, &common[1]);
    d->keys[6] = "ExternalURL";
    d->items[6] = gt_str(a, ac->external_url);
    gt_map_sort(d);
    for (size_t i = 0; i < d->n; i++)
        if (!d->items[i])
            return NULL;
    return d;
}

const char *am__render(struct am_send *sd, const char *v, bool html, struct buf *out)
{
    if (!v || v[0] != '\x01')
        return v;
    const struct am_conf *ac = sd->f->g->s->conf;
    struct gt_arena *a = gt_arena_new();
    char err[400];
    buf_reset(out);
    struct gt_value *d = a ? build_data(sd, a) : NULL;
    int r = d ? gt_exec(html ? ac->tmpl_html : ac->tmpl_text, v + 1, d, a, out, err, sizeof(err))
              : -ENOMEM;
    gt_arena_free(&a);
    if (r) {
        if (!sd->tmpl_failed)
            log_error("template failed", "receiver", sd->f->g->route->recv->name, "error",
                      r == -ENOMEM ? "out of memory" : err);
        sd->tmpl_failed = true;
        buf_reset(out);
    }
    buf_putc(out, 0);
    return buf_head(out);
}
