/* tsdb_compact.c - blocks: cutting the head into blocks, compaction, retention
 * of blocks, the one background job at a time, and the admin snapshot. */
#include "tsdb_internal.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- blocks: cutting the head, compaction, retention ----
 *
 * The head is cut when it spans more than 1.5 block ranges: every sample of the
 * oldest range goes into a block (whole chunks, since a chunk never crosses a
 * range boundary; series with out-of-order samples or chunks from an older
 * snapshot are re-encoded), the head lets go of them, appends older than the
 * block's end are refused from then on (min_valid), and a head snapshot drops the
 * WAL behind it. A crash after the block is written but before the snapshot
 * replays samples the block already has: replay skips what is older than
 * min_valid. Blocks that the head has left behind are merged, three ranges at a
 * time (2h, 6h, 18h, ... up to max_block_ms), into blocks with the merged ones as
 * parents; on open, blocks that a newer block lists as parents are deleted (a
 * crash between writing the merge and deleting its inputs).
 */

static int cmp_block(const void *a, const void *b)
{
    const struct tsdb_block *x = *(struct tsdb_block *const *)a, *y = *(struct tsdb_block *const *)b;
    if (x->mint != y->mint)
        return x->mint < y->mint ? -1 : 1;
    return strcmp(x->ulid, y->ulid);
}

static int block_add(struct tsdb *db, const char *ulid, char *err, size_t errlen)
{
    char dir[4400];
    snprintf(dir, sizeof(dir), "%s/blocks/%s", db->dir, ulid);
    struct tsdb_block *b = calloc(1, sizeof(*b));
    struct tsdb_block **a = realloc(db->blocks, (db->nblocks + 1) * sizeof(*a));
    if (!b || !a) {
        free(b);
        if (a)
            db->blocks = a;
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    db->blocks = a;
    int r = tsdb_block_open(b, dir, err, errlen);
    if (r) {
        free(b);
        return r;
    }
    db->blocks[db->nblocks++] = b;
    qsort(db->blocks, db->nblocks, sizeof(*db->blocks), cmp_block);
    return 0;
}

/* Closes and deletes the block at index i. */
void tsdb__block_drop(struct tsdb *db, size_t i)
{
    struct tsdb_block *b = db->blocks[i];
    char dir[4400];
    snprintf(dir, sizeof(dir), "%s", b->dir);
    tsdb_block_close(b);
    free(b);
    memmove(db->blocks + i, db->blocks + i + 1, (db->nblocks - i - 1) * sizeof(*db->blocks));
    db->nblocks--;
    tsdb_block_remove(dir);
    db->st.blocks_deleted++;
}

uint64_t tsdb_blocks_bytes(const struct tsdb *db)
{
    uint64_t n = 0;
    for (size_t i = 0; i < db->nblocks; i++)
        n += db->blocks[i]->bytes;
    return n;
}

/* Opens dir/blocks: leftovers of an interrupted write go, so do blocks that a
 * compaction already merged; a damaged block refuses the start (as a damaged
 * snapshot does), naming it. */
int tsdb__blocks_load(struct tsdb *db, char *err, size_t errlen)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/blocks", db->dir);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    int r = 0;
    while (!r && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.')
            continue;
        char p[4500];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if (l > 4 && !strcmp(de->d_name + l - 4, ".tmp")) {
            log_warn("removing an unfinished block", "dir", p);
            tsdb_block_remove(p);
            continue;
        }
        if (l != TSDB_ULID_LEN)
            continue;
        r = block_add(db, de->d_name, err, errlen);
        if (r == -EINVAL)
            snprintf(err + strlen(err), errlen - strlen(err),
                     "; move the block away to start without it (its samples are then lost)");
    }
    closedir(d);
    if (r)
        return r;
    /* inputs of a finished compaction */
    for (size_t i = 0; i < db->nblocks; i++) {
        const struct tsdb_block *b = db->blocks[i];
        for (uint32_t k = 0; k < b->nparents; k++)
            for (size_t j = 0; j < db->nblocks; j++)
                if (j != i && !memcmp(db->blocks[j]->ulid, b->parents + (size_t)k * TSDB_ULID_LEN,
                                      TSDB_ULID_LEN)) {
                    log_warn("removing a block that a compaction merged", "dir", db->blocks[j]->dir);
                    tsdb__block_drop(db, j);
                    if (j < i)
                        i--;
                    b = db->blocks[i];
                    break;
                }
    }
    for (size_t i = 0; i < db->nblocks; i++)
        if (db->blocks[i]->maxt + 1 > db->min_valid)
            db->min_valid = db->blocks[i]->maxt + 1;
    if (db->nblocks)
        log_info("blocks opened", "blocks", log_int((long long)db->nblocks), "bytes",
                 log_int((long long)tsdb_blocks_bytes(db)), "min_valid",
                 log_int((long long)db->min_valid));
    return 0;
}

