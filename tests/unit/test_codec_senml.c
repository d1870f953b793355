/* Unit tests for the SenML decoder (codec_senml.c): the RFC 8428 examples in JSON and CBOR,
 * time resolution, base fields, grouping into readings, and every rejection. */
#include <jansson.h>
#include <math.h>

#include "test_codec_util.h"

/* RFC 8428 5.1.1, Single Datapoint */
static const char *const rfc_single =
    "[{\"n\":\"urn:dev:ow:10e2073a01080063\",\"u\":\"Cel\",\"v\":23.1}]";

/* RFC 8428 5.1.2, Multiple Datapoints */
static const char *const rfc_multiple_datapoints =
    "[{\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"n\":\"voltage\",\"u\":\"V\",\"v\":120.1},"
    " {\"n\":\"current\",\"u\":\"A\",\"v\":1.2}]";

/* RFC 8428 5.1.3, Multiple Measurements */
static const char *const rfc_multiple_measurements =
    "[{\"bn\":\"urn:dev:ow:10e2073a0108006:\",\"bt\":1.276020076001e+09,"
    "  \"bu\":\"A\",\"bver\":5,"
    "  \"n\":\"voltage\",\"u\":\"V\",\"v\":120.1},"
    " {\"n\":\"current\",\"t\":-5,\"v\":1.2},"
    " {\"n\":\"current\",\"t\":-4,\"v\":1.3},"
    " {\"n\":\"current\",\"t\":-3,\"v\":1.4},"
    " {\"n\":\"current\",\"t\":-2,\"v\":1.5},"
    " {\"n\":\"current\",\"t\":-1,\"v\":1.6},"
    " {\"n\":\"current\",\"v\":1.7}]";

/* RFC 8428 5.1.4, Resolved Data */
static const char *const rfc_resolved =
    "[{\"n\":\"urn:dev:ow:10e2073a01080063:voltage\",\"t\":1.276020076e+09,\"u\":\"V\","
    "  \"v\":120.1},"
    " {\"n\":\"urn:dev:ow:10e2073a01080063:current\",\"t\":1.276020076e+09,\"u\":\"A\","
    "  \"v\":1.2}]";

/* RFC 8428 5.1.6, Collection of Resources (with a string and a data value) */
static const char *const rfc_collection =
    "[{\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"n\":\"temp\",\"u\":\"Cel\",\"v\":23.1},"
    " {\"n\":\"label\",\"vs\":\"Machine Room\"},"
    " {\"n\":\"open\",\"vb\":false},"
    " {\"n\":\"nfc-reader\",\"vd\":\"aGkgCg\"}]";

/* RFC 8428 section 6: the CBOR representation of the 5.1.2 example, reconstructed from the
 * RFC's dump: [{-2: "urn:dev:ow:10e2073a01080063:", 0: "voltage", 1: "V", 2: 120.1},
 *              {0: "current", 1: "A", 2: 1.2}] */
static const char *const rfc_cbor_hex =
    "82 a4 21 78 1c 75726e3a6465763a6f773a31306532303733613031303830303633 3a"
    " 00 67 766f6c74616765 01 61 56 02 fb 405e066666666666"
    " a3 00 67 63757272656e74 01 61 41 02 fb 3ff3333333333333";

static void check_metric(const struct tg_reading *rd, const char *name, double value,
                         const char *unit)
{
    const struct tg_metric *m = find_metric(rd, name);
    if (m->value != value)
        fail_msg("metric %s: %.17g, want %.17g", name, m->value, value);
    if (unit)
        assert_string_equal(m->unit, unit);
    else
        assert_null(m->unit);
}

