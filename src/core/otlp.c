/* otlp.c - see otlp.h. */
#include "core/otlp.h"
#include "core/log.h"
#include "core/pb.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define OTLP_BATCH 512
#define OTLP_PERIOD_MS 1000

struct otlp_exporter {
    char host[256], port[8], path[256];
    double ratio;
    uint32_t max_queue;
    struct buf resource;            /* the Resource message */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct buf queue;               /* ScopeSpans.spans fields */
    uint32_t queued;
    bool stop;
    pthread_t th;
    int fd;
    struct metric *m_exported, *m_dropped;
};

uint64_t otlp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void put_attr(struct buf *b, uint32_t field, const char *k, const char *s, int64_t i)
{
    struct buf kv = BUF_INIT, any = BUF_INIT;
    if (s)
        pb_put_bytes(&any, 1, s, strlen(s));
    else
        pb_put_uint(&any, 3, (uint64_t)i);
    pb_put_bytes(&kv, 1, k, strlen(k));
    pb_put_msg(&kv, 2, &any);
    pb_put_msg(b, field, &kv);
    buf_free(&kv);
    buf_free(&any);
}

void otlp_begin(const struct otlp_exporter *x, const struct strv *tp, struct trace_ctx *out, uint8_t parent[8],
                bool *has_parent)
{
    struct trace_ctx in;
    *has_parent = false;
    if (tp && tp->n && trace_parse(*tp, &in) == 0) {
        trace_child(&in, out);
        memcpy(parent, in.span_id, 8);
        *has_parent = true;
        return;
    }
    trace_new(out);
    /* the ratio on the trace id's low 8 bytes, as the W3C random flag allows */
    uint64_t r = 0;
    for (int i = 8; i < 16; i++)
        r = r << 8 | out->trace_id[i];
    double ratio = x ? x->ratio : 0;
    bool keep = ratio >= 1.0 || (ratio > 0 && (double)r < ratio * 18446744073709551616.0);
    out->flags = keep ? 1 : 0;
}

void otlp_export(struct otlp_exporter *x, const struct otlp_span *s)
{
    if (!x)
        return;
    struct buf sp = BUF_INIT;
    pb_put_bytes(&sp, 1, s->ctx->trace_id, 16);
    pb_put_bytes(&sp, 2, s->ctx->span_id, 8);
    if (s->parent)
        pb_put_bytes(&sp, 4, s->parent, 8);
    pb_put_bytes(&sp, 5, s->name, strlen(s->name));
    pb_put_uint(&sp, 6, (uint64_t)s->kind);
    pb_put_fixed64(&sp, 7, s->start_ns);
    pb_put_fixed64(&sp, 8, s->end_ns > s->start_ns ? s->end_ns : s->start_ns);
    for (size_t i = 0; i < s->nattrs; i++)
        put_attr(&sp, 9, s->attrs[i].key, s->attrs[i].s, s->attrs[i].i);
    if (s->error) {
        struct buf st = BUF_INIT;
        pb_put_uint(&st, 3, 2);
        pb_put_msg(&sp, 15, &st);
        buf_free(&st);
    }
    pb_put_fixed32(&sp, 16, 0x100 | (s->ctx->flags & 0xff));
    pthread_mutex_lock(&x->mu);
    bool full = x->queued >= x->max_queue;
    if (!full) {
        pb_put_msg(&x->queue, 2, &sp);
        if (++x->queued == OTLP_BATCH)
            pthread_cond_signal(&x->cv);
    }
    pthread_mutex_unlock(&x->mu);
    if (full)
        metric_inc(x->m_dropped);
    buf_free(&sp);
}

static int dial(struct otlp_exporter *x)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
    if (getaddrinfo(x->host, x->port, &hints, &ai))
        return -1;
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        struct timeval tv = { 2, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, a->ai_addr, a->ai_addrlen)) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    return fd;
}

/* One POST on the kept connection (dialled again once if it went away). 0 when
 * the answer is 2xx. */
