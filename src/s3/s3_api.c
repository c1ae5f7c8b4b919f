/* s3_api.c - the S3 REST API.
 *
 * A request is routed by its method, bucket, key and query (path-style
 * /bucket/key, or virtual-hosted bucket.DOMAIN), authenticated (SigV4 header,
 * presigned query, or anonymous read of a public bucket), authorized against
 * the key's grants, then served. Object uploads (PUT of an object or a part)
 * take their body streamed (httpd's stream_body) straight into a data file; the
 * other bodies are small XML documents read whole.
 */
#include "s3_internal.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

const struct s3_errinfo s3_errors[S3E_COUNT] = {
    [S3E_NONE] = { "OK", 200, "" },
    [S3E_ACCESS_DENIED] = { "AccessDenied", 403, "Access Denied" },
    [S3E_BAD_DIGEST] = { "BadDigest", 400, "The Content-MD5 or checksum you specified did not match what we received." },
    [S3E_BUCKET_EXISTS] = { "BucketAlreadyOwnedByYou", 409, "Your previous request to create the named bucket succeeded and you already own it." },
    [S3E_BUCKET_TAKEN] = { "BucketAlreadyExists", 409, "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again." },
    [S3E_BUCKET_NOT_EMPTY] = { "BucketNotEmpty", 409, "The bucket you tried to delete is not empty" },
    [S3E_ENTITY_TOO_LARGE] = { "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size." },
    [S3E_ENTITY_TOO_SMALL] = { "EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed object size." },
    [S3E_INCOMPLETE_BODY] = { "IncompleteBody", 400, "You did not provide the number of bytes specified by the Content-Length HTTP header." },
    [S3E_INTERNAL] = { "InternalError", 500, "We encountered an internal error. Please try again." },
    [S3E_INVALID_ACCESS_KEY] = { "InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist in our records." },
    [S3E_INVALID_ARGUMENT] = { "InvalidArgument", 400, "Invalid Argument" },
    [S3E_INVALID_BUCKET_NAME] = { "InvalidBucketName", 400, "The specified bucket is not valid." },
    [S3E_INVALID_DIGEST] = { "InvalidDigest", 400, "The Content-MD5 or checksum you specified is not valid." },
    [S3E_INVALID_PART] = { "InvalidPart", 400, "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag." },
    [S3E_INVALID_PART_ORDER] = { "InvalidPartOrder", 400, "The list of parts was not in ascending order. Parts must be ordered by part number." },
    [S3E_INVALID_RANGE] = { "InvalidRange", 416, "The requested range is not satisfiable" },
    [S3E_INVALID_REQUEST] = { "InvalidRequest", 400, "Invalid Request" },
    [S3E_KEY_TOO_LONG] = { "KeyTooLongError", 400, "Your key is too long" },
    [S3E_MALFORMED_XML] = { "MalformedXML", 400, "The XML you provided was not well-formed or did not validate against our published schema." },
    [S3E_METADATA_TOO_LARGE] = { "MetadataTooLarge", 400, "Your metadata headers exceed the maximum allowed metadata size." },
    [S3E_METHOD_NOT_ALLOWED] = { "MethodNotAllowed", 405, "The specified method is not allowed against this resource." },
    [S3E_MISSING_CONTENT_LENGTH] = { "MissingContentLength", 411, "You must provide the Content-Length HTTP header." },
    [S3E_NO_SUCH_BUCKET] = { "NoSuchBucket", 404, "The specified bucket does not exist" },
    [S3E_NO_SUCH_KEY] = { "NoSuchKey", 404, "The specified key does not exist." },
    [S3E_NO_SUCH_UPLOAD] = { "NoSuchUpload", 404, "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed." },
    [S3E_NOT_IMPLEMENTED] = { "NotImplemented", 501, "A header or query you provided implies functionality that is not implemented." },
    [S3E_NOT_MODIFIED] = { "NotModified", 304, "Not Modified" },
    [S3E_PRECONDITION_FAILED] = { "PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold" },
    [S3E_TIME_SKEWED] = { "RequestTimeTooSkewed", 403, "The difference between the request time and the server's time is too large." },
    [S3E_SIGNATURE_MISMATCH] = { "SignatureDoesNotMatch", 403, "The request signature we calculated does not match the signature you provided. Check your key and signing method." },
    [S3E_AUTH_HEADER_MALFORMED] = { "AuthorizationHeaderMalformed", 400, "The authorization header is malformed." },
    [S3E_SHA256_MISMATCH] = { "XAmzContentSHA256Mismatch", 400, "The provided 'x-amz-content-sha256' header does not match what was computed." },
    [S3E_INSUFFICIENT_STORAGE] = { "InsufficientStorage", 507, "There is not enough space left on the device to store the object." },
    [S3E_EXPIRED] = { "AccessDenied", 403, "Request has expired" },
    [S3E_MISSING_SECURITY_HEADER] = { "InvalidRequest", 400, "Missing required header for this request: x-amz-content-sha256" },
    [S3E_INVALID_CHUNK] = { "IncompleteBody", 400, "The aws-chunked body is malformed." },
    [S3E_SLOW_DOWN] = { "SlowDown", 503, "Please reduce your request rate." },
    [S3E_INVALID_TAG] = { "InvalidTag", 400, "The tag provided was not a valid tag." },
    [S3E_NO_SUCH_TAG_SET] = { "NoSuchTagSet", 404, "The TagSet does not exist" },
    [S3E_NO_SUCH_CORS] = { "NoSuchCORSConfiguration", 404, "The CORS configuration does not exist" },
    [S3E_CORS_FORBIDDEN] = { "AccessForbidden", 403, "CORSResponse: This CORS request is not allowed." },
    [S3E_CORS_NEED_ORIGIN] = { "BadRequest", 400, "Insufficient information. Origin request header needed." },
    [S3E_NO_SUCH_LIFECYCLE] = { "NoSuchLifecycleConfiguration", 404, "The lifecycle configuration does not exist" },
    [S3E_INVALID_PART_NUMBER] = { "InvalidPart", 400, "The requested partnumber is not satisfiable" },
};

enum api {
    API_LIST_BUCKETS, API_CREATE_BUCKET, API_DELETE_BUCKET, API_HEAD_BUCKET, API_GET_LOCATION,
    API_LIST_OBJECTS, API_LIST_OBJECTS_V2, API_LIST_UPLOADS, API_DELETE_OBJECTS,
    API_GET_VERSIONING, API_PUT_OBJECT, API_COPY_OBJECT, API_GET_OBJECT, API_HEAD_OBJECT,
    API_DELETE_OBJECT, API_CREATE_UPLOAD, API_UPLOAD_PART, API_UPLOAD_PART_COPY,
    API_COMPLETE_UPLOAD, API_ABORT_UPLOAD, API_LIST_PARTS, API_LIST_VERSIONS, API_PUT_VERSIONING,
    API_PUT_OBJECT_TAGGING, API_GET_OBJECT_TAGGING, API_DELETE_OBJECT_TAGGING,
    API_PUT_BUCKET_TAGGING, API_GET_BUCKET_TAGGING, API_DELETE_BUCKET_TAGGING,
    API_PUT_CORS, API_GET_CORS, API_DELETE_CORS, API_OPTIONS,
    API_PUT_LIFECYCLE, API_GET_LIFECYCLE, API_DELETE_LIFECYCLE,
    API_OTHER, API_N
};
static const char *const api_names[API_N] = {
    "ListBuckets", "CreateBucket", "DeleteBucket", "HeadBucket", "GetBucketLocation",
    "ListObjects", "ListObjectsV2", "ListMultipartUploads", "DeleteObjects",
    "GetBucketVersioning", "PutObject", "CopyObject", "GetObject", "HeadObject",
    "DeleteObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
    "CompleteMultipartUpload", "AbortMultipartUpload", "ListParts", "ListObjectVersions", "PutBucketVersioning",
    "PutObjectTagging", "GetObjectTagging", "DeleteObjectTagging",
    "PutBucketTagging", "GetBucketTagging", "DeleteBucketTagging",
    "PutBucketCors", "GetBucketCors", "DeleteBucketCors", "PreflightRequest",
    "PutBucketLifecycleConfiguration", "GetBucketLifecycleConfiguration", "DeleteBucketLifecycle", "Other",
};

#define XMLNS "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\""
#define XMLHEAD "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"

/* One request in flight. */
struct s3r {
    struct httpd_req *r;
    struct s3_worker *w;
    struct s3_svc *s;
    enum api api;
    uint64_t start_ns;
    char request_id[17];
    char bucket[64];
    char *key;                      /* decoded, NUL-terminated; NULL for bucket calls */
    const struct s3_key *ak;        /* the authenticated key, or NULL (anonymous) */
    struct s3_bucket bk;            /* the bucket's state, for calls on a bucket */
    struct s3_sig sig;
    uint8_t sigkey[32];
    char payload_hash[65];          /* a hex SHA-256 to check, or "" */
    EVP_MD_CTX *payload_sha;
    bool chunked;                   /* aws-chunked body */
    struct s3_chunked ck;
    struct s3_writer wr;
    bool writing;
    struct buf body;                /* small bodies of streamed PUTs (bucket calls) */
    uint64_t received;
    int64_t expect_len;             /* decoded length announced, or -1 */
    /* an upload's part */
    char upload_id[40];
    int part;
    int ck_alg;                     /* the upload's checksum algorithm (enum s3_ck), or -1 */
    char part_ck[100];              /* the part's checksum in that algorithm */
    /* a streamed GET */
    struct s3_obj obj;
    struct s3_reader rd;
    int rd_part;
    const char *rd_next;            /* next "id size" line of obj.parts */
    uint64_t rd_part_size, rd_pos, rd_end;   /* within the current part */
    uint64_t send_left;
    uint64_t skip;                  /* bytes of the range before the current part */
    char *iobuf;
};

_Static_assert(API_N <= S3_API_MAX, "S3_API_MAX is too small");

int s3__metrics_init(struct s3_svc *s)
{
    for (int a = 0; a < API_N; a++) {
        const char *n = api_names[a];
        s->m_req[a] = metrics_get1(s->f_requests, n);
        s->m_4xx[a] = metrics_get2(s->f_errors, n, "4xx");
        s->m_5xx[a] = metrics_get2(s->f_errors, n, "5xx");
        s->m_dur[a] = metrics_get1(s->f_duration, n);
        s->m_in[a] = metrics_get1(s->f_bytes_in, n);
        if (!s->m_req[a] || !s->m_4xx[a] || !s->m_5xx[a] || !s->m_dur[a] || !s->m_in[a])
            return -ENOMEM;
    }
    s->m_out = metrics_get1(s->f_bytes_out, "GetObject");
    return s->m_out ? 0 : -ENOMEM;
}

static void s3r_free(struct s3r *q)
{
    if (q->writing)
        s3_writer_abort(&q->wr);
    if (q->chunked)
        s3_chunked_free(&q->ck);
    EVP_MD_CTX_free(q->payload_sha);
    if (q->rd.crcs)
        s3_reader_close(&q->rd);
    s3_obj_free(&q->obj);
    s3_bucket_free(&q->bk);
    buf_free(&q->body);
    free(q->iobuf);
    free(q->key);
    free(q);
}

static void count(struct s3r *q, int status)
{
    struct s3_svc *s = q->s;
    metric_inc(s->m_req[q->api]);
    if (status >= 400)
        metric_inc(status >= 500 ? s->m_5xx[q->api] : s->m_4xx[q->api]);
    metric_observe(s->m_dur[q->api], (double)(cairn_now_ns() - q->start_ns) / 1e9);
}

static void common_headers(struct s3r *q)
{
    httpd_header(q->r, "x-amz-request-id", q->request_id);
    httpd_header(q->r, "x-amz-id-2", q->request_id);
}

/* Answers and frees q. */
static void reply(struct s3r *q, int status, const char *ctype, const void *body, size_t len)
{
    common_headers(q);
    count(q, status);
    struct httpd_req *r = q->r;
    s3r_free(q);
    httpd_respond(r, status, ctype, body, len);
}

static void reply_xml(struct s3r *q, int status, struct buf *b)
{
    reply(q, status, "application/xml", buf_head(b), buf_used(b));
    buf_free(b);
}

static void fail_msg(struct s3r *q, enum s3_err e, const char *msg)
{
    const struct s3_errinfo *ei = &s3_errors[e];
    if (e == S3E_NOT_MODIFIED || q->r->h.is_head) {
        reply(q, ei->status, NULL, NULL, 0);
        return;
    }
    struct buf b = BUF_INIT;
    buf_printf(&b, XMLHEAD "<Error><Code>%s</Code><Message>", ei->code);
    const char *m = msg ? msg : ei->message;
    s3_xml_escape(&b, m, strlen(m));
    buf_puts(&b, "</Message>");
    if (q->bucket[0])
        buf_printf(&b, "<BucketName>%s</BucketName>", q->bucket);
    if (q->key) {
        buf_puts(&b, "<Key>");
        s3_xml_escape(&b, q->key, strlen(q->key));
        buf_puts(&b, "</Key>");
    }
    buf_puts(&b, "<Resource>");
    s3_xml_escape(&b, q->r->h.path.p, q->r->h.path.n);
    buf_printf(&b, "</Resource><RequestId>%s</RequestId></Error>", q->request_id);
    reply_xml(q, ei->status, &b);
}

static void fail(struct s3r *q, enum s3_err e)
{
    fail_msg(q, e, NULL);
}

static enum s3_err errno_err(int r)
{
    switch (r) {
    case -ENOSPC:
    case -EDQUOT:
        return S3E_INSUFFICIENT_STORAGE;
    case -EBUSY:
        return S3E_SLOW_DOWN;
    default:
        return S3E_INTERNAL;
    }
}

/* ---- helpers ---- */

/* The owner shown in answers: the key that asks (one owner per key). */
static void owner_xml(struct s3r *q, struct buf *b, const char *tag)
{
    const char *id = q->ak ? q->ak->access : "anonymous";
    buf_printf(b, "<%s><ID>%s</ID><DisplayName>%s</DisplayName></%s>", tag, id, id, tag);
}

/* x-amz-expiration for an object the bucket's lifecycle rules will expire. */
static void expiration_header(struct s3r *q, const char *key, const char *headers, long long mtime_ms)
{
    struct s3_lc lc;
    if (!q->bk.lifecycle || s3_lc_parse(q->bk.lifecycle, strlen(q->bk.lifecycle), &lc))
        return;
    const char *rule = NULL;
    long long t = s3_lc_expiry(&lc, key, headers, mtime_ms, &rule);
    if (t) {
        char d[30];
        http_date_format((time_t)(t / 1000), d);
        httpd_headerf(q->r, "x-amz-expiration", "expiry-date=\"%s\", rule-id=\"%s\"", d, rule);
    }
    s3_lc_free(&lc);
}

