/* stack.c - loading the stack file. */
#include "core/stack.h"

#include <errno.h>
#include <libgen.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ready_fd = -1;

void service_set_ready_fd(int fd)
{
    ready_fd = fd;
}

void service_notify_ready(void)
{
    if (ready_fd < 0)
        return;
    char one = 'R';
    ssize_t w;
    do {
        w = write(ready_fd, &one, 1);
    } while (w == -1 && errno == EINTR);
    close(ready_fd);
    ready_fd = -1;
}

/* Whether loading a stack looks host names up (`cairn check` and `cairn deploy` do
 * not: a cluster's names resolve only inside it). Process-wide, set once by the
 * command line before it loads anything. */
static bool lookups = true;

void stack_set_lookups(bool on)
{
    lookups = on;
}

void service_add_endpoint(struct service *svc, const char *what, const char *fmt, ...)
{
    if (svc->nendpoints == SERVICE_MAX_ENDPOINTS)
        return;
    struct service_endpoint *e = &svc->endpoints[svc->nendpoints++];
    snprintf(e->what, sizeof(e->what), "%s", what);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->url, sizeof(e->url), fmt, ap);
    va_end(ap);
    /* advertise: names: "scheme://0.0.0.0:port/..." -> "scheme://<name>:port/..." */
    char *host = strstr(e->url, "://");
    if (!svc->stack || !svc->stack->advertise_names || !host)
        return;
    host += 3;
    size_t hl = !strncmp(host, "0.0.0.0:", 8) ? 7 : !strncmp(host, "[::]:", 5) ? 4 : 0;
    if (!hl)
        return;
    char rest[sizeof(e->url)];
    snprintf(rest, sizeof(rest), "%s", host + hl);
    snprintf(host, sizeof(e->url) - (size_t)(host - e->url), "%s%s", svc->name, rest);
}

void service_add_bind(struct service *svc, const struct net_addr *a, int type)
{
    if (svc->nbinds == SERVICE_MAX_BINDS)
        return;
    svc->bind_types[svc->nbinds] = type;
    svc->binds[svc->nbinds++] = *a;
}

char *stack_path(const struct stack *st, const char *p)
{
    char *out = NULL;
    if (p[0] == '/' || !st->dir || strcmp(st->dir, ".") == 0)
        return strdup(p);
    if (asprintf(&out, "%s/%s", st->dir, p) < 0)
        return NULL;
    return out;
}

char *stack_data_path(const struct stack *st, const char *p)
{
    char *out = NULL;
    if (p[0] == '/')
        return strdup(p);
    if (asprintf(&out, "%s/%s", st->data_dir, p) < 0)
        return NULL;
    return out;
}

int stack_secret(struct cfg *c, const cfg_node *file, const cfg_node *env, const cfg_node *value,
                 const cfg_node *where, const char *path, const char *name, const struct stack *st,
                 char **out)
{
    char q[512];
    *out = NULL;
    if (!!file + !!env + !!value != 1)
        return cfg_error(c, where, path, "give exactly one of %s_file, %s_env, %s", name, name, name);
    if (file) {
        char *f = NULL, *full = NULL, *text = NULL;
        size_t len = 0;
        struct cfg_errors tmp = { 0 };
        snprintf(q, sizeof(q), "%s.%s_file", path, name);
        if (cfg_get_string(c, file, q, &f) == 0 && (full = stack_path(st, f)) &&
            cfg_read_file(full, &text, &len, &tmp) == 0) {
            while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
                text[--len] = 0;
            if (len)
                *out = text;
            else
                free(text);
        }
        if (!*out)
            cfg_error(c, file, q, "cannot read \"%s\", or it is empty", f ? f : "");
        cfg_errors_free(&tmp);
        free(f);
        free(full);
    } else if (env) {
        char *var = NULL;
        snprintf(q, sizeof(q), "%s.%s_env", path, name);
        if (cfg_get_string(c, env, q, &var) == 0) {
            const char *val = getenv(var);
            if (val && *val)
                *out = strdup(val);
            else
                cfg_error(c, env, q, "the environment variable %s is not set", var);
        }
        free(var);
    } else {
        snprintf(q, sizeof(q), "%s.%s", path, name);
        cfg_get_string(c, value, q, out);
    }
    return *out ? 0 : -EINVAL;
}

const struct service *stack_find(const struct stack *st, const char *name)
{
    for (size_t i = 0; i < st->nservices; i++)
        if (strcmp(st->services[i].name, name) == 0)
            return &st->services[i];
    return NULL;
}

/* Service names become process titles, log fields, DNS labels and Kubernetes
 * object names: lower-case letters, digits and '-', starting with a letter. */
