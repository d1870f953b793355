/*
 * bench_engine: the worker engine from memory on one core, all detectors on (seasonal
 * included): readings per second and points (reading x metric) per second, memory per
 * series at 100,000 series, and snapshot bytes per series. Prints figures, asserts nothing.
 *
 *   bench_engine [devices] [metrics_per_reading] [steps] [defaults]   (default 20000 5 60)
 *
 * With a fourth argument "defaults", the engine's default configuration (seasonal off).
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

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

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

int main(int argc, char **argv)
{
    int devices = argc > 1 ? atoi(argv[1]) : 20000;
    int metrics = argc > 2 ? atoi(argv[2]) : 5;
    int steps = argc > 3 ? atoi(argv[3]) : 60;
    if (devices < 1 || metrics < 1 || metrics > 16 || steps < 1) {
        fprintf(stderr, "usage: bench_engine [devices] [metrics 1..16] [steps]\n");
        return 2;
    }
    size_t n_keys;
    const struct tg_config_key *keys = tg_engine_config_keys(&n_keys);
    struct tg_config *cfg = tg_config_new(keys, n_keys);
    bool all_on = !(argc > 4 && strcmp(argv[4], "defaults") == 0);
    if (all_on && tg_config_set(cfg, "detect.seasonal=on") != TG_OK)
        return 1;
    char err[256];
    struct tg_engine_config *ec = tg_engine_config_from(cfg, err, sizeof err);
    if (!ec) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }

    static const char *const names[16] = {"temperature_c", "humidity_pct", "pressure_hpa",
                                          "battery_v", "vibration_g", "m5", "m6", "m7",
                                          "m8", "m9", "m10", "m11", "m12", "m13", "m14", "m15"};
    char (*ids)[16] = malloc((size_t)devices * sizeof *ids);
    double *values = malloc((size_t)devices * steps * metrics * sizeof *values);
    struct tg_metric *ms = malloc((size_t)metrics * sizeof *ms);
    if (!ids || !values || !ms)
        return 1;
    for (int d = 0; d < devices; d++)
        snprintf(ids[d], sizeof ids[d], "sim-%06d", d);
    for (size_t i = 0; i < (size_t)devices * steps * metrics; i++) {
        double v = 20 + (double)(i % 7) + (uniform() - 0.5);
        if (uniform() < 1e-4)
            v += 20;
        values[i] = round(v * 100) / 100;
    }

    long rss0 = rss_kib();
    struct tg_engine *en = tg_engine_new(ec, count_output, NULL);
    for (int p = 0; p < 16; p++)
        tg_engine_partition_add(en, p);
    int64_t t0 = INT64_C(1700000000000);
    double w0 = now_s(), c0 = cpu_s();
    for (int s = 0; s < steps; s++) {
        for (int d = 0; d < devices; d++) {
            const double *v = &values[((size_t)s * devices + d) * metrics];
            for (int m = 0; m < metrics; m++)
                ms[m] = (struct tg_metric){.name = names[m], .value = v[m]};
            struct tg_reading rd = {.device = ids[d], .ts_ms = t0 + (int64_t)s * 1000 + d % 1000,
                                    .n_metrics = (size_t)metrics, .metrics = ms};
            tg_engine_process(en, d % 16, &rd);
        }
    }
    double wall = now_s() - w0, cpu = cpu_s() - c0;
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    long rss1 = rss_kib();
    uint64_t readings = (uint64_t)devices * steps;
    printf("engine: %d devices x %d metrics = %" PRIu64 " series, %d steps, %s\n", devices,
           metrics, st.series, steps, all_on ? "all detectors on" : "default detectors");
    printf("  %" PRIu64 " readings (%" PRIu64 " points) in %.3f s wall, %.3f s CPU\n", readings,
           st.points, wall, cpu);
    printf("  %.0f readings/s, %.0f points/s (CPU time), %.0f ns per point\n", readings / cpu,
           st.points / cpu, cpu * 1e9 / st.points);
    printf("  outputs %" PRIu64 " (alerts %" PRIu64 ", aggregates %" PRIu64 ")\n", outputs,
           alerts, st.aggregates);
    printf("  state: %zu bytes = %.0f bytes per series (engine's count); RSS grew %ld KiB = "
           "%.0f bytes per series\n",
           st.state_bytes, (double)st.state_bytes / st.series, rss1 - rss0,
           (rss1 - rss0) * 1024.0 / st.series);
    double s0 = now_s();
    tg_engine_snapshot_dirty(en, count_snapshot, NULL);
    double snap_wall = now_s() - s0;
    printf("  snapshot: %zu pairs, %zu bytes = %.0f bytes per series (key + value), %.3f s\n",
           snap_pairs, snap_bytes, (double)snap_bytes / st.series, snap_wall);
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    tg_config_destroy(cfg);
    free(ids);
    free(values);
    free(ms);
    return 0;
}
