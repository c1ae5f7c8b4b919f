/* logs_push.c - decoding Loki push bodies (untrusted bytes): the JSON form
 * {"streams":[{"stream":{...},"values":[["ns","line",{metadata}]]}]} (and the
 * older {"labels":"{...}","entries":[{"ts":RFC3339,"line":...}]}), and the
 * protobuf PushRequest (snappy-compressed by the caller's Content-Type), with
 * structured metadata. Label sets are validated and sorted; empty values are
 * dropped as Loki drops them.
 */
#include "logs_internal.h"
#include "core/pb.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PUSH_BLOCK 65536
#define PUSH_MAX_LABELS 1024
#define PUSH_MAX_META 256

void logs__push_free(struct logs_push *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->s[i].labels);
        for (int j = 0; j < p->s[i].n; j++)
            free(p->s[i].e[j].meta);
        free(p->s[i].e);
    }
    free(p->s);
    for (size_t i = 0; i < p->nblocks; i++)
        free(p->blocks[i]);
    free(p->blocks);
    if (p->doc)
        json_decref(p->doc);
    free(p->raw);
    memset(p, 0, sizeof(*p));
}

/* Copies s into the push's string memory, NUL-terminated. */
static const char *pstr(struct logs_push *p, const char *s, size_t n)
{
    if (n + 1 > p->room) {
        size_t sz = n + 1 > PUSH_BLOCK ? n + 1 : PUSH_BLOCK;
        if (p->nblocks == p->capblocks) {
            size_t cap = p->capblocks ? p->capblocks * 2 : 8;
            char **v = realloc(p->blocks, cap * sizeof(*v));
            if (!v)
                return NULL;
            p->blocks = v;
            p->capblocks = cap;
        }
        char *b = malloc(sz);
        if (!b)
            return NULL;
        p->blocks[p->nblocks++] = b;
        p->used = 0;
        p->room = sz;
    }
    char *d = p->blocks[p->nblocks - 1] + p->used;
    memcpy(d, s, n);
    d[n] = 0;
    p->used += n + 1;
    p->room -= n + 1;
    return d;
}

static struct ls_push_stream *add_stream(struct logs_push *p)
{
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 8;
        struct ls_push_stream *v = realloc(p->s, (size_t)cap * sizeof(*v));
        if (!v)
            return NULL;
        p->s = v;
        p->cap = cap;
    }
    struct ls_push_stream *s = &p->s[p->n++];
    memset(s, 0, sizeof(*s));
    return s;
}

static struct ls_entry *add_entry(struct ls_push_stream *s, int *cap)
{
    if (s->n == *cap) {
        int c = *cap ? *cap * 2 : 16;
        struct ls_entry *v = realloc(s->e, (size_t)c * sizeof(*v));
        if (!v)
            return NULL;
        s->e = v;
        *cap = c;
    }
    struct ls_entry *e = &s->e[s->n++];
    memset(e, 0, sizeof(*e));
    return e;
}