void tsdb__head_mint_recompute(struct tsdb *db)
{
    int64_t m = INT64_MAX;
    for (size_t i = 0; i < db->nseries; i++) {
        const struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        if (s->nchunks && s->chunks[0].mint < m)
            m = s->chunks[0].mint;
        if (s->nooo && s->ooo_t[0] < m)
            m = s->ooo_t[0];
        if (s->head.n && s->head.mint < m)
            m = s->head.mint;
    }
    db->head_mint = m;
}

/* Encodes the samples of s in [lo, hi] into new sealed chunks. */
static int encode_range(const struct tsdb_series *s, int64_t lo, int64_t hi,
                        struct tsdb_sealed **out, uint32_t *n)
{
    struct tsdb_iter it;
    struct tsdb_chunk c;
    uint32_t cap = 0;
    int64_t t;
    double v;
    *out = NULL;
    *n = 0;
    tsdb_chunk_init(&c);
    tsdb_iter_init(&it, s, lo, hi);
    bool more = tsdb_iter_next(&it, &t, &v);
    while (more || c.n) {
        if (!more || c.n >= TSDB_CHUNK_MAX_SAMPLES) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 4;
                struct tsdb_sealed *a = realloc(*out, cap * sizeof(*a));
                if (!a)
                    goto nomem;
                *out = a;
            }
            tsdb_chunk_seal(&c);
            (*out)[(*n)++] = (struct tsdb_sealed){ c.b, c.nbits, c.n, c.mint, c.maxt };
            tsdb_chunk_init(&c);
            if (!more)
                break;
        }
        if (tsdb_chunk_append(&c, t, v))
            goto nomem;
        more = tsdb_iter_next(&it, &t, &v);
    }
    return 0;
nomem:
    tsdb_chunk_free(&c);
    for (uint32_t i = 0; i < *n; i++)
        free((*out)[i].b);
    free(*out);
    *out = NULL;
    *n = 0;
    return -ENOMEM;
}

struct cut_ent {
    struct tsdb_series *s;
    struct tsdb_sealed *chunks;
    uint32_t n;
    bool reenc;
};

static int cmp_cut(const void *a, const void *b)
{
    return tsdb_labels_cmp(&((const struct cut_ent *)a)->s->labels,
                           &((const struct cut_ent *)b)->s->labels);
}

/* After the block holds them: the head keeps only the samples from end on. */
static int keep_from(struct tsdb_series *s, int64_t end)
{
    struct tsdb_sealed *rest;
    uint32_t nrest;
    int r = encode_range(s, end, INT64_MAX, &rest, &nrest);
    if (r)
        return r;
    for (uint32_t i = 0; i < s->nchunks; i++)
        free(s->chunks[i].b);
    free(s->chunks);
    s->chunks = NULL;
    s->nchunks = s->capchunks = 0;
    tsdb_chunk_free(&s->head);
    tsdb_chunk_init(&s->head);
    free(s->ooo_t);
    free(s->ooo_v);
    s->ooo_t = NULL;
    s->ooo_v = NULL;
    s->nooo = s->capooo = 0;
    /* the newest chunk reopens as the head chunk (decoded again into the encoder),
     * the others stay sealed */
    if (nrest) {
        struct tsdb_sealed last = rest[nrest - 1];
        s->chunks = rest;
        s->nchunks = s->capchunks = nrest - 1;
        struct tsdb_chunk_iter ci;
        tsdb_chunk_iter_init(&ci, last.b, last.nbits, last.n);
        int64_t t;
        double v;
        while (tsdb_chunk_next(&ci, &t, &v))
            if (tsdb_chunk_append(&s->head, t, v))
                r = -ENOMEM;
        free(last.b);
        if (!s->nchunks) {
            free(s->chunks);
            s->chunks = NULL;
            s->capchunks = 0;
        }
    } else {
        free(rest);
    }
    return r;
}

