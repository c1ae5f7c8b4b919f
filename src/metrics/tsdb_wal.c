/* tsdb_wal.c - the write-ahead log: records, segments, commit, and the replay
 * at open (parallel by series). */
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

/* ---- WAL ---- */

void tsdb__wal_record(struct tsdb *db, int type, const void *p, size_t n)
{
    uint8_t hdr[9];
    uint32_t len = (uint32_t)n, crc = (uint32_t)crc32(0L, p, (uInt)n);
    hdr[0] = (uint8_t)type;
    memcpy(hdr + 1, &len, 4);
    memcpy(hdr + 5, &crc, 4);
    buf_append(&db->walbuf, hdr, 9);
    buf_append(&db->walbuf, p, n);
}

void tsdb__wal_flush_samples(struct tsdb *db)
{
    if (!db->pending_samples)
        return;
    struct buf b = BUF_INIT;
    buf_append(&b, &db->pending_samples, 4);
    buf_append(&b, buf_head(&db->samplebuf), buf_used(&db->samplebuf));
    tsdb__wal_record(db, REC_SAMPLES, buf_head(&b), buf_used(&b));
    buf_free(&b);
    buf_reset(&db->samplebuf);
    db->pending_samples = 0;
}

int tsdb__wal_open_segment(struct tsdb *db, uint32_t seg, bool create)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/wal/%08u", db->dir, seg);
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (fd < 0)
        return -errno;
    if (db->wal_fd >= 0)
        close(db->wal_fd);
    db->wal_fd = fd;
    db->wal_segment = seg;
    struct stat st;
    db->wal_segment_bytes = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

int tsdb_commit(struct tsdb *db, bool sync)
{
    if (!db->dir)
        return 0;
    tsdb__wal_flush_samples(db);
    size_t n = buf_used(&db->walbuf);
    const char *p = n ? buf_head(&db->walbuf) : NULL;
    while (n) {
        ssize_t w = write(db->wal_fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            log_error("wal write failed", "err", strerror(errno));
            /* keep the bytes: the next commit tries again */
            buf_consume(&db->walbuf, buf_used(&db->walbuf) - n);
            return e;
        }
        p += w;
        n -= (size_t)w;
        db->wal_segment_bytes += (uint64_t)w;
        db->st.wal_bytes += (uint64_t)w;
    }
    buf_reset(&db->walbuf);
    if (sync) {
        if (fdatasync(db->wal_fd)) {
            log_error("wal fsync failed", "err", strerror(errno));
            return -errno;
        }
        db->st.wal_fsyncs++;
    }
    if (db->wal_segment_bytes > WAL_SEGMENT_MAX) {
        fdatasync(db->wal_fd);
        int r = tsdb__wal_open_segment(db, db->wal_segment + 1, true);
        if (r)
            return r;
    }
    return 0;
}

int tsdb__cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- parallel WAL replay ----
 *
 * The reading thread checks each record and creates series in WAL order; samples
 * go to worker threads by series reference, so each series is appended to by one
 * thread, in WAL order. Workers count into their own statistics, merged at the end. */

static void *replay_worker(void *arg)
{
    struct rworker *w = arg;
    struct acc ac = { &w->st, &w->mint, &w->maxt, &w->head_mint };
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->count && !w->done)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->count) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        struct rbatch b = w->q[w->head];
        w->head = (w->head + 1) % REPLAY_QUEUE;
        w->count--;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        for (size_t i = 0; i < b.n; i++)
            tsdb__append_acc(w->db, &ac, b.x[i].s, b.x[i].t, b.x[i].v);
        free(b.x);
    }
}

static void replay_submit(struct rworker *w)
{
    if (!w->fill.n)
        return;
    pthread_mutex_lock(&w->mu);
    while (w->count == REPLAY_QUEUE)
        pthread_cond_wait(&w->cv, &w->mu);
    w->q[(w->head + w->count) % REPLAY_QUEUE] = w->fill;
    w->count++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    w->fill.x = NULL;
    w->fill.n = 0;
}

/* Hands a sample to its series' worker; false when memory ran out (the caller
 * appends it itself then). */
static bool replay_sample(struct replay *rp, struct tsdb_series *s, int64_t t, double v)
{
    struct rworker *w = &rp->w[s->ref % rp->nw];
    if (!w->fill.x && !(w->fill.x = malloc(REPLAY_BATCH * sizeof(*w->fill.x))))
        return false;
    w->fill.x[w->fill.n++] = (struct rsample){ s, t, v };
    if (w->fill.n == REPLAY_BATCH)
        replay_submit(w);
    return true;
}

/* Starts up to one worker per core (none on one core: replay stays inline). */
void tsdb__replay_start(struct tsdb *db, struct replay *rp)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    size_t n = cores > 8 ? 8 : cores > 1 ? (size_t)cores : 0;
    rp->nw = 0;
    rp->w = n ? calloc(n, sizeof(*rp->w)) : NULL;
    for (size_t i = 0; rp->w && i < n; i++) {
        struct rworker *w = &rp->w[i];
        w->db = db;
        w->mint = INT64_MAX;
        w->maxt = INT64_MIN;
        w->head_mint = INT64_MAX;
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
        if (pthread_create(&w->th, NULL, replay_worker, w)) {
            pthread_mutex_destroy(&w->mu);
            pthread_cond_destroy(&w->cv);
            break;
        }
        rp->nw++;
    }
    if (!rp->nw) {
        free(rp->w);
        rp->w = NULL;
    }
}

