/* Unit tests for gateway/validate.c: clock skew, metric ranges, the keys file, signatures
 * (RFC 4231 vectors and payloads signed by the codec's encoder) and key reloads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <mbedtls/md.h>

#include "codec.h"
#include "codec_native.h"
#include "config.h"
#include "validate.h"
#include "unit_tmp.h"

#define NOW_MS INT64_C(1700000000000)

/* --- fixtures ------------------------------------------------------------------------------ */

/* Short paths: the expected messages below are built in fixed buffers around them. */
struct fixture {
    char dir[64];
    char keys[96];
    char ini[96];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(tg_unit_tmpdir_new(fx->dir, sizeof fx->dir, "validate"), 0);
    tg_unit_path(fx->keys, sizeof fx->keys, fx->dir, "keys");
    tg_unit_path(fx->ini, sizeof fx->ini, fx->dir, "gw.ini");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    int rc = tg_unit_tmpdir_remove(fx->dir);
    free(fx);
    return rc;
}

/* The key file must not be readable by others (validate.c refuses it then). */
static void write_file(const char *path, const char *text)
{
    tg_unit_write_file(path, text);
    assert_int_equal(chmod(path, 0600), 0);
}

static struct tg_validate *new_validate(const struct tg_validate_opts *opts)
{
    struct tg_validate *v;
    char err[1024];
    tg_err rc = tg_validate_new(opts, &v, err, sizeof err);
    if (rc != TG_OK)
        fail_msg("tg_validate_new: %s", err);
    assert_string_equal(err, "");
    return v;
}

/* A decoded native payload of one reading with the given metrics, unsigned. */
struct payload {
    struct tg_metric metrics[4];
    struct tg_reading readings[3];
    struct tg_decoded dec;
};

static void payload_init(struct payload *pl, int64_t ts_ms)
{
    memset(pl, 0, sizeof *pl);
    pl->metrics[0] = (struct tg_metric){.name = "temperature", .value = 21.5};
    pl->metrics[1] = (struct tg_metric){.name = "humidity", .value = 40};
    pl->readings[0] = (struct tg_reading){.device = "dev-1", .has_seq = true, .boot = 1,
                                          .seq = 1, .ts_ms = ts_ms, .n_metrics = 2,
                                          .metrics = pl->metrics};
    pl->dec = (struct tg_decoded){.format = TG_FORMAT_NATIVE, .cbor = true, .n_readings = 1,
                                  .readings = pl->readings};
}

static tg_err check(struct tg_validate *v, const char *device, const struct payload *pl,
                    char *why, size_t whylen)
{
    return tg_validate_payload(v, device, &pl->dec, NOW_MS, why, whylen);
}

/* --- clock skew ---------------------------------------------------------------------------- */

static void clock_skew(void **state)
{
    (void)state;
    struct tg_validate_opts opts = {.max_skew_ms = 300000, .max_age_ms = 86400000};
    struct tg_validate *v = new_validate(&opts);
    struct payload pl;
    char why[256];

    payload_init(&pl, NOW_MS);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    assert_string_equal(why, "");

    payload_init(&pl, NOW_MS + 3600000);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    assert_string_equal(why, "ts 1700003600000 is 3600000 ms ahead of the gateway clock "
                             "(limit 300000)");
    payload_init(&pl, NOW_MS + 300000); /* exactly at the limit */
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    payload_init(&pl, NOW_MS + 300001);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);

    payload_init(&pl, NOW_MS - 86400000);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    payload_init(&pl, NOW_MS - 86400001);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    assert_string_equal(why, "ts 1699913599999 is 86400001 ms behind the gateway clock "
                             "(limit 86400000)");
    payload_init(&pl, 0); /* a node whose clock never got set */
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    assert_string_equal(why, "ts 0 is 1700000000000 ms behind the gateway clock "
                             "(limit 86400000)");

    /* Extreme times do not overflow. */
    payload_init(&pl, INT64_MAX);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    payload_init(&pl, INT64_MIN);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);

    /* In a pack, the text names the reading; a short buffer is cut, not overrun. */
    payload_init(&pl, NOW_MS);
    pl.readings[1] = pl.readings[0];
    pl.readings[2] = pl.readings[0];
    pl.readings[2].ts_ms = NOW_MS + 400000;
    pl.dec.n_readings = 3;
    pl.dec.format = TG_FORMAT_SENML;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    assert_string_equal(why, "reading 2: ts 1700000400000 is 400000 ms ahead of the gateway "
                             "clock (limit 300000)");
    char tiny[8];
    assert_int_equal(check(v, "dev-1", &pl, tiny, sizeof tiny), TG_ERR_CLOCK_SKEW);
    assert_string_equal(tiny, "reading");
    assert_int_equal(check(v, "dev-1", &pl, NULL, 0), TG_ERR_CLOCK_SKEW);
    tg_validate_destroy(v);

    /* 0 switches each bound off. */
    struct tg_validate_opts ahead_off = {.max_skew_ms = 0, .max_age_ms = 1000};
    v = new_validate(&ahead_off);
    payload_init(&pl, INT64_MAX);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    payload_init(&pl, NOW_MS - 1001);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    tg_validate_destroy(v);
    struct tg_validate_opts behind_off = {.max_skew_ms = 1000, .max_age_ms = 0};
    v = new_validate(&behind_off);
    payload_init(&pl, 0);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    payload_init(&pl, NOW_MS + 1001);
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    tg_validate_destroy(v);

    struct tg_validate_opts negative = {.max_skew_ms = -1};
    assert_int_equal(tg_validate_new(&negative, &v, why, sizeof why), TG_ERR_USAGE);
    assert_null(v);
}

