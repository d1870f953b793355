/* Unit tests that attack the predict detector (worker/detect_predict.c) and the shift
 * detector's drift test (worker/detect_drift.c) with inputs that break adaptive filters:
 * days of a constant, quantized or zero series (the RLS covariance winds up under forgetting
 * when the input carries no information), values at the engine's range limit, denormals and
 * values one ulp apart, a slow ramp for a week and a daily cycle for a week. Each run checks
 * that every score is in [0, 1] (never NaN), that the state snapshots and restores (a NaN or
 * an infinity in state is refused at restore, so the series would start cold on every
 * partition move), and that the detector still finds what it should afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_engine_util.h"

#define T0 INT64_C(1700000000000)
#define DAY 86400

/* Every point's score must be a number in [0, 1]. */
struct check {
    size_t points, bad;
    double first_bad;
};
static void on_point(void *ud, const struct tg_engine_point *pt)
{
    struct check *c = ud;
    c->points++;
    if (!(pt->score >= 0 && pt->score <= 1)) {
        if (!c->bad)
            c->first_bad = pt->score;
        c->bad++;
    }
}

struct run {
    struct tg_engine_config *ec;
    struct tg_engine *en;
    struct rec r;
    struct check c;
    int64_t t; /* seconds fed so far */
};

static void run_start(struct run *ru, const char *const *sets)
{
    memset(ru, 0, sizeof *ru);
    run_open(&ru->ec, &ru->en, &ru->r, sets);
    tg_engine_set_point_hook(ru->en, on_point, &ru->c);
}

static void put(struct run *ru, double x)
{
    assert_int_equal(feed(ru->en, 0, "dev", "m", T0 + ru->t * 1000, x), TG_OK);
    ru->t++;
}

static void dump_opens(const struct run *ru, size_t max);
static void dump_alerts(const struct run *ru, size_t max)
{
    for (size_t i = 0; getenv("ATTACK_ALL") && i < ru->r.n; i++)
        if (ru->r.lines[i][0] == 'A')
            fprintf(stderr, "  %s\n", ru->r.lines[i]);
    dump_opens(ru, max);
}
static void dump_opens(const struct run *ru, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < ru->r.n && k < max; i++)
        if (strncmp(ru->r.lines[i], "A open ", 7) == 0) {
            fprintf(stderr, "  %s\n", ru->r.lines[i]);
            k++;
        }
}

/* Scores so far all in [0, 1]; the state snapshots, and restores into a new engine. */
static void expect_sane(struct run *ru, const char *what)
{
    if (ru->c.bad)
        fail_msg("%s: %zu of %zu scores outside [0, 1], the first %g", what, ru->c.bad,
                 ru->c.points, ru->c.first_bad);
    struct store st = {0};
    tg_engine_snapshot_dirty(ru->en, store_add, &st);
    struct rec r2 = {0};
    struct tg_engine *en2 = tg_engine_new(ru->ec, rec_emit, &r2);
    assert_int_equal(tg_engine_partition_add(en2, 0), TG_OK);
    bool series = false;
    for (size_t i = 0; i < st.n; i++) {
        tg_err e = tg_engine_restore(en2, st.v[i].key, st.v[i].key_len, st.v[i].value,
                                     st.v[i].value_len);
        series |= st.v[i].key_len > 2 && memcmp(st.v[i].key, "0/", 2) == 0;
        if (e != TG_OK)
            fail_msg("%s: the snapshot of %.*s is refused at restore (%d)", what,
                     (int)st.v[i].key_len, st.v[i].key, (int)e);
    }
    if (!series) {
        for (size_t i = 0; i < st.n; i++)
            fprintf(stderr, "key %.*s\n", (int)st.v[i].key_len, st.v[i].key);
        fail_msg("%s: no series in the snapshot (%zu records)", what, st.n);
    }
    tg_engine_destroy(en2);
    rec_free(&r2);
    store_free(&st);
}

/* A sum of sines at 1 Hz (periods 9 s, 70 s) with noise, around level, for settle_s (the
 * change from what came before is an incident of its own, which must be over), then a spike
 * of 0.6 at a trough of the fast sine: inside the series' range, so that only the predict
 * detector sees it. Returns the number of alerts the spike opened, and their kinds in kinds. */
