/* tr_decode.c - OTLP JSON and Zipkin v2 JSON into OTLP protobuf.
 *
 * OTLP JSON follows the OTLP/JSON rules: lowerCamelCase keys (the proto's own
 * snake_case names are accepted too), trace and span ids in hex, enums as
 * integers (or their names), 64-bit integers as strings or numbers, bytes in
 * base64. Unknown keys are ignored, as the spec asks of receivers.
 *
 * Zipkin v2 spans (zipkin2 api) become OTLP spans the way the OpenTelemetry
 * Collector's zipkin receiver maps them: localEndpoint.serviceName is the
 * resource's service.name, tags are attributes, annotations are events, the
 * remote endpoint is net.peer.* / peer.service, an "error" tag sets the status.
 */
#include "traces_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16

struct dctx {
    char *err;
    size_t errlen;
};

static int fail(struct dctx *d, const char *fmt, const char *what)
{
    if (d->err && d->errlen)
        snprintf(d->err, d->errlen, fmt, what);
    return -EINVAL;
}

static json_t *jget(json_t *o, const char *camel, const char *snake)
{
    json_t *v = json_object_get(o, camel);
    if (!v && snake)
        v = json_object_get(o, snake);
    return v && !json_is_null(v) ? v : NULL;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A hex id of exactly n bytes (an empty string: absent). */
static int put_hex_id(struct dctx *d, struct buf *b, uint32_t field, json_t *v, size_t n, const char *what)
{
    if (!v)
        return 0;
    if (!json_is_string(v))
        return fail(d, "%s: expected a hex string", what);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (!len)
        return 0;
    if (len != 2 * n)
        return fail(d, "%s: expected hex of the right length", what);
    uint8_t id[16];
    for (size_t i = 0; i < n; i++) {
        int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
        if (h < 0 || l < 0)
            return fail(d, "%s: expected a hex string", what);
        id[i] = (uint8_t)(h << 4 | l);
    }
    pb_put_bytes(b, field, id, n);
    return 0;
}

static int get_u64(struct dctx *d, json_t *v, uint64_t *out, const char *what)
{
    if (json_is_integer(v)) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double x = json_real_value(v);
        if (x < 0 || x > 1.8e19)
            return fail(d, "%s: out of range", what);
        *out = (uint64_t)x;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (*s == '-') {
            long long y = strtoll(s, &end, 10);
            x = (unsigned long long)y;
        }
        if (errno || end == s || *end)
            return fail(d, "%s: expected an integer", what);
        *out = x;
        return 0;
    }
    return fail(d, "%s: expected an integer", what);
}

static int put_u64_field(struct dctx *d, struct buf *b, uint32_t field, json_t *v, int wt, const char *what)
{
    if (!v)
        return 0;
    uint64_t x;
    if (get_u64(d, v, &x, what))
        return -EINVAL;
    if (wt == 1)
        pb_put_fixed64(b, field, x);
    else if (wt == 5)
        pb_put_fixed32(b, field, (uint32_t)x);
    else if (x)
        pb_put_uint(b, field, x);
    return 0;
}

static int put_str_field(struct dctx *d, struct buf *b, uint32_t field, json_t *v, const char *what)
{
    if (!v)
        return 0;
    if (!json_is_string(v))
        return fail(d, "%s: expected a string", what);
    if (json_string_length(v))
        pb_put_bytes(b, field, json_string_value(v), json_string_length(v));
    return 0;
}

static int put_enum(struct dctx *d, struct buf *b, uint32_t field, json_t *v, const char *const *names, size_t nn,
                    const char *what)
{
    if (!v)
        return 0;
    if (json_is_string(v)) {
        for (size_t i = 0; i < nn; i++)
            if (!strcmp(json_string_value(v), names[i])) {
                if (i)
                    pb_put_uint(b, field, i);
                return 0;
            }
        return fail(d, "%s: unknown enum name", what);
    }
    return put_u64_field(d, b, field, v, 0, what);
}

static int b64val(char c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
           : c == '+' || c == '-' ? 62 : c == '/' || c == '_' ? 63 : -1;
}

