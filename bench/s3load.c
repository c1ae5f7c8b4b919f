/* s3load.c - an S3 load generator for bench/s3.sh: SigV4-signed requests
 * (UNSIGNED-PAYLOAD, as awscli sends over https) on keep-alive connections, one
 * request at a time per connection, THREADS threads with CONNS connections each.
 * Built there with cc ... -lcrypto -lpthread.
 *
 *   s3load PORT ACCESS SECRET BUCKET mb|put|get|list SIZE COUNT THREADS CONNS [PREFIX]
 *
 * mb: creates the bucket.
 * put: COUNT objects PREFIX<n> of SIZE bytes (spread over the connections);
 * get: COUNT GETs of objects PREFIX<n mod 1000>; list: ListObjectsV2 pages of
 * 1000 over PREFIX until the end, COUNT times. Prints "ops SECONDS BYTES" and
 * exits non-zero on any answer other than 200.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port, size, count, nthreads, nconns;
static const char *ak, *sk, *bucket, *op, *prefix = "obj";
static char *payload;
static long next_op;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long long total_bytes;
static int failed;

static void hex(const unsigned char *p, int n, char *out)
{
    for (int i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static void hmac(const void *k, int kl, const char *m, unsigned char out[32])
{
    unsigned l = 32;
    HMAC(EVP_sha256(), k, kl, (const unsigned char *)m, strlen(m), out, &l);
}

/* The Authorization header of a request with no query but query (already sorted
 * and encoded) and the signed headers host, x-amz-content-sha256, x-amz-date. */
static void sign(const char *method, const char *path, const char *query, const char *host,
                 const char *amzdate, char *auth, size_t cap)
{
    char can[2048], h[65], sts[512], day[9];
    unsigned char d[32], k1[32], k2[32], k3[32], k4[32], sig[32];
    snprintf(can, sizeof(can),
             "%s\n%s\n%s\nhost:%s\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:%s\n\n"
             "host;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD",
             method, path, query, host, amzdate);
    SHA256((const unsigned char *)can, strlen(can), d);
    hex(d, 32, h);
    memcpy(day, amzdate, 8);
    day[8] = 0;
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s/us-east-1/s3/aws4_request\n%s", amzdate, day, h);
    char key[256];
    int kl = snprintf(key, sizeof(key), "AWS4%s", sk);
    hmac(key, kl, day, k1);
    hmac(k1, 32, "us-east-1", k2);
    hmac(k2, 32, "s3", k3);
    hmac(k3, 32, "aws4_request", k4);
    hmac(k4, 32, sts, sig);
    char sh[65];
    hex(sig, 32, sh);
    snprintf(auth, cap,
             "AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/s3/aws4_request, "
             "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=%s",
             ak, day, sh);
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        perror("connect");
        exit(1);
    }
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k <= 0) {
            perror("write");
            exit(1);
        }
        p += k;
        n -= (size_t)k;
    }
}

/* Reads one response; returns its status, adds its body length to *bytes. The
 * body is read and dropped (Content-Length or chunked). */
struct conn {
    int fd;
    char buf[1 << 16];
    size_t len;
};

