/*
 * test_audit.c - the comparison behind `tidegate-sim audit` (sim/audit.h) on synthetic input:
 * a ledger built in memory, records fed as the Kafka consumer would, and the verdicts a user
 * reads: lost, duplicated, reordered, unexpected, unconfirmed, dead letters, latency, and the
 * JSON and text reports.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "ledger.h"

#define T0 1763712000000LL

/* devices x seqs released (boot 1), ids sim-00001... */
static struct tg_ledger *ledger_released(int devices, uint64_t seqs)
{
    struct tg_ledger *lg = tg_ledger_new();
    assert_non_null(lg);
    for (int d = 0; d < devices; d++) {
        char id[32];
        snprintf(id, sizeof id, "sim-%05d", d + 1);
        assert_int_equal(tg_ledger_add_device(lg, id), d);
        assert_int_equal(tg_ledger_connected(lg, d), 0);
        for (uint64_t s = 0; s < seqs; s++) {
            assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_TAKEN, 1, s), 0);
            assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_RELEASED, 1, s), 0);
        }
    }
    return lg;
}

static void feed(struct tg_sim_audit *au, const char *device, uint64_t boot, uint64_t seq,
                 int32_t partition, int64_t latency_ms)
{
    struct tg_sim_audit_rec rec = {
        .device = device, .boot = boot, .seq = seq, .partition = partition,
        .ts_ms = T0 + (int64_t)seq * 1000,
        .gw_ts_ms = T0 + (int64_t)seq * 1000 + latency_ms / 2,
        .end_ms = latency_ms < 0 ? -1 : T0 + (int64_t)seq * 1000 + latency_ms,
    };
    assert_int_equal(tg_sim_audit_telemetry(au, &rec), 0);
}

static void feed_all(struct tg_sim_audit *au, int devices, uint64_t seqs)
{
    for (uint64_t s = 0; s < seqs; s++)
        for (int d = 0; d < devices; d++) {
            char id[32];
            snprintf(id, sizeof id, "sim-%05d", d + 1);
            feed(au, id, 1, s, d % 4, 20);
        }
}

static void everything_once_passes(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(50, 40);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_non_null(au);
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), -1);
    feed_all(au, 50, 39);
    assert_false(tg_sim_audit_complete(au));
    feed_all(au, 50, 40); /* the first 39 seqs again: duplicates */
    assert_true(tg_sim_audit_complete(au));
    tg_sim_audit_destroy(au);

    au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    feed_all(au, 50, 40);
    assert_true(tg_sim_audit_complete(au));
    assert_int_equal(tg_sim_audit_records(au), 2000);
    struct tg_sim_audit_result r;
    assert_int_equal(tg_sim_audit_finish(au, &r), 0);
    assert_int_equal(tg_sim_audit_finish(au, &r), -1);
    assert_true(r.ok);
    assert_int_equal(r.records, 2000);
    assert_int_equal(r.delivered, 2000);
    assert_int_equal(r.lost, 0);
    assert_int_equal(r.duplicated, 0);
    assert_int_equal(r.reordered, 0);
    assert_int_equal(r.unexpected, 0);
    assert_int_equal(r.problem_devices, 0);
    assert_int_equal(r.latency_samples, 2000);
    assert_true(r.latency_p50_ms == 20 && r.latency_max_ms == 20);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