static size_t sines_then_spike(struct run *ru, double level, uint64_t seed, int64_t settle_s,
                               char *kinds, size_t kinds_len)
{
    struct rng g = {seed};
    size_t before = 0;
    for (int64_t s = 0; s < settle_s + 300; s++) {
        double t = (double)s;
        double x = level + 0.25 * sin(2 * M_PI * t / 9) + 0.05 * sin(2 * M_PI * t / 70) +
                   0.005 * rng_gauss(&g);
        x = round(x * 10000) / 10000;
        if (s == settle_s + 7) { /* sin(2 pi 7/9) = -0.98: a trough */
            before = ru->r.n;
            x += 0.6;
        }
        put(ru, x);
    }
    size_t n = 0;
    kinds[0] = 0;
    for (size_t i = before; i < ru->r.n; i++)
        if (strncmp(ru->r.lines[i], "A open ", 7) == 0) {
            const char *k = strstr(ru->r.lines[i], "\"kind\":\"");
            size_t used = strlen(kinds);
            snprintf(kinds + used, kinds_len - used, "%s%.*s", n ? "," : "",
                     k ? (int)strcspn(k + 8, "\"") : 1, k ? k + 8 : "?");
            n++;
        }
    return n;
}

static const char *const rule_predict[] = {"rules.1.match=m", "rules.1.level_threshold=5",
                                           "rules.1.shift_threshold=3.5",
                                           "rules.1.predict=true", NULL};
/* The predict detector alone: the change from a constant to a sum of sines keeps the shift
 * and rate detectors' incident open for over half an hour, and would hide how soon the
 * predict detector (whose covariance wound up over the constant) is of use again. */
static const char *const rule_predict_only[] = {
    "rules.1.match=m", "rules.1.level=false", "rules.1.shift=false", "rules.1.rate=false",
    "rules.1.stuck=false", "rules.1.predict=true", NULL};

/* Seconds of sines after a windup stretch before the spike: 10 minutes. */
static int64_t settle(void)
{
    const char *d = getenv("ATTACK_SETTLE");
    return d ? atoi(d) : 600;
}

static int days(void)
{
    const char *d = getenv("ATTACK_DAYS");
    return d ? atoi(d) : 1;
}

/* ---- RLS windup on inputs without information --------------------------------------- */

static void windup_case(const char *what, double (*gen)(int64_t s, struct rng *g), int n_days)
{
    struct run ru;
    run_start(&ru, rule_predict_only);
    struct rng g = {11};
    int64_t n = (int64_t)(getenv("ATTACK_DAYS") ? days() : n_days) * DAY;
    for (int64_t s = 0; s < n; s++)
        put(&ru, gen(s, &g));
    expect_sane(&ru, what);
    size_t before = opens_of(&ru, NULL);
    char kinds[128];
    size_t found = sines_then_spike(&ru, gen(n, &g), 3, settle(), kinds, sizeof kinds);
    fprintf(stderr, "%s: %zu alerts in %d days (%zu predict), the spike opened %zu: %s\n", what,
            before, (int)(n / DAY), opens_of(&ru, "predict"), found, kinds);
    expect_sane(&ru, what);
    if (found != 1 || !strstr(kinds, "predict")) {
        dump_alerts(&ru, 20);
        fail_msg("%s: the spike after the stretch opened %zu alerts (%s), want 1 of predict",
                 what, found, kinds);
    }
    run_end(&ru);
}

static double gen_const(int64_t s, struct rng *g) { (void)s; (void)g; return 5.0; }
static double gen_zero(int64_t s, struct rng *g) { (void)s; (void)g; return 0.0; }
static double gen_quant(int64_t s, struct rng *g)
{
    (void)s;
    return 20 + 0.1 * round(0.03 * rng_gauss(g) / 0.1);
}
static double gen_quant_rare(int64_t s, struct rng *g)
{
    (void)s;
    return 20 + 0.1 * round(0.015 * rng_gauss(g) / 0.1);
}

static void windup_constant(void **state) { (void)state; windup_case("constant", gen_const, 5); }
static void windup_zeros(void **state) { (void)state; windup_case("zeros", gen_zero, 5); }
static void windup_quantized(void **state) { (void)state; windup_case("quantized", gen_quant, 2); }
static void windup_quantized_rare(void **state)
{
    (void)state;
    windup_case("quantized_rare", gen_quant_rare, 2);
}

