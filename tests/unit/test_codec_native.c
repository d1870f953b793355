/* Unit tests for the native payload decoder (codec_native.c, codec_decoder.c): valid CBOR and
 * JSON payloads, every rejection with its code and detail text, limits, truncation, and the
 * RFC 8949 Appendix A examples as metric values, names and payloads. */
#include <math.h>

#include "test_codec_util.h"

static void decode_native_cbor(void **state)
{
    struct tg_decoder *dec = *state;
    struct tbuf t = {0};
    tb_head(&t, 5, 4);
    tb_text(&t, "m");
    tb_head(&t, 5, 3);
    tb_text(&t, "temp");
    tb_hex(&t, "fb 40 35 4c cc cc cc cc cd"); /* 21.3 */
    tb_text(&t, "hum");
    tb_hex(&t, "18 28"); /* 40 */
    tb_text(&t, "delta");
    tb_hex(&t, "22"); /* -3 */
    tb_text(&t, "ts");
    tb_head(&t, 0, 1700000000123u);
    tb_text(&t, "boot");
    tb_head(&t, 0, 3);
    tb_text(&t, "seq");
    tb_head(&t, 0, 42);

    struct tg_decoded out;
    expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, TG_OK, NULL, &out);
    assert_int_equal(out.format, TG_FORMAT_NATIVE);
    assert_true(out.cbor);
    assert_int_equal(out.n_readings, 1);
    assert_null(out.sig);
    assert_null(out.signed_bytes);
    const struct tg_reading *rd = &out.readings[0];
    assert_string_equal(rd->device, "dev-1");
    assert_true(rd->has_seq);
    assert_int_equal(rd->seq, 42);
    assert_int_equal(rd->boot, 3);
    assert_int_equal(rd->ts_ms, 1700000000123);
    assert_int_equal(rd->n_metrics, 3);
    /* payload order is kept */
    assert_string_equal(rd->metrics[0].name, "temp");
    assert_true(rd->metrics[0].value == 21.3);
    assert_null(rd->metrics[0].unit);
    assert_string_equal(rd->metrics[1].name, "hum");
    assert_true(rd->metrics[1].value == 40);
    assert_string_equal(rd->metrics[2].name, "delta");
    assert_true(rd->metrics[2].value == -3);

    /* forcing the family gives the same result; a self-describe tag is harmless */
    expect_decode(dec, TG_FORMAT_NATIVE, t.b, t.n, TG_OK, NULL, &out);
    struct tbuf tagged = {0};
    tb_hex(&tagged, "d9 d9 f7");
    tb_bytes(&tagged, t.b, t.n);
    expect_decode(dec, TG_FORMAT_AUTO, tagged.b, tagged.n, TG_OK, NULL, &out);
    assert_int_equal(out.readings[0].seq, 42);
}

static void decode_native_json(void **state)
{
    struct tg_decoder *dec = *state;
    struct tg_decoded out;
    expect_text(dec, TG_FORMAT_AUTO,
                " \r\n\t{\"seq\": 7, \"boot\": 0, \"ts\": 1700000000000,"
                " \"m\": {\"temp\": 21.3, \"hum\": 40, \"neg\": -1.5e-3, \"z\": 0}}\n",
                TG_OK, NULL, &out);
    assert_int_equal(out.format, TG_FORMAT_NATIVE);
    assert_false(out.cbor);
    assert_null(out.sig);
    const struct tg_reading *rd = &out.readings[0];
    assert_true(rd->has_seq);
    assert_int_equal(rd->seq, 7);
    assert_int_equal(rd->boot, 0);
    assert_int_equal(rd->ts_ms, 1700000000000);
    assert_int_equal(rd->n_metrics, 4);
    assert_string_equal(rd->metrics[0].name, "temp");
    assert_true(rd->metrics[0].value == 21.3);
    assert_string_equal(rd->metrics[1].name, "hum");
    assert_true(rd->metrics[1].value == 40);
    assert_true(rd->metrics[2].value == -1.5e-3);
    assert_true(rd->metrics[3].value == 0);

    /* an empty m is a reading with no metrics (a heartbeat) */
    expect_text(dec, TG_FORMAT_AUTO, "{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{}}", TG_OK, NULL, &out);
    assert_int_equal(out.readings[0].n_metrics, 0);
    /* unicode names survive the JSON escapes */
    expect_text(dec, TG_FORMAT_AUTO, "{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\\u00fcr\":1}}",
                TG_OK, NULL, &out);
    assert_string_equal(out.readings[0].metrics[0].name, "t\xc3\xbcr");
}