static int post(struct otlp_exporter *x, const struct buf *body)
{
    struct buf head = BUF_INIT;
    buf_printf(&head, "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/x-protobuf\r\n"
                      "Content-Length: %zu\r\n\r\n", x->path, x->host, x->port, buf_used(body));
    int rc = -1;
    for (int attempt = 0; attempt < 2 && rc; attempt++) {
        if (x->fd < 0 && (x->fd = dial(x)) < 0)
            break;
        if (write(x->fd, buf_head(&head), buf_used(&head)) != (ssize_t)buf_used(&head) ||
            write(x->fd, buf_head(body), buf_used(body)) != (ssize_t)buf_used(body)) {
            close(x->fd);
            x->fd = -1;
            continue;
        }
        char in[4096];
        size_t got = 0;
        long clen = -1;
        char *bodyp = NULL;
        while (got < sizeof(in) - 1) {
            ssize_t r = read(x->fd, in + got, sizeof(in) - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            in[got] = 0;
            if (!bodyp && (bodyp = strstr(in, "\r\n\r\n"))) {
                bodyp += 4;
                char *cl = strcasestr(in, "content-length:");
                clen = cl ? atol(cl + 15) : 0;
            }
            if (bodyp && (long)(in + got - bodyp) >= clen)
                break;
        }
        if (!bodyp || (long)(in + got - bodyp) < clen) {
            close(x->fd);
            x->fd = -1;
            continue;
        }
        rc = !strncmp(in, "HTTP/1.1 2", 10) ? 0 : -EIO;
        if (strcasestr(in, "connection: close")) {
            close(x->fd);
            x->fd = -1;
        }
        break;
    }
    buf_free(&head);
    return rc;
}

static void send_batch(struct otlp_exporter *x, struct buf *spans, uint32_t n)
{
    struct buf scope = BUF_INIT, ss = BUF_INIT, rs = BUF_INIT, req = BUF_INIT;
    pb_put_bytes(&scope, 1, "cairn", 5);
    pb_put_msg(&ss, 1, &scope);
    buf_append(&ss, buf_head(spans), buf_used(spans));
    pb_put_msg(&rs, 1, &x->resource);
    pb_put_msg(&rs, 2, &ss);
    pb_put_msg(&req, 1, &rs);
    if (post(x, &req) == 0)
        metric_add(x->m_exported, n);
    else
        metric_add(x->m_dropped, n);
    buf_free(&scope);
    buf_free(&ss);
    buf_free(&rs);
    buf_free(&req);
}

static void *run(void *arg)
{
    struct otlp_exporter *x = arg;
    struct buf batch = BUF_INIT;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        if (!x->stop && x->queued < OTLP_BATCH) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += OTLP_PERIOD_MS / 1000;
            pthread_cond_timedwait(&x->cv, &x->mu, &until);
        }
        bool stop = x->stop;
        uint32_t n = x->queued;
        struct buf tmp = x->queue;
        x->queue = batch;
        batch = tmp;
        buf_reset(&x->queue);
        x->queued = 0;
        pthread_mutex_unlock(&x->mu);
        if (n)
            send_batch(x, &batch, n);
        buf_reset(&batch);
        pthread_mutex_lock(&x->mu);
        if (stop && !x->queued)
            break;
    }
    pthread_mutex_unlock(&x->mu);
    buf_free(&batch);
    return NULL;
}

