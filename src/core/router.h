/* router.h - request routing for the HTTP server.
 *
 * A router is a fixed table built at start-up: each route names a method (or any),
 * a path matched exactly or as a prefix, and a handler. The first matching route
 * in table order wins. A path that matches routes only under other methods gets
 * 405 with an Allow header listing them; a path that matches nothing gets 404.
 * HEAD is served by GET routes (the server omits the body).
 */
#ifndef CAIRN_ROUTER_H
#define CAIRN_ROUTER_H

#include "core/httpd.h"

struct http_route {
    const char *method;         /* "GET", "POST", ... or NULL for any */
    const char *path;
    bool prefix;                /* match path as a prefix */
    httpd_handler handler;
    void *arg;                  /* NULL: the router's default arg */
};

struct http_router {
    const struct http_route *routes;
    size_t nroutes;
    void *arg;                  /* passed to handlers whose route has no arg */
    httpd_handler not_found;    /* NULL: a plain 404 */
};

/* Finds the route for a request; NULL when none matches. *allow (may be NULL)
 * receives a comma-separated list of methods that would match the path. */
const struct http_route *router_match(const struct http_router *rt, struct strv method,
                                      struct strv path, char *allow, size_t allowlen);
/* An httpd handler: arg is the struct http_router. */
void router_dispatch(struct httpd_req *r, void *arg);

#endif
