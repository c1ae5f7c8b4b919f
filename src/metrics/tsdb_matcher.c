/* tsdb_matcher.c - label matchers. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tsdb_matcher.h"

#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tsdb_matcher_init(struct tsdb_matcher *m, const char *name, enum tsdb_match_op op,
                      const char *value, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->name = strdup(name);
    m->value = strdup(value);
    m->op = op;
    if (!m->name || !m->value) {
        snprintf(err, errlen, "out of memory");
        tsdb_matcher_free(m);
        return -ENOMEM;
    }
    if (op == TSDB_RE || op == TSDB_NRE) {
        /* RE2 semantics as Prometheus uses them: fully anchored */
        size_t n = strlen(value);
        char *pat = malloc(n + 8);
        if (!pat) {
            tsdb_matcher_free(m);
            return -ENOMEM;
        }
        snprintf(pat, n + 8, "^(?:%s)$", value);
        int ec;
        PCRE2_SIZE eo;
        m->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_DOTALL | PCRE2_UTF | PCRE2_DOLLAR_ENDONLY,
                              &ec, &eo, NULL);
        free(pat);
        if (!m->re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof(msg));
            snprintf(err, errlen, "invalid regular expression \"%s\": %s", value, (char *)msg);
            tsdb_matcher_free(m);
            return -EINVAL;
        }
        m->md = pcre2_match_data_create_from_pattern(m->re, NULL);
        if (!m->md) {
            snprintf(err, errlen, "out of memory");
            tsdb_matcher_free(m);
            return -ENOMEM;
        }
    }
    return 0;
}

void tsdb_matcher_free(struct tsdb_matcher *m)
{
    free(m->name);
    free(m->value);
    if (m->md)
        pcre2_match_data_free(m->md);
    if (m->re)
        pcre2_code_free(m->re);
    memset(m, 0, sizeof(*m));
}

bool tsdb_matcher_matches(const struct tsdb_matcher *m, const char *value)
{
    switch (m->op) {
    case TSDB_EQ:
        return strcmp(value, m->value) == 0;
    case TSDB_NEQ:
        return strcmp(value, m->value) != 0;
    case TSDB_RE:
    case TSDB_NRE: {
        int r = pcre2_match(m->re, (PCRE2_SPTR)value, strlen(value), 0, 0, m->md, NULL);
        return (r >= 0) == (m->op == TSDB_RE);
    }
    }
    return false;
}
