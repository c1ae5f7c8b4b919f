/* s3_sigv4.c - AWS Signature Version 4 for S3: the Authorization header and
 * presigned query strings, canonical requests, signing keys, and the
 * aws-chunked payload with its chained chunk signatures and trailers. */
#include "s3_internal.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void s3_sha256_hex(const void *p, size_t n, char out[65])
{
    uint8_t d[32];
    SHA256(p, n, d);
    cairn_hex(d, 32, out);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bool s3_uri_decode(struct strv in, char *out, size_t cap, size_t *len)
{
    size_t o = 0;
    for (size_t i = 0; i < in.n; i++) {
        if (o + 1 >= cap)
            return false;
        char c = in.p[i];
        if (c == '%') {
            if (i + 2 >= in.n)
                return false;
            int a = hexval((unsigned char)in.p[i + 1]), b = hexval((unsigned char)in.p[i + 2]);
            if (a < 0 || b < 0)
                return false;
            out[o++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[o++] = c;
        }
    }
    out[o] = 0;
    if (len)
        *len = o;
    return true;
}

long long s3_parse_amzdate(const char *s)
{
    struct tm tm = { 0 };
    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
        return -1;
    for (int i = 0; i < 15; i++)
        if (i != 8 && !isdigit((unsigned char)s[i]))
            return -1;
    tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0') - 1900;
    tm.tm_mon = (s[4] - '0') * 10 + (s[5] - '0') - 1;
    tm.tm_mday = (s[6] - '0') * 10 + (s[7] - '0');
    tm.tm_hour = (s[9] - '0') * 10 + (s[10] - '0');
    tm.tm_min = (s[11] - '0') * 10 + (s[12] - '0');
    tm.tm_sec = (s[13] - '0') * 10 + (s[14] - '0');
    if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60)
        return -1;
    return (long long)timegm(&tm);
}

/* "AK/20240101/us-east-1/s3/aws4_request" */
static enum s3_err parse_credential(struct strv v, struct s3_sig *s)
{
    char buf[400];
    if (v.n >= sizeof(buf))
        return S3E_AUTH_HEADER_MALFORMED;
    memcpy(buf, v.p, v.n);
    buf[v.n] = 0;
    char *parts[5];
    char *p = buf;
    /* the access key may not contain '/', so split from the right */
    for (int i = 4; i >= 1; i--) {
        char *sl = strrchr(p, '/');
        if (!sl)
            return S3E_AUTH_HEADER_MALFORMED;
        parts[i] = sl + 1;
        *sl = 0;
    }
    parts[0] = p;
    if (strlen(parts[0]) >= sizeof(s->access) || strlen(parts[1]) != 8 ||
        strlen(parts[2]) >= sizeof(s->region) || strlen(parts[3]) >= sizeof(s->service) ||
        strcmp(parts[4], "aws4_request") != 0 || !parts[0][0])
        return S3E_AUTH_HEADER_MALFORMED;
    strcpy(s->access, parts[0]);
    strcpy(s->date, parts[1]);
    strcpy(s->region, parts[2]);
    strcpy(s->service, parts[3]);
    return S3E_NONE;
}

static bool copy_field(struct strv v, char *out, size_t cap)
{
    if (v.n >= cap)
        return false;
    memcpy(out, v.p, v.n);
    out[v.n] = 0;
    return true;
}

enum s3_err s3_sig_parse_header(struct strv a, struct s3_sig *s)
{
    memset(s, 0, sizeof(*s));
    static const char alg[] = "AWS4-HMAC-SHA256 ";
    if (a.n < sizeof(alg) - 1 || memcmp(a.p, alg, sizeof(alg) - 1) != 0)
        return S3E_AUTH_HEADER_MALFORMED;
    const char *p = a.p + sizeof(alg) - 1, *end = a.p + a.n;
    bool have_c = false, have_h = false, have_s = false;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq)
            break;
        const char *vend = memchr(eq, ',', (size_t)(end - eq));
        if (!vend)
            vend = end;
        struct strv name = strv_trim(strv_make(p, (size_t)(eq - p)));
        struct strv val = strv_trim(strv_make(eq + 1, (size_t)(vend - eq - 1)));
        if (strv_eq_cstr(name, "Credential")) {
            enum s3_err e = parse_credential(val, s);
            if (e)
                return e;
            have_c = true;
        } else if (strv_eq_cstr(name, "SignedHeaders")) {
            if (!copy_field(val, s->signed_headers, sizeof(s->signed_headers)))
                return S3E_AUTH_HEADER_MALFORMED;
            have_h = true;
        } else if (strv_eq_cstr(name, "Signature")) {
            if (val.n != 64 || !copy_field(val, s->signature, sizeof(s->signature)))
                return S3E_AUTH_HEADER_MALFORMED;
            have_s = true;
        }
        p = vend;
    }
    return have_c && have_h && have_s ? S3E_NONE : S3E_AUTH_HEADER_MALFORMED;
}

