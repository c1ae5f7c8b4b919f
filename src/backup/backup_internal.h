/* backup_internal.h - the backup role's own types: restic's repository format
 * (crypto, chunker, backends, packs, index, snapshots, trees, locks), the engine
 * that backs up, restores, checks, forgets and prunes, and the role's config.
 *
 * Thread rules: a struct bk_repo is used by one thread at a time, except the
 * calls marked "any thread" (the blob store of a backup's worker threads, which
 * take repo->mu).
 */
#ifndef CAIRN_BACKUP_INTERNAL_H
#define CAIRN_BACKUP_INTERNAL_H

#include "core/buf.h"
#include "core/common.h"
#include "core/config.h"
#include "core/s3c.h"
#include "core/stack.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- crypto (bk_crypto.c) ---- */

typedef struct { uint8_t b[32]; } bk_id;
#define BK_OVERHEAD 32                  /* IV + MAC */

struct bk_key {
    uint8_t enc[32];
    uint8_t mac_k[16];
    uint8_t mac_r[16];
};
/* out gets IV || CIPHERTEXT || MAC (n + BK_OVERHEAD bytes) */
int bk_seal(const struct bk_key *k, const void *plain, size_t n, uint8_t *out);
/* out gets n - BK_OVERHEAD bytes; -EBADMSG when the MAC does not match */
int bk_open(const struct bk_key *k, const uint8_t *in, size_t n, uint8_t *out);
int bk_kdf(const char *pw, size_t pwlen, const uint8_t *salt, size_t saltlen, uint64_t N, uint32_t r,
           uint32_t p, struct bk_key *out);
void bk_key_mask(struct bk_key *k);
/* Poly1305-AES of msg under k's MAC key with the 16-byte nonce iv */
int bk_mac(const struct bk_key *k, const uint8_t iv[16], const uint8_t *msg, size_t n, uint8_t tag[16]);
void bk_sha256(const void *p, size_t n, bk_id *out);

static inline void bk_id_hex(const bk_id *id, char out[65])
{
    cairn_hex(id->b, 32, out);
}
int bk_id_parse(const char *s, size_t n, bk_id *out);
/* Go's base64 (standard alphabet, padded): encode to a malloc'd string; decode into
 * out (at most max bytes), returning the length, or -1 when malformed */
char *bk_b64_encode(const void *p, size_t n);
long bk_b64_decode(const char *s, uint8_t *out, size_t max);
static inline bool bk_id_eq(const bk_id *a, const bk_id *b)
{
    return memcmp(a->b, b->b, 32) == 0;
}

/* ---- chunker (bk_chunker.c) ---- */

#define BK_WINDOW 64
#define BK_MIN_CHUNK (512u << 10)
#define BK_MAX_CHUNK (8u << 20)
#define BK_SPLIT_MASK ((1u << 20) - 1)

struct bk_chunker {
    uint64_t pol;
    int shift;
    uint64_t out[256], mod[256], slide[256];
    uint64_t digest;
    size_t pre, count, hashed;
};
int bk_chunker_init(struct bk_chunker *c, uint64_t pol);
/* starts a new stream (a new file) */
void bk_chunker_restart(struct bk_chunker *c);
/* Feeds n bytes: returns the index after which the current chunk ends (1..n), or
 * 0 when it goes on past p[n-1]. After a cut, feed the rest of p again. The bytes
 * of the current chunk must lie contiguous in memory (p continues what earlier
 * calls of this chunk were given): the window is read back from them. */
size_t bk_chunker_next(struct bk_chunker *c, const uint8_t *p, size_t n);
bool bk_pol_irreducible(uint64_t pol);
uint64_t bk_pol_random(void);

/* ---- backends (bk_backend.c) ---- */

enum bk_ftype { BK_CONFIG, BK_KEY, BK_DATA, BK_INDEX, BK_SNAPSHOT, BK_LOCK, BK_NFTYPES };
/* each type's directory in restic's layout ("" for the config file) */
extern const char *const bk_ftype_dir[BK_NFTYPES];

struct bk_backend;
typedef int (*bk_list_cb)(void *arg, const char *name, uint64_t size);
struct bk_backend_ops {
    /* stores a whole file atomically (a reader sees all of it or nothing) */
    int (*save)(struct bk_backend *be, enum bk_ftype t, const char *name, const void *p, size_t n);
    /* reads len bytes at off (len 0: to the end) into out (appended) */
    int (*load)(struct bk_backend *be, enum bk_ftype t, const char *name, uint64_t off, uint64_t len,
                struct buf *out);
    int (*stat)(struct bk_backend *be, enum bk_ftype t, const char *name, uint64_t *size);
    int (*list)(struct bk_backend *be, enum bk_ftype t, bk_list_cb cb, void *arg);
    int (*remove)(struct bk_backend *be, enum bk_ftype t, const char *name);
    void (*free)(struct bk_backend *be);
    /* a temporary file for a pack being written: an fd open for writing, its path
     * in path (where save_file can take it from cheaply) */
    int (*tmp_file)(struct bk_backend *be, char *path, size_t n);
    /* stores the temporary file at path (size bytes, written and closed) as the
     * file name, atomically and durably; the temporary file is gone afterwards */
    int (*save_file)(struct bk_backend *be, enum bk_ftype t, const char *name, const char *path, uint64_t size);
};
struct bk_backend {
    const struct bk_backend_ops *ops;
    char desc[256];                     /* for messages: the path or s3:bucket/prefix */
};

