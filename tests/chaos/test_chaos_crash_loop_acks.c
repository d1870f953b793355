/*
 * test_chaos_crash_loop_acks.c - the crash loop with durable acknowledgements (issue 12): a
 * fleet of `tidegate-sim run --durable-acks` nodes (each its own MQTT connection running the
 * firmware core) -> Mosquitto -> tidegate ([ack] enabled) -> Kafka, the gateway killed with
 * SIGKILL every 3-8 s (seeded), KILLS times, with a Kafka outage across one of the kills.
 *
 * What must hold (the "What must hold"), from `tidegate-sim audit --follow --json`
 * against the simulator's ledger:
 *   - lost 0: a node keeps each reading until the gateway acknowledged it durable;
 *   - duplicated 0: the restarted gateway reads back what its last run sent after its last
 *     saved point (reconcile_kafka.h), so neither its journal nor a node's resend sends a
 *     reading twice;
 *   - reordered 0 (a node's resend after newer readings is counted apart as "resent"), and
 *     nothing left unconfirmed in an outbox after the drain;
 *   - after every kill the journal passes PRAGMA integrity_check, and the gateway's own
 *     start-up check never finds it corrupt.
 * It prints the audit's figures and the resends per kill.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "chaos.h"

#define DEVICES 200
#define RATE_HZ "5"
#define KILLS 5
#define KILL_MIN_MS 3000
#define KILL_MAX_MS 8000
#define OUTAGE_KILL 2            /* the Kafka outage begins before this kill, ends after it */
#define OUTAGE_MS 4000
#define COMMIT_INTERVAL_MS 100
#define RESTART_ESTIMATE_MS 1500 /* to size the run so the load lasts through the last kill */
#define WAIT_MS 60000
#define DEFAULT_SEED 20261203u

