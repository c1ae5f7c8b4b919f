/* traces_internal.h - the traces role's shared types: configuration, spans as
 * OTLP protobuf bytes, the store (head, WAL, blocks), TraceQL and the service.
 *
 * Every span is kept as the OTLP `Span` message it arrived as (JSON and Zipkin
 * input are encoded into it first), next to its resource and scope, so the store
 * has one format and every API renders from it.
 */
#ifndef CAIRN_TRACES_INTERNAL_H
#define CAIRN_TRACES_INTERNAL_H

#include "traces.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/hmap.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/pb.h"
#include "core/service.h"

#define TR_MAX_LISTEN 4
#define TR_MAX_BODY (64u << 20)             /* bytes of an export, decoded */

enum tr_api { TR_API_OTLP, TR_API_GRPC, TR_API_ZIPKIN, TR_API_JAEGER, TR_API_TEMPO, TR_API_N };

struct traces_conf {
    struct net_addr addrs[TR_API_N][TR_MAX_LISTEN];
    size_t naddrs[TR_API_N];
    char *data;                             /* directory, relative to data_dir */
    char *default_tenant;                   /* the tenant of requests without X-Scope-OrgID */
    bool auth;                              /* true: X-Scope-OrgID required */
    uint64_t retention_ms;                  /* block_retention */
    uint64_t trace_idle_ms;                 /* a trace this long without a new span is complete */
    uint64_t max_block_duration_ms;         /* complete traces wait at most this before a block */
    uint64_t max_block_bytes;               /* ... or until this many bytes are complete */
    uint64_t max_bytes_per_trace;           /* 0: none */
    double rate_bytes, burst_bytes;         /* ingestion per tenant */
    uint32_t max_attribute_bytes;           /* of a key or a string value; 0: none */
    uint64_t max_span_age_ms;               /* spans that ended longer ago are refused */
    uint32_t search_default_limit;          /* /api/search and Jaeger's default limit */
    uint64_t query_timeout_ms;
};

/* ---- spans (OTLP protobuf field numbers) ---- */

struct tr_span {
    const uint8_t *tid, *sid, *pid;         /* 16, 8, 8 bytes; pid NULL for a root */
    struct strv name, state, status_msg;
    uint32_t kind, status, flags;           /* OTLP enums */
    int64_t start, end;                     /* ns since the epoch */
    struct pb raw;                          /* the Span message */
    struct pb res, scope;                   /* Resource, InstrumentationScope (may be empty) */
    struct pb res_spans, scope_spans;       /* ResourceSpans and ScopeSpans without their children */
    struct strv service;                    /* resource service.name */
    int parent;                             /* index in the trace, or -1 */
    int nchildren;
};

struct tr_kv;

/* A view built from a block's search columns holds no Span messages: its
 * attributes are found through find (where 1: the span's, 2: its resource's),
 * which reads the columns they are in on first use. */
struct tr_lazy {
    bool (*find)(struct tr_lazy *l, int span, int where, const char *key, struct tr_kv *out);
};

struct tr_trace_view {
    uint8_t id[16];
    struct tr_span *s;
    size_t n, cap;
    int64_t start, end;                     /* of all spans */
    int root;                               /* index of the root span (no parent), or -1 */
    struct tr_lazy *lazy;                   /* NULL: spans decoded from their messages */
    /* nonzero: the attribute values found through lazy are a page's, each
     * distinct value at one address for as long as this number stays, so a
     * verdict on a value may be kept by its address (TraceQL's regexes) */
    uint64_t page_gen;
};

/* Decodes a TracesData (or ExportTraceServiceRequest) into v, appending; the
 * bytes must outlive v. 0 or -EINVAL. */
int tr_view_add(struct tr_trace_view *v, const uint8_t *p, size_t n);
/* Links parents and finds the root (after every part is added). */
void tr_view_link(struct tr_trace_view *v);
void tr_view_reset(struct tr_trace_view *v);
void tr_view_free(struct tr_trace_view *v);

/* Attributes: calls fn for each KeyValue of the message m whose repeated field
 * is field; stops when fn returns nonzero (and returns that). */
struct tr_kv {
    struct strv key;
    int type;                               /* TR_V_* */
    struct strv s;                          /* string, bytes, or the raw array/kvlist */
    int64_t i;
    double d;
    bool b;
};
enum { TR_V_NONE, TR_V_STR, TR_V_BOOL, TR_V_INT, TR_V_DOUBLE, TR_V_ARRAY, TR_V_KVLIST, TR_V_BYTES };
int tr_kv_decode(struct pb kv, struct tr_kv *out);
int tr_any_decode(struct pb any, struct tr_kv *out);
typedef int (*tr_kv_fn)(const struct tr_kv *kv, void *arg);
int tr_attrs_each(struct pb msg, uint32_t field, tr_kv_fn fn, void *arg);
/* The first KeyValue of msg's repeated field whose key is key, into out. */
bool tr_attr_find(struct pb msg, uint32_t field, const char *key, struct tr_kv *out);
/* Every attribute of a span: its own (where 1), resource (2), scope (3),
 * events (4), links (5). */
