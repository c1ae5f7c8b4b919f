/* alerts_store.c - the alert store, silences, inhibition and the notification log.
 *
 * Alerts are kept by fingerprint in an open-addressing table; an update merges
 * with the stored alert exactly as Alertmanager's provider does (the earliest
 * start wins; a later explicit end wins over a resolve timeout) and replaces it,
 * so aggregation groups that still hold the old version keep a valid snapshot.
 *
 * Silences follow silence/silence.go: an update that keeps the matchers and the
 * start of an active silence changes it in place, anything else expires the old
 * silence and creates a new one with a new ID. Silences and the notification log
 * are written to disk on every change (temporary file, fsync, rename).
 */
#include "alerts_internal.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void am__alert_unref(struct am_alert *a)
{
    if (!a || --a->refs)
        return;
    if (a->packed) {
        free(a);
        return;
    }
    am__lset_free(&a->labels);
    am__lset_free(&a->annotations);
    free(a->generator_url);
    free(a);
}

/* ---- alerts by fingerprint ---- */

static size_t slot_of(const struct am_svc *s, uint64_t fp)
{
    size_t mask = s->alerts_cap - 1, i = (size_t)(fp ^ (fp >> 29)) & mask;
    while (s->alerts[i] && s->alerts[i]->fp != fp)
        i = (i + 1) & mask;
    return i;
}

static int grow(struct am_svc *s)
{
    size_t ncap = s->alerts_cap ? s->alerts_cap * 2 : 64;
    struct am_alert **old = s->alerts;
    size_t ocap = s->alerts_cap;
    s->alerts = calloc(ncap, sizeof(*s->alerts));
    if (!s->alerts) {
        s->alerts = old;
        return -ENOMEM;
    }
    s->alerts_cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i])
            s->alerts[slot_of(s, old[i]->fp)] = old[i];
    free(old);
    return 0;
}

struct am_alert *am__store_get(struct am_svc *s, uint64_t fp)
{
    if (!s->alerts_cap)
        return NULL;
    return s->alerts[slot_of(s, fp)];
}

static void store_delete(struct am_svc *s, size_t i)
{
    size_t mask = s->alerts_cap - 1;
    am__alert_unref(s->alerts[i]);
    s->alerts[i] = NULL;
    s->nalerts--;
    /* backward-shift deletion keeps every probe chain unbroken */
    for (size_t j = (i + 1) & mask; s->alerts[j]; j = (j + 1) & mask) {
        size_t home = (size_t)(s->alerts[j]->fp ^ (s->alerts[j]->fp >> 29)) & mask;
        bool move = i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (move) {
            s->alerts[i] = s->alerts[j];
            s->alerts[j] = NULL;
            i = j;
        }
    }
}

int am__store_put(struct am_svc *s, struct am_alert *a)
{
    if ((s->nalerts + 1) * 4 > s->alerts_cap * 3 && grow(s)) {
        am__alert_unref(a);
        return -ENOMEM;
    }
    size_t i = slot_of(s, a->fp);
    struct am_alert *old = s->alerts[i];
    if (old) {
        if ((a->ends_at > old->starts_at && a->ends_at < old->ends_at) ||
            (a->starts_at > old->starts_at && a->starts_at < old->ends_at)) {
            /* types.Alert.Merge with a as the younger alert */
            int64_t now = a->updated_at;
            if (old->starts_at < a->starts_at)
                a->starts_at = old->starts_at;
            if (am__alert_resolved_at(a, now)) {
                if (am__alert_resolved_at(old, now) && old->ends_at > a->ends_at)
                    a->ends_at = old->ends_at;
            } else if (old->ends_at > a->ends_at && !old->timeout) {
                a->ends_at = old->ends_at;
                a->timeout = false;
            }
        }
        am__alert_unref(old);
    } else {
        s->nalerts++;
    }
    s->alerts[i] = a;
    s->alerts_gen++;
    return 0;
}

