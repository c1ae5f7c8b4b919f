/* edge_cache_disk.c - the disk tier of a cached route's store. */
#include "edge_cache_internal.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <brotli/encode.h>
#include <zlib.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the disk tier ----
 *
 * Every stored object is also written to a file in disk_dir (write to a temporary
 * name, then rename, so a crash leaves whole files or none), named by the hashes of
 * its key and Vary values. An index of the files (key, Vary values, tags, size) is
 * kept in memory and rebuilt from the files' headers at start, so the cache survives
 * a restart; a memory miss that the index knows reads the file back into memory.
 * The oldest files go when the tier is over its budget. Purges remove files too.
 */


static void dentry_free(struct dentry *d)
{
    free(d->key);
    free(d->vary);
    free(d->vary_vals);
    free(d->tags);
    free(d);
}

static void dfifo_unlink(struct edge_cache_store *cs, struct dentry *d)
{
    if (d->fprev)
        d->fprev->fnext = d->fnext;
    else
        cs->dfifo_head = d->fnext;
    if (d->fnext)
        d->fnext->fprev = d->fprev;
    else
        cs->dfifo_tail = d->fprev;
}

/* Removes a file and its index entry (lock held). */
static void disk_drop(struct edge_cache_store *cs, struct dentry *d)
{
    struct dentry **pp = &cs->dbuckets[d->h % BUCKETS];
    while (*pp && *pp != d)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = d->hnext;
    dfifo_unlink(cs, d);
    cs->disk_used -= d->size;
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", cs->disk_dir, d->name);
    unlink(path);
    dentry_free(d);
}

static void disk_index_add(struct edge_cache_store *cs, struct dentry *d)
{
    d->hnext = cs->dbuckets[d->h % BUCKETS];
    cs->dbuckets[d->h % BUCKETS] = d;
    d->fprev = NULL;
    d->fnext = cs->dfifo_head;
    if (cs->dfifo_head)
        cs->dfifo_head->fprev = d;
    else
        cs->dfifo_tail = d;
    cs->dfifo_head = d;
    cs->disk_used += d->size;
    while (cs->disk_used > cs->disk_budget && cs->dfifo_tail && cs->dfifo_tail != d)
        disk_drop(cs, cs->dfifo_tail);
}

