/* tr_render.c - a trace as the query APIs answer it: OTLP JSON (Tempo), Jaeger's
 * JSON model (the Jaeger UI and Grafana's Jaeger data source), Zipkin v2 JSON.
 *
 * The Jaeger form follows Jaeger's own OTLP translation: span kind, status and
 * scope become the tags span.kind, otel.status_code (+ error=true),
 * otel.status_description, otel.scope.name/version; events become logs with an
 * "event" field; links become FOLLOWS_FROM references; the resource becomes the
 * process (service.name its serviceName, the rest its tags).
 */
#include "traces_internal.h"

#include <stdio.h>
#include <string.h>

static const char *const kind_names[] = { NULL, "internal", "server", "client", "producer", "consumer" };

static void hex_str(struct buf *out, const uint8_t *p, size_t n)
{
    char hex[33];
    tr_hex_id(p, n, hex);
    buf_putc(out, '"');
    buf_puts(out, hex);
    buf_putc(out, '"');
}

static void jstr(struct buf *out, struct strv s)
{
    buf_putc(out, '"');
    buf_json_escape(out, s.p, s.n);
    buf_putc(out, '"');
}

static bool pb_same(struct pb a, struct pb b)
{
    return a.end - a.p == b.end - b.p && (a.p == b.p || a.end == a.p || !memcmp(a.p, b.p, (size_t)(a.end - a.p)));
}

/* ---- OTLP JSON ---- */

static void span_otlp_json(const struct tr_span *s, struct buf *out)
{
    buf_puts(out, "{\"traceId\":");
    hex_str(out, s->tid, 16);
    buf_puts(out, ",\"spanId\":");
    hex_str(out, s->sid, 8);
    if (s->pid) {
        buf_puts(out, ",\"parentSpanId\":");
        hex_str(out, s->pid, 8);
    }
    if (s->state.n) {
        buf_puts(out, ",\"traceState\":");
        jstr(out, s->state);
    }
    if (s->flags)
        buf_printf(out, ",\"flags\":%u", s->flags);
    buf_puts(out, ",\"name\":");
    jstr(out, s->name);
    buf_printf(out, ",\"kind\":%u,\"startTimeUnixNano\":\"%lld\",\"endTimeUnixNano\":\"%lld\",\"attributes\":", s->kind,
               (long long)s->start, (long long)s->end);
    tr_attrs_json(s->raw, 9, out);
    /* events, links, dropped counts */
    struct pb m = s->raw, sub;
    uint32_t f;
    int wt;
    uint64_t v;
    bool ev = false, ln = false;
    struct buf links = BUF_INIT;
    while (m.p < m.end && !pb_field(&m, &f, &wt, &sub, &v)) {
        if ((f == 10 || f == 12 || f == 14) && wt == 0 && v) {
            buf_printf(out, ",\"%s\":%llu", f == 10 ? "droppedAttributesCount" : f == 12 ? "droppedEventsCount"
                                                                                  : "droppedLinksCount",
                       (unsigned long long)v);
        } else if (f == 11 && wt == 2) {
            buf_puts(out, ev ? "," : ",\"events\":[");
            ev = true;
            uint64_t t;
            struct strv name;
            tr_event_fields(sub, &t, &name);
            buf_printf(out, "{\"timeUnixNano\":\"%llu\",\"name\":", (unsigned long long)t);
            jstr(out, name);
            buf_puts(out, ",\"attributes\":");
            tr_attrs_json(sub, 3, out);
            buf_putc(out, '}');
        } else if (f == 13 && wt == 2) {
            buf_puts(&links, ln ? "," : "");
            ln = true;
            struct pb e = sub, s2;
            uint32_t f2;
            int wt2;
            uint64_t v2;
            buf_putc(&links, '{');
            bool first = true;
            while (e.p < e.end && !pb_field(&e, &f2, &wt2, &s2, &v2)) {
                if ((f2 == 1 || f2 == 2) && wt2 == 2) {
                    buf_puts(&links, first ? "" : ",");
                    buf_puts(&links, f2 == 1 ? "\"traceId\":" : "\"spanId\":");
                    hex_str(&links, s2.p, (size_t)(s2.end - s2.p) > 16 ? 16 : (size_t)(s2.end - s2.p));
                    first = false;
                } else if (f2 == 3 && wt2 == 2) {
                    buf_puts(&links, first ? "\"traceState\":" : ",\"traceState\":");
                    jstr(&links, strv_make((const char *)s2.p, (size_t)(s2.end - s2.p)));
                    first = false;
                }
            }
            buf_puts(&links, first ? "\"attributes\":" : ",\"attributes\":");
            tr_attrs_json(sub, 4, &links);
            buf_putc(&links, '}');
        }
    }
    if (ev)
        buf_putc(out, ']');
    if (ln) {
        buf_puts(out, ",\"links\":[");
        buf_append(out, buf_head(&links), buf_used(&links));
        buf_putc(out, ']');
    }
    buf_free(&links);
    buf_puts(out, ",\"status\":{");
    if (s->status_msg.n) {
        buf_puts(out, "\"message\":");
        jstr(out, s->status_msg);
    }
    if (s->status)
        buf_printf(out, "%s\"code\":%u", s->status_msg.n ? "," : "", s->status);
    buf_puts(out, "}}");
}

