/* dns_server.c - the query path: UDP in batches, TCP with pipelining and zone
 * transfers, response rate limiting, and NOTIFY to secondaries. */
#include "dns_internal.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define UDP_BATCH 32
#define UDP_BUF 4096
#define TCP_MSG_MAX 65535
#define AXFR_MSG_LIMIT 16384
#define TCP_OUT_HIGH (256u << 10)

struct udp_batch {
    struct mmsghdr in[UDP_BATCH], out[UDP_BATCH];
    struct iovec iin[UDP_BATCH], iout[UDP_BATCH];
    struct sockaddr_storage addr[UDP_BATCH];
    uint8_t ibuf[UDP_BATCH][UDP_BUF];
    uint8_t obuf[UDP_BATCH][UDP_BUF];
};

struct dns_tcp_conn {
    struct dns_worker *w;
    int fd;
    struct loop_io io;
    struct loop_timer idle;
    struct sockaddr_storage peer;
    struct buf in, out;
    struct dns_tcp_conn *prev, *next;
    bool closing;
    /* a zone transfer in progress */
    struct dns_gen *xgen;
    const struct dns_zone *xzone;
    const struct dns_node *xnode;
    const struct dns_rrset *xset;
    uint16_t xrr;
    int xphase;                 /* 0 first SOA, 1 records, 2 last SOA, 3 done */
    uint16_t xid;
    bool xfirst;
    uint8_t xqname[DNS_NAME_MAX];
    uint8_t xqnamelen;
    uint16_t xqtype;
};

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* ---- metrics ---- */

static int type_index(uint16_t t)
{
    switch (t) {
    case DNS_T_A: return 0;
    case DNS_T_AAAA: return 1;
    case DNS_T_NS: return 2;
    case DNS_T_CNAME: return 3;
    case DNS_T_SOA: return 4;
    case DNS_T_PTR: return 5;
    case DNS_T_MX: return 6;
    case DNS_T_TXT: return 7;
    case DNS_T_SRV: return 8;
    case DNS_T_CAA: return 9;
    case DNS_T_ANY: return 10;
    case DNS_T_AXFR: return 11;
    case DNS_T_IXFR: return 12;
    case DNS_T_DS: return 13;
    default: return 14;
    }
}

static const char *const type_labels[15] = { "A", "AAAA", "NS", "CNAME", "SOA", "PTR", "MX", "TXT",
                                             "SRV", "CAA", "ANY", "AXFR", "IXFR", "DS", "other" };
static const char *const rcode_labels[24] = {
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "other", "other", "other", "other", "other", "BADVERS",
};

static void worker_metrics(struct dns_worker *w)
{
    struct dns_svc *s = w->s;
    static const char *const proto[2] = { "udp", "tcp" };
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < 15; t++)
            w->m_q[p][t] = metrics_get2(s->m_queries, proto[p], type_labels[t]);
    for (int r = 0; r < 17; r++)
        w->m_rcode[r] = metrics_get1(s->m_rcodes, rcode_labels[r] ? rcode_labels[r] : "other");
    w->m_rrl[0] = metrics_get1(s->m_rrl, "dropped");
    w->m_rrl[1] = metrics_get1(s->m_rrl, "slipped");
}

static void count(struct dns_worker *w, const struct dns_query *q, const struct dns_result *r,
                  bool tcp)
{
    if (q->have_question)
        metric_inc(w->m_q[tcp][type_index(q->qtype)]);
    int rc = r->rcode < 17 ? r->rcode : 11;
    if (w->m_rcode[rc])
        metric_inc(w->m_rcode[rc]);
}

