/* edge_config.c - parsing role "edge" from the stack file.
 *
 *   listen:   ["127.0.0.1:8090"] or [{address, tls: {certs: [{cert, key}]}, allow, deny}]
 *   admin:    "127.0.0.1:9902"
 *   threads, access_log, short_slices,
 *   timeouts: {header, idle, body}, limits: {max_body, max_conns, max_conns_per_ip}
 *   routes:   [{host, path | path_exact | path_regex, headers: {Name: value}, backend, allow, deny,
 *               rate_limit: {rps, burst, key: ip | "header:X-Name"}, redirect_https,
 *               request_headers: {set: {..}, remove: [..]}, response_headers: {...}}]
 *   backends: {name: {servers: [addr | {address, weight}], balance, hash: {header|cookie},
 *               health: {http: {path, status, host} | tcp: true, interval, timeout, rise, fall},
 *               retries, connect_timeout, response_timeout, idle_timeout,
 *               eject: {after, for, max_percent}, when_all_down: serve_all | fail, slow_start}}
 */
#include "edge_conf.h"
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "core/http1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <stdarg.h>


#define P CFG_PATH

uint32_t edge__hash(const void *p, size_t n)
{
    /* FNV-1a then a final avalanche (murmur3 fmix32) */
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 16777619u;
    }
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

bool edge__cidrs_allow(const struct edge_cidrs *allow, const struct edge_cidrs *deny,
                       const struct sockaddr *sa)
{
    for (size_t i = 0; i < deny->n; i++)
        if (net_cidr_match(&deny->v[i], sa))
            return false;
    if (!allow->n)
        return true;
    for (size_t i = 0; i < allow->n; i++)
        if (net_cidr_match(&allow->v[i], sa))
            return true;
    return false;
}

static int get_cidrs(struct cfg *c, const cfg_node *n, const char *path, struct edge_cidrs *out)
{
    size_t len = cfg_is_seq(n) ? cfg_len(n) : 1;
    if (!cfg_is_seq(n) && !cfg_is_scalar(n))
        return cfg_error(c, n, path, "expected a list of networks");
    free(out->v);
    out->n = 0;
    out->v = calloc(len ? len : 1, sizeof(*out->v));
    if (!out->v)
        return cfg_error(c, n, path, "out of memory");
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        char p[256];
        P(p, "%s[%zu]", path, i);
        if (cfg_get_cidr(c, cfg_is_seq(n) ? cfg_seq_item(c, n, i) : n, p, &out->v[out->n]) == 0)
            out->n++;
        else
            bad = -EINVAL;
    }
    return bad;
}

static int parse_certs(struct cfg *c, const cfg_node *n, const char *path,
                       struct edge_listener *l, const struct service *svc)
{
    static const char *const tkeys[] = { "certs", "self_signed", NULL };
    cfg_node *tv[2];
    char p[256];
    if (cfg_map_fields(c, n, path, tkeys, tv))
        return -EINVAL;
    P(p, "%s.self_signed", path);
    if (tv[1] && cfg_get_bool(c, tv[1], p, &l->self_signed))
        return -EINVAL;
    P(p, "%s.certs", path);
    if (!tv[0] || !cfg_is_seq(tv[0]) || cfg_len(tv[0]) == 0)
        return cfg_error(c, tv[0] ? tv[0] : n, p, "expected a list of {cert, key}");
    l->certs = calloc(cfg_len(tv[0]), sizeof(*l->certs));
    if (!l->certs)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg_len(tv[0]); i++) {
        static const char *const ck[] = { "cert", "key", NULL };
        cfg_node *cv[2];
        char q[280];
        P(q, "%s[%zu]", p, i);
        if (cfg_map_fields(c, cfg_seq_item(c, tv[0], i), q, ck, cv)) {
            bad = -EINVAL;
            continue;
        }
        if (!cv[0] || !cv[1]) {
            bad = cfg_error(c, cfg_seq_item(c, tv[0], i), q, "needs both \"cert\" and \"key\"");
            continue;
        }
        char *cert = NULL, *key = NULL;
        if (cfg_get_string(c, cv[0], q, &cert) || cfg_get_string(c, cv[1], q, &key)) {
            free(cert);
            free(key);
            bad = -EINVAL;
            continue;
        }
        l->certs[l->ncerts].cert = stack_path(svc->stack, cert);
        l->certs[l->ncerts].key = stack_path(svc->stack, key);
        l->ncerts++;
        free(cert);
        free(key);
    }
    l->tls = true;
    return bad;
}