static void scope_json(struct pb scope, struct buf *out)
{
    struct strv name = { "", 0 }, version = { "", 0 };
    struct pb m = scope, sub;
    uint32_t f;
    int wt;
    uint64_t v;
    while (m.p < m.end && !pb_field(&m, &f, &wt, &sub, &v)) {
        if (f == 1 && wt == 2)
            name = strv_make((const char *)sub.p, (size_t)(sub.end - sub.p));
        else if (f == 2 && wt == 2)
            version = strv_make((const char *)sub.p, (size_t)(sub.end - sub.p));
    }
    buf_puts(out, "{\"name\":");
    jstr(out, name);
    if (version.n) {
        buf_puts(out, ",\"version\":");
        jstr(out, version);
    }
    if (scope.p) {
        buf_puts(out, ",\"attributes\":");
        tr_attrs_json(scope, 3, out);
    }
    buf_putc(out, '}');
}

void tr_render_otlp_json(const struct tr_trace_view *v, struct buf *out, const char *batches_key)
{
    buf_printf(out, "\"%s\":[", batches_key);
    bool *done = v->n ? calloc(v->n, 1) : NULL;
    bool first_rs = true;
    for (size_t i = 0; i < v->n; i++) {
        if (done[i])
            continue;
        buf_puts(out, first_rs ? "{\"resource\":{\"attributes\":" : ",{\"resource\":{\"attributes\":");
        first_rs = false;
        tr_attrs_json(v->s[i].res, 1, out);
        buf_puts(out, "},\"scopeSpans\":[");
        bool first_ss = true;
        for (size_t j = i; j < v->n; j++) {
            if (done[j] || !pb_same(v->s[j].res, v->s[i].res))
                continue;
            buf_puts(out, first_ss ? "{\"scope\":" : ",{\"scope\":");
            first_ss = false;
            scope_json(v->s[j].scope, out);
            buf_puts(out, ",\"spans\":[");
            bool first = true;
            for (size_t k = j; k < v->n; k++) {
                if (done[k] || !pb_same(v->s[k].res, v->s[i].res) || !pb_same(v->s[k].scope, v->s[j].scope))
                    continue;
                if (!first)
                    buf_putc(out, ',');
                first = false;
                span_otlp_json(&v->s[k], out);
                done[k] = true;
            }
            buf_puts(out, "]}");
        }
        buf_puts(out, "]}");
    }
    free(done);
    buf_putc(out, ']');
}

/* ---- Jaeger ---- */

struct jtags {
    struct buf *out;
    bool first;
    bool skip_service;
};