static void put_cbor_value(struct tbuf *t, const json_t *value)
{
    if (json_is_string(value)) {
        tb_text(t, json_string_value(value));
    } else if (json_is_integer(value)) {
        json_int_t v = json_integer_value(value);
        if (v >= 0)
            tb_head(t, 0, (uint64_t)v);
        else
            tb_head(t, 1, (uint64_t)(-1 - v));
    } else if (json_is_real(value)) {
        double d = json_real_value(value);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        uint8_t b[9] = {0xfb};
        for (int k = 0; k < 8; k++)
            b[1 + k] = (uint8_t)(bits >> (56 - 8 * k));
        tb_bytes(t, b, 9);
    } else if (json_is_boolean(value)) {
        tb_hex(t, json_is_true(value) ? "f5" : "f4");
    } else if (json_is_array(value)) {
        tb_head(t, 4, json_array_size(value));
        size_t i;
        json_t *elem;
        json_array_foreach(value, i, elem)
            put_cbor_value(t, elem);
    } else if (json_is_object(value)) {
        tb_head(t, 5, json_object_size(value));
        const char *key;
        json_t *elem;
        json_object_foreach((json_t *)value, key, elem) {
            tb_text(t, key);
            put_cbor_value(t, elem);
        }
    } else {
        fail_msg("unsupported JSON value in test pack");
    }
}

/* Turns a SenML JSON pack into its CBOR form (integer labels of RFC 8428 Table 4; "vd" text
 * becomes a byte string; other values keep their JSON types). */
static void json_to_senml_cbor(const char *json, struct tbuf *t)
{
    static const struct {
        const char *name;
        int label;
    } labels[] = {{"bver", -1}, {"bn", -2}, {"bt", -3}, {"bu", -4}, {"bv", -5},
                  {"bs", -6},   {"n", 0},   {"u", 1},   {"v", 2},   {"vs", 3},
                  {"vb", 4},    {"s", 5},   {"t", 6},   {"ut", 7},  {"vd", 8}};
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    assert_non_null(root);
    assert_true(json_is_array(root));
    tb_head(t, 4, json_array_size(root));
    size_t i;
    json_t *rec;
    json_array_foreach(root, i, rec) {
        if (!json_is_object(rec)) {
            put_cbor_value(t, rec);
            continue;
        }
        tb_head(t, 5, json_object_size(rec));
        const char *key;
        json_t *value;
        json_object_foreach(rec, key, value) {
            int label = 1000;
            for (size_t k = 0; k < sizeof labels / sizeof labels[0]; k++)
                if (strcmp(labels[k].name, key) == 0)
                    label = labels[k].label;
            if (label == 1000)
                tb_text(t, key);
            else if (label >= 0)
                tb_head(t, 0, (uint64_t)label);
            else
                tb_head(t, 1, (uint64_t)(-1 - label));
            if (strcmp(key, "vd") == 0 && json_is_string(value)) {
                tb_head(t, 2, json_string_length(value));
                tb_str(t, json_string_value(value));
            } else {
                put_cbor_value(t, value);
            }
        }
    }
    json_decref(root);
}

/* Decodes a JSON pack and its CBOR form; both must give the same readings. */
static void decode_both(struct tg_decoder *dec, const char *json, struct tg_decoded *out)
{
    struct tbuf t = {0};
    json_to_senml_cbor(json, &t);
    struct tg_decoded cbor;
    expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, TG_OK, NULL, &cbor);
    assert_int_equal(cbor.format, TG_FORMAT_SENML);
    assert_true(cbor.cbor);
    /* keep a copy of the CBOR results' shape; the JSON decode reuses the arena */
    size_t n = cbor.n_readings;
    int64_t ts[64];
    size_t counts[64];
    double first_values[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++) {
        ts[i] = cbor.readings[i].ts_ms;
        counts[i] = cbor.readings[i].n_metrics;
        first_values[i] = cbor.readings[i].metrics[0].value;
    }
    expect_text(dec, TG_FORMAT_AUTO, json, TG_OK, NULL, out);
    assert_int_equal(out->format, TG_FORMAT_SENML);
    assert_false(out->cbor);
    assert_null(out->sig);
    assert_int_equal(out->n_readings, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out->readings[i].ts_ms, ts[i]);
        assert_int_equal(out->readings[i].n_metrics, counts[i]);
        assert_true(out->readings[i].metrics[0].value == first_values[i]);
        assert_false(out->readings[i].has_seq);
        assert_string_equal(out->readings[i].device, "dev-1");
    }
}

