/* tr_api.c - the HTTP APIs, one set per listener: OTLP/HTTP receiving, Zipkin v2
 * (in and query), Jaeger's query API (v1 JSON and api_v3), Tempo's API (trace by
 * id in OTLP JSON or protobuf, search by tags or TraceQL, tag names and values).
 * Each listener also answers /metrics, /-/healthy and /-/ready (and Tempo's
 * /ready).
 */
#include "traces_internal.h"
#include "core/log.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEMPO_VERSION "2.7.2"                   /* the Tempo API version spoken */

static void reply(struct httpd_req *r, int status, const char *ctype, struct buf *b)
{
    httpd_respond(r, status, ctype, buf_head(b), buf_used(b));
}

static void reply_json(struct httpd_req *r, struct buf *b)
{
    reply(r, 200, "application/json", b);
}

static void reply_text(struct httpd_req *r, int status, const char *msg)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, msg);
    buf_putc(&b, '\n');
    reply(r, status, "text/plain; charset=utf-8", &b);
    buf_free(&b);
}

/* Jaeger's error shape. */
static void jaeger_error(struct httpd_req *r, int status, const char *msg)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "{\"data\":null,\"total\":0,\"limit\":0,\"offset\":0,\"errors\":[{\"code\":%d,\"msg\":", status);
    buf_json_str(&b, msg);
    buf_puts(&b, "}]}");
    reply(r, status, "application/json", &b);
    buf_free(&b);
}

static const char *tenant_of(struct traces_svc *s, struct httpd_req *r, char *out, size_t n)
{
    int st = httpd_req_tenant(r, s->conf->default_tenant, s->conf->auth, out, n);
    if (st) {
        reply_text(r, st, st == 401 ? "no org id" : "invalid X-Scope-OrgID");
        return NULL;
    }
    return out;
}

static int64_t now_ns(void)
{
    return (int64_t)(cairn_wall_time() * 1e9);
}

/* ---- receiving ---- */

/* The body, inflated when gzip/deflate. -1 when answered. */
static int body_of(struct httpd_req *r, struct buf *tmp, struct strv *out)
{
    const struct http_header *ce = httpd_req_header(r, "Content-Encoding");
    *out = r->body;
    if (ce && (strv_caseeq_cstr(ce->value, "gzip") || strv_caseeq_cstr(ce->value, "deflate"))) {
        int rc = buf_inflate(r->body.p, r->body.n, TR_MAX_BODY, tmp);
        if (rc) {
            reply_text(r, rc == -EFBIG ? 413 : 400, rc == -EFBIG ? "request body too large" : "cannot decompress the body");
            return -1;
        }
        *out = buf_strv(tmp);
    } else if (ce && ce->value.n && !strv_caseeq_cstr(ce->value, "identity")) {
        reply_text(r, 415, "unsupported Content-Encoding");
        return -1;
    }
    return 0;
}

/* Ingests an ExportTraceServiceRequest; the result for the caller's answer. */
static int ingest(struct traces_svc *s, const char *tenant, const uint8_t *p, size_t n, struct tr_ingest_result *res)
{
    int rc = tr_store_ingest(&s->store, tenant, p, n, res);
    if (!rc) {
        metric_add(s->m_spans, (double)res->accepted);
        metric_add(s->m_refused, (double)res->rejected);
        if (res->accepted)
            traces__span_metrics(s, tenant, p, n);
    }
    return rc;
}

static void h_otlp(struct traces_svc *s, struct httpd_req *r)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    struct buf tmp = BUF_INIT, pbuf = BUF_INIT;
    struct strv body;
    if (body_of(r, &tmp, &body)) {
        buf_free(&tmp);
        return;
    }
    const struct http_header *ct = httpd_req_header(r, "Content-Type");
    bool json = ct && strv_has_prefix(ct->value, "application/json");
    if (!json && (!ct || !strv_has_prefix(ct->value, "application/x-protobuf"))) {
        reply_text(r, 415, "unsupported Content-Type: send application/x-protobuf or application/json");
        buf_free(&tmp);
        return;
    }
    const uint8_t *p = (const uint8_t *)body.p;
    size_t n = body.n;
    char err[512];
    if (json) {
        if (tr_otlp_json_to_pb(body.p ? body.p : "", body.n, &pbuf, err, sizeof(err))) {
            reply_text(r, 400, err);
            goto out;
        }
        p = (const uint8_t *)buf_head(&pbuf);
        n = buf_used(&pbuf);
    }
    struct tr_ingest_result res;
    int rc = ingest(s, tenant, p ? p : (const uint8_t *)"", n, &res);
    if (rc) {
        reply_text(r, rc == -ENOMEM ? 500 : 400, rc == -ENOMEM ? "out of memory" : res.msg);
        goto out;
    }
    if (res.status) {
        if (res.retry_after)
            httpd_headerf(r, "Retry-After", "%u", res.retry_after);
        reply_text(r, res.status, res.msg);
        goto out;
    }
    struct buf b = BUF_INIT;
    if (json) {
        if (res.rejected) {
            buf_printf(&b, "{\"partialSuccess\":{\"rejectedSpans\":\"%llu\",\"errorMessage\":",
                       (unsigned long long)res.rejected);
            buf_json_str(&b, res.msg);
            buf_puts(&b, "}}");
        } else {
            buf_puts(&b, "{}");
        }
        reply(r, 200, "application/json", &b);
    } else {
        if (res.rejected) {
            struct buf ps = BUF_INIT;
            pb_put_uint(&ps, 1, res.rejected);
            pb_put_bytes(&ps, 2, res.msg, strlen(res.msg));
            pb_put_msg(&b, 1, &ps);
            buf_free(&ps);
        }
        reply(r, 200, "application/x-protobuf", &b);
    }
    buf_free(&b);
out:
    buf_free(&tmp);
    buf_free(&pbuf);
}

static void h_zipkin_in(struct traces_svc *s, struct httpd_req *r)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    struct buf tmp = BUF_INIT, pbuf = BUF_INIT;
    struct strv body;
    if (body_of(r, &tmp, &body)) {
        buf_free(&tmp);
        return;
    }
    const struct http_header *ct = httpd_req_header(r, "Content-Type");
    if (ct && !strv_has_prefix(ct->value, "application/json")) {
        reply_text(r, 415, "unsupported Content-Type: this server reads Zipkin v2 JSON (application/json)");
        goto out;
    }
    char err[512];
    if (tr_zipkin_json_to_pb(body.p ? body.p : "", body.n, &pbuf, err, sizeof(err))) {
        reply_text(r, 400, err);
        goto out;
    }
    struct tr_ingest_result res;
    int rc = ingest(s, tenant, (const uint8_t *)buf_head(&pbuf), buf_used(&pbuf), &res);
    if (rc || res.status) {
        if (res.retry_after)
            httpd_headerf(r, "Retry-After", "%u", res.retry_after);
        reply_text(r, rc ? (rc == -ENOMEM ? 500 : 400) : res.status, res.msg);
    } else if (res.rejected) {
        reply_text(r, 400, res.msg);
    } else {
        httpd_respond(r, 202, NULL, NULL, 0);
    }
out:
    buf_free(&tmp);
    buf_free(&pbuf);
}

/* ---- OTLP/gRPC: TraceService/Export, unary, over HTTP/2 ---- */

static void grpc_reply(struct httpd_req *r, int code, const char *msg, const struct buf *body)
{
    char c[12];
    snprintf(c, sizeof(c), "%d", code);
    httpd_trailer(r, "grpc-status", c);
    if (msg && *msg) {
        /* grpc-message is percent-encoded */
        struct buf m = BUF_INIT;
        for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
            if (*p >= 0x20 && *p < 0x7f && *p != '%')
                buf_putc(&m, (char)*p);
            else
                buf_printf(&m, "%%%02X", *p);
        httpd_trailer(r, "grpc-message", buf_head(&m));
        buf_free(&m);
    }
    struct buf out = BUF_INIT;
    if (body) {
        uint8_t pre[5] = { 0, (uint8_t)(buf_used(body) >> 24), (uint8_t)(buf_used(body) >> 16),
                           (uint8_t)(buf_used(body) >> 8), (uint8_t)buf_used(body) };
        buf_append(&out, pre, 5);
        buf_append(&out, buf_head(body), buf_used(body));
    }
    httpd_respond(r, 200, "application/grpc", buf_head(&out), buf_used(&out));
    buf_free(&out);
}

