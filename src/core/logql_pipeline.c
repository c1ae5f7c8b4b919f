/* logql_pipeline.c - running a LogQL pipeline over one log entry: line filters,
 * the json/logfmt/regexp/pattern/unpack parsers, label filters, line_format and
 * label_format, drop, keep, decolorize; the labels builder they share; ip().
 *
 * Semantics follow Loki's documentation: an extracted label whose name the stream
 * already has is renamed NAME_extracted; a parser that fails sets __error__
 * (JSONParserErr, LogfmtParserErr) and __error_details__ and keeps the entry; a
 * numeric, duration or byte label filter whose label does not convert sets
 * __error__="LabelFilterErr" and keeps the entry, and once an entry has an error
 * only string label filters filter it.
 */
#include "core/logql.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- the labels builder ---- */

#define LB_BLOCK 16384

void lq_lb_init(struct lq_lb *lb)
{
    memset(lb, 0, sizeof(*lb));
}

void lq_lb_free(struct lq_lb *lb)
{
    free(lb->v);
    free(lb->mem);
    for (int i = 0; i < lb->nbig; i++)
        free(lb->big[i]);
    free(lb->big);
    buf_free(&lb->line);
    buf_free(&lb->tmp);
    memset(lb, 0, sizeof(*lb));
}

void lq_lb_reset(struct lq_lb *lb, const struct lq_labels *base)
{
    lb->base = *base;
    lb->meta = NULL;
    lb->used = 0;
    for (int i = 0; i < lb->nbig; i++)
        free(lb->big[i]);
    lb->nbig = 0;
    lb->err = lb->err_details = NULL;
    if (lb->cap < base->n + 16) {
        int cap = base->n + 64;
        struct lq_label *v = realloc(lb->v, (size_t)cap * sizeof(*v));
        if (!v) {
            lb->n = 0;
            return;
        }
        lb->v = v;
        lb->cap = cap;
    }
    memcpy(lb->v, base->v, (size_t)base->n * sizeof(*lb->v));
    lb->n = base->n;
}

/* Copies s into scratch memory that lives until the next reset. */
static const char *lb_str(struct lq_lb *lb, const char *s, size_t n)
{
    if (!lb->mem) {
        lb->mem = malloc(LB_BLOCK);
        lb->memcap = lb->mem ? LB_BLOCK : 0;
    }
    if (lb->memcap - lb->used >= n + 1) {
        char *p = lb->mem + lb->used;
        memcpy(p, s, n);
        p[n] = 0;
        lb->used += n + 1;
        return p;
    }
    if (lb->nbig == lb->capbig) {
        int cap = lb->capbig ? lb->capbig * 2 : 8;
        char **v = realloc(lb->big, (size_t)cap * sizeof(*v));
        if (!v)
            return "";
        lb->big = v;
        lb->capbig = cap;
    }
    char *p = malloc(n + 1);
    if (!p)
        return "";
    memcpy(p, s, n);
    p[n] = 0;
    lb->big[lb->nbig++] = p;
    return p;
}

static int lb_find(const struct lq_lb *lb, const char *name, size_t nn)
{
    for (int i = 0; i < lb->n; i++)
        if (strncmp(lb->v[i].name, name, nn) == 0 && lb->v[i].name[nn] == 0)
            return i;
    return -1;
}

const char *lq_lb_get(const struct lq_lb *lb, const char *name, size_t *n)
{
    if (name[0] == '_' && name[1] == '_') {
        if (strcmp(name, "__error__") == 0) {
            *n = lb->err ? strlen(lb->err) : 0;
            return lb->err;
        }
        if (strcmp(name, "__error_details__") == 0) {
            *n = lb->err_details ? strlen(lb->err_details) : 0;
            return lb->err_details;
        }
    }
    int i = lb_find(lb, name, strlen(name));
    if (i < 0)
        return NULL;
    *n = strlen(lb->v[i].value);
    return lb->v[i].value;
}