static void rfc8428_single_datapoint(void **state)
{
    struct tg_decoded out;
    decode_both(*state, rfc_single, &out);
    assert_int_equal(out.n_readings, 1);
    assert_int_equal(out.readings[0].ts_ms, NOW_MS); /* no time: now */
    assert_int_equal(out.readings[0].n_metrics, 1);
    check_metric(&out.readings[0], "urn:dev:ow:10e2073a01080063", 23.1, "Cel");
}

static void rfc8428_multiple_datapoints(void **state)
{
    struct tg_decoded out;
    decode_both(*state, rfc_multiple_datapoints, &out);
    assert_int_equal(out.n_readings, 1);
    const struct tg_reading *rd = &out.readings[0];
    assert_int_equal(rd->ts_ms, NOW_MS);
    assert_int_equal(rd->n_metrics, 2);
    /* names are "n" without the base name: the device is already known */
    assert_string_equal(rd->metrics[0].name, "voltage");
    assert_string_equal(rd->metrics[1].name, "current");
    check_metric(rd, "voltage", 120.1, "V");
    check_metric(rd, "current", 1.2, "A");
}

static void rfc8428_multiple_measurements(void **state)
{
    struct tg_decoded out;
    decode_both(*state, rfc_multiple_measurements, &out);
    /* seven records, six distinct times: voltage and the last current share bt */
    assert_int_equal(out.n_readings, 6);
    const int64_t bt_ms = INT64_C(1276020076001);
    assert_int_equal(out.readings[0].ts_ms, bt_ms);
    assert_int_equal(out.readings[0].n_metrics, 2);
    check_metric(&out.readings[0], "voltage", 120.1, "V");
    check_metric(&out.readings[0], "current", 1.7, "A"); /* bu applies */
    static const double currents[] = {1.2, 1.3, 1.4, 1.5, 1.6};
    for (int i = 1; i <= 5; i++) {
        const struct tg_reading *rd = &out.readings[i];
        assert_int_equal(rd->ts_ms, bt_ms - (6 - i) * 1000);
        assert_int_equal(rd->n_metrics, 1);
        check_metric(rd, "current", currents[i - 1], "A");
    }
}

static void rfc8428_resolved_data(void **state)
{
    struct tg_decoded out;
    decode_both(*state, rfc_resolved, &out);
    assert_int_equal(out.n_readings, 1);
    assert_int_equal(out.readings[0].ts_ms, INT64_C(1276020076000));
    check_metric(&out.readings[0], "urn:dev:ow:10e2073a01080063:voltage", 120.1, "V");
    check_metric(&out.readings[0], "urn:dev:ow:10e2073a01080063:current", 1.2, "A");
}

static void rfc8428_collection_of_resources(void **state)
{
    struct tg_decoder *dec = *state;
    /* string and data values are refused, with the reason */
    expect_text(dec, TG_FORMAT_AUTO, rfc_collection, TG_ERR_UNSUPPORTED,
                "record 1: SenML string values (vs) are not supported", NULL);
    struct tbuf t = {0};
    json_to_senml_cbor(rfc_collection, &t);
    expect_tbuf(dec, &t, TG_ERR_UNSUPPORTED, "string values (vs)");

    /* without them, the boolean becomes 0 */
    struct tg_decoded out;
    decode_both(dec,
                "[{\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"n\":\"temp\",\"u\":\"Cel\","
                "\"v\":23.1},{\"n\":\"open\",\"vb\":false},{\"n\":\"closed\",\"vb\":true}]",
                &out);
    assert_int_equal(out.n_readings, 1);
    check_metric(&out.readings[0], "temp", 23.1, "Cel");
    check_metric(&out.readings[0], "open", 0, NULL);
    check_metric(&out.readings[0], "closed", 1, NULL);
    expect_text(dec, TG_FORMAT_AUTO, "[{\"n\":\"r\",\"vd\":\"aGkgCg\"}]", TG_ERR_UNSUPPORTED,
                "data values (vd)", NULL);
}

