/* bk_archive.c - a backup: walk the paths, cut files into restic's chunks, store
 * the chunks nobody stored yet, write the trees and the snapshot.
 *
 * The calling thread walks and reads, and cuts chunks (the Rabin loop is cheap:
 * it skips the first 448 KiB of every chunk); worker threads hash each chunk,
 * claim it in the index and compress, seal and pack it, each into its own pack.
 * A file's chunk ids land in its node's content array, sized from the file's
 * length before reading. The whole tree is kept in memory and written bottom-up
 * once every chunk is stored, then the index, then the snapshot (restic's write
 * order: nothing is referenced before it exists). Index files are written every
 * few minutes as well, so an interrupted backup's packs are found by the next run.
 *
 * Files unchanged since the parent snapshot (same type, size, mtime, ctime and
 * inode, every chunk in the index) take their chunk list from it unread.
 */
#include "backup_internal.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <limits.h>
#include <malloc.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_LEN 2
#define FQ_LEN 64
#define NREADERS 2
#define POOL_MAX 16                     /* idle chunk buffers kept */
#define READ_STEP (256u << 10)
#define INDEX_EVERY_S 60.0

struct ent {
    struct bk_node node;
    bool failed;                        /* a reader could not read it: left out */
    struct ent *kids;
    size_t nkids, kcap;
    size_t ccap;                        /* content capacity */
};

struct job {
    uint8_t *data;
    size_t len;
    bk_id *slot;
};

struct arch {
    struct bk_repo *r;
    const struct bk_backup_opts *o;
    struct bk_chunker ch;               /* its tables, copied by each reader */
    /* the queue */
    pthread_mutex_t mu;
    pthread_cond_t more, room, idle;
    struct job q[QUEUE_LEN];
    size_t qhead, qlen, busy;
    bool done;
    int werr;
    pthread_t *threads;
    int nthreads;
    struct bk_packer *packers;
    /* files to read: the walk queues them, reader threads cut them (each with a
     * chunker of its own) so that two big files are chunked side by side */
    pthread_cond_t fmore, froom;
    struct fjob { struct ent *en; char *path; } fq[FQ_LEN];
    size_t fqhead, fqlen;
    bool fdone;
    pthread_t readers[NREADERS];
    int nreaders;
    /* chunk buffers (BK_MAX_CHUNK each) are reused: a fresh one costs page faults */
    uint8_t *pool[POOL_MAX];
    size_t npool;
    /* state of the walk */
    double last_index;
    struct bk_progress pr;
    uint64_t total_bytes, total_files, files_done, dirs_walked;
    /* name caches */
    uid_t last_uid;
    gid_t last_gid;
    char uname[64], gname[64];
    bool have_uid, have_gid;
};

/* ---- chunk buffers ---- */

static uint8_t *buf_get(struct arch *a)
{
    pthread_mutex_lock(&a->mu);
    uint8_t *b = a->npool ? a->pool[--a->npool] : NULL;
    pthread_mutex_unlock(&a->mu);
    /* room before and after the chunk, so the worker seals it where it lies */
    return b ? b : malloc(BK_MAX_CHUNK + 2 * BK_HEADROOM);
}

#define KEEP_RESIDENT (3u << 20)

static void buf_put(struct arch *a, uint8_t *b, size_t used)
{
    if (!b)
        return;
    /* most chunks are near 1 MiB: give back what an odd big one made resident */
    if (used > KEEP_RESIDENT + (1u << 20)) {
        uintptr_t from = ((uintptr_t)b + KEEP_RESIDENT + 4095) & ~(uintptr_t)4095;
        uintptr_t to = ((uintptr_t)b + BK_MAX_CHUNK + 2 * BK_HEADROOM) & ~(uintptr_t)4095;
        if (to > from)
            madvise((void *)from, to - from, MADV_DONTNEED);
    }
    pthread_mutex_lock(&a->mu);
    if (a->npool < POOL_MAX) {
        a->pool[a->npool++] = b;
        b = NULL;
    }
    pthread_mutex_unlock(&a->mu);
    free(b);
}

/* ---- workers ---- */

