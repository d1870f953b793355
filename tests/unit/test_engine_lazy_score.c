/*
 * test_engine_lazy_score: the engine computes a point's score (an exp2) only where it is read:
 * with a point hook, with an alert open, or at a ratio that may cross the alert threshold
 * (engine.c, quiet_ratio). Skipping it elsewhere must not change any output: the same input
 * through an engine with a point hook (every score computed, as test_engine_golden pins them)
 * and through one without gives the same alerts and aggregates, byte for byte, at thresholds
 * from 0.05 to 0.999, on series whose spikes land at every ratio around the threshold.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_engine_util.h"

static void count_point(void *ud, const struct tg_engine_point *pt)
{
    (void)pt;
    (*(size_t *)ud)++;
}

/* Runs the input through a fresh engine of ec, recording its outputs into r; with_hook sets
 * a point hook (which makes the engine compute every score). */
static void run(const struct tg_engine_config *ec, bool with_hook, struct rec *r)
{
    struct tg_engine *en = tg_engine_new(ec, rec_emit, r);
    assert_non_null(en);
    size_t points = 0;
    if (with_hook)
        tg_engine_set_point_hook(en, count_point, &points);
    assert_int_equal(tg_engine_partition_add(en, 0), TG_OK);
    struct rng g = {UINT64_C(0x2545f4914f6cdd1d)};
    static const char *const devices[] = {"d0", "d1", "d2", "d3"};
    static const char *const metrics[] = {"temperature_c", "humidity_pct"};
    int64_t t0 = INT64_C(1700000000000);
    for (int i = 0; i < 4000; i++) {
        for (int d = 0; d < 4; d++) {
            struct tg_metric m[2];
            for (int k = 0; k < 2; k++) {
                double x = 20 + d + k + rng_gauss(&g);
                /* Spikes of every size from nothing to 40 deviations: the ratios land
                 * below, around and above every threshold. */
                if (rng_uniform(&g) < 0.03)
                    x += 40 * rng_uniform(&g) * (rng_uniform(&g) < 0.5 ? -1 : 1);
                m[k] = (struct tg_metric){.name = metrics[k], .value = x};
            }
            struct tg_reading rd = {.device = devices[d], .ts_ms = t0 + (int64_t)i * 1000 + d,
                                    .n_metrics = 2, .metrics = m};
            assert_int_equal(tg_engine_process(en, 0, &rd), TG_OK);
        }
    }
    tg_engine_flush(en);
    if (with_hook)
        assert_int_equal(points, 4000 * 4 * 2);
    tg_engine_destroy(en);
}

static void outputs_do_not_depend_on_the_point_hook(void **state)
{
    (void)state;
    static const char *const thresholds[] = {"alert.threshold=0.05", "alert.threshold=0.5",
                                             "alert.threshold=0.9", "alert.threshold=0.999"};
    for (size_t t = 0; t < sizeof thresholds / sizeof *thresholds; t++) {
        /* close_threshold at most the threshold; quiet_samples 1 and no noise adaptation so
         * that alerts open and close often and every crossing counts */
        const char *sets[] = {thresholds[t], "alert.close_threshold=0.04", "alert.quiet_ms=0",
                              "alert.quiet_samples=1", "detect.seasonal=on",
                              "detect.noise_adapt=off", NULL};
        char err[256];
        struct tg_engine_config *ec = make_config(sets, err, sizeof err);
        if (!ec)
            fail_msg("%s", err);
        struct rec with = {0}, without = {0};
        run(ec, true, &with);
        run(ec, false, &without);
        /* the check can say no: there are alerts to compare */
        if (with.opens < 10)
            fail_msg("%s: only %zu alerts opened", thresholds[t], with.opens);
        if (with.n != without.n)
            fail_msg("%s: %zu outputs with the point hook, %zu without (opens %zu vs %zu)",
                     thresholds[t], with.n, without.n, with.opens, without.opens);
        for (size_t i = 0; i < with.n; i++)
            if (strcmp(with.lines[i], without.lines[i]) != 0)
                fail_msg("%s: output %zu differs:\n  %s\n  %s", thresholds[t], i,
                         with.lines[i], without.lines[i]);
        print_message("%s: %zu outputs (%zu alerts opened) equal\n", thresholds[t], with.n,
                      with.opens);
        rec_free(&with);
        rec_free(&without);
        tg_engine_config_destroy(ec);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(outputs_do_not_depend_on_the_point_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