static void lost_duplicated_reordered_unexpected(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(3, 10);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    /* sim-00001: 3 and 7-8 lost. sim-00002: 4 twice, 6 before 5 on one partition (reordered),
     * then 9 on another partition before 8 (not reordered: no order across partitions).
     * sim-00003: complete, plus seq 10 and boot 2 that were never taken. A foreign device. */
    for (uint64_t s = 0; s < 10; s++)
        if (s != 3 && s != 7 && s != 8)
            feed(au, "sim-00001", 1, s, 0, 10);
    static const uint64_t order2[] = {0, 1, 2, 3, 4, 4, 6, 5, 7};
    for (size_t i = 0; i < sizeof order2 / sizeof order2[0]; i++)
        feed(au, "sim-00002", 1, order2[i], 1, 10);
    feed(au, "sim-00002", 1, 9, 2, 10);
    feed(au, "sim-00002", 1, 8, 1, 10);
    for (uint64_t s = 0; s < 10; s++)
        feed(au, "sim-00003", 1, s, 2, 10);
    feed(au, "sim-00003", 1, 10, 2, 10);
    feed(au, "sim-00003", 2, 0, 2, 10);
    feed(au, "stranger", 1, 0, 3, 10);
    feed(au, "stranger", 1, 0, 3, 10);
    /* A seq far beyond any bitmap, twice. */
    feed(au, "sim-00003", 1, UINT64_C(1) << 40, 2, 10);
    feed(au, "sim-00003", 1, UINT64_C(1) << 40, 2, 10);
    tg_sim_audit_undecodable(au);
    assert_false(tg_sim_audit_complete(au));

    struct tg_sim_audit_result r;
    assert_int_equal(tg_sim_audit_finish(au, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.delivered, 27);
    assert_int_equal(r.lost, 3);
    assert_int_equal(r.duplicated, 2);  /* sim-00002's 4, the huge seq (not the stranger's) */
    assert_int_equal(r.reordered, 1);
    assert_int_equal(r.unexpected, 3);  /* seq 10, boot 2, the huge seq */
    assert_int_equal(r.foreign, 2);     /* the stranger's two records */
    assert_int_equal(r.foreign_devices, 1);
    assert_int_equal(r.undecodable, 1);
    assert_int_equal(r.problem_devices, 3);

    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    struct tg_sim_audit_context ctx = {.topic = "telemetry", .ledger_path = "L",
                                       .partitions = 4, .stopped = "timeout", .elapsed_s = 1};
    tg_sim_audit_print_text(au, &ctx, 2, out);
    fclose(out);
    assert_non_null(strstr(text, "lost:         3\n"));
    assert_non_null(strstr(text, "problem devices: 3 (first 2 shown)"));
    assert_non_null(strstr(text, "sim-00001            lost 3 (boot:seq 1:3,1:7-8)"));
    assert_non_null(strstr(text, "RESULT: FAIL"));
    assert_null(strstr(text, "stranger"));
    free(text);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* One device's released readings arriving in a given order, one partition, and the verdict:
 * each of lost, duplicated and reordered alone fails the audit, and the design promises
 * per-device order, so a reading behind a later one fails the run (issue 10). */
static void verdict_by_arrival_order(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        uint64_t released;     /* seqs 0 .. released-1 of sim-00001 */
        uint64_t arrived[8];   /* seqs in the order they reach Kafka */
        size_t n_arrived;
        bool ok;
        uint64_t lost, duplicated, reordered;
    } cases[] = {
        {"all, once, in order", 4, {0, 1, 2, 3}, 4, true, 0, 0, 0},
        {"a duplicate alone, a late copy (not also reordered)", 5, {0, 1, 2, 3, 4, 2}, 6,
         false, 0, 1, 0},
        {"one behind a later one", 4, {0, 2, 1, 3}, 4, false, 0, 0, 1},
        {"one lost", 4, {0, 1, 3}, 3, false, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tg_ledger *lg = ledger_released(1, cases[i].released);
        struct tg_sim_audit *au = tg_sim_audit_new();
        assert_non_null(au);
        assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
        for (size_t k = 0; k < cases[i].n_arrived; k++)
            feed(au, "sim-00001", 1, cases[i].arrived[k], 0, 10);
        struct tg_sim_audit_result r;
        assert_int_equal(tg_sim_audit_finish(au, &r), 0);
        if (r.ok != cases[i].ok || r.lost != cases[i].lost ||
            r.duplicated != cases[i].duplicated || r.reordered != cases[i].reordered)
            fail_msg("%s: ok %d lost %" PRIu64 " duplicated %" PRIu64 " reordered %" PRIu64
                     ", expected %d %" PRIu64 " %" PRIu64 " %" PRIu64, cases[i].what, r.ok,
                     r.lost, r.duplicated, r.reordered, cases[i].ok, cases[i].lost,
                     cases[i].duplicated, cases[i].reordered);
        tg_sim_audit_destroy(au);
        tg_ledger_destroy(lg);
    }
}

static void unconfirmed_and_dropped_do_not_fail(void **state)
{
    (void)state;
    struct tg_ledger *lg = tg_ledger_new();
    int d = tg_ledger_add_device(lg, "sim-00001");
    assert_int_equal(tg_ledger_connected(lg, d), 0);
    for (uint64_t s = 0; s < 10; s++)
        assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_TAKEN, 1, s), 0);
    for (uint64_t s = 2; s < 7; s++)
        assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_RELEASED, 1, s), 0);
    /* 0, 1 dropped on the device; 7, 8, 9 unconfirmed at the end of the run. */
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_DROPPED, 1, 0), 0);
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_DROPPED, 1, 1), 0);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    for (uint64_t s = 1; s < 9; s++)
        feed(au, "sim-00001", 1, s, 0, 10);
    assert_true(tg_sim_audit_complete(au));
    struct tg_sim_audit_result r;
    assert_int_equal(tg_sim_audit_finish(au, &r), 0);
    assert_true(r.ok);
    assert_int_equal(r.delivered, 5);
    assert_int_equal(r.unconfirmed_arrived, 2);
    assert_int_equal(r.unconfirmed_missing, 1);
    assert_int_equal(r.dropped_arrived, 1);
    assert_int_equal(r.unexpected, 0);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

