/* alerts_notify.c - the integrations: webhook, slack and email.
 *
 * Webhook and Slack requests go out on the loop's HTTP client, so a slow or
 * unreachable receiver holds nothing but its own retry timer. Email speaks SMTP
 * (RFC 5321) with STARTTLS (RFC 3207) or implicit TLS on port 465, and AUTH
 * PLAIN, LOGIN or CRAM-MD5 as the server offers, from a short-lived thread with
 * blocking sockets and timeouts; the thread hands its result back to the loop.
 *
 * Bodies follow Alertmanager 0.25: the webhook message (version "4") is its
 * template data as JSON; Slack and email render Alertmanager's default templates
 * (the subject "[FIRING:n] group values (other common values)").
 */
#include "alerts_internal.h"
#include "core/gotmpl.h"
#include "core/log.h"

#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const char *am__integration_name(enum am_integration_kind k)
{
    return k == AM_WEBHOOK ? "webhook" : k == AM_EMAIL ? "email" : k == AM_SLACK ? "slack"
           : k == AM_PAGERDUTY ? "pagerduty" : "opsgenie";
}

/* ---- template data ---- */

struct tdata {
    struct am_alert **v;
    size_t n;
    bool firing;                    /* .Status */
    size_t nfiring;
    struct am_lset common_labels, common_ann;   /* borrowed strings */
};

static void common(struct am_lset *out, struct am_alert **v, size_t n, bool ann)
{
    out->n = 0;
    out->l = NULL;
    if (!n)
        return;
    const struct am_lset *first = ann ? &v[0]->annotations : &v[0]->labels;
    out->l = calloc(first->n + 1, sizeof(*out->l));
    if (!out->l)
        return;
    for (size_t i = 0; i < first->n; i++) {
        bool all = true;
        for (size_t k = 1; all && k < n; k++) {
            const char *x = am__lset_get(ann ? &v[k]->annotations : &v[k]->labels, first->l[i].name);
            all = x && !strcmp(x, first->l[i].value);
        }
        if (all)
            out->l[out->n++] = first->l[i];
    }
}

static void tdata_init(struct tdata *d, struct am_alert **v, size_t n, int64_t now)
{
    d->v = v;
    d->n = n;
    d->nfiring = 0;
    for (size_t i = 0; i < n; i++)
        d->nfiring += !am__alert_resolved_at(v[i], now);
    d->firing = d->nfiring > 0;
    common(&d->common_labels, v, n, false);
    common(&d->common_ann, v, n, true);
}

static void tdata_free(struct tdata *d)
{
    free(d->common_labels.l);
    free(d->common_ann.l);
}

static void subject(struct buf *b, const struct tdata *d, const struct am_lset *group)
{
    buf_printf(b, "[%s", d->firing ? "FIRING" : "RESOLVED");
    if (d->firing)
        buf_printf(b, ":%zu", d->nfiring);
    buf_puts(b, "] ");
    for (size_t i = 0; i < group->n; i++)
        buf_printf(b, "%s%s", i ? " " : "", group->l[i].value);
    buf_putc(b, ' ');
    if (d->common_labels.n > group->n) {
        buf_putc(b, '(');
        size_t k = 0;
        for (size_t i = 0; i < d->common_labels.n; i++) {
            if (am__lset_get(group, d->common_labels.l[i].name))
                continue;
            buf_printf(b, "%s%s", k++ ? " " : "", d->common_labels.l[i].value);
        }
        buf_putc(b, ')');
    }
}

void am__subject(struct buf *b, struct am_send *sd)
{
    struct tdata d;
    tdata_init(&d, sd->alerts, sd->nalerts, sd->f->now);
    subject(b, &d, &sd->f->g->labels);
    tdata_free(&d);
}

static void alerts_url(struct buf *b, struct am_send *sd)
{
    buf_printf(b, "%s/#/alerts?receiver=", sd->f->g->s->conf->external_url);
    gt_url_query_escape(b, sd->f->g->route->recv->name);
}

void am__webhook_body(struct buf *b, struct am_send *sd, size_t max_alerts)
{
    struct am_flush *f = sd->f;
    size_t n = sd->nalerts, truncated = 0;
    if (max_alerts && n > max_alerts) {
        truncated = n - max_alerts;
        n = max_alerts;
    }
    struct tdata d;
    tdata_init(&d, sd->alerts, n, f->now);
    buf_puts(b, "{\"receiver\":");
    buf_json_str(b, f->g->route->recv->name);
    buf_printf(b, ",\"status\":\"%s\",\"alerts\":[", d.firing ? "firing" : "resolved");
    for (size_t i = 0; i < n; i++) {
        const struct am_alert *a = sd->alerts[i];
        bool res = am__alert_resolved_at(a, f->now);
        buf_printf(b, "%s{\"status\":\"%s\",\"labels\":", i ? "," : "", res ? "resolved" : "firing");
        am__lset_json(b, &a->labels);
        buf_puts(b, ",\"annotations\":");
        am__lset_json(b, &a->annotations);
        buf_puts(b, ",\"startsAt\":\"");
        am__time_format(b, a->starts_at);
        buf_puts(b, "\",\"endsAt\":\"");
        am__time_format(b, res ? a->ends_at : 0);
        buf_puts(b, "\",\"generatorURL\":");
        buf_json_str(b, a->generator_url ? a->generator_url : "");
        buf_printf(b, ",\"fingerprint\":\"%016llx\"}", (unsigned long long)a->fp);
    }
    buf_puts(b, "],\"groupLabels\":");
    am__lset_json(b, &f->g->labels);
    buf_puts(b, ",\"commonLabels\":");
    am__lset_json(b, &d.common_labels);
    buf_puts(b, ",\"commonAnnotations\":");
    am__lset_json(b, &d.common_ann);
    buf_puts(b, ",\"externalURL\":");
    buf_json_str(b, f->g->s->conf->external_url);
    buf_puts(b, ",\"version\":\"4\",\"groupKey\":");
    buf_json_str(b, f->g->key);
    buf_printf(b, ",\"truncatedAlerts\":%zu}\n", truncated);
    tdata_free(&d);
}