/* x-amz-version-id of a version just written or read, when the bucket keeps versions. */
static void version_header(struct s3r *q, const char *version)
{
    if (q->bk.versioning != S3_VERSIONING_OFF || strcmp(version, "null") != 0)
        httpd_header(q->r, "x-amz-version-id", version);
}

static void iso8601(long long ms, char out[48])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 48, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static const struct http_header *hdr(const struct httpd_req *r, const char *name)
{
    return httpd_req_header(r, name);
}

static bool hdr_str(const struct httpd_req *r, const char *name, char *out, size_t cap)
{
    const struct http_header *h = hdr(r, name);
    if (!h || h->value.n >= cap)
        return false;
    memcpy(out, h->value.p, h->value.n);
    out[h->value.n] = 0;
    return true;
}

/* A query parameter, decoded the strict way S3 reads them ('+' stays a plus, a bad
 * escape or a value too long is "absent"); out NULL: only whether it is there. */
static bool qparam(const struct httpd_req *r, const char *name, char *out, size_t cap)
{
    struct strv v;
    if (!http_query_raw(r->h.query, name, &v))
        return false;
    return !out || s3_uri_decode(v, out, cap, NULL);
}

static bool has_q(const struct httpd_req *r, const char *name)
{
    return qparam(r, name, NULL, 0);
}

bool s3__bucket_name_ok(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '.' || c == '-'))
            return false;
        if (c == '.' && (b[i + 1] == '.' || b[i + 1] == '-' || (i && b[i - 1] == '-')))
            return false;
    }
    if (!isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
        return false;
    int dots = 0, digits = 0;
    for (size_t i = 0; i < n; i++) {
        dots += b[i] == '.';
        digits += isdigit((unsigned char)b[i]) != 0;
    }
    if (dots == 3 && digits + dots == (int)n)
        return false;       /* looks like an IP address */
    if (strncmp(b, "xn--", 4) == 0 || (n > 8 && strcmp(b + n - 8, "-s3alias") == 0))
        return false;
    return true;
}

/* ---- authentication ---- */

static const struct s3_key *find_key(const struct s3_conf *c, const char *access)
{
    for (size_t i = 0; i < c->nkeys; i++)
        if (strcmp(c->keys[i].access, access) == 0)
            return &c->keys[i];
    return NULL;
}

static bool is_public(const struct s3_conf *c, const char *bucket)
{
    for (size_t i = 0; i < c->npublic; i++)
        if (strcmp(c->public_buckets[i], bucket) == 0)
            return true;
    return false;
}

static bool granted(const struct s3_key *k, const char *bucket, bool write)
{
    for (size_t i = 0; i < k->ngrants; i++) {
        const struct s3_grant *g = &k->grants[i];
        if ((strcmp(g->bucket, "*") == 0 || strcmp(g->bucket, bucket) == 0) &&
            (write ? g->write : g->read))
            return true;
    }
    return false;
}

static enum s3_err authenticate(struct s3r *q)
{
    struct httpd_req *r = q->r;
    const struct http_header *az = hdr(r, "authorization");
    bool presigned = has_q(r, "X-Amz-Algorithm");
    if (!az && !presigned)
        return S3E_NONE;    /* anonymous */
    enum s3_err e = az ? s3_sig_parse_header(az->value, &q->sig)
                       : s3_sig_parse_query(r->h.query, &q->sig);
    if (e) {
        if (az && strv_has_prefix(az->value, "AWS "))
            return S3E_NOT_IMPLEMENTED;      /* SigV2 */
        return az ? e : S3E_ACCESS_DENIED;
    }
    const struct s3_key *k = find_key(q->s->conf, q->sig.access);
    if (!k)
        return S3E_INVALID_ACCESS_KEY;
    if (az) {
        if (!hdr_str(r, "x-amz-date", q->sig.amzdate, sizeof(q->sig.amzdate))) {
            char d[64];
            time_t t;
            if (!hdr_str(r, "date", d, sizeof(d)) || http_date_parse(strv_cstr(d), &t))
                return S3E_ACCESS_DENIED;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(q->sig.amzdate, sizeof(q->sig.amzdate), "%Y%m%dT%H%M%SZ", &tm);
        }
    }
    long long t = s3_parse_amzdate(q->sig.amzdate);
    if (t < 0)
        return S3E_ACCESS_DENIED;
    long long now = (long long)time(NULL);
    if (presigned) {
        if (now > t + q->sig.expires || q->sig.expires == 0)
            return S3E_EXPIRED;
        if (t > now + 900)
            return S3E_ACCESS_DENIED;
    } else if (t < now - 900 || t > now + 900) {
        return S3E_TIME_SKEWED;
    }
    char ph[80] = "UNSIGNED-PAYLOAD";
    if (az && !hdr_str(r, "x-amz-content-sha256", ph, sizeof(ph)))
        return S3E_MISSING_SECURITY_HEADER;
    struct buf can = BUF_INIT;
    if (s3_sig_canonical(&can, &r->h, &q->sig, ph)) {
        buf_free(&can);
        return S3E_SIGNATURE_MISMATCH;
    }
    s3c_signing_key(k->secret, q->sig.date, q->sig.region, q->sig.service, q->sigkey);
    char mine[65];
    s3_sig_sign(q->sigkey, &q->sig, buf_strv(&can), mine);
    buf_free(&can);
    if (CRYPTO_memcmp(mine, q->sig.signature, 64) != 0)
        return S3E_SIGNATURE_MISMATCH;
    q->ak = k;
    /* what the body must hash to */
    if (strcmp(ph, "UNSIGNED-PAYLOAD") == 0) {
    } else if (strncmp(ph, "STREAMING-", 10) == 0) {
        bool sign = strncmp(ph, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", 34) == 0;
        bool trailer = strstr(ph, "-TRAILER") != NULL;
        if (!sign && strcmp(ph, "STREAMING-UNSIGNED-PAYLOAD-TRAILER") != 0)
            return S3E_INVALID_ARGUMENT;
        if (s3_chunked_init(&q->ck, sign, trailer, q->sigkey, &q->sig))
            return S3E_INTERNAL;
        q->chunked = true;
    } else if (strlen(ph) == 64) {
        memcpy(q->payload_hash, ph, 65);
    } else {
        return S3E_SHA256_MISMATCH;
    }
    return S3E_NONE;
}

/* ---- routing ---- */

static bool host_bucket(struct s3r *q, char *out, size_t cap)
{
    struct strv h = q->r->h.host;
    const char *colon = memrchr(h.p, ':', h.n);
    if (colon && !memchr(h.p, ']', h.n))
        h.n = (size_t)(colon - h.p);
    const struct s3_conf *c = q->s->conf;
    for (size_t i = 0; i < c->ndomains; i++) {
        size_t dl = strlen(c->domains[i]);
        if (h.n > dl + 1 && h.p[h.n - dl - 1] == '.' &&
            strncasecmp(h.p + h.n - dl, c->domains[i], dl) == 0) {
            size_t bl = h.n - dl - 1;
            if (bl >= cap)
                return false;
            memcpy(out, h.p, bl);
            out[bl] = 0;
            return true;
        }
    }
    return false;
}

/* Splits the request into bucket and key. */
static enum s3_err route(struct s3r *q)
{
    struct httpd_req *r = q->r;
    size_t n = r->h.path.n;
    char *path = malloc(n + 1);
    if (!path)
        return S3E_INTERNAL;
    size_t len;
    if (!s3_uri_decode(r->h.path, path, n + 1, &len) || path[0] != '/') {
        free(path);
        return S3E_INVALID_REQUEST;
    }
    const char *rest = path + 1;
    if (!host_bucket(q, q->bucket, sizeof(q->bucket))) {
        const char *sl = strchr(rest, '/');
        size_t bl = sl ? (size_t)(sl - rest) : strlen(rest);
        if (bl >= sizeof(q->bucket)) {
            free(path);
            return S3E_INVALID_BUCKET_NAME;
        }
        memcpy(q->bucket, rest, bl);
        q->bucket[bl] = 0;
        rest = sl ? sl + 1 : rest + bl;
    }
    if (*rest || (q->bucket[0] && rest > path + 1 && rest[-1] == '/' && *rest)) {
        if (strlen(rest) > S3_MAX_KEY_LEN) {
            q->key = strdup(rest);
            free(path);
            return S3E_KEY_TOO_LONG;
        }
        q->key = strdup(rest);
    }
    free(path);
    return S3E_NONE;
}

static bool is_write_api(enum api a)
{
    switch (a) {
    case API_LIST_BUCKETS: case API_HEAD_BUCKET: case API_GET_LOCATION: case API_LIST_OBJECTS:
    case API_LIST_OBJECTS_V2: case API_LIST_UPLOADS: case API_GET_VERSIONING: case API_GET_OBJECT:
    case API_HEAD_OBJECT: case API_LIST_PARTS: case API_LIST_VERSIONS: case API_GET_OBJECT_TAGGING:
    case API_GET_BUCKET_TAGGING: case API_GET_CORS: case API_OPTIONS: case API_GET_LIFECYCLE:
        return false;
    default:
        return true;
    }
}

static enum api pick_api(struct s3r *q)
{
    struct httpd_req *r = q->r;
    struct strv m = r->h.method;
    bool get = strv_eq_cstr(m, "GET"), head = strv_eq_cstr(m, "HEAD"), put = strv_eq_cstr(m, "PUT"),
         post = strv_eq_cstr(m, "POST"), del = strv_eq_cstr(m, "DELETE");
    if (!q->bucket[0])
        return get ? API_LIST_BUCKETS : API_OTHER;
    if (strv_eq_cstr(m, "OPTIONS"))
        return API_OPTIONS;
    if (!q->key) {
        if (has_q(r, "tagging"))
            return put ? API_PUT_BUCKET_TAGGING : get ? API_GET_BUCKET_TAGGING
                 : del ? API_DELETE_BUCKET_TAGGING : API_OTHER;
        if (has_q(r, "cors"))
            return put ? API_PUT_CORS : get ? API_GET_CORS : del ? API_DELETE_CORS : API_OTHER;
        if (has_q(r, "lifecycle"))
            return put ? API_PUT_LIFECYCLE : get ? API_GET_LIFECYCLE : del ? API_DELETE_LIFECYCLE : API_OTHER;
        if (put && !r->h.query.n)
            return API_CREATE_BUCKET;
        if (put && has_q(r, "versioning"))
            return API_PUT_VERSIONING;
        if (del && !r->h.query.n)
            return API_DELETE_BUCKET;
        if (head)
            return API_HEAD_BUCKET;
        if (post && has_q(r, "delete"))
            return API_DELETE_OBJECTS;
        if (get) {
            if (has_q(r, "location"))
                return API_GET_LOCATION;
            if (has_q(r, "uploads"))
                return API_LIST_UPLOADS;
            if (has_q(r, "versioning"))
                return API_GET_VERSIONING;
            if (has_q(r, "versions"))
                return API_LIST_VERSIONS;
            static const char *const sub[] = { "acl", "cors", "lifecycle", "policy", "tagging",
                                               "website", "logging", "notification", "replication",
                                               "encryption", "object-lock",
                                               "ownershipControls", "publicAccessBlock",
                                               "requestPayment", "accelerate", "analytics",
                                               "metrics", "inventory", "intelligent-tiering",
                                               "policyStatus" };
            for (size_t i = 0; i < ARRAY_SIZE(sub); i++)
                if (has_q(r, sub[i]))
                    return API_OTHER;
            char lt[8];
            if (qparam(r, "list-type", lt, sizeof(lt)) && strcmp(lt, "2") == 0)
                return API_LIST_OBJECTS_V2;
            return API_LIST_OBJECTS;
        }
        return API_OTHER;
    }
    bool has_upload = has_q(r, "uploadId");
    if (has_q(r, "tagging"))
        return put ? API_PUT_OBJECT_TAGGING : get ? API_GET_OBJECT_TAGGING
             : del ? API_DELETE_OBJECT_TAGGING : API_OTHER;
    if (put) {
        if (has_upload && has_q(r, "partNumber"))
            return hdr(r, "x-amz-copy-source") ? API_UPLOAD_PART_COPY : API_UPLOAD_PART;
        if (r->h.query.n && !has_q(r, "x-id") && !has_q(r, "X-Amz-Algorithm"))
            return API_OTHER;
        return hdr(r, "x-amz-copy-source") ? API_COPY_OBJECT : API_PUT_OBJECT;
    }
    if (post)
        return has_q(r, "uploads") ? API_CREATE_UPLOAD : has_upload ? API_COMPLETE_UPLOAD : API_OTHER;
    if (del)
        return has_upload ? API_ABORT_UPLOAD : API_DELETE_OBJECT;
    if (get) {
        if (has_upload)
            return API_LIST_PARTS;
        if (has_q(r, "tagging") || has_q(r, "acl") || has_q(r, "attributes") || has_q(r, "retention") ||
            has_q(r, "legal-hold") || has_q(r, "torrent"))
            return API_OTHER;
        return API_GET_OBJECT;
    }
    if (head)
        return API_HEAD_OBJECT;
    return API_OTHER;
}

/* ---- stored headers ---- */

static const char *const kept_headers[] = { "content-type", "content-encoding", "content-disposition",
                                            "content-language", "cache-control", "expires",
                                            "x-amz-website-redirect-location", "x-amz-storage-class",
                                            "x-amz-tagging" };

/* ---- tags ---- */

#define S3_MAX_OBJECT_TAGS 10
#define S3_MAX_BUCKET_TAGS 50

struct tag_list {
    char *k[S3_MAX_BUCKET_TAGS + 1], *v[S3_MAX_BUCKET_TAGS + 1];
    size_t n;
};

static void tags_free(struct tag_list *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->k[i]);
        free(t->v[i]);
    }
    t->n = 0;
}

static enum s3_err tag_add(struct tag_list *t, const char *k, size_t kl, const char *v, size_t vl, size_t max)
{
    if (t->n >= max || kl == 0 || kl > 128 || vl > 256)
        return S3E_INVALID_TAG;
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->k[i]) == kl && memcmp(t->k[i], k, kl) == 0)
            return S3E_INVALID_TAG;
    t->k[t->n] = strndup(k, kl);
    t->v[t->n] = strndup(v, vl);
    t->n++;
    return S3E_NONE;
}

/* "k=v&k2=v2", URL-encoded, as the x-amz-tagging header and the stored form. */
static enum s3_err tags_from_query(struct strv q, struct tag_list *t, size_t max)
{
    const char *p = q.p, *end = q.p + q.n;
    char k[512], v[1024];
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        size_t kl, vl = 0;
        if (!s3_uri_decode(strv_make(p, (size_t)((eq ? eq : amp) - p)), k, sizeof(k), &kl) ||
            (eq && !s3_uri_decode(strv_make(eq + 1, (size_t)(amp - eq - 1)), v, sizeof(v), &vl)))
            return S3E_INVALID_TAG;
        enum s3_err e = tag_add(t, k, kl, v, vl, max);
        if (e)
            return e;
        p = amp + 1;
    }
    return S3E_NONE;
}

