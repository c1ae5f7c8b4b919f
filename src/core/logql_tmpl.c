/* logql_tmpl.c - line_format and label_format templates: Go text/template (core's
 * engine) with the entry's labels as dot and Loki's template functions: __line__,
 * __timestamp__, ToLower/ToUpper/Replace/Trim*, the sprig string functions Loki
 * documents (lower, upper, title, trunc, substr, replace, repeat, contains,
 * hasPrefix, hasSuffix, indent, nindent, default, regexReplaceAll,
 * regexReplaceAllLiteral, urlencode, urldecode, b64enc, b64dec, alignLeft,
 * alignRight), and the math ones (add, sub, mul, div, mod, addf, subf, mulf, divf,
 * max, min, maxf, minf, ceil, floor, round, int, float64, unixEpoch).
 */
#include "core/logql.h"
#include "core/gotmpl.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lq_tmpl {
    struct gt_set *set;
};

/* The entry being formatted, for __line__ and __timestamp__ (templates run on the
 * querying thread, one entry at a time). */
static __thread const char *tl_line;
static __thread size_t tl_line_n;
static __thread int64_t tl_ts;

static struct gt_value *str_n(struct gt_arena *a, const char *s, size_t n)
{
    struct gt_value *v = gt_str(a, "");
    if (v && !(v->s = gt_strdup(a, s, n)))
        return NULL;
    return v;
}

static bool want_n(struct gt_value **v, size_t n, size_t want, char *err, size_t errlen)
{
    (void)v;
    if (n != want) {
        snprintf(err, errlen, "wrong number of args: want %zu got %zu", want, n);
        return false;
    }
    return true;
}

static const char *as_str(struct gt_arena *a, struct gt_value *v)
{
    if (v->k == GT_STR)
        return v->s;
    struct buf b = { 0 };
    gt_print(&b, v);
    const char *s = gt_strdup(a, b.len ? buf_head(&b) : "", buf_used(&b));
    buf_free(&b);
    return s ? s : "";
}

static double as_num(struct gt_value *v)
{
    if (v->k == GT_NUM)
        return v->num;
    if (v->k == GT_BOOL)
        return v->b;
    if (v->k == GT_STR)
        return strtod(v->s, NULL);
    return 0;
}

static struct gt_value *f_line(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    (void)v;
    if (!want_n(v, n, 0, e, el))
        return NULL;
    return str_n(a, tl_line ? tl_line : "", tl_line_n);
}

static struct gt_value *f_ts(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    (void)v;
    if (!want_n(v, n, 0, e, el))
        return NULL;
    /* Go prints a time.Time as "2006-01-02 15:04:05.999999999 +0000 UTC" */
    time_t s = (time_t)(tl_ts / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char out[80], frac[16] = "";
    long ns = (long)(tl_ts % 1000000000);
    if (ns) {
        snprintf(frac, sizeof(frac), ".%09ld", ns);
        size_t k = strlen(frac);
        while (k > 1 && frac[k - 1] == '0')
            frac[--k] = 0;
    }
    snprintf(out, sizeof(out), "%04d-%02d-%02d %02d:%02d:%02d%s +0000 UTC", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return gt_str(a, out);
}

static struct gt_value *case_map(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el, int up)
{
    if (!want_n(v, n, 1, e, el))
        return NULL;
    const char *s = as_str(a, v[0]);
    size_t len = strlen(s);
    char *o = gt_alloc(a, len + 1);
    if (!o)
        return NULL;
    for (size_t i = 0; i < len; i++)
        o[i] = (char)(up ? toupper((unsigned char)s[i]) : tolower((unsigned char)s[i]));
    return str_n(a, o, len);
}

static struct gt_value *f_lower(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    return case_map(a, v, n, e, el, 0);
}

static struct gt_value *f_upper(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    return case_map(a, v, n, e, el, 1);
}

/* strings.Replace(s, old, new, n) and sprig's replace old new s */
static struct gt_value *replace_n(struct gt_arena *a, const char *s, const char *old, const char *nw, long limit)
{
    struct buf b = { 0 };
    size_t ol = strlen(old), nl = strlen(nw);
    long done = 0;
    const char *p = s;
    if (ol == 0) {
        buf_puts(&b, s);
    } else {
        const char *f;
        while ((limit < 0 || done < limit) && (f = strstr(p, old))) {
            buf_append(&b, p, (size_t)(f - p));
            buf_append(&b, nw, nl);
            p = f + ol;
            done++;
        }
        buf_puts(&b, p);
    }
    struct gt_value *r = str_n(a, b.len ? buf_head(&b) : "", buf_used(&b));
    buf_free(&b);
    return r;
}

static struct gt_value *f_Replace(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 4, e, el))
        return NULL;
    return replace_n(a, as_str(a, v[0]), as_str(a, v[1]), as_str(a, v[2]), (long)as_num(v[3]));
}

