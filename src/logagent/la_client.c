/* la_client.c - shipping to a Loki push API: entries queue per client, go out in
 * batches (batchsize bytes, or after batchwait) as a snappy-compressed protobuf
 * PushRequest, one request at a time. 2xx acknowledges the batch (the files'
 * positions advance); 429, 5xx and connection errors are retried with backoff
 * (backoff_config, doubling up to max_period) without end, so a store that is down
 * for minutes loses nothing (the files are the buffer; syslog entries past
 * buffer_bytes are dropped and counted); any other 4xx drops the batch, counted.
 */
#include "logagent_internal.h"
#include "core/log.h"
#include "core/pb.h"

#include <errno.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct la_qent {
    int64_t ts;
    char *line;
    size_t n;
    char *labels;                       /* {a="b", ...}, sorted, no __ labels */
    struct la_file *file;
    uint64_t end;
};

struct la_client {
    struct la_svc *s;
    const struct la_client_conf *cc;
    struct la_qent *q;
    size_t head, n, cap;                /* a ring */
    uint64_t qbytes;
    size_t inflight;                    /* entries of the batch on the wire (from head) */
    struct httpc_call *call;
    struct buf body;
    struct loop_timer wait, retry;
    uint64_t backoff_ms;
    bool waiting, retrying;
    char *target_headers[4];
};

static struct la_qent *qat(struct la_client *c, size_t i)
{
    return &c->q[(c->head + i) % c->cap];
}

static int qpush(struct la_client *c, const struct la_qent *e)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        struct la_qent *v = malloc(cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        for (size_t i = 0; i < c->n; i++)
            v[i] = *qat(c, i);
        free(c->q);
        c->q = v;
        c->cap = cap;
        c->head = 0;
    }
    c->q[(c->head + c->n) % c->cap] = *e;
    c->n++;
    c->qbytes += e->n + strlen(e->labels) + 32;
    return 0;
}

static void qpop(struct la_client *c, size_t k)
{
    for (size_t i = 0; i < k && c->n; i++) {
        struct la_qent *e = qat(c, 0);
        c->qbytes -= e->n + strlen(e->labels) + 32;
        free(e->line);
        free(e->labels);
        c->head = (c->head + 1) % c->cap;
        c->n--;
    }
}

uint64_t la__clients_buffered(const struct la_svc *s)
{
    uint64_t m = 0;
    for (size_t i = 0; i < s->nclients; i++)
        if (s->clients[i].qbytes > m)
            m = s->clients[i].qbytes;
    return m;
}

void la__clients_forget(struct la_svc *s, struct la_file *f)
{
    for (size_t i = 0; i < s->nclients; i++)
        for (size_t k = 0; k < s->clients[i].n; k++)
            if (qat(&s->clients[i], k)->file == f)
                qat(&s->clients[i], k)->file = NULL;
}

static int lcmp(const void *a, const void *b)
{
    return strcmp(((const struct relabel_label *)a)->name, ((const struct relabel_label *)b)->name);
}

static char *labels_string(const struct relabel_set *set, const struct la_client_conf *cc)
{
    struct relabel_label l[RELABEL_MAX_LABELS + 16];
    size_t n = 0;
    for (size_t i = 0; i < set->n; i++)
        if (strncmp(set->l[i].name, "__", 2) != 0 && set->l[i].value && set->l[i].value[0])
            l[n++] = set->l[i];
    for (size_t i = 0; i < cc->nexternal && n < RELABEL_MAX_LABELS + 16; i++) {
        bool have = false;
        for (size_t k = 0; k < n; k++)
            have |= !strcmp(l[k].name, cc->external[i].name);
        if (!have)
            l[n++] = cc->external[i];
    }
    qsort(l, n, sizeof(*l), lcmp);
    struct buf b = { 0 };
    buf_putc(&b, '{');
    for (size_t i = 0; i < n; i++) {
        buf_printf(&b, "%s%s=\"", i ? ", " : "", l[i].name);
        for (const char *p = l[i].value; *p; p++) {
            if (*p == '"' || *p == '\\')
                buf_putc(&b, '\\');
            if (*p == '\n') {
                buf_puts(&b, "\\n");
                continue;
            }
            buf_putc(&b, *p);
        }
        buf_putc(&b, '"');
    }
    buf_puts(&b, "}");
    buf_putc(&b, 0);
    return buf_steal(&b);
}

