/* tr_traceql.c - TraceQL (Tempo's trace query language): parser and evaluator.
 *
 *   { span.http.status_code >= 500 && resource.service.name = "api" }
 *   { name =~ "GET .*" } >> { status = error } | count() > 2 | select(span.db.statement)
 *
 * Spanset filters compare intrinsics (name, status, kind, duration, rootName,
 * rootServiceName, traceDuration, statusMessage, and their span:/trace: forms)
 * and attributes (span.x, resource.x, unscoped .x: span first, then resource)
 * with = != > >= < <= =~ !~ (regexes anchored, as Tempo's), combined with && ||
 * and !. Spansets combine with && and ||, and structurally: A > B (B's spans
 * that are children of A's), A >> B (descendants), A < B (parents), A << B
 * (ancestors), A ~ B (siblings), and the negated forms !> !>> !< !<< !~.
 * Pipelines: count(), avg/min/max/sum(attr) compared to a value, by(attrs),
 * select(attrs), coalesce(), and further spanset filters.
 */
#include "traces_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TQ_MAX_DEPTH 64
#define TQ_MAX_LEN 16384

enum { V_NIL, V_STR, V_NUM, V_BOOL, V_DUR, V_STATUS, V_KIND };
enum { OP_EQ, OP_NE, OP_GT, OP_GE, OP_LT, OP_LE, OP_RE, OP_NRE };
enum { F_AND, F_OR, F_NOT, F_CMP, F_ATTR, F_LIT };
enum { S_FILTER, S_AND, S_OR, S_CHILD, S_DESC, S_PARENT, S_ANC, S_SIB, S_PIPE };
enum { ST_FILTER, ST_COUNT, ST_AVG, ST_MIN, ST_MAX, ST_SUM, ST_BY, ST_SELECT, ST_COALESCE };
enum { A_NAME = 1, A_STATUS, A_KIND, A_DURATION, A_ROOTNAME, A_ROOTSVC, A_TRACEDUR, A_STATUSMSG, A_SPAN, A_RES, A_ANY };

struct tq_val {
    int t;
    double n;
    struct strv s;
    bool b;
    bool paged;                     /* s is a page's value (see tr_trace_view.page_gen) */
};

/* A regex's recent verdicts on a page's values, by their address: a page holds
 * each distinct value once, and most spans share a few. */
#define RE_MEMO 16
struct re_memo {
    uint64_t gen[RE_MEMO];
    const char *p[RE_MEMO];
    size_t n[RE_MEMO];
    bool r[RE_MEMO];
};

struct fnode {
    int kind, op;
    struct fnode *l, *r;
    int attr;                       /* A_* for F_ATTR */
    char *name;                     /* attribute name (after its scope) */
    char *full;                     /* as written */
    struct tq_val lit;
    char *lit_str;
    pcre2_code *re;                 /* for =~ and !~ with a literal */
    struct re_memo *memo;           /* with re: verdicts on a page's values */
};

struct stage {
    int kind;
    struct fnode *f;                /* ST_FILTER */
    struct fnode *arg;              /* the aggregated attribute */
    int op;
    double value;
    struct fnode **attrs;           /* by, select */
    size_t nattrs;
};

struct snode {
    int kind;
    struct snode *l, *r;
    struct fnode *f;                /* S_FILTER; NULL: {} */
    bool neg;                       /* !>, !>>, ... */
    struct stage *st;               /* S_PIPE: l is the input */
    size_t nst;
};

struct tq_query {
    struct snode *root;
};

/* ---- lexer and parser ---- */

struct ps {
    const char *s, *p, *end;
    char *err;
    size_t errlen;
    int depth;
    bool failed;
};

static void perr(struct ps *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void perr(struct ps *p, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "invalid TraceQL query: parse error at line 1, col %d: %s", (int)(p->p - p->s) + 1, msg);
}

static void ws(struct ps *p)
{
    while (p->p < p->end && (*p->p == ' ' || *p->p == '\t' || *p->p == '\n' || *p->p == '\r'))
        p->p++;
}

static bool eat(struct ps *p, const char *tok)
{
    ws(p);
    size_t n = strlen(tok);
    if ((size_t)(p->end - p->p) >= n && !memcmp(p->p, tok, n)) {
        p->p += n;
        return true;
    }
    return false;
}

static bool peek(struct ps *p, const char *tok)
{
    ws(p);
    size_t n = strlen(tok);
    return (size_t)(p->end - p->p) >= n && !memcmp(p->p, tok, n);
}

static bool ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-' || c == '/' || c == ':';
}

static void fnode_free(struct fnode *f)
{
    if (!f)
        return;
    fnode_free(f->l);
    fnode_free(f->r);
    free(f->name);
    free(f->full);
    free(f->lit_str);
    if (f->re)
        pcre2_code_free(f->re);
    free(f->memo);
    free(f);
}

static struct fnode *fnew(int kind)
{
    struct fnode *f = calloc(1, sizeof(struct fnode));
    if (f)
        f->kind = kind;
    return f;
}

static const struct { const char *name; int a; } intrinsics[] = {
    { "name", A_NAME }, { "span:name", A_NAME }, { "status", A_STATUS }, { "span:status", A_STATUS },
    { "kind", A_KIND }, { "span:kind", A_KIND }, { "duration", A_DURATION }, { "span:duration", A_DURATION },
    { "rootName", A_ROOTNAME }, { "trace:rootName", A_ROOTNAME }, { "rootServiceName", A_ROOTSVC },
    { "trace:rootService", A_ROOTSVC }, { "traceDuration", A_TRACEDUR }, { "trace:duration", A_TRACEDUR },
    { "statusMessage", A_STATUSMSG }, { "span:statusMessage", A_STATUSMSG },
};