/* ,"key":"value" when value is not empty (Go's omitempty) */
static void json_opt(struct buf *b, const char *key, const char *value)
{
    if (value && *value) {
        buf_printf(b, ",\"%s\":", key);
        buf_json_str(b, value);
    }
}

static void slack_body(struct buf *b, struct am_send *sd)
{
    const struct am_integration *in = sd->in;
    struct tdata d;
    tdata_init(&d, sd->alerts, sd->nalerts, sd->f->now);
    /* each field rendered once: plain text, a template, or NULL for the default */
    enum { CH, US, IE, IU, TI, TL, PR, TX, FB, FT, CO, CB, NF };
    const char *src[NF] = { in->channel, in->username, in->icon_emoji, in->icon_url, in->title,
                            in->title_link, in->pretext, in->stext, in->fallback, in->footer,
                            in->color, in->callback_id };
    struct buf r[NF];
    const char *f[NF];
    for (int i = 0; i < NF; i++) {
        r[i] = BUF_INIT;
        f[i] = am__render(sd, src[i], false, &r[i]);
    }
    struct buf title = BUF_INIT, link = BUF_INIT;
    if (f[TI])
        buf_puts(&title, f[TI]);
    else
        subject(&title, &d, &sd->f->g->labels);
    if (f[TL])
        buf_puts(&link, f[TL]);
    else
        alerts_url(&link, sd);
    buf_putc(&title, 0);
    buf_putc(&link, 0);
    buf_puts(b, "{");
    if (f[CH] && *f[CH]) {
        buf_puts(b, "\"channel\":");
        buf_json_str(b, f[CH]);
        buf_putc(b, ',');
    }
    buf_puts(b, "\"username\":");
    buf_json_str(b, f[US] ? f[US] : "Alertmanager");
    json_opt(b, "icon_emoji", f[IE]);
    json_opt(b, "icon_url", f[IU]);
    buf_puts(b, ",\"attachments\":[{\"title\":");
    buf_json_str(b, buf_head(&title));
    buf_puts(b, ",\"title_link\":");
    buf_json_str(b, buf_head(&link));
    json_opt(b, "pretext", f[PR]);
    buf_puts(b, ",\"text\":");
    buf_json_str(b, f[TX] ? f[TX] : "");
    buf_puts(b, ",\"fallback\":");
    if (f[FB])
        buf_json_str(b, f[FB]);
    else {
        /* slack.default.fallback: the default title and link, whatever the fields say */
        struct buf fb = BUF_INIT;
        subject(&fb, &d, &sd->f->g->labels);
        buf_puts(&fb, " | ");
        alerts_url(&fb, sd);
        buf_putc(&fb, 0);
        buf_json_str(b, buf_head(&fb));
        buf_free(&fb);
    }
    json_opt(b, "callback_id", f[CB]);
    json_opt(b, "footer", f[FT]);
    buf_puts(b, ",\"color\":");
    buf_json_str(b, f[CO] ? f[CO] : d.firing ? "danger" : "good");
    buf_puts(b, ",\"mrkdwn_in\":[\"fallback\",\"pretext\",\"text\"]}]}\n");
    buf_free(&title);
    buf_free(&link);
    for (int i = 0; i < NF; i++)
        buf_free(&r[i]);
    tdata_free(&d);
}

/* ---- PagerDuty (Events API v2) ---- */

#define PD_MAX_EVENT 512000     /* bytes; larger events lose their custom details */
#define PD_MAX_SUMMARY 1024     /* characters */

/* Appends s cut to n characters (UTF-8), the last one "…" when cut. */
static void truncate_chars(struct buf *b, const char *s, size_t n)
{
    size_t chars = 0, i = 0, cut = 0;
    for (; s[i]; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80) {
            if (chars == n - 1)
                cut = i;
            chars++;
        }
    if (chars <= n) {
        buf_puts(b, s);
        return;
    }
    buf_append(b, s, cut);
    buf_puts(b, "\xe2\x80\xa6");
}

/* The SHA-256 of the group key in hex, as Alertmanager's notify.Key.Hash: the
 * PagerDuty dedup_key and the OpsGenie alias. */
