/* buf.c - growable byte buffers. */
#include "core/buf.h"
#include "core/common.h"

#include <ctype.h>
#include <zlib.h>
#include <math.h>
#include <stdint.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int buf_reserve(struct buf *b, size_t n)
{
    if (b->data && b->cap - b->len >= n)
        return 0;
    /* Reuse the consumed front before growing. */
    if (b->off && b->cap - buf_used(b) >= n) {
        buf_compact(b);
        return 0;
    }
    size_t need = buf_used(b) + n;
    if (need < n)
        return -ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    buf_compact(b);
    char *d = realloc(b->data, cap + 1);
    if (!d)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    b->data[b->len] = '\0';
    return 0;
}

void buf_commit(struct buf *b, size_t n)
{
    BUG_ON(b->len + n > b->cap);
    b->len += n;
    b->data[b->len] = '\0';
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    int r = buf_reserve(b, n);
    if (r)
        return r;
    if (n)
        memcpy(b->data + b->len, p, n);
    buf_commit(b, n);
    return 0;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_putc(struct buf *b, char c)
{
    return buf_append(b, &c, 1);
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int r = buf_reserve(b, 64);
    if (r) {
        va_end(ap2);
        return r;
    }
    int n = vsnprintf(b->data + b->len, b->cap - b->len + 1, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return -EINVAL;
    }
    if ((size_t)n > b->cap - b->len) {
        r = buf_reserve(b, (size_t)n);
        if (r) {
            va_end(ap2);
            return r;
        }
        vsnprintf(b->data + b->len, b->cap - b->len + 1, fmt, ap2);
    }
    va_end(ap2);
    buf_commit(b, (size_t)n);
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return r;
}

void buf_consume(struct buf *b, size_t n)
{
    BUG_ON(n > buf_used(b));
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->data)
        b->data[b->len] = '\0';
}

void buf_reset(struct buf *b)
{
    b->off = b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_compact(struct buf *b)
{
    if (!b->off)
        return;
    size_t n = buf_used(b);
    memmove(b->data, b->data + b->off, n);
    b->off = 0;
    b->len = n;
    b->data[n] = '\0';
}

void buf_free(struct buf *b)
{
    free(b->data);
    *b = BUF_INIT;
}

char *buf_steal(struct buf *b)
{
    if (!b->data) {
        char *s = malloc(1);
        if (s)
            s[0] = '\0';
        return s;
    }
    buf_compact(b);
    char *s = b->data;
    *b = BUF_INIT;
    return s;
}

int buf_put_u64(struct buf *b, uint64_t v)
{
    char tmp[20];
    return buf_append(b, tmp, cairn_u64_digits(v, tmp));
}

int buf_json_escape(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int r = buf_reserve(b, n + 2);
    if (r)
        return r;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = { '\\', (char)c };
            r = buf_append(b, e, 2);
        } else if (c == '\n') {
            r = buf_append(b, "\\n", 2);
        } else if (c == '\r') {
            r = buf_append(b, "\\r", 2);
        } else if (c == '\t') {
            r = buf_append(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            r = buf_append(b, e, 6);
        } else {
            r = buf_putc(b, (char)c);
        }
        if (r)
            return r;
    }
    return 0;
}

int buf_json_str(struct buf *b, const char *s)
{
    if (buf_putc(b, '"') || buf_json_escape(b, s, strlen(s)))
        return -ENOMEM;
    return buf_putc(b, '"');
}

/* Writes v as buf_put_float does into out (BUF_FLOAT_MAX bytes); returns the
 * length. */
