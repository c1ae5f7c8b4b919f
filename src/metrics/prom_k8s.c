/* prom_k8s.c - kubernetes_sd_configs: targets from the Kubernetes API, as
 * Prometheus discovers them.
 *
 * Every 10 s each job with kubernetes_sd_configs lists the objects of its roles
 * from the API server (GET /api/v1/[namespaces/NS/]pods|services|endpoints, or
 * /api/v1/nodes; the role's label and field selectors; the bearer token read again
 * each time, as service-account tokens rotate), on the metrics loop through httpc.
 * The answers become target groups with Prometheus's __meta_kubernetes_* labels,
 * which the job's relabel_configs then shape (keep the pods annotated
 * prometheus.io/scrape, take the port from prometheus.io/port, ...). A refresh that
 * fails (the API server unreachable, 401, a bad answer) keeps the previous targets.
 * Prometheus watches the API instead of listing it: it sees a change at once, cairn
 * within 10 s.
 *
 *   pod:       one target per declared container port (PODIP:PORT), or per container
 *              without ports (PODIP): namespace, pod_name, pod_ip, pod_label_*,
 *              pod_labelpresent_*, pod_annotation_*, pod_annotationpresent_*,
 *              pod_container_name, _image, _init, _port_name, _port_number,
 *              _port_protocol, pod_ready, pod_phase, pod_node_name, pod_host_ip,
 *              pod_uid, pod_controller_kind, pod_controller_name
 *   service:   one per port (NAME.NS.svc:PORT): service_name, _label_*,
 *              _annotation_* (and _present_), _port_name, _port_number,
 *              _port_protocol, service_type, service_cluster_ip, service_external_name
 *   endpoints: one per address and port: endpoints_name, endpoints_label_*,
 *              endpoint_hostname, endpoint_node_name, endpoint_ready,
 *              endpoint_port_name, endpoint_port_protocol,
 *              endpoint_address_target_kind, _name; the service's labels; the
 *              pod's labels when the address is a pod's
 *   node:      one per node (ADDRESS:KUBELET_PORT): node_name, node_label_*,
 *              node_annotation_* (and _present_), node_address_<type>, node_provider_id
 */
#include "prom_internal.h"
#include "core/log.h"
#include "core/tls.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K8S_REFRESH_MS 10000
#define K8S_TIMEOUT_MS 10000
#define K8S_MAX_BODY (256u << 20)

enum { KIND_MAIN, KIND_SERVICES, KIND_PODS, NKINDS };

struct k8s_get {
    struct k8s_refresh *kr;
    size_t cfg;
    int kind;
    struct httpc_call *call;
};

struct k8s_refresh {
    struct prom_svc *ps;
    uint64_t gen;
    size_t job;
    size_t ncfgs;
    json_t **items;                     /* [cfg * NKINDS + kind]: arrays of objects */
    struct tls_ctx **tls;               /* per cfg */
    struct k8s_get **gets;
    size_t ngets, pending;
    bool failed;
    char err[300];
    struct k8s_refresh *next;
};

static void refresh_free(struct k8s_refresh *kr)
{
    for (size_t i = 0; i < kr->ncfgs * NKINDS; i++)
        json_decref(kr->items[i]);
    for (size_t i = 0; i < kr->ncfgs; i++)
        tls_ctx_free(&kr->tls[i]);
    for (size_t i = 0; i < kr->ngets; i++)
        free(kr->gets[i]);
    free(kr->gets);
    free(kr->items);
    free(kr->tls);
    free(kr);
}

static void unlink_refresh(struct k8s_refresh *kr)
{
    for (struct k8s_refresh **p = &kr->ps->k8s_active; *p; p = &(*p)->next)
        if (*p == kr) {
            *p = kr->next;
            return;
        }
}

void prom__k8s_free(struct prom_svc *ps)
{
    while (ps->k8s_active) {
        struct k8s_refresh *kr = ps->k8s_active;
        ps->k8s_active = kr->next;
        for (size_t i = 0; i < kr->ngets; i++)
            if (kr->gets[i]->call)
                httpc_cancel(kr->gets[i]->call);
        refresh_free(kr);
    }
    httpc_free(&ps->k8s_hc);
}