/* Calls cb for each decoded key=value pair of a query string. */
static int query_each(struct strv q, int (*cb)(void *, const char *, size_t, const char *, size_t),
                      void *arg)
{
    const char *p = q.p, *end = q.p + q.n;
    char *k = malloc(q.n + 1), *v = malloc(q.n + 1);
    int r = 0;
    if (!k || !v) {
        r = -ENOMEM;
        goto out;
    }
    while (p < end && !r) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        size_t kl, vl = 0;
        if (amp == p) {
            p++;
            continue;
        }
        if (!s3_uri_decode(strv_make(p, (size_t)((eq ? eq : amp) - p)), k, q.n + 1, &kl) ||
            (eq && !s3_uri_decode(strv_make(eq + 1, (size_t)(amp - eq - 1)), v, q.n + 1, &vl))) {
            r = -EINVAL;
            break;
        }
        if (!eq)
            v[0] = 0;
        r = cb(arg, k, kl, v, vl);
        p = amp + (amp < end);
    }
out:
    free(k);
    free(v);
    return r;
}

static int presign_field(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    struct s3_sig *s = arg;
    struct strv key = strv_make(k, kl), val = strv_make(v, vl);
    if (strv_eq_cstr(key, "X-Amz-Algorithm")) {
        if (!strv_eq_cstr(val, "AWS4-HMAC-SHA256"))
            return -EINVAL;
    } else if (strv_eq_cstr(key, "X-Amz-Credential")) {
        if (parse_credential(val, s))
            return -EINVAL;
    } else if (strv_eq_cstr(key, "X-Amz-Date")) {
        if (!copy_field(val, s->amzdate, sizeof(s->amzdate)))
            return -EINVAL;
    } else if (strv_eq_cstr(key, "X-Amz-Expires")) {
        uint64_t e;
        if (strv_to_u64(val, &e) || e > 604800)
            return -EINVAL;
        s->expires = (long long)e;
    } else if (strv_eq_cstr(key, "X-Amz-SignedHeaders")) {
        if (!copy_field(val, s->signed_headers, sizeof(s->signed_headers)))
            return -EINVAL;
    } else if (strv_eq_cstr(key, "X-Amz-Signature")) {
        if (vl != 64 || !copy_field(val, s->signature, sizeof(s->signature)))
            return -EINVAL;
    }
    return 0;
}

enum s3_err s3_sig_parse_query(struct strv q, struct s3_sig *s)
{
    memset(s, 0, sizeof(*s));
    s->presigned = true;
    s->expires = -1;
    if (query_each(q, presign_field, s))
        return S3E_AUTH_HEADER_MALFORMED;
    if (!s->access[0] || !s->amzdate[0] || !s->signed_headers[0] || !s->signature[0] ||
        s->expires < 0)
        return S3E_AUTH_HEADER_MALFORMED;
    return S3E_NONE;
}

struct qpair {
    char *k, *v;
};

