/* service.h - the skeleton every role stands on.
 *
 * A role's entry point (role_ops.main) fills a struct service_ops and calls
 * service_run(). The skeleton owns what every daemon does the same way, so that a
 * role is its protocol and its store and nothing else:
 *
 *   - the metrics registry (process metrics included) the role adds its own to;
 *   - signals: SIGTERM/SIGINT begin a graceful stop, SIGHUP a reload; SIGPIPE is
 *     ignored;
 *   - reload, with one semantics for every role, from SIGHUP or `POST /-/reload`:
 *     the service's part of the stack file is read and validated again (native
 *     files it names included); only then is the role's reload hook handed the new
 *     configuration, which it swaps in on every thread or refuses. A refused reload
 *     leaves the running configuration as it was, logs each error and answers the
 *     HTTP caller with them (file:line:col) and status reload_error_status;
 *   - `/metrics`, `/-/healthy`, `/-/ready` (503 while starting and stopping) and
 *     `/-/reload`: on the admin listener the skeleton opens for the role
 *     (service_admin_listen, for roles whose public port is not HTTP or faces the
 *     public), or through service_handle_builtin() from the role's own handler;
 *   - worker threads: the role's loops, loops[0] run by the calling thread, the
 *     others each on a thread of its own, stopped through the role's stop_worker
 *     hook posted to each loop (a drain, typically) and joined;
 *   - a malloc_trim timer, readiness to the supervisor, the "stopped" line.
 *
 * Thread rules: every hook and every service_* call runs on loops[0]'s thread,
 * except stop_worker (on its worker's loop) and service_stopping() (any thread).
 */
#ifndef CAIRN_SERVICE_H
#define CAIRN_SERVICE_H

#include "core/config.h"
#include "core/httpd.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/stack.h"

#include <pthread.h>

struct service_ctx;

struct service_ops {
    /* Builds the role: its metrics in sc->reg, its listeners, its loops (handed
     * over with service_set_workers before anything waits on them). Returns 0, or
     * an error code after logging why; finish is called either way. */
    int (*start)(struct service_ctx *sc);
    /* Switches to the service as parsed into st (validated: every key, every
     * native file). On success the role takes *st over (stack_move into its own
     * state); on failure it leaves st alone and adds its reasons to errs.
     * NULL: the role has nothing to reload (SIGHUP is logged, /-/reload is 404). */
    int (*reload)(struct service_ctx *sc, struct stack *st, struct cfg_errors *errs);
    /* Optional: the outcome of every reload attempt (for the role's own metrics). */
    void (*reloaded)(struct service_ctx *sc, bool ok);
    /* Posted to each worker's loop when a stop begins, with that worker's arg;
     * it stops the loop once the worker is done. NULL: loop_stop at once. */
    void (*stop_worker)(void *worker_arg);
    /* Optional: routes of the admin listener beyond the built-in ones. */
    void (*admin)(struct service_ctx *sc, struct httpd_req *r);
    /* Releases the role, after every loop has returned (or after a failed start:
     * then only what start built). */
    void (*finish)(struct service_ctx *sc);
    /* Optional, for the roles that keep a store: a consistent copy of it for backups.
     * The skeleton serves `POST /-/snapshot[?name=NAME]` (answers {"name", "dir"}) by
     * making dir = <snapshot_base>/snapshots/<name> (a fresh one) and calling snapshot(sc, dir, ...) on
     * loops[0]'s thread, so the copy is of one moment; `DELETE /-/snapshot/<name>`
     * removes it once the backup has it. snapshot returns 0, or an error code with
     * why in err. snapshot_base is the store's data directory. */
    int (*snapshot)(struct service_ctx *sc, const char *dir, char *err, size_t errlen);
    const char *(*snapshot_base)(struct service_ctx *sc);
    unsigned trim_ms;               /* malloc_trim period; 0: 10 s */
    int reload_error_status;        /* answer to a refused /-/reload; 0: 400 (the
                                       Prometheus and Alertmanager roles say 500 as
                                       the tools they stand in for do) */
};

struct service_worker {
    struct loop *loop;
    void *arg;                      /* given to stop_worker */
};

struct service_ctx {
    const struct service *svc;
    const struct service_ops *ops;
    void *role;                     /* the role's state, as given to service_run */
    struct metrics_registry *reg;
    int stopping;                   /* atomic */
    bool ready;
    /* workers: [0] runs on the calling thread */
    struct service_worker *workers;
    pthread_t *threads;
    int nworkers;
    /* admin listener on workers[0]'s loop */
    bool admin_inited;
    struct httpd_worker admin_hw;
    struct httpd_conf admin_conf;
    struct loop_timer trim;
    struct metric *m_reload_ok, *m_reload_ts;
    /* Set by start: the time slice the workers ask the kernel for
     * (cairn_sched_slice), 0 for the kernel's own. */
    uint64_t sched_slice_ns;
};

/* Runs the service until a stop: start, serve, finish. Returns the process's exit
 * code (0 after a graceful stop, 1 when it could not start). */
int service_run(const struct service *svc, const struct service_ops *ops, void *role);

/* From start: the role's worker loops (copied). Signals are delivered to
 * workers[0].loop from this call on. Returns 0 or -ENOMEM. */
int service_set_workers(struct service_ctx *sc, const struct service_worker *workers, int n);
/* From start, after service_set_workers: serves the built-in endpoints and the
 * role's admin hook on addr, on workers[0]'s loop. Returns 0 or an error code
 * (logged). */
int service_admin_listen(struct service_ctx *sc, const struct net_addr *addr);
/* For roles that serve the built-in endpoints on their own HTTP port: answers
 * /metrics, /-/healthy, /-/ready, /-/reload and /-/snapshot and returns true, or
 * returns false for any other path. */
bool service_handle_builtin(struct service_ctx *sc, struct httpd_req *r);
/* An HTTP role's workers: n loops, each with an httpd worker listening (SO_REUSEPORT)
 * on every address with conf, handed to the skeleton (service_set_workers), and a
 * graceful stop that drains each worker's connections for at most drain_ms. Used
 * from start; put service_http_pool_stop_worker in service_ops.stop_worker and call
 * service_http_pool_free from finish. A handler finds its worker's role state in
 * r->worker->data (set it on pool->w[i].hw.data after the start). */
struct service_http_worker {
    struct loop loop;
    struct httpd_worker hw;
    struct loop_timer deadline;
    uint32_t drain_ms;
};
struct service_http_pool {
    struct service_http_worker *w;
    int n, ninit;
    uint32_t drain_ms;
};
int service_http_pool_start(struct service_ctx *sc, struct service_http_pool *p, int n,
                            const struct httpd_conf *conf, const struct net_addr *addrs, size_t naddrs,
                            uint32_t drain_ms);
void service_http_pool_stop_worker(void *worker_arg);
void service_http_pool_free(struct service_http_pool *p);

/* Reloads as SIGHUP does. Returns 0, or -EINVAL with the reasons in errs. */
int service_reload(struct service_ctx *sc, struct cfg_errors *errs);
/* Begins a graceful stop, as SIGTERM does. */
void service_stop(struct service_ctx *sc, const char *why);
static inline bool service_stopping(const struct service_ctx *sc)
{
    return __atomic_load_n(&sc->stopping, __ATOMIC_RELAXED) != 0;
}

#endif
