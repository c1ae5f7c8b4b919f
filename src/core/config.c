/* config.c - YAML documents, located errors, typed getters. */
#include "core/config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

void cfg_errors_add(struct cfg_errors *e, const char *fmt, ...)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 8;
        char **m = realloc(e->msgs, cap * sizeof(*m));
        if (!m)
            return;
        e->msgs = m;
        e->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) >= 0)
        e->msgs[e->n++] = s;
    va_end(ap);
}

void cfg_errors_free(struct cfg_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->msgs[i]);
    free(e->msgs);
    memset(e, 0, sizeof(*e));
}

int cfg_error(struct cfg *c, const cfg_node *n, const char *path, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t line = n ? n->start_mark.line + 1 : 1, col = n ? n->start_mark.column + 1 : 1;
    if (path && *path)
        cfg_errors_add(c->errs, "%s:%zu:%zu: %s: %s", c->file, line, col, path, msg);
    else
        cfg_errors_add(c->errs, "%s:%zu:%zu: %s", c->file, line, col, msg);
    return -EINVAL;
}

static int check_depth(struct cfg *c, cfg_node *n, int depth)
{
    if (depth > CFG_MAX_DEPTH)
        return cfg_error(c, n, NULL, "nesting deeper than %d levels", CFG_MAX_DEPTH);
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
            if (check_depth(c, yaml_document_get_node(&c->doc, *it), depth + 1))
                return -EINVAL;
    } else if (n->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            cfg_node *k = yaml_document_get_node(&c->doc, p->key);
            if (k->type != YAML_SCALAR_NODE)
                return cfg_error(c, k, NULL, "mapping keys must be plain strings");
            if (check_depth(c, yaml_document_get_node(&c->doc, p->value), depth + 1))
                return -EINVAL;
        }
    }
    return 0;
}

int cfg_load_string(struct cfg *c, const char *name, const char *text, size_t len,
                    struct cfg_errors *errs)
{
    memset(c, 0, sizeof(*c));
    c->errs = errs;
    c->file = strdup(name ? name : "<config>");
    if (!c->file)
        return -ENOMEM;
    if (len > CFG_MAX_FILE_SIZE) {
        cfg_errors_add(errs, "%s: file larger than %u bytes", c->file, CFG_MAX_FILE_SIZE);
        return -EINVAL;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return -ENOMEM;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, &c->doc)) {
        cfg_errors_add(errs, "%s:%zu:%zu: YAML syntax error: %s%s%s", c->file,
                       p.problem_mark.line + 1, p.problem_mark.column + 1,
                       p.problem ? p.problem : "invalid YAML",
                       p.context ? " " : "", p.context ? p.context : "");
        yaml_parser_delete(&p);
        return -EINVAL;
    }
    c->have_doc = true;
    /* Only one document per file. */
    yaml_document_t extra;
    if (yaml_parser_load(&p, &extra)) {
        bool more = yaml_document_get_root_node(&extra) != NULL;
        yaml_node_t *root = yaml_document_get_root_node(&extra);
        size_t line = root ? root->start_mark.line + 1 : 0;
        yaml_document_delete(&extra);
        if (more) {
            cfg_errors_add(errs, "%s:%zu:1: only one YAML document is allowed", c->file, line);
            yaml_parser_delete(&p);
            return -EINVAL;
        }
    }
    yaml_parser_delete(&p);
    cfg_node *root = cfg_root(c);
    if (!root) {
        cfg_errors_add(errs, "%s:1:1: the file is empty", c->file);
        return -EINVAL;
    }
    return check_depth(c, root, 0);
}

