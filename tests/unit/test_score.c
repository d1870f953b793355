/*
 * test_score.c - the comparison behind `tidegate-sim score` (sim/score.h) on synthetic labels
 * and alerts: what counts as detected, missed and false, how incidents are grouped, the
 * delay percentiles, the exposure, the floors, and that nothing measured never passes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "score.h"

#define T0 1763712000000LL
#define SLACK 30000
#define S(x) ((int64_t)(x) * 1000)

/* This cmocka has no assert_double_equal: says both values when they differ. */
#define assert_near(a, b, eps) near_((a), (b), (eps), __FILE__, __LINE__)
static void near_(double a, double b, double eps, const char *file, int line)
{
    if (!(fabs(a - b) <= eps))
        fail_msg("%s:%d: %.9g != %.9g", file, line, a, b);
}

static const struct tg_sim_score_floors no_floors = {NAN, NAN, NAN};

static void label(struct tg_sim_score *sc, const char *dev, const char *metric,
                  enum tg_anomaly_kind kind, int64_t start, int64_t end)
{
    assert_int_equal(tg_sim_score_add_label(sc, dev, metric, kind, T0 + start, T0 + end), 0);
}

/* One alert record; id NULL derives it. */
static void alert(struct tg_sim_score *sc, const char *id, const char *dev, const char *metric,
                  const char *kind, const char *state, int64_t start)
{
    struct tg_sim_score_alert al = {.id = id, .device = dev, .metric = metric, .kind = kind,
                                    .state = state, .start_ts = T0 + start,
                                    .end_ts = T0 + start};
    assert_int_equal(tg_sim_score_add_alert(sc, &al), 0);
}

/* A whole incident: open, update, close. */
static void incident(struct tg_sim_score *sc, const char *dev, const char *metric,
                     const char *kind, int64_t start)
{
    char id[128];
    snprintf(id, sizeof id, "%s/%s/%s/%lld", dev, metric, kind, (long long)(T0 + start));
    alert(sc, id, dev, metric, kind, "open", start);
    alert(sc, id, dev, metric, kind, "update", start);
    alert(sc, id, dev, metric, kind, "close", start);
}

static struct tg_sim_score_result finish(struct tg_sim_score *sc)
{
    struct tg_sim_score_result res;
    assert_int_equal(tg_sim_score_finish(sc, &res), 0);
    return res;
}

static void a_missed_label_lowers_recall_only(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_LEVEL_SHIFT, S(100), S(300));
    label(sc, "sim-00002", "temperature_c", TG_ANOMALY_LEVEL_SHIFT, S(100), S(300));
    incident(sc, "sim-00001", "temperature_c", "level", S(102));
    struct tg_sim_score_result res = finish(sc);
    const struct tg_sim_score_kind *k = &res.kind[TG_ANOMALY_LEVEL_SHIFT];
    assert_int_equal(k->labels, 2);
    assert_int_equal(k->detected, 1);
    assert_int_equal(k->false_alerts, 0);
    assert_near(k->recall, 0.5, 1e-9);
    assert_near(k->precision, 1.0, 1e-9);
    assert_near(k->f1, 2 * 0.5 / 1.5, 1e-9);
    assert_int_equal(res.all.labels, 2);
    assert_int_equal(res.all.detected, 1);
    assert_int_equal(res.all.false_alerts, 0);
    assert_int_equal(res.incidents, 1);
    assert_int_equal(res.records, 3);
    tg_sim_score_destroy(sc);
}