struct otlp_exporter *otlp_start(const struct otlp_conf *c, struct metrics_registry *reg)
{
    const char *u = c->url;
    if (strncmp(u, "http://", 7))
        return NULL;
    u += 7;
    struct otlp_exporter *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    const char *slash = strchr(u, '/');
    size_t hl = slash ? (size_t)(slash - u) : strlen(u);
    char hostport[300];
    if (hl >= sizeof(hostport)) {
        free(x);
        return NULL;
    }
    memcpy(hostport, u, hl);
    hostport[hl] = 0;
    char *colon = hostport[0] == '[' ? strstr(hostport, "]:") : strrchr(hostport, ':');
    if (hostport[0] == '[') {
        char *end = strchr(hostport, ']');
        if (!end) {
            free(x);
            return NULL;
        }
        snprintf(x->host, sizeof(x->host), "%.*s", (int)(end - hostport - 1), hostport + 1);
        colon = end[1] == ':' ? end + 1 : NULL;
    } else {
        snprintf(x->host, sizeof(x->host), "%.*s", (int)(colon ? (size_t)(colon - hostport) : hl), hostport);
    }
    snprintf(x->port, sizeof(x->port), "%s", colon ? colon + 1 : "80");
    snprintf(x->path, sizeof(x->path), "%s", slash && strcmp(slash, "/") ? slash : "/v1/traces");
    x->ratio = c->ratio;
    x->max_queue = c->max_queue ? c->max_queue : 2048;
    x->fd = -1;
    put_attr(&x->resource, 1, "service.name", c->service, 0);
    if (c->role)
        put_attr(&x->resource, 1, "cairn.role", c->role, 0);
    put_attr(&x->resource, 1, "telemetry.sdk.name", "cairn", 0);
    x->m_exported = metrics_counter(reg, "cairn_otlp_spans_exported_total", "Spans of this service sent to the trace store.");
    x->m_dropped = metrics_counter(reg, "cairn_otlp_spans_dropped_total",
                                   "Spans dropped: the export queue was full or the trace store did not take them.");
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    if (!x->m_exported || !x->m_dropped || pthread_create(&x->th, NULL, run, x)) {
        pthread_mutex_destroy(&x->mu);
        pthread_cond_destroy(&x->cv);
        buf_free(&x->resource);
        free(x);
        return NULL;
    }
    return x;
}

void otlp_stop(struct otlp_exporter *x)
{
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    x->stop = true;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
    pthread_join(x->th, NULL);
    if (x->fd >= 0)
        close(x->fd);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    buf_free(&x->queue);
    buf_free(&x->resource);
    free(x);
}

int otlp_parse_settings(struct cfg *c, const cfg_node *n, const char *path, struct otlp_settings *out)
{
    memset(out, 0, sizeof(*out));
    out->ratio = 1.0;
    if (!n)
        return 0;
    bool on;
    if (cfg_is_scalar(n)) {
        if (cfg_get_bool(c, n, path, &on))
            return -EINVAL;
        out->off = !on;
        return 0;
    }
    static const char *const keys[] = { "sampling", "endpoint", NULL };
    cfg_node *v[2];
    int bad = cfg_map_fields(c, n, path, keys, v);
    char p[300];
    CFG_PATH(p, "%s.sampling", path);
    if (v[0])
        bad |= cfg_get_float(c, v[0], p, 0, 1, &out->ratio);
    CFG_PATH(p, "%s.endpoint", path);
    if (v[1] && !(bad |= cfg_get_string(c, v[1], p, &out->url)) && strncmp(out->url, "http://", 7))
        bad = cfg_error(c, v[1], p, "expected an OTLP/HTTP URL like http://127.0.0.1:4318");
    return bad ? -EINVAL : 0;
}

void otlp_settings_free(struct otlp_settings *s)
{
    free(s->url);
    s->url = NULL;
}

struct otlp_exporter *otlp_for_service(const struct service *svc, const struct otlp_settings *s,
                                       struct metrics_registry *reg)
{
    if (s->off)
        return NULL;
    const char *url = s->url;
    const struct stack *st = svc->stack;
    for (size_t i = 0; !url && st && i < st->nservices; i++)
        for (size_t k = 0; !url && k < st->services[i].nendpoints; k++)
            if (!strcmp(st->services[i].endpoints[k].what, "otlp"))
                url = st->services[i].endpoints[k].url;
    if (!url)
        return NULL;
    struct otlp_conf c = { .url = url, .service = svc->name, .role = svc->role ? svc->role->name : NULL,
                           .ratio = s->ratio };
    struct otlp_exporter *x = otlp_start(&c, reg);
    if (!x)
        log_error("tracing: cannot start the span exporter", "endpoint", url);
    else
        log_info("tracing", "endpoint", url, "sampling", log_dbl(s->ratio));
    return x;
}
