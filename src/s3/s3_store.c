/* s3_store.c - where objects live.
 *
 * Metadata is in SQLite (<data>/meta.db, WAL, synchronous=FULL): buckets,
 * objects (key -> size, ETag, stored headers, the data files of its parts),
 * multipart uploads and their parts. Object bytes are in data files under
 * <data>/data/<2 hex>/<32 hex>, written once and never changed: the bytes, then
 * a trailer of one CRC32C per 64 KiB block, then the block count. A PUT writes
 * and fsyncs its file (and directory) first and then commits the row that
 * points at it, so a crash leaves either the old object or the new one whole;
 * files of replaced objects are unlinked after the commit, and files no row
 * names (a crash between the two steps) are removed at start.
 */
#include "s3_internal.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

const char *const s3_ck_names[S3_CK_N] = { "crc32", "crc32c", "sha1", "sha256" };

/* ---- CRC32C (Castagnoli), slicing by 8 ---- */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

#if defined(__x86_64__)
/* The crc32 instruction takes 3 cycles and can start one a cycle: three streams
 * over three thirds of a long buffer run at about three times one stream's rate,
 * then combine. Appending CRC_LANE zero bytes to a CRC state is linear in the
 * state; lane_shift[k] is the image of bit k (made with the instruction itself,
 * whose zero-data step appends 8 zero bytes). */
#define CRC_LANE 8192u
static uint32_t lane_shift[32];
static pthread_once_t lane_once = PTHREAD_ONCE_INIT;

__attribute__((target("sse4.2"))) static void lane_init(void)
{
    for (int k = 0; k < 32; k++) {
        uint64_t v = 1u << k;
        for (unsigned i = 0; i < CRC_LANE / 8; i++)
            v = __builtin_ia32_crc32di(v, 0);
        lane_shift[k] = (uint32_t)v;
    }
}

