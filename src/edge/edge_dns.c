/* edge_dns.c - backends whose servers come from DNS (A/AAAA or SRV records).
 *
 * A resolver thread (libresolv, blocking, one query at a time) re-resolves each
 * DNS backend every `interval` and posts the answer to worker 0. When a
 * backend's set of servers changed, worker 0 builds a new configuration
 * generation from the same stack text with the new servers, exactly as a reload
 * does, so requests in flight and open connections are not disturbed. Health
 * state carries over for servers that stay. For SRV, only the records of the
 * lowest priority are used, with their weights (RFC 2782); targets are looked up
 * in the additional section, then queried.
 */
#include "edge_internal.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <errno.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdlib.h>

#define DNS_MAX_JOBS 64

struct dns_job {
    char backend[64];
    char name[256];
    bool srv;
    uint16_t port;
    uint64_t interval_ms;
    bool have_resolver;
    struct net_addr resolver;
    uint64_t next_ms;
};

struct dns_answer {
    struct edge *e;
    char backend[64];
    size_t n;
    struct net_addr addrs[EDGE_MAX_SERVERS];
    unsigned weights[EDGE_MAX_SERVERS];
};

struct edge_dns {
    struct edge *e;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop, started;
    struct dns_job jobs[DNS_MAX_JOBS];
    size_t njobs;
    /* last answers, by backend name (worker 0 only) */
    struct dns_answer *table[DNS_MAX_JOBS];
    size_t ntable;
};

/* ---- lookups (resolver thread, or worker 0 at start) ---- */

static int query(res_state rs, const char *name, int type, unsigned char *ans, int anslen, ns_msg *msg)
{
    int n = res_nquery(rs, name, ns_c_in, type, ans, anslen);
    if (n < 0 || ns_initparse(ans, n, msg) < 0)
        return -1;
    return 0;
}

static void add_addr(struct dns_answer *a, int family, const unsigned char *rd, uint16_t port, unsigned w)
{
    if (a->n == EDGE_MAX_SERVERS)
        return;
    struct net_addr *na = &a->addrs[a->n];
    memset(na, 0, sizeof(*na));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&na->ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        memcpy(&in->sin_addr, rd, 4);
        na->len = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&na->ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        memcpy(&in6->sin6_addr, rd, 16);
        na->len = sizeof(*in6);
    }
    a->weights[a->n++] = w ? w : 1;
}

/* Adds the A/AAAA records of name found in section sec of msg; returns how many. */
static size_t addrs_in(ns_msg *msg, ns_sect sec, const char *name, struct dns_answer *a, uint16_t port,
                       unsigned w)
{
    size_t found = 0;
    for (int i = 0; i < ns_msg_count(*msg, sec); i++) {
        ns_rr rr;
        if (ns_parserr(msg, sec, i, &rr) < 0)
            continue;
        if (name && strcasecmp(ns_rr_name(rr), name) != 0)
            continue;
        if (ns_rr_type(rr) == ns_t_a && ns_rr_rdlen(rr) == 4) {
            add_addr(a, AF_INET, ns_rr_rdata(rr), port, w);
            found++;
        } else if (ns_rr_type(rr) == ns_t_aaaa && ns_rr_rdlen(rr) == 16) {
            add_addr(a, AF_INET6, ns_rr_rdata(rr), port, w);
            found++;
        }
    }
    return found;
}

static void lookup_host(res_state rs, const char *name, struct dns_answer *a, uint16_t port, unsigned w)
{
    unsigned char ans[4096];
    ns_msg msg;
    if (query(rs, name, ns_t_a, ans, sizeof(ans), &msg) == 0)
        addrs_in(&msg, ns_s_an, NULL, a, port, w);
    if (query(rs, name, ns_t_aaaa, ans, sizeof(ans), &msg) == 0)
        addrs_in(&msg, ns_s_an, NULL, a, port, w);
}

/* Resolves a job; returns 0 with the answer (possibly empty), or -1 when the
 * lookup failed (the previous answer is kept then). */
