/* logs_tail.c - GET /loki/api/v1/tail: a WebSocket that gets, as Loki sends them,
 * {"streams":[{"stream":{labels},"values":[["<ns>","<line>"]]}],"dropped_entries":null}
 * messages: first the entries since `start` (default an hour ago, at most `limit`,
 * default 100), then every pushed entry that passes the query's pipeline, one message
 * per push. A client that falls 8 MiB behind is disconnected.
 */
#include "logs_internal.h"
#include "core/log.h"
#include "core/ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAIL_MAX 100

struct logs_tailer {
    struct logs_svc *s;
    struct ws_conn *ws;
    char tenant[256];
    struct lq_query *q;
    struct lq_lb lb;
    struct logs_tailer *next;
};

static void put_labels(struct buf *b, const struct lq_label *l, int n)
{
    buf_putc(b, '{');
    for (int i = 0; i < n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_json_str(b, l[i].name);
        buf_putc(b, ':');
        buf_json_str(b, l[i].value);
    }
    buf_putc(b, '}');
}

static void put_entry(struct buf *b, bool *first, const struct lq_label *l, int nl, int64_t ts, const char *line,
                      size_t n)
{
    buf_puts(b, *first ? "{\"stream\":" : ",{\"stream\":");
    *first = false;
    put_labels(b, l, nl);
    buf_printf(b, ",\"values\":[[\"%lld\",\"", (long long)ts);
    buf_json_escape(b, line, n);
    buf_puts(b, "\"]]}");
}

static void tailer_gone(struct ws_conn *ws, void *arg)
{
    (void)ws;
    struct logs_tailer *t = arg;
    struct logs_svc *s = t->s;
    for (struct logs_tailer **pp = &s->tailers; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    lq_query_free(&t->q);
    lq_lb_free(&t->lb);
    free(t);
}

static const struct ws_ops tail_ops = { NULL, tailer_gone };

static void send_or_drop(struct logs_tailer *t, struct buf *b)
{
    if (ws_send_text(t->ws, buf_head(b), buf_used(b)) == -EAGAIN) {
        log_warn("logs: a tail client is too slow, disconnected", "tenant", t->tenant);
        ws_close(t->ws, 1008, "too slow");
    }
}

void logs__tail_notify(struct logs_svc *s, const char *tenant, const struct ls_push_stream *ps, int nps)
{
    for (struct logs_tailer *t = s->tailers, *next; t; t = next) {
        next = t->next;
        if (strcmp(t->tenant, tenant))
            continue;
        const struct lq_node *sel = t->q->root;
        struct buf b = { 0 };
        bool first = true;
        buf_puts(&b, "{\"streams\":[");
        for (int i = 0; i < nps; i++) {
            const struct ls_push_stream *p = &ps[i];
            bool match = p->n > 0;
            for (int m = 0; m < sel->nmatchers && match; m++) {
                const char *v = "";
                for (int k = 0; k < p->nlabels; k++)
                    if (!strcmp(p->labels[k].name, sel->matchers[m].name))
                        v = p->labels[k].value;
                match = lq_matcher_matches(&sel->matchers[m], v, strlen(v));
            }
            if (!match)
                continue;
            struct lq_labels base = { p->labels, p->nlabels };
            for (int j = 0; j < p->n; j++) {
                const struct ls_entry *e = &p->e[j];
                lq_lb_reset(&t->lb, &base);
                struct lq_labels meta = { e->meta, e->nmeta };
                lq_lb_add_meta(&t->lb, &meta);
                const char *line = e->line;
                size_t n = e->n;
                if (!lq_pipeline_run(sel->stages, sel->nstages, e->ts, &line, &n, &t->lb))
                    continue;
                struct lq_label l[LQ_MAX_LABELS];
                int nl = lq_lb_labels(&t->lb, l);
                put_entry(&b, &first, l, nl, e->ts, line, n);
            }
        }
        buf_puts(&b, "],\"dropped_entries\":null}");
        if (!first)
            send_or_drop(t, &b);
        buf_free(&b);
    }
}

void logs__tail(struct logs_svc *s, struct httpd_req *r, const struct http_form *f, const char *tenant)
{
    const char *qs = http_form_get(f, "query");
    struct lq_query *q = NULL;
    char err[1024];
    if (!qs || lq_parse(qs, strlen(qs), &q, err, sizeof(err))) {
        const char *m = qs ? err : "query must not be empty";
        httpd_respond(r, 400, "text/plain; charset=utf-8", m, strlen(m));
        return;
    }
    if (lq_is_metric(q)) {
        lq_query_free(&q);
        const char *m = "tail takes a log query, not a metric query";
        httpd_respond(r, 400, "text/plain; charset=utf-8", m, strlen(m));
        return;
    }
    if (!ws_is_upgrade(r)) {
        lq_query_free(&q);
        const char *m = "tail is a WebSocket: send Upgrade: websocket";
        httpd_respond(r, 400, "text/plain; charset=utf-8", m, strlen(m));
        return;
    }
    long limit = TAIL_MAX;
    const char *v = http_form_get(f, "limit");
    if (v && (limit = strtol(v, NULL, 10)) <= 0)
        limit = TAIL_MAX;
    if (limit > (long)s->conf->limits.max_entries_per_query)
        limit = (long)s->conf->limits.max_entries_per_query;
    int64_t now = (int64_t)(cairn_wall_time() * 1e9), start = now - 3600LL * 1000000000;
    if ((v = http_form_get(f, "start"))) {
        char *e;
        long long x = strtoll(v, &e, 10);
        if (!*e && e != v)
            start = x;
    }
    struct logs_tailer *t = calloc(1, sizeof(*t));
    if (!t) {
        lq_query_free(&q);
        httpd_respond(r, 500, "text/plain; charset=utf-8", "out of memory\n", 14);
        return;
    }
    t->s = s;
    t->q = q;
    snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
    lq_lb_init(&t->lb);
    /* what is there already: the newest `limit` entries since start, oldest first */
    struct lq_params p = { .start = start, .end = now + 1, .limit = (int)limit, .backward = true };
    struct ls_query_ctx ctx = { &s->store, t->tenant, 0, 0 };
    struct lq_source src = { &ctx, logs_store_select };
    struct lq_result res;
    struct buf b = { 0 };
    bool first = true;
    if (lq_eval(q, &p, &src, &res, err, sizeof(err)) == 0) {
        buf_puts(&b, "{\"streams\":[");
        for (int i = 0; i < res.nst; i++)
            for (int j = res.st[i].n - 1; j >= 0; j--)
                put_entry(&b, &first, res.st[i].l, res.st[i].nl, res.st[i].ts[j], res.st[i].lines[j],
                          res.st[i].lens[j]);
        buf_puts(&b, "],\"dropped_entries\":null}");
        lq_result_free(&res);
    }
    t->ws = ws_accept(r, &s->pool.w[0].loop, &tail_ops, t);
    if (!t->ws) {
        buf_free(&b);
        lq_query_free(&t->q);
        lq_lb_free(&t->lb);
        free(t);
        return;
    }
    t->next = s->tailers;
    s->tailers = t;
    if (!first)
        send_or_drop(t, &b);
    buf_free(&b);
}

void logs__tail_stop(struct logs_svc *s)
{
    while (s->tailers)
        ws_close(s->tailers->ws, 1001, "going away");
}
