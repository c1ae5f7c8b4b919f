/* prom_text.h - the Prometheus text exposition format 0.0.4 and OpenMetrics 1.0.
 *
 * A scrape body is parsed line by line into samples: the metric name, its labels
 * (escapes undone), the value (Go float syntax incl. NaN, +Inf, -Inf) and an
 * optional timestamp (milliseconds in the text format, seconds in OpenMetrics).
 * HELP/TYPE/UNIT comments are reported as metadata; an OpenMetrics exemplar
 * comes with its sample. Any syntax error stops the parse with "line N: message", as
 * Prometheus fails the whole scrape.
 */
#ifndef CAIRN_PROM_TEXT_H
#define CAIRN_PROM_TEXT_H

#include "tsdb.h"

#define PROM_MAX_LINE (1u << 20)

#define PROM_EXEMPLAR_LABELS 8

/* An OpenMetrics exemplar: a few labels (a trace id) and one observation. */
struct prom_exemplar {
    bool has;
    struct tsdb_label labels[PROM_EXEMPLAR_LABELS];
    size_t nlabels;
    double value;
    bool has_ts;
    int64_t ts_ms;
};

struct prom_sample {
    const char *name;                   /* NUL-terminated (in the parser's scratch) */
    struct tsdb_label labels[TSDB_MAX_LABELS];
    size_t nlabels;
    double value;
    bool has_ts;
    int64_t ts_ms;
    const char *series;                 /* the raw "name{labels}" text, a cache key */
    size_t series_len;
    struct prom_exemplar ex;            /* OpenMetrics only */
};

struct prom_meta {
    const char *name;
    const char *kind;                   /* "HELP", "TYPE" or "UNIT" */
    const char *text;
};

/* Returns 0 to go on, non-zero to stop (the parse returns it). */
typedef int (*prom_sample_cb)(void *arg, const struct prom_sample *s);
typedef void (*prom_meta_cb)(void *arg, const struct prom_meta *m);

/* label_limit: at most this many labels per sample (0 = TSDB_MAX_LABELS). */
int prom_text_parse(const char *text, size_t len, bool openmetrics, size_t label_limit,
                    prom_sample_cb cb, prom_meta_cb mcb, void *arg, char *err, size_t errlen);

/* Go's strconv.ParseFloat syntax (what Prometheus accepts for values). */
int prom_parse_float(const char *s, size_t n, double *out);
/* Formats a float as Prometheus does in text and JSON ("NaN", "+Inf", shortest). */
void prom_format_float(char *out, size_t outlen, double v);

#endif
