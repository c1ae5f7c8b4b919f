/* demo_app.h - role "demo-app": the sample workload the stack serves.
 *
 * The role's public face: its table for the command line (src/cairn.c, the tests
 * that load stacks) and its entry point, which runs the service on the service
 * skeleton (core/service.h) in the calling thread until a stop. Everything else
 * of the role is internal to its folder. */
#ifndef CAIRN_DEMO_APP_H
#define CAIRN_DEMO_APP_H

#include "core/stack.h"

extern const struct role_ops demo_app_role;
int demo_app_main(const struct service *svc);

#endif
