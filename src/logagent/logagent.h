/* logagent.h - role "log-agent": tails files and receives syslog, ships to a Loki
 * push API (the logs role), configured with Promtail's YAML.
 *
 * The role's public face: its table for the command line and its entry point.
 * Everything else of the role is internal to its folder. */
#ifndef CAIRN_LOGAGENT_H
#define CAIRN_LOGAGENT_H

#include "core/stack.h"

extern const struct role_ops log_agent_role;
int log_agent_main(const struct service *svc);

#endif