static int unb64(const char *s, size_t n, struct buf *out)
{
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=')
            break;
        int v = b64val(s[i]);
        if (v < 0)
            return -EINVAL;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf_putc(out, (char)(acc >> bits & 0xff));
        }
    }
    return 0;
}

static int any_value(struct dctx *d, json_t *v, struct buf *out, int depth);

static int key_value(struct dctx *d, json_t *kv, struct buf *out, int depth)
{
    if (!json_is_object(kv))
        return fail(d, "%s: expected {key, value}", "attributes");
    json_t *k = jget(kv, "key", NULL), *v = jget(kv, "value", NULL);
    if (!k || !json_is_string(k))
        return fail(d, "%s: expected a string key", "attributes");
    pb_put_bytes(out, 1, json_string_value(k), json_string_length(k));
    if (v) {
        struct buf sub = BUF_INIT;
        int r = any_value(d, v, &sub, depth + 1);
        if (!r)
            pb_put_msg(out, 2, &sub);
        buf_free(&sub);
        return r;
    }
    return 0;
}

static int kv_list(struct dctx *d, json_t *arr, uint32_t field, struct buf *out, int depth)
{
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return fail(d, "%s: expected a list", "attributes");
    size_t i;
    json_t *kv;
    json_array_foreach(arr, i, kv) {
        struct buf sub = BUF_INIT;
        int r = key_value(d, kv, &sub, depth);
        if (!r)
            pb_put_msg(out, field, &sub);
        buf_free(&sub);
        if (r)
            return r;
    }
    return 0;
}

static int any_value(struct dctx *d, json_t *v, struct buf *out, int depth)
{
    if (depth > MAX_DEPTH)
        return fail(d, "%s: nested too deep", "value");
    if (!json_is_object(v))
        return fail(d, "%s: expected an AnyValue object", "value");
    json_t *x;
    if ((x = jget(v, "stringValue", "string_value"))) {
        return put_str_field(d, out, 1, x, "stringValue") ? -EINVAL
               : (json_string_length(x) ? 0 : (pb_put_bytes(out, 1, "", 0), 0));
    }
    if ((x = jget(v, "boolValue", "bool_value"))) {
        if (!json_is_boolean(x))
            return fail(d, "%s: expected true or false", "boolValue");
        pb_put_uint(out, 2, json_is_true(x));
        return 0;
    }
    if ((x = jget(v, "intValue", "int_value"))) {
        uint64_t u;
        if (get_u64(d, x, &u, "intValue"))
            return -EINVAL;
        pb_put_uint(out, 3, u);     /* a zero too: the oneof must be set */
        return 0;
    }
    if ((x = jget(v, "doubleValue", "double_value"))) {
        double dv;
        if (json_is_number(x))
            dv = json_number_value(x);
        else if (json_is_string(x))
            dv = strtod(json_string_value(x), NULL);
        else
            return fail(d, "%s: expected a number", "doubleValue");
        pb_put_double(out, 4, dv);
        return 0;
    }
    if ((x = jget(v, "bytesValue", "bytes_value"))) {
        if (!json_is_string(x))
            return fail(d, "%s: expected base64", "bytesValue");
        struct buf raw = BUF_INIT;
        if (unb64(json_string_value(x), json_string_length(x), &raw)) {
            buf_free(&raw);
            return fail(d, "%s: expected base64", "bytesValue");
        }
        pb_put_bytes(out, 7, buf_head(&raw), buf_used(&raw));
        buf_free(&raw);
        return 0;
    }
    bool arr = (x = jget(v, "arrayValue", "array_value")) != NULL;
    if (arr || (x = jget(v, "kvlistValue", "kvlist_value"))) {
        if (!json_is_object(x))
            return fail(d, "%s: expected {values: [...]}", arr ? "arrayValue" : "kvlistValue");
        json_t *vals = jget(x, "values", NULL);
        struct buf sub = BUF_INIT;
        int r = 0;
        if (vals && !json_is_array(vals))
            r = fail(d, "%s: expected a list", "values");
        size_t i;
        json_t *e;
        if (vals && !r)
            json_array_foreach(vals, i, e) {
                struct buf one = BUF_INIT;
                r = arr ? any_value(d, e, &one, depth + 1) : key_value(d, e, &one, depth + 1);
                if (!r)
                    pb_put_msg(&sub, 1, &one);
                buf_free(&one);
                if (r)
                    break;
            }
        if (!r)
            pb_put_msg(out, arr ? 5 : 6, &sub);
        buf_free(&sub);
        return r;
    }
    return 0;
}

