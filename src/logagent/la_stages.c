/* la_stages.c - Promtail's pipeline_stages: regex, json, logfmt, labels,
 * static_labels, labeldrop, timestamp, output, drop, match, multiline, template,
 * replace. Each stage reads the line or an extracted value (source) and writes
 * extracted values, labels, the timestamp or the line, as Promtail's documentation
 * describes. multiline is applied by the file reader (it joins lines before the
 * other stages see them) and must come first.
 */
#include "logagent_internal.h"
#include "core/gotmpl.h"
#include "core/logql.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define P(buf, ...) CFG_PATH(buf, __VA_ARGS__)

static pcre2_code *re_compile(struct cfg *c, const cfg_node *n, const char *path, const char *text)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                                   &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(code, msg, sizeof(msg));
        cfg_error(c, n, path, "invalid regular expression: %s", (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

/* A mapping of names to strings (an empty value: the name itself for labels). */
static int parse_kv(struct cfg *c, const cfg_node *n, const char *path, struct la_kv **out, size_t *count)
{
    if (!n || cfg_is_null(n)) {
        *out = NULL;
        *count = 0;
        return 0;
    }
    size_t len = cfg_len(n);
    struct la_kv *kv = calloc(len + 1, sizeof(*kv));
    if (!kv)
        return -ENOMEM;
    *out = kv;
    *count = 0;
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        char p[300];
        cfg_node *k = cfg_map_key(c, n, i), *v = cfg_map_value(c, n, i);
        if (!k) {
            return cfg_error(c, n, path, "expected a mapping of names");
        }
        if (cfg_get_string(c, k, path, &kv[i].name)) {
            bad = -EINVAL;
            continue;
        }
        P(p, "%s.%s", path, kv[i].name);
        if (!v || cfg_is_null(v))
            kv[i].src = strdup("");
        else if (cfg_get_string(c, v, p, &kv[i].src))
            bad = -EINVAL;
        (*count)++;
    }
    return bad;
}

static void kv_free(struct la_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].name);
        free(kv[i].src);
    }
    free(kv);
}

static int get_str(struct cfg *c, const cfg_node *n, const char *path, const char *key, char **out)
{
    char p[300];
    P(p, "%s.%s", path, key);
    return n ? cfg_get_string(c, n, p, out) : 0;
}

