/* libFuzzer harness: the stack-file loader (YAML, typed getters, the demo-app
 * and edge roles' parsers, error collection). */
#include "demo_app/demo_app.h"
#include "dns/dns.h"
#include "edge/edge.h"
#include "core/stack.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct role_ops *const roles[] = { &demo_app_role, &dns_role, &edge_role, NULL };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct stack st;
    struct cfg_errors errs = { 0 };
    if (stack_load(&st, "fuzz.yaml", text, roles, &errs) == 0 && errs.n)
        abort();
    cfg_errors_free(&errs);
    stack_free(&st);
    free(text);

    uint64_t v;
    char small[64];
    size_t n = size < sizeof(small) - 1 ? size : sizeof(small) - 1;
    memcpy(small, data, n);
    small[n] = '\0';
    cfg_parse_duration(small, &v);
    cfg_parse_size(small, &v);
    return 0;
}
