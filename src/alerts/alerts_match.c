/* alerts_match.c - label sets, matchers, fingerprints and RFC 3339 times, with
 * Alertmanager's exact rules: the matcher syntax of its config and of amtool
 * (pkg/labels/parse.go), regexes anchored as ^(?:re)$ with RE2's meaning of `.`
 * (no newline), fingerprints as Prometheus's model.LabelSet.Fingerprint, and the
 * label-set order of model.LabelSet.Before that sorts alerts in notifications.
 */
#include "alerts_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *am__mtype_str(enum am_mtype t)
{
    static const char *const s[] = { "=", "!=", "=~", "!~" };
    return s[t];
}

bool am__label_name_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

static bool utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p >> 5) == 6 ? 1 : (*p >> 4) == 14 ? 2 : (*p >> 3) == 30 ? 3 : -1;
        if (n < 0)
            return false;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xC0) != 0x80)
                return false;
    }
    return true;
}

int am__matcher_init(struct am_matcher *m, enum am_mtype t, const char *name, const char *value,
                     char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->type = t;
    m->name = strdup(name);
    m->value = strdup(value);
    if (!m->name || !m->value) {
        snprintf(err, errlen, "out of memory");
        am__matcher_free(m);
        return -ENOMEM;
    }
    if (t == AM_RE || t == AM_NRE) {
        size_t n = strlen(value) + 16;
        char *pat = malloc(n);
        if (!pat) {
            am__matcher_free(m);
            return -ENOMEM;
        }
        snprintf(pat, n, "^(?:%s)$", value);
        int ec;
        PCRE2_SIZE off;
        m->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_DOLLAR_ENDONLY, &ec, &off, NULL);
        free(pat);
        if (m->re)
            m->md = pcre2_match_data_create(1, NULL);
        if (!m->re || !m->md) {
            PCRE2_UCHAR msg[160] = "out of memory";
            if (!m->re)
                pcre2_get_error_message(ec, msg, sizeof(msg));
            snprintf(err, errlen, "error parsing regexp: %s: `%s`", (char *)msg, value);
            am__matcher_free(m);
            return -EINVAL;
        }
    }
    return 0;
}

void am__matcher_free(struct am_matcher *m)
{
    free(m->name);
    free(m->value);
    if (m->re)
        pcre2_code_free(m->re);
    if (m->md)
        pcre2_match_data_free(m->md);
    memset(m, 0, sizeof(*m));
}

void am__matchers_free(struct am_matchers *ms)
{
    for (size_t i = 0; i < ms->n; i++)
        am__matcher_free(&ms->m[i]);
    free(ms->m);
    ms->m = NULL;
    ms->n = 0;
}

bool am__matcher_matches(const struct am_matcher *m, const char *v)
{
    switch (m->type) {
    case AM_EQ:
        return strcmp(v, m->value) == 0;
    case AM_NE:
        return strcmp(v, m->value) != 0;
    default:
        return (pcre2_match(m->re, (PCRE2_SPTR)v, strlen(v), 0, 0, m->md, NULL) >= 0) ==
               (m->type == AM_RE);
    }
}

bool am__matchers_match(const struct am_matchers *ms, const struct am_lset *ls)
{
    for (size_t i = 0; i < ms->n; i++) {
        const char *v = am__lset_get(ls, ms->m[i].name);
        if (!am__matcher_matches(&ms->m[i], v ? v : ""))
            return false;
    }
    return true;
}

static int cmp_matcher(const void *pa, const void *pb)
{
    const struct am_matcher *a = pa, *b = pb;
    int c = strcmp(a->name, b->name);
    if (c)
        return c;
    c = strcmp(a->value, b->value);
    if (c)
        return c;
    return (int)a->type - (int)b->type;
}

void am__matchers_sort(struct am_matchers *ms)
{
    if (ms->n > 1)
        qsort(ms->m, ms->n, sizeof(*ms->m), cmp_matcher);
}

