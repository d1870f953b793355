/*
 * score_report.c - the report of `tidegate-sim score` (score.h), as a table or as JSON.
 * An undefined ratio (no labels of a kind, no detection and no false alert) prints as "-"
 * in the table and null in JSON, so that no reader takes it for a perfect score.
 */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "score.h"

static void fmt_ratio(char *buf, size_t size, double v)
{
    if (isnan(v))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.3f", v);
}

static void fmt_delay(char *buf, size_t size, bool has, int64_t ms)
{
    if (!has)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.1f s", (double)ms / 1000.0);
}

static void print_row(FILE *out, const char *name, const struct tg_sim_score_kind *k)
{
    char rec[16], prec[16], f1[16], p50[32], p90[32];
    fmt_ratio(rec, sizeof rec, k->recall);
    fmt_ratio(prec, sizeof prec, k->precision);
    fmt_ratio(f1, sizeof f1, k->f1);
    fmt_delay(p50, sizeof p50, k->has_delay, k->delay_p50_ms);
    fmt_delay(p90, sizeof p90, k->has_delay, k->delay_p90_ms);
    fprintf(out, "%-12s %7" PRIu64 " %9" PRIu64 " %7s %6" PRIu64 " %10s %6s %10s %10s\n", name,
            k->labels, k->detected, rec, k->false_alerts, prec, f1, p50, p90);
}

struct kind_text {
    FILE *out;
    bool first;
};

static void alert_kind_text(void *ud, const char *name, uint64_t incidents, uint64_t matched,
                            uint64_t false_alerts)
{
    struct kind_text *kt = ud;
    fprintf(kt->out, "%s%s %" PRIu64 " (%" PRIu64 " matched, %" PRIu64 " false)",
            kt->first ? "" : ", ", name, incidents, matched, false_alerts);
    kt->first = false;
}

/* ms since the epoch as UTC "HH:MM:SS.mmm", which is what one compares with logs. */
static void fmt_time(char *buf, size_t size, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms < 0 || !gmtime_r(&t, &tm)) {
        snprintf(buf, size, "%" PRId64, ms);
        return;
    }
    snprintf(buf, size, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ms % 1000));
}

/* Where t lies relative to [start, end], e.g. "45.0 s after its end". */
static void fmt_offset(char *buf, size_t size, int64_t t, int64_t start, int64_t end)
{
    if (t < start)
        snprintf(buf, size, "%.1f s before its start", (double)(start - t) / 1000.0);
    else if (t > end)
        snprintf(buf, size, "%.1f s after its end", (double)(t - end) / 1000.0);
    else
        snprintf(buf, size, "%.1f s into it", (double)(t - start) / 1000.0);
}

struct list_text {
    FILE *out;
    unsigned left;
};

static void missed_text(void *ud, const char *device, const char *metric,
                        enum tg_anomaly_kind kind, int64_t start_ts, int64_t end_ts)
{
    struct list_text *lt = ud;
    if (!lt->left)
        return;
    lt->left--;
    char a[32], b[32];
    fmt_time(a, sizeof a, start_ts);
    fmt_time(b, sizeof b, end_ts);
    fprintf(lt->out, "  %s %s %s %s..%s (%.1f s)\n", device, metric, tg_anomaly_kind_name(kind),
            a, b, (double)(end_ts - start_ts) / 1000.0);
}

static void false_text(void *ud, const struct tg_sim_score_false *f)
{
    struct list_text *lt = ud;
    if (!lt->left)
        return;
    lt->left--;
    char a[32], b[32], c[32], off[64];
    fmt_time(a, sizeof a, f->start_ts);
    fprintf(lt->out, "  %s %s %s at %s", f->device, f->metric, f->alert_kind, a);
    if (f->closed)
        fprintf(lt->out, " to +%.1f s", (double)(f->end_ts - f->start_ts) / 1000.0);
    else
        fprintf(lt->out, " (never closed)");
    if (f->has_near) {
        fmt_time(b, sizeof b, f->near_start_ts);
        fmt_time(c, sizeof c, f->near_end_ts);
        fmt_offset(off, sizeof off, f->start_ts, f->near_start_ts, f->near_end_ts);
        fprintf(lt->out, "; nearest label: %s %s %s..%s, %s", f->near_metric,
                tg_anomaly_kind_name(f->near_kind), b, c, off);
    } else {
        fprintf(lt->out, "; no label on this device");
    }
    fprintf(lt->out, "\n");
}

