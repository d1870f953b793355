/*
 * test_worker_rebalance.c - partitions moving between workers on purpose (a worker joining,
 * one leaving with SIGTERM, one coming back): exactly once, and the worker's /metrics.
 *
 * Worker a starts alone; while input flows, b joins (the cooperative rebalance moves half of
 * the partitions: a commits what it processed of them before b restores their state), then a
 * stops with SIGTERM (it commits and leaves: everything moves to b), then a comes back under
 * the same instance id (its transactional.id fences nothing: it left cleanly). The alerts and
 * aggregates, read back read_committed, must be a single uninterrupted reference worker's,
 * record for record, with no repeat: graceful moves do not abort on tidegate-devkafka, so
 * this holds there too (unlike a SIGKILL, test_worker_failover). On a real broker a commit
 * can race a rebalance that b lives through (its TxnOffsetCommit carries the generation the
 * group just left: ILLEGAL_GENERATION, and librdkafka 2.0.2 then fails the next transaction
 * with "skipped sequence numbers"); b aborts and rewinds, and the outputs must still equal
 * the reference's. b's /metrics pass
 * `promtool check metrics` and agree with what happened. With the argument "real" the same
 * runs on a real Kafka broker (compacted state topic, real transactions).
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

#define PARTITIONS WFX_PARTITIONS
#define DEVICES 40
#define SECONDS 600
#define PACE_MS 50 /* 30 s of feeding: the mock's rebalances take ~5 s per round */

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static double lag_of(const char *body)
{
    double sum = 0;
    for (int p = 0; p < PARTITIONS; p++) {
        char name[96];
        snprintf(name, sizeof name, "tidegate_worker_consumer_lag_records{partition=\"%d\"}", p);
        double lag = wfx_metric(body, name);
        if (!isnan(lag))
            sum += lag;
    }
    return sum;
}

static bool lag_is_zero(void *ud)
{
    char *body = wfx_scrape(ud);
    bool zero = lag_of(body) == 0;
    free(body);
    return zero;
}

/* b lives through three rebalances (its own join, a's leave, a2's join); on a real broker
 * each may cost the two aborts described above. */
#define REAL_ABORTS_MAX 6

/* forced: commits made to race the rebalances on purpose (the test hook
 * TIDEGATE_TEST_STALE_GENERATION, per generation change), 0 for none. */
static void check_metrics(const struct wfx_worker *w, bool real_kafka, int forced)
{
    /* The lag gauge follows the commits (it is set once per commit interval): everything is
     * processed now, so it must reach 0 soon. */
    bool lag_zero = tg_harness_wait_until(lag_is_zero, (void *)w, 10000);
    char *body = wfx_scrape(w);
    assert_true(tg_harness_exited_ok(wfx_promtool(body)));
    double consumed = wfx_metric(body, "tidegate_worker_records_consumed_total");
    double commits = wfx_metric(body, "tidegate_worker_transaction_commits_total");
    double aborts = wfx_metric(body, "tidegate_worker_transaction_aborts_total");
    double restores = wfx_metric(body, "tidegate_worker_state_restore_seconds_count");
    double assigned = wfx_metric(body, "tidegate_worker_partitions_assigned");
    double aggs = wfx_metric(body, "tidegate_worker_aggregates_total");
    double series = wfx_metric(body, "tidegate_worker_series");
    double lag_sum = lag_of(body);
    fprintf(stderr,
            "%s: consumed %.0f, commits %.0f, aborts %.0f, restores %.0f, partitions %.0f, "
            "aggregates %.0f, series %.0f, lag %.0f\n",
            w->name, consumed, commits, aborts, restores, assigned, aggs, series, lag_sum);
    /* Records are consumed again after each rewind: the bound holds without forced aborts. */
    assert_true(consumed > 0 && (forced > 0 || consumed <= (double)DEVICES * SECONDS));
    assert_true(commits > 0);
    if (forced > 0)
        assert_true(aborts >= forced); /* the hook's commits were refused: races happened */
    else
        assert_true(real_kafka ? aborts <= REAL_ABORTS_MAX : aborts == 0);
    assert_true(restores >= 1);
    assert_true(assigned >= 1 && assigned <= PARTITIONS);
    assert_false(isnan(aggs)); /* b may have joined after the last window closed */
    assert_true(series > 0 && series <= DEVICES);
    assert_true(lag_zero && lag_sum == 0); /* everything processed by now */
    free(body);
}

static void graceful_moves(bool real_kafka, int forced)
{

    struct wfx_cluster *cl = wfx_cluster_start(real_kafka);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-rebalance");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(SECONDS)};
    const int64_t total = (int64_t)DEVICES * SECONDS;

    struct wfx_worker *a = wfx_worker_start(dir, "a", "a", bs, "tidegate-anomaly", "a.", NULL);
    wfx_worker_wait_assigned(a, 30000);
    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, SECONDS, PACE_MS);

    wfx_wait_progress(bs, "a.state", PARTITIONS, total / 5, 60000);
    /* With forced races, b alone (the worker that lives through every rebalance) gets the
     * hook: a worker stopped while it recovers from an abort exits 1 by design. */
    char hook[16];
    snprintf(hook, sizeof hook, "%d", forced);
    if (forced > 0)
        setenv("TIDEGATE_TEST_STALE_GENERATION", hook, 1);
    struct wfx_worker *b = wfx_worker_start(dir, "b", "b", bs, "tidegate-anomaly", "a.", NULL);
    unsetenv("TIDEGATE_TEST_STALE_GENERATION");
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
    check_metrics(b, real_kafka, forced);
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
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

static void test_graceful_moves_devkafka(void **state)
{
    (void)state;
    graceful_moves(false, 0);
}

static void test_graceful_moves_real_kafka(void **state)
{
    (void)state;
    graceful_moves(true, 0);
}

/* The same with commits racing the rebalances on purpose: after each change of the group's
 * generation, a worker's next 2 commits carry the previous generation, as a commit in flight
 * while the group moves on does. The broker refuses each (ILLEGAL_GENERATION), the worker
 * aborts and rewinds, and the outputs must still be the reference's with no repeat. Only the
 * real broker checks generations (devkafka accepts any), so only it can refuse them. */
static void test_commits_racing_rebalances_real_kafka(void **state)
{
    (void)state;
    graceful_moves(true, 2);
}

static int teardown_hook(void **state)
{
    unsetenv("TIDEGATE_TEST_STALE_GENERATION");
    return teardown(state);
}

/* argv[1] "real": the same on a real Kafka broker (the CTest entry with label kafka-real);
 * "real-races": with commits made to race the rebalances. */
int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "real-races") == 0) {
        const struct CMUnitTest races[] = {
            cmocka_unit_test_teardown(test_commits_racing_rebalances_real_kafka, teardown_hook),
        };
        return cmocka_run_group_tests(races, NULL, NULL);
    }
    if (argc > 1 && strcmp(argv[1], "real") == 0) {
        const struct CMUnitTest real[] = {
            cmocka_unit_test_teardown(test_graceful_moves_real_kafka, teardown),
        };
        return cmocka_run_group_tests(real, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_graceful_moves_devkafka, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
