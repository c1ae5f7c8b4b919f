/* promql.h - the PromQL engine of role "metrics": a parser to a typed syntax
 * tree, a printer (for /api/v1/format_query), and an evaluator over the tsdb.
 *
 * The language and its results follow Prometheus 2.42 (the version Debian 12
 * ships and the compliance suite compares with): closed lookback windows
 * [t - 5m, t] for instant selectors and [t - range, t] for range selectors,
 * staleness markers ending a series, extrapolation in rate/increase/delta, and
 * the same errors for ambiguous vector matching.
 *
 * Evaluation is by whole ranges, as Prometheus does it: every node is evaluated
 * once for all steps of a query, giving each output series a dense array of
 * values with a presence bitmap. Series are read from the store one at a time
 * and dropped once their steps are computed, so a 24-hour range query holds one
 * series' raw samples at a time, not all of them.
 */
#ifndef CAIRN_PROMQL_H
#define CAIRN_PROMQL_H

#include "core/buf.h"
#include "tsdb.h"

#define PROMQL_MAX_DEPTH 200            /* nesting bound of the parser */
#define PROMQL_MAX_QUERY (64u << 10)    /* query text bound, bytes */
#define PROMQL_MAX_STEPS 11000          /* points per series of a range query */

enum promql_type { PROMQL_NONE, PROMQL_SCALAR, PROMQL_VECTOR, PROMQL_MATRIX, PROMQL_STRING };

enum promql_kind {
    PQ_NUM, PQ_STR, PQ_VSEL, PQ_MSEL, PQ_SUBQ, PQ_CALL, PQ_AGG, PQ_BIN, PQ_NEG, PQ_PAREN
};

/* Binary operators, in the lexer's order; the comparison ones are contiguous. */
enum promql_op {
    PQ_ADD, PQ_SUB, PQ_MUL, PQ_DIV, PQ_MOD, PQ_POW, PQ_ATAN2,
    PQ_EQLC, PQ_NEQ, PQ_GTR, PQ_LSS, PQ_GTE, PQ_LTE,
    PQ_AND, PQ_OR, PQ_UNLESS
};

enum promql_agg {
    PQ_SUM, PQ_AVG, PQ_MIN, PQ_MAX, PQ_COUNT, PQ_GROUP, PQ_STDDEV, PQ_STDVAR,
    PQ_TOPK, PQ_BOTTOMK, PQ_QUANTILE, PQ_COUNT_VALUES
};

enum promql_at { PQ_AT_NONE, PQ_AT_TIME, PQ_AT_START, PQ_AT_END };

struct promql_func;

/* One node of the syntax tree. Which fields mean something depends on kind:
 *   NUM: num.  STR: str.
 *   VSEL/MSEL: matchers (the metric name is an EQ matcher on __name__, first),
 *     name (as written, or NULL), offset, at/at_ms, and range for MSEL.
 *   SUBQ: kids[0], range, step (0 = the evaluation interval), offset, at.
 *   CALL: func, kids = arguments.
 *   AGG: agg, kids[0] = expression, kids[1] = parameter (topk, quantile,
 *     count_values), labels = by/without list, without.
 *   BIN: op, kids[0..1], bool_mod, matching (on, labels), card and include.
 *   NEG: kids[0] (unary minus).  PAREN: kids[0]. */
struct promql_node {
    enum promql_kind kind;
    enum promql_type type;
    int pos;                    /* byte offset in the query, for errors */
    double num;
    char *str;
    char *name;
    struct tsdb_matcher *m;
    size_t nm;
    int64_t range, step, offset, at_ms;
    enum promql_at at;
    const struct promql_func *func;
    enum promql_agg agg;
    enum promql_op op;
    bool bool_mod, without, matching, on;
    int card;                   /* 0 one-to-one, 1 many-to-one (group_left), 2 one-to-many */
    char **labels;              /* grouping or matching labels */
    size_t nlabels;
    char **include;             /* group_left/group_right labels */
    size_t ninclude;
    struct promql_node **kids;
    size_t nkids;
};