static void jaeger_tag(struct buf *out, struct strv key, const struct tr_kv *kv)
{
    buf_puts(out, "{\"key\":");
    jstr(out, key);
    switch (kv->type) {
    case TR_V_BOOL:
        buf_puts(out, kv->b ? ",\"type\":\"bool\",\"value\":true}" : ",\"type\":\"bool\",\"value\":false}");
        return;
    case TR_V_INT:
        buf_printf(out, ",\"type\":\"int64\",\"value\":%lld}", (long long)kv->i);
        return;
    case TR_V_DOUBLE:
        buf_puts(out, ",\"type\":\"float64\",\"value\":");
        if (kv->d != kv->d || kv->d - kv->d != 0)
            buf_puts(out, "0");
        else
            buf_put_float(out, kv->d, 'g');
        buf_putc(out, '}');
        return;
    case TR_V_BYTES:
        buf_puts(out, ",\"type\":\"binary\",\"value\":\"");
        tr_kv_string(kv, out);
        buf_puts(out, "\"}");
        return;
    default: {
        struct buf s = BUF_INIT;
        tr_kv_string(kv, &s);
        buf_puts(out, ",\"type\":\"string\",\"value\":\"");
        buf_json_escape(out, buf_head(&s), buf_used(&s));
        buf_puts(out, "\"}");
        buf_free(&s);
    }
    }
}

static int jtag_one(const struct tr_kv *kv, void *arg)
{
    struct jtags *t = arg;
    if (t->skip_service && strv_eq_cstr(kv->key, "service.name"))
        return 0;
    if (!t->first)
        buf_putc(t->out, ',');
    t->first = false;
    jaeger_tag(t->out, kv->key, kv);
    return 0;
}

static void jtag_str(struct jtags *t, const char *key, struct strv val)
{
    struct tr_kv kv = { .type = TR_V_STR, .s = val };
    if (!t->first)
        buf_putc(t->out, ',');
    t->first = false;
    jaeger_tag(t->out, strv_cstr(key), &kv);
}

