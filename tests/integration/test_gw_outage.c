/*
 * test_gw_outage.c - guarantee: a Kafka outage loses nothing. While every broker is down the
 * gateway keeps taking readings into its journal (tidegate_journal_records rises,
 * tidegate_kafka_up goes 0, nothing is reported delivered); when the cluster returns the
 * backlog drains and every reading is in Kafka exactly once, in per-device order, and the
 * journal is empty again (copies only after librdkafka 2.0.2's fatal idempotence error, see
 * assert_outage_audit()).
 * Both Kafka tiers (gateway_fixture.h): with devkafka every broker stops listening; with the
 * real broker (test_gw_outage_real) its process is stopped with SIGTERM and started again.
 * On the real broker alone, a second case kills the broker process with SIGKILL under load:
 * nothing confirmed is lost, nothing is written twice (same exception).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_fixture.h"

#define DEVICES 100
#define SEQS 80
#define READINGS (DEVICES * SEQS)
#define RATE 1000          /* readings per second: the plan takes 8 s */
#define OUTAGE_AT 1500     /* readings published before the outage begins */
#define OUTAGE_UNTIL 5000  /* readings published before it ends */
#define WAIT_MS 60000

/* What Kafka must hold after an outage: every reading of the plan, none lost, foreign,
 * malformed, misplaced or out of order, and each once, with one documented exception.
 * librdkafka 2.0.2 (Debian 12's) can lose track of the idempotent producer's sequence when
 * the broker goes away with batches in flight and comes back (a "possibly persisted" batch
 * makes it expect the wrong next sequence: fixed upstream in 2.3.0, librdkafka PR #4438). The
 * broker then answers OUT_OF_ORDER_SEQUENCE_NUMBER, the producer fails fatally, and the gateway
 * starts a new one and sends every reading Kafka had not confirmed again: those the old
 * producer had already written are then in Kafka twice (README, "What it guarantees").
 * devkafka never shows this; the real broker does, in some runs of the SIGTERM outage. So
 * copies are accepted only when the gateway logged that fatal error, and are printed. */
static void assert_outage_audit(struct tg_gw *gw, const struct tg_gw_plan *plan,
                                const char *label)
{
    struct tg_gw_consumer *c = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_TOPIC);
    assert_non_null(c);
    size_t records = tg_gw_consumer_read(c, READINGS, WAIT_MS);
    struct tg_gw_audit audit;
    tg_gw_audit_run(c, plan, &audit);
    tg_gw_audit_print(label, &audit);
    int fatal = tg_gw_log_count(gw, "fatal producer error: starting a new producer");
    fprintf(stderr, "%s: %zu records for %d readings; %d duplicates; %d fatal producer "
            "error(s) in the gateway's log\n", label, records, READINGS, audit.duplicates,
            fatal);
    assert_int_equal(audit.distinct, READINGS);
    assert_int_equal(audit.missing, 0);
    assert_int_equal(audit.foreign, 0);
    assert_int_equal(audit.bad, 0);
    assert_int_equal(audit.misplaced, 0);
    assert_int_equal(audit.out_of_order, 0);
    if (fatal == 0)
        assert_int_equal(audit.duplicates, 0);
    assert_int_equal(records, (size_t)(READINGS + audit.duplicates));
    tg_gw_audit_free(&audit);
    tg_gw_consumer_destroy(c);
}

static void outage_loses_nothing(void **state)
{
    (void)state;
    struct tg_gw *gw = tg_gw_new(NULL);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "gw-test-pub");
    assert_non_null(pub);

    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_true(tg_gw_pub_wait_progress(pub, OUTAGE_AT, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GT, 0,
                                  WAIT_MS));

    /* Every broker down while the devices go on publishing. */
    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    int published_at_outage = tg_gw_pub_plan_progress(pub);
    int64_t outage_ms = tg_harness_now_ms();
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 0, 20000));
    fprintf(stderr, "kafka_up went 0 %lld ms after the outage began\n",
            (long long)(tg_harness_now_ms() - outage_ms));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_GT, 0, 20000));
    assert_true(tg_gw_pub_wait_progress(pub, OUTAGE_UNTIL, WAIT_MS));
    /* The backlog is in the journal and growing; nothing published since the outage began
     * can have been confirmed. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_GE,
                                  OUTAGE_UNTIL - published_at_outage, 20000));
    double backlog = tg_gw_metric(gw, "tidegate_journal_records", NULL);
    double oldest = tg_gw_metric(gw, "tidegate_journal_oldest_age_seconds", NULL);
    double delivered_during = tg_gw_metric(gw, "tidegate_messages_delivered_total", NULL);
    fprintf(stderr, "during the outage: journal_records %g, journal_bytes %g, oldest age %g s, "
            "delivered %g of %d published before it\n",
            backlog, tg_gw_metric(gw, "tidegate_journal_bytes", NULL), oldest,
            delivered_during, published_at_outage);
    assert_true(delivered_during <= published_at_outage);
    assert_true(oldest > 0);
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));

    /* The cluster returns while the devices are still publishing. */
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    int64_t back_ms = tg_harness_now_ms();
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  READINGS, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 1, WAIT_MS));
    fprintf(stderr, "backlog drained %lld ms after the cluster returned (%s tier)\n",
            (long long)(tg_harness_now_ms() - back_ms), tg_gw_kafka_tier_name(gw));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_received_total", NULL, TG_GW_EQ,
                                READINGS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ,
                                READINGS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));
    /* The age is refreshed at each commit, so it may trail journal_records by one interval. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_oldest_age_seconds", NULL, TG_GW_EQ, 0,
                                  5000));

    assert_outage_audit(gw, &plan, "outage");

    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

/* Real tier only: the broker process is killed with SIGKILL under load and started again.
 * Kafka has written every batch it acknowledged into its log file (the page cache keeps it
 * when only the process dies) and rebuilds the idempotent producer's state from the log, so
 * nothing confirmed may be lost and nothing written twice (but see assert_outage_audit()). devkafka keeps its data in its
 * process's memory, so a kill -9 there loses everything: this test has no dev-tier form, and
 * skips itself there. */
static void broker_kill9_loses_nothing(void **state)
{
    (void)state;
    const char *tier = getenv("TG_KAFKA_TIER");
    if (!tier || strcmp(tier, "real") != 0)
        skip();
    struct tg_gw *gw = tg_gw_new(NULL);
    assert_non_null(gw);
    struct tg_harness_kafka *kf = tg_gw_kafka(gw);
    assert_non_null(kf);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "gw-test-pub");
    assert_non_null(pub);

    const struct tg_gw_plan plan = {.prefix = "crash", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_true(tg_gw_pub_wait_progress(pub, OUTAGE_AT, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GT, 0,
                                  WAIT_MS));

    /* The broker dies mid-stream, with batches in flight. */
    assert_int_equal(tg_harness_kafka_kill9(kf), 0);
    double delivered_at_kill = tg_gw_metric(gw, "tidegate_messages_delivered_total", NULL);
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 0, 20000));
    assert_true(tg_gw_pub_wait_progress(pub, OUTAGE_UNTIL, WAIT_MS));
    int64_t t0 = tg_harness_now_ms();
    assert_int_equal(tg_harness_kafka_restart(kf), 0);
    fprintf(stderr, "broker killed after %g delivered; restarted (log recovery) in %lld ms\n",
            delivered_at_kill, (long long)(tg_harness_now_ms() - t0));

    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  READINGS, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));
    assert_outage_audit(gw, &plan, "broker kill -9");

    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(outage_loses_nothing, tg_gw_teardown),
        cmocka_unit_test_teardown(broker_kill9_loses_nothing, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
