/* libFuzzer harness: kubernetes_sd_configs' reading of the API server's answers
 * (pod, service, endpoints and node lists) into targets and labels. The first byte
 * picks the role. */
#include "metrics/prom_internal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 20)
        return 0;
    struct prom_static *g = NULL;
    size_t n = 0;
    if (prom__k8s_targets((enum prom_k8s_role)(data[0] % 4), (const char *)data + 1, size - 1, &g, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (g[i].ntargets != 1 || !g[i].targets[0])
                __builtin_trap();
            prom__static_free(&g[i]);
        }
        free(g);
    }
    return 0;
}