/* False alerts counted per minute of their start: a burst (every series of every device at
 * once, say) is a different problem from a steady trickle. */
struct minute_count {
    int64_t minute; /* start_ts / 60000 */
    uint64_t n;
};

struct minutes {
    struct minute_count *v;
    size_t n, cap;
    bool oom;
};

static void minute_add(void *ud, const struct tg_sim_score_false *f)
{
    struct minutes *m = ud;
    int64_t minute = f->start_ts >= 0 ? f->start_ts / 60000 : -1;
    for (size_t i = m->n; i-- > 0;)
        if (m->v[i].minute == minute) {
            m->v[i].n++;
            return;
        }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct minute_count *v = realloc(m->v, cap * sizeof *v);
        if (!v) {
            m->oom = true;
            return;
        }
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n++] = (struct minute_count){minute, 1};
}

static int by_count(const void *a, const void *b)
{
    const struct minute_count *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return (x->minute > y->minute) - (x->minute < y->minute);
}

static int by_minute(const void *a, const void *b)
{
    const struct minute_count *x = a, *y = b;
    return (x->minute > y->minute) - (x->minute < y->minute);
}

/* Fills m with the false alerts per minute, in time order. Returns 0 or -1 (out of memory). */
static int false_minutes(const struct tg_sim_score *sc, struct minutes *m)
{
    tg_sim_score_each_false(sc, minute_add, m);
    if (m->oom)
        return -1;
    if (m->n)
        qsort(m->v, m->n, sizeof *m->v, by_minute);
    return 0;
}

int tg_sim_score_print_text(const struct tg_sim_score *sc, const struct tg_sim_score_result *res,
                            const struct tg_sim_score_context *ctx, FILE *out)
{
    fprintf(out,
            "tidegate-sim score: %" PRIu64 " alert records, %" PRIu64
            " incidents from %s (%d partitions); %" PRIu64 " labels from %s\n",
            res->records, res->incidents, ctx->topic, ctx->partitions, res->all.labels,
            ctx->labels_path);
    fprintf(out,
            "match: same device and metric (a silence label: a silence alert on any metric), "
            "incident start within the label's interval +-%.1f s\n\n",
            (double)ctx->slack_ms / 1000.0);
    fprintf(out, "%-12s %7s %9s %7s %6s %10s %6s %10s %10s\n", "kind", "labels", "detected",
            "recall", "false", "precision", "F1", "delay p50", "delay p90");
    for (int k = 0; k < TG_ANOMALY_KINDS; k++)
        print_row(out, tg_anomaly_kind_name((enum tg_anomaly_kind)k), &res->kind[k]);
    print_row(out, "all", &res->all);
    fprintf(out, "\nfalse alerts (incidents matching no label): %" PRIu64, res->all.false_alerts);
    if (res->false_unattributed)
        fprintf(out, " (%" PRIu64 " of an alert kind that matched no label: in \"all\" only)",
                res->false_unattributed);
    fprintf(out, "\n");
    if (res->silent_at_end)
        fprintf(out,
                "not counted as false: %" PRIu64 " silence incidents never closed (devices that "
                "stopped sending for good, e.g. at the end of the run)\n",
                res->silent_at_end);
    if (res->has_exposure && ctx->devices)
        fprintf(out,
                "exposure: %.1f device-hours (%" PRIu64 " devices x %.0f s), %.1f clean; "
                "false alerts per device-hour: %.4f\n",
                res->device_hours, ctx->devices, ctx->duration_s, res->clean_device_hours,
                res->false_per_device_hour);
    else
        fprintf(out, "exposure: unknown (give --devices and --duration-s for false alerts per "
                     "device-hour)\n");
    fprintf(out,
            "incidents: %" PRIu64 " matched, %" PRIu64 " extra on labels already detected, %" PRIu64
            " opened more than once\n",
            res->matched_incidents, res->extra_incidents, res->reopened);
    if (res->incidents) {
        struct kind_text kt = {out, true};
        fprintf(out, "by alert kind: ");
        tg_sim_score_each_alert_kind(sc, alert_kind_text, &kt);
        fprintf(out, "\n");
    }
    if (res->all.false_alerts) {
        struct minutes m = {0};
        if (false_minutes(sc, &m) != 0) {
            free(m.v);
            return -1;
        }
        qsort(m.v, m.n, sizeof *m.v, by_count);
        fprintf(out, "false alerts by minute of their start (UTC, busiest first):");
        for (size_t i = 0; i < m.n && i < 5; i++) {
            char t[32];
            fmt_time(t, sizeof t, m.v[i].minute * 60000);
            t[5] = '\0'; /* HH:MM */
            fprintf(out, " %s %" PRIu64 "%s", t, m.v[i].n, i + 1 < m.n && i < 4 ? "," : "");
        }
        fprintf(out, "%s\n", m.n > 5 ? ", ..." : "");
        free(m.v);
    }
    uint64_t missed = res->all.labels - res->all.detected;
    if (ctx->details && missed) {
        fprintf(out, "missed labels (%s%" PRIu64 ", UTC):\n",
                missed > ctx->details ? "the first of " : "", missed);
        struct list_text lt = {out, ctx->details};
        tg_sim_score_each_missed(sc, missed_text, &lt);
    }
    if (ctx->details && res->all.false_alerts) {
        fprintf(out, "false alerts (%s%" PRIu64 ", UTC):\n",
                res->all.false_alerts > ctx->details ? "the first of " : "",
                res->all.false_alerts);
        struct list_text lt = {out, ctx->details};
        tg_sim_score_each_false(sc, false_text, &lt);
    }
    if (res->before_since)
        fprintf(out, "left out: %" PRIu64 " records of alerts that started before --since-ms\n",
                res->before_since);
    if (res->undecodable)
        fprintf(out, "undecodable records: %" PRIu64 " (not alerts of the expected form)\n",
                res->undecodable);
    /* Without a floor, PASS says only that something was measured: a run whose recall is
     * 0.3 passes too. scripts/demo prints this report right under the audit's
     * "RESULT: PASS", where a bare PASS would read as a judgement of the detection. */
    const struct tg_sim_score_floors *fl = ctx->floors;
    bool judged = fl && (!isnan(fl->min_recall) || !isnan(fl->min_f1) ||
                         !isnan(fl->max_false_per_device_hour));
    fprintf(out, "verdict: %s%s%s%s\n", ctx->pass ? "PASS" : "FAIL",
            ctx->why && *ctx->why ? ": " : "", ctx->why ? ctx->why : "",
            ctx->pass && !judged ? " (no floor given, so not a judgement of the figures: "
                                   "--min-recall, --min-f1, --max-false-per-device-hour)"
                                 : "");
    return ferror(out) ? -1 : 0;
}