struct worker {
    struct arch *a;
    int idx;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct arch *a = w->a;
    struct bk_packer *pk = &a->packers[w->idx];
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->qlen && !a->done)
            pthread_cond_wait(&a->more, &a->mu);
        if (!a->qlen && a->done)
            break;
        struct job j = a->q[a->qhead];
        a->qhead = (a->qhead + 1) % QUEUE_LEN;
        a->qlen--;
        a->busy++;
        pthread_cond_signal(&a->room);
        pthread_mutex_unlock(&a->mu);
        bk_sha256(j.data + BK_HEADROOM, j.len, j.slot);
        int e = bk_blob_save_inplace(a->r, pk, BK_BLOB_DATA, j.slot, j.data + BK_HEADROOM, j.len);
        buf_put(a, j.data, j.len);
        pthread_mutex_lock(&a->mu);
        if (e && e != -EEXIST && !a->werr) {
            a->werr = e;
            /* whoever waits for room or for the queue to empty gives up now */
            pthread_cond_broadcast(&a->room);
            pthread_cond_broadcast(&a->froom);
            pthread_cond_broadcast(&a->idle);
        }
        a->busy--;
        if (!a->qlen && !a->busy)
            pthread_cond_broadcast(&a->idle);
    }
    pthread_mutex_unlock(&a->mu);
    int e = bk_packer_flush(a->r, pk);
    if (e) {
        pthread_mutex_lock(&a->mu);
        if (!a->werr)
            a->werr = e;
        pthread_mutex_unlock(&a->mu);
    }
    free(w);
    return NULL;
}

static int submit(struct arch *a, uint8_t *data, size_t len, bk_id *slot)
{
    pthread_mutex_lock(&a->mu);
    while (a->qlen == QUEUE_LEN && !a->werr)
        pthread_cond_wait(&a->room, &a->mu);
    int e = a->werr;
    if (!e) {
        a->q[(a->qhead + a->qlen) % QUEUE_LEN] = (struct job){ data, len, slot };
        a->qlen++;
        pthread_cond_signal(&a->more);
    }
    pthread_mutex_unlock(&a->mu);
    if (e)
        buf_put(a, data, len);
    return e;
}

static int werr(struct arch *a)
{
    pthread_mutex_lock(&a->mu);
    int e = a->werr;
    pthread_mutex_unlock(&a->mu);
    return e;
}

static int drain(struct arch *a)
{
    pthread_mutex_lock(&a->mu);
    while ((a->qlen || a->busy) && !a->werr)
        pthread_cond_wait(&a->idle, &a->mu);
    int e = a->werr;
    pthread_mutex_unlock(&a->mu);
    return e;
}

static bool cancelled(const struct arch *a)
{
    return a->o->cancel && __atomic_load_n(a->o->cancel, __ATOMIC_RELAXED);
}

/* ---- progress ---- */

void bk_fmt_bytes(double b, char *out, size_t n)
{
    const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, n, "%.1f %s", b, u[i]);
}

static void progress(struct arch *a, bool final)
{
    if (!a->pr.tty)
        return;
    double now = cairn_wall_time();
    if (!final && now - a->pr.last < 0.5)
        return;
    a->pr.last = now;
    double el = now - a->pr.started;
    double done = (double)__atomic_load_n(&a->r->st.bytes_processed, __ATOMIC_RELAXED);
    double rate = el > 0 ? done / el : 0;
    char d[32], t[32], rt[32], eta[32] = "-";
    bk_fmt_bytes(done, d, sizeof(d));
    bk_fmt_bytes((double)a->total_bytes, t, sizeof(t));
    bk_fmt_bytes(rate, rt, sizeof(rt));
    if (rate > 0 && a->total_bytes > done) {
        int s = (int)(((double)a->total_bytes - done) / rate);
        snprintf(eta, sizeof(eta), "%d:%02d", s / 60, s % 60);
    }
    fprintf(stderr, "\r\033[K[%d:%02d] %llu/%llu files, %s/%s, %s/s, ETA %s%s", (int)el / 60, (int)el % 60,
            (unsigned long long)a->files_done, (unsigned long long)a->total_files, d, t, rt, eta, final ? "\n" : "");
}

static bool excluded(const struct bk_backup_opts *o, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (size_t i = 0; i < o->nexcludes; i++) {
        const char *p = o->excludes[i];
        if (strchr(p, '/') ? fnmatch(p, path, 0) == 0 : fnmatch(p, base, 0) == 0)
            return true;
    }
    return false;
}

static void prescan(struct arch *a, const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) < 0 || excluded(a->o, path))
        return;
    if (S_ISREG(sb.st_mode)) {
        a->total_files++;
        a->total_bytes += (uint64_t)sb.st_size;
    } else if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char p[PATH_MAX];
            if (snprintf(p, sizeof(p), "%s/%s", path, de->d_name) < (int)sizeof(p))
                prescan(a, p);
        }
        if (d)
            closedir(d);
    }
}

/* ---- nodes from the file system ---- */

