/* s3_internal.h - what the files of the s3 role share.
 *
 *   s3_config.c  the stack file's keys (keys and grants, public buckets)
 *   s3_sigv4.c   AWS Signature Version 4: canonical requests, signing keys,
 *                the aws-chunked payload decoder (pure functions: fuzzed)
 *   s3_xml.c     the XML request bodies (expat) and XML escaping for answers
 *   s3_store.c   durable storage: SQLite metadata, data files with per-block
 *                CRC32C, the checksums S3 names (MD5, CRC32, CRC32C, SHA1, SHA256)
 *   s3_api.c     the S3 REST API: routing, authentication, each call
 *   s3_main.c    start, workers, credentials at first start
 *
 * Threads: every worker has its own loop, listeners and SQLite connection; the
 * database and the data files are shared through SQLite's locking and the
 * file system (a data file is written once, then only read and unlinked).
 */
#ifndef CAIRN_S3_INTERNAL_H
#define CAIRN_S3_INTERNAL_H

#include "core/buf.h"
#include "core/common.h"
#include "core/http1.h"
#include "core/httpd.h"
#include "core/s3c.h"
#include "core/metrics.h"
#include "core/service.h"
#include "s3/s3.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>

#define S3_MAX_LISTEN 8
#define S3_MAX_KEY_LEN 1024
#define S3_MAX_PARTS 10000
#define S3_MIN_PART (5u << 20)
#define S3_MAX_PUT (5ull << 30)         /* a single PUT or part */
#define S3_BLOCK 65536u                 /* data files: one CRC32C per block */
#define S3_RING 32                      /* blocks a large PUT may hold for its hashing thread */
#define S3_MAX_XML (1u << 20)
#define S3_MAX_META 2048                /* user metadata bytes, as AWS */
#define S3_API_MAX 48                   /* API calls the role names (s3_api.c) */

/* ---- configuration ---- */

struct s3_grant {
    char *bucket;                   /* a name, or "*" */
    bool read, write;
};

struct s3_key {
    char *access, *secret;
    struct s3_grant *grants;
    size_t ngrants;
};

struct s3_conf {
    struct net_addr listen[S3_MAX_LISTEN];
    size_t nlisten;
    char *data;                     /* the store's directory */
    char *region;
    struct s3_key *keys;
    size_t nkeys;
    bool keys_generated;            /* no keys: one written at first start */
    char **public_buckets;
    size_t npublic;
    char **domains;                 /* virtual-hosted style: BUCKET.DOMAIN */
    size_t ndomains;
    int threads;
    uint64_t upload_expiry_ms;      /* incomplete multipart uploads are aborted after this */
};

int s3__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void s3__free_conf(void *conf);

/* ---- errors ---- */

enum s3_err {
    S3E_NONE,
    S3E_ACCESS_DENIED,
    S3E_BAD_DIGEST,
    S3E_BUCKET_EXISTS,              /* BucketAlreadyOwnedByYou */
    S3E_BUCKET_TAKEN,               /* BucketAlreadyExists: another key's */
    S3E_BUCKET_NOT_EMPTY,
    S3E_ENTITY_TOO_LARGE,
    S3E_ENTITY_TOO_SMALL,
    S3E_INCOMPLETE_BODY,
    S3E_INTERNAL,
    S3E_INVALID_ACCESS_KEY,
    S3E_INVALID_ARGUMENT,
    S3E_INVALID_BUCKET_NAME,
    S3E_INVALID_DIGEST,
    S3E_INVALID_PART,
    S3E_INVALID_PART_ORDER,
    S3E_INVALID_RANGE,
    S3E_INVALID_REQUEST,
    S3E_KEY_TOO_LONG,
    S3E_MALFORMED_XML,
    S3E_METADATA_TOO_LARGE,
    S3E_METHOD_NOT_ALLOWED,
    S3E_MISSING_CONTENT_LENGTH,
    S3E_NO_SUCH_BUCKET,
    S3E_NO_SUCH_KEY,
    S3E_NO_SUCH_UPLOAD,
    S3E_NOT_IMPLEMENTED,
    S3E_NOT_MODIFIED,
    S3E_PRECONDITION_FAILED,
    S3E_TIME_SKEWED,
    S3E_SIGNATURE_MISMATCH,
    S3E_AUTH_HEADER_MALFORMED,
    S3E_SHA256_MISMATCH,
    S3E_INSUFFICIENT_STORAGE,
    S3E_EXPIRED,
    S3E_MISSING_SECURITY_HEADER,
    S3E_INVALID_CHUNK,
    S3E_SLOW_DOWN,
    S3E_INVALID_TAG,
    S3E_NO_SUCH_TAG_SET,
    S3E_NO_SUCH_CORS,
    S3E_CORS_FORBIDDEN,
    S3E_CORS_NEED_ORIGIN,
    S3E_INVALID_PART_NUMBER,
    S3E_NO_SUCH_LIFECYCLE,
    S3E_COUNT
};