static void a_false_alert_lowers_precision_of_its_kind(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    label(sc, "sim-00002", "humidity_pct", TG_ANOMALY_STUCK, S(50), S(150));
    incident(sc, "sim-00001", "temperature_c", "level", S(100));
    incident(sc, "sim-00002", "humidity_pct", "stuck", S(80));
    /* Right device, wrong metric: false. The "level" alert kind matched a spike, so the
     * spike row is charged with it. */
    incident(sc, "sim-00001", "humidity_pct", "level", S(100));
    /* A clean device: false, same alert kind. */
    incident(sc, "sim-00003", "pressure_hpa", "level", S(400));
    /* An alert kind that matched nothing: unattributed, in "all" only. */
    incident(sc, "sim-00004", "pressure_hpa", "rate", S(400));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.kind[TG_ANOMALY_SPIKE].detected, 1);
    assert_int_equal(res.kind[TG_ANOMALY_SPIKE].false_alerts, 2);
    assert_near(res.kind[TG_ANOMALY_SPIKE].precision, 1.0 / 3, 1e-9);
    assert_int_equal(res.kind[TG_ANOMALY_STUCK].false_alerts, 0);
    assert_near(res.kind[TG_ANOMALY_STUCK].precision, 1.0, 1e-9);
    assert_int_equal(res.false_unattributed, 1);
    assert_int_equal(res.all.false_alerts, 3);
    assert_near(res.all.recall, 1.0, 1e-9);
    assert_near(res.all.precision, 2.0 / 5, 1e-9);
    assert_near(res.all.f1, 2 * 0.4 / 1.4, 1e-9);
    tg_sim_score_destroy(sc);
}

static void a_late_detection_within_slack_counts_with_its_delay(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    /* A spike at 100 s detected 20 s later: inside the slack. */
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    incident(sc, "sim-00001", "temperature_c", "level", S(120));
    /* A drift detected late inside its interval: delay 240 s. */
    label(sc, "sim-00002", "temperature_c", TG_ANOMALY_DRIFT, S(0), S(600));
    incident(sc, "sim-00002", "temperature_c", "shift", S(240));
    /* A spike at 100 s whose alert comes 31 s later: missed, and the alert is false. */
    label(sc, "sim-00003", "vibration_g", TG_ANOMALY_SPIKE, S(100), S(100));
    incident(sc, "sim-00003", "vibration_g", "level", S(131));
    /* An alert 31 s before a label starts is no detection of it either. */
    label(sc, "sim-00004", "vibration_g", TG_ANOMALY_NOISE_BURST, S(100), S(200));
    incident(sc, "sim-00004", "vibration_g", "level", S(69));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.kind[TG_ANOMALY_SPIKE].labels, 2);
    assert_int_equal(res.kind[TG_ANOMALY_SPIKE].detected, 1);
    assert_true(res.kind[TG_ANOMALY_SPIKE].has_delay);
    assert_int_equal(res.kind[TG_ANOMALY_SPIKE].delay_p50_ms, S(20));
    assert_int_equal(res.kind[TG_ANOMALY_DRIFT].detected, 1);
    assert_int_equal(res.kind[TG_ANOMALY_DRIFT].delay_p50_ms, S(240));
    assert_int_equal(res.kind[TG_ANOMALY_NOISE_BURST].detected, 0);
    assert_false(res.kind[TG_ANOMALY_NOISE_BURST].has_delay);
    assert_near(res.kind[TG_ANOMALY_NOISE_BURST].recall, 0.0, 1e-9);
    assert_true(isnan(res.kind[TG_ANOMALY_NOISE_BURST].precision));
    assert_near(res.kind[TG_ANOMALY_NOISE_BURST].f1, 0.0, 1e-9); /* missed: 0, not undefined */
    assert_int_equal(res.all.false_alerts, 2);
    assert_int_equal(res.all.detected, 2);
    tg_sim_score_destroy(sc);
}

static void two_incidents_for_one_label_count_once(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_LEVEL_SHIFT, S(100), S(400));
    /* One when the level shifts, one when it comes back (start after the end, in slack). */
    /* Ids chosen so that the later incident is grouped first. */
    alert(sc, "b", "sim-00001", "temperature_c", "level", "open", S(101));
    alert(sc, "a", "sim-00001", "temperature_c", "level", "open", S(405));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.incidents, 2);
    assert_int_equal(res.matched_incidents, 2);
    assert_int_equal(res.extra_incidents, 1);
    assert_int_equal(res.all.detected, 1);
    assert_int_equal(res.all.false_alerts, 0);
    assert_near(res.all.precision, 1.0, 1e-9);
    assert_near(res.all.recall, 1.0, 1e-9);
    /* The delay is the earliest incident's. */
    assert_int_equal(res.all.delay_p50_ms, S(1));
    tg_sim_score_destroy(sc);
}

