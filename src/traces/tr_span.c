/* tr_span.c - reading OTLP spans from their protobuf bytes: a trace's view (spans
 * with their resource and scope, parents linked), attributes and values.
 *
 * Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and
 * common/v1/common.proto.
 */
#include "traces_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct strv pb_strv(struct pb s)
{
    return strv_make((const char *)s.p, (size_t)(s.end - s.p));
}

int tr_any_decode(struct pb any, struct tr_kv *out)
{
    out->type = TR_V_NONE;
    uint32_t f;
    int wt;
    struct pb sub;
    uint64_t v;
    while (any.p < any.end) {
        if (pb_field(&any, &f, &wt, &sub, &v))
            return -EINVAL;
        switch (f) {
        case 1:
            if (wt != 2)
                return -EINVAL;
            out->type = TR_V_STR, out->s = pb_strv(sub);
            break;
        case 2:
            out->type = TR_V_BOOL, out->b = v != 0;
            break;
        case 3:
            out->type = TR_V_INT, out->i = (int64_t)v;
            break;
        case 4:
            if (wt != 1)
                return -EINVAL;
            out->type = TR_V_DOUBLE;
            memcpy(&out->d, &v, 8);
            break;
        case 5:
        case 6:
        case 7:
            if (wt != 2)
                return -EINVAL;
            out->type = f == 5 ? TR_V_ARRAY : f == 6 ? TR_V_KVLIST : TR_V_BYTES;
            out->s = pb_strv(sub);
            break;
        default:
            break;
        }
    }
    return 0;
}

int tr_kv_decode(struct pb kv, struct tr_kv *out)
{
    memset(out, 0, sizeof(*out));
    uint32_t f;
    int wt;
    struct pb sub, val = { NULL, NULL };
    uint64_t v;
    while (kv.p < kv.end) {
        if (pb_field(&kv, &f, &wt, &sub, &v))
            return -EINVAL;
        if (f == 1 && wt == 2)
            out->key = pb_strv(sub);
        else if (f == 2 && wt == 2)
            val = sub;
    }
    if (!val.p)
        return 0;
    struct strv key = out->key;
    int r = tr_any_decode(val, out);
    out->key = key;
    return r;
}

int tr_attrs_each(struct pb msg, uint32_t field, tr_kv_fn fn, void *arg)
{
    uint32_t f;
    int wt;
    struct pb sub;
    uint64_t v;
    while (msg.p < msg.end) {
        if (pb_field(&msg, &f, &wt, &sub, &v))
            return 0;
        if (f != field || wt != 2)
            continue;
        struct tr_kv kv;
        if (tr_kv_decode(sub, &kv))
            continue;
        int r = fn(&kv, arg);
        if (r)
            return r;
    }
    return 0;
}

struct find_ctx {
    const char *key;
    struct tr_kv *out;
};

static int find_one(const struct tr_kv *kv, void *arg)
{
    struct find_ctx *f = arg;
    if (!strv_eq_cstr(kv->key, f->key))
        return 0;
    *f->out = *kv;
    return 1;
}

bool tr_attr_find(struct pb msg, uint32_t field, const char *key, struct tr_kv *out)
{
    struct find_ctx f = { key, out };
    return tr_attrs_each(msg, field, find_one, &f) > 0;
}

struct all_ctx {
    int (*fn)(const struct tr_kv *kv, int where, void *arg);
    void *arg;
    int where;
};

static int all_one(const struct tr_kv *kv, void *arg)
{
    struct all_ctx *a = arg;
    return a->fn(kv, a->where, a->arg);
}

