/* tsdb_block.c - writing, checking and reading on-disk blocks (see tsdb_block.h).
 *
 * The index, little-endian, every section 8-byte aligned:
 *
 *   header   "CAIRNIX1", u32 version, u32 level, i64 mint, i64 maxt, u64 samples,
 *            u64 chunks, u32 symbols, u32 series, u32 names, u32 values,
 *            u64 postings, u32 parents, u32 0, then ten u64 section offsets/lengths
 *   symbols  u32 offset per symbol, then the NUL-terminated strings (sorted)
 *   series   u32 per series: its record's offset / 4; the records, 4-aligned:
 *            uvarint nlabels, (uvarint name, uvarint value) per label, uvarint
 *            nchunks, u32 CRC32 of the chunk bytes, uvarint offset of the first
 *            chunk; per chunk: zigzag varint mint - (previous maxt, or the block's
 *            mint), uvarint maxt - mint, uvarint bits, uvarint samples, uvarint
 *            encoding (0 XOR, 1 scaled decimals). A series' chunks lie back to
 *            back from that offset. XOR chunks from the head are re-encoded as
 *            scaled decimals when that is smaller (tsdb_chunk_recode).
 *   names    {u32 name, u32 first value, u32 values} sorted by name
 *   values   {u32 value, u32 byte offset of its postings, u32 postings} sorted
 *            within a name
 *   postings per value, back to back: its series numbers ascending, the first as a
 *            uvarint, then each as a uvarint difference from the one before
 *   parents  26 characters per parent ULID
 *   trailer  u32 CRC32 of everything before it, "CXND"
 */
#include "tsdb_block.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define IX_MAGIC "CAIRNIX1"
#define CK_MAGIC "CAIRNCK1"
#define IX_VERSION 1
#define IX_HEADER 160
#define IX_TRAILER 8

/* ---- ULIDs ---- */

void tsdb_ulid(char out[TSDB_ULID_LEN + 1], uint64_t ms)
{
    static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    uint8_t raw[16];
    for (int i = 0; i < 6; i++)
        raw[i] = (uint8_t)(ms >> (40 - 8 * i));
    cairn_random(raw + 6, 10);
    /* 128 bits as 26 base32 digits, the first carrying the top 3 bits */
    for (int i = 0; i < TSDB_ULID_LEN; i++) {
        int bit = 128 - 5 * (TSDB_ULID_LEN - i);  /* position of this digit's top bit */
        unsigned v = 0;
        for (int k = 0; k < 5; k++, bit++)
            if (bit >= 0)
                v = v << 1 | ((raw[bit / 8] >> (7 - bit % 8)) & 1);
        out[i] = b32[v];
    }
    out[TSDB_ULID_LEN] = 0;
}

/* ---- varints ---- */

static void put_uv(struct buf *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    while (v >= 0x80) {
        t[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t[n++] = (uint8_t)v;
    buf_append(b, t, n);
}

static void put_zz(struct buf *b, int64_t v)
{
    put_uv(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

struct dec {
    const uint8_t *p, *end;
    bool bad;
};

static uint64_t get_uv(struct dec *d)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (d->p >= d->end) {
            d->bad = true;
            return 0;
        }
        uint8_t c = *d->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
    }
    d->bad = true;
    return 0;
}

static int64_t get_zz(struct dec *d)
{
    uint64_t u = get_uv(d);
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static uint32_t get_u32(struct dec *d)
{
    uint32_t v = 0;
    if (d->end - d->p < 4) {
        d->bad = true;
        return 0;
    }
    memcpy(&v, d->p, 4);
    d->p += 4;
    return v;
}

/* ---- writing ---- */

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static uint32_t sym_find(const char **syms, uint32_t n, const char *s)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(syms[mid], s);
        if (!c)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return UINT32_MAX;
}

struct pair {
    uint32_t name, value, series;
};

static int cmp_pair(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    if (x->name != y->name)
        return x->name < y->name ? -1 : 1;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    return x->series < y->series ? -1 : x->series > y->series;
}

static void align8(struct buf *b)
{
    static const uint8_t z[8];
    size_t n = buf_used(b) % 8;
    if (n)
        buf_append(b, z, 8 - n);
}

static void put_at(struct buf *b, size_t off, const void *p, size_t n)
{
    memcpy(buf_head(b) + off, p, n);
}

static int write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            return e;
        }
        c += w;
        n -= (size_t)w;
    }
    if (fdatasync(fd)) {
        int e = -errno;
        close(fd);
        return e;
    }
    return close(fd) ? -errno : 0;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    char p[4400];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(dir) ? -errno : 0;
}

