/* http1.c - strict incremental HTTP/1.1 parsing and writing. */
#include "core/http1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

const struct http1_limits http1_default_limits = {
    .max_request_line = 8192,
    .max_header_bytes = 65536,
    .max_headers = HTTP_MAX_HEADERS,
    .max_body = 8 * 1024 * 1024,
};

/* tchar (RFC 9110 section 5.6.2) */
static const uint8_t tchar_map[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
    ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static inline bool is_tchar(unsigned char c) { return tchar_map[c]; }
/* field-value bytes: HTAB, SP, VCHAR, obs-text */
static inline bool is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Looks for the blank line ending a head. Returns the head end offset (> 0),
 * 0 for incomplete, or a negated status. */
static int scan_head(const char *buf, size_t len, struct http1_scan *s,
                     const struct http1_limits *lim, bool is_request)
{
    size_t i = s->pos;
    /* RFC 9112 section 2.2: ignore a few empty lines before the request line. */
    if (s->pos == s->start) {
        while (s->start < 8 && s->start + 1 < len && buf[s->start] == '\r' &&
               buf[s->start + 1] == '\n')
            s->start += 2;
        s->pos = i = s->start;
        if (s->start < 8 && len == s->start + 1 && buf[s->start] == '\r')
            return 0;
    }
    for (; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i == s->start || buf[i - 1] != '\r') {
            s->pos = i;
            return is_request ? -400 : -502;     /* bare LF */
        }
        if (!s->first_line_done) {
            s->first_line_done = true;
            if (is_request && i + 1 - s->start > lim->max_request_line + 2)
                return -414;
        }
        if (i >= s->start + 3 && buf[i - 2] == '\n') {
            if (i + 1 - s->start > lim->max_header_bytes)
                return is_request ? -431 : -502;
            s->pos = i + 1;
            return (int)(i + 1);
        }
    }
    s->pos = len;
    if (!s->first_line_done && is_request && len - s->start > lim->max_request_line + 2)
        return -414;
    if (len - s->start > lim->max_header_bytes)
        return is_request ? -431 : -502;
    return 0;
}

/* Parses header lines in [p, end) (end points after the final CRLF CRLF). */
static int parse_fields(const char *p, const char *end, struct http_header *hdrs,
                        size_t *nhdrs, size_t max, int err)
{
    size_t n = 0;
    while (p < end) {
        if (p[0] == '\r')   /* the blank line */
            break;
        if (p[0] == ' ' || p[0] == '\t')
            return err;     /* obs-fold (RFC 9112 section 5.2) */
        const char *name = p;
        while (p < end && is_tchar((unsigned char)*p))
            p++;
        if (p == name || p >= end || *p != ':')
            return err;     /* empty name, bad byte, or space before the colon */
        size_t namelen = (size_t)(p - name);
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *val = p;
        while (p < end && *p != '\r') {
            if (!is_field_byte((unsigned char)*p))
                return err;
            p++;
        }
        if (p + 1 >= end || p[1] != '\n')
            return err;     /* bare CR */
        const char *vend = p;
        while (vend > val && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        if (n == max)
            return err == -400 ? -431 : err;
        hdrs[n].name = strv_make(name, namelen);
        hdrs[n].value = strv_make(val, (size_t)(vend - val));
        n++;
        p += 2;
    }
    *nhdrs = n;
    return 0;
}

const struct http_header *http_find_header(const struct http_header *h, size_t n,
                                           const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strv_caseeq_cstr(h[i].name, name))
            return &h[i];
    return NULL;
}

/* Iterates over the comma-separated elements of a list value. */
static bool list_next(struct strv *rest, struct strv *elem)
{
    while (rest->n) {
        const char *comma = memchr(rest->p, ',', rest->n);
        size_t n = comma ? (size_t)(comma - rest->p) : rest->n;
        *elem = strv_trim(strv_make(rest->p, n));
        rest->p += comma ? n + 1 : n;
        rest->n -= comma ? n + 1 : n;
        if (elem->n)
            return true;
    }
    return false;
}

