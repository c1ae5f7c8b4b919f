/* bk_restore.c - a snapshot back onto disk: directories, files, symlinks, devices
 * and fifos with their modes, owners (as root), times and extended attributes;
 * hard links as links; runs of zeros as holes (sparse files).
 *
 * The calling thread walks the trees and creates every directory and every file
 * (empty), so hard links can point at a file at once; worker threads fill the
 * files from the packs and set their metadata. Directories get theirs last,
 * deepest first, once nothing is written into them any more.
 */
#include "backup_internal.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define RQ_LEN 32

struct rjob {
    char *path;
    struct bk_node node;                /* a copy: content and xattrs owned */
};

struct rdir {
    char *path;
    struct bk_node node;
};

struct rst {
    struct bk_repo *r;
    struct bk_restore_result *res;
    pthread_mutex_t mu;
    pthread_cond_t more, room;
    struct rjob q[RQ_LEN];
    size_t qhead, qlen;
    bool done;
    int err;
    char errmsg[512];
    struct rdir *dirs;
    size_t ndirs, dcap;
    /* hard links: (device, inode) -> first path */
    struct hl { uint64_t dev, ino; char *path; } *links;
    size_t nlinks, lcap;
    struct bk_progress pr;
    uint64_t bytes_done;
};

static mode_t posix_mode(uint32_t m)
{
    mode_t p = m & 0777;
    if (m & GO_MODE_SETUID)
        p |= S_ISUID;
    if (m & GO_MODE_SETGID)
        p |= S_ISGID;
    if (m & GO_MODE_STICKY)
        p |= S_ISVTX;
    return p;
}

static void set_meta(const char *path, const struct bk_node *n)
{
    if (geteuid() == 0 && lchown(path, n->uid, n->gid) < 0)
        log_warn("restore: chown failed", "path", path, "err", cairn_strerror(-errno));
    if (n->type != BK_N_SYMLINK && chmod(path, posix_mode(n->mode)) < 0)
        log_warn("restore: chmod failed", "path", path, "err", cairn_strerror(-errno));
    for (size_t i = 0; i < n->nxattrs; i++)
        if (lsetxattr(path, n->xattrs[i].name, n->xattrs[i].value, n->xattrs[i].len, 0) < 0 && errno != ENOTSUP)
            log_warn("restore: xattr not set", "path", path, "name", n->xattrs[i].name);
    struct timespec ts[2] = {
        { (time_t)(n->atime_ns / 1000000000), (long)(n->atime_ns % 1000000000) },
        { (time_t)(n->mtime_ns / 1000000000), (long)(n->mtime_ns % 1000000000) },
    };
    if (ts[0].tv_nsec < 0 || ts[1].tv_nsec < 0)
        return;
    utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
}

static bool all_zero(const char *p, size_t n)
{
    static const char z[4096];
    while (n >= sizeof(z)) {
        if (memcmp(p, z, sizeof(z)))
            return false;
        p += sizeof(z);
        n -= sizeof(z);
    }
    return memcmp(p, z, n) == 0;
}

static int fill_file(struct rst *s, const struct rjob *j, struct buf *bufs, char *err, size_t errlen)
{
    int fd = open(j->path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", j->path, cairn_strerror(-errno));
        return -errno;
    }
    uint64_t off = 0;
    int e = 0;
    for (size_t i = 0; i < j->node.ncontent && !e; i++) {
        const struct bk_ientry *en = bk_index_find(s->r, &j->node.content[i], BK_BLOB_DATA);
        char hex[65];
        if (!en) {
            bk_id_hex(&j->node.content[i], hex);
            snprintf(err, errlen, "%s: blob %.16s is in no index", j->path, hex);
            e = -ENOENT;
            break;
        }
        if ((e = bk_blob_load2(s->r, en, &bufs[0], &bufs[1], err, errlen)))
            break;
        size_t n = buf_used(&bufs[0]);
        if (!all_zero(buf_head(&bufs[0]), n) && (e = cairn_pwrite_all(fd, buf_head(&bufs[0]), n, off)))
            snprintf(err, errlen, "%s: %s", j->path, cairn_strerror(e));
        /* most blobs are about 1 MiB: an odd big one's buffers are not kept */
        for (int k = 0; k < 2; k++)
            if (bufs[k].cap > (3u << 20))
                buf_free(&bufs[k]);
        off += n;
        pthread_mutex_lock(&s->mu);
        s->bytes_done += n;
        pthread_mutex_unlock(&s->mu);
    }
    if (!e && ftruncate(fd, (off_t)off) < 0) {
        e = -errno;
        snprintf(err, errlen, "%s: %s", j->path, cairn_strerror(e));
    }
    if (close(fd) < 0 && !e) {
        e = -errno;
        snprintf(err, errlen, "%s: %s", j->path, cairn_strerror(e));
    }
    return e;
}

