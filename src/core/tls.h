/* tls.h - TLS 1.2/1.3 with OpenSSL 3 on non-blocking sockets.
 *
 * A server context holds one or more certificates; the one presented is chosen by
 * the client's SNI name (matched against each certificate's names, wildcards
 * included), falling back to the first. ALPN is negotiated from the server's list
 * in its order of preference. Session resumption uses OpenSSL's stateless tickets.
 * A client context verifies peers against the system store or a CA file, or not
 * at all when asked (health checks against self-signed backends).
 *
 * I/O calls return a byte count, 0 for a clean close, -EAGAIN when the socket
 * must become ready first (either direction: callers watch both with EPOLLET), or
 * -EPROTO on a TLS failure.
 */
#ifndef CAIRN_TLS_H
#define CAIRN_TLS_H

#include "core/common.h"
#include <openssl/ssl.h>
#include <sys/types.h>

struct tls_ctx;

struct tls_cert_conf {
    const char *cert;   /* PEM chain file */
    const char *key;    /* PEM private key file */
};

/* Builds a server context. alpn lists protocol names ("h2", "http/1.1") in order of
 * preference, or NULL. On failure returns a negated errno and writes a message. */
int tls_server_new(struct tls_ctx **out, const struct tls_cert_conf *certs, size_t ncerts,
                   const char *const *alpn, size_t nalpn, char *err, size_t errlen);
/* Builds a client context; ca_file NULL means the system store. */
int tls_client_new(struct tls_ctx **out, bool verify, const char *ca_file,
                   const char *const *alpn, size_t nalpn, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx **ctx);
/* Gives a client context a certificate to present (mutual TLS). */
int tls_client_use_cert(struct tls_ctx *ctx, const char *cert, const char *key, char *err,
                        size_t errlen);
/* Client side: verify the peer's certificate against an IP address (no SNI). */
int tls_conn_verify_ip(SSL *ssl, const char *ip);

/* Wraps a connected socket. sni is the name to send (client) or NULL. */
SSL *tls_conn_new(struct tls_ctx *ctx, int fd, bool server, const char *sni);
void tls_conn_free(SSL **ssl);
int tls_handshake(SSL *ssl);                    /* 0 when done */
ssize_t tls_read(SSL *ssl, void *buf, size_t len);
ssize_t tls_write(SSL *ssl, const void *buf, size_t len);
/* Negotiated ALPN protocol into out ("" when none). */
void tls_alpn(SSL *ssl, char *out, size_t outlen);

/* Writes a new self-signed certificate (EC P-256, 10 years, SAN DNS:cn,
 * DNS:localhost, IP:127.0.0.1, IP:::1) and its key as PEM files. */
int tls_make_self_signed(const char *cert_path, const char *key_path, const char *cn,
                         char *err, size_t errlen);

#endif
