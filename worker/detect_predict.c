/*
 * detect_predict.c - the prediction-residual detector (DET_PREDICT, "predict"), for periodic
 * series: vibration, rotating machines, AC-coupled sensors.
 *
 * On such a series a spike of several noise levels can sit inside the signal's own range (a
 * spike added at a trough of a large sine), so a median/MAD level score barely notices it.
 * But a sum of k sines sampled evenly obeys an exact linear recurrence of order 2k, so a
 * linear predictor from the last p samples (an AR(p) model) predicts the signal to about its
 * noise level, and a spike, a shift or the step of a drift is a residual of many noise
 * levels. The model is learned online by recursive least squares (RLS) with a forgetting
 * factor, around a slow mean; the residual's spread is an exponentially weighted variance.
 * Cost: O(p^2) per point and predict__bytes(p) per series, only for series whose rule has
 * the detector on.
 *
 * Outliers (a residual beyond OUTLIER_SD spreads, once scoring) teach nothing. The first
 * point of a clear excursion (over the detector's threshold) enters the history the next
 * predictions read as its prediction, so one spike does not echo through the next p
 * predictions; the points after it enter as they are, so that a false start cannot feed on
 * itself (a prediction from predictions drifts off, and would keep the run going). After
 * RUN_MAX outliers in a row the points teach again (a level shift or a noise burst that
 * lasts is the series' new regime), clipped to WINSOR spreads.
 *
 * Time: the model is one of evenly spaced samples. It keeps the step it learned at; a point
 * whose time step differs from it by more than DT_TOL (a gap, a burst after a reconnect,
 * irregular sampling) restarts the history (the model stays: the signal's shape does not go
 * stale in a gap), and two off-step points in a row mean a new sampling rate: the model
 * starts again at the new step. Repeated and backward timestamps never reach the detectors
 * (engine.c).
 *
 * Within DT_TOL, a sample taken off its slot on the series' 1 s (step) grid by more than
 * SLIP_TOL of the step (a device's timer firing late on a loaded host: 50-300 ms in the real
 * runs, README "Real path") is a value of the signal at another phase: on vibration_g's 4 s
 * sines 100 ms is several noise levels. Scored, it is a false alert; taken into the history
 * as it is, the next predictions read it at the wrong phase and the next points are. So such
 * a sample is neither scored nor learned: its prediction (the value its slot would have had)
 * stands in for it in the history, and the state keeps how far off its slot it was
 * (slot_off), so that the next sample is placed against the grid, not against the late one.
 * A load burst makes several late in a few seconds: up to STAND_MAX stand-ins in the history
 * at once (stand_mask marks them), so that predictions never feed mostly on themselves; and
 * while more than one is in it, a sample on time is not scored or learned either (its
 * prediction is one several steps ahead, whose error the one-step spread does not measure).
 * Late beyond that, or off its slot by more than DT_TOL, the grid moved (a timer rescheduled
 * after a stall): the history restarts there (the model stays).
 * This is for rare late samples on a series that samples on time: off-slot also means more
 * than SLIP_K times the series' usual timing deviation (dt_dev). A series that samples
 * unevenly all the time is taken as it is, as before (its residual spread learns the timing
 * noise; standing in for a third of its samples would teach the spread on the well-timed
 * ones only, too small for the rest: bench_quality --jitter-ms 100 showed it).
 *
 * A pure function of the state (in the series' tail, all of it in snapshots) and the sample.
 */
#include <math.h>
#include <string.h>

#include "engine_internal.h"