/* ---- labels ---- */

struct lset {
    struct tsdb_label *l;
    size_t n, cap;
    bool oom;
};

static void lput(struct lset *s, const char *name, const char *value)
{
    if (s->n + 1 >= s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        struct tsdb_label *l = realloc(s->l, cap * sizeof(*l));
        if (!l) {
            s->oom = true;
            return;
        }
        s->l = l;
        s->cap = cap;
    }
    char *n = strdup(name), *v = strdup(value ? value : "");
    if (!n || !v) {
        free(n);
        free(v);
        s->oom = true;
        return;
    }
    s->l[s->n].name = n;
    s->l[s->n++].value = v;
}

/* prefix + the key with every character a label name may not have made '_' */
static void lput_key(struct lset *s, const char *prefix, const char *key, const char *value)
{
    char name[320];
    int n = snprintf(name, sizeof(name), "%s%s", prefix, key);
    for (int i = (int)strlen(prefix); i < n && name[i]; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            name[i] = '_';
    }
    lput(s, name, value);
}

static void lcopy(struct lset *dst, const struct lset *src)
{
    for (size_t i = 0; i < src->n; i++)
        lput(dst, src->l[i].name, src->l[i].value);
}

static void lfree(struct lset *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free((void *)s->l[i].name);
        free((void *)s->l[i].value);
    }
    free(s->l);
    memset(s, 0, sizeof(*s));
}

static const char *jstr(const json_t *o, const char *path)
{
    /* "a.b.c" */
    char key[128];
    const json_t *cur = o;
    while (cur && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof(key))
            return NULL;
        memcpy(key, path, n);
        key[n] = 0;
        cur = json_object_get(cur, key);
        path += n + (path[n] == '.');
    }
    return json_is_string(cur) ? json_string_value(cur) : NULL;
}

static void put_map(struct lset *s, const json_t *map, const char *prefix, const char *present)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)map, k, v) {
        lput_key(s, prefix, k, json_is_string(v) ? json_string_value(v) : "");
        if (present)
            lput_key(s, present, k, "true");
    }
}

static void put_meta(struct lset *s, const json_t *obj, const char *what)
{
    const json_t *md = json_object_get(obj, "metadata");
    char p[96], q[96];
    snprintf(p, sizeof(p), "__meta_kubernetes_%s_label_", what);
    snprintf(q, sizeof(q), "__meta_kubernetes_%s_labelpresent_", what);
    put_map(s, json_object_get(md, "labels"), p, q);
    snprintf(p, sizeof(p), "__meta_kubernetes_%s_annotation_", what);
    snprintf(q, sizeof(q), "__meta_kubernetes_%s_annotationpresent_", what);
    put_map(s, json_object_get(md, "annotations"), p, q);
}

/* the groups being built: one target each */
struct out {
    struct prom_static *g;
    size_t n, cap;
    bool oom;
};

static void emit(struct out *o, const char *addr, struct lset *labels)
{
    if (labels->oom || o->oom) {
        o->oom = true;
        return;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        struct prom_static *g = realloc(o->g, cap * sizeof(*g));
        if (!g) {
            o->oom = true;
            return;
        }
        o->g = g;
        o->cap = cap;
    }
    struct prom_static *st = &o->g[o->n];
    memset(st, 0, sizeof(*st));
    st->targets = calloc(2, sizeof(char *));
    st->labels = calloc(labels->n + 1, sizeof(*st->labels));
    if (!st->targets || !st->labels || !(st->targets[0] = strdup(addr))) {
        prom__static_free(st);
        o->oom = true;
        return;
    }
    st->ntargets = 1;
    for (size_t i = 0; i < labels->n; i++) {
        st->labels[i].name = strdup(labels->l[i].name);
        st->labels[i].value = strdup(labels->l[i].value);
        st->nlabels++;
        if (!st->labels[i].name || !st->labels[i].value)
            o->oom = true;
    }
    o->n++;
}

