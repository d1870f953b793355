/* Unit tests for the detectors (worker/detect.c) through the engine, on synthetic series
 * with the shapes real sensors have: constant stretches, gaps of hours and days, duplicated
 * and backward timestamps, daily cycles, level shifts, flatlines, heavy-tailed noise and
 * irregular sampling. Each test says what a user would observe: which alerts, of which
 * kind, how many. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_engine_util.h"

#define T0 INT64_C(1700000000000) /* 2023-11-14 22:13:20 UTC */
#define HOUR INT64_C(3600000)
#define DAY (24 * HOUR)

struct run {
    struct tg_engine_config *ec;
    struct tg_engine *en;
    struct rec r;
    double max_score;
};

static void on_point(void *ud, const struct tg_engine_point *pt)
{
    struct run *ru = ud;
    if (pt->score > ru->max_score)
        ru->max_score = pt->score;
}

static void run_start(struct run *ru, const char *const *sets)
{
    memset(ru, 0, sizeof *ru);
    run_open(&ru->ec, &ru->en, &ru->r, sets);
    tg_engine_set_point_hook(ru->en, on_point, ru);
}

/* ---- constant series --------------------------------------------------------------------- */

static void constant_series_stays_silent(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    /* Two days of exactly one value (a switch, a set point), then of a value that ticks by
     * its resolution now and then (a slowly draining battery). */
    int64_t ts = T0;
    for (int i = 0; i < 2 * 86400 / 10; i++, ts += 10000)
        feed(ru.en, 0, "dev", "setpoint", ts, 21.5);
    double v = 4.100;
    for (int i = 0; i < 2 * 86400 / 10; i++, ts += 10000) {
        if (i % 500 == 499)
            v -= 0.001;
        feed(ru.en, 0, "dev", "battery_v", ts, v);
    }
    expect_opens(&ru, NULL, 0);
    assert_true(ru.max_score < 0.5);
    run_end(&ru);
}

static void constant_series_that_changes_alerts_once(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    int64_t ts = T0;
    for (int i = 0; i < 5000; i++, ts += 10000)
        feed(ru.en, 0, "dev", "setpoint", ts, 21.5);
    for (int i = 0; i < 100; i++, ts += 10000) /* a real change: a new level */
        feed(ru.en, 0, "dev", "setpoint", ts, 25.0);
    expect_opens(&ru, NULL, 1);
    run_end(&ru);
}

/* ---- flatline after variation ------------------------------------------------------------ */

static void flatline_of_a_varying_series_is_stuck(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {7};
    int64_t ts = T0;
    double v = 0;
    for (int i = 0; i < 3000; i++, ts += 1000) {
        v = round((20 + 0.5 * rng_gauss(&g)) * 100) / 100; /* 0.01 resolution */
        feed(ru.en, 0, "dev", "temp", ts, v);
    }
    for (int i = 0; i < 120; i++, ts += 1000) /* stuck for two minutes */
        feed(ru.en, 0, "dev", "temp", ts, v);
    for (int i = 0; i < 600; i++, ts += 1000)
        feed(ru.en, 0, "dev", "temp", ts, round((20 + 0.5 * rng_gauss(&g)) * 100) / 100);
    expect_opens(&ru, "stuck", 1);
    expect_opens(&ru, NULL, 1);
    assert_int_equal(rec_count(&ru.r, "A close"), 1);
    run_end(&ru);
}

/* ---- gaps -------------------------------------------------------------------------------- */

static void gaps_of_hours_and_days_are_silence_not_anomalies(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {11};
    int64_t ts = T0;
    /* A daily cycle of +-5 with noise 0.2, sampled every 30 s, with a 5-hour and a 2-day gap:
     * after each gap the level is somewhere else on the cycle. */
    for (int part = 0; part < 3; part++) {
        for (int i = 0; i < 2000; i++, ts += 30000) {
            double day_frac = (double)(ts % DAY) / (double)DAY;
            feed(ru.en, 0, "dev", "temp", ts, 15 + 5 * sin(2 * M_PI * day_frac) +
                                                  0.2 * rng_gauss(&g));
        }
        ts += part == 0 ? 5 * HOUR : 2 * DAY;
    }
    /* Each gap is one silence incident (opened and closed when data returns), nothing else. */
    expect_opens(&ru, "silence", 2);
    expect_opens(&ru, NULL, 2);
    assert_int_equal(rec_count(&ru.r, "A close"), 2);
    run_end(&ru);
}

