/* rwpush.c - pushes a synthetic dashboard workload by Prometheus remote_write to
 * one or more servers, time-major so every server appends in order. Used by
 * bench/promql.sh (built there with cc ... -lsnappy).
 *
 *   rwpush END_UNIX_S HOURS STEP_S PORT...
 *
 * 10,000 series: http_requests_total{instance=i0..i99, handler=h0..h9,
 * code=200|301|404|500|503} (counters) and
 * request_duration_seconds_bucket{instance, handler=h0..h4, le=10 bounds}
 * (cumulative histogram buckets), one sample per series every STEP_S over the
 * HOURS before END_UNIX_S.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <snappy-c.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            exit(1);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void varint(struct buf *b, uint64_t v)
{
    uint8_t t[10];
    int n = 0;
    do {
        t[n] = v & 0x7f;
        v >>= 7;
        if (v)
            t[n] |= 0x80;
        n++;
    } while (v);
    put(b, t, (size_t)n);
}

static void field(struct buf *b, int num, const struct buf *sub)
{
    varint(b, (uint64_t)num << 3 | 2);
    varint(b, sub->n);
    put(b, sub->p, sub->n);
}

static void label(struct buf *ts, const char *n, const char *v)
{
    struct buf l = { 0 }, x = { 0 };
    struct buf nb = { (uint8_t *)n, strlen(n), 0 }, vb = { (uint8_t *)v, strlen(v), 0 };
    field(&l, 1, &nb);
    field(&l, 2, &vb);
    field(ts, 1, &l);
    free(l.p);
    free(x.p);
}

static void sample(struct buf *ts, double v, int64_t t)
{
    struct buf s = { 0 };
    uint8_t tag = 1 << 3 | 1;
    put(&s, &tag, 1);
    put(&s, &v, 8);
    varint(&s, 2 << 3);
    varint(&s, (uint64_t)t);
    field(ts, 2, &s);
    free(s.p);
}

static int post(int port, const char *body, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("connect");
        return -1;
    }
    char h[512];
    int hl = snprintf(h, sizeof(h),
                      "POST /api/v1/write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
                      "Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n", n);
    if (write(fd, h, (size_t)hl) != hl)
        return -1;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, body + off, n - off);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    char r[256];
    ssize_t k = read(fd, r, sizeof(r) - 1);
    close(fd);
    if (k < 12 || r[9] != '2') {
        fprintf(stderr, "push to %d refused: %.*s\n", port, (int)(k > 0 ? k : 0), r);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: rwpush END_UNIX_S HOURS STEP_S PORT...\n");
        return 2;
    }
    int64_t end = atoll(argv[1]) * 1000, hours = atoll(argv[2]), step = atoll(argv[3]) * 1000;
    int64_t start = end - hours * 3600000;
    static const char *const codes[] = { "200", "301", "404", "500", "503" };
    static const char *const les[] = { "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf" };
    static const double leb[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 1e300 };
    int64_t batch = 10 * 60000;   /* 10 minutes of every series per request */
    for (int64_t t0 = start; t0 <= end; t0 += batch) {
        struct buf req = { 0 };
        char inst[16], hd[16];
        for (int i = 0; i < 100; i++) {
            snprintf(inst, sizeof(inst), "i%d", i);
            for (int h = 0; h < 10; h++) {
                snprintf(hd, sizeof(hd), "h%d", h);
                for (int c = 0; c < 5; c++) {
                    struct buf ts = { 0 };
                    label(&ts, "__name__", "http_requests_total");
                    label(&ts, "code", codes[c]);
                    label(&ts, "handler", hd);
                    label(&ts, "instance", inst);
                    label(&ts, "job", "bench");
                    for (int64_t t = t0; t < t0 + batch && t <= end; t += step) {
                        double k = (double)(t - start) / 1000.0;
                        sample(&ts, k * (1 + i % 7) / (1 + c * 3) + h, t);
                    }
                    field(&req, 1, &ts);
                    free(ts.p);
                }
                if (h >= 5)
                    continue;
                for (int l = 0; l < 10; l++) {
                    struct buf ts = { 0 };
                    label(&ts, "__name__", "request_duration_seconds_bucket");
                    label(&ts, "handler", hd);
                    label(&ts, "instance", inst);
                    label(&ts, "job", "bench");
                    label(&ts, "le", les[l]);
                    for (int64_t t = t0; t < t0 + batch && t <= end; t += step) {
                        double k = (double)(t - start) / 1000.0;
                        /* a share of requests under each bound, growing with k */
                        double share = leb[l] > 1e299 ? 1 : leb[l] / (leb[l] + 0.05 * (1 + h));
                        sample(&ts, (double)(int64_t)(k * (2 + i % 3) * share), t);
                    }
                    field(&req, 1, &ts);
                    free(ts.p);
                }
            }
        }
        size_t cl = snappy_max_compressed_length(req.n);
        char *comp = malloc(cl);
        if (!comp || snappy_compress((const char *)req.p, req.n, comp, &cl) != SNAPPY_OK)
            return 1;
        for (int a = 4; a < argc; a++)
            if (post(atoi(argv[a]), comp, cl))
                return 1;
        free(comp);
        free(req.p);
    }
    return 0;
}
