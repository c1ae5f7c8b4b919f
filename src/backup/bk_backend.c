/* bk_backend.c - where a repository's files live: a local directory in restic's
 * layout (config, keys/, data/XX/, index/, snapshots/, locks/), or S3 (bk_s3.c).
 *
 * A local save writes a temporary file next to the final name, fsyncs it, renames
 * it into place and fsyncs the directory, so a reader (restic too) sees a whole
 * file or none, and an acknowledged file survives a crash.
 */
#include "backup_internal.h"
#include "core/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const bk_ftype_dir[BK_NFTYPES] = { "", "keys", "data", "index", "snapshots", "locks" };

struct local {
    struct bk_backend be;
    char *root;
};

static int local_path(struct local *l, enum bk_ftype t, const char *name, char *out, size_t n)
{
    int w;
    if (t == BK_CONFIG)
        w = snprintf(out, n, "%s/config", l->root);
    else if (t == BK_DATA)
        w = snprintf(out, n, "%s/data/%.2s/%s", l->root, name, name);
    else
        w = snprintf(out, n, "%s/%s/%s", l->root, bk_ftype_dir[t], name);
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

static int local_save(struct bk_backend *be, enum bk_ftype t, const char *name, const void *p, size_t n)
{
    struct local *l = (struct local *)be;
    char path[4096], tmp[4200], dir[4096];
    int r = local_path(l, t, name, path, sizeof(path));
    if (r)
        return r;
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    *slash = 0;
    if (t == BK_DATA && (r = cairn_mkdir_p(dir, 0700)))
        return r;
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%s-%d", dir, name, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    r = cairn_write_all(fd, p, n);
    if (!r && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && !r)
        r = -errno;
    if (!r && rename(tmp, path) < 0)
        r = -errno;
    if (r) {
        unlink(tmp);
        return r;
    }
    return cairn_fsync_dir(dir);
}

static int local_load(struct bk_backend *be, enum bk_ftype t, const char *name, uint64_t off, uint64_t len,
                      struct buf *out)
{
    struct local *l = (struct local *)be;
    char path[4096];
    struct stat sb;
    int r = local_path(l, t, name, path, sizeof(path));
    if (r)
        return r;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &sb) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (off > size || (len && off + len > size)) {
        close(fd);
        return -ERANGE;
    }
    if (!len)
        len = size - off;
    if (buf_reserve(out, len)) {
        close(fd);
        return -ENOMEM;
    }
    uint64_t got = 0;
    while (got < len) {
        ssize_t k = pread(fd, buf_tail(out), len - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            r = k < 0 ? -errno : -EIO;
            break;
        }
        buf_commit(out, (size_t)k);
        got += (uint64_t)k;
    }
    close(fd);
    return r;
}

static int local_stat(struct bk_backend *be, enum bk_ftype t, const char *name, uint64_t *size)
{
    struct local *l = (struct local *)be;
    char path[4096];
    struct stat sb;
    int r = local_path(l, t, name, path, sizeof(path));
    if (r)
        return r;
    if (stat(path, &sb) < 0)
        return -errno;
    *size = (uint64_t)sb.st_size;
    return 0;
}

static int list_dir(const char *dir, bk_list_cb cb, void *arg)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    int r = 0;
    while (!r && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[4352];
        struct stat sb;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if (stat(p, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        r = cb(arg, de->d_name, (uint64_t)sb.st_size);
    }
    closedir(d);
    return r;
}

static int local_list(struct bk_backend *be, enum bk_ftype t, bk_list_cb cb, void *arg)
{
    struct local *l = (struct local *)be;
    char dir[4096];
    if (t == BK_CONFIG)
        return -EINVAL;
    snprintf(dir, sizeof(dir), "%s/%s", l->root, bk_ftype_dir[t]);
    if (t != BK_DATA)
        return list_dir(dir, cb, arg);
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    int r = 0;
    while (!r && (de = readdir(d))) {
        if (de->d_name[0] == '.' || strlen(de->d_name) != 2)
            continue;
        char sub[4200];
        snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
        r = list_dir(sub, cb, arg);
    }
    closedir(d);
    return r;
}

static int local_remove(struct bk_backend *be, enum bk_ftype t, const char *name)
{
    struct local *l = (struct local *)be;
    char path[4096];
    int r = local_path(l, t, name, path, sizeof(path));
    if (r)
        return r;
    if (unlink(path) < 0)
        return -errno;
    return 0;
}

static void local_free(struct bk_backend *be)
{
    struct local *l = (struct local *)be;
    free(l->root);
    free(l);
}

static int local_tmp_file(struct bk_backend *be, char *path, size_t n)
{
    struct local *l = (struct local *)be;
    uint8_t rnd[8];
    char hex[17];
    cairn_random(rnd, sizeof(rnd));
    cairn_hex(rnd, sizeof(rnd), hex);
    /* in data/, on the file system the pack is renamed into */
    if (snprintf(path, n, "%s/data/.tmp-pack-%d-%s", l->root, (int)getpid(), hex) >= (int)n)
        return -ENAMETOOLONG;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
}

static int local_save_file(struct bk_backend *be, enum bk_ftype t, const char *name, const char *tmp,
                           uint64_t size)
{
    struct local *l = (struct local *)be;
    char path[4096], dir[4096];
    (void)size;
    int r = local_path(l, t, name, path, sizeof(path));
    if (r)
        goto fail;
    snprintf(dir, sizeof(dir), "%s", path);
    *strrchr(dir, '/') = 0;
    if ((r = cairn_mkdir_p(dir, 0700)))
        goto fail;
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        r = -errno;
        if (fd >= 0)
            close(fd);
        goto fail;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        r = -errno;
        goto fail;
    }
    return cairn_fsync_dir(dir);
fail:
    unlink(tmp);
    return r;
}

static const struct bk_backend_ops local_ops = { local_save, local_load, local_stat, local_list,
                                                 local_remove, local_free, local_tmp_file, local_save_file };

static int local_open(const char *path, struct bk_backend **out, char *err, size_t errlen)
{
    struct local *l = calloc(1, sizeof(*l));
    if (!l || !(l->root = strdup(path))) {
        free(l);
        return -ENOMEM;
    }
    l->be.ops = &local_ops;
    snprintf(l->be.desc, sizeof(l->be.desc), "%s", path);
    /* the layout's directories (restic init makes them all, data/00..ff too) */
    char p[4200];
    int r = cairn_mkdir_p(path, 0700);
    for (int t = BK_KEY; !r && t < BK_NFTYPES; t++) {
        snprintf(p, sizeof(p), "%s/%s", path, bk_ftype_dir[t]);
        r = cairn_mkdir_p(p, 0700);
    }
    for (int i = 0; !r && i < 256; i++) {
        snprintf(p, sizeof(p), "%s/data/%02x", path, i);
        r = cairn_mkdir_p(p, 0700);
    }
    if (r) {
        snprintf(err, errlen, "repository %s: %s", path, cairn_strerror(r));
        local_free(&l->be);
        return r;
    }
    *out = &l->be;
    return 0;
}



int bk_backend_open(const struct bk_repo_conf *rc, struct bk_backend **out, char *err, size_t errlen)
{
    if (rc->is_s3)
        return bk_s3_open(&rc->s3, out, err, errlen);
    return local_open(rc->path, out, err, errlen);
}