int tr_span_attrs_all(const struct tr_span *s, int (*fn)(const struct tr_kv *kv, int where, void *arg), void *arg)
{
    struct all_ctx a = { fn, arg, 1 };
    int r;
    if ((r = tr_attrs_each(s->raw, 9, all_one, &a)))
        return r;
    a.where = 2;
    if (s->res.p && (r = tr_attrs_each(s->res, 1, all_one, &a)))
        return r;
    a.where = 3;
    if (s->scope.p && (r = tr_attrs_each(s->scope, 3, all_one, &a)))
        return r;
    struct pb m = s->raw, sub;
    uint32_t f;
    int wt;
    uint64_t v;
    while (m.p < m.end) {
        if (pb_field(&m, &f, &wt, &sub, &v))
            break;
        if (wt != 2 || (f != 11 && f != 13))
            continue;
        a.where = f == 11 ? 4 : 5;
        if ((r = tr_attrs_each(sub, f == 11 ? 3 : 4, all_one, &a)))
            return r;
    }
    return 0;
}

static void b64(const uint8_t *p, size_t n, struct buf *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        char o[4] = { tab[x >> 18 & 63], tab[x >> 12 & 63], i + 1 < n ? tab[x >> 6 & 63] : '=',
                      i + 2 < n ? tab[x & 63] : '=' };
        buf_append(out, o, 4);
    }
}

static void plain_json(const struct tr_kv *kv, struct buf *out);

/* The elements of an array or kvlist value, comma-separated, each written by one
 * (plain JSON or OTLP JSON); a kvlist's elements as "key":value (plain) or
 * {"key":..,"value":..} (OTLP). */
static void elems_json(const struct tr_kv *kv, struct buf *out, bool otlp)
{
    bool arr = kv->type == TR_V_ARRAY;
    struct pb m = { (const uint8_t *)kv->s.p, (const uint8_t *)kv->s.p + kv->s.n }, sub;
    uint32_t f;
    int wt;
    uint64_t v;
    bool first = true;
    while (m.p < m.end && !pb_field(&m, &f, &wt, &sub, &v)) {
        if (f != 1 || wt != 2)
            continue;
        struct tr_kv e;
        if (arr ? tr_any_decode(sub, &e) : tr_kv_decode(sub, &e))
            continue;
        if (!first)
            buf_putc(out, ',');
        first = false;
        if (!arr) {
            buf_puts(out, otlp ? "{\"key\":\"" : "\"");
            buf_json_escape(out, e.key.p, e.key.n);
            buf_puts(out, otlp ? "\",\"value\":" : "\":");
        }
        if (otlp)
            tr_any_json(&e, out);
        else
            plain_json(&e, out);
        if (!arr && otlp)
            buf_putc(out, '}');
    }
}

/* An array or kvlist as plain JSON (what Jaeger shows as a string). */
static void plain_json(const struct tr_kv *kv, struct buf *out)
{
    switch (kv->type) {
    case TR_V_STR:
        buf_putc(out, '"');
        buf_json_escape(out, kv->s.p, kv->s.n);
        buf_putc(out, '"');
        return;
    case TR_V_ARRAY:
    case TR_V_KVLIST: {
        bool arr = kv->type == TR_V_ARRAY;
        buf_putc(out, arr ? '[' : '{');
        elems_json(kv, out, false);
        buf_putc(out, arr ? ']' : '}');
        return;
    }
    case TR_V_NONE:
        buf_puts(out, "null");
        return;
    case TR_V_BYTES:
        buf_putc(out, '"');
        b64((const uint8_t *)kv->s.p, kv->s.n, out);
        buf_putc(out, '"');
        return;
    default:
        tr_kv_string(kv, out);
    }
}

void tr_kv_string(const struct tr_kv *kv, struct buf *out)
{
    switch (kv->type) {
    case TR_V_STR:
        buf_put_strv(out, kv->s);
        break;
    case TR_V_BOOL:
        buf_puts(out, kv->b ? "true" : "false");
        break;
    case TR_V_INT:
        buf_printf(out, "%lld", (long long)kv->i);
        break;
    case TR_V_DOUBLE:
        buf_put_float(out, kv->d, 'f');
        break;
    case TR_V_BYTES:
        b64((const uint8_t *)kv->s.p, kv->s.n, out);
        break;
    case TR_V_ARRAY:
    case TR_V_KVLIST:
        plain_json(kv, out);
        break;
    default:
        break;
    }
}

