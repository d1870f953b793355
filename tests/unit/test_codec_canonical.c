/* Unit tests for the canonical record encoders (codec_canonical.c): exact JSON text for known
 * readings (key order, escaping, shortest numbers, units), CBOR that decodes back with
 * libcbor, the buffer-too-small contract, and the double formatter against a Python-made
 * table of shortest round-trip texts. */
#include <cbor.h>
#include <jansson.h>
#include <math.h>

#include "codec_canonical.h"
#include "test_codec_util.h"

static void expect_json(const struct tg_reading *rd, const char *gateway, int64_t gw_ts,
                        const char *want)
{
    char buf[2048];
    size_t len;
    assert_int_equal(tg_codec_canonical_json(rd, gateway, gw_ts, buf, sizeof buf, &len), TG_OK);
    buf[len] = '\0';
    if (strcmp(buf, want) != 0)
        fail_msg("canonical JSON\n got: %s\nwant: %s", buf, want);
    assert_int_equal(len, strlen(want));
}

static void json_native_reading(void **state)
{
    (void)state;
    struct tg_metric metrics[] = {
        {.name = "temp", .value = 21.3},
        {.name = "hum", .value = 40},
        {.name = "big", .value = 1e300},
        {.name = "neg", .value = -0.5},
        {.name = "tiny", .value = 5.960464477539063e-8},
        {.name = "sum", .value = 0.1 + 0.2},
        {.name = "zero", .value = -0.0},
    };
    struct tg_reading rd = {.device = "dev-1", .has_seq = true, .boot = 3, .seq = 42,
                            .ts_ms = INT64_C(1700000000123), .n_metrics = 7, .metrics = metrics};
    expect_json(&rd, "gw-a", INT64_C(1700000000200),
                "{\"device\":\"dev-1\",\"boot\":3,\"seq\":42,\"ts\":1700000000123,"
                "\"gw_ts\":1700000000200,\"gateway\":\"gw-a\",\"m\":{\"temp\":21.3,\"hum\":40,"
                "\"big\":1e+300,\"neg\":-0.5,\"tiny\":5.960464477539063e-8,"
                "\"sum\":0.30000000000000004,\"zero\":-0}}");
    /* without a gateway, gw_ts and gateway are left out */
    expect_json(&rd, NULL, 0,
                "{\"device\":\"dev-1\",\"boot\":3,\"seq\":42,\"ts\":1700000000123,"
                "\"m\":{\"temp\":21.3,\"hum\":40,\"big\":1e+300,\"neg\":-0.5,"
                "\"tiny\":5.960464477539063e-8,\"sum\":0.30000000000000004,\"zero\":-0}}");
    /* extremes of the integer fields */
    struct tg_reading edge = {.device = "d", .has_seq = true, .boot = UINT64_MAX, .seq = 0,
                              .ts_ms = INT64_MIN, .n_metrics = 0, .metrics = NULL};
    expect_json(&edge, "g", INT64_MAX,
                "{\"device\":\"d\",\"boot\":18446744073709551615,\"seq\":0,"
                "\"ts\":-9223372036854775808,\"gw_ts\":9223372036854775807,\"gateway\":\"g\","
                "\"m\":{}}");
}

static void json_senml_reading_with_units(void **state)
{
    (void)state;
    struct tg_metric metrics[] = {
        {.name = "voltage", .unit = "V", .value = 120.1},
        {.name = "flag", .value = 1},
        {.name = "current", .unit = "A", .value = 1.2},
    };
    struct tg_reading rd = {.device = "urn-dev", .has_seq = false, .boot = 9, .seq = 9,
                            .ts_ms = INT64_C(1276020076001), .n_metrics = 3, .metrics = metrics};
    expect_json(&rd, "gw", 5,
                "{\"device\":\"urn-dev\",\"ts\":1276020076001,\"gw_ts\":5,\"gateway\":\"gw\","
                "\"m\":{\"voltage\":120.1,\"flag\":1,\"current\":1.2},"
                "\"u\":{\"voltage\":\"V\",\"current\":\"A\"}}");
}