static void updates_and_close_of_one_incident_count_once(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "battery_v", TG_ANOMALY_STUCK, S(100), S(200));
    /* Out of order, across what would be several partitions, and a false incident's records
     * interleaved: grouping is by id alone. The close's start_ts is the incident's too. */
    const char *id = "sim-00001/battery_v/stuck/x";
    alert(sc, id, "sim-00001", "battery_v", "stuck", "update", S(130));
    alert(sc, "other", "sim-00009", "battery_v", "stuck", "open", S(10));
    alert(sc, id, "sim-00001", "battery_v", "stuck", "open", S(130));
    for (int i = 0; i < 20; i++)
        alert(sc, id, "sim-00001", "battery_v", "stuck", "update", S(130));
    alert(sc, id, "sim-00001", "battery_v", "stuck", "close", S(130));
    alert(sc, "other", "sim-00009", "battery_v", "stuck", "close", S(10));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.records, 25);
    assert_int_equal(res.incidents, 2);
    assert_int_equal(res.all.detected, 1);
    assert_int_equal(res.extra_incidents, 0);
    assert_int_equal(res.all.false_alerts, 1);
    assert_int_equal(res.reopened, 0);
    assert_int_equal(res.kind[TG_ANOMALY_STUCK].delay_p50_ms, S(30));
    tg_sim_score_destroy(sc);
}

static void an_incident_opened_twice_is_reported(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "battery_v", TG_ANOMALY_SPIKE, S(100), S(100));
    alert(sc, "a", "sim-00001", "battery_v", "level", "open", S(100));
    alert(sc, "a", "sim-00001", "battery_v", "level", "open", S(100));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.incidents, 1);
    assert_int_equal(res.reopened, 1);
    assert_int_equal(res.all.detected, 1);
    tg_sim_score_destroy(sc);
}

static void silence_matches_silence_alerts_on_any_metric(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "*", TG_ANOMALY_SILENCE, S(100), S(160));
    /* The worker raises silence per series: three metrics, one label detected. Its alert
     * starts at the last reading before the gap, a second before the label. */
    incident(sc, "sim-00001", "temperature_c", "silence", S(99));
    incident(sc, "sim-00001", "humidity_pct", "silence", S(99));
    incident(sc, "sim-00001", "pressure_hpa", "silence", S(105));
    /* Another detector firing during the gap is not a silence detection: false. */
    incident(sc, "sim-00001", "battery_v", "rate", S(161));
    /* A silence alert does not detect a level shift. */
    label(sc, "sim-00002", "temperature_c", TG_ANOMALY_LEVEL_SHIFT, S(100), S(300));
    incident(sc, "sim-00002", "temperature_c", "silence", S(110));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.kind[TG_ANOMALY_SILENCE].detected, 1);
    assert_int_equal(res.kind[TG_ANOMALY_SILENCE].incidents, 3);
    assert_int_equal(res.kind[TG_ANOMALY_SILENCE].delay_p50_ms, -S(1));
    assert_int_equal(res.kind[TG_ANOMALY_LEVEL_SHIFT].detected, 0);
    assert_int_equal(res.extra_incidents, 2);
    assert_int_equal(res.all.false_alerts, 2);
    /* The false silence alert goes to the silence row; "rate" matched nothing. */
    assert_int_equal(res.kind[TG_ANOMALY_SILENCE].false_alerts, 1);
    assert_int_equal(res.false_unattributed, 1);
    tg_sim_score_destroy(sc);
}