static size_t format_float(char *out, double v, char mode)
{
    char *p = out;
    if (isnan(v)) {
        memcpy(p, "NaN", 3);
        return 3;
    }
    if (isinf(v)) {
        memcpy(p, v > 0 ? "+Inf" : "-Inf", 4);
        return 4;
    }
    if ((mode == 'f' || mode == 'j') && fabs(v) < 1e15 && v != 0 && v == (double)(int64_t)v) {
        if (v < 0)
            *p++ = '-';
        return (size_t)(p - out) + cairn_u64_digits((uint64_t)fabs(v), p);
    }
    /* the shortest digits that read back, exactly (cairn_shortest_digits), else
     * from %e at 15, 16 and 17 digits */
    char digits[24];
    int exp, prec;
    size_t nd = (size_t)cairn_shortest_digits(v, digits, &exp, &prec);
    if (!nd) {
        char e[40];
        for (int q = 15; q <= 17; q++) {    /* %e keeps trailing zeros: stripped below */
            snprintf(e, sizeof(e), "%.*e", q - 1, v);
            if (strtod(e, NULL) == v)
                break;
        }
        char *ep = strchr(e, 'e');
        exp = atoi(ep + 1);
        for (char *c = e + (e[0] == '-'); c < ep; c++)
            if (isdigit((unsigned char)*c))
                digits[nd++] = *c;
        while (nd > 1 && digits[nd - 1] == '0')
            nd--;
    }
    if (signbit(v))
        *p++ = '-';
    bool eform = mode == 'e' || (mode == 'g' && (exp < -4 || exp >= 6)) ||
                 (mode == 'j' && v != 0 && (fabs(v) < 1e-6 || fabs(v) >= 1e21));
    if (eform) {
        *p++ = digits[0];
        if (nd > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, nd - 1);
            p += nd - 1;
        }
        int ae = exp < 0 ? -exp : exp;
        *p++ = 'e';
        *p++ = exp < 0 ? '-' : '+';
        if (ae >= 100)
            *p++ = (char)('0' + ae / 100);
        *p++ = (char)('0' + ae / 10 % 10);
        *p++ = (char)('0' + ae % 10);
        return (size_t)(p - out);
    }
    if (exp < 0) {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -exp - 1; i++)
            *p++ = '0';
        memcpy(p, digits, nd);
        return (size_t)(p - out) + nd;
    }
    for (int i = 0; i <= exp; i++)
        *p++ = (size_t)i < nd ? digits[i] : '0';
    if ((int)nd > exp + 1) {
        *p++ = '.';
        memcpy(p, digits + exp + 1, nd - (size_t)exp - 1);
        p += nd - (size_t)exp - 1;
    }
    return (size_t)(p - out);
}

/* The last value formatted on this thread, kept: a series' points repeat their
 * value more often than not (a steady rate, a gauge, a bucket), and the shortest
 * digits are the dearest part of a query answer. */
static _Thread_local struct {
    uint64_t bits;
    char mode;
    uint8_t len;
    char text[30];
} last_float;

size_t buf_float(char *out, double v, char mode)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    if (bits == last_float.bits && mode == last_float.mode) {
        memcpy(out, last_float.text, sizeof(last_float.text));
        return last_float.len;
    }
    size_t n = format_float(out, v, mode);
    if (n <= sizeof(last_float.text)) {
        last_float.bits = bits;
        last_float.mode = mode;
        last_float.len = (uint8_t)n;
        memcpy(last_float.text, out, n);
    }
    return n;
}

void buf_put_float(struct buf *b, double v, char mode)
{
    if (buf_reserve(b, BUF_FLOAT_MAX))
        return;
    buf_commit(b, buf_float(buf_tail(b), v, mode));
}

int buf_inflate(const char *in, size_t n, uint64_t limit, struct buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 32 + MAX_WBITS) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    int r;
    do {
        if (buf_reserve(out, 65536)) {
            inflateEnd(&z);
            return -ENOMEM;
        }
        z.next_out = (Bytef *)buf_tail(out);
        z.avail_out = (uInt)buf_room(out);
        size_t before = buf_room(out);
        r = inflate(&z, Z_NO_FLUSH);
        buf_commit(out, before - z.avail_out);
        if (limit && buf_used(out) > limit) {
            inflateEnd(&z);
            return -EFBIG;
        }
    } while (r == Z_OK);
    inflateEnd(&z);
    return r == Z_STREAM_END ? 0 : -EINVAL;
}

int buf_gzip(const char *in, size_t n, int level, struct buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    if (buf_reserve(out, deflateBound(&z, (uLong)n))) {
        deflateEnd(&z);
        return -ENOMEM;
    }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)buf_tail(out);
    z.avail_out = (uInt)buf_room(out);
    size_t before = buf_room(out);
    int r = deflate(&z, Z_FINISH);
    buf_commit(out, before - z.avail_out);
    deflateEnd(&z);
    return r == Z_STREAM_END ? 0 : -ENOMEM;
}

void buf_go_quote(struct buf *b, const char *s)
{
    buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\t': buf_puts(b, "\\t"); break;
        case '\r': buf_puts(b, "\\r"); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                buf_printf(b, "\\x%02x", *p);
            else
                buf_putc(b, (char)*p);
        }
    }
    buf_putc(b, '"');
}
