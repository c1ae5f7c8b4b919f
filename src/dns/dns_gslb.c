/* dns_gslb.c - GSLB names: members, their health checks, answer selection.
 *
 * A member is an address with a health check; every GSLB name (and every
 * configuration generation) that names the same address with the same check
 * shares one struct dns_member, and its check is a target of the service's
 * health checker (core/health.h), so each is checked once. Checks run on the
 * main loop; workers read a member's state with a relaxed atomic load. A member's
 * first check decides its state; after that it takes `fall` failures in a row to
 * go down and `rise` successes to come back.
 */
#include "dns_internal.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <maxminddb.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The member's check changed its verdict (core/health, on the main loop). */
static void member_changed(struct health_watch *w, int up, int was, const char *why)
{
    struct dns_member *m = w->data;
    __atomic_store_n(&m->up, up, __ATOMIC_RELAXED);
    m->changed_ms = (uint64_t)time(NULL) * 1000;
    /* every name's gauge for this member */
    struct dns_gen *g = m->s->gen;
    for (size_t i = 0; g && i < g->ngslb; i++)
        for (size_t p = 0; p < g->gslb[i].conf->npools; p++)
            for (size_t k = 0; k < g->gslb[i].conf->pools[p].nmembers; k++)
                if (g->gslb[i].pools[p].members[k] == m && g->gslb[i].pools[p].m_up[k])
                    metric_set(g->gslb[i].pools[p].m_up[k], up == 1 ? 1 : 0);
    if (up == HEALTH_UP)
        log_info(was < 0 ? "gslb member up (first check)" : "gslb member up", "member",
                 m->address, "check", why);
    else
        log_warn(was < 0 ? "gslb member down (first check)" : "gslb member down", "member",
                 m->address, "check", why);
}

static struct dns_member *member_get(struct dns_svc *s, const struct dns_gslb_conf *g,
                                     const struct dns_member_conf *mc)
{
    char key[512];
    const struct health_check_conf *h = &g->health;
    if (g->have_health)
        snprintf(key, sizeof(key), "%s|%d|%d|%u|%s|%s|%d-%d|%llu|%llu|%d|%d", mc->address, h->http,
                 h->tls, h->port, h->path ? h->path : "", h->host ? h->host : "", h->status_min,
                 h->status_max, (unsigned long long)h->interval_ms,
                 (unsigned long long)h->timeout_ms, h->rise, h->fall);
    else
        snprintf(key, sizeof(key), "%s|unchecked", mc->address);
    for (struct dns_member *m = s->members; m; m = m->next)
        if (strcmp(m->key, key) == 0) {
            m->refs++;
            return m;
        }
    struct dns_member *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    snprintf(m->key, sizeof(m->key), "%s", key);
    snprintf(m->address, sizeof(m->address), "%s", mc->address);
    m->family = mc->family;
    memcpy(m->ip, mc->ip, 16);
    m->s = s;
    m->refs = 1;
    m->up = 1;          /* no health check: always answered */
    if (g->have_health) {
        struct net_addr addr;
        net_ip_parse(m->address, h->port, &addr);
        m->watch.cb = member_changed;
        m->watch.data = m;
        /* the first verdict decides; the service waits for it before answering */
        if (health_watch_start(&s->health, &m->watch, &addr, m->address, h, false)) {
            free(m);
            return NULL;
        }
        m->checked = true;
        m->up = health_target_state(m->watch.target);
    }
    m->next = s->members;
    s->members = m;
    return m;
}