static struct gt_value *f_replace(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 3, e, el))
        return NULL;
    return replace_n(a, as_str(a, v[2]), as_str(a, v[0]), as_str(a, v[1]), -1);
}

static struct gt_value *trim_impl(struct gt_arena *a, const char *s, const char *cut, bool left, bool right)
{
    size_t st = 0, en = strlen(s);
    while (left && st < en && strchr(cut, s[st]))
        st++;
    while (right && en > st && strchr(cut, s[en - 1]))
        en--;
    return str_n(a, s + st, en - st);
}

static struct gt_value *f_Trim(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    return trim_impl(a, as_str(a, v[0]), as_str(a, v[1]), true, true);
}

static struct gt_value *f_TrimLeft(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    return trim_impl(a, as_str(a, v[0]), as_str(a, v[1]), true, false);
}

static struct gt_value *f_TrimRight(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    return trim_impl(a, as_str(a, v[0]), as_str(a, v[1]), false, true);
}

static struct gt_value *f_TrimSpace(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 1, e, el))
        return NULL;
    return trim_impl(a, as_str(a, v[0]), " \t\r\n\v\f", true, true);
}

static struct gt_value *f_TrimPrefix(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    const char *s = as_str(a, v[0]), *p = as_str(a, v[1]);
    size_t pl = strlen(p);
    return gt_str(a, strncmp(s, p, pl) == 0 ? s + pl : s);
}

static struct gt_value *f_TrimSuffix(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    const char *s = as_str(a, v[0]), *p = as_str(a, v[1]);
    size_t sl = strlen(s), pl = strlen(p);
    if (sl >= pl && strcmp(s + sl - pl, p) == 0)
        return str_n(a, s, sl - pl);
    return gt_str(a, s);
}

/* sprig's trimPrefix/trimSuffix/trimAll take the cut first */
static struct gt_value *f_trimPrefix(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    struct gt_value *w[2] = { v[1], v[0] };
    return f_TrimPrefix(a, w, 2, e, el);
}

static struct gt_value *f_trimSuffix(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    struct gt_value *w[2] = { v[1], v[0] };
    return f_TrimSuffix(a, w, 2, e, el);
}

static struct gt_value *f_trimAll(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    return trim_impl(a, as_str(a, v[1]), as_str(a, v[0]), true, true);
}

static struct gt_value *f_trunc(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    long k = (long)as_num(v[0]);
    const char *s = as_str(a, v[1]);
    long len = (long)strlen(s);
    if (k >= 0)
        return str_n(a, s, (size_t)(k < len ? k : len));
    return gt_str(a, -k < len ? s + len + k : s);
}

static struct gt_value *f_substr(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 3, e, el))
        return NULL;
    long st = (long)as_num(v[0]), en = (long)as_num(v[1]);
    const char *s = as_str(a, v[2]);
    long len = (long)strlen(s);
    if (st < 0)
        return gt_str(a, s);
    if (en < 0 || en > len)
        en = len;
    if (st > en)
        return gt_str(a, "");
    return str_n(a, s + st, (size_t)(en - st));
}

static struct gt_value *f_contains(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    return gt_bool(a, strstr(as_str(a, v[1]), as_str(a, v[0])) != NULL);
}

static struct gt_value *f_hasPrefix(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    const char *p = as_str(a, v[0]);
    return gt_bool(a, strncmp(as_str(a, v[1]), p, strlen(p)) == 0);
}

