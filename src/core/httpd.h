/* httpd.h - an HTTP/1.1 server on the per-thread event loop.
 *
 * Each worker thread owns a struct httpd_worker with its own listeners (one
 * SO_REUSEPORT socket per address per thread) and connections; nothing is shared
 * between workers. A connection serves its requests one at a time in order
 * (keep-alive and pipelining), reads the body before calling the handler (Content-
 * Length bodies are views into the read buffer; chunked bodies are decoded into a
 * per-connection buffer), and closes after answering 4xx to malformed input.
 *
 * The handler is called with a struct httpd_req that stays valid until it answers
 * with httpd_respond() (or httpd_respond_start/_write/_finish), at once or later
 * from a timer: that is how a handler waits without blocking the thread. If the
 * connection must die first (server stop), the abort callback set with
 * httpd_req_on_abort() runs so that the handler can drop its pending work.
 *
 * HTTP/2 (RFC 9113, libnghttp2) is spoken on TLS connections whose ALPN chose
 * "h2", and on cleartext connections that open with the HTTP/2 preface (prior
 * knowledge, RFC 9113 3.3; the HTTP/1.1 Upgrade to h2c is not offered): each stream becomes a struct httpd_req like an HTTP/1.1 request, with
 * the same response calls, so handlers do not see the difference (the pseudo-
 * header :authority is presented as a Host field, and h.minor is 1).
 *
 * Timeouts: header_timeout from the first byte of a request until its head is
 * complete (answered with 408), body_timeout between body reads, idle_timeout
 * between requests on a kept-alive connection.
 */
#ifndef CAIRN_HTTPD_H
#define CAIRN_HTTPD_H

#include "core/buf.h"
#include "core/http1.h"
#include "core/loop.h"
#include "core/net.h"
#include "core/tls.h"

struct httpd_req;
struct httpd_conn;
struct httpd_worker;
struct metrics_registry;

typedef void (*httpd_handler)(struct httpd_req *r, void *arg);

struct httpd_conf {
    struct http1_limits limits;
    uint32_t header_timeout_ms;
    uint32_t body_timeout_ms;
    uint32_t idle_timeout_ms;
    size_t max_conns;               /* per worker; beyond it new connections are closed */
    struct tls_ctx *tls;            /* NULL for plain HTTP */
    httpd_handler handler;
    void *handler_arg;
    const char *server;             /* Server header, NULL for none */
    bool h2c;                       /* HTTP/2 with prior knowledge on cleartext (default on) */
    /* Called with handler_arg when a connection on this configuration opens and
     * closes (a role pins its configuration generation, or counts connections per
     * client, with these). on_open returning false closes the connection at once;
     * on_close is called for every connection on_open saw. */
    bool (*on_open)(void *arg, const struct sockaddr *peer);
    /* Optional: asked (with handler_arg) for each HTTP/1 request with a body once
     * its head is read; true hands the request to the handler at once with an
     * empty body and req->streaming set, and the handler reads the body with
     * httpd_req_read_body (uploads larger than memory). HTTP/2 bodies are always
     * whole. */
    bool (*stream_body)(void *arg, const struct http_request *h);
    void (*on_close)(void *arg, const struct sockaddr *peer);
};
/* Fills conf with defaults (limits, 10s/30s/60s timeouts, 10000 conns). */
void httpd_conf_defaults(struct httpd_conf *conf);

struct h2_stream;

struct httpd_req {
    struct http_request h;
    struct h2_stream *h2;           /* the HTTP/2 stream, or NULL for HTTP/1.x */
    struct strv body;
    const struct sockaddr *peer;    /* AF_INET or AF_INET6 */
    struct httpd_conn *conn;
    struct httpd_worker *worker;
    uint64_t start_ns;
    bool tls;
    bool no_default_headers;        /* don't add Date and Server (a proxy passes its own) */
    bool streaming;                 /* the body comes through httpd_req_read_body */
    void (*on_abort)(struct httpd_req *r, void *arg);
    void *abort_arg;
    void (*on_drain)(struct httpd_req *r, void *arg);
    void *drain_arg;
};

struct httpd_listener {
    struct loop_io io;
    struct httpd_worker *w;
    const struct httpd_conf *conf;
    struct net_addr addr;
    struct httpd_listener *next;
};

struct httpd_worker {
    struct loop *loop;
    struct httpd_listener *listeners;
    struct httpd_conn *conns;       /* live connections (doubly linked) */
    struct httpd_conn *free_conns;  /* recycled, buffers kept */
    size_t nconns, nfree;
    bool draining;
    void (*on_drained)(struct httpd_worker *w, void *arg);
    void *drained_arg;
    /* Idle keep-alive connections hold no request state and no buffers: both go
     * back to these per-worker pools and are taken again by the next request. */
    struct httpd_req *req_pool[64];
    size_t nreq_pool;
    char *buf_pool[32];
    size_t nbuf_pool;
    char *scratch;                  /* first read of an idle connection lands here */
    char date[30];                  /* cached Date header value */
    time_t date_sec;
    void *data;
};

void httpd_worker_init(struct httpd_worker *w, struct loop *loop);
/* Closes every connection and listener and frees memory. */
void httpd_worker_destroy(struct httpd_worker *w);
/* Binds addr (SO_REUSEPORT) and starts accepting with conf, which must outlive
 * the listener. Returns 0 or a negated errno. */
