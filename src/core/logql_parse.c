/* logql_parse.c - LogQL text to struct lq_node: a recursive-descent parser that
 * reads tokens in context (a number, a duration and a byte size look alike and
 * mean what their place in the grammar says).
 *
 * Precedence of binary operators, lowest first (as in PromQL and Loki):
 *   or;  and unless;  == != < <= > >=;  + -;  * / %;  ^ (right-associative).
 * Unary minus applies to number literals only, as in Loki's grammar.
 */
#include "core/logql.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

struct lq_arena_blk {
    struct lq_arena_blk *next;
    size_t used, cap;
    max_align_t data[];
};

struct lq_arena {
    struct lq_arena_blk *head;
};

void *lq_alloc(struct lq_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct lq_arena_blk *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *lq_strndup(struct lq_arena *a, const char *s, size_t n)
{
    char *p = lq_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static void arena_free(struct lq_arena *a)
{
    while (a && a->head) {
        struct lq_arena_blk *b = a->head;
        a->head = b->next;
        free(b);
    }
    free(a);
}

void lq_query_free(struct lq_query **qp)
{
    struct lq_query *q = *qp;
    if (!q)
        return;
    for (int i = 0; i < q->ncodes; i++)
        pcre2_code_free(q->codes[i]);
    free(q->codes);
    for (int i = 0; i < q->ntmpls; i++)
        lq__tmpl_free(q->tmpls[i]);
    free(q->tmpls);
    struct lq_arena *a = q->arena;
    free(q);
    arena_free(a);
    *qp = NULL;
}

/* ---- the parser's state ---- */

struct ps {
    const char *s, *p, *end;
    struct lq_query *q;
    struct lq_arena *a;
    char *err;
    size_t errlen;
    bool failed;
    int depth;
};

static int fail(struct ps *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ps *ps, const char *fmt, ...)
{
    if (ps->failed)
        return -EINVAL;
    ps->failed = true;
    int col = (int)(ps->p - ps->s) + 1, line = 1;
    for (const char *c = ps->s; c < ps->p; c++)
        if (*c == '\n') {
            line++;
            col = (int)(ps->p - c);
        }
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "parse error at line %d, col %d: %s", line, col, msg);
    return -EINVAL;
}

/* A failure that is not about syntax: Loki reports these without a position. */
static int fail_plain(struct ps *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail_plain(struct ps *ps, const char *fmt, ...)
{
    if (ps->failed)
        return -EINVAL;
    ps->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err, ps->errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static void ws(struct ps *ps)
{
    for (;;) {
        while (ps->p < ps->end && isspace((unsigned char)*ps->p))
            ps->p++;
        if (ps->p < ps->end && *ps->p == '#') {     /* comments run to the end of the line */
            while (ps->p < ps->end && *ps->p != '\n')
                ps->p++;
            continue;
        }
        return;
    }
}

static bool at_end(struct ps *ps)
{
    ws(ps);
    return ps->p >= ps->end;
}

static bool is_ident_start(int c)
{
    return isalpha(c) || c == '_';
}

static bool is_ident(int c)
{
    return isalnum(c) || c == '_';
}

/* The identifier at p (not consumed); its length, 0 when none. */
static size_t peek_ident(struct ps *ps)
{
    ws(ps);
    const char *q = ps->p;
    if (q >= ps->end || !is_ident_start((unsigned char)*q))
        return 0;
    while (q < ps->end && (is_ident((unsigned char)*q) || *q == '.' || *q == ':'))
        q++;
    /* a dotted or coloned name is one token only where a label name is allowed; callers
       that want plain words trim */
    return (size_t)(q - ps->p);
}

static bool peek_word(struct ps *ps, const char *w)
{
    ws(ps);
    size_t n = strlen(w);
    if ((size_t)(ps->end - ps->p) < n || strncasecmp(ps->p, w, n) != 0)
        return false;
    return ps->p + n >= ps->end || !is_ident((unsigned char)ps->p[n]);
}

static bool accept_word(struct ps *ps, const char *w)
{
    if (!peek_word(ps, w))
        return false;
    ps->p += strlen(w);
    return true;
}

static bool peek_op(struct ps *ps, const char *op)
{
    ws(ps);
    size_t n = strlen(op);
    return (size_t)(ps->end - ps->p) >= n && memcmp(ps->p, op, n) == 0;
}

static bool accept_op(struct ps *ps, const char *op)
{
    if (!peek_op(ps, op))
        return false;
    ps->p += strlen(op);
    return true;
}

/* What is at p, for "unexpected X" messages. */
static void describe(struct ps *ps, char *out, size_t n)
{
    ws(ps);
    if (ps->p >= ps->end) {
        snprintf(out, n, "end of input");
        return;
    }
    size_t id = peek_ident(ps);
    if (id) {
        snprintf(out, n, "%.*s", (int)(id > 40 ? 40 : id), ps->p);
        for (char *c = out; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        return;
    }
    if (*ps->p == '"' || *ps->p == '`') {
        snprintf(out, n, "STRING");
        return;
    }
    if (isdigit((unsigned char)*ps->p)) {
        snprintf(out, n, "NUMBER");
        return;
    }
    size_t k = 1;
    static const char *const two[] = { "|=", "!=", "|~", "!~", "|>", "!>", "==", "<=", ">=", "=~" };
    for (size_t i = 0; i < ARRAY_SIZE(two); i++)
        if (peek_op(ps, two[i]))
            k = 2;
    snprintf(out, n, "%.*s", (int)k, ps->p);
}

static int unexpected(struct ps *ps, const char *expecting)
{
    char what[64];
    describe(ps, what, sizeof(what));
    if (expecting)
        return fail(ps, "syntax error: unexpected %s, expecting %s", what, expecting);
    return fail(ps, "syntax error: unexpected %s", what);
}

static int expect_op(struct ps *ps, const char *op)
{
    if (accept_op(ps, op))
        return 0;
    return unexpected(ps, op);
}

static pcre2_code *compile_re(struct ps *ps, const char *pat, size_t n, bool anchored)
{
    int code;
    PCRE2_SIZE off;
    /* Go's RE2 syntax: . does not match \n by default, no backreferences; pcre2 reads
       RE2's common subset the same way. Selectors and label filters are anchored. */
    char *full = NULL;
    if (anchored) {
        full = malloc(n + 16);
        if (!full)
            return NULL;
        int k = snprintf(full, n + 16, "^(?:%.*s)$", (int)n, pat);
        pat = full;
        n = (size_t)k;
    }
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY, &code, &off, NULL);
    free(full);
    if (!re) {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(code, msg, sizeof(msg));
        fail_plain(ps, "error parsing regexp: %s: `%.*s`", (char *)msg, (int)(n > 200 ? 200 : n), pat);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    struct lq_query *q = ps->q;
    if (q->ncodes == q->capcodes) {
        int cap = q->capcodes ? q->capcodes * 2 : 8;
        pcre2_code **c = realloc(q->codes, (size_t)cap * sizeof(*c));
        if (!c) {
            pcre2_code_free(re);
            fail_plain(ps, "out of memory");
            return NULL;
        }
        q->codes = c;
        q->capcodes = cap;
    }
    q->codes[q->ncodes++] = re;
    return re;
}

/* A Go string literal: "..." with escapes, or `raw`. */
static int parse_string(struct ps *ps, const char **out, size_t *outn)
{
    ws(ps);
    if (ps->p >= ps->end || (*ps->p != '"' && *ps->p != '`'))
        return unexpected(ps, "STRING");
    char q = *ps->p++;
    struct buf b = { 0 };
    int r = 0;
    while (ps->p < ps->end && *ps->p != q) {
        char c = *ps->p++;
        if (q == '"' && c == '\n') {
            r = fail(ps, "syntax error: newline in string");
            goto out;
        }
        if (q == '"' && c == '\\') {
            if (ps->p >= ps->end)
                break;
            c = *ps->p++;
            switch (c) {
            case 'n': buf_putc(&b, '\n'); continue;
            case 't': buf_putc(&b, '\t'); continue;
            case 'r': buf_putc(&b, '\r'); continue;
            case 'a': buf_putc(&b, '\a'); continue;
            case 'b': buf_putc(&b, '\b'); continue;
            case 'f': buf_putc(&b, '\f'); continue;
            case 'v': buf_putc(&b, '\v'); continue;
            case '\\': case '"': case '\'': buf_putc(&b, c); continue;
            case 'x': case 'u': case 'U': {
                int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
                unsigned long v = 0;
                for (int i = 0; i < digits; i++) {
                    if (ps->p >= ps->end || !isxdigit((unsigned char)*ps->p)) {
                        r = fail(ps, "syntax error: invalid char escape");
                        goto out;
                    }
                    char h = *ps->p++;
                    v = v * 16 + (unsigned long)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
                }
                if (c == 'x') {
                    buf_putc(&b, (char)v);
                } else if (v < 0x80) {
                    buf_putc(&b, (char)v);
                } else if (v < 0x800) {
                    buf_putc(&b, (char)(0xC0 | (v >> 6)));
                    buf_putc(&b, (char)(0x80 | (v & 0x3F)));
                } else if (v < 0x10000) {
                    buf_putc(&b, (char)(0xE0 | (v >> 12)));
                    buf_putc(&b, (char)(0x80 | ((v >> 6) & 0x3F)));
                    buf_putc(&b, (char)(0x80 | (v & 0x3F)));
                } else {
                    buf_putc(&b, (char)(0xF0 | (v >> 18)));
                    buf_putc(&b, (char)(0x80 | ((v >> 12) & 0x3F)));
                    buf_putc(&b, (char)(0x80 | ((v >> 6) & 0x3F)));
                    buf_putc(&b, (char)(0x80 | (v & 0x3F)));
                }
                continue;
            }
            default:
                if (c >= '0' && c <= '7') {
                    unsigned v = (unsigned)(c - '0');
                    for (int i = 0; i < 2; i++) {
                        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '7') {
                            r = fail(ps, "syntax error: invalid char escape");
                            goto out;
                        }
                        v = v * 8 + (unsigned)(*ps->p++ - '0');
                    }
                    buf_putc(&b, (char)v);
                    continue;
                }
                r = fail(ps, "syntax error: invalid char escape");
                goto out;
            }
        }
        buf_putc(&b, c);
    }
    if (ps->p >= ps->end) {
        r = fail(ps, "syntax error: literal not terminated");
        goto out;
    }
    ps->p++;
    *outn = buf_used(&b);
    *out = lq_strndup(ps->a, buf_used(&b) ? buf_head(&b) : "", buf_used(&b));
    if (!*out)
        r = fail_plain(ps, "out of memory");
out:
    buf_free(&b);
    return r;
}

/* A label name; dots are not part of names in selectors. */
static int parse_name(struct ps *ps, const char **out)
{
    ws(ps);
    const char *q = ps->p;
    if (q >= ps->end || !is_ident_start((unsigned char)*q))
        return unexpected(ps, "IDENTIFIER");
    while (q < ps->end && is_ident((unsigned char)*q))
        q++;
    *out = lq_strndup(ps->a, ps->p, (size_t)(q - ps->p));
    ps->p = q;
    return *out ? 0 : fail_plain(ps, "out of memory");
}

/* ---- numbers, durations, byte sizes ---- */

/* The extent of a number-like word at p: digits, letters, '.', µ, and a sign right
 * after an exponent letter. */
static size_t number_word(struct ps *ps)
{
    const char *q = ps->p;
    bool hex = ps->end - q > 1 && q[0] == '0' && (q[1] == 'x' || q[1] == 'X');
    while (q < ps->end) {
        unsigned char c = (unsigned char)*q;
        if (isalnum(c) || c == '.' || c == '_' || c >= 0x80) {
            q++;
            continue;
        }
        if ((c == '+' || c == '-') && q > ps->p) {
            char e = (char)tolower((unsigned char)q[-1]);
            /* 1e-3, 0x1p-3; not 5m-3 */
            bool exp = hex ? e == 'p' : e == 'e';
            if (exp && q + 1 < ps->end && isdigit((unsigned char)q[1])) {
                /* the word before the letter must be all number */
                bool numeric = true;
                for (const char *t = hex ? ps->p + 2 : ps->p; t < q - 1; t++)
                    if (!(isdigit((unsigned char)*t) || *t == '.' || (hex && isxdigit((unsigned char)*t))))
                        numeric = false;
                if (numeric) {
                    q++;
                    continue;
                }
            }
        }
        break;
    }
    return (size_t)(q - ps->p);
}

/* Go's strconv.ParseFloat on a literal: decimal with exponent, hex with a p exponent,
 * Inf and NaN. */
static bool go_float(const char *s, size_t n, double *out)
{
    char tmp[128];
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    const char *t = tmp;
    if (*t == '+' || *t == '-')
        t++;
    if (t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
        if (!strchr(t, 'p') && !strchr(t, 'P'))
            return false;
    } else if (strcasecmp(t, "inf") && strcasecmp(t, "infinity") && strcasecmp(t, "nan")) {
        for (const char *c = t; *c; c++)
            if (!(isdigit((unsigned char)*c) || *c == '.' || *c == 'e' || *c == 'E' || *c == '+' || *c == '-'))
                return false;
    }
    char *e;
    errno = 0;
    double v = strtod(tmp, &e);
    if (*e || e == tmp)
        return false;
    *out = v;
    return true;
}

int lq_parse_float(const char *s, size_t n, double *out, char *err, size_t errlen)
{
    if (go_float(s, n, out))
        return 0;
    snprintf(err, errlen, "strconv.ParseFloat: parsing \"%.*s\": invalid syntax", (int)(n > 100 ? 100 : n), s);
    return -EINVAL;
}

/* A duration as exact nanoseconds, with Go's time.ParseDuration rules and messages;
 * extra adds Prometheus's d, w and y. */
static int dur_ns(const char *s, size_t n, bool extra, int64_t *out, char *err, size_t errlen)
{
    const char *p = s, *end = s + n;
    int nq = (int)(n > 100 ? 100 : n);
    bool neg = false;
    if (p < end && (*p == '-' || *p == '+'))
        neg = *p++ == '-';
    if (p == end)
        goto invalid;
    if (end - p == 1 && *p == '0') {
        *out = 0;
        return 0;
    }
    uint64_t total = 0;
    while (p < end) {
        if (!(isdigit((unsigned char)*p) || *p == '.'))
            goto invalid;
        uint64_t whole = 0, frac = 0, scale = 1;
        bool digits = false;
        while (p < end && isdigit((unsigned char)*p)) {
            if (whole > (UINT64_MAX - 9) / 10)
                goto invalid;
            whole = whole * 10 + (uint64_t)(*p++ - '0');
            digits = true;
        }
        if (p < end && *p == '.') {
            p++;
            while (p < end && isdigit((unsigned char)*p)) {
                if (scale < 1000000000000000000ULL) {     /* digits past 1e-18 do not count */
                    frac = frac * 10 + (uint64_t)(*p - '0');
                    scale *= 10;
                }
                p++;
                digits = true;
            }
        }
        if (!digits)
            goto invalid;
        const char *us = p;
        while (p < end && !(isdigit((unsigned char)*p) || *p == '.'))
            p++;
        size_t un = (size_t)(p - us);
        if (un == 0) {
            snprintf(err, errlen, "time: missing unit in duration \"%.*s\"", nq, s);
            return -EINVAL;
        }
        static const struct { const char *u; uint64_t ns; bool extra; } units[] = {
            { "ns", 1, false }, { "us", 1000, false }, { "\xc2\xb5s", 1000, false }, { "\xce\xbcs", 1000, false },
            { "ms", 1000000, false }, { "s", 1000000000ULL, false }, { "m", 60000000000ULL, false },
            { "h", 3600000000000ULL, false }, { "d", 86400000000000ULL, true }, { "w", 604800000000000ULL, true },
            { "y", 31536000000000000ULL, true },
        };
        uint64_t unit = 0;
        for (size_t i = 0; i < ARRAY_SIZE(units); i++)
            if ((!units[i].extra || extra) && strlen(units[i].u) == un && memcmp(units[i].u, us, un) == 0)
                unit = units[i].ns;
        if (!unit) {
            snprintf(err, errlen, "time: unknown unit \"%.*s\" in duration \"%.*s\"", (int)un, us, nq, s);
            return -EINVAL;
        }
        if (whole > (uint64_t)INT64_MAX / unit)
            goto invalid;
        uint64_t v = whole * unit;
        if (frac)
            v += (uint64_t)((long double)frac * (long double)unit / (long double)scale);
        if (v > (uint64_t)INT64_MAX - total)
            goto invalid;
        total += v;
    }
    *out = neg ? -(int64_t)total : (int64_t)total;
    return 0;
invalid:
    snprintf(err, errlen, "time: invalid duration \"%.*s\"", nq, s);
    return -EINVAL;
}

int lq_parse_go_duration(const char *s, size_t n, double *seconds, char *err, size_t errlen)
{
    int64_t ns;
    int r = dur_ns(s, n, false, &ns, err, errlen);
    if (!r)
        *seconds = (double)ns / 1e9;
    return r;
}

/* Prometheus's duration (ranges and offsets): 1h30m, 5m, 1d, 2w, 1y, 500ms. */
static int prom_duration(const char *s, size_t n, int64_t *ns)
{
    char err[160];
    if (n && (s[0] == '-' || s[0] == '+'))
        return -EINVAL;
    return dur_ns(s, n, true, ns, err, sizeof(err));
}

static const struct { const char *u; double f; } byte_units[] = {
    { "B", 1 }, { "kB", 1e3 }, { "KB", 1e3 }, { "KiB", 1024.0 }, { "MB", 1e6 }, { "MiB", 1048576.0 },
    { "GB", 1e9 }, { "GiB", 1073741824.0 }, { "TB", 1e12 }, { "TiB", 1099511627776.0 },
    { "PB", 1e15 }, { "PiB", 1125899906842624.0 }, { "EB", 1e18 }, { "EiB", 1152921504606846976.0 },
};

/* A byte size as written in a query (unit case as listed). */
static bool query_bytes(const char *s, size_t n, double *out)
{
    size_t d = 0;
    while (d < n && (isdigit((unsigned char)s[d]) || s[d] == '.'))
        d++;
    if (d == 0 || d == n)
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(byte_units); i++)
        if (strlen(byte_units[i].u) == n - d && memcmp(byte_units[i].u, s + d, n - d) == 0) {
            *out = strtod(s, NULL) * byte_units[i].f;
            return true;
        }
    return false;
}

/* humanize.ParseBytes on a label value: "3 MB", "1.5GiB", "42", units in any case. */
int lq_parse_bytes(const char *s, size_t n, double *out, char *err, size_t errlen)
{
    size_t i = 0;
    while (i < n && (isdigit((unsigned char)s[i]) || s[i] == '.' || s[i] == ','))
        i++;
    char num[64];
    size_t k = 0;
    for (size_t j = 0; j < i && k < sizeof(num) - 1; j++)
        if (s[j] != ',')
            num[k++] = s[j];
    num[k] = 0;
    while (i < n && s[i] == ' ')
        i++;
    char unit[16];
    size_t un = n - i;
    if (un >= sizeof(unit)) {
        snprintf(err, errlen, "unhandled size name: %.*s", (int)(un > 40 ? 40 : un), s + i);
        return -EINVAL;
    }
    for (size_t j = 0; j < un; j++)
        unit[j] = (char)tolower((unsigned char)s[i + j]);
    unit[un] = 0;
    double v;
    if (!go_float(num, k, &v)) {
        snprintf(err, errlen, "strconv.ParseFloat: parsing \"%s\": invalid syntax", num);
        return -EINVAL;
    }
    static const struct { const char *u; double f; } units[] = {
        { "", 1 }, { "b", 1 }, { "k", 1e3 }, { "kb", 1e3 }, { "ki", 1024.0 }, { "kib", 1024.0 },
        { "m", 1e6 }, { "mb", 1e6 }, { "mi", 1048576.0 }, { "mib", 1048576.0 }, { "g", 1e9 },
        { "gb", 1e9 }, { "gi", 1073741824.0 }, { "gib", 1073741824.0 }, { "t", 1e12 }, { "tb", 1e12 },
        { "ti", 1099511627776.0 }, { "tib", 1099511627776.0 }, { "p", 1e15 }, { "pb", 1e15 },
        { "pi", 1125899906842624.0 }, { "pib", 1125899906842624.0 }, { "e", 1e18 }, { "eb", 1e18 },
        { "ei", 1152921504606846976.0 }, { "eib", 1152921504606846976.0 },
    };
    for (size_t j = 0; j < ARRAY_SIZE(units); j++)
        if (strcmp(units[j].u, unit) == 0) {
            *out = trunc(v * units[j].f);    /* humanize.ParseBytes answers whole bytes */
            return 0;
        }
    snprintf(err, errlen, "unhandled size name: %s", unit);
    return -EINVAL;
}

/* ---- selectors ---- */

static int parse_matcher(struct ps *ps, struct lq_matcher *m, bool anchored_re)
{
    if (parse_name(ps, &m->name))
        return -EINVAL;
    if (accept_op(ps, "=~"))
        m->op = LQ_M_RE;
    else if (accept_op(ps, "!~"))
        m->op = LQ_M_NRE;
    else if (accept_op(ps, "!="))
        m->op = LQ_M_NEQ;
    else if (accept_op(ps, "="))
        m->op = LQ_M_EQ;
    else
        return unexpected(ps, "=, !=, =~ or !~");
    size_t n;
    if (parse_string(ps, &m->value, &n))
        return -EINVAL;
    if (m->op == LQ_M_RE || m->op == LQ_M_NRE) {
        m->re = compile_re(ps, m->value, n, anchored_re);
        if (!m->re)
            return -EINVAL;
    }
    return 0;
}

static int parse_selector(struct ps *ps, struct lq_node *n)
{
    if (expect_op(ps, "{"))
        return -EINVAL;
    int cap = 0;
    while (!accept_op(ps, "}")) {
        if (n->nmatchers && expect_op(ps, ","))
            return -EINVAL;
        if (accept_op(ps, "}"))
            break;
        if (n->nmatchers == cap) {
            cap = cap ? cap * 2 : 4;
            struct lq_matcher *m = lq_alloc(ps->a, (size_t)cap * sizeof(*m));
            if (!m)
                return fail_plain(ps, "out of memory");
            if (n->nmatchers)
                memcpy(m, n->matchers, (size_t)n->nmatchers * sizeof(*m));
            n->matchers = m;
        }
        if (parse_matcher(ps, &n->matchers[n->nmatchers], true))
            return -EINVAL;
        n->nmatchers++;
    }
    bool nonempty = false;
    for (int i = 0; i < n->nmatchers; i++) {
        const struct lq_matcher *m = &n->matchers[i];
        if (!lq_matcher_matches(m, "", 0))
            nonempty = true;
    }
    if (!n->nmatchers)
        return fail(ps, "syntax error: unexpected }, expecting IDENTIFIER");
    if (!nonempty)
        return fail_plain(ps, "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will");
    return 0;
}

bool lq_matcher_matches(const struct lq_matcher *m, const char *v, size_t n)
{
    switch (m->op) {
    case LQ_M_EQ:
        return strlen(m->value) == n && memcmp(m->value, v, n) == 0;
    case LQ_M_NEQ:
        return !(strlen(m->value) == n && memcmp(m->value, v, n) == 0);
    case LQ_M_RE:
    case LQ_M_NRE: {
        pcre2_match_data *md = lq_match_data();
        int rc = md ? pcre2_match(m->re, (PCRE2_SPTR)v, n, 0, 0, md, NULL) : -1;
        return (rc >= 0) == (m->op == LQ_M_RE);
    }
    }
    return false;
}

/* ---- the pipeline ---- */

static struct lq_stage *add_stage(struct ps *ps, struct lq_stage **v, int *n, int *cap)
{
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 8;
        struct lq_stage *s = lq_alloc(ps->a, (size_t)nc * sizeof(*s));
        if (!s) {
            fail_plain(ps, "out of memory");
            return NULL;
        }
        if (*n)
            memcpy(s, *v, (size_t)*n * sizeof(*s));
        *v = s;
        *cap = nc;
    }
    return &(*v)[(*n)++];
}

static int parse_ip_arg(struct ps *ps, struct lq_ipr *ip)
{
    if (!accept_word(ps, "ip"))
        return unexpected(ps, "ip");
    if (expect_op(ps, "("))
        return -EINVAL;
    const char *s;
    size_t n;
    if (parse_string(ps, &s, &n) || expect_op(ps, ")"))
        return -EINVAL;
    if (!lq__ip_parse(s, n, ip))
        return fail_plain(ps, "ip: invalid pattern: \"%s\"", s);
    return 0;
}

static int parse_line_filter(struct ps *ps, struct lq_stage *st, enum lq_filter_op op)
{
    st->kind = LQ_S_LINE_FILTER;
    st->fop = op;
    int cap = 0;
    do {
        if (st->nalts == cap) {
            cap = cap ? cap * 2 : 4;
            struct lq_alt *a = lq_alloc(ps->a, (size_t)cap * sizeof(*a));
            if (!a)
                return fail_plain(ps, "out of memory");
            if (st->nalts)
                memcpy(a, st->alts, (size_t)st->nalts * sizeof(*a));
            st->alts = a;
        }
        struct lq_alt *alt = &st->alts[st->nalts++];
        if (peek_word(ps, "ip")) {
            if (op != LQ_F_CONTAINS && op != LQ_F_NOT_CONTAINS)
                return fail_plain(ps, "ip: invalid operation: only |= and != support ip()");
            alt->is_ip = true;
            if (parse_ip_arg(ps, &alt->ip))
                return -EINVAL;
            continue;
        }
        if (parse_string(ps, &alt->s, &alt->n))
            return -EINVAL;
        if (op == LQ_F_RE || op == LQ_F_NOT_RE) {
            if (!(alt->re = compile_re(ps, alt->s, alt->n, false)))
                return -EINVAL;
        } else if (op == LQ_F_PATTERN || op == LQ_F_NOT_PATTERN) {
            char e[256];
            if (!(alt->pat = lq__pattern_compile(ps->a, alt->s, alt->n, true, e, sizeof(e))))
                return fail_plain(ps, "%s", e);
        }
    } while (accept_word(ps, "or"));
    /* an ip() after a regexp or pattern alternative is as wrong as one in front */
    for (int i = 0; i < st->nalts; i++)
        if (st->alts[i].is_ip && op != LQ_F_CONTAINS && op != LQ_F_NOT_CONTAINS)
            return fail_plain(ps, "ip: invalid operation");
    return 0;
}

static int parse_lfilter_or(struct ps *ps, struct lq_lfilter **out);

/* One comparison: name op value. */
static int parse_lfilter_atom(struct ps *ps, struct lq_lfilter **out)
{
    if (++ps->depth > LQ_MAX_DEPTH)
        return fail_plain(ps, "query too deeply nested");
    if (accept_op(ps, "(")) {
        int r = parse_lfilter_or(ps, out);
        ps->depth--;
        return r ? r : expect_op(ps, ")");
    }
    ps->depth--;
    struct lq_lfilter *f = lq_alloc(ps->a, sizeof(*f));
    if (!f)
        return fail_plain(ps, "out of memory");
    *out = f;
    if (parse_name(ps, &f->m.name))
        return -EINVAL;
    ws(ps);
    const char *opstart = ps->p;
    int kind; /* 0 string ops, 1 comparison */
    if (accept_op(ps, "=~")) {
        f->m.op = LQ_M_RE, kind = 0;
    } else if (accept_op(ps, "!~")) {
        f->m.op = LQ_M_NRE, kind = 0;
    } else if (accept_op(ps, "==")) {
        f->cmp = LQ_C_EQ, kind = 1;
    } else if (accept_op(ps, "!=")) {
        f->m.op = LQ_M_NEQ, f->cmp = LQ_C_NE, kind = 2;
    } else if (accept_op(ps, ">=")) {
        f->cmp = LQ_C_GE, kind = 1;
    } else if (accept_op(ps, "<=")) {
        f->cmp = LQ_C_LE, kind = 1;
    } else if (accept_op(ps, ">")) {
        f->cmp = LQ_C_GT, kind = 1;
    } else if (accept_op(ps, "<")) {
        f->cmp = LQ_C_LT, kind = 1;
    } else if (accept_op(ps, "=")) {
        f->m.op = LQ_M_EQ, f->cmp = LQ_C_EQ, kind = 2;
    } else {
        return unexpected(ps, "a label filter operator");
    }
    ws(ps);
    if (peek_word(ps, "ip")) {
        if (kind != 2)
            return unexpected(ps, NULL);
        f->kind = LQ_LF_IP;
        return parse_ip_arg(ps, &f->ip);
    }
    if (ps->p < ps->end && (*ps->p == '"' || *ps->p == '`')) {
        if (kind == 1) {
            ps->p = opstart;
            return unexpected(ps, NULL);
        }
        f->kind = LQ_LF_STR;
        size_t n;
        if (parse_string(ps, &f->m.value, &n))
            return -EINVAL;
        if (f->m.op == LQ_M_RE || f->m.op == LQ_M_NRE)
            if (!(f->m.re = compile_re(ps, f->m.value, n, true)))
                return -EINVAL;
        return 0;
    }
    if (f->m.op == LQ_M_RE || f->m.op == LQ_M_NRE)
        return unexpected(ps, "STRING");
    bool neg = false;
    if (accept_op(ps, "-"))
        neg = true;
    ws(ps);
    if (ps->p >= ps->end || !(isdigit((unsigned char)*ps->p) || *ps->p == '.'))
        return unexpected(ps, "NUMBER, DURATION or BYTES");
    const char *w = ps->p;
    size_t wn = number_word(ps);
    ps->p += wn;
    double v;
    char e[200];
    if (go_float(w, wn, &v)) {
        f->kind = LQ_LF_NUM;
    } else if (query_bytes(w, wn, &v)) {
        f->kind = LQ_LF_BYTES;
    } else if (wn > 1 && w[0] == '0' && strchr("xXoObB", w[1]) && !isalpha((unsigned char)w[wn - 1])) {
        return fail_plain(ps, "unable to parse literal as a float: %.*s", (int)wn, w);
    } else if (wn > 1 && w[0] == '0' && strchr("xXoObB", w[1])) {
        return fail_plain(ps, "unable to parse literal as a float: %.*s", (int)wn, w);
    } else {
        /* a duration: Go's units only */
        bool has_alpha = false;
        for (size_t i = 0; i < wn; i++)
            if (isalpha((unsigned char)w[i]))
                has_alpha = true;
        if (!has_alpha)
            return fail_plain(ps, "unable to parse literal as a float: %.*s", (int)wn, w);
        /* a byte unit in the wrong case (1mb) is not a token of the language */
        for (size_t i = 0; i < ARRAY_SIZE(byte_units); i++) {
            size_t un = strlen(byte_units[i].u);
            if (wn > un && strncasecmp(w + wn - un, byte_units[i].u, un) == 0 && un >= 2) {
                ps->p = w + wn - un + 1;
                return unexpected(ps, NULL);
            }
        }
        int64_t ns;
        if (dur_ns(w, wn, false, &ns, e, sizeof(e))) {
            char e2[160];
            if (dur_ns(w, wn, true, &ns, e2, sizeof(e2)))   /* the literal also takes d, w and y */
                return fail_plain(ps, "%s", e);
        }
        f->dur_ns = neg ? -ns : ns;
        v = (double)ns / 1e9;
        f->kind = LQ_LF_DUR;
    }
    f->num = neg ? -v : v;
    return 0;
}

static int parse_lfilter_and(struct ps *ps, struct lq_lfilter **out)
{
    if (parse_lfilter_atom(ps, out))
        return -EINVAL;
    for (;;) {
        ws(ps);
        if (accept_word(ps, "and")) {
        } else if (peek_op(ps, ",")) {
            /* a comma joins label filters, but ends a json/logfmt parameter list: only
               take it when a label filter follows */
            const char *save = ps->p;
            ps->p++;
            ws(ps);
            size_t id = peek_ident(ps);
            if (!id) {
                ps->p = save;
                return 0;
            }
        } else if (peek_ident(ps) && !peek_word(ps, "or") && !peek_word(ps, "offset") && !peek_word(ps, "by") &&
                   !peek_word(ps, "without") && !peek_word(ps, "unless") && !peek_word(ps, "bool")) {
            /* `a="1" b="2"`: juxtaposed filters are joined with and */
        } else {
            return 0;
        }
        struct lq_lfilter *f = lq_alloc(ps->a, sizeof(*f));
        if (!f)
            return fail_plain(ps, "out of memory");
        f->kind = LQ_LF_AND;
        f->l = *out;
        if (parse_lfilter_atom(ps, &f->r))
            return -EINVAL;
        *out = f;
    }
}

static int parse_lfilter_or(struct ps *ps, struct lq_lfilter **out)
{
    if (parse_lfilter_and(ps, out))
        return -EINVAL;
    while (accept_word(ps, "or")) {
        struct lq_lfilter *f = lq_alloc(ps->a, sizeof(*f));
        if (!f)
            return fail_plain(ps, "out of memory");
        f->kind = LQ_LF_OR;
        f->l = *out;
        if (parse_lfilter_and(ps, &f->r))
            return -EINVAL;
        *out = f;
    }
    return 0;
}

static int parse_tmpl(struct ps *ps, const char *text, struct lq_tmpl **out)
{
    char e[300];
    struct lq_tmpl *t = lq__tmpl_compile(text, e, sizeof(e));
    if (!t)
        return fail_plain(ps, "%s", e);
    struct lq_query *q = ps->q;
    if (q->ntmpls == q->captmpls) {
        int cap = q->captmpls ? q->captmpls * 2 : 4;
        struct lq_tmpl **v = realloc(q->tmpls, (size_t)cap * sizeof(*v));
        if (!v) {
            lq__tmpl_free(t);
            return fail_plain(ps, "out of memory");
        }
        q->tmpls = v;
        q->captmpls = cap;
    }
    q->tmpls[q->ntmpls++] = t;
    *out = t;
    return 0;
}

/* name [= "string" | = ident], ... for json, logfmt, label_format, drop, keep. */
static int parse_params(struct ps *ps, struct lq_stage *st, int kind)
{
    int cap = 0;
    for (;;) {
        ws(ps);
        if (!peek_ident(ps))
            break;
        /* a label filter, not a parameter, follows a pipe; parameters come first */
        if (st->nparams == cap) {
            cap = cap ? cap * 2 : 4;
            struct lq_param *v = lq_alloc(ps->a, (size_t)cap * sizeof(*v));
            if (!v)
                return fail_plain(ps, "out of memory");
            if (st->nparams)
                memcpy(v, st->params, (size_t)st->nparams * sizeof(*v));
            st->params = v;
        }
        struct lq_param *p = &st->params[st->nparams++];
        if (parse_name(ps, &p->name))
            return -EINVAL;
        if (kind == LQ_S_DROP || kind == LQ_S_KEEP) {
            ws(ps);
            if (peek_op(ps, "=") || peek_op(ps, "!=") || peek_op(ps, "=~") || peek_op(ps, "!~")) {
                ps->p -= strlen(p->name);
                if (parse_matcher(ps, &p->m, true))
                    return -EINVAL;
                p->has_matcher = true;
            }
        } else if (accept_op(ps, "=")) {
            ws(ps);
            if (ps->p < ps->end && (*ps->p == '"' || *ps->p == '`')) {
                size_t n;
                if (parse_string(ps, &p->value, &n))
                    return -EINVAL;
                if (kind == LQ_S_LABEL_FORMAT) {
                    p->is_template = true;
                    if (parse_tmpl(ps, p->value, &p->tmpl))
                        return -EINVAL;
                }
            } else if (kind == LQ_S_LABEL_FORMAT) {
                if (parse_name(ps, &p->value))
                    return -EINVAL;
            } else {
                return unexpected(ps, "STRING");
            }
        } else if (kind == LQ_S_LABEL_FORMAT) {
            return unexpected(ps, "=");
        } else if (kind == LQ_S_JSON || kind == LQ_S_LOGFMT) {
            /* `json a` extracts the field a */
            p->value = p->name;
        }
        if (!accept_op(ps, ","))
            break;
    }
    if ((kind == LQ_S_LABEL_FORMAT || kind == LQ_S_DROP || kind == LQ_S_KEEP) && !st->nparams)
        return unexpected(ps, "IDENTIFIER");
    return 0;
}

static int parse_pipeline(struct ps *ps, struct lq_node *n, bool allow_unwrap, int *cap)
{
    static const struct { const char *op; enum lq_filter_op f; } filters[] = {
        { "|=", LQ_F_CONTAINS }, { "!=", LQ_F_NOT_CONTAINS }, { "|~", LQ_F_RE }, { "!~", LQ_F_NOT_RE },
        { "|>", LQ_F_PATTERN }, { "!>", LQ_F_NOT_PATTERN },
    };
    int pcap = 0;
    for (;;) {
        ws(ps);
        bool matched = false;
        for (size_t i = 0; i < ARRAY_SIZE(filters); i++)
            if (accept_op(ps, filters[i].op)) {
                if (n->unwrap)
                    return fail(ps, "syntax error: unexpected %s", filters[i].op);
                struct lq_stage *st = add_stage(ps, &n->stages, &n->nstages, cap);
                if (!st || parse_line_filter(ps, st, filters[i].f))
                    return -EINVAL;
                matched = true;
                break;
            }
        if (matched)
            continue;
        if (!peek_op(ps, "|") || peek_op(ps, "||"))
            return 0;
        ps->p++;
        ws(ps);
        struct lq_stage tmp;
        memset(&tmp, 0, sizeof(tmp));
        if (n->unwrap) {
            /* after unwrap only label filters */
            struct lq_stage *st = add_stage(ps, &n->post, &n->npost, &pcap);
            if (!st)
                return -EINVAL;
            st->kind = LQ_S_LABEL_FILTER;
            if (parse_lfilter_or(ps, &st->lf))
                return -EINVAL;
            continue;
        }
        if (accept_word(ps, "json")) {
            tmp.kind = LQ_S_JSON;
            if (parse_params(ps, &tmp, LQ_S_JSON))
                return -EINVAL;
        } else if (accept_word(ps, "logfmt")) {
            tmp.kind = LQ_S_LOGFMT;
            for (;;) {
                if (accept_op(ps, "--strict"))
                    tmp.strict = true;
                else if (accept_op(ps, "--keep-empty"))
                    tmp.keep_empty = true;
                else
                    break;
            }
            if (parse_params(ps, &tmp, LQ_S_LOGFMT))
                return -EINVAL;
        } else if (accept_word(ps, "regexp")) {
            tmp.kind = LQ_S_REGEXP;
            const char *s;
            size_t sn;
            if (parse_string(ps, &s, &sn))
                return -EINVAL;
            if (!(tmp.re = compile_re(ps, s, sn, false)))
                return -EINVAL;
            tmp.src = s;
            uint32_t names = 0;
            pcre2_pattern_info(tmp.re, PCRE2_INFO_NAMECOUNT, &names);
            if (!names)
                return fail_plain(ps, "at least one named capture must be supplied");
        } else if (accept_word(ps, "pattern")) {
            tmp.kind = LQ_S_PATTERN;
            const char *s;
            size_t sn;
            char e[256];
            if (parse_string(ps, &s, &sn))
                return -EINVAL;
            if (!(tmp.pat = lq__pattern_compile(ps->a, s, sn, false, e, sizeof(e))))
                return fail_plain(ps, "%s", e);
            tmp.src = s;
        } else if (accept_word(ps, "unpack")) {
            tmp.kind = LQ_S_UNPACK;
        } else if (accept_word(ps, "line_format")) {
            tmp.kind = LQ_S_LINE_FORMAT;
            const char *s;
            size_t sn;
            if (parse_string(ps, &s, &sn) || parse_tmpl(ps, s, &tmp.tmpl))
                return -EINVAL;
            tmp.src = s;
        } else if (accept_word(ps, "label_format")) {
            tmp.kind = LQ_S_LABEL_FORMAT;
            if (parse_params(ps, &tmp, LQ_S_LABEL_FORMAT))
                return -EINVAL;
        } else if (accept_word(ps, "drop")) {
            tmp.kind = LQ_S_DROP;
            if (parse_params(ps, &tmp, LQ_S_DROP))
                return -EINVAL;
        } else if (accept_word(ps, "keep")) {
            tmp.kind = LQ_S_KEEP;
            if (parse_params(ps, &tmp, LQ_S_KEEP))
                return -EINVAL;
        } else if (accept_word(ps, "decolorize")) {
            tmp.kind = LQ_S_DECOLORIZE;
        } else if (accept_word(ps, "unwrap")) {
            if (!allow_unwrap)
                return fail(ps, "syntax error: unexpected unwrap");
            n->unwrap = true;
            n->unwrap_conv = LQ_CONV_NONE;
            if (accept_word(ps, "duration_seconds") || accept_word(ps, "duration"))
                n->unwrap_conv = LQ_CONV_DURATION;
            else if (accept_word(ps, "bytes"))
                n->unwrap_conv = LQ_CONV_BYTES;
            if (n->unwrap_conv != LQ_CONV_NONE) {
                if (expect_op(ps, "(") || parse_name(ps, &n->unwrap_label) || expect_op(ps, ")"))
                    return -EINVAL;
            } else {
                ws(ps);
                const char *q = ps->p;
                while (q < ps->end && (is_ident((unsigned char)*q) || *q == '.'))
                    q++;
                if (q == ps->p || !is_ident_start((unsigned char)*ps->p))
                    return unexpected(ps, "IDENTIFIER");
                n->unwrap_label = lq_strndup(ps->a, ps->p, (size_t)(q - ps->p));
                ps->p = q;
            }
            continue;
        } else if (peek_word(ps, "ip")) {
            return unexpected(ps, NULL);
        } else if (peek_ident(ps) || peek_op(ps, "(")) {
            tmp.kind = LQ_S_LABEL_FILTER;
            if (parse_lfilter_or(ps, &tmp.lf))
                return -EINVAL;
        } else {
            return unexpected(ps, NULL);
        }
        struct lq_stage *st = add_stage(ps, &n->stages, &n->nstages, cap);
        if (!st)
            return -EINVAL;
        *st = tmp;
    }
}

/* selector pipeline, without a range. */
static int parse_log(struct ps *ps, struct lq_node **out, bool allow_unwrap)
{
    struct lq_node *n = lq_alloc(ps->a, sizeof(*n));
    if (!n)
        return fail_plain(ps, "out of memory");
    n->kind = LQ_N_LOG;
    *out = n;
    int cap = 0;
    if (parse_selector(ps, n))
        return -EINVAL;
    return parse_pipeline(ps, n, allow_unwrap, &cap);
}

/* ---- metric expressions ---- */

static const struct { const char *name; enum lq_range_fn fn; bool unwrap; bool param; } range_fns[] = {
    { "count_over_time", LQ_R_COUNT, false, false }, { "rate", LQ_R_RATE, false, false },
    { "bytes_over_time", LQ_R_BYTES, false, false }, { "bytes_rate", LQ_R_BYTES_RATE, false, false },
    { "absent_over_time", LQ_R_ABSENT, false, false }, { "sum_over_time", LQ_R_SUM, true, false },
    { "avg_over_time", LQ_R_AVG, true, false }, { "min_over_time", LQ_R_MIN, true, false },
    { "max_over_time", LQ_R_MAX, true, false }, { "stdvar_over_time", LQ_R_STDVAR, true, false },
    { "stddev_over_time", LQ_R_STDDEV, true, false }, { "quantile_over_time", LQ_R_QUANTILE, true, true },
    { "first_over_time", LQ_R_FIRST, true, false }, { "last_over_time", LQ_R_LAST, true, false },
    { "rate_counter", LQ_R_RATE_COUNTER, true, false },
};

static const struct { const char *name; enum lq_vagg_op op; bool param; } vagg_ops[] = {
    { "sum", LQ_V_SUM, false }, { "avg", LQ_V_AVG, false }, { "min", LQ_V_MIN, false },
    { "max", LQ_V_MAX, false }, { "count", LQ_V_COUNT, false }, { "stddev", LQ_V_STDDEV, false },
    { "stdvar", LQ_V_STDVAR, false }, { "topk", LQ_V_TOPK, true }, { "bottomk", LQ_V_BOTTOMK, true },
    { "sort", LQ_V_SORT, false }, { "sort_desc", LQ_V_SORT_DESC, false },
    { "approx_topk", LQ_V_APPROX_TOPK, true },
};

const char *lq__range_fn_name(enum lq_range_fn fn);
const char *lq__range_fn_name(enum lq_range_fn fn)
{
    for (size_t i = 0; i < ARRAY_SIZE(range_fns); i++)
        if (range_fns[i].fn == fn)
            return range_fns[i].name;
    return "?";
}

const char *lq__vagg_name(enum lq_vagg_op op);
const char *lq__vagg_name(enum lq_vagg_op op)
{
    for (size_t i = 0; i < ARRAY_SIZE(vagg_ops); i++)
        if (vagg_ops[i].op == op)
            return vagg_ops[i].name;
    return "?";
}

static int parse_expr(struct ps *ps, int prec, struct lq_node **out);

static int parse_grouping(struct ps *ps, struct lq_grouping *g)
{
    if (accept_word(ps, "by"))
        g->without = false;
    else if (accept_word(ps, "without"))
        g->without = true;
    else
        return 0;
    g->present = true;
    if (expect_op(ps, "("))
        return -EINVAL;
    int cap = 0;
    while (!accept_op(ps, ")")) {
        if (g->n && expect_op(ps, ","))
            return -EINVAL;
        if (g->n == cap) {
            cap = cap ? cap * 2 : 4;
            const char **v = lq_alloc(ps->a, (size_t)cap * sizeof(*v));
            if (!v)
                return fail_plain(ps, "out of memory");
            if (g->n)
                memcpy(v, g->names, (size_t)g->n * sizeof(*v));
            g->names = v;
        }
        if (parse_name(ps, &g->names[g->n]))
            return -EINVAL;
        g->n++;
    }
    return 0;
}

static int parse_range_dur(struct ps *ps, int64_t *ns)
{
    ws(ps);
    const char *w = ps->p;
    while (ps->p < ps->end && (isalnum((unsigned char)*ps->p) || *ps->p == '.'))
        ps->p++;
    if (prom_duration(w, (size_t)(ps->p - w), ns) || *ns <= 0) {
        ps->p = w;
        return unexpected(ps, "DURATION");
    }
    return 0;
}

/* The log range of a range aggregation: `{..} pipeline [5m] [offset d]`, `({..}
 * pipeline)[5m]`, or `{..}[5m] pipeline`. */
static int parse_log_range(struct ps *ps, struct lq_node *rn)
{
    ws(ps);
    bool paren = false;
    if (accept_op(ps, "(")) {
        paren = true;
    }
    if (parse_log(ps, &rn->log, true))
        return -EINVAL;
    if (paren && expect_op(ps, ")"))
        return -EINVAL;
    if (expect_op(ps, "[") || parse_range_dur(ps, &rn->range_ns) || expect_op(ps, "]"))
        return -EINVAL;
    if (!paren && !rn->log->unwrap) {   /* {..}[5m] | pipeline */
        int cap = rn->log->nstages;
        if (parse_pipeline(ps, rn->log, true, &cap))
            return -EINVAL;
    }
    if (accept_word(ps, "offset")) {
        if (parse_range_dur(ps, &rn->offset_ns))
            return -EINVAL;
    }
    return 0;
}

static int parse_number_literal(struct ps *ps, double *v)
{
    ws(ps);
    const char *w = ps->p;
    size_t wn = number_word(ps);
    ps->p += wn;
    if (!go_float(w, wn, v))
        return fail_plain(ps, "unable to parse literal as a float: %.*s", (int)wn, w);
    return 0;
}

static bool peek_number(struct ps *ps)
{
    ws(ps);
    return ps->p < ps->end && (isdigit((unsigned char)*ps->p) || (*ps->p == '.' && ps->p + 1 < ps->end && isdigit((unsigned char)ps->p[1])));
}

static int parse_primary(struct ps *ps, struct lq_node **out)
{
    ws(ps);
    if (++ps->depth > LQ_MAX_DEPTH)
        return fail_plain(ps, "query too deeply nested");
    int r = 0;
    struct lq_node *n = NULL;
    if (accept_op(ps, "(")) {
        r = parse_expr(ps, 0, out);
        if (!r)
            r = expect_op(ps, ")");
        goto done;
    }
    if (peek_op(ps, "{")) {
        r = parse_log(ps, out, false);
        goto done;
    }
    if (peek_op(ps, "-") || peek_op(ps, "+")) {
        bool neg = *ps->p == '-';
        ps->p++;
        if (!peek_number(ps)) {
            r = unexpected(ps, "NUMBER");
            goto done;
        }
        n = lq_alloc(ps->a, sizeof(*n));
        if (!n)
            return fail_plain(ps, "out of memory");
        n->kind = LQ_N_NUM;
        r = parse_number_literal(ps, &n->num);
        if (neg)
            n->num = -n->num;
        *out = n;
        goto done;
    }
    if (peek_number(ps)) {
        n = lq_alloc(ps->a, sizeof(*n));
        if (!n)
            return fail_plain(ps, "out of memory");
        n->kind = LQ_N_NUM;
        r = parse_number_literal(ps, &n->num);
        *out = n;
        goto done;
    }
    n = lq_alloc(ps->a, sizeof(*n));
    if (!n)
        return fail_plain(ps, "out of memory");
    *out = n;
    for (size_t i = 0; i < ARRAY_SIZE(range_fns); i++) {
        if (!peek_word(ps, range_fns[i].name))
            continue;
        const char *fn_at = ps->p;
        ps->p += strlen(range_fns[i].name);
        if (!peek_op(ps, "(")) {
            ps->p = fn_at;
            r = unexpected(ps, NULL);
            goto done;
        }
        ps->p++;
        n->kind = LQ_N_RANGE;
        n->rfn = range_fns[i].fn;
        if (range_fns[i].param) {
            ws(ps);
            if (peek_op(ps, "-")) {
                r = fail(ps, "syntax error: unexpected -");
                goto done;
            }
            if (!peek_number(ps)) {
                r = unexpected(ps, "NUMBER");
                goto done;
            }
            if ((r = parse_number_literal(ps, &n->param)) || (r = expect_op(ps, ",")))
                goto done;
            n->has_param = true;
        }
        if ((r = parse_log_range(ps, n)) || (r = expect_op(ps, ")")))
            goto done;
        if ((r = parse_grouping(ps, &n->grp)))
            goto done;
        const char *name = range_fns[i].name;
        if (range_fns[i].unwrap && !n->log->unwrap) {
            r = fail_plain(ps, "invalid aggregation %s without unwrap", name);
            goto done;
        }
        if (!range_fns[i].unwrap && n->log->unwrap && n->rfn != LQ_R_RATE && n->rfn != LQ_R_ABSENT) {
            r = fail_plain(ps, "invalid aggregation %s with unwrap", name);
            goto done;
        }
        if (n->grp.present) {
            bool ok = n->log->unwrap && n->rfn != LQ_R_SUM && n->rfn != LQ_R_RATE && n->rfn != LQ_R_RATE_COUNTER;
            if (!ok) {
                r = fail_plain(ps, "grouping not allowed for %s aggregation", name);
                goto done;
            }
        }
        goto done;
    }
    for (size_t i = 0; i < ARRAY_SIZE(vagg_ops); i++) {
        if (!peek_word(ps, vagg_ops[i].name))
            continue;
        ps->p += strlen(vagg_ops[i].name);
        n->kind = LQ_N_VAGG;
        n->vop = vagg_ops[i].op;
        if ((r = parse_grouping(ps, &n->grp)) || (r = expect_op(ps, "(")))
            goto done;
        if (vagg_ops[i].param) {
            /* topk(k, expr): k must be a literal integer */
            const char *save = ps->p;
            if (peek_number(ps)) {
                if ((r = parse_number_literal(ps, &n->param)))
                    goto done;
                if (!accept_op(ps, ",")) {
                    ps->p = save;
                    r = fail_plain(ps, "parameter required for %s", vagg_ops[i].name);
                    goto done;
                }
                n->has_param = true;
            } else {
                r = fail_plain(ps, "parameter required for %s", vagg_ops[i].name);
                goto done;
            }
            if (n->param != floor(n->param) || n->param < 0 || n->param > 1e9) {
                r = fail_plain(ps, "invalid parameter %s(%g,", vagg_ops[i].name, n->param);
                goto done;
            }
        }
        if ((r = parse_expr(ps, 0, &n->arg)) || (r = expect_op(ps, ")")))
            goto done;
        if (n->arg->kind == LQ_N_LOG) {
            r = fail_plain(ps, "parse error : invalid aggregation %s: a log query", vagg_ops[i].name);
            goto done;
        }
        if (!n->grp.present && (r = parse_grouping(ps, &n->grp)))
            goto done;
        if (n->grp.present && (n->vop == LQ_V_SORT || n->vop == LQ_V_SORT_DESC || n->vop == LQ_V_APPROX_TOPK)) {
            r = fail_plain(ps, "grouping not allowed for %s aggregation", vagg_ops[i].name);
            goto done;
        }
        goto done;
    }
    if (accept_word(ps, "vector")) {
        n->kind = LQ_N_VECTOR;
        if ((r = expect_op(ps, "(")))
            goto done;
        bool neg = accept_op(ps, "-");
        if (!peek_number(ps)) {
            r = unexpected(ps, "NUMBER");
            goto done;
        }
        if ((r = parse_number_literal(ps, &n->num)) || (r = expect_op(ps, ")")))
            goto done;
        if (neg)
            n->num = -n->num;
        goto done;
    }
    if (accept_word(ps, "label_replace")) {
        n->kind = LQ_N_LABEL_REPLACE;
        const char *re;
        size_t ren, k;
        if ((r = expect_op(ps, "(")) || (r = parse_expr(ps, 0, &n->arg)) || (r = expect_op(ps, ",")) ||
            (r = parse_string(ps, &n->dst, &k)) || (r = expect_op(ps, ",")) ||
            (r = parse_string(ps, &n->repl, &k)) || (r = expect_op(ps, ",")) ||
            (r = parse_string(ps, &n->src, &k)) || (r = expect_op(ps, ",")) ||
            (r = parse_string(ps, &re, &ren)) || (r = expect_op(ps, ")")))
            goto done;
        n->re_src = re;
        if (!(n->re = compile_re(ps, re, ren, true))) {
            r = -EINVAL;
            goto done;
        }
        goto done;
    }
    r = unexpected(ps, NULL);
done:
    ps->depth--;
    return r;
}

static int binop_prec(enum lq_binop op)
{
    switch (op) {
    case LQ_B_OR: return 1;
    case LQ_B_AND: case LQ_B_UNLESS: return 2;
    case LQ_B_EQ: case LQ_B_NE: case LQ_B_GT: case LQ_B_GE: case LQ_B_LT: case LQ_B_LE: return 3;
    case LQ_B_ADD: case LQ_B_SUB: return 4;
    case LQ_B_MUL: case LQ_B_DIV: case LQ_B_MOD: return 5;
    case LQ_B_POW: return 6;
    }
    return 0;
}

static bool peek_binop(struct ps *ps, enum lq_binop *op, size_t *len)
{
    ws(ps);
    static const struct { const char *t; enum lq_binop op; bool word; } ops[] = {
        { "==", LQ_B_EQ, false }, { "!=", LQ_B_NE, false }, { ">=", LQ_B_GE, false }, { "<=", LQ_B_LE, false },
        { ">", LQ_B_GT, false }, { "<", LQ_B_LT, false }, { "+", LQ_B_ADD, false }, { "-", LQ_B_SUB, false },
        { "*", LQ_B_MUL, false }, { "/", LQ_B_DIV, false }, { "%", LQ_B_MOD, false }, { "^", LQ_B_POW, false },
        { "or", LQ_B_OR, true }, { "and", LQ_B_AND, true }, { "unless", LQ_B_UNLESS, true },
    };
    for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
        if (ops[i].word ? peek_word(ps, ops[i].t) : peek_op(ps, ops[i].t)) {
            *op = ops[i].op;
            *len = strlen(ops[i].t);
            return true;
        }
    }
    return false;
}