struct reject {
    const char *payload; /* hex (CBOR) or, when json is set, text */
    bool json;
    tg_err code;
    const char *detail;
};

/* Prefix of a native CBOR map with 4 entries: seq 1, boot 1, ts 5, then "m" (append a map). */
#define P4 "a4 63736571 01 64626f6f74 01 627473 05 616d"

static const struct reject cbor_rejects[] = {
    /* required fields */
    {"a3 63736571 01 64626f6f74 01 627473 05", false, TG_ERR_MISSING_FIELD,
     "missing required field \"m\""},
    {"a3 64626f6f74 01 627473 05 616d a0", false, TG_ERR_MISSING_FIELD,
     "missing required field \"seq\""},
    {"a3 63736571 01 627473 05 616d a0", false, TG_ERR_MISSING_FIELD,
     "missing required field \"boot\""},
    {"a3 63736571 01 64626f6f74 01 616d a0", false, TG_ERR_MISSING_FIELD,
     "missing required field \"ts\""},
    {"a0", false, TG_ERR_MISSING_FIELD, "missing required field"},
    /* types of the top-level fields */
    {"a4 63736571 01 64626f6f74 01 627473 6178 616d a0", false, TG_ERR_WRONG_TYPE,
     "field \"ts\": expected unsigned integer, got text string"},
    {"a4 63736571 20 64626f6f74 01 627473 05 616d a0", false, TG_ERR_WRONG_TYPE,
     "field \"seq\": expected unsigned integer, got negative integer"},
    {"a4 63736571 f93c00 64626f6f74 01 627473 05 616d a0", false, TG_ERR_WRONG_TYPE,
     "field \"seq\": expected unsigned integer, got float"},
    {"a4 63736571 01 64626f6f74 f6 627473 05 616d a0", false, TG_ERR_WRONG_TYPE,
     "field \"boot\": expected unsigned integer, got null"},
    {"a4 63736571 01 64626f6f74 01 627473 05 616d 80", false, TG_ERR_WRONG_TYPE,
     "field \"m\": expected map, got array"},
    {"a4 63736571 01 64626f6f74 01 627473 1b8000000000000000 616d a0", false,
     TG_ERR_OUT_OF_RANGE, "field \"ts\""},
    {"a4 01 01 64626f6f74 01 627473 05 616d a0", false, TG_ERR_WRONG_TYPE,
     "keys must be text strings, got unsigned integer"},
    {"a5 63736571 01 64626f6f74 01 627473 05 616d a0 63666f6f 01", false, TG_ERR_UNKNOWN_FIELD,
     "unknown field \"foo\""},
    {"a5 63736571 01 64626f6f74 01 63736571 02 627473 05 616d a0", false,
     TG_ERR_DUPLICATE_FIELD, "field \"seq\" appears twice"},
    /* metrics */
    {P4 "a2 6174 01 6174 02", false, TG_ERR_DUPLICATE_FIELD, "metric \"t\" appears twice"},
    {P4 "a1 6174 f97e00", false, TG_ERR_NON_FINITE, "metric \"t\": value is NaN"},
    {P4 "a1 6174 f97c00", false, TG_ERR_NON_FINITE, "metric \"t\": value is infinite"},
    {P4 "a1 6174 6178", false, TG_ERR_WRONG_TYPE, "metric \"t\": expected number, got text string"},
    {P4 "a1 6174 f5", false, TG_ERR_WRONG_TYPE, "metric \"t\": expected number, got boolean"},
    {P4 "a1 6174 a0", false, TG_ERR_WRONG_TYPE, "metric \"t\": expected number, got map"},
    {P4 "a1 01 01", false, TG_ERR_WRONG_TYPE, "metric names must be text strings"},
    {P4 "a1 60 01", false, TG_ERR_BAD_NAME, "metric name \"\" is empty"},
    {P4 "a1 626101 01", false, TG_ERR_BAD_NAME, "contains a control character"},
    {P4 "a2 6161 01 636100ff 02", false, TG_ERR_BAD_NAME, "contains a control character"},
    {P4 "a1 62c280 01", false, TG_ERR_BAD_NAME, "contains a control character"},
    {P4 "a1 6261ff 01", false, TG_ERR_BAD_NAME, "is not valid UTF-8"},
    {P4 "a1 62c0af 01", false, TG_ERR_BAD_NAME, "is not valid UTF-8"},   /* overlong */
    {P4 "a1 63eda080 01", false, TG_ERR_BAD_NAME, "is not valid UTF-8"}, /* surrogate */
    /* signature */
    {"a5 63736571 01 64626f6f74 01 627473 05 616d a0 63736967 5801 00", false,
     TG_ERR_BAD_SIGNATURE, "field \"sig\": expected 32 bytes (HMAC-SHA256), got 1"},
    {"a5 63736571 01 64626f6f74 01 627473 05 616d a0 63736967 6161", false, TG_ERR_WRONG_TYPE,
     "field \"sig\": expected byte string, got text string"},
    /* well-formedness and unsupported CBOR */
    {P4 "a0 00", false, TG_ERR_TRAILING_BYTES, "1 bytes follow the payload's map"},
    {P4 "a0 a0a0", false, TG_ERR_TRAILING_BYTES, "2 bytes follow"},
    {P4 "a1 6174 1c", false, TG_ERR_MALFORMED, "reserved initial byte 0x1c"},
    {P4 "a1 6174 ff", false, TG_ERR_MALFORMED, "break byte"},
    {P4 "a1 6174 f0", false, TG_ERR_UNSUPPORTED, "simple value"},
    {P4 "a1 6174 c1 01", false, TG_ERR_UNSUPPORTED, "CBOR tags are not supported"},
    {P4 "a1 7f6174ff 01", false, TG_ERR_UNSUPPORTED, "indefinite-length CBOR text string"},
    {"bf 63736571 01 ff", false, TG_ERR_UNSUPPORTED, "indefinite-length CBOR map"},
    {P4 "a1 78", false, TG_ERR_MALFORMED, "truncated CBOR"},
    {P4 "a1 7a ffffffff", false, TG_ERR_MALFORMED, "truncated CBOR"},
    {P4 "a1 6174", false, TG_ERR_MALFORMED, "truncated CBOR"},
    {"a4 63736571 01 64626f6f74 01 627473 05 616d bb ffffffffffffffff", false, TG_ERR_TOO_MANY,
     "field \"m\": 18446744073709551615 metrics exceed the limit of 64"},
    /* 2^32 pairs: libcbor's size_t count makes that 0 on a 32-bit board, an empty and valid
     * "m"; the codec reads the count from the head, so armhf rejects it as amd64 does */
    {"a4 63736571 01 64626f6f74 01 627473 05 616d bb 0000000100000000", false, TG_ERR_TOO_MANY,
     "field \"m\": 4294967296 metrics exceed the limit of 64"},
    {"bb ffffffffffffffff 63736571 01", false, TG_ERR_MALFORMED, "truncated CBOR"},
    /* detection */
    {"01", false, TG_ERR_UNKNOWN_FORMAT, "first byte 0x01"},
    {"20", false, TG_ERR_UNKNOWN_FORMAT, NULL}, /* CBOR -1 starts with a JSON space */
    {"6161", false, TG_ERR_UNKNOWN_FORMAT, NULL},
    {"d9d9f7 01", false, TG_ERR_UNKNOWN_FORMAT, NULL},
    {"ff", false, TG_ERR_UNKNOWN_FORMAT, NULL},

    /* JSON */
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{}", true, TG_ERR_MALFORMED, "not well-formed JSON"},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{}} x", true, TG_ERR_TRAILING_BYTES, NULL},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{}}{}", true, TG_ERR_TRAILING_BYTES, NULL},
    {"{\"seq\":1,\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{}}", true, TG_ERR_DUPLICATE_FIELD, NULL},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"a\":1,\"a\":2}}", true, TG_ERR_DUPLICATE_FIELD, NULL},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{},\"sig\":\"00\"}", true, TG_ERR_UNSUPPORTED,
     "signed payloads must be CBOR"},
    {"{\"seq\":-1,\"boot\":1,\"ts\":5,\"m\":{}}", true, TG_ERR_WRONG_TYPE,
     "field \"seq\": expected unsigned integer, got negative integer"},
    {"{\"seq\":1.0,\"boot\":1,\"ts\":5,\"m\":{}}", true, TG_ERR_WRONG_TYPE,
     "field \"seq\": expected unsigned integer, got real number"},
    {"{\"seq\":1,\"boot\":1,\"ts\":\"5\",\"m\":{}}", true, TG_ERR_WRONG_TYPE,
     "field \"ts\": expected unsigned integer, got string"},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":[]}", true, TG_ERR_WRONG_TYPE,
     "field \"m\": expected object, got array"},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\":\"1\"}}", true, TG_ERR_WRONG_TYPE,
     "metric \"t\": expected number, got string"},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\":null}}", true, TG_ERR_WRONG_TYPE,
     "metric \"t\": expected number, got null"},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\":true}}", true, TG_ERR_WRONG_TYPE, "got boolean"},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\\u0001\":1}}", true, TG_ERR_BAD_NAME,
     "contains a control character"},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"\":1}}", true, TG_ERR_BAD_NAME, "is empty"},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\":1e400}}", true, TG_ERR_OUT_OF_RANGE, NULL},
    {"{\"seq\":99999999999999999999,\"boot\":1,\"ts\":5,\"m\":{}}", true, TG_ERR_OUT_OF_RANGE,
     NULL},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{},\"x\":1}", true, TG_ERR_UNKNOWN_FIELD,
     "unknown field \"x\""},
    {"{\"seq\":1,\"ts\":5,\"m\":{}}", true, TG_ERR_MISSING_FIELD, "missing required field \"boot\""},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\":NaN}}", true, TG_ERR_MALFORMED, NULL},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\":Infinity}}", true, TG_ERR_MALFORMED, NULL},
    {"{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"t\":\"\xff\"}}", true, TG_ERR_MALFORMED, NULL},
    {"   ", true, TG_ERR_UNKNOWN_FORMAT, NULL},
    {" x", true, TG_ERR_UNKNOWN_FORMAT, NULL},
};

