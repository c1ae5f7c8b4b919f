/* Unit tests: on-disk blocks - cutting the head, reading across blocks and head,
 * compaction, reopening, damage detection, retention and the admin snapshot. */
#include "metrics/tsdb.h"
#include "metrics/tsdb_block.h"
#include "test.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static struct tsdb_series *bseries(struct tsdb *db, const char *name, const char *job)
{
    struct tsdb_label p[] = { { "job", job }, { "__name__", name } };
    struct tsdb_labels l;
    if (tsdb_labels_make(&l, p, 2))
        return NULL;
    bool created;
    struct tsdb_series *s = tsdb_series_get(db, &l, &created);
    if (!created)
        tsdb_labels_free(&l);
    return s;
}

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    CHECK_INT(system(cmd), 0);
}

#define HOUR 3600000LL
#define T0 (1700000000000LL / HOUR * HOUR)
#define STEP 10000

/* Counts the samples of job=<job> in [mint, maxt], checking they ascend and that
 * each value is its time's (v = t / STEP). */
static long count_samples(struct tsdb *db, const char *job, int64_t mint, int64_t maxt)
{
    struct tsdb_matcher m;
    char err[128];
    CHECK_INT(tsdb_matcher_init(&m, "job", TSDB_EQ, job, err, sizeof(err)), 0);
    struct tsdb_series **out;
    size_t n = tsdb_select(db, &m, 1, mint, maxt, &out);
    long total = 0;
    for (size_t i = 0; i < n; i++) {
        struct tsdb_iter it;
        tsdb_iter_init(&it, out[i], mint, maxt);
        int64_t t, last = INT64_MIN;
        double v;
        while (tsdb_iter_next(&it, &t, &v)) {
            CHECK(t > last);
            CHECK(v == (double)((t - T0) / STEP));
            last = t;
            total++;
        }
    }
    tsdb_select_free(out, n);
    tsdb_matcher_free(&m);
    return n == 1 ? total : n == 0 ? 0 : -1;
}

static int count_dirs(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strlen(de->d_name) == TSDB_ULID_LEN;
    if (d)
        closedir(d);
    return n;
}

