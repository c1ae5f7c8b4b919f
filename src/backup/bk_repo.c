/* bk_repo.c - a restic repository (format version 2): opening with a password,
 * creating one as `restic init` does, unpacked files, the index, packs and locks.
 *
 * The index lives in memory as one array of 48-byte entries and an open-addressing
 * table of entry numbers keyed by the blob id's first bytes (ids are SHA-256, so
 * they are their own hash); packs are a second array with a table of their own.
 * Blobs a backup adds go into the index the moment they are claimed, so two
 * workers never store one blob twice; their pack gets its id once it is written.
 */
#include "backup_internal.h"
#include "core/log.h"
#include "core/fileio.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <openssl/evp.h>

#define KDF_N 32768
#define KDF_R 8
#define KDF_P 1
#define MAX_KEYS 20                     /* keys tried with a password, as restic */
#define MAX_UNPACKED (256u << 20)       /* largest index/snapshot/lock file read */
#define MAX_HEADER (16u << 20)
#define LOCK_STALE_S 1800.0
#define LOCK_REFRESH_S 300.0
#define INDEX_MAX_BLOBS 50000

/* ---- small helpers ---- */

int bk_id_parse(const char *s, size_t n, bk_id *out)
{
    if (n != 64)
        return -EINVAL;
    for (size_t i = 0; i < 32; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char c = s[2 * i + (size_t)j];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                return -EINVAL;
            v = v * 16 + d;
        }
        out->b[i] = (uint8_t)v;
    }
    return 0;
}

char *bk_b64_encode(const void *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

long bk_b64_decode(const char *s, uint8_t *out, size_t max)
{
    size_t n = strlen(s);
    if (n % 4 || n / 4 * 3 > max + 2)
        return -1;
    if (n == 0)
        return 0;
    /* straight into out when the padded length fits, else through a copy */
    uint8_t *tmp = max >= n / 4 * 3 ? out : malloc(n / 4 * 3 + 1);
    if (!tmp)
        return -1;
    int k = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n);
    if (k >= 0 && s[n - 1] == '=')
        k--;
    if (k >= 0 && s[n - 2] == '=')
        k--;
    if (k >= 0 && (size_t)k > max)
        k = -1;
    if (tmp != out) {
        if (k > 0)
            memcpy(out, tmp, (size_t)k);
        free(tmp);
    }
    return k;
}

static void now_rfc3339(char out[48])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    bk_time_format(ts.tv_sec, ts.tv_nsec, out);
}

static void host_user(char host[256], char user[64])
{
    if (gethostname(host, 255) < 0)
        strcpy(host, "localhost");
    host[255] = 0;
    const char *u = getenv("USER");
    snprintf(user, 64, "%s", u && *u ? u : geteuid() == 0 ? "root" : "");
}

/* ---- unpacked files ---- */

static int seal_file(struct bk_repo *r, const void *plain, size_t n, struct buf *out)
{
    buf_reset(out);
    if (buf_reserve(out, n + BK_OVERHEAD))
        return -ENOMEM;
    int e = bk_seal(&r->master, plain, n, (uint8_t *)buf_tail(out));
    if (!e)
        buf_commit(out, n + BK_OVERHEAD);
    return e;
}

int bk_save_unpacked(struct bk_repo *r, enum bk_ftype t, const void *json, size_t n, bk_id *id)
{
    struct buf plain = BUF_INIT, sealed = BUF_INIT;
    size_t bound = ZSTD_compressBound(n);
    int e = -ENOMEM;
    if (buf_reserve(&plain, bound + 1))
        goto out;
    buf_putc(&plain, 2);
    size_t z = ZSTD_compress(buf_tail(&plain), bound, json, n, r->zstd_level);
    if (ZSTD_isError(z)) {
        e = -EIO;
        goto out;
    }
    buf_commit(&plain, z);
    if ((e = seal_file(r, buf_head(&plain), buf_used(&plain), &sealed)))
        goto out;
    bk_sha256(buf_head(&sealed), buf_used(&sealed), id);
    char name[65];
    bk_id_hex(id, name);
    e = r->be->ops->save(r->be, t, name, buf_head(&sealed), buf_used(&sealed));
out:
    buf_free(&plain);
    buf_free(&sealed);
    return e;
}

/* decompresses a zstd frame of at most max bytes into out (appended) */
static int unzstd(const void *p, size_t n, size_t max, struct buf *out)
{
    unsigned long long size = ZSTD_getFrameContentSize(p, n);
    if (size == ZSTD_CONTENTSIZE_ERROR)
        return -EBADMSG;
    if (size != ZSTD_CONTENTSIZE_UNKNOWN) {
        if (size > max)
            return -EFBIG;
        if (buf_reserve(out, (size_t)size + 1))
            return -ENOMEM;
        size_t k = ZSTD_decompress(buf_tail(out), (size_t)size, p, n);
        if (ZSTD_isError(k) || k != size)
            return -EBADMSG;
        buf_commit(out, k);
        return 0;
    }
    ZSTD_DStream *ds = ZSTD_createDStream();
    if (!ds)
        return -ENOMEM;
    ZSTD_inBuffer in = { p, n, 0 };
    int e = 0;
    size_t start = out->len;
    for (;;) {
        if (buf_reserve(out, 1 << 16)) {
            e = -ENOMEM;
            break;
        }
        ZSTD_outBuffer ob = { buf_tail(out), buf_room(out), 0 };
        size_t k = ZSTD_decompressStream(ds, &ob, &in);
        if (ZSTD_isError(k)) {
            e = -EBADMSG;
            break;
        }
        buf_commit(out, ob.pos);
        if (out->len - start > max) {
            e = -EFBIG;
            break;
        }
        if (k == 0)
            break;
        if (in.pos == in.size && ob.pos == 0) {
            e = -EBADMSG;
            break;
        }
    }
    ZSTD_freeDStream(ds);
    return e;
}

/* Decodes an unpacked file's plaintext (version byte + zstd, or plain JSON). */
static int unpacked_plain(const uint8_t *p, size_t n, struct buf *out)
{
    buf_reset(out);
    if (n && (p[0] == '{' || p[0] == '['))
        return buf_append(out, p, n) ? -ENOMEM : 0;
    if (n && p[0] == 2)
        return unzstd(p + 1, n - 1, MAX_UNPACKED, out);
    return -EBADMSG;
}

