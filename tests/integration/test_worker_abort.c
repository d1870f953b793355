/*
 * test_worker_abort.c - a transaction that fails is aborted, and the worker rewinds to its
 * last commit: state restored from the state topic, position back at the last offset marker.
 *
 * Half of the input is processed and committed; then tidegate-devkafka is told to fail the
 * worker's next TxnOffsetCommit requests (ILLEGAL_GENERATION, which librdkafka reports as an
 * error that requires an abort) and the other half arrives. The worker aborts, rewinds,
 * processes the second half again and commits. Checked: every injected error was consumed,
 * tidegate_worker_transaction_aborts_total counts them, and the outputs are, as a set, those
 * of a reference worker that never aborted (the mock shows aborted records to read_committed
 * readers, so repeats of reference records are counted, not refused; a state rewound wrongly
 * would give different alerts or windows instead).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "worker_fixture.h"

#define PARTITIONS WFX_PARTITIONS
#define DEVICES 40
#define SECONDS 600
#define INJECTED 2

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static void test_failed_transaction_rewinds(void **state)
{
    (void)state;
    struct wfx_cluster *cl = wfx_cluster_start(false);
    const char *bs = wfx_cluster_bootstrap(cl);
    struct tg_harness_devkafka *dk = wfx_cluster_devkafka(cl);
    char *dir = tg_harness_tmpdir_new("worker-abort");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(SECONDS)};
    int64_t hi[PARTITIONS];

    wfx_produce(bs, "telemetry", &in, 0, SECONDS / 2);
    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "tidegate-anomaly", "a.", NULL);
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 60000));

    /* ApiKey 28: TxnOffsetCommit, which only the worker's transactional producer sends. */
    char cmd[64];
    snprintf(cmd, sizeof cmd, "error all 28 ILLEGAL_GENERATION %d", INJECTED);
    assert_int_equal(tg_harness_devkafka_cmd(dk, cmd, NULL, 0), 0);
    wfx_produce(bs, "telemetry", &in, SECONDS / 2, SECONDS);
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 60000));
    char reply[128];
    assert_int_equal(tg_harness_devkafka_cmd(dk, "errors all 28", reply, sizeof reply), 0);
    assert_string_equal(reply, "ok 0");

    char *body = wfx_scrape(w);
    double aborts = wfx_metric(body, "tidegate_worker_transaction_aborts_total");
    double restores = wfx_metric(body, "tidegate_worker_state_restore_seconds_count");
    fprintf(stderr, "aborts %.0f, restores %.0f\n", aborts, restores);
    assert_true(aborts >= INJECTED);
    assert_true(restores >= 1 + INJECTED); /* the assignment, then one per rewind */
    free(body);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w)));
    assert_true(tg_harness_file_contains(tg_harness_proc_stderr_path(w->proc),
                                         "rewinding 6 partitions"));

    struct wfx_worker *ref = wfx_worker_start(dir, "ref", "ref", bs, "reference", "ref.", NULL);
    assert_true(wfx_wait_processed(bs, "ref.state", hi, PARTITIONS, 60000));
    assert_true(tg_harness_exited_ok(wfx_worker_stop(ref)));
    size_t rep_alerts, rep_aggs;
    wfx_compare(bs, "a.anomalies", "ref.anomalies", &rep_alerts);
    wfx_compare(bs, "a.agg", "ref.agg", &rep_aggs);
    fprintf(stderr, "records of aborted transactions shown by the mock: %zu alerts, %zu "
                    "aggregates\n", rep_alerts, rep_aggs);

    wfx_worker_destroy(w);
    wfx_worker_destroy(ref);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_failed_transaction_rewinds, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