static int tagging_header_check(struct strv v)
{
    struct tag_list t = { 0 };
    enum s3_err e = tags_from_query(v, &t, S3_MAX_OBJECT_TAGS);
    tags_free(&t);
    return e != S3E_NONE;
}

static enum s3_err tags_from_xml(const struct buf *body, struct tag_list *t, size_t max)
{
    struct s3_xnode *x = s3_xml_parse(body->data ? buf_head(body) : "", buf_used(body));
    struct s3_xnode *set = x && strcmp(x->name, "Tagging") == 0 ? s3_xml_child(x, "TagSet") : NULL;
    enum s3_err e = set ? S3E_NONE : S3E_MALFORMED_XML;
    for (struct s3_xnode *c = set ? set->child : NULL; c && !e; c = c->next) {
        const char *k = s3_xml_text(c, "Key"), *v = s3_xml_text(c, "Value");
        if (strcmp(c->name, "Tag") != 0 || !k || !v)
            e = S3E_MALFORMED_XML;
        else
            e = tag_add(t, k, strlen(k), v, strlen(v), max);
    }
    s3_xml_free(x);
    return e;
}

static void tags_to_query(const struct tag_list *t, struct buf *b)
{
    for (size_t i = 0; i < t->n; i++) {
        if (i)
            buf_putc(b, '&');
        http_uri_encode(b, t->k[i], strlen(t->k[i]), false);
        buf_putc(b, '=');
        http_uri_encode(b, t->v[i], strlen(t->v[i]), false);
    }
}

static void tags_to_xml(struct tag_list *t, struct buf *b)
{
    for (size_t i = 1; i < t->n; i++)     /* by key, as S3 lists them */
        for (size_t j = i; j > 0 && strcmp(t->k[j - 1], t->k[j]) > 0; j--) {
            char *k = t->k[j], *v = t->v[j];
            t->k[j] = t->k[j - 1];
            t->v[j] = t->v[j - 1];
            t->k[j - 1] = k;
            t->v[j - 1] = v;
        }
    buf_puts(b, XMLHEAD "<Tagging " XMLNS "><TagSet>");
    for (size_t i = 0; i < t->n; i++) {
        buf_puts(b, "<Tag><Key>");
        s3_xml_escape(b, t->k[i], strlen(t->k[i]));
        buf_puts(b, "</Key><Value>");
        s3_xml_escape(b, t->v[i], strlen(t->v[i]));
        buf_puts(b, "</Value></Tag>");
    }
    buf_puts(b, "</TagSet></Tagging>");
}

/* The stored x-amz-tagging line of a headers block (empty when none). */
static struct strv stored_tagging(const char *hs)
{
    const char *p = hs ? strstr(hs, "x-amz-tagging: ") : NULL;
    while (p && p != hs && p[-1] != '\n')
        p = strstr(p + 1, "x-amz-tagging: ");
    if (!p)
        return strv_make("", 0);
    p += 15;
    const char *eol = strchr(p, '\n');
    return strv_make(p, eol ? (size_t)(eol - p) : strlen(p));
}

/* The headers block without its tagging line, plus the new one (when any). */
static char *with_tagging(const char *hs, const char *tags)
{
    struct buf b = BUF_INIT;
    const char *p = hs;
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) + 1 : strlen(p);
        if (strncmp(p, "x-amz-tagging: ", 15) != 0)
            buf_append(&b, p, n);
        p += n;
    }
    if (tags && *tags)
        buf_printf(&b, "x-amz-tagging: %s\n", tags);
    buf_putc(&b, 0);
    return buf_steal(&b);
}

/* The headers a PUT keeps with its object: "name: value\n" lines. */
static enum s3_err collect_headers(struct httpd_req *r, struct buf *b)
{
    size_t meta = 0;
    for (size_t i = 0; i < r->h.nheaders; i++) {
        const struct http_header *h = &r->h.headers[i];
        bool keep = strv_has_prefix(h->name, "x-amz-meta-") || strv_has_prefix(h->name, "X-Amz-Meta-");
        if (!keep && h->name.n > 11 && strncasecmp(h->name.p, "x-amz-meta-", 11) == 0)
            keep = true;
        if (keep)
            meta += h->name.n - 11 + h->value.n;
        if (strv_caseeq_cstr(h->name, "x-amz-tagging") && tagging_header_check(h->value))
            return S3E_INVALID_TAG;
        for (size_t k = 0; !keep && k < ARRAY_SIZE(kept_headers); k++)
            keep = strv_caseeq_cstr(h->name, kept_headers[k]);
        if (!keep)
            continue;
        struct strv val = h->value;
        char enc[256];
        if (strv_caseeq_cstr(h->name, "content-encoding")) {
            /* aws-chunked frames the upload; it is not the object's encoding */
            size_t o = 0;
            const char *p = val.p, *end = val.p + val.n;
            while (p < end) {
                const char *comma = memchr(p, ',', (size_t)(end - p));
                struct strv t = strv_trim(strv_make(p, (size_t)((comma ? comma : end) - p)));
                if (t.n && !strv_caseeq_cstr(t, "aws-chunked") && o + t.n + 2 < sizeof(enc)) {
                    if (o)
                        o += (size_t)sprintf(enc + o, ", ");
                    memcpy(enc + o, t.p, t.n);
                    o += t.n;
                }
                p = comma ? comma + 1 : end;
            }
            if (!o)
                continue;
            val = strv_make(enc, o);
        }
        for (size_t c = 0; c < h->name.n; c++)
            buf_putc(b, (char)tolower((unsigned char)h->name.p[c]));
        buf_puts(b, ": ");
        for (size_t c = 0; c < val.n; c++)
            buf_putc(b, val.p[c] == '\n' ? ' ' : val.p[c]);
        buf_putc(b, '\n');
    }
    if (meta > S3_MAX_META)
        return S3E_METADATA_TOO_LARGE;
    return S3E_NONE;
}

/* Calls cb for each stored "name: value" line. */
static void each_stored(const char *hs, void (*cb)(void *, struct strv, struct strv), void *arg)
{
    const char *p = hs;
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        if (!eol)
            eol = p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon)
            cb(arg, strv_make(p, (size_t)(colon - p)), strv_trim(strv_make(colon + 1, (size_t)(eol - colon - 1))));
        p = *eol ? eol + 1 : eol;
    }
}

struct emit_ctx {
    struct httpd_req *r;
    bool have_ctype;
    bool with_checksums;
};

static void emit_one(void *arg, struct strv name, struct strv value)
{
    struct emit_ctx *e = arg;
    if (strv_has_prefix(name, "x-amz-checksum-") &&
        (!e->with_checksums || strv_eq_cstr(name, "x-amz-checksum-algorithm")))
        return;
    if (strv_eq_cstr(name, "x-amz-tagging")) {
        size_t n = value.n ? 1 : 0;
        for (size_t i = 0; i < value.n; i++)
            n += value.p[i] == '&';
        httpd_headerf(e->r, "x-amz-tagging-count", "%zu", n);
        return;
    }
    char rq[64];
    /* response-* query parameters override (signed requests only) */
    if (name.n < 40 && !strv_has_prefix(name, "x-amz-")) {
        char qn[64];
        snprintf(qn, sizeof(qn), "response-%.*s", (int)name.n, name.p);
        if (qparam(e->r, qn, rq, sizeof(rq)))
            return;
    }
    if (strv_eq_cstr(name, "content-type"))
        e->have_ctype = true;
    httpd_header_strv(e->r, name, value);
}

static void emit_stored(struct s3r *q, const struct s3_obj *o)
{
    struct emit_ctx e = { q->r, false, false };
    char mode[16];
    e.with_checksums = hdr_str(q->r, "x-amz-checksum-mode", mode, sizeof(mode)) &&
                       strcasecmp(mode, "ENABLED") == 0;
    each_stored(o->headers, emit_one, &e);
    static const char *const over[] = { "content-type", "content-language", "expires",
                                         "cache-control", "content-disposition", "content-encoding" };
    if (q->ak) {
        for (size_t i = 0; i < ARRAY_SIZE(over); i++) {
            char qn[64], v[1024];
            snprintf(qn, sizeof(qn), "response-%s", over[i]);
            if (qparam(q->r, qn, v, sizeof(v))) {
                httpd_header(q->r, over[i], v);
                e.have_ctype |= i == 0;
            }
        }
    }
    if (!e.have_ctype)
        httpd_header(q->r, "Content-Type", "binary/octet-stream");
}

/* ---- conditionals ---- */

static bool etag_matches(struct strv list, const char *etag)
{
    /* etag is quoted; list is a comma-separated list of (quoted or bare) tags or * */
    struct strv bare = strv_make(etag + 1, strlen(etag) - 2);
    const char *p = list.p, *end = list.p + list.n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        if (!comma)
            comma = end;
        struct strv t = strv_trim(strv_make(p, (size_t)(comma - p)));
        if (t.n >= 2 && t.p[0] == 'W' && t.p[1] == '/')
            t = strv_make(t.p + 2, t.n - 2);
        if (t.n >= 2 && t.p[0] == '"' && t.p[t.n - 1] == '"')
            t = strv_make(t.p + 1, t.n - 2);
        if (strv_eq_cstr(t, "*") || strv_eq(t, bare))
            return true;
        p = comma + 1;
    }
    return false;
}

/* The If-* headers (prefix "" or "x-amz-copy-source-"); S3E_NONE to go on. */
static enum s3_err preconditions(struct httpd_req *r, const char *prefix, const struct s3_obj *o,
                                 bool for_copy)
{
    char n[80];
    time_t mtime = (time_t)(o->mtime_ms / 1000), t;
    snprintf(n, sizeof(n), "%sif-match", prefix);
    const struct http_header *im = hdr(r, n);
    snprintf(n, sizeof(n), "%sif-none-match", prefix);
    const struct http_header *inm = hdr(r, n);
    snprintf(n, sizeof(n), "%sif-modified-since", prefix);
    const struct http_header *ims = hdr(r, n);
    snprintf(n, sizeof(n), "%sif-unmodified-since", prefix);
    const struct http_header *ius = hdr(r, n);
    if (im && !etag_matches(im->value, o->etag))
        return S3E_PRECONDITION_FAILED;
    if (!im && ius && http_date_parse(ius->value, &t) == 0 && mtime > t)
        return S3E_PRECONDITION_FAILED;
    if (inm && etag_matches(inm->value, o->etag))
        return for_copy ? S3E_PRECONDITION_FAILED : S3E_NOT_MODIFIED;
    if (!inm && ims && http_date_parse(ims->value, &t) == 0 && mtime <= t && !(for_copy && im))
        return for_copy ? S3E_PRECONDITION_FAILED : S3E_NOT_MODIFIED;
    return S3E_NONE;
}

/* "bytes=a-b" | "bytes=a-" | "bytes=-n": 1 with [*from, *to], 0 when absent or
 * not one range (the whole object is served), -1 when unsatisfiable. */
static int parse_range(struct strv v, uint64_t size, uint64_t *from, uint64_t *to)
{
    if (!strv_has_prefix(v, "bytes="))
        return 0;
    struct strv s = strv_trim(strv_make(v.p + 6, v.n - 6));
    if (memchr(s.p, ',', s.n))
        return 0;
    const char *dash = memchr(s.p, '-', s.n);
    if (!dash)
        return 0;
    struct strv a = strv_trim(strv_make(s.p, (size_t)(dash - s.p)));
    struct strv b = strv_trim(strv_make(dash + 1, (size_t)(s.p + s.n - dash - 1)));
    uint64_t x, y;
    if (!a.n) {
        if (!b.n || strv_to_u64(b, &y))
            return 0;
        if (y == 0 || size == 0)
            return -1;
        *from = y >= size ? 0 : size - y;
        *to = size - 1;
        return 1;
    }
    if (strv_to_u64(a, &x))
        return 0;
    if (b.n) {
        if (strv_to_u64(b, &y) || y < x)
            return 0;
    } else {
        y = UINT64_MAX;
    }
    if (x >= size)
        return -1;
    *from = x;
    *to = MIN(y, size - 1);
    return 1;
}

/* ---- reading objects ---- */

/* Opens the part holding offset pos of the object (q->obj): skips whole parts. */
static int open_part_at(struct s3r *q, uint64_t pos)
{
    const char *p = q->obj.parts;
    uint64_t base = 0;
    char id[40];
    unsigned long long sz;
    int used;
    while (p && *p && sscanf(p, "%39s %llu%n", id, &sz, &used) == 2) {
        if (pos < base + sz || (sz == 0 && pos == base)) {
            if (q->rd.crcs)
                s3_reader_close(&q->rd);
            int r = s3_reader_open(&q->rd, q->s->conf->data, id, sz);
            if (r)
                return r;
            q->rd_pos = pos - base;
            q->rd_part_size = sz;
            q->skip = base;
            q->rd_next = p + used;
            return 0;
        }
        base += sz;
        p += used;
        while (*p == '\n')
            p++;
    }
    return -EIO;
}

static void get_pump(struct httpd_req *r, void *arg);

static void get_abort(struct httpd_req *r, void *arg)
{
    (void)r;
    s3r_free(arg);
}

/* Sends the rest of a large object as the client takes it. */
static void get_pump(struct httpd_req *r, void *arg)
{
    struct s3r *q = arg;
    httpd_req_on_drain(r, NULL, NULL);     /* the writes below must not call back into here */
    while (q->send_left) {
        if (httpd_req_pending(r) > (1u << 20)) {
            httpd_req_on_drain(r, get_pump, q);
            return;
        }
        if (q->rd_pos >= q->rd_part_size && open_part_at(q, q->skip + q->rd_part_size)) {
            goto broken;
        }
        size_t want = (size_t)MIN((uint64_t)(4 * S3_BLOCK), q->send_left);
        want = (size_t)MIN((uint64_t)want, q->rd_part_size - q->rd_pos);
        ssize_t n = s3_reader_read(&q->rd, q->rd_pos, q->iobuf, want);
        if (n <= 0)
            goto broken;
        q->rd_pos += (uint64_t)n;
        q->send_left -= (uint64_t)n;
        metric_add(q->s->m_out, (double)n);
        httpd_respond_write(r, q->iobuf, (size_t)n);
    }
    count(q, 200);
    s3r_free(q);
    httpd_respond_finish(r);
    return;
broken:
    log_error("object data unreadable or corrupt: response cut short", "bucket", q->bucket, "key",
              q->key);
    s3r_free(q);
    httpd_req_abort(r);
}

