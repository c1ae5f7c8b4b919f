/* libFuzzer harness: loading a head snapshot (dir/snapshot). Inputs starting with
 * 'S' become a well-framed file (magic, header, records with good CRCs) so the
 * fuzzer reaches the series and chunk decoding; others are written raw. A damaged
 * snapshot must be refused with an error, never crash ('T' frames a version-2
 * file, with out-of-order samples); whatever loads must read
 * back through the chunk iterator and take new samples. */
#include "metrics/tsdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdint.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/cairn-fuzz-snap-%d", (int)getpid());
        mkdir(dir, 0755);
    }
    char path[128], w[128];
    snprintf(path, sizeof(path), "%s/snapshot", dir);
    snprintf(w, sizeof(w), "%s/wal", dir);
    mkdir(w, 0755);
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    if (size > 1 && (data[0] == 'S' || data[0] == 'T')) {
        uint32_t seg = 1;
        uint64_t n = 0;
        for (size_t off = 1; off < size; n++) {
            size_t len = data[off] + (size_t)(off + 1 < size ? data[off + 1] % 4 : 0) * 256;
            off += 2;
            off = off > size ? size : off;
            off += len > size - off ? size - off : len;
        }
        fwrite(data[0] == 'S' ? "CAIRNSN1" : "CAIRNSN2", 1, 8, f);
        fwrite(&seg, 4, 1, f);
        fwrite(&n, 8, 1, f);
        for (size_t off = 1; off < size;) {
            size_t len = data[off] + (size_t)(off + 1 < size ? data[off + 1] % 4 : 0) * 256;
            off += 2;
            off = off > size ? size : off;
            if (len > size - off)
                len = size - off;
            uint32_t l = (uint32_t)len, crc = (uint32_t)crc32(0L, data + off, (uInt)len);
            fwrite(&l, 4, 1, f);
            fwrite(&crc, 4, 1, f);
            fwrite(data + off, 1, len, f);
            off += len;
        }
    } else {
        fwrite(data, 1, size, f);
    }
    fclose(f);
    struct tsdb db;
    char err[512];
    if (tsdb_open(&db, dir, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < db.nseries; i++) {
            if (!db.series[i])
                continue;       /* the slot of a collected series (references leave gaps) */
            struct tsdb_iter it;
            tsdb_iter_init(&it, db.series[i], INT64_MIN, INT64_MAX);
            int64_t t;
            double v;
            while (tsdb_iter_next(&it, &t, &v))
                ;
            if (db.series[i]->has_last && db.series[i]->last_t < INT64_MAX)
                tsdb_append(&db, db.series[i], db.series[i]->last_t + 1, 1);
        }
    }
    tsdb_close(&db);
    unlink(path);
    char seg[160];
    snprintf(seg, sizeof(seg), "%s/00000001", w);
    unlink(seg);
    return 0;
}
