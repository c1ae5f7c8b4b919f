/* trace.h - W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/).
 *
 *     traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
 *                  version-trace_id(32 hex)-parent_id(16 hex)-flags(2 hex)
 */
#ifndef CAIRN_TRACE_H
#define CAIRN_TRACE_H

#include "core/common.h"

struct trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;
};

#define TRACEPARENT_LEN 55

/* Parses a header value. Returns 0 or -EINVAL (bad syntax, version ff, all-zero
 * ids, upper-case hex). Versions above 00 are accepted with their first four
 * fields, as the spec asks. */
int trace_parse(struct strv value, struct trace_ctx *out);
/* A new trace with random ids, sampled flag set. */
void trace_new(struct trace_ctx *out);
/* A child span of parent: same trace id and flags, new span id. */
void trace_child(const struct trace_ctx *parent, struct trace_ctx *out);
/* Writes the 55-character header value plus NUL. */
void trace_format(const struct trace_ctx *t, char out[TRACEPARENT_LEN + 1]);
/* Writes the trace id as 32 hex characters plus NUL. */
void trace_id_hex(const struct trace_ctx *t, char out[33]);

#endif
