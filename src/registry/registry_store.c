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
#include <openssl/rand.h>
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
    "CREATE TABLE IF NOT EXISTS links(repo TEXT NOT NULL, digest TEXT NOT NULL,"
    " size INTEGER NOT NULL DEFAULT -1, touched INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(repo, digest)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS links_digest ON links(digest);"
    "CREATE TABLE IF NOT EXISTS manifests(repo TEXT NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,"
    " size INTEGER NOT NULL, artifact_type TEXT NOT NULL, subject TEXT, annotations TEXT,"
    " created INTEGER NOT NULL, PRIMARY KEY(repo, digest)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo, subject);"
    "CREATE TABLE IF NOT EXISTS tags(repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,"
    " PRIMARY KEY(repo, tag)) WITHOUT ROWID;"
    /* what each manifest names (config, layers, or an index's manifests): garbage
     * collection keeps every blob a manifest of its repository names */
    "CREATE TABLE IF NOT EXISTS refs(repo TEXT NOT NULL, manifest TEXT NOT NULL, digest TEXT NOT NULL,"
    " PRIMARY KEY(repo, manifest, digest)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS refs_digest ON refs(repo, digest);"
    /* with S3 storage: the object holding each blob (a key of its own per copy, so
     * that collection deleting an old copy can never delete a new one) */
    "CREATE TABLE IF NOT EXISTS stored(digest TEXT PRIMARY KEY, key TEXT NOT NULL, size INTEGER NOT NULL,"
    " created INTEGER NOT NULL) WITHOUT ROWID;";

static int exec1(struct reg_db *d, const char *sql, const char *a, const char *b, const char *c);

/* A database from before sizes, touch times and references: add them (sizes from
 * the files, references from the manifests' bytes). */
static int migrate(struct reg_db *d, const char *dir)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    int version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    if (version >= 1)
        return 0;
    if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    if (sqlite3_prepare_v2(d->db, "SELECT size FROM links LIMIT 0", -1, &s, NULL) == SQLITE_OK) {
        sqlite3_finalize(s);
    } else if (sqlite3_exec(d->db, "ALTER TABLE links ADD COLUMN size INTEGER NOT NULL DEFAULT -1;"
                                   "ALTER TABLE links ADD COLUMN touched INTEGER NOT NULL DEFAULT 0;",
                            NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
        return -EIO;
    }
    int r = 0;
    if (sqlite3_prepare_v2(d->db, "SELECT repo, digest FROM manifests", -1, &s, NULL) != SQLITE_OK)
        r = -EIO;
    while (!r && sqlite3_step(s) == SQLITE_ROW) {
        const char *repo = (const char *)sqlite3_column_text(s, 0), *dg = (const char *)sqlite3_column_text(s, 1);
        char path[800];
        reg_blob_path(dir, dg, path, sizeof(path));
        char *text = NULL;
        size_t len = 0;
        struct cfg_errors errs = { 0 };
        if (cfg_read_file(path, &text, &len, &errs) == 0) {
            struct reg_manifest m;
            struct buf refs = BUF_INIT;
            bool index;
            reg_manifest_parse(text, len, NULL, &m, &refs, &index);
            for (const char *x = refs.data; x && x < buf_head(&refs) + buf_used(&refs); x += strlen(x) + 1)
                r |= exec1(d, "INSERT OR IGNORE INTO refs(repo, manifest, digest) VALUES(?1, ?2, ?3)", repo, dg, x);
            reg_manifest_free(&m);
            buf_free(&refs);
        }
        cfg_errors_free(&errs);
        free(text);
    }
    sqlite3_finalize(s);
    if (!r && sqlite3_prepare_v2(d->db, "SELECT DISTINCT digest FROM links WHERE size < 0", -1, &s, NULL) == SQLITE_OK) {
        while (!r && sqlite3_step(s) == SQLITE_ROW) {
            const char *dg = (const char *)sqlite3_column_text(s, 0);
            char sz[32];
            snprintf(sz, sizeof(sz), "%lld", MAX(reg_blob_size(dir, dg), 0LL));
            r |= exec1(d, "UPDATE links SET size = CAST(?2 AS INTEGER) WHERE digest = ?1", dg, sz, NULL);
        }
        sqlite3_finalize(s);
    }
    if (!r && sqlite3_exec(d->db, "PRAGMA user_version = 1; COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    return -EIO;
}

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
        sqlite3_exec(d->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK || migrate(d, dir)) {
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

int reg_upload_create(const char *dir, char id[33], char *path, size_t cap)
{
    uint8_t rnd[16];
    RAND_bytes(rnd, sizeof(rnd));
    cairn_hex(rnd, sizeof(rnd), id);
    snprintf(path, cap, "%s/uploads/%s", dir, id);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
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
    if (b)
        sqlite3_bind_text(s, 2, b, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    return r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : -EIO;
}

int reg_link_has(struct reg_db *d, const char *repo, const char *digest)
{
    return exists1(d, "SELECT 1 FROM links WHERE repo = ?1 AND digest = ?2", repo, digest);
}

int reg_link_add(struct reg_db *d, const char *repo, const char *digest, long long size)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db,
                           "INSERT INTO links(repo, digest, size, touched) VALUES(?1, ?2, ?3, ?4) "
                           "ON CONFLICT(repo, digest) DO UPDATE SET touched = excluded.touched, "
                           "size = MAX(size, excluded.size)",
                           -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(s, 1, repo, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, digest, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, size);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)time(NULL));
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : r == SQLITE_FULL ? -ENOSPC : -EIO;
}

int reg_link_touch(struct reg_db *d, const char *repo, const char *digest, long long older_than_s)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db, "UPDATE links SET touched = ?3 WHERE repo = ?1 AND digest = ?2 AND touched < ?4",
                           -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    long long now = (long long)time(NULL);
    sqlite3_bind_text(s, 1, repo, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, digest, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, now);
    sqlite3_bind_int64(s, 4, now - older_than_s);
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : -EIO;
}

