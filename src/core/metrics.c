/* metrics.c - per-thread metric arenas and text exposition. */
#include "core/metrics.h"

#include <errno.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_THREADS 128
#define CHUNK_SLOTS 4096
#define MAX_CHUNKS 1024

/* The last observation of a histogram bucket that named a trace. */
struct metric_exemplar {
    char trace_id[33];      /* "" while the bucket has none */
    double value, ts;
};

struct metric {
    struct metric_family *fam;
    char **values;
    size_t slot;            /* first slot in every arena */
    double base;            /* gauge value from metric_set */
    struct metric_exemplar *ex;     /* histograms: one per bucket and +Inf, made on first use */
    struct metric *next;
};

struct metric_family {
    struct metrics_registry *reg;
    enum metric_type type;
    char *name, *help;
    char *labels[METRICS_MAX_LABELS];
    size_t nlabels;
    double *buckets;
    size_t nbuckets;
    metrics_value_fn fn;
    void *fn_arg;
    struct metric *metrics, **tail;
    struct metric_family *next;
};

/* Arena chunks: arenas[t][c] is NULL until thread t first writes into chunk c. */
struct metrics_registry {
    pthread_mutex_t lock;
    struct metric_family *families, **tail;
    size_t next_slot;
    double *arenas[MAX_THREADS][MAX_CHUNKS];
};

static int thread_counter;
static __thread int thread_idx = -1;

/* Threads beyond MAX_THREADS share the last arena and update it atomically. */
static int my_thread(void)
{
    if (unlikely(thread_idx < 0)) {
        int i = __atomic_fetch_add(&thread_counter, 1, __ATOMIC_RELAXED);
        thread_idx = i < MAX_THREADS - 1 ? i : MAX_THREADS - 1;
    }
    return thread_idx;
}

const double metrics_latency_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
const size_t metrics_latency_nbuckets = ARRAY_SIZE(metrics_latency_buckets);

struct metrics_registry *metrics_registry_new(void)
{
    struct metrics_registry *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    pthread_mutex_init(&r->lock, NULL);
    r->tail = &r->families;
    return r;
}

void metrics_registry_free(struct metrics_registry **pr)
{
    struct metrics_registry *r = *pr;
    if (!r)
        return;
    struct metric_family *f = r->families;
    while (f) {
        struct metric_family *fn = f->next;
        struct metric *m = f->metrics;
        while (m) {
            struct metric *mn = m->next;
            for (size_t i = 0; i < f->nlabels; i++)
                free(m->values[i]);
            free(m->values);
            free(m->ex);
            free(m);
            m = mn;
        }
        for (size_t i = 0; i < f->nlabels; i++)
            free(f->labels[i]);
        free(f->name);
        free(f->help);
        free(f->buckets);
        free(f);
        f = fn;
    }
    for (size_t t = 0; t < MAX_THREADS; t++)
        for (size_t c = 0; c < MAX_CHUNKS; c++)
            free(r->arenas[t][c]);
    pthread_mutex_destroy(&r->lock);
    free(r);
    *pr = NULL;
}

static bool valid_name(const char *s, bool allow_colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (allow_colon && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static size_t slots_of(const struct metric_family *f)
{
    return f->type == METRIC_HISTOGRAM ? f->nbuckets + 2 : 1;
}

struct metric_family *metrics_family(struct metrics_registry *reg, enum metric_type type,
                                     const char *name, const char *help,
                                     const char *const *labels,
                                     const double *buckets, size_t nbuckets)
{
    if (!valid_name(name, true))
        return NULL;
    pthread_mutex_lock(&reg->lock);
    for (struct metric_family *f = reg->families; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            pthread_mutex_unlock(&reg->lock);
            return f->type == type ? f : NULL;
        }
    }
    struct metric_family *f = calloc(1, sizeof(*f));
    if (!f)
        goto fail;
    f->reg = reg;
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->tail = &f->metrics;
    if (!f->name || !f->help)
        goto fail_free;
    for (size_t i = 0; labels && labels[i]; i++) {
        if (i == METRICS_MAX_LABELS || !valid_name(labels[i], false) ||
            strncmp(labels[i], "__", 2) == 0)
            goto fail_free;
        f->labels[i] = strdup(labels[i]);
        if (!f->labels[i])
            goto fail_free;
        f->nlabels = i + 1;
    }
    if (type == METRIC_HISTOGRAM) {
        f->buckets = malloc((nbuckets ? nbuckets : 1) * sizeof(double));
        if (!f->buckets)
            goto fail_free;
        for (size_t i = 0; i < nbuckets; i++) {
            if (i && buckets[i] <= buckets[i - 1])
                goto fail_free;
            f->buckets[i] = buckets[i];
        }
        f->nbuckets = nbuckets;
    }
    *reg->tail = f;
    reg->tail = &f->next;
    pthread_mutex_unlock(&reg->lock);
    return f;
fail_free:
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f->buckets);
    free(f);
fail:
    pthread_mutex_unlock(&reg->lock);
    return NULL;
}