int tr_span_attrs_all(const struct tr_span *s, int (*fn)(const struct tr_kv *kv, int where, void *arg), void *arg);
/* Writes a value as a string the way Jaeger and Tempo compare it ("123", "72.5",
 * "true", JSON for arrays and maps, base64 for bytes). */
void tr_kv_string(const struct tr_kv *kv, struct buf *out);
/* Writes an OTLP JSON AnyValue ({"stringValue": ...}). */
void tr_any_json(const struct tr_kv *kv, struct buf *out);
void tr_attrs_json(struct pb msg, uint32_t field, struct buf *out);
/* An Event message's time (ns) and name. */
void tr_event_fields(struct pb ev, uint64_t *time_ns, struct strv *name);

/* ---- receiving: every input becomes an ExportTraceServiceRequest ---- */

struct tr_export {
    struct buf pb;                          /* protobuf, when the input was not */
    const uint8_t *p;                       /* the request to ingest */
    size_t n;
};
/* OTLP JSON (the OTLP/JSON mapping) into protobuf. 0, or -EINVAL with err. */
int tr_otlp_json_to_pb(const char *json, size_t n, struct buf *out, char *err, size_t errlen);
/* Zipkin v2 JSON (a list of spans) into OTLP protobuf. */
int tr_zipkin_json_to_pb(const char *json, size_t n, struct buf *out, char *err, size_t errlen);

/* ---- search columns (tr_cols.c) ----
 *
 * Each page of a block holds, beside its traces' OTLP bytes, the columns a search
 * reads, each compressed on its own: per trace its span count; per span (in a
 * linked trace's order) the parent's index, start, duration, kind and status, and
 * dictionary ids of the service, the span name and the status message; the
 * dictionary; the resources' attributes (a table, and an id per span); and one
 * column per span attribute key (its distinct KeyValues, and the spans that have
 * it with the id of theirs), named in a key directory. A search builds a trace's view from them, reads an attribute
 * key's column only when the query reaches that key, and decompresses the OTLP
 * bytes only of the traces that match. */
enum { TC_TRACE, TC_PARENT, TC_START, TC_DUR, TC_KS, TC_SVC, TC_NAME, TC_SMSG, TC_DICT, TC_KEYS, TC_RES, TC_N };
#define TC_EAGER TC_KEYS                    /* columns before this one are read with the page */

struct tc_key_w {                           /* a span attribute key's column, being written */
    char *key;
    size_t klen;
    struct buf b;                           /* per span having it: span index delta, value id */
    struct buf table;                       /* the distinct KeyValues */
    struct hmap vals;                       /* KeyValue -> id + 1 */
    uint32_t nvals, last;
};

struct tc_writer {
    struct buf col[TC_N];
    struct buf resids;                      /* TC_RES's per-span ids, until tc_finish */
    struct hmap dict, res, keys;            /* string -> id + 1 */
    uint32_t ndict, nres;
    struct tc_key_w *akeys;
    uint32_t nkeys, cap_keys;
    bool keys_over;                         /* more keys than columns: the page has none usable */
    int64_t prev_start;
    uint32_t nspans;
};
/* Adds a linked trace view. 0 or -ENOMEM. */
int tc_add(struct tc_writer *w, const struct tr_trace_view *v);
/* Completes the page's columns: w->col but TC_KEYS, and the key columns in
 * w->akeys[].b; then tc_keys_dir writes TC_KEYS from the key columns' compressed
 * sizes (clen[k]; NULL: stored as they are), which follow the other columns. */
void tc_finish(struct tc_writer *w);
void tc_keys_dir(struct tc_writer *w, const uint32_t *clen);
void tc_reset(struct tc_writer *w);
void tc_free(struct tc_writer *w);

/* Reads a page's frame, decompressed into out: frame < TC_N a column; else key
 * column frame - TC_N, at rel bytes past the end of the last column. */
typedef int (*tc_fetch_fn)(void *arg, int frame, uint64_t rel, uint32_t clen, uint32_t rlen, struct buf *out);

struct tc_key;