static uint32_t lane_skip(uint32_t c)
{
    uint32_t r = 0;
    for (int k = 0; c; k++, c >>= 1)
        if (c & 1)
            r ^= lane_shift[k];
    return r;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = crc;
    if (n >= 3 * CRC_LANE)
        pthread_once(&lane_once, lane_init);
    while (n >= 3 * CRC_LANE) {
        uint64_t b = 0, d = 0;
        for (size_t i = 0; i < CRC_LANE; i += 8) {
            uint64_t x, y, z;
            memcpy(&x, p + i, 8);
            memcpy(&y, p + CRC_LANE + i, 8);
            memcpy(&z, p + 2 * CRC_LANE + i, 8);
            c = __builtin_ia32_crc32di(c, x);
            b = __builtin_ia32_crc32di(b, y);
            d = __builtin_ia32_crc32di(d, z);
        }
        c = lane_skip(lane_skip((uint32_t)c) ^ (uint32_t)b) ^ (uint32_t)d;
        p += 3 * CRC_LANE;
        n -= 3 * CRC_LANE;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

uint32_t s3_crc32c(uint32_t crc, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc32c_hw(crc, p, n);
#endif
    pthread_once(&crc_once, crc_init);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = crc_tab[7][v & 0xff] ^ crc_tab[6][(v >> 8) & 0xff] ^ crc_tab[5][(v >> 16) & 0xff] ^
              crc_tab[4][(v >> 24) & 0xff] ^ crc_tab[3][(v >> 32) & 0xff] ^
              crc_tab[2][(v >> 40) & 0xff] ^ crc_tab[1][(v >> 48) & 0xff] ^ crc_tab[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

int s3_b64(const uint8_t *p, size_t n, char *out, size_t cap)
{
    if (cap < 4 * ((n + 2) / 3) + 1)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, p, (int)n);
}

int s3_unb64(const char *s, uint8_t *out, size_t cap)
{
    size_t n = strlen(s);
    if (n % 4 || n / 4 * 3 > cap + 2)
        return -1;
    uint8_t tmp[256];
    if (n / 4 * 3 > sizeof(tmp))
        return -1;
    int r = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n);
    if (r < 0)
        return -1;
    if (n && s[n - 1] == '=')
        r--;
    if (n > 1 && s[n - 2] == '=')
        r--;
    if ((size_t)r > cap)
        return -1;
    memcpy(out, tmp, (size_t)r);
    return r;
}

void s3_random_hex(char *out, size_t nbytes)
{
    uint8_t b[64];
    if (nbytes > sizeof(b))
        nbytes = sizeof(b);
    if (RAND_bytes(b, (int)nbytes) != 1)
        for (size_t i = 0; i < nbytes; i++)
            b[i] = (uint8_t)random();
    cairn_hex(b, nbytes, out);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- data files ---- */

static void file_path(char *out, size_t cap, const char *dir, const char *id)
{
    snprintf(out, cap, "%s/data/%.2s/%s", dir, id, id);
}

static int fsync_dir(const char *path)
{
    char d[512];
    snprintf(d, sizeof(d), "%s", path);
    char *sl = strrchr(d, '/');
    if (sl)
        *sl = 0;
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) ? -errno : 0;
    close(fd);
    return r;
}

int s3_writer_open(struct s3_writer *w, const char *dir, unsigned want)
{
    memset(w, 0, sizeof(*w));
    w->fd = -1;
    w->dir = dir;
    w->want = want;
    s3_random_hex(w->id, 16);
    file_path(w->path, sizeof(w->path), dir, w->id);
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/data/%.2s", dir, w->id);
    if (mkdir(sub, 0755) && errno != EEXIST)
        return -errno;
    w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0)
        return -errno;
    w->ring = malloc((size_t)S3_RING * S3_BLOCK);
    w->block = w->ring;
    w->md5 = EVP_MD_CTX_new();
    if (!w->ring || !w->md5 || !EVP_DigestInit_ex(w->md5, EVP_md5(), NULL))
        return -ENOMEM;
    if (want & (1u << S3_CK_SHA1)) {
        w->sha1 = EVP_MD_CTX_new();
        if (!w->sha1 || !EVP_DigestInit_ex(w->sha1, EVP_sha1(), NULL))
            return -ENOMEM;
    }
    if (want & (1u << S3_CK_SHA256)) {
        w->sha256 = EVP_MD_CTX_new();
        if (!w->sha256 || !EVP_DigestInit_ex(w->sha256, EVP_sha256(), NULL))
            return -ENOMEM;
    }
    w->crc32 = (uint32_t)crc32(0, NULL, 0);
    return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The digests of the whole object (MD5 for the ETag, and those the client asked for). */
static void hash_block(struct s3_writer *w, const uint8_t *p, size_t n)
{
    EVP_DigestUpdate(w->md5, p, n);
    if (w->sha1)
        EVP_DigestUpdate(w->sha1, p, n);
    if (w->sha256)
        EVP_DigestUpdate(w->sha256, p, n);
    if (w->want & (1u << S3_CK_CRC32))
        w->crc32 = (uint32_t)crc32_z(w->crc32, p, n);
    if (w->want & (1u << S3_CK_CRC32C))
        w->crc32c_all = s3_crc32c(w->crc32c_all, p, n);
}

/* A large upload's digests are computed on a thread of their own, a ring of blocks
 * behind the loop that receives and writes them: MD5 alone costs more per byte
 * than everything else a PUT does. The two wake each other in batches, not per
 * block (a wake-up costs about what hashing 20 KiB does): the hasher once
 * S3_WAKE_BATCH blocks wait for it, the loop once half the ring is free again. */
#define S3_WAKE_BATCH 8

static void *hasher(void *arg)
{
    struct s3_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->hashed == w->filled && !w->closing) {
            w->hasher_waits = true;
            pthread_cond_wait(&w->hasher_cv, &w->mu);
            w->hasher_waits = false;
        }
        if (w->hashed == w->filled)
            break;
        uint64_t i = w->hashed;
        pthread_mutex_unlock(&w->mu);
        hash_block(w, w->ring + (i % S3_RING) * S3_BLOCK, w->lens[i % S3_RING]);
        pthread_mutex_lock(&w->mu);
        w->hashed++;
        if (w->loop_waits && w->filled - w->hashed <= S3_RING / 2)
            pthread_cond_signal(&w->loop_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Waits for the hasher to take every block, and stops it. */
static void hasher_stop(struct s3_writer *w)
{
    if (!w->threaded)
        return;
    pthread_mutex_lock(&w->mu);
    w->closing = true;
    pthread_cond_signal(&w->hasher_cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->hasher_cv);
    pthread_cond_destroy(&w->loop_cv);
    w->threaded = false;
}

static int flush_block(struct s3_writer *w)
{
    if (!w->blen)
        return 0;
    if (w->ncrc == w->capcrc) {
        size_t nc = w->capcrc ? w->capcrc * 2 : 64;
        uint32_t *n = realloc(w->crcs, nc * sizeof(*n));
        if (!n)
            return -ENOMEM;
        w->crcs = n;
        w->capcrc = nc;
    }
    w->crcs[w->ncrc++] = s3_crc32c(0, w->block, w->blen);
    if (!w->threaded && w->filled >= S3_RING / 2) {
        /* large enough to be worth a thread */
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->hasher_cv, NULL);
        pthread_cond_init(&w->loop_cv, NULL);
        w->threaded = pthread_create(&w->thread, NULL, hasher, w) == 0;
        if (!w->threaded) {
            pthread_mutex_destroy(&w->mu);
            pthread_cond_destroy(&w->hasher_cv);
            pthread_cond_destroy(&w->loop_cv);
        }
    }
    if (!w->threaded)
        hash_block(w, w->block, w->blen);
    int r = write_all(w->fd, w->block, w->blen);
    if (w->threaded) {
        /* hand the block over, then wait for room in the ring */
        pthread_mutex_lock(&w->mu);
        w->lens[w->filled % S3_RING] = w->blen;
        w->filled++;
        if (w->hasher_waits && w->filled - w->hashed >= S3_WAKE_BATCH)
            pthread_cond_signal(&w->hasher_cv);
        while (w->filled - w->hashed >= S3_RING) {
            w->loop_waits = true;
            pthread_cond_wait(&w->loop_cv, &w->mu);
            w->loop_waits = false;
        }
        pthread_mutex_unlock(&w->mu);
    } else {
        w->hashed = ++w->filled;
    }
    w->block = w->ring + (w->filled % S3_RING) * S3_BLOCK;
    w->blen = 0;
    /* start writeback every 8 MiB, so that the fdatasync before the answer finds
     * little left to write (the disk works while the rest arrives) */
    uint64_t written = (uint64_t)w->ncrc * S3_BLOCK;
    if (!r && written - w->synced >= (8u << 20)) {
        sync_file_range(w->fd, (off64_t)w->synced, (off64_t)(written - w->synced), SYNC_FILE_RANGE_WRITE);
        w->synced = written;
    }
    return r;
}

int s3_writer_write(struct s3_writer *w, const void *p, size_t n)
{
    if (w->err)
        return w->err;
    const char *c = p;
    w->size += n;
    while (n) {
        size_t take = MIN(n, S3_BLOCK - w->blen);
        memcpy(w->block + w->blen, c, take);
        w->blen += take;
        c += take;
        n -= take;
        if (w->blen == S3_BLOCK && (w->err = flush_block(w)))
            return w->err;
    }
    return 0;
}

int s3_writer_finish(struct s3_writer *w, uint8_t md5[16])
{
    int r = w->err ? w->err : flush_block(w);
    if (!r) {
        uint32_t cnt = (uint32_t)w->ncrc;
        r = write_all(w->fd, w->crcs, w->ncrc * sizeof(uint32_t));
        if (!r)
            r = write_all(w->fd, &cnt, sizeof(cnt));
    }
    if (!r && fdatasync(w->fd))
        r = -errno;
    if (!r)
        r = fsync_dir(w->path);
    hasher_stop(w);
    unsigned l = 16;
    EVP_DigestFinal_ex(w->md5, md5, &l);
    if (r)
        s3_writer_abort(w);
    return r;
}

void s3_writer_checksum(struct s3_writer *w, enum s3_ck ck, char *out, size_t cap)
{
    uint8_t d[32];
    unsigned l = 0;
    out[0] = 0;
    /* every byte written so far is hashed first */
    if (w->blen && !w->err)
        w->err = flush_block(w);
    hasher_stop(w);
    switch (ck) {
    case S3_CK_CRC32:
    case S3_CK_CRC32C: {
        uint32_t v = ck == S3_CK_CRC32 ? w->crc32 : w->crc32c_all;
        uint8_t be[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
        s3_b64(be, 4, out, cap);
        return;
    }
    case S3_CK_SHA1:
        if (w->sha1 && EVP_DigestFinal_ex(w->sha1, d, &l))
            s3_b64(d, l, out, cap);
        EVP_MD_CTX_free(w->sha1);
        w->sha1 = NULL;
        return;
    case S3_CK_SHA256:
        if (w->sha256 && EVP_DigestFinal_ex(w->sha256, d, &l))
            s3_b64(d, l, out, cap);
        EVP_MD_CTX_free(w->sha256);
        w->sha256 = NULL;
        return;
    case S3_CK_N:
        return;
    }
}

static void writer_release(struct s3_writer *w)
{
    hasher_stop(w);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    free(w->ring);
    w->ring = NULL;
    free(w->crcs);
    EVP_MD_CTX_free(w->md5);
    EVP_MD_CTX_free(w->sha1);
    EVP_MD_CTX_free(w->sha256);
    w->block = NULL;
    w->crcs = NULL;
    w->md5 = w->sha1 = w->sha256 = NULL;
}

void s3_writer_abort(struct s3_writer *w)
{
    if (w->fd >= 0)
        unlink(w->path);
    writer_release(w);
}

void s3_writer_done(struct s3_writer *w)
{
    writer_release(w);
}

int s3_reader_open(struct s3_reader *r, const char *dir, const char *id, uint64_t size)
{
    memset(r, 0, sizeof(*r));
    char path[512];
    file_path(path, sizeof(path), dir, id);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0)
        return -errno;
    r->size = size;
    r->ncrc = (size_t)((size + S3_BLOCK - 1) / S3_BLOCK);
    uint32_t cnt = 0;
    r->crcs = malloc(r->ncrc * sizeof(uint32_t) + 4);
    r->blk = malloc(S3_BLOCK);
    if (!r->crcs || !r->blk) {
        s3_reader_close(r);
        return -ENOMEM;
    }
    ssize_t want = (ssize_t)(r->ncrc * sizeof(uint32_t));
    if (pread(r->fd, r->crcs, (size_t)want, (off_t)size) != want ||
        pread(r->fd, &cnt, 4, (off_t)(size + (uint64_t)want)) != 4 || cnt != r->ncrc) {
        s3_reader_close(r);
        return -EIO;
    }
    return 0;
}

ssize_t s3_reader_read(struct s3_reader *r, uint64_t off, void *out, size_t len)
{
    /* whole blocks are read and checked; the caller's slice is copied out */
    uint64_t end = MIN(off + len, r->size);
    if (off >= end)
        return 0;
    uint64_t b0 = off / S3_BLOCK, b1 = (end - 1) / S3_BLOCK;
    uint8_t *blk = r->blk;
    size_t done = 0;
    for (uint64_t b = b0; b <= b1; b++) {
        uint64_t bstart = b * S3_BLOCK;
        size_t blen = (size_t)MIN((uint64_t)S3_BLOCK, r->size - bstart);
        ssize_t n = pread(r->fd, blk, blen, (off_t)bstart);
        if (n != (ssize_t)blen)
            return -EIO;
        if (s3_crc32c(0, blk, blen) != r->crcs[b])
            return -EIO;
        uint64_t from = MAX(off, bstart), to = MIN(end, bstart + blen);
        memcpy((char *)out + done, blk + (from - bstart), (size_t)(to - from));
        done += (size_t)(to - from);
    }
    return (ssize_t)done;
}

void s3_reader_close(struct s3_reader *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    free(r->crcs);
    free(r->blk);
    r->crcs = NULL;
    r->blk = NULL;
}

void s3_files_unlink(const char *dir, const char *list)
{
    char id[40], path[512];
    const char *p = list;
    while (p && *p) {
        unsigned long long sz;
        int used = 0;
        if (sscanf(p, "%39s %llu%n", id, &sz, &used) < 2)
            break;
        file_path(path, sizeof(path), dir, id);
        unlink(path);
        p += used;
        while (*p == '\n')
            p++;
    }
}

/* ---- metadata ---- */

enum {
    Q_BUCKET_INS, Q_BUCKET_DEL, Q_BUCKET_GET, Q_BUCKET_LIST, Q_BUCKET_ANY, Q_BUCKET_SET,
    Q_OBJ_GET, Q_OBJ_GETV, Q_OBJ_PUT, Q_OBJ_DELV, Q_OBJ_SCAN, Q_OBJ_SCANV, Q_OBJ_UNLATEST,
    Q_OBJ_RELATEST, Q_OBJ_NEXTSEQ, Q_OBJ_SETHDR,
    Q_UP_INS, Q_UP_GET, Q_UP_DEL, Q_UP_LIST, Q_UP_OLD,
    Q_PART_GET, Q_PART_PUT, Q_PART_LIST, Q_PART_DEL,
    Q_DONE_INS, Q_DONE_GET, Q_DONE_OLD,
    Q_BEGIN, Q_COMMIT, Q_ROLLBACK,
    Q_N
};

static const char *const sql[Q_N] = {
    [Q_BUCKET_INS] = "INSERT INTO buckets(name, created, owner) VALUES(?1, ?2, ?3)",
    [Q_BUCKET_DEL] = "DELETE FROM buckets WHERE name = ?1",
    [Q_BUCKET_GET] = "SELECT created, versioning, cors, lifecycle, tagging, owner FROM buckets WHERE name = ?1",
    [Q_BUCKET_LIST] = "SELECT name, created FROM buckets ORDER BY name",
    [Q_BUCKET_ANY] = "SELECT 1 FROM objects WHERE bucket = ?1 LIMIT 1",
    [Q_BUCKET_SET] = "UPDATE buckets SET versioning = ?2, cors = ?3, lifecycle = ?4, tagging = ?5 "
                     "WHERE name = ?1",
#define OBJ_COLS "size, etag, mtime, headers, parts, nparts, version, dm, latest, seq"
    [Q_OBJ_GET] = "SELECT " OBJ_COLS " FROM objects WHERE bucket = ?1 AND key = ?2 AND latest = 1",
    [Q_OBJ_GETV] = "SELECT " OBJ_COLS " FROM objects WHERE bucket = ?1 AND key = ?2 AND version = ?3",
    [Q_OBJ_PUT] = "INSERT INTO objects(bucket, key, size, etag, mtime, headers, parts, nparts, version, "
                  "dm, latest, seq) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11)",
    [Q_OBJ_DELV] = "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 AND version = ?3",
    [Q_OBJ_SCAN] = "SELECT key, " OBJ_COLS " FROM objects WHERE bucket = ?1 AND latest = 1 AND dm = 0 "
                   "AND key > ?2 AND key >= ?3 ORDER BY key LIMIT 1000",
    [Q_OBJ_SCANV] = "SELECT key, " OBJ_COLS " FROM objects WHERE bucket = ?1 AND key >= ?3 AND "
                    "(key > ?2 OR (key = ?2 AND seq < ?4)) ORDER BY key, seq DESC LIMIT 1000",
    [Q_OBJ_UNLATEST] = "UPDATE objects SET latest = 0 WHERE bucket = ?1 AND key = ?2 AND latest = 1",
    [Q_OBJ_RELATEST] = "UPDATE objects SET latest = 1 WHERE bucket = ?1 AND key = ?2 AND seq = "
                       "(SELECT MAX(seq) FROM objects WHERE bucket = ?1 AND key = ?2)",
    [Q_OBJ_SETHDR] = "UPDATE objects SET headers = ?4 WHERE bucket = ?1 AND key = ?2 AND dm = 0 AND "
                     "(version = ?3 OR (?3 IS NULL AND latest = 1))",
    [Q_OBJ_NEXTSEQ] = "SELECT COALESCE(MAX(seq), 0) + 1 FROM objects WHERE bucket = ?1 AND key = ?2",
    [Q_UP_INS] = "INSERT INTO uploads(id, bucket, key, created, headers) VALUES(?1, ?2, ?3, ?4, ?5)",
    [Q_UP_GET] = "SELECT bucket, key, headers FROM uploads WHERE id = ?1",
    [Q_UP_DEL] = "DELETE FROM uploads WHERE id = ?1",
    [Q_UP_LIST] = "SELECT id, key, created FROM uploads WHERE bucket = ?1 ORDER BY key, created",
    [Q_UP_OLD] = "SELECT id FROM uploads WHERE created < ?1 LIMIT 100",
    [Q_PART_GET] = "SELECT file, size FROM parts WHERE upload = ?1 AND num = ?2",
    [Q_PART_PUT] = "INSERT OR REPLACE INTO parts(upload, num, size, etag, file, mtime, checksum) "
                   "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_PART_LIST] = "SELECT num, size, etag, file, mtime, checksum FROM parts WHERE upload = ?1 ORDER BY num",
    [Q_PART_DEL] = "DELETE FROM parts WHERE upload = ?1",
    [Q_DONE_INS] = "INSERT OR REPLACE INTO completed(id, bucket, key, etag, at) VALUES(?1, ?2, ?3, ?4, ?5)",
    [Q_DONE_GET] = "SELECT etag FROM completed WHERE id = ?1 AND bucket = ?2 AND key = ?3",
    [Q_DONE_OLD] = "DELETE FROM completed WHERE at < ?1",
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
};

struct s3_db {
    sqlite3 *db;
    sqlite3_stmt *st[Q_N];
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS buckets(name TEXT PRIMARY KEY, created INTEGER NOT NULL,"
    " versioning INTEGER NOT NULL DEFAULT 0, cors TEXT, lifecycle TEXT, tagging TEXT, owner TEXT)"
    " WITHOUT ROWID;"
    /* one row per version of a key; latest marks the current one (a delete marker
     * when dm); an unversioned bucket has one version per key, "null" */
    "CREATE TABLE IF NOT EXISTS objects(bucket TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,"
    " version TEXT NOT NULL, latest INTEGER NOT NULL, dm INTEGER NOT NULL, size INTEGER NOT NULL,"
    " etag TEXT NOT NULL, mtime INTEGER NOT NULL, headers TEXT NOT NULL, parts TEXT NOT NULL,"
    " nparts INTEGER NOT NULL, PRIMARY KEY(bucket, key, seq)) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX IF NOT EXISTS objects_version ON objects(bucket, key, version);"
    "CREATE INDEX IF NOT EXISTS objects_latest ON objects(bucket, key) WHERE latest = 1;"
    "CREATE TABLE IF NOT EXISTS uploads(id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL,"
    " created INTEGER NOT NULL, headers TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS uploads_bucket ON uploads(bucket, key);"
    "CREATE TABLE IF NOT EXISTS parts(upload TEXT NOT NULL, num INTEGER NOT NULL, size INTEGER NOT NULL,"
    " etag TEXT NOT NULL, file TEXT NOT NULL, mtime INTEGER NOT NULL, checksum TEXT NOT NULL,"
    " PRIMARY KEY(upload, num))"
    " WITHOUT ROWID;"
    /* completed uploads, a day long: completing one again answers as the first time */
    "CREATE TABLE IF NOT EXISTS completed(id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL,"
    " etag TEXT NOT NULL, at INTEGER NOT NULL);";

struct s3_db *s3_db_open(const char *dir, char *err, size_t errlen)
{
    struct s3_db *d = calloc(1, sizeof(*d));
    char path[512];
    snprintf(path, sizeof(path), "%s/meta.db", dir);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        goto fail;
    sqlite3_busy_timeout(d->db, 10000);
    if (sqlite3_exec(d->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(d->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    for (int i = 0; i < Q_N; i++)
        if (sqlite3_prepare_v3(d->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &d->st[i], NULL) != SQLITE_OK)
            goto fail;
    return d;
fail:
    snprintf(err, errlen, "%s: %s", path, d->db ? sqlite3_errmsg(d->db) : "cannot open");
    s3_db_close(d);
    return NULL;
}

void s3_db_close(struct s3_db *d)
{
    if (!d)
        return;
    for (int i = 0; i < Q_N; i++)
        sqlite3_finalize(d->st[i]);
    sqlite3_close(d->db);
    free(d);
}

static sqlite3_stmt *q(struct s3_db *d, int which)
{
    sqlite3_stmt *s = d->st[which];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

static void bind_text(sqlite3_stmt *s, int i, const char *t)
{
    sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
}

static int step_done(sqlite3_stmt *s)
{
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    if (r == SQLITE_DONE)
        return 0;
    if (r == SQLITE_CONSTRAINT)
        return -EEXIST;
    if (r == SQLITE_FULL)
        return -ENOSPC;
    if (r == SQLITE_BUSY)
        return -EBUSY;
    return -EIO;
}

static int tx(struct s3_db *d, int which)
{
    return step_done(q(d, which));
}

static char *col_dup(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return strdup(t ? (const char *)t : "");
}

int s3_bucket_create(struct s3_db *d, const char *name, const char *owner)
{
    sqlite3_stmt *s = q(d, Q_BUCKET_INS);
    bind_text(s, 1, name);
    sqlite3_bind_int64(s, 2, now_ms());
    bind_text(s, 3, owner);
    return step_done(s);
}

static char *col_dup_null(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? strdup((const char *)t) : NULL;
}

int s3_bucket_get(struct s3_db *d, const char *name, struct s3_bucket *b)
{
    sqlite3_stmt *s = q(d, Q_BUCKET_GET);
    bind_text(s, 1, name);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW && b) {
        memset(b, 0, sizeof(*b));
        b->created_ms = sqlite3_column_int64(s, 0);
        b->versioning = sqlite3_column_int(s, 1);
        b->cors = col_dup_null(s, 2);
        b->lifecycle = col_dup_null(s, 3);
        b->tagging = col_dup_null(s, 4);
        snprintf(b->owner, sizeof(b->owner), "%s", sqlite3_column_text(s, 5) ? (const char *)sqlite3_column_text(s, 5) : "");
    }
    sqlite3_reset(s);
    return r == SQLITE_ROW ? 0 : r == SQLITE_DONE ? -ENOENT : -EIO;
}

void s3_bucket_free(struct s3_bucket *b)
{
    free(b->cors);
    free(b->lifecycle);
    free(b->tagging);
    b->cors = b->lifecycle = b->tagging = NULL;
}

int s3_bucket_set(struct s3_db *d, const char *name, const struct s3_bucket *b)
{
    sqlite3_stmt *s = q(d, Q_BUCKET_SET);
    bind_text(s, 1, name);
    sqlite3_bind_int(s, 2, b->versioning);
    bind_text(s, 3, b->cors);
    bind_text(s, 4, b->lifecycle);
    bind_text(s, 5, b->tagging);
    int r = step_done(s);
    return r ? r : sqlite3_changes(d->db) ? 0 : -ENOENT;
}

int s3_bucket_exists(struct s3_db *d, const char *name)
{
    int r = s3_bucket_get(d, name, NULL);
    return r == 0 ? 1 : r == -ENOENT ? 0 : r;
}

static int upload_drop(struct s3_db *d, const char *id, const char *keep, char **files);

int s3_bucket_delete(struct s3_db *d, const char *name, char **files)
{
    *files = NULL;
    int r = tx(d, Q_BEGIN);
    if (r)
        return r;
    sqlite3_stmt *s = q(d, Q_BUCKET_GET);
    bind_text(s, 1, name);
    int found = sqlite3_step(s);
    sqlite3_reset(s);
    if (found != SQLITE_ROW) {
        tx(d, Q_ROLLBACK);
        return found == SQLITE_DONE ? -ENOENT : -EIO;
    }
    s = q(d, Q_BUCKET_ANY);
    bind_text(s, 1, name);
    int any = sqlite3_step(s);
    sqlite3_reset(s);
    if (any == SQLITE_ROW) {
        tx(d, Q_ROLLBACK);
        return -ENOTEMPTY;
    }
    /* its unfinished multipart uploads go with it */
    struct s3_upload *ups;
    size_t n;
    int lr = r = s3_upload_list(d, name, &ups, &n);
    struct buf all = BUF_INIT;
    for (size_t i = 0; !r && i < n; i++) {
        char *f = NULL;
        r = upload_drop(d, ups[i].id, NULL, &f);
        if (f)
            buf_puts(&all, f);
        free(f);
    }
    if (!lr)
        s3_uploads_free(ups, n);
    s = q(d, Q_BUCKET_DEL);
    bind_text(s, 1, name);
    if (!r)
        r = step_done(s);
    if (!r)
        r = tx(d, Q_COMMIT);
    buf_putc(&all, 0);
    if (r) {
        tx(d, Q_ROLLBACK);
        buf_free(&all);
    } else {
        *files = buf_steal(&all);
    }
    return r;
}

int s3_bucket_list(struct s3_db *d, void (*cb)(void *, const char *, long long), void *arg)
{
    sqlite3_stmt *s = q(d, Q_BUCKET_LIST);
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW)
        cb(arg, (const char *)sqlite3_column_text(s, 0), sqlite3_column_int64(s, 1));
    sqlite3_reset(s);
    return r == SQLITE_DONE ? 0 : -EIO;
}

void s3_obj_free(struct s3_obj *o)
{
    free(o->key);
    free(o->headers);
    free(o->parts);
    o->key = o->headers = o->parts = NULL;
}

static void obj_from_row(sqlite3_stmt *s, int c, struct s3_obj *o)
{
    o->size = (uint64_t)sqlite3_column_int64(s, c);
    snprintf(o->etag, sizeof(o->etag), "%s", (const char *)sqlite3_column_text(s, c + 1));
    o->mtime_ms = sqlite3_column_int64(s, c + 2);
    o->headers = col_dup(s, c + 3);
    o->parts = col_dup(s, c + 4);
    o->nparts = sqlite3_column_int(s, c + 5);
    snprintf(o->version, sizeof(o->version), "%s", (const char *)sqlite3_column_text(s, c + 6));
    o->dm = sqlite3_column_int(s, c + 7) != 0;
    o->latest = sqlite3_column_int(s, c + 8) != 0;
    o->seq = sqlite3_column_int64(s, c + 9);
}

int s3_obj_get(struct s3_db *d, const char *bucket, const char *key, const char *version,
               struct s3_obj *o)
{
    memset(o, 0, sizeof(*o));
    sqlite3_stmt *s = q(d, version ? Q_OBJ_GETV : Q_OBJ_GET);
    bind_text(s, 1, bucket);
    bind_text(s, 2, key);
    if (version)
        bind_text(s, 3, version);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        obj_from_row(s, 0, o);
        o->key = strdup(key);
    }
    sqlite3_reset(s);
    if (r == SQLITE_ROW)
        return o->key && o->headers && o->parts ? 0 : -ENOMEM;
    return r == SQLITE_DONE ? -ENOENT : -EIO;
}

static long long next_seq(struct s3_db *d, const char *bucket, const char *key)
{
    sqlite3_stmt *s = q(d, Q_OBJ_NEXTSEQ);
    bind_text(s, 1, bucket);
    bind_text(s, 2, key);
    long long seq = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_reset(s);
    return seq;
}

/* Inside a transaction: removes one version (its parts appended to *old); when it
 * was the current one, the newest left becomes current. */
static int drop_version(struct s3_db *d, const char *bucket, const char *key, const char *version,
                        struct buf *old)
{
    struct s3_obj cur;
    int r = s3_obj_get(d, bucket, key, version, &cur);
    if (r)
        return r;
    buf_puts(old, cur.parts);
    bool was_latest = cur.latest;
    s3_obj_free(&cur);
    sqlite3_stmt *s = q(d, Q_OBJ_DELV);
    bind_text(s, 1, bucket);
    bind_text(s, 2, key);
    bind_text(s, 3, version);
    r = step_done(s);
    if (!r && was_latest) {
        s = q(d, Q_OBJ_RELATEST);
        bind_text(s, 1, bucket);
        bind_text(s, 2, key);
        r = step_done(s);
    }
    return r;
}

/* Inside a transaction: o becomes the current version of its key. With
 * versioning enabled it is added (o->version set by the caller); otherwise it
 * takes the place of the "null" version, whose parts go to *old. */
static int obj_insert(struct s3_db *d, const char *bucket, const struct s3_obj *o, int versioning,
                      struct buf *old)
{
    int r;
    if (versioning != S3_VERSIONING_ENABLED) {
        r = drop_version(d, bucket, o->key, "null", old);
        if (r && r != -ENOENT)
            return r;
    }
    sqlite3_stmt *s = q(d, Q_OBJ_UNLATEST);
    bind_text(s, 1, bucket);
    bind_text(s, 2, o->key);
    if ((r = step_done(s)))
        return r;
    long long seq = next_seq(d, bucket, o->key);
    if (seq < 0)
        return -EIO;
    s = q(d, Q_OBJ_PUT);
    bind_text(s, 1, bucket);
    bind_text(s, 2, o->key);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)o->size);
    bind_text(s, 4, o->etag);
    sqlite3_bind_int64(s, 5, o->mtime_ms);
    bind_text(s, 6, o->headers ? o->headers : "");
    bind_text(s, 7, o->parts ? o->parts : "");
    sqlite3_bind_int(s, 8, o->nparts);
    bind_text(s, 9, versioning == S3_VERSIONING_ENABLED ? o->version : "null");
    sqlite3_bind_int(s, 10, o->dm);
    sqlite3_bind_int64(s, 11, seq);
    return step_done(s);
}

/* Runs fn in a transaction; *old gets the data files to unlink after it. */
static int in_tx(struct s3_db *d, char **old, int (*fn)(struct s3_db *, void *, struct buf *), void *arg)
{
    *old = NULL;
    int r = tx(d, Q_BEGIN);
    if (r)
        return r;
    struct buf b = BUF_INIT;
    r = fn(d, arg, &b);
    if (!r)
        r = tx(d, Q_COMMIT);
    if (r) {
        tx(d, Q_ROLLBACK);
        buf_free(&b);
        return r;
    }
    buf_putc(&b, 0);
    *old = buf_steal(&b);
    return 0;
}

int s3_obj_set_headers(struct s3_db *d, const char *bucket, const char *key, const char *version,
                       const char *headers)
{
    sqlite3_stmt *s = q(d, Q_OBJ_SETHDR);
    bind_text(s, 1, bucket);
    bind_text(s, 2, key);
    if (version)
        bind_text(s, 3, version);
    bind_text(s, 4, headers);
    int r = step_done(s);
    return r ? r : sqlite3_changes(d->db) ? 0 : -ENOENT;
}

struct put_args {
    const char *bucket;
    const struct s3_obj *o;
};

static int put_fn(struct s3_db *d, void *arg, struct buf *old)
{
    struct put_args *a = arg;
    struct s3_bucket b;
    int r = s3_bucket_get(d, a->bucket, &b);
    if (r)
        return r;
    s3_bucket_free(&b);
    return obj_insert(d, a->bucket, a->o, b.versioning, old);
}

int s3_obj_put(struct s3_db *d, const char *bucket, const struct s3_obj *o, char **old)
{
    struct put_args a = { bucket, o };
    return in_tx(d, old, put_fn, &a);
}

struct del_args {
    const char *bucket, *key, *version;
    struct s3_obj *marker;
};

static int del_fn(struct s3_db *d, void *arg, struct buf *old)
{
    struct del_args *a = arg;
    struct s3_bucket b;
    int r = s3_bucket_get(d, a->bucket, &b);
    if (r)
        return r;
    s3_bucket_free(&b);
    if (a->version) {
        struct s3_obj v;
        if (s3_obj_get(d, a->bucket, a->key, a->version, &v) == 0) {
            a->marker->dm = v.dm;       /* what was removed */
            s3_obj_free(&v);
        }
        r = drop_version(d, a->bucket, a->key, a->version, old);
        return r == -ENOENT ? 0 : r;
    }
    if (b.versioning == S3_VERSIONING_OFF) {
        r = drop_version(d, a->bucket, a->key, "null", old);
        return r == -ENOENT ? 0 : r;
    }
    /* versioned: a delete marker becomes the current version */
    a->marker->key = (char *)a->key;
    a->marker->dm = true;
    a->marker->mtime_ms = now_ms();
    a->marker->headers = (char *)"";
    a->marker->parts = (char *)"";
    strcpy(a->marker->etag, "\"\"");
    if (b.versioning == S3_VERSIONING_SUSPENDED)
        strcpy(a->marker->version, "null");
    r = obj_insert(d, a->bucket, a->marker, b.versioning, old);
    a->marker->key = a->marker->headers = a->marker->parts = NULL;
    return r;
}

int s3_obj_delete(struct s3_db *d, const char *bucket, const char *key, const char *version,
                  struct s3_obj *marker, char **old)
{
    struct del_args a = { bucket, key, version, marker };
    return in_tx(d, old, del_fn, &a);
}

int s3_obj_scan(struct s3_db *d, const char *bucket, const char *prefix, const char *after,
                long long after_seq, bool versions, int (*cb)(void *, const struct s3_obj *), void *arg)
{
    char *last = strdup(after);
    long long last_seq = after_seq;
    size_t plen = strlen(prefix);
    int rc = 0;
    while (last && !rc) {
        sqlite3_stmt *s = q(d, versions ? Q_OBJ_SCANV : Q_OBJ_SCAN);
        bind_text(s, 1, bucket);
        bind_text(s, 2, last);
        bind_text(s, 3, prefix);
        if (versions)
            sqlite3_bind_int64(s, 4, last_seq);
        int r, rows = 0;
        char *next = NULL;
        while (!rc && (r = sqlite3_step(s)) == SQLITE_ROW) {
            rows++;
            const char *k = (const char *)sqlite3_column_text(s, 0);
            if (strncmp(k, prefix, plen) != 0) {
                rows = 0;       /* past the prefix: the end */
                break;
            }
            struct s3_obj o = { 0 };
            obj_from_row(s, 1, &o);
            o.key = strdup(k);
            rc = o.key && o.headers && o.parts ? cb(arg, &o) : -ENOMEM;
            free(next);
            next = strdup(k);
            last_seq = o.seq;
            s3_obj_free(&o);
        }
        sqlite3_reset(s);
        free(last);
        last = rows == 1000 && !rc ? next : NULL;
        if (last != next)
            free(next);
    }
    free(last);
    return rc > 0 ? 0 : rc;
}

int s3_upload_create(struct s3_db *d, const char *id, const char *bucket, const char *key,
                     const char *headers)
{
    sqlite3_stmt *s = q(d, Q_UP_INS);
    bind_text(s, 1, id);
    bind_text(s, 2, bucket);
    bind_text(s, 3, key);
    sqlite3_bind_int64(s, 4, now_ms());
    bind_text(s, 5, headers);
    return step_done(s);
}

int s3_upload_get(struct s3_db *d, const char *id, char **bucket, char **key, char **headers)
{
    sqlite3_stmt *s = q(d, Q_UP_GET);
    bind_text(s, 1, id);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        *bucket = col_dup(s, 0);
        *key = col_dup(s, 1);
        if (headers)
            *headers = col_dup(s, 2);
    }
    sqlite3_reset(s);
    return r == SQLITE_ROW ? 0 : r == SQLITE_DONE ? -ENOENT : -EIO;
}

int s3_part_put(struct s3_db *d, const char *id, int num, uint64_t size, const char *etag,
                const char *file, const char *checksum, char **old)
{
    *old = NULL;
    int r = tx(d, Q_BEGIN);
    if (r)
        return r;
    char *b = NULL, *k = NULL;
    r = s3_upload_get(d, id, &b, &k, NULL);
    free(b);
    free(k);
    if (!r) {
        sqlite3_stmt *s = q(d, Q_PART_GET);
        bind_text(s, 1, id);
        sqlite3_bind_int(s, 2, num);
        if (sqlite3_step(s) == SQLITE_ROW) {
            char tmp[80];
            snprintf(tmp, sizeof(tmp), "%s %lld\n", (const char *)sqlite3_column_text(s, 0),
                     (long long)sqlite3_column_int64(s, 1));
            *old = strdup(tmp);
        }
        sqlite3_reset(s);
        s = q(d, Q_PART_PUT);
        bind_text(s, 1, id);
        sqlite3_bind_int(s, 2, num);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)size);
        bind_text(s, 4, etag);
        bind_text(s, 5, file);
        sqlite3_bind_int64(s, 6, now_ms());
        bind_text(s, 7, checksum ? checksum : "");
        r = step_done(s);
    }
    if (!r)
        r = tx(d, Q_COMMIT);
    if (r) {
        tx(d, Q_ROLLBACK);
        free(*old);
        *old = NULL;
    }
    return r;
}

