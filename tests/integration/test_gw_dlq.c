/*
 * test_gw_dlq.c - guarantee: bad input never hurts. Each kind of bad payload (malformed,
 * oversized, a field of the wrong type, a missing field, a bad signature, unsigned from a
 * device that has a key, a value out of its configured range, a timestamp far in the future)
 * lands on the DLQ topic with the original bytes, the device id as key and headers naming
 * the MQTT topic, the device and the reason; tidegate_messages_invalid_total{reason} counts
 * each; valid readings published after them are still delivered, and the gateway stays up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <mbedtls/md.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "codec_native.h"
#include "gateway_fixture.h"

#define SIGNED_DEVICE "signed-01"
#define GOOD_DEVICES 20
#define GOOD_SEQS 5
#define GOOD_READINGS (GOOD_DEVICES * GOOD_SEQS)
#define WAIT_MS 30000

/* The device's key, and another one that signs the forged payload. */
static const uint8_t device_key[32] = {
    0x3a, 0x91, 0x0c, 0x5e, 0x77, 0x12, 0xd4, 0x8b, 0x60, 0x2f, 0xee, 0x41, 0x09, 0xb3,
    0x5d, 0xc8, 0x1e, 0x84, 0x6a, 0xf0, 0x27, 0x93, 0x4c, 0xbd, 0x58, 0x06, 0xa1, 0x7f,
    0xe2, 0x35, 0xcc, 0x19};
static const uint8_t wrong_key[32] = {
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
    0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c,
    0x1d, 0x1e, 0x1f, 0x20};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static tg_err hmac_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[TG_SIG_LEN])
{
    const uint8_t *key = ctx;
    const mbedtls_md_info_t *sha256 = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    return mbedtls_md_hmac(sha256, key, 32, msg, len, sig) == 0 ? TG_OK : TG_ERR_INTERNAL;
}

/* A native CBOR reading, signed with key (or unsigned when key is NULL). */
static size_t cbor_reading(const uint8_t *key, uint64_t seq, double temp, uint8_t *buf,
                           size_t cap)
{
    struct tg_metric m = {.name = "temp", .unit = NULL, .value = temp};
    struct tg_reading rd = {.device = SIGNED_DEVICE, .has_seq = true, .boot = 1, .seq = seq,
                            .ts_ms = wall_ms(), .n_metrics = 1, .metrics = &m};
    size_t len = 0;
    tg_err err = key ? tg_codec_native_encode_signed(&rd, hmac_sign, (void *)key, buf, cap, &len)
                     : tg_codec_native_encode(&rd, buf, cap, &len);
    assert_int_equal(err, TG_OK);
    return len;
}

struct bad_case {
    const char *device;
    const char *reason;
    uint8_t *payload;
    size_t len;
    int found;
};

static void set_payload(struct bad_case *bc, const void *bytes, size_t len)
{
    bc->payload = malloc(len);
    assert_non_null(bc->payload);
    memcpy(bc->payload, bytes, len);
    bc->len = len;
}

/* A native JSON reading with the given seq and temp (as JSON text) and ts. */
static void set_json(struct bad_case *bc, const char *seq, int64_t ts, const char *temp)
{
    char text[256];
    int n = snprintf(text, sizeof text, "{\"seq\":%s,\"boot\":1,\"ts\":%lld,\"m\":{\"temp\":%s}}",
                     seq, (long long)ts, temp);
    assert_true(n > 0 && (size_t)n < sizeof text);
    set_payload(bc, text, (size_t)n);
}

