/* relabel.c - relabeling rules. */
#include "core/relabel.h"
#include "core/buf.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P CFG_PATH

bool relabel_label_name_ok(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
              (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

static const char *const action_names[] = { "replace", "keep", "drop", "labelmap", "labeldrop",
                                            "labelkeep", "hashmod", "lowercase", "uppercase" };

static bool word_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
}

/* A replace action's target_label may name groups ($1, ${name}): Prometheus's
 * ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$ - a label name in which `$ref`s stand
 * for letters, so it cannot start with a digit. */
static bool target_template_ok(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return false;
    while (*s) {
        if (*s == '$') {
            s++;
            if (*s == '{') {
                const char *b = ++s;
                while (word_char(*s))
                    s++;
                if (s == b || *s != '}')
                    return false;
                s++;
            } else {
                const char *b = s;
                while (word_char(*s))
                    s++;
                if (s == b)
                    return false;
            }
        } else if (word_char(*s)) {
            s++;
        } else {
            return false;
        }
    }
    return true;
}

int relabel_parse(struct cfg *c, const cfg_node *n, const char *path,
                       struct relabel_rule **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    if (!cfg_is_seq(n))
        return cfg_error(c, n, path, "expected a list of relabel rules");
    size_t k = cfg_len(n);
    struct relabel_rule *rs = calloc(k ? k : 1, sizeof(*rs));
    if (!rs)
        return -ENOMEM;
    *out = rs;
    int bad = 0;
    for (size_t i = 0; i < k; i++) {
        static const char *const keys[] = { "source_labels", "separator", "target_label", "regex",
                                            "modulus", "replacement", "action", NULL };
        cfg_node *v[7];
        char p[320], q[340];
        P(p, "%s[%zu]", path, i);
        struct relabel_rule *r = &rs[i];
        (*count)++;
        if (cfg_map_fields(c, cfg_seq_item(c, n, i), p, keys, v)) {
            bad = -EINVAL;
            continue;
        }
        P(q, "%s.source_labels", p);
        if (v[0] && cfg_get_string_list(c, v[0], q, &r->source, &r->nsource))
            bad = -EINVAL;
        P(q, "%s.separator", p);
        if (v[1])
            bad |= cfg_get_string(c, v[1], q, &r->separator);
        if (!r->separator)
            r->separator = strdup(";");
        P(q, "%s.target_label", p);
        if (v[2])
            bad |= cfg_get_string(c, v[2], q, &r->target);
        P(q, "%s.regex", p);
        if (v[3])
            bad |= cfg_get_string(c, v[3], q, &r->regex_text);
        if (!r->regex_text)
            r->regex_text = strdup("(.*)");
        P(q, "%s.modulus", p);
        long long x;
        if (v[4] && cfg_get_int(c, v[4], q, 0, 1LL << 62, &x) == 0)
            r->modulus = (uint64_t)x;
        else if (v[4])
            bad = -EINVAL;
        P(q, "%s.replacement", p);
        if (v[5])
            bad |= cfg_get_string(c, v[5], q, &r->replacement);
        if (!r->replacement)
            r->replacement = strdup("$1");
        P(q, "%s.action", p);
        r->action = RELABEL_REPLACE;
        if (v[6]) {
            const char *a = cfg_scalar(v[6]);
            bool found = false;
            for (size_t j = 0; a && j < ARRAY_SIZE(action_names); j++)
                if (strcasecmp(a, action_names[j]) == 0) {
                    r->action = (enum relabel_action)j;
                    found = true;
                }
            if (!found) {
                bad = cfg_error(c, v[6], q, "unknown relabel action \"%s\"", a ? a : "");
                continue;
            }
        }
        if (!r->separator || !r->regex_text || !r->replacement)
            return -ENOMEM;
        size_t rl = strlen(r->regex_text);
        char *pat = malloc(rl + 8);
        if (!pat)
            return -ENOMEM;
        snprintf(pat, rl + 8, "^(?:%s)$", r->regex_text);
        int ec;
        PCRE2_SIZE eo;
        r->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_DOTALL | PCRE2_UTF,
                              &ec, &eo, NULL);
        free(pat);
        if (!r->re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof(msg));
            bad = cfg_error(c, v[3] ? v[3] : cfg_seq_item(c, n, i), p,
                            "invalid regular expression \"%s\": %s", r->regex_text, (char *)msg);
            continue;
        }
        const char *a = action_names[r->action];
        if ((r->action == RELABEL_REPLACE || r->action == RELABEL_HASHMOD ||
             r->action == RELABEL_LOWERCASE || r->action == RELABEL_UPPERCASE) &&
            (!r->target || !r->target[0]))
            bad = cfg_error(c, cfg_seq_item(c, n, i), p,
                            "relabel configuration for %s action requires 'target_label' value", a);
        if (r->action == RELABEL_HASHMOD && r->modulus == 0)
            bad = cfg_error(c, cfg_seq_item(c, n, i), p,
                            "relabel configuration for hashmod requires non-zero modulus");
        if ((r->action == RELABEL_LABELDROP || r->action == RELABEL_LABELKEEP) &&
            (r->nsource || r->target))
            bad = cfg_error(c, cfg_seq_item(c, n, i), p,
                            "%s action requires only 'regex', and no other fields", a);
        if (r->target && (r->action == RELABEL_REPLACE ? !target_template_ok(r->target)
                                                        : !relabel_label_name_ok(r->target)))
            bad = cfg_error(c, v[2], p, "\"%s\" is invalid 'target_label' for %s action",
                            r->target, a);
    }
    return bad ? -EINVAL : 0;
}