static void native_rejections(void **state)
{
    struct tg_decoder *dec = *state;
    for (size_t i = 0; i < sizeof cbor_rejects / sizeof cbor_rejects[0]; i++) {
        const struct reject *r = &cbor_rejects[i];
        struct tbuf t = {0};
        if (r->json)
            tb_str(&t, r->payload);
        else
            tb_hex(&t, r->payload);
        expect_tbuf(dec, &t, r->code, r->detail);
    }
}

static void payload_level_rejections(void **state)
{
    struct tg_decoder *dec = *state;
    struct tbuf t = {0};
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a0");
    /* device ids come from the topic and are checked too */
    struct tg_decoded out;
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "a/b", t.b, t.n, NOW_MS, &out),
                     TG_ERR_BAD_NAME);
    assert_non_null(strstr(tg_decoder_error(dec), "device id \"a/b\""));
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "", t.b, t.n, NOW_MS, &out),
                     TG_ERR_BAD_NAME);
    char long_id[TG_DEVICE_ID_MAX + 2];
    memset(long_id, 'd', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, long_id, t.b, t.n, NOW_MS, &out),
                     TG_ERR_BAD_NAME);
    long_id[TG_DEVICE_ID_MAX] = '\0';
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, long_id, t.b, t.n, NOW_MS, &out),
                     TG_OK);
    assert_string_equal(out.readings[0].device, long_id);

    /* empty and oversized payloads */
    expect_decode(dec, TG_FORMAT_AUTO, t.b, 0, TG_ERR_MALFORMED, "empty payload", NULL);
    static uint8_t big[TG_CODEC_DEFAULT_MAX_PAYLOAD_BYTES + 1];
    memset(big, ' ', sizeof big);
    big[0] = '{';
    expect_decode(dec, TG_FORMAT_AUTO, big, sizeof big, TG_ERR_TOO_LARGE,
                  "payload of 4097 bytes exceeds the limit of 4096", NULL);

    /* forced families: a SenML pack is not a native payload */
    expect_text(dec, TG_FORMAT_NATIVE, "[{\"n\":\"t\",\"v\":1}]", TG_ERR_WRONG_TYPE,
                "native payload: expected an object, got array", NULL);
    struct tbuf arr = {0};
    tb_hex(&arr, "81 a2 00 6174 02 01");
    expect_decode(dec, TG_FORMAT_NATIVE, arr.b, arr.n, TG_ERR_WRONG_TYPE,
                  "native payload: expected a map, got array", NULL);
    expect_decode(dec, TG_FORMAT_NATIVE, (const uint8_t *)"\x01", 1, TG_ERR_WRONG_TYPE,
                  "expected a map, got unsigned integer", NULL);
}

