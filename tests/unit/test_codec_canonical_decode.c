/* Unit tests for the canonical record decoder (codec_canonical_decode.c): round trips through
 * both encoders (codec_canonical.c), keys in any order, the content-type header, and one
 * rejection per rule with its code and detail text. */
#include <math.h>

#include "codec_canonical.h"
#include "codec_canonical_decode.h"
#include "test_codec_util.h"

static struct tg_canonical_decoder *cd;

static int setup(void **state)
{
    (void)state;
    cd = tg_canonical_decoder_new(NULL);
    return cd ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tg_canonical_decoder_destroy(cd);
    cd = NULL;
    return 0;
}

static void expect_same(const struct tg_reading *want, const char *gateway, int64_t gw_ts,
                        const struct tg_reading *got, const struct tg_canonical_extra *extra)
{
    assert_string_equal(got->device, want->device);
    assert_int_equal(got->has_seq, want->has_seq);
    if (want->has_seq) {
        assert_true(got->boot == want->boot);
        assert_true(got->seq == want->seq);
    }
    assert_true(got->ts_ms == want->ts_ms);
    assert_int_equal(got->n_metrics, want->n_metrics);
    for (size_t i = 0; i < want->n_metrics; i++) {
        assert_string_equal(got->metrics[i].name, want->metrics[i].name);
        assert_true(got->metrics[i].value == want->metrics[i].value);
        if (want->metrics[i].unit)
            assert_string_equal(got->metrics[i].unit, want->metrics[i].unit);
        else
            assert_null(got->metrics[i].unit);
    }
    if (gateway) {
        assert_non_null(extra->gateway);
        assert_string_equal(extra->gateway, gateway);
        assert_true(extra->gw_ts_ms == gw_ts);
    } else {
        assert_null(extra->gateway);
    }
}

/* Encodes rd both ways and decodes each, with the encoding named and sniffed. */
static void round_trip(const struct tg_reading *rd, const char *gateway, int64_t gw_ts)
{
    uint8_t buf[8192];
    size_t len;
    struct tg_reading got;
    struct tg_canonical_extra extra;
    assert_int_equal(tg_codec_canonical_json(rd, gateway, gw_ts, (char *)buf, sizeof buf, &len),
                     TG_OK);
    for (int mode = -1; mode <= 0; mode++) {
        tg_err err = tg_canonical_decode(cd, buf, len, mode, &got, &extra);
        if (err != TG_OK)
            fail_msg("JSON %.*s: %s", (int)len, buf, tg_canonical_decoder_error(cd));
        assert_string_equal(tg_canonical_decoder_error(cd), "");
        expect_same(rd, gateway, gw_ts, &got, &extra);
    }
    assert_int_equal(tg_codec_canonical_cbor(rd, gateway, gw_ts, buf, sizeof buf, &len), TG_OK);
    for (int mode = -1; mode <= 1; mode += 2) {
        tg_err err = tg_canonical_decode(cd, buf, len, mode, &got, &extra);
        if (err != TG_OK)
            fail_msg("CBOR: %s", tg_canonical_decoder_error(cd));
        expect_same(rd, gateway, gw_ts, &got, &extra);
    }
}