/* The text of a string-typed node: a string literal, or one in parentheses
 * (`label_replace(v, "dst", "$1", "src", ("(.*)"))` is valid PromQL). */
static inline const char *promql_str(const struct promql_node *n)
{
    while (n->kind == PQ_PAREN)
        n = n->kids[0];
    return n->str;
}

/* Parses a query. Returns the tree, or NULL with "LINE:COL: parse error: ..." in
 * err (an out-of-memory is reported the same way). */
struct promql_node *promql_parse(const char *q, char *err, size_t errlen);
void promql_free(struct promql_node *n);
/* Appends the canonical text of a tree (Prometheus's String()). */
void promql_format(const struct promql_node *n, struct buf *b);
/* Appends it as Prometheus's format_query does (parser.Prettify): nodes longer
 * than 100 characters split over indented lines. */
void promql_pretty(const struct promql_node *n, int level, struct buf *b);
const char *promql_type_name(enum promql_type t);

/* ---- evaluation ---- */

enum { PROMQL_EBAD = 1, PROMQL_EEXEC = 2, PROMQL_ETIMEOUT = 3, PROMQL_ECANCELED = 4 };

struct promql_opts {
    int64_t lookback_ms;        /* 5 minutes unless set */
    uint64_t max_samples;       /* 50,000,000 unless set */
    int64_t deadline_ns;        /* monotonic clock; 0 = none */
    int64_t default_step_ms;    /* subqueries without a step: the evaluation interval (1m) */
};

/* One output series: a dense array over the steps of the query, or (for a
 * matrix of raw samples: a range selector queried at an instant) n points with
 * their own times. */
struct promql_series {
    struct tsdb_labels labels;  /* owned */
    size_t n;                   /* points present */
    int64_t *t;                 /* ms */
    double *v;
};

struct promql_result {
    enum promql_type type;
    struct promql_series *s;    /* VECTOR and MATRIX */
    size_t ns;
    double scalar;              /* SCALAR (value at the single step) */
    char *str;                  /* STRING */
    int64_t t;                  /* evaluation time of an instant query */
    uint64_t samples;           /* peak samples held */
};

/* Evaluates at one instant (start == end, step 0) or over [start, end] in steps
 * of step (ms). A range query gives a MATRIX of dense series sorted by labels;
 * an instant query gives the expression's type. Returns 0 or a PROMQL_E* code
 * with a message in err. */
int promql_eval(const struct tsdb *db, const struct promql_node *n, int64_t start, int64_t end,
                int64_t step, const struct promql_opts *o, struct promql_result *res, char *err,
                size_t errlen);
void promql_result_free(struct promql_result *res);

/* Formats a float as Go's strconv.FormatFloat(v, 'f', -1, 64) (count_values
 * labels): shortest round-trip digits, no exponent; out holds 330 bytes. */
void promql_format_float(char *out, size_t outlen, double v);
/* Formats a sample value as Prometheus's JSON does: the same, but with an
 * exponent below 1e-6 and from 1e21 on; "NaN", "+Inf", "-Inf". */
void promql_format_value(char *out, size_t outlen, double v);
/* Go's FormatFloat(v, 'e', -1, 64) ("1e+00"), as alert values are shown. */
void promql_format_float_e(char *out, size_t outlen, double v);

/* ---- internal to the engine (promql_*.c) ---- */

struct promql_ev;
struct promql_vec;

/* A function's argument types (last one repeated when variadic < 0 means up to
 * |variadic| optional trailing arguments). */
struct promql_func {
    const char *name;
    enum promql_type args[6];
    int nargs;
    int variadic;               /* 0 none; -1 one optional; >0 unlimited repeats of the last */
    enum promql_type ret;
};
const struct promql_func *promql__func_lookup(const char *name, size_t len);

#endif