static void dead_letters_against_the_malformed_count(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(2, 5);
    assert_int_equal(tg_ledger_malformed(lg, 0, 0xA1), 0);
    assert_int_equal(tg_ledger_malformed(lg, 0, 0xA2), 0);
    assert_int_equal(tg_ledger_malformed(lg, 1, 0xB1), 0);
    assert_int_equal(tg_ledger_skewed(lg, 1, 1, 4), 0);
    struct tg_sim_audit *au = tg_sim_audit_new();
    tg_sim_audit_expect_dlq(au, true);
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    /* Everything but sim-00002's seq 4, which the gateway dead-lettered (clock skew). */
    feed_all(au, 1, 5);
    for (uint64_t s = 0; s < 4; s++)
        feed(au, "sim-00002", 1, s, 1, 10);
    assert_int_equal(tg_sim_audit_dlq(au, "malformed", "sim-00001", false, 0, 0, 0xA1), 0);
    assert_int_equal(tg_sim_audit_dlq(au, "wrong_type", "sim-00001", false, 0, 0, 0xA2), 0);
    assert_false(tg_sim_audit_complete(au));
    assert_int_equal(tg_sim_audit_dlq(au, "clock_skew", "sim-00002", true, 1, 4, 0), 0);
    assert_false(tg_sim_audit_complete(au)); /* one malformed payload still missing */

    struct tg_sim_audit *au2 = tg_sim_audit_new();
    tg_sim_audit_expect_dlq(au2, true);
    assert_int_equal(tg_sim_audit_set_ledger(au2, lg), 0);
    struct tg_sim_audit_result r;
    assert_int_equal(tg_sim_audit_finish(au, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.lost, 0);
    assert_int_equal(r.dead_lettered, 1);
    assert_int_equal(r.dlq_records, 3);
    assert_int_equal(r.dlq_malformed, 2);
    assert_int_equal(r.dlq_readings, 1);
    assert_int_equal(r.dlq_missing, 1);

    /* The same with the third malformed payload: complete and passing. */
    feed_all(au2, 2, 5);
    assert_int_equal(tg_sim_audit_dlq(au2, NULL, "sim-00001", false, 0, 0, 0xA1), 0);
    assert_int_equal(tg_sim_audit_dlq(au2, "malformed", "sim-00001", false, 0, 0, 0xA2), 0);
    assert_false(tg_sim_audit_complete(au2));
    assert_int_equal(tg_sim_audit_dlq(au2, "malformed", "sim-00002", false, 0, 0, 0xB1), 0);
    assert_true(tg_sim_audit_complete(au2));
    assert_int_equal(tg_sim_audit_finish(au2, &r), 0);
    assert_true(r.ok);
    assert_int_equal(r.dlq_malformed, 3);

    char *json = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&json, &len);
    struct tg_sim_audit_context ctx = {.topic = "telemetry", .dlq_topic = "telemetry.dlq",
                                       .ledger_path = "L", .partitions = 12,
                                       .stopped = "complete", .elapsed_s = 2.5};
    assert_int_equal(tg_sim_audit_print_json(au2, &ctx, 20, out), 0);
    fclose(out);
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root)
        fail_msg("%s: %s", jerr.text, json);
    assert_true(json_is_true(json_object_get(root, "ok")));
    assert_int_equal(json_integer_value(json_object_get(root, "lost")), 0);
    assert_int_equal(json_integer_value(json_object_get(root, "delivered")), 10);
    json_t *dlq = json_object_get(root, "dlq");
    assert_int_equal(json_integer_value(json_object_get(dlq, "records")), 3);
    assert_int_equal(json_integer_value(json_object_get(dlq, "malformed_expected")), 3);
    json_t *reasons = json_object_get(dlq, "by_reason");
    assert_int_equal(json_integer_value(json_object_get(reasons, "malformed")), 2);
    assert_int_equal(json_integer_value(json_object_get(reasons, "(none)")), 1);
    assert_int_equal(json_integer_value(
                         json_object_get(json_object_get(root, "expected"), "released")),
                     10);
    assert_string_equal(json_string_value(json_object_get(root, "dlq_topic")), "telemetry.dlq");
    assert_int_equal(json_array_size(json_object_get(root, "devices")), 0);
    json_decref(root);
    free(json);
    tg_sim_audit_destroy(au2);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* --follow: records come before the ledger exists. */