static int qpair_cmp(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

struct qcollect {
    struct qpair *v;
    size_t n, cap;
    bool presigned;
};

static int collect(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    struct qcollect *q = arg;
    if (q->presigned && strcmp(k, "X-Amz-Signature") == 0)
        return 0;
    if (q->n == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 16;
        if (nc > 1000)
            return -E2BIG;
        struct qpair *nv = realloc(q->v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        q->v = nv;
        q->cap = nc;
    }
    struct buf kb = BUF_INIT, vb = BUF_INIT;
    if (http_uri_encode(&kb, k, kl, false) || buf_putc(&kb, 0) || http_uri_encode(&vb, v, vl, false) ||
        buf_putc(&vb, 0)) {
        buf_free(&kb);
        buf_free(&vb);
        return -ENOMEM;
    }
    q->v[q->n].k = buf_steal(&kb);
    q->v[q->n].v = buf_steal(&vb);
    q->n++;
    return 0;
}

/* Folds a header value: trimmed, runs of spaces collapsed. */
static int put_value(struct buf *b, struct strv v)
{
    v = strv_trim(v);
    int e = 0;
    bool sp = false;
    for (size_t i = 0; i < v.n; i++) {
        char c = v.p[i];
        if (c == ' ' || c == '\t') {
            sp = true;
            continue;
        }
        if (sp)
            e |= buf_putc(b, ' ');
        sp = false;
        e |= buf_putc(b, c);
    }
    return e;
}

int s3_sig_canonical(struct buf *out, const struct http_request *h, const struct s3_sig *s,
                     const char *payload_hash)
{
    int e = buf_put_strv(out, h->method) | buf_putc(out, '\n');
    /* the path: decoded, then encoded once as AWS does */
    char *path = malloc(h->path.n + 1);
    if (!path)
        return -ENOMEM;
    size_t plen;
    if (!s3_uri_decode(h->path, path, h->path.n + 1, &plen)) {
        free(path);
        return -EINVAL;
    }
    e |= http_uri_encode(out, path, plen, true) | buf_putc(out, '\n');
    free(path);
    struct qcollect q = { .presigned = s->presigned };
    int r = query_each(h->query, collect, &q);
    if (!r) {
        if (q.n)
            qsort(q.v, q.n, sizeof(*q.v), qpair_cmp);
        for (size_t i = 0; i < q.n; i++)
            e |= buf_printf(out, "%s%s=%s", i ? "&" : "", q.v[i].k, q.v[i].v);
    }
    for (size_t i = 0; i < q.n; i++) {
        free(q.v[i].k);
        free(q.v[i].v);
    }
    free(q.v);
    if (r)
        return r;
    e |= buf_putc(out, '\n');
    /* the signed headers, in the order given (clients send them sorted) */
    const char *sh = s->signed_headers;
    while (*sh) {
        const char *semi = strchr(sh, ';');
        size_t n = semi ? (size_t)(semi - sh) : strlen(sh);
        struct strv name = strv_make(sh, n);
        e |= buf_put_strv(out, name) | buf_putc(out, ':');
        bool first = true, found = false;
        for (size_t i = 0; i < h->nheaders; i++)
            if (strv_caseeq(h->headers[i].name, name)) {
                if (!first)
                    e |= buf_putc(out, ',');
                e |= put_value(out, h->headers[i].value);
                first = false;
                found = true;
            }
        if (!found && strv_eq_cstr(name, "host"))
            e |= buf_put_strv(out, h->host);
        e |= buf_putc(out, '\n');
        sh += n + (semi != NULL);
    }
    e |= buf_printf(out, "\n%s\n%s", s->signed_headers, payload_hash);
    return e ? -ENOMEM : 0;
}

void s3_sig_sign(const uint8_t key[32], const struct s3_sig *s, struct strv canonical, char out[65])
{
    char ch[65];
    s3_sha256_hex(canonical.p, canonical.n, ch);
    char sts[512];
    int n = snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", s->amzdate,
                     s->date, s->region, s->service, ch);
    uint8_t mac[32];
    s3c_hmac(key, 32, sts, (size_t)MIN(n, (int)sizeof(sts) - 1), mac);
    cairn_hex(mac, 32, out);
}

/* ---- aws-chunked ---- */

enum { CK_SIZE, CK_DATA, CK_DATA_CRLF, CK_TRAILER, CK_DONE };

int s3_chunked_init(struct s3_chunked *d, bool sign, bool trailer, const uint8_t key[32],
                    const struct s3_sig *s)
{
    memset(d, 0, sizeof(*d));
    d->sign = sign;
    d->trailer = trailer;
    if (sign) {
        memcpy(d->key, key, 32);
        memcpy(d->prev, s->signature, 65);
        snprintf(d->scope, sizeof(d->scope), "%s/%s/%s/aws4_request", s->date, s->region, s->service);
        memcpy(d->amzdate, s->amzdate, sizeof(d->amzdate));
        d->sha = EVP_MD_CTX_new();
        if (!d->sha || !EVP_DigestInit_ex(d->sha, EVP_sha256(), NULL))
            return -ENOMEM;
    }
    return 0;
}

void s3_chunked_free(struct s3_chunked *d)
{
    EVP_MD_CTX_free(d->sha);
    d->sha = NULL;
}

/* The chunk ended: its signature must chain from the previous one. */
static bool chunk_sig_ok(struct s3_chunked *d)
{
    uint8_t dig[32];
    unsigned dl = 32;
    EVP_DigestFinal_ex(d->sha, dig, &dl);
    EVP_DigestInit_ex(d->sha, EVP_sha256(), NULL);
    char hx[65], sts[512], mine[65];
    cairn_hex(dig, 32, hx);
    int n = snprintf(sts, sizeof(sts),
                     "AWS4-HMAC-SHA256-PAYLOAD\n%s\n%s\n%s\n"
                     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n%s",
                     d->amzdate, d->scope, d->prev, hx);
    uint8_t mac[32];
    s3c_hmac(d->key, 32, sts, (size_t)n, mac);
    cairn_hex(mac, 32, mine);
    if (CRYPTO_memcmp(mine, d->chunk_sig, 64) != 0)
        return false;
    memcpy(d->prev, mine, 65);
    return true;
}

/* STREAMING-...-TRAILER: the trailing headers are signed too, chained from the
 * final chunk's signature, in a last x-amz-trailer-signature line. */
static bool trailer_sig_ok(struct s3_chunked *d)
{
    struct buf canon = BUF_INIT;
    char given[65] = "";
    const char *p = d->trailers;
    while (*p) {
        const char *eol = strchr(p, '\n');
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            struct strv name = strv_trim(strv_make(p, (size_t)(colon - p)));
            struct strv val = strv_trim(strv_make(colon + 1, (size_t)(eol - colon - 1)));
            if (strv_caseeq_cstr(name, "x-amz-trailer-signature")) {
                if (val.n == 64)
                    memcpy(given, val.p, 64);
            } else {
                for (size_t i = 0; i < name.n; i++)
                    buf_putc(&canon, (char)tolower((unsigned char)name.p[i]));
                buf_putc(&canon, ':');
                buf_put_strv(&canon, val);
                buf_putc(&canon, '\n');
            }
        }
        p = eol + 1;
    }
    char hx[65], sts[512], mine[65];
    s3_sha256_hex(canon.data ? buf_head(&canon) : "", buf_used(&canon), hx);
    buf_free(&canon);
    int n = snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256-TRAILER\n%s\n%s\n%s\n%s", d->amzdate, d->scope,
                     d->prev, hx);
    uint8_t mac[32];
    s3c_hmac(d->key, 32, sts, (size_t)n, mac);
    cairn_hex(mac, 32, mine);
    return given[0] && CRYPTO_memcmp(mine, given, 64) == 0;
}

