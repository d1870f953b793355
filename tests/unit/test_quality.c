/*
 * test_quality.c - detection quality floors: the simulator's signals and labelled anomalies
 * (issue 9's setup: 1,000 devices x 10 min at 1 Hz, 2 anomalies per device-hour), offline
 * through the worker's engine and scored by `tidegate-sim score`'s comparison
 * (tests/quality/quality_sim.h), with the shipped config/tidegate-worker.ini on seeds 1-3,
 * the engine's built-in defaults on seed 1, and a 60-minute run for the steady state.
 *
 * Every run is deterministic (the seed fixes the signals, the anomalies and the engine's
 * input order), so the floors sit below the measured figures (README, the worker engine's
 * quality table) by a margin for harmless tuning, not for chance: a detector that stops
 * firing, a matcher that drifts, or a config that no longer loads fails here.
 *
 *   test_quality [--set section.key=value]...   (applied to every case: to see it fail,
 *                                                 e.g. --set detect.shift=false)
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

#include "quality_sim.h"

static const char **extra_sets;
static int n_extra_sets;

struct floors {
    double min_recall[TG_ANOMALY_KINDS]; /* per label kind, in enum tg_anomaly_kind order */
    double min_f1;
    double max_false_per_device_hour;
};

struct quality_case {
    const char *config; /* NULL: the engine's defaults */
    struct tg_quality_opts opts;
    const struct floors *floors;
};

/* Floors per run, each a couple of labels under what the run measured (README, the worker
 * engine's quality table: "measured" below): room for harmless tuning, none needed for
 * chance. Some sit just above what the run gives with one mechanism off, so that they guard
 * it: drift on seeds 1 and 2 (0.691 and 0.690 without the drift test, detect_drift.c; 0.618
 * and 0.603 without the shift persistence either), spike on the defaults (0.792 without the
 * level detector). Order: spike, level_shift, drift, stuck, noise_burst, silence. */
#define RECALL(sp, ls, dr, st, nb, si)                                                        \
    {[TG_ANOMALY_SPIKE] = (sp), [TG_ANOMALY_LEVEL_SHIFT] = (ls), [TG_ANOMALY_DRIFT] = (dr),   \
     [TG_ANOMALY_STUCK] = (st), [TG_ANOMALY_NOISE_BURST] = (nb), [TG_ANOMALY_SILENCE] = (si)}

/* Issue 9's 10-minute run, shipped config (predict on vibration_g, drift test on, drift_min
 * on vibration_g, humidity_pct and temperature_c). Measured: seed 1 0.962 0.980 0.909 0.980
 * 0.984 1.000, F1 0.980, 0.020 false per device-hour; seed 2 0.974 1.000 0.914 1.000 1.000
 * 0.981, F1 0.987, 0.007; seed 3 1.000 1.000 0.738 1.000 0.982 1.000, F1 0.970, 0.040.
 * Drifts are cut short by the run's end, hence their low recall. The spike floors guard the
 * vibration_g rule's predict detector (0.887, 0.897 and 0.981 without it), the drift floors
 * drift_min (0.873, 0.845, 0.690 without vibration_g's; 0.818, 0.776, 0.619 without any;
 * 0.691, 0.690, 0.524 without the drift test). */
static const struct floors shipped_1 = {RECALL(0.92, 0.94, 0.88, 0.94, 0.95, 0.96), 0.95, 0.05};
static const struct floors shipped_2 = {RECALL(0.92, 0.96, 0.88, 0.94, 0.95, 0.94), 0.95, 0.05};
static const struct floors shipped_3 = {RECALL(0.96, 0.96, 0.70, 0.94, 0.94, 0.95), 0.94, 0.06};
/* The engine's defaults, seed 1. Measured 0.849 0.941 0.782 0.980 0.934 1.000, F1 0.950,
 * 0.020. */
static const struct floors defaults_1 = {RECALL(0.80, 0.90, 0.74, 0.94, 0.90, 0.96), 0.93, 0.05};
/* 250 devices x 60 min, 1 per device-hour, seed 3, shipped config: past warm-up and with
 * drifts that run their course. Measured 1.000 1.000 0.978 1.000 1.000 1.000, F1 0.977,
 * 0.048 (0.044 without drift_min). */
static const struct floors steady_3 = {RECALL(0.95, 0.94, 0.93, 0.94, 0.95, 0.95), 0.95, 0.07};

