/* otlpgen - an OTLP/HTTP protobuf load generator for make bench-traces.
 *
 *   otlpgen HOST PORT SPANS CONNS IDS_FILE
 *
 * Sends SPANS spans as traces shaped like a microservice fan-out: a frontend
 * server span, and under it client/server pairs into five services, each with a
 * database or cache client span (16 spans a trace, 6 services), with the usual
 * semantic-convention attributes; one trace in 20 has an error. Ten traces per
 * export, one resource per service. CONNS threads, each on a keep-alive
 * connection, each waiting for the answer before the next export (as an SDK's
 * batch processor does). Prints "spans bytes seconds" (protobuf bytes sent) and
 * writes every 1000th trace id (hex) to IDS_FILE; those traces' root spans carry
 * the attribute order.id with their id, a value no other trace has.
 */
#include "core/buf.h"
#include "core/pb.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TRACES_PER_EXPORT 10

static const char *host;
static int port;
static long long spans_total;
static int conns;
static FILE *ids;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long long sent_spans, sent_bytes, next_trace;

static const char *const services[] = { "frontend", "cart", "checkout", "payment", "shipping", "catalog", "recommend" };
static const char *const routes[] = { "/api/cart", "/api/checkout", "/api/products/{id}", "/api/recommendations",
                                      "/api/shipping/quote", "/api/payment/charge" };

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void kv_str(struct buf *b, uint32_t field, const char *k, const char *v)
{
    struct buf kv = BUF_INIT, any = BUF_INIT;
    pb_put_bytes(&any, 1, v, strlen(v));
    pb_put_bytes(&kv, 1, k, strlen(k));
    pb_put_msg(&kv, 2, &any);
    pb_put_msg(b, field, &kv);
    buf_free(&kv);
    buf_free(&any);
}

static void kv_int(struct buf *b, uint32_t field, const char *k, long long v)
{
    struct buf kv = BUF_INIT, any = BUF_INIT;
    pb_put_uint(&any, 3, (uint64_t)v);
    pb_put_bytes(&kv, 1, k, strlen(k));
    pb_put_msg(&kv, 2, &any);
    pb_put_msg(b, field, &kv);
    buf_free(&kv);
    buf_free(&any);
}

static void span(struct buf *out, const uint8_t tid[16], const uint8_t sid[8], const uint8_t *pid, const char *name,
                 int kind, uint64_t start, uint64_t dur, bool error, int svc, uint64_t *seed, const char *order)
{
    struct buf s = BUF_INIT;
    if (order)
        kv_str(&s, 9, "order.id", order);
    pb_put_bytes(&s, 1, tid, 16);
    pb_put_bytes(&s, 2, sid, 8);
    if (pid)
        pb_put_bytes(&s, 4, pid, 8);
    pb_put_bytes(&s, 5, name, strlen(name));
    pb_put_uint(&s, 6, (uint64_t)kind);
    pb_put_fixed64(&s, 7, start);
    pb_put_fixed64(&s, 8, start + dur);
    if (kind == 2 || (kind == 3 && !strncmp(name, "HTTP", 4))) {
        kv_str(&s, 9, "http.request.method", strchr(name, ' ') ? "POST" : "GET");
        kv_str(&s, 9, "url.path", routes[(svc + rng(seed) % 2) % 6]);
        kv_int(&s, 9, "http.response.status_code", error ? 500 : 200);
        kv_str(&s, 9, "network.protocol.version", "1.1");
        if (kind == 3) {
            kv_str(&s, 9, "server.address", services[svc]);
            kv_int(&s, 9, "server.port", 8080);
        } else {
            kv_str(&s, 9, "client.address", "10.0.3.17");
            kv_str(&s, 9, "user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36");
        }
    } else {
        kv_str(&s, 9, "db.system", svc % 2 ? "postgresql" : "redis");
        kv_str(&s, 9, "db.statement", svc % 2 ? "SELECT id, name, price FROM products WHERE id = $1" : "GET cart:{user}");
        kv_str(&s, 9, "server.address", svc % 2 ? "pg-0.db" : "redis-0.cache");
    }
    if (error) {
        struct buf st = BUF_INIT;
        pb_put_bytes(&st, 2, "internal error", 14);
        pb_put_uint(&st, 3, 2);
        pb_put_msg(&s, 15, &st);
        buf_free(&st);
    }
    pb_put_fixed32(&s, 16, 0x101);
    pb_put_msg(out, 2, &s);
    buf_free(&s);
}

