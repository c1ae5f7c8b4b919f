/* dns_wire.c - query parsing, compressed response writing and the lookup
 * algorithm of an authoritative server. */
#include "dns_wire.h"

#include <string.h>

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

/* ---- parsing ---- */

/* Reads a possibly compressed name at *pos. Pointers must point strictly
 * backwards (which also rules out loops). */
static int read_name(const uint8_t *pkt, size_t len, size_t *pos, uint8_t *out, size_t *outlen)
{
    size_t p = *pos, o = 0, end = 0;
    bool jumped = false;
    for (;;) {
        if (p >= len)
            return -1;
        uint8_t l = pkt[p];
        if ((l & 0xc0) == 0xc0) {
            if (p + 1 >= len)
                return -1;
            size_t ptr = (size_t)(l & 0x3f) << 8 | pkt[p + 1];
            if (!jumped)
                end = p + 2;
            if (ptr >= p)
                return -1;
            p = ptr;
            jumped = true;
            continue;
        }
        if (l & 0xc0)
            return -1;          /* extended and bitstring labels are obsolete */
        if (l == 0) {
            out[o++] = 0;
            if (!jumped)
                end = p + 1;
            break;
        }
        if (p + 1 + l > len || o + 1 + l + 1 > DNS_NAME_MAX)
            return -1;
        out[o++] = l;
        memcpy(out + o, pkt + p + 1, l);
        o += l;
        p += 1 + (size_t)l;
    }
    *pos = end;
    *outlen = o;
    return 0;
}

static int parse_opt(const uint8_t *pkt, size_t len, size_t pos, uint16_t cls, uint32_t ttl,
                     uint16_t rdlen, struct dns_query *q)
{
    q->edns = true;
    q->udp_size = cls < 512 ? 512 : cls;
    q->edns_version = (uint8_t)(ttl >> 16);
    q->do_bit = (ttl & 0x8000) != 0;
    size_t end = pos + rdlen;
    if (end > len)
        return -1;
    while (pos < end) {
        if (pos + 4 > end)
            return -1;
        uint16_t code = get16(pkt + pos), olen = get16(pkt + pos + 2);
        pos += 4;
        if (pos + olen > end)
            return -1;
        if (code == DNS_OPT_ECS) {
            if (q->ecs || olen < 4)
                return -1;
            uint16_t fam = get16(pkt + pos);
            uint8_t src = pkt[pos + 2], scope = pkt[pos + 3];
            size_t alen = olen - 4U;
            size_t maxbits = fam == 1 ? 32 : fam == 2 ? 128 : 0;
            if (!maxbits || src > maxbits || alen != (size_t)(src + 7) / 8)
                return -1;
            memcpy(q->ecs_addr, pkt + pos + 4, alen);
            /* RFC 7871 7.1.2: address bits beyond the source prefix must be zero */
            if (src % 8 && alen && (q->ecs_addr[alen - 1] & (0xff >> (src % 8))))
                return -1;
            q->ecs = true;
            q->ecs_family = fam;
            q->ecs_source = src;
            q->ecs_scope = scope;
        } else if (code == 3) {
            q->nsid = true;
        }
        pos += olen;
    }
    return 0;
}