static void round_trips(void **state)
{
    (void)state;
    struct tg_metric metrics[] = {
        {.name = "temp", .value = 21.3},
        {.name = "hum", .value = 40},
        {.name = "big", .value = 1e300},
        {.name = "neg", .value = -0.5},
        {.name = "tiny", .value = 5.960464477539063e-8},
        {.name = "int53", .value = 9007199254740992.0},
    };
    struct tg_reading rd = {.device = "dev-1", .has_seq = true, .boot = 3, .seq = 42,
                            .ts_ms = INT64_C(1700000000123), .n_metrics = 6, .metrics = metrics};
    round_trip(&rd, "gw-a", INT64_C(1700000000200));
    round_trip(&rd, NULL, 0);
    /* SenML: no boot/seq, units on some metrics, a negative time */
    struct tg_metric senml[] = {
        {.name = "voltage", .unit = "V", .value = 120.1},
        {.name = "flag", .value = 1},
        {.name = "\xc3\xbc", .unit = "%RH", .value = 3},
    };
    struct tg_reading sr = {.device = "urn.dev_1", .ts_ms = -5, .n_metrics = 3,
                            .metrics = senml};
    round_trip(&sr, "g\xc3\xa4teway \"one\"", INT64_MIN);
    /* no metrics at all, integer extremes the JSON side can carry */
    struct tg_reading edge = {.device = "d", .has_seq = true, .boot = INT64_MAX, .seq = 0,
                              .ts_ms = INT64_MIN, .n_metrics = 0};
    round_trip(&edge, "g", INT64_MAX);
}

static void cbor_carries_full_uint64(void **state)
{
    (void)state;
    struct tg_metric m = {.name = "x", .value = 1};
    struct tg_reading rd = {.device = "d", .has_seq = true, .boot = UINT64_MAX,
                            .seq = UINT64_MAX - 1, .ts_ms = 1, .n_metrics = 1, .metrics = &m};
    uint8_t buf[256];
    size_t len;
    assert_int_equal(tg_codec_canonical_cbor(&rd, "g", 2, buf, sizeof buf, &len), TG_OK);
    struct tg_reading got;
    assert_int_equal(tg_canonical_decode(cd, buf, len, 1, &got, NULL), TG_OK);
    assert_true(got.boot == UINT64_MAX && got.seq == UINT64_MAX - 1);
    /* the JSON form of the same record is beyond jansson's integers: refused, not wrapped */
    assert_int_equal(tg_codec_canonical_json(&rd, "g", 2, (char *)buf, sizeof buf, &len), TG_OK);
    assert_int_equal(tg_canonical_decode(cd, buf, len, 0, &got, NULL), TG_ERR_OUT_OF_RANGE);
}

static void keys_in_any_order(void **state)
{
    (void)state;
    const char *json = " {\"u\":{\"t\":\"Cel\"},\"m\":{\"t\":1.5},\"seq\":7,\"gateway\":\"g\","
                       "\"ts\":10,\"boot\":2,\"gw_ts\":11,\"device\":\"d1\"}\n";
    struct tg_reading got;
    struct tg_canonical_extra extra;
    assert_int_equal(tg_canonical_decode(cd, (const uint8_t *)json, strlen(json), -1, &got,
                                         &extra),
                     TG_OK);
    assert_string_equal(got.device, "d1");
    assert_true(got.has_seq && got.boot == 2 && got.seq == 7 && got.ts_ms == 10);
    assert_int_equal(got.n_metrics, 1);
    assert_string_equal(got.metrics[0].unit, "Cel");
    assert_string_equal(extra.gateway, "g");
    assert_true(extra.gw_ts_ms == 11);
    /* CBOR: {"m": {"t": 1}, "u": {"t": "V"}, "ts": 5, "device": "d"}, behind a self-describe
     * tag */
    struct tbuf t = {0};
    tb_hex(&t, "d9d9f7 a4 616d a1 6174 01 6175 a1 6174 6156 627473 05 666465766963 65 6164");
    assert_int_equal(tg_canonical_decode(cd, t.b, t.n, -1, &got, &extra), TG_OK);
    assert_false(got.has_seq);
    assert_string_equal(got.metrics[0].unit, "V");
    assert_null(extra.gateway);
}