void am__store_gc(struct am_svc *s, int64_t now)
{
    for (size_t i = 0; i < s->alerts_cap;) {
        struct am_alert *a = s->alerts[i];
        if (a && am__alert_resolved_at(a, now)) {
            store_delete(s, i);     /* a later entry may have moved into i */
            s->alerts_gen++;
            continue;
        }
        i++;
    }
    bool changed = false;
    for (size_t i = 0; i < s->nsilences;) {
        struct am_silence *sl = &s->silences[i];
        if (sl->ends_at + (int64_t)s->conf->retention_ms * 1000000 < now) {
            am__silence_free(sl);
            memmove(sl, sl + 1, (s->nsilences - i - 1) * sizeof(*sl));
            s->nsilences--;
            changed = true;
            continue;
        }
        i++;
    }
    if (changed)
        am__silences_save(s);
    changed = false;
    for (size_t i = 0; i < s->nnflog;) {
        struct am_nflog_entry *e = &s->nflog[i];
        if (e->expires && e->expires < now) {
            free(e->key);
            free(e->firing);
            free(e->resolved);
            memmove(e, e + 1, (s->nnflog - i - 1) * sizeof(*e));
            s->nnflog--;
            changed = true;
            continue;
        }
        i++;
    }
    if (changed)
        am__nflog_save(s);
}

static void inhibit_cache_clear(struct am_svc *s)
{
    for (size_t i = 0; i < s->ninh; i++) {
        for (size_t k = 0; k < s->inh[i].n; k++)
            am__alert_unref(s->inh[i].src[k]);
        free(s->inh[i].src);
    }
    free(s->inh);
    s->inh = NULL;
    s->ninh = 0;
}

void am__store_free(struct am_svc *s)
{
    for (size_t i = 0; i < s->alerts_cap; i++)
        am__alert_unref(s->alerts[i]);
    free(s->alerts);
    s->alerts = NULL;
    s->alerts_cap = s->nalerts = 0;
    for (size_t i = 0; i < s->nsilences; i++)
        am__silence_free(&s->silences[i]);
    free(s->silences);
    s->silences = NULL;
    s->nsilences = 0;
    for (size_t i = 0; i < s->nnflog; i++) {
        free(s->nflog[i].key);
        free(s->nflog[i].firing);
        free(s->nflog[i].resolved);
    }
    free(s->nflog);
    s->nflog = NULL;
    s->nnflog = 0;
    inhibit_cache_clear(s);
}

/* ---- inhibition (inhibit/inhibit.go) ---- */

static void inhibit_cache_build(struct am_svc *s)
{
    inhibit_cache_clear(s);
    const struct am_conf *ac = s->conf;
    s->inh = calloc(ac->ninhibit + 1, sizeof(*s->inh));
    if (!s->inh)
        return;
    s->ninh = ac->ninhibit;
    for (size_t r = 0; r < ac->ninhibit; r++) {
        struct am_inhibit_cache *ic = &s->inh[r];
        size_t cap = 0;
        for (size_t i = 0; i < s->alerts_cap; i++) {
            struct am_alert *a = s->alerts[i];
            if (!a || !am__matchers_match(&ac->inhibit[r].source, &a->labels))
                continue;
            if (ic->n == cap) {
                cap = cap ? cap * 2 : 8;
                struct am_alert **nv = realloc(ic->src, cap * sizeof(*nv));
                if (!nv)
                    break;
                ic->src = nv;
            }
            ic->src[ic->n++] = am__alert_ref(a);
        }
    }
    s->inh_gen = s->alerts_gen;
}