static void bad_payloads_go_to_dlq(void **state)
{
    (void)state;
    /* The device keys file must exist before the gateway starts. */
    char *keys_dir = tg_harness_tmpdir_new("gw-keys");
    assert_non_null(keys_dir);
    char keys_path[512];
    snprintf(keys_path, sizeof keys_path, "%s/device-keys", keys_dir);
    FILE *f = fopen(keys_path, "w");
    assert_non_null(f);
    fprintf(f, "# test keys\n%s ", SIGNED_DEVICE);
    for (size_t i = 0; i < sizeof device_key; i++)
        fprintf(f, "%02x", device_key[i]);
    fprintf(f, "\n");
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(keys_path, 0600), 0);
    char keys_set[600];
    snprintf(keys_set, sizeof keys_set, "validate.keys_file=%s", keys_path);
    const char *const sets[] = {keys_set, "validate.max_skew_ms=300000", NULL};
    const struct tg_gw_opts opts = {.sets = sets,
                                    .extra_ini = "[validate.ranges]\ntemp = -40..125\n"};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "gw-test-pub");
    assert_non_null(pub);

    int64_t now = wall_ms();
    struct bad_case cases[] = {
        {.device = "bad-malformed", .reason = "malformed"},
        {.device = "bad-too-large", .reason = "too_large"},
        {.device = "bad-wrong-type", .reason = "wrong_type"},
        {.device = "bad-missing", .reason = "missing_field"},
        {.device = SIGNED_DEVICE, .reason = "bad_signature"},
        {.device = SIGNED_DEVICE, .reason = "unsigned"},
        {.device = "bad-range", .reason = "out_of_range"},
        {.device = "bad-skew", .reason = "clock_skew"},
    };
    const size_t n_cases = sizeof cases / sizeof cases[0];
    static const char truncated[] = "{\"seq\":1,\"boot\":1,\"ts\":";
    set_payload(&cases[0], truncated, strlen(truncated));
    {
        /* well-formed JSON, but larger than validate.max_payload_bytes (4096) */
        size_t len = 5000;
        char *big = malloc(len + 1);
        assert_non_null(big);
        int head = snprintf(big, len + 1, "{\"seq\":1,\"boot\":1,\"ts\":%lld,\"m\":{\"temp\":1},"
                            "\"pad\":\"", (long long)now);
        memset(big + head, 'x', len - (size_t)head - 2);
        memcpy(big + len - 2, "\"}", 2);
        set_payload(&cases[1], big, len);
        free(big);
    }
    set_json(&cases[2], "\"x\"", now, "21.5");
    static const char no_ts[] = "{\"seq\":1,\"boot\":1,\"m\":{\"temp\":21.5}}";
    set_payload(&cases[3], no_ts, strlen(no_ts));
    {
        uint8_t buf[256];
        size_t len = cbor_reading(wrong_key, 1, 21.5, buf, sizeof buf);
        set_payload(&cases[4], buf, len);
        len = cbor_reading(NULL, 2, 21.5, buf, sizeof buf);
        set_payload(&cases[5], buf, len);
    }
    set_json(&cases[6], "1", now, "300");
    set_json(&cases[7], "1", now + 3600000, "21.5");

    for (size_t i = 0; i < n_cases; i++)
        assert_int_equal(tg_gw_pub_send(pub, cases[i].device, cases[i].payload, cases[i].len), 0);

    /* Valid readings after the bad ones: a signed one from the keyed device, and a fleet. */
    uint8_t good_signed[256];
    size_t good_signed_len = cbor_reading(device_key, 3, 22.5, good_signed, sizeof good_signed);
    assert_int_equal(tg_gw_pub_send(pub, SIGNED_DEVICE, good_signed, good_signed_len), 0);
    const struct tg_gw_plan plan = {.prefix = "good", .devices = GOOD_DEVICES,
                                    .seqs = GOOD_SEQS, .boot = 1, .format = TG_GW_MIXED};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));

    /* Counted by reason, dead-lettered, and the valid ones delivered. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_dlq_delivered_total", NULL, TG_GW_GE,
                                  (double)n_cases, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  GOOD_READINGS + 1, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    for (size_t i = 0; i < n_cases; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "reason=\"%s\"", cases[i].reason);
        assert_true(tg_gw_metric_is(gw, "tidegate_messages_invalid_total", labels, TG_GW_EQ, 1));
    }
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_invalid_total", NULL, TG_GW_EQ,
                                (double)n_cases));
    assert_true(tg_gw_metric_is(gw, "tidegate_dlq_delivered_total", NULL, TG_GW_EQ,
                                (double)n_cases));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_received_total", NULL, TG_GW_EQ,
                                (double)n_cases + GOOD_READINGS + 1));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ,
                                GOOD_READINGS + 1));

    /* The dead letters as a DLQ consumer sees them. */
    struct tg_gw_consumer *dlq = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_DLQ_TOPIC);
    assert_non_null(dlq);
    assert_int_equal(tg_gw_consumer_read(dlq, n_cases, WAIT_MS), n_cases);
    for (size_t r = 0; r < tg_gw_consumer_count(dlq); r++) {
        const struct tg_gw_record *rec = tg_gw_consumer_record(dlq, r);
        struct bad_case *bc = NULL;
        for (size_t i = 0; i < n_cases && !bc; i++) {
            if (cases[i].len == rec->value_len &&
                memcmp(cases[i].payload, rec->value, rec->value_len) == 0)
                bc = &cases[i];
        }
        if (!bc)
            fail_msg("DLQ record %zu (key %s, reason %s) is none of the original payloads", r,
                     rec->key ? rec->key : "-", tg_gw_record_header(rec, "reason"));
        bc->found++;
        char topic[128];
        snprintf(topic, sizeof topic, "telemetry/%s", bc->device);
        const char *reason_text = tg_gw_record_header(rec, "reason-text");
        fprintf(stderr, "DLQ: %-14s %-13s %s\n", bc->device, bc->reason,
                reason_text ? reason_text : "(no reason-text)");
        assert_non_null(rec->key);
        assert_string_equal(rec->key, bc->device);
        assert_non_null(tg_gw_record_header(rec, "reason"));
        assert_string_equal(tg_gw_record_header(rec, "reason"), bc->reason);
        assert_non_null(reason_text);
        assert_true(reason_text[0] != '\0');
        assert_non_null(tg_gw_record_header(rec, "content-type"));
        assert_string_equal(tg_gw_record_header(rec, "content-type"),
                            "application/octet-stream");
        assert_non_null(tg_gw_record_header(rec, "mqtt-topic"));
        assert_string_equal(tg_gw_record_header(rec, "mqtt-topic"), topic);
        assert_non_null(tg_gw_record_header(rec, "device-id"));
        assert_string_equal(tg_gw_record_header(rec, "device-id"), bc->device);
        assert_int_equal(rec->partition,
                         tg_gw_java_partition(bc->device, tg_gw_consumer_partitions(dlq)));
    }
    for (size_t i = 0; i < n_cases; i++) {
        if (cases[i].found != 1)
            fail_msg("%s (%s): %d DLQ records", cases[i].device, cases[i].reason,
                     cases[i].found);
    }
    tg_gw_consumer_destroy(dlq);

    /* The valid readings, and nothing of the bad ones, on the telemetry topic. */
    struct tg_gw_consumer *c = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_TOPIC);
    assert_non_null(c);
    assert_int_equal(tg_gw_consumer_read(c, GOOD_READINGS + 1, WAIT_MS), GOOD_READINGS + 1);
    struct tg_gw_audit audit;
    tg_gw_audit_run(c, &plan, &audit);
    tg_gw_audit_print("dlq: valid readings", &audit);
    assert_int_equal(audit.distinct, GOOD_READINGS);
    assert_int_equal(audit.duplicates, 0);
    assert_int_equal(audit.bad, 0);
    assert_int_equal(audit.misplaced, 0);
    assert_int_equal(audit.out_of_order, 0);
    assert_int_equal(audit.foreign, 1);
    tg_gw_audit_free(&audit);
    int signed_found = 0;
    for (size_t r = 0; r < tg_gw_consumer_count(c); r++) {
        const struct tg_gw_record *rec = tg_gw_consumer_record(c, r);
        if (rec->canonical && strcmp(rec->device, SIGNED_DEVICE) == 0) {
            assert_int_equal(rec->seq, 3);
            assert_true(rec->has_temp && rec->temp == 22.5);
            signed_found++;
        }
    }
    assert_int_equal(signed_found, 1);
    tg_gw_consumer_destroy(c);

    /* Still up and healthy. */
    assert_int_equal(tg_gw_http_get(gw, "/healthz", NULL), 200);
    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
    for (size_t i = 0; i < n_cases; i++)
        free(cases[i].payload);
    tg_harness_tmpdir_done(keys_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(bad_payloads_go_to_dlq, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