struct s3_errinfo {
    const char *code;
    int status;
    const char *message;
};
extern const struct s3_errinfo s3_errors[S3E_COUNT];

/* ---- SigV4 (s3_sigv4.c) ---- */

struct s3_sig {
    char access[129];
    char date[9];                   /* yyyymmdd of the scope */
    char region[64];
    char service[16];
    char signed_headers[1024];      /* "host;x-amz-date" */
    char signature[65];
    char amzdate[17];               /* yyyymmddThhmmssZ */
    bool presigned;
    long long expires;              /* presigned: seconds */
};

/* Parses "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...". */
enum s3_err s3_sig_parse_header(struct strv authz, struct s3_sig *s);
/* Reads X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders and
 * -Signature from a query string. */
enum s3_err s3_sig_parse_query(struct strv query, struct s3_sig *s);
/* Appends the canonical request. payload_hash is the last line. */
int s3_sig_canonical(struct buf *out, const struct http_request *h, const struct s3_sig *s,
                     const char *payload_hash);
/* Hex HMAC-SHA256 of "AWS4-HMAC-SHA256\namzdate\nscope\nhex(sha256(canonical))". */
void s3_sig_sign(const uint8_t key[32], const struct s3_sig *s, struct strv canonical, char out[65]);
void s3_sha256_hex(const void *p, size_t n, char out[65]);
/* %-decodes in into out (NUL-terminated); false on a bad escape or when out is
 * too small. */
bool s3_uri_decode(struct strv in, char *out, size_t cap, size_t *len);
/* Parses "yyyymmddThhmmssZ" into seconds since the epoch (-1 when malformed). */
long long s3_parse_amzdate(const char *s);

/* The aws-chunked payload (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER],
 * STREAMING-UNSIGNED-PAYLOAD-TRAILER): chunks with or without their chained
 * signatures, then optional trailing headers. */
struct s3_chunked {
    int state;
    uint64_t left;                  /* data bytes left in this chunk */
    char line[512];
    size_t line_len;
    bool sign;                      /* chunk signatures are checked */
    bool trailer;                   /* trailing headers follow the last chunk */
    uint8_t key[32];
    char prev[65];                  /* the previous signature (the seed first) */
    char scope[128];
    char amzdate[17];
    char chunk_sig[65];
    EVP_MD_CTX *sha;                /* SHA-256 of the current chunk */
    char trailers[1024];            /* "name:value\n" lines */
    size_t trailers_len;
    uint64_t decoded;
};
typedef int (*s3_sink)(void *arg, const char *p, size_t n);
/* sign: the seed signature and signing key are filled from the request's. */
int s3_chunked_init(struct s3_chunked *d, bool sign, bool trailer, const uint8_t key[32],
                    const struct s3_sig *s);
void s3_chunked_free(struct s3_chunked *d);
/* Feeds raw body bytes; decoded data goes to sink (a nonzero return stops with
 * that value). Returns 0 for more, 1 at the end, or a negated s3_err. */