static void member_unref(struct dns_svc *s, struct dns_member *m)
{
    if (--m->refs > 0)
        return;
    health_watch_stop(&s->health, &m->watch);
    for (struct dns_member **pp = &s->members; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    free(m);
}

int dns__gslb_build(struct dns_svc *s, struct dns_gen *g, char *err, size_t errlen)
{
    const struct dns_conf *c = g->conf;
    g->ngslb = c->ngslb;
    g->gslb = calloc(c->ngslb ? c->ngslb : 1, sizeof(*g->gslb));
    if (!g->gslb) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < c->ngslb; i++) {
        const struct dns_gslb_conf *gc = &c->gslb[i];
        struct dns_gslb_rt *rt = &g->gslb[i];
        rt->conf = gc;
        /* the name must live in a zone we serve, above no delegation */
        struct dns_zone *z = NULL;
        for (size_t k = 0; k < g->nzones; k++)
            if (dns_name_under(gc->lname, gc->lnamelen, g->zones[k]->origin,
                               g->zones[k]->originlen) &&
                (!z || g->zones[k]->originlen > z->originlen))
                z = g->zones[k];
        if (!z) {
            snprintf(err, errlen, "gslb name %s is in none of the zones", gc->name);
            return -EINVAL;
        }
        struct dns_node *n = dns_zone_add_name(z, gc->lname, gc->lnamelen);
        if (!n) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        if (n->cut) {
            snprintf(err, errlen, "gslb name %s is below a delegation", gc->name);
            return -EINVAL;
        }
        if (dns_node_rrset(n, DNS_T_CNAME)) {
            snprintf(err, errlen, "gslb name %s also has a CNAME record in %s", gc->name,
                     z->origin_text);
            return -EINVAL;
        }
        n->gslb = (int)i;
        rt->pools = calloc(gc->npools, sizeof(*rt->pools));
        if (!rt->pools) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        for (size_t p = 0; p < gc->npools; p++) {
            const struct dns_pool_conf *pc = &gc->pools[p];
            struct dns_pool_rt *pr = &rt->pools[p];
            pr->conf = pc;
            pr->members = calloc(pc->nmembers ? pc->nmembers : 1, sizeof(*pr->members));
            pr->m_up = calloc(pc->nmembers ? pc->nmembers : 1, sizeof(*pr->m_up));
            if (!pr->members || !pr->m_up) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
            }
            for (size_t k = 0; k < pc->nmembers; k++) {
                pr->members[k] = member_get(s, gc, &pc->members[k]);
                if (!pr->members[k]) {
                    snprintf(err, errlen, "out of memory");
                    return -ENOMEM;
                }
                const char *lv[] = { gc->name, pc->region, pc->members[k].address };
                pr->m_up[k] = metrics_get(s->m_member_up, lv);
                int up = __atomic_load_n(&pr->members[k]->up, __ATOMIC_RELAXED);
                if (pr->m_up[k])
                    metric_set(pr->m_up[k], up == 1 ? 1 : 0);
            }
        }
    }
    return 0;
}

void dns__gslb_release(struct dns_svc *s, struct dns_gen *g)
{
    for (size_t i = 0; i < g->ngslb; i++) {
        struct dns_gslb_rt *rt = &g->gslb[i];
        if (!rt->pools)
            continue;
        for (size_t p = 0; p < rt->conf->npools; p++) {
            struct dns_pool_rt *pr = &rt->pools[p];
            for (size_t k = 0; pr->members && k < pr->conf->nmembers; k++)
                if (pr->members[k])
                    member_unref(s, pr->members[k]);
            free(pr->members);
            free(pr->m_up);
        }
        free(rt->pools);
    }
    free(g->gslb);
    g->gslb = NULL;
    g->ngslb = 0;
}

bool dns__health_settled(struct dns_svc *s)
{
    return health_checker_settled(&s->health);
}

void dns__health_stop_all(struct dns_svc *s)
{
    for (struct dns_member *m = s->members; m; m = m->next)
        health_watch_stop(&s->health, &m->watch);
}

/* ---- selection (worker threads) ---- */

static uint64_t rng_next(uint64_t *st)
{
    uint64_t x = *st ? *st : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *st = x;
    return x;
}

static bool usable(const struct dns_member *m, int family, bool all)
{
    return m->family == family && (all || __atomic_load_n(&m->up, __ATOMIC_RELAXED) == 1);
}

/* Adds up to max healthy members of a pool, starting at a rotating offset. */
static int take_pool(const struct dns_pool_rt *pr, int family, bool all, uint32_t rot,
                     struct dns_gslb_answer *out, int max)
{
    size_t n = pr->conf->nmembers;
    int got = 0;
    for (size_t i = 0; i < n && out->n < max; i++) {
        const struct dns_member *m = pr->members[(i + rot) % n];
        if (usable(m, family, all)) {
            memcpy(out->addr[out->n++], m->ip, family == AF_INET ? 4 : 16);
            got++;
        }
    }
    return got;
}

static bool pool_has(const struct dns_pool_rt *pr, int family, bool all)
{
    for (size_t i = 0; i < pr->conf->nmembers; i++)
        if (usable(pr->members[i], family, all))
            return true;
    return false;
}

