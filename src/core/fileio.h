/* fileio.h - the file chores of every store: whole writes, directory fsync, and
 * the numbered files (00000001.blk, ...) a store keeps its segments in. */
#ifndef CAIRN_FILEIO_H
#define CAIRN_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes all n bytes (retrying short writes and EINTR); 0 or a negated errno. */
int cairn_write_all(int fd, const void *p, size_t n);
/* The same at offset off (pwrite). */
int cairn_pwrite_all(int fd, const void *p, size_t n, uint64_t off);
/* A copy of the store under src at dst for a backup (the store's thread calls it,
 * so nothing changes meanwhile): files the store never changes once written are
 * hard-linked (immutable(path relative to src) says which), the others copied;
 * src's own snapshots/ directory is left out. 0 or a negated errno. */
typedef bool (*cairn_immutable_fn)(const char *rel, void *arg);
int cairn_snapshot_tree(const char *src, const char *dst, cairn_immutable_fn immutable, void *arg);
/* An immutable test for stores whose immutable files are those under one
 * directory: arg is that prefix ("blocks/"). */
bool cairn_under_prefix(const char *rel, void *prefix);
/* Removes path and everything under it (not following symlinks); 0 when gone. */
int cairn_remove_tree(const char *path);
/* fsync of a directory, so that a rename or unlink in it is durable. */
int cairn_fsync_dir(const char *dir);
/* The numbers of the files in dir named as 8 decimal digits plus suffix, sorted
 * ascending, into a malloc'd array. 0 or a negated errno. */
int cairn_list_numbered(const char *dir, const char *suffix, uint32_t **out, size_t *n);
/* Opens path for appending (created 0644; emptied first with truncate), with its
 * current size in *size: a log's next segment. The fd, or a negated errno. */
int cairn_open_append(const char *path, int truncate, uint64_t *size);

#endif
