/* logql.h - LogQL, Loki's query language (the logs role answers it; the log agent's
 * match stage and, later, the console read it): the parsed form of a query, the parser,
 * and the log pipeline that runs a query's stages over one line.
 *
 * A query is a log query (a stream selector and its pipeline: line filters,
 * parsers, label filters, formatters) or a metric query built from range
 * aggregations over log queries, vector aggregations, binary operators, numbers,
 * vector() and label_replace(). Everything a parsed query owns lives in its arena
 * and goes with lq_query_free().
 */
#ifndef CAIRN_LOGQL_H
#define CAIRN_LOGQL_H

#include "core/buf.h"
#include "core/common.h"

#include <stdbool.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define LQ_MAX_QUERY 65536          /* bytes of query text */
#define LQ_MAX_DEPTH 64             /* nesting of expressions */
#define LQ_MAX_LABELS 256           /* labels of one entry after its pipeline */

struct lq_arena;

/* ---- labels ---- */

struct lq_label {
    const char *name, *value;
};

/* A label set sorted by name; names unique. */
struct lq_labels {
    struct lq_label *v;
    int n;
};

/* ---- stream selectors ---- */

enum lq_mop { LQ_M_EQ, LQ_M_NEQ, LQ_M_RE, LQ_M_NRE };

struct lq_matcher {
    const char *name, *value;
    enum lq_mop op;
    pcre2_code *re;                 /* anchored, for =~ and !~ */
};

bool lq_matcher_matches(const struct lq_matcher *m, const char *value, size_t n);
/* A match block for pcre2_match, one per thread, kept for the thread's life: regexes
 * run per log line, and allocating one per match was the cost of a match. */
pcre2_match_data *lq_match_data(void);

/* ---- the pipeline ---- */

enum lq_filter_op { LQ_F_CONTAINS, LQ_F_NOT_CONTAINS, LQ_F_RE, LQ_F_NOT_RE, LQ_F_PATTERN, LQ_F_NOT_PATTERN };

struct lq_ipr {                     /* an ip("...") argument: an address, a CIDR or a range */
    int family;                     /* AF_INET or AF_INET6 */
    uint8_t lo[16], hi[16];
};

struct lq_pattern;                  /* a compiled pattern (`<name> literal <_>`) */

struct lq_alt {                     /* one alternative of a line filter (`or`) */
    const char *s;
    size_t n;
    pcre2_code *re;
    struct lq_pattern *pat;
    bool is_ip;
    struct lq_ipr ip;
};

enum lq_lf_kind { LQ_LF_AND, LQ_LF_OR, LQ_LF_STR, LQ_LF_NUM, LQ_LF_DUR, LQ_LF_BYTES, LQ_LF_IP };
enum lq_cmp { LQ_C_EQ, LQ_C_NE, LQ_C_GT, LQ_C_GE, LQ_C_LT, LQ_C_LE };

struct lq_lfilter {                 /* a label filter expression */
    enum lq_lf_kind kind;
    struct lq_lfilter *l, *r;       /* AND, OR */
    struct lq_matcher m;            /* STR (and the name of the others) */
    enum lq_cmp cmp;
    double num;                     /* NUM, DUR (seconds), BYTES */
    int64_t dur_ns;                 /* DUR, exactly */
    struct lq_ipr ip;
};

enum lq_stage_kind {
    LQ_S_LINE_FILTER, LQ_S_JSON, LQ_S_LOGFMT, LQ_S_REGEXP, LQ_S_PATTERN, LQ_S_UNPACK,
    LQ_S_LABEL_FILTER, LQ_S_LINE_FORMAT, LQ_S_LABEL_FORMAT, LQ_S_DROP, LQ_S_KEEP, LQ_S_DECOLORIZE,
};

struct lq_param {                   /* json a="x.y", logfmt a="b", label_format a=b / a="{{..}}",
                                       drop a / a="v", keep a */
    const char *name;
    const char *value;              /* a path, a source label, a template, or NULL */
    bool is_template;
    struct lq_matcher m;            /* drop/keep with a value */
    bool has_matcher;
    struct lq_tmpl *tmpl;
    struct lq_jpath *jpath;         /* json with parameters: the compiled path */
};