int dns_parse_query(const uint8_t *pkt, size_t len, struct dns_query *q)
{
    memset(q, 0, offsetof(struct dns_query, qname));
    q->have_question = false;
    q->edns = false;
    q->ecs = false;
    q->nsid = false;
    q->have_serial = false;
    q->udp_size = 512;
    if (len < DNS_HDR_LEN)
        return -1;
    q->id = get16(pkt);
    q->flags = get16(pkt + 2);
    if (q->flags & 0x8000)
        return -1;                      /* a response: never answer it */
    q->opcode = (q->flags >> 11) & 0xf;
    uint16_t qd = get16(pkt + 4), an = get16(pkt + 6), ns = get16(pkt + 8), ar = get16(pkt + 10);
    if (q->opcode != DNS_OP_QUERY && q->opcode != DNS_OP_NOTIFY)
        return DNS_R_NOTIMP;
    if (qd != 1)
        return DNS_R_FORMERR;
    size_t pos = DNS_HDR_LEN, nl;
    if (read_name(pkt, len, &pos, q->qname, &nl) || pos + 4 > len)
        return DNS_R_FORMERR;
    q->qnamelen = (uint8_t)nl;
    dns_name_lower(q->lname, q->qname, nl);
    q->qtype = get16(pkt + pos);
    q->qclass = get16(pkt + pos + 2);
    pos += 4;
    q->have_question = true;
    uint8_t tmp[DNS_NAME_MAX];
    bool opt_seen = false;
    for (uint32_t i = 0; i < (uint32_t)an + ns + ar; i++) {
        if (read_name(pkt, len, &pos, tmp, &nl) || pos + 10 > len)
            return DNS_R_FORMERR;
        uint16_t type = get16(pkt + pos), cls = get16(pkt + pos + 2);
        uint32_t ttl = (uint32_t)get16(pkt + pos + 4) << 16 | get16(pkt + pos + 6);
        uint16_t rdlen = get16(pkt + pos + 8);
        pos += 10;
        if (pos + rdlen > len)
            return DNS_R_FORMERR;
        if (type == DNS_T_OPT) {
            /* one OPT, in the additional section, owned by the root */
            if (opt_seen || i < (uint32_t)an + ns || nl != 1)
                return DNS_R_FORMERR;
            opt_seen = true;
            if (parse_opt(pkt, len, pos, cls, ttl, rdlen, q))
                return DNS_R_FORMERR;
        } else if (type == DNS_T_SOA && i >= an && i < (uint32_t)an + ns && !q->have_serial) {
            /* IXFR: the client's version, after the SOA's two names */
            size_t rp = pos;
            if (read_name(pkt, len, &rp, tmp, &nl) || read_name(pkt, len, &rp, tmp, &nl) ||
                rp + 20 > pos + rdlen)
                return DNS_R_FORMERR;
            q->serial = (uint32_t)get16(pkt + rp) << 16 | get16(pkt + rp + 2);
            q->have_serial = true;
        }
        pos += rdlen;
    }
    return DNS_R_NOERROR;
}

/* ---- the writer ---- */

static uint32_t hash_label(uint32_t h, const uint8_t *lab)
{
    h = (h ^ lab[0]) * 16777619u;
    for (uint8_t i = 1; i <= lab[0]; i++)
        h = (h ^ lower(lab[i])) * 16777619u;
    return h;
}

/* Does the name at off in the packet equal name (case-insensitively)? */
static bool pkt_name_eq(const uint8_t *pkt, size_t off, const uint8_t *name)
{
    for (int guard = 0; guard < 256; guard++) {
        uint8_t l = pkt[off];
        if ((l & 0xc0) == 0xc0) {
            off = (size_t)(l & 0x3f) << 8 | pkt[off + 1];
            continue;
        }
        if (l != *name)
            return false;
        if (l == 0)
            return true;
        for (uint8_t i = 1; i <= l; i++)
            if (lower(pkt[off + i]) != lower(name[i]))
                return false;
        off += 1 + (size_t)l;
        name += 1 + (size_t)l;
    }
    return false;
}

static int put_name(struct dns_writer *w, const uint8_t *name, bool compress)
{
    size_t offs[DNS_LABELS_MAX + 1];
    uint32_t h[DNS_LABELS_MAX + 1];
    int nl = 0;
    size_t o = 0;
    while (name[o] && nl < DNS_LABELS_MAX) {
        offs[nl++] = o;
        o += (size_t)name[o] + 1;
    }
    offs[nl] = o;
    h[nl] = 0x9e3779b9u;
    for (int k = nl - 1; k >= 0; k--)
        h[k] = hash_label(h[k + 1], name + offs[k]);
    int mk = nl;
    uint16_t moff = 0;
    if (compress) {
        for (int k = 0; k < nl && mk == nl; k++)
            for (int e = 0; e < w->ncomp; e++)
                if (w->comp[e].hash == h[k] && pkt_name_eq(w->p, w->comp[e].off, name + offs[k])) {
                    mk = k;
                    moff = w->comp[e].off;
                    break;
                }
    }
    size_t need = offs[mk] + (mk < nl ? 2 : 1);
    if (w->len + need > w->limit)
        return -1;
    size_t start = w->len;
    memcpy(w->p + start, name, offs[mk]);
    for (int k = 0; k < mk && w->ncomp < DNS_COMP_MAX; k++)
        if (start + offs[k] < 0x4000) {
            w->comp[w->ncomp].off = (uint16_t)(start + offs[k]);
            w->comp[w->ncomp].hash = h[k];
            w->ncomp++;
        }
    w->len += offs[mk];
    if (mk < nl) {
        put16(w->p + w->len, (uint16_t)(0xc000 | moff));
        w->len += 2;
    } else {
        w->p[w->len++] = 0;
    }
    return 0;
}