/* --- ranges -------------------------------------------------------------------------------- */

static void add_range_ok(struct tg_validate *v, const char *metric, const char *spec)
{
    char err[256];
    tg_err rc = tg_validate_add_range(v, metric, spec, err, sizeof err);
    if (rc != TG_OK)
        fail_msg("add_range(%s, %s): %s", metric, spec, err);
}

static void metric_ranges(void **state)
{
    (void)state;
    struct tg_validate_opts opts = {0};
    struct tg_validate *v = new_validate(&opts);
    struct payload pl;
    char why[256];
    add_range_ok(v, "temperature", "-40..125");
    add_range_ok(v, "humidity", "0..100");
    add_range_ok(v, "battery", " 0 .. ");
    add_range_ok(v, "rssi", "..-30.5");

    payload_init(&pl, NOW_MS);
    pl.metrics[0].value = 300;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
    assert_string_equal(why, "metric \"temperature\" = 300 is outside -40..125");
    /* Bounds are inclusive. */
    pl.metrics[0].value = -40;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    pl.metrics[0].value = 125;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    pl.metrics[0].value = 125.000001;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
    assert_string_equal(why, "metric \"temperature\" = 125.000001 is outside -40..125");
    pl.metrics[0].value = -40.5;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
    pl.metrics[0].value = 20;
    pl.metrics[1].value = -0.25;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
    assert_string_equal(why, "metric \"humidity\" = -0.25 is outside 0..100");

    /* Open-ended ranges. */
    pl.metrics[1] = (struct tg_metric){.name = "battery", .value = 1e300};
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    pl.metrics[1].value = -1;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
    assert_string_equal(why, "metric \"battery\" = -1 is outside 0..");
    pl.metrics[1] = (struct tg_metric){.name = "rssi", .value = -30.5};
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    pl.metrics[1].value = -30;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
    assert_string_equal(why, "metric \"rssi\" = -30 is outside ..-30.5");

    /* Metrics without a range pass whatever their value; names match exactly. */
    pl.metrics[1] = (struct tg_metric){.name = "pressure", .value = -1e300};
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    pl.metrics[1] = (struct tg_metric){.name = "Temperature", .value = 1000};
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    pl.metrics[1] = (struct tg_metric){.name = "temperatur", .value = 1000};
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);

    /* A second range for a metric replaces the first. */
    add_range_ok(v, "temperature", "-10..50");
    pl.metrics[0].value = 60;
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
    assert_string_equal(why, "metric \"temperature\" = 60 is outside -10..50");

    /* Many ranges: each found. */
    char name[32];
    for (int k = 0; k < 200; k++) {
        snprintf(name, sizeof name, "m%d", k);
        add_range_ok(v, name, "0..1");
    }
    payload_init(&pl, NOW_MS);
    for (int k = 0; k < 200; k += 7) {
        snprintf(name, sizeof name, "m%d", k);
        pl.metrics[1] = (struct tg_metric){.name = name, .value = 2};
        assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
        pl.metrics[1].value = 1;
        assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_OK);
    }
    tg_validate_destroy(v);
}