struct tc_page {
    tc_fetch_fn fetch;
    void *arg;
    uint32_t ntraces, nspans;
    uint32_t *first;                        /* ntraces + 1: each trace's first span */
    int32_t *parent;
    int64_t *start, *dur;
    uint32_t *kind, *status, *svc, *name, *smsg;
    struct strv *dict;
    uint32_t ndict;
    struct tc_key *keys;                    /* the key directory, once read */
    uint32_t nkeys;
    struct pb *res;                         /* per span, once read */
    bool keys_loaded, res_loaded;
    bool attrs_bad;                         /* an attribute column could not be read */
    uint32_t keys_read;                     /* key columns decompressed */
    struct buf raw[TC_N];
    uint64_t bytes;                         /* decompressed column bytes read */
    uint64_t gen;                           /* this load's number, for tr_trace_view.page_gen */
    struct {                                /* recent lookups: a query's key names */
        const char *name;
        int k;
    } cache[8];
    uint32_t ncache;
    /* the view being built */
    struct tr_lazy lazy;
    uint32_t v_first;
};
/* Reads the eager columns of a page. 0, or -EINVAL for columns that do not agree. */
int tc_page_load(struct tc_page *pg, tc_fetch_fn fetch, void *arg);
/* The linked view of the page's trace t (its id left to the caller). */
int tc_page_view(struct tc_page *pg, uint32_t t, struct tr_trace_view *v);
void tc_page_free(struct tc_page *pg);

/* ---- rendering ---- */

void tr_render_otlp_json(const struct tr_trace_view *v, struct buf *out, const char *batches_key);
void tr_render_jaeger(const struct tr_trace_view *v, struct buf *out);
void tr_render_zipkin(const struct tr_trace_view *v, struct buf *out);

/* ---- the store ---- */

struct tr_head_trace {
    uint8_t id[16];
    int64_t start, end;                     /* span times, ns */
    uint64_t last_ms;                       /* arrival of the newest span (monotonic) */
    uint32_t nspans;
    uint32_t wal_first;                     /* the oldest WAL segment holding its data */
    struct buf data;                        /* TracesData protobuf, one ResourceSpans per arrival */
};

struct tr_block;

struct tr_op {                              /* an operation seen: name, kind, newest start */
    char *name;
    uint32_t kind;
    int64_t last;
};
struct tr_service_info {
    char *name;
    int64_t last;
    struct hmap ops;                        /* name+kind -> struct tr_op */
};
struct tr_edge {                            /* service graph: client -> server */
    char *client, *server;
    uint64_t calls, errors;
    int64_t last;
};

struct tr_tenant {
    char *name;
    struct hmap head;                       /* trace id -> struct tr_head_trace */
    uint64_t head_bytes;
    struct hmap services;                   /* name -> struct tr_service_info */
    struct hmap edges;                      /* client\0server -> struct tr_edge */
    double tokens;
    uint64_t tokens_at;
};

struct tr_block {
    char *path;
    char *tenant;
    uint32_t seq, level;
    const uint8_t *map;                     /* the file, mapped */
    size_t size;
    uint32_t ntraces, npages;
    const uint8_t *index;                   /* ntraces entries of TR_IDX bytes, sorted by id */
    const uint8_t *pages;                   /* npages entries of TR_PG bytes */
    const uint8_t *blooms;
    const uint8_t *cols;                    /* npages x TC_N column entries; NULL in a "CTB1" block */
    uint64_t data_end;                      /* where the pages' frames end (the index begins) */
    int64_t min_start, max_end;
    uint64_t spans;
};
#define TR_IDX 48                           /* id 16, page 4, offset 4, len 4, spans 4, start 8, end 8 */
#define TR_PG 48                            /* file offset 8, clen 4, rlen 4, start 8, end 8, bloom off 8, bloom bits 4, first 4 */

struct tr_store {
    char *dir;
    const struct traces_conf *conf;
    struct hmap tenants;                    /* name -> struct tr_tenant */
    struct tr_block **blocks;
    size_t nblocks, cap_blocks;
    uint32_t next_seq;
    int wal_fd;
    uint32_t wal_seq, wal_oldest;           /* the segment appended to; the oldest kept */
    uint64_t wal_size;                      /* of the current segment */
    uint64_t wal_total;                     /* of all segments */
    uint64_t head_bytes, head_traces, head_spans;
    uint64_t oldest_complete_ms;
    /* counters */
    uint64_t spans_in, bytes_in, spans_refused, flushes, compactions, wal_errors, flush_errors;
    uint64_t search_skipped;                /* block traces a search's match rejected from columns */
    int last_flush_error;
};

struct tr_ingest_result {
    uint64_t accepted, rejected;
    int status;                             /* 0, or an HTTP status for the whole request */
    char msg[512];
    uint32_t retry_after;                   /* seconds, with 429/503 */
};