static struct gt_value *f_hasSuffix(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    const char *p = as_str(a, v[0]), *s = as_str(a, v[1]);
    size_t pl = strlen(p), sl = strlen(s);
    return gt_bool(a, sl >= pl && strcmp(s + sl - pl, p) == 0);
}

static struct gt_value *f_repeat(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    long k = (long)as_num(v[0]);
    const char *s = as_str(a, v[1]);
    struct buf b = { 0 };
    for (long i = 0; i < k && b.len < GT_MAX_OUTPUT; i++)
        buf_puts(&b, s);
    struct gt_value *r = str_n(a, b.len ? buf_head(&b) : "", buf_used(&b));
    buf_free(&b);
    return r;
}

static struct gt_value *indent_impl(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el, bool nl)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    long k = (long)as_num(v[0]);
    const char *s = as_str(a, v[1]);
    struct buf b = { 0 };
    if (nl)
        buf_putc(&b, '\n');
    for (long i = 0; i < k && i < 1000; i++)
        buf_putc(&b, ' ');
    for (const char *p = s; *p; p++) {
        buf_putc(&b, *p);
        if (*p == '\n')
            for (long i = 0; i < k && i < 1000; i++)
                buf_putc(&b, ' ');
    }
    struct gt_value *r = str_n(a, b.len ? buf_head(&b) : "", buf_used(&b));
    buf_free(&b);
    return r;
}

static struct gt_value *f_indent(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    return indent_impl(a, v, n, e, el, false);
}

static struct gt_value *f_nindent(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    return indent_impl(a, v, n, e, el, true);
}

static struct gt_value *f_default(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    (void)a;
    if (n == 1)
        return v[0];
    if (!want_n(v, n, 2, e, el))
        return NULL;
    return gt_truth(v[1]) ? v[1] : v[0];
}

static struct gt_value *re_replace(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el, bool literal)
{
    if (!want_n(v, n, 3, e, el))
        return NULL;
    const char *pat = as_str(a, v[0]), *s = as_str(a, v[1]), *repl = as_str(a, v[2]);
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
    if (!re) {
        snprintf(e, el, "error parsing regexp: %s", pat);
        return NULL;
    }
    PCRE2_SIZE outlen = strlen(s) * 4 + strlen(repl) * 8 + 256;
    char *out = malloc(outlen);
    uint32_t opts = PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_UNSET_EMPTY | PCRE2_SUBSTITUTE_UNKNOWN_UNSET;
    if (literal)
        opts |= PCRE2_SUBSTITUTE_LITERAL;
    int r = out ? pcre2_substitute(re, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, opts, NULL, NULL, (PCRE2_SPTR)repl,
                                   PCRE2_ZERO_TERMINATED, (PCRE2_UCHAR *)out, &outlen)
                : -1;
    pcre2_code_free(re);
    struct gt_value *res = r >= 0 ? str_n(a, out, outlen) : NULL;
    if (r < 0)
        snprintf(e, el, "regexReplaceAll failed");
    free(out);
    return res;
}

static struct gt_value *f_reRepl(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    return re_replace(a, v, n, e, el, false);
}

static struct gt_value *f_reReplLit(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    return re_replace(a, v, n, e, el, true);
}

static struct gt_value *f_urlencode(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 1, e, el))
        return NULL;
    struct buf b = { 0 };
    gt_url_query_escape(&b, as_str(a, v[0]));
    struct gt_value *r = str_n(a, b.len ? buf_head(&b) : "", buf_used(&b));
    buf_free(&b);
    return r;
}

static struct gt_value *f_urldecode(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 1, e, el))
        return NULL;
    const char *s = as_str(a, v[0]);
    size_t len = strlen(s), o = 0;
    char *out = gt_alloc(a, len + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) && isxdigit((unsigned char)s[i + 2])) {
            char h[3] = { s[i + 1], s[i + 2], 0 };
            out[o++] = (char)strtol(h, NULL, 16);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return str_n(a, out, o);
}

static struct gt_value *f_b64enc(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 1, e, el))
        return NULL;
    const char *s = as_str(a, v[0]);
    size_t len = strlen(s);
    char *out = gt_alloc(a, 4 * ((len + 2) / 3) + 2);
    if (!out)
        return NULL;
    int k = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
    return str_n(a, out, (size_t)k);
}