int tsdb_block_remove(const char *dir)
{
    return rm_tree(dir);
}

struct ck_out {
    FILE *f;
    uint64_t off;
    bool bad;
};

static void ck_put(struct ck_out *o, const void *p, size_t n)
{
    if (!o->bad && n && fwrite(p, 1, n, o->f) != n)
        o->bad = true;
    o->off += n;
}

int tsdb_block_write_src(const char *parent, int64_t mint, int64_t maxt, uint32_t level,
                         const char *parents, uint32_t nparents, const struct tsdb_bw_src *src,
                         char ulid[TSDB_ULID_LEN + 1], char *err, size_t errlen)
{
    int r = -ENOMEM;
    struct buf ix = BUF_INIT, rec = BUF_INIT, seroff = BUF_INIT, names = BUF_INIT, vals = BUF_INIT,
               post = BUF_INIT;
    struct pair *pairs = NULL;
    size_t np = 0, cappairs = 0;
    struct tsdb_sealed *outc = NULL;    /* one series' chunks as written */
    size_t capout = 0;
    char tmp[4200], final[4200], path[4300];
    bool made_dir = false;
    uint64_t nsamples = 0, nchunks = 0;
    uint32_t nser = 0;
    struct ck_out ck = { NULL, 0, false };
    const char **syms = src->syms;
    uint32_t nsym = src->nsym;
    err[0] = 0;

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    tsdb_ulid(ulid, (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000);
    if (cairn_mkdir_p(parent, 0755)) {
        r = -errno;
        snprintf(err, errlen, "%s: %s", parent, strerror(errno));
        goto fail;
    }
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", parent, ulid);
    snprintf(final, sizeof(final), "%s/%s", parent, ulid);
    if (mkdir(tmp, 0755)) {
        r = -errno;
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    made_dir = true;
    snprintf(path, sizeof(path), "%s/chunks", tmp);
    ck.f = fopen(path, "wbe");
    if (!ck.f) {
        r = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    ck_put(&ck, CK_MAGIC, 8);

    /* the series: chunks streamed to the file, records and postings kept */
    struct tsdb_bw_series x;
    int more;
    while ((more = src->next(src->arg, &x)) == 1) {
        if (nser == UINT32_MAX || buf_used(&rec) / 4 > UINT32_MAX) {
            snprintf(err, errlen, "too many series for one block");
            r = -E2BIG;
            goto fail;
        }
        uint32_t ro = (uint32_t)(buf_used(&rec) / 4);
        buf_append(&seroff, &ro, 4);
        put_uv(&rec, x.labels->n);
        if (np + x.labels->n > cappairs) {
            size_t nc = cappairs ? cappairs * 2 : 4096;
            while (nc < np + x.labels->n)
                nc *= 2;
            struct pair *na = realloc(pairs, nc * sizeof(*na));
            if (!na)
                goto fail;
            pairs = na;
            cappairs = nc;
        }
        for (uint16_t k = 0; k < x.labels->n; k++) {
            uint32_t a = sym_find(syms, nsym, x.labels->l[k].name),
                     v = sym_find(syms, nsym, x.labels->l[k].value);
            if (a == UINT32_MAX || v == UINT32_MAX) {
                snprintf(err, errlen, "a label missing from the block's symbols");
                r = -EINVAL;
                goto fail;
            }
            put_uv(&rec, a);
            put_uv(&rec, v);
            pairs[np++] = (struct pair){ a, v, nser };
        }
        put_uv(&rec, x.nchunks);
        uint64_t off = ck.off;
        uLong crc = crc32(0L, Z_NULL, 0);
        if (x.nchunks > capout) {
            size_t nc = capout ? capout * 2 : 64;
            while (nc < x.nchunks)
                nc *= 2;
            struct tsdb_sealed *na = realloc(outc, nc * sizeof(*na));
            if (!na)
                goto fail;
            outc = na;
            capout = nc;
        }
        for (uint32_t c = 0; c < x.nchunks; c++) {
            struct tsdb_sealed o = x.chunks[c];
            uint8_t *re = NULL;
            uint32_t rb = o.enc == TSDB_ENC_XOR ? tsdb_chunk_recode(o.b, o.nbits, o.n, o.mint, &re) : 0;
            if (rb) {
                o.b = re;
                o.nbits = rb;
                o.enc = TSDB_ENC_DEC;
            }
            size_t bytes = (o.nbits + 7) / 8;
            crc = crc32_z(crc, o.b, bytes);
            ck_put(&ck, o.b, bytes);
            free(re);
            o.b = NULL;
            outc[c] = o;
            nsamples += o.n;
        }
        nchunks += x.nchunks;
        uint32_t c32 = (uint32_t)crc;
        buf_append(&rec, &c32, 4);
        put_uv(&rec, off);
        int64_t prev = mint;
        for (uint32_t c = 0; c < x.nchunks; c++) {
            put_zz(&rec, outc[c].mint - prev);
            put_uv(&rec, (uint64_t)(outc[c].maxt - outc[c].mint));
            put_uv(&rec, outc[c].nbits);
            put_uv(&rec, outc[c].n);
            put_uv(&rec, outc[c].enc);
            prev = outc[c].maxt;
        }
        static const uint8_t z[4];
        if (buf_used(&rec) % 4)
            buf_append(&rec, z, 4 - buf_used(&rec) % 4);
        nser++;
    }
    if (more < 0) {
        r = more;
        snprintf(err, errlen, "reading the source series: %s", strerror(-more));
        goto fail;
    }
    if (ck.bad || fflush(ck.f) || fdatasync(fileno(ck.f))) {
        r = errno ? -errno : -EIO;
        snprintf(err, errlen, "%s/chunks: %s", tmp, strerror(-r));
        goto fail;
    }
    fclose(ck.f);
    ck.f = NULL;
    qsort(pairs, np, sizeof(*pairs), cmp_pair);

    /* the index */
    uint8_t hdr[IX_HEADER] = { 0 };
    buf_append(&ix, hdr, sizeof(hdr));
    uint64_t sec[10];
    sec[0] = buf_used(&ix);     /* symbol offsets */
    uint32_t so = 0;
    for (uint32_t i = 0; i < nsym; i++) {
        buf_append(&ix, &so, 4);
        so += (uint32_t)strlen(syms[i]) + 1;
    }
    align8(&ix);
    sec[1] = buf_used(&ix);     /* symbol strings */
    for (uint32_t i = 0; i < nsym; i++)
        buf_append(&ix, syms[i], strlen(syms[i]) + 1);
    sec[2] = so;
    align8(&ix);
    sec[3] = buf_used(&ix);     /* series offsets */
    buf_append(&ix, buf_head(&seroff), buf_used(&seroff));
    align8(&ix);
    sec[4] = buf_used(&ix);     /* series records */
    buf_append(&ix, buf_head(&rec), buf_used(&rec));
    sec[5] = buf_used(&rec);
    align8(&ix);
    /* names and values from the sorted pairs; postings in the same order */
    uint32_t nnames = 0, nvals = 0;
    for (size_t i = 0; i < np;) {
        size_t j = i;
        uint32_t first_val = nvals;
        while (j < np && pairs[j].name == pairs[i].name) {
            size_t k = j;
            while (k < np && pairs[k].name == pairs[j].name && pairs[k].value == pairs[j].value)
                k++;
            if (buf_used(&post) > UINT32_MAX) {
                snprintf(err, errlen, "block postings too large");
                r = -E2BIG;
                goto fail;
            }
            struct tsdb_bval v = { pairs[j].value, (uint32_t)buf_used(&post), (uint32_t)(k - j) };
            buf_append(&vals, &v, sizeof(v));
            for (size_t q = j; q < k; q++)
                put_uv(&post, q == j ? pairs[q].series : pairs[q].series - pairs[q - 1].series);
            nvals++;
            j = k;
        }
        struct tsdb_bname nm = { pairs[i].name, first_val, nvals - first_val };
        buf_append(&names, &nm, sizeof(nm));
        nnames++;
        i = j;
    }
    sec[6] = buf_used(&ix);
    buf_append(&ix, buf_head(&names), buf_used(&names));
    align8(&ix);
    sec[7] = buf_used(&ix);
    buf_append(&ix, buf_head(&vals), buf_used(&vals));
    align8(&ix);
    sec[8] = buf_used(&ix);
    buf_append(&ix, buf_head(&post), buf_used(&post));
    align8(&ix);
    sec[9] = buf_used(&ix);
    if (nparents)
        buf_append(&ix, parents, (size_t)nparents * TSDB_ULID_LEN);
    align8(&ix);
    if (buf_used(&ix) < IX_HEADER) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* the header, then the trailer */
    uint32_t version = IX_VERSION, zero = 0;
    uint64_t npost = buf_used(&post);     /* bytes */
    put_at(&ix, 0, IX_MAGIC, 8);
    put_at(&ix, 8, &version, 4);
    put_at(&ix, 12, &level, 4);
    put_at(&ix, 16, &mint, 8);
    put_at(&ix, 24, &maxt, 8);
    put_at(&ix, 32, &nsamples, 8);
    put_at(&ix, 40, &nchunks, 8);
    put_at(&ix, 48, &nsym, 4);
    put_at(&ix, 52, &nser, 4);
    put_at(&ix, 56, &nnames, 4);
    put_at(&ix, 60, &nvals, 4);
    put_at(&ix, 64, &npost, 8);
    put_at(&ix, 72, &nparents, 4);
    put_at(&ix, 76, &zero, 4);
    put_at(&ix, 80, sec, sizeof(sec));
    uint32_t crc = (uint32_t)crc32_z(0L, (const Bytef *)buf_head(&ix), buf_used(&ix));
    buf_append(&ix, &crc, 4);
    if (buf_append(&ix, "CXND", 4) || buf_used(&rec) != sec[5]) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/index", tmp);
    if ((r = write_file(path, buf_head(&ix), buf_used(&ix)))) {
        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        goto fail;
    }
    struct buf meta = BUF_INIT;
    buf_printf(&meta, "{\"ulid\":\"%s\",\"minTime\":%lld,\"maxTime\":%lld,\"stats\":{\"numSamples\":%llu,"
                      "\"numSeries\":%u,\"numChunks\":%llu},\"compaction\":{\"level\":%u,\"parents\":[",
               ulid, (long long)mint, (long long)maxt, (unsigned long long)nsamples, nser,
               (unsigned long long)nchunks, level);
    for (uint32_t i = 0; i < nparents; i++)
        buf_printf(&meta, "%s\"%.*s\"", i ? "," : "", TSDB_ULID_LEN, parents + (size_t)i * TSDB_ULID_LEN);
    buf_puts(&meta, "]},\"format\":\"cairn-block-1\"}\n");
    snprintf(path, sizeof(path), "%s/meta.json", tmp);
    r = write_file(path, buf_head(&meta), buf_used(&meta));
    buf_free(&meta);
    if (r) {
        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        goto fail;
    }
    sync_dir(tmp);
    if (rename(tmp, final)) {
        r = -errno;
        snprintf(err, errlen, "%s: %s", final, strerror(errno));
        goto fail;
    }
    sync_dir(parent);
    r = 0;
    made_dir = false;
fail:
    if (ck.f)
        fclose(ck.f);
    if (made_dir)
        rm_tree(tmp);
    if (r == -ENOMEM && err[0] == 0)
        snprintf(err, errlen, "out of memory");
    buf_free(&ix);
    buf_free(&rec);
    buf_free(&seroff);
    buf_free(&names);
    buf_free(&vals);
    buf_free(&post);
    free(pairs);
    free(outc);
    return r;
}

struct arr_src {
    const struct tsdb_bw_series *s;
    size_t n, i;
};

static int arr_next(void *arg, struct tsdb_bw_series *out)
{
    struct arr_src *a = arg;
    if (a->i == a->n)
        return 0;
    *out = a->s[a->i++];
    return 1;
}

int tsdb_block_write(const char *parent, int64_t mint, int64_t maxt, uint32_t level,
                     const char *parents, uint32_t nparents, const struct tsdb_bw_series *s,
                     size_t n, char ulid[TSDB_ULID_LEN + 1], char *err, size_t errlen)
{
    size_t nl = 0;
    for (size_t i = 0; i < n; i++)
        nl += s[i].labels->n;
    const char **syms = malloc((2 * nl + 1) * sizeof(*syms));
    if (!syms) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    size_t ns = 0;
    for (size_t i = 0; i < n; i++)
        for (uint16_t k = 0; k < s[i].labels->n; k++) {
            syms[ns++] = s[i].labels->l[k].name;
            syms[ns++] = s[i].labels->l[k].value;
        }
    qsort(syms, ns, sizeof(*syms), cmp_strp);
    uint32_t nsym = 0;
    for (size_t i = 0; i < ns; i++)
        if (!nsym || strcmp(syms[nsym - 1], syms[i]))
            syms[nsym++] = syms[i];
    struct arr_src a = { s, n, 0 };
    struct tsdb_bw_src src = { syms, nsym, arr_next, &a };
    int r = tsdb_block_write_src(parent, mint, maxt, level, parents, nparents, &src, ulid, err,
                                 errlen);
    free(syms);
    return r;
}

/* ---- reading ---- */

static int bad(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "damaged block index: %s", what);
    return -EINVAL;
}

int tsdb_block_series(const struct tsdb_block *b, uint32_t id, struct tsdb_bseries *out)
{
    size_t o = (size_t)b->seroff[id] * 4;
    struct dec d = { b->serdata + o, b->serdata + b->serlen, false };
    uint64_t nl = get_uv(&d);
    if (nl > TSDB_MAX_LABELS)
        return -EINVAL;
    out->nlabels = (uint16_t)nl;
    for (uint64_t i = 0; i < 2 * nl; i++) {
        uint64_t v = get_uv(&d);
        out->lsym[i] = v < b->nsym ? (uint32_t)v : 0;
        if (v >= b->nsym)
            d.bad = true;
    }
    uint64_t nc = get_uv(&d);
    out->nchunks = nc <= UINT32_MAX ? (uint32_t)nc : 0;
    out->crc = get_u32(&d);
    out->off = get_uv(&d);
    out->meta = d.p;
    out->metalen = (size_t)(d.end - d.p);
    /* the time range and the byte length, from the chunk metadata */
    int64_t prev = b->mint;
    uint64_t len = 0;
    out->mint = INT64_MAX;
    out->maxt = INT64_MIN;
    for (uint32_t c = 0; c < out->nchunks && !d.bad; c++) {
        int64_t cmin, cmax;
        uint64_t span;
        bool over = __builtin_add_overflow(prev, get_zz(&d), &cmin);
        span = get_uv(&d);
        uint64_t nbits = get_uv(&d), ns = get_uv(&d), enc = get_uv(&d);
        over |= enc > TSDB_ENC_DEC;
        over |= span > (uint64_t)INT64_MAX || __builtin_add_overflow(cmin, (int64_t)span, &cmax);
        /* every chunk inside the block's range, so readers' arithmetic cannot overflow */
        if (over || cmin < b->mint || cmax > b->maxt || nbits > UINT32_MAX || ns == 0 ||
            ns > UINT16_MAX) {
            d.bad = true;
            break;
        }
        if (c == 0)
            out->mint = cmin;
        out->maxt = cmax;
        len += (nbits + 7) / 8;
        prev = cmax;
    }
    out->len = len;
    return d.bad ? -EINVAL : 0;
}

uint32_t tsdb_block_chunks(struct tsdb_block *b, const struct tsdb_bseries *s,
                           struct tsdb_sealed *out)
{
    if (s->off > b->cklen || s->len > b->cklen - s->off)
        return 0;
    if ((uint32_t)crc32_z(0L, b->ck + s->off, s->len) != s->crc) {
        if (!__atomic_fetch_add(&b->bad_chunks, 1, __ATOMIC_RELAXED))
            log_error("block chunks fail their CRC; those samples are skipped", "block",
                      b->dir ? b->dir : b->ulid);
        return 0;
    }
    struct dec d = { s->meta, s->meta + s->metalen, false };
    int64_t prev = b->mint;
    uint64_t off = s->off;
    for (uint32_t c = 0; c < s->nchunks; c++) {
        int64_t cmin = prev + get_zz(&d);
        uint64_t span = get_uv(&d), nbits = get_uv(&d), ns = get_uv(&d), enc = get_uv(&d);
        out[c] = (struct tsdb_sealed){ (uint8_t *)(uintptr_t)(b->ck + off), (uint32_t)nbits,
                                       (uint16_t)ns, cmin, cmin + (int64_t)span, (uint8_t)enc };
        off += (nbits + 7) / 8;
        prev = cmin + (int64_t)span;
    }
    return d.bad ? 0 : s->nchunks;
}

static int check_index(struct tsdb_block *b, char *err, size_t errlen)
{
    const uint8_t *p = b->ix;
    size_t len = b->ixlen;
    if (len < IX_HEADER + IX_TRAILER || memcmp(p, IX_MAGIC, 8) ||
        memcmp(p + len - 4, "CXND", 4))
        return bad(err, errlen, "not a cairn block index (magic)");
    uint32_t crc, version;
    memcpy(&crc, p + len - 8, 4);
    if ((uint32_t)crc32_z(0L, p, len - 8) != crc)
        return bad(err, errlen, "checksum mismatch");
    memcpy(&version, p + 8, 4);
    if (version != IX_VERSION)
        return bad(err, errlen, "unknown version");
    memcpy(&b->level, p + 12, 4);
    memcpy(&b->mint, p + 16, 8);
    memcpy(&b->maxt, p + 24, 8);
    memcpy(&b->nsamples, p + 32, 8);
    memcpy(&b->nchunks, p + 40, 8);
    memcpy(&b->nsym, p + 48, 4);
    memcpy(&b->nser, p + 52, 4);
    memcpy(&b->nnames, p + 56, 4);
    memcpy(&b->nvals, p + 60, 4);
    memcpy(&b->npost, p + 64, 8);
    memcpy(&b->nparents, p + 72, 4);
    uint64_t sec[10];
    memcpy(sec, p + 80, sizeof(sec));
    size_t end = len - IX_TRAILER;
    if (b->mint > b->maxt)
        return bad(err, errlen, "time range");
    /* each section inside the file, aligned, and its length from the counts */
    const uint64_t need[10][2] = {
        { sec[0], (uint64_t)b->nsym * 4 }, { sec[1], sec[2] }, { sec[1], 0 },
        { sec[3], (uint64_t)b->nser * 4 }, { sec[4], sec[5] }, { sec[4], 0 },
        { sec[6], (uint64_t)b->nnames * sizeof(struct tsdb_bname) },
        { sec[7], (uint64_t)b->nvals * sizeof(struct tsdb_bval) },
        { sec[8], b->npost }, { sec[9], (uint64_t)b->nparents * TSDB_ULID_LEN },
    };
    for (int i = 0; i < 10; i++)
        if (need[i][0] % 8 || need[i][0] < IX_HEADER || need[i][0] > end ||
            need[i][1] > end - need[i][0])
            return bad(err, errlen, "section out of bounds");
    b->symoff = (const uint32_t *)(p + sec[0]);
    b->symdata = (const char *)(p + sec[1]);
    b->symlen = sec[2];
    b->seroff = (const uint32_t *)(p + sec[3]);
    b->serdata = p + sec[4];
    b->serlen = sec[5];
    b->names = (const struct tsdb_bname *)(p + sec[6]);
    b->vals = (const struct tsdb_bval *)(p + sec[7]);
    b->post = p + sec[8];
    b->parents = (const char *)(p + sec[9]);
    /* symbols: NUL-terminated inside the table, strictly increasing */
    if (b->nsym && (b->symlen == 0 || b->symdata[b->symlen - 1] != 0))
        return bad(err, errlen, "symbol table");
    for (uint32_t i = 0; i < b->nsym; i++) {
        if (b->symoff[i] >= b->symlen)
            return bad(err, errlen, "symbol offset");
        if (i && strcmp(tsdb_block_sym(b, i - 1), tsdb_block_sym(b, i)) >= 0)
            return bad(err, errlen, "symbol order");
    }
    /* series: each record decodes, labels sorted by name, chunks inside the file */
    struct tsdb_bseries s;
    uint32_t keep[2 * TSDB_MAX_LABELS];
    const uint32_t *prev_l = NULL;
    uint16_t prev_n = 0;
    uint64_t chunks = 0;
    for (uint32_t i = 0; i < b->nser; i++) {
        if ((uint64_t)b->seroff[i] * 4 >= b->serlen)
            return bad(err, errlen, "series offset");
        if (tsdb_block_series(b, i, &s) || s.nchunks == 0 || s.nlabels == 0)
            return bad(err, errlen, "series record");
        for (uint16_t k = 1; k < s.nlabels; k++)
            if (s.lsym[2 * k - 2] >= s.lsym[2 * k])
                return bad(err, errlen, "label order");
        if (s.mint < b->mint || s.maxt > b->maxt)
            return bad(err, errlen, "chunk outside the block's time range");
        if (s.off < 8 || s.off > b->cklen || s.len > b->cklen - s.off)
            return bad(err, errlen, "chunk outside the chunks file");
        /* series sorted by labels: by symbol number, which sorts as the strings do */
        if (prev_l) {
            int c = 0;
            for (uint16_t k = 0; !c && k < 2 * s.nlabels && k < 2 * prev_n; k++)
                c = prev_l[k] < s.lsym[k] ? -1 : prev_l[k] > s.lsym[k];
            if (c > 0 || (c == 0 && prev_n >= s.nlabels))
                return bad(err, errlen, "series order");
        }
        memcpy(keep, s.lsym, 2u * s.nlabels * 4);
        prev_l = keep;
        prev_n = s.nlabels;
        chunks += s.nchunks;
    }
    if (chunks != b->nchunks)
        return bad(err, errlen, "chunk count");
    /* names and values sorted, postings inside and ascending */
    uint64_t nv = 0, npost = 0;
    for (uint32_t i = 0; i < b->nnames; i++) {
        const struct tsdb_bname *nm = &b->names[i];
        if (nm->name >= b->nsym || (i && b->names[i - 1].name >= nm->name) || nm->first != nv ||
            nm->n == 0 || (uint64_t)nm->first + nm->n > b->nvals)
            return bad(err, errlen, "label name table");
        for (uint32_t k = nm->first; k < nm->first + nm->n; k++) {
            const struct tsdb_bval *v = &b->vals[k];
            if (v->value >= b->nsym || (k > nm->first && b->vals[k - 1].value >= v->value) ||
                v->first != npost || v->n == 0 || v->n > b->nser)
                return bad(err, errlen, "label value table");
            /* the list decodes inside the section to ascending series numbers */
            struct dec d = { b->post + npost, b->post + b->npost, false };
            uint64_t id = 0;
            for (uint32_t j = 0; j < v->n && !d.bad; j++) {
                uint64_t x = get_uv(&d);
                if ((j && x == 0) || x >= b->nser || (id += x) >= b->nser)
                    return bad(err, errlen, "postings");
            }
            if (d.bad)
                return bad(err, errlen, "postings");
            npost = (uint64_t)(d.p - b->post);
        }
        nv += nm->n;
    }
    if (nv != b->nvals || npost != b->npost)
        return bad(err, errlen, "table sizes");
    for (uint64_t i = 0; i < (uint64_t)b->nparents * TSDB_ULID_LEN; i++)
        if (!strchr("0123456789ABCDEFGHJKMNPQRSTVWXYZ", b->parents[i]) || !b->parents[i])
            return bad(err, errlen, "parent list");
    return 0;
}

int tsdb_block_open_mem(struct tsdb_block *b, const uint8_t *ix, size_t ixlen, const uint8_t *ck,
                        size_t cklen, char *err, size_t errlen)
{
    memset(b, 0, sizeof(*b));
    b->ix = ix;
    b->ixlen = ixlen;
    b->ck = ck;
    b->cklen = cklen;
    if (cklen < 8 || memcmp(ck, CK_MAGIC, 8)) {
        snprintf(err, errlen, "damaged block: not a cairn chunks file (magic)");
        return -EINVAL;
    }
    if ((uintptr_t)ix % 8)
        return bad(err, errlen, "not aligned in memory");
    b->bytes = ixlen + cklen;
    return check_index(b, err, errlen);
}

static int map_file(const char *path, const uint8_t **p, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        int e = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return e;
    }
    if (st.st_size < 8) {
        close(fd);
        snprintf(err, errlen, "%s: damaged block: file too short", path);
        return -EINVAL;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "%s: mmap: %s", path, strerror(errno));
        return -errno;
    }
    *p = m;
    *len = (size_t)st.st_size;
    return 0;
}

