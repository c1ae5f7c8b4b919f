/* dns_zone.c - RFC 1035 zone files into a hashed node table. */
#include "dns_zone.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- a bump allocator for nodes, names and RRsets ---- */

struct dns_arena {
    struct dns_arena *next;
    size_t used, cap;
    max_align_t data[];
};

static void *arena_alloc(struct dns_arena **a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!*a || (*a)->cap - (*a)->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        struct dns_arena *na = malloc(sizeof(*na) + cap);
        if (!na)
            return NULL;
        na->next = *a;
        na->used = 0;
        na->cap = cap;
        *a = na;
    }
    void *p = (char *)(*a)->data + (*a)->used;
    (*a)->used += n;
    memset(p, 0, n);
    return p;
}

/* ---- names ---- */

uint32_t dns_name_hash(const uint8_t *lname, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= lname[i];
        h *= 16777619u;
    }
    return h;
}

static inline uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

void dns_name_lower(uint8_t *dst, const uint8_t *src, size_t len)
{
    /* label length bytes are below 64 and never in A..Z, so a byte-wise fold is safe */
    for (size_t i = 0; i < len; i++)
        dst[i] = lower(src[i]);
}

int dns_name_labels(const uint8_t *name)
{
    int n = 0;
    while (*name) {
        name += *name + 1;
        n++;
    }
    return n;
}

bool dns_name_under(const uint8_t *name, size_t len, const uint8_t *origin, size_t originlen)
{
    if (len < originlen)
        return false;
    size_t i = 0;
    while (len - i > originlen)
        i += (size_t)name[i] + 1;
    return len - i == originlen && memcmp(name + i, origin, originlen) == 0;
}

int dns_name_from_text(const char *s, size_t n, const uint8_t *origin, size_t originlen,
                       uint8_t *out, const char **err)
{
    if (n == 1 && s[0] == '@') {
        if (!origin) {
            *err = "\"@\" without an origin";
            return -1;
        }
        memcpy(out, origin, originlen);
        return (int)originlen;
    }
    if (n == 1 && s[0] == '.') {
        out[0] = 0;
        return 1;
    }
    size_t o = 0, lab = 0;
    uint8_t label[64];
    bool absolute = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c == '.') {
            if (lab == 0) {
                *err = "empty label in name";
                return -1;
            }
            if (o + lab + 1 > DNS_NAME_MAX - 1) {
                *err = "name longer than 255 bytes";
                return -1;
            }
            out[o++] = (uint8_t)lab;
            memcpy(out + o, label, lab);
            o += lab;
            lab = 0;
            if (i == n - 1)
                absolute = true;
            continue;
        }
        if (c == '\\') {
            if (i + 1 >= n) {
                *err = "name ends in a backslash";
                return -1;
            }
            if (s[i + 1] >= '0' && s[i + 1] <= '9') {
                if (i + 3 >= n || !(s[i + 2] >= '0' && s[i + 2] <= '9') ||
                    !(s[i + 3] >= '0' && s[i + 3] <= '9')) {
                    *err = "bad \\DDD escape in name";
                    return -1;
                }
                int v = (s[i + 1] - '0') * 100 + (s[i + 2] - '0') * 10 + (s[i + 3] - '0');
                if (v > 255) {
                    *err = "\\DDD escape above 255 in name";
                    return -1;
                }
                c = (uint8_t)v;
                i += 3;
            } else {
                c = (uint8_t)s[++i];
            }
        }
        if (lab == 63) {
            *err = "label longer than 63 bytes";
            return -1;
        }
        label[lab++] = c;
    }
    if (lab) {
        if (o + lab + 1 > DNS_NAME_MAX - 1) {
            *err = "name longer than 255 bytes";
            return -1;
        }
        out[o++] = (uint8_t)lab;
        memcpy(out + o, label, lab);
        o += lab;
    }
    if (absolute || n == 0) {
        out[o++] = 0;
        return (int)o;
    }
    if (!origin) {
        *err = "relative name without an origin";
        return -1;
    }
    if (o + originlen > DNS_NAME_MAX) {
        *err = "name longer than 255 bytes";
        return -1;
    }
    memcpy(out + o, origin, originlen);
    return (int)(o + originlen);
}

void dns_name_to_text(const uint8_t *name, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    if (!*name) {
        snprintf(out, outlen, ".");
        return;
    }
    while (*name && o + 6 < outlen) {
        uint8_t l = *name++;
        for (uint8_t i = 0; i < l && o + 6 < outlen; i++) {
            uint8_t c = name[i];
            if (c == '.' || c == '\\' || c == '"' || c == ';' || c == '(' || c == ')' ||
                c == '@' || c == '$')
                o += (size_t)snprintf(out + o, outlen - o, "\\%c", c);
            else if (c <= 32 || c >= 127)
                o += (size_t)snprintf(out + o, outlen - o, "\\%03u", c);
            else
                out[o++] = (char)c;
        }
        name += l;
        out[o++] = '.';
    }
    out[o] = 0;
}

/* ---- types ---- */

