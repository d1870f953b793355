/* libFuzzer target: a journal row read back (gateway/segment.c, tg_segment_load), as the
 * pipeline reads one at start and when the backlog drains: whatever is stored, the load must
 * fail cleanly or yield records that lie in the row's rid range, strictly increasing, and
 * that survive compress -> load unchanged.
 *
 * Input: byte 0 = codec (mod 3: none, zstd, lz4), bytes 1-4 = stored raw size (LE, taken
 * modulo 1 MiB so that a huge one is tried too via byte 0's high bit: then the full 32 bits),
 * bytes 5-6 = rid range length - 1 (first rid 1000), then the stored blob. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

static const enum tg_codec_id codecs[] = {TG_CODEC_NONE, TG_CODEC_ZSTD, TG_CODEC_LZ4};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 7)
        return 0;
    enum tg_codec_id codec = codecs[(data[0] & 0x7f) % 3];
    uint32_t raw = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
                   (uint32_t)data[4] << 24;
    if (!(data[0] & 0x80))
        raw %= 1u << 20;
    uint64_t first = 1000, last = first + ((uint64_t)data[5] | (uint64_t)data[6] << 8);
    static struct tg_segment *seg, *again;
    if (!seg) {
        seg = tg_segment_new(1 << 20);
        again = tg_segment_new(1 << 20);
        check(seg && again);
    }
    tg_err e = tg_segment_load(seg, codec, data + 7, size - 7, raw, first, last);
    if (e != TG_OK) {
        check(e == TG_ERR_INTERNAL || e == TG_ERR_NOMEM);
        check(tg_segment_count(seg) == 0);
        return 0;
    }
    size_t n = tg_segment_count(seg);
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        struct tg_jrecord r;
        tg_segment_get(seg, i, &r);
        check(r.rid >= first && r.rid <= last);
        check(i == 0 || r.rid > prev);
        check(r.kind == TG_JREC_TELEMETRY || r.kind == TG_JREC_DLQ);
        check(tg_segment_find(seg, r.rid) == (long)i);
        prev = r.rid;
    }
    /* What loaded compresses and loads back to the same records. */
    uint8_t *blob;
    size_t len;
    check(tg_segment_compress(seg, codec, 1, &blob, &len) == TG_OK);
    check(tg_segment_load(again, codec, blob, len, tg_segment_raw_bytes(seg), first, last) ==
          TG_OK);
    check(tg_segment_count(again) == n);
    for (size_t i = 0; i < n; i++) {
        struct tg_jrecord a, b;
        tg_segment_get(seg, i, &a);
        tg_segment_get(again, i, &b);
        check(a.rid == b.rid && a.kind == b.kind && a.ts_ms == b.ts_ms && a.rx_ms == b.rx_ms);
        check(a.key_len == b.key_len && a.value_len == b.value_len && a.aux_len == b.aux_len);
        check(!a.key_len || memcmp(a.key, b.key, a.key_len) == 0);
        check(!a.value_len || memcmp(a.value, b.value, a.value_len) == 0);
        check(!a.aux_len || memcmp(a.aux, b.aux, a.aux_len) == 0);
    }
    free(blob);
    return 0;
}
