/* Unit tests for the predict detector (worker/detect_predict.c) through the engine, on
 * synthetic sums of sines like a vibration sensor's: a spike at a trough (inside the series'
 * range) is found, the clean series stays silent, gaps and a change of sampling rate are
 * handled, late samples and a moved sampling grid raise nothing, a level shift is one
 * incident, a restored engine continues bit for bit, snapshots of another layout or with
 * impossible values are refused, and the detector costs memory only where a rule turns it
 * on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_engine_util.h"

#define T0 INT64_C(1700000000000)

/* Vibration-like: three sines (fast, middle, slow) plus Gaussian noise, at t seconds. */
struct vib {
    double amp[3], period_s[3], phase[3], noise;
    struct rng g;
};

static void vib_init(struct vib *v, uint64_t seed)
{
    struct rng g = {seed};
    static const double plo[3] = {4, 40, 600}, phi[3] = {15, 120, 1800};
    static const double alo[3] = {0.02, 0.01, 0.005}, ahi[3] = {0.25, 0.1, 0.05};
    for (int i = 0; i < 3; i++) {
        v->amp[i] = alo[i] + (ahi[i] - alo[i]) * rng_uniform(&g);
        v->period_s[i] = plo[i] + (phi[i] - plo[i]) * rng_uniform(&g);
        v->phase[i] = rng_uniform(&g);
    }
    v->noise = 0.002 + 0.018 * rng_uniform(&g);
    v->g = (struct rng){seed * 31 + 7};
}

static double vib_clean(const struct vib *v, double t)
{
    double x = 0;
    for (int i = 0; i < 3; i++)
        x += v->amp[i] * sin(2 * M_PI * (t / v->period_s[i] + v->phase[i]));
    return x;
}

static double vib_at(struct vib *v, double t)
{
    return round((vib_clean(v, t) + v->noise * rng_gauss(&v->g)) * 10000) / 10000;
}

struct run {
    struct tg_engine_config *ec;
    struct tg_engine *en;
    struct rec r;
};

static void run_start(struct run *ru, const char *const *sets)
{
    memset(ru, 0, sizeof *ru);
    run_open(&ru->ec, &ru->en, &ru->r, sets);
}

/* The shipped rule for vibration_g, with the predict detector on or off. */
static const char *const rule_on[] = {"rules.1.match=vib", "rules.1.level_threshold=5",
                                      "rules.1.shift_threshold=3.5", "rules.1.predict=true",
                                      NULL};
static const char *const rule_off[] = {"rules.1.match=vib", "rules.1.level_threshold=5",
                                       "rules.1.shift_threshold=3.5", NULL};

/* A large fast sine (0.25 g at 9 s) and a spike of 0.6 g at its trough: the value after the
 * spike (+0.35 g) is inside what the series shows every 9 s. */
static void spike_at_trough(struct run *ru, int64_t spike_s)
{
    struct vib v = {.amp = {0.25, 0.05, 0.02}, .period_s = {9, 70, 900},
                    .phase = {0, 0.3, 0.6}, .noise = 0.005, .g = {5}};
    for (int64_t s = 0; s < 900; s++) {
        double x = vib_at(&v, (double)s);
        if (s == spike_s)
            x += 0.6;
        feed(ru->en, 0, "dev", "vib", T0 + s * 1000, x);
    }
}

static int64_t trough_after(int64_t from_s)
{
    /* The fast sine (period 9 s, phase 0) is at its trough at t = 6.75 s + 9 k; the slow
     * ones add little there. */
    int64_t k = (from_s + 8) / 9;
    return (int64_t)llround(6.75 + 9.0 * (double)k);
}

static void spike_at_a_trough_is_found(void **state)
{
    (void)state;
    struct run ru;
    int64_t at = trough_after(400);
    run_start(&ru, rule_on);
    spike_at_trough(&ru, at);
    expect_opens(&ru, NULL, 1);
    expect_opens(&ru, "predict", 1);
    char id[64];
    snprintf(id, sizeof id, "dev/vib/predict/%lld", (long long)(T0 + at * 1000));
    bool found = false;
    for (size_t i = 0; i < ru.r.n; i++)
        found |= strncmp(ru.r.lines[i], "A open ", 7) == 0 && strstr(ru.r.lines[i], id);
    assert_true(found); /* at the spike itself */
    run_end(&ru);
    /* Without it, the level detector does not see this spike: why the detector exists. */
    run_start(&ru, rule_off);
    spike_at_trough(&ru, at);
    expect_opens(&ru, NULL, 0);
    run_end(&ru);
}