static void hostport(char *out, size_t n, const char *host, long long port)
{
    bool v6 = strchr(host, ':') != NULL;
    if (port > 0)
        snprintf(out, n, v6 ? "[%s]:%lld" : "%s:%lld", host, port);
    else
        snprintf(out, n, "%s", host);
}

/* ---- roles ---- */

static void pod_common(struct lset *s, const json_t *pod)
{
    const json_t *md = json_object_get(pod, "metadata");
    lput(s, "__meta_kubernetes_namespace", jstr(md, "namespace"));
    lput(s, "__meta_kubernetes_pod_name", jstr(md, "name"));
    lput(s, "__meta_kubernetes_pod_ip", jstr(pod, "status.podIP"));
    put_meta(s, pod, "pod");
    const char *ready = "unknown";
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(pod, "status"), "conditions"), i, c)
        if (jstr(c, "type") && !strcmp(jstr(c, "type"), "Ready") && jstr(c, "status"))
            ready = !strcmp(jstr(c, "status"), "True") ? "true" : !strcmp(jstr(c, "status"), "False") ? "false"
                                                                                                     : "unknown";
    lput(s, "__meta_kubernetes_pod_ready", ready);
    lput(s, "__meta_kubernetes_pod_phase", jstr(pod, "status.phase"));
    lput(s, "__meta_kubernetes_pod_node_name", jstr(pod, "spec.nodeName"));
    lput(s, "__meta_kubernetes_pod_host_ip", jstr(pod, "status.hostIP"));
    lput(s, "__meta_kubernetes_pod_uid", jstr(md, "uid"));
    json_array_foreach(json_object_get(md, "ownerReferences"), i, c)
        if (json_is_true(json_object_get(c, "controller"))) {
            lput(s, "__meta_kubernetes_pod_controller_kind", jstr(c, "kind"));
            lput(s, "__meta_kubernetes_pod_controller_name", jstr(c, "name"));
        }
}

static void role_pods(struct out *o, const json_t *pods)
{
    size_t i;
    json_t *pod;
    json_array_foreach(pods, i, pod) {
        const char *ip = jstr(pod, "status.podIP");
        if (!ip || !*ip)
            continue;
        struct lset base = { 0 };
        pod_common(&base, pod);
        for (int init = 0; init < 2; init++) {
            size_t k;
            json_t *ctr;
            json_array_foreach(json_object_get(json_object_get(pod, "spec"), init ? "initContainers" : "containers"),
                               k, ctr) {
                struct lset s = { 0 };
                lcopy(&s, &base);
                lput(&s, "__meta_kubernetes_pod_container_name", jstr(ctr, "name"));
                lput(&s, "__meta_kubernetes_pod_container_image", jstr(ctr, "image"));
                lput(&s, "__meta_kubernetes_pod_container_init", init ? "true" : "false");
                const json_t *ports = json_object_get(ctr, "ports");
                char addr[300];
                if (!json_array_size(ports)) {
                    if (!init) {
                        hostport(addr, sizeof(addr), ip, 0);
                        emit(o, addr, &s);
                    }
                    lfree(&s);
                    continue;
                }
                size_t m;
                json_t *port;
                json_array_foreach(ports, m, port) {
                    struct lset t = { 0 };
                    lcopy(&t, &s);
                    long long pn = json_integer_value(json_object_get(port, "containerPort"));
                    char num[24];
                    snprintf(num, sizeof(num), "%lld", pn);
                    lput(&t, "__meta_kubernetes_pod_container_port_name", jstr(port, "name"));
                    lput(&t, "__meta_kubernetes_pod_container_port_number", num);
                    lput(&t, "__meta_kubernetes_pod_container_port_protocol",
                         jstr(port, "protocol") ? jstr(port, "protocol") : "TCP");
                    hostport(addr, sizeof(addr), ip, pn);
                    emit(o, addr, &t);
                    lfree(&t);
                }
                lfree(&s);
            }
        }
        lfree(&base);
    }
}

