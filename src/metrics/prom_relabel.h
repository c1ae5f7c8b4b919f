/* prom_relabel.h - Prometheus relabeling (relabel_configs, metric_relabel_configs).
 *
 * Each rule joins its source_labels' values with the separator, matches the
 * result against the fully anchored regex, and then, by action: replace (sets
 * target_label to the expanded replacement when the regex matches), keep and drop
 * (the whole label set), labelmap (copies labels whose name matches to the
 * expanded replacement name), labeldrop and labelkeep (by label name), hashmod
 * (target_label = md5 of the joined value mod modulus, as Prometheus computes it).
 */
#ifndef CAIRN_PROM_RELABEL_H
#define CAIRN_PROM_RELABEL_H

#include "core/config.h"
#include "tsdb.h"

enum prom_relabel_action {
    RELABEL_REPLACE, RELABEL_KEEP, RELABEL_DROP, RELABEL_LABELMAP, RELABEL_LABELDROP,
    RELABEL_LABELKEEP, RELABEL_HASHMOD, RELABEL_LOWERCASE, RELABEL_UPPERCASE,
};

struct prom_relabel {
    char **source;
    size_t nsource;
    char *separator;
    char *target;
    char *regex_text;
    void *re;                   /* pcre2_code */
    uint64_t modulus;
    char *replacement;
    enum prom_relabel_action action;
};

/* [a-zA-Z_][a-zA-Z0-9_]*, Prometheus's label names. */
bool prom_label_name_ok(const char *s);

/* Parses a list of rules from the config node. */
int prom_relabel_parse(struct cfg *c, const cfg_node *n, const char *path,
                       struct prom_relabel **out, size_t *count);
void prom_relabel_free(struct prom_relabel *r, size_t n);

/* A mutable label set for relabeling: owned strings. */
struct prom_lset {
    struct tsdb_label l[TSDB_MAX_LABELS + 48];
    size_t n;
};
void prom_lset_set(struct prom_lset *s, const char *name, const char *value);
const char *prom_lset_get(const struct prom_lset *s, const char *name);
void prom_lset_clear(struct prom_lset *s);

/* Applies the rules; returns false when the set is dropped. */
bool prom_relabel_apply(const struct prom_relabel *r, size_t n, struct prom_lset *s);

#endif