/* ---- response rate limiting (RFC-less, as BIND and Knot do it) ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Returns 0 to send, 1 to drop, 2 to send a truncated reply (slip). */
static int rrl_check(struct dns_worker *w, const struct sockaddr *peer, const struct dns_query *q,
                     const struct dns_result *res)
{
    const struct dns_rrl_conf *rc = &w->gen->conf->rrl;
    if (!rc->enabled || !w->rrl)
        return 0;
    for (size_t i = 0; i < rc->nexempt; i++)
        if (net_cidr_match(&rc->exempt[i], peer))
            return 0;
    uint64_t key = 0;
    if (peer->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)peer)->sin_addr.s_addr);
        a = rc->v4_prefix >= 32 ? a : a & ~(0xffffffffu >> rc->v4_prefix);
        key = mix64(a ^ 0x4000000000ull);
    } else {
        uint8_t a[16];
        memcpy(a, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
        for (int b = 0; b < 128; b++)
            if (b >= rc->v6_prefix)
                a[b / 8] &= (uint8_t)~(0x80 >> (b % 8));
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, a + 8, 8);
        key = mix64(x ^ mix64(y) ^ 0x6000000000ull);
    }
    /* the response's class: the name and type for answers, the zone for
     * NXDOMAIN (so random names share one bucket), the rcode for errors */
    if (res->rcode == DNS_R_NOERROR)
        key = mix64(key ^ dns_name_hash(q->lname, q->qnamelen) ^ ((uint64_t)q->qtype << 32));
    else if (res->rcode == DNS_R_NXDOMAIN && res->zone)
        key = mix64(key ^ dns_name_hash(res->zone->origin, res->zone->originlen) ^ (1ull << 50));
    else
        key = mix64(key ^ ((uint64_t)res->rcode << 52));
    struct dns_rrl_entry *e = &w->rrl[key & (w->rrl_size - 1)];
    uint64_t now = loop_now(&w->loop);
    int64_t cap = (int64_t)rc->rate * 1000;
    if (e->key != key) {
        e->key = key;
        e->tokens = cap;
        e->last_ms = now;
        e->limited = 0;
    } else {
        int64_t add = (int64_t)(now - e->last_ms) * rc->rate;
        e->tokens = e->tokens + add > cap ? cap : e->tokens + add;
        e->last_ms = now;
    }
    if (e->tokens >= 1000) {
        e->tokens -= 1000;
        return 0;
    }
    e->limited++;
    if (rc->slip && e->limited % rc->slip == 0) {
        metric_inc(w->m_rrl[1]);
        return 2;
    }
    metric_inc(w->m_rrl[0]);
    return 1;
}

/* Cuts a response down to its header and question with TC set. */
static size_t truncate_reply(uint8_t *out, size_t len, const struct dns_query *q)
{
    size_t n = DNS_HDR_LEN + (q->have_question ? (size_t)q->qnamelen + 4 : 0);
    if (n > len)
        return len;
    out[2] |= 0x02;
    memset(out + 6, 0, 6);
    return n;
}

/* ---- UDP ---- */

static const struct dns_zone *transfer_zone(struct dns_worker *w, const struct dns_query *q,
                                            const struct sockaddr *peer, int *rcode);
static size_t ixfr_soa_only(const struct dns_zone *z, const struct dns_query *q, bool tcp,
                            uint8_t *out, size_t cap);

