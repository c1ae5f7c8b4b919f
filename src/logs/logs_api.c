/* logs_api.c - Loki's HTTP API: push, query, query_range, labels, label values,
 * series, index/stats, index/volume, format_query, ready, buildinfo, and the
 * skeleton's /metrics. Answers have Loki's JSON shapes (what Grafana's Loki data
 * source reads); errors are plain text with Loki's messages and statuses.
 */
#include "logs_internal.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOGS_VERSION "3.4.2"             /* the Loki API version spoken */

static void reply_text(struct httpd_req *r, int status, const char *msg)
{
    size_t n = strlen(msg);
    struct buf b = { 0 };
    buf_append(&b, msg, n);
    if (!n || msg[n - 1] != '\n')
        buf_putc(&b, '\n');
    httpd_respond(r, status, "text/plain; charset=utf-8", buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static void reply_json(struct httpd_req *r, struct buf *b)
{
    httpd_respond(r, 200, "application/json; charset=UTF-8", buf_head(b), buf_used(b));
}

/* The tenant of a request; NULL (answered 401) when auth is on and none is given. */
static const char *tenant_of(struct logs_svc *s, struct httpd_req *r, char *out, size_t n)
{
    int st = httpd_req_tenant(r, s->conf->default_tenant, s->conf->auth, out, n);
    if (st) {
        reply_text(r, st, st == 401 ? "no org id" : "invalid X-Scope-OrgID");
        return NULL;
    }
    return out;
}

/* ---- push ---- */

static void h_push(struct logs_svc *s, struct httpd_req *r)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    const struct http_header *ct = httpd_req_header(r, "Content-Type");
    const struct http_header *ce = httpd_req_header(r, "Content-Encoding");
    struct strv body = r->body;
    struct buf inflated = { 0 };
    struct logs_push push;
    memset(&push, 0, sizeof(push));
    char err[512] = "";
    int rc = 0, status = 400;
    if (ce && (strv_caseeq_cstr(ce->value, "gzip") || strv_caseeq_cstr(ce->value, "deflate"))) {
        rc = buf_inflate(body.p, body.n, LOGS_MAX_PUSH, &inflated);
        if (rc) {
            snprintf(err, sizeof(err), rc == -EFBIG ? "request body too large" : "cannot decompress the %s body",
                     rc == -EFBIG ? "" : (strv_caseeq_cstr(ce->value, "gzip") ? "gzip" : "deflate"));
            status = rc == -EFBIG ? 413 : 400;
            goto out;
        }
        body = buf_strv(&inflated);
    } else if (ce && ce->value.n && !strv_caseeq_cstr(ce->value, "identity")) {
        snprintf(err, sizeof(err), "unsupported Content-Encoding %.*s", (int)ce->value.n, ce->value.p);
        status = 415;
        rc = -EINVAL;
        goto out;
    }
    bool proto = ct && strv_has_prefix(ct->value, "application/x-protobuf");
    if (proto) {
        size_t ulen;
        if (snappy_uncompressed_length(body.p, body.n, &ulen) != SNAPPY_OK || ulen > LOGS_MAX_PUSH) {
            snprintf(err, sizeof(err), ulen > LOGS_MAX_PUSH ? "request body too large" : "snappy: corrupt input");
            rc = -EINVAL;
            goto out;
        }
        if (!(push.raw = malloc(ulen ? ulen : 1)) ||
            snappy_uncompress(body.p, body.n, push.raw, &ulen) != SNAPPY_OK) {
            snprintf(err, sizeof(err), "snappy: corrupt input");
            rc = -EINVAL;
            goto out;
        }
        rc = logs__decode_proto(push.raw, ulen, &push, err, sizeof(err));
    } else {
        rc = logs__decode_json(body.p ? body.p : "", body.n, &push, err, sizeof(err));
    }
    if (rc) {
        status = rc == -ENOMEM ? 500 : 400;
        goto out;
    }
    struct ls_push_result res;
    memset(&res, 0, sizeof(res));
    uint32_t total = 0;
    for (int i = 0; i < push.n; i++)
        total += (uint32_t)push.s[i].n;
    rc = logs_store_push(&s->store, tenant, push.s, push.n, &res);
    metric_add(s->m_lines, res.accepted);
    metric_add(s->m_refused, res.refused);
    if (rc) {
        snprintf(err, sizeof(err), "cannot write the push: %s (nothing was stored)", cairn_strerror(rc));
        log_error("logs: a push was refused", "error", cairn_strerror(rc));
        status = rc == -ENOSPC ? 507 : 500;
        buf_free(&res.why);
        goto out;
    }
    if (res.refused) {
        if (s->tailers && res.accepted)
            logs__tail_notify(s, tenant, push.s, push.n);
        buf_printf(&res.why, "total ignored: %u out of %u", res.refused, total);
        httpd_respond(r, res.status ? res.status : 400, "text/plain; charset=utf-8", buf_head(&res.why),
                      buf_used(&res.why));
        buf_free(&res.why);
        logs__push_free(&push);
        buf_free(&inflated);
        return;
    }
    buf_free(&res.why);
    if (s->tailers)
        logs__tail_notify(s, tenant, push.s, push.n);
    httpd_respond(r, 204, NULL, NULL, 0);
    logs__push_free(&push);
    buf_free(&inflated);
    return;
out:
    logs__push_free(&push);
    buf_free(&inflated);
    reply_text(r, status, err);
}

/* ---- parameters ---- */

/* Loki's timestamps: float seconds with a dot, integer seconds (up to 10 digits)
 * or nanoseconds, or RFC 3339. */
static int parse_time(const char *s, int64_t *out)
{
    char *e;
    if (strchr(s, '.') && !strchr(s, 'T')) {
        double v = strtod(s, &e);
        if (!*e && fabs(v) < 9e9) {
            double sec = floor(v);
            *out = (int64_t)sec * 1000000000 + (int64_t)llround((v - sec) * 1000) * 1000000;
            return 0;
        }
    }
    errno = 0;
    long long v = strtoll(s, &e, 10);
    if (!*e && e != s && !errno) {
        *out = strlen(s) <= 10 ? v * 1000000000LL : v;     /* 10 digits fit either way */
        return 0;
    }
    return cairn_parse_rfc3339(s, strlen(s), out);
}

/* A step or interval: float seconds or a duration. */
static int parse_step(const char *s, int64_t *ns)
{
    char *e;
    double v = strtod(s, &e);
    if (!*e && e != s) {
        if (!(fabs(v) < 9e9))
            return -EINVAL;
        *ns = (int64_t)llround(v * 1e9);
        return 0;
    }
    double sec;
    char err[100];
    if (lq_parse_go_duration(s, strlen(s), &sec, err, sizeof(err)) == 0 && fabs(sec) < 9e9) {
        *ns = (int64_t)llround(sec * 1e9);
        return 0;
    }
    uint64_t ms;
    if (cfg_parse_duration(s, &ms) == 0 && ms < 9000000000000ULL) {
        *ns = (int64_t)ms * 1000000;
        return 0;
    }
    return -EINVAL;
}

static int64_t now_ns(void)
{
    return (int64_t)(cairn_wall_time() * 1e9);
}

/* start/end with Loki's defaults: end now, start an hour before end. */
static bool time_range(struct httpd_req *r, const struct http_form *f, int64_t *start, int64_t *end)
{
    const char *s = http_form_get(f, "start"), *e = http_form_get(f, "end");
    *end = now_ns();
    if (e && parse_time(e, end)) {
        reply_text(r, 400, "invalid end parameter: cannot parse it as a timestamp");
        return false;
    }
    *start = *end - 3600LL * 1000000000;
    if (s && parse_time(s, start)) {
        reply_text(r, 400, "invalid start parameter: cannot parse it as a timestamp");
        return false;
    }
    if (*end < *start) {
        reply_text(r, 400, "end timestamp must not be before or equal to start time");
        return false;
    }
    return true;
}

/* ---- output ---- */

static void put_ts_seconds(struct buf *b, int64_t ns)
{
    /* seconds with up to 9 decimals, as a JSON number */
    int64_t s = ns / 1000000000, f = ns % 1000000000;
    if (f < 0) {
        s--;
        f += 1000000000;
    }
    if (!f) {
        buf_printf(b, "%lld", (long long)s);
        return;
    }
    char frac[16];
    snprintf(frac, sizeof(frac), "%09lld", (long long)f);
    size_t k = strlen(frac);
    while (k && frac[k - 1] == '0')
        frac[--k] = 0;
    buf_printf(b, "%lld.%s", (long long)s, frac);
}

void logs__labels_json(struct buf *b, const struct lq_label *l, int n)
{
    buf_putc(b, '{');
    for (int i = 0; i < n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_json_str(b, l[i].name);
        buf_putc(b, ':');
        buf_json_str(b, l[i].value);
    }
    buf_putc(b, '}');
}

static void put_value(struct buf *b, double v)
{
    buf_putc(b, '"');
    buf_put_float(b, v, 'j');
    buf_putc(b, '"');
}

static void put_stats(struct buf *b, const struct lq_stats *st, double secs, uint64_t chunks)
{
    double bps = secs > 0 ? (double)st->bytes / secs : 0, lps = secs > 0 ? (double)st->entries / secs : 0;
    buf_printf(b,
               "\"stats\":{\"summary\":{\"bytesProcessedPerSecond\":%.0f,\"linesProcessedPerSecond\":%.0f,"
               "\"totalBytesProcessed\":%llu,\"totalLinesProcessed\":%llu,\"execTime\":%.6f,\"queueTime\":0,"
               "\"subqueries\":0,\"totalEntriesReturned\":%llu,\"splits\":0,\"shards\":0,"
               "\"totalPostFilterLines\":%llu,\"totalStructuredMetadataBytesProcessed\":0},"
               "\"querier\":{\"store\":{\"totalChunksRef\":%llu,\"totalChunksDownloaded\":%llu,"
               "\"chunksDownloadTime\":0,\"chunk\":{\"totalDuplicates\":0,\"decompressedBytes\":%llu,"
               "\"decompressedLines\":%llu}}},"
               "\"ingester\":{\"totalReached\":1,\"totalChunksMatched\":%llu,\"totalBatches\":1,\"totalLinesSent\":%llu},"
               "\"cache\":{}}",
               bps, lps, (unsigned long long)st->bytes, (unsigned long long)st->entries, secs,
               (unsigned long long)st->lines_out, (unsigned long long)st->lines_out, (unsigned long long)chunks,
               (unsigned long long)chunks, (unsigned long long)st->bytes, (unsigned long long)st->entries,
               (unsigned long long)chunks, (unsigned long long)st->lines_out);
}

static int label_sort_cmp(const void *a, const void *b)
{
    const struct lq_stream_out *x = a, *y = b;
    for (int i = 0; i < x->nl && i < y->nl; i++) {
        int c = strcmp(x->l[i].name, y->l[i].name);
        if (c)
            return c;
        if ((c = strcmp(x->l[i].value, y->l[i].value)))
            return c;
    }
    return x->nl - y->nl;
}

static void put_result(struct buf *b, struct lq_result *res, const struct lq_params *p)
{
    switch (res->type) {
    case LQ_RES_SCALAR:
        buf_puts(b, "\"resultType\":\"scalar\",\"result\":[");
        put_ts_seconds(b, p->start);
        buf_putc(b, ',');
        put_value(b, res->scalar[0]);
        buf_putc(b, ']');
        return;
    case LQ_RES_VECTOR:
        buf_puts(b, "\"resultType\":\"vector\",\"result\":[");
        for (int i = 0, k = 0; i < res->ns; i++) {
            if (!res->s[i].has[0])
                continue;
            buf_puts(b, k++ ? ",{\"metric\":" : "{\"metric\":");
            logs__labels_json(b, res->s[i].l, res->s[i].nl);
            buf_puts(b, ",\"value\":[");
            put_ts_seconds(b, p->start);
            buf_putc(b, ',');
            put_value(b, res->s[i].v[0]);
            buf_puts(b, "]}");
        }
        buf_putc(b, ']');
        return;
    case LQ_RES_MATRIX:
        buf_puts(b, "\"resultType\":\"matrix\",\"result\":[");
        for (int i = 0, k = 0; i < res->ns; i++) {
            buf_puts(b, k++ ? ",{\"metric\":" : "{\"metric\":");
            logs__labels_json(b, res->s[i].l, res->s[i].nl);
            buf_puts(b, ",\"values\":[");
            for (int st = 0, m = 0; st < res->nsteps; st++) {
                if (!res->s[i].has[st])
                    continue;
                buf_puts(b, m++ ? ",[" : "[");
                put_ts_seconds(b, res->start + (int64_t)st * res->step);
                buf_putc(b, ',');
                put_value(b, res->s[i].v[st]);
                buf_putc(b, ']');
            }
            buf_puts(b, "]}");
        }
        buf_putc(b, ']');
        return;
    case LQ_RES_STREAMS:
        if (res->nst > 1)
            qsort(res->st, (size_t)res->nst, sizeof(*res->st), label_sort_cmp);
        buf_puts(b, "\"resultType\":\"streams\",\"result\":[");
        for (int i = 0; i < res->nst; i++) {
            const struct lq_stream_out *so = &res->st[i];
            buf_puts(b, i ? ",{\"stream\":" : "{\"stream\":");
            logs__labels_json(b, so->l, so->nl);
            buf_puts(b, ",\"values\":[");
            for (int j = 0; j < so->n; j++) {
                int k = j;      /* entries are in the asked direction already */
                buf_printf(b, "%s[\"%lld\",", j ? "," : "", (long long)so->ts[k]);
                buf_putc(b, '"');
                buf_json_escape(b, so->lines[k], so->lens[k]);
                buf_putc(b, '"');
                buf_putc(b, ']');
            }
            buf_puts(b, "]}");
        }
        buf_putc(b, ']');
        return;
    }
}

/* ---- queries ---- */

static void run_query(struct logs_svc *s, struct httpd_req *r, const struct http_form *f, bool instant)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    const struct logs_limits *lim = &s->conf->limits;
    const char *qs = http_form_get(f, "query");
    if (!qs || !*qs) {
        reply_text(r, 400, "query must not be empty");
        return;
    }
    struct lq_params p;
    memset(&p, 0, sizeof(p));
    p.limit = 100;
    p.backward = true;
    p.instant = instant;
    p.max_series = lim->max_series;
    const char *v;
    if ((v = http_form_get(f, "limit"))) {
        char *e;
        long l = strtol(v, &e, 10);
        if (*e || l <= 0) {
            reply_text(r, 400, "limit must be a positive value");
            return;
        }
        if (lim->max_entries_per_query && (uint64_t)l > lim->max_entries_per_query) {
            char m[200];
            snprintf(m, sizeof(m), "max entries limit per query exceeded, limit > max_entries_limit_per_query (%ld > %u)", l,
                     lim->max_entries_per_query);
            reply_text(r, 400, m);
            return;
        }
        p.limit = (int)l;
    }
    if ((v = http_form_get(f, "direction"))) {
        if (!strcasecmp(v, "forward"))
            p.backward = false;
        else if (strcasecmp(v, "backward")) {
            reply_text(r, 400, "invalid direction: use forward or backward");
            return;
        }
    }
    if (instant) {
        p.start = p.end = now_ns();
        if ((v = http_form_get(f, "time")) && parse_time(v, &p.start)) {
            reply_text(r, 400, "invalid time parameter: cannot parse it as a timestamp");
            return;
        }
        p.end = p.start;
    } else {
        if (!time_range(r, f, &p.start, &p.end))
            return;
        int64_t span = p.end - p.start;
        p.step = (int64_t)ceil((double)span / 1e9 / 250.0) * 1000000000LL;
        if (p.step < 1000000000LL)
            p.step = 1000000000LL;
        if ((v = http_form_get(f, "step")) && parse_step(v, &p.step)) {
            reply_text(r, 400, "invalid step parameter: cannot parse it as a float or a duration");
            return;
        }
        if (p.step <= 0) {
            reply_text(r, 400, "zero or negative query resolution step widths are not accepted. Try a positive integer");
            return;
        }
        if (span / p.step > 11000) {
            reply_text(r, 400, "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)");
            return;
        }
        if (lim->max_query_length_ms && span > (int64_t)lim->max_query_length_ms * 1000000) {
            char m[200];
            snprintf(m, sizeof(m), "the query time range exceeds the limit (query length: %.0fs, limit: %llus)",
                     (double)span / 1e9, (unsigned long long)(lim->max_query_length_ms / 1000));
            reply_text(r, 400, m);
            return;
        }
    }
    struct lq_query *q = NULL;
    char err[2048];
    if (lq_parse(qs, strlen(qs), &q, err, sizeof(err))) {
        metric_inc(s->m_query_errors);
        reply_text(r, 400, err);
        return;
    }
    if (!lq_is_metric(q) && !instant && p.start == p.end)
        p.end = p.start + 1;
    if ((v = http_form_get(f, "interval")) && !lq_is_metric(q) && (parse_step(v, &p.interval_ns) || p.interval_ns < 0)) {
        lq_query_free(&q);
        reply_text(r, 400, "invalid interval parameter: cannot parse it as a float or a duration");
        return;
    }
    if (lim->query_timeout_ms)
        p.deadline_ns = cairn_now_ns() + lim->query_timeout_ms * 1000000;
    if (!lq_is_metric(q) && instant) {
        p.end = p.start;
        p.start = p.end - 3600LL * 1000000000;
    }
    struct ls_query_ctx ctx = { &s->store, tenant, 0, 0 };
    struct lq_source src = { &ctx, logs_store_select };
    struct lq_result res;
    uint64_t t0 = cairn_now_ns();
    int rc = lq_eval(q, &p, &src, &res, err, sizeof(err));
    double secs = (double)(cairn_now_ns() - t0) / 1e9;
    metric_inc(s->m_queries);
    if (rc) {
        metric_inc(s->m_query_errors);
        lq_query_free(&q);
        reply_text(r, rc == -ENOMEM ? 500 : rc == -ETIMEDOUT ? 504 : 400, err);
        return;
    }
    struct buf b = { 0 };
    buf_puts(&b, "{\"status\":\"success\",\"data\":{");
    p.start = instant && !lq_is_metric(q) ? p.end : p.start;
    put_result(&b, &res, &p);
    buf_putc(&b, ',');
    put_stats(&b, &res.stats, secs, ctx.chunks_read);
    buf_puts(&b, "}}");
    reply_json(r, &b);
    buf_free(&b);
    lq_result_free(&res);
    lq_query_free(&q);
}