int cfg_read_file(const char *path, char **text, size_t *len, struct cfg_errors *errs)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = -errno;
        cfg_errors_add(errs, "%s: cannot open: %s", path, strerror(errno));
        return e;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > (off_t)CFG_MAX_FILE_SIZE) {
        fclose(f);
        cfg_errors_add(errs, "%s: file larger than %u bytes", path, CFG_MAX_FILE_SIZE);
        return -EINVAL;
    }
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, n = 0;
    char *t = malloc(cap + 1);
    if (!t) {
        fclose(f);
        return -ENOMEM;
    }
    for (;;) {
        size_t r = fread(t + n, 1, cap - n, f);
        n += r;
        if (n > CFG_MAX_FILE_SIZE) {
            free(t);
            fclose(f);
            cfg_errors_add(errs, "%s: file larger than %u bytes", path, CFG_MAX_FILE_SIZE);
            return -EINVAL;
        }
        if (n < cap)
            break;
        char *bigger = realloc(t, cap * 2 + 1);
        if (!bigger) {
            free(t);
            fclose(f);
            return -ENOMEM;
        }
        t = bigger;
        cap *= 2;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(t);
        cfg_errors_add(errs, "%s: read error", path);
        return -EIO;
    }
    t[n] = '\0';
    *text = t;
    *len = n;
    return 0;
}

int cfg_load_file(struct cfg *c, const char *path, struct cfg_errors *errs)
{
    char *text;
    size_t n;
    memset(c, 0, sizeof(*c));
    int r = cfg_read_file(path, &text, &n, errs);
    if (r)
        return r;
    r = cfg_load_string(c, path, text, n, errs);
    free(text);
    return r;
}

void cfg_free(struct cfg *c)
{
    if (c->have_doc)
        yaml_document_delete(&c->doc);
    free(c->file);
    memset(c, 0, sizeof(*c));
}

cfg_node *cfg_root(struct cfg *c)
{
    return c->have_doc ? yaml_document_get_root_node(&c->doc) : NULL;
}

const char *cfg_scalar(const cfg_node *n)
{
    return cfg_is_scalar(n) ? (const char *)n->data.scalar.value : NULL;
}

bool cfg_is_null(const cfg_node *n)
{
    if (!cfg_is_scalar(n) || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = cfg_scalar(n);
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

size_t cfg_len(const cfg_node *n)
{
    if (cfg_is_map(n))
        return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (cfg_is_seq(n))
        return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    return 0;
}

cfg_node *cfg_map_key(struct cfg *c, const cfg_node *map, size_t i)
{
    return yaml_document_get_node(&c->doc, map->data.mapping.pairs.start[i].key);
}

cfg_node *cfg_map_value(struct cfg *c, const cfg_node *map, size_t i)
{
    return yaml_document_get_node(&c->doc, map->data.mapping.pairs.start[i].value);
}

cfg_node *cfg_seq_item(struct cfg *c, const cfg_node *seq, size_t i)
{
    return yaml_document_get_node(&c->doc, seq->data.sequence.items.start[i]);
}

int cfg_map_fields(struct cfg *c, const cfg_node *map, const char *path,
                   const char *const *allowed, cfg_node **out)
{
    size_t na = 0;
    while (allowed[na])
        out[na++] = NULL;
    if (!cfg_is_map(map))
        return cfg_error(c, map, path, "expected a mapping of keys to values");
    size_t n = cfg_len(map);
    for (size_t i = 0; i < n; i++) {
        cfg_node *k = cfg_map_key(c, map, i);
        const char *key = cfg_scalar(k);
        size_t a = 0;
        while (a < na && strcmp(allowed[a], key) != 0)
            a++;
        if (a == na) {
            char list[512] = "";
            size_t o = 0;
            for (size_t j = 0; j < na && o < sizeof(list) - 1; j++)
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", j ? ", " : "", allowed[j]);
            cfg_error(c, k, path, "unknown key \"%s\" (expected one of: %s)", key, list);
            continue;
        }
        if (out[a]) {
            cfg_error(c, k, path, "duplicate key \"%s\" (first at line %zu)", key,
                      out[a]->start_mark.line + 1);
            continue;
        }
        out[a] = cfg_map_value(c, map, i);
    }
    return 0;
}

static const char *describe(const cfg_node *n)
{
    if (cfg_is_map(n))
        return "a mapping";
    if (cfg_is_seq(n))
        return "a list";
    return "?";
}

#define WANT_SCALAR(c, n, path, what)                                                      \
    do {                                                                                   \
        if (!cfg_is_scalar(n))                                                             \
            return cfg_error(c, n, path, "expected %s, got %s", what, describe(n));        \
    } while (0)

int cfg_get_string(struct cfg *c, const cfg_node *n, const char *path, char **out)
{
    WANT_SCALAR(c, n, path, "a string");
    char *s = strdup(cfg_scalar(n));
    if (!s)
        return cfg_error(c, n, path, "out of memory");
    free(*out);
    *out = s;
    return 0;
}

int cfg_get_int(struct cfg *c, const cfg_node *n, const char *path, long long min,
                long long max, long long *out)
{
    WANT_SCALAR(c, n, path, "an integer");
    const char *s = cfg_scalar(n);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || (s[0] == '+'))
        return cfg_error(c, n, path, "expected an integer, got \"%s\"", s);
    if (v < min || v > max)
        return cfg_error(c, n, path, "expected an integer from %lld to %lld, got %lld", min, max, v);
    *out = v;
    return 0;
}

int cfg_get_float(struct cfg *c, const cfg_node *n, const char *path, double min, double max,
                  double *out)
{
    WANT_SCALAR(c, n, path, "a number");
    const char *s = cfg_scalar(n);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || isnan(v) || isinf(v) || strchr(s, 'x') || strchr(s, 'X'))
        return cfg_error(c, n, path, "expected a number, got \"%s\"", s);
    if (v < min || v > max)
        return cfg_error(c, n, path, "expected a number from %g to %g, got %g", min, max, v);
    *out = v;
    return 0;
}

