/*
 * snapshot.c - the binary encoding of a series' state and of a partition's state, the values
 * of the compacted topic telemetry.worker.state.
 *
 * Workers on different machines (aarch64, armhf, x86-64) restore each other's snapshots, so
 * every field is written explicitly, little-endian, doubles as their IEEE-754 bits: never a
 * struct image. The first byte is the format version; the next bytes record the layout the
 * rule gave the series (which detectors, ring length, buckets), and a snapshot written under
 * another layout is refused (the series starts cold) rather than misread.
 *
 * Series value, version 3 (version 1 lacked drift_run, version 2 the drift test's four
 * doubles; either is refused, the series starts cold):
 *   u8 version, u8 detectors bitmask, u8 level_window, u8 seasonal_buckets,
 *   u8 flags (has_last, alert, silence), u8 alert_kind, u8 level_n, u8 level_pos,
 *   u32 n, stuck_run, quiet, first_day; f32 period_ms, resolution, p_change, calib;
 *   i64 last_ts; f64 last_value, shift_mean, shift_var, shift_fast, shift_trend, shift_dvar,
 *   rate_mean, rate_var,
 *   stuck_ref; i64 alert_start, alert_last_over, alert_last_emit, silence_start;
 *   i32 drift_run; f64 drift_fast, drift_slow, drift_var, drift_sum;
 *   u8 open windows, each: i64 start, last_ts; f64 min, max, sum, last; u32 count;
 *   level ring: level_n x f64 (when the level detector is on);
 *   seasonal: seasonal_buckets x (f32 mean, var) (when on).
 * Series value, version 4: written for a series whose rule has the predict detector on (the
 * others write version 3): version 3's
 * fields, then u8 predict_order, f64 mean, res_var, step_ms, p_trace, u32 n, u8 hist_n, run,
 * and predict__doubles(order) x f64 (weights, history, P). A version 3 snapshot restored into
 * a rule with predict on is refused by its detectors bitmask (the series starts cold).
 * Series value, version 5 (what a rule with predict on wrote before version 6): version 4's,
 * then i16 slot_off (little-endian; the predict detector's stand-in for an off-slot sample),
 * f32 dt_dev (its series' usual timing deviation) and u16 stand_mask (little-endian). A
 * version 4 value still restores, with slot_off 0: a worker upgraded mid-stream resumes warm.
 * Series value, version 6 (written now, with the predict detector on or off: the detectors
 * bitmask says which): version 3's fields with u32 drift_back (the drift anchor's restart,
 * detect_drift.c) after drift_sum, then version 5's predict state when it is on. Versions 3,
 * 4 and 5 still restore, as a series whose drift anchor is not restarting (drift_back 0:
 * what they meant).
 * Partition value, version PARTITION_VERSION (1): u8 version, u8 has_max, i64 max_ts.
 * Partition value, version 2 (written when the partition has recent holes, engine_hole.c;
 * version 1 otherwise, and version 1 is still read): version 1's fields, then u8 n_holes
 * (1..TG_ENGINE_PARTITION_HOLES) and n_holes x (i64 from, i64 to), oldest first.
 */
#include <float.h>
#include <string.h>

#include "engine_internal.h"

#define SNAPSHOT_VERSION_PLAIN 3       /* read only: predict off */
#define SNAPSHOT_VERSION_PREDICT_OLD 4 /* read only: version 3 + the predict detector's state */
#define SNAPSHOT_VERSION_PREDICT 5     /* read only: version 4 + slot_off, dt_dev, stand_mask */
#define SNAPSHOT_VERSION 6             /* written: + drift_back, predict on or off */
#define PARTITION_VERSION 1 /* the partition value did not change with the series' versions 2-6 */
#define PARTITION_VERSION_HOLES 2 /* version 1 + the partition's recent holes */
#define KEEP_FLAGS (SERIES_HAS_LAST | SERIES_ALERT | SERIES_SILENCE)

/* The largest value (every detector's state at its maximum) fits the encoder's buffer. */
_Static_assert(4 + 4 + 16 + 16 + 8 + 9 * 8 + 4 * 8 + 4 + 4 * 8 + 4 + 1 +
                       TG_ENGINE_SERIES_WINDOWS * 44 +
                       TG_ENGINE_LEVEL_WINDOW_MAX * 8 + TG_ENGINE_SEASONAL_BUCKETS_MAX * 8 + 1 +
                       32 + 4 + 2 + 2 + 4 + 2 +
                       (2 * TG_ENGINE_PREDICT_ORDER_MAX +
                        TG_ENGINE_PREDICT_ORDER_MAX * (TG_ENGINE_PREDICT_ORDER_MAX + 1) / 2) * 8 <=
                   TG_ENGINE_SNAPSHOT_MAX,
               "TG_ENGINE_SNAPSHOT_MAX holds the largest series value");