int lq_lb_set(struct lq_lb *lb, const char *name, size_t nn, const char *value, size_t vn)
{
    if (nn == 9 && memcmp(name, "__error__", 9) == 0) {
        lb->err = vn ? lb_str(lb, value, vn) : NULL;
        return 0;
    }
    if (nn == 17 && memcmp(name, "__error_details__", 17) == 0) {
        lb->err_details = vn ? lb_str(lb, value, vn) : NULL;
        return 0;
    }
    int i = lb_find(lb, name, nn);
    const char *v = lb_str(lb, value, vn);
    if (i >= 0) {
        lb->v[i].value = v;
        return 0;
    }
    if (lb->n >= LQ_MAX_LABELS)
        return -E2BIG;
    if (lb->n == lb->cap) {
        int cap = lb->cap ? lb->cap * 2 : 32;
        struct lq_label *nv = realloc(lb->v, (size_t)cap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        lb->v = nv;
        lb->cap = cap;
    }
    lb->v[lb->n].name = lb_str(lb, name, nn);
    lb->v[lb->n].value = v;
    lb->n++;
    return 0;
}

void lq_lb_del(struct lq_lb *lb, const char *name)
{
    if (strcmp(name, "__error__") == 0) {
        lb->err = NULL;
        return;
    }
    if (strcmp(name, "__error_details__") == 0) {
        lb->err_details = NULL;
        return;
    }
    int i = lb_find(lb, name, strlen(name));
    if (i >= 0)
        lb->v[i] = lb->v[--lb->n];
}

static bool base_has(const struct lq_lb *lb, const char *name, size_t nn)
{
    for (int i = 0; i < lb->base.n; i++)
        if (strncmp(lb->base.v[i].name, name, nn) == 0 && lb->base.v[i].name[nn] == 0)
            return true;
    for (int i = 0; lb->meta && i < lb->meta->n; i++)
        if (strncmp(lb->meta->v[i].name, name, nn) == 0 && lb->meta->v[i].name[nn] == 0)
            return true;
    return false;
}

void lq_lb_add_meta(struct lq_lb *lb, const struct lq_labels *meta)
{
    lb->meta = meta && meta->n ? meta : NULL;
    for (int i = 0; lb->meta && i < meta->n; i++) {
        const char *name = meta->v[i].name;
        size_t nn = strlen(name);
        bool clash = false;
        for (int j = 0; j < lb->base.n && !clash; j++)
            clash = strcmp(lb->base.v[j].name, name) == 0;
        if (clash) {
            char tmp[300];
            if (nn > 250)
                continue;
            memcpy(tmp, name, nn);
            memcpy(tmp + nn, "_extracted", 11);
            lq_lb_set(lb, tmp, nn + 10, meta->v[i].value, strlen(meta->v[i].value));
        } else {
            lq_lb_set(lb, name, nn, meta->v[i].value, strlen(meta->v[i].value));
        }
    }
}

/* A parsed label: sanitized name, renamed when the stream has it; empty values
 * are not labels (Prometheus drops them). */
static void set_parsed(struct lq_lb *lb, const char *name, size_t nn, const char *v, size_t vn, bool keep_empty)
{
    char tmp[256];
    if (nn == 0 || nn > 200 || (!vn && !keep_empty))
        return;
    size_t k = 0;
    if (isdigit((unsigned char)name[0]))
        tmp[k++] = '_';
    for (size_t i = 0; i < nn; i++)
        tmp[k++] = isalnum((unsigned char)name[i]) || name[i] == '_' ? name[i] : '_';
    if (base_has(lb, tmp, k)) {
        memcpy(tmp + k, "_extracted", 10);
        k += 10;
    }
    lq_lb_set(lb, tmp, k, v, vn);
}

static int lbl_cmp(const void *a, const void *b)
{
    return strcmp(((const struct lq_label *)a)->name, ((const struct lq_label *)b)->name);
}

int lq_lb_labels(struct lq_lb *lb, struct lq_label *out)
{
    int n = 0;
    for (int i = 0; i < lb->n && n < LQ_MAX_LABELS - 2; i++)
        out[n++] = lb->v[i];
    if (lb->err) {
        out[n++] = (struct lq_label){ "__error__", lb->err };
        if (lb->err_details)
            out[n++] = (struct lq_label){ "__error_details__", lb->err_details };
    }
    qsort(out, (size_t)n, sizeof(*out), lbl_cmp);
    return n;
}

static void set_err(struct lq_lb *lb, const char *err, const char *details)
{
    if (lb->err)
        return;
    lb->err = err;
    lb->err_details = details ? lb_str(lb, details, strlen(details)) : NULL;
}

/* ---- regex matching with a per-thread match block ---- */

static __thread pcre2_match_data *tl_md;

pcre2_match_data *lq_match_data(void)
{
    if (!tl_md)
        tl_md = pcre2_match_data_create(64, NULL);
    return tl_md;
}

static bool re_match(const pcre2_code *re, const char *s, size_t n)
{
    pcre2_match_data *md = lq_match_data();
    return md && pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, md, NULL) >= 0;
}

/* ---- ip() ---- */