static void crash_loop_acks(void **state)
{
    (void)state;
    assert_int_equal(tg_gw_raise_open_files((unsigned long)DEVICES * 2 + 512), 0);
    struct tg_chaos_rand rnd;
    tg_chaos_rand_init(&rnd, DEFAULT_SEED, "crash loop with acks");
    int interval_ms[KILLS];
    int64_t total_ms = 3000;
    for (int k = 0; k < KILLS; k++) {
        interval_ms[k] = tg_chaos_rand_range(&rnd, KILL_MIN_MS, KILL_MAX_MS);
        total_ms += interval_ms[k] + RESTART_ESTIMATE_MS;
    }
    total_ms += OUTAGE_MS;

    /* On devkafka, one request in flight: its mock cluster does not check the idempotent
     * producer's sequence numbers, so a batch retried across the outage can be stored twice
     * (test_chaos_fleet.c); the real broker keeps librdkafka's default. */
    const char *tier = getenv("TG_KAFKA_TIER");
    bool real = tier && strcmp(tier, "real") == 0;
    static const char *const dev_sets[] = {"kafka.rdkafka.max.in.flight=1", NULL};
    const struct tg_gw_opts opts = {
        .sets = real ? NULL : dev_sets,
        .mqtt_extra_conf = "max_connections -1\nmax_queued_messages 1000000\n",
        .commit_interval_ms = COMMIT_INTERVAL_MS,
        .extra_ini = "[ack]\nenabled = true\nmin_interval_ms = 100\n",
    };
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    const char *dir = tg_gw_dir(gw);
    char sim[1024], ledger[1024], broker[64], duration[24], devices[24];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(ledger, sizeof ledger, "%s/ledger", dir);
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(tg_gw_mosquitto(gw)),
             tg_harness_mosquitto_port(tg_gw_mosquitto(gw)));
    snprintf(duration, sizeof duration, "%lld", (long long)(total_ms / 1000 + 1));
    snprintf(devices, sizeof devices, "%d", DEVICES);

    struct tg_harness_proc *audit = tg_gw_sim_audit_start(gw, ledger, 90);
    assert_non_null(audit);
    const char *run_argv[] = {sim, "run", "--broker", broker, "--devices", devices, "--rate",
                              RATE_HZ, "--duration", duration, "--seed", "12", "--ledger",
                              ledger, "--drain", "45", "--durable-acks", "--ack-timeout", "2000",
                              NULL};
    struct tg_harness_proc *run = tg_harness_proc_start(dir, "sim-run", run_argv, NULL, 0);
    assert_non_null(run);
    assert_true(
        tg_gw_wait_metric(gw, "tidegate_acks_sent_total", NULL, TG_GW_GE, DEVICES, WAIT_MS));

    int64_t ready_ms = tg_harness_now_ms();
    for (int k = 0; k < KILLS; k++) {
        /* The schedule times the faults; it does not stand in for a condition. */
        tg_chaos_pause_until(ready_ms + interval_ms[k], NULL, NULL);
        assert_true(tg_harness_proc_running(run)); /* still under load */
        if (k == OUTAGE_KILL)
            assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
        int64_t kill_at = tg_harness_now_ms();
        char what[128];
        snprintf(what, sizeof what, "kill %d of %d after %d ms%s", k + 1, KILLS, interval_ms[k],
                 k == OUTAGE_KILL ? " during the Kafka outage" : "");
        assert_int_equal(tg_chaos_kill9_check(gw, what), 0);
        assert_int_equal(tg_gw_tidegate_start(gw), 0);
        ready_ms = tg_harness_now_ms();
        fprintf(stderr, "kill %d: ready again after %lld ms\n", k + 1,
                (long long)(ready_ms - kill_at));
        if (k == OUTAGE_KILL) {
            tg_chaos_pause_until(kill_at + OUTAGE_MS, NULL, NULL);
            assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
        }
    }
    char *runlog;
    assert_int_equal(tg_gw_sim_run_wait(run, WAIT_MS + 60000, &runlog), 0);
    long long resent = tg_gw_sim_run_resent(runlog);
    free(runlog);
    int status;
    assert_int_equal(tg_harness_proc_wait(audit, WAIT_MS + 60000, &status), 0);
    json_t *root = tg_gw_sim_audit_report(audit, status);
    assert_non_null(root);
    long long released = tg_gw_json_int(root, "expected", "released");
    long long lost = tg_gw_json_int(root, "lost", NULL);
    long long duplicated = tg_gw_json_int(root, "duplicated", NULL);
    tg_chaos_summary("crash_loop_acks", (int)lost, (int)duplicated,
                     "%d devices x %s Hz, %d kills, released %lld, reordered %lld, resent "
                     "(audit) %lld, node resends %lld (~%lld per kill), unconfirmed %lld, "
                     "dropped %lld, integrity ok after every kill",
                     DEVICES, RATE_HZ, KILLS, released, tg_gw_json_int(root, "reordered", NULL),
                     tg_gw_json_int(root, "resent", NULL), resent, resent / KILLS,
                     tg_gw_json_int(root, "expected", "unconfirmed"),
                     tg_gw_json_int(root, "expected", "dropped"));
    assert_true(released > 0);
    assert_int_equal(lost, 0);
    assert_int_equal(duplicated, 0);
    assert_int_equal(tg_gw_json_int(root, "reordered", NULL), 0);
    assert_int_equal(tg_gw_json_int(root, "unexpected", NULL), 0);
    assert_int_equal(tg_gw_json_int(root, "expected", "unconfirmed"), 0);
    assert_int_equal(tg_gw_json_int(root, "expected", "dropped"), 0);
    assert_int_equal(tg_gw_json_int(root, "delivered", NULL), released);
    json_decref(root);

    tg_harness_proc_destroy(audit);
    tg_harness_proc_destroy(run);
    assert_int_equal(tg_chaos_finish_clean(gw), 0);
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(crash_loop_acks, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
