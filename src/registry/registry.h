/* registry.h - role "registry": an OCI Distribution registry.
 *
 * The role's public face: its table for the command line and its entry point,
 * which runs the service on the service skeleton (core/service.h) until a stop.
 * Everything else of the role is internal to its folder. */
#ifndef CAIRN_REGISTRY_H
#define CAIRN_REGISTRY_H

#include "core/stack.h"

extern const struct role_ops registry_role;
int registry_main(const struct service *svc);

#endif