int bk_load_unpacked(struct bk_repo *r, enum bk_ftype t, const char *name, struct buf *out, char *err,
                     size_t errlen)
{
    static const char *const what[BK_NFTYPES] = { "config", "key", "pack", "index", "snapshot", "lock" };
    struct buf raw = BUF_INIT, plain = BUF_INIT;
    int e = r->be->ops->load(r->be, t, name, 0, 0, &raw);
    if (e) {
        snprintf(err, errlen, "%s %s: %s", what[t], name, cairn_strerror(e));
        goto out;
    }
    if (t != BK_CONFIG) {
        bk_id want, got;
        bk_sha256(buf_head(&raw), buf_used(&raw), &got);
        if (bk_id_parse(name, strlen(name), &want) || !bk_id_eq(&want, &got)) {
            e = -EBADMSG;
            snprintf(err, errlen, "%s %s: its content does not hash to its name (damaged)", what[t], name);
            goto out;
        }
    }
    if (buf_used(&raw) < BK_OVERHEAD || buf_used(&raw) > MAX_UNPACKED ||
        buf_reserve(&plain, buf_used(&raw))) {
        e = -EBADMSG;
        snprintf(err, errlen, "%s %s: bad size %zu", what[t], name, buf_used(&raw));
        goto out;
    }
    if ((e = bk_open(&r->master, (const uint8_t *)buf_head(&raw), buf_used(&raw), (uint8_t *)buf_tail(&plain)))) {
        snprintf(err, errlen, "%s %s: decryption failed (%s)", what[t], name,
                 e == -EBADMSG ? "MAC mismatch: damaged or not of this repository" : cairn_strerror(e));
        goto out;
    }
    buf_commit(&plain, buf_used(&raw) - BK_OVERHEAD);
    if (t == BK_CONFIG) {
        buf_reset(out);
        e = buf_append(out, buf_head(&plain), buf_used(&plain)) ? -ENOMEM : 0;
    } else if ((e = unpacked_plain((const uint8_t *)buf_head(&plain), buf_used(&plain), out))) {
        snprintf(err, errlen, "%s %s: cannot decode (%s)", what[t], name, cairn_strerror(e));
    }
out:
    buf_free(&raw);
    buf_free(&plain);
    return e;
}

/* ---- keys and config ---- */

static int master_from_json(const char *s, size_t n, struct bk_key *k)
{
    json_error_t je;
    json_t *j = json_loadb(s, n, 0, &je);
    const char *mk = NULL, *mr = NULL, *enc = NULL;
    int e = -EBADMSG;
    if (json_unpack(j, "{s:{s:s,s:s},s:s}", "mac", "k", &mk, "r", &mr, "encrypt", &enc) == 0 &&
        bk_b64_decode(mk, k->mac_k, 16) == 16 && bk_b64_decode(mr, k->mac_r, 16) == 16 &&
        bk_b64_decode(enc, k->enc, 32) == 32) {
        bk_key_mask(k);
        e = 0;
    }
    json_decref(j);
    return e;
}

struct keytry {
    struct bk_repo *r;
    const char *pw;
    size_t pwlen;
    int tried;
    bool found;
    char first_err[160];
};

static int try_key(void *arg, const char *name, uint64_t size)
{
    struct keytry *kt = arg;
    struct buf raw = BUF_INIT;
    if (kt->tried++ >= MAX_KEYS || size > (1u << 20))
        return 0;
    int e = kt->r->be->ops->load(kt->r->be, BK_KEY, name, 0, 0, &raw);
    json_t *j = NULL;
    if (!e) {
        json_error_t je;
        j = json_loadb(buf_head(&raw), buf_used(&raw), 0, &je);
        const char *kdf = NULL, *salt = NULL, *data = NULL;
        json_int_t N = 0, rr = 0, p = 0;
        uint8_t sb[256];
        long sl, dl;
        uint8_t *db = NULL;
        if (json_unpack(j, "{s:s,s:I,s:I,s:I,s:s,s:s}", "kdf", &kdf, "N", &N, "r", &rr, "p", &p, "salt", &salt,
                        "data", &data) != 0 || strcmp(kdf, "scrypt") != 0 || N <= 0 || rr <= 0 || p <= 0 ||
            (sl = bk_b64_decode(salt, sb, sizeof(sb))) < 0) {
            if (!kt->first_err[0])
                snprintf(kt->first_err, sizeof(kt->first_err), "key %.12s: not a scrypt key file", name);
        } else if ((db = malloc(strlen(data))) && (dl = bk_b64_decode(data, db, strlen(data))) > BK_OVERHEAD) {
            struct bk_key uk;
            uint8_t plain[512];
            if (dl - BK_OVERHEAD < (long)sizeof(plain) &&
                !bk_kdf(kt->pw, kt->pwlen, sb, (size_t)sl, (uint64_t)N, (uint32_t)rr, (uint32_t)p, &uk) &&
                !bk_open(&uk, db, (size_t)dl, plain) &&
                !master_from_json((const char *)plain, (size_t)dl - BK_OVERHEAD, &kt->r->master))
                kt->found = true;
        }
        free(db);
    }
    json_decref(j);
    buf_free(&raw);
    return kt->found ? 1 : 0;
}

int bk_repo_open(struct bk_repo *r, struct bk_backend *be, const char *pw, size_t pwlen, char *err,
                 size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->be = be;
    r->zstd_level = 3;
    r->pack_target = 16u << 20;
    pthread_mutex_init(&r->mu, NULL);
    uint64_t sz;
    int e = be->ops->stat(be, BK_CONFIG, "config", &sz);
    if (e) {
        snprintf(err, errlen, "repository %s: %s", be->desc,
                 e == -ENOENT ? "not initialized (no config file)" : cairn_strerror(e));
        return e == -ENOENT ? -ENOENT : e;
    }
    struct keytry kt = { .r = r, .pw = pw, .pwlen = pwlen };
    e = be->ops->list(be, BK_KEY, try_key, &kt);
    if (e < 0) {
        snprintf(err, errlen, "repository %s: listing keys: %s", be->desc, cairn_strerror(e));
        return e;
    }
    if (!kt.found) {
        snprintf(err, errlen, "repository %s: wrong password or no key found (tried %d key%s)", be->desc,
                 kt.tried, kt.tried == 1 ? "" : "s");
        return -EACCES;
    }
    struct buf cfg = BUF_INIT;
    if ((e = bk_load_unpacked(r, BK_CONFIG, "config", &cfg, err, errlen)))
        return e;
    json_error_t je;
    json_t *j = json_loadb(buf_head(&cfg), buf_used(&cfg), 0, &je);
    json_int_t ver = 0;
    const char *id = NULL, *pol = NULL;
    e = 0;
    if (json_unpack(j, "{s:I,s:s,s:s}", "version", &ver, "id", &id, "chunker_polynomial", &pol) != 0) {
        snprintf(err, errlen, "repository %s: config is not a restic config", be->desc);
        e = -EBADMSG;
    } else if (ver != 1 && ver != 2) {
        snprintf(err, errlen, "repository %s: format version %lld is not supported (1 and 2 are)", be->desc,
                 (long long)ver);
        e = -ENOTSUP;
    } else {
        r->version = (int)ver;
        snprintf(r->id, sizeof(r->id), "%s", id);
        r->pol = strtoull(pol, NULL, 16);
        if (!bk_pol_irreducible(r->pol)) {
            snprintf(err, errlen, "repository %s: chunker polynomial %s is not irreducible", be->desc, pol);
            e = -EBADMSG;
        }
    }
    json_decref(j);
    buf_free(&cfg);
    return e;
}