static const struct {
    uint16_t type;
    const char *name;
} type_names[] = {
    { DNS_T_A, "A" },       { DNS_T_NS, "NS" },     { DNS_T_CNAME, "CNAME" },
    { DNS_T_SOA, "SOA" },   { DNS_T_PTR, "PTR" },   { DNS_T_HINFO, "HINFO" },
    { DNS_T_MX, "MX" },     { DNS_T_TXT, "TXT" },   { DNS_T_AAAA, "AAAA" },
    { DNS_T_SRV, "SRV" },   { DNS_T_OPT, "OPT" },   { DNS_T_DS, "DS" },
    { DNS_T_IXFR, "IXFR" }, { DNS_T_AXFR, "AXFR" }, { DNS_T_ANY, "ANY" },
    { DNS_T_CAA, "CAA" },
};

const char *dns_type_name(uint16_t type, char *tmp, size_t tmplen)
{
    for (size_t i = 0; i < ARRAY_SIZE(type_names); i++)
        if (type_names[i].type == type)
            return type_names[i].name;
    snprintf(tmp, tmplen, "TYPE%u", type);
    return tmp;
}

static bool word_eq(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);
    if (n != wl)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((uint8_t)s[i]) != lower((uint8_t)w[i]))
            return false;
    return true;
}

static int parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || n > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

int dns_type_parse(const char *s, size_t n, uint16_t *type)
{
    for (size_t i = 0; i < ARRAY_SIZE(type_names); i++)
        if (word_eq(s, n, type_names[i].name)) {
            *type = type_names[i].type;
            return 0;
        }
    uint64_t v;
    if (n > 4 && word_eq(s, 4, "TYPE") && parse_uint(s + 4, n - 4, 65535, &v) == 0) {
        *type = (uint16_t)v;
        return 0;
    }
    return -1;
}

/* TTLs: seconds, or BIND's units (1w2d3h4m5s). */
static int parse_ttl(const char *s, size_t n, uint32_t *out)
{
    if (n == 0 || s[0] < '0' || s[0] > '9')
        return -1;
    uint64_t total = 0, cur = 0;
    bool digits = false, units = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            cur = cur * 10 + (uint64_t)(c - '0');
            if (cur > 0xffffffffull)
                return -1;
            digits = true;
            continue;
        }
        if (!digits)
            return -1;
        uint64_t m;
        switch (lower((uint8_t)c)) {
        case 's': m = 1; break;
        case 'm': m = 60; break;
        case 'h': m = 3600; break;
        case 'd': m = 86400; break;
        case 'w': m = 604800; break;
        default: return -1;
        }
        total += cur * m;
        cur = 0;
        digits = false;
        units = true;
    }
    if (digits)
        total += cur;
    else if (!units)
        return -1;
    if (total > 0x7fffffffull)
        return -1;
    *out = (uint32_t)total;
    return 0;
}

/* ---- the lexer ---- */

struct tok {
    const char *p;
    size_t n;
    bool quoted;
};

struct lexer {
    const char *p, *end;
    const char *file;
    int line;           /* current line */
    int paren;
};

#define MAX_TOKS 4096

/* Reads one logical line (parentheses join physical lines) into toks. Returns
 * the token count, -1 at end of input, -2 on a syntax error (msg set). *blank
 * tells whether the line began with white space (the owner is inherited). */
static int lex_line(struct lexer *lx, struct tok *toks, bool *blank, int *startline,
                    const char **msg)
{
    int n = 0;
    for (;;) {
        if (lx->p >= lx->end)
            return n ? n : -1;
        *blank = (*lx->p == ' ' || *lx->p == '\t');
        *startline = lx->line;
        for (;;) {
            if (lx->p >= lx->end) {
                if (lx->paren) {
                    *msg = "unbalanced parenthesis at end of file";
                    return -2;
                }
                goto line_done;
            }
            char c = *lx->p;
            if (c == ' ' || c == '\t' || c == '\r') {
                lx->p++;
                continue;
            }
            if (c == ';') {
                while (lx->p < lx->end && *lx->p != '\n')
                    lx->p++;
                continue;
            }
            if (c == '\n') {
                lx->p++;
                lx->line++;
                if (lx->paren)
                    continue;
                goto line_done;
            }
            if (c == '(') {
                lx->paren++;
                lx->p++;
                continue;
            }
            if (c == ')') {
                if (!lx->paren) {
                    *msg = "\")\" without \"(\"";
                    return -2;
                }
                lx->paren--;
                lx->p++;
                continue;
            }
            if (n == MAX_TOKS) {
                *msg = "too many fields in one record";
                return -2;
            }
            struct tok *t = &toks[n++];
            if (c == '"') {
                lx->p++;
                t->p = lx->p;
                t->quoted = true;
                while (lx->p < lx->end && *lx->p != '"') {
                    if (*lx->p == '\\' && lx->p + 1 < lx->end)
                        lx->p++;
                    if (*lx->p == '\n')
                        lx->line++;
                    lx->p++;
                }
                if (lx->p >= lx->end) {
                    *msg = "unterminated quoted string";
                    return -2;
                }
                t->n = (size_t)(lx->p - t->p);
                lx->p++;
                continue;
            }
            t->p = lx->p;
            t->quoted = false;
            while (lx->p < lx->end) {
                c = *lx->p;
                if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' || c == '(' ||
                    c == ')' || c == '"')
                    break;
                if (c == '\\' && lx->p + 1 < lx->end) {
                    if (lx->p[1] == '\n')
                        lx->line++;
                    lx->p++;
                }
                lx->p++;
            }
            t->n = (size_t)(lx->p - t->p);
        }
line_done:
        if (n)
            return n;
    }
}