/* Every proper prefix of a valid payload is an error, never a crash or a success. */
static void truncation_at_every_length(void **state)
{
    struct tg_decoder *dec = *state;
    struct tbuf t = {0};
    tb_head(&t, 5, 5);
    tb_text(&t, "seq");
    tb_head(&t, 0, 123456789);
    tb_text(&t, "boot");
    tb_head(&t, 0, 70000);
    tb_text(&t, "ts");
    tb_head(&t, 0, 1700000000123u);
    tb_text(&t, "m");
    tb_hex(&t, "a4 6474656d70 fb40354ccccccccccd 6368756d fa42200000 6161 f93e00 6162 3903e7");
    tb_text(&t, "sig");
    tb_head(&t, 2, 32);
    for (int i = 0; i < 32; i++)
        tb_hex(&t, "5a");
    struct tg_decoded out;
    expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, TG_OK, NULL, &out);
    assert_int_equal(out.readings[0].n_metrics, 4);
    assert_non_null(out.sig);
    for (size_t len = 0; len < t.n; len++) {
        /* a heap copy of exactly len bytes, so ASan catches any read past the end */
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, t.b, len);
        tg_err err = tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", copy, len, NOW_MS, &out);
        assert_int_not_equal(err, TG_OK);
        assert_true(strlen(tg_decoder_error(dec)) > 0);
        free(copy);
    }

    const char *json = "{\"seq\":1,\"boot\":2,\"ts\":3,\"m\":{\"temp\":21.3,\"hum\":40}}";
    expect_text(dec, TG_FORMAT_AUTO, json, TG_OK, NULL, NULL);
    for (size_t len = 0; len < strlen(json); len++) {
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, json, len);
        assert_int_not_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", copy, len, NOW_MS,
                                               &out),
                             TG_OK);
        free(copy);
    }
}