/* Length of an uncompressed name at the start of rd (at most n bytes), or -1. */
static int name_len_in(const uint8_t *rd, size_t n)
{
    size_t o = 0;
    while (o < n) {
        uint8_t l = rd[o];
        if (l == 0)
            return (int)o + 1;
        if (l > 63 || o + 1 + l > n || o + 1 + l >= DNS_NAME_MAX)
            return -1;
        o += 1 + (size_t)l;
    }
    return -1;
}

void dns_write_begin(struct dns_writer *w, uint8_t *buf, size_t limit, uint16_t id, uint16_t flags,
                const uint8_t *qname, size_t qnamelen, uint16_t qtype, uint16_t qclass)
{
    w->p = buf;
    w->limit = limit;
    w->ncomp = 0;
    w->count[0] = w->count[1] = w->count[2] = 0;
    put16(buf, id);
    put16(buf + 2, flags);
    memset(buf + 4, 0, 8);
    w->len = DNS_HDR_LEN;
    if (qname) {
        put16(buf + 4, 1);
        memcpy(buf + w->len, qname, qnamelen);
        /* the question's name can be pointed to by everything after it */
        size_t o = 0;
        uint32_t h[DNS_LABELS_MAX + 1];
        size_t offs[DNS_LABELS_MAX + 1];
        int nl = 0;
        while (qname[o] && nl < DNS_LABELS_MAX) {
            offs[nl++] = o;
            o += (size_t)qname[o] + 1;
        }
        h[nl] = 0x9e3779b9u;
        for (int k = nl - 1; k >= 0; k--)
            h[k] = hash_label(h[k + 1], qname + offs[k]);
        for (int k = 0; k < nl && w->ncomp < DNS_COMP_MAX; k++) {
            w->comp[w->ncomp].off = (uint16_t)(DNS_HDR_LEN + offs[k]);
            w->comp[w->ncomp].hash = h[k];
            w->ncomp++;
        }
        w->len += qnamelen;
        put16(buf + w->len, qtype);
        put16(buf + w->len + 2, qclass);
        w->len += 4;
    }
}

int dns_write_rr(struct dns_writer *w, int section, const uint8_t *owner, size_t ownerlen,
            uint16_t type, uint32_t ttl, const uint8_t *rd, size_t rdlen)
{
    UNUSED(ownerlen);
    size_t save = w->len;
    int savec = w->ncomp;
    if (put_name(w, owner, true) || w->len + 10 > w->limit)
        goto fail;
    put16(w->p + w->len, type);
    put16(w->p + w->len + 2, DNS_C_IN);
    put32(w->p + w->len + 4, ttl);
    size_t lenpos = w->len + 8;
    w->len += 10;
    size_t rdstart = w->len;
    int n1, n2;
    switch (type) {
    case DNS_T_NS:
    case DNS_T_CNAME:
    case DNS_T_PTR:
        if ((n1 = name_len_in(rd, rdlen)) == (int)rdlen) {
            if (put_name(w, rd, true))
                goto fail;
            goto done;
        }
        break;
    case DNS_T_MX:
        if (rdlen > 2 && (n1 = name_len_in(rd + 2, rdlen - 2)) == (int)rdlen - 2) {
            if (w->len + 2 > w->limit)
                goto fail;
            memcpy(w->p + w->len, rd, 2);
            w->len += 2;
            if (put_name(w, rd + 2, true))
                goto fail;
            goto done;
        }
        break;
    case DNS_T_SOA:
        if ((n1 = name_len_in(rd, rdlen)) > 0 &&
            (n2 = name_len_in(rd + n1, rdlen - (size_t)n1)) > 0 &&
            (size_t)n1 + (size_t)n2 + 20 == rdlen) {
            if (put_name(w, rd, true) || put_name(w, rd + n1, true) || w->len + 20 > w->limit)
                goto fail;
            memcpy(w->p + w->len, rd + n1 + n2, 20);
            w->len += 20;
            goto done;
        }
        break;
    default:
        break;
    }
    if (w->len + rdlen > w->limit)
        goto fail;
    memcpy(w->p + w->len, rd, rdlen);
    w->len += rdlen;
done:
    put16(w->p + lenpos, (uint16_t)(w->len - rdstart));
    w->count[section]++;
    return 0;
fail:
    w->len = save;
    w->ncomp = savec;
    return -1;
}

