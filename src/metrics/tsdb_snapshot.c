/* tsdb_snapshot.c - head snapshots: writing (inline or with the fsyncs on a
 * thread of their own) and loading at open. */
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

/* ---- head snapshot ----
 *
 * dir/snapshot holds every series with its chunks (the open one with its encoder
 * state) and the number of the first WAL segment that is not in it. Taking one:
 * flush the WAL, start a new segment, write the snapshot (temporary file, fsync,
 * rename), then delete the older segments. A crash at any point leaves either the
 * old snapshot with all the segments it needs, or the new one (older segments
 * left over are ignored and deleted on open). Records are CRC-checked; a damaged
 * snapshot is ignored with an error (the WAL segments it covered are gone then).
 */

#define SNAP_MAGIC "CAIRNSN2"      /* SN1: the same without out-of-order samples */

static void put(struct buf *b, const void *p, size_t n)
{
    buf_append(b, p, n);
}

static void snap_series(struct buf *b, const struct tsdb_series *s)
{
    put(b, &s->ref, 8);
    put(b, &s->labels.n, 2);
    for (uint16_t i = 0; i < s->labels.n; i++) {
        const char *ss[2] = { s->labels.l[i].name, s->labels.l[i].value };
        for (int k = 0; k < 2; k++) {
            uint16_t len = (uint16_t)strlen(ss[k]);
            put(b, &len, 2);
            put(b, ss[k], len);
        }
    }
    uint8_t hl = s->has_last;
    put(b, &hl, 1);
    put(b, &s->last_t, 8);
    put(b, &s->last_v, 8);
    put(b, &s->nchunks, 4);
    for (uint32_t i = 0; i < s->nchunks; i++) {
        const struct tsdb_sealed *c = &s->chunks[i];
        put(b, &c->mint, 8);
        put(b, &c->maxt, 8);
        put(b, &c->n, 2);
        put(b, &c->nbits, 4);
        put(b, c->b, (c->nbits + 7) / 8);
    }
    put(b, &s->nooo, 4);
    for (uint32_t i = 0; i < s->nooo; i++) {
        put(b, &s->ooo_t[i], 8);
        put(b, &s->ooo_v[i], 8);
    }
    const struct tsdb_chunk *h = &s->head;
    put(b, &h->n, 2);
    put(b, &h->nbits, 4);
    put(b, &h->mint, 8);
    put(b, &h->maxt, 8);
    put(b, &h->t, 8);
    put(b, &h->tdelta, 8);
    put(b, &h->vbits, 8);
    put(b, &h->leading, 1);
    put(b, &h->trailing, 1);
    if (h->n)
        put(b, h->b, (h->nbits + 7) / 8);
}