static int parse_label_list(struct ps *ps, const char ***names, int *n)
{
    if (expect_op(ps, "("))
        return -EINVAL;
    int cap = 0;
    while (!accept_op(ps, ")")) {
        if (*n && expect_op(ps, ","))
            return -EINVAL;
        if (*n == cap) {
            cap = cap ? cap * 2 : 4;
            const char **v = lq_alloc(ps->a, (size_t)cap * sizeof(*v));
            if (!v)
                return fail_plain(ps, "out of memory");
            if (*n)
                memcpy(v, *names, (size_t)*n * sizeof(*v));
            *names = v;
        }
        if (parse_name(ps, &(*names)[*n]))
            return -EINVAL;
        (*n)++;
    }
    return 0;
}

static bool is_scalar_node(const struct lq_node *n)
{
    if (n->kind == LQ_N_NUM)
        return true;
    if (n->kind == LQ_N_BIN)
        return is_scalar_node(n->lhs) && is_scalar_node(n->rhs);
    return false;
}

static int parse_expr(struct ps *ps, int minprec, struct lq_node **out)
{
    if (parse_primary(ps, out))
        return -EINVAL;
    for (;;) {
        enum lq_binop op;
        size_t len;
        if (!peek_binop(ps, &op, &len))
            return 0;
        int prec = binop_prec(op);
        if (prec < minprec)
            return 0;
        const char *op_at = ps->p;
        ps->p += len;
        struct lq_node *n = lq_alloc(ps->a, sizeof(*n));
        if (!n)
            return fail_plain(ps, "out of memory");
        n->kind = LQ_N_BIN;
        n->bop = op;
        n->lhs = *out;
        if (accept_word(ps, "bool")) {
            if (prec != 3)
                return fail(ps, "syntax error: unexpected bool");
            n->ret_bool = true;
        }
        if (accept_word(ps, "on"))
            n->on = true;
        else if (accept_word(ps, "ignoring"))
            n->ignoring = true;
        if ((n->on || n->ignoring) && parse_label_list(ps, &n->match_labels, &n->nmatch))
            return -EINVAL;
        if (accept_word(ps, "group_left"))
            n->group = 1;
        else if (accept_word(ps, "group_right"))
            n->group = 2;
        if (n->group) {
            if (peek_op(ps, "(") && parse_label_list(ps, &n->include, &n->ninclude))
                return -EINVAL;
            if (op == LQ_B_OR || op == LQ_B_AND || op == LQ_B_UNLESS)
                return fail_plain(ps, "no grouping allowed for \"%.*s\" operation", (int)len, op_at);
        }
        ws(ps);
        if (peek_word(ps, "bool"))
            return fail(ps, "syntax error: unexpected bool");
        /* ^ is right-associative: parse its right side at the same level */
        if (parse_expr(ps, op == LQ_B_POW ? prec : prec + 1, &n->rhs))
            return -EINVAL;
        if (n->lhs->kind == LQ_N_LOG || n->rhs->kind == LQ_N_LOG)
            return fail_plain(ps, "parse error : unexpected log query in a binary operation");
        if (op == LQ_B_OR || op == LQ_B_AND || op == LQ_B_UNLESS) {
            if (is_scalar_node(n->lhs))
                return fail_plain(ps, "parse error : unexpected literal for left leg of logical/set binary operation (%.*s): %g",
                                  (int)len, op_at, n->lhs->num);
            if (is_scalar_node(n->rhs))
                return fail_plain(ps, "parse error : unexpected literal for right leg of logical/set binary operation (%.*s): %g",
                                  (int)len, op_at, n->rhs->num);
        }
        *out = n;
    }
}

