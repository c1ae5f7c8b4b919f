/* edge_cache_directives.c - the fields a shared cache reads (RFC 9111 section 5):
 * Cache-Control directives, delta-seconds, comma-separated field lists. */
#include "edge_cache_internal.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <brotli/encode.h>
#include <zlib.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- Cache-Control ---- */

int64_t edge_cache__delta_seconds(struct strv v)
{
    if (v.n && v.p[0] == '"' && v.n >= 2) {
        v.p++;
        v.n -= 2;
    }
    uint64_t x;
    if (v.n > 10) {
        /* RFC 9111 1.2.2: a too large value means "infinity", capped at 2^31 */
        for (size_t i = 0; i < v.n; i++)
            if (v.p[i] < '0' || v.p[i] > '9')
                return -2;
        return 2147483648LL;
    }
    if (strv_to_u64(v, &x))
        return -2;      /* invalid */
    return (int64_t)x;
}

void edge_cache_cc_parse(const struct http_header *h, size_t n, struct edge_cache_cc *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_age = cc->s_maxage = cc->min_fresh = cc->max_stale = -1;
    cc->stale_while_revalidate = cc->stale_if_error = -1;
    for (size_t i = 0; i < n; i++) {
        if (!strv_caseeq_cstr(h[i].name, "cache-control"))
            continue;
        const char *p = h[i].value.p, *end = p + h[i].value.n;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *ns = p;
            while (p < end && *p != '=' && *p != ',' && *p != ' ')
                p++;
            struct strv name = strv_make(ns, (size_t)(p - ns)), val = STRV_NULL;
            bool spaced = false;
            while (p < end && *p == ' ') {
                p++;
                spaced = true;
            }
            if (spaced && p < end && *p == '=')
                name = STRV("-invalid-");   /* "max-age =5" is not max-age (RFC 9111 5.2) */
            if (p < end && *p == '=') {
                p++;
                const char *vs = p;
                if (p < end && *p == '"') {
                    p++;
                    while (p < end && *p != '"')
                        p++;
                    if (p < end)
                        p++;
                } else {
                    while (p < end && *p != ',' && *p != ' ')
                        p++;
                }
                val = strv_make(vs, (size_t)(p - vs));
            }
            while (p < end && *p != ',')
                p++;
            int64_t d;
            if (strv_caseeq_cstr(name, "no-store"))
                cc->no_store = true;
            else if (strv_caseeq_cstr(name, "no-cache") && val.n > 2 && val.p[0] == '"')
                cc->no_cache_fields = strv_make(val.p + 1, val.n - 2);   /* qualified form */
            else if (strv_caseeq_cstr(name, "no-cache"))
                cc->no_cache = true;
            else if (strv_caseeq_cstr(name, "private") && val.n > 2 && val.p[0] == '"')
                cc->private_fields = strv_make(val.p + 1, val.n - 2);
            else if (strv_caseeq_cstr(name, "private"))
                cc->private_ = true;
            else if (strv_caseeq_cstr(name, "public"))
                cc->public_ = true;
            else if (strv_caseeq_cstr(name, "must-revalidate"))
                cc->must_revalidate = true;
            else if (strv_caseeq_cstr(name, "proxy-revalidate"))
                cc->proxy_revalidate = true;
            else if (strv_caseeq_cstr(name, "only-if-cached"))
                cc->only_if_cached = true;
            else if (strv_caseeq_cstr(name, "must-understand"))
                cc->must_understand = true;
            else if (strv_caseeq_cstr(name, "max-age")) {
                d = edge_cache__delta_seconds(val);
                /* RFC 9111 4.2.1: an invalid max-age makes the response stale */
                if (cc->max_age == -1)
                    cc->max_age = d == -2 ? 0 : d;
            } else if (strv_caseeq_cstr(name, "s-maxage")) {
                d = edge_cache__delta_seconds(val);
                if (cc->s_maxage == -1)
                    cc->s_maxage = d == -2 ? 0 : d;
            } else if (strv_caseeq_cstr(name, "stale-while-revalidate")) {
                d = edge_cache__delta_seconds(val);
                if (d >= 0)
                    cc->stale_while_revalidate = d;
            } else if (strv_caseeq_cstr(name, "stale-if-error")) {
                d = edge_cache__delta_seconds(val);
                if (d >= 0)
                    cc->stale_if_error = d;
            } else if (strv_caseeq_cstr(name, "min-fresh")) {
                d = edge_cache__delta_seconds(val);
                if (d >= 0)
                    cc->min_fresh = d;
            } else if (strv_caseeq_cstr(name, "max-stale")) {
                d = val.n ? edge_cache__delta_seconds(val) : 2147483648LL;
                if (d >= 0)
                    cc->max_stale = d;
            }
        }
    }
}

/* Iterates over a stored field block ("Name: value\r\n" lines): name, value and
 * the whole line (CRLF included) of the next field; false at the end. */
bool edge_cache__field_next(const char **pp, const char *end, struct strv *name, struct strv *value,
                       struct strv *line)
{
    const char *p = *pp;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            return false;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        *pp = eol + 1;
        if (!colon) {
            p = eol + 1;
            continue;
        }
        const char *v = colon + 1, *ve = eol;
        while (v < eol && *v == ' ')
            v++;
        if (ve > v && ve[-1] == '\r')
            ve--;
        *name = strv_make(p, (size_t)(colon - p));
        *value = strv_make(v, (size_t)(ve - v));
        if (line)
            *line = strv_make(p, (size_t)(eol + 1 - p));
        return true;
    }
    return false;
}