static bool parse_addr(const char *s, size_t n, int *family, uint8_t out[16])
{
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    memset(out, 0, 16);
    if (inet_pton(AF_INET, tmp, out) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, tmp, out) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

bool lq__ip_parse(const char *s, size_t n, struct lq_ipr *r)
{
    const char *slash = memchr(s, '/', n), *dash = memchr(s, '-', n);
    int f2;
    if (slash) {
        if (!parse_addr(s, (size_t)(slash - s), &r->family, r->lo))
            return false;
        char *e;
        char tmp[8];
        size_t pn = n - (size_t)(slash - s) - 1;
        if (pn == 0 || pn >= sizeof(tmp))
            return false;
        memcpy(tmp, slash + 1, pn);
        tmp[pn] = 0;
        long bits = strtol(tmp, &e, 10);
        int max = r->family == AF_INET ? 32 : 128;
        if (*e || bits < 0 || bits > max)
            return false;
        memcpy(r->hi, r->lo, 16);
        for (int b = (int)bits; b < max; b++) {
            r->lo[b / 8] &= (uint8_t)~(0x80 >> (b % 8));
            r->hi[b / 8] |= (uint8_t)(0x80 >> (b % 8));
        }
        return true;
    }
    if (dash) {
        if (!parse_addr(s, (size_t)(dash - s), &r->family, r->lo) ||
            !parse_addr(dash + 1, n - (size_t)(dash - s) - 1, &f2, r->hi) || f2 != r->family)
            return false;
        return memcmp(r->lo, r->hi, 16) <= 0;
    }
    if (!parse_addr(s, n, &r->family, r->lo))
        return false;
    memcpy(r->hi, r->lo, 16);
    return true;
}

bool lq__ip_in(const struct lq_ipr *r, const char *s, size_t n)
{
    int f;
    uint8_t a[16];
    if (!parse_addr(s, n, &f, a) || f != r->family)
        return false;
    return memcmp(a, r->lo, 16) >= 0 && memcmp(a, r->hi, 16) <= 0;
}

/* Finds an address in free text: runs of digits and dots (IPv4, "10.0.0.7:80"
 * included), and runs of hex digits, colons and dots that hold a colon (IPv6). */
bool lq__line_has_ip(const struct lq_ipr *r, const char *line, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)line[i];
        if (!isxdigit(c) && c != ':') {
            i++;
            continue;
        }
        size_t s = i;
        bool colon = false;
        while (i < n && (isxdigit((unsigned char)line[i]) || line[i] == ':' || line[i] == '.')) {
            colon |= line[i] == ':';
            i++;
        }
        if (colon && r->family == AF_INET6 && lq__ip_in(r, line + s, i - s))
            return true;
        /* IPv4 runs inside the token */
        for (size_t k = s; k < i;) {
            if (!isdigit((unsigned char)line[k])) {
                k++;
                continue;
            }
            size_t ks = k;
            while (k < i && (isdigit((unsigned char)line[k]) || line[k] == '.'))
                k++;
            bool bounded = (ks == 0 || !isalnum((unsigned char)line[ks - 1])) && (k >= n || !isalnum((unsigned char)line[k]));
            if (bounded && r->family == AF_INET && k - ks >= 7 && lq__ip_in(r, line + ks, k - ks))
                return true;
        }
    }
    return false;
}

/* ---- patterns: `<name>`, `<_>` and the literals between ---- */

struct lq_pat_part {
    bool capture;
    const char *s;                  /* literal text, or the capture's name ("_" unnamed) */
    size_t n;
};

struct lq_pattern {
    struct lq_pat_part *v;
    int n;
};

struct lq_pattern *lq__pattern_compile(struct lq_arena *a, const char *s, size_t n, bool filter, char *err,
                                       size_t errlen)
{
    struct lq_pattern *p = lq_alloc(a, sizeof(*p));
    if (!p || !(p->v = lq_alloc(a, (n + 1) * sizeof(*p->v)))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t i = 0, lit = 0;
    int names = 0;
    while (i < n) {
        if (s[i] == '<') {
            size_t j = i + 1;
            while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_'))
                j++;
            if (j < n && s[j] == '>' && j > i + 1 && !isdigit((unsigned char)s[i + 1])) {
                if (i > lit)
                    p->v[p->n++] = (struct lq_pat_part){ false, s + lit, i - lit };
                if (p->n && p->v[p->n - 1].capture) {
                    snprintf(err, errlen, "pattern: found consecutive capture: %.*s", (int)(j + 1 - i), s + i);
                    return NULL;
                }
                bool unnamed = j == i + 2 && s[i + 1] == '_';
                if (!unnamed)
                    names++;
                p->v[p->n++] = (struct lq_pat_part){ true, s + i + 1, j - i - 1 };
                i = lit = j + 1;
                continue;
            }
        }
        i++;
    }
    if (n > lit)
        p->v[p->n++] = (struct lq_pat_part){ false, s + lit, n - lit };
    if (filter && names) {
        snprintf(err, errlen, "pattern: named captures are not allowed in a pattern line filter: \"%.*s\"", (int)n, s);
        return NULL;
    }
    if (!filter && !names) {
        snprintf(err, errlen, "pattern: at least one named capture is required: \"%.*s\"", (int)n, s);
        return NULL;
    }
    return p;
}

static const char *find(const char *h, size_t hn, const char *nd, size_t nn)
{
    return nn ? memmem(h, hn, nd, nn) : h;
}

/* The pattern line filter: every literal in order, no empty capture, and the line
 * ends where the pattern does. */
static bool pattern_test(const struct lq_pattern *p, const char *in, size_t n)
{
    if (n == 0 || p->n == 0)
        return n == 0 && p->n == 0;
    size_t off = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->v[i].capture)
            continue;
        const char *f = find(in + off, n - off, p->v[i].s, p->v[i].n);
        if (!f)
            return false;
        size_t j = (size_t)(f - (in + off));
        if (i != 0 && j == 0)
            return false;
        off += j + p->v[i].n;
    }
    bool ends_literal = !p->v[p->n - 1].capture;
    return ends_literal == (n - off == 0);
}

bool lq__pattern_match(const struct lq_pattern *p, const char *in, size_t n, struct lq_lb *lb)
{
    if (n == 0 || p->n == 0)
        return false;
    int i = 0;
    if (!p->v[0].capture) {
        if (n < p->v[0].n || memcmp(in, p->v[0].s, p->v[0].n) != 0)
            return false;
        in += p->v[0].n;
        n -= p->v[0].n;
        i = 1;
    }
    while (i < p->n) {
        const struct lq_pat_part *c = &p->v[i];
        bool named = !(c->n == 1 && c->s[0] == '_');
        if (i + 1 >= p->n) {
            if (named)
                set_parsed(lb, c->s, c->n, in, n, false);
            return true;
        }
        const struct lq_pat_part *l = &p->v[i + 1];
        const char *f = find(in, n, l->s, l->n);
        if (!f) {
            if (named)
                set_parsed(lb, c->s, c->n, in, n, false);
            return true;
        }
        size_t k = (size_t)(f - in);
        if (named)
            set_parsed(lb, c->s, c->n, in, k, false);
        in += k + l->n;
        n -= k + l->n;
        i += 2;
    }
    return true;
}