static void configured_limits(void **state)
{
    (void)state;
    struct tg_codec_limits limits = {.max_payload_bytes = 80, .max_metrics = 2,
                                     .max_name_bytes = 4};
    struct tg_decoder *dec = tg_decoder_new(&limits);
    assert_non_null(dec);
    const struct tg_codec_limits *in_force = tg_decoder_limits(dec);
    assert_int_equal(in_force->max_payload_bytes, 80);
    assert_int_equal(in_force->max_metrics, 2);
    assert_int_equal(in_force->max_readings, TG_CODEC_DEFAULT_MAX_READINGS); /* 0: default */
    assert_int_equal(in_force->max_name_bytes, 4);

    struct tbuf t = {0};
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a2 6161 01 6162 02");
    expect_tbuf(dec, &t, TG_OK, NULL);

    t.n = 0;
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a3 6161 01 6162 02 6163 03");
    expect_tbuf(dec, &t, TG_ERR_TOO_MANY, "field \"m\": 3 metrics exceed the limit of 2");
    expect_text(dec, TG_FORMAT_AUTO, "{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"a\":1,\"b\":2,\"c\":3}}",
                TG_ERR_TOO_MANY, "3 metrics exceed the limit of 2", NULL);

    t.n = 0;
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a1 6461626364 01"); /* "abcd": 4 bytes, the limit */
    expect_tbuf(dec, &t, TG_OK, NULL);
    t.n = 0;
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a1 656162636465 01");
    expect_tbuf(dec, &t, TG_ERR_BAD_NAME, "\"abcde\" is too long (5 bytes, limit 4)");
    /* a multi-byte character counts its bytes */
    t.n = 0;
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a1 65 61 62 63 c3bc 01");
    expect_tbuf(dec, &t, TG_ERR_BAD_NAME, "too long");

    char json[100];
    memset(json, ' ', sizeof json);
    memcpy(json, "{}", 2);
    expect_decode(dec, TG_FORMAT_AUTO, (const uint8_t *)json, 81, TG_ERR_TOO_LARGE, NULL, NULL);
    expect_decode(dec, TG_FORMAT_AUTO, (const uint8_t *)json, 80, TG_ERR_MISSING_FIELD, NULL,
                  NULL);
    tg_decoder_destroy(dec);
    tg_decoder_destroy(NULL);
}