static void bad_range_specs(void **state)
{
    (void)state;
    struct tg_validate_opts opts = {0};
    struct tg_validate *v = new_validate(&opts);
    static const char *const bad[] = {
        "", "abc", "5", "1..2..3", "1...2", "0...5", "nan..", "..inf", "0x10..", "1e999..",
        "- 1..", "1 2..3", "1,5..2", "..1e", "-40..125 # note",
    };
    char err[256];
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        if (tg_validate_add_range(v, "temperature", bad[k], err, sizeof err) != TG_ERR_CONFIG)
            fail_msg("\"%s\" was accepted", bad[k]);
        char expected[256];
        snprintf(expected, sizeof expected,
                 "temperature: expected a range LO..HI of decimal numbers (either bound may be "
                 "empty, e.g. -40..125 or 0..), got \"%s\"", bad[k]);
        assert_string_equal(err, expected);
    }
    assert_int_equal(tg_validate_add_range(v, "t", "..", err, sizeof err), TG_ERR_CONFIG);
    assert_string_equal(err, "t: a range needs at least one bound (e.g. -40..125 or 0..), got "
                             "\"..\"");
    assert_int_equal(tg_validate_add_range(v, "t", "5..1", err, sizeof err), TG_ERR_CONFIG);
    assert_string_equal(err, "t: the lower bound is above the upper bound in \"5..1\"");
    assert_int_equal(tg_validate_add_range(v, "", "0..1", err, sizeof err), TG_ERR_CONFIG);
    /* Accepted spellings. */
    add_range_ok(v, "a", "1e2..1e3");
    add_range_ok(v, "b", "+5..");
    add_range_ok(v, "c", ".5..1.");
    add_range_ok(v, "d", "3..3");
    add_range_ok(v, "e", "-1.5E-3..\t2");
    struct payload pl;
    payload_init(&pl, NOW_MS);
    pl.metrics[0] = (struct tg_metric){.name = "e", .value = 3};
    char why[128];
    assert_int_equal(check(v, "dev-1", &pl, why, sizeof why), TG_ERR_OUT_OF_RANGE);
    assert_string_equal(why, "metric \"e\" = 3 is outside -0.0015..2");
    tg_validate_destroy(v);
}

/* --- keys file ----------------------------------------------------------------------------- */

#define KEY_A "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"

