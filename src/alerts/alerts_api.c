/* alerts_api.c - Alertmanager's API v2 (api/v2/openapi.yaml of 0.25) and the
 * operational endpoints.
 *
 *   POST /api/v2/alerts            alerts from Prometheus (or anyone)
 *   GET  /api/v2/alerts            ?active ?silenced ?inhibited ?unprocessed
 *                                  ?filter=<matcher> (repeatable) ?receiver=<regex>
 *   GET  /api/v2/alerts/groups     the same filters, by aggregation group
 *   GET  /api/v2/silences          ?filter=<matcher>
 *   POST /api/v2/silences          create, or update by id
 *   GET|DELETE /api/v2/silence/ID
 *   GET  /api/v2/status, /api/v2/receivers
 *   GET  /-/healthy, /-/ready, /metrics; POST /-/reload
 *
 * Bodies are parsed with jansson; every malformed field is answered with a 400
 * whose message names the field, and the valid alerts of a batch are kept (as
 * Alertmanager does) even when others in it are refused.
 */
#include "alerts_internal.h"
#include "core/log.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- decoding ---- */

static int decode_lset(json_t *o, const char *what, size_t idx, bool names_strict,
                       struct am_lset *out, char *err, size_t errlen)
{
    out->l = NULL;
    out->n = 0;
    if (!o || json_is_null(o))
        return 0;
    if (!json_is_object(o)) {
        snprintf(err, errlen, "[%zu].%s: expected an object of strings", idx, what);
        return -EINVAL;
    }
    size_t n = json_object_size(o);
    if (n > AM_MAX_LABELS) {
        snprintf(err, errlen, "[%zu].%s: more than %d entries", idx, what, AM_MAX_LABELS);
        return -EINVAL;
    }
    out->l = calloc(n + 1, sizeof(*out->l));
    if (!out->l)
        return -ENOMEM;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (!json_is_string(v)) {
            snprintf(err, errlen, "[%zu].%s.%.100s: expected a string", idx, what, k);
            goto bad;
        }
        if (names_strict && !am__label_name_ok(k)) {
            snprintf(err, errlen, "invalid label set: invalid name \"%.100s\"", k);
            goto bad;
        }
        if (strlen(k) > AM_MAX_LABEL_LEN || json_string_length(v) > AM_MAX_LABEL_LEN) {
            snprintf(err, errlen, "[%zu].%s.%.100s: longer than %d bytes", idx, what, k,
                     AM_MAX_LABEL_LEN);
            goto bad;
        }
        if (strlen(json_string_value(v)) != json_string_length(v)) {
            snprintf(err, errlen, "[%zu].%s.%.100s: contains a NUL byte", idx, what, k);
            goto bad;
        }
        /* borrowed from the JSON document until the alert is packed */
        out->l[out->n].name = (char *)k;
        out->l[out->n].value = (char *)json_string_value(v);
        out->n++;
    }
    am__lset_sort(out);     /* object keys are unique in jansson */
    return 0;
bad:
    free(out->l);
    out->l = NULL;
    out->n = 0;
    return -EINVAL;
}

/* One allocation per alert: the struct, both label arrays and every string, so a
 * storm of alerts costs one malloc each (and frees as one). */
static struct am_alert *alert_pack(const struct am_lset *l, const struct am_lset *an,
                                   const char *gen)
{
    size_t sz = sizeof(struct am_alert) + (l->n + an->n) * sizeof(struct am_label) +
                (gen ? strlen(gen) + 1 : 0);
    for (size_t i = 0; i < l->n; i++)
        sz += strlen(l->l[i].name) + strlen(l->l[i].value) + 2;
    for (size_t i = 0; i < an->n; i++)
        sz += strlen(an->l[i].name) + strlen(an->l[i].value) + 2;
    struct am_alert *a = calloc(1, sz);
    if (!a)
        return NULL;
    a->refs = 1;
    a->packed = true;
    struct am_label *lab = (struct am_label *)(a + 1);
    char *p = (char *)(lab + l->n + an->n);
    const struct am_lset *src[2] = { l, an };
    struct am_lset *dst[2] = { &a->labels, &a->annotations };
    for (int k = 0; k < 2; k++) {
        dst[k]->l = lab;
        dst[k]->n = src[k]->n;
        for (size_t i = 0; i < src[k]->n; i++, lab++) {
            size_t nl = strlen(src[k]->l[i].name) + 1, vl = strlen(src[k]->l[i].value) + 1;
            lab->name = memcpy(p, src[k]->l[i].name, nl);
            p += nl;
            lab->value = memcpy(p, src[k]->l[i].value, vl);
            p += vl;
        }
    }
    if (gen)
        a->generator_url = memcpy(p, gen, strlen(gen) + 1);
    return a;
}