static void service_labels(struct lset *s, const json_t *svc)
{
    lput(s, "__meta_kubernetes_namespace", jstr(svc, "metadata.namespace"));
    lput(s, "__meta_kubernetes_service_name", jstr(svc, "metadata.name"));
    put_meta(s, svc, "service");
    const char *type = jstr(svc, "spec.type") ? jstr(svc, "spec.type") : "ClusterIP";
    lput(s, "__meta_kubernetes_service_type", type);
    if (!strcmp(type, "ExternalName"))
        lput(s, "__meta_kubernetes_service_external_name", jstr(svc, "spec.externalName"));
    else
        lput(s, "__meta_kubernetes_service_cluster_ip", jstr(svc, "spec.clusterIP"));
}

static void role_services(struct out *o, const json_t *svcs)
{
    size_t i;
    json_t *svc;
    json_array_foreach(svcs, i, svc) {
        struct lset base = { 0 };
        service_labels(&base, svc);
        size_t k;
        json_t *port;
        json_array_foreach(json_object_get(json_object_get(svc, "spec"), "ports"), k, port) {
            struct lset s = { 0 };
            lcopy(&s, &base);
            long long pn = json_integer_value(json_object_get(port, "port"));
            char num[24], addr[600];
            snprintf(num, sizeof(num), "%lld", pn);
            lput(&s, "__meta_kubernetes_service_port_name", jstr(port, "name"));
            lput(&s, "__meta_kubernetes_service_port_number", num);
            lput(&s, "__meta_kubernetes_service_port_protocol", jstr(port, "protocol") ? jstr(port, "protocol") : "TCP");
            snprintf(addr, sizeof(addr), "%s.%s.svc:%lld", jstr(svc, "metadata.name") ? jstr(svc, "metadata.name") : "",
                     jstr(svc, "metadata.namespace") ? jstr(svc, "metadata.namespace") : "", pn);
            emit(o, addr, &s);
            lfree(&s);
        }
        lfree(&base);
    }
}

static const json_t *find_named(const json_t *list, const char *ns, const char *name)
{
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) {
        const char *a = jstr(x, "metadata.namespace"), *b = jstr(x, "metadata.name");
        if (a && b && ns && name && !strcmp(a, ns) && !strcmp(b, name))
            return x;
    }
    return NULL;
}

static void role_endpoints(struct out *o, const json_t *eps, const json_t *svcs, const json_t *pods)
{
    size_t i;
    json_t *ep;
    json_array_foreach(eps, i, ep) {
        const char *ns = jstr(ep, "metadata.namespace"), *name = jstr(ep, "metadata.name");
        struct lset base = { 0 };
        lput(&base, "__meta_kubernetes_namespace", ns);
        lput(&base, "__meta_kubernetes_endpoints_name", name);
        put_meta(&base, ep, "endpoints");
        const json_t *svc = find_named(svcs, ns, name);
        if (svc) {
            struct lset sl = { 0 };
            service_labels(&sl, svc);
            for (size_t k = 1; k < sl.n; k++)         /* the namespace is there already */
                lput(&base, sl.l[k].name, sl.l[k].value);
            lfree(&sl);
        }
        size_t k;
        json_t *sub;
        json_array_foreach(json_object_get(ep, "subsets"), k, sub) {
            size_t m;
            json_t *port;
            json_array_foreach(json_object_get(sub, "ports"), m, port) {
                for (int ready = 1; ready >= 0; ready--) {
                    size_t a;
                    json_t *addr;
                    json_array_foreach(json_object_get(sub, ready ? "addresses" : "notReadyAddresses"), a, addr) {
                        struct lset s = { 0 };
                        lcopy(&s, &base);
                        lput(&s, "__meta_kubernetes_endpoint_ready", ready ? "true" : "false");
                        lput(&s, "__meta_kubernetes_endpoint_port_name", jstr(port, "name"));
                        lput(&s, "__meta_kubernetes_endpoint_port_protocol",
                             jstr(port, "protocol") ? jstr(port, "protocol") : "TCP");
                        if (jstr(addr, "hostname"))
                            lput(&s, "__meta_kubernetes_endpoint_hostname", jstr(addr, "hostname"));
                        if (jstr(addr, "nodeName"))
                            lput(&s, "__meta_kubernetes_endpoint_node_name", jstr(addr, "nodeName"));
                        const json_t *ref = json_object_get(addr, "targetRef");
                        if (ref) {
                            lput(&s, "__meta_kubernetes_endpoint_address_target_kind", jstr(ref, "kind"));
                            lput(&s, "__meta_kubernetes_endpoint_address_target_name", jstr(ref, "name"));
                            const json_t *pod = jstr(ref, "kind") && !strcmp(jstr(ref, "kind"), "Pod")
                                                    ? find_named(pods, jstr(ref, "namespace") ? jstr(ref, "namespace") : ns,
                                                                 jstr(ref, "name"))
                                                    : NULL;
                            if (pod) {
                                struct lset pl = { 0 };
                                pod_common(&pl, pod);
                                for (size_t x = 1; x < pl.n; x++)
                                    lput(&s, pl.l[x].name, pl.l[x].value);
                                lfree(&pl);
                            }
                        }
                        char hp[300];
                        hostport(hp, sizeof(hp), jstr(addr, "ip") ? jstr(addr, "ip") : "",
                                 json_integer_value(json_object_get(port, "port")));
                        emit(o, hp, &s);
                        lfree(&s);
                    }
                }
            }
        }
        lfree(&base);
    }
}

