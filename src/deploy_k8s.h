/* deploy_k8s.h - `cairn deploy kubernetes`: a stack file as a kustomize base. */
#ifndef CAIRN_DEPLOY_K8S_H
#define CAIRN_DEPLOY_K8S_H

#include "core/stack.h"

/* Writes the kustomize base for the stack file config (or, with text, the stack in
 * text, named config in messages) into outdir (created; files of the same names are
 * replaced). image is the container image (name:tag). The
 * errors of a stack that cannot be deployed go to stderr with file:line:col.
 * Returns 0, 1 when outdir cannot be written, 2 for a stack it refuses. */
int deploy_kubernetes(const char *config, const char *text, const char *outdir, const char *image,
                      const struct role_ops *const *roles);

#endif
