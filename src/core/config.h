/* config.h - YAML loading with located, collected errors.
 *
 * A struct cfg holds one parsed YAML document (libyaml's node graph keeps each
 * node's line and column) and the list of errors found so far. Typed getters
 * check a node and either fill the caller's value or record an error of the form
 *
 *     FILE:LINE:COL: KEY.PATH: expected a duration like 500ms, 2s, 5m, got "5 minutes"
 *
 * and return -EINVAL; callers keep going so that one run reports every error it
 * can find. Mappings are checked against the list of allowed keys: unknown keys
 * and duplicate keys are errors.
 */
#ifndef CAIRN_CONFIG_H
#define CAIRN_CONFIG_H

#include "core/common.h"
#include "core/net.h"
#include <yaml.h>

typedef yaml_node_t cfg_node;

struct cfg_errors {
    char **msgs;
    size_t n, cap;
};

struct cfg {
    char *file;             /* shown in messages */
    yaml_document_t doc;
    bool have_doc;
    struct cfg_errors *errs;
};

#define CFG_MAX_FILE_SIZE (16u << 20)
#define CFG_MAX_DEPTH 64

/* Parses YAML text. A syntax error is recorded (with its location) and returned
 * as -EINVAL; the errors list must outlive the cfg. */
int cfg_load_string(struct cfg *c, const char *name, const char *text, size_t len,
                    struct cfg_errors *errs);
/* Reads a whole file (at most CFG_MAX_FILE_SIZE bytes) into a malloc'd,
 * NUL-terminated string; errors are recorded. */
int cfg_read_file(const char *path, char **text, size_t *len, struct cfg_errors *errs);
/* Reads and parses a file (at most CFG_MAX_FILE_SIZE bytes). */
int cfg_load_file(struct cfg *c, const char *path, struct cfg_errors *errs);
void cfg_free(struct cfg *c);
cfg_node *cfg_root(struct cfg *c);

void cfg_errors_free(struct cfg_errors *e);
void cfg_errors_add(struct cfg_errors *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records "file:line:col: path: message". Returns -EINVAL for convenience. */
int cfg_error(struct cfg *c, const cfg_node *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline bool cfg_is_map(const cfg_node *n) { return n && n->type == YAML_MAPPING_NODE; }
static inline bool cfg_is_seq(const cfg_node *n) { return n && n->type == YAML_SEQUENCE_NODE; }
static inline bool cfg_is_scalar(const cfg_node *n) { return n && n->type == YAML_SCALAR_NODE; }
/* Scalar text (NULL for non-scalars). */
const char *cfg_scalar(const cfg_node *n);
/* True for a plain (unquoted) scalar that YAML reads as null: "", "~", "null". */
bool cfg_is_null(const cfg_node *n);

/* Checks a mapping against allowed (NULL-terminated); out[i] gets the value node
 * of allowed[i] or NULL. Unknown and duplicate keys are recorded as errors.
 * Returns 0 when the node is a mapping (even with bad keys), -EINVAL otherwise. */
int cfg_map_fields(struct cfg *c, const cfg_node *map, const char *path,
                   const char *const *allowed, cfg_node **out);
/* Iteration over a mapping's pairs and a sequence's items. */
size_t cfg_len(const cfg_node *n);
cfg_node *cfg_map_key(struct cfg *c, const cfg_node *map, size_t i);
cfg_node *cfg_map_value(struct cfg *c, const cfg_node *map, size_t i);
cfg_node *cfg_seq_item(struct cfg *c, const cfg_node *seq, size_t i);

/* Typed getters: 0 on success, -EINVAL after recording an error. */
int cfg_get_string(struct cfg *c, const cfg_node *n, const char *path, char **out);
int cfg_get_int(struct cfg *c, const cfg_node *n, const char *path, long long min,
                long long max, long long *out);
int cfg_get_float(struct cfg *c, const cfg_node *n, const char *path, double min, double max,
                  double *out);
int cfg_get_bool(struct cfg *c, const cfg_node *n, const char *path, bool *out);
int cfg_get_duration(struct cfg *c, const cfg_node *n, const char *path, uint64_t *ms);
int cfg_get_size(struct cfg *c, const cfg_node *n, const char *path, uint64_t *bytes);
int cfg_get_addr(struct cfg *c, const cfg_node *n, const char *path, struct net_addr *out);
/* "host:port" with a literal IP (0, out filled) or a host name (1: out is left for
 * the caller to look up when it starts, with net_resolve, so that checking a file
 * needs no DNS); the text goes to name (the server's name in metrics and logs). */
int cfg_get_hostport(struct cfg *c, const cfg_node *n, const char *path, struct net_addr *out, char *name,
                     size_t namelen);
int cfg_get_cidr(struct cfg *c, const cfg_node *n, const char *path, struct net_cidr *out);
/* A sequence (or a single scalar, read as a one-item list) of strings. */
int cfg_get_string_list(struct cfg *c, const cfg_node *n, const char *path, char ***out,
                        size_t *count);
void cfg_free_string_list(char **list, size_t count);

/* Key paths for messages ("services.x.routes[2]"); a path cut short only shortens
 * a message. CFG_PATH(buf, fmt, ...) formats into a char array. */
void cfg_pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define CFG_PATH(buf, fmt, ...) cfg_pathf(buf, sizeof(buf), fmt, __VA_ARGS__)

/* Pure parsers, also used by the getters.
 * Durations are Prometheus-style: one or more <integer><unit> with units
 * y w d h m s ms in decreasing order ("1h30m", "500ms", "15d"), or "0". */
int cfg_parse_duration(const char *s, uint64_t *ms);
/* Sizes: an integer with an optional unit B, KiB, MiB, GiB, TiB (powers of 1024)
 * or KB, MB, GB, TB (powers of 1000). */
int cfg_parse_size(const char *s, uint64_t *bytes);

#endif