static int size_line(struct s3_chunked *d)
{
    d->line[d->line_len] = 0;
    char *semi = strchr(d->line, ';');
    if (semi)
        *semi = 0;
    char *end;
    errno = 0;
    unsigned long long sz = strtoull(d->line, &end, 16);
    if (end == d->line || *end || errno || sz > S3_MAX_PUT)
        return -S3E_INVALID_CHUNK;
    if (d->sign) {
        if (!semi || strncmp(semi + 1, "chunk-signature=", 16) != 0 || strlen(semi + 17) != 64)
            return -S3E_SIGNATURE_MISMATCH;
        memcpy(d->chunk_sig, semi + 17, 65);
    }
    d->left = sz;
    if (sz == 0) {
        if (d->sign && !chunk_sig_ok(d))
            return -S3E_SIGNATURE_MISMATCH;
        /* then trailers, or at once the empty line that ends the body */
        d->state = d->trailer ? CK_TRAILER : CK_DONE;
        return 0;
    }
    d->state = CK_DATA;
    return 0;
}

int s3_chunked_feed(struct s3_chunked *d, const char *p, size_t n, s3_sink sink, void *arg)
{
    size_t i = 0;
    while (i < n) {
        switch (d->state) {
        case CK_SIZE:
        case CK_TRAILER:
        case CK_DONE: {
            char c = p[i++];
            if (c == '\r')
                continue;
            if (c != '\n') {
                if (d->line_len >= sizeof(d->line) - 1)
                    return -S3E_INVALID_CHUNK;
                d->line[d->line_len++] = c;
                continue;
            }
            if (d->state == CK_SIZE) {
                int r = size_line(d);
                d->line_len = 0;
                if (r)
                    return r;
                continue;
            }
            if (d->line_len == 0) {
                d->state = CK_DONE;
                if (d->sign && d->trailer && !trailer_sig_ok(d))
                    return -S3E_SIGNATURE_MISMATCH;
                return 1;
            }
            if (d->state == CK_DONE)
                return -S3E_INVALID_CHUNK;
            d->line[d->line_len] = 0;
            if (d->trailers_len + d->line_len + 2 > sizeof(d->trailers))
                return -S3E_INVALID_CHUNK;
            memcpy(d->trailers + d->trailers_len, d->line, d->line_len);
            d->trailers_len += d->line_len;
            d->trailers[d->trailers_len++] = '\n';
            d->trailers[d->trailers_len] = 0;
            d->line_len = 0;
            continue;
        }
        case CK_DATA: {
            size_t take = (size_t)MIN((uint64_t)(n - i), d->left);
            if (d->sign)
                EVP_DigestUpdate(d->sha, p + i, take);
            int r = sink(arg, p + i, take);
            if (r)
                return r;
            d->decoded += take;
            d->left -= take;
            i += take;
            if (d->left == 0) {
                d->state = CK_DATA_CRLF;
                d->line_len = 0;
            }
            continue;
        }
        case CK_DATA_CRLF: {
            char c = p[i++];
            if (c == '\r' && d->line_len == 0) {
                d->line_len = 1;
                continue;
            }
            if (c != '\n')
                return -S3E_INVALID_CHUNK;
            d->line_len = 0;
            if (d->sign && !chunk_sig_ok(d))
                return -S3E_SIGNATURE_MISMATCH;
            d->state = CK_SIZE;
            continue;
        }
        }
    }
    return 0;
}

const char *s3_chunked_trailer(const struct s3_chunked *d, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = d->trailers;
    while (*p) {
        const char *eol = strchr(p, '\n');
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            struct strv v = strv_trim(strv_make(p + nl + 1, (size_t)(eol - p - nl - 1)));
            if (v.n >= cap)
                return NULL;
            memcpy(out, v.p, v.n);
            out[v.n] = 0;
            return out;
        }
        p = eol + 1;
    }
    return NULL;
}