bool am__inhibited_by(struct am_svc *s, const struct am_lset *ls, int64_t now, uint64_t *by)
{
    const struct am_conf *ac = s->conf;
    if (!ac->ninhibit)
        return false;
    if (!s->inh || s->inh_gen != s->alerts_gen || s->ninh != ac->ninhibit)
        inhibit_cache_build(s);
    for (size_t r = 0; r < s->ninh; r++) {
        const struct am_inhibit *ir = &ac->inhibit[r];
        if (!am__matchers_match(&ir->target, ls))
            continue;
        bool two_sided = am__matchers_match(&ir->source, ls);
        for (size_t k = 0; k < s->inh[r].n; k++) {
            const struct am_alert *a = s->inh[r].src[k];
            if (am__alert_resolved_at(a, now))
                continue;
            bool eq = true;
            for (size_t e = 0; eq && e < ir->nequal; e++) {
                const char *x = am__lset_get(&a->labels, ir->equal[e]);
                const char *y = am__lset_get(ls, ir->equal[e]);
                eq = strcmp(x ? x : "", y ? y : "") == 0;
            }
            if (!eq || (two_sided && am__matchers_match(&ir->target, &a->labels)))
                continue;
            *by = a->fp;
            return true;
        }
    }
    return false;
}

/* ---- silences ---- */

enum am_sil_state am__silence_state(const struct am_silence *sl, int64_t now)
{
    if (now < sl->starts_at)
        return SIL_PENDING;
    if (now > sl->ends_at)
        return SIL_EXPIRED;
    return SIL_ACTIVE;
}

void am__silence_free(struct am_silence *sl)
{
    am__matchers_free(&sl->matchers);
    free(sl->created_by);
    free(sl->comment);
    sl->created_by = sl->comment = NULL;
}

struct am_silence *am__silence_find(struct am_svc *s, const char *id)
{
    for (size_t i = 0; i < s->nsilences; i++)
        if (!strcmp(s->silences[i].id, id))
            return &s->silences[i];
    return NULL;
}

size_t am__silenced_by(struct am_svc *s, const struct am_lset *ls, int64_t now, const char **ids,
                       size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nsilences && n < max; i++) {
        const struct am_silence *sl = &s->silences[i];
        if (am__silence_state(sl, now) == SIL_ACTIVE && am__matchers_match(&sl->matchers, ls))
            ids[n++] = sl->id;
    }
    return n;
}