long long reg_usage(struct reg_db *d, const char *pattern)
{
    sqlite3_stmt *s;
    /* names hold no glob characters, so a pattern ("team/app", "team/" '*', '*') is a glob */
    if (sqlite3_prepare_v2(d->db,
                           "SELECT COALESCE(SUM(sz), 0) FROM (SELECT MAX(size) AS sz FROM links "
                           "WHERE repo GLOB ?1 GROUP BY digest)",
                           -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(s, 1, pattern, -1, SQLITE_STATIC);
    long long n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -EIO;
    sqlite3_finalize(s);
    return n;
}

int reg_linked_under(struct reg_db *d, const char *pattern, const char *digest)
{
    return exists1(d, "SELECT 1 FROM links WHERE digest = ?2 AND repo GLOB ?1", pattern, digest);
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

int reg_blob_verify(const char *upload_path, const char *digest, EVP_MD_CTX *hashed)
{
    int fd = open(upload_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    bool sha512 = strncmp(digest, "sha512:", 7) == 0;
    EVP_MD_CTX *md = hashed && !sha512 ? hashed : NULL;
    int r = 0;
    if (!md) {      /* not hashed as it arrived: read it back */
        md = EVP_MD_CTX_new();
        EVP_DigestInit_ex(md, sha512 ? EVP_sha512() : EVP_sha256(), NULL);
        char chunk[65536];
        ssize_t n;
        while ((n = read(fd, chunk, sizeof(chunk))) > 0)
            EVP_DigestUpdate(md, chunk, (size_t)n);
        r = n < 0 ? -errno : 0;
    }
    if (!r && fdatasync(fd))
        r = -errno;
    close(fd);
    uint8_t dg[64];
    unsigned dl = 0;
    EVP_DigestFinal_ex(md, dg, &dl);
    if (md != hashed)
        EVP_MD_CTX_free(md);
    if (r)
        return r;
    char hex[130];
    cairn_hex(dg, dl, hex);
    return strcmp(hex, digest + 7) != 0 ? -EBADMSG : 0;
}

int reg_blob_commit(struct reg_db *d, const char *dir, const char *repo, const char *upload_path,
                    const char *digest, EVP_MD_CTX *hashed)
{
    int r = reg_blob_verify(upload_path, digest, hashed);
    if (r)
        return r;
    char dst[800];
    reg_blob_path(dir, digest, dst, sizeof(dst));
    if ((r = mkdirs_for(dst)))
        return r;
    struct stat st;
    if (stat(upload_path, &st))
        return -errno;
    /* the rename and the link in one transaction: garbage collection removes a file
     * only inside one, when no link names it */
    if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    r = rename(upload_path, dst) ? -errno : 0;
    if (!r) {
        char parent[800];
        snprintf(parent, sizeof(parent), "%s", dst);
        *strrchr(parent, '/') = 0;
        r = fsync_path(parent, true);
    }
    if (!r)
        r = reg_link_add(d, repo, digest, (long long)st.st_size);
    if (!r && sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        r = -EIO;
    if (r)
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

void reg_manifest_free(struct reg_manifest *m)
{
    free(m->subject);
    free(m->annotations);
    m->subject = m->annotations = NULL;
}

int reg_manifest_put(struct reg_db *d, const char *dir, const char *repo, const char *tag,
                     const struct reg_manifest *m, const void *body, size_t len, const struct buf *refs,
                     bool index, bool check, const char **missing)
{
    *missing = NULL;
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
    /* everything it names is here (blobs of the repository, or its manifests), checked
     * in the transaction that stores it, so garbage collection cannot take one away
     * between the check and the commit */
    const char *end = refs->data ? buf_head(refs) + buf_used(refs) : NULL;
    for (const char *x = refs->data; check && x && x < end && !*missing; x += strlen(x) + 1)
        if (exists1(d, index ? "SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2"
                             : "SELECT 1 FROM links WHERE repo = ?1 AND digest = ?2",
                    repo, x) != 1)
            *missing = x;
    if (*missing) {
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
        return -ENOENT;
    }
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
    for (const char *x = refs->data; !r && x && x < end; x += strlen(x) + 1)
        r = exec1(d, "INSERT OR IGNORE INTO refs(repo, manifest, digest) VALUES(?1, ?2, ?3)", repo, m->digest, x);
    if (!r)
        r = reg_link_add(d, repo, m->digest, (long long)len);
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
    if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    int r = exec1(d, "DELETE FROM tags WHERE repo = ?1 AND digest = ?2", repo, digest, NULL);
    if (!r)
        r = exec1(d, "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2", repo, digest, NULL);
    if (!r)
        r = exec1(d, "DELETE FROM refs WHERE repo = ?1 AND manifest = ?2", repo, digest, NULL);
    if (!r)
        r = reg_link_del(d, repo, digest);
    if (!r && sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        r = -EIO;
    if (r)
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
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

/* ---- garbage collection ---- */

int reg_gc_links(struct reg_db *d, long long cutoff_s)
{
    sqlite3_stmt *s;
    /* a link no manifest of its repository names (nor is one), untouched since the cutoff */
    if (sqlite3_prepare_v2(d->db,
                           "DELETE FROM links WHERE touched < ?1 AND NOT EXISTS (SELECT 1 FROM refs r WHERE "
                           "r.repo = links.repo AND r.digest = links.digest) AND NOT EXISTS (SELECT 1 FROM "
                           "manifests m WHERE m.repo = links.repo AND m.digest = links.digest)",
                           -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_int64(s, 1, cutoff_s);
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? sqlite3_changes(d->db) : -EIO;
}

int reg_gc_remove_blob(struct reg_db *d, const char *path, const char *digest)
{
    if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    int linked = exists1(d, "SELECT 1 FROM links WHERE digest = ?1", digest, NULL);
    int r = linked ? 0 : unlink(path) ? -errno : 1;
    sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);
    return linked < 0 ? linked : r;
}

/* ---- S3 storage ---- */

int reg_stored_get(struct reg_db *d, const char *digest, char *key, size_t cap, long long *size)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db, "SELECT key, size FROM stored WHERE digest = ?1", -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(s, 1, digest, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        if (key)
            snprintf(key, cap, "%s", sqlite3_column_text(s, 0));
        if (size)
            *size = sqlite3_column_int64(s, 1);
    }
    sqlite3_finalize(s);
    return r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : -EIO;
}

int reg_stored_link(struct reg_db *d, const char *repo, const char *digest, const char *key, long long size)
{
    if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    if (!key) {     /* only a link to a stored copy, checked in the same transaction */
        long long have = 0;
        int r = reg_stored_get(d, digest, NULL, 0, &have);
        if (r == 1)
            r = reg_link_add(d, repo, digest, have);
        else if (r == 0)
            r = -ENOENT;
        if (r || sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
            return r ? r : -EIO;
        }
        return 0;
    }
    sqlite3_stmt *s;
    int r = sqlite3_prepare_v2(d->db, "INSERT OR IGNORE INTO stored(digest, key, size, created) VALUES(?1, ?2, ?3, ?4)",
                               -1, &s, NULL) == SQLITE_OK ? 0 : -EIO;
    int added = 0;
    if (!r) {
        sqlite3_bind_text(s, 1, digest, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, size);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)time(NULL));
        r = sqlite3_step(s) == SQLITE_DONE ? 0 : -EIO;
        added = sqlite3_changes(d->db);
        sqlite3_finalize(s);
    }
    if (!r)
        r = reg_link_add(d, repo, digest, size);
    if (!r && sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        r = -EIO;
    if (r)
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    return r ? r : added ? 0 : 1;
}

int reg_gc_stored(struct reg_db *d, long long cutoff_s, struct buf *keys, long long *bytes)
{
    if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_stmt *s;
    int n = 0, r = sqlite3_prepare_v2(d->db,
                                      "DELETE FROM stored WHERE created < ?1 AND NOT EXISTS (SELECT 1 FROM links l "
                                      "WHERE l.digest = stored.digest) RETURNING key, size",
                                      -1, &s, NULL) == SQLITE_OK ? 0 : -EIO;
    if (!r) {
        sqlite3_bind_int64(s, 1, cutoff_s);
        while ((r = sqlite3_step(s)) == SQLITE_ROW) {
            buf_puts(keys, (const char *)sqlite3_column_text(s, 0));
            buf_putc(keys, 0);
            *bytes += sqlite3_column_int64(s, 1);
            n++;
        }
        r = r == SQLITE_DONE ? 0 : -EIO;
        sqlite3_finalize(s);
    }
    if (!r && sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        r = -EIO;
    if (r)
        sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    return r ? r : n;
}