int tr_store_open(struct tr_store *st, const char *dir, const struct traces_conf *conf, char *err, size_t errlen);
void tr_store_close(struct tr_store *st);
/* Ingests an ExportTraceServiceRequest: validates, applies limits, writes the WAL,
 * then the head. Returns 0 (see res for partial rejection), or -EINVAL
 * (malformed: res->msg). */
int tr_store_ingest(struct tr_store *st, const char *tenant, const uint8_t *p, size_t n,
                    struct tr_ingest_result *res);
/* Housekeeping: flush complete traces, compaction, retention. */
void tr_store_tick(struct tr_store *st, bool all);
/* Gathers every part of a trace into out (TracesData bytes, concatenated).
 * Returns the number of parts found. */
int tr_store_get(struct tr_store *st, const char *tenant, const uint8_t id[16], struct buf *out);
/* How many places (blocks, the head) hold a part of the trace; reads no page. */
int tr_store_parts(struct tr_store *st, const char *tenant, const uint8_t id[16]);

/* Search: fn is called for each candidate trace (all its parts of one place: head
 * or one block page) overlapping [from, to] ns; tokens, when given, must all be
 * in a page's Bloom filter. fn returns nonzero to stop. */
struct tr_search {
    const char *tenant;
    int64_t from, to;
    const uint64_t *tokens;                 /* tr_token() hashes */
    size_t ntokens;
    int (*fn)(void *arg, const uint8_t id[16], const uint8_t *p, size_t n);
    /* Optional: a block's trace, as a view built from its search columns, before
     * fn; 0 skips the trace without reading its spans. It must accept every trace
     * fn would (the view holds intrinsics and span and resource attributes, and
     * is only a part of a trace that lies in several places). */
    int (*match)(void *arg, const struct tr_trace_view *v);
    void *arg;
    uint64_t inspected_bytes, inspected_traces;
    uint64_t skipped_traces;                /* rejected by match without reading their spans */
    uint64_t deadline_ms;                   /* monotonic; 0 none */
    bool timed_out;
};
int tr_store_search(struct tr_store *st, struct tr_search *q);
/* A Bloom token: kind "s" (service; a the name), "n" (span name), "a" (attribute
 * a with the value b as tr_kv_string writes it). */
uint64_t tr_token(const char *kind, struct strv a, struct strv b);
struct tr_tenant *tr_store_tenant(struct tr_store *st, const char *name, bool create);

/* ---- TraceQL ---- */

struct tq_query;
int tq_parse(const char *s, size_t n, struct tq_query **out, char *err, size_t errlen);
void tq_free(struct tq_query *q);
/* Evaluates q on a linked trace: the matching spans' indexes into *out (a spanset
 * per group for `by`), or none. Returns the number of spansets (0: no match). */
struct tq_spanset {
    int *spans;
    size_t n;
    double value;                           /* the last aggregate, for select/by output */
    bool has_value;
    struct buf by;                          /* "by" label text, if any */
};
struct tq_result {
    struct tq_spanset *sets;
    size_t n;
    char **select;                          /* attribute names from select(...) */
    size_t nselect;
};
int tq_eval(const struct tq_query *q, const struct tr_trace_view *v, struct tq_result *out);
void tq_result_free(struct tq_result *r);
/* Tokens every matching trace must hold (for the Bloom filters); into out. */
size_t tq_tokens(const struct tq_query *q, char **out, size_t max);
/* Reads a value of the attribute named like TraceQL (span.x, resource.x, .x or an
 * intrinsic) from a span, as a kv. */
bool tq_span_attr(const struct tr_trace_view *v, int i, const char *name, struct tr_kv *out, struct buf *tmp);

/* ---- the service ---- */

struct traces_svc {
    const struct service *svc;
    struct traces_conf *conf;
    struct service_ctx *sc;
    struct service_http_pool pool;
    struct httpd_conf hconf[TR_API_N];
    struct tr_store store;
    struct loop_timer tick;
    struct metric *m_spans, *m_refused, *m_queries, *m_query_errors;
    /* span metrics */
    struct metric *m_calls, *m_latency, *m_edges, *m_edge_failed, *m_edge_latency;
};

int traces__parse(struct cfg *c, const cfg_node *map, const char *path, struct service *svc);
void traces__free_conf(void *conf);
void traces__handle(struct httpd_req *r, void *arg);
void traces__span_metrics(struct traces_svc *s, const char *tenant, const uint8_t *p, size_t n);
/* Go duration ("4.5us", "1h2m") into ns; 0 or -EINVAL. */
int tr_parse_go_duration(const char *s, size_t n, int64_t *ns);
/* A trace id in hex (1 to 32 digits, left-padded with zeros) into 16 bytes. */
int tr_parse_trace_id(struct strv s, uint8_t id[16]);
void tr_hex_id(const uint8_t *id, size_t n, char *out);

#endif
