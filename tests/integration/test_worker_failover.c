/*
 * test_worker_failover.c - tidegate-worker scaled out and failing over, against what one
 * uninterrupted worker computes from the same input.
 *
 * Canonical telemetry (40 devices, one reading a second, spikes and level shifts so alerts
 * happen) is fed into tidegate-devkafka at a steady pace. Two workers share group
 * tidegate-anomaly; one is killed with SIGKILL while records flow, a third joins later, and
 * the survivors are stopped with SIGTERM once the state topic's offset markers show that every
 * record was processed and committed. Then a single reference worker (its own group and
 * output topics) processes the whole input without interruption.
 *
 * What a user would check, read back with a read_committed consumer:
 *   - every record processed: each partition's last committed marker equals its end;
 *   - the alerts and aggregates of the failover run are the reference's, record for record
 *     (key and JSON value), so every window was emitted, no alert is missing or new, and no
 *     burst of false alerts followed the moves (state moved with the partitions);
 *   - no repeats. On devkafka, librdkafka 2.0.2's mock cluster shows what the killed
 *     worker's open transaction had already sent (it has no transaction isolation: README),
 *     so there repeats are counted and reported, and allowed only as exact copies of
 *     reference records. With the argument "real" the test runs on a real Kafka broker,
 *     where the open transaction is aborted and there must be none.
 *
 * The failover workers checkpoint their state only every 60 s (snapshot_interval_ms), longer
 * than the run, so the partitions that move after the SIGKILL restore a checkpoint taken
 * seconds before it and replay the records since with their outputs suppressed: their
 * /metrics must show records replayed and outputs suppressed, and the comparison above shows
 * that nothing was emitted twice or lost by it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "worker_fixture.h"

#define PARTITIONS WFX_PARTITIONS
#define DEVICES 40
#define SECONDS 600   /* of event time */
#define PACE_MS 30    /* real ms per second of event time while feeding: 18 s in all */

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

#define FAILOVER_EXTRA "[worker]\nsnapshot_interval_ms = 60000\n"

static double metric_of(const struct wfx_worker *w, const char *name)
{
    char *body = wfx_scrape(w);
    double v = wfx_metric(body, name);
    free(body);
    return v;
}

static void kill_and_join(bool real_kafka)
{
    struct wfx_cluster *cl = wfx_cluster_start(real_kafka);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-failover");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(SECONDS)};

    struct wfx_worker *w1 = wfx_worker_start(dir, "w1", "w1", bs, "tidegate-anomaly", "a.", FAILOVER_EXTRA);
    struct wfx_worker *w2 = wfx_worker_start(dir, "w2", "w2", bs, "tidegate-anomaly", "a.", FAILOVER_EXTRA);
    wfx_worker_wait_assigned(w1, 30000);
    wfx_worker_wait_assigned(w2, 30000);
    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, SECONDS, PACE_MS);

    /* Kill w1 once a quarter of the input is committed, while the rest still flows. */
    wfx_wait_progress(bs, "a.state", PARTITIONS, (int64_t)DEVICES * SECONDS / 4, 60000);
    assert_int_equal(tg_harness_proc_signal(w1->proc, SIGKILL), 0);
    int status;
    assert_int_equal(tg_harness_proc_wait(w1->proc, 10000, &status), 0);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    struct wfx_worker *w3 = wfx_worker_start(dir, "w3", "w3", bs, "tidegate-anomaly", "a.", FAILOVER_EXTRA);
    wfx_worker_wait_assigned(w3, 30000);
    size_t produced = wfx_feed_join(feed);
    assert_int_equal(produced, (size_t)DEVICES * SECONDS);

    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 120000));
    double replayed = metric_of(w2, "tidegate_worker_records_replayed_total") +
                      metric_of(w3, "tidegate_worker_records_replayed_total");
    double suppressed = metric_of(w2, "tidegate_worker_outputs_suppressed_total") +
                        metric_of(w3, "tidegate_worker_outputs_suppressed_total");
    fprintf(stderr, "after the SIGKILL: %.0f records replayed from checkpoints, %.0f outputs "
                    "suppressed\n", replayed, suppressed);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w2)));
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w3)));

    /* The reference: one worker, the whole input, no interruption. */
    struct wfx_worker *ref = wfx_worker_start(dir, "ref", "ref", bs, "reference", "ref.", NULL);
    assert_true(wfx_wait_processed(bs, "ref.state", hi, PARTITIONS, 120000));
    assert_true(tg_harness_exited_ok(wfx_worker_stop(ref)));

    size_t dup_alerts, dup_aggs;
    wfx_compare(bs, "a.anomalies", "ref.anomalies", &dup_alerts);
    wfx_compare(bs, "a.agg", "ref.agg", &dup_aggs);
    fprintf(stderr, "after one SIGKILL on %s: %zu alert and %zu aggregate records repeated\n",
            real_kafka ? "a real Kafka broker" : "devkafka", dup_alerts, dup_aggs);
    /* After the comparison, so that a replay gone wrong shows as the outputs it changed. */
    assert_true(replayed > 0);
    assert_true(suppressed > 0);
    if (real_kafka) {
        /* Transactions are real here: the killed worker's open transaction was aborted. */
        assert_int_equal(dup_alerts, 0);
        assert_int_equal(dup_aggs, 0);
    }

    wfx_worker_destroy(w1);
    wfx_worker_destroy(w2);
    wfx_worker_destroy(w3);
    wfx_worker_destroy(ref);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

static void test_kill_and_join_devkafka(void **state)
{
    (void)state;
    kill_and_join(false);
}

static void test_kill_and_join_real_kafka(void **state)
{
    (void)state;
    kill_and_join(true);
}

/* argv[1] "real": the same on a real Kafka broker (the CTest entry with label kafka-real). */
int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "real") == 0) {
        const struct CMUnitTest real[] = {
            cmocka_unit_test_teardown(test_kill_and_join_real_kafka, teardown),
        };
        return cmocka_run_group_tests(real, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_kill_and_join_devkafka, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