static void json_escaping(void **state)
{
    (void)state;
    struct tg_metric metrics[] = {
        {.name = "q\"b\\s/", .unit = "\x01\x1f\x7f", .value = 1},
        {.name = "\b\f\n\r\t", .value = 2},
        {.name = "\xc3\xbc\xe6\xb0\xb4\xf0\x90\x85\x91", .unit = "%RH", .value = 3},
    };
    struct tg_reading rd = {.device = "d", .ts_ms = 0, .n_metrics = 3, .metrics = metrics};
    expect_json(&rd, "g\"w", 0,
                "{\"device\":\"d\",\"ts\":0,\"gw_ts\":0,\"gateway\":\"g\\\"w\","
                "\"m\":{\"q\\\"b\\\\s/\":1,\"\\b\\f\\n\\r\\t\":2,"
                "\"\xc3\xbc\xe6\xb0\xb4\xf0\x90\x85\x91\":3},"
                "\"u\":{\"q\\\"b\\\\s/\":\"\\u0001\\u001f\x7f\","
                "\"\xc3\xbc\xe6\xb0\xb4\xf0\x90\x85\x91\":\"%RH\"}}");
    /* and jansson reads it back to the same strings */
    char buf[512];
    size_t len;
    assert_int_equal(tg_codec_canonical_json(&rd, "g\"w", 0, buf, sizeof buf, &len), TG_OK);
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, 0, &jerr);
    assert_non_null(root);
    json_t *m = json_object_get(root, "m");
    assert_true(json_integer_value(json_object_get(m, "\b\f\n\r\t")) == 2);
    assert_string_equal(json_string_value(json_object_get(json_object_get(root, "u"),
                                                          "q\"b\\s/")),
                        "\x01\x1f\x7f");
    json_decref(root);
}

/* Every capacity below the needed size fails with the needed size and writes no further
 * than the buffer (the buffers are exact heap blocks, so ASan would see an overrun). */
static void buffer_too_small(void **state)
{
    (void)state;
    struct tg_metric metrics[] = {{.name = "temp", .unit = "Cel", .value = 21.3},
                                  {.name = "x\"y", .value = 0.1}};
    struct tg_reading rd = {.device = "dev-1", .has_seq = true, .boot = 1, .seq = 2,
                            .ts_ms = 3, .n_metrics = 2, .metrics = metrics};
    for (int format = 0; format < 2; format++) {
        char big[512];
        size_t need;
        tg_err err = format == 0
                         ? tg_codec_canonical_json(&rd, "gw", 4, big, sizeof big, &need)
                         : tg_codec_canonical_cbor(&rd, "gw", 4, (uint8_t *)big, sizeof big, &need);
        assert_int_equal(err, TG_OK);
        for (size_t cap = 0; cap <= need; cap++) {
            char *buf = malloc(cap ? cap : 1);
            size_t len = 0;
            err = format == 0 ? tg_codec_canonical_json(&rd, "gw", 4, buf, cap, &len)
                              : tg_codec_canonical_cbor(&rd, "gw", 4, (uint8_t *)buf, cap, &len);
            assert_int_equal(len, need);
            if (cap < need) {
                assert_int_equal(err, TG_ERR_FULL);
            } else {
                assert_int_equal(err, TG_OK);
                assert_memory_equal(buf, big, need);
            }
            free(buf);
        }
    }
    /* non-finite values are refused rather than written as invalid JSON */
    metrics[1].value = NAN;
    char buf[256];
    size_t len;
    assert_int_equal(tg_codec_canonical_json(&rd, NULL, 0, buf, sizeof buf, &len),
                     TG_ERR_NON_FINITE);
    metrics[1].value = -INFINITY;
    assert_int_equal(tg_codec_canonical_cbor(&rd, NULL, 0, (uint8_t *)buf, sizeof buf, &len),
                     TG_ERR_NON_FINITE);
}