int tsdb_block_open(struct tsdb_block *b, const char *dir, char *err, size_t errlen)
{
    char path[4300];
    const uint8_t *ix = NULL, *ck = NULL;
    size_t ixlen = 0, cklen = 0;
    snprintf(path, sizeof(path), "%s/index", dir);
    int r = map_file(path, &ix, &ixlen, err, errlen);
    if (r == 0) {
        snprintf(path, sizeof(path), "%s/chunks", dir);
        r = map_file(path, &ck, &cklen, err, errlen);
    }
    if (r == 0) {
        char e2[256];
        r = tsdb_block_open_mem(b, ix, ixlen, ck, cklen, e2, sizeof(e2));
        if (r)
            snprintf(err, errlen, "%s: %s", dir, e2);
    }
    if (r) {
        if (ix)
            munmap((void *)(uintptr_t)ix, ixlen);
        if (ck)
            munmap((void *)(uintptr_t)ck, cklen);
        memset(b, 0, sizeof(*b));
        return r;
    }
    b->mapped = true;
    b->dir = strdup(dir);
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    snprintf(b->ulid, sizeof(b->ulid), "%s", base);
    if (!b->dir) {
        tsdb_block_close(b);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

void tsdb_block_close(struct tsdb_block *b)
{
    if (b->mapped) {
        munmap((void *)(uintptr_t)b->ix, b->ixlen);
        munmap((void *)(uintptr_t)b->ck, b->cklen);
    }
    free(b->dir);
    memset(b, 0, sizeof(*b));
}

/* ---- lookups ---- */

int64_t tsdb_block_name(const struct tsdb_block *b, const char *name)
{
    uint32_t lo = 0, hi = b->nnames;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(tsdb_block_sym(b, b->names[mid].name), name);
        if (!c)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

const struct tsdb_bval *tsdb_block_postings(const struct tsdb_block *b, const char *name,
                                            const char *value)
{
    int64_t ni = tsdb_block_name(b, name);
    if (ni < 0)
        return NULL;
    const struct tsdb_bname *nm = &b->names[ni];
    uint32_t lo = nm->first, hi = nm->first + nm->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(tsdb_block_sym(b, b->vals[mid].value), value);
        if (!c)
            return &b->vals[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

uint32_t tsdb_block_postings_decode(const struct tsdb_block *b, const struct tsdb_bval *v,
                                    uint32_t *out)
{
    struct dec d = { b->post + v->first, b->post + b->npost, false };
    uint64_t id = 0;
    uint32_t k = 0;
    for (; k < v->n; k++) {
        id += get_uv(&d);
        if (d.bad || id >= b->nser)
            break;              /* not after the open's check */
        out[k] = (uint32_t)id;
    }
    return k;
}

size_t tsdb_block_select(const struct tsdb_block *b, const struct tsdb_matcher *m, size_t nm,
                         uint32_t **out)
{
    *out = NULL;
    const struct tsdb_bval *best = NULL;
    for (size_t i = 0; i < nm; i++)
        if (m[i].op == TSDB_EQ && m[i].value[0]) {
            const struct tsdb_bval *v = tsdb_block_postings(b, m[i].name, m[i].value);
            if (!v)
                return 0;
            if (!best || v->n < best->n)
                best = v;
        }
    bool have_eq = best != NULL;
    uint32_t cand = have_eq ? best->n : b->nser;
    uint32_t *res = malloc((cand ? cand : 1) * sizeof(*res));
    if (!res)
        return 0;
    if (have_eq)
        cand = tsdb_block_postings_decode(b, best, res);
    size_t k = 0;
    struct tsdb_bseries s;
    for (uint32_t i = 0; i < cand; i++) {
        uint32_t id = have_eq ? res[i] : i;
        if (tsdb_block_series(b, id, &s))
            continue;
        bool ok = true;
        for (size_t j = 0; j < nm && ok; j++) {
            const char *v = "";
            for (uint16_t l = 0; l < s.nlabels; l++)
                if (!strcmp(tsdb_block_sym(b, s.lsym[2 * l]), m[j].name)) {
                    v = tsdb_block_sym(b, s.lsym[2 * l + 1]);
                    break;
                }
            ok = tsdb_matcher_matches(&m[j], v);
        }
        if (ok)
            res[k++] = id;
    }
    if (!k) {
        free(res);
        return 0;
    }
    *out = res;
    return k;
}