/* ---- zone building ---- */

struct loader {
    struct dns_zone *z;
    char *err;
    size_t errlen;
    bool allow_include;
    int depth;
    uint32_t default_ttl;
    bool have_default_ttl;
    uint32_t last_ttl;
    bool have_last_ttl;
    uint8_t owner[DNS_NAME_MAX];
    int ownerlen;
};

static int zerr(struct loader *ld, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int zerr(struct loader *ld, const char *file, int line, const char *fmt, ...)
{
    int o = snprintf(ld->err, ld->errlen, "%s:%d: ", file, line);
    if (o < 0 || (size_t)o >= ld->errlen)
        return -EINVAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + o, ld->errlen - (size_t)o, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int table_grow(struct dns_zone *z)
{
    size_t ns = z->tablesize ? z->tablesize * 2 : 1024;
    struct dns_node **t = calloc(ns, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < z->tablesize; i++) {
        struct dns_node *n = z->table[i], *nx;
        for (; n; n = nx) {
            nx = n->hnext;
            size_t b = n->hash & (ns - 1);
            n->hnext = t[b];
            t[b] = n;
        }
    }
    free(z->table);
    z->table = t;
    z->tablesize = ns;
    return 0;
}

struct dns_node *dns_zone_find(const struct dns_zone *z, const uint8_t *lname, size_t len)
{
    uint32_t h = dns_name_hash(lname, len);
    for (struct dns_node *n = z->table[h & (z->tablesize - 1)]; n; n = n->hnext)
        if (n->hash == h && n->namelen == len && memcmp(n->name, lname, len) == 0)
            return n;
    return NULL;
}

/* Finds or creates the node of owner (wire, any case; under the origin),
 * creating its ancestors first so that parents precede children in the list. */
static struct dns_node *node_get(struct dns_zone *z, const uint8_t *owner, size_t len)
{
    uint8_t lname[DNS_NAME_MAX];
    if (len == 0 || len > DNS_NAME_MAX)
        return NULL;
    memset(lname, 0, sizeof(lname));
    dns_name_lower(lname, owner, len);
    struct dns_node *n = dns_zone_find(z, lname, len);
    if (n)
        return n;
    struct dns_node *parent = NULL;
    if (len > z->originlen) {
        parent = node_get(z, owner + owner[0] + 1, len - owner[0] - 1U);
        if (!parent)
            return NULL;
    }
    if (z->nnodes + 1 > z->tablesize && table_grow(z))
        return NULL;
    n = arena_alloc(&z->arena, sizeof(*n));
    uint8_t *names = arena_alloc(&z->arena, len * 2);
    if (!n || !names)
        return NULL;
    n->name = names;
    n->owner = names + len;
    memcpy(n->name, lname, len);
    memcpy(n->owner, owner, len);
    n->namelen = (uint8_t)len;
    n->nlabels = (uint8_t)dns_name_labels(lname);
    n->hash = dns_name_hash(lname, len);
    n->parent = parent;
    n->gslb = -1;
    n->cut = parent ? parent->cut : NULL;
    size_t b = n->hash & (z->tablesize - 1);
    n->hnext = z->table[b];
    z->table[b] = n;
    z->nnodes++;
    if (z->last)
        z->last->next = n;
    else
        z->first = n;
    z->last = n;
    if (parent && lname[0] == 1 && lname[1] == '*')
        parent->wild = n;
    if (!parent)
        z->apex = n;
    return n;
}

struct dns_rrset *dns_node_rrset(const struct dns_node *n, uint16_t type)
{
    for (struct dns_rrset *s = n->rrsets; s; s = s->next)
        if (s->type == type)
            return s;
    return NULL;
}

static int add_rr(struct loader *ld, const char *file, int line, const uint8_t *owner,
                  size_t ownerlen, uint16_t type, uint32_t ttl, const uint8_t *rd, size_t rdlen)
{
    struct dns_zone *z = ld->z;
    char tn[16];
    if (!dns_name_under(owner, ownerlen, z->origin, z->originlen)) {
        uint8_t l[DNS_NAME_MAX];
        dns_name_lower(l, owner, ownerlen);
        if (!dns_name_under(l, ownerlen, z->origin, z->originlen)) {
            char t[1024];
            dns_name_to_text(owner, t, sizeof(t));
            return zerr(ld, file, line, "%s is outside the zone %s", t, z->origin_text);
        }
    }
    struct dns_node *n = node_get(z, owner, ownerlen);
    if (!n)
        return zerr(ld, file, line, "out of memory");
    if (type == DNS_T_SOA && n != z->apex)
        return zerr(ld, file, line, "SOA record not at the zone apex");
    bool has_cname = dns_node_rrset(n, DNS_T_CNAME) != NULL;
    if (type == DNS_T_CNAME ? (n->rrsets && !has_cname) : has_cname)
        return zerr(ld, file, line, "CNAME and other data at the same name");
    struct dns_rrset *s = dns_node_rrset(n, type);
    if (!s) {
        s = arena_alloc(&z->arena, sizeof(*s));
        if (!s)
            return zerr(ld, file, line, "out of memory");
        s->type = type;
        s->ttl = ttl;
        /* keep the RRsets in load order */
        struct dns_rrset **pp = &n->rrsets;
        while (*pp)
            pp = &(*pp)->next;
        *pp = s;
    } else {
        if (type == DNS_T_CNAME)
            return zerr(ld, file, line, "more than one CNAME record at one name");
        if (type == DNS_T_SOA)
            return zerr(ld, file, line, "more than one SOA record");
        /* RFC 2181 5.2: one TTL per RRset; the lowest one wins */
        if (ttl < s->ttl)
            s->ttl = ttl;
        /* duplicates are dropped (RFC 2181 5) */
        size_t off = 0;
        for (uint16_t i = 0; i < s->nrr; i++) {
            size_t l = (size_t)s->rdata[off] << 8 | s->rdata[off + 1];
            if (l == rdlen && memcmp(s->rdata + off + 2, rd, rdlen) == 0)
                return 0;
            off += 2 + l;
        }
        if (s->nrr == 65535)
            return zerr(ld, file, line, "too many %s records at one name",
                        dns_type_name(type, tn, sizeof(tn)));
    }
    uint8_t *nd = realloc(s->rdata, s->rdlen + 2 + rdlen);
    if (!nd)
        return zerr(ld, file, line, "out of memory");
    s->rdata = nd;
    nd[s->rdlen] = (uint8_t)(rdlen >> 8);
    nd[s->rdlen + 1] = (uint8_t)rdlen;
    memcpy(nd + s->rdlen + 2, rd, rdlen);
    s->rdlen += 2 + rdlen;
    s->nrr++;
    z->nrecords++;
    return 0;
}

/* ---- RDATA from text ---- */

struct rdbuf {
    uint8_t b[65535];
    size_t n;
};

static int rd_put(struct rdbuf *r, const void *p, size_t n)
{
    if (r->n + n > sizeof(r->b))
        return -1;
    memcpy(r->b + r->n, p, n);
    r->n += n;
    return 0;
}

static int rd_u16(struct rdbuf *r, uint64_t v)
{
    uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };
    return rd_put(r, b, 2);
}

static int rd_u32(struct rdbuf *r, uint64_t v)
{
    uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    return rd_put(r, b, 4);
}

/* A <character-string>: escapes \X and \DDD, at most 255 bytes. */
static int rd_charstr(struct rdbuf *r, const struct tok *t, const char **msg)
{
    uint8_t s[256];
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint8_t c = (uint8_t)t->p[i];
        if (c == '\\') {
            if (i + 1 >= t->n) {
                *msg = "string ends in a backslash";
                return -1;
            }
            if (t->p[i + 1] >= '0' && t->p[i + 1] <= '9') {
                if (i + 3 >= t->n || !(t->p[i + 2] >= '0' && t->p[i + 2] <= '9') ||
                    !(t->p[i + 3] >= '0' && t->p[i + 3] <= '9')) {
                    *msg = "bad \\DDD escape in string";
                    return -1;
                }
                int v = (t->p[i + 1] - '0') * 100 + (t->p[i + 2] - '0') * 10 + (t->p[i + 3] - '0');
                if (v > 255) {
                    *msg = "\\DDD escape above 255 in string";
                    return -1;
                }
                c = (uint8_t)v;
                i += 3;
            } else {
                c = (uint8_t)t->p[++i];
            }
        }
        if (n == 255) {
            *msg = "character string longer than 255 bytes";
            return -1;
        }
        s[n++] = c;
    }
    uint8_t l = (uint8_t)n;
    if (rd_put(r, &l, 1) || rd_put(r, s, n)) {
        *msg = "record data longer than 65535 bytes";
        return -1;
    }
    return 0;
}

