/*
 * bench_quality: the engine's detection quality against the simulator's ground truth,
 * offline (tests/quality/quality_sim.h): the same signals and the same injected anomalies
 * with labels as `tidegate-sim run --anomaly-rate`, sampled in memory and offered straight to
 * an engine (no MQTT, no gateway, no Kafka), scored by `tidegate-sim score`'s own comparison
 * and printed as its table. For tuning the detectors; `scripts/quality` measures the real path.
 *
 *   bench_quality [devices] [minutes] [anomalies_per_device_hour] [seed]
 *                 [-c worker.ini] [--set section.key=value]... [--t0 MS]
 *                 [--jitter-ms N]                                   (default 1000 10 2 1)
 *
 * Without -c the engine runs its built-in defaults; `-c config/tidegate-worker.ini` runs the
 * shipped configuration (what the Debian package installs), rules included. --t0 starts the
 * run at MS (ms since the epoch) instead of 2026-01-01 00:00 UTC: the signals' daily and
 * shorter cycles follow the clock, so this replays the start of a real `scripts/quality` run
 * (its labels' times tell it) to separate what the start time changes from what the pipeline
 * does.
 *
 * Diagnostics: BENCH_QUALITY_MISSES=1 lists every missed label and false alert (else 12 of
 * each), BENCH_QUALITY_DEVICE=N one device's labels and alert records,
 * BENCH_QUALITY_TRACE="q-000088 humidity_pct 250 300" the score and alert state of every
 * point of one series in that range of seconds.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quality_sim.h"

static char trace_dev[32], trace_metric[32];
static double trace_from = -1, trace_to = -1;
static char only_dev[16];
static int64_t t0_ms = TG_QUALITY_T0_MS; /* the run's start: offsets printed are from it */

static void on_point(void *ud, const struct tg_engine_point *pt)
{
    (void)ud;
    double t = (double)(pt->ts_ms - t0_ms) / 1000.0;
    if (t < trace_from || t > trace_to || strcmp(pt->device, trace_dev) != 0 ||
        strcmp(pt->metric, trace_metric) != 0)
        return;
    printf("  trace +%.0f s %g score %.3f %s\n", t, pt->value, pt->score, pt->alert_state);
}

static void on_label(void *ud, const struct tg_anomaly_label *lb)
{
    (void)ud;
    if (strcmp(lb->device, only_dev) == 0)
        printf("  label: %s %s %s +%.0f..+%.0f s\n", lb->device, lb->metric,
               tg_anomaly_kind_name(lb->kind), (double)(lb->start_ts - t0_ms) / 1000.0,
               (double)(lb->end_ts - t0_ms) / 1000.0);
}

static void on_alert_json(void *ud, const char *json, size_t len)
{
    (void)ud;
    char pat[40];
    snprintf(pat, sizeof pat, "\"device\":\"%s\"", only_dev);
    if (memmem(json, len, pat, strlen(pat)))
        printf("  alert: %.*s\n", (int)len, json);
}

int main(int argc, char **argv)
{
    struct tg_quality_opts opts = {.devices = 1000, .minutes = 10, .rate_per_hour = 2, .seed = 1};
    const char *cfg_path = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int n_sets = 0, pos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            sets[n_sets++] = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            cfg_path = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--jitter-ms") == 0 && i + 1 < argc) {
            opts.jitter_ms = atoi(argv[++i]);
            if (opts.jitter_ms < 0 || opts.jitter_ms > 999) {
                fprintf(stderr, "bench_quality: --jitter-ms: expected 0..999\n");
                return 2;
            }
            continue;
        }
        if (strcmp(argv[i], "--t0") == 0 && i + 1 < argc) {
            char *end;
            long long v = strtoll(argv[++i], &end, 10);
            if (*end || v <= 0) {
                fprintf(stderr, "bench_quality: --t0: expected ms since the epoch, got '%s'\n",
                        argv[i]);
                return 2;
            }
            t0_ms = opts.t0_ms = v;
            continue;
        }
        switch (pos++) {
        case 0: opts.devices = atoi(argv[i]); break;
        case 1: opts.minutes = atoi(argv[i]); break;
        case 2: opts.rate_per_hour = atof(argv[i]); break;
        case 3: opts.seed = strtoull(argv[i], NULL, 10); break;
        default:
            fprintf(stderr, "usage: bench_quality [devices] [minutes] [rate] [seed] [-c FILE] "
                            "[--set k=v]... [--t0 MS] [--jitter-ms N]\n");
            return 2;
        }
    }
    if (opts.devices < 1 || opts.minutes < 1) {
        fprintf(stderr, "bench_quality: devices and minutes must be positive\n");
        return 2;
    }
    char err[512];
    struct tg_engine_config *ec = tg_quality_engine_config(cfg_path, sets, n_sets, err, sizeof err);
    if (!ec) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    const char *trace = getenv("BENCH_QUALITY_TRACE");
    if (trace && sscanf(trace, "%31s %31s %lf %lf", trace_dev, trace_metric, &trace_from,
                        &trace_to) == 4)
        opts.on_point = on_point;
    const char *only = getenv("BENCH_QUALITY_DEVICE");
    if (only) {
        snprintf(only_dev, sizeof only_dev, "q-%06d", atoi(only));
        opts.on_label = on_label;
        opts.on_alert_json = on_alert_json;
    }

    struct tg_sim_score *sc = tg_sim_score_new(TG_QUALITY_SLACK_MS);
    struct tg_sim_score_result res;
    int rc = 1;
    if (!sc || tg_quality_run(ec, &opts, sc, err, sizeof err) != 0 ||
        tg_sim_score_finish(sc, &res) != 0) {
        fprintf(stderr, "bench_quality: %s\n", sc ? err : "out of memory");
        goto cleanup;
    }
    printf("bench_quality: %d devices x %d min at 1 Hz, %.2f anomalies per device-hour, seed %" PRIu64
           ", %s%s\n",
           opts.devices, opts.minutes, opts.rate_per_hour, opts.seed,
           cfg_path ? "config " : "the engine's defaults", cfg_path ? cfg_path : "");
    for (int i = 0; i < n_sets; i++)
        printf("  --set %s\n", sets[i]);
    if (opts.jitter_ms)
        printf("  --jitter-ms %d (readings up to that late in their second)\n", opts.jitter_ms);
    if (opts.t0_ms)
        printf("  --t0 %" PRId64 " (the run starts then, not at 2026-01-01 00:00 UTC)\n", opts.t0_ms);
    struct tg_sim_score_floors floors = {NAN, NAN, NAN};
    struct tg_sim_score_context ctx = {
        .topic = "(offline engine)",
        .labels_path = "(in memory)",
        .partitions = 16,
        .slack_ms = TG_QUALITY_SLACK_MS,
        .devices = (uint64_t)opts.devices,
        .duration_s = opts.minutes * 60.0,
        .floors = &floors,
        .pass = true,
        .why = "",
        .details = getenv("BENCH_QUALITY_MISSES") ? 100000u : 12u,
    };
    if (tg_sim_score_print_text(sc, &res, &ctx, stdout) != 0)
        goto cleanup;
    rc = 0;
cleanup:
    tg_sim_score_destroy(sc);
    tg_engine_config_destroy(ec);
    free(sets);
    return rc;
}
