/*
 * test_sim_signals.c - the simulated sensor (firmware/drivers/sim_sensor.c) and the anomaly
 * injector (sim/anomaly.c): determinism for a seed, plausible ranges over a simulated day, and
 * every anomaly kind altering the signal exactly inside the window its label gives.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "anomaly.h"
#include "sim_sensor.h"

#define T0_MS INT64_C(1763712000000) /* 2025-11-21T08:00:00Z */
#define N_METRICS TG_SIM_SENSOR_METRICS

struct fake_hal {
    int64_t wall_ms;
    uint32_t random;
};

static int64_t fake_wall_ms(void *ctx)
{
    return ((struct fake_hal *)ctx)->wall_ms;
}

static uint32_t fake_random(void *ctx)
{
    return ((struct fake_hal *)ctx)->random++;
}

static struct tg_hal make_hal(struct fake_hal *fh)
{
    return (struct tg_hal){.ctx = fh, .wall_ms = fake_wall_ms, .random_u32 = fake_random};
}

static void *sensor_new(uint64_t seed)
{
    void *state = calloc(1, tg_sim_sensor_driver.state_size);
    assert_non_null(state);
    tg_sim_sensor_set_seed(state, seed);
    return state;
}

static int metric_index(const struct tg_sensor_sample *smp, const char *name)
{
    for (unsigned i = 0; i < smp->n; i++)
        if (strcmp(smp->names[i], name) == 0)
            return (int)i;
    return -1;
}

static void test_sin_cycles(void **unused)
{
    for (double c = -3.0; c <= 3.0; c += 0.0137)
        assert_true(fabs(tg_sim_sensor_sin_cycles(c) - sin(2 * M_PI * c)) < 1e-9);
    assert_true(fabs(tg_sim_sensor_sin_cycles(1763712000.25) - 1.0) < 1e-6);
}

static void test_sensor_deterministic(void **unused)
{
    struct fake_hal fh = {.wall_ms = T0_MS};
    struct tg_hal hal = make_hal(&fh);
    void *a = sensor_new(42), *b = sensor_new(42), *c = sensor_new(43);
    assert_int_equal(tg_sim_sensor_driver.init(a, &hal, 0), 0);
    assert_int_equal(tg_sim_sensor_driver.init(b, &hal, 0), 0);
    assert_int_equal(tg_sim_sensor_driver.init(c, &hal, 0), 0);
    int differ = 0;
    for (int i = 0; i < 500; i++) {
        fh.wall_ms = T0_MS + i * 1000;
        struct tg_sensor_sample sa = {0}, sb = {0}, sc = {0};
        assert_int_equal(tg_sim_sensor_driver.read(a, &hal, &sa), 0);
        assert_int_equal(tg_sim_sensor_driver.read(b, &hal, &sb), 0);
        assert_int_equal(tg_sim_sensor_driver.read(c, &hal, &sc), 0);
        assert_int_equal(sa.n, N_METRICS);
        for (unsigned m = 0; m < sa.n; m++) {
            assert_string_equal(sa.names[m], sb.names[m]);
            assert_true(sa.values[m] == sb.values[m]); /* bit-for-bit the same signal */
            differ += sa.values[m] != sc.values[m];
        }
    }
    assert_true(differ > 2000); /* another seed, another device */
    free(a);
    free(b);
    free(c);
}

/* A simulated day at one sample a minute, for many devices: every value finite and in a
 * physically plausible range, the temperature following a daily cycle, the battery falling. */
