/* bk_main.c - role "backup": runs the stack file's backup jobs on their cron
 * schedules (local time) or when asked (POST /api/jobs/<name>/run), one at a
 * time on a thread of their own, and reports them as metrics and in /api/jobs.
 *
 * The loop thread serves HTTP and ticks the scheduler every second; the job
 * thread takes queued jobs in order. A stop cancels the running backup (it
 * resumes from what it stored at the next run) and waits for the thread.
 */
#include "backup.h"
#include "backup_conf.h"
#include "core/httpd.h"
#include "core/log.h"
#include "core/service.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#define BK_DRAIN_MS 5000

const struct role_ops backup_role = {
    .name = "backup",
    .deploy = ROLE_DEPLOY_STORE,
    .summary = "restic-compatible backups of directories and cairn's stores, on a schedule, with retention",
    .parse = backup__parse,
    .main = backup_main,
    .free_conf = backup__free_conf,
};

/* each job's metrics: one family each (runs_total split by result) */
enum jm { M_SUCCESS, M_RUN, M_DURATION, M_ADDED, M_FILES, M_OK, M_FAIL, M_ERRORS, M_RUNNING, M_N };
static const struct {
    enum metric_type type;
    const char *name, *help, *result;
} jmetrics[M_N] = {
    [M_SUCCESS] = { METRIC_GAUGE, "cairn_backup_last_success_timestamp_seconds",
                    "When the job last finished without an error.", NULL },
    [M_RUN] = { METRIC_GAUGE, "cairn_backup_last_run_timestamp_seconds", "When the job last started.", NULL },
    [M_DURATION] = { METRIC_GAUGE, "cairn_backup_last_duration_seconds", "How long the job's last run took.", NULL },
    [M_ADDED] = { METRIC_GAUGE, "cairn_backup_last_added_bytes",
                  "New data (before compression) the last successful run stored.", NULL },
    [M_FILES] = { METRIC_GAUGE, "cairn_backup_last_files", "Files in the last successful run's snapshot.", NULL },
    [M_OK] = { METRIC_COUNTER, "cairn_backup_runs_total", "Job runs by result (success, failure).", "success" },
    [M_FAIL] = { METRIC_COUNTER, "cairn_backup_runs_total", "Job runs by result (success, failure).", "failure" },
    [M_ERRORS] = { METRIC_COUNTER, "cairn_backup_file_errors_total",
                   "Files and directories a run could not read (skipped).", NULL },
    [M_RUNNING] = { METRIC_GAUGE, "cairn_backup_running", "1 while the job runs.", NULL },
};

struct jobstate {
    bool queued, running;
    double last_run, last_success, last_duration;
    uint64_t last_added, last_files, last_errors;
    char last_snapshot[65];
    char last_error[512];
    struct metric *m[M_N];
};


struct bk_svc {
    const struct service *svc;
    const struct backup_conf *conf;
    struct service_ctx *sc;
    struct service_http_pool pool;
    struct httpd_conf hconf;
    struct loop_timer tick;
    long last_minute;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    int cancel;
    struct jobstate *js;
};

/* Each job's last success as the repository knows it (its newest snapshot), or
 * the start of the service: an alert on "no success for a day" then counts from
 * the last real backup, not from zero. */
static void init_last_success(struct bk_svc *s)
{
    struct bk_repo r;
    char err[512];
    struct bk_snapshot *sn = NULL;
    size_t n = 0;
    double now = cairn_wall_time();
    uint64_t sz;
    struct bk_backend *be = NULL;
    bool exists = false;
    if (!bk_backend_open(&s->conf->repo, &be, err, sizeof(err))) {
        exists = be->ops->stat(be, BK_CONFIG, "config", &sz) == 0;
        be->ops->free(be);
    }
    if (exists && !backup__open_repo(s->svc, &r, false, err, sizeof(err))) {
        if (bk_snapshots_load(&r, &sn, &n, err, sizeof(err)))
            n = 0;
        bk_repo_close(&r);
    }
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->conf->njobs; i++) {
        char tag[160];
        snprintf(tag, sizeof(tag), "job=%s", s->conf->jobs[i].name);
        double t = 0;
        for (size_t k = 0; k < n; k++)
            for (size_t j = 0; j < sn[k].ntags; j++)
                if (!strcmp(sn[k].tags[j], tag) && (double)sn[k].time_ns / 1e9 > t)
                    t = (double)sn[k].time_ns / 1e9;
        /* this thread runs the jobs: none has run yet */
        s->js[i].last_success = t;
        metric_set(s->js[i].m[M_SUCCESS], t > 0 ? t : now);
    }
    pthread_mutex_unlock(&s->mu);
    bk_snapshots_free(sn, n);
}

