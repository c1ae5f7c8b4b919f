/* libFuzzer harness: the backup role's decoders of repository bytes an attacker
 * with write access to the storage may control - pack headers, index files,
 * trees, snapshots and the unpacked-file encoding. The first byte picks one. */
#include "backup/backup_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 20)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    char err[512];
    switch (sel % 4) {
    case 0: {
        struct bk_pack_blob *v = NULL;
        size_t k = 0;
        if (bk_pack_header_parse(p, n, &v, &k) == 0)
            free(v);
        break;
    }
    case 1: {
        struct bk_repo r;
        memset(&r, 0, sizeof(r));
        pthread_mutex_init(&r.mu, NULL);
        bk_index_parse(&r, (const char *)p, n, "fuzz", err, sizeof(err));
        /* whatever went in must be found again */
        for (size_t i = 0; i < r.nents; i++)
            if (!bk_index_find(&r, &r.ents[i].id, r.ents[i].type))
                abort();
        bk_repo_close(&r);
        break;
    }
    case 2: {
        struct bk_tree t;
        if (bk_tree_parse((const char *)p, n, &t, err, sizeof(err)) == 0) {
            struct buf b = BUF_INIT;
            struct bk_tree t2;
            /* what decodes encodes, and decodes again to as many nodes */
            if (bk_tree_encode(&t, &b) || bk_tree_parse(buf_head(&b), buf_used(&b), &t2, err, sizeof(err)))
                abort();
            if (t2.n != t.n)
                abort();
            bk_tree_free(&t2);
            buf_free(&b);
            bk_tree_free(&t);
        }
        break;
    }
    default: {
        struct bk_snapshot s;
        memset(&s, 0, sizeof(s));
        if (bk_snapshot_parse((const char *)p, n, &s) == 0) {
            struct bk_snapshot *v = malloc(sizeof(*v));
            if (!v)
                abort();
            *v = s;
            bk_snapshots_free(v, 1);
        }
        break;
    }
    }
    return 0;
}