int s3_chunked_feed(struct s3_chunked *d, const char *p, size_t n, s3_sink sink, void *arg);
/* A trailing header's value (NULL when absent). */
const char *s3_chunked_trailer(const struct s3_chunked *d, const char *name, char *out, size_t cap);

/* ---- XML (s3_xml.c) ---- */

struct s3_xnode {
    char *name;                     /* local name, namespace dropped */
    char *text;
    struct s3_xnode *child, *next;
};
/* Parses a request body (at most S3_MAX_XML bytes, depth 16, 100,000 elements). */
struct s3_xnode *s3_xml_parse(const char *p, size_t n);
void s3_xml_free(struct s3_xnode *n);
struct s3_xnode *s3_xml_child(const struct s3_xnode *n, const char *name);
const char *s3_xml_text(const struct s3_xnode *n, const char *child);
int s3_xml_escape(struct buf *b, const char *s, size_t n);
/* Writes n and its children back as XML (text of leaves only); root_attrs, e.g.
 * an xmlns, go on n's tag. */
int s3_xml_write(struct buf *b, const struct s3_xnode *n, const char *root_attrs);
/* Adds a child (first) to parent. */
struct s3_xnode *s3_xml_add(struct s3_xnode *parent, const char *name, const char *text);

/* ---- checksums and storage (s3_store.c) ---- */

uint32_t s3_crc32c(uint32_t crc, const void *p, size_t n);

enum s3_ck { S3_CK_CRC32, S3_CK_CRC32C, S3_CK_SHA1, S3_CK_SHA256, S3_CK_N };
extern const char *const s3_ck_names[S3_CK_N];    /* "crc32", ... as in x-amz-checksum-* */

struct s3_db;
struct s3_store {
    char *dir;
};

struct s3_obj {
    char *key;
    uint64_t size;
    char etag[72];                  /* with quotes */
    long long mtime_ms;
    char *headers;                  /* stored headers: "name: value\n" lines */
    char *parts;                    /* data files: "id size\n" per part */
    int nparts;                     /* 0: a simple PUT; else the multipart part count */
    char version[40];               /* "null" when unversioned */
    bool dm;                        /* a delete marker */
    bool latest;
    long long seq;                  /* order of the key's versions */
};
void s3_obj_free(struct s3_obj *o);

enum { S3_VERSIONING_OFF, S3_VERSIONING_ENABLED, S3_VERSIONING_SUSPENDED };

struct s3_bucket {
    long long created_ms;
    int versioning;
    char *cors, *lifecycle, *tagging;   /* the configurations' XML, or NULL */
    char owner[129];                /* the access key that created it */
};

struct s3_db *s3_db_open(const char *dir, char *err, size_t errlen);
void s3_db_close(struct s3_db *db);
/* Removes data files that no object or part references (after a crash). */
void s3_db_gc_files(struct s3_db *db, const char *dir);

int s3_bucket_create(struct s3_db *db, const char *name, const char *owner);   /* -EEXIST */
/* Deletes an empty bucket and aborts its multipart uploads (their files to *files). */
int s3_bucket_delete(struct s3_db *db, const char *name, char **files);  /* -ENOENT, -ENOTEMPTY */
int s3_bucket_exists(struct s3_db *db, const char *name);       /* 1, 0, <0 */
int s3_bucket_get(struct s3_db *db, const char *name, struct s3_bucket *b);  /* b may be NULL */
int s3_bucket_set(struct s3_db *db, const char *name, const struct s3_bucket *b);
void s3_bucket_free(struct s3_bucket *b);
/* Calls cb per bucket (name, created ms) in name order. */
int s3_bucket_list(struct s3_db *db, void (*cb)(void *, const char *, long long), void *arg);

/* The current version of a key (version NULL; it may be a delete marker), or the
 * version named (-ENOENT). */
int s3_obj_get(struct s3_db *db, const char *bucket, const char *key, const char *version,
               struct s3_obj *o);