bool lq_is_metric(const struct lq_query *q)
{
    return q->root->kind != LQ_N_LOG;
}

int lq_parse(const char *text, size_t len, struct lq_query **out, char *err, size_t errlen)
{
    if (len > LQ_MAX_QUERY) {
        snprintf(err, errlen, "query too long: %zu bytes (at most %d)", len, LQ_MAX_QUERY);
        return -EINVAL;
    }
    struct lq_query *q = calloc(1, sizeof(*q));
    if (!q || !(q->arena = calloc(1, sizeof(*q->arena)))) {
        free(q);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    struct ps ps = { .s = text, .p = text, .end = text + len, .q = q, .a = q->arena, .err = err, .errlen = errlen };
    int r = parse_expr(&ps, 0, &q->root);
    if (!r && !at_end(&ps))
        r = unexpected(&ps, NULL);
    if (!r && q->root->kind == LQ_N_LOG && q->root->unwrap)
        r = fail_plain(&ps, "parse error : unwrap is only allowed in a range aggregation");
    if (r) {
        lq_query_free(&q);
        return -EINVAL;
    }
    *out = q;
    return 0;
}

/* ---- format_query: the canonical text of a query ---- */

static void fmt_str(struct buf *b, const char *s)
{
    buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_putc(b, '\\');
        if (*p == '\n') {
            buf_puts(b, "\\n");
            continue;
        }
        if (*p == '\t') {
            buf_puts(b, "\\t");
            continue;
        }
        buf_putc(b, (char)*p);
    }
    buf_putc(b, '"');
}