static void role_nodes(struct out *o, const json_t *nodes)
{
    size_t i;
    json_t *node;
    json_array_foreach(nodes, i, node) {
        struct lset s = { 0 };
        lput(&s, "__meta_kubernetes_node_name", jstr(node, "metadata.name"));
        put_meta(&s, node, "node");
        if (jstr(node, "spec.providerID"))
            lput(&s, "__meta_kubernetes_node_provider_id", jstr(node, "spec.providerID"));
        const char *best = NULL;
        static const char *const pref[] = { "InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "Hostname" };
        int rank = 99;
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(json_object_get(node, "status"), "addresses"), k, a) {
            const char *t = jstr(a, "type"), *v = jstr(a, "address");
            if (!t || !v)
                continue;
            lput_key(&s, "__meta_kubernetes_node_address_", t, v);
            for (int r = 0; r < 5; r++)
                if (!strcmp(t, pref[r]) && r < rank)
                    rank = r, best = v;
        }
        const json_t *kp = json_object_get(json_object_get(json_object_get(json_object_get(node, "status"),
                                                                            "daemonEndpoints"), "kubeletEndpoint"), "Port");
        if (best) {
            char hp[300];
            hostport(hp, sizeof(hp), best, json_is_integer(kp) ? json_integer_value(kp) : 10250);
            emit(o, hp, &s);
        }
        lfree(&s);
    }
}

/* The targets of one role from API answers as one document {"items": [...],
 * "services": [...], "pods": [...]} (the last two for the endpoints role): the
 * decoding the refresh does, for the fuzz harness and tests. */
int prom__k8s_targets(enum prom_k8s_role role, const char *text, size_t n, struct prom_static **out, size_t *nout)
{
    json_error_t je;
    json_t *doc = json_loadb(text, n, 0, &je);
    *out = NULL;
    *nout = 0;
    if (!doc)
        return -EINVAL;
    struct out o = { 0 };
    json_t *items = json_object_get(doc, "items");
    switch (role) {
    case K8S_POD: role_pods(&o, items); break;
    case K8S_SERVICE: role_services(&o, items); break;
    case K8S_ENDPOINTS: role_endpoints(&o, items, json_object_get(doc, "services"), json_object_get(doc, "pods")); break;
    case K8S_NODE: role_nodes(&o, items); break;
    }
    json_decref(doc);
    if (o.oom) {
        for (size_t i = 0; i < o.n; i++)
            prom__static_free(&o.g[i]);
        free(o.g);
        return -ENOMEM;
    }
    *out = o.g;
    *nout = o.n;
    return 0;
}

/* ---- the refresh ---- */