/* An attribute reference at p (span.x, resource.x, .x, "quoted" names, intrinsics). */
static struct fnode *parse_attr(struct ps *p)
{
    ws(p);
    const char *st = p->p;
    int scope = 0;
    size_t skip = 0;
    if (peek(p, "span.")) {
        scope = A_SPAN;
        skip = 5;
    } else if (peek(p, "resource.")) {
        scope = A_RES;
        skip = 9;
    } else if (peek(p, ".")) {
        scope = A_ANY;
        skip = 1;
    }
    p->p += skip;
    struct buf name = BUF_INIT;
    if (scope && p->p < p->end && *p->p == '"') {
        p->p++;
        while (p->p < p->end && *p->p != '"') {
            if (*p->p == '\\' && p->p + 1 < p->end)
                p->p++;
            buf_putc(&name, *p->p++);
        }
        if (p->p >= p->end) {
            buf_free(&name);
            perr(p, "unterminated attribute name");
            return NULL;
        }
        p->p++;
    } else {
        while (p->p < p->end && ident_char(*p->p))
            buf_putc(&name, *p->p++);
    }
    if (!buf_used(&name)) {
        buf_free(&name);
        p->p = st;
        return NULL;
    }
    int a = scope;
    if (!scope) {
        for (size_t i = 0; i < ARRAY_SIZE(intrinsics); i++)
            if (!strcmp(buf_head(&name), intrinsics[i].name))
                a = intrinsics[i].a;
        if (!a) {
            buf_free(&name);
            p->p = st;
            return NULL;
        }
    }
    struct fnode *f = fnew(F_ATTR);
    if (!f) {
        buf_free(&name);
        return NULL;
    }
    f->kind = F_ATTR;
    f->attr = a;
    f->name = buf_steal(&name);
    f->full = strndup(st, (size_t)(p->p - st));
    return f;
}

static bool parse_number(struct ps *p, struct tq_val *v)
{
    ws(p);
    const char *st = p->p;
    if (p->p < p->end && (*p->p == '-' || *p->p == '+'))
        p->p++;
    if (p->p >= p->end || !((*p->p >= '0' && *p->p <= '9') ||
                            (*p->p == '.' && p->p + 1 < p->end && p->p[1] >= '0' && p->p[1] <= '9'))) {
        p->p = st;
        return false;
    }
    const char *num = p->p;
    while (p->p < p->end && ((*p->p >= '0' && *p->p <= '9') || *p->p == '.' || *p->p == 'e' || *p->p == 'E'))
        p->p++;
    /* a duration: digits followed by a unit */
    const char *u = p->p;
    while (p->p < p->end && ((*p->p >= 'a' && *p->p <= 'z') || (unsigned char)*p->p >= 0x80 || (*p->p >= '0' && *p->p <= '9') || *p->p == '.'))
        p->p++;
    if (p->p > u) {
        int64_t ns;
        if (tr_parse_go_duration(st, (size_t)(p->p - st), &ns)) {
            perr(p, "invalid duration %.*s", (int)(p->p - st), st);
            return false;
        }
        v->t = V_DUR;
        v->n = (double)ns;
        return true;
    }
    char tmp[64];
    size_t n = (size_t)(p->p - st);
    if (n >= sizeof(tmp) || p->p == num) {
        perr(p, "invalid number");
        return false;
    }
    memcpy(tmp, st, n);
    tmp[n] = 0;
    char *e;
    v->t = V_NUM;
    v->n = strtod(tmp, &e);
    if (*e) {
        perr(p, "invalid number %s", tmp);
        return false;
    }
    return true;
}

static struct fnode *parse_or(struct ps *p);

static struct fnode *parse_operand(struct ps *p)
{
    ws(p);
    if (p->p >= p->end) {
        perr(p, "unexpected end of query");
        return NULL;
    }
    if (eat(p, "(")) {
        struct fnode *f = parse_or(p);
        if (f && !eat(p, ")")) {
            fnode_free(f);
            perr(p, "expected )");
            return NULL;
        }
        return f;
    }
    struct fnode *f = fnew(F_LIT);
    if (!f)
        return NULL;
    f->kind = F_LIT;
    if (*p->p == '"' || *p->p == '`') {
        char q = *p->p++;
        struct buf s = BUF_INIT;
        while (p->p < p->end && *p->p != q) {
            if (q == '"' && *p->p == '\\' && p->p + 1 < p->end) {
                p->p++;
                char c = *p->p;
                buf_putc(&s, c == 'n' ? '\n' : c == 't' ? '\t' : c);
                p->p++;
                continue;
            }
            buf_putc(&s, *p->p++);
        }
        if (p->p >= p->end) {
            buf_free(&s);
            free(f);
            perr(p, "unterminated string");
            return NULL;
        }
        p->p++;
        f->lit.t = V_STR;
        f->lit_str = s.data ? buf_steal(&s) : strdup("");
        f->lit.s = strv_cstr(f->lit_str);
        return f;
    }
    if (parse_number(p, &f->lit))
        return f;
    if (p->failed) {
        free(f);
        return NULL;
    }
    static const struct { const char *w; int t; double n; bool b; } words[] = {
        { "true", V_BOOL, 0, true }, { "false", V_BOOL, 0, false }, { "nil", V_NIL, 0, false },
        { "ok", V_STATUS, 1, false }, { "error", V_STATUS, 2, false }, { "unset", V_STATUS, 0, false },
        { "unspecified", V_KIND, 0, false }, { "internal", V_KIND, 1, false }, { "server", V_KIND, 2, false },
        { "client", V_KIND, 3, false }, { "producer", V_KIND, 4, false }, { "consumer", V_KIND, 5, false },
    };
    const char *st = p->p;
    size_t n = 0;
    while (st + n < p->end && ident_char(st[n]))
        n++;
    for (size_t i = 0; i < ARRAY_SIZE(words); i++)
        if (n == strlen(words[i].w) && !memcmp(st, words[i].w, n)) {
            p->p += n;
            f->lit.t = words[i].t;
            f->lit.n = words[i].n;
            f->lit.b = words[i].b;
            return f;
        }
    free(f);
    struct fnode *a = parse_attr(p);
    if (!a)
        perr(p, "expected an attribute (span.x, resource.x, .x, an intrinsic) or a value");
    return a;
}

