/*
 * test_worker_silence.c - the silence sweep tells a stalled pipeline from a silent device.
 *
 * The input is what the worker sees when the gateway loses Kafka for a while: records flow
 * (one reading a second of event time from each of 12 devices, paced at 10 event-seconds per
 * real second), then nothing arrives for several seconds, longer than silence_factor x the
 * devices' period (3 x 1 s here), and then the gateway's backlog arrives at once, every
 * reading of the outage with its own event time, followed by records flowing again. It is
 * produced straight into devkafka (worker_fixture.c): the gateway's Kafka outage and its
 * backlog are exactly such a pause and such a burst in the input topic.
 *
 *   1. Through the stall and the backlog, no silence alert: every device kept reporting (its
 *      readings were held upstream), and the partitions' clocks stopped while nothing came.
 *   2. Then one device stops for good while the others flow: a silence alert opens for it,
 *      and for no other device. It comes last, so it also shows that sweeps ran after
 *      everything else (the absence in 1 is not for want of a sweep).
 *
 * The control run repeats 1 with the stall rule out of the way (stall_after_ms longer than
 * the test) and requires the false silence alerts the rule exists to prevent: so the scenario
 * really provokes them, and the assertion of 1 can fail.
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
#define PACE_MS 100      /* real ms per second of event time while flowing */
#define STALL_MS 6000    /* real ms with no input: 2 x silence_factor x period */
#define MUTE_DEVICE 0
#define SILENCE_EXTRA(stall_ms)                                                                \
    "silence = true\nsilence_factor = 3\n"                                                     \
    "[worker]\nsweep_interval_ms = 200\nstall_after_ms = " stall_ms "\n"

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

/* Silence alerts in the alerts topic: how many, and how many of them are not device's. */
static size_t silence_alerts(const char *bs, const char *device, size_t *others)
{
    size_t mine = wfx_silence_alerts(bs, "a.anomalies", device, others, 5);
    return mine + *others;
}

struct silence_wait {
    const char *bs;
    const char *device;
};

static bool device_silent(void *ud)
{
    struct silence_wait *sw = ud;
    size_t others;
    return silence_alerts(sw->bs, sw->device, &others) > others;
}

/* Flowing [0, 60), a stall, the backlog [60, 120) at once, flowing [120, 180); then, when
 * mute, device MUTE_DEVICE silent while the others flow [180, 260). */
static void run(const char *stall_after_ms, bool mute, bool real_kafka)
{
    struct wfx_cluster *cl = wfx_cluster_start(real_kafka);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-silence");
    assert_non_null(dir);
    const int seconds = mute ? 260 : 180;
    struct wfx_input in = {.n_devices = DEVICES, .base_ts_ms = wfx_recent_base_ms(seconds)};
    char extra[256];
    snprintf(extra, sizeof extra, SILENCE_EXTRA("%s"), stall_after_ms);
    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "silence", "a.", extra);
    wfx_worker_wait_assigned(w, 30000);

    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, 60, PACE_MS);
    assert_int_equal(wfx_feed_join(feed), (size_t)DEVICES * 60);
    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 60000));
    /* The stall: the gateway cannot reach Kafka. Waiting is the scenario here, not a way of
     * synchronizing: nothing is expected to happen during it. */
    int64_t until = tg_harness_now_ms() + STALL_MS;
    while (tg_harness_now_ms() < until)
        usleep(100000);
    assert_int_equal(wfx_produce(bs, "telemetry", &in, 60, 120), (size_t)DEVICES * 60);
    feed = wfx_feed_start(bs, "telemetry", &in, 120, 180, PACE_MS);
    assert_int_equal(wfx_feed_join(feed), (size_t)DEVICES * 60);

    size_t others;
    if (mute) {
        in.mute_device = MUTE_DEVICE;
        in.mute_from_s = 180;
        feed = wfx_feed_start(bs, "telemetry", &in, 180, seconds, PACE_MS);
        assert_int_equal(wfx_feed_join(feed), (size_t)DEVICES * 80 - 80);
        char device[16];
        snprintf(device, sizeof device, "dev-%03d", MUTE_DEVICE);
        struct silence_wait sw = {bs, device};
        if (!tg_harness_wait_until(device_silent, &sw, 30000))
            fail_msg("no silence alert for %s, which stopped sending while its partition "
                     "flowed", device);
        size_t n = silence_alerts(bs, device, &others);
        fprintf(stderr, "silence alerts: %zu, %zu of them for devices that did not stop\n", n,
                others);
        assert_int_equal(others, 0);
        char *body = wfx_scrape(w);
        double stalls = wfx_metric(body, "tidegate_worker_partition_stalls_total");
        free(body);
        fprintf(stderr, "tidegate_worker_partition_stalls_total %.0f\n", stalls);
        assert_true(stalls >= 1);
    } else {
        assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
        assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 60000));
        size_t n = silence_alerts(bs, "", &others);
        fprintf(stderr, "control, no stall rule: %zu silence alerts after the stall\n", n);
        assert_true(n >= DEVICES / 2);
    }
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w)));
    wfx_worker_destroy(w);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

static void test_stall_is_not_silence(void **state)
{
    (void)state;
    run("1000", true, false);
}

static void test_control_without_the_stall_rule(void **state)
{
    (void)state;
    run("600000", false, false);
}

/* The same stall and silent device on a real Kafka broker: its fetch sessions, batching and
 * read_committed high watermarks (which the sweep reads to tell a behind partition) are the
 * real ones. The control is about the scenario, not the tier: it runs on devkafka only. */
static void test_stall_is_not_silence_real_kafka(void **state)
{
    (void)state;
    run("1000", true, true);
}

/* argv[1] "real": the first test on a real Kafka broker (the CTest entry with label
 * kafka-real). */
int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "real") == 0) {
        const struct CMUnitTest real[] = {
            cmocka_unit_test_teardown(test_stall_is_not_silence_real_kafka, teardown),
        };
        return cmocka_run_group_tests(real, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_stall_is_not_silence, teardown),
        cmocka_unit_test_teardown(test_control_without_the_stall_rule, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