static int decode_time(json_t *o, const char *what, size_t idx, int64_t *ns, char *err,
                       size_t errlen)
{
    *ns = 0;
    if (!o || json_is_null(o))
        return 0;
    const char *s = json_string_value(o);
    if (!s || am__time_parse(s, ns)) {
        snprintf(err, errlen, "%s in body must be of type date-time: \"%.60s\" (alert %zu)", what,
                 s ? s : "", idx);
        return -EINVAL;
    }
    return 0;
}

int am__alerts_decode(const char *body, size_t len, int64_t now, uint64_t resolve_timeout_ms,
                      struct am_alert ***out, char *err, size_t errlen)
{
    json_error_t je;
    *out = NULL;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "parsing alerts body failed: %s (line %d, column %d)", je.text, je.line,
                 je.column);
        return -EINVAL;
    }
    if (!json_is_array(root)) {
        json_decref(root);
        snprintf(err, errlen, "parsing alerts body failed: expected a JSON array of alerts");
        return -EINVAL;
    }
    size_t n = json_array_size(root);
    struct am_alert **v = calloc(n + 1, sizeof(*v));
    if (!v) {
        json_decref(root);
        return -ENOMEM;
    }
    size_t k = 0;
    struct buf errs = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(root, i);
        char e[400] = "";
        struct am_lset labels_b = { NULL, 0 }, ann_b = { NULL, 0 };
        struct am_alert *a = NULL;
        int64_t starts = 0, ends = 0;
        if (!json_is_object(o)) {
            snprintf(e, sizeof(e), "[%zu]: expected an object", i);
            goto bad;
        }
        json_t *labels = json_object_get(o, "labels");
        if (!labels) {
            snprintf(e, sizeof(e), "labels in body is required (alert %zu)", i);
            goto bad;
        }
        if (decode_lset(labels, "labels", i, true, &labels_b, e, sizeof(e)) ||
            decode_lset(json_object_get(o, "annotations"), "annotations", i, false, &ann_b,
                        e, sizeof(e)) ||
            decode_time(json_object_get(o, "startsAt"), "startsAt", i, &starts, e, sizeof(e)) ||
            decode_time(json_object_get(o, "endsAt"), "endsAt", i, &ends, e, sizeof(e)))
            goto bad;
        json_t *gu = json_object_get(o, "generatorURL");
        if (gu && !json_is_null(gu) && !json_is_string(gu)) {
            snprintf(e, sizeof(e), "generatorURL in body must be of type string (alert %zu)", i);
            goto bad;
        }
        if (labels_b.n == 0) {
            snprintf(e, sizeof(e), "at least one label pair required");
            goto bad;
        }
        a = alert_pack(&labels_b, &ann_b, json_is_string(gu) ? json_string_value(gu) : NULL);
        if (!a) {
            snprintf(e, sizeof(e), "out of memory");
            goto bad;
        }
        free(labels_b.l);
        free(ann_b.l);
        labels_b.l = ann_b.l = NULL;
        a->starts_at = starts;
        a->ends_at = ends;
        if (a->starts_at == 0)
            a->starts_at = a->ends_at ? a->ends_at : now;
        if (a->ends_at == 0) {
            a->timeout = true;
            a->ends_at = now + (int64_t)resolve_timeout_ms * 1000000;
        }
        if (a->ends_at < a->starts_at) {
            snprintf(e, sizeof(e), "start time must be before end time");
            am__alert_unref(a);
            a = NULL;
            goto bad;
        }
        a->updated_at = now;
        a->fp = am__lset_fingerprint(&a->labels);
        v[k++] = a;
        continue;
bad:
        if (buf_used(&errs))
            buf_puts(&errs, "; ");
        buf_puts(&errs, e);
        free(labels_b.l);
        free(ann_b.l);
    }
    json_decref(root);
    *out = v;
    if (buf_used(&errs)) {
        snprintf(err, errlen, "%s", buf_head(&errs));
        buf_free(&errs);
        return -(int)k - 1;     /* the valid ones are still returned */
    }
    buf_free(&errs);
    return (int)k;
}

