/* edge_cache_share.c - concurrent misses coalesced onto one fetch, and the
 * response shared with the waiting requests while it is being stored. */
#include "edge_cache_internal.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <brotli/encode.h>
#include <zlib.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- coalescing ---- */

/* Takes w off a list of waiters if it is there; the caller holds the list's lock. */
static void unlist_waiter(struct edge_cache_waiter **list, struct edge_cache_waiter *w)
{
    for (struct edge_cache_waiter **pp = list; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            return;
        }
}

/* Takes a list of waiters for posting; the caller holds the list's lock. */
static struct edge_cache_waiter *take_waiters(struct edge_cache_waiter **list)
{
    struct edge_cache_waiter *ws = *list;
    *list = NULL;
    for (struct edge_cache_waiter *w = ws; w; w = w->next)
        w->posted = true;
    return ws;
}

/* Runs each taken waiter's callback on its own loop. */
static void post_waiters(pthread_mutex_t *lock, struct edge_cache_waiter *ws)
{
    while (ws) {
        struct edge_cache_waiter *next = ws->next;
        if (loop_post(ws->loop, ws->cb, ws->arg)) {
            /* out of memory: the waiter's own timeout will let it go on */
            pthread_mutex_lock(lock);
            ws->posted = false;
            pthread_mutex_unlock(lock);
        }
        ws = next;
    }
}

static struct inflight *inflight_find(struct edge_cache_store *cs, const char *key, size_t keylen)
{
    uint64_t h = edge_cache__key_hash(key, keylen);
    for (struct inflight *f = cs->fills; f; f = f->next)
        if (f->h == h && f->keylen == keylen && memcmp(f->key, key, keylen) == 0)
            return f;
    return NULL;
}

bool edge_cache_coalesce(struct edge_cache_store *cs, const char *key, size_t keylen, struct edge_cache_waiter *w)
{
    uint64_t h = edge_cache__key_hash(key, keylen);
    pthread_mutex_lock(&cs->lock);
    for (struct inflight *f = cs->fills; f; f = f->next) {
        if (f->h == h && f->keylen == keylen && memcmp(f->key, key, keylen) == 0) {
            w->posted = w->canceled = false;
            w->next = f->waiters;
            f->waiters = w;
            /* its response is already being shared: join at once */
            struct edge_cache_waiter *ws = f->st ? take_waiters(&f->waiters) : NULL;
            pthread_mutex_unlock(&cs->lock);
            post_waiters(&cs->lock, ws);
            return false;
        }
    }
    struct inflight *f = calloc(1, sizeof(*f));
    if (f && (f->key = malloc(keylen + 1))) {
        memcpy(f->key, key, keylen);
        f->key[keylen] = '\0';
        f->keylen = keylen;
        f->h = h;
        f->next = cs->fills;
        cs->fills = f;
    } else {
        free(f);    /* no memory: fetch without coalescing */
    }
    pthread_mutex_unlock(&cs->lock);
    return true;
}

void edge_cache_coalesce_done(struct edge_cache_store *cs, const char *key, size_t keylen)
{
    uint64_t h = edge_cache__key_hash(key, keylen);
    struct edge_cache_waiter *ws = NULL;
    struct edge_cache_stream *st = NULL;
    pthread_mutex_lock(&cs->lock);
    for (struct inflight **pp = &cs->fills; *pp; pp = &(*pp)->next) {
        struct inflight *f = *pp;
        if (f->h == h && f->keylen == keylen && memcmp(f->key, key, keylen) == 0) {
            *pp = f->next;
            ws = take_waiters(&f->waiters);
            st = f->st;
            free(f->key);
            free(f);
            break;
        }
    }
    pthread_mutex_unlock(&cs->lock);
    post_waiters(&cs->lock, ws);
    edge_cache_stream_put(st);
}

/* ---- sharing a response while it is stored ---- */

void edge_cache_fill_share(struct edge_cache_fill *f, const char *key, size_t keylen, uint64_t length)
{
    if (!f || f->st || f->failed || !length || length > f->cs->max_object)
        return;
    struct edge_cache_stream *st = calloc(1, sizeof(*st));
    if (!st || !(st->body = malloc(length))) {
        free(st);
        return;
    }
    pthread_mutex_init(&st->lock, NULL);
    st->refs = 2;           /* the fill's and the coalescing entry's */
    st->cap = length;
    st->o = f->o;
    edge_cache_obj_get(f->o);
    struct edge_cache_store *cs = f->cs;
    pthread_mutex_lock(&cs->lock);
    struct inflight *inf = inflight_find(cs, key, keylen);
    struct edge_cache_waiter *ws = NULL;
    bool shared = inf && !inf->st;
    if (shared) {
        inf->st = st;
        ws = take_waiters(&inf->waiters);
    }
    pthread_mutex_unlock(&cs->lock);
    if (!shared) {
        st->refs = 1;
        edge_cache_stream_put(st);
        return;
    }
    /* what arrived with the head is copied by the fill's next data */
    f->st = st;
    if (buf_used(&f->body))
        edge_cache__stream_append(st, buf_head(&f->body), buf_used(&f->body));
    post_waiters(&cs->lock, ws);
}

bool edge_cache_fill_shared(const struct edge_cache_fill *f)
{
    return f && f->st;
}

void edge_cache__stream_append(struct edge_cache_stream *st, const void *p, size_t n)
{
    pthread_mutex_lock(&st->lock);
    struct edge_cache_waiter *ws = NULL;
    if (st->state == ST_FILLING) {
        if (n > st->cap - st->len) {
            st->state = ST_FAILED;     /* more than the origin declared */
        } else {
            memcpy(st->body + st->len, p, n);
            st->len += n;
        }
        ws = take_waiters(&st->subs);
    }
    pthread_mutex_unlock(&st->lock);
    post_waiters(&st->lock, ws);
}