static void a_silence_never_closed_is_the_end_of_the_run(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "*", TG_ANOMALY_SILENCE, S(100), S(160));
    /* The run ends at 600 s: the worker's sweep opens silence on every series, and nothing
     * closes it. Not false alerts. */
    alert(sc, "a", "sim-00002", "temperature_c", "silence", "open", S(601));
    alert(sc, "b", "sim-00002", "humidity_pct", "silence", "open", S(601));
    /* An unclosed silence that matches a label still detects it. */
    alert(sc, "c", "sim-00001", "temperature_c", "silence", "open", S(100));
    /* A silence on a live device closes when its readings return: false. Its close says
     * the last missing reading was due 6 s after the first. */
    alert(sc, "d", "sim-00003", "temperature_c", "silence", "open", S(300));
    struct tg_sim_score_alert close = {.id = "d", .device = "sim-00003",
                                       .metric = "temperature_c", .kind = "silence",
                                       .state = "close", .start_ts = T0 + S(300),
                                       .end_ts = T0 + S(306)};
    assert_int_equal(tg_sim_score_add_alert(sc, &close), 0);
    /* A non-silence alert never closed is false all the same. */
    alert(sc, "e", "sim-00004", "temperature_c", "level", "open", S(599));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.incidents, 5);
    assert_int_equal(res.silent_at_end, 2);
    assert_int_equal(res.all.detected, 1);
    assert_int_equal(res.all.false_alerts, 2);
    char why[64] = "";
    struct tg_sim_score_context ctx = {.topic = "t", .labels_path = "l", .slack_ms = SLACK,
                                       .floors = &no_floors, .pass = true, .why = why,
                                       .details = 10};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(tg_sim_score_print_text(sc, &res, &ctx, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "  sim-00003 temperature_c silence at 08:05:00.000 to +6.0 s;"));
    assert_non_null(strstr(text, "  sim-00004 temperature_c level at 08:09:59.000 (never closed);"));
    assert_non_null(strstr(text, "not counted as false: 2 silence incidents never closed"));
    free(text);
    tg_sim_score_destroy(sc);
}

static void an_incident_matches_the_nearest_label(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    /* Two spikes 40 s apart on one series; alerts at each, added in reverse order. */
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(140), S(140));
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    incident(sc, "sim-00001", "temperature_c", "level", S(139));
    incident(sc, "sim-00001", "temperature_c", "level", S(102));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.all.detected, 2);
    assert_int_equal(res.extra_incidents, 0);
    tg_sim_score_destroy(sc);
}

static void delay_percentiles_by_nearest_rank(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    for (int i = 1; i <= 10; i++) {
        char dev[32];
        snprintf(dev, sizeof dev, "sim-%05d", i);
        label(sc, dev, "temperature_c", TG_ANOMALY_DRIFT, S(0), S(600));
        incident(sc, dev, "temperature_c", "shift", S(i));
    }
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.kind[TG_ANOMALY_DRIFT].delay_p50_ms, S(5));
    assert_int_equal(res.kind[TG_ANOMALY_DRIFT].delay_p90_ms, S(9));
    assert_int_equal(res.all.delay_p90_ms, S(9));
    tg_sim_score_destroy(sc);
}

static void nothing_measured_never_passes(void **state)
{
    (void)state;
    char why[512];
    /* No labels, no alerts: no ratio is defined, and the verdict fails. */
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    struct tg_sim_score_result res = finish(sc);
    assert_true(isnan(res.all.recall));
    assert_true(isnan(res.all.precision));
    assert_true(isnan(res.all.f1));
    assert_false(tg_sim_score_verdict(&res, &no_floors, why, sizeof why));
    assert_non_null(strstr(why, "no labels"));
    tg_sim_score_destroy(sc);

    /* Labels but no alert at all: recall 0, and a failure even without floors. */
    sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    res = finish(sc);
    assert_near(res.all.recall, 0.0, 1e-9);
    assert_true(isnan(res.all.precision));
    assert_false(tg_sim_score_verdict(&res, &no_floors, why, sizeof why));
    assert_non_null(strstr(why, "no alert record"));
    tg_sim_score_destroy(sc);

    /* Only undecodable records: the same. */
    sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    assert_int_equal(tg_sim_score_add_alert_json(sc, "nope", 4), 1);
    res = finish(sc);
    assert_int_equal(res.undecodable, 1);
    assert_false(tg_sim_score_verdict(&res, &no_floors, why, sizeof why));
    tg_sim_score_destroy(sc);

    /* A kind without labels has no recall (not 1.0), and a recall floor skips it. */
    sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    incident(sc, "sim-00001", "temperature_c", "level", S(100));
    res = finish(sc);
    assert_true(isnan(res.kind[TG_ANOMALY_STUCK].recall));
    assert_true(isnan(res.kind[TG_ANOMALY_STUCK].f1));
    struct tg_sim_score_floors fl = {0.9, 0.9, NAN};
    assert_true(tg_sim_score_verdict(&res, &fl, why, sizeof why));
    assert_string_equal(why, "");
    tg_sim_score_destroy(sc);
}