static void new_uuid(char out[40])
{
    unsigned char b[16];
    cairn_random(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

static bool matchers_equal(const struct am_matchers *a, const struct am_matchers *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->m[i].type != b->m[i].type || strcmp(a->m[i].name, b->m[i].name) ||
            strcmp(a->m[i].value, b->m[i].value))
            return false;
    return true;
}

static int validate_silence(const struct am_silence *sl, char *err, size_t errlen)
{
    if (sl->matchers.n == 0) {
        snprintf(err, errlen, "at least one matcher required");
        return -EINVAL;
    }
    bool all_empty = true;
    for (size_t i = 0; i < sl->matchers.n; i++)
        all_empty &= am__matcher_matches(&sl->matchers.m[i], "");
    if (all_empty) {
        snprintf(err, errlen, "at least one matcher must not match the empty string");
        return -EINVAL;
    }
    if (sl->starts_at == 0 || sl->ends_at == 0) {
        snprintf(err, errlen, "invalid zero %s timestamp", sl->starts_at == 0 ? "start" : "end");
        return -EINVAL;
    }
    if (sl->ends_at < sl->starts_at) {
        snprintf(err, errlen, "end time must not be before start time");
        return -EINVAL;
    }
    return 0;
}

static int silence_expire(struct am_silence *sl, int64_t now)
{
    switch (am__silence_state(sl, now)) {
    case SIL_EXPIRED:
        return 0;
    case SIL_ACTIVE:
        sl->ends_at = now;
        break;
    case SIL_PENDING:
        sl->starts_at = sl->ends_at = now;
        break;
    }
    sl->updated_at = now;
    return 0;
}

int am__silence_set(struct am_svc *s, struct am_silence *sl, char *err, size_t errlen)
{
    int64_t now = am__now_ns();
    if (sl->starts_at == 0)
        sl->starts_at = now;
    int r = validate_silence(sl, err, errlen);
    if (r)
        return r;
    if (sl->id[0]) {
        struct am_silence *prev = am__silence_find(s, sl->id);
        if (!prev) {
            snprintf(err, errlen, "silence not found");
            return -ENOENT;
        }
        enum am_sil_state st = am__silence_state(prev, now);
        bool can = matchers_equal(&prev->matchers, &sl->matchers) &&
                   ((st == SIL_ACTIVE && sl->starts_at / 1000000000 == prev->starts_at / 1000000000 &&
                     sl->ends_at >= now) ||
                    (st == SIL_PENDING && sl->starts_at >= now));
        if (can) {
            am__silence_free(prev);
            *prev = *sl;
            prev->updated_at = now;
            memset(sl, 0, sizeof(*sl));
            am__silences_save(s);
            return 0;
        }
        silence_expire(prev, now);
    }
    if (s->nsilences == s->silences_cap) {
        size_t ncap = s->silences_cap ? s->silences_cap * 2 : 16;
        struct am_silence *nv = realloc(s->silences, ncap * sizeof(*nv));
        if (!nv) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        s->silences = nv;
        s->silences_cap = ncap;
    }
    new_uuid(sl->id);
    if (sl->starts_at < now)
        sl->starts_at = now;
    sl->updated_at = now;
    s->silences[s->nsilences++] = *sl;
    char id[40];
    memcpy(id, sl->id, sizeof(id));
    memset(sl, 0, sizeof(*sl));
    memcpy(sl->id, id, sizeof(id));
    am__silences_save(s);
    return 0;
}

int am__silence_expire(struct am_svc *s, const char *id)
{
    struct am_silence *sl = am__silence_find(s, id);
    if (!sl)
        return -ENOENT;
    silence_expire(sl, am__now_ns());
    am__silences_save(s);
    return 0;
}

/* ---- notification log (nflog/nflog.go) ---- */

static size_t nflog_pos(struct am_svc *s, const char *key, bool *found)
{
    size_t lo = 0, hi = s->nnflog;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->nflog[mid].key, key);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

struct am_nflog_entry *am__nflog_get(struct am_svc *s, const char *key)
{
    bool found;
    size_t i = nflog_pos(s, key, &found);
    return found ? &s->nflog[i] : NULL;
}

static uint64_t *dup_u64(const uint64_t *v, size_t n)
{
    uint64_t *d = malloc((n ? n : 1) * sizeof(*d));
    if (d && n)
        memcpy(d, v, n * sizeof(*d));
    return d;
}

static void journal_append(struct am_svc *s, const struct am_nflog_entry *e);

void am__nflog_set(struct am_svc *s, const char *key, const uint64_t *firing, size_t nfiring,
                   const uint64_t *resolved, size_t nresolved, int64_t now, int64_t expires)
{
    bool found;
    size_t i = nflog_pos(s, key, &found);
    if (!found) {
        if (s->nnflog == s->nflog_cap) {
            size_t ncap = s->nflog_cap ? s->nflog_cap * 2 : 16;
            struct am_nflog_entry *nv = realloc(s->nflog, ncap * sizeof(*nv));
            if (!nv)
                return;
            s->nflog = nv;
            s->nflog_cap = ncap;
        }
        memmove(&s->nflog[i + 1], &s->nflog[i], (s->nnflog - i) * sizeof(*s->nflog));
        memset(&s->nflog[i], 0, sizeof(s->nflog[i]));
        s->nflog[i].key = strdup(key);
        s->nnflog++;
    }
    struct am_nflog_entry *e = &s->nflog[i];
    free(e->firing);
    free(e->resolved);
    e->firing = dup_u64(firing, nfiring);
    e->resolved = dup_u64(resolved, nresolved);
    e->nfiring = e->firing ? nfiring : 0;
    e->nresolved = e->resolved ? nresolved : 0;
    e->ts = now;
    e->expires = expires;
    journal_append(s, e);
}

/* ---- persistence ---- */

static int write_atomic(const char *dir, const char *name, const char *data, size_t len)
{
    char path[4200], tmp[4220];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            unlink(tmp);
            return e;
        }
        off += (size_t)w;
    }
    if (fsync(fd) == -1 || close(fd) == -1) {
        unlink(tmp);
        return -EIO;
    }
    if (rename(tmp, path) == -1)
        return -errno;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd != -1) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static void json_time(struct buf *b, const char *key, int64_t ns)
{
    buf_printf(b, ",\"%s\":%lld", key, (long long)ns);
}

