/* supervisor.c - forking, readiness, restart with backoff, graceful stop, and each
 * child's stderr: copied to the supervisor's own stderr and appended to
 * <data_dir>/log/<service>.log (cut at LOG_FILE_MAX: the file is renamed to .1 and
 * a new one started), where a log agent can tail it. */
#include "core/supervisor.h"
#include "core/loop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 30000
#define SLOW_START_MS 30000
#define LOG_FILE_MAX (16u << 20)

enum child_state { CH_STARTING, CH_READY, CH_BACKOFF, CH_EXITED };

struct child {
    const struct service *svc;
    pid_t pid;
    enum child_state state;
    bool ever_ready;
    unsigned restarts;
    uint64_t backoff_ms;
    uint64_t started_ms;
    struct loop_io ready_io;
    struct loop_io err_io;          /* the read end of the child's stderr */
    int log_fd;                     /* <data_dir>/log/<service>.log */
    uint64_t log_size;
    struct loop_timer restart_timer;
    struct sup *sup;
};

struct sup {
    const struct stack *st;
    struct loop loop;
    struct child *children;
    size_t n;
    bool stopping;
    bool table_printed;
    int exit_code;
    struct loop_timer kill_timer, slow_timer;
    FILE *table_out;
};

static int start_child(struct sup *s, struct child *ch);

static void log_file_open(struct sup *s, struct child *ch)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/log/%s.log", s->st->data_dir, ch->svc->name);
    ch->log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    struct stat sb;
    ch->log_size = ch->log_fd >= 0 && fstat(ch->log_fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Copies what the child wrote to stderr; true at its end. */
static bool copy_stderr(struct child *ch)
{
    char b[65536];
    for (;;) {
        ssize_t k = read(ch->err_io.fd, b, sizeof(b));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k == 0 || errno != EAGAIN;
        write_all(2, b, (size_t)k);
        if (ch->log_fd < 0)
            continue;
        if (ch->log_size + (uint64_t)k > LOG_FILE_MAX) {
            /* cut at a line's end: what follows the last newline starts the next file */
            const char *nl = memrchr(b, '\n', (size_t)k);
            size_t head = nl ? (size_t)(nl - b) + 1 : 0;
            write_all(ch->log_fd, b, head);
            char path[1024], old[1040];
            snprintf(path, sizeof(path), "%s/log/%s.log", ch->sup->st->data_dir, ch->svc->name);
            snprintf(old, sizeof(old), "%s.1", path);
            close(ch->log_fd);
            rename(path, old);
            log_file_open(ch->sup, ch);
            if (ch->log_fd >= 0)
                write_all(ch->log_fd, b + head, (size_t)k - head);
            ch->log_size = (uint64_t)k - head;
            continue;
        }
        write_all(ch->log_fd, b, (size_t)k);
        ch->log_size += (uint64_t)k;
    }
}

static void err_close(struct child *ch)
{
    if (ch->err_io.fd < 0)
        return;
    copy_stderr(ch);
    loop_io_del(&ch->err_io);
    close(ch->err_io.fd);
    ch->err_io.fd = -1;
}

static void err_cb(struct loop_io *io, uint32_t events)
{
    struct child *ch = io->data;
    UNUSED(events);
    if (copy_stderr(ch))
        err_close(ch);
}

/* Closes every inherited descriptor except stdio and keep. */
static void close_fds_except(int keep)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int dfd = dirfd(d);
    struct dirent *e;
    int fds[1024];
    size_t n = 0;
    while ((e = readdir(d)) && n < ARRAY_SIZE(fds)) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd <= 2 || fd == keep || fd == dfd)
            continue;
        fds[n++] = fd;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static const char *signame(int sig)
{
    const char *s = sigabbrev_np(sig);
    static __thread char buf[16];
    snprintf(buf, sizeof(buf), "SIG%s", s ? s : "?");
    return buf;
}

static void print_table(struct sup *s)
{
    FILE *o = s->table_out;
    if (!o)
        return;
    size_t wname = 7, wrole = 4;
    for (size_t i = 0; i < s->n; i++) {
        wname = MAX(wname, strlen(s->children[i].svc->name));
        wrole = MAX(wrole, strlen(s->children[i].svc->role->name));
    }
    fprintf(o, "\n%-*s  %-*s  %-8s  %s\n", (int)wname, "SERVICE", (int)wrole, "ROLE", "PID",
            "ENDPOINTS");
    for (size_t i = 0; i < s->n; i++) {
        const struct service *svc = s->children[i].svc;
        for (size_t e = 0; e < MAX(svc->nendpoints, (size_t)1); e++) {
            const char *what = svc->nendpoints ? svc->endpoints[e].what : "";
            const char *url = svc->nendpoints ? svc->endpoints[e].url : "-";
            if (e == 0)
                fprintf(o, "%-*s  %-*s  %-8d  %-7s %s\n", (int)wname, svc->name, (int)wrole,
                        svc->role->name, (int)s->children[i].pid, what, url);
            else
                fprintf(o, "%-*s  %-*s  %-8s  %-7s %s\n", (int)wname, "", (int)wrole, "", "",
                        what, url);
        }
    }
    fprintf(o, "\n");
    fflush(o);
}