static bool valid_service_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || !(s[0] >= 'a' && s[0] <= 'z') || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static void parse_log(struct cfg *c, const cfg_node *n, struct stack *st)
{
    static const char *const keys[] = { "level", "format", NULL };
    cfg_node *v[2];
    if (cfg_map_fields(c, n, "log", keys, v))
        return;
    if (v[0]) {
        if (!cfg_is_scalar(v[0]) || log_level_parse(cfg_scalar(v[0]), &st->log_level))
            cfg_error(c, v[0], "log.level", "expected one of debug, info, warn, error, got \"%s\"",
                      cfg_scalar(v[0]) ? cfg_scalar(v[0]) : "?");
    }
    if (v[1]) {
        if (!cfg_is_scalar(v[1]) || log_format_parse(cfg_scalar(v[1]), &st->log_format))
            cfg_error(c, v[1], "log.format", "expected logfmt or json, got \"%s\"",
                      cfg_scalar(v[1]) ? cfg_scalar(v[1]) : "?");
    }
}

static const struct role_ops *find_role(const struct role_ops *const *roles, const char *name)
{
    for (size_t i = 0; roles[i]; i++)
        if (strcmp(roles[i]->name, name) == 0)
            return roles[i];
    return NULL;
}

static void parse_services(struct cfg *c, const cfg_node *n, struct stack *st,
                           const struct role_ops *const *roles, const char *only)
{
    if (!cfg_is_map(n)) {
        cfg_error(c, n, "services", "expected a mapping of service names to services");
        return;
    }
    size_t count = cfg_len(n);
    if (count == 0) {
        cfg_error(c, n, "services", "at least one service is needed");
        return;
    }
    st->services = calloc(count, sizeof(*st->services));
    if (!st->services) {
        cfg_error(c, n, "services", "out of memory");
        return;
    }
    for (size_t i = 0; i < count; i++) {
        cfg_node *k = cfg_map_key(c, n, i), *v = cfg_map_value(c, n, i);
        const char *name = cfg_scalar(k);
        char path[128];
        snprintf(path, sizeof(path), "services.%s", name);
        if (!valid_service_name(name)) {
            cfg_error(c, k, path, "service names are lower-case letters, digits and '-', "
                                  "starting with a letter, at most 63 characters");
            continue;
        }
        if (stack_find(st, name)) {
            cfg_error(c, k, path, "duplicate service name");
            continue;
        }
        if (!cfg_is_map(v)) {
            cfg_error(c, v, path, "expected a mapping with at least a \"role\" key");
            continue;
        }
        cfg_node *rn = NULL;
        for (size_t j = 0; j < cfg_len(v); j++)
            if (strcmp(cfg_scalar(cfg_map_key(c, v, j)), "role") == 0)
                rn = cfg_map_value(c, v, j);
        char rpath[160];
        snprintf(rpath, sizeof(rpath), "%s.role", path);
        if (!rn) {
            cfg_error(c, v, path, "missing key \"role\"");
            continue;
        }
        if (only && strcmp(name, only) != 0)
            continue;
        const struct role_ops *role = cfg_is_scalar(rn) ? find_role(roles, cfg_scalar(rn)) : NULL;
        if (!role) {
            char list[256] = "";
            size_t o = 0;
            for (size_t j = 0; roles[j] && o < sizeof(list) - 1; j++)
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", j ? ", " : "",
                                      roles[j]->name);
            cfg_error(c, rn, rpath, "unknown role \"%s\" (this build has: %s)",
                      cfg_scalar(rn) ? cfg_scalar(rn) : "?", list);
            continue;
        }
        struct service *svc = &st->services[st->nservices];
        svc->name = strdup(name);
        svc->role = role;
        svc->stack = st;
        if (!svc->name) {
            cfg_error(c, k, path, "out of memory");
            continue;
        }
        st->nservices++;
        if (role->parse(c, v, path, svc)) {
            /* errors recorded; keep the service so names stay unique */
        }
    }
}

/* Two services (or one, twice) must not bind the same address and protocol. */
static void check_binds(struct cfg *c, struct stack *st)
{
    for (size_t i = 0; i < st->nservices; i++) {
        const struct service *a = &st->services[i];
        for (size_t x = 0; x < a->nbinds; x++) {
            for (size_t j = i; j < st->nservices; j++) {
                const struct service *b = &st->services[j];
                for (size_t y = (j == i ? x + 1 : 0); y < b->nbinds; y++) {
                    if (a->bind_types[x] == b->bind_types[y] && net_addr_eq(&a->binds[x], &b->binds[y])) {
                        char s[NET_ADDRSTRLEN];
                        net_addr_format(&a->binds[x], s, sizeof(s));
                        cfg_errors_add(c->errs, "%s: address %s is used twice: by service %s and by service %s",
                                       c->file, s, a->name, b->name);
                    }
                }
            }
        }
    }
}