static int parse_listener(struct cfg *c, const cfg_node *n, const char *path,
                          struct edge_listener *l, struct service *svc)
{
    char p[256];
    int bad = 0;
    if (cfg_is_scalar(n)) {
        bad = cfg_get_addr(c, n, path, &l->addr);
    } else {
        static const char *const keys[] = { "address", "tls", "allow", "deny", "mode", "backend", NULL };
        cfg_node *v[6];
        if (cfg_map_fields(c, n, path, keys, v))
            return -EINVAL;
        P(p, "%s.address", path);
        if (!v[0])
            return cfg_error(c, n, path, "missing key \"address\"");
        bad |= cfg_get_addr(c, v[0], p, &l->addr);
        P(p, "%s.tls", path);
        if (v[1])
            bad |= parse_certs(c, v[1], p, l, svc);
        P(p, "%s.allow", path);
        if (v[2])
            bad |= get_cidrs(c, v[2], p, &l->allow);
        P(p, "%s.deny", path);
        if (v[3])
            bad |= get_cidrs(c, v[3], p, &l->deny);
        P(p, "%s.mode", path);
        if (v[4]) {
            const char *m = cfg_scalar(v[4]);
            if (m && strcmp(m, "tcp") == 0)
                l->tcp = true;
            else if (!m || strcmp(m, "http") != 0)
                bad = cfg_error(c, v[4], p, "expected http or tcp");
        }
        P(p, "%s.backend", path);
        if (v[5] && !l->tcp)
            bad = cfg_error(c, v[5], p, "\"backend\" on a listener needs mode: tcp (HTTP uses routes)");
        else if (v[5])
            bad |= cfg_get_string(c, v[5], p, &l->backend_name);
        else if (l->tcp)
            bad = cfg_error(c, n, path, "a listener with mode: tcp needs a \"backend\"");
    }
    if (!bad) {
        char a[NET_ADDRSTRLEN];
        net_addr_format(&l->addr, a, sizeof(a));
        if (l->tcp)
            service_add_endpoint(svc, l->tls ? "tls" : "tcp", "%s://%s", l->tls ? "tls" : "tcp", a);
        else
            service_add_endpoint(svc, l->tls ? "https" : "http", "%s://%s/", l->tls ? "https" : "http", a);
        service_add_bind(svc, &l->addr, SOCK_STREAM);
    }
    return bad ? -EINVAL : 0;
}

static int parse_kv_map(struct cfg *c, const cfg_node *n, const char *path, struct edge_kv **out,
                        size_t *nout)
{
    if (!cfg_is_map(n))
        return cfg_error(c, n, path, "expected a mapping of header names to values");
    size_t len = cfg_len(n);
    *out = calloc(len ? len : 1, sizeof(**out));
    if (!*out)
        return -ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        char p[256];
        const char *k = cfg_scalar(cfg_map_key(c, n, i));
        P(p, "%s.%s", path, k);
        char *v = NULL;
        if (cfg_get_string(c, cfg_map_value(c, n, i), p, &v)) {
            bad = -EINVAL;
            continue;
        }
        (*out)[*nout].name = strdup(k);
        (*out)[*nout].value = v;
        (*nout)++;
    }
    return bad;
}

static int parse_header_ops(struct cfg *c, const cfg_node *n, const char *path,
                            struct edge_header_ops *ops)
{
    static const char *const keys[] = { "set", "remove", NULL };
    cfg_node *v[2];
    char p[256];
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.set", path);
    if (v[0])
        bad |= parse_kv_map(c, v[0], p, &ops->set, &ops->nset);
    P(p, "%s.remove", path);
    if (v[1])
        bad |= cfg_get_string_list(c, v[1], p, &ops->remove, &ops->nremove);
    return bad ? -EINVAL : 0;
}

