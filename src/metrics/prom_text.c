/* prom_text.c - exposition format parser. */
#include "prom_text.h"
#include "core/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

int prom_parse_float(const char *s, size_t n, double *out)
{
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    const char *p = tmp + (tmp[0] == '+' || tmp[0] == '-');
    if (strcasecmp(p, "inf") == 0 || strcasecmp(p, "infinity") == 0) {
        *out = tmp[0] == '-' ? -INFINITY : INFINITY;
        return 0;
    }
    if (strcasecmp(p, "nan") == 0) {
        *out = NAN;
        return 0;
    }
    /* digits, '.', exponent, hex floats, '_' separators are not Go ParseFloat's */
    for (const char *q = p; *q; q++)
        if (!((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' ||
              *q == '-' || *q == 'x' || *q == 'X' || *q == 'p' || *q == 'P' ||
              (*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F')))
            return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(tmp, &end);
    if (*end || end == tmp)
        return -EINVAL;
    *out = v;
    return 0;
}

void prom_format_float(char *out, size_t outlen, double v)
{
    metrics_format_value(out, outlen, v);
}

struct parser {
    const char *p, *end;
    int line;
    char *err;
    size_t errlen;
};

static int perr(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(struct parser *ps, const char *fmt, ...)
{
    int o = snprintf(ps->err, ps->errlen, "line %d: ", ps->line);
    va_list ap;
    va_start(ap, fmt);
    if (o >= 0 && (size_t)o < ps->errlen)
        vsnprintf(ps->err + o, ps->errlen - (size_t)o, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* A label set from just after its '{' to just past its '}', into out (names and
 * values copied to *o with escapes undone). */
static int parse_labels(struct parser *ps, const char **qp, const char *le, char **op, struct tsdb_label *out,
                        size_t max, size_t *n)
{
    const char *q = *qp + 1;
    char *o = *op;
    *n = 0;
    for (;;) {
        while (q < le && *q == ' ')
            q++;
        if (q < le && *q == '}') {
            q++;
            break;
        }
        if (q >= le || !name_start(*q))
            return perr(ps, "expected a label name");
        if (*n >= max)
            return perr(ps, "more than %zu labels", max);
        out[*n].name = o;
        while (q < le && name_char(*q))
            *o++ = *q++;
        *o++ = 0;
        while (q < le && *q == ' ')
            q++;
        if (q + 1 >= le || *q != '=' || q[1] != '"')
            return perr(ps, "expected =\" after label name %s", out[*n].name);
        q += 2;
        out[*n].value = o;
        for (;;) {
            if (q >= le)
                return perr(ps, "unterminated label value");
            if (*q == '"')
                break;
            if (*q == '\\') {
                if (q + 1 >= le)
                    return perr(ps, "unterminated escape");
                char c = q[1];
                if (c == 'n')
                    *o++ = '\n';
                else if (c == '\\' || c == '"')
                    *o++ = c;
                else
                    return perr(ps, "invalid escape \\%c in label value", c);
                q += 2;
                continue;
            }
            *o++ = *q++;
        }
        q++;
        *o++ = 0;
        for (size_t k = 0; k < *n; k++)
            if (strcmp(out[k].name, out[*n].name) == 0)
                return perr(ps, "label %s given twice", out[k].name);
        (*n)++;
        while (q < le && *q == ' ')
            q++;
        if (q < le && *q == ',') {
            q++;
            continue;
        }
        if (q < le && *q == '}') {
            q++;
            break;
        }
        return perr(ps, "expected , or } in label set");
    }
    *qp = q;
    *op = o;
    return 0;
}

/* An OpenMetrics exemplar after a sample: "# {labels} value [timestamp]", its label
 * names and values at most 128 characters together. */
static int parse_exemplar(struct parser *ps, const char *q, const char *le, char **op, struct prom_exemplar *ex)
{
    q++;
    if (q + 1 >= le || *q != ' ' || q[1] != '{')
        return perr(ps, "expected \" {\" to start an exemplar");
    q++;
    if (parse_labels(ps, &q, le, op, ex->labels, PROM_EXEMPLAR_LABELS, &ex->nlabels))
        return -EINVAL;
    size_t runes = 0;
    for (size_t i = 0; i < ex->nlabels; i++)
        for (const char *c = ex->labels[i].name; *c; c++)
            runes += (*c & 0xc0) != 0x80;
    for (size_t i = 0; i < ex->nlabels; i++)
        for (const char *c = ex->labels[i].value; *c; c++)
            runes += (*c & 0xc0) != 0x80;
    if (runes > 128)
        return perr(ps, "exemplar labels longer than 128 characters");
    if (q >= le || *q != ' ')
        return perr(ps, "expected a value after the exemplar's labels");
    while (q < le && *q == ' ')
        q++;
    const char *vs = q;
    while (q < le && *q != ' ')
        q++;
    if (prom_parse_float(vs, (size_t)(q - vs), &ex->value))
        return perr(ps, "invalid exemplar value");
    while (q < le && *q == ' ')
        q++;
    ex->has_ts = false;
    if (q < le) {
        const char *ts = q;
        while (q < le && *q != ' ')
            q++;
        double sec;
        if (prom_parse_float(ts, (size_t)(q - ts), &sec) || !isfinite(sec) || q != le)
            return perr(ps, "invalid exemplar timestamp");
        ex->ts_ms = (int64_t)llround(sec * 1000.0);
        ex->has_ts = true;
    }
    ex->has = true;
    return 0;
}

int prom_text_parse(const char *text, size_t len, bool openmetrics, size_t label_limit,
                    prom_sample_cb cb, prom_meta_cb mcb, void *arg, char *err, size_t errlen)
{
    struct parser ps = { .p = text, .end = text + len, .line = 0, .err = err, .errlen = errlen };
    struct prom_sample s;
    char *scratch = malloc((len < PROM_MAX_LINE ? len : PROM_MAX_LINE) + 1024);
    int ret = 0;
    bool eof_seen = false;
    if (!scratch)
        return -ENOMEM;
    if (!label_limit || label_limit > TSDB_MAX_LABELS)
        label_limit = TSDB_MAX_LABELS;
    while (ps.p < ps.end) {
        const char *ls = ps.p;
        const char *le = memchr(ls, '\n', (size_t)(ps.end - ls));
        if (!le)
            le = ps.end;
        ps.p = le < ps.end ? le + 1 : le;
        ps.line++;
        if ((size_t)(le - ls) > PROM_MAX_LINE) {
            ret = perr(&ps, "line longer than %u bytes", PROM_MAX_LINE);
            break;
        }
        if (le > ls && le[-1] == '\r')
            le--;
        if (eof_seen) {
            ret = perr(&ps, "data after # EOF");
            break;
        }
        const char *q = ls;
        if (!openmetrics)
            while (q < le && (*q == ' ' || *q == '\t'))
                q++;
        if (q == le) {
            if (openmetrics) {
                ret = perr(&ps, "empty line");
                break;
            }
            continue;
        }
        if (*q == '#') {
            /* # HELP name text | # TYPE name type | # UNIT | # EOF | comment */
            const char *w = q + 1;
            while (w < le && *w == ' ')
                w++;
            if (openmetrics && (size_t)(le - w) == 3 && memcmp(w, "EOF", 3) == 0) {
                eof_seen = true;
                continue;
            }
            const char *kinds[] = { "HELP", "TYPE", "UNIT" };
            for (int k = 0; k < 3; k++) {
                size_t kl = 4;
                if ((size_t)(le - w) > kl && memcmp(w, kinds[k], kl) == 0 && w[kl] == ' ') {
                    const char *nm = w + kl + 1, *ne = nm;
                    while (ne < le && *ne != ' ')
                        ne++;
                    const char *tx = ne < le ? ne + 1 : ne;
                    size_t nl = (size_t)(ne - nm), tl = (size_t)(le - tx);
                    if (mcb) {
                        memcpy(scratch, nm, nl);
                        scratch[nl] = 0;
                        memcpy(scratch + nl + 1, tx, tl);
                        scratch[nl + 1 + tl] = 0;
                        struct prom_meta m = { scratch, kinds[k], scratch + nl + 1 };
                        mcb(arg, &m);
                    }
                    break;
                }
            }
            continue;
        }
        /* a sample */
        char *o = scratch;
        const char *series_start = q;
        if (!name_start(*q)) {
            ret = perr(&ps, "expected a metric name, got \"%.*s\"", (int)MIN(le - q, 32), q);
            break;
        }
        s.name = o;
        while (q < le && name_char(*q))
            *o++ = *q++;
        *o++ = 0;
        s.nlabels = 0;
        if (q < le && *q == '{' && (ret = parse_labels(&ps, &q, le, &o, s.labels, label_limit, &s.nlabels)))
            break;
        s.series = series_start;
        s.series_len = (size_t)(q - series_start);
        if (q >= le || (*q != ' ' && *q != '\t')) {
            ret = perr(&ps, "expected a value after %s", s.name);
            break;
        }
        while (q < le && (*q == ' ' || *q == '\t'))
            q++;
        const char *vs = q;
        while (q < le && *q != ' ' && *q != '\t')
            q++;
        if (prom_parse_float(vs, (size_t)(q - vs), &s.value)) {
            ret = perr(&ps, "invalid value \"%.*s\"", (int)MIN(q - vs, 32), vs);
            break;
        }
        while (q < le && (*q == ' ' || *q == '\t'))
            q++;
        s.has_ts = false;
        if (q < le && *q != '#') {
            const char *ts = q;
            while (q < le && *q != ' ' && *q != '\t')
                q++;
            if (openmetrics) {
                double sec;
                if (prom_parse_float(ts, (size_t)(q - ts), &sec) || !isfinite(sec)) {
                    ret = perr(&ps, "invalid timestamp");
                    break;
                }
                s.ts_ms = (int64_t)llround(sec * 1000.0);
            } else {
                char tb[32];
                size_t tl = (size_t)(q - ts);
                char *e;
                if (tl == 0 || tl >= sizeof(tb)) {
                    ret = perr(&ps, "invalid timestamp");
                    break;
                }
                memcpy(tb, ts, tl);
                tb[tl] = 0;
                errno = 0;
                long long v = strtoll(tb, &e, 10);
                if (*e || errno) {
                    ret = perr(&ps, "invalid timestamp \"%s\"", tb);
                    break;
                }
                s.ts_ms = v;
            }
            s.has_ts = true;
            while (q < le && (*q == ' ' || *q == '\t'))
                q++;
        }
        s.ex.has = false;
        if (q < le && openmetrics && *q == '#') {
            if ((ret = parse_exemplar(&ps, q, le, &o, &s.ex)))
                break;
            q = le;
        }
        if (q < le) {
            ret = perr(&ps, "unexpected text after the sample");
            break;
        }
        ret = cb(arg, &s);
        if (ret)
            break;
    }
    if (!ret && openmetrics && !eof_seen)
        ret = perr(&ps, "missing # EOF");
    free(scratch);
    return ret;
}