struct merge_src {
    struct tsdb_block **b;
    size_t nb;
    uint32_t *pos;              /* next series per block */
    struct tsdb_bseries *cur;   /* decoded series at pos */
    struct tsdb_label *lab;     /* per block: its current series' labels */
    struct tsdb_labels out;
    struct tsdb_label outl[TSDB_MAX_LABELS];
    struct tsdb_sealed *chunks;
    uint32_t cap;
    uint64_t bad;
};

/* ---- background work: one block write at a time ----
 *
 * A cut or a compaction is prepared on the loop thread (which chunks, in which
 * order; samples older than the cut's end are refused from then on), written by a
 * thread (re-encoding, CRCs, files, fsync), and finished on the loop thread (the
 * block opens, the head lets go, parents are deleted). While one is in flight
 * nothing frees chunks or series: retention and head collection wait for it. */

enum { JOB_CUT = 1, JOB_COMPACT = 2 };

struct tsdb_job {
    int kind;
    pthread_t th;
    bool threaded;
    int done;                   /* set by the writer, atomically */
    uint64_t t0;
    char dir[4200];
    /* a cut */
    int64_t end, mint, maxt;
    struct cut_ent *ents;
    size_t n;
    struct tsdb_sealed *pool;   /* copies of the head's chunk entries (bytes shared) */
    struct tsdb_bw_series *bw;
    uint64_t samples;
    /* a compaction */
    struct tsdb_block **blocks;
    size_t nb;
    struct merge_src *m;
    const char **syms;
    size_t nsym;
    char *parents;
    uint32_t level;
    /* the result */
    int r;
    char ulid[TSDB_ULID_LEN + 1];
    char err[512];
};

static void job_free(struct tsdb_job *j)
{
    if (!j)
        return;
    for (size_t i = 0; j->ents && i < j->n; i++)
        if (j->ents[i].reenc) {
            for (uint32_t c = 0; c < j->ents[i].n; c++)
                free(j->ents[i].chunks[c].b);
            free(j->ents[i].chunks);
        }
    free(j->ents);
    free(j->pool);
    free(j->bw);
    if (j->m) {
        free(j->m->pos);
        free(j->m->cur);
        free(j->m->lab);
        free(j->m->chunks);
        free(j->m);
    }
    free(j->blocks);
    free(j->syms);
    free(j->parents);
    free(j);
}

/* Prepares the cut of the head's samples before end into a block of [start, end - 1].
 * NULL with *r = 0 when the head has none (min_valid moves on all the same). */
static struct tsdb_job *cut_prepare(struct tsdb *db, int64_t start, int64_t end, int *r)
{
    *r = 0;
    size_t pooled = 0;
    for (size_t i = 0; i < db->nseries && !*r; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        if (s->head.n && s->head.mint < end && s->head.maxt < end && tsdb__seal_head(s))
            *r = -ENOMEM;
        for (uint32_t k = 0; k < s->nchunks && s->chunks[k].maxt < end; k++)
            pooled++;
    }
    struct tsdb_job *j = *r ? NULL : calloc(1, sizeof(*j));
    if (j) {
        j->ents = malloc((db->nseries + 1) * sizeof(*j->ents));
        j->pool = malloc((pooled + 1) * sizeof(*j->pool));
    }
    if (!j || !j->ents || !j->pool) {
        job_free(j);
        *r = -ENOMEM;
        return NULL;
    }
    j->kind = JOB_CUT;
    j->t0 = cairn_now_ms();
    j->end = end;
    size_t used = 0;
    for (size_t i = 0; i < db->nseries && !*r; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        bool reenc = (s->nooo && s->ooo_t[0] < end) || (s->head.n && s->head.mint < end);
        uint32_t k = 0;
        while (k < s->nchunks && s->chunks[k].maxt < end)
            k++;
        if (k < s->nchunks && s->chunks[k].mint < end)
            reenc = true;       /* a chunk across the boundary (an older snapshot's) */
        struct cut_ent e = { s, NULL, 0, reenc };
        if (reenc) {
            if (encode_range(s, INT64_MIN, end - 1, &e.chunks, &e.n))
                *r = -ENOMEM;
        } else if (k) {
            /* the head's array may move while the block is written: copy the entries */
            e.chunks = j->pool + used;
            memcpy(e.chunks, s->chunks, k * sizeof(*e.chunks));
            e.n = k;
            used += k;
        }
        if (e.n)
            j->ents[j->n++] = e;
        else if (reenc)
            free(e.chunks);
    }
    if (*r || !j->n) {
        job_free(j);
        if (!*r)
            db->min_valid = MAX(db->min_valid, end);
        return NULL;
    }
    j->bw = malloc((j->n + 1) * sizeof(*j->bw));
    if (!j->bw) {
        job_free(j);
        *r = -ENOMEM;
        return NULL;
    }
    qsort(j->ents, j->n, sizeof(*j->ents), cmp_cut);
    j->mint = start;
    for (size_t i = 0; i < j->n; i++) {
        j->bw[i] = (struct tsdb_bw_series){ &j->ents[i].s->labels, j->ents[i].chunks, j->ents[i].n };
        if (j->ents[i].chunks[0].mint < j->mint)
            j->mint = j->ents[i].chunks[0].mint;
        for (uint32_t c = 0; c < j->ents[i].n; c++)
            j->samples += j->ents[i].chunks[c].n;
    }
    j->maxt = end - 1;
    snprintf(j->dir, sizeof(j->dir), "%s/blocks", db->dir);
    /* from now on the head takes nothing the block might have needed */
    db->min_valid = MAX(db->min_valid, end);
    return j;
}

