/* edge_cache.h - the CDN tier's HTTP cache (RFC 9111): stores, their objects, and
 * the rules of storing and reuse.
 *
 * Owns: one store per cached route (struct edge_cache_store, made by the edge at
 * start and kept across reloads, found again by the route's label), its objects
 * (immutable once stored, reference-counted: edge_cache_obj_get / _put), fills of
 * objects being fetched, coalescing of concurrent misses, streams that let waiters
 * read a fill while it arrives, purges, and the optional disk tier.
 * Called by: edge_proxy.c (lookup, serve, fill, revalidate, stale answers, the
 * background refresh) and edge_main.c (stores, purge API, metrics).
 * Threads: a store is shared by every worker thread; its table is under one mutex
 * held only for lookups and bookkeeping, never while an object is sent; waiters are
 * woken on their own thread's loop through loop_post. */
#ifndef CAIRN_EDGE_CACHE_H
#define CAIRN_EDGE_CACHE_H

#include "edge_conf.h"
#include "core/httpd.h"
#include "core/loop.h"
#include "core/metrics.h"
#include <time.h>

struct edge_cache_store;
struct edge_cache_obj;
struct edge_cache_fill;

/* This cache's device token in Surrogate-Capability / Surrogate-Control. */
#define SURROGATE_TOKEN "cairn"

/* Cache-Control, as much of it as a shared cache needs (RFC 9111 section 5.2). */
struct edge_cache_cc {
    bool no_store, no_cache, private_, public_, must_revalidate, proxy_revalidate, only_if_cached;
    bool must_understand;
    struct strv no_cache_fields;    /* no-cache="a, b": reusable without these fields */
    struct strv private_fields;     /* private="a": likewise, for a shared cache */
    int64_t max_age, s_maxage, min_fresh, max_stale;    /* -1 when absent */
    int64_t stale_while_revalidate, stale_if_error;     /* RFC 5861; -1 when absent */
};
void edge_cache_cc_parse(const struct http_header *h, size_t n, struct edge_cache_cc *cc);

struct edge_cache_store *edge_cache_store_new(const char *label, uint64_t budget, uint64_t max_object,
                                    double heuristic, bool compress, struct metrics_registry *reg);
void edge_cache_store_free(struct edge_cache_store *cs);
const char *edge_cache_store_label(const struct edge_cache_store *cs);
/* Adds the disk tier: objects are also kept as files in dir (at most budget
 * bytes), which a later start finds again. */
int edge_cache_store_open_disk(struct edge_cache_store *cs, const char *dir, uint64_t budget);
void edge_cache_store_resize(struct edge_cache_store *cs, uint64_t budget, uint64_t max_object, double heuristic,
                        bool compress);

/* Builds the key of a request: lower-cased host (port kept), a newline, the
 * request target exactly as received. Returns its length (0: no key). */
size_t edge_cache_key(const struct httpd_req *r, char *out, size_t outlen);

/* A referenced object for key whose Vary fields match the request, or NULL. */
struct edge_cache_obj *edge_cache_lookup(struct edge_cache_store *cs, const char *key, size_t keylen,
                          const struct httpd_req *r);
void edge_cache_obj_get(struct edge_cache_obj *o);
void edge_cache_obj_put(struct edge_cache_obj *o);
/* Whether the object may be served without asking the origin (RFC 9111 4.2,
 * with the request's own no-cache / max-age / min-fresh / max-stale). */
bool edge_cache_obj_fresh(const struct edge_cache_obj *o, const struct edge_cache_cc *req_cc, time_t now);
bool edge_cache_obj_has_validators(const struct edge_cache_obj *o);
/* Whether a stale o may stand in when the origin fails: within its
 * stale-if-error, or the route's grace, and not must-revalidate. */
bool edge_cache_obj_usable_on_error(const struct edge_cache_obj *o, int64_t grace_s, time_t now);
/* Within stale-while-revalidate (RFC 5861): may be served while a background
 * revalidation runs. The first caller to claim the refresh gets true from
 * edge_cache_obj_claim_refresh; the flag clears when the object is replaced. */
bool edge_cache_obj_stale_while_revalidate(const struct edge_cache_obj *o, time_t now);
bool edge_cache_obj_claim_refresh(struct edge_cache_obj *o);
void edge_cache_obj_release_refresh(struct edge_cache_obj *o);
const char *edge_cache_obj_key(const struct edge_cache_obj *o, size_t *len);
size_t edge_cache_obj_body_len(const struct edge_cache_obj *o);
/* Stores a response fetched in the background for o's key (a 200), or
 * refreshes o with a 304. headers/nheaders/body are the origin's answer;
 * req_headers are the request's fields that o's Vary names. */
