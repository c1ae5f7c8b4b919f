/* la_files.c - file targets: globs looked at every poll, files tailed from their
 * saved position, rotation by rename-and-create (the old file is read to its end
 * first) and by copytruncate (a file shorter than its position starts over), files
 * deleted while open (read to their end, then dropped), and the positions file.
 *
 * At-least-once: a file's position only advances when the entries read up to it
 * were accepted by the store (la__file_acked), and is saved every sync_period and
 * at a stop; reading pauses while the clients hold buffer_bytes.
 */
#include "logagent_internal.h"
#include "core/log.h"
#include "core/logql.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LA_READ_CHUNK (256u << 10)
#define LA_MAX_READ_PER_POLL (8u << 20)

struct la_file {
    char *path;
    const struct la_job *job;
    const struct la_target *target;
    int fd;
    dev_t dev;
    ino_t ino;
    uint64_t off;                       /* read up to here */
    uint64_t acked;                     /* accepted by the store up to here */
    struct buf partial;                 /* a line without its newline yet */
    struct buf ml;                      /* multiline: the entry being joined */
    uint32_t ml_lines;
    uint64_t ml_since, ml_end;
    int64_t ml_ts;
    bool seen;
};

static void file_free(struct la_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    buf_free(&f->partial);
    buf_free(&f->ml);
    free(f->path);
    free(f);
}

/* ---- positions ---- */

static void positions_load(struct la_svc *s)
{
    FILE *fp = fopen(s->positions_path, "r");
    if (!fp)
        return;
    char line[4352];
    while (fgets(line, sizeof(line), fp)) {
        /* "  /path/to/file: \"123\"" under "positions:" */
        char *p = line;
        while (*p == ' ')
            p++;
        if (p == line || !strncmp(p, "positions:", 10))
            continue;
        char *colon = strrchr(p, ':');
        if (!colon)
            continue;
        *colon = 0;
        char *v = colon + 1;
        while (*v == ' ' || *v == '"')
            v++;
        char *path = p;
        if (*path == '"') {
            path++;
            char *q = strrchr(path, '"');
            if (q)
                *q = 0;
        }
        char *val = strdup(v);
        if (!val)
            continue;
        val[strcspn(val, "\"\n")] = 0;
        char *old = hmap_get(&s->positions, path, strlen(path));
        free(old);
        if (hmap_put(&s->positions, path, strlen(path), val))
            free(val);
    }
    fclose(fp);
}

void la__positions_sync(struct la_svc *s)
{
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&s->files, &it, &slot);) {
        struct la_file *f = slot->value;
        char v[32];
        snprintf(v, sizeof(v), "%llu", (unsigned long long)f->acked);
        char *old = hmap_get(&s->positions, f->path, strlen(f->path));
        char *nv = strdup(v);
        if (!nv)
            continue;
        if (hmap_put(&s->positions, f->path, strlen(f->path), nv)) {
            free(nv);
            continue;
        }
        free(old);
    }
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->positions_path);
    FILE *fp = fopen(tmp, "w");
    if (!fp) {
        log_error("log-agent: cannot write the positions file", "file", tmp, "error", cairn_strerror(-errno));
        return;
    }
    fputs("positions:\n", fp);
    for (size_t it = 0; hmap_next(&s->positions, &it, &slot);)
        fprintf(fp, "  %s: \"%s\"\n", slot->key, (const char *)slot->value);
    bool ok = fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    if (fclose(fp) != 0)
        ok = false;
    if (!ok || rename(tmp, s->positions_path) == -1) {
        log_error("log-agent: cannot write the positions file", "file", s->positions_path, "error",
                  cairn_strerror(-errno));
        unlink(tmp);
    }
}

/* ---- reading ---- */

/* One complete line (or a multiline entry) ending at file offset end. */
static void emit(struct la_svc *s, struct la_file *f, const char *line, size_t n, int64_t ts, uint64_t end)
{
    struct la_entry e;
    memset(&e, 0, sizeof(e));
    e.ts = ts;
    if (n > LA_MAX_LINE)
        n = LA_MAX_LINE;
    if (!(e.line = malloc(n + 1)))
        return;
    memcpy(e.line, line, n);
    e.line[n] = 0;
    e.n = n;
    metric_inc(s->m_read_lines);
    metric_add(s->m_read_bytes, (double)n);
    relabel_set_put(&e.labels, "__path__", f->path);
    relabel_set_put(&e.labels, "filename", f->path);
    for (size_t i = 0; i < f->target->nlabels; i++)
        relabel_set_put(&e.labels, f->target->labels[i].name, f->target->labels[i].value);
    if (!la__process(s, f->job, &e)) {
        /* dropped by relabeling or a stage: nothing to wait for */
        free(e.line);
        relabel_set_clear(&e.labels);
        if (f->acked < end)
            la__file_acked(s, f, end);
        return;
    }
    la__ship(s, &e, f, end);
}

