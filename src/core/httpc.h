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

/* Statistics for tests and metrics. */
struct httpc_stats {
    uint64_t connects;              /* new connections opened */
    uint64_t reuses;                /* requests served on a pooled connection */
    size_t idle;                    /* connections in the pool now */
};
void httpc_stats(const struct httpc *hc, struct httpc_stats *out);

#endif
