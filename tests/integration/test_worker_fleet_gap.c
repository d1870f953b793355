/*
 * test_worker_fleet_gap.c - a hole in a whole partition's data is not every device's silence.
 *
 * What the worker saw when the simulator froze for 9.4 s on a loaded machine (scripts/quality
 * --shipped --seed 2): records flow from every device, then the source stops and nothing is
 * produced at all, and when it resumes the readings carry event times 10 s later; nothing
 * ever fills the hole (unlike a gateway's backlog after a Kafka outage, test_worker_silence).
 * The records are produced straight into devkafka (worker_fixture.c): one reading a second of
 * event time from each of 24 devices, paced at 10 event-seconds per real second, then a pause
 * of real time longer than stall_after_ms with event seconds [60, 70) never produced, then
 * records again from second 70.
 *
 * Every series has a 10 s gap, more than silence_factor (3) x its period (1 s). Before the
 * hole rule each of them was reported on arrival: 48 silence alert records here (an open
 * and a close for each of the 24 series; 4,920 alerts in the
 * quality run). Now: no silence alert, and the hole counted in
 * tidegate_worker_partition_gaps_total (once per partition that had records).
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
#include <unistd.h>

#include "harness.h"
#include "worker_fixture.h"

#define PARTITIONS WFX_PARTITIONS
#define DEVICES 24
#define PACE_MS 100   /* real ms per second of event time while flowing */
#define PAUSE_MS 3000 /* real ms with no input: past stall_after_ms, so the worker sees the stall */
#define HOLE_FROM_S 60
#define HOLE_TO_S 70
#define END_S 130
/* stall_after_ms: above the 1 s spacing of a partition's event times, below
 * (silence_factor - 1) x the period (README, "Silence, or a stall upstream"). */
#define EXTRA                                                                                  \
    "silence = true\nsilence_factor = 3\n"                                                     \
    "[worker]\nsweep_interval_ms = 200\nstall_after_ms = 1500\n"

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

struct gaps_wait {
    const struct wfx_worker *w;
    int want;
    double gaps;
};

/* The counters follow a commit just after it is visible: wait for them, with a deadline. */
static bool gaps_counted(void *ud)
{
    struct gaps_wait *gw = ud;
    char *body = wfx_scrape(gw->w);
    gw->gaps = wfx_metric(body, "tidegate_worker_partition_gaps_total");
    free(body);
    return !isnan(gw->gaps) && gw->gaps >= gw->want;
}

static void run(bool real_kafka)
{
    struct wfx_cluster *cl = wfx_cluster_start(real_kafka);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-fleet-gap");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(END_S)};
    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "fleetgap", "a.", EXTRA);
    wfx_worker_wait_assigned(w, 30000);

    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, HOLE_FROM_S, PACE_MS);
    assert_int_equal(wfx_feed_join(feed), (size_t)DEVICES * HOLE_FROM_S);
    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 60000));
    int with_records = 0;
    for (int p = 0; p < PARTITIONS; p++)
        with_records += hi[p] > 0;
    /* The source is frozen. Waiting is the scenario here, not a way of synchronizing:
     * nothing is expected to happen during it. */
    int64_t until = tg_harness_now_ms() + PAUSE_MS;
    while (tg_harness_now_ms() < until)
        usleep(100000);
    feed = wfx_feed_start(bs, "telemetry", &in, HOLE_TO_S, END_S, PACE_MS);
    assert_int_equal(wfx_feed_join(feed), (size_t)DEVICES * (END_S - HOLE_TO_S));
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 60000));

    size_t others;
    size_t n = wfx_silence_alerts(bs, "a.anomalies", "", &others, 5) + others;
    struct gaps_wait gw = {w, with_records, NAN};
    tg_harness_wait_until(gaps_counted, &gw, 10000);
    double gaps = gw.gaps;
    char *body = wfx_scrape(w);
    double stalls = wfx_metric(body, "tidegate_worker_partition_stalls_total");
    free(body);
    fprintf(stderr, "silence alerts: %zu; partition_gaps_total %.0f (partitions with records "
                    "%d); partition_stalls_total %.0f\n", n, gaps, with_records, stalls);
    assert_int_equal(n, 0);
    /* One hole in each partition's event time: the one upstream event, counted. */
    assert_false(isnan(gaps));
    assert_int_equal((int)gaps, with_records);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w)));
    wfx_worker_destroy(w);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

static void test_fleet_gap_is_not_silence(void **state)
{
    (void)state;
    run(false);
}

static void test_fleet_gap_is_not_silence_real_kafka(void **state)
{
    (void)state;
    run(true);
}

/* argv[1] "real": on a real Kafka broker (the CTest entry with label kafka-real). */
int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "real") == 0) {
        const struct CMUnitTest real[] = {
            cmocka_unit_test_teardown(test_fleet_gap_is_not_silence_real_kafka, teardown),
        };
        return cmocka_run_group_tests(real, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_fleet_gap_is_not_silence, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
