/*
 * quality_sim.h - the worker engine's detection quality against the simulator's ground truth,
 * offline: the simulator's own sensor signals (firmware/drivers/sim_sensor.c) and injected,
 * labelled anomalies (sim/anomaly.c), exactly as `tidegate-sim run --anomaly-rate` makes them,
 * sampled at 1 Hz in memory and offered straight to an engine (no MQTT, gateway or Kafka).
 * The labels and the engine's alert records go into a `tidegate-sim score` comparison
 * (sim/score.h), so the matching and the figures are the scorer's, not a copy of them.
 *
 * Shared by bench_quality (the figures in the README) and test_quality (floors under them).
 *
 * Threads: one run on one thread.
 */
#ifndef TG_QUALITY_SIM_H
#define TG_QUALITY_SIM_H

#include <stdint.h>

#include "engine.h"
#include "score.h"

/* The scorer's tolerance around a label's interval, as `tidegate-sim score` uses by default. */
#define TG_QUALITY_SLACK_MS 30000

struct tg_quality_opts {
    int devices;          /* device ids q-000000 .. */
    int minutes;          /* of 1 Hz readings, from t0_ms */
    double rate_per_hour; /* anomalies per device-hour */
    uint64_t seed;        /* the simulator's seed: same seed, same signals and anomalies */
    /* When the run starts (ms since the epoch; 0: TG_QUALITY_T0_MS, 2026-01-01 00:00 UTC).
     * The signals' cycles (time of day, pressure, vibration) follow the wall clock, so one seed
     * at another start time is another fleet's afternoon: bench_quality --t0 replays the start
     * of a real `scripts/quality` run to tell its differences from the pipeline's. */
    int64_t t0_ms;
    /* Each reading taken up to this many ms (0..999) after its second, uniformly and
     * deterministically from the seed: the scheduling delay of a real simulator's timers
     * under load, which the fast cycles of vibration_g turn into value noise. 0: none. */
    int jitter_ms;
    /* Optional observers (NULL: none), for a bench's diagnostics. */
    void (*on_label)(void *ud, const struct tg_anomaly_label *lb);
    void (*on_alert_json)(void *ud, const char *json, size_t len);
    tg_engine_point_fn on_point;
    void *ud;
};

/* The time the run starts at (ms since the epoch). */
#define TG_QUALITY_T0_MS INT64_C(1767225600000)

/* Runs opts' fleet through a fresh engine made from ec and adds every label, every alert
 * record and the run's exposure to sc (which the caller then finishes). Returns 0, or -1
 * with a message in err (NUL-terminated) when out of memory or a sensor fails to start. */
int tg_quality_run(const struct tg_engine_config *ec, const struct tg_quality_opts *opts,
                   struct tg_sim_score *sc, char *err, size_t errlen);

/* Loads an engine configuration: the worker's whole schema (so config/tidegate-worker.ini
 * loads as the worker reads it: its [worker] and [kafka] sections are checked, then unused),
 * the file at path (NULL: the built-in defaults), then each "section.key=value" of sets.
 * Returns the configuration, or NULL with "file:line: [section] key: ..." in err. */
struct tg_engine_config *tg_quality_engine_config(const char *path, const char *const *sets,
                                                  int n_sets, char *err, size_t errlen);

#endif