static void floors_say_which_failed(void **state)
{
    (void)state;
    char why[512];
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    label(sc, "sim-00002", "temperature_c", TG_ANOMALY_STUCK, S(100), S(200));
    label(sc, "sim-00003", "temperature_c", TG_ANOMALY_STUCK, S(100), S(200));
    incident(sc, "sim-00001", "temperature_c", "level", S(100));
    incident(sc, "sim-00002", "temperature_c", "stuck", S(150));
    incident(sc, "sim-00004", "temperature_c", "stuck", S(150));
    /* 4 devices x 1 h = 4 device-hours, minus (0 + 60 s) + 2 x (100 + 60 s) of labels. */
    tg_sim_score_set_exposure(sc, 4, 3600);
    struct tg_sim_score_result res = finish(sc);
    assert_true(res.has_exposure);
    assert_near(res.device_hours, 4.0, 1e-9);
    assert_near(res.clean_device_hours, 4.0 - 380.0 / 3600.0, 1e-9);
    assert_near(res.false_per_device_hour, 1.0 / (4.0 - 380.0 / 3600.0), 1e-9);

    struct tg_sim_score_floors fl = {0.5, NAN, NAN};
    assert_true(tg_sim_score_verdict(&res, &fl, why, sizeof why));
    fl.min_recall = 0.6; /* stuck is 0.5 */
    assert_false(tg_sim_score_verdict(&res, &fl, why, sizeof why));
    assert_non_null(strstr(why, "recall of stuck 0.500"));
    assert_null(strstr(why, "spike"));
    fl = (struct tg_sim_score_floors){NAN, 0.7, NAN}; /* F1: r 2/3, p 2/3 */
    assert_false(tg_sim_score_verdict(&res, &fl, why, sizeof why));
    assert_non_null(strstr(why, "F1 0.667"));
    fl = (struct tg_sim_score_floors){NAN, 0.6, NAN};
    assert_true(tg_sim_score_verdict(&res, &fl, why, sizeof why));
    fl = (struct tg_sim_score_floors){NAN, NAN, 0.2};
    assert_false(tg_sim_score_verdict(&res, &fl, why, sizeof why));
    assert_non_null(strstr(why, "false alerts per device-hour"));
    fl = (struct tg_sim_score_floors){NAN, NAN, 0.3};
    assert_true(tg_sim_score_verdict(&res, &fl, why, sizeof why));
    tg_sim_score_destroy(sc);

    /* Without exposure the false-alert floor cannot be met. */
    sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    incident(sc, "sim-00001", "temperature_c", "level", S(100));
    res = finish(sc);
    assert_true(isnan(res.false_per_device_hour));
    assert_false(tg_sim_score_verdict(&res, &fl, why, sizeof why));
    tg_sim_score_destroy(sc);
}

struct listed {
    int missed, falses;
    char text[512];
};

static void on_missed(void *ud, const char *device, const char *metric,
                      enum tg_anomaly_kind kind, int64_t start_ts, int64_t end_ts)
{
    struct listed *l = ud;
    l->missed++;
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "missed %s %s %s %lld %lld;", device, metric,
             tg_anomaly_kind_name(kind), (long long)(start_ts - T0), (long long)(end_ts - T0));
}

static void on_false(void *ud, const struct tg_sim_score_false *f)
{
    struct listed *l = ud;
    l->falses++;
    size_t n = strlen(l->text);
    if (f->has_near)
        snprintf(l->text + n, sizeof l->text - n, "false %s %s %s %lld near %s %s %lld;",
                 f->device, f->metric, f->alert_kind, (long long)(f->start_ts - T0),
                 f->near_metric, tg_anomaly_kind_name(f->near_kind),
                 (long long)(f->near_end_ts - T0));
    else
        snprintf(l->text + n, sizeof l->text - n, "false %s %s %s %lld;", f->device, f->metric,
                 f->alert_kind, (long long)(f->start_ts - T0));
}

