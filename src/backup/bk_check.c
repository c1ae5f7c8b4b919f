/* bk_check.c - `cairn repo check`: the repository's structure as restic check
 * sees it, and with read_data every byte of every pack.
 *
 * Every pack the index names must exist with the size its header gives, and its
 * header must list the blobs the index says; every snapshot's trees must load and
 * every blob they name must be in the index. With read_data each pack is read
 * whole: its SHA-256 must be its name and every blob must decrypt, decompress and
 * hash to its id. Packs no index names are reported as unreferenced (a hint, as
 * restic says: prune removes them).
 */
#include "backup_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static int cmp_u32_by_pack(const void *x, const void *y, void *arg)
{
    const struct bk_ientry *e = arg;
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    if (e[a].pack != e[b].pack)
        return e[a].pack < e[b].pack ? -1 : 1;
    return e[a].off < e[b].off ? -1 : e[a].off > e[b].off;
}

/* index entry numbers sorted by pack then offset; first[p]..first[p+1] per pack */
int bk_entries_by_pack(struct bk_repo *r, uint32_t **order, size_t **first)
{
    uint32_t *o = malloc((r->nents ? r->nents : 1) * sizeof(*o));
    size_t *f = calloc(r->npacks + 1, sizeof(*f));
    if (!o || !f) {
        free(o);
        free(f);
        return -ENOMEM;
    }
    for (size_t i = 0; i < r->nents; i++)
        o[i] = (uint32_t)i;
    qsort_r(o, r->nents, sizeof(*o), cmp_u32_by_pack, r->ents);
    for (size_t i = 0; i < r->nents; i++)
        f[r->ents[i].pack + 1]++;
    for (size_t p = 0; p < r->npacks; p++)
        f[p + 1] += f[p];
    *order = o;
    *first = f;
    return 0;
}

struct walkstate {
    struct bk_repo *r;
    uint8_t *seen;                      /* per index entry: tree visited */
    FILE *out;
    int errors;
};

static int walk_tree(struct walkstate *w, const bk_id *id, const char *path)
{
    const struct bk_ientry *e = bk_index_find(w->r, id, BK_BLOB_TREE);
    char hex[65], err[512];
    if (!e) {
        bk_id_hex(id, hex);
        fprintf(w->out, "error: tree %s (at %s) is in no index\n", hex, path);
        return ++w->errors, 0;
    }
    size_t ei = (size_t)(e - w->r->ents);
    if (w->seen[ei])
        return 0;
    w->seen[ei] = 1;
    struct bk_tree t;
    if (bk_tree_load(w->r, id, &t, err, sizeof(err))) {
        fprintf(w->out, "error: %s (at %s)\n", err, path);
        return ++w->errors, 0;
    }
    for (size_t i = 0; i < t.n; i++) {
        const struct bk_node *n = &t.nodes[i];
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", path, n->name);
        if (n->type == BK_N_FILE) {
            if (n->size && !n->ncontent && !n->content) {
                fprintf(w->out, "error: file %s has no blob list\n", p);
                w->errors++;
            }
            for (size_t k = 0; k < n->ncontent; k++) {
                if (!bk_index_find(w->r, &n->content[k], BK_BLOB_DATA)) {
                    bk_id_hex(&n->content[k], hex);
                    fprintf(w->out, "error: file %s: blob %s is in no index\n", p, hex);
                    w->errors++;
                }
            }
        } else if (n->type == BK_N_DIR) {
            if (!n->has_subtree) {
                fprintf(w->out, "error: directory %s has no subtree\n", p);
                w->errors++;
            } else {
                walk_tree(w, &n->subtree, p);
            }
        }
    }
    bk_tree_free(&t);
    return 0;
}