static int fill(struct conn *c)
{
    if (c->len == sizeof(c->buf))
        return -1;
    ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    return 0;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static int read_response(struct conn *c, long long *bytes, char *keep, size_t keepcap)
{
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (fill(c))
            return -1;
    size_t head = (size_t)(end - c->buf) + 4;
    int status = atoi(c->buf + 9);
    long long cl = -1;
    int chunked = 0;
    for (char *p = c->buf; p < end; p++) {
        if (strncasecmp(p, "\ncontent-length:", 16) == 0)
            cl = atoll(p + 16);
        if (strncasecmp(p, "\ntransfer-encoding: chunked", 27) == 0)
            chunked = 1;
    }
    consume(c, head);
    size_t kept = 0;
    if (chunked) {
        for (;;) {
            char *nl;
            while (!(nl = memmem(c->buf, c->len, "\r\n", 2)))
                if (fill(c))
                    return -1;
            long n = strtol(c->buf, NULL, 16);
            consume(c, (size_t)(nl - c->buf) + 2);
            while (c->len < (size_t)n + 2)
                if (fill(c))
                    return -1;
            if (keep && kept + (size_t)n < keepcap) {
                memcpy(keep + kept, c->buf, (size_t)n);
                kept += (size_t)n;
            }
            consume(c, (size_t)n + 2);
            *bytes += n;
            if (n == 0)
                break;
        }
    } else if (cl > 0) {
        while (cl > 0) {
            if (!c->len && fill(c))
                return -1;
            size_t take = c->len < (size_t)cl ? c->len : (size_t)cl;
            if (keep && kept + take < keepcap) {
                memcpy(keep + kept, c->buf, take);
                kept += take;
            }
            consume(c, take);
            cl -= (long long)take;
            *bytes += (long long)take;
        }
    }
    if (keep)
        keep[kept] = 0;
    return status;
}

static void amz_now(char out[17])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static void one_request(struct conn *c, const char *method, const char *path, const char *query,
                        const char *body, size_t blen, long long *bytes, char *keep, size_t keepcap)
{
    char host[64], amz[17], auth[512], head[2048];
    snprintf(host, sizeof(host), "127.0.0.1:%d", port);
    amz_now(amz);
    sign(method, path, query, host, amz, auth, sizeof(auth));
    int n = snprintf(head, sizeof(head),
                     "%s %s%s%s HTTP/1.1\r\nHost: %s\r\nx-amz-date: %s\r\n"
                     "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nAuthorization: %s\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, query[0] ? "?" : "", query, host, amz, auth, blen);
    write_all(c->fd, head, (size_t)n);
    if (blen)
        write_all(c->fd, body, blen);
    int st = read_response(c, bytes, keep, keepcap);
    if (st != 200) {
        fprintf(stderr, "s3load: %s %s?%s: status %d\n", method, path, query, st);
        __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
    }
}

static void *worker(void *arg)
{
    (void)arg;
    struct conn *cs = calloc((size_t)nconns, sizeof(*cs));
    for (int i = 0; i < nconns; i++)
        cs[i].fd = dial();
    long long bytes = 0;
    int turn = 0;
    char *keep = strcmp(op, "list") == 0 ? malloc(1 << 20) : NULL;
    for (;;) {
        long i = __atomic_fetch_add(&next_op, 1, __ATOMIC_RELAXED);
        if (i >= count)
            break;
        struct conn *c = &cs[turn++ % nconns];
        char path[512];
        if (strcmp(op, "mb") == 0) {
            snprintf(path, sizeof(path), "/%s", bucket);
            one_request(c, "PUT", path, "", NULL, 0, &bytes, NULL, 0);
        } else if (strcmp(op, "put") == 0) {
            snprintf(path, sizeof(path), "/%s/%s%ld", bucket, prefix, i);
            one_request(c, "PUT", path, "", payload, (size_t)size, &bytes, NULL, 0);
            bytes += size;
        } else if (strcmp(op, "get") == 0) {
            snprintf(path, sizeof(path), "/%s/%s%ld", bucket, prefix, i % 1000);
            one_request(c, "GET", path, "", NULL, 0, &bytes, NULL, 0);
        } else {
            /* page through every key under the prefix */
            char token[1024] = "", query[2048], pfx[256];
            size_t o = 0;
            for (const char *q = prefix; *q && o + 4 < sizeof(pfx); q++)
                o += (size_t)(*q == '/' ? sprintf(pfx + o, "%%2F") : sprintf(pfx + o, "%c", *q));
            pfx[o] = 0;
            snprintf(path, sizeof(path), "/%s", bucket);
            for (;;) {
                if (token[0])
                    snprintf(query, sizeof(query), "continuation-token=%s&list-type=2&prefix=%s", token, pfx);
                else
                    snprintf(query, sizeof(query), "list-type=2&prefix=%s", pfx);
                one_request(c, "GET", path, query, NULL, 0, &bytes, keep, 1 << 20);
                char *t = strstr(keep, "<NextContinuationToken>");
                if (!t)
                    break;
                t += 23;
                char *e = strchr(t, '<');
                /* URL-encode the token (base64: + / =) */
                o = 0;
                for (; t < e && o + 4 < sizeof(token); t++) {
                    if (*t == '+' || *t == '/' || *t == '=')
                        o += (size_t)sprintf(token + o, "%%%02X", (unsigned char)*t);
                    else
                        token[o++] = *t;
                }
                token[o] = 0;
            }
        }
    }
    pthread_mutex_lock(&mu);
    total_bytes += bytes;
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < nconns; i++)
        close(cs[i].fd);
    free(cs);
    free(keep);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 10) {
        fprintf(stderr, "usage: s3load PORT ACCESS SECRET BUCKET put|get|list SIZE COUNT THREADS CONNS [PREFIX]\n");
        return 2;
    }
    port = atoi(argv[1]);
    ak = argv[2];
    sk = argv[3];
    bucket = argv[4];
    op = argv[5];
    size = atoi(argv[6]);
    count = atoi(argv[7]);
    nthreads = atoi(argv[8]);
    nconns = atoi(argv[9]);
    if (argc > 10)
        prefix = argv[10];
    payload = malloc((size_t)size + 1);
    for (int i = 0; i < size; i++)
        payload[i] = (char)('a' + i % 26);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t th[64];
    for (int i = 0; i < nthreads && i < 64; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < nthreads && i < 64; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%d %.4f %lld\n", count, s, total_bytes);
    return failed;
}