static void test_sensor_day_ranges(void **unused)
{
    struct fake_hal fh = {.wall_ms = T0_MS};
    struct tg_hal hal = make_hal(&fh);
    for (uint64_t seed = 1; seed <= 50; seed++) {
        void *s = sensor_new(seed * 7919);
        assert_int_equal(tg_sim_sensor_driver.init(s, &hal, 0), 0);
        double tmin = 1e9, tmax = -1e9, batt_first = 0, batt_last = 0, vmin = 1e9, vmax = -1e9;
        for (int minute = 0; minute <= 24 * 60; minute++) {
            fh.wall_ms = T0_MS + (int64_t)minute * 60000;
            struct tg_sensor_sample smp = {0};
            assert_int_equal(tg_sim_sensor_driver.read(s, &hal, &smp), 0);
            for (unsigned m = 0; m < smp.n; m++)
                assert_true(isfinite(smp.values[m]));
            double t = smp.values[metric_index(&smp, "temperature_c")];
            double h = smp.values[metric_index(&smp, "humidity_pct")];
            double p = smp.values[metric_index(&smp, "pressure_hpa")];
            double v = smp.values[metric_index(&smp, "battery_v")];
            double g = smp.values[metric_index(&smp, "vibration_g")];
            assert_true(t > -5 && t < 40);
            assert_true(h >= 0 && h <= 100);
            assert_true(p > 880 && p < 1040);
            assert_true(v >= 2.99 && v <= 4.2);
            assert_true(fabs(g) < 1.0);
            tmin = fmin(tmin, t);
            tmax = fmax(tmax, t);
            vmin = fmin(vmin, g);
            vmax = fmax(vmax, g);
            if (minute < 60)
                batt_first += v / 60; /* hourly means: the decay, not the noise */
            if (minute > 23 * 60)
                batt_last += v / 60;
        }
        assert_true(tmax - tmin > 3.0);          /* the daily cycle (amplitude 2..7) */
        assert_true(batt_last < batt_first);     /* decays by 5..30 mV a day */
        assert_true(batt_first - batt_last < 0.05);
        assert_true(vmax - vmin > 0.02);         /* it vibrates */
        free(s);
    }
}

static void test_sensor_zero_state_seeds_from_hal(void **unused)
{
    struct fake_hal fh = {.wall_ms = T0_MS, .random = 7};
    struct tg_hal hal = make_hal(&fh);
    void *s = calloc(1, tg_sim_sensor_driver.state_size);
    assert_non_null(s);
    assert_int_equal(tg_sim_sensor_driver.init(s, &hal, 0x40), 0);
    assert_true(fh.random > 7); /* it asked the HAL for randomness */
    struct tg_sensor_sample smp = {0};
    assert_int_equal(tg_sim_sensor_driver.read(s, &hal, &smp), 0);
    assert_int_equal(smp.n, N_METRICS);
    free(s);
}

/* --- anomalies ---------------------------------------------------------------------------- */

struct labels {
    int n;
    struct tg_anomaly_label items[64];
    char metrics[64][32];
};

static void collect_label(void *ud, const struct tg_anomaly_label *lb)
{
    struct labels *ls = ud;
    assert_true(ls->n < 64);
    ls->items[ls->n] = *lb;
    strncpy(ls->metrics[ls->n], lb->metric, sizeof ls->metrics[0] - 1);
    ls->items[ls->n].metric = ls->metrics[ls->n];
    ls->n++;
}

struct pair {
    void *clean_sensor;     /* the same signal without anomalies */
    void *sensor;
    void *anomaly;
    struct labels labels;
};

static void pair_init(struct pair *p, uint64_t seed, double rate, struct tg_hal *hal)
{
    memset(p, 0, sizeof *p);
    p->clean_sensor = sensor_new(seed);
    p->sensor = sensor_new(seed);
    p->anomaly = calloc(1, tg_anomaly_driver.state_size);
    assert_non_null(p->anomaly);
    struct tg_anomaly_config cfg = {
        .device_id = "sim-00001",
        .rate_per_hour = rate,
        .seed = seed ^ 0xabcdef,
        .inner = &tg_sim_sensor_driver,
        .inner_state = p->sensor,
        .on_label = collect_label,
        .label_ud = &p->labels,
    };
    tg_anomaly_setup(p->anomaly, &cfg);
    assert_int_equal(tg_anomaly_driver.init(p->anomaly, hal, 0), 0);
    assert_int_equal(tg_sim_sensor_driver.init(p->clean_sensor, hal, 0), 0);
}

static void pair_free(struct pair *p)
{
    free(p->clean_sensor);
    free(p->sensor);
    free(p->anomaly);
}

/* Forces each kind at second 100 for 60 s on metric 0 (temperature_c) at 1 Hz and checks:
 * samples outside the label's window equal the clean signal, samples inside differ in the way
 * the kind says, and the label's window covers exactly the altered (or missing) samples. */
