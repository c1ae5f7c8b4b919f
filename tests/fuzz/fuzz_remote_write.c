/* libFuzzer harness: remote_write decoding (snappy, then the protobuf
 * WriteRequest) into an in-memory TSDB. The input is the raw protobuf; it is
 * snappy-compressed here so that the fuzzer explores the protobuf decoder, and
 * also fed uncompressed to exercise the snappy checks. */
#include "metrics/prom_internal.h"

#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct rw_result {
    uint64_t samples, series_refused, out_of_order;
    char err[256];
};
int prom_remote_write(struct prom_svc *ps, const void *body, size_t len, struct rw_result *res);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct prom_svc ps;
    char err[128];
    if (tsdb_open(&ps.db, NULL, err, sizeof(err)))
        abort();
    ps.db.max_series = 1000;
    size_t clen = snappy_max_compressed_length(size);
    char *comp = malloc(clen);
    struct rw_result res;
    if (comp && snappy_compress((const char *)data, size, comp, &clen) == SNAPPY_OK)
        prom_remote_write(&ps, comp, clen, &res);
    prom_remote_write(&ps, data, size, &res);
    free(comp);
    tsdb_close(&ps.db);
    return 0;
}
