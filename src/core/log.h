/* log.h - structured logging to stderr, logfmt or JSON.
 *
 * A line is a message plus key/value fields given as a NULL-terminated list of
 * string pairs:
 *
 *     log_info("listening", "addr", "127.0.0.1:8080", "threads", log_int(2), NULL);
 *
 * log_int()/log_dbl() format numbers into a small per-thread ring, valid until
 * the next eight calls on the same thread. Every line starts with ts, level and the
 * process's service name (when set). Lines are written with one write(2) so
 * concurrent processes sharing stderr do not interleave within a line.
 */
#ifndef CAIRN_LOG_H
#define CAIRN_LOG_H

#include <stdarg.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_LOGFMT = 0, LOG_JSON };

void log_setup(enum log_level level, enum log_format format);
void log_set_service(const char *name);   /* copied */
enum log_level log_get_level(void);
/* Parses "debug|info|warn|error" / "logfmt|json"; returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);

void log_emit(enum log_level level, const char *msg, ...);
void log_vemit(enum log_level level, const char *msg, va_list ap);

const char *log_int(long long v);
const char *log_dbl(double v);

#define log_debug(msg, ...) log_emit(LOG_DEBUG, msg, ##__VA_ARGS__, (const char *)0)
#define log_info(msg, ...)  log_emit(LOG_INFO, msg, ##__VA_ARGS__, (const char *)0)
#define log_warn(msg, ...)  log_emit(LOG_WARN, msg, ##__VA_ARGS__, (const char *)0)
#define log_error(msg, ...) log_emit(LOG_ERROR, msg, ##__VA_ARGS__, (const char *)0)

/* Formats one line into out (for tests); returns its length. */
struct buf;
int log_format_line(struct buf *out, enum log_format fmt, enum log_level level,
                    const char *msg, va_list ap);

#endif