/* Twenty vibration series with the simulator's ranges of amplitudes, periods and noise, two
 * hours each: the predict detector opens nothing. */
static void clean_periodic_series_stay_silent(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, rule_on);
    for (int d = 0; d < 20; d++) {
        struct vib v;
        vib_init(&v, (uint64_t)d + 100);
        char dev[16];
        snprintf(dev, sizeof dev, "d%02d", d);
        for (int64_t s = 0; s < 7200; s++)
            feed(ru.en, 0, dev, "vib", T0 + s * 1000, vib_at(&v, (double)s));
    }
    expect_opens(&ru, "predict", 0);
    run_end(&ru);
}

/* Gaps (a minute, an hour), a burst of close samples after a reconnect, and a change of
 * sampling rate (1 s to 2 s) on a clean series: nothing opens but the silences; a spike at a
 * trough after each is still found. */
static void gaps_and_rate_changes_are_handled(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, rule_on);
    struct vib v = {.amp = {0.25, 0.05, 0.02}, .period_s = {9, 70, 900},
                    .phase = {0, 0.3, 0.6}, .noise = 0.005, .g = {9}};
    int64_t s = 0;
    for (; s < 600; s++)
        feed(ru.en, 0, "dev", "vib", T0 + s * 1000, vib_at(&v, (double)s));
    s += 60; /* a minute's gap */
    for (int64_t end = s + 600; s < end; s++)
        feed(ru.en, 0, "dev", "vib", T0 + s * 1000, vib_at(&v, (double)s));
    s += 3600; /* an hour's gap */
    for (int64_t end = s + 600; s < end; s++)
        feed(ru.en, 0, "dev", "vib", T0 + s * 1000, vib_at(&v, (double)s));
    /* Three samples 100 ms apart (a backlog flushed after a reconnect), then on. */
    int64_t ms = T0 + s * 1000;
    for (int k = 0; k < 3; k++, ms += 100)
        feed(ru.en, 0, "dev", "vib", ms, vib_at(&v, (double)(ms - T0) / 1000.0));
    s = (ms - T0) / 1000 + 1;
    for (int64_t end = s + 600; s < end; s++)
        feed(ru.en, 0, "dev", "vib", T0 + s * 1000, vib_at(&v, (double)s));
    /* Every 2 s from here. */
    for (int64_t end = s + 1200; s < end; s += 2)
        feed(ru.en, 0, "dev", "vib", T0 + s * 1000, vib_at(&v, (double)s));
    expect_opens(&ru, "predict", 0);
    expect_opens(&ru, "level", 0);
    /* And it still works at the new rate: a spike at a trough. */
    int64_t at = trough_after(s + 300);
    if ((at - s) % 2)
        at += 9; /* a trough on the 2 s grid */
    for (int64_t end = s + 600; s < end; s += 2) {
        double x = vib_at(&v, (double)s);
        if (s == at)
            x += 0.6;
        feed(ru.en, 0, "dev", "vib", T0 + s * 1000, x);
    }
    expect_opens(&ru, "predict", 1);
    run_end(&ru);
}

/* Sampling instants as a device on a loaded host has them (README, "Real path"): now and
 * then one reading is taken 60-180 ms late, its value that of the signal at that later
 * instant and its time stamped so, and the next is back on the 1 s grid; every ten minutes a
 * burst of five late readings in a row; twice the grid
 * itself moves by 150 ms (a timer rescheduled after a stall). On twenty clean vibration
 * series the predict detector opens nothing; a spike at a trough right after a late reading
 * is still found, and so is one on a series that samples 0-100 ms late every time. */