void relabel_free(struct relabel_rule *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        cfg_free_string_list(r[i].source, r[i].nsource);
        free(r[i].separator);
        free(r[i].target);
        free(r[i].regex_text);
        free(r[i].replacement);
        if (r[i].re)
            pcre2_code_free(r[i].re);
    }
    free(r);
}

/* ---- label sets ---- */

const char *relabel_set_get(const struct relabel_set *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->l[i].name, name) == 0)
            return s->l[i].value;
    return NULL;
}

static void lset_del(struct relabel_set *s, size_t i)
{
    free((void *)s->l[i].name);
    free((void *)s->l[i].value);
    s->l[i] = s->l[--s->n];
}

void relabel_set_put(struct relabel_set *s, const char *name, const char *value)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->l[i].name, name) == 0) {
            if (!value || !value[0]) {
                lset_del(s, i);
                return;
            }
            char *v = strdup(value);
            if (v) {
                free((void *)s->l[i].value);
                s->l[i].value = v;
            }
            return;
        }
    if (!value || !value[0] || s->n == ARRAY_SIZE(s->l))
        return;
    char *nm = strdup(name), *v = strdup(value);
    if (!nm || !v) {
        free(nm);
        free(v);
        return;
    }
    s->l[s->n].name = nm;
    s->l[s->n].value = v;
    s->n++;
}

void relabel_set_clear(struct relabel_set *s)
{
    while (s->n)
        lset_del(s, s->n - 1);
}

/* ---- applying ---- */

/* Go's regexp Expand: $1, ${1}, $name, ${name}, $$. */
static void expand(const char *tmpl, const char *subject, pcre2_match_data *md, const void *re,
                   struct buf *out)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t npairs = pcre2_get_ovector_count(md);
    for (const char *p = tmpl; *p; p++) {
        if (*p != '$') {
            buf_putc(out, *p);
            continue;
        }
        if (p[1] == '$') {
            buf_putc(out, '$');
            p++;
            continue;
        }
        char name[64];
        size_t nl = 0;
        const char *q = p + 1;
        if (*q == '{') {
            const char *e = strchr(q, '}');
            if (!e) {
                buf_putc(out, '$');
                continue;
            }
            nl = MIN((size_t)(e - q - 1), sizeof(name) - 1);
            memcpy(name, q + 1, nl);
            p = e;
        } else {
            while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
                   *q == '_') {
                if (nl < sizeof(name) - 1)
                    name[nl++] = *q;
                q++;
            }
            if (!nl) {
                buf_putc(out, '$');
                continue;
            }
            p = q - 1;
        }
        name[nl] = 0;
        int group = -1;
        bool digits = nl > 0;
        for (size_t i = 0; i < nl; i++)
            digits &= name[i] >= '0' && name[i] <= '9';
        if (digits)
            group = atoi(name);
        else
            group = pcre2_substring_number_from_name(re, (PCRE2_SPTR)name);
        if (group >= 0 && (uint32_t)group < npairs && ov[2 * group] != PCRE2_UNSET)
            buf_append(out, subject + ov[2 * group], ov[2 * group + 1] - ov[2 * group]);
    }
}