static void jaeger_span(const struct tr_trace_view *v, const struct tr_span *s, int pidx, struct buf *out)
{
    buf_puts(out, "{\"traceID\":");
    hex_str(out, s->tid, 16);
    buf_puts(out, ",\"spanID\":");
    hex_str(out, s->sid, 8);
    buf_printf(out, ",\"flags\":%u,\"operationName\":", s->flags & 0xff ? s->flags & 0xff : 1);
    jstr(out, s->name);
    buf_puts(out, ",\"references\":[");
    bool first = true;
    if (s->pid) {
        buf_puts(out, "{\"refType\":\"CHILD_OF\",\"traceID\":");
        hex_str(out, s->tid, 16);
        buf_puts(out, ",\"spanID\":");
        hex_str(out, s->pid, 8);
        buf_putc(out, '}');
        first = false;
    }
    struct pb m = s->raw, sub;
    uint32_t f;
    int wt;
    uint64_t x;
    while (m.p < m.end && !pb_field(&m, &f, &wt, &sub, &x)) {
        if (f != 13 || wt != 2)
            continue;
        const uint8_t *lt = NULL, *ls = NULL;
        struct pb e = sub, s2;
        uint32_t f2;
        int wt2;
        uint64_t v2;
        while (e.p < e.end && !pb_field(&e, &f2, &wt2, &s2, &v2)) {
            if (f2 == 1 && wt2 == 2 && s2.end - s2.p == 16)
                lt = s2.p;
            else if (f2 == 2 && wt2 == 2 && s2.end - s2.p == 8)
                ls = s2.p;
        }
        if (!lt || !ls)
            continue;
        buf_puts(out, first ? "{\"refType\":\"FOLLOWS_FROM\",\"traceID\":" : ",{\"refType\":\"FOLLOWS_FROM\",\"traceID\":");
        first = false;
        hex_str(out, lt, 16);
        buf_puts(out, ",\"spanID\":");
        hex_str(out, ls, 8);
        buf_putc(out, '}');
    }
    int64_t dur = s->end > s->start ? (s->end - s->start) / 1000 : 0;
    buf_printf(out, "],\"startTime\":%lld,\"duration\":%lld,\"tags\":[", (long long)(s->start / 1000), (long long)dur);
    struct jtags t = { out, true, false };
    tr_attrs_each(s->raw, 9, jtag_one, &t);
    struct strv sname = { "", 0 }, sver = { "", 0 };
    m = s->scope;
    while (s->scope.p && m.p < m.end && !pb_field(&m, &f, &wt, &sub, &x)) {
        if (f == 1 && wt == 2)
            sname = strv_make((const char *)sub.p, (size_t)(sub.end - sub.p));
        else if (f == 2 && wt == 2)
            sver = strv_make((const char *)sub.p, (size_t)(sub.end - sub.p));
    }
    if (sname.n)
        jtag_str(&t, "otel.scope.name", sname);
    if (sver.n)
        jtag_str(&t, "otel.scope.version", sver);
    if (s->kind >= 1 && s->kind <= 5)
        jtag_str(&t, "span.kind", strv_cstr(kind_names[s->kind]));
    if (s->status == 1)
        jtag_str(&t, "otel.status_code", strv_cstr("OK"));
    else if (s->status == 2) {
        jtag_str(&t, "otel.status_code", strv_cstr("ERROR"));
        struct tr_kv kv = { .type = TR_V_BOOL, .b = true };
        buf_puts(out, t.first ? "" : ",");
        t.first = false;
        jaeger_tag(out, strv_cstr("error"), &kv);
    }
    if (s->status_msg.n)
        jtag_str(&t, "otel.status_description", s->status_msg);
    if (s->state.n)
        jtag_str(&t, "w3c.tracestate", s->state);
    buf_puts(out, "],\"logs\":[");
    m = s->raw;
    first = true;
    while (m.p < m.end && !pb_field(&m, &f, &wt, &sub, &x)) {
        if (f != 11 || wt != 2)
            continue;
        uint64_t at;
        struct strv name;
        tr_event_fields(sub, &at, &name);
        buf_printf(out, "%s{\"timestamp\":%llu,\"fields\":[", first ? "" : ",", (unsigned long long)(at / 1000));
        first = false;
        struct jtags lt = { out, true, false };
        if (name.n)
            jtag_str(&lt, "event", name);
        tr_attrs_each(sub, 3, jtag_one, &lt);
        buf_puts(out, "]}");
    }
    buf_printf(out, "],\"processID\":\"p%d\",\"warnings\":null}", pidx + 1);
    (void)v;
}

void tr_render_jaeger(const struct tr_trace_view *v, struct buf *out)
{
    buf_puts(out, "{\"traceID\":");
    hex_str(out, v->id, 16);
    buf_puts(out, ",\"spans\":[");
    /* processes: one per distinct resource */
    int *proc = v->n ? calloc(v->n, sizeof(int)) : NULL;
    int nproc = 0;
    for (size_t i = 0; i < v->n; i++) {
        proc[i] = -1;
        for (size_t j = 0; j < i; j++)
            if (pb_same(v->s[j].res, v->s[i].res)) {
                proc[i] = proc[j];
                break;
            }
        if (proc[i] < 0)
            proc[i] = nproc++;
    }
    for (size_t i = 0; i < v->n; i++) {
        if (i)
            buf_putc(out, ',');
        jaeger_span(v, &v->s[i], proc[i], out);
    }
    buf_puts(out, "],\"processes\":{");
    for (int p = 0; p < nproc; p++) {
        size_t i = 0;
        while (proc[i] != p)
            i++;
        buf_printf(out, "%s\"p%d\":{\"serviceName\":", p ? "," : "", p + 1);
        jstr(out, v->s[i].service.n ? v->s[i].service : strv_cstr("unknown_service"));
        buf_puts(out, ",\"tags\":[");
        struct jtags t = { out, true, true };
        tr_attrs_each(v->s[i].res, 1, jtag_one, &t);
        buf_puts(out, "]}");
    }
    free(proc);
    buf_puts(out, "},\"warnings\":null}");
}