static void sweep_reports_silence_with_event_time_ids(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    int64_t ts = T0;
    struct rng g = {3};
    for (int i = 0; i < 100; i++, ts += 10000)
        feed(ru.en, 0, "dev", "temp", ts, 20 + rng_gauss(&g));
    int64_t last = ts - 10000;
    tg_engine_sweep(ru.en, last + 500); /* the sweep sees the last reading arrive */
    tg_engine_sweep(ru.en, last + 30000); /* 3 periods: not yet */
    expect_opens(&ru, "silence", 0);
    tg_engine_sweep(ru.en, last + 60000); /* 6 periods after the sweep saw it: silent */
    tg_engine_sweep(ru.en, last + 90000); /* still: no second alert */
    expect_opens(&ru, "silence", 1);
    char want[96];
    snprintf(want, sizeof want, "A open dev/temp/silence/%lld ", (long long)(last + 10000));
    size_t i = 0;
    while (strncmp(ru.r.lines[i], "A open", 6) != 0)
        i++;
    if (strncmp(ru.r.lines[i], want, strlen(want)) != 0)
        fail_msg("got %s", ru.r.lines[i]);
    /* Data returns: the same incident closes. */
    feed(ru.en, 0, "dev", "temp", last + 200000, 20);
    assert_int_equal(rec_count(&ru.r, "A close dev/temp/silence/"), 1);
    expect_opens(&ru, NULL, 1);
    run_end(&ru);
}

/* ---- time order -------------------------------------------------------------------------- */

static void sweep_is_not_fooled_by_a_device_clock_minutes_behind(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {4};
    /* The device's clock is 4 minutes behind the worker's: every reading's event time is
     * 240 s old when it arrives. Readings every 10 s, a sweep every second. */
    int64_t wall = T0, skew = 240000;
    for (int i = 0; i < 2000; i++) {
        if (i % 10 == 0)
            feed(ru.en, 0, "dev", "temp", wall - skew, 20 + rng_gauss(&g));
        tg_engine_sweep(ru.en, wall);
        wall += 1000;
    }
    expect_opens(&ru, NULL, 0);
    /* It stops: silence is found on the wall clock, with its id in the device's time. */
    int64_t last_event = wall - 1000 - 9000 - skew;
    for (int i = 0; i < 120; i++, wall += 1000)
        tg_engine_sweep(ru.en, wall);
    expect_opens(&ru, "silence", 1);
    char want[96];
    snprintf(want, sizeof want, "A open dev/temp/silence/%lld ", (long long)(last_event + 10000));
    if (strncmp(ru.r.lines[ru.r.n - 1], want, strlen(want)) != 0)
        fail_msg("got %s", ru.r.lines[ru.r.n - 1]);
    run_end(&ru);
}

static void duplicated_and_backward_timestamps_are_counted_not_scored(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {5};
    int64_t ts = T0;
    for (int i = 0; i < 3000; i++, ts += 1000) {
        double v = 20 + 0.3 * rng_gauss(&g);
        feed(ru.en, 0, "dev", "temp", ts, v);
        if (i % 10 == 0)
            feed(ru.en, 0, "dev", "temp", ts, v); /* a resend */
        if (i % 37 == 0)
            feed(ru.en, 0, "dev", "temp", ts - 700, 99); /* behind: even an absurd value */
    }
    struct tg_engine_stats st;
    tg_engine_stats(ru.en, &st);
    assert_int_equal(st.backward_ts, 300 + 82);
    expect_opens(&ru, NULL, 0);
    run_end(&ru);
}

/* ---- level shift and drift --------------------------------------------------------------- */

