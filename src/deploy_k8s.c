/* deploy_k8s.c - `cairn deploy kubernetes -c STACK [-o DIR]`: the stack file as a
 * kustomize base, one pod per service.
 *
 *   DIR/kustomization.yaml   the resources, the stack as a generated ConfigMap
 *                            (cairn-stack), the image
 *   DIR/stack.yaml           the stack file as the pods read it (below)
 *   DIR/<file>               every file the stack names (zone files, prometheus.yml,
 *                            dashboards, ...), in the same ConfigMap
 *   DIR/<service>.yaml       per service: a Service with the role's ports; a
 *                            Deployment (stateless roles), a StatefulSet with a
 *                            PersistentVolumeClaim (roles with a store) or a
 *                            DaemonSet (the log agent, which reads node logs);
 *                            a PodDisruptionBudget; a NetworkPolicy
 *
 * The stack the pods read is the same stack with its addresses made for a
 * cluster: a service's own loopback listeners bind every address (0.0.0.0:P);
 * another service's loopback address (an edge's servers, a URL) becomes that
 * service's name (lb:8090, http://traces:4318/), which its Service makes
 * resolvable; `advertise: names` makes the references the roles derive
 * themselves (metrics' scrape jobs, the log agent's store, tracing, the console's
 * sources, backups of a store) use names too. data_dir is the volume at
 * /var/lib/cairn; files the stack names are in the ConfigMap next to stack.yaml
 * (/etc/cairn), named relative to it. What
 * cannot be carried over is refused with file:line:col: an address on loopback no
 * service of the stack listens on, a path outside the data directory that is not
 * a file to ship.
 */
#include "deploy_k8s.h"
#include "core/buf.h"
#include "core/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define DATA_MOUNT "/var/lib/cairn"
#define CONF_MOUNT "/etc/cairn"
#define MAX_FILES 64

struct shipped {                        /* a file of the ConfigMap */
    char *src;                          /* where it is read from */
    char key[254];                      /* its ConfigMap key (a file name) */
};

struct gen {
    const struct stack *st;
    struct cfg_errors *errs;
    char *data_rel;                     /* data_dir as written, relative, without a trailing '/' */
    struct shipped files[MAX_FILES];
    size_t nfiles;
    bool *discovers;                    /* per service: a metrics service given kubernetes_sd */
};

static int write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    bool ok = fwrite(p, 1, n, f) == n;
    ok &= fclose(f) == 0;
    return ok ? 0 : -EIO;
}

static const char *endpoint_port(const struct service *s, const char *what);

/* ---- the stack as the pods read it ---- */

