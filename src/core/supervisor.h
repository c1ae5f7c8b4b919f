/* supervisor.h - `cairn up`: run services as child processes.
 *
 * Each service runs in a forked child (the same code path as `cairn run NAME`).
 * A child reports readiness by writing one byte to a pipe once it is serving;
 * when every service is ready the supervisor prints the table of endpoints. A
 * child that exits before it was ever ready means the stack cannot start: the
 * supervisor stops the rest and exits 1 (the child has already logged why). A
 * child that dies later is restarted with exponential backoff (250 ms doubling to
 * 30 s, reset after 30 s of good running), and the reason is logged.
 * SIGTERM/SIGINT stop every child with SIGTERM, then SIGKILL after
 * SUPERVISOR_KILL_MS; SIGHUP is passed on to the children (reload).
 */
#ifndef CAIRN_SUPERVISOR_H
#define CAIRN_SUPERVISOR_H

#include "core/stack.h"
#include <stdio.h>

#define SUPERVISOR_KILL_MS 8000

/* Runs the given services (all when n == 0) until stopped. Returns the exit code. */
int supervisor_run(const struct stack *st, const struct service *const *svcs, size_t n,
                   FILE *table_out);

#endif