/* A decoder is reused payload after payload; results of one call are replaced by the next. */
static void decoder_reuse(void **state)
{
    struct tg_decoder *dec = *state;
    struct tg_decoded out;
    for (int round = 0; round < 1000; round++) {
        char json[128];
        snprintf(json, sizeof json, "{\"seq\":%d,\"boot\":1,\"ts\":5,\"m\":{\"m%d\":%d}}", round,
                 round, round);
        expect_text(dec, TG_FORMAT_AUTO, json, TG_OK, NULL, &out);
        assert_int_equal(out.readings[0].seq, round);
        char name[16];
        snprintf(name, sizeof name, "m%d", round);
        assert_string_equal(out.readings[0].metrics[0].name, name);
        expect_text(dec, TG_FORMAT_AUTO, "{}", TG_ERR_MISSING_FIELD, NULL, NULL);
    }
}

/* --- RFC 8949 Appendix A ------------------------------------------------------------------ */

struct number_vector {
    const char *hex;
    double value;
    tg_err code; /* TG_OK, TG_ERR_NON_FINITE, TG_ERR_UNSUPPORTED */
};

static const struct number_vector rfc8949_numbers[] = {
    {"00", 0, TG_OK},
    {"01", 1, TG_OK},
    {"0a", 10, TG_OK},
    {"17", 23, TG_OK},
    {"1818", 24, TG_OK},
    {"1819", 25, TG_OK},
    {"1864", 100, TG_OK},
    {"1903e8", 1000, TG_OK},
    {"1a000f4240", 1000000, TG_OK},
    {"1b000000e8d4a51000", 1000000000000.0, TG_OK},
    {"1bffffffffffffffff", 18446744073709551615.0, TG_OK},
    {"c249010000000000000000", 0, TG_ERR_UNSUPPORTED}, /* bignum 18446744073709551616 */
    {"3bffffffffffffffff", -18446744073709551616.0, TG_OK},
    {"c349010000000000000000", 0, TG_ERR_UNSUPPORTED}, /* bignum -18446744073709551617 */
    {"20", -1, TG_OK},
    {"29", -10, TG_OK},
    {"3863", -100, TG_OK},
    {"3903e7", -1000, TG_OK},
    {"f90000", 0.0, TG_OK},
    {"f98000", -0.0, TG_OK},
    {"f93c00", 1.0, TG_OK},
    {"fb3ff199999999999a", 1.1, TG_OK},
    {"f93e00", 1.5, TG_OK},
    {"f97bff", 65504.0, TG_OK},
    {"fa47c35000", 100000.0, TG_OK},
    {"fa7f7fffff", 3.4028234663852886e+38, TG_OK},
    {"fb7e37e43c8800759c", 1.0e+300, TG_OK},
    {"f90001", 5.960464477539063e-8, TG_OK},
    {"f90400", 0.00006103515625, TG_OK},
    {"f9c400", -4.0, TG_OK},
    {"fbc010666666666666", -4.1, TG_OK},
    {"f97c00", 0, TG_ERR_NON_FINITE},
    {"f97e00", 0, TG_ERR_NON_FINITE},
    {"f9fc00", 0, TG_ERR_NON_FINITE},
    {"fa7f800000", 0, TG_ERR_NON_FINITE},
    {"fa7fc00000", 0, TG_ERR_NON_FINITE},
    {"faff800000", 0, TG_ERR_NON_FINITE},
    {"fb7ff0000000000000", 0, TG_ERR_NON_FINITE},
    {"fb7ff8000000000000", 0, TG_ERR_NON_FINITE},
    {"fbfff0000000000000", 0, TG_ERR_NON_FINITE},
    {"c074323031332d30332d32315432303a30343a30305a", 0, TG_ERR_UNSUPPORTED}, /* tag 0 */
    {"c11a514b67b0", 0, TG_ERR_UNSUPPORTED},                                 /* tag 1 */
    {"c1fb41d452d9ec200000", 0, TG_ERR_UNSUPPORTED},
    {"d74401020304", 0, TG_ERR_UNSUPPORTED}, /* tag 23 */
    {"d818456449455446", 0, TG_ERR_UNSUPPORTED},
    {"d82076687474703a2f2f7777772e6578616d706c652e636f6d", 0, TG_ERR_UNSUPPORTED},
    {"f0", 0, TG_ERR_UNSUPPORTED},   /* simple(16) */
    {"f8ff", 0, TG_ERR_UNSUPPORTED}, /* simple(255) */
    {"f4", 0, TG_ERR_WRONG_TYPE},    /* false */
    {"f5", 0, TG_ERR_WRONG_TYPE},    /* true */
    {"f6", 0, TG_ERR_WRONG_TYPE},    /* null */
    {"f7", 0, TG_ERR_WRONG_TYPE},    /* undefined */
    {"40", 0, TG_ERR_WRONG_TYPE},    /* h'' */
    {"4401020304", 0, TG_ERR_WRONG_TYPE},
    {"6449455446", 0, TG_ERR_WRONG_TYPE}, /* "IETF" */
    {"83010203", 0, TG_ERR_WRONG_TYPE},   /* [1, 2, 3] */
    {"a201020304", 0, TG_ERR_WRONG_TYPE}, /* {1: 2, 3: 4} */
    {"5f42010243030405ff", 0, TG_ERR_UNSUPPORTED}, /* (_ h'0102', h'030405') */
    {"7f657374726561646d696e67ff", 0, TG_ERR_UNSUPPORTED}, /* (_ "strea", "ming") */
    {"9fff", 0, TG_ERR_UNSUPPORTED},                       /* [_ ] */
    {"9f018202039f0405ffff", 0, TG_ERR_UNSUPPORTED},
    {"bf61610161629f0203ffff", 0, TG_ERR_UNSUPPORTED},
};