int httpd_listen(struct httpd_worker *w, const struct net_addr *addr,
                 const struct httpd_conf *conf);
/* Finds this worker's listener on addr (NULL when none). */
struct httpd_listener *httpd_listener_find(struct httpd_worker *w, const struct net_addr *addr);
/* New connections accepted on l use conf from now on. */
void httpd_listener_set_conf(struct httpd_listener *l, const struct httpd_conf *conf);
void httpd_listener_close(struct httpd_worker *w, struct httpd_listener *l);
/* Retires the connections whose configuration is conf: each closes after its
 * current response (with Connection: close), an idle one after grace_ms. */
void httpd_retire(struct httpd_worker *w, const struct httpd_conf *conf, uint32_t grace_ms);

/* Graceful stop: closes listeners and idle connections; connections with a
 * request in progress close after its response. on_drained runs once no
 * connection is left (possibly immediately). */
void httpd_drain(struct httpd_worker *w, void (*on_drained)(struct httpd_worker *, void *),
                 void *arg);
/* Forcibly closes every connection (after a drain deadline). */
void httpd_close_all(struct httpd_worker *w);

/* Response. Headers added before the response starts are sent with it. */
int httpd_header(struct httpd_req *r, const char *name, const char *value);
int httpd_headerf(struct httpd_req *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A trailer field sent after the body (HTTP/2 only: -ENOTSUP on HTTP/1.x), as
 * gRPC's grpc-status. Add trailers before the response finishes. */
int httpd_trailer(struct httpd_req *r, const char *name, const char *value);
/* Sends a whole response. ctype may be NULL. HEAD, 204 and 304 get no body.
 * After httpd_respond() or httpd_respond_finish(), r belongs to the server again
 * and must not be used. */
void httpd_respond(struct httpd_req *r, int status, const char *ctype, const void *body,
                   size_t len);
/* A whole response whose body stays in the caller's memory (no copy) until it is
 * sent; release(arg) runs once the server is done with it (sent, or the
 * connection closed). Used to serve cached objects. */
void httpd_respond_ext(struct httpd_req *r, int status, const char *ctype, const void *body,
                       size_t len, void (*release)(void *), void *arg);
/* Streaming: content_length < 0 means chunked. */
void httpd_respond_start(struct httpd_req *r, int status, const char *ctype,
                         int64_t content_length);
void httpd_respond_write(struct httpd_req *r, const void *data, size_t len);
void httpd_respond_finish(struct httpd_req *r);
void httpd_req_on_abort(struct httpd_req *r, void (*cb)(struct httpd_req *, void *), void *arg);
/* Flow control for streamed responses: bytes written but not yet sent, and a
 * callback run when the output buffer has been flushed completely. */
size_t httpd_req_pending(const struct httpd_req *r);
void httpd_req_on_drain(struct httpd_req *r, void (*cb)(struct httpd_req *, void *), void *arg);
int httpd_header_strv(struct httpd_req *r, struct strv name, struct strv value);
/* A streamed request body (req->streaming): data gets the body's bytes as they
 * arrive (chunked framing removed) and returns 0 to go on, or nonzero to stop
 * reading (the handler answers, then the connection closes); end runs once the
 * whole body has come. The head (r->h) stays valid. A client that goes away or
 * stalls past body_timeout ends the request through its abort callback. An
 * answer begun before the end also stops reading and closes the connection
 * after it. The 100 Continue an Expect asks for is sent by this call, so a
 * handler that refuses first never makes the client send the body. */
struct httpd_body_ops {
    int (*data)(struct httpd_req *r, void *arg, const char *p, size_t n);
    void (*end)(struct httpd_req *r, void *arg);
};
void httpd_req_read_body(struct httpd_req *r, const struct httpd_body_ops *ops, void *arg);
/* Closes the connection under a request whose response cannot be completed (an
 * upstream died mid-body): the client sees a truncated response, never a wrong one.
 * The abort callback is not called. */
void httpd_req_abort(struct httpd_req *r);
/* Takes the connection away from the server for a protocol switch (Upgrade):
 * the caller gets the socket and its TLS state, plus, appended to early, the
 * bytes the client already sent past this request, and owns all of them from
 * now on. The request's abort callback is not called; r is gone. */
void httpd_req_hijack(struct httpd_req *r, int *fd, SSL **ssl, struct buf *early);
/* The listener's configuration the request arrived on. */
const struct httpd_conf *httpd_req_conf(const struct httpd_req *r);
/* Formats the peer's IP into out. */
void httpd_req_peer(const struct httpd_req *r, char *out, size_t outlen);
const struct http_header *httpd_req_header(const struct httpd_req *r, const char *name);

/* The request's form: its query string, plus an urlencoded POST body. Free it
 * with http_form_free. */
void httpd_req_form(struct httpd_req *r, struct http_form *f);

/* The tenant of a request, from X-Scope-OrgID as Loki, Tempo and Mimir read it
 * (1 to 150 bytes, no '/', '|' or NUL): 0 with it in out; 400 when the header is
 * malformed; 401 when it is absent and required; else default_tenant. */
int httpd_req_tenant(struct httpd_req *r, const char *default_tenant, bool required, char *out, size_t n);

/* Serves /-/healthy, /-/ready and /metrics. Returns true when it answered. */
bool httpd_serve_builtin(struct httpd_req *r, struct metrics_registry *reg, bool ready);

#endif