static void check_all_ready(struct sup *s)
{
    if (s->table_printed || s->stopping)
        return;
    for (size_t i = 0; i < s->n; i++)
        if (!s->children[i].ever_ready)
            return;
    s->table_printed = true;
    loop_timer_stop(&s->slow_timer);
    log_info("stack ready", "services", log_int((long long)s->n));
    print_table(s);
}

static void ready_cb(struct loop_io *io, uint32_t events)
{
    struct child *ch = io->data;
    char c;
    UNUSED(events);
    ssize_t r = read(io->fd, &c, 1);
    if (r == -1 && errno == EAGAIN)
        return;
    loop_io_del(io);
    close(io->fd);
    io->fd = -1;
    if (r == 1 && ch->state == CH_STARTING) {
        ch->state = CH_READY;
        ch->ever_ready = true;
        log_info("service ready", "service", ch->svc->name, "pid", log_int(ch->pid));
        check_all_ready(ch->sup);
    }
}

static void restart_cb(struct loop_timer *t)
{
    struct child *ch = t->data;
    if (ch->sup->stopping)
        return;
    start_child(ch->sup, ch);
}

static int start_child(struct sup *s, struct child *ch)
{
    int p[2], e2[2];
    if (pipe2(p, O_CLOEXEC) == -1)
        return -errno;
    if (pipe2(e2, O_CLOEXEC) == -1) {
        int e = -errno;
        close(p[0]);
        close(p[1]);
        return e;
    }
    err_close(ch);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == -1) {
        int e = -errno;
        close(p[0]);
        close(p[1]);
        close(e2[0]);
        close(e2[1]);
        return e;
    }
    if (pid == 0) {
        /* child: become the service */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1)
            _exit(1);   /* the supervisor is already gone */
        if (dup2(e2[1], 2) == -1)
            _exit(1);
        close_fds_except(p[1]);
        prctl(PR_SET_NAME, ch->svc->name);
        log_set_service(ch->svc->name);
        service_set_ready_fd(p[1]);
        /* exit(), not _exit(): stdio was flushed before the fork, and exit
         * handlers (LeakSanitizer in sanitized builds) must run. */
        exit(ch->svc->role->main(ch->svc));
    }
    close(p[1]);
    close(e2[1]);
    loop_io_init(&ch->err_io, e2[0], err_cb, ch);
    fcntl(e2[0], F_SETFL, O_NONBLOCK);
    if (loop_io_add(&s->loop, &ch->err_io, EPOLLIN)) {
        close(e2[0]);
        ch->err_io.fd = -1;
    }
    ch->pid = pid;
    ch->state = CH_STARTING;
    ch->started_ms = cairn_now_ms();
    loop_io_init(&ch->ready_io, p[0], ready_cb, ch);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    loop_io_add(&s->loop, &ch->ready_io, EPOLLIN);
    log_info("service started", "service", ch->svc->name, "role", ch->svc->role->name, "pid",
             log_int(pid));
    return 0;
}

static void stop_all(struct sup *s, int sig)
{
    for (size_t i = 0; i < s->n; i++) {
        struct child *ch = &s->children[i];
        loop_timer_stop(&ch->restart_timer);
        if (ch->pid > 0)
            kill(ch->pid, sig);
        else
            ch->state = CH_EXITED;
    }
}

static void check_done(struct sup *s)
{
    if (!s->stopping)
        return;
    for (size_t i = 0; i < s->n; i++)
        if (s->children[i].pid > 0)
            return;
    loop_stop(&s->loop);
}

static void kill_cb(struct loop_timer *t)
{
    struct sup *s = t->data;
    for (size_t i = 0; i < s->n; i++)
        if (s->children[i].pid > 0)
            log_warn("service did not stop in time, killing it", "service",
                     s->children[i].svc->name, "pid", log_int(s->children[i].pid));
    stop_all(s, SIGKILL);
}

static void begin_stop(struct sup *s, const char *why)
{
    if (s->stopping)
        return;
    s->stopping = true;
    log_info("stopping stack", "reason", why);
    stop_all(s, SIGTERM);
    loop_timer_start(&s->loop, &s->kill_timer, SUPERVISOR_KILL_MS);
    check_done(s);
}

static void slow_cb(struct loop_timer *t)
{
    struct sup *s = t->data;
    for (size_t i = 0; i < s->n; i++)
        if (!s->children[i].ever_ready)
            log_warn("service is not ready yet", "service", s->children[i].svc->name);
    loop_timer_start(&s->loop, &s->slow_timer, SLOW_START_MS);
}