int dns_write_rrset(struct dns_writer *w, int section, const uint8_t *owner, size_t ownerlen,
               const struct dns_rrset *s, uint32_t ttl)
{
    size_t save = w->len;
    int savec = w->ncomp;
    uint16_t savecount = w->count[section];
    size_t off = 0;
    for (uint16_t i = 0; i < s->nrr; i++) {
        size_t l = (size_t)get16(s->rdata + off);
        if (dns_write_rr(w, section, owner, ownerlen, s->type, ttl, s->rdata + off + 2, l)) {
            w->len = save;
            w->ncomp = savec;
            w->count[section] = savecount;
            return -1;
        }
        off += 2 + l;
    }
    return 0;
}

void dns_write_finish(struct dns_writer *w)
{
    put16(w->p + 6, w->count[0]);
    put16(w->p + 8, w->count[1]);
    put16(w->p + 10, w->count[2]);
}

/* ---- answering ---- */

const struct dns_zone *dns_view_zone(const struct dns_view *v, const uint8_t *lname, size_t len)
{
    const struct dns_zone *best = NULL;
    for (size_t i = 0; i < v->nzones; i++) {
        const struct dns_zone *z = v->zones[i];
        if ((!best || z->originlen > best->originlen) &&
            dns_name_under(lname, len, z->origin, z->originlen))
            best = z;
    }
    return best;
}

struct ctx {
    const struct dns_view *v;
    const struct dns_query *q;
    const struct sockaddr *peer;
    const struct dns_zone *z;
    struct dns_writer w;
    int rcode;
    bool aa, tc;
    int ecs_scope;
};

static void add_soa(struct ctx *c)
{
    const struct dns_zone *z = c->z;
    if (dns_write_rrset(&c->w, 1, z->apex->owner, z->apex->namelen, z->soa, z->neg_ttl))
        c->tc = true;
}

/* Glue: the addresses of name servers that the zone holds. */
static void add_glue(struct ctx *c, const struct dns_rrset *ns)
{
    size_t off = 0;
    for (uint16_t i = 0; i < ns->nrr; i++) {
        size_t l = (size_t)get16(ns->rdata + off);
        const uint8_t *t = ns->rdata + off + 2;
        off += 2 + l;
        if (name_len_in(t, l) != (int)l)
            continue;
        uint8_t lt[DNS_NAME_MAX];
        dns_name_lower(lt, t, l);
        if (!dns_name_under(lt, l, c->z->origin, c->z->originlen))
            continue;
        const struct dns_node *n = dns_zone_find(c->z, lt, l);
        if (!n)
            continue;
        static const uint16_t types[] = { DNS_T_A, DNS_T_AAAA };
        for (size_t k = 0; k < 2; k++) {
            const struct dns_rrset *s = dns_node_rrset(n, types[k]);
            if (s && dns_write_rrset(&c->w, 2, n->owner, n->namelen, s, s->ttl))
                return;
        }
    }
}

static void referral(struct ctx *c, const struct dns_node *cut)
{
    const struct dns_rrset *ns = dns_node_rrset(cut, DNS_T_NS);
    c->aa = false;
    if (dns_write_rrset(&c->w, 1, cut->owner, cut->namelen, ns, ns->ttl)) {
        c->tc = true;
        return;
    }
    add_glue(c, ns);
}

