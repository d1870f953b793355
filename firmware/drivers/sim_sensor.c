/*
 * sim_sensor.c - the simulated sensor's signal generator (see sim_sensor.h).
 */
#include "sim_sensor.h"

#include <stdbool.h>
#include <string.h>

#define SEEDED_MAGIC 0x53494d31u /* "SIM1": tg_sim_sensor_set_seed() ran */
#define DAY_MS 86400000
#define SQRT3 1.7320508075688772

struct sim_state {
    uint32_t magic;
    bool started;        /* battery's t0 known */
    uint64_t seed;
    uint64_t noise;      /* xorshift64* state, never 0 */
    int64_t tz_ms;       /* the device's local time offset: where its afternoon is */
    double temp_base, temp_amp, temp_peak_h, temp_wander;
    double hum_base, hum_slope;
    double pres_base, pres_swing, pres_period_s, pres_phase, tide_phase;
    double batt_v0, batt_decay_per_day;
    int64_t batt_t0_ms;
    double vib_amp[3], vib_period_s[3], vib_phase[3], vib_noise;
};

static const char *const metric_names[TG_SIM_SENSOR_METRICS] = {
    "temperature_c", "humidity_pct", "pressure_hpa", "battery_v", "vibration_g",
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static double unit_from_bits(uint64_t bits)
{
    return (double)(bits >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
}

static double param(uint64_t *sm, double lo, double hi)
{
    return lo + (hi - lo) * unit_from_bits(splitmix64(sm));
}

static uint64_t xorshift64s(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * UINT64_C(0x2545f4914f6cdd1d);
}

/* Approximately standard normal: the sum of four uniforms (Irwin-Hall), scaled to unit
 * variance. Bounded by +-3.46, which suits sensor noise (no wild outliers by accident: those
 * are the anomaly injector's job). */
static double gauss(uint64_t *x)
{
    double sum = 0;
    for (int i = 0; i < 4; i++)
        sum += unit_from_bits(xorshift64s(x));
    return (sum - 2.0) * SQRT3;
}

static double floor_d(double v)
{
    double i = (double)(int64_t)v;
    return i > v ? i - 1.0 : i;
}

double tg_sim_sensor_sin_cycles(double cycles)
{
    double x = cycles - floor_d(cycles); /* [0, 1) */
    if (x >= 0.5)
        x -= 1.0;                        /* [-0.5, 0.5) */
    if (x > 0.25)
        x = 0.5 - x;                     /* sin(pi - a) = sin(a) */
    else if (x < -0.25)
        x = -0.5 - x;
    double a = x * 6.283185307179586;    /* [-pi/2, pi/2] */
    double a2 = a * a;
    /* Taylor series to a^15: error below 1e-11 on [-pi/2, pi/2]. */
    double p = 1.0 / 1307674368000.0;
    p = p * -a2 + 1.0 / 6227020800.0;
    p = p * -a2 + 1.0 / 39916800.0;
    p = p * -a2 + 1.0 / 362880.0;
    p = p * -a2 + 1.0 / 5040.0;
    p = p * -a2 + 1.0 / 120.0;
    p = p * -a2 + 1.0 / 6.0;
    p = p * -a2 + 1.0;
    return a * p;
}

/* Rounds to the sensor's resolution (1/per_unit), half away from zero. */
static double quantize(double v, double per_unit)
{
    double scaled = v * per_unit;
    return (double)(int64_t)(scaled + (scaled >= 0 ? 0.5 : -0.5)) / per_unit;
}

void tg_sim_sensor_set_seed(void *state, uint64_t seed)
{
    struct sim_state *s = state;
    memset(s, 0, sizeof *s);
    s->magic = SEEDED_MAGIC;
    s->seed = seed;
}

static int sim_init(void *state, const struct tg_hal *hal, uint8_t addr)
{
    struct sim_state *s = state;
    uint64_t seed = s->seed;
    if (s->magic != SEEDED_MAGIC) {
        /* Zero-filled state: a node without a configured seed gets a random device. */
        uint64_t hi = hal->random_u32 ? hal->random_u32(hal->ctx) : 0;
        uint64_t lo = hal->random_u32 ? hal->random_u32(hal->ctx) : 0;
        seed = (hi << 32 | lo) ^ addr;
    }
    memset(s, 0, sizeof *s);
    s->magic = SEEDED_MAGIC;
    s->seed = seed;

    uint64_t sm = seed;
    s->noise = splitmix64(&sm) | 1u;
    /* Local time: a whole-hour offset of -6..+6, so fleets' afternoons differ. */
    s->tz_ms = ((int64_t)(param(&sm, 0, 13)) - 6) * 3600000;
    s->temp_base = param(&sm, 8, 26);
    s->temp_amp = param(&sm, 2, 7);
    s->temp_peak_h = param(&sm, 13, 17);
    s->hum_base = param(&sm, 35, 75);
    s->hum_slope = param(&sm, 1.5, 3.5);
    s->pres_base = 1013.25 - 0.12 * param(&sm, 0, 800); /* ~0.12 hPa per metre of altitude */
    s->pres_swing = param(&sm, 3, 12);
    s->pres_period_s = param(&sm, 3, 6) * 86400.0;
    s->pres_phase = param(&sm, 0, 1);
    s->tide_phase = param(&sm, 0, 1);
    s->batt_v0 = param(&sm, 3.70, 4.15);
    s->batt_decay_per_day = param(&sm, 0.005, 0.030);
    static const double vib_period_lo[3] = {4, 40, 600}, vib_period_hi[3] = {15, 120, 1800};
    static const double vib_amp_lo[3] = {0.02, 0.01, 0.005}, vib_amp_hi[3] = {0.25, 0.1, 0.05};
    for (int i = 0; i < 3; i++) {
        s->vib_amp[i] = param(&sm, vib_amp_lo[i], vib_amp_hi[i]);
        s->vib_period_s[i] = param(&sm, vib_period_lo[i], vib_period_hi[i]);
        s->vib_phase[i] = param(&sm, 0, 1);
    }
    s->vib_noise = param(&sm, 0.002, 0.02);
    return 0;
}

static int sim_read(void *state, const struct tg_hal *hal, struct tg_sensor_sample *out)
{
    struct sim_state *s = state;
    int64_t now = hal->wall_ms(hal->ctx);
    if (!s->started) {
        s->started = true;
        s->batt_t0_ms = now;
    }
    int64_t local_ms = now + s->tz_ms;
    int64_t ms_of_day = ((local_ms % DAY_MS) + DAY_MS) % DAY_MS;
    double hour = (double)ms_of_day / 3600000.0;
    double t_s = (double)now / 1000.0;

    /* cos(2 pi (hour - peak) / 24): warmest at the peak hour, coldest 12 hours later. */
    double daily = tg_sim_sensor_sin_cycles((hour - s->temp_peak_h) / 24.0 + 0.25);
    s->temp_wander = 0.98 * s->temp_wander + 0.04 * gauss(&s->noise);
    double temp = s->temp_base + s->temp_amp * daily + s->temp_wander + 0.05 * gauss(&s->noise);

    double hum = s->hum_base - s->hum_slope * (temp - s->temp_base) + 0.6 * gauss(&s->noise);
    if (hum < 3)
        hum = 3;
    if (hum > 100)
        hum = 100;

    double pres = s->pres_base +
                  s->pres_swing * tg_sim_sensor_sin_cycles(t_s / s->pres_period_s + s->pres_phase) +
                  0.6 * tg_sim_sensor_sin_cycles(t_s / 43200.0 + s->tide_phase) +
                  0.03 * gauss(&s->noise);

    double days = (double)(now - s->batt_t0_ms) / (double)DAY_MS;
    double batt = s->batt_v0 - s->batt_decay_per_day * (days > 0 ? days : 0);
    if (batt < 3.0)
        batt = 3.0;
    batt += 0.002 * gauss(&s->noise);

    double vib = s->vib_noise * gauss(&s->noise);
    for (int i = 0; i < 3; i++)
        vib += s->vib_amp[i] * tg_sim_sensor_sin_cycles(t_s / s->vib_period_s[i] + s->vib_phase[i]);

    const double values[TG_SIM_SENSOR_METRICS] = {
        quantize(temp, 100), quantize(hum, 100), quantize(pres, 100), quantize(batt, 1000),
        quantize(vib, 10000),
    };
    out->n = TG_SIM_SENSOR_METRICS;
    for (unsigned i = 0; i < TG_SIM_SENSOR_METRICS; i++) {
        out->names[i] = metric_names[i];
        out->values[i] = values[i];
    }
    return 0;
}

const struct tg_sensor_driver tg_sim_sensor_driver = {
    .name = "sim",
    .state_size = sizeof(struct sim_state),
    .init = sim_init,
    .read = sim_read,
};