static const cbor_item_t *map_get(const cbor_item_t *map, const char *key)
{
    struct cbor_pair *pairs = cbor_map_handle(map);
    for (size_t i = 0; i < cbor_map_size(map); i++)
        if (cbor_isa_string(pairs[i].key) && cbor_string_length(pairs[i].key) == strlen(key) &&
            memcmp(cbor_string_handle(pairs[i].key), key, strlen(key)) == 0)
            return pairs[i].value;
    return NULL;
}

static double cbor_number(const cbor_item_t *item)
{
    if (cbor_isa_uint(item))
        return (double)cbor_get_int(item);
    if (cbor_isa_negint(item))
        return -1.0 - (double)cbor_get_int(item);
    assert_true(cbor_isa_float_ctrl(item));
    return cbor_float_get_float(item);
}

static void cbor_decodes_back(void **state)
{
    (void)state;
    struct tg_metric metrics[] = {
        {.name = "temp", .unit = "Cel", .value = 21.3}, /* double */
        {.name = "half", .value = 0.5},                /* single */
        {.name = "hum", .value = 40},                  /* integer */
        {.name = "neg", .value = -1e6},                /* negative integer */
        {.name = "huge", .value = 1e300},
        {.name = "nz", .value = -0.0},
    };
    struct tg_reading rd = {.device = "dev-1", .has_seq = true, .boot = 3, .seq = 42,
                            .ts_ms = INT64_C(1700000000123), .n_metrics = 6, .metrics = metrics};
    uint8_t buf[512];
    size_t len;
    assert_int_equal(tg_codec_canonical_cbor(&rd, "gw-a", 77, buf, sizeof buf, &len), TG_OK);
    struct cbor_load_result res;
    cbor_item_t *root = cbor_load(buf, len, &res);
    assert_non_null(root);
    assert_int_equal(res.read, len);
    assert_true(cbor_isa_map(root));
    assert_int_equal(cbor_map_size(root), 8);
    /* keys in canonical order */
    static const char *const keys[] = {"device", "boot", "seq", "ts", "gw_ts", "gateway", "m", "u"};
    struct cbor_pair *pairs = cbor_map_handle(root);
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(cbor_string_length(pairs[i].key), strlen(keys[i]));
        assert_memory_equal(cbor_string_handle(pairs[i].key), keys[i], strlen(keys[i]));
    }
    const cbor_item_t *device = map_get(root, "device");
    assert_memory_equal(cbor_string_handle(device), "dev-1", 5);
    assert_int_equal(cbor_get_int(map_get(root, "boot")), 3);
    assert_int_equal(cbor_get_int(map_get(root, "seq")), 42);
    assert_int_equal(cbor_get_int(map_get(root, "ts")), 1700000000123);
    assert_int_equal(cbor_get_int(map_get(root, "gw_ts")), 77);
    const cbor_item_t *m = map_get(root, "m");
    assert_int_equal(cbor_map_size(m), 6);
    for (size_t i = 0; i < 6; i++) {
        double v = cbor_number(map_get(m, metrics[i].name));
        assert_true(v == metrics[i].value);
        assert_int_equal(signbit(v), signbit(metrics[i].value));
    }
    assert_true(cbor_isa_uint(map_get(m, "hum")));
    assert_true(cbor_isa_negint(map_get(m, "neg")));
    assert_int_equal(cbor_float_get_width(map_get(m, "half")), CBOR_FLOAT_32);
    assert_int_equal(cbor_float_get_width(map_get(m, "temp")), CBOR_FLOAT_64);
    const cbor_item_t *u = map_get(root, "u");
    assert_int_equal(cbor_map_size(u), 1);
    assert_memory_equal(cbor_string_handle(map_get(u, "temp")), "Cel", 3);
    cbor_decref(&root);

    /* SenML-style reading without gateway: device, ts, m */
    rd.has_seq = false;
    rd.n_metrics = 2;
    metrics[0].unit = NULL;
    assert_int_equal(tg_codec_canonical_cbor(&rd, NULL, 0, buf, sizeof buf, &len), TG_OK);
    root = cbor_load(buf, len, &res);
    assert_non_null(root);
    assert_int_equal(cbor_map_size(root), 3);
    assert_null(map_get(root, "seq"));
    assert_null(map_get(root, "gateway"));
    assert_null(map_get(root, "u"));
    cbor_decref(&root);
}

