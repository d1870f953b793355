/*
 * detect_drift.c - the shift detector's drift test: a ramp that Holt's baseline (detect.c)
 * learns as its slope, so that the shift chart, which compares against that baseline, stays
 * quiet while the series walks away.
 *
 * The test compares a fast EWMA of the value (DRIFT_FAST, ~20 samples) with a slow anchor
 * (DRIFT_SLOW, ~200 samples) that has no trend, over the spread that gap has shown, and sums
 * the excess of that z over DRIFT_K on one side (a one-sided CUSUM, each sample's z clipped
 * at DRIFT_ZCAP so that one wild sample, or a spread learned too small, is worth at most a
 * few samples). The sum over DRIFT_H is a ratio of the shift detector. A ramp keeps the gap
 * growing while it lasts; a wandering sensor's excursion comes back within a minute or so,
 * and a daily cycle's slope lags the anchor by a small, constant gap.
 *
 * The spread learns every sample's gap clipped at DRIFT_CLIP deviations (skipping outliers
 * would never learn a wander's excursions, and the spread would stay too small). Once the
 * sum is a quarter of the way to DRIFT_H, the excursion is treated as one: the anchor learns
 * a tenth as fast and the spread half as fast, so that a ramp does not teach them to follow
 * it, while a wander's largest excursions still widen the spread a little. When the gap then
 * changes side, the excursion is over and the anchor starts again at the value. Once the sum
 * has reached DRIFT_H with an alert open, the excursion is spent: it scores nothing more and
 * the anchor absorbs the new level (a permanent shift is one incident, not an alert that
 * never closes) until the gap changes side.
 *
 * After a reported excursion ends, the anchor restarts (restart_point; state: drift_back).
 *
 * The spread starts as half the level's variance at the end of warm-up, worth DRIFT_PRIOR
 * samples, and the sum scores DRIFT_SETTLE samples after warm-up: before that the anchor is
 * still a mean of few samples.
 *
 * The rule key drift_min (metric units; 0, the default, leaves all of the above as it is)
 * gives the test a size that a young series does not have to learn: the spread is then
 * never taken wider than drift_min / DRIFT_K, so a gap of drift_min always scores DRIFT_K
 * deviations, and a gap beyond 0.8 drift_min slows the anchor as an excursion does. It must be
 * set above the gap a clean series wanders to (README, "Why drift"); it adds no state.
 *
 * Everything is a pure function of the series' state and the sample, stored in the snapshot
 * (snapshot.c).
 */
#include <math.h>

#include "engine_internal.h"

#define DRIFT_FAST 0.05    /* weight of a sample in the fast EWMA */
#define DRIFT_SLOW 0.005   /* weight of a sample in the anchor */
#define DRIFT_SLOW_OUT 0.1 /* the anchor's weight is scaled by this during an excursion */
#define DRIFT_VAR 0.002    /* weight of a sample in the gap's spread, once past the prior */
#define DRIFT_PRIOR 50     /* samples the spread's prior is worth */
#define DRIFT_VAR_OUT 0.5  /* the spread's weight is scaled by this during an excursion */
#define DRIFT_CLIP 2.5     /* the spread learns gaps clipped to this many deviations */
#define DRIFT_K 3.0        /* deviations a sample must exceed to add to the sum */
#define DRIFT_ZCAP 8.0     /* deviations a sample counts for at most */
#define DRIFT_H 250.0      /* the sum at ratio 1 */
#define DRIFT_SUM_MAX (1.5 * DRIFT_H) /* so the sum comes back soon after the excursion ends */
#define DRIFT_SETTLE 100   /* samples after warm-up before the sum scores */
#define DRIFT_SPENT (2 * DRIFT_H) /* the sum of an excursion already reported */
#define DRIFT_OUT 0.25     /* the sum, over DRIFT_H, beyond which an excursion is under way */
#define DRIFT_MIN_OUT 0.8  /* drift_min: a gap beyond this fraction of it is an excursion */

/* The anchor's restart after a reported excursion ended: the fast average and the anchor are
 * running means of the samples since (as at warm-up), and the sum stays at 0 for DRIFT_BACK
 * samples, so that the anchor is a mean of the level the series came back to, not one sample
 * of it (a single sample of a sum of sines is off by up to their amplitude, and with
 * drift_min set an anchor that far off is slowed as an excursion: the way back from a level
 * shift used to open an alert of its own). While an alert is open, the incident is not over
 * (a noise burst crosses the anchor many times): the restart begins again at each sample,
 * so the mean is of what follows the incident. */
/* One step of the fast average and the anchor as running means (weight w, 1 / (samples
 * averaged + 1)), each never weighing a sample less than its own EWMA does: how they start,
 * at warm-up and at a restart. */
static void running_means(struct series *s, double x, double w)
{
    s->drift_fast += (w > DRIFT_FAST ? w : DRIFT_FAST) * (x - s->drift_fast);
    s->drift_slow += (w > DRIFT_SLOW ? w : DRIFT_SLOW) * (x - s->drift_slow);
}

