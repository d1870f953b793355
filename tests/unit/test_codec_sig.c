/* Unit tests for native payload signing (codec_native.h): the encoder and the decoder agree
 * on the signed bytes M', an HMAC-SHA256 computed with mbedtls over them verifies, tampering
 * changes them, and a fixed vector made outside this code base decodes as recorded. */
#include <math.h>
#include <mbedtls/md.h>

#include "codec_native.h"
#include "test_codec_util.h"

static const uint8_t test_key[32] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                     0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
                                     0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                     0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};

static void hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                        uint8_t out[TG_SIG_LEN])
{
    const mbedtls_md_info_t *sha256 = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    assert_non_null(sha256);
    assert_int_equal(mbedtls_md_hmac(sha256, key, key_len, msg, len, out), 0);
}

/* The firmware's signing callback: HMAC-SHA256 with the device key. */
static tg_err sign_with_key(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[TG_SIG_LEN])
{
    const uint8_t *key = ctx;
    hmac_sha256(key, sizeof test_key, msg, len, sig);
    return TG_OK;
}

static tg_err sign_fails(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[TG_SIG_LEN])
{
    (void)ctx, (void)msg, (void)len, (void)sig;
    return TG_ERR_UNAVAILABLE;
}

static const struct tg_metric vector_metrics[] = {
    {.name = "temp", .value = 21.5},
    {.name = "hum", .value = 40},
};

static const struct tg_reading vector_reading = {
    .device = "dev-1",
    .has_seq = true,
    .boot = 3,
    .seq = 42,
    .ts_ms = INT64_C(1700000000123),
    .n_metrics = 2,
    .metrics = vector_metrics,
};

static void hmac_verifies(const struct tg_decoded *out, const uint8_t *key, size_t key_len)
{
    uint8_t mac[TG_SIG_LEN];
    hmac_sha256(key, key_len, out->signed_bytes, out->signed_len, mac);
    assert_memory_equal(mac, out->sig, TG_SIG_LEN);
}

static void encode_sign_decode(void **state)
{
    struct tg_decoder *dec = *state;
    struct tg_metric metrics[] = {
        {.name = "temp", .value = 21.3},
        {.name = "hum", .value = 40},
        {.name = "pressure", .value = 1013.25},
        {.name = "tiny", .value = -1e-300},
    };
    struct tg_reading rd = {.device = "x", .has_seq = true, .boot = 7, .seq = 123456,
                            .ts_ms = INT64_C(1700000000999), .n_metrics = 4, .metrics = metrics};
    uint8_t unsigned_payload[256], signed_payload[256];
    size_t unsigned_len, signed_len;
    assert_int_equal(tg_codec_native_encode(&rd, unsigned_payload, sizeof unsigned_payload,
                                            &unsigned_len),
                     TG_OK);
    assert_int_equal(tg_codec_native_encode_signed(&rd, sign_with_key, (void *)test_key,
                                                   signed_payload, sizeof signed_payload,
                                                   &signed_len),
                     TG_OK);
    assert_int_equal(signed_len, unsigned_len + 4 + 2 + TG_SIG_LEN);

    struct tg_decoded out;
    expect_decode(dec, TG_FORMAT_AUTO, signed_payload, signed_len, TG_OK, NULL, &out);
    assert_non_null(out.sig);
    /* M' is exactly what the firmware signed */
    assert_int_equal(out.signed_len, unsigned_len);
    assert_memory_equal(out.signed_bytes, unsigned_payload, unsigned_len);
    hmac_verifies(&out, test_key, sizeof test_key);
    /* and the reading round-trips */
    const struct tg_reading *got = &out.readings[0];
    assert_int_equal(got->seq, 123456);
    assert_int_equal(got->boot, 7);
    assert_int_equal(got->ts_ms, 1700000000999);
    assert_int_equal(got->n_metrics, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(got->metrics[i].name, metrics[i].name);
        assert_true(got->metrics[i].value == metrics[i].value);
    }
    /* the unsigned payload decodes too, with no signature */
    expect_decode(dec, TG_FORMAT_AUTO, unsigned_payload, unsigned_len, TG_OK, NULL, &out);
    assert_null(out.sig);
    assert_null(out.signed_bytes);
    assert_int_equal(out.signed_len, 0);
}