static int parse_stage(struct cfg *c, const cfg_node *item, const char *path, struct la_stage *st)
{
    if (cfg_len(item) != 1 || !cfg_map_key(c, item, 0))
        return cfg_error(c, item, path, "a stage is a mapping with one key (regex, json, logfmt, labels, ...)");
    char *kind = NULL;
    cfg_node *body = cfg_map_value(c, item, 0);
    if (cfg_get_string(c, cfg_map_key(c, item, 0), path, &kind))
        return -EINVAL;
    char p[300];
    P(p, "%s.%s", path, kind);
    int bad = 0;
    if (!strcmp(kind, "regex") || !strcmp(kind, "replace")) {
        static const char *const keys[] = { "expression", "source", "replace", NULL };
        cfg_node *v[3];
        st->kind = !strcmp(kind, "regex") ? LA_REGEX : LA_REPLACE;
        char *expr = NULL;
        bad = cfg_map_fields(c, body, p, keys, v);
        bad |= get_str(c, v[0], p, "expression", &expr) | get_str(c, v[1], p, "source", &st->source) |
               get_str(c, v[2], p, "replace", &st->value);
        if (!bad && !expr)
            bad = cfg_error(c, body, p, "missing key \"expression\"");
        if (!bad && !(st->re = re_compile(c, v[0], p, expr)))
            bad = -EINVAL;
        free(expr);
    } else if (!strcmp(kind, "json") || !strcmp(kind, "logfmt")) {
        static const char *const keys[] = { "expressions", "mapping", "source", "drop_malformed", NULL };
        cfg_node *v[4];
        st->kind = !strcmp(kind, "json") ? LA_JSON : LA_LOGFMT;
        bad = cfg_map_fields(c, body, p, keys, v);
        char q[320];
        P(q, "%s.%s", p, st->kind == LA_JSON ? "expressions" : "mapping");
        bad |= parse_kv(c, st->kind == LA_JSON ? v[0] : v[1], q, &st->kv, &st->nkv);
        bad |= get_str(c, v[2], p, "source", &st->source);
    } else if (!strcmp(kind, "labels") || !strcmp(kind, "static_labels")) {
        st->kind = !strcmp(kind, "labels") ? LA_LABELS : LA_STATIC_LABELS;
        bad = parse_kv(c, body, p, &st->kv, &st->nkv);
        for (size_t i = 0; !bad && i < st->nkv; i++)
            if (!relabel_label_name_ok(st->kv[i].name))
                bad = cfg_error(c, body, p, "\"%s\" is not a valid label name", st->kv[i].name);
    } else if (!strcmp(kind, "labeldrop")) {
        st->kind = LA_LABELDROP;
        bad = cfg_get_string_list(c, body, p, &st->names, &st->nnames);
    } else if (!strcmp(kind, "timestamp")) {
        static const char *const keys[] = { "source", "format", "fallback_formats", "location", "action_on_failure", NULL };
        cfg_node *v[5];
        st->kind = LA_TIMESTAMP;
        bad = cfg_map_fields(c, body, p, keys, v);
        bad |= get_str(c, v[0], p, "source", &st->source) | get_str(c, v[1], p, "format", &st->format);
        if (!bad && (!st->source || !st->format))
            bad = cfg_error(c, body, p, "timestamp needs source and format");
    } else if (!strcmp(kind, "output")) {
        static const char *const keys[] = { "source", NULL };
        cfg_node *v[1];
        st->kind = LA_OUTPUT;
        bad = cfg_map_fields(c, body, p, keys, v) | get_str(c, v[0], p, "source", &st->source);
        if (!bad && !st->source)
            bad = cfg_error(c, body, p, "output needs source");
    } else if (!strcmp(kind, "template")) {
        static const char *const keys[] = { "source", "template", NULL };
        cfg_node *v[2];
        st->kind = LA_TEMPLATE;
        bad = cfg_map_fields(c, body, p, keys, v) | get_str(c, v[0], p, "source", &st->source) |
              get_str(c, v[1], p, "template", &st->value);
        if (!bad && (!st->source || !st->value))
            bad = cfg_error(c, body, p, "template needs source and template");
        if (!bad) {
            char err[300];
            struct gt_set *set = gt_set_new(false);
            if (!set || gt_add_text_funcs(set) || gt_parse(set, "t", st->value, err, sizeof(err))) {
                bad = cfg_error(c, v[1], p, "%s", set ? err : "out of memory");
                gt_set_free(&set);
            }
            st->tmpl = set;
        }
    } else if (!strcmp(kind, "drop")) {
        static const char *const keys[] = { "source", "expression", "value", "older_than", "longer_than",
                                            "drop_counter_reason", "separator", NULL };
        cfg_node *v[7];
        st->kind = LA_DROP;
        char *expr = NULL;
        bad = cfg_map_fields(c, body, p, keys, v);
        bad |= get_str(c, v[0], p, "source", &st->source) | get_str(c, v[1], p, "expression", &expr) |
               get_str(c, v[2], p, "value", &st->value);
        char q[320];
        P(q, "%s.older_than", p);
        if (v[3])
            bad |= cfg_get_duration(c, v[3], q, &st->older_than_ms);
        P(q, "%s.longer_than", p);
        if (v[4])
            bad |= cfg_get_size(c, v[4], q, &st->longer_than);
        if (!bad && expr && !(st->re = re_compile(c, v[1], p, expr)))
            bad = -EINVAL;
        if (!bad && expr && st->value)
            bad = cfg_error(c, body, p, "drop takes expression or value, not both");
        st->drop_all = !expr && !st->value && !v[3] && !v[4];
        free(expr);
    } else if (!strcmp(kind, "match")) {
        static const char *const keys[] = { "selector", "stages", "action", "pipeline_name", "drop_counter_reason", NULL };
        cfg_node *v[5];
        st->kind = LA_MATCH;
        bad = cfg_map_fields(c, body, p, keys, v) | get_str(c, v[0], p, "selector", &st->selector);
        char *action = NULL;
        bad |= get_str(c, v[2], p, "action", &action);
        if (action && strcmp(action, "keep") && strcmp(action, "drop"))
            bad = cfg_error(c, v[2], p, "action is keep or drop");
        st->action_drop = action && !strcmp(action, "drop");
        free(action);
        if (!bad && !st->selector)
            bad = cfg_error(c, body, p, "match needs a selector");
        if (!bad) {
            char err[400];
            struct lq_query *q = NULL;
            if (lq_parse(st->selector, strlen(st->selector), &q, err, sizeof(err)) || lq_is_metric(q) ||
                q->root->unwrap) {
                bad = cfg_error(c, v[0], p, "expected a stream selector with line filters: %s", q ? "a metric query" : err);
                lq_query_free(&q);
            }
            st->query = q;
        }
        char q2[320];
        P(q2, "%s.stages", p);
        if (!bad && v[1])
            bad = la__stages_parse(c, v[1], q2, &st->stages, &st->nstages);
        if (!bad && !st->action_drop && !v[1])
            bad = cfg_error(c, body, p, "match with action keep needs stages");
    } else if (!strcmp(kind, "multiline")) {
        static const char *const keys[] = { "firstline", "max_wait_time", "max_lines", NULL };
        cfg_node *v[3];
        st->kind = LA_MULTILINE;
        char *first = NULL;
        st->max_wait_ms = 3000;
        st->max_lines = 128;
        bad = cfg_map_fields(c, body, p, keys, v) | get_str(c, v[0], p, "firstline", &first);
        char q[320];
        P(q, "%s.max_wait_time", p);
        if (v[1])
            bad |= cfg_get_duration(c, v[1], q, &st->max_wait_ms);
        P(q, "%s.max_lines", p);
        long long ml;
        if (v[2] && !(bad |= cfg_get_int(c, v[2], q, 1, 100000, &ml)))
            st->max_lines = (uint32_t)ml;
        if (!bad && !first)
            bad = cfg_error(c, body, p, "multiline needs firstline");
        if (!bad && !(st->re = re_compile(c, v[0], p, first)))
            bad = -EINVAL;
        free(first);
    } else {
        bad = cfg_error(c, item, path,
                        "unknown stage \"%s\" (regex, json, logfmt, labels, static_labels, labeldrop, timestamp, "
                        "output, drop, match, multiline, template, replace)",
                        kind);
    }
    free(kind);
    return bad ? -EINVAL : 0;
}

