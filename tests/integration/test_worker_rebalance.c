/*
 * test_worker_rebalance.c - partitions moving between workers on purpose (a worker joining,
 * one leaving with SIGTERM, one coming back): exactly once, and the worker's /metrics.
 *
 * Worker a starts alone; while input flows, b joins (the cooperative rebalance moves half of
 * the partitions: a commits what it processed of them before b restores their state), then a
 * stops with SIGTERM (it commits and leaves: everything moves to b), then a comes back under
 * the same instance id (its transactional.id fences nothing: it left cleanly). The alerts and
 * aggregates, read back read_committed, must be a single uninterrupted reference worker's,
 * record for record, with no repeat: graceful moves never abort, so this holds on
 * tidegate-devkafka too (unlike a SIGKILL, test_worker_failover). b's /metrics pass
 * `promtool check metrics` and agree with what happened.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "worker_fixture.h"

#define PARTITIONS 6
#define DEVICES 40
#define SECONDS 600
#define PACE_MS 50 /* 30 s of feeding: the mock's rebalances take ~5 s per round */

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static void check_metrics(const struct wfx_worker *w)
{
    char *body = wfx_scrape(w);
    assert_true(tg_harness_exited_ok(wfx_promtool(body)));
    double consumed = wfx_metric(body, "tidegate_worker_records_consumed_total");
    double commits = wfx_metric(body, "tidegate_worker_transaction_commits_total");
    double aborts = wfx_metric(body, "tidegate_worker_transaction_aborts_total");
    double restores = wfx_metric(body, "tidegate_worker_state_restore_seconds_count");
    double assigned = wfx_metric(body, "tidegate_worker_partitions_assigned");
    double aggs = wfx_metric(body, "tidegate_worker_aggregates_total");
    double series = wfx_metric(body, "tidegate_worker_series");
    double lag_sum = 0;
    for (int p = 0; p < PARTITIONS; p++) {
        char name[96];
        snprintf(name, sizeof name, "tidegate_worker_consumer_lag_records{partition=\"%d\"}", p);
        double lag = wfx_metric(body, name);
        if (!isnan(lag))
            lag_sum += lag;
    }
    fprintf(stderr,
            "%s: consumed %.0f, commits %.0f, aborts %.0f, restores %.0f, partitions %.0f, "
            "aggregates %.0f, series %.0f, lag %.0f\n",
            w->name, consumed, commits, aborts, restores, assigned, aggs, series, lag_sum);
    assert_true(consumed > 0 && consumed <= (double)DEVICES * SECONDS);
    assert_true(commits > 0);
    assert_true(aborts == 0);
    assert_true(restores >= 1);
    assert_true(assigned >= 1 && assigned <= PARTITIONS);
    assert_false(isnan(aggs)); /* b may have joined after the last window closed */
    assert_true(series > 0 && series <= DEVICES);
    assert_true(lag_sum == 0); /* everything processed by now */
    free(body);
}

static void test_graceful_moves_are_exactly_once(void **state)
{
    (void)state;
    const char *args[] = {"--brokers", "1", "--topic", "telemetry:6", "--topic",
                          "a.anomalies:3", "--topic", "a.agg:3", "--topic", "a.state:6",
                          "--topic", "ref.anomalies:3", "--topic", "ref.agg:3", "--topic",
                          "ref.state:6", NULL};
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(args);
    assert_non_null(dk);
    const char *bs = tg_harness_devkafka_bootstrap(dk);
    char *dir = tg_harness_tmpdir_new("worker-rebalance");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = INT64_C(1767225600000)};
    const int64_t total = (int64_t)DEVICES * SECONDS;

    struct wfx_worker *a = wfx_worker_start(dir, "a", "a", bs, "tidegate-anomaly", "a.", NULL);
    wfx_worker_wait_assigned(a, 30000);
    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, SECONDS, PACE_MS);

    wfx_wait_progress(bs, "a.state", PARTITIONS, total / 5, 60000);
    struct wfx_worker *b = wfx_worker_start(dir, "b", "b", bs, "tidegate-anomaly", "a.", NULL);
    wfx_worker_wait_assigned(b, 30000);

    wfx_wait_progress(bs, "a.state", PARTITIONS, total * 2 / 5, 60000);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(a)));

    wfx_wait_progress(bs, "a.state", PARTITIONS, total * 3 / 5, 60000);
    struct wfx_worker *a2 = wfx_worker_start(dir, "a2", "a", bs, "tidegate-anomaly", "a.", NULL);
    wfx_worker_wait_assigned(a2, 30000);
    assert_int_equal(wfx_feed_join(feed), (size_t)total);

    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 120000));
    check_metrics(b);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(b)));
    assert_true(tg_harness_exited_ok(wfx_worker_stop(a2)));

    struct wfx_worker *ref = wfx_worker_start(dir, "ref", "ref", bs, "reference", "ref.", NULL);
    assert_true(wfx_wait_processed(bs, "ref.state", hi, PARTITIONS, 120000));
    assert_true(tg_harness_exited_ok(wfx_worker_stop(ref)));

    size_t rep_alerts, rep_aggs;
    wfx_compare(bs, "a.anomalies", "ref.anomalies", &rep_alerts);
    wfx_compare(bs, "a.agg", "ref.agg", &rep_aggs);
    assert_int_equal(rep_alerts, 0);
    assert_int_equal(rep_aggs, 0);

    wfx_worker_destroy(a);
    wfx_worker_destroy(a2);
    wfx_worker_destroy(b);
    wfx_worker_destroy(ref);
    tg_harness_devkafka_destroy(dk);
    tg_harness_tmpdir_done(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_graceful_moves_are_exactly_once, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