int am__silence_decode(const char *body, size_t len, struct am_silence *sl, char *err,
                       size_t errlen)
{
    json_error_t je;
    memset(sl, 0, sizeof(*sl));
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
        snprintf(err, errlen, "parsing silence body failed: %s (line %d, column %d)", je.text,
                 je.line, je.column);
        return -EINVAL;
    }
    int rc = -EINVAL;
    if (!json_is_object(o)) {
        snprintf(err, errlen, "parsing silence body failed: expected a JSON object");
        goto out;
    }
    static const char *const req[] = { "matchers", "startsAt", "endsAt", "createdBy", "comment" };
    for (size_t i = 0; i < ARRAY_SIZE(req); i++)
        if (!json_object_get(o, req[i])) {
            snprintf(err, errlen, "%s in body is required", req[i]);
            goto out;
        }
    json_t *id = json_object_get(o, "id");
    if (id && !json_is_null(id)) {
        if (!json_is_string(id) || json_string_length(id) >= sizeof(sl->id)) {
            snprintf(err, errlen, "id in body must be a silence ID string");
            goto out;
        }
        snprintf(sl->id, sizeof(sl->id), "%s", json_string_value(id));
    }
    const char *cb = json_string_value(json_object_get(o, "createdBy"));
    const char *cm = json_string_value(json_object_get(o, "comment"));
    if (!cb || !cm) {
        snprintf(err, errlen, "%s in body must be of type string", !cb ? "createdBy" : "comment");
        goto out;
    }
    sl->created_by = strdup(cb);
    sl->comment = strdup(cm);
    if (decode_time(json_object_get(o, "startsAt"), "startsAt", 0, &sl->starts_at, err, errlen) ||
        decode_time(json_object_get(o, "endsAt"), "endsAt", 0, &sl->ends_at, err, errlen))
        goto out;
    json_t *ms = json_object_get(o, "matchers");
    if (!json_is_array(ms) || json_array_size(ms) == 0 || json_array_size(ms) > AM_MAX_MATCHERS) {
        snprintf(err, errlen, "matchers in body should have at least 1 items (and at most %d)",
                 AM_MAX_MATCHERS);
        goto out;
    }
    sl->matchers.m = calloc(json_array_size(ms), sizeof(*sl->matchers.m));
    if (!sl->matchers.m)
        goto out;
    for (size_t i = 0; i < json_array_size(ms); i++) {
        json_t *m = json_array_get(ms, i);
        const char *name = json_string_value(json_object_get(m, "name"));
        const char *value = json_string_value(json_object_get(m, "value"));
        json_t *isre = json_object_get(m, "isRegex"), *iseq = json_object_get(m, "isEqual");
        if (!name || !value) {
            snprintf(err, errlen, "matchers.%zu.%s in body is required", i, !name ? "name" : "value");
            goto out;
        }
        if (!json_is_boolean(isre)) {
            snprintf(err, errlen, "matchers.%zu.isRegex in body is required", i);
            goto out;
        }
        if (iseq && !json_is_null(iseq) && !json_is_boolean(iseq)) {
            snprintf(err, errlen, "matchers.%zu.isEqual in body must be of type boolean", i);
            goto out;
        }
        if (!am__label_name_ok(name)) {
            snprintf(err, errlen, "invalid label matcher %zu: invalid label name \"%.100s\"", i, name);
            goto out;
        }
        bool eq = !json_is_false(iseq);
        enum am_mtype t = json_is_true(isre) ? (eq ? AM_RE : AM_NRE) : (eq ? AM_EQ : AM_NE);
        char e[300];
        if (am__matcher_init(&sl->matchers.m[sl->matchers.n], t, name, value, e, sizeof(e))) {
            snprintf(err, errlen, "failed to convert API silence to internal silence: invalid label "
                                  "matcher %zu: %s", i, e);
            goto out;
        }
        sl->matchers.n++;
    }
    rc = 0;
out:
    json_decref(o);
    if (rc)
        am__silence_free(sl);
    return rc;
}

/* ---- query strings ---- */

struct qparam {
    char *name, *value;
};

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static char *url_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+')
            *p++ = ' ';
        else if (s[i] == '%' && i + 2 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
            *p++ = (char)(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
            i += 2;
        } else
            *p++ = s[i];
    }
    *p = 0;
    return o;
}

static size_t parse_query(struct strv target, struct qparam *out, size_t max)
{
    const char *q = memchr(target.p, '?', target.n);
    if (!q)
        return 0;
    const char *end = target.p + target.n;
    size_t n = 0;
    for (const char *p = q + 1; p < end && n < max;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (e > p) {
            out[n].name = url_decode(p, (size_t)((eq ? eq : e) - p));
            out[n].value = eq ? url_decode(eq + 1, (size_t)(e - eq - 1)) : strdup("");
            if (out[n].name && out[n].value)
                n++;
            else {
                free(out[n].name);
                free(out[n].value);
            }
        }
        p = e + 1;
    }
    return n;
}

