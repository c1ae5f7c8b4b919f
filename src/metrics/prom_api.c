/* prom_api.c - the HTTP API of role "metrics": Prometheus's metadata endpoints,
 * /federate, status pages, and the remote_write receiver. */
#include "prom_internal.h"
#include "core/pb.h"
#include "core/log.h"
#include "prom_text.h"

#include <errno.h>
#include <math.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAIRN_PROM_VERSION "2.42.0"     /* the Prometheus API version spoken */
#define RW_MAX_BODY (32u << 20)
#define RW_MAX_DECODED (256u << 20)

/* ---- JSON ---- */

void prom__reply_json(struct httpd_req *r, int status, struct buf *b)
{
    /* the answer's bytes go out from b itself (no copy into the connection's
     * buffer, which a matrix of megabytes would double); b is left empty */
    size_t len = buf_used(b);
    char *body = buf_steal(b);
    if (!body) {
        httpd_respond(r, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    httpd_respond_ext(r, status, "application/json", body, len, free, body);
}

void prom__api_error(struct httpd_req *r, int status, const char *type, const char *msg)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"error\",\"errorType\":");
    buf_json_str(&b, type);
    buf_puts(&b, ",\"error\":");
    buf_json_str(&b, msg);
    buf_puts(&b, "}");
    prom__reply_json(r, status, &b);
    buf_free(&b);
}

void prom__pair_json(struct buf *b, size_t i, const char *name, const char *value)
{
    if (i)
        buf_putc(b, ',');
    buf_json_str(b, name);
    buf_putc(b, ':');
    buf_json_str(b, value);
}

void prom__labels_json(struct buf *b, const struct tsdb_label *l, size_t n)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < n; i++)
        prom__pair_json(b, i, l[i].name, l[i].value);
    buf_putc(b, '}');
}

static void lset_json(struct buf *b, const struct relabel_set *s)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < s->n; i++)
        prom__pair_json(b, i, s->l[i].name, s->l[i].value);
    buf_putc(b, '}');
}

/* ---- times ---- */

/* Unix seconds (float) or RFC 3339. */
int prom__parse_time(const char *s, int64_t *ms)
{
    double f;
    if (prom_parse_float(s, strlen(s), &f) == 0) {
        if (!isfinite(f))
            return -EINVAL;
        *ms = (int64_t)llround(f * 1000.0);
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -EINVAL;
    double frac = 0;
    if (*p == '.') {
        char *e;
        frac = strtod(p, &e);
        p = e;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
            return -EINVAL;
        off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    time_t t = timegm(&tm) - off;
    *ms = (int64_t)t * 1000 + (int64_t)llround(frac * 1000);
    return 0;
}

/* ---- series selectors (the match[] parameter) ---- */

/* A match[] value: PromQL's vector selector, nothing else. */
static struct promql_node *parse_selector(const char *s, char *err, size_t errlen)
{
    struct promql_node *n = promql_parse(s, err, errlen);
    if (n && n->kind != PQ_VSEL) {
        snprintf(err, errlen, "1:1: parse error: expected a vector selector, got %s",
                 promql_type_name(n->type));
        promql_free(n);
        return NULL;
    }
    return n;
}

/* The series of every match[] (deduplicated, sorted by labels), freed with
 * tsdb_select_free(). */
static int select_all(struct prom_svc *ps, const struct http_form *f, int64_t mint, int64_t maxt,
                      bool need, struct tsdb_series ***out, size_t *nout, char *err, size_t errlen)
{
    struct tsdb_series **all = NULL;
    size_t n = 0, nm = 0;
    *out = NULL;
    *nout = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->key[i], "match[]") != 0)
            continue;
        nm++;
        struct promql_node *sel = parse_selector(f->val[i], err, errlen);
        if (!sel) {
            tsdb_select_free(all, n);
            return -EINVAL;
        }
        struct tsdb_series **got;
        size_t g = tsdb_select(&ps->db, sel->m, sel->nm, mint, maxt, &got);
        promql_free(sel);
        if (g) {
            struct tsdb_series **na = realloc(all, (n + g) * sizeof(*na));
            if (!na) {
                tsdb_select_free(got, g);
                tsdb_select_free(all, n);
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
            }
            all = na;
            memcpy(all + n, got, g * sizeof(*got));
            n += g;
            free(got);
        }
    }
    if (need && nm == 0) {
        snprintf(err, errlen, "no match[] parameter provided");
        return -EINVAL;
    }
    /* sort by labels and drop duplicates (one series matched twice, or read
     * from blocks for two matchers) */
    if (n > 1)
        qsort(all, n, sizeof(*all), tsdb_series_cmp);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && (all[u - 1] == all[i] || tsdb_labels_eq(&all[u - 1]->labels, &all[i]->labels))) {
            if (all[u - 1] != all[i])
                tsdb_series_release(all[i]);
            continue;
        }
        all[u++] = all[i];
    }
    *out = all;
    *nout = u;
    return (int)nm;
}

