/* s3_xml.c - the XML bodies of S3 requests, parsed with expat into a small tree
 * (names without namespaces, text joined), within limits; escaping for answers. */
#include "s3_internal.h"

#include <expat.h>
#include <stdlib.h>
#include <string.h>

#define XML_MAX_DEPTH 16
#define XML_MAX_NODES 100000
#define XML_MAX_TEXT (64u << 10)

struct xstate {
    struct s3_xnode *root;
    struct s3_xnode *stack[XML_MAX_DEPTH + 1];
    struct s3_xnode *last[XML_MAX_DEPTH + 1];     /* last child at each level */
    size_t textlen[XML_MAX_DEPTH + 1];
    int depth;
    size_t nodes;
    bool bad;
    XML_Parser p;
};

static void stop(struct xstate *x)
{
    x->bad = true;
    XML_StopParser(x->p, XML_FALSE);
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct xstate *x = ud;
    (void)attrs;
    if (x->bad)
        return;
    if (x->depth >= XML_MAX_DEPTH || ++x->nodes > XML_MAX_NODES || (x->depth == 0 && x->root)) {
        stop(x);
        return;
    }
    const char *local = strrchr(name, ' ');     /* "ns localname" with a separator */
    struct s3_xnode *n = calloc(1, sizeof(*n));
    if (!n || !(n->name = strdup(local ? local + 1 : name))) {
        free(n);
        stop(x);
        return;
    }
    if (x->depth == 0) {
        x->root = n;
    } else {
        struct s3_xnode *parent = x->stack[x->depth - 1];
        if (x->last[x->depth])
            x->last[x->depth]->next = n;
        else
            parent->child = n;
    }
    x->last[x->depth] = n;
    x->stack[x->depth] = n;
    x->depth++;
    x->last[x->depth] = NULL;
    x->textlen[x->depth - 1] = 0;
}

static void on_end(void *ud, const XML_Char *name)
{
    struct xstate *x = ud;
    (void)name;
    if (!x->bad)
        x->depth--;
}

static void on_text(void *ud, const XML_Char *s, int len)
{
    struct xstate *x = ud;
    if (x->bad || x->depth == 0)
        return;
    struct s3_xnode *n = x->stack[x->depth - 1];
    size_t have = x->textlen[x->depth - 1];
    if (have + (size_t)len > XML_MAX_TEXT) {
        stop(x);
        return;
    }
    char *t = realloc(n->text, have + (size_t)len + 1);
    if (!t) {
        stop(x);
        return;
    }
    memcpy(t + have, s, (size_t)len);
    t[have + (size_t)len] = 0;
    n->text = t;
    x->textlen[x->depth - 1] = have + (size_t)len;
}

/* No DTDs: no entity expansion bombs. */
static void on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
                       int has_internal)
{
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)has_internal;
    stop(ud);
}

struct s3_xnode *s3_xml_parse(const char *p, size_t n)
{
    if (n > S3_MAX_XML)
        return NULL;
    struct xstate x = { 0 };
    x.p = XML_ParserCreateNS(NULL, ' ');
    if (!x.p)
        return NULL;
    XML_SetUserData(x.p, &x);
    XML_SetElementHandler(x.p, on_start, on_end);
    XML_SetCharacterDataHandler(x.p, on_text);
    XML_SetStartDoctypeDeclHandler(x.p, on_doctype);
    enum XML_Status st = XML_Parse(x.p, p, (int)n, XML_TRUE);
    XML_ParserFree(x.p);
    if (st != XML_STATUS_OK || x.bad || !x.root || x.depth != 0) {
        s3_xml_free(x.root);
        return NULL;
    }
    return x.root;
}

void s3_xml_free(struct s3_xnode *n)
{
    while (n) {
        struct s3_xnode *next = n->next;
        s3_xml_free(n->child);
        free(n->name);
        free(n->text);
        free(n);
        n = next;
    }
}

struct s3_xnode *s3_xml_child(const struct s3_xnode *n, const char *name)
{
    for (struct s3_xnode *c = n ? n->child : NULL; c; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

const char *s3_xml_text(const struct s3_xnode *n, const char *child)
{
    struct s3_xnode *c = s3_xml_child(n, child);
    return c ? (c->text ? c->text : "") : NULL;
}

int s3_xml_escape(struct buf *b, const char *s, size_t n)
{
    int e = 0;
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '<': e |= buf_puts(b, "&lt;"); break;
        case '>': e |= buf_puts(b, "&gt;"); break;
        case '&': e |= buf_puts(b, "&amp;"); break;
        case '"': e |= buf_puts(b, "&quot;"); break;
        case '\'': e |= buf_puts(b, "&apos;"); break;
        default:
            if ((unsigned char)s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
                e |= buf_printf(b, "&#x%x;", (unsigned char)s[i]);
            else
                e |= buf_putc(b, s[i]);
        }
    }
    return e;
}

int s3_xml_write(struct buf *b, const struct s3_xnode *n, const char *root_attrs)
{
    int e = buf_printf(b, "<%s%s%s>", n->name, root_attrs ? " " : "", root_attrs ? root_attrs : "");
    if (n->text && !n->child)
        e |= s3_xml_escape(b, n->text, strlen(n->text));
    for (const struct s3_xnode *c = n->child; c; c = c->next)
        e |= s3_xml_write(b, c, NULL);
    return e | buf_printf(b, "</%s>", n->name);
}

struct s3_xnode *s3_xml_add(struct s3_xnode *parent, const char *name, const char *text)
{
    struct s3_xnode *c = calloc(1, sizeof(*c));
    if (!c || !(c->name = strdup(name)) || (text && !(c->text = strdup(text)))) {
        if (c) {
            free(c->name);
            free(c);
        }
        return NULL;
    }
    c->next = parent->child;        /* first: where S3 puts a rule's ID */
    parent->child = c;
    return c;
}
