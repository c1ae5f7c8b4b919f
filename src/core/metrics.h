/* metrics.h - a Prometheus metrics registry with per-thread counters.
 *
 * Hot-path updates touch only the calling thread's own memory: each thread owns
 * an arena of doubles, and a metric (one label set of a family) owns a fixed slot
 * index in every arena. A scrape sums the slot over all arenas. Creating families
 * and label sets takes a mutex; callers look a label set up once and keep the
 * returned pointer, so the mutex is off the request path.
 *
 * Gauges support both styles: metric_add() deltas are per-thread and summed, and
 * metric_set() stores a shared base value that the deltas are added to.
 * Rendering follows the text exposition format 0.0.4 that promtool accepts, or
 * OpenMetrics 1.0 (with histogram exemplars) for a scraper that asks for it.
 */
#ifndef CAIRN_METRICS_H
#define CAIRN_METRICS_H

#include "core/buf.h"
#include "core/common.h"

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

#define METRICS_MAX_LABELS 8

struct metrics_registry;
struct metric_family;
struct metric;

struct metrics_registry *metrics_registry_new(void);
void metrics_registry_free(struct metrics_registry **reg);

/* Declares a family. labels is a NULL-terminated list of label names or NULL;
 * buckets (histograms only) are strictly increasing upper bounds without +Inf.
 * Declaring an existing name again returns the existing family when the type
 * matches, NULL otherwise (also NULL on bad names or out of memory). */
struct metric_family *metrics_family(struct metrics_registry *reg, enum metric_type type,
                                     const char *name, const char *help,
                                     const char *const *labels,
                                     const double *buckets, size_t nbuckets);
/* Returns the metric for the given label values (as many as the family has
 * labels), creating it on first use. NULL on out of memory. */
struct metric *metrics_get(struct metric_family *f, const char *const *values);
struct metric *metrics_get1(struct metric_family *f, const char *v1);
struct metric *metrics_get2(struct metric_family *f, const char *v1, const char *v2);

/* Shortcuts for families without labels. */
struct metric *metrics_counter(struct metrics_registry *reg, const char *name, const char *help);
struct metric *metrics_gauge(struct metrics_registry *reg, const char *name, const char *help);
struct metric *metrics_histogram(struct metrics_registry *reg, const char *name,
                                 const char *help, const double *buckets, size_t nbuckets);

/* A value computed at scrape time. */
typedef double (*metrics_value_fn)(void *arg);
int metrics_callback(struct metrics_registry *reg, enum metric_type type, const char *name,
                     const char *help, metrics_value_fn fn, void *arg);
/* process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... */
int metrics_add_process(struct metrics_registry *reg);

void metric_add(struct metric *m, double v);
static inline void metric_inc(struct metric *m) { metric_add(m, 1); }
void metric_set(struct metric *m, double v);
void metric_observe(struct metric *m, double v);
/* metric_observe, and the observation becomes its bucket's exemplar (the last one
 * wins), shown with trace_id in the OpenMetrics rendering. Takes the registry's
 * mutex: for observations that name a trace, not for every request. */
void metric_observe_exemplar(struct metric *m, double v, const char *trace_id);
/* Current value summed over threads (counters and gauges; histograms: count). */
double metric_value(const struct metric *m);

/* Default latency buckets in seconds. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_nbuckets;

int metrics_render(struct metrics_registry *reg, struct buf *out);
/* The same in the OpenMetrics 1.0 text format (what Prometheus asks for first):
 * counter families named without _total (a counter named otherwise is "unknown"),
 * histogram buckets with their exemplars, "# EOF" at the end. */
int metrics_render_openmetrics(struct metrics_registry *reg, struct buf *out);
/* Formats a sample value as Prometheus does (NaN, +Inf, -Inf, shortest form). */
void metrics_format_value(char *out, size_t outlen, double v);

#endif