#define FORGET 0.998         /* RLS forgetting factor: a memory of about 500 samples */
#define P0 100.0             /* initial uncertainty of the weights, per variance of the input */
#define OUTLIER_SD 4.0       /* residuals beyond this many spreads are outliers */
#define RUN_MAX 8            /* outliers in a row after which the points teach again */
#define VAR_ALPHA 0.02       /* weight of a new squared residual in the residual variance */
#define WINSOR 4.0           /* the variance learns residuals clipped to this many spreads */
#define DT_TOL 0.2           /* relative difference of a time step from the model's step */
#define MEAN_ALPHA 0.01      /* weight of a new sample in the mean the model works around */
#define WARM_ORDERS 6        /* predictions (in orders p) before the detector scores */
#define SLIP_TOL 0.02        /* relative difference from the step: beyond it, off its slot */
#define SLIP_K 8.0           /* ... and beyond this many times the series' usual deviation */
#define DT_DEV_ALPHA 0.02    /* weight of a new time step's deviation in dt_dev */
#define SLOT_UNIT 1e-5       /* slot_off's unit, in steps (DT_TOL / SLOT_UNIT fits an int16) */
#define STAND_MAX(p) ((p) / 2) /* stand-ins for late samples in the history, at most */

/* Doubles of the model after the header: w[p], hist[p] (newest first), P (lower, packed). */
static size_t model_doubles(int p)
{
    return 2 * (size_t)p + (size_t)p * ((size_t)p + 1) / 2;
}

size_t predict__bytes(int order)
{
    return sizeof(struct predict_state) + model_doubles(order) * sizeof(double);
}

size_t predict__doubles(int order)
{
    return model_doubles(order);
}

static inline size_t tri(int i, int j) /* i >= j */
{
    return (size_t)i * ((size_t)i + 1) / 2 + (size_t)j;
}

/* Forgets the model (p_trace 0: not started); the next full history starts it. */
static void model_forget(struct predict_state *ps, int p)
{
    memset(ps->v, 0, (size_t)p * sizeof(double));
    memset(ps->v + 2 * p, 0, (size_t)p * ((size_t)p + 1) / 2 * sizeof(double));
    ps->p_trace = 0;
    ps->n = 0;
    ps->run = 0;
    ps->slot_off = 0;
    ps->stand_mask = 0;
    ps->dt_dev = 0;
    ps->res_var = 0;
}

/* The median of v[0..n) (n <= TG_ENGINE_PREDICT_ORDER_MAX), by insertion sort of a copy. */
static double median_of(const double *v, int n)
{
    double a[TG_ENGINE_PREDICT_ORDER_MAX];
    for (int i = 0; i < n; i++) {
        int j = i;
        for (; j > 0 && a[j - 1] > v[i]; j--)
            a[j] = a[j - 1];
        a[j] = v[i];
    }
    return n % 2 ? a[n / 2] : 0.5 * (a[n / 2 - 1] + a[n / 2]);
}

/* Weights at zero, P at P0 / (the full history's variance) times the identity, so that the
 * weights' first steps are in proportion whatever the metric's unit.
 *
 * One wild sample in the history (a sensor's first reading is often a sentinel: 65535,
 * -999, a float's maximum) would make that variance its square, and P so small that the
 * weights barely move: P grows back only by 1 / FORGET a sample, and the detector was blind
 * for hours (a first reading of 65535 on a series of 0.3) to days (1e100). So when the
 * variance exceeds START_ROBUST times a robust one (the median squared deviation from the
 * median, over 0.455, its value for Gaussian noise), the robust one is used. */
#define START_ROBUST 100.0
static void model_start(struct predict_state *ps, int p, double floor)
{
    const double *hist = ps->v + p;
    double *P = ps->v + 2 * p;
    double ss = floor * floor + 1e-300;
    for (int i = 0; i < p; i++)
        ss += (hist[i] - ps->mean) * (hist[i] - ps->mean) / p;
    double med = median_of(hist, p), d2[TG_ENGINE_PREDICT_ORDER_MAX];
    for (int i = 0; i < p; i++)
        d2[i] = (hist[i] - med) * (hist[i] - med);
    double robust = median_of(d2, p) / 0.455 + floor * floor + 1e-300;
    if (!(ss <= START_ROBUST * robust)) /* also when ss overflowed */
        ss = robust;
    for (int i = 0; i < p; i++)
        P[tri(i, i)] = P0 / ss;
    ps->p_trace = p * P0 / ss;
}

