/* core/tls: TLS server (SNI, ALPN) and client, self-signed certificates. */
#include "http_test.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

TEST(tls_server_sni_alpn_and_client)
{
    struct tls_ctx *st = server_tls();
    if (!st)
        return;
    struct srv s;
    srv_start(&s, st);
    pthread_create(&s.th, NULL, srv_thread, &s);

    static const char *const names[] = { "b.test", "a.test", "other.test" };
    static const char *const want_cn[] = { "b.test", "a.test", "a.test" };
    for (int i = 0; i < 3; i++) {
        SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)"\x02h2\x08http/1.1", 12);
        int fd = dial(s.port);
        SSL *ssl = SSL_new(cctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, names[i]);
        CHECK_INT(SSL_connect(ssl), 1);
        X509 *peer = SSL_get1_peer_certificate(ssl);
        char cn[64] = "";
        if (peer)
            X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
        CHECK_STR(cn, want_cn[i]);
        X509_free(peer);
        char alpn[32];
        tls_alpn(ssl, alpn, sizeof(alpn));
        CHECK_STR(alpn, "http/1.1");
        CHECK(SSL_version(ssl) >= TLS1_2_VERSION);
        const char *req = "GET /tls HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n";
        SSL_write(ssl, req, (int)strlen(req));
        char buf[1024];
        int n, total = 0;
        while ((n = SSL_read(ssl, buf + total, (int)sizeof(buf) - 1 - total)) > 0)
            total += n;
        buf[total] = '\0';
        CHECK_CONTAINS(buf, "GET /tls body=0:");
        SSL_free(ssl);
        close(fd);
        SSL_CTX_free(cctx);
    }
    srv_stop(&s, true);
    tls_ctx_free(&st);
    CHECK(st == NULL);
}

TEST(tls_httpc_over_tls)
{
    struct tls_ctx *st = server_tls();
    if (!st)
        return;
    struct tls_ctx *ct = NULL;
    char err[256];
    CHECK_INT(tls_client_new(&ct, false, NULL, NULL, 0, err, sizeof(err)), 0);
    struct srv s;
    srv_start(&s, st);
    client_roundtrips(&s, ct);
    srv_stop(&s, false);
    tls_ctx_free(&ct);

    /* a verifying client trusts the server's self-signed cert as its CA */
    char ca[128];
    snprintf(ca, sizeof(ca), "%s/a.pem", tmpdir);
    CHECK_INT(tls_client_new(&ct, true, ca, NULL, 0, err, sizeof(err)), 0);
    srv_start(&s, st);
    client_roundtrips(&s, ct);
    srv_stop(&s, false);
    tls_ctx_free(&ct);
    tls_ctx_free(&st);
}

TEST(tls_bad_files_are_reported)
{
    struct tls_ctx *t = NULL;
    char err[256] = "";
    struct tls_cert_conf c = { "/nonexistent.pem", "/nonexistent.key" };
    CHECK(tls_server_new(&t, &c, 1, NULL, 0, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "/nonexistent.pem");
    CHECK(t == NULL);
}