static void level_shift_is_one_incident(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {9};
    int64_t ts = T0;
    for (int i = 0; i < 4000; i++, ts += 1000) {
        double v = 50 + rng_gauss(&g);
        if (i >= 3000 && i < 3300)
            v += 4; /* four standard deviations for five minutes */
        feed(ru.en, 0, "dev", "hum", ts, v);
    }
    expect_opens(&ru, NULL, 1);
    /* The alert starts at the shift, within a few samples. */
    size_t i = 0;
    while (strncmp(ru.r.lines[i], "A open", 6) != 0)
        i++;
    const char *st = strstr(ru.r.lines[i], "\"start_ts\":");
    long long start = atoll(st + 11);
    assert_true(start >= T0 + 3000 * 1000 && start <= T0 + 3020 * 1000);
    run_end(&ru);
}

static void small_sustained_shift_found_by_ewma(void **state)
{
    (void)state;
    struct run ru;
    /* Only the shift detector: 2 standard deviations is too small for a point test. */
    const char *sets[] = {"detect.level=off", "detect.rate=off", "detect.stuck=off", NULL};
    run_start(&ru, sets);
    struct rng g = {13};
    int64_t ts = T0;
    for (int i = 0; i < 6000; i++, ts += 1000) {
        double v = 10 + rng_gauss(&g);
        if (i >= 5000 && i < 5200)
            v += 2;
        feed(ru.en, 0, "dev", "x", ts, v);
    }
    expect_opens(&ru, "shift", 1);
    expect_opens(&ru, NULL, 1);
    run_end(&ru);
}

/* A slow drift of 5 over 15 minutes must not teach the series that its spread is 5 wide:
 * a level shift soon after it ends is still found at once. */
static void drift_does_not_hide_a_later_shift(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {37};
    int64_t ts = T0;
    double wander = 0;
    int shift_at = 3000 + 900 + 100;
    for (int i = 0; i < shift_at + 300; i++, ts += 1000) {
        wander = 0.98 * wander + 0.04 * rng_gauss(&g); /* like the simulator's temperature */
        double v = 20 + wander + 0.05 * rng_gauss(&g);
        if (i >= 3000 && i < 3900)
            v -= 5.0 * (i - 3000) / 900.0;
        if (i >= shift_at)
            v += 4.5;
        feed(ru.en, 0, "dev", "temp", ts, v);
    }
    char want[96];
    snprintf(want, sizeof want, "A open dev/temp/level/%lld ", (long long)(T0 + shift_at * INT64_C(1000)));
    bool found = false;
    for (size_t i = 0; i < ru.r.n; i++)
        found |= strncmp(ru.r.lines[i], want, strlen(want)) == 0;
    if (!found) {
        fprintf(stderr, "no alert opened at the shift (%s); alerts:\n", want);
        for (size_t i = 0; i < ru.r.n; i++)
            if (strncmp(ru.r.lines[i], "A open", 6) == 0)
                fprintf(stderr, "  %.200s\n", ru.r.lines[i]);
        fail();
    }
    run_end(&ru);
}

/* The first alert opened in [from, to) event time, or -1. */
static int64_t first_open_between(const struct run *ru, int64_t from, int64_t to)
{
    for (size_t i = 0; i < ru->r.n; i++) {
        const char *l = ru->r.lines[i];
        const char *st = strstr(l, "\"start_ts\":");
        if (strncmp(l, "A open ", 7) != 0 || !st)
            continue;
        long long t = atoll(st + 11);
        if (t >= from && t < to)
            return t;
    }
    return -1;
}

/* Runs a day-like series of n samples through a fresh engine with or without persistence
 * (shift_persist_samples=0); returns the alerts opened in [from_s, to_s) seconds, or all
 * shift/level/rate opens when to_s is 0. drift_m: the drift's full offset (0: none),
 * injected the way tidegate-sim does: a tenth at once, the rest over len_s. */
