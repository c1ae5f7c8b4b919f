/* libFuzzer harness: the RFC 1035 zone-file parser (directives, parentheses,
 * quoting and escapes, every record type, RFC 3597 data). */
#include "dns/dns_zone.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    struct dns_zone *z = NULL;
    char err[512];
    if (dns_zone_load_text(&z, "fuzz.test", "fuzz.zone", text, size, false, err, sizeof(err)) == 0) {
        /* every node's name is a valid wire name under the origin */
        for (struct dns_node *n = z->first; n; n = n->next)
            if (!dns_name_under(n->name, n->namelen, z->origin, z->originlen))
                abort();
        dns_zone_free(z);
    } else if (!err[0]) {
        abort();
    }
    free(text);
    return 0;
}