bool http_etag_next(struct strv *list, struct strv *tag)
{
    const char *p = list->p, *end = list->p + list->n;
    while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
        p++;
    if (p == end)
        return false;
    if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
        p += 2;
    const char *s = p;
    if (p < end && *p == '"') {
        p++;
        while (p < end && *p != '"')
            p++;
        if (p < end)
            p++;
    } else {
        while (p < end && *p != ',')
            p++;
    }
    *tag = strv_trim(strv_make(s, (size_t)(p - s)));
    list->p = p;
    list->n = (size_t)(end - p);
    return true;
}

bool http_etag_list_matches(struct strv list, const char *etag)
{
    struct strv e = strv_cstr(etag), t;
    if (e.n >= 2 && e.p[0] == 'W' && e.p[1] == '/') {
        e.p += 2;
        e.n -= 2;
    }
    while (http_etag_next(&list, &t))
        if (strv_eq_cstr(t, "*") || strv_eq(t, e))
            return true;
    return false;
}

bool http_list_has_token(struct strv value, const char *token)
{
    struct strv e;
    while (list_next(&value, &e))
        if (strv_caseeq_cstr(e, token))
            return true;
    return false;
}

/* Shared framing rules for requests and responses (RFC 9112 section 6).
 * Returns 0 or the given error status. */
static int parse_framing(const struct http_header *h, size_t n, int minor,
                         int64_t *clen, bool *chunked, bool *keep_alive, bool is_request)
{
    bool have_cl = false, have_te = false;
    uint64_t cl = 0;
    bool close = false, ka = false;
    *chunked = false;
    for (size_t i = 0; i < n; i++) {
        if (strv_caseeq_cstr(h[i].name, "content-length")) {
            struct strv rest = h[i].value, e;
            bool any = false;
            while (list_next(&rest, &e)) {
                uint64_t v;
                if (strv_to_u64(e, &v) || v > (uint64_t)INT64_MAX)
                    return -400;
                if ((have_cl || any) && v != cl)
                    return -400;
                cl = v;
                any = true;
            }
            if (!any)
                return -400;
            have_cl = true;
        } else if (strv_caseeq_cstr(h[i].name, "transfer-encoding")) {
            struct strv rest = h[i].value, e;
            bool any = false;
            while (list_next(&rest, &e)) {
                any = true;
                if (*chunked)
                    return -400;   /* nothing may follow chunked; chunked twice is an error */
                if (strv_caseeq_cstr(e, "chunked"))
                    *chunked = true;
                else if (is_request)
                    have_te = true; /* a coding we do not decode: 501 unless framing fails */
            }
            if (!any)
                return -400;
            if (!*chunked && is_request)
                return -400;       /* RFC 9112 section 6.3 rule 4 */
            have_te = true;
        } else if (strv_caseeq_cstr(h[i].name, "connection")) {
            if (http_list_has_token(h[i].value, "close"))
                close = true;
            if (http_list_has_token(h[i].value, "keep-alive"))
                ka = true;
        }
    }
    if (have_te && have_cl)
        return -400;
    if (have_te && minor == 0)
        return -400;               /* RFC 9112 section 6.1: faulty framing */
    if (is_request && have_te) {
        /* only "chunked" alone is supported */
        for (size_t i = 0; i < n; i++) {
            if (!strv_caseeq_cstr(h[i].name, "transfer-encoding"))
                continue;
            struct strv rest = h[i].value, e;
            while (list_next(&rest, &e))
                if (!strv_caseeq_cstr(e, "chunked"))
                    return -501;
        }
    }
    *clen = have_cl ? (int64_t)cl : -1;
    *keep_alive = minor >= 1 ? !close : (ka && !close);
    return 0;
}

