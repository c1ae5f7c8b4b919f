/* s3_lifecycle.c - bucket lifecycle rules: the configuration's validation, the
 * expiry an object's x-amz-expiration header announces, and the sweep that
 * applies the rules (expire current versions, noncurrent versions and lone
 * delete markers; abort stale multipart uploads).
 *
 * Days count as S3 counts them: from the object's creation (for noncurrent
 * versions, from when a newer version replaced them), rounded up to the next
 * midnight UTC. A rule filters by prefix and tags (Filter with Prefix, Tag or
 * And; or the older top-level Prefix). Transitions to other storage classes
 * are not offered (one storage class).
 */
#include "s3_internal.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_MS (86400LL * 1000)

void s3_lc_free(struct s3_lc *lc)
{
    for (size_t i = 0; i < lc->n; i++) {
        free(lc->r[i].prefix);
        for (size_t t = 0; t < lc->r[i].ntags; t++)
            free(lc->r[i].tags[t]);
    }
    free(lc->r);
    lc->r = NULL;
    lc->n = 0;
}

/* "2030-01-01T00:00:00Z" or with ".000Z": midnight UTC only, as S3 requires. */
static long long parse_date(const char *s)
{
    int y, mo, d, h, mi, sec;
    char rest[16] = "";
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%15s", &y, &mo, &d, &h, &mi, &sec, rest) != 7 || h || mi ||
        sec || (strcmp(rest, "Z") != 0 && strcmp(rest, ".000Z") != 0) || mo < 1 || mo > 12 || d < 1 ||
        d > 31)
        return -1;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d };
    return (long long)timegm(&tm) * 1000;
}

static bool positive_int(const char *s, int *out)
{
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || end == s || *end || v <= 0 || v > 100000)
        return false;
    *out = (int)v;
    return true;
}

static enum s3_err add_tag(struct s3_lc_rule *r, const struct s3_xnode *tag)
{
    const char *k = s3_xml_text(tag, "Key"), *v = s3_xml_text(tag, "Value");
    if (!k || !v || r->ntags >= ARRAY_SIZE(r->tags))
        return S3E_MALFORMED_XML;
    struct buf b = BUF_INIT;
    http_uri_encode(&b, k, strlen(k), false);
    buf_putc(&b, '=');
    http_uri_encode(&b, v, strlen(v), false);
    buf_putc(&b, 0);
    r->tags[r->ntags++] = buf_steal(&b);
    return S3E_NONE;
}

static enum s3_err parse_rule(const struct s3_xnode *x, struct s3_lc_rule *r)
{
    const char *id = s3_xml_text(x, "ID"), *status = s3_xml_text(x, "Status");
    if (id && strlen(id) > 255)
        return S3E_INVALID_ARGUMENT;
    snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
    if (!status || (strcmp(status, "Enabled") != 0 && strcmp(status, "Disabled") != 0))
        return S3E_MALFORMED_XML;
    r->enabled = strcmp(status, "Enabled") == 0;
    const struct s3_xnode *f = s3_xml_child(x, "Filter");
    const char *prefix = s3_xml_text(x, "Prefix");
    enum s3_err e = S3E_NONE;
    if (f) {
        const struct s3_xnode *and = s3_xml_child(f, "And");
        const struct s3_xnode *src = and ? and : f;
        if (s3_xml_text(src, "Prefix"))
            prefix = s3_xml_text(src, "Prefix");
        for (const struct s3_xnode *c = src->child; c && !e; c = c->next)
            if (strcmp(c->name, "Tag") == 0)
                e = add_tag(r, c);
    }
    r->prefix = strdup(prefix ? prefix : "");
    if (e || !r->prefix)
        return e ? e : S3E_INTERNAL;
    const struct s3_xnode *ex = s3_xml_child(x, "Expiration");
    if (ex) {
        const char *days = s3_xml_text(ex, "Days"), *date = s3_xml_text(ex, "Date");
        const char *dm = s3_xml_text(ex, "ExpiredObjectDeleteMarker");
        if ((days && !positive_int(days, &r->days)) || (date && (r->date_ms = parse_date(date)) < 0) ||
            (days && date))
            return S3E_INVALID_ARGUMENT;
        r->expired_dm = dm && strcmp(dm, "true") == 0;
        if (!days && !date && !dm)
            return S3E_MALFORMED_XML;
    }
    const struct s3_xnode *nc = s3_xml_child(x, "NoncurrentVersionExpiration");
    if (nc && !positive_int(s3_xml_text(nc, "NoncurrentDays"), &r->noncurrent_days))
        return S3E_INVALID_ARGUMENT;
    const struct s3_xnode *ab = s3_xml_child(x, "AbortIncompleteMultipartUpload");
    if (ab && !positive_int(s3_xml_text(ab, "DaysAfterInitiation"), &r->abort_days))
        return S3E_INVALID_ARGUMENT;
    for (const struct s3_xnode *c = x->child; c; c = c->next)
        if (strcmp(c->name, "Transition") == 0 || strcmp(c->name, "NoncurrentVersionTransition") == 0) {
            const char *date = s3_xml_text(c, "Date");
            if (date && parse_date(date) < 0)
                return S3E_INVALID_ARGUMENT;
            return S3E_NOT_IMPLEMENTED;     /* one storage class: nothing to move to */
        }
    if (!ex && !nc && !ab)
        return S3E_MALFORMED_XML;
    return S3E_NONE;
}