static const struct la_stage *multiline_of(const struct la_job *j)
{
    return j->nstages && j->stages[0].kind == LA_MULTILINE ? &j->stages[0] : NULL;
}

static void ml_flush(struct la_svc *s, struct la_file *f)
{
    if (!f->ml_lines)
        return;
    emit(s, f, buf_head(&f->ml), buf_used(&f->ml), f->ml_ts, f->ml_end);
    buf_reset(&f->ml);
    f->ml_lines = 0;
}

static void on_line(struct la_svc *s, struct la_file *f, const char *line, size_t n, uint64_t end)
{
    if (n && line[n - 1] == '\r')
        n--;
    int64_t now = (int64_t)(cairn_wall_time() * 1e9);
    const struct la_stage *ml = multiline_of(f->job);
    if (!ml) {
        emit(s, f, line, n, now, end);
        return;
    }
    pcre2_match_data *md = lq_match_data();
    bool first = md && pcre2_match(ml->re, (PCRE2_SPTR)line, n, 0, 0, md, NULL) >= 0;
    if (first || !f->ml_lines || f->ml_lines >= ml->max_lines) {
        ml_flush(s, f);
        f->ml_ts = now;
        f->ml_since = cairn_now_ms();
    } else {
        buf_putc(&f->ml, '\n');
    }
    buf_append(&f->ml, line, n);
    f->ml_lines++;
    f->ml_end = end;
}

/* Reads what is new in f; returns bytes read. */
static uint64_t file_read(struct la_svc *s, struct la_file *f, uint64_t budget)
{
    uint64_t total = 0;
    char *chunk = malloc(LA_READ_CHUNK);
    if (!chunk)
        return 0;
    while (total < budget && la__clients_buffered(s) < s->conf->buffer_bytes) {
        ssize_t k = pread(f->fd, chunk, LA_READ_CHUNK, (off_t)f->off);
        if (k <= 0)
            break;
        uint64_t base = f->off;
        f->off += (uint64_t)k;
        total += (uint64_t)k;
        const char *p = chunk, *end = chunk + k;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) {
                if (buf_used(&f->partial) < LA_MAX_LINE)
                    buf_append(&f->partial, p, (size_t)(end - p));
                break;
            }
            uint64_t eoff = base + (uint64_t)(nl - chunk) + 1;
            if (buf_used(&f->partial)) {
                buf_append(&f->partial, p, (size_t)(nl - p));
                on_line(s, f, buf_head(&f->partial), buf_used(&f->partial), eoff);
                buf_reset(&f->partial);
            } else {
                on_line(s, f, p, (size_t)(nl - p), eoff);
            }
            p = nl + 1;
        }
    }
    free(chunk);
    return total;
}

static struct la_file *file_open(struct la_svc *s, const char *path, const struct la_job *j, const struct la_target *t)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return NULL;
    struct stat sb;
    if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return NULL;
    }
    struct la_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(fd);
        return NULL;
    }
    f->fd = fd;
    f->dev = sb.st_dev;
    f->ino = sb.st_ino;
    f->job = j;
    f->target = t;
    const char *pos = hmap_get(&s->positions, path, strlen(path));
    if (pos) {
        uint64_t off = strtoull(pos, NULL, 10);
        /* a file shorter than its saved position was truncated or replaced: start over */
        f->off = f->acked = off <= (uint64_t)sb.st_size ? off : 0;
    }
    if (hmap_put(&s->files, path, strlen(path), f)) {
        file_free(f);
        return NULL;
    }
    log_info("log-agent: tailing a file", "file", path, "job", j->name, "from", log_int((long long)f->off));
    return f;
}

