/* relabel.h - Prometheus relabeling (relabel_configs, metric_relabel_configs), shared
 * by the metrics role and the log agent (Promtail reads the same rules).
 *
 * Each rule joins its source_labels' values with the separator, matches the
 * result against the fully anchored regex, and then, by action: replace (sets
 * target_label to the expanded replacement when the regex matches), keep and drop
 * (the whole label set), labelmap (copies labels whose name matches to the
 * expanded replacement name), labeldrop and labelkeep (by label name), hashmod
 * (target_label = md5 of the joined value mod modulus, as Prometheus computes it).
 */
#ifndef CAIRN_RELABEL_H
#define CAIRN_RELABEL_H

#include "core/config.h"

#include <stdbool.h>
#include <stdint.h>

enum relabel_action {
    RELABEL_REPLACE, RELABEL_KEEP, RELABEL_DROP, RELABEL_LABELMAP, RELABEL_LABELDROP,
    RELABEL_LABELKEEP, RELABEL_HASHMOD, RELABEL_LOWERCASE, RELABEL_UPPERCASE,
};

struct relabel_rule {
    char **source;
    size_t nsource;
    char *separator;
    char *target;
    char *regex_text;
    void *re;                   /* pcre2_code */
    uint64_t modulus;
    char *replacement;
    enum relabel_action action;
};

/* [a-zA-Z_][a-zA-Z0-9_]*, Prometheus's label names. */
bool relabel_label_name_ok(const char *s);

/* Parses a list of rules from the config node. */
int relabel_parse(struct cfg *c, const cfg_node *n, const char *path,
                       struct relabel_rule **out, size_t *count);
void relabel_free(struct relabel_rule *r, size_t n);

/* A mutable label set for relabeling: owned strings. */
#define RELABEL_MAX_LABELS 176

struct relabel_label {
    const char *name, *value;
};

struct relabel_set {
    struct relabel_label l[RELABEL_MAX_LABELS];
    size_t n;
};
void relabel_set_put(struct relabel_set *s, const char *name, const char *value);
const char *relabel_set_get(const struct relabel_set *s, const char *name);
void relabel_set_clear(struct relabel_set *s);

/* Applies the rules; returns false when the set is dropped. */
bool relabel_apply(const struct relabel_rule *r, size_t n, struct relabel_set *s);

#endif