static struct fnode *parse_cmp(struct ps *p)
{
    if (++p->depth > TQ_MAX_DEPTH) {
        perr(p, "nested too deep");
        return NULL;
    }
    if (eat(p, "!") ) {
        if (peek(p, "=")) {
            perr(p, "unexpected !=");
            return NULL;
        }
        struct fnode *x = parse_cmp(p);
        if (!x)
            return NULL;
        struct fnode *f = fnew(F_NOT);
        if (!f) {
            fnode_free(x);
            return NULL;
        }
        f->kind = F_NOT;
        f->l = x;
        p->depth--;
        return f;
    }
    struct fnode *l = parse_operand(p);
    if (!l)
        return NULL;
    static const struct { const char *t; int op; } ops[] = {
        { "=~", OP_RE }, { "!~", OP_NRE }, { "!=", OP_NE }, { ">=", OP_GE }, { "<=", OP_LE },
        { "=", OP_EQ }, { ">", OP_GT }, { "<", OP_LT },
    };
    for (size_t i = 0; i < ARRAY_SIZE(ops); i++)
        if (eat(p, ops[i].t)) {
            struct fnode *r = parse_operand(p);
            if (!r) {
                fnode_free(l);
                return NULL;
            }
            struct fnode *f = fnew(F_CMP);
            if (!f) {
                fnode_free(l);
                fnode_free(r);
                return NULL;
            }
            f->kind = F_CMP;
            f->op = ops[i].op;
            f->l = l;
            f->r = r;
            if (f->op == OP_RE || f->op == OP_NRE) {
                if (r->kind != F_LIT || r->lit.t != V_STR) {
                    fnode_free(f);
                    perr(p, "a regular expression must be a string");
                    return NULL;
                }
                int ec;
                PCRE2_SIZE eo;
                f->re = pcre2_compile((PCRE2_SPTR)r->lit_str, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF,
                                      &ec, &eo, NULL);
                if (!f->re) {
                    fnode_free(f);
                    perr(p, "invalid regular expression");
                    return NULL;
                }
                f->memo = calloc(1, sizeof(*f->memo));  /* none: no memo, same verdicts */
            }
            p->depth--;
            return f;
        }
    p->depth--;
    return l;
}

/* Whether a filter reads an attribute (not only intrinsics). */
static bool reads_attrs(const struct fnode *f)
{
    if (!f)
        return false;
    if (f->kind == F_ATTR)
        return f->attr >= A_SPAN;
    return reads_attrs(f->l) || reads_attrs(f->r);
}

/* Both sides of && and || are pure: the side reading intrinsics only goes first,
 * so a span that fails it never loads attributes (a view built from a block's
 * columns reads them on first use). */
static void cheap_first(struct fnode *f)
{
    if (reads_attrs(f->l) && !reads_attrs(f->r)) {
        struct fnode *t = f->l;
        f->l = f->r;
        f->r = t;
    }
}

static struct fnode *parse_and(struct ps *p)
{
    struct fnode *l = parse_cmp(p);
    while (l && eat(p, "&&")) {
        struct fnode *r = parse_cmp(p);
        struct fnode *f = r ? fnew(F_AND) : NULL;
        if (!f) {
            fnode_free(l);
            fnode_free(r);
            return NULL;
        }
        f->kind = F_AND;
        f->l = l;
        f->r = r;
        cheap_first(f);
        l = f;
    }
    return l;
}

static struct fnode *parse_or(struct ps *p)
{
    struct fnode *l = parse_and(p);
    while (l && eat(p, "||")) {
        struct fnode *r = parse_and(p);
        struct fnode *f = r ? fnew(F_OR) : NULL;
        if (!f) {
            fnode_free(l);
            fnode_free(r);
            return NULL;
        }
        f->kind = F_OR;
        f->l = l;
        f->r = r;
        cheap_first(f);
        l = f;
    }
    return l;
}

static void snode_free(struct snode *s)
{
    if (!s)
        return;
    snode_free(s->l);
    snode_free(s->r);
    fnode_free(s->f);
    for (size_t i = 0; i < s->nst; i++) {
        fnode_free(s->st[i].f);
        fnode_free(s->st[i].arg);
        for (size_t k = 0; k < s->st[i].nattrs; k++)
            fnode_free(s->st[i].attrs[k]);
        free(s->st[i].attrs);
    }
    free(s->st);
    free(s);
}

static struct snode *parse_pipeline(struct ps *p);

static struct snode *parse_sterm(struct ps *p)
{
    if (++p->depth > TQ_MAX_DEPTH) {
        perr(p, "nested too deep");
        return NULL;
    }
    struct snode *s = NULL;
    if (eat(p, "{")) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
        s->kind = S_FILTER;
        if (!eat(p, "}")) {
            s->f = parse_or(p);
            if (!s->f || !eat(p, "}")) {
                if (s->f)
                    perr(p, "expected }");
                snode_free(s);
                return NULL;
            }
        }
    } else if (eat(p, "(")) {
        s = parse_pipeline(p);
        if (s && !eat(p, ")")) {
            perr(p, "expected )");
            snode_free(s);
            return NULL;
        }
    } else {
        perr(p, "expected a spanset filter { ... }");
    }
    p->depth--;
    return s;
}