static void details_name_the_missed_and_the_false(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_DRIFT, S(100), S(400));
    label(sc, "sim-00001", "humidity_pct", TG_ANOMALY_SPIKE, S(900), S(900));
    label(sc, "sim-00002", "pressure_hpa", TG_ANOMALY_STUCK, S(100), S(200));
    incident(sc, "sim-00001", "temperature_c", "shift", S(200));
    /* 60 s after the drift ended: false, and the drift is its nearest label. */
    incident(sc, "sim-00001", "temperature_c", "shift", S(460));
    incident(sc, "sim-00003", "battery_v", "rate", S(10));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.all.false_alerts, 2);
    struct listed l = {0};
    tg_sim_score_each_missed(sc, on_missed, &l);
    tg_sim_score_each_false(sc, on_false, &l);
    assert_int_equal(l.missed, 2);
    assert_int_equal(l.falses, 2);
    assert_string_equal(l.text, "missed sim-00001 humidity_pct spike 900000 900000;"
                                "missed sim-00002 pressure_hpa stuck 100000 200000;"
                                "false sim-00001 temperature_c shift 460000 near temperature_c "
                                "drift 400000;"
                                "false sim-00003 battery_v rate 10000;");

    /* The text report lists them, at most --details of each. */
    char why[64] = "";
    struct tg_sim_score_context ctx = {.topic = "t", .labels_path = "l", .slack_ms = SLACK,
                                       .floors = &no_floors, .pass = true, .why = why,
                                       .details = 1};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(tg_sim_score_print_text(sc, &res, &ctx, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "missed labels (the first of 2, UTC):\n"
                                 "  sim-00001 humidity_pct spike "));
    assert_null(strstr(text, "sim-00002 pressure_hpa stuck"));
    assert_non_null(strstr(text, "false alerts (the first of 2, UTC):\n"
                                 "  sim-00001 temperature_c shift at 08:07:40.000 to +0.0 s; "));
    assert_non_null(strstr(text, "drift 08:01:40.000..08:06:40.000, 60.0 s after its end\n"));
    free(text);
    tg_sim_score_destroy(sc);
}

static void false_alerts_by_minute_show_a_burst(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(10), S(10));
    incident(sc, "sim-00001", "temperature_c", "level", S(10));
    /* A stall: 12 devices' silence raised and closed in minute 08:05; two others later. */
    for (int d = 2; d < 14; d++) {
        char dev[32], id[32];
        snprintf(dev, sizeof dev, "sim-%05d", d);
        snprintf(id, sizeof id, "burst-%d", d);
        alert(sc, id, dev, "temperature_c", "silence", "open", S(300 + d));
        alert(sc, id, dev, "temperature_c", "silence", "close", S(300 + d));
    }
    incident(sc, "sim-00020", "humidity_pct", "level", S(125));
    incident(sc, "sim-00021", "humidity_pct", "level", S(130));
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.all.false_alerts, 14);
    char why[64] = "";
    struct tg_sim_score_context ctx = {.topic = "t", .labels_path = "l", .slack_ms = SLACK,
                                       .floors = &no_floors, .pass = true, .why = why};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(tg_sim_score_print_text(sc, &res, &ctx, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "false alerts by minute of their start (UTC, busiest first): "
                                 "08:05 12, 08:02 2\n"));
    free(text);

    f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(tg_sim_score_print_json(sc, &res, &ctx, f), 0);
    fclose(f);
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    json_t *mins = json_object_get(doc, "false_by_minute");
    assert_int_equal(json_array_size(mins), 2);
    json_t *first = json_array_get(mins, 0); /* time order */
    assert_int_equal(json_integer_value(json_object_get(first, "minute_start_ts")), T0 + S(120));
    assert_int_equal(json_integer_value(json_object_get(first, "false_alerts")), 2);
    json_decref(doc);
    free(text);
    tg_sim_score_destroy(sc);
}