/* ---- labels, values, series ---- */

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The matchers of a selector given as a `query` or `match[]` parameter. */
static int parse_selector(struct httpd_req *r, const char *qs, struct lq_query **q)
{
    char err[1024];
    if (lq_parse(qs, strlen(qs), q, err, sizeof(err))) {
        reply_text(r, 400, err);
        return -EINVAL;
    }
    if ((*q)->root->kind != LQ_N_LOG) {
        lq_query_free(q);
        reply_text(r, 400, "only a stream selector is accepted here");
        return -EINVAL;
    }
    return 0;
}

static void h_labels(struct logs_svc *s, struct httpd_req *r, const struct http_form *f, const char *name)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    int64_t start, end;
    if (!time_range(r, f, &start, &end))
        return;
    struct lq_query *q = NULL;
    const char *qs = http_form_get(f, "query");
    if (qs && *qs && parse_selector(r, qs, &q))
        return;
    struct ls_stream **sv;
    uint32_t ns;
    const struct lq_node *sel = q ? q->root : NULL;
    if (logs_store_streams(&s->store, tenant, sel ? sel->matchers : NULL, sel ? sel->nmatchers : 0, start, end, &sv,
                           &ns)) {
        lq_query_free(&q);
        reply_text(r, 500, "out of memory");
        return;
    }
    struct hmap seen = { 0 };
    for (uint32_t i = 0; i < ns; i++)
        for (int k = 0; k < sv[i]->labels.n; k++) {
            const char *x = name ? (strcmp(sv[i]->labels.v[k].name, name) ? NULL : sv[i]->labels.v[k].value)
                                 : sv[i]->labels.v[k].name;
            if (x)
                hmap_put(&seen, x, strlen(x), (void *)x);
        }
    const char **v = malloc((seen.n ? seen.n : 1) * sizeof(*v));
    size_t n = 0;
    const struct hmap_slot *slot;
    for (size_t it = 0; v && hmap_next(&seen, &it, &slot);)
        v[n++] = slot->value;
    if (v)
        qsort(v, n, sizeof(*v), str_cmp);
    struct buf b = { 0 };
    buf_puts(&b, "{\"status\":\"success\",\"data\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(&b, ',');
        buf_json_str(&b, v[i]);
    }
    buf_puts(&b, "]}");
    reply_json(r, &b);
    buf_free(&b);
    free(v);
    hmap_free(&seen);
    free(sv);
    lq_query_free(&q);
}

