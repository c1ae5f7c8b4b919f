/* registry_store.c - where images live.
 *
 * Blobs (layers, configs, and manifests themselves) are files named by digest,
 * <dir>/blobs/<alg>/<2 hex>/<hex>: an upload's file is hashed, fsynced and renamed
 * into place only when its bytes match the digest the client names, so a blob file
 * is always whole and right. SQLite (<dir>/meta.db) keeps which blobs each
 * repository links to, its manifests (media type, size, subject, artifact type)
 * and its tags.
 */
#include "registry_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct reg_db {
    sqlite3 *db;
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS links(repo TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY(repo, digest))"
    " WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS manifests(repo TEXT NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,"
    " size INTEGER NOT NULL, artifact_type TEXT NOT NULL, subject TEXT, annotations TEXT,"
    " created INTEGER NOT NULL, PRIMARY KEY(repo, digest)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo, subject);"
    "CREATE TABLE IF NOT EXISTS tags(repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,"
    " PRIMARY KEY(repo, tag)) WITHOUT ROWID;";

struct reg_db *reg_db_open(const char *dir, char *err, size_t errlen)
{
    struct reg_db *d = calloc(1, sizeof(*d));
    char path[600];
    snprintf(path, sizeof(path), "%s/meta.db", dir);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK ||
        (sqlite3_busy_timeout(d->db, 10000), sqlite3_exec(d->db, schema, NULL, NULL, NULL)) != SQLITE_OK ||
        sqlite3_exec(d->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, d->db ? sqlite3_errmsg(d->db) : "cannot open");
        reg_db_close(d);
        return NULL;
    }
    return d;
}

void reg_db_close(struct reg_db *d)
{
    if (!d)
        return;
    sqlite3_close(d->db);
    free(d);
}