void tr_any_json(const struct tr_kv *kv, struct buf *out)
{
    switch (kv->type) {
    case TR_V_STR:
        buf_puts(out, "{\"stringValue\":\"");
        buf_json_escape(out, kv->s.p, kv->s.n);
        buf_puts(out, "\"}");
        break;
    case TR_V_BOOL:
        buf_puts(out, kv->b ? "{\"boolValue\":true}" : "{\"boolValue\":false}");
        break;
    case TR_V_INT:
        buf_printf(out, "{\"intValue\":\"%lld\"}", (long long)kv->i);
        break;
    case TR_V_DOUBLE:
        buf_puts(out, "{\"doubleValue\":");
        if (kv->d != kv->d || kv->d - kv->d != 0) {
            buf_putc(out, '"');
            buf_put_float(out, kv->d, 'g');
            buf_putc(out, '"');
        } else {
            buf_put_float(out, kv->d, 'g');
        }
        buf_putc(out, '}');
        break;
    case TR_V_BYTES:
        buf_puts(out, "{\"bytesValue\":\"");
        b64((const uint8_t *)kv->s.p, kv->s.n, out);
        buf_puts(out, "\"}");
        break;
    case TR_V_ARRAY:
    case TR_V_KVLIST: {
        bool arr = kv->type == TR_V_ARRAY;
        buf_puts(out, arr ? "{\"arrayValue\":{\"values\":[" : "{\"kvlistValue\":{\"values\":[");
        elems_json(kv, out, true);
        buf_puts(out, "]}}");
        break;
    }
    default:
        buf_puts(out, "{}");
    }
}

struct json_list {
    struct buf *out;
    bool first;
};

static int attr_json_one(const struct tr_kv *kv, void *arg)
{
    struct json_list *l = arg;
    if (!l->first)
        buf_putc(l->out, ',');
    l->first = false;
    buf_puts(l->out, "{\"key\":\"");
    buf_json_escape(l->out, kv->key.p, kv->key.n);
    buf_puts(l->out, "\",\"value\":");
    tr_any_json(kv, l->out);
    buf_putc(l->out, '}');
    return 0;
}

void tr_attrs_json(struct pb msg, uint32_t field, struct buf *out)
{
    struct json_list l = { out, true };
    buf_putc(out, '[');
    tr_attrs_each(msg, field, attr_json_one, &l);
    buf_putc(out, ']');
}

void tr_event_fields(struct pb ev, uint64_t *time_ns, struct strv *name)
{
    uint32_t f;
    int wt;
    struct pb sub;
    uint64_t v;
    *time_ns = 0;
    *name = strv_make("", 0);
    while (ev.p < ev.end && !pb_field(&ev, &f, &wt, &sub, &v)) {
        if (f == 1)
            *time_ns = v;
        else if (f == 2 && wt == 2)
            *name = pb_strv(sub);
    }
}

/* ---- the view of a trace ---- */

static int service_of(const struct tr_kv *kv, void *arg)
{
    if (kv->type == TR_V_STR && strv_eq_cstr(kv->key, "service.name")) {
        *(struct strv *)arg = kv->s;
        return 1;
    }
    return 0;
}

