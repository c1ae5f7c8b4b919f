/* backup.h - role "backup": restic-compatible, deduplicated, encrypted snapshots
 * of directories and of cairn's stores, on a schedule, with retention; and the
 * commands that work on its repository (cairn backup, snapshots, restore, repo).
 *
 * The role's public face: its table for the command line, its entry point, and
 * the commands' entry points (cairn.c hands them the roles so they can read the
 * stack file). Everything else is internal to this folder. */
#ifndef CAIRN_BACKUP_H
#define CAIRN_BACKUP_H

#include "core/stack.h"

extern const struct role_ops backup_role;
int backup_main(const struct service *svc);

/* `cairn backup|snapshots|restore|repo ...`: argv after the command's name.
 * Returns the exit code (0, 1 runtime failure, 2 usage or configuration). */
int backup_cmd(const char *cmd, int argc, char **argv, const struct role_ops *const *roles);

#endif