static bool label_name_ok(const char *s)
{
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

static int lcmp(const void *a, const void *b)
{
    return strcmp(((const struct lq_label *)a)->name, ((const struct lq_label *)b)->name);
}

/* Sorts l, drops empty values, refuses bad and duplicate names. */
static int finish_labels(struct lq_label *l, int *n, char *err, size_t errlen)
{
    int k = 0;
    for (int i = 0; i < *n; i++) {
        if (!label_name_ok(l[i].name)) {
            snprintf(err, errlen, "error parsing labels: invalid label name \"%.100s\"", l[i].name);
            return -EINVAL;
        }
        if (l[i].value[0])
            l[k++] = l[i];
    }
    qsort(l, (size_t)k, sizeof(*l), lcmp);
    for (int i = 1; i < k; i++)
        if (strcmp(l[i].name, l[i - 1].name) == 0) {
            snprintf(err, errlen, "error parsing labels: duplicate label name \"%.100s\"", l[i].name);
            return -EINVAL;
        }
    *n = k;
    return 0;
}

int logs__parse_labels(struct logs_push *p, const char *s, size_t n, struct lq_label **out, int *nout, char *err,
                       size_t errlen)
{
    const char *c = s, *end = s + n;
    int cap = 8, k = 0;
    struct lq_label *l = malloc((size_t)cap * sizeof(*l));
    if (!l)
        goto oom;
#define WS()                                                                                   \
    while (c < end && isspace((unsigned char)*c))                                              \
    c++
    WS();
    if (c >= end || *c != '{')
        goto bad;
    c++;
    for (;;) {
        WS();
        if (c < end && *c == '}') {
            c++;
            break;
        }
        if (k) {
            if (c >= end || *c != ',')
                goto bad;
            c++;
            WS();
            if (c < end && *c == '}') {
                c++;
                break;
            }
        }
        const char *ns = c;
        while (c < end && (isalnum((unsigned char)*c) || *c == '_'))
            c++;
        if (c == ns)
            goto bad;
        const char *name = pstr(p, ns, (size_t)(c - ns));
        WS();
        if (c >= end || *c != '=')
            goto bad;
        c++;
        WS();
        if (c >= end || *c != '"')
            goto bad;
        c++;
        struct buf v = { 0 };
        while (c < end && *c != '"') {
            if (*c == '\\' && c + 1 < end) {
                char e = c[1];
                buf_putc(&v, e == 'n' ? '\n' : e == 't' ? '\t' : e);
                c += 2;
                continue;
            }
            buf_putc(&v, *c++);
        }
        if (c >= end) {
            buf_free(&v);
            goto bad;
        }
        c++;
        const char *value = pstr(p, v.len ? buf_head(&v) : "", buf_used(&v));
        buf_free(&v);
        if (!name || !value)
            goto oom;
        if (k == PUSH_MAX_LABELS)
            goto bad;
        if (k == cap) {
            cap *= 2;
            struct lq_label *nl = realloc(l, (size_t)cap * sizeof(*nl));
            if (!nl)
                goto oom;
            l = nl;
        }
        l[k++] = (struct lq_label){ name, value };
    }
    WS();
    if (c != end)
        goto bad;
#undef WS
    if (finish_labels(l, &k, err, errlen)) {
        free(l);
        return -EINVAL;
    }
    *out = l;
    *nout = k;
    return 0;
bad:
    free(l);
    snprintf(err, errlen, "error parsing labels %.*s: parse error", (int)(n > 200 ? 200 : n), s);
    return -EINVAL;
oom:
    free(l);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

/* "1570818238000000000", or an RFC 3339 time (the older format). */
static int parse_ts(const char *s, int64_t *out)
{
    char *e;
    errno = 0;
    long long v = strtoll(s, &e, 10);
    if (!*e && e != s && !errno) {
        *out = v;
        return 0;
    }
    return cairn_parse_rfc3339(s, strlen(s), out);
}

int logs__decode_json(const char *body, size_t n, struct logs_push *out, char *err, size_t errlen)
{
    json_error_t je;
    json_t *doc = json_loadb(body, n, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        snprintf(err, errlen, "loghttp.PushRequest: %s at line %d column %d", je.text, je.line, je.column);
        return -EINVAL;
    }
    out->doc = doc;
    json_t *streams = json_object_get(doc, "streams");
    if (!json_is_array(streams)) {
        snprintf(err, errlen, "loghttp.PushRequest: \"streams\" must be an array");
        return -EINVAL;
    }
    size_t i;
    json_t *js;
    json_array_foreach(streams, i, js)
    {
        struct ls_push_stream *s = add_stream(out);
        if (!s)
            goto oom;
        json_t *lab = json_object_get(js, "stream");
        json_t *labstr = json_object_get(js, "labels");
        if (json_is_object(lab)) {
            size_t nl = json_object_size(lab);
            if (nl > PUSH_MAX_LABELS) {
                snprintf(err, errlen, "stream %zu: too many labels", i);
                return -EINVAL;
            }
            s->labels = malloc((nl ? nl : 1) * sizeof(*s->labels));
            if (!s->labels)
                goto oom;
            const char *k;
            json_t *v;
            json_object_foreach(lab, k, v)
            {
                if (!json_is_string(v)) {
                    snprintf(err, errlen, "stream %zu: label %s: the value must be a string", i, k);
                    return -EINVAL;
                }
                s->labels[s->nlabels++] = (struct lq_label){ k, json_string_value(v) };
            }
            if (finish_labels(s->labels, &s->nlabels, err, errlen))
                return -EINVAL;
        } else if (json_is_string(labstr)) {
            if (logs__parse_labels(out, json_string_value(labstr), json_string_length(labstr), &s->labels,
                                   &s->nlabels, err, errlen))
                return -EINVAL;
        } else {
            snprintf(err, errlen, "stream %zu: \"stream\" must be an object of labels", i);
            return -EINVAL;
        }
        int cap = 0;
        json_t *values = json_object_get(js, "values"), *entries = json_object_get(js, "entries");
        size_t j;
        json_t *jv;
        if (json_is_array(values)) {
            json_array_foreach(values, j, jv)
            {
                size_t len = json_array_size(jv);
                json_t *t = json_array_get(jv, 0), *l = json_array_get(jv, 1), *m = json_array_get(jv, 2);
                struct ls_entry *e = add_entry(s, &cap);
                if (!e)
                    goto oom;
                if ((len != 2 && len != 3) || !json_is_string(l)) {
                    snprintf(err, errlen, "stream %zu, value %zu: expected [\"<unix ns>\", \"<line>\"(, {metadata})]",
                             i, j);
                    return -EINVAL;
                }
                if (json_is_string(t)) {
                    if (parse_ts(json_string_value(t), &e->ts)) {
                        snprintf(err, errlen, "stream %zu, value %zu: bad timestamp \"%.40s\"", i, j,
                                 json_string_value(t));
                        return -EINVAL;
                    }
                } else if (json_is_integer(t)) {
                    e->ts = (int64_t)json_integer_value(t);
                } else {
                    snprintf(err, errlen, "stream %zu, value %zu: the timestamp must be a string of ns", i, j);
                    return -EINVAL;
                }
                e->line = json_string_value(l);
                e->n = json_string_length(l);
                if (m && !json_is_null(m)) {
                    if (!json_is_object(m) || json_object_size(m) > PUSH_MAX_META) {
                        snprintf(err, errlen, "stream %zu, value %zu: metadata must be an object of strings", i, j);
                        return -EINVAL;
                    }
                    e->meta = malloc((json_object_size(m) + 1) * sizeof(*e->meta));
                    if (!e->meta)
                        goto oom;
                    const char *k;
                    json_t *v;
                    json_object_foreach(m, k, v)
                    {
                        if (!json_is_string(v)) {
                            snprintf(err, errlen, "stream %zu, value %zu: metadata %s must be a string", i, j, k);
                            return -EINVAL;
                        }
                        if (!label_name_ok(k)) {
                            snprintf(err, errlen, "stream %zu, value %zu: invalid metadata name \"%.100s\"", i, j, k);
                            return -EINVAL;
                        }
                        e->meta[e->nmeta++] = (struct lq_label){ k, json_string_value(v) };
                    }
                }
            }
        } else if (json_is_array(entries)) {
            json_array_foreach(entries, j, jv)
            {
                json_t *t = json_object_get(jv, "ts"), *l = json_object_get(jv, "line");
                struct ls_entry *e = add_entry(s, &cap);
                if (!e)
                    goto oom;
                if (!json_is_string(t) || !json_is_string(l) || parse_ts(json_string_value(t), &e->ts)) {
                    snprintf(err, errlen, "stream %zu, entry %zu: expected {\"ts\": RFC3339, \"line\": string}", i, j);
                    return -EINVAL;
                }
                e->line = json_string_value(l);
                e->n = json_string_length(l);
            }
        } else {
            snprintf(err, errlen, "stream %zu: \"values\" must be an array", i);
            return -EINVAL;
        }
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

/* google.protobuf.Timestamp */
static int pb_timestamp(struct pb m, int64_t *ts)
{
    int64_t sec = 0, nanos = 0;
    while (m.p < m.end) {
        uint32_t f;
        int wt;
        struct pb sub;
        uint64_t v = 0;
        if (pb_field(&m, &f, &wt, &sub, &v))
            return -1;
        if (f == 1 && wt == 0)
            sec = (int64_t)v;
        else if (f == 2 && wt == 0)
            nanos = (int32_t)v;
    }
    if (sec > 9000000000LL || sec < -9000000000LL)    /* past what int64 ns can hold */
        return -1;
    *ts = sec * 1000000000 + nanos;
    return 0;
}

static int pb_pair(struct logs_push *p, struct pb m, struct lq_label *out)
{
    const char *name = "", *value = "";
    while (m.p < m.end) {
        uint32_t f;
        int wt;
        struct pb sub;
        uint64_t v;
        if (pb_field(&m, &f, &wt, &sub, &v))
            return -1;
        if (wt == 2 && (f == 1 || f == 2)) {
            const char *s = pstr(p, (const char *)sub.p, (size_t)(sub.end - sub.p));
            if (!s)
                return -ENOMEM;
            if (f == 1)
                name = s;
            else
                value = s;
        }
    }
    *out = (struct lq_label){ name, value };
    return 0;
}

int logs__decode_proto(const char *body, size_t n, struct logs_push *out, char *err, size_t errlen)
{
    struct pb req = { (const uint8_t *)body, (const uint8_t *)body + n };
    while (req.p < req.end) {
        uint32_t f;
        int wt;
        struct pb sm;
        uint64_t v;
        if (pb_field(&req, &f, &wt, &sm, &v))
            goto bad;
        if (f != 1 || wt != 2)
            continue;
        struct ls_push_stream *s = add_stream(out);
        if (!s)
            goto oom;
        int cap = 0;
        bool have_labels = false;
        while (sm.p < sm.end) {
            struct pb sub;
            if (pb_field(&sm, &f, &wt, &sub, &v))
                goto bad;
            if (f == 1 && wt == 2) {
                have_labels = true;
                free(s->labels);            /* a repeated field: the last one counts */
                s->labels = NULL;
                s->nlabels = 0;
                if (logs__parse_labels(out, (const char *)sub.p, (size_t)(sub.end - sub.p), &s->labels, &s->nlabels,
                                       err, errlen))
                    return -EINVAL;
            } else if (f == 2 && wt == 2) {
                struct ls_entry *e = add_entry(s, &cap);
                if (!e)
                    goto oom;
                struct lq_label meta[PUSH_MAX_META];
                int nmeta = 0;
                while (sub.p < sub.end) {
                    struct pb x;
                    uint64_t xv;
                    if (pb_field(&sub, &f, &wt, &x, &xv))
                        goto bad;
                    if (f == 1 && wt == 2) {
                        if (pb_timestamp(x, &e->ts))
                            goto bad;
                    } else if (f == 2 && wt == 2) {
                        e->line = (const char *)x.p;
                        e->n = (size_t)(x.end - x.p);
                    } else if (f == 3 && wt == 2) {
                        if (nmeta == PUSH_MAX_META) {
                            snprintf(err, errlen, "too much structured metadata on one entry");
                            return -EINVAL;
                        }
                        int r = pb_pair(out, x, &meta[nmeta]);
                        if (r == -ENOMEM)
                            goto oom;
                        if (r)
                            goto bad;
                        if (!label_name_ok(meta[nmeta].name)) {
                            snprintf(err, errlen, "invalid metadata name \"%.100s\"", meta[nmeta].name);
                            return -EINVAL;
                        }
                        nmeta++;
                    }
                }
                if (!e->line)
                    e->line = "";
                if (nmeta) {
                    if (!(e->meta = malloc((size_t)nmeta * sizeof(*e->meta))))
                        goto oom;
                    memcpy(e->meta, meta, (size_t)nmeta * sizeof(*meta));
                    e->nmeta = nmeta;
                }
            }
        }
        if (!have_labels) {
            snprintf(err, errlen, "a stream has no labels");
            return -EINVAL;
        }
    }
    return 0;
bad:
    snprintf(err, errlen, "malformed protobuf PushRequest");
    return -EINVAL;
oom:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}
