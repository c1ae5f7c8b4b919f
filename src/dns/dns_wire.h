/* dns_wire.h - DNS messages: query parsing, response writing, answering.
 *
 * dns_parse_query() reads an untrusted packet (RFC 1035 section 4, EDNS(0) from
 * RFC 6891, Client Subnet from RFC 7871) without reading past its end and
 * without following compression pointers forward or in loops. dns_answer()
 * builds the whole response for a parsed query from a set of zones, following
 * RFC 1034 4.3.2 (with RFC 4592 wildcards, RFC 2308 negative answers and RFC
 * 8482 ANY), into a caller's buffer.
 */
#ifndef CAIRN_DNS_WIRE_H
#define CAIRN_DNS_WIRE_H

#include "dns_zone.h"

#include <sys/socket.h>

enum {
    DNS_R_NOERROR = 0, DNS_R_FORMERR = 1, DNS_R_SERVFAIL = 2, DNS_R_NXDOMAIN = 3,
    DNS_R_NOTIMP = 4, DNS_R_REFUSED = 5, DNS_R_NOTAUTH = 9, DNS_R_BADVERS = 16,
};
enum { DNS_OP_QUERY = 0, DNS_OP_NOTIFY = 4 };

#define DNS_HDR_LEN 12
#define DNS_EDNS_SIZE_DEFAULT 1232      /* DNS flag day 2020 */
#define DNS_OPT_ECS 8

struct dns_query {
    uint16_t id;
    uint16_t flags;                 /* as received */
    int opcode;
    uint8_t qname[DNS_NAME_MAX];    /* the query's case */
    uint8_t lname[DNS_NAME_MAX];    /* lowercase */
    uint8_t qnamelen;
    uint16_t qtype, qclass;
    bool have_question;
    bool edns;
    uint8_t edns_version;
    bool do_bit;
    uint16_t udp_size;              /* advertised by the client (512 without EDNS) */
    bool ecs;
    uint16_t ecs_family;            /* 1 = IPv4, 2 = IPv6 */
    uint8_t ecs_source, ecs_scope;
    uint8_t ecs_addr[16];
    bool nsid;
    bool have_serial;               /* an SOA in the authority section (IXFR, RFC 1995) */
    uint32_t serial;                /* ... and its serial: the version the client holds */
};

/* Returns DNS_R_NOERROR when q is a query to answer, DNS_R_FORMERR or
 * DNS_R_NOTIMP for an error response (q holds what was read, enough to answer
 * with the right ID), or -1 when the packet must be dropped (too short to
 * answer, or a response). */
int dns_parse_query(const uint8_t *pkt, size_t len, struct dns_query *q);

/* What a GSLB name answers with. */
#define DNS_GSLB_MAX_ANSWERS 32
struct dns_gslb_answer {
    uint32_t ttl;
    int n;
    uint8_t addr[DNS_GSLB_MAX_ANSWERS][16];  /* 4 bytes for A, 16 for AAAA */
    int scope;                       /* ECS scope prefix length to return */
    int fail;                        /* 0 answer, 1 NODATA, 2 SERVFAIL */
};
typedef void (*dns_gslb_fn)(void *arg, int idx, uint16_t qtype, const struct dns_query *q,
                            const struct sockaddr *peer, struct dns_gslb_answer *out);

struct dns_view {
    struct dns_zone *const *zones;
    size_t nzones;
    dns_gslb_fn gslb;
    void *gslb_arg;
    uint16_t edns_size;             /* our UDP payload size */
};

struct dns_result {
    int rcode;
    bool tc;
    bool aa;
    int ecs_scope;                   /* -1 when no ECS option is returned */
    const struct dns_zone *zone;     /* the zone that answered, or NULL */
};

/* Answers q into out (cap bytes; 65535 is enough for anything). tcp lifts the
 * UDP size limit. prc is the parse result (NOERROR, FORMERR or NOTIMP). Returns
 * the response length (0 when nothing should be sent). */
size_t dns_answer(const struct dns_view *v, const struct dns_query *q, int prc,
                  const struct sockaddr *peer, bool tcp, uint8_t *out, size_t cap,
                  struct dns_result *res);

/* Finds the zone that holds lname (longest origin), or NULL. */
const struct dns_zone *dns_view_zone(const struct dns_view *v, const uint8_t *lname, size_t len);

/* ---- a response writer with name compression (also used for AXFR) ---- */

#define DNS_COMP_MAX 128

struct dns_writer {
    uint8_t *p;
    size_t len, limit;
    uint16_t count[3];               /* answer, authority, additional */
    struct {
        uint16_t off;
        uint32_t hash;
    } comp[DNS_COMP_MAX];
    int ncomp;
};

/* Starts a message with header and question (qname NULL for none). */
void dns_write_begin(struct dns_writer *w, uint8_t *buf, size_t limit, uint16_t id, uint16_t flags,
                const uint8_t *qname, size_t qnamelen, uint16_t qtype, uint16_t qclass);
/* Appends every record of s with the given owner into section (0..2). Returns 0,
 * or -1 (and writes nothing) when the RRset does not fit within the limit. */
int dns_write_rrset(struct dns_writer *w, int section, const uint8_t *owner, size_t ownerlen,
               const struct dns_rrset *s, uint32_t ttl);
/* Appends one record; rdata names are compressed for the types that allow it. */
int dns_write_rr(struct dns_writer *w, int section, const uint8_t *owner, size_t ownerlen,
            uint16_t type, uint32_t ttl, const uint8_t *rdata, size_t rdlen);
/* Writes the section counts into the header. */
void dns_write_finish(struct dns_writer *w);

#endif