static void run_case(const struct quality_case *qc)
{
    char err[512];
    struct tg_engine_config *ec =
        tg_quality_engine_config(qc->config, extra_sets, n_extra_sets, err, sizeof err);
    if (!ec)
        fail_msg("config: %s", err);
    struct tg_sim_score *sc = tg_sim_score_new(TG_QUALITY_SLACK_MS);
    assert_non_null(sc);
    if (tg_quality_run(ec, &qc->opts, sc, err, sizeof err) != 0)
        fail_msg("run: %s", err);
    struct tg_sim_score_result res;
    assert_int_equal(tg_sim_score_finish(sc, &res), 0);

    /* Every floor is checked and every miss named before failing, so that one run says all
     * that is wrong. */
    int bad = 0;
    printf("%s, %d devices x %d min, %.0f/device-hour, seed %llu:\n",
           qc->config ? "shipped config" : "engine defaults", qc->opts.devices, qc->opts.minutes,
           qc->opts.rate_per_hour, (unsigned long long)qc->opts.seed);
    for (int k = 0; k < TG_ANOMALY_KINDS; k++) {
        const struct tg_sim_score_kind *kd = &res.kind[k];
        double floor = qc->floors->min_recall[k];
        /* Each kind has dozens of labels in these runs: a kind without any means the
         * generator changed, which the floors were not measured on. */
        bool ok = kd->labels >= 10 && kd->recall >= floor;
        printf("  %-12s labels %3llu recall %.3f (floor %.2f)%s\n",
               tg_anomaly_kind_name((enum tg_anomaly_kind)k), (unsigned long long)kd->labels,
               kd->recall, floor, ok ? "" : "  <-- BELOW");
        bad += !ok;
    }
    bool f1_ok = res.all.f1 >= qc->floors->min_f1;
    bool false_ok = res.has_exposure &&
                    res.false_per_device_hour <= qc->floors->max_false_per_device_hour;
    printf("  F1 %.3f (floor %.2f)%s, false alerts %llu = %.4f per clean device-hour (ceiling "
           "%.2f)%s\n",
           res.all.f1, qc->floors->min_f1, f1_ok ? "" : "  <-- BELOW",
           (unsigned long long)res.all.false_alerts, res.false_per_device_hour,
           qc->floors->max_false_per_device_hour, false_ok ? "" : "  <-- ABOVE");
    bad += !f1_ok + !false_ok;
    tg_sim_score_destroy(sc);
    tg_engine_config_destroy(ec);
    if (bad)
        fail_msg("%d quality floor(s) not met (see above)", bad);
}

#define ISSUE_RUN(seed_) {.devices = 1000, .minutes = 10, .rate_per_hour = 2, .seed = (seed_)}

static void shipped_seed1(void **st)
{
    (void)st;
    run_case(&(struct quality_case){TG_SHIPPED_WORKER_INI, ISSUE_RUN(1), &shipped_1});
}
static void shipped_seed2(void **st)
{
    (void)st;
    run_case(&(struct quality_case){TG_SHIPPED_WORKER_INI, ISSUE_RUN(2), &shipped_2});
}
static void shipped_seed3(void **st)
{
    (void)st;
    run_case(&(struct quality_case){TG_SHIPPED_WORKER_INI, ISSUE_RUN(3), &shipped_3});
}
static void defaults_seed1(void **st)
{
    (void)st;
    run_case(&(struct quality_case){NULL, ISSUE_RUN(1), &defaults_1});
}
static void shipped_steady_state(void **st)
{
    (void)st;
    run_case(&(struct quality_case){
        TG_SHIPPED_WORKER_INI,
        {.devices = 250, .minutes = 60, .rate_per_hour = 1, .seed = 3},
        &steady_3});
}

int main(int argc, char **argv)
{
    extra_sets = calloc((size_t)argc, sizeof *extra_sets);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            extra_sets[n_extra_sets++] = argv[++i];
            continue;
        }
        fprintf(stderr, "usage: test_quality [--set section.key=value]...\n");
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shipped_seed1),  cmocka_unit_test(shipped_seed2),
        cmocka_unit_test(shipped_seed3),  cmocka_unit_test(defaults_seed1),
        cmocka_unit_test(shipped_steady_state),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(extra_sets);
    return rc;
}
