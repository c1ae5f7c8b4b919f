/* The service skeleton, driven by a role of the test's own: two workers, a reload
 * that is taken, one that is refused (file:line in the errors, the old
 * configuration kept), then SIGTERM stopping every worker through the role's hook. */
#include "core/buf.h"
#include "demo_app/demo_app.h"
#include "core/service.h"
#include "core/stack.h"
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct fake_role {
    struct loop loops[2];
    int nloops;
    struct loop_timer script;
    struct stack taken[2];          /* stacks handed over by reloads */
    int ntaken;
    bool taken_ok;                  /* the moved stack's services point at it */
    int reloads_ok, reloads_failed;
    bool finished;
    char path[256];
    int reload_r, bad_reload_r;
    char bad_error[512];
    char metrics_after[256];
};

static void script(struct loop_timer *t)
{
    struct service_ctx *sc = t->data;
    struct fake_role *f = sc->role;
    struct cfg_errors errs = { 0 };
    f->reload_r = service_reload(sc, &errs);
    cfg_errors_free(&errs);
    FILE *fp = fopen(f->path, "w");
    fputs("services:\n  web:\n    role: demo-app\n    listen: [\"127.0.0.1:1\"]\n    threads: many\n", fp);
    fclose(fp);
    f->bad_reload_r = service_reload(sc, &errs);
    if (errs.n)
        snprintf(f->bad_error, sizeof(f->bad_error), "%s", errs.msgs[0]);
    cfg_errors_free(&errs);
    struct buf b = BUF_INIT;
    metrics_render(sc->reg, &b);
    const char *m = strstr(buf_head(&b), "\ncairn_config_last_reload_successful ");
    if (m)
        snprintf(f->metrics_after, sizeof(f->metrics_after), "%.*s", (int)strcspn(m + 1, "\n"), m + 1);
    buf_free(&b);
    raise(SIGTERM);
}

static int fake_start(struct service_ctx *sc)
{
    struct fake_role *f = sc->role;
    struct service_worker w[2];
    for (int i = 0; i < 2; i++) {
        if (loop_init(&f->loops[i]))
            return -1;
        f->nloops++;
        w[i].loop = &f->loops[i];
        w[i].arg = &f->loops[i];
    }
    int r = service_set_workers(sc, w, 2);
    if (r)
        return r;
    loop_timer_init(&f->script, script, sc);
    loop_timer_start(&f->loops[0], &f->script, 10);
    return 0;
}

static int fake_reload(struct service_ctx *sc, struct stack *st, struct cfg_errors *errs)
{
    struct fake_role *f = sc->role;
    UNUSED(errs);
    if (f->ntaken == 2)
        return -EINVAL;
    stack_move(&f->taken[f->ntaken], st);
    f->taken_ok = stack_find(&f->taken[f->ntaken], "web") != NULL &&
                  stack_find(&f->taken[f->ntaken], "web")->stack == &f->taken[f->ntaken];
    f->ntaken++;
    return 0;
}

static void fake_reloaded(struct service_ctx *sc, bool ok)
{
    struct fake_role *f = sc->role;
    if (ok)
        f->reloads_ok++;
    else
        f->reloads_failed++;
}

static int g_stops;

/* Runs on each worker's own loop. */
static void counting_stop_worker(void *arg)
{
    __atomic_add_fetch(&g_stops, 1, __ATOMIC_RELAXED);
    loop_stop(arg);
}

static void fake_finish(struct service_ctx *sc)
{
    struct fake_role *f = sc->role;
    loop_timer_stop(&f->script);
    for (int i = 0; i < f->nloops; i++)
        loop_destroy(&f->loops[i]);
    for (int i = 0; i < f->ntaken; i++)
        stack_free(&f->taken[i]);
    f->finished = true;
}

TEST(service_reload_and_stop)
{
    static const struct role_ops *const roles[] = { &demo_app_role, NULL };
    static const struct service_ops ops = {
        .start = fake_start,
        .reload = fake_reload,
        .reloaded = fake_reloaded,
        .stop_worker = counting_stop_worker,
        .finish = fake_finish,
    };
    char dir[] = "/tmp/cairn-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct fake_role f;
    memset(&f, 0, sizeof(f));
    snprintf(f.path, sizeof(f.path), "%s/stack.yaml", dir);
    FILE *fp = fopen(f.path, "w");
    fputs("services:\n  web: {role: demo-app, listen: [\"127.0.0.1:1\"]}\n", fp);
    fclose(fp);
    struct stack st;
    struct cfg_errors e = { 0 };
    CHECK_INT(stack_load(&st, f.path, NULL, roles, &e), 0);
    sigset_t old;
    sigprocmask(SIG_SETMASK, NULL, &old);
    g_stops = 0;
    CHECK_INT(service_run(stack_find(&st, "web"), &ops, &f), 0);
    sigprocmask(SIG_SETMASK, &old, NULL);
    CHECK_INT(f.reload_r, 0);
    CHECK_INT(f.bad_reload_r, -EINVAL);
    CHECK_INT(f.reloads_ok, 1);
    CHECK_INT(f.reloads_failed, 1);
    CHECK_INT(f.ntaken, 1);
    CHECK(f.taken_ok);
    CHECK_CONTAINS(f.bad_error, "stack.yaml:5:");
    CHECK_CONTAINS(f.bad_error, "threads");
    CHECK_STR(f.metrics_after, "cairn_config_last_reload_successful 0");
    CHECK_INT(g_stops, 2);
    CHECK(f.finished);
    stack_free(&st);
    cfg_errors_free(&e);
    unlink(f.path);
    rmdir(dir);
}

static int failing_start(struct service_ctx *sc)
{
    struct fake_role *f = sc->role;
    if (loop_init(&f->loops[0]))
        return -1;
    f->nloops = 1;
    loop_timer_init(&f->script, script, sc);
    return -EADDRINUSE;
}

TEST(service_failed_start_is_finished)
{
    static const struct role_ops *const roles[] = { &demo_app_role, NULL };
    static const struct service_ops ops = { .start = failing_start, .finish = fake_finish };
    struct stack st;
    struct cfg_errors e = { 0 };
    CHECK_INT(stack_load(&st, "t.yaml", "services:\n  web: {role: demo-app, listen: [\"127.0.0.1:1\"]}\n",
                         roles, &e), 0);
    struct fake_role f;
    memset(&f, 0, sizeof(f));
    CHECK_INT(service_run(stack_find(&st, "web"), &ops, &f), 1);
    CHECK(f.finished);
    stack_free(&st);
    cfg_errors_free(&e);
}