int bk_repo_init(struct bk_repo *r, struct bk_backend *be, const char *pw, size_t pwlen, char *err,
                 size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->be = be;
    r->zstd_level = 3;
    r->pack_target = 16u << 20;
    r->version = 2;
    pthread_mutex_init(&r->mu, NULL);
    uint64_t sz;
    if (be->ops->stat(be, BK_CONFIG, "config", &sz) == 0) {
        snprintf(err, errlen, "repository %s: already initialized", be->desc);
        return -EEXIST;
    }
    cairn_random(&r->master, sizeof(r->master));
    bk_key_mask(&r->master);
    r->pol = bk_pol_random();
    uint8_t rid[32];
    cairn_random(rid, sizeof(rid));
    cairn_hex(rid, 32, r->id);
    /* the key file: scrypt of the password over a random salt seals the master key */
    uint8_t salt[64];
    struct bk_key uk;
    cairn_random(salt, sizeof(salt));
    int e = bk_kdf(pw, pwlen, salt, sizeof(salt), KDF_N, KDF_R, KDF_P, &uk);
    if (e) {
        snprintf(err, errlen, "scrypt: %s", cairn_strerror(e));
        return e;
    }
    char *mk = bk_b64_encode(r->master.mac_k, 16), *mr = bk_b64_encode(r->master.mac_r, 16),
         *me = bk_b64_encode(r->master.enc, 32);
    struct buf mj = BUF_INIT, sealed = BUF_INIT, kj = BUF_INIT, cj = BUF_INIT;
    e = -ENOMEM;
    if (!mk || !mr || !me ||
        buf_printf(&mj, "{\"mac\":{\"k\":\"%s\",\"r\":\"%s\"},\"encrypt\":\"%s\"}", mk, mr, me) < 0)
        goto out;
    if (buf_reserve(&sealed, buf_used(&mj) + BK_OVERHEAD) ||
        bk_seal(&uk, buf_head(&mj), buf_used(&mj), (uint8_t *)buf_tail(&sealed)))
        goto out;
    buf_commit(&sealed, buf_used(&mj) + BK_OVERHEAD);
    char *sb = bk_b64_encode(salt, sizeof(salt)), *db = bk_b64_encode(buf_head(&sealed), buf_used(&sealed));
    char created[48], host[256], user[64];
    now_rfc3339(created);
    host_user(host, user);
    int pe = sb && db ? buf_printf(&kj, "{\"created\":\"%s\",\"username\":", created) : -1;
    if (pe >= 0) {
        buf_json_str(&kj, user);
        buf_puts(&kj, ",\"hostname\":");
        buf_json_str(&kj, host);
        pe = buf_printf(&kj, ",\"kdf\":\"scrypt\",\"N\":%d,\"r\":%d,\"p\":%d,\"salt\":\"%s\",\"data\":\"%s\"}",
                        KDF_N, KDF_R, KDF_P, sb, db);
    }
    free(sb);
    free(db);
    if (pe < 0)
        goto out;
    bk_id kid;
    char kname[65];
    bk_sha256(buf_head(&kj), buf_used(&kj), &kid);
    bk_id_hex(&kid, kname);
    if ((e = be->ops->save(be, BK_KEY, kname, buf_head(&kj), buf_used(&kj)))) {
        snprintf(err, errlen, "repository %s: writing the key: %s", be->desc, cairn_strerror(e));
        goto out;
    }
    e = -ENOMEM;
    if (buf_printf(&cj, "{\"version\":2,\"id\":\"%s\",\"chunker_polynomial\":\"%llx\"}", r->id,
                   (unsigned long long)r->pol) < 0 ||
        seal_file(r, buf_head(&cj), buf_used(&cj), &sealed))
        goto out;
    if ((e = be->ops->save(be, BK_CONFIG, "config", buf_head(&sealed), buf_used(&sealed))))
        snprintf(err, errlen, "repository %s: writing the config: %s", be->desc, cairn_strerror(e));
out:
    if (e == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    free(mk);
    free(mr);
    free(me);
    buf_free(&mj);
    buf_free(&sealed);
    buf_free(&kj);
    buf_free(&cj);
    return e;
}

void bk_packer_free(struct bk_packer *pk)
{
    if (pk->has_file) {
        close(pk->fd);
        unlink(pk->tmp);                /* a pack never finished */
    }
    pk->has_file = false;
    buf_free(&pk->header);
    buf_free(&pk->seal);
    buf_free(&pk->z);
    if (pk->zc)
        ZSTD_freeCCtx(pk->zc);
    pk->zc = NULL;
    if (pk->sha)
        EVP_MD_CTX_free(pk->sha);
    pk->sha = NULL;
}

/* the packer's temporary file, when it has none yet (owner thread, no lock) */
static int packer_file(struct bk_repo *r, struct bk_packer *pk)
{
    if (pk->has_file)
        return 0;
    int fd = r->be->ops->tmp_file(r->be, pk->tmp, sizeof(pk->tmp));
    if (fd < 0)
        return fd;
    if (!pk->sha && !(pk->sha = EVP_MD_CTX_new())) {
        close(fd);
        unlink(pk->tmp);
        return -ENOMEM;
    }
    if (EVP_DigestInit_ex(pk->sha, EVP_sha256(), NULL) != 1) {
        close(fd);
        unlink(pk->tmp);
        return -EIO;
    }
    pk->fd = fd;
    pk->has_file = true;
    pk->size = 0;
    return 0;
}

static int packer_write(struct bk_packer *pk, const void *p, size_t n)
{
    int e = cairn_write_all(pk->fd, p, n);
    if (e)
        return e;
    EVP_DigestUpdate(pk->sha, p, n);
    pk->size += n;
    return 0;
}

void bk_repo_close(struct bk_repo *r)
{
    if (r->lock_name[0])
        bk_unlock(r);
    bk_packer_free(&r->tree_packer);
    free(r->ents);
    free(r->slots);
    free(r->packs);
    free(r->pack_slots);
    for (size_t i = 0; i < r->nindex_files; i++)
        free(r->index_files[i]);
    free(r->index_files);
    if (r->be)
        r->be->ops->free(r->be);
    pthread_mutex_destroy(&r->mu);
    memset(r, 0, sizeof(*r));
}

/* ---- the in-memory index ---- */

static inline uint64_t id_hash(const bk_id *id)
{
    uint64_t h;
    memcpy(&h, id->b, 8);
    return h;
}

static int grow_slots(uint32_t **slots, size_t *nslots, size_t count, const void *base, size_t stride)
{
    if ((count + 1) * 10 < *nslots * 7)
        return 0;
    size_t n = *nslots ? *nslots * 2 : 1024;
    uint32_t *s = calloc(n, sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        const bk_id *id = (const bk_id *)((const char *)base + i * stride);
        size_t h = (size_t)id_hash(id) & (n - 1);
        while (s[h])
            h = (h + 1) & (n - 1);
        s[h] = (uint32_t)(i + 1);
    }
    free(*slots);
    *slots = s;
    *nslots = n;
    return 0;
}

static struct bk_ientry *find_locked(struct bk_repo *r, const bk_id *id, int type)
{
    if (!r->nslots)
        return NULL;
    size_t h = (size_t)id_hash(id) & (r->nslots - 1);
    for (uint32_t s; (s = r->slots[h]); h = (h + 1) & (r->nslots - 1)) {
        struct bk_ientry *e = &r->ents[s - 1];
        if (e->type == type && bk_id_eq(&e->id, id))
            return e;
    }
    return NULL;
}

const struct bk_ientry *bk_index_find(struct bk_repo *r, const bk_id *id, int type)
{
    pthread_mutex_lock(&r->mu);
    const struct bk_ientry *e = find_locked(r, id, type);
    pthread_mutex_unlock(&r->mu);
    return e;
}

static struct bk_ientry *add_entry_locked(struct bk_repo *r, const bk_id *id, int type)
{
    if (r->nents == r->entcap) {
        size_t n = r->entcap ? r->entcap * 2 : 4096;
        struct bk_ientry *e = realloc(r->ents, n * sizeof(*e));
        if (!e)
            return NULL;
        r->ents = e;
        r->entcap = n;
    }
    if (grow_slots(&r->slots, &r->nslots, r->nents, r->ents, sizeof(*r->ents)))
        return NULL;
    struct bk_ientry *e = &r->ents[r->nents];
    memset(e, 0, sizeof(*e));
    e->id = *id;
    e->type = (uint8_t)type;
    size_t h = (size_t)id_hash(id) & (r->nslots - 1);
    while (r->slots[h])
        h = (h + 1) & (r->nslots - 1);
    r->slots[h] = (uint32_t)++r->nents;
    return e;
}

static void pack_slot_insert(struct bk_repo *r, size_t i)
{
    size_t h = (size_t)id_hash(&r->packs[i].id) & (r->npack_slots - 1);
    while (r->pack_slots[h])
        h = (h + 1) & (r->npack_slots - 1);
    r->pack_slots[h] = (uint32_t)(i + 1);
}

/* The pack table holds the packs that have ids; rebuilt larger, over all of them
 * but skip (about to be inserted), once it is 70% full. */
static int pack_table_grow_locked(struct bk_repo *r, size_t skip)
{
    if ((r->npacks + 1) * 10 < r->npack_slots * 7)
        return 0;
    size_t n = r->npack_slots ? r->npack_slots * 2 : 1024;
    uint32_t *t = calloc(n, sizeof(*t));
    if (!t)
        return -ENOMEM;
    free(r->pack_slots);
    r->pack_slots = t;
    r->npack_slots = n;
    for (size_t i = 0; i < r->npacks; i++)
        if (!r->packs[i].pending && i != skip)
            pack_slot_insert(r, i);
    return 0;
}

static long find_pack_locked(struct bk_repo *r, const bk_id *id)
{
    if (!r->npack_slots)
        return -1;
    size_t h = (size_t)id_hash(id) & (r->npack_slots - 1);
    for (uint32_t s; (s = r->pack_slots[h]); h = (h + 1) & (r->npack_slots - 1))
        if (!r->packs[s - 1].pending && bk_id_eq(&r->packs[s - 1].id, id))
            return (long)s - 1;
    return -1;
}

long bk_pack_find(struct bk_repo *r, const bk_id *id)
{
    pthread_mutex_lock(&r->mu);
    long p = find_pack_locked(r, id);
    pthread_mutex_unlock(&r->mu);
    return p;
}

/* a pack slot; with id (known pack) it goes into the pack table too */
static long add_pack_locked(struct bk_repo *r, const bk_id *id)
{
    if (r->npacks == r->packcap) {
        size_t n = r->packcap ? r->packcap * 2 : 256;
        struct bk_pack *p = realloc(r->packs, n * sizeof(*p));
        if (!p)
            return -ENOMEM;
        r->packs = p;
        r->packcap = n;
    }
    struct bk_pack *p = &r->packs[r->npacks];
    memset(p, 0, sizeof(*p));
    p->pending = id == NULL;
    if (id)
        p->id = *id;
    r->npacks++;
    if (id) {
        if (pack_table_grow_locked(r, r->npacks - 1))
            return -ENOMEM;
        pack_slot_insert(r, r->npacks - 1);
    }
    return (long)r->npacks - 1;
}

/* ---- index files ---- */

static int index_add_json(struct bk_repo *r, json_t *j, char *err, size_t errlen, const char *name)
{
    json_t *packs = json_is_array(j) ? j : json_object_get(j, "packs");   /* old format: an array */
    if (!json_is_array(packs)) {
        snprintf(err, errlen, "index %s: no packs list", name);
        return -EBADMSG;
    }
    size_t i, k;
    json_t *pk, *b;
    json_array_foreach(packs, i, pk) {
        const char *pid = json_string_value(json_object_get(pk, "id"));
        json_t *blobs = json_object_get(pk, "blobs");
        bk_id id;
        if (!pid || bk_id_parse(pid, strlen(pid), &id) || !json_is_array(blobs)) {
            snprintf(err, errlen, "index %s: pack %zu malformed", name, i);
            return -EBADMSG;
        }
        long slot = find_pack_locked(r, &id);
        if (slot < 0 && (slot = add_pack_locked(r, &id)) < 0)
            return -ENOMEM;
        r->packs[slot].indexed = true;
        json_array_foreach(blobs, k, b) {
            const char *bid = json_string_value(json_object_get(b, "id"));
            const char *type = json_string_value(json_object_get(b, "type"));
            json_t *off = json_object_get(b, "offset"), *len = json_object_get(b, "length"),
                   *ul = json_object_get(b, "uncompressed_length");
            bk_id blob;
            int t = type && !strcmp(type, "data") ? BK_BLOB_DATA : type && !strcmp(type, "tree") ? BK_BLOB_TREE : -1;
            if (!bid || bk_id_parse(bid, strlen(bid), &blob) || t < 0 || !json_is_integer(off) ||
                !json_is_integer(len) || json_integer_value(off) < 0 || json_integer_value(off) > UINT32_MAX ||
                json_integer_value(len) <= BK_OVERHEAD || json_integer_value(len) > UINT32_MAX ||
                (ul && !json_is_null(ul) && (!json_is_integer(ul) || json_integer_value(ul) < 0 ||
                                              json_integer_value(ul) > UINT32_MAX))) {
                snprintf(err, errlen, "index %s: pack %.12s blob %zu malformed", name, pid, k);
                return -EBADMSG;
            }
            if (find_locked(r, &blob, t))
                continue;                       /* the same blob in two packs: the first wins */
            struct bk_ientry *e = add_entry_locked(r, &blob, t);
            if (!e)
                return -ENOMEM;
            e->pack = (uint32_t)slot;
            e->off = (uint32_t)json_integer_value(off);
            e->len = (uint32_t)json_integer_value(len);
            e->ulen = ul && json_is_integer(ul) ? (uint32_t)json_integer_value(ul) : 0;
        }
    }
    return 0;
}

struct namelist {
    char **v;
    size_t n, cap;
};

static int collect_name(void *arg, const char *name, uint64_t size)
{
    (void)size;
    struct namelist *l = arg;
    if (strlen(name) != 64)
        return 0;
    if (l->n == l->cap) {
        size_t n = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, n * sizeof(*v));
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = n;
    }
    if (!(l->v[l->n] = strdup(name)))
        return -ENOMEM;
    l->n++;
    return 0;
}