static void keys_file_parsing(void **state)
{
    struct fixture *fx = *state;
    write_file(fx->keys, "# device keys\n"
                         "\n"
                         "dev-1 " KEY_A "\n"
                         "  dev.2\t0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B   # rotated 2025-01\n"
                         "d_3 000102030405060708090a0b0c0d0e0f\n" /* 16 bytes: the shortest */
                         "d4 " KEY_A KEY_A "\r\n"                  /* 64 bytes: the longest */
                         "   # indented comment\n"
                         "last " KEY_B); /* no final newline */
    struct tg_validate_opts opts = {.keys_file = fx->keys};
    struct tg_validate *v = new_validate(&opts);
    assert_int_equal(tg_validate_keys(v), 5);
    tg_validate_destroy(v);

    write_file(fx->keys, "dev-1 " KEY_A "\n"
                         "bad/id " KEY_A "\n"
                         "dev-2\n"
                         "dev-3 " KEY_A " extra\n"
                         "dev-4 000102030405060708090a0b0c0d0e\n" /* 15 bytes */
                         "dev-5 " KEY_A KEY_A "00\n"              /* 65 bytes */
                         "dev-6 000102030405060708090a0b0c0d0e0f1\n" /* odd */
                         "dev-7 000102030405060708090a0b0c0d0eXY\n"
                         "dev-1 " KEY_B "\n");
    char err[2048];
    assert_int_equal(tg_validate_new(&opts, &v, err, sizeof err), TG_ERR_CONFIG);
    assert_null(v);
    char expected[2048];
    snprintf(expected, sizeof expected,
             "%1$s:2: invalid device id \"bad/id\" (expected 1 to 64 of [A-Za-z0-9_.-])\n"
             "%1$s:3: device \"dev-2\" has no key (expected \"<device_id> <hex key>\")\n"
             "%1$s:4: device \"dev-3\": unexpected text after the key (expected \"<device_id> "
             "<hex key>\")\n"
             "%1$s:5: device \"dev-4\": expected a key of 16 to 64 bytes (32 to 128 hex digits, "
             "an even number), got 30 digits\n"
             "%1$s:6: device \"dev-5\": expected a key of 16 to 64 bytes (32 to 128 hex digits, "
             "an even number), got 130 digits\n"
             "%1$s:7: device \"dev-6\": expected a key of 16 to 64 bytes (32 to 128 hex digits, "
             "an even number), got 33 digits\n"
             "%1$s:8: device \"dev-7\": the key is not hexadecimal (character 31)\n"
             "%1$s:9: device \"dev-1\" is listed twice (first at line 1)",
             fx->keys);
    assert_string_equal(err, expected);
    /* No key material in any message. */
    assert_null(strstr(err, "0b0b"));
    assert_null(strstr(err, "0001"));

    /* A key in the device column is not echoed either. */
    write_file(fx->keys, KEY_A "\n"
                         KEY_A " dev-1\n"
                         KEY_A KEY_A " " KEY_B "\n");
    assert_int_equal(tg_validate_new(&opts, &v, err, sizeof err), TG_ERR_CONFIG);
    snprintf(expected, sizeof expected,
             "%1$s:1: device \"<hex digits, not shown>\" has no key (expected \"<device_id> "
             "<hex key>\")\n"
             "%1$s:2: device \"<hex digits, not shown>\": expected a key of 16 to 64 bytes (32 "
             "to 128 hex digits, an even number), got 5 digits\n"
             "%1$s:3: invalid device id \"<hex digits, not shown>\" (expected 1 to 64 of "
             "[A-Za-z0-9_.-])",
             fx->keys);
    assert_string_equal(err, expected);

    /* An over-long line, and a file that is not there. */
    char line[700];
    memset(line, 'a', sizeof line - 2);
    line[sizeof line - 2] = '\n';
    line[sizeof line - 1] = '\0';
    FILE *f = fopen(fx->keys, "w");
    assert_non_null(f);
    fprintf(f, "%sdev-1 %s\n%s", line, KEY_A, line);
    fclose(f);
    assert_int_equal(chmod(fx->keys, 0600), 0);
    assert_int_equal(tg_validate_new(&opts, &v, err, sizeof err), TG_ERR_CONFIG);
    snprintf(expected, sizeof expected,
             "%1$s:1: line longer than 510 bytes\n%1$s:3: line longer than 510 bytes", fx->keys);
    assert_string_equal(err, expected);
    unlink(fx->keys);
    assert_int_equal(tg_validate_new(&opts, &v, err, sizeof err), TG_ERR_CONFIG);
    snprintf(expected, sizeof expected, "%s: cannot open: No such file or directory", fx->keys);
    assert_string_equal(err, expected);
    struct tg_validate_opts dir_opts = {.keys_file = fx->dir}; /* opens, then fails to read */
    assert_int_equal(tg_validate_new(&dir_opts, &v, err, sizeof err), TG_ERR_CONFIG);
    snprintf(expected, sizeof expected, "%s: read error: Is a directory", fx->dir);
    assert_string_equal(err, expected);

    /* Many problems: the first ones, then a note. */
    f = fopen(fx->keys, "w");
    assert_non_null(f);
    for (int k = 0; k < 30; k++)
        fprintf(f, "dev-%d\n", k);
    fclose(f);
    assert_int_equal(chmod(fx->keys, 0600), 0);
    assert_int_equal(tg_validate_new(&opts, &v, err, sizeof err), TG_ERR_CONFIG);
    assert_non_null(strstr(err, ":9: device \"dev-8\" has no key"));
    assert_null(strstr(err, ":10:"));
    assert_non_null(strstr(err, "\n(further problems not shown)"));
    /* A small error buffer is cut, not overrun. */
    char small[20];
    assert_int_equal(tg_validate_new(&opts, &v, small, sizeof small), TG_ERR_CONFIG);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_int_equal(tg_validate_new(&opts, &v, NULL, 0), TG_ERR_CONFIG);

    /* require_signature needs a keys file. */
    struct tg_validate_opts no_keys = {.require_signature = true};
    assert_int_equal(tg_validate_new(&no_keys, &v, err, sizeof err), TG_ERR_CONFIG);
    assert_string_equal(err, "require_signature = true needs a keys_file");
}

