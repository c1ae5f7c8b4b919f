/* http1.h - HTTP/1.1 message parsing and writing (RFC 9110, RFC 9112).
 *
 * The head parser is incremental: the caller keeps a struct http1_scan between
 * calls and hands in the whole buffered prefix each time; bytes already scanned
 * for the end of the head are not looked at again, so feeding one byte at a time
 * costs O(n). Once the blank line that ends the head has arrived, the head is
 * parsed in one pass into string views that point into the caller's buffer (no
 * copies, no allocation).
 *
 * Parsing is strict, because a proxy that is lenient where its neighbours are
 * strict is how request smuggling happens. Rejected: bare LF line ends, obs-fold,
 * whitespace before a header colon, control bytes in names or values, conflicting
 * or malformed Content-Length, Content-Length together with Transfer-Encoding,
 * Transfer-Encoding in HTTP/1.0, a final coding other than chunked, missing or
 * repeated Host in HTTP/1.1, bad chunk sizes. Errors come back as a negated HTTP
 * status for the server to answer with before closing: 400, 413, 414, 431, 501 or
 * 505.
 */
#ifndef CAIRN_HTTP1_H
#define CAIRN_HTTP1_H

#include "core/buf.h"
#include "core/common.h"
#include <time.h>

#define HTTP_MAX_HEADERS 100

struct http_header {
    struct strv name;
    struct strv value;
};

struct http1_limits {
    size_t max_request_line;    /* bytes in the request line; longer -> 414 */
    size_t max_header_bytes;    /* bytes in the whole head; longer -> 431 */
    size_t max_headers;         /* header fields; more -> 431 (<= HTTP_MAX_HEADERS) */
    uint64_t max_body;          /* body bytes; more -> 413 */
};
extern const struct http1_limits http1_default_limits;

/* Progress of the search for the end of a head; zero it for a new message. */
struct http1_scan {
    size_t pos;                 /* bytes already scanned */
    size_t start;               /* where the head starts, after leading CRLFs */
    bool first_line_done;
};

struct http_request {
    struct strv method;
    struct strv target;         /* as sent; absolute-form reduced to origin-form */
    struct strv path;           /* target without the query */
    struct strv query;          /* after '?', empty when none */
    int minor;                  /* HTTP/1.<minor> */
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    struct strv host;           /* Host, or an absolute-form target's authority */
    int64_t content_length;     /* -1 when absent */
    bool chunked;
    bool keep_alive;
    bool expect_continue;
    bool is_head;
};

struct http_response {
    int status;
    struct strv reason;
    int minor;
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    int64_t content_length;     /* -1 when absent */
    bool chunked;
    bool keep_alive;
};

/* Parses a request head from buf[0, len).
 * Returns the number of bytes the head occupies (> 0) when it is complete, 0 when
 * more bytes are needed, or a negated HTTP status (-400, -413, -414, -431, -501,
 * -505) when the request is to be refused. */
int http1_parse_request(const char *buf, size_t len, struct http1_scan *scan,
                        const struct http1_limits *lim, struct http_request *req);

/* Parses a response head; same return convention, errors are -502. */
int http1_parse_response(const char *buf, size_t len, struct http1_scan *scan,
                         const struct http1_limits *lim, struct http_response *resp);

/* Finds a header by case-insensitive name; NULL when absent. */
const struct http_header *http_find_header(const struct http_header *h, size_t n,
                                           const char *name);
/* Iterates over the entity tags of an If-None-Match / If-Match list: *tag gets
 * the next opaque tag with its quotes and without a "W/" prefix, or "*". */
bool http_etag_next(struct strv *list, struct strv *tag);
/* Weak comparison (RFC 9110 8.8.3.2) of an If-None-Match list with etag ("*"
 * matches anything). */
bool http_etag_list_matches(struct strv list, const char *etag);
/* True when a comma-separated header value lists token (case-insensitive). */
bool http_list_has_token(struct strv value, const char *token);

/* Incremental decoder for the chunked transfer coding (RFC 9112 section 7.1). */
struct http1_chunked {
    int state;
    uint64_t size;              /* size of the current chunk */
    uint64_t total;             /* body bytes so far */
    size_t line;                /* bytes in the current extension/trailer line */
    size_t trailer_bytes;
};
/* Decodes from in[0, len), appending body bytes to out. *consumed gets the bytes
 * used. Returns 1 when the last chunk and trailers are complete, 0 when more input
 * is needed, -400 on a framing error, -413 when the body exceeds max_body, or
 * -500 when memory runs out. */
int http1_chunked_feed(struct http1_chunked *c, const char *in, size_t len,
                       size_t *consumed, struct buf *out, uint64_t max_body);

/* Writing. */
const char *http_status_reason(int status);
int http1_write_status(struct buf *b, int status);
int http1_write_header(struct buf *b, const char *name, const char *value);
int http1_write_chunk(struct buf *b, const void *data, size_t len);
int http1_write_last_chunk(struct buf *b);

/* IMF-fixdate (RFC 9110 section 5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT". */
void http_date_format(time_t t, char out[30]);
/* Parses IMF-fixdate (and the obsolete RFC 850 / asctime forms). 0 or -EINVAL. */
int http_date_parse(struct strv s, time_t *out);

/* Decodes a query-string parameter value ("a=1&b=x%20y"); returns true when the
 * key is present and copies its percent-decoded value (truncated) into out. */
/* A form: the key=value pairs of a query string or an urlencoded body, decoded,
 * repeated keys kept in order (at most 256 pairs). */
struct http_form {
    char *key[256];
    char *val[256];
    size_t n;
};
/* p[0..n) with %XX and '+' decoded, malloc'd and NUL-terminated (NULL when out
 * of memory). */
char *http_urldecode(const char *p, size_t n);
/* Adds the pairs of s to f. */
void http_form_parse(struct http_form *f, struct strv s);
/* The first value of key, or NULL. */
const char *http_form_get(const struct http_form *f, const char *key);
void http_form_free(struct http_form *f);

bool http_query_param(struct strv query, const char *key, char *out, size_t outlen);
/* Finds a query-string parameter: true when key is present, with its value as
 * sent (not decoded; empty without '=') in *raw, for callers with their own
 * decoding rules. */
bool http_query_raw(struct strv query, const char *key, struct strv *raw);
/* Appends n bytes of p percent-encoded as RFC 3986 (and AWS SigV4) ask: the
 * unreserved characters kept, '/' kept too when slash. 0 or -ENOMEM. */
int http_uri_encode(struct buf *b, const char *p, size_t n, bool slash);

#endif