static void rfc8428_cbor_representation(void **state)
{
    struct tg_decoder *dec = *state;
    struct tbuf t = {0};
    tb_hex(&t, rfc_cbor_hex);
    /* it is exactly what the JSON example converts to */
    struct tbuf converted = {0};
    json_to_senml_cbor(rfc_multiple_datapoints, &converted);
    assert_int_equal(t.n, converted.n);
    assert_memory_equal(t.b, converted.b, t.n);

    struct tg_decoded out;
    expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, TG_OK, NULL, &out);
    assert_int_equal(out.format, TG_FORMAT_SENML);
    assert_true(out.cbor);
    assert_int_equal(out.n_readings, 1);
    check_metric(&out.readings[0], "voltage", 120.1, "V");
    check_metric(&out.readings[0], "current", 1.2, "A");
    /* forcing SenML works as well; forcing native does not */
    expect_decode(dec, TG_FORMAT_SENML, t.b, t.n, TG_OK, NULL, &out);
    expect_decode(dec, TG_FORMAT_NATIVE, t.b, t.n, TG_ERR_WRONG_TYPE, "expected a map", NULL);

    /* every proper prefix is an error */
    for (size_t len = 0; len < t.n; len++) {
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, t.b, len);
        assert_int_not_equal(
            tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", copy, len, NOW_MS, &out), TG_OK);
        free(copy);
    }
}

static void time_resolution(void **state)
{
    struct tg_decoder *dec = *state;
    struct tg_decoded out;
    /* relative: negative, fractional, and a base time below 2^28 */
    decode_both(dec, "[{\"n\":\"a\",\"t\":-5,\"v\":1},{\"n\":\"b\",\"t\":0.5,\"v\":2},"
                     "{\"bt\":100,\"n\":\"c\",\"t\":-0.25,\"v\":3}]",
                &out);
    assert_int_equal(out.n_readings, 3);
    assert_int_equal(out.readings[0].ts_ms, NOW_MS - 5000);
    assert_int_equal(out.readings[1].ts_ms, NOW_MS + 500);
    assert_int_equal(out.readings[2].ts_ms, NOW_MS + 99750);
    /* 2^28 - 1 is still relative, 2^28 is absolute */
    decode_both(dec, "[{\"n\":\"a\",\"t\":268435455,\"v\":1},{\"n\":\"b\",\"t\":268435456,\"v\":2}]",
                &out);
    assert_int_equal(out.readings[0].ts_ms, NOW_MS + INT64_C(268435455000));
    assert_int_equal(out.readings[1].ts_ms, INT64_C(268435456000));
    /* absolute with milliseconds */
    decode_both(dec, "[{\"bt\":1700000000.123,\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"t\":0.001,\"v\":1}]",
                &out);
    assert_int_equal(out.readings[0].ts_ms, INT64_C(1700000000123));
    assert_int_equal(out.readings[1].ts_ms, INT64_C(1700000000124));
    /* times before the epoch or absurdly far away are refused */
    expect_text(dec, TG_FORMAT_AUTO, "[{\"n\":\"a\",\"t\":1e300,\"v\":1}]", TG_ERR_OUT_OF_RANGE,
                "record 0: resolved time", NULL);
    expect_text(dec, TG_FORMAT_AUTO, "[{\"n\":\"a\",\"t\":-1e12,\"v\":1}]", TG_ERR_OUT_OF_RANGE,
                NULL, NULL);
}

