/*
 * test_worker_fenced.c - a second worker started with the same instance id (a restarted copy
 * while the old one still runs, or a configuration mistake) on a real Kafka broker: its
 * producer fences the first one's. The first must step aside (not fence back, which would
 * make the two take turns forever): it stops, says why, leaves the group and exits with
 * status 1; the second takes its partitions, and the output stays exactly once.
 *
 * Real broker only: librdkafka 2.0.2's mock fences nobody (test_worker_kafka_txn).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "worker_fixture.h"

#define PARTITIONS WFX_PARTITIONS
#define DEVICES 40
#define SECONDS 600
#define PACE_MS 30

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static void test_same_instance_id_stays_exactly_once(void **state)
{
    (void)state;
    struct wfx_cluster *cl = wfx_cluster_start(true);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-fenced");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(SECONDS)};

    struct wfx_worker *w1 = wfx_worker_start(dir, "w1", "same", bs, "tidegate-anomaly", "a.", NULL);
    wfx_worker_wait_assigned(w1, 60000);
    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, SECONDS, PACE_MS);
    wfx_wait_progress(bs, "a.state", PARTITIONS, (int64_t)DEVICES * SECONDS / 5, 60000);
    struct wfx_worker *w2 = wfx_worker_start(dir, "w2", "same", bs, "tidegate-anomaly", "a.", NULL);
    wfx_worker_wait_assigned(w2, 60000);
    assert_int_equal(wfx_feed_join(feed), (size_t)DEVICES * SECONDS);

    /* The first one is fenced by the second's start and steps aside. */
    int status;
    assert_int_equal(tg_harness_proc_wait(w1->proc, 60000, &status), 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    assert_true(tg_harness_file_contains(tg_harness_proc_stderr_path(w1->proc),
                                         "fenced: another process runs with instance_id same"));

    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 240000));
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w2)));

    struct wfx_worker *ref = wfx_worker_start(dir, "ref", "ref", bs, "reference", "ref.", NULL);
    assert_true(wfx_wait_processed(bs, "ref.state", hi, PARTITIONS, 120000));
    assert_true(tg_harness_exited_ok(wfx_worker_stop(ref)));
    size_t rep_alerts, rep_aggs;
    wfx_compare(bs, "a.anomalies", "ref.anomalies", &rep_alerts);
    wfx_compare(bs, "a.agg", "ref.agg", &rep_aggs);
    assert_int_equal(rep_alerts, 0);
    assert_int_equal(rep_aggs, 0);

    wfx_worker_destroy(w1);
    wfx_worker_destroy(w2);
    wfx_worker_destroy(ref);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_same_instance_id_stays_exactly_once, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
