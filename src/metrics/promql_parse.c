/* promql_parse.c - PromQL lexer, recursive-descent parser with type checks, and
 * the printer behind /api/v1/format_query.
 *
 * Precedence, lowest first: or; and unless; == != <= < >= >; + -; * / % atan2;
 * ^ (right associative). Unary minus binds like *, so -a^b is -(a^b). Modifiers
 * (offset, @, [range], [range:step]) bind to the primary before them. Keywords
 * are case-insensitive, as in Prometheus; inside {} and by(...) every word is a
 * label name. Every error carries the byte position it was found at, reported as
 * LINE:COL, and nesting is bounded by PROMQL_MAX_DEPTH.
 */
#include "promql.h"
#include "prom_text.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- functions ---- */

#define V PROMQL_VECTOR
#define M PROMQL_MATRIX
#define S PROMQL_SCALAR
#define T PROMQL_STRING

static const struct promql_func funcs[] = {
    { "abs", { V }, 1, 0, V },
    { "absent", { V }, 1, 0, V },
    { "absent_over_time", { M }, 1, 0, V },
    { "acos", { V }, 1, 0, V },
    { "acosh", { V }, 1, 0, V },
    { "asin", { V }, 1, 0, V },
    { "asinh", { V }, 1, 0, V },
    { "atan", { V }, 1, 0, V },
    { "atanh", { V }, 1, 0, V },
    { "avg_over_time", { M }, 1, 0, V },
    { "ceil", { V }, 1, 0, V },
    { "changes", { M }, 1, 0, V },
    { "clamp", { V, S, S }, 3, 0, V },
    { "clamp_max", { V, S }, 2, 0, V },
    { "clamp_min", { V, S }, 2, 0, V },
    { "cos", { V }, 1, 0, V },
    { "cosh", { V }, 1, 0, V },
    { "count_over_time", { M }, 1, 0, V },
    { "day_of_month", { V }, 1, -1, V },
    { "day_of_week", { V }, 1, -1, V },
    { "day_of_year", { V }, 1, -1, V },
    { "days_in_month", { V }, 1, -1, V },
    { "deg", { V }, 1, 0, V },
    { "delta", { M }, 1, 0, V },
    { "deriv", { M }, 1, 0, V },
    { "exp", { V }, 1, 0, V },
    { "floor", { V }, 1, 0, V },
    { "histogram_count", { V }, 1, 0, V },
    { "histogram_fraction", { S, S, V }, 3, 0, V },
    { "histogram_quantile", { S, V }, 2, 0, V },
    { "histogram_sum", { V }, 1, 0, V },
    { "holt_winters", { M, S, S }, 3, 0, V },
    { "hour", { V }, 1, -1, V },
    { "idelta", { M }, 1, 0, V },
    { "increase", { M }, 1, 0, V },
    { "irate", { M }, 1, 0, V },
    { "label_join", { V, T, T, T }, 4, 1, V },
    { "label_replace", { V, T, T, T, T }, 5, 0, V },
    { "last_over_time", { M }, 1, 0, V },
    { "ln", { V }, 1, 0, V },
    { "log10", { V }, 1, 0, V },
    { "log2", { V }, 1, 0, V },
    { "max_over_time", { M }, 1, 0, V },
    { "min_over_time", { M }, 1, 0, V },
    { "minute", { V }, 1, -1, V },
    { "month", { V }, 1, -1, V },
    { "pi", { 0 }, 0, 0, S },
    { "predict_linear", { M, S }, 2, 0, V },
    { "present_over_time", { M }, 1, 0, V },
    { "quantile_over_time", { S, M }, 2, 0, V },
    { "rad", { V }, 1, 0, V },
    { "rate", { M }, 1, 0, V },
    { "resets", { M }, 1, 0, V },
    { "round", { V, S }, 2, -1, V },
    { "scalar", { V }, 1, 0, S },
    { "sgn", { V }, 1, 0, V },
    { "sin", { V }, 1, 0, V },
    { "sinh", { V }, 1, 0, V },
    { "sort", { V }, 1, 0, V },
    { "sort_desc", { V }, 1, 0, V },
    { "sqrt", { V }, 1, 0, V },
    { "stddev_over_time", { M }, 1, 0, V },
    { "stdvar_over_time", { M }, 1, 0, V },
    { "sum_over_time", { M }, 1, 0, V },
    { "tan", { V }, 1, 0, V },
    { "tanh", { V }, 1, 0, V },
    { "time", { 0 }, 0, 0, S },
    { "timestamp", { V }, 1, 0, V },
    { "vector", { S }, 1, 0, V },
    { "year", { V }, 1, -1, V },
};

#undef V
#undef M
#undef S
#undef T

const struct promql_func *promql__func_lookup(const char *name, size_t len)
{
    for (size_t i = 0; i < ARRAY_SIZE(funcs); i++)
        if (strlen(funcs[i].name) == len && memcmp(funcs[i].name, name, len) == 0)
            return &funcs[i];
    return NULL;
}

const char *promql_type_name(enum promql_type t)
{
    switch (t) {
    case PROMQL_SCALAR: return "scalar";
    case PROMQL_VECTOR: return "instant vector";
    case PROMQL_MATRIX: return "range vector";
    case PROMQL_STRING: return "string";
    default: return "none";
    }
}

static const char *const agg_names[] = {
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    "topk", "bottomk", "quantile", "count_values"
};
static const char *const op_names[] = {
    "+", "-", "*", "/", "%", "^", "atan2", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"
};

/* ---- lexer ---- */

enum tok {
    T_EOF, T_IDENT, T_NUM, T_DUR, T_STR, T_LPAREN, T_RPAREN, T_LBRACE, T_RBRACE, T_LBRACK,
    T_RBRACK, T_COMMA, T_COLON, T_AT, T_ASSIGN, T_EQ_RE, T_NEQ_RE, T_OP, T_ERR
};

struct parser {
    const char *q, *p;
    /* current token */
    enum tok tok;
    const char *ts;             /* its text */
    size_t tn;
    int tpos;
    enum promql_op op;          /* for T_OP */
    double num;
    int depth;
    char *err;
    size_t errlen;
    bool failed;
};

