/* registry_internal.h - what the files of the registry role share.
 *
 *   registry_config.c  the stack file's keys
 *   registry_store.c   blobs by digest in files (written, verified, fsynced, renamed),
 *                      uploads in progress, and SQLite for manifests, tags and the
 *                      blobs each repository links to
 *   registry_api.c     the OCI Distribution API (pull, push, chunked uploads, mounts,
 *                      tags, catalog, referrers, deletes) and its error bodies
 *   registry_proxy.c   the pull-through cache: manifests and blobs fetched from an
 *                      upstream registry on a miss
 *   registry_bg.c      online garbage collection and webhook notifications, on a
 *                      thread of their own
 *   registry_main.c    start, workers, stop
 *
 * Threads: every worker has its own loop, listeners and SQLite connection; blob
 * files are written once under a temporary name and renamed into place.
 */
#ifndef CAIRN_REGISTRY_INTERNAL_H
#define CAIRN_REGISTRY_INTERNAL_H

#include "core/buf.h"
#include "core/httpc.h"
#include "core/s3c.h"
#include "core/common.h"
#include "core/httpd.h"
#include "core/metrics.h"
#include "core/service.h"
#include "core/stack.h"
#include "registry/registry.h"

#include <openssl/evp.h>
#include <pthread.h>

#define REG_MAX_LISTEN 8
#define REG_MAX_NAME 255
#define REG_MAX_MANIFEST (4u << 20)
#define REG_MAX_TAG 128

struct reg_grant {
    char *pattern;                  /* a repository name, or a prefix ending in "*" */
    bool pull, push, del;
};

struct reg_user {
    char *name, *password;
    struct reg_grant *grants;
    size_t ngrants;
};

struct reg_quota {
    char *pattern;
    uint64_t bytes;                 /* what the repositories it covers may hold together */
};

/* Event actions (Distribution's), as bits for an endpoint's ignore list. */
enum { REG_EV_PUSH = 1, REG_EV_PULL = 2, REG_EV_DELETE = 4, REG_EV_MOUNT = 8 };

struct reg_endpoint {               /* notifications.endpoints[i] */
    char *name;
    struct stack_url url;
    char **headers;                 /* "Name: value" lines, NULL-terminated */
    size_t nheaders;
    uint64_t timeout_ms, backoff_ms;
    long threshold;                 /* failures in a row before waiting backoff_ms */
    char **ignore_types;            /* media types not notified */
    size_t nignore_types;
    unsigned ignore_actions;        /* REG_EV_* bits not notified */
};

struct reg_conf {
    struct net_addr listen[REG_MAX_LISTEN];
    size_t nlisten;
    char *path;                     /* storage directory (under data_dir when relative) */
    bool use_s3;                    /* layers and configs in S3 (storage.s3) */
    struct s3c_conf s3;
    int threads;
    struct reg_user *users;         /* none: anonymous pull, push and delete */
    size_t nusers;
    char **public_repos;            /* patterns anyone may pull */
    size_t npublic;
    char *tls_cert, *tls_key;       /* HTTPS on the listeners when given */
    uint64_t gc_interval_ms;        /* 0: no garbage collection */
    uint64_t gc_grace_ms;           /* an unreferenced blob younger than this stays */
    uint64_t upload_expiry_ms;      /* an upload untouched this long is removed */
    struct reg_quota *quotas;
    size_t nquotas;
    struct reg_endpoint *endpoints;
    size_t nendpoints;
    bool proxied;                   /* a pull-through cache of proxy_url */
    struct stack_url proxy_url;
    char *proxy_user, *proxy_password;
};

/* ---- auth (registry_auth.c): the Docker token scheme ---- */

enum { REG_PULL = 1, REG_PUSH = 2, REG_DELETE = 4 };
struct reg_svc;
/* Whether a pattern ("team/app", a prefix ending in '*', or "*") covers a name. */
bool reg_pattern_match(const char *pattern, const char *name);
/* Answers GET /token (basic auth optional): a JWT for the scopes asked, cut down
 * to what the user (or anyone, for public repositories) may do. */
