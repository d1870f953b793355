/*
 * bench_quality: the engine's detection quality against the simulator's ground truth,
 * offline: the same signals (firmware/drivers/sim_sensor.c) and the same injected anomalies
 * with labels (sim/anomaly.c) as `tidegate-sim run --anomaly-rate`, sampled in memory and
 * offered straight to an engine (no MQTT, no gateway, no Kafka). For tuning the detectors'
 * defaults; `tidegate-sim score` measures the real path.
 *
 *   bench_quality [devices] [minutes] [anomalies_per_device_hour] [seed] [--set k=v]...
 *                 (default 1000 10 2 1)
 *
 * Matching follows `tidegate-sim score`: an alert matches a label of the same device when
 * its start lies within the label's [start_ts - 30 s, end_ts + 30 s], a silence label only by
 * a silence alert (any metric), any other label only by a non-silence alert on its metric. A
 * label is detected when an alert matches it (delay: the earliest matching alert's start -
 * label start, negative within the slack); an alert that matches no label is false. Prints recall and median delay per kind, precision, F1 and
 * false alerts per device-hour.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anomaly.h"
#include "engine.h"
#include "sim_rand.h"
#include "sim_sensor.h"

#define MATCH_SLACK_MS 30000

struct label {
    int dev;
    char metric[32];
    int kind;
    int64_t start, end;
    int64_t detected_at; /* -1: not detected */
};

struct alert {
    int dev;
    char metric[32];
    char kind[16];
    int64_t start, end;
    bool matched;
};

static struct label *labels;
static size_t n_labels, cap_labels;
static struct alert *alerts;
static size_t n_alerts, cap_alerts;
static int64_t now_ms;
static int cur_dev;

static int64_t hal_wall(void *ctx)
{
    (void)ctx;
    return now_ms;
}
static uint64_t hal_mono(void *ctx)
{
    (void)ctx;
    return (uint64_t)now_ms;
}
static uint32_t hal_rand(void *ctx)
{
    (void)ctx;
    return 4;
}

static void on_label(void *ud, const struct tg_anomaly_label *lb)
{
    (void)ud;
    if (n_labels == cap_labels) {
        cap_labels = cap_labels ? cap_labels * 2 : 1024;
        labels = realloc(labels, cap_labels * sizeof *labels);
    }
    struct label *l = &labels[n_labels++];
    l->dev = cur_dev;
    snprintf(l->metric, sizeof l->metric, "%s", lb->metric);
    l->kind = (int)lb->kind;
    l->start = lb->start_ts;
    l->end = lb->end_ts;
    l->detected_at = -1;
}

static int dev_of(const char *key, size_t len)
{
    /* "q-000123" */
    int d = 0;
    for (size_t i = 2; i < len; i++)
        d = d * 10 + (key[i] - '0');
    return d;
}

/* Pulls "name":"..." or "name":123 out of the alert JSON (the engine's own output). */
static const char *field(const char *json, const char *name)
{
    char pat[40];
    snprintf(pat, sizeof pat, "\"%s\":", name);
    const char *p = strstr(json, pat);
    return p ? p + strlen(pat) : NULL;
}

static void on_output(void *ud, const struct tg_engine_output *out)
{
    (void)ud;
    if (out->kind != TG_ENGINE_ALERT)
        return;
    char *json = strndup(out->value, out->value_len);
    const char *metric = field(json, "metric");
    const char *m_end = metric ? strchr(metric + 1, '"') : NULL;
    int dev = dev_of(out->key, out->key_len);
    char mname[32];
    snprintf(mname, sizeof mname, "%.*s", m_end ? (int)(m_end - metric - 1) : 0,
             metric ? metric + 1 : "");
    int64_t start = atoll(field(json, "start_ts"));
    int64_t end = atoll(field(json, "end_ts"));
    if (strcmp(out->alert_state, "open") == 0) {
        if (n_alerts == cap_alerts) {
            cap_alerts = cap_alerts ? cap_alerts * 2 : 1024;
            alerts = realloc(alerts, cap_alerts * sizeof *alerts);
        }
        struct alert *a = &alerts[n_alerts++];
        a->dev = dev;
        snprintf(a->metric, sizeof a->metric, "%s", mname);
        snprintf(a->kind, sizeof a->kind, "%s", out->alert_kind);
        a->start = start;
        a->end = end;
        a->matched = false;
    } else {
        for (size_t i = n_alerts; i-- > 0;)
            if (alerts[i].dev == dev && alerts[i].start == start &&
                strcmp(alerts[i].metric, mname) == 0 && strcmp(alerts[i].kind, out->alert_kind) == 0) {
                if (end > alerts[i].end)
                    alerts[i].end = end;
                break;
            }
    }
    free(json);
}

/* BENCH_QUALITY_TRACE="q-000102 temperature_c FROM_S TO_S": every point of that series in
 * that window, with its score and alert state. */