static void h_grpc(struct traces_svc *s, struct httpd_req *r)
{
    if (!r->h2) {
        reply_text(r, 505, "gRPC needs HTTP/2");
        return;
    }
    const struct http_header *ct = httpd_req_header(r, "Content-Type");
    if (!ct || !strv_has_prefix(ct->value, "application/grpc")) {
        reply_text(r, 415, "expected Content-Type: application/grpc");
        return;
    }
    if (!strv_eq_cstr(r->h.path, "/opentelemetry.proto.collector.trace.v1.TraceService/Export")) {
        grpc_reply(r, 12, "unknown method: this server implements TraceService/Export", NULL);
        return;
    }
    char tenant[256];
    if (httpd_req_tenant(r, s->conf->default_tenant, s->conf->auth, tenant, sizeof(tenant))) {
        grpc_reply(r, 16, "missing or invalid X-Scope-OrgID", NULL);
        return;
    }
    const uint8_t *p = (const uint8_t *)r->body.p;
    size_t n = r->body.n;
    if (n < 5) {
        grpc_reply(r, 3, "empty or truncated gRPC message", NULL);
        return;
    }
    uint32_t len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    if (len != n - 5) {
        grpc_reply(r, 3, "one unary gRPC message expected", NULL);
        return;
    }
    struct buf inflated = BUF_INIT;
    const uint8_t *msg = p + 5;
    size_t mlen = len;
    if (p[0]) {
        const struct http_header *enc = httpd_req_header(r, "grpc-encoding");
        if (!enc || !(strv_eq_cstr(enc->value, "gzip") || strv_eq_cstr(enc->value, "deflate"))) {
            grpc_reply(r, 12, "unsupported grpc-encoding (gzip and deflate are)", NULL);
            return;
        }
        int rc = buf_inflate((const char *)msg, mlen, TR_MAX_BODY, &inflated);
        if (rc) {
            grpc_reply(r, rc == -EFBIG ? 8 : 3, rc == -EFBIG ? "message too large" : "cannot decompress", NULL);
            buf_free(&inflated);
            return;
        }
        msg = (const uint8_t *)buf_head(&inflated);
        mlen = buf_used(&inflated);
    }
    struct tr_ingest_result res;
    int rc = ingest(s, tenant, msg ? msg : (const uint8_t *)"", mlen, &res);
    buf_free(&inflated);
    if (rc) {
        grpc_reply(r, rc == -ENOMEM ? 13 : 3, rc == -ENOMEM ? "out of memory" : res.msg, NULL);
        return;
    }
    if (res.status) {
        grpc_reply(r, res.status == 429 ? 8 : 14, res.msg, NULL);
        return;
    }
    struct buf b = BUF_INIT;
    if (res.rejected) {
        struct buf ps = BUF_INIT;
        pb_put_uint(&ps, 1, res.rejected);
        pb_put_bytes(&ps, 2, res.msg, strlen(res.msg));
        pb_put_msg(&b, 1, &ps);
        buf_free(&ps);
    }
    grpc_reply(r, 0, NULL, &b);
    buf_free(&b);
}

/* ---- reading one trace ---- */

/* Reads the trace into v (with parts in raw). 0: found; 1: not found. */
static int load_trace(struct traces_svc *s, const char *tenant, const uint8_t id[16], struct buf *raw,
                      struct tr_trace_view *v)
{
    if (tr_store_get(&s->store, tenant, id, raw) <= 0)
        return 1;
    if (tr_view_add(v, (const uint8_t *)buf_head(raw), buf_used(raw)) || !v->n)
        return 1;
    tr_view_link(v);
    return 0;
}

static bool path_id(struct strv path, const char *prefix, uint8_t id[16], struct strv *rest)
{
    if (!strv_has_prefix(path, prefix))
        return false;
    struct strv t = strv_make(path.p + strlen(prefix), path.n - strlen(prefix));
    const char *slash = memchr(t.p, '/', t.n);
    struct strv idv = slash ? strv_make(t.p, (size_t)(slash - t.p)) : t;
    if (rest)
        *rest = slash ? strv_make(slash, t.n - (size_t)(slash - t.p)) : strv_make("", 0);
    return tr_parse_trace_id(idv, id) == 0;
}

static bool wants_protobuf(struct httpd_req *r)
{
    const struct http_header *a = httpd_req_header(r, "Accept");
    return a && (memmem(a->value.p, a->value.n, "application/protobuf", 20) ||
                 memmem(a->value.p, a->value.n, "application/x-protobuf", 22));
}

/* ---- search ---- */

struct jq {                                     /* a Jaeger (or Zipkin) search */
    const char *service, *operation;
    char *tagk[32], *tagv[32];
    size_t ntags;
    int64_t start, end;                         /* ns */
    int64_t min_dur, max_dur;                   /* ns; -1 none */
    size_t limit;
    bool lower;                                 /* Zipkin: names compare case-insensitively */
    char *own_op;                               /* operation, when allocated here */
};

struct tag_probe {
    const char *key, *val;
    struct buf tmp;
    bool found;
};

static int probe_one(const struct tr_kv *kv, int where, void *arg)
{
    struct tag_probe *tp = arg;
    (void)where;
    if (!strv_eq_cstr(kv->key, tp->key))
        return 0;
    buf_reset(&tp->tmp);
    tr_kv_string(kv, &tp->tmp);
    if (buf_used(&tp->tmp) == strlen(tp->val) && !memcmp(buf_head(&tp->tmp), tp->val, buf_used(&tp->tmp))) {
        tp->found = true;
        return 1;
    }
    return 0;
}

/* The tags Jaeger derives from span fields (span.kind, error, otel.*). */
static bool synthetic_tag(const struct tr_span *sp, const char *k, const char *v)
{
    static const char *const kinds[] = { "", "internal", "server", "client", "producer", "consumer" };
    if (!strcmp(k, "span.kind"))
        return sp->kind >= 1 && sp->kind <= 5 && !strcmp(v, kinds[sp->kind]);
    if (!strcmp(k, "error"))
        return sp->status == 2 && !strcmp(v, "true");
    if (!strcmp(k, "otel.status_code"))
        return (sp->status == 1 && !strcmp(v, "OK")) || (sp->status == 2 && !strcmp(v, "ERROR"));
    if (!strcmp(k, "otel.status_description"))
        return strv_eq_cstr(sp->status_msg, v);
    if (!strcmp(k, "otel.scope.name") || !strcmp(k, "otel.scope.version")) {
        struct pb m = sp->scope, sub;
        uint32_t f;
        int wt;
        uint64_t x;
        uint32_t want = k[11] == 'n' ? 1 : 2;
        while (sp->scope.p && m.p < m.end && !pb_field(&m, &f, &wt, &sub, &x))
            if (f == want && wt == 2)
                return strv_eq_cstr(strv_make((const char *)sub.p, (size_t)(sub.end - sub.p)), v);
    }
    return false;
}

static bool name_eq(struct strv a, const char *b, bool lower)
{
    return lower ? strv_caseeq_cstr(a, b) : strv_eq_cstr(a, b);
}

/* tags false: everything but the tags (a view from a block's columns lacks the
 * events, links and scope that tags also search). */
static bool jaeger_span_matches(const struct jq *q, const struct tr_span *sp, bool tags)
{
    if (q->service && !name_eq(sp->service.n ? sp->service : strv_cstr("unknown_service"), q->service, q->lower))
        return false;
    if (q->operation && !name_eq(sp->name, q->operation, q->lower))
        return false;
    if (sp->start < q->start || sp->start > q->end)
        return false;
    int64_t d = sp->end - sp->start;
    if ((q->min_dur >= 0 && d < q->min_dur) || (q->max_dur >= 0 && d > q->max_dur))
        return false;
    for (size_t i = 0; tags && i < q->ntags; i++) {
        if (synthetic_tag(sp, q->tagk[i], q->tagv[i]))
            continue;
        struct tag_probe tp = { q->tagk[i], q->tagv[i], BUF_INIT, false };
        tr_span_attrs_all(sp, probe_one, &tp);
        buf_free(&tp.tmp);
        if (!tp.found)
            return false;
    }
    return true;
}

/* Whether one span of v matches q (tags false: see jaeger_span_matches). */
static bool any_span_matches(const struct jq *q, const struct tr_trace_view *v, bool tags)
{
    for (size_t i = 0; i < v->n; i++)
        if (jaeger_span_matches(q, &v->s[i], tags))
            return true;
    return false;
}

struct hit {
    uint8_t id[16];
    int64_t start;
};

struct jsearch {
    struct traces_svc *s;
    const struct jq *q;
    struct tr_trace_view v;
    struct hit *hits;
    size_t n, cap;
    struct hmap seen;
};

static int hit_cmp(const void *a, const void *b)
{
    const struct hit *x = a, *y = b;
    return x->start > y->start ? -1 : x->start < y->start;
}

static int add_hit(struct hit **hits, size_t *n, size_t *cap, struct hmap *seen, const uint8_t id[16], int64_t start)
{
    if (hmap_get(seen, id, 16))
        return 0;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        struct hit *nh = realloc(*hits, nc * sizeof(*nh));
        if (!nh)
            return -ENOMEM;
        *hits = nh;
        *cap = nc;
    }
    memcpy((*hits)[*n].id, id, 16);
    (*hits)[*n].start = start;
    (*n)++;
    return hmap_put(seen, id, 16, (void *)1);
}