static struct gt_value *f_b64dec(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    if (!want_n(v, n, 1, e, el))
        return NULL;
    const char *s = as_str(a, v[0]);
    size_t len = strlen(s);
    char *out = gt_alloc(a, len + 3);
    if (!out)
        return NULL;
    int k = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
    if (k < 0)
        return gt_str(a, "");
    while (len && s[len - 1] == '=' && k > 0) {
        k--;
        len--;
    }
    return str_n(a, out, (size_t)k);
}

static struct gt_value *align(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el, bool left)
{
    if (!want_n(v, n, 2, e, el))
        return NULL;
    long k = (long)as_num(v[0]);
    const char *s = as_str(a, v[1]);
    long len = (long)strlen(s);
    if (k < 0)
        k = 0;
    if (k > 4096)
        k = 4096;
    char *out = gt_alloc(a, (size_t)k + 1);
    if (!out)
        return NULL;
    if (len >= k) {
        memcpy(out, left ? s : s + len - k, (size_t)k);
    } else if (left) {
        memcpy(out, s, (size_t)len);
        memset(out + len, ' ', (size_t)(k - len));
    } else {
        memset(out, ' ', (size_t)(k - len));
        memcpy(out + k - len, s, (size_t)len);
    }
    return str_n(a, out, (size_t)k);
}

static struct gt_value *f_alignLeft(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    return align(a, v, n, e, el, true);
}

static struct gt_value *f_alignRight(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    return align(a, v, n, e, el, false);
}

enum { M_ADD, M_SUB, M_MUL, M_DIV, M_MOD, M_MAX, M_MIN };

static struct gt_value *math2(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el, int op, bool fl)
{
    if (n < 2) {
        snprintf(e, el, "wrong number of args: want at least 2 got %zu", n);
        return NULL;
    }
    double acc = as_num(v[0]);
    if (!fl)
        acc = trunc(acc);
    for (size_t i = 1; i < n; i++) {
        double x = fl ? as_num(v[i]) : trunc(as_num(v[i]));
        switch (op) {
        case M_ADD: acc += x; break;
        case M_SUB: acc -= x; break;
        case M_MUL: acc *= x; break;
        case M_DIV:
            if (x == 0 && !fl) {
                snprintf(e, el, "runtime error: integer divide by zero");
                return NULL;
            }
            acc = fl ? acc / x : trunc(acc / x);
            break;
        case M_MOD:
            if (x == 0) {
                snprintf(e, el, "runtime error: integer divide by zero");
                return NULL;
            }
            acc = fmod(acc, x);
            break;
        case M_MAX: acc = x > acc ? x : acc; break;
        case M_MIN: acc = x < acc ? x : acc; break;
        }
    }
    return gt_num(a, acc);
}

#define MATHF(name, op, fl)                                                                          \
    static struct gt_value *name(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el) \
    {                                                                                                \
        return math2(a, v, n, e, el, op, fl);                                                        \
    }
MATHF(f_add, M_ADD, false)
MATHF(f_sub, M_SUB, false)
MATHF(f_mul, M_MUL, false)
MATHF(f_div, M_DIV, false)
MATHF(f_mod, M_MOD, false)
MATHF(f_max, M_MAX, false)
MATHF(f_min, M_MIN, false)
MATHF(f_addf, M_ADD, true)
MATHF(f_subf, M_SUB, true)
MATHF(f_mulf, M_MUL, true)
MATHF(f_divf, M_DIV, true)
MATHF(f_maxf, M_MAX, true)
MATHF(f_minf, M_MIN, true)

#define MATH1(name, fn)                                                                              \
    static struct gt_value *name(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el) \
    {                                                                                                \
        if (!want_n(v, n, 1, e, el))                                                                 \
            return NULL;                                                                             \
        return gt_num(a, fn(as_num(v[0])));                                                          \
    }
MATH1(f_ceil, ceil)
MATH1(f_floor, floor)
MATH1(f_round, round)
MATH1(f_int, trunc)

static double ident(double x)
{
    return x;
}
MATH1(f_float, ident)

