/* hmap.h - a hash map from byte-string keys to pointers (open addressing, linear
 * probing, FNV-1a). The map owns copies of its keys; values belong to the caller.
 */
#ifndef CAIRN_HMAP_H
#define CAIRN_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct hmap_slot {
    char *key;                      /* NULL: empty */
    size_t klen;
    uint64_t hash;
    void *value;
};

struct hmap {
    struct hmap_slot *slots;
    size_t cap, n;                  /* cap: a power of two, or 0 */
};

uint64_t hmap_hash(const void *key, size_t klen);
/* The value stored under key, or NULL. */
void *hmap_get(const struct hmap *m, const void *key, size_t klen);
/* Stores value under key (replacing any). Returns 0 or -ENOMEM. */
int hmap_put(struct hmap *m, const void *key, size_t klen, void *value);
/* Removes key; returns its value or NULL. */
void *hmap_del(struct hmap *m, const void *key, size_t klen);
/* Iteration: for (size_t i = 0; hmap_next(m, &i, &slot);) ... */
int hmap_next(const struct hmap *m, size_t *it, const struct hmap_slot **slot);
void hmap_free(struct hmap *m);

#endif