static int decode_span(struct pb m, struct tr_span *s)
{
    uint32_t f;
    int wt;
    struct pb sub;
    uint64_t v;
    s->raw = m;
    while (m.p < m.end) {
        if (pb_field(&m, &f, &wt, &sub, &v))
            return -EINVAL;
        switch (f) {
        case 1:
            if (wt != 2 || sub.end - sub.p != 16)
                return -EINVAL;
            s->tid = sub.p;
            break;
        case 2:
            if (wt != 2 || sub.end - sub.p != 8)
                return -EINVAL;
            s->sid = sub.p;
            break;
        case 3:
            if (wt == 2)
                s->state = pb_strv(sub);
            break;
        case 4:
            if (wt != 2)
                return -EINVAL;
            s->pid = sub.end - sub.p == 8 ? sub.p : NULL;
            break;
        case 5:
            if (wt == 2)
                s->name = pb_strv(sub);
            break;
        case 6:
            s->kind = (uint32_t)v;
            break;
        case 7:     /* times past 2116 are clamped: differences never overflow */
            s->start = v > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)v;
            break;
        case 8:
            s->end = v > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)v;
            break;
        case 15:
            if (wt == 2) {
                uint32_t f2;
                int wt2;
                struct pb sub2;
                uint64_t v2;
                while (sub.p < sub.end && !pb_field(&sub, &f2, &wt2, &sub2, &v2)) {
                    if (f2 == 2 && wt2 == 2)
                        s->status_msg = pb_strv(sub2);
                    else if (f2 == 3)
                        s->status = (uint32_t)v2;
                }
            }
            break;
        case 16:
            s->flags = (uint32_t)v;
            break;
        default:
            break;
        }
    }
    if (s->pid) {
        static const uint8_t zero[8];
        if (!memcmp(s->pid, zero, 8))
            s->pid = NULL;
    }
    return s->tid && s->sid ? 0 : -EINVAL;
}

static int view_push(struct tr_trace_view *v, const struct tr_span *s)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 16;
        struct tr_span *ns = realloc(v->s, nc * sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        v->s = ns;
        v->cap = nc;
    }
    v->s[v->n++] = *s;
    return 0;
}

int tr_view_add(struct tr_trace_view *v, const uint8_t *p, size_t n)
{
    struct pb td = { p, p + n }, rs, ss, sub;
    uint32_t f;
    int wt;
    uint64_t x;
    while (td.p < td.end) {
        if (pb_field(&td, &f, &wt, &rs, &x))
            return -EINVAL;
        if (f != 1 || wt != 2)
            continue;
        struct tr_span proto;
        memset(&proto, 0, sizeof(proto));
        proto.service = proto.name = proto.state = proto.status_msg = strv_make("", 0);
        proto.res_spans = rs;
        struct pb m = rs;
        while (m.p < m.end) {
            if (pb_field(&m, &f, &wt, &sub, &x))
                return -EINVAL;
            if (f == 1 && wt == 2) {
                proto.res = sub;
                tr_attrs_each(sub, 1, service_of, &proto.service);
            }
        }
        m = rs;
        while (m.p < m.end) {
            if (pb_field(&m, &f, &wt, &ss, &x))
                return -EINVAL;
            if (f != 2 || wt != 2)
                continue;
            struct pb s2 = ss, scope = { NULL, NULL };
            while (s2.p < s2.end) {
                if (pb_field(&s2, &f, &wt, &sub, &x))
                    return -EINVAL;
                if (f == 1 && wt == 2)
                    scope = sub;
            }
            s2 = ss;
            while (s2.p < s2.end) {
                if (pb_field(&s2, &f, &wt, &sub, &x))
                    return -EINVAL;
                if (f != 2 || wt != 2)
                    continue;
                struct tr_span s = proto;
                s.scope = scope;
                s.scope_spans = ss;
                if (decode_span(sub, &s))
                    return -EINVAL;
                s.parent = -1;
                if (!v->n || s.start < v->start)
                    v->start = s.start;
                if (!v->n || s.end > v->end)
                    v->end = s.end;
                if (view_push(v, &s))
                    return -ENOMEM;
            }
        }
    }
    return 0;
}

static int cmp_start(const void *a, const void *b)
{
    const struct tr_span *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return memcmp(x->sid, y->sid, 8);
}

