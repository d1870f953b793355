/*
 * engine_config.c - the engine's part of the worker's INI: [detect] (the detectors' defaults),
 * [rules.1] .. [rules.8] (the same keys for the metrics a pattern matches), [window], [alert]
 * and [engine].
 *
 * The config module has no floating-point type, so thresholds and weights are string keys
 * parsed here and reported the same way the module reports its own errors:
 * "FILE:LINE: [section] key: expected ..., got "x"".
 *
 * A key of a rule section that the files and --set leave at its default inherits the value
 * of [detect] (tg_config_origin() says "default"), so a rule only states what differs.
 */
#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* One detector section's keys. The defaults of the rule sections are the same text as those
 * of [detect]; they are never used as such (inheritance, above). */
#define DETECT_KEYS(sec)                                                                          \
    TG_CFG_BOOL(sec, "level", "true", "rolling median/MAD (Hampel) detector on or off"),          \
    TG_CFG_INT(sec, "level_window", "15", 5, TG_ENGINE_LEVEL_WINDOW_MAX,                          \
               "samples in the level detector's rolling window"),                                 \
    TG_CFG_STR(sec, "level_threshold", "6",                                                       \
               "robust z (|x - median| / (1.4826 MAD)) at which the level detector fires"),      \
    TG_CFG_BOOL(sec, "shift", "true", "EWMA shift detector (small sustained shifts) on or off"),   \
    TG_CFG_STR(sec, "shift_alpha", "0.01",                                                        \
               "weight of a new sample in the slow baseline mean/variance, (0, 1]"),             \
    TG_CFG_STR(sec, "shift_lambda", "0.1",                                                       \
               "weight of a new sample in the fast EWMA compared with the baseline, (0, 1]"),    \
    TG_CFG_STR(sec, "shift_threshold", "5",                                                       \
               "EWMA chart limit, in standard deviations of the EWMA, at which it fires"),       \
    TG_CFG_INT(sec, "shift_persist_samples", "180", 0, 1000000,                                  \
               "samples the shift chart stays beyond 2 of its deviations on one side before it "\
               "fires whatever its threshold (slow drifts; 0: off)"),                             \
    TG_CFG_STR(sec, "drift_min", "0",                                                             \
               "smallest sustained drift worth an alert, in the metric's unit: the drift test "  \
               "counts a gap this large whatever spread the series learned (0: off)"),           \
    TG_CFG_BOOL(sec, "rate", "true", "rate-of-change detector on or off"),                        \
    TG_CFG_STR(sec, "rate_threshold", "7",                                                        \
               "z of the rate of change per second at which the rate detector fires"),           \
    TG_CFG_BOOL(sec, "stuck", "true", "stuck/flatline detector on or off"),                       \
    TG_CFG_INT(sec, "stuck_samples", "10", 3, 1000000,                                            \
               "samples within stuck_tolerance that make a flatline (of a varying series)"),     \
    TG_CFG_STR(sec, "stuck_tolerance", "0",                                                       \
               "largest difference from the run's first value that counts as unchanged, in "    \
               "the metric's unit"),                                                              \
    TG_CFG_BOOL(sec, "silence", "true", "silence detector on or off"),                            \
    TG_CFG_STR(sec, "silence_factor", "5",                                                        \
               "silent after this many usual sampling periods without data"),                    \
    TG_CFG_BOOL(sec, "seasonal", "false", "time-of-day baseline detector on or off"),             \
    TG_CFG_INT(sec, "seasonal_buckets", "24", 4, TG_ENGINE_SEASONAL_BUCKETS_MAX,                  \
               "time-of-day buckets per (UTC) day"),                                              \
    TG_CFG_STR(sec, "seasonal_threshold", "6",                                                    \
               "z against the bucket's mean/deviation at which the seasonal detector fires"),    \
    TG_CFG_INT(sec, "seasonal_days", "7", 1, 365, "memory of a time-of-day bucket, in days"),     \
    TG_CFG_INT(sec, "seasonal_min_days", "3", 1, 255,                                             \
               "days a bucket must have seen before it scores"),                                 \
    TG_CFG_STR(sec, "min_scale", "0",                                                             \
               "floor of every detector's scale, in the metric's unit (0: the sensor's "        \
               "observed resolution only)"),                                                      \
    TG_CFG_INT(sec, "warmup_samples", "30", 3, 1000000,                                           \
               "samples a series (or one after a long gap) learns before it scores"),             \
    TG_CFG_MS(sec, "gap_reset_ms", "1800000", 0, INT64_C(365) * 86400000,                         \
              "a gap in a series longer than this restarts its warm-up (0: never), ms"),         \
    TG_CFG_BOOL(sec, "noise_adapt", "true",                                                       \
                "raise a series' threshold while small exceedances are frequent (noisy series)"), \
    TG_CFG_BOOL(sec, "predict", "false",                                                          \
                "prediction-residual detector (periodic series: vibration, AC-coupled) on or off"),\
    TG_CFG_STR(sec, "predict_threshold", "6",                                                     \
               "residual of the AR prediction, in its standard deviations, at which the predict "\
               "detector fires"),                                                                 \
    TG_CFG_INT(sec, "predict_order", "8", 2, TG_ENGINE_PREDICT_ORDER_MAX,                         \
               "past samples the predict detector's linear predictor uses (2 per sine)")

