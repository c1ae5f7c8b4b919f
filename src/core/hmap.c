/* hmap.c - see hmap.h. Deletion shifts the following entries of the probe run back
 * (no tombstones), so lookups stay short after many deletes. */
#include "core/hmap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

uint64_t hmap_hash(const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static struct hmap_slot *find(const struct hmap *m, const void *key, size_t klen, uint64_t h)
{
    if (!m->cap)
        return NULL;
    size_t i = h & (m->cap - 1);
    for (;;) {
        struct hmap_slot *s = &m->slots[i];
        if (!s->key)
            return s;
        if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
        i = (i + 1) & (m->cap - 1);
    }
}

void *hmap_get(const struct hmap *m, const void *key, size_t klen)
{
    struct hmap_slot *s = find(m, key, klen, hmap_hash(key, klen));
    return s && s->key ? s->value : NULL;
}

static int grow(struct hmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct hmap_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct hmap_slot *s = &m->slots[i];
        if (!s->key)
            continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].key)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int hmap_put(struct hmap *m, const void *key, size_t klen, void *value)
{
    if ((m->n + 1) * 4 > m->cap * 3 && grow(m))
        return -ENOMEM;
    uint64_t h = hmap_hash(key, klen);
    struct hmap_slot *s = find(m, key, klen, h);
    if (s->key) {
        s->value = value;
        return 0;
    }
    char *k = malloc(klen + 1);
    if (!k)
        return -ENOMEM;
    memcpy(k, key, klen);
    k[klen] = 0;
    *s = (struct hmap_slot){ k, klen, h, value };
    m->n++;
    return 0;
}

void *hmap_del(struct hmap *m, const void *key, size_t klen)
{
    struct hmap_slot *s = find(m, key, klen, hmap_hash(key, klen));
    if (!s || !s->key)
        return NULL;
    void *v = s->value;
    free(s->key);
    size_t i = (size_t)(s - m->slots), j = i;
    m->slots[i].key = NULL;
    for (;;) {
        j = (j + 1) & (m->cap - 1);
        if (!m->slots[j].key)
            break;
        size_t home = m->slots[j].hash & (m->cap - 1);
        /* move j back to i when i lies on j's probe path (home .. j, cyclically) */
        bool on_path = i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (on_path) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = NULL;
            i = j;
        }
    }
    m->n--;
    return v;
}

int hmap_next(const struct hmap *m, size_t *it, const struct hmap_slot **slot)
{
    while (*it < m->cap) {
        const struct hmap_slot *s = &m->slots[(*it)++];
        if (s->key) {
            *slot = s;
            return 1;
        }
    }
    return 0;
}

void hmap_free(struct hmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}