void edge_cache__disk_index_free(struct edge_cache_store *cs)
{
    while (cs->dfifo_head) {
        struct dentry *d = cs->dfifo_head;
        cs->dfifo_head = d->fnext;
        dentry_free(d);
    }
    memset(cs->dbuckets, 0, sizeof(cs->dbuckets));
    cs->dfifo_tail = NULL;
    cs->disk_used = 0;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

#define SLEN(x) ((x) ? strlen(x) : 0)

/* Writes o's file and indexes it (lock held). */
void edge_cache__disk_store(struct edge_cache_store *cs, const struct edge_cache_obj *o)
{
    char name[48], path[4200], tmp[4300];
    uint64_t vh = o->vary_vals ? edge_cache__key_hash(o->vary_vals, strlen(o->vary_vals)) : 0;
    snprintf(name, sizeof(name), "%016llx-%016llx.obj", (unsigned long long)o->h, (unsigned long long)vh);
    snprintf(path, sizeof(path), "%s/%s", cs->disk_dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    char head[512];
    int hl = snprintf(head, sizeof(head), DISK_MAGIC " %d %lld %lld %lld %d %d %lld %lld %d %zu %zu %zu %zu %zu %zu %zu %zu\n",
                      o->status, (long long)o->response_time, (long long)o->initial_age,
                      (long long)o->lifetime, o->no_cache, o->must_revalidate, (long long)o->swr,
                      (long long)o->sie, o->compressible, o->keylen, SLEN(o->vary), SLEN(o->vary_vals),
                      o->hdrs_len, SLEN(o->etag), SLEN(o->last_modified), SLEN(o->tags), o->body_len);
    const char *parts[] = { o->key, o->vary, o->vary_vals, o->hdrs, o->etag, o->last_modified, o->tags, o->body };
    size_t lens[] = { o->keylen, SLEN(o->vary), SLEN(o->vary_vals), o->hdrs_len, SLEN(o->etag),
                      SLEN(o->last_modified), SLEN(o->tags), o->body_len };
    int bad = write_all(fd, head, (size_t)hl);
    for (size_t i = 0; i < ARRAY_SIZE(parts) && !bad; i++)
        if (lens[i])
            bad = write_all(fd, parts[i], lens[i]);
    close(fd);
    if (bad || rename(tmp, path) == -1) {
        unlink(tmp);
        return;
    }
    /* replace an index entry of the same name */
    for (struct dentry *d = cs->dbuckets[o->h % BUCKETS]; d; d = d->hnext)
        if (strcmp(d->name, name) == 0) {
            /* the file was just overwritten: forget the entry, not the file */
            struct dentry **pp = &cs->dbuckets[d->h % BUCKETS];
            while (*pp != d)
                pp = &(*pp)->hnext;
            *pp = d->hnext;
            dfifo_unlink(cs, d);
            cs->disk_used -= d->size;
            dentry_free(d);
            break;
        }
    struct dentry *d = calloc(1, sizeof(*d));
    if (!d)
        return;
    d->h = o->h;
    d->key = malloc(o->keylen + 1);
    if (d->key) {
        memcpy(d->key, o->key, o->keylen);
        d->key[o->keylen] = '\0';
    }
    d->keylen = o->keylen;
    d->vary = o->vary ? strdup(o->vary) : NULL;
    d->vary_vals = o->vary_vals ? strdup(o->vary_vals) : NULL;
    d->tags = o->tags ? strdup(o->tags) : NULL;
    d->size = (uint64_t)hl + o->keylen + o->hdrs_len + o->body_len + 256;
    snprintf(d->name, sizeof(d->name), "%s", name);
    if (!d->key) {
        dentry_free(d);
        return;
    }
    disk_index_add(cs, d);
}

struct disk_head {
    int status, no_cache, must_revalidate, compressible;
    long long response_time, initial_age, lifetime, swr, sie;
    size_t len[8];
};

static int read_head(FILE *f, struct disk_head *h)
{
    char magic[16];
    if (fscanf(f, "%15s %d %lld %lld %lld %d %d %lld %lld %d %zu %zu %zu %zu %zu %zu %zu %zu", magic,
               &h->status, &h->response_time, &h->initial_age, &h->lifetime, &h->no_cache,
               &h->must_revalidate, &h->swr, &h->sie, &h->compressible, &h->len[0], &h->len[1],
               &h->len[2], &h->len[3], &h->len[4], &h->len[5], &h->len[6], &h->len[7]) != 18 ||
        strcmp(magic, DISK_MAGIC) != 0 || fgetc(f) != '\n')
        return -1;
    for (int i = 0; i < 8; i++)
        if (h->len[i] > (64u << 20))
            return -1;
    return 0;
}

static char *read_part(FILE *f, size_t n, bool keep)
{
    if (!n)
        return NULL;
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    if (fread(p, 1, n, f) != n) {
        free(p);
        return NULL;
    }
    p[n] = '\0';
    if (!keep) {
        free(p);
        return NULL;
    }
    return p;
}

/* Builds the index from the files at start; damaged or foreign files are removed. */
int edge_cache_store_open_disk(struct edge_cache_store *cs, const char *dir, uint64_t budget)
{
    if (cairn_mkdir_p(dir, 0700))
        return -errno;
    cs->disk_dir = strdup(dir);
    cs->disk_budget = budget;
    if (!cs->disk_dir)
        return -ENOMEM;
    DIR *dd = opendir(dir);
    if (!dd)
        return -errno;
    struct dirent *de;
    size_t n = 0;
    while ((de = readdir(dd))) {
        size_t l = strlen(de->d_name);
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0) {
            unlink(path);   /* an interrupted write */
            continue;
        }
        if (l < 5 || strcmp(de->d_name + l - 4, ".obj") != 0 || l >= 48)
            continue;
        FILE *f = fopen(path, "rb");
        struct disk_head h;
        if (!f)
            continue;
        struct dentry *d = calloc(1, sizeof(*d));
        bool ok = d && read_head(f, &h) == 0;
        if (ok) {
            d->key = read_part(f, h.len[0], true);
            d->vary = read_part(f, h.len[1], true);
            d->vary_vals = read_part(f, h.len[2], true);
            read_part(f, h.len[3], false);
            read_part(f, h.len[4], false);
            read_part(f, h.len[5], false);
            d->tags = read_part(f, h.len[6], true);
            d->keylen = h.len[0];
            ok = d->key != NULL;
            struct stat sb;
            d->size = fstat(fileno(f), &sb) == 0 ? (uint64_t)sb.st_size : 0;
        }
        fclose(f);
        if (!ok) {
            if (d)
                dentry_free(d);
            unlink(path);
            continue;
        }
        d->h = edge_cache__key_hash(d->key, d->keylen);
        snprintf(d->name, sizeof(d->name), "%s", de->d_name);
        disk_index_add(cs, d);
        n++;
    }
    closedir(dd);
    log_info("cache disk tier", "cache", cs->label, "dir", dir, "objects", log_int((long long)n),
             "bytes", log_int((long long)cs->disk_used));
    return 0;
}

/* Reads a file back into a memory object (refs: the store's and the caller's). */
static struct edge_cache_obj *disk_read(struct edge_cache_store *cs, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", cs->disk_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct disk_head h;
    struct edge_cache_obj *o = calloc(1, sizeof(*o));
    if (!o || read_head(f, &h)) {
        free(o);
        fclose(f);
        return NULL;
    }
    o->refs = 2;
    o->cs = cs;
    o->status = h.status;
    o->response_time = (time_t)h.response_time;
    o->initial_age = h.initial_age;
    o->lifetime = h.lifetime;
    o->no_cache = h.no_cache;
    o->must_revalidate = h.must_revalidate;
    o->swr = h.swr;
    o->sie = h.sie;
    o->compressible = h.compressible;
    o->key = read_part(f, h.len[0], true);
    o->keylen = h.len[0];
    o->vary = read_part(f, h.len[1], true);
    o->vary_vals = read_part(f, h.len[2], true);
    o->hdrs = read_part(f, h.len[3], true);
    o->hdrs_len = h.len[3];
    o->etag = read_part(f, h.len[4], true);
    o->last_modified = read_part(f, h.len[5], true);
    o->tags = read_part(f, h.len[6], true);
    o->body = h.len[7] ? read_part(f, h.len[7], true) : calloc(1, 1);
    o->body_len = h.len[7];
    fclose(f);
    if (!o->key || !o->hdrs || !o->body || (h.len[1] && !o->vary) || (h.len[2] && !o->vary_vals)) {
        edge_cache__obj_free(o);
        return NULL;
    }
    o->h = edge_cache__key_hash(o->key, o->keylen);
    return o;
}

struct edge_cache_obj *edge_cache__disk_lookup(struct edge_cache_store *cs, const char *key, size_t keylen,
                                const struct httpd_req *r, uint64_t h)
{
    char name[48] = "";
    pthread_mutex_lock(&cs->lock);
    for (struct dentry *d = cs->dbuckets[h % BUCKETS]; d && !name[0]; d = d->hnext) {
        if (d->h != h || d->keylen != keylen || memcmp(d->key, key, keylen) != 0)
            continue;
        if (d->vary) {
            char *vals = edge_cache__vary_values(r, d->vary);
            bool match = vals && d->vary_vals && strcmp(vals, d->vary_vals) == 0;
            free(vals);
            if (!match)
                continue;
        }
        snprintf(name, sizeof(name), "%s", d->name);
    }
    pthread_mutex_unlock(&cs->lock);
    if (!name[0])
        return NULL;
    struct edge_cache_obj *o = disk_read(cs, name);
    if (!o)
        return NULL;
    edge_cache__insert_ex(cs, o, false);    /* back in memory; the file is already there */
    return o;
}

size_t edge_cache__disk_purge(struct edge_cache_store *cs, const char *key, size_t keylen, const char *host,
                         const char *prefix, const char *tag, bool all)
{
    size_t n = 0, hl = host ? strlen(host) : 0, pl = prefix ? strlen(prefix) : 0;
    for (struct dentry *d = cs->dfifo_head, *next; d; d = next) {
        next = d->fnext;
        const char *nl = memchr(d->key, '\n', d->keylen);
        const char *target = nl ? nl + 1 : d->key;
        bool hit = all || (key && d->keylen == keylen && memcmp(d->key, key, keylen) == 0) ||
                   (tag && d->tags && edge_cache__has_tag(d->tags, tag)) ||
                   (prefix && strncmp(target, prefix, pl) == 0 &&
                    (!host || (nl && (size_t)(nl - d->key) == hl && strncasecmp(d->key, host, hl) == 0)));
        if (hit) {
            disk_drop(cs, d);
            n++;
        }
    }
    return n;
}