int http1_parse_request(const char *buf, size_t len, struct http1_scan *scan,
                        const struct http1_limits *lim, struct http_request *req)
{
    int end = scan_head(buf, len, scan, lim, true);
    if (end <= 0)
        return end;
    const char *p = buf + scan->start, *e = buf + end;

    /* request-line = method SP request-target SP HTTP-version CRLF */
    const char *m = p;
    while (p < e && is_tchar((unsigned char)*p))
        p++;
    if (p == m || *p != ' ')
        return -400;
    req->method = strv_make(m, (size_t)(p - m));
    p++;
    const char *t = p;
    while (p < e && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f)
        p++;
    if (p == t || *p != ' ')
        return -400;
    req->target = strv_make(t, (size_t)(p - t));
    p++;
    if (e - p < 10 || memcmp(p, "HTTP/", 5) != 0)
        return -400;
    if (p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' || p[7] > '9' || p[8] != '\r')
        return -400;
    if (p[5] != '1')
        return -505;
    req->minor = p[7] - '0';
    if (req->minor > 1)
        req->minor = 1;     /* HTTP/1.x with x > 1 is treated as 1.1 (RFC 9110 2.5) */
    p += 10;

    /* path and query */
    struct strv path = req->target, authority = STRV_NULL;
    if (path.p[0] != '/' && !(path.n == 1 && path.p[0] == '*')) {
        /* absolute-form: scheme://authority[/path][?query]. The authority stands
         * in for Host and the target becomes origin-form (RFC 9112 3.2.2), so
         * routing, cache keys and the forwarded request all see one host. */
        const char *s = memchr(path.p, ':', path.n);
        if (s && (size_t)(s - path.p) + 3 <= path.n && s[1] == '/' && s[2] == '/') {
            struct strv scheme = strv_make(path.p, (size_t)(s - path.p));
            if (!strv_caseeq_cstr(scheme, "http") && !strv_caseeq_cstr(scheme, "https"))
                return -400;
            const char *a = s + 3, *pe = path.p + path.n, *ae = a;
            while (ae < pe && *ae != '/' && *ae != '?' && *ae != '#')
                ae++;
            if (ae == a || (ae < pe && *ae != '/'))
                return -400;    /* no host, or a query without a path */
            authority = strv_make(a, (size_t)(ae - a));
            path = ae < pe ? strv_make(ae, (size_t)(pe - ae)) : STRV("/");
            req->target = path;
        } else if (!strv_eq_cstr(req->method, "CONNECT")) {
            return -400;
        }
    }
    const char *q = memchr(path.p, '?', path.n);
    if (q) {
        req->query = strv_make(q + 1, (size_t)(path.p + path.n - q - 1));
        req->path = strv_make(path.p, (size_t)(q - path.p));
    } else {
        req->query = strv_make(path.p + path.n, 0);
        req->path = path;
    }

    int r = parse_fields(p, e, req->headers, &req->nheaders,
                         MIN(lim->max_headers, (size_t)HTTP_MAX_HEADERS), -400);
    if (r)
        return r;

    req->host = STRV_NULL;
    req->expect_continue = false;
    int hosts = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (strv_caseeq_cstr(h->name, "host")) {
            hosts++;
            req->host = h->value;
            for (size_t k = 0; k < h->value.n; k++)
                if (h->value.p[k] == ' ' || h->value.p[k] == '\t' || h->value.p[k] == '/' ||
                    h->value.p[k] == '@')
                    return -400;
        } else if (strv_caseeq_cstr(h->name, "expect")) {
            if (strv_caseeq_cstr(h->value, "100-continue"))
                req->expect_continue = true;
        }
    }
    if (hosts > 1 || (hosts == 0 && req->minor == 1 && !authority.n))
        return -400;            /* RFC 9112 section 3.2 */
    if (authority.n) {
        for (size_t k = 0; k < authority.n; k++)
            if (authority.p[k] == '@' || authority.p[k] == '\\')
                return -400;    /* userinfo has no place in a request (RFC 9110 4.2.4) */
        req->host = authority;
    }
    r = parse_framing(req->headers, req->nheaders, req->minor, &req->content_length,
                      &req->chunked, &req->keep_alive, true);
    if (r)
        return r;
    if (req->content_length > 0 && (uint64_t)req->content_length > lim->max_body)
        return -413;
    req->is_head = strv_eq_cstr(req->method, "HEAD");
    return end;
}