static void udp_read(struct loop_io *io, uint32_t events)
{
    struct dns_worker *w = io->data;
    struct udp_batch *b = w->batch;
    UNUSED(events);
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < UDP_BATCH; i++) {
            b->iin[i].iov_base = b->ibuf[i];
            b->iin[i].iov_len = UDP_BUF;
            memset(&b->in[i].msg_hdr, 0, sizeof(b->in[i].msg_hdr));
            b->in[i].msg_hdr.msg_iov = &b->iin[i];
            b->in[i].msg_hdr.msg_iovlen = 1;
            b->in[i].msg_hdr.msg_name = &b->addr[i];
            b->in[i].msg_hdr.msg_namelen = sizeof(b->addr[i]);
        }
        int n = recvmmsg(io->fd, b->in, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        int nout = 0;
        uint64_t t0 = cairn_now_ns();
        for (int i = 0; i < n; i++) {
            const struct sockaddr *peer = (const struct sockaddr *)&b->addr[i];
            struct dns_query q;
            struct dns_result res;
            size_t len = b->in[i].msg_len;
            int prc = (b->in[i].msg_hdr.msg_flags & MSG_TRUNC) ? DNS_R_FORMERR
                                                               : dns_parse_query(b->ibuf[i], len, &q);
            if (prc < 0 || ((b->in[i].msg_hdr.msg_flags & MSG_TRUNC) &&
                            dns_parse_query(b->ibuf[i], DNS_HDR_LEN, &q) < 0))
                continue;
            size_t olen = 0;
            int xrc;
            const struct dns_zone *xz;
            if (prc == DNS_R_NOERROR && q.opcode == DNS_OP_QUERY && q.qtype == DNS_T_IXFR &&
                !(q.edns && q.edns_version) && (xz = transfer_zone(w, &q, peer, &xrc))) {
                olen = ixfr_soa_only(xz, &q, false, b->obuf[i], UDP_BUF);
                res = (struct dns_result){ .rcode = DNS_R_NOERROR, .aa = true, .ecs_scope = -1, .zone = xz };
            } else {
                olen = dns_answer(&w->view, &q, prc, peer, false, b->obuf[i], UDP_BUF, &res);
            }
            if (!olen)
                continue;
            count(w, &q, &res, false);
            int act = rrl_check(w, peer, &q, &res);
            if (act == 1)
                continue;
            if (act == 2)
                olen = truncate_reply(b->obuf[i], olen, &q);
            b->iout[nout].iov_base = b->obuf[i];
            b->iout[nout].iov_len = olen;
            memset(&b->out[nout].msg_hdr, 0, sizeof(b->out[nout].msg_hdr));
            b->out[nout].msg_hdr.msg_iov = &b->iout[nout];
            b->out[nout].msg_hdr.msg_iovlen = 1;
            b->out[nout].msg_hdr.msg_name = &b->addr[i];
            b->out[nout].msg_hdr.msg_namelen = b->in[i].msg_hdr.msg_namelen;
            nout++;
        }
        if (n)
            metric_observe(w->m_dur, (double)(cairn_now_ns() - t0) / 1e9 / n);
        for (int sent = 0; sent < nout;) {
            int r = sendmmsg(io->fd, b->out + sent, (unsigned)(nout - sent), MSG_DONTWAIT);
            if (r <= 0)
                break;          /* a full socket buffer drops answers, as UDP may */
            sent += r;
        }
        if (n < UDP_BATCH)
            return;
    }
}

/* ---- TCP ---- */