/* The head lets go of what the written block holds. */
static void cut_finish(struct tsdb *db, struct tsdb_job *j)
{
    for (size_t i = 0; !j->r && i < j->n; i++) {
        struct cut_ent *e = &j->ents[i];
        struct tsdb_series *s = e->s;
        if (e->reenc) {
            if (keep_from(s, j->end))
                log_error("out of memory trimming the head after a block cut");
        } else {
            /* chunks are only appended while the block was written: the prefix is it */
            for (uint32_t c = 0; c < e->n; c++)
                free(s->chunks[c].b);
            memmove(s->chunks, s->chunks + e->n, (s->nchunks - e->n) * sizeof(*s->chunks));
            s->nchunks -= e->n;
        }
    }
    tsdb__head_mint_recompute(db);
    if (j->r)
        return;
    db->st.blocks_cut++;
    log_info("block cut from the head", "block", j->ulid, "mint", log_int((long long)j->mint), "maxt",
             log_int((long long)j->maxt), "series", log_int((long long)j->n), "samples",
             log_int((long long)j->samples), "ms", log_int((long long)(cairn_now_ms() - j->t0)));
}

/* ---- compaction: a k-way merge of blocks sorted by labels ---- */


static void merge_load(struct merge_src *m, size_t i)
{
    while (m->pos[i] < m->b[i]->nser) {
        if (tsdb_block_series(m->b[i], m->pos[i], &m->cur[i]) == 0) {
            tsdb__block_labels(m->b[i], &m->cur[i], m->lab + i * TSDB_MAX_LABELS);
            return;
        }
        m->pos[i]++;
    }
}

static int merge_next(void *arg, struct tsdb_bw_series *out)
{
    struct merge_src *m = arg;
    struct tsdb_labels best = { 0, NULL };
    bool have = false;
    for (size_t i = 0; i < m->nb; i++) {
        if (m->pos[i] >= m->b[i]->nser)
            continue;
        struct tsdb_labels l = { m->cur[i].nlabels, m->lab + i * TSDB_MAX_LABELS };
        if (!have || tsdb_labels_cmp(&l, &best) < 0)
            best = l;
        have = true;
    }
    if (!have)
        return 0;
    memcpy(m->outl, best.l, best.n * sizeof(*best.l));
    m->out = (struct tsdb_labels){ best.n, m->outl };
    uint32_t n = 0;
    for (size_t i = 0; i < m->nb; i++) {
        if (m->pos[i] >= m->b[i]->nser)
            continue;
        struct tsdb_labels l = { m->cur[i].nlabels, m->lab + i * TSDB_MAX_LABELS };
        if (tsdb_labels_cmp(&l, &m->out))
            continue;
        if (n + m->cur[i].nchunks > m->cap) {
            uint32_t nc = m->cap ? m->cap : 64;
            while (nc < n + m->cur[i].nchunks)
                nc *= 2;
            struct tsdb_sealed *a = realloc(m->chunks, nc * sizeof(*a));
            if (!a)
                return -ENOMEM;
            m->chunks = a;
            m->cap = nc;
        }
        uint32_t got = tsdb_block_chunks(m->b[i], &m->cur[i], m->chunks + n);
        if (!got)
            m->bad++;
        n += got;
        m->pos[i]++;
        merge_load(m, i);
    }
    /* labels point into a block whose cursor moved on: they stay valid (the
     * mapping), only the per-block label array was rewritten - out has its copy */
    *out = (struct tsdb_bw_series){ &m->out, m->chunks, n };
    return n ? 1 : 2;           /* 2: every copy damaged, nothing to write */
}