#define DETECT_NKEYS 28

#define RULE_KEYS(sec)                                                                            \
    TG_CFG_STR(sec, "match", "",                                                                  \
               "fnmatch pattern of the metric names this rule covers (empty: rule unused)"),     \
    DETECT_KEYS(sec)

static const struct tg_config_key engine_keys[] = {
    DETECT_KEYS("detect"),
    RULE_KEYS("rules.1"),
    RULE_KEYS("rules.2"),
    RULE_KEYS("rules.3"),
    RULE_KEYS("rules.4"),
    RULE_KEYS("rules.5"),
    RULE_KEYS("rules.6"),
    RULE_KEYS("rules.7"),
    RULE_KEYS("rules.8"),
    TG_CFG_MS("window", "size_ms", "60000", 1000, 86400000,
              "length of the tumbling aggregate windows, ms"),
    TG_CFG_MS("window", "allowed_lateness_ms", "5000", 0, 86400000,
              "watermark = highest event time of the partition minus this, ms (<= size_ms)"),
    TG_CFG_STR("alert", "threshold", "0.5",
               "combined anomaly score in (0, 1) that opens an alert (0.5: a detector at its "
               "threshold)"),
    TG_CFG_STR("alert", "close_threshold", "0.3",
               "an open alert counts as quiet while the score is under this (<= threshold)"),
    TG_CFG_MS("alert", "quiet_ms", "60000", 0, INT64_C(86400000) * 30,
              "event time under the threshold before an alert closes, ms"),
    TG_CFG_INT("alert", "quiet_samples", "3", 1, 1000000,
               "points under the threshold (as well as quiet_ms) before an alert closes"),
    TG_CFG_MS("alert", "update_interval_ms", "60000", 0, INT64_C(86400000) * 30,
              "least event time between two 'update' records of one alert, ms"),
    TG_CFG_MS("engine", "series_idle_ms", "604800000", 0, INT64_C(86400000) * 3650,
              "forget a series whose last reading is this far behind its partition's "
              "watermark (event time, checked hourly; 0: never), ms"),
    TG_CFG_INT("engine", "max_series", "1000000", 1, 100000000,
               "series a worker tracks at most; readings of further series are counted, "
               "not scored"),
};

_Static_assert(sizeof engine_keys / sizeof engine_keys[0] ==
                   DETECT_NKEYS + TG_ENGINE_RULES_MAX * (DETECT_NKEYS + 1) + 9,
               "DETECT_NKEYS must match DETECT_KEYS");

const struct tg_config_key *tg_engine_config_keys(size_t *n)
{
    *n = sizeof engine_keys / sizeof engine_keys[0];
    return engine_keys;
}

const char *detect__name(enum detector d)
{
    static const char *const names[DET__COUNT] = {"level", "shift", "rate",
                                                  "stuck", "seasonal", "silence",
                                                  "predict"};
    return d < DET__COUNT ? names[d] : "unknown";
}

/* The section a key's value comes from: the rule's own when set there, else [detect]. */
static const char *source_section(const struct tg_config *cfg, const char *rule_sec,
                                  const char *key)
{
    if (!rule_sec)
        return "detect";
    return strcmp(tg_config_origin(cfg, rule_sec, key), "default") == 0 ? "detect" : rule_sec;
}