static int jsearch_fn(void *arg, const uint8_t id[16], const uint8_t *p, size_t n)
{
    struct jsearch *js = arg;
    if (hmap_get(&js->seen, id, 16))
        return 0;
    tr_view_reset(&js->v);
    if (tr_view_add(&js->v, p, n))
        return 0;
    if (any_span_matches(js->q, &js->v, true))
        add_hit(&js->hits, &js->n, &js->cap, &js->seen, id, js->v.start);
    /* enough: the search goes newest first, a limit's worth plus a margin */
    return js->n >= js->q->limit * 4 + 64;
}

static int jsearch_match(void *arg, const struct tr_trace_view *v)
{
    struct jsearch *js = arg;
    return !hmap_get(&js->seen, v->id, 16) && any_span_matches(js->q, v, false);
}

static void jq_free(struct jq *q)
{
    free(q->own_op);
    for (size_t i = 0; i < q->ntags; i++) {
        free(q->tagk[i]);
        free(q->tagv[i]);
    }
}

/* Runs a Jaeger-style search; hits newest first, at most q->limit. */
static int run_jsearch(struct traces_svc *s, const char *tenant, const struct jq *q, struct hit **hits, size_t *n)
{
    struct jsearch js = { .s = s, .q = q };
    uint64_t toks[40];
    size_t nt = 0;
    if (q->service && !q->lower)
        toks[nt++] = tr_token("s", strv_cstr(q->service), strv_make("", 0));
    if (q->operation && !q->lower)
        toks[nt++] = tr_token("n", strv_cstr(q->operation), strv_make("", 0));
    for (size_t i = 0; i < q->ntags && nt < ARRAY_SIZE(toks); i++) {
        static const char *const synth[] = { "span.kind", "error", "otel.status_code", "otel.status_description",
                                             "otel.scope.name", "otel.scope.version" };
        bool skip = false;
        for (size_t k = 0; k < ARRAY_SIZE(synth); k++)
            skip |= !strcmp(q->tagk[i], synth[k]);
        if (!skip && strlen(q->tagv[i]) <= 256)
            toks[nt++] = tr_token("a", strv_cstr(q->tagk[i]), strv_cstr(q->tagv[i]));
    }
    struct tr_search srch = {
        .tenant = tenant, .from = q->start, .to = q->end + (q->max_dur > 0 ? q->max_dur : 0) + 1,
        .tokens = toks, .ntokens = nt, .fn = jsearch_fn, .match = jsearch_match, .arg = &js,
        .deadline_ms = cairn_now_ms() + s->conf->query_timeout_ms,
    };
    srch.from = q->start;
    /* a span starting in the window may end after it: search by start only */
    srch.to = INT64_MAX;
    int r = tr_store_search(&s->store, &srch);
    tr_view_free(&js.v);
    hmap_free(&js.seen);
    if (js.n)
        qsort(js.hits, js.n, sizeof(*js.hits), hit_cmp);
    if (js.n > q->limit)
        js.n = q->limit;
    *hits = js.hits;
    *n = js.n;
    return r;
}

/* Jaeger's tags: tags={"k":"v"} (JSON map) or tag=k:v, repeated. */
static int jaeger_tags(const struct http_form *f, struct jq *q, char *err, size_t errlen)
{
    for (size_t i = 0; i < f->n; i++) {
        if (!strcmp(f->key[i], "tag")) {
            const char *c = strchr(f->val[i], ':');
            if (!c) {
                snprintf(err, errlen, "malformed 'tag' parameter, expecting key:value, received: %s", f->val[i]);
                return -EINVAL;
            }
            if (q->ntags == ARRAY_SIZE(q->tagk))
                break;
            q->tagk[q->ntags] = strndup(f->val[i], (size_t)(c - f->val[i]));
            q->tagv[q->ntags++] = strdup(c + 1);
        } else if (!strcmp(f->key[i], "tags")) {
            json_error_t je;
            json_t *o = json_loads(f->val[i], 0, &je);
            if (!o || !json_is_object(o)) {
                json_decref(o);
                snprintf(err, errlen, "malformed 'tags' parameter, cannot unmarshal JSON: %s", o ? "not a map" : je.text);
                return -EINVAL;
            }
            const char *k;
            json_t *v;
            json_object_foreach(o, k, v) {
                if (q->ntags == ARRAY_SIZE(q->tagk))
                    break;
                char num[64];
                const char *vs = json_is_string(v) ? json_string_value(v) : NULL;
                if (!vs) {
                    struct buf b = BUF_INIT;
                    if (json_is_integer(v))
                        buf_printf(&b, "%lld", (long long)json_integer_value(v));
                    else if (json_is_real(v))
                        buf_put_float(&b, json_real_value(v), 'f');
                    else if (json_is_boolean(v))
                        buf_puts(&b, json_is_true(v) ? "true" : "false");
                    snprintf(num, sizeof(num), "%s", b.data ? buf_head(&b) : "");
                    buf_free(&b);
                    vs = num;
                }
                q->tagk[q->ntags] = strdup(k);
                q->tagv[q->ntags++] = strdup(vs);
            }
            json_decref(o);
        }
    }
    for (size_t i = 0; i < q->ntags; i++)
        if (!q->tagk[i] || !q->tagv[i])
            return -ENOMEM;
    return 0;
}

static int parse_us(const char *s, int64_t *ns)
{
    char *e;
    long long v = strtoll(s, &e, 10);
    if (!*s || *e)
        return -EINVAL;
    *ns = v * 1000;
    return 0;
}

static void render_traces_jaeger(struct traces_svc *s, const char *tenant, const struct hit *hits, size_t n,
                                 struct buf *b)
{
    buf_puts(b, "{\"data\":[");
    struct buf raw = BUF_INIT;
    struct tr_trace_view v = { 0 };
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        buf_reset(&raw);
        tr_view_reset(&v);
        if (load_trace(s, tenant, hits[i].id, &raw, &v))
            continue;
        if (!first)
            buf_putc(b, ',');
        first = false;
        tr_render_jaeger(&v, b);
    }
    tr_view_free(&v);
    buf_free(&raw);
    buf_printf(b, "],\"total\":%zu,\"limit\":0,\"offset\":0,\"errors\":null}", n);
}

static void h_jaeger_search(struct traces_svc *s, struct httpd_req *r, const char *tenant)
{
    struct http_form f = { 0 };
    httpd_req_form(r, &f);
    struct jq q = { .min_dur = -1, .max_dur = -1, .limit = s->conf->search_default_limit };
    char err[512] = "";
    struct buf b = BUF_INIT;
    const char *v;
    /* explicit trace ids: traceID=...&traceID=... */
    struct hit *hits = NULL;
    size_t n = 0, cap = 0;
    struct hmap seen = { 0 };
    for (size_t i = 0; i < f.n; i++)
        if (!strcmp(f.key[i], "traceID")) {
            uint8_t id[16];
            if (tr_parse_trace_id(strv_cstr(f.val[i]), id)) {
                jaeger_error(r, 400, "malformed parameter traceID");
                goto out;
            }
            add_hit(&hits, &n, &cap, &seen, id, 0);
        }
    if (n) {
        render_traces_jaeger(s, tenant, hits, n, &b);
        reply_json(r, &b);
        goto out;
    }
    q.service = http_form_get(&f, "service");
    if (!q.service || !*q.service) {
        jaeger_error(r, 400, "parameter 'service' is required");
        goto out;
    }
    q.operation = http_form_get(&f, "operation");
    if (q.operation && !*q.operation)
        q.operation = NULL;
    int64_t now = now_ns();
    q.end = now;
    if ((v = http_form_get(&f, "end")) && *v && parse_us(v, &q.end)) {
        jaeger_error(r, 400, "unable to parse param 'end'");
        goto out;
    }
    int64_t lookback = 3600LL * 1000000000;     /* Jaeger's default */
    if ((v = http_form_get(&f, "lookback")) && *v && strcmp(v, "custom") && tr_parse_go_duration(v, strlen(v), &lookback)) {
        jaeger_error(r, 400, "unable to parse param 'lookback'");
        goto out;
    }
    q.start = q.end - lookback;
    if ((v = http_form_get(&f, "start")) && *v && parse_us(v, &q.start)) {
        jaeger_error(r, 400, "unable to parse param 'start'");
        goto out;
    }
    if ((v = http_form_get(&f, "minDuration")) && *v && tr_parse_go_duration(v, strlen(v), &q.min_dur)) {
        jaeger_error(r, 400, "unable to parse param 'minDuration'");
        goto out;
    }
    if ((v = http_form_get(&f, "maxDuration")) && *v && tr_parse_go_duration(v, strlen(v), &q.max_dur)) {
        jaeger_error(r, 400, "unable to parse param 'maxDuration'");
        goto out;
    }
    if (q.min_dur >= 0 && q.max_dur >= 0 && q.max_dur < q.min_dur) {
        jaeger_error(r, 400, "'maxDuration' should be greater than 'minDuration'");
        goto out;
    }
    if ((v = http_form_get(&f, "limit")) && *v) {
        char *e;
        long l = strtol(v, &e, 10);
        if (*e || l < 0) {
            jaeger_error(r, 400, "unable to parse param 'limit'");
            goto out;
        }
        if (l > 0)
            q.limit = (size_t)l;
    }
    if (jaeger_tags(&f, &q, err, sizeof(err))) {
        jaeger_error(r, 400, err);
        goto out;
    }
    free(hits);
    hits = NULL;
    if (run_jsearch(s, tenant, &q, &hits, &n)) {
        jaeger_error(r, 500, "search failed");
        goto out;
    }
    metric_inc(s->m_queries);
    render_traces_jaeger(s, tenant, hits, n, &b);
    reply_json(r, &b);
out:
    free(hits);
    hmap_free(&seen);
    jq_free(&q);
    buf_free(&b);
    http_form_free(&f);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The tenant's service names, sorted (malloc'd array of borrowed strings). */