/* ---- line filters ---- */

static bool alt_matches(const struct lq_stage *st, const struct lq_alt *a, const char *line, size_t n)
{
    if (a->is_ip)
        return lq__line_has_ip(&a->ip, line, n);
    switch (st->fop) {
    case LQ_F_CONTAINS:
    case LQ_F_NOT_CONTAINS:
        return a->n == 0 || memmem(line, n, a->s, a->n) != NULL;
    case LQ_F_RE:
    case LQ_F_NOT_RE:
        return re_match(a->re, line, n);
    case LQ_F_PATTERN:
    case LQ_F_NOT_PATTERN:
        return pattern_test(a->pat, line, n);
    }
    return false;
}

static bool line_filter(const struct lq_stage *st, const char *line, size_t n)
{
    bool any = false;
    for (int i = 0; i < st->nalts && !any; i++)
        any = alt_matches(st, &st->alts[i], line, n);
    bool neg = st->fop == LQ_F_NOT_CONTAINS || st->fop == LQ_F_NOT_RE || st->fop == LQ_F_NOT_PATTERN;
    return neg ? !any : any;
}

/* ---- JSON ---- */

struct js {
    const char *p, *end;
    const char *err;
    struct lq_lb *lb;
    struct buf *key;                /* the flattened name so far */
    char details[160];
};

static void js_ws(struct js *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int js_fail(struct js *j, const char *what)
{
    if (!j->err) {
        j->err = "JSONParserErr";
        snprintf(j->details, sizeof(j->details), "%s", what);
    }
    return -1;
}

/* Reads a string at p (the quote included) into out, unescaped. */
static int js_string(struct js *j, struct buf *out)
{
    if (j->p >= j->end || *j->p != '"')
        return js_fail(j, "expecting a string");
    j->p++;
    while (j->p < j->end && *j->p != '"') {
        const char *s = j->p;
        while (j->p < j->end && *j->p != '"' && *j->p != '\\')
            j->p++;
        if (out)
            buf_append(out, s, (size_t)(j->p - s));
        if (j->p < j->end && *j->p == '\\') {
            if (j->end - j->p < 2)
                return js_fail(j, "unterminated escape");
            char c = j->p[1];
            j->p += 2;
            char o;
            switch (c) {
            case 'n': o = '\n'; break;
            case 't': o = '\t'; break;
            case 'r': o = '\r'; break;
            case 'b': o = '\b'; break;
            case 'f': o = '\f'; break;
            case '/': case '\\': case '"': o = c; break;
            case 'u': {
                if (j->end - j->p < 4)
                    return js_fail(j, "bad \\u escape");
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    char h = j->p[i];
                    if (!isxdigit((unsigned char)h))
                        return js_fail(j, "bad \\u escape");
                    v = v * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : tolower(h) - 'a' + 10);
                }
                j->p += 4;
                if (v >= 0xD800 && v < 0xDC00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') {
                    unsigned lo = (unsigned)strtoul((char[5]){ j->p[2], j->p[3], j->p[4], j->p[5], 0 }, NULL, 16);
                    if (lo >= 0xDC00 && lo < 0xE000) {
                        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                        j->p += 6;
                    }
                }
                if (out) {
                    char u[4];
                    int k = 0;
                    if (v < 0x80) {
                        u[k++] = (char)v;
                    } else if (v < 0x800) {
                        u[k++] = (char)(0xC0 | (v >> 6));
                        u[k++] = (char)(0x80 | (v & 0x3F));
                    } else if (v < 0x10000) {
                        u[k++] = (char)(0xE0 | (v >> 12));
                        u[k++] = (char)(0x80 | ((v >> 6) & 0x3F));
                        u[k++] = (char)(0x80 | (v & 0x3F));
                    } else {
                        u[k++] = (char)(0xF0 | (v >> 18));
                        u[k++] = (char)(0x80 | ((v >> 12) & 0x3F));
                        u[k++] = (char)(0x80 | ((v >> 6) & 0x3F));
                        u[k++] = (char)(0x80 | (v & 0x3F));
                    }
                    buf_append(out, u, (size_t)k);
                }
                continue;
            }
            default:
                return js_fail(j, "invalid escape");
            }
            if (out)
                buf_putc(out, o);
        }
    }
    if (j->p >= j->end)
        return js_fail(j, "unterminated string");
    j->p++;
    return 0;
}

static int js_skip(struct js *j, int depth);

static int js_skip_scalar(struct js *j)
{
    const char *s = j->p;
    while (j->p < j->end && !strchr(",}] \t\r\n", *j->p))
        j->p++;
    if (j->p == s)
        return js_fail(j, "unexpected end of input");
    size_t n = (size_t)(j->p - s);
    if ((n == 4 && !memcmp(s, "true", 4)) || (n == 5 && !memcmp(s, "false", 5)) || (n == 4 && !memcmp(s, "null", 4)))
        return 0;
    double d;
    char e[8];
    if (lq_parse_float(s, n, &d, e, sizeof(e)) == 0 || (s[0] == '-' && n > 1))
        return 0;
    return js_fail(j, "invalid value");
}