int bk_list_names(struct bk_repo *r, enum bk_ftype t, char ***out, size_t *n)
{
    struct namelist l = { 0 };
    int e = r->be->ops->list(r->be, t, collect_name, &l);
    if (e < 0) {
        for (size_t i = 0; i < l.n; i++)
            free(l.v[i]);
        free(l.v);
        return e;
    }
    *out = l.v;
    *n = l.n;
    return 0;
}

int bk_index_parse(struct bk_repo *r, const char *json, size_t n, const char *name, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_loadb(json, n, 0, &je);
    if (!j) {
        snprintf(err, errlen, "index %s: not JSON: %s", name, je.text);
        return -EBADMSG;
    }
    pthread_mutex_lock(&r->mu);
    int e = index_add_json(r, j, err, errlen, name);
    pthread_mutex_unlock(&r->mu);
    json_decref(j);
    return e;
}

int bk_index_load(struct bk_repo *r, char *err, size_t errlen)
{
    char **names;
    size_t n;
    int e = bk_list_names(r, BK_INDEX, &names, &n);
    if (e) {
        snprintf(err, errlen, "listing index files: %s", cairn_strerror(e));
        return e;
    }
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < n && !e; i++) {
        if ((e = bk_load_unpacked(r, BK_INDEX, names[i], &b, err, errlen)))
            break;
        e = bk_index_parse(r, buf_head(&b), buf_used(&b), names[i], err, errlen);
    }
    buf_free(&b);
    r->index_files = names;
    r->nindex_files = n;
    r->unindexed_from = r->npacks;
    return e;
}