static void content_type(void **state)
{
    (void)state;
    assert_int_equal(tg_canonical_content_type("application/cbor", 16), 1);
    assert_int_equal(tg_canonical_content_type("application/json", 16), 0);
    assert_int_equal(tg_canonical_content_type(" Application/JSON; charset=utf-8", 32), 0);
    assert_int_equal(tg_canonical_content_type("application/octet-stream", 24), -1);
    assert_int_equal(tg_canonical_content_type("application/cbor", 10), -1);
    assert_int_equal(tg_canonical_content_type(NULL, 0), -1);
    /* a JSON record named CBOR by its header is read as CBOR, and rejected */
    const char *json = "{\"device\":\"d\",\"ts\":1,\"m\":{}}";
    struct tg_reading got;
    assert_int_equal(tg_canonical_decode(cd, (const uint8_t *)json, strlen(json), 0, &got, NULL),
                     TG_OK);
    assert_int_not_equal(tg_canonical_decode(cd, (const uint8_t *)json, strlen(json), 1, &got,
                                             NULL),
                         TG_OK);
}

struct bad {
    const char *json;
    tg_err err;
    const char *detail; /* a part of the detail text */
};

static void rejections_json(void **state)
{
    (void)state;
    static const struct bad cases[] = {
        {"", TG_ERR_MALFORMED, "empty"},
        {"{\"device\":\"d\",\"ts\":1", TG_ERR_MALFORMED, "JSON"},
        {"[1]", TG_ERR_MALFORMED, ""}, /* sniffed as CBOR: '[' is not a map */
        {"{\"ts\":1,\"m\":{}}", TG_ERR_MISSING_FIELD, "\"device\""},
        {"{\"device\":\"d\",\"m\":{}}", TG_ERR_MISSING_FIELD, "\"ts\""},
        {"{\"device\":\"d\",\"ts\":1}", TG_ERR_MISSING_FIELD, "\"m\""},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{},\"boot\":1}", TG_ERR_MISSING_FIELD, "\"seq\""},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{},\"gateway\":\"g\"}", TG_ERR_MISSING_FIELD,
         "\"gw_ts\""},
        {"{\"device\":\"d d\",\"ts\":1,\"m\":{}}", TG_ERR_BAD_NAME, "device id"},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{},\"x\":1}", TG_ERR_UNKNOWN_FIELD, "\"x\""},
        {"{\"device\":\"d\",\"device\":\"e\",\"ts\":1,\"m\":{}}", TG_ERR_DUPLICATE_FIELD, ""},
        {"{\"device\":\"d\",\"ts\":\"1\",\"m\":{}}", TG_ERR_WRONG_TYPE, "\"ts\""},
        {"{\"device\":\"d\",\"ts\":1.5,\"m\":{}}", TG_ERR_WRONG_TYPE, "\"ts\""},
        {"{\"device\":\"d\",\"ts\":1,\"seq\":-1,\"boot\":0,\"m\":{}}", TG_ERR_WRONG_TYPE,
         "\"seq\""},
        {"{\"device\":\"d\",\"ts\":1,\"m\":[]}", TG_ERR_WRONG_TYPE, "\"m\""},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{\"a\":\"1\"}}", TG_ERR_WRONG_TYPE, "\"a\""},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{\"\":1}}", TG_ERR_BAD_NAME, "metric name"},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{\"a\":1},\"u\":{\"b\":\"V\"}}", TG_ERR_UNKNOWN_FIELD,
         "\"b\""},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{\"a\":1},\"u\":{\"a\":2}}", TG_ERR_WRONG_TYPE,
         "unit"},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{},\"gw_ts\":1,\"gateway\":\"\"}", TG_ERR_BAD_NAME,
         "gateway"},
        {"{\"device\":\"d\",\"ts\":1,\"m\":{}} x", TG_ERR_TRAILING_BYTES, ""},
        {"{\"device\":\"d\",\"ts\":99999999999999999999,\"m\":{}}", TG_ERR_OUT_OF_RANGE, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tg_reading got = {.device = "stale"};
        struct tg_canonical_extra extra = {.gateway = "stale"};
        tg_err err = tg_canonical_decode(cd, (const uint8_t *)cases[i].json,
                                         strlen(cases[i].json), -1, &got, &extra);
        const char *detail = tg_canonical_decoder_error(cd);
        if (err != cases[i].err || !strstr(detail, cases[i].detail) || !detail[0])
            fail_msg("%s: got %s (%s), want %s with \"%s\"", cases[i].json, tg_err_reason(err),
                     detail, tg_err_reason(cases[i].err), cases[i].detail);
        assert_null(got.device);
        assert_null(extra.gateway);
    }
}