static void tampering_changes_signed_bytes(void **state)
{
    struct tg_decoder *dec = *state;
    uint8_t payload[256];
    size_t len;
    assert_int_equal(tg_codec_native_encode_signed(&vector_reading, sign_with_key,
                                                   (void *)test_key, payload, sizeof payload,
                                                   &len),
                     TG_OK);
    struct tg_decoded out;
    expect_decode(dec, TG_FORMAT_AUTO, payload, len, TG_OK, NULL, &out);
    uint8_t original[256];
    size_t original_len = out.signed_len;
    memcpy(original, out.signed_bytes, original_len);

    /* flip the low bit of every byte of the value of "hum" (40 = 18 28) and of seq */
    size_t tampered = 0;
    for (size_t i = 0; i + 1 < len - TG_SIG_LEN; i++) {
        uint8_t copy[256];
        memcpy(copy, payload, len);
        copy[i] ^= 0x01;
        if (tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", copy, len, NOW_MS, &out) != TG_OK)
            continue; /* the flip broke the structure: rejected anyway */
        assert_non_null(out.sig);
        assert_false(out.signed_len == original_len &&
                     memcmp(out.signed_bytes, original, original_len) == 0);
        uint8_t mac[TG_SIG_LEN];
        hmac_sha256(test_key, sizeof test_key, out.signed_bytes, out.signed_len, mac);
        assert_memory_not_equal(mac, out.sig, TG_SIG_LEN);
        tampered++;
    }
    assert_true(tampered > 10);

    /* a wrong key does not verify */
    expect_decode(dec, TG_FORMAT_AUTO, payload, len, TG_OK, NULL, &out);
    uint8_t other_key[32] = {1}, mac[TG_SIG_LEN];
    hmac_sha256(other_key, sizeof other_key, out.signed_bytes, out.signed_len, mac);
    assert_memory_not_equal(mac, out.sig, TG_SIG_LEN);
}

/* "sig" need not be last: M' drops the pair wherever it is and counts one entry fewer. */
static void sig_anywhere_in_the_map(void **state)
{
    struct tg_decoder *dec = *state;
    uint8_t sig[TG_SIG_LEN];
    memset(sig, 0xab, sizeof sig);
    struct tbuf t = {0};
    tb_head(&t, 5, 5);
    tb_text(&t, "seq");
    tb_head(&t, 0, 9);
    tb_text(&t, "sig");
    tb_head(&t, 2, TG_SIG_LEN);
    tb_bytes(&t, sig, sizeof sig);
    tb_text(&t, "boot");
    tb_head(&t, 0, 1);
    tb_text(&t, "ts");
    tb_head(&t, 0, 5);
    tb_text(&t, "m");
    tb_hex(&t, "a1 6161 01");

    struct tbuf want = {0};
    tb_head(&want, 5, 4);
    tb_text(&want, "seq");
    tb_head(&want, 0, 9);
    tb_text(&want, "boot");
    tb_head(&want, 0, 1);
    tb_text(&want, "ts");
    tb_head(&want, 0, 5);
    tb_text(&want, "m");
    tb_hex(&want, "a1 6161 01");

    struct tg_decoded out;
    expect_decode(dec, TG_FORMAT_AUTO, t.b, t.n, TG_OK, NULL, &out);
    assert_memory_equal(out.sig, sig, TG_SIG_LEN);
    assert_int_equal(out.signed_len, want.n);
    assert_memory_equal(out.signed_bytes, want.b, want.n);

    /* a leading self-describe tag is not covered */
    struct tbuf tagged = {0};
    tb_hex(&tagged, "d9d9f7");
    tb_bytes(&tagged, t.b, t.n);
    expect_decode(dec, TG_FORMAT_AUTO, tagged.b, tagged.n, TG_OK, NULL, &out);
    assert_int_equal(out.signed_len, want.n);
    assert_memory_equal(out.signed_bytes, want.b, want.n);
}

static size_t read_hex_line(const char *text, const char *key, uint8_t *out, size_t cap)
{
    char pattern[32];
    snprintf(pattern, sizeof pattern, "\n%s ", key);
    const char *p = strstr(text, pattern);
    assert_non_null(p);
    p += strlen(pattern);
    size_t n = 0;
    while (tg_hex_digit(p[0]) >= 0 && tg_hex_digit(p[1]) >= 0) {
        assert_true(n < cap);
        out[n++] = (uint8_t)(tg_hex_digit(p[0]) << 4 | tg_hex_digit(p[1]));
        p += 2;
    }
    return n;
}

/* tests/unit/data/codec/sig_vector.txt was made with Python's hmac module and a hand CBOR
 * encoder, so it checks the definition, not just agreement between our encoder and decoder. */
static void fixed_vector(void **state)
{
    struct tg_decoder *dec = *state;
    size_t file_len;
    uint8_t *file = read_test_file("sig_vector.txt", &file_len);
    char *text = calloc(1, file_len + 2);
    text[0] = '\n';
    memcpy(text + 1, file, file_len);
    uint8_t key[64], unsigned_payload[256], sig[64], payload[256];
    size_t key_len = read_hex_line(text, "key", key, sizeof key);
    size_t unsigned_len = read_hex_line(text, "unsigned", unsigned_payload, sizeof unsigned_payload);
    size_t sig_len = read_hex_line(text, "sig", sig, sizeof sig);
    size_t payload_len = read_hex_line(text, "payload", payload, sizeof payload);
    assert_int_equal(key_len, 32);
    assert_memory_equal(key, test_key, 32);
    assert_int_equal(sig_len, TG_SIG_LEN);

    struct tg_decoded out;
    expect_decode(dec, TG_FORMAT_AUTO, payload, payload_len, TG_OK, NULL, &out);
    assert_memory_equal(out.sig, sig, TG_SIG_LEN);
    assert_int_equal(out.signed_len, unsigned_len);
    assert_memory_equal(out.signed_bytes, unsigned_payload, unsigned_len);
    hmac_verifies(&out, key, key_len);
    const struct tg_reading *rd = &out.readings[0];
    assert_int_equal(rd->seq, 42);
    assert_int_equal(rd->boot, 3);
    assert_int_equal(rd->ts_ms, 1700000000123);
    assert_true(find_metric(rd, "temp")->value == 21.5);
    assert_true(find_metric(rd, "hum")->value == 40);

    /* our encoder produces the vector byte for byte */
    uint8_t buf[256];
    size_t len;
    assert_int_equal(tg_codec_native_encode(&vector_reading, buf, sizeof buf, &len), TG_OK);
    assert_int_equal(len, unsigned_len);
    assert_memory_equal(buf, unsigned_payload, len);
    assert_int_equal(tg_codec_native_encode_signed(&vector_reading, sign_with_key, key, buf,
                                                   sizeof buf, &len),
                     TG_OK);
    assert_int_equal(len, payload_len);
    assert_memory_equal(buf, payload, len);

    /* the same payload checked in as a file for tidegate-decode's test */
    size_t cbor_len;
    uint8_t *cbor = read_test_file("native_signed.cbor", &cbor_len);
    assert_int_equal(cbor_len, payload_len);
    assert_memory_equal(cbor, payload, payload_len);
    free(cbor);
    free(text);
    free(file);
}

static void sign_api_edges(void **state)
{
    (void)state;
    uint8_t sig[TG_SIG_LEN];
    memset(sig, 0x11, sizeof sig);

    /* a map of 23 entries grows a header byte when it becomes 24 */
    uint8_t buf[128] = {0xb7};
    for (size_t i = 0; i < 46; i++)
        buf[1 + i] = (uint8_t)(i % 24); /* 23 pairs of small integers */
    size_t len = 47, signed_len;
    assert_int_equal(tg_codec_native_sign(buf, len, 47 + 37, sig, &signed_len), TG_ERR_FULL);
    assert_int_equal(signed_len, 48 + 6 + TG_SIG_LEN);
    assert_int_equal(tg_codec_native_sign(buf, len, sizeof buf, sig, &signed_len), TG_OK);
    assert_int_equal(signed_len, 48 + 6 + TG_SIG_LEN);
    assert_int_equal(buf[0], 0xb8);
    assert_int_equal(buf[1], 24);
    assert_int_equal(buf[2], 0);
    assert_int_equal(buf[47], 21);
    assert_memory_equal(buf + 48, "\x63sig\x58\x20", 6);
    assert_memory_equal(buf + 54, sig, TG_SIG_LEN);

    /* only a definite-length map can be signed */
    uint8_t array[] = {0x80};
    assert_int_equal(tg_codec_native_sign(array, 1, 64, sig, &signed_len), TG_ERR_USAGE);
    uint8_t indefinite[] = {0xbf, 0xff};
    assert_int_equal(tg_codec_native_sign(indefinite, 2, 64, sig, &signed_len), TG_ERR_USAGE);
    uint8_t cut[] = {0xb9, 0x01};
    assert_int_equal(tg_codec_native_sign(cut, 2, 64, sig, &signed_len), TG_ERR_USAGE);
    assert_int_equal(tg_codec_native_sign(cut, 0, 64, sig, &signed_len), TG_ERR_USAGE);

    /* the encoder reports the size it needs, and the callback's failure */
    uint8_t small[8];
    assert_int_equal(tg_codec_native_encode(&vector_reading, small, sizeof small, &len),
                     TG_ERR_FULL);
    assert_int_equal(len, 44);
    assert_int_equal(tg_codec_native_encode_signed(&vector_reading, sign_with_key,
                                                   (void *)test_key, small, sizeof small, &len),
                     TG_ERR_FULL);
    assert_true(len >= 82);
    uint8_t big[256];
    assert_int_equal(tg_codec_native_encode_signed(&vector_reading, sign_fails, NULL, big,
                                                   sizeof big, &len),
                     TG_ERR_UNAVAILABLE);
    /* exactly the unsigned size fits the unsigned payload but not the signature */
    assert_int_equal(tg_codec_native_encode_signed(&vector_reading, sign_with_key,
                                                   (void *)test_key, big, 44, &len),
                     TG_ERR_FULL);
    assert_int_equal(len, 82);

    /* what the encoder refuses */
    struct tg_reading rd = vector_reading;
    rd.has_seq = false;
    assert_int_equal(tg_codec_native_encode(&rd, big, sizeof big, &len), TG_ERR_USAGE);
    rd = vector_reading;
    rd.ts_ms = -1;
    assert_int_equal(tg_codec_native_encode(&rd, big, sizeof big, &len), TG_ERR_OUT_OF_RANGE);
    struct tg_metric bad[] = {{.name = "", .value = 1}};
    rd = vector_reading;
    rd.metrics = bad;
    rd.n_metrics = 1;
    assert_int_equal(tg_codec_native_encode(&rd, big, sizeof big, &len), TG_ERR_BAD_NAME);
    bad[0].name = "x";
    bad[0].value = NAN;
    assert_int_equal(tg_codec_native_encode(&rd, big, sizeof big, &len), TG_ERR_NON_FINITE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_sign_decode),
        cmocka_unit_test(tampering_changes_signed_bytes),
        cmocka_unit_test(sig_anywhere_in_the_map),
        cmocka_unit_test(fixed_vector),
        cmocka_unit_test(sign_api_edges),
    };
    return cmocka_run_group_tests(tests, setup_decoder, teardown_decoder);
}