static size_t service_names(struct traces_svc *s, const char *tenant, const char ***out)
{
    struct tr_tenant *t = tr_store_tenant(&s->store, tenant, false);
    *out = NULL;
    if (!t || !t->services.n)
        return 0;
    const char **names = malloc(t->services.n * sizeof(*names));
    if (!names)
        return 0;
    size_t n = 0;
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&t->services, &it, &slot);)
        names[n++] = ((struct tr_service_info *)slot->value)->name;
    qsort(names, n, sizeof(*names), cmp_str);
    *out = names;
    return n;
}

static void list_json(struct buf *b, const char **names, size_t n, bool lower)
{
    buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(b, ',');
        if (lower) {
            char *l = strdup(names[i]);
            for (char *c = l; c && *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c + 32);
            buf_json_str(b, l ? l : "");
            free(l);
        } else {
            buf_json_str(b, names[i]);
        }
    }
    buf_putc(b, ']');
}

static const char *const kind_names[] = { "unspecified", "internal", "server", "client", "producer", "consumer" };

static int cmp_op(const void *a, const void *b)
{
    const struct tr_op *x = *(struct tr_op *const *)a, *y = *(struct tr_op *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (int)x->kind - (int)y->kind;
}

/* Operations of a service (kind filter: NULL or a name), sorted. */
static size_t service_ops(struct traces_svc *s, const char *tenant, const char *svc, const char *kind,
                          struct tr_op ***out)
{
    struct tr_tenant *t = tr_store_tenant(&s->store, tenant, false);
    struct tr_service_info *si = t ? hmap_get(&t->services, svc, strlen(svc)) : NULL;
    *out = NULL;
    if (!si || !si->ops.n)
        return 0;
    struct tr_op **ops = malloc(si->ops.n * sizeof(*ops));
    if (!ops)
        return 0;
    size_t n = 0;
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&si->ops, &it, &slot);) {
        struct tr_op *op = slot->value;
        if (kind && *kind && strcmp(kind, kind_names[op->kind < 6 ? op->kind : 0]))
            continue;
        ops[n++] = op;
    }
    qsort(ops, n, sizeof(*ops), cmp_op);
    *out = ops;
    return n;
}

/* [{"name": ..., "spanKind": ...}, ...] */
static void ops_json(struct buf *b, struct tr_op **ops, size_t n)
{
    buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(b, ops[i]->name);
        buf_printf(b, ",\"spanKind\":\"%s\"}", ops[i]->kind < 6 && ops[i]->kind ? kind_names[ops[i]->kind] : "");
    }
    buf_putc(b, ']');
}

static void h_dependencies(struct traces_svc *s, struct httpd_req *r, const char *tenant, bool zipkin)
{
    struct http_form f = { 0 };
    httpd_req_form(r, &f);
    const char *v;
    int64_t end = now_ns() / 1000000, lookback = 24LL * 3600 * 1000;
    if ((v = http_form_get(&f, "endTs")) && *v)
        end = strtoll(v, NULL, 10);
    if ((v = http_form_get(&f, "lookback")) && *v)
        lookback = strtoll(v, NULL, 10);
    http_form_free(&f);
    struct tr_tenant *t = tr_store_tenant(&s->store, tenant, false);
    struct buf b = BUF_INIT;
    buf_puts(&b, zipkin ? "[" : "{\"data\":[");
    bool first = true;
    const struct hmap_slot *slot;
    for (size_t it = 0; t && hmap_next(&t->edges, &it, &slot);) {
        struct tr_edge *e = slot->value;
        int64_t last_ms = e->last / 1000000;
        if (last_ms > end || last_ms < end - lookback)
            continue;
        buf_puts(&b, first ? "{\"parent\":" : ",{\"parent\":");
        first = false;
        buf_json_str(&b, e->client);
        buf_puts(&b, ",\"child\":");
        buf_json_str(&b, e->server);
        if (zipkin)
            buf_printf(&b, ",\"callCount\":%llu,\"errorCount\":%llu}", (unsigned long long)e->calls,
                       (unsigned long long)e->errors);
        else
            buf_printf(&b, ",\"callCount\":%llu,\"source\":\"cairn\"}", (unsigned long long)e->calls);
    }
    buf_puts(&b, zipkin ? "]" : "],\"total\":0,\"limit\":0,\"offset\":0,\"errors\":null}");
    reply_json(r, &b);
    buf_free(&b);
}

/* ---- Jaeger api_v3 ---- */

static void v3_traces(struct traces_svc *s, struct httpd_req *r, const char *tenant, const struct hit *hits, size_t n)
{
    struct buf b = BUF_INIT, raw = BUF_INIT;
    struct tr_trace_view v = { 0 };
    buf_puts(&b, "{\"result\":{\"resourceSpans\":[");
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        buf_reset(&raw);
        tr_view_reset(&v);
        if (load_trace(s, tenant, hits[i].id, &raw, &v))
            continue;
        struct buf one = BUF_INIT;
        tr_render_otlp_json(&v, &one, "x");
        /* splice the resourceSpans list of each trace into one */
        const char *open = strchr(buf_head(&one), '[');
        size_t len = buf_used(&one) - (size_t)(open - buf_head(&one)) - 2;
        if (len) {
            if (found)
                buf_putc(&b, ',');
            buf_append(&b, open + 1, len);
            found++;
        }
        buf_free(&one);
    }
    buf_puts(&b, "]}}");
    if (!found) {
        buf_reset(&b);
        buf_puts(&b, "{\"error\":{\"httpCode\":404,\"message\":\"trace not found\"}}");
        reply(r, 404, "application/json", &b);
    } else {
        reply_json(r, &b);
    }
    tr_view_free(&v);
    buf_free(&raw);
    buf_free(&b);
}

static void h_jaeger_v3(struct traces_svc *s, struct httpd_req *r, const char *tenant)
{
    struct strv path = r->h.path;
    uint8_t id[16];
    struct buf b = BUF_INIT;
    if (path_id(path, "/api/v3/traces/", id, NULL)) {
        struct hit h = { .start = 0 };
        memcpy(h.id, id, 16);
        v3_traces(s, r, tenant, &h, 1);
    } else if (strv_eq_cstr(path, "/api/v3/traces")) {
        struct http_form f = { 0 };
        httpd_req_form(r, &f);
        struct jq q = { .min_dur = -1, .max_dur = -1, .limit = s->conf->search_default_limit };
        q.service = http_form_get(&f, "query.service_name");
        q.operation = http_form_get(&f, "query.operation_name");
        const char *v;
        int64_t t;
        bool bad = !q.service || !*q.service;
        if ((v = http_form_get(&f, "query.start_time_min")) && !cairn_parse_rfc3339(v, strlen(v), &t))
            q.start = t;
        else
            bad = true;
        if ((v = http_form_get(&f, "query.start_time_max")) && !cairn_parse_rfc3339(v, strlen(v), &t))
            q.end = t;
        else
            bad = true;
        if ((v = http_form_get(&f, "query.duration_min")) && *v && tr_parse_go_duration(v, strlen(v), &q.min_dur))
            bad = true;
        if ((v = http_form_get(&f, "query.duration_max")) && *v && tr_parse_go_duration(v, strlen(v), &q.max_dur))
            bad = true;
        if ((v = http_form_get(&f, "query.num_traces")) && *v)
            q.limit = (size_t)strtoul(v, NULL, 10);
        if (q.operation && !*q.operation)
            q.operation = NULL;
        for (size_t i = 0; i < f.n && q.ntags < ARRAY_SIZE(q.tagk); i++)
            if (!strncmp(f.key[i], "query.attributes", 16)) {
                /* query.attributes={"k":"v"} */
                json_t *o = json_loads(f.val[i], 0, NULL);
                const char *k;
                json_t *x;
                if (o && json_is_object(o))
                    json_object_foreach(o, k, x) if (json_is_string(x) && q.ntags < ARRAY_SIZE(q.tagk)) {
                        q.tagk[q.ntags] = strdup(k);
                        q.tagv[q.ntags++] = strdup(json_string_value(x));
                    }
                json_decref(o);
            }
        if (bad) {
            buf_puts(&b, "{\"error\":{\"httpCode\":400,\"message\":\"query.service_name, query.start_time_min and "
                         "query.start_time_max (RFC 3339) are required\"}}");
            reply(r, 400, "application/json", &b);
        } else {
            struct hit *hits = NULL;
            size_t n = 0;
            run_jsearch(s, tenant, &q, &hits, &n);
            metric_inc(s->m_queries);
            v3_traces(s, r, tenant, hits, n);
            free(hits);
        }
        jq_free(&q);
        http_form_free(&f);
    } else if (strv_eq_cstr(path, "/api/v3/services")) {
        const char **names;
        size_t n = service_names(s, tenant, &names);
        buf_puts(&b, "{\"services\":");
        list_json(&b, names, n, false);
        buf_putc(&b, '}');
        free(names);
        reply_json(r, &b);
    } else if (strv_eq_cstr(path, "/api/v3/operations")) {
        struct http_form f = { 0 };
        httpd_req_form(r, &f);
        const char *svc = http_form_get(&f, "service");
        struct tr_op **ops = NULL;
        size_t n = svc ? service_ops(s, tenant, svc, http_form_get(&f, "span_kind"), &ops) : 0;
        buf_puts(&b, "{\"operations\":");
        ops_json(&b, ops, n);
        buf_putc(&b, '}');
        if (n)
            free(ops);
        http_form_free(&f);
        reply_json(r, &b);
    } else {
        reply_text(r, 404, "404 page not found");
    }
    buf_free(&b);
}