struct builder {
    const struct tg_config *cfg;
    char *err;
    size_t errlen;
    bool failed;
};

static void fail(struct builder *b, const char *section, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct builder *b, const char *section, const char *key, const char *fmt, ...)
{
    if (b->failed)
        return; /* the first problem is the one to fix */
    b->failed = true;
    int n = snprintf(b->err, b->errlen, "%s: [%s] %s: ", tg_config_origin(b->cfg, section, key),
                     section, key);
    if (n < 0 || (size_t)n >= b->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err + n, b->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* A number in [lo, hi] (lo excluded when lo_open). */
static double get_num(struct builder *b, const char *section, const char *key, double lo,
                      bool lo_open, double hi)
{
    const char *text = tg_config_get_str(b->cfg, section, key);
    char *end = NULL;
    double v = strtod(text, &end);
    if (!*text || !end || *end || !isfinite(v) || v > hi || (lo_open ? v <= lo : v < lo)) {
        fail(b, section, key, "expected a number %s %g and <= %g, got \"%s\"",
             lo_open ? ">" : ">=", lo, hi, text);
        return lo;
    }
    return v;
}

static void read_params(struct builder *b, const char *rule_sec, struct detect_params *dp)
{
    const struct tg_config *cfg = b->cfg;
#define SEC(key) source_section(cfg, rule_sec, key)
    static const char *const on_keys[DET__COUNT] = {"level", "shift", "rate",
                                                    "stuck", "seasonal", "silence",
                                                  "predict"};
    for (int d = 0; d < DET__COUNT; d++)
        dp->on[d] = tg_config_get_bool(cfg, SEC(on_keys[d]), on_keys[d]);
    dp->level_window = (int)tg_config_get_int(cfg, SEC("level_window"), "level_window");
    dp->threshold[DET_LEVEL] = get_num(b, SEC("level_threshold"), "level_threshold", 0.5, false, 1e6);
    dp->shift_alpha = get_num(b, SEC("shift_alpha"), "shift_alpha", 0, true, 1);
    dp->shift_lambda = get_num(b, SEC("shift_lambda"), "shift_lambda", 0, true, 1);
    dp->threshold[DET_SHIFT] = get_num(b, SEC("shift_threshold"), "shift_threshold", 0.5, false, 1e6);
    dp->shift_persist_samples =
        (int)tg_config_get_int(cfg, SEC("shift_persist_samples"), "shift_persist_samples");
    dp->drift_min = get_num(b, SEC("drift_min"), "drift_min", 0, false, 1e100);
    dp->threshold[DET_RATE] = get_num(b, SEC("rate_threshold"), "rate_threshold", 0.5, false, 1e6);
    dp->stuck_samples = (int)tg_config_get_int(cfg, SEC("stuck_samples"), "stuck_samples");
    dp->stuck_tolerance = get_num(b, SEC("stuck_tolerance"), "stuck_tolerance", 0, false, 1e300);
    dp->threshold[DET_STUCK] = 1;
    dp->silence_factor = get_num(b, SEC("silence_factor"), "silence_factor", 1.5, false, 1e6);
    dp->threshold[DET_SILENCE] = 1;
    dp->seasonal_buckets = (int)tg_config_get_int(cfg, SEC("seasonal_buckets"), "seasonal_buckets");
    dp->threshold[DET_SEASONAL] =
        get_num(b, SEC("seasonal_threshold"), "seasonal_threshold", 0.5, false, 1e6);
    dp->seasonal_days = (int)tg_config_get_int(cfg, SEC("seasonal_days"), "seasonal_days");
    dp->seasonal_min_days =
        (int)tg_config_get_int(cfg, SEC("seasonal_min_days"), "seasonal_min_days");
    dp->min_scale = get_num(b, SEC("min_scale"), "min_scale", 0, false, 1e300);
    dp->warmup_samples = (int)tg_config_get_int(cfg, SEC("warmup_samples"), "warmup_samples");
    dp->gap_reset_ms = tg_config_get_ms(cfg, SEC("gap_reset_ms"), "gap_reset_ms");
    dp->noise_adapt = tg_config_get_bool(cfg, SEC("noise_adapt"), "noise_adapt");
    dp->threshold[DET_PREDICT] =
        get_num(b, SEC("predict_threshold"), "predict_threshold", 0.5, false, 1e6);
    dp->predict_order = (int)tg_config_get_int(cfg, SEC("predict_order"), "predict_order");
#undef SEC
    dp->ring_bytes = dp->on[DET_LEVEL] ? level_window__bytes(dp->level_window) : 0;
    dp->seasonal_bytes =
        dp->on[DET_SEASONAL] ? (size_t)dp->seasonal_buckets * sizeof(struct seasonal_bucket) : 0;
    dp->predict_bytes = dp->on[DET_PREDICT] ? predict__bytes(dp->predict_order) : 0;
    detect__derive(dp);
}

struct tg_engine_config *tg_engine_config_from(const struct tg_config *cfg, char *err,
                                               size_t errlen)
{
    struct builder b = {.cfg = cfg, .err = err, .errlen = errlen};
    if (errlen)
        err[0] = '\0';
    struct tg_engine_config *ec = calloc(1, sizeof *ec);
    if (!ec) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    read_params(&b, NULL, &ec->defaults);
    for (int i = 1; i <= TG_ENGINE_RULES_MAX && !b.failed; i++) {
        char sec[16];
        snprintf(sec, sizeof sec, "rules.%d", i);
        const char *match = tg_config_get_str(cfg, sec, "match");
        if (!*match)
            continue;
        struct engine_rule *ru = &ec->rules[ec->n_rules];
        ru->match = strdup(match);
        if (!ru->match) {
            snprintf(err, errlen, "out of memory");
            tg_engine_config_destroy(ec);
            return NULL;
        }
        ec->n_rules++;
        read_params(&b, sec, &ru->dp);
    }
    ec->window_ms = tg_config_get_ms(cfg, "window", "size_ms");
    ec->lateness_ms = tg_config_get_ms(cfg, "window", "allowed_lateness_ms");
    if (!b.failed && ec->lateness_ms > ec->window_ms)
        fail(&b, "window", "allowed_lateness_ms",
             "expected at most [window] size_ms (%lld), got %lld", (long long)ec->window_ms,
             (long long)ec->lateness_ms);
    ec->alert_threshold = get_num(&b, "alert", "threshold", 0, true, 0.999);
    ec->close_threshold = get_num(&b, "alert", "close_threshold", 0, true, 0.999);
    if (!b.failed && ec->close_threshold > ec->alert_threshold)
        fail(&b, "alert", "close_threshold", "expected at most [alert] threshold (%g), got %g",
             ec->alert_threshold, ec->close_threshold);
    /* 1 - 2^-(r^2) reaches alert_threshold at r = sqrt(-log2(1 - threshold)); a tenth of a
     * percent under it the score is below the threshold by far more than any rounding (at
     * least 1e-7 for thresholds up to 0.999), so a point under this ratio with no alert open
     * needs no score (engine.c). */
    ec->quiet_ratio = 0.999 * sqrt(-log2(1 - ec->alert_threshold));
    ec->quiet_ms = tg_config_get_ms(cfg, "alert", "quiet_ms");
    ec->quiet_samples = (int)tg_config_get_int(cfg, "alert", "quiet_samples");
    ec->update_interval_ms = tg_config_get_ms(cfg, "alert", "update_interval_ms");
    ec->max_series = (uint64_t)tg_config_get_int(cfg, "engine", "max_series");
    ec->series_idle_ms = tg_config_get_ms(cfg, "engine", "series_idle_ms");
    if (b.failed) {
        tg_engine_config_destroy(ec);
        return NULL;
    }
    return ec;
}

void tg_engine_config_destroy(struct tg_engine_config *ec)
{
    if (!ec)
        return;
    for (int i = 0; i < ec->n_rules; i++)
        free(ec->rules[i].match);
    free(ec);
}

void tg_engine_config_set_partition_hole_ms(struct tg_engine_config *ec, int64_t ms)
{
    ec->partition_hole_ms = ms > 0 ? ms : 0;
}

int engine__rule_for(const struct tg_engine_config *ec, const char *metric)
{
    for (int i = 0; i < ec->n_rules; i++)
        if (fnmatch(ec->rules[i].match, metric, 0) == 0)
            return i;
    return ec->n_rules;
}