static void format_double_examples(void **state)
{
    (void)state;
    static const struct {
        double value;
        const char *text;
    } cases[] = {
        {0.0, "0"},
        {-0.0, "-0"},
        {5, "5"},
        {-5, "-5"},
        {21.3, "21.3"},
        {0.1, "0.1"},
        {1.1, "1.1"},
        {-4.1, "-4.1"},
        {65504, "65504"},
        {100000, "100000"},
        {123456789.123, "123456789.123"},
        {0.30000000000000004, "0.30000000000000004"},
        {1.0 / 3, "0.3333333333333333"},
        {1e300, "1e+300"},
        {1e21, "1e+21"},
        {1e20, "1e+20"},
        {18446744073709551616.0, "1.8446744073709552e+19"},
        {9007199254740992.0, "9007199254740992"},
        {9007199254740994.0, "9.007199254740994e+15"},
        {123456789012345.6, "123456789012345.6"},
        {1000000000000000.5, "1.0000000000000005e+15"},
        {3.4028234663852886e+38, "3.4028234663852886e+38"},
        {5.960464477539063e-8, "5.960464477539063e-8"},
        {0.00006103515625, "0.00006103515625"},
        {1.5e-6, "0.0000015"},
        {1e-7, "1e-7"},
        {123e-20, "1.23e-18"},
        {5e-324, "5e-324"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[TG_CODEC_DOUBLE_MAX];
        size_t len = tg_codec_format_double(cases[i].value, out);
        if (strcmp(out, cases[i].text) != 0)
            fail_msg("%.17g: got %s, want %s", cases[i].value, out, cases[i].text);
        assert_int_equal(len, strlen(out));
    }
}

/* tests/unit/data/codec/doubles.txt: every power of two, random bit patterns and decimals,
 * with Python's shortest text laid out as codec_canonical.h says. */
static void format_double_table(void **state)
{
    (void)state;
    size_t len;
    uint8_t *file = read_test_file("doubles.txt", &len);
    char *text = calloc(1, len + 1);
    memcpy(text, file, len);
    size_t checked = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char want[64];
        unsigned long long bits;
        assert_int_equal(sscanf(line, "%llx %63s", &bits, want), 2);
        double value;
        uint64_t b = bits;
        memcpy(&value, &b, sizeof value);
        char out[TG_CODEC_DOUBLE_MAX];
        tg_codec_format_double(value, out);
        if (strcmp(out, want) != 0)
            fail_msg("%.17g (%016llx): got %s, want %s", value, bits, out, want);
        checked++;
    }
    assert_true(checked > 3000);
    free(text);
    free(file);
}

/* A million random doubles read back exactly. */
static void format_double_round_trips(void **state)
{
    (void)state;
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 1000000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        double value;
        memcpy(&value, &x, sizeof value);
        if (!isfinite(value))
            continue;
        if (i & 1) /* half of them sensor-like: a few decimals */
            value = nearbyint(fmod(value, 1e6) * 1000) / 1000;
        char out[TG_CODEC_DOUBLE_MAX];
        size_t len = tg_codec_format_double(value, out);
        assert_true(len < TG_CODEC_DOUBLE_MAX);
        double back = strtod(out, NULL);
        if (memcmp(&back, &value, sizeof back) != 0)
            fail_msg("%.17g printed as %s", value, out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_native_reading),
        cmocka_unit_test(json_senml_reading_with_units),
        cmocka_unit_test(json_escaping),
        cmocka_unit_test(buffer_too_small),
        cmocka_unit_test(cbor_decodes_back),
        cmocka_unit_test(format_double_examples),
        cmocka_unit_test(format_double_table),
        cmocka_unit_test(format_double_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