/* One export: TRACES_PER_EXPORT traces; per service one ResourceSpans. */
static long long build(struct buf *req, long long first, uint64_t *seed)
{
    struct buf ss[7] = { BUF_INIT };
    long long n = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    for (int t = 0; t < TRACES_PER_EXPORT; t++) {
        uint8_t tid[16], root[8];
        uint64_t a = rng(seed), b = rng(seed);
        memcpy(tid, &a, 8);
        memcpy(tid + 8, &b, 8);
        uint64_t r = rng(seed);
        memcpy(root, &r, 8);
        char hex[33];
        bool noted = (first + t) % 1000 == 0;
        if (noted) {
            for (int i = 0; i < 16; i++)
                sprintf(hex + 2 * i, "%02x", tid[i]);
            pthread_mutex_lock(&mu);
            fprintf(ids, "%s\n", hex);
            pthread_mutex_unlock(&mu);
        }
        bool err = (first + t) % 20 == 7;
        uint64_t start = now - 2000000 - rng(seed) % 1000000;
        span(&ss[0], tid, root, NULL, "GET /api/checkout", 2, start, 1800000, err, 0, seed, noted ? hex : NULL);
        n++;
        for (int k = 1; k <= 5; k++) {
            uint8_t cl[8], sv[8], db[8];
            uint64_t x = rng(seed), y = rng(seed), z = rng(seed);
            memcpy(cl, &x, 8);
            memcpy(sv, &y, 8);
            memcpy(db, &z, 8);
            uint64_t cs = start + (uint64_t)k * 250000;
            bool e = err && k == 3;
            char name[64];
            snprintf(name, sizeof(name), "HTTP POST %s", services[k]);
            span(&ss[0], tid, cl, root, name, 3, cs, 240000, e, k, seed, NULL);
            span(&ss[k], tid, sv, cl, routes[k], 2, cs + 10000, 220000, e, k, seed, NULL);
            span(&ss[k], tid, db, sv, k % 2 ? "SELECT products" : "GET cart", 3, cs + 30000, 90000 + rng(seed) % 50000,
                 false, k, seed, NULL);
            n += 3;
        }
    }
    for (int k = 0; k < 6; k++) {
        if (!buf_used(&ss[k]))
            continue;
        struct buf res = BUF_INIT, scope = BUF_INIT, sco = BUF_INIT, rs = BUF_INIT;
        kv_str(&res, 1, "service.name", services[k]);
        kv_str(&res, 1, "service.version", "1.4.2");
        kv_str(&res, 1, "deployment.environment", "production");
        kv_str(&res, 1, "host.name", "node-7.cluster.local");
        char pod[64];
        snprintf(pod, sizeof(pod), "%s-7d9f8c6b5-x%dq", services[k], k);
        kv_str(&res, 1, "k8s.pod.name", pod);
        kv_str(&res, 1, "telemetry.sdk.language", "java");
        pb_put_bytes(&sco, 1, "io.opentelemetry.http", 21);
        pb_put_bytes(&sco, 2, "2.10.0", 6);
        pb_put_msg(&scope, 1, &sco);
        buf_append(&scope, buf_head(&ss[k]), buf_used(&ss[k]));
        pb_put_msg(&rs, 1, &res);
        pb_put_msg(&rs, 2, &scope);
        pb_put_msg(req, 1, &rs);
        buf_free(&res);
        buf_free(&scope);
        buf_free(&sco);
        buf_free(&rs);
        buf_free(&ss[k]);
    }
    return n;
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, host, &a.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        perror("connect");
        exit(1);
    }
    return fd;
}

static void *worker(void *arg)
{
    uint64_t seed = 0x9e3779b97f4a7c15ULL * ((uintptr_t)arg + 1) ^ (uint64_t)time(NULL);
    int fd = dial();
    struct buf req = BUF_INIT, head = BUF_INIT;
    char in[8192];
    for (;;) {
        pthread_mutex_lock(&mu);
        long long first = next_trace;
        bool done = sent_spans >= spans_total;
        next_trace += TRACES_PER_EXPORT;
        sent_spans += TRACES_PER_EXPORT * 16;
        pthread_mutex_unlock(&mu);
        if (done)
            break;
        buf_reset(&req);
        build(&req, first, &seed);
        buf_reset(&head);
        buf_printf(&head, "POST /v1/traces HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/x-protobuf\r\n"
                          "Content-Length: %zu\r\n\r\n", host, port, buf_used(&req));
        if (write(fd, buf_head(&head), buf_used(&head)) < 0 || write(fd, buf_head(&req), buf_used(&req)) < 0) {
            perror("write");
            exit(1);
        }
        pthread_mutex_lock(&mu);
        sent_bytes += (long long)buf_used(&req);
        pthread_mutex_unlock(&mu);
        /* the answer: headers, then Content-Length bytes */
        size_t got = 0;
        long clen = -1;
        char *body = NULL;
        for (;;) {
            ssize_t r = read(fd, in + got, sizeof(in) - 1 - got);
            if (r <= 0) {
                fprintf(stderr, "read: connection closed\n");
                exit(1);
            }
            got += (size_t)r;
            in[got] = 0;
            if (!body && (body = strstr(in, "\r\n\r\n"))) {
                body += 4;
                if (strncmp(in, "HTTP/1.1 200", 12)) {
                    fprintf(stderr, "answer: %.200s\n", in);
                    exit(1);
                }
                char *cl = strcasestr(in, "content-length:");
                clen = cl ? atol(cl + 15) : 0;
            }
            if (body && (long)(in + got - body) >= clen)
                break;
        }
    }
    close(fd);
    buf_free(&req);
    buf_free(&head);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: otlpgen HOST PORT SPANS CONNS IDS_FILE\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    spans_total = atoll(argv[3]);
    conns = atoi(argv[4]);
    ids = fopen(argv[5], "w");
    if (!ids)
        return 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t th[64];
    for (int i = 0; i < conns && i < 64; i++)
        pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i);
    for (int i = 0; i < conns && i < 64; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fclose(ids);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%lld %lld %.3f\n", sent_spans, sent_bytes, secs);
    return 0;
}
