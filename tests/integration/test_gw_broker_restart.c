/*
 * test_gw_broker_restart.c - guarantee: a Mosquitto restart under load loses nothing. The
 * broker (with persistence) goes down and comes back on the same port while devices publish;
 * the gateway reconnects to its persistent session, the broker delivers what it queued for
 * it meanwhile, MQTT redeliveries are removed by (device, boot, seq), and every published
 * reading reaches Kafka exactly once, in per-device order.
 *
 * In plugin mode (TG_GW_MODE=plugin) the restart takes the gateway with it: the plugin commits
 * on the broker's SIGTERM, the journal (persistent) is reopened by the next broker, and the
 * publisher resends what the broker had not acknowledged. The metrics start again from zero
 * with the new process, so the plugin's run is judged by Kafka alone.
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
#define SEQS 60
#define READINGS (DEVICES * SEQS)
#define RATE 1500          /* readings per second: the plan takes 4 s */
#define RESTART_AT 2000    /* readings published before the broker restarts */
#define WAIT_MS 60000

static bool gateway_ready(void *ud) { return tg_gw_ready(ud); }

/* Mosquitto's log line for a connection of the gateway's client id. */
static int gateway_connects(const char *log_path)
{
    FILE *f = fopen(log_path, "r");
    if (!f)
        return 0;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "New client connected") && strstr(line, " as tidegate-test"))
            n++;
    }
    fclose(f);
    return n;
}

static void broker_restart_loses_nothing(void **state)
{
    (void)state;
    const struct tg_gw_opts opts = {.mqtt_flags = TG_HARNESS_MQTT_PERSISTENCE};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    struct tg_harness_mosquitto *mq = tg_gw_mosquitto(gw);
    const char *broker_log = tg_harness_mosquitto_log_path(mq);
    int connects_before = gateway_connects(broker_log);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "gw-test-pub");
    assert_non_null(pub);

    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_true(tg_gw_pub_wait_progress(pub, RESTART_AT, WAIT_MS));

    /* The broker goes down (saving sessions and queued messages) and comes back. */
    int64_t restart_ms = tg_harness_now_ms();
    if (tg_gw_plugin(gw)) {
        /* The same SIGTERM and start on the same port, through the fixture, which gives the
         * broker the plugin's LD_PRELOAD in a sanitizer build. */
        assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
        assert_int_equal(tg_gw_tidegate_start(gw), 0);
    } else {
        assert_int_equal(tg_harness_mosquitto_restart(mq), 0);
    }
    fprintf(stderr, "broker restarted after %d readings, in %lld ms\n", RESTART_AT,
            (long long)(tg_harness_now_ms() - restart_ms));
    assert_true(tg_harness_wait_until(gateway_ready, gw, WAIT_MS));
    fprintf(stderr, "gateway reconnected %lld ms after the restart began\n",
            (long long)(tg_harness_now_ms() - restart_ms));

    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    if (tg_gw_plugin(gw)) {
        assert_true(tg_gw_kafka_exactly_once(gw, &plan, READINGS, "broker restart", WAIT_MS));
        assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0,
                                      WAIT_MS));
        assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));
        tg_gw_pub_destroy(pub);
        assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
        tg_gw_destroy(gw);
        return;
    }
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  READINGS, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    int connects = gateway_connects(broker_log) - connects_before;
    fprintf(stderr, "gateway: %d new connections logged by the broker; received %g, "
            "duplicates removed %g, delivered %g\n", connects,
            tg_gw_metric(gw, "tidegate_messages_received_total", NULL),
            tg_gw_metric(gw, "tidegate_messages_duplicate_total", NULL),
            tg_gw_metric(gw, "tidegate_messages_delivered_total", NULL));
    assert_true(connects >= 1);
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ,
                                READINGS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_invalid_total", NULL, TG_GW_EQ, 0));
    assert_true(tg_gw_metric_is(gw, "tidegate_mqtt_connections", NULL, TG_GW_EQ, 1));

    assert_true(tg_gw_kafka_exactly_once(gw, &plan, READINGS, "broker restart", WAIT_MS));

    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(broker_restart_loses_nothing, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