int la__stages_parse(struct cfg *c, const cfg_node *n, const char *path, struct la_stage **out, size_t *count)
{
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of stages");
    size_t len = cfg_len(n);
    struct la_stage *st = calloc(len + 1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    *out = st;
    *count = len;
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        char p[300];
        P(p, "%s[%zu]", path, i);
        bad |= parse_stage(c, cfg_seq_item(c, n, i), p, &st[i]);
        if (st[i].kind == LA_MULTILINE && i != 0)
            bad = cfg_error(c, cfg_seq_item(c, n, i), p, "multiline must be the first stage");
    }
    return bad ? -EINVAL : 0;
}

void la__stages_free(struct la_stage *st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(st[i].source);
        pcre2_code_free(st[i].re);
        kv_free(st[i].kv, st[i].nkv);
        cfg_free_string_list(st[i].names, st[i].nnames);
        free(st[i].format);
        free(st[i].value);
        free(st[i].selector);
        struct lq_query *q = st[i].query;
        lq_query_free(&q);
        la__stages_free(st[i].stages, st[i].nstages);
        struct gt_set *set = st[i].tmpl;
        gt_set_free(&set);
    }
    free(st);
}

/* ---- running ---- */

static bool re_test(const pcre2_code *re, const char *s, size_t n)
{
    pcre2_match_data *md = lq_match_data();
    return md && pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, md, NULL) >= 0;
}

static const char *source_of(const struct la_stage *st, struct la_entry *e, struct la_extracted *x, size_t *n)
{
    if (!st->source || !*st->source) {
        *n = e->n;
        return e->line;
    }
    const char *v = relabel_set_get(&x->v, st->source);
    if (v)
        *n = strlen(v);
    return v;
}