static void gslb_answer(struct ctx *c, const struct dns_node *n, const uint8_t *owner,
                        size_t ownerlen, uint16_t qtype)
{
    struct dns_gslb_answer ga;
    ga.n = 0;
    ga.ttl = 0;
    ga.scope = 0;
    ga.fail = 0;
    c->v->gslb(c->v->gslb_arg, n->gslb, qtype, c->q, c->peer, &ga);
    if (c->q->ecs)
        c->ecs_scope = ga.scope;
    if (ga.fail == 2) {
        c->rcode = DNS_R_SERVFAIL;
        return;
    }
    if (ga.n == 0) {
        add_soa(c);
        return;
    }
    for (int i = 0; i < ga.n; i++)
        if (dns_write_rr(&c->w, 0, owner, ownerlen, qtype, ga.ttl, ga.addr[i],
                    qtype == DNS_T_A ? 4 : 16)) {
            c->tc = true;
            return;
        }
}

#define CNAME_CHAIN_MAX 8

static void lookup(struct ctx *c)
{
    const struct dns_query *q = c->q;
    uint16_t qtype = q->qtype;
    uint8_t owner[DNS_NAME_MAX], lname[DNS_NAME_MAX];
    size_t len = q->qnamelen;
    memcpy(owner, q->qname, len);
    memcpy(lname, q->lname, len);
    for (int hops = 0;; hops++) {
        const struct dns_zone *z = c->z;
        struct dns_node *n = dns_zone_find(z, lname, len);
        struct dns_node *ce = n;
        if (!n) {
            size_t off = 0;
            do {
                off += (size_t)lname[off] + 1;
                ce = dns_zone_find(z, lname + off, len - off);
            } while (!ce && len - off > z->originlen);
            if (!ce)
                ce = z->apex;
        }
        /* at or below a zone cut: refer, except DS at the cut itself (the parent
         * side answers it) */
        if (ce->cut && !(n && n == n->cut && qtype == DNS_T_DS)) {
            if (hops == 0)
                referral(c, ce->cut);
            return;
        }
        if (!n) {
            if (!ce->wild) {
                c->rcode = DNS_R_NXDOMAIN;
                add_soa(c);
                return;
            }
            n = ce->wild;
        }
        if (n->gslb >= 0 && c->v->gslb && (qtype == DNS_T_A || qtype == DNS_T_AAAA)) {
            gslb_answer(c, n, owner, len, qtype);
            return;
        }
        const struct dns_rrset *cname = dns_node_rrset(n, DNS_T_CNAME);
        if (cname && qtype != DNS_T_CNAME && qtype != DNS_T_ANY) {
            if (dns_write_rrset(&c->w, 0, owner, len, cname, cname->ttl)) {
                c->tc = true;
                return;
            }
            size_t tl = (size_t)get16(cname->rdata);
            const uint8_t *t = cname->rdata + 2;
            if (name_len_in(t, tl) != (int)tl || hops + 1 >= CNAME_CHAIN_MAX)
                return;
            uint8_t lt[DNS_NAME_MAX];
            dns_name_lower(lt, t, tl);
            if (!dns_name_under(lt, tl, z->origin, z->originlen))
                return;
            memcpy(owner, t, tl);
            memcpy(lname, lt, tl);
            len = tl;
            continue;
        }
        if (qtype == DNS_T_ANY) {
            /* RFC 8482: one RRset (the first in the zone file) is a complete
             * answer, and leaves ANY nothing to amplify; NSD does the same */
            const struct dns_rrset *s = n->rrsets;
            if (!s)
                add_soa(c);
            else if (dns_write_rrset(&c->w, 0, owner, len, s, s->ttl))
                c->tc = true;
            return;
        }
        const struct dns_rrset *s = dns_node_rrset(n, qtype);
        if (s) {
            if (dns_write_rrset(&c->w, 0, owner, len, s, s->ttl))
                c->tc = true;
            else if (qtype == DNS_T_NS)
                add_glue(c, s);     /* as NSD does even with minimal responses */
            return;
        }
        add_soa(c);
        return;
    }
}