static void key_hash(const struct am_send *sd, char out[65])
{
    unsigned char md[32];
    unsigned int mdl = 0;
    EVP_Digest(sd->f->g->key, strlen(sd->f->g->key), md, &mdl, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void pagerduty_body(struct buf *b, struct am_send *sd)
{
    const struct am_integration *in = sd->in;
    struct tdata d;
    tdata_init(&d, sd->alerts, sd->nalerts, sd->f->now);
    enum { RK, CL, CU, DE, SE, SO, CS, CO, GR, NF };
    const char *src[NF] = { in->routing_key, in->client, in->client_url, in->description, in->severity,
                            in->source, in->pd_class, in->component, in->group };
    struct buf r[NF];
    const char *f[NF];
    for (int i = 0; i < NF; i++) {
        r[i] = BUF_INIT;
        f[i] = am__render(sd, src[i], false, &r[i]);
    }
    if (!f[RK] || !*f[RK]) {
        if (!sd->tmpl_failed)
            log_error("template failed", "receiver", sd->f->g->route->recv->name, "error",
                      "routing key cannot be empty");
        sd->tmpl_failed = true;
    }
    char dedup[65];
    key_hash(sd, dedup);
    struct buf details = BUF_INIT, tmp = BUF_INIT;
    buf_putc(&details, '{');
    for (size_t i = 0; i < in->ndetails; i++) {
        if (i)
            buf_putc(&details, ',');
        buf_json_str(&details, in->details[i].name);
        buf_putc(&details, ':');
        const char *v = am__render(sd, in->details[i].value, false, &tmp);
        buf_json_str(&details, v ? v : "");
    }
    buf_putc(&details, '}');
    buf_putc(&details, 0);
    for (int pass = 0; pass < 2; pass++) {
        size_t start = b->len;
        buf_puts(b, "{\"routing_key\":");
        buf_json_str(b, f[RK] ? f[RK] : "");
        buf_printf(b, ",\"dedup_key\":\"%s\",\"event_action\":\"%s\",\"payload\":{\"summary\":", dedup,
                   d.firing ? "trigger" : "resolve");
        struct buf sum = BUF_INIT;
        truncate_chars(&sum, f[DE] ? f[DE] : "", PD_MAX_SUMMARY);
        buf_putc(&sum, 0);
        buf_json_str(b, buf_head(&sum));
        buf_free(&sum);
        buf_puts(b, ",\"source\":");
        buf_json_str(b, f[SO] ? f[SO] : "");
        buf_puts(b, ",\"severity\":");
        buf_json_str(b, f[SE] ? f[SE] : "");
        json_opt(b, "class", f[CS]);
        json_opt(b, "component", f[CO]);
        json_opt(b, "group", f[GR]);
        if (pass == 0)
            buf_printf(b, ",\"custom_details\":%s}", buf_head(&details));
        else
            buf_printf(b, ",\"custom_details\":{\"error\":\"Custom details have been removed because "
                          "the original event exceeds the maximum size of 512kB\"}}");
        json_opt(b, "client", f[CL]);
        json_opt(b, "client_url", f[CU]);
        /* images and links: those whose src / href renders non-empty */
        const struct am_pd_ref *refs[2] = { in->images, in->links };
        size_t nrefs[2] = { in->nimages, in->nlinks };
        for (int k = 0; k < 2; k++) {
            bool any = false;
            for (size_t i = 0; i < nrefs[k]; i++) {
                struct buf x = BUF_INIT, y = BUF_INIT, z = BUF_INIT;
                const char *a = am__render(sd, refs[k][i].a, false, &x);
                const char *bb = am__render(sd, refs[k][i].b, false, &y);
                const char *cc = k == 0 ? am__render(sd, refs[k][i].c, false, &z) : NULL;
                if (a && *a) {
                    buf_puts(b, any ? "," : k == 0 ? ",\"images\":[" : ",\"links\":[");
                    any = true;
                    buf_puts(b, k == 0 ? "{\"src\":" : "{\"href\":");
                    buf_json_str(b, a);
                    buf_puts(b, k == 0 ? ",\"alt\":" : ",\"text\":");
                    buf_json_str(b, bb ? bb : "");
                    if (k == 0) {
                        buf_puts(b, ",\"href\":");
                        buf_json_str(b, cc ? cc : "");
                    }
                    buf_putc(b, '}');
                }
                buf_free(&x);
                buf_free(&y);
                buf_free(&z);
            }
            if (any)
                buf_putc(b, ']');
        }
        buf_puts(b, "}\n");
        if (b->len - start <= PD_MAX_EVENT)
            break;
        log_warn("PagerDuty event over 512 kB: custom details removed", "receiver",
                 sd->f->g->route->recv->name, "bytes", log_int((long long)(b->len - start)));
        b->len = start;     /* again, without them */
    }
    buf_free(&details);
    buf_free(&tmp);
    for (int i = 0; i < NF; i++)
        buf_free(&r[i]);
    tdata_free(&d);
}

/* ---- OpsGenie (Alert API v2) ---- */

#define OG_MAX_MESSAGE 130      /* characters */

/* Alertmanager's safeSplit: the items of s between commas, the whole string
 * trimmed first and empty items dropped (the items themselves keep their spaces).
 * Call with *pos = 0; false at the end. */
static bool next_item(const char *s, size_t *pos, const char **item, size_t *len)
{
    size_t b = 0, n = strlen(s);
    while (b < n && strchr(" \t\n\r", s[b]))
        b++;
    while (n > b && strchr(" \t\n\r", s[n - 1]))
        n--;
    size_t i = *pos < b ? b : *pos;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != ',')
            j++;
        *pos = j + 1;
        if (j > i) {
            *item = s + i;
            *len = j - i;
            return true;
        }
        i = j + 1;
    }
    *pos = n;
    return false;
}

/* ,"key":["item",...] for the items of s; nothing when there are none */
static void og_list(struct buf *b, const char *key, const char *s)
{
    size_t pos = 0, len;
    const char *item;
    bool any = false;
    while (s && next_item(s, &pos, &item, &len)) {
        buf_printf(b, any ? ",\"" : ",\"%s\":[\"", key);
        any = true;
        buf_json_escape(b, item, len);
        buf_putc(b, '"');
    }
    if (any)
        buf_putc(b, ']');
}

/* The request for a notification: a create (firing) or a close (resolved); target
 * gets its path and query, key the API key. */
