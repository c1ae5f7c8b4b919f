/* gotmpl.c - Go's text/template: parser and evaluator (see gotmpl.h).
 *
 * The parser turns a template into a tree of nodes (text, action, if, range, with,
 * template) whose actions hold pipelines of commands of arguments. Everything a
 * parse allocates lives in the set; everything an execution allocates lives in the
 * caller's arena. Errors follow Go's wording where a user would compare them
 * ("template: NAME:LINE: unexpected EOF", "function \"x\" not defined").
 */
#include "core/gotmpl.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena and values ---- */

struct gt_block {
    struct gt_block *next;
    size_t used, cap;
    char data[];
};

struct gt_arena {
    struct gt_block *head;
};

struct gt_arena *gt_arena_new(void)
{
    return calloc(1, sizeof(struct gt_arena));
}

void gt_arena_free(struct gt_arena **pa)
{
    struct gt_arena *a = *pa;
    if (!a)
        return;
    for (struct gt_block *b = a->head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    free(a);
    *pa = NULL;
}

void *gt_alloc(struct gt_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct gt_block *b = a->head;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > 16384 ? n : 16384;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

const char *gt_strdup(struct gt_arena *a, const char *s, size_t n)
{
    char *d = gt_alloc(a, n + 1);
    if (d)
        memcpy(d, s, n);
    return d;
}

static struct gt_value *val(struct gt_arena *a, enum gt_kind k)
{
    struct gt_value *v = gt_alloc(a, sizeof(*v));
    if (v)
        v->k = k;
    return v;
}

struct gt_value *gt_nil(struct gt_arena *a) { return val(a, GT_NIL); }

struct gt_value *gt_bool(struct gt_arena *a, bool b)
{
    struct gt_value *v = val(a, GT_BOOL);
    if (v)
        v->b = b;
    return v;
}

struct gt_value *gt_num(struct gt_arena *a, double n)
{
    struct gt_value *v = val(a, GT_NUM);
    if (v)
        v->num = n;
    return v;
}

struct gt_value *gt_str(struct gt_arena *a, const char *s)
{
    struct gt_value *v = val(a, GT_STR);
    if (v && !(v->s = gt_strdup(a, s, strlen(s))))
        return NULL;
    return v;
}

struct gt_value *gt_list(struct gt_arena *a, size_t n, int tag)
{
    struct gt_value *v = val(a, GT_LIST);
    if (!v || !(v->items = gt_alloc(a, (n + 1) * sizeof(*v->items))))
        return NULL;
    v->n = n;
    v->tag = tag;
    return v;
}

struct gt_value *gt_map(struct gt_arena *a, size_t n, int tag)
{
    struct gt_value *v = gt_list(a, n, tag);
    if (!v || !(v->keys = gt_alloc(a, (n + 1) * sizeof(*v->keys))))
        return NULL;
    v->k = GT_MAP;
    return v;
}

void gt_map_sort(struct gt_value *m)
{
    for (size_t i = 1; i < m->n; i++)     /* insertion sort: maps are small */
        for (size_t j = i; j > 0 && strcmp(m->keys[j - 1], m->keys[j]) > 0; j--) {
            const char *k = m->keys[j];
            m->keys[j] = m->keys[j - 1];
            m->keys[j - 1] = k;
            struct gt_value *x = m->items[j];
            m->items[j] = m->items[j - 1];
            m->items[j - 1] = x;
        }
}

struct gt_value *gt_map_get(const struct gt_value *m, const char *key)
{
    if (!m || m->k != GT_MAP)
        return NULL;
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(m->keys[mid], key);
        if (!c)
            return m->items[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

bool gt_truth(const struct gt_value *v)
{
    if (!v)
        return false;
    switch (v->k) {
    case GT_NIL: return false;
    case GT_BOOL: return v->b;
    case GT_NUM: return v->num != 0;
    case GT_STR: return v->s[0] != 0;
    default: return v->n > 0;
    }
}

/* a number as an integer without the undefined cast of NaN or out-of-range values */
static long long num_ll(double n)
{
    if (!(n == n))
        return 0;
    if (n >= 9.2e18)
        return LLONG_MAX;
    if (n <= -9.2e18)
        return LLONG_MIN;
    return (long long)n;
}

static void print_num(struct buf *b, double n)
{
    if (n == floor(n) && fabs(n) < 1e21)
        buf_printf(b, "%.0f", n);      /* Go's %v: no exponent below 1e21 */
    else if (isnan(n))
        buf_puts(b, "NaN");
    else if (isinf(n))
        buf_puts(b, n > 0 ? "+Inf" : "-Inf");
    else {
        /* the shortest representation that reads back, as Go's %v of a float64 */
        char s[40];
        for (int p = 1; p <= 17; p++) {
            snprintf(s, sizeof(s), "%.*g", p, n);
            if (strtod(s, NULL) == n)
                break;
        }
        buf_puts(b, s);
    }
}

void gt_print(struct buf *b, const struct gt_value *v)
{
    if (!v) {
        buf_puts(b, "<no value>");
        return;
    }
    switch (v->k) {
    case GT_NIL: buf_puts(b, "<no value>"); break;
    case GT_BOOL: buf_puts(b, v->b ? "true" : "false"); break;
    case GT_NUM: print_num(b, v->num); break;
    case GT_STR: buf_puts(b, v->s); break;
    case GT_LIST:
        buf_putc(b, '[');
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                buf_putc(b, ' ');
            gt_print(b, v->items[i]);
        }
        buf_putc(b, ']');
        break;
    case GT_MAP:
        buf_puts(b, "map[");
        for (size_t i = 0; i < v->n; i++) {
            buf_printf(b, "%s%s:", i ? " " : "", v->keys[i]);
            gt_print(b, v->items[i]);
        }
        buf_putc(b, ']');
        break;
    }
}

/* ---- the tree ---- */

enum nk { N_TEXT, N_ACTION, N_IF, N_RANGE, N_WITH, N_TEMPLATE, N_BREAK, N_CONTINUE };
enum ak { A_DOT, A_FIELD, A_VAR, A_FUNC, A_STR, A_NUM, A_BOOL, A_NIL, A_PIPE };

struct pipe;

struct arg {
    enum ak k;
    char *name;                 /* function or variable name */
    char **chain;               /* .A.B after the operand */
    size_t nchain;
    char *s;
    size_t slen;
    double num;
    bool b;
    struct pipe *pipe;
};

struct cmd {
    struct arg *args;
    size_t nargs;
};

struct pipe {
    char *decl[2];              /* $x := or $i, $e := */
    size_t ndecl;
    bool assign;                /* = rather than := */
    struct cmd *cmds;
    size_t ncmds;
};

struct node {
    enum nk k;
    int line;
    char *text;
    size_t tlen;
    struct pipe *pipe;
    struct node *list, *elselist;
    char *tname;
    struct node *next;
};

struct tmpl {
    char *name;
    struct node *root;
};

struct gt_set {
    bool html;
    struct tmpl *t;
    size_t nt;
    struct { char *name; gt_func fn; } *funcs;
    size_t nfuncs;
    gt_method methods;
    void **owned;               /* every allocation of the parses */
    size_t nowned, capowned;
};

static void *own(struct gt_set *s, void *p)
{
    if (!p)
        return NULL;
    if (s->nowned == s->capowned) {
        size_t nc = s->capowned ? s->capowned * 2 : 64;
        void **nv = realloc(s->owned, nc * sizeof(*nv));
        if (!nv) {
            free(p);
            return NULL;
        }
        s->owned = nv;
        s->capowned = nc;
    }
    s->owned[s->nowned++] = p;
    return p;
}

static void *pcalloc(struct gt_set *s, size_t n)
{
    return own(s, calloc(1, n));
}

static char *pstrndup(struct gt_set *s, const char *p, size_t n)
{
    return own(s, strndup(p, n));
}

struct gt_set *gt_set_new(bool html)
{
    struct gt_set *s = calloc(1, sizeof(*s));
    if (s)
        s->html = html;
    return s;
}

void gt_set_free(struct gt_set **ps)
{
    struct gt_set *s = *ps;
    if (!s)
        return;
    for (size_t i = 0; i < s->nowned; i++)
        free(s->owned[i]);
    free(s->owned);
    for (size_t i = 0; i < s->nfuncs; i++)
        free(s->funcs[i].name);
    free(s->funcs);
    free(s->t);
    free(s);
    *ps = NULL;
}

int gt_set_func(struct gt_set *s, const char *name, gt_func fn)
{
    void *nv = realloc(s->funcs, (s->nfuncs + 1) * sizeof(*s->funcs));
    if (!nv)
        return -ENOMEM;
    s->funcs = nv;
    s->funcs[s->nfuncs].name = strdup(name);
    s->funcs[s->nfuncs].fn = fn;
    return s->funcs[s->nfuncs++].name ? 0 : -ENOMEM;
}

void gt_set_methods(struct gt_set *s, gt_method fn)
{
    s->methods = fn;
}

static struct tmpl *find(const struct gt_set *s, const char *name)
{
    for (size_t i = 0; i < s->nt; i++)
        if (!strcmp(s->t[i].name, name))
            return &s->t[i];
    return NULL;
}

bool gt_defined(const struct gt_set *s, const char *name)
{
    return find(s, name) != NULL;
}

static int add_tmpl(struct gt_set *s, const char *name, struct node *root)
{
    struct tmpl *t = find(s, name);
    if (t) {
        t->root = root;
        return 0;
    }
    void *nv = realloc(s->t, (s->nt + 1) * sizeof(*s->t));
    if (!nv)
        return -ENOMEM;
    s->t = nv;
    s->t[s->nt].name = pstrndup(s, name, strlen(name));
    s->t[s->nt].root = root;
    if (!s->t[s->nt].name)
        return -ENOMEM;
    s->nt++;
    return 0;
}

/* ---- parsing ---- */

struct parser {
    struct gt_set *set;
    const char *name;
    const char *src, *p;        /* p: the next unread byte of the template */
    char *err;
    size_t errlen;
    bool failed;
    /* the current action's text */
    const char *a, *aend;
    int depth;
    int ranges;                 /* range bodies being parsed: break/continue allowed */
};

static int line_of(const struct parser *ps, const char *at)
{
    int l = 1;
    for (const char *q = ps->src; q < at && *q; q++)
        l += *q == '\n';
    return l;
}

static void perr(struct parser *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void perr(struct parser *ps, const char *at, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = true;
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "template: %s:%d: %s", ps->name, line_of(ps, at), msg);
}

static void skip_ws(struct parser *ps)
{
    while (ps->a < ps->aend && isspace((unsigned char)*ps->a))
        ps->a++;
}

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static struct pipe *parse_pipe(struct parser *ps, bool decl_ok);

static char **parse_chain(struct parser *ps, size_t *n)
{
    char *tmp[32];
    *n = 0;
    while (ps->a < ps->aend && *ps->a == '.' && ps->a + 1 < ps->aend && ident_char(ps->a[1])) {
        const char *s = ++ps->a;
        while (ps->a < ps->aend && ident_char(*ps->a))
            ps->a++;
        if (*n == ARRAY_SIZE(tmp)) {
            perr(ps, s, "field chain too long");
            return NULL;
        }
        tmp[(*n)++] = pstrndup(ps->set, s, (size_t)(ps->a - s));
    }
    if (!*n)
        return NULL;
    char **chain = pcalloc(ps->set, *n * sizeof(char *));
    if (chain)
        memcpy(chain, tmp, *n * sizeof(char *));
    else
        perr(ps, ps->a, "out of memory");
    return chain;
}

static bool parse_string(struct parser *ps, struct arg *ar)
{
    char q = *ps->a++;
    struct buf b = BUF_INIT;
    while (ps->a < ps->aend && *ps->a != q) {
        char c = *ps->a++;
        if (q == '"' && c == '\\' && ps->a < ps->aend) {
            char e = *ps->a++;
            switch (e) {
            case 'n': buf_putc(&b, '\n'); break;
            case 't': buf_putc(&b, '\t'); break;
            case 'r': buf_putc(&b, '\r'); break;
            case '\\': buf_putc(&b, '\\'); break;
            case '"': buf_putc(&b, '"'); break;
            case 'x':
                if (ps->a + 2 <= ps->aend && isxdigit((unsigned char)ps->a[0]) &&
                    isxdigit((unsigned char)ps->a[1])) {
                    char hx[3] = { ps->a[0], ps->a[1], 0 };
                    buf_putc(&b, (char)strtol(hx, NULL, 16));
                    ps->a += 2;
                    break;
                }
                /* fall through */
            default:
                buf_free(&b);
                perr(ps, ps->a, "invalid syntax in quoted string");
                return false;
            }
        } else if (q == '"' && c == '\n') {
            buf_free(&b);
            perr(ps, ps->a, "unterminated quoted string");
            return false;
        } else {
            buf_putc(&b, c);
        }
    }
    if (ps->a >= ps->aend) {
        buf_free(&b);
        perr(ps, ps->a, q == '`' ? "unterminated raw quoted string" : "unterminated quoted string");
        return false;
    }
    ps->a++;
    ar->k = A_STR;
    ar->slen = buf_used(&b);
    ar->s = pstrndup(ps->set, b.data ? buf_head(&b) : "", ar->slen);
    buf_free(&b);
    return ar->s != NULL;
}

static bool known_func(const struct gt_set *set, const char *name)
{
    static const char *const builtins[] = { "and", "or", "not", "len", "index", "slice", "print",
                                            "printf", "println", "eq", "ne", "lt", "le", "gt",
                                            "ge", "html", "js", "urlquery", NULL };
    for (int i = 0; builtins[i]; i++)
        if (!strcmp(builtins[i], name))
            return true;
    for (size_t i = 0; i < set->nfuncs; i++)
        if (!strcmp(set->funcs[i].name, name))
            return true;
    return false;
}

/* One operand; false at the end of the command. */
static bool parse_arg(struct parser *ps, struct arg *ar)
{
    skip_ws(ps);
    if (ps->a >= ps->aend || *ps->a == '|' || *ps->a == ')')
        return false;
    memset(ar, 0, sizeof(*ar));
    char c = *ps->a;
    if (c == '"' || c == '`') {
        if (!parse_string(ps, ar))
            return false;
    } else if (c == '(') {
        ps->a++;
        if (++ps->depth > GT_MAX_DEPTH) {
            perr(ps, ps->a, "expression nested too deeply");
            return false;
        }
        ar->k = A_PIPE;
        ar->pipe = parse_pipe(ps, false);
        ps->depth--;
        skip_ws(ps);
        if (ps->failed)
            return false;
        if (ps->a >= ps->aend || *ps->a != ')') {
            perr(ps, ps->a, "unclosed left paren");
            return false;
        }
        ps->a++;
        ar->chain = parse_chain(ps, &ar->nchain);
    } else if (c == '.') {
        if (ps->a + 1 < ps->aend && ident_char(ps->a[1])) {
            ar->k = A_FIELD;
            ar->chain = parse_chain(ps, &ar->nchain);
        } else {
            ps->a++;
            ar->k = A_DOT;
        }
    } else if (c == '$') {
        const char *s = ps->a++;
        while (ps->a < ps->aend && ident_char(*ps->a))
            ps->a++;
        ar->k = A_VAR;
        ar->name = pstrndup(ps->set, s, (size_t)(ps->a - s));
        ar->chain = parse_chain(ps, &ar->nchain);
    } else if (isdigit((unsigned char)c) || ((c == '-' || c == '+' || c == '.') && ps->a + 1 < ps->aend &&
                                             isdigit((unsigned char)ps->a[1]))) {
        char *end;
        char tmp[64];
        size_t l = 0;
        while (ps->a + l < ps->aend && l < sizeof(tmp) - 1 &&
               (isalnum((unsigned char)ps->a[l]) || strchr("+-._", ps->a[l])))
            l++;
        memcpy(tmp, ps->a, l);
        tmp[l] = 0;
        ar->num = strtod(tmp, &end);
        if (*end) {
            perr(ps, ps->a, "bad number syntax: \"%s\"", tmp);
            return false;
        }
        ar->k = A_NUM;
        ps->a += l;
    } else if (isalpha((unsigned char)c) || c == '_') {
        const char *s = ps->a;
        while (ps->a < ps->aend && ident_char(*ps->a))
            ps->a++;
        size_t l = (size_t)(ps->a - s);
        if (l == 4 && !strncmp(s, "true", 4))
            ar->k = A_BOOL, ar->b = true;
        else if (l == 5 && !strncmp(s, "false", 5))
            ar->k = A_BOOL;
        else if (l == 3 && !strncmp(s, "nil", 3))
            ar->k = A_NIL;
        else {
            ar->k = A_FUNC;
            ar->name = pstrndup(ps->set, s, l);
            if (ar->name && !known_func(ps->set, ar->name)) {
                perr(ps, s, "function \"%s\" not defined", ar->name);
                return false;
            }
        }
    } else {
        perr(ps, ps->a, "unexpected \"%c\" in command", c);
        return false;
    }
    if (ps->a < ps->aend && !isspace((unsigned char)*ps->a) && *ps->a != '|' && *ps->a != ')') {
        perr(ps, ps->a, "unexpected \"%c\" in operand", *ps->a);
        return false;
    }
    return true;
}

static struct pipe *parse_pipe(struct parser *ps, bool decl_ok)
{
    struct pipe *p = pcalloc(ps->set, sizeof(*p));
    if (!p) {
        perr(ps, ps->a, "out of memory");
        return NULL;
    }
    skip_ws(ps);
    if (decl_ok && ps->a < ps->aend && *ps->a == '$') {
        /* $x := / $x = / $i, $e := */
        const char *save = ps->a;
        for (int k = 0; k < 2; k++) {
            const char *s = ps->a;
            if (ps->a >= ps->aend || *ps->a != '$')
                break;
            ps->a++;
            while (ps->a < ps->aend && ident_char(*ps->a))
                ps->a++;
            p->decl[p->ndecl++] = pstrndup(ps->set, s, (size_t)(ps->a - s));
            skip_ws(ps);
            if (ps->a < ps->aend && *ps->a == ',' && k == 0) {
                ps->a++;
                skip_ws(ps);
                continue;
            }
            break;
        }
        if (ps->a + 1 < ps->aend && ps->a[0] == ':' && ps->a[1] == '=') {
            ps->a += 2;
        } else if (ps->a < ps->aend && ps->a[0] == '=' && p->ndecl == 1) {
            ps->a++;
            p->assign = true;
        } else {
            ps->a = save;       /* a variable used as an operand */
            p->ndecl = 0;
        }
    }
    struct cmd cmds[32];
    for (;;) {
        struct arg args[64];
        size_t n = 0;
        while (n < 64 && parse_arg(ps, &args[n]))
            n++;
        if (ps->failed)
            return NULL;
        if (n == 0) {
            perr(ps, ps->a, "missing value for command");
            return NULL;
        }
        if (p->ncmds == ARRAY_SIZE(cmds)) {
            perr(ps, ps->a, "pipeline too long");
            return NULL;
        }
        cmds[p->ncmds].args = pcalloc(ps->set, n * sizeof(struct arg));
        if (!cmds[p->ncmds].args) {
            perr(ps, ps->a, "out of memory");
            return NULL;
        }
        memcpy(cmds[p->ncmds].args, args, n * sizeof(struct arg));
        cmds[p->ncmds++].nargs = n;
        skip_ws(ps);
        if (ps->a < ps->aend && *ps->a == '|') {
            ps->a++;
            continue;
        }
        break;
    }
    p->cmds = pcalloc(ps->set, p->ncmds * sizeof(struct cmd));
    if (!p->cmds) {
        perr(ps, ps->a, "out of memory");
        return NULL;
    }
    memcpy(p->cmds, cmds, p->ncmds * sizeof(struct cmd));
    return p;
}

/* Finds the next action; returns false at the end of the template. The text
 * before it goes to *text (trimmed when the action starts with "{{- "). */
static bool next_action(struct parser *ps, const char **text, size_t *tlen)
{
    const char *open = strstr(ps->p, "{{");
    const char *tend = open ? open : ps->p + strlen(ps->p);
    *text = ps->p;
    if (!open) {
        *tlen = (size_t)(tend - ps->p);
        ps->p = tend;
        return false;
    }
    const char *a = open + 2;
    if (a[0] == '-' && isspace((unsigned char)a[1])) {
        while (tend > ps->p && isspace((unsigned char)tend[-1]))
            tend--;
        a += 2;
    }
    *tlen = (size_t)(tend - ps->p);
    /* the end of the action: "}}" outside quotes */
    const char *q = a;
    char quote = 0;
    for (; *q; q++) {
        if (quote) {
            if (*q == '\\' && quote == '"' && q[1])
                q++;
            else if (*q == quote)
                quote = 0;
        } else if (*q == '"' || *q == '`') {
            quote = *q;
        } else if (q[0] == '}' && q[1] == '}') {
            break;
        }
    }
    if (!*q) {
        perr(ps, open, "unclosed action");
        return false;
    }
    const char *aend = q;
    bool trim_right = aend - a >= 2 && aend[-1] == '-' && isspace((unsigned char)aend[-2]);
    if (trim_right)
        aend -= 2;
    ps->a = a;
    ps->aend = aend;
    ps->p = q + 2;
    if (trim_right)
        while (isspace((unsigned char)*ps->p))
            ps->p++;
    return true;
}

static bool keyword(struct parser *ps, const char *kw)
{
    skip_ws(ps);
    size_t l = strlen(kw);
    if ((size_t)(ps->aend - ps->a) >= l && !strncmp(ps->a, kw, l) &&
        (ps->a + l == ps->aend || !ident_char(ps->a[l]))) {
        ps->a += l;
        return true;
    }
    return false;
}

enum stop { S_EOF, S_END, S_ELSE };

static struct node *parse_list(struct parser *ps, enum stop *stop, bool in_range);

static struct node *new_node(struct parser *ps, enum nk k)
{
    struct node *n = pcalloc(ps->set, sizeof(*n));
    if (!n)
        perr(ps, ps->p, "out of memory");
    else
        n->k = k;
    return n;
}

static bool expect_end_of_action(struct parser *ps, const char *what)
{
    skip_ws(ps);
    if (ps->a != ps->aend) {
        perr(ps, ps->a, "unexpected \"%.*s\" in %s", (int)(ps->aend - ps->a), ps->a, what);
        return false;
    }
    return true;
}

/* if, range, with: pipeline, list, optional else (or else if / else with), end */
static struct node *parse_control(struct parser *ps, enum nk k, const char *what)
{
    struct node *n = new_node(ps, k);
    if (!n)
        return NULL;
    n->line = line_of(ps, ps->a);
    if (++ps->depth > GT_MAX_DEPTH) {
        perr(ps, ps->a, "nested too deeply");
        return NULL;
    }
    n->pipe = parse_pipe(ps, true);
    if (ps->failed || !expect_end_of_action(ps, what))
        return NULL;
    enum stop st;
    ps->ranges += k == N_RANGE;
    n->list = parse_list(ps, &st, ps->ranges > 0);
    ps->ranges -= k == N_RANGE;
    if (ps->failed)
        return NULL;
    if (st == S_ELSE) {
        /* after "else": "if ..." or "with ..." chains, or the end of the action */
        if ((k == N_IF && keyword(ps, "if")) || (k == N_WITH && keyword(ps, "with"))) {
            n->elselist = parse_control(ps, k, what);   /* consumes the shared end */
            ps->depth--;
            return ps->failed ? NULL : n;
        }
        if (!expect_end_of_action(ps, "else"))
            return NULL;
        n->elselist = parse_list(ps, &st, ps->ranges > 0 && k != N_RANGE);
        if (ps->failed)
            return NULL;
        if (st != S_END) {
            perr(ps, ps->p, st == S_ELSE ? "expected end; found {{else}}" : "unexpected EOF");
            return NULL;
        }
    } else if (st != S_END) {
        perr(ps, ps->p, "unexpected EOF");
        return NULL;
    }
    ps->depth--;
    return n;
}

static struct node *parse_list(struct parser *ps, enum stop *stop, bool in_range)
{
    struct node *head = NULL, **tail = &head;
    for (;;) {
        const char *text;
        size_t tlen;
        bool more = next_action(ps, &text, &tlen);
        if (ps->failed)
            return NULL;
        if (tlen) {
            struct node *t = new_node(ps, N_TEXT);
            if (!t)
                return NULL;
            t->text = (char *)text;     /* points into the template source, kept by the set */
            t->tlen = tlen;
            *tail = t;
            tail = &t->next;
        }
        if (!more) {
            *stop = S_EOF;
            return head;
        }
        skip_ws(ps);
        if (ps->aend - ps->a >= 2 && ps->a[0] == '/' && ps->a[1] == '*') {
            if (ps->aend - ps->a < 4 || ps->aend[-1] != '/' || ps->aend[-2] != '*') {
                perr(ps, ps->a, "unclosed comment");
                return NULL;
            }
            continue;
        }
        struct node *n = NULL;
        if (keyword(ps, "end")) {
            if (!expect_end_of_action(ps, "end"))
                return NULL;
            *stop = S_END;
            return head;
        } else if (keyword(ps, "else")) {
            *stop = S_ELSE;
            return head;
        } else if (keyword(ps, "if")) {
            n = parse_control(ps, N_IF, "if");
        } else if (keyword(ps, "range")) {
            n = parse_control(ps, N_RANGE, "range");
        } else if (keyword(ps, "with")) {
            n = parse_control(ps, N_WITH, "with");
        } else if (keyword(ps, "break") || keyword(ps, "continue")) {
            bool brk = ps->a[-1] == 'k';
            if (!in_range) {
                perr(ps, ps->a, "{{%s}} outside {{range}}", brk ? "break" : "continue");
                return NULL;
            }
            if (!expect_end_of_action(ps, brk ? "break" : "continue"))
                return NULL;
            n = new_node(ps, brk ? N_BREAK : N_CONTINUE);
        } else if (keyword(ps, "define") || keyword(ps, "block")) {
            bool block = ps->a[-1] == 'k';
            skip_ws(ps);
            struct arg nm;
            if (ps->a >= ps->aend || (*ps->a != '"' && *ps->a != '`') || !parse_string(ps, &nm)) {
                perr(ps, ps->a, "%s clause: expected a template name", block ? "block" : "define");
                return NULL;
            }
            struct pipe *bp = NULL;
            if (block) {
                bp = parse_pipe(ps, false);
                if (ps->failed)
                    return NULL;
            }
            if (!expect_end_of_action(ps, block ? "block" : "define"))
                return NULL;
            enum stop st;
            int ranges = ps->ranges;
            ps->ranges = 0;
            struct node *body = parse_list(ps, &st, false);
            ps->ranges = ranges;
            if (ps->failed)
                return NULL;
            if (st != S_END) {
                perr(ps, ps->p, "unexpected EOF in %s", block ? "block" : "define");
                return NULL;
            }
            if (add_tmpl(ps->set, nm.s, body)) {
                perr(ps, ps->p, "out of memory");
                return NULL;
            }
            if (block) {
                n = new_node(ps, N_TEMPLATE);
                if (n) {
                    n->tname = nm.s;
                    n->pipe = bp;
                }
            }
        } else if (keyword(ps, "template")) {
            skip_ws(ps);
            struct arg nm;
            if (ps->a >= ps->aend || (*ps->a != '"' && *ps->a != '`') || !parse_string(ps, &nm)) {
                perr(ps, ps->a, "template clause: expected a template name");
                return NULL;
            }
            n = new_node(ps, N_TEMPLATE);
            if (!n)
                return NULL;
            n->tname = nm.s;
            n->line = line_of(ps, ps->a);
            skip_ws(ps);
            if (ps->a < ps->aend) {
                n->pipe = parse_pipe(ps, false);
                if (ps->failed)
                    return NULL;
            }
        } else {
            n = new_node(ps, N_ACTION);
            if (!n)
                return NULL;
            n->line = line_of(ps, ps->a);
            n->pipe = parse_pipe(ps, true);
            if (ps->failed || !expect_end_of_action(ps, "command"))
                return NULL;
        }
        if (ps->failed)
            return NULL;
        if (n) {
            *tail = n;
            tail = &n->next;
        }
    }
}

int gt_parse(struct gt_set *set, const char *name, const char *text, char *err, size_t errlen)
{
    char *src = pstrndup(set, text, strlen(text));
    if (!src) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    struct parser ps = { .set = set, .name = name, .src = src, .p = src, .err = err,
                         .errlen = errlen };
    enum stop st;
    struct node *root = parse_list(&ps, &st, false);
    if (!ps.failed && st == S_END)
        perr(&ps, ps.p, "unexpected {{end}}");
    if (!ps.failed && st == S_ELSE)
        perr(&ps, ps.p, "unexpected {{else}}");
    if (ps.failed)
        return -EINVAL;
    if (add_tmpl(set, name, root)) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* ---- execution ---- */

struct var {
    const char *name;
    struct gt_value *v;
};

struct exec {
    const struct gt_set *set;
    struct gt_arena *a;
    struct buf *out;
    char *err;
    size_t errlen;
    bool failed;
    const char *tname;
    int line;
    struct var vars[256];
    size_t nvars;
    int depth;
    size_t iterations;
    int ctl;                    /* 1 break, 2 continue */
};

static void xerr(struct exec *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void xerr(struct exec *x, const char *fmt, ...)
{
    if (x->failed)
        return;
    x->failed = true;
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(x->err, x->errlen, "template: %s:%d: executing \"%s\": %s", x->tname, x->line, x->tname,
             msg);
}

static struct gt_value *eval_pipe(struct exec *x, const struct pipe *p, struct gt_value *dot);
static struct gt_value *builtin(struct exec *x, const char *name, struct gt_value **v, size_t n,
                                bool *found);

static struct gt_value *field(struct exec *x, struct gt_value *v, const char *name,
                              struct gt_value **args, size_t nargs)
{
    if (!v) {
        xerr(x, "nil pointer evaluating .%s", name);
        return NULL;
    }
    if (v->k == GT_MAP && !nargs) {
        struct gt_value *r = gt_map_get(v, name);
        if (r)
            return r;
    }
    if (x->set->methods) {
        bool found = false;
        char err[256] = "";
        struct gt_value *r = x->set->methods(x->a, v, name, args, nargs, &found, err, sizeof(err));
        if (found) {
            if (!r)
                xerr(x, "error calling %s: %s", name, err);
            return r;
        }
    }
    if (v->k == GT_MAP && !nargs)
        return v->missing_empty ? gt_str(x->a, "") : gt_nil(x->a);
    if (nargs)
        xerr(x, "can't give argument to non-function .%s", name);
    else
        xerr(x, "can't evaluate field %s in type %s", name,
             v->k == GT_STR ? "string" : v->k == GT_NUM ? "float64" : v->k == GT_LIST ? "slice"
                                                                        : v->k == GT_BOOL ? "bool"
                                                                                          : "interface {}");
    return NULL;
}

static struct gt_value *chain(struct exec *x, struct gt_value *v, char **c, size_t n,
                              struct gt_value **args, size_t nargs)
{
    for (size_t i = 0; i < n && v && !x->failed; i++)
        v = field(x, v, c[i], i + 1 == n ? args : NULL, i + 1 == n ? nargs : 0);
    return v;
}

static struct gt_value *lookup_var(struct exec *x, const char *name)
{
    for (size_t i = x->nvars; i > 0; i--)
        if (!strcmp(x->vars[i - 1].name, name))
            return x->vars[i - 1].v;
    xerr(x, "undefined variable: %s", name);
    return NULL;
}

static struct gt_value *eval_arg(struct exec *x, const struct arg *ar, struct gt_value *dot)
{
    switch (ar->k) {
    case A_DOT: return dot;
    case A_FIELD: return chain(x, dot, ar->chain, ar->nchain, NULL, 0);
    case A_VAR: return chain(x, lookup_var(x, ar->name), ar->chain, ar->nchain, NULL, 0);
    case A_STR: {
        struct gt_value *v = gt_alloc(x->a, sizeof(*v));
        if (v) {
            v->k = GT_STR;
            v->s = ar->s;
        }
        return v;
    }
    case A_NUM: return gt_num(x->a, ar->num);
    case A_BOOL: return gt_bool(x->a, ar->b);
    case A_NIL: return gt_nil(x->a);
    case A_PIPE: return chain(x, eval_pipe(x, ar->pipe, dot), ar->chain, ar->nchain, NULL, 0);
    case A_FUNC: {
        /* a function name used as an operand is called without arguments */
        bool found;
        struct gt_value *r = builtin(x, ar->name, NULL, 0, &found);
        if (!found)
            xerr(x, "function \"%s\" not defined", ar->name);
        return r;
    }
    }
    return NULL;
}

static int cmp_values(struct exec *x, const struct gt_value *a, const struct gt_value *b, bool *ok)
{
    *ok = true;
    if (a->k == GT_NUM && b->k == GT_NUM)
        return a->num < b->num ? -1 : a->num > b->num;
    if (a->k == GT_STR && b->k == GT_STR)
        return strcmp(a->s, b->s);
    if (a->k == GT_BOOL && b->k == GT_BOOL)
        return (int)a->b - (int)b->b;
    if (a->k == GT_NIL && b->k == GT_NIL)
        return 0;
    *ok = false;
    xerr(x, "incompatible types for comparison");
    return 0;
}

void gt_url_query_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || strchr("-_.~", c))
            buf_putc(b, (char)c);
        else if (c == ' ')
            buf_putc(b, '+');
        else
            buf_printf(b, "%%%02X", c);
    }
}

void gt_html_escape(struct buf *b, const char *s)
{
    for (; *s; s++)
        switch (*s) {
        case '<': buf_puts(b, "&lt;"); break;
        case '>': buf_puts(b, "&gt;"); break;
        case '&': buf_puts(b, "&amp;"); break;
        case '"': buf_puts(b, "&#34;"); break;
        case '\'': buf_puts(b, "&#39;"); break;
        default: buf_putc(b, *s);
        }
}

static struct gt_value *str_of(struct exec *x, struct buf *b)
{
    struct gt_value *v = gt_alloc(x->a, sizeof(*v));
    if (!v)
        return NULL;
    v->k = GT_STR;
    v->s = gt_strdup(x->a, b->data ? buf_head(b) : "", buf_used(b));
    buf_free(b);
    return v->s ? v : NULL;
}

/* Go's fmt for the verbs templates use: %s %v %d %f %e %g %q %x %X %t %%, flags,
 * width and precision. */
static void go_printf(struct buf *b, const char *f, struct gt_value **args, size_t n)
{
    size_t ai = 0;
    for (; *f; f++) {
        if (*f != '%') {
            buf_putc(b, *f);
            continue;
        }
        const char *start = f++;
        while (*f && strchr("+- #0", *f))
            f++;
        long width = 0, prec = 0;
        while (isdigit((unsigned char)*f) && width < 100000)
            width = width * 10 + (*f++ - '0');
        if (*f == '.') {
            f++;
            while (isdigit((unsigned char)*f) && prec < 100000)
                prec = prec * 10 + (*f++ - '0');
        }
        char verb = *f;
        if (width > 1024 || prec > 1024 || isdigit((unsigned char)verb)) {
            /* bounded output: cairn refuses widths Go would honour */
            buf_puts(b, "%!(BADWIDTH)");
            while (isdigit((unsigned char)*f))
                f++;
            if (!*f)
                break;
            continue;
        }
        if (!verb)
            break;
        if (verb == '%') {
            buf_putc(b, '%');
            continue;
        }
        char spec[32];
        size_t sl = (size_t)(f - start);
        if (sl > 20)
            sl = 20;
        memcpy(spec, start, sl);
        spec[sl] = 0;
        if (ai >= n) {
            buf_printf(b, "%%!%c(MISSING)", verb);
            continue;
        }
        const struct gt_value *v = args[ai++];
        char full[40];
        if (verb == 'd' && v->k == GT_NUM) {
            snprintf(full, sizeof(full), "%sll%c", spec, 'd');
            buf_printf(b, full, num_ll(v->num));
        } else if ((verb == 'x' || verb == 'X') && v->k == GT_NUM) {
            snprintf(full, sizeof(full), "%sll%c", spec, verb);
            buf_printf(b, full, num_ll(v->num));
        } else if (strchr("feEgG", verb) && v->k == GT_NUM) {
            snprintf(full, sizeof(full), "%s%c", spec, verb);
            buf_printf(b, full, v->num);
        } else if (verb == 'q' && v->k == GT_STR) {
            buf_putc(b, '"');
            for (const char *s = v->s; *s; s++) {
                if (*s == '"' || *s == '\\')
                    buf_putc(b, '\\');
                if (*s == '\n')
                    buf_puts(b, "\\n");
                else
                    buf_putc(b, *s);
            }
            buf_putc(b, '"');
        } else if (verb == 's' || verb == 'v' || verb == 't' || verb == 'q') {
            struct buf t = BUF_INIT;
            gt_print(&t, v);
            snprintf(full, sizeof(full), "%ss", spec);
            buf_printf(b, full, t.data ? buf_head(&t) : "");
            buf_free(&t);
        } else {
            buf_printf(b, "%%!%c(", verb);
            gt_print(b, v);
            buf_putc(b, ')');
        }
    }
    if (ai < n) {
        buf_puts(b, "%!(EXTRA ");
        for (size_t i = ai; i < n; i++) {
            if (i > ai)
                buf_puts(b, ", ");
            gt_print(b, args[i]);
        }
        buf_putc(b, ')');
    }
}

static struct gt_value *builtin(struct exec *x, const char *name, struct gt_value **v, size_t n,
                                bool *found)
{
    *found = true;
    struct buf b = BUF_INIT;
    if (!strcmp(name, "and") || !strcmp(name, "or")) {
        if (!n) {
            xerr(x, "wrong number of args for %s: want at least 1 got 0", name);
            return NULL;
        }
        bool want = name[0] == 'o';
        for (size_t i = 0; i < n; i++)
            if (gt_truth(v[i]) == want)
                return v[i];
        return v[n - 1];
    }
    if (!strcmp(name, "not")) {
        if (n != 1) {
            xerr(x, "wrong number of args for not: want 1 got %zu", n);
            return NULL;
        }
        return gt_bool(x->a, !gt_truth(v[0]));
    }
    if (!strcmp(name, "len")) {
        if (n != 1) {
            xerr(x, "wrong number of args for len: want 1 got %zu", n);
            return NULL;
        }
        if (v[0]->k == GT_STR)
            return gt_num(x->a, (double)strlen(v[0]->s));
        if (v[0]->k == GT_LIST || v[0]->k == GT_MAP)
            return gt_num(x->a, (double)v[0]->n);
        xerr(x, "error calling len: len of type %s", v[0]->k == GT_NUM ? "float64" : "bool");
        return NULL;
    }
    if (!strcmp(name, "index")) {
        if (n < 1) {
            xerr(x, "wrong number of args for index: want at least 1 got 0");
            return NULL;
        }
        struct gt_value *c = v[0];
        for (size_t i = 1; i < n && c; i++) {
            if (c->k == GT_MAP && v[i]->k == GT_STR) {
                struct gt_value *r = gt_map_get(c, v[i]->s);
                c = r ? r : c->missing_empty ? gt_str(x->a, "") : gt_nil(x->a);
            } else if (c->k == GT_LIST && v[i]->k == GT_NUM) {
                if (v[i]->num < 0 || v[i]->num >= (double)c->n) {
                    xerr(x, "error calling index: index out of range: %g", v[i]->num);
                    return NULL;
                }
                c = c->items[(size_t)v[i]->num];
            } else {
                xerr(x, "error calling index: cannot index with that type");
                return NULL;
            }
        }
        return c;
    }
    if (!strcmp(name, "slice")) {
        if (n < 1 || n > 3 || (n > 1 && v[1]->k != GT_NUM) || (n > 2 && v[2]->k != GT_NUM)) {
            xerr(x, "error calling slice: bad arguments");
            return NULL;
        }
        size_t len = v[0]->k == GT_STR ? strlen(v[0]->s) : v[0]->n;
        /* bounds checked as doubles first: a negative or huge index must not reach the cast */
        if ((n > 1 && !(v[1]->num >= 0 && v[1]->num <= (double)len)) ||
            (n > 2 && !(v[2]->num >= 0 && v[2]->num <= (double)len))) {
            xerr(x, "error calling slice: index out of range");
            return NULL;
        }
        size_t lo = n > 1 ? (size_t)v[1]->num : 0, hi = n > 2 ? (size_t)v[2]->num : len;
        if (lo > hi) {
            xerr(x, "error calling slice: index out of range");
            return NULL;
        }
        if (v[0]->k == GT_STR) {
            buf_append(&b, v[0]->s + lo, hi - lo);
            return str_of(x, &b);
        }
        if (v[0]->k != GT_LIST) {
            xerr(x, "error calling slice: can't slice item of this type");
            return NULL;
        }
        struct gt_value *r = gt_list(x->a, hi - lo, v[0]->tag);
        for (size_t i = lo; r && i < hi; i++)
            r->items[i - lo] = v[0]->items[i];
        return r;
    }
    if (!strcmp(name, "print") || !strcmp(name, "println")) {
        for (size_t i = 0; i < n; i++) {
            /* Sprint adds spaces between operands when neither is a string; Sprintln always */
            if (i && (name[5] == 'l' || (v[i - 1]->k != GT_STR && v[i]->k != GT_STR)))
                buf_putc(&b, ' ');
            gt_print(&b, v[i]);
        }
        if (name[5] == 'l')
            buf_putc(&b, '\n');
        return str_of(x, &b);
    }
    if (!strcmp(name, "printf")) {
        if (n < 1 || v[0]->k != GT_STR) {
            xerr(x, "wrong type for value; expected string");
            return NULL;
        }
        go_printf(&b, v[0]->s, v + 1, n - 1);
        return str_of(x, &b);
    }
    if (!strcmp(name, "eq") || !strcmp(name, "ne")) {
        if (n < 2) {
            xerr(x, "missing argument for comparison");
            return NULL;
        }
        bool eq = false, ok;
        for (size_t i = 1; i < n && !eq; i++) {
            eq = cmp_values(x, v[0], v[i], &ok) == 0;
            if (!ok)
                return NULL;
        }
        return gt_bool(x->a, name[0] == 'e' ? eq : !eq);
    }
    if (!strcmp(name, "lt") || !strcmp(name, "le") || !strcmp(name, "gt") || !strcmp(name, "ge")) {
        if (n != 2) {
            xerr(x, "wrong number of args for %s: want 2 got %zu", name, n);
            return NULL;
        }
        bool ok;
        int c = cmp_values(x, v[0], v[1], &ok);
        if (!ok)
            return NULL;
        bool r = name[0] == 'l' ? (name[1] == 't' ? c < 0 : c <= 0) : (name[1] == 't' ? c > 0 : c >= 0);
        return gt_bool(x->a, r);
    }
    if (!strcmp(name, "html") || !strcmp(name, "js") || !strcmp(name, "urlquery")) {
        struct buf s = BUF_INIT;
        for (size_t i = 0; i < n; i++)
            gt_print(&s, v[i]);
        buf_putc(&s, 0);
        const char *p = buf_head(&s);
        if (name[0] == 'h')
            gt_html_escape(&b, p);
        else if (name[0] == 'j')
            for (; *p; p++) {
                if (strchr("\\'\"<>&=", *p) || (unsigned char)*p < 0x20)
                    buf_printf(&b, "\\u%04X", (unsigned char)*p);
                else
                    buf_putc(&b, *p);
            }
        else
            gt_url_query_escape(&b, p);
        buf_free(&s);
        return str_of(x, &b);
    }
    for (size_t i = 0; i < x->set->nfuncs; i++)
        if (!strcmp(x->set->funcs[i].name, name)) {
            char err[256] = "";
            struct gt_value *r = x->set->funcs[i].fn(x->a, v, n, err, sizeof(err));
            if (!r)
                xerr(x, "error calling %s: %s", name, err[0] ? err : "out of memory");
            return r;
        }
    *found = false;
    return NULL;
}

static struct gt_value *eval_cmd(struct exec *x, const struct cmd *c, struct gt_value *dot,
                                 struct gt_value *final)
{
    const struct arg *first = &c->args[0];
    size_t nrest = c->nargs - 1 + (final ? 1 : 0);
    struct gt_value *rest[66];
    for (size_t i = 1; i < c->nargs; i++) {
        rest[i - 1] = eval_arg(x, &c->args[i], dot);
        if (!rest[i - 1] || x->failed)
            return NULL;
    }
    if (final)
        rest[nrest - 1] = final;
    if (first->k == A_FUNC) {
        bool found;
        struct gt_value *r = builtin(x, first->name, rest, nrest, &found);
        if (!found)
            xerr(x, "function \"%s\" not defined", first->name);
        return r;
    }
    if (nrest && (first->k == A_FIELD || first->k == A_VAR || first->k == A_PIPE) && first->nchain) {
        /* a method call: the last element of the chain gets the arguments */
        struct gt_value *recv = first->k == A_FIELD ? dot
                                : first->k == A_VAR ? lookup_var(x, first->name)
                                                    : eval_pipe(x, first->pipe, dot);
        return chain(x, recv, first->chain, first->nchain, rest, nrest);
    }
    if (nrest) {
        xerr(x, "can't give argument to non-function");
        return NULL;
    }
    return eval_arg(x, first, dot);
}

static struct gt_value *eval_pipe(struct exec *x, const struct pipe *p, struct gt_value *dot)
{
    struct gt_value *v = NULL;
    for (size_t i = 0; i < p->ncmds && !x->failed; i++)
        v = eval_cmd(x, &p->cmds[i], dot, v);
    if (x->failed)
        return NULL;
    if (p->ndecl == 1 && p->assign) {
        for (size_t i = x->nvars; i > 0; i--)
            if (!strcmp(x->vars[i - 1].name, p->decl[0])) {
                x->vars[i - 1].v = v;
                return v;
            }
        xerr(x, "undefined variable: %s", p->decl[0]);
        return NULL;
    }
    if (p->ndecl == 1) {
        if (x->nvars == ARRAY_SIZE(x->vars)) {
            xerr(x, "too many variables");
            return NULL;
        }
        x->vars[x->nvars++] = (struct var){ p->decl[0], v };
    }
    return v;
}

static void exec_list(struct exec *x, const struct node *n, struct gt_value *dot);

static void emit(struct exec *x, const struct gt_value *v)
{
    if (x->set->html && !(v && v->k == GT_STR && v->safe)) {
        struct buf t = BUF_INIT;
        gt_print(&t, v);
        buf_putc(&t, 0);
        gt_html_escape(x->out, buf_head(&t));
        buf_free(&t);
    } else {
        gt_print(x->out, v);
    }
}

static void exec_node(struct exec *x, const struct node *n, struct gt_value *dot)
{
    if (n->line)
        x->line = n->line;
    if (buf_used(x->out) > GT_MAX_OUTPUT) {
        xerr(x, "output larger than %u bytes", GT_MAX_OUTPUT);
        return;
    }
    switch (n->k) {
    case N_TEXT:
        buf_append(x->out, n->text, n->tlen);
        return;
    case N_ACTION: {
        struct gt_value *v = eval_pipe(x, n->pipe, dot);
        if (!x->failed && !n->pipe->ndecl)
            emit(x, v);
        return;
    }
    case N_BREAK:
        x->ctl = 1;
        return;
    case N_CONTINUE:
        x->ctl = 2;
        return;
    case N_IF:
    case N_WITH: {
        size_t mark = x->nvars;
        struct gt_value *v = eval_pipe(x, n->pipe, dot);
        if (x->failed)
            return;
        if (gt_truth(v))
            exec_list(x, n->list, n->k == N_WITH ? v : dot);
        else if (n->elselist)
            exec_list(x, n->elselist, dot);
        x->nvars = mark;
        return;
    }
    case N_RANGE: {
        size_t mark = x->nvars;
        struct pipe p = *n->pipe;
        p.ndecl = 0;            /* the variables are per element, set below */
        struct gt_value *v = eval_pipe(x, &p, dot);
        if (x->failed)
            return;
        size_t count = v && (v->k == GT_LIST || v->k == GT_MAP) ? v->n
                       : v && v->k == GT_NUM && v->num > 0 ? (size_t)num_ll(v->num) : 0;
        if (v && v->k != GT_LIST && v->k != GT_MAP && v->k != GT_NIL &&
            !(v->k == GT_NUM && v->num == floor(v->num))) {
            xerr(x, "range can't iterate over %s", v->k == GT_STR ? v->s : "this value");
            return;
        }
        for (size_t i = 0; i < count && !x->failed; i++) {
            if (++x->iterations > GT_MAX_ITERATIONS) {
                xerr(x, "more than %d range iterations", GT_MAX_ITERATIONS);
                return;
            }
            struct gt_value *e = v->k == GT_NUM ? gt_num(x->a, (double)i) : v->items[i];
            struct gt_value *key = v->k == GT_MAP ? gt_str(x->a, v->keys[i]) : gt_num(x->a, (double)i);
            x->nvars = mark;
            if (x->nvars + 2 > ARRAY_SIZE(x->vars)) {
                xerr(x, "too many variables");
                return;
            }
            if (n->pipe->ndecl == 1)
                x->vars[x->nvars++] = (struct var){ n->pipe->decl[0], v->k == GT_NUM ? key : e };
            else if (n->pipe->ndecl == 2) {
                x->vars[x->nvars++] = (struct var){ n->pipe->decl[0], key };
                x->vars[x->nvars++] = (struct var){ n->pipe->decl[1], e };
            }
            exec_list(x, n->list, e);
            if (x->ctl == 1) {
                x->ctl = 0;
                break;
            }
            x->ctl = 0;
        }
        x->nvars = mark;
        if (!count && n->elselist)
            exec_list(x, n->elselist, dot);
        return;
    }
    case N_TEMPLATE: {
        const struct tmpl *t = find(x->set, n->tname);
        if (!t) {
            xerr(x, "no such template \"%s\"", n->tname);
            return;
        }
        struct gt_value *d = n->pipe ? eval_pipe(x, n->pipe, dot) : gt_nil(x->a);
        if (x->failed)
            return;
        if (++x->depth > GT_MAX_DEPTH) {
            xerr(x, "exceeded maximum template depth (%d)", GT_MAX_DEPTH);
            return;
        }
        size_t mark = x->nvars;
        const char *tname = x->tname;
        int line = x->line;
        struct var saved = x->vars[0];
        x->vars[0] = (struct var){ "$", d };
        x->tname = t->name;
        exec_list(x, t->root, d);
        x->vars[0] = saved;
        x->tname = tname;
        x->line = line;
        x->nvars = mark;
        x->depth--;
        return;
    }
    }
}

static void exec_list(struct exec *x, const struct node *n, struct gt_value *dot)
{
    for (; n && !x->failed && !x->ctl; n = n->next)
        exec_node(x, n, dot);
}

int gt_exec(const struct gt_set *set, const char *name, struct gt_value *data, struct gt_arena *a,
            struct buf *out, char *err, size_t errlen)
{
    const struct tmpl *t = find(set, name);
    if (!t) {
        snprintf(err, errlen, "template: no template \"%s\" associated with template", name);
        return -EINVAL;
    }
    struct exec *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->set = set;
    x->a = a;
    x->out = out;
    x->err = err;
    x->errlen = errlen;
    x->tname = t->name;
    x->vars[0] = (struct var){ "$", data };
    x->nvars = 1;
    exec_list(x, t->root, data);
    int r = x->failed ? -EINVAL : 0;
    free(x);
    return r;
}

/* ---- the text functions Prometheus and Alertmanager both give templates ---- */

bool gt_want_strings(struct gt_value **v, size_t n, size_t want, char *err, size_t errlen)
{
    if (n != want) {
        snprintf(err, errlen, "wrong number of args: want %zu got %zu", want, n);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (v[i]->k != GT_STR) {
            snprintf(err, errlen, "argument %zu is not a string", i + 1);
            return false;
        }
    return true;
}

/* mode 0 toUpper, 1 toLower, 2 title (Go's strings.Title: each word's first letter) */
static struct gt_value *case_fn(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                size_t errlen, int mode)
{
    if (!gt_want_strings(v, n, 1, err, errlen))
        return NULL;
    char *s = (char *)gt_strdup(a, v[0]->s, strlen(v[0]->s));
    if (!s)
        return NULL;
    bool start = true;
    for (char *p = s; *p; p++) {
        if (mode == 0)
            *p = (char)toupper((unsigned char)*p);
        else if (mode == 1)
            *p = (char)tolower((unsigned char)*p);
        else {
            if (start && isalpha((unsigned char)*p))
                *p = (char)toupper((unsigned char)*p);
            start = !isalnum((unsigned char)*p) && *p != '\'';
        }
    }
    struct gt_value *r = val(a, GT_STR);
    if (r)
        r->s = s;
    return r;
}

static struct gt_value *f_upper(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t l)
{
    return case_fn(a, v, n, e, l, 0);
}

static struct gt_value *f_lower(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t l)
{
    return case_fn(a, v, n, e, l, 1);
}

static struct gt_value *f_title(struct gt_arena *a, struct gt_value **v, size_t n, char *e, size_t l)
{
    return case_fn(a, v, n, e, l, 2);
}

static pcre2_code *re_compile(const char *re, char *err, size_t errlen)
{
    int ec;
    PCRE2_SIZE off;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &off, NULL);
    if (!c) {
        PCRE2_UCHAR m[160];
        pcre2_get_error_message(ec, m, sizeof(m));
        snprintf(err, errlen, "error parsing regexp: %s", (char *)m);
    }
    return c;
}

/* match PATTERN STRING: an unanchored search, as Go's regexp.MatchString */
static struct gt_value *f_match(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                size_t errlen)
{
    if (!gt_want_strings(v, n, 2, err, errlen))
        return NULL;
    pcre2_code *c = re_compile(v[0]->s, err, errlen);
    if (!c)
        return NULL;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int r = md ? pcre2_match(c, (PCRE2_SPTR)v[1]->s, strlen(v[1]->s), 0, 0, md, NULL) : -1;
    pcre2_match_data_free(md);
    pcre2_code_free(c);
    return gt_bool(a, r >= 0);
}

/* reReplaceAll PATTERN REPLACEMENT STRING, with $1 / ${1} expansion */
static struct gt_value *f_replace(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                                  size_t errlen)
{
    if (!gt_want_strings(v, n, 3, err, errlen))
        return NULL;
    pcre2_code *c = re_compile(v[0]->s, err, errlen);
    if (!c)
        return NULL;
    PCRE2_SIZE outlen = strlen(v[2]->s) * 4 + strlen(v[1]->s) * 8 + 256;
    char *out = malloc(outlen);
    int r = out ? pcre2_substitute(c, (PCRE2_SPTR)v[2]->s, PCRE2_ZERO_TERMINATED, 0,
                                   PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_UNSET_EMPTY |
                                       PCRE2_SUBSTITUTE_UNKNOWN_UNSET,
                                   NULL, NULL, (PCRE2_SPTR)v[1]->s, PCRE2_ZERO_TERMINATED,
                                   (PCRE2_UCHAR *)out, &outlen)
                : -1;
    pcre2_code_free(c);
    struct gt_value *res = NULL;
    if (r >= 0) {
        res = val(a, GT_STR);
        if (res && !(res->s = gt_strdup(a, out, outlen)))
            res = NULL;
    } else {
        snprintf(err, errlen, "reReplaceAll failed");
    }
    free(out);
    return res;
}

static struct gt_value *f_safe(struct gt_arena *a, struct gt_value **v, size_t n, char *err,
                               size_t errlen)
{
    if (!gt_want_strings(v, n, 1, err, errlen))
        return NULL;
    struct gt_value *r = gt_str(a, v[0]->s);
    if (r)
        r->safe = true;
    return r;
}

int gt_add_text_funcs(struct gt_set *set)
{
    static const struct { const char *name; gt_func fn; } fns[] = {
        { "toUpper", f_upper }, { "toLower", f_lower }, { "title", f_title },
        { "match", f_match }, { "reReplaceAll", f_replace }, { "safeHtml", f_safe },
    };
    for (size_t i = 0; i < ARRAY_SIZE(fns); i++)
        if (gt_set_func(set, fns[i].name, fns[i].fn))
            return -ENOMEM;
    return 0;
}
