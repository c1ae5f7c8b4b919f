/* libFuzzer harness: the log agent's syslog parser (RFC 5424 with structured
 * data, RFC 3164) over untrusted bytes. */
#include "logagent/logagent_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    for (int sd = 0; sd < 2; sd++) {
        struct la_entry e;
        memset(&e, 0, sizeof(e));
        if (la__syslog_parse((const char *)data, size, &e, sd, sd) == 0) {
            if (e.n && e.line[e.n - 1] == 0x7f)
                e.ts++;
        }
        free(e.line);
        relabel_set_clear(&e.labels);
    }
    return 0;
}
