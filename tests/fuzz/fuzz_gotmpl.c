/* libFuzzer harness: the Go template parser and evaluator (src/core/gotmpl.c) over
 * a fixed data value. Parse errors are fine; crashes, leaks and unbounded output
 * are not. */
#include "core/gotmpl.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *t = malloc(size + 1);
    if (!t)
        return 0;
    memcpy(t, data, size);
    t[size] = 0;
    struct gt_set *set = gt_set_new(size % 2);
    struct gt_arena *a = gt_arena_new();
    char err[400];
    if (set && a && gt_parse(set, "f", t, err, sizeof(err)) == 0) {
        struct gt_value *m = gt_map(a, 3, 0);
        struct gt_value *l = gt_list(a, 2, 0);
        if (m && l) {
            l->items[0] = gt_str(a, "x");
            l->items[1] = gt_num(a, 1.5);
            m->keys[0] = "A";
            m->items[0] = gt_str(a, "<a>");
            m->keys[1] = "L";
            m->items[1] = l;
            m->keys[2] = "N";
            m->items[2] = gt_num(a, 3);
            struct buf out = BUF_INIT;
            gt_exec(set, "f", m, a, &out, err, sizeof(err));
            if (buf_used(&out) > GT_MAX_OUTPUT + 65536)
                abort();
            buf_free(&out);
        }
    }
    gt_arena_free(&a);
    gt_set_free(&set);
    free(t);
    return 0;
}