static void alert_json_decoding(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    const char *open = "{\"device\":\"sim-00001\",\"metric\":\"temperature_c\",\"kind\":\"level\","
                       "\"detectors\":[{\"name\":\"hampel\",\"score\":0.99}],\"value\":31.5,"
                       "\"baseline\":21.0,\"start_ts\":1763712100000,\"end_ts\":1763712100000,"
                       "\"state\":\"open\"}";
    const char *close = "{\"device\":\"sim-00001\",\"metric\":\"temperature_c\",\"kind\":\"level\","
                        "\"start_ts\":1763712100000,\"end_ts\":1763712130000,"
                        "\"state\":\"close\"}";
    assert_int_equal(tg_sim_score_add_alert_json(sc, open, strlen(open)), 0);
    assert_int_equal(tg_sim_score_add_alert_json(sc, close, strlen(close)), 0);
    static const char *const bad[] = {
        "[]",
        "{\"metric\":\"m\",\"start_ts\":1,\"state\":\"open\"}",
        "{\"device\":\"d\",\"metric\":\"m\",\"start_ts\":\"1\",\"state\":\"open\"}",
        "{\"device\":\"d\",\"metric\":\"m\",\"start_ts\":1,\"state\":\"opened\"}",
        "{\"device\":\"d\",\"metric\":\"m\",\"start_ts\":1}",
        "{\"device\":\"d\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tg_sim_score_add_alert_json(sc, bad[i], strlen(bad[i])), 1);
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.records, 2 + sizeof bad / sizeof bad[0]);
    assert_int_equal(res.undecodable, sizeof bad / sizeof bad[0]);
    /* Without ids, open and close share the derived id: one incident. */
    assert_int_equal(res.incidents, 1);
    assert_int_equal(res.all.detected, 1);
    tg_sim_score_destroy(sc);
}