static int js_skip(struct js *j, int depth)
{
    js_ws(j);
    if (depth > 64)
        return js_fail(j, "nesting too deep");
    if (j->p >= j->end)
        return js_fail(j, "unexpected end of input");
    char c = *j->p;
    if (c == '"')
        return js_string(j, NULL);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        js_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                js_ws(j);
                if (js_string(j, NULL))
                    return -1;
                js_ws(j);
                if (j->p >= j->end || *j->p != ':')
                    return js_fail(j, "expecting ':'");
                j->p++;
            }
            if (js_skip(j, depth + 1))
                return -1;
            js_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                return 0;
            }
            return js_fail(j, "expecting ',' or a closing bracket");
        }
    }
    return js_skip_scalar(j);
}

/* Flattens an object: nested keys joined with '_'; arrays are skipped. */
static int js_flatten(struct js *j, int depth)
{
    js_ws(j);
    if (j->p >= j->end || *j->p != '{')
        return js_fail(j, "expecting an object");
    j->p++;
    js_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return 0;
    }
    size_t base = j->key->len;
    struct buf val = { 0 };
    int r = 0;
    for (;;) {
        js_ws(j);
        j->key->len = base;
        if (base)
            buf_putc(j->key, '_');
        if ((r = js_string(j, j->key)))
            break;
        js_ws(j);
        if (j->p >= j->end || *j->p != ':') {
            r = js_fail(j, "expecting ':'");
            break;
        }
        j->p++;
        js_ws(j);
        if (j->p >= j->end) {
            r = js_fail(j, "unexpected end of input");
            break;
        }
        if (*j->p == '{') {
            if (depth > 32 || (r = js_flatten(j, depth + 1)))
                break;
        } else if (*j->p == '[') {
            if ((r = js_skip(j, depth + 1)))
                break;
        } else if (*j->p == '"') {
            val.len = val.off = 0;
            if ((r = js_string(j, &val)))
                break;
            set_parsed(j->lb, buf_head(j->key), buf_used(j->key), val.len ? buf_head(&val) : "", buf_used(&val), false);
        } else {
            const char *s = j->p;
            if ((r = js_skip_scalar(j)))
                break;
            size_t n = (size_t)(j->p - s);
            if (!(n == 4 && memcmp(s, "null", 4) == 0))
                set_parsed(j->lb, buf_head(j->key), buf_used(j->key), s, n, false);
        }
        js_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            break;
        }
        r = js_fail(j, "expecting ',' or '}'");
        break;
    }
    j->key->len = base;
    buf_free(&val);
    return r;
}

/* One step of a json parameter's path: a field or an index. */
struct jseg {
    const char *name;
    size_t n;
    long idx;                       /* -1 for a field */
};

struct lq_jpath {
    struct jseg *v;
    int n;
};

static int jpath_compile(const char *s, struct jseg *out, int max)
{
    int n = 0;
    const char *p = s;
    while (*p && n < max) {
        if (*p == '.') {
            p++;
            continue;
        }
        if (*p == '[') {
            p++;
            if (*p == '"' || *p == '\'') {
                char q = *p++;
                const char *st = p;
                while (*p && *p != q)
                    p++;
                out[n++] = (struct jseg){ st, (size_t)(p - st), -1 };
                if (*p)
                    p++;
            } else {
                out[n++] = (struct jseg){ NULL, 0, strtol(p, (char **)&p, 10) };
            }
            while (*p && *p != ']')
                p++;
            if (*p)
                p++;
            continue;
        }
        const char *st = p;
        while (*p && *p != '.' && *p != '[')
            p++;
        out[n++] = (struct jseg){ st, (size_t)(p - st), -1 };
    }
    return n;
}

/* Finds the value at path in the JSON at j->p; sets *vs, *vn to its text (a string
 * unescaped into val, others raw). Returns 1 found, 0 not found, -1 error. */
static int jpath_find(struct js *j, const struct jseg *seg, int nseg, struct buf *val, const char **vs, size_t *vn)
{
    js_ws(j);
    if (nseg == 0) {
        if (j->p < j->end && *j->p == '"') {
            if (js_string(j, val))
                return -1;
            *vs = val->len ? buf_head(val) : "";
            *vn = buf_used(val);
            return 1;
        }
        const char *s = j->p;
        if (js_skip(j, 0))
            return -1;
        *vs = s;
        *vn = (size_t)(j->p - s);
        if (*vn == 4 && memcmp(s, "null", 4) == 0)
            *vn = 0;
        return 1;
    }
    if (j->p >= j->end)
        return js_fail(j, "unexpected end of input");
    if (*j->p == '{' && seg->idx < 0) {
        j->p++;
        struct buf key = { 0 };
        for (;;) {
            js_ws(j);
            if (j->p < j->end && *j->p == '}') {
                buf_free(&key);
                return 0;
            }
            key.len = key.off = 0;
            if (js_string(j, &key)) {
                buf_free(&key);
                return -1;
            }
            js_ws(j);
            if (j->p >= j->end || *j->p != ':') {
                buf_free(&key);
                return js_fail(j, "expecting ':'");
            }
            j->p++;
            if (buf_used(&key) == seg->n && memcmp(buf_head(&key), seg->name, seg->n) == 0) {
                buf_free(&key);
                return jpath_find(j, seg + 1, nseg - 1, val, vs, vn);
            }
            if (js_skip(j, 0)) {
                buf_free(&key);
                return -1;
            }
            js_ws(j);
            if (j->p < j->end && *j->p == ',')
                j->p++;
        }
    }
    if (*j->p == '[' && seg->idx >= 0) {
        j->p++;
        for (long i = 0;; i++) {
            js_ws(j);
            if (j->p < j->end && *j->p == ']')
                return 0;
            if (i == seg->idx)
                return jpath_find(j, seg + 1, nseg - 1, val, vs, vn);
            if (js_skip(j, 0))
                return -1;
            js_ws(j);
            if (j->p < j->end && *j->p == ',')
                j->p++;
        }
    }
    return 0;
}