TEST(tsdb_blocks_cut_read_compact_reopen)
{
    char dir[] = "/tmp/cairn-blocks-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct tsdb db;
    char err[512];
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    db.block_range_ms = HOUR;
    db.max_block_ms = 9 * HOUR;
    db.ooo_window_ms = 10 * 60000;
    struct tsdb_series *a = bseries(&db, "m", "a"), *b = bseries(&db, "m", "b"),
                       *gone = bseries(&db, "old", "gone"), *held = bseries(&db, "old", "held");
    tsdb_pin(held);             /* as a scrape cache would */
    CHECK_INT(tsdb_append(&db, held, T0, 0), TSDB_OK);
    /* a and b for 10 hours; "gone" only in the first two; a gets out-of-order
     * samples (within the window) at odd steps it skipped */
    long na = 0, nb = 0, ngone = 0;
    for (int64_t t = T0; t < T0 + 10 * HOUR; t += STEP) {
        int64_t k = (t - T0) / STEP;
        if (k % 2 == 0 || k < 10) {
            CHECK_INT(tsdb_append(&db, a, t, (double)k), TSDB_OK);
            na++;
        } else if (k % 2 == 1 && (t - T0) % HOUR > 20 * 60000 && k >= 12) {
            /* a late sample of the previous step, accepted by the window */
            CHECK_INT(tsdb_append(&db, a, t - STEP, (double)(k - 1)), TSDB_OK);
            CHECK_INT(tsdb_append(&db, a, t, (double)k), TSDB_OK);
            na++;
        }
        CHECK_INT(tsdb_append(&db, b, t, (double)k), TSDB_OK);
        nb++;
        if (t < T0 + 2 * HOUR) {
            CHECK_INT(tsdb_append(&db, gone, t, (double)k), TSDB_OK);
            ngone++;
        }
        if (k % 360 == 0)
            CHECK(tsdb_maintain(&db) >= 0);
    }
    CHECK(tsdb_maintain(&db) >= 0);
    tsdb_commit(&db, true);
    /* the head keeps at most 1.5 ranges; the rest is in blocks, merged by 3 and 9 */
    CHECK(db.nblocks >= 2);
    CHECK(db.min_valid >= T0 + 8 * HOUR);
    CHECK(db.head_mint >= db.min_valid);
    CHECK(db.st.blocks_cut >= 8);
    CHECK(db.st.compactions >= 1);
    CHECK_INT(count_samples(&db, "a", INT64_MIN / 2, INT64_MAX / 2), na);
    CHECK_INT(count_samples(&db, "b", INT64_MIN / 2, INT64_MAX / 2), nb);
    CHECK_INT(count_samples(&db, "gone", INT64_MIN / 2, INT64_MAX / 2), ngone);
    /* "gone" left the head (its samples are in blocks); "held" is pinned, so it stays */
    CHECK_INT(db.active, 3);
    CHECK(db.st.series_gc >= 1);
    CHECK_INT(held->nchunks + held->head.n, 0);
    CHECK_INT(count_samples(&db, "held", INT64_MIN / 2, INT64_MAX / 2), 1);
    tsdb_unpin(held);
    /* a range across a block boundary and the head */
    CHECK_INT(count_samples(&db, "b", db.min_valid - HOUR, db.min_valid + HOUR - 1),
              2 * HOUR / STEP);
    /* series only in blocks still have their label values */
    const char **vals;
    size_t nv = tsdb_label_values(&db, "job", &vals);
    CHECK_INT(nv, 4);
    CHECK_STR(vals[1], "b");
    CHECK_STR(vals[2], "gone");
    CHECK_STR(vals[3], "held");
    free(vals);
    const char **names;
    size_t nn = tsdb_label_names(&db, &names);
    CHECK_INT(nn, 2);
    tsdb_free_strings(names, nn);
    /* older than the newest block: refused */
    CHECK_INT(tsdb_append(&db, b, db.min_valid - 1, 1), TSDB_OUT_OF_ORDER);
    CHECK_INT(db.st.out_of_bounds, 1);

    /* the admin snapshot: links to the blocks and the head as a block */
    char snap[600];
    snprintf(snap, sizeof(snap), "%s/snapshots/s1", dir);
    CHECK_INT(tsdb_export_snapshot(&db, snap, false, err, sizeof(err)), 0);
    CHECK_INT(count_dirs(snap), (int)db.nblocks + 1);
    size_t nblocks = db.nblocks;
    tsdb_close(&db);

    /* reopened: the same samples from blocks, snapshot and WAL; the slot of the
     * collected series stays empty (references are never reused) */
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    CHECK_INT(db.nblocks, nblocks);
    CHECK(db.nseries >= 3);
    CHECK(tsdb_series_by_ref(&db, 3) == NULL);
    struct tsdb_series *c = bseries(&db, "m", "c");
    CHECK(c && c->ref == 5);
    CHECK_INT(count_samples(&db, "a", INT64_MIN / 2, INT64_MAX / 2), na);
    CHECK_INT(count_samples(&db, "b", INT64_MIN / 2, INT64_MAX / 2), nb);
    CHECK_INT(count_samples(&db, "gone", INT64_MIN / 2, INT64_MAX / 2), ngone);
    /* retention by time takes whole blocks */
    db.retention_ms = 24 * HOUR;
    tsdb_apply_retention(&db, T0 + 10 * HOUR + 24 * HOUR);
    CHECK_INT(db.nblocks, 0);
    CHECK_INT(count_samples(&db, "gone", INT64_MIN / 2, INT64_MAX / 2), 0);
    tsdb_close(&db);
    rm_rf(dir);
}

