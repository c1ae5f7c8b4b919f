/* libFuzzer harness: what the alerts role reads from the network - a POST
 * /api/v2/alerts body, a POST /api/v2/silences body, and matcher strings (the
 * ?filter= parameter). The first byte picks the parser. Decoded alerts must have
 * a sorted, duplicate-free label set whose fingerprint is stable, and every
 * decoded time must print and parse back to itself. */
#include "alerts/alerts_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    char err[600];
    switch (data[0] % 3) {
    case 0: {
        struct am_alert **v;
        int n = am__alerts_decode(body, len, 1000000000000000000LL, 300000, &v, err, sizeof(err));
        size_t k = n < 0 ? (size_t)(-n - 1) : (size_t)n;
        for (size_t i = 0; v && i < k; i++) {
            struct am_alert *a = v[i];
            for (size_t j = 1; j < a->labels.n; j++)
                if (strcmp(a->labels.l[j - 1].name, a->labels.l[j].name) >= 0)
                    abort();
            if (a->fp != am__lset_fingerprint(&a->labels) || a->ends_at < a->starts_at)
                abort();
            struct buf b = BUF_INIT;
            am__time_format(&b, a->starts_at);
            buf_putc(&b, 0);
            int64_t back;
            if (am__time_parse(buf_head(&b), &back) || back != a->starts_at)
                abort();
            buf_free(&b);
            am__alert_unref(a);
        }
        free(v);
        break;
    }
    case 1: {
        struct am_silence sl;
        if (am__silence_decode(body, len, &sl, err, sizeof(err)) == 0)
            am__silence_free(&sl);
        break;
    }
    default: {
        char *s = malloc(len + 1);
        if (!s)
            return 0;
        memcpy(s, body, len);
        s[len] = 0;
        struct am_matchers ms;
        if (am__matchers_parse(s, &ms, err, sizeof(err)) == 0) {
            struct am_lset ls = { NULL, 0 };
            am__matchers_match(&ms, &ls);
            struct buf b = BUF_INIT;
            am__matchers_format(&b, &ms);
            buf_free(&b);
            am__matchers_free(&ms);
        }
        free(s);
        break;
    }
    }
    return 0;
}