static void since_leaves_out_earlier_alerts(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    tg_sim_score_set_since(sc, T0);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    incident(sc, "sim-00001", "temperature_c", "level", S(100));
    incident(sc, "sim-00001", "temperature_c", "level", -S(3600)); /* an earlier run's */
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.before_since, 3);
    assert_int_equal(res.incidents, 1);
    assert_int_equal(res.all.false_alerts, 0);
    tg_sim_score_destroy(sc);
}

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/test_score_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static void labels_file(void **state)
{
    (void)state;
    char err[256];
    char *path = write_temp(
        "{\"device\":\"sim-00001\",\"metric\":\"temperature_c\",\"kind\":\"spike\","
        "\"start_ts\":1763712100000,\"end_ts\":1763712100000}\n"
        "\n"
        "{\"device\":\"sim-00002\",\"metric\":\"*\",\"kind\":\"silence\","
        "\"start_ts\":1763712100000,\"end_ts\":1763712160000}\n");
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    assert_int_equal(tg_sim_score_load_labels(sc, path, err, sizeof err), 2);
    struct tg_sim_score_result res = finish(sc);
    assert_int_equal(res.kind[TG_ANOMALY_SPIKE].labels, 1);
    assert_int_equal(res.kind[TG_ANOMALY_SILENCE].labels, 1);
    tg_sim_score_destroy(sc);
    unlink(path);
    free(path);

    /* An unknown kind on line 2: path:line: what. */
    path = write_temp("{\"device\":\"sim-00001\",\"metric\":\"m\",\"kind\":\"spike\","
                      "\"start_ts\":1,\"end_ts\":1}\n"
                      "{\"device\":\"sim-00001\",\"metric\":\"m\",\"kind\":\"wobble\","
                      "\"start_ts\":1,\"end_ts\":1}\n");
    sc = tg_sim_score_new(SLACK);
    assert_int_equal(tg_sim_score_load_labels(sc, path, err, sizeof err), -1);
    char want[128];
    snprintf(want, sizeof want, "%s:2: kind", path);
    assert_non_null(strstr(err, want));
    tg_sim_score_destroy(sc);
    unlink(path);
    free(path);

    path = write_temp("{\"device\":\"sim-00001\",\"metric\":\"m\",\"kind\":\"spike\"}\n");
    sc = tg_sim_score_new(SLACK);
    assert_int_equal(tg_sim_score_load_labels(sc, path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:1:", path);
    assert_non_null(strstr(err, want));
    tg_sim_score_destroy(sc);
    unlink(path);
    free(path);

    sc = tg_sim_score_new(SLACK);
    assert_int_equal(tg_sim_score_load_labels(sc, "/nonexistent/labels", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/labels"));
    tg_sim_score_destroy(sc);
}

static void reports_show_undefined_ratios_as_such(void **state)
{
    (void)state;
    struct tg_sim_score *sc = tg_sim_score_new(SLACK);
    label(sc, "sim-00001", "temperature_c", TG_ANOMALY_SPIKE, S(100), S(100));
    incident(sc, "sim-00001", "temperature_c", "level", S(100));
    incident(sc, "sim-00002", "temperature_c", "level", S(100));
    tg_sim_score_set_exposure(sc, 2, 600);
    struct tg_sim_score_result res = finish(sc);
    struct tg_sim_score_floors fl = {0.9, NAN, NAN};
    char why[256];
    bool pass = tg_sim_score_verdict(&res, &fl, why, sizeof why);
    struct tg_sim_score_context ctx = {.topic = "telemetry.anomalies", .labels_path = "l",
                                       .partitions = 6, .slack_ms = SLACK, .devices = 2,
                                       .duration_s = 600, .floors = &fl, .pass = pass,
                                       .why = why};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(tg_sim_score_print_text(sc, &res, &ctx, f), 0);
    fclose(f);
    /* spike: 1 label, 1 detected, 1 false; stuck has nothing: dashes. */
    assert_non_null(strstr(text, "spike              1         1   1.000      1      0.500"));
    assert_non_null(strstr(text, "stuck              0         0       -      0          -      -"));
    assert_non_null(strstr(text, "verdict: PASS\n"));
    free(text);

    /* The same without any floor: PASS then says so, since it judged nothing. */
    struct tg_sim_score_floors none = {NAN, NAN, NAN};
    assert_true(tg_sim_score_verdict(&res, &none, why, sizeof why));
    ctx.floors = &none;
    f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(tg_sim_score_print_text(sc, &res, &ctx, f), 0);
    fclose(f);
    assert_non_null(strstr(text, "verdict: PASS (no floor given"));
    free(text);
    ctx.floors = &fl;

    f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(tg_sim_score_print_json(sc, &res, &ctx, f), 0);
    fclose(f);
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    json_t *stuck = json_object_get(json_object_get(doc, "kinds"), "stuck");
    assert_true(json_is_null(json_object_get(stuck, "recall")));
    json_t *spike = json_object_get(json_object_get(doc, "kinds"), "spike");
    assert_near(json_real_value(json_object_get(spike, "precision")), 0.5, 1e-9);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "all"),
                                                        "false_alerts")),
                     1);
    assert_true(json_is_true(json_object_get(doc, "pass")));
    json_t *lvl = json_object_get(json_object_get(doc, "alert_kinds"), "level");
    assert_int_equal(json_integer_value(json_object_get(lvl, "incidents")), 2);
    json_decref(doc);
    free(text);
    tg_sim_score_destroy(sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_missed_label_lowers_recall_only),
        cmocka_unit_test(a_false_alert_lowers_precision_of_its_kind),
        cmocka_unit_test(a_late_detection_within_slack_counts_with_its_delay),
        cmocka_unit_test(two_incidents_for_one_label_count_once),
        cmocka_unit_test(updates_and_close_of_one_incident_count_once),
        cmocka_unit_test(an_incident_opened_twice_is_reported),
        cmocka_unit_test(silence_matches_silence_alerts_on_any_metric),
        cmocka_unit_test(a_silence_never_closed_is_the_end_of_the_run),
        cmocka_unit_test(an_incident_matches_the_nearest_label),
        cmocka_unit_test(delay_percentiles_by_nearest_rank),
        cmocka_unit_test(nothing_measured_never_passes),
        cmocka_unit_test(floors_say_which_failed),
        cmocka_unit_test(details_name_the_missed_and_the_false),
        cmocka_unit_test(false_alerts_by_minute_show_a_burst),
        cmocka_unit_test(alert_json_decoding),
        cmocka_unit_test(since_leaves_out_earlier_alerts),
        cmocka_unit_test(labels_file),
        cmocka_unit_test(reports_show_undefined_ratios_as_such),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