int cfg_get_bool(struct cfg *c, const cfg_node *n, const char *path, bool *out)
{
    WANT_SCALAR(c, n, path, "true or false");
    const char *s = cfg_scalar(n);
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        *out = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        *out = false;
    else
        return cfg_error(c, n, path, "expected true or false, got \"%s\"", s);
    return 0;
}

int cfg_parse_duration(const char *s, uint64_t *ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {
        { "y", 365ull * 86400000 }, { "w", 7ull * 86400000 }, { "d", 86400000 },
        { "h", 3600000 }, { "ms", 1 }, { "m", 60000 }, { "s", 1000 },
    };
    /* order index used to enforce decreasing units: y w d h m s ms */
    static const int rank[] = { 0, 1, 2, 3, 6, 4, 5 };
    if (!s || !*s)
        return -EINVAL;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    uint64_t total = 0;
    int last_rank = -1;
    const char *p = s;
    while (*p) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        uint64_t v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 12)
                return -EINVAL;
            v = v * 10 + (uint64_t)(*p++ - '0');
        }
        size_t u = 0;
        for (; u < ARRAY_SIZE(units); u++) {
            size_t l = strlen(units[u].unit);
            if (strncmp(p, units[u].unit, l) == 0 && !(l == 1 && p[0] == 'm' && p[1] == 's'))
                break;
        }
        if (u == ARRAY_SIZE(units))
            return -EINVAL;
        if (rank[u] <= last_rank)
            return -EINVAL;
        last_rank = rank[u];
        if (v > UINT64_MAX / units[u].ms || total + v * units[u].ms < total)
            return -EINVAL;
        total += v * units[u].ms;
        p += strlen(units[u].unit);
    }
    *ms = total;
    return 0;
}

int cfg_parse_size(const char *s, uint64_t *bytes)
{
    static const struct {
        const char *unit;
        uint64_t mul;
    } units[] = {
        { "", 1 }, { "B", 1 }, { "KiB", 1ull << 10 }, { "MiB", 1ull << 20 },
        { "GiB", 1ull << 30 }, { "TiB", 1ull << 40 }, { "KB", 1000 }, { "MB", 1000000 },
        { "GB", 1000000000 }, { "TB", 1000000000000ull },
    };
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    uint64_t v = 0;
    const char *p = s;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        if (++digits > 15)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    for (size_t u = 0; u < ARRAY_SIZE(units); u++) {
        if (strcmp(p, units[u].unit) == 0) {
            if (v > UINT64_MAX / units[u].mul)
                return -EINVAL;
            *bytes = v * units[u].mul;
            return 0;
        }
    }
    return -EINVAL;
}