static void get_object(struct s3r *q)
{
    struct httpd_req *r = q->r;
    char vid[64];
    bool by_version = qparam(r, "versionId", vid, sizeof(vid));
    int rc = s3_obj_get(q->w->db, q->bucket, q->key, by_version ? vid : NULL, &q->obj);
    if (rc == -ENOENT && by_version) {
        fail_msg(q, S3E_INVALID_ARGUMENT, "Invalid version id specified");
        return;
    }
    if (rc == -ENOENT || (rc == 0 && q->obj.dm)) {
        /* a delete marker: 404 when current, 405 when asked for by its id */
        httpd_header(r, "x-amz-delete-marker", rc == 0 ? "true" : "false");
        if (rc == 0)
            version_header(q, q->obj.version);
        fail(q, rc == 0 && by_version ? S3E_METHOD_NOT_ALLOWED : S3E_NO_SUCH_KEY);
        return;
    }
    if (rc) {
        fail(q, errno_err(rc));
        return;
    }
    struct s3_obj *o = &q->obj;
    version_header(q, o->version);
    expiration_header(q, o->key, o->headers, o->mtime_ms);
    char pn[16];
    uint64_t from = 0, to = o->size ? o->size - 1 : 0;
    bool ranged = false;
    if (qparam(r, "partNumber", pn, sizeof(pn))) {
        /* one part of a multipart object */
        long n = atol(pn);
        if (n < 1 || (o->nparts == 0 && n != 1) || (o->nparts && n > o->nparts)) {
            fail_msg(q, S3E_INVALID_PART, "The requested partnumber is not satisfiable");
            return;
        }
        if (o->nparts) {
            const char *p = o->parts;
            uint64_t base = 0;
            for (long i = 1; p && *p; i++) {
                char id[40];
                unsigned long long sz;
                int used;
                if (sscanf(p, "%39s %llu%n", id, &sz, &used) != 2)
                    break;
                if (i == n) {
                    from = base;
                    to = base + sz - 1;
                    break;
                }
                base += sz;
                p += used + 1;
            }
            ranged = true;
            httpd_headerf(r, "x-amz-mp-parts-count", "%d", o->nparts);
        }
    }
    enum s3_err e = preconditions(r, "", o, false);
    if (e) {
        if (e == S3E_NOT_MODIFIED) {
            httpd_header(r, "ETag", o->etag);
            char lm[30];
            http_date_format((time_t)(o->mtime_ms / 1000), lm);
            httpd_header(r, "Last-Modified", lm);
        }
        fail(q, e);
        return;
    }
    const struct http_header *rh = hdr(r, "range");
    if (rh && !ranged) {
        int pr = parse_range(rh->value, o->size, &from, &to);
        if (pr < 0) {
            httpd_headerf(r, "Content-Range", "bytes */%llu", (unsigned long long)o->size);
            fail(q, S3E_INVALID_RANGE);
            return;
        }
        ranged = pr > 0;
    }
    char lm[30];
    http_date_format((time_t)(o->mtime_ms / 1000), lm);
    httpd_header(r, "Last-Modified", lm);
    httpd_header(r, "ETag", o->etag);
    httpd_header(r, "Accept-Ranges", "bytes");
    emit_stored(q, o);
    common_headers(q);
    uint64_t len = o->size ? to - from + 1 : 0;
    int status = ranged ? 206 : 200;
    if (ranged)
        httpd_headerf(r, "Content-Range", "bytes %llu-%llu/%llu", (unsigned long long)from,
                      (unsigned long long)to, (unsigned long long)o->size);
    if (r->h.is_head || len == 0) {
        count(q, status);
        s3r_free(q);
        httpd_respond_start(r, status, NULL, (int64_t)len);
        httpd_respond_finish(r);
        return;
    }
    if (open_part_at(q, from) || !(q->iobuf = malloc(4 * S3_BLOCK))) {
        fail(q, S3E_INTERNAL);
        return;
    }
    q->send_left = len;
    httpd_req_on_abort(r, get_abort, q);
    httpd_respond_start(r, status, NULL, (int64_t)len);
    get_pump(r, q);
}

/* ---- writing objects ---- */

static int md5_header(struct httpd_req *r, uint8_t out[16])
{
    char v[64];
    if (!hdr(r, "content-md5"))
        return 0;
    if (!hdr_str(r, "content-md5", v, sizeof(v)) || s3_unb64(v, out, 16) != 16)
        return -1;
    return 1;
}

/* Which x-amz-checksum-* the client sent or announced (header, or trailer). */
static unsigned wanted_checksums(struct httpd_req *r)
{
    unsigned want = 0;
    for (int i = 0; i < S3_CK_N; i++) {
        char n[40];
        snprintf(n, sizeof(n), "x-amz-checksum-%s", s3_ck_names[i]);
        if (hdr(r, n))
            want |= 1u << i;
    }
    char t[64];
    if (hdr_str(r, "x-amz-trailer", t, sizeof(t)) || hdr_str(r, "x-amz-sdk-checksum-algorithm", t, sizeof(t)))
        for (int i = 0; i < S3_CK_N; i++) {
            const char *name = s3_ck_names[i];
            if (strcasestr(t, name) && !(i == S3_CK_CRC32 && strcasestr(t, "crc32c")))
                want |= 1u << i;
        }
    return want;
}

static int sink_write(void *arg, const char *p, size_t n)
{
    struct s3r *q = arg;
    if (q->writing) {
        if (q->wr.size + n > S3_MAX_PUT)
            return -S3E_ENTITY_TOO_LARGE;
        int r = s3_writer_write(&q->wr, p, n);
        return r ? -(int)errno_err(r) : 0;
    }
    if (buf_used(&q->body) + n > S3_MAX_XML)
        return -S3E_ENTITY_TOO_LARGE;
    return buf_append(&q->body, p, n) ? -S3E_INTERNAL : 0;
}

static int body_data(struct httpd_req *r, void *arg, const char *p, size_t n)
{
    struct s3r *q = arg;
    (void)r;
    q->received += n;
    metric_add(q->s->m_in[q->api], (double)n);
    int rc;
    if (q->payload_sha)
        EVP_DigestUpdate(q->payload_sha, p, n);
    if (q->chunked) {
        rc = s3_chunked_feed(&q->ck, p, n, sink_write, q);
        if (rc == 1)
            rc = 0;
    } else {
        rc = sink_write(q, p, n);
    }
    if (rc < 0) {
        fail(q, (enum s3_err)-rc);
        return 1;
    }
    return 0;
}

static void put_finish(struct s3r *q);
static void small_body_done(struct s3r *q);

static void body_end(struct httpd_req *r, void *arg)
{
    struct s3r *q = arg;
    (void)r;
    if (q->chunked && q->ck.state != 4 /* done */) {
        fail(q, S3E_INCOMPLETE_BODY);
        return;
    }
    if (q->payload_sha) {
        uint8_t d[32];
        unsigned l = 32;
        char hx[65];
        EVP_DigestFinal_ex(q->payload_sha, d, &l);
        cairn_hex(d, 32, hx);
        if (strcmp(hx, q->payload_hash) != 0) {
            fail(q, S3E_SHA256_MISMATCH);
            return;
        }
    }
    if (q->writing)
        put_finish(q);
    else
        small_body_done(q);
}

static const struct httpd_body_ops body_ops = { body_data, body_end };

static void req_abort(struct httpd_req *r, void *arg)
{
    (void)r;
    s3r_free(arg);
}

/* Starts reading the body (streamed or not); body_end follows. */
static void read_body(struct s3r *q)
{
    if (q->payload_hash[0]) {
        q->payload_sha = EVP_MD_CTX_new();
        if (!q->payload_sha || !EVP_DigestInit_ex(q->payload_sha, EVP_sha256(), NULL)) {
            fail(q, S3E_INTERNAL);
            return;
        }
    }
    if (q->r->streaming) {
        httpd_req_on_abort(q->r, req_abort, q);
        httpd_req_read_body(q->r, &body_ops, q);
        return;
    }
    if (q->r->body.n && body_data(q->r, q, q->r->body.p, q->r->body.n))
        return;
    body_end(q->r, q);
}

static void begin_put(struct s3r *q)
{
    struct httpd_req *r = q->r;
    char dl[32];
    q->expect_len = r->h.content_length;
    if (hdr_str(r, "x-amz-decoded-content-length", dl, sizeof(dl)))
        q->expect_len = atoll(dl);
    else if (q->chunked)
        q->expect_len = -1;
    if (!q->chunked && r->h.content_length < 0 && !r->h.chunked) {
        fail(q, S3E_MISSING_CONTENT_LENGTH);
        return;
    }
    if (q->expect_len > (int64_t)S3_MAX_PUT) {
        fail(q, S3E_ENTITY_TOO_LARGE);
        return;
    }
    uint8_t md5[16];
    if (md5_header(r, md5) < 0) {
        fail(q, S3E_INVALID_DIGEST);
        return;
    }
    unsigned want = wanted_checksums(r);
    if (q->ck_alg >= 0)
        want |= 1u << q->ck_alg;        /* a part of an upload with a checksum algorithm */
    int rc = s3_writer_open(&q->wr, q->s->conf->data, want);
    if (rc) {
        s3_writer_abort(&q->wr);
        fail(q, errno_err(rc));
        return;
    }
    q->writing = true;
    read_body(q);
}

/* The checksums the client gave (headers or trailers) against what came. */
static enum s3_err check_checksums(struct s3r *q, struct buf *stored)
{
    for (int i = 0; i < S3_CK_N; i++) {
        if (!(q->wr.want & (1u << i)))
            continue;
        char n[40], given[100], mine[100];
        snprintf(n, sizeof(n), "x-amz-checksum-%s", s3_ck_names[i]);
        bool have = hdr_str(q->r, n, given, sizeof(given)) ||
                    (q->chunked && s3_chunked_trailer(&q->ck, n, given, sizeof(given)));
        s3_writer_checksum(&q->wr, (enum s3_ck)i, mine, sizeof(mine));
        if (have && strcmp(given, mine) != 0)
            return S3E_BAD_DIGEST;
        if (i == q->ck_alg)
            snprintf(q->part_ck, sizeof(q->part_ck), "%s", mine);
        buf_printf(stored, "%s: %s\n", n, mine);
        httpd_header(q->r, n, mine);
    }
    return S3E_NONE;
}

/* A version id for an object about to be written (used when the bucket keeps
 * versions). */
static void new_version(struct s3r *q, struct s3_obj *o)
{
    (void)q;
    s3_random_hex(o->version, 16);
}

static void put_finish(struct s3r *q)
{
    struct httpd_req *r = q->r;
    if (q->expect_len >= 0 && q->wr.size != (uint64_t)q->expect_len) {
        fail(q, S3E_INCOMPLETE_BODY);
        return;
    }
    struct buf stored = BUF_INIT;
    enum s3_err e = collect_headers(r, &stored);
    if (!e)
        e = check_checksums(q, &stored);
    uint8_t md5[16], given[16];
    int rc = e ? 0 : s3_writer_finish(&q->wr, md5);
    if (e || rc) {
        buf_free(&stored);
        fail(q, e ? e : errno_err(rc));
        return;
    }
    q->writing = false;
    char file[80];
    snprintf(file, sizeof(file), "%s %llu\n", q->wr.id, (unsigned long long)q->wr.size);
    if (md5_header(r, given) == 1 && memcmp(given, md5, 16) != 0) {
        s3_files_unlink(q->s->conf->data, file);
        s3_writer_done(&q->wr);
        buf_free(&stored);
        fail(q, S3E_BAD_DIGEST);
        return;
    }
    char etag[72] = "\"";
    cairn_hex(md5, 16, etag + 1);
    strcat(etag, "\"");
    char *old = NULL;
    if (q->api == API_UPLOAD_PART) {
        rc = s3_part_put(q->w->db, q->upload_id, q->part, q->wr.size, etag, q->wr.id, q->part_ck, &old);
    } else {
        buf_putc(&stored, 0);
        struct s3_obj o = { .key = q->key, .size = q->wr.size, .mtime_ms = (long long)(cairn_wall_time() * 1000),
                            .headers = buf_head(&stored), .parts = file };
        memcpy(o.etag, etag, sizeof(etag));
        new_version(q, &o);
        rc = s3_obj_put(q->w->db, q->bucket, &o, &old);
        if (!rc) {
            if (q->bk.versioning == S3_VERSIONING_ENABLED)
                httpd_header(q->r, "x-amz-version-id", o.version);
            expiration_header(q, o.key, o.headers, o.mtime_ms);
        }
    }
    s3_writer_done(&q->wr);
    buf_free(&stored);
    if (rc) {
        s3_files_unlink(q->s->conf->data, file);
        fail(q, rc == -ENOENT ? (q->api == API_UPLOAD_PART ? S3E_NO_SUCH_UPLOAD : S3E_NO_SUCH_BUCKET)
                              : errno_err(rc));
        return;
    }
    s3_files_unlink(q->s->conf->data, old);
    free(old);
    httpd_header(r, "ETag", etag);
    reply(q, 200, NULL, NULL, 0);
}

/* ---- copies ---- */

/* Parses x-amz-copy-source into bucket and key; fetches the object. */
static enum s3_err copy_source(struct s3r *q, struct s3_obj *src, char *sbucket, size_t cap)
{
    const struct http_header *h = hdr(q->r, "x-amz-copy-source");
    char *v = malloc(h->value.n + 1);
    size_t n;
    if (!v)
        return S3E_INTERNAL;
    struct strv raw = h->value;
    const char *qm = memchr(raw.p, '?', raw.n);
    char version[64] = "";
    if (qm) {
        raw.n = (size_t)(qm - raw.p);
        if (strncmp(qm, "?versionId=", 11) == 0)
            snprintf(version, sizeof(version), "%.*s", (int)(h->value.p + h->value.n - qm - 11), qm + 11);
    }
    if (!s3_uri_decode(raw, v, h->value.n + 1, &n)) {
        free(v);
        return S3E_INVALID_ARGUMENT;
    }
    char *p = v + (v[0] == '/');
    char *sl = strchr(p, '/');
    if (!sl || (size_t)(sl - p) >= cap || !sl[1]) {
        free(v);
        return S3E_INVALID_ARGUMENT;
    }
    memcpy(sbucket, p, (size_t)(sl - p));
    sbucket[sl - p] = 0;
    if (q->ak && !granted(q->ak, sbucket, false)) {
        free(v);
        return S3E_ACCESS_DENIED;
    }
    int rc = s3_obj_get(q->w->db, sbucket, sl + 1, version[0] ? version : NULL, src);
    free(v);
    if (rc == -ENOENT || (rc == 0 && src->dm))
        return s3_bucket_exists(q->w->db, sbucket) == 0 ? S3E_NO_SUCH_BUCKET : S3E_NO_SUCH_KEY;
    if (rc)
        return errno_err(rc);
    if (version[0])
        httpd_header(q->r, "x-amz-copy-source-version-id", src->version);
    return preconditions(q->r, "x-amz-copy-source-", src, true);
}