static void *snap_sync(void *arg)
{
    struct tsdb_snap *sn = arg;
    char path[4300], tmp[4320];
    snprintf(path, sizeof(path), "%s/snapshot", sn->dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int r = 0;
    if (fflush(sn->f) || fdatasync(fileno(sn->f)))
        r = errno ? -errno : -EIO;
    if (fclose(sn->f) && !r)
        r = errno ? -errno : -EIO;
    sn->f = NULL;
    if (!r && rename(tmp, path))
        r = -errno;
    if (r) {
        unlink(tmp);
    } else {
        int dfd = open(sn->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        /* the segments before `next` are in the snapshot now */
        char wdir[4300];
        snprintf(wdir, sizeof(wdir), "%s/wal", sn->dir);
        DIR *d = opendir(wdir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            char *end;
            unsigned long v = strtoul(de->d_name, &end, 10);
            if (de->d_name[0] >= '0' && de->d_name[0] <= '9' && !*end && v < sn->next) {
                char sp[4600];
                snprintf(sp, sizeof(sp), "%s/%s", wdir, de->d_name);
                sn->removed += unlink(sp) == 0;
            }
        }
        if (d)
            closedir(d);
    }
    sn->r = r;
    __atomic_store_n(&sn->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Reports a synced snapshot (on the loop thread) and frees it. */
static int snap_finish(struct tsdb *db, struct tsdb_snap *sn)
{
    if (sn->threaded)
        pthread_join(sn->th, NULL);
    int r = sn->r;
    if (r) {
        log_error("snapshot write failed; the WAL stays", "dir", sn->dir, "err", strerror(-r));
    } else {
        db->st.snapshots++;
        log_info("head snapshot written", "series", log_int((long long)sn->series), "bytes",
                 log_int((long long)sn->bytes), "wal_segments_removed", log_int((long long)sn->removed),
                 "ms", log_int((long long)(cairn_now_ms() - sn->t0)));
    }
    free(sn);
    return r;
}

/* Waits for the snapshot going to disk, if any. */
void tsdb__snap_drain(struct tsdb *db)
{
    struct tsdb_snap *sn = db->snap;
    db->snap = NULL;
    if (sn)
        snap_finish(db, sn);
}

/* Writes the head into dir/snapshot.tmp (not yet synced) after starting a new WAL
 * segment; NULL on failure (r says why). */
static struct tsdb_snap *snap_write(struct tsdb *db, int *r)
{
    uint64_t t0 = cairn_now_ms();
    *r = tsdb_commit(db, true);
    if (*r)
        return NULL;
    uint32_t next = db->wal_segment + 1;
    *r = tsdb__wal_open_segment(db, next, true);
    if (*r)
        return NULL;
    struct tsdb_snap *sn = calloc(1, sizeof(*sn));
    if (!sn) {
        *r = -ENOMEM;
        return NULL;
    }
    snprintf(sn->dir, sizeof(sn->dir), "%s", db->dir);
    sn->next = next;
    sn->t0 = t0;
    sn->series = db->active;
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s/snapshot.tmp", db->dir);
    FILE *f = fopen(tmp, "wbe");
    if (!f) {
        *r = -errno;
        free(sn);
        return NULL;
    }
    uint64_t n = db->active;
    bool ok = fwrite(SNAP_MAGIC, 1, 8, f) == 8 && fwrite(&next, 4, 1, f) == 1 &&
              fwrite(&n, 8, 1, f) == 1;
    struct buf b = BUF_INIT;
    uint64_t bytes = 20;
    for (size_t i = 0; ok && i < db->nseries; i++) {
        if (!db->series[i])
            continue;
        buf_reset(&b);
        snap_series(&b, db->series[i]);
        uint32_t len = (uint32_t)buf_used(&b), crc = (uint32_t)crc32(0L, (const Bytef *)buf_head(&b), len);
        ok = fwrite(&len, 4, 1, f) == 1 && fwrite(&crc, 4, 1, f) == 1 &&
             fwrite(buf_head(&b), 1, len, f) == len;
        bytes += 8 + len;
    }
    buf_free(&b);
    if (!ok) {
        *r = errno ? -errno : -EIO;
        fclose(f);
        unlink(tmp);
        log_error("snapshot write failed", "file", tmp, "err", strerror(-*r));
        free(sn);
        return NULL;
    }
    sn->f = f;
    sn->bytes = bytes;
    /* the WAL from `next` on is what the snapshot does not hold */
    db->wal_bytes_at_snapshot = db->st.wal_bytes;
    return sn;
}

int tsdb_snapshot(struct tsdb *db)
{
    if (!db->dir)
        return 0;
    tsdb__snap_drain(db);
    int r;
    struct tsdb_snap *sn = snap_write(db, &r);
    if (!sn)
        return r;
    snap_sync(sn);
    return snap_finish(db, sn);
}

int tsdb_snapshot_background(struct tsdb *db)
{
    if (!db->dir)
        return 0;
    if (db->snap) {
        if (!__atomic_load_n(&db->snap->done, __ATOMIC_ACQUIRE))
            return 0;           /* one at a time */
        tsdb__snap_drain(db);
    }
    int r;
    struct tsdb_snap *sn = snap_write(db, &r);
    if (!sn)
        return r;
    if (db->background && pthread_create(&sn->th, NULL, snap_sync, sn) == 0) {
        sn->threaded = true;
        db->snap = sn;
        return 0;
    }
    snap_sync(sn);
    return snap_finish(db, sn);
}

struct rd {
    const uint8_t *p;
    size_t n, o;
    bool bad;
};

static void get(struct rd *r, void *out, size_t n)
{
    if (r->bad || r->o + n > r->n) {
        r->bad = true;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p + r->o, n);
    r->o += n;
}

static uint8_t *get_bytes(struct rd *r, size_t n, size_t cap)
{
    if (r->bad || r->o + n > r->n) {
        r->bad = true;
        return NULL;
    }
    uint8_t *b = calloc(cap > n ? cap : (n ? n : 1), 1);
    if (!b) {
        r->bad = true;
        return NULL;
    }
    memcpy(b, r->p + r->o, n);
    r->o += n;
    return b;
}

/* version: the snapshot format's (1 or 2, from its magic) */
static int snap_load_series(struct tsdb *db, const uint8_t *p, size_t len, int snap_version)
{
    struct rd r = { p, len, 0, false };
    uint64_t ref;
    uint16_t n;
    get(&r, &ref, 8);
    get(&r, &n, 2);
    if (r.bad || n > TSDB_MAX_LABELS || !tsdb__slots_upto(db, ref))
        return -EINVAL;
    struct tsdb_label pairs[TSDB_MAX_LABELS];
    char *strs[TSDB_MAX_LABELS * 2];
    int ns = 0;
    for (uint16_t i = 0; i < n && !r.bad; i++)
        for (int k = 0; k < 2 && !r.bad; k++) {
            uint16_t sl;
            get(&r, &sl, 2);
            uint8_t *sb = get_bytes(&r, sl, (size_t)sl + 1);
            if (sb)
                strs[ns++] = (char *)sb;
        }
    struct tsdb_series *s = NULL;
    if (!r.bad) {
        for (uint16_t i = 0; i < n; i++)
            pairs[i] = (struct tsdb_label){ strs[2 * i], strs[2 * i + 1] };
        struct tsdb_labels l;
        if (tsdb_labels_make(&l, pairs, n) == 0) {
            s = tsdb__series_insert(db, &l, tsdb_labels_hash(&l), false);
            if (!s)
                tsdb_labels_free(&l);
        }
    }
    for (int i = 0; i < ns; i++)
        free(strs[i]);
    if (!s)
        return -EINVAL;
    uint8_t hl;
    get(&r, &hl, 1);
    s->has_last = hl;
    get(&r, &s->last_t, 8);
    get(&r, &s->last_v, 8);
    uint32_t nc;
    get(&r, &nc, 4);
    if (r.bad || nc > len / 22)
        return -EINVAL;
    s->chunks = calloc(nc ? nc : 1, sizeof(*s->chunks));
    s->capchunks = nc ? nc : 1;
    if (!s->chunks)
        return -ENOMEM;
    for (uint32_t i = 0; i < nc && !r.bad; i++) {
        struct tsdb_sealed *c = &s->chunks[i];
        get(&r, &c->mint, 8);
        get(&r, &c->maxt, 8);
        get(&r, &c->n, 2);
        get(&r, &c->nbits, 4);
        c->b = get_bytes(&r, (c->nbits + 7) / 8, 0);
        if (c->b)
            s->nchunks++;
    }
    if (snap_version >= 2) {
        uint32_t no;
        get(&r, &no, 4);
        if (r.bad || no > (len - r.o) / 16)
            return -EINVAL;
        if (no) {
            s->ooo_t = malloc(no * sizeof(*s->ooo_t));
            s->ooo_v = malloc(no * sizeof(*s->ooo_v));
            if (!s->ooo_t || !s->ooo_v)
                return -ENOMEM;
            s->capooo = no;
            for (uint32_t i = 0; i < no && !r.bad; i++) {
                get(&r, &s->ooo_t[i], 8);
                get(&r, &s->ooo_v[i], 8);
                if (i && s->ooo_t[i] <= s->ooo_t[i - 1])
                    r.bad = true;       /* the merge needs them sorted */
            }
            s->nooo = no;
            db->st.samples_appended += no;
        }
    }
    struct tsdb_chunk *h = &s->head;
    get(&r, &h->n, 2);
    get(&r, &h->nbits, 4);
    get(&r, &h->mint, 8);
    get(&r, &h->maxt, 8);
    get(&r, &h->t, 8);
    get(&r, &h->tdelta, 8);
    get(&r, &h->vbits, 8);
    get(&r, &h->leading, 1);
    get(&r, &h->trailing, 1);
    if (!r.bad && h->n) {
        size_t nb = (h->nbits + 7) / 8;
        uint32_t cap = 32;
        while (cap < nb + 16)
            cap *= 2;
        free(h->b);
        h->b = get_bytes(&r, nb, cap);
        h->capbytes = h->b ? cap : 0;
    }
    /* the encoder state must be one the encoder can continue from: no bits
     * without samples, at most ~160 bits a sample */
    if (r.bad || r.o != r.n || h->n > TSDB_CHUNK_MAX_SAMPLES || (h->n == 0) != (h->nbits == 0) ||
        h->nbits > 160u * TSDB_CHUNK_MAX_SAMPLES)
        return -EINVAL;
    /* what blocks already hold (a crash between a block cut and its snapshot) */
    uint32_t k = 0;
    while (k < s->nchunks && s->chunks[k].maxt < db->min_valid)
        free(s->chunks[k++].b);
    if (k) {
        memmove(s->chunks, s->chunks + k, (s->nchunks - k) * sizeof(*s->chunks));
        s->nchunks -= k;
    }
    uint32_t o = 0;
    while (o < s->nooo && s->ooo_t[o] < db->min_valid)
        o++;
    if (o) {
        memmove(s->ooo_t, s->ooo_t + o, (s->nooo - o) * sizeof(*s->ooo_t));
        memmove(s->ooo_v, s->ooo_v + o, (s->nooo - o) * sizeof(*s->ooo_v));
        s->nooo -= o;
    }
    for (uint32_t i = 0; i <= s->nchunks; i++) {
        int64_t mn = i < s->nchunks ? s->chunks[i].mint : h->mint;
        int64_t mx = i < s->nchunks ? s->chunks[i].maxt : h->maxt;
        if (i == s->nchunks && !h->n)
            break;
        if (db->st.samples_appended == 0 || mn < db->mint)
            db->mint = mn;
        if (db->st.samples_appended == 0 || mx > db->maxt)
            db->maxt = mx;
        db->st.samples_appended += i < s->nchunks ? s->chunks[i].n : h->n;
    }
    return 0;
}

/* Loads dir/snapshot if there is one; *first_seg gets the first WAL segment to
 * replay (0 without a snapshot). A damaged snapshot is an error: the WAL after it
 * names series by the references it holds, so nothing can be loaded without it,
 * and the files are left as they are for the operator. */
int tsdb__snap_load(struct tsdb *db, uint32_t *first_seg, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/snapshot", db->dir);
    *first_seg = 0;
    FILE *f = fopen(path, "rbe");
    if (!f)
        return 0;
    uint64_t t0 = cairn_now_ms();
    char magic[8];
    uint32_t seg = 0;
    uint64_t n = 0;
    bool ok = fread(magic, 1, 8, f) == 8 && (!memcmp(magic, SNAP_MAGIC, 8) ||
                                              !memcmp(magic, "CAIRNSN1", 8)) &&
              fread(&seg, 4, 1, f) == 1 && fread(&n, 8, 1, f) == 1;
    int snap_version = magic[7] - '0';
    uint8_t *p = NULL;
    size_t cap = 0;
    for (uint64_t i = 0; ok && i < n; i++) {
        uint32_t len, crc;
        ok = fread(&len, 4, 1, f) == 1 && fread(&crc, 4, 1, f) == 1 && len <= WAL_RECORD_MAX;
        if (ok && len > cap) {
            uint8_t *np = realloc(p, len);
            ok = np != NULL;
            if (np) {
                p = np;
                cap = len;
            }
        }
        ok = ok && fread(p, 1, len, f) == len && (uint32_t)crc32(0L, p, len) == crc &&
             snap_load_series(db, p, len, snap_version) == 0;
    }
    free(p);
    fclose(f);
    if (!ok) {
        snprintf(err, errlen, "%s: head snapshot damaged after %llu series; move it away to start "
                              "without it (the samples it holds are then lost)", path,
                 (unsigned long long)db->active);
        return -EINVAL;
    }
    *first_seg = seg;
    log_info("head snapshot loaded", "series", log_int((long long)db->active), "samples",
             log_int((long long)db->st.samples_appended), "ms",
             log_int((long long)(cairn_now_ms() - t0)));
    return 0;
}