_Static_assert(SNAPSHOT_PARTITION_MAX <= TG_ENGINE_SNAPSHOT_MAX && TG_ENGINE_PARTITION_HOLES <= 255,
               "a partition value fits the encoder's buffer and its hole count a byte");

struct wr {
    unsigned char *p;
};

static void put_u8(struct wr *w, unsigned v)
{
    *w->p++ = (unsigned char)v;
}
static void put_u16(struct wr *w, uint16_t v)
{
    put_u8(w, v & 0xffu);
    put_u8(w, (unsigned)v >> 8);
}
static void put_u32(struct wr *w, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        put_u8(w, (v >> (8 * i)) & 0xff);
}
static void put_u64(struct wr *w, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        put_u8(w, (unsigned)((v >> (8 * i)) & 0xff));
}
static void put_i64(struct wr *w, int64_t v)
{
    put_u64(w, (uint64_t)v);
}
static void put_f64(struct wr *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u64(w, bits);
}
static void put_f32(struct wr *w, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u32(w, bits);
}

struct rd {
    const unsigned char *p, *end;
    bool bad;
};

static bool need(struct rd *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    return true;
}
static unsigned get_u8(struct rd *r)
{
    return need(r, 1) ? *r->p++ : 0;
}
static uint16_t get_u16(struct rd *r)
{
    unsigned lo = get_u8(r);
    return (uint16_t)(lo | get_u8(r) << 8);
}
static uint32_t get_u32(struct rd *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)get_u8(r) << (8 * i);
    return v;
}
static uint64_t get_u64(struct rd *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)get_u8(r) << (8 * i);
    return v;
}
static int64_t get_i64(struct rd *r)
{
    return (int64_t)get_u64(r);
}
static double get_f64(struct rd *r)
{
    uint64_t bits = get_u64(r);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}
static float get_f32(struct rd *r)
{
    uint32_t bits = get_u32(r);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static unsigned detector_mask(const struct detect_params *dp)
{
    unsigned m = 0;
    for (int d = 0; d < DET__COUNT; d++)
        if (dp->on[d])
            m |= 1u << d;
    return m;
}

/* Times a state may hold: readings are within 2^53 ms of the epoch (engine.c refuses the
 * others) and a period is at most the span between two of them, so a time derived from a
 * reading and a period (a silence's start) is within 2^55. */
#define TIME_LIMIT (INT64_C(1) << 55)
#define PERIOD_LIMIT 18014398509481984.0 /* 2^54 ms */

static bool time_ok(int64_t t)
{
    return t >= -TIME_LIMIT && t <= TIME_LIMIT;
}

static bool finite_in(double v, double lo, double hi)
{
    return v >= lo && v <= hi; /* false for NaN */
}

/* A snapshot that decodes may still hold what the engine never writes (the state topic is
 * anyone's to write to): times beyond the engine's range, NaN or infinite numbers, negative
 * variances. Arithmetic on them would overflow or poison every later score, so such a value
 * is refused and the series starts cold. */
static bool plausible(struct series *s, const struct detect_params *dp)
{
    const double val = STATE_VALUE_MAX, rate = STATE_RATE_MAX, var = STATE_VAR_MAX;
    if (!time_ok(s->last_ts) || !time_ok(s->alert_start) || !time_ok(s->alert_last_over) ||
        !time_ok(s->alert_last_emit) || !time_ok(s->silence_start))
        return false;
    if (!finite_in(s->period_ms, 0, PERIOD_LIMIT) || !finite_in(s->resolution, 0, FLT_MAX) ||
        !finite_in(s->p_change, 0, 1) || !finite_in(s->calib, 0, 1e6) ||
        s->drift_run == INT32_MIN)
        return false;
    double vals[] = {s->last_value, s->shift_mean, s->shift_fast, s->stuck_ref};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (!finite_in(vals[i], -val, val))
            return false;
    if (!finite_in(s->shift_trend, -rate, rate) || !finite_in(s->rate_mean, -rate, rate) ||
        !finite_in(s->shift_var, 0, var) || !finite_in(s->shift_dvar, 0, var) ||
        !finite_in(s->rate_var, 0, var) || !finite_in(s->drift_fast, -val, val) ||
        !finite_in(s->drift_slow, -val, val) || !finite_in(s->drift_var, 0, var) ||
        !finite_in(s->drift_sum, -1e6, 1e6) || s->drift_back > DRIFT_BACK)
        return false;
    for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++) {
        const struct series_window *w = &s->win[k];
        if (w->count && (!time_ok(w->start) || !time_ok(w->last_ts) ||
                         !finite_in(w->min, -val, val) || !finite_in(w->max, w->min, val) ||
                         !finite_in(w->sum, -1e300, 1e300) || !finite_in(w->last, -val, val)))
            return false;
    }
    if (dp->on[DET_LEVEL]) {
        const double *ring = (const double *)(const void *)series__level((struct series *)s);
        for (int i = 0; i < s->level_n; i++) /* sorted, not by slot: the same values */
            if (!finite_in(ring[i], -val, val))
                return false;
    }
    if (dp->on[DET_SEASONAL]) {
        const struct seasonal_bucket *bk = series__buckets(s, dp);
        for (int i = 0; i < dp->seasonal_buckets; i++)
            if (!finite_in(bk[i].mean, -FLT_MAX, FLT_MAX) ||
                !(bk[i].var == -1 || finite_in(bk[i].var, 0, FLT_MAX))) /* -1: not seen yet */
                return false;
    }
    if (dp->on[DET_PREDICT]) {
        const struct predict_state *ps = series__predict(s, dp);
        if (!finite_in(ps->mean, -val, val) || !finite_in(ps->res_var, 0, var) ||
            !finite_in(ps->step_ms, 0, PERIOD_LIMIT) || !finite_in(ps->p_trace, 0, 1e300) ||
            !finite_in(ps->dt_dev, 0, PERIOD_LIMIT) ||
            ps->hist_n > dp->predict_order || ps->stand_mask >> dp->predict_order)
            return false;
        for (size_t i = 0; i < predict__doubles(dp->predict_order); i++)
            if (!finite_in(ps->v[i], -1e300, 1e300))
                return false;
    }
    return true;
}