static void many_keys(void **state)
{
    struct fixture *fx = *state;
    FILE *f = fopen(fx->keys, "w");
    assert_non_null(f);
    for (int k = 0; k < 10000; k++)
        fprintf(f, "node-%05d %032x\n", k, k);
    fclose(f);
    assert_int_equal(chmod(fx->keys, 0600), 0);
    struct tg_validate_opts opts = {.keys_file = fx->keys, .require_signature = true};
    struct tg_validate *v = new_validate(&opts);
    assert_int_equal(tg_validate_keys(v), 10000);
    /* Every device has a key: each unsigned payload is refused for that reason. */
    struct payload pl;
    payload_init(&pl, NOW_MS);
    char why[256], dev[32];
    for (int k = 0; k < 10000; k += 101) {
        snprintf(dev, sizeof dev, "node-%05d", k);
        assert_int_equal(check(v, dev, &pl, why, sizeof why), TG_ERR_UNSIGNED);
        char expected[128];
        snprintf(expected, sizeof expected, "device \"%s\" has a key but the payload is not "
                 "signed", dev);
        assert_string_equal(why, expected);
    }
    assert_int_equal(check(v, "node-10000", &pl, why, sizeof why), TG_ERR_UNSIGNED);
    assert_string_equal(why, "no key is configured for device \"node-10000\" and signatures are "
                             "required");
    tg_validate_destroy(v);
}

/* --- signatures ---------------------------------------------------------------------------- */

static void hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
                        uint8_t out[TG_SIG_LEN])
{
    assert_int_equal(mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, key_len,
                                     msg, len, out),
                     0);
}

static void unhex(const char *hex, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned byte;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &byte), 1);
        out[i] = (uint8_t)byte;
    }
}

/* RFC 4231 test cases 1 and 4, checked through the validator: proves the HMAC it computes
 * is HMAC-SHA256 with the key from the file, over exactly the signed bytes. */
static void rfc4231_vectors(void **state)
{
    struct fixture *fx = *state;
    write_file(fx->keys, "tc1 0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b\n"
                         "tc4 0102030405060708090a0b0c0d0e0f10111213141516171819\n");
    struct tg_validate_opts opts = {.keys_file = fx->keys};
    struct tg_validate *v = new_validate(&opts);
    struct payload pl;
    payload_init(&pl, NOW_MS);
    char why[256];
    uint8_t sig[TG_SIG_LEN];

    unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", sig, sizeof sig);
    pl.dec.sig = sig;
    pl.dec.signed_bytes = (const uint8_t *)"Hi There";
    pl.dec.signed_len = 8;
    assert_int_equal(check(v, "tc1", &pl, why, sizeof why), TG_OK);
    /* The same signature under another device's key, or over other bytes, fails. */
    assert_int_equal(check(v, "tc4", &pl, why, sizeof why), TG_ERR_BAD_SIGNATURE);
    assert_string_equal(why, "signature does not match the key of device \"tc4\"");
    pl.dec.signed_len = 7;
    assert_int_equal(check(v, "tc1", &pl, why, sizeof why), TG_ERR_BAD_SIGNATURE);
    pl.dec.signed_len = 8;
    for (size_t i = 0; i < TG_SIG_LEN; i++) {
        sig[i] ^= 0x01;
        assert_int_equal(check(v, "tc1", &pl, why, sizeof why), TG_ERR_BAD_SIGNATURE);
        sig[i] ^= 0x01;
    }

    uint8_t data[50];
    memset(data, 0xcd, sizeof data);
    unhex("82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b", sig, sizeof sig);
    pl.dec.signed_bytes = data;
    pl.dec.signed_len = sizeof data;
    assert_int_equal(check(v, "tc4", &pl, why, sizeof why), TG_OK);
    tg_validate_destroy(v);
}

/* The firmware's signing callback: HMAC-SHA256 with the key in ctx (32 bytes). */
static tg_err sign_with(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[TG_SIG_LEN])
{
    hmac_sha256(ctx, 32, msg, len, sig);
    return TG_OK;
}

static const struct tg_metric wire_metrics[] = {
    {.name = "temperature", .value = 21.5},
    {.name = "humidity", .value = 40},
};