/* Stores o (key in o->key; o->version is used when the bucket's versioning is
 * enabled, else the "null" version is replaced); *old gets the data files no
 * longer needed (unlink them after). -ENOENT: no such bucket. */
int s3_obj_put(struct s3_db *db, const char *bucket, const struct s3_obj *o, char **old);
/* Deletes a version, or (version NULL) the current object: removed when the bucket
 * is unversioned, else hidden behind a new delete marker (its version id in
 * marker->version, which the caller fills; marker->dm tells what happened). */
int s3_obj_delete(struct s3_db *db, const char *bucket, const char *key, const char *version,
                  struct s3_obj *marker, char **old);
/* Replaces the stored headers of a version (NULL: the current one); -ENOENT. */
int s3_obj_set_headers(struct s3_db *db, const char *bucket, const char *key, const char *version,
                       const char *headers);
/* In key order from key > after (versions: then newest first, from seq < after_seq
 * for the key after), keys starting with prefix; current objects only, or every
 * version and delete marker. cb returns nonzero to stop. */
int s3_obj_scan(struct s3_db *db, const char *bucket, const char *prefix, const char *after,
                long long after_seq, bool versions, int (*cb)(void *, const struct s3_obj *), void *arg);

int s3_upload_create(struct s3_db *db, const char *id, const char *bucket, const char *key,
                     const char *headers);
/* Fills bucket/key/headers of an upload (-ENOENT). */
int s3_upload_get(struct s3_db *db, const char *id, char **bucket, char **key, char **headers);
/* Records a part; *old gets a replaced part's file. */
int s3_part_put(struct s3_db *db, const char *id, int num, uint64_t size, const char *etag,
                const char *file, const char *checksum, char **old);
struct s3_part {
    int num;
    uint64_t size;
    char etag[72];
    char file[40];
    long long mtime_ms;
    char checksum[72];              /* base64, of the upload's checksum algorithm, or "" */
};
int s3_part_list(struct s3_db *db, const char *id, struct s3_part **parts, size_t *n);
/* Completes: stores o, drops the upload and its rows, remembers done (what a
 * repeated completion answers) for a day; *unused gets the files of the parts not
 * taken and *old the replaced object's. */
int s3_upload_complete(struct s3_db *db, const char *id, const char *bucket, const struct s3_obj *o,
                       const char *done, char **unused, char **old);
int s3_upload_abort(struct s3_db *db, const char *id, char **files);
/* An upload completed in the last day: what its completion recorded (-ENOENT). */
int s3_upload_completed(struct s3_db *db, const char *id, const char *bucket, const char *key, char *out,
                        size_t cap);
struct s3_upload {
    char id[40];
    char *key;
    long long created_ms;
};
int s3_upload_list(struct s3_db *db, const char *bucket, struct s3_upload **ups, size_t *n);
void s3_uploads_free(struct s3_upload *ups, size_t n);
/* Uploads older than max_age_ms are aborted; their files go to *files. */
int s3_upload_expire(struct s3_db *db, long long max_age_ms, char **files);

/* Unlinks every file of a "id size\n" list. */
void s3_files_unlink(const char *dir, const char *list);

/* A data file being written: blocks of S3_BLOCK bytes each get a CRC32C, kept in
 * a trailer; the MD5 (ETag) and any requested checksum are computed on the way. */