/* A constant that jumps to another constant and stays: one incident, not one per ... */
static void windup_constant_then_jump(void **state)
{
    (void)state;
    struct run ru;
    run_start(&ru, rule_predict);
    int64_t n = (int64_t)days() * DAY;
    for (int64_t s = 0; s < n; s++)
        put(&ru, 5.0);
    for (int64_t s = 0; s < n; s++)
        put(&ru, 6.0);
    expect_sane(&ru, "jump");
    fprintf(stderr, "jump: %zu alerts\n", opens_of(&ru, NULL));
    if (opens_of(&ru, NULL) != 1) {
        dump_alerts(&ru, 20);
        fail_msg("a constant that jumps once opened %zu alerts, want 1", opens_of(&ru, NULL));
    }
    run_end(&ru);
}

/* ---- values at the edge of the range ---------------------------------------------------- */

/* Scores and snapshots stay sane through a stretch at the edge of the range and through
 * the change back to an ordinary series. A spike after it is required to be found only
 * where spike_after: after a stretch at +-1e100 (or 1e90) the predict detector's mean
 * comes back at MEAN_ALPHA a sample, ln(1e100 / floor) / 0.01 samples (hours at 1 Hz), and
 * the alert of the change stays open until then (known, see the report of wattack2). */
static void edge_case(const char *what, double (*gen)(int64_t s, struct rng *g), bool spike_after)
{
    struct run ru;
    run_start(&ru, rule_predict);
    struct rng g = {5};
    for (int64_t s = 0; s < 20000; s++) {
        put(&ru, gen(s, &g));
        if (s % 5000 == 4999)
            expect_sane(&ru, what);
    }
    fprintf(stderr, "%s: %zu alerts\n", what, opens_of(&ru, NULL));
    char kinds[128];
    size_t found = sines_then_spike(&ru, 0, 3, 10800, kinds, sizeof kinds);
    expect_sane(&ru, what);
    if (getenv("ATTACK_ALL"))
        dump_alerts(&ru, 0);
    if (spike_after && (found != 1 || !strstr(kinds, "predict"))) {
        dump_alerts(&ru, 20);
        fail_msg("%s: the spike after the stretch opened %zu alerts (%s), want 1 of predict",
                 what, found, kinds);
    }
    run_end(&ru);
}

static double gen_alt_max(int64_t s, struct rng *g) { (void)g; return s % 2 ? 1e100 : -1e100; }
static double gen_max_noise(int64_t s, struct rng *g)
{
    (void)s;
    return 1e100 * (0.5 + 0.4 * rng_uniform(g));
}
static double gen_max_rare(int64_t s, struct rng *g)
{
    return s % 997 == 0 ? -1e100 : 0.3 * sin((double)s) + 0.01 * rng_gauss(g);
}
static double gen_denormal(int64_t s, struct rng *g)
{
    (void)g;
    return (double)(s % 7) * 4.9e-324 * (s % 2 ? 1 : -1);
}
static double gen_ulp(int64_t s, struct rng *g)
{
    (void)g;
    double x = 1234.5678;
    for (int64_t k = 0; k < s % 3; k++)
        x = nextafter(x, 2e3);
    return x;
}
static double gen_sine_alt(int64_t s, struct rng *g)
{
    return (s % 2 ? 1 : -1) * (1e90 * sin(0.3 * (double)s) + 1e88 * rng_gauss(g));
}

static void edge_alternating_max(void **st) { (void)st; edge_case("alt_max", gen_alt_max, false); }
static void edge_max_noise(void **st) { (void)st; edge_case("max_noise", gen_max_noise, false); }
static void edge_max_rare(void **st) { (void)st; edge_case("max_rare", gen_max_rare, false); }
static void edge_denormal(void **st) { (void)st; edge_case("denormal", gen_denormal, true); }
static void edge_ulp(void **st) { (void)st; edge_case("ulp", gen_ulp, false); }
static void edge_sine_alt(void **st) { (void)st; edge_case("sine_alt", gen_sine_alt, false); }