static int load(struct stack *st, const char *path, const char *text,
                const struct role_ops *const *roles, const char *only, struct cfg_errors *errs)
{
    struct cfg c;
    memset(st, 0, sizeof(*st));
    st->log_level = LOG_INFO;
    st->log_format = LOG_LOGFMT;
    size_t before = errs->n;
    int r;
    if (!text) {
        size_t n;
        char *owned = NULL;
        r = cfg_read_file(path, &owned, &n, errs);
        if (r) {
            memset(&c, 0, sizeof(c));
        } else {
            st->source = owned;
            text = owned;
        }
    }
    r = text ? cfg_load_string(&c, path, text, strlen(text), errs) : -EINVAL;
    st->file = strdup(path);
    st->text = text;
    if (path[0] == '<') {
        st->dir = strdup(".");
    } else {
        char *tmp = strdup(path);
        st->dir = tmp ? strdup(dirname(tmp)) : NULL;
        free(tmp);
    }
    if (r) {
        cfg_free(&c);
        return -EINVAL;
    }
    static const char *const keys[] = { "data_dir", "log", "services", "advertise", NULL };
    cfg_node *v[4];
    cfg_node *root = cfg_root(&c);
    if (cfg_map_fields(&c, root, "", keys, v) == 0) {
        if (v[3]) {
            const char *a = cfg_scalar(v[3]);
            if (a && !strcmp(a, "names"))
                st->advertise_names = true;
            else if (!a || strcmp(a, "addresses"))
                cfg_error(&c, v[3], "advertise", "expected addresses (the default) or names");
        }
        char *dd = NULL;
        if (v[0])
            cfg_get_string(&c, v[0], "data_dir", &dd);
        st->data_dir = stack_path(st, dd ? dd : "cairn-data");
        free(dd);
        if (v[1])
            parse_log(&c, v[1], st);
        if (v[2])
            parse_services(&c, v[2], st, roles, only);
        else
            cfg_error(&c, root, "services", "missing key \"services\"");
        check_binds(&c, st);
        if (only && !stack_find(st, only) && errs->n == before)
            cfg_errors_add(errs, "%s: no service named %s any more", path, only);
    }
    cfg_free(&c);
    return errs->n > before ? -EINVAL : 0;
}

int stack_load(struct stack *st, const char *path, const char *text,
               const struct role_ops *const *roles, struct cfg_errors *errs)
{
    return load(st, path, text, roles, NULL, errs);
}

int stack_load_one(struct stack *st, const char *path, const char *text, const char *name,
                   const struct role_ops *role, struct cfg_errors *errs)
{
    const struct role_ops *roles[] = { role, NULL };
    return load(st, path, text, roles, name, errs);
}

void stack_free(struct stack *st)
{
    for (size_t i = 0; i < st->nservices; i++) {
        struct service *s = &st->services[i];
        if (s->conf && s->role->free_conf)
            s->role->free_conf(s->conf);
        free(s->name);
    }
    free(st->services);
    free(st->file);
    free(st->dir);
    free(st->data_dir);
    free(st->source);
    memset(st, 0, sizeof(*st));
}

void stack_move(struct stack *dst, struct stack *src)
{
    *dst = *src;
    for (size_t i = 0; i < dst->nservices; i++)
        dst->services[i].stack = dst;
    memset(src, 0, sizeof(*src));
}

int service_listen_addrs(struct cfg *c, const cfg_node *map, const cfg_node *n, const char *path,
                         struct service *svc, struct net_addr *out, size_t max, size_t *count,
                         const char *what, const char *scheme, const char *like, bool udp)
{
    if (!n)
        return cfg_error(c, map, path, "missing key \"listen\" (a list of addresses)");
    char **list;
    size_t k;
    if (cfg_get_string_list(c, n, path, &list, &k))
        return -EINVAL;
    int bad = 0;
    if (k == 0 || k > max)
        bad = cfg_error(c, n, path, "expected 1 to %zu addresses", max);
    for (size_t i = 0; i < k && i < max; i++) {
        struct net_addr *a = &out[*count];
        if (net_addr_parse(list[i], a)) {
            bad = cfg_error(c, n, path, "expected addresses like %s, got \"%s\"", like, list[i]);
            continue;
        }
        char s[NET_ADDRSTRLEN];
        net_addr_format(a, s, sizeof(s));
        service_add_endpoint(svc, what, "%s://%s%s", scheme, s, strcmp(scheme, "http") ? "" : "/");
        if (udp)
            service_add_bind(svc, a, SOCK_DGRAM);
        service_add_bind(svc, a, SOCK_STREAM);
        (*count)++;
    }
    cfg_free_string_list(list, k);
    return bad;
}

