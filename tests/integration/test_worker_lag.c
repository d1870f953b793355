/*
 * test_worker_lag.c - silence while the worker is behind its input.
 *
 * A worker that is slower than its input (or catching up a backlog after an outage) keeps
 * receiving records, but their event times fall further behind the wall clock. Measured on
 * the wall clock, every device would look silent whenever the worker takes longer than
 * silence_factor x a device's period to get through one period of the input. The rule
 * (worker/consumer.c): on a partition the worker is behind on, quiet time follows the
 * partition's event time, never faster than the wall clock.
 *
 * Input: 12 devices, one reading a second of event time, paced at 10 event-seconds per real
 * second, produced straight into devkafka (worker_fixture.c). The worker keeps up for the
 * first seconds (the detectors learn each device's period); then the test hook
 * TIDEGATE_TEST_SLOW_FILE / TIDEGATE_TEST_RECORD_DELAY_MS makes it sleep before each record,
 * so it processes a few records a second (one event-second of the 12 devices takes it about
 * 4-6 s, more than silence_factor 3 x 1 s) while the input goes on: it falls behind by
 * hundreds of records. Device MUTE_DEVICE stops sending during that.
 *
 *   1. While the worker is behind: no silence alert for any device that kept sending, and a
 *      silence alert for the device that stopped, before the worker has caught up (the
 *      partitions_behind gauge is up and the committed offsets are short of the input).
 *   2. The control run: the same, with behind partitions judged on the wall clock
 *      (TIDEGATE_TEST_BEHIND_CLOCK=wall), must show false silence alerts for devices that kept
 *      sending: the scenario provokes them, and the assertion of 1 can fail.
 *
 * stall_after_ms is longer than the test: a slow worker takes records partition by partition
 * from its queue, and the stall rule (test_worker_silence) would otherwise pause the clocks of
 * the partitions waiting their turn and hide what this test is about.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "worker_fixture.h"

#define PARTITIONS WFX_PARTITIONS
#define DEVICES 12
#define SECONDS 80       /* event-seconds of input */
#define PACE_MS 100      /* real ms per event-second of input */
#define FAST_SECONDS 10  /* event-seconds the worker processes at full speed first */
#define MUTE_DEVICE 0
#define MUTE_FROM_S 16
#define DELAY_MS "300"   /* per record while slow; with the commits, 4-6 s per event-second */
#define LAG_EXTRA                                                                              \
    "silence = true\nsilence_factor = 3\n"                                                     \
    "[worker]\nsweep_interval_ms = 200\nstall_after_ms = 600000\n"

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    unsetenv("TIDEGATE_TEST_SLOW_FILE");
    unsetenv("TIDEGATE_TEST_RECORD_DELAY_MS");
    unsetenv("TIDEGATE_TEST_BEHIND_CLOCK");
    return 0;
}

/* Silence alerts in the alerts topic: how many for device, and how many for the others. */
static size_t silence_alerts(const char *bs, const char *device, size_t *others, bool show)
{
    return wfx_silence_alerts(bs, "a.anomalies", device, others, show ? 5 : 0);
}

struct alert_wait {
    const char *bs;
    const char *device;
    bool others; /* wait for alerts of other devices (control) rather than device's */
};

static bool alerted(void *ud)
{
    struct alert_wait *aw = ud;
    size_t others, n = silence_alerts(aw->bs, aw->device, &others, false);
    return aw->others ? others >= 3 : n > 0;
}

static int64_t committed(const char *bs)
{
    int64_t next[PARTITIONS], sum = 0;
    wfx_state_markers(bs, "a.state", next, PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        sum += next[p] > 0 ? next[p] : 0;
    return sum;
}

static void run(bool control)
{
    struct wfx_cluster *cl = wfx_cluster_start(false);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-lag");
    assert_non_null(dir);
    char slow[512];
    snprintf(slow, sizeof slow, "%s/slow", dir);
    setenv("TIDEGATE_TEST_SLOW_FILE", slow, 1);
    setenv("TIDEGATE_TEST_RECORD_DELAY_MS", DELAY_MS, 1);
    if (control)
        setenv("TIDEGATE_TEST_BEHIND_CLOCK", "wall", 1);
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(SECONDS),
                           .mute_device = MUTE_DEVICE, .mute_from_s = MUTE_FROM_S};
    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "lag", "a.", LAG_EXTRA);
    wfx_worker_wait_assigned(w, 30000);

    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, SECONDS, PACE_MS);
    /* The worker keeps up until every device has a known period, then slows down. */
    wfx_wait_progress(bs, "a.state", PARTITIONS, (int64_t)DEVICES * FAST_SECONDS, 30000);
    FILE *f = fopen(slow, "w");
    assert_non_null(f);
    fclose(f);
    size_t produced = wfx_feed_join(feed);
    assert_int_equal(produced, (size_t)DEVICES * SECONDS - (SECONDS - MUTE_FROM_S));

    char device[16];
    snprintf(device, sizeof device, "dev-%03d", MUTE_DEVICE);
    struct alert_wait aw = {bs, device, control};
    bool seen = tg_harness_wait_until(alerted, &aw, 90000);
    int64_t done = committed(bs);
    char *body = wfx_scrape(w);
    double behind = wfx_metric(body, "tidegate_worker_partitions_behind");
    free(body);
    size_t others, n = silence_alerts(bs, device, &others, true);
    fprintf(stderr,
            "%s: silence alerts for %s: %zu, for devices that kept sending: %zu; records "
            "committed %lld of %zu; partitions_behind %.0f\n",
            control ? "control (wall clock while behind)" : "event clock while behind", device,
            n, others, (long long)done, produced, behind);
    unlink(slow); /* let it finish quickly */
    if (control) {
        assert_true(seen);
        assert_true(others >= 3);
    } else {
        if (!seen)
            fail_msg("no silence alert for %s while the worker was behind", device);
        assert_int_equal(others, 0);
        assert_true(n >= 1);
        /* It came while the worker was behind, not at catch-up. */
        assert_true(done < (int64_t)produced - DEVICES * 10);
        assert_true(behind >= 1);
    }
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w)));
    wfx_worker_destroy(w);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

static void test_behind_is_not_silence(void **state)
{
    (void)state;
    run(false);
}

static void test_control_wall_clock_while_behind(void **state)
{
    (void)state;
    run(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_behind_is_not_silence, teardown),
        cmocka_unit_test_teardown(test_control_wall_clock_while_behind, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