static void h_jaeger(struct traces_svc *s, struct httpd_req *r)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    struct strv path = r->h.path;
    uint8_t id[16];
    struct buf b = BUF_INIT;
    if (strv_has_prefix(path, "/api/v3/")) {
        h_jaeger_v3(s, r, tenant);
    } else if (strv_eq_cstr(path, "/api/traces")) {
        h_jaeger_search(s, r, tenant);
    } else if (strv_has_prefix(path, "/api/traces/")) {
        if (!path_id(path, "/api/traces/", id, NULL)) {
            jaeger_error(r, 400, "malformed trace id");
        } else {
            struct buf raw = BUF_INIT;
            struct tr_trace_view v = { 0 };
            if (load_trace(s, tenant, id, &raw, &v)) {
                jaeger_error(r, 404, "trace not found");
            } else {
                buf_puts(&b, "{\"data\":[");
                tr_render_jaeger(&v, &b);
                buf_puts(&b, "],\"total\":0,\"limit\":0,\"offset\":0,\"errors\":null}");
                reply_json(r, &b);
            }
            tr_view_free(&v);
            buf_free(&raw);
        }
    } else if (strv_eq_cstr(path, "/api/services")) {
        const char **names;
        size_t n = service_names(s, tenant, &names);
        buf_puts(&b, "{\"data\":");
        list_json(&b, names, n, false);
        buf_printf(&b, ",\"total\":%zu,\"limit\":0,\"offset\":0,\"errors\":null}", n);
        free(names);
        reply_json(r, &b);
    } else if (strv_has_prefix(path, "/api/services/") && path.n > 25 &&
               !memcmp(path.p + path.n - 11, "/operations", 11)) {
        char *svc = http_urldecode(path.p + 14, path.n - 14 - 11);
        struct tr_op **ops = NULL;
        size_t n = svc ? service_ops(s, tenant, svc, NULL, &ops) : 0;
        buf_puts(&b, "{\"data\":[");
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (i && !strcmp(ops[i]->name, ops[i - 1]->name))
                continue;                   /* one name per kind: listed once */
            buf_puts(&b, k++ ? "," : "");
            buf_json_str(&b, ops[i]->name);
        }
        buf_printf(&b, "],\"total\":%zu,\"limit\":0,\"offset\":0,\"errors\":null}", k);
        if (n)
            free(ops);
        free(svc);
        reply_json(r, &b);
    } else if (strv_eq_cstr(path, "/api/operations")) {
        struct http_form f = { 0 };
        httpd_req_form(r, &f);
        const char *svc = http_form_get(&f, "service");
        if (!svc || !*svc) {
            jaeger_error(r, 400, "parameter 'service' is required");
        } else {
            struct tr_op **ops = NULL;
            size_t n = service_ops(s, tenant, svc, http_form_get(&f, "spanKind"), &ops);
            buf_puts(&b, "{\"data\":");
            ops_json(&b, ops, n);
            buf_printf(&b, ",\"total\":%zu,\"limit\":0,\"offset\":0,\"errors\":null}", n);
            if (n)
                free(ops);
            reply_json(r, &b);
        }
        http_form_free(&f);
    } else if (strv_eq_cstr(path, "/api/dependencies")) {
        h_dependencies(s, r, tenant, false);
    } else {
        jaeger_error(r, 404, "404 page not found");
    }
    buf_free(&b);
}

/* ---- Zipkin query ---- */

static void h_zipkin(struct traces_svc *s, struct httpd_req *r)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    struct strv path = r->h.path;
    uint8_t id[16];
    struct buf b = BUF_INIT, raw = BUF_INIT;
    struct tr_trace_view v = { 0 };
    struct http_form f = { 0 };
    httpd_req_form(r, &f);
    if (path_id(path, "/api/v2/trace/", id, NULL)) {
        if (load_trace(s, tenant, id, &raw, &v)) {
            reply_text(r, 404, "trace not found");
        } else {
            tr_render_zipkin(&v, &b);
            reply_json(r, &b);
        }
    } else if (strv_eq_cstr(path, "/api/v2/services")) {
        const char **names;
        size_t n = service_names(s, tenant, &names);
        list_json(&b, names, n, true);
        free(names);
        reply_json(r, &b);
    } else if (strv_eq_cstr(path, "/api/v2/spans")) {
        const char *svc = http_form_get(&f, "serviceName");
        if (!svc || !*svc) {
            reply_text(r, 400, "serviceName is required");
        } else {
            /* Zipkin lower-cases names: find the service whatever its case */
            const char **names;
            size_t n = service_names(s, tenant, &names);
            const char **ops = NULL;
            size_t nops = 0;
            for (size_t i = 0; i < n; i++) {
                if (strcasecmp(names[i], svc))
                    continue;
                struct tr_op **o;
                size_t k = service_ops(s, tenant, names[i], NULL, &o);
                const char **no = realloc(ops, (nops + k + 1) * sizeof(*no));
                if (no) {
                    ops = no;
                    for (size_t j = 0; j < k; j++)
                        ops[nops++] = o[j]->name;
                }
                if (k)
                    free(o);
            }
            if (nops)
                qsort(ops, nops, sizeof(*ops), cmp_str);
            size_t w = 0;
            for (size_t i = 0; i < nops; i++)
                if (!w || strcasecmp(ops[i], ops[w - 1]))
                    ops[w++] = ops[i];
            list_json(&b, ops, w, true);
            free(ops);
            free(names);
            reply_json(r, &b);
        }
    } else if (strv_eq_cstr(path, "/api/v2/remoteServices")) {
        /* the services this one calls: the servers of its service-graph edges */
        const char *svc = http_form_get(&f, "serviceName");
        if (!svc || !*svc) {
            reply_text(r, 400, "serviceName is required");
        } else {
            struct tr_tenant *t = tr_store_tenant(&s->store, tenant, false);
            const char **names = t && t->edges.n ? malloc(t->edges.n * sizeof(*names)) : NULL;
            size_t n = 0;
            const struct hmap_slot *slot;
            for (size_t it = 0; names && hmap_next(&t->edges, &it, &slot);) {
                const struct tr_edge *e = slot->value;
                if (!strcasecmp(e->client, svc))
                    names[n++] = e->server;
            }
            if (n)
                qsort(names, n, sizeof(*names), cmp_str);
            list_json(&b, names, n, true);
            free(names);
            reply_json(r, &b);
        }
    } else if (strv_eq_cstr(path, "/api/v2/dependencies")) {
        h_dependencies(s, r, tenant, true);
    } else if (strv_eq_cstr(path, "/api/v2/traces")) {
        struct jq q = { .min_dur = -1, .max_dur = -1, .limit = 10, .lower = true };
        const char *x;
        q.service = http_form_get(&f, "serviceName");
        q.operation = http_form_get(&f, "spanName");
        if (q.service && !*q.service)
            q.service = NULL;
        if (q.operation && (!*q.operation || !strcmp(q.operation, "all")))
            q.operation = NULL;
        int64_t end = now_ns() / 1000000, lookback = 86400000;
        if ((x = http_form_get(&f, "endTs")) && *x)
            end = strtoll(x, NULL, 10);
        if ((x = http_form_get(&f, "lookback")) && *x)
            lookback = strtoll(x, NULL, 10);
        q.end = end * 1000000;
        q.start = (end - lookback) * 1000000;
        if ((x = http_form_get(&f, "minDuration")) && *x)
            q.min_dur = strtoll(x, NULL, 10) * 1000;
        if ((x = http_form_get(&f, "maxDuration")) && *x)
            q.max_dur = strtoll(x, NULL, 10) * 1000;
        if ((x = http_form_get(&f, "limit")) && *x)
            q.limit = (size_t)strtoul(x, NULL, 10);
        if ((x = http_form_get(&f, "annotationQuery")) && *x) {
            /* "k=v and k2" : tags (a bare key: present with any value is not kept) */
            char *dup = strdup(x), *save = NULL;
            for (char *tok = dup ? strtok_r(dup, " ", &save) : NULL; tok; tok = strtok_r(NULL, " ", &save)) {
                if (!strcmp(tok, "and") || q.ntags == ARRAY_SIZE(q.tagk))
                    continue;
                char *eq = strchr(tok, '=');
                q.tagk[q.ntags] = eq ? strndup(tok, (size_t)(eq - tok)) : strdup(tok);
                q.tagv[q.ntags++] = strdup(eq ? eq + 1 : "");
            }
            free(dup);
        }
        struct hit *hits = NULL;
        size_t n = 0;
        run_jsearch(s, tenant, &q, &hits, &n);
        metric_inc(s->m_queries);
        buf_putc(&b, '[');
        for (size_t i = 0; i < n; i++) {
            buf_reset(&raw);
            tr_view_reset(&v);
            if (load_trace(s, tenant, hits[i].id, &raw, &v))
                continue;
            if (i)
                buf_putc(&b, ',');
            tr_render_zipkin(&v, &b);
        }
        buf_putc(&b, ']');
        free(hits);
        jq_free(&q);
        reply_json(r, &b);
    } else {
        reply_text(r, 404, "not found");
    }
    http_form_free(&f);
    tr_view_free(&v);
    buf_free(&raw);
    buf_free(&b);
}