static int64_t late_ms(int64_t s)
{
    /* A load burst: five readings in a row late by these (a real run's, sim-00944's). */
    static const int64_t burst[5] = {40, 143, 51, 8, 113};
    if (s % 600 >= 300 && s % 600 < 305)
        return burst[s % 600 - 300];
    return s % 97 == 50 ? 60 + (s * 37) % 121 : 0;
}

static void late_samples_do_not_alert(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, rule_on);
    for (int d = 0; d < 20; d++) {
        struct vib v;
        vib_init(&v, (uint64_t)d + 300);
        char dev[16];
        snprintf(dev, sizeof dev, "d%02d", d);
        for (int64_t s = 0; s < 7200; s++) {
            int64_t ms = s * 1000 + late_ms(s + d) + (s >= 2500 ? 150 : 0) + (s >= 5000 ? 150 : 0);
            feed(ru.en, 0, dev, "vib", T0 + ms, vib_at(&v, (double)ms / 1000.0));
        }
    }
    expect_opens(&ru, "predict", 0);
    run_end(&ru);

    /* A series that samples unevenly all the time (each reading 0-100 ms into its second) is
     * taken as it is, its residual spread learning the timing noise: a spike at a trough in a
     * reading 90 ms later in its second than the one before is scored, not stood in for. */
    run_start(&ru, rule_on);
    {
        struct rng jit = {77};
        struct vib v = {.amp = {0.25, 0.05, 0.02}, .period_s = {9, 70, 900},
                        .phase = {0, 0.3, 0.6}, .noise = 0.005, .g = {5}};
        int64_t at = trough_after(400);
        for (int64_t s = 0; s < 900; s++) {
            /* On time for the first step (the step learned) and the two before the spike's,
             * so that only the spike's reading is off its slot. */
            bool on_time = s < 2 || (s >= at - 2 && s < at);
            int64_t late = s == at ? 90 : on_time ? 0 : (int64_t)(rng_uniform(&jit) * 100);
            int64_t ms = s * 1000 + late;
            double x = vib_at(&v, (double)ms / 1000.0);
            if (s == at)
                x += 0.6;
            feed(ru.en, 0, "dev", "vib", T0 + ms, x);
        }
        expect_opens(&ru, "predict", 1);
        char id[64];
        snprintf(id, sizeof id, "dev/vib/predict/%lld", (long long)(T0 + at * 1000 + 90));
        bool found = false;
        for (size_t i = 0; i < ru.r.n; i++)
            found |= strncmp(ru.r.lines[i], "A open ", 7) == 0 && strstr(ru.r.lines[i], id);
        assert_true(found); /* at the spike itself */
    }
    run_end(&ru);

    run_start(&ru, rule_on);
    struct vib v = {.amp = {0.25, 0.05, 0.02}, .period_s = {9, 70, 900},
                    .phase = {0, 0.3, 0.6}, .noise = 0.005, .g = {5}};
    int64_t at = trough_after(400);
    for (int64_t s = 0; s < 900; s++) {
        int64_t ms = s * 1000 + (s == at - 1 ? 120 : 0);
        double x = vib_at(&v, (double)ms / 1000.0);
        if (s == at)
            x += 0.6;
        feed(ru.en, 0, "dev", "vib", T0 + ms, x);
    }
    expect_opens(&ru, "predict", 1);
    run_end(&ru);
}

/* A level shift of 0.4 g for five minutes on the periodic series: one incident (its end may
 * be a second: the return is a step too), never a storm. */
static void level_shift_is_one_incident(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, rule_on);
    struct vib v = {.amp = {0.2, 0.05, 0.02}, .period_s = {11, 70, 900},
                    .phase = {0.1, 0.3, 0.6}, .noise = 0.01, .g = {11}};
    for (int64_t s = 0; s < 1800; s++) {
        double x = vib_at(&v, (double)s);
        if (s >= 600 && s < 900)
            x += 0.4;
        feed(ru.en, 0, "dev", "vib", T0 + s * 1000, x);
    }
    size_t n = opens_of(&ru, NULL);
    if (n < 1 || n > 2) {
        expect_opens(&ru, NULL, 1);
    }
    /* The first opens at the shift's first sample. */
    char id[64];
    snprintf(id, sizeof id, "/%lld", (long long)(T0 + 600 * 1000));
    bool found = false;
    for (size_t i = 0; i < ru.r.n; i++)
        found |= strncmp(ru.r.lines[i], "A open ", 7) == 0 && strstr(ru.r.lines[i], id);
    assert_true(found);
    run_end(&ru);
}