static size_t wander_run(uint64_t seed, bool persist, int n, int start_s, int len_s,
                         double drift_m, bool daily, int64_t *first_open_s)
{
    struct run ru;
    const char *sets[] = {persist ? "detect.shift=on" : "detect.shift_persist_samples=0", NULL};
    run_start(&ru, sets);
    struct rng g = {seed};
    int64_t ts = T0;
    double wander = 0;
    for (int i = 0; i < n; i++, ts += 1000) {
        /* the simulator's temperature: an AR(1) wander with a 50 s memory, and white noise */
        wander = 0.98 * wander + 0.04 * rng_gauss(&g);
        if (daily && i >= 40000 && i < 47200)
            continue; /* two hours without data: a silence, not a drift */
        double v = 18 + wander + 0.05 * rng_gauss(&g);
        if (daily)
            v += 5 * sin(2 * M_PI * (double)i / 86400.0);
        if (drift_m != 0 && i >= start_s && i < start_s + len_s)
            v += drift_m * (0.1 + 0.9 * (i - start_s) / len_s);
        feed(ru.en, 0, "dev", "temp", ts, v);
    }
    size_t opens = opens_of(&ru, "shift") + opens_of(&ru, "level") + opens_of(&ru, "rate");
    if (first_open_s) {
        int64_t at = first_open_between(&ru, T0 + start_s * INT64_C(1000),
                                        T0 + (start_s + len_s) * INT64_C(1000));
        *first_open_s = at < 0 ? -1 : (at - T0) / 1000;
    }
    run_end(&ru);
    return opens;
}

/* A sensor that wanders slowly and then drifts by 4 (20 of its standard deviations) over 15
 * minutes. The chart's spread learns while the drift grows, so the chart alone often stays at
 * 2 to 3.5 deviations, under its threshold, for the whole drift; the run of samples on one
 * side finds such drifts. Over 12 series: persistence finds every drift the chart alone
 * finds, and at least 2 more. */
static void slow_drift_on_a_wandering_sensor_is_found(void **state)
{
    (void)state;
    int found_on = 0, found_off = 0;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        int64_t at_on, at_off;
        wander_run(seed, true, 250 + 900, 250, 900, -4.0, false, &at_on);
        wander_run(seed, false, 250 + 900, 250, 900, -4.0, false, &at_off);
        found_on += at_on >= 0;
        found_off += at_off >= 0;
        if (at_off >= 0 && at_on < 0)
            fail_msg("seed %llu: the chart alone found the drift, with persistence not",
                     (unsigned long long)seed);
    }
    fprintf(stderr, "drifts found: %d of 12 with persistence, %d without\n", found_on, found_off);
    assert_true(found_on >= found_off + 2);
}

/* The same wander for a day, with a daily cycle of 5 degrees and a gap of two hours, and no
 * drift: persistence must not turn the wander's excursions (which cross back within a minute
 * or two) into alerts: no more alerts than the chart alone opens, a few a day at most. */
static void wandering_sensor_with_a_daily_cycle_stays_quiet(void **state)
{
    (void)state;
    for (uint64_t seed = 59; seed <= 61; seed++) {
        size_t on = wander_run(seed, true, 86400, 0, 0, 0, true, NULL);
        size_t off = wander_run(seed, false, 86400, 0, 0, 0, true, NULL);
        fprintf(stderr, "seed %llu: %zu alerts a day with persistence, %zu without\n",
                (unsigned long long)seed, on, off);
        assert_true(on <= off);
        assert_true(on <= 2);
    }
}

/* A humidity-like series, as the simulator makes it: white noise 0.6 plus 2.5 x the
 * temperature's AR(1) wander (sd about 0.5, 50 s memory), from its first sample; a drift of
 * drift_m from start_s growing over len_s (a tenth at once). Returns the alerts opened; with
 * first_open_s, the first open at or after start_s (-1: none). */
static size_t humid_run(uint64_t seed, const char *drift_min, int n, int start_s, int len_s,
                        double drift_m, int64_t *first_open_s)
{
    char set[64];
    snprintf(set, sizeof set, "detect.drift_min=%s", drift_min);
    const char *sets[] = {set, NULL};
    struct run ru;
    run_start(&ru, sets);
    struct rng g = {seed};
    int64_t ts = T0;
    double wander = 0;
    for (int i = 0; i < n; i++, ts += 1000) {
        wander = 0.98 * wander + 0.04 * rng_gauss(&g);
        double v = 55 - 2.5 * wander + 0.6 * rng_gauss(&g);
        if (drift_m != 0 && i >= start_s)
            v += drift_m * (0.1 + 0.9 * (i - start_s) / len_s);
        feed(ru.en, 0, "dev", "humidity", ts, v);
    }
    size_t opens = opens_of(&ru, "shift") + opens_of(&ru, "level") + opens_of(&ru, "rate");
    if (first_open_s) {
        int64_t at = first_open_between(&ru, T0 + start_s * INT64_C(1000), ts + 1);
        *first_open_s = at < 0 ? -1 : (at - T0) / 1000;
    }
    run_end(&ru);
    return opens;
}