static void put_x(struct la_extracted *x, const char *name, const char *v, size_t n)
{
    char *tmp = strndup(v, n);
    if (tmp) {
        relabel_set_put(&x->v, name, tmp);
        free(tmp);
    }
}

static void set_line(struct la_entry *e, const char *v, size_t n)
{
    char *l = malloc(n + 1);
    if (!l)
        return;
    memcpy(l, v, n);
    l[n] = 0;
    free(e->line);
    e->line = l;
    e->n = n;
}

static void run_regex(const struct la_stage *st, const char *s, size_t n, struct la_extracted *x)
{
    pcre2_match_data *md = lq_match_data();
    if (md && pcre2_match(st->re, (PCRE2_SPTR)s, n, 0, 0, md, NULL) >= 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        uint32_t count = 0, size = 0, nov = pcre2_get_ovector_count(md);
        PCRE2_SPTR table;
        pcre2_pattern_info(st->re, PCRE2_INFO_NAMECOUNT, &count);
        pcre2_pattern_info(st->re, PCRE2_INFO_NAMEENTRYSIZE, &size);
        pcre2_pattern_info(st->re, PCRE2_INFO_NAMETABLE, &table);
        for (uint32_t i = 0; i < count; i++) {
            PCRE2_SPTR ent = table + (size_t)i * size;
            uint32_t g = (uint32_t)(ent[0] << 8 | ent[1]);
            if (g < nov && ov[2 * g] != PCRE2_UNSET)
                put_x(x, (const char *)ent + 2, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
        }
    }
}

/* A JMESPath subset: a.b, a[0], "quoted.key". */
static json_t *jmes(json_t *doc, const char *path)
{
    json_t *cur = doc;
    const char *p = path;
    while (cur && *p) {
        if (*p == '.') {
            p++;
            continue;
        }
        if (*p == '[') {
            char *e;
            long i = strtol(p + 1, &e, 10);
            if (*e != ']')
                return NULL;
            cur = json_array_get(cur, (size_t)(i < 0 ? (long)json_array_size(cur) + i : i));
            p = e + 1;
            continue;
        }
        char key[256];
        size_t k = 0;
        if (*p == '"') {
            p++;
            while (*p && *p != '"' && k < sizeof(key) - 1)
                key[k++] = *p++;
            if (*p == '"')
                p++;
        } else {
            while (*p && *p != '.' && *p != '[' && k < sizeof(key) - 1)
                key[k++] = *p++;
        }
        key[k] = 0;
        cur = json_object_get(cur, key);
    }
    return cur;
}

static void run_json(const struct la_stage *st, const char *s, size_t n, struct la_extracted *x)
{
    json_error_t je;
    json_t *doc = json_loadb(s, n, 0, &je);
    if (!doc)
        return;
    for (size_t i = 0; i < st->nkv; i++) {
        json_t *v = jmes(doc, *st->kv[i].src ? st->kv[i].src : st->kv[i].name);
        if (!v || json_is_null(v))
            continue;
        if (json_is_string(v)) {
            put_x(x, st->kv[i].name, json_string_value(v), json_string_length(v));
        } else {
            char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (t)
                put_x(x, st->kv[i].name, t, strlen(t));
            free(t);
        }
    }
    json_decref(doc);
}

static void run_logfmt(const struct la_stage *st, const char *s, size_t n, struct la_extracted *x)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (unsigned char)s[i] <= ' ')
            i++;
        size_t ks = i;
        while (i < n && (unsigned char)s[i] > ' ' && s[i] != '=')
            i++;
        size_t kn = i - ks;
        const char *v = "";
        size_t vn = 0;
        char *unq = NULL;
        if (i < n && s[i] == '=') {
            i++;
            if (i < n && s[i] == '"') {
                i++;
                unq = malloc(n - i + 1);
                size_t o = 0;
                while (unq && i < n && s[i] != '"') {
                    if (s[i] == '\\' && i + 1 < n) {
                        char c2 = s[i + 1];
                        unq[o++] = c2 == 'n' ? '\n' : c2 == 't' ? '\t' : c2;
                        i += 2;
                        continue;
                    }
                    unq[o++] = s[i++];
                }
                if (i < n)
                    i++;
                v = unq ? unq : "";
                vn = unq ? o : 0;
            } else {
                size_t vs = i;
                while (i < n && (unsigned char)s[i] > ' ')
                    i++;
                v = s + vs;
                vn = i - vs;
            }
        }
        if (kn) {
            char key[256];
            snprintf(key, sizeof(key), "%.*s", (int)(kn > 255 ? 255 : kn), s + ks);
            if (!st->nkv) {
                put_x(x, key, v, vn);
            } else {
                for (size_t k = 0; k < st->nkv; k++)
                    if (!strcmp(*st->kv[k].src ? st->kv[k].src : st->kv[k].name, key))
                        put_x(x, st->kv[k].name, v, vn);
            }
        }
        free(unq);
        if (i == ks)
            i++;
    }
}