static size_t encode_signed(const uint8_t *key, uint64_t seq, uint8_t *buf, size_t cap)
{
    struct tg_reading rd = {.has_seq = true, .boot = 2, .seq = seq, .ts_ms = NOW_MS,
                            .n_metrics = 2, .metrics = wire_metrics};
    size_t len;
    assert_int_equal(tg_codec_native_encode_signed(&rd, sign_with, (void *)key, buf, cap, &len),
                     TG_OK);
    return len;
}

static void signed_payloads(void **state)
{
    struct fixture *fx = *state;
    uint8_t key_a[32], key_b[20];
    unhex(KEY_A, key_a, sizeof key_a);
    unhex(KEY_B, key_b, sizeof key_b);
    write_file(fx->keys, "dev-1 " KEY_A "\ndev-2 " KEY_B "\n");
    struct tg_validate_opts opts = {.keys_file = fx->keys};
    struct tg_validate *v = new_validate(&opts);
    struct tg_decoder *dec = tg_decoder_new(NULL);
    assert_non_null(dec);
    struct tg_decoded out;
    uint8_t buf[256];
    char why[256];

    /* Signed by the codec's encoder with dev-1's key: valid for dev-1 only. */
    size_t len = encode_signed(key_a, 7, buf, sizeof buf);
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", buf, len, NOW_MS, &out),
                     TG_OK);
    assert_non_null(out.sig);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why), TG_OK);
    assert_int_equal(tg_validate_payload(v, "dev-2", &out, NOW_MS, why, sizeof why),
                     TG_ERR_BAD_SIGNATURE);
    assert_string_equal(why, "signature does not match the key of device \"dev-2\"");

    /* Tampering with a signed field (seq 7 -> 8) breaks it. */
    size_t i;
    for (i = 0; i + 4 < len && memcmp(buf + i, "\x63seq\x07", 5) != 0; i++)
        ;
    assert_true(i + 4 < len);
    buf[i + 4] = 0x08;
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", buf, len, NOW_MS, &out),
                     TG_OK);
    assert_int_equal(out.readings[0].seq, 8);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why),
                     TG_ERR_BAD_SIGNATURE);

    /* Missing signature for a device with a key. */
    struct tg_reading rd = {.has_seq = true, .boot = 2, .seq = 9, .ts_ms = NOW_MS,
                            .n_metrics = 2, .metrics = wire_metrics};
    assert_int_equal(tg_codec_native_encode(&rd, buf, sizeof buf, &len), TG_OK);
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", buf, len, NOW_MS, &out),
                     TG_OK);
    assert_null(out.sig);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why),
                     TG_ERR_UNSIGNED);
    assert_string_equal(why, "device \"dev-1\" has a key but the payload is not signed");
    /* ... and JSON / SenML, which cannot carry one. */
    static const char json[] = "{\"seq\":1,\"boot\":1,\"ts\":1700000000000,\"m\":{\"t\":1}}";
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", (const uint8_t *)json,
                                       strlen(json), NOW_MS, &out),
                     TG_OK);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why),
                     TG_ERR_UNSIGNED);
    assert_string_equal(why, "device \"dev-1\" has a key but the payload is not signed (JSON "
                             "payloads cannot be signed)");
    static const char senml[] = "[{\"n\":\"t\",\"v\":1,\"t\":1700000000}]";
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", (const uint8_t *)senml,
                                       strlen(senml), NOW_MS, &out),
                     TG_OK);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why),
                     TG_ERR_UNSIGNED);
    assert_string_equal(why, "device \"dev-1\" has a key but the payload is not signed (SenML "
                             "payloads cannot be signed)");

    /* A device without a key: its signature, valid or not, is ignored. */
    len = encode_signed(key_a, 10, buf, sizeof buf);
    buf[len - 1] ^= 0xff;
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-9", buf, len, NOW_MS, &out),
                     TG_OK);
    assert_int_equal(tg_validate_payload(v, "dev-9", &out, NOW_MS, why, sizeof why), TG_OK);

    /* A signature of the wrong length is the decoder's to refuse, with the same reason. */
    assert_int_equal(tg_codec_native_encode(&rd, buf, sizeof buf, &len), TG_OK);
    assert_int_equal(buf[0], 0xa4);
    buf[0] = 0xa5;
    memcpy(buf + len, "\x63sig\x50", 5);
    memset(buf + len + 5, 0x11, 16);
    len += 5 + 16;
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", buf, len, NOW_MS, &out),
                     TG_ERR_BAD_SIGNATURE);

    /* The signature is checked before anything else. */
    char err[256];
    assert_int_equal(tg_validate_add_range(v, "temperature", "..0", err, sizeof err), TG_OK);
    assert_int_equal(tg_codec_native_encode(&rd, buf, sizeof buf, &len), TG_OK);
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", buf, len, NOW_MS, &out),
                     TG_OK);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why),
                     TG_ERR_UNSIGNED);
    assert_int_equal(tg_validate_payload(v, "dev-9", &out, NOW_MS, why, sizeof why),
                     TG_ERR_OUT_OF_RANGE);
    len = encode_signed(key_a, 11, buf, sizeof buf);
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", buf, len, NOW_MS, &out),
                     TG_OK);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why),
                     TG_ERR_OUT_OF_RANGE);
    tg_decoder_destroy(dec);
    tg_validate_destroy(v);

    /* With require_signature, a device without a key is refused even when it signs. */
    struct tg_validate_opts strict = {.keys_file = fx->keys, .require_signature = true};
    v = new_validate(&strict);
    dec = tg_decoder_new(NULL);
    assert_non_null(dec);
    len = encode_signed(key_a, 12, buf, sizeof buf);
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-9", buf, len, NOW_MS, &out),
                     TG_OK);
    assert_int_equal(tg_validate_payload(v, "dev-9", &out, NOW_MS, why, sizeof why),
                     TG_ERR_UNSIGNED);
    assert_string_equal(why, "no key is configured for device \"dev-9\" and signatures are "
                             "required");
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why), TG_OK);
    tg_decoder_destroy(dec);
    tg_validate_destroy(v);
}