int http1_parse_response(const char *buf, size_t len, struct http1_scan *scan,
                         const struct http1_limits *lim, struct http_response *resp)
{
    int end = scan_head(buf, len, scan, lim, false);
    if (end <= 0)
        return end;
    const char *p = buf + scan->start, *e = buf + end;
    /* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF */
    if (e - p < 14 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' || p[8] != ' ')
        return -502;
    resp->minor = p[7] - '0';
    p += 9;
    if (p[0] < '1' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
        return -502;
    resp->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 3;
    if (*p == ' ')
        p++;
    else if (*p != '\r')
        return -502;
    const char *rs = p;
    while (p < e && *p != '\r') {
        if (!is_field_byte((unsigned char)*p))
            return -502;
        p++;
    }
    resp->reason = strv_make(rs, (size_t)(p - rs));
    p += 2;
    int r = parse_fields(p, e, resp->headers, &resp->nheaders,
                         MIN(lim->max_headers, (size_t)HTTP_MAX_HEADERS), -502);
    if (r)
        return -502;
    r = parse_framing(resp->headers, resp->nheaders, resp->minor, &resp->content_length,
                      &resp->chunked, &resp->keep_alive, false);
    if (r)
        return -502;
    return end;
}

/* ---- chunked decoding ---- */

enum {
    CH_SIZE0 = 0,   /* expecting the first hex digit */
    CH_SIZE,        /* in hex digits */
    CH_BWS,         /* whitespace after the size, before ';' */
    CH_EXT,         /* in chunk extensions */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER0,    /* at the start of a trailer line (or the final CRLF) */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_FINAL_LF,
    CH_DONE,
};

#define CH_MAX_LINE 4096
#define CH_MAX_TRAILERS 16384

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int http1_chunked_feed(struct http1_chunked *c, const char *in, size_t len,
                       size_t *consumed, struct buf *out, uint64_t max_body)
{
    size_t i = 0;
    int ret = 0;
    while (i < len && c->state != CH_DONE) {
        unsigned char ch = (unsigned char)in[i];
        switch (c->state) {
        case CH_SIZE0:
        case CH_SIZE: {
            int v = hexval(ch);
            if (v >= 0) {
                if (c->size >> 60) {
                    ret = -400;     /* more than 15 hex digits of size */
                    goto out;
                }
                c->size = c->size * 16 + (uint64_t)v;
                c->state = CH_SIZE;
                i++;
                break;
            }
            if (c->state == CH_SIZE0) {
                ret = -400;
                goto out;
            }
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == ';')
                c->state = CH_EXT;
            else if (ch == ' ' || ch == '\t')
                c->state = CH_BWS;
            else {
                ret = -400;
                goto out;
            }
            c->line = 0;
            i++;
            break;
        }
        case CH_BWS:
            if (ch == ';')
                c->state = CH_EXT;
            else if (ch != ' ' && ch != '\t') {
                ret = -400;
                goto out;
            }
            i++;
            break;
        case CH_EXT:
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if ((ch < 0x20 && ch != '\t') || ch == 0x7f || ++c->line > CH_MAX_LINE) {
                ret = -400;
                goto out;
            }
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n') {
                ret = -400;
                goto out;
            }
            i++;
            if (c->size == 0) {
                c->state = CH_TRAILER0;
            } else {
                if (c->size > max_body || c->total + c->size > max_body) {
                    ret = -413;
                    goto out;
                }
                c->state = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t n = (size_t)MIN((uint64_t)(len - i), c->size);
            if (out && buf_append(out, in + i, n)) {
                ret = -500;
                goto out;
            }
            i += n;
            c->size -= n;
            c->total += n;
            if (c->size == 0)
                c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch != '\r') {
                ret = -400;
                goto out;
            }
            c->state = CH_DATA_LF;
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n') {
                ret = -400;
                goto out;
            }
            c->state = CH_SIZE0;
            c->size = 0;
            i++;
            break;
        case CH_TRAILER0:
            if (ch == '\r') {
                c->state = CH_FINAL_LF;
            } else if (is_tchar(ch)) {
                c->state = CH_TRAILER_NAME;
            } else {
                ret = -400;     /* obs-fold or junk */
                goto out;
            }
            c->trailer_bytes++;
            i++;
            break;
        case CH_TRAILER_NAME:
            if (ch == ':')
                c->state = CH_TRAILER_VALUE;
            else if (!is_tchar(ch)) {
                ret = -400;
                goto out;
            }
            c->trailer_bytes++;
            i++;
            break;
        case CH_TRAILER_VALUE:
            if (ch == '\r')
                c->state = CH_TRAILER_LF;
            else if (!is_field_byte(ch)) {
                ret = -400;
                goto out;
            }
            c->trailer_bytes++;
            i++;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n') {
                ret = -400;
                goto out;
            }
            c->state = CH_TRAILER0;
            i++;
            break;
        case CH_FINAL_LF:
            if (ch != '\n') {
                ret = -400;
                goto out;
            }
            c->state = CH_DONE;
            i++;
            break;
        }
        if (c->trailer_bytes > CH_MAX_TRAILERS) {
            ret = -400;         /* trailers too large */
            goto out;
        }
    }
    if (c->state == CH_DONE)
        ret = 1;