static void check_kind(enum tg_anomaly_kind kind)
{
    struct fake_hal fh = {.wall_ms = T0_MS};
    struct tg_hal hal = make_hal(&fh);
    struct pair p;
    pair_init(&p, 99, 0, &hal);
    tg_anomaly_force(p.anomaly, kind, 0, T0_MS + 100000, 60000);
    int64_t first_alt = -1, last_alt = -1;
    int altered = 0, missing = 0;
    double stuck_value = NAN;
    for (int i = 0; i < 300; i++) {
        fh.wall_ms = T0_MS + i * 1000;
        struct tg_sensor_sample clean = {0}, smp = {0};
        int rc = tg_anomaly_driver.read(p.anomaly, &hal, &smp);
        if (kind != TG_ANOMALY_SILENCE || rc == 0)
            assert_int_equal(tg_sim_sensor_driver.read(p.clean_sensor, &hal, &clean), 0);
        if (rc != 0) {
            assert_int_equal(kind, TG_ANOMALY_SILENCE);
            missing++;
            if (first_alt < 0)
                first_alt = fh.wall_ms;
            last_alt = fh.wall_ms;
            continue;
        }
        bool differs = false;
        for (unsigned m = 0; m < smp.n; m++) {
            if (m != 0) {
                assert_true(smp.values[m] == clean.values[m]); /* other metrics untouched */
                continue;
            }
            if (smp.values[m] != clean.values[m])
                differs = true;
        }
        bool inside = fh.wall_ms >= T0_MS + 100000 &&
                      (kind == TG_ANOMALY_SPIKE ? fh.wall_ms == T0_MS + 100000
                                                : fh.wall_ms <= T0_MS + 160000);
        if (kind == TG_ANOMALY_STUCK && inside) {
            if (isnan(stuck_value))
                stuck_value = smp.values[0];
            assert_true(smp.values[0] == stuck_value);
            differs = true; /* the first stuck sample is the real value; all hold it */
        }
        if (kind == TG_ANOMALY_SPIKE || kind == TG_ANOMALY_LEVEL_SHIFT)
            if (inside)
                assert_true(fabs(smp.values[0] - clean.values[0]) >= 2.9);
        if (kind == TG_ANOMALY_DRIFT && inside)
            assert_true(fabs(smp.values[0] - clean.values[0]) >= 0.39);
        if (differs) {
            assert_true(inside);
            altered++;
            if (first_alt < 0)
                first_alt = fh.wall_ms;
            last_alt = fh.wall_ms;
        } else if (kind != TG_ANOMALY_NOISE_BURST) {
            assert_false(inside);
        }
    }
    tg_anomaly_finish(p.anomaly);
    assert_int_equal(p.labels.n, 1);
    const struct tg_anomaly_label *lb = &p.labels.items[0];
    assert_string_equal(lb->device, "sim-00001");
    assert_int_equal(lb->kind, kind);
    assert_string_equal(lb->metric, kind == TG_ANOMALY_SILENCE ? "*" : "temperature_c");
    assert_int_equal(lb->start_ts, T0_MS + 100000);
    if (kind == TG_ANOMALY_NOISE_BURST) {
        /* Noise may land on the clean value after rounding now and then. */
        assert_true(altered >= 55);
        assert_true(first_alt >= lb->start_ts && last_alt <= lb->end_ts);
    } else {
        assert_int_equal(lb->start_ts, first_alt);
        assert_int_equal(lb->end_ts, last_alt);
    }
    if (kind == TG_ANOMALY_SPIKE) {
        assert_int_equal(lb->end_ts, lb->start_ts);
        assert_int_equal(altered, 1);
    } else {
        assert_int_equal(lb->end_ts, T0_MS + 160000);
        if (kind != TG_ANOMALY_NOISE_BURST)
            assert_int_equal(altered, 61);
    }
    assert_int_equal(missing, 0);
    assert_int_equal(tg_anomaly_count(p.anomaly), 1);
    /* After finish, no more samples. */
    struct tg_sensor_sample smp = {0};
    assert_int_not_equal(tg_anomaly_driver.read(p.anomaly, &hal, &smp), 0);
    pair_free(&p);
}

