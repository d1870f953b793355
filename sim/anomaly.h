/*
 * anomaly.h - anomaly injection with ground-truth labels: a sensor driver (sensor.h) that
 * wraps another one (the simulated sensor) and alters its samples now and then.
 *
 * Anomalies arrive per device as a Poisson process of rate_per_hour (anomalies per
 * device-hour of the device's clock), one at a time; the next is drawn when the previous ends.
 * Each picks a kind and, except silence, one metric of the sample:
 *
 *   spike        one sample off by 6..12 x the metric's scale (either sign)
 *   level_shift  every sample for 2..10 min offset by 3..6 x scale
 *   drift        for 5..20 min an offset growing linearly to 4..8 x scale
 *   stuck        for 1..5 min the metric repeats the value it had at the start (flatline)
 *   noise_burst  for 0.5..3 min noise of 3..5 x scale added
 *   silence      for 0.5..3 min every read fails: the device publishes no reading
 * A metric's scale is about its natural noise-plus-variation step: temperature_c 1,
 * humidity_pct 3, pressure_hpa 1.5, battery_v 0.05, vibration_g 0.1; humidity stays within
 * 0..100 and battery_v at or above 0.
 *
 * Labels: when an anomaly ends (or at tg_anomaly_finish()), on_label gets one label: device,
 * metric ("*" for silence), kind, and start_ts / end_ts = the smallest and largest ts (ms,
 * device clock, as in the readings) of the samples it altered (for silence: suppressed). A
 * spike has start_ts == end_ts. Every altered reading, and only those, lies in its window.
 *
 * Time is the device's wall clock (hal->wall_ms), the same value the core stamps the reading
 * with when the port's clock does not move within one tg_node_poll() (the simulator's does
 * not). Deterministic: the same seed and the same sequence of inner samples and times give
 * the same anomalies.
 *
 * Threads: a state is used from one thread (its node's).
 */
#ifndef TG_SIM_ANOMALY_H
#define TG_SIM_ANOMALY_H

#include <stdbool.h>
#include <stdint.h>

#include "sensor.h"

enum tg_anomaly_kind {
    TG_ANOMALY_SPIKE = 0,
    TG_ANOMALY_LEVEL_SHIFT,
    TG_ANOMALY_DRIFT,
    TG_ANOMALY_STUCK,
    TG_ANOMALY_NOISE_BURST,
    TG_ANOMALY_SILENCE,
    TG_ANOMALY_KINDS
};

/* "spike", "level_shift", "drift", "stuck", "noise_burst", "silence". */
const char *tg_anomaly_kind_name(enum tg_anomaly_kind kind);

struct tg_anomaly_label {
    const char *device;
    const char *metric;       /* "*" for silence */
    enum tg_anomaly_kind kind;
    int64_t start_ts;         /* ms since the epoch, device clock */
    int64_t end_ts;
};

/* Receives each finished anomaly's label; runs inside the wrapper's read or finish. */
typedef void (*tg_anomaly_label_fn)(void *ud, const struct tg_anomaly_label *label);

struct tg_anomaly_config {
    const char *device_id;                 /* not copied: must outlive the state */
    double rate_per_hour;                  /* 0: no anomaly unless forced */
    uint64_t seed;
    const struct tg_sensor_driver *inner;  /* the wrapped driver and its state */
    void *inner_state;
    tg_anomaly_label_fn on_label;          /* may be NULL */
    void *label_ud;
};

/* The wrapping driver ("anomaly"): its init calls the inner init, its read the inner read. */
extern const struct tg_sensor_driver tg_anomaly_driver;

/* Prepares a state of tg_anomaly_driver.state_size bytes before the node's start. */
void tg_anomaly_setup(void *state, const struct tg_anomaly_config *cfg);

/* Forces an anomaly (tests): it begins with the first sample at or after start_ts and is
 * planned to last duration_ms (ignored for a spike). metric is an index into the inner
 * sample's metrics (ignored for silence). Replaces the random schedule's next anomaly; an
 * anomaly already running ends first. */
void tg_anomaly_force(void *state, enum tg_anomaly_kind kind, unsigned metric, int64_t start_ts,
                      int64_t duration_ms);

/* Stops sampling: the running anomaly ends now (its label is emitted) and every later read
 * fails, so the node takes no more readings. For the end of a run. */
void tg_anomaly_finish(void *state);

/* Number of anomalies started so far (labelled or running). */
uint64_t tg_anomaly_count(const void *state);

#endif