static int resolve(const struct dns_job *j, struct dns_answer *a)
{
    struct __res_state rs;
    memset(&rs, 0, sizeof(rs));
    if (res_ninit(&rs) < 0)
        return -1;
    if (j->have_resolver) {
        rs.nscount = 1;
        memcpy(&rs.nsaddr_list[0], &j->resolver.ss, sizeof(struct sockaddr_in));
    }
    rs.retrans = 1;
    rs.retry = 2;
    a->n = 0;
    int ret = 0;
    if (!j->srv) {
        unsigned char ans[4096];
        ns_msg msg;
        bool any = false;
        if (query(&rs, j->name, ns_t_a, ans, sizeof(ans), &msg) == 0) {
            addrs_in(&msg, ns_s_an, NULL, a, j->port, 1);
            any = true;
        }
        if (query(&rs, j->name, ns_t_aaaa, ans, sizeof(ans), &msg) == 0) {
            addrs_in(&msg, ns_s_an, NULL, a, j->port, 1);
            any = true;
        }
        /* NXDOMAIN/NODATA are answers (no servers); a timeout is not */
        if (!any && (rs.res_h_errno == TRY_AGAIN || rs.res_h_errno == NETDB_INTERNAL))
            ret = -1;
    } else {
        unsigned char ans[8192];
        ns_msg msg;
        if (query(&rs, j->name, ns_t_srv, ans, sizeof(ans), &msg) < 0) {
            ret = (rs.res_h_errno == HOST_NOT_FOUND || rs.res_h_errno == NO_DATA) ? 0 : -1;
        } else {
            int best = 65536;
            for (int pass = 0; pass < 2; pass++) {
                for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
                    ns_rr rr;
                    if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 || ns_rr_type(rr) != ns_t_srv ||
                        ns_rr_rdlen(rr) < 7)
                        continue;
                    const unsigned char *rd = ns_rr_rdata(rr);
                    int prio = rd[0] << 8 | rd[1];
                    unsigned w = (unsigned)(rd[2] << 8 | rd[3]);
                    uint16_t port = (uint16_t)(rd[4] << 8 | rd[5]);
                    if (pass == 0) {
                        best = MIN(best, prio);
                        continue;
                    }
                    char target[NS_MAXDNAME];
                    if (prio != best || ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), rd + 6,
                                                           target, sizeof(target)) < 0)
                        continue;
                    if (strcmp(target, ".") == 0 || !target[0])
                        continue;   /* "service decidedly not available" */
                    unsigned wt = w ? MIN(w, 256u) : 1;
                    if (!addrs_in(&msg, ns_s_ar, target, a, port, wt))
                        lookup_host(&rs, target, a, port, wt);
                }
            }
        }
    }
    res_nclose(&rs);
    return ret;
}

/* ---- worker 0: applying answers ---- */

static struct dns_answer *table_find(struct edge_dns *d, const char *backend)
{
    for (size_t i = 0; i < d->ntable; i++)
        if (strcmp(d->table[i]->backend, backend) == 0)
            return d->table[i];
    return NULL;
}

static bool same_answer(const struct dns_answer *x, const struct dns_answer *y)
{
    if (x->n != y->n)
        return false;
    for (size_t i = 0; i < x->n; i++) {
        bool found = false;
        for (size_t k = 0; k < y->n && !found; k++)
            found = net_addr_eq(&x->addrs[i], &y->addrs[k]) && x->weights[i] == y->weights[k];
        if (!found)
            return false;
    }
    return true;
}

/* Puts the known answers into conf's DNS backends (before a generation is built
 * from it). */
void edge__dns_apply(struct edge *e, struct edge_conf *conf)
{
    struct edge_dns *d = e->dns;
    for (size_t b = 0; b < conf->nbackends; b++) {
        struct edge_backend *be = &conf->backends[b];
        if (!be->dns)
            continue;
        const struct dns_answer *a = d ? table_find(d, be->name) : NULL;
        be->nservers = 0;
        for (size_t i = 0; a && i < a->n; i++) {
            struct edge_server *s = &be->servers[be->nservers++];
            memset(s, 0, sizeof(*s));
            s->addr = a->addrs[i];
            s->weight = a->weights[i];
            s->backend = be;
            s->up = 1;
            net_addr_format(&s->addr, s->name, sizeof(s->name));
        }
        if (be->balance == BAL_HASH)
            edge__build_ring(be);
    }
}

static void answer_cb(void *arg)
{
    struct dns_answer *a = arg;
    struct edge *e = a->e;
    struct edge_dns *d = e->dns;
    if (!d || service_stopping(e->sc)) {
        free(a);
        return;
    }
    struct dns_answer *old = table_find(d, a->backend);
    if (old && same_answer(old, a)) {
        free(a);
        return;
    }
    if (old) {
        for (size_t i = 0; i < d->ntable; i++)
            if (d->table[i] == old)
                d->table[i] = a;
        free(old);
    } else if (d->ntable < DNS_MAX_JOBS) {
        d->table[d->ntable++] = a;
    } else {
        free(a);
        return;
    }
    log_info("backend servers changed in DNS", "backend", a->backend, "servers", log_int((long long)a->n));
    edge__regenerate(e, "dns");
}

/* ---- the resolver thread ---- */