static void json_stage(const struct lq_stage *st, const char *line, size_t n, struct lq_lb *lb)
{
    struct js j = { .p = line, .end = line + n, .lb = lb, .key = &lb->tmp };
    if (!st->nparams) {
        lb->tmp.len = lb->tmp.off = 0;
        if (js_flatten(&j, 0) == 0) {
            js_ws(&j);
            if (j.p != j.end)
                js_fail(&j, "trailing data after the object");
        }
        if (j.err)
            set_err(lb, j.err, j.details);
        return;
    }
    /* with parameters: the line must be valid JSON; each path is looked up */
    if (js_skip(&j, 0) == 0) {
        js_ws(&j);
        if (j.p != j.end)
            js_fail(&j, "trailing data after the object");
    }
    if (j.err) {
        set_err(lb, j.err, j.details);
        return;
    }
    struct buf val = { 0 };
    for (int i = 0; i < st->nparams; i++) {
        struct jseg seg[32];
        int ns = jpath_compile(st->params[i].value, seg, 32);
        struct js k = { .p = line, .end = line + n, .lb = lb };
        const char *vs = "";
        size_t vn = 0;
        val.len = val.off = 0;
        int r = jpath_find(&k, seg, ns, &val, &vs, &vn);
        const char *name = st->params[i].name;
        size_t nn = strlen(name);
        char tmp[256];
        if (base_has(lb, name, nn) && nn < 200) {
            snprintf(tmp, sizeof(tmp), "%s_extracted", name);
            name = tmp;
            nn = strlen(tmp);
        }
        lq_lb_set(lb, name, nn, r == 1 ? vs : "", r == 1 ? vn : 0);
    }
    buf_free(&val);
}

static void unpack_stage(const char *line, size_t n, struct lq_lb *lb, const char **out, size_t *outn)
{
    struct js j = { .p = line, .end = line + n, .lb = lb };
    js_ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        set_err(lb, "JSONParserErr", "expecting an object");
        return;
    }
    j.p++;
    struct buf key = { 0 }, val = { 0 };
    bool entry = false;
    for (;;) {
        js_ws(&j);
        if (j.p < j.end && *j.p == '}')
            break;
        key.len = key.off = val.len = val.off = 0;
        if (js_string(&j, &key))
            break;
        js_ws(&j);
        if (j.p >= j.end || *j.p != ':') {
            js_fail(&j, "expecting ':'");
            break;
        }
        j.p++;
        js_ws(&j);
        if (j.p < j.end && *j.p == '"') {
            if (js_string(&j, &val))
                break;
            if (buf_used(&key) == 6 && memcmp(buf_head(&key), "_entry", 6) == 0) {
                lb->line.len = lb->line.off = 0;
                buf_append(&lb->line, val.len ? buf_head(&val) : "", buf_used(&val));
                entry = true;
            } else {
                set_parsed(lb, buf_head(&key), buf_used(&key), val.len ? buf_head(&val) : "", buf_used(&val), false);
            }
        } else if (js_skip(&j, 0)) {
            break;
        }
        js_ws(&j);
        if (j.p < j.end && *j.p == ',')
            j.p++;
    }
    if (j.err)
        set_err(lb, j.err, j.details);
    else if (entry) {
        *out = lb->line.len ? buf_head(&lb->line) : "";
        *outn = buf_used(&lb->line);
    }
    buf_free(&key);
    buf_free(&val);
}

/* ---- logfmt (go-logfmt's decoder) ---- */

static bool logfmt_key_char(unsigned char c)
{
    return c > ' ' && c != '=' && c != '"' && c != 0x7f;
}