static bool same_groups(const struct prom_static *a, size_t na, const struct prom_static *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i].targets[0], b[i].targets[0]) || a[i].nlabels != b[i].nlabels)
            return false;
        for (size_t k = 0; k < a[i].nlabels; k++)
            if (strcmp(a[i].labels[k].name, b[i].labels[k].name) || strcmp(a[i].labels[k].value, b[i].labels[k].value))
                return false;
    }
    return true;
}

static void finish(struct k8s_refresh *kr)
{
    struct prom_svc *ps = kr->ps;
    unlink_refresh(kr);
    if (kr->gen != ps->sd_gen || kr->job >= ps->nsd) {
        refresh_free(kr);
        return;
    }
    struct prom_sd_job *sj = &ps->sd[kr->job];
    const struct prom_job *job = &ps->conf->jobs[kr->job];
    sj->k8s_running = false;
    metric_inc(ps->m_k8s_refreshes);
    if (kr->failed) {
        metric_inc(ps->m_k8s_failures);
        log_error("kubernetes_sd: listing failed, keeping the previous targets", "job", job->name, "error", kr->err);
        refresh_free(kr);
        return;
    }
    struct out o = { 0 };
    for (size_t c = 0; c < kr->ncfgs; c++) {
        json_t **it = &kr->items[c * NKINDS];
        switch (job->k8s_sd[c].role) {
        case K8S_POD: role_pods(&o, it[KIND_MAIN]); break;
        case K8S_SERVICE: role_services(&o, it[KIND_MAIN]); break;
        case K8S_ENDPOINTS: role_endpoints(&o, it[KIND_MAIN], it[KIND_SERVICES], it[KIND_PODS]); break;
        case K8S_NODE: role_nodes(&o, it[KIND_MAIN]); break;
        }
    }
    if (o.oom) {
        log_error("kubernetes_sd: out of memory, keeping the previous targets", "job", job->name);
    } else if (!same_groups(o.g, o.n, sj->k8s, sj->nk8s)) {
        for (size_t i = 0; i < sj->nk8s; i++)
            prom__static_free(&sj->k8s[i]);
        free(sj->k8s);
        sj->k8s = o.g;
        sj->nk8s = o.n;
        o.g = NULL;
        o.n = 0;
        prom__targets_rebuild(ps);
        log_info("kubernetes_sd: targets updated", "job", job->name, "targets", log_int((long long)sj->nk8s));
    }
    for (size_t i = 0; i < o.n; i++)
        prom__static_free(&o.g[i]);
    free(o.g);
    refresh_free(kr);
}

static void got(const struct httpc_response *resp, void *arg)
{
    struct k8s_get *g = arg;
    struct k8s_refresh *kr = g->kr;
    g->call = NULL;
    if (resp->error || resp->status != 200) {
        if (!kr->failed) {
            kr->failed = true;
            if (resp->error)
                snprintf(kr->err, sizeof(kr->err), "%s", cairn_strerror(resp->error));
            else
                snprintf(kr->err, sizeof(kr->err), "status %d: %.200s", resp->status, resp->body.p ? resp->body.p : "");
        }
    } else {
        json_error_t je;
        json_t *doc = json_loadb(resp->body.p, resp->body.n, 0, &je);
        json_t *items = json_object_get(doc, "items");
        if (!json_is_array(items) && !json_is_null(items) && !kr->failed) {
            kr->failed = true;
            snprintf(kr->err, sizeof(kr->err), "the answer is not a Kubernetes list%s%s", doc ? "" : ": ",
                     doc ? "" : je.text);
        } else if (json_is_array(items)) {
            json_array_extend(kr->items[g->cfg * NKINDS + g->kind], items);
        }
        json_decref(doc);
    }
    if (--kr->pending == 0)
        finish(kr);
}

static void urlenc(struct buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c))
            buf_putc(b, (char)c);
        else
            buf_printf(b, "%%%02X", c);
    }
}

