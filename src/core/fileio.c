/* fileio.c - see fileio.h. */
#include "core/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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
