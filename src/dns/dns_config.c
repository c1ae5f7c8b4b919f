/* dns_config.c - the dns service's keys in the stack file.
 *
 *   listen: ["127.0.0.1:5353"]          UDP and TCP on each
 *   admin: "127.0.0.1:9953"             HTTP: /metrics, /-/healthy, /-/ready, /api/gslb,
 *                                       /api/zones, POST /-/reload
 *   threads: 1
 *   edns_udp_size: 1232
 *   tcp_idle_timeout: 10s
 *   zones: [{origin, file, secondaries: [addr], allow_transfer: [cidr]}]
 *   gslb: [{name, ttl, policy, max_answers, when_all_down, health, pools}]
 *   rrl: {rate, slip, ipv4_prefix, ipv6_prefix, table_size, exempt}
 */
#include "dns_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <maxminddb.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P CFG_PATH

static int get_uint(struct cfg *c, const cfg_node *n, const char *path, long long lo, long long hi,
                    int *out)
{
    long long v;
    if (cfg_get_int(c, n, path, lo, hi, &v))
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static int parse_cidrs(struct cfg *c, const cfg_node *n, const char *path, struct net_cidr **out,
                       size_t *count)
{
    char **list;
    size_t k;
    if (cfg_get_string_list(c, n, path, &list, &k))
        return -EINVAL;
    int bad = 0;
    *out = calloc(k ? k : 1, sizeof(**out));
    *count = 0;
    for (size_t i = 0; i < k; i++) {
        if (*out && net_cidr_parse(list[i], &(*out)[*count]) == 0)
            (*count)++;
        else
            bad = cfg_error(c, n, path, "expected CIDR prefixes like 10.0.0.0/8, got \"%s\"",
                            list[i]);
    }
    cfg_free_string_list(list, k);
    return bad;
}

/* countries: [DE, fr] or continents: [EU]: two-letter codes, kept upper case */
static int parse_codes(struct cfg *c, const cfg_node *n, const char *path, char (**out)[3],
                       size_t *count, const char *what)
{
    char **list;
    size_t k;
    if (cfg_get_string_list(c, n, path, &list, &k))
        return -EINVAL;
    int bad = 0;
    *out = calloc(k ? k : 1, sizeof(**out));
    *count = 0;
    for (size_t i = 0; i < k; i++) {
        const char *x = list[i];
        if (!*out || strlen(x) != 2 || !isalpha((unsigned char)x[0]) || !isalpha((unsigned char)x[1])) {
            bad = cfg_error(c, n, path, "expected two-letter %s codes, got \"%s\"", what, x);
            continue;
        }
        (*out)[*count][0] = (char)toupper((unsigned char)x[0]);
        (*out)[*count][1] = (char)toupper((unsigned char)x[1]);
        (*out)[*count][2] = 0;
        (*count)++;
    }
    cfg_free_string_list(list, k);
    return bad;
}

static int parse_member(struct cfg *c, const cfg_node *n, const char *path,
                        struct dns_member_conf *m)
{
    const cfg_node *an = n;
    int bad = 0;
    m->weight = 1;
    if (cfg_is_map(n)) {
        static const char *const keys[] = { "address", "weight", NULL };
        cfg_node *v[2];
        char p[256];
        if (cfg_map_fields(c, n, path, keys, v))
            return -EINVAL;
        if (!v[0])
            return cfg_error(c, n, path, "missing key \"address\"");
        an = v[0];
        if (v[1]) {
            int w;
            P(p, "%s.weight", path);
            if (get_uint(c, v[1], p, 0, 1000000, &w) == 0)
                m->weight = (unsigned)w;
            else
                bad = -EINVAL;
        }
    }
    if (cfg_get_string(c, an, path, &m->address))
        return -EINVAL;
    if (inet_pton(AF_INET, m->address, m->ip) == 1)
        m->family = AF_INET;
    else if (inet_pton(AF_INET6, m->address, m->ip) == 1)
        m->family = AF_INET6;
    else
        bad = cfg_error(c, an, path, "expected an IPv4 or IPv6 address, got \"%s\"", m->address);
    return bad;
}

static int parse_gslb(struct cfg *c, const cfg_node *n, const char *path, struct dns_gslb_conf *g,
                      bool geoip)
{
    static const char *const keys[] = { "name", "ttl", "policy", "max_answers", "when_all_down",
                                        "health", "pools", NULL };
    cfg_node *v[7];
    char p[256], q[300];
    g->ttl = 5;
    g->max_answers = 8;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.name", path);
    if (!v[0]) {
        bad = cfg_error(c, n, path, "missing key \"name\"");
    } else if (cfg_get_string(c, v[0], p, &g->name) == 0) {
        const char *msg;
        int l = dns_name_from_text(g->name, strlen(g->name), (const uint8_t *)"", 1, g->lname, &msg);
        if (l < 0) {
            bad = cfg_error(c, v[0], p, "%s", msg);
        } else {
            dns_name_lower(g->lname, g->lname, (size_t)l);
            g->lnamelen = (uint8_t)l;
        }
    } else {
        bad = -EINVAL;
    }
    P(p, "%s.ttl", path);
    uint64_t ms;
    if (v[1] && cfg_get_duration(c, v[1], p, &ms) == 0)
        g->ttl = (uint32_t)(ms / 1000);
    else if (v[1])
        bad = -EINVAL;
    P(p, "%s.policy", path);
    if (v[2]) {
        const char *s = cfg_scalar(v[2]);
        if (s && strcmp(s, "failover") == 0)
            g->policy = DNS_POLICY_FAILOVER;
        else if (s && strcmp(s, "weighted") == 0)
            g->policy = DNS_POLICY_WEIGHTED;
        else if (s && strcmp(s, "nearest") == 0)
            g->policy = DNS_POLICY_NEAREST;
        else
            bad = cfg_error(c, v[2], p, "expected failover, weighted or nearest");
    }
    P(p, "%s.max_answers", path);
    if (v[3])
        bad |= get_uint(c, v[3], p, 1, DNS_GSLB_MAX_ANSWERS, &g->max_answers);
    P(p, "%s.when_all_down", path);
    if (v[4]) {
        const char *s = cfg_scalar(v[4]);
        if (s && strcmp(s, "answer") == 0)
            g->all_down = DNS_DOWN_ANSWER;
        else if (s && strcmp(s, "nodata") == 0)
            g->all_down = DNS_DOWN_NODATA;
        else if (s && strcmp(s, "servfail") == 0)
            g->all_down = DNS_DOWN_SERVFAIL;
        else
            bad = cfg_error(c, v[4], p, "expected answer (fail open), nodata or servfail");
    }
    P(p, "%s.health", path);
    if (v[5]) {
        g->have_health = true;
        bad |= health_conf_parse(c, v[5], p, &g->health, true);
    }
    P(p, "%s.pools", path);
    if (!v[6] || !cfg_is_seq(v[6]) || cfg_len(v[6]) == 0) {
        bad = cfg_error(c, v[6] ? v[6] : n, p, "expected a list of pools with members");
        return bad;
    }
    g->npools = cfg_len(v[6]);
    g->pools = calloc(g->npools, sizeof(*g->pools));
    if (!g->pools)
        return cfg_error(c, n, path, "out of memory");
    for (size_t i = 0; i < g->npools; i++) {
        static const char *const pk[] = { "region", "networks", "members", "countries",
                                           "continents", NULL };
        cfg_node *pv[5];
        struct dns_pool_conf *pool = &g->pools[i];
        P(p, "%s.pools[%zu]", path, i);
        if (cfg_map_fields(c, cfg_seq_item(c, v[6], i), p, pk, pv)) {
            bad = -EINVAL;
            continue;
        }
        P(q, "%s.region", p);
        if (pv[0])
            bad |= cfg_get_string(c, pv[0], q, &pool->region);
        else {
            char r[32];
            snprintf(r, sizeof(r), "pool%zu", i + 1);
            pool->region = strdup(r);
        }
        P(q, "%s.networks", p);
        if (pv[1])
            bad |= parse_cidrs(c, pv[1], q, &pool->networks, &pool->nnetworks);
        P(q, "%s.countries", p);
        if (pv[3])
            bad |= parse_codes(c, pv[3], q, &pool->countries, &pool->ncountries, "ISO 3166 country");
        P(q, "%s.continents", p);
        if (pv[4])
            bad |= parse_codes(c, pv[4], q, &pool->continents, &pool->ncontinents, "continent");
        if ((pv[3] || pv[4]) && !geoip)
            bad = cfg_error(c, pv[3] ? pv[3] : pv[4], q,
                            "countries and continents need the service's geoip: database");
        P(q, "%s.members", p);
        if (!pv[2] || !cfg_is_seq(pv[2]) || cfg_len(pv[2]) == 0) {
            bad = cfg_error(c, pv[2] ? pv[2] : cfg_seq_item(c, v[6], i), q,
                            "expected a list of members");
            continue;
        }
        pool->nmembers = cfg_len(pv[2]);
        pool->members = calloc(pool->nmembers, sizeof(*pool->members));
        if (!pool->members) {
            pool->nmembers = 0;
            bad = -ENOMEM;
            continue;
        }
        for (size_t k = 0; k < pool->nmembers; k++) {
            char mp[320];
            P(mp, "%s[%zu]", q, k);
            bad |= parse_member(c, cfg_seq_item(c, pv[2], k), mp, &pool->members[k]);
        }
    }
    return bad ? -EINVAL : 0;
}

static int parse_zone(struct cfg *c, const cfg_node *n, const char *path, struct service *svc,
                      struct dns_zone_conf *z)
{
    static const char *const keys[] = { "origin", "file", "secondaries", "allow_transfer", NULL };
    cfg_node *v[4];
    char p[256];
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.origin", path);
    if (!v[0]) {
        bad = cfg_error(c, n, path, "missing key \"origin\"");
    } else if (cfg_get_string(c, v[0], p, &z->origin) == 0) {
        uint8_t tmp[DNS_NAME_MAX];
        const char *msg;
        if (dns_name_from_text(z->origin, strlen(z->origin), (const uint8_t *)"", 1, tmp, &msg) < 0)
            bad = cfg_error(c, v[0], p, "%s", msg);
    } else {
        bad = -EINVAL;
    }
    P(p, "%s.file", path);
    if (v[1]) {
        char *f = NULL;
        if (cfg_get_string(c, v[1], p, &f) == 0) {
            z->file = stack_path(svc->stack, f);
            free(f);
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.secondaries", path);
    if (v[2]) {
        char **list;
        size_t k;
        if (cfg_get_string_list(c, v[2], p, &list, &k) == 0) {
            z->secondaries = calloc(k ? k : 1, sizeof(*z->secondaries));
            for (size_t i = 0; i < k && z->secondaries; i++) {
                if (net_addr_parse(list[i], &z->secondaries[z->nsecondaries]) == 0)
                    z->nsecondaries++;
                else
                    bad = cfg_error(c, v[2], p, "expected addresses like 127.0.0.1:53, got \"%s\"",
                                    list[i]);
            }
            cfg_free_string_list(list, k);
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.allow_transfer", path);
    if (v[3])
        bad |= parse_cidrs(c, v[3], p, &z->allow_transfer, &z->nallow);
    return bad ? -EINVAL : 0;
}

static int parse_rrl(struct cfg *c, const cfg_node *n, const char *path, struct dns_rrl_conf *r)
{
    static const char *const keys[] = { "rate", "slip", "ipv4_prefix", "ipv6_prefix",
                                        "table_size", "exempt", NULL };
    cfg_node *v[6];
    char p[256];
    r->enabled = true;
    r->rate = 20;
    r->slip = 2;
    r->v4_prefix = 24;
    r->v6_prefix = 56;
    r->table_size = 65536;
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0, x;
    P(p, "%s.rate", path);
    if (v[0] && (bad |= get_uint(c, v[0], p, 1, 10000000, &x)) == 0)
        r->rate = (uint32_t)x;
    P(p, "%s.slip", path);
    if (v[1] && get_uint(c, v[1], p, 0, 100, &x) == 0)
        r->slip = (uint32_t)x;
    else if (v[1])
        bad = -EINVAL;
    P(p, "%s.ipv4_prefix", path);
    if (v[2])
        bad |= get_uint(c, v[2], p, 1, 32, &r->v4_prefix);
    P(p, "%s.ipv6_prefix", path);
    if (v[3])
        bad |= get_uint(c, v[3], p, 1, 128, &r->v6_prefix);
    P(p, "%s.table_size", path);
    if (v[4] && get_uint(c, v[4], p, 64, 1 << 24, &x) == 0)
        r->table_size = (uint32_t)x;
    else if (v[4])
        bad = -EINVAL;
    P(p, "%s.exempt", path);
    if (v[5])
        bad |= parse_cidrs(c, v[5], p, &r->exempt, &r->nexempt);
    return bad ? -EINVAL : 0;
}

int dns__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "admin", "threads", "zones", "gslb",
                                        "rrl", "edns_udp_size", "tcp_idle_timeout", "geoip", NULL };
    cfg_node *v[10];
    char p[256];
    struct dns_conf *dc = calloc(1, sizeof(*dc));
    if (!dc)
        return cfg_error(c, map, path, "out of memory");
    svc->conf = dc;
    dc->threads = 1;
    dc->edns_size = DNS_EDNS_SIZE_DEFAULT;
    dc->tcp_idle_ms = 10000;
    dc->tcp_max_conns = 1000;
    int bad = cfg_map_fields(c, map, path, keys, v);
    P(p, "%s.listen", path);
    bad |= service_listen_addrs(c, map, v[1], p, svc, dc->listen, DNS_MAX_LISTEN, &dc->nlisten,
                                "dns", "dns", "127.0.0.1:53", true);
    P(p, "%s.admin", path);
    if (v[2]) {
        if (cfg_get_addr(c, v[2], p, &dc->admin) == 0) {
            char s[NET_ADDRSTRLEN];
            net_addr_format(&dc->admin, s, sizeof(s));
            service_add_endpoint(svc, "admin", "http://%s/", s);
            service_add_bind(svc, &dc->admin, SOCK_STREAM);
            dc->have_admin = true;
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.threads", path);
    if (v[3])
        bad |= get_uint(c, v[3], p, 1, 64, &dc->threads);
    P(p, "%s.zones", path);
    if (!v[4] || !cfg_is_seq(v[4]) || cfg_len(v[4]) == 0) {
        bad = cfg_error(c, v[4] ? v[4] : map, p, "expected a list of zones ({origin, file})");
    } else {
        dc->nzones = cfg_len(v[4]);
        dc->zones = calloc(dc->nzones, sizeof(*dc->zones));
        if (!dc->zones) {
            dc->nzones = 0;
            return cfg_error(c, map, path, "out of memory");
        }
        for (size_t i = 0; i < dc->nzones; i++) {
            char q[280];
            P(q, "%s[%zu]", p, i);
            bad |= parse_zone(c, cfg_seq_item(c, v[4], i), q, svc, &dc->zones[i]);
        }
    }
    P(p, "%s.geoip", path);
    if (v[9]) {
        char *rel = NULL;
        if (cfg_get_string(c, v[9], p, &rel) == 0) {
            dc->geoip_path = stack_path(svc->stack, rel);
            dc->geoip = calloc(1, sizeof(*dc->geoip));
            int mr = dc->geoip_path && dc->geoip ? MMDB_open(dc->geoip_path, MMDB_MODE_MMAP, dc->geoip)
                                                 : MMDB_OUT_OF_MEMORY_ERROR;
            if (mr != MMDB_SUCCESS) {
                bad = cfg_error(c, v[9], p, "%s: %s%s%s", dc->geoip_path ? dc->geoip_path : rel,
                                MMDB_strerror(mr), mr == MMDB_IO_ERROR ? ": " : "",
                                mr == MMDB_IO_ERROR ? strerror(errno) : "");
                free(dc->geoip);
                dc->geoip = NULL;
            }
        } else {
            bad = -EINVAL;
        }
        free(rel);
    }
    P(p, "%s.gslb", path);
    if (v[5]) {
        if (!cfg_is_seq(v[5])) {
            bad = cfg_error(c, v[5], p, "expected a list of GSLB names");
        } else {
            dc->ngslb = cfg_len(v[5]);
            dc->gslb = calloc(dc->ngslb ? dc->ngslb : 1, sizeof(*dc->gslb));
            if (!dc->gslb) {
                dc->ngslb = 0;
                return cfg_error(c, map, path, "out of memory");
            }
            for (size_t i = 0; i < dc->ngslb; i++) {
                char q[280];
                P(q, "%s[%zu]", p, i);
                bad |= parse_gslb(c, cfg_seq_item(c, v[5], i), q, &dc->gslb[i], dc->geoip != NULL);
                for (size_t k = 0; k < i; k++)
                    if (dc->gslb[k].lnamelen && dc->gslb[k].lnamelen == dc->gslb[i].lnamelen &&
                        memcmp(dc->gslb[k].lname, dc->gslb[i].lname, dc->gslb[i].lnamelen) == 0)
                        bad = cfg_error(c, cfg_seq_item(c, v[5], i), q, "the name %s is given twice",
                                        dc->gslb[i].name);
            }
        }
    }
    P(p, "%s.rrl", path);
    if (v[6])
        bad |= parse_rrl(c, v[6], p, &dc->rrl);
    P(p, "%s.edns_udp_size", path);
    int es;
    if (v[7] && get_uint(c, v[7], p, 512, 4096, &es) == 0)
        dc->edns_size = (uint16_t)es;
    else if (v[7])
        bad = -EINVAL;
    P(p, "%s.tcp_idle_timeout", path);
    if (v[8])
        bad |= cfg_get_duration(c, v[8], p, &dc->tcp_idle_ms);
    return bad ? -EINVAL : 0;
}

void dns__free_conf(void *conf)
{
    struct dns_conf *dc = conf;
    if (!dc)
        return;
    for (size_t i = 0; i < dc->nzones; i++) {
        free(dc->zones[i].origin);
        free(dc->zones[i].file);
        free(dc->zones[i].secondaries);
        free(dc->zones[i].allow_transfer);
    }
    free(dc->zones);
    for (size_t i = 0; i < dc->ngslb; i++) {
        struct dns_gslb_conf *g = &dc->gslb[i];
        free(g->name);
        health_conf_free(&g->health);
        for (size_t k = 0; k < g->npools; k++) {
            free(g->pools[k].region);
            free(g->pools[k].networks);
            free(g->pools[k].countries);
            free(g->pools[k].continents);
            for (size_t m = 0; m < g->pools[k].nmembers; m++)
                free(g->pools[k].members[m].address);
            free(g->pools[k].members);
        }
        free(g->pools);
    }
    free(dc->gslb);
    free(dc->rrl.exempt);
    if (dc->geoip) {
        MMDB_close(dc->geoip);
        free(dc->geoip);
    }
    free(dc->geoip_path);
    free(dc);
}