static bool time_range(struct httpd_req *r, const struct http_form *f, int64_t *mint, int64_t *maxt)
{
    const char *s = http_form_get(f, "start"), *e = http_form_get(f, "end");
    *mint = INT64_MIN / 2;
    *maxt = INT64_MAX / 2;
    if (s && *s && prom__parse_time(s, mint)) {
        prom__api_error(r, 400, "bad_data", "invalid parameter \"start\": cannot parse to a valid timestamp");
        return false;
    }
    if (e && *e && prom__parse_time(e, maxt)) {
        prom__api_error(r, 400, "bad_data", "invalid parameter \"end\": cannot parse to a valid timestamp");
        return false;
    }
    return true;
}

static void h_series(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f)
{
    int64_t mint, maxt;
    char err[256];
    if (!time_range(r, f, &mint, &maxt))
        return;
    struct tsdb_series **s;
    size_t n;
    if (select_all(ps, f, mint, maxt, true, &s, &n, err, sizeof(err)) < 0) {
        prom__api_error(r, 400, "bad_data", err);
        return;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"success\",\"data\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(&b, ',');
        prom__labels_json(&b, s[i]->labels.l, s[i]->labels.n);
    }
    buf_puts(&b, "]}");
    tsdb_select_free(s, n);
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* /api/v1/labels and /api/v1/label/NAME/values, with or without match[]. */
static void h_labels(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f,
                     const char *name)
{
    int64_t mint, maxt;
    char err[256];
    if (!time_range(r, f, &mint, &maxt))
        return;
    struct tsdb_series **s;
    size_t n;
    int nm = select_all(ps, f, mint, maxt, false, &s, &n, err, sizeof(err));
    if (nm < 0) {
        prom__api_error(r, 400, "bad_data", err);
        return;
    }
    const char **vals = NULL;
    size_t nv = 0;
    bool owned = false;
    if (nm == 0 && (mint == INT64_MIN / 2 && maxt == INT64_MAX / 2)) {
        if (name)
            nv = tsdb_label_values(&ps->db, name, &vals);
        else {
            nv = tsdb_label_names(&ps->db, &vals);
            owned = true;
        }
    } else {
        if (nm == 0) {
            tsdb_select_free(s, n);
            struct tsdb_matcher all;
            tsdb_matcher_init(&all, "__name__", TSDB_RE, ".+", err, sizeof(err));
            n = tsdb_select(&ps->db, &all, 1, mint, maxt, &s);
            tsdb_matcher_free(&all);
        }
        size_t cap = 0;
        for (size_t i = 0; i < n; i++)
            cap += name ? 1 : s[i]->labels.n;
        vals = malloc((cap ? cap : 1) * sizeof(*vals));
        for (size_t i = 0; vals && i < n; i++) {
            if (name) {
                const char *v = tsdb_labels_get(&s[i]->labels, name);
                if (v)
                    vals[nv++] = v;
            } else {
                for (uint16_t k = 0; k < s[i]->labels.n; k++)
                    vals[nv++] = s[i]->labels.l[k].name;
            }
        }
        qsort(vals, nv, sizeof(*vals), cmp_str);
        size_t u = 0;
        for (size_t i = 0; i < nv; i++)
            if (!u || strcmp(vals[u - 1], vals[i]))
                vals[u++] = vals[i];
        nv = u;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"success\",\"data\":[");
    for (size_t i = 0; i < nv; i++) {
        if (i)
            buf_putc(&b, ',');
        buf_json_str(&b, vals[i]);
    }
    buf_puts(&b, "]}");
    if (owned)
        tsdb_free_strings(vals, nv);
    else
        free(vals);
    tsdb_select_free(s, n);
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

static int cmp_series_labels(const void *a, const void *b)
{
    const struct tsdb_labels *x = &(*(struct tsdb_series *const *)a)->labels;
    const struct tsdb_labels *y = &(*(struct tsdb_series *const *)b)->labels;
    const char *nx = tsdb_labels_get(x, "__name__"), *ny = tsdb_labels_get(y, "__name__");
    int c = strcmp(nx ? nx : "", ny ? ny : "");
    return c ? c : tsdb_labels_cmp(x, y);
}

static void h_federate(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f)
{
    char err[256];
    struct tsdb_series **s;
    size_t n;
    int64_t now = prom__now_ms();
    /* the latest sample within the 5-minute lookback, as Prometheus does */
    if (select_all(ps, f, now - 300000, now, false, &s, &n, err, sizeof(err)) < 0) {
        httpd_respond(r, 400, "text/plain; charset=utf-8", err, strlen(err));
        return;
    }
    if (n)
        qsort(s, n, sizeof(*s), cmp_series_labels);
    struct buf b = BUF_INIT;
    const char *last_name = "";
    for (size_t i = 0; i < n; i++) {
        const struct tsdb_series *se = s[i];
        if (!se->has_last || tsdb_is_stale(se->last_v) || se->last_t < now - 300000)
            continue;
        const char *name = tsdb_labels_get(&se->labels, "__name__");
        if (!name)
            continue;
        if (strcmp(name, last_name) != 0) {
            buf_printf(&b, "# TYPE %s untyped\n", name);
            last_name = name;
        }
        buf_puts(&b, name);
        buf_putc(&b, '{');
        bool first = true;
        for (uint16_t k = 0; k < se->labels.n; k++) {
            if (strcmp(se->labels.l[k].name, "__name__") == 0)
                continue;
            buf_printf(&b, "%s%s=\"", first ? "" : ",", se->labels.l[k].name);
            for (const char *c = se->labels.l[k].value; *c; c++) {
                if (*c == '\\' || *c == '"')
                    buf_putc(&b, '\\');
                if (*c == '\n')
                    buf_puts(&b, "\\n");
                else
                    buf_putc(&b, *c);
            }
            buf_putc(&b, '"');
            first = false;
        }
        for (size_t k = 0; k < ps->conf->nexternal; k++)
            if (!tsdb_labels_get(&se->labels, ps->conf->external_labels[k].name))
                buf_printf(&b, "%s%s=\"%s\"", (first || k) ? (first && !k ? "" : ",") : ",",
                           ps->conf->external_labels[k].name, ps->conf->external_labels[k].value);
        char v[40];
        prom_format_float(v, sizeof(v), se->last_v);
        buf_printf(&b, "} %s %lld\n", v, (long long)se->last_t);
    }
    tsdb_select_free(s, n);
    httpd_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static void h_targets(struct prom_svc *ps, struct httpd_req *r)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"success\",\"data\":{\"activeTargets\":[");
    for (size_t i = 0; i < ps->ntargets; i++) {
        const struct prom_target *t = &ps->targets[i];
        if (i)
            buf_putc(&b, ',');
        buf_puts(&b, "{\"discoveredLabels\":");
        lset_json(&b, &t->discovered);
        buf_puts(&b, ",\"labels\":");
        prom__labels_json(&b, t->labels, t->nlabels);
        buf_puts(&b, ",\"scrapePool\":");
        buf_json_str(&b, t->job->name);
        buf_puts(&b, ",\"scrapeUrl\":");
        buf_json_str(&b, t->url);
        buf_puts(&b, ",\"globalUrl\":");
        buf_json_str(&b, t->url);
        buf_puts(&b, ",\"lastError\":");
        buf_json_str(&b, t->last_error);
        char ts[64] = "0001-01-01T00:00:00Z";
        if (t->last_scrape_ms) {
            time_t sec = (time_t)(t->last_scrape_ms / 1000);
            struct tm tm;
            gmtime_r(&sec, &tm);
            size_t o = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(ts + o, sizeof(ts) - o, ".%03dZ", (int)(t->last_scrape_ms % 1000));
        }
        buf_puts(&b, ",\"lastScrape\":");
        buf_json_str(&b, ts);
        buf_printf(&b, ",\"lastScrapeDuration\":%.6f,\"health\":\"%s\","
                       "\"scrapeInterval\":\"%llums\",\"scrapeTimeout\":\"%llums\","
                       "\"lastSamplesScraped\":%llu}",
                   t->last_duration, t->health, (unsigned long long)t->job->interval_ms,
                   (unsigned long long)t->job->timeout_ms, (unsigned long long)t->last_samples);
    }
    buf_puts(&b, "],\"droppedTargets\":[");
    for (size_t i = 0; i < ps->ndropped; i++) {
        buf_puts(&b, i ? ",{\"discoveredLabels\":" : "{\"discoveredLabels\":");
        lset_json(&b, &ps->dropped[i]);
        buf_putc(&b, '}');
    }
    buf_puts(&b, "]}}");
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

static void h_metadata(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f)
{
    const char *metric = http_form_get(f, "metric"), *lim = http_form_get(f, "limit");
    long limit = -1;
    if (lim && *lim) {
        char *e;
        limit = strtol(lim, &e, 10);
        if (*e) {
            prom__api_error(r, 400, "bad_data", "limit must be a number");
            return;
        }
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"success\",\"data\":{");
    long n = 0;
    for (size_t i = 0; i < ps->metasize && (limit < 0 || n < limit); i++) {
        const struct prom_meta_entry *e = &ps->meta[i];
        if (!e->name || (metric && *metric && strcmp(metric, e->name)))
            continue;
        if (n++)
            buf_putc(&b, ',');
        buf_json_str(&b, e->name);
        buf_puts(&b, ":[");
        for (int k = 0; k < e->nv; k++) {
            buf_puts(&b, k ? ",{\"type\":" : "{\"type\":");
            buf_json_str(&b, e->v[k].type);
            buf_puts(&b, ",\"help\":");
            buf_json_str(&b, e->v[k].help);
            buf_puts(&b, ",\"unit\":");
            buf_json_str(&b, e->v[k].unit);
            buf_putc(&b, '}');
        }
        buf_putc(&b, ']');
    }
    buf_puts(&b, "}}");
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

static void h_status(struct prom_svc *ps, struct httpd_req *r, const char *what)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"status\":\"success\",\"data\":");
    if (strcmp(what, "buildinfo") == 0) {
        buf_puts(&b, "{\"version\":\"" CAIRN_PROM_VERSION "\",\"revision\":\"cairn\",\"branch\":"
                     "\"main\",\"buildUser\":\"cairn\",\"buildDate\":\"\",\"goVersion\":\"none (C)\"}");
    } else if (strcmp(what, "config") == 0) {
        buf_puts(&b, "{\"yaml\":");
        buf_json_str(&b, ps->conf->config_text ? ps->conf->config_text : "");
        buf_putc(&b, '}');
    } else if (strcmp(what, "flags") == 0) {
        buf_printf(&b, "{\"storage.tsdb.retention.time\":\"%llus\"}",
                   (unsigned long long)(ps->conf->retention_ms / 1000));
    } else if (strcmp(what, "runtimeinfo") == 0) {
        char ts[64];
        time_t sec = (time_t)(ps->start_ms / 1000);
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        buf_printf(&b, "{\"startTime\":\"%s\",\"CWD\":\"\",\"reloadConfigSuccess\":true,"
                       "\"lastConfigTime\":\"%s\",\"corruptionCount\":0,\"goroutineCount\":1,"
                       "\"GOMAXPROCS\":1,\"GOGC\":\"\",\"GODEBUG\":\"\",\"storageRetention\":\"%llus\"}",
                   ts, ts, (unsigned long long)(ps->conf->retention_ms / 1000));
    } else {
        /* tsdb: head stats and the top 10 by series count */
        const struct tsdb *db = &ps->db;
        size_t chunks = 0;
        for (size_t i = 0; i < db->nseries; i++)
            if (db->series[i])
                chunks += db->series[i]->nchunks + (db->series[i]->head.n ? 1 : 0);
        const char **names;
        size_t nn = tsdb_label_names(db, &names), pairs = 0;
        for (size_t i = 0; i < nn; i++) {
            const char **vals;
            pairs += tsdb_label_values(db, names[i], &vals);
            free(vals);
        }
        buf_printf(&b, "{\"headStats\":{\"numSeries\":%zu,\"numLabelPairs\":%zu,\"chunkCount\":%zu,"
                       "\"minTime\":%lld,\"maxTime\":%lld},",
                   (size_t)db->active, pairs, chunks, (long long)db->mint, (long long)db->maxt);
        static const char *const sections[] = { "seriesCountByMetricName", "labelValueCountByLabelName",
                                                "memoryInBytesByLabelName", "seriesCountByLabelValuePair" };
        for (int sct = 0; sct < 4; sct++) {
            struct item {
                char *name;
                size_t v;
            } top[10];
            size_t ntop = 0;
            for (size_t i = 0; i < nn; i++) {
                const char **vals;
                size_t nv = tsdb_label_values(db, names[i], &vals);
                for (size_t k = 0; k < (sct == 1 || sct == 2 ? 1 : nv); k++) {
                    if (sct == 0 && strcmp(names[i], "__name__"))
                        break;
                    size_t v;
                    char key[512];
                    if (sct == 0) {
                        v = tsdb_postings_count(db, names[i], vals[k]);
                        snprintf(key, sizeof(key), "%s", vals[k]);
                    } else if (sct == 1) {
                        v = nv;
                        snprintf(key, sizeof(key), "%s", names[i]);
                    } else if (sct == 2) {
                        v = 0;
                        for (size_t x = 0; x < nv; x++)
                            v += strlen(vals[x]);
                        snprintf(key, sizeof(key), "%s", names[i]);
                    } else {
                        v = tsdb_postings_count(db, names[i], vals[k]);
                        snprintf(key, sizeof(key), "%s=%s", names[i], vals[k]);
                    }
                    /* keep the 10 largest */
                    size_t at = ntop;
                    while (at > 0 && top[at - 1].v < v)
                        at--;
                    if (at >= 10)
                        continue;
                    if (ntop == 10)
                        free(top[--ntop].name);
                    memmove(top + at + 1, top + at, (ntop - at) * sizeof(top[0]));
                    top[at].name = strdup(key);
                    top[at].v = v;
                    ntop++;
                }
                free(vals);
            }
            buf_printf(&b, "%s\"%s\":[", sct ? "," : "", sections[sct]);
            for (size_t i = 0; i < ntop; i++) {
                buf_printf(&b, "%s{\"name\":", i ? "," : "");
                buf_json_str(&b, top[i].name ? top[i].name : "");
                buf_printf(&b, ",\"value\":%zu}", top[i].v);
                free(top[i].name);
            }
            buf_putc(&b, ']');
        }
        tsdb_free_strings(names, nn);
        buf_putc(&b, '}');
    }
    buf_putc(&b, '}');
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

/* ---- remote_write: snappy-compressed protobuf WriteRequest (v1) ---- */

struct rw_result {
    uint64_t samples, series_refused, out_of_order;
    char err[256];
};

static int rw_timeseries(struct prom_svc *ps, struct pb ts, struct rw_result *res)
{
    struct tsdb_label pairs[TSDB_MAX_LABELS];
    char *strs[TSDB_MAX_LABELS * 2];
    size_t nl = 0, ns = 0;
    struct pb samples[4096];
    size_t nsamp = 0;
    int ret = 0;
    while (ts.p < ts.end) {
        uint32_t f;
        int wt;
        struct pb sub;
        uint64_t v;
        if (pb_field(&ts, &f, &wt, &sub, &v)) {
            snprintf(res->err, sizeof(res->err), "malformed protobuf in a TimeSeries");
            ret = -1;
            goto out;
        }
        if (f == 1 && wt == 2) {
            if (nl == TSDB_MAX_LABELS) {
                snprintf(res->err, sizeof(res->err), "more than %d labels in a series", TSDB_MAX_LABELS);
                ret = -1;
                goto out;
            }
            char *name = NULL, *value = NULL;
            while (sub.p < sub.end) {
                uint32_t lf;
                int lwt;
                struct pb s2;
                uint64_t lv;
                if (pb_field(&sub, &lf, &lwt, &s2, &lv)) {
                    snprintf(res->err, sizeof(res->err), "malformed protobuf in a Label");
                    free(name);
                    free(value);
                    ret = -1;
                    goto out;
                }
                if (lwt == 2 && (lf == 1 || lf == 2)) {
                    char **dst = lf == 1 ? &name : &value;
                    free(*dst);
                    *dst = strndup((const char *)s2.p, (size_t)(s2.end - s2.p));
                }
            }
            if (!name || !value || !name[0]) {
                snprintf(res->err, sizeof(res->err), "a label without a name or value");
                free(name);
                free(value);
                ret = -1;
                goto out;
            }
            strs[ns++] = name;
            strs[ns++] = value;
            pairs[nl++] = (struct tsdb_label){ name, value };
        } else if (f == 2 && wt == 2) {
            if (nsamp == ARRAY_SIZE(samples)) {
                snprintf(res->err, sizeof(res->err), "more than %zu samples in one series",
                         ARRAY_SIZE(samples));
                ret = -1;
                goto out;
            }
            samples[nsamp++] = sub;
        }
        /* exemplars (3) and native histograms (4) are skipped */
    }
    if (!nl || !tsdb_labels_get(&(struct tsdb_labels){ (uint16_t)nl, pairs }, "__name__")) {
        snprintf(res->err, sizeof(res->err), "a series without a __name__ label");
        ret = -1;
        goto out;
    }
    struct tsdb_labels l;
    int r = tsdb_labels_make(&l, pairs, nl);
    if (r) {
        snprintf(res->err, sizeof(res->err), r == -EEXIST ? "duplicate label name in a series"
                                                          : "invalid labels");
        ret = -1;
        goto out;
    }
    bool created;
    struct tsdb_series *s = tsdb_series_get(&ps->db, &l, &created);
    if (!created)
        tsdb_labels_free(&l);
    if (!s) {
        res->series_refused++;
        goto out;
    }
    for (size_t i = 0; i < nsamp; i++) {
        double v = 0;
        int64_t t = 0;
        struct pb sp = samples[i];
        while (sp.p < sp.end) {
            uint32_t sf;
            int swt;
            struct pb s2;
            uint64_t sv;
            if (pb_field(&sp, &sf, &swt, &s2, &sv)) {
                snprintf(res->err, sizeof(res->err), "malformed protobuf in a Sample");
                ret = -1;
                goto out;
            }
            if (sf == 1 && swt == 1)
                memcpy(&v, &sv, 8);
            else if (sf == 2 && swt == 0)
                t = (int64_t)sv;
        }
        int ar = tsdb_append(&ps->db, s, t, v);
        if (ar == TSDB_OUT_OF_ORDER || ar == TSDB_DUPLICATE)
            res->out_of_order++;
        else if (ar == TSDB_OK)
            res->samples++;
    }
out:
    for (size_t i = 0; i < ns; i++)
        free(strs[i]);
    return ret;
}

/* Decodes and appends a WriteRequest; exposed for the fuzzer. */
int prom_remote_write(struct prom_svc *ps, const void *body, size_t len, struct rw_result *res);
int prom_remote_write(struct prom_svc *ps, const void *body, size_t len, struct rw_result *res)
{
    size_t ulen;
    memset(res, 0, sizeof(*res));
    if (snappy_uncompressed_length(body, len, &ulen) != SNAPPY_OK) {
        snprintf(res->err, sizeof(res->err), "snappy: corrupt input");
        return -1;
    }
    if (ulen > RW_MAX_DECODED) {
        snprintf(res->err, sizeof(res->err), "decoded body larger than %u MiB", RW_MAX_DECODED >> 20);
        return -1;
    }
    char *raw = malloc(ulen ? ulen : 1);
    if (!raw) {
        snprintf(res->err, sizeof(res->err), "out of memory");
        return -1;
    }
    if (snappy_uncompress(body, len, raw, &ulen) != SNAPPY_OK) {
        free(raw);
        snprintf(res->err, sizeof(res->err), "snappy: corrupt input");
        return -1;
    }
    struct pb b = { (const uint8_t *)raw, (const uint8_t *)raw + ulen };
    int ret = 0;
    while (b.p < b.end) {
        uint32_t f;
        int wt;
        struct pb sub;
        uint64_t v;
        if (pb_field(&b, &f, &wt, &sub, &v)) {
            snprintf(res->err, sizeof(res->err), "malformed protobuf in the WriteRequest");
            ret = -1;
            break;
        }
        if (f == 1 && wt == 2 && rw_timeseries(ps, sub, res)) {
            ret = -1;
            break;
        }
    }
    free(raw);
    return ret;
}

static void h_write(struct prom_svc *ps, struct httpd_req *r)
{
    if (!strv_eq_cstr(r->h.method, "POST")) {
        httpd_header(r, "Allow", "POST");
        httpd_respond(r, 405, "text/plain; charset=utf-8", "use POST\n", 9);
        return;
    }
    metric_inc(ps->m_rw_requests);
    struct rw_result res;
    if (prom_remote_write(ps, r->body.p, r->body.n, &res)) {
        metric_inc(ps->m_rw_errors);
        /* what was appended before the error stays; make it durable too */
        tsdb_commit(&ps->db, true);
        char msg[300];
        int n = snprintf(msg, sizeof(msg), "%s\n", res.err);
        httpd_respond(r, 400, "text/plain; charset=utf-8", msg, (size_t)n);
        return;
    }
    metric_add(ps->m_rw_samples, (double)res.samples);
    /* acknowledged only once on disk */
    if (tsdb_commit(&ps->db, true)) {
        metric_inc(ps->m_rw_errors);
        httpd_respond(r, 500, "text/plain; charset=utf-8", "cannot write the WAL\n", 21);
        return;
    }
    if (res.out_of_order) {
        char msg[128];
        int n = snprintf(msg, sizeof(msg), "out of order sample (%llu samples refused)\n",
                         (unsigned long long)res.out_of_order);
        httpd_respond(r, 400, "text/plain; charset=utf-8", msg, (size_t)n);
        return;
    }
    httpd_respond(r, 204, NULL, NULL, 0);
}

/* ---- remote_read: snappy-compressed protobuf ReadRequest, samples response ---- */

#define RR_MAX_SAMPLES 50000000ull

static void h_read(struct prom_svc *ps, struct httpd_req *r)
{
    if (!strv_eq_cstr(r->h.method, "POST")) {
        httpd_header(r, "Allow", "POST");
        httpd_respond(r, 405, "text/plain; charset=utf-8", "use POST\n", 9);
        return;
    }
    size_t ulen;
    const char *err = NULL;
    char *raw = NULL;
    if (snappy_uncompressed_length(r->body.p, r->body.n, &ulen) != SNAPPY_OK ||
        ulen > RW_MAX_DECODED || !(raw = malloc(ulen ? ulen : 1)) ||
        snappy_uncompress(r->body.p, r->body.n, raw, &ulen) != SNAPPY_OK) {
        free(raw);
        httpd_respond(r, 400, "text/plain; charset=utf-8", "snappy: corrupt input\n", 22);
        return;
    }
    struct pb req = { (const uint8_t *)raw, (const uint8_t *)raw + ulen };
    struct buf out = BUF_INIT, result = BUF_INIT, ts = BUF_INIT, sm = BUF_INIT;
    uint64_t total = 0;
    bool samples_ok = true, any_type = false;
    /* first pass: the accepted response types */
    for (struct pb scan = req; scan.p < scan.end;) {
        uint32_t f;
        int wt;
        struct pb sub;
        uint64_t v;
        if (pb_field(&scan, &f, &wt, &sub, &v)) {
            err = "malformed protobuf in the ReadRequest";
            break;
        }
        if (f == 2) {
            any_type = true;
            samples_ok = false;
            if (wt == 0) {
                samples_ok |= v == 0;
            } else if (wt == 2) {
                while (sub.p < sub.end && pb_varint(&sub, &v) == 0)
                    samples_ok |= v == 0;
            }
        }
    }
    if (!err && any_type && !samples_ok)
        err = "server does not support any of the requested response types (only SAMPLES)";
    while (!err && req.p < req.end) {
        uint32_t f;
        int wt;
        struct pb q;
        uint64_t v;
        if (pb_field(&req, &f, &wt, &q, &v)) {
            err = "malformed protobuf in the ReadRequest";
            break;
        }
        if (f != 1 || wt != 2)
            continue;
        int64_t mint = 0, maxt = 0;
        struct tsdb_matcher m[64];
        size_t nm = 0;
        while (!err && q.p < q.end) {
            uint32_t qf;
            int qwt;
            struct pb lm;
            uint64_t qv;
            if (pb_field(&q, &qf, &qwt, &lm, &qv)) {
                err = "malformed protobuf in a Query";
                break;
            }
            if (qf == 1 && qwt == 0)
                mint = (int64_t)qv;
            else if (qf == 2 && qwt == 0)
                maxt = (int64_t)qv;
            else if (qf == 3 && qwt == 2) {
                uint64_t type = 0;
                char *name = NULL, *value = NULL;
                while (lm.p < lm.end) {
                    uint32_t lf;
                    int lwt;
                    struct pb s2;
                    uint64_t lv;
                    if (pb_field(&lm, &lf, &lwt, &s2, &lv)) {
                        err = "malformed protobuf in a LabelMatcher";
                        break;
                    }
                    if (lf == 1 && lwt == 0)
                        type = lv;
                    else if (lwt == 2 && (lf == 2 || lf == 3)) {
                        char **dst = lf == 2 ? &name : &value;
                        free(*dst);
                        *dst = strndup((const char *)s2.p, (size_t)(s2.end - s2.p));
                    }
                }
                char merr[200];
                if (!err && (type > 3 || nm == ARRAY_SIZE(m)))
                    err = "bad label matcher";
                else if (!err && tsdb_matcher_init(&m[nm], name ? name : "", (enum tsdb_match_op)type,
                                                   value ? value : "", merr, sizeof(merr)))
                    err = "invalid regular expression in a matcher";
                else if (!err)
                    nm++;
                free(name);
                free(value);
            }
        }
        if (!err) {
            struct tsdb_series **sel;
            size_t n = tsdb_select(&ps->db, m, nm, mint, maxt, &sel);
            buf_reset(&result);
            for (size_t i = 0; i < n && !err; i++) {
                buf_reset(&ts);
                for (uint16_t k = 0; k < sel[i]->labels.n; k++) {
                    buf_reset(&sm);
                    pb_put_bytes(&sm, 1, sel[i]->labels.l[k].name, strlen(sel[i]->labels.l[k].name));
                    pb_put_bytes(&sm, 2, sel[i]->labels.l[k].value, strlen(sel[i]->labels.l[k].value));
                    pb_put_bytes(&ts, 1, buf_head(&sm), buf_used(&sm));
                }
                struct tsdb_iter it;
                int64_t t;
                double val;
                tsdb_iter_init(&it, sel[i], mint, maxt);
                while (tsdb_iter_next(&it, &t, &val)) {
                    if (++total > RR_MAX_SAMPLES) {
                        err = "exceeded sample limit (50000000)";
                        break;
                    }
                    uint8_t sb[20];
                    size_t o = 0;
                    sb[o++] = 1 << 3 | 1;
                    memcpy(sb + o, &val, 8);
                    o += 8;
                    sb[o++] = 2 << 3 | 0;
                    uint64_t tv = (uint64_t)t;
                    do {
                        uint8_t c = (uint8_t)(tv & 0x7f);
                        tv >>= 7;
                        sb[o++] = (uint8_t)(c | (tv ? 0x80 : 0));
                    } while (tv);
                    pb_put_bytes(&ts, 2, sb, o);
                }
                pb_put_bytes(&result, 1, buf_head(&ts), buf_used(&ts));
            }
            tsdb_select_free(sel, n);
            if (!err)
                pb_put_bytes(&out, 1, buf_used(&result) ? buf_head(&result) : "", buf_used(&result));
        }
        for (size_t i = 0; i < nm; i++)
            tsdb_matcher_free(&m[i]);
    }
    free(raw);
    if (err) {
        httpd_respond(r, 400, "text/plain; charset=utf-8", err, strlen(err));
    } else {
        size_t clen = snappy_max_compressed_length(buf_used(&out));
        char *comp = malloc(clen ? clen : 1);
        if (comp && snappy_compress(buf_used(&out) ? buf_head(&out) : "", buf_used(&out), comp,
                                    &clen) == SNAPPY_OK) {
            httpd_header(r, "Content-Encoding", "snappy");
            httpd_respond(r, 200, "application/x-protobuf", comp, clen);
        } else {
            httpd_respond(r, 500, "text/plain; charset=utf-8", "out of memory\n", 14);
        }
        free(comp);
    }
    buf_free(&out);
    buf_free(&result);
    buf_free(&ts);
    buf_free(&sm);
}

/* POST /api/v1/admin/tsdb/snapshot: hard links to every block and the head written
 * as a block, in <data>/snapshots/<name>, as Prometheus does. */
static void h_admin_snapshot(struct prom_svc *ps, struct httpd_req *r, const struct http_form *f)
{
    if (!ps->conf->admin_api) {
        prom__api_error(r, 503, "unavailable", "admin APIs disabled");
        return;
    }
    if (!ps->db.dir) {
        prom__api_error(r, 500, "internal", "the store has no data directory");
        return;
    }
    const char *sh = http_form_get(f, "skip_head");
    bool skip = sh && (!strcmp(sh, "true") || !strcmp(sh, "1"));
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    uint8_t rnd[8];
    cairn_random(rnd, sizeof(rnd));
    char name[64], dir[4400], err[512] = "";
    size_t o = strftime(name, sizeof(name), "%Y%m%dT%H%M%SZ-", &tm);
    for (int i = 0; i < 8; i++)
        o += (size_t)snprintf(name + o, sizeof(name) - o, "%02x", rnd[i]);
    snprintf(dir, sizeof(dir), "%s/snapshots/%s", ps->db.dir, name);
    if (tsdb_export_snapshot(&ps->db, dir, skip, err, sizeof(err))) {
        char msg[700];
        snprintf(msg, sizeof(msg), "create snapshot: %s", err);
        prom__api_error(r, 500, "internal", msg);
        return;
    }
    struct buf b = BUF_INIT;
    buf_printf(&b, "{\"status\":\"success\",\"data\":{\"name\":\"%s\"}}", name);
    prom__reply_json(r, 200, &b);
    buf_free(&b);
}

/* ---- routing ---- */

void prom__handle(struct httpd_req *r, void *arg)
{
    struct prom_svc *ps = arg;
    struct strv p = r->h.path;
    if (service_handle_builtin(ps->sc, r))
        return;
    if (strv_eq_cstr(p, "/api/v1/write")) {
        h_write(ps, r);
        return;
    }
    if (strv_eq_cstr(p, "/api/v1/read")) {
        h_read(ps, r);
        return;
    }
    if (strv_has_prefix(p, "/api/v1/admin/tsdb/")) {
        struct http_form af;
        httpd_req_form(r, &af);
        if (!strv_eq_cstr(r->h.method, "POST") && !strv_eq_cstr(r->h.method, "PUT")) {
            httpd_header(r, "Allow", "POST, PUT");
            prom__api_error(r, 405, "bad_data", "method not allowed");
        } else if (strv_eq_cstr(p, "/api/v1/admin/tsdb/snapshot")) {
            h_admin_snapshot(ps, r, &af);
        } else {
            prom__api_error(r, 404, "not_found", "unknown admin endpoint (only snapshot is served)");
        }
        http_form_free(&af);
        return;
    }
    bool get = strv_eq_cstr(r->h.method, "GET") || r->h.is_head;
    bool post = strv_eq_cstr(r->h.method, "POST");
    if (!get && !post) {
        httpd_header(r, "Allow", "GET, POST");
        prom__api_error(r, 405, "bad_data", "method not allowed");
        return;
    }
    struct http_form f;
    httpd_req_form(r, &f);
    if (strv_eq_cstr(p, "/api/v1/series")) {
        h_series(ps, r, &f);
    } else if (strv_eq_cstr(p, "/api/v1/labels")) {
        h_labels(ps, r, &f, NULL);
    } else if (strv_has_prefix(p, "/api/v1/label/") && p.n > 21 &&
               memcmp(p.p + p.n - 7, "/values", 7) == 0) {
        char *name = http_urldecode(p.p + 14, p.n - 21);
        if (!name || !relabel_label_name_ok(name)) {
            char msg[300];
            snprintf(msg, sizeof(msg), "invalid label name: \"%s\"", name ? name : "");
            prom__api_error(r, 400, "bad_data", msg);
        } else {
            h_labels(ps, r, &f, name);
        }
        free(name);
    } else if (strv_eq_cstr(p, "/federate")) {
        h_federate(ps, r, &f);
    } else if (strv_eq_cstr(p, "/api/v1/targets")) {
        h_targets(ps, r);
    } else if (strv_eq_cstr(p, "/api/v1/metadata")) {
        h_metadata(ps, r, &f);
    } else if (strv_has_prefix(p, "/api/v1/status/")) {
        char what[32];
        snprintf(what, sizeof(what), "%.*s", (int)MIN(p.n - 15, 31), p.p + 15);
        if (strcmp(what, "buildinfo") && strcmp(what, "config") && strcmp(what, "flags") &&
            strcmp(what, "runtimeinfo") && strcmp(what, "tsdb"))
            prom__api_error(r, 404, "not_found", "unknown status page");
        else
            h_status(ps, r, what);
    } else if (!prom__query_handle(ps, r, &f) && !prom__rules_handle(ps, r)) {
        httpd_respond(r, 404, "text/plain; charset=utf-8", "404 page not found\n", 19);
    }
    http_form_free(&f);
}
