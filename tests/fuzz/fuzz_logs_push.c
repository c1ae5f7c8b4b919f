/* libFuzzer harness: the logs role's push decoders over untrusted bytes. The first
 * byte picks the JSON PushRequest, the protobuf PushRequest (raw, then through
 * snappy as the API receives it), or the label-set parser. */
#include "logs/logs_internal.h"

#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    struct logs_push p;
    char err[512];
    const char *body = (const char *)data + 1;
    size_t n = size - 1;
    memset(&p, 0, sizeof(p));
    switch (data[0] % 4) {
    case 0:
        logs__decode_json(body, n, &p, err, sizeof(err));
        break;
    case 1:
        logs__decode_proto(body, n, &p, err, sizeof(err));
        break;
    case 2: {
        size_t ulen;
        if (snappy_uncompressed_length(body, n, &ulen) == SNAPPY_OK && ulen <= (1u << 20)) {
            char *raw = malloc(ulen ? ulen : 1);
            if (raw && snappy_uncompress(body, n, raw, &ulen) == SNAPPY_OK)
                logs__decode_proto(raw, ulen, &p, err, sizeof(err));
            free(raw);
        }
        break;
    }
    default: {
        struct lq_label *l = NULL;
        int nl = 0;
        if (logs__parse_labels(&p, body, n, &l, &nl, err, sizeof(err)) == 0)
            free(l);
        break;
    }
    }
    /* every decoded entry is readable */
    size_t total = 0;
    for (int i = 0; i < p.n; i++)
        for (int j = 0; j < p.s[i].n; j++) {
            total += p.s[i].e[j].n ? (unsigned char)p.s[i].e[j].line[p.s[i].e[j].n - 1] : 0;
            for (int k = 0; k < p.s[i].e[j].nmeta; k++)
                total += strlen(p.s[i].e[j].meta[k].name) + strlen(p.s[i].e[j].meta[k].value);
        }
    (void)total;
    logs__push_free(&p);
    return 0;
}
