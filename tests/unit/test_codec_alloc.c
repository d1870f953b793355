/* The decoder's allocation contract: after tg_decoder_new(), decoding CBOR payloads (native,
 * signed, SenML, and rejected ones) calls no allocator at all, and canonical encoding never
 * does; nor does reading canonical CBOR records back (tg_canonical_decode). This program is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc, which
 * routes every allocator call made by the test and by libtidegate_common through the
 * counters of test_alloc_count.h (libcbor's streaming decoder, a shared library, documents that it does not
 * allocate). */
#include "codec_canonical.h"
#include "codec_canonical_decode.h"
#include "codec_native.h"
#include "test_codec_util.h"

#include "test_alloc_count.h"

static tg_err fake_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[TG_SIG_LEN])
{
    (void)ctx, (void)msg, (void)len;
    memset(sig, 0x5a, TG_SIG_LEN);
    return TG_OK;
}

static void cbor_decoding_does_not_allocate(void **state)
{
    (void)state;
    unsigned long before_new = allocations;
    struct tg_decoder *dec = tg_decoder_new(NULL);
    assert_non_null(dec);
    assert_true(allocations > before_new); /* the wrapper does see the library's calls */

    static const struct tg_metric metrics[] = {{.name = "temp", .value = 21.3},
                                               {.name = "hum", .value = 40}};
    static const struct tg_reading rd = {.device = "d", .has_seq = true, .boot = 1, .seq = 2,
                                         .ts_ms = 3, .n_metrics = 2, .metrics = metrics};
    uint8_t native[128], signed_native[128];
    size_t native_len, signed_len;
    assert_int_equal(tg_codec_native_encode(&rd, native, sizeof native, &native_len), TG_OK);
    assert_int_equal(tg_codec_native_encode_signed(&rd, fake_sign, NULL, signed_native,
                                                   sizeof signed_native, &signed_len),
                     TG_OK);
    struct tbuf senml = {0};
    tb_hex(&senml, "82 a4 21 6464657631 00 6161 01 6143 02 f94d00 a3 00 6162 06 20 04 f5");
    struct tbuf bad = {0};
    tb_hex(&bad, "a4 63736571 01 64626f6f74 01 627473 05 616d a1 6174 f97e00");

    unsigned long before = allocations;
    for (int i = 0; i < 1000; i++) {
        struct tg_decoded out;
        assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", native, native_len,
                                           NOW_MS, &out),
                         TG_OK);
        char json[512];
        uint8_t cbor[512];
        size_t len;
        assert_int_equal(tg_codec_canonical_json(&out.readings[0], "gw", 1, json, sizeof json,
                                                 &len),
                         TG_OK);
        assert_int_equal(tg_codec_canonical_cbor(&out.readings[0], "gw", 1, cbor, sizeof cbor,
                                                 &len),
                         TG_OK);
        assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", signed_native,
                                           signed_len, NOW_MS, &out),
                         TG_OK);
        assert_non_null(out.sig);
        assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", senml.b, senml.n, NOW_MS,
                                           &out),
                         TG_OK);
        assert_int_equal(out.n_readings, 2);
        assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", bad.b, bad.n, NOW_MS,
                                           &out),
                         TG_ERR_NON_FINITE);
    }
    assert_int_equal(allocations, before);
    tg_decoder_destroy(dec);
}

static void canonical_cbor_decoding_does_not_allocate(void **state)
{
    (void)state;
    struct tg_canonical_decoder *cd = tg_canonical_decoder_new(NULL);
    assert_non_null(cd);
    static const struct tg_metric metrics[] = {{.name = "temp", .unit = "Cel", .value = 21.3},
                                               {.name = "hum", .value = 40}};
    static const struct tg_reading rd = {.device = "dev-1", .has_seq = true, .boot = 1,
                                         .seq = 2, .ts_ms = 3, .n_metrics = 2,
                                         .metrics = metrics};
    uint8_t rec[256];
    size_t len;
    assert_int_equal(tg_codec_canonical_cbor(&rd, "gw-1", 4, rec, sizeof rec, &len), TG_OK);
    struct tbuf bad = {0};
    tb_hex(&bad, "a1 6178 01"); /* {"x": 1}: an unknown field */
    unsigned long before = allocations;
    for (int i = 0; i < 1000; i++) {
        struct tg_reading out;
        struct tg_canonical_extra extra;
        assert_int_equal(tg_canonical_decode(cd, rec, len, 1, &out, &extra), TG_OK);
        assert_int_equal(out.n_metrics, 2);
        assert_int_equal(tg_canonical_decode(cd, rec, len, -1, &out, &extra), TG_OK);
        assert_int_equal(tg_canonical_decode(cd, bad.b, bad.n, 1, &out, &extra),
                         TG_ERR_UNKNOWN_FIELD);
    }
    assert_int_equal(allocations, before);
    tg_canonical_decoder_destroy(cd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cbor_decoding_does_not_allocate),
        cmocka_unit_test(canonical_cbor_decoding_does_not_allocate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