static int silences_write(struct am_svc *s, const char *dir)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"version\":1,\"silences\":[");
    for (size_t i = 0; i < s->nsilences; i++) {
        const struct am_silence *sl = &s->silences[i];
        buf_printf(&b, "%s\n{\"id\":\"%s\",\"matchers\":[", i ? "," : "", sl->id);
        for (size_t k = 0; k < sl->matchers.n; k++) {
            buf_printf(&b, "%s{\"type\":%d,\"name\":", k ? "," : "", (int)sl->matchers.m[k].type);
            buf_json_str(&b, sl->matchers.m[k].name);
            buf_puts(&b, ",\"value\":");
            buf_json_str(&b, sl->matchers.m[k].value);
            buf_putc(&b, '}');
        }
        buf_putc(&b, ']');
        json_time(&b, "startsAt", sl->starts_at);
        json_time(&b, "endsAt", sl->ends_at);
        json_time(&b, "updatedAt", sl->updated_at);
        buf_puts(&b, ",\"createdBy\":");
        buf_json_str(&b, sl->created_by ? sl->created_by : "");
        buf_puts(&b, ",\"comment\":");
        buf_json_str(&b, sl->comment ? sl->comment : "");
        buf_putc(&b, '}');
    }
    buf_puts(&b, "]}\n");
    int r = write_atomic(dir, "silences.json", buf_head(&b), buf_used(&b));
    buf_free(&b);
    return r;
}

int am__silences_save(struct am_svc *s)
{
    if (!s->dir[0])
        return 0;
    int r = silences_write(s, s->dir);
    if (r)
        log_error("cannot write the silences", "dir", s->dir, "error", cairn_strerror(r));
    return r;
}

static void entry_json(struct buf *b, const struct am_nflog_entry *e)
{
    buf_puts(b, "{\"key\":");
    buf_json_str(b, e->key);
    buf_puts(b, ",\"firing\":[");
    for (size_t k = 0; k < e->nfiring; k++)
        buf_printf(b, "%s\"%016llx\"", k ? "," : "", (unsigned long long)e->firing[k]);
    buf_puts(b, "],\"resolved\":[");
    for (size_t k = 0; k < e->nresolved; k++)
        buf_printf(b, "%s\"%016llx\"", k ? "," : "", (unsigned long long)e->resolved[k]);
    buf_putc(b, ']');
    json_time(b, "ts", e->ts);
    json_time(b, "expires", e->expires);
    buf_putc(b, '}');
}

static void sync_cb(struct loop_timer *t)
{
    struct am_svc *s = t->data;
    if (s->journal_fd >= 0 && s->journal_dirty)
        fdatasync(s->journal_fd);
    s->journal_dirty = false;
}

/* Appends the entry to the journal. A write() reaches the page cache at once, so a
 * killed process loses nothing; fdatasync follows within a second for power loss.
 * The journal is folded into a new snapshot once it is much longer than the log. */
static void journal_append(struct am_svc *s, const struct am_nflog_entry *e)
{
    if (!s->dir[0])
        return;
    if (s->journal_fd < 0 || (s->journal_lines > 4096 && s->journal_lines > 2 * s->nnflog)) {
        am__nflog_save(s);
        return;
    }
    struct buf b = BUF_INIT;
    entry_json(&b, e);
    buf_putc(&b, '\n');
    ssize_t w = write(s->journal_fd, buf_head(&b), buf_used(&b));
    if (w != (ssize_t)buf_used(&b)) {
        log_error("cannot append to the notification log journal", "dir", s->dir);
        am__nflog_save(s);
    } else {
        s->journal_lines++;
        if (!s->journal_dirty) {
            s->journal_dirty = true;
            loop_timer_init(&s->sync_timer, sync_cb, s);
            loop_timer_start(&s->loop, &s->sync_timer, 1000);
        }
    }
    buf_free(&b);
}