static int64_t ts_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void fill_node(struct arch *a, struct bk_node *n, const char *path, const struct stat *sb)
{
    uint32_t m = sb->st_mode & 0777;
    if (sb->st_mode & S_ISUID)
        m |= GO_MODE_SETUID;
    if (sb->st_mode & S_ISGID)
        m |= GO_MODE_SETGID;
    if (sb->st_mode & S_ISVTX)
        m |= GO_MODE_STICKY;
    switch (sb->st_mode & S_IFMT) {
    case S_IFREG: n->type = BK_N_FILE; break;
    case S_IFDIR: n->type = BK_N_DIR; m |= GO_MODE_DIR; break;
    case S_IFLNK: n->type = BK_N_SYMLINK; m |= GO_MODE_SYMLINK; break;
    case S_IFBLK: n->type = BK_N_DEV; m |= GO_MODE_DEVICE; break;
    case S_IFCHR: n->type = BK_N_CHARDEV; m |= GO_MODE_DEVICE | GO_MODE_CHARDEV; break;
    case S_IFIFO: n->type = BK_N_FIFO; m |= GO_MODE_PIPE; break;
    case S_IFSOCK: n->type = BK_N_SOCKET; m |= GO_MODE_SOCKET; break;
    default: n->type = BK_N_OTHER; m |= GO_MODE_IRREGULAR; break;
    }
    n->mode = m;
    n->mtime_ns = ts_ns(sb->st_mtim);
    n->atime_ns = ts_ns(sb->st_atim);
    n->ctime_ns = ts_ns(sb->st_ctim);
    n->uid = sb->st_uid;
    n->gid = sb->st_gid;
    if (!a->have_uid || a->last_uid != sb->st_uid) {
        struct passwd pw, *pp = NULL;
        char b[1024];
        a->uname[0] = 0;
        if (getpwuid_r(sb->st_uid, &pw, b, sizeof(b), &pp) == 0 && pp)
            snprintf(a->uname, sizeof(a->uname), "%s", pp->pw_name);
        a->last_uid = sb->st_uid;
        a->have_uid = true;
    }
    if (!a->have_gid || a->last_gid != sb->st_gid) {
        struct group gr, *gp = NULL;
        char b[4096];
        a->gname[0] = 0;
        if (getgrgid_r(sb->st_gid, &gr, b, sizeof(b), &gp) == 0 && gp)
            snprintf(a->gname, sizeof(a->gname), "%s", gp->gr_name);
        a->last_gid = sb->st_gid;
        a->have_gid = true;
    }
    if (a->uname[0])
        n->user = strdup(a->uname);
    if (a->gname[0])
        n->group = strdup(a->gname);
    /* as restic 0.14: the device always, the link count for what can be linked */
    n->inode = sb->st_ino;
    n->device_id = sb->st_dev;
    if (n->type == BK_N_FILE || n->type == BK_N_SYMLINK || n->type == BK_N_DEV || n->type == BK_N_CHARDEV)
        n->links = sb->st_nlink;
    if (n->type == BK_N_FILE)
        n->size = (uint64_t)sb->st_size;
    if (n->type == BK_N_DEV || n->type == BK_N_CHARDEV)
        n->rdev = sb->st_rdev;
    if (n->type == BK_N_SYMLINK) {
        char t[PATH_MAX];
        ssize_t k = readlink(path, t, sizeof(t) - 1);
        if (k >= 0) {
            t[k] = 0;
            n->linktarget = strdup(t);
        }
    }
    /* extended attributes, where the file system has them (not of symlinks, as restic) */
    char names[4096];
    ssize_t nl = n->type == BK_N_SYMLINK ? 0 : llistxattr(path, names, sizeof(names));
    if (nl > 0) {
        size_t cnt = 0;
        for (ssize_t i = 0; i < nl; i += (ssize_t)strlen(names + i) + 1)
            cnt++;
        n->xattrs = calloc(cnt, sizeof(*n->xattrs));
        for (ssize_t i = 0; n->xattrs && i < nl; i += (ssize_t)strlen(names + i) + 1) {
            uint8_t v[65536];
            ssize_t vl = lgetxattr(path, names + i, v, sizeof(v));
            if (vl < 0)
                continue;
            struct bk_xattr *x = &n->xattrs[n->nxattrs];
            x->name = strdup(names + i);
            x->value = malloc(vl ? (size_t)vl : 1);
            if (!x->name || !x->value) {
                free(x->name);
                free(x->value);
                continue;
            }
            memcpy(x->value, v, (size_t)vl);
            x->len = (size_t)vl;
            n->nxattrs++;
        }
    }
}

static void fail(struct arch *a, const char *path, int e)
{
    a->r->st.errors++;
    log_warn("backup: skipped", "path", path, "err", cairn_strerror(e));
}

/* ---- files ---- */