int s3_part_list(struct s3_db *d, const char *id, struct s3_part **parts, size_t *n)
{
    *parts = NULL;
    *n = 0;
    size_t cap = 0;
    sqlite3_stmt *s = q(d, Q_PART_LIST);
    bind_text(s, 1, id);
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            struct s3_part *np = realloc(*parts, cap * sizeof(*np));
            if (!np) {
                sqlite3_reset(s);
                return -ENOMEM;
            }
            *parts = np;
        }
        struct s3_part *p = &(*parts)[(*n)++];
        p->num = sqlite3_column_int(s, 0);
        p->size = (uint64_t)sqlite3_column_int64(s, 1);
        snprintf(p->etag, sizeof(p->etag), "%s", (const char *)sqlite3_column_text(s, 2));
        snprintf(p->file, sizeof(p->file), "%s", (const char *)sqlite3_column_text(s, 3));
        p->mtime_ms = sqlite3_column_int64(s, 4);
        snprintf(p->checksum, sizeof(p->checksum), "%s", (const char *)sqlite3_column_text(s, 5));
    }
    sqlite3_reset(s);
    return r == SQLITE_DONE ? 0 : -EIO;
}

/* Inside a transaction: the upload's part files not named in keep go to *files
 * and its rows are deleted. */
static int upload_drop(struct s3_db *d, const char *id, const char *keep, char **files)
{
    struct s3_part *parts;
    size_t n;
    int r = s3_part_list(d, id, &parts, &n);
    if (r)
        return r;
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < n; i++)
        if (!keep || !strstr(keep, parts[i].file))
            buf_printf(&b, "%s %llu\n", parts[i].file, (unsigned long long)parts[i].size);
    free(parts);
    buf_putc(&b, 0);
    *files = buf_steal(&b);
    sqlite3_stmt *s = q(d, Q_PART_DEL);
    bind_text(s, 1, id);
    r = step_done(s);
    if (!r) {
        s = q(d, Q_UP_DEL);
        bind_text(s, 1, id);
        r = step_done(s);
    }
    return r;
}