static void records_before_the_ledger(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(4, 6);
    struct tg_sim_audit *au = tg_sim_audit_new();
    feed_all(au, 4, 6);
    feed(au, "other-1", 1, 6, 0, 10); /* a device of another fleet */
    assert_int_equal(tg_sim_audit_dlq(au, "clock_skew", "sim-00004", true, 1, 0, 0), 0);
    assert_false(tg_sim_audit_complete(au));
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    assert_true(tg_sim_audit_complete(au));
    struct tg_sim_audit_result r;
    assert_int_equal(tg_sim_audit_finish(au, &r), 0);
    assert_true(r.ok);
    assert_int_equal(r.delivered, 24);
    assert_int_equal(r.unexpected, 0);
    assert_int_equal(r.foreign, 1);
    assert_int_equal(r.dead_lettered, 0); /* it was delivered as well */
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* Three devices x 5 released seqs; sim-00002's 4 and sim-00003's 4 never arrive. */
static void feed_dead_letter_copies(struct tg_sim_audit *au)
{
    /* Dead-lettered first, delivered after (a later copy passed validation): counts once. */
    assert_int_equal(tg_sim_audit_dlq(au, "clock_skew", "sim-00003", true, 1, 0, 0), 0);
    for (uint64_t s = 0; s < 5; s++)
        feed(au, "sim-00001", 1, s, 0, 10);
    for (uint64_t s = 0; s < 3; s++)
        feed(au, "sim-00002", 1, s, 1, 10);
    for (uint64_t s = 0; s < 4; s++)
        feed(au, "sim-00003", 1, s, 2, 10);
    /* The gateway validates before it deduplicates: a rejected reading re-sent (QoS 1, an
     * injected duplicate) is dead-lettered once per copy. */
    assert_int_equal(tg_sim_audit_dlq(au, "clock_skew", "sim-00002", true, 1, 3, 0), 0);
    assert_int_equal(tg_sim_audit_dlq(au, "clock_skew", "sim-00002", true, 1, 3, 0), 0);
    /* Delivered, and one copy dead-lettered as well. */
    assert_int_equal(tg_sim_audit_dlq(au, "clock_skew", "sim-00001", true, 1, 0, 0), 0);
}

/* Completeness counts each released reading once, however many DLQ copies it has: otherwise
 * the audit stops early and reports the readings still on their way as lost. */
static void dead_letter_copies_count_once(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(3, 5);
    assert_int_equal(tg_ledger_skewed(lg, 1, 1, 3), 0); /* the one that stays in the DLQ */
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_non_null(au);
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    feed_dead_letter_copies(au);
    assert_false(tg_sim_audit_complete(au));
    feed(au, "sim-00002", 1, 4, 1, 10);
    assert_false(tg_sim_audit_complete(au));

    /* The same records before the ledger (--follow). */
    struct tg_sim_audit *au2 = tg_sim_audit_new();
    assert_non_null(au2);
    feed_dead_letter_copies(au2);
    feed(au2, "sim-00002", 1, 4, 1, 10);
    assert_int_equal(tg_sim_audit_set_ledger(au2, lg), 0);
    assert_false(tg_sim_audit_complete(au2));

    feed(au, "sim-00003", 1, 4, 2, 10);
    assert_true(tg_sim_audit_complete(au));
    feed(au2, "sim-00003", 1, 4, 2, 10);
    assert_true(tg_sim_audit_complete(au2));
    struct tg_sim_audit_result r;
    assert_int_equal(tg_sim_audit_finish(au, &r), 0);
    assert_true(r.ok);
    assert_int_equal(r.delivered, 14);
    assert_int_equal(r.dead_lettered, 1);
    assert_int_equal(r.lost, 0);
    assert_int_equal(r.dlq_readings, 4);
    assert_int_equal(tg_sim_audit_finish(au2, &r), 0);
    assert_true(r.ok);
    assert_int_equal(r.delivered, 14);
    assert_int_equal(r.dead_lettered, 1);
    tg_sim_audit_destroy(au2);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

static void latency_percentiles_leave_out_skewed_devices(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(2, 100);
    for (uint64_t s = 0; s < 100; s++)
        assert_int_equal(tg_ledger_skewed(lg, 1, 1, s), 0);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    /* sim-00001: latencies 1..100 ms in a shuffled order; sim-00002 (skewed): an hour. */
    for (uint64_t s = 0; s < 100; s++) {
        feed(au, "sim-00001", 1, s, 0, (int64_t)((s * 37) % 100) + 1);
        feed(au, "sim-00002", 1, s, 1, 3600000);
    }
    /* A record read from a backlog has no latency. */
    tg_sim_audit_backlog_record(au);
    struct tg_sim_audit_result r;
    assert_int_equal(tg_sim_audit_finish(au, &r), 0);
    assert_int_equal(r.latency_samples, 100);
    assert_true(r.latency_p50_ms == 50);
    assert_true(r.latency_p90_ms == 90);
    assert_true(r.latency_p99_ms == 99);
    assert_true(r.latency_max_ms == 100);

    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    struct tg_sim_audit_context ctx = {.topic = "telemetry", .ledger_path = "L",
                                       .partitions = 12, .stopped = "complete"};
    tg_sim_audit_print_text(au, &ctx, 20, out);
    fclose(out);
    assert_non_null(strstr(text, "audit receipt"));
    assert_non_null(strstr(text, "p50 50 ms, p90 90 ms, p99 99 ms, max 100 ms (100 readings; "
                                 "1 read from a backlog left out)"));
    assert_non_null(strstr(text, "1 devices with a skewed clock left out"));
    assert_non_null(strstr(text, "RESULT: PASS"));
    assert_non_null(strstr(text, "dlq:          not read"));
    free(text);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* A device of the ledger that delivered nothing at all is reported, with its lost ranges. */
static void a_silent_device_is_all_lost(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(2, 8);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    feed_all(au, 1, 8);
    tg_sim_audit_offset_gap(au, 3, 5);
    struct tg_sim_audit_result r;
    assert_int_equal(tg_sim_audit_finish(au, &r), 0);
    assert_int_equal(r.lost, 8);
    assert_int_equal(r.offset_gaps, 5);
    assert_int_equal(r.latency_samples, 8);
    char *json = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&json, &len);
    struct tg_sim_audit_context ctx = {.topic = "t", .ledger_path = "L", .stopped = "timeout"};
    assert_int_equal(tg_sim_audit_print_json(au, &ctx, 20, out), 0);
    fclose(out);
    json_t *root = json_loads(json, 0, NULL);
    assert_non_null(root);
    assert_true(json_is_false(json_object_get(root, "ok")));
    assert_true(json_is_null(json_object_get(root, "dlq_topic")));
    json_t *dev = json_array_get(json_object_get(root, "devices"), 0);
    assert_string_equal(json_string_value(json_object_get(dev, "device")), "sim-00002");
    json_t *range = json_array_get(json_object_get(dev, "lost_ranges"), 0);
    assert_int_equal(json_integer_value(json_object_get(range, "from")), 0);
    assert_int_equal(json_integer_value(json_object_get(range, "to")), 7);
    assert_int_equal(json_integer_value(json_object_get(dev, "lost")), 8);
    assert_int_equal(json_integer_value(json_object_get(dev, "rejected")), 0);
    assert_int_equal(json_integer_value(json_object_get(dev, "dlq_missing")), 0);
    assert_int_equal(json_integer_value(json_object_get(root, "offset_gaps")), 5);
    json_decref(root);
    free(json);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* ------------------------------------------------------------------------------------------
 * The audit must not pass by accident (issue 10): each of these passed before.
 */

static bool finish_ok(struct tg_sim_audit *au, struct tg_sim_audit_result *r)
{
    assert_int_equal(tg_sim_audit_finish(au, r), 0);
    return r->ok;
}

/* A ledger that released nothing proves nothing: 0 of 0 is not a pass. */
static void nothing_released_fails(void **state)
{
    (void)state;
    struct tg_ledger *lg = tg_ledger_new();
    assert_int_equal(tg_ledger_add_device(lg, "sim-00001"), 0);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    struct tg_sim_audit_result r;
    assert_false(finish_ok(au, &r));
    assert_int_equal(r.delivered, 0);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);

    /* an empty fleet as well */
    lg = tg_ledger_new();
    au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    assert_false(finish_ok(au, &r));
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* Released readings found only in the DLQ, with no fault injected on them, are lost: here
 * 10 readings rejected as bad_signature. */
static void dead_letters_without_a_fault_are_lost(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(1, 20);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    for (uint64_t s = 0; s < 10; s++)
        feed(au, "sim-00001", 1, s, 0, 10);
    for (uint64_t s = 10; s < 20; s++)
        assert_int_equal(tg_sim_audit_dlq(au, "bad_signature", "sim-00001", true, 1, s, 0), 0);
    struct tg_sim_audit_result r;
    assert_false(finish_ok(au, &r));
    assert_int_equal(r.lost, 10);
    assert_int_equal(r.dead_lettered, 0);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* Extra malformed dead letters of one device cannot stand in for the missing ones of
 * another. */
static void dlq_is_compared_per_device_not_by_count(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(2, 3);
    assert_int_equal(tg_ledger_malformed(lg, 0, 0xA1), 0);
    assert_int_equal(tg_ledger_malformed(lg, 0, 0xA2), 0);
    struct tg_sim_audit *au = tg_sim_audit_new();
    tg_sim_audit_expect_dlq(au, true);
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    feed_all(au, 2, 3);
    /* sim-00001 published two malformed payloads; the DLQ holds two, both from sim-00002 */
    assert_int_equal(tg_sim_audit_dlq(au, "malformed", "sim-00002", false, 0, 0, 0xA1), 0);
    assert_int_equal(tg_sim_audit_dlq(au, "malformed", "sim-00002", false, 0, 0, 0xA2), 0);
    assert_false(tg_sim_audit_complete(au));
    struct tg_sim_audit_result r;
    assert_false(finish_ok(au, &r));
    assert_int_equal(r.dlq_missing, 2);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* Durable acks: a node sends a reading again when its ack does not come, so a reading lost
 * on the way reaches the gateway after newer ones. The gateway kept the order it was given:
 * that is a resend, reported, not reordering. The same late arrival with an earlier receive
 * time at the gateway is reordering (verdict_by_arrival_order). */
static void a_resend_is_not_reordering(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(1, 6);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    feed(au, "sim-00001", 1, 0, 0, 10);
    feed(au, "sim-00001", 1, 2, 0, 10);
    /* seq 1 again, received 5 s after seq 2 */
    struct tg_sim_audit_rec rec = {.device = "sim-00001", .boot = 1, .seq = 1, .partition = 0,
                                   .ts_ms = T0 + 1000, .gw_ts_ms = T0 + 7000, .end_ms = -1};
    assert_int_equal(tg_sim_audit_telemetry(au, &rec), 0);
    feed(au, "sim-00001", 1, 5, 0, 10);
    /* seq 3 and 4 resent in the same millisecond as seq 5 arrived: a burst */
    for (uint64_t s = 3; s <= 4; s++) {
        rec.seq = s;
        rec.ts_ms = T0 + (int64_t)s * 1000;
        rec.gw_ts_ms = T0 + 5000 + 5; /* feed()'s gw_ts of seq 5 */
        assert_int_equal(tg_sim_audit_telemetry(au, &rec), 0);
    }
    struct tg_sim_audit_result r;
    assert_true(finish_ok(au, &r));
    assert_int_equal(r.reordered, 0);
    assert_int_equal(r.resent, 3);
    assert_int_equal(r.lost, 0);
    assert_int_equal(r.duplicated, 0);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* A run whose devices never reached the broker proves nothing either. */
static void no_device_connected_fails(void **state)
{
    (void)state;
    struct tg_ledger *lg = tg_ledger_new();
    assert_int_equal(tg_ledger_add_device(lg, "sim-00001"), 0);
    assert_int_equal(tg_ledger_reading(lg, 0, TG_NODE_EV_TAKEN, 1, 0), 0);
    assert_int_equal(tg_ledger_reading(lg, 0, TG_NODE_EV_RELEASED, 1, 0), 0);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    feed(au, "sim-00001", 1, 0, 0, 10);
    struct tg_sim_audit_result r;
    assert_false(finish_ok(au, &r));
    assert_true(r.none_connected);
    assert_int_equal(r.never_connected, 1);
    assert_int_equal(r.lost, 0);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* A second run of the same fleet: its devices boot at 2. The first run's records (boot 1)
 * are an earlier run's: neither this run's deliveries nor duplicates of them. */
static struct tg_ledger *ledger_second_run(void)
{
    struct tg_ledger *lg = tg_ledger_new();
    assert_int_equal(tg_ledger_add_device(lg, "sim-00001"), 0);
    assert_int_equal(tg_ledger_connected(lg, 0), 0);
    assert_int_equal(tg_ledger_set_boot(lg, 0, 2), 0);
    for (uint64_t s = 0; s < 5; s++) {
        assert_int_equal(tg_ledger_reading(lg, 0, TG_NODE_EV_TAKEN, 2, s), 0);
        assert_int_equal(tg_ledger_reading(lg, 0, TG_NODE_EV_RELEASED, 2, s), 0);
    }
    return lg;
}

static void an_earlier_run_is_not_this_one(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_second_run();
    struct tg_sim_audit_result r;
    /* only the first run's records: everything of this run is lost */
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    for (uint64_t s = 0; s < 5; s++)
        feed(au, "sim-00001", 1, s, 0, 10);
    assert_false(tg_sim_audit_complete(au));
    assert_false(finish_ok(au, &r));
    assert_int_equal(r.lost, 5);
    assert_int_equal(r.other_runs, 5);
    assert_int_equal(r.unexpected, 0);
    tg_sim_audit_destroy(au);
    /* both runs' records, the first one's read before the ledger (--follow), twice */
    au = tg_sim_audit_new();
    for (int copy = 0; copy < 2; copy++)
        for (uint64_t s = 0; s < 5; s++)
            feed(au, "sim-00001", 1, s, 0, 10);
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    for (uint64_t s = 0; s < 5; s++)
        feed(au, "sim-00001", 2, s, 0, 10);
    feed(au, "sim-00001", 3, 0, 0, 10); /* a later run's, when an older ledger is audited */
    assert_true(tg_sim_audit_complete(au));
    assert_true(finish_ok(au, &r));
    assert_int_equal(r.delivered, 5);
    assert_int_equal(r.other_runs, 11);
    assert_int_equal(r.unexpected, 0);
    assert_int_equal(r.duplicated, 0);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* The same boot again (the simulator's state was lost): the gateway's receive time tells
 * the earlier run's records apart. */
static void records_received_before_the_run_are_an_earlier_runs(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(1, 3);
    tg_ledger_set_run(lg, T0 + 100000, T0 + 200000);
    struct tg_sim_audit *au = tg_sim_audit_new();
    tg_sim_audit_clock_slack(au, 1000);
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    for (uint64_t s = 0; s < 3; s++) /* gw_ts = T0 + s s + 5 ms: long before the run */
        feed(au, "sim-00001", 1, s, 0, 10);
    struct tg_sim_audit_rec rec = {.device = "sim-00001", .boot = 1, .seq = 0, .ts_ms = T0,
                                   .gw_ts_ms = T0 + 99500, .end_ms = -1};
    assert_int_equal(tg_sim_audit_telemetry(au, &rec), 0); /* within the slack: this run's */
    struct tg_sim_audit_result r;
    assert_false(finish_ok(au, &r));
    assert_int_equal(r.other_runs, 3);
    assert_int_equal(r.delivered, 1);
    assert_int_equal(r.lost, 2);
    assert_int_equal(r.duplicated, 0);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

/* A dead letter is excused only by the fault injected on that very reading, with the
 * rejection that fault causes. */
static void a_dead_letter_needs_its_own_fault(void **state)
{
    (void)state;
    struct tg_ledger *lg = ledger_released(2, 4);
    assert_int_equal(tg_ledger_skewed(lg, 0, 1, 3), 0);
    assert_int_equal(tg_ledger_skewed(lg, 1, 1, 2), 0);
    struct tg_sim_audit *au = tg_sim_audit_new();
    assert_int_equal(tg_sim_audit_set_ledger(au, lg), 0);
    for (uint64_t s = 0; s < 3; s++) {
        feed(au, "sim-00001", 1, s, 0, 10);
        if (s != 2)
            feed(au, "sim-00002", 1, s, 1, 10);
    }
    /* sim-00001's 3: skewed and rejected for its clock: excused */
    assert_int_equal(tg_sim_audit_dlq(au, "clock_skew", "sim-00001", true, 1, 3, 0), 0);
    /* sim-00002's 2: skewed, but rejected for its signature: lost */
    assert_int_equal(tg_sim_audit_dlq(au, "bad_signature", "sim-00002", true, 1, 2, 0), 0);
    /* sim-00002's 3: rejected for its clock, but no fault on it: lost */
    assert_int_equal(tg_sim_audit_dlq(au, "clock_skew", "sim-00002", true, 1, 3, 0), 0);
    assert_true(tg_sim_audit_complete(au));
    struct tg_sim_audit_result r;
    assert_false(finish_ok(au, &r));
    assert_int_equal(r.dead_lettered, 1);
    assert_int_equal(r.lost, 2);
    assert_int_equal(r.rejected, 2);
    tg_sim_audit_destroy(au);
    tg_ledger_destroy(lg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(everything_once_passes),
        cmocka_unit_test(lost_duplicated_reordered_unexpected),
        cmocka_unit_test(verdict_by_arrival_order),
        cmocka_unit_test(unconfirmed_and_dropped_do_not_fail),
        cmocka_unit_test(dead_letters_against_the_malformed_count),
        cmocka_unit_test(records_before_the_ledger),
        cmocka_unit_test(dead_letter_copies_count_once),
        cmocka_unit_test(latency_percentiles_leave_out_skewed_devices),
        cmocka_unit_test(a_silent_device_is_all_lost),
        cmocka_unit_test(nothing_released_fails),
        cmocka_unit_test(dead_letters_without_a_fault_are_lost),
        cmocka_unit_test(dlq_is_compared_per_device_not_by_count),
        cmocka_unit_test(a_resend_is_not_reordering),
        cmocka_unit_test(no_device_connected_fails),
        cmocka_unit_test(an_earlier_run_is_not_this_one),
        cmocka_unit_test(records_received_before_the_run_are_an_earlier_runs),
        cmocka_unit_test(a_dead_letter_needs_its_own_fault),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