size_t snapshot__encode_series(const struct series *s, const struct detect_params *dp,
                               unsigned char *buf)
{
    struct wr w = {buf};
    put_u8(&w, SNAPSHOT_VERSION);
    put_u8(&w, detector_mask(dp));
    put_u8(&w, (unsigned)dp->level_window);
    put_u8(&w, (unsigned)dp->seasonal_buckets);
    put_u8(&w, s->flags & KEEP_FLAGS);
    put_u8(&w, s->alert_kind);
    put_u8(&w, s->level_n);
    put_u8(&w, s->level_pos);
    put_u32(&w, s->n);
    put_u32(&w, s->stuck_run);
    put_u32(&w, s->quiet);
    put_u32(&w, (uint32_t)s->first_day);
    put_f32(&w, s->period_ms);
    put_f32(&w, s->resolution);
    put_f32(&w, s->p_change);
    put_f32(&w, s->calib);
    put_i64(&w, s->last_ts);
    put_f64(&w, s->last_value);
    put_f64(&w, s->shift_mean);
    put_f64(&w, s->shift_var);
    put_f64(&w, s->shift_fast);
    put_f64(&w, s->shift_trend);
    put_f64(&w, s->shift_dvar);
    put_f64(&w, s->rate_mean);
    put_f64(&w, s->rate_var);
    put_f64(&w, s->stuck_ref);
    put_i64(&w, s->alert_start);
    put_i64(&w, s->alert_last_over);
    put_i64(&w, s->alert_last_emit);
    put_i64(&w, s->silence_start);
    put_u32(&w, (uint32_t)s->drift_run);
    put_f64(&w, s->drift_fast);
    put_f64(&w, s->drift_slow);
    put_f64(&w, s->drift_var);
    put_f64(&w, s->drift_sum);
    put_u32(&w, s->drift_back);
    unsigned nwin = 0;
    for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++)
        nwin += s->win[k].count != 0;
    put_u8(&w, nwin);
    for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++) {
        const struct series_window *sw = &s->win[k];
        if (!sw->count)
            continue;
        put_i64(&w, sw->start);
        put_i64(&w, sw->last_ts);
        put_f64(&w, sw->min);
        put_f64(&w, sw->max);
        put_f64(&w, sw->sum);
        put_f64(&w, sw->last);
        put_u32(&w, sw->count);
    }
    if (dp->on[DET_LEVEL]) {
        double ring[TG_ENGINE_LEVEL_WINDOW_MAX];
        level_window__ring(series__level((struct series *)s), dp->level_window, s->level_n,
                           ring);
        for (int i = 0; i < s->level_n; i++)
            put_f64(&w, ring[i]);
    }
    if (dp->on[DET_SEASONAL]) {
        const struct seasonal_bucket *bk = series__buckets((struct series *)s, dp);
        for (int i = 0; i < dp->seasonal_buckets; i++) {
            put_f32(&w, bk[i].mean);
            put_f32(&w, bk[i].var);
        }
    }
    if (dp->on[DET_PREDICT]) {
        const struct predict_state *ps = series__predict((struct series *)s, dp);
        put_u8(&w, (unsigned)dp->predict_order);
        put_f64(&w, ps->mean);
        put_f64(&w, ps->res_var);
        put_f64(&w, ps->step_ms);
        put_f64(&w, ps->p_trace);
        put_u32(&w, ps->n);
        put_u8(&w, ps->hist_n);
        put_u8(&w, ps->run);
        put_u16(&w, (uint16_t)ps->slot_off);
        put_f32(&w, ps->dt_dev);
        put_u16(&w, ps->stand_mask);
        for (size_t i = 0; i < predict__doubles(dp->predict_order); i++)
            put_f64(&w, ps->v[i]);
    }
    return (size_t)(w.p - buf);
}