struct complete_args {
    const char *id, *bucket, *done;
    const struct s3_obj *o;
    char **unused;
};

static int complete_fn(struct s3_db *d, void *arg, struct buf *old)
{
    struct complete_args *a = arg;
    char *b = NULL, *k = NULL;
    int r = s3_upload_get(d, a->id, &b, &k, NULL);
    free(b);
    free(k);
    if (!r)
        r = upload_drop(d, a->id, a->o->parts, a->unused);
    if (!r)
        r = put_fn(d, &(struct put_args){ a->bucket, a->o }, old);
    if (!r) {
        sqlite3_stmt *s = q(d, Q_DONE_INS);
        bind_text(s, 1, a->id);
        bind_text(s, 2, a->bucket);
        bind_text(s, 3, a->o->key);
        bind_text(s, 4, a->done ? a->done : a->o->etag);
        sqlite3_bind_int64(s, 5, now_ms());
        r = step_done(s);
    }
    return r;
}

int s3_upload_complete(struct s3_db *d, const char *id, const char *bucket, const struct s3_obj *o,
                       const char *done, char **unused, char **old)
{
    *unused = NULL;
    struct complete_args a = { id, bucket, done, o, unused };
    int r = in_tx(d, old, complete_fn, &a);
    if (r) {
        free(*unused);
        *unused = NULL;
    }
    return r;
}

