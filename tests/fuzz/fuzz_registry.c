/* libFuzzer harness: what the registry reads before trusting it - manifests and
 * indexes (JSON), repository names, tags and digests, Range and Content-Range
 * values, and an upstream's WWW-Authenticate challenge. */
#include "registry/registry_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 20)
        return 0;
    const char *s = (const char *)data;
    struct reg_manifest m;
    struct buf refs = BUF_INIT;
    bool index;
    const char *ctypes[] = { NULL, "application/vnd.oci.image.manifest.v1+json",
                             "application/vnd.docker.distribution.manifest.list.v2+json" };
    reg_manifest_parse(s, size, ctypes[size % 3], &m, &refs, &index);
    /* every digest named is well-formed and NUL-terminated inside the buffer */
    for (const char *d = refs.data; d && d < buf_head(&refs) + buf_used(&refs); d += strlen(d) + 1)
        if (!reg_digest_ok(d))
            abort();
    reg_manifest_free(&m);
    buf_free(&refs);
    char *z = malloc(size + 1);
    memcpy(z, data, size);
    z[size] = 0;
    reg_name_ok(z);
    reg_tag_ok(z);
    reg_digest_ok(z);
    char v[600];
    static const char *const keys[] = { "realm", "service", "scope", "error" };
    reg_challenge_param(z, keys[size % 4], v, sizeof(v));
    if (strlen(v) >= sizeof(v))
        abort();
    free(z);
    /* a range, resolved against a size from the input's first bytes: what it
     * asks is inside the blob */
    struct reg_range g;
    uint64_t blob = size ? (uint64_t)data[0] * 65599 + size : 0, from, to;
    if (reg_range_parse(strv_make(s, size), size & 1, &g) == 0 && reg_range_resolve(&g, blob, &from, &to) &&
        (from > to || to >= blob))
        abort();
    return 0;
}