static void pick(const struct dns_gslb_rt *rt, struct dns_worker *w, int family, bool all,
                 size_t start, struct dns_gslb_answer *out)
{
    const struct dns_gslb_conf *gc = rt->conf;
    uint32_t rot = w->rr++;
    if (gc->policy == DNS_POLICY_WEIGHTED) {
        /* weighted draws without replacement over every usable member */
        const struct dns_member *cand[256];
        unsigned wt[256];
        size_t nc = 0;
        uint64_t total = 0;
        for (size_t p = 0; p < gc->npools; p++)
            for (size_t k = 0; k < gc->pools[p].nmembers && nc < 256; k++) {
                const struct dns_member *m = rt->pools[p].members[k];
                if (usable(m, family, all) && gc->pools[p].members[k].weight > 0) {
                    cand[nc] = m;
                    wt[nc] = gc->pools[p].members[k].weight;
                    total += wt[nc++];
                }
            }
        while (out->n < gc->max_answers && total > 0) {
            uint64_t r = rng_next(&w->rng) % total, acc = 0;
            for (size_t i = 0; i < nc; i++) {
                if (!wt[i])
                    continue;
                acc += wt[i];
                if (r < acc) {
                    memcpy(out->addr[out->n++], cand[i]->ip, family == AF_INET ? 4 : 16);
                    total -= wt[i];
                    wt[i] = 0;
                    break;
                }
            }
        }
        return;
    }
    /* failover and nearest: the first region (from start, in file order, wrapping)
     * with a usable member */
    for (size_t i = 0; i < gc->npools; i++) {
        const struct dns_pool_rt *pr = &rt->pools[(start + i) % gc->npools];
        if (pool_has(pr, family, all)) {
            take_pool(pr, family, all, rot, out, gc->max_answers);
            return;
        }
    }
}

/* The client's country and continent from the MaxMind database ("" when unknown). */
static void geo_lookup(MMDB_s *db, const struct sockaddr *client, char country[3], char continent[3])
{
    country[0] = continent[0] = 0;
    int gerr = 0;
    MMDB_lookup_result_s res = MMDB_lookup_sockaddr(db, client, &gerr);
    if (gerr != MMDB_SUCCESS || !res.found_entry)
        return;
    MMDB_entry_data_s d;
    static const char *const cpaths[][3] = { { "country", "iso_code", NULL },
                                             { "registered_country", "iso_code", NULL } };
    for (size_t i = 0; i < 2 && !country[0]; i++)
        if (MMDB_aget_value(&res.entry, &d, cpaths[i]) == MMDB_SUCCESS && d.has_data &&
            d.type == MMDB_DATA_TYPE_UTF8_STRING && d.data_size == 2) {
            country[0] = (char)toupper((unsigned char)d.utf8_string[0]);
            country[1] = (char)toupper((unsigned char)d.utf8_string[1]);
            country[2] = 0;
        }
    static const char *const kpath[] = { "continent", "code", NULL };
    if (MMDB_aget_value(&res.entry, &d, kpath) == MMDB_SUCCESS && d.has_data &&
        d.type == MMDB_DATA_TYPE_UTF8_STRING && d.data_size == 2) {
        continent[0] = (char)toupper((unsigned char)d.utf8_string[0]);
        continent[1] = (char)toupper((unsigned char)d.utf8_string[1]);
        continent[2] = 0;
    }
}

static bool has_code(char (*codes)[3], size_t n, const char *code)
{
    for (size_t i = 0; code[0] && i < n; i++)
        if (!strcmp(codes[i], code))
            return true;
    return false;
}