static void fmt_dur(struct buf *b, int64_t ns)
{
    static const struct { const char *u; int64_t ns; } units[] = {
        { "y", 365LL * 86400000000000 }, { "w", 7LL * 86400000000000 }, { "d", 86400000000000 },
        { "h", 3600000000000 }, { "m", 60000000000 }, { "s", 1000000000 }, { "ms", 1000000 },
        { "us", 1000 }, { "ns", 1 },
    };
    if (!ns) {
        buf_puts(b, "0s");
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(units); i++)
        if (ns >= units[i].ns) {
            buf_printf(b, "%lld%s", (long long)(ns / units[i].ns), units[i].u);
            ns %= units[i].ns;
        }
}

static const char *mop(enum lq_mop op)
{
    static const char *const s[] = { "=", "!=", "=~", "!~" };
    return s[op];
}

static const char *cmp_s(enum lq_cmp c)
{
    static const char *const s[] = { "==", "!=", ">", ">=", "<", "<=" };
    return s[c];
}

static void fmt_ip(struct buf *b, const struct lq_alt *a, const struct lq_ipr *ip)
{
    (void)a;
    char lo[64], hi[64];
    inet_ntop(ip->family, ip->lo, lo, sizeof(lo));
    inet_ntop(ip->family, ip->hi, hi, sizeof(hi));
    buf_puts(b, "ip(\"");
    buf_puts(b, lo);
    if (strcmp(lo, hi)) {
        buf_putc(b, '-');
        buf_puts(b, hi);
    }
    buf_puts(b, "\")");
}

