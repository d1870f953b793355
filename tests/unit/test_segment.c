/* Unit tests for gateway/segment.c: framing, lookup, compression round trips, corruption. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "segment.h"

static struct tg_jrecord make_rec(uint64_t rid, char *keybuf, char *valbuf)
{
    sprintf(keybuf, "dev-%03u", (unsigned)(rid % 50));
    sprintf(valbuf, "{\"device\":\"%s\",\"seq\":%u,\"m\":{\"t\":21.%u}}", keybuf, (unsigned)rid,
            (unsigned)(rid % 10));
    return (struct tg_jrecord){
        .rid = rid,
        .kind = rid % 7 == 0 ? TG_JREC_DLQ : TG_JREC_TELEMETRY,
        .ts_ms = 1763712000000 + (int64_t)rid * 10 - (int64_t)(rid % 3) * 500, /* not monotonic */
        .rx_ms = 1763712000000 + (int64_t)rid * 10,
        .key = (const uint8_t *)keybuf,
        .key_len = strlen(keybuf),
        .value = (const uint8_t *)valbuf,
        .value_len = strlen(valbuf),
        .aux = rid % 7 == 0 ? (const uint8_t *)"reason" : NULL,
        .aux_len = rid % 7 == 0 ? 6 : 0,
    };
}

static void check_rec(const struct tg_segment *seg, size_t idx, uint64_t rid)
{
    char key[32], val[128];
    struct tg_jrecord want = make_rec(rid, key, val), got;
    tg_segment_get(seg, idx, &got);
    assert_int_equal(got.rid, want.rid);
    assert_int_equal(got.kind, want.kind);
    assert_int_equal(got.ts_ms, want.ts_ms);
    assert_int_equal(got.rx_ms, want.rx_ms);
    assert_int_equal(got.key_len, want.key_len);
    assert_memory_equal(got.key, want.key, want.key_len);
    assert_int_equal(got.value_len, want.value_len);
    assert_memory_equal(got.value, want.value, want.value_len);
    assert_int_equal(got.aux_len, want.aux_len);
    if (want.aux_len)
        assert_memory_equal(got.aux, want.aux, want.aux_len);
}

/* Appends records with rids first, first+step, ... until n records or the segment is full. */
static size_t fill(struct tg_segment *seg, uint64_t first, uint64_t step, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        char key[32], val[128];
        struct tg_jrecord r = make_rec(first + i * step, key, val);
        tg_err e = tg_segment_append(seg, &r);
        if (e == TG_ERR_FULL)
            break;
        assert_int_equal(e, TG_OK);
    }
    return i;
}

static void append_get_find(void **state)
{
    (void)state;
    struct tg_segment *seg = tg_segment_new(1 << 20);
    assert_non_null(seg);
    assert_int_equal(fill(seg, 1000, 3, 500), 500);
    assert_int_equal(tg_segment_count(seg), 500);
    for (size_t i = 0; i < 500; i++)
        check_rec(seg, i, 1000 + i * 3);
    assert_int_equal(tg_segment_find(seg, 1000), 0);
    assert_int_equal(tg_segment_find(seg, 1000 + 499 * 3), 499);
    assert_int_equal(tg_segment_find(seg, 1001), -1);
    assert_int_equal(tg_segment_find(seg, 999), -1);
    assert_int_equal(tg_segment_find(seg, 5000), -1);

    /* rids must increase */
    char key[32], val[128];
    struct tg_jrecord r = make_rec(1000, key, val);
    assert_int_equal(tg_segment_append(seg, &r), TG_ERR_INTERNAL);

    tg_segment_reset(seg);
    assert_int_equal(tg_segment_count(seg), 0);
    assert_int_equal(tg_segment_raw_bytes(seg), 0);
    tg_segment_destroy(seg);
    tg_segment_destroy(NULL);
}

static void full_segment(void **state)
{
    (void)state;
    struct tg_segment *seg = tg_segment_new(4096);
    size_t n = fill(seg, 1, 1, 10000);
    assert_true(n > 10 && n < 10000);
    assert_true(tg_segment_raw_bytes(seg) <= 4096);
    /* A record bigger than the cap is still accepted into an empty segment. */
    tg_segment_reset(seg);
    static uint8_t big[8192];
    struct tg_jrecord r = {.rid = 1, .key = (const uint8_t *)"k", .key_len = 1, .value = big,
                           .value_len = sizeof big};
    assert_int_equal(tg_segment_append(seg, &r), TG_OK);
    r.rid = 2;
    assert_int_equal(tg_segment_append(seg, &r), TG_ERR_FULL);
    tg_segment_destroy(seg);
}

