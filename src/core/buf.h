/* buf.h - growable byte buffers.
 *
 * A buffer holds bytes in data[off, len): consuming from the front advances off
 * (no memmove per request); buf_compact() moves the live bytes down only when the
 * free tail is too small. Connections keep their buffers across requests, so the
 * hot path does not allocate once the buffers have grown to the working size.
 * The data is always kept NUL-terminated (one spare byte) for convenience.
 */
#ifndef CAIRN_BUF_H
#define CAIRN_BUF_H

#include "core/common.h"
#include <stdarg.h>

struct buf {
    char *data;
    size_t off;     /* first live byte */
    size_t len;     /* end of live bytes */
    size_t cap;     /* allocated size, excluding the spare NUL byte */
};

#define BUF_INIT ((struct buf){ NULL, 0, 0, 0 })

static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }
/* The live bytes; an empty buffer that never allocated gives "" (never NULL, so
 * that memcpy and friends may be handed an empty buffer's head). */
static inline char *buf_head(const struct buf *b) { return b->data ? b->data + b->off : (char *)""; }
static inline char *buf_tail(const struct buf *b) { return b->data + b->len; }
static inline size_t buf_room(const struct buf *b) { return b->cap - b->len; }
static inline struct strv buf_strv(const struct buf *b)
{
    return strv_make(b->data ? buf_head(b) : "", buf_used(b));
}

/* Ensures at least n free bytes after len; returns 0 or -ENOMEM. */
int buf_reserve(struct buf *b, size_t n);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Marks n bytes written directly at buf_tail() as live. */
void buf_commit(struct buf *b, size_t n);
/* Drops n bytes from the front. */
void buf_consume(struct buf *b, size_t n);
/* Empties the buffer, keeping its memory. */
void buf_reset(struct buf *b);
/* Moves the live bytes to the start of the allocation. */
void buf_compact(struct buf *b);
/* Frees memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* Returns the live bytes as a malloc'd NUL-terminated string, resetting b. */
char *buf_steal(struct buf *b);

/* Appends an unsigned decimal number (no printf on hot paths). */
int buf_put_u64(struct buf *b, uint64_t v);
static inline int buf_put_strv(struct buf *b, struct strv s) { return buf_append(b, s.p, s.n); }

/* Appends s with JSON string escaping (no surrounding quotes). */
int buf_json_escape(struct buf *b, const char *s, size_t n);
/* Appends s as a quoted JSON string. */
int buf_json_str(struct buf *b, const char *s);
/* Appends v as Go's strconv.FormatFloat prints it, exactly (shortest digits that
 * read back): mode 'f' (-1 precision), 'e', 'g', or 'j' (as Prometheus and Loki
 * write sample values in JSON: 'f' except below 1e-6 and from 1e21 on, where 'e').
 * NaN, +Inf and -Inf as Go spells them. */
void buf_put_float(struct buf *b, double v, char mode);
/* The same written at out, which has room for BUF_FLOAT_MAX bytes (a 'f' of 1e308
 * is 309 digits); returns the length. For callers that reserve once for a run of
 * values. */
#define BUF_FLOAT_MAX 340
size_t buf_float(char *out, double v, char mode);
/* Appends s quoted as Go's %q does for printable ASCII (label values in Prometheus's
 * and Loki's label-set strings): \" \\ \n \t \r, other controls as \xNN. */
void buf_go_quote(struct buf *b, const char *s);
/* Appends the gzip or zlib stream in (either, by its header) decompressed to out.
 * 0, -EFBIG past limit bytes (0: none), -EINVAL when malformed, -ENOMEM. */
int buf_inflate(const char *in, size_t n, uint64_t limit, struct buf *out);
/* Appends in as one gzip stream (RFC 1952) at level 1..9. 0 or -ENOMEM. */
int buf_gzip(const char *in, size_t n, int level, struct buf *out);

#endif
