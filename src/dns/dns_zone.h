/* dns_zone.h - authoritative zone data: RFC 1035 zone files and lookup.
 *
 * A zone is loaded from a master file into one hash table of nodes keyed by the
 * owner name in lowercase wire form. Every ancestor of a name between it and the
 * apex exists as a node (empty non-terminals included), so that lookup can find
 * the closest encloser by walking up from the query name. Each node knows the
 * delegation above it (the nearest zone cut), set once after loading.
 *
 * Record data is kept in wire form with names uncompressed, in the case the zone
 * file wrote them; the response writer compresses names only in the types RFC
 * 3597 section 4 allows.
 */
#ifndef CAIRN_DNS_ZONE_H
#define CAIRN_DNS_ZONE_H

#include "core/common.h"

#define DNS_NAME_MAX 255
#define DNS_LABELS_MAX 128
#define DNS_ZONE_MAX_FILE (512u << 20)
#define DNS_ZONE_MAX_INCLUDE_DEPTH 8

enum {
    DNS_T_A = 1, DNS_T_NS = 2, DNS_T_CNAME = 5, DNS_T_SOA = 6, DNS_T_PTR = 12,
    DNS_T_HINFO = 13, DNS_T_MX = 15, DNS_T_TXT = 16, DNS_T_AAAA = 28, DNS_T_SRV = 33,
    DNS_T_OPT = 41, DNS_T_DS = 43, DNS_T_IXFR = 251, DNS_T_AXFR = 252, DNS_T_ANY = 255,
    DNS_T_CAA = 257,
};
enum { DNS_C_IN = 1, DNS_C_ANY = 255 };

struct dns_rrset {
    uint16_t type;
    uint16_t nrr;
    uint32_t ttl;
    uint8_t *rdata;             /* nrr records, each a 2-byte length then the bytes */
    size_t rdlen;
    struct dns_rrset *next;
};

struct dns_node {
    uint8_t *name;              /* lowercase wire form */
    uint8_t *owner;             /* the zone file's case, same length */
    uint8_t namelen;
    uint8_t nlabels;
    uint32_t hash;
    struct dns_node *hnext;     /* hash chain */
    struct dns_node *parent;    /* NULL at the apex */
    struct dns_node *cut;       /* nearest delegation at or above (not the apex), or NULL */
    struct dns_node *wild;      /* the "*" child, or NULL */
    struct dns_rrset *rrsets;
    int gslb;                   /* index of a GSLB name answered here, or -1 */
    struct dns_node *next;      /* all nodes in load order (AXFR walks this) */
};

struct dns_arena;

struct dns_zone {
    char *origin_text;          /* "cairn.test." */
    uint8_t origin[DNS_NAME_MAX];
    uint8_t originlen;
    uint8_t origin_labels;
    struct dns_node *apex;
    struct dns_node **table;
    size_t tablesize, nnodes, nrecords;
    struct dns_node *first, *last;
    uint32_t serial;
    uint32_t neg_ttl;           /* min(SOA TTL, SOA minimum), RFC 2308 */
    struct dns_rrset *soa;
    struct dns_arena *arena;
};

/* Loads a zone file for origin (text form, "example.com" or "example.com.").
 * file may be NULL: then the zone holds a generated SOA and an NS record named
 * ns.<origin> with an A record of ns_addr (for stacks that only serve GSLB
 * names). On error returns -EINVAL and writes "file:line: message" to err. */
int dns_zone_load(struct dns_zone **out, const char *origin, const char *file,
                  const char *ns_addr, char *err, size_t errlen);
/* Parses zone text already in memory (the fuzzer uses this); name is shown in
 * errors. $INCLUDE is refused when allow_include is false. */
int dns_zone_load_text(struct dns_zone **out, const char *origin, const char *name,
                       const char *text, size_t len, bool allow_include, char *err,
                       size_t errlen);
void dns_zone_free(struct dns_zone *z);

/* Adds an empty node for a GSLB name (and its ancestors) if it does not exist.
 * Returns the node, or NULL when out of memory or when name is outside z. */
struct dns_node *dns_zone_add_name(struct dns_zone *z, const uint8_t *lname, size_t len);

/* Lookup of a lowercase wire name. */
struct dns_node *dns_zone_find(const struct dns_zone *z, const uint8_t *lname, size_t len);
struct dns_rrset *dns_node_rrset(const struct dns_node *n, uint16_t type);

/* Names. */
uint32_t dns_name_hash(const uint8_t *lname, size_t len);
/* Text to wire ("www.example.com." or relative to origin). Returns the wire
 * length, or -1 with a message in err. */
int dns_name_from_text(const char *s, size_t n, const uint8_t *origin, size_t originlen,
                       uint8_t *out, const char **err);
/* Wire to text with RFC 1035 escapes, ending in a dot. */
void dns_name_to_text(const uint8_t *name, char *out, size_t outlen);
void dns_name_lower(uint8_t *dst, const uint8_t *src, size_t len);
int dns_name_labels(const uint8_t *name);
/* True when name (lowercase wire, len bytes) equals or lies under origin. */
bool dns_name_under(const uint8_t *name, size_t len, const uint8_t *origin, size_t originlen);

/* Type mnemonic and back ("TYPE65280" for unknown types). */
const char *dns_type_name(uint16_t type, char *tmp, size_t tmplen);
int dns_type_parse(const char *s, size_t n, uint16_t *type);

#endif