void reg_auth_token(struct reg_svc *s, struct httpd_req *r);
/* Checks a request's bearer token for actions on repo (NULL: any valid token, for
 * /v2/ and the catalog); the token's user name goes to actor. Returns true, or
 * answers 401 with the challenge (the request is then gone). */
bool reg_auth_check(struct reg_svc *s, struct httpd_req *r, const char *repo, unsigned actions, char *actor,
                    size_t cap);
/* The same question without answering. */
bool reg_auth_allows(struct reg_svc *s, struct httpd_req *r, const char *repo, unsigned actions);

int reg__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void reg__free_conf(void *conf);
void reg__free_endpoint(struct reg_endpoint *e);

/* ---- byte ranges (registry_api.c) ---- */

struct reg_range {
    uint64_t first, last;
    bool open;                      /* "A-": to the end */
    bool suffix;                    /* "-N": the last N (in last) */
};
/* Parses "A-B", "A-" or "-N" after "bytes=" (required when unit): digits only, at
 * most 19 each. 0, or -1 when malformed. */
int reg_range_parse(struct strv v, bool unit, struct reg_range *g);
/* The bytes [*from, *to] a range asks of size bytes; false when none (416). */
bool reg_range_resolve(const struct reg_range *g, uint64_t size, uint64_t *from, uint64_t *to);

/* ---- storage (registry_store.c) ---- */

struct reg_db;
struct reg_db *reg_db_open(const char *dir, char *err, size_t errlen);
void reg_db_close(struct reg_db *db);

/* "sha256:<64 hex>" or "sha512:<128 hex>" */
bool reg_digest_ok(const char *d);
bool reg_name_ok(const char *name);
bool reg_tag_ok(const char *tag);

/* A new, empty upload file <dir>/uploads/<id> (id: 32 random hex digits): its
 * descriptor (write-only), or -errno. */
int reg_upload_create(const char *dir, char id[33], char *path, size_t cap);
/* The path of a blob's file (whether or not it exists). */
void reg_blob_path(const char *dir, const char *digest, char *out, size_t cap);
/* Size of a stored blob, or -ENOENT. */
long long reg_blob_size(const char *dir, const char *digest);
/* Whether a repository links to a blob (pushed or mounted there). */
int reg_link_has(struct reg_db *db, const char *repo, const char *digest);
/* Links a blob of size bytes to repo, or touches the link. */
int reg_link_add(struct reg_db *db, const char *repo, const char *digest, long long size);
/* Marks a link used now when it was last marked more than older_than_s ago (a
 * client that finds a blob by HEAD may name it in a manifest soon). */
int reg_link_touch(struct reg_db *db, const char *repo, const char *digest, long long older_than_s);
/* Bytes the repositories a pattern covers hold (each blob once), or -EIO. */
long long reg_usage(struct reg_db *db, const char *pattern);
/* Whether a repository the pattern covers links to digest. */
int reg_linked_under(struct reg_db *db, const char *pattern, const char *digest);
int reg_link_del(struct reg_db *db, const char *repo, const char *digest);

/* Moves an upload's file into the blob store under digest after checking that its
 * bytes hash to it (-EBADMSG when not); links it to repo. hashed: a SHA-256 of the
 * whole file taken as it was written (finalized here), or NULL to read it back. */
int reg_blob_commit(struct reg_db *db, const char *dir, const char *repo, const char *upload_path,
                    const char *digest, EVP_MD_CTX *hashed);

/* Checks that an upload's bytes hash to digest (-EBADMSG when not) and that they
 * are on the disk; hashed as for reg_blob_commit. */
int reg_blob_verify(const char *upload_path, const char *digest, EVP_MD_CTX *hashed);

/* S3 storage: where a blob is (1 with its key and size, 0 when it is not). */
int reg_stored_get(struct reg_db *db, const char *digest, char *key, size_t cap, long long *size);
/* Records a blob stored in S3 under key and links it to repo, in one transaction:
 * 0, or 1 when another copy was recorded first (key then holds nothing anyone needs).
 * key NULL: links a copy already stored (-ENOENT when there is none), the check and
 * the link in one transaction, so collection cannot take the copy in between. */
