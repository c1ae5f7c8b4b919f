/* libFuzzer harness: WAL replay of an arbitrary segment (CRCs, record framing,
 * series and sample records) and the chunk decoder over what it loaded. A
 * corrupted log must be cut, never crash the process. */
#include "metrics/tsdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/cairn-fuzz-wal-%d", (int)getpid());
        mkdir(dir, 0755);
        char w[128];
        snprintf(w, sizeof(w), "%s/wal", dir);
        mkdir(w, 0755);
    }
    char seg[128];
    snprintf(seg, sizeof(seg), "%s/wal/00000001", dir);
    /* mostly valid framing: the fuzzer's bytes become records with good CRCs
     * when they start with 'R', raw bytes otherwise */
    FILE *f = fopen(seg, "wb");
    if (!f)
        return 0;
    if (size > 1 && data[0] == 'R') {
        size_t off = 1;
        while (off < size) {
            size_t len = data[off] % 64;
            uint8_t type = (uint8_t)(1 + (data[off] >> 7));
            off++;
            if (len > size - off)
                len = size - off;
            uint32_t l = (uint32_t)len, crc = (uint32_t)crc32(0L, data + off, (uInt)len);
            fwrite(&type, 1, 1, f);
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
    char err[256];
    if (tsdb_open(&db, dir, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < db.nseries; i++) {
            if (!db.series[i])
                continue;       /* the slot of a collected series (references leave gaps) */
            struct tsdb_iter it;
            int64_t t;
            double v;
            tsdb_iter_init(&it, db.series[i], INT64_MIN, INT64_MAX);
            while (tsdb_iter_next(&it, &t, &v))
                ;
        }
        tsdb_close(&db);
    }
    unlink(seg);
    return 0;
}
