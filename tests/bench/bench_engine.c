/*
 * bench_engine: the worker engine from memory on one core, all detectors on (seasonal
 * included): records (readings) per second and points (reading x metric) per second, memory
 * per series, and snapshot bytes per series. Prints figures, asserts nothing.
 *
 *   bench_engine [-r RUNS] [--predict] [devices metrics_per_reading steps [defaults]]
 *
 * Without a shape, two with 100,000 series each: the simulator's default record (the five
 * metrics of firmware/drivers/sim_sensor.c, 20,000 devices) and one-metric records (100,000
 * devices), 60 steps each. With a fourth argument "defaults", the engine's default
 * configuration (seasonal off). Each shape runs RUNS times (default 3) on a fresh engine;
 * the best and the median run are printed (the machine is shared: the best is the engine's
 * speed, the median what a busy machine gave). With --predict each shape runs a second time
 * with the predict detector on as well (detect.predict=on, every series: its worst case),
 * printed after the first, so that both figures come from one run on one machine.
 *
 * The input is generated before the clock starts: devices x steps readings of
 * metrics_per_reading metrics each (noise around a per-series level, a spike now and then),
 * one reading per device per step, 1 s apart.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "config.h"
#include "engine.h"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * 4;
}

static uint64_t outputs, alerts;
static void count_output(void *ud, const struct tg_engine_output *out)
{
    (void)ud;
    outputs++;
    alerts += out->kind == TG_ENGINE_ALERT;
}

static size_t snap_bytes, snap_pairs;
static void count_snapshot(void *ud, int32_t partition, const void *key, size_t key_len,
                           const void *value, size_t value_len)
{
    (void)ud;
    (void)partition;
    (void)key;
    (void)value;
    snap_bytes += key_len + value_len;
    snap_pairs++;
}

static uint64_t rng_state = 88172645463325252ull;
static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs one shape `runs` times; prints its figures. */
static int run_shape(int devices, int metrics, int steps, bool all_on, bool predict, int runs,
                     bool first)
{
    size_t n_keys;
    const struct tg_config_key *keys = tg_engine_config_keys(&n_keys);
    struct tg_config *cfg = tg_config_new(keys, n_keys);
    if (all_on && tg_config_set(cfg, "detect.seasonal=on") != TG_OK)
        return 1;
    if (predict && tg_config_set(cfg, "detect.predict=on") != TG_OK)
        return 1;
    char err[256];
    struct tg_engine_config *ec = tg_engine_config_from(cfg, err, sizeof err);
    if (!ec) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }

    /* The first five are the simulator's sensor (sim_sensor.c), in its order. */
    static const char *const names[16] = {"temperature_c", "humidity_pct", "pressure_hpa",
                                          "battery_v", "vibration_g", "m5", "m6", "m7",
                                          "m8", "m9", "m10", "m11", "m12", "m13", "m14", "m15"};
    char (*ids)[16] = malloc((size_t)devices * sizeof *ids);
    double *values = malloc((size_t)devices * steps * metrics * sizeof *values);
    struct tg_metric *ms = malloc((size_t)metrics * sizeof *ms);
    double *cpus = malloc((size_t)runs * sizeof *cpus);
    if (!ids || !values || !ms || !cpus)
        return 1;
    for (int d = 0; d < devices; d++)
        snprintf(ids[d], sizeof ids[d], "sim-%06d", d);
    rng_state = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)devices * steps * metrics; i++) {
        double v = 20 + (double)(i % 7) + (uniform() - 0.5);
        if (uniform() < 1e-4)
            v += 20;
        values[i] = round(v * 100) / 100;
    }

    uint64_t readings = (uint64_t)devices * steps;
    struct tg_engine_stats st = {0};
    long rss_grew = 0;
    for (int run = 0; run < runs; run++) {
        outputs = alerts = 0;
        long rss0 = rss_kib();
        struct tg_engine *en = tg_engine_new(ec, count_output, NULL);
        if (!en)
            return 1;
        for (int p = 0; p < 16; p++)
            tg_engine_partition_add(en, p);
        int64_t t0 = INT64_C(1700000000000);
        double c0 = cpu_s();
        for (int s = 0; s < steps; s++) {
            for (int d = 0; d < devices; d++) {
                const double *v = &values[((size_t)s * devices + d) * metrics];
                for (int m = 0; m < metrics; m++)
                    ms[m] = (struct tg_metric){.name = names[m], .value = v[m]};
                struct tg_reading rd = {.device = ids[d],
                                        .ts_ms = t0 + (int64_t)s * 1000 + d % 1000,
                                        .n_metrics = (size_t)metrics, .metrics = ms};
                tg_engine_process(en, d % 16, &rd);
            }
        }
        cpus[run] = cpu_s() - c0;
        tg_engine_stats(en, &st);
        if (run == 0) /* later runs reuse the memory the first one freed */
            rss_grew = rss_kib() - rss0;
        if (run == runs - 1) {
            snap_bytes = snap_pairs = 0;
            tg_engine_snapshot_dirty(en, count_snapshot, NULL);
        }
        tg_engine_destroy(en);
    }
    double best = cpus[0];
    for (int i = 1; i < runs; i++)
        best = cpus[i] < best ? cpus[i] : best;
    qsort(cpus, (size_t)runs, sizeof *cpus, cmp_double);
    double median = cpus[runs / 2];
    printf("engine: %d devices x %d metrics = %" PRIu64 " series, %d steps, %s, %d runs\n",
           devices, metrics, st.series, steps,
           all_on ? (predict ? "all detectors on + predict" : "all detectors on")
                  : (predict ? "default detectors + predict" : "default detectors"),
           runs);
    printf("  %d-metric records: %.0f records/s best, %.0f median (CPU time); %.0f points/s "
           "best, %.0f ns per point\n",
           metrics, readings / best, readings / median, st.points / best,
           best * 1e9 / st.points);
    printf("  outputs %" PRIu64 " (alerts %" PRIu64 ", aggregates %" PRIu64 ")\n", outputs,
           alerts, st.aggregates);
    printf("  state: %zu bytes = %.0f bytes per series (engine's count)", st.state_bytes,
           (double)st.state_bytes / st.series);
    /* RSS tells only for the first shape: later ones reuse what the first freed. */
    if (first)
        printf("; RSS grew %ld KiB = %.0f bytes per series", rss_grew,
               rss_grew * 1024.0 / st.series);
    printf("\n");
    printf("  snapshot: %zu pairs, %zu bytes = %.0f bytes per series (key + value)\n",
           snap_pairs, snap_bytes, (double)snap_bytes / st.series);
    tg_engine_config_destroy(ec);
    tg_config_destroy(cfg);
    free(ids);
    free(values);
    free(ms);
    free(cpus);
    return 0;
}