/* Go's reference time layouts to strptime, for the common tokens. */
static int parse_go_layout(const char *layout, const char *v, int64_t *ns)
{
    static const struct { const char *go, *c; } tok[] = {
        { "2006", "%Y" }, { "Jan", "%b" }, { "Mon", "%a" }, { "01", "%m" }, { "02", "%d" }, { "_2", "%e" },
        { "15", "%H" }, { "03", "%I" }, { "04", "%M" }, { "05", "%S" }, { "PM", "%p" }, { "MST", "%Z" },
        { "Z07:00", "%z" }, { "-07:00", "%z" }, { "-0700", "%z" }, { "06", "%y" }, { "1", "%m" }, { "2", "%d" },
    };
    char fmt[256];
    size_t k = 0;
    bool frac = false;
    for (const char *p = layout; *p && k < sizeof(fmt) - 4;) {
        if ((*p == '.' || *p == ',') && (p[1] == '0' || p[1] == '9')) {
            frac = true;
            p++;
            while (*p == '0' || *p == '9')
                p++;
            continue;
        }
        bool hit = false;
        for (size_t i = 0; i < ARRAY_SIZE(tok); i++) {
            size_t l = strlen(tok[i].go);
            if (!strncmp(p, tok[i].go, l)) {
                memcpy(fmt + k, tok[i].c, 2);
                k += 2;
                p += l;
                hit = true;
                break;
            }
        }
        if (!hit)
            fmt[k++] = *p++;
    }
    fmt[k] = 0;
    /* fractions: cut them out of the value and read them apart */
    char val[256];
    snprintf(val, sizeof(val), "%s", v);
    int64_t fns = 0;
    if (frac) {
        char *d = val;
        while ((d = strpbrk(d, ".,"))) {
            if (d > val && isdigit((unsigned char)d[-1]) && isdigit((unsigned char)d[1])) {
                char *e = d + 1;
                int digits = 0;
                while (isdigit((unsigned char)*e)) {
                    if (digits < 9) {
                        fns = fns * 10 + (*e - '0');
                        digits++;
                    }
                    e++;
                }
                while (digits++ < 9)
                    fns *= 10;
                memmove(d, e, strlen(e) + 1);
                break;
            }
            d++;
        }
    }
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(val, fmt, &tm);
    if (!end || *end)
        return -EINVAL;
    long off = tm.tm_gmtoff;
    int year = tm.tm_year;
    if (year < 0)
        tm.tm_year = 70;
    int64_t sec = (int64_t)timegm(&tm) - off;
    if (sec < -9000000000LL || sec > 9000000000LL)
        return -EINVAL;
    *ns = sec * 1000000000 + fns;
    return 0;
}