static void free_query(struct qparam *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(q[i].name);
        free(q[i].value);
    }
}

static const char *qget(const struct qparam *q, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(q[i].name, name))
            return q[i].value;
    return NULL;
}

/* ---- responses ---- */

static void reply_json(struct httpd_req *r, int status, struct buf *b)
{
    httpd_respond(r, status, "application/json", buf_head(b), buf_used(b));
    buf_free(b);
}

static void reply_error(struct httpd_req *r, int status, const char *msg)
{
    struct buf b = BUF_INIT;
    buf_json_str(&b, msg);
    buf_putc(&b, '\n');
    reply_json(r, status, &b);
}

/* api/v2's matchFilterLabels: a filter on a label the set lacks is skipped when
 * its value is empty. */
static bool filter_match(const struct am_matchers *ms, const struct am_lset *ls)
{
    for (size_t i = 0; i < ms->n; i++) {
        const struct am_matcher *m = &ms->m[i];
        const char *v = am__lset_get(ls, m->name);
        if (m->type == AM_NE || m->type == AM_NRE) {
            if (!*m->value && v)
                continue;
            if (!am__matcher_matches(m, v ? v : ""))
                return false;
        } else {
            if (!*m->value && !v)
                continue;
            if (!v || !am__matcher_matches(m, v))
                return false;
        }
    }
    return true;
}

struct alert_filter {
    struct am_matchers matchers;
    struct am_matcher receiver;     /* regex, or no name */
    bool active, silenced, inhibited, unprocessed;
};

static bool qbool(const struct qparam *q, size_t n, const char *name, bool *out, char *err,
                  size_t errlen)
{
    const char *v = qget(q, n, name);
    *out = true;
    if (!v)
        return true;
    if (!strcmp(v, "true") || !strcmp(v, "1"))
        return true;
    if (!strcmp(v, "false") || !strcmp(v, "0")) {
        *out = false;
        return true;
    }
    snprintf(err, errlen, "%s in query must be of type boolean: \"%.40s\"", name, v);
    return false;
}

static int parse_filter(const struct qparam *q, size_t nq, struct alert_filter *f, bool alerts,
                        char *err, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < nq; i++) {
        if (strcmp(q[i].name, "filter"))
            continue;
        struct am_matchers one;
        if (am__matchers_parse(q[i].value, &one, err, errlen)) {
            am__matchers_free(&f->matchers);
            return -EINVAL;
        }
        struct am_matcher *nm = realloc(f->matchers.m, (f->matchers.n + one.n + 1) * sizeof(*nm));
        if (!nm) {
            am__matchers_free(&one);
            am__matchers_free(&f->matchers);
            return -ENOMEM;
        }
        f->matchers.m = nm;
        memcpy(nm + f->matchers.n, one.m, one.n * sizeof(*one.m));
        f->matchers.n += one.n;
        free(one.m);
    }
    if (!alerts)
        return 0;
    if (!qbool(q, nq, "active", &f->active, err, errlen) ||
        !qbool(q, nq, "silenced", &f->silenced, err, errlen) ||
        !qbool(q, nq, "inhibited", &f->inhibited, err, errlen) ||
        !qbool(q, nq, "unprocessed", &f->unprocessed, err, errlen)) {
        am__matchers_free(&f->matchers);
        return -EINVAL;
    }
    const char *rcv = qget(q, nq, "receiver");
    if (rcv && am__matcher_init(&f->receiver, AM_RE, "receiver", rcv, err, errlen)) {
        am__matchers_free(&f->matchers);
        return -EINVAL;
    }
    return 0;
}

static void filter_free(struct alert_filter *f)
{
    am__matchers_free(&f->matchers);
    if (f->receiver.name)
        am__matcher_free(&f->receiver);
}