static int read_file(struct arch *a, struct bk_chunker *ch, struct ent *en, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    en->ccap = (size_t)(en->node.size / BK_MIN_CHUNK) + 2;
    en->node.content = calloc(en->ccap, sizeof(bk_id));
    if (!en->node.content) {
        close(fd);
        return -ENOMEM;
    }
    bk_chunker_restart(ch);
    uint8_t *cur = buf_get(a);
    size_t have = 0;
    int e = 0;
    uint64_t total = 0;
    while (cur) {
        size_t want = BK_MAX_CHUNK - have < READ_STEP ? BK_MAX_CHUNK - have : READ_STEP;
        ssize_t k = read(fd, cur + BK_HEADROOM + have, want);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            e = -errno;
            break;
        }
        if (k == 0) {
            if (have || !en->node.ncontent) {
                if (!have) {
                    buf_put(a, cur, 0);     /* an empty file has no chunk: content [] */
                    cur = NULL;
                    break;
                }
                goto emit_last;
            }
            break;
        }
        total += (uint64_t)k;
        __atomic_fetch_add(&a->r->st.bytes_processed, (uint64_t)k, __ATOMIC_RELAXED);
        size_t pos = have, end = have + (size_t)k;
        have = end;
        while (pos < end) {
            size_t cut = bk_chunker_next(ch, cur + BK_HEADROOM + pos, end - pos);
            if (!cut)
                break;
            size_t clen = pos + cut;
            uint8_t *next = buf_get(a);
            if (!next) {
                e = -ENOMEM;
                break;
            }
            memcpy(next + BK_HEADROOM, cur + BK_HEADROOM + clen, end - clen);
            if (en->node.ncontent == en->ccap) {
                /* the file grew while we read it: the workers hold pointers into content */
                if ((e = drain(a)))
                    break;
                bk_id *c = realloc(en->node.content, en->ccap * 2 * sizeof(bk_id));
                if (!c) {
                    e = -ENOMEM;
                    break;
                }
                en->node.content = c;
                en->ccap *= 2;
            }
            if ((e = submit(a, cur, clen, &en->node.content[en->node.ncontent++]))) {
                buf_put(a, next, 0);
                cur = NULL;
                break;
            }
            cur = next;
            end -= clen;
            pos = 0;
            have = end;
        }
        if (!e && cancelled(a))
            e = -ECANCELED;
        if (e)
            break;
        progress(a, false);
        continue;
emit_last:
        if (en->node.ncontent == en->ccap) {
            if ((e = drain(a)))
                break;
            bk_id *c = realloc(en->node.content, (en->ccap + 1) * sizeof(bk_id));
            if (!c) {
                e = -ENOMEM;
                break;
            }
            en->node.content = c;
            en->ccap++;
        }
        e = submit(a, cur, have, &en->node.content[en->node.ncontent++]);
        cur = NULL;
        break;
    }
    buf_put(a, cur, BK_MAX_CHUNK);
    close(fd);
    if (!e && total != en->node.size)
        en->node.size = total;          /* what we read is what the snapshot holds */
    return e;
}

/* ---- readers ---- */

static int queue_file(struct arch *a, struct ent *en, const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    pthread_mutex_lock(&a->mu);
    while (a->fqlen == FQ_LEN && !a->werr)
        pthread_cond_wait(&a->froom, &a->mu);
    int e = a->werr;
    if (!e) {
        a->fq[(a->fqhead + a->fqlen) % FQ_LEN] = (struct fjob){ en, p };
        a->fqlen++;
        pthread_cond_signal(&a->fmore);
    }
    pthread_mutex_unlock(&a->mu);
    if (e)
        free(p);
    return e;
}

static void *reader_main(void *arg)
{
    struct arch *a = arg;
    struct bk_chunker *ch = malloc(sizeof(*ch));
    if (ch)
        *ch = a->ch;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->fqlen && !a->fdone)
            pthread_cond_wait(&a->fmore, &a->mu);
        if (!a->fqlen)
            break;
        struct fjob j = a->fq[a->fqhead];
        a->fqhead = (a->fqhead + 1) % FQ_LEN;
        a->fqlen--;
        pthread_cond_signal(&a->froom);
        bool skip = a->werr != 0 || cancelled(a);
        pthread_mutex_unlock(&a->mu);
        int e = skip ? -ECANCELED : ch ? read_file(a, ch, j.en, j.path) : -ENOMEM;
        if (e && e != -ECANCELED) {
            j.en->failed = true;
            __atomic_fetch_add(&a->r->st.errors, 1, __ATOMIC_RELAXED);
            log_warn("backup: skipped", "path", j.path, "err", cairn_strerror(e));
        } else if (e) {
            j.en->failed = true;
        }
        free(j.path);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    free(ch);
    return NULL;
}

/* ---- the walk ---- */

static int by_name(const void *x, const void *y)
{
    return strcmp(((const struct ent *)x)->node.name, ((const struct ent *)y)->node.name);
}

static struct ent *add_kid(struct ent *d)
{
    if (d->nkids == d->kcap) {
        /* only the root grows after readers may hold entries: its kids are the
         * paths, made before any file is queued */
        size_t n = d->kcap ? d->kcap * 2 : 8;
        struct ent *k = realloc(d->kids, n * sizeof(*k));
        if (!k)
            return NULL;
        d->kids = k;
        d->kcap = n;
    }
    struct ent *e = &d->kids[d->nkids++];
    memset(e, 0, sizeof(*e));
    return e;
}

