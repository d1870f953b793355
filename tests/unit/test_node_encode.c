/* The firmware links the native payload encoder (common/codec_native_encode.c) without the
 * decoder, so that file has its own copies of two rules the decoder side also implements:
 * which metric names are valid (codec_decoder.c's tg_codec_name_problem) and how a number is
 * encoded (codec_native.c's tg_codec_cbor_put_number, used for the canonical record). These
 * tests hold the copies to the originals: every 1- and 2-byte name, every 3-byte name that
 * starts a multi-byte sequence, a sweep of 4-byte ones, and numbers at every boundary plus
 * random bit patterns. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "codec_internal.h"
#include "codec_native.h"

/* Encodes {seq 1, boot 1, ts 1, m {name: value}}. */
static tg_err encode_one(const char *name, double value, uint8_t *buf, size_t cap, size_t *len)
{
    const struct tg_metric metric = {.name = name, .value = value};
    const struct tg_reading rd = {.device = "d", .has_seq = true, .boot = 1, .seq = 1,
                                  .ts_ms = 1, .n_metrics = 1, .metrics = &metric};
    return tg_codec_native_encode(&rd, buf, cap, len);
}

static void check_name(const uint8_t *bytes, size_t n)
{
    char name[8];
    memcpy(name, bytes, n);
    name[n] = '\0';
    uint8_t buf[64];
    size_t len;
    bool decoder_ok = tg_codec_name_problem(name, n, SIZE_MAX) == NULL;
    tg_err err = encode_one(name, 1, buf, sizeof buf, &len);
    if ((err == TG_OK) != decoder_ok || (err != TG_OK && err != TG_ERR_BAD_NAME))
        fail_msg("name of %zu bytes %02x %02x %02x %02x: decoder %s, encoder %s", n, bytes[0],
                 n > 1 ? bytes[1] : 0, n > 2 ? bytes[2] : 0, n > 3 ? bytes[3] : 0,
                 decoder_ok ? "accepts" : "rejects", tg_err_reason(err));
}

/* A name the gateway's decoder (default limits) rejects as too long is refused at the node. */
static void name_length_limit_matches_the_decoder(void **state)
{
    (void)state;
    char name[TG_CODEC_DEFAULT_MAX_NAME_BYTES + 2];
    uint8_t buf[256];
    size_t len;
    for (size_t n = TG_CODEC_DEFAULT_MAX_NAME_BYTES; n <= TG_CODEC_DEFAULT_MAX_NAME_BYTES + 1; n++) {
        memset(name, 'a', n);
        name[n] = '\0';
        tg_err err = encode_one(name, 1, buf, sizeof buf, &len);
        if (n <= TG_CODEC_DEFAULT_MAX_NAME_BYTES) {
            assert_int_equal(err, TG_OK);
            struct tg_decoder *dec = tg_decoder_new(NULL);
            assert_non_null(dec);
            struct tg_decoded out;
            assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "d", buf, len, 0, &out), TG_OK);
            tg_decoder_destroy(dec);
        } else {
            assert_int_equal(err, TG_ERR_BAD_NAME);
        }
    }
}

static void name_rule_matches_the_decoder(void **state)
{
    (void)state;
    uint8_t b[4] = {0};
    check_name(b, 0);
    for (unsigned x = 1; x < 256; x++) {
        b[0] = (uint8_t)x;
        check_name(b, 1);
        for (unsigned y = 1; y < 256; y++) {
            b[1] = (uint8_t)y;
            check_name(b, 2);
        }
    }
    for (unsigned x = 0xc0; x < 256; x++) {
        b[0] = (uint8_t)x;
        for (unsigned y = 1; y < 256; y++) {
            b[1] = (uint8_t)y;
            for (unsigned z = 1; z < 256; z++) {
                b[2] = (uint8_t)z;
                check_name(b, 3);
            }
        }
    }
    for (unsigned x = 0xf0; x < 0xf8; x++) {
        b[0] = (uint8_t)x;
        for (unsigned y = 0x70; y < 0xd0; y++) {
            b[1] = (uint8_t)y;
            for (unsigned z = 0x70; z < 0xd0; z += 3) {
                b[2] = (uint8_t)z;
                for (unsigned w = 0x70; w < 0xd0; w += 5) {
                    b[3] = (uint8_t)w;
                    check_name(b, 4);
                }
            }
        }
    }
}

static void check_number(double value)
{
    uint8_t buf[64], number[9];
    size_t len, header_len;
    assert_int_equal(encode_one("x", value, buf, sizeof buf, &len), TG_OK);
    /* a4 63"seq" 01 64"boot" 01 62"ts" 01 61"m" a1 61"x" <number> */
    header_len = 1 + 4 + 1 + 5 + 1 + 3 + 1 + 2 + 1 + 2;
    size_t number_len = tg_codec_cbor_put_number(value, number);
    if (len != header_len + number_len || memcmp(buf + header_len, number, number_len) != 0)
        fail_msg("%.17g (%a) is encoded differently from the canonical record", value, value);
}

static void numbers_match_the_canonical_encoding(void **state)
{
    (void)state;
    static const double values[] = {
        0, -0.0, 1, -1, 23, 24, -24, -25, 255, 256, 65535, 65536, 4294967295.0, 4294967296.0,
        9007199254740992.0, 9007199254740993.0, 9223372036854775807.0, 9223372036854775808.0,
        18446744073709549568.0, 18446744073709551616.0, -9223372036854775808.0,
        -9223372036854777856.0, 0.5, -0.5, 21.5, 0.1, -0.1, 1e300, -1e300, FLT_MAX, -FLT_MAX,
        (double)FLT_MAX * 2, FLT_MIN, 1.401298464324817e-45, DBL_MIN, 5e-324, DBL_MAX,
        -DBL_MAX, 16777217, 1.0000001, 101325.25, 3.4028235677973366e38};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        check_number(values[i]);
    uint64_t rng = 0x243f6a8885a308d3u;
    for (int i = 0; i < 200000; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        double value;
        memcpy(&value, &rng, sizeof value);
        if (isfinite(value))
            check_number(value);
        /* and values near integers and small floats, where the choices are made */
        check_number((double)(int64_t)(rng >> (rng & 63)) * ((rng & 64) ? -1 : 1));
        check_number((double)(float)((double)(rng >> 40) / 1024.0));
    }
    uint8_t buf[64];
    size_t len;
    assert_int_equal(encode_one("x", NAN, buf, sizeof buf, &len), TG_ERR_NON_FINITE);
    assert_int_equal(encode_one("x", -INFINITY, buf, sizeof buf, &len), TG_ERR_NON_FINITE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(name_rule_matches_the_decoder),
        cmocka_unit_test(name_length_limit_matches_the_decoder),
        cmocka_unit_test(numbers_match_the_canonical_encoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
