/* bk_snap.c - snapshots and trees: restic's JSON documents, read and written.
 *
 * Trees are written the way restic's Go encoder writes them (field order and
 * omitempty as restic's Node struct, times in Go's RFC 3339 form), sorted by
 * name, so restic reads them as its own; reading accepts anything restic wrote.
 */
#include "backup_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <time.h>


void bk_time_format(int64_t sec, long nsec, char out[48])
{
    struct tm tm;
    time_t t = (time_t)sec;
    localtime_r(&t, &tm);
    size_t n = strftime(out, 48, "%Y-%m-%dT%H:%M:%S", &tm);
    if (nsec) {
        char frac[16];
        snprintf(frac, sizeof(frac), ".%09ld", nsec);
        size_t l = strlen(frac);
        while (frac[l - 1] == '0')
            frac[--l] = 0;
        n += (size_t)snprintf(out + n, 48 - n, "%s", frac);
    }
    long off = tm.tm_gmtoff;
    if (off == 0)
        snprintf(out + n, 48 - n, "Z");
    else
        snprintf(out + n, 48 - n, "%c%02ld:%02ld", off < 0 ? '-' : '+', labs(off) / 3600, labs(off) % 3600 / 60);
}

static void put_time(struct buf *b, const char *key, int64_t ns)
{
    char t[48];
    int64_t s = ns / 1000000000, f = ns % 1000000000;
    if (f < 0) {
        f += 1000000000;
        s--;
    }
    bk_time_format(s, (long)f, t);
    buf_printf(b, ",\"%s\":\"%s\"", key, t);
}

static int64_t get_time(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    int64_t ns = 0;
    if (!s || cairn_parse_rfc3339(s, strlen(s), &ns))
        return 0;
    return ns;
}

static char *dup_str(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? strdup(s) : NULL;
}

static char **str_list(json_t *a, size_t *n)
{
    *n = 0;
    if (!json_is_array(a) || !json_array_size(a))
        return NULL;
    char **v = calloc(json_array_size(a), sizeof(*v));
    size_t i;
    json_t *x;
    if (!v)
        return NULL;
    json_array_foreach(a, i, x) if (json_is_string(x)) v[(*n)++] = strdup(json_string_value(x));
    return v;
}

/* ---- snapshots ---- */

int bk_snapshot_parse(const char *json, size_t n, struct bk_snapshot *out)
{
    json_error_t je;
    json_t *j = json_loadb(json, n, 0, &je);
    const char *tree = json_string_value(json_object_get(j, "tree"));
    if (!json_is_object(j) || !tree || bk_id_parse(tree, strlen(tree), &out->tree)) {
        json_decref(j);
        return -EBADMSG;
    }
    const char *parent = json_string_value(json_object_get(j, "parent"));
    out->has_parent = parent && !bk_id_parse(parent, strlen(parent), &out->parent);
    out->time_ns = get_time(j, "time");
    out->hostname = dup_str(j, "hostname");
    out->username = dup_str(j, "username");
    out->paths = str_list(json_object_get(j, "paths"), &out->npaths);
    out->tags = str_list(json_object_get(j, "tags"), &out->ntags);
    out->json = strndup(json, n);
    json_decref(j);
    return out->json ? 0 : -ENOMEM;
}

static void snapshot_clear(struct bk_snapshot *s)
{
    free(s->json);
    free(s->hostname);
    free(s->username);
    cfg_free_string_list(s->paths, s->npaths);
    cfg_free_string_list(s->tags, s->ntags);
}

void bk_snapshots_free(struct bk_snapshot *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        snapshot_clear(&s[i]);
    free(s);
}

static int by_time(const void *a, const void *b)
{
    const struct bk_snapshot *x = a, *y = b;
    return x->time_ns < y->time_ns ? -1 : x->time_ns > y->time_ns ? 1 : strcmp(x->name, y->name);
}

int bk_snapshots_load(struct bk_repo *r, struct bk_snapshot **out, size_t *count, char *err, size_t errlen)
{
    char **names;
    size_t n;
    int e = bk_list_names(r, BK_SNAPSHOT, &names, &n);
    if (e) {
        snprintf(err, errlen, "listing snapshots: %s", cairn_strerror(e));
        return e;
    }
    struct bk_snapshot *v = calloc(n ? n : 1, sizeof(*v));
    size_t k = 0;
    struct buf b = BUF_INIT;
    for (size_t i = 0; v && i < n; i++) {
        if ((e = bk_load_unpacked(r, BK_SNAPSHOT, names[i], &b, err, errlen)))
            break;
        if ((e = bk_snapshot_parse(buf_head(&b), buf_used(&b), &v[k]))) {
            snapshot_clear(&v[k]);
            memset(&v[k], 0, sizeof(v[k]));
            snprintf(err, errlen, "snapshot %s: not a snapshot document", names[i]);
            break;
        }
        snprintf(v[k].name, sizeof(v[k].name), "%s", names[i]);
        k++;
    }
    buf_free(&b);
    cfg_free_string_list(names, n);
    if (!v)
        return -ENOMEM;
    if (e) {
        bk_snapshots_free(v, k);
        return e;
    }
    qsort(v, k, sizeof(*v), by_time);
    *out = v;
    *count = k;
    return 0;
}