void am__matchers_format(struct buf *b, const struct am_matchers *ms)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < ms->n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_printf(b, "%s%s\"", ms->m[i].name, am__mtype_str(ms->m[i].type));
        for (const char *p = ms->m[i].value; *p; p++) {
            if (*p == '\\' || *p == '"')
                buf_putc(b, '\\');
            if (*p == '\n')
                buf_puts(b, "\\n");
            else
                buf_putc(b, *p);
        }
        buf_putc(b, '"');
    }
    buf_putc(b, '}');
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int am__matcher_parse(const char *s, struct am_matcher *out, char *err, size_t errlen)
{
    const char *p = s;
    while (is_space(*p))
        p++;
    const char *n0 = p;
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':'))
        goto bad;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':' ||
           (*p >= '0' && *p <= '9'))
        p++;
    size_t nlen = (size_t)(p - n0);
    while (is_space(*p))
        p++;
    enum am_mtype t;
    if (p[0] == '=' && p[1] == '~')
        t = AM_RE, p += 2;
    else if (p[0] == '=')
        t = AM_EQ, p += 1;
    else if (p[0] == '!' && p[1] == '=')
        t = AM_NE, p += 2;
    else if (p[0] == '!' && p[1] == '~')
        t = AM_NRE, p += 2;
    else
        goto bad;
    while (is_space(*p))
        p++;
    size_t rlen = strlen(p);
    while (rlen && is_space(p[rlen - 1]))
        rlen--;
    char name[256];
    if (nlen >= sizeof(name)) {
        snprintf(err, errlen, "label name too long");
        return -EINVAL;
    }
    memcpy(name, n0, nlen);
    name[nlen] = 0;
    char *raw = strndup(p, rlen);
    char *val = malloc(rlen + 1);
    if (!raw || !val) {
        free(raw);
        free(val);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    const char *r = raw;
    bool quote = false;
    if (*r == '"') {
        r++;
        quote = true;
    }
    if (!utf8_ok(r)) {
        snprintf(err, errlen, "matcher value not valid UTF-8: %.200s", p);
        goto bad_value;
    }
    size_t k = 0, rl = strlen(r);
    bool esc = false;
    for (size_t i = 0; i < rl; i++) {
        char ch = r[i];
        if (esc) {
            esc = false;
            if (ch == 'n')
                val[k++] = '\n';
            else if (ch == '"' || ch == '\\')
                val[k++] = ch;
            else {
                val[k++] = '\\';
                val[k++] = ch;
            }
            continue;
        }
        if (ch == '\\') {
            if (i < rl - 1) {
                esc = true;
                continue;
            }
            val[k++] = '\\';
        } else if (ch == '"') {
            if (!quote || i < rl - 1) {
                snprintf(err, errlen, "matcher value contains unescaped double quote: %.200s", raw);
                goto bad_value;
            }
            quote = false;
        } else {
            val[k++] = ch;
        }
    }
    if (quote) {
        snprintf(err, errlen, "matcher value contains unescaped double quote: %.200s", raw);
        goto bad_value;
    }
    val[k] = 0;
    int rc = am__matcher_init(out, t, name, val, err, errlen);
    free(raw);
    free(val);
    return rc;
bad_value:
    free(raw);
    free(val);
    return -EINVAL;
bad:
    snprintf(err, errlen, "bad matcher format: %.200s", s);
    return -EINVAL;
}

int am__matchers_parse(const char *s, struct am_matchers *out, char *err, size_t errlen)
{
    out->m = NULL;
    out->n = 0;
    size_t len = strlen(s);
    if (len && s[0] == '{')
        s++, len--;
    if (len && s[len - 1] == '}')
        len--;
    char *tok = malloc(len + 1);
    if (!tok)
        return -ENOMEM;
    size_t k = 0;
    bool inq = false, esc = false;
    int rc = 0;
    for (size_t i = 0; i <= len && rc == 0; i++) {
        char c = i < len ? s[i] : 0;
        if ((c == ',' && !inq) || i == len) {
            tok[k] = 0;
            const char *t = tok;
            while (is_space(*t))
                t++;
            if (i < len || *t) {
                if (out->n >= AM_MAX_MATCHERS) {
                    snprintf(err, errlen, "too many matchers (at most %d)", AM_MAX_MATCHERS);
                    rc = -EINVAL;
                    break;
                }
                struct am_matcher *nm = realloc(out->m, (out->n + 1) * sizeof(*nm));
                if (!nm) {
                    rc = -ENOMEM;
                    break;
                }
                out->m = nm;
                rc = am__matcher_parse(tok, &out->m[out->n], err, errlen);
                if (rc == 0)
                    out->n++;
            }
            k = 0;
            continue;
        }
        if (c == '"') {
            if (!esc)
                inq = !inq;
            else
                esc = false;
        } else if (c == '\\') {
            esc = !esc;
        } else {
            esc = false;
        }
        tok[k++] = c;
    }
    free(tok);
    if (rc)
        am__matchers_free(out);
    return rc;
}

/* ---- label sets ---- */

const char *am__lset_get(const struct am_lset *ls, const char *name)
{
    size_t lo = 0, hi = ls->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(ls->l[mid].name, name);
        if (c == 0)
            return ls->l[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

bool am__lset_eq(const struct am_lset *a, const struct am_lset *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->l[i].name, b->l[i].name) || strcmp(a->l[i].value, b->l[i].value))
            return false;
    return true;
}