/* --- JSON ------------------------------------------------------------------------------------ */

static json_t *jratio(double v)
{
    return isnan(v) ? json_null() : json_real(v);
}

static json_t *kind_json(const struct tg_sim_score_kind *k)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:o}", "labels", (json_int_t)k->labels,
                     "detected", (json_int_t)k->detected, "false_alerts",
                     (json_int_t)k->false_alerts, "incidents", (json_int_t)k->incidents,
                     "recall", jratio(k->recall), "precision", jratio(k->precision), "f1",
                     jratio(k->f1), "delay_p50_ms",
                     k->has_delay ? json_integer(k->delay_p50_ms) : json_null(), "delay_p90_ms",
                     k->has_delay ? json_integer(k->delay_p90_ms) : json_null());
}

static void alert_kind_json(void *ud, const char *name, uint64_t incidents, uint64_t matched,
                            uint64_t false_alerts)
{
    json_t *obj = ud;
    json_object_set_new(obj, name,
                        json_pack("{s:I,s:I,s:I}", "incidents", (json_int_t)incidents, "matched",
                                  (json_int_t)matched, "false_alerts", (json_int_t)false_alerts));
}

struct list_json {
    json_t *arr;
    unsigned left;
};

static void missed_json(void *ud, const char *device, const char *metric,
                        enum tg_anomaly_kind kind, int64_t start_ts, int64_t end_ts)
{
    struct list_json *lj = ud;
    if (!lj->left)
        return;
    lj->left--;
    json_array_append_new(lj->arr, json_pack("{s:s,s:s,s:s,s:I,s:I}", "device", device,
                                             "metric", metric, "kind",
                                             tg_anomaly_kind_name(kind), "start_ts",
                                             (json_int_t)start_ts, "end_ts", (json_int_t)end_ts));
}