static void fmt_lfilter(struct buf *b, const struct lq_lfilter *f)
{
    switch (f->kind) {
    case LQ_LF_AND:
    case LQ_LF_OR:
        buf_putc(b, '(');
        fmt_lfilter(b, f->l);
        buf_puts(b, f->kind == LQ_LF_AND ? " and " : " or ");
        fmt_lfilter(b, f->r);
        buf_putc(b, ')');
        return;
    case LQ_LF_STR:
        buf_printf(b, "%s%s", f->m.name, mop(f->m.op));
        fmt_str(b, f->m.value);
        return;
    case LQ_LF_IP:
        buf_printf(b, "%s%s", f->m.name, f->cmp == LQ_C_NE ? "!=" : "=");
        fmt_ip(b, NULL, &f->ip);
        return;
    case LQ_LF_NUM:
        buf_printf(b, "%s%s", f->m.name, cmp_s(f->cmp));
        buf_put_float(b, f->num, 'g');
        return;
    case LQ_LF_DUR:
        buf_printf(b, "%s%s", f->m.name, cmp_s(f->cmp));
        if (f->dur_ns < 0)
            buf_putc(b, '-');
        fmt_dur(b, f->dur_ns < 0 ? -f->dur_ns : f->dur_ns);
        return;
    case LQ_LF_BYTES:
        buf_printf(b, "%s%s%.0fB", f->m.name, cmp_s(f->cmp), f->num);
        return;
    }
}