static struct snode *parse_sexpr(struct ps *p)
{
    struct snode *l = parse_sterm(p);
    static const struct { const char *t; int k; bool neg; } ops[] = {
        { "&&", S_AND, false }, { "||", S_OR, false }, { "!>>", S_DESC, true }, { "!<<", S_ANC, true },
        { "!>", S_CHILD, true }, { "!<", S_PARENT, true }, { "!~", S_SIB, true }, { ">>", S_DESC, false },
        { "<<", S_ANC, false }, { ">", S_CHILD, false }, { "<", S_PARENT, false }, { "~", S_SIB, false },
    };
    while (l) {
        size_t i;
        for (i = 0; i < ARRAY_SIZE(ops); i++)
            if (eat(p, ops[i].t))
                break;
        if (i == ARRAY_SIZE(ops))
            break;
        struct snode *r = parse_sterm(p);
        struct snode *s = r ? calloc(1, sizeof(*s)) : NULL;
        if (!s) {
            snode_free(l);
            snode_free(r);
            return NULL;
        }
        s->kind = ops[i].k;
        s->neg = ops[i].neg;
        s->l = l;
        s->r = r;
        l = s;
    }
    return l;
}

static int parse_attr_list(struct ps *p, struct stage *st)
{
    if (!eat(p, "(")) {
        perr(p, "expected (");
        return -EINVAL;
    }
    do {
        struct fnode *a = parse_attr(p);
        if (!a) {
            perr(p, "expected an attribute");
            return -EINVAL;
        }
        struct fnode **na = realloc(st->attrs, (st->nattrs + 1) * sizeof(*na));
        if (!na) {
            fnode_free(a);
            return -ENOMEM;
        }
        st->attrs = na;
        st->attrs[st->nattrs++] = a;
    } while (eat(p, ","));
    if (!eat(p, ")")) {
        perr(p, "expected )");
        return -EINVAL;
    }
    return 0;
}

static int parse_stage(struct ps *p, struct stage *st)
{
    static const struct { const char *t; int k; } aggs[] = {
        { "count", ST_COUNT }, { "avg", ST_AVG }, { "min", ST_MIN }, { "max", ST_MAX }, { "sum", ST_SUM },
    };
    ws(p);
    if (peek(p, "{")) {
        if (!eat(p, "{"))
            return -EINVAL;
        st->kind = ST_FILTER;
        if (eat(p, "}"))
            return 0;
        st->f = parse_or(p);
        if (!st->f || !eat(p, "}")) {
            perr(p, "expected }");
            return -EINVAL;
        }
        return 0;
    }
    if (eat(p, "by")) {
        st->kind = ST_BY;
        return parse_attr_list(p, st);
    }
    if (eat(p, "select")) {
        st->kind = ST_SELECT;
        return parse_attr_list(p, st);
    }
    if (eat(p, "coalesce")) {
        st->kind = ST_COALESCE;
        if (!eat(p, "(") || !eat(p, ")")) {
            perr(p, "expected coalesce()");
            return -EINVAL;
        }
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(aggs); i++)
        if (eat(p, aggs[i].t)) {
            st->kind = aggs[i].k;
            if (!eat(p, "(")) {
                perr(p, "expected (");
                return -EINVAL;
            }
            if (st->kind != ST_COUNT && !(st->arg = parse_attr(p))) {
                perr(p, "expected an attribute");
                return -EINVAL;
            }
            if (!eat(p, ")")) {
                perr(p, "expected )");
                return -EINVAL;
            }
            static const struct { const char *t; int op; } ops[] = {
                { "!=", OP_NE }, { ">=", OP_GE }, { "<=", OP_LE }, { "=", OP_EQ }, { ">", OP_GT }, { "<", OP_LT },
            };
            size_t k;
            for (k = 0; k < ARRAY_SIZE(ops); k++)
                if (eat(p, ops[k].t))
                    break;
            if (k == ARRAY_SIZE(ops)) {
                perr(p, "an aggregate must be compared (count() > 2)");
                return -EINVAL;
            }
            st->op = ops[k].op;
            struct tq_val v;
            if (!parse_number(p, &v)) {
                perr(p, "expected a number or a duration");
                return -EINVAL;
            }
            st->value = v.n;
            return 0;
        }
    perr(p, "expected a pipeline stage (count(), avg(), by(), select(), { ... })");
    return -EINVAL;
}

static struct snode *parse_pipeline(struct ps *p)
{
    struct snode *in = parse_sexpr(p);
    if (!in || !peek(p, "|") || peek(p, "||"))
        return in;
    struct snode *s = calloc(1, sizeof(*s));
    if (!s) {
        snode_free(in);
        return NULL;
    }
    s->kind = S_PIPE;
    s->l = in;
    while (peek(p, "|") && !peek(p, "||")) {
        eat(p, "|");
        struct stage *ns = realloc(s->st, (s->nst + 1) * sizeof(*ns));
        if (!ns) {
            snode_free(s);
            return NULL;
        }
        s->st = ns;
        memset(&s->st[s->nst], 0, sizeof(*s->st));
        s->nst++;
        if (parse_stage(p, &s->st[s->nst - 1])) {
            snode_free(s);
            return NULL;
        }
    }
    return s;
}

int tq_parse(const char *s, size_t n, struct tq_query **out, char *err, size_t errlen)
{
    *out = NULL;
    if (n > TQ_MAX_LEN) {
        snprintf(err, errlen, "invalid TraceQL query: longer than %d bytes", TQ_MAX_LEN);
        return -EINVAL;
    }
    struct ps p = { s, s, s + n, err, errlen, 0, false };
    struct snode *root = parse_pipeline(&p);
    ws(&p);
    if (root && p.p != p.end)
        perr(&p, "unexpected %.*s", (int)(p.end - p.p > 20 ? 20 : p.end - p.p), p.p);
    if (!root || p.failed) {
        if (!p.failed)
            snprintf(err, errlen, "invalid TraceQL query: out of memory");
        snode_free(root);
        return -EINVAL;
    }
    struct tq_query *q = calloc(1, sizeof(*q));
    if (!q) {
        snode_free(root);
        return -ENOMEM;
    }
    q->root = root;
    *out = q;
    return 0;
}