static void *job_thread(void *arg)
{
    struct bk_svc *s = arg;
    init_last_success(s);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        size_t pick = SIZE_MAX;
        for (size_t i = 0; i < s->conf->njobs && pick == SIZE_MAX; i++)
            if (s->js[i].queued)
                pick = i;
        if (s->stop)
            break;
        if (pick == SIZE_MAX) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        struct jobstate *j = &s->js[pick];
        j->queued = false;
        j->running = true;
        metric_set(j->m[M_RUNNING], 1);
        pthread_mutex_unlock(&s->mu);
        const struct bk_job *job = &s->conf->jobs[pick];
        log_info("backup job starting", "job", job->name);
        struct bk_run run;
        double t0 = cairn_wall_time();
        backup__run_job(s->svc, job, true, &s->cancel, &run);
        pthread_mutex_lock(&s->mu);
        j->running = false;
        j->last_run = t0;
        j->last_duration = run.seconds;
        j->last_added = run.st.bytes_added;
        j->last_files = run.st.files_new + run.st.files_changed + run.st.files_unmodified;
        j->last_errors = run.st.errors;
        metric_set(j->m[M_RUNNING], 0);
        metric_set(j->m[M_RUN], t0);
        metric_set(j->m[M_DURATION], run.seconds);
        metric_add(j->m[M_ERRORS], (double)run.st.errors);
        if (run.ok) {
            j->last_success = t0 + run.seconds;
            j->last_error[0] = 0;
            memcpy(j->last_snapshot, run.snapshot, sizeof(j->last_snapshot));
            metric_set(j->m[M_SUCCESS], j->last_success);
            metric_set(j->m[M_ADDED], (double)run.st.bytes_added);
            metric_set(j->m[M_FILES], (double)j->last_files);
            metric_inc(j->m[M_OK]);
        } else {
            snprintf(j->last_error, sizeof(j->last_error), "%s", run.err);
            metric_inc(j->m[M_FAIL]);
            log_error("backup job failed", "job", job->name, "error", run.err);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int enqueue(struct bk_svc *s, size_t i)
{
    pthread_mutex_lock(&s->mu);
    int r = s->js[i].queued || s->js[i].running ? -EBUSY : 0;
    if (!r) {
        s->js[i].queued = true;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

static void on_tick(struct loop_timer *t)
{
    struct bk_svc *s = t->data;
    time_t now = time(NULL);
    long minute = (long)(now / 60);
    if (minute != s->last_minute) {
        s->last_minute = minute;
        struct tm tm;
        localtime_r(&now, &tm);
        for (size_t i = 0; i < s->conf->njobs; i++) {
            const struct bk_job *j = &s->conf->jobs[i];
            if (j->schedule && bk_cron_match(&j->cron, &tm) && enqueue(s, i) == -EBUSY)
                log_warn("backup job still running at its next scheduled time: skipped", "job", j->name);
        }
    }
    loop_timer_start(t->loop, t, 1000);
}

static void put_time(struct buf *b, const char *key, double t)
{
    if (t > 0) {
        char s[48];
        bk_time_format((int64_t)t, (long)((t - (double)(int64_t)t) * 1e9), s);
        buf_printf(b, ",\"%s\":\"%s\"", key, s);
    } else {
        buf_printf(b, ",\"%s\":null", key);
    }
}

static void h_jobs(struct bk_svc *s, struct httpd_req *r)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"jobs\":[");
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->conf->njobs; i++) {
        const struct bk_job *j = &s->conf->jobs[i];
        const struct jobstate *st = &s->js[i];
        buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(&b, j->name);
        buf_puts(&b, ",\"schedule\":");
        if (j->schedule)
            buf_json_str(&b, j->schedule);
        else
            buf_puts(&b, "null");
        buf_puts(&b, j->service ? ",\"service\":" : ",\"service\":null");
        if (j->service)
            buf_json_str(&b, j->service);
        buf_printf(&b, ",\"queued\":%s,\"running\":%s", st->queued ? "true" : "false", st->running ? "true" : "false");
        put_time(&b, "last_run", st->last_run);
        put_time(&b, "last_success", st->last_success);
        buf_printf(&b, ",\"last_duration_seconds\":%.3f,\"last_bytes_added\":%llu,\"last_files\":%llu,\"last_errors\":%llu",
                   st->last_duration, (unsigned long long)st->last_added, (unsigned long long)st->last_files,
                   (unsigned long long)st->last_errors);
        buf_puts(&b, ",\"last_snapshot\":");
        if (st->last_snapshot[0])
            buf_json_str(&b, st->last_snapshot);
        else
            buf_puts(&b, "null");
        buf_puts(&b, ",\"last_error\":");
        if (st->last_error[0])
            buf_json_str(&b, st->last_error);
        else
            buf_puts(&b, "null");
        buf_putc(&b, '}');
    }
    pthread_mutex_unlock(&s->mu);
    buf_puts(&b, "]}\n");
    httpd_respond(r, 200, "application/json", buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static void handle(struct httpd_req *r, void *arg)
{
    struct bk_svc *s = arg;
    if (service_handle_builtin(s->sc, r))
        return;
    struct strv p = r->h.path;
    if (strv_eq_cstr(p, "/api/jobs")) {
        if (!strv_eq_cstr(r->h.method, "GET") && !r->h.is_head) {
            httpd_respond(r, 405, "text/plain; charset=utf-8", LIT("GET only\n"));
            return;
        }
        h_jobs(s, r);
        return;
    }
    if (strv_has_prefix(p, "/api/jobs/") && p.n > 14 && !memcmp(p.p + p.n - 4, "/run", 4)) {
        struct strv name = strv_make(p.p + 10, p.n - 14);
        if (!strv_eq_cstr(r->h.method, "POST")) {
            httpd_respond(r, 405, "text/plain; charset=utf-8", LIT("POST to run a job\n"));
            return;
        }
        for (size_t i = 0; i < s->conf->njobs; i++) {
            if (!strv_eq_cstr(name, s->conf->jobs[i].name))
                continue;
            if (enqueue(s, i) == -EBUSY)
                httpd_respond(r, 409, "application/json", LIT("{\"error\":\"the job is already queued or running\"}\n"));
            else
                httpd_respond(r, 202, "application/json", LIT("{\"queued\":true}\n"));
            return;
        }
        httpd_respond(r, 404, "application/json", LIT("{\"error\":\"no such job\"}\n"));
        return;
    }
    httpd_respond(r, 404, "text/plain; charset=utf-8", LIT("not found\n"));
}

static int bk_start(struct service_ctx *sc)
{
    struct bk_svc *s = sc->role;
    s->sc = sc;
    static const char *const lj[] = { "job", NULL };
    static const char *const ljr[] = { "job", "result", NULL };
    s->js = calloc(s->conf->njobs ? s->conf->njobs : 1, sizeof(*s->js));
    if (!s->js)
        return -ENOMEM;
    for (int k = 0; k < M_N; k++) {
        struct metric_family *f = metrics_family(sc->reg, jmetrics[k].type, jmetrics[k].name, jmetrics[k].help,
                                                 jmetrics[k].result ? ljr : lj, NULL, 0);
        if (!f)
            return -ENOMEM;
        for (size_t i = 0; i < s->conf->njobs; i++) {
            const char *n = s->conf->jobs[i].name;
            struct metric *m = jmetrics[k].result ? metrics_get2(f, n, jmetrics[k].result) : metrics_get1(f, n);
            if (!(s->js[i].m[k] = m))
                return -ENOMEM;
        }
    }
    httpd_conf_defaults(&s->hconf);
    s->hconf.handler = handle;
    s->hconf.handler_arg = s;
    int r = service_http_pool_start(sc, &s->pool, 1, &s->hconf, s->conf->addrs, s->conf->naddrs, BK_DRAIN_MS);
    if (r)
        return r;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if ((r = pthread_create(&s->thread, NULL, job_thread, s)) != 0) {
        log_error("cannot start the job thread", "err", cairn_strerror(-r));
        return -r;
    }
    s->thread_started = true;
    s->last_minute = (long)(time(NULL) / 60);   /* a job due this very minute waits for the next match */
    loop_timer_init(&s->tick, on_tick, s);
    loop_timer_start(&s->pool.w[0].loop, &s->tick, 1000);
    char first[NET_ADDRSTRLEN];
    net_addr_format(&s->conf->addrs[0], first, sizeof(first));
    const struct bk_repo_conf *rc = &s->conf->repo;
    log_info("backup serving", "addr", first, "jobs", log_int((long long)s->conf->njobs), "repository",
             rc->is_s3 ? rc->s3.bucket : rc->path);
    return 0;
}

static void bk_stop_worker(void *arg)
{
    service_http_pool_stop_worker(arg);
}

static void bk_finish(struct service_ctx *sc)
{
    struct bk_svc *s = sc->role;
    if (s->pool.ninit)
        loop_timer_stop(&s->tick);
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        __atomic_store_n(&s->cancel, 1, __ATOMIC_RELAXED);
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
    }
    service_http_pool_free(&s->pool);
    free(s->js);
}

static const struct service_ops bk_ops = {
    .start = bk_start,
    .stop_worker = bk_stop_worker,
    .finish = bk_finish,
};

int backup_main(const struct service *svc)
{
    struct bk_svc s;
    memset(&s, 0, sizeof(s));
    s.svc = svc;
    s.conf = svc->conf;
    return service_run(svc, &bk_ops, &s);
}