static void push(struct predict_state *ps, int p, double x)
{
    double *hist = ps->v + p;
    memmove(hist + 1, hist, (size_t)(p - 1) * sizeof *hist);
    hist[0] = x;
    ps->stand_mask = (uint16_t)((ps->stand_mask << 1) & ((1u << p) - 1));
    if (ps->hist_n < p)
        ps->hist_n++;
}

static void restart_history(struct predict_state *ps, int p, double x)
{
    ps->hist_n = 0;
    ps->run = 0;
    ps->slot_off = 0;
    ps->stand_mask = 0;
    push(ps, p, x);
}

void predict__reset(struct series *s, const struct detect_params *dp)
{
    struct predict_state *ps = series__predict(s, dp);
    memset(ps, 0, predict__bytes(dp->predict_order));
}

/* One RLS step on regressors phi with a-priori residual e. */
static void rls_learn(struct predict_state *ps, int p, const double *phi, double e)
{
    double *w = ps->v, *P = ps->v + 2 * p;
    double g[TG_ENGINE_PREDICT_ORDER_MAX] = {0};
    /* g = P phi in one pass over the packed triangle: each off-diagonal element serves its
     * row and its column. */
    const double *pr = P;
    for (int i = 0; i < p; i++, pr += i) {
        double a = 0;
        for (int j = 0; j < i; j++) {
            a += pr[j] * phi[j];
            g[j] += pr[j] * phi[i];
        }
        g[i] += a + pr[i] * phi[i];
    }
    double denom = FORGET;
    for (int i = 0; i < p; i++)
        denom += phi[i] * g[i];
    if (!(denom > 0) || !isfinite(denom))
        return;
    double inv = 1.0 / denom;
    double trace = 0;
    double *row = P;
    for (int i = 0; i < p; i++, row += i) {
        w[i] += g[i] * inv * e;
        double gi = g[i] * inv;
        for (int j = 0; j <= i; j++)
            row[j] = (row[j] - gi * g[j]) * (1.0 / FORGET);
        trace += row[i];
    }
    /* Without new information in the input (a constant stretch) forgetting grows P without
     * bound and the next change would throw the weights about: P never exceeds its start. */
    if (trace > ps->p_trace) {
        double f = ps->p_trace / trace;
        for (size_t k = 0; k < (size_t)p * ((size_t)p + 1) / 2; k++)
            P[k] *= f;
    }
}

static bool model_sane(const struct predict_state *ps, int p)
{
    const double *w = ps->v, *P = ps->v + 2 * p;
    for (int i = 0; i < p; i++)
        if (!(fabs(w[i]) < 1e6) || !(P[tri(i, i)] >= 0) || !(P[tri(i, i)] < 1e300))
            return false;
    return isfinite(ps->res_var) && isfinite(ps->mean);
}

