/* bk_crypto.c - restic's encryption: AES-256-CTR with a Poly1305-AES MAC over the
 * ciphertext, IV || CIPHERTEXT || MAC, and the scrypt key derivation of key files.
 *
 * The 16-byte IV is the CTR counter block and the Poly1305 nonce: the one-time
 * Poly1305 key is r || AES-128_k(IV) (OpenSSL clamps r as the paper says). Thread
 * rules: none; every call sets up its own cipher contexts.
 */
#include "backup_internal.h"

#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

int bk_mac(const struct bk_key *k, const uint8_t iv[16], const uint8_t *msg, size_t n,
                        uint8_t tag[16])
{
    uint8_t key[32];
    int outl = 0, ok = 0;
    memcpy(key, k->mac_r, 16);
    EVP_CIPHER_CTX *ecb = EVP_CIPHER_CTX_new();
    if (!ecb)
        return -ENOMEM;
    if (EVP_EncryptInit_ex(ecb, EVP_aes_128_ecb(), NULL, k->mac_k, NULL) == 1 &&
        EVP_CIPHER_CTX_set_padding(ecb, 0) == 1 && EVP_EncryptUpdate(ecb, key + 16, &outl, iv, 16) == 1)
        ok = 1;
    EVP_CIPHER_CTX_free(ecb);
    if (!ok)
        return -EIO;
    ok = 0;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "POLY1305", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    size_t tl = 0;
    if (ctx && EVP_MAC_init(ctx, key, sizeof(key), NULL) == 1 && EVP_MAC_update(ctx, msg, n) == 1 &&
        EVP_MAC_final(ctx, tag, &tl, 16) == 1 && tl == 16)
        ok = 1;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    OPENSSL_cleanse(key, sizeof(key));
    return ok ? 0 : -EIO;
}

static int aes_ctr(const struct bk_key *k, const uint8_t iv[16], const uint8_t *in, size_t n, uint8_t *out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = 0;
    if (!ctx)
        return -ENOMEM;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_ctr(), NULL, k->enc, iv) == 1) {
        ok = 1;
        /* EVP lengths are ints: feed at most 1 GiB at a time */
        for (size_t done = 0; done < n && ok;) {
            size_t step = n - done > (1u << 30) ? (1u << 30) : n - done;
            int outl = 0;
            ok = EVP_EncryptUpdate(ctx, out + done, &outl, in + done, (int)step) == 1 && (size_t)outl == step;
            done += step;
        }
    }
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -EIO;
}

int bk_seal(const struct bk_key *k, const void *plain, size_t n, uint8_t *out)
{
    cairn_random(out, 16);
    int r = aes_ctr(k, out, plain, n, out + 16);
    if (!r)
        r = bk_mac(k, out, out + 16, n, out + 16 + n);
    return r;
}

int bk_open(const struct bk_key *k, const uint8_t *in, size_t n, uint8_t *out)
{
    uint8_t tag[16];
    if (n < BK_OVERHEAD)
        return -EBADMSG;
    size_t cl = n - BK_OVERHEAD;
    int r = bk_mac(k, in, in + 16, cl, tag);
    if (r)
        return r;
    if (CRYPTO_memcmp(tag, in + 16 + cl, 16) != 0)
        return -EBADMSG;
    return aes_ctr(k, in, in + 16, cl, out);
}

int bk_kdf(const char *pw, size_t pwlen, const uint8_t *salt, size_t saltlen, uint64_t N, uint32_t r,
           uint32_t p, struct bk_key *out)
{
    uint8_t k[64];
    /* scrypt needs 128 * N * r bytes (and p times that for its parallel lanes) */
    uint64_t maxmem = 128ULL * N * r * (p + 2) + (1u << 20);
    if (N < 2 || (N & (N - 1)) || r == 0 || p == 0 || N > (1ULL << 24) || r > 64 || p > 64)
        return -EINVAL;
    if (EVP_PBE_scrypt(pw, pwlen, salt, saltlen, N, r, p, maxmem, k, sizeof(k)) != 1)
        return -EIO;
    memcpy(out->enc, k, 32);
    memcpy(out->mac_k, k + 32, 16);
    memcpy(out->mac_r, k + 48, 16);
    bk_key_mask(out);
    OPENSSL_cleanse(k, sizeof(k));
    return 0;
}

void bk_key_mask(struct bk_key *k)
{
    static const uint8_t mask[16] = { 0xff, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f,
                                      0xfc, 0xff, 0xff, 0x0f, 0xfc, 0xff, 0xff, 0x0f };
    for (int i = 0; i < 16; i++)
        k->mac_r[i] &= mask[i];
}

void bk_sha256(const void *p, size_t n, bk_id *out)
{
    unsigned int l = 32;
    EVP_Digest(p, n, out->b, &l, EVP_sha256(), NULL);
}