static void send_batch(struct la_client *c);

static void schedule(struct la_client *c)
{
    if (c->call || c->retrying || !c->n)
        return;
    if (c->qbytes >= c->cc->batch_size) {
        if (c->waiting) {
            loop_timer_stop(&c->wait);
            c->waiting = false;
        }
        send_batch(c);
        return;
    }
    if (!c->waiting) {
        c->waiting = true;
        loop_timer_start(c->s->loop, &c->wait, c->cc->batch_wait_ms);
    }
}

void la__ship(struct la_svc *s, struct la_entry *e, struct la_file *from, uint64_t end_offset)
{
    if (!s->nclients) {
        metric_inc(s->m_dropped);
        free(e->line);
        relabel_set_clear(&e->labels);
        return;
    }
    for (size_t i = 0; i < s->nclients; i++) {
        struct la_client *c = &s->clients[i];
        struct la_qent q = { e->ts, NULL, e->n, labels_string(&e->labels, c->cc), from, end_offset };
        q.line = i + 1 == s->nclients ? e->line : strndup(e->line, e->n);
        if (!q.line || !q.labels || qpush(c, &q)) {
            free(q.line);
            free(q.labels);
            metric_inc(s->m_dropped);
            continue;
        }
        schedule(c);
    }
    metric_set(s->m_buffered, (double)la__clients_buffered(s));
    relabel_set_clear(&e->labels);
}

/* Encodes the first entries of the queue, up to batch_size bytes, grouped by
 * stream, as a PushRequest. Returns how many entries it took. */
static size_t encode(struct la_client *c, struct buf *out)
{
    size_t take = 0;
    uint64_t bytes = 0;
    while (take < c->n && (take == 0 || bytes < c->cc->batch_size)) {
        bytes += qat(c, take)->n + 32;
        take++;
    }
    /* streams in order of first appearance */
    struct hmap streams = { 0 };
    struct buf *bodies = calloc(take, sizeof(*bodies));
    char **keys = calloc(take, sizeof(*keys));
    size_t ns = 0;
    for (size_t i = 0; bodies && keys && i < take; i++) {
        struct la_qent *e = qat(c, i);
        uintptr_t idx = (uintptr_t)hmap_get(&streams, e->labels, strlen(e->labels));
        if (!idx) {
            idx = ++ns;
            keys[idx - 1] = e->labels;
            hmap_put(&streams, e->labels, strlen(e->labels), (void *)idx);
        }
        struct buf ts = { 0 }, ent = { 0 };
        pb_put_varint(&ts, 1 << 3);
        pb_put_varint(&ts, (uint64_t)(e->ts / 1000000000));
        pb_put_varint(&ts, 2 << 3);
        pb_put_varint(&ts, (uint64_t)(e->ts % 1000000000));
        pb_put_bytes(&ent, 1, ts.len ? buf_head(&ts) : "", buf_used(&ts));
        pb_put_bytes(&ent, 2, e->line, e->n);
        pb_put_bytes(&bodies[idx - 1], 2, buf_head(&ent), buf_used(&ent));
        buf_free(&ts);
        buf_free(&ent);
    }
    struct buf req = { 0 };
    for (size_t i = 0; i < ns; i++) {
        struct buf st = { 0 };
        pb_put_bytes(&st, 1, keys[i], strlen(keys[i]));
        buf_append(&st, buf_head(&bodies[i]), buf_used(&bodies[i]));
        pb_put_bytes(&req, 1, buf_head(&st), buf_used(&st));
        buf_free(&st);
        buf_free(&bodies[i]);
    }
    free(bodies);
    free(keys);
    hmap_free(&streams);
    size_t max = snappy_max_compressed_length(buf_used(&req));
    buf_reset(out);
    if (buf_reserve(out, max) == 0) {
        size_t clen = max;
        if (snappy_compress(req.len ? buf_head(&req) : "", buf_used(&req), buf_tail(out), &clen) == SNAPPY_OK)
            buf_commit(out, clen);
    }
    buf_free(&req);
    return take;
}