bool bk_snapshot_has_tag(const struct bk_snapshot *s, const char *tag)
{
    for (size_t i = 0; i < s->ntags; i++)
        if (!strcmp(s->tags[i], tag))
            return true;
    return false;
}

const struct bk_snapshot *bk_snapshot_find(const struct bk_snapshot *s, size_t n, const char *want, char *err,
                                           size_t errlen)
{
    if (!strcmp(want, "latest")) {
        if (!n)
            snprintf(err, errlen, "no snapshot in the repository");
        return n ? &s[n - 1] : NULL;
    }
    const struct bk_snapshot *hit = NULL;
    size_t l = strlen(want);
    for (size_t i = 0; i < n; i++) {
        if (l && !strncmp(s[i].name, want, l)) {
            if (hit) {
                snprintf(err, errlen, "snapshot prefix %s is ambiguous", want);
                return NULL;
            }
            hit = &s[i];
        }
    }
    if (!hit)
        snprintf(err, errlen, "no snapshot %s", want);
    return hit;
}

/* ---- trees ---- */

void bk_node_free(struct bk_node *n)
{
    free(n->name);
    free(n->user);
    free(n->group);
    free(n->linktarget);
    free(n->content);
    for (size_t i = 0; i < n->nxattrs; i++) {
        free(n->xattrs[i].name);
        free(n->xattrs[i].value);
    }
    free(n->xattrs);
}

void bk_tree_free(struct bk_tree *t)
{
    for (size_t i = 0; i < t->n; i++)
        bk_node_free(&t->nodes[i]);
    free(t->nodes);
    t->nodes = NULL;
    t->n = 0;
}

static const char *const type_names[] = { "file", "dir", "symlink", "dev", "chardev", "fifo", "socket", "irregular" };

/* A non-negative integer field, else 0. jansson refuses integer literals past
 * int64, so what is kept must stay below 2^63 (a real like 1e19 too): a tree
 * written back must read again. */
static uint64_t get_u64(json_t *j, const char *k)
{
    json_t *v = json_object_get(j, k);
    if (json_is_integer(v))
        return json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : 0;
    if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) < 9223372036854775808.0)
        return (uint64_t)json_real_value(v);
    return 0;
}

static int node_parse(json_t *o, struct bk_node *n)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *type = json_string_value(json_object_get(o, "type"));
    if (!name || !type || !*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return -EBADMSG;
    n->name = strdup(name);
    n->type = BK_N_OTHER;
    for (int i = 0; i < (int)ARRAY_SIZE(type_names); i++)
        if (!strcmp(type, type_names[i]))
            n->type = (enum bk_ntype)i;
    n->mode = (uint32_t)get_u64(o, "mode");
    n->mtime_ns = get_time(o, "mtime");
    n->atime_ns = get_time(o, "atime");
    n->ctime_ns = get_time(o, "ctime");
    n->uid = (uint32_t)get_u64(o, "uid");
    n->gid = (uint32_t)get_u64(o, "gid");
    n->user = dup_str(o, "user");
    n->group = dup_str(o, "group");
    n->inode = get_u64(o, "inode");
    n->device_id = get_u64(o, "device_id");
    n->size = get_u64(o, "size");
    n->links = get_u64(o, "links");
    n->rdev = get_u64(o, "device");
    n->linktarget = dup_str(o, "linktarget");
    json_t *c = json_object_get(o, "content");
    if (json_is_array(c) && json_array_size(c)) {
        n->content = calloc(json_array_size(c), sizeof(bk_id));
        if (!n->content)
            return -ENOMEM;
        size_t i;
        json_t *x;
        json_array_foreach(c, i, x) {
            const char *s = json_string_value(x);
            if (!s || bk_id_parse(s, strlen(s), &n->content[i]))
                return -EBADMSG;
            n->ncontent++;
        }
    }
    const char *sub = json_string_value(json_object_get(o, "subtree"));
    if (sub) {
        if (bk_id_parse(sub, strlen(sub), &n->subtree))
            return -EBADMSG;
        n->has_subtree = true;
    }
    json_t *xa = json_object_get(o, "extended_attributes");
    if (json_is_array(xa) && json_array_size(xa)) {
        n->xattrs = calloc(json_array_size(xa), sizeof(*n->xattrs));
        if (!n->xattrs)
            return -ENOMEM;
        size_t i;
        json_t *x;
        json_array_foreach(xa, i, x) {
            const char *xn = json_string_value(json_object_get(x, "name"));
            const char *xv = json_string_value(json_object_get(x, "value"));
            if (!xn)
                continue;
            struct bk_xattr *a = &n->xattrs[n->nxattrs++];
            a->name = strdup(xn);
            size_t vl = xv ? strlen(xv) : 0;
            a->value = malloc(vl / 4 * 3 + 3);
            long k = a->value ? bk_b64_decode(xv ? xv : "", a->value, vl / 4 * 3 + 3) : -1;
            if (k < 0)
                return -EBADMSG;
            a->len = (size_t)k;
        }
    }
    return n->name ? 0 : -ENOMEM;
}