/* Writes one gettableAlert when it passes the filter; returns whether it did. */
static bool alert_json(struct am_svc *s, struct buf *b, const struct am_alert *a,
                       const struct alert_filter *f, int64_t now, bool comma)
{
    struct am_route *routes[64];
    size_t nr = am__route_match(s->conf->route, &a->labels, routes, ARRAY_SIZE(routes));
    if (f->receiver.name) {
        bool any = false;
        for (size_t i = 0; i < nr && !any; i++)
            any = am__matcher_matches(&f->receiver, routes[i]->receiver);
        if (!any)
            return false;
    }
    if (!filter_match(&f->matchers, &a->labels))
        return false;
    if (a->ends_at && a->ends_at < now)
        return false;
    const char *sil[64];
    size_t nsil = am__silenced_by(s, &a->labels, now, sil, ARRAY_SIZE(sil));
    uint64_t by = 0;
    bool inh = am__inhibited_by(s, &a->labels, now, &by);
    bool suppressed = nsil || inh;
    if ((!f->active && !suppressed) || (!f->silenced && nsil) || (!f->inhibited && inh))
        return false;
    if (comma)
        buf_putc(b, ',');
    buf_puts(b, "{\"annotations\":");
    am__lset_json(b, &a->annotations);
    buf_puts(b, ",\"endsAt\":\"");
    am__time_format(b, a->ends_at);
    buf_printf(b, "\",\"fingerprint\":\"%016llx\",\"receivers\":[", (unsigned long long)a->fp);
    for (size_t i = 0; i < nr; i++) {
        buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(b, routes[i]->receiver);
        buf_putc(b, '}');
    }
    buf_puts(b, "],\"startsAt\":\"");
    am__time_format(b, a->starts_at);
    buf_puts(b, "\",\"status\":{\"inhibitedBy\":[");
    if (inh)
        buf_printf(b, "\"%016llx\"", (unsigned long long)by);
    buf_puts(b, "],\"silencedBy\":[");
    for (size_t i = 0; i < nsil; i++)
        buf_printf(b, "%s\"%s\"", i ? "," : "", sil[i]);
    buf_printf(b, "],\"state\":\"%s\"},\"updatedAt\":\"", suppressed ? "suppressed" : "active");
    am__time_format(b, a->updated_at);
    buf_puts(b, "\"");
    if (a->generator_url) {
        buf_puts(b, ",\"generatorURL\":");
        buf_json_str(b, a->generator_url);
    }
    buf_puts(b, ",\"labels\":");
    am__lset_json(b, &a->labels);
    buf_putc(b, '}');
    return true;
}

static int cmp_fp(const void *pa, const void *pb)
{
    const struct am_alert *a = *(struct am_alert *const *)pa, *b = *(struct am_alert *const *)pb;
    return a->fp < b->fp ? -1 : a->fp > b->fp;
}

static void get_alerts(struct am_svc *s, struct httpd_req *r, const struct qparam *q, size_t nq)
{
    char err[300];
    struct alert_filter f;
    if (parse_filter(q, nq, &f, true, err, sizeof(err))) {
        reply_error(r, 400, err);
        return;
    }
    struct am_alert **v = calloc(s->nalerts + 1, sizeof(*v));
    if (!v) {
        filter_free(&f);
        reply_error(r, 500, "out of memory");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < s->alerts_cap; i++)
        if (s->alerts[i])
            v[n++] = s->alerts[i];
    qsort(v, n, sizeof(*v), cmp_fp);
    int64_t now = am__now_ns();
    struct buf b = BUF_INIT;
    buf_putc(&b, '[');
    bool comma = false;
    for (size_t i = 0; i < n; i++)
        comma |= alert_json(s, &b, v[i], &f, now, comma);
    buf_puts(&b, "]\n");
    free(v);
    filter_free(&f);
    reply_json(r, 200, &b);
}

static int cmp_group(const void *pa, const void *pb)
{
    const struct am_group *a = *(struct am_group *const *)pa, *b = *(struct am_group *const *)pb;
    if (am__lset_eq(&a->labels, &b->labels))
        return strcmp(a->route->receiver, b->route->receiver);
    return am__lset_before(&a->labels, &b->labels) ? -1 : 1;
}

static void get_groups(struct am_svc *s, struct httpd_req *r, const struct qparam *q, size_t nq)
{
    char err[300];
    struct alert_filter f;
    if (parse_filter(q, nq, &f, true, err, sizeof(err))) {
        reply_error(r, 400, err);
        return;
    }
    struct am_group **gv = calloc(s->ngroups + 1, sizeof(*gv));
    if (!gv) {
        filter_free(&f);
        reply_error(r, 500, "out of memory");
        return;
    }
    size_t ng = 0;
    for (struct am_group *g = s->groups; g; g = g->next)
        gv[ng++] = g;
    qsort(gv, ng, sizeof(*gv), cmp_group);
    int64_t now = am__now_ns();
    struct buf b = BUF_INIT;
    buf_putc(&b, '[');
    bool gcomma = false;
    for (size_t i = 0; i < ng; i++) {
        struct am_group *g = gv[i];
        if (f.receiver.name && !am__matcher_matches(&f.receiver, g->route->receiver))
            continue;
        struct am_alert **v = calloc(g->nalerts + 1, sizeof(*v));
        if (!v)
            break;
        memcpy(v, g->alerts, g->nalerts * sizeof(*v));
        am__group_sorted(v, g->nalerts);
        size_t mark = b.len;
        buf_puts(&b, gcomma ? ",{\"alerts\":[" : "{\"alerts\":[");
        bool comma = false;
        for (size_t k = 0; k < g->nalerts; k++)
            comma |= alert_json(s, &b, v[k], &f, now, comma);
        free(v);
        if (!comma) {
            b.len = mark;   /* a group whose alerts are all filtered out is left out */
            continue;
        }
        buf_puts(&b, "],\"labels\":");
        am__lset_json(&b, &g->labels);
        buf_puts(&b, ",\"receiver\":{\"name\":");
        buf_json_str(&b, g->route->receiver);
        buf_puts(&b, "}}");
        gcomma = true;
    }
    buf_puts(&b, "]\n");
    free(gv);
    filter_free(&f);
    reply_json(r, 200, &b);
}