int s3_upload_completed(struct s3_db *d, const char *id, const char *bucket, const char *key, char *out,
                        size_t cap)
{
    sqlite3_stmt *s = q(d, Q_DONE_GET);
    bind_text(s, 1, id);
    bind_text(s, 2, bucket);
    bind_text(s, 3, key);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_reset(s);
    return r == SQLITE_ROW ? 0 : -ENOENT;
}

int s3_upload_abort(struct s3_db *d, const char *id, char **files)
{
    *files = NULL;
    int r = tx(d, Q_BEGIN);
    if (r)
        return r;
    char *b = NULL, *k = NULL;
    r = s3_upload_get(d, id, &b, &k, NULL);
    free(b);
    free(k);
    if (!r)
        r = upload_drop(d, id, NULL, files);
    if (!r)
        r = tx(d, Q_COMMIT);
    if (r) {
        tx(d, Q_ROLLBACK);
        free(*files);
        *files = NULL;
    }
    return r;
}

int s3_upload_list(struct s3_db *d, const char *bucket, struct s3_upload **ups, size_t *n)
{
    *ups = NULL;
    *n = 0;
    size_t cap = 0;
    sqlite3_stmt *s = q(d, Q_UP_LIST);
    bind_text(s, 1, bucket);
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            struct s3_upload *nu = realloc(*ups, cap * sizeof(*nu));
            if (!nu) {
                sqlite3_reset(s);
                return -ENOMEM;
            }
            *ups = nu;
        }
        struct s3_upload *u = &(*ups)[(*n)++];
        snprintf(u->id, sizeof(u->id), "%s", (const char *)sqlite3_column_text(s, 0));
        u->key = col_dup(s, 1);
        u->created_ms = sqlite3_column_int64(s, 2);
    }
    sqlite3_reset(s);
    return r == SQLITE_DONE ? 0 : -EIO;
}