int bk_check(struct bk_repo *r, bool read_data, FILE *out)
{
    int errors = 0;
    char err[512], hex[65];
    struct bk_packlist d;
    int e = bk_list_packs(r, &d);
    if (e < 0) {
        fprintf(out, "error: listing packs: %s\n", cairn_strerror(e));
        return 1;
    }
    bool *named = calloc(d.n ? d.n : 1, sizeof(bool));
    uint32_t *order = NULL;
    size_t *first = NULL, *on_disk = NULL;
    if (!named || bk_entries_by_pack(r, &order, &first)) {
        fprintf(out, "error: out of memory\n");
        errors = 1;
        goto out;
    }
    fprintf(out, "check %zu packs, %zu blobs, %zu index files\n", r->npacks, r->nents, r->nindex_files);
    on_disk = malloc((r->npacks ? r->npacks : 1) * sizeof(*on_disk));
    if (!on_disk) {
        errors = 1;
        goto out;
    }
    for (size_t p = 0; p < r->npacks; p++)
        on_disk[p] = SIZE_MAX;
    for (size_t k = 0; k < d.n; k++) {
        long p = bk_pack_find(r, &d.ids[k]);
        if (p >= 0)
            on_disk[p] = k;
    }
    for (size_t p = 0; p < r->npacks; p++) {
        const struct bk_pack *pk = &r->packs[p];
        bk_id_hex(&pk->id, hex);
        size_t k = on_disk[p];
        if (k == SIZE_MAX) {
            fprintf(out, "error: pack %s: in the index but missing\n", hex);
            errors++;
            continue;
        }
        named[k] = true;
        struct bk_pack_blob *hb = NULL;
        size_t nh = 0;
        if (bk_pack_header_read(r, hex, d.sizes[k], &hb, &nh, err, sizeof(err))) {
            fprintf(out, "error: %s\n", err);
            errors++;
            continue;
        }
        /* the index's entries for this pack must each be in the header, same place */
        for (size_t q = first[p]; q < first[p + 1]; q++) {
            const struct bk_ientry *en = &r->ents[order[q]];
            bool ok = false;
            for (size_t h = 0; h < nh && !ok; h++)
                ok = bk_id_eq(&hb[h].id, &en->id) && hb[h].off == en->off && hb[h].len == en->len &&
                     hb[h].type == en->type;
            if (!ok) {
                char bh[65];
                bk_id_hex(&en->id, bh);
                fprintf(out, "error: pack %s: blob %s is not where the index says (offset %u, length %u)\n", hex, bh,
                        en->off, en->len);
                errors++;
            }
        }
        if (read_data) {
            struct buf b = BUF_INIT, plain = BUF_INIT;
            if ((e = r->be->ops->load(r->be, BK_DATA, hex, 0, 0, &b))) {
                fprintf(out, "error: pack %s: %s\n", hex, cairn_strerror(e));
                errors++;
            } else {
                bk_id got;
                bk_sha256(buf_head(&b), buf_used(&b), &got);
                if (!bk_id_eq(&got, &pk->id)) {
                    fprintf(out, "error: pack %s: content does not hash to its name (damaged)\n", hex);
                    errors++;
                }
                for (size_t h = 0; h < nh; h++) {
                    struct bk_ientry en = { .id = hb[h].id, .pack = (uint32_t)p, .off = hb[h].off,
                                            .len = hb[h].len, .ulen = hb[h].ulen, .type = hb[h].type };
                    if (bk_blob_load(r, &en, &plain, err, sizeof(err))) {
                        fprintf(out, "error: %s\n", err);
                        errors++;
                    }
                }
            }
            buf_free(&b);
            buf_free(&plain);
        }
        free(hb);
    }
    for (size_t k = 0; k < d.n; k++) {
        if (named[k])
            continue;
        bk_id_hex(&d.ids[k], hex);
        fprintf(out, "pack %s: not referenced in any index (prune removes it)\n", hex);
    }
    /* the snapshots' trees */
    struct bk_snapshot *sn = NULL;
    size_t nsn = 0;
    if (bk_snapshots_load(r, &sn, &nsn, err, sizeof(err))) {
        fprintf(out, "error: %s\n", err);
        errors++;
    } else {
        struct walkstate w = { .r = r, .seen = calloc(r->nents ? r->nents : 1, 1), .out = out };
        for (size_t i = 0; w.seen && i < nsn; i++)
            walk_tree(&w, &sn[i].tree, "");
        errors += w.errors;
        free(w.seen);
        fprintf(out, "check %zu snapshots\n", nsn);
    }
    bk_snapshots_free(sn, nsn);
out:
    bk_packlist_free(&d);
    free(named);
    free(order);
    free(first);
    free(on_disk);
    fprintf(out, errors ? "%d error%s found\n" : "no errors were found\n", errors, errors == 1 ? "" : "s");
    return errors;
}