static void false_json(void *ud, const struct tg_sim_score_false *f)
{
    struct list_json *lj = ud;
    if (!lj->left)
        return;
    lj->left--;
    json_t *near = f->has_near
                       ? json_pack("{s:s,s:s,s:I,s:I}", "metric", f->near_metric, "kind",
                                   tg_anomaly_kind_name(f->near_kind), "start_ts",
                                   (json_int_t)f->near_start_ts, "end_ts",
                                   (json_int_t)f->near_end_ts)
                       : json_null();
    json_array_append_new(lj->arr, json_pack("{s:s,s:s,s:s,s:I,s:I,s:b,s:o}", "device",
                                             f->device, "metric", f->metric, "kind",
                                             f->alert_kind, "start_ts", (json_int_t)f->start_ts,
                                             "end_ts", (json_int_t)f->end_ts, "closed",
                                             f->closed, "nearest_label", near));
}

static json_t *floor_json(double v)
{
    return isnan(v) ? json_null() : json_real(v);
}

int tg_sim_score_print_json(const struct tg_sim_score *sc, const struct tg_sim_score_result *res,
                            const struct tg_sim_score_context *ctx, FILE *out)
{
    int rc = -1;
    json_t *kinds = json_object(), *akinds = json_object();
    json_t *missed = json_array(), *falses = json_array();
    json_t *doc = NULL;
    if (!kinds || !akinds || !missed || !falses)
        goto cleanup;
    json_t *by_minute_j = json_array();
    if (!by_minute_j)
        goto cleanup;
    struct minutes m = {0};
    if (false_minutes(sc, &m) != 0) {
        free(m.v);
        json_decref(by_minute_j);
        goto cleanup;
    }
    for (size_t i = 0; i < m.n; i++)
        json_array_append_new(by_minute_j, json_pack("{s:I,s:I}", "minute_start_ts",
                                                     (json_int_t)(m.v[i].minute * 60000),
                                                     "false_alerts", (json_int_t)m.v[i].n));
    free(m.v);
    struct list_json lm = {missed, ctx->details}, lf = {falses, ctx->details};
    tg_sim_score_each_missed(sc, missed_json, &lm);
    tg_sim_score_each_false(sc, false_json, &lf);
    for (int k = 0; k < TG_ANOMALY_KINDS; k++)
        json_object_set_new(kinds, tg_anomaly_kind_name((enum tg_anomaly_kind)k),
                            kind_json(&res->kind[k]));
    tg_sim_score_each_alert_kind(sc, alert_kind_json, akinds);
    const struct tg_sim_score_floors none = {NAN, NAN, NAN};
    const struct tg_sim_score_floors *fl = ctx->floors ? ctx->floors : &none;
    doc = json_pack(
        "{s:s,s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:O,s:O,s:o,s:{s:o,s:o,s:o},"
        "s:{s:I,s:f,s:o,s:o,s:o},s:b,s:s}",
        "topic", ctx->topic, "labels_path", ctx->labels_path, "partitions", ctx->partitions,
        "slack_ms", (json_int_t)ctx->slack_ms, "records", (json_int_t)res->records,
        "undecodable", (json_int_t)res->undecodable, "before_since",
        (json_int_t)res->before_since, "incidents", (json_int_t)res->incidents,
        "matched_incidents", (json_int_t)res->matched_incidents, "extra_incidents",
        (json_int_t)res->extra_incidents, "reopened", (json_int_t)res->reopened, "silent_at_end", (json_int_t)res->silent_at_end,
        "false_unattributed", (json_int_t)res->false_unattributed, "kinds", kinds,
        "alert_kinds", akinds, "all", kind_json(&res->all), "floors", "min_recall",
        floor_json(fl->min_recall), "min_f1", floor_json(fl->min_f1),
        "max_false_per_device_hour", floor_json(fl->max_false_per_device_hour), "exposure",
        "devices", (json_int_t)ctx->devices, "duration_s", ctx->duration_s, "device_hours",
        jratio(res->device_hours), "clean_device_hours", jratio(res->clean_device_hours),
        "false_per_device_hour", jratio(res->false_per_device_hour), "pass", ctx->pass, "why",
        ctx->why ? ctx->why : "");
    if (!doc) {
        json_decref(by_minute_j);
        goto cleanup;
    }
    /* set_new takes by_minute_j, also when it fails. */
    if (json_object_set_new(doc, "false_by_minute", by_minute_j) != 0 ||
        json_object_set(doc, "missed", missed) != 0 ||
        json_object_set(doc, "false", falses) != 0)
        goto cleanup;
    if (json_dumpf(doc, out, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
        goto cleanup;
    fputc('\n', out);
    rc = ferror(out) ? -1 : 0;
cleanup:
    json_decref(doc);
    json_decref(kinds);
    json_decref(akinds);
    json_decref(missed);
    json_decref(falses);
    return rc;
}