static void h_series(struct logs_svc *s, struct httpd_req *r, const struct http_form *f)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    int64_t start, end;
    if (!time_range(r, f, &start, &end))
        return;
    struct hmap seen = { 0 };
    struct buf b = { 0 };
    buf_puts(&b, "{\"status\":\"success\",\"data\":[");
    int k = 0;
    bool any = false;
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->key[i], "match[]") && strcmp(f->key[i], "match"))
            continue;
        any = true;
        struct lq_query *q;
        if (parse_selector(r, f->val[i], &q)) {
            buf_free(&b);
            hmap_free(&seen);
            return;
        }
        struct ls_stream **sv;
        uint32_t ns;
        if (logs_store_streams(&s->store, tenant, q->root->matchers, q->root->nmatchers, start, end, &sv, &ns) == 0) {
            for (uint32_t j = 0; j < ns; j++) {
                if (hmap_get(&seen, sv[j]->key, strlen(sv[j]->key)))
                    continue;
                hmap_put(&seen, sv[j]->key, strlen(sv[j]->key), sv[j]);
                if (k++)
                    buf_putc(&b, ',');
                logs__labels_json(&b, sv[j]->labels.v, sv[j]->labels.n);
            }
            free(sv);
        }
        lq_query_free(&q);
    }
    if (!any) {
        buf_free(&b);
        hmap_free(&seen);
        reply_text(r, 400, "at least one match[] argument must be provided");
        return;
    }
    buf_puts(&b, "]}");
    reply_json(r, &b);
    buf_free(&b);
    hmap_free(&seen);
}