static void conn_close(struct dns_tcp_conn *c)
{
    struct dns_worker *w = c->w;
    loop_timer_stop(&c->idle);
    loop_io_del(&c->io);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    metric_add(w->s->m_tcp_conns, -1);
    if (c->xgen)
        dns__gen_unref(c->xgen);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static int out_msg(struct dns_tcp_conn *c, const uint8_t *msg, size_t len)
{
    uint8_t l[2] = { (uint8_t)(len >> 8), (uint8_t)len };
    if (buf_append(&c->out, l, 2) || buf_append(&c->out, msg, len))
        return -ENOMEM;
    return 0;
}

/* Writes the next message of a zone transfer; returns false when done. */
static bool axfr_step(struct dns_tcp_conn *c)
{
    struct dns_worker *w = c->w;
    const struct dns_zone *z = c->xzone;
    struct dns_writer wr;
    if (c->xphase >= 3)
        return false;
    dns_write_begin(&wr, w->tcp_out, AXFR_MSG_LIMIT, c->xid, 0x8400,
               c->xfirst ? c->xqname : NULL, c->xqnamelen, c->xqtype, DNS_C_IN);
    c->xfirst = false;
    for (;;) {
        if (c->xphase == 0 || c->xphase == 2) {
            if (dns_write_rrset(&wr, 0, z->apex->owner, z->apex->namelen, z->soa, z->soa->ttl))
                break;
            c->xphase++;
            if (c->xphase == 3)
                break;
            continue;
        }
        /* phase 1: every RRset but the SOA, node by node */
        if (!c->xnode) {
            c->xphase = 2;
            continue;
        }
        if (!c->xset) {
            c->xnode = c->xnode->next;
            if (c->xnode)
                c->xset = c->xnode->rrsets;
            c->xrr = 0;
            continue;
        }
        if (c->xset->type == DNS_T_SOA && c->xnode == z->apex) {
            c->xset = c->xset->next;
            c->xrr = 0;
            continue;
        }
        /* the xrr-th record of the set */
        size_t off = 0;
        for (uint16_t i = 0; i < c->xrr; i++)
            off += 2 + (size_t)get16(c->xset->rdata + off);
        size_t l = get16(c->xset->rdata + off);
        if (dns_write_rr(&wr, 0, c->xnode->owner, c->xnode->namelen, c->xset->type, c->xset->ttl,
                    c->xset->rdata + off + 2, l)) {
            if (wr.count[0] == 0) {     /* one record larger than a message: give up */
                c->xphase = 3;
                return false;
            }
            break;
        }
        if (++c->xrr >= c->xset->nrr) {
            c->xset = c->xset->next;
            c->xrr = 0;
        }
    }
    dns_write_finish(&wr);
    out_msg(c, w->tcp_out, wr.len);
    return true;
}

static bool transfer_allowed(const struct dns_gen *g, const struct dns_zone *z,
                             const struct sockaddr *peer)
{
    for (size_t i = 0; i < g->nzones; i++) {
        if (g->zones[i] != z)
            continue;
        const struct dns_zone_conf *zc = &g->conf->zones[i];
        for (size_t k = 0; k < zc->nallow; k++)
            if (net_cidr_match(&zc->allow_transfer[k], peer))
                return true;
        for (size_t k = 0; k < zc->nsecondaries; k++) {
            char a[NET_ADDRSTRLEN], b[NET_ADDRSTRLEN];
            net_ip_format((const struct sockaddr *)&zc->secondaries[k].ss, a, sizeof(a));
            net_ip_format(peer, b, sizeof(b));
            if (strcmp(a, b) == 0 || (strncmp(b, "::ffff:", 7) == 0 && strcmp(a, b + 7) == 0))
                return true;
        }
    }
    return false;
}

/* IXFR (RFC 1995) without a history of changes: a client that holds the current
 * version (serial arithmetic, RFC 1982), or asks over UDP, is answered with the
 * single current SOA - over UDP that says "ask again over TCP" (section 2); any
 * other gets the whole zone over TCP, AXFR-style (section 4 allows it). Returns
 * the length of the single-SOA answer written to out, or 0 to send the zone. */
static size_t ixfr_soa_only(const struct dns_zone *z, const struct dns_query *q, bool tcp,
                            uint8_t *out, size_t cap)
{
    if (q->qtype != DNS_T_IXFR || (tcp && !(q->have_serial && (int32_t)(q->serial - z->serial) >= 0)))
        return 0;
    struct dns_writer wr;
    dns_write_begin(&wr, out, cap, q->id, (uint16_t)(0x8400 | (q->flags & 0x0100)), q->qname, q->qnamelen,
               q->qtype, q->qclass);
    dns_write_rrset(&wr, 0, z->apex->owner, z->apex->namelen, z->soa, z->soa->ttl);
    dns_write_finish(&wr);
    return wr.len;
}

/* The zone a transfer query names, if the peer may have it: NULL with *rcode set
 * (NOTAUTH: not a zone of ours; REFUSED: not allowed). */
static const struct dns_zone *transfer_zone(struct dns_worker *w, const struct dns_query *q,
                                            const struct sockaddr *peer, int *rcode)
{
    const struct dns_zone *z = dns_view_zone(&w->view, q->lname, q->qnamelen);
    *rcode = DNS_R_NOERROR;
    if (!z || z->originlen != q->qnamelen)
        *rcode = DNS_R_NOTAUTH;
    else if (!transfer_allowed(w->gen, z, peer))
        *rcode = DNS_R_REFUSED;
    return *rcode ? NULL : z;
}

static void tcp_query(struct dns_tcp_conn *c, const uint8_t *msg, size_t len)
{
    struct dns_worker *w = c->w;
    const struct sockaddr *peer = (const struct sockaddr *)&c->peer;
    struct dns_query q;
    struct dns_result res;
    int prc = dns_parse_query(msg, len, &q);
    if (prc < 0)
        return;
    if (prc == DNS_R_NOERROR && q.opcode == DNS_OP_QUERY &&
        (q.qtype == DNS_T_AXFR || q.qtype == DNS_T_IXFR) && !(q.edns && q.edns_version)) {
        int rcode;
        const struct dns_zone *z = transfer_zone(w, &q, peer, &rcode);
        metric_inc(w->m_q[1][type_index(q.qtype)]);
        char who[NET_ADDRSTRLEN];
        net_ip_format(peer, who, sizeof(who));
        if (rcode) {
            struct dns_writer wr;
            dns_write_begin(&wr, w->tcp_out, TCP_MSG_MAX, q.id,
                       (uint16_t)(0x8000 | (q.flags & 0x0100) | rcode), q.qname, q.qnamelen,
                       q.qtype, q.qclass);
            dns_write_finish(&wr);
            out_msg(c, w->tcp_out, wr.len);
            metric_inc(metrics_get1(w->s->m_axfr, "refused"));
            log_warn("zone transfer refused", "client", who, "rcode",
                     rcode == DNS_R_NOTAUTH ? "NOTAUTH" : "REFUSED");
            return;
        }
        size_t olen = ixfr_soa_only(z, &q, true, w->tcp_out, TCP_MSG_MAX);
        if (olen) {     /* the client is up to date */
            out_msg(c, w->tcp_out, olen);
            return;
        }
        metric_inc(metrics_get1(w->s->m_axfr, "started"));
        log_info("zone transfer", "zone", z->origin_text, "client", who, "serial",
                 log_int(z->serial));
        __atomic_add_fetch(&w->gen->refs, 1, __ATOMIC_RELAXED);
        c->xgen = w->gen;
        c->xzone = z;
        c->xnode = z->first;
        c->xset = z->first ? z->first->rrsets : NULL;
        c->xrr = 0;
        c->xphase = 0;
        c->xid = q.id;
        c->xfirst = true;
        memcpy(c->xqname, q.qname, q.qnamelen);
        c->xqnamelen = q.qnamelen;
        c->xqtype = q.qtype;
        while (buf_used(&c->out) < TCP_OUT_HIGH && axfr_step(c))
            ;
        return;
    }
    size_t olen = dns_answer(&w->view, &q, prc, peer, true, w->tcp_out, TCP_MSG_MAX, &res);
    if (!olen)
        return;
    count(w, &q, &res, true);
    out_msg(c, w->tcp_out, olen);
}

static void conn_update(struct dns_tcp_conn *c);

static void conn_flush(struct dns_tcp_conn *c)
{
    for (;;) {
        while (buf_used(&c->out)) {
            ssize_t n = send(c->fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    goto wait;
                conn_close(c);
                return;
            }
            buf_consume(&c->out, (size_t)n);
        }
        buf_reset(&c->out);
        if (c->xgen) {
            bool more = false;
            while (buf_used(&c->out) < TCP_OUT_HIGH && (more = axfr_step(c)))
                ;
            if (!more && !buf_used(&c->out)) {
                dns__gen_unref(c->xgen);
                c->xgen = NULL;
                metric_inc(metrics_get1(c->w->s->m_axfr, "done"));
            } else if (!more) {
                /* the last messages are queued; finish after they are sent */
                continue;
            }
            if (c->xgen)
                continue;
        }
        break;
    }
wait:
    conn_update(c);
}

static void conn_process(struct dns_tcp_conn *c)
{
    while (!c->xgen && buf_used(&c->in) >= 2) {
        const uint8_t *p = (const uint8_t *)buf_head(&c->in);
        size_t l = get16(p);
        if (l < DNS_HDR_LEN) {
            c->closing = true;
            return;
        }
        if (buf_used(&c->in) < 2 + l)
            break;
        tcp_query(c, p + 2, l);
        buf_consume(&c->in, 2 + l);
    }
    buf_compact(&c->in);
}

static void conn_update(struct dns_tcp_conn *c)
{
    uint32_t ev = 0;
    if (buf_used(&c->out) || c->xgen)
        ev |= EPOLLOUT;
    else if (c->closing) {
        conn_close(c);
        return;
    }
    if (!c->xgen && buf_used(&c->out) < TCP_OUT_HIGH && !c->closing)
        ev |= EPOLLIN;
    if (ev != c->io.events)
        loop_io_mod(&c->io, ev);
}

static void conn_event(struct loop_io *io, uint32_t events)
{
    struct dns_tcp_conn *c = io->data;
    struct dns_worker *w = c->w;
    if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
        conn_close(c);
        return;
    }
    if (events & EPOLLIN) {
        if (buf_reserve(&c->in, 16384)) {
            conn_close(c);
            return;
        }
        ssize_t n = recv(c->fd, buf_tail(&c->in), buf_room(&c->in), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_close(c);
            return;
        }
        if (n > 0) {
            buf_commit(&c->in, (size_t)n);
            loop_timer_start(&w->loop, &c->idle, w->gen->conf->tcp_idle_ms);
            conn_process(c);
        }
    }
    conn_flush(c);
}