static const char *const kinds[] = { "SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
                                     "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER" };
static const char *const codes[] = { "STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR" };

static int list_of(struct dctx *d, json_t *arr, const char *what, uint32_t field, struct buf *out,
                   int (*one)(struct dctx *, json_t *, struct buf *))
{
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return fail(d, "%s: expected a list", what);
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        if (!json_is_object(e))
            return fail(d, "%s: expected a list of objects", what);
        struct buf sub = BUF_INIT;
        int r = one(d, e, &sub);
        if (!r)
            pb_put_msg(out, field, &sub);
        buf_free(&sub);
        if (r)
            return r;
    }
    return 0;
}

static int event_one(struct dctx *d, json_t *e, struct buf *out)
{
    return put_u64_field(d, out, 1, jget(e, "timeUnixNano", "time_unix_nano"), 1, "timeUnixNano") ||
           put_str_field(d, out, 2, jget(e, "name", NULL), "name") ||
           kv_list(d, jget(e, "attributes", NULL), 3, out, 0) ||
           put_u64_field(d, out, 4, jget(e, "droppedAttributesCount", "dropped_attributes_count"), 0, "dropped")
           ? -EINVAL : 0;
}

static int link_one(struct dctx *d, json_t *e, struct buf *out)
{
    return put_hex_id(d, out, 1, jget(e, "traceId", "trace_id"), 16, "traceId") ||
           put_hex_id(d, out, 2, jget(e, "spanId", "span_id"), 8, "spanId") ||
           put_str_field(d, out, 3, jget(e, "traceState", "trace_state"), "traceState") ||
           kv_list(d, jget(e, "attributes", NULL), 4, out, 0) ||
           put_u64_field(d, out, 5, jget(e, "droppedAttributesCount", "dropped_attributes_count"), 0, "dropped") ||
           put_u64_field(d, out, 6, jget(e, "flags", NULL), 5, "flags")
           ? -EINVAL : 0;
}

static int span_one(struct dctx *d, json_t *s, struct buf *out)
{
    if (put_hex_id(d, out, 1, jget(s, "traceId", "trace_id"), 16, "traceId") ||
        put_hex_id(d, out, 2, jget(s, "spanId", "span_id"), 8, "spanId") ||
        put_str_field(d, out, 3, jget(s, "traceState", "trace_state"), "traceState") ||
        put_hex_id(d, out, 4, jget(s, "parentSpanId", "parent_span_id"), 8, "parentSpanId") ||
        put_str_field(d, out, 5, jget(s, "name", NULL), "name") ||
        put_enum(d, out, 6, jget(s, "kind", NULL), kinds, ARRAY_SIZE(kinds), "kind") ||
        put_u64_field(d, out, 7, jget(s, "startTimeUnixNano", "start_time_unix_nano"), 1, "startTimeUnixNano") ||
        put_u64_field(d, out, 8, jget(s, "endTimeUnixNano", "end_time_unix_nano"), 1, "endTimeUnixNano") ||
        kv_list(d, jget(s, "attributes", NULL), 9, out, 0) ||
        put_u64_field(d, out, 10, jget(s, "droppedAttributesCount", "dropped_attributes_count"), 0, "dropped") ||
        list_of(d, jget(s, "events", NULL), "events", 11, out, event_one) ||
        put_u64_field(d, out, 12, jget(s, "droppedEventsCount", "dropped_events_count"), 0, "dropped") ||
        list_of(d, jget(s, "links", NULL), "links", 13, out, link_one) ||
        put_u64_field(d, out, 14, jget(s, "droppedLinksCount", "dropped_links_count"), 0, "dropped"))
        return -EINVAL;
    json_t *st = jget(s, "status", NULL);
    if (st) {
        if (!json_is_object(st))
            return fail(d, "%s: expected an object", "status");
        struct buf sub = BUF_INIT;
        int r = put_str_field(d, &sub, 2, jget(st, "message", NULL), "status.message") ||
                put_enum(d, &sub, 3, jget(st, "code", NULL), codes, ARRAY_SIZE(codes), "status.code");
        if (!r)
            pb_put_msg(out, 15, &sub);
        buf_free(&sub);
        if (r)
            return -EINVAL;
    }
    return put_u64_field(d, out, 16, jget(s, "flags", NULL), 5, "flags");
}

