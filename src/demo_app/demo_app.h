/* demo_app.h - role "demo-app": the sample workload the stack serves. */
#ifndef CAIRN_DEMO_APP_H
#define CAIRN_DEMO_APP_H

#include "core/stack.h"

extern const struct role_ops demo_app_role;
int demo_app_main(const struct service *svc);

#endif