/* A sensor's first reading is garbage (a sentinel such as 65535, a float's maximum, the
 * engine's limit) and then it reads as it should: one sample must not blind the predict
 * detector for hours. */
static void first_glitch_case(double glitch, int64_t settle_s, int at)
{
    struct run ru;
    run_start(&ru, rule_predict_only);
    struct rng g = {77};
    for (int i = 0; i < at; i++) /* a quiet start: the sines come after */
        put(&ru, 0.01 * rng_gauss(&g));
    put(&ru, glitch);
    char kinds[128];
    size_t found = sines_then_spike(&ru, 0, 3, settle_s, kinds, sizeof kinds);
    fprintf(stderr, "sample %d %g, spike after %lld s: %zu alerts (%s)\n", at, glitch,
            (long long)settle_s, found, kinds);
    expect_sane(&ru, "first glitch");
    if (getenv("ATTACK_ALL"))
        dump_alerts(&ru, 0);
    if (found != 1 || !strstr(kinds, "predict"))
        fail_msg("sample %d %g: the spike %lld s later opened %zu alerts (%s), want 1 of "
                 "predict", at, glitch, (long long)settle_s, found, kinds);
    run_end(&ru);
}

static void first_sample_glitch(void **state)
{
    (void)state;
    const double glitch[] = {65535, -999, 3.4e38, 1e100, -1e100};
    for (size_t i = 0; i < sizeof glitch / sizeof glitch[0]; i++)
        first_glitch_case(glitch[i], 300, 0);
}

/* The same wild sample later in the first minutes: inside the first history (3), during
 * the model's first steps before it scores (20), once it scores (200). */
static void early_sample_glitch(void **state)
{
    (void)state;
    const double glitch[] = {65535, 1e100};
    const int at[] = {3, 20, 200};
    for (size_t i = 0; i < sizeof glitch / sizeof glitch[0]; i++)
        for (size_t k = 0; k < sizeof at / sizeof at[0]; k++)
            first_glitch_case(glitch[i], 600, at[k]);
}

/* ---- restore of such state, bit for bit ------------------------------------------------ */

/* Sample k of a series that mixes every edge: the engine's limit alternating in sign,
 * denormals, one-ulp steps, then a sum of sines with spikes. */
static double mixed_at(int64_t k, struct rng *g)
{
    int64_t ph = k / 400 % 5;
    if (ph == 0)
        return gen_alt_max(k, g);
    if (ph == 1)
        return gen_denormal(k, g);
    if (ph == 2)
        return gen_ulp(k, g);
    if (ph == 3)
        return gen_sine_alt(k, g);
    return 0.25 * sin(2 * M_PI * (double)k / 9) + 0.005 * rng_gauss(g) + (k % 97 ? 0 : 0.6);
}

/* An engine cut at any of several points and restored from its snapshot goes on to score
 * every point with the same bits as one never cut. */
static void edge_state_restores_bit_for_bit(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(rule_predict, err, sizeof err);
    assert_non_null(ec);
    const int64_t total = 6000;
    struct scores ref = {0};
    struct rec r0 = {0};
    struct tg_engine *en = scored_engine_new(ec, &r0, &ref);
    struct rng g = {21};
    for (int64_t k = 0; k < total; k++)
        feed(en, 0, "dev", "m", T0 + k * 1000, mixed_at(k, &g));
    tg_engine_destroy(en);
    const int64_t cuts[] = {130, 401, 777, 1203, 1650, 2010, 4444};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        struct scores got = {0};
        struct rec r1 = {0}, r2 = {0};
        struct store st = {0};
        g = (struct rng){21};
        en = scored_engine_new(ec, &r1, &got);
        for (int64_t k = 0; k < cuts[c]; k++)
            feed(en, 0, "dev", "m", T0 + k * 1000, mixed_at(k, &g));
        tg_engine_snapshot_dirty(en, store_add, &st);
        tg_engine_destroy(en);
        en = scored_engine_new(ec, &r2, &got);
        for (size_t i = 0; i < st.n; i++)
            if (tg_engine_restore(en, st.v[i].key, st.v[i].key_len, st.v[i].value,
                                  st.v[i].value_len) != TG_OK)
                fail_msg("cut %lld: %.*s refused at restore", (long long)cuts[c],
                         (int)st.v[i].key_len, st.v[i].key);
        for (int64_t k = cuts[c]; k < total; k++)
            feed(en, 0, "dev", "m", T0 + k * 1000, mixed_at(k, &g));
        tg_engine_destroy(en);
        assert_int_equal(got.n, ref.n);
        for (size_t i = 0; i < got.n; i++)
            if (memcmp(&got.v[i], &ref.v[i], sizeof(double)) != 0)
                fail_msg("cut %lld: point %zu scores differently after restore",
                         (long long)cuts[c], i);
        free(got.v);
        rec_free(&r1);
        rec_free(&r2);
        store_free(&st);
    }
    free(ref.v);
    rec_free(&r0);
    tg_engine_config_destroy(ec);
}