static void stream_totals(const struct ls_stream *st, int64_t start, int64_t end, uint64_t *chunks, uint64_t *entries,
                          uint64_t *bytes)
{
    for (uint32_t c = 0; c < st->nchunks; c++)
        if (st->chunks[c].maxt >= start && st->chunks[c].mint <= end) {
            (*chunks)++;
            *entries += st->chunks[c].n;
            *bytes += st->chunks[c].raw;
        }
    if (st->head_n && st->head_maxt >= start && st->head_mint <= end) {
        (*chunks)++;
        *entries += st->head_n;
        *bytes += buf_used(&st->head);
    }
}

static void h_index(struct logs_svc *s, struct httpd_req *r, const struct http_form *f, bool volume)
{
    char tb[256];
    const char *tenant = tenant_of(s, r, tb, sizeof(tb));
    if (!tenant)
        return;
    int64_t start, end;
    if (!time_range(r, f, &start, &end))
        return;
    const char *qs = http_form_get(f, "query");
    struct lq_query *q = NULL;
    if (!qs || parse_selector(r, qs, &q)) {
        if (!qs)
            reply_text(r, 400, "query must not be empty");
        return;
    }
    struct ls_stream **sv;
    uint32_t ns;
    if (logs_store_streams(&s->store, tenant, q->root->matchers, q->root->nmatchers, start, end, &sv, &ns)) {
        lq_query_free(&q);
        reply_text(r, 500, "out of memory");
        return;
    }
    struct buf b = { 0 };
    if (!volume) {
        uint64_t chunks = 0, entries = 0, bytes = 0;
        for (uint32_t i = 0; i < ns; i++)
            stream_totals(sv[i], start, end, &chunks, &entries, &bytes);
        buf_printf(&b, "{\"streams\":%u,\"chunks\":%llu,\"entries\":%llu,\"bytes\":%llu}", ns,
                   (unsigned long long)chunks, (unsigned long long)entries, (unsigned long long)bytes);
    } else {
        /* bytes per series of the target labels (default: the selector's names) */
        const char *tl = http_form_get(f, "targetLabels");
        const char *agg = http_form_get(f, "aggregateBy");
        bool by_labels = agg && !strcmp(agg, "labels");
        const char *names[64];
        int nn = 0;
        char *tlc = tl ? strdup(tl) : NULL;
        if (tlc) {
            for (char *sp, *t = strtok_r(tlc, ",", &sp); t && nn < 64; t = strtok_r(NULL, ",", &sp))
                names[nn++] = t;
        } else {
            for (int i = 0; i < q->root->nmatchers && nn < 64; i++)
                names[nn++] = q->root->matchers[i].name;
        }
        struct hmap groups = { 0 };
        for (uint32_t i = 0; i < ns; i++) {
            uint64_t chunks = 0, entries = 0, bytes = 0;
            stream_totals(sv[i], start, end, &chunks, &entries, &bytes);
            struct buf key = { 0 };
            struct lq_label l[64];
            int nl = 0;
            if (by_labels) {
                for (int k = 0; k < nn; k++)
                    l[nl++] = (struct lq_label){ names[k], "" };
            } else {
                for (int k = 0; k < sv[i]->labels.n && nl < 64; k++)
                    for (int m = 0; m < nn; m++)
                        if (!strcmp(sv[i]->labels.v[k].name, names[m]))
                            l[nl++] = sv[i]->labels.v[k];
            }
            for (int k = 0; k < nl; k++)
                buf_printf(&key, "%s\xff%s\xfe", l[k].name, by_labels ? "" : l[k].value);
            buf_putc(&key, 0);
            uint64_t *tot = hmap_get(&groups, buf_head(&key), buf_used(&key));
            if (!tot) {
                tot = calloc(1, sizeof(*tot));
                if (tot)
                    hmap_put(&groups, buf_head(&key), buf_used(&key), tot);
            }
            if (tot)
                *tot += bytes;
            buf_free(&key);
        }
        buf_puts(&b, "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[");
        const struct hmap_slot *slot;
        int k = 0;
        for (size_t it = 0; hmap_next(&groups, &it, &slot);) {
            buf_puts(&b, k++ ? ",{\"metric\":{" : "{\"metric\":{");
            const char *p = slot->key;
            int m = 0;
            while (*p) {
                const char *ff = strchr(p, '\xff'), *fe = strchr(p, '\xfe');
                if (!ff || !fe)
                    break;
                if (m++)
                    buf_putc(&b, ',');
                buf_putc(&b, '"');
                buf_json_escape(&b, p, (size_t)(ff - p));
                buf_putc(&b, '"');
                buf_putc(&b, ':');
                buf_putc(&b, '"');
                buf_json_escape(&b, ff + 1, (size_t)(fe - ff - 1));
                buf_putc(&b, '"');
                p = fe + 1;
            }
            buf_puts(&b, "},\"value\":[");
            put_ts_seconds(&b, end);
            buf_printf(&b, ",\"%llu\"]}", (unsigned long long)*(uint64_t *)slot->value);
            free(slot->value);
        }
        buf_puts(&b, "]}}");
        hmap_free(&groups);
        free(tlc);
    }
    reply_json(r, &b);
    buf_free(&b);
    free(sv);
    lq_query_free(&q);
}