static const struct bk_node *parent_find(const struct bk_tree *pt, const char *name)
{
    if (!pt)
        return NULL;
    size_t lo = 0, hi = pt->n;
    while (lo < hi) {                   /* restic sorts by name; fall back to a scan */
        size_t mid = (lo + hi) / 2;
        int c = strcmp(pt->nodes[mid].name, name);
        if (!c)
            return &pt->nodes[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = 0; i < pt->n; i++)
        if (!strcmp(pt->nodes[i].name, name))
            return &pt->nodes[i];
    return NULL;
}

static int walk(struct arch *a, struct ent *en, const char *path, const struct stat *sb, const struct bk_node *pn);

static int walk_dir(struct arch *a, struct ent *en, const char *path, const struct bk_node *pn)
{
    struct bk_tree pt = { 0 }, *ptp = NULL;
    char err[256];
    if (pn && pn->type == BK_N_DIR && pn->has_subtree && !bk_tree_load(a->r, &pn->subtree, &pt, err, sizeof(err)))
        ptp = &pt;
    DIR *d = opendir(path);
    if (!d) {
        bk_tree_free(&pt);
        return -errno;
    }
    struct dirent *de;
    int e = 0;
    char **names = NULL;
    size_t nn = 0, cap = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 16;
            char **v = realloc(names, cap * sizeof(*v));
            if (!v) {
                e = -ENOMEM;
                break;
            }
            names = v;
        }
        if (!(names[nn] = strdup(de->d_name))) {
            e = -ENOMEM;
            break;
        }
        nn++;
    }
    closedir(d);
    /* the readers hold pointers to these entries: the array must not move */
    if (!e && nn > en->kcap) {
        struct ent *k = realloc(en->kids, nn * sizeof(*k));
        if (!k)
            e = -ENOMEM;
        else {
            en->kids = k;
            en->kcap = nn;
        }
    }
    for (size_t i = 0; i < nn && !e; i++) {
        char p[PATH_MAX];
        struct stat csb;
        if (snprintf(p, sizeof(p), "%s/%s", strcmp(path, "/") ? path : "", names[i]) >= (int)sizeof(p)) {
            fail(a, names[i], -ENAMETOOLONG);
            continue;
        }
        if (excluded(a->o, p))
            continue;
        if (lstat(p, &csb) < 0) {
            fail(a, p, -errno);
            continue;
        }
        struct ent *k = add_kid(en);
        if (!k) {
            e = -ENOMEM;
            break;
        }
        k->node.name = strdup(names[i]);
        int x = walk(a, k, p, &csb, parent_find(ptp, names[i]));
        if (x == -ENOMEM || x == -ECANCELED || x == -EBUSY || werr(a)) {
            e = x;
            break;
        }
        if (x) {
            fail(a, p, x);
            k->failed = true;           /* kept (and freed) with the rest, left out of the tree */
        }
    }
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    bk_tree_free(&pt);
    /* the parent trees' JSON parses leave freed memory scattered in the heap */
    if (++a->dirs_walked % 512 == 0)
        malloc_trim(0);
    return e;
}

static bool same_file(struct arch *a, const struct bk_node *pn, const struct bk_node *n)
{
    if (!pn || pn->type != BK_N_FILE || pn->size != n->size || pn->mtime_ns != n->mtime_ns ||
        pn->ctime_ns != n->ctime_ns || pn->inode != n->inode)
        return false;
    for (size_t i = 0; i < pn->ncontent; i++)
        if (!bk_index_find(a->r, &pn->content[i], BK_BLOB_DATA))
            return false;
    return true;
}

static int walk(struct arch *a, struct ent *en, const char *path, const struct stat *sb, const struct bk_node *pn)
{
    if (cancelled(a))
        return -ECANCELED;
    fill_node(a, &en->node, path, sb);
    if (!en->node.name)
        return -ENOMEM;
    if (en->node.type == BK_N_DIR) {
        a->r->st.dirs++;
        return walk_dir(a, en, path, pn);
    }
    if (en->node.type != BK_N_FILE)
        return 0;
    a->files_done++;
    if (same_file(a, pn, &en->node)) {
        en->node.content = malloc((pn->ncontent ? pn->ncontent : 1) * sizeof(bk_id));
        if (!en->node.content)
            return -ENOMEM;
        if (pn->ncontent)
            memcpy(en->node.content, pn->content, pn->ncontent * sizeof(bk_id));
        en->node.ncontent = pn->ncontent;
        a->r->st.files_unmodified++;
        __atomic_fetch_add(&a->r->st.bytes_processed, en->node.size, __ATOMIC_RELAXED);
        return 0;
    }
    if (pn)
        a->r->st.files_changed++;
    else
        a->r->st.files_new++;
    int e = queue_file(a, en, path);
    if (cairn_wall_time() - a->last_index > INDEX_EVERY_S) {
        char lerr[256];
        if (bk_lock_verify(a->r, lerr, sizeof(lerr)))
            return -EBUSY;
        bk_index_write_pending(a->r);
        bk_lock_refresh(a->r);
        a->last_index = cairn_wall_time();
    }
    return e;
}

