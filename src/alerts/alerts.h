/* alerts.h - role "alerts": an Alertmanager-compatible alert router.
 *
 * The role's public face: its table for the command line (src/cairn.c, the tests
 * that load stacks) and its entry point, which runs the service on the service
 * skeleton (core/service.h) in the calling thread until a stop. Everything else
 * of the role is internal to its folder. */
#ifndef CAIRN_ALERTS_H
#define CAIRN_ALERTS_H

#include "core/stack.h"

extern const struct role_ops alerts_role;
int alerts_main(const struct service *svc);

#endif
