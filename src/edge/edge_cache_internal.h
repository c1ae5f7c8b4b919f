/* edge_cache_internal.h - what the cache's files share (edge_cache.c,
 * edge_cache_directives.c, edge_cache_share.c, edge_cache_disk.c): the object, the
 * store, fills and shared streams, the disk index entry, and the cross-file
 * functions (edge_cache__name). Nothing outside the cache includes it.
 */
#ifndef CAIRN_EDGE_CACHE_INTERNAL_H
#define CAIRN_EDGE_CACHE_INTERNAL_H

#include "edge_cache.h"

#include <pthread.h>

struct zvar;
struct dentry;

#define BUCKETS 16384


#define GHOSTS 16384

enum { Q_SMALL, Q_MAIN };

struct edge_cache_obj {
    int refs;
    uint64_t h;
    char *key;
    size_t keylen;
    char *vary;             /* lower-cased field names, comma-separated; NULL when none */
    char *vary_vals;        /* the request's values for them, '\n'-joined */
    int status;
    char *hdrs;             /* stored fields, "Name: value\r\n" lines */
    size_t hdrs_len;
    char *body;
    size_t body_len;
    bool compressible;      /* identity body of a compressible type: gzip/br variants */
    struct zvar *gz, *br;   /* compressed variants, made on first demand (atomic) */
    time_t response_time;
    int64_t initial_age;    /* corrected_initial_age, RFC 9111 4.2.3 */
    int64_t lifetime;       /* freshness lifetime, seconds */
    bool no_cache;          /* store, but revalidate before every use */
    bool must_revalidate;
    int64_t swr, sie;       /* stale-while-revalidate, stale-if-error; -1 when absent */
    int refreshing;         /* a background revalidation is running */
    char *etag, *last_modified;
    char *tags;             /* Surrogate-Key / Cache-Tag values, space-separated */
    size_t size;
    int freq;
    int q;
    bool linked;
    struct edge_cache_obj *qnext, *qprev;     /* in its FIFO: head = newest */
    struct edge_cache_obj *hnext;             /* hash chain */
    struct edge_cache_store *cs;
};

struct fifo {
    struct edge_cache_obj *head, *tail;
    size_t bytes;
};

struct inflight {
    uint64_t h;
    char *key;
    size_t keylen;
    struct edge_cache_waiter *waiters;
    struct edge_cache_stream *st;    /* the response, once it is known and shared */
    struct inflight *next;
};

/* A response being stored, shared with the requests that waited for it: they
 * send it to their clients as it arrives, from their own threads. */
enum { ST_FILLING, ST_DONE, ST_FAILED };
struct edge_cache_stream {
    pthread_mutex_t lock;
    int refs;
    struct edge_cache_obj *o;             /* its fields (referenced; the body is in here) */
    char *body;                 /* room for the whole declared length: never moves */
    size_t cap, len;
    int state;
    struct edge_cache_waiter *subs;  /* readers waiting for more */
};


struct edge_cache_store {
    char label[64];
    struct inflight *fills;     /* fetches in progress, for coalescing */
    /* the disk tier: object files in disk_dir, indexed in memory */
    char *disk_dir;
    uint64_t disk_budget, disk_used;
    struct dentry *dbuckets[BUCKETS];
    struct dentry *dfifo_head, *dfifo_tail;     /* head = newest */
    pthread_mutex_t lock;
    uint64_t budget, max_object;
    double heuristic;
    bool compress;
    size_t used, count;
    struct edge_cache_obj *buckets[BUCKETS];
    struct fifo q[2];
    uint64_t ghost[GHOSTS];
    struct metric *m_evictions;
};

struct edge_cache_fill {
    struct edge_cache_store *cs;
    struct edge_cache_obj *o;
    struct buf body;
    bool failed;
    struct edge_cache_stream *st;    /* when shared with waiting requests */
};

#define DISK_MAGIC "CAIRNCACHE1"

struct dentry {
    uint64_t h;
    char *key;
    size_t keylen;
    char *vary, *vary_vals, *tags;
    uint64_t size;
    char name[48];
    struct dentry *hnext, *fnext, *fprev;
};

/* edge_cache.c */
void edge_cache__obj_free(struct edge_cache_obj *o);
uint64_t edge_cache__key_hash(const char *k, size_t n);
char *edge_cache__vary_values(const struct httpd_req *r, const char *vary);
void edge_cache__serve_fields(struct httpd_req *r, const struct edge_cache_obj *o, bool not_modified, const char *coding,
                         const char *xcache, const char *request_id, time_t now);
void edge_cache__insert_ex(struct edge_cache_store *cs, struct edge_cache_obj *o, bool to_disk);
bool edge_cache__has_tag(const char *tags, const char *tag);

/* edge_cache_directives.c */
int64_t edge_cache__delta_seconds(struct strv v);
bool edge_cache__field_next(const char **pp, const char *end, struct strv *name, struct strv *value,
                       struct strv *line);

/* edge_cache_share.c */
void edge_cache__stream_append(struct edge_cache_stream *st, const void *p, size_t n);
void edge_cache__stream_end(struct edge_cache_stream *st, int state);

/* edge_cache_disk.c */
void edge_cache__disk_index_free(struct edge_cache_store *cs);
void edge_cache__disk_store(struct edge_cache_store *cs, const struct edge_cache_obj *o);
struct edge_cache_obj *edge_cache__disk_lookup(struct edge_cache_store *cs, const char *key, size_t keylen,
                                const struct httpd_req *r, uint64_t h);
size_t edge_cache__disk_purge(struct edge_cache_store *cs, const char *key, size_t keylen, const char *host,
                         const char *prefix, const char *tag, bool all);

#endif