void tq_free(struct tq_query *q)
{
    if (!q)
        return;
    snode_free(q->root);
    free(q);
}

/* ---- evaluation ---- */

struct ectx {
    const struct tr_trace_view *v;
    struct buf tmp;
};

static bool attr_kv(const struct tr_trace_view *v, int i, int scope, const char *name, struct tr_kv *out)
{
    if (v->lazy)
        return ((scope == A_SPAN || scope == A_ANY) && v->lazy->find(v->lazy, i, 1, name, out)) ||
               ((scope == A_RES || scope == A_ANY) && v->lazy->find(v->lazy, i, 2, name, out));
    const struct tr_span *s = &v->s[i];
    return ((scope == A_SPAN || scope == A_ANY) && tr_attr_find(s->raw, 9, name, out)) ||
           ((scope == A_RES || scope == A_ANY) && s->res.p && tr_attr_find(s->res, 1, name, out));
}

static void kv_to_val(const struct tr_kv *kv, struct tq_val *v, struct buf *tmp)
{
    switch (kv->type) {
    case TR_V_STR:
        v->t = V_STR, v->s = kv->s;
        v->paged = true;
        break;
    case TR_V_INT:
        v->t = V_NUM, v->n = (double)kv->i;
        break;
    case TR_V_DOUBLE:
        v->t = V_NUM, v->n = kv->d;
        break;
    case TR_V_BOOL:
        v->t = V_BOOL, v->b = kv->b;
        break;
    case TR_V_NONE:
        v->t = V_NIL;
        break;
    default:
        buf_reset(tmp);
        tr_kv_string(kv, tmp);
        v->t = V_STR, v->s = buf_strv(tmp);
    }
}

static void span_val(struct ectx *e, const struct fnode *f, int i, struct tq_val *v, struct buf *tmp)
{
    const struct tr_trace_view *tv = e->v;
    const struct tr_span *s = &tv->s[i];
    memset(v, 0, sizeof(*v));
    switch (f->attr) {
    case A_NAME:
        v->t = V_STR, v->s = s->name;
        v->paged = true;
        return;
    case A_STATUS:
        v->t = V_STATUS, v->n = s->status;
        return;
    case A_KIND:
        v->t = V_KIND, v->n = s->kind;
        return;
    case A_DURATION:
        v->t = V_DUR, v->n = (double)(s->end - s->start);
        return;
    case A_ROOTNAME:
        if (tv->root >= 0)
            v->t = V_STR, v->s = tv->s[tv->root].name;
        return;
    case A_ROOTSVC:
        if (tv->root >= 0)
            v->t = V_STR, v->s = tv->s[tv->root].service;
        return;
    case A_TRACEDUR:
        v->t = V_DUR, v->n = (double)(tv->end - tv->start);
        return;
    case A_STATUSMSG:
        v->t = V_STR, v->s = s->status_msg;
        return;
    default: {
        struct tr_kv kv;
        if (attr_kv(tv, i, f->attr, f->name, &kv))
            kv_to_val(&kv, v, tmp);
        return;
    }
    }
}

static void node_val(struct ectx *e, const struct fnode *f, int i, struct tq_val *v, struct buf *tmp)
{
    if (f->kind == F_LIT)
        *v = f->lit;
    else if (f->kind == F_ATTR)
        span_val(e, f, i, v, tmp);
    else
        v->t = V_NIL;
}

static bool num_like(int t)
{
    return t == V_NUM || t == V_DUR;
}

static bool compare(int op, const struct tq_val *a, const struct tq_val *b, const pcre2_code *re)
{
    if (op == OP_RE || op == OP_NRE) {
        if (a->t != V_STR)
            return false;
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
        if (!md)
            return false;
        int rc = pcre2_match(re, (PCRE2_SPTR)a->s.p, a->s.n, 0, 0, md, NULL);
        pcre2_match_data_free(md);
        return (rc >= 0) == (op == OP_RE);
    }
    if (a->t == V_NIL || b->t == V_NIL) {
        bool both = a->t == b->t;
        return op == OP_EQ ? both : op == OP_NE ? !both : false;
    }
    int c;
    if (a->t == V_STR && b->t == V_STR) {
        size_t n = a->s.n < b->s.n ? a->s.n : b->s.n;
        c = n ? memcmp(a->s.p, b->s.p, n) : 0;
        if (!c)
            c = a->s.n < b->s.n ? -1 : a->s.n > b->s.n;
    } else if (num_like(a->t) && num_like(b->t)) {
        c = a->n < b->n ? -1 : a->n > b->n;
    } else if (a->t == b->t && (a->t == V_STATUS || a->t == V_KIND)) {
        c = a->n < b->n ? -1 : a->n > b->n;
        if (op != OP_EQ && op != OP_NE)
            return false;
    } else if (a->t == V_BOOL && b->t == V_BOOL) {
        c = a->b == b->b ? 0 : 1;
        if (op != OP_EQ && op != OP_NE)
            return false;
    } else {
        return false;                       /* different types never match */
    }
    switch (op) {
    case OP_EQ: return c == 0;
    case OP_NE: return c != 0;
    case OP_GT: return c > 0;
    case OP_GE: return c >= 0;
    case OP_LT: return c < 0;
    case OP_LE: return c <= 0;
    }
    return false;
}