void s3_uploads_free(struct s3_upload *ups, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ups[i].key);
    free(ups);
}

int s3_upload_expire(struct s3_db *d, long long max_age_ms, char **files)
{
    *files = NULL;
    char ids[100][40];
    int n = 0;
    sqlite3_stmt *s = q(d, Q_UP_OLD);
    sqlite3_bind_int64(s, 1, now_ms() - max_age_ms);
    while (n < 100 && sqlite3_step(s) == SQLITE_ROW)
        snprintf(ids[n++], sizeof(ids[0]), "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_reset(s);
    s = q(d, Q_DONE_OLD);
    sqlite3_bind_int64(s, 1, now_ms() - 86400LL * 1000);
    step_done(s);
    struct buf all = BUF_INIT;
    for (int i = 0; i < n; i++) {
        char *f = NULL;
        if (s3_upload_abort(d, ids[i], &f) == 0 && f)
            buf_puts(&all, f);
        free(f);
    }
    buf_putc(&all, 0);
    *files = buf_steal(&all);
    return n;
}

/* ---- garbage: data files no row names ---- */

/* Every data file a row names, sorted: one pass over objects and parts (not one
 * scan per file, which a store of a million objects could not afford at start). */
struct idset {
    char (*ids)[33];
    size_t n, cap;
    bool failed;
};

static void idset_add(struct idset *set, const char *id, size_t len)
{
    if (len != 32 || set->failed)
        return;
    if (set->n == set->cap) {
        size_t nc = set->cap ? set->cap * 2 : 1024;
        char (*ni)[33] = realloc(set->ids, nc * sizeof(*ni));
        if (!ni) {
            set->failed = true;
            return;
        }
        set->ids = ni;
        set->cap = nc;
    }
    memcpy(set->ids[set->n], id, 32);
    set->ids[set->n++][32] = 0;
}

static int id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

static int collect_ids(struct s3_db *d, struct idset *set)
{
    static const char *const qs[] = { "SELECT parts FROM objects", "SELECT file FROM parts" };
    for (size_t i = 0; i < ARRAY_SIZE(qs) && !set->failed; i++) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(d->db, qs[i], -1, &s, NULL) != SQLITE_OK)
            return -EIO;
        int r;
        while ((r = sqlite3_step(s)) == SQLITE_ROW) {
            const char *p = (const char *)sqlite3_column_text(s, 0);
            /* "id size\n" lines (objects) or one id (parts) */
            while (p && *p) {
                size_t n = strcspn(p, " \n");
                idset_add(set, p, n);
                p += n;
                p += strcspn(p, "\n");
                p += *p == '\n';
            }
        }
        sqlite3_finalize(s);
        if (r != SQLITE_DONE)
            return -EIO;
    }
    if (set->failed)
        return -ENOMEM;
    if (set->n)
        qsort(set->ids, set->n, sizeof(*set->ids), id_cmp);
    return 0;
}