/* Begins the restart at x: both averages at x, the sum at 0, DRIFT_BACK samples to go. */
static void restart_begin(struct series *s, double x)
{
    s->drift_slow = s->drift_fast = x;
    s->drift_sum = 0;
    s->drift_back = DRIFT_BACK;
}

static void restart_point(struct series *s, double x)
{
    if (s->flags & SERIES_ALERT) {
        restart_begin(s, x);
        return;
    }
    s->drift_sum = 0;
    running_means(s, x, 1.0 / (double)(DRIFT_BACK - s->drift_back + 2));
    s->drift_back--;
}

void detect__drift(struct series *s, const struct detect_params *dp, double x, bool warm,
                   double level_var, double floor, struct detect_result *res)
{
    if (!warm) {
        /* The running mean of the first samples, as the other baselines start. */
        running_means(s, x, 1.0 / (double)(s->n + 1));
        s->drift_var = 0.5 * level_var;
        s->drift_sum = 0;
        return;
    }
    uint32_t k = s->n - (uint32_t)dp->warmup_samples;
    if (s->drift_back > 0) {
        restart_point(s, x);
        return;
    }
    double fast = s->drift_fast + DRIFT_FAST * (x - s->drift_fast);
    double gap = fast - s->drift_slow;
    double var = s->drift_var;
    if (var < floor * floor)
        var = floor * floor;
    /* drift_min, the user's size of a drift worth an alert: a gap that large counts as
     * DRIFT_K deviations however wide a spread the series has learned (a young series learns
     * a drift's gap into its spread, and would never see it); a spread narrower than
     * drift_min / DRIFT_K still judges as before. */
    double yard = sqrt(var);
    if (dp->drift_min > 0 && DRIFT_K * yard > dp->drift_min)
        yard = dp->drift_min * (1.0 / DRIFT_K);
    double z = gap / yard;
    double az = fabs(z) < DRIFT_ZCAP ? fabs(z) : DRIFT_ZCAP;
    /* A sample on the other side starts the sum again; if it ends an excursion, the series
     * came back (a level shift or a drift ended): the anchor, which learned a little of the
     * excursion, starts again here, or the way back would look like an excursion of its own.
     * After a reported one the anchor had absorbed the excursion's level, so it restarts
     * from nothing (restart_point). */
    double sum = fabs(s->drift_sum);
    if ((z > 0) != (s->drift_sum > 0)) {
        if (sum >= DRIFT_SPENT) {
            restart_begin(s, x);
            return;
        }
        if (sum > DRIFT_OUT * DRIFT_H) {
            s->drift_slow = s->drift_fast = fast = x;
            z = 0;
        }
        sum = 0;
    }
    double a = DRIFT_SLOW;
    if (sum >= DRIFT_SPENT) {
        /* Reported: the anchor absorbs the new level at its own pace (a permanent shift
         * is one incident, not an alert that never closes) until the gap changes side. */
    } else {
        sum += az - DRIFT_K;
        sum = sum < 0 ? 0 : sum > DRIFT_SUM_MAX ? DRIFT_SUM_MAX : sum;
        if (k >= DRIFT_SETTLE) {
            double ratio = sum * (1.0 / DRIFT_H);
            if (ratio > res->ratio[DET_SHIFT]) {
                res->ratio[DET_SHIFT] = ratio;
                res->baseline[DET_SHIFT] = s->drift_slow;
            }
            /* An excursion is reported once: at ratio 1 with an alert open (this one's, or
             * another detector's), it is spent. */
            if (sum >= DRIFT_H && (s->flags & SERIES_ALERT))
                sum = DRIFT_SPENT;
        }
        double g2 = gap * gap;
        if (g2 > DRIFT_CLIP * DRIFT_CLIP * var)
            g2 = DRIFT_CLIP * DRIFT_CLIP * var;
        double w = 1.0 / ((double)k + DRIFT_PRIOR);
        if (w < DRIFT_VAR)
            w = DRIFT_VAR;
        /* A gap near drift_min is an excursion too, before the sum says so: the anchor
         * would otherwise follow the ramp at a lag of 1 / DRIFT_SLOW samples, a gap no
         * larger than a wander's. Near, not beyond: slowed only beyond drift_min, the
         * anchor follows a slow ramp at a lag that hovers at drift_min, where the sum
         * (which counts from DRIFT_K deviations, drift_min itself) never grows. */
        if (sum > DRIFT_OUT * DRIFT_H ||
            (dp->drift_min > 0 && fabs(gap) > DRIFT_MIN_OUT * dp->drift_min)) {
            a *= DRIFT_SLOW_OUT;
            w *= DRIFT_VAR_OUT;
        }
        s->drift_var += w * (g2 - s->drift_var);
    }
    s->drift_sum = z > 0 ? sum : -sum;
    s->drift_slow += a * (x - s->drift_slow);
    s->drift_fast = fast;
}