/* One GET of a list; false when it could not start (kr->failed says why). */
static bool list(struct k8s_refresh *kr, size_t cfg, int kind, const struct stack_url *u, const char *auth,
                 const char *ns, const char *what, const struct prom_k8s_sd *k)
{
    struct buf t = BUF_INIT;
    const char *base = u->target && strcmp(u->target, "/") ? u->target : "";
    size_t bl = strlen(base);
    buf_printf(&t, "%.*s/api/v1/", (int)(bl && base[bl - 1] == '/' ? bl - 1 : bl), base);
    if (ns && strcmp(what, "nodes"))
        buf_printf(&t, "namespaces/%s/", ns);
    buf_puts(&t, what);
    char sep = '?';
    if (kind == KIND_MAIN && k->label_selector) {
        buf_puts(&t, "?labelSelector=");
        urlenc(&t, k->label_selector);
        sep = '&';
    }
    if (kind == KIND_MAIN && k->field_selector) {
        buf_printf(&t, "%cfieldSelector=", sep);
        urlenc(&t, k->field_selector);
    }
    buf_putc(&t, 0);
    struct k8s_get *g = calloc(1, sizeof(*g));
    struct k8s_get **gs = realloc(kr->gets, (kr->ngets + 1) * sizeof(*gs));
    if (!g || !gs || !t.data) {
        free(g);
        if (gs)
            kr->gets = gs;
        buf_free(&t);
        kr->failed = true;
        snprintf(kr->err, sizeof(kr->err), "out of memory");
        return false;
    }
    kr->gets = gs;
    kr->gets[kr->ngets++] = g;
    g->kr = kr;
    g->cfg = cfg;
    g->kind = kind;
    const char *hdrs[] = { "Accept: application/json", auth, NULL };
    char sni[256];                              /* the host without its port (or brackets) */
    snprintf(sni, sizeof(sni), "%s", u->host[0] == '[' ? u->host + 1 : u->host);
    char *cut = u->host[0] == '[' ? strchr(sni, ']') : strrchr(sni, ':');
    if (cut)
        *cut = 0;
    struct httpc_request req = { .method = "GET", .addr = u->addr, .host = u->host, .target = buf_head(&t),
                                 .headers = hdrs, .tls = u->tls, .tls_ctx = kr->tls[cfg], .sni = sni,
                                 .timeout_ms = K8S_TIMEOUT_MS };
    if (!auth[0])
        hdrs[1] = NULL;
    g->call = httpc_send(kr->ps->k8s_hc, &req, got, g);
    buf_free(&t);
    if (!g->call) {
        kr->failed = true;
        snprintf(kr->err, sizeof(kr->err), "out of memory");
        return false;
    }
    kr->pending++;
    return true;
}