/* ---- the drift test on slow trends ---------------------------------------------------- */

static const char *const rule_shift[] = {"rules.1.match=m", NULL};

/* Between min and max shift alerts (the drift test's kind) over a week of gen. Other kinds
 * are counted, not judged: the level detector's rare false alerts on Gaussian noise are
 * not what this attacks. */
static void drift_case(const char *what, double (*gen)(int64_t s, struct rng *g), size_t min,
                       size_t max)
{
    struct run ru;
    run_start(&ru, rule_shift);
    struct rng g = {9};
    int64_t n = (int64_t)(days() > 1 ? days() : 7) * DAY;
    for (int64_t s = 0; s < n; s++)
        put(&ru, gen(s, &g));
    expect_sane(&ru, what);
    fprintf(stderr, "%s: %zu alerts in %lld days (%zu shift)\n", what, opens_of(&ru, NULL),
            (long long)(n / DAY), opens_of(&ru, "shift"));
    if (opens_of(&ru, "shift") > max || opens_of(&ru, "shift") < min) {
        dump_alerts(&ru, 10);
        fail_msg("%s: %zu shift alerts, want %zu to %zu", what, opens_of(&ru, "shift"), min,
                 max);
    }
    run_end(&ru);
}

/* A battery discharging over weeks: 4.2 V losing 0.1 V a day, 1 mV steps of resolution. */
static double gen_ramp(int64_t s, struct rng *g)
{
    return round((4.2 - 0.1 * (double)s / DAY + 0.002 * rng_gauss(g)) * 1000) / 1000;
}
/* A daily temperature cycle of +-5 around 20, 0.1 noise. */
static double gen_daily(int64_t s, struct rng *g)
{
    return 20 + 5 * sin(2 * M_PI * (double)s / DAY) + 0.1 * rng_gauss(g);
}

/* A ramp the drift test sees: flat for a day, then 1 mV every 10 s (9 noise levels of gap
 * between its fast EWMA and its anchor) for the rest of the week. */
static double gen_steep_ramp(int64_t s, struct rng *g)
{
    double t = s < DAY ? 0 : (double)(s - DAY);
    return round((4.2 - 1e-4 * t + 0.002 * rng_gauss(g)) * 1000) / 1000;
}
static void drift_steep_ramp(void **st)
{
    (void)st;
    drift_case("steep_ramp", gen_steep_ramp, 1, 1);
}
static void drift_slow_ramp(void **st) { (void)st; drift_case("ramp", gen_ramp, 0, 1); }
static void drift_daily_cycle(void **st) { (void)st; drift_case("daily", gen_daily, 0, 0); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(windup_constant),
        cmocka_unit_test(windup_zeros),
        cmocka_unit_test(windup_quantized),
        cmocka_unit_test(windup_quantized_rare),
        cmocka_unit_test(windup_constant_then_jump),
        cmocka_unit_test(edge_alternating_max),
        cmocka_unit_test(edge_max_noise),
        cmocka_unit_test(edge_max_rare),
        cmocka_unit_test(edge_denormal),
        cmocka_unit_test(edge_ulp),
        cmocka_unit_test(edge_sine_alt),
        cmocka_unit_test(edge_state_restores_bit_for_bit),
        cmocka_unit_test(first_sample_glitch),
        cmocka_unit_test(early_sample_glitch),
        cmocka_unit_test(drift_slow_ramp),
        cmocka_unit_test(drift_steep_ramp),
        cmocka_unit_test(drift_daily_cycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
