/* s3.h - role "s3": an S3-compatible object store.
 *
 * The role's public face: its table for the command line and its entry point,
 * which runs the service on the service skeleton (core/service.h) until a stop.
 * Everything else of the role is internal to its folder. */
#ifndef CAIRN_S3_H
#define CAIRN_S3_H

#include "core/stack.h"

extern const struct role_ops s3_role;
int s3_main(const struct service *svc);

#endif