static int merge_next_good(void *arg, struct tsdb_bw_series *out)
{
    int r;
    while ((r = merge_next(arg, out)) == 2)
        ;
    return r;
}

/* Prepares the merge of blocks [i, k) into one. */
static struct tsdb_job *compact_prepare(struct tsdb *db, size_t i, size_t k)
{
    size_t nb = k - i;
    struct tsdb_job *j = calloc(1, sizeof(*j));
    struct merge_src *m = calloc(1, sizeof(*m));
    if (!j || !m) {
        free(j);
        free(m);
        return NULL;
    }
    j->kind = JOB_COMPACT;
    j->t0 = cairn_now_ms();
    j->m = m;
    j->nb = nb;
    j->blocks = malloc(nb * sizeof(*j->blocks));
    m->pos = calloc(nb, sizeof(*m->pos));
    m->cur = calloc(nb, sizeof(*m->cur));
    m->lab = calloc(nb * TSDB_MAX_LABELS, sizeof(*m->lab));
    size_t ns = 0;
    for (size_t x = i; x < k; x++)
        ns += db->blocks[x]->nsym;
    j->syms = malloc((ns + 1) * sizeof(*j->syms));
    j->parents = malloc(nb * TSDB_ULID_LEN + 1);
    if (!j->blocks || !m->pos || !m->cur || !m->lab || !j->syms || !j->parents) {
        job_free(j);
        return NULL;
    }
    memcpy(j->blocks, db->blocks + i, nb * sizeof(*j->blocks));
    m->b = j->blocks;
    m->nb = nb;
    j->mint = INT64_MAX;
    j->maxt = INT64_MIN;
    ns = 0;
    for (size_t x = 0; x < nb; x++) {
        const struct tsdb_block *b = j->blocks[x];
        for (uint32_t y = 0; y < b->nsym; y++)
            j->syms[ns++] = tsdb_block_sym(b, y);
        memcpy(j->parents + x * TSDB_ULID_LEN, b->ulid, TSDB_ULID_LEN);
        j->level = MAX(j->level, b->level);
        j->mint = MIN(j->mint, b->mint);
        j->maxt = MAX(j->maxt, b->maxt);
        merge_load(m, x);
    }
    j->nsym = tsdb__sort_unique(j->syms, ns);
    snprintf(j->dir, sizeof(j->dir), "%s/blocks", db->dir);
    return j;
}

static void compact_finish(struct tsdb *db, struct tsdb_job *j)
{
    db->st.block_errors += j->m->bad;
    if (j->r)
        return;
    /* the inputs go once the merged block is open (parents names them: db->blocks
     * moves when the new one is added) */
    for (size_t k = 0; k < j->nb; k++)
        for (size_t x = 0; x < db->nblocks; x++)
            if (!memcmp(db->blocks[x]->ulid, j->parents + k * TSDB_ULID_LEN, TSDB_ULID_LEN)) {
                tsdb__block_drop(db, x);
                break;
            }
    db->st.compactions++;
    log_info("blocks compacted", "block", j->ulid, "from", log_int((long long)j->nb), "mint",
             log_int((long long)j->mint), "maxt", log_int((long long)j->maxt), "level",
             log_int((long long)j->level + 1), "ms", log_int((long long)(cairn_now_ms() - j->t0)));
}