static void test_anomaly_spike(void **unused) { check_kind(TG_ANOMALY_SPIKE); }
static void test_anomaly_level_shift(void **unused) { check_kind(TG_ANOMALY_LEVEL_SHIFT); }
static void test_anomaly_drift(void **unused) { check_kind(TG_ANOMALY_DRIFT); }
static void test_anomaly_stuck(void **unused) { check_kind(TG_ANOMALY_STUCK); }
static void test_anomaly_noise_burst(void **unused) { check_kind(TG_ANOMALY_NOISE_BURST); }

/* Silence skips the inner read, so the clean twin skips it too; checked separately. */
static void test_anomaly_silence(void **unused)
{
    struct fake_hal fh = {.wall_ms = T0_MS};
    struct tg_hal hal = make_hal(&fh);
    struct pair p;
    pair_init(&p, 5, 0, &hal);
    tg_anomaly_force(p.anomaly, TG_ANOMALY_SILENCE, 3, T0_MS + 10000, 20000);
    int missing = 0;
    int64_t first = -1, last = -1;
    for (int i = 0; i < 60; i++) {
        fh.wall_ms = T0_MS + i * 1000;
        struct tg_sensor_sample smp = {0};
        if (tg_anomaly_driver.read(p.anomaly, &hal, &smp) != 0) {
            missing++;
            if (first < 0)
                first = fh.wall_ms;
            last = fh.wall_ms;
        }
    }
    assert_int_equal(missing, 21);
    assert_int_equal(p.labels.n, 1);
    assert_int_equal(p.labels.items[0].kind, TG_ANOMALY_SILENCE);
    assert_string_equal(p.labels.items[0].metric, "*");
    assert_int_equal(p.labels.items[0].start_ts, first);
    assert_int_equal(p.labels.items[0].end_ts, last);
    pair_free(&p);
}

/* Random schedule: about rate x hours anomalies, the same ones for the same seed, labels in
 * order, non-overlapping, with every kind showing up. */
static void run_schedule(uint64_t seed, struct labels *out)
{
    struct fake_hal fh = {.wall_ms = T0_MS};
    struct tg_hal hal = make_hal(&fh);
    struct pair p;
    pair_init(&p, seed, 6.0, &hal); /* 6 per hour, 8 hours at 1 sample / 5 s: ~48 */
    for (int i = 0; i < 8 * 720; i++) {
        fh.wall_ms = T0_MS + (int64_t)i * 5000;
        struct tg_sensor_sample smp = {0};
        (void)tg_anomaly_driver.read(p.anomaly, &hal, &smp);
        if (p.labels.n >= 60)
            break;
    }
    tg_anomaly_finish(p.anomaly);
    *out = p.labels;
    for (int i = 0; i < out->n; i++)
        out->items[i].metric = out->metrics[i];
    pair_free(&p);
}

static void test_anomaly_schedule(void **unused)
{
    struct labels *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    run_schedule(11, a);
    run_schedule(11, b);
    assert_true(a->n >= 20 && a->n <= 60);
    assert_int_equal(a->n, b->n);
    int kinds[TG_ANOMALY_KINDS] = {0};
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(a->items[i].kind, b->items[i].kind);
        assert_int_equal(a->items[i].start_ts, b->items[i].start_ts);
        assert_int_equal(a->items[i].end_ts, b->items[i].end_ts);
        assert_string_equal(a->items[i].metric, b->items[i].metric);
        assert_true(a->items[i].start_ts <= a->items[i].end_ts);
        if (i > 0)
            assert_true(a->items[i].start_ts > a->items[i - 1].end_ts);
        kinds[a->items[i].kind]++;
    }
    int seen = 0;
    for (int k = 0; k < TG_ANOMALY_KINDS; k++)
        seen += kinds[k] > 0;
    assert_true(seen >= 5);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sin_cycles),
        cmocka_unit_test(test_sensor_deterministic),
        cmocka_unit_test(test_sensor_day_ranges),
        cmocka_unit_test(test_sensor_zero_state_seeds_from_hal),
        cmocka_unit_test(test_anomaly_spike),
        cmocka_unit_test(test_anomaly_level_shift),
        cmocka_unit_test(test_anomaly_drift),
        cmocka_unit_test(test_anomaly_stuck),
        cmocka_unit_test(test_anomaly_noise_burst),
        cmocka_unit_test(test_anomaly_silence),
        cmocka_unit_test(test_anomaly_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