static void *dns_thread(void *arg)
{
    struct edge_dns *d = arg;
    pthread_mutex_lock(&d->lock);
    while (!d->stop) {
        uint64_t now = cairn_now_ms(), next = now + 1000;
        for (size_t i = 0; i < d->njobs && !d->stop; i++) {
            struct dns_job *j = &d->jobs[i];
            if (j->next_ms > now) {
                next = MIN(next, j->next_ms);
                continue;
            }
            struct dns_job copy = *j;
            j->next_ms = now + j->interval_ms;
            next = MIN(next, j->next_ms);
            pthread_mutex_unlock(&d->lock);
            struct dns_answer *a = calloc(1, sizeof(*a));
            if (a && resolve(&copy, a) == 0) {
                a->e = d->e;
                snprintf(a->backend, sizeof(a->backend), "%s", copy.backend);
                if (loop_post(&d->e->workers[0].loop, answer_cb, a))
                    free(a);
            } else {
                if (a)
                    log_warn("DNS lookup failed, keeping the previous servers", "backend", copy.backend,
                             "name", copy.name);
                free(a);
            }
            pthread_mutex_lock(&d->lock);
            now = cairn_now_ms();
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t wait = next > now ? next - now : 0;
        ts.tv_sec += (time_t)(wait / 1000);
        ts.tv_nsec += (long)(wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (!d->stop && wait)
            pthread_cond_timedwait(&d->cond, &d->lock, &ts);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* Sets the jobs from conf (keeping the schedule of unchanged ones; new ones are
 * resolved at once when due_now, after one interval otherwise). */
static void set_jobs(struct edge_dns *d, const struct edge_conf *conf, bool due_now)
{
    struct dns_job jobs[DNS_MAX_JOBS];
    size_t n = 0;
    for (size_t b = 0; b < conf->nbackends && n < DNS_MAX_JOBS; b++) {
        const struct edge_backend *be = &conf->backends[b];
        if (!be->dns)
            continue;
        struct dns_job *j = &jobs[n++];
        memset(j, 0, sizeof(*j));
        snprintf(j->backend, sizeof(j->backend), "%s", be->name);
        snprintf(j->name, sizeof(j->name), "%s", be->dns_name);
        j->srv = be->dns_srv;
        j->port = be->dns_port;
        j->interval_ms = be->dns_interval_ms;
        j->have_resolver = be->dns_have_resolver;
        j->resolver = be->dns_resolver;
        j->next_ms = cairn_now_ms() + (due_now ? 0 : j->interval_ms);
    }
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < d->njobs; k++)
            if (strcmp(d->jobs[k].backend, jobs[i].backend) == 0 && strcmp(d->jobs[k].name, jobs[i].name) == 0)
                jobs[i].next_ms = d->jobs[k].next_ms;
    memcpy(d->jobs, jobs, n * sizeof(*jobs));
    d->njobs = n;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

static bool has_dns(const struct edge_conf *conf)
{
    for (size_t b = 0; b < conf->nbackends; b++)
        if (conf->backends[b].dns)
            return true;
    return false;
}

/* At start: resolves every DNS backend once (blocking) so that the first
 * generation has servers, and prepares the thread. */
int edge__dns_init(struct edge *e, struct edge_conf *conf)
{
    if (!has_dns(conf))
        return 0;
    struct edge_dns *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->e = e;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    e->dns = d;
    for (size_t b = 0; b < conf->nbackends; b++) {
        const struct edge_backend *be = &conf->backends[b];
        if (!be->dns || d->ntable == DNS_MAX_JOBS)
            continue;
        struct dns_job j = { 0 };
        snprintf(j.name, sizeof(j.name), "%s", be->dns_name);
        j.srv = be->dns_srv;
        j.port = be->dns_port;
        j.have_resolver = be->dns_have_resolver;
        j.resolver = be->dns_resolver;
        struct dns_answer *a = calloc(1, sizeof(*a));
        if (!a)
            return -ENOMEM;
        if (resolve(&j, a))
            log_warn("DNS lookup failed at start; the backend has no servers until it succeeds",
                     "backend", be->name, "name", be->dns_name);
        a->e = e;
        snprintf(a->backend, sizeof(a->backend), "%s", be->name);
        d->table[d->ntable++] = a;
        log_info("backend servers from DNS", "backend", be->name, "name", be->dns_name, "servers",
                 log_int((long long)a->n));
    }
    edge__dns_apply(e, conf);
    set_jobs(d, conf, false);
    return 0;
}

int edge__dns_start(struct edge *e)
{
    struct edge_dns *d = e->dns;
    if (!d)
        return 0;
    if (pthread_create(&d->thread, NULL, dns_thread, d))
        return -EAGAIN;
    d->started = true;
    return 0;
}

/* After a reload: the jobs follow the new configuration. A DNS backend that is new
 * is resolved at once by the thread (started now if this is the first); until its
 * answer arrives it has no servers (503), then a new generation takes them. */
void edge__dns_update(struct edge *e, const struct edge_conf *conf)
{
    if (!e->dns && has_dns(conf)) {
        struct edge_dns *d = calloc(1, sizeof(*d));
        if (!d) {
            log_error("out of memory: DNS backends added by the reload are not resolved");
            return;
        }
        d->e = e;
        pthread_mutex_init(&d->lock, NULL);
        pthread_cond_init(&d->cond, NULL);
        e->dns = d;
        set_jobs(d, conf, true);
        if (edge__dns_start(e))
            log_error("cannot start the DNS resolver thread");
        return;
    }
    if (e->dns)
        set_jobs(e->dns, conf, true);
}

void edge__dns_stop(struct edge *e)
{
    struct edge_dns *d = e->dns;
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->stop = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
    if (d->started)
        pthread_join(d->thread, NULL);
    for (size_t i = 0; i < d->ntable; i++)
        free(d->table[i]);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d);
    e->dns = NULL;
}