/* ---- trees out ---- */

static int save_tree(struct arch *a, struct ent *en, bk_id *out)
{
    struct bk_tree t = { 0 };
    if (en->nkids > 1)
        qsort(en->kids, en->nkids, sizeof(*en->kids), by_name);
    t.nodes = calloc(en->nkids ? en->nkids : 1, sizeof(*t.nodes));
    if (!t.nodes)
        return -ENOMEM;
    int e = 0;
    for (size_t i = 0; i < en->nkids && !e; i++) {
        struct ent *k = &en->kids[i];
        if (k->failed)
            continue;
        if (k->node.type == BK_N_DIR) {
            e = save_tree(a, k, &k->node.subtree);
            k->node.has_subtree = true;
        }
        t.nodes[t.n++] = k->node;
    }
    struct buf b = BUF_INIT;
    if (!e && !(e = bk_tree_encode(&t, &b))) {
        bk_sha256(buf_head(&b), buf_used(&b), out);
        e = bk_blob_save(a->r, &a->r->tree_packer, BK_BLOB_TREE, out, buf_head(&b), buf_used(&b));
        if (e == -EEXIST)
            e = 0;
    }
    buf_free(&b);
    free(t.nodes);                      /* the nodes themselves stay the ents' */
    return e;
}

static void free_ent(struct ent *en)
{
    for (size_t i = 0; i < en->nkids; i++)
        free_ent(&en->kids[i]);
    free(en->kids);
    bk_node_free(&en->node);
}

/* The nodes leading to an absolute path, as restic stores an absolute path it is
 * given: the root tree holds its first component, and so on down; each directory
 * on the way gets its own metadata. Returns the path's own node (walked by the
 * caller), or NULL with *e set. */
static struct ent *path_ent(struct arch *a, struct ent *root, const char *abs, bool create, int *e)
{
    struct ent *cur = root;
    char partial[PATH_MAX] = "";
    const char *p = abs;
    while (*p == '/')
        p++;
    if (!*p) {
        *e = -EINVAL;                   /* "/" itself: restic refuses it too */
        return NULL;
    }
    while (*p) {
        const char *s = strchr(p, '/');
        size_t l = s ? (size_t)(s - p) : strlen(p);
        char name[NAME_MAX + 1];
        snprintf(name, sizeof(name), "%.*s", (int)l, p);
        size_t pl = strlen(partial);
        snprintf(partial + pl, sizeof(partial) - pl, "/%s", name);
        p += l;
        while (*p == '/')
            p++;
        struct ent *k = NULL;
        for (size_t i = 0; i < cur->nkids; i++)
            if (!strcmp(cur->kids[i].node.name, name))
                k = &cur->kids[i];
        if (!k && !create) {
            *e = -ENOENT;
            return NULL;
        }
        if (!k) {
            if (!(k = add_kid(cur)) || !(k->node.name = strdup(name))) {
                *e = -ENOMEM;
                return NULL;
            }
            if (*p) {
                struct stat sb;
                if (lstat(partial, &sb) < 0) {
                    *e = -errno;
                    return NULL;
                }
                fill_node(a, &k->node, partial, &sb);
            }
        }
        cur = k;
    }
    return cur;
}