static int rd_name(struct loader *ld, struct rdbuf *r, const struct tok *t, const char **msg)
{
    uint8_t nm[DNS_NAME_MAX];
    int l = dns_name_from_text(t->p, t->n, ld->z->origin, ld->z->originlen, nm, msg);
    if (l < 0)
        return -1;
    return rd_put(r, nm, (size_t)l);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)lower((uint8_t)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* RFC 3597: \# <length> <hex>... */
static int rd_generic(struct rdbuf *r, const struct tok *t, int nt, const char **msg)
{
    uint64_t len;
    if (nt < 1 || parse_uint(t[0].p, t[0].n, 65535, &len)) {
        *msg = "expected a length after \\#";
        return -1;
    }
    int hi = -1;
    for (int i = 1; i < nt; i++)
        for (size_t k = 0; k < t[i].n; k++) {
            int v = hexval(t[i].p[k]);
            if (v < 0) {
                *msg = "bad hex digit in \\# data";
                return -1;
            }
            if (hi < 0) {
                hi = v;
            } else {
                uint8_t b = (uint8_t)(hi << 4 | v);
                if (rd_put(r, &b, 1)) {
                    *msg = "record data longer than 65535 bytes";
                    return -1;
                }
                hi = -1;
            }
        }
    if (hi >= 0) {
        *msg = "odd number of hex digits in \\# data";
        return -1;
    }
    if (r->n != len) {
        *msg = "\\# length does not match the data";
        return -1;
    }
    return 0;
}

static int tok_u(const struct tok *t, uint64_t max, uint64_t *v)
{
    return t->quoted ? -1 : parse_uint(t->p, t->n, max, v);
}

/* Parses RDATA of type from nt tokens. */
static int parse_rdata(struct loader *ld, uint16_t type, const struct tok *t, int nt,
                       struct rdbuf *r, const char **msg)
{
    uint64_t a, b, c;
    r->n = 0;
    if (nt >= 1 && !t[0].quoted && t[0].n == 2 && t[0].p[0] == '\\' && t[0].p[1] == '#')
        return rd_generic(r, t + 1, nt - 1, msg);
    int want = -1;
    switch (type) {
    case DNS_T_A: {
        char s[32];
        struct in_addr in;
        if (nt != 1 || t[0].n >= sizeof(s)) {
            *msg = "A: expected one IPv4 address";
            return -1;
        }
        memcpy(s, t[0].p, t[0].n);
        s[t[0].n] = 0;
        if (inet_pton(AF_INET, s, &in) != 1) {
            *msg = "A: bad IPv4 address";
            return -1;
        }
        return rd_put(r, &in, 4);
    }
    case DNS_T_AAAA: {
        char s[64];
        struct in6_addr in;
        if (nt != 1 || t[0].n >= sizeof(s)) {
            *msg = "AAAA: expected one IPv6 address";
            return -1;
        }
        memcpy(s, t[0].p, t[0].n);
        s[t[0].n] = 0;
        if (inet_pton(AF_INET6, s, &in) != 1) {
            *msg = "AAAA: bad IPv6 address";
            return -1;
        }
        return rd_put(r, &in, 16);
    }
    case DNS_T_NS:
    case DNS_T_CNAME:
    case DNS_T_PTR:
        if (nt != 1) {
            *msg = "expected one domain name";
            return -1;
        }
        return rd_name(ld, r, &t[0], msg);
    case DNS_T_MX:
        if (nt != 2 || tok_u(&t[0], 65535, &a)) {
            *msg = "MX: expected a preference (0-65535) and a name";
            return -1;
        }
        rd_u16(r, a);
        return rd_name(ld, r, &t[1], msg);
    case DNS_T_SRV:
        if (nt != 4 || tok_u(&t[0], 65535, &a) || tok_u(&t[1], 65535, &b) ||
            tok_u(&t[2], 65535, &c)) {
            *msg = "SRV: expected priority, weight, port (0-65535) and a target";
            return -1;
        }
        rd_u16(r, a);
        rd_u16(r, b);
        rd_u16(r, c);
        return rd_name(ld, r, &t[3], msg);
    case DNS_T_SOA: {
        if (nt != 7) {
            *msg = "SOA: expected mname rname serial refresh retry expire minimum";
            return -1;
        }
        if (rd_name(ld, r, &t[0], msg) || rd_name(ld, r, &t[1], msg))
            return -1;
        if (tok_u(&t[2], 0xffffffffull, &a)) {
            *msg = "SOA: bad serial";
            return -1;
        }
        rd_u32(r, a);
        for (int i = 3; i < 7; i++) {
            uint32_t v;
            if (t[i].quoted || parse_ttl(t[i].p, t[i].n, &v)) {
                *msg = "SOA: bad time value";
                return -1;
            }
            rd_u32(r, v);
        }
        return 0;
    }
    case DNS_T_TXT:
        if (nt < 1) {
            *msg = "TXT: expected at least one string";
            return -1;
        }
        for (int i = 0; i < nt; i++)
            if (rd_charstr(r, &t[i], msg))
                return -1;
        return 0;
    case DNS_T_HINFO:
        want = 2;
        if (nt != want) {
            *msg = "HINFO: expected two strings (cpu and os)";
            return -1;
        }
        for (int i = 0; i < nt; i++)
            if (rd_charstr(r, &t[i], msg))
                return -1;
        return 0;
    case DNS_T_CAA: {
        if (nt != 3 || tok_u(&t[0], 255, &a)) {
            *msg = "CAA: expected flags (0-255), a tag and a value";
            return -1;
        }
        if (t[1].n < 1 || t[1].n > 255) {
            *msg = "CAA: bad tag";
            return -1;
        }
        for (size_t i = 0; i < t[1].n; i++) {
            char ch = t[1].p[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))) {
                *msg = "CAA: the tag must be letters and digits";
                return -1;
            }
        }
        uint8_t f = (uint8_t)a, tl = (uint8_t)t[1].n;
        rd_put(r, &f, 1);
        rd_put(r, &tl, 1);
        rd_put(r, t[1].p, t[1].n);
        /* the value is the rest of the RDATA, not a length-prefixed string */
        struct rdbuf tmp;
        tmp.n = 0;
        if (rd_charstr(&tmp, &t[2], msg))
            return -1;
        return rd_put(r, tmp.b + 1, tmp.b[0]);
    }
    case DNS_T_OPT:
    case DNS_T_AXFR:
    case DNS_T_IXFR:
    case DNS_T_ANY:
        *msg = "this type cannot appear in a zone";
        return -1;
    default: {
        char tn[16];
        static char m[96];
        snprintf(m, sizeof(m), "type %s: give its data in RFC 3597 form (\\# length hex)",
                 dns_type_name(type, tn, sizeof(tn)));
        *msg = m;
        return -1;
    }
    }
}

