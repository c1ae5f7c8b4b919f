/* libFuzzer harness: the CDN cache's reading of origin responses. The input is a
 * request head, a NUL, then a response (head and body) as an origin might send
 * it. The response goes through the storing path (Cache-Control, Expires, Age,
 * Vary, Surrogate-Control, tags, validators, freshness arithmetic), then the
 * request looks it up again, as a hit would, and the conditional headers for a
 * revalidation are built. */
#include "edge/edge_cache.h"
#include "core/http1.h"
#include "core/metrics.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct metrics_registry *reg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!reg)
        reg = metrics_registry_new();
    const char *s = (const char *)data;
    const char *nul = memchr(s, '\0', size);
    if (!nul)
        return 0;
    struct httpd_req r;
    memset(&r, 0, sizeof(r));
    struct http1_scan sc = { 0 };
    if (http1_parse_request(s, (size_t)(nul - s), &sc, &http1_default_limits, &r.h) <= 0)
        return 0;
    const char *rs = nul + 1;
    size_t rn = size - (size_t)(rs - s);
    struct http_response resp;
    struct http1_scan sc2 = { 0 };
    int head = http1_parse_response(rs, rn, &sc2, &http1_default_limits, &resp);
    if (head <= 0)
        return 0;

    struct edge_cache_store *cs = edge_cache_store_new("fuzz", 1 << 20, 64 << 10, 0.1, true, reg);
    char key[1100];
    size_t keylen = edge_cache_key(&r, key, sizeof(key));
    if (cs && keylen) {
        struct edge_cache_fill *f = edge_cache_fill_begin(cs, key, keylen, &r, &resp, 1700000000);
        if (f) {
            edge_cache_fill_data(f, rs + head, rn - (size_t)head);
            edge_cache_fill_commit(&f);
        }
        struct edge_cache_obj *o = edge_cache_lookup(cs, key, keylen, &r);
        if (o) {
            struct edge_cache_cc cc;
            edge_cache_cc_parse(r.h.headers, r.h.nheaders, &cc);
            (void)edge_cache_obj_fresh(o, &cc, 1700000100);
            (void)edge_cache_obj_usable_on_error(o, 30, 1700000100);
            (void)edge_cache_obj_stale_while_revalidate(o, 1700000100);
            struct buf b = BUF_INIT;
            if (edge_cache_obj_has_validators(o))
                edge_cache_obj_conditional_headers(o, &b);
            buf_free(&b);
            edge_cache_obj_put(o);
        }
        edge_cache_purge(cs, NULL, "/", NULL, false);
    }
    edge_cache_store_free(cs);
    return 0;
}
