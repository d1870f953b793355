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
 * the series has shown (the sensor's quantum) and 1e-4 of the value. A constant series then
 * scores nothing for steps of its own resolution but notices a real change.
 *
 * Learning: a point whose ratio is ANOMALOUS or more teaches the baselines a tenth as much,
 * and a residual beyond OUTLIER scales moves the level a tenth as much and the variance not
 * at all (after the variance's own warm-up). So one spike barely moves anything, a level
 * shift stays visible as one incident for as long as it lasts (a permanent one is absorbed
 * in about 10 / shift_alpha samples), and a slow drift cannot teach the series that its
 * spread is as wide as the drift.
 *
 * The shift baseline is Holt's level and trend, so slopes (a daily cycle) are not shifts;
 * the EWMA chart compares a fast EWMA with it, over the larger of its theoretical spread and
 * the spread it has shown (a slowly wandering sensor moves the fast EWMA by its whole wander).
 *
 * Persistence (slow drifts): the chart's spread keeps learning while a drift grows (it must,
 * or a wandering sensor alerts at every wander its first minutes did not show), so a drift
 * that grows about as fast as the spread learns keeps the chart at 2 to 3.5 of its deviations
 * for minutes and never crosses shift_threshold. A wander's excursions cross back within a
 * minute or so. So the shift detector also counts the samples the chart has stayed beyond
 * DRIFT_Z deviations on one side, and that run, over shift_persist_samples, is a second ratio
 * of the same detector: a one-sided excursion of that length fires however slowly it grew.
 *
 * Noise adaptation: a heavy-tailed series crosses ratio 1 now and then though nothing is
 * wrong. A per-series multiplier divides the ratio: each point outside an open alert with a
 * ratio just over the multiplier (1 to 2 times it) raises it by 2 %, each alert opened by a
 * modest crossing (r < 2) by half (detect__opened), and each other point lowers it (not below
 * 1) by the amount that balances at one exceedance in NOISE_TARGET. Clear anomalies (r >= 2)
 * and the points of an incident raise nothing, so an incident does not teach the series to
 * ignore the next one.
 *
 * Everything is a pure function of the series' state and the sample: no clock, no
 * randomness, so restored state continues exactly as the original would have.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "engine_internal.h"
#include "level_window.h"

#define DAY_MS INT64_C(86400000)
#define WINSOR 4.0              /* baselines learn x clipped to mean +- WINSOR scales */
#define NOISE_UP 0.02           /* multiplier step per small exceedance */
#define NOISE_TARGET 5e-4       /* exceedance rate the multiplier aims at */
#define PERIOD_ALPHA 0.1        /* weight of a new step in the usual period */
#define P_CHANGE_ALPHA 0.05     /* weight of a new sample in the change fraction */
#define TREND_BETA 0.1          /* the trend learns a tenth as fast as the level, once warm */
#define SHIFT_SETTLE_MAX 100    /* samples after warm-up before the shift chart scores, at most */
#define DVAR_PRIOR 50           /* samples the chart spread's prior is worth */
#define DVAR_SLOW 0.1           /* the chart spread learns this fraction as fast as the level */
#define OUTLIER 3.0             /* residuals beyond this many scales learn slowly */
#define CALIB_MAX 1e6             /* the noise multiplier's ceiling */
#define EARLY_FACTOR 1.0        /* level threshold x (1 + this) at the start of warm-up */
#define ANOMALOUS 0.5           /* ratio above which a point learns slowly */
#define DRIFT_Z 2.0             /* chart deviations a persistent excursion stays beyond */

double detect__score(double r)
{
    if (!(r > 0))
        return 0;
    return 1.0 - exp2(-(r * r));
}

size_t series__size(const struct detect_params *dp, size_t dev_len, size_t metric_len)
{
    return sizeof(struct series) + series__key_bytes(dev_len, metric_len) + dp->ring_bytes +
           dp->seasonal_bytes + dp->predict_bytes;
}

void series__set_prefetch(struct series *s, const struct detect_params *dp)
{
    size_t size = series__size(dp, s->dev_len, s->metric_len);
    size_t hot = size - dp->seasonal_bytes - dp->predict_bytes;
    /* With predict on, its model (after the buckets) is read at every point too: the whole
     * series, as one range. */
    bool bucket = dp->on[DET_SEASONAL] && !dp->on[DET_PREDICT];
    if (!bucket)
        hot = size;
    s->pf_bucket = bucket;
    s->pf_bytes = (uint16_t)(hot < UINT16_MAX ? hot : UINT16_MAX);
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
    s->drift_run = 0;
    s->last_ts = 0;
    s->last_value = 0;
    s->shift_mean = s->shift_var = s->shift_fast = s->shift_trend = s->shift_dvar = 0;
    s->rate_mean = s->rate_var = 0;
    s->drift_fast = s->drift_slow = s->drift_var = s->drift_sum = 0;
    s->drift_back = 0;
    s->stuck_ref = 0;
    s->first_day = 0;
    if (dp->on[DET_SEASONAL]) {
        struct seasonal_bucket *bk = series__buckets(s, dp);
        for (int i = 0; i < dp->seasonal_buckets; i++)
            bk[i] = (struct seasonal_bucket){.mean = 0, .var = -1};
    }
    if (dp->on[DET_PREDICT])
        predict__reset(s, dp);
}

void detect__derive(struct detect_params *dp)
{
    dp->chart_factor = sqrt(dp->shift_lambda / (2 - dp->shift_lambda));
    dp->seasonal_bucket_ms = (int32_t)DAY_MS / (int32_t)dp->seasonal_buckets;
    dp->shift_settle =
        2 / dp->shift_alpha < SHIFT_SETTLE_MAX ? 2 / dp->shift_alpha : SHIFT_SETTLE_MAX;
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
    unsigned char *lw = series__level(s);
    int need = dp->level_window / 2 + 1;
    /* Before the warm-up ends, the level detector already judges (a spike in the first
     * seconds of a series is as real as a later one) but against a threshold raised in
     * proportion to how much of the warm-up is left, up to twice, since its scales are
     * still young. */
    double early = warm ? 1.0 : 1.0 + EARLY_FACTOR * (double)(dp->warmup_samples - (int)s->n) /
                                          (double)dp->warmup_samples;
    if (s->level_n >= need && s->n >= (uint32_t)need) {
        double med = level_window__median(lw, s->level_n);
        double mad = level_window__mad_raw(lw, s->level_n, med) * 1.4826;
        /* The MAD of a short window is itself noisy (a window of 15 can give a third of the
         * true deviation), so the scale is at least most of the long-run deviation. */
        double scale = 0.8 * sqrt(s->shift_var);
        if (mad > scale)
            scale = mad;
        if (scale < floor)
            scale = floor;
        res->ratio[DET_LEVEL] = fabs(x - med) / scale / (dp->threshold[DET_LEVEL] * early);
        res->baseline[DET_LEVEL] = med;
    }
    level_window__push(lw, dp->level_window, s->level_n, s->level_pos, x);
    s->level_pos = (uint8_t)(s->level_pos + 1 == dp->level_window ? 0 : s->level_pos + 1);
    if (s->level_n < dp->level_window)
        s->level_n++;
}

/* The shift detector's baseline is Holt's linear smoothing (a level and a trend per second),
 * so a series that rises and falls with the day is not "shifted" by the lag a flat mean
 * would have on every slope; the fast EWMA rides the same trend. */
static double shift_predict(const struct series *s, double dt_s)
{
    return s->shift_mean + s->shift_trend * dt_s;
}

/* Returns the level's scale, sqrt(shift_var) floored, which shift_learn uses too (nothing in
 * between changes shift_var). */
static double shift_score(struct series *s, const struct detect_params *dp, double x,
                          double dt_s, bool warm, double floor, struct detect_result *res)
{
    double sd = sqrt(s->shift_var);
    if (sd < floor)
        sd = floor;
    double lambda = dp->shift_lambda;
    double fast = s->shift_fast + s->shift_trend * dt_s;
    s->shift_fast = fast + lambda * (x - fast);
    /* The chart scores once the baseline has had 2 / shift_alpha samples (at most
     * SHIFT_SETTLE_MAX) to settle, and a
     * difference of one sensor quantum is never a shift. */
    if (warm && dp->on[DET_SHIFT] &&
        s->n >= (uint32_t)dp->warmup_samples + (uint32_t)dp->shift_settle) {
        double chart_sd = sd * dp->chart_factor;
        /* What the chart statistic itself has been spreading by: on a curving series (a
         * daily cycle) the fast and slow baselines lag differently, and that is no shift. */
        double seen_sd = sqrt(s->shift_dvar);
        if (chart_sd < seen_sd)
            chart_sd = seen_sd;
        if (chart_sd < floor)
            chart_sd = floor;
        double base = shift_predict(s, dt_s);
        double z = (s->shift_fast - base) / chart_sd;
        res->ratio[DET_SHIFT] = fabs(z) / dp->threshold[DET_SHIFT];
        res->baseline[DET_SHIFT] = base;
        /* Persistence: the run of samples beyond DRIFT_Z on one side; any sample back
         * inside, or on the other side, starts it again. An excursion is reported once: a
         * run during an open alert (the chart's, or its own) is spent, so a level shift that
         * the baseline absorbs slowly does not open a second alert when its first closes. */
        int32_t side = z >= DRIFT_Z ? 1 : z <= -DRIFT_Z ? -1 : 0;
        if (side == 0 || (s->drift_run > 0) != (side > 0))
            s->drift_run = side;
        else if (s->flags & SERIES_ALERT)
            s->drift_run = side * INT32_MAX; /* reported: spent until the chart comes back */
        else if (s->drift_run > -INT32_MAX && s->drift_run < INT32_MAX)
            s->drift_run += side;
        if (dp->shift_persist_samples > 0 && s->drift_run != INT32_MAX &&
            s->drift_run != -INT32_MAX) {
            double persist = fabs((double)s->drift_run) / dp->shift_persist_samples;
            if (persist > res->ratio[DET_SHIFT])
                res->ratio[DET_SHIFT] = persist;
        }
    } else {
        s->drift_run = 0;
    }
    return sd;
}

/* sd: shift_score's scale; a: this point's learning weight (warm_alpha x slow). */
static void shift_learn(struct series *s, const struct detect_params *dp, double x, double dt_s,
                        bool warm, double sd, double a, double slow)
{
    double pred = shift_predict(s, dt_s);
    double e = x - pred;
    bool outlier = false;
    if (warm) {
        /* A residual beyond OUTLIER scales moves the level a tenth as much (clipped) and
         * the variance not at all: with any clip, a long stretch of residuals at the clip
         * grows the variance by a constant factor per sample (at 4 scales, (1 - a)(1 + 16 a))
         * until a drift hides itself and everything after it. (Not while the variance
         * is still young: screening against an estimate from few samples biases it low.) */
        outlier = fabs(e) > OUTLIER * sd && s->n >= (uint32_t)dp->warmup_samples * 2;
        if (outlier && slow == 1.0)
            a *= 0.1;
        e = clampd(e, -WINSOR * sd, WINSOR * sd);
    }
    double level = pred + a * e;
    if (warm && dt_s > 0) {
        /* The trend learns only once the level has settled, at a fixed rate: learned
         * from the first samples' Welford steps it would be noise that persists. */
        double b = dp->shift_alpha * slow * TREND_BETA;
        s->shift_trend = (1 - b) * s->shift_trend + b * (level - s->shift_mean) / dt_s;
    }
    if (warm) {
        /* The chart's own spread starts from a prior worth DVAR_PRIOR samples: the level's
         * whole variance, as if the noise were one slow wander (which the fast EWMA does not
         * average out). A slowly wandering sensor is then not "shifted" each time it wanders
         * before enough of its wander has been seen to know better. It then learns at a
         * tenth of the baseline's pace: a wander's excursions are few per window, and a
         * spread learned over too few of them is often too small. */
        double d = s->shift_fast - pred;
        uint32_t k = s->n - (uint32_t)dp->warmup_samples;
        if (k == 0)
            s->shift_dvar = s->shift_var;
        double lim = WINSOR * sqrt(s->shift_dvar) + sd;
        d = clampd(d, -lim, lim);
        double ad = 1.0 / (k + DVAR_PRIOR);
        if (ad < a * DVAR_SLOW)
            ad = a * DVAR_SLOW;
        s->shift_dvar += ad * (d * d - s->shift_dvar);
    }
    s->shift_mean = level;
    if (!outlier)
        s->shift_var = (1 - a) * (s->shift_var + a * e * e);
}

/* The rate of change per second of x after s->last_value: the step divided by the time it
 * took, but by no less than half the usual period, so two samples that arrive together
 * (irregular sampling, a burst after a reconnect) do not make an infinite rate. */
static double rate_of(const struct series *s, double x, double dt_ms, double dt_s)
{
    double half_period = 0.5 * s->period_ms;
    double step_s = dt_ms > half_period ? dt_s : half_period / 1000.0; /* dt_s = dt_ms / 1000 */
    return step_s > 0 ? (x - s->last_value) / step_s : 0;
}

/* The floor of the rate's spread: the scale's floor per usual period (the same for scoring
 * and learning a point, so computed once). */
static double rate_floor_of(const struct series *s, double floor)
{
    return floor / (s->period_ms > 0 ? s->period_ms / 1000.0 : 1.0);
}

/* The spread of the rate: its own variability plus what the level's noise makes of a step
 * of dt (noise / dt: large for close samples), so irregular sampling does not make close
 * pairs look fast. */
static double rate_sd(const struct series *s, double rate_floor, double dt_s)
{
    double var = s->rate_var;
    if (dt_s > 0)
        var += 2 * s->shift_var / (dt_s * dt_s);
    double sd = sqrt(var);
    return sd < rate_floor ? rate_floor : sd;
}

static void rate_score(struct series *s, const struct detect_params *dp, double rate,
                       double dt_s, double rate_floor, struct detect_result *res)
{
    res->ratio[DET_RATE] =
        fabs(rate - s->rate_mean) / rate_sd(s, rate_floor, dt_s) / dp->threshold[DET_RATE];
    res->baseline[DET_RATE] = s->last_value;
}

static void rate_learn(struct series *s, double rate, double dt_s, bool warm,
                       double rate_floor, double a)
{
    if (warm) {
        double sd = rate_sd(s, rate_floor, dt_s);
        rate = clampd(rate, s->rate_mean - WINSOR * sd, s->rate_mean + WINSOR * sd);
    }
    ew_update(&s->rate_mean, &s->rate_var, rate, a);
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
    struct seasonal_bucket *bk = series__buckets(s, dp);
    int64_t day;
    int64_t tod = detect__time_of_day(ts, &day);
    struct seasonal_bucket *b = &bk[detect__bucket_index(dp, (int32_t)tod)];
    if (!(s->flags & SERIES_HAS_LAST))
        s->first_day = (int32_t)day;
    int64_t age_days = day - s->first_day; /* whole days the profile has been learning */
    if (b->var < 0) {
        b->mean = (float)x;
        b->var = 0;
        return;
    }
    double sd = sqrt((double)b->var);
    if (sd < floor)
        sd = floor;
    /* A bucket scores once the series has min_days days behind it, against what those
     * days taught it. */
    bool learned = age_days >= dp->seasonal_min_days;
    if (learned) {
        res->ratio[DET_SEASONAL] = fabs(x - b->mean) / sd / dp->threshold[DET_SEASONAL];
        res->baseline[DET_SEASONAL] = b->mean;
    }
    /* Weight per sample so that a bucket remembers about seasonal_days days whatever the
     * sampling period; while the profile is younger than that, as many days as it has. */
    double period = s->period_ms > 0 ? s->period_ms : 1000.0;
    int64_t memory_days = age_days + 1 < dp->seasonal_days ? age_days + 1 : dp->seasonal_days;
    double alpha = period / ((double)dp->seasonal_bucket_ms * (double)memory_days);
    if (alpha > 1)
        alpha = 1;
    double xv = x;
    if (learned)
        xv = clampd(x, b->mean - WINSOR * sd, b->mean + WINSOR * sd);
    double mean = b->mean, var = b->var;
    ew_update(&mean, &var, xv, alpha);
    b->mean = (float)clampd(mean, -FLT_MAX, FLT_MAX);
    b->var = (float)clampd(var, 0, FLT_MAX);
}

/* x within [lo, hi], NaN to lo. */
static double bound(double x, double lo, double hi)
{
    if (!(x >= lo))
        return lo;
    return x > hi ? hi : x;
}

/* Keeps the state within STATE_*_MAX whatever the input did (a trend extrapolated over a
 * gap of years, a restored state at the edge of the bounds): no-ops on real series. */
static void keep_bounded(struct series *s)
{
    s->shift_mean = bound(s->shift_mean, -STATE_VALUE_MAX, STATE_VALUE_MAX);
    s->shift_fast = bound(s->shift_fast, -STATE_VALUE_MAX, STATE_VALUE_MAX);
    s->stuck_ref = bound(s->stuck_ref, -STATE_VALUE_MAX, STATE_VALUE_MAX);
    s->shift_trend = bound(s->shift_trend, -STATE_RATE_MAX, STATE_RATE_MAX);
    s->rate_mean = bound(s->rate_mean, -STATE_RATE_MAX, STATE_RATE_MAX);
    s->shift_var = bound(s->shift_var, 0, STATE_VAR_MAX);
    s->shift_dvar = bound(s->shift_dvar, 0, STATE_VAR_MAX);
    s->rate_var = bound(s->rate_var, 0, STATE_VAR_MAX);
    s->drift_fast = bound(s->drift_fast, -STATE_VALUE_MAX, STATE_VALUE_MAX);
    s->drift_slow = bound(s->drift_slow, -STATE_VALUE_MAX, STATE_VALUE_MAX);
    s->drift_var = bound(s->drift_var, 0, STATE_VAR_MAX);
}

void detect__point(struct series *s, const struct detect_params *dp, int64_t ts, double x,
                   struct detect_result *res)
{
    /* Not memset, which compilers turn into rep stos here: a slow start on every point. */
    for (int d = 0; d + 1 < DET__COUNT; d += 2) {
        struct { double a, b; } zero = {0, 0};
        memcpy(&res->ratio[d], &zero, sizeof zero);
        memcpy(&res->baseline[d], &zero, sizeof zero);
    }
    if (DET__COUNT % 2)
        res->ratio[DET__COUNT - 1] = res->baseline[DET__COUNT - 1] = 0;
    res->scored = false;
    res->r = res->score = 0;
    res->dominant = DET_LEVEL;
    if (!(s->flags & SERIES_HAS_LAST)) {
        /* First sample: every baseline starts at it. */
        s->shift_mean = s->shift_fast = x;
        s->drift_fast = s->drift_slow = x;
        s->drift_var = s->drift_sum = 0;
        s->drift_back = 0;
        s->shift_var = 0;
        s->stuck_ref = x;
        s->stuck_run = 1;
        if (dp->on[DET_LEVEL])
            level_point(s, dp, x, false, 0, res);
        if (dp->on[DET_SEASONAL])
            seasonal_point(s, dp, ts, x, 0, res);
        if (dp->on[DET_PREDICT])
            predict__point(s, dp, -1, x, 0, res);
        s->n = 1;
        s->flags |= SERIES_HAS_LAST;
        s->last_ts = ts;
        s->last_value = x;
        return;
    }
    double dt = (double)(ts - s->last_ts);
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
        s->drift_fast = s->drift_slow = x;
        s->drift_sum = 0;
        s->drift_back = 0;
        s->shift_trend = 0;
        s->rate_mean = 0;
        s->stuck_run = 0;
        s->stuck_ref = x;
        s->last_value = x;
        s->drift_run = 0;
    }
    double floor = dp->min_scale;
    if (s->resolution > floor)
        floor = s->resolution;
    /* Relative floor: a step of 1e-4 of the value is never news on its own (a battery at
     * 4.1 V ticking by 1 mV after days of a constant reading). */
    double eps = 1e-4 * fabs(s->last_value) + 1e-12;
    if (floor < eps)
        floor = eps;
    bool warm = s->n >= (uint32_t)dp->warmup_samples;

    /* Score against what was learned so far... */
    if (dp->on[DET_LEVEL])
        level_point(s, dp, x, warm, floor, res);
    double dt_s = dt / 1000.0;
    double sd = shift_score(s, dp, x, dt_s, warm, floor, res);
    if (dp->on[DET_SHIFT])
        detect__drift(s, dp, x, warm, s->shift_var, floor, res);
    bool rate_warm = warm && s->n > 1;
    /* The rate of this sample, for scoring and learning alike (both see the same last
     * value and period). */
    double rate = dp->on[DET_RATE] ? rate_of(s, x, dt, dt_s) : 0;
    double rate_floor = dp->on[DET_RATE] && rate_warm ? rate_floor_of(s, floor) : 0;
    if (dp->on[DET_RATE] && rate_warm)
        rate_score(s, dp, rate, dt_s, rate_floor, res);
    if (dp->on[DET_STUCK])
        stuck_point(s, dp, x, res);
    if (dp->on[DET_SEASONAL])
        seasonal_point(s, dp, ts, x, floor, res);
    if (dp->on[DET_PREDICT])
        predict__point(s, dp, dt, x, floor, res);

    /* The largest ratio (the first of equals) by selects: which detector leads is data, and
     * a branch on it a coin toss for the predictor. */
    double r = 0;
    int dominant = DET_LEVEL;
    for (int d = 0; d < DET__COUNT; d++) {
        double q = res->ratio[d];
        dominant = q > r ? d : dominant;
        r = q > r ? q : r;
    }
    res->dominant = dominant;
    /* ...then learn. A point that stands out teaches the mean and variance a tenth as much:
     * winsorizing alone still lets a shifted stretch inflate the variance within a few
     * samples and hide itself; slowed down, a shift stays visible for its duration and a
     * permanent one is still absorbed (in about 10 / shift_alpha samples). */
    double slow = r >= ANOMALOUS ? 0.1 : 1.0;
    double a = warm_alpha(s->n, dp->shift_alpha) * slow; /* the same for shift and rate */
    shift_learn(s, dp, x, dt_s, warm, sd, a, slow); /* its mean and variance serve level too */
    if (dp->on[DET_RATE])
        rate_learn(s, rate, dt_s, rate_warm, rate_floor, a);
    if (dp->noise_adapt && warm) {
        double m = s->calib < 1 ? 1.0 : s->calib;
        double rel = r / m;
        /* Exceedances inside an open alert are the incident, not noise: a flatline of a
         * minute at ratios 1..2 would otherwise multiply the threshold by 1.02^60. */
        if (rel >= 1 && rel < 2 && !(s->flags & SERIES_ALERT))
            m *= 1 + NOISE_UP;
        else if ((m *= 1 - NOISE_UP * NOISE_TARGET / (1 - NOISE_TARGET)) < 1)
            m = 1;
        r = rel; /* this point is judged by the old multiplier */
        s->calib = (float)(m < CALIB_MAX ? m : CALIB_MAX);
    }
    /* The quantum learns after scoring: a constant series' first change is judged against
     * the quantum it had, not against itself. */
    double step = fabs(x - s->last_value);
    if (step > 0 && (s->resolution == 0 || step < s->resolution))
        s->resolution = (float)(step < FLT_MAX ? step : FLT_MAX);
    res->scored = warm || res->ratio[DET_LEVEL] > 0 || res->ratio[DET_STUCK] > 0 ||
                  res->ratio[DET_SEASONAL] > 0 || res->ratio[DET_PREDICT] > 0;
    res->r = r;
    /* res->score stays 0: it costs an exp2, and the engine computes it where it is read
     * (engine.c, point_score). */
    if (s->n < UINT32_MAX)
        s->n++;
    s->last_ts = ts;
    s->last_value = x;
    keep_bounded(s);
}

void detect__opened(struct series *s, const struct detect_params *dp, double r)
{
    if (!dp->noise_adapt || r >= 2)
        return;
    double m = (s->calib < 1 ? 1.0 : s->calib) * 1.5;
    s->calib = (float)(m < CALIB_MAX ? m : CALIB_MAX);
}