static void conn_idle(struct loop_timer *t)
{
    conn_close(t->data);
}

static void tcp_accept(struct loop_io *io, uint32_t events)
{
    struct dns_worker *w = io->data;
    UNUSED(events);
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        int fd = net_accept(io->fd, &ss);
        if (fd < 0)
            return;
        if (w->stopping || w->nconns >= w->gen->conf->tcp_max_conns) {
            close(fd);
            continue;
        }
        struct dns_tcp_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        net_set_nodelay(fd);
        c->w = w;
        c->fd = fd;
        c->peer = ss;
        loop_io_init(&c->io, fd, conn_event, c);
        loop_timer_init(&c->idle, conn_idle, c);
        if (loop_io_add(&w->loop, &c->io, EPOLLIN)) {
            close(fd);
            free(c);
            continue;
        }
        loop_timer_start(&w->loop, &c->idle, w->gen->conf->tcp_idle_ms);
        c->next = w->conns;
        if (w->conns)
            w->conns->prev = c;
        w->conns = c;
        w->nconns++;
        metric_add(w->s->m_tcp_conns, 1);
    }
}

/* ---- worker sockets ---- */

int dns__worker_open(struct dns_worker *w)
{
    const struct dns_conf *c = w->gen->conf;
    w->batch = malloc(sizeof(*w->batch));
    w->tcp_out = malloc(TCP_MSG_MAX);
    if (!w->batch || !w->tcp_out)
        return -ENOMEM;
    worker_metrics(w);
    w->m_dur = w->s->m_dur;
    if (c->rrl.enabled) {
        w->rrl_size = 64;
        while (w->rrl_size < c->rrl.table_size)
            w->rrl_size <<= 1;
        w->rrl = calloc(w->rrl_size, sizeof(*w->rrl));
        if (!w->rrl)
            return -ENOMEM;
    }
    for (size_t i = 0; i < c->nlisten; i++) {
        char a[NET_ADDRSTRLEN];
        net_addr_format(&c->listen[i], a, sizeof(a));
        /* one socket per worker thread shares the address through SO_REUSEPORT;
         * a single worker does without (the kernel then skips the reuseport
         * group's hashing for every packet it delivers) */
        bool share = w->s->nworkers > 1;
        int ufd = net_bind_udp(&c->listen[i], share);
        if (ufd < 0) {
            log_error("cannot listen (udp)", "addr", a, "err", cairn_strerror(ufd));
            return ufd;
        }
        int rcv = 4 << 20;
        setsockopt(ufd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
        loop_io_init(&w->udp_io[i], ufd, udp_read, w);
        int tfd = net_listen_tcp(&c->listen[i], 1024, share);
        if (tfd < 0) {
            close(ufd);
            log_error("cannot listen (tcp)", "addr", a, "err", cairn_strerror(tfd));
            return tfd;
        }
        loop_io_init(&w->tcp_io[i], tfd, tcp_accept, w);
        w->nsock++;
    }
    return 0;
}

/* Starts reading the sockets (after the first health verdicts). */
int dns__worker_start(struct dns_worker *w)
{
    for (int i = 0; i < w->nsock; i++)
        if (loop_io_add(&w->loop, &w->udp_io[i], EPOLLIN) ||
            loop_io_add(&w->loop, &w->tcp_io[i], EPOLLIN))
            return -errno;
    return 0;
}

void dns__worker_close(struct dns_worker *w)
{
    for (int i = 0; i < w->nsock; i++) {
        if (w->udp_io[i].loop)
            loop_io_del(&w->udp_io[i]);
        if (w->tcp_io[i].loop)
            loop_io_del(&w->tcp_io[i]);
        close(w->udp_io[i].fd);
        close(w->tcp_io[i].fd);
    }
    w->nsock = 0;
    while (w->conns)
        conn_close(w->conns);
    free(w->batch);
    w->batch = NULL;
    free(w->tcp_out);
    w->tcp_out = NULL;
    free(w->rrl);
    w->rrl = NULL;
}

/* ---- NOTIFY (RFC 1996) ---- */

#define NOTIFY_TRIES 5
#define NOTIFY_RETRY_MS 2000

struct dns_notify {
    struct dns_svc *s;
    struct net_addr to;
    char zone[DNS_NAME_MAX * 4];
    uint8_t pkt[512];
    size_t len;
    uint16_t id;
    int tries;
    struct loop_timer timer;
    struct dns_notify *next;
};

static void notify_free(struct dns_svc *s, struct dns_notify *n)
{
    for (struct dns_notify **pp = &s->notifies; *pp; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    loop_timer_stop(&n->timer);
    free(n);
}

static void notify_send(struct loop_timer *t)
{
    struct dns_notify *n = t->data;
    struct dns_svc *s = n->s;
    char to[NET_ADDRSTRLEN];
    net_addr_format(&n->to, to, sizeof(to));
    if (n->tries >= NOTIFY_TRIES) {
        log_warn("notify not acknowledged", "zone", n->zone, "secondary", to, "tries",
                 log_int(n->tries));
        metric_inc(metrics_get1(s->m_notify, "failed"));
        notify_free(s, n);
        return;
    }
    int fd = n->to.ss.ss_family == AF_INET ? s->notify_fd4 : s->notify_fd6;
    n->tries++;
    if (fd < 0 || sendto(fd, n->pkt, n->len, 0, (const struct sockaddr *)&n->to.ss, n->to.len) < 0)
        log_warn("notify send failed", "zone", n->zone, "secondary", to, "err",
                 fd < 0 ? "no socket" : strerror(errno));
    else
        metric_inc(metrics_get1(s->m_notify, "sent"));
    loop_timer_start(t->loop, t, NOTIFY_RETRY_MS);
}

static void notify_read(struct loop_io *io, uint32_t events)
{
    struct dns_svc *s = io->data;
    UNUSED(events);
    for (;;) {
        uint8_t b[512];
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t r = recvfrom(io->fd, b, sizeof(b), MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
        if (r < 0)
            return;
        if (r < DNS_HDR_LEN || !(b[2] & 0x80) || ((b[2] >> 3) & 0xf) != DNS_OP_NOTIFY)
            continue;
        uint16_t id = get16(b);
        struct net_addr from = { .ss = ss, .len = sl };
        char fs[NET_ADDRSTRLEN], to[NET_ADDRSTRLEN];
        net_addr_format(&from, fs, sizeof(fs));
        for (struct dns_notify *n = s->notifies; n; n = n->next) {
            net_addr_format(&n->to, to, sizeof(to));
            if (n->id == id && strcmp(fs, to) == 0) {
                log_info("notify acknowledged", "zone", n->zone, "secondary", to, "rcode",
                         log_int(b[3] & 0xf));
                metric_inc(metrics_get1(s->m_notify, "acked"));
                notify_free(s, n);
                break;
            }
        }
    }
}

static void notify_zone(struct dns_svc *s, const struct dns_zone *z, const struct dns_zone_conf *zc)
{
    for (size_t k = 0; k < zc->nsecondaries; k++) {
        struct dns_notify *n = calloc(1, sizeof(*n));
        if (!n)
            return;
        n->s = s;
        n->to = zc->secondaries[k];
        snprintf(n->zone, sizeof(n->zone), "%s", z->origin_text);
        uint16_t id = 0;
        if (getentropy(&id, sizeof(id)))
            id = (uint16_t)cairn_now_ns();
        n->id = id;
        struct dns_writer wr;
        /* opcode NOTIFY, AA; the SOA as a hint of the new serial */
        dns_write_begin(&wr, n->pkt, sizeof(n->pkt), id, (uint16_t)(DNS_OP_NOTIFY << 11 | 0x0400),
                   z->apex->owner, z->apex->namelen, DNS_T_SOA, DNS_C_IN);
        dns_write_rrset(&wr, 0, z->apex->owner, z->apex->namelen, z->soa, z->soa->ttl);
        dns_write_finish(&wr);
        n->pkt[2] &= 0x7f;     /* a request, not a response */
        n->len = wr.len;
        loop_timer_init(&n->timer, notify_send, n);
        n->next = s->notifies;
        s->notifies = n;
        loop_timer_start(&s->workers[0].loop, &n->timer, 0);
    }
}

void dns__notify_start(struct dns_svc *s, struct dns_gen *g, struct dns_gen *old)
{
    bool any = false;
    for (size_t i = 0; i < g->nzones; i++)
        any |= g->conf->zones[i].nsecondaries > 0;
    if (!any)
        return;
    if (s->notify_fd4 < 0 && s->notify_fd6 < 0) {
        s->notify_fd4 = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        s->notify_fd6 = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->notify_fd4 >= 0) {
            loop_io_init(&s->notify_io4, s->notify_fd4, notify_read, s);
            loop_io_add(&s->workers[0].loop, &s->notify_io4, EPOLLIN);
        }
        if (s->notify_fd6 >= 0) {
            loop_io_init(&s->notify_io6, s->notify_fd6, notify_read, s);
            loop_io_add(&s->workers[0].loop, &s->notify_io6, EPOLLIN);
        }
    }
    for (size_t i = 0; i < g->nzones; i++) {
        const struct dns_zone *z = g->zones[i];
        bool changed = true;
        for (size_t k = 0; old && k < old->nzones; k++)
            if (old->zones[k]->originlen == z->originlen &&
                memcmp(old->zones[k]->origin, z->origin, z->originlen) == 0)
                changed = old->zones[k]->serial != z->serial;
        if (changed)
            notify_zone(s, z, &g->conf->zones[i]);
    }
}

void dns__notify_stop(struct dns_svc *s)
{
    while (s->notifies)
        notify_free(s, s->notifies);
    if (s->notify_fd4 >= 0) {
        loop_io_del(&s->notify_io4);
        close(s->notify_fd4);
        s->notify_fd4 = -1;
    }
    if (s->notify_fd6 >= 0) {
        loop_io_del(&s->notify_io6);
        close(s->notify_fd6);
        s->notify_fd6 = -1;
    }
}
