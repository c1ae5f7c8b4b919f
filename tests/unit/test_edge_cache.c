/* The edge cache's store and RFC 9111 rules, without sockets. */
#include "edge/edge_cache.h"
#include "test.h"

#include <stdlib.h>

static struct http_response resp_with(int status, const char *const *fields)
{
    struct http_response r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.content_length = -1;
    for (size_t i = 0; fields[i]; i++) {
        const char *colon = strchr(fields[i], ':');
        r.headers[r.nheaders].name = strv_make(fields[i], (size_t)(colon - fields[i]));
        r.headers[r.nheaders].value = strv_cstr(colon + 2);
        r.nheaders++;
    }
    return r;
}

static void req_get(struct httpd_req *r, const char *target, const char *const *fields)
{
    memset(r, 0, sizeof(*r));
    r->h.method = STRV("GET");
    r->h.target = strv_cstr(target);
    r->h.host = STRV("Example.COM.");
    for (size_t i = 0; fields && fields[i]; i++) {
        const char *colon = strchr(fields[i], ':');
        r->h.headers[r->h.nheaders].name = strv_make(fields[i], (size_t)(colon - fields[i]));
        r->h.headers[r->h.nheaders].value = strv_cstr(colon + 2);
        r->h.nheaders++;
    }
}

TEST(cache_cc_directives)
{
    static const char *const f[] = { "Cache-Control: public, max-age=60, s-maxage=\"30\"",
                                      "Cache-Control: no-cache=\"Set-Cookie\", stale-if-error=5",
                                      NULL };
    struct http_response r = resp_with(200, f);
    struct edge_cache_cc cc;
    edge_cache_cc_parse(r.headers, r.nheaders, &cc);
    CHECK(cc.public_);
    CHECK_INT(cc.max_age, 60);
    CHECK_INT(cc.s_maxage, 30);
    CHECK(!cc.no_cache);                    /* qualified: only the named field */
    CHECK(strv_eq_cstr(cc.no_cache_fields, "Set-Cookie"));
    CHECK_INT(cc.stale_if_error, 5);
    CHECK_INT(cc.stale_while_revalidate, -1);
    static const char *const bad[] = { "Cache-Control: max-age=abc, max-stale", NULL };
    r = resp_with(200, bad);
    edge_cache_cc_parse(r.headers, r.nheaders, &cc);
    CHECK_INT(cc.max_age, 0);               /* invalid: treated as stale */
    CHECK(cc.max_stale > 1000000);          /* max-stale without a value: any */
}

TEST(cache_key_normalises_host_only)
{
    struct httpd_req r;
    char k[256];
    req_get(&r, "/A%2fb?x=1", NULL);
    size_t n = edge_cache_key(&r, k, sizeof(k));
    CHECK_STR(k, "example.com\n/A%2fb?x=1");
    CHECK_INT(n, strlen(k));
}

TEST(cache_store_fill_lookup_vary_purge)
{
    struct metrics_registry *reg = metrics_registry_new();
    struct edge_cache_store *cs = edge_cache_store_new("t", 1 << 20, 1 << 16, 0.1, true, reg);
    struct httpd_req fr, de;
    static const char *const fr_f[] = { "Accept-Language: fr", NULL };
    static const char *const de_f[] = { "Accept-Language: de", NULL };
    req_get(&fr, "/v", fr_f);
    req_get(&de, "/v", de_f);
    char key[256];
    size_t kl = edge_cache_key(&fr, key, sizeof(key));
    static const char *const rf[] = { "Cache-Control: max-age=100", "Vary: Accept-Language",
                                      "Surrogate-Key: a b", "Content-Type: text/plain",
                                      "Set-Cookie: x=1", NULL };
    struct http_response resp = resp_with(200, rf);
    resp.nheaders--;    /* drop Set-Cookie (storable per RFC 9111, but not needed here) */
    struct edge_cache_fill *f = edge_cache_fill_begin(cs, key, kl, &fr, &resp, time(NULL));
    CHECK(f != NULL);
    edge_cache_fill_data(f, "bonjour", 7);
    edge_cache_fill_commit(&f);
    CHECK(f == NULL);
    struct edge_cache_obj *o = edge_cache_lookup(cs, key, kl, &fr);
    CHECK(o != NULL);
    CHECK(o && edge_cache_obj_fresh(o, NULL, time(NULL)));
    CHECK(o && !edge_cache_obj_fresh(o, NULL, time(NULL) + 101));
    if (o)
        edge_cache_obj_put(o);
    CHECK(edge_cache_lookup(cs, key, kl, &de) == NULL);      /* another variant */
    CHECK_INT(edge_cache_store_count(cs), 1);
    CHECK_INT(edge_cache_purge(cs, NULL, NULL, "b", false), 1);
    CHECK_INT(edge_cache_store_count(cs), 0);
    /* too large for max_object: dropped at commit */
    f = edge_cache_fill_begin(cs, key, kl, &fr, &resp, time(NULL));
    char big[70000];
    memset(big, 'x', sizeof(big));
    edge_cache_fill_data(f, big, sizeof(big));
    edge_cache_fill_commit(&f);
    CHECK_INT(edge_cache_store_count(cs), 0);
    edge_cache_store_free(cs);
    metrics_registry_free(&reg);
}

TEST(cache_store_budget_eviction)
{
    struct metrics_registry *reg = metrics_registry_new();
    struct edge_cache_store *cs = edge_cache_store_new("e", 200000, 50000, 0.1, false, reg);
    static const char *const rf[] = { "Cache-Control: max-age=100", NULL };
    struct http_response resp = resp_with(200, rf);
    char body[20000];
    memset(body, 'b', sizeof(body));
    for (int i = 0; i < 50; i++) {
        struct httpd_req r;
        char target[32], key[64];
        snprintf(target, sizeof(target), "/o%d", i);
        req_get(&r, target, NULL);
        size_t kl = edge_cache_key(&r, key, sizeof(key));
        struct edge_cache_fill *f = edge_cache_fill_begin(cs, key, kl, &r, &resp, time(NULL));
        edge_cache_fill_data(f, body, sizeof(body));
        edge_cache_fill_commit(&f);
        CHECK(edge_cache_store_bytes(cs) <= 200000);
    }
    CHECK(edge_cache_store_count(cs) > 0 && edge_cache_store_count(cs) < 10);
    size_t n = edge_cache_store_count(cs);
    CHECK_INT(edge_cache_purge(cs, NULL, NULL, NULL, true), n);
    CHECK_INT(edge_cache_store_count(cs), 0);
    edge_cache_store_free(cs);
    metrics_registry_free(&reg);
}