bool reg_digest_ok(const char *d)
{
    size_t want = strncmp(d, "sha256:", 7) == 0 ? 64 : strncmp(d, "sha512:", 7) == 0 ? 128 : 0;
    if (!want || strlen(d + 7) != want)
        return false;
    for (const char *p = d + 7; *p; p++)
        if (!isxdigit((unsigned char)*p) || isupper((unsigned char)*p))
            return false;
    return true;
}

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* component(/component)*, each [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* (the spec's grammar) */
bool reg_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (!n || n > REG_MAX_NAME)
        return false;
    const char *p = name;
    for (;;) {
        if (!lower_alnum(*p))
            return false;
        while (lower_alnum(*p))
            p++;
        while (*p == '.' || *p == '_' || *p == '-') {
            if (*p == '.')
                p++;
            else if (*p == '_')
                p += p[1] == '_' ? 2 : 1;
            else
                while (*p == '-')
                    p++;
            if (!lower_alnum(*p))
                return false;
            while (lower_alnum(*p))
                p++;
        }
        if (!*p)
            return true;
        if (*p++ != '/')
            return false;
    }
}

bool reg_tag_ok(const char *t)
{
    size_t n = strlen(t);
    if (!n || n > REG_MAX_TAG || !(isalnum((unsigned char)t[0]) || t[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-'))
            return false;
    return true;
}

void reg_blob_path(const char *dir, const char *digest, char *out, size_t cap)
{
    snprintf(out, cap, "%s/blobs/%.6s/%.2s/%s", dir, digest, digest + 7, digest + 7);
}

long long reg_blob_size(const char *dir, const char *digest)
{
    char p[800];
    struct stat st;
    reg_blob_path(dir, digest, p, sizeof(p));
    return stat(p, &st) == 0 ? (long long)st.st_size : -ENOENT;
}

static int exec1(struct reg_db *d, const char *sql, const char *a, const char *b, const char *c)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db, sql, -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    const char *args[] = { a, b, c };
    for (int i = 0; i < 3; i++)
        if (args[i])
            sqlite3_bind_text(s, i + 1, args[i], -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    return r == SQLITE_DONE || r == SQLITE_ROW ? 0 : r == SQLITE_FULL ? -ENOSPC : -EIO;
}

static int exists1(struct reg_db *d, const char *sql, const char *a, const char *b)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db, sql, -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(s, 1, a, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, b, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    return r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : -EIO;
}

int reg_link_has(struct reg_db *d, const char *repo, const char *digest)
{
    return exists1(d, "SELECT 1 FROM links WHERE repo = ?1 AND digest = ?2", repo, digest);
}

int reg_link_add(struct reg_db *d, const char *repo, const char *digest)
{
    return exec1(d, "INSERT OR IGNORE INTO links(repo, digest) VALUES(?1, ?2)", repo, digest, NULL);
}

int reg_link_del(struct reg_db *d, const char *repo, const char *digest)
{
    return exec1(d, "DELETE FROM links WHERE repo = ?1 AND digest = ?2", repo, digest, NULL);
}

static int mkdirs_for(const char *file)
{
    char d[800];
    snprintf(d, sizeof(d), "%s", file);
    char *sl = strrchr(d, '/');
    if (sl)
        *sl = 0;
    return cairn_mkdir_p(d, 0755);
}

static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) ? -errno : 0;
    close(fd);
    return r;
}

int reg_blob_commit(struct reg_db *d, const char *dir, const char *repo, const char *upload_path,
                    const char *digest)
{
    int fd = open(upload_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool sha512 = strncmp(digest, "sha512:", 7) == 0;
    EVP_DigestInit_ex(md, sha512 ? EVP_sha512() : EVP_sha256(), NULL);
    char chunk[65536];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        EVP_DigestUpdate(md, chunk, (size_t)n);
    int r = n < 0 ? -errno : 0;
    if (!r && fdatasync(fd))
        r = -errno;
    close(fd);
    uint8_t dg[64];
    unsigned dl = 0;
    EVP_DigestFinal_ex(md, dg, &dl);
    EVP_MD_CTX_free(md);
    if (r)
        return r;
    char hex[130];
    for (unsigned i = 0; i < dl; i++)
        sprintf(hex + 2 * i, "%02x", dg[i]);
    if (strcmp(hex, digest + 7) != 0)
        return -EBADMSG;
    char dst[800];
    reg_blob_path(dir, digest, dst, sizeof(dst));
    if ((r = mkdirs_for(dst)))
        return r;
    if (rename(upload_path, dst))
        return -errno;
    char parent[800];
    snprintf(parent, sizeof(parent), "%s", dst);
    *strrchr(parent, '/') = 0;
    if ((r = fsync_path(parent, true)))
        return r;
    return reg_link_add(d, repo, digest);
}

void reg_manifest_free(struct reg_manifest *m)
{
    free(m->subject);
    free(m->annotations);
    m->subject = m->annotations = NULL;
}

int reg_manifest_put(struct reg_db *d, const char *dir, const char *repo, const char *tag,
                     const struct reg_manifest *m, const void *body, size_t len)
{
    char path[800], tmp[820];
    reg_blob_path(dir, m->digest, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)gettid());
    int r = mkdirs_for(path);
    if (r)
        return r;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    bool ok = write(fd, body, len) == (ssize_t)len && fdatasync(fd) == 0;
    r = ok ? 0 : errno ? -errno : -EIO;
    close(fd);
    if (!r && rename(tmp, path))
        r = -errno;
    if (r) {
        unlink(tmp);
        return r;
    }
    char parent[800];
    snprintf(parent, sizeof(parent), "%s", path);
    *strrchr(parent, '/') = 0;
    if ((r = fsync_path(parent, true)))
        return r;
    sqlite3_stmt *s;
    if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    r = sqlite3_prepare_v2(d->db,
                           "INSERT OR REPLACE INTO manifests(repo, digest, media_type, size, artifact_type, "
                           "subject, annotations, created) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                           -1, &s, NULL) == SQLITE_OK ? 0 : -EIO;
    if (!r) {
        sqlite3_bind_text(s, 1, repo, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, m->digest, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, m->media_type, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, m->size);
        sqlite3_bind_text(s, 5, m->artifact_type, -1, SQLITE_STATIC);
        if (m->subject)
            sqlite3_bind_text(s, 6, m->subject, -1, SQLITE_STATIC);
        if (m->annotations)
            sqlite3_bind_text(s, 7, m->annotations, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 8, (sqlite3_int64)time(NULL));
        r = sqlite3_step(s) == SQLITE_DONE ? 0 : -EIO;
        sqlite3_finalize(s);
    }
    if (!r)
        r = reg_link_add(d, repo, m->digest);
    if (!r && tag)
        r = exec1(d, "INSERT OR REPLACE INTO tags(repo, tag, digest) VALUES(?1, ?2, ?3)", repo, tag, m->digest);
    if (!r && sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        r = -EIO;
    if (r)
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

int reg_manifest_get(struct reg_db *d, const char *repo, const char *ref, struct reg_manifest *m)
{
    memset(m, 0, sizeof(*m));
    sqlite3_stmt *s;
    bool by_digest = strchr(ref, ':') != NULL;
    const char *sql = by_digest
        ? "SELECT digest, media_type, size, artifact_type, subject, annotations FROM manifests "
          "WHERE repo = ?1 AND digest = ?2"
        : "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations FROM tags t "
          "JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest WHERE t.repo = ?1 AND t.tag = ?2";
    if (sqlite3_prepare_v2(d->db, sql, -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(s, 1, repo, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, ref, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        snprintf(m->digest, sizeof(m->digest), "%s", sqlite3_column_text(s, 0));
        snprintf(m->media_type, sizeof(m->media_type), "%s", sqlite3_column_text(s, 1));
        m->size = sqlite3_column_int64(s, 2);
        snprintf(m->artifact_type, sizeof(m->artifact_type), "%s", sqlite3_column_text(s, 3));
        if (sqlite3_column_text(s, 4))
            m->subject = strdup((const char *)sqlite3_column_text(s, 4));
        if (sqlite3_column_text(s, 5))
            m->annotations = strdup((const char *)sqlite3_column_text(s, 5));
    }
    sqlite3_finalize(s);
    return r == SQLITE_ROW ? 0 : r == SQLITE_DONE ? -ENOENT : -EIO;
}

int reg_manifest_del(struct reg_db *d, const char *repo, const char *digest)
{
    if (exists1(d, "SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2", repo, digest) != 1)
        return -ENOENT;
    int r = exec1(d, "DELETE FROM tags WHERE repo = ?1 AND digest = ?2", repo, digest, NULL);
    if (!r)
        r = exec1(d, "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2", repo, digest, NULL);
    if (!r)
        r = reg_link_del(d, repo, digest);
    return r;
}

int reg_tag_del(struct reg_db *d, const char *repo, const char *tag)
{
    if (exists1(d, "SELECT 1 FROM tags WHERE repo = ?1 AND tag = ?2", repo, tag) != 1)
        return -ENOENT;
    return exec1(d, "DELETE FROM tags WHERE repo = ?1 AND tag = ?2", repo, tag, NULL);
}

/* Names from a query, as a JSON array's items, at most n (n < 0: all). */
static int list_json(struct reg_db *d, const char *sql, const char *a, const char *last, long n,
                     struct buf *json, char *end, size_t endcap)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db, sql, -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    int i = 1;
    if (a)
        sqlite3_bind_text(s, i++, a, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, i, last ? last : "", -1, SQLITE_STATIC);
    long count = 0;
    int r;
    char prev[REG_MAX_NAME + 1] = "";
    end[0] = 0;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (n >= 0 && count == n) {
            snprintf(end, endcap, "%s", prev);     /* more follow: the page's last name */
            break;
        }
        const char *name = (const char *)sqlite3_column_text(s, 0);
        if (count++)
            buf_putc(json, ',');
        buf_json_str(json, name);
        snprintf(prev, sizeof(prev), "%s", name);
    }
    sqlite3_finalize(s);
    return r == SQLITE_ROW || r == SQLITE_DONE ? 0 : -EIO;
}

int reg_tags(struct reg_db *d, const char *repo, const char *last, long n, struct buf *json, char *end,
             size_t endcap)
{
    return list_json(d, "SELECT tag FROM tags WHERE repo = ?1 AND tag > ?2 ORDER BY tag", repo, last, n, json,
                     end, endcap);
}

int reg_repos(struct reg_db *d, const char *last, long n, struct buf *json, char *end, size_t endcap)
{
    return list_json(d, "SELECT DISTINCT repo FROM manifests WHERE repo > ?1 ORDER BY repo", NULL, last, n,
                     json, end, endcap);
}

int reg_referrers(struct reg_db *d, const char *repo, const char *digest, const char *artifact_type,
                  struct buf *json)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db,
                           "SELECT digest, media_type, size, artifact_type, annotations FROM manifests "
                           "WHERE repo = ?1 AND subject = ?2 ORDER BY created, digest",
                           -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(s, 1, repo, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, digest, -1, SQLITE_STATIC);
    int r, n = 0;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        const char *at = (const char *)sqlite3_column_text(s, 3);
        if (artifact_type && strcmp(at, artifact_type) != 0)
            continue;
        if (n++)
            buf_putc(json, ',');
        buf_puts(json, "{\"mediaType\":");
        buf_json_str(json, (const char *)sqlite3_column_text(s, 1));
        buf_puts(json, ",\"digest\":");
        buf_json_str(json, (const char *)sqlite3_column_text(s, 0));
        buf_printf(json, ",\"size\":%lld", (long long)sqlite3_column_int64(s, 2));
        if (at[0]) {
            buf_puts(json, ",\"artifactType\":");
            buf_json_str(json, at);
        }
        if (sqlite3_column_text(s, 4))
            buf_printf(json, ",\"annotations\":%s", sqlite3_column_text(s, 4));
        buf_putc(json, '}');
    }
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : -EIO;
}