tg_err snapshot__decode_series(struct series *s, const struct detect_params *dp,
                               const unsigned char *value, size_t len)
{
    struct rd r = {value, value + len, false};
    unsigned version = get_u8(&r);
    bool version_ok = version == SNAPSHOT_VERSION ||
                      (dp->on[DET_PREDICT] ? version == SNAPSHOT_VERSION_PREDICT ||
                                                 version == SNAPSHOT_VERSION_PREDICT_OLD
                                           : version == SNAPSHOT_VERSION_PLAIN);
    if (!version_ok ||
        get_u8(&r) != detector_mask(dp) ||
        get_u8(&r) != (unsigned)dp->level_window || get_u8(&r) != (unsigned)dp->seasonal_buckets)
        return TG_ERR_MALFORMED;
    unsigned flags = get_u8(&r);
    unsigned kind = get_u8(&r);
    unsigned level_n = get_u8(&r), level_pos = get_u8(&r);
    if ((flags & ~(unsigned)KEEP_FLAGS) || kind >= DET__COUNT ||
        level_n > (unsigned)dp->level_window || level_pos >= (unsigned)dp->level_window ||
        /* a window not yet full fills its slots in order (level_window.c relies on it) */
        (level_n < (unsigned)dp->level_window && level_pos != level_n) ||
        (!dp->on[DET_LEVEL] && level_n))
        return TG_ERR_MALFORMED;
    s->flags = (uint8_t)flags;
    s->alert_kind = (uint8_t)kind;
    s->level_n = (uint8_t)level_n;
    s->level_pos = (uint8_t)level_pos;
    s->n = get_u32(&r);
    s->stuck_run = get_u32(&r);
    s->quiet = get_u32(&r);
    s->first_day = (int32_t)get_u32(&r);
    s->period_ms = get_f32(&r);
    s->resolution = get_f32(&r);
    s->p_change = get_f32(&r);
    s->calib = get_f32(&r);
    s->last_ts = get_i64(&r);
    s->last_value = get_f64(&r);
    s->shift_mean = get_f64(&r);
    s->shift_var = get_f64(&r);
    s->shift_fast = get_f64(&r);
    s->shift_trend = get_f64(&r);
    s->shift_dvar = get_f64(&r);
    s->rate_mean = get_f64(&r);
    s->rate_var = get_f64(&r);
    s->stuck_ref = get_f64(&r);
    s->alert_start = get_i64(&r);
    s->alert_last_over = get_i64(&r);
    s->alert_last_emit = get_i64(&r);
    s->silence_start = get_i64(&r);
    s->drift_run = (int32_t)get_u32(&r);
    s->drift_fast = get_f64(&r);
    s->drift_slow = get_f64(&r);
    s->drift_var = get_f64(&r);
    s->drift_sum = get_f64(&r);
    s->drift_back = version == SNAPSHOT_VERSION ? get_u32(&r) : 0;
    unsigned nwin = get_u8(&r);
    if (nwin > TG_ENGINE_SERIES_WINDOWS)
        return TG_ERR_MALFORMED;
    memset(s->win, 0, sizeof s->win);
    for (unsigned k = 0; k < nwin; k++) {
        struct series_window *sw = &s->win[k];
        sw->start = get_i64(&r);
        sw->last_ts = get_i64(&r);
        sw->min = get_f64(&r);
        sw->max = get_f64(&r);
        sw->sum = get_f64(&r);
        sw->last = get_f64(&r);
        sw->count = get_u32(&r);
        if (!sw->count)
            return TG_ERR_MALFORMED;
    }
    if (dp->on[DET_LEVEL]) {
        double ring[TG_ENGINE_LEVEL_WINDOW_MAX];
        for (unsigned i = 0; i < level_n; i++)
            ring[i] = get_f64(&r);
        level_window__load(series__level(s), dp->level_window, ring, (int)level_n);
    }
    if (dp->on[DET_SEASONAL]) {
        struct seasonal_bucket *bk = series__buckets(s, dp);
        for (int i = 0; i < dp->seasonal_buckets; i++) {
            bk[i].mean = get_f32(&r);
            bk[i].var = get_f32(&r);
        }
    }
    if (dp->on[DET_PREDICT]) {
        struct predict_state *ps = series__predict(s, dp);
        if (get_u8(&r) != (unsigned)dp->predict_order)
            return TG_ERR_MALFORMED;
        ps->mean = get_f64(&r);
        ps->res_var = get_f64(&r);
        ps->step_ms = get_f64(&r);
        ps->p_trace = get_f64(&r);
        ps->n = get_u32(&r);
        ps->hist_n = (uint8_t)get_u8(&r);
        ps->run = (uint8_t)get_u8(&r);
        if (version == SNAPSHOT_VERSION_PREDICT || version == SNAPSHOT_VERSION) {
            ps->slot_off = (int16_t)get_u16(&r);
            ps->dt_dev = get_f32(&r);
            ps->stand_mask = get_u16(&r);
        } else {
            ps->slot_off = 0;
            ps->dt_dev = 0;
            ps->stand_mask = 0;
        }
        for (size_t i = 0; i < predict__doubles(dp->predict_order); i++)
            ps->v[i] = get_f64(&r);
    }
    if (r.bad || r.p != r.end || !plausible(s, dp))
        return TG_ERR_MALFORMED;
    return TG_OK;
}