struct lq_tmpl;
struct lq_jpath;

struct lq_stage {
    enum lq_stage_kind kind;
    enum lq_filter_op fop;          /* LINE_FILTER */
    struct lq_alt *alts;
    int nalts;
    struct lq_lfilter *lf;          /* LABEL_FILTER */
    pcre2_code *re;                 /* REGEXP */
    struct lq_pattern *pat;         /* PATTERN */
    struct lq_tmpl *tmpl;           /* LINE_FORMAT */
    struct lq_param *params;        /* JSON, LOGFMT, LABEL_FORMAT, DROP, KEEP */
    int nparams;
    bool strict, keep_empty;        /* LOGFMT */
    const char *src;                /* REGEXP, PATTERN, LINE_FORMAT: the text as written */
};

enum lq_conv { LQ_CONV_NONE, LQ_CONV_DURATION, LQ_CONV_BYTES };

/* ---- metric expressions ---- */

enum lq_node_kind { LQ_N_LOG, LQ_N_RANGE, LQ_N_VAGG, LQ_N_BIN, LQ_N_NUM, LQ_N_VECTOR, LQ_N_LABEL_REPLACE };

enum lq_range_fn {
    LQ_R_COUNT, LQ_R_RATE, LQ_R_BYTES, LQ_R_BYTES_RATE, LQ_R_ABSENT, LQ_R_SUM, LQ_R_AVG, LQ_R_MIN,
    LQ_R_MAX, LQ_R_STDVAR, LQ_R_STDDEV, LQ_R_QUANTILE, LQ_R_FIRST, LQ_R_LAST, LQ_R_RATE_COUNTER,
};

enum lq_vagg_op {
    LQ_V_SUM, LQ_V_AVG, LQ_V_MIN, LQ_V_MAX, LQ_V_COUNT, LQ_V_STDDEV, LQ_V_STDVAR, LQ_V_TOPK,
    LQ_V_BOTTOMK, LQ_V_SORT, LQ_V_SORT_DESC, LQ_V_APPROX_TOPK,
};

enum lq_binop {
    LQ_B_OR, LQ_B_AND, LQ_B_UNLESS, LQ_B_EQ, LQ_B_NE, LQ_B_GT, LQ_B_GE, LQ_B_LT, LQ_B_LE,
    LQ_B_ADD, LQ_B_SUB, LQ_B_MUL, LQ_B_DIV, LQ_B_MOD, LQ_B_POW,
};

struct lq_grouping {
    bool present, without;
    const char **names;
    int n;
};

struct lq_node {
    enum lq_node_kind kind;
    /* LOG */
    struct lq_matcher *matchers;
    int nmatchers;
    struct lq_stage *stages;
    int nstages;
    bool unwrap;
    const char *unwrap_label;
    enum lq_conv unwrap_conv;
    struct lq_stage *post;          /* label filters after unwrap */
    int npost;
    /* RANGE */
    enum lq_range_fn rfn;
    double param;                   /* quantile; VAGG: k */
    bool has_param;
    int64_t range_ns, offset_ns;
    struct lq_grouping grp;         /* RANGE, VAGG */
    struct lq_node *log;            /* RANGE */
    /* VAGG */
    enum lq_vagg_op vop;
    struct lq_node *arg;            /* VAGG, LABEL_REPLACE */
    /* BIN */
    enum lq_binop bop;
    bool ret_bool;
    bool on, ignoring;              /* vector matching */
    const char **match_labels;
    int nmatch;
    int group;                      /* 0, 1: group_left, 2: group_right */
    const char **include;
    int ninclude;
    struct lq_node *lhs, *rhs;
    /* NUM, VECTOR */
    double num;
    /* LABEL_REPLACE */
    const char *dst, *repl, *src;
    pcre2_code *re;
    const char *re_src;
};

struct lq_query {
    struct lq_arena *arena;
    struct lq_node *root;
    pcre2_code **codes;             /* every compiled regex, freed with the query */
    int ncodes, capcodes;
    struct lq_tmpl **tmpls;
    int ntmpls, captmpls;
};

