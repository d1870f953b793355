/*
 * test_chaos_broker_restart.c - the brokers on both sides go away and come back under a
 * steady load: the Kafka cluster down and up again (devkafka: every broker stops listening;
 * real tier: the broker process stopped and started, tg_gw_kafka_outage_begin()), Mosquitto
 * (with persistence) restarted, then both at once, with seeded gaps and down times.
 *
 * What the README promises: a Kafka outage loses nothing (the journal holds the backlog and
 * drains it oldest first, per-device order kept); a Mosquitto restart loses nothing (the
 * gateway's persistent session and QoS1: the broker keeps what it had not delivered, and
 * redeliveries are removed by (device, boot, seq)). So Kafka must end up with every reading
 * exactly once, in per-device order. The test prints how long the gateway took to see each
 * broker again and to drain the backlog.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "chaos.h"

#define DEVICES 100
#define RATE 2000                /* readings per second */
#define SEQS 400                 /* 40,000 readings: the plan takes 20 s */
#define READINGS (DEVICES * SEQS)
#define GAP_MIN_MS 1000          /* load between two faults */
#define GAP_MAX_MS 2500
#define DOWN_MIN_MS 1000         /* how long a broker stays away */
#define DOWN_MAX_MS 3000
#define WAIT_MS 30000
#define DEFAULT_SEED 7u

enum fault { KAFKA, MQTT, BOTH };
static const char *const fault_names[] = {"kafka cluster down/up", "mosquitto restart",
                                          "both at once"};

struct figures {
    struct tg_gw *gw;
    int64_t kafka_back_ms;       /* brokers up -> tidegate_kafka_up 1 */
    int64_t mqtt_back_ms;        /* mosquitto running -> gateway subscribed again */
    double backlog_peak;         /* tidegate_journal_records at the end of the fault */
};

static void sample_backlog(void *ud)
{
    struct figures *fig = ud;
    double held = tg_gw_metric(fig->gw, "tidegate_journal_records", NULL);
    if (held > fig->backlog_peak)
        fig->backlog_peak = held;
}

static void fault_cycle(struct tg_gw *gw, enum fault f, int down_ms, struct figures *fig)
{
    struct tg_harness_mosquitto *mq = tg_gw_mosquitto(gw);
    fig->kafka_back_ms = fig->mqtt_back_ms = -1;
    if (f != MQTT) {
        assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
        assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 0, 20000));
    }
    if (f != KAFKA) {
        assert_int_equal(tg_harness_mosquitto_stop(mq), 0);
    }
    fig->gw = gw;
    tg_chaos_pause_until(tg_harness_now_ms() + down_ms, sample_backlog, fig);
    if (f != KAFKA) {
        assert_int_equal(tg_harness_mosquitto_restart(mq), 0);
        int64_t t0 = tg_harness_now_ms();
        assert_true(tg_gw_wait_metric(gw, "tidegate_mqtt_connections", NULL, TG_GW_EQ, 1,
                                      WAIT_MS));
        fig->mqtt_back_ms = tg_harness_now_ms() - t0;
    }
    if (f != MQTT) {
        assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
        int64_t t0 = tg_harness_now_ms();
        assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 1, WAIT_MS));
        fig->kafka_back_ms = tg_harness_now_ms() - t0;
    }
}

static void broker_restarts(void **state)
{
    (void)state;
    struct tg_chaos_rand rnd;
    tg_chaos_rand_init(&rnd, DEFAULT_SEED, "broker restart");
    const struct tg_gw_opts opts = {.mqtt_flags = TG_HARNESS_MQTT_PERSISTENCE};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "chaos-pub");
    assert_non_null(pub);
    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);

    static const enum fault order[] = {KAFKA, MQTT, BOTH};
    struct figures fig[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        int gap = tg_chaos_rand_range(&rnd, GAP_MIN_MS, GAP_MAX_MS);
        int down = tg_chaos_rand_range(&rnd, DOWN_MIN_MS, DOWN_MAX_MS);
        tg_chaos_pause_until(tg_harness_now_ms() + gap, NULL, NULL);
        fprintf(stderr, "%s for %d ms after %d readings published\n", fault_names[order[i]],
                down, tg_gw_pub_plan_progress(pub));
        fault_cycle(gw, order[i], down, &fig[i]);
    }

    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    int64_t t0 = tg_harness_now_ms();
    if (!tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE, READINGS,
                           WAIT_MS))
        fprintf(stderr, "not every reading delivered within %d ms; the audit says which\n",
                WAIT_MS);
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    int64_t drained_ms = tg_harness_now_ms() - t0;

    struct tg_gw_audit audit;
    struct tg_gw_consumer *c = tg_chaos_audit(gw, &plan, READINGS, WAIT_MS, &audit);
    assert_non_null(c);
    tg_gw_audit_print("broker restart", &audit);
    double dups_dropped = tg_gw_metric(gw, "tidegate_messages_duplicate_total", NULL);
    for (int i = 0; i < 3; i++)
        fprintf(stderr, "%s: gateway subscribed again %lld ms after Mosquitto was up, Kafka "
                "seen %lld ms after the brokers were up (-1: not this fault), journal backlog "
                "peak %.0f records\n", fault_names[order[i]], (long long)fig[i].mqtt_back_ms,
                (long long)fig[i].kafka_back_ms, fig[i].backlog_peak);
    tg_chaos_summary("broker_restart", audit.missing, audit.duplicates,
                     "%d readings, MQTT redeliveries removed by dedup %.0f, drained %lld ms "
                     "after the last publish", READINGS, dups_dropped, (long long)drained_ms);
    assert_true(tg_gw_audit_exactly_once(&audit, READINGS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));
    tg_gw_audit_free(&audit);
    tg_gw_consumer_destroy(c);

    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(broker_restarts, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