static bool is_loopback_host(const char *h, size_t n)
{
    if ((n == 9 && !memcmp(h, "localhost", 9)) || (n == 5 && !memcmp(h, "[::1]", 5)) || (n == 3 && !memcmp(h, "::1", 3)))
        return true;
    char ip[64];
    if (n >= sizeof(ip))
        return false;
    memcpy(ip, h, n);
    ip[n] = 0;
    struct in_addr a;
    return inet_pton(AF_INET, ip, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* The service that binds host:port (a loopback literal), or NULL. */
static const struct service *owner(const struct gen *g, const char *host, size_t hn, const char *port)
{
    char text[300];
    const char *h = host;
    int hl = (int)hn;
    if ((hn == 9 && !memcmp(host, "localhost", 9)))
        h = "127.0.0.1", hl = 9;
    snprintf(text, sizeof(text), "%.*s:%s", hl, h, port);
    struct net_addr a;
    if (net_addr_parse(text, &a))
        return NULL;
    for (size_t i = 0; i < g->st->nservices; i++) {
        const struct service *s = &g->st->services[i];
        for (size_t k = 0; k < s->nbinds; k++)
            if (net_addr_eq(&s->binds[k], &a))
                return s;
    }
    return NULL;
}

/* The keys whose values name files or directories (the rest are left alone: a
 * rate limit's key: ip, a health check's path: /healthz). */
static bool is_path_key(const char *key, const char *parent)
{
    size_t n = strlen(key);
    const char *pa = parent ? parent : "";
    if (n >= 4 && !strcmp(key + n - 4, "file"))
        return true;                    /* file, password_file, key_file, ... */
    static const char *const keys[] = { "prometheus", "alertmanager", "promtail", "dashboards", "rule_files",
                                        "ca", "client_ca", NULL };
    for (int i = 0; keys[i]; i++)
        if (!strcmp(key, keys[i]))
            return true;
    if (!strcmp(key, "cert") || !strcmp(key, "key"))
        return !strcmp(pa, "certs") || !strcmp(pa, "tls");
    return (!strcmp(key, "path") && !strcmp(pa, "repository")) || (!strcmp(key, "disk") && !strcmp(pa, "cache"));
}

/* A ConfigMap key for a shipped file: its path with '/' as '_'. */
static const char *ship(struct gen *g, const char *src, const char *rel)
{
    for (size_t i = 0; i < g->nfiles; i++)
        if (!strcmp(g->files[i].src, src))
            return g->files[i].key;
    if (g->nfiles == MAX_FILES)
        return NULL;
    struct shipped *f = &g->files[g->nfiles];
    snprintf(f->key, sizeof(f->key), "%s", rel);
    for (char *p = f->key; *p; p++)
        if (*p == '/' || (*p == '.' && p[1] == '.'))
            *p = '_';
    if (!strcmp(f->key, "stack.yaml") || !strcmp(f->key, "kustomization.yaml"))
        snprintf(f->key, sizeof(f->key), "file-%s", rel);
    f->src = strdup(src);
    if (!f->src)
        return NULL;
    g->nfiles++;
    return f->key;
}

struct ctx {
    struct cfg *c;
    const char *file_dir;               /* relative paths of this document resolve here */
    const struct service *svc;          /* the service whose part this is, or NULL */
    const char *key, *parent;           /* the mapping key this value is under, and its parent's */
    char path[256];
};

/* The scalar as the pods should read it: NULL for unchanged, else malloc'd. */
static char *rewrite(struct gen *g, const struct ctx *x, const cfg_node *n, int *bad)
{
    const char *v = cfg_scalar(n);
    char *out = NULL;
    /* an address: host:port */
    struct net_addr a;
    if (net_addr_parse(v, &a) == 0) {
        const char *colon = strrchr(v, ':');
        if (!is_loopback_host(v, (size_t)(colon - v)))
            return NULL;
        const struct service *o = owner(g, v, (size_t)(colon - v), colon + 1);
        if (!o) {
            *bad = cfg_error(x->c, n, x->path, "no service of this stack listens on %s: in a cluster nothing "
                                              "answers there (name a service of the stack, or an address outside "
                                              "the cluster)", v);
            return NULL;
        }
        if (o == x->svc && (!x->key || strcmp(x->key, "endpoint")))
            return asprintf(&out, "%s:%s", a.ss.ss_family == AF_INET6 ? "[::]" : "0.0.0.0", colon + 1) < 0 ? NULL
                                                                                                           : out;
        return asprintf(&out, "%s:%s", o->name, colon + 1) < 0 ? NULL : out;
    }
    /* a URL: scheme://host:port/... */
    const char *sep = strstr(v, "://");
    if (sep && sep - v <= 8) {
        const char *host = sep + 3, *end = host + strcspn(host, "/?#");
        const char *colon = NULL;
        for (const char *p = host; p < end; p++)
            if (*p == ':')
                colon = p;
        if (host[0] == '[') {
            const char *rb = memchr(host, ']', (size_t)(end - host));
            colon = rb && rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
        }
        if (!colon || !is_loopback_host(host, (size_t)(colon - host)))
            return NULL;
        char port[8];
        snprintf(port, sizeof(port), "%.*s", (int)(end - colon - 1 < 7 ? end - colon - 1 : 7), colon + 1);
        const struct service *o = owner(g, host, (size_t)(colon - host), port);
        if (!o) {
            *bad = cfg_error(x->c, n, x->path, "no service of this stack listens on %.*s: in a cluster nothing "
                                              "answers there", (int)(end - host), host);
            return NULL;
        }
        return asprintf(&out, "%.*s%s:%s%s", (int)(host - v), v, o->name, port, end) < 0 ? NULL : out;
    }
    /* a path the stack names */
    if (!x->key || !is_path_key(x->key, x->parent) || !*v || strchr(v, '\n'))
        return NULL;
    if (!strncmp(v, "http://", 7) || !strncmp(v, "https://", 8))
        return NULL;
    const char *dd = g->st->data_dir;
    size_t ddl = strlen(dd);
    if (v[0] == '/' && !strncmp(v, dd, ddl) && (v[ddl] == '/' || !v[ddl]))
        return asprintf(&out, DATA_MOUNT "%s", v + ddl) < 0 ? NULL : out;
    size_t rl = strlen(g->data_rel);
    if (v[0] != '/' && rl && !strncmp(v, g->data_rel, rl) && (v[rl] == '/' || !v[rl]))
        return asprintf(&out, DATA_MOUNT "%s", v + rl) < 0 ? NULL : out;
    char src[4096];
    snprintf(src, sizeof(src), "%s%s%s", v[0] == '/' ? "" : x->file_dir, v[0] == '/' ? "" : "/", v);
    struct stat sb;
    if (stat(src, &sb) == 0 && S_ISREG(sb.st_mode)) {
        if (sb.st_size > 1 << 20) {
            *bad = cfg_error(x->c, n, x->path, "%s is larger than a ConfigMap can carry (1 MiB)", v);
            return NULL;
        }
        const char *key = ship(g, src, v[0] == '/' ? v + 1 : v);
        if (!key) {
            *bad = cfg_error(x->c, n, x->path, "more than %d files to ship", MAX_FILES);
            return NULL;
        }
        return strdup(key);                 /* next to stack.yaml, in the ConfigMap */
    }
    *bad = cfg_error(x->c, n, x->path, "%s is a path outside the data directory (%s) and not a file to ship: a "
                                      "pod has only its volume (%s) and the stack's files (" CONF_MOUNT ")",
                     v, g->data_rel[0] ? g->data_rel : dd, DATA_MOUNT);
    return NULL;
}

static void indent(struct buf *b, int n)
{
    for (int i = 0; i < n; i++)
        buf_putc(b, ' ');
}

static void scalar_out(struct buf *b, const char *v, bool quote)
{
    if (!quote && *v && !strpbrk(v, "#\n\"'") && v[0] != ' ' && v[strlen(v) - 1] != ' ')
        buf_puts(b, v);
    else
        buf_json_str(b, v);
}

static void emit(struct gen *g, struct ctx *x, const cfg_node *n, struct buf *b, int ind, int *bad, int depth);

static void emit_value(struct gen *g, struct ctx *x, const cfg_node *v, struct buf *b, int ind, int *bad, int depth)
{
    if (cfg_is_scalar(v)) {
        char *nv = rewrite(g, x, v, bad);
        buf_putc(b, ' ');
        scalar_out(b, nv ? nv : cfg_scalar(v), nv || v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE);
        buf_putc(b, '\n');
        free(nv);
    } else if (cfg_len(v) == 0) {
        buf_puts(b, cfg_is_map(v) ? " {}\n" : " []\n");
    } else {
        buf_putc(b, '\n');
        emit(g, x, v, b, ind, bad, depth + 1);
    }
}

static void emit(struct gen *g, struct ctx *x, const cfg_node *n, struct buf *b, int ind, int *bad, int depth)
{
    if (depth > CFG_MAX_DEPTH)
        return;
    struct ctx saved = *x;
    if (cfg_is_map(n)) {
        for (size_t i = 0; i < cfg_len(n); i++) {
            const cfg_node *k = cfg_map_key(x->c, n, i), *v = cfg_map_value(x->c, n, i);
            const char *ks = cfg_scalar(k) ? cfg_scalar(k) : "";
            indent(b, ind);
            scalar_out(b, ks, k->data.scalar.style != YAML_PLAIN_SCALAR_STYLE);
            buf_putc(b, ':');
            x->parent = saved.key;
            x->key = ks;
            cfg_pathf(x->path, sizeof(x->path), "%s%s%s", saved.path, saved.path[0] ? "." : "", ks);
            emit_value(g, x, v, b, ind + 2, bad, depth);
            *x = saved;
        }
    } else if (cfg_is_seq(n)) {
        for (size_t i = 0; i < cfg_len(n); i++) {
            const cfg_node *v = cfg_seq_item(x->c, n, i);
            cfg_pathf(x->path, sizeof(x->path), "%s[%zu]", saved.path, i);
            indent(b, ind);
            buf_putc(b, '-');
            emit_value(g, x, v, b, ind + 2, bad, depth);
            x->key = saved.key;
            x->parent = saved.parent;
        }
        *x = saved;
    }
}

static const cfg_node *map_get(struct cfg *c, const cfg_node *map, const char *key)
{
    for (size_t i = 0; cfg_is_map(map) && i < cfg_len(map); i++)
        if (!strcmp(cfg_scalar(cfg_map_key(c, map, i)) ? cfg_scalar(cfg_map_key(c, map, i)) : "", key))
            return cfg_map_value(c, map, i);
    return NULL;
}

/* A log agent without a promtail: key ships this stack's own log files on one
 * machine; in a cluster it runs on every node and ships the pods' logs (CRI's
 * format, under /var/log/pods/NAMESPACE_POD_UID/CONTAINER/N.log) to the stack's
 * logs service, labelled namespace, pod, container and service (the pod's name
 * without what its Deployment, StatefulSet or DaemonSet added: the stack's service,
 * so that {service="lb"} finds the same lines as on one machine). */
static void node_agent(struct gen *g, struct buf *b)
{
    const struct service *logs = NULL;
    for (size_t i = 0; i < g->st->nservices && !logs; i++)
        if (!strcmp(g->st->services[i].role->name, "logs"))
            logs = &g->st->services[i];
    const char *port = logs ? endpoint_port(logs, "http") : NULL;
    if (!port)
        return;
    buf_printf(b, "    promtail:\n"
                  "      positions: {filename: " DATA_MOUNT "/positions.yaml}\n"
                  "      clients:\n        - url: \"http://%s:%.*s/loki/api/v1/push\"\n"
                  "      scrape_configs:\n        - job_name: kubernetes-pods\n"
                  "          static_configs:\n            - targets: [localhost]\n"
                  "              labels: {job: kubernetes-pods, __path__: \"/var/log/pods/*/*/*.log\"}\n"
                  "          relabel_configs:\n"
                  "            - {source_labels: [__path__], regex: '.*/([^/_]+)_([^/_]+)_[^/]+/([^/]+)/[^/]*', "
                  "target_label: namespace, replacement: $1}\n"
                  "            - {source_labels: [__path__], regex: '.*/([^/_]+)_([^/_]+)_[^/]+/([^/]+)/[^/]*', "
                  "target_label: pod, replacement: $2}\n"
                  "            - {source_labels: [__path__], regex: '.*/([^/_]+)_([^/_]+)_[^/]+/([^/]+)/[^/]*', "
                  "target_label: container, replacement: $3}\n"
                  "            - {source_labels: [pod], regex: '(.+?)(?:-[a-z0-9]{6,10}-[a-z0-9]{5}|-[0-9]+|-[a-z0-9]{5})', "
                  "target_label: service, replacement: $1}\n"
                  "          pipeline_stages:\n"
                  "            - regex: {expression: '^(?P<time>\\S+) (?P<stream>stdout|stderr) [FP] (?P<content>.*)$'}\n"
                  "            - timestamp: {source: time, format: RFC3339Nano}\n"
                  "            - labels: {stream: \"\"}\n"
                  "            - output: {source: content}\n",
               logs->name, (int)strcspn(port, "/"), port);
}

/* A metrics service without prometheus: scrapes every service of its stack at the
 * address it listens on; in a cluster it discovers the stack's pods instead (their
 * prometheus.io annotations and the port named "metrics"), so that every replica
 * is scraped, with job = the service's name as on one machine. */
static void pod_discovery(struct gen *g, struct buf *b)
{
    buf_puts(b, "    prometheus:\n      global: {scrape_interval: 15s, evaluation_interval: 15s}\n");
    bool any = false;
    for (size_t i = 0; i < g->st->nservices; i++) {
        const struct service *s = &g->st->services[i];
        const char *port = strcmp(s->role->name, "alerts") ? NULL : endpoint_port(s, "http");
        if (!port)
            continue;
        if (!any)
            buf_puts(b, "      alerting:\n        alertmanagers:\n          - static_configs:\n"
                        "              - targets:\n");
        any = true;
        buf_printf(b, "                  - \"%s:%.*s\"\n", s->name, (int)strcspn(port, "/"), port);
    }
    buf_puts(b, "      scrape_configs:\n        - job_name: kubernetes-pods\n"
                "          kubernetes_sd_configs: [{role: pod, namespaces: {own_namespace: true}}]\n"
                "          relabel_configs:\n"
                "            - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, "
                "regex: \"true\"}\n"
                "            - {source_labels: [__meta_kubernetes_pod_container_port_name], action: keep, regex: metrics}\n"
                "            - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], regex: \"(.+)\", "
                "target_label: __metrics_path__}\n"
                "            - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name], target_label: job}\n"
                "            - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component], "
                "target_label: role}\n"
                "            - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}\n"
                "            - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}\n");
}

/* The stack file as the pods read it, into b. */
static int emit_stack(struct gen *g, struct cfg *c, struct buf *b)
{
    int bad = 0;
    const cfg_node *root = cfg_root(c);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", g->st->dir ? g->st->dir : ".");
    buf_printf(b, "# Generated by `cairn deploy kubernetes` from %s: the stack as its pods read it.\n"
                  "# Loopback listeners bind every address; other services are reached by name.\n",
               g->st->file);
    buf_puts(b, "advertise: names\ndata_dir: " DATA_MOUNT "\n");
    for (size_t i = 0; i < cfg_len(root); i++) {
        const cfg_node *k = cfg_map_key(c, root, i), *v = cfg_map_value(c, root, i);
        const char *ks = cfg_scalar(k);
        if (!strcmp(ks, "advertise") || !strcmp(ks, "data_dir"))
            continue;
        buf_printf(b, "%s:", ks);
        if (strcmp(ks, "services") || !cfg_is_map(v)) {
            struct ctx x = { .c = c, .file_dir = dir, .key = ks };
            snprintf(x.path, sizeof(x.path), "%s", ks);
            emit_value(g, &x, v, b, 2, &bad, 0);
            continue;
        }
        buf_putc(b, '\n');
        for (size_t s = 0; s < cfg_len(v); s++) {
            const char *name = cfg_scalar(cfg_map_key(c, v, s));
            struct ctx x = { .c = c, .file_dir = dir, .svc = stack_find(g->st, name) };
            snprintf(x.path, sizeof(x.path), "services.%s", name);
            buf_printf(b, "  %s:", name);
            const cfg_node *sv = cfg_map_value(c, v, s);
            emit_value(g, &x, sv, b, 4, &bad, 0);
            if (x.svc && (x.svc->role->deploy & ROLE_DEPLOY_PER_NODE) && !strcmp(x.svc->role->name, "log-agent") &&
                !map_get(c, sv, "promtail"))
                node_agent(g, b);
            if (x.svc && !strcmp(x.svc->role->name, "metrics") && !map_get(c, sv, "prometheus")) {
                pod_discovery(g, b);
                g->discovers[x.svc - g->st->services] = true;
            }
            /* a backup of another service's store reads that store's snapshot from the
             * other service's disk: pods do not share one */
            const cfg_node *jobs = x.svc && !strcmp(x.svc->role->name, "backup") ? map_get(c, sv, "jobs") : NULL;
            for (size_t j = 0; cfg_is_seq(jobs) && j < cfg_len(jobs); j++) {
                const cfg_node *src = map_get(c, cfg_seq_item(c, jobs, j), "service");
                if (cfg_is_scalar(src))
                    fprintf(stderr, "cairn deploy: warning: %s's job backs up service %s through a snapshot on "
                                    "%s's own volume, which the %s pod cannot read in a cluster (see "
                                    "docs/kubernetes.md)\n", name, cfg_scalar(src), cfg_scalar(src), name);
            }
        }
    }
    return bad;
}

/* Ships the YAML files the stack names with their own addresses and paths made for
 * the cluster as well (prometheus.yml's alertmanagers, a zone file is copied as is). */
static int ship_files(struct gen *g, const char *outdir, struct cfg_errors *errs)
{
    int bad = 0;
    for (size_t i = 0; i < g->nfiles; i++) {    /* g->nfiles may grow: files name files */
        const struct shipped *f = &g->files[i];
        char dst[4096];
        snprintf(dst, sizeof(dst), "%s/%s", outdir, f->key);
        size_t kl = strlen(f->key);
        bool yaml = (kl > 4 && !strcmp(f->key + kl - 4, ".yml")) || (kl > 5 && !strcmp(f->key + kl - 5, ".yaml"));
        struct buf b = BUF_INIT;
        if (yaml) {
            struct cfg c;
            memset(&c, 0, sizeof(c));
            if (cfg_load_file(&c, f->src, errs)) {
                bad = -EINVAL;
                continue;
            }
            char *tmp = strdup(f->src);
            struct ctx x = { .c = &c, .file_dir = tmp ? dirname(tmp) : "." };
            /* the service that named it: addresses of its own are its listeners */
            if (cfg_root(&c) && (cfg_is_map(cfg_root(&c)) || cfg_is_seq(cfg_root(&c))))
                emit(g, &x, cfg_root(&c), &b, 0, &bad, 0);
            free(tmp);
            cfg_free(&c);
        } else {
            char *text = NULL;
            size_t len = 0;
            if (cfg_read_file(f->src, &text, &len, errs)) {
                bad = -EINVAL;
                continue;
            }
            buf_append(&b, text, len);
            free(text);
        }
        if (write_file(dst, buf_head(&b), buf_used(&b)))
            bad = -EIO;
        buf_free(&b);
    }
    return bad;
}

/* ---- the objects ---- */

static const char *endpoint_port(const struct service *s, const char *what)
{
    for (size_t i = 0; i < s->nendpoints; i++)
        if (!strcmp(s->endpoints[i].what, what) && !strncmp(s->endpoints[i].url, "http://", 7)) {
            const char *colon = strrchr(s->endpoints[i].url + 7, ':');
            return colon ? colon + 1 : NULL;
        }
    return NULL;
}

static void labels(struct buf *b, int ind, const struct service *s)
{
    indent(b, ind);
    buf_printf(b, "app.kubernetes.io/name: %s\n", s->name);
    indent(b, ind);
    buf_printf(b, "app.kubernetes.io/component: %s\n", s->role->name);
    indent(b, ind);
    buf_puts(b, "app.kubernetes.io/part-of: cairn\n");
}

static bool is_public_port(const struct service *s, uint16_t port)
{
    if (!(s->role->deploy & ROLE_DEPLOY_PUBLIC))
        return false;
    for (size_t i = 0; i < s->nendpoints; i++) {
        const char *u = s->endpoints[i].url, *colon = strrchr(u, ':');
        if (strcmp(s->endpoints[i].what, "admin") && colon && atoi(colon + 1) == port)
            return true;
    }
    return false;
}

static void port_name(char *out, size_t n, uint16_t port, int type, const char *probe)
{
    if (type != SOCK_DGRAM && probe[0] && atoi(probe) == port)
        snprintf(out, n, "metrics");        /* what the metrics role keeps of a pod's ports */
    else
        snprintf(out, n, "%s-%u", type == SOCK_DGRAM ? "udp" : "tcp", port);
}

static void service_objects(const struct service *s, const char *image, bool discovers, struct buf *b)
{
    unsigned kind = s->role->deploy;
    bool store = kind & ROLE_DEPLOY_STORE, node = kind & ROLE_DEPLOY_PER_NODE;
    char probe[8] = "";
    const char *pp = endpoint_port(s, "admin");
    if (!pp)
        pp = endpoint_port(s, "http");
    if (pp)
        snprintf(probe, sizeof(probe), "%.*s", (int)strcspn(pp, "/"), pp);
    /* ports: each bound port once per protocol */
    struct { uint16_t port; int type; } ports[SERVICE_MAX_BINDS];
    size_t np = 0;
    for (size_t i = 0; i < s->nbinds; i++) {
        uint16_t p = net_addr_port(&s->binds[i]);
        bool seen = false;
        for (size_t k = 0; k < np; k++)
            seen |= ports[k].port == p && ports[k].type == s->bind_types[i];
        if (!seen) {
            ports[np].port = p;
            ports[np++].type = s->bind_types[i];
        }
    }
    buf_printf(b, "# %s (role %s)\n", s->name, s->role->name);
    /* the Service: the role's ports, by the service's name */
    buf_printf(b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  labels:\n", s->name);
    labels(b, 4, s);
    buf_puts(b, "spec:\n");
    if (store)
        buf_puts(b, "  publishNotReadyAddresses: false\n");
    buf_puts(b, "  selector:\n");
    buf_printf(b, "    app.kubernetes.io/name: %s\n  ports:\n", s->name);
    for (size_t i = 0; i < np; i++) {
        const char *proto = ports[i].type == SOCK_DGRAM ? "UDP" : "TCP";
        char pn[16];
        port_name(pn, sizeof(pn), ports[i].port, ports[i].type, probe);
        buf_printf(b, "    - name: %s\n      port: %u\n      targetPort: %u\n      protocol: %s\n", pn, ports[i].port,
                   ports[i].port, proto);
    }
    /* the workload */
    buf_printf(b, "---\napiVersion: apps/v1\nkind: %s\nmetadata:\n  name: %s\n  labels:\n",
               node ? "DaemonSet" : store ? "StatefulSet" : "Deployment", s->name);
    labels(b, 4, s);
    buf_puts(b, "spec:\n");
    if (store)
        buf_printf(b, "  serviceName: %s\n", s->name);
    if (!node)
        buf_puts(b, "  replicas: 1\n");
    buf_printf(b, "  selector:\n    matchLabels:\n      app.kubernetes.io/name: %s\n", s->name);
    buf_puts(b, "  template:\n    metadata:\n      labels:\n");
    labels(b, 8, s);
    if (probe[0])
        buf_printf(b, "      annotations:\n        prometheus.io/scrape: \"true\"\n        prometheus.io/port: \"%s\"\n"
                      "        prometheus.io/path: /metrics\n", probe);
    if (discovers)
        buf_printf(b, "    spec:\n      serviceAccountName: %s\n      automountServiceAccountToken: true\n"
                      "      enableServiceLinks: false\n", s->name);
    else
        buf_puts(b, "    spec:\n      automountServiceAccountToken: false\n      enableServiceLinks: false\n");
    buf_puts(b, "      terminationGracePeriodSeconds: 30\n      securityContext:\n");
    if (node)
        /* node logs are root's: the agent reads them as root, without any capability */
        buf_puts(b, "        runAsUser: 0\n        runAsGroup: 0\n");
    else
        buf_puts(b, "        runAsNonRoot: true\n        runAsUser: 10001\n        runAsGroup: 10001\n"
                    "        fsGroup: 10001\n");
    buf_puts(b, "        seccompProfile:\n          type: RuntimeDefault\n");
    buf_printf(b, "      containers:\n        - name: cairn\n          image: %s\n", image);
    buf_printf(b, "          args: [run, %s, -c, " CONF_MOUNT "/stack.yaml]\n", s->name);
    if (np) {
        buf_puts(b, "          ports:\n");
        for (size_t i = 0; i < np; i++) {
            char pn[16];
            port_name(pn, sizeof(pn), ports[i].port, ports[i].type, probe);
            buf_printf(b, "            - name: %s\n              containerPort: %u\n              protocol: %s\n", pn,
                       ports[i].port, ports[i].type == SOCK_DGRAM ? "UDP" : "TCP");
        }
    }
    if (probe[0])
        buf_printf(b, "          livenessProbe:\n            httpGet:\n              path: /-/healthy\n              port: %s\n"
                      "            periodSeconds: 10\n            failureThreshold: 3\n"
                      "          readinessProbe:\n            httpGet:\n              path: /-/ready\n              port: %s\n"
                      "            periodSeconds: 5\n            failureThreshold: 2\n",
                   probe, probe);
    buf_printf(b, "          resources:\n            requests:\n              cpu: 50m\n              memory: %s\n"
                  "            limits:\n              memory: %s\n",
               store ? "128Mi" : "32Mi", store ? "2Gi" : "512Mi");
    buf_puts(b, "          securityContext:\n            allowPrivilegeEscalation: false\n"
                "            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [ALL]\n");
    buf_puts(b, "          volumeMounts:\n            - name: stack\n              mountPath: " CONF_MOUNT "\n"
                "              readOnly: true\n            - name: data\n              mountPath: " DATA_MOUNT "\n"
                "            - name: tmp\n              mountPath: /tmp\n");
    if (node)
        buf_puts(b, "            - name: varlog\n              mountPath: /var/log\n              readOnly: true\n");
    buf_puts(b, "      volumes:\n        - name: stack\n          configMap:\n            name: cairn-stack\n"
                "        - name: tmp\n          emptyDir: {}\n");
    if (node)
        buf_printf(b, "        - name: data\n          hostPath:\n            path: /var/lib/cairn-%s\n"
                      "            type: DirectoryOrCreate\n        - name: varlog\n          hostPath:\n"
                      "            path: /var/log\n",
                   s->name);
    else if (!store)
        buf_puts(b, "        - name: data\n          emptyDir: {}\n");
    if (store)
        buf_puts(b, "  volumeClaimTemplates:\n    - metadata:\n        name: data\n      spec:\n"
                    "        accessModes: [ReadWriteOnce]\n        resources:\n          requests:\n"
                    "            storage: 10Gi\n");
    /* voluntary disruptions take one pod at a time */
    if (!node) {
        buf_printf(b, "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: %s\n  labels:\n",
                   s->name);
        labels(b, 4, s);
        buf_printf(b, "spec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: %s\n",
                   s->name);
    }
    /* a metrics service that discovers pods may list them, in its namespace only */
    if (discovers) {
        buf_printf(b, "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: %s\n  labels:\n", s->name);
        labels(b, 4, s);
        buf_printf(b, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: %s-discovery\n"
                      "  labels:\n", s->name);
        labels(b, 4, s);
        buf_puts(b, "rules:\n  - apiGroups: [\"\"]\n    resources: [pods, services, endpoints]\n"
                    "    verbs: [get, list, watch]\n");
        buf_printf(b, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n"
                      "  name: %s-discovery\n  labels:\n", s->name);
        labels(b, 4, s);
        buf_printf(b, "roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: %s-discovery\n"
                      "subjects:\n  - kind: ServiceAccount\n    name: %s\n    namespace: default\n",
                   s->name, s->name);
    }
    /* the private cluster: only what faces users is open to the outside */
    buf_printf(b, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: %s\n  labels:\n",
               s->name);
    labels(b, 4, s);
    buf_printf(b, "spec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: %s\n"
                  "  policyTypes: [Ingress]\n  ingress:\n", s->name);
    bool any_public = false;
    for (size_t i = 0; i < np; i++)
        any_public |= is_public_port(s, ports[i].port);
    if (any_public) {
        buf_puts(b, "    - ports:\n");
        for (size_t i = 0; i < np; i++)
            if (is_public_port(s, ports[i].port))
                buf_printf(b, "        - port: %u\n          protocol: %s\n", ports[i].port,
                           ports[i].type == SOCK_DGRAM ? "UDP" : "TCP");
    }
    buf_puts(b, "    - from:\n        - podSelector:\n            matchLabels:\n"
                "              app.kubernetes.io/part-of: cairn\n");
}

static int write_buf(const char *dir, const char *name, const struct buf *b)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int r = write_file(path, buf_head(b), buf_used(b));
    if (r)
        fprintf(stderr, "cairn deploy: cannot write %s: %s\n", path, cairn_strerror(r));
    return r;
}

int deploy_kubernetes(const char *config, const char *text, const char *outdir, const char *image,
                      const struct role_ops *const *roles)
{
    struct cfg_errors errs = { 0 };
    struct stack st;
    int rc = 2;
    if (stack_load(&st, config, text, roles, &errs)) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        fprintf(stderr, "%s: %zu error%s\n", config, errs.n, errs.n == 1 ? "" : "s");
        cfg_errors_free(&errs);
        stack_free(&st);
        return 2;
    }
    struct gen g = { .st = &st, .errs = &errs, .discovers = calloc(st.nservices + 1, sizeof(bool)) };
    struct cfg c;
    memset(&c, 0, sizeof(c));
    struct buf stackb = BUF_INIT, kust = BUF_INIT, objs = BUF_INIT;
    if (!g.discovers ||
        (text ? cfg_load_string(&c, config, text, strlen(text), &errs) : cfg_load_file(&c, config, &errs)))
        goto out;
    /* data_dir as written (relative to the stack file), to spot paths under it */
    const cfg_node *dd = NULL;
    for (size_t i = 0; i < cfg_len(cfg_root(&c)); i++)
        if (!strcmp(cfg_scalar(cfg_map_key(&c, cfg_root(&c), i)), "data_dir"))
            dd = cfg_map_value(&c, cfg_root(&c), i);
    g.data_rel = strdup(dd && cfg_scalar(dd) ? cfg_scalar(dd) : "cairn-data");
    if (!g.data_rel)
        goto out;
    while (strlen(g.data_rel) > 1 && g.data_rel[strlen(g.data_rel) - 1] == '/')
        g.data_rel[strlen(g.data_rel) - 1] = 0;
    int bad = emit_stack(&g, &c, &stackb);
    if (cairn_mkdir_p(outdir, 0755)) {
        fprintf(stderr, "cairn deploy: cannot create %s: %s\n", outdir, cairn_strerror(-errno));
        rc = 1;
        goto out;
    }
    if (!bad)
        bad = ship_files(&g, outdir, &errs);
    if (bad || errs.n) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        fprintf(stderr, "%s: %zu error%s: this stack cannot be deployed as it is\n", config, errs.n,
                errs.n == 1 ? "" : "s");
        goto out;
    }
    rc = 1;
    if (write_buf(outdir, "stack.yaml", &stackb))
        goto out;
    buf_printf(&kust, "# Generated by `cairn deploy kubernetes%s%s`: a kustomize base, one pod per service.\n"
                      "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
               text ? "" : " -c ", text ? "" : config);
    for (size_t i = 0; i < st.nservices; i++) {
        const struct service *s = &st.services[i];
        buf_reset(&objs);
        service_objects(s, image, g.discovers[i], &objs);
        char name[300];
        snprintf(name, sizeof(name), "%s.yaml", s->name);
        if (write_buf(outdir, name, &objs))
            goto out;
        buf_printf(&kust, "  - %s\n", name);
    }
    buf_puts(&kust, "configMapGenerator:\n  - name: cairn-stack\n    files:\n      - stack.yaml\n");
    for (size_t i = 0; i < g.nfiles; i++)
        buf_printf(&kust, "      - %s\n", g.files[i].key);
    if (write_buf(outdir, "kustomization.yaml", &kust))
        goto out;
    printf("%s: %zu services -> %s (kubectl apply -k %s)\n", config, st.nservices, outdir, outdir);
    rc = 0;
out:
    for (size_t i = 0; i < g.nfiles; i++)
        free(g.files[i].src);
    free(g.data_rel);
    free(g.discovers);
    buf_free(&stackb);
    buf_free(&kust);
    buf_free(&objs);
    cfg_free(&c);
    cfg_errors_free(&errs);
    stack_free(&st);
    return rc;
}