static void reload_keeps_old_keys_on_error(void **state)
{
    struct fixture *fx = *state;
    uint8_t key_a[32];
    unhex(KEY_A, key_a, sizeof key_a);
    write_file(fx->keys, "dev-1 " KEY_A "\n");
    struct tg_validate_opts opts = {.keys_file = fx->keys};
    struct tg_validate *v = new_validate(&opts);
    struct tg_decoder *dec = tg_decoder_new(NULL);
    assert_non_null(dec);
    uint8_t buf[256];
    size_t len = encode_signed(key_a, 1, buf, sizeof buf);
    struct tg_decoded out;
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "dev-1", buf, len, NOW_MS, &out),
                     TG_OK);
    char why[256], err[1024];
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why), TG_OK);

    /* A broken file: the reload fails and says why; the old key stays in use. */
    write_file(fx->keys, "dev-1 " KEY_A "\ndev-2 123\n");
    assert_int_equal(tg_validate_reload_keys(v, err, sizeof err), TG_ERR_CONFIG);
    char expected[512];
    snprintf(expected, sizeof expected, "%s:2: device \"dev-2\": expected a key of 16 to 64 "
             "bytes (32 to 128 hex digits, an even number), got 3 digits", fx->keys);
    assert_string_equal(err, expected);
    assert_int_equal(tg_validate_keys(v), 1);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why), TG_OK);
    /* So does a missing file. */
    unlink(fx->keys);
    assert_int_equal(tg_validate_reload_keys(v, err, sizeof err), TG_ERR_CONFIG);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why), TG_OK);

    /* A good file replaces the keys: rotated dev-1, new dev-2. */
    write_file(fx->keys, "dev-1 " KEY_B "\ndev-2 " KEY_A "\n");
    assert_int_equal(tg_validate_reload_keys(v, err, sizeof err), TG_OK);
    assert_string_equal(err, "");
    assert_int_equal(tg_validate_keys(v), 2);
    assert_int_equal(tg_validate_payload(v, "dev-1", &out, NOW_MS, why, sizeof why),
                     TG_ERR_BAD_SIGNATURE);
    assert_int_equal(tg_validate_payload(v, "dev-2", &out, NOW_MS, why, sizeof why), TG_OK);
    tg_decoder_destroy(dec);
    tg_validate_destroy(v);

    /* Without a keys file, a reload has nothing to do. */
    struct tg_validate_opts none = {0};
    v = new_validate(&none);
    assert_int_equal(tg_validate_reload_keys(v, err, sizeof err), TG_OK);
    assert_int_equal(tg_validate_keys(v), 0);
    tg_validate_destroy(v);
    tg_validate_destroy(NULL);
}