static void fmt_stages(struct buf *b, const struct lq_stage *st, int n)
{
    static const char *const fops[] = { "|=", "!=", "|~", "!~", "|>", "!>" };
    for (int i = 0; i < n; i++) {
        const struct lq_stage *s = &st[i];
        switch (s->kind) {
        case LQ_S_LINE_FILTER:
            buf_printf(b, " %s ", fops[s->fop]);
            for (int k = 0; k < s->nalts; k++) {
                if (k)
                    buf_puts(b, " or ");
                if (s->alts[k].is_ip)
                    fmt_ip(b, &s->alts[k], &s->alts[k].ip);
                else
                    fmt_str(b, s->alts[k].s);
            }
            break;
        case LQ_S_JSON:
        case LQ_S_LOGFMT:
            buf_puts(b, s->kind == LQ_S_JSON ? " | json" : " | logfmt");
            if (s->strict)
                buf_puts(b, " --strict");
            if (s->keep_empty)
                buf_puts(b, " --keep-empty");
            for (int k = 0; k < s->nparams; k++) {
                buf_printf(b, "%s%s=", k ? "," : " ", s->params[k].name);
                fmt_str(b, s->params[k].value);
            }
            break;
        case LQ_S_REGEXP:
            buf_puts(b, " | regexp ");
            fmt_str(b, s->src);
            break;
        case LQ_S_PATTERN:
            buf_puts(b, " | pattern ");
            fmt_str(b, s->src);
            break;
        case LQ_S_UNPACK:
            buf_puts(b, " | unpack");
            break;
        case LQ_S_LABEL_FILTER:
            buf_puts(b, " | ");
            fmt_lfilter(b, s->lf);
            break;
        case LQ_S_LINE_FORMAT:
            buf_puts(b, " | line_format ");
            fmt_str(b, s->src);
            break;
        case LQ_S_LABEL_FORMAT:
        case LQ_S_DROP:
        case LQ_S_KEEP:
            buf_puts(b, s->kind == LQ_S_LABEL_FORMAT ? " | label_format " : s->kind == LQ_S_DROP ? " | drop " : " | keep ");
            for (int k = 0; k < s->nparams; k++) {
                const struct lq_param *p = &s->params[k];
                if (k)
                    buf_puts(b, ",");
                if (p->has_matcher) {
                    buf_printf(b, "%s%s", p->m.name, mop(p->m.op));
                    fmt_str(b, p->m.value);
                } else if (s->kind == LQ_S_LABEL_FORMAT) {
                    buf_printf(b, "%s=", p->name);
                    if (p->is_template)
                        fmt_str(b, p->value);
                    else
                        buf_puts(b, p->value);
                } else {
                    buf_puts(b, p->name);
                }
            }
            break;
        case LQ_S_DECOLORIZE:
            buf_puts(b, " | decolorize");
            break;
        }
    }
}