out:
    *consumed = i;
    return ret;
}

/* ---- writing ---- */

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

int http1_write_status(struct buf *b, int status)
{
    if (status < 100 || status > 999)
        status = 500;
    char line[16] = "HTTP/1.1 000 ";
    line[9] = (char)('0' + status / 100);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    const char *reason = http_status_reason(status);
    int e = buf_append(b, line, 13);
    e |= buf_puts(b, reason);
    e |= buf_append(b, "\r\n", 2);
    return e;
}

int http1_write_header(struct buf *b, const char *name, const char *value)
{
    int e = buf_puts(b, name);
    e |= buf_append(b, ": ", 2);
    e |= buf_puts(b, value);
    e |= buf_append(b, "\r\n", 2);
    return e;
}

int http1_write_chunk(struct buf *b, const void *data, size_t len)
{
    if (!len)
        return 0;
    int r = buf_printf(b, "%zx\r\n", len);
    if (!r)
        r = buf_append(b, data, len);
    if (!r)
        r = buf_append(b, "\r\n", 2);
    return r;
}

int http1_write_last_chunk(struct buf *b)
{
    return buf_append(b, "0\r\n\r\n", 5);
}

static const char *const wdays[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

void http_date_format(time_t t, char out[30])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[96];
    snprintf(tmp, sizeof(tmp), "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    snprintf(out, 30, "%.29s", tmp);
}

static int month_index(const char *m)
{
    for (int i = 0; i < 12; i++)
        if (memcmp(m, months[i], 3) == 0)
            return i;
    return -1;
}

int http_date_parse(struct strv s, time_t *out)
{
    char tmp[64], mon[4] = { 0 }, wd[16] = { 0 };
    int day, year, hh, mm, ss;
    if (s.n == 0 || s.n >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, s.p, s.n);
    tmp[s.n] = '\0';
    int n = 0;
    struct tm tm = { 0 };
    if (sscanf(tmp, "%3s, %2d %3s %4d %2d:%2d:%2d GMT%n", wd, &day, mon, &year, &hh, &mm, &ss, &n) == 7 &&
        (size_t)n == s.n) {
        /* IMF-fixdate */
    } else if (sscanf(tmp, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d GMT%n", wd, &day, mon, &year, &hh, &mm, &ss, &n) == 7 &&
               (size_t)n == s.n) {
        year += year < 70 ? 2000 : 1900;     /* RFC 850 */
    } else if (sscanf(tmp, "%3s %3s %2d %2d:%2d:%2d %4d%n", wd, mon, &day, &hh, &mm, &ss, &year, &n) == 7 &&
               (size_t)n == s.n) {
        /* asctime */
    } else {
        return -EINVAL;
    }
    int mi = month_index(mon);
    if (mi < 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || year < 1970)
        return -EINVAL;
    tm.tm_year = year - 1900;
    tm.tm_mon = mi;
    tm.tm_mday = day;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    *out = timegm(&tm);
    return 0;
}

bool http_query_raw(struct strv query, const char *key, struct strv *raw)
{
    size_t klen = strlen(key);
    const char *p = query.p, *end = query.p + query.n;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == klen && memcmp(p, key, klen) == 0) {
            *raw = eq ? strv_make(eq + 1, (size_t)(pe - eq - 1)) : strv_make(pe, 0);
            return true;
        }
        p = pe + 1;
    }
    return false;
}