static int nflog_write(struct am_svc *s, const char *dir)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"version\":1,\"entries\":[");
    for (size_t i = 0; i < s->nnflog; i++) {
        const struct am_nflog_entry *e = &s->nflog[i];
        buf_printf(&b, "%s\n", i ? "," : "");
        entry_json(&b, e);
    }
    buf_puts(&b, "]}\n");
    int r = write_atomic(dir, "nflog.json", buf_head(&b), buf_used(&b));
    buf_free(&b);
    return r;
}

/* The state as it is now, into another directory (a backup's consistent copy):
 * the same files the service loads at start. */
int am__state_export(struct am_svc *s, const char *dir)
{
    int r = silences_write(s, dir);
    return r ? r : nflog_write(s, dir);
}

int am__nflog_save(struct am_svc *s)
{
    if (!s->dir[0])
        return 0;
    int r = nflog_write(s, s->dir);
    if (r) {
        log_error("cannot write the notification log", "dir", s->dir, "error", cairn_strerror(r));
        return r;
    }
    /* the snapshot holds everything: start an empty journal */
    char path[4200];
    snprintf(path, sizeof(path), "%s/nflog.journal", s->dir);
    if (s->journal_fd >= 0)
        close(s->journal_fd);
    s->journal_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    s->journal_lines = 0;
    return 0;
}

static json_t *load_json(const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (access(path, F_OK) != 0)
        return NULL;
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        char aside[4220];
        snprintf(aside, sizeof(aside), "%s.corrupt", path);
        rename(path, aside);
        log_warn("unreadable state file moved aside", "file", path, "line", log_int(je.line),
                 "error", je.text);
    }
    return j;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static size_t load_hashes(json_t *arr, uint64_t **out)
{
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    *out = calloc(n ? n : 1, sizeof(**out));
    if (!*out)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *h = json_string_value(json_array_get(arr, i));
        if (h)
            (*out)[k++] = strtoull(h, NULL, 16);
    }
    qsort(*out, k, sizeof(**out), u64_cmp);
    return k;
}

/* Inserts or replaces the entry described by o (a later line wins). */
static void nflog_load_entry(struct am_svc *s, json_t *o)
{
    const char *key = json_string_value(json_object_get(o, "key"));
    if (!key)
        return;
    uint64_t *f, *r;
    size_t nf = load_hashes(json_object_get(o, "firing"), &f);
    size_t nr = load_hashes(json_object_get(o, "resolved"), &r);
    if (!f || !r) {
        free(f);
        free(r);
        return;
    }
    bool found;
    size_t pos = nflog_pos(s, key, &found);
    if (found) {
        struct am_nflog_entry *e = &s->nflog[pos];
        free(e->firing);
        free(e->resolved);
        e->firing = f;
        e->resolved = r;
        e->nfiring = nf;
        e->nresolved = nr;
        e->ts = json_integer_value(json_object_get(o, "ts"));
        e->expires = json_integer_value(json_object_get(o, "expires"));
        return;
    }
    if (s->nnflog == s->nflog_cap) {
        size_t ncap = s->nflog_cap ? s->nflog_cap * 2 : 16;
        struct am_nflog_entry *nv = realloc(s->nflog, ncap * sizeof(*nv));
        if (!nv) {
            free(f);
            free(r);
            return;
        }
        s->nflog = nv;
        s->nflog_cap = ncap;
    }
    memmove(&s->nflog[pos + 1], &s->nflog[pos], (s->nnflog - pos) * sizeof(*s->nflog));
    s->nflog[pos] = (struct am_nflog_entry){
        .key = strdup(key), .firing = f, .resolved = r, .nfiring = nf, .nresolved = nr,
        .ts = json_integer_value(json_object_get(o, "ts")),
        .expires = json_integer_value(json_object_get(o, "expires")) };
    s->nnflog++;
}