static bool is_class(const struct tok *t, uint16_t *cls)
{
    if (t->quoted)
        return false;
    if (word_eq(t->p, t->n, "IN")) {
        *cls = DNS_C_IN;
        return true;
    }
    if (word_eq(t->p, t->n, "CH") || word_eq(t->p, t->n, "HS") || word_eq(t->p, t->n, "CS")) {
        *cls = 0;
        return true;
    }
    uint64_t v;
    if (t->n > 5 && word_eq(t->p, 5, "CLASS") && parse_uint(t->p + 5, t->n - 5, 65535, &v) == 0) {
        *cls = (uint16_t)v;
        return true;
    }
    return false;
}

static int load_text(struct loader *ld, const char *file, const char *text, size_t len,
                     const uint8_t *origin, size_t originlen, const char *dir);

static int do_include(struct loader *ld, const char *file, int line, const char *dir,
                      const struct tok *t, int nt, const uint8_t *origin, size_t originlen)
{
    if (!ld->allow_include)
        return zerr(ld, file, line, "$INCLUDE is not allowed here");
    if (nt < 2 || nt > 3)
        return zerr(ld, file, line, "$INCLUDE: expected a file name and an optional origin");
    if (ld->depth >= DNS_ZONE_MAX_INCLUDE_DEPTH)
        return zerr(ld, file, line, "$INCLUDE nested more than %d deep", DNS_ZONE_MAX_INCLUDE_DEPTH);
    char path[4096];
    if (t[1].p[0] == '/' || !dir)
        snprintf(path, sizeof(path), "%.*s", (int)t[1].n, t[1].p);
    else
        snprintf(path, sizeof(path), "%s/%.*s", dir, (int)t[1].n, t[1].p);
    uint8_t org[DNS_NAME_MAX];
    size_t orglen = originlen;
    memcpy(org, origin, originlen);
    if (nt == 3) {
        const char *msg;
        int l = dns_name_from_text(t[2].p, t[2].n, origin, originlen, org, &msg);
        if (l < 0)
            return zerr(ld, file, line, "$INCLUDE origin: %s", msg);
        orglen = (size_t)l;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return zerr(ld, file, line, "$INCLUDE %s: %s", path, strerror(errno));
    struct stat stt;
    if (fstat(fileno(f), &stt) || stt.st_size > (off_t)DNS_ZONE_MAX_FILE) {
        fclose(f);
        return zerr(ld, file, line, "$INCLUDE %s: unreadable or larger than %u MiB", path,
                    DNS_ZONE_MAX_FILE >> 20);
    }
    size_t sz = (size_t)stt.st_size;
    char *buf = malloc(sz + 1);
    if (!buf || fread(buf, 1, sz, f) != sz) {
        free(buf);
        fclose(f);
        return zerr(ld, file, line, "$INCLUDE %s: read error", path);
    }
    fclose(f);
    buf[sz] = 0;
    char *incdir = strdup(path);
    char *slash = incdir ? strrchr(incdir, '/') : NULL;
    if (slash)
        *slash = 0;
    ld->depth++;
    /* the included file starts with the current owner unset (RFC 1035 5.1) */
    int saved_ownerlen = ld->ownerlen;
    uint8_t saved_owner[DNS_NAME_MAX];
    memcpy(saved_owner, ld->owner, sizeof(saved_owner));
    ld->ownerlen = 0;
    int r = load_text(ld, path, buf, sz, org, orglen, slash ? incdir : dir);
    memcpy(ld->owner, saved_owner, sizeof(saved_owner));
    ld->ownerlen = saved_ownerlen;
    ld->depth--;
    free(incdir);
    free(buf);
    return r;
}

static int load_text(struct loader *ld, const char *file, const char *text, size_t len,
                     const uint8_t *origin0, size_t originlen0, const char *dir)
{
    struct lexer lx = { .p = text, .end = text + len, .file = file, .line = 1 };
    uint8_t origin[DNS_NAME_MAX];
    size_t originlen = originlen0;
    memcpy(origin, origin0, originlen0);
    struct tok *toks = malloc(sizeof(*toks) * MAX_TOKS);
    struct rdbuf *rd = malloc(sizeof(*rd));
    int ret = 0;
    if (!toks || !rd) {
        ret = zerr(ld, file, 0, "out of memory");
        goto out;
    }
    for (;;) {
        bool blank;
        int line;
        const char *msg = NULL;
        int nt = lex_line(&lx, toks, &blank, &line, &msg);
        if (nt == -1)
            break;
        if (nt == -2) {
            ret = zerr(ld, file, lx.line, "%s", msg);
            goto out;
        }
        struct tok *t = toks;
        if (!blank && !t[0].quoted && t[0].n && t[0].p[0] == '$') {
            if (word_eq(t[0].p, t[0].n, "$ORIGIN")) {
                if (nt != 2) {
                    ret = zerr(ld, file, line, "$ORIGIN: expected one name");
                    goto out;
                }
                uint8_t no[DNS_NAME_MAX];
                int l = dns_name_from_text(t[1].p, t[1].n, origin, originlen, no, &msg);
                if (l < 0) {
                    ret = zerr(ld, file, line, "$ORIGIN: %s", msg);
                    goto out;
                }
                memcpy(origin, no, (size_t)l);
                originlen = (size_t)l;
            } else if (word_eq(t[0].p, t[0].n, "$TTL")) {
                if (nt != 2 || parse_ttl(t[1].p, t[1].n, &ld->default_ttl)) {
                    ret = zerr(ld, file, line, "$TTL: expected a TTL like 3600 or 1h");
                    goto out;
                }
                ld->have_default_ttl = true;
            } else if (word_eq(t[0].p, t[0].n, "$INCLUDE")) {
                ret = do_include(ld, file, line, dir, t, nt, origin, originlen);
                if (ret)
                    goto out;
            } else {
                ret = zerr(ld, file, line, "unknown directive %.*s", (int)t[0].n, t[0].p);
                goto out;
            }
            continue;
        }
        int i = 0;
        if (!blank) {
            int l = dns_name_from_text(t[0].p, t[0].n, origin, originlen, ld->owner, &msg);
            if (t[0].quoted || l < 0) {
                ret = zerr(ld, file, line, "owner name: %s", t[0].quoted ? "quoted" : msg);
                goto out;
            }
            ld->ownerlen = l;
            i = 1;
        } else if (!ld->ownerlen) {
            ret = zerr(ld, file, line, "record without an owner name");
            goto out;
        }
        uint16_t cls = DNS_C_IN;
        uint32_t ttl = 0;
        bool have_ttl = false, have_class = false;
        for (int k = 0; k < 2 && i < nt; k++) {
            uint16_t cv;
            uint32_t tv;
            if (!have_class && is_class(&t[i], &cv)) {
                cls = cv;
                have_class = true;
                i++;
            } else if (!have_ttl && !t[i].quoted && parse_ttl(t[i].p, t[i].n, &tv) == 0) {
                ttl = tv;
                have_ttl = true;
                i++;
            }
        }
        if (i >= nt) {
            ret = zerr(ld, file, line, "expected a record type");
            goto out;
        }
        if (cls != DNS_C_IN) {
            ret = zerr(ld, file, line, "only class IN is served");
            goto out;
        }
        uint16_t type;
        if (t[i].quoted || dns_type_parse(t[i].p, t[i].n, &type)) {
            ret = zerr(ld, file, line, "unknown record type %.*s", (int)t[i].n, t[i].p);
            goto out;
        }
        i++;
        if (parse_rdata(ld, type, t + i, nt - i, rd, &msg)) {
            ret = zerr(ld, file, line, "%s", msg ? msg : "record data longer than 65535 bytes");
            goto out;
        }
        if (!have_ttl) {
            if (ld->have_default_ttl) {
                ttl = ld->default_ttl;
            } else if (type == DNS_T_SOA) {
                /* RFC 2308: without $TTL the SOA's minimum is the default */
                ttl = (uint32_t)rd->b[rd->n - 4] << 24 | (uint32_t)rd->b[rd->n - 3] << 16 |
                      (uint32_t)rd->b[rd->n - 2] << 8 | rd->b[rd->n - 1];
            } else if (ld->have_last_ttl) {
                ttl = ld->last_ttl;
            } else {
                ret = zerr(ld, file, line, "no TTL given and no $TTL before");
                goto out;
            }
        }
        ld->last_ttl = ttl;
        ld->have_last_ttl = true;
        ret = add_rr(ld, file, line, ld->owner, (size_t)ld->ownerlen, type, ttl, rd->b, rd->n);
        if (ret)
            goto out;
    }
out:
    free(toks);
    free(rd);
    return ret;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int zone_new(struct dns_zone **out, const char *origin, char *err, size_t errlen)
{
    struct dns_zone *z = calloc(1, sizeof(*z));
    if (!z) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    const char *msg;
    size_t ol = strlen(origin);
    char *txt = malloc(DNS_NAME_MAX * 4 + 2);
    int l = txt ? dns_name_from_text(origin, ol, (const uint8_t *)"", 1, z->origin, &msg) : -1;
    if (!txt || l < 0) {
        snprintf(err, errlen, "origin \"%s\": %s", origin, txt ? msg : "out of memory");
        free(txt);
        free(z);
        return -EINVAL;
    }
    dns_name_lower(z->origin, z->origin, (size_t)l);
    z->originlen = (uint8_t)l;
    z->origin_labels = (uint8_t)dns_name_labels(z->origin);
    dns_name_to_text(z->origin, txt, DNS_NAME_MAX * 4 + 2);
    z->origin_text = txt;
    if (table_grow(z)) {
        dns_zone_free(z);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    *out = z;
    return 0;
}

static int zone_finish(struct loader *ld, const char *name)
{
    struct dns_zone *z = ld->z;
    if (!z->apex || !(z->soa = dns_node_rrset(z->apex, DNS_T_SOA)))
        return zerr(ld, name, 0, "no SOA record at the apex %s", z->origin_text);
    if (!dns_node_rrset(z->apex, DNS_T_NS))
        return zerr(ld, name, 0, "no NS records at the apex %s", z->origin_text);
    const uint8_t *rd = z->soa->rdata + 2;
    size_t l = (size_t)z->soa->rdata[0] << 8 | z->soa->rdata[1];
    z->serial = get32(rd + l - 20);
    uint32_t min = get32(rd + l - 4);
    z->neg_ttl = min < z->soa->ttl ? min : z->soa->ttl;
    /* zone cuts: parents precede children in the list */
    for (struct dns_node *n = z->first; n; n = n->next) {
        if (n != z->apex && dns_node_rrset(n, DNS_T_NS))
            n->cut = n;
        else
            n->cut = n->parent ? n->parent->cut : NULL;
    }
    return 0;
}

int dns_zone_load_text(struct dns_zone **out, const char *origin, const char *name,
                       const char *text, size_t len, bool allow_include, char *err,
                       size_t errlen)
{
    struct dns_zone *z;
    int r = zone_new(&z, origin, err, errlen);
    if (r)
        return r;
    struct loader ld = { .z = z, .err = err, .errlen = errlen, .allow_include = allow_include };
    char *dir = NULL;
    if (allow_include) {
        dir = strdup(name);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash)
            *slash = 0;
        else if (dir)
            strcpy(dir, ".");
    }
    r = load_text(&ld, name, text, len, z->origin, z->originlen, dir);
    free(dir);
    if (!r)
        r = zone_finish(&ld, name);
    if (r) {
        dns_zone_free(z);
        return r;
    }
    *out = z;
    return 0;
}

int dns_zone_load(struct dns_zone **out, const char *origin, const char *file,
                  const char *ns_addr, char *err, size_t errlen)
{
    if (!file) {
        char text[1024];
        int n = snprintf(text, sizeof(text),
                         "$TTL 300\n"
                         "@ IN SOA ns hostmaster 1 3600 600 86400 60\n"
                         "@ IN NS ns\n"
                         "ns IN %s %s\n",
                         strchr(ns_addr ? ns_addr : "127.0.0.1", ':') ? "AAAA" : "A",
                         ns_addr ? ns_addr : "127.0.0.1");
        return dns_zone_load_text(out, origin, "<generated>", text, (size_t)n, false, err, errlen);
    }
    FILE *f = fopen(file, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return -EINVAL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode) || st.st_size > (off_t)DNS_ZONE_MAX_FILE) {
        snprintf(err, errlen, "%s: not a regular file or larger than %u MiB", file,
                 DNS_ZONE_MAX_FILE >> 20);
        fclose(f);
        return -EINVAL;
    }
    size_t sz = (size_t)st.st_size;
    char *buf = malloc(sz + 1);
    if (!buf || fread(buf, 1, sz, f) != sz) {
        snprintf(err, errlen, "%s: read error", file);
        free(buf);
        fclose(f);
        return -EINVAL;
    }
    fclose(f);
    buf[sz] = 0;
    int r = dns_zone_load_text(out, origin, file, buf, sz, true, err, errlen);
    free(buf);
    return r;
}

struct dns_node *dns_zone_add_name(struct dns_zone *z, const uint8_t *lname, size_t len)
{
    if (!dns_name_under(lname, len, z->origin, z->originlen))
        return NULL;
    return node_get(z, lname, len);
}

void dns_zone_free(struct dns_zone *z)
{
    if (!z)
        return;
    for (struct dns_node *n = z->first; n; n = n->next)
        for (struct dns_rrset *s = n->rrsets; s; s = s->next)
            free(s->rdata);
    struct dns_arena *a = z->arena, *na;
    for (; a; a = na) {
        na = a->next;
        free(a);
    }
    free(z->table);
    free(z->origin_text);
    free(z);
}