static void base_fields(void **state)
{
    struct tg_decoder *dec = *state;
    struct tg_decoded out;
    /* bv is added to v; bu, bv and bn carry forward until replaced; u overrides bu; a
     * record without n is named by bn; a base-only record adds nothing */
    decode_both(dec,
                "[{\"bn\":\"dev:\",\"bu\":\"Cel\",\"bv\":10},"
                " {\"n\":\"a\",\"v\":1.5},"
                " {\"n\":\"b\",\"u\":\"K\",\"v\":-1},"
                " {\"bv\":0,\"bu\":\"%RH\",\"n\":\"c\",\"v\":40},"
                " {\"bn\":\"whole-name\",\"v\":7}]",
                &out);
    assert_int_equal(out.n_readings, 1);
    const struct tg_reading *rd = &out.readings[0];
    assert_int_equal(rd->n_metrics, 4);
    check_metric(rd, "a", 11.5, "Cel");
    check_metric(rd, "b", 9, "K");
    check_metric(rd, "c", 40, "%RH");
    check_metric(rd, "whole-name", 7, "%RH");
    /* bver up to 10 is fine, 11 is not */
    decode_both(dec, "[{\"bver\":10,\"n\":\"a\",\"v\":1}]", &out);
    expect_text(dec, TG_FORMAT_AUTO, "[{\"bver\":11,\"n\":\"a\",\"v\":1}]", TG_ERR_UNSUPPORTED,
                "SenML version 11 is not supported (highest is 10)", NULL);
    struct tbuf t = {0};
    json_to_senml_cbor("[{\"bver\":11,\"n\":\"a\",\"v\":1}]", &t);
    expect_tbuf(dec, &t, TG_ERR_UNSUPPORTED, "SenML version 11");
    /* same name at different times is fine, at the same time it is not */
    decode_both(dec, "[{\"n\":\"a\",\"v\":1},{\"n\":\"a\",\"t\":-1,\"v\":2}]", &out);
    assert_int_equal(out.n_readings, 2);
    expect_text(dec, TG_FORMAT_AUTO, "[{\"n\":\"a\",\"v\":1},{\"n\":\"a\",\"v\":2}]",
                TG_ERR_DUPLICATE_FIELD, "metric \"a\" appears twice at time 1700000000000 ms",
                NULL);
    /* "ut" and unknown labels are ignored */
    decode_both(dec, "[{\"n\":\"a\",\"v\":1,\"ut\":60,\"x-vendor\":{\"deep\":[1,2]}}]", &out);
    check_metric(&out.readings[0], "a", 1, NULL);
}

struct reject {
    const char *pack;
    bool cbor_too; /* also check the CBOR conversion */
    tg_err code;
    const char *detail;
};

static const struct reject senml_rejects[] = {
    {"[]", true, TG_ERR_MISSING_FIELD, "SenML pack holds no measurement"},
    {"[{\"bn\":\"x\"}]", true, TG_ERR_MISSING_FIELD, "holds no measurement"},
    {"[1]", false, TG_ERR_WRONG_TYPE, "record 0: expected object, got integer"},
    {"[{\"n\":\"a\"}]", true, TG_ERR_MISSING_FIELD, "record 0: no value"},
    {"[{\"n\":\"a\",\"t\":1}]", true, TG_ERR_MISSING_FIELD, "record 0: no value"},
    {"[{\"n\":\"a\",\"v\":1,\"vb\":true}]", true, TG_ERR_MALFORMED, "more than one value"},
    {"[{\"v\":1}]", true, TG_ERR_BAD_NAME, "record 0: no name"},
    {"[{\"n\":\"\",\"v\":1}]", true, TG_ERR_BAD_NAME, "no name"},
    {"[{\"n\":\"a\\u0007\",\"v\":1}]", true, TG_ERR_BAD_NAME, "control character"},
    {"[{\"n\":\"a\",\"u\":\"C\\u0000\",\"v\":1}]", false, TG_ERR_MALFORMED, NULL},
    {"[{\"n\":\"a\",\"u\":\"C\\u0001\",\"v\":1}]", true, TG_ERR_BAD_NAME, "unit"},
    {"[{\"n\":\"a\",\"v\":\"1\"}]", true, TG_ERR_WRONG_TYPE,
     "record 0: label \"v\": expected number, got"},
    {"[{\"n\":1,\"v\":1}]", true, TG_ERR_WRONG_TYPE, "label \"n\": expected text string"},
    {"[{\"n\":\"a\",\"vb\":1}]", true, TG_ERR_WRONG_TYPE, "label \"vb\": expected boolean"},
    {"[{\"n\":\"a\",\"t\":\"now\",\"v\":1}]", true, TG_ERR_WRONG_TYPE, "label \"t\""},
    {"[{\"bver\":1.5,\"n\":\"a\",\"v\":1}]", true, TG_ERR_WRONG_TYPE, "label \"bver\""},
    {"[{\"n\":\"a\",\"s\":1}]", true, TG_ERR_UNSUPPORTED, "sums (s)"},
    {"[{\"bs\":1,\"n\":\"a\",\"v\":1}]", true, TG_ERR_UNSUPPORTED, "base sums (bs)"},
    {"[{\"n\":\"a\",\"vs\":\"x\"}]", true, TG_ERR_UNSUPPORTED, "string values (vs)"},
    {"[{\"n\":\"a\",\"v\":1,\"foo_\":1}]", true, TG_ERR_UNSUPPORTED,
     "record 0: must-understand label \"foo_\" is not supported"},
    {"[{\"n\":\"a\",\"v\":1e308,\"bv\":1e308}]", true, TG_ERR_NON_FINITE, "bv + v is infinite"},
    {"[{\"n\":\"a\",\"v\":1,\"x\":[[[[[[[[1]]]]]]]]}]", true, TG_ERR_TOO_DEEP, NULL},
    {"[{\"n\":\"a\",\"v\":1,\"n\":\"b\"}]", false, TG_ERR_DUPLICATE_FIELD, NULL},
    {"[{\"n\":\"a\",\"v\":1}] 1", false, TG_ERR_TRAILING_BYTES, NULL},
    {"[{\"n\":\"a\",\"v\":1}", false, TG_ERR_MALFORMED, NULL},
};