static void fmt_grouping(struct buf *b, const struct lq_grouping *g)
{
    if (!g->present)
        return;
    buf_puts(b, g->without ? " without (" : " by (");
    for (int i = 0; i < g->n; i++)
        buf_printf(b, "%s%s", i ? "," : "", g->names[i]);
    buf_putc(b, ')');
}

void lq_format(struct buf *b, const struct lq_node *n)
{
    static const char *const bops[] = { "or", "and", "unless", "==", "!=", ">", ">=", "<", "<=", "+", "-", "*", "/", "%", "^" };
    switch (n->kind) {
    case LQ_N_LOG:
        buf_putc(b, '{');
        for (int i = 0; i < n->nmatchers; i++) {
            buf_printf(b, "%s%s%s", i ? ", " : "", n->matchers[i].name, mop(n->matchers[i].op));
            fmt_str(b, n->matchers[i].value);
        }
        buf_putc(b, '}');
        fmt_stages(b, n->stages, n->nstages);
        if (n->unwrap) {
            buf_printf(b, " | unwrap %s%s%s", n->unwrap_conv == LQ_CONV_DURATION ? "duration(" : n->unwrap_conv == LQ_CONV_BYTES ? "bytes(" : "",
                       n->unwrap_label, n->unwrap_conv != LQ_CONV_NONE ? ")" : "");
            fmt_stages(b, n->post, n->npost);
        }
        return;
    case LQ_N_RANGE:
        buf_printf(b, "%s(", lq__range_fn_name(n->rfn));
        if (n->has_param) {
            buf_put_float(b, n->param, 'g');
            buf_puts(b, ", ");
        }
        lq_format(b, n->log);
        buf_putc(b, '[');
        fmt_dur(b, n->range_ns);
        buf_putc(b, ']');
        if (n->offset_ns) {
            buf_puts(b, " offset ");
            fmt_dur(b, n->offset_ns);
        }
        buf_putc(b, ')');
        fmt_grouping(b, &n->grp);
        return;
    case LQ_N_VAGG:
        buf_puts(b, lq__vagg_name(n->vop));
        fmt_grouping(b, &n->grp);
        buf_putc(b, '(');
        if (n->has_param) {
            buf_put_float(b, n->param, 'g');
            buf_puts(b, ", ");
        }
        lq_format(b, n->arg);
        buf_putc(b, ')');
        return;
    case LQ_N_BIN:
        buf_putc(b, '(');
        lq_format(b, n->lhs);
        buf_printf(b, " %s ", bops[n->bop]);
        if (n->ret_bool)
            buf_puts(b, "bool ");
        if (n->on || n->ignoring) {
            buf_puts(b, n->on ? "on (" : "ignoring (");
            for (int i = 0; i < n->nmatch; i++)
                buf_printf(b, "%s%s", i ? "," : "", n->match_labels[i]);
            buf_puts(b, ") ");
        }
        if (n->group) {
            buf_puts(b, n->group == 1 ? "group_left (" : "group_right (");
            for (int i = 0; i < n->ninclude; i++)
                buf_printf(b, "%s%s", i ? "," : "", n->include[i]);
            buf_puts(b, ") ");
        }
        lq_format(b, n->rhs);
        buf_putc(b, ')');
        return;
    case LQ_N_NUM:
        buf_put_float(b, n->num, 'g');
        return;
    case LQ_N_VECTOR:
        buf_puts(b, "vector(");
        buf_put_float(b, n->num, 'g');
        buf_putc(b, ')');
        return;
    case LQ_N_LABEL_REPLACE:
        buf_puts(b, "label_replace(");
        lq_format(b, n->arg);
        buf_puts(b, ", ");
        fmt_str(b, n->dst);
        buf_puts(b, ", ");
        fmt_str(b, n->repl);
        buf_puts(b, ", ");
        fmt_str(b, n->src);
        buf_puts(b, ", ");
        fmt_str(b, n->re_src);
        buf_putc(b, ')');
        return;
    }
}
