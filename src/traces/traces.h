/* traces.h - role "traces": an OpenTelemetry trace store with the Jaeger, Tempo
 * and Zipkin query APIs and TraceQL.
 *
 * The role's public face: its table for the command line and its entry point,
 * which runs the service on the service skeleton (core/service.h) until a stop.
 * Everything else of the role is internal to its folder. */
#ifndef CAIRN_TRACES_H
#define CAIRN_TRACES_H

#include "core/stack.h"

extern const struct role_ops traces_role;
int traces_main(const struct service *svc);

#endif