/* The writing part: touches only the job (and the blocks it reads). */
static void *job_run(void *arg)
{
    struct tsdb_job *j = arg;
    if (j->kind == JOB_CUT) {
        j->r = tsdb_block_write(j->dir, j->mint, j->maxt, 1, NULL, 0, j->bw, j->n, j->ulid, j->err,
                                sizeof(j->err));
    } else {
        struct tsdb_bw_src src = { j->syms, (uint32_t)j->nsym, merge_next_good, j->m };
        j->r = tsdb_block_write_src(j->dir, j->mint, j->maxt, j->level + 1, j->parents,
                                    (uint32_t)j->nb, &src, j->ulid, j->err, sizeof(j->err));
    }
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Frees the series that have nothing left in the head (every sample is in blocks)
 * and that nothing pins: out of the table, the postings and the series slots (a
 * reference is never given again). Returns how many. */
size_t tsdb__head_gc(struct tsdb *db)
{
    size_t dead = 0;
    for (size_t i = 0; i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
        if (s && !s->pins && !s->nchunks && !s->head.n && !s->nooo) {
            s->dead = true;
            dead++;
        }
    }
    if (!dead)
        return 0;
    struct tsdb_postings *p = db->postings;
    for (size_t i = 0; i < p->size; i++)
        for (struct plist **pe = &p->table[i]; *pe;) {
            struct plist *e = *pe;
            uint32_t k = 0;
            for (uint32_t j = 0; j < e->n; j++)
                if (!e->s[j]->dead)
                    e->s[k++] = e->s[j];
            e->n = k;
            if (k) {
                pe = &e->next;
                continue;
            }
            *pe = e->next;
            free(e->key);
            free(e->s);
            free(e);
            p->count--;
        }
    for (size_t i = 0; i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s || !s->dead)
            continue;
        struct tsdb_series **pp = &db->table[s->hash & (db->tablesize - 1)];
        while (*pp && *pp != s)
            pp = &(*pp)->hnext;
        if (*pp)
            *pp = s->hnext;
        tsdb__series_free(s);
        db->series[i] = NULL;
        db->active--;
    }
    db->st.series_gc += dead;
    return dead;
}

static bool head_needs_cut(const struct tsdb *db)
{
    int64_t r = db->block_range_ms;
    return db->head_mint != INT64_MAX && db->maxt - tsdb__range_of(db->head_mint, r) * r >= r * 3 / 2;
}

/* The next piece of work: the oldest range of the head while it spans 1.5 ranges,
 * else blocks inside a window of 3, 9, 27, ... ranges that the head has left. */
static struct tsdb_job *next_job(struct tsdb *db, int *r)
{
    *r = 0;
    int64_t br = db->block_range_ms;
    for (int guard = 0; guard < 1000 && head_needs_cut(db); guard++) {
        int64_t start = tsdb__range_of(db->head_mint, br) * br;
        struct tsdb_job *j = cut_prepare(db, start, start + br, r);
        if (j || *r)
            return j;
        tsdb__head_mint_recompute(db);
        if (db->head_mint < start + br)
            break;              /* nothing moved: do not spin */
    }
    for (int64_t w = br * 3; w > 0 && w <= db->max_block_ms; w *= 3) {
        for (size_t i = 0; i < db->nblocks;) {
            int64_t win = tsdb__range_of(db->blocks[i]->mint, w);
            size_t k = i;
            while (k < db->nblocks && tsdb__range_of(db->blocks[k]->mint, w) == win &&
                   tsdb__range_of(db->blocks[k]->maxt, w) == win)
                k++;
            if (k - i >= 2 && (win + 1) * w <= db->min_valid) {
                struct tsdb_job *j = compact_prepare(db, i, k);
                if (!j)
                    *r = -ENOMEM;
                return j;
            }
            i = k > i ? k : i + 1;
        }
        if (w > INT64_MAX / 3)
            break;
    }
    return NULL;
}

/* Opens the written block and completes the job; returns 1 for a block made. */
static int job_finish(struct tsdb *db, struct tsdb_job *j, bool closing)
{
    if (j->threaded)
        pthread_join(j->th, NULL);
    if (!j->r)
        j->r = block_add(db, j->ulid, j->err, sizeof(j->err));
    if (j->r)
        log_error(j->kind == JOB_CUT ? "writing a block failed; the head keeps the samples"
                                     : "compaction failed; the blocks stay as they are",
                  "err", j->err);
    int made = !j->r;
    if (j->kind == JOB_CUT) {
        cut_finish(db, j);
        if (made) {
            size_t gone = tsdb__head_gc(db);
            if (gone)
                log_info("series with every sample in blocks left the head", "series",
                         log_int((long long)gone), "active", log_int((long long)db->active));
            /* the WAL behind the block goes with a snapshot, once the backlog is cut */
            if (!closing && !head_needs_cut(db))
                tsdb_snapshot_background(db);
        }
    } else {
        compact_finish(db, j);
    }
    job_free(j);
    return made;
}