static void silence_json(struct buf *b, const struct am_silence *sl, int64_t now)
{
    static const char *const st[] = { "active", "pending", "expired" };
    buf_printf(b, "{\"id\":\"%s\",\"status\":{\"state\":\"%s\"},\"updatedAt\":\"", sl->id,
               st[am__silence_state(sl, now)]);
    am__time_format(b, sl->updated_at);
    buf_puts(b, "\",\"comment\":");
    buf_json_str(b, sl->comment ? sl->comment : "");
    buf_puts(b, ",\"createdBy\":");
    buf_json_str(b, sl->created_by ? sl->created_by : "");
    buf_puts(b, ",\"endsAt\":\"");
    am__time_format(b, sl->ends_at);
    buf_puts(b, "\",\"matchers\":[");
    for (size_t i = 0; i < sl->matchers.n; i++) {
        const struct am_matcher *m = &sl->matchers.m[i];
        buf_printf(b, "%s{\"isEqual\":%s,\"isRegex\":%s,\"name\":", i ? "," : "",
                   (m->type == AM_EQ || m->type == AM_RE) ? "true" : "false",
                   (m->type == AM_RE || m->type == AM_NRE) ? "true" : "false");
        buf_json_str(b, m->name);
        buf_puts(b, ",\"value\":");
        buf_json_str(b, m->value);
        buf_putc(b, '}');
    }
    buf_puts(b, "],\"startsAt\":\"");
    am__time_format(b, sl->starts_at);
    buf_puts(b, "\"}");
}

static int64_t sort_now;

static int cmp_silence(const void *pa, const void *pb)
{
    const struct am_silence *a = *(struct am_silence *const *)pa;
    const struct am_silence *b = *(struct am_silence *const *)pb;
    enum am_sil_state x = am__silence_state(a, sort_now), y = am__silence_state(b, sort_now);
    if (x != y)
        return (int)x - (int)y;     /* active, pending, expired */
    if (x == SIL_ACTIVE)
        return a->ends_at < b->ends_at ? -1 : a->ends_at > b->ends_at;
    if (x == SIL_PENDING)
        return a->starts_at < b->starts_at ? -1 : a->starts_at > b->starts_at;
    return a->ends_at > b->ends_at ? -1 : a->ends_at < b->ends_at;
}

static void get_silences(struct am_svc *s, struct httpd_req *r, const struct qparam *q, size_t nq)
{
    char err[300];
    struct alert_filter f;
    if (parse_filter(q, nq, &f, false, err, sizeof(err))) {
        reply_error(r, 400, err);
        return;
    }
    const struct am_silence **v = calloc(s->nsilences + 1, sizeof(*v));
    if (!v) {
        filter_free(&f);
        reply_error(r, 500, "out of memory");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < s->nsilences; i++) {
        const struct am_silence *sl = &s->silences[i];
        /* the silence's matchers seen as a label set (name -> value) */
        struct am_lset ls = { calloc(sl->matchers.n + 1, sizeof(struct am_label)), 0 };
        for (size_t k = 0; ls.l && k < sl->matchers.n; k++) {
            size_t j = 0;
            while (j < ls.n && strcmp(ls.l[j].name, sl->matchers.m[k].name))
                j++;
            ls.l[j] = (struct am_label){ sl->matchers.m[k].name, sl->matchers.m[k].value };
            if (j == ls.n)
                ls.n++;
        }
        am__lset_sort(&ls);
        if (ls.l && filter_match(&f.matchers, &ls))
            v[n++] = sl;
        free(ls.l);
    }
    sort_now = am__now_ns();
    qsort(v, n, sizeof(*v), cmp_silence);
    struct buf b = BUF_INIT;
    buf_putc(&b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(&b, ',');
        silence_json(&b, v[i], sort_now);
    }
    buf_puts(&b, "]\n");
    free(v);
    filter_free(&f);
    reply_json(r, 200, &b);
}

