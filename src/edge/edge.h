/* edge.h - role "edge": the HTTP(S) load balancer and, with cache: on routes, the
 * CDN tier. Its public face: the role's table for the command line. Everything
 * else is internal (edge_conf.h: configuration; edge_internal.h: runtime). */
#ifndef CAIRN_EDGE_H
#define CAIRN_EDGE_H

#include "core/stack.h"

extern const struct role_ops edge_role;
int edge_main(const struct service *svc);

#endif