int stack_native_config(struct cfg *c, const cfg_node *n, const char *path, const struct service *svc,
                        const char *doc, const char *default_text, stack_native_parse parse, void *arg,
                        char **text)
{
    size_t before = c->errs->n;
    int bad = 0;
    *text = NULL;
    if (n && cfg_is_scalar(n) && !cfg_is_null(n)) {
        char *rel = NULL;
        cfg_get_string(c, n, path, &rel);
        char *file = rel ? stack_path(svc->stack, rel) : NULL;
        free(rel);
        struct cfg fc;
        memset(&fc, 0, sizeof(fc));
        if (file && cfg_load_file(&fc, file, c->errs) == 0) {
            char dir[4096];
            snprintf(dir, sizeof(dir), "%s", file);
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = 0;
            else
                snprintf(dir, sizeof(dir), ".");
            bad |= parse(&fc, cfg_root(&fc), doc, dir, arg);
            size_t len;
            struct cfg_errors tmp = { 0 };
            if (cfg_read_file(file, text, &len, &tmp))
                *text = NULL;
            cfg_errors_free(&tmp);
        } else {
            bad = -EINVAL;
        }
        if (file)
            cfg_free(&fc);
        free(file);
    } else if (n || default_text) {
        char *dir = stack_path(svc->stack, ".");
        if (n) {
            bad |= parse(c, n, path, dir ? dir : ".", arg);
        } else {
            struct cfg dc;
            memset(&dc, 0, sizeof(dc));
            char name[128];
            snprintf(name, sizeof(name), "<default %s config>", doc);
            if (cfg_load_string(&dc, name, default_text, strlen(default_text), c->errs) == 0)
                bad |= parse(&dc, cfg_root(&dc), doc, dir ? dir : ".", arg);
            else
                bad = -EINVAL;
            cfg_free(&dc);
        }
        free(dir);
    } else {
        return 1;
    }
    return bad || c->errs->n > before ? -EINVAL : 0;
}

int stack_url_parse(const char *text, struct stack_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    const char *p;
    if (strncmp(text, "http://", 7) == 0) {
        p = text + 7;
    } else if (strncmp(text, "https://", 8) == 0) {
        p = text + 8;
        u->tls = true;
    } else {
        snprintf(err, errlen, "unsupported scheme in URL \"%s\" (http or https)", text);
        return -EINVAL;
    }
    const char *slash = strchr(p, '/');
    const char *q = strchr(p, '?');
    const char *end = slash && (!q || slash < q) ? slash : q ? q : p + strlen(p);
    size_t hl = (size_t)(end - p);
    if (hl == 0 || hl >= sizeof(u->host) || memchr(p, '@', hl)) {
        snprintf(err, errlen, "invalid host in URL \"%s\"", text);
        return -EINVAL;
    }
    memcpy(u->host, p, hl);
    u->host[hl] = 0;
    char host[256];
    const char *port = u->tls ? "443" : "80";
    snprintf(host, sizeof(host), "%s", u->host);
    char *colon = host[0] == '[' ? strchr(host, ']') : strrchr(host, ':');
    if (host[0] == '[') {
        if (!colon) {
            snprintf(err, errlen, "invalid host in URL \"%s\"", text);
            return -EINVAL;
        }
        *colon = 0;
        if (colon[1] == ':')
            port = colon + 2;
        memmove(host, host + 1, strlen(host));
    } else if (colon) {
        *colon = 0;
        port = colon + 1;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int r = getaddrinfo(host, port, &hints, &res);
    if ((r || !res) && (lookups || net_ip_parse(host, 1, &u->addr) == 0)) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", host, gai_strerror(r));
        return -EINVAL;
    }
    if (res) {
        memcpy(&u->addr.ss, res->ai_addr, res->ai_addrlen);
        u->addr.len = res->ai_addrlen;
        freeaddrinfo(res);
    } else {
        memset(&u->addr, 0, sizeof(u->addr));  /* checking a file: the name is the service's to resolve */
    }
    u->text = strdup(text);
    if (*end == '/') {
        u->target = strdup(end);
    } else {
        size_t n2 = strlen(end) + 2;
        if ((u->target = malloc(n2)))
            snprintf(u->target, n2, "/%s", end);
    }
    if (!u->text || !u->target) {
        stack_url_free(u);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int stack_url(struct cfg *c, const cfg_node *n, const char *path, struct stack_url *u)
{
    char *s = NULL;
    if (cfg_get_string(c, n, path, &s))
        return -EINVAL;
    char err[400];
    int r = stack_url_parse(s, u, err, sizeof(err));
    free(s);
    return r ? cfg_error(c, n, path, "%s", err) : 0;
}

void stack_url_free(struct stack_url *u)
{
    free(u->text);
    free(u->target);
    u->text = u->target = NULL;
}