static bool fmatch(struct ectx *e, const struct fnode *f, int i)
{
    switch (f->kind) {
    case F_AND:
        return fmatch(e, f->l, i) && fmatch(e, f->r, i);
    case F_OR:
        return fmatch(e, f->l, i) || fmatch(e, f->r, i);
    case F_NOT:
        return !fmatch(e, f->l, i);
    case F_CMP: {
        struct tq_val a, b;
        struct buf t2 = BUF_INIT;
        node_val(e, f->l, i, &a, &e->tmp);
        node_val(e, f->r, i, &b, &t2);
        uint64_t gen = e->v->page_gen;
        size_t slot = ((uintptr_t)a.s.p >> 4) % RE_MEMO;
        struct re_memo *m = f->memo;
        bool memo = m && gen && a.paged && a.t == V_STR;
        bool r;
        if (memo && m->gen[slot] == gen && m->p[slot] == a.s.p && m->n[slot] == a.s.n) {
            r = m->r[slot];
        } else {
            r = compare(f->op, &a, &b, f->re);
            if (memo)
                m->gen[slot] = gen, m->p[slot] = a.s.p, m->n[slot] = a.s.n, m->r[slot] = r;
        }
        buf_free(&t2);
        return r;
    }
    default: {
        struct tq_val a;
        node_val(e, f, i, &a, &e->tmp);
        return a.t == V_BOOL ? a.b : false;
    }
    }
}

/* A spanset during evaluation: a membership vector. */
struct sset {
    bool *in;
    size_t n;                               /* members */
    struct buf by;
    double value;
    bool has_value;
};

struct ssets {
    struct sset *s;
    size_t n;
};

static void ssets_free(struct ssets *x)
{
    for (size_t i = 0; i < x->n; i++) {
        free(x->s[i].in);
        buf_free(&x->s[i].by);
    }
    free(x->s);
    x->s = NULL;
    x->n = 0;
}

static struct sset *ssets_add(struct ssets *x, size_t nspans)
{
    struct sset *ns = realloc(x->s, (x->n + 1) * sizeof(*ns));
    if (!ns)
        return NULL;
    x->s = ns;
    struct sset *s = &x->s[x->n];
    memset(s, 0, sizeof(*s));
    if (!(s->in = calloc(nspans ? nspans : 1, 1)))
        return NULL;
    x->n++;
    return s;
}

static bool is_ancestor(const struct tr_trace_view *v, int a, int d)
{
    for (int p = v->s[d].parent, hops = 0; p >= 0 && hops < 10000; p = v->s[p].parent, hops++)
        if (p == a)
            return true;
    return false;
}

static void count_set(struct sset *s, size_t n)
{
    s->n = 0;
    for (size_t i = 0; i < n; i++)
        s->n += s->in[i];
}

/* Evaluates a spanset expression into one spanset (empty: no match). */
static int seval(struct ectx *e, const struct snode *s, struct ssets *out);

static int seval_one(struct ectx *e, const struct snode *s, bool *in)
{
    struct ssets x = { 0 };
    int r = seval(e, s, &x);
    size_t n = e->v->n;
    memset(in, 0, n ? n : 1);
    for (size_t k = 0; k < x.n; k++)
        for (size_t i = 0; i < n; i++)
            in[i] |= x.s[k].in[i];
    ssets_free(&x);
    return r;
}

static double agg_value(struct ectx *e, const struct stage *st, const struct sset *s)
{
    size_t n = e->v->n;
    double acc = 0, cnt = 0;
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!s->in[i])
            continue;
        if (st->kind == ST_COUNT) {
            acc++;
            continue;
        }
        struct tq_val v;
        span_val(e, st->arg, (int)i, &v, &e->tmp);
        if (!num_like(v.t))
            continue;
        if (!any)
            acc = st->kind == ST_MIN || st->kind == ST_MAX ? v.n : 0;
        any = true;
        cnt++;
        if (st->kind == ST_MIN)
            acc = v.n < acc ? v.n : acc;
        else if (st->kind == ST_MAX)
            acc = v.n > acc ? v.n : acc;
        else
            acc += v.n;
    }
    if (st->kind == ST_AVG)
        return cnt ? acc / cnt : NAN;
    if (st->kind != ST_COUNT && !any)
        return NAN;
    return acc;
}

