/*
 * detect.c - the detectors of one series, and their combination into one score.
 *
 * Each detector turns a sample into a statistic in its own units (a robust z, an EWMA chart
 * z, a run length) and divides it by its threshold: ratio 1 means "at its threshold". The
 * series' ratio is the largest of them, divided by a per-series multiplier (noise
 * adaptation, below), and the score is 1 - 2^-(r^2): 0.5 at r = 1, 0.94 at r = 2, monotone,
 * in [0, 1). The alert threshold compares that score.
 *
 * Scales: every detector divides by a scale that can be zero on a constant or quantized
 * series, so each is floored by the larger of min_scale (config), the smallest non-zero step
 * the series has shown (the sensor's quantum) and a relative epsilon. A constant series then
 * scores nothing for steps of its own resolution but notices a real change.
 *
 * Baselines learn from winsorized samples (clipped to 4 scales of the mean), so one spike
 * barely moves them, while a lasting level shift is absorbed within about 1 / shift_alpha
 * samples and its alert closes.
 *
 * Noise adaptation: a heavy-tailed series crosses ratio 1 now and then though nothing is
 * wrong. The multiplier tracks the (1 - 1e-3) quantile of the ratio by stochastic
 * approximation: each point with a ratio just over the current multiplier (1 to 2 times it)
 * raises it by 2 %, each other point lowers it (not below 1) by the amount that balances at
 * one exceedance in a thousand. Large ratios (clear anomalies) do not raise it, so an
 * incident does not teach the series to ignore the next one.
 *
 * Everything is a pure function of the series' state and the sample: no clock, no
 * randomness, so restored state continues exactly as the original would have.
 */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

#define DAY_MS INT64_C(86400000)
#define WINSOR 4.0              /* baselines learn x clipped to mean +- WINSOR scales */
#define NOISE_UP 0.02           /* multiplier step per small exceedance */
#define NOISE_TARGET 1e-3       /* exceedance rate the multiplier aims at */
#define PERIOD_ALPHA 0.1        /* weight of a new step in the usual period */
#define P_CHANGE_ALPHA 0.05     /* weight of a new sample in the change fraction */

double detect__score(double r)
{
    if (!(r > 0))
        return 0;
    return 1.0 - exp2(-(r * r));
}

size_t series__size(const struct detect_params *dp, size_t dev_len, size_t metric_len)
{
    return sizeof(struct series) + dp->key_off + dev_len + 1 + metric_len + 1;
}

void detect__reset(struct series *s, const struct detect_params *dp)
{
    s->flags &= (uint8_t)~SERIES_HAS_LAST;
    s->level_n = s->level_pos = 0;
    s->n = 0;
    s->stuck_run = 0;
    s->period_ms = 0;
    s->resolution = 0;
    s->p_change = 0;
    s->calib = 1;
    s->last_ts = 0;
    s->last_value = 0;
    s->shift_mean = s->shift_var = s->shift_fast = 0;
    s->rate_mean = s->rate_var = 0;
    s->stuck_ref = 0;
    if (dp->on[DET_SEASONAL])
        memset(s->tail + dp->seasonal_off, 0,
               (size_t)dp->seasonal_buckets * sizeof(struct seasonal_bucket));
}