struct bk_repo_conf {
    char *path;                         /* a local directory, or */
    struct s3c_conf s3;                 /* S3 when s3.bucket is set */
    bool is_s3;
};
int bk_backend_open(const struct bk_repo_conf *rc, struct bk_backend **out, char *err, size_t errlen);
int bk_s3_open(const struct s3c_conf *conf, struct bk_backend **out, char *err, size_t errlen);   /* bk_s3.c */

/* ---- the repository (bk_repo.c) ---- */

enum { BK_BLOB_DATA = 0, BK_BLOB_TREE = 1 };

struct bk_ientry {
    bk_id id;
    uint32_t pack;                      /* into repo->packs */
    uint32_t off, len, ulen;            /* ulen 0: not compressed */
    uint8_t type;
};

struct bk_pack {
    bk_id id;
    uint64_t size;
    bool pending;                       /* being filled: no id yet */
    bool indexed;                       /* in an index file of the repository */
};

/* A pack being written: its sealed blobs go straight into a temporary file of
 * the backend (hashed on the way), so memory holds only the header. */
struct bk_packer {
    int fd;                             /* the temporary file, when has_file */
    bool has_file;
    char tmp[4096];
    uint64_t size;                      /* bytes written so far */
    void *sha;                          /* EVP_MD_CTX over those bytes */
    struct buf header;                  /* plaintext header entries */
    struct buf seal;                    /* scratch: one sealed blob */
    struct buf z;                       /* scratch: one compressed blob */
    uint32_t pack;                      /* its slot in repo->packs */
    size_t nblobs;
    bool open;
    void *zc;                           /* its zstd context */
};

struct bk_stats {
    uint64_t files_new, files_changed, files_unmodified, dirs;
    uint64_t bytes_processed, bytes_added, bytes_stored;   /* plain, plain new, packed new */
    uint64_t blobs_added, packs_written, errors;
};

struct bk_repo {
    struct bk_backend *be;
    struct bk_key master;
    uint64_t pol;
    char id[65];
    int version;
    int zstd_level;
    /* the index: entries, an open-addressing table of entry numbers + 1 */
    struct bk_ientry *ents;
    size_t nents, entcap;
    uint32_t *slots;
    size_t nslots;
    struct bk_pack *packs;
    size_t npacks, packcap;
    uint32_t *pack_slots;               /* packs with an id, by id */
    size_t npack_slots;
    char **index_files;
    size_t nindex_files;
    size_t unindexed_from;              /* packs[from..] are in no index file yet */
    /* writing */
    pthread_mutex_t mu;                 /* index and packs, for the backup's workers */
    struct bk_packer tree_packer;
    uint64_t pack_target;
    struct bk_stats st;
    /* our lock file */
    char lock_name[65];
    bool lock_exclusive;
    double lock_time;
    double lock_verify_at;              /* a shared lock's second look is due */
};

/* Opens the repository with the password; -ENOENT: no config (not initialized),
 * -EACCES: no key opens with this password. err says what. */
int bk_repo_open(struct bk_repo *r, struct bk_backend *be, const char *pw, size_t pwlen, char *err,
                 size_t errlen);
/* Creates config and a key as `restic init` does (repository version 2). */
int bk_repo_init(struct bk_repo *r, struct bk_backend *be, const char *pw, size_t pwlen, char *err,
                 size_t errlen);
void bk_repo_close(struct bk_repo *r);  /* frees; the backend too */

/* Unpacked files (index, snapshots, locks): zstd-compressed JSON, encrypted; the
 * name is the SHA-256 of the stored bytes. */
int bk_save_unpacked(struct bk_repo *r, enum bk_ftype t, const void *json, size_t n, bk_id *id);
int bk_load_unpacked(struct bk_repo *r, enum bk_ftype t, const char *name, struct buf *out, char *err,
                     size_t errlen);