/* ---- snapshots --------------------------------------------------------------------------- */

/* Point k of a stream of three vibration series with spikes, a shift and a gap. */
static void stream_point(struct vib *vs, int k, const char **dev, int64_t *ts, double *x)
{
    static const char *const devs[] = {"a", "b", "c"};
    int d = k % 3;
    int64_t s = k / 3;
    if (d == 2 && s >= 700)
        s += 120; /* c: two minutes' gap */
    /* a: late readings (one every 37 s, and a burst of three at 500 s), so that the cuts
     * below fall right after stand-ins for them as well. */
    int64_t late = 0;
    if (d == 0 && (s % 37 == 5 || (s >= 500 && s < 503)))
        late = s % 37 == 5 ? 130 : 60 + 40 * (s - 500);
    *dev = devs[d];
    *ts = T0 + s * 1000 + d + late;
    double v = vib_at(&vs[d], (double)s + (double)late / 1000.0);
    if (s % 250 == 100)
        v += 0.7; /* spikes */
    if (d == 1 && s >= 900 && s < 1000)
        v -= 0.4;
    *x = v;
}

static void restored_engine_continues_bit_for_bit(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(rule_on, err, sizeof err);
    assert_non_null(ec);
    const int total = 1500 * 3;
    /* After a's late readings at 338 s and 501 s (in a burst) too. */
    const int cuts[] = {3 * 40 + 1, 3 * 333 + 2, 3 * 338 + 1, 3 * 501 + 1, 3 * 702};
    struct vib v0[3];
    for (int d = 0; d < 3; d++)
        vib_init(&v0[d], (uint64_t)d + 40);

    struct rec ref = {0};
    struct scores ref_sc = {0};
    struct vib vs[3];
    memcpy(vs, v0, sizeof vs);
    struct tg_engine *en = scored_engine_new(ec, &ref, &ref_sc);
    for (int k = 0; k < total; k++) {
        const char *dev;
        int64_t ts;
        double x;
        stream_point(vs, k, &dev, &ts, &x);
        feed(en, 0, dev, "vib", ts, x);
    }
    tg_engine_flush(en);
    tg_engine_destroy(en);
    assert_true(ref.opens >= 10);

    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        struct rec a = {0}, b = {0};
        struct scores sc = {0};
        struct store st = {0};
        memcpy(vs, v0, sizeof vs);
        en = scored_engine_new(ec, &a, &sc);
        for (int k = 0; k < cuts[c]; k++) {
            const char *dev;
            int64_t ts;
            double x;
            stream_point(vs, k, &dev, &ts, &x);
            feed(en, 0, dev, "vib", ts, x);
        }
        tg_engine_snapshot_dirty(en, store_put, &st);
        tg_engine_destroy(en);
        en = scored_engine_new(ec, &b, &sc);
        store_restore_all(en, &st);
        for (int k = cuts[c]; k < total; k++) {
            const char *dev;
            int64_t ts;
            double x;
            stream_point(vs, k, &dev, &ts, &x);
            feed(en, 0, dev, "vib", ts, x);
        }
        tg_engine_flush(en);
        tg_engine_destroy(en);
        assert_int_equal(sc.n, ref_sc.n);
        for (size_t i = 0; i < sc.n; i++)
            if (memcmp(&sc.v[i], &ref_sc.v[i], sizeof(double)) != 0)
                fail_msg("cut %d: point %zu scores %.17g, uninterrupted %.17g", cuts[c], i,
                         sc.v[i], ref_sc.v[i]);
        assert_int_equal(a.n + b.n, ref.n);
        for (size_t i = 0; i < ref.n; i++) {
            const char *got = i < a.n ? a.lines[i] : b.lines[i - a.n];
            if (strcmp(got, ref.lines[i]) != 0)
                fail_msg("cut %d: output %zu differs:\n  ref %s\n  got %s", cuts[c], i,
                         ref.lines[i], got);
        }
        rec_free(&a);
        rec_free(&b);
        free(sc.v);
        store_free(&st);
    }
    rec_free(&ref);
    free(ref_sc.v);
    tg_engine_config_destroy(ec);
}

