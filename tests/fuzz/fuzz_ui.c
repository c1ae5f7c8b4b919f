/* libFuzzer harness: what the console reads from outside - the Cookie header (the
 * session id in it) and a dashboard's JSON (a file the stack names, a Grafana
 * export). The first byte picks one. */
#include "ui/ui_internal.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > UI_MAX_DASHBOARD_BYTES)
        return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        char id[65];
        if (ui__cookie_session(strv_make(p, n), id) && strlen(id) != 64)
            __builtin_trap();
    } else {
        struct ui_dashboard d;
        memset(&d, 0, sizeof(d));
        char err[200];
        if (ui__dashboard_load(p, n, "fallback", &d, err, sizeof(err)) == 0) {
            if (!d.uid || !d.title || !d.json)
                __builtin_trap();
            ui__dashboard_free(&d);
        }
    }
    return 0;
}
