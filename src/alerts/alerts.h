/* alerts.h - role "alerts": an Alertmanager-compatible alert router. */
#ifndef CAIRN_ALERTS_H
#define CAIRN_ALERTS_H

#include "core/stack.h"

extern const struct role_ops alerts_role;
int alerts_main(const struct service *svc);

#endif