static void round_trip(enum tg_codec_id codec)
{
    struct tg_segment *seg = tg_segment_new(1 << 20), *back = tg_segment_new(1 << 20);
    size_t n = fill(seg, 77, 2, 2000);
    uint8_t *blob;
    size_t blob_len;
    assert_int_equal(tg_segment_compress(seg, codec, 3, &blob, &blob_len), TG_OK);
    if (codec != TG_CODEC_NONE) /* repetitive records must compress well */
        assert_true(blob_len * 4 < tg_segment_raw_bytes(seg));
    assert_int_equal(
        tg_segment_load(back, codec, blob, blob_len, tg_segment_raw_bytes(seg), 77, 77 + 2 * n),
        TG_OK);
    assert_int_equal(tg_segment_count(back), n);
    for (size_t i = 0; i < n; i++)
        check_rec(back, i, 77 + i * 2);

    /* Corruption: every truncation and a wrong size fail cleanly, never crash. */
    for (size_t cut = 0; cut < blob_len; cut += 1 + blob_len / 97)
        assert_int_not_equal(
            tg_segment_load(back, codec, blob, cut, tg_segment_raw_bytes(seg), 0, UINT64_MAX),
            TG_OK);
    assert_int_not_equal(tg_segment_load(back, codec, blob, blob_len,
                                         tg_segment_raw_bytes(seg) + 1, 0, UINT64_MAX),
                         TG_OK);
    assert_int_equal(tg_segment_count(back), 0);
    free(blob);
    tg_segment_destroy(seg);
    tg_segment_destroy(back);
}

static void round_trip_zstd(void **state) { (void)state; round_trip(TG_CODEC_ZSTD); }
static void round_trip_lz4(void **state) { (void)state; round_trip(TG_CODEC_LZ4); }
static void round_trip_none(void **state) { (void)state; round_trip(TG_CODEC_NONE); }

static void corrupt_raw_bytes(void **state)
{
    (void)state;
    struct tg_segment *seg = tg_segment_new(1 << 16);
    /* Serialized garbage: every byte pattern must load or fail, never crash or overread. */
    uint8_t raw[64];
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        size_t len = 1 + (size_t)(round % 63);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            raw[i] = (uint8_t)(seed >> 16);
        }
        tg_err e = tg_segment_load(seg, TG_CODEC_NONE, raw, len, len, 0, UINT64_MAX);
        if (e == TG_OK) { /* whatever loaded must be readable */
            struct tg_jrecord r;
            for (size_t i = 0; i < tg_segment_count(seg); i++)
                tg_segment_get(seg, i, &r);
        }
    }
    /* rids that do not increase are rejected */
    const uint8_t dup[] = {5, 0, 0, 0, 0, 0, 0, /* rid 5 */ 0, 0, 0, 0, 0, 0, 0 /* rid 5 again */};
    assert_int_equal(
        tg_segment_load(seg, TG_CODEC_NONE, dup, sizeof dup, sizeof dup, 0, UINT64_MAX),
        TG_ERR_INTERNAL);
    tg_segment_destroy(seg);
}

/* Issue 11: rids outside the row's range would index past the caller's bitmaps. */
static void rids_outside_range_rejected(void **state)
{
    (void)state;
    struct tg_segment *seg = tg_segment_new(1 << 20), *back = tg_segment_new(1 << 20);
    assert_int_equal(fill(seg, 100, 1, 10), 10); /* rids 100..109 */
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_segment_compress(seg, TG_CODEC_ZSTD, 3, &blob, &len), TG_OK);
    size_t raw = tg_segment_raw_bytes(seg);
    assert_int_equal(tg_segment_load(back, TG_CODEC_ZSTD, blob, len, raw, 100, 109), TG_OK);
    assert_int_equal(tg_segment_load(back, TG_CODEC_ZSTD, blob, len, raw, 90, 200), TG_OK);
    assert_int_equal(tg_segment_load(back, TG_CODEC_ZSTD, blob, len, raw, 101, 109),
                     TG_ERR_INTERNAL);
    assert_int_equal(tg_segment_count(back), 0);
    assert_int_equal(tg_segment_load(back, TG_CODEC_ZSTD, blob, len, raw, 100, 108),
                     TG_ERR_INTERNAL);
    assert_int_equal(tg_segment_load(back, TG_CODEC_ZSTD, blob, len, raw, 109, 100),
                     TG_ERR_INTERNAL);
    free(blob);
    /* A delta that wraps around 2^64 back into the range is caught too: rid 5, then
     * 5 + (2^64 - 1) = 4. */
    const uint8_t wrap[] = {5, 0, 0, 0, 0, 0, 0,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                            0, 0, 0, 0, 0, 0};
    assert_int_equal(tg_segment_load(back, TG_CODEC_NONE, wrap, sizeof wrap, sizeof wrap, 1, 10),
                     TG_ERR_INTERNAL);
    tg_segment_destroy(seg);
    tg_segment_destroy(back);
}