int bk_tree_parse(const char *json, size_t len, struct bk_tree *out, char *err, size_t errlen)
{
    json_error_t je;
    memset(out, 0, sizeof(*out));
    json_t *j = json_loadb(json, len, 0, &je);
    json_t *nodes = json_object_get(j, "nodes");
    if (!json_is_object(j) || (!json_is_array(nodes) && !json_is_null(nodes) && nodes)) {
        snprintf(err, errlen, "tree: not a tree document%s%s", j ? "" : ": ", j ? "" : je.text);
        json_decref(j);
        return -EBADMSG;
    }
    size_t n = json_is_array(nodes) ? json_array_size(nodes) : 0;
    out->nodes = calloc(n ? n : 1, sizeof(*out->nodes));
    if (!out->nodes) {
        json_decref(j);
        return -ENOMEM;
    }
    int e = 0;
    for (size_t i = 0; i < n && !e; i++) {
        e = node_parse(json_array_get(nodes, i), &out->nodes[i]);
        out->n++;
        if (e)
            snprintf(err, errlen, "tree: node %zu is malformed", i);
    }
    json_decref(j);
    if (e)
        bk_tree_free(out);
    return e;
}

int bk_tree_load(struct bk_repo *r, const bk_id *id, struct bk_tree *out, char *err, size_t errlen)
{
    const struct bk_ientry *e = bk_index_find(r, id, BK_BLOB_TREE);
    char hex[65];
    if (!e) {
        bk_id_hex(id, hex);
        snprintf(err, errlen, "tree %.16s is in no index", hex);
        return -ENOENT;
    }
    struct buf b = BUF_INIT;
    int x = bk_blob_load(r, e, &b, err, errlen);
    if (!x)
        x = bk_tree_parse(buf_head(&b), buf_used(&b), out, err, errlen);
    buf_free(&b);
    return x;
}

int bk_tree_encode(const struct bk_tree *t, struct buf *b)
{
    char hex[65];
    buf_puts(b, "{\"nodes\":[");
    for (size_t i = 0; i < t->n; i++) {
        const struct bk_node *n = &t->nodes[i];
        buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(b, n->name);
        buf_printf(b, ",\"type\":\"%s\"", type_names[n->type]);
        if (n->mode)
            buf_printf(b, ",\"mode\":%u", n->mode);
        put_time(b, "mtime", n->mtime_ns);
        put_time(b, "atime", n->atime_ns);
        put_time(b, "ctime", n->ctime_ns);
        buf_printf(b, ",\"uid\":%u,\"gid\":%u", n->uid, n->gid);
        if (n->user && *n->user) {
            buf_puts(b, ",\"user\":");
            buf_json_str(b, n->user);
        }
        if (n->group && *n->group) {
            buf_puts(b, ",\"group\":");
            buf_json_str(b, n->group);
        }
        if (n->inode)
            buf_printf(b, ",\"inode\":%llu", (unsigned long long)n->inode);
        if (n->device_id)
            buf_printf(b, ",\"device_id\":%llu", (unsigned long long)n->device_id);
        if (n->size)
            buf_printf(b, ",\"size\":%llu", (unsigned long long)n->size);
        if (n->links)
            buf_printf(b, ",\"links\":%llu", (unsigned long long)n->links);
        if (n->linktarget && *n->linktarget) {
            buf_puts(b, ",\"linktarget\":");
            buf_json_str(b, n->linktarget);
        }
        if (n->nxattrs) {
            buf_puts(b, ",\"extended_attributes\":[");
            for (size_t k = 0; k < n->nxattrs; k++) {
                buf_puts(b, k ? ",{\"name\":" : "{\"name\":");
                buf_json_str(b, n->xattrs[k].name);
                char *v = bk_b64_encode(n->xattrs[k].value, n->xattrs[k].len);
                if (!v)
                    return -ENOMEM;
                buf_printf(b, ",\"value\":\"%s\"}", v);
                free(v);
            }
            buf_putc(b, ']');
        }
        if (n->rdev)
            buf_printf(b, ",\"device\":%llu", (unsigned long long)n->rdev);
        if (n->type == BK_N_FILE) {
            buf_puts(b, ",\"content\":[");
            for (size_t k = 0; k < n->ncontent; k++) {
                bk_id_hex(&n->content[k], hex);
                buf_printf(b, "%s\"%s\"", k ? "," : "", hex);
            }
            buf_putc(b, ']');
        } else {
            buf_puts(b, ",\"content\":null");
        }
        if (n->has_subtree) {
            bk_id_hex(&n->subtree, hex);
            buf_printf(b, ",\"subtree\":\"%s\"", hex);
        }
        buf_putc(b, '}');
    }
    buf_puts(b, "]}\n");
    return b->data ? 0 : -ENOMEM;
}