static void rejections_cbor(void **state)
{
    (void)state;
    static const struct {
        const char *hex;
        tg_err err;
    } cases[] = {
        {"a1 63 6465", TG_ERR_MALFORMED},                      /* truncated */
        {"81 01", TG_ERR_WRONG_TYPE},                          /* an array */
        {"a1 01 01", TG_ERR_WRONG_TYPE},                       /* an integer key */
        {"bf ff", TG_ERR_UNSUPPORTED},                         /* indefinite map */
        {"a1 6178 01", TG_ERR_UNKNOWN_FIELD},                  /* "x": 1 */
        {"a2 627473 01 627473 01", TG_ERR_DUPLICATE_FIELD},    /* "ts" twice */
        {"a1 627473 fb3ff8000000000000", TG_ERR_WRONG_TYPE},   /* ts: 1.5 */
        {"a1 627473 1bffffffffffffffff", TG_ERR_OUT_OF_RANGE}, /* ts beyond int64 */
        {"a1 6473657171 20", TG_ERR_UNKNOWN_FIELD},            /* "seqq" */
        {"a1 63736571 20", TG_ERR_WRONG_TYPE},                 /* seq: -1 */
        /* m: {"a": NaN}, {"a": 1, "a": 2} */
        {"a1 616d a1 6161 f97e00", TG_ERR_NON_FINITE},
        {"a1 616d a2 6161 01 6161 02", TG_ERR_DUPLICATE_FIELD},
        /* m with 65 entries claimed */
        {"a1 616d b8 41", TG_ERR_TOO_MANY},
        /* {"device": "d", "ts": 1, "m": {}} followed by a byte */
        {"a3 666465766963 65 6164 627473 01 616d a0 00", TG_ERR_TRAILING_BYTES},
        /* device 65 bytes long */
        {"a1 666465766963 65 7841"
         "61616161616161616161616161616161616161616161616161616161616161616161616161616161"
         "61616161616161616161616161616161616161616161616161",
         TG_ERR_BAD_NAME},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tbuf t = {0};
        tb_hex(&t, cases[i].hex);
        struct tg_reading got;
        tg_err err = tg_canonical_decode(cd, t.b, t.n, 1, &got, NULL);
        if (err != cases[i].err)
            fail_msg("%s: got %s (%s), want %s", cases[i].hex, tg_err_reason(err),
                     tg_canonical_decoder_error(cd), tg_err_reason(cases[i].err));
        assert_true(tg_canonical_decoder_error(cd)[0] != '\0');
    }
}

static void size_limit(void **state)
{
    (void)state;
    struct tg_codec_limits lim = {.max_payload_bytes = 16};
    struct tg_canonical_decoder *small = tg_canonical_decoder_new(&lim);
    assert_non_null(small);
    const char *json = "{\"device\":\"d\",\"ts\":1,\"m\":{}}";
    struct tg_reading got;
    assert_int_equal(tg_canonical_decode(small, (const uint8_t *)json, strlen(json), -1, &got,
                                         NULL),
                     TG_ERR_TOO_LARGE);
    tg_canonical_decoder_destroy(small);
    tg_canonical_decoder_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trips),      cmocka_unit_test(cbor_carries_full_uint64),
        cmocka_unit_test(keys_in_any_order), cmocka_unit_test(content_type),
        cmocka_unit_test(rejections_json),  cmocka_unit_test(rejections_cbor),
        cmocka_unit_test(size_limit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