/* drift_min: a young series (3 minutes old) drifts by -12 %RH over 20 minutes; the run ends
 * 6 minutes in, the offset then about 4.4 %RH, 9 times the wander's sd. With drift_min at
 * 1.5 (above the gap such a wander shows) the drift test finds it on 9 of 12 series, none
 * without the key (checked: at least 8, and 6 more than without; never later). */
static void drift_min_finds_a_young_ramp(void **state)
{
    (void)state;
    int found_on = 0, found_off = 0;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        int64_t at_on, at_off;
        humid_run(seed, "1.5", 180 + 360, 180, 1200, -12.0, &at_on);
        humid_run(seed, "0", 180 + 360, 180, 1200, -12.0, &at_off);
        found_on += at_on >= 0;
        found_off += at_off >= 0;
        if (at_off >= 0 && (at_on < 0 || at_on > at_off))
            fail_msg("seed %llu: found at %lld s without drift_min, at %lld s with it",
                     (unsigned long long)seed, (long long)at_off, (long long)at_on);
    }
    fprintf(stderr, "young drifts found: %d of 12 with drift_min 1.5, %d without\n", found_on,
            found_off);
    assert_true(found_on >= 8);
    assert_true(found_on >= found_off + 6);
}

/* The same wander without a drift, young (10 minutes) and for an hour: drift_min 1.5 opens
 * no alert that the series without it does not open. A drift_min inside the wander (0.3)
 * would (seen: the check below fails with it). */
static void drift_min_leaves_a_wander_quiet(void **state)
{
    (void)state;
    size_t on = 0, off = 0;
    for (uint64_t seed = 21; seed <= 32; seed++) {
        on += humid_run(seed, "1.5", seed <= 26 ? 600 : 3600, 0, 1, 0, NULL);
        off += humid_run(seed, "0", seed <= 26 ? 600 : 3600, 0, 1, 0, NULL);
    }
    fprintf(stderr, "wander alone: %zu alerts with drift_min 1.5, %zu without\n", on, off);
    assert_true(on <= off);
}

/* A spike in a series' first seconds is as real as a later one: the level detector judges
 * during the warm-up already, against a raised threshold. */
static void spike_during_warm_up_is_found(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {41};
    int64_t ts = T0;
    for (int i = 0; i < 200; i++, ts += 1000)
        feed(ru.en, 0, "dev", "temp", ts, 20 + 0.2 * rng_gauss(&g) + (i == 14 ? 8 : 0));
    expect_opens(&ru, "level", 1);
    expect_opens(&ru, NULL, 1);
    run_end(&ru);
}

/* ---- noise ------------------------------------------------------------------------------- */

static void noisy_heavy_tailed_series_does_not_alert_constantly(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {17};
    int64_t ts = T0;
    /* Student-t-like noise: a Gaussian whose scale is sometimes 4x, one sample in 20. A day
     * at 1 Hz. */
    for (int i = 0; i < 86400; i++, ts += 1000) {
        double scale = rng_uniform(&g) < 0.05 ? 4 : 1;
        feed(ru.en, 0, "dev", "vib", ts, scale * rng_gauss(&g));
    }
    size_t n = opens_of(&ru, NULL);
    /* Without adaptation this series opens about a hundred alerts a day (noise_adapt=off). */
    if (n > 5)
        expect_opens(&ru, NULL, 5);
    run_end(&ru);
}

static void gaussian_noise_has_no_false_alerts(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, NULL);
    struct rng g = {19};
    int64_t ts = T0;
    for (int i = 0; i < 86400; i++, ts += 1000)
        feed(ru.en, 0, "dev", "p", ts, 1000 + 0.5 * rng_gauss(&g));
    expect_opens(&ru, NULL, 0);
    run_end(&ru);
}

/* ---- rate of change ---------------------------------------------------------------------- */