/* st: the stack being parsed, for relative paths (cache disk, backend TLS files) */
static int parse_route(struct cfg *c, const cfg_node *n, const char *path, const struct stack *st,
                       struct edge_route *r)
{
    static const char *const keys[] = { "host", "path", "path_exact", "headers", "backend",
                                        "allow", "deny", "rate_limit", "redirect_https",
                                        "request_headers", "response_headers", "cache",
                                        "path_regex", NULL };
    cfg_node *v[13];
    char p[256];
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    P(p, "%s.host", path);
    if (v[0]) {
        bad |= cfg_get_string(c, v[0], p, &r->host);
        if (r->host && strcmp(r->host, "*") == 0) {
            free(r->host);
            r->host = NULL;
        } else if (r->host && strchr(r->host, '*') && strncmp(r->host, "*.", 2) != 0) {
            bad = cfg_error(c, v[0], p, "a wildcard host must start with \"*.\", got \"%s\"", r->host);
        }
    }
    if ((v[1] != NULL) + (v[2] != NULL) + (v[12] != NULL) > 1)
        bad = cfg_error(c, v[2] ? v[2] : v[12], path,
                        "give one of \"path\" (prefix), \"path_exact\" or \"path_regex\"");
    cfg_node *pn = v[1] ? v[1] : v[2];
    P(p, "%s.%s", path, v[1] ? "path" : "path_exact");
    if (v[12] && !pn) {
        P(p, "%s.path_regex", path);
        if (cfg_get_string(c, v[12], p, &r->path) == 0) {
            /* the whole path must match, as RE2's FullMatch (Envoy's safe_regex) */
            size_t l = strlen(r->path) + 16;
            char *pat = malloc(l);
            int ec;
            PCRE2_SIZE off;
            if (pat) {
                snprintf(pat, l, "^(?:%s)$", r->path);
                r->path_re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                           PCRE2_UTF | PCRE2_DOLLAR_ENDONLY,
                                           &ec, &off, NULL);
                free(pat);
                if (!r->path_re) {
                    PCRE2_UCHAR m[160];
                    pcre2_get_error_message(ec, m, sizeof(m));
                    bad = cfg_error(c, v[12], p, "invalid regular expression: %s", (char *)m);
                } else {
                    pcre2_jit_compile(r->path_re, PCRE2_JIT_COMPLETE);
                }
            }
        } else {
            bad = -EINVAL;
        }
    } else if (pn) {
        if (cfg_get_string(c, pn, p, &r->path) == 0 && r->path[0] != '/')
            bad = cfg_error(c, pn, p, "expected a path starting with \"/\", got \"%s\"", r->path);
        r->path_exact = v[2] != NULL;
    } else {
        r->path = strdup("/");
    }
    P(p, "%s.headers", path);
    if (v[3])
        bad |= parse_kv_map(c, v[3], p, &r->headers, &r->nheaders);
    P(p, "%s.backend", path);
    if (!v[4] && !(v[8]))
        bad = cfg_error(c, n, path, "missing key \"backend\"");
    if (v[4])
        bad |= cfg_get_string(c, v[4], p, &r->backend_name);
    P(p, "%s.allow", path);
    if (v[5])
        bad |= get_cidrs(c, v[5], p, &r->allow);
    P(p, "%s.deny", path);
    if (v[6])
        bad |= get_cidrs(c, v[6], p, &r->deny);
    if (v[7]) {
        static const char *const rk[] = { "rps", "burst", "key", NULL };
        cfg_node *rv[3];
        P(p, "%s.rate_limit", path);
        if (cfg_map_fields(c, v[7], p, rk, rv) == 0) {
            char q[280];
            r->rate_limit = true;
            P(q, "%s.rps", p);
            if (!rv[0])
                bad = cfg_error(c, v[7], p, "missing key \"rps\"");
            else
                bad |= cfg_get_float(c, rv[0], q, 0.001, 1e9, &r->rps);
            r->burst = r->rps;
            P(q, "%s.burst", p);
            if (rv[1])
                bad |= cfg_get_float(c, rv[1], q, 1, 1e9, &r->burst);
            P(q, "%s.key", p);
            if (rv[2]) {
                const char *k = cfg_scalar(rv[2]);
                if (k && strcmp(k, "ip") == 0)
                    ;
                else if (k && strncmp(k, "header:", 7) == 0 && k[7])
                    r->rl_header = strdup(k + 7);
                else
                    bad = cfg_error(c, rv[2], q, "expected \"ip\" or \"header:NAME\"");
            }
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.redirect_https", path);
    if (v[8])
        bad |= cfg_get_bool(c, v[8], p, &r->redirect_https);
    P(p, "%s.request_headers", path);
    if (v[9])
        bad |= parse_header_ops(c, v[9], p, &r->req_ops);
    P(p, "%s.response_headers", path);
    if (v[10])
        bad |= parse_header_ops(c, v[10], p, &r->resp_ops);
    P(p, "%s.cache", path);
    if (v[11]) {
        static const char *const ck[] = { "memory", "max_object", "heuristic", "grace", "compress",
                                          "disk", "disk_size", NULL };
        cfg_node *cv[7];
        r->cache = true;
        r->cache_compress = true;
        r->cache_memory = 256u << 20;
        r->cache_max_object = 8u << 20;
        r->cache_heuristic = 0.1;
        if (cfg_map_fields(c, v[11], p, ck, cv) == 0) {
            char q[280];
            P(q, "%s.memory", p);
            if (cv[0] && cfg_get_size(c, cv[0], q, &r->cache_memory) == 0 && r->cache_memory < 65536)
                bad = cfg_error(c, cv[0], q, "expected at least 64KiB");
            P(q, "%s.max_object", p);
            if (cv[1])
                bad |= cfg_get_size(c, cv[1], q, &r->cache_max_object);
            P(q, "%s.heuristic", p);
            if (cv[2])
                bad |= cfg_get_float(c, cv[2], q, 0, 1, &r->cache_heuristic);
            P(q, "%s.grace", p);
            if (cv[3])
                bad |= cfg_get_duration(c, cv[3], q, &r->cache_grace_ms);
            P(q, "%s.compress", p);
            if (cv[4])
                bad |= cfg_get_bool(c, cv[4], q, &r->cache_compress);
            P(q, "%s.disk", p);
            r->cache_disk_size = 1ull << 30;
            if (cv[5]) {
                char *d = NULL;
                if (cfg_get_string(c, cv[5], q, &d) == 0) {
                    r->cache_disk = stack_path(st, d);
                    free(d);
                } else {
                    bad = -EINVAL;
                }
            }
            P(q, "%s.disk_size", p);
            if (cv[6])
                bad |= cfg_get_size(c, cv[6], q, &r->cache_disk_size);
        } else {
            bad = -EINVAL;
        }
    }
    snprintf(r->label, sizeof(r->label), "%s%s", r->host ? r->host : "", r->path ? r->path : "/");
    return bad ? -EINVAL : 0;
}

int edge__build_ring(struct edge_backend *b)
{
    free(b->ring);
    free(b->ring_server);
    b->ring = NULL;
    b->ring_server = NULL;
    b->nring = 0;
    size_t total = 0;
    for (size_t i = 0; i < b->nservers; i++)
        total += b->servers[i].weight * EDGE_RING_POINTS;
    b->ring = calloc(total ? total : 1, sizeof(*b->ring));
    b->ring_server = calloc(total ? total : 1, sizeof(*b->ring_server));
    if (!b->ring || !b->ring_server)
        return -ENOMEM;
    /* insertion into a sorted array: fine for a few thousand points at start-up */
    size_t n = 0;
    for (size_t i = 0; i < b->nservers; i++) {
        for (unsigned k = 0; k < b->servers[i].weight * EDGE_RING_POINTS; k++) {
            char key[NET_ADDRSTRLEN + 16];
            int len = snprintf(key, sizeof(key), "%s#%u", b->servers[i].name, k);
            uint32_t h = edge__hash(key, (size_t)len);
            size_t pos = n;
            while (pos > 0 && b->ring[pos - 1] > h) {
                b->ring[pos] = b->ring[pos - 1];
                b->ring_server[pos] = b->ring_server[pos - 1];
                pos--;
            }
            b->ring[pos] = h;
            b->ring_server[pos] = (uint16_t)i;
            n++;
        }
    }
    b->nring = n;
    return 0;
}



static int parse_backend(struct cfg *c, const cfg_node *n, const char *path, const struct stack *st,
                         struct edge_backend *b)
{
    static const char *const keys[] = { "servers", "balance", "hash", "health", "retries",
                                        "connect_timeout", "response_timeout", "idle_timeout",
                                        "eject", "slow_start", "retry_budget", "tls", "max_conns",
                                        "queue", "dns", "when_all_down", NULL };
    cfg_node *v[16];
    char p[256];
    if (cfg_map_fields(c, n, path, keys, v))
        return -EINVAL;
    int bad = 0;
    long long x;
    b->balance = BAL_ROUND_ROBIN;
    b->retries = 2;
    b->retry_percent = 20;
    b->retry_min = 3;
    b->queue_size = 0;
    b->queue_timeout_ms = 5000;
    b->connect_timeout_ms = 2000;
    b->response_timeout_ms = 30000;
    b->idle_timeout_ms = 30000;
    b->eject_after = 5;
    b->eject_ms = 10000;
    b->eject_max_percent = 50;
    P(p, "%s.when_all_down", path);
    if (v[15]) {
        const char *t = cfg_scalar(v[15]);
        if (t && strcmp(t, "fail") == 0)
            b->all_down_fail = true;
        else if (!t || strcmp(t, "serve_all") != 0)
            bad = cfg_error(c, v[15], p, "expected serve_all or fail");
    }
    P(p, "%s.dns", path);
    if (v[14]) {
        static const char *const dk[] = { "name", "type", "port", "interval", "resolver", NULL };
        cfg_node *dv[5];
        b->dns = true;
        b->dns_interval_ms = 10000;
        if (v[0])
            bad = cfg_error(c, v[14], path, "give either \"servers\" or \"dns\", not both");
        if (cfg_map_fields(c, v[14], p, dk, dv) == 0) {
            char q[280];
            P(q, "%s.name", p);
            if (!dv[0])
                bad = cfg_error(c, v[14], p, "missing key \"name\"");
            else
                bad |= cfg_get_string(c, dv[0], q, &b->dns_name);
            P(q, "%s.type", p);
            if (dv[1]) {
                const char *t = cfg_scalar(dv[1]);
                if (t && strcmp(t, "srv") == 0)
                    b->dns_srv = true;
                else if (!t || strcmp(t, "a") != 0)
                    bad = cfg_error(c, dv[1], q, "expected a (A and AAAA records) or srv");
            }
            P(q, "%s.port", p);
            if (dv[2]) {
                if (cfg_get_int(c, dv[2], q, 1, 65535, &x) == 0)
                    b->dns_port = (uint16_t)x;
                else
                    bad = -EINVAL;
            } else if (!b->dns_srv) {
                bad = cfg_error(c, v[14], p, "type a needs a \"port\" (SRV records carry their own)");
            }
            P(q, "%s.interval", p);
            if (dv[3] && cfg_get_duration(c, dv[3], q, &b->dns_interval_ms) == 0 && b->dns_interval_ms < 100)
                bad = cfg_error(c, dv[3], q, "expected at least 100ms");
            P(q, "%s.resolver", p);
            if (dv[4]) {
                if (cfg_get_addr(c, dv[4], q, &b->dns_resolver) == 0 &&
                    b->dns_resolver.ss.ss_family == AF_INET)
                    b->dns_have_resolver = true;
                else if (b->dns_resolver.ss.ss_family != AF_INET)
                    bad = cfg_error(c, dv[4], q, "expected an IPv4 address and port like 127.0.0.1:53");
                else
                    bad = -EINVAL;
            }
        } else {
            bad = -EINVAL;
        }
        b->servers = calloc(EDGE_MAX_SERVERS, sizeof(*b->servers));
        if (!b->servers)
            bad = cfg_error(c, v[14], p, "out of memory");
    }
    P(p, "%s.servers", path);
    if (b->dns) {
        /* filled from DNS answers at run time */
    } else if (!v[0] || !cfg_is_seq(v[0]) || cfg_len(v[0]) == 0 || cfg_len(v[0]) > EDGE_MAX_SERVERS) {
        bad = cfg_error(c, v[0] ? v[0] : n, p, "expected a list of 1 to %d server addresses",
                        EDGE_MAX_SERVERS);
    } else {
        b->servers = calloc(cfg_len(v[0]), sizeof(*b->servers));
        for (size_t i = 0; b->servers && i < cfg_len(v[0]); i++) {
            cfg_node *it = cfg_seq_item(c, v[0], i);
            struct edge_server *s = &b->servers[b->nservers];
            char q[280];
            P(q, "%s[%zu]", p, i);
            s->weight = 1;
            if (cfg_is_map(it)) {
                static const char *const sk[] = { "address", "weight", NULL };
                cfg_node *sv[2];
                if (cfg_map_fields(c, it, q, sk, sv) || !sv[0]) {
                    bad = sv[0] ? -EINVAL : cfg_error(c, it, q, "missing key \"address\"");
                    continue;
                }
                int hr = cfg_get_hostport(c, sv[0], q, &s->addr, s->name, sizeof(s->name));
                if (hr < 0) {
                    bad = -EINVAL;
                    continue;
                }
                s->named = hr == 1;
                long long w;
                if (sv[1]) {
                    char r[300];
                    P(r, "%s.weight", q);
                    if (cfg_get_int(c, sv[1], r, 0, 256, &w) == 0)
                        s->weight = (unsigned)w;
                    else
                        bad = -EINVAL;
                }
            } else {
                int hr = cfg_get_hostport(c, it, q, &s->addr, s->name, sizeof(s->name));
                if (hr < 0) {
                    bad = -EINVAL;
                    continue;
                }
                s->named = hr == 1;
            }
            s->backend = b;
            s->up = 1;
            b->nservers++;
        }
    }
    P(p, "%s.balance", path);
    if (v[1]) {
        const char *s = cfg_scalar(v[1]);
        if (s && strcmp(s, "round_robin") == 0)
            b->balance = BAL_ROUND_ROBIN;
        else if (s && strcmp(s, "least_conn") == 0)
            b->balance = BAL_LEAST_CONN;
        else if (s && strcmp(s, "random2") == 0)
            b->balance = BAL_RANDOM2;
        else if (s && strcmp(s, "hash") == 0)
            b->balance = BAL_HASH;
        else
            bad = cfg_error(c, v[1], p, "expected round_robin, least_conn, random2 or hash");
    }
    P(p, "%s.hash", path);
    if (v[2]) {
        static const char *const hk[] = { "header", "cookie", NULL };
        cfg_node *hv[2];
        if (cfg_map_fields(c, v[2], p, hk, hv) == 0 && (hv[0] || hv[1])) {
            b->hash_key = hv[0] ? HASH_HEADER : HASH_COOKIE;
            bad |= cfg_get_string(c, hv[0] ? hv[0] : hv[1], p, &b->hash_name);
        } else {
            bad = cfg_error(c, v[2], p, "expected {header: NAME} or {cookie: NAME}");
        }
    }
    P(p, "%s.health", path);
    if (v[3])
        bad |= health_conf_parse(c, v[3], p, &b->health, false);
    P(p, "%s.retries", path);
    if (v[4]) {
        if (cfg_get_int(c, v[4], p, 0, 10, &x) == 0)
            b->retries = (int)x;
        else
            bad = -EINVAL;
    }
    P(p, "%s.connect_timeout", path);
    if (v[5])
        bad |= cfg_get_duration(c, v[5], p, &b->connect_timeout_ms);
    P(p, "%s.response_timeout", path);
    if (v[6])
        bad |= cfg_get_duration(c, v[6], p, &b->response_timeout_ms);
    P(p, "%s.idle_timeout", path);
    if (v[7])
        bad |= cfg_get_duration(c, v[7], p, &b->idle_timeout_ms);
    P(p, "%s.eject", path);
    if (v[8]) {
        static const char *const ek[] = { "after", "for", "max_percent", NULL };
        cfg_node *ev[3];
        if (cfg_map_fields(c, v[8], p, ek, ev) == 0) {
            char q[280];
            P(q, "%s.after", p);
            if (ev[0]) {
                if (cfg_get_int(c, ev[0], q, 0, 1000, &x) == 0)
                    b->eject_after = (int)x;
                else
                    bad = -EINVAL;
            }
            P(q, "%s.for", p);
            if (ev[1])
                bad |= cfg_get_duration(c, ev[1], q, &b->eject_ms);
            P(q, "%s.max_percent", p);
            if (ev[2]) {
                if (cfg_get_int(c, ev[2], q, 0, 100, &x) == 0)
                    b->eject_max_percent = (int)x;
                else
                    bad = -EINVAL;
            }
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.slow_start", path);
    if (v[9])
        bad |= cfg_get_duration(c, v[9], p, &b->slow_start_ms);
    P(p, "%s.tls", path);
    if (v[11]) {
        static const char *const tk[] = { "verify", "ca", "sni", "cert", "key", NULL };
        cfg_node *tv[5];
        b->tls = true;
        b->tls_verify = true;
        if (cfg_map_fields(c, v[11], p, tk, tv) == 0) {
            char q[280];
            P(q, "%s.verify", p);
            if (tv[0])
                bad |= cfg_get_bool(c, tv[0], q, &b->tls_verify);
            char *tmp = NULL;
            P(q, "%s.ca", p);
            if (tv[1] && cfg_get_string(c, tv[1], q, &tmp) == 0) {
                b->tls_ca = stack_path(st, tmp);
                free(tmp);
                tmp = NULL;
            }
            P(q, "%s.sni", p);
            if (tv[2])
                bad |= cfg_get_string(c, tv[2], q, &b->tls_sni);
            P(q, "%s.cert", p);
            if (tv[3] && cfg_get_string(c, tv[3], q, &tmp) == 0) {
                b->tls_cert = stack_path(st, tmp);
                free(tmp);
                tmp = NULL;
            }
            P(q, "%s.key", p);
            if (tv[4] && cfg_get_string(c, tv[4], q, &tmp) == 0) {
                b->tls_key = stack_path(st, tmp);
                free(tmp);
            }
            if (!b->tls_cert != !b->tls_key)
                bad = cfg_error(c, v[11], p, "a client certificate needs both \"cert\" and \"key\"");
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.max_conns", path);
    if (v[12]) {
        if (cfg_get_int(c, v[12], p, 0, 1000000, &x) == 0)
            b->max_conns = (int)x;
        else
            bad = -EINVAL;
    }
    P(p, "%s.queue", path);
    if (v[13]) {
        static const char *const qk[] = { "size", "timeout", NULL };
        cfg_node *qv[2];
        if (cfg_map_fields(c, v[13], p, qk, qv) == 0) {
            char q[280];
            P(q, "%s.size", p);
            if (qv[0]) {
                if (cfg_get_int(c, qv[0], q, 0, 1000000, &x) == 0)
                    b->queue_size = (int)x;
                else
                    bad = -EINVAL;
            }
            P(q, "%s.timeout", p);
            if (qv[1])
                bad |= cfg_get_duration(c, qv[1], q, &b->queue_timeout_ms);
        } else {
            bad = -EINVAL;
        }
        if (!b->max_conns)
            bad = cfg_error(c, v[13], p, "a queue needs max_conns (requests queue when every server is full)");
    }
    P(p, "%s.retry_budget", path);
    if (v[10]) {
        static const char *const rk[] = { "percent", "min", NULL };
        cfg_node *rv[2];
        if (cfg_map_fields(c, v[10], p, rk, rv) == 0) {
            char q[280];
            P(q, "%s.percent", p);
            if (rv[0]) {
                if (cfg_get_int(c, rv[0], q, 0, 100, &x) == 0)
                    b->retry_percent = (int)x;
                else
                    bad = -EINVAL;
            }
            P(q, "%s.min", p);
            if (rv[1]) {
                if (cfg_get_int(c, rv[1], q, 0, 100000, &x) == 0)
                    b->retry_min = (int)x;
                else
                    bad = -EINVAL;
            }
        } else {
            bad = -EINVAL;
        }
    }
    if (!bad && b->balance == BAL_HASH && edge__build_ring(b))
        bad = cfg_error(c, n, path, "out of memory");
    /* checks speak to a server as requests do: over TLS, with the client certificate
     * (liveness, not identity: the server's certificate is not verified) */
    if (!bad && b->health.enabled && b->tls) {
        b->health.tls = true;
        if (b->tls_cert && (!(b->health.tls_cert = strdup(b->tls_cert)) ||
                            !(b->health.tls_key = strdup(b->tls_key))))
            bad = cfg_error(c, n, path, "out of memory");
    }
    return bad ? -EINVAL : 0;
}

int edge__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc)
{
    static const char *const keys[] = { "role", "listen", "admin", "threads", "access_log",
                                        "routes", "backends", "timeouts", "limits", "tracing",
                                        "short_slices", NULL };
    cfg_node *v[11];
    char p[256];
    struct edge_conf *e = calloc(1, sizeof(*e));
    if (!e)
        return cfg_error(c, map, path, "out of memory");
    svc->conf = e;
    e->threads = 1;
    e->short_slices = true;
    e->access_log = true;
    e->header_timeout_ms = 10000;
    e->idle_timeout_ms = 60000;
    e->body_timeout_ms = 30000;
    e->max_body = 64u << 20;
    e->max_header_bytes = 65536;
    e->max_headers = HTTP_MAX_HEADERS;
    e->max_conns = 20000;
    int bad = cfg_map_fields(c, map, path, keys, v);

    P(p, "%s.listen", path);
    if (!v[1] || !cfg_is_seq(v[1]) || cfg_len(v[1]) == 0 || cfg_len(v[1]) > EDGE_MAX_LISTEN) {
        bad = cfg_error(c, v[1] ? v[1] : map, p, "expected a list of 1 to %d listeners",
                        EDGE_MAX_LISTEN);
    } else {
        for (size_t i = 0; i < cfg_len(v[1]); i++) {
            char q[280];
            P(q, "%s[%zu]", p, i);
            /* a listener that fails keeps its slot: its partial state is freed with
             * the configuration, which is refused anyway */
            if (parse_listener(c, cfg_seq_item(c, v[1], i), q, &e->listen[e->nlisten++], svc))
                bad = -EINVAL;
        }
    }
    P(p, "%s.admin", path);
    if (v[2]) {
        if (cfg_get_addr(c, v[2], p, &e->admin) == 0) {
            char a[NET_ADDRSTRLEN];
            e->have_admin = true;
            net_addr_format(&e->admin, a, sizeof(a));
            service_add_endpoint(svc, "admin", "http://%s/", a);
            service_add_bind(svc, &e->admin, SOCK_STREAM);
        } else {
            bad = -EINVAL;
        }
    }
    long long x;
    P(p, "%s.threads", path);
    if (v[3]) {
        if (cfg_get_int(c, v[3], p, 1, 256, &x) == 0)
            e->threads = (int)x;
        else
            bad = -EINVAL;
    }
    P(p, "%s.access_log", path);
    if (v[4])
        bad |= cfg_get_bool(c, v[4], p, &e->access_log);
    P(p, "%s.short_slices", path);
    if (v[10])
        bad |= cfg_get_bool(c, v[10], p, &e->short_slices);
    P(p, "%s.tracing", path);
    bad |= otlp_parse_settings(c, v[9], p, &e->tracing);
    P(p, "%s.backends", path);
    if (!v[6] || !cfg_is_map(v[6]) || cfg_len(v[6]) == 0) {
        bad = cfg_error(c, v[6] ? v[6] : map, p, "expected a mapping of backend names to backends");
    } else {
        e->backends = calloc(cfg_len(v[6]), sizeof(*e->backends));
        for (size_t i = 0; e->backends && i < cfg_len(v[6]); i++) {
            struct edge_backend *b = &e->backends[e->nbackends];
            char q[280];
            const char *name = cfg_scalar(cfg_map_key(c, v[6], i));
            P(q, "%s.%s", p, name);
            b->name = strdup(name);
            b->index = e->nbackends++;
            if (parse_backend(c, cfg_map_value(c, v[6], i), q, svc->stack, b))
                bad = -EINVAL;
        }
    }
    P(p, "%s.routes", path);
    bool any_http = false;
    for (size_t i = 0; i < e->nlisten; i++)
        any_http |= !e->listen[i].tcp;
    for (size_t i = 0; i < e->nlisten; i++) {
        struct edge_listener *l = &e->listen[i];
        if (!l->backend_name)
            continue;
        for (size_t k = 0; k < e->nbackends; k++)
            if (strcmp(e->backends[k].name, l->backend_name) == 0)
                l->backend = &e->backends[k];
        if (!l->backend)
            bad = cfg_error(c, v[1], path, "listener backend \"%s\" is not defined under backends",
                            l->backend_name);
    }
    if (!v[5] && !any_http) {
        /* an L4-only edge needs no routes */
    } else if (!v[5] || !cfg_is_seq(v[5]) || cfg_len(v[5]) == 0) {
        bad = cfg_error(c, v[5] ? v[5] : map, p, "expected a list of routes");
    } else {
        e->routes = calloc(cfg_len(v[5]), sizeof(*e->routes));
        for (size_t i = 0; e->routes && i < cfg_len(v[5]); i++) {
            struct edge_route *r = &e->routes[e->nroutes];
            cfg_node *rn = cfg_seq_item(c, v[5], i);
            char q[280];
            P(q, "%s[%zu]", p, i);
            r->index = e->nroutes++;
            if (parse_route(c, rn, q, svc->stack, r)) {
                bad = -EINVAL;
                continue;
            }
            if (r->backend_name) {
                for (size_t k = 0; k < e->nbackends; k++)
                    if (strcmp(e->backends[k].name, r->backend_name) == 0)
                        r->backend = &e->backends[k];
                if (!r->backend)
                    bad = cfg_error(c, rn, q, "backend \"%s\" is not defined under backends",
                                    r->backend_name);
            }
        }
    }
    P(p, "%s.timeouts", path);
    if (v[7]) {
        static const char *const tk[] = { "header", "idle", "body", NULL };
        cfg_node *tv[3];
        if (cfg_map_fields(c, v[7], p, tk, tv) == 0) {
            char q[280];
            P(q, "%s.header", p);
            if (tv[0])
                bad |= cfg_get_duration(c, tv[0], q, &e->header_timeout_ms);
            P(q, "%s.idle", p);
            if (tv[1])
                bad |= cfg_get_duration(c, tv[1], q, &e->idle_timeout_ms);
            P(q, "%s.body", p);
            if (tv[2])
                bad |= cfg_get_duration(c, tv[2], q, &e->body_timeout_ms);
        } else {
            bad = -EINVAL;
        }
    }
    P(p, "%s.limits", path);
    if (v[8]) {
        static const char *const lk[] = { "max_body", "max_conns", "max_conns_per_ip",
                                           "max_header_bytes", "max_headers", NULL };
        cfg_node *lv[5];
        if (cfg_map_fields(c, v[8], p, lk, lv) == 0) {
            char q[280];
            P(q, "%s.max_body", p);
            if (lv[0])
                bad |= cfg_get_size(c, lv[0], q, &e->max_body);
            P(q, "%s.max_conns", p);
            if (lv[1]) {
                if (cfg_get_int(c, lv[1], q, 1, 10000000, &x) == 0)
                    e->max_conns = (size_t)x;
                else
                    bad = -EINVAL;
            }
            P(q, "%s.max_header_bytes", p);
            uint64_t hb;
            if (lv[3] && cfg_get_size(c, lv[3], q, &hb) == 0) {
                if (hb < 1024 || hb > (1u << 20))
                    bad = cfg_error(c, lv[3], q, "expected 1KiB to 1MiB");
                else
                    e->max_header_bytes = (size_t)hb;
            } else if (lv[3]) {
                bad = -EINVAL;
            }
            P(q, "%s.max_headers", p);
            if (lv[4]) {
                if (cfg_get_int(c, lv[4], q, 8, HTTP_MAX_HEADERS, &x) == 0)
                    e->max_headers = (size_t)x;
                else
                    bad = -EINVAL;
            }
            P(q, "%s.max_conns_per_ip", p);
            if (lv[2]) {
                if (cfg_get_int(c, lv[2], q, 0, 1000000, &x) == 0)
                    e->max_conns_per_ip = (int)x;
                else
                    bad = -EINVAL;
            }
        } else {
            bad = -EINVAL;
        }
    }
    return bad ? -EINVAL : 0;
}

static void free_cidrs(struct edge_cidrs *c)
{
    free(c->v);
}

static void free_kv(struct edge_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].name);
        free(kv[i].value);
    }
    free(kv);
}

static void free_ops(struct edge_header_ops *o)
{
    free_kv(o->set, o->nset);
    cfg_free_string_list(o->remove, o->nremove);
}

void edge__free_conf(void *p)
{
    struct edge_conf *e = p;
    if (!e)
        return;
    otlp_settings_free(&e->tracing);
    for (size_t i = 0; i < EDGE_MAX_LISTEN; i++) {
        struct edge_listener *l = &e->listen[i];
        for (size_t k = 0; k < l->ncerts; k++) {
            free(l->certs[k].cert);
            free(l->certs[k].key);
        }
        free(l->certs);
        free_cidrs(&l->allow);
        free_cidrs(&l->deny);
        free(l->backend_name);
    }
    for (size_t i = 0; i < e->nroutes; i++) {
        struct edge_route *r = &e->routes[i];
        free(r->host);
        free(r->path);
        if (r->path_re)
            pcre2_code_free(r->path_re);
        free_kv(r->headers, r->nheaders);
        free(r->backend_name);
        free_cidrs(&r->allow);
        free_cidrs(&r->deny);
        free(r->rl_header);
        free(r->cache_disk);
        free_ops(&r->req_ops);
        free_ops(&r->resp_ops);
    }
    free(e->routes);
    for (size_t i = 0; i < e->nbackends; i++) {
        struct edge_backend *b = &e->backends[i];
        free(b->name);
        free(b->servers);
        free(b->hash_name);
        health_conf_free(&b->health);
        free(b->dns_name);
        free(b->tls_ca);
        free(b->tls_sni);
        free(b->tls_cert);
        free(b->tls_key);
        free(b->ring);
        free(b->ring_server);
    }
    free(e->backends);
    free(e);
}

int edge__resolve_servers(struct edge_conf *c, struct cfg_errors *errs)
{
    int bad = 0;
    for (size_t i = 0; i < c->nbackends; i++) {
        struct edge_backend *b = &c->backends[i];
        for (size_t k = 0; !b->dns && k < b->nservers; k++) {
            struct edge_server *s = &b->servers[k];
            if (!s->named)
                continue;
            int r = net_resolve(s->name, &s->addr);
            if (r) {
                cfg_errors_add(errs, "backend %s: server %s: %s", b->name, s->name,
                               r == -ENOENT ? "the name does not resolve" : "not an address");
                bad = -ENOENT;
            }
        }
    }
    return bad;
}