/* ---- packs ---- */

int bk_pack_header_parse(const uint8_t *p, size_t n, struct bk_pack_blob **out, size_t *count)
{
    size_t cap = 0, k = 0;
    struct bk_pack_blob *v = NULL;
    uint64_t off = 0;
    *out = NULL;
    *count = 0;
    for (size_t i = 0; i < n;) {
        uint8_t t = p[i];
        size_t need = t >= 2 ? 1 + 4 + 4 + 32 : 1 + 4 + 32;
        if (t > 3 || n - i < need) {
            free(v);
            return -EBADMSG;
        }
        if (k == cap) {
            cap = cap ? cap * 2 : 64;
            struct bk_pack_blob *nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                free(v);
                return -ENOMEM;
            }
            v = nv;
        }
        struct bk_pack_blob *b = &v[k++];
        b->type = t & 1;
        b->len = (uint32_t)p[i + 1] | (uint32_t)p[i + 2] << 8 | (uint32_t)p[i + 3] << 16 | (uint32_t)p[i + 4] << 24;
        b->ulen = 0;
        if (t >= 2)
            b->ulen = (uint32_t)p[i + 5] | (uint32_t)p[i + 6] << 8 | (uint32_t)p[i + 7] << 16 |
                      (uint32_t)p[i + 8] << 24;
        memcpy(b->id.b, p + i + need - 32, 32);
        if (b->len < BK_OVERHEAD || off + b->len > UINT32_MAX) {
            free(v);
            return -EBADMSG;
        }
        b->off = (uint32_t)off;
        off += b->len;
        i += need;
    }
    *out = v;
    *count = k;
    return 0;
}

int bk_pack_header_read(struct bk_repo *r, const char *name, uint64_t size, struct bk_pack_blob **out,
                        size_t *count, char *err, size_t errlen)
{
    struct buf b = BUF_INIT, plain = BUF_INIT;
    int e;
    if (size < 4 + BK_OVERHEAD) {
        snprintf(err, errlen, "pack %s: too short (%llu bytes)", name, (unsigned long long)size);
        return -EBADMSG;
    }
    /* read the tail in one go: most headers are a few KiB */
    uint64_t want = size < 64 * 1024 ? size : 64 * 1024;
    if ((e = r->be->ops->load(r->be, BK_DATA, name, size - want, want, &b))) {
        snprintf(err, errlen, "pack %s: %s", name, cairn_strerror(e));
        goto out;
    }
    const uint8_t *t = (const uint8_t *)buf_head(&b) + buf_used(&b) - 4;
    uint32_t hl = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    if (hl < BK_OVERHEAD || hl > MAX_HEADER || (uint64_t)hl + 4 > size) {
        snprintf(err, errlen, "pack %s: header length %u does not fit its size %llu", name, hl,
                 (unsigned long long)size);
        e = -EBADMSG;
        goto out;
    }
    if ((uint64_t)hl + 4 > want) {
        buf_reset(&b);
        if ((e = r->be->ops->load(r->be, BK_DATA, name, size - 4 - hl, hl + 4, &b))) {
            snprintf(err, errlen, "pack %s: %s", name, cairn_strerror(e));
            goto out;
        }
    }
    const uint8_t *h = (const uint8_t *)buf_head(&b) + buf_used(&b) - 4 - hl;
    if (buf_reserve(&plain, hl) || (e = bk_open(&r->master, h, hl, (uint8_t *)buf_tail(&plain)))) {
        snprintf(err, errlen, "pack %s: header does not decrypt (damaged)", name);
        e = e ? e : -ENOMEM;
        goto out;
    }
    if ((e = bk_pack_header_parse((const uint8_t *)buf_tail(&plain), hl - BK_OVERHEAD, out, count))) {
        snprintf(err, errlen, "pack %s: header malformed", name);
        goto out;
    }
    uint64_t end = *count ? (uint64_t)(*out)[*count - 1].off + (*out)[*count - 1].len : 0;
    if (end + hl + 4 != size) {
        snprintf(err, errlen, "pack %s: its blobs and header (%llu bytes) do not add up to its size %llu", name,
                 (unsigned long long)(end + hl + 4), (unsigned long long)size);
        free(*out);
        *out = NULL;
        e = -EBADMSG;
    }
out:
    buf_free(&b);
    buf_free(&plain);
    return e;
}

static void put_le32(struct buf *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    buf_append(b, x, 4);
}

/* A blob goes into pk's pack: its index entry, made now so that no other worker
 * stores it too (NULL with *err -EEXIST when the index has it, -ENOMEM). */
static struct bk_ientry *claim_locked(struct bk_repo *r, struct bk_packer *pk, const bk_id *id, int type, int *err)
{
    if (find_locked(r, id, type)) {
        *err = -EEXIST;
        return NULL;
    }
    if (!pk->open) {
        long slot = add_pack_locked(r, NULL);
        if (slot < 0) {
            *err = -ENOMEM;
            return NULL;
        }
        pk->pack = (uint32_t)slot;
        pk->open = true;
        pk->nblobs = 0;
        buf_reset(&pk->header);
    }
    struct bk_ientry *e = add_entry_locked(r, id, type);
    if (!e) {
        *err = -ENOMEM;
        return NULL;
    }
    e->pack = pk->pack;
    return e;
}

/* zstd pays for itself unless the data is already compressed or random: a fast
 * probe on its first 64 KiB decides for the big blobs */
static bool worth_compressing(struct bk_packer *pk, const void *p, size_t n)
{
    if (n < (256u << 10))
        return true;
    uint8_t out[70000];
    size_t k = ZSTD_compressCCtx(pk->zc, out, sizeof(out), p, 65536, 1);
    return !ZSTD_isError(k) && k < 65536 * 97 / 100;
}