size_t snapshot__encode_partition(const struct partition_state *ps, unsigned char *buf)
{
    struct wr w = {buf};
    /* A partition with no hole keeps version 1, byte for byte: its snapshots (and the golden
     * digest over them) are what they were before holes were kept. */
    put_u8(&w, ps->n_holes ? PARTITION_VERSION_HOLES : PARTITION_VERSION);
    put_u8(&w, ps->has_max ? 1 : 0);
    put_i64(&w, ps->max_ts);
    if (ps->n_holes) {
        put_u8(&w, ps->n_holes);
        for (unsigned i = 0; i < ps->n_holes; i++) {
            put_i64(&w, ps->holes[i].from);
            put_i64(&w, ps->holes[i].to);
        }
    }
    return (size_t)(w.p - buf);
}

tg_err snapshot__decode_partition(const unsigned char *value, size_t len,
                                  struct partition_state *out)
{
    struct rd r = {value, value + len, false};
    unsigned version = get_u8(&r), hm = get_u8(&r);
    int64_t m = get_i64(&r);
    if (r.bad || (version != PARTITION_VERSION && version != PARTITION_VERSION_HOLES) || hm > 1 ||
        !time_ok(m))
        return TG_ERR_MALFORMED;
    struct part_hole holes[TG_ENGINE_PARTITION_HOLES];
    unsigned n = 0;
    if (version == PARTITION_VERSION_HOLES) {
        /* Only what the engine writes: 1..max holes, each a forward span, in order and apart,
         * none past the partition's highest event time. */
        n = get_u8(&r);
        if (r.bad || n == 0 || n > TG_ENGINE_PARTITION_HOLES || hm != 1)
            return TG_ERR_MALFORMED;
        for (unsigned i = 0; i < n; i++) {
            holes[i].from = get_i64(&r);
            holes[i].to = get_i64(&r);
            if (r.bad || !time_ok(holes[i].from) || !time_ok(holes[i].to) ||
                holes[i].from >= holes[i].to || holes[i].to > m ||
                (i > 0 && holes[i].from < holes[i - 1].to))
                return TG_ERR_MALFORMED;
        }
    }
    if (r.bad || r.p != r.end)
        return TG_ERR_MALFORMED;
    out->max_ts = m;
    out->has_max = hm == 1;
    out->n_holes = (uint8_t)n;
    memcpy(out->holes, holes, n * sizeof *holes);
    return TG_OK;
}