/* Parses text. 0 with *out set, or -EINVAL with a message in the style of Loki's
 * ("parse error at line 1, col 5: syntax error: ...") in err. */
int lq_parse(const char *text, size_t len, struct lq_query **out, char *err, size_t errlen);
void lq_query_free(struct lq_query **q);
/* True for a metric query (anything but a bare log query). */
bool lq_is_metric(const struct lq_query *q);
/* Appends the query in its canonical form (format_query). */
void lq_format(struct buf *b, const struct lq_node *n);

/* ---- running a pipeline ---- */

/* The labels an entry carries through its pipeline: the stream's, then what
 * parsers extracted, then what formatters changed. Strings live in the builder's
 * scratch memory, reset per entry. */
struct lq_lb {
    struct lq_labels base;          /* the stream's labels */
    const struct lq_labels *meta;   /* the entry's structured metadata */
    struct lq_label *v;             /* the current set, unsorted */
    int n, cap;
    char *mem;                      /* scratch for strings made while processing */
    size_t used, memcap;
    char **big;                     /* strings larger than the scratch */
    int nbig, capbig;
    const char *err, *err_details;
    struct buf line;                /* a line rewritten by line_format or unpack */
    struct buf tmp;
};

void lq_lb_init(struct lq_lb *lb);
void lq_lb_free(struct lq_lb *lb);
/* Starts an entry of a stream whose labels are base. */
void lq_lb_reset(struct lq_lb *lb, const struct lq_labels *base);
/* Adds an entry's structured metadata (a name the stream has becomes
 * NAME_extracted; parsers then treat these names as the stream's). */
void lq_lb_add_meta(struct lq_lb *lb, const struct lq_labels *meta);
const char *lq_lb_get(const struct lq_lb *lb, const char *name, size_t *n);
int lq_lb_set(struct lq_lb *lb, const char *name, size_t nn, const char *value, size_t vn);
void lq_lb_del(struct lq_lb *lb, const char *name);
/* The current labels (with __error__ and __error_details__ when set), sorted,
 * into out (storage for up to LQ_MAX_LABELS). Returns the count. */
int lq_lb_labels(struct lq_lb *lb, struct lq_label *out);

/* Runs stages over one line (line, *n) at ts; returns false when the entry is
 * filtered out. The line may be replaced (*line, *n point into lb then). */
bool lq_pipeline_run(const struct lq_stage *st, int nst, int64_t ts, const char **line, size_t *n,
                     struct lq_lb *lb);
/* True when no stage of the pipeline can change labels or the line (line filters
 * only): the entry's labels are its stream's. */
bool lq_pipeline_filters_only(const struct lq_stage *st, int nst);

/* Conversions with Go's messages ("time: invalid duration \"x\"", ...): 0 or -EINVAL
 * with the message in err. */
int lq_parse_go_duration(const char *s, size_t n, double *seconds, char *err, size_t errlen);
int lq_parse_bytes(const char *s, size_t n, double *out, char *err, size_t errlen);
int lq_parse_float(const char *s, size_t n, double *out, char *err, size_t errlen);

/* Arena for a query's nodes and strings. */
void *lq_alloc(struct lq_arena *a, size_t n);
char *lq_strndup(struct lq_arena *a, const char *s, size_t n);

/* Internal to the LogQL files: templates and JSON paths. */
struct lq_tmpl *lq__tmpl_compile(const char *text, char *err, size_t errlen);
void lq__tmpl_free(struct lq_tmpl *t);
int lq__tmpl_exec(struct lq_tmpl *t, struct lq_lb *lb, const char *line, size_t n, int64_t ts,
                  struct buf *out);
struct lq_pattern *lq__pattern_compile(struct lq_arena *a, const char *s, size_t n, bool filter,
                                       char *err, size_t errlen);
bool lq__pattern_match(const struct lq_pattern *p, const char *line, size_t n, struct lq_lb *lb);
bool lq__ip_parse(const char *s, size_t n, struct lq_ipr *out);
bool lq__ip_in(const struct lq_ipr *r, const char *s, size_t n);
bool lq__line_has_ip(const struct lq_ipr *r, const char *line, size_t n);

#endif