static int blob_save(struct bk_repo *r, struct bk_packer *pk, int type, const bk_id *id, const void *p, size_t n,
                     bool inplace)
{
    pthread_mutex_lock(&r->mu);
    int ce = 0;
    struct bk_ientry *e = claim_locked(r, pk, id, type, &ce);
    size_t ei = e ? (size_t)(e - r->ents) : 0;
    pthread_mutex_unlock(&r->mu);
    if (!e)
        return ce;
    int err = packer_file(r, pk);
    /* compress (outside the lock: this and the sealing are the work), into z past
     * room for the IV so that it is sealed where it lies */
    const uint8_t *src = p;
    size_t sl = n;
    uint32_t ulen = 0;
    uint8_t *sealed = NULL;
    if (!err && r->version >= 2 && n >= 64) {
        if (!pk->zc)
            pk->zc = ZSTD_createCCtx();
        size_t bound = ZSTD_compressBound(n);
        buf_reset(&pk->z);
        if (pk->zc && worth_compressing(pk, p, n) && !buf_reserve(&pk->z, BK_HEADROOM + bound + BK_HEADROOM)) {
            uint8_t *zb = (uint8_t *)buf_tail(&pk->z);
            size_t k = ZSTD_compressCCtx(pk->zc, zb + BK_HEADROOM, bound, p, n, r->zstd_level);
            if (!ZSTD_isError(k) && k < n) {
                src = zb + BK_HEADROOM;
                sl = k;
                ulen = (uint32_t)n;
                sealed = zb;
            }
        }
    }
    if (!sealed && inplace) {
        sealed = (uint8_t *)p - BK_HEADROOM;
    } else if (!sealed) {
        buf_reset(&pk->seal);
        if (!err && buf_reserve(&pk->seal, sl + BK_OVERHEAD))
            err = -ENOMEM;
        sealed = (uint8_t *)buf_tail(&pk->seal);
    }
    uint64_t off = pk->size;
    if (!err && !(err = bk_seal(&r->master, src, sl, sealed)))
        err = packer_write(pk, sealed, sl + BK_OVERHEAD);
    if (!err) {
        buf_putc(&pk->header, (char)(type | (ulen ? 2 : 0)));
        put_le32(&pk->header, (uint32_t)(sl + BK_OVERHEAD));
        if (ulen)
            put_le32(&pk->header, ulen);
        buf_append(&pk->header, id->b, 32);
        pk->nblobs++;
    }
    pthread_mutex_lock(&r->mu);
    e = &r->ents[ei];
    e->off = (uint32_t)off;
    e->len = (uint32_t)(sl + BK_OVERHEAD);
    e->ulen = ulen;
    if (!err) {
        r->st.blobs_added++;
        r->st.bytes_added += n;
    }
    pthread_mutex_unlock(&r->mu);
    /* big scratch buffers are not kept between blobs of ordinary size */
    if (pk->z.cap > (12u << 20))
        buf_free(&pk->z);
    if (pk->seal.cap > (12u << 20))
        buf_free(&pk->seal);
    if (err)
        return err;
    if (pk->size >= r->pack_target)
        return bk_packer_flush(r, pk);
    return 0;
}

int bk_blob_save(struct bk_repo *r, struct bk_packer *pk, int type, const bk_id *id, const void *p, size_t n)
{
    return blob_save(r, pk, type, id, p, n, false);
}

int bk_blob_save_inplace(struct bk_repo *r, struct bk_packer *pk, int type, const bk_id *id, uint8_t *p, size_t n)
{
    return blob_save(r, pk, type, id, p, n, true);
}

int bk_packer_flush(struct bk_repo *r, struct bk_packer *pk)
{
    if (!pk->open || !pk->nblobs)
        return 0;
    size_t hl = buf_used(&pk->header);
    buf_reset(&pk->seal);
    if (buf_reserve(&pk->seal, hl + BK_OVERHEAD + 4))
        return -ENOMEM;
    int e = bk_seal(&r->master, buf_head(&pk->header), hl, (uint8_t *)buf_tail(&pk->seal));
    if (e)
        return e;
    buf_commit(&pk->seal, hl + BK_OVERHEAD);
    put_le32(&pk->seal, (uint32_t)(hl + BK_OVERHEAD));
    if ((e = packer_write(pk, buf_head(&pk->seal), buf_used(&pk->seal))))
        return e;
    bk_id id;
    unsigned int dl = 32;
    char name[65];
    EVP_DigestFinal_ex(pk->sha, id.b, &dl);
    bk_id_hex(&id, name);
    uint64_t size = pk->size;
    pk->has_file = false;
    if (close(pk->fd) < 0) {
        e = -errno;
        unlink(pk->tmp);
        return e;
    }
    e = r->be->ops->save_file(r->be, BK_DATA, name, pk->tmp, size);
    if (e)
        return e;
    pthread_mutex_lock(&r->mu);
    struct bk_pack *p = &r->packs[pk->pack];
    p->id = id;
    p->size = size;
    p->pending = false;
    pack_table_grow_locked(r, pk->pack);       /* fails only to grow: inserts still fit */
    pack_slot_insert(r, pk->pack);
    r->st.packs_written++;
    r->st.bytes_stored += size;
    pthread_mutex_unlock(&r->mu);
    pk->open = false;
    pk->nblobs = 0;
    buf_reset(&pk->header);
    return 0;
}

/* Writes index files for every written pack not in one yet. Caller holds no lock. */
int bk_index_write_pending(struct bk_repo *r)
{
    pthread_mutex_lock(&r->mu);
    size_t np = r->npacks;
    /* blobs per pack: count, then place (entries of unindexed, written packs) */
    uint32_t *cnt = calloc(np + 1, sizeof(*cnt));
    if (!cnt) {
        pthread_mutex_unlock(&r->mu);
        return -ENOMEM;
    }
    for (size_t i = 0; i < r->nents; i++) {
        struct bk_pack *p = &r->packs[r->ents[i].pack];
        if (!p->pending && !p->indexed)
            cnt[r->ents[i].pack + 1]++;
    }
    for (size_t i = 0; i < np; i++)
        cnt[i + 1] += cnt[i];
    size_t total = cnt[np];
    uint32_t *order = malloc((total ? total : 1) * sizeof(*order));
    uint32_t *fill = calloc(np + 1, sizeof(*fill));
    if (!order || !fill) {
        free(cnt);
        free(order);
        free(fill);
        pthread_mutex_unlock(&r->mu);
        return -ENOMEM;
    }
    for (size_t i = 0; i < r->nents; i++) {
        uint32_t pk = r->ents[i].pack;
        struct bk_pack *p = &r->packs[pk];
        if (!p->pending && !p->indexed)
            order[cnt[pk] + fill[pk]++] = (uint32_t)i;
    }
    struct buf j = BUF_INIT;
    int e = 0;
    size_t inthis = 0;
    bool any = false;
    char hex[65];
    size_t first_in_file = 0;
    for (size_t pk = 0; pk <= np && !e; pk++) {
        bool last = pk == np;
        if (!last && cnt[pk + 1] == cnt[pk])
            continue;
        if (last || (any && inthis + (cnt[pk + 1] - cnt[pk]) > INDEX_MAX_BLOBS)) {
            if (!any)
                break;
            buf_puts(&j, "]}");
            bk_id id;
            pthread_mutex_unlock(&r->mu);
            e = bk_save_unpacked(r, BK_INDEX, buf_head(&j), buf_used(&j), &id);
            pthread_mutex_lock(&r->mu);
            if (!e) {
                for (size_t q = first_in_file; q < pk; q++)
                    if (cnt[q + 1] != cnt[q])
                        r->packs[q].indexed = true;
                char **v = realloc(r->index_files, (r->nindex_files + 1) * sizeof(*v));
                if (v) {
                    r->index_files = v;
                    bk_id_hex(&id, hex);
                    v[r->nindex_files++] = strdup(hex);
                }
            }
            buf_reset(&j);
            any = false;
            inthis = 0;
            if (last)
                break;
        }
        if (!any) {
            buf_puts(&j, "{\"packs\":[");
            first_in_file = pk;
        } else {
            buf_putc(&j, ',');
        }
        any = true;
        bk_id_hex(&r->packs[pk].id, hex);
        buf_printf(&j, "{\"id\":\"%s\",\"blobs\":[", hex);
        for (uint32_t k = cnt[pk]; k < cnt[pk + 1]; k++) {
            const struct bk_ientry *en = &r->ents[order[k]];
            bk_id_hex(&en->id, hex);
            buf_printf(&j, "%s{\"id\":\"%s\",\"type\":\"%s\",\"offset\":%u,\"length\":%u", k > cnt[pk] ? "," : "",
                       hex, en->type == BK_BLOB_TREE ? "tree" : "data", en->off, en->len);
            if (en->ulen)
                buf_printf(&j, ",\"uncompressed_length\":%u", en->ulen);
            buf_putc(&j, '}');
        }
        buf_puts(&j, "]}");
        inthis += cnt[pk + 1] - cnt[pk];
    }
    pthread_mutex_unlock(&r->mu);
    buf_free(&j);
    free(cnt);
    free(order);
    free(fill);
    return e;
}