/* The index: loaded from every index file (bk_index_load), looked up by blob. */
int bk_index_load(struct bk_repo *r, char *err, size_t errlen);
/* Adds one index file's JSON (name for messages) to the in-memory index. */
int bk_index_parse(struct bk_repo *r, const char *json, size_t n, const char *name, char *err, size_t errlen);
/* the 64-hex names of one file type (allocated, each and the array) */
int bk_list_names(struct bk_repo *r, enum bk_ftype t, char ***out, size_t *n);
const struct bk_ientry *bk_index_find(struct bk_repo *r, const bk_id *id, int type);
long bk_pack_find(struct bk_repo *r, const bk_id *id);     /* slot, or -1 */
/* index entry numbers sorted by pack and offset; a pack's are order[first[p], first[p+1]) */
int bk_entries_by_pack(struct bk_repo *r, uint32_t **order, size_t **first);
/* Adds a blob (any thread): -EEXIST when the index has it already. Compresses
 * (data and trees when it pays), encrypts and appends it to pk, which is written
 * as a pack once full. */
int bk_blob_save(struct bk_repo *r, struct bk_packer *pk, int type, const bk_id *id, const void *p, size_t n);
/* The same for a blob in a buffer of the caller's with BK_HEADROOM bytes free
 * before p and after p + n: it is sealed in place (p's bytes are lost). */
#define BK_HEADROOM 16
int bk_blob_save_inplace(struct bk_repo *r, struct bk_packer *pk, int type, const bk_id *id, uint8_t *p, size_t n);
/* Writes pk's pending pack (if any) */
int bk_packer_flush(struct bk_repo *r, struct bk_packer *pk);
void bk_packer_free(struct bk_packer *pk);
/* Writes an index file for the packs written since the last one. */
int bk_index_write_pending(struct bk_repo *r);
/* prune's tools: empty the in-memory index, put packs and blobs back, append a
 * blob as sealed bytes (a repack copies blobs without re-encrypting them) */
void bk_index_reset(struct bk_repo *r);
long bk_pack_put(struct bk_repo *r, const bk_id *id, uint64_t size);
int bk_index_put(struct bk_repo *r, uint32_t pack, const struct bk_ientry *e);
int bk_packer_add_raw(struct bk_repo *r, struct bk_packer *pk, const struct bk_ientry *e, const void *sealed);
/* Reads one blob into out (replaced): decrypts, decompresses, checks its hash. */
int bk_blob_load(struct bk_repo *r, const struct bk_ientry *e, struct buf *out, char *err, size_t errlen);
/* The same with a scratch buffer of the caller's for the sealed bytes (kept
 * between calls: no allocation per blob); out and scratch may trade storage. */
int bk_blob_load2(struct bk_repo *r, const struct bk_ientry *e, struct buf *out, struct buf *scratch, char *err,
                  size_t errlen);
/* Parses a pack's header (the last bytes of the pack: hdr of hlen bytes decrypted). */
struct bk_pack_blob {
    bk_id id;
    uint8_t type;
    uint32_t off, len, ulen;
};
int bk_pack_header_parse(const uint8_t *p, size_t n, struct bk_pack_blob **out, size_t *count);
/* Reads and decodes a pack's header from the backend. */
int bk_pack_header_read(struct bk_repo *r, const char *name, uint64_t size, struct bk_pack_blob **out,
                        size_t *count, char *err, size_t errlen);

/* Every pack file on the backend: its id and size. */
struct bk_packlist {
    bk_id *ids;
    uint64_t *sizes;
    size_t n, cap;
};
int bk_list_packs(struct bk_repo *r, struct bk_packlist *out);
void bk_packlist_free(struct bk_packlist *l);
/* Packs on the backend that no index names (left by an interrupted backup):
 * their headers go into the in-memory index, unindexed, so a backup reuses them
 * and its index file names them. */
int bk_adopt_orphans(struct bk_repo *r, size_t *adopted);
/* Locks (restic's): -EBUSY when a conflicting lock is held (err names it). */
int bk_lock(struct bk_repo *r, bool exclusive, char *err, size_t errlen);
/* The second look a shared lock defers: before an index or snapshot names what
 * was written under it. -EBUSY (lock dropped) when an exclusive one appeared. */
int bk_lock_verify(struct bk_repo *r, char *err, size_t errlen);
void bk_lock_refresh(struct bk_repo *r);
void bk_unlock(struct bk_repo *r);

/* ---- snapshots and trees (bk_snap.c) ---- */

struct bk_snapshot {
    char name[65];                      /* storage id */
    bk_id tree;
    int64_t time_ns;
    char *json;                         /* the document as stored */
    char *hostname, *username;
    char **paths, **tags;
    size_t npaths, ntags;
    bool has_parent;
    bk_id parent;
};
int bk_snapshots_load(struct bk_repo *r, struct bk_snapshot **out, size_t *n, char *err, size_t errlen);
void bk_snapshots_free(struct bk_snapshot *s, size_t n);
/* Finds a snapshot by id prefix or "latest"; NULL when none or ambiguous (err says). */
const struct bk_snapshot *bk_snapshot_find(const struct bk_snapshot *s, size_t n, const char *want,
                                           char *err, size_t errlen);