static void reap(struct sup *s)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            break;
        struct child *ch = NULL;
        for (size_t i = 0; i < s->n; i++)
            if (s->children[i].pid == pid)
                ch = &s->children[i];
        if (!ch)
            continue;
        char why[64];
        if (WIFEXITED(status))
            snprintf(why, sizeof(why), "exited with status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            snprintf(why, sizeof(why), "killed by %s%s", signame(WTERMSIG(status)),
                     WCOREDUMP(status) ? " (core dumped)" : "");
        else
            snprintf(why, sizeof(why), "ended");
        ch->pid = 0;
        if (ch->ready_io.fd >= 0 && ch->ready_io.loop)
            ready_cb(&ch->ready_io, EPOLLIN);   /* a readiness byte may still be queued */
        bool was_ready = ch->ever_ready;
        ch->state = CH_EXITED;
        if (s->stopping) {
            log_info("service stopped", "service", ch->svc->name, "pid", log_int(pid), "how", why);
            continue;
        }
        if (!was_ready) {
            log_error("service failed to start", "service", ch->svc->name, "pid", log_int(pid),
                      "how", why);
            s->exit_code = 1;
            begin_stop(s, "a service failed to start");
            continue;
        }
        uint64_t ran = cairn_now_ms() - ch->started_ms;
        if (ran >= STABLE_MS || ch->backoff_ms == 0)
            ch->backoff_ms = BACKOFF_MIN_MS;
        else
            ch->backoff_ms = MIN(ch->backoff_ms * 2, (uint64_t)BACKOFF_MAX_MS);
        ch->restarts++;
        ch->state = CH_BACKOFF;
        log_warn("service died, restarting", "service", ch->svc->name, "pid", log_int(pid),
                 "how", why, "restart_in_ms", log_int((long long)ch->backoff_ms), "restarts",
                 log_int(ch->restarts));
        ch->ever_ready = true;      /* it served before: a restart is not a start failure */
        loop_timer_start(&s->loop, &ch->restart_timer, ch->backoff_ms);
    }
    check_done(s);
}

static void signal_cb(struct loop *l, int signo, void *arg)
{
    struct sup *s = arg;
    UNUSED(l);
    switch (signo) {
    case SIGCHLD:
        reap(s);
        break;
    case SIGHUP:
        for (size_t i = 0; i < s->n; i++)
            if (s->children[i].pid > 0)
                kill(s->children[i].pid, SIGHUP);
        break;
    default:
        if (s->stopping) {
            log_warn("second stop signal, killing services now");
            stop_all(s, SIGKILL);
        } else {
            begin_stop(s, signo == SIGINT ? "SIGINT" : "SIGTERM");
        }
        break;
    }
}

int supervisor_run(const struct stack *st, const struct service *const *svcs, size_t n,
                   FILE *table_out)
{
    struct sup s;
    memset(&s, 0, sizeof(s));
    s.table_out = table_out;
    s.st = st;
    char logdir[1024];
    snprintf(logdir, sizeof(logdir), "%s/log", st->data_dir);
    int r = cairn_mkdir_p(logdir, 0755);
    if (r) {
        log_error("cannot create data directory", "path", st->data_dir, "err", cairn_strerror(r));
        return 1;
    }
    if (loop_init(&s.loop)) {
        log_error("cannot create event loop");
        return 1;
    }
    static const int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP };
    if (loop_signals(&s.loop, sigs, ARRAY_SIZE(sigs), signal_cb, &s)) {
        log_error("cannot set up signal handling");
        loop_destroy(&s.loop);
        return 1;
    }
    s.n = n ? n : st->nservices;
    s.children = calloc(s.n, sizeof(*s.children));
    if (!s.children) {
        loop_destroy(&s.loop);
        return 1;
    }
    loop_timer_init(&s.kill_timer, kill_cb, &s);
    loop_timer_init(&s.slow_timer, slow_cb, &s);
    for (size_t i = 0; i < s.n; i++) {
        struct child *ch = &s.children[i];
        ch->svc = n ? svcs[i] : &st->services[i];
        ch->sup = &s;
        ch->ready_io.fd = -1;
        ch->err_io.fd = -1;
        log_file_open(&s, ch);
        loop_timer_init(&ch->restart_timer, restart_cb, ch);
    }
    log_info("starting stack", "file", st->file, "services", log_int((long long)s.n), "data_dir",
             st->data_dir);
    for (size_t i = 0; i < s.n && !s.stopping; i++) {
        r = start_child(&s, &s.children[i]);
        if (r) {
            log_error("cannot start service", "service", s.children[i].svc->name, "err",
                      cairn_strerror(r));
            s.exit_code = 1;
            begin_stop(&s, "fork failed");
        }
    }
    loop_timer_start(&s.loop, &s.slow_timer, SLOW_START_MS);
    bool alive = false;
    for (size_t i = 0; i < s.n; i++)
        alive |= s.children[i].pid > 0;
    if (alive)
        loop_run(&s.loop);
    for (size_t i = 0; i < s.n; i++) {
        if (s.children[i].ready_io.fd >= 0) {
            loop_io_del(&s.children[i].ready_io);
            close(s.children[i].ready_io.fd);
        }
        /* what the children wrote last */
        err_close(&s.children[i]);     /* non-blocking: a grandchild may hold the pipe */
        if (s.children[i].log_fd >= 0)
            close(s.children[i].log_fd);
    }
    log_info("stack stopped", "exit_code", log_int(s.exit_code));
    free(s.children);
    loop_destroy(&s.loop);
    return s.exit_code;
}