static void post_silence(struct am_svc *s, struct httpd_req *r)
{
    char err[400];
    struct am_silence sl;
    if (am__silence_decode(r->body.p, r->body.n, &sl, err, sizeof(err))) {
        reply_error(r, 400, err);
        return;
    }
    int64_t now = am__now_ns();
    if (sl.starts_at >= sl.ends_at) {
        am__silence_free(&sl);
        reply_error(r, 400, "Failed to create silence: start time must be before end time");
        return;
    }
    if (sl.ends_at < now) {
        am__silence_free(&sl);
        reply_error(r, 400, "Failed to create silence: end time can't be in the past");
        return;
    }
    int rc = am__silence_set(s, &sl, err, sizeof(err));
    if (rc) {
        am__silence_free(&sl);
        reply_error(r, rc == -ENOENT ? 404 : 400, err);
        return;
    }
    log_info("silence set", "id", sl.id);
    struct buf b = BUF_INIT;
    buf_printf(&b, "{\"silenceID\":\"%s\"}\n", sl.id);
    reply_json(r, 200, &b);
}

static void post_alerts(struct am_svc *s, struct httpd_req *r)
{
    char err[600];
    struct am_alert **v;
    int64_t now = am__now_ns();
    int n = am__alerts_decode(r->body.p, r->body.n, now, s->conf->resolve_timeout_ms, &v, err,
                              sizeof(err));
    bool bad = n < 0;
    size_t k = bad ? (size_t)(-n - 1) : (size_t)n;
    if (bad && !v) {
        metric_inc(s->m_invalid);
        reply_error(r, 400, err);
        return;
    }
    for (size_t i = 0; i < k; i++) {
        struct am_alert *a = v[i];
        metric_inc(a->ends_at > now ? s->m_received_firing : s->m_received_resolved);
        if (am__store_put(s, a) == 0)
            am__dispatch(s, a);
    }
    free(v);
    if (bad) {
        metric_inc(s->m_invalid);
        reply_error(r, 400, err);
        return;
    }
    httpd_respond(r, 200, "application/json", "", 0);
}

static void get_status(struct am_svc *s, struct httpd_req *r)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"cluster\":{\"name\":\"\",\"peers\":[],\"status\":\"disabled\"},"
                 "\"config\":{\"original\":");
    buf_json_str(&b, s->conf->config_text ? s->conf->config_text : "");
    buf_puts(&b, "},\"uptime\":\"");
    am__time_format(&b, s->start_ns);
    buf_puts(&b, "\",\"versionInfo\":{\"branch\":\"main\",\"buildDate\":\"\",\"buildUser\":\"cairn\","
                 "\"goVersion\":\"none (C)\",\"revision\":\"\",\"version\":\"0.25.0-cairn\"}}\n");
    reply_json(r, 200, &b);
}

static void get_receivers(struct am_svc *s, struct httpd_req *r)
{
    struct buf b = BUF_INIT;
    buf_putc(&b, '[');
    for (size_t i = 0; i < s->conf->nreceivers; i++) {
        buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(&b, s->conf->receivers[i].name);
        buf_putc(&b, '}');
    }
    buf_puts(&b, "]\n");
    reply_json(r, 200, &b);
}

static bool method_is(const struct httpd_req *r, const char *m)
{
    return strv_eq_cstr(r->h.method, m);
}

static void update_gauges(struct am_svc *s)
{
    int64_t now = am__now_ns();
    size_t active = 0, suppressed = 0;
    for (size_t i = 0; i < s->alerts_cap; i++) {
        struct am_alert *a = s->alerts[i];
        if (!a || am__alert_resolved_at(a, now))
            continue;
        const char *ids[1];
        uint64_t by;
        if (am__silenced_by(s, &a->labels, now, ids, 1) || am__inhibited_by(s, &a->labels, now, &by))
            suppressed++;
        else
            active++;
    }
    size_t st[3] = { 0 };
    for (size_t i = 0; i < s->nsilences; i++)
        st[am__silence_state(&s->silences[i], now)]++;
    struct metric_family *fa = metrics_family(s->reg, METRIC_GAUGE, "alertmanager_alerts",
                                              "How many alerts by state.",
                                              (const char *const[]){ "state", NULL }, NULL, 0);
    struct metric_family *fs = metrics_family(s->reg, METRIC_GAUGE, "alertmanager_silences",
                                              "How many silences by state.",
                                              (const char *const[]){ "state", NULL }, NULL, 0);
    if (fa) {
        metric_set(metrics_get1(fa, "active"), (double)active);
        metric_set(metrics_get1(fa, "suppressed"), (double)suppressed);
        metric_set(metrics_get1(fa, "unprocessed"), 0);
    }
    if (fs) {
        metric_set(metrics_get1(fs, "active"), (double)st[SIL_ACTIVE]);
        metric_set(metrics_get1(fs, "pending"), (double)st[SIL_PENDING]);
        metric_set(metrics_get1(fs, "expired"), (double)st[SIL_EXPIRED]);
    }
    struct metric *g = metrics_gauge(s->reg, "alertmanager_dispatcher_aggregation_groups",
                                     "Number of active aggregation groups");
    if (g)
        metric_set(g, (double)s->ngroups);
    struct metric *nf = metrics_gauge(s->reg, "alertmanager_nflog_entries",
                                      "Entries in the notification log.");
    if (nf)
        metric_set(nf, (double)s->nnflog);
}