struct metric *metrics_get(struct metric_family *f, const char *const *values)
{
    struct metrics_registry *reg = f->reg;
    pthread_mutex_lock(&reg->lock);
    for (struct metric *m = f->metrics; m; m = m->next) {
        size_t i = 0;
        while (i < f->nlabels && strcmp(m->values[i], values[i]) == 0)
            i++;
        if (i == f->nlabels) {
            pthread_mutex_unlock(&reg->lock);
            return m;
        }
    }
    size_t need = slots_of(f);
    struct metric *m = calloc(1, sizeof(*m));
    if (!m || reg->next_slot + need > (size_t)CHUNK_SLOTS * MAX_CHUNKS)
        goto fail;
    m->values = calloc(f->nlabels ? f->nlabels : 1, sizeof(char *));
    if (!m->values)
        goto fail;
    for (size_t i = 0; i < f->nlabels; i++) {
        m->values[i] = strdup(values[i] ? values[i] : "");
        if (!m->values[i]) {
            for (size_t k = 0; k < i; k++)
                free(m->values[k]);
            free(m->values);
            goto fail;
        }
    }
    /* Keep a metric's slots inside one chunk. */
    size_t off = reg->next_slot % CHUNK_SLOTS;
    if (off + need > CHUNK_SLOTS)
        reg->next_slot += CHUNK_SLOTS - off;
    m->slot = reg->next_slot;
    reg->next_slot += need;
    m->fam = f;
    *f->tail = m;
    f->tail = &m->next;
    pthread_mutex_unlock(&reg->lock);
    return m;
fail:
    free(m);
    pthread_mutex_unlock(&reg->lock);
    return NULL;
}

struct metric *metrics_get1(struct metric_family *f, const char *v1)
{
    const char *v[] = { v1 };
    return metrics_get(f, v);
}

struct metric *metrics_get2(struct metric_family *f, const char *v1, const char *v2)
{
    const char *v[] = { v1, v2 };
    return metrics_get(f, v);
}

static struct metric *simple(struct metrics_registry *reg, enum metric_type t, const char *name,
                             const char *help, const double *b, size_t nb)
{
    struct metric_family *f = metrics_family(reg, t, name, help, NULL, b, nb);
    return f ? metrics_get(f, NULL) : NULL;
}

struct metric *metrics_counter(struct metrics_registry *reg, const char *name, const char *help)
{
    return simple(reg, METRIC_COUNTER, name, help, NULL, 0);
}

struct metric *metrics_gauge(struct metrics_registry *reg, const char *name, const char *help)
{
    return simple(reg, METRIC_GAUGE, name, help, NULL, 0);
}

struct metric *metrics_histogram(struct metrics_registry *reg, const char *name,
                                 const char *help, const double *buckets, size_t nbuckets)
{
    return simple(reg, METRIC_HISTOGRAM, name, help, buckets, nbuckets);
}

int metrics_callback(struct metrics_registry *reg, enum metric_type type, const char *name,
                     const char *help, metrics_value_fn fn, void *arg)
{
    if (type == METRIC_HISTOGRAM)
        return -EINVAL;
    struct metric_family *f = metrics_family(reg, type, name, help, NULL, NULL, 0);
    if (!f)
        return -EINVAL;
    f->fn = fn;
    f->fn_arg = arg;
    return 0;
}