int bk_blob_load2(struct bk_repo *r, const struct bk_ientry *e, struct buf *out, struct buf *scratch, char *err,
                  size_t errlen)
{
    char pname[65], bname[65];
    struct buf own = BUF_INIT;
    struct buf *raw = scratch ? scratch : &own;
    pthread_mutex_lock(&r->mu);
    struct bk_ientry en = *e;
    bk_id pid = r->packs[e->pack].id;
    pthread_mutex_unlock(&r->mu);
    bk_id_hex(&pid, pname);
    bk_id_hex(&en.id, bname);
    buf_reset(raw);
    int x = r->be->ops->load(r->be, BK_DATA, pname, en.off, en.len, raw);
    if (x) {
        snprintf(err, errlen, "blob %.16s in pack %.16s: %s", bname, pname, cairn_strerror(x));
        goto out;
    }
    /* decrypted where it lies, then decompressed into out (or handed over) */
    uint8_t *p = (uint8_t *)buf_head(raw);
    if ((x = bk_open(&r->master, p, en.len, p + 16))) {
        snprintf(err, errlen, "blob %.16s in pack %.16s: does not decrypt (damaged)", bname, pname);
        goto out;
    }
    size_t pl = en.len - BK_OVERHEAD;
    buf_reset(out);
    if (en.ulen) {
        x = unzstd(p + 16, pl, en.ulen, out);
        if (x || buf_used(out) != en.ulen) {
            x = x ? x : -EBADMSG;
            snprintf(err, errlen, "blob %.16s in pack %.16s: does not decompress", bname, pname);
            goto out;
        }
    } else {
        /* the plaintext is raw's bytes 16..16+pl: swap the buffers instead of copying */
        raw->off += 16;
        raw->len = raw->off + pl;
        struct buf t = *out;
        *out = *raw;
        *raw = t;
    }
    bk_id got;
    bk_sha256(buf_head(out), buf_used(out), &got);
    if (!bk_id_eq(&got, &en.id)) {
        x = -EBADMSG;
        snprintf(err, errlen, "blob %.16s in pack %.16s: content does not match its id", bname, pname);
    }
out:
    buf_free(&own);
    return x;
}

int bk_blob_load(struct bk_repo *r, const struct bk_ientry *e, struct buf *out, char *err, size_t errlen)
{
    return bk_blob_load2(r, e, out, NULL, err, errlen);
}

/* ---- locks ---- */

struct lockscan {
    struct bk_repo *r;
    bool exclusive;
    char host[256];
    char *conflict;
    size_t clen;
    int found;
};

static int scan_lock(void *arg, const char *name, uint64_t size)
{
    struct lockscan *ls = arg;
    (void)size;
    if (!strcmp(name, ls->r->lock_name))
        return 0;
    struct buf b = BUF_INIT;
    char err[256];
    if (bk_load_unpacked(ls->r, BK_LOCK, name, &b, err, sizeof(err))) {
        buf_free(&b);
        return 0;                           /* removed meanwhile, or not ours to read */
    }
    json_error_t je;
    json_t *j = json_loadb(buf_head(&b), buf_used(&b), 0, &je);
    buf_free(&b);
    const char *t = json_string_value(json_object_get(j, "time"));
    const char *h = json_string_value(json_object_get(j, "hostname"));
    bool ex = json_is_true(json_object_get(j, "exclusive"));
    json_int_t pid = json_integer_value(json_object_get(j, "pid"));
    int64_t ns = 0;
    bool stale = !t || cairn_parse_rfc3339(t, strlen(t), &ns) ||
                 cairn_wall_time() - (double)ns / 1e9 > LOCK_STALE_S;
    if (h && !strcmp(h, ls->host) && pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
        /* its process is gone: remove it, as `restic unlock` would (restic 0.14
         * itself would refuse an exclusive lock while it is there) */
        stale = true;
        ls->r->be->ops->remove(ls->r->be, BK_LOCK, name);
    }
    if (!stale && (ex || ls->exclusive) && !ls->found) {
        ls->found = 1;
        snprintf(ls->conflict, ls->clen, "repository is already locked %sby PID %lld on %s since %s (lock %.10s)",
                 ex ? "exclusively " : "", (long long)pid, h ? h : "?", t, name);
    }
    json_decref(j);
    return 0;
}

static int write_lock(struct bk_repo *r, bool exclusive)
{
    char host[256], user[64], now[48];
    struct buf j = BUF_INIT;
    host_user(host, user);
    now_rfc3339(now);
    buf_printf(&j, "{\"time\":\"%s\",\"exclusive\":%s,\"hostname\":", now, exclusive ? "true" : "false");
    buf_json_str(&j, host);
    buf_puts(&j, ",\"username\":");
    buf_json_str(&j, user);
    buf_printf(&j, ",\"pid\":%d", (int)getpid());
    if (getuid())
        buf_printf(&j, ",\"uid\":%u", (unsigned)getuid());
    if (getgid())
        buf_printf(&j, ",\"gid\":%u", (unsigned)getgid());
    buf_putc(&j, '}');
    bk_id id;
    int e = bk_save_unpacked(r, BK_LOCK, buf_head(&j), buf_used(&j), &id);
    buf_free(&j);
    if (!e) {
        bk_id_hex(&id, r->lock_name);
        r->lock_exclusive = exclusive;
        r->lock_time = cairn_wall_time();
    }
    return e;
}