static void *rworker(void *arg)
{
    struct rst *s = arg;
    struct buf bufs[2] = { BUF_INIT, BUF_INIT };    /* a blob, and its sealed bytes: kept */
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->qlen && !s->done)
            pthread_cond_wait(&s->more, &s->mu);
        if (!s->qlen)
            break;
        struct rjob j = s->q[s->qhead];
        s->qhead = (s->qhead + 1) % RQ_LEN;
        s->qlen--;
        pthread_cond_signal(&s->room);
        pthread_mutex_unlock(&s->mu);
        char err[512];
        int e = fill_file(s, &j, bufs, err, sizeof(err));
        if (!e)
            set_meta(j.path, &j.node);
        pthread_mutex_lock(&s->mu);
        if (e) {
            s->res->errors++;
            if (!s->err) {
                s->err = e;
                snprintf(s->errmsg, sizeof(s->errmsg), "%s", err);
            }
        }
        pthread_mutex_unlock(&s->mu);
        free(j.path);
        bk_node_free(&j.node);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    buf_free(&bufs[0]);
    buf_free(&bufs[1]);
    return NULL;
}

static void progress(struct rst *s, bool final)
{
    if (!s->pr.tty)
        return;
    double now = cairn_wall_time();
    if (!final && now - s->pr.last < 0.5)
        return;
    s->pr.last = now;
    pthread_mutex_lock(&s->mu);
    double done = (double)s->bytes_done;
    pthread_mutex_unlock(&s->mu);
    double el = now - s->pr.started;
    fprintf(stderr, "\r\033[K[%d:%02d] %llu files, %.1f MiB, %.1f MiB/s%s", (int)el / 60, (int)el % 60,
            (unsigned long long)s->res->files, done / 1048576, el > 0 ? done / 1048576 / el : 0, final ? "\n" : "");
}

/* moves n (its owned parts) into a copy for a job */
static void take_node(struct bk_node *dst, struct bk_node *src)
{
    *dst = *src;
    memset(src, 0, sizeof(*src));
}