static void perr(struct parser *ps, int pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void perr(struct parser *ps, int pos, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = true;
    int line = 1, col = 1;
    for (int i = 0; i < pos && ps->q[i]; i++) {
        if (ps->q[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    int o = snprintf(ps->err, ps->errlen, "%d:%d: parse error: ", line, col);
    va_list ap;
    va_start(ap, fmt);
    if (o >= 0 && (size_t)o < ps->errlen)
        vsnprintf(ps->err + o, ps->errlen - (size_t)o, fmt, ap);
    va_end(ap);
}

static bool word_start(char c) { return isalpha((unsigned char)c) || c == '_' || c == ':'; }
static bool word_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == ':'; }

static bool tok_is(const struct parser *ps, const char *kw)
{
    return ps->tok == T_IDENT && strlen(kw) == ps->tn && strncasecmp(ps->ts, kw, ps->tn) == 0;
}

/* Parses a Prometheus duration ("1h30m", "5m", "100ms") at s; returns its length
 * or 0. Units must not repeat and must come largest first. */
static size_t lex_duration(const char *s, int64_t *ms)
{
    static const struct { const char *u; int64_t ms; } units[] = {
        { "y", 365LL * 86400000 }, { "w", 7LL * 86400000 }, { "d", 86400000 },
        { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 },
    };
    const char *p = s;
    int64_t total = 0;
    int last = -1;
    while (isdigit((unsigned char)*p)) {
        int64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n > INT64_MAX / 10 - 10)
                return 0;
            n = n * 10 + (*p++ - '0');
        }
        int u = -1;
        if (p[0] == 'm' && p[1] == 's')
            u = 6;
        else
            for (int i = 0; i < 6; i++)
                if (*p == units[i].u[0])
                    u = i;
        if (u < 0 || u <= last)
            return 0;
        if (n > INT64_MAX / units[u].ms || total > INT64_MAX - n * units[u].ms)
            return 0;
        total += n * units[u].ms;
        p += strlen(units[u].u);
        last = u;
    }
    if (last < 0 || isalnum((unsigned char)*p) || *p == '_')
        return 0;
    *ms = total;
    return (size_t)(p - s);
}

static void next(struct parser *ps)
{
    const char *p = ps->p;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p == '#') {
            while (*p && *p != '\n')
                p++;
            continue;
        }
        break;
    }
    ps->ts = p;
    ps->tpos = (int)(p - ps->q);
    ps->tn = 1;
    char c = *p;
    if (!c) {
        ps->tok = T_EOF;
        ps->tn = 0;
        ps->p = p;
        return;
    }
    if (word_start(c)) {
        const char *s = p;
        while (word_char(*p))
            p++;
        ps->tn = (size_t)(p - s);
        ps->tok = T_IDENT;
        if ((ps->tn == 3 && strncasecmp(s, "inf", 3) == 0) ||
            (ps->tn == 3 && strncasecmp(s, "nan", 3) == 0)) {
            ps->tok = T_NUM;
            ps->num = tolower((unsigned char)s[0]) == 'i' ? INFINITY : NAN;
        } else if ((ps->tn == 3 && strncasecmp(s, "and", 3) == 0) ||
                   (ps->tn == 2 && strncasecmp(s, "or", 2) == 0) ||
                   (ps->tn == 6 && strncasecmp(s, "unless", 6) == 0) ||
                   (ps->tn == 5 && strncasecmp(s, "atan2", 5) == 0)) {
            ps->tok = T_OP;
            ps->op = tolower((unsigned char)s[0]) == 'a'
                         ? (tolower((unsigned char)s[1]) == 'n' ? PQ_AND : PQ_ATAN2)
                         : tolower((unsigned char)s[0]) == 'o' ? PQ_OR : PQ_UNLESS;
        }
        ps->p = p;
        return;
    }
    if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)p[1]))) {
        int64_t ms;
        size_t dl = lex_duration(p, &ms);
        if (dl) {
            ps->tok = T_DUR;
            ps->tn = dl;
            ps->num = (double)ms;
            ps->p = p + dl;
            return;
        }
        const char *s = p;
        if (c == '0' && (p[1] == 'x' || p[1] == 'X')) {
            p += 2;
            while (isxdigit((unsigned char)*p))
                p++;
        } else {
            while (isdigit((unsigned char)*p))
                p++;
            if (*p == '.') {
                p++;
                while (isdigit((unsigned char)*p))
                    p++;
            }
            if ((*p == 'e' || *p == 'E') &&
                (isdigit((unsigned char)p[1]) ||
                 ((p[1] == '+' || p[1] == '-') && isdigit((unsigned char)p[2])))) {
                p += 2;
                while (isdigit((unsigned char)*p))
                    p++;
            }
        }
        ps->tn = (size_t)(p - s);
        if (word_char(*p) || *p == '.') {
            while (word_char(*p) || *p == '.')
                p++;
            ps->tok = T_ERR;
            perr(ps, ps->tpos, "bad number or duration syntax: \"%.*s\"", (int)(p - s), s);
            ps->p = p;
            return;
        }
        char tmp[64];
        if (ps->tn >= sizeof(tmp)) {
            ps->tok = T_ERR;
            perr(ps, ps->tpos, "number too long");
            return;
        }
        memcpy(tmp, s, ps->tn);
        tmp[ps->tn] = 0;
        if (tmp[0] == '0' && (tmp[1] == 'x' || tmp[1] == 'X'))
            ps->num = (double)strtoull(tmp, NULL, 16);
        else
            ps->num = strtod(tmp, NULL);
        ps->tok = T_NUM;
        ps->p = p;
        return;
    }
    if (c == '"' || c == '\'' || c == '`') {
        const char *s = p++;
        while (*p && *p != c) {
            if (*p == '\\' && c != '`' && p[1])
                p++;
            if (*p == '\n' && c != '`')
                break;
            p++;
        }
        if (*p != c) {
            ps->tok = T_ERR;
            perr(ps, ps->tpos, "unterminated quoted string");
            ps->p = p;
            return;
        }
        p++;
        ps->tok = T_STR;
        ps->tn = (size_t)(p - s);
        ps->p = p;
        return;
    }
    ps->p = p + 1;
    switch (c) {
    case '(': ps->tok = T_LPAREN; return;
    case ')': ps->tok = T_RPAREN; return;
    case '{': ps->tok = T_LBRACE; return;
    case '}': ps->tok = T_RBRACE; return;
    case '[': ps->tok = T_LBRACK; return;
    case ']': ps->tok = T_RBRACK; return;
    case ',': ps->tok = T_COMMA; return;
    case ':': ps->tok = T_COLON; return;
    case '@': ps->tok = T_AT; return;
    case '+': ps->tok = T_OP; ps->op = PQ_ADD; return;
    case '-': ps->tok = T_OP; ps->op = PQ_SUB; return;
    case '*': ps->tok = T_OP; ps->op = PQ_MUL; return;
    case '/': ps->tok = T_OP; ps->op = PQ_DIV; return;
    case '%': ps->tok = T_OP; ps->op = PQ_MOD; return;
    case '^': ps->tok = T_OP; ps->op = PQ_POW; return;
    case '=':
        if (p[1] == '=') {
            ps->p = p + 2;
            ps->tn = 2;
            ps->tok = T_OP;
            ps->op = PQ_EQLC;
        } else if (p[1] == '~') {
            ps->p = p + 2;
            ps->tn = 2;
            ps->tok = T_EQ_RE;
        } else {
            ps->tok = T_ASSIGN;
        }
        return;
    case '!':
        ps->tn = 2;
        ps->p = p + 2;
        if (p[1] == '=') {
            ps->tok = T_OP;
            ps->op = PQ_NEQ;
            return;
        }
        if (p[1] == '~') {
            ps->tok = T_NEQ_RE;
            return;
        }
        break;
    case '<': case '>':
        ps->tok = T_OP;
        if (p[1] == '=') {
            ps->p = p + 2;
            ps->tn = 2;
            ps->op = c == '<' ? PQ_LTE : PQ_GTE;
        } else {
            ps->op = c == '<' ? PQ_LSS : PQ_GTR;
        }
        return;
    default:
        break;
    }
    ps->tok = T_ERR;
    perr(ps, ps->tpos, "unexpected character: '%c'", isprint((unsigned char)c) ? c : '?');
}

