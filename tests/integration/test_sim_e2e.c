/*
 * test_sim_e2e.c - the whole chain as a user runs it: `tidegate-sim run` (1,000 devices, each
 * its own MQTT connection running the firmware core) -> Mosquitto -> the tidegate daemon ->
 * tidegate-devkafka, with every Kafka broker taken down for a while in the middle of the run,
 * and malformed payloads and duplicate publishes injected by the simulator; then
 * `tidegate-sim audit --json`, following the topics during the run, must report nothing lost,
 * nothing duplicated, and as many dead letters as malformed payloads published.
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
#include <time.h>

#include "gateway_fixture.h"

#define DEVICES 1000
/* The load lasts until the outage is over, then POST_FAULT_MS more (the journal's backlog
 * drains while the fleet still publishes), and a SIGTERM moves tidegate-sim to its drain;
 * RUN_CAP_S only bounds the run should the signal never come. */
#define RUN_CAP_S 120
#define POST_FAULT_MS 4000
#define OUTAGE_READINGS 3000  /* received by the gateway while Kafka is down: ~3 s */
#define WAIT_MS 60000

static int teardown(void **state)
{
    (void)state;
    tg_gw_reap_all();
    return 0;
}

/* Mosquitto holds a connection per device, and inherits the test's limit. */
#define OPEN_FILES (DEVICES * 2 + 512)

static void fleet_through_an_outage_loses_nothing(void **state)
{
    (void)state;
    assert_int_equal(tg_gw_raise_open_files(OPEN_FILES), 0);
    const struct tg_gw_opts opts = {
        .mqtt_extra_conf = "max_connections -1\nmax_queued_messages 1000000\n",
        /* The journal holds everything during the outage: the default cap is far above. */
    };
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    const char *dir = tg_gw_dir(gw);
    char sim[1024], ledger[1024], labels[1024], broker[64], duration[16], devices[16];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(ledger, sizeof ledger, "%s/ledger", dir);
    snprintf(labels, sizeof labels, "%s/labels.jsonl", dir);
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(tg_gw_mosquitto(gw)),
             tg_harness_mosquitto_port(tg_gw_mosquitto(gw)));
    snprintf(duration, sizeof duration, "%d", RUN_CAP_S);
    snprintf(devices, sizeof devices, "%d", DEVICES);

    /* The audit first, following the topics while the fleet runs. */
    struct tg_harness_proc *audit = tg_gw_sim_audit_start(gw, ledger, 60);
    assert_non_null(audit);

    const char *run_argv[] = {sim, "run", "--broker", broker, "--devices", devices,
                              "--duration", duration, "--seed", "7", "--ledger", ledger,
                              "--labels", labels, "--malformed", "0.002", "--duplicates",
                              "0.003", "--drain", "30", NULL};
    int64_t t0 = tg_harness_now_ms();
    struct tg_harness_proc *run = tg_harness_proc_start(dir, "sim-run", run_argv, NULL, 0);
    assert_non_null(run);

    /* Kafka goes away once the fleet is publishing, and comes back while it still is. */
    double received_at_least = 2 * DEVICES;
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_received_total", NULL, TG_GW_GE,
                                  received_at_least, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GT, 0,
                                  WAIT_MS));
    assert_int_equal(tg_harness_devkafka_outage_begin(tg_gw_devkafka(gw)), 0);
    double before = tg_gw_metric(gw, "tidegate_messages_received_total", NULL);
    int64_t outage_ms = tg_harness_now_ms();
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 0, 20000));
    received_at_least = before + OUTAGE_READINGS;
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_received_total", NULL, TG_GW_GE,
                                  received_at_least, WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_journal_records", NULL, TG_GW_GT, 0));
    assert_int_equal(tg_harness_devkafka_outage_end(tg_gw_devkafka(gw)), 0);
    fprintf(stderr, "outage: %lld ms, %.0f readings journaled meanwhile\n",
            (long long)(tg_harness_now_ms() - outage_ms),
            tg_gw_metric(gw, "tidegate_journal_records", NULL));
    int64_t outage_over = tg_harness_now_ms();
    while (tg_harness_now_ms() < outage_over + POST_FAULT_MS) { /* the load's schedule */
        struct timespec tick = {0, 100 * 1000000L};
        nanosleep(&tick, NULL);
    }
    assert_true(tg_harness_proc_running(run)); /* the outage was in the middle of the run */
    assert_int_equal(tg_harness_proc_signal(run, SIGTERM), 0);
    double run_s = (double)(tg_harness_now_ms() - t0) / 1000.0;

    assert_int_equal(tg_gw_sim_run_wait(run, WAIT_MS, NULL), 0);
    int status;
    fprintf(stderr, "run took %lld ms\n", (long long)(tg_harness_now_ms() - t0));
    assert_int_equal(tg_harness_proc_wait(audit, WAIT_MS + 30000, &status), 0);
    json_t *root = tg_gw_sim_audit_report(audit, status);
    assert_non_null(root);

    /* What the fleet did: most readings confirmed, faults injected and confirmed. */
    long long released = tg_gw_json_int(root, "expected", "released");
    long long malformed = tg_gw_json_int(root, "expected", "malformed");
    long long duplicates = tg_gw_json_int(root, "expected", "duplicates");
    assert_int_equal(tg_gw_json_int(root, "expected", "devices"), DEVICES);
    /* every device sampled at 1 Hz for the whole run, less its ramp-up */
    assert_true(released >= (long long)(DEVICES * (run_s - 2)));
    assert_true(malformed > 0);
    assert_true(duplicates > 0);

    /* The verdict. */
    assert_int_equal(tg_gw_json_int(root, "lost", NULL), 0);
    assert_int_equal(tg_gw_json_int(root, "duplicated", NULL), 0);
    assert_int_equal(tg_gw_json_int(root, "delivered", NULL), released);
    assert_int_equal(tg_gw_json_int(root, "unexpected", NULL), 0);
    assert_int_equal(tg_gw_json_int(root, "undecodable", NULL), 0);
    assert_int_equal(tg_gw_json_int(root, "dlq", "records"), malformed);
    assert_int_equal(tg_gw_json_int(root, "dlq", "malformed"), malformed);
    assert_true(json_is_true(json_object_get(root, "ok")));
    assert_true(tg_harness_exited_ok(status));
    /* The gateway removed every injected duplicate (and any QoS1 redelivery). */
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_duplicate_total", NULL, TG_GW_GE,
                                (double)duplicates));
    json_decref(root);

    tg_harness_proc_destroy(audit);
    tg_harness_proc_destroy(run);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(fleet_through_an_outage_loses_nothing, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
