/* prom.h - role "metrics": Prometheus-compatible scraping, remote_write and a TSDB. */
#ifndef CAIRN_PROM_H
#define CAIRN_PROM_H

#include "core/stack.h"

extern const struct role_ops prom_role;
int prom_main(const struct service *svc);

#endif