/* Copies [from, to] of src into a new data file (checked on the way). */
static int copy_bytes(struct s3r *q, const struct s3_obj *src, uint64_t from, uint64_t len)
{
    int rc = s3_writer_open(&q->wr, q->s->conf->data, q->ck_alg >= 0 ? 1u << q->ck_alg : 0);
    if (rc) {
        s3_writer_abort(&q->wr);
        return rc;
    }
    q->writing = true;
    q->obj.parts = strdup(src->parts);
    q->obj.size = src->size;
    if (!q->obj.parts || !(q->iobuf = malloc(4 * S3_BLOCK)))
        return -ENOMEM;
    uint64_t pos = from, end = from + len;
    while (pos < end) {
        if ((!q->rd.crcs || q->rd_pos >= q->rd_part_size) && (rc = open_part_at(q, pos)))
            return rc;
        size_t want = (size_t)MIN((uint64_t)(4 * S3_BLOCK), end - pos);
        want = (size_t)MIN((uint64_t)want, q->rd_part_size - q->rd_pos);
        ssize_t n = s3_reader_read(&q->rd, q->rd_pos, q->iobuf, want);
        if (n <= 0)
            return n < 0 ? (int)n : -EIO;
        if ((rc = s3_writer_write(&q->wr, q->iobuf, (size_t)n)))
            return rc;
        q->rd_pos += (uint64_t)n;
        pos += (uint64_t)n;
    }
    return 0;
}

static void copy_object(struct s3r *q, bool part)
{
    struct httpd_req *r = q->r;
    struct s3_obj src;
    char sbucket[64];
    memset(&src, 0, sizeof(src));
    enum s3_err e = copy_source(q, &src, sbucket, sizeof(sbucket));
    if (e) {
        s3_obj_free(&src);
        fail(q, e);
        return;
    }
    uint64_t from = 0, len = src.size;
    char rng[80];
    if (part && hdr_str(r, "x-amz-copy-source-range", rng, sizeof(rng))) {
        uint64_t a, b;
        if (parse_range(strv_cstr(rng), src.size, &a, &b) != 1 || strncmp(rng, "bytes=-", 7) == 0) {
            s3_obj_free(&src);
            fail_msg(q, S3E_INVALID_ARGUMENT, "The x-amz-copy-source-range value must be of the form "
                                           "bytes=first-last where first and last are the zero-based "
                                           "offsets of the first and last bytes to copy");
            return;
        }
        char *dash = strchr(rng, '-');
        if (dash && strtoull(dash + 1, NULL, 10) >= src.size) {
            s3_obj_free(&src);
            fail(q, S3E_INVALID_RANGE);
            return;
        }
        from = a;
        len = b - a + 1;
    }
    char directive[16] = "COPY";
    hdr_str(r, "x-amz-metadata-directive", directive, sizeof(directive));
    bool replace = strcmp(directive, "REPLACE") == 0;
    if (!part && !replace && strcmp(directive, "COPY") != 0) {
        s3_obj_free(&src);
        fail(q, S3E_INVALID_ARGUMENT);
        return;
    }
    if (!part && !replace && strcmp(sbucket, q->bucket) == 0 && strcmp(src.key, q->key) == 0) {
        s3_obj_free(&src);
        fail_msg(q, S3E_INVALID_REQUEST, "This copy request is illegal because it is trying to copy an "
                                         "object to itself without changing the object's metadata, "
                                         "storage class, website redirect location or encryption "
                                         "attributes.");
        return;
    }
    if (!part && s3_bucket_exists(q->w->db, q->bucket) != 1) {
        s3_obj_free(&src);
        fail(q, S3E_NO_SUCH_BUCKET);
        return;
    }
    int rc = copy_bytes(q, &src, from, len);
    uint8_t md5[16];
    if (!rc && q->ck_alg >= 0)
        s3_writer_checksum(&q->wr, (enum s3_ck)q->ck_alg, q->part_ck, sizeof(q->part_ck));
    if (!rc)
        rc = s3_writer_finish(&q->wr, md5);
    if (rc) {
        s3_obj_free(&src);
        fail(q, errno_err(rc));
        return;
    }
    q->writing = false;
    char etag[72] = "\"";
    cairn_hex(md5, 16, etag + 1);
    strcat(etag, "\"");
    char file[80];
    snprintf(file, sizeof(file), "%s %llu\n", q->wr.id, (unsigned long long)q->wr.size);
    char *old = NULL;
    long long now = (long long)(cairn_wall_time() * 1000);
    if (part) {
        rc = s3_part_put(q->w->db, q->upload_id, q->part, q->wr.size, etag, q->wr.id, q->part_ck, &old);
    } else {
        struct buf stored = BUF_INIT;
        if (replace)
            e = collect_headers(r, &stored);
        else
            buf_puts(&stored, src.headers);
        buf_putc(&stored, 0);
        struct s3_obj o = { .key = q->key, .size = q->wr.size, .mtime_ms = now,
                            .headers = buf_head(&stored), .parts = file };
        memcpy(o.etag, src.nparts ? etag : src.etag, sizeof(o.etag));
        if (src.nparts == 0)
            memcpy(etag, src.etag, sizeof(etag));
        new_version(q, &o);
        rc = e ? -EINVAL : s3_obj_put(q->w->db, q->bucket, &o, &old);
        if (!rc && q->bk.versioning == S3_VERSIONING_ENABLED)
            httpd_header(q->r, "x-amz-version-id", o.version);
        buf_free(&stored);
    }
    s3_writer_done(&q->wr);
    s3_obj_free(&src);
    if (rc) {
        s3_files_unlink(q->s->conf->data, file);
        fail(q, e ? e : rc == -ENOENT ? (part ? S3E_NO_SUCH_UPLOAD : S3E_NO_SUCH_BUCKET) : errno_err(rc));
        return;
    }
    s3_files_unlink(q->s->conf->data, old);
    free(old);
    char lm[48];
    iso8601(now, lm);
    struct buf b = BUF_INIT;
    buf_printf(&b, XMLHEAD "<%s " XMLNS "><LastModified>%s</LastModified><ETag>", part ? "CopyPartResult" : "CopyObjectResult", lm);
    s3_xml_escape(&b, etag, strlen(etag));
    buf_printf(&b, "</ETag></%s>", part ? "CopyPartResult" : "CopyObjectResult");
    reply_xml(q, 200, &b);
}

/* ---- buckets ---- */

struct blist {
    struct buf *b;
    const char *after, *prefix;
    long max, n;
    char last[64];
    bool truncated;
};

static void bucket_xml(void *arg, const char *name, long long created)
{
    struct blist *l = arg;
    if (strcmp(name, l->after) <= 0 || strncmp(name, l->prefix, strlen(l->prefix)) != 0 || l->truncated)
        return;
    if (l->n == l->max) {
        l->truncated = true;
        return;
    }
    char t[48];
    iso8601(created, t);
    buf_printf(l->b, "<Bucket><Name>%s</Name><CreationDate>%s</CreationDate></Bucket>", name, t);
    snprintf(l->last, sizeof(l->last), "%s", name);
    l->n++;
}

static void list_buckets(struct s3r *q)
{
    char mb[16], token[80] = "", prefix[80] = "";
    struct blist l = { .after = token, .prefix = prefix, .max = 10000 };
    if (qparam(q->r, "max-buckets", mb, sizeof(mb))) {
        char *end;
        l.max = strtol(mb, &end, 10);
        if (*end || l.max < 1 || l.max > 10000) {
            fail_msg(q, S3E_INVALID_ARGUMENT, "max-buckets must be between 1 and 10000");
            return;
        }
    }
    qparam(q->r, "continuation-token", token, sizeof(token));
    qparam(q->r, "prefix", prefix, sizeof(prefix));
    struct buf b = BUF_INIT;
    l.b = &b;
    buf_puts(&b, XMLHEAD "<ListAllMyBucketsResult " XMLNS ">");
    owner_xml(q, &b, "Owner");
    buf_puts(&b, "<Buckets>");
    if (s3_bucket_list(q->w->db, bucket_xml, &l)) {
        buf_free(&b);
        fail(q, S3E_INTERNAL);
        return;
    }
    buf_puts(&b, "</Buckets>");
    if (l.truncated)
        buf_printf(&b, "<ContinuationToken>%s</ContinuationToken>", l.last);
    if (prefix[0]) {
        buf_puts(&b, "<Prefix>");
        s3_xml_escape(&b, prefix, strlen(prefix));
        buf_puts(&b, "</Prefix>");
    }
    buf_puts(&b, "</ListAllMyBucketsResult>");
    reply_xml(q, 200, &b);
}

static void create_bucket_body(struct s3r *q)
{
    if (buf_used(&q->body)) {
        struct s3_xnode *x = s3_xml_parse(buf_head(&q->body), buf_used(&q->body));
        if (!x || strcmp(x->name, "CreateBucketConfiguration") != 0) {
            s3_xml_free(x);
            fail(q, S3E_MALFORMED_XML);
            return;
        }
        const char *loc = s3_xml_text(x, "LocationConstraint");
        bool ok = !loc || !*loc || strcmp(loc, q->s->conf->region) == 0;
        s3_xml_free(x);
        if (!ok) {
            fail_msg(q, S3E_INVALID_ARGUMENT, "The specified location-constraint is not valid");
            return;
        }
    }
    int rc = s3_bucket_create(q->w->db, q->bucket, q->ak->access);
    if (rc == -EEXIST) {
        struct s3_bucket b;
        memset(&b, 0, sizeof(b));
        bool mine = s3_bucket_get(q->w->db, q->bucket, &b) == 0 && strcmp(b.owner, q->ak->access) == 0;
        s3_bucket_free(&b);
        if (!mine || strcmp(q->s->conf->region, "us-east-1") != 0) {
            fail(q, mine ? S3E_BUCKET_EXISTS : S3E_BUCKET_TAKEN);    /* BucketAlreadyExists: another key's */
            return;
        }
    }
    /* us-east-1 answers 200 to its owner creating a bucket again (AWS's legacy rule) */
    if (rc && rc != -EEXIST) {
        fail(q, errno_err(rc));
        return;
    }
    char loc[80];
    snprintf(loc, sizeof(loc), "/%s", q->bucket);
    httpd_header(q->r, "Location", loc);
    reply(q, 200, NULL, NULL, 0);
}

/* ---- listing ---- */

struct lister {
    struct s3r *q;
    struct buf items;
    const char *prefix, *delim;
    size_t plen, dlen;
    int max, n;
    bool url, v2, versions, truncated, owner;
    char *last;             /* the last key or common prefix emitted */
    char last_version[40];
    char *skip_prefix;      /* a common prefix already emitted */
};

static void put_name(struct lister *l, struct buf *b, const char *s)
{
    if (l->url)
        http_uri_encode(b, s, strlen(s), true);
    else
        s3_xml_escape(b, s, strlen(s));
}

static int list_one(void *arg, const struct s3_obj *o)
{
    struct lister *l = arg;
    if (l->skip_prefix && strncmp(o->key, l->skip_prefix, strlen(l->skip_prefix)) == 0)
        return 0;
    const char *cp_end = NULL;
    if (l->dlen) {
        const char *d = strstr(o->key + l->plen, l->delim);
        if (d)
            cp_end = d + l->dlen;
    }
    if (l->n >= l->max) {
        l->truncated = true;
        return 1;
    }
    l->n++;
    free(l->last);
    if (cp_end) {
        size_t cl = (size_t)(cp_end - o->key);
        l->last = strndup(o->key, cl);
        free(l->skip_prefix);
        l->skip_prefix = strdup(l->last);
        buf_puts(&l->items, "<CommonPrefixes><Prefix>");
        put_name(l, &l->items, l->last);
        buf_puts(&l->items, "</Prefix></CommonPrefixes>");
        return 0;
    }
    l->last = strdup(o->key);
    snprintf(l->last_version, sizeof(l->last_version), "%s", o->version);
    char t[48];
    iso8601(o->mtime_ms, t);
    const char *tag = !l->versions ? "Contents" : o->dm ? "DeleteMarker" : "Version";
    buf_printf(&l->items, "<%s><Key>", tag);
    put_name(l, &l->items, o->key);
    buf_puts(&l->items, "</Key>");
    if (l->versions)
        buf_printf(&l->items, "<VersionId>%s</VersionId><IsLatest>%s</IsLatest>", o->version,
                   o->latest ? "true" : "false");
    buf_printf(&l->items, "<LastModified>%s</LastModified>", t);
    if (!o->dm) {
        buf_puts(&l->items, "<ETag>");
        s3_xml_escape(&l->items, o->etag, strlen(o->etag));
        buf_printf(&l->items, "</ETag><Size>%llu</Size>", (unsigned long long)o->size);
    }
    if (l->owner)
        owner_xml(l->q, &l->items, "Owner");
    if (!o->dm)
        buf_puts(&l->items, "<StorageClass>STANDARD</StorageClass>");
    buf_printf(&l->items, "</%s>", tag);
    return 0;
}

static void token_encode(const char *key, char *out, size_t cap)
{
    s3_b64((const uint8_t *)key, strlen(key), out, cap);
}