/* ---- Tempo ---- */

struct tsearch {
    struct traces_svc *s;
    const char *tenant;
    struct tq_query *q;                         /* TraceQL, or NULL */
    struct jq tags;                             /* tags= search */
    int64_t min_dur, max_dur;                   /* trace duration bounds; -1 none */
    size_t limit, spss;
    struct tr_trace_view v;
    struct hmap seen;
    struct buf *out;
    size_t n;
    struct raw_hit {
        uint8_t id[16];
        int64_t start;
        struct buf json;
    } *hits;
    size_t cap;
};

static int attr_json_sel(struct buf *b, const struct tr_trace_view *v, int i, char **names, size_t n)
{
    struct buf tmp = BUF_INIT;
    bool first = true;
    for (size_t k = 0; k < n; k++) {
        struct tr_kv kv;
        buf_reset(&tmp);
        if (!tq_span_attr(v, i, names[k], &kv, &tmp))
            continue;
        buf_puts(b, first ? "{\"key\":" : ",{\"key\":");
        first = false;
        const char *key = names[k];
        if (!strncmp(key, "span.", 5))
            key += 5;
        else if (!strncmp(key, "resource.", 9))
            key += 9;
        else if (key[0] == '.')
            key++;
        buf_json_str(b, key);
        buf_puts(b, ",\"value\":");
        tr_any_json(&kv, b);
        buf_putc(b, '}');
    }
    buf_free(&tmp);
    return 0;
}

static void tempo_trace_json(struct tsearch *ts, const struct tr_trace_view *v, const struct tq_result *res,
                             struct buf *b)
{
    char hex[33];
    tr_hex_id(v->id, 16, hex);
    const struct tr_span *root = v->root >= 0 ? &v->s[v->root] : NULL;
    buf_printf(b, "{\"traceID\":\"%s\",\"rootServiceName\":", hex);
    if (root) {
        buf_putc(b, '"');
        buf_json_escape(b, root->service.p, root->service.n);
        buf_puts(b, "\",\"rootTraceName\":");
        buf_putc(b, '"');
        buf_json_escape(b, root->name.p, root->name.n);
        buf_putc(b, '"');
    } else {
        buf_puts(b, "\"<root span not yet received>\"");
    }
    int64_t dur_ms = (v->end - v->start) / 1000000;
    buf_printf(b, ",\"startTimeUnixNano\":\"%lld\",\"durationMs\":%lld", (long long)v->start, (long long)dur_ms);
    if (res && res->n) {
        buf_puts(b, ",\"spanSets\":[");
        struct buf first_set = BUF_INIT;
        for (size_t k = 0; k < res->n; k++) {
            const struct tq_spanset *ss = &res->sets[k];
            struct buf one = BUF_INIT;
            buf_puts(&one, "{\"spans\":[");
            for (size_t j = 0; j < ss->n && j < ts->spss; j++) {
                const struct tr_span *sp = &v->s[ss->spans[j]];
                char sh[17];
                tr_hex_id(sp->sid, 8, sh);
                buf_printf(&one, "%s{\"spanID\":\"%s\",\"name\":", j ? "," : "", sh);
                buf_putc(&one, '"');
                buf_json_escape(&one, sp->name.p, sp->name.n);
                buf_printf(&one, "\",\"startTimeUnixNano\":\"%lld\",\"durationNanos\":\"%lld\"", (long long)sp->start,
                           (long long)(sp->end - sp->start));
                if (res->nselect) {
                    buf_puts(&one, ",\"attributes\":[");
                    attr_json_sel(&one, v, ss->spans[j], res->select, res->nselect);
                    buf_putc(&one, ']');
                }
                buf_putc(&one, '}');
            }
            buf_printf(&one, "],\"matched\":%zu", ss->n);
            if (ss->has_value || buf_used(&ss->by)) {
                buf_puts(&one, ",\"attributes\":[");
                bool f1 = true;
                if (buf_used(&ss->by)) {
                    buf_append(&one, buf_head(&ss->by), buf_used(&ss->by));
                    f1 = false;
                }
                if (ss->has_value) {
                    buf_puts(&one, f1 ? "" : ",");
                    buf_puts(&one, "{\"key\":\"__value\",\"value\":{\"doubleValue\":");
                    buf_put_float(&one, ss->value, 'g');
                    buf_puts(&one, "}}");
                }
                buf_putc(&one, ']');
            }
            buf_putc(&one, '}');
            if (k)
                buf_putc(b, ',');
            else
                buf_append(&first_set, buf_head(&one), buf_used(&one));
            buf_append(b, buf_head(&one), buf_used(&one));
            buf_free(&one);
        }
        buf_puts(b, "],\"spanSet\":");
        buf_append(b, buf_head(&first_set), buf_used(&first_set));
        buf_free(&first_set);
    }
    buf_putc(b, '}');
}

/* A Tempo search's judgement of a trace: its duration, then the TraceQL query
 * (its spansets into res) or the tags (tags false: see jaeger_span_matches). */
static bool tsearch_judge(const struct tsearch *ts, const struct tr_trace_view *v, bool tags, struct tq_result *res)
{
    int64_t d = v->end - v->start;
    if ((ts->min_dur >= 0 && d < ts->min_dur) || (ts->max_dur >= 0 && d > ts->max_dur))
        return false;
    if (ts->q)
        return tq_eval(ts->q, v, res) > 0;
    return any_span_matches(&ts->tags, v, tags);
}

static int tsearch_fn(void *arg, const uint8_t id[16], const uint8_t *p, size_t n)
{
    struct tsearch *ts = arg;
    if (hmap_get(&ts->seen, id, 16))
        return 0;
    tr_view_reset(&ts->v);
    if (tr_view_add(&ts->v, p, n) || !ts->v.n)
        return 0;
    /* a trace split between places is judged whole */
    struct buf all = BUF_INIT;
    if (ts->q && tr_store_parts(&ts->s->store, ts->tenant, id) > 1) {
        tr_store_get(&ts->s->store, ts->tenant, id, &all);
        tr_view_reset(&ts->v);
        if (tr_view_add(&ts->v, (const uint8_t *)buf_head(&all), buf_used(&all)))
            goto out;
    }
    tr_view_link(&ts->v);
    struct tq_result res = { 0 };
    if (tsearch_judge(ts, &ts->v, true, &res)) {
        hmap_put(&ts->seen, id, 16, (void *)1);
        if (ts->n == ts->cap) {
            size_t nc = ts->cap ? ts->cap * 2 : 32;
            struct raw_hit *nh = realloc(ts->hits, nc * sizeof(*nh));
            if (!nh) {
                tq_result_free(&res);
                goto out;
            }
            ts->hits = nh;
            ts->cap = nc;
        }
        struct raw_hit *h = &ts->hits[ts->n++];
        memcpy(h->id, id, 16);
        h->start = ts->v.start;
        h->json = BUF_INIT;
        tempo_trace_json(ts, &ts->v, ts->q ? &res : NULL, &h->json);
    }
    tq_result_free(&res);
out:
    buf_free(&all);
    return ts->n >= ts->limit * 4 + 64;
}

/* The same judgement on a view from a block's columns, before its spans are read;
 * a trace with parts elsewhere is left to tsearch_fn, which joins them. */
static int tsearch_match(void *arg, const struct tr_trace_view *v)
{
    struct tsearch *ts = arg;
    if (hmap_get(&ts->seen, v->id, 16))
        return 0;
    if (ts->q && tr_store_parts(&ts->s->store, ts->tenant, v->id) > 1)
        return 1;
    struct tq_result res = { 0 };
    bool match = tsearch_judge(ts, v, false, &res);
    tq_result_free(&res);
    return match;
}