int reg_stored_link(struct reg_db *db, const char *repo, const char *digest, const char *key, long long size);
/* Forgets the stored blobs no repository links to, recorded before cutoff_s: their
 * keys into keys (each NUL-terminated), their sizes added to *bytes; returns how
 * many, or -EIO. */
int reg_gc_stored(struct reg_db *db, long long cutoff_s, struct buf *keys, long long *bytes);

struct reg_manifest {
    char digest[140];
    char media_type[128];
    char artifact_type[128];
    long long size;
    char *subject;                  /* digest of the manifest it refers to, or NULL */
    char *annotations;              /* JSON object text, or NULL */
};
void reg_manifest_free(struct reg_manifest *m);
/* Parses a manifest or index (untrusted bytes): its media type (from the body, else
 * ctype, which must agree), digest, artifact type, subject and annotations, and the
 * digests it names (config and layers, or manifests) into refs, NUL-terminated
 * each; *index tells which. Returns NULL, or what is wrong with it. */
const char *reg_manifest_parse(const char *body, size_t len, const char *ctype, struct reg_manifest *m,
                               struct buf *refs, bool *index);
/* Stores a manifest's bytes (as a blob), its row and what it names (refs, from
 * reg_manifest_parse); tag may be NULL. With check, -ENOENT with *missing pointing
 * into refs when a blob (or, for an index, a manifest) it names is not in the
 * repository (a pull-through cache stores a manifest before its blobs). */
int reg_manifest_put(struct reg_db *db, const char *dir, const char *repo, const char *tag,
                     const struct reg_manifest *m, const void *body, size_t len, const struct buf *refs,
                     bool index, bool check, const char **missing);
/* By digest or by tag; -ENOENT. */
int reg_manifest_get(struct reg_db *db, const char *repo, const char *ref, struct reg_manifest *m);
int reg_manifest_del(struct reg_db *db, const char *repo, const char *digest);
int reg_tag_del(struct reg_db *db, const char *repo, const char *tag);
/* Names after last, in order, at most n (n < 0: all), as JSON strings separated by
 * commas: repo's tags, or the repositories. *end gets the page's last name when
 * more follow (else ""). */
int reg_tags(struct reg_db *db, const char *repo, const char *last, long n, struct buf *json, char *end,
             size_t endcap);
int reg_repos(struct reg_db *db, const char *last, long n, struct buf *json, char *end, size_t endcap);
/* Garbage collection: removes the links that no manifest of their repository names
 * and that nobody touched since cutoff_s (seconds since the epoch); returns how many,
 * or -EIO. */
int reg_gc_links(struct reg_db *db, long long cutoff_s);
/* Removes a blob's file if no repository links to it, in one transaction with the
 * check: 1 when removed, 0 when linked, or an error. */
int reg_gc_remove_blob(struct reg_db *db, const char *path, const char *digest);
/* Manifests of repo whose subject is digest, as OCI descriptors (JSON, comma-separated). */
int reg_referrers(struct reg_db *db, const char *repo, const char *digest, const char *artifact_type,
                  struct buf *json);

/* ---- background (registry_bg.c): garbage collection and notifications ---- */

struct reg_event {
    unsigned action;                /* one REG_EV_* */
    bool manifest;                  /* a manifest (else a blob) */
    const char *repo, *digest, *media_type, *tag, *from, *actor;
    long long size;
};
struct reg_svc;
struct reg_bg;
struct metrics_registry;
/* Starts the background thread: garbage collection on its timer, and a queue and
 * sender per notification endpoint. */
int reg_bg_start(struct reg_svc *s, struct metrics_registry *reg);
/* Stops and frees it (events still queued are lost). */
void reg_bg_stop(struct reg_svc *s);
/* Queues an event for every endpoint that does not ignore it (any thread). */
void reg_notify(struct reg_svc *s, struct httpd_req *r, const struct reg_event *ev);

/* ---- where blob bytes live (registry_blobs.c): files, or S3 ---- */

struct reg_store_op;
struct reg_worker;
typedef void (*reg_store_cb)(void *arg, int rc);
/* Stores a whole upload file as blob digest of repo and links it: with files a
 * rename (cb runs before this returns, and NULL is returned); with S3 a PUT of
 * the file (cb later from the worker's loop). rc: 0, -EBADMSG (the bytes are not
 * digest's), or another error. hashed as for reg_blob_commit. */