/* Median of v[0..n) (n >= 1), sorting v in place: insertion sort, n is at most 31. */
static double median_inplace(double *v, int n)
{
    for (int i = 1; i < n; i++) {
        double x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
    return (n & 1) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* An exponentially weighted Welford step: mean and variance of x with weight alpha. */
static void ew_update(double *mean, double *var, double x, double alpha)
{
    double d = x - *mean;
    *mean += alpha * d;
    *var = (1 - alpha) * (*var + alpha * d * d);
}

static double clampd(double x, double lo, double hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* Warm-up weight: the running (Welford) mean of the first samples, then alpha. */
static double warm_alpha(uint32_t n, double alpha)
{
    double w = 1.0 / (double)(n + 1);
    return w > alpha ? w : alpha;
}

static void level_point(struct series *s, const struct detect_params *dp, double x, bool warm,
                        double floor, struct detect_result *res)
{
    double *ring = (double *)(void *)(s->tail + dp->level_off);
    int need = dp->level_window / 2 + 1;
    if (warm && s->level_n >= need) {
        double v[TG_ENGINE_LEVEL_WINDOW_MAX];
        int n = s->level_n;
        memcpy(v, ring, (size_t)n * sizeof *v);
        double med = median_inplace(v, n);
        for (int i = 0; i < n; i++)
            v[i] = fabs(v[i] - med);
        double mad = median_inplace(v, n) * 1.4826;
        /* The MAD of a short window is itself noisy (a window of 15 can give a third of the
         * true deviation), so the scale is at least most of the long-run deviation. */
        double scale = 0.8 * sqrt(s->shift_var);
        if (mad > scale)
            scale = mad;
        if (scale < floor)
            scale = floor;
        res->ratio[DET_LEVEL] = fabs(x - med) / scale / dp->threshold[DET_LEVEL];
        res->baseline[DET_LEVEL] = med;
    }
    ring[s->level_pos] = x;
    s->level_pos = (uint8_t)((s->level_pos + 1) % dp->level_window);
    if (s->level_n < dp->level_window)
        s->level_n++;
}

static void shift_point(struct series *s, const struct detect_params *dp, double x, bool warm,
                        double floor, struct detect_result *res)
{
    double sd = sqrt(s->shift_var);
    if (sd < floor)
        sd = floor;
    double lambda = dp->shift_lambda;
    s->shift_fast += lambda * (x - s->shift_fast);
    if (warm && dp->on[DET_SHIFT]) {
        double chart_sd = sd * sqrt(lambda / (2 - lambda));
        res->ratio[DET_SHIFT] = fabs(s->shift_fast - s->shift_mean) / chart_sd /
                                dp->threshold[DET_SHIFT];
        res->baseline[DET_SHIFT] = s->shift_mean;
    }
    if (warm)
        x = clampd(x, s->shift_mean - WINSOR * sd, s->shift_mean + WINSOR * sd);
    ew_update(&s->shift_mean, &s->shift_var, x, warm_alpha(s->n, dp->shift_alpha));
}

static void rate_point(struct series *s, const struct detect_params *dp, double x, double dt_ms,
                       bool warm, double floor, struct detect_result *res)
{
    /* Irregular sampling: the step is divided by the time it took, but by no less than half
     * the usual period, so two samples that arrive together do not make an infinite rate. */
    double half_period = 0.5 * s->period_ms;
    double dt_s = (dt_ms > half_period ? dt_ms : half_period) / 1000.0;
    if (!(dt_s > 0))
        return;
    double rate = (x - s->last_value) / dt_s;
    double rate_floor = floor / (s->period_ms > 0 ? s->period_ms / 1000.0 : dt_s);
    double sd = sqrt(s->rate_var);
    if (sd < rate_floor)
        sd = rate_floor;
    if (warm) {
        res->ratio[DET_RATE] = fabs(rate - s->rate_mean) / sd / dp->threshold[DET_RATE];
        res->baseline[DET_RATE] = s->last_value + s->rate_mean * dt_s;
        rate = clampd(rate, s->rate_mean - WINSOR * sd, s->rate_mean + WINSOR * sd);
    }
    ew_update(&s->rate_mean, &s->rate_var, rate, warm_alpha(s->n, dp->shift_alpha));
}

static void stuck_point(struct series *s, const struct detect_params *dp, double x,
                        struct detect_result *res)
{
    bool same = fabs(x - s->stuck_ref) <= dp->stuck_tolerance;
    if (same) {
        if (s->stuck_run < UINT32_MAX)
            s->stuck_run++;
    } else {
        s->stuck_run = 1;
        s->stuck_ref = x;
    }
    uint32_t n = (uint32_t)dp->stuck_samples;
    /* The change fraction learns from ordinary samples and, once a flatline has lasted 20
     * times its length, from the flatline too: a series that became constant for good
     * stops being reported, one long alert rather than forever. */
    if (s->stuck_run < n || s->stuck_run > 20 * n)
        s->p_change += (float)(P_CHANGE_ALPHA * ((same ? 0.0 : 1.0) - s->p_change));
    if (s->stuck_run >= n) {
        /* A series that changes at most samples flatlines at N; one that repeats values
         * often needs proportionally longer; one that never varied never fires. */
        double p = s->p_change / 0.8;
        if (p > 1)
            p = 1;
        res->ratio[DET_STUCK] = (double)s->stuck_run / n * p;
        res->baseline[DET_STUCK] = s->stuck_ref;
    }
}

static void seasonal_point(struct series *s, const struct detect_params *dp, int64_t ts,
                           double x, double floor, struct detect_result *res)
{
    struct seasonal_bucket *bk = (struct seasonal_bucket *)(void *)(s->tail + dp->seasonal_off);
    int64_t tod = ts % DAY_MS;
    if (tod < 0)
        tod += DAY_MS;
    int64_t day = (ts - tod) / DAY_MS;
    int64_t bucket_ms = DAY_MS / dp->seasonal_buckets;
    struct seasonal_bucket *b = &bk[tod / bucket_ms < dp->seasonal_buckets
                                        ? tod / bucket_ms : dp->seasonal_buckets - 1];
    double sd = sqrt((double)b->var);
    if (sd < floor)
        sd = floor;
    /* A bucket scores from its min_days-th day on, against what earlier days taught it. */
    if (b->days >= dp->seasonal_min_days) {
        res->ratio[DET_SEASONAL] =
            fabs(x - b->mean) / sd / dp->threshold[DET_SEASONAL];
        res->baseline[DET_SEASONAL] = b->mean;
    }
    if (b->days == 0 || b->last_day != (uint16_t)day) {
        if (b->days < UINT8_MAX)
            b->days++;
        b->last_day = (uint16_t)day;
    }
    /* Weight per sample so that a bucket remembers about seasonal_days days whatever the
     * sampling period. */
    double period = s->period_ms > 0 ? s->period_ms : 1000.0;
    double alpha = period / ((double)bucket_ms * dp->seasonal_days);
    alpha = warm_alpha(b->samples, alpha > 1 ? 1 : alpha);
    double xv = x;
    if (b->days > dp->seasonal_min_days)
        xv = clampd(x, b->mean - WINSOR * sd, b->mean + WINSOR * sd);
    double mean = b->mean, var = b->var;
    ew_update(&mean, &var, xv, alpha);
    b->mean = (float)mean;
    b->var = (float)var;
    if (b->samples < UINT16_MAX)
        b->samples++;
}

void detect__point(struct series *s, const struct detect_params *dp, int64_t ts, double x,
                   struct detect_result *res)
{
    memset(res, 0, sizeof *res);
    res->dominant = DET_LEVEL;
    if (!(s->flags & SERIES_HAS_LAST)) {
        /* First sample: every baseline starts at it. */
        s->shift_mean = s->shift_fast = x;
        s->shift_var = 0;
        s->stuck_ref = x;
        s->stuck_run = 1;
        if (dp->on[DET_LEVEL])
            level_point(s, dp, x, false, 0, res);
        if (dp->on[DET_SEASONAL])
            seasonal_point(s, dp, ts, x, 0, res);
        s->n = 1;
        s->flags |= SERIES_HAS_LAST;
        s->last_ts = ts;
        s->last_value = x;
        return;
    }
    double dt = (double)(ts - s->last_ts);
    double step = fabs(x - s->last_value);
    if (step > 0 && (s->resolution == 0 || step < s->resolution))
        s->resolution = (float)step;
    if (s->period_ms <= 0)
        s->period_ms = (float)dt;
    else
        s->period_ms += (float)(PERIOD_ALPHA * ((dt < 4 * s->period_ms ? dt : 4 * s->period_ms) -
                                                s->period_ms));
    if (dp->gap_reset_ms > 0 && ts - s->last_ts > dp->gap_reset_ms) {
        /* After a long gap the level, shift and rate baselines may be hours out of date:
         * learn again from here (the noise level, period, resolution and seasonal profile
         * stay, they do not go stale). */
        s->n = 0;
        s->level_n = s->level_pos = 0;
        s->shift_mean = s->shift_fast = x;
        s->rate_mean = 0;
        s->stuck_run = 0;
        s->stuck_ref = x;
        s->last_value = x;
    }
    double floor = dp->min_scale;
    if (s->resolution > floor)
        floor = s->resolution;
    double eps = 1e-9 * (fabs(x) + 1e-3);
    if (floor < eps)
        floor = eps;
    bool warm = s->n >= (uint32_t)dp->warmup_samples;

    if (dp->on[DET_LEVEL])
        level_point(s, dp, x, warm, floor, res);
    shift_point(s, dp, x, warm, floor, res); /* its mean and variance serve level too */
    if (dp->on[DET_RATE])
        rate_point(s, dp, x, dt, warm && s->n > 1, floor, res);
    if (dp->on[DET_STUCK])
        stuck_point(s, dp, x, res);
    if (dp->on[DET_SEASONAL])
        seasonal_point(s, dp, ts, x, floor, res);

    double r = 0;
    for (int d = 0; d < DET__COUNT; d++)
        if (res->ratio[d] > r) {
            r = res->ratio[d];
            res->dominant = d;
        }
    if (dp->noise_adapt && warm) {
        double m = s->calib < 1 ? 1.0 : s->calib;
        double rel = r / m;
        if (rel >= 1 && rel < 2)
            m *= 1 + NOISE_UP;
        else if ((m *= 1 - NOISE_UP * NOISE_TARGET / (1 - NOISE_TARGET)) < 1)
            m = 1;
        r /= s->calib < 1 ? 1.0 : s->calib; /* this point is judged by the old multiplier */
        s->calib = (float)m;
    }
    res->scored = warm || res->ratio[DET_STUCK] > 0 || res->ratio[DET_SEASONAL] > 0;
    res->r = r;
    res->score = detect__score(r);
    if (s->n < UINT32_MAX)
        s->n++;
    s->last_ts = ts;
    s->last_value = x;
}
