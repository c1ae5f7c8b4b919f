/* s3c.h - an S3 client on the event loop: AWS Signature Version 4 (header auth,
 * UNSIGNED-PAYLOAD), path-style addressing, whole-body calls, streamed GETs, and
 * files stored with one PUT or, past S3C_PART, a multipart upload.
 *
 * For the roles that keep objects in S3 (the registry's blobs, later backups and
 * blocks): cairn's s3 role, Ceph's RADOS Gateway or AWS. One struct s3c per loop;
 * every callback runs from that loop. A call that fails with a network error or a
 * 5xx (or 429) is sent again after S3C_RETRY_MS, up to S3C_TRIES times in all.
 */
#ifndef CAIRN_S3C_H
#define CAIRN_S3C_H

#include "core/config.h"
#include "core/httpc.h"
#include "core/stack.h"

#define S3C_PART (16u << 20)        /* multipart above this, parts of this size */
#define S3C_TRIES 3
#define S3C_RETRY_MS 500

/* Where and as whom: the stack file's s3 block,
 *   {endpoint: URL, bucket: B, region: us-east-1, prefix: P,
 *    access_key: K | access_key_file: F | access_key_env: V,
 *    secret_key_file: F | secret_key_env: V | secret_key: S} */
struct s3c_conf {
    struct stack_url endpoint;
    char *bucket, *region, *prefix, *access_key, *secret_key;
};
/* Reads the block n (path: its key path for messages). Returns 0 or -EINVAL
 * after recording errors. */
int s3c_conf_parse(struct cfg *c, const cfg_node *n, const char *path, const struct stack *st,
                   struct s3c_conf *out);
void s3c_conf_free(struct s3c_conf *conf);

struct s3c;
struct s3c *s3c_new(struct loop *loop, const struct s3c_conf *conf);
void s3c_free(struct s3c **c);

/* The outcome of a whole-body call: status 0 when the request could not be made
 * (err then says why), else the HTTP status; body and headers valid during the
 * callback only. */
struct s3c_result {
    int status;
    int err;
    struct strv body;
    const struct httpc_response *resp;
};
typedef void (*s3c_cb)(void *arg, const struct s3c_result *res);

struct s3c_op;
/* method on the object key (the prefix is added; NULL or "" for the bucket),
 * query already encoded ("uploads", "partNumber=2&uploadId=..."), body held by
 * the caller until the callback. Returns the call, or NULL (no callback then).
 * Without cb the call is the client's (a delete nobody waits for): a failure is
 * logged, and s3c_free drops it if it is still out. */
struct s3c_op *s3c_call(struct s3c *c, const char *method, const char *key, const char *query,
                        const void *body, size_t len, s3c_cb cb, void *arg);
/* Stores the file at path (its first size bytes) as key. res->status 200 on
 * success. */
struct s3c_op *s3c_put_file(struct s3c *c, const char *key, const char *path, uint64_t size, s3c_cb cb,
                            void *arg);
/* Streams the object (range "bytes=a-b", or NULL) through ops (httpc's stream
 * callbacks; arg theirs). No retries: a stream that started cannot start over. */
struct httpc_call *s3c_get_stream(struct s3c *c, const char *key, const char *range,
                                  const struct httpc_stream_ops *ops, void *arg);
/* Drops a call: its callback will not run. */
void s3c_cancel(struct s3c_op *op);

/* SigV4's pieces, shared with the s3 role that checks signatures: HMAC-SHA256, and
 * the signing key chained from the secret over date, region, service and
 * "aws4_request". */
void s3c_hmac(const void *key, size_t klen, const void *msg, size_t mlen, uint8_t out[32]);
void s3c_signing_key(const char *secret, const char *date, const char *region, const char *service,
                     uint8_t key[32]);

#endif