enum s3_err s3_lc_parse(const char *xml, size_t n, struct s3_lc *lc)
{
    memset(lc, 0, sizeof(*lc));
    struct s3_xnode *x = s3_xml_parse(xml, n);
    if (!x || strcmp(x->name, "LifecycleConfiguration") != 0) {
        s3_xml_free(x);
        return S3E_MALFORMED_XML;
    }
    size_t count = 0;
    for (struct s3_xnode *c = x->child; c; c = c->next)
        count += strcmp(c->name, "Rule") == 0;
    enum s3_err e = count == 0 || count > 1000 ? S3E_MALFORMED_XML : S3E_NONE;
    lc->r = e ? NULL : calloc(count, sizeof(*lc->r));
    if (!e && !lc->r)
        e = S3E_INTERNAL;
    for (struct s3_xnode *c = x->child; c && !e; c = c->next) {
        if (strcmp(c->name, "Rule") != 0)
            continue;
        struct s3_lc_rule *r = &lc->r[lc->n++];
        e = parse_rule(c, r);
        for (size_t i = 0; !e && r->id[0] && i + 1 < lc->n; i++)
            if (strcmp(lc->r[i].id, r->id) == 0)
                e = S3E_INVALID_ARGUMENT;       /* IDs are unique */
        if (!r->id[0])
            snprintf(r->id, sizeof(r->id), "rule-%zu", lc->n);
    }
    s3_xml_free(x);
    if (e)
        s3_lc_free(lc);
    return e;
}

/* Whether a stored headers block has every tag of the rule. */
static bool has_tags(const struct s3_lc_rule *r, const char *headers)
{
    if (!r->ntags)
        return true;
    const char *p = headers ? strstr(headers, "x-amz-tagging: ") : NULL;
    if (!p)
        return false;
    p += 15;
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    for (size_t t = 0; t < r->ntags; t++) {
        size_t tl = strlen(r->tags[t]);
        bool found = false;
        for (const char *q = p; q < p + len && !found; q++)
            found = (q == p || q[-1] == '&') && (size_t)(p + len - q) >= tl && memcmp(q, r->tags[t], tl) == 0 &&
                    (q + tl == p + len || q[tl] == '&');
        if (!found)
            return false;
    }
    return true;
}

static bool applies(const struct s3_lc_rule *r, const char *key, const char *headers)
{
    return r->enabled && strncmp(key, r->prefix, strlen(r->prefix)) == 0 && has_tags(r, headers);
}

/* from + days, rounded up to the next midnight UTC */
static long long after_days(long long from_ms, int days)
{
    long long t = from_ms + days * DAY_MS;
    return (t + DAY_MS - 1) / DAY_MS * DAY_MS;
}

long long s3_lc_expiry(const struct s3_lc *lc, const char *key, const char *headers, long long mtime_ms,
                       const char **rule_id)
{
    long long best = 0;
    for (size_t i = 0; i < lc->n; i++) {
        const struct s3_lc_rule *r = &lc->r[i];
        if (!applies(r, key, headers) || (!r->days && !r->date_ms))
            continue;
        long long t = r->days ? after_days(mtime_ms, r->days) : r->date_ms;
        if (!best || t < best) {
            best = t;
            *rule_id = r->id;
        }
    }
    return best;
}

/* ---- the sweep ---- */

struct sweep {
    const struct s3_lc *lc;
    long long now;
    struct buf todo;            /* "version\tkey\n": versions to delete ("-" the current object) */
    char *prev_key;
    long long prev_mtime;       /* the newer version's creation: when this one became noncurrent */
    int versions_of_key;
    char lone_dm[40];           /* the key's current version, when a delete marker */
};

/* The key just left: a delete marker with no version behind it goes when a rule
 * asks for ExpiredObjectDeleteMarker. */