static void rfc8949_numbers_as_metric_values(void **state)
{
    struct tg_decoder *dec = *state;
    for (size_t i = 0; i < sizeof rfc8949_numbers / sizeof rfc8949_numbers[0]; i++) {
        const struct number_vector *v = &rfc8949_numbers[i];
        struct tbuf t = {0};
        tb_native_prefix(&t, 1);
        tb_hex(&t, "a1 6178"); /* {"x": value} */
        tb_hex(&t, v->hex);
        struct tg_decoded out;
        expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, v->code, NULL, &out);
        if (v->code != TG_OK)
            continue;
        double got = out.readings[0].metrics[0].value;
        assert_true(got == v->value);
        assert_int_equal(signbit(got), signbit(v->value)); /* -0.0 stays negative zero */

        /* the same value as a JSON number, where the appendix value has a JSON form */
        char json[160];
        snprintf(json, sizeof json, "{\"seq\":1,\"boot\":1,\"ts\":5,\"m\":{\"x\":%.17g}}", v->value);
        if (fabs(v->value) < 1e18) {
            expect_text(dec, TG_FORMAT_AUTO, json, TG_OK, NULL, &out);
            assert_true(out.readings[0].metrics[0].value == v->value);
        }
    }
}

static void rfc8949_unsigned_as_seq(void **state)
{
    struct tg_decoder *dec = *state;
    static const struct {
        const char *hex;
        uint64_t value;
    } uints[] = {{"00", 0},
                 {"01", 1},
                 {"0a", 10},
                 {"17", 23},
                 {"1818", 24},
                 {"1819", 25},
                 {"1864", 100},
                 {"1903e8", 1000},
                 {"1a000f4240", 1000000},
                 {"1b000000e8d4a51000", 1000000000000u},
                 {"1bffffffffffffffff", UINT64_MAX}};
    for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++) {
        struct tbuf t = {0};
        tb_hex(&t, "a4 63736571");
        tb_hex(&t, uints[i].hex);
        tb_hex(&t, "64626f6f74");
        tb_hex(&t, uints[i].hex);
        tb_hex(&t, "627473 05 616d a0");
        struct tg_decoded out;
        expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, TG_OK, NULL, &out);
        assert_true(out.readings[0].seq == uints[i].value);
        assert_true(out.readings[0].boot == uints[i].value);
    }
    /* negative and wider-than-64-bit integers are not sequence numbers */
    static const char *const not_uint[] = {"20", "29", "3863", "3903e7", "3bffffffffffffffff",
                                           "c249010000000000000000"};
    for (size_t i = 0; i < sizeof not_uint / sizeof not_uint[0]; i++) {
        struct tbuf t = {0};
        tb_hex(&t, "a4 63736571");
        tb_hex(&t, not_uint[i]);
        tb_hex(&t, "64626f6f74 01 627473 05 616d a0");
        tg_err err = tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", t.b, t.n, NOW_MS,
                                       &(struct tg_decoded){0});
        assert_true(err == TG_ERR_WRONG_TYPE || err == TG_ERR_UNSUPPORTED);
    }
}