static int run_stage(struct ectx *e, const struct stage *st, struct ssets *sets)
{
    size_t n = e->v->n;
    struct ssets out = { 0 };
    switch (st->kind) {
    case ST_FILTER:
        for (size_t k = 0; k < sets->n; k++) {
            struct sset *s = &sets->s[k];
            for (size_t i = 0; i < n; i++)
                if (s->in[i] && st->f && !fmatch(e, st->f, (int)i))
                    s->in[i] = false;
            count_set(s, n);
        }
        break;
    case ST_COUNT:
    case ST_AVG:
    case ST_MIN:
    case ST_MAX:
    case ST_SUM:
        for (size_t k = 0; k < sets->n; k++) {
            struct sset *s = &sets->s[k];
            double v = agg_value(e, st, s);
            struct tq_val a = { .t = V_NUM, .n = v }, b = { .t = V_NUM, .n = st->value };
            s->value = v;
            s->has_value = true;
            if (v != v || !compare(st->op, &a, &b, NULL))
                s->n = 0, memset(s->in, 0, n ? n : 1);
        }
        break;
    case ST_BY:
        for (size_t k = 0; k < sets->n; k++) {
            struct sset *s = &sets->s[k];
            /* group the members by the values of the attributes */
            bool *done = calloc(n ? n : 1, 1);
            if (!done)
                return -ENOMEM;
            for (size_t i = 0; i < n; i++) {
                if (!s->in[i] || done[i])
                    continue;
                struct buf key = BUF_INIT, json = BUF_INIT;
                for (size_t a = 0; a < st->nattrs; a++) {
                    struct tq_val v;
                    span_val(e, st->attrs[a], (int)i, &v, &e->tmp);
                    struct buf one = BUF_INIT;
                    if (v.t == V_STR)
                        buf_put_strv(&one, v.s);
                    else if (num_like(v.t))
                        buf_put_float(&one, v.n, 'g');
                    else if (v.t == V_BOOL)
                        buf_puts(&one, v.b ? "true" : "false");
                    else if (v.t == V_STATUS)
                        buf_puts(&one, v.n == 2 ? "error" : v.n == 1 ? "ok" : "unset");
                    else if (v.t == V_KIND) {
                        static const char *const kd[] = { "unspecified", "internal", "server", "client", "producer", "consumer" };
                        buf_puts(&one, kd[(int)v.n < 6 ? (int)v.n : 0]);
                    } else
                        buf_puts(&one, "nil");
                    buf_put_strv(&key, buf_strv(&one));
                    buf_putc(&key, 0);
                    buf_printf(&json, "%s{\"key\":", a ? "," : "");
                    buf_json_str(&json, st->attrs[a]->full);
                    buf_puts(&json, ",\"value\":{\"stringValue\":");
                    buf_putc(&json, '"');
                    buf_json_escape(&json, buf_head(&one), buf_used(&one));
                    buf_puts(&json, "\"}}");
                    buf_free(&one);
                }
                struct sset *g = ssets_add(&out, n);
                if (!g) {
                    buf_free(&key);
                    buf_free(&json);
                    free(done);
                    ssets_free(&out);
                    return -ENOMEM;
                }
                g->by = json;
                /* members with the same key */
                for (size_t j = i; j < n; j++) {
                    if (!s->in[j] || done[j])
                        continue;
                    struct buf k2 = BUF_INIT;
                    for (size_t a = 0; a < st->nattrs; a++) {
                        struct tq_val v;
                        span_val(e, st->attrs[a], (int)j, &v, &e->tmp);
                        if (v.t == V_STR)
                            buf_put_strv(&k2, v.s);
                        else if (num_like(v.t))
                            buf_put_float(&k2, v.n, 'g');
                        else if (v.t == V_BOOL)
                            buf_puts(&k2, v.b ? "true" : "false");
                        else if (v.t == V_STATUS)
                            buf_puts(&k2, v.n == 2 ? "error" : v.n == 1 ? "ok" : "unset");
                        else if (v.t == V_KIND) {
                            static const char *const kd[] = { "unspecified", "internal", "server", "client", "producer", "consumer" };
                            buf_puts(&k2, kd[(int)v.n < 6 ? (int)v.n : 0]);
                        } else
                            buf_puts(&k2, "nil");
                        buf_putc(&k2, 0);
                    }
                    if (buf_used(&k2) == buf_used(&key) && !memcmp(buf_head(&k2), buf_head(&key), buf_used(&key))) {
                        g->in[j] = true;
                        done[j] = true;
                    }
                    buf_free(&k2);
                }
                count_set(g, n);
                buf_free(&key);
            }
            free(done);
        }
        ssets_free(sets);
        *sets = out;
        break;
    case ST_COALESCE:
        if (sets->n > 1) {
            for (size_t k = 1; k < sets->n; k++)
                for (size_t i = 0; i < n; i++)
                    sets->s[0].in[i] |= sets->s[k].in[i];
            for (size_t k = 1; k < sets->n; k++) {
                free(sets->s[k].in);
                buf_free(&sets->s[k].by);
            }
            sets->n = 1;
            buf_reset(&sets->s[0].by);
            count_set(&sets->s[0], n);
        }
        break;
    default:
        break;                              /* select: shapes the output only */
    }
    /* empty spansets drop out */
    size_t w = 0;
    for (size_t k = 0; k < sets->n; k++) {
        if (sets->s[k].n)
            sets->s[w++] = sets->s[k];
        else {
            free(sets->s[k].in);
            buf_free(&sets->s[k].by);
        }
    }
    sets->n = w;
    return 0;
}

static int seval(struct ectx *e, const struct snode *s, struct ssets *out)
{
    size_t n = e->v->n;
    const struct tr_trace_view *v = e->v;
    if (s->kind == S_PIPE) {
        int r = seval(e, s->l, out);
        for (size_t i = 0; !r && i < s->nst && out->n; i++)
            r = run_stage(e, &s->st[i], out);
        return r;
    }
    struct sset *res = ssets_add(out, n);
    if (!res)
        return -ENOMEM;
    if (s->kind == S_FILTER) {
        for (size_t i = 0; i < n; i++)
            res->in[i] = !s->f || fmatch(e, s->f, (int)i);
    } else {
        bool *a = calloc(n ? n : 1, 1), *b = calloc(n ? n : 1, 1);
        if (!a || !b) {
            free(a);
            free(b);
            return -ENOMEM;
        }
        seval_one(e, s->l, a);
        seval_one(e, s->r, b);
        bool any_a = false, any_b = false;
        for (size_t i = 0; i < n; i++) {
            any_a |= a[i];
            any_b |= b[i];
        }
        switch (s->kind) {
        case S_AND:
            if (any_a && any_b)
                for (size_t i = 0; i < n; i++)
                    res->in[i] = a[i] || b[i];
            break;
        case S_OR:
            for (size_t i = 0; i < n; i++)
                res->in[i] = a[i] || b[i];
            break;
        default:
            /* structural: the right side's spans related to a left side's span */
            for (size_t j = 0; j < n; j++) {
                if (!b[j])
                    continue;
                bool rel = false;
                for (size_t i = 0; i < n && !rel; i++) {
                    if (!a[i] || i == j)
                        continue;
                    switch (s->kind) {
                    case S_CHILD: rel = v->s[j].parent == (int)i; break;
                    case S_DESC: rel = is_ancestor(v, (int)i, (int)j); break;
                    case S_PARENT: rel = v->s[i].parent == (int)j; break;
                    case S_ANC: rel = is_ancestor(v, (int)j, (int)i); break;
                    case S_SIB: rel = v->s[i].parent >= 0 && v->s[i].parent == v->s[j].parent; break;
                    }
                }
                res->in[j] = s->neg ? !rel : rel;
            }
            break;
        }
        free(a);
        free(b);
    }
    count_set(res, n);
    if (!res->n) {
        free(res->in);
        out->n--;
    }
    return 0;
}