void tsdb__replay_stop(struct tsdb *db, struct replay *rp)
{
    for (size_t i = 0; i < rp->nw; i++) {
        struct rworker *w = &rp->w[i];
        replay_submit(w);
        pthread_mutex_lock(&w->mu);
        w->done = true;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->th, NULL);
        free(w->fill.x);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        if (w->st.samples_appended) {
            if (!db->st.samples_appended || w->mint < db->mint)
                db->mint = w->mint;
            if (!db->st.samples_appended || w->maxt > db->maxt)
                db->maxt = w->maxt;
        }
        if (w->head_mint < db->head_mint)
            db->head_mint = w->head_mint;
        db->st.samples_appended += w->st.samples_appended;
        db->st.out_of_order += w->st.out_of_order;
        db->st.duplicates += w->st.duplicates;
        db->st.ooo_accepted += w->st.ooo_accepted;
    }
    free(rp->w);
    rp->w = NULL;
    rp->nw = 0;
}

/* Replays one segment; returns the offset of the end of the last good record. */
off_t tsdb__replay_segment(struct tsdb *db, struct replay *rp, const char *path, bool *torn)
{
    FILE *f = fopen(path, "rb");
    off_t good = 0;
    *torn = false;
    if (!f)
        return 0;
    uint8_t *payload = NULL;
    size_t cap = 0;
    for (;;) {
        uint8_t hdr[9];
        size_t r = fread(hdr, 1, 9, f);
        if (r == 0)
            break;
        uint32_t len, crc;
        memcpy(&len, hdr + 1, 4);
        memcpy(&crc, hdr + 5, 4);
        if (r < 9 || len > WAL_RECORD_MAX || (hdr[0] != REC_SERIES && hdr[0] != REC_SAMPLES)) {
            *torn = true;
            break;
        }
        if (len > cap) {
            uint8_t *np = realloc(payload, len);
            if (!np) {
                *torn = true;
                break;
            }
            payload = np;
            cap = len;
        }
        if (fread(payload, 1, len, f) != len || (uint32_t)crc32(0L, payload, len) != crc) {
            *torn = true;
            break;
        }
        bool bad = false;
        if (hdr[0] == REC_SERIES) {
            uint64_t ref;
            uint16_t n;
            size_t o = 10;
            struct tsdb_label pairs[TSDB_MAX_LABELS];
            char *strs[TSDB_MAX_LABELS * 2];
            int ns = 0;
            if (len < 10) {
                bad = true;
            } else {
                memcpy(&ref, payload, 8);
                memcpy(&n, payload + 8, 2);
                bad = n > TSDB_MAX_LABELS || !tsdb__slots_upto(db, ref);
                for (uint16_t i = 0; i < n && !bad; i++)
                    for (int k = 0; k < 2 && !bad; k++) {
                        uint16_t sl;
                        if (o + 2 > len) {
                            bad = true;
                            break;
                        }
                        memcpy(&sl, payload + o, 2);
                        o += 2;
                        if (o + sl > len) {
                            bad = true;
                            break;
                        }
                        strs[ns] = strndup((const char *)payload + o, sl);
                        if (!strs[ns]) {
                            bad = true;
                            break;
                        }
                        ns++;
                        o += sl;
                    }
                if (!bad) {
                    for (uint16_t i = 0; i < n; i++)
                        pairs[i] = (struct tsdb_label){ strs[2 * i], strs[2 * i + 1] };
                    struct tsdb_labels l;
                    if (tsdb_labels_make(&l, pairs, n) == 0) {
                        if (!tsdb__series_insert(db, &l, tsdb_labels_hash(&l), false)) {
                            tsdb_labels_free(&l);
                            bad = true;
                        }
                    } else {
                        bad = true;
                    }
                }
            }
            for (int i = 0; i < ns; i++)
                free(strs[i]);
        } else {
            uint32_t n;
            if (len < 4) {
                bad = true;
            } else {
                memcpy(&n, payload, 4);
                if ((uint64_t)n * 24 + 4 != len)
                    bad = true;
                for (uint32_t i = 0; i < n && !bad; i++) {
                    uint64_t ref;
                    int64_t t;
                    double v;
                    memcpy(&ref, payload + 4 + 24 * i, 8);
                    memcpy(&t, payload + 12 + 24 * i, 8);
                    memcpy(&v, payload + 20 + 24 * i, 8);
                    struct tsdb_series *s = tsdb_series_by_ref(db, ref);
                    if (!s) {
                        bad = true;
                        break;
                    }
                    if (!rp->nw || !replay_sample(rp, s, t, v))
                        tsdb__append_mem(db, s, t, v);
                }
            }
        }
        if (bad) {
            *torn = true;
            break;
        }
        db->st.replayed_records++;
        good = ftello(f);
    }
    free(payload);
    fclose(f);
    return good;
}