void edge_cache__stream_end(struct edge_cache_stream *st, int state)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->lock);
    struct edge_cache_waiter *ws = NULL;
    if (st->state == ST_FILLING) {
        st->state = state;
        ws = take_waiters(&st->subs);
    }
    pthread_mutex_unlock(&st->lock);
    post_waiters(&st->lock, ws);
}

void edge_cache_stream_put(struct edge_cache_stream *st)
{
    if (!st || __atomic_sub_fetch(&st->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_destroy(&st->lock);
    edge_cache_obj_put(st->o);
    free(st->body);
    free(st);
}

struct edge_cache_stream *edge_cache_stream_find(struct edge_cache_store *cs, const char *key, size_t keylen,
                                       const struct httpd_req *r)
{
    struct httpd_req *rq = (struct httpd_req *)r;
    if (!strv_eq_cstr(r->h.method, "GET") || httpd_req_header(rq, "range") ||
        httpd_req_header(rq, "if-none-match") || httpd_req_header(rq, "if-modified-since"))
        return NULL;
    pthread_mutex_lock(&cs->lock);
    struct inflight *inf = inflight_find(cs, key, keylen);
    struct edge_cache_stream *st = inf ? inf->st : NULL;
    if (st)
        __atomic_add_fetch(&st->refs, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&cs->lock);
    if (!st)
        return NULL;
    /* the same variant, fresh for this request, as a stored hit would be */
    const struct edge_cache_obj *o = st->o;
    bool ok = o->status == 200;
    if (ok && o->vary) {
        char *vv = edge_cache__vary_values(r, o->vary);
        ok = vv && strcmp(vv, o->vary_vals) == 0;
        free(vv);
    }
    struct edge_cache_cc rcc;
    edge_cache_cc_parse(r->h.headers, r->h.nheaders, &rcc);
    if (!ok || !edge_cache_obj_fresh(o, &rcc, time(NULL))) {
        edge_cache_stream_put(st);
        return NULL;
    }
    return st;
}

void edge_cache_stream_head(struct httpd_req *r, const struct edge_cache_stream *st, const char *xcache,
                       const char *request_id)
{
    r->no_default_headers = true;
    edge_cache__serve_fields(r, st->o, false, NULL, xcache, request_id, time(NULL));
    httpd_respond_start(r, st->o->status, NULL, (int64_t)st->cap);
}

size_t edge_cache_stream_length(const struct edge_cache_stream *st)
{
    return st->cap;
}

enum edge_cache_stream_rc edge_cache_stream_next(struct edge_cache_stream *st, size_t off, const char **p, size_t *n,
                                       struct edge_cache_waiter *w)
{
    enum edge_cache_stream_rc rc;
    pthread_mutex_lock(&st->lock);
    if (off < st->len) {
        *p = st->body + off;
        *n = st->len - off;
        rc = CACHE_STREAM_DATA;
    } else if (st->state == ST_DONE && st->len == st->cap) {
        rc = CACHE_STREAM_DONE;
    } else if (st->state != ST_FILLING) {
        rc = CACHE_STREAM_FAILED;
    } else {
        if (w) {
            w->posted = w->canceled = false;
            w->next = st->subs;
            st->subs = w;
        }
        rc = CACHE_STREAM_WAIT;
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

bool edge_cache_stream_cancel(struct edge_cache_stream *st, struct edge_cache_waiter *w)
{
    bool removed = false;
    pthread_mutex_lock(&st->lock);
    if (!w->posted) {
        removed = true;     /* listed or not, no callback will come */
        unlist_waiter(&st->subs, w);
    } else {
        w->canceled = true;
    }
    pthread_mutex_unlock(&st->lock);
    return removed;
}

bool edge_cache_waiter_cancel(struct edge_cache_store *cs, struct edge_cache_waiter *w)
{
    bool removed = false;
    pthread_mutex_lock(&cs->lock);
    if (!w->posted) {
        removed = true;     /* listed or not, no callback will come */
        for (struct inflight *f = cs->fills; f; f = f->next)
            unlist_waiter(&f->waiters, w);
    } else {
        w->canceled = true;
    }
    pthread_mutex_unlock(&cs->lock);
    return removed;
}

void edge_cache_background_result(struct edge_cache_store *cs, struct edge_cache_obj *o, int status,
                             const struct http_header *headers, size_t nheaders, struct strv body,
                             const struct http_header *req_headers, size_t nreq, time_t request_time)
{
    struct http_response resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = status;
    resp.content_length = -1;
    for (size_t i = 0; i < nheaders && i < HTTP_MAX_HEADERS; i++)
        resp.headers[resp.nheaders++] = headers[i];
    if (status == 304) {
        struct edge_cache_obj *fresh = edge_cache_refresh(cs, o, &resp, request_time);
        if (fresh)
            edge_cache_obj_put(fresh);
        return;
    }
    /* a stand-in request with the fields the object varies on */
    struct httpd_req *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    r->h.method = STRV("GET");
    for (size_t i = 0; i < nreq && i < HTTP_MAX_HEADERS; i++)
        r->h.headers[r->h.nheaders++] = req_headers[i];
    struct edge_cache_fill *f = edge_cache_fill_begin(cs, o->key, o->keylen, r, &resp, request_time);
    if (f) {
        edge_cache_fill_data(f, body.p, body.n);
        edge_cache_fill_commit(&f);
    } else {
        edge_cache_purge_key(cs, o->key, o->keylen);     /* no longer storable: drop the old one */
    }
    free(r);
}