static int queue_file(struct rst *s, char *path, struct bk_node *n)
{
    pthread_mutex_lock(&s->mu);
    while (s->qlen == RQ_LEN)
        pthread_cond_wait(&s->room, &s->mu);
    struct rjob *j = &s->q[(s->qhead + s->qlen) % RQ_LEN];
    j->path = path;
    take_node(&j->node, n);
    s->qlen++;
    pthread_cond_signal(&s->more);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int restore_tree(struct rst *s, const bk_id *tree, const char *dir, char *err, size_t errlen)
{
    struct bk_tree t;
    int e = bk_tree_load(s->r, tree, &t, err, errlen);
    if (e)
        return e;
    for (size_t i = 0; i < t.n && !e; i++) {
        struct bk_node *n = &t.nodes[i];
        char path[PATH_MAX];
        if (snprintf(path, sizeof(path), "%s/%s", dir, n->name) >= (int)sizeof(path)) {
            snprintf(err, errlen, "%s/%s: name too long", dir, n->name);
            e = -ENAMETOOLONG;
            break;
        }
        switch (n->type) {
        case BK_N_DIR:
            if (mkdir(path, 0700) < 0 && errno != EEXIST) {
                e = -errno;
                snprintf(err, errlen, "%s: %s", path, cairn_strerror(e));
                break;
            }
            s->res->dirs++;
            if (n->has_subtree && (e = restore_tree(s, &n->subtree, path, err, errlen)))
                break;
            if (s->ndirs == s->dcap) {
                size_t c = s->dcap ? s->dcap * 2 : 64;
                struct rdir *d = realloc(s->dirs, c * sizeof(*d));
                if (!d) {
                    e = -ENOMEM;
                    break;
                }
                s->dirs = d;
                s->dcap = c;
            }
            s->dirs[s->ndirs].path = strdup(path);
            take_node(&s->dirs[s->ndirs].node, n);
            s->ndirs++;
            break;
        case BK_N_FILE: {
            unlink(path);               /* a restore over a tree: never write through an old link */
            s->res->files++;
            if (n->links > 1 && n->device_id) {
                const char *first = NULL;
                for (size_t k = 0; k < s->nlinks; k++)
                    if (s->links[k].dev == n->device_id && s->links[k].ino == n->inode)
                        first = s->links[k].path;
                if (first) {
                    if (link(first, path) < 0) {
                        e = -errno;
                        snprintf(err, errlen, "%s: link to %s: %s", path, first, cairn_strerror(e));
                    }
                    break;
                }
                if (s->nlinks == s->lcap) {
                    size_t c = s->lcap ? s->lcap * 2 : 16;
                    struct hl *l = realloc(s->links, c * sizeof(*l));
                    if (!l) {
                        e = -ENOMEM;
                        break;
                    }
                    s->links = l;
                    s->lcap = c;
                }
                s->links[s->nlinks++] = (struct hl){ n->device_id, n->inode, strdup(path) };
            }
            /* a file others link to exists before this walk goes on; any other is
             * created by the worker that fills it (file creation is much of a
             * restore's cost, and it runs in parallel there) */
            if (n->links > 1 && n->device_id) {
                int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd < 0) {
                    e = -errno;
                    snprintf(err, errlen, "%s: %s", path, cairn_strerror(e));
                    break;
                }
                close(fd);
            }
            s->res->bytes += n->size;
            char *p = strdup(path);
            if (!p) {
                e = -ENOMEM;
                break;
            }
            queue_file(s, p, n);
            progress(s, false);
            break;
        }
        case BK_N_SYMLINK:
            unlink(path);
            if (symlink(n->linktarget ? n->linktarget : "", path) < 0) {
                e = -errno;
                snprintf(err, errlen, "%s: %s", path, cairn_strerror(e));
                break;
            }
            set_meta(path, n);
            break;
        case BK_N_FIFO:
        case BK_N_DEV:
        case BK_N_CHARDEV: {
            mode_t m = n->type == BK_N_FIFO ? S_IFIFO : n->type == BK_N_DEV ? S_IFBLK : S_IFCHR;
            unlink(path);
            if (mknod(path, m | 0600, (dev_t)n->rdev) < 0) {
                log_warn("restore: cannot create", "path", path, "err", cairn_strerror(-errno));
                s->res->errors++;
                break;
            }
            set_meta(path, n);
            break;
        }
        default:
            break;                      /* sockets and the unknown are not restored (as restic) */
        }
    }
    bk_tree_free(&t);
    return e;
}

int bk_restore(struct bk_repo *r, const struct bk_snapshot *sn, const struct bk_restore_opts *o,
               struct bk_restore_result *res, char *err, size_t errlen)
{
    struct rst s = { .r = r, .res = res };
    memset(res, 0, sizeof(*res));
    double t0 = cairn_wall_time();
    s.pr.started = t0;
    s.pr.tty = !o->quiet && isatty(2);
    int e = cairn_mkdir_p(o->target, 0700);
    if (e) {
        snprintf(err, errlen, "%s: %s", o->target, cairn_strerror(e));
        return e;
    }
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.more, NULL);
    pthread_cond_init(&s.room, NULL);
    /* restoring is CPU work (decrypt, decompress, hash, copy): a thread per CPU */
    int nt = cairn_ncpus();
    if (nt < 2)
        nt = 2;
    pthread_t th[64];
    if (nt > 64)
        nt = 64;
    int started = 0;
    for (int i = 0; i < nt; i++)
        if (!pthread_create(&th[i], NULL, rworker, &s))
            started++;
    if (!started)
        e = -EAGAIN;
    if (!e)
        e = restore_tree(&s, &sn->tree, o->target, err, errlen);
    pthread_mutex_lock(&s.mu);
    s.done = true;
    pthread_cond_broadcast(&s.more);
    pthread_mutex_unlock(&s.mu);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    /* directories last, deepest first (they were appended after their children) */
    for (size_t i = 0; i < s.ndirs; i++) {
        set_meta(s.dirs[i].path, &s.dirs[i].node);
        free(s.dirs[i].path);
        bk_node_free(&s.dirs[i].node);
    }
    free(s.dirs);
    for (size_t i = 0; i < s.nlinks; i++)
        free(s.links[i].path);
    free(s.links);
    if (!e && s.err) {
        e = s.err;
        snprintf(err, errlen, "%s", s.errmsg);
    }
    progress(&s, true);
    res->seconds = cairn_wall_time() - t0;
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.more);
    pthread_cond_destroy(&s.room);
    return e;
}
