/* router.c - first-match routing with 404 and 405 answers. */
#include "core/router.h"

#include <stdio.h>

static bool path_matches(const struct http_route *rt, struct strv path)
{
    size_t n = strlen(rt->path);
    if (rt->prefix)
        return path.n >= n && memcmp(path.p, rt->path, n) == 0;
    return path.n == n && memcmp(path.p, rt->path, n) == 0;
}

static bool method_matches(const struct http_route *rt, struct strv method)
{
    if (!rt->method)
        return true;
    if (strv_eq_cstr(method, rt->method))
        return true;
    return strcmp(rt->method, "GET") == 0 && strv_eq_cstr(method, "HEAD");
}

const struct http_route *router_match(const struct http_router *r, struct strv method,
                                      struct strv path, char *allow, size_t allowlen)
{
    size_t o = 0;
    if (allow && allowlen)
        allow[0] = '\0';
    for (size_t i = 0; i < r->nroutes; i++) {
        const struct http_route *rt = &r->routes[i];
        if (!path_matches(rt, path))
            continue;
        if (method_matches(rt, method))
            return rt;
        if (allow && o < allowlen && rt->method && !strstr(allow, rt->method)) {
            int n = snprintf(allow + o, allowlen - o, "%s%s%s", o ? ", " : "", rt->method,
                             strcmp(rt->method, "GET") == 0 ? ", HEAD" : "");
            if (n > 0)
                o += (size_t)n;
        }
    }
    return NULL;
}

void router_dispatch(struct httpd_req *req, void *arg)
{
    const struct http_router *r = arg;
    char allow[128];
    const struct http_route *rt = router_match(r, req->h.method, req->h.path, allow, sizeof(allow));
    if (rt) {
        rt->handler(req, rt->arg ? rt->arg : r->arg);
        return;
    }
    if (allow[0]) {
        httpd_header(req, "Allow", allow);
        httpd_respond(req, 405, "text/plain; charset=utf-8", "method not allowed\n", 19);
        return;
    }
    if (r->not_found) {
        r->not_found(req, r->arg);
        return;
    }
    httpd_respond(req, 404, "text/plain; charset=utf-8", "not found\n", 10);
}