static void logfmt_stage(const struct lq_stage *st, const char *line, size_t n, struct lq_lb *lb)
{
    size_t i = 0;
    struct buf val = { 0 };
    while (i < n) {
        while (i < n && (unsigned char)line[i] <= ' ')
            i++;
        if (i >= n)
            break;
        size_t ks = i;
        while (i < n && logfmt_key_char((unsigned char)line[i]))
            i++;
        size_t kn = i - ks;
        if (kn == 0) {
            /* "=" or '"' where a key should be */
            if (st->strict) {
                char d[96];
                snprintf(d, sizeof(d), "logfmt syntax error at pos %zu : unexpected '%c'", i + 1, line[i]);
                set_err(lb, "LogfmtParserErr", d);
                break;
            }
            i++;
            continue;
        }
        const char *vs = "";
        size_t vn = 0;
        bool has_eq = i < n && line[i] == '=';
        if (has_eq) {
            i++;
            if (i < n && line[i] == '"') {
                i++;
                val.len = val.off = 0;
                bool closed = false;
                while (i < n) {
                    char c = line[i];
                    if (c == '"') {
                        closed = true;
                        i++;
                        break;
                    }
                    if (c == '\\' && i + 1 < n) {
                        char e = line[i + 1];
                        char o = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
                        buf_putc(&val, o);
                        i += 2;
                        continue;
                    }
                    buf_putc(&val, c);
                    i++;
                }
                if (!closed) {
                    if (st->strict) {
                        char d[96];
                        snprintf(d, sizeof(d), "logfmt syntax error at pos %zu : unterminated quoted value", i + 1);
                        set_err(lb, "LogfmtParserErr", d);
                    }
                    break;
                }
                vs = val.len ? buf_head(&val) : "";
                vn = buf_used(&val);
            } else {
                size_t s = i;
                while (i < n && (unsigned char)line[i] > ' ' && line[i] != '"' && line[i] != '=')
                    i++;
                if (i < n && (line[i] == '"' || line[i] == '=')) {
                    if (st->strict) {
                        char d[96];
                        snprintf(d, sizeof(d), "logfmt syntax error at pos %zu : unexpected '%c'", i + 1, line[i]);
                        set_err(lb, "LogfmtParserErr", d);
                        break;
                    }
                    while (i < n && (unsigned char)line[i] > ' ')
                        i++;
                    continue;
                }
                vs = line + s;
                vn = i - s;
            }
        }
        if (st->nparams) {
            for (int p = 0; p < st->nparams; p++) {
                const char *src = st->params[p].value;
                if (strlen(src) == kn && memcmp(src, line + ks, kn) == 0) {
                    const char *name = st->params[p].name;
                    set_parsed(lb, name, strlen(name), vs, vn, st->keep_empty);
                }
            }
        } else {
            set_parsed(lb, line + ks, kn, vs, vn, st->keep_empty);
        }
    }
    buf_free(&val);
}

/* ---- regexp ---- */

static void regexp_stage(const struct lq_stage *st, const char *line, size_t n, struct lq_lb *lb)
{
    pcre2_match_data *md = lq_match_data();
    if (!md || pcre2_match(st->re, (PCRE2_SPTR)line, n, 0, 0, md, NULL) < 0)
        return;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t count = 0, size = 0;
    PCRE2_SPTR table;
    pcre2_pattern_info(st->re, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(st->re, PCRE2_INFO_NAMEENTRYSIZE, &size);
    pcre2_pattern_info(st->re, PCRE2_INFO_NAMETABLE, &table);
    uint32_t nov = pcre2_get_ovector_count(md);
    for (uint32_t i = 0; i < count; i++) {
        PCRE2_SPTR e = table + (size_t)i * size;
        uint32_t g = (uint32_t)(e[0] << 8 | e[1]);
        const char *name = (const char *)e + 2;
        if (g >= nov || ov[2 * g] == PCRE2_UNSET)
            continue;
        set_parsed(lb, name, strlen(name), line + ov[2 * g], ov[2 * g + 1] - ov[2 * g], false);
    }
}

/* ---- label filters ---- */

static bool cmp_num(enum lq_cmp c, double a, double b)
{
    switch (c) {
    case LQ_C_EQ: return a == b;
    case LQ_C_NE: return a != b;
    case LQ_C_GT: return a > b;
    case LQ_C_GE: return a >= b;
    case LQ_C_LT: return a < b;
    case LQ_C_LE: return a <= b;
    }
    return false;
}

static bool label_filter(const struct lq_lfilter *f, struct lq_lb *lb)
{
    switch (f->kind) {
    case LQ_LF_AND: {
        bool l = label_filter(f->l, lb);
        bool r = label_filter(f->r, lb);
        return l && r;
    }
    case LQ_LF_OR:
        if (label_filter(f->l, lb))
            return true;
        return label_filter(f->r, lb);
    case LQ_LF_STR: {
        size_t n = 0;
        const char *v = lq_lb_get(lb, f->m.name, &n);
        return lq_matcher_matches(&f->m, v ? v : "", v ? n : 0);
    }
    case LQ_LF_IP: {
        if (lb->err)
            return true;            /* ip() keeps every line that has an error */
        size_t n = 0;
        const char *v = lq_lb_get(lb, f->m.name, &n);
        if (!v)
            return false;
        bool in = lq__line_has_ip(&f->ip, v, n);
        return f->cmp == LQ_C_NE ? !in : in;
    }
    case LQ_LF_NUM:
    case LQ_LF_DUR:
    case LQ_LF_BYTES: {
        /* a converting filter needs its label (never __error__); a value that does not
           convert sets the entry's first error and keeps it */
        if (!strncmp(f->m.name, "__error", 7))
            return false;
        size_t n = 0;
        const char *v = lq_lb_get(lb, f->m.name, &n);
        if (!v)
            return false;
        double x;
        char e[200];
        int r = f->kind == LQ_LF_NUM   ? lq_parse_float(v, n, &x, e, sizeof(e))
                : f->kind == LQ_LF_DUR ? lq_parse_go_duration(v, n, &x, e, sizeof(e))
                                       : lq_parse_bytes(v, n, &x, e, sizeof(e));
        if (r) {
            set_err(lb, "LabelFilterErr", e);
            return true;
        }
        return cmp_num(f->cmp, x, f->num);
    }
    }
    return false;
}

/* ---- decolorize ---- */

static size_t decolorize(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 0x1b && i + 1 < n && in[i + 1] == '[') {
            size_t j = i + 2;
            while (j < n && ((in[j] >= '0' && in[j] <= '9') || in[j] == ';' || in[j] == '?'))
                j++;
            if (j < n && ((in[j] >= '@' && in[j] <= '~'))) {
                i = j;
                continue;
            }
        }
        out[o++] = in[i];
    }
    return o;
}

