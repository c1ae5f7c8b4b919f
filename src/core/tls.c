/* tls.c - OpenSSL 3 server and client contexts, non-blocking I/O. */
#include "core/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

struct tls_ctx {
    SSL_CTX **ctxs;         /* server: one per certificate; client: one */
    X509 **certs;           /* leaf of each, for SNI matching */
    size_t n;
    unsigned char *alpn;    /* wire format */
    size_t alpn_len;
};

static void ssl_err(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char msg[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, msg, sizeof(msg));
    ERR_clear_error();
    snprintf(err, errlen, "%s%s%s: %s", what, path ? " " : "", path ? path : "", msg);
}

static int alpn_encode(struct tls_ctx *t, const char *const *alpn, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(alpn[i]);
        if (l == 0 || l > 255)
            return -EINVAL;
        len += 1 + l;
    }
    if (!len)
        return 0;
    t->alpn = malloc(len);
    if (!t->alpn)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(alpn[i]);
        t->alpn[o++] = (unsigned char)l;
        memcpy(t->alpn + o, alpn[i], l);
        o += l;
    }
    t->alpn_len = len;
    return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    struct tls_ctx *t = arg;
    UNUSED(ssl);
    if (!t->alpn_len)
        return SSL_TLSEXT_ERR_NOACK;
    /* Server preference: first of ours that the client offers. */
    for (size_t o = 0; o < t->alpn_len; o += 1 + t->alpn[o]) {
        for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
            if (in[i] == t->alpn[o] && i + 1u + in[i] <= inlen &&
                memcmp(in + i + 1, t->alpn + o + 1, in[i]) == 0) {
                *out = in + i + 1;
                *outlen = in[i];
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int sni_select(SSL *ssl, int *al, void *arg)
{
    struct tls_ctx *t = arg;
    UNUSED(al);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || t->n < 2)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < t->n; i++) {
        if (X509_check_host(t->certs[i], name, 0, 0, NULL) == 1) {
            if (i)
                SSL_set_SSL_CTX(ssl, t->ctxs[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK;   /* default certificate */
}

static SSL_CTX *base_ctx(bool server)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!c)
        return NULL;
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Read as much as the socket has, not a record header then its body: one
     * read() per request instead of two. The server side's readers all read on
     * until OpenSSL wants more (bytes it holds raise no epoll edge). */
    if (server)
        SSL_CTX_set_read_ahead(c, 1);
    return c;
}

int tls_server_new(struct tls_ctx **out, const struct tls_cert_conf *certs, size_t ncerts,
                   const char *const *alpn, size_t nalpn, char *err, size_t errlen)
{
    struct tls_ctx *t = calloc(1, sizeof(*t));
    if (!t || ncerts == 0) {
        free(t);
        snprintf(err, errlen, ncerts ? "out of memory" : "no certificate given");
        return ncerts ? -ENOMEM : -EINVAL;
    }
    t->ctxs = calloc(ncerts, sizeof(*t->ctxs));
    t->certs = calloc(ncerts, sizeof(*t->certs));
    if (!t->ctxs || !t->certs || alpn_encode(t, alpn, nalpn)) {
        snprintf(err, errlen, "out of memory or bad ALPN name");
        goto fail;
    }
    for (size_t i = 0; i < ncerts; i++) {
        SSL_CTX *c = base_ctx(true);
        if (!c) {
            ssl_err(err, errlen, "SSL_CTX_new", NULL);
            goto fail;
        }
        t->ctxs[i] = c;
        t->n = i + 1;
        if (SSL_CTX_use_certificate_chain_file(c, certs[i].cert) != 1) {
            ssl_err(err, errlen, "cannot load certificate", certs[i].cert);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(c, certs[i].key, SSL_FILETYPE_PEM) != 1) {
            ssl_err(err, errlen, "cannot load key", certs[i].key);
            goto fail;
        }
        if (SSL_CTX_check_private_key(c) != 1) {
            ssl_err(err, errlen, "key does not match certificate", certs[i].cert);
            goto fail;
        }
        t->certs[i] = SSL_CTX_get0_certificate(c);
        SSL_CTX_set_alpn_select_cb(c, alpn_select, t);
        SSL_CTX_set_tlsext_servername_callback(c, sni_select);
        SSL_CTX_set_tlsext_servername_arg(c, t);
        SSL_CTX_set_session_id_context(c, (const unsigned char *)"cairn", 5);
    }
    *out = t;
    return 0;
fail:
    tls_ctx_free(&t);
    return -EINVAL;
}

int tls_client_new(struct tls_ctx **out, bool verify, const char *ca_file,
                   const char *const *alpn, size_t nalpn, char *err, size_t errlen)
{
    struct tls_ctx *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->ctxs = calloc(1, sizeof(*t->ctxs));
    if (!t->ctxs || alpn_encode(t, alpn, nalpn)) {
        snprintf(err, errlen, "out of memory or bad ALPN name");
        goto fail;
    }
    SSL_CTX *c = base_ctx(false);
    if (!c) {
        ssl_err(err, errlen, "SSL_CTX_new", NULL);
        goto fail;
    }
    t->ctxs[0] = c;
    t->n = 1;
    if (verify) {
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
        int ok = ca_file ? SSL_CTX_load_verify_locations(c, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(c);
        if (ok != 1) {
            ssl_err(err, errlen, "cannot load CA", ca_file);
            goto fail;
        }
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    }
    if (t->alpn_len)
        SSL_CTX_set_alpn_protos(c, t->alpn, (unsigned)t->alpn_len);
    *out = t;
    return 0;
fail:
    tls_ctx_free(&t);
    return -EINVAL;
}

int tls_client_use_cert(struct tls_ctx *t, const char *cert, const char *key, char *err,
                        size_t errlen)
{
    SSL_CTX *c = t->ctxs[0];
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1) {
        ssl_err(err, errlen, "cannot load certificate", cert);
        return -EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(c) != 1) {
        ssl_err(err, errlen, "cannot load key", key);
        return -EINVAL;
    }
    return 0;
}

int tls_conn_verify_ip(SSL *ssl, const char *ip)
{
    X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
    return X509_VERIFY_PARAM_set1_ip_asc(p, ip) == 1 ? 0 : -EINVAL;
}

void tls_ctx_free(struct tls_ctx **pt)
{
    struct tls_ctx *t = *pt;
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        SSL_CTX_free(t->ctxs[i]);
    free(t->ctxs);
    free(t->certs);
    free(t->alpn);
    free(t);
    *pt = NULL;
}

SSL *tls_conn_new(struct tls_ctx *t, int fd, bool server, const char *sni)
{
    SSL *ssl = SSL_new(t->ctxs[0]);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (sni && *sni) {
            SSL_set_tlsext_host_name(ssl, sni);
            if (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER)
                SSL_set1_host(ssl, sni);
        }
    }
    return ssl;
}

void tls_conn_free(SSL **ssl)
{
    if (*ssl) {
        SSL_free(*ssl);
        *ssl = NULL;
    }
}

static int map_error(SSL *ssl, int ret)
{
    int e = SSL_get_error(ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return errno ? -errno : -EPIPE;
    default:
        ERR_clear_error();
        return -EPROTO;
    }
}

int tls_handshake(SSL *ssl)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 0;
    r = map_error(ssl, r);
    return r == 0 ? -EPROTO : r;
}