static void rate_detector_handles_irregular_sampling(void **state)
{
    (void)state;
    struct run ru;
    const char *sets[] = {"detect.level=off", "detect.shift=off", NULL};
    run_start(&ru, sets);
    struct rng g = {23};
    int64_t ts = T0;
    double v = 0;
    /* A ramp of 0.1 per second, sampled at jittered intervals of 1..20 s: steps of 0.1 to 2,
     * all the same rate. Then the slope jumps to 2 per second. */
    for (int i = 0; i < 3000; i++) {
        int64_t dt = 1000 + (int64_t)(rng_uniform(&g) * 19000);
        ts += dt;
        v += 0.1 * (double)dt / 1000.0 + 0.01 * rng_gauss(&g);
        feed(ru.en, 0, "dev", "level_m", ts, v);
    }
    expect_opens(&ru, NULL, 0);
    for (int i = 0; i < 5; i++) {
        ts += 5000;
        v += 2 * 5;
        feed(ru.en, 0, "dev", "level_m", ts, v);
    }
    expect_opens(&ru, "rate", 1);
    run_end(&ru);
}

/* ---- seasonal ---------------------------------------------------------------------------- */

static void seasonal_baseline_knows_the_time_of_day(void **state)
{
    (void)state;
    struct run ru;
    const char *sets[] = {"detect.seasonal=on", NULL};
    run_start(&ru, sets);
    struct rng g = {29};
    int64_t ts = (T0 / DAY) * DAY;
    /* Six days of a daily cycle of +-6 sampled every minute. On day 6, from 12:00 to 14:00
     * (the peak, +6), the value sits at the daily mean: normal for the day as a whole, slow
     * enough for the point detectors, wrong for that time of day. */
    size_t before = 0;
    for (int i = 0; i < 7 * 1440; i++, ts += 60000) {
        double h = (double)(ts % DAY) / (double)HOUR;
        double v = 10 + 6 * sin(2 * M_PI * (h - 6) / 24) + 0.3 * rng_gauss(&g);
        if (i >= 6 * 1440 + 10 * 60 && i < 6 * 1440 + 16 * 60) {
            /* Ease from the cycle to the mean over two hours, hold, ease back. */
            double f = 1;
            int k = i - (6 * 1440 + 10 * 60);
            if (k < 120)
                f = k / 120.0;
            else if (k >= 240)
                f = (360 - k) / 120.0;
            v = v * (1 - f) + (10 + 0.3 * rng_gauss(&g)) * f;
        }
        if (i == 6 * 1440)
            before = opens_of(&ru, NULL);
        feed(ru.en, 0, "dev", "temp", ts, v);
    }
    assert_int_equal(before, 0); /* six normal days: nothing */
    /* Found by the seasonal detector alone. A six-hour deviation may come out as up to three
     * alerts (where it eases in and out it dips under the threshold). */
    size_t n = opens_of(&ru, "seasonal");
    assert_int_equal(opens_of(&ru, NULL), n);
    assert_true(n >= 1 && n <= 3);
    run_end(&ru);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(constant_series_stays_silent),
        cmocka_unit_test(constant_series_that_changes_alerts_once),
        cmocka_unit_test(flatline_of_a_varying_series_is_stuck),
        cmocka_unit_test(gaps_of_hours_and_days_are_silence_not_anomalies),
        cmocka_unit_test(sweep_reports_silence_with_event_time_ids),
        cmocka_unit_test(sweep_is_not_fooled_by_a_device_clock_minutes_behind),
        cmocka_unit_test(duplicated_and_backward_timestamps_are_counted_not_scored),
        cmocka_unit_test(level_shift_is_one_incident),
        cmocka_unit_test(small_sustained_shift_found_by_ewma),
        cmocka_unit_test(drift_does_not_hide_a_later_shift),
        cmocka_unit_test(slow_drift_on_a_wandering_sensor_is_found),
        cmocka_unit_test(wandering_sensor_with_a_daily_cycle_stays_quiet),
        cmocka_unit_test(drift_min_finds_a_young_ramp),
        cmocka_unit_test(drift_min_leaves_a_wander_quiet),
        cmocka_unit_test(spike_during_warm_up_is_found),
        cmocka_unit_test(noisy_heavy_tailed_series_does_not_alert_constantly),
        cmocka_unit_test(gaussian_noise_has_no_false_alerts),
        cmocka_unit_test(rate_detector_handles_irregular_sampling),
        cmocka_unit_test(seasonal_baseline_knows_the_time_of_day),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