/* ---- the pipeline ---- */

bool lq_pipeline_filters_only(const struct lq_stage *st, int nst)
{
    for (int i = 0; i < nst; i++)
        if (st[i].kind != LQ_S_LINE_FILTER)
            return false;
    return true;
}

static bool drop_matches(const struct lq_param *p, struct lq_lb *lb)
{
    if (!p->has_matcher)
        return true;
    size_t n = 0;
    const char *v = lq_lb_get(lb, p->m.name, &n);
    return v && lq_matcher_matches(&p->m, v, n);
}

bool lq_pipeline_run(const struct lq_stage *st, int nst, int64_t ts, const char **line, size_t *n,
                     struct lq_lb *lb)
{
    for (int i = 0; i < nst; i++) {
        const struct lq_stage *s = &st[i];
        switch (s->kind) {
        case LQ_S_LINE_FILTER:
            if (!line_filter(s, *line, *n))
                return false;
            break;
        case LQ_S_JSON:
            json_stage(s, *line, *n, lb);
            break;
        case LQ_S_LOGFMT:
            logfmt_stage(s, *line, *n, lb);
            break;
        case LQ_S_REGEXP:
            regexp_stage(s, *line, *n, lb);
            break;
        case LQ_S_PATTERN:
            lq__pattern_match(s->pat, *line, *n, lb);
            break;
        case LQ_S_UNPACK:
            unpack_stage(*line, *n, lb, line, n);
            break;
        case LQ_S_LABEL_FILTER:
            if (!label_filter(s->lf, lb))
                return false;
            break;
        case LQ_S_LINE_FORMAT: {
            struct buf out = { 0 };
            if (lq__tmpl_exec(s->tmpl, lb, *line, *n, ts, &out) == 0) {
                buf_reset(&lb->line);
                buf_append(&lb->line, out.len ? buf_head(&out) : "", buf_used(&out));
                *line = lb->line.len ? buf_head(&lb->line) : "";
                *n = buf_used(&lb->line);
            } else {
                set_err(lb, "TemplateFormatErr", out.len ? buf_head(&out) : "template error");
            }
            buf_free(&out);
            break;
        }
        case LQ_S_LABEL_FORMAT:
            for (int p = 0; p < s->nparams; p++) {
                const struct lq_param *pa = &s->params[p];
                if (pa->is_template) {
                    struct buf out = { 0 };
                    if (lq__tmpl_exec(pa->tmpl, lb, *line, *n, ts, &out) == 0)
                        lq_lb_set(lb, pa->name, strlen(pa->name), out.len ? buf_head(&out) : "", buf_used(&out));
                    else
                        set_err(lb, "TemplateFormatErr", "template error");
                    buf_free(&out);
                } else {
                    size_t vn = 0;
                    const char *v = lq_lb_get(lb, pa->value, &vn);
                    if (v) {
                        const char *copy = lb_str(lb, v, vn);
                        lq_lb_del(lb, pa->value);
                        lq_lb_set(lb, pa->name, strlen(pa->name), copy, vn);
                    }
                }
            }
            break;
        case LQ_S_DROP:
            for (int p = 0; p < s->nparams; p++)
                if (drop_matches(&s->params[p], lb))
                    lq_lb_del(lb, s->params[p].has_matcher ? s->params[p].m.name : s->params[p].name);
            break;
        case LQ_S_KEEP: {
            for (int k = lb->n - 1; k >= 0; k--) {
                bool keep = false;
                for (int p = 0; p < s->nparams && !keep; p++) {
                    const struct lq_param *pa = &s->params[p];
                    const char *name = pa->has_matcher ? pa->m.name : pa->name;
                    if (strcmp(name, lb->v[k].name) == 0)
                        keep = !pa->has_matcher || lq_matcher_matches(&pa->m, lb->v[k].value, strlen(lb->v[k].value));
                }
                if (!keep)
                    lb->v[k] = lb->v[--lb->n];
            }
            break;
        }
        case LQ_S_DECOLORIZE: {
            buf_reset(&lb->tmp);
            if (buf_reserve(&lb->tmp, *n + 1) == 0) {
                size_t o = decolorize(*line, *n, buf_tail(&lb->tmp));
                buf_reset(&lb->line);
                buf_append(&lb->line, buf_tail(&lb->tmp), o);
                *line = lb->line.len ? buf_head(&lb->line) : "";
                *n = o;
            }
            break;
        }
        }
    }
    return true;
}