static void retry_later(struct la_client *c, const char *why)
{
    struct la_svc *s = c->s;
    metric_inc(s->m_retries);
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : c->cc->backoff_min_ms;
    if (c->backoff_ms > c->cc->backoff_max_ms)
        c->backoff_ms = c->cc->backoff_max_ms;
    log_warn("log-agent: push failed, retrying", "url", c->cc->url.text, "why", why, "retry_in_ms",
             log_int((long long)c->backoff_ms), "queued", log_int((long long)c->n));
    c->retrying = true;
    loop_timer_start(s->loop, &c->retry, c->backoff_ms);
}

static void acked(struct la_client *c, size_t k, bool sent)
{
    struct la_svc *s = c->s;
    for (size_t i = 0; i < k; i++) {
        struct la_qent *e = qat(c, i);
        if (e->file && c == &s->clients[0])
            la__file_acked(s, e->file, e->end);
        if (sent) {
            metric_inc(s->m_sent);
            metric_add(s->m_sent_bytes, (double)e->n);
        } else {
            metric_inc(s->m_dropped);
        }
    }
    qpop(c, k);
    metric_set(s->m_buffered, (double)la__clients_buffered(s));
}

static void on_response(const struct httpc_response *r, void *arg)
{
    struct la_client *c = arg;
    c->call = NULL;
    size_t k = c->inflight;
    c->inflight = 0;
    if (r->error) {
        retry_later(c, cairn_strerror(r->error));
        return;
    }
    if (r->status / 100 == 2) {
        c->backoff_ms = 0;
        acked(c, k, true);
    } else if (r->status == 429 || r->status / 100 == 5) {
        char why[64];
        snprintf(why, sizeof(why), "HTTP %d", r->status);
        retry_later(c, why);
        return;
    } else {
        char body[301];
        snprintf(body, sizeof(body), "%.*s", (int)(r->body.n > 300 ? 300 : r->body.n), r->body.n ? r->body.p : "");
        log_error("log-agent: the store refused a batch, dropped", "url", c->cc->url.text, "status",
                  log_int(r->status), "body", body);
        acked(c, k, false);
    }
    schedule(c);
}

static void send_batch(struct la_client *c)
{
    if (c->call || !c->n)
        return;
    size_t k = encode(c, &c->body);
    if (!k || !buf_used(&c->body))
        return;
    c->inflight = k;
    const char *headers[4] = { "Content-Type: application/x-protobuf", NULL, NULL, NULL };
    char tenant[300];
    if (c->cc->tenant) {
        snprintf(tenant, sizeof(tenant), "X-Scope-OrgID: %s", c->cc->tenant);
        headers[1] = tenant;
    }
    struct httpc_request req = {
        .method = "POST",
        .addr = c->cc->url.addr,
        .host = c->cc->url.host,
        .target = c->cc->url.target,
        .headers = headers,
        .body = buf_head(&c->body),
        .body_len = buf_used(&c->body),
        .tls = c->cc->url.tls,
        .timeout_ms = (uint32_t)c->cc->timeout_ms,
    };
    c->call = httpc_send(c->s->hc, &req, on_response, c);
    if (!c->call) {
        c->inflight = 0;
        retry_later(c, "out of memory");
    }
}

static void on_wait(struct loop_timer *t)
{
    struct la_client *c = t->data;
    c->waiting = false;
    send_batch(c);
}

static void on_retry(struct loop_timer *t)
{
    struct la_client *c = t->data;
    c->retrying = false;
    send_batch(c);
}

int la__clients_start(struct la_svc *s)
{
    if (!s->ncconf)
        return 0;
    s->clients = calloc(s->ncconf, sizeof(*s->clients));
    if (!s->clients)
        return -ENOMEM;
    s->nclients = s->ncconf;
    for (size_t i = 0; i < s->nclients; i++) {
        struct la_client *c = &s->clients[i];
        c->s = s;
        c->cc = &s->cconf[i];
        loop_timer_init(&c->wait, on_wait, c);
        loop_timer_init(&c->retry, on_retry, c);
    }
    return 0;
}

void la__clients_stop(struct la_svc *s)
{
    for (size_t i = 0; i < s->nclients; i++) {
        struct la_client *c = &s->clients[i];
        loop_timer_stop(&c->wait);
        loop_timer_stop(&c->retry);
        if (c->call)
            httpc_cancel(c->call);
        qpop(c, c->n);
        free(c->q);
        buf_free(&c->body);
    }
    free(s->clients);
    s->clients = NULL;
    s->nclients = 0;
}