void dns__gslb_select(void *arg, int idx, uint16_t qtype, const struct dns_query *q,
                      const struct sockaddr *peer, struct dns_gslb_answer *out)
{
    struct dns_worker *w = arg;
    const struct dns_gslb_rt *rt = &w->gen->gslb[idx];
    const struct dns_gslb_conf *gc = rt->conf;
    int family = qtype == DNS_T_A ? AF_INET : AF_INET6;
    out->ttl = gc->ttl;
    out->n = 0;
    size_t start = 0;
    if (gc->policy == DNS_POLICY_NEAREST) {
        struct sockaddr_storage ss;
        const struct sockaddr *client = peer;
        if (q->ecs && q->ecs_source > 0) {
            memset(&ss, 0, sizeof(ss));
            if (q->ecs_family == 1) {
                struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
                sin->sin_family = AF_INET;
                memcpy(&sin->sin_addr, q->ecs_addr, (size_t)(q->ecs_source + 7) / 8);
            } else {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
                sin6->sin6_family = AF_INET6;
                memcpy(&sin6->sin6_addr, q->ecs_addr, (size_t)(q->ecs_source + 7) / 8);
            }
            client = (const struct sockaddr *)&ss;
            out->scope = q->ecs_source;
        }
        for (size_t p = 0; p < gc->npools; p++) {
            const struct dns_pool_conf *pc = &gc->pools[p];
            bool hit = false;
            for (size_t k = 0; k < pc->nnetworks && !hit; k++)
                hit = net_cidr_match(&pc->networks[k], client);
            if (hit) {
                start = p;
                break;
            }
            if (p + 1 == gc->npools && w->gen->conf->geoip) {
                /* no network matched: the country's region, else the continent's */
                char country[3], continent[3];
                geo_lookup(w->gen->conf->geoip, client, country, continent);
                size_t k = 0;
                while (k < gc->npools &&
                       !has_code(gc->pools[k].countries, gc->pools[k].ncountries, country))
                    k++;
                if (k == gc->npools)
                    for (k = 0; k < gc->npools &&
                                !has_code(gc->pools[k].continents, gc->pools[k].ncontinents, continent);)
                        k++;
                start = k < gc->npools ? k : 0;
            }
        }
    }
    pick(rt, w, family, false, start, out);
    if (out->n)
        return;
    /* nothing healthy of this family: is anything healthy at all? */
    bool any_up = false;
    for (size_t p = 0; p < gc->npools && !any_up; p++)
        any_up = pool_has(&rt->pools[p], AF_INET, false) || pool_has(&rt->pools[p], AF_INET6, false);
    if (any_up)
        return;                         /* NODATA for this family */
    switch (gc->all_down) {
    case DNS_DOWN_ANSWER:
        pick(rt, w, family, true, start, out);
        break;
    case DNS_DOWN_NODATA:
        break;
    case DNS_DOWN_SERVFAIL:
        out->fail = 2;
        break;
    }
}

/* ---- the admin view ---- */

void dns__gslb_json(struct dns_svc *s, struct buf *b)
{
    static const char *const pol[] = { "failover", "weighted", "nearest" };
    static const char *const down[] = { "answer", "nodata", "servfail" };
    struct dns_gen *g = s->gen;
    buf_puts(b, "{\"names\":[");
    for (size_t i = 0; i < g->ngslb; i++) {
        const struct dns_gslb_rt *rt = &g->gslb[i];
        const struct dns_gslb_conf *gc = rt->conf;
        buf_printf(b, "%s{\"name\":", i ? "," : "");
        buf_json_str(b, gc->name);
        buf_printf(b, ",\"policy\":\"%s\",\"ttl\":%u,\"max_answers\":%d,\"when_all_down\":\"%s\","
                      "\"pools\":[",
                   pol[gc->policy], gc->ttl, gc->max_answers, down[gc->all_down]);
        for (size_t p = 0; p < gc->npools; p++) {
            buf_printf(b, "%s{\"region\":", p ? "," : "");
            buf_json_str(b, gc->pools[p].region);
            buf_puts(b, ",\"members\":[");
            for (size_t k = 0; k < gc->pools[p].nmembers; k++) {
                const struct dns_member *m = rt->pools[p].members[k];
                int up = __atomic_load_n(&m->up, __ATOMIC_RELAXED);
                buf_printf(b, "%s{\"address\":", k ? "," : "");
                buf_json_str(b, m->address);
                buf_printf(b, ",\"weight\":%u,\"state\":\"%s\",\"healthy\":%s,\"checked\":%s,"
                              "\"last_check\":",
                           gc->pools[p].members[k].weight,
                           up < 0 ? "unknown" : up ? "up" : "down", up == 1 ? "true" : "false",
                           m->checked ? "true" : "false");
                buf_json_str(b, !m->checked ? "no health check"
                                : m->watch.target ? health_target_last(m->watch.target) : "");
                buf_printf(b, ",\"last_change_unix_ms\":%llu}", (unsigned long long)m->changed_ms);
            }
            buf_puts(b, "]}");
        }
        buf_puts(b, "]}");
    }
    buf_puts(b, "]}\n");
}