void predict__point(struct series *s, const struct detect_params *dp, double dt_ms, double x,
                    double floor, struct detect_result *res)
{
    struct predict_state *ps = series__predict(s, dp);
    int p = dp->predict_order;
    if (dt_ms < 0) { /* the series' first sample (or its first after a reset) */
        ps->mean = x;
        restart_history(ps, p, x);
        return;
    }
    if (ps->step_ms <= 0) {
        ps->step_ms = dt_ms;
    } else if (fabs(dt_ms - ps->step_ms) > DT_TOL * ps->step_ms) {
        /* Not contiguous with the history. Twice in a row: the sampling rate changed, and a
         * model of the old rate predicts nothing at the new one. */
        if (ps->hist_n == 1) {
            ps->step_ms = dt_ms;
            ps->mean = x;
            model_forget(ps, p);
        }
        restart_history(ps, p, x);
        return;
    }
    double *w = ps->v, *hist = ps->v + p;
    if (ps->hist_n < p) {
        push(ps, p, x);
        if (ps->hist_n == p && ps->p_trace == 0)
            model_start(ps, p, floor);
        return;
    }
    double phi[TG_ENGINE_PREDICT_ORDER_MAX];
    double pred = ps->mean;
    for (int i = 0; i < p; i++) {
        phi[i] = hist[i] - ps->mean;
        pred += w[i] * phi[i];
    }
    double e = x - pred;
    double sd = sqrt(ps->res_var);
    if (sd < floor)
        sd = floor;
    uint32_t warm_n = (uint32_t)(WARM_ORDERS * p);
    if (warm_n < (uint32_t)dp->warmup_samples)
        warm_n = (uint32_t)dp->warmup_samples;
    bool scoring = ps->n >= warm_n;
    double off = dt_ms - ps->step_ms;
    double from_slot = off + ps->slot_off * SLOT_UNIT * ps->step_ms; /* from this one's slot */
    bool late = fabs(from_slot) > SLIP_TOL * ps->step_ms && fabs(from_slot) > SLIP_K * ps->dt_dev;
    ps->dt_dev += (float)(DT_DEV_ALPHA * (fabs(off) - ps->dt_dev));
    ps->slot_off = 0;
    if (late && scoring) {
        if (fabs(from_slot) <= DT_TOL * ps->step_ms &&
            __builtin_popcount(ps->stand_mask) < STAND_MAX(p)) {
            push(ps, p, pred);
            ps->stand_mask |= 1;
            ps->slot_off = (int16_t)lround(from_slot / ps->step_ms / SLOT_UNIT);
            return;
        }
        /* Late for longer than the history can stand in for, or by more than a gap's
         * tolerance: the grid moved. */
        restart_history(ps, p, x);
        return;
    }
    if (scoring && __builtin_popcount(ps->stand_mask) > 1) {
        /* On time, but predicted from predictions: a prediction several steps ahead, whose
         * error the one-step spread does not measure. It only enters the history. */
        push(ps, p, x);
        return;
    }
    bool outlier = scoring && fabs(e) > OUTLIER_SD * sd;
    if (scoring) {
        res->ratio[DET_PREDICT] = fabs(e) / sd / dp->threshold[DET_PREDICT];
        res->baseline[DET_PREDICT] = pred;
        if (outlier && ps->run < RUN_MAX) {
            /* The first point of a clear excursion enters the history as its prediction, so
             * that one spike does not echo through the next p predictions; the points after
             * it enter as they are (a false start must not feed on itself). */
            bool clear = ps->run == 0 && res->ratio[DET_PREDICT] >= 1;
            ps->run++;
            push(ps, p, clear ? pred : x);
            return;
        }
    }
    ps->run = outlier ? RUN_MAX : 0; /* a run that lasts teaches until it ends */
    rls_learn(ps, p, phi, e);
    /* The residuals of the model's first steps are its convergence, not the series' noise:
     * the spread is the running mean of the squared residuals from halfway through the
     * warm-up (then exponentially weighted), not from the start. */
    uint32_t half = warm_n / 2;
    double a = ps->n < half ? 1.0 / (double)(ps->n + 1) : 1.0 / (double)(ps->n - half + 1);
    if (a < VAR_ALPHA)
        a = VAR_ALPHA;
    double ec = outlier && fabs(e) > WINSOR * sd ? WINSOR * sd : fabs(e);
    ps->res_var += a * (ec * ec - ps->res_var);
    double am = 1.0 / (double)(ps->n + 1);
    ps->mean += (am > MEAN_ALPHA ? am : MEAN_ALPHA) * (x - ps->mean);
    push(ps, p, x);
    if (ps->n < UINT32_MAX)
        ps->n++;
    if (!model_sane(ps, p)) { /* numbers gone wild (an input at the edge of the range) */
        ps->mean = x;
        model_forget(ps, p);
        restart_history(ps, p, x);
    }
}
