/* stack.h - the stack file: services, each with a role, loaded and validated.
 *
 * The core knows no role. The command line hands stack_load() a table of role
 * operations; the loader reads the common top-level keys (data_dir, log,
 * services), and each service's mapping is given to its role's parse function,
 * which fills a role-specific structure with the core's typed getters. Every
 * error is collected so that `cairn check` can list them all.
 */
#ifndef CAIRN_STACK_H
#define CAIRN_STACK_H

#include "core/config.h"
#include "core/log.h"
#include "core/net.h"

struct service;

struct role_ops {
    const char *name;           /* "demo-app", "edge", ... */
    const char *summary;        /* one line for `cairn help` */
    /* Parses the service's mapping (all its keys, "role" included). Returns 0 or
     * -EINVAL after recording errors; on success svc->conf is set. */
    int (*parse)(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
    /* Runs the service in this process until SIGTERM/SIGINT; returns an exit code. */
    int (*main)(const struct service *svc);
    void (*free_conf)(void *conf);
    /* Optional, for the roles that keep a store: its data directory (malloc'd), so
     * that `cairn restore --service` can put a backed-up store back in place. */
    char *(*data_dir)(const struct service *svc);
    unsigned deploy;            /* ROLE_DEPLOY_*: how `cairn deploy kubernetes` runs it */
};

#define ROLE_DEPLOY_STORE 1u    /* keeps a store: a StatefulSet with a volume of its own */
#define ROLE_DEPLOY_PER_NODE 2u /* one per node (a DaemonSet): the log agent reads node logs */
#define ROLE_DEPLOY_PUBLIC 4u   /* faces users: let in from outside the cluster (edge, dns) */

#define SERVICE_MAX_ENDPOINTS 8
#define SERVICE_MAX_BINDS 16

struct service_endpoint {
    char what[24];              /* "http", "admin", "dns/udp", ... */
    char url[96];
};

struct service {
    char *name;
    const struct role_ops *role;
    void *conf;
    const struct stack *stack;
    struct service_endpoint endpoints[SERVICE_MAX_ENDPOINTS];
    size_t nendpoints;
    /* Addresses the service binds, to catch two services on one port. */
    struct net_addr binds[SERVICE_MAX_BINDS];
    int bind_types[SERVICE_MAX_BINDS];  /* SOCK_STREAM or SOCK_DGRAM */
    size_t nbinds;
};

struct stack {
    char *file;                 /* path, or "<default>" */
    const char *text;           /* the text it was parsed from (a reload re-reads the file;
                                   a role that must re-parse the same snapshot uses this) */
    char *source;               /* owned copy of a file's text */
    char *dir;                  /* base for relative paths */
    char *data_dir;             /* resolved against dir */
    /* `advertise: names`: a service that listens on a wildcard address (0.0.0.0,
     * [::]) is reached by the others at its own name (as Kubernetes Services make
     * it resolvable), which its endpoints then say; by default at the address it
     * listens on. */
    bool advertise_names;
    enum log_level log_level;
    enum log_format log_format;
    struct service *services;
    size_t nservices;
};

/* Loads a stack from path, or from text when text is non-NULL (name is then
 * used in messages and the current directory is the base). Returns 0, or
 * -EINVAL with errs filled. */
int stack_load(struct stack *st, const char *path, const char *text,
               const struct role_ops *const *roles, struct cfg_errors *errs);
/* Loads only the service called name (the others are checked for a role but
 * not parsed): how a running service re-reads its part of the file on reload. */
int stack_load_one(struct stack *st, const char *path, const char *text, const char *name,
                   const struct role_ops *role, struct cfg_errors *errs);
void stack_free(struct stack *st);
/* Moves a loaded stack to dst (its services point at dst afterwards); src is left
 * empty. A role that keeps a reloaded stack takes it over this way. */
void stack_move(struct stack *dst, struct stack *src);
const struct service *stack_find(const struct stack *st, const char *name);

/* For role parsers: records an endpoint line and a bound address. */
void service_add_endpoint(struct service *svc, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void service_add_bind(struct service *svc, const struct net_addr *a, int type);
/* Reads a service's `listen:` key, a list of 1 to max addresses, into out: each is
 * recorded as an endpoint (what, "scheme://addr/", or without the slash for
 * non-HTTP schemes) and as a TCP bind, plus a UDP one when udp. n NULL means the
 * key is missing. Returns 0 or -EINVAL after recording errors ("like" shows an
 * example address in them). */
int service_listen_addrs(struct cfg *c, const cfg_node *map, const cfg_node *n, const char *path,
                         struct service *svc, struct net_addr *out, size_t max, size_t *count,
                         const char *what, const char *scheme, const char *like, bool udp);
/* Parses a native configuration document: root is its top node, path the name its
 * messages use, dir the directory its own relative paths resolve against. */
typedef int (*stack_native_parse)(struct cfg *c, const cfg_node *root, const char *path,
                                  const char *dir, void *arg);
/* Reads a native configuration named by a service's key, as `prometheus:` names
 * prometheus.yml and `alertmanager:` alertmanager.yml. n is the key's value: a file
 * name (resolved against the stack file's directory; parsed as document `doc`, the
 * file's directory its base, its text returned in *text, malloc'd), an inline
 * mapping (parsed in place; base: the stack file's directory), or NULL (absent:
 * default_text is parsed as document `doc` when given). Returns 0, 1 when absent
 * without a default, or -EINVAL after recording errors with their file:line:col. */
int stack_native_config(struct cfg *c, const cfg_node *n, const char *path, const struct service *svc,
                        const char *doc, const char *default_text, stack_native_parse parse, void *arg,
                        char **text);
/* Resolves a path from the stack file against its directory (malloc'd). */
char *stack_path(const struct stack *st, const char *p);
/* Resolves a service's data path against the stack's data_dir (malloc'd). */
char *stack_data_path(const struct stack *st, const char *p);
/* Reads a secret given one of three ways, keys NAME_file (a file, relative to the
 * stack file; trailing newlines dropped), NAME_env (an environment variable) or NAME
 * (inline): file, env and value are those keys' nodes (NULL when absent), where the
 * mapping holding them, path its key path. Exactly one must be given. Returns 0
 * with *out malloc'd, or -EINVAL after recording errors. */
int stack_secret(struct cfg *c, const cfg_node *file, const cfg_node *env, const cfg_node *value,
                 const cfg_node *where, const char *path, const char *name, const struct stack *st,
                 char **out);

/* Off: loading a stack does not look host names up (a URL's host that does not
 * resolve is not an error): what `cairn check` and `cairn deploy` do, since a
 * cluster's service names resolve only inside the cluster. On by default. */
void stack_set_lookups(bool on);

/* An http(s) URL from the stack file (a webhook, an endpoint), its host resolved
 * when read. */
struct stack_url {
    char *text;                     /* as written */
    struct net_addr addr;
    char host[256];                 /* Host header and TLS SNI */
    char *target;                   /* "/path?query" */
    bool tls;
};
/* Parses (and resolves) an http:// or https:// URL. Returns 0, or an error code
 * with why in err. */
int stack_url_parse(const char *text, struct stack_url *u, char *err, size_t errlen);
/* Reads n as an http:// or https:// URL. Returns 0, or -EINVAL after recording why. */
int stack_url(struct cfg *c, const cfg_node *n, const char *path, struct stack_url *u);
void stack_url_free(struct stack_url *u);

/* Readiness: `cairn up` passes a pipe to each child; the service calls this once
 * it is serving. A no-op when run standalone. */
void service_notify_ready(void);
void service_set_ready_fd(int fd);

#endif