void s3_db_gc_files(struct s3_db *d, const char *dir)
{
    char top[512];
    snprintf(top, sizeof(top), "%s/data", dir);
    struct idset set = { 0 };
    DIR *td = collect_ids(d, &set) == 0 ? opendir(top) : NULL;     /* when in doubt, keep */
    if (!td) {
        free(set.ids);
        return;
    }
    struct dirent *e;
    size_t removed = 0;
    while ((e = readdir(td))) {
        if (e->d_name[0] == '.' || strlen(e->d_name) != 2)
            continue;
        char sub[600];
        snprintf(sub, sizeof(sub), "%s/%s", top, e->d_name);
        DIR *sd = opendir(sub);
        if (!sd)
            continue;
        struct dirent *f;
        while ((f = readdir(sd))) {
            if (strlen(f->d_name) != 32 || (set.n && bsearch(f->d_name, set.ids, set.n, sizeof(*set.ids), id_cmp)))
                continue;
            char path[700];
            snprintf(path, sizeof(path), "%s/%s", sub, f->d_name);
            if (unlink(path) == 0)
                removed++;
        }
        closedir(sd);
    }
    closedir(td);
    free(set.ids);
    if (removed)
        log_info("data files of unfinished writes removed", "files", log_int((long long)removed));
}
