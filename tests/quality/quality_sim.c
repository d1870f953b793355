/*
 * quality_sim.c - the simulator's fleet, offline, through one engine, scored by the
 * `tidegate-sim score` comparison (quality_sim.h).
 */
#include "quality_sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anomaly.h"
#include "config.h"
#include "sim_rand.h"
#include "sim_sensor.h"
#include "worker_config.h"

/* The engine sees 16 input partitions, devices spread over them as Kafka's keys would be. */
#define PARTITIONS 16

struct run {
    const struct tg_quality_opts *opts;
    struct tg_sim_score *sc;
    int64_t now_ms;
    int failed; /* out of memory in a callback */
};

/* The firmware HAL on the simulated clock: one reading per device per second. */
static int64_t hal_wall(void *ctx)
{
    return ((struct run *)ctx)->now_ms;
}
static uint64_t hal_mono(void *ctx)
{
    return (uint64_t)((struct run *)ctx)->now_ms;
}
static uint32_t hal_rand(void *ctx)
{
    (void)ctx;
    return 4; /* the sensor driver's jitter: fixed, so a run is a function of its seed */
}

static void on_label(void *ud, const struct tg_anomaly_label *lb)
{
    struct run *r = ud;
    if (tg_sim_score_add_label(r->sc, lb->device, lb->metric, lb->kind, lb->start_ts,
                               lb->end_ts) != 0)
        r->failed = 1;
    if (r->opts->on_label)
        r->opts->on_label(r->opts->ud, lb);
}

/* Every alert record (open, update, close) goes to the scorer as the worker's would through
 * Kafka: the JSON document the engine wrote, decoded by the scorer itself. */
static void on_output(void *ud, const struct tg_engine_output *out)
{
    struct run *r = ud;
    if (out->kind != TG_ENGINE_ALERT)
        return;
    if (tg_sim_score_add_alert_json(r->sc, out->value, out->value_len) < 0)
        r->failed = 1;
    if (r->opts->on_alert_json)
        r->opts->on_alert_json(r->opts->ud, out->value, out->value_len);
}

int tg_quality_run(const struct tg_engine_config *ec, const struct tg_quality_opts *opts,
                   struct tg_sim_score *sc, char *err, size_t errlen)
{
    int rc = -1;
    int devices = opts->devices;
    int64_t t0 = opts->t0_ms ? opts->t0_ms : TG_QUALITY_T0_MS;
    struct run r = {.opts = opts, .sc = sc, .now_ms = t0};
    struct tg_hal hal = {.ctx = &r, .wall_ms = hal_wall, .mono_ms = hal_mono,
                         .random_u32 = hal_rand};
    void **sensor = calloc((size_t)devices, sizeof *sensor);
    void **anom = calloc((size_t)devices, sizeof *anom);
    char (*ids)[16] = calloc((size_t)devices, sizeof *ids);
    struct tg_engine *en = tg_engine_new(ec, on_output, &r);
    int started = 0;
    snprintf(err, errlen, "out of memory");
    if (!sensor || !anom || !ids || !en)
        goto cleanup;
    for (int p = 0; p < PARTITIONS; p++)
        tg_engine_partition_add(en, p);
    if (opts->on_point)
        tg_engine_set_point_hook(en, opts->on_point, opts->ud);

    for (int d = 0; d < devices; d++) {
        snprintf(ids[d], sizeof ids[d], "q-%06d", d);
        sensor[d] = calloc(1, tg_sim_sensor_driver.state_size);
        anom[d] = calloc(1, tg_anomaly_driver.state_size);
        if (!sensor[d] || !anom[d])
            goto cleanup;
        tg_sim_sensor_set_seed(sensor[d],
                               tg_sim_stream_seed(opts->seed, (uint64_t)d, TG_SIM_STREAM_SENSOR));
        struct tg_anomaly_config acfg = {
            .device_id = ids[d],
            .rate_per_hour = opts->rate_per_hour,
            .seed = tg_sim_stream_seed(opts->seed, (uint64_t)d, TG_SIM_STREAM_ANOMALY),
            .inner = &tg_sim_sensor_driver,
            .inner_state = sensor[d],
            .on_label = on_label,
            .label_ud = &r,
        };
        tg_anomaly_setup(anom[d], &acfg);
        if (tg_anomaly_driver.init(anom[d], &hal, 0) != 0) {
            snprintf(err, errlen, "%s: sensor init failed", ids[d]);
            goto cleanup;
        }
        started = d + 1;
    }
    int64_t steps = (int64_t)opts->minutes * 60;
    int jitter = opts->jitter_ms > 0 && opts->jitter_ms < 1000 ? opts->jitter_ms : 0;
    uint64_t jit_state = opts->seed ^ UINT64_C(0x6a09e667f3bcc909);
    for (int64_t s = 0; s < steps; s++) {
        r.now_ms = t0 + s * 1000;
        for (int d = 0; d < devices; d++) {
            if (jitter)
                r.now_ms = t0 + s * 1000 + (int64_t)(tg_sim_splitmix64(&jit_state) %
                                                     (uint64_t)(jitter + 1));
            struct tg_sensor_sample smp = {0};
            /* An anomaly of kind silence makes the read fail: no reading that second. */
            if (tg_anomaly_driver.read(anom[d], &hal, &smp) != 0)
                continue;
            struct tg_metric ms[TG_SENSOR_MAX_METRICS];
            for (unsigned m = 0; m < smp.n; m++)
                ms[m] = (struct tg_metric){.name = smp.names[m], .value = smp.values[m]};
            struct tg_reading rd = {.device = ids[d], .ts_ms = r.now_ms, .n_metrics = smp.n,
                                    .metrics = ms};
            tg_engine_process(en, d % PARTITIONS, &rd);
        }
        /* The worker's wall-clock sweep, here on the simulated clock, just before the next
         * second's readings: no lag, so no silence from lag. */
        tg_engine_sweep(en, t0 + s * 1000 + 999);
    }
    /* Anomalies still running when the run stops get their labels now (cut short). */
    for (int d = 0; d < started; d++)
        tg_anomaly_finish(anom[d]);
    tg_sim_score_set_exposure(sc, (uint64_t)devices, opts->minutes * 60.0);
    if (r.failed)
        goto cleanup;
    rc = 0;
    err[0] = '\0';
cleanup:
    tg_engine_destroy(en);
    for (int d = 0; d < devices && sensor && anom; d++) {
        free(sensor[d]);
        free(anom[d]);
    }
    free(sensor);
    free(anom);
    free(ids);
    return rc;
}

struct tg_engine_config *tg_quality_engine_config(const char *path, const char *const *sets,
                                                  int n_sets, char *err, size_t errlen)
{
    struct tg_engine_config *ec = NULL;
    struct tg_config *cfg = tg_worker_config_new();
    if (!cfg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (path && tg_config_load_file(cfg, TG_CONFIG_FILE, path) != TG_OK) {
        snprintf(err, errlen, "%s", tg_config_error(cfg));
        goto cleanup;
    }
    for (int i = 0; i < n_sets; i++)
        if (tg_config_set(cfg, sets[i]) != TG_OK) {
            snprintf(err, errlen, "%s", tg_config_error(cfg));
            goto cleanup;
        }
    ec = tg_engine_config_from(cfg, err, errlen);
cleanup:
    tg_config_destroy(cfg);
    return ec;
}
