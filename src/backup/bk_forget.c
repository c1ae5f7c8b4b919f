/* bk_forget.c - retention: restic's --keep-* policy over snapshots, forget, and
 * prune (drop packs nothing uses, repack those mostly unused).
 *
 * The policy walks snapshots newest first; each rule (last, hourly, daily,
 * weekly, monthly, yearly) keeps a snapshot whose period differs from the last
 * one it kept, until its count runs out; within keeps everything newer than the
 * newest snapshot minus the duration; a tag rule keeps snapshots with the tag.
 *
 * Prune holds the exclusive lock and follows restic's order: new packs, then a
 * new index, then the old index files go, then the old packs.
 */
#include "backup_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#define MAX_UNUSED_PCT 5        /* restic's --max-unused default */

bool bk_keep_empty(const struct bk_keep *k)
{
    return !k->last && !k->hourly && !k->daily && !k->weekly && !k->monthly && !k->yearly && !k->within_ms &&
           !k->ntags;
}

static long bucket(int rule, int64_t ns, size_t idx)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    localtime_r(&t, &tm);
    long y = tm.tm_year + 1900;
    switch (rule) {
    case 0: return (long)idx;                                   /* last: every snapshot */
    case 1: return ((y * 100 + tm.tm_mon + 1) * 100 + tm.tm_mday) * 100 + tm.tm_hour;
    case 2: return (y * 100 + tm.tm_mon + 1) * 100 + tm.tm_mday;
    case 3: {
        char w[16];
        strftime(w, sizeof(w), "%G%V", &tm);                    /* ISO year and week */
        return atol(w);
    }
    case 4: return y * 100 + tm.tm_mon + 1;
    default: return y;
    }
}

void bk_keep_apply(const struct bk_keep *k, const struct bk_snapshot *s, size_t n, bool *keep)
{
    int count[6] = { k->last, k->hourly, k->daily, k->weekly, k->monthly, k->yearly };
    long lastb[6];
    bool seen[6] = { 0 };
    /* s is oldest first: walk newest first */
    int64_t newest = n ? s[n - 1].time_ns : 0;
    for (size_t j = 0; j < n; j++) {
        size_t i = n - 1 - j;
        keep[i] = false;
        for (int r = 0; r < 6; r++) {
            if (!count[r])
                continue;
            long b = bucket(r, s[i].time_ns, i);
            if (!seen[r] || b != lastb[r]) {
                keep[i] = true;
                seen[r] = true;
                lastb[r] = b;
                if (count[r] > 0)
                    count[r]--;
            }
        }
        if (k->within_ms && s[i].time_ns >= newest - (int64_t)k->within_ms * 1000000)
            keep[i] = true;
        for (size_t t = 0; t < k->ntags; t++)
            if (bk_snapshot_has_tag(&s[i], k->tags[t]))
                keep[i] = true;
    }
}

static bool in_group(const struct bk_snapshot *s, const char *const *tags, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!bk_snapshot_has_tag(s, tags[i]))
            return false;
    return true;
}

int bk_forget(struct bk_repo *r, const struct bk_keep *k, const char *const *group_tags, size_t ngroup, bool prune,
              FILE *out, char *err, size_t errlen)
{
    struct bk_snapshot *all = NULL;
    size_t n = 0;
    int e = bk_snapshots_load(r, &all, &n, err, errlen);
    if (e)
        return e;
    /* the group: snapshots with all the group's tags, per host and paths */
    struct bk_snapshot *g = calloc(n ? n : 1, sizeof(*g));
    bool *keep = calloc(n ? n : 1, sizeof(bool)), *done = calloc(n ? n : 1, sizeof(bool));
    if (!g || !keep || !done) {
        free(g);
        free(keep);
        free(done);
        bk_snapshots_free(all, n);
        return -ENOMEM;
    }
    size_t removed = 0, kept = 0;
    for (size_t i = 0; i < n && !e; i++) {
        if (done[i] || !in_group(&all[i], group_tags, ngroup))
            continue;
        size_t m = 0;
        size_t *members = calloc(n, sizeof(size_t));
        if (!members) {
            e = -ENOMEM;
            break;
        }
        for (size_t j = i; j < n; j++) {
            if (done[j] || !in_group(&all[j], group_tags, ngroup))
                continue;
            bool same = all[j].npaths == all[i].npaths &&
                        !strcmp(all[j].hostname ? all[j].hostname : "", all[i].hostname ? all[i].hostname : "");
            for (size_t p = 0; same && p < all[i].npaths; p++)
                same = !strcmp(all[i].paths[p], all[j].paths[p]);
            if (!same)
                continue;
            done[j] = true;
            g[m] = all[j];
            members[m++] = j;
        }
        bk_keep_apply(k, g, m, keep);
        for (size_t q = 0; q < m; q++) {
            if (keep[q]) {
                kept++;
                continue;
            }
            int x = r->be->ops->remove(r->be, BK_SNAPSHOT, all[members[q]].name);
            if (x && x != -ENOENT) {
                snprintf(err, errlen, "removing snapshot %s: %s", all[members[q]].name, cairn_strerror(x));
                e = x;
                break;
            }
            if (out)
                fprintf(out, "removed snapshot %.8s\n", all[members[q]].name);
            removed++;
        }
        free(members);
    }
    if (out && !e)
        fprintf(out, "%zu snapshots kept, %zu removed\n", kept, removed);
    free(g);
    free(keep);
    free(done);
    bk_snapshots_free(all, n);
    if (!e && prune)
        e = bk_prune(r, out, err, errlen);
    return e;
}