/* Flips one byte of a file. */
static void flip(const char *path, long at)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    struct stat st;
    CHECK_INT(fstat(fd, &st), 0);
    if (at < 0)
        at += st.st_size;
    unsigned char c;
    CHECK_INT(pread(fd, &c, 1, at), 1);
    c ^= 0x20;
    CHECK_INT(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

TEST(tsdb_block_damage_detected)
{
    char dir[] = "/tmp/cairn-blocks-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct tsdb db;
    char err[512];
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    db.block_range_ms = HOUR;
    struct tsdb_series *a = bseries(&db, "m", "a"), *b = bseries(&db, "m", "b");
    for (int64_t t = T0; t < T0 + 2 * HOUR; t += STEP) {
        tsdb_append(&db, a, t, (double)((t - T0) / STEP));
        tsdb_append(&db, b, t, (double)((t - T0) / STEP));
    }
    CHECK_INT(tsdb_maintain(&db), 1);
    CHECK_INT(db.nblocks, 1);
    char bdir[600], path[700];
    snprintf(bdir, sizeof(bdir), "%s", db.blocks[0]->dir);
    tsdb_close(&db);

    /* a flipped bit in a chunk: that series' block samples are skipped, the rest read */
    snprintf(path, sizeof(path), "%s/chunks", bdir);
    flip(path, 20);
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    long ka = count_samples(&db, "a", INT64_MIN / 2, INT64_MAX / 2),
         kb = count_samples(&db, "b", INT64_MIN / 2, INT64_MAX / 2);
    CHECK(ka + kb == 2 * HOUR / STEP * 2 - HOUR / STEP);     /* one series lost its hour */
    CHECK_INT(db.blocks[0]->bad_chunks, 1);
    tsdb_close(&db);
    flip(path, 20);

    /* a flipped bit in the index: the start is refused, naming the block */
    snprintf(path, sizeof(path), "%s/index", bdir);
    flip(path, 200);
    CHECK(tsdb_open(&db, dir, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "damaged block index: checksum mismatch");
    CHECK_CONTAINS(err, bdir);
    tsdb_close(&db);
    flip(path, 200);
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    CHECK_INT(count_samples(&db, "a", INT64_MIN / 2, INT64_MAX / 2), 2 * HOUR / STEP);
    tsdb_close(&db);

    /* an unfinished write is removed on open */
    snprintf(path, sizeof(path), "%s/blocks/01ABCDEFGHJKMNPQRSTVWXYZ01.tmp", dir);
    CHECK_INT(mkdir(path, 0755), 0);
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    CHECK(access(path, F_OK) != 0);
    tsdb_close(&db);
    rm_rf(dir);
}

TEST(tsdb_ulid_format)
{
    char a[TSDB_ULID_LEN + 1], b[TSDB_ULID_LEN + 1];
    tsdb_ulid(a, 1700000000000ull);
    tsdb_ulid(b, 1700000000001ull);
    CHECK_INT(strlen(a), 26);
    /* the time comes first, so ULIDs sort by time */
    CHECK(strncmp(a, b, 10) < 0);
    for (int i = 0; i < 26; i++)
        CHECK(strchr("0123456789ABCDEFGHJKMNPQRSTVWXYZ", a[i]) != NULL);
}

TEST(tsdb_blocks_written_in_background)
{
    char dir[] = "/tmp/cairn-blocks-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct tsdb db;
    char err[512];
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    db.block_range_ms = HOUR;
    db.max_block_ms = 3 * HOUR;
    db.background = true;
    struct tsdb_series *a = bseries(&db, "m", "a"), *b = bseries(&db, "m", "b");
    long n = 0;
    /* appends go on while blocks are written: what arrives lands in the head */
    for (int64_t t = T0; t < T0 + 8 * HOUR; t += STEP) {
        CHECK_INT(tsdb_append(&db, a, t, (double)((t - T0) / STEP)), TSDB_OK);
        CHECK_INT(tsdb_append(&db, b, t, (double)((t - T0) / STEP)), TSDB_OK);
        n++;
        if ((t - T0) / STEP % 120 == 0)
            CHECK(tsdb_maintain(&db) >= 0);
    }
    /* let the writer finish what the head still owes, bounded */
    for (int i = 0; i < 5000; i++) {
        CHECK(tsdb_maintain(&db) >= 0);
        if (!db.job && tsdb_maintain(&db) == 0 && !db.job)
            break;
        usleep(1000);
    }
    CHECK(db.job == NULL);
    CHECK(db.st.blocks_cut >= 6);
    CHECK(db.st.compactions >= 1);
    CHECK_INT(count_samples(&db, "a", INT64_MIN / 2, INT64_MAX / 2), n);
    CHECK_INT(count_samples(&db, "b", INT64_MIN / 2, INT64_MAX / 2), n);
    /* a job still running when the store closes is finished first */
    CHECK_INT(tsdb_append(&db, a, T0 + 8 * HOUR + 2 * HOUR, 1.5), TSDB_OK);
    tsdb_maintain(&db);
    tsdb_close(&db);
    CHECK_INT(tsdb_open(&db, dir, err, sizeof(err)), 0);
    CHECK_INT(count_samples(&db, "b", INT64_MIN / 2, INT64_MAX / 2), n);
    tsdb_close(&db);
    rm_rf(dir);
}