static void h_format(struct httpd_req *r, const struct http_form *f)
{
    const char *qs = http_form_get(f, "query");
    struct lq_query *q;
    char err[1024];
    if (!qs || lq_parse(qs, strlen(qs), &q, err, sizeof(err))) {
        reply_text(r, 400, qs ? err : "query must not be empty");
        return;
    }
    struct buf out = { 0 }, b = { 0 };
    lq_format(&out, q->root);
    buf_puts(&b, "{\"status\":\"success\",\"data\":");
    buf_putc(&b, '"');
    buf_json_escape(&b, out.len ? buf_head(&out) : "", buf_used(&out));
    buf_putc(&b, '"');
    buf_putc(&b, '}');
    reply_json(r, &b);
    buf_free(&b);
    buf_free(&out);
    lq_query_free(&q);
}

void logs__handle(struct httpd_req *r, void *arg)
{
    struct logs_svc *s = arg;
    struct strv path = r->h.path;
    if (service_handle_builtin(s->sc, r))
        return;
    if (strv_eq_cstr(path, "/ready")) {
        if (s->sc->ready)
            reply_text(r, 200, "ready");
        else
            reply_text(r, 503, "Ingester not ready: starting");
        return;
    }
    bool get = strv_eq_cstr(r->h.method, "GET") || r->h.is_head, post = strv_eq_cstr(r->h.method, "POST");
    if (strv_eq_cstr(path, "/loki/api/v1/push") || strv_eq_cstr(path, "/api/prom/push")) {
        if (!post) {
            httpd_header(r, "Allow", "POST");
            reply_text(r, 405, "use POST");
            return;
        }
        h_push(s, r);
        return;
    }
    if (strv_eq_cstr(path, "/loki/api/v1/status/buildinfo")) {
        const char *j = "{\"version\":\"" LOGS_VERSION "\",\"revision\":\"cairn\",\"branch\":\"\",\"buildUser\":\"\","
                        "\"buildDate\":\"\",\"goVersion\":\"\"}";
        httpd_respond(r, 200, "application/json", j, strlen(j));
        return;
    }
    if (strv_eq_cstr(path, "/prometheus/api/v1/rules") || strv_eq_cstr(path, "/prometheus/api/v1/alerts")) {
        logs__rules_api(s, r, strv_eq_cstr(path, "/prometheus/api/v1/alerts"));
        return;
    }
    if (!strv_has_prefix(path, "/loki/api/v1/")) {
        reply_text(r, 404, "404 page not found");
        return;
    }
    if (!get && !post) {
        httpd_header(r, "Allow", "GET, POST");
        reply_text(r, 405, "use GET or POST");
        return;
    }
    struct http_form f;
    httpd_req_form(r, &f);
    struct strv rest = strv_make(path.p + 13, path.n - 13);
    if (strv_eq_cstr(rest, "query"))
        run_query(s, r, &f, true);
    else if (strv_eq_cstr(rest, "query_range"))
        run_query(s, r, &f, false);
    else if (strv_eq_cstr(rest, "labels") || strv_eq_cstr(rest, "label"))
        h_labels(s, r, &f, NULL);
    else if (strv_has_prefix(rest, "label/") && rest.n > 13 && !memcmp(rest.p + rest.n - 7, "/values", 7)) {
        char *name = http_urldecode(rest.p + 6, rest.n - 13);
        if (name)
            h_labels(s, r, &f, name);
        else
            reply_text(r, 500, "out of memory");
        free(name);
    } else if (strv_eq_cstr(rest, "series"))
        h_series(s, r, &f);
    else if (strv_eq_cstr(rest, "index/stats"))
        h_index(s, r, &f, false);
    else if (strv_eq_cstr(rest, "index/volume") || strv_eq_cstr(rest, "index/volume_range"))
        h_index(s, r, &f, true);
    else if (strv_eq_cstr(rest, "format_query"))
        h_format(r, &f);
    else if (strv_eq_cstr(rest, "tail")) {
        char tb[256];
        const char *tenant = tenant_of(s, r, tb, sizeof(tb));
        if (tenant)
            logs__tail(s, r, &f, tenant);
    }
    else
        reply_text(r, 404, "404 page not found");
    http_form_free(&f);
}