static void opsgenie_body(struct buf *b, struct am_send *sd, struct buf *target, struct buf *key)
{
    const struct am_integration *in = sd->in;
    struct tdata d;
    tdata_init(&d, sd->alerts, sd->nalerts, sd->f->now);
    char alias[65];
    key_hash(sd, alias);
    struct buf r = BUF_INIT;
    const char *k = am__render(sd, in->api_key, false, &r);
    buf_puts(key, k ? k : "");
    buf_putc(key, 0);
    struct buf rs = BUF_INIT;
    const char *src = am__render(sd, in->og_source, false, &rs);
    if (!src)
        src = "";
    buf_puts(target, in->url.target);
    if (!d.firing) {
        buf_printf(target, "v2/alerts/%s/close?identifierType=alias", alias);
        buf_puts(b, "{\"source\":");
        buf_json_str(b, src);
        buf_puts(b, "}\n");
        buf_putc(target, 0);
        buf_free(&r);
        buf_free(&rs);
        tdata_free(&d);
        return;
    }
    buf_puts(target, "v2/alerts");
    buf_putc(target, 0);
    buf_printf(b, "{\"alias\":\"%s\",\"message\":", alias);
    struct buf m = BUF_INIT;
    const char *msg = am__render(sd, in->message, false, &r);
    truncate_chars(&m, msg ? msg : "", OG_MAX_MESSAGE);
    buf_putc(&m, 0);
    buf_json_str(b, buf_head(&m));
    buf_free(&m);
    json_opt(b, "description", am__render(sd, in->og_description, false, &r));
    /* details: the common labels, then the configured ones over them */
    buf_puts(b, ",\"details\":{");
    size_t i = 0, j = 0;
    bool first = true;
    while (i < d.common_labels.n || j < in->ndetails) {
        int cmp = i >= d.common_labels.n ? 1 : j >= in->ndetails ? -1
                  : strcmp(d.common_labels.l[i].name, in->details[j].name);
        const char *name, *val;
        if (cmp < 0) {
            name = d.common_labels.l[i].name;
            val = d.common_labels.l[i++].value;
        } else {
            name = in->details[j].name;
            val = am__render(sd, in->details[j++].value, false, &r);
            i += cmp == 0;
        }
        if (!first)
            buf_putc(b, ',');
        first = false;
        buf_json_str(b, name);
        buf_putc(b, ':');
        buf_json_str(b, val ? val : "");
    }
    buf_puts(b, "},\"source\":");
    buf_json_str(b, src);
    /* responders: empty ones dropped, a "teams" one split into a team each */
    bool any = false;
    for (size_t n = 0; n < in->nimages; n++) {
        const struct am_pd_ref *rp = &in->images[n];
        struct buf x[4] = { BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT };
        const char *f[4] = { am__render(sd, rp->a, false, &x[0]), am__render(sd, rp->b, false, &x[1]),
                             am__render(sd, rp->c, false, &x[2]), am__render(sd, rp->d, false, &x[3]) };
        for (int q = 0; q < 4; q++)
            if (!f[q])
                f[q] = "";
        if (*f[0] || *f[1] || *f[2] || *f[3]) {
            if (strcmp(f[3], "teams") == 0) {
                size_t pos = 0, len;
                const char *item;
                while (next_item(f[1], &pos, &item, &len)) {
                    buf_puts(b, any ? ",{\"name\":\"" : ",\"responders\":[{\"name\":\"");
                    any = true;
                    buf_json_escape(b, item, len);
                    buf_puts(b, "\",\"type\":\"team\"}");
                }
            } else {
                buf_puts(b, any ? ",{" : ",\"responders\":[{");
                any = true;
                static const char *const keys[] = { "id", "name", "username" };
                for (int q = 0; q < 3; q++)
                    if (*f[q]) {
                        buf_printf(b, "\"%s\":", keys[q]);
                        buf_json_str(b, f[q]);
                        buf_putc(b, ',');
                    }
                buf_puts(b, "\"type\":");
                buf_json_str(b, f[3]);
                buf_putc(b, '}');
            }
        }
        for (int q = 0; q < 4; q++)
            buf_free(&x[q]);
    }
    if (any)
        buf_putc(b, ']');
    og_list(b, "tags", am__render(sd, in->tags, false, &r));
    json_opt(b, "note", am__render(sd, in->note, false, &r));
    json_opt(b, "priority", am__render(sd, in->priority, false, &r));
    json_opt(b, "entity", am__render(sd, in->entity, false, &r));
    og_list(b, "actions", am__render(sd, in->actions, false, &r));
    buf_puts(b, "}\n");
    buf_free(&r);
    buf_free(&rs);
    tdata_free(&d);
}

/* ---- email ---- */

static void alert_list_html(struct buf *b, const struct tdata *d, bool firing, int64_t now)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct am_alert *a = d->v[i];
        if (am__alert_resolved_at(a, now) == firing)
            continue;
        buf_puts(b, "<tr><td style=\"padding:8px 0;border-top:1px solid #e9e9e9\"><strong>Labels</strong><br/>\n");
        for (size_t k = 0; k < a->labels.n; k++) {
            gt_html_escape(b, a->labels.l[k].name);
            buf_puts(b, " = ");
            gt_html_escape(b, a->labels.l[k].value);
            buf_puts(b, "<br/>\n");
        }
        if (a->annotations.n)
            buf_puts(b, "<strong>Annotations</strong><br/>\n");
        for (size_t k = 0; k < a->annotations.n; k++) {
            gt_html_escape(b, a->annotations.l[k].name);
            buf_puts(b, " = ");
            gt_html_escape(b, a->annotations.l[k].value);
            buf_puts(b, "<br/>\n");
        }
        buf_puts(b, "<a href=\"");
        gt_html_escape(b, a->generator_url ? a->generator_url : "");
        buf_puts(b, "\">Source</a></td></tr>\n");
    }
}

static void email_html(struct buf *b, struct am_send *sd, const struct tdata *d, const char *subj)
{
    size_t nres = d->n - d->nfiring;
    buf_puts(b, "<!DOCTYPE html>\n<html><head><meta name=\"viewport\" content=\"width=device-width\"/>"
                "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\"/><title>");
    gt_html_escape(b, subj);
    buf_puts(b, "</title></head>\n<body style=\"font-family:Helvetica,Arial,sans-serif\">\n"
                "<table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\">\n<tr><td style=\"");
    buf_puts(b, d->firing ? "background-color:#E6522C" : "background-color:#68B90F");
    buf_puts(b, ";color:#fff;padding:20px;font-size:16px\">");
    if (d->firing)
        buf_printf(b, "%zu alert%s for ", d->nfiring, d->nfiring == 1 ? "" : "s");
    else
        buf_printf(b, "%zu alert%s resolved for ", nres, nres == 1 ? "" : "s");
    const struct am_lset *gl = &sd->f->g->labels;
    for (size_t i = 0; i < gl->n; i++) {
        buf_printf(b, "%s", i ? " " : "");
        gt_html_escape(b, gl->l[i].name);
        buf_putc(b, '=');
        gt_html_escape(b, gl->l[i].value);
    }
    buf_puts(b, "</td></tr>\n<tr><td style=\"padding:20px\"><a href=\"");
    struct buf u = BUF_INIT;
    alerts_url(&u, sd);
    buf_putc(&u, 0);
    gt_html_escape(b, buf_head(&u));
    buf_free(&u);
    buf_puts(b, "\">View in Alertmanager</a></td></tr>\n");
    if (d->nfiring) {
        buf_printf(b, "<tr><td><strong>[%zu] Firing</strong></td></tr>\n", d->nfiring);
        alert_list_html(b, d, true, sd->f->now);
    }
    if (nres) {
        buf_printf(b, "<tr><td><strong>[%zu] Resolved</strong></td></tr>\n", nres);
        alert_list_html(b, d, false, sd->f->now);
    }
    buf_puts(b, "</table>\n<p style=\"color:#999;font-size:12px\">Sent by cairn alerts</p>\n"
                "</body></html>\n");
}