/* Issue 11: a corrupt stored size is permanent (TG_ERR_INTERNAL: the row is dropped and
 * counted), not a shortage of memory the cursor would wait on forever, and nothing near
 * that size is allocated. */
static void corrupt_sizes_are_permanent(void **state)
{
    (void)state;
    struct tg_segment *seg = tg_segment_new(1 << 20), *back = tg_segment_new(1 << 20);
    size_t n = fill(seg, 1, 1, 300);
    size_t raw = tg_segment_raw_bytes(seg);
    static const enum tg_codec_id codecs[] = {TG_CODEC_ZSTD, TG_CODEC_LZ4, TG_CODEC_NONE};
    for (size_t c = 0; c < 3; c++) {
        uint8_t *blob;
        size_t len;
        assert_int_equal(tg_segment_compress(seg, codecs[c], 3, &blob, &len), TG_OK);
        const size_t bad[] = {raw - 1, raw + 1, (size_t)UINT32_MAX - 7, TG_SEGMENT_RAW_MAX + 1,
                              SIZE_MAX};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            assert_int_equal(tg_segment_load(back, codecs[c], blob, len, bad[i], 1, n),
                             TG_ERR_INTERNAL);
        assert_int_equal(tg_segment_load(back, codecs[c], blob, len, raw, 1, n), TG_OK);
        free(blob);
    }
    tg_segment_destroy(seg);
    tg_segment_destroy(back);
}

/* Issue 11: zstd frames carry a content checksum, so damage inside the compressed data is
 * found even where the decoder would otherwise produce well-formed but wrong records. */
static void zstd_checksum_catches_damage(void **state)
{
    (void)state;
    struct tg_segment *seg = tg_segment_new(1 << 20), *back = tg_segment_new(1 << 20);
    size_t n = fill(seg, 1, 1, 200);
    size_t raw = tg_segment_raw_bytes(seg);
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_segment_compress(seg, TG_CODEC_ZSTD, 3, &blob, &len), TG_OK);
    /* Frame header descriptor: bit 2 is Content_Checksum_flag. */
    assert_true(blob[4] & 0x04);
    /* Flip every bit of the last (checksum) bytes: each must fail. */
    for (size_t i = len - 4; i < len; i++) {
        blob[i] ^= 0x10;
        assert_int_equal(tg_segment_load(back, TG_CODEC_ZSTD, blob, len, raw, 1, n),
                         TG_ERR_INTERNAL);
        blob[i] ^= 0x10;
    }
    assert_int_equal(tg_segment_load(back, TG_CODEC_ZSTD, blob, len, raw, 1, n), TG_OK);
    free(blob);
    tg_segment_destroy(seg);
    tg_segment_destroy(back);
}

static void codec_names(void **state)
{
    (void)state;
    enum tg_codec_id c;
    assert_int_equal(tg_codec_id_parse("zstd", &c), TG_OK);
    assert_int_equal(c, TG_CODEC_ZSTD);
    assert_int_equal(tg_codec_id_parse("lz4", &c), TG_OK);
    assert_string_equal(tg_codec_id_name(c), "lz4");
    assert_int_equal(tg_codec_id_parse("gzip", &c), TG_ERR_CONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(append_get_find), cmocka_unit_test(full_segment),
        cmocka_unit_test(round_trip_zstd), cmocka_unit_test(round_trip_lz4),
        cmocka_unit_test(round_trip_none), cmocka_unit_test(corrupt_raw_bytes),
        cmocka_unit_test(codec_names), cmocka_unit_test(rids_outside_range_rejected),
        cmocka_unit_test(corrupt_sizes_are_permanent),
        cmocka_unit_test(zstd_checksum_catches_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
