/*
 * test_chaos_fleet.c - a fleet through both brokers restarting: `tidegate-sim run` (1,000
 * devices, each its own MQTT connection running the firmware core) -> Mosquitto -> tidegate
 * -> Kafka, with Mosquitto (persistence on) restarted in the middle of the run, so that all
 * 1,000 devices and the gateway lose their connections at once and reconnect together, and a
 * Kafka outage just after it. `tidegate-sim audit --follow --json` must report nothing lost
 * and nothing duplicated.
 *
 * What the README promises: the node's outbox keeps a reading until the broker's PUBACK and
 * sends it again after a reconnect; Mosquitto with persistence keeps what it acknowledged
 * and had not delivered, and the gateway's persistent session gets it after the restart; the
 * gateway removes QoS1 redeliveries and resends by (device, boot, seq); a Kafka outage costs
 * nothing. The test prints the audit's verdict and the reconnection figures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos.h"

#define DEVICES 1000
/* The load lasts until both faults are over, then POST_FAULT_MS more (the backlog the
 * outage left drains while the fleet still publishes), and a SIGTERM moves tidegate-sim to its
 * drain; RUN_CAP_S only bounds the run should the signal never come. */
#define RUN_CAP_S 120
#define POST_FAULT_MS 4000
#define MQTT_DOWN_MS 1500
#define KAFKA_DOWN_MS 2000
#define WAIT_MS 60000

/* Mosquitto holds a connection per device, and inherits the test's limit. */
#define OPEN_FILES (DEVICES * 2 + 512)

static void fleet_through_broker_restarts(void **state)
{
    (void)state;
    assert_int_equal(tg_gw_raise_open_files(OPEN_FILES), 0);
    /* On devkafka, one request in flight: librdkafka 2.0.2's mock cluster does not check the
     * idempotent producer's sequence numbers, so a batch retried across its outage can be
     * stored twice (seen once in CI: 2 copies of 20,000, none removed by the gateway). The
     * real broker checks them and keeps librdkafka's default of 5 (README, Chaos suite). */
    const char *tier = getenv("TG_KAFKA_TIER");
    bool real = tier && strcmp(tier, "real") == 0;
    static const char *const dev_sets[] = {"kafka.rdkafka.max.in.flight=1", NULL};
    const struct tg_gw_opts opts = {
        .mqtt_flags = TG_HARNESS_MQTT_PERSISTENCE,
        .mqtt_extra_conf = "max_connections -1\nmax_queued_messages 1000000\n",
        .sets = real ? NULL : dev_sets,
    };
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    const char *dir = tg_gw_dir(gw);
    char sim[1024], ledger[1024], broker[64], duration[16], devices[16];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(ledger, sizeof ledger, "%s/ledger", dir);
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(tg_gw_mosquitto(gw)),
             tg_harness_mosquitto_port(tg_gw_mosquitto(gw)));
    snprintf(duration, sizeof duration, "%d", RUN_CAP_S);
    snprintf(devices, sizeof devices, "%d", DEVICES);

    struct tg_harness_proc *audit = tg_gw_sim_audit_start(gw, ledger, 60);
    assert_non_null(audit);

    const char *run_argv[] = {sim, "run", "--broker", broker, "--devices", devices,
                              "--duration", duration, "--seed", "11", "--ledger", ledger,
                              "--drain", "30", NULL};
    int64_t run_from = tg_harness_now_ms();
    struct tg_harness_proc *run = tg_harness_proc_start(dir, "sim-run", run_argv, NULL, 0);
    assert_non_null(run);

    /* Once the fleet publishes: Mosquitto goes down and comes back. */
    double received_at_least = 3 * DEVICES;
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_received_total", NULL, TG_GW_GE,
                                  received_at_least, WAIT_MS));
    assert_int_equal(tg_harness_mosquitto_stop(tg_gw_mosquitto(gw)), 0);
    tg_chaos_pause_until(tg_harness_now_ms() + MQTT_DOWN_MS, NULL, NULL);
    assert_int_equal(tg_harness_mosquitto_restart(tg_gw_mosquitto(gw)), 0);
    int64_t mqtt_up = tg_harness_now_ms();
    assert_true(tg_gw_wait_metric(gw, "tidegate_mqtt_connections", NULL, TG_GW_EQ, 1, WAIT_MS));
    int64_t gw_back_ms = tg_harness_now_ms() - mqtt_up;
    received_at_least = tg_gw_metric(gw, "tidegate_messages_received_total", NULL) + 2 * DEVICES;
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_received_total", NULL, TG_GW_GE,
                                  received_at_least, WAIT_MS));
    int64_t flowing_ms = tg_harness_now_ms() - mqtt_up;

    /* Then Kafka, while the fleet still publishes. */
    int64_t kafka_down = tg_harness_now_ms();
    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    tg_chaos_pause_until(tg_harness_now_ms() + KAFKA_DOWN_MS, NULL, NULL);
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    int64_t kafka_outage_ms = tg_harness_now_ms() - kafka_down;
    tg_chaos_pause_until(tg_harness_now_ms() + POST_FAULT_MS, NULL, NULL); /* the schedule */
    assert_true(tg_harness_proc_running(run)); /* both faults were in the middle of the run */
    assert_int_equal(tg_harness_proc_signal(run, SIGTERM), 0);
    double run_s = (double)(tg_harness_now_ms() - run_from) / 1000.0;

    assert_int_equal(tg_gw_sim_run_wait(run, WAIT_MS, NULL), 0);
    int status;
    assert_int_equal(tg_harness_proc_wait(audit, WAIT_MS + 30000, &status), 0);
    json_t *root = tg_gw_sim_audit_report(audit, status);
    assert_non_null(root);
    long long released = tg_gw_json_int(root, "expected", "released");
    long long lost = tg_gw_json_int(root, "lost", NULL);
    long long duplicated = tg_gw_json_int(root, "duplicated", NULL);
    tg_chaos_summary("fleet", (int)lost, (int)duplicated,
                     "%d devices, %lld readings released, Mosquitto down %d ms: gateway "
                     "subscribed again after %lld ms, %d more readings taken after %lld ms; "
                     "Kafka outage %lld ms (%s tier); duplicates removed by the gateway %.0f",
                     DEVICES, (long long)released, MQTT_DOWN_MS, (long long)gw_back_ms,
                     2 * DEVICES, (long long)flowing_ms, (long long)kafka_outage_ms,
                     tg_gw_kafka_tier_name(gw),
                     tg_gw_metric(gw, "tidegate_messages_duplicate_total", NULL));
    assert_int_equal(tg_gw_json_int(root, "expected", "devices"), DEVICES);
    /* every device sampled at 1 Hz for the whole run, less its ramp-up */
    assert_true(released >= (long long)(DEVICES * (run_s - 5)));
    assert_int_equal(lost, 0);
    assert_int_equal(duplicated, 0);
    assert_int_equal(tg_gw_json_int(root, "delivered", NULL), released);
    assert_int_equal(tg_gw_json_int(root, "unexpected", NULL), 0);
    assert_true(json_is_true(json_object_get(root, "ok")));
    assert_true(tg_harness_exited_ok(status));
    json_decref(root);

    tg_harness_proc_destroy(audit);
    tg_harness_proc_destroy(run);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(fleet_through_broker_restarts, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