static void start_job(struct prom_svc *ps, size_t j)
{
    const struct prom_job *job = &ps->conf->jobs[j];
    struct prom_sd_job *sj = &ps->sd[j];
    struct k8s_refresh *kr = calloc(1, sizeof(*kr));
    if (!kr)
        return;
    kr->ps = ps;
    kr->gen = ps->sd_gen;
    kr->job = j;
    kr->ncfgs = job->nk8s_sd;
    kr->items = calloc(kr->ncfgs * NKINDS, sizeof(*kr->items));
    kr->tls = calloc(kr->ncfgs, sizeof(*kr->tls));
    bool ok = kr->items && kr->tls;
    for (size_t i = 0; ok && i < kr->ncfgs * NKINDS; i++)
        ok = (kr->items[i] = json_array()) != NULL;
    if (!ok) {
        if (kr->items)
            for (size_t i = 0; i < kr->ncfgs * NKINDS; i++)
                json_decref(kr->items[i]);
        free(kr->items);
        free(kr->tls);
        free(kr);
        return;
    }
    kr->next = ps->k8s_active;
    ps->k8s_active = kr;
    sj->k8s_running = true;
    for (size_t c = 0; c < kr->ncfgs && !kr->failed; c++) {
        const struct prom_k8s_sd *k = &job->k8s_sd[c];
        struct stack_url u = { 0 };
        char err[256], incluster[300];
        const char *server = k->api_server;
        if (!server) {
            /* in a pod: the API server's Service */
            const char *h = getenv("KUBERNETES_SERVICE_HOST"), *pt = getenv("KUBERNETES_SERVICE_PORT");
            if (!h || !pt || strlen(h) > 200 || strlen(pt) > 8) {
                kr->failed = true;
                snprintf(kr->err, sizeof(kr->err), "no api_server, and not in a Kubernetes pod "
                                                   "(KUBERNETES_SERVICE_HOST is not set)");
                break;
            }
            snprintf(incluster, sizeof(incluster), strchr(h, ':') ? "https://[%s]:%s" : "https://%s:%s", h, pt);
            server = incluster;
        }
        if (stack_url_parse(server, &u, err, sizeof(err))) {
            kr->failed = true;
            snprintf(kr->err, sizeof(kr->err), "api_server: %s", err);
            break;
        }
        if (u.tls && tls_client_new(&kr->tls[c], !k->insecure, k->ca_file, NULL, 0, err, sizeof(err))) {
            kr->failed = true;
            snprintf(kr->err, sizeof(kr->err), "tls_config: %s", err);
            stack_url_free(&u);
            break;
        }
        char auth[4200] = "";
        if (k->token) {
            snprintf(auth, sizeof(auth), "Authorization: Bearer %s", k->token);
        } else if (k->token_file) {
            char *tok = NULL;
            size_t len = 0;
            struct cfg_errors e = { 0 };
            if (cfg_read_file(k->token_file, &tok, &len, &e) == 0) {
                tok[strcspn(tok, "\r\n")] = 0;
                if (strlen(tok) < 4000)
                    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
            } else if (!kr->failed) {
                kr->failed = true;
                snprintf(kr->err, sizeof(kr->err), "%s", e.n ? e.msgs[0] : "cannot read the token");
            }
            free(tok);
            cfg_errors_free(&e);
        }
        static const char *const what[] = { "pods", "services", "endpoints", "nodes" };
        char own[256] = "";
        if (k->own_namespace) {
            char *text = NULL;
            size_t len = 0;
            struct cfg_errors e = { 0 };
            if (cfg_read_file("/var/run/secrets/kubernetes.io/serviceaccount/namespace", &text, &len, &e) == 0) {
                snprintf(own, sizeof(own), "%.*s", (int)strcspn(text, "\r\n"), text);
            } else if (!kr->failed) {
                kr->failed = true;
                snprintf(kr->err, sizeof(kr->err), "own_namespace: %s", e.n ? e.msgs[0] : "not in a pod");
            }
            free(text);
            cfg_errors_free(&e);
        }
        size_t nlisted = k->nnamespaces + (own[0] ? 1 : 0);
        size_t nns = k->role == K8S_NODE || !nlisted ? 1 : nlisted;
        for (size_t n = 0; n < nns && !kr->failed; n++) {
            const char *ns = k->role == K8S_NODE || !nlisted ? NULL : n < k->nnamespaces ? k->namespaces[n] : own;
            list(kr, c, KIND_MAIN, &u, auth, ns, what[k->role], k);
            if (k->role == K8S_ENDPOINTS) {
                list(kr, c, KIND_SERVICES, &u, auth, ns, "services", k);
                list(kr, c, KIND_PODS, &u, auth, ns, "pods", k);
            }
        }
        stack_url_free(&u);
    }
    if (kr->pending == 0)                       /* nothing started: finish says why */
        finish(kr);
}

void prom__k8s_refresh(struct prom_svc *ps, bool force)
{
    const struct prom_conf *pc = ps->conf;
    uint64_t now = loop_now(&ps->loop);
    for (size_t j = 0; j < pc->njobs && j < ps->nsd; j++) {
        struct prom_sd_job *sj = &ps->sd[j];
        if (!pc->jobs[j].nk8s_sd || sj->k8s_running || (!force && now < sj->k8s_next_ms))
            continue;
        if (!ps->k8s_hc) {
            struct httpc_opts o;
            httpc_opts_defaults(&o);
            o.limits.max_body = K8S_MAX_BODY;
            if (!(ps->k8s_hc = httpc_new(&ps->loop, &o)))
                return;
        }
        sj->k8s_next_ms = now + K8S_REFRESH_MS;
        start_job(ps, j);
    }
}