int tsdb_maintain(struct tsdb *db)
{
    if (db->snap && __atomic_load_n(&db->snap->done, __ATOMIC_ACQUIRE))
        tsdb__snap_drain(db);
    if (!db->dir || db->block_range_ms <= 0)
        return 0;
    int made = 0;
    if (db->job) {
        if (!__atomic_load_n(&db->job->done, __ATOMIC_ACQUIRE))
            return 0;
        struct tsdb_job *j = db->job;
        db->job = NULL;
        made += job_finish(db, j, false);
    }
    for (int steps = 0; steps < 1000; steps++) {
        int r;
        struct tsdb_job *j = next_job(db, &r);
        if (!j)
            return r ? r : made;
        if (db->background && pthread_create(&j->th, NULL, job_run, j) == 0) {
            j->threaded = true;
            db->job = j;
            return made;
        }
        job_run(j);
        made += job_finish(db, j, false);
    }
    return made;
}

/* Waits for the block being written, if any, and completes it. */
void tsdb__job_drain(struct tsdb *db, bool closing)
{
    if (!db->job)
        return;
    struct tsdb_job *j = db->job;
    db->job = NULL;
    job_finish(db, j, closing);
}

/* ---- a consistent copy of the store (the admin snapshot API) ---- */

static int link_block(const struct tsdb_block *b, const char *out_dir)
{
    char dst[4400], sp[4500], dp[4500];
    snprintf(dst, sizeof(dst), "%s/%s", out_dir, b->ulid);
    if (mkdir(dst, 0755) && errno != EEXIST)
        return -errno;
    static const char *const files[] = { "index", "chunks", "meta.json" };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        snprintf(sp, sizeof(sp), "%s/%s", b->dir, files[i]);
        snprintf(dp, sizeof(dp), "%s/%s", dst, files[i]);
        if (link(sp, dp) && errno != EEXIST)
            return -errno;
    }
    return 0;
}

int tsdb_export_snapshot(struct tsdb *db, const char *out_dir, bool skip_head, char *err,
                         size_t errlen)
{
    if (cairn_mkdir_p(out_dir, 0755)) {
        snprintf(err, errlen, "%s: %s", out_dir, strerror(errno));
        return -errno;
    }
    for (size_t i = 0; i < db->nblocks; i++) {
        int r = link_block(db->blocks[i], out_dir);
        if (r) {
            snprintf(err, errlen, "linking block %s: %s", db->blocks[i]->ulid, strerror(-r));
            return r;
        }
    }
    if (skip_head || db->head_mint == INT64_MAX)
        return 0;
    /* the head as one block: its chunks as they are, the open one included;
     * series with out-of-order samples re-encoded */
    struct cut_ent *ents = malloc((db->nseries + 1) * sizeof(*ents));
    struct tsdb_bw_series *bw = malloc((db->nseries + 1) * sizeof(*bw));
    int r = ents && bw ? 0 : -ENOMEM;
    size_t n = 0;
    int64_t mint = INT64_MAX, maxt = INT64_MIN;
    for (size_t i = 0; !r && i < db->nseries; i++) {
        struct tsdb_series *s = db->series[i];
        if (!s)
            continue;
        struct cut_ent e = { s, NULL, 0, true };
        if (encode_range(s, INT64_MIN, INT64_MAX, &e.chunks, &e.n)) {
            r = -ENOMEM;
            break;
        }
        if (!e.n) {
            free(e.chunks);
            continue;
        }
        if (e.chunks[0].mint < mint)
            mint = e.chunks[0].mint;
        if (e.chunks[e.n - 1].maxt > maxt)
            maxt = e.chunks[e.n - 1].maxt;
        ents[n++] = e;
    }
    char ulid[TSDB_ULID_LEN + 1];
    if (!r && n) {
        qsort(ents, n, sizeof(*ents), cmp_cut);
        for (size_t i = 0; i < n; i++)
            bw[i] = (struct tsdb_bw_series){ &ents[i].s->labels, ents[i].chunks, ents[i].n };
        r = tsdb_block_write(out_dir, mint, maxt, 1, NULL, 0, bw, n, ulid, err, errlen);
    } else if (r) {
        snprintf(err, errlen, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        for (uint32_t c = 0; c < ents[i].n; c++)
            free(ents[i].chunks[c].b);
        free(ents[i].chunks);
    }
    free(ents);
    free(bw);
    return r;
}