ssize_t tls_read(SSL *ssl, void *buf, size_t len)
{
    size_t n = 0;
    ERR_clear_error();
    int r = SSL_read_ex(ssl, buf, len, &n);
    if (r == 1)
        return (ssize_t)n;
    return map_error(ssl, r);
}

ssize_t tls_write(SSL *ssl, const void *buf, size_t len)
{
    size_t n = 0;
    ERR_clear_error();
    int r = SSL_write_ex(ssl, buf, len, &n);
    if (r == 1)
        return (ssize_t)n;
    r = map_error(ssl, r);
    return r == 0 ? -EPIPE : r;
}

void tls_alpn(SSL *ssl, char *out, size_t outlen)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    snprintf(out, outlen, "%.*s", (int)n, p ? (const char *)p : "");
}

int tls_make_self_signed(const char *cert_path, const char *key_path, const char *cn,
                         char *err, size_t errlen)
{
    int ret = -EINVAL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (!key || !x) {
        ssl_err(err, errlen, "key generation", NULL);
        goto out;
    }
    X509_set_version(x, 2);
    unsigned char serial[16];
    cairn_random(serial, sizeof(serial));
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"cairn", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    char san[512];
    snprintf(san, sizeof(san), "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", cn);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (!ext || !X509_add_ext(x, ext, -1)) {
        X509_EXTENSION_free(ext);
        ssl_err(err, errlen, "certificate extension", NULL);
        goto out;
    }
    X509_EXTENSION_free(ext);
    if (!X509_sign(x, key, EVP_sha256())) {
        ssl_err(err, errlen, "certificate signing", NULL);
        goto out;
    }
    f = fopen(key_path, "w");
    if (!f || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) {
        snprintf(err, errlen, "cannot write %s: %s", key_path, strerror(errno));
        goto out;
    }
    fclose(f);
    f = fopen(cert_path, "w");
    if (!f || !PEM_write_X509(f, x)) {
        snprintf(err, errlen, "cannot write %s: %s", cert_path, strerror(errno));
        goto out;
    }
    ret = 0;
out:
    if (f)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
    return ret;
}
