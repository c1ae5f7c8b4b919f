/* logs.h - role "logs": a log store with Loki's push and query API and LogQL.
 *
 * The role's public face: its table for the command line and its entry point,
 * which runs the service on the service skeleton (core/service.h) until a stop.
 * Everything else of the role is internal to its folder. */
#ifndef CAIRN_LOGS_H
#define CAIRN_LOGS_H

#include "core/stack.h"

extern const struct role_ops logs_role;
int logs_main(const struct service *svc);

#endif