static int scope_spans_one(struct dctx *d, json_t *ss, struct buf *out)
{
    json_t *sc = jget(ss, "scope", NULL);
    if (!sc)
        sc = jget(ss, "instrumentationLibrary", "instrumentation_library");
    if (sc) {
        if (!json_is_object(sc))
            return fail(d, "%s: expected an object", "scope");
        struct buf sub = BUF_INIT;
        int r = put_str_field(d, &sub, 1, jget(sc, "name", NULL), "scope.name") ||
                put_str_field(d, &sub, 2, jget(sc, "version", NULL), "scope.version") ||
                kv_list(d, jget(sc, "attributes", NULL), 3, &sub, 0) ||
                put_u64_field(d, &sub, 4, jget(sc, "droppedAttributesCount", "dropped_attributes_count"), 0, "dropped");
        if (!r)
            pb_put_msg(out, 1, &sub);
        buf_free(&sub);
        if (r)
            return -EINVAL;
    }
    return list_of(d, jget(ss, "spans", NULL), "spans", 2, out, span_one) ||
           put_str_field(d, out, 3, jget(ss, "schemaUrl", "schema_url"), "schemaUrl") ? -EINVAL : 0;
}

static int resource_spans_one(struct dctx *d, json_t *rs, struct buf *out)
{
    json_t *res = jget(rs, "resource", NULL);
    if (res) {
        if (!json_is_object(res))
            return fail(d, "%s: expected an object", "resource");
        struct buf sub = BUF_INIT;
        int r = kv_list(d, jget(res, "attributes", NULL), 1, &sub, 0) ||
                put_u64_field(d, &sub, 2, jget(res, "droppedAttributesCount", "dropped_attributes_count"), 0, "dropped");
        if (!r)
            pb_put_msg(out, 1, &sub);
        buf_free(&sub);
        if (r)
            return -EINVAL;
    }
    json_t *ss = jget(rs, "scopeSpans", "scope_spans");
    if (!ss)
        ss = jget(rs, "instrumentationLibrarySpans", "instrumentation_library_spans");
    return list_of(d, ss, "scopeSpans", 2, out, scope_spans_one) ||
           put_str_field(d, out, 3, jget(rs, "schemaUrl", "schema_url"), "schemaUrl") ? -EINVAL : 0;
}

int tr_otlp_json_to_pb(const char *json, size_t n, struct buf *out, char *err, size_t errlen)
{
    struct dctx d = { err, errlen };
    json_error_t je;
    json_t *root = json_loadb(json, n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "invalid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return -EINVAL;
    }
    int r;
    if (!json_is_object(root))
        r = fail(&d, "%s: expected an ExportTraceServiceRequest object", "body");
    else
        r = list_of(&d, jget(root, "resourceSpans", "resource_spans"), "resourceSpans", 1, out, resource_spans_one);
    json_decref(root);
    return r;
}

/* ---- Zipkin v2 ---- */

static void put_str_attr(struct buf *out, uint32_t field, const char *k, const char *v, size_t vn)
{
    struct buf kv = BUF_INIT, any = BUF_INIT;
    pb_put_bytes(&any, 1, v, vn);
    pb_put_bytes(&kv, 1, k, strlen(k));
    pb_put_msg(&kv, 2, &any);
    pb_put_msg(out, field, &kv);
    buf_free(&kv);
    buf_free(&any);
}