/* Returns this thread's slot pointer, allocating the chunk on first use. */
static double *slot_ptr(struct metric *m, size_t k)
{
    struct metrics_registry *reg = m->fam->reg;
    int t = my_thread();
    size_t i = m->slot + k;
    double **cp = &reg->arenas[t][i / CHUNK_SLOTS];
    double *chunk = __atomic_load_n(cp, __ATOMIC_ACQUIRE);
    if (unlikely(!chunk)) {
        double *fresh = calloc(CHUNK_SLOTS, sizeof(double));
        if (!fresh)
            return NULL;
        double *expected = NULL;
        if (!__atomic_compare_exchange_n(cp, &expected, fresh, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            free(fresh);
            chunk = expected;
        } else {
            chunk = fresh;
        }
    }
    return &chunk[i % CHUNK_SLOTS];
}

static void slot_add(struct metric *m, size_t k, double v)
{
    double *p = slot_ptr(m, k);
    if (!p)
        return;
    if (unlikely(thread_idx == MAX_THREADS - 1)) {
        /* shared overflow arena */
        double cur, next;
        __atomic_load(p, &cur, __ATOMIC_RELAXED);
        do {
            next = cur + v;
        } while (!__atomic_compare_exchange(p, &cur, &next, false, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED));
        return;
    }
    double cur;
    __atomic_load(p, &cur, __ATOMIC_RELAXED);
    cur += v;
    __atomic_store(p, &cur, __ATOMIC_RELAXED);
}

static double slot_sum(const struct metric *m, size_t k)
{
    const struct metrics_registry *reg = m->fam->reg;
    size_t i = m->slot + k;
    double sum = 0;
    for (size_t t = 0; t < MAX_THREADS; t++) {
        double *chunk = __atomic_load_n(&reg->arenas[t][i / CHUNK_SLOTS], __ATOMIC_ACQUIRE);
        if (chunk) {
            double v;
            __atomic_load(&chunk[i % CHUNK_SLOTS], &v, __ATOMIC_RELAXED);
            sum += v;
        }
    }
    return sum;
}

void metric_add(struct metric *m, double v)
{
    if (m)
        slot_add(m, 0, v);
}

void metric_set(struct metric *m, double v)
{
    if (m)
        __atomic_store(&m->base, &v, __ATOMIC_RELAXED);
}

/* The first bucket with v <= its bound (nbuckets: +Inf). */
static size_t bucket_of(const struct metric_family *f, double v)
{
    size_t lo = 0, hi = f->nbuckets;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= f->buckets[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Counts v into bucket b (and the sum and count); returns b. */
static size_t observe_at(struct metric *m, double v)
{
    const struct metric_family *f = m->fam;
    size_t b = bucket_of(f, v);
    if (b < f->nbuckets)
        slot_add(m, b, 1);
    slot_add(m, f->nbuckets, v);
    slot_add(m, f->nbuckets + 1, 1);
    return b;
}

void metric_observe(struct metric *m, double v)
{
    if (m)
        observe_at(m, v);
}

void metric_observe_exemplar(struct metric *m, double v, const char *trace_id)
{
    if (!m)
        return;
    size_t b = observe_at(m, v);
    if (!trace_id || !*trace_id || m->fam->type != METRIC_HISTOGRAM)
        return;
    struct metric_family *f = m->fam;
    double now = cairn_wall_time();
    pthread_mutex_lock(&f->reg->lock);
    if (!m->ex)
        m->ex = calloc(f->nbuckets + 1, sizeof(*m->ex));
    if (m->ex) {
        snprintf(m->ex[b].trace_id, sizeof(m->ex[b].trace_id), "%s", trace_id);
        m->ex[b].value = v;
        m->ex[b].ts = now;
    }
    pthread_mutex_unlock(&f->reg->lock);
}

double metric_value(const struct metric *m)
{
    if (m->fam->type == METRIC_HISTOGRAM)
        return slot_sum(m, m->fam->nbuckets + 1);
    double base;
    __atomic_load(&m->base, &base, __ATOMIC_RELAXED);
    return base + slot_sum(m, 0);
}

/* Prints digits[0, n) at decimal exponent x as %g with precision P would. */
static void print_g(char *out, size_t outlen, bool neg, const char *dig, int n, int P, int x)
{
    char *o = out, *end = out + outlen - 1;
#define PUT(c) do { if (o < end) *o++ = (c); } while (0)
    if (neg)
        PUT('-');
    if (x < -4 || x >= P) {
        PUT(dig[0]);
        if (n > 1) {
            PUT('.');
            for (int i = 1; i < n; i++)
                PUT(dig[i]);
        }
        char ex[16];
        snprintf(ex, sizeof(ex), "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
        for (char *p = ex; *p; p++)
            PUT(*p);
    } else if (x < 0) {
        PUT('0');
        PUT('.');
        for (int i = -1; i > x; i--)
            PUT('0');
        for (int i = 0; i < n; i++)
            PUT(dig[i]);
    } else {
        for (int i = 0; i <= x; i++)
            PUT(i < n ? dig[i] : '0');
        if (n > x + 1) {
            PUT('.');
            for (int i = x + 1; i < n; i++)
                PUT(dig[i]);
        }
    }
#undef PUT
    *o = 0;
}

void metrics_format_value(char *out, size_t outlen, double v)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
    } else if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
    } else if (v == (double)(long long)v && fabs(v) < 1e15) {
        snprintf(out, outlen, "%lld", (long long)v);
    } else {
        /* the shortest of %.15g, %.16g and %.17g that reads back */
        char dig[24];
        int x, P, n = cairn_shortest_digits(v, dig, &x, &P);
        if (n) {
            print_g(out, outlen, v < 0, dig, n, P, x);
            return;
        }
        for (int p = 15; p <= 17; p++) {
            snprintf(out, outlen, "%.*g", p, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

static void escape(struct buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_puts(b, "\\\\");
        else if (*s == '\n')
            buf_puts(b, "\\n");
        else if (quote && *s == '"')
            buf_puts(b, "\\\"");
        else
            buf_putc(b, *s);
    }
}

static void write_labels(struct buf *b, const struct metric_family *f, const struct metric *m,
                         const char *extra_k, const char *extra_v)
{
    size_t n = f->nlabels + (extra_k ? 1 : 0);
    if (!n)
        return;
    buf_putc(b, '{');
    for (size_t i = 0; i < f->nlabels; i++) {
        buf_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
        escape(b, m->values[i], true);
        buf_putc(b, '"');
    }
    if (extra_k) {
        buf_printf(b, "%s%s=\"%s\"", f->nlabels ? "," : "", extra_k, extra_v);
    }
    buf_putc(b, '}');
}

static const char *type_name(enum metric_type t)
{
    return t == METRIC_COUNTER ? "counter" : t == METRIC_GAUGE ? "gauge" : "histogram";
}

/* A histogram bucket's line: count, then (OpenMetrics) its exemplar. */
static void write_bucket(struct buf *b, const struct metric_family *f, const struct metric *m, const char *le,
                         double cum, const struct metric_exemplar *ex)
{
    char v[64];
    buf_printf(b, "%s_bucket", f->name);
    write_labels(b, f, m, "le", le);
    metrics_format_value(v, sizeof(v), cum);
    buf_printf(b, " %s", v);
    if (ex && ex->trace_id[0]) {
        metrics_format_value(v, sizeof(v), ex->value);
        buf_printf(b, " # {trace_id=\"%s\"} %s %.3f", ex->trace_id, v, ex->ts);
    }
    buf_putc(b, '\n');
}

static int render(struct metrics_registry *reg, struct buf *b, bool om)
{
    char v[64];
    pthread_mutex_lock(&reg->lock);
    for (struct metric_family *f = reg->families; f; f = f->next) {
        if (!f->metrics && !f->fn)
            continue;
        /* OpenMetrics names a counter's family without its _total (the samples keep
         * it); a counter named otherwise is left untyped there */
        size_t nl = strlen(f->name);
        bool total = nl > 6 && strcmp(f->name + nl - 6, "_total") == 0;
        int fam_len = om && f->type == METRIC_COUNTER && total ? (int)(nl - 6) : (int)nl;
        const char *type = om && f->type == METRIC_COUNTER && !total ? "unknown" : type_name(f->type);
        buf_printf(b, "# HELP %.*s ", fam_len, f->name);
        escape(b, f->help, om);
        buf_printf(b, "\n# TYPE %.*s %s\n", fam_len, f->name, type);
        if (f->fn) {
            metrics_format_value(v, sizeof(v), f->fn(f->fn_arg));
            buf_printf(b, "%s %s\n", f->name, v);
            continue;
        }
        for (struct metric *m = f->metrics; m; m = m->next) {
            if (f->type != METRIC_HISTOGRAM) {
                buf_puts(b, f->name);
                write_labels(b, f, m, NULL, NULL);
                metrics_format_value(v, sizeof(v), metric_value(m));
                buf_printf(b, " %s\n", v);
                continue;
            }
            const struct metric_exemplar *ex = om ? m->ex : NULL;
            double cum = 0;
            char le[64];
            for (size_t i = 0; i < f->nbuckets; i++) {
                cum += slot_sum(m, i);
                metrics_format_value(le, sizeof(le), f->buckets[i]);
                write_bucket(b, f, m, le, cum, ex ? &ex[i] : NULL);
            }
            double count = slot_sum(m, f->nbuckets + 1);
            write_bucket(b, f, m, "+Inf", count, ex ? &ex[f->nbuckets] : NULL);
            buf_printf(b, "%s_sum", f->name);
            write_labels(b, f, m, NULL, NULL);
            metrics_format_value(v, sizeof(v), slot_sum(m, f->nbuckets));
            buf_printf(b, " %s\n", v);
            buf_printf(b, "%s_count", f->name);
            write_labels(b, f, m, NULL, NULL);
            metrics_format_value(v, sizeof(v), count);
            buf_printf(b, " %s\n", v);
        }
    }
    pthread_mutex_unlock(&reg->lock);
    if (om)
        buf_puts(b, "# EOF\n");
    return 0;
}

int metrics_render(struct metrics_registry *reg, struct buf *b)
{
    return render(reg, b, false);
}

int metrics_render_openmetrics(struct metrics_registry *reg, struct buf *b)
{
    return render(reg, b, true);
}

/* ---- process metrics from /proc/self ---- */

static double start_time;

static int read_stat(unsigned long *utime, unsigned long *stime, unsigned long *vsize, long *rss)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -EINVAL;
    /* fields after the command: state(3) ... utime(14) stime(15) ... vsize(23) rss(24) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %lu %ld",
               utime, stime, vsize, rss) != 4)
        return -EINVAL;
    return 0;
}

static double proc_cpu(void *arg)
{
    unsigned long u, s, vs;
    long rss;
    UNUSED(arg);
    if (read_stat(&u, &s, &vs, &rss))
        return 0;
    return (double)(u + s) / (double)sysconf(_SC_CLK_TCK);
}

static double proc_rss(void *arg)
{
    unsigned long u, s, vs;
    long rss;
    UNUSED(arg);
    if (read_stat(&u, &s, &vs, &rss))
        return 0;
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static double proc_vsize(void *arg)
{
    unsigned long u, s, vs;
    long rss;
    UNUSED(arg);
    if (read_stat(&u, &s, &vs, &rss))
        return 0;
    return (double)vs;
}

static double proc_fds(void *arg)
{
    UNUSED(arg);
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    double n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;   /* the directory's own fd */
}

static double proc_max_fds(void *arg)
{
    struct rlimit rl;
    UNUSED(arg);
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return 0;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

static double proc_start(void *arg)
{
    UNUSED(arg);
    return start_time;
}

int metrics_add_process(struct metrics_registry *reg)
{
    if (start_time == 0)
        start_time = floor(cairn_wall_time());
    int r = 0;
    r |= metrics_callback(reg, METRIC_COUNTER, "process_cpu_seconds_total",
                          "Total user and system CPU time spent in seconds.", proc_cpu, NULL);
    r |= metrics_callback(reg, METRIC_GAUGE, "process_resident_memory_bytes",
                          "Resident memory size in bytes.", proc_rss, NULL);
    r |= metrics_callback(reg, METRIC_GAUGE, "process_virtual_memory_bytes",
                          "Virtual memory size in bytes.", proc_vsize, NULL);
    r |= metrics_callback(reg, METRIC_GAUGE, "process_open_fds",
                          "Number of open file descriptors.", proc_fds, NULL);
    r |= metrics_callback(reg, METRIC_GAUGE, "process_max_fds",
                          "Maximum number of open file descriptors.", proc_max_fds, NULL);
    r |= metrics_callback(reg, METRIC_GAUGE, "process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.", proc_start, NULL);
    return r ? -EINVAL : 0;
}