bool http_query_param(struct strv query, const char *key, char *out, size_t outlen)
{
    struct strv v;
    if (!http_query_raw(query, key, &v))
        return false;
    size_t o = 0;
    for (const char *c = v.p, *pe = v.p + v.n; c < pe && o + 1 < outlen; c++) {
        if (*c == '%' && pe - c >= 3 && hexval((unsigned char)c[1]) >= 0 && hexval((unsigned char)c[2]) >= 0) {
            out[o++] = (char)(hexval((unsigned char)c[1]) * 16 + hexval((unsigned char)c[2]));
            c += 2;
        } else {
            out[o++] = *c == '+' ? ' ' : *c;
        }
    }
    if (outlen)
        out[o] = '\0';
    return true;
}

int http_uri_encode(struct buf *b, const char *p, size_t n, bool slash)
{
    static const char hx[] = "0123456789ABCDEF";
    int e = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '.' || c == '~' || (slash && c == '/')) {
            e |= buf_putc(b, (char)c);
        } else {
            char t[3] = { '%', hx[c >> 4], hx[c & 15] };
            e |= buf_append(b, t, 3);
        }
    }
    return e ? -ENOMEM : 0;
}

/* ---- forms ---- */

static int form_hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *http_urldecode(const char *p, size_t n)
{
    char *o = malloc(n + 1);
    size_t k = 0;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%' && i + 2 < n && form_hexv(p[i + 1]) >= 0 &&
            form_hexv(p[i + 2]) >= 0) {
            o[k++] = (char)(form_hexv(p[i + 1]) * 16 + form_hexv(p[i + 2]));
            i += 2;
        } else {
            o[k++] = p[i] == '+' ? ' ' : p[i];
        }
    }
    o[k] = 0;
    return o;
}

void http_form_parse(struct http_form *f, struct strv s)
{
    const char *p = s.p, *end = s.p + s.n;
    while (p && p < end && f->n < ARRAY_SIZE(f->key)) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (pe > p) {
            f->key[f->n] = http_urldecode(p, (size_t)((eq ? eq : pe) - p));
            f->val[f->n] = eq ? http_urldecode(eq + 1, (size_t)(pe - eq - 1)) : strdup("");
            f->n++;
        }
        p = pe + 1;
    }
}

void http_form_free(struct http_form *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->key[i]);
        free(f->val[i]);
    }
    f->n = 0;
}

const char *http_form_get(const struct http_form *f, const char *key)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->key[i] && strcmp(f->key[i], key) == 0)
            return f->val[i];
    return NULL;
}