void am__handle(struct httpd_req *r, void *arg)
{
    struct am_svc *s = arg;
    struct strv t = r->h.target;
    const char *qm = memchr(t.p, '?', t.n);
    struct strv path = strv_make(t.p, qm ? (size_t)(qm - t.p) : t.n);
    if (strv_eq_cstr(path, "/metrics"))
        update_gauges(s);
    if (service_handle_builtin(s->sc, r))
        return;
    struct qparam q[64];
    size_t nq = parse_query(t, q, ARRAY_SIZE(q));
    bool get = method_is(r, "GET") || method_is(r, "HEAD");
    if (strv_eq_cstr(path, "/api/v2/alerts")) {
        if (method_is(r, "POST"))
            post_alerts(s, r);
        else if (get)
            get_alerts(s, r, q, nq);
        else
            reply_error(r, 405, "method not allowed");
    } else if (strv_eq_cstr(path, "/api/v2/alerts/groups") && get) {
        get_groups(s, r, q, nq);
    } else if (strv_eq_cstr(path, "/api/v2/silences")) {
        if (method_is(r, "POST"))
            post_silence(s, r);
        else if (get)
            get_silences(s, r, q, nq);
        else
            reply_error(r, 405, "method not allowed");
    } else if (strv_has_prefix(path, "/api/v2/silence/")) {
        char id[64];
        size_t il = path.n - 16;
        if (il == 0 || il >= sizeof(id)) {
            httpd_respond(r, 404, NULL, "", 0);
            goto out;
        }
        memcpy(id, path.p + 16, il);
        id[il] = 0;
        struct am_silence *sl = am__silence_find(s, id);
        if (get) {
            if (!sl) {
                httpd_respond(r, 404, NULL, "", 0);
                goto out;
            }
            struct buf b = BUF_INIT;
            silence_json(&b, sl, am__now_ns());
            buf_putc(&b, '\n');
            reply_json(r, 200, &b);
        } else if (method_is(r, "DELETE")) {
            if (am__silence_expire(s, id)) {
                reply_error(r, 404, "silence not found");
            } else {
                log_info("silence expired", "id", id);
                httpd_respond(r, 200, "application/json", "", 0);
            }
        } else {
            reply_error(r, 405, "method not allowed");
        }
    } else if (strv_eq_cstr(path, "/api/v2/status") && get) {
        get_status(s, r);
    } else if (strv_eq_cstr(path, "/api/v2/receivers") && get) {
        get_receivers(s, r);
    } else if (strv_has_prefix(path, "/api/v1/")) {
        reply_error(r, 410, "The Alertmanager v1 API was deprecated in version 0.16.0; cairn "
                            "serves API v2 only (/api/v2)");
    } else if ((strv_eq_cstr(path, "/") || strv_eq_cstr(path, "/alerts")) && get) {
        static const char page[] =
            "<!DOCTYPE html><html><head><title>cairn alerts</title></head><body>"
            "<h1>cairn alerts</h1><p>An Alertmanager-compatible alert router. API: "
            "<a href=\"/api/v2/alerts\">/api/v2/alerts</a>, "
            "<a href=\"/api/v2/alerts/groups\">/api/v2/alerts/groups</a>, "
            "<a href=\"/api/v2/silences\">/api/v2/silences</a>, "
            "<a href=\"/api/v2/status\">/api/v2/status</a>, <a href=\"/metrics\">/metrics</a>."
            "</p></body></html>\n";
        httpd_respond(r, 200, "text/html; charset=utf-8", page, sizeof(page) - 1);
    } else {
        httpd_respond(r, 404, "text/plain; charset=utf-8", "404 page not found\n", 19);
    }
out:
    free_query(q, nq);
}
