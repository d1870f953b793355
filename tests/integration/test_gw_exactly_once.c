/*
 * test_gw_exactly_once.c - guarantee: every reading published to the gateway reaches Kafka
 * exactly once, in per-device order, on the partition the Java client's murmur2 partitioner
 * gives its device id, with the record format the design names; QoS1 redeliveries (the same
 * (device, boot, seq) again) are counted as duplicates and not sent twice.
 * Runs on both Kafka tiers (test_gw_exactly_once_real: the real broker).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway_fixture.h"

#define DEVICES 200
#define SEQS 50
#define READINGS (DEVICES * SEQS)
#define DUP_DEVICES 10 /* devices whose last 5 readings are published a second time */
#define DUP_PER_DEVICE 5
#define DUPLICATES (DUP_DEVICES * DUP_PER_DEVICE)
#define KNOWN_KEY "sensor-0001"
#define WAIT_MS 60000

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Kafka's own murmur2 test vectors (UtilsTest.testMurmur2 of the Java client): the fixture's
 * reference partitioner must give them, or the placement checks below prove nothing. */
static void murmur2_vectors(void **state)
{
    (void)state;
    assert_int_equal(tg_gw_java_murmur2("21", 2), -973932308);
    assert_int_equal(tg_gw_java_murmur2("foobar", 6), -790332482);
    assert_int_equal(tg_gw_java_murmur2("a-little-bit-long-string", 24), -985981536);
    assert_int_equal(tg_gw_java_murmur2("a-little-bit-longer-string", 26), -1486304829);
    assert_int_equal(
        tg_gw_java_murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 48), -58897971);
    assert_int_equal(tg_gw_java_murmur2("abc", 3), 479470107);
    /* toPositive() clears the sign bit; it is not abs(). */
    assert_int_equal(tg_gw_java_partition("21", 12),
                     (int)(((uint32_t)-973932308 & 0x7fffffffu) % 12));
}

static void exactly_once_in_order_on_murmur2_partition(void **state)
{
    (void)state;
    struct tg_gw *gw = tg_gw_new(NULL);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "gw-test-pub");
    assert_non_null(pub);

    /* Half the devices send JSON, half CBOR, as fast as the broker takes them. */
    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .format = TG_GW_MIXED};
    int64_t t0 = tg_harness_now_ms();
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    fprintf(stderr, "published %d readings in %lld ms\n", READINGS,
            (long long)(tg_harness_now_ms() - t0));

    /* Redeliveries: the last readings of some devices again (same boot and seq, new ts). */
    for (int dev = 0; dev < DUP_DEVICES; dev++) {
        char device[TG_DEVICE_ID_MAX + 1];
        tg_gw_plan_device(&plan, dev, device, sizeof device);
        for (int seq = SEQS - DUP_PER_DEVICE; seq < SEQS; seq++) {
            uint8_t payload[256];
            int len = tg_gw_encode_reading(TG_GW_JSON, 1, (uint64_t)seq, wall_ms(), "temp",
                                           tg_gw_plan_temp(dev, seq), payload, sizeof payload);
            assert_true(len > 0);
            assert_int_equal(tg_gw_pub_send(pub, device, payload, (size_t)len), 0);
        }
    }
    /* The known key. */
    uint8_t payload[256];
    int len = tg_gw_encode_reading(TG_GW_JSON, 1, 1, wall_ms(), "temp", 21.5, payload,
                                   sizeof payload);
    assert_true(len > 0);
    assert_int_equal(tg_gw_pub_send(pub, KNOWN_KEY, payload, (size_t)len), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));

    /* Everything taken, confirmed by Kafka, nothing left in the journal. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_received_total", NULL, TG_GW_GE,
                                  READINGS + DUPLICATES + 1, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  READINGS + 1, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    fprintf(stderr, "delivered %d readings %lld ms after the first publish\n", READINGS + 1,
            (long long)(tg_harness_now_ms() - t0));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_received_total", NULL, TG_GW_EQ,
                                READINGS + DUPLICATES + 1));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ,
                                READINGS + 1));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_duplicate_total", NULL, TG_GW_EQ,
                                DUPLICATES));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_invalid_total", NULL, TG_GW_EQ, 0));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));
    assert_true(tg_gw_metric_is(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 1));
    assert_true(tg_gw_metric_is(gw, "tidegate_e2e_latency_seconds_count", NULL, TG_GW_GE,
                                READINGS + 1));

    /* What Kafka holds. */
    struct tg_gw_consumer *c = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_TOPIC);
    assert_non_null(c);
    size_t records = tg_gw_consumer_read(c, READINGS + 1, WAIT_MS);
    struct tg_gw_audit audit;
    tg_gw_audit_run(c, &plan, &audit);
    tg_gw_audit_print("exactly-once", &audit);
    assert_int_equal(records, READINGS + 1);
    assert_int_equal(audit.distinct, READINGS);
    assert_int_equal(audit.missing, 0);
    assert_int_equal(audit.duplicates, 0);
    assert_int_equal(audit.bad, 0);
    assert_int_equal(audit.misplaced, 0);
    assert_int_equal(audit.out_of_order, 0);
    assert_int_equal(audit.foreign, 1); /* sensor-0001 */
    tg_gw_audit_free(&audit);

    /* The known vector: sensor-0001 lands where the Java client puts it, computed with the
     * partition count the cluster really has (12 in devkafka, 6 on the real broker), so that
     * a partitioner that ignored the count could not pass on both tiers. */
    int partitions = tg_gw_consumer_partitions(c);
    assert_int_equal(partitions, tg_gw_telemetry_partitions(gw));
    int expected = tg_gw_java_partition(KNOWN_KEY, partitions);
    int found = 0;
    for (size_t i = 0; i < tg_gw_consumer_count(c); i++) {
        const struct tg_gw_record *rec = tg_gw_consumer_record(c, i);
        if (!rec->key || strcmp(rec->key, KNOWN_KEY) != 0)
            continue;
        found++;
        fprintf(stderr, "%s: murmur2 %d -> partition %d of %d; Kafka: partition %d, %.*s\n",
                KNOWN_KEY, tg_gw_java_murmur2(KNOWN_KEY, strlen(KNOWN_KEY)), expected,
                partitions, rec->partition, (int)rec->value_len, (const char *)rec->value);
        assert_int_equal(rec->partition, expected);
        assert_true(rec->canonical);
        assert_string_equal(rec->device, KNOWN_KEY);
        assert_int_equal(rec->boot, 1);
        assert_int_equal(rec->seq, 1);
        assert_true(rec->has_temp && rec->temp == 21.5);
        assert_int_equal(rec->timestamp, rec->ts);
        assert_true(rec->gw_ts >= rec->ts - 60000); /* gateway time, near the device's */
        assert_string_equal(tg_gw_record_header(rec, "content-type"), "application/json");
        assert_non_null(tg_gw_record_header(rec, "schema-version"));
    }
    assert_int_equal(found, 1);
    tg_gw_consumer_destroy(c);

    /* SIGTERM: a clean stop. */
    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(murmur2_vectors),
        cmocka_unit_test_teardown(exactly_once_in_order_on_murmur2_partition, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