static void rfc8949_strings_as_metric_names(void **state)
{
    struct tg_decoder *dec = *state;
    static const struct {
        const char *hex;
        const char *name;
    } names[] = {
        {"6161", "a"},
        {"6449455446", "IETF"},
        {"62225c", "\"\\"},
        {"62c3bc", "\xc3\xbc"},              /* U+00FC */
        {"63e6b0b4", "\xe6\xb0\xb4"},        /* U+6C34 */
        {"64f0908591", "\xf0\x90\x85\x91"}, /* U+10151 (surrogate pair D800 DD51 in JSON) */
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct tbuf t = {0};
        tb_native_prefix(&t, 1);
        tb_hex(&t, "a1");
        tb_hex(&t, names[i].hex);
        tb_hex(&t, "01");
        struct tg_decoded out;
        expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, TG_OK, NULL, &out);
        assert_string_equal(out.readings[0].metrics[0].name, names[i].name);
    }
    struct tbuf t = {0};
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a1 60 01"); /* "" */
    expect_tbuf(dec, &t, TG_ERR_BAD_NAME, "is empty");
    t.n = 0;
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a1 40 01"); /* h'' */
    expect_tbuf(dec, &t, TG_ERR_WRONG_TYPE, "got byte string");
    t.n = 0;
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a1 7f657374726561646d696e67ff 01"); /* (_ "strea", "ming") */
    expect_tbuf(dec, &t, TG_ERR_UNSUPPORTED, "indefinite-length");
}

static void rfc8949_structures_as_payloads(void **state)
{
    struct tg_decoder *dec = *state;
    static const struct reject cases[] = {
        {"a0", false, TG_ERR_MISSING_FIELD, NULL},                 /* {} */
        {"a201020304", false, TG_ERR_WRONG_TYPE, "keys must be text strings"}, /* {1:2,3:4} */
        {"a26161016162820203", false, TG_ERR_UNKNOWN_FIELD, "unknown field \"a\""},
        {"a56161614161626142616361436164614461656145", false, TG_ERR_UNKNOWN_FIELD, NULL},
        {"bf61610161629f0203ffff", false, TG_ERR_UNSUPPORTED, "indefinite-length CBOR map"},
        {"bf6346756ef563416d7421ff", false, TG_ERR_UNSUPPORTED, "indefinite-length"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tbuf t = {0};
        tb_hex(&t, cases[i].payload);
        expect_tbuf(dec, &t, cases[i].code, cases[i].detail);
    }
    /* {"a": 1, "b": [2, 3]} as the metrics map: "b" is not a number */
    struct tbuf t = {0};
    tb_native_prefix(&t, 1);
    tb_hex(&t, "a26161016162820203");
    expect_tbuf(dec, &t, TG_ERR_WRONG_TYPE, "metric \"b\": expected number, got array");
    /* [_ ] and {_ } as the metrics map */
    t.n = 0;
    tb_native_prefix(&t, 1);
    tb_hex(&t, "bfff");
    expect_tbuf(dec, &t, TG_ERR_UNSUPPORTED, "indefinite-length CBOR map");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decode_native_cbor),
        cmocka_unit_test(decode_native_json),
        cmocka_unit_test(native_rejections),
        cmocka_unit_test(payload_level_rejections),
        cmocka_unit_test(truncation_at_every_length),
        cmocka_unit_test(configured_limits),
        cmocka_unit_test(decoder_reuse),
        cmocka_unit_test(rfc8949_numbers_as_metric_values),
        cmocka_unit_test(rfc8949_unsigned_as_seq),
        cmocka_unit_test(rfc8949_strings_as_metric_names),
        cmocka_unit_test(rfc8949_structures_as_payloads),
    };
    return cmocka_run_group_tests(tests, setup_decoder, teardown_decoder);
}
