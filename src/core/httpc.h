/* httpc.h - an HTTP/1.1 client on the event loop with keep-alive pools.
 *
 * One struct httpc per loop (per thread). Finished connections that may be kept
 * alive go back to an idle pool keyed by address, TLS and host name, and the next
 * request to the same place reuses one (LIFO, so the warmest socket is used). An
 * idle connection that the server closes is noticed by its read event and
 * dropped; a request whose reused connection turns out dead before any response
 * byte arrives is retried once on a fresh one if its method is idempotent.
 *
 * The callback never runs inside httpc_send(), even when the request fails at
 * once; it runs exactly once per call unless the call is cancelled.
 *
 * The response given to the callback (status, headers, body) points into the
 * connection's buffers and is valid only during the callback.
 *
 * Streamed calls (httpc_stream) are what a proxy needs: the caller sends a request
 * it serialized itself, takes its connection from a pool of its own (one per
 * server, say), and gets the response head, then the body in pieces as they
 * arrive (chunked bodies decoded), and may pause reading while its own client
 * is slow. No timeouts and no retries of their own: the caller keeps its own
 * timers and decides, from the stage and flags a failure reports, whether to try
 * again. After a 101 the caller may take the socket over (httpc_hijack).
 */
#ifndef CAIRN_HTTPC_H
#define CAIRN_HTTPC_H

#include "core/buf.h"
#include "core/http1.h"
#include "core/loop.h"
#include "core/net.h"
#include "core/tls.h"

struct httpc;
struct httpc_call;

struct httpc_opts {
    uint32_t idle_timeout_ms;       /* idle pooled connections are closed after this */
    size_t max_idle;                /* pooled connections kept per client */
    struct tls_ctx *tls;            /* client context for https requests, or NULL */
    struct http1_limits limits;     /* response head and body limits */
};
void httpc_opts_defaults(struct httpc_opts *o);

struct httpc_request {
    const char *method;
    struct net_addr addr;
    const char *host;               /* Host header and TLS SNI */
    const char *target;             /* origin-form: "/path?query" */
    const char *const *headers;     /* "Name: value" lines, NULL-terminated, or NULL */
    const void *body;
    size_t body_len;
    bool tls;
    struct tls_ctx *tls_ctx;        /* with tls: this client context instead of the client's
                                     * own; used at once, so the connection is not pooled */
    const char *sni;                /* with tls: the name sent and checked; NULL = host,
                                     * "" = none (a verified certificate must name the address) */
    uint32_t timeout_ms;            /* whole exchange; 0 = 30 s */
};

struct httpc_response {
    int error;                      /* 0, or a negated errno: -ETIMEDOUT, -ECONNREFUSED, -EPROTO... */
    int status;
    const struct http_header *headers;
    size_t nheaders;
    struct strv body;
    bool reused;                    /* served over a pooled connection */
};

typedef void (*httpc_cb)(const struct httpc_response *resp, void *arg);

struct httpc *httpc_new(struct loop *loop, const struct httpc_opts *opts);
/* Cancels pending calls (without callbacks) and closes every connection. */
void httpc_free(struct httpc **hc);

/* Starts a request; cb runs exactly once unless the call is cancelled. Returns the
 * call, or NULL when memory runs out. */
struct httpc_call *httpc_send(struct httpc *hc, const struct httpc_request *req, httpc_cb cb,
                              void *arg);
void httpc_cancel(struct httpc_call *call);

/* ---- streamed calls ---- */

/* Idle connections to one destination, owned by the caller (a server's pool on a
 * worker thread). At most max_idle are kept, each closed after idle_ms. */
struct httpc_conn;
struct httpc_pool {
    struct httpc_conn *idle;        /* most recently used first */
    size_t nidle, max_idle;
    uint32_t idle_ms;
};
void httpc_pool_init(struct httpc_pool *p, size_t max_idle, uint32_t idle_ms);
/* Closes the pool's idle connections. */
void httpc_pool_flush(struct httpc *hc, struct httpc_pool *p);

struct httpc_stream_req {
    struct net_addr addr;
    const void *raw;                /* the request as sent: head and body */
    size_t raw_len;
    bool is_head;                   /* no body in the response */
    bool upgrade;                   /* a 101 is the final answer (then httpc_hijack) */
    struct tls_ctx *tls;            /* speak TLS with this client context, or NULL */
    const char *sni;                /* with tls: the name sent (NULL: none; then a verifying
                                       context checks that the certificate names the IP) */
    struct httpc_pool *pool;        /* where the connection comes from and goes back to */
};

/* Where a streamed call failed. */
enum httpc_stage {
    HTTPC_CONNECT,                  /* TCP connect */
    HTTPC_TLS,                      /* TLS handshake */
    HTTPC_EXCHANGE,                 /* sending, or waiting for the head: a write error, a
                                       reset, or the end of stream before a whole head */
    HTTPC_BAD_HEAD,                 /* a malformed response head */
    HTTPC_BODY,                     /* the body broke off or was malformed */
};
#define HTTPC_F_REUSED 1u           /* the connection came from the pool */
#define HTTPC_F_GOT_BYTES 2u        /* some of the response had arrived */

struct httpc_stream_ops {
    /* A new connection is ready (after its TCP and TLS handshakes); not called for
     * a pooled one. */
    void (*connected)(void *arg);
    /* The final response head (1xx are skipped, but a 101 when upgrade); valid
     * during the call only. */
    void (*head)(void *arg, const struct http_response *resp);
    void (*data)(void *arg, const char *p, size_t n);
    /* The whole response arrived; the connection is already back in the pool when
     * reusable. */
    void (*done)(void *arg, bool reusable);
    void (*failed)(void *arg, int err, enum httpc_stage stage, unsigned flags);
};

/* Starts a streamed call on a pooled connection of req->pool (*reused true) or a
 * new one. Returns the call, or NULL with *err when it cannot start (no
 * connection could be begun, no memory): nothing is called back then. Every
 * callback runs from the loop, never inside this call; after done or failed the
 * call is gone. The callbacks may cancel the call (httpc_cancel). */
struct httpc_call *httpc_stream(struct httpc *hc, const struct httpc_stream_req *req,
                                const struct httpc_stream_ops *ops, void *arg, int *err, bool *reused);
/* Stops reading the response until httpc_resume (which reads at once). */
void httpc_pause(struct httpc_call *call);
void httpc_resume(struct httpc_call *call);
/* The caller is done with the call: it goes on to its end without callbacks
 * (its connection is pooled when the response ends cleanly). */
void httpc_detach(struct httpc_call *call);
/* From a 101's head callback: takes the socket (and TLS) over with what was read
 * from it, the head included; the call is gone. */
void httpc_hijack(struct httpc_call *call, int *fd, SSL **ssl, struct buf *early);

/* Statistics for tests and metrics. */
struct httpc_stats {
    uint64_t connects;              /* new connections opened */
    uint64_t reuses;                /* requests served on a pooled connection */
    size_t idle;                    /* connections in the pool now */
};
void httpc_stats(const struct httpc *hc, struct httpc_stats *out);

#endif