int cfg_get_duration(struct cfg *c, const cfg_node *n, const char *path, uint64_t *ms)
{
    WANT_SCALAR(c, n, path, "a duration");
    if (cfg_parse_duration(cfg_scalar(n), ms))
        return cfg_error(c, n, path,
                         "expected a duration like 500ms, 2s, 5m, 1h30m or 15d, got \"%s\"",
                         cfg_scalar(n));
    return 0;
}

int cfg_get_size(struct cfg *c, const cfg_node *n, const char *path, uint64_t *bytes)
{
    WANT_SCALAR(c, n, path, "a size");
    if (cfg_parse_size(cfg_scalar(n), bytes))
        return cfg_error(c, n, path, "expected a size like 512KiB, 256MiB or 2GiB, got \"%s\"",
                         cfg_scalar(n));
    return 0;
}

int cfg_get_addr(struct cfg *c, const cfg_node *n, const char *path, struct net_addr *out)
{
    WANT_SCALAR(c, n, path, "an address");
    if (net_addr_parse(cfg_scalar(n), out))
        return cfg_error(c, n, path,
                         "expected an address like 127.0.0.1:8080 or [::1]:53, got \"%s\"",
                         cfg_scalar(n));
    return 0;
}

int cfg_get_hostport(struct cfg *c, const cfg_node *n, const char *path, struct net_addr *out, char *name,
                     size_t namelen)
{
    WANT_SCALAR(c, n, path, "an address");
    const char *s = cfg_scalar(n);
    if (net_addr_parse(s, out) == 0) {
        net_addr_format(out, name, namelen);
        return 0;
    }
    const char *colon = strrchr(s, ':');
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    size_t hl = colon ? (size_t)(colon - s) : 0;
    if (!colon || hl == 0 || hl > 253 || strlen(s) >= namelen || port < 1 || port > 65535 ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != hl)
        return cfg_error(c, n, path, "expected an address like 127.0.0.1:8080, [::1]:53 or app:8080, got \"%s\"", s);
    snprintf(name, namelen, "%s", s);
    memset(out, 0, sizeof(*out));
    return 1;
}

int cfg_get_cidr(struct cfg *c, const cfg_node *n, const char *path, struct net_cidr *out)
{
    WANT_SCALAR(c, n, path, "a network");
    if (net_cidr_parse(cfg_scalar(n), out))
        return cfg_error(c, n, path, "expected a network like 10.0.0.0/8 or ::1/128, got \"%s\"",
                         cfg_scalar(n));
    return 0;
}

int cfg_get_string_list(struct cfg *c, const cfg_node *n, const char *path, char ***out,
                        size_t *count)
{
    size_t len = cfg_is_seq(n) ? cfg_len(n) : 1;
    if (!cfg_is_seq(n) && !cfg_is_scalar(n))
        return cfg_error(c, n, path, "expected a list of strings, got %s", describe(n));
    char **v = calloc(len ? len : 1, sizeof(char *));
    if (!v)
        return cfg_error(c, n, path, "out of memory");
    int r = 0;
    for (size_t i = 0; i < len; i++) {
        const cfg_node *it = cfg_is_seq(n) ? cfg_seq_item(c, n, i) : n;
        char p[256];
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (cfg_get_string(c, it, p, &v[i]))
            r = -EINVAL;
    }
    if (r) {
        cfg_free_string_list(v, len);
        return r;
    }
    *out = v;
    *count = len;
    return 0;
}

void cfg_free_string_list(char **list, size_t count)
{
    if (!list)
        return;
    for (size_t i = 0; i < count; i++)
        free(list[i]);
    free(list);
}

void cfg_pathf(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}