static char trace_dev[32], trace_metric[32];
static double trace_from = -1, trace_to = -1;
static int64_t trace_t0;
static void on_point(void *ud, const struct tg_engine_point *pt)
{
    (void)ud;
    double t = (pt->ts_ms - trace_t0) / 1000.0;
    if (t < trace_from || t > trace_to || strcmp(pt->device, trace_dev) != 0 ||
        strcmp(pt->metric, trace_metric) != 0)
        return;
    printf("  trace +%.0f s %g score %.3f %s\n", t, pt->value, pt->score, pt->alert_state);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int devices = 1000, minutes = 10;
    double rate = 2;
    uint64_t seed = 1;
    size_t n_keys;
    const struct tg_config_key *keys = tg_engine_config_keys(&n_keys);
    struct tg_config *cfg = tg_config_new(keys, n_keys);
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if (tg_config_set(cfg, argv[++i]) != TG_OK) {
                fprintf(stderr, "%s\n", tg_config_error(cfg));
                return 2;
            }
            continue;
        }
        switch (pos++) {
        case 0: devices = atoi(argv[i]); break;
        case 1: minutes = atoi(argv[i]); break;
        case 2: rate = atof(argv[i]); break;
        case 3: seed = strtoull(argv[i], NULL, 10); break;
        default: fprintf(stderr, "too many arguments\n"); return 2;
        }
    }
    char err[256];
    struct tg_engine_config *ec = tg_engine_config_from(cfg, err, sizeof err);
    if (!ec) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    struct tg_engine *en = tg_engine_new(ec, on_output, NULL);
    for (int p = 0; p < 16; p++)
        tg_engine_partition_add(en, p);

    void **sensor = calloc((size_t)devices, sizeof *sensor);
    void **anom = calloc((size_t)devices, sizeof *anom);
    char (*ids)[16] = calloc((size_t)devices, sizeof *ids);
    struct tg_hal hal = {.wall_ms = hal_wall, .mono_ms = hal_mono, .random_u32 = hal_rand};
    int64_t t0 = INT64_C(1767225600000); /* 2026-01-01 00:00 UTC */
    const char *trace = getenv("BENCH_QUALITY_TRACE");
    if (trace && sscanf(trace, "%31s %31s %lf %lf", trace_dev, trace_metric, &trace_from,
                        &trace_to) == 4) {
        trace_t0 = t0;
        tg_engine_set_point_hook(en, on_point, NULL);
    }
    now_ms = t0;
    for (int d = 0; d < devices; d++) {
        snprintf(ids[d], sizeof ids[d], "q-%06d", d);
        sensor[d] = calloc(1, tg_sim_sensor_driver.state_size);
        anom[d] = calloc(1, tg_anomaly_driver.state_size);
        tg_sim_sensor_set_seed(sensor[d], tg_sim_stream_seed(seed, (uint64_t)d, TG_SIM_STREAM_SENSOR));
        struct tg_anomaly_config acfg = {
            .device_id = ids[d],
            .rate_per_hour = rate,
            .seed = tg_sim_stream_seed(seed, (uint64_t)d, TG_SIM_STREAM_ANOMALY),
            .inner = &tg_sim_sensor_driver,
            .inner_state = sensor[d],
            .on_label = on_label,
        };
        tg_anomaly_setup(anom[d], &acfg);
        cur_dev = d;
        if (tg_anomaly_driver.init(anom[d], &hal, 0) != 0) {
            fprintf(stderr, "sensor init failed\n");
            return 1;
        }
    }
    int64_t steps = (int64_t)minutes * 60;
    for (int64_t s = 0; s < steps; s++) {
        now_ms = t0 + s * 1000;
        for (int d = 0; d < devices; d++) {
            cur_dev = d;
            struct tg_sensor_sample smp = {0};
            if (tg_anomaly_driver.read(anom[d], &hal, &smp) != 0)
                continue;
            struct tg_metric ms[TG_SENSOR_MAX_METRICS];
            for (unsigned m = 0; m < smp.n; m++)
                ms[m] = (struct tg_metric){.name = smp.names[m], .value = smp.values[m]};
            struct tg_reading rd = {.device = ids[d], .ts_ms = now_ms, .n_metrics = smp.n,
                                    .metrics = ms};
            tg_engine_process(en, d % 16, &rd);
        }
        tg_engine_sweep(en, now_ms + 999);
    }
    for (int d = 0; d < devices; d++) {
        cur_dev = d;
        tg_anomaly_finish(anom[d]);
    }

    /* Match, by the rules of `tidegate-sim score` (its README section): same device; the
     * alert's start within [label start - slack, label end + slack]; a silence label only
     * by a silence alert (any metric), any other label only by a non-silence alert on its
     * own metric. */
    for (size_t a = 0; a < n_alerts; a++) {
        struct alert *al = &alerts[a];
        bool al_silence = strcmp(al->kind, "silence") == 0;
        for (size_t l = 0; l < n_labels; l++) {
            struct label *lb = &labels[l];
            if (lb->dev != al->dev)
                continue;
            bool lb_silence = strcmp(lb->metric, "*") == 0;
            if (lb_silence != al_silence || (!lb_silence && strcmp(lb->metric, al->metric) != 0))
                continue;
            if (al->start < lb->start - MATCH_SLACK_MS || al->start > lb->end + MATCH_SLACK_MS)
                continue;
            al->matched = true;
            if (lb->detected_at < 0 || al->start < lb->detected_at)
                lb->detected_at = al->start;
        }
    }
    printf("bench_quality: %d devices x %d min at 1 Hz, %.2f anomalies per device-hour, seed %" PRIu64
           "\n",
           devices, minutes, rate, seed);
    printf("%-12s %7s %9s %7s %12s\n", "kind", "labels", "detected", "recall", "median delay");
    size_t tot_l = 0, tot_d = 0;
    for (int k = 0; k < TG_ANOMALY_KINDS; k++) {
        size_t nl = 0, nd = 0;
        int64_t *delays = malloc((n_labels + 1) * sizeof *delays);
        for (size_t l = 0; l < n_labels; l++) {
            if (labels[l].kind != k)
                continue;
            nl++;
            if (labels[l].detected_at >= 0)
                delays[nd++] = labels[l].detected_at - labels[l].start;
        }
        qsort(delays, nd, sizeof *delays, cmp_i64);
        (void)0;
        printf("%-12s %7zu %9zu %7.3f %10.1f s\n", tg_anomaly_kind_name((enum tg_anomaly_kind)k),
               nl, nd, nl ? (double)nd / nl : 0, nd ? delays[nd / 2] / 1000.0 : 0);
        tot_l += nl;
        tot_d += nd;
        free(delays);
    }
    size_t matched = 0;
    for (size_t a = 0; a < n_alerts; a++)
        matched += alerts[a].matched;
    /* The scorer's definitions: several alerts on one label count once, neither true nor
     * false; precision = detected / (detected + false), F1 = 2 detected / (2 detected +
     * false + missed). */
    size_t false_alerts = n_alerts - matched;
    double recall = tot_l ? (double)tot_d / tot_l : 0;
    double precision = tot_d + false_alerts ? (double)tot_d / (tot_d + false_alerts) : 0;
    double f1 = tot_l + false_alerts
                    ? 2.0 * tot_d / (2.0 * tot_d + false_alerts + (tot_l - tot_d))
                    : 0;
    double dev_hours = devices * minutes / 60.0;
    printf("alerts %zu, matching a label %zu: precision %.3f, recall %.3f, F1 %.3f\n", n_alerts,
           matched, precision, recall, f1);
    printf("false alerts %zu = %.3f per device-hour\n", n_alerts - matched,
           (n_alerts - matched) / dev_hours);
    size_t shown = 0;
    for (size_t a = 0; a < n_alerts && shown < (getenv("BENCH_QUALITY_MISSES") ? 1000u : 12u); a++)
        if (!alerts[a].matched) {
            printf("  false: %s %s %s start +%.0f s\n", ids[alerts[a].dev], alerts[a].metric,
                   alerts[a].kind, (alerts[a].start - t0) / 1000.0);
            shown++;
        }
    const char *only = getenv("BENCH_QUALITY_DEVICE");
    if (only)
        for (size_t a = 0; a < n_alerts; a++)
            if (alerts[a].dev == atoi(only))
                printf("  alert: %s %s %s +%.0f..+%.0f s%s\n", ids[alerts[a].dev], alerts[a].metric,
                       alerts[a].kind, (alerts[a].start - t0) / 1000.0,
                       (alerts[a].end - t0) / 1000.0, alerts[a].matched ? "" : " (false)");
    if (only)
        for (size_t l = 0; l < n_labels; l++)
            if (labels[l].dev == atoi(only))
                printf("  label: %s %s %s +%.0f..+%.0f s%s\n", ids[labels[l].dev], labels[l].metric,
                       tg_anomaly_kind_name((enum tg_anomaly_kind)labels[l].kind),
                       (labels[l].start - t0) / 1000.0, (labels[l].end - t0) / 1000.0,
                       labels[l].detected_at < 0 ? " (missed)" : "");
    if (getenv("BENCH_QUALITY_MISSES"))
        for (size_t l = 0; l < n_labels; l++)
            if (labels[l].detected_at < 0)
                printf("  missed: %s %s %s +%.0f..+%.0f s\n", ids[labels[l].dev], labels[l].metric,
                       tg_anomaly_kind_name((enum tg_anomaly_kind)labels[l].kind),
                       (labels[l].start - t0) / 1000.0, (labels[l].end - t0) / 1000.0);
    for (int d = 0; d < devices; d++) {
        free(sensor[d]);
        free(anom[d]);
    }
    free(sensor);
    free(anom);
    free(ids);
    free(labels);
    free(alerts);
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    tg_config_destroy(cfg);
    return 0;
}
