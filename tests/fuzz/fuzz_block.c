/* libFuzzer harness: opening and reading an on-disk block (index and chunks).
 * Input: one mode byte, a little-endian u32 index length, the index, then the
 * chunks file. Mode 'C' rewrites the index's CRC after the mutation, so the
 * fuzzer gets past the checksum to the structural checks (offsets, counts,
 * orders, varints); other modes keep it, as a disk would. A damaged block must be
 * refused on open; whatever opens must decode every series, read its chunks
 * (their own CRC checked) and answer selections without leaving the mappings.
 * The chunk decoders also run over the raw chunk bytes. tests/fuzz/corpus/block
 * holds a real block written by cairn (seed-*). */
#include "metrics/tsdb.h"
#include "metrics/tsdb_block.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    uint32_t ixlen;
    memcpy(&ixlen, data + 1, 4);
    data += 5;
    size -= 5;
    if (ixlen > size)
        ixlen = (uint32_t)size;
    /* the index as a mapping would give it: 8-aligned, exactly its length */
    uint8_t *ix = aligned_alloc(8, ((size_t)ixlen + 8) & ~(size_t)7);
    uint8_t *ck = malloc(size - ixlen + 1);
    if (!ix || !ck) {
        free(ix);
        free(ck);
        return 0;
    }
    memcpy(ix, data, ixlen);
    memcpy(ck, data + ixlen, size - ixlen);
    if (data[-5] == 'C' && ixlen >= 8) {
        uint32_t crc = (uint32_t)crc32(0L, ix, ixlen - 8);
        memcpy(ix + ixlen - 8, &crc, 4);
    }
    /* both chunk decoders straight over the chunk bytes: a damaged chunk whose CRC
     * still matched must end in an error, never a read past its bits */
    for (uint8_t enc = 0; enc <= TSDB_ENC_DEC; enc++) {
        struct tsdb_chunk_iter it;
        size_t bits = (size - ixlen) * 8 > UINT32_MAX ? UINT32_MAX : (size - ixlen) * 8;
        tsdb_chunk_iter_init_enc(&it, ck, (uint32_t)bits, 400, enc, 1700000000000);
        int64_t t;
        double v;
        while (tsdb_chunk_next(&it, &t, &v))
            ;
    }
    struct tsdb_block b;
    char err[256];
    if (tsdb_block_open_mem(&b, ix, ixlen, ck, size - ixlen, err, sizeof(err)) == 0) {
        struct tsdb_bseries s;
        struct tsdb_sealed *chunks = NULL;
        for (uint32_t i = 0; i < b.nser; i++) {
            if (tsdb_block_series(&b, i, &s))
                __builtin_trap();       /* the open checked every record */
            struct tsdb_sealed *nc = realloc(chunks, (s.nchunks + 1) * sizeof(*nc));
            if (!nc)
                break;
            chunks = nc;
            uint32_t n = tsdb_block_chunks(&b, &s, chunks);
            for (uint32_t c = 0; c < n; c++) {
                struct tsdb_chunk_iter it;
                tsdb_chunk_iter_init_enc(&it, chunks[c].b, chunks[c].nbits, chunks[c].n,
                                         chunks[c].enc, chunks[c].mint);
                int64_t t;
                double v;
                while (tsdb_chunk_next(&it, &t, &v))
                    ;
            }
            for (uint16_t l = 0; l < s.nlabels; l++) {
                const struct tsdb_bval *v = tsdb_block_postings(&b, tsdb_block_sym(&b, s.lsym[2 * l]),
                                                                tsdb_block_sym(&b, s.lsym[2 * l + 1]));
                uint32_t *ids = v ? malloc(v->n * sizeof(*ids) + 1) : NULL;
                uint32_t k = ids ? tsdb_block_postings_decode(&b, v, ids) : 0;
                if (ids && k != v->n)
                    __builtin_trap();   /* the open checked every list */
                for (uint32_t j = 0; j < k; j++)
                    if (ids[j] >= b.nser)
                        __builtin_trap();
                free(ids);
            }
        }
        free(chunks);
        struct tsdb_matcher m[2];
        if (tsdb_matcher_init(&m[0], "__name__", TSDB_RE, ".+", err, sizeof(err)) == 0) {
            if (tsdb_matcher_init(&m[1], "job", TSDB_NEQ, "x", err, sizeof(err)) == 0) {
                uint32_t *ids;
                size_t k = tsdb_block_select(&b, m, 2, &ids);
                if (k > b.nser)
                    __builtin_trap();
                free(ids);
                tsdb_matcher_free(&m[1]);
            }
            tsdb_matcher_free(&m[0]);
        }
        tsdb_block_close(&b);
    }
    free(ix);
    free(ck);
    return 0;
}
