/* otlp.h - a small OTLP/HTTP span exporter, for the daemons to trace themselves.
 *
 * Request threads hand finished spans to otlp_export(): the span is encoded as an
 * OTLP `Span` into a bounded queue under a mutex (no I/O, no allocation beyond the
 * queue's growth, never blocks on the network). An exporter thread of its own
 * sends the queue every second, or sooner once 512 spans wait, as one
 * ExportTraceServiceRequest (protobuf) over a keep-alive connection, with the
 * service's resource. A full queue drops the span and counts it; a failed send
 * drops that batch and counts it (tracing never holds a request up).
 *
 * Sampling is parent-based with a ratio for roots, as OpenTelemetry's
 * parentbased_traceidratio: a request with a sampled parent is traced, one with
 * an unsampled parent is not, a new trace is traced when its id falls under the
 * ratio.
 */
#ifndef CAIRN_OTLP_H
#define CAIRN_OTLP_H

#include "core/buf.h"
#include "core/metrics.h"
#include "core/trace.h"

#include <stdbool.h>
#include <stdint.h>

struct otlp_exporter;

struct otlp_conf {
    const char *url;                /* http://host:port[/v1/traces] */
    const char *service;            /* service.name */
    const char *role;               /* cairn.role */
    double ratio;                   /* for new traces, 0..1 */
    uint32_t max_queue;             /* spans; 0: 2048 */
};

/* Starts the exporter thread; counters go to reg (cairn_otlp_spans_exported_total,
 * cairn_otlp_spans_dropped_total). NULL on a bad URL or out of memory. */
struct otlp_exporter *otlp_start(const struct otlp_conf *conf, struct metrics_registry *reg);
/* Sends what is queued (bounded wait), stops the thread, frees. */
void otlp_stop(struct otlp_exporter *x);

/* The trace context of an incoming request: its traceparent if valid (then
 * *parent is set), else a new trace, sampled by the ratio. out gets the server
 * span's own context (a new span id, the trace's id and flags). */
void otlp_begin(const struct otlp_exporter *x, const struct strv *traceparent, struct trace_ctx *out,
                uint8_t parent[8], bool *has_parent);
static inline bool otlp_sampled(const struct trace_ctx *t) { return t->flags & 1; }

enum { OTLP_INTERNAL = 1, OTLP_SERVER = 2, OTLP_CLIENT = 3 };

struct otlp_attr {
    const char *key;
    const char *s;                  /* a string value, or NULL for the integer */
    int64_t i;
};

struct otlp_span {
    const struct trace_ctx *ctx;    /* trace id, span id */
    const uint8_t *parent;          /* 8 bytes, or NULL */
    const char *name;
    int kind;
    uint64_t start_ns, end_ns;      /* wall clock, ns since the epoch */
    bool error;
    const struct otlp_attr *attrs;
    size_t nattrs;
};

/* Queues a finished span (only call it for sampled traces). Thread-safe. */
void otlp_export(struct otlp_exporter *x, const struct otlp_span *s);

/* Wall-clock nanoseconds (spans carry wall time; durations come from the
 * monotonic clock by the caller when it has them). */
uint64_t otlp_now_ns(void);

/* ---- the `tracing:` key of a service (edge, demo-app) ----
 *
 *   tracing: {sampling: 0.1, endpoint: "http://127.0.0.1:4318"}   # or: tracing: false
 *
 * Without the key, a service exports to the stack's trace store when it has one
 * (the first endpoint named "otlp") with sampling 1 (OpenTelemetry's default,
 * parent-based always-on); with no trace store in the stack, nothing. */
#include "core/config.h"
#include "core/stack.h"

struct otlp_settings {
    bool off;
    double ratio;
    char *url;                      /* NULL: the stack's trace store */
};
int otlp_parse_settings(struct cfg *c, const cfg_node *n, const char *path, struct otlp_settings *out);
void otlp_settings_free(struct otlp_settings *s);
/* The exporter a service runs with, or NULL (tracing off or nowhere to send). */
struct otlp_exporter *otlp_for_service(const struct service *svc, const struct otlp_settings *s,
                                       struct metrics_registry *reg);

#endif