int am__lset_copy(struct am_lset *dst, const struct am_lset *src)
{
    dst->n = 0;
    dst->l = calloc(src->n ? src->n : 1, sizeof(*dst->l));
    if (!dst->l)
        return -ENOMEM;
    for (size_t i = 0; i < src->n; i++) {
        dst->l[i].name = strdup(src->l[i].name);
        dst->l[i].value = strdup(src->l[i].value);
        dst->n++;
        if (!dst->l[i].name || !dst->l[i].value) {
            am__lset_free(dst);
            return -ENOMEM;
        }
    }
    return 0;
}

void am__lset_free(struct am_lset *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->l[i].name);
        free(ls->l[i].value);
    }
    free(ls->l);
    ls->l = NULL;
    ls->n = 0;
}

static int cmp_label(const void *pa, const void *pb)
{
    return strcmp(((const struct am_label *)pa)->name, ((const struct am_label *)pb)->name);
}

int am__lset_sort(struct am_lset *ls)
{
    if (ls->n > 1)
        qsort(ls->l, ls->n, sizeof(*ls->l), cmp_label);
    for (size_t i = 1; i < ls->n; i++)
        if (strcmp(ls->l[i - 1].name, ls->l[i].name) == 0)
            return -EINVAL;
    return 0;
}

#define FNV_OFFSET 14695981039346656037ull
#define FNV_PRIME 1099511628211ull

static uint64_t fnv_add(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t fnv_byte(uint64_t h, unsigned char c)
{
    h ^= c;
    return h * FNV_PRIME;
}

uint64_t am__lset_fingerprint(const struct am_lset *ls)
{
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < ls->n; i++) {
        h = fnv_byte(fnv_add(h, ls->l[i].name), 255);
        h = fnv_byte(fnv_add(h, ls->l[i].value), 255);
    }
    return h;
}

bool am__lset_before(const struct am_lset *a, const struct am_lset *b)
{
    if (a->n != b->n)
        return a->n < b->n;
    /* walk the sorted union of names */
    size_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        int c = i >= a->n ? 1 : j >= b->n ? -1 : strcmp(a->l[i].name, b->l[j].name);
        if (c < 0)
            return false;       /* the name is in a only: b lacks it */
        if (c > 0)
            return true;        /* in b only: a lacks it */
        int v = strcmp(a->l[i].value, b->l[j].value);
        if (v)
            return v < 0;
        i++, j++;
    }
    return false;
}

void am__lset_format(struct buf *b, const struct am_lset *ls)
{
    /* Go sorts the formatted "name=value" strings; a name followed by '=' sorts
     * like the name alone unless one name is a prefix of another and the next
     * character is below '=' - which label names cannot contain. */
    buf_putc(b, '{');
    for (size_t i = 0; i < ls->n; i++) {
        if (i)
            buf_puts(b, ", ");
        buf_puts(b, ls->l[i].name);
        buf_putc(b, '=');
        buf_go_quote(b, ls->l[i].value);
    }
    buf_putc(b, '}');
}

void am__lset_json(struct buf *b, const struct am_lset *ls)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < ls->n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_json_str(b, ls->l[i].name);
        buf_putc(b, ':');
        buf_json_str(b, ls->l[i].value);
    }
    buf_putc(b, '}');
}

/* ---- times ---- */

int64_t am__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int am__time_parse(const char *s, int64_t *ns)
{
    int Y, M, D, h, m, sec;
    if (strlen(s) < 20 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &m) || s[16] != ':' ||
        digits(s + 17, 2, &sec))
        return -EINVAL;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return -EINVAL;
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 9) {
                frac = frac * 10 + (*p - '0');
                n++;
            }
            p++;
        }
        if (n == 0)
            return -EINVAL;
        for (; n < 9; n++)
            frac *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om))
            return -EINVAL;
        off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    if (Y == 1 && M == 1 && D == 1 && h == 0 && m == 0 && sec == 0 && frac == 0 && off == 0) {
        *ns = 0;
        return 0;
    }
    struct tm tm = { .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h,
                     .tm_min = m, .tm_sec = sec };
    int64_t t = (int64_t)timegm(&tm) - off;
    if (t < -9000000000LL || t > 9000000000LL)
        return -EINVAL;
    *ns = t * 1000000000 + frac;
    return 0;
}

void am__time_format(struct buf *b, int64_t ns)
{
    if (ns == 0) {
        buf_puts(b, "0001-01-01T00:00:00Z");
        return;
    }
    int64_t sec = ns / 1000000000, frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    buf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
               tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (frac) {
        char f[16];
        snprintf(f, sizeof(f), "%09lld", (long long)frac);
        size_t n = 9;
        while (n && f[n - 1] == '0')
            n--;
        f[n] = 0;
        buf_printf(b, ".%s", f);
    }
    buf_putc(b, 'Z');
}