static void list_objects(struct s3r *q, bool v2, bool versions)
{
    struct httpd_req *r = q->r;
    static __thread char prefix[S3_MAX_KEY_LEN + 1], delim[S3_MAX_KEY_LEN + 1], after[S3_MAX_KEY_LEN + 1],
        token[2 * S3_MAX_KEY_LEN], start[S3_MAX_KEY_LEN + 1], enc[16], mk[16], fo[8];
    prefix[0] = delim[0] = after[0] = token[0] = start[0] = enc[0] = 0;
    qparam(r, "prefix", prefix, sizeof(prefix));
    qparam(r, "delimiter", delim, sizeof(delim));
    bool url = qparam(r, "encoding-type", enc, sizeof(enc));
    if (url && strcmp(enc, "url") != 0) {
        fail_msg(q, S3E_INVALID_ARGUMENT, "Invalid Encoding Method specified in Request");
        return;
    }
    int max = 1000;
    if (qparam(r, "max-keys", mk, sizeof(mk))) {
        char *end;
        long v = strtol(mk, &end, 10);
        if (*end || end == mk || v < 0) {
            fail_msg(q, S3E_INVALID_ARGUMENT, "Provided max-keys not an integer or within integer range");
            return;
        }
        max = (int)MIN(v, 1000L);
    }
    bool have_token = false, have_start = false;
    long long after_seq = -1;
    if (v2) {
        have_start = qparam(r, "start-after", start, sizeof(start));
        if ((have_token = qparam(r, "continuation-token", token, sizeof(token))) && token[0]) {
            uint8_t raw[S3_MAX_KEY_LEN + 4];
            int n = token[0] ? s3_unb64(token, raw, sizeof(raw) - 1) : -1;
            if (n < 0) {
                fail_msg(q, S3E_INVALID_ARGUMENT, "The continuation token provided is incorrect");
                return;
            }
            memcpy(after, raw, (size_t)n);
            after[n] = 0;
        } else if (have_start) {
            snprintf(after, sizeof(after), "%s", start);
        }
    } else {
        qparam(r, versions ? "key-marker" : "marker", after, sizeof(after));
        char vm[64];
        if (versions && after[0] && qparam(r, "version-id-marker", vm, sizeof(vm)) && vm[0]) {
            struct s3_obj mo;
            if (s3_obj_get(q->w->db, q->bucket, after, vm, &mo) == 0) {
                after_seq = mo.seq;     /* resume after that version of the key */
            }
            s3_obj_free(&mo);
        }
    }
    struct lister l = { .q = q, .prefix = prefix, .delim = delim, .plen = strlen(prefix),
                        .dlen = strlen(delim), .max = max, .url = url, .v2 = v2,
                        .versions = versions };
    l.owner = !v2 || (qparam(r, "fetch-owner", fo, sizeof(fo)) && strcmp(fo, "true") == 0);
    /* resuming after a common prefix skips the keys under it */
    if (l.dlen && after[0] && strlen(after) >= l.dlen &&
        strcmp(after + strlen(after) - l.dlen, delim) == 0 && strncmp(after, prefix, l.plen) == 0)
        l.skip_prefix = strdup(after);
    int rc = max ? s3_obj_scan(q->w->db, q->bucket, prefix, after, after_seq, versions, list_one, &l) : 0;
    if (rc) {
        free(l.last);
        free(l.skip_prefix);
        buf_free(&l.items);
        fail(q, errno_err(rc));
        return;
    }
    struct buf b = BUF_INIT;
    const char *root = versions ? "ListVersionsResult" : "ListBucketResult";
    buf_printf(&b, XMLHEAD "<%s " XMLNS "><Name>%s</Name><Prefix>", root, q->bucket);
    if (v2)
        put_name(&l, &b, prefix);
    else
        s3_xml_escape(&b, prefix, strlen(prefix));
    buf_puts(&b, "</Prefix>");
    if (v2) {
        buf_printf(&b, "<KeyCount>%d</KeyCount>", l.n);
        if (have_token) {
            buf_puts(&b, "<ContinuationToken>");
            s3_xml_escape(&b, token, strlen(token));
            buf_puts(&b, "</ContinuationToken>");
        }
        if (have_start) {
            buf_puts(&b, "<StartAfter>");
            put_name(&l, &b, start);
            buf_puts(&b, "</StartAfter>");
        }
        if (l.truncated && l.last) {
            char tok[2 * S3_MAX_KEY_LEN];
            token_encode(l.last, tok, sizeof(tok));
            buf_printf(&b, "<NextContinuationToken>%s</NextContinuationToken>", tok);
        }
    } else if (versions) {
        buf_puts(&b, "<KeyMarker>");
        put_name(&l, &b, after);
        buf_puts(&b, "</KeyMarker><VersionIdMarker></VersionIdMarker>");
        if (l.truncated && l.last) {
            buf_puts(&b, "<NextKeyMarker>");
            put_name(&l, &b, l.last);
            buf_printf(&b, "</NextKeyMarker><NextVersionIdMarker>%s</NextVersionIdMarker>", l.last_version);
        }
    } else {
        buf_puts(&b, "<Marker>");
        put_name(&l, &b, after);
        buf_puts(&b, "</Marker>");
        if (l.truncated && l.last && l.dlen) {
            buf_puts(&b, "<NextMarker>");
            put_name(&l, &b, l.last);
            buf_puts(&b, "</NextMarker>");
        }
    }
    buf_printf(&b, "<MaxKeys>%d</MaxKeys>", max);
    if (l.dlen) {
        buf_puts(&b, "<Delimiter>");
        put_name(&l, &b, delim);
        buf_puts(&b, "</Delimiter>");
    }
    if (url)
        buf_puts(&b, "<EncodingType>url</EncodingType>");
    buf_printf(&b, "<IsTruncated>%s</IsTruncated>", l.truncated ? "true" : "false");
    buf_append(&b, buf_head(&l.items), buf_used(&l.items));
    buf_printf(&b, "</%s>", root);
    free(l.last);
    free(l.skip_prefix);
    buf_free(&l.items);
    reply_xml(q, 200, &b);
}

/* ---- multipart ---- */

/* "SHA256" -> S3_CK_SHA256 (-1 when unknown). */
static int ck_by_name(const char *name)
{
    for (int i = 0; i < S3_CK_N; i++)
        if (strcasecmp(name, s3_ck_names[i]) == 0)
            return i;
    return -1;
}

/* The algorithm an upload was created with (its stored headers), or -1. */
static int upload_ck(const char *headers)
{
    const char *p = headers ? strstr(headers, "x-amz-checksum-algorithm: ") : NULL;
    char name[16];
    if (!p || sscanf(p + 26, "%15s", name) != 1)
        return -1;
    return ck_by_name(name);
}

static const char *const ck_tags[S3_CK_N] = { "ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256" };

/* The checksum of the parts' checksums (raw, concatenated), base64, then "-N". */
static void composite_ck(int alg, const uint8_t *cat, size_t n, int parts, char *out, size_t cap)
{
    uint8_t d[32];
    unsigned dl = 0;
    if (alg == S3_CK_CRC32 || alg == S3_CK_CRC32C) {
        uint32_t v = alg == S3_CK_CRC32 ? (uint32_t)crc32(0, cat, (uInt)n) : s3_crc32c(0, cat, n);
        d[0] = (uint8_t)(v >> 24);
        d[1] = (uint8_t)(v >> 16);
        d[2] = (uint8_t)(v >> 8);
        d[3] = (uint8_t)v;
        dl = 4;
    } else {
        EVP_Digest(cat, n, d, &dl, alg == S3_CK_SHA1 ? EVP_sha1() : EVP_sha256(), NULL);
    }
    s3_b64(d, dl, out, cap);
    size_t l = strlen(out);
    snprintf(out + l, cap - l, "-%d", parts);
}

static bool upload_matches(struct s3r *q, char **headers)
{
    char *b = NULL, *k = NULL;
    int rc = s3_upload_get(q->w->db, q->upload_id, &b, &k, headers);
    bool ok = rc == 0 && strcmp(b, q->bucket) == 0 && strcmp(k, q->key) == 0;
    free(b);
    free(k);
    return ok;
}

static void create_upload(struct s3r *q)
{
    if (s3_bucket_exists(q->w->db, q->bucket) != 1) {
        fail(q, S3E_NO_SUCH_BUCKET);
        return;
    }
    struct buf h = BUF_INIT;
    enum s3_err e = collect_headers(q->r, &h);
    char alg[16];
    if (!e && hdr_str(q->r, "x-amz-checksum-algorithm", alg, sizeof(alg))) {
        int a = ck_by_name(alg);
        if (a < 0)
            e = S3E_INVALID_REQUEST;
        else {
            for (char *c = alg; *c; c++)
                *c = (char)toupper((unsigned char)*c);
            buf_printf(&h, "x-amz-checksum-algorithm: %s\n", alg);
            httpd_header(q->r, "x-amz-checksum-algorithm", alg);
        }
    }
    buf_putc(&h, 0);
    if (e) {
        buf_free(&h);
        fail(q, e);
        return;
    }
    char id[40];
    s3_random_hex(id, 16);
    int rc = s3_upload_create(q->w->db, id, q->bucket, q->key, buf_head(&h));
    buf_free(&h);
    if (rc) {
        fail(q, errno_err(rc));
        return;
    }
    struct buf b = BUF_INIT;
    buf_printf(&b, XMLHEAD "<InitiateMultipartUploadResult " XMLNS "><Bucket>%s</Bucket><Key>", q->bucket);
    s3_xml_escape(&b, q->key, strlen(q->key));
    buf_printf(&b, "</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>", id);
    reply_xml(q, 200, &b);
}

static bool part_params(struct s3r *q)
{
    char pn[16];
    if (!qparam(q->r, "uploadId", q->upload_id, sizeof(q->upload_id))) {
        fail(q, S3E_NO_SUCH_UPLOAD);
        return false;
    }
    if (q->api == API_UPLOAD_PART || q->api == API_UPLOAD_PART_COPY) {
        char *end;
        qparam(q->r, "partNumber", pn, sizeof(pn));
        long n = strtol(pn, &end, 10);
        if (*end || n < 1 || n > S3_MAX_PARTS) {
            fail_msg(q, S3E_INVALID_ARGUMENT, "Part number must be an integer between 1 and 10000, inclusive");
            return false;
        }
        q->part = (int)n;
    }
    char *headers = NULL;
    if (!upload_matches(q, &headers)) {
        free(headers);
        fail(q, S3E_NO_SUCH_UPLOAD);
        return false;
    }
    q->ck_alg = upload_ck(headers);
    free(headers);
    return true;
}

static void complete_result(struct s3r *q, const char *etag, int alg, const char *composite)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, XMLHEAD "<CompleteMultipartUploadResult " XMLNS "><Location>/%s/", q->bucket);
    s3_xml_escape(&b, q->key, strlen(q->key));
    buf_printf(&b, "</Location><Bucket>%s</Bucket><Key>", q->bucket);
    s3_xml_escape(&b, q->key, strlen(q->key));
    buf_puts(&b, "</Key><ETag>");
    s3_xml_escape(&b, etag, strlen(etag));
    buf_puts(&b, "</ETag>");
    if (alg >= 0 && composite && composite[0])
        buf_printf(&b, "<%s>%s</%s>", ck_tags[alg], composite, ck_tags[alg]);
    buf_puts(&b, "</CompleteMultipartUploadResult>");
    reply_xml(q, 200, &b);
}


/* Whether the next Part of a CompleteMultipartUpload names the same number. */
static bool part_repeated(const struct s3_xnode *c, int n)
{
    for (c = c->next; c; c = c->next)
        if (strcmp(c->name, "Part") == 0) {
            const char *num = s3_xml_text(c, "PartNumber");
            return num && atoi(num) == n;
        }
    return false;
}
static void complete_upload(struct s3r *q)
{
    char *headers = NULL, done[200];
    if (!upload_matches(q, &headers)) {
        free(headers);
        /* completing again (a retry whose answer was lost) answers as the first time:
         * "ETAG[ ALG COMPOSITE]" */
        char etag[80], algn[16], comp[100];
        int got = s3_upload_completed(q->w->db, q->upload_id, q->bucket, q->key, done, sizeof(done)) == 0
                      ? sscanf(done, "%79s %15s %99s", etag, algn, comp) : 0;
        if (got >= 1)
            complete_result(q, etag, got == 3 ? ck_by_name(algn) : -1, got == 3 ? comp : NULL);
        else
            fail(q, S3E_NO_SUCH_UPLOAD);
        return;
    }
    struct s3_xnode *x = s3_xml_parse(buf_head(&q->body), buf_used(&q->body));
    struct s3_part *parts = NULL;
    size_t np = 0;
    enum s3_err e = S3E_NONE;
    if (!x || strcmp(x->name, "CompleteMultipartUpload") != 0 || !x->child)
        e = S3E_MALFORMED_XML;
    else if (s3_part_list(q->w->db, q->upload_id, &parts, &np))
        e = S3E_INTERNAL;
    struct buf files = BUF_INIT, cat = BUF_INIT;
    int alg = upload_ck(headers);
    char composite[100] = "";
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_md5(), NULL);
    uint64_t total = 0;
    int count_parts = 0, last = 0;
    for (struct s3_xnode *c = x && !e ? x->child : NULL; c && !e; c = c->next) {
        if (strcmp(c->name, "Part") != 0)
            continue;
        const char *num = s3_xml_text(c, "PartNumber"), *etag = s3_xml_text(c, "ETag");
        int n = num ? atoi(num) : 0;
        if (!num || !etag || n < 1 || n > S3_MAX_PARTS) {
            e = S3E_MALFORMED_XML;
            break;
        }
        if (n < last) {
            e = S3E_INVALID_PART_ORDER;
            break;
        }
        last = n;
        /* a part number listed again (a part sent twice, both answers collected):
         * its last entry counts, as AWS takes it */
        if (part_repeated(c, n))
            continue;
        struct s3_part *p = NULL;
        for (size_t i = 0; i < np; i++)
            if (parts[i].num == n)
                p = &parts[i];
        char want[80];
        snprintf(want, sizeof(want), "%s%s%s", etag[0] == '"' ? "" : "\"", etag, etag[0] == '"' ? "" : "\"");
        if (!p || strcmp(p->etag, want) != 0) {
            e = S3E_INVALID_PART;
            break;
        }
        if (alg >= 0) {
            /* a part's checksum, named as it was stored */
            const char *given = s3_xml_text(c, ck_tags[alg]);
            uint8_t ck[32];
            int cl = given && strcmp(given, p->checksum) == 0 ? s3_unb64(given, ck, sizeof(ck)) : -1;
            if (cl < 0) {
                e = S3E_BAD_DIGEST;
                break;
            }
            buf_append(&cat, ck, (size_t)cl);
        }
        uint8_t raw[16];
        for (int i = 0; i < 16; i++) {
            unsigned v;
            sscanf(p->etag + 1 + 2 * i, "%2x", &v);
            raw[i] = (uint8_t)v;
        }
        EVP_DigestUpdate(md, raw, 16);
        buf_printf(&files, "%s %llu\n", p->file, (unsigned long long)p->size);
        total += p->size;
        count_parts++;
    }
    /* every part but the last at least 5 MiB */
    if (!e && count_parts == 0)
        e = S3E_MALFORMED_XML;
    if (!e) {
        int seen = 0;
        for (struct s3_xnode *c = x->child; c; c = c->next) {
            if (strcmp(c->name, "Part") != 0)
                continue;
            int n = atoi(s3_xml_text(c, "PartNumber"));
            if (part_repeated(c, n))
                continue;
            seen++;
            for (size_t i = 0; i < np; i++)
                if (parts[i].num == n && seen < count_parts && parts[i].size < S3_MIN_PART)
                    e = S3E_ENTITY_TOO_SMALL;
        }
    }
    free(parts);
    s3_xml_free(x);
    if (!e && alg >= 0) {
        composite_ck(alg, cat.data ? (const uint8_t *)buf_head(&cat) : (const uint8_t *)"", buf_used(&cat),
                     count_parts, composite, sizeof(composite));
        char hn[40], given[100];
        snprintf(hn, sizeof(hn), "x-amz-checksum-%s", s3_ck_names[alg]);
        if (hdr_str(q->r, hn, given, sizeof(given)) && strcmp(given, composite) != 0)
            e = S3E_BAD_DIGEST;
        /* the object keeps its composite checksum instead of the algorithm's name */
        char *line = headers ? strstr(headers, "x-amz-checksum-algorithm: ") : NULL;
        if (!e && line) {
            char *eol = strchr(line, '\n');
            memmove(line, eol ? eol + 1 : line + strlen(line), strlen(eol ? eol + 1 : "") + 1);
            struct buf nh = BUF_INIT;
            buf_printf(&nh, "%s%s: %s\n", headers, hn, composite);
            buf_putc(&nh, 0);
            free(headers);
            headers = buf_steal(&nh);
        }
    }
    buf_free(&cat);
    uint8_t d[16];
    unsigned dl = 16;
    EVP_DigestFinal_ex(md, d, &dl);
    EVP_MD_CTX_free(md);
    if (e) {
        free(headers);
        buf_free(&files);
        fail(q, e);
        return;
    }
    char etag[72] = "\"";
    cairn_hex(d, 16, etag + 1);
    snprintf(etag + 33, sizeof(etag) - 33, "-%d\"", count_parts);
    buf_putc(&files, 0);
    struct s3_obj o = { .key = q->key, .size = total, .mtime_ms = (long long)(cairn_wall_time() * 1000),
                        .headers = headers, .parts = buf_head(&files), .nparts = count_parts };
    memcpy(o.etag, etag, sizeof(etag));
    new_version(q, &o);
    char *unused = NULL, *old = NULL;
    snprintf(done, sizeof(done), "%s%s%s%s%s", etag, alg >= 0 ? " " : "", alg >= 0 ? s3_ck_names[alg] : "",
             alg >= 0 ? " " : "", alg >= 0 ? composite : "");
    int rc = s3_upload_complete(q->w->db, q->upload_id, q->bucket, &o, done, &unused, &old);
    if (!rc && q->bk.versioning == S3_VERSIONING_ENABLED)
        httpd_header(q->r, "x-amz-version-id", o.version);
    free(headers);
    buf_free(&files);
    if (rc) {
        fail(q, rc == -ENOENT ? S3E_NO_SUCH_UPLOAD : errno_err(rc));
        return;
    }
    s3_files_unlink(q->s->conf->data, unused);
    s3_files_unlink(q->s->conf->data, old);
    free(unused);
    free(old);
    complete_result(q, etag, alg, composite);
}