static void put_int_attr(struct buf *out, uint32_t field, const char *k, int64_t v)
{
    struct buf kv = BUF_INIT, any = BUF_INIT;
    pb_put_key(&any, 3, 0);
    pb_put_varint(&any, (uint64_t)v);
    pb_put_bytes(&kv, 1, k, strlen(k));
    pb_put_msg(&kv, 2, &any);
    pb_put_msg(out, field, &kv);
    buf_free(&kv);
    buf_free(&any);
}

static int zid(struct dctx *d, json_t *v, uint8_t *id, size_t n, const char *what)
{
    if (!v || !json_is_string(v))
        return fail(d, "%s: expected a hex string", what);
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (!len || len > 2 * n)
        return fail(d, "%s: expected 1 to 32 (trace) or 16 (span) hex digits", what);
    memset(id, 0, n);
    char hex[33];
    memset(hex, '0', 2 * n);
    memcpy(hex + 2 * n - len, s, len);
    for (size_t i = 0; i < n; i++) {
        int h = hexval(hex[2 * i]), l = hexval(hex[2 * i + 1]);
        if (h < 0 || l < 0)
            return fail(d, "%s: expected a hex string", what);
        id[i] = (uint8_t)(h << 4 | l);
    }
    return 0;
}

static int zipkin_span(struct dctx *d, json_t *s, struct buf *res, struct buf *span)
{
    uint8_t tid[16], sid[8], pid[8];
    if (zid(d, jget(s, "traceId", NULL), tid, 16, "traceId") || zid(d, jget(s, "id", NULL), sid, 8, "id"))
        return -EINVAL;
    pb_put_bytes(span, 1, tid, 16);
    pb_put_bytes(span, 2, sid, 8);
    json_t *p = jget(s, "parentId", NULL);
    if (p) {
        if (zid(d, p, pid, 8, "parentId"))
            return -EINVAL;
        pb_put_bytes(span, 4, pid, 8);
    }
    json_t *name = jget(s, "name", NULL);
    if (name && !json_is_string(name))
        return fail(d, "%s: expected a string", "name");
    if (name && json_string_length(name))
        pb_put_bytes(span, 5, json_string_value(name), json_string_length(name));
    json_t *kind = jget(s, "kind", NULL);
    static const char *const zk[] = { "", "", "SERVER", "CLIENT", "PRODUCER", "CONSUMER" };
    uint64_t k = 1;
    if (kind) {
        if (!json_is_string(kind))
            return fail(d, "%s: expected CLIENT, SERVER, PRODUCER or CONSUMER", "kind");
        k = 0;
        for (size_t i = 2; i < ARRAY_SIZE(zk); i++)
            if (!strcmp(json_string_value(kind), zk[i]))
                k = i;
        if (!k)
            return fail(d, "%s: expected CLIENT, SERVER, PRODUCER or CONSUMER", "kind");
    }
    pb_put_uint(span, 6, k);
    uint64_t ts = 0, dur = 0;
    json_t *t = jget(s, "timestamp", NULL), *du = jget(s, "duration", NULL);
    if ((t && get_u64(d, t, &ts, "timestamp")) || (du && get_u64(d, du, &dur, "duration")))
        return -EINVAL;
    pb_put_fixed64(span, 7, ts * 1000);
    pb_put_fixed64(span, 8, (ts + dur) * 1000);
    json_t *tags = jget(s, "tags", NULL);
    bool error = false;
    const char *errmsg = NULL;
    if (tags) {
        if (!json_is_object(tags))
            return fail(d, "%s: expected an object of strings", "tags");
        const char *key;
        json_t *val;
        json_object_foreach(tags, key, val) {
            if (!json_is_string(val))
                return fail(d, "%s: expected an object of strings", "tags");
            if (!strcmp(key, "error")) {
                error = true;
                errmsg = json_string_value(val);
                continue;
            }
            put_str_attr(span, 9, key, json_string_value(val), json_string_length(val));
        }
    }
    json_t *re = jget(s, "remoteEndpoint", NULL);
    if (re && json_is_object(re)) {
        json_t *x;
        if ((x = jget(re, "serviceName", NULL)) && json_is_string(x))
            put_str_attr(span, 9, "peer.service", json_string_value(x), json_string_length(x));
        if ((x = jget(re, "ipv4", NULL)) && json_is_string(x))
            put_str_attr(span, 9, "net.peer.ip", json_string_value(x), json_string_length(x));
        else if ((x = jget(re, "ipv6", NULL)) && json_is_string(x))
            put_str_attr(span, 9, "net.peer.ip", json_string_value(x), json_string_length(x));
        if ((x = jget(re, "port", NULL)) && json_is_integer(x))
            put_int_attr(span, 9, "net.peer.port", json_integer_value(x));
    }
    json_t *ann = jget(s, "annotations", NULL);
    if (ann) {
        if (!json_is_array(ann))
            return fail(d, "%s: expected a list", "annotations");
        size_t i;
        json_t *a;
        json_array_foreach(ann, i, a) {
            uint64_t at = 0;
            json_t *v = jget(a, "value", NULL), *at_j = jget(a, "timestamp", NULL);
            if (!json_is_object(a) || !v || !json_is_string(v) || !at_j || get_u64(d, at_j, &at, "timestamp"))
                return fail(d, "%s: expected {timestamp, value}", "annotations");
            struct buf ev = BUF_INIT;
            pb_put_fixed64(&ev, 1, at * 1000);
            pb_put_bytes(&ev, 2, json_string_value(v), json_string_length(v));
            pb_put_msg(span, 11, &ev);
            buf_free(&ev);
        }
    }
    if (error) {
        struct buf st = BUF_INIT;
        if (errmsg && *errmsg && strcmp(errmsg, "true"))
            pb_put_bytes(&st, 2, errmsg, strlen(errmsg));
        pb_put_uint(&st, 3, 2);
        pb_put_msg(span, 15, &st);
        buf_free(&st);
    }
    /* the resource: the local endpoint */
    json_t *le = jget(s, "localEndpoint", NULL), *x;
    const char *svc = "unknown_service";
    if (le && json_is_object(le) && (x = jget(le, "serviceName", NULL)) && json_is_string(x) && json_string_length(x))
        svc = json_string_value(x);
    put_str_attr(res, 1, "service.name", svc, strlen(svc));
    if (le && json_is_object(le)) {
        if ((x = jget(le, "ipv4", NULL)) && json_is_string(x))
            put_str_attr(res, 1, "net.host.ip", json_string_value(x), json_string_length(x));
        else if ((x = jget(le, "ipv6", NULL)) && json_is_string(x))
            put_str_attr(res, 1, "net.host.ip", json_string_value(x), json_string_length(x));
        if ((x = jget(le, "port", NULL)) && json_is_integer(x))
            put_int_attr(res, 1, "net.host.port", json_integer_value(x));
    }
    return 0;
}