/* ---- Zipkin ---- */

struct ztags {
    struct buf *out;
    bool first;
};

static int ztag_one(const struct tr_kv *kv, void *arg)
{
    struct ztags *t = arg;
    buf_puts(t->out, t->first ? "" : ",");
    t->first = false;
    jstr(t->out, kv->key);
    buf_puts(t->out, ":\"");
    struct buf s = BUF_INIT;
    tr_kv_string(kv, &s);
    buf_json_escape(t->out, buf_head(&s), buf_used(&s));
    buf_free(&s);
    buf_putc(t->out, '"');
    return 0;
}

static void zipkin_span(const struct tr_span *s, struct buf *out)
{
    static const char *const zk[] = { NULL, NULL, "SERVER", "CLIENT", "PRODUCER", "CONSUMER" };
    static const uint8_t zero[8];
    buf_puts(out, "{\"traceId\":");
    if (!memcmp(s->tid, zero, 8))                /* a 64-bit id, as Zipkin writes it */
        hex_str(out, s->tid + 8, 8);
    else
        hex_str(out, s->tid, 16);
    if (s->pid) {
        buf_puts(out, ",\"parentId\":");
        hex_str(out, s->pid, 8);
    }
    buf_puts(out, ",\"id\":");
    hex_str(out, s->sid, 8);
    if (s->kind >= 2 && s->kind <= 5)
        buf_printf(out, ",\"kind\":\"%s\"", zk[s->kind]);
    buf_puts(out, ",\"name\":\"");
    for (size_t i = 0; i < s->name.n; i++) {   /* Zipkin keeps names in lower case */
        char c = s->name.p[i];
        char lc = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        buf_json_escape(out, &lc, 1);
    }
    int64_t dur = s->end > s->start ? (s->end - s->start) / 1000 : 0;
    buf_printf(out, "\",\"timestamp\":%lld,\"duration\":%lld,\"localEndpoint\":{\"serviceName\":\"",
               (long long)(s->start / 1000), (long long)(dur ? dur : 1));
    struct strv svc = s->service.n ? s->service : strv_cstr("unknown_service");
    for (size_t i = 0; i < svc.n; i++) {
        char c = svc.p[i];
        char lc = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        buf_json_escape(out, &lc, 1);
    }
    buf_puts(out, "\"}");
    struct pb m = s->raw, sub;
    uint32_t f;
    int wt;
    uint64_t x;
    bool first = true;
    while (m.p < m.end && !pb_field(&m, &f, &wt, &sub, &x)) {
        if (f != 11 || wt != 2)
            continue;
        uint64_t at;
        struct strv name;
        tr_event_fields(sub, &at, &name);
        buf_printf(out, "%s{\"timestamp\":%llu,\"value\":", first ? ",\"annotations\":[" : ",",
                   (unsigned long long)(at / 1000));
        jstr(out, name);
        buf_putc(out, '}');
        first = false;
    }
    if (!first)
        buf_putc(out, ']');
    buf_puts(out, ",\"tags\":{");
    struct ztags t = { out, true };
    tr_attrs_each(s->raw, 9, ztag_one, &t);
    if (s->status == 2) {
        buf_puts(out, t.first ? "\"error\":" : ",\"error\":");
        t.first = false;
        jstr(out, s->status_msg.n ? s->status_msg : strv_cstr("true"));
    }
    if (s->status) {
        buf_puts(out, t.first ? "" : ",");
        buf_printf(out, "\"otel.status_code\":\"%s\"", s->status == 1 ? "OK" : "ERROR");
    }
    buf_puts(out, "}}");
}

void tr_render_zipkin(const struct tr_trace_view *v, struct buf *out)
{
    buf_putc(out, '[');
    for (size_t i = 0; i < v->n; i++) {
        if (i)
            buf_putc(out, ',');
        zipkin_span(&v->s[i], out);
    }
    buf_putc(out, ']');
}