/* RFC 2045 quoted-printable, lines at most 76 characters */
static void qp(struct buf *b, const char *s)
{
    size_t col = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') {
            buf_puts(b, "\r\n");
            col = 0;
            continue;
        }
        bool lit = (c >= 33 && c <= 126 && c != '=') || (c == ' ' && s[1] && s[1] != '\n');
        size_t w = lit ? 1 : 3;
        if (col + w > 75) {
            buf_puts(b, "=\r\n");
            col = 0;
        }
        if (lit)
            buf_putc(b, (char)c);
        else
            buf_printf(b, "=%02X", c);
        col += w;
    }
    buf_puts(b, "\r\n");
}

static bool header_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80 || *s == '\r' || *s == '\n')
            return false;
    return true;
}

static void header_value(struct buf *b, const char *s)
{
    if (header_ascii(s)) {
        buf_puts(b, s);
        return;
    }
    /* RFC 2047 encoded-word, base64 */
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    buf_puts(b, "=?UTF-8?b?");
    size_t n = strlen(s);
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        buf_putc(b, tbl[v >> 18 & 63]);
        buf_putc(b, tbl[v >> 12 & 63]);
        buf_putc(b, i + 1 < n ? tbl[v >> 6 & 63] : '=');
        buf_putc(b, i + 2 < n ? tbl[v & 63] : '=');
    }
    buf_puts(b, "?=");
}

struct smtp_job {
    struct am_send *sd;             /* NULL once the send was cancelled */
    struct loop *loop;
    struct am_svc *s;
    char *smarthost, *hello, *from_addr, *user, *pass, *identity, *secret, *ca_file, *server_name;
    char **rcpt;
    size_t nrcpt;
    bool require_tls, insecure;
    char *message;
    int timeout_s;
    /* result */
    bool ok, retry;
    char err[256];
};

static void job_free(struct smtp_job *j)
{
    char *f[] = { j->smarthost, j->hello, j->from_addr, j->user, j->pass, j->identity, j->secret,
                  j->ca_file, j->server_name, j->message };
    for (size_t i = 0; i < ARRAY_SIZE(f); i++)
        free(f[i]);
    for (size_t i = 0; i < j->nrcpt; i++)
        free(j->rcpt[i]);
    free(j->rcpt);
    free(j);
}

/* The address inside "Name <addr>", or the whole string. */
static char *addr_of(const char *s)
{
    const char *lt = strrchr(s, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt)
        return strndup(lt + 1, (size_t)(gt - lt - 1));
    while (*s == ' ')
        s++;
    size_t l = strlen(s);
    while (l && s[l - 1] == ' ')
        l--;
    return strndup(s, l);
}

struct smtp_conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    char in[4096];
    size_t inlen;
};