static int parse_ts(const char *format, const char *v, int64_t *ns)
{
    char *e;
    if (!strcmp(format, "Unix") || !strcmp(format, "UnixMs") || !strcmp(format, "UnixUs") || !strcmp(format, "UnixNs")) {
        if (!strcmp(format, "Unix") && strchr(v, '.')) {
            double d = strtod(v, &e);
            if (*e || !(d > -9e9 && d < 9e9))
                return -EINVAL;
            *ns = (int64_t)(d * 1e9);
            return 0;
        }
        long long x = strtoll(v, &e, 10);
        if (*e || e == v)
            return -EINVAL;
        long long mul = !strcmp(format, "Unix") ? 1000000000LL : !strcmp(format, "UnixMs") ? 1000000LL
                        : !strcmp(format, "UnixUs") ? 1000LL : 1LL;
        if (x > INT64_MAX / mul || x < INT64_MIN / mul)
            return -EINVAL;
        *ns = x * mul;
        return 0;
    }
    static const struct { const char *name, *layout; } named[] = {
        { "RFC3339", "2006-01-02T15:04:05Z07:00" }, { "RFC3339Nano", "2006-01-02T15:04:05.999999999Z07:00" },
        { "ANSIC", "Mon Jan _2 15:04:05 2006" }, { "UnixDate", "Mon Jan _2 15:04:05 MST 2006" },
        { "RFC822", "02 Jan 06 15:04 MST" }, { "RFC822Z", "02 Jan 06 15:04 -0700" },
        { "RFC850", "Monday, 02-Jan-06 15:04:05 MST" }, { "RFC1123", "Mon, 02 Jan 2006 15:04:05 MST" },
        { "RFC1123Z", "Mon, 02 Jan 2006 15:04:05 -0700" }, { "Stamp", "Jan _2 15:04:05" },
        { "StampMilli", "Jan _2 15:04:05.000" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(named); i++)
        if (!strcmp(format, named[i].name)) {
            if (!strncmp(named[i].name, "RFC3339", 7)) {
                /* Z or an offset, an optional fraction */
                return parse_go_layout("2006-01-02T15:04:05.999999999Z07:00", v, ns) == 0 ||
                               parse_go_layout("2006-01-02T15:04:05Z07:00", v, ns) == 0
                           ? 0
                           : (strchr(v, 'Z') ? parse_go_layout("2006-01-02T15:04:05.999999999Z", v, ns) == 0 ||
                                                       parse_go_layout("2006-01-02T15:04:05Z", v, ns) == 0
                                                   ? 0
                                                   : -EINVAL
                                             : -EINVAL);
            }
            return parse_go_layout(named[i].layout, v, ns);
        }
    return parse_go_layout(format, v, ns);
}

static bool match_stage(const struct la_stage *st, struct la_entry *e, struct la_extracted *x, bool *dropped)
{
    const struct lq_query *q = st->query;
    const struct lq_node *sel = q->root;
    for (int i = 0; i < sel->nmatchers; i++) {
        const char *v = relabel_set_get(&e->labels, sel->matchers[i].name);
        if (!lq_matcher_matches(&sel->matchers[i], v ? v : "", v ? strlen(v) : 0))
            return true;    /* not selected: the entry goes on untouched */
    }
    /* the selector's line filters (and label filters on the entry's labels) */
    struct lq_label l[LA_MAX_LABELS];
    int nl = 0;
    for (size_t i = 0; i < e->labels.n && nl < LA_MAX_LABELS; i++)
        l[nl++] = (struct lq_label){ e->labels.l[i].name, e->labels.l[i].value };
    struct lq_labels base = { l, nl };
    struct lq_lb lb;
    lq_lb_init(&lb);
    lq_lb_reset(&lb, &base);
    const char *line = e->line;
    size_t n = e->n;
    bool pass = lq_pipeline_run(sel->stages, sel->nstages, e->ts, &line, &n, &lb);
    lq_lb_free(&lb);
    if (!pass)
        return true;
    if (st->action_drop) {
        *dropped = true;
        return false;
    }
    return la__pipeline(st->stages, st->nstages, e, x);
}

bool la__pipeline(const struct la_stage *stages, size_t nst, struct la_entry *e, struct la_extracted *x)
{
    for (size_t i = 0; i < nst; i++) {
        const struct la_stage *st = &stages[i];
        size_t n = 0;
        const char *s;
        switch (st->kind) {
        case LA_MULTILINE:
            break;              /* done by the reader */
        case LA_REGEX:
            if ((s = source_of(st, e, x, &n)))
                run_regex(st, s, n, x);
            break;
        case LA_JSON:
            if ((s = source_of(st, e, x, &n)))
                run_json(st, s, n, x);
            break;
        case LA_LOGFMT:
            if ((s = source_of(st, e, x, &n)))
                run_logfmt(st, s, n, x);
            break;
        case LA_LABELS:
            for (size_t k = 0; k < st->nkv; k++) {
                const char *v = relabel_set_get(&x->v, *st->kv[k].src ? st->kv[k].src : st->kv[k].name);
                if (v && *v)
                    relabel_set_put(&e->labels, st->kv[k].name, v);
            }
            break;
        case LA_STATIC_LABELS:
            for (size_t k = 0; k < st->nkv; k++)
                relabel_set_put(&e->labels, st->kv[k].name, st->kv[k].src);
            break;
        case LA_LABELDROP:
            for (size_t k = 0; k < st->nnames; k++)
                relabel_set_put(&e->labels, st->names[k], NULL);
            break;
        case LA_TIMESTAMP: {
            const char *v = relabel_set_get(&x->v, st->source);
            int64_t ts;
            if (v && parse_ts(st->format, v, &ts) == 0)
                e->ts = ts;
            break;
        }
        case LA_OUTPUT: {
            const char *v = relabel_set_get(&x->v, st->source);
            if (v)
                set_line(e, v, strlen(v));
            break;
        }
        case LA_TEMPLATE: {
            const char *v = relabel_set_get(&x->v, st->source);
            struct gt_arena *a = gt_arena_new();
            struct gt_value *m = a ? gt_map(a, x->v.n + 1, 0) : NULL;
            if (m) {
                m->missing_empty = true;
                for (size_t k = 0; k < x->v.n; k++) {
                    m->keys[k] = x->v.l[k].name;
                    m->items[k] = gt_str(a, x->v.l[k].value);
                }
                m->keys[x->v.n] = "Value";
                m->items[x->v.n] = gt_str(a, v ? v : "");
                gt_map_sort(m);
                struct buf out = { 0 };
                char err[200];
                if (gt_exec(st->tmpl, "t", m, a, &out, err, sizeof(err)) == 0) {
                    buf_putc(&out, 0);
                    relabel_set_put(&x->v, st->source, buf_head(&out));
                }
                buf_free(&out);
            }
            gt_arena_free(&a);
            break;
        }
        case LA_REPLACE: {
            if (!(s = source_of(st, e, x, &n)))
                break;
            PCRE2_SIZE outlen = n * 2 + (st->value ? strlen(st->value) : 0) * 8 + 256;
            char *out = malloc(outlen);
            int r = out ? pcre2_substitute(st->re, (PCRE2_SPTR)s, n, 0,
                                           PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_UNSET_EMPTY |
                                               PCRE2_SUBSTITUTE_UNKNOWN_UNSET,
                                           NULL, NULL, (PCRE2_SPTR)(st->value ? st->value : ""),
                                           PCRE2_ZERO_TERMINATED, (PCRE2_UCHAR *)out, &outlen)
                        : -1;
            if (r >= 0) {
                if (!st->source || !*st->source)
                    set_line(e, out, outlen);
                else
                    put_x(x, st->source, out, outlen);
            }
            free(out);
            break;
        }
        case LA_DROP: {
            s = st->source && *st->source ? relabel_set_get(&x->v, st->source) : e->line;
            n = s ? (st->source && *st->source ? strlen(s) : e->n) : 0;
            bool drop;
            if (st->drop_all)
                drop = st->source && *st->source ? s != NULL : true;
            else {
                drop = true;
                if (st->re)
                    drop &= s && re_test(st->re, s, n);
                if (st->value)
                    drop &= s && strlen(st->value) == n && !memcmp(st->value, s, n);
                if (st->older_than_ms)
                    drop &= e->ts < (int64_t)(cairn_wall_time() * 1e9) - (int64_t)st->older_than_ms * 1000000;
                if (st->longer_than)
                    drop &= e->n > st->longer_than;
            }
            if (drop)
                return false;
            break;
        }
        case LA_MATCH: {
            bool dropped = false;
            if (!match_stage(st, e, x, &dropped))
                return false;
            break;
        }
        }
    }
    return true;
}