static void senml_rejections(void **state)
{
    struct tg_decoder *dec = *state;
    for (size_t i = 0; i < sizeof senml_rejects / sizeof senml_rejects[0]; i++) {
        const struct reject *r = &senml_rejects[i];
        expect_text(dec, TG_FORMAT_AUTO, r->pack, r->code, r->detail, NULL);
        if (r->cbor_too) {
            struct tbuf t = {0};
            json_to_senml_cbor(r->pack, &t);
            expect_tbuf(dec, &t, r->code, r->detail);
        }
    }
}

static void senml_cbor_specifics(void **state)
{
    struct tg_decoder *dec = *state;
    struct tg_decoded out;
    static const struct {
        const char *hex;
        tg_err code;
        const char *detail;
    } cases[] = {
        /* text labels with the JSON names are accepted; unknown integer labels ignored */
        {"81 a2 616e 6161 6176 01", TG_OK, NULL},
        {"81 a3 00 6161 02 01 1863 a1 01 02", TG_OK, NULL},
        {"81 a3 00 6161 02 01 3863 01", TG_OK, NULL},
        {"81 a2 00 6161 02 f97e00", TG_ERR_NON_FINITE, "record 0: label \"v\" is NaN"},
        {"81 a2 00 6161 02 fa7f800000", TG_ERR_NON_FINITE, "is infinite"},
        {"81 a2 00 6161 f93c00 01", TG_ERR_WRONG_TYPE,
         "record 0: labels must be integers or text strings, got float"},
        {"81 a3 00 6161 02 01 02 02", TG_ERR_DUPLICATE_FIELD, "record 0: label \"v\" appears twice"},
        {"81 a3 00 6161 02 01 616e 6162", TG_ERR_DUPLICATE_FIELD, "label \"n\" appears twice"},
        {"81 a2 00 6161 02 01 00", TG_ERR_TRAILING_BYTES, "1 bytes follow the SenML pack"},
        {"81 a2 00 6161 08 4100", TG_ERR_UNSUPPORTED, "data values (vd)"},
        {"81 a2 00 6161 04 01", TG_ERR_WRONG_TYPE, "label \"vb\": expected boolean"},
        {"81 80", TG_ERR_WRONG_TYPE, "record 0: expected map, got array"},
        {"83 010203", TG_ERR_WRONG_TYPE, "record 0: expected map, got unsigned integer"},
        {"9f ff", TG_ERR_UNSUPPORTED, "indefinite-length CBOR array"},
        {"81 bf 00 6161 02 01 ff", TG_ERR_UNSUPPORTED, "indefinite-length CBOR map"},
        {"81 a3 00 6161 02 01 1863 9f ff", TG_ERR_UNSUPPORTED, "indefinite-length"},
        {"81 a3 00 6161 02 01 1863 c1 01", TG_ERR_UNSUPPORTED, "tags"},
        {"9b ffffffffffffffff a0", TG_ERR_TOO_MANY, "SenML pack: 18446744073709551615 records"},
        /* 2^32+1 records: one record on a 32-bit board if the count were libcbor's size_t */
        {"9b 0000000100000001 a0", TG_ERR_TOO_MANY, "SenML pack: 4294967297 records"},
        {"81 a2 00 6161 02", TG_ERR_MALFORMED, "truncated"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tbuf t = {0};
        tb_hex(&t, cases[i].hex);
        expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, cases[i].code, cases[i].detail, &out);
        if (cases[i].code == TG_OK)
            check_metric(&out.readings[0], "a", 1, NULL);
    }
    /* an ignored value that nests deeper than max_depth */
    struct tbuf t = {0};
    tb_hex(&t, "81 a3 00 6161 02 01 1863");
    for (int i = 0; i < 7; i++)
        tb_hex(&t, "81");
    tb_hex(&t, "01");
    expect_tbuf(dec, &t, TG_ERR_TOO_DEEP, "nests deeper than the limit of 8");
    t.n = 0;
    tb_hex(&t, "81 a3 00 6161 02 01 1863");
    for (int i = 0; i < 6; i++)
        tb_hex(&t, "81");
    tb_hex(&t, "01");
    expect_tbuf(dec, &t, TG_OK, NULL);
}