int am__state_load(struct am_svc *s)
{
    json_t *j = load_json(s->dir, "silences.json");
    json_t *arr = j ? json_object_get(j, "silences") : NULL;
    for (size_t i = 0; json_is_array(arr) && i < json_array_size(arr); i++) {
        json_t *o = json_array_get(arr, i);
        struct am_silence sl;
        memset(&sl, 0, sizeof(sl));
        const char *id = json_string_value(json_object_get(o, "id"));
        json_t *ms = json_object_get(o, "matchers");
        if (!id || strlen(id) >= sizeof(sl.id) || !json_is_array(ms))
            continue;
        snprintf(sl.id, sizeof(sl.id), "%s", id);
        bool bad = false;
        sl.matchers.m = calloc(json_array_size(ms) + 1, sizeof(*sl.matchers.m));
        for (size_t k = 0; sl.matchers.m && k < json_array_size(ms); k++) {
            json_t *m = json_array_get(ms, k);
            json_int_t t = json_integer_value(json_object_get(m, "type"));
            const char *name = json_string_value(json_object_get(m, "name"));
            const char *value = json_string_value(json_object_get(m, "value"));
            char err[200];
            if (t < 0 || t > 3 || !name || !value ||
                am__matcher_init(&sl.matchers.m[sl.matchers.n], (enum am_mtype)t, name, value, err,
                                 sizeof(err))) {
                bad = true;
                break;
            }
            sl.matchers.n++;
        }
        sl.starts_at = json_integer_value(json_object_get(o, "startsAt"));
        sl.ends_at = json_integer_value(json_object_get(o, "endsAt"));
        sl.updated_at = json_integer_value(json_object_get(o, "updatedAt"));
        const char *cb = json_string_value(json_object_get(o, "createdBy"));
        const char *cm = json_string_value(json_object_get(o, "comment"));
        sl.created_by = strdup(cb ? cb : "");
        sl.comment = strdup(cm ? cm : "");
        if (bad || !sl.matchers.m || !sl.created_by || !sl.comment) {
            am__silence_free(&sl);
            continue;
        }
        if (s->nsilences == s->silences_cap) {
            size_t ncap = s->silences_cap ? s->silences_cap * 2 : 16;
            struct am_silence *nv = realloc(s->silences, ncap * sizeof(*nv));
            if (!nv) {
                am__silence_free(&sl);
                continue;
            }
            s->silences = nv;
            s->silences_cap = ncap;
        }
        s->silences[s->nsilences++] = sl;
    }
    json_decref(j);
    j = load_json(s->dir, "nflog.json");
    arr = j ? json_object_get(j, "entries") : NULL;
    for (size_t i = 0; json_is_array(arr) && i < json_array_size(arr); i++)
        nflog_load_entry(s, json_array_get(arr, i));
    json_decref(j);
    j = NULL;
    /* then the journal, line by line; a torn last line is skipped */
    char path[4200];
    snprintf(path, sizeof(path), "%s/nflog.journal", s->dir);
    FILE *f = fopen(path, "re");
    if (f) {
        char *line = NULL;
        size_t cap = 0;
        size_t n = 0, bad = 0;
        while (getline(&line, &cap, f) > 0) {
            json_error_t je;
            json_t *o = json_loads(line, 0, &je);
            if (o) {
                nflog_load_entry(s, o);
                n++;
            } else {
                bad++;
            }
            json_decref(o);
        }
        free(line);
        fclose(f);
        if (bad)
            log_warn("notification log journal: unreadable lines skipped", "lines", log_int((long long)bad));
        (void)n;
    }
    am__nflog_save(s);      /* fold the journal into a new snapshot */
    json_decref(j);
    log_info("state loaded", "silences", log_int((long long)s->nsilences), "nflog_entries",
             log_int((long long)s->nnflog));
    return 0;
}
