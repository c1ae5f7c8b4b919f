/* log.c - structured logging. */
#include "core/log.h"
#include "core/buf.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_level = LOG_INFO;
static enum log_format log_fmt = LOG_LOGFMT;
static char log_service[64];

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_setup(enum log_level level, enum log_format format)
{
    log_level = level;
    log_fmt = format;
}

void log_set_service(const char *name)
{
    snprintf(log_service, sizeof(log_service), "%s", name ? name : "");
}

enum log_level log_get_level(void)
{
    return log_level;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < ARRAY_SIZE(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "logfmt") == 0)
        *out = LOG_LOGFMT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_JSON;
    else
        return -EINVAL;
    return 0;
}

static __thread char num_ring[8][32];
static __thread unsigned num_next;

const char *log_int(long long v)
{
    char *s = num_ring[num_next++ & 7];
    snprintf(s, 32, "%lld", v);
    return s;
}

const char *log_dbl(double v)
{
    char *s = num_ring[num_next++ & 7];
    snprintf(s, 32, "%g", v);
    return s;
}

/* logfmt values are quoted when they hold spaces, quotes, '=' or control bytes. */
static void logfmt_value(struct buf *b, const char *v)
{
    bool quote = *v == '\0';
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) {
            quote = true;
            break;
        }
    }
    if (!quote) {
        buf_puts(b, v);
        return;
    }
    buf_putc(b, '"');
    buf_json_escape(b, v, strlen(v));
    buf_putc(b, '"');
}

static void add_field(struct buf *b, enum log_format fmt, const char *k, const char *v)
{
    if (fmt == LOG_JSON) {
        buf_puts(b, ",\"");
        buf_json_escape(b, k, strlen(k));
        buf_puts(b, "\":\"");
        buf_json_escape(b, v, strlen(v));
        buf_putc(b, '"');
    } else {
        buf_putc(b, ' ');
        buf_puts(b, k);
        buf_putc(b, '=');
        logfmt_value(b, v);
    }
}

int log_format_line(struct buf *b, enum log_format fmt, enum log_level level,
                    const char *msg, va_list ap)
{
    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof(tbuf) - n, ".%03ldZ", ts.tv_nsec / 1000000);

    size_t start = buf_used(b);
    if (fmt == LOG_JSON) {
        buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\"", tbuf, level_names[level]);
    } else {
        buf_printf(b, "ts=%s level=%s", tbuf, level_names[level]);
    }
    if (log_service[0])
        add_field(b, fmt, "svc", log_service);
    add_field(b, fmt, "msg", msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        add_field(b, fmt, k, v ? v : "");
    }
    if (fmt == LOG_JSON)
        buf_putc(b, '}');
    buf_putc(b, '\n');
    return (int)(buf_used(b) - start);
}

void log_vemit(enum log_level level, const char *msg, va_list ap)
{
    if (level < log_level)
        return;
    struct buf b = BUF_INIT;
    log_format_line(&b, log_fmt, level, msg, ap);
    const char *p = buf_head(&b);
    size_t n = buf_used(&b);
    while (n) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w == -1 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        p += w;
        n -= (size_t)w;
    }
    buf_free(&b);
}

void log_emit(enum log_level level, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    log_vemit(level, msg, ap);
    va_end(ap);
}