static void list_parts(struct s3r *q)
{
    struct s3_part *parts;
    size_t np;
    if (s3_part_list(q->w->db, q->upload_id, &parts, &np)) {
        fail(q, S3E_INTERNAL);
        return;
    }
    char v[16];
    int max = 1000, marker = 0;
    if (qparam(q->r, "max-parts", v, sizeof(v)))
        max = (int)MIN(MAX(atol(v), 0L), 1000L);
    if (qparam(q->r, "part-number-marker", v, sizeof(v)))
        marker = atoi(v);
    struct buf b = BUF_INIT;
    buf_printf(&b, XMLHEAD "<ListPartsResult " XMLNS "><Bucket>%s</Bucket><Key>", q->bucket);
    s3_xml_escape(&b, q->key, strlen(q->key));
    buf_printf(&b, "</Key><UploadId>%s</UploadId><PartNumberMarker>%d</PartNumberMarker>"
                   "<StorageClass>STANDARD</StorageClass>", q->upload_id, marker);
    owner_xml(q, &b, "Owner");
    owner_xml(q, &b, "Initiator");
    int n = 0, lastnum = 0;
    bool trunc = false;
    struct buf items = BUF_INIT;
    for (size_t i = 0; i < np; i++) {
        if (parts[i].num <= marker)
            continue;
        if (n == max) {
            trunc = true;
            break;
        }
        char t[48];
        iso8601(parts[i].mtime_ms, t);
        buf_printf(&items, "<Part><PartNumber>%d</PartNumber><LastModified>%s</LastModified><ETag>", parts[i].num, t);
        s3_xml_escape(&items, parts[i].etag, strlen(parts[i].etag));
        buf_printf(&items, "</ETag><Size>%llu</Size></Part>", (unsigned long long)parts[i].size);
        lastnum = parts[i].num;
        n++;
    }
    free(parts);
    buf_printf(&b, "<NextPartNumberMarker>%d</NextPartNumberMarker><MaxParts>%d</MaxParts><IsTruncated>%s</IsTruncated>",
               lastnum, max, trunc ? "true" : "false");
    buf_append(&b, buf_head(&items), buf_used(&items));
    buf_free(&items);
    buf_puts(&b, "</ListPartsResult>");
    reply_xml(q, 200, &b);
}

static void list_uploads(struct s3r *q)
{
    if (s3_bucket_exists(q->w->db, q->bucket) != 1) {
        fail(q, S3E_NO_SUCH_BUCKET);
        return;
    }
    struct s3_upload *ups;
    size_t n;
    if (s3_upload_list(q->w->db, q->bucket, &ups, &n)) {
        fail(q, S3E_INTERNAL);
        return;
    }
    char prefix[S3_MAX_KEY_LEN + 1] = "";
    qparam(q->r, "prefix", prefix, sizeof(prefix));
    struct buf b = BUF_INIT;
    buf_printf(&b, XMLHEAD "<ListMultipartUploadsResult " XMLNS "><Bucket>%s</Bucket><KeyMarker></KeyMarker>"
                   "<UploadIdMarker></UploadIdMarker><NextKeyMarker></NextKeyMarker>"
                   "<NextUploadIdMarker></NextUploadIdMarker><MaxUploads>1000</MaxUploads>"
                   "<IsTruncated>false</IsTruncated>", q->bucket);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(ups[i].key, prefix, strlen(prefix)) != 0)
            continue;
        char t[48];
        iso8601(ups[i].created_ms, t);
        buf_puts(&b, "<Upload><Key>");
        s3_xml_escape(&b, ups[i].key, strlen(ups[i].key));
        buf_printf(&b, "</Key><UploadId>%s</UploadId>", ups[i].id);
        owner_xml(q, &b, "Initiator");
        owner_xml(q, &b, "Owner");
        buf_printf(&b, "<StorageClass>STANDARD</StorageClass><Initiated>%s</Initiated></Upload>", t);
    }
    s3_uploads_free(ups, n);
    buf_puts(&b, "</ListMultipartUploadsResult>");
    reply_xml(q, 200, &b);
}

/* ---- deletes ---- */

static void delete_objects(struct s3r *q)
{
    struct httpd_req *r = q->r;
    if (s3_bucket_exists(q->w->db, q->bucket) != 1) {
        fail(q, S3E_NO_SUCH_BUCKET);
        return;
    }
    struct s3_xnode *x = s3_xml_parse(r->body.p, r->body.n);
    if (!x || strcmp(x->name, "Delete") != 0) {
        s3_xml_free(x);
        fail(q, S3E_MALFORMED_XML);
        return;
    }
    int n = 0;
    for (struct s3_xnode *c = x->child; c; c = c->next)
        n += strcmp(c->name, "Object") == 0;
    if (n == 0 || n > 1000) {
        s3_xml_free(x);
        fail(q, S3E_MALFORMED_XML);
        return;
    }
    const char *quiet = s3_xml_text(x, "Quiet");
    bool is_quiet = quiet && strcmp(quiet, "true") == 0;
    struct buf b = BUF_INIT;
    buf_puts(&b, XMLHEAD "<DeleteResult " XMLNS ">");
    for (struct s3_xnode *c = x->child; c; c = c->next) {
        if (strcmp(c->name, "Object") != 0)
            continue;
        const char *k = s3_xml_text(c, "Key"), *vid = s3_xml_text(c, "VersionId");
        if (!k)
            continue;
        char *old = NULL;
        struct s3_obj marker = { 0 };
        s3_random_hex(marker.version, 16);
        int rc = strlen(k) > S3_MAX_KEY_LEN ? -ENAMETOOLONG
                                            : s3_obj_delete(q->w->db, q->bucket, k, vid, &marker, &old);
        if (rc == 0) {
            s3_files_unlink(q->s->conf->data, old);
            free(old);
            if (!is_quiet) {
                buf_puts(&b, "<Deleted><Key>");
                s3_xml_escape(&b, k, strlen(k));
                buf_puts(&b, "</Key>");
                if (vid) {
                    buf_puts(&b, "<VersionId>");
                    s3_xml_escape(&b, vid, strlen(vid));
                    buf_puts(&b, "</VersionId>");
                    if (marker.dm)
                        buf_puts(&b, "<DeleteMarker>true</DeleteMarker>");
                } else if (marker.dm) {
                    buf_printf(&b, "<DeleteMarker>true</DeleteMarker><DeleteMarkerVersionId>%s"
                                   "</DeleteMarkerVersionId>", marker.version);
                }
                buf_puts(&b, "</Deleted>");
            }
        } else {
            buf_puts(&b, "<Error><Key>");
            s3_xml_escape(&b, k, strlen(k));
            buf_printf(&b, "</Key><Code>%s</Code><Message>%s</Message></Error>",
                       rc == -ENAMETOOLONG ? "KeyTooLongError" : "InternalError",
                       rc == -ENAMETOOLONG ? "Your key is too long" : "We encountered an internal error.");
        }
    }
    s3_xml_free(x);
    buf_puts(&b, "</DeleteResult>");
    reply_xml(q, 200, &b);
}

static void delete_object(struct s3r *q)
{
    char *old = NULL, vid[64];
    bool by_version = qparam(q->r, "versionId", vid, sizeof(vid));
    struct s3_obj marker = { 0 };
    s3_random_hex(marker.version, 16);
    int rc = s3_obj_delete(q->w->db, q->bucket, q->key, by_version ? vid : NULL, &marker, &old);
    if (rc) {
        fail(q, rc == -ENOENT ? S3E_NO_SUCH_BUCKET : errno_err(rc));
        return;
    }
    if (by_version)
        httpd_header(q->r, "x-amz-version-id", vid);
    else if (marker.dm)
        httpd_header(q->r, "x-amz-version-id", marker.version);
    if (marker.dm)
        httpd_header(q->r, "x-amz-delete-marker", "true");
    s3_files_unlink(q->s->conf->data, old);
    free(old);
    reply(q, 204, NULL, NULL, 0);
}

/* A body read whole (XML of bucket calls, or a streamed PUT that is not an object). */
static void object_tagging(struct s3r *q)
{
    char vid[64];
    bool by_version = qparam(q->r, "versionId", vid, sizeof(vid));
    struct s3_obj o;
    int rc = s3_obj_get(q->w->db, q->bucket, q->key, by_version ? vid : NULL, &o);
    if (rc || o.dm) {
        if (!rc)
            s3_obj_free(&o);
        fail(q, rc && rc != -ENOENT ? errno_err(rc) : S3E_NO_SUCH_KEY);
        return;
    }
    if (q->bk.versioning != S3_VERSIONING_OFF)
        httpd_header(q->r, "x-amz-version-id", o.version);
    struct tag_list t = { 0 };
    enum s3_err e = S3E_NONE;
    if (q->api == API_GET_OBJECT_TAGGING) {
        e = tags_from_query(stored_tagging(o.headers), &t, S3_MAX_BUCKET_TAGS);
        struct buf b = BUF_INIT;
        tags_to_xml(&t, &b);
        tags_free(&t);
        s3_obj_free(&o);
        reply_xml(q, 200, &b);
        return;
    }
    struct buf enc = BUF_INIT;
    if (q->api == API_PUT_OBJECT_TAGGING) {
        e = tags_from_xml(&q->body, &t, S3_MAX_OBJECT_TAGS);
        tags_to_query(&t, &enc);
        tags_free(&t);
    }
    buf_putc(&enc, 0);
    char *hs = e ? NULL : with_tagging(o.headers, buf_head(&enc));
    buf_free(&enc);
    if (!e)
        rc = s3_obj_set_headers(q->w->db, q->bucket, q->key, by_version ? o.version : NULL, hs);
    free(hs);
    s3_obj_free(&o);
    if (e || rc)
        fail(q, e ? e : rc == -ENOENT ? S3E_NO_SUCH_KEY : errno_err(rc));
    else
        reply(q, q->api == API_PUT_OBJECT_TAGGING ? 200 : 204, NULL, NULL, 0);
}

/* Bucket tagging and CORS: documents kept with the bucket. */
static void bucket_doc(struct s3r *q)
{
    bool lc = q->api == API_PUT_LIFECYCLE || q->api == API_GET_LIFECYCLE || q->api == API_DELETE_LIFECYCLE;
    char **slot = q->api == API_PUT_CORS || q->api == API_GET_CORS || q->api == API_DELETE_CORS
                      ? &q->bk.cors : lc ? &q->bk.lifecycle : &q->bk.tagging;
    bool cors = slot == &q->bk.cors;
    if (q->api == API_GET_CORS || q->api == API_GET_BUCKET_TAGGING || q->api == API_GET_LIFECYCLE) {
        if (!*slot) {
            fail(q, cors ? S3E_NO_SUCH_CORS : lc ? S3E_NO_SUCH_LIFECYCLE : S3E_NO_SUCH_TAG_SET);
            return;
        }
        struct buf b = BUF_INIT;       /* reply frees q, and the document with it */
        buf_puts(&b, *slot);
        reply_xml(q, 200, &b);
        return;
    }
    free(*slot);
    *slot = NULL;
    if (q->api == API_PUT_BUCKET_TAGGING) {
        struct tag_list t = { 0 };
        enum s3_err e = tags_from_xml(&q->body, &t, S3_MAX_BUCKET_TAGS);
        struct buf b = BUF_INIT;
        if (!e)
            tags_to_xml(&t, &b);
        tags_free(&t);
        if (e) {
            fail(q, e);
            return;
        }
        buf_putc(&b, 0);
        *slot = buf_steal(&b);
    } else if (q->api == API_PUT_LIFECYCLE) {
        struct s3_lc parsed;
        enum s3_err e = s3_lc_parse(q->body.data ? buf_head(&q->body) : "", buf_used(&q->body), &parsed);
        if (e) {
            fail(q, e);
            return;
        }
        s3_lc_free(&parsed);
        /* kept as given, with an ID for every rule that had none (as S3 does) */
        struct s3_xnode *x = s3_xml_parse(buf_head(&q->body), buf_used(&q->body));
        for (struct s3_xnode *r = x ? x->child : NULL; r; r = r->next)
            if (strcmp(r->name, "Rule") == 0 && !s3_xml_child(r, "ID")) {
                char id[33];
                s3_random_hex(id, 16);
                s3_xml_add(r, "ID", id);
            }
        struct buf doc = BUF_INIT;
        buf_puts(&doc, XMLHEAD);
        if (x)
            s3_xml_write(&doc, x, XMLNS);
        buf_putc(&doc, 0);
        s3_xml_free(x);
        *slot = buf_steal(&doc);
    } else if (q->api == API_PUT_CORS) {
        struct s3_xnode *x = s3_xml_parse(q->body.data ? buf_head(&q->body) : "", buf_used(&q->body));
        bool ok = x && strcmp(x->name, "CORSConfiguration") == 0 && x->child;
        for (struct s3_xnode *r = ok ? x->child : NULL; r && ok; r = r->next) {
            ok = strcmp(r->name, "CORSRule") == 0 && s3_xml_child(r, "AllowedOrigin") &&
                 s3_xml_child(r, "AllowedMethod");
            for (struct s3_xnode *m = r->child; m && ok; m = m->next)
                if (strcmp(m->name, "AllowedMethod") == 0)
                    ok = m->text && (strcmp(m->text, "GET") == 0 || strcmp(m->text, "PUT") == 0 ||
                                     strcmp(m->text, "HEAD") == 0 || strcmp(m->text, "POST") == 0 ||
                                     strcmp(m->text, "DELETE") == 0);
        }
        s3_xml_free(x);
        if (!ok) {
            fail(q, S3E_MALFORMED_XML);
            return;
        }
        buf_putc(&q->body, 0);
        *slot = strdup(buf_head(&q->body));
    }
    int rc = s3_bucket_set(q->w->db, q->bucket, &q->bk);
    if (rc)
        fail(q, errno_err(rc));
    else
        reply(q, q->api == API_PUT_CORS || q->api == API_PUT_BUCKET_TAGGING || q->api == API_PUT_LIFECYCLE
                     ? 200 : 204, NULL, NULL, 0);
}

