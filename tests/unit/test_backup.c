/* Unit tests for the backup role's engine (src/backup/): restic's crypto (the
 * Poly1305-AES and scrypt vectors of their papers, sealing and tampering), the
 * chunker's polynomials and cut rules, pack headers, trees, cron schedules and
 * the --keep-* policy. restic itself checks the whole in tests/integration. */
#include "backup/backup_conf.h"
#include "test.h"

#include <errno.h>
#include <stdlib.h>

static void unhex(const char *s, uint8_t *out)
{
    for (size_t i = 0; s[2 * i]; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

TEST(backup_poly1305_aes_vector)
{
    /* Bernstein, "The Poly1305-AES message-authentication code", appendix B, the
     * first example: a 2-byte message */
    struct bk_key k;
    uint8_t n[16], m[2], tag[16], want[16];
    memset(&k, 0, sizeof(k));
    unhex("ec074c835580741701425b623235add6", k.mac_k);
    unhex("851fc40c3467ac0be05cc20404f3f700", k.mac_r);
    unhex("fb447350c4e868c52ac3275cf9d4327e", n);
    unhex("f3f6", m);
    unhex("f4c633c3044fc145f84f335cb81953de", want);
    CHECK_INT(bk_mac(&k, n, m, sizeof(m), tag), 0);
    CHECK(memcmp(tag, want, 16) == 0);
}

TEST(backup_scrypt_vector)
{
    /* RFC 7914 section 12: scrypt("password", "NaCl", N=1024, r=8, p=16) */
    uint8_t want[64];
    unhex("fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
          "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640", want);
    struct bk_key k;
    CHECK_INT(bk_kdf("password", 8, (const uint8_t *)"NaCl", 4, 1024, 8, 16, &k), 0);
    CHECK(memcmp(k.enc, want, 32) == 0);
    CHECK(memcmp(k.mac_k, want + 32, 16) == 0);
    CHECK_INT(bk_kdf("password", 8, (const uint8_t *)"NaCl", 4, 1000, 8, 16, &k), -EINVAL);   /* not 2^n */
}

TEST(backup_seal_open)
{
    struct bk_key k;
    cairn_random(&k, sizeof(k));
    bk_key_mask(&k);
    const char msg[] = "a blob of restic's repository";
    uint8_t sealed[sizeof(msg) + BK_OVERHEAD], plain[sizeof(msg)];
    CHECK_INT(bk_seal(&k, msg, sizeof(msg), sealed), 0);
    CHECK(memcmp(sealed + 16, msg, sizeof(msg)) != 0);
    CHECK_INT(bk_open(&k, sealed, sizeof(sealed), plain), 0);
    CHECK(memcmp(plain, msg, sizeof(msg)) == 0);
    sealed[20] ^= 1;                                    /* a flipped bit in the ciphertext */
    CHECK_INT(bk_open(&k, sealed, sizeof(sealed), plain), -EBADMSG);
    sealed[20] ^= 1;
    sealed[3] ^= 1;                                     /* ... in the IV */
    CHECK_INT(bk_open(&k, sealed, sizeof(sealed), plain), -EBADMSG);
    CHECK_INT(bk_open(&k, sealed, 31, plain), -EBADMSG);
}

TEST(backup_polynomials)
{
    CHECK(bk_pol_irreducible(0x3DA3358B4DC173ULL));     /* restic's test polynomial */
    CHECK(!bk_pol_irreducible(0x4));                    /* x^2 = x * x */
    CHECK(!bk_pol_irreducible(0x5));                    /* x^2 + 1 = (x + 1)^2 */
    CHECK(bk_pol_irreducible(0x7));                     /* x^2 + x + 1 */
    for (int i = 0; i < 3; i++) {
        uint64_t p = bk_pol_random();
        CHECK(p >> 53 == 1);                            /* degree 53 */
        CHECK(bk_pol_irreducible(p));
    }
}

static size_t cuts(const uint8_t *p, size_t n, size_t *out, size_t max)
{
    struct bk_chunker c;
    CHECK_INT(bk_chunker_init(&c, 0x3DA3358B4DC173ULL), 0);
    size_t k = 0, pos = 0;
    while (pos < n && k < max) {
        /* feed in odd pieces: cut points must not depend on how reads fall */
        size_t step = 777777 < n - pos ? 777777 : n - pos;
        size_t cut = bk_chunker_next(&c, p + pos, step);
        if (cut) {
            pos += cut;
            out[k++] = pos;
        } else {
            pos += step;
        }
    }
    return k;
}

TEST(backup_chunker_cuts)
{
    size_t n = 40u << 20;
    uint8_t *data = malloc(n + 1000);
    CHECK(data != NULL);
    if (!data)
        return;
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n + 1000; i++) {             /* xorshift: reproducible */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    size_t a[128], b[128];
    size_t na = cuts(data, n, a, 128);
    CHECK(na > 10 && na < 80);                          /* about 1 MiB on average */
    for (size_t i = 0; i < na; i++) {
        size_t len = a[i] - (i ? a[i - 1] : 0);
        CHECK(len >= BK_MIN_CHUNK && len <= BK_MAX_CHUNK);
    }
    /* content-defined: 1000 bytes inserted at the front shift every later cut
     * once the chunker has found its first boundary again */
    memmove(data + 1000, data, n);
    size_t nb = cuts(data, n + 1000, b, 128);
    size_t same = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (b[j] == a[i] + 1000)
                same++;
    CHECK(same + 2 >= na);
    free(data);
}

/* restic's chunker as its source reads, one byte at a time with the window kept
 * in an array: the reference the fast one must agree with */
struct refchunker {
    uint64_t out[256], mod[256], digest;
    uint8_t win[64];
    unsigned wpos;
    size_t pre, count;
    int shift;
};

static void ref_slide(struct refchunker *c, uint8_t b)
{
    uint8_t o = c->win[c->wpos];
    c->win[c->wpos] = b;
    c->digest ^= c->out[o];
    c->wpos = (c->wpos + 1) % 64;
    c->digest = ((c->digest << 8) | b) ^ c->mod[c->digest >> c->shift];
}

static void ref_reset(struct refchunker *c)
{
    memset(c->win, 0, sizeof(c->win));
    c->wpos = 0;
    c->digest = 0;
    c->count = 0;
    ref_slide(c, 1);
    c->pre = BK_MIN_CHUNK - 64;
}

static size_t ref_cuts(const struct bk_chunker *fast, const uint8_t *p, size_t n, size_t *out, size_t max)
{
    struct refchunker c;
    memcpy(c.out, fast->out, sizeof(c.out));
    memcpy(c.mod, fast->mod, sizeof(c.mod));
    c.shift = fast->shift;
    ref_reset(&c);
    size_t k = 0;
    for (size_t i = 0; i < n && k < max; i++) {
        if (c.pre) {
            c.pre--;
            c.count++;
            continue;
        }
        ref_slide(&c, p[i]);
        c.count++;
        if (((c.digest & BK_SPLIT_MASK) == 0 || c.count >= BK_MAX_CHUNK) && c.count >= BK_MIN_CHUNK) {
            out[k++] = i + 1;
            ref_reset(&c);
        }
    }
    return k;
}

TEST(backup_chunker_matches_restics_algorithm)
{
    /* random data (cuts every ~1 MiB) and long zero runs (forced cuts at 8 MiB) */
    size_t n = 48u << 20;
    uint8_t *data = malloc(n);
    CHECK(data != NULL);
    if (!data)
        return;
    uint64_t x = 1234567;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    memset(data + (20u << 20), 0, 18u << 20);
    struct bk_chunker c;
    CHECK_INT(bk_chunker_init(&c, 0x3DA3358B4DC173ULL), 0);
    size_t a[128], b[128];
    size_t na = cuts(data, n, a, 128), nb = ref_cuts(&c, data, n, b, 128);
    CHECK_INT(na, nb);
    for (size_t i = 0; i < na && i < nb; i++)
        CHECK_INT(a[i], b[i]);
    free(data);
}

TEST(backup_pack_header)
{
    uint8_t h[41 + 37];
    memset(h, 0, sizeof(h));
    h[0] = 2;                                           /* compressed data blob */
    h[1] = 100;                                         /* length 100 */
    h[5] = 200;                                         /* uncompressed 200 */
    memset(h + 9, 0xab, 32);
    h[41] = 1;                                          /* tree blob */
    h[42] = 50;
    memset(h + 46, 0xcd, 32);
    struct bk_pack_blob *v;
    size_t n;
    CHECK_INT(bk_pack_header_parse(h, sizeof(h), &v, &n), 0);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK_INT(v[0].type, BK_BLOB_DATA);
        CHECK_INT(v[0].off, 0);
        CHECK_INT(v[0].len, 100);
        CHECK_INT(v[0].ulen, 200);
        CHECK_INT(v[1].type, BK_BLOB_TREE);
        CHECK_INT(v[1].off, 100);
        CHECK_INT(v[1].ulen, 0);
        CHECK(v[1].id.b[31] == 0xcd);
    }
    free(v);
    CHECK_INT(bk_pack_header_parse(h, sizeof(h) - 1, &v, &n), -EBADMSG);       /* cut short */
    h[41] = 7;
    CHECK_INT(bk_pack_header_parse(h, sizeof(h), &v, &n), -EBADMSG);           /* unknown type */
    h[41] = 1;
    h[42] = 5;
    CHECK_INT(bk_pack_header_parse(h, sizeof(h), &v, &n), -EBADMSG);           /* shorter than IV + MAC */
}

TEST(backup_tree_roundtrip)
{
    const char *json =
        "{\"nodes\":[{\"name\":\"a \\\"q\\\"\",\"type\":\"file\",\"mode\":420,\"mtime\":\"2020-09-13T12:26:40.123456789Z\","
        "\"atime\":\"2020-09-13T12:26:40Z\",\"ctime\":\"2020-09-13T12:26:40.5+02:00\",\"uid\":1,\"gid\":2,\"user\":\"u\","
        "\"inode\":7,\"size\":3,\"links\":1,\"extended_attributes\":[{\"name\":\"user.x\",\"value\":\"aGk=\"}],"
        "\"content\":[\"0000000000000000000000000000000000000000000000000000000000000001\"]},"
        "{\"name\":\"d\",\"type\":\"dir\",\"mode\":2147484141,\"mtime\":\"2020-09-13T12:26:40Z\",\"atime\":\"2020-09-13T12:26:40Z\","
        "\"ctime\":\"2020-09-13T12:26:40Z\",\"uid\":0,\"gid\":0,\"content\":null,"
        "\"subtree\":\"00000000000000000000000000000000000000000000000000000000000000ff\"},"
        "{\"name\":\"l\",\"type\":\"symlink\",\"mode\":134218239,\"mtime\":\"2020-09-13T12:26:40Z\",\"atime\":\"2020-09-13T12:26:40Z\","
        "\"ctime\":\"2020-09-13T12:26:40Z\",\"uid\":0,\"gid\":0,\"linktarget\":\"a\",\"content\":null}]}";
    struct bk_tree t, t2;
    char err[256];
    CHECK_INT(bk_tree_parse(json, strlen(json), &t, err, sizeof(err)), 0);
    CHECK_INT(t.n, 3);
    if (t.n != 3)
        return;
    CHECK_STR(t.nodes[0].name, "a \"q\"");
    CHECK_INT(t.nodes[0].mtime_ns, 1600000000123456789LL);
    CHECK_INT(t.nodes[0].ctime_ns, 1600000000500000000LL - 7200LL * 1000000000);
    CHECK_INT(t.nodes[0].ncontent, 1);
    CHECK_INT(t.nodes[0].nxattrs, 1);
    CHECK_INT(t.nodes[0].xattrs[0].len, 2);
    CHECK(t.nodes[1].type == BK_N_DIR && t.nodes[1].has_subtree && t.nodes[1].subtree.b[31] == 0xff);
    CHECK_STR(t.nodes[2].linktarget, "a");
    struct buf b = BUF_INIT;
    CHECK_INT(bk_tree_encode(&t, &b), 0);
    CHECK_INT(bk_tree_parse(buf_head(&b), buf_used(&b), &t2, err, sizeof(err)), 0);
    CHECK_INT(t2.n, 3);
    if (t2.n == 3) {
        CHECK_INT(t2.nodes[0].mtime_ns, t.nodes[0].mtime_ns);
        CHECK_INT(t2.nodes[0].ctime_ns, t.nodes[0].ctime_ns);
        CHECK(memcmp(t2.nodes[0].xattrs[0].value, "hi", 2) == 0);
        CHECK_INT(t2.nodes[1].mode, 2147484141u);
    }
    /* a file node always says its content list, empty or not */
    CHECK_CONTAINS(buf_head(&b), "\"content\":[\"");
    bk_tree_free(&t);
    bk_tree_free(&t2);
    buf_free(&b);
    /* names that would escape the restore target are refused */
    const char *bad = "{\"nodes\":[{\"name\":\"..\",\"type\":\"dir\"}]}";
    CHECK_INT(bk_tree_parse(bad, strlen(bad), &t, err, sizeof(err)), -EBADMSG);
    const char *bad2 = "{\"nodes\":[{\"name\":\"a/b\",\"type\":\"file\"}]}";
    CHECK_INT(bk_tree_parse(bad2, strlen(bad2), &t, err, sizeof(err)), -EBADMSG);
}

static struct tm at(int y, int mon, int d, int h, int m)
{
    struct tm tm = { 0 };
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    localtime_r(&t, &tm);
    return tm;
}

TEST(backup_cron)
{
    struct bk_cron c;
    char err[200];
    CHECK_INT(bk_cron_parse("*/15 9-17 * * mon-fri", &c, err, sizeof(err)), 0);
    struct tm wed = at(2026, 12, 2, 9, 30), sat = at(2026, 12, 5, 9, 30), wed8 = at(2026, 12, 2, 8, 30);
    CHECK(bk_cron_match(&c, &wed));
    CHECK(!bk_cron_match(&c, &sat));
    CHECK(!bk_cron_match(&c, &wed8));
    struct tm wed31 = at(2026, 12, 2, 9, 31);
    CHECK(!bk_cron_match(&c, &wed31));
    CHECK_INT(bk_cron_parse("@daily", &c, err, sizeof(err)), 0);
    struct tm mid = at(2026, 12, 3, 0, 0), one = at(2026, 12, 3, 0, 1);
    CHECK(bk_cron_match(&c, &mid));
    CHECK(!bk_cron_match(&c, &one));
    /* both day fields restricted: either matches (cron's rule) */
    CHECK_INT(bk_cron_parse("0 3 1,15 * 5", &c, err, sizeof(err)), 0);
    struct tm fri = at(2026, 12, 4, 3, 0), first = at(2026, 12, 1, 3, 0), thu = at(2026, 12, 3, 3, 0);
    CHECK(bk_cron_match(&c, &fri));
    CHECK(bk_cron_match(&c, &first));
    CHECK(!bk_cron_match(&c, &thu));
    CHECK_INT(bk_cron_parse("0 0 * * 7", &c, err, sizeof(err)), 0);            /* 7 is Sunday too */
    struct tm sun = at(2026, 12, 6, 0, 0);
    CHECK(bk_cron_match(&c, &sun));
    CHECK_INT(bk_cron_parse("61 * * * *", &c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "minute");
    CHECK_INT(bk_cron_parse("* * *", &c, err, sizeof(err)), -EINVAL);
    CHECK_INT(bk_cron_parse("* * * * * *", &c, err, sizeof(err)), -EINVAL);
    CHECK_INT(bk_cron_parse("5-1 * * * *", &c, err, sizeof(err)), -EINVAL);
    CHECK_INT(bk_cron_parse("*/0 * * * *", &c, err, sizeof(err)), -EINVAL);
    CHECK_INT(bk_cron_parse("* * * foo *", &c, err, sizeof(err)), -EINVAL);
}

TEST(backup_keep_policy)
{
    /* one snapshot every 6 hours over 10 days, oldest first */
    struct bk_snapshot s[40];
    bool keep[40];
    memset(s, 0, sizeof(s));
    int64_t t0 = (int64_t)mktime(&(struct tm){ .tm_year = 126, .tm_mon = 10, .tm_mday = 1, .tm_isdst = -1 });
    for (int i = 0; i < 40; i++)
        s[i].time_ns = (t0 + (int64_t)i * 6 * 3600) * 1000000000;
    struct bk_keep k = { .last = 2 };
    bk_keep_apply(&k, s, 40, keep);
    int n = 0;
    for (int i = 0; i < 40; i++)
        n += keep[i];
    CHECK_INT(n, 2);
    CHECK(keep[39] && keep[38]);
    struct bk_keep d = { .daily = 3 };
    bk_keep_apply(&d, s, 40, keep);
    n = 0;
    for (int i = 0; i < 40; i++)
        n += keep[i];
    CHECK_INT(n, 3);
    CHECK(keep[39] && keep[35] && keep[31]);            /* the newest of each of the last 3 days */
    struct bk_keep w = { .within_ms = 24ULL * 3600 * 1000 };
    bk_keep_apply(&w, s, 40, keep);
    n = 0;
    for (int i = 0; i < 40; i++)
        n += keep[i];
    CHECK_INT(n, 5);                                    /* the newest and 4 within a day of it */
    struct bk_keep all = { .daily = -1 };               /* -1: every day */
    bk_keep_apply(&all, s, 40, keep);
    n = 0;
    for (int i = 0; i < 40; i++)
        n += keep[i];
    CHECK_INT(n, 10);
}