static struct gt_value *f_unixEpoch(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t el)
{
    (void)v;
    if (n > 1) {
        snprintf(e, el, "wrong number of args");
        return NULL;
    }
    return gt_num(a, (double)(tl_ts / 1000000000));
}

struct lq_tmpl *lq__tmpl_compile(const char *text, char *err, size_t errlen)
{
    static const struct { const char *name; gt_func fn; } fns[] = {
        { "__line__", f_line }, { "__timestamp__", f_ts }, { "ToLower", f_lower }, { "ToUpper", f_upper },
        { "lower", f_lower }, { "upper", f_upper }, { "Replace", f_Replace }, { "replace", f_replace },
        { "Trim", f_Trim }, { "TrimLeft", f_TrimLeft }, { "TrimRight", f_TrimRight },
        { "TrimSpace", f_TrimSpace }, { "trim", f_TrimSpace }, { "TrimPrefix", f_TrimPrefix },
        { "TrimSuffix", f_TrimSuffix }, { "trimPrefix", f_trimPrefix }, { "trimSuffix", f_trimSuffix },
        { "trimAll", f_trimAll }, { "trunc", f_trunc }, { "substr", f_substr }, { "contains", f_contains },
        { "hasPrefix", f_hasPrefix }, { "hasSuffix", f_hasSuffix }, { "repeat", f_repeat },
        { "indent", f_indent }, { "nindent", f_nindent }, { "default", f_default },
        { "regexReplaceAll", f_reRepl }, { "regexReplaceAllLiteral", f_reReplLit },
        { "urlencode", f_urlencode }, { "urldecode", f_urldecode }, { "b64enc", f_b64enc },
        { "b64dec", f_b64dec }, { "alignLeft", f_alignLeft }, { "alignRight", f_alignRight },
        { "add", f_add }, { "sub", f_sub }, { "mul", f_mul }, { "div", f_div }, { "mod", f_mod },
        { "max", f_max }, { "min", f_min }, { "addf", f_addf }, { "subf", f_subf }, { "mulf", f_mulf },
        { "divf", f_divf }, { "maxf", f_maxf }, { "minf", f_minf }, { "ceil", f_ceil }, { "floor", f_floor },
        { "round", f_round }, { "int", f_int }, { "float64", f_float }, { "unixEpoch", f_unixEpoch },
    };
    struct lq_tmpl *t = calloc(1, sizeof(*t));
    if (!t || !(t->set = gt_set_new(false)) || gt_add_text_funcs(t->set)) {
        snprintf(err, errlen, "out of memory");
        lq__tmpl_free(t);
        return NULL;
    }
    for (size_t i = 0; i < ARRAY_SIZE(fns); i++)
        if (gt_set_func(t->set, fns[i].name, fns[i].fn)) {
            snprintf(err, errlen, "out of memory");
            lq__tmpl_free(t);
            return NULL;
        }
    if (gt_parse(t->set, "line", text, err, errlen)) {
        lq__tmpl_free(t);
        return NULL;
    }
    return t;
}

void lq__tmpl_free(struct lq_tmpl *t)
{
    if (!t)
        return;
    gt_set_free(&t->set);
    free(t);
}

int lq__tmpl_exec(struct lq_tmpl *t, struct lq_lb *lb, const char *line, size_t n, int64_t ts, struct buf *out)
{
    struct gt_arena *a = gt_arena_new();
    if (!a)
        return -ENOMEM;
    struct gt_value *m = gt_map(a, (size_t)lb->n, 0);
    if (!m) {
        gt_arena_free(&a);
        return -ENOMEM;
    }
    m->missing_empty = true;
    for (int i = 0; i < lb->n; i++) {
        m->keys[i] = lb->v[i].name;
        m->items[i] = gt_str(a, lb->v[i].value);
    }
    gt_map_sort(m);
    tl_line = line;
    tl_line_n = n;
    tl_ts = ts;
    char err[256];
    int r = gt_exec(t->set, "line", m, a, out, err, sizeof(err));
    if (r) {
        buf_reset(out);
        buf_puts(out, err);
    }
    tl_line = NULL;
    gt_arena_free(&a);
    return r;
}