/* --- configuration ------------------------------------------------------------------------- */

static const struct tg_config_key schema[] = {TG_VALIDATE_CONFIG_KEYS};

static void from_config(void **state)
{
    struct fixture *fx = *state;
    write_file(fx->keys, "dev-1 " KEY_A "\n");
    char text[512];
    snprintf(text, sizeof text,
             "[validate]\n"
             "max_skew_ms = 1000\n"
             "keys_file = %s\n"
             "require_signature = true\n"
             "\n"
             "[validate.ranges]\n"
             "temperature = -40..125\n"
             "humidity = 0..100\n",
             fx->keys);
    write_file(fx->ini, text);
    struct tg_config *cfg = tg_config_new(schema, sizeof schema / sizeof schema[0]);
    assert_non_null(cfg);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, fx->ini), TG_OK);
    struct tg_validate *v;
    char err[512];
    assert_int_equal(tg_validate_from_config(cfg, &v, err, sizeof err), TG_OK);
    assert_int_equal(tg_validate_keys(v), 1);
    struct payload pl;
    payload_init(&pl, NOW_MS);
    char why[256];
    assert_int_equal(check(v, "dev-2", &pl, why, sizeof why), TG_ERR_UNSIGNED);
    tg_validate_destroy(v);
    tg_config_destroy(cfg);

    /* The defaults: 5 minutes ahead, 7 days behind, no keys, no ranges. */
    cfg = tg_config_new(schema, sizeof schema / sizeof schema[0]);
    assert_non_null(cfg);
    assert_int_equal(tg_validate_from_config(cfg, &v, err, sizeof err), TG_OK);
    payload_init(&pl, NOW_MS + 300000);
    pl.metrics[0].value = 1e9;
    assert_int_equal(check(v, "dev-2", &pl, why, sizeof why), TG_OK);
    payload_init(&pl, NOW_MS + 300001);
    assert_int_equal(check(v, "dev-2", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    payload_init(&pl, NOW_MS - INT64_C(604800000));
    assert_int_equal(check(v, "dev-2", &pl, why, sizeof why), TG_OK);
    payload_init(&pl, NOW_MS - INT64_C(604800001));
    assert_int_equal(check(v, "dev-2", &pl, why, sizeof why), TG_ERR_CLOCK_SKEW);
    tg_validate_destroy(v);
    tg_config_destroy(cfg);

    /* A bad range is reported with where it came from. */
    write_file(fx->ini, "[validate.ranges]\n"
                        "temperature = -40..125\n"
                        "humidity = 0..lots\n");
    cfg = tg_config_new(schema, sizeof schema / sizeof schema[0]);
    assert_non_null(cfg);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, fx->ini), TG_OK);
    assert_int_equal(tg_validate_from_config(cfg, &v, err, sizeof err), TG_ERR_CONFIG);
    assert_null(v);
    char expected[512];
    snprintf(expected, sizeof expected,
             "%s:3: [validate.ranges] humidity: expected a range LO..HI of decimal numbers "
             "(either bound may be empty, e.g. -40..125 or 0..), got \"0..lots\"", fx->ini);
    assert_string_equal(err, expected);
    tg_config_destroy(cfg);

    /* require_signature without keys_file, likewise. */
    write_file(fx->ini, "[validate]\nrequire_signature = yes\n");
    cfg = tg_config_new(schema, sizeof schema / sizeof schema[0]);
    assert_non_null(cfg);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, fx->ini), TG_OK);
    assert_int_equal(tg_validate_from_config(cfg, &v, err, sizeof err), TG_ERR_CONFIG);
    snprintf(expected, sizeof expected,
             "%s:2: [validate] require_signature: true needs keys_file to be set", fx->ini);
    assert_string_equal(err, expected);
    tg_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clock_skew),
        cmocka_unit_test(metric_ranges),
        cmocka_unit_test(bad_range_specs),
        cmocka_unit_test_setup_teardown(keys_file_parsing, setup, teardown),
        cmocka_unit_test_setup_teardown(many_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(rfc4231_vectors, setup, teardown),
        cmocka_unit_test_setup_teardown(signed_payloads, setup, teardown),
        cmocka_unit_test_setup_teardown(reload_keeps_old_keys_on_error, setup, teardown),
        cmocka_unit_test_setup_teardown(from_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