static bool match(const void *re, const char *s, pcre2_match_data *md)
{
    return pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL) >= 0;
}

bool relabel_apply(const struct relabel_rule *rs, size_t n, struct relabel_set *s)
{
    struct buf joined = BUF_INIT, tmp = BUF_INIT, tgt = BUF_INIT;
    bool keep = true;
    for (size_t i = 0; i < n && keep; i++) {
        const struct relabel_rule *r = &rs[i];
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(r->re, NULL);
        if (!md)
            continue;
        buf_reset(&joined);
        for (size_t k = 0; k < r->nsource; k++) {
            if (k)
                buf_puts(&joined, r->separator);
            const char *v = relabel_set_get(s, r->source[k]);
            buf_puts(&joined, v ? v : "");
        }
        buf_putc(&joined, 0);
        const char *val = buf_head(&joined);
        switch (r->action) {
        case RELABEL_REPLACE:
            if (match(r->re, val, md)) {
                buf_reset(&tmp);
                buf_reset(&tgt);
                expand(r->replacement, val, md, r->re, &tmp);
                expand(r->target, val, md, r->re, &tgt);
                buf_putc(&tmp, 0);
                buf_putc(&tgt, 0);
                if (relabel_label_name_ok(buf_head(&tgt)))
                    relabel_set_put(s, buf_head(&tgt), buf_head(&tmp));
            }
            break;
        case RELABEL_KEEP:
            keep = match(r->re, val, md);
            break;
        case RELABEL_DROP:
            keep = !match(r->re, val, md);
            break;
        case RELABEL_HASHMOD: {
            unsigned char h[EVP_MAX_MD_SIZE];
            unsigned int hl = 0;
            EVP_Digest(val, strlen(val), h, &hl, EVP_md5(), NULL);
            uint64_t x = 0;
            for (int b = 8; b < 16; b++)
                x = x << 8 | h[b];
            char num[32];
            snprintf(num, sizeof(num), "%llu", (unsigned long long)(x % r->modulus));
            relabel_set_put(s, r->target, num);
            break;
        }
        case RELABEL_LOWERCASE:
        case RELABEL_UPPERCASE: {
            char *c = strdup(val);
            for (char *q = c; c && *q; q++)
                *q = (char)(r->action == RELABEL_LOWERCASE ? tolower((unsigned char)*q)
                                                           : toupper((unsigned char)*q));
            if (c)
                relabel_set_put(s, r->target, c);
            free(c);
            break;
        }
        case RELABEL_LABELMAP: {
            size_t cnt = s->n;
            struct relabel_set add = { .n = 0 };
            for (size_t k = 0; k < cnt; k++)
                if (match(r->re, s->l[k].name, md)) {
                    buf_reset(&tmp);
                    expand(r->replacement, s->l[k].name, md, r->re, &tmp);
                    buf_putc(&tmp, 0);
                    relabel_set_put(&add, buf_head(&tmp), s->l[k].value);
                }
            for (size_t k = 0; k < add.n; k++)
                relabel_set_put(s, add.l[k].name, add.l[k].value);
            relabel_set_clear(&add);
            break;
        }
        case RELABEL_LABELDROP:
        case RELABEL_LABELKEEP:
            for (size_t k = 0; k < s->n;) {
                bool m = match(r->re, s->l[k].name, md);
                if (m == (r->action == RELABEL_LABELDROP))
                    lset_del(s, k);
                else
                    k++;
            }
            break;
        }
        pcre2_match_data_free(md);
    }
    buf_free(&joined);
    buf_free(&tmp);
    buf_free(&tgt);
    return keep;
}
