/* ui.h - role "ui": the web console of a stack (stack map, metrics, dashboards,
 * logs, traces, alerts), served by the same binary.
 *
 * The role's public face: its table for the command line and its entry point. */
#ifndef CAIRN_UI_H
#define CAIRN_UI_H

#include "core/stack.h"

extern const struct role_ops ui_role;
int ui_main(const struct service *svc);

#endif