/* The value of series (dev, vib) after a few minutes under config sets. */
static void snapshot_of(const char *const *sets, struct store *st)
{
    struct run ru;
    run_start(&ru, sets);
    struct vib v;
    vib_init(&v, 3);
    for (int64_t s = 0; s < 300; s++)
        feed(ru.en, 0, "dev", "vib", T0 + s * 1000, vib_at(&v, (double)s));
    tg_engine_snapshot_dirty(ru.en, store_put, st);
    run_end(&ru);
}

static const struct kv *series_value(const struct store *st)
{
    for (size_t i = 0; i < st->n; i++)
        if (st->v[i].key_len == 9 && memcmp(st->v[i].key, "0/dev/vib", 9) == 0)
            return &st->v[i];
    fail_msg("no series value");
    return NULL;
}

static tg_err restore_into(const char *const *sets, const struct kv *kv)
{
    struct run ru;
    run_start(&ru, sets);
    tg_err e = tg_engine_restore(ru.en, kv->key, kv->key_len, kv->value, kv->value_len);
    run_end(&ru);
    return e;
}

static void snapshots_of_another_layout_or_impossible_values_are_refused(void **state)
{
    (void)state;
    struct store on = {0}, off = {0};
    snapshot_of(rule_on, &on);
    snapshot_of(rule_off, &off);
    const struct kv *von = series_value(&on), *voff = series_value(&off);
    /* Version 6 with or without the detector's state (its bitmask says which; 5 and 3 before
     * the drift anchor's restart, test_detect_drift). */
    assert_int_equal((unsigned char)von->value[0], 6);
    assert_int_equal((unsigned char)voff->value[0], 6);
    assert_true(von->value_len > voff->value_len + 8 * 50);
    assert_int_equal(restore_into(rule_on, von), TG_OK);
    assert_int_equal(restore_into(rule_off, voff), TG_OK);
    /* Version 4 (before version 6's drift_back, the four bytes after the drift test's
     * doubles at offset 188, and before slot_off, dt_dev and stand_mask, the eight bytes ahead
     * of the model's doubles) still restores: a worker upgraded mid-stream resumes warm. */
    {
        size_t model = (2 * 8 + 8 * 9 / 2) * 8, at = von->value_len - model - 8;
        const size_t drift_back_at = 188;
        unsigned char v4[4096];
        assert_true(von->value_len <= sizeof v4);
        memcpy(v4, von->value, drift_back_at);
        memcpy(v4 + drift_back_at, von->value + drift_back_at + 4, at - drift_back_at - 4);
        memcpy(v4 + at - 4, von->value + at + 8, model);
        v4[0] = 4;
        struct kv k4 = *von;
        k4.value = (char *)v4;
        k4.value_len = von->value_len - 12;
        assert_int_equal(restore_into(rule_on, &k4), TG_OK);
        k4.value_len = von->value_len - 11; /* a version 4 of the wrong length: refused */
        assert_int_equal(restore_into(rule_on, &k4), TG_ERR_MALFORMED);
    }
    /* Across layouts: refused (the series starts cold), never misread. */
    assert_int_equal(restore_into(rule_off, von), TG_ERR_MALFORMED);
    assert_int_equal(restore_into(rule_on, voff), TG_ERR_MALFORMED);
    const char *const order6[] = {"rules.1.match=vib", "rules.1.level_threshold=5",
                                  "rules.1.shift_threshold=3.5", "rules.1.predict=true",
                                  "rules.1.predict_order=6", NULL};
    assert_int_equal(restore_into(order6, von), TG_ERR_MALFORMED);
    /* The predict state is the value's last part: u8 order, f64 mean, res_var, step_ms,
     * p_trace, u32 n, u8 hist_n, run, i16 slot_off, f32 dt_dev, u16 stand_mask, then the
     * model's doubles (8, 8 and 36 for p = 8). A NaN weight, a negative residual variance, a
     * history longer than p, a negative dt_dev, a stand-in beyond p, a truncation: all
     * refused. */
    size_t model = (8 + 8 + 36) * 8, tail = 1 + 4 * 8 + 4 + 2 + 2 + 4 + 2 + model;
    assert_true(von->value_len > tail);
    size_t base = von->value_len - tail;
    struct kv bad = *von;
    bad.value = malloc(von->value_len);
    memcpy(bad.value, von->value, von->value_len);
    assert_int_equal((unsigned char)bad.value[base], 8);
    memset(bad.value + base + 1 + 4 * 8 + 14, 0xff, 8); /* w[0]: NaN */
    assert_int_equal(restore_into(rule_on, &bad), TG_ERR_MALFORMED);
    memcpy(bad.value, von->value, von->value_len);
    bad.value[base + 1 + 8 + 7] = (char)0xbf; /* res_var: negative */
    assert_int_equal(restore_into(rule_on, &bad), TG_ERR_MALFORMED);
    memcpy(bad.value, von->value, von->value_len);
    bad.value[base + 1 + 4 * 8 + 4] = 9; /* hist_n > p */
    assert_int_equal(restore_into(rule_on, &bad), TG_ERR_MALFORMED);
    memcpy(bad.value, von->value, von->value_len);
    bad.value[base + 1 + 4 * 8 + 8 + 3] = (char)0xbf; /* dt_dev: negative */
    assert_int_equal(restore_into(rule_on, &bad), TG_ERR_MALFORMED);
    memcpy(bad.value, von->value, von->value_len);
    bad.value[base + 1 + 4 * 8 + 8 + 4 + 1] = 1; /* stand_mask: a stand-in beyond p */
    assert_int_equal(restore_into(rule_on, &bad), TG_ERR_MALFORMED);
    memcpy(bad.value, von->value, von->value_len);
    bad.value_len--;
    assert_int_equal(restore_into(rule_on, &bad), TG_ERR_MALFORMED);
    free(bad.value);
    store_free(&on);
    store_free(&off);
}