static void senml_limits(void **state)
{
    (void)state;
    struct tg_codec_limits limits = {.max_readings = 3, .max_metrics = 2};
    struct tg_decoder *dec = tg_decoder_new(&limits);
    assert_non_null(dec);
    struct tg_decoded out;
    expect_text(dec, TG_FORMAT_AUTO,
                "[{\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"v\":1},"
                " {\"n\":\"a\",\"t\":-1,\"v\":1},{\"n\":\"a\",\"t\":-2,\"v\":1}]",
                TG_OK, NULL, &out);
    assert_int_equal(out.n_readings, 3);
    expect_text(dec, TG_FORMAT_AUTO,
                "[{\"n\":\"a\",\"v\":1},{\"n\":\"a\",\"t\":-1,\"v\":1},"
                " {\"n\":\"a\",\"t\":-2,\"v\":1},{\"n\":\"a\",\"t\":-3,\"v\":1}]",
                TG_ERR_TOO_MANY, "more than 3 distinct times", NULL);
    expect_text(dec, TG_FORMAT_AUTO,
                "[{\"n\":\"a\",\"v\":1},{\"n\":\"b\",\"v\":1},{\"n\":\"c\",\"v\":1}]",
                TG_ERR_TOO_MANY, "more than 2 metrics at time", NULL);
    /* the record count is bounded up front (readings x metrics = 6 here) */
    struct tbuf t = {0};
    tb_head(&t, 4, 7);
    for (int i = 0; i < 7; i++)
        tb_hex(&t, "a2 00 6161 02 01");
    expect_tbuf(dec, &t, TG_ERR_TOO_MANY, "7 records exceed the limit of 6");
    tg_decoder_destroy(dec);

    /* a pack of the default size limit, full of the smallest records, stays in bounds */
    dec = tg_decoder_new(NULL);
    t.n = 0;
    size_t n = (TG_CODEC_DEFAULT_MAX_PAYLOAD_BYTES - 3) / 3;
    tb_head(&t, 4, n);
    tb_hex(&t, "a1 21 6161"); /* {bn: "a"} */
    for (size_t i = 1; i < n; i++)
        tb_hex(&t, "a1 02 01");
    assert_true(t.n <= TG_CODEC_DEFAULT_MAX_PAYLOAD_BYTES);
    expect_tbuf(dec, &t, TG_ERR_TOO_MANY, "more than 64 metrics at time");
    tg_decoder_destroy(dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc8428_single_datapoint),
        cmocka_unit_test(rfc8428_multiple_datapoints),
        cmocka_unit_test(rfc8428_multiple_measurements),
        cmocka_unit_test(rfc8428_resolved_data),
        cmocka_unit_test(rfc8428_collection_of_resources),
        cmocka_unit_test(rfc8428_cbor_representation),
        cmocka_unit_test(time_resolution),
        cmocka_unit_test(base_fields),
        cmocka_unit_test(senml_rejections),
        cmocka_unit_test(senml_cbor_specifics),
        cmocka_unit_test(senml_limits),
    };
    return cmocka_run_group_tests(tests, setup_decoder, teardown_decoder);
}