static int raw_hit_cmp(const void *a, const void *b)
{
    const struct raw_hit *x = a, *y = b;
    return x->start > y->start ? -1 : x->start < y->start;
}

/* tags=logfmt: k=v pairs, values quoted or not. */
static int logfmt_tags(const char *s, struct jq *q)
{
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        const char *k = s;
        while (*s && *s != '=' && *s != ' ')
            s++;
        size_t kl = (size_t)(s - k);
        if (*s != '=' || !kl)
            return -EINVAL;
        s++;
        struct buf v = BUF_INIT;
        if (*s == '"') {
            s++;
            while (*s && *s != '"') {
                if (*s == '\\' && s[1])
                    s++;
                buf_putc(&v, *s++);
            }
            if (*s != '"') {
                buf_free(&v);
                return -EINVAL;
            }
            s++;
        } else {
            while (*s && *s != ' ')
                buf_putc(&v, *s++);
        }
        if (kl == 4 && !memcmp(k, "name", 4)) { /* Tempo's tag for the span name */
            free(q->own_op);
            q->operation = q->own_op = v.data ? buf_steal(&v) : strdup("");
        } else if (q->ntags < ARRAY_SIZE(q->tagk)) {
            q->tagk[q->ntags] = strndup(k, kl);
            q->tagv[q->ntags++] = v.data ? buf_steal(&v) : strdup("");
        }
        buf_free(&v);
    }
    return 0;
}

static void h_tempo_search(struct traces_svc *s, struct httpd_req *r, const char *tenant)
{
    struct http_form f = { 0 };
    httpd_req_form(r, &f);
    struct tsearch ts = { .s = s, .min_dur = -1, .max_dur = -1, .limit = s->conf->search_default_limit, .spss = 3 };
    ts.tags.min_dur = ts.tags.max_dur = -1;
    ts.tags.start = INT64_MIN;
    ts.tags.end = INT64_MAX;
    const char *v;
    char err[512];
    struct buf b = BUF_INIT;
    uint64_t toks[16];
    size_t nt = 0;
    int64_t now = now_ns();
    int64_t start = now - 3600LL * 1000000000, end = now;
    if ((v = http_form_get(&f, "start")) && *v)
        start = strtoll(v, NULL, 10) * 1000000000;
    if ((v = http_form_get(&f, "end")) && *v)
        end = strtoll(v, NULL, 10) * 1000000000 + 999999999;
    if ((v = http_form_get(&f, "limit")) && *v && atoi(v) > 0)
        ts.limit = (size_t)atoi(v);
    if ((v = http_form_get(&f, "spss")) && *v && atoi(v) > 0)
        ts.spss = (size_t)atoi(v);
    if ((v = http_form_get(&f, "minDuration")) && *v && tr_parse_go_duration(v, strlen(v), &ts.min_dur)) {
        reply_text(r, 400, "invalid minDuration: expected a duration like 100ms");
        goto out;
    }
    if ((v = http_form_get(&f, "maxDuration")) && *v && tr_parse_go_duration(v, strlen(v), &ts.max_dur)) {
        reply_text(r, 400, "invalid maxDuration: expected a duration like 1s");
        goto out;
    }
    const char *q = http_form_get(&f, "q");
    if (q && *q) {
        if (tq_parse(q, strlen(q), &ts.q, err, sizeof(err))) {
            reply_text(r, 400, err);
            goto out;
        }
        char *tk[16];
        size_t n = tq_tokens(ts.q, tk, ARRAY_SIZE(tk));
        for (size_t i = 0; i < n; i++) {
            /* "kind\tkey\tvalue" */
            char *a = strchr(tk[i], '\t'), *bb = a ? strchr(a + 1, '\t') : NULL;
            if (a && bb) {
                *a = 0;
                *bb = 0;
                toks[nt++] = tr_token(tk[i], strv_cstr(a + 1), strv_cstr(bb + 1));
            }
            free(tk[i]);
        }
    } else if ((v = http_form_get(&f, "tags")) && *v) {
        if (logfmt_tags(v, &ts.tags)) {
            reply_text(r, 400, "invalid tags: expected logfmt like service.name=frontend http.status_code=200");
            goto out;
        }
        if (ts.tags.operation)
            toks[nt++] = tr_token("n", strv_cstr(ts.tags.operation), strv_make("", 0));
        for (size_t i = 0; i < ts.tags.ntags && nt < ARRAY_SIZE(toks); i++)
            if (strlen(ts.tags.tagv[i]) <= 256)
                toks[nt++] = tr_token("a", strv_cstr(ts.tags.tagk[i]), strv_cstr(ts.tags.tagv[i]));
    }
    struct tr_search srch = {
        .tenant = tenant, .from = start, .to = end, .tokens = toks, .ntokens = nt, .fn = tsearch_fn,
        .match = tsearch_match, .arg = &ts,
        .deadline_ms = cairn_now_ms() + s->conf->query_timeout_ms,
    };
    ts.tenant = tenant;
    tr_store_search(&s->store, &srch);
    metric_inc(s->m_queries);
    if (ts.n)
        qsort(ts.hits, ts.n, sizeof(*ts.hits), raw_hit_cmp);
    buf_puts(&b, "{\"traces\":[");
    for (size_t i = 0; i < ts.n && i < ts.limit; i++) {
        if (i)
            buf_putc(&b, ',');
        buf_append(&b, buf_head(&ts.hits[i].json), buf_used(&ts.hits[i].json));
    }
    buf_printf(&b, "],\"metrics\":{\"inspectedTraces\":%llu,\"inspectedBytes\":\"%llu\",\"completedJobs\":1,\"totalJobs\":1}}",
               (unsigned long long)srch.inspected_traces, (unsigned long long)srch.inspected_bytes);
    if (srch.timed_out) {
        reply_text(r, 504, "search timed out (query_timeout): narrow the time range or the query");
        goto out;
    }
    reply_json(r, &b);
out:
    for (size_t i = 0; i < ts.n; i++)
        buf_free(&ts.hits[i].json);
    free(ts.hits);
    hmap_free(&ts.seen);
    tr_view_free(&ts.v);
    jq_free(&ts.tags);
    tq_free(ts.q);
    buf_free(&b);
    http_form_free(&f);
}

/* Tag names and values: from the spans of the last hour (or start..end). */
struct tagscan {
    struct hmap names[3];                       /* span, resource, intrinsic unused */
    const char *want;                           /* a tag's values: its name (scope.name), or NULL */
    int want_scope;                             /* 0 any, 1 span, 2 resource */
    struct hmap values;                         /* value -> type */
    struct tr_trace_view v;
    struct buf tmp;
    uint64_t bytes;
};

static int tagscan_attr(const struct tr_kv *kv, int where, void *arg)
{
    struct tagscan *t = arg;
    if (where != 1 && where != 2)
        return 0;
    if (!t->want) {
        hmap_put(&t->names[where - 1], kv->key.p, kv->key.n, (void *)1);
        return 0;
    }
    if (!strv_eq_cstr(kv->key, t->want) || (t->want_scope && t->want_scope != where))
        return 0;
    buf_reset(&t->tmp);
    tr_kv_string(kv, &t->tmp);
    if (buf_used(&t->tmp) <= 1024)
        hmap_put(&t->values, buf_head(&t->tmp), buf_used(&t->tmp), (void *)(uintptr_t)kv->type);
    return 0;
}

static int tagscan_fn(void *arg, const uint8_t id[16], const uint8_t *p, size_t n)
{
    struct tagscan *t = arg;
    (void)id;
    tr_view_reset(&t->v);
    if (tr_view_add(&t->v, p, n))
        return 0;
    for (size_t i = 0; i < t->v.n; i++) {
        const struct tr_span *sp = &t->v.s[i];
        if (t->want && !strcmp(t->want, "name")) {
            hmap_put(&t->values, sp->name.p, sp->name.n, (void *)TR_V_STR);
            continue;
        }
        if (t->want && !strcmp(t->want, "status")) {
            static const char *const st[] = { "unset", "ok", "error" };
            hmap_put(&t->values, st[sp->status < 3 ? sp->status : 0], strlen(st[sp->status < 3 ? sp->status : 0]),
                     (void *)100);
            continue;
        }
        if (t->want && !strcmp(t->want, "kind")) {
            static const char *const kd[] = { "unspecified", "internal", "server", "client", "producer", "consumer" };
            const char *k = kd[sp->kind < 6 ? sp->kind : 0];
            hmap_put(&t->values, k, strlen(k), (void *)101);
            continue;
        }
        tr_span_attrs_all(sp, tagscan_attr, t);
    }
    t->bytes += n;
    return t->bytes > (64u << 20);               /* a bounded scan, as Tempo's */
}

static void sorted_keys(const struct hmap *m, const char ***out, size_t *n)
{
    *n = 0;
    *out = m->n ? malloc(m->n * sizeof(**out)) : NULL;
    const struct hmap_slot *slot;
    for (size_t it = 0; *out && hmap_next(m, &it, &slot);)
        (*out)[(*n)++] = slot->key;
    if (*n)
        qsort(*out, *n, sizeof(**out), cmp_str);
}