int bk_snapshot_parse(const char *json, size_t n, struct bk_snapshot *out);
bool bk_snapshot_has_tag(const struct bk_snapshot *s, const char *tag);
/* Go's time.Time JSON form: RFC 3339 with nanoseconds (trailing zeros cut), local offset */
void bk_time_format(int64_t sec, long nsec, char out[48]);

/* A decoded tree node */
enum bk_ntype { BK_N_FILE, BK_N_DIR, BK_N_SYMLINK, BK_N_DEV, BK_N_CHARDEV, BK_N_FIFO, BK_N_SOCKET, BK_N_OTHER };
struct bk_xattr {
    char *name;
    uint8_t *value;
    size_t len;
};
struct bk_node {
    char *name;
    enum bk_ntype type;
    uint32_t mode;                      /* Go FileMode */
    int64_t mtime_ns, atime_ns, ctime_ns;
    uint32_t uid, gid;
    char *user, *group;
    uint64_t inode, device_id, size, links, rdev;
    char *linktarget;
    bk_id *content;
    size_t ncontent;
    bool has_subtree;
    bk_id subtree;
    struct bk_xattr *xattrs;
    size_t nxattrs;
};
struct bk_tree {
    struct bk_node *nodes;
    size_t n;
};
int bk_tree_parse(const char *json, size_t n, struct bk_tree *out, char *err, size_t errlen);
void bk_tree_free(struct bk_tree *t);
void bk_node_free(struct bk_node *n);
int bk_tree_encode(const struct bk_tree *t, struct buf *out);
int bk_tree_load(struct bk_repo *r, const bk_id *id, struct bk_tree *out, char *err, size_t errlen);

/* Go FileMode bits */
#define GO_MODE_DIR (1u << 31)
#define GO_MODE_SYMLINK (1u << 27)
#define GO_MODE_DEVICE (1u << 26)
#define GO_MODE_PIPE (1u << 25)
#define GO_MODE_SOCKET (1u << 24)
#define GO_MODE_SETUID (1u << 23)
#define GO_MODE_SETGID (1u << 22)
#define GO_MODE_CHARDEV (1u << 21)
#define GO_MODE_STICKY (1u << 20)
#define GO_MODE_IRREGULAR (1u << 19)

/* ---- the operations (bk_archive.c, bk_restore.c, bk_check.c, bk_forget.c) ---- */

struct bk_progress {
    bool tty;                           /* redraw a status line on stderr */
    double started, last;
};

struct bk_backup_opts {
    char **paths;
    size_t npaths;
    char **excludes;
    size_t nexcludes;
    char **tags;
    size_t ntags;
    const char *hostname;               /* NULL: this host's */
    int threads;                        /* 0: the CPUs */
    bool quiet;
    const int *cancel;                  /* nonzero (atomic): stop with -ECANCELED */
};
/* "1.5 MiB": progress lines and summaries */
void bk_fmt_bytes(double b, char *out, size_t n);
struct bk_backup_result {
    char snapshot[65];
    struct bk_stats st;
    double seconds;
};
int bk_backup(struct bk_repo *r, const struct bk_backup_opts *o, struct bk_backup_result *res, char *err,
              size_t errlen);

struct bk_restore_opts {
    const char *target;
    bool quiet;
    bool verify;
};
struct bk_restore_result {
    uint64_t files, dirs, bytes, errors;
    double seconds;
};
int bk_restore(struct bk_repo *r, const struct bk_snapshot *sn, const struct bk_restore_opts *o,
               struct bk_restore_result *res, char *err, size_t errlen);

/* check: every problem is printed to out; returns the count of errors */
int bk_check(struct bk_repo *r, bool read_data, FILE *out);

struct bk_keep {
    int last, hourly, daily, weekly, monthly, yearly;
    uint64_t within_ms;
    char **tags;
    size_t ntags;
};
bool bk_keep_empty(const struct bk_keep *k);
/* Marks which of the snapshots (sorted by time, newest first) the policy keeps. */
void bk_keep_apply(const struct bk_keep *k, const struct bk_snapshot *s, size_t n, bool *keep);
/* forget (removes the snapshots the policy does not keep among those matching
 * tags/host/paths group) and, when prune, prune. Prints what it does to out. */
int bk_forget(struct bk_repo *r, const struct bk_keep *k, const char *const *group_tags, size_t ngroup,
              bool prune, FILE *out, char *err, size_t errlen);
int bk_prune(struct bk_repo *r, FILE *out, char *err, size_t errlen);

#endif