void tr_view_link(struct tr_trace_view *v)
{
    if (v->n)
        memcpy(v->id, v->s[0].tid, 16);
    /* a span sent twice (a retried export, a re-sent batch) is kept once: the same
     * span id and kind (a Zipkin client and server may share an id), as Tempo */
    if (v->n)
        qsort(v->s, v->n, sizeof(*v->s), cmp_start);
    struct hmap seen = { 0 };
    size_t w = 0;
    for (size_t i = 0; i < v->n; i++) {
        uint8_t key[9];
        memcpy(key, v->s[i].sid, 8);
        key[8] = (uint8_t)v->s[i].kind;
        if (hmap_get(&seen, key, 9))
            continue;
        hmap_put(&seen, key, 9, (void *)1);
        v->s[w++] = v->s[i];
    }
    v->n = w;
    hmap_free(&seen);
    struct hmap ids = { 0 };
    for (size_t i = 0; i < v->n; i++) {
        v->s[i].parent = -1;
        v->s[i].nchildren = 0;
        hmap_put(&ids, v->s[i].sid, 8, (void *)(uintptr_t)(i + 1));
    }
    v->root = -1;
    for (size_t i = 0; i < v->n; i++) {
        if (v->s[i].pid) {
            uintptr_t k = (uintptr_t)hmap_get(&ids, v->s[i].pid, 8);
            if (k && k - 1 != i) {
                v->s[i].parent = (int)(k - 1);
                v->s[k - 1].nchildren++;
            }
        } else if (v->root < 0) {
            v->root = (int)i;
        }
    }
    hmap_free(&ids);
}

void tr_view_reset(struct tr_trace_view *v)
{
    v->n = 0;
    v->root = -1;
    v->start = v->end = 0;
    v->lazy = NULL;
    v->page_gen = 0;
}

void tr_view_free(struct tr_trace_view *v)
{
    free(v->s);
    memset(v, 0, sizeof(*v));
}

void tr_hex_id(const uint8_t *id, size_t n, char *out)
{
    cairn_hex(id, n, out);
}

int tr_parse_trace_id(struct strv s, uint8_t id[16])
{
    if (!s.n || s.n > 32)
        return -EINVAL;
    char hex[33];
    memset(hex, '0', 32);
    memcpy(hex + 32 - s.n, s.p, s.n);
    for (int i = 0; i < 16; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                return -EINVAL;
            v = v * 16 + d;
        }
        id[i] = (uint8_t)v;
    }
    return 0;
}

int tr_parse_go_duration(const char *s, size_t n, int64_t *ns)
{
    static const struct { const char *u; double mul; } units[] = {
        { "ns", 1 }, { "us", 1e3 }, { "\xc2\xb5s", 1e3 }, { "\xce\xbcs", 1e3 }, { "ms", 1e6 },
        { "s", 1e9 }, { "m", 60e9 }, { "h", 3600e9 },
    };
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == n)
        return -EINVAL;
    if (n - i == 1 && s[i] == '0') {
        *ns = 0;
        return 0;
    }
    double total = 0;
    while (i < n) {
        size_t st = i;
        double v = 0, frac = 1;
        bool dot = false, digits = false;
        while (i < n && ((s[i] >= '0' && s[i] <= '9') || (s[i] == '.' && !dot))) {
            if (s[i] == '.') {
                dot = true;
            } else {
                digits = true;
                if (dot)
                    v += (s[i] - '0') * (frac /= 10);
                else
                    v = v * 10 + (s[i] - '0');
            }
            i++;
        }
        if (!digits || i == st)
            return -EINVAL;
        size_t best = 0;
        double mul = 0;
        for (size_t u = 0; u < ARRAY_SIZE(units); u++) {
            size_t ul = strlen(units[u].u);
            if (n - i >= ul && !memcmp(s + i, units[u].u, ul) && ul > best) {
                best = ul;
                mul = units[u].mul;
            }
        }
        if (!best)
            return -EINVAL;
        i += best;
        total += v * mul;
    }
    if (total > 9.2e18)
        return -EINVAL;
    *ns = (int64_t)(total + 0.5) * (neg ? -1 : 1);
    return 0;
}