static void collect_select(const struct snode *s, struct tq_result *out)
{
    if (!s)
        return;
    collect_select(s->l, out);
    collect_select(s->r, out);
    for (size_t i = 0; i < s->nst; i++)
        if (s->st[i].kind == ST_SELECT)
            for (size_t k = 0; k < s->st[i].nattrs; k++) {
                char **ns = realloc(out->select, (out->nselect + 1) * sizeof(*ns));
                if (!ns)
                    return;
                out->select = ns;
                out->select[out->nselect++] = strdup(s->st[i].attrs[k]->full);
            }
}

int tq_eval(const struct tq_query *q, const struct tr_trace_view *v, struct tq_result *out)
{
    memset(out, 0, sizeof(*out));
    struct ectx e = { v, BUF_INIT };
    struct ssets sets = { 0 };
    int r = seval(&e, q->root, &sets);
    buf_free(&e.tmp);
    if (r) {
        ssets_free(&sets);
        return 0;
    }
    if (sets.n && !(out->sets = calloc(sets.n, sizeof(*out->sets)))) {
        ssets_free(&sets);
        return 0;
    }
    for (size_t k = 0; k < sets.n; k++) {
        struct tq_spanset *o = &out->sets[out->n];
        if (!(o->spans = malloc(sets.s[k].n * sizeof(int))))
            continue;
        for (size_t i = 0; i < v->n; i++)
            if (sets.s[k].in[i])
                o->spans[o->n++] = (int)i;
        o->value = sets.s[k].value;
        o->has_value = sets.s[k].has_value;
        o->by = sets.s[k].by;
        sets.s[k].by = BUF_INIT;
        out->n++;
    }
    ssets_free(&sets);
    collect_select(q->root, out);
    return (int)out->n;
}

void tq_result_free(struct tq_result *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->sets[i].spans);
        buf_free(&r->sets[i].by);
    }
    free(r->sets);
    for (size_t i = 0; i < r->nselect; i++)
        free(r->select[i]);
    free(r->select);
    memset(r, 0, sizeof(*r));
}

/* ---- Bloom tokens ---- */

static void ftokens(const struct fnode *f, char **out, size_t max, size_t *n)
{
    if (!f || *n >= max)
        return;
    if (f->kind == F_AND) {
        ftokens(f->l, out, max, n);
        ftokens(f->r, out, max, n);
        return;
    }
    if (f->kind != F_CMP || f->op != OP_EQ)
        return;
    const struct fnode *a = f->l, *l = f->r;
    if (a->kind == F_LIT)
        a = f->r, l = f->l;
    if (a->kind != F_ATTR || l->kind != F_LIT)
        return;
    struct buf b = BUF_INIT;
    if (a->attr == A_NAME && l->lit.t == V_STR) {
        buf_printf(&b, "n\t%s\t", l->lit_str);
    } else if ((a->attr == A_SPAN || a->attr == A_RES || a->attr == A_ANY) && l->lit.t == V_STR) {
        buf_printf(&b, "a\t%s\t%s", a->name, l->lit_str);
    } else if ((a->attr == A_SPAN || a->attr == A_RES || a->attr == A_ANY) && l->lit.t == V_NUM &&
               fabs(l->lit.n) < 1e15 && l->lit.n == (double)(long long)l->lit.n) {
        buf_printf(&b, "a\t%s\t%lld", a->name, (long long)l->lit.n);
    } else if ((a->attr == A_SPAN || a->attr == A_RES || a->attr == A_ANY) && l->lit.t == V_BOOL) {
        buf_printf(&b, "a\t%s\t%s", a->name, l->lit.b ? "true" : "false");
    }
    if (buf_used(&b))
        out[(*n)++] = buf_steal(&b);
    buf_free(&b);
}

static void stokens(const struct snode *s, char **out, size_t max, size_t *n)
{
    if (!s)
        return;
    switch (s->kind) {
    case S_FILTER:
        ftokens(s->f, out, max, n);
        break;
    case S_PIPE:
        stokens(s->l, out, max, n);
        break;
    case S_OR:
        break;
    default:
        if (s->neg) {                       /* !>: the right side only */
            stokens(s->r, out, max, n);
            break;
        }
        stokens(s->l, out, max, n);
        stokens(s->r, out, max, n);
    }
}

size_t tq_tokens(const struct tq_query *q, char **out, size_t max)
{
    size_t n = 0;
    stokens(q->root, out, max, &n);
    return n;
}

bool tq_span_attr(const struct tr_trace_view *v, int i, const char *name, struct tr_kv *out, struct buf *tmp)
{
    (void)tmp;
    memset(out, 0, sizeof(*out));
    const struct tr_span *s = &v->s[i];
    if (!strncmp(name, "span.", 5))
        return attr_kv(v, i, A_SPAN, name + 5, out);
    if (!strncmp(name, "resource.", 9))
        return attr_kv(v, i, A_RES, name + 9, out);
    if (name[0] == '.')
        return attr_kv(v, i, A_ANY, name + 1, out);
    if (!strcmp(name, "name")) {
        out->type = TR_V_STR, out->s = s->name;
        return true;
    }
    if (!strcmp(name, "duration")) {
        out->type = TR_V_INT, out->i = s->end - s->start;
        return true;
    }
    if (!strcmp(name, "statusMessage")) {
        out->type = TR_V_STR, out->s = s->status_msg;
        return true;
    }
    return false;
}