static const char *tok_desc(const struct parser *ps, char *buf, size_t len)
{
    switch (ps->tok) {
    case T_EOF: return "end of input";
    case T_STR: snprintf(buf, len, "string %.*s", (int)MIN(ps->tn, 40), ps->ts); return buf;
    case T_NUM: snprintf(buf, len, "number \"%.*s\"", (int)MIN(ps->tn, 40), ps->ts); return buf;
    case T_DUR: snprintf(buf, len, "duration \"%.*s\"", (int)MIN(ps->tn, 40), ps->ts); return buf;
    case T_IDENT: snprintf(buf, len, "identifier \"%.*s\"", (int)MIN(ps->tn, 60), ps->ts); return buf;
    default: snprintf(buf, len, "\"%.*s\"", (int)MIN(ps->tn, 10), ps->ts); return buf;
    }
}

static void unexpected(struct parser *ps, const char *ctx)
{
    char b[100];
    if (ctx)
        perr(ps, ps->tpos, "unexpected %s in %s", tok_desc(ps, b, sizeof(b)), ctx);
    else
        perr(ps, ps->tpos, "unexpected %s", tok_desc(ps, b, sizeof(b)));
}

/* Unquotes the current T_STR token (Go escapes); malloc'd. */
static char *unquote(struct parser *ps)
{
    const char *p = ps->ts + 1, *end = ps->ts + ps->tn - 1;
    char q = ps->ts[0];
    struct buf b = BUF_INIT;
    buf_reserve(&b, (size_t)(end - p) + 1);
    while (p < end) {
        if (*p != '\\' || q == '`') {
            buf_putc(&b, *p++);
            continue;
        }
        p++;
        char c = *p++;
        uint32_t cp = 0;
        int nhex = 0;
        switch (c) {
        case 'a': buf_putc(&b, '\a'); continue;
        case 'b': buf_putc(&b, '\b'); continue;
        case 'f': buf_putc(&b, '\f'); continue;
        case 'n': buf_putc(&b, '\n'); continue;
        case 'r': buf_putc(&b, '\r'); continue;
        case 't': buf_putc(&b, '\t'); continue;
        case 'v': buf_putc(&b, '\v'); continue;
        case '\\': buf_putc(&b, '\\'); continue;
        case '\'':
        case '"':
            if (c != q)
                goto bad;
            buf_putc(&b, c);
            continue;
        case 'x': nhex = 2; break;
        case 'u': nhex = 4; break;
        case 'U': nhex = 8; break;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7':
            if (end - p < 2 || p[0] < '0' || p[0] > '7' || p[1] < '0' || p[1] > '7')
                goto bad;
            cp = (uint32_t)((c - '0') * 64 + (p[0] - '0') * 8 + (p[1] - '0'));
            if (cp > 255)
                goto bad;
            p += 2;
            buf_putc(&b, (char)cp);
            continue;
        default:
            goto bad;
        }
        for (int i = 0; i < nhex; i++, p++) {
            if (p >= end || !isxdigit((unsigned char)*p))
                goto bad;
            cp = cp * 16 + (uint32_t)(isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a' + 10));
        }
        if (nhex == 2) {
            buf_putc(&b, (char)cp);
        } else {
            if (cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
                goto bad;
            char u[4];
            int n;
            if (cp < 0x80) { u[0] = (char)cp; n = 1; }
            else if (cp < 0x800) { u[0] = (char)(0xc0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
            else if (cp < 0x10000) { u[0] = (char)(0xe0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[2] = (char)(0x80 | (cp & 0x3f)); n = 3; }
            else { u[0] = (char)(0xf0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3f)); u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (char)(0x80 | (cp & 0x3f)); n = 4; }
            buf_append(&b, u, (size_t)n);
        }
    }
    if (!b.data)
        return strdup("");
    return buf_steal(&b);
bad:
    buf_free(&b);
    perr(ps, ps->tpos, "invalid escape sequence in string %.*s", (int)MIN(ps->tn, 40), ps->ts);
    return NULL;
}

/* ---- tree ---- */

static struct promql_node *mk(struct parser *ps, enum promql_kind k, int pos)
{
    struct promql_node *n = calloc(1, sizeof(*n));
    if (!n) {
        perr(ps, pos, "out of memory");
        return NULL;
    }
    n->kind = k;
    n->pos = pos;
    return n;
}

static int add_kid(struct parser *ps, struct promql_node *n, struct promql_node *k)
{
    struct promql_node **a = realloc(n->kids, (n->nkids + 1) * sizeof(*a));
    if (!a) {
        perr(ps, n->pos, "out of memory");
        promql_free(k);
        return -1;
    }
    n->kids = a;
    n->kids[n->nkids++] = k;
    return 0;
}

static void free_strs(char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

void promql_free(struct promql_node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        promql_free(n->kids[i]);
    free(n->kids);
    for (size_t i = 0; i < n->nm; i++)
        tsdb_matcher_free(&n->m[i]);
    free(n->m);
    free(n->str);
    free(n->name);
    free_strs(n->labels, n->nlabels);
    free_strs(n->include, n->ninclude);
    free(n);
}

static struct promql_node *parse_expr(struct parser *ps, int minprec);

static bool is_label_name(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

/* "(" label, ... ")" for by/without/on/ignoring/group_x. */
static int parse_label_list(struct parser *ps, char ***out, size_t *nout)
{
    if (ps->tok != T_LPAREN) {
        unexpected(ps, "grouping opts, expected \"(\"");
        return -1;
    }
    next(ps);
    while (ps->tok != T_RPAREN) {
        if (ps->tok != T_IDENT || !is_label_name(ps->ts, ps->tn)) {
            unexpected(ps, "grouping opts, expected label");
            return -1;
        }
        char **a = realloc(*out, (*nout + 1) * sizeof(*a));
        if (!a) {
            perr(ps, ps->tpos, "out of memory");
            return -1;
        }
        *out = a;
        if (!(a[*nout] = strndup(ps->ts, ps->tn))) {
            perr(ps, ps->tpos, "out of memory");
            return -1;
        }
        (*nout)++;
        next(ps);
        if (ps->tok == T_COMMA) {
            next(ps);
            continue;
        }
        if (ps->tok != T_RPAREN) {
            unexpected(ps, "grouping opts, expected \",\" or \")\"");
            return -1;
        }
    }
    next(ps);
    return 0;
}

static int add_matcher(struct parser *ps, struct promql_node *n, const char *name,
                       enum tsdb_match_op op, const char *value, int pos)
{
    struct tsdb_matcher *a = realloc(n->m, (n->nm + 1) * sizeof(*a));
    char e[200];
    if (!a) {
        perr(ps, pos, "out of memory");
        return -1;
    }
    n->m = a;
    if (tsdb_matcher_init(&n->m[n->nm], name, op, value, e, sizeof(e))) {
        perr(ps, pos, "%s", e);
        return -1;
    }
    n->nm++;
    return 0;
}

/* { name op "value", ... } into n's matchers. */
static int parse_matchers(struct parser *ps, struct promql_node *n)
{
    next(ps);   /* { */
    while (ps->tok != T_RBRACE) {
        if (ps->tok != T_IDENT) {
            unexpected(ps, "label matching, expected label");
            return -1;
        }
        int pos = ps->tpos;
        if (!is_label_name(ps->ts, ps->tn)) {
            perr(ps, pos, "invalid label name \"%.*s\"", (int)MIN(ps->tn, 60), ps->ts);
            return -1;
        }
        char *name = strndup(ps->ts, ps->tn);
        if (!name)
            return -1;
        next(ps);
        enum tsdb_match_op op;
        if (ps->tok == T_ASSIGN)
            op = TSDB_EQ;
        else if (ps->tok == T_OP && ps->op == PQ_NEQ)
            op = TSDB_NEQ;
        else if (ps->tok == T_EQ_RE)
            op = TSDB_RE;
        else if (ps->tok == T_NEQ_RE)
            op = TSDB_NRE;
        else {
            free(name);
            unexpected(ps, "label matching, expected one of \"=\", \"!=\", \"=~\" or \"!~\"");
            return -1;
        }
        next(ps);
        if (ps->tok != T_STR) {
            free(name);
            unexpected(ps, "label matching, expected string");
            return -1;
        }
        char *val = unquote(ps);
        if (!val) {
            free(name);
            return -1;
        }
        int r = add_matcher(ps, n, name, op, val, pos);
        free(name);
        free(val);
        if (r)
            return -1;
        next(ps);
        if (ps->tok == T_COMMA) {
            next(ps);
            continue;
        }
        if (ps->tok != T_RBRACE) {
            unexpected(ps, "label matching, expected \",\" or \"}\"");
            return -1;
        }
    }
    next(ps);
    return 0;
}

static int check_selector(struct parser *ps, struct promql_node *n)
{
    /* the metric name may be given once */
    if (n->name)
        for (size_t i = 1; i < n->nm; i++)
            if (strcmp(n->m[i].name, "__name__") == 0) {
                perr(ps, n->pos, "metric name must not be set twice: \"%s\" or \"%s\"", n->name,
                     n->m[i].value);
                return -1;
            }
    for (size_t i = 0; i < n->nm; i++)
        if (!tsdb_matcher_matches(&n->m[i], ""))
            return 0;
    perr(ps, n->pos, "vector selector must contain at least one non-empty matcher");
    return -1;
}

static const char *const aggs[] = {
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values"
};

static int agg_lookup(const char *s, size_t n)
{
    for (size_t i = 0; i < ARRAY_SIZE(aggs); i++)
        if (strlen(aggs[i]) == n && strncasecmp(aggs[i], s, n) == 0)
            return (int)i;
    return -1;
}

static bool is_keyword(const struct parser *ps)
{
    static const char *const kw[] = {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"
    };
    for (size_t i = 0; i < ARRAY_SIZE(kw); i++)
        if (tok_is(ps, kw[i]))
            return true;
    return false;
}

static struct promql_node *parse_aggregation(struct parser *ps, int a)
{
    struct promql_node *n = mk(ps, PQ_AGG, ps->tpos);
    if (!n)
        return NULL;
    n->agg = (enum promql_agg)a;
    n->type = PROMQL_VECTOR;
    next(ps);
    bool grouped = false;
    if (tok_is(ps, "by") || tok_is(ps, "without")) {
        n->without = tok_is(ps, "without");
        next(ps);
        if (parse_label_list(ps, &n->labels, &n->nlabels))
            goto fail;
        grouped = true;
    }
    if (ps->tok != T_LPAREN) {
        unexpected(ps, "aggregation, expected \"(\"");
        goto fail;
    }
    int lp = ps->tpos;
    next(ps);
    while (ps->tok != T_RPAREN) {
        struct promql_node *k = parse_expr(ps, 0);
        if (!k || add_kid(ps, n, k))
            goto fail;
        if (ps->tok == T_COMMA) {
            next(ps);
            continue;
        }
        if (ps->tok != T_RPAREN) {
            unexpected(ps, "aggregation, expected \",\" or \")\"");
            goto fail;
        }
    }
    next(ps);
    if (!grouped && (tok_is(ps, "by") || tok_is(ps, "without"))) {
        n->without = tok_is(ps, "without");
        next(ps);
        if (parse_label_list(ps, &n->labels, &n->nlabels))
            goto fail;
    }
    bool param = n->agg == PQ_TOPK || n->agg == PQ_BOTTOMK || n->agg == PQ_QUANTILE ||
                 n->agg == PQ_COUNT_VALUES;
    size_t want = param ? 2 : 1;
    if (n->nkids != want) {
        perr(ps, lp, "wrong number of arguments for aggregate expression provided, expected %zu, got %zu",
             want, n->nkids);
        goto fail;
    }
    if (param) {
        /* kids: expression first, then the parameter */
        struct promql_node *p = n->kids[0];
        n->kids[0] = n->kids[1];
        n->kids[1] = p;
        enum promql_type pt = n->agg == PQ_COUNT_VALUES ? PROMQL_STRING : PROMQL_SCALAR;
        if (p->type != pt) {
            perr(ps, p->pos, "expected type %s in aggregation parameter, got %s",
                 promql_type_name(pt), promql_type_name(p->type));
            goto fail;
        }
    }
    if (n->kids[0]->type != PROMQL_VECTOR) {
        perr(ps, n->kids[0]->pos, "expected type instant vector in aggregation expression, got %s",
             promql_type_name(n->kids[0]->type));
        goto fail;
    }
    if (n->agg == PQ_COUNT_VALUES && !is_label_name(promql_str(n->kids[1]), strlen(promql_str(n->kids[1])))) {
        perr(ps, n->kids[1]->pos, "invalid label name \"%s\"", promql_str(n->kids[1]));
        goto fail;
    }
    return n;
fail:
    promql_free(n);
    return NULL;
}

static struct promql_node *parse_call(struct parser *ps, const struct promql_func *f)
{
    struct promql_node *n = mk(ps, PQ_CALL, ps->tpos);
    if (!n)
        return NULL;
    n->func = f;
    n->type = f->ret;
    next(ps);   /* name */
    next(ps);   /* ( */
    while (ps->tok != T_RPAREN) {
        struct promql_node *k = parse_expr(ps, 0);
        if (!k || add_kid(ps, n, k))
            goto fail;
        if (ps->tok == T_COMMA) {
            next(ps);
            continue;
        }
        if (ps->tok != T_RPAREN) {
            unexpected(ps, "function call, expected \",\" or \")\"");
            goto fail;
        }
    }
    next(ps);
    size_t na = n->nkids, want = (size_t)f->nargs;
    if (f->variadic == 0 && na != want) {
        perr(ps, n->pos, "expected %zu argument(s) in call to \"%s\", got %zu", want, f->name, na);
        goto fail;
    }
    if (f->variadic < 0 && (na > want || na + 1 < want)) {
        if (na > want)
            perr(ps, n->pos, "expected at most %zu argument(s) in call to \"%s\", got %zu", want, f->name, na);
        else
            perr(ps, n->pos, "expected at least %zu argument(s) in call to \"%s\", got %zu", want - 1, f->name, na);
        goto fail;
    }
    if (f->variadic > 0 && na < want) {
        perr(ps, n->pos, "expected at least %zu argument(s) in call to \"%s\", got %zu", want, f->name, na);
        goto fail;
    }
    for (size_t i = 0; i < na; i++) {
        enum promql_type t = f->args[i < want ? i : want - 1];
        if (n->kids[i]->type != t) {
            perr(ps, n->kids[i]->pos, "expected type %s in call to function \"%s\", got %s",
                 promql_type_name(t), f->name, promql_type_name(n->kids[i]->type));
            goto fail;
        }
    }
    return n;
fail:
    promql_free(n);
    return NULL;
}

static struct promql_node *parse_primary(struct parser *ps)
{
    struct promql_node *n = NULL;
    int pos = ps->tpos;
    switch (ps->tok) {
    case T_NUM:
        if (!(n = mk(ps, PQ_NUM, pos)))
            return NULL;
        n->num = ps->num;
        n->type = PROMQL_SCALAR;
        next(ps);
        return n;
    case T_STR:
        if (!(n = mk(ps, PQ_STR, pos)))
            return NULL;
        n->type = PROMQL_STRING;
        if (!(n->str = unquote(ps))) {
            promql_free(n);
            return NULL;
        }
        next(ps);
        return n;
    case T_LPAREN:
        if (!(n = mk(ps, PQ_PAREN, pos)))
            return NULL;
        next(ps);
        {
            struct promql_node *k = parse_expr(ps, 0);
            if (!k || add_kid(ps, n, k)) {
                promql_free(n);
                return NULL;
            }
        }
        if (ps->tok != T_RPAREN) {
            unexpected(ps, "paren expression, expected \")\"");
            promql_free(n);
            return NULL;
        }
        next(ps);
        n->type = n->kids[0]->type;
        return n;
    case T_LBRACE:
        if (!(n = mk(ps, PQ_VSEL, pos)))
            return NULL;
        n->type = PROMQL_VECTOR;
        if (parse_matchers(ps, n) || check_selector(ps, n)) {
            promql_free(n);
            return NULL;
        }
        return n;
    case T_IDENT: {
        int a = agg_lookup(ps->ts, ps->tn);
        /* an aggregation, unless the word is a metric name (not followed by "(",
         * "by" or "without") */
        const char *after = ps->p;
        while (*after == ' ' || *after == '\t' || *after == '\n' || *after == '\r')
            after++;
        if (a >= 0 && (*after == '(' || strncasecmp(after, "by", 2) == 0 ||
                       strncasecmp(after, "without", 7) == 0))
            return parse_aggregation(ps, a);
        if (*after == '(') {
            const struct promql_func *f = promql__func_lookup(ps->ts, ps->tn);
            if (!f) {
                perr(ps, pos, "unknown function with name \"%.*s\"", (int)MIN(ps->tn, 60), ps->ts);
                return NULL;
            }
            return parse_call(ps, f);
        }
        if (is_keyword(ps)) {
            unexpected(ps, NULL);
            return NULL;
        }
        if (!(n = mk(ps, PQ_VSEL, pos)))
            return NULL;
        n->type = PROMQL_VECTOR;
        if (!(n->name = strndup(ps->ts, ps->tn)) ||
            add_matcher(ps, n, "__name__", TSDB_EQ, n->name, pos)) {
            promql_free(n);
            return NULL;
        }
        next(ps);
        if (ps->tok == T_LBRACE && parse_matchers(ps, n)) {
            promql_free(n);
            return NULL;
        }
        if (check_selector(ps, n)) {
            promql_free(n);
            return NULL;
        }
        return n;
    }
    case T_ERR:
        return NULL;
    default:
        unexpected(ps, NULL);
        return NULL;
    }
}

/* A duration token at the parser's position, or an error. */
static int parse_duration(struct parser *ps, int64_t *ms, const char *ctx)
{
    if (ps->tok != T_DUR) {
        unexpected(ps, ctx);
        return -1;
    }
    *ms = (int64_t)ps->num;
    next(ps);
    return 0;
}

static bool sel_or_subq(const struct promql_node *n)
{
    return n->kind == PQ_VSEL || n->kind == PQ_MSEL || n->kind == PQ_SUBQ;
}

/* Postfix modifiers after a primary: [range], [range:step], offset, @. */
static struct promql_node *parse_postfix(struct parser *ps, struct promql_node *n)
{
    for (;;) {
        if (ps->tok == T_LBRACK) {
            int pos = ps->tpos;
            next(ps);
            int64_t range, step = 0;
            if (parse_duration(ps, &range, "range, expected duration"))
                goto fail;
            if (ps->tok == T_IDENT && ps->ts[0] == ':') {
                /* "[5m:1m]": the lexer took ":1m" for a metric name */
                ps->p = ps->ts + 1;
                ps->tok = T_COLON;
            }
            if (ps->tok == T_COLON) {
                next(ps);
                if (ps->tok == T_DUR && parse_duration(ps, &step, NULL))
                    goto fail;
                if (ps->tok != T_RBRACK) {
                    unexpected(ps, "subquery selector, expected \"]\"");
                    goto fail;
                }
                next(ps);
                if (n->type != PROMQL_VECTOR) {
                    perr(ps, pos, "subquery is only allowed on instant vector, got %s",
                         promql_type_name(n->type));
                    goto fail;
                }
                if (n->kind == PQ_VSEL && (n->offset || n->at)) {
                    /* allowed: the selector keeps its modifiers */
                }
                struct promql_node *s = mk(ps, PQ_SUBQ, n->pos);
                if (!s || add_kid(ps, s, n))
                    return NULL;
                s->range = range;
                s->step = step;
                s->type = PROMQL_MATRIX;
                n = s;
                continue;
            }
            if (ps->tok != T_RBRACK) {
                unexpected(ps, "range, expected \"]\" or \":\"");
                goto fail;
            }
            next(ps);
            if (n->kind != PQ_VSEL) {
                perr(ps, pos, "ranges only allowed for vector selectors");
                goto fail;
            }
            if (n->offset || n->at) {
                perr(ps, pos, "no offset or @ modifiers allowed before range");
                goto fail;
            }
            n->kind = PQ_MSEL;
            n->range = range;
            n->type = PROMQL_MATRIX;
            continue;
        }
        if (tok_is(ps, "offset")) {
            int pos = ps->tpos;
            next(ps);
            int sign = 1;
            if (ps->tok == T_OP && (ps->op == PQ_SUB || ps->op == PQ_ADD)) {
                sign = ps->op == PQ_SUB ? -1 : 1;
                next(ps);
            }
            int64_t d;
            if (parse_duration(ps, &d, "offset, expected duration"))
                goto fail;
            if (!sel_or_subq(n)) {
                perr(ps, pos, "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery");
                goto fail;
            }
            if (n->offset) {
                perr(ps, pos, "offset may not be set multiple times");
                goto fail;
            }
            n->offset = sign * d;
            continue;
        }
        if (ps->tok == T_AT) {
            int pos = ps->tpos;
            next(ps);
            if (!sel_or_subq(n)) {
                perr(ps, pos, "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery");
                goto fail;
            }
            if (n->at) {
                perr(ps, pos, "@ <timestamp> may not be set multiple times");
                goto fail;
            }
            if (tok_is(ps, "start") || tok_is(ps, "end")) {
                n->at = tok_is(ps, "start") ? PQ_AT_START : PQ_AT_END;
                next(ps);
                if (ps->tok != T_LPAREN) {
                    unexpected(ps, "@, expected \"(\"");
                    goto fail;
                }
                next(ps);
                if (ps->tok != T_RPAREN) {
                    unexpected(ps, "@, expected \")\"");
                    goto fail;
                }
                next(ps);
                continue;
            }
            int sign = 1;
            if (ps->tok == T_OP && (ps->op == PQ_SUB || ps->op == PQ_ADD)) {
                sign = ps->op == PQ_SUB ? -1 : 1;
                next(ps);
            }
            if (ps->tok != T_NUM) {
                unexpected(ps, "@, expected timestamp");
                goto fail;
            }
            double t = ps->num * sign;
            if (!isfinite(t) || fabs(t) > 9.2e15) {
                perr(ps, pos, "timestamp out of bounds for @ modifier: %g", t);
                goto fail;
            }
            n->at = PQ_AT_TIME;
            n->at_ms = (int64_t)llround(t * 1000.0);
            next(ps);
            continue;
        }
        return n;
    }
fail:
    promql_free(n);
    return NULL;
}

static struct promql_node *parse_unary(struct parser *ps)
{
    if (ps->tok == T_OP && (ps->op == PQ_SUB || ps->op == PQ_ADD)) {
        bool neg = ps->op == PQ_SUB;
        int pos = ps->tpos;
        next(ps);
        struct promql_node *k = parse_expr(ps, 6);
        if (!k)
            return NULL;
        if (k->type != PROMQL_SCALAR && k->type != PROMQL_VECTOR) {
            perr(ps, pos, "unary expression only allowed on expressions of type scalar or instant vector, got %s",
                 promql_type_name(k->type));
            promql_free(k);
            return NULL;
        }
        if (!neg)
            return k;
        if (k->kind == PQ_NUM) {
            k->num = -k->num;
            k->pos = pos;
            return k;
        }
        struct promql_node *n = mk(ps, PQ_NEG, pos);
        if (!n || add_kid(ps, n, k)) {
            if (!n)
                promql_free(k);
            promql_free(n);
            return NULL;
        }
        n->type = k->type;
        return n;
    }
    struct promql_node *n = parse_primary(ps);
    if (!n)
        return NULL;
    return parse_postfix(ps, n);
}

static int prec(enum promql_op op)
{
    switch (op) {
    case PQ_OR: return 1;
    case PQ_AND: case PQ_UNLESS: return 2;
    case PQ_EQLC: case PQ_NEQ: case PQ_GTR: case PQ_LSS: case PQ_GTE: case PQ_LTE: return 3;
    case PQ_ADD: case PQ_SUB: return 4;
    case PQ_MUL: case PQ_DIV: case PQ_MOD: case PQ_ATAN2: return 5;
    case PQ_POW: return 6;
    }
    return 0;
}

static bool is_cmp(enum promql_op op) { return op >= PQ_EQLC && op <= PQ_LTE; }
static bool is_set(enum promql_op op) { return op >= PQ_AND; }

/* Modifiers after a binary operator: bool, on/ignoring(...), group_x(...). */
static int parse_bin_mods(struct parser *ps, struct promql_node *n)
{
    if (tok_is(ps, "bool")) {
        n->bool_mod = true;
        next(ps);
    }
    if (tok_is(ps, "on") || tok_is(ps, "ignoring")) {
        n->matching = true;
        n->on = tok_is(ps, "on");
        next(ps);
        if (parse_label_list(ps, &n->labels, &n->nlabels))
            return -1;
        if (tok_is(ps, "group_left") || tok_is(ps, "group_right")) {
            n->card = tok_is(ps, "group_left") ? 1 : 2;
            next(ps);
            if (ps->tok == T_LPAREN && parse_label_list(ps, &n->include, &n->ninclude))
                return -1;
        }
    }
    return 0;
}

static struct promql_node *parse_expr(struct parser *ps, int minprec)
{
    if (++ps->depth > PROMQL_MAX_DEPTH) {
        perr(ps, ps->tpos, "expression nested too deeply (more than %d levels)", PROMQL_MAX_DEPTH);
        return NULL;
    }
    struct promql_node *lhs = parse_unary(ps);
    while (lhs && ps->tok == T_OP && prec(ps->op) >= minprec) {
        enum promql_op op = ps->op;
        int pos = ps->tpos;
        int p = prec(op);
        next(ps);
        struct promql_node *n = mk(ps, PQ_BIN, pos);
        if (!n || add_kid(ps, n, lhs)) {
            if (!n)
                promql_free(lhs);
            promql_free(n);
            lhs = NULL;
            break;
        }
        lhs = NULL;
        n->op = op;
        if (parse_bin_mods(ps, n)) {
            promql_free(n);
            break;
        }
        struct promql_node *rhs = parse_expr(ps, op == PQ_POW ? p : p + 1);
        if (!rhs || add_kid(ps, n, rhs)) {
            promql_free(n);
            break;
        }
        /* Prometheus's checks, in its order (parser/parse.go, checkAST) */
        enum promql_type lt = n->kids[0]->type, rt = n->kids[1]->type;
        const char *why = NULL;
        if (n->bool_mod && !is_cmp(op))
            why = "bool modifier can only be used on comparison operators";
        else if (is_cmp(op) && !n->bool_mod && lt == PROMQL_SCALAR && rt == PROMQL_SCALAR)
            why = "comparisons between scalars must use BOOL modifier";
        if (!why && n->on)
            for (size_t i = 0; i < n->ninclude; i++)
                for (size_t j = 0; j < n->nlabels; j++)
                    if (strcmp(n->include[i], n->labels[j]) == 0) {
                        perr(ps, pos, "label \"%s\" must not occur in ON and GROUP clause at once",
                             n->include[i]);
                        goto bad;
                    }
        if (!why && ((lt != PROMQL_SCALAR && lt != PROMQL_VECTOR) || (rt != PROMQL_SCALAR && rt != PROMQL_VECTOR)))
            why = "binary expression must contain only scalar and instant vector types";
        if (!why && n->matching && (lt != PROMQL_VECTOR || rt != PROMQL_VECTOR)) {
            /* matching clauses on a scalar operand: an error only with labels in
               on/ignoring; empty ones are dropped, as Prometheus drops them */
            if (n->nlabels)
                why = "vector matching only allowed between instant vectors";
            free_strs(n->labels, n->nlabels);
            free_strs(n->include, n->ninclude);
            n->labels = n->include = NULL;
            n->nlabels = n->ninclude = 0;
            n->matching = n->on = false;
            n->card = 0;
        }
        if (why) {
            perr(ps, pos, "%s", why);
            goto bad;
        }
        if (is_set(op) && n->card) {
            perr(ps, pos, "no grouping allowed for \"%s\" operation", op_names[op]);
            goto bad;
        }
        if (is_set(op) && (lt == PROMQL_SCALAR || rt == PROMQL_SCALAR)) {
            perr(ps, pos, "set operator \"%s\" not allowed in binary scalar expression", op_names[op]);
            goto bad;
        }
        n->type = lt == PROMQL_SCALAR && rt == PROMQL_SCALAR ? PROMQL_SCALAR : PROMQL_VECTOR;
        lhs = n;
        continue;
bad:
        promql_free(n);
        break;
    }
    ps->depth--;
    if (ps->failed) {
        promql_free(lhs);
        return NULL;
    }
    return lhs;
}

struct promql_node *promql_parse(const char *q, char *err, size_t errlen)
{
    struct parser ps = { .q = q, .p = q, .err = err, .errlen = errlen };
    if (strlen(q) > PROMQL_MAX_QUERY) {
        snprintf(err, errlen, "1:1: parse error: query longer than %u bytes", PROMQL_MAX_QUERY);
        return NULL;
    }
    next(&ps);
    if (ps.tok == T_EOF) {
        perr(&ps, 0, "no expression found in input");
        return NULL;
    }
    struct promql_node *n = parse_expr(&ps, 0);
    if (n && ps.tok != T_EOF) {
        unexpected(&ps, NULL);
        promql_free(n);
        return NULL;
    }
    if (!n && !ps.failed)
        perr(&ps, ps.tpos, "unexpected end of input");
    return n;
}

/* ---- printing ---- */

/* Go's strconv.FormatFloat(v, mode, -1, 64) for mode 'g' (what fmt.Sprint
 * prints), 'f' and 'e', and 'j' for Prometheus's JSON ('f', but 'e' below 1e-6 and
 * from 1e21 on): the shortest digits that read back as v. */
static void fmt_duration(struct buf *b, int64_t ms)
{
    static const struct { const char *u; int64_t ms; } units[] = {
        { "y", 365LL * 86400000 }, { "w", 7LL * 86400000 }, { "d", 86400000 },
        { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 },
    };
    if (ms == 0) {
        buf_puts(b, "0s");
        return;
    }
    if (ms < 0) {
        buf_putc(b, '-');
        ms = -ms;
    }
    for (size_t i = 0; i < ARRAY_SIZE(units); i++)
        if (ms >= units[i].ms) {
            buf_printf(b, "%lld%s", (long long)(ms / units[i].ms), units[i].u);
            ms %= units[i].ms;
        }
}

static void fmt_quoted(struct buf *b, const char *s)
{
    buf_putc(b, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c == '\n')
            buf_puts(b, "\\n");
        else if (c == '\t')
            buf_puts(b, "\\t");
        else if (c == '\r')
            buf_puts(b, "\\r");
        else if (c < 0x20 || c == 0x7f)
            buf_printf(b, "\\x%02x", c);
        else
            buf_putc(b, (char)c);
    }
    buf_putc(b, '"');
}

static void fmt_at_offset(const struct promql_node *n, struct buf *b)
{
    if (n->at == PQ_AT_TIME)
        buf_printf(b, " @ %.3f", (double)n->at_ms / 1000.0);
    else if (n->at == PQ_AT_START)
        buf_puts(b, " @ start()");
    else if (n->at == PQ_AT_END)
        buf_puts(b, " @ end()");
    if (n->offset) {
        buf_puts(b, " offset ");
        fmt_duration(b, n->offset);
    }
}

static void fmt_labels(struct buf *b, char **l, size_t n)
{
    buf_putc(b, '(');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(b, ", ");
        buf_puts(b, l[i]);
    }
    buf_putc(b, ')');
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* name{matchers} with the matchers' texts sorted, as Prometheus prints them. */
static void fmt_selector(const struct promql_node *n, struct buf *b)
{
    static const char *const ops[] = { "=", "!=", "=~", "!~" };
    size_t first = 0;
    if (n->name) {
        buf_puts(b, n->name);
        first = 1;
    }
    if (n->nm <= first)
        return;
    char **txt = calloc(n->nm, sizeof(*txt));
    if (!txt)
        return;
    size_t k = 0;
    for (size_t i = first; i < n->nm; i++) {
        struct buf m = BUF_INIT;
        buf_puts(&m, n->m[i].name);
        buf_puts(&m, ops[n->m[i].op]);
        fmt_quoted(&m, n->m[i].value);
        txt[k++] = buf_steal(&m);
    }
    qsort(txt, k, sizeof(*txt), cmp_cstr);
    buf_putc(b, '{');
    for (size_t i = 0; i < k; i++) {
        if (i)
            buf_putc(b, ',');
        buf_puts(b, txt[i] ? txt[i] : "");
        free(txt[i]);
    }
    buf_putc(b, '}');
    free(txt);
}

void promql_format(const struct promql_node *n, struct buf *b)
{
    switch (n->kind) {
    case PQ_NUM:
        buf_put_float(b, n->num, 'g');
        break;
    case PQ_STR:
        fmt_quoted(b, n->str);
        break;
    case PQ_VSEL:
        fmt_selector(n, b);
        fmt_at_offset(n, b);
        break;
    case PQ_MSEL:
        fmt_selector(n, b);
        buf_putc(b, '[');
        fmt_duration(b, n->range);
        buf_putc(b, ']');
        fmt_at_offset(n, b);
        break;
    case PQ_SUBQ:
        promql_format(n->kids[0], b);
        buf_putc(b, '[');
        fmt_duration(b, n->range);
        buf_putc(b, ':');
        if (n->step)
            fmt_duration(b, n->step);
        buf_putc(b, ']');
        fmt_at_offset(n, b);
        break;
    case PQ_CALL:
        buf_puts(b, n->func->name);
        buf_putc(b, '(');
        for (size_t i = 0; i < n->nkids; i++) {
            if (i)
                buf_puts(b, ", ");
            promql_format(n->kids[i], b);
        }
        buf_putc(b, ')');
        break;
    case PQ_AGG:
        buf_puts(b, agg_names[n->agg]);
        if (n->without || n->nlabels) {
            buf_puts(b, n->without ? " without " : " by ");
            fmt_labels(b, n->labels, n->nlabels);
            buf_putc(b, ' ');
        }
        buf_putc(b, '(');
        if (n->nkids > 1) {
            promql_format(n->kids[1], b);
            buf_puts(b, ", ");
        }
        promql_format(n->kids[0], b);
        buf_putc(b, ')');
        break;
    case PQ_BIN:
        promql_format(n->kids[0], b);
        buf_printf(b, " %s", op_names[n->op]);
        if (n->bool_mod)
            buf_puts(b, " bool");
        if (n->matching) {
            buf_puts(b, n->on ? " on " : " ignoring ");
            fmt_labels(b, n->labels, n->nlabels);
            if (n->card) {
                buf_puts(b, n->card == 1 ? " group_left " : " group_right ");
                fmt_labels(b, n->include, n->ninclude);
            }
        }
        buf_putc(b, ' ');
        promql_format(n->kids[1], b);
        break;
    case PQ_NEG:
        buf_putc(b, '-');
        promql_format(n->kids[0], b);
        break;
    case PQ_PAREN:
        buf_putc(b, '(');
        promql_format(n->kids[0], b);
        buf_putc(b, ')');
        break;
    }
}

/* ---- Prometheus's prettifier (format_query): a node whose one-line text is longer
 * than 100 characters is split over lines, two spaces of indent per level ---- */

#define PRETTY_MAX 100

static bool needs_split(const struct promql_node *n)
{
    struct buf t = BUF_INIT;
    promql_format(n, &t);
    bool r = buf_used(&t) > PRETTY_MAX;
    buf_free(&t);
    return r;
}

static void indent(struct buf *b, int level)
{
    for (int i = 0; i < level; i++)
        buf_puts(b, "  ");
}

void promql_pretty(const struct promql_node *n, int level, struct buf *b)
{
    bool split = needs_split(n);
    switch (n->kind) {
    case PQ_AGG:
        indent(b, level);
        if (!split)
            break;
        buf_puts(b, agg_names[n->agg]);
        if (n->without || n->nlabels) {
            buf_puts(b, n->without ? " without " : " by ");
            fmt_labels(b, n->labels, n->nlabels);
            buf_putc(b, ' ');
        }
        buf_puts(b, "(\n");
        if (n->nkids > 1) {
            promql_pretty(n->kids[1], level + 1, b);
            buf_puts(b, ",\n");
        }
        promql_pretty(n->kids[0], level + 1, b);
        buf_putc(b, '\n');
        indent(b, level);
        buf_putc(b, ')');
        return;
    case PQ_BIN:
        if (!split) {
            indent(b, level);
            break;
        }
        promql_pretty(n->kids[0], level + 1, b);
        buf_putc(b, '\n');
        indent(b, level);
        buf_puts(b, op_names[n->op]);
        if (n->bool_mod)
            buf_puts(b, " bool");
        if (n->matching) {
            buf_puts(b, n->on ? " on " : " ignoring ");
            fmt_labels(b, n->labels, n->nlabels);
            if (n->card) {
                buf_puts(b, n->card == 1 ? " group_left " : " group_right ");
                fmt_labels(b, n->include, n->ninclude);
            }
        }
        buf_putc(b, '\n');
        promql_pretty(n->kids[1], level + 1, b);
        return;
    case PQ_CALL:
        indent(b, level);
        if (!split || !n->nkids)
            break;
        buf_printf(b, "%s(\n", n->func->name);
        for (size_t i = 0; i < n->nkids; i++) {
            if (i)
                buf_puts(b, ",\n");
            promql_pretty(n->kids[i], level + 1, b);
        }
        buf_putc(b, '\n');
        indent(b, level);
        buf_putc(b, ')');
        return;
    case PQ_PAREN:
        indent(b, level);
        if (!split)
            break;
        buf_puts(b, "(\n");
        promql_pretty(n->kids[0], level + 1, b);
        buf_putc(b, '\n');
        indent(b, level);
        buf_putc(b, ')');
        return;
    case PQ_SUBQ:
        if (!split)
            break;              /* Prometheus prints an unsplit subquery without indent */
        promql_pretty(n->kids[0], level, b);
        buf_putc(b, '[');
        fmt_duration(b, n->range);
        buf_putc(b, ':');
        if (n->step)
            fmt_duration(b, n->step);
        buf_putc(b, ']');
        fmt_at_offset(n, b);
        return;
    case PQ_NEG: {
        struct buf c = BUF_INIT;
        promql_pretty(n->kids[0], level, &c);
        buf_putc(&c, 0);
        const char *p = buf_head(&c);
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        size_t l = strlen(p);
        while (l && (p[l - 1] == ' ' || p[l - 1] == '\n' || p[l - 1] == '\t'))
            l--;
        indent(b, level);
        buf_putc(b, '-');
        buf_append(b, p, l);
        buf_free(&c);
        return;
    }
    default:
        indent(b, level);
        break;
    }
    promql_format(n, b);
}

static void format_float(char *out, size_t outlen, double v, char mode)
{
    struct buf b = BUF_INIT;
    buf_put_float(&b, v, mode);
    size_t n = MIN(buf_used(&b), outlen - 1);
    if (n)
        memcpy(out, buf_head(&b), n);
    out[n] = 0;
    buf_free(&b);
}

void promql_format_float(char *out, size_t outlen, double v)
{
    format_float(out, outlen, v, 'f');
}

void promql_format_value(char *out, size_t outlen, double v)
{
    format_float(out, outlen, v, 'j');
}

void promql_format_float_e(char *out, size_t outlen, double v)
{
    format_float(out, outlen, v, 'e');
}