struct s3_writer {
    int fd;
    char id[33];
    char path[512];
    const char *dir;
    uint64_t size;
    uint8_t *ring;                  /* S3_RING blocks: the one being filled, and those
                                       written but not hashed yet */
    uint8_t *block;                 /* the one being filled */
    size_t blen;
    size_t lens[S3_RING];
    uint64_t filled, hashed;        /* blocks handed over / digested */
    bool threaded, closing;
    bool hasher_waits, loop_waits;  /* who sleeps on its condition, under mu */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t hasher_cv, loop_cv;
    uint32_t *crcs;
    size_t ncrc, capcrc;
    EVP_MD_CTX *md5, *sha1, *sha256;
    uint32_t crc32, crc32c_all;
    unsigned want;                  /* bits of enum s3_ck also computed */
    uint64_t synced;                /* bytes handed to writeback so far */
    int err;                        /* first write error (negated errno) */
};
int s3_writer_open(struct s3_writer *w, const char *dir, unsigned want);
int s3_writer_write(struct s3_writer *w, const void *p, size_t n);
/* Writes the trailer, fsyncs the file and its directory. md5 gets the raw MD5. */
int s3_writer_finish(struct s3_writer *w, uint8_t md5[16]);
/* The checksum (base64) of what was written, for an algorithm in want. */
void s3_writer_checksum(struct s3_writer *w, enum s3_ck ck, char *out, size_t cap);
void s3_writer_abort(struct s3_writer *w);
/* After a successful finish: the file stays, the writer's memory goes. */
void s3_writer_done(struct s3_writer *w);

/* Reads [off, off+len) of a data file holding size bytes, verifying each block's
 * CRC32C; -EIO on a mismatch. */
struct s3_reader {
    int fd;
    uint64_t size;
    uint32_t *crcs;
    size_t ncrc;
    uint8_t *blk;                   /* one block, read and checked */
};
int s3_reader_open(struct s3_reader *r, const char *dir, const char *id, uint64_t size);
ssize_t s3_reader_read(struct s3_reader *r, uint64_t off, void *out, size_t len);
void s3_reader_close(struct s3_reader *r);

int s3_b64(const uint8_t *p, size_t n, char *out, size_t cap);
int s3_unb64(const char *s, uint8_t *out, size_t cap);     /* bytes, or -1 */
void s3_random_hex(char *out, size_t nbytes);

/* ---- lifecycle (s3_lifecycle.c) ---- */

struct s3_lc_rule {
    char id[256];
    bool enabled;
    char *prefix;
    char *tags[10];                 /* "k=v", URL-encoded as stored */
    size_t ntags;
    int days;                       /* Expiration: Days, or */
    long long date_ms;              /* Date */
    bool expired_dm;                /* ExpiredObjectDeleteMarker */
    int noncurrent_days;
    int abort_days;                 /* AbortIncompleteMultipartUpload */
};
struct s3_lc {
    struct s3_lc_rule *r;
    size_t n;
};
/* Validates a LifecycleConfiguration document. */
enum s3_err s3_lc_parse(const char *xml, size_t n, struct s3_lc *lc);
void s3_lc_free(struct s3_lc *lc);
/* When the rules expire an object created at mtime_ms (0: never), and by which rule. */
long long s3_lc_expiry(const struct s3_lc *lc, const char *key, const char *headers, long long mtime_ms,
                       const char **rule_id);
/* Applies every bucket's rules as of now_ms; returns how many versions and uploads went. */
size_t s3_lc_sweep(struct s3_db *db, const char *dir, long long now_ms);

/* ---- the service (s3_api.c, s3_main.c) ---- */

struct s3_svc;
struct s3_worker {
    struct s3_svc *s;
    struct s3_db *db;
};

struct s3_svc {
    const struct service *svc;
    struct s3_conf *conf;
    struct service_ctx *sc;
    struct httpd_conf hconf;
    struct service_http_pool pool;
    struct s3_worker *workers;      /* pool.w[i]'s role state (its hw.data) */
    int nworkers;
    struct loop_timer gc;
    struct metric_family *f_requests, *f_errors, *f_duration, *f_bytes_in, *f_bytes_out;
    /* each API call's metrics, looked up once at start (off the request path) */
    struct metric *m_req[S3_API_MAX], *m_4xx[S3_API_MAX], *m_5xx[S3_API_MAX], *m_dur[S3_API_MAX],
        *m_in[S3_API_MAX], *m_out;
};

void s3__handle(struct httpd_req *r, void *arg);
/* Looks up every API call's metrics in the families (start). */
int s3__metrics_init(struct s3_svc *s);
bool s3__stream_body(void *arg, const struct http_request *h);
bool s3__bucket_name_ok(const char *b);

#endif