/* One shape, and with --predict the same with the predict detector on too. */
static int run_pair(int devices, int metrics, int steps, bool all_on, bool predict, int runs,
                    bool first)
{
    if (run_shape(devices, metrics, steps, all_on, false, runs, first) != 0)
        return 1;
    return predict ? run_shape(devices, metrics, steps, all_on, true, runs, false) : 0;
}

int main(int argc, char **argv)
{
    int runs = 3, arg = 1;
    bool predict = false;
    for (;;) {
        if (arg + 1 < argc && strcmp(argv[arg], "-r") == 0) {
            runs = atoi(argv[arg + 1]);
            arg += 2;
        } else if (arg < argc && strcmp(argv[arg], "--predict") == 0) {
            predict = true;
            arg++;
        } else {
            break;
        }
    }
    if (arg == argc) {
        /* The two shapes the README reports, 100,000 series each. */
        if (run_pair(20000, 5, 60, true, predict, runs, true) != 0)
            return 1;
        return run_pair(100000, 1, 60, true, predict, runs, false);
    }
    int devices = atoi(argv[arg]);
    int metrics = arg + 1 < argc ? atoi(argv[arg + 1]) : 5;
    int steps = arg + 2 < argc ? atoi(argv[arg + 2]) : 60;
    bool all_on = !(arg + 3 < argc && strcmp(argv[arg + 3], "defaults") == 0);
    if (runs < 1 || devices < 1 || metrics < 1 || metrics > 16 || steps < 1) {
        fprintf(stderr, "usage: bench_engine [-r RUNS] [--predict] [devices metrics(1..16) steps "
                        "[defaults]]\n");
        return 2;
    }
    return run_pair(devices, metrics, steps, all_on, predict, runs, true);
}