static void key_done(struct sweep *sw)
{
    if (!sw->prev_key || sw->versions_of_key != 1 || !sw->lone_dm[0])
        return;
    for (size_t i = 0; i < sw->lc->n; i++)
        if (sw->lc->r[i].expired_dm && applies(&sw->lc->r[i], sw->prev_key, "")) {
            buf_printf(&sw->todo, "%s\t%s\n", sw->lone_dm, sw->prev_key);
            return;
        }
}

static void todo(struct sweep *sw, const char *version, const char *key)
{
    buf_printf(&sw->todo, "%s\t%s\n", version, key);
}

static int sweep_one(void *arg, const struct s3_obj *o)
{
    struct sweep *sw = arg;
    bool same = sw->prev_key && strcmp(sw->prev_key, o->key) == 0;
    if (!same) {
        key_done(sw);
        free(sw->prev_key);
        sw->prev_key = strdup(o->key);
        sw->versions_of_key = 0;
        snprintf(sw->lone_dm, sizeof(sw->lone_dm), "%s", o->latest && o->dm ? o->version : "");
    }
    sw->versions_of_key++;
    for (size_t i = 0; i < sw->lc->n; i++) {
        const struct s3_lc_rule *r = &sw->lc->r[i];
        if (!applies(r, o->key, o->headers))
            continue;
        if (o->latest && !o->dm && ((r->days && after_days(o->mtime_ms, r->days) <= sw->now) ||
                                    (r->date_ms && r->date_ms <= sw->now))) {
            todo(sw, "-", o->key);
            break;
        }
        if (!o->latest && same && r->noncurrent_days &&
            after_days(sw->prev_mtime, r->noncurrent_days) <= sw->now) {
            todo(sw, o->version, o->key);
            break;
        }
    }
    sw->prev_mtime = o->mtime_ms;
    return 0;
}

static void expire_bucket(struct s3_db *db, const char *dir, const char *bucket, const struct s3_lc *lc,
                          long long now, size_t *expired)
{
    struct sweep sw = { .lc = lc, .now = now };
    if (s3_obj_scan(db, bucket, "", "", -1, true, sweep_one, &sw)) {
        free(sw.prev_key);
        buf_free(&sw.todo);
        return;
    }
    key_done(&sw);
    buf_putc(&sw.todo, 0);
    for (char *line = buf_head(&sw.todo), *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        char *tab = strchr(line, '\t');
        if (!tab)
            break;
        *tab = 0;
        struct s3_obj marker = { 0 };
        s3_random_hex(marker.version, 16);
        char *old = NULL;
        if (s3_obj_delete(db, bucket, tab + 1, strcmp(line, "-") ? line : NULL, &marker, &old) == 0) {
            s3_files_unlink(dir, old);
            (*expired)++;
        }
        free(old);
    }
    free(sw.prev_key);
    buf_free(&sw.todo);
}

static void collect_bucket(void *arg, const char *name, long long created)
{
    (void)created;
    buf_printf(arg, "%s\n", name);
}

size_t s3_lc_sweep(struct s3_db *db, const char *dir, long long now_ms)
{
    struct buf names = BUF_INIT;
    size_t expired = 0;
    if (s3_bucket_list(db, collect_bucket, &names) || !buf_used(&names)) {
        buf_free(&names);
        return 0;
    }
    buf_putc(&names, 0);
    for (char *b = buf_head(&names), *nl; b && *b; b = nl ? nl + 1 : NULL) {
        nl = strchr(b, '\n');
        if (nl)
            *nl = 0;
        struct s3_bucket bk;
        if (s3_bucket_get(db, b, &bk))
            continue;
        struct s3_lc lc;
        if (bk.lifecycle && s3_lc_parse(bk.lifecycle, strlen(bk.lifecycle), &lc) == S3E_NONE) {
            expire_bucket(db, dir, b, &lc, now_ms, &expired);
            /* stale multipart uploads */
            struct s3_upload *ups;
            size_t n;
            if (s3_upload_list(db, b, &ups, &n) == 0) {
                for (size_t u = 0; u < n; u++)
                    for (size_t i = 0; i < lc.n; i++) {
                        const struct s3_lc_rule *r = &lc.r[i];
                        if (r->enabled && r->abort_days && strncmp(ups[u].key, r->prefix, strlen(r->prefix)) == 0 &&
                            after_days(ups[u].created_ms, r->abort_days) <= now_ms) {
                            char *files = NULL;
                            if (s3_upload_abort(db, ups[u].id, &files) == 0) {
                                s3_files_unlink(dir, files);
                                expired++;
                            }
                            free(files);
                            break;
                        }
                    }
                s3_uploads_free(ups, n);
            }
            s3_lc_free(&lc);
        }
        s3_bucket_free(&bk);
    }
    buf_free(&names);
    return expired;
}