struct reg_store_op *reg_blob_store(struct reg_worker *w, const char *repo, const char *upath, const char *digest,
                                    EVP_MD_CTX *hashed, reg_store_cb cb, void *arg);
void reg_store_cancel(struct reg_store_op *op);
/* A stored blob's size, or -ENOENT. */
long long reg_blob_len(struct reg_worker *w, const char *digest);
/* Sends len bytes of blob digest from offset from as the body of the response
 * the caller started (status and headers set, length len); the request then
 * belongs to this call. */
void reg_blob_send(struct reg_worker *w, struct httpd_req *r, const char *digest, uint64_t from, uint64_t len);
int reg_blobs_worker_init(struct reg_worker *w, struct loop *loop);
void reg_blobs_worker_free(struct reg_worker *w);

/* ---- pull-through cache (registry_proxy.c) ---- */

struct reg_fetch;
struct reg_worker;
/* status: 0 when the manifest or blob is now in the local store, else the HTTP
 * status to answer with (404: the upstream has none; 401: it refused us; 502: it
 * could not be asked or answered wrong; 507: no room). */
typedef void (*reg_fetch_cb)(void *arg, int status);
/* Starts fetching a manifest (by tag or digest) or a blob of repo from the
 * upstream into the store; cb runs later from the worker's loop. NULL when it
 * cannot start (cb does not run then). */
struct reg_fetch *reg_proxy_manifest(struct reg_worker *w, const char *repo, const char *ref, reg_fetch_cb cb,
                                     void *arg);
struct reg_fetch *reg_proxy_blob(struct reg_worker *w, const char *repo, const char *digest, reg_fetch_cb cb,
                                 void *arg);
/* The value of key in a WWW-Authenticate challenge's key="value" list (an
 * upstream's, untrusted), or "". */
void reg_challenge_param(const char *challenge, const char *key, char *out, size_t cap);
/* Stops a fetch whose requester is gone (cb does not run). */
void reg_fetch_cancel(struct reg_fetch *f);
int reg_proxy_worker_init(struct reg_worker *w, struct loop *loop);
void reg_proxy_worker_free(struct reg_worker *w);

/* ---- the service ---- */

struct reg_svc;
#define REG_METHODS 7
#define REG_STATUSES 500
struct reg_token {                  /* the upstream's credentials for a repository */
    char repo[REG_MAX_NAME + 1];
    char *auth;                     /* an Authorization value; NULL: a free slot */
    time_t exp;
};

struct httpc;
struct reg_worker {
    struct reg_svc *s;
    struct reg_db *db;
    struct s3c *s3;                 /* with S3 storage */
    /* the pull-through cache's upstream */
    struct httpc *hc;
    struct httpc_pool up_pool;
    struct reg_token tokens[16];
    unsigned tok_next;
    struct metric *counts[REG_METHODS][REG_STATUSES];   /* by method and status, looked up once */
};

/* The SHA-256 of an upload's bytes so far, kept between its requests (a client's
 * PATCH then PUT), so that the end needs no second read of the whole file. */
#define REG_HASHES 64
struct reg_upload_hash {
    char id[33];
    EVP_MD_CTX *md;                 /* over the upload's first off bytes; NULL: a free slot */
    uint64_t off;
    uint64_t used;                  /* for replacing the least recently used */
};

struct reg_svc {
    const struct service *svc;
    struct reg_conf *conf;
    struct service_ctx *sc;
    struct httpd_conf hconf;
    struct service_http_pool pool;
    struct reg_worker *workers;     /* pool.w[i]'s role state (its hw.data) */
    int nworkers;
    struct metric_family *f_requests;
    unsigned char token_key[32];    /* signs the tokens this process hands out */
    struct tls_ctx *tls;
    struct tls_ctx *up_tls;         /* client context for an https upstream */
    struct reg_bg *bg;
    pthread_mutex_t hash_mu;
    struct reg_upload_hash hashes[REG_HASHES];
    uint64_t hash_clock;
};

void reg__handle(struct httpd_req *r, void *arg);
bool reg__stream_body(void *arg, const struct http_request *h);

#endif