static const struct bk_snapshot *find_parent(const struct bk_snapshot *s, size_t n, const char *host,
                                             char *const *paths, size_t npaths)
{
    for (size_t i = n; i-- > 0;) {
        if (!s[i].hostname || strcmp(s[i].hostname, host) || s[i].npaths != npaths)
            continue;
        bool same = true;
        for (size_t k = 0; k < npaths && same; k++)
            same = !strcmp(s[i].paths[k], paths[k]);
        if (same)
            return &s[i];
    }
    return NULL;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

int bk_backup(struct bk_repo *r, const struct bk_backup_opts *o, struct bk_backup_result *res, char *err,
              size_t errlen)
{
    struct arch a = { .r = r, .o = o };
    memset(res, 0, sizeof(*res));
    memset(&r->st, 0, sizeof(r->st));
    double t0 = cairn_wall_time();
    a.last_index = t0;
    a.pr.started = t0;
    a.pr.tty = !o->quiet && isatty(2);
    if (bk_chunker_init(&a.ch, r->pol)) {
        snprintf(err, errlen, "the repository's chunker polynomial %llx is unusable", (unsigned long long)r->pol);
        return -EINVAL;
    }
    /* absolute, sorted paths (restic stores them so) */
    char **paths = calloc(o->npaths ? o->npaths : 1, sizeof(char *));
    if (!paths)
        return -ENOMEM;
    int e = 0;
    for (size_t i = 0; i < o->npaths && !e; i++) {
        char abs[PATH_MAX];
        if (!realpath(o->paths[i], abs)) {
            e = -errno;
            snprintf(err, errlen, "%s: %s", o->paths[i], cairn_strerror(e));
        } else if (!(paths[i] = strdup(abs))) {
            e = -ENOMEM;
        }
    }
    if (e) {
        for (size_t i = 0; i < o->npaths; i++)
            free(paths[i]);
        free(paths);
        return e;
    }
    qsort(paths, o->npaths, sizeof(char *), cmp_str);
    char host[256];
    if (o->hostname)
        snprintf(host, sizeof(host), "%s", o->hostname);
    else if (gethostname(host, sizeof(host) - 1) < 0)
        strcpy(host, "localhost");
    /* what an interrupted run stored is reused, not stored again */
    size_t adopted = 0;
    if (bk_adopt_orphans(r, &adopted) == 0 && adopted)
        log_info("packs of an interrupted backup reused", "packs", log_int((long long)adopted));
    /* the parent: the newest snapshot of the same host and paths */
    struct bk_snapshot *snaps = NULL;
    size_t nsnaps = 0;
    const struct bk_snapshot *parent = NULL;
    struct bk_tree proot = { 0 };
    if (!bk_snapshots_load(r, &snaps, &nsnaps, err, errlen))
        parent = find_parent(snaps, nsnaps, host, paths, o->npaths);
    if (parent && bk_tree_load(r, &parent->tree, &proot, err, errlen))
        parent = NULL;
    if (a.pr.tty)
        for (size_t i = 0; i < o->npaths; i++)
            prescan(&a, paths[i]);
    /* workers */
    a.nthreads = o->threads > 0 ? o->threads : cairn_ncpus();
    if (a.nthreads < 1)
        a.nthreads = 1;
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.more, NULL);
    pthread_cond_init(&a.room, NULL);
    pthread_cond_init(&a.idle, NULL);
    pthread_cond_init(&a.fmore, NULL);
    pthread_cond_init(&a.froom, NULL);
    a.threads = calloc((size_t)a.nthreads, sizeof(pthread_t));
    a.packers = calloc((size_t)a.nthreads, sizeof(struct bk_packer));
    int started = 0;
    if (!a.threads || !a.packers)
        e = -ENOMEM;
    for (int i = 0; !e && i < a.nthreads; i++) {
        struct worker *w = malloc(sizeof(*w));
        if (w) {
            w->a = &a;
            w->idx = i;
        }
        if (!w || pthread_create(&a.threads[i], NULL, worker_main, w)) {
            free(w);
            e = -EAGAIN;
            break;
        }
        started++;
    }
    struct ent root = { 0 };
    /* every path's nodes first: the arrays holding them stop moving before any
     * reader holds a pointer into them */
    for (size_t i = 0; i < o->npaths && !e; i++)
        if (!path_ent(&a, &root, paths[i], true, &e))
            snprintf(err, errlen, "%s: %s", paths[i], cairn_strerror(e));
    for (int i = 0; !e && i < NREADERS; i++) {
        if (pthread_create(&a.readers[i], NULL, reader_main, &a)) {
            e = -EAGAIN;
            break;
        }
        a.nreaders++;
    }
    for (size_t i = 0; i < o->npaths && !e; i++) {
        struct ent *pe = path_ent(&a, &root, paths[i], false, &e);
        if (!pe) {
            snprintf(err, errlen, "%s: %s", paths[i], cairn_strerror(e));
            break;
        }
        /* the parent's node for this path: follow its components down the parent's trees */
        struct bk_node pnode = { 0 };
        const struct bk_node *pn = NULL;
        if (parent) {
            struct bk_tree cur = proot, next = { 0 };
            bool owned = false;
            const char *p = paths[i];
            while (*p == '/')
                p++;
            while (*p) {
                const char *s = strchr(p, '/');
                size_t l = s ? (size_t)(s - p) : strlen(p);
                char name[NAME_MAX + 1];
                snprintf(name, sizeof(name), "%.*s", (int)l, p);
                const struct bk_node *n = parent_find(&cur, name);
                if (!n || n->type != BK_N_DIR || !n->has_subtree)
                    break;
                if (!s || !s[strspn(s, "/")]) {
                    pnode.type = BK_N_DIR;
                    pnode.has_subtree = true;
                    pnode.subtree = n->subtree;
                    pn = &pnode;
                    break;
                }
                if (bk_tree_load(r, &n->subtree, &next, err, errlen))
                    break;
                if (owned)
                    bk_tree_free(&cur);
                cur = next;
                owned = true;
                p = s + strspn(s, "/");
            }
            if (owned)
                bk_tree_free(&cur);
        }
        struct stat sb;
        if (lstat(paths[i], &sb) < 0) {
            e = -errno;
            snprintf(err, errlen, "%s: %s", paths[i], cairn_strerror(e));
            break;
        }
        int x = walk(&a, pe, paths[i], &sb, pn);
        if (x) {
            e = x;
            snprintf(err, errlen, "%s: %s", paths[i], cairn_strerror(e));
        }
    }
    /* the readers finish the queued files, then the workers stop, each flushing
     * its pack */
    pthread_mutex_lock(&a.mu);
    a.fdone = true;
    pthread_cond_broadcast(&a.fmore);
    pthread_mutex_unlock(&a.mu);
    for (int i = 0; i < a.nreaders; i++)
        pthread_join(a.readers[i], NULL);
    pthread_mutex_lock(&a.mu);
    a.done = true;
    pthread_cond_broadcast(&a.more);
    pthread_mutex_unlock(&a.mu);
    for (int i = 0; i < started; i++)
        pthread_join(a.threads[i], NULL);
    if (!e && a.werr) {
        e = a.werr;
        snprintf(err, errlen, "storing data in %s: %s", r->be->desc, cairn_strerror(e));
    }
    bk_id tree;
    if (!e) {
        if ((e = save_tree(&a, &root, &tree)) || (e = bk_packer_flush(r, &r->tree_packer)))
            snprintf(err, errlen, "storing trees in %s: %s", r->be->desc, cairn_strerror(e));
    }
    /* nothing may name what was stored before the lock's second look */
    if (!e && (e = bk_lock_verify(r, err, errlen)))
        log_warn("an exclusive lock appeared (a prune?): the backup stops", "error", err);
    /* the index goes out even after a failure: the packs that made it are kept */
    int ie = e == -EBUSY ? 0 : bk_index_write_pending(r);
    if (!e && ie) {
        e = ie;
        snprintf(err, errlen, "writing the index to %s: %s", r->be->desc, cairn_strerror(e));
    }
    if (!e) {
        struct buf j = BUF_INIT;
        char t[48], hex[65];
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        bk_time_format(now.tv_sec, now.tv_nsec, t);
        buf_printf(&j, "{\"time\":\"%s\"", t);
        if (parent)
            buf_printf(&j, ",\"parent\":\"%s\"", parent->name);
        bk_id_hex(&tree, hex);
        buf_printf(&j, ",\"tree\":\"%s\",\"paths\":[", hex);
        for (size_t i = 0; i < o->npaths; i++) {
            buf_puts(&j, i ? "," : "");
            buf_json_str(&j, paths[i]);
        }
        buf_puts(&j, "],\"hostname\":");
        buf_json_str(&j, host);
        const char *u = getenv("USER");
        buf_puts(&j, ",\"username\":");
        buf_json_str(&j, u && *u ? u : getuid() == 0 ? "root" : "");
        if (getuid())
            buf_printf(&j, ",\"uid\":%u", (unsigned)getuid());
        if (getgid())
            buf_printf(&j, ",\"gid\":%u", (unsigned)getgid());
        if (o->nexcludes) {
            buf_puts(&j, ",\"excludes\":[");
            for (size_t i = 0; i < o->nexcludes; i++) {
                buf_puts(&j, i ? "," : "");
                buf_json_str(&j, o->excludes[i]);
            }
            buf_putc(&j, ']');
        }
        if (o->ntags) {
            buf_puts(&j, ",\"tags\":[");
            for (size_t i = 0; i < o->ntags; i++) {
                buf_puts(&j, i ? "," : "");
                buf_json_str(&j, o->tags[i]);
            }
            buf_putc(&j, ']');
        }
        buf_printf(&j, ",\"program_version\":\"cairn %s\"}", CAIRN_VERSION);
        bk_id sid;
        if ((e = bk_save_unpacked(r, BK_SNAPSHOT, buf_head(&j), buf_used(&j), &sid)))
            snprintf(err, errlen, "writing the snapshot to %s: %s", r->be->desc, cairn_strerror(e));
        else
            bk_id_hex(&sid, res->snapshot);
        buf_free(&j);
    }
    progress(&a, true);
    res->st = r->st;
    res->seconds = cairn_wall_time() - t0;
    free_ent(&root);
    for (int i = 0; i < a.nthreads && a.packers; i++)
        bk_packer_free(&a.packers[i]);
    free(a.packers);
    free(a.threads);
    for (size_t i = 0; i < a.npool; i++)
        free(a.pool[i]);
    pthread_mutex_destroy(&a.mu);
    pthread_cond_destroy(&a.more);
    pthread_cond_destroy(&a.room);
    pthread_cond_destroy(&a.idle);
    pthread_cond_destroy(&a.fmore);
    pthread_cond_destroy(&a.froom);
    bk_tree_free(&proot);
    bk_snapshots_free(snaps, nsnaps);
    for (size_t i = 0; i < o->npaths; i++)
        free(paths[i]);
    free(paths);
    return e;
}
