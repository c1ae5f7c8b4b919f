/* tsdb_matcher.h - label matchers (=, !=, =~, !~), as PromQL selectors use them:
 * regexes are PCRE2, fully anchored like Prometheus's RE2. Used by the store's
 * selection and by the on-disk blocks' postings; one thread per matcher (its match
 * data is reused). */
#ifndef CAIRN_TSDB_MATCHER_H
#define CAIRN_TSDB_MATCHER_H

#include <stdbool.h>
#include <stddef.h>

enum tsdb_match_op { TSDB_EQ, TSDB_NEQ, TSDB_RE, TSDB_NRE };
struct tsdb_matcher {
    char *name, *value;
    enum tsdb_match_op op;
    void *re;                   /* pcre2_code for the regex ops */
    void *md;                   /* its match data, reused by every match (one thread) */
};
/* Compiles a matcher's regex (fully anchored). Returns 0, or -EINVAL with err (and
 * nothing left to free). */
int tsdb_matcher_init(struct tsdb_matcher *m, const char *name, enum tsdb_match_op op,
                      const char *value, char *err, size_t errlen);
void tsdb_matcher_free(struct tsdb_matcher *m);
bool tsdb_matcher_matches(const struct tsdb_matcher *m, const char *value);

#endif