/* Memory: a series whose rule has the detector on carries its model; the others do not. */
static void memory_only_where_a_rule_turns_it_on(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, rule_on);
    struct tg_engine_stats s0, s1, s2;
    feed(ru.en, 0, "dev", "tmp", T0, 1); /* the first series (the table's slots too) */
    tg_engine_stats(ru.en, &s0);
    feed(ru.en, 0, "dev", "tmq", T0, 1); /* not matched by the rule */
    tg_engine_stats(ru.en, &s1);
    feed(ru.en, 0, "dev", "vib", T0, 1); /* the same key length, the rule's */
    tg_engine_stats(ru.en, &s2);
    size_t plain = s1.state_bytes - s0.state_bytes, with = s2.state_bytes - s1.state_bytes;
    /* p = 8: 48 bytes of header and (8 + 8 + 36) doubles. */
    assert_int_equal(with - plain, 48 + (8 + 8 + 36) * 8);
    run_end(&ru);
}

static void bad_predict_keys_are_reported(void **state)
{
    (void)state;
    char err[512];
    const char *const bad_threshold[] = {"rules.1.match=vib", "rules.1.predict_threshold=lots",
                                         NULL};
    assert_null(make_config(bad_threshold, err, sizeof err));
    assert_non_null(strstr(err, "[rules.1] predict_threshold: expected a number"));
    const char *const bad_order[] = {"detect.predict_order=40", NULL};
    assert_null(make_config(bad_order, err, sizeof err));
    assert_non_null(strstr(err, "predict_order"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spike_at_a_trough_is_found),
        cmocka_unit_test(clean_periodic_series_stay_silent),
        cmocka_unit_test(gaps_and_rate_changes_are_handled),
        cmocka_unit_test(late_samples_do_not_alert),
        cmocka_unit_test(level_shift_is_one_incident),
        cmocka_unit_test(restored_engine_continues_bit_for_bit),
        cmocka_unit_test(snapshots_of_another_layout_or_impossible_values_are_refused),
        cmocka_unit_test(memory_only_where_a_rule_turns_it_on),
        cmocka_unit_test(bad_predict_keys_are_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
