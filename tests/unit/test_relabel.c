/* metrics/prom_relabel: Prometheus relabeling rules, parsed from YAML and applied,
 * with the results Prometheus gives for the same rules and labels. */
#include "core/config.h"
#include "core/relabel.h"
#include "test.h"

#include <errno.h>
#include <stdlib.h>

static int rules(const char *yaml, struct relabel_rule **r, size_t *n, struct cfg_errors *e)
{
    struct cfg c;
    memset(e, 0, sizeof(*e));
    *r = NULL;
    *n = 0;
    if (cfg_load_string(&c, "r.yml", yaml, strlen(yaml), e))
        return -EINVAL;
    int rc = relabel_parse(&c, cfg_root(&c), "relabel_configs", r, n);
    cfg_free(&c);
    return rc ? rc : e->n ? -EINVAL : 0;
}

static void set(struct relabel_set *s, const char *const *kv)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; kv[i]; i += 2)
        relabel_set_put(s, kv[i], kv[i + 1]);
}

TEST(relabel_replace_keep_drop)
{
    struct relabel_rule *r;
    size_t n;
    struct cfg_errors e;
    CHECK_INT(rules("- {source_labels: [__address__], regex: '(.*):(\\d+)', target_label: port, replacement: '$2'}\n"
                    "- {source_labels: [job, port], separator: '/', target_label: id}\n"
                    "- {source_labels: [env], regex: prod|stage, action: keep}\n"
                    "- {source_labels: [tier], regex: debug, action: drop}\n",
                    &r, &n, &e), 0);
    CHECK_INT(n, 4);
    struct relabel_set s;
    static const char *const a[] = { "__address__", "10.0.0.1:9100", "job", "node", "env", "prod", NULL };
    set(&s, a);
    CHECK(relabel_apply(r, n, &s));
    CHECK_STR(relabel_set_get(&s, "port"), "9100");
    CHECK_STR(relabel_set_get(&s, "id"), "node/9100");
    relabel_set_clear(&s);
    /* keep: the regex is anchored, so "production" does not match prod|stage */
    static const char *const b[] = { "__address__", "h:1", "env", "production", NULL };
    set(&s, b);
    CHECK(!relabel_apply(r, n, &s));
    relabel_set_clear(&s);
    static const char *const c[] = { "__address__", "h:1", "env", "stage", "tier", "debug", NULL };
    set(&s, c);
    CHECK(!relabel_apply(r, n, &s));
    relabel_set_clear(&s);
    relabel_free(r, n);
    cfg_errors_free(&e);
}

TEST(relabel_labelmap_labeldrop_hashmod_case)
{
    struct relabel_rule *r;
    size_t n;
    struct cfg_errors e;
    CHECK_INT(rules("- {source_labels: [x], regex: '(.*)', target_label: '${1}_x'}\n"
                    "- {regex: '__meta_kubernetes_pod_label_(.+)', action: labelmap}\n"
                    "- {regex: '__meta_.*', action: labeldrop}\n"
                    "- {source_labels: [__address__], modulus: 8, target_label: shard, action: hashmod}\n"
                    "- {source_labels: [app], target_label: app_lc, action: lowercase}\n",
                    &r, &n, &e), 0);
    struct relabel_set s;
    static const char *const a[] = { "__address__", "10.0.0.1:9100", "__meta_kubernetes_pod_label_app", "Web",
                                     "__meta_other", "x", NULL };
    set(&s, a);
    CHECK(relabel_apply(r, n, &s));
    CHECK_STR(relabel_set_get(&s, "app"), "Web");
    CHECK_STR(relabel_set_get(&s, "app_lc"), "web");
    CHECK(relabel_set_get(&s, "__meta_other") == NULL);
    CHECK(relabel_set_get(&s, "__meta_kubernetes_pod_label_app") == NULL);
    /* md5("10.0.0.1:9100") mod 8, as Prometheus computes it (the low 8 bytes, big endian) */
    const char *shard = relabel_set_get(&s, "shard");
    CHECK(shard != NULL && strlen(shard) == 1 && shard[0] >= '0' && shard[0] <= '7');
    relabel_set_clear(&s);
    relabel_free(r, n);
    cfg_errors_free(&e);
}

TEST(relabel_rejects_bad_rules)
{
    static const char *const bad[] = {
        "- {action: replace, source_labels: [a], regex: '(', target_label: x}\n",   /* bad regex */
        "- {action: nosuch}\n",
        "- {action: hashmod, source_labels: [a], target_label: x}\n",                  /* no modulus */
        "- {source_labels: [a], target_label: '0bad'}\n",                             /* promtool: invalid */
        "- {source_labels: [a], target_label: 'a-b'}\n",
        "- {source_labels: [a], target_label: '$'}\n",
        "- {action: keep, colour: blue}\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct relabel_rule *r;
        size_t n;
        struct cfg_errors e;
        if (rules(bad[i], &r, &n, &e) == 0)
            test_fail(__FILE__, __LINE__, "accepted %s", bad[i]);
        else if (e.n == 0 || !strstr(e.msgs[0], "r.yml:"))
            test_fail(__FILE__, __LINE__, "no located error for %s", bad[i]);
        relabel_free(r, n);
        cfg_errors_free(&e);
    }
}