static void check_file(struct la_svc *s, struct la_file *f)
{
    struct stat at, cur;
    bool gone = stat(f->path, &at) == -1;
    if (fstat(f->fd, &cur) == 0 && (uint64_t)cur.st_size < f->off) {
        /* copytruncate: the file was emptied under us */
        log_info("log-agent: a file was truncated, reading it from the start", "file", f->path);
        f->off = 0;
        f->acked = 0;
        buf_reset(&f->partial);
    }
    file_read(s, f, LA_MAX_READ_PER_POLL);
    if (gone || at.st_ino != f->ino || at.st_dev != f->dev) {
        /* renamed or deleted: the old file was read to its end above (a line still
           without its newline is given as it is) */
        if (buf_used(&f->partial)) {
            on_line(s, f, buf_head(&f->partial), buf_used(&f->partial), f->off);
            buf_reset(&f->partial);
        }
        ml_flush(s, f);
        if (la__clients_buffered(s) >= s->conf->buffer_bytes)
            return;     /* not read to its end yet: keep it */
        struct stat again;
        if (fstat(f->fd, &again) == 0 && (uint64_t)again.st_size > f->off)
            return;
        const struct la_job *j = f->job;
        const struct la_target *t = f->target;
        char *path = strdup(f->path);
        log_info("log-agent: a file was rotated or deleted", "file", f->path);
        hmap_del(&s->files, f->path, strlen(f->path));
        /* the positions of the new file start at 0 */
        char *old = hmap_del(&s->positions, f->path, strlen(f->path));
        free(old);
        la__file_acked(s, f, UINT64_MAX);
        file_free(f);
        if (path && !gone)
            file_open(s, path, j, t);
        free(path);
        return;
    }
    /* multiline: an entry waiting longer than max_wait_time goes out */
    const struct la_stage *ml = multiline_of(f->job);
    if (ml && f->ml_lines && cairn_now_ms() - f->ml_since >= ml->max_wait_ms)
        ml_flush(s, f);
}

static void poll_files(struct la_svc *s)
{
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&s->files, &it, &slot);)
        ((struct la_file *)slot->value)->seen = false;
    for (size_t j = 0; j < s->njobs; j++) {
        const struct la_job *job = &s->jobs[j];
        for (size_t t = 0; t < job->ntargets; t++) {
            glob_t g;
            if (glob(job->targets[t].path_glob, 0, NULL, &g) != 0)
                continue;
            for (size_t i = 0; i < g.gl_pathc; i++) {
                const char *p = g.gl_pathv[i];
                if (job->targets[t].exclude_glob && fnmatch(job->targets[t].exclude_glob, p, 0) == 0)
                    continue;
                struct la_file *f = hmap_get(&s->files, p, strlen(p));
                if (!f)
                    f = file_open(s, p, job, &job->targets[t]);
                if (f)
                    f->seen = true;
            }
            globfree(&g);
        }
    }
    /* read every file; collect the ones that go away first (the map changes) */
    size_t n = s->files.n, k = 0;
    struct la_file **all = malloc((n ? n : 1) * sizeof(*all));
    if (!all)
        return;
    for (size_t it = 0; hmap_next(&s->files, &it, &slot);)
        all[k++] = slot->value;
    for (size_t i = 0; i < k; i++)
        check_file(s, all[i]);
    free(all);
    metric_set(s->m_files, (double)s->files.n);
}

static void on_poll(struct loop_timer *t)
{
    struct la_svc *s = t->data;
    poll_files(s);
    if (!service_stopping(s->sc))
        loop_timer_start(s->loop, &s->poll, s->conf->poll_ms);
}

static void on_sync(struct loop_timer *t)
{
    struct la_svc *s = t->data;
    la__positions_sync(s);
    if (!service_stopping(s->sc))
        loop_timer_start(s->loop, &s->sync, s->conf->positions_sync_ms);
}

void la__file_acked(struct la_svc *s, struct la_file *f, uint64_t offset)
{
    (void)s;
    if (offset == UINT64_MAX) {
        /* f goes away: the clients forget it */
        la__clients_forget(s, f);
        return;
    }
    if (offset > f->acked)
        f->acked = offset;
}

int la__files_start(struct la_svc *s)
{
    positions_load(s);
    loop_timer_init(&s->poll, on_poll, s);
    loop_timer_init(&s->sync, on_sync, s);
    poll_files(s);
    loop_timer_start(s->loop, &s->poll, s->conf->poll_ms);
    loop_timer_start(s->loop, &s->sync, s->conf->positions_sync_ms);
    return 0;
}

void la__files_stop(struct la_svc *s)
{
    loop_timer_stop(&s->poll);
    loop_timer_stop(&s->sync);
    la__positions_sync(s);
    const struct hmap_slot *slot;
    for (size_t it = 0; hmap_next(&s->files, &it, &slot);)
        file_free(slot->value);
    hmap_free(&s->files);
    for (size_t it = 0; hmap_next(&s->positions, &it, &slot);)
        free(slot->value);
    hmap_free(&s->positions);
}
