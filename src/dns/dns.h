/* dns.h - role "dns": an authoritative DNS server with health-checked GSLB names. */
#ifndef CAIRN_DNS_H
#define CAIRN_DNS_H

#include "core/stack.h"

extern const struct role_ops dns_role;
int dns_main(const struct service *svc);

#endif
