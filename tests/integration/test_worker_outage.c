/*
 * test_worker_outage.c - tidegate-worker through a Kafka outage, and stopped during one.
 *
 * 1. Records flow into a worker; every broker of tidegate-devkafka goes down, for longer than
 *    the session timeout, so the group loses the worker and the worker its partitions (and
 *    any transaction in flight is aborted). When the cluster is back, the worker must go on by
 *    itself (rejoin, restore its partitions from the state topic, resume at their markers)
 *    and end with the outputs of a reference worker that saw no outage (as a set: devkafka
 *    shows aborted records, so repeats are counted, not refused).
 * 2. With the cluster down, SIGTERM must still end the worker within its stop bound
 *    (2 x shutdown_timeout_ms + 2 s): whatever it could not commit, the next owner redoes.
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
#define SECONDS 600
#define PACE_MS 30

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

struct log_ctx {
    const struct wfx_worker *w;
    const char *needle;
};

static bool log_has(void *ud)
{
    struct log_ctx *lc = ud;
    return tg_harness_file_contains(tg_harness_proc_stderr_path(lc->w->proc), lc->needle);
}

static void test_outage_then_recovery_and_stop(void **state)
{
    (void)state;
    struct wfx_cluster *cl = wfx_cluster_start(false);
    const char *bs = wfx_cluster_bootstrap(cl);
    struct tg_harness_devkafka *dk = wfx_cluster_devkafka(cl);
    char *dir = tg_harness_tmpdir_new("worker-outage");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(SECONDS)};

    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "tidegate-anomaly", "a.",
                                            "[worker]\nshutdown_timeout_ms = 3000\n");
    wfx_worker_wait_assigned(w, 30000);
    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, SECONDS, PACE_MS);
    wfx_wait_progress(bs, "a.state", PARTITIONS, (int64_t)DEVICES * SECONDS / 3, 60000);

    /* Down while records flow, until the worker feels it: the group session times out, or a
     * commit in flight fails (then the worker is in that commit and cannot see the session
     * end before the cluster is back). */
    assert_int_equal(tg_harness_devkafka_outage_begin(dk), 0);
    struct log_ctx lost = {w, "lost telemetry["}, failed = {w, "transaction failed"};
    int64_t deadline = tg_harness_now_ms() + 90000;
    while (!log_has(&lost) && !log_has(&failed) && tg_harness_now_ms() < deadline)
        tg_harness_wait_until(log_has, &lost, 500);
    assert_true(log_has(&lost) || log_has(&failed));
    assert_int_equal(tg_harness_devkafka_outage_end(dk), 0);
    assert_int_equal(wfx_feed_join(feed), (size_t)DEVICES * SECONDS);

    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 180000));
    char *body = wfx_scrape(w);
    double lost_parts = wfx_metric(body, "tidegate_worker_partitions_moved_total{change=\"lost\"}");
    double restores = wfx_metric(body, "tidegate_worker_state_restore_seconds_count");
    double aborts = wfx_metric(body, "tidegate_worker_transaction_aborts_total");
    fprintf(stderr, "outage: %.0f partitions lost, %.0f restores, %.0f aborts\n", lost_parts,
            restores, aborts);
    assert_true(lost_parts >= 1 || aborts >= 1);
    assert_true(restores >= 2); /* the first assignment, then again after the outage */
    free(body);

    /* 2. Down again, then SIGTERM: the stop must end within its bound. */
    assert_int_equal(tg_harness_devkafka_outage_begin(dk), 0);
    int64_t t0 = tg_harness_now_ms();
    assert_int_equal(tg_harness_proc_signal(w->proc, SIGTERM), 0);
    int status;
    assert_int_equal(tg_harness_proc_wait(w->proc, 30000, &status), 0);
    int64_t took = tg_harness_now_ms() - t0;
    fprintf(stderr, "SIGTERM with the cluster down: exited %s %d after %lld ms\n",
            WIFEXITED(status) ? "with status" : "by signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), (long long)took);
    assert_true(WIFEXITED(status));
    assert_true(took <= 2 * 3000 + 2000 + 2000);
    assert_int_equal(tg_harness_devkafka_outage_end(dk), 0);

    /* The outputs: what a worker that saw no outage makes of the same input. */
    struct wfx_worker *ref = wfx_worker_start(dir, "ref", "ref", bs, "reference", "ref.", NULL);
    assert_true(wfx_wait_processed(bs, "ref.state", hi, PARTITIONS, 120000));
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
        cmocka_unit_test_teardown(test_outage_then_recovery_and_stop, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