static void h_tempo_tags(struct traces_svc *s, struct httpd_req *r, const char *tenant, int version,
                         const char *tag)
{
    struct http_form f = { 0 };
    httpd_req_form(r, &f);
    int64_t now = now_ns(), start = now - 3600LL * 1000000000, end = now;
    const char *v;
    if ((v = http_form_get(&f, "start")) && *v)
        start = strtoll(v, NULL, 10) * 1000000000;
    if ((v = http_form_get(&f, "end")) && *v)
        end = strtoll(v, NULL, 10) * 1000000000 + 999999999;
    const char *scope = http_form_get(&f, "scope");
    struct tagscan t = { 0 };
    char *want = NULL;
    if (tag) {
        want = strdup(tag);
        t.want = want;
        if (want && !strncmp(want, "span.", 5)) {
            t.want = want + 5;
            t.want_scope = 1;
        } else if (want && !strncmp(want, "resource.", 9)) {
            t.want = want + 9;
            t.want_scope = 2;
        } else if (want && want[0] == '.') {
            t.want = want + 1;
        }
    }
    struct tr_search srch = { .tenant = tenant, .from = start, .to = end, .fn = tagscan_fn, .arg = &t,
                              .deadline_ms = cairn_now_ms() + s->conf->query_timeout_ms };
    tr_store_search(&s->store, &srch);
    struct buf b = BUF_INIT;
    const char **keys;
    size_t n;
    if (tag) {
        sorted_keys(&t.values, &keys, &n);
        buf_puts(&b, "{\"tagValues\":[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                buf_putc(&b, ',');
            if (version == 2) {
                uintptr_t ty = (uintptr_t)hmap_get(&t.values, keys[i], strlen(keys[i]));
                const char *tn = ty == TR_V_INT ? "int" : ty == TR_V_DOUBLE ? "float" : ty == TR_V_BOOL ? "bool"
                                 : ty == 100 ? "keyword" : ty == 101 ? "keyword" : "string";
                buf_printf(&b, "{\"type\":\"%s\",\"value\":", tn);
                buf_json_str(&b, keys[i]);
                buf_putc(&b, '}');
            } else {
                buf_json_str(&b, keys[i]);
            }
        }
        buf_puts(&b, "],\"metrics\":{}}");
        free(keys);
    } else if (version == 2) {
        static const char *const intrinsics[] = { "duration", "event:name", "kind", "name", "rootName", "rootServiceName",
                                                  "span:duration", "span:kind", "span:name", "span:status",
                                                  "span:statusMessage", "status", "statusMessage", "trace:duration",
                                                  "trace:rootName", "trace:rootService", "traceDuration" };
        buf_puts(&b, "{\"scopes\":[");
        bool first = true;
        for (int k = 1; k >= 0; k--) {
            const char *name = k ? "resource" : "span";
            if (scope && *scope && strcmp(scope, name) && strcmp(scope, "all"))
                continue;
            sorted_keys(&t.names[k], &keys, &n);
            buf_printf(&b, "%s{\"name\":\"%s\",\"tags\":", first ? "" : ",", name);
            first = false;
            list_json(&b, keys, n, false);
            buf_putc(&b, '}');
            free(keys);
        }
        if (!scope || !*scope || !strcmp(scope, "intrinsic") || !strcmp(scope, "all")) {
            buf_printf(&b, "%s{\"name\":\"intrinsic\",\"tags\":", first ? "" : ",");
            list_json(&b, (const char **)intrinsics, ARRAY_SIZE(intrinsics), false);
            buf_putc(&b, '}');
        }
        buf_puts(&b, "],\"metrics\":{}}");
    } else {
        struct hmap all = { 0 };
        for (int k = 0; k < 2; k++) {
            const struct hmap_slot *slot;
            for (size_t it = 0; hmap_next(&t.names[k], &it, &slot);)
                hmap_put(&all, slot->key, slot->klen, (void *)1);
        }
        sorted_keys(&all, &keys, &n);
        buf_puts(&b, "{\"tagNames\":");
        list_json(&b, keys, n, false);
        buf_puts(&b, ",\"metrics\":{}}");
        free(keys);
        hmap_free(&all);
    }
    reply_json(r, &b);
    buf_free(&b);
    for (int k = 0; k < 3; k++)
        hmap_free(&t.names[k]);
    hmap_free(&t.values);
    tr_view_free(&t.v);
    buf_free(&t.tmp);
    free(want);
    http_form_free(&f);
}

static void h_tempo(struct traces_svc *s, struct httpd_req *r)
{
    struct strv path = r->h.path;
    if (strv_eq_cstr(path, "/api/echo")) {
        reply_text(r, 200, "echo");
        return;
    }
    if (strv_eq_cstr(path, "/api/status/buildinfo")) {
        struct buf b = BUF_INIT;
        buf_puts(&b, "{\"version\":\"" TEMPO_VERSION "\",\"revision\":\"cairn\",\"branch\":\"\",\"buildDate\":\"\","
                     "\"buildUser\":\"\",\"goVersion\":\"\"}");
        reply_json(r, &b);
        buf_free(&b);
        return;
    }
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    uint8_t id[16];
    bool v2 = strv_has_prefix(path, "/api/v2/traces/");
    if (path_id(path, v2 ? "/api/v2/traces/" : "/api/traces/", id, NULL)) {
        struct buf raw = BUF_INIT, b = BUF_INIT;
        struct tr_trace_view v = { 0 };
        if (load_trace(s, tenant, id, &raw, &v)) {
            reply_text(r, 404, "trace not found");
        } else if (wants_protobuf(r)) {
            if (v2) {                           /* TraceByIDResponse { Trace trace = 1; } */
                pb_put_msg(&b, 1, &raw);
                reply(r, 200, "application/protobuf", &b);
            } else {
                reply(r, 200, "application/protobuf", &raw);
            }
        } else {
            buf_puts(&b, v2 ? "{\"trace\":{" : "{");
            tr_render_otlp_json(&v, &b, v2 ? "resourceSpans" : "batches");
            buf_puts(&b, v2 ? "}}" : "}");
            reply_json(r, &b);
        }
        tr_view_free(&v);
        buf_free(&raw);
        buf_free(&b);
    } else if (strv_eq_cstr(path, "/api/search")) {
        h_tempo_search(s, r, tenant);
    } else if (strv_eq_cstr(path, "/api/search/tags")) {
        h_tempo_tags(s, r, tenant, 1, NULL);
    } else if (strv_eq_cstr(path, "/api/v2/search/tags")) {
        h_tempo_tags(s, r, tenant, 2, NULL);
    } else if ((strv_has_prefix(path, "/api/search/tag/") || strv_has_prefix(path, "/api/v2/search/tag/")) &&
               path.n > 7 && !memcmp(path.p + path.n - 7, "/values", 7)) {
        bool two = strv_has_prefix(path, "/api/v2/");
        size_t pre = two ? 19 : 16;
        char *tag = http_urldecode(path.p + pre, path.n - pre - 7);
        h_tempo_tags(s, r, tenant, two ? 2 : 1, tag ? tag : "");
        free(tag);
    } else {
        reply_text(r, 404, "404 page not found");
    }
}

void traces__handle(struct httpd_req *r, void *arg)
{
    const struct httpd_conf *hc = httpd_req_conf(r);
    struct traces_svc *s = arg;
    int api = (int)(hc - s->hconf);
    struct strv path = r->h.path;
    bool get = strv_eq_cstr(r->h.method, "GET") || strv_eq_cstr(r->h.method, "HEAD");
    bool post = strv_eq_cstr(r->h.method, "POST");
    if (strv_eq_cstr(path, "/ready") && api == TR_API_TEMPO) {
        if (s->sc && s->sc->ready)
            reply_text(r, 200, "ready");
        else
            reply_text(r, 503, "Ingester not ready");
        return;
    }
    if (service_handle_builtin(s->sc, r))       /* /metrics, /-/ready, /-/snapshot ... */
        return;
    switch (api) {
    case TR_API_OTLP:
        if (strv_eq_cstr(path, "/v1/traces")) {
            if (!post) {
                httpd_header(r, "Allow", "POST");
                reply_text(r, 405, "405 method not allowed, supported: [POST]");
                return;
            }
            h_otlp(s, r);
            return;
        }
        break;
    case TR_API_GRPC:
        if (post) {
            h_grpc(s, r);
            return;
        }
        break;
    case TR_API_ZIPKIN:
        if (strv_eq_cstr(path, "/api/v2/spans") && post) {
            h_zipkin_in(s, r);
            return;
        }
        if (get && strv_has_prefix(path, "/api/v2/")) {
            h_zipkin(s, r);
            return;
        }
        break;
    case TR_API_JAEGER:
        if (get && strv_has_prefix(path, "/api/")) {
            h_jaeger(s, r);
            return;
        }
        break;
    case TR_API_TEMPO:
        if (get && strv_has_prefix(path, "/api/")) {
            h_tempo(s, r);
            return;
        }
        break;
    default:
        break;
    }
    reply_text(r, 404, "404 page not found");
}