/* ---- CORS ---- */

/* An origin pattern with at most one '*'. */
static bool wild_match(const char *pat, const char *s)
{
    const char *star = strchr(pat, '*');
    if (!star)
        return strcasecmp(pat, s) == 0;
    size_t pre = (size_t)(star - pat), post = strlen(star + 1), n = strlen(s);
    return n >= pre + post && strncasecmp(pat, s, pre) == 0 && strcasecmp(star + 1, s + n - post) == 0;
}

static bool rule_has(const struct s3_xnode *rule, const char *tag, const char *value)
{
    for (struct s3_xnode *c = rule->child; c; c = c->next)
        if (strcmp(c->name, tag) == 0 && c->text && wild_match(c->text, value))
            return true;
    return false;
}

/* The first rule that allows origin, method and every requested header. */
static const struct s3_xnode *cors_rule(const struct s3_xnode *cfg, const char *origin, const char *method,
                                        const char *req_headers)
{
    for (const struct s3_xnode *r = cfg->child; r; r = r->next) {
        if (!rule_has(r, "AllowedOrigin", origin) || !rule_has(r, "AllowedMethod", method))
            continue;
        bool ok = true;
        char hs[1024];
        snprintf(hs, sizeof(hs), "%s", req_headers ? req_headers : "");
        for (char *save = NULL, *h = strtok_r(hs, ", ", &save); h && ok; h = strtok_r(NULL, ", ", &save))
            ok = rule_has(r, "AllowedHeader", h);
        if (ok)
            return r;
    }
    return NULL;
}

static void cors_list(struct s3r *q, const struct s3_xnode *rule, const char *tag, const char *header)
{
    struct buf b = BUF_INIT;
    for (struct s3_xnode *c = rule->child; c; c = c->next)
        if (strcmp(c->name, tag) == 0 && c->text)
            buf_printf(&b, "%s%s", buf_used(&b) ? ", " : "", c->text);
    if (buf_used(&b)) {
        buf_putc(&b, 0);
        httpd_header(q->r, header, buf_head(&b));
    }
    buf_free(&b);
}

/* Adds the CORS answer headers for origin when a rule allows it; returns whether one did. */
static bool cors_headers(struct s3r *q, const char *origin, const char *method, const char *req_headers,
                         bool preflight)
{
    struct s3_xnode *cfg = q->bk.cors ? s3_xml_parse(q->bk.cors, strlen(q->bk.cors)) : NULL;
    const struct s3_xnode *rule = cfg ? cors_rule(cfg, origin, method, req_headers) : NULL;
    if (rule) {
        const char *any = s3_xml_text(rule, "AllowedOrigin");
        httpd_header(q->r, "Access-Control-Allow-Origin", any && strcmp(any, "*") == 0 && !preflight ? "*" : origin);
        httpd_header(q->r, "Access-Control-Allow-Methods", method);
        if (preflight && req_headers && *req_headers)
            httpd_header(q->r, "Access-Control-Allow-Headers", req_headers);
        cors_list(q, rule, "ExposeHeader", "Access-Control-Expose-Headers");
        const char *age = s3_xml_text(rule, "MaxAgeSeconds");
        if (age && preflight)
            httpd_header(q->r, "Access-Control-Max-Age", age);
        httpd_header(q->r, "Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method");
    }
    s3_xml_free(cfg);
    return rule != NULL;
}

static void preflight(struct s3r *q)
{
    char origin[512], method[32], rh[1024];
    bool have_rh = hdr_str(q->r, "access-control-request-headers", rh, sizeof(rh));
    if (!hdr_str(q->r, "origin", origin, sizeof(origin)) ||
        !hdr_str(q->r, "access-control-request-method", method, sizeof(method))) {
        fail(q, S3E_CORS_NEED_ORIGIN);
        return;
    }
    if (!cors_headers(q, origin, method, have_rh ? rh : NULL, true)) {
        fail(q, S3E_CORS_FORBIDDEN);
        return;
    }
    reply(q, 200, NULL, NULL, 0);
}

static void put_versioning(struct s3r *q)
{
    struct s3_xnode *x = s3_xml_parse(buf_head(&q->body), buf_used(&q->body));
    const char *st = x && strcmp(x->name, "VersioningConfiguration") == 0 ? s3_xml_text(x, "Status") : NULL;
    int v = !st ? -1 : strcmp(st, "Enabled") == 0 ? S3_VERSIONING_ENABLED
                     : strcmp(st, "Suspended") == 0 ? S3_VERSIONING_SUSPENDED : -1;
    s3_xml_free(x);
    if (v < 0) {
        fail(q, S3E_MALFORMED_XML);
        return;
    }
    q->bk.versioning = v;
    int rc = s3_bucket_set(q->w->db, q->bucket, &q->bk);
    if (rc)
        fail(q, rc == -ENOENT ? S3E_NO_SUCH_BUCKET : errno_err(rc));
    else
        reply(q, 200, NULL, NULL, 0);
}

static void small_body_done(struct s3r *q)
{
    switch (q->api) {
    case API_PUT_VERSIONING:
        put_versioning(q);
        return;
    case API_PUT_OBJECT_TAGGING:
        object_tagging(q);
        return;
    case API_PUT_BUCKET_TAGGING:
    case API_PUT_CORS:
    case API_PUT_LIFECYCLE:
        bucket_doc(q);
        return;
    case API_CREATE_BUCKET:
        create_bucket_body(q);
        return;
    case API_COMPLETE_UPLOAD:
        complete_upload(q);
        return;
    default:
        fail(q, S3E_NOT_IMPLEMENTED);
    }
}

/* ---- the handler ---- */

bool s3__stream_body(void *arg, const struct http_request *h)
{
    (void)arg;
    return strv_eq_cstr(h->method, "PUT");
}

static bool serve_builtin(struct s3r *q)
{
    struct httpd_req *r = q->r;
    if (hdr(r, "authorization") || has_q(r, "X-Amz-Algorithm"))
        return false;
    if (strv_has_prefix(r->h.path, "/-/") ||
        (strv_eq_cstr(r->h.path, "/metrics") && !is_public(q->s->conf, "metrics")))
        return service_handle_builtin(q->s->sc, r);
    return false;
}

void s3__handle(struct httpd_req *r, void *arg)
{
    struct s3_svc *s = arg;
    struct s3_worker *w = r->worker->data;
    struct s3r *q = calloc(1, sizeof(*q));
    if (!q) {
        httpd_respond(r, 503, "text/plain", "out of memory\n", 14);
        return;
    }
    q->r = r;
    q->w = w;
    q->s = s;
    q->start_ns = cairn_now_ns();
    q->expect_len = -1;
    q->ck_alg = -1;
    s3_random_hex(q->request_id, 8);
    enum s3_err e = route(q);
    if (!e && serve_builtin(q)) {
        s3r_free(q);
        return;
    }
    q->api = e ? API_OTHER : pick_api(q);
    if (e) {
        fail(q, e);
        return;
    }
    int bk_rc = 0;
    if (q->bucket[0] && q->api != API_CREATE_BUCKET) {
        bk_rc = s3_bucket_get(w->db, q->bucket, &q->bk);
        char origin[512], method[32];
        if (!bk_rc && q->bk.cors && q->api != API_OPTIONS && hdr_str(r, "origin", origin, sizeof(origin))) {
            if (!hdr_str(r, "access-control-request-method", method, sizeof(method)))
                snprintf(method, sizeof(method), "%.*s", (int)r->h.method.n, r->h.method.p);
            cors_headers(q, origin, method, NULL, false);
        }
    }
    if (q->api == API_OPTIONS) {
        /* a preflight carries no credentials */
        if (bk_rc)
            fail(q, bk_rc == -ENOENT ? S3E_NO_SUCH_BUCKET : errno_err(bk_rc));
        else
            preflight(q);
        return;
    }
    if ((e = authenticate(q))) {
        fail(q, e);
        return;
    }
    bool write = is_write_api(q->api);
    if (q->api == API_OTHER) {
        fail(q, S3E_NOT_IMPLEMENTED);
        return;
    }
    if (q->bucket[0] && q->api == API_CREATE_BUCKET && !s3__bucket_name_ok(q->bucket)) {
        fail(q, S3E_INVALID_BUCKET_NAME);
        return;
    }
    if (q->ak ? (q->bucket[0] && !granted(q->ak, q->bucket, write))
              : (write || !q->bucket[0] || !is_public(s->conf, q->bucket))) {
        fail(q, S3E_ACCESS_DENIED);
        return;
    }
    if (q->key && !q->key[0]) {
        fail(q, S3E_INVALID_REQUEST);
        return;
    }
    if (bk_rc) {
        fail(q, bk_rc == -ENOENT ? S3E_NO_SUCH_BUCKET : errno_err(bk_rc));
        return;
    }
    switch (q->api) {
    case API_LIST_BUCKETS: list_buckets(q); return;
    case API_CREATE_BUCKET:
    case API_PUT_VERSIONING:
    case API_PUT_OBJECT_TAGGING:
    case API_PUT_BUCKET_TAGGING:
    case API_PUT_CORS:
    case API_PUT_LIFECYCLE: read_body(q); return;
    case API_GET_LIFECYCLE:
    case API_DELETE_LIFECYCLE: bucket_doc(q); return;
    case API_GET_OBJECT_TAGGING:
    case API_DELETE_OBJECT_TAGGING: object_tagging(q); return;
    case API_GET_BUCKET_TAGGING:
    case API_DELETE_BUCKET_TAGGING:
    case API_GET_CORS:
    case API_DELETE_CORS: bucket_doc(q); return;

    case API_DELETE_BUCKET: {
        char *files = NULL;
        int rc = s3_bucket_delete(w->db, q->bucket, &files);
        s3_files_unlink(s->conf->data, files);
        free(files);
        if (rc)
            fail(q, rc == -ENOENT ? S3E_NO_SUCH_BUCKET : rc == -ENOTEMPTY ? S3E_BUCKET_NOT_EMPTY : errno_err(rc));
        else
            reply(q, 204, NULL, NULL, 0);
        return;
    }
    case API_HEAD_BUCKET: {
        int ex = s3_bucket_exists(w->db, q->bucket);
        if (ex == 1)
            httpd_header(r, "x-amz-bucket-region", s->conf->region);
        if (ex == 1)
            reply(q, 200, NULL, NULL, 0);
        else
            fail(q, ex == 0 ? S3E_NO_SUCH_BUCKET : S3E_INTERNAL);
        return;
    }
    case API_GET_LOCATION: {
        if (s3_bucket_exists(w->db, q->bucket) != 1) {
            fail(q, S3E_NO_SUCH_BUCKET);
            return;
        }
        struct buf b = BUF_INIT;
        bool us = strcmp(s->conf->region, "us-east-1") == 0;
        buf_printf(&b, XMLHEAD "<LocationConstraint " XMLNS ">%s</LocationConstraint>", us ? "" : s->conf->region);
        reply_xml(q, 200, &b);
        return;
    }
    case API_GET_VERSIONING: {
        if (s3_bucket_exists(w->db, q->bucket) != 1) {
            fail(q, S3E_NO_SUCH_BUCKET);
            return;
        }
        struct buf b = BUF_INIT;
        static const char *const st[] = { "", "<Status>Enabled</Status>", "<Status>Suspended</Status>" };
        buf_printf(&b, XMLHEAD "<VersioningConfiguration " XMLNS ">%s</VersioningConfiguration>",
                   st[q->bk.versioning]);
        reply_xml(q, 200, &b);
        return;
    }
    case API_LIST_OBJECTS: list_objects(q, false, false); return;
    case API_LIST_OBJECTS_V2: list_objects(q, true, false); return;
    case API_LIST_VERSIONS: list_objects(q, false, true); return;
    case API_LIST_UPLOADS: list_uploads(q); return;
    case API_DELETE_OBJECTS: delete_objects(q); return;
    case API_PUT_OBJECT:
        if (s3_bucket_exists(w->db, q->bucket) != 1) {
            fail(q, S3E_NO_SUCH_BUCKET);
            return;
        }
        if (hdr(r, "if-none-match") || hdr(r, "if-match")) {
            /* conditional writes: If-None-Match: * (create only), If-Match: ETag */
            struct s3_obj cur;
            int rc = s3_obj_get(w->db, q->bucket, q->key, NULL, &cur);
            bool exists = rc == 0 && !cur.dm;
            const struct http_header *im = hdr(r, "if-match");
            enum s3_err ce = hdr(r, "if-none-match") && exists ? S3E_PRECONDITION_FAILED
                             : im && !exists                  ? S3E_NO_SUCH_KEY
                             : im && !etag_matches(im->value, cur.etag) ? S3E_PRECONDITION_FAILED
                                                                       : S3E_NONE;
            s3_obj_free(&cur);
            if (ce) {
                fail(q, ce);
                return;
            }
        }
        begin_put(q);
        return;
    case API_COPY_OBJECT: copy_object(q, false); return;
    case API_GET_OBJECT:
    case API_HEAD_OBJECT: get_object(q); return;
    case API_DELETE_OBJECT: delete_object(q); return;
    case API_CREATE_UPLOAD: create_upload(q); return;
    case API_UPLOAD_PART:
        if (part_params(q))
            begin_put(q);
        return;
    case API_UPLOAD_PART_COPY:
        if (part_params(q))
            copy_object(q, true);
        return;
    case API_COMPLETE_UPLOAD:
        if (!qparam(r, "uploadId", q->upload_id, sizeof(q->upload_id))) {
            fail(q, S3E_NO_SUCH_UPLOAD);
            return;
        }
        read_body(q);
        return;
    case API_ABORT_UPLOAD: {
        char *files = NULL;
        if (!qparam(r, "uploadId", q->upload_id, sizeof(q->upload_id)) || !upload_matches(q, NULL)) {
            fail(q, S3E_NO_SUCH_UPLOAD);
            return;
        }
        int rc = s3_upload_abort(w->db, q->upload_id, &files);
        if (rc) {
            fail(q, rc == -ENOENT ? S3E_NO_SUCH_UPLOAD : errno_err(rc));
            return;
        }
        s3_files_unlink(s->conf->data, files);
        free(files);
        reply(q, 204, NULL, NULL, 0);
        return;
    }
    case API_LIST_PARTS:
        if (part_params(q))
            list_parts(q);
        return;
    default:
        fail(q, S3E_NOT_IMPLEMENTED);
    }
}
