/* fileio.c - see fileio.h. */
#include "core/fileio.h"
#include "core/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cairn_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int cairn_pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    const char *c = p;
    while (n) {
        ssize_t w = pwrite(fd, c, n, (off_t)off);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
    return 0;
}

int cairn_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    int r = fsync(fd) == -1 ? -errno : 0;
    close(fd);
    return r;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int cairn_list_numbered(const char *dir, const char *suffix, uint32_t **out, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    struct dirent *de;
    size_t sl = strlen(suffix);
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l != 8 + sl || strcmp(de->d_name + 8, suffix) != 0)
            continue;
        char *e;
        unsigned long v = strtoul(de->d_name, &e, 10);
        if (e != de->d_name + 8)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint32_t *nv = realloc(*out, cap * sizeof(*nv));
            if (!nv) {
                closedir(d);
                free(*out);
                *out = NULL;
                return -ENOMEM;
            }
            *out = nv;
        }
        (*out)[(*n)++] = (uint32_t)v;
    }
    closedir(d);
    if (*n)
        qsort(*out, *n, sizeof(**out), cmp_u32);
    return 0;
}

int cairn_open_append(const char *path, int truncate, uint64_t *size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
    if (fd == -1)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) == -1) {
        int e = -errno;
        close(fd);
        return e;
    }
    *size = (uint64_t)sb.st_size;
    return fd;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT ? -errno : 0;
}

int cairn_remove_tree(const char *path)
{
    int r = nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
    if (r < 0 && errno == ENOENT)
        return 0;
    return r > 0 ? -EIO : r < 0 ? (errno ? -errno : r) : 0;
}

/* copy of one regular file, fsynced */
static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = -errno;
        close(in);
        return e;
    }
    char buf[1 << 16];
    int e = 0;
    for (;;) {
        ssize_t k = read(in, buf, sizeof(buf));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            e = k < 0 ? -errno : 0;
            break;
        }
        if ((e = cairn_write_all(out, buf, (size_t)k)))
            break;
    }
    if (!e && fsync(out) < 0)
        e = -errno;
    close(in);
    if (close(out) < 0 && !e)
        e = -errno;
    return e;
}

static int snap_dir(const char *src, const char *dst, const char *rel, cairn_immutable_fn immutable, void *arg)
{
    DIR *d = opendir(src);
    if (!d)
        return -errno;
    int e = 0;
    struct dirent *de;
    while (!e && (de = readdir(d))) {
        const char *n = de->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || (!*rel && !strcmp(n, "snapshots")))
            continue;
        char s[4096], t[4096], r[4096];
        struct stat sb;
        if (snprintf(s, sizeof(s), "%s/%s", src, n) >= (int)sizeof(s) ||
            snprintf(t, sizeof(t), "%s/%s", dst, n) >= (int)sizeof(t) ||
            snprintf(r, sizeof(r), "%s%s%s", rel, *rel ? "/" : "", n) >= (int)sizeof(r)) {
            e = -ENAMETOOLONG;
            break;
        }
        if (lstat(s, &sb) < 0) {
            if (errno == ENOENT)
                continue;                   /* removed meanwhile (a temporary file) */
            e = -errno;
            break;
        }
        if (S_ISDIR(sb.st_mode)) {
            if (mkdir(t, 0755) < 0 && errno != EEXIST)
                e = -errno;
            else
                e = snap_dir(s, t, r, immutable, arg);
        } else if (S_ISREG(sb.st_mode)) {
            if (immutable && immutable(r, arg)) {
                if (link(s, t) < 0)
                    e = errno == ENOENT ? 0 : -errno;
            } else {
                e = copy_file(s, t);
                if (e == -ENOENT)
                    e = 0;
            }
        }
    }
    closedir(d);
    return e;
}

int cairn_snapshot_tree(const char *src, const char *dst, cairn_immutable_fn immutable, void *arg)
{
    int e = cairn_mkdir_p(dst, 0755);
    return e ? e : snap_dir(src, dst, "", immutable, arg);
}

bool cairn_under_prefix(const char *rel, void *prefix)
{
    return !strncmp(rel, prefix, strlen(prefix));
}