static size_t finish_edns(struct ctx *c, const struct dns_query *q, uint16_t edns_size,
                          size_t limit)
{
    struct dns_writer *w = &c->w;
    if (!q->edns)
        return 0;
    size_t alen = q->ecs ? (size_t)(q->ecs_source + 7) / 8 : 0;
    size_t need = 11 + (q->ecs && c->ecs_scope >= 0 ? 8 + alen : 0);
    if (w->len + need > limit)
        return 0;
    uint8_t *p = w->p + w->len;
    p[0] = 0;
    put16(p + 1, DNS_T_OPT);
    put16(p + 3, edns_size);
    uint32_t ttl = (uint32_t)(c->rcode >> 4) << 24 | (q->do_bit ? 0x8000u : 0);
    put32(p + 5, ttl);
    put16(p + 9, (uint16_t)(need - 11));
    if (need > 11) {
        put16(p + 11, DNS_OPT_ECS);
        put16(p + 13, (uint16_t)(4 + alen));
        put16(p + 15, q->ecs_family);
        p[17] = q->ecs_source;
        p[18] = (uint8_t)c->ecs_scope;
        memcpy(p + 19, q->ecs_addr, alen);
    }
    w->len += need;
    w->count[2]++;
    return need;
}

size_t dns_answer(const struct dns_view *v, const struct dns_query *q, int prc,
                  const struct sockaddr *peer, bool tcp, uint8_t *out, size_t cap,
                  struct dns_result *res)
{
    struct ctx c;
    c.v = v;
    c.q = q;
    c.peer = peer;
    c.z = NULL;
    c.rcode = DNS_R_NOERROR;
    c.aa = false;
    c.tc = false;
    c.ecs_scope = q->ecs ? 0 : -1;
    size_t limit = cap;
    if (!tcp) {
        size_t u = q->edns ? (q->udp_size < v->edns_size ? q->udp_size : v->edns_size) : 512;
        if (u < 512)
            u = 512;
        if (u < limit)
            limit = u;
    }
    size_t reserve = q->edns ? 11 + (q->ecs ? 8 + (size_t)(q->ecs_source + 7) / 8 : 0) : 0;
    uint16_t base = (uint16_t)(0x8000 | (q->opcode & 0xf) << 11 | (q->flags & 0x0110));
    bool question = q->have_question;
    if (prc != DNS_R_NOERROR) {
        c.rcode = prc;
    } else if (q->edns && q->edns_version > 0) {
        c.rcode = DNS_R_BADVERS;
    } else if (q->opcode != DNS_OP_QUERY) {
        c.rcode = DNS_R_NOTIMP;
    } else if (q->qtype == DNS_T_OPT || (q->qtype >= 128 && q->qtype <= 250) ||
               q->qtype == DNS_T_AXFR || q->qtype == DNS_T_IXFR) {
        /* meta types; zone transfers are answered by the caller over TCP */
        c.rcode = (q->qtype == DNS_T_AXFR || q->qtype == DNS_T_IXFR) ? DNS_R_REFUSED
                                                                     : DNS_R_FORMERR;
    } else if (q->qclass != DNS_C_IN && q->qclass != DNS_C_ANY) {
        c.rcode = DNS_R_REFUSED;
    } else if (!(c.z = dns_view_zone(v, q->lname, q->qnamelen))) {
        c.rcode = DNS_R_REFUSED;
    }
    if (c.rcode != DNS_R_NOERROR || !c.z) {
        dns_write_begin(&c.w, out, limit - reserve, q->id, base, question ? q->qname : NULL,
                   q->qnamelen, q->qtype, q->qclass);
        goto finish;
    }
    c.aa = true;
    dns_write_begin(&c.w, out, limit - reserve, q->id, base, q->qname, q->qnamelen, q->qtype,
               q->qclass);
    lookup(&c);
    if (c.rcode == DNS_R_SERVFAIL) {
        c.aa = false;
        c.w.len = DNS_HDR_LEN + q->qnamelen + 4;
        c.w.count[0] = c.w.count[1] = c.w.count[2] = 0;
    }
finish:;
    uint16_t flags = base;
    if (c.aa)
        flags |= 0x0400;
    if (c.tc)
        flags |= 0x0200;
    flags |= (uint16_t)(c.rcode & 0xf);
    put16(out + 2, flags);
    finish_edns(&c, q, v->edns_size, limit);
    dns_write_finish(&c.w);
    if (res) {
        res->rcode = c.rcode;
        res->tc = c.tc;
        res->aa = c.aa;
        res->ecs_scope = c.ecs_scope;
        res->zone = c.z;
    }
    return c.w.len;
}