int bk_lock(struct bk_repo *r, bool exclusive, char *err, size_t errlen)
{
    char user[64];
    struct lockscan ls = { .r = r, .exclusive = exclusive, .conflict = err, .clen = errlen };
    host_user(ls.host, user);
    int e = r->be->ops->list(r->be, BK_LOCK, scan_lock, &ls);
    if (e < 0) {
        snprintf(err, errlen, "listing locks: %s", cairn_strerror(e));
        return e;
    }
    if (ls.found)
        return -EBUSY;
    if ((e = write_lock(r, exclusive))) {
        snprintf(err, errlen, "writing a lock: %s", cairn_strerror(e));
        return e;
    }
    /* another process may have locked at the same moment: look again once its
     * lock would be visible (restic waits 200 ms). A shared lock's second look
     * can wait until before anything refers to what was written under it
     * (bk_lock_verify); an exclusive one's cannot. */
    r->lock_verify_at = cairn_wall_time() + 0.2;
    if (!exclusive)
        return 0;
    return bk_lock_verify(r, err, errlen);
}

int bk_lock_verify(struct bk_repo *r, char *err, size_t errlen)
{
    if (!r->lock_name[0] || r->lock_verify_at == 0)
        return 0;
    double wait = r->lock_verify_at - cairn_wall_time();
    if (wait > 0) {
        struct timespec ts = { 0, (long)(wait * 1e9) };
        nanosleep(&ts, NULL);
    }
    char user[64];
    struct lockscan ls = { .r = r, .exclusive = r->lock_exclusive, .conflict = err, .clen = errlen };
    host_user(ls.host, user);
    int e = r->be->ops->list(r->be, BK_LOCK, scan_lock, &ls);
    if (ls.found) {
        bk_unlock(r);
        return -EBUSY;
    }
    if (e < 0) {
        snprintf(err, errlen, "listing locks: %s", cairn_strerror(e));
        return e;
    }
    r->lock_verify_at = 0;
    return 0;
}

void bk_lock_refresh(struct bk_repo *r)
{
    if (!r->lock_name[0] || cairn_wall_time() - r->lock_time < LOCK_REFRESH_S)
        return;
    char old[65];
    memcpy(old, r->lock_name, sizeof(old));
    if (write_lock(r, r->lock_exclusive) == 0)
        r->be->ops->remove(r->be, BK_LOCK, old);
}

void bk_unlock(struct bk_repo *r)
{
    if (!r->lock_name[0])
        return;
    r->be->ops->remove(r->be, BK_LOCK, r->lock_name);
    r->lock_name[0] = 0;
}

/* ---- prune's tools ---- */

void bk_index_reset(struct bk_repo *r)
{
    pthread_mutex_lock(&r->mu);
    r->nents = 0;
    r->npacks = 0;
    if (r->slots)
        memset(r->slots, 0, r->nslots * sizeof(*r->slots));
    if (r->pack_slots)
        memset(r->pack_slots, 0, r->npack_slots * sizeof(*r->pack_slots));
    pthread_mutex_unlock(&r->mu);
}

long bk_pack_put(struct bk_repo *r, const bk_id *id, uint64_t size)
{
    pthread_mutex_lock(&r->mu);
    long p = find_pack_locked(r, id);
    if (p < 0)
        p = add_pack_locked(r, id);
    if (p >= 0)
        r->packs[p].size = size;
    pthread_mutex_unlock(&r->mu);
    return p;
}

int bk_index_put(struct bk_repo *r, uint32_t pack, const struct bk_ientry *src)
{
    pthread_mutex_lock(&r->mu);
    int e = 0;
    if (!find_locked(r, &src->id, src->type)) {
        struct bk_ientry *en = add_entry_locked(r, &src->id, src->type);
        if (en) {
            en->pack = pack;
            en->off = src->off;
            en->len = src->len;
            en->ulen = src->ulen;
        } else {
            e = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return e;
}

int bk_packer_add_raw(struct bk_repo *r, struct bk_packer *pk, const struct bk_ientry *src, const void *sealed)
{
    pthread_mutex_lock(&r->mu);
    int ce = 0;
    struct bk_ientry *en = claim_locked(r, pk, &src->id, src->type, &ce);
    if (en) {
        en->off = (uint32_t)pk->size;
        en->len = src->len;
        en->ulen = src->ulen;
    }
    pthread_mutex_unlock(&r->mu);
    if (!en)
        return ce;
    int e = packer_file(r, pk);
    if (e || (e = packer_write(pk, sealed, src->len)))
        return e;
    buf_putc(&pk->header, (char)(src->type | (src->ulen ? 2 : 0)));
    put_le32(&pk->header, src->len);
    if (src->ulen)
        put_le32(&pk->header, src->ulen);
    buf_append(&pk->header, src->id.b, 32);
    pk->nblobs++;
    if (pk->size >= r->pack_target)
        return bk_packer_flush(r, pk);
    return 0;
}

/* ---- packs no index names ---- */

static int collect_pack(void *arg, const char *name, uint64_t size)
{
    struct bk_packlist *l = arg;
    bk_id id;
    if (bk_id_parse(name, strlen(name), &id))
        return 0;                       /* not a pack: a temporary file, say */
    if (l->n == l->cap) {
        size_t c = l->cap ? l->cap * 2 : 256;
        bk_id *ni = realloc(l->ids, c * sizeof(*ni));
        if (!ni)
            return -ENOMEM;
        l->ids = ni;
        uint64_t *ns = realloc(l->sizes, c * sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        l->sizes = ns;
        l->cap = c;
    }
    l->ids[l->n] = id;
    l->sizes[l->n++] = size;
    return 0;
}

int bk_list_packs(struct bk_repo *r, struct bk_packlist *out)
{
    memset(out, 0, sizeof(*out));
    int e = r->be->ops->list(r->be, BK_DATA, collect_pack, out);
    if (e < 0)
        bk_packlist_free(out);
    return e < 0 ? e : 0;
}

void bk_packlist_free(struct bk_packlist *l)
{
    free(l->ids);
    free(l->sizes);
    memset(l, 0, sizeof(*l));
}

int bk_adopt_orphans(struct bk_repo *r, size_t *adopted)
{
    struct bk_packlist o;
    *adopted = 0;
    int e = bk_list_packs(r, &o);
    for (size_t i = 0; !e && i < o.n; i++) {
        char name[65], err[256];
        struct bk_pack_blob *hb = NULL;
        size_t nh = 0;
        if (bk_pack_find(r, &o.ids[i]) >= 0)
            continue;                   /* an index names it */
        bk_id_hex(&o.ids[i], name);
        if (bk_pack_header_read(r, name, o.sizes[i], &hb, &nh, err, sizeof(err))) {
            log_warn("a pack no index names does not read: left for prune", "pack", name, "error", err);
            continue;
        }
        pthread_mutex_lock(&r->mu);
        long slot = add_pack_locked(r, &o.ids[i]);
        if (slot >= 0) {
            r->packs[slot].size = o.sizes[i];
            r->packs[slot].indexed = false;     /* the next index file names it */
            for (size_t k = 0; k < nh; k++) {
                if (find_locked(r, &hb[k].id, hb[k].type))
                    continue;
                struct bk_ientry *en = add_entry_locked(r, &hb[k].id, hb[k].type);
                if (!en) {
                    e = -ENOMEM;
                    break;
                }
                en->pack = (uint32_t)slot;
                en->off = hb[k].off;
                en->len = hb[k].len;
                en->ulen = hb[k].ulen;
            }
        } else {
            e = -ENOMEM;
        }
        pthread_mutex_unlock(&r->mu);
        free(hb);
        if (!e)
            (*adopted)++;
    }
    bk_packlist_free(&o);
    return e < 0 ? e : 0;
}