void edge_cache_background_result(struct edge_cache_store *cs, struct edge_cache_obj *o, int status,
                             const struct http_header *headers, size_t nheaders, struct strv body,
                             const struct http_header *req_headers, size_t nreq, time_t request_time);
/* Adds If-None-Match / If-Modified-Since for revalidating o. */
void edge_cache_obj_conditional_headers(const struct edge_cache_obj *o, struct buf *b);
/* Answers r from o: a 304 when r's own conditionals match, a 206 for a single
 * byte range (If-Range honoured), 416 for an unsatisfiable one. */
void edge_cache_serve(struct httpd_req *r, struct edge_cache_obj *o, const char *xcache, const char *request_id);

/* Storing a response as it streams by. begin returns NULL when the response may
 * not be stored (or the cache is off). */
struct edge_cache_fill *edge_cache_fill_begin(struct edge_cache_store *cs, const char *key, size_t keylen,
                                    const struct httpd_req *r, const struct http_response *resp,
                                    time_t request_time);
void edge_cache_fill_data(struct edge_cache_fill *f, const void *p, size_t n);
void edge_cache_fill_commit(struct edge_cache_fill **f);
void edge_cache_fill_abort(struct edge_cache_fill **f);
/* A 304 for a revalidation: a new object with the stored body and updated fields. */
struct edge_cache_obj *edge_cache_refresh(struct edge_cache_store *cs, struct edge_cache_obj *old, const struct http_response *resp,
                           time_t request_time);

/* Purges by exact key, by target prefix (any host when host is NULL), by
 * surrogate key / cache tag, or everything. Returns how many objects went. */
size_t edge_cache_purge_key(struct edge_cache_store *cs, const char *key, size_t keylen);
size_t edge_cache_purge(struct edge_cache_store *cs, const char *host, const char *prefix, const char *tag, bool all);

/* Request coalescing: concurrent misses for one key make one origin fetch.
 * edge_cache_coalesce returns true when the caller is to fetch (it must call
 * edge_cache_coalesce_done when its fetch is over, stored or not), or false when w was
 * queued: w->cb(w->arg) then runs on w->loop once the fetch is over, and the
 * caller looks the key up again. A queued waiter that gives up first calls
 * edge_cache_waiter_cancel; if that returns false the callback is already on its way
 * (and must then only free w). */
struct edge_cache_waiter {
    struct loop *loop;
    void (*cb)(void *arg);
    void *arg;
    void *data;             /* the caller's, e.g. its request (NULL once it gave up) */
    bool posted, canceled;
    struct edge_cache_waiter *next;
};
bool edge_cache_coalesce(struct edge_cache_store *cs, const char *key, size_t keylen, struct edge_cache_waiter *w);
void edge_cache_coalesce_done(struct edge_cache_store *cs, const char *key, size_t keylen);
bool edge_cache_waiter_cancel(struct edge_cache_store *cs, struct edge_cache_waiter *w);

/* Sharing a response while it is stored: once the fetching request knows the
 * response is stored and how long it is, edge_cache_fill_share hands it to the
 * requests waiting for the key (their callbacks run; later arrivals join at
 * once). A woken request asks edge_cache_stream_find for it (NULL: look the key up
 * again), sends the head, then the body as edge_cache_stream_next gives it: DATA (p, n
 * valid while the stream is referenced), WAIT (w queued: its callback runs when
 * there is more; cancel it as a coalescing waiter, with edge_cache_stream_cancel),
 * DONE, or FAILED (the fetch broke off: the client's answer cannot be finished). */
struct edge_cache_stream;
enum edge_cache_stream_rc { CACHE_STREAM_DATA, CACHE_STREAM_WAIT, CACHE_STREAM_DONE, CACHE_STREAM_FAILED };
void edge_cache_fill_share(struct edge_cache_fill *f, const char *key, size_t keylen, uint64_t length);
bool edge_cache_fill_shared(const struct edge_cache_fill *f);
struct edge_cache_stream *edge_cache_stream_find(struct edge_cache_store *cs, const char *key, size_t keylen,
                                       const struct httpd_req *r);
void edge_cache_stream_head(struct httpd_req *r, const struct edge_cache_stream *st, const char *xcache,
                       const char *request_id);
size_t edge_cache_stream_length(const struct edge_cache_stream *st);
enum edge_cache_stream_rc edge_cache_stream_next(struct edge_cache_stream *st, size_t off, const char **p, size_t *n,
                                       struct edge_cache_waiter *w);
bool edge_cache_stream_cancel(struct edge_cache_stream *st, struct edge_cache_waiter *w);
void edge_cache_stream_put(struct edge_cache_stream *st);

size_t edge_cache_store_count(struct edge_cache_store *cs);
size_t edge_cache_store_bytes(struct edge_cache_store *cs);

#endif