int tr_zipkin_json_to_pb(const char *json, size_t n, struct buf *out, char *err, size_t errlen)
{
    struct dctx d = { err, errlen };
    json_error_t je;
    json_t *root = json_loadb(json, n, 0, &je);
    if (!root) {
        snprintf(err, errlen, "invalid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        return -EINVAL;
    }
    int r = 0;
    if (!json_is_array(root))
        r = fail(&d, "%s: expected a list of Zipkin v2 spans", "body");
    size_t i;
    json_t *s;
    if (!r)
        json_array_foreach(root, i, s) {
            if (!json_is_object(s)) {
                r = fail(&d, "%s: expected a list of Zipkin v2 spans", "body");
                break;
            }
            struct buf res = BUF_INIT, span = BUF_INIT, ss = BUF_INIT, rs = BUF_INIT;
            r = zipkin_span(&d, s, &res, &span);
            if (!r) {
                pb_put_msg(&ss, 2, &span);
                pb_put_msg(&rs, 1, &res);
                pb_put_msg(&rs, 2, &ss);
                pb_put_msg(out, 1, &rs);
            }
            buf_free(&res);
            buf_free(&span);
            buf_free(&ss);
            buf_free(&rs);
            if (r)
                break;
        }
    json_decref(root);
    return r;
}
