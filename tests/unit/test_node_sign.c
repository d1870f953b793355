/* Unit tests for payload signing in the firmware core: sign.c against RFC 4231's
 * HMAC-SHA256 test vectors and against mbedtls's own HMAC (mbedtls_md_hmac) for every key
 * length around the block size; and the node's signed payloads, decoded with
 * tidegate_common's decoder and verified independently with mbedtls, including one fixed
 * vector made outside this code base (tests/unit/data/codec/sig_vector.txt: Python's hmac
 * and a hand CBOR encoder), which the node must reproduce byte for byte. */
#include <mbedtls/md.h>

#include "codec.h"
#include "sign.h"
#include "test_node_fake.h"
#include "util.h"

static size_t from_hex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        assert_true(n < cap);
        out[n++] = (uint8_t)(tg_hex_digit(hex[0]) << 4 | tg_hex_digit(hex[1]));
    }
    return n;
}

static void independent_hmac(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                             uint8_t out[TG_SIG_LEN])
{
    const mbedtls_md_info_t *sha256 = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    assert_non_null(sha256);
    assert_int_equal(mbedtls_md_hmac(sha256, key, key_len, msg, len, out), 0);
}

static void rfc4231_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        uint8_t key_byte; /* 0: the key is key_text */
        size_t key_len;
        const char *key_text;
        const char *data;
        uint8_t data_byte; /* nonzero: data is data_len copies of it */
        size_t data_len;
        const char *hmac;
    } cases[] = {
        {"4.2 test case 1", 0x0b, 20, NULL, "Hi There", 0, 0,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"4.3 test case 2", 0, 4, "Jefe", "what do ya want for nothing?", 0, 0,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {"4.4 test case 3", 0xaa, 20, NULL, NULL, 0xdd, 50,
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {"4.7 test case 6", 0xaa, 131, NULL,
         "Test Using Larger Than Block-Size Key - Hash Key First", 0, 0,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t key[131], data[64], expected[TG_SIG_LEN], mac[TG_SIG_LEN];
        if (cases[i].key_text)
            memcpy(key, cases[i].key_text, cases[i].key_len);
        else
            memset(key, cases[i].key_byte, cases[i].key_len);
        size_t data_len = cases[i].data ? strlen(cases[i].data) : cases[i].data_len;
        if (cases[i].data)
            memcpy(data, cases[i].data, data_len);
        else
            memset(data, cases[i].data_byte, data_len);
        assert_int_equal(from_hex(cases[i].hmac, expected, sizeof expected), TG_SIG_LEN);
        struct tg_sign sg;
        assert_int_equal(tg_sign_init(&sg, key, cases[i].key_len), 0);
        assert_int_equal(tg_sign_hmac(&sg, data, data_len, mac), TG_OK);
        if (memcmp(mac, expected, TG_SIG_LEN) != 0)
            fail_msg("RFC 4231 %s: wrong HMAC", cases[i].name);
        /* the precomputed state is reusable: the same message signs the same again */
        assert_int_equal(tg_sign_hmac(&sg, data, data_len, mac), TG_OK);
        assert_memory_equal(mac, expected, TG_SIG_LEN);
        tg_sign_clear(&sg);
    }
}

static void agrees_with_mbedtls_hmac(void **state)
{
    (void)state;
    uint8_t key[200], msg[300];
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 13 + 5);
    for (size_t key_len = 0; key_len <= 130; key_len++) {
        struct tg_sign sg;
        assert_int_equal(tg_sign_init(&sg, key, key_len), 0);
        for (size_t len = 0; len <= sizeof msg; len += 1 + len / 3) {
            uint8_t ours[TG_SIG_LEN], theirs[TG_SIG_LEN];
            assert_int_equal(tg_sign_hmac(&sg, msg, len, ours), TG_OK);
            independent_hmac(key, key_len, msg, len, theirs);
            if (memcmp(ours, theirs, TG_SIG_LEN) != 0)
                fail_msg("key of %zu bytes, message of %zu: HMAC differs", key_len, len);
        }
    }
}

/* From tests/unit/data/codec/sig_vector.txt: key, and the signed payload of the reading
 * seq 42, boot 3, ts 1700000000123, m {temp: 21.5, hum: 40}. */
static const char vector_key[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
static const char vector_payload[] =
    "a563736571182a64626f6f74036274731b0000018bcfe5687b616da26474656d70fa41ac00006368756d1828"
    "637369675820e1b07f5bf3769d6d123c51a537ba7633201b49e0cb04f9403337544ec22664ad";

static void node_reproduces_the_fixed_vector(void **state)
{
    (void)state;
    uint8_t key[32], expected[256];
    assert_int_equal(from_hex(vector_key, key, sizeof key), 32);
    size_t expected_len = from_hex(vector_payload, expected, sizeof expected);

    struct fake fk;
    fake_init(&fk);
    fk.kv_has_boot = true;
    fk.kv_boot = 2; /* this start is boot 3 */
    static union fake_storage st;
    const struct tg_node_config cfg = {.device_id = "dev-1",
                                       .outbox_slots = 64,
                                       .hmac_key = key,
                                       .hmac_key_len = sizeof key};
    struct tg_node *node = fake_node(&st, &fk, &cfg);
    memset(key, 0, sizeof key); /* the node keeps what it needs */
    struct fake_sensor fs;
    fake_sensor_setup(&fs);
    fs.n = 2;
    fs.names[0] = "temp";
    fs.values[0] = 21.5;
    fs.names[1] = "hum";
    fs.values[1] = 40;
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fs, 0x76, 10), 0);
    assert_int_equal(tg_node_start(node), 0);
    tg_node_transport_up(node);
    for (int i = 0; i < 43; i++) { /* seq 0 .. 42 */
        if (i == 42)
            fk.wall_ms = INT64_C(1700000000123);
        tg_node_poll(node);
        fake_advance(&fk, 10);
    }
    assert_int_equal(fk.n_pubs, 43);
    assert_int_equal(fk.pubs[42].len, expected_len);
    assert_memory_equal(fk.pubs[42].payload, expected, expected_len);

    /* every payload the node sent decodes, and its signature verifies with mbedtls */
    assert_int_equal(from_hex(vector_key, key, sizeof key), 32);
    struct tg_decoder *dec = tg_decoder_new(NULL);
    assert_non_null(dec);
    for (size_t i = 0; i < fk.n_pubs; i++) {
        struct tg_decoded out;
        assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_NATIVE, "dev-1", fk.pubs[i].payload,
                                           fk.pubs[i].len, fk.wall_ms, &out),
                         TG_OK);
        assert_int_equal(out.readings[0].seq, i);
        assert_int_equal(out.readings[0].boot, 3);
        assert_non_null(out.sig);
        uint8_t mac[TG_SIG_LEN];
        independent_hmac(key, sizeof key, out.signed_bytes, out.signed_len, mac);
        assert_memory_equal(mac, out.sig, TG_SIG_LEN);
        /* and with any other key it does not */
        key[0] ^= 1;
        independent_hmac(key, sizeof key, out.signed_bytes, out.signed_len, mac);
        assert_memory_not_equal(mac, out.sig, TG_SIG_LEN);
        key[0] ^= 1;
    }
    tg_decoder_destroy(dec);
}

static void no_key_no_signature(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    uint8_t key[1] = {7};
    /* a key pointer with length 0 means unsigned, as NULL does */
    struct tg_node *node = fake_node(&st, &fk, &(struct tg_node_config){.device_id = "dev-1",
                                                                         .outbox_slots = 4,
                                                                         .hmac_key = key,
                                                                         .hmac_key_len = 0});
    struct fake_sensor fs;
    fake_sensor_setup(&fs);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fs, 0x76, 10), 0);
    assert_int_equal(tg_node_start(node), 0);
    tg_node_transport_up(node);
    tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 1);
    struct tg_decoder *dec = tg_decoder_new(NULL);
    struct tg_decoded out;
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_NATIVE, "dev-1", fk.pubs[0].payload,
                                       fk.pubs[0].len, fk.wall_ms, &out),
                     TG_OK);
    assert_null(out.sig);
    tg_decoder_destroy(dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4231_vectors),
        cmocka_unit_test(agrees_with_mbedtls_hmac),
        cmocka_unit_test(node_reproduces_the_fixed_vector),
        cmocka_unit_test(no_key_no_signature),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