static int sc_write(struct smtp_conn *c, const char *p, size_t n)
{
    while (n) {
        ssize_t w = c->ssl ? SSL_write(c->ssl, p, (int)n) : send(c->fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int sc_printf(struct smtp_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sc_printf(struct smtp_conn *c, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        return -E2BIG;
    memcpy(line + n, "\r\n", 2);
    return sc_write(c, line, (size_t)n + 2);
}

/* Reads a (multi-line) reply; returns its code and copies the text lines. */
static int sc_reply(struct smtp_conn *c, char *text, size_t textlen)
{
    size_t tl = 0;
    if (textlen)
        text[0] = 0;
    for (;;) {
        char *nl = memchr(c->in, '\n', c->inlen);
        if (!nl) {
            if (c->inlen == sizeof(c->in))
                return -E2BIG;
            ssize_t r = c->ssl ? SSL_read(c->ssl, c->in + c->inlen, (int)(sizeof(c->in) - c->inlen))
                               : recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
            if (r <= 0)
                return -EIO;
            c->inlen += (size_t)r;
            continue;
        }
        size_t ll = (size_t)(nl - c->in) + 1;
        char line[1024];
        size_t cl = ll < sizeof(line) ? ll : sizeof(line) - 1;
        memcpy(line, c->in, cl);
        line[cl] = 0;
        memmove(c->in, c->in + ll, c->inlen - ll);
        c->inlen -= ll;
        if (strlen(line) < 4)
            return -EPROTO;
        if (text && tl + strlen(line) + 1 < textlen) {
            memcpy(text + tl, line + 4, strlen(line + 4) + 1);
            tl += strlen(line + 4);
        }
        if (line[3] != '-')
            return atoi(line);
    }
}

static int sc_cmd(struct smtp_conn *c, int want, char *text, size_t tl, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int sc_cmd(struct smtp_conn *c, int want, char *text, size_t tl, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (sc_printf(c, "%s", line))
        return -EIO;
    int code = sc_reply(c, text, tl);
    if (code < 0)
        return code;
    return code / 100 == want / 100 ? 0 : code;
}

static int b64(const unsigned char *in, size_t n, char *out, size_t outlen)
{
    if (outlen < 4 * ((n + 2) / 3) + 1)
        return -E2BIG;
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    return 0;
}

static int smtp_start_tls(struct smtp_conn *c, struct smtp_job *j, const char *host)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx)
        return -ENOMEM;
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    if (!j->insecure) {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        if (j->ca_file ? SSL_CTX_load_verify_locations(c->ctx, j->ca_file, NULL) != 1
                       : SSL_CTX_set_default_verify_paths(c->ctx) != 1)
            return -EINVAL;
    }
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl)
        return -ENOMEM;
    SSL_set_fd(c->ssl, c->fd);
    const char *name = j->server_name ? j->server_name : host;
    unsigned char ip[16];
    bool literal = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    if (!literal)
        SSL_set_tlsext_host_name(c->ssl, name);     /* RFC 6066: no IP literals in SNI */
    if (!j->insecure) {
        if (literal)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
        else
            SSL_set1_host(c->ssl, name);
    }
    if (SSL_connect(c->ssl) != 1)
        return -EPROTO;
    return 0;
}

static void *smtp_thread(void *arg)
{
    struct smtp_job *j = arg;
    struct smtp_conn c = { .fd = -1 };
    char text[2048], host[256], port[16];
    snprintf(host, sizeof(host), "%s", j->smarthost);
    char *colon = strrchr(host, ':');
    *colon = 0;
    snprintf(port, sizeof(port), "%s", colon + 1);
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    j->retry = true;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r || !res) {
        snprintf(j->err, sizeof(j->err), "resolve %s: %s", host, gai_strerror(r));
        goto out;
    }
    c.fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = { j->timeout_s, 0 };
    if (c.fd != -1) {
        setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (c.fd == -1 || connect(c.fd, res->ai_addr, res->ai_addrlen) == -1) {
        snprintf(j->err, sizeof(j->err), "establish connection to server: dial tcp %s: %s",
                 j->smarthost, strerror(errno));
        freeaddrinfo(res);
        goto out;
    }
    freeaddrinfo(res);
    bool tls = !strcmp(port, "465");
    if (tls && smtp_start_tls(&c, j, host)) {
        snprintf(j->err, sizeof(j->err), "TLS handshake with %s failed", j->smarthost);
        goto out;
    }
    if ((r = sc_reply(&c, text, sizeof(text))) != 220) {
        snprintf(j->err, sizeof(j->err), "unexpected greeting %d", r);
        goto out;
    }
    if ((r = sc_cmd(&c, 250, text, sizeof(text), "EHLO %s", j->hello))) {
        snprintf(j->err, sizeof(j->err), "EHLO: %d", r);
        goto out;
    }
    if (!tls) {
        if (strstr(text, "STARTTLS")) {
            if ((r = sc_cmd(&c, 220, NULL, 0, "STARTTLS")) || smtp_start_tls(&c, j, host)) {
                snprintf(j->err, sizeof(j->err), "send STARTTLS command: %d", r);
                goto out;
            }
            if ((r = sc_cmd(&c, 250, text, sizeof(text), "EHLO %s", j->hello))) {
                snprintf(j->err, sizeof(j->err), "EHLO after STARTTLS: %d", r);
                goto out;
            }
        } else if (j->require_tls) {
            snprintf(j->err, sizeof(j->err), "'require_tls' is true (default) but \"%s\" does not "
                                             "advertise the STARTTLS extension", j->smarthost);
            goto out;
        }
    }
    char *auth = strstr(text, "AUTH");
    if (auth && j->user && *j->user) {
        char mechs[256];
        snprintf(mechs, sizeof(mechs), "%s", auth + 4);
        char *nl = strchr(mechs, '\n');
        if (nl)
            *nl = 0;
        char enc[1024];
        if (strstr(mechs, "CRAM-MD5") && j->secret && *j->secret) {
            if ((r = sc_cmd(&c, 334, text, sizeof(text), "AUTH CRAM-MD5"))) {
                snprintf(j->err, sizeof(j->err), "AUTH CRAM-MD5: %d", r);
                goto out;
            }
            unsigned char chal[512], mac[EVP_MAX_MD_SIZE];
            char *e = strpbrk(text, "\r\n");
            if (e)
                *e = 0;
            int cl = EVP_DecodeBlock(chal, (const unsigned char *)text, (int)strlen(text));
            unsigned ml = 0;
            HMAC(EVP_md5(), j->secret, (int)strlen(j->secret), chal, cl > 0 ? (size_t)cl : 0, mac, &ml);
            char resp[600];
            int k = snprintf(resp, sizeof(resp), "%s ", j->user);
            for (unsigned i = 0; i < ml && k < (int)sizeof(resp) - 3; i++)
                k += snprintf(resp + k, sizeof(resp) - (size_t)k, "%02x", mac[i]);
            b64((unsigned char *)resp, (size_t)k, enc, sizeof(enc));
            r = sc_cmd(&c, 235, NULL, 0, "%s", enc);
        } else if (strstr(mechs, "PLAIN") && j->pass) {
            unsigned char raw[768];
            int k = snprintf((char *)raw, sizeof(raw), "%s%c%s%c%s", j->identity ? j->identity : "",
                             0, j->user, 0, j->pass);
            if (k < 0 || (size_t)k >= sizeof(raw) || b64(raw, (size_t)k, enc, sizeof(enc))) {
                snprintf(j->err, sizeof(j->err), "credentials too long");
                goto out;
            }
            r = sc_cmd(&c, 235, NULL, 0, "AUTH PLAIN %s", enc);
        } else if (strstr(mechs, "LOGIN") && j->pass) {
            b64((const unsigned char *)j->user, strlen(j->user), enc, sizeof(enc));
            r = sc_cmd(&c, 334, NULL, 0, "AUTH LOGIN");
            if (!r)
                r = sc_cmd(&c, 334, NULL, 0, "%s", enc);
            b64((const unsigned char *)j->pass, strlen(j->pass), enc, sizeof(enc));
            if (!r)
                r = sc_cmd(&c, 235, NULL, 0, "%s", enc);
        } else {
            snprintf(j->err, sizeof(j->err), "unknown auth mechanism: %.200s", mechs);
            j->retry = false;
            goto out;
        }
        if (r) {
            snprintf(j->err, sizeof(j->err), "%d auth failed", r);
            goto out;
        }
    }
    if ((r = sc_cmd(&c, 250, NULL, 0, "MAIL FROM:<%s>", j->from_addr))) {
        snprintf(j->err, sizeof(j->err), "send MAIL command: %d", r);
        goto out;
    }
    for (size_t i = 0; i < j->nrcpt; i++)
        if ((r = sc_cmd(&c, 250, NULL, 0, "RCPT TO:<%s>", j->rcpt[i]))) {
            snprintf(j->err, sizeof(j->err), "send RCPT command: %d", r);
            goto out;
        }
    if ((r = sc_cmd(&c, 354, NULL, 0, "DATA"))) {
        snprintf(j->err, sizeof(j->err), "send DATA command: %d", r);
        goto out;
    }
    /* dot-stuffing (RFC 5321 4.5.2): the message has CRLF line ends */
    struct buf m = BUF_INIT;
    for (const char *p = j->message; *p; p++) {
        if (*p == '.' && (p == j->message || p[-1] == '\n'))
            buf_putc(&m, '.');
        buf_putc(&m, *p);
    }
    buf_puts(&m, ".\r\n");
    r = sc_write(&c, buf_head(&m), buf_used(&m));
    buf_free(&m);
    if (r || (r = sc_reply(&c, NULL, 0)) / 100 != 2) {
        snprintf(j->err, sizeof(j->err), "send message: %d", r);
        goto out;
    }
    sc_cmd(&c, 221, NULL, 0, "QUIT");
    j->ok = true;
out:
    if (c.ssl) {
        SSL_shutdown(c.ssl);
        SSL_free(c.ssl);
    }
    if (c.ctx)
        SSL_CTX_free(c.ctx);
    if (c.fd != -1)
        close(c.fd);
    ERR_clear_error();
    OPENSSL_thread_stop();
    return NULL;
}

static void build_message(struct buf *b, struct am_send *sd)
{
    const struct am_integration *in = sd->in;
    struct tdata d;
    tdata_init(&d, sd->alerts, sd->nalerts, sd->f->now);
    struct buf subj = BUF_INIT, rb = BUF_INIT;
    const char *rs = am__render(sd, in->subject, false, &rb);
    if (rs)
        buf_puts(&subj, rs);
    else
        subject(&subj, &d, &sd->f->g->labels);
    buf_putc(&subj, 0);
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    char host[128] = "localhost";
    gethostname(host, sizeof(host) - 1);
    uint64_t rnd = cairn_rand64();
    bool have_to = false, have_from = false;
    for (size_t i = 0; i < in->nheaders; i++) {
        have_to |= !strcasecmp(in->headers[i].name, "To");
        have_from |= !strcasecmp(in->headers[i].name, "From");
        buf_printf(b, "%s: ", in->headers[i].name);
        header_value(b, am__render(sd, in->headers[i].value, false, &rb));
        buf_puts(b, "\r\n");
    }
    if (!have_from) {
        buf_puts(b, "From: ");
        header_value(b, in->from);
        buf_puts(b, "\r\n");
    }
    if (!have_to) {
        buf_puts(b, "To: ");
        header_value(b, in->to_text);
        buf_puts(b, "\r\n");
    }
    buf_puts(b, "Subject: ");
    header_value(b, buf_head(&subj));
    buf_printf(b, "\r\nDate: %s\r\nMessage-Id: <%lld.%016llx@%s>\r\nMIME-Version: 1.0\r\n", date,
               (long long)t, (unsigned long long)rnd, host);
    char boundary[40];
    snprintf(boundary, sizeof(boundary), "%016llx%08x", (unsigned long long)cairn_rand64(),
             (unsigned)(rnd & 0xffffffff));
    buf_printf(b, "Content-Type: multipart/alternative;  boundary=%s\r\n\r\n", boundary);
    if (in->text) {
        buf_printf(b, "--%s\r\nContent-Transfer-Encoding: quoted-printable\r\n"
                      "Content-Type: text/plain; charset=UTF-8\r\n\r\n", boundary);
        qp(b, am__render(sd, in->text, false, &rb));
    }
    buf_printf(b, "--%s\r\nContent-Transfer-Encoding: quoted-printable\r\n"
                  "Content-Type: text/html; charset=UTF-8\r\n\r\n", boundary);
    struct buf html = BUF_INIT;
    if (in->html)
        buf_puts(&html, am__render(sd, in->html, true, &rb));
    else
        email_html(&html, sd, &d, buf_head(&subj));
    buf_putc(&html, 0);
    qp(b, buf_head(&html));
    buf_printf(b, "--%s--\r\n", boundary);
    buf_free(&html);
    buf_free(&subj);
    buf_free(&rb);
    tdata_free(&d);
}

/* ---- sending ---- */

static void observe(struct am_send *sd, bool ok)
{
    struct am_svc *s = sd->f->g->s;
    const char *name = am__integration_name(sd->in->kind);
    metric_inc(metrics_get1(s->f_requests, name));
    if (!ok)
        metric_inc(metrics_get1(s->f_requests_failed, name));
    metric_observe(metrics_get1(s->f_latency, name),
                   (double)(cairn_now_ns() - sd->started_ns) / 1e9);
}

static void release_slot(struct am_send *sd);

static void finish(struct am_send *sd, bool ok, bool retry, const char *err)
{
    struct am_svc *s = sd->f->g->s;
    release_slot(sd);
    const char *name = am__integration_name(sd->in->kind);
    if (!ok && !(retry && loop_now(&s->loop) + sd->backoff_ms < sd->f->deadline_ms))
        metric_inc(metrics_get1(s->f_notif_failed, name));
    am__send_finished(sd, ok, retry, err);
}

static void http_done(const struct httpc_response *resp, void *arg)
{
    struct am_send *sd = arg;
    sd->call = NULL;
    char err[160];
    bool ok = !resp->error && resp->status / 100 == 2;
    bool retry = resp->error || resp->status / 100 == 5 ||
                 (sd->in->kind != AM_WEBHOOK && resp->status == 429);
    if (resp->error)
        snprintf(err, sizeof(err), "Post \"%s\": %s", sd->in->url.text, cairn_strerror(resp->error));
    else
        snprintf(err, sizeof(err), "unexpected status code %d: %s", resp->status,
                 sd->in->url.text);
    observe(sd, ok);
    finish(sd, ok, retry, err);
}

static void smtp_result(void *arg)
{
    struct smtp_job *j = arg;
    j->s->smtp_threads--;
    struct am_send *sd = j->sd;
    if (sd) {
        sd->job = NULL;
        observe(sd, j->ok);
        finish(sd, j->ok, j->retry, j->err);
    }
    job_free(j);
}

static void *smtp_main(void *arg)
{
    struct smtp_job *j = arg;
    smtp_thread(j);
    if (loop_post(j->loop, smtp_result, j))
        log_error("cannot hand an email result back to the loop");
    return NULL;
}

#define HTTP_SLOTS 32    /* concurrent requests to one webhook or Slack integration */
#define SMTP_SLOTS 4     /* concurrent SMTP sessions to one email integration */

static void transmit(struct am_send *sd);

static void release_slot(struct am_send *sd)
{
    struct am_integration *in = (struct am_integration *)sd->in;
    if (!sd->holds_slot)
        return;
    sd->holds_slot = false;
    in->inflight--;
    struct am_send *next = in->wait_head;
    if (!next)
        return;
    in->wait_head = next->wnext;
    if (in->wait_head)
        in->wait_head->wprev = NULL;
    else
        in->wait_tail = NULL;
    next->waiting = false;
    next->wnext = next->wprev = NULL;
    /* from a timer, not from here: the caller may be about to free its flush */
    loop_timer_start(&next->f->g->s->loop, &next->retry, 0);
}

void am__send_start(struct am_send *sd)
{
    struct am_svc *s = sd->f->g->s;
    struct am_integration *in = (struct am_integration *)sd->in;
    if (!sd->counted) {
        sd->counted = true;
        metric_inc(metrics_get1(s->f_notifications, am__integration_name(in->kind)));
    }
    if (sd->nfiring == 0 && !in->send_resolved) {
        sd->attempts++;
        am__send_finished(sd, true, false, NULL);
        return;
    }
    if (!sd->holds_slot) {
        if (in->inflight >= (in->kind == AM_EMAIL ? SMTP_SLOTS : HTTP_SLOTS)) {
            sd->waiting = true;
            sd->wprev = in->wait_tail;
            sd->wnext = NULL;
            if (in->wait_tail)
                in->wait_tail->wnext = sd;
            else
                in->wait_head = sd;
            in->wait_tail = sd;
            return;
        }
        in->inflight++;
        sd->holds_slot = true;
    }
    sd->attempts++;
    transmit(sd);
}

static void transmit(struct am_send *sd)
{
    struct am_svc *s = sd->f->g->s;
    const struct am_integration *in = sd->in;
    sd->started_ns = cairn_now_ns();
    if (in->kind != AM_EMAIL) {
        struct buf body = BUF_INIT, target = BUF_INIT, key = BUF_INIT;
        if (in->kind == AM_WEBHOOK)
            am__webhook_body(&body, sd, (size_t)in->max_alerts);
        else if (in->kind == AM_SLACK)
            slack_body(&body, sd);
        else if (in->kind == AM_PAGERDUTY)
            pagerduty_body(&body, sd);
        else
            opsgenie_body(&body, sd, &target, &key);
        if (sd->tmpl_failed) {
            buf_free(&body);
            buf_free(&target);
            buf_free(&key);
            finish(sd, false, false, "template failed (see the error above)");
            return;
        }
        char authz[1100];
        const char *hdrs[4] = { "Content-Type: application/json",
                                "User-Agent: Alertmanager/0.25.0 (cairn)", NULL, NULL };
        if (in->kind == AM_OPSGENIE) {
            snprintf(authz, sizeof(authz), "Authorization: GenieKey %.1000s", buf_head(&key));
            hdrs[2] = authz;
        } else if (in->http.authorization) {
            snprintf(authz, sizeof(authz), "Authorization: %.1000s", in->http.authorization);
            hdrs[2] = authz;
        }
        uint64_t left = sd->f->deadline_ms > loop_now(&s->loop) ? sd->f->deadline_ms - loop_now(&s->loop)
                                                                 : 1000;
        struct httpc_request req = {
            .method = "POST", .addr = in->url.addr, .host = in->url.host,
            .target = target.data ? buf_head(&target) : in->url.target,
            .headers = hdrs, .body = buf_head(&body), .body_len = buf_used(&body), .tls = in->url.tls,
            .timeout_ms = (uint32_t)(left < 1000 ? 1000 : left),
        };
        struct httpc *hc = in->url.tls && in->http.insecure ? s->hc_insecure : s->hc;
        sd->call = hc ? httpc_send(hc, &req, http_done, sd) : NULL;
        buf_free(&body);
        buf_free(&target);
        buf_free(&key);
        if (!sd->call)
            finish(sd, false, true, "out of memory");
        return;
    }
    struct smtp_job *j = calloc(1, sizeof(*j));
    if (!j) {
        finish(sd, false, true, "out of memory");
        return;
    }
    j->sd = sd;
    j->loop = &s->loop;
    j->s = s;
    j->smarthost = strdup(in->smarthost);
    j->hello = strdup(in->hello);
    j->from_addr = addr_of(in->from);
    j->user = in->auth_username ? strdup(in->auth_username) : NULL;
    j->pass = in->auth_password ? strdup(in->auth_password) : NULL;
    j->identity = in->auth_identity ? strdup(in->auth_identity) : NULL;
    j->secret = in->auth_secret ? strdup(in->auth_secret) : NULL;
    j->ca_file = in->ca_file ? strdup(in->ca_file) : NULL;
    j->server_name = in->server_name ? strdup(in->server_name) : NULL;
    j->require_tls = in->require_tls;
    j->insecure = in->insecure_skip_verify;
    j->timeout_s = 10;
    j->rcpt = calloc(in->nto + 1, sizeof(char *));
    for (size_t i = 0; j->rcpt && i < in->nto; i++)
        j->rcpt[j->nrcpt++] = addr_of(in->to[i]);
    struct buf m = BUF_INIT;
    build_message(&m, sd);
    j->message = buf_steal(&m);
    buf_free(&m);
    if (sd->tmpl_failed) {
        job_free(j);
        finish(sd, false, false, "template failed (see the error above)");
        return;
    }
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (!j->smarthost || !j->hello || !j->from_addr || !j->rcpt || !j->message ||
        pthread_create(&th, &at, smtp_main, j)) {
        pthread_attr_destroy(&at);
        job_free(j);
        finish(sd, false, true, "cannot start the SMTP client");
        return;
    }
    pthread_attr_destroy(&at);
    s->smtp_threads++;
    sd->job = j;
}

void am__send_cancel(struct am_send *sd)
{
    struct am_integration *in = (struct am_integration *)sd->in;
    loop_timer_stop(&sd->retry);
    if (sd->waiting) {
        if (sd->wprev)
            sd->wprev->wnext = sd->wnext;
        else
            in->wait_head = sd->wnext;
        if (sd->wnext)
            sd->wnext->wprev = sd->wprev;
        else
            in->wait_tail = sd->wprev;
        sd->waiting = false;
    }
    if (sd->job)
        sd->job->sd = NULL;     /* the thread finishes; its result is dropped */
    sd->job = NULL;
    if (sd->call)
        httpc_cancel(sd->call);
    sd->call = NULL;
    release_slot(sd);
}