/* ---- prune ---- */

struct mark {
    struct bk_repo *r;
    uint8_t *used;
    int err;
    char *msg;
    size_t msglen;
};

static void mark_tree(struct mark *m, const bk_id *id)
{
    const struct bk_ientry *e = bk_index_find(m->r, id, BK_BLOB_TREE);
    if (!e || m->err)
        return;
    size_t ei = (size_t)(e - m->r->ents);
    if (m->used[ei])
        return;
    m->used[ei] = 1;
    struct bk_tree t;
    if ((m->err = bk_tree_load(m->r, id, &t, m->msg, m->msglen)))
        return;
    for (size_t i = 0; i < t.n; i++) {
        const struct bk_node *n = &t.nodes[i];
        for (size_t k = 0; k < n->ncontent; k++) {
            const struct bk_ientry *d = bk_index_find(m->r, &n->content[k], BK_BLOB_DATA);
            if (d)
                m->used[d - m->r->ents] = 1;
        }
        if (n->type == BK_N_DIR && n->has_subtree)
            mark_tree(m, &n->subtree);
    }
    bk_tree_free(&t);
}

int bk_prune(struct bk_repo *r, FILE *out, char *err, size_t errlen)
{
    struct bk_snapshot *sn = NULL;
    size_t nsn = 0;
    int e = bk_snapshots_load(r, &sn, &nsn, err, errlen);
    if (e)
        return e;
    struct mark m = { .r = r, .used = calloc(r->nents ? r->nents : 1, 1), .msg = err, .msglen = errlen };
    struct bk_packlist d = { 0 };
    uint32_t *order = NULL;
    size_t *first = NULL;
    uint8_t *action = NULL;             /* per pack: 0 keep, 1 repack, 2 remove */
    uint64_t *unused = NULL;
    struct bk_ientry *old_ents = NULL;
    struct bk_pack *old_packs = NULL;
    size_t old_nents = r->nents, old_npacks = r->npacks;
    char **old_index = NULL;
    size_t old_nindex = 0;
    struct bk_packer pk = { 0 };
    if (!m.used) {
        e = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nsn && !m.err; i++)
        mark_tree(&m, &sn[i].tree);
    if ((e = m.err))
        goto out;
    if ((e = bk_list_packs(r, &d)) < 0) {
        snprintf(err, errlen, "listing packs: %s", cairn_strerror(e));
        goto out;
    }
    e = 0;
    if ((e = bk_entries_by_pack(r, &order, &first)))
        goto out;
    action = calloc(r->npacks ? r->npacks : 1, 1);
    unused = calloc(r->npacks ? r->npacks : 1, sizeof(*unused));
    if (!action || !unused) {
        e = -ENOMEM;
        goto out;
    }
    uint64_t used_bytes = 0, unused_bytes = 0, removed_bytes = 0;
    size_t nremove = 0, nrepack = 0;
    for (size_t p = 0; p < r->npacks; p++) {
        uint64_t u = 0, un = 0;
        for (size_t q = first[p]; q < first[p + 1]; q++) {
            const struct bk_ientry *en = &r->ents[order[q]];
            if (m.used[order[q]])
                u += en->len;
            else
                un += en->len;
        }
        unused[p] = un;
        used_bytes += u;
        if (!u) {
            action[p] = 2;
            nremove++;
            removed_bytes += un;
        } else {
            unused_bytes += un;
        }
    }
    /* repack the packs with the most unused bytes until at most 5% is unused */
    while (unused_bytes * 100 > (used_bytes + unused_bytes) * MAX_UNUSED_PCT) {
        size_t best = SIZE_MAX;
        for (size_t p = 0; p < r->npacks; p++)
            if (!action[p] && unused[p] && (best == SIZE_MAX || unused[p] > unused[best]))
                best = p;
        if (best == SIZE_MAX)
            break;
        action[best] = 1;
        nrepack++;
        unused_bytes -= unused[best];
    }
    /* packs on disk that no index names: left by an interrupted backup; nothing
     * runs under our exclusive lock, so they are garbage */
    size_t nstray = 0;
    for (size_t i = 0; i < d.n; i++)
        if (bk_pack_find(r, &d.ids[i]) < 0)
            nstray++;
    if (out)
        fprintf(out, "prune: %zu packs, %zu to remove, %zu to repack, %zu unreferenced; %.1f MiB used, %.1f MiB unused\n",
                r->npacks, nremove, nrepack, nstray, (double)used_bytes / 1048576,
                (double)(unused_bytes + removed_bytes) / 1048576);
    if (!nremove && !nrepack && !nstray)
        goto out;
    /* the new index: kept packs as they are, repacked blobs in new packs */
    old_ents = r->ents;
    old_packs = r->packs;
    r->ents = malloc((old_nents ? old_nents : 1) * sizeof(*r->ents));
    r->packs = malloc((old_npacks ? old_npacks : 1) * sizeof(*r->packs));
    if (!r->ents || !r->packs) {
        free(r->ents);
        free(r->packs);
        r->ents = old_ents;
        r->packs = old_packs;
        old_ents = NULL;
        old_packs = NULL;
        e = -ENOMEM;
        goto out;
    }
    r->entcap = old_nents ? old_nents : 1;
    r->packcap = old_npacks ? old_npacks : 1;
    old_index = r->index_files;
    old_nindex = r->nindex_files;
    r->index_files = NULL;
    r->nindex_files = 0;
    bk_index_reset(r);
    for (size_t p = 0; p < old_npacks && !e; p++) {
        if (action[p])
            continue;
        long slot = bk_pack_put(r, &old_packs[p].id, old_packs[p].size);
        if (slot < 0) {
            e = -ENOMEM;
            break;
        }
        for (size_t q = first[p]; q < first[p + 1] && !e; q++)
            e = bk_index_put(r, (uint32_t)slot, &old_ents[order[q]]);
    }
    struct buf pbuf = BUF_INIT;
    char hex[65];
    for (size_t p = 0; p < old_npacks && !e; p++) {
        if (action[p] != 1)
            continue;
        bk_id_hex(&old_packs[p].id, hex);
        buf_reset(&pbuf);
        if ((e = r->be->ops->load(r->be, BK_DATA, hex, 0, 0, &pbuf))) {
            snprintf(err, errlen, "repack: reading pack %s: %s", hex, cairn_strerror(e));
            break;
        }
        for (size_t q = first[p]; q < first[p + 1] && !e; q++) {
            if (!m.used[order[q]])
                continue;
            const struct bk_ientry *en = &old_ents[order[q]];
            if ((uint64_t)en->off + en->len > buf_used(&pbuf)) {
                e = -EBADMSG;
                snprintf(err, errlen, "repack: pack %s is shorter than its index says", hex);
                break;
            }
            e = bk_packer_add_raw(r, &pk, en, buf_head(&pbuf) + en->off);
            if (e == -EEXIST)
                e = 0;
        }
    }
    buf_free(&pbuf);
    if (!e && (e = bk_packer_flush(r, &pk)))
        snprintf(err, errlen, "repack: writing a pack: %s", cairn_strerror(e));
    if (!e && (e = bk_index_write_pending(r)))
        snprintf(err, errlen, "writing the new index: %s", cairn_strerror(e));
    if (e) {
        /* the old index files are still there: the repository is as it was, plus
         * packs the next prune finds unreferenced */
        goto out;
    }
    /* the new index is durable: the old files and packs can go */
    for (size_t i = 0; i < old_nindex; i++) {
        bool still = false;
        for (size_t k = 0; k < r->nindex_files && !still; k++)
            still = !strcmp(r->index_files[k], old_index[i]);
        if (!still)
            r->be->ops->remove(r->be, BK_INDEX, old_index[i]);
    }
    for (size_t p = 0; p < old_npacks; p++) {
        if (!action[p])
            continue;
        bk_id_hex(&old_packs[p].id, hex);
        r->be->ops->remove(r->be, BK_DATA, hex);
    }
    for (size_t i = 0; i < d.n; i++) {
        bool known = bk_pack_find(r, &d.ids[i]) >= 0;
        for (size_t p = 0; !known && p < old_npacks; p++)
            known = action[p] && bk_id_eq(&old_packs[p].id, &d.ids[i]);
        if (!known) {
            bk_id_hex(&d.ids[i], hex);
            r->be->ops->remove(r->be, BK_DATA, hex);
        }
    }
    if (out)
        fprintf(out, "prune: done, %zu packs now, %zu index file%s\n", r->npacks, r->nindex_files,
                r->nindex_files == 1 ? "" : "s");
out:
    bk_packer_free(&pk);
    free(old_ents);
    free(old_packs);
    for (size_t i = 0; i < old_nindex; i++)
        free(old_index[i]);
    free(old_index);
    free(m.used);
    bk_packlist_free(&d);
    free(order);
    free(first);
    free(action);
    free(unused);
    bk_snapshots_free(sn, nsn);
    return e;
}
