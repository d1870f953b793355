/*
 * score.c - the comparison of `tidegate-sim score` (score.h): alert records grouped into
 * incidents, incidents matched to labels, the figures per kind, the verdict.
 *
 * Records are kept as they come and grouped at the end (sorted by id), so records of one
 * incident may arrive in any order and from any partition. Labels are sorted by device and
 * start, and each incident looks only at its own device's labels (a binary search), so a run
 * of 1,000 devices with a few hundred labels and thousands of alerts scores in milliseconds.
 */
#include "score.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define UNKNOWN_ALERT_KIND "unknown"

struct label {
    char *device;
    char *metric;
    enum tg_anomaly_kind kind;
    int64_t start_ts, end_ts;
    /* Set by tg_sim_score_finish(). */
    bool detected;
    int64_t first_start; /* earliest start of a matching incident */
};

struct record {
    char *id;
    char *device;
    char *metric;
    size_t akind;   /* index in sc->akinds */
    bool open, close;
    int64_t start_ts, end_ts;
    size_t arrival; /* order of arrival: the tie-break that keeps grouping stable */
};

struct alert_kind {
    char *name;
    uint64_t incidents, matched, false_alerts;
    uint64_t per_label_kind[TG_ANOMALY_KINDS]; /* matched incidents by the label's kind */
};

struct false_incident {
    size_t head;  /* index of its identifying record in the sorted records */
    int64_t start, end;
    bool closed;
};

struct tg_sim_score {
    int64_t slack_ms;
    struct false_incident *falses; /* set by tg_sim_score_finish() */
    size_t n_falses, cap_falses;
    struct label *labels;
    size_t n_labels, cap_labels;
    struct record *records;
    size_t n_records, cap_records;
    struct alert_kind *akinds;
    size_t n_akinds, cap_akinds;
    uint64_t undecodable;
    bool has_since;
    int64_t since_ms;
    uint64_t before_since;
    bool has_exposure;
    uint64_t devices;
    double duration_s;
    bool finished;
};

static void *grow(void *array, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return array;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(array, n * elem);
    if (p)
        *cap = n;
    return p;
}

struct tg_sim_score *tg_sim_score_new(int64_t slack_ms)
{
    struct tg_sim_score *sc = calloc(1, sizeof *sc);
    if (sc)
        sc->slack_ms = slack_ms < 0 ? 0 : slack_ms;
    return sc;
}

void tg_sim_score_destroy(struct tg_sim_score *sc)
{
    if (!sc)
        return;
    for (size_t i = 0; i < sc->n_labels; i++) {
        free(sc->labels[i].device);
        free(sc->labels[i].metric);
    }
    for (size_t i = 0; i < sc->n_records; i++) {
        free(sc->records[i].id);
        free(sc->records[i].device);
        free(sc->records[i].metric);
    }
    for (size_t i = 0; i < sc->n_akinds; i++)
        free(sc->akinds[i].name);
    free(sc->labels);
    free(sc->falses);
    free(sc->records);
    free(sc->akinds);
    free(sc);
}

int tg_sim_score_add_label(struct tg_sim_score *sc, const char *device, const char *metric,
                           enum tg_anomaly_kind kind, int64_t start_ts, int64_t end_ts)
{
    struct label *l = grow(sc->labels, &sc->cap_labels, sc->n_labels + 1, sizeof *l);
    if (!l)
        return -1;
    sc->labels = l;
    char *dev = strdup(device), *met = strdup(metric);
    if (!dev || !met) {
        free(dev);
        free(met);
        return -1;
    }
    sc->labels[sc->n_labels++] = (struct label){
        .device = dev,
        .metric = met,
        .kind = kind,
        .start_ts = start_ts,
        .end_ts = end_ts < start_ts ? start_ts : end_ts,
    };
    return 0;
}

static bool kind_from_name(const char *name, enum tg_anomaly_kind *out)
{
    for (int k = 0; k < TG_ANOMALY_KINDS; k++)
        if (strcmp(name, tg_anomaly_kind_name((enum tg_anomaly_kind)k)) == 0) {
            *out = (enum tg_anomaly_kind)k;
            return true;
        }
    return false;
}

long tg_sim_score_load_labels(struct tg_sim_score *sc, const char *path, char *err,
                              size_t errlen)
{
    long n = -1, lineno = 0;
    char *line = NULL;
    size_t cap = 0;
    json_t *doc = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    long count = 0;
    ssize_t len;
    errno = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        json_error_t jerr;
        doc = json_loadb(line, (size_t)len, 0, &jerr);
        if (!doc) {
            snprintf(err, errlen, "%s:%ld: not JSON: %s", path, lineno, jerr.text);
            goto cleanup;
        }
        json_t *dev = json_object_get(doc, "device"), *met = json_object_get(doc, "metric");
        json_t *kind = json_object_get(doc, "kind");
        json_t *start = json_object_get(doc, "start_ts"), *end = json_object_get(doc, "end_ts");
        if (!json_is_string(dev) || !json_is_string(met) || !json_is_string(kind) ||
            !json_is_integer(start) || !json_is_integer(end)) {
            snprintf(err, errlen,
                     "%s:%ld: expected {\"device\",\"metric\",\"kind\" strings, \"start_ts\","
                     "\"end_ts\" integers}",
                     path, lineno);
            goto cleanup;
        }
        enum tg_anomaly_kind k;
        if (!kind_from_name(json_string_value(kind), &k)) {
            snprintf(err, errlen, "%s:%ld: kind: unknown anomaly kind \"%s\"", path, lineno,
                     json_string_value(kind));
            goto cleanup;
        }
        if (tg_sim_score_add_label(sc, json_string_value(dev), json_string_value(met), k,
                                   json_integer_value(start), json_integer_value(end)) != 0) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto cleanup;
        }
        json_decref(doc);
        doc = NULL;
        count++;
        errno = 0;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno ? errno : EIO));
        goto cleanup;
    }
    n = count;
cleanup:
    json_decref(doc);
    free(line);
    fclose(f);
    return n;
}

static long alert_kind_index(struct tg_sim_score *sc, const char *name)
{
    if (!name || !*name)
        name = UNKNOWN_ALERT_KIND;
    for (size_t i = 0; i < sc->n_akinds; i++)
        if (strcmp(sc->akinds[i].name, name) == 0)
            return (long)i;
    struct alert_kind *a = grow(sc->akinds, &sc->cap_akinds, sc->n_akinds + 1, sizeof *a);
    if (!a)
        return -1;
    sc->akinds = a;
    char *copy = strdup(name);
    if (!copy)
        return -1;
    sc->akinds[sc->n_akinds] = (struct alert_kind){.name = copy};
    return (long)sc->n_akinds++;
}

int tg_sim_score_add_alert(struct tg_sim_score *sc, const struct tg_sim_score_alert *al)
{
    if (!al->device || !*al->device || !al->metric || !*al->metric || !al->state) {
        sc->undecodable++;
        return 1;
    }
    bool open = strcmp(al->state, "open") == 0;
    if (!open && strcmp(al->state, "update") != 0 && strcmp(al->state, "close") != 0) {
        sc->undecodable++;
        return 1;
    }
    if (sc->has_since && al->start_ts < sc->since_ms) {
        sc->before_since++;
        return 0;
    }
    long ak = alert_kind_index(sc, al->kind);
    if (ak < 0)
        return -1;
    struct record *r = grow(sc->records, &sc->cap_records, sc->n_records + 1, sizeof *r);
    if (!r)
        return -1;
    sc->records = r;
    char *id;
    if (al->id && *al->id) {
        id = strdup(al->id);
    } else {
        /* The worker's id scheme (worker/engine.h): device/metric/detector/start. */
        const char *kind = sc->akinds[ak].name;
        size_t n = strlen(al->device) + strlen(al->metric) + strlen(kind) + 32;
        id = malloc(n);
        if (id)
            snprintf(id, n, "%s/%s/%s/%" PRId64, al->device, al->metric, kind, al->start_ts);
    }
    char *dev = strdup(al->device), *met = strdup(al->metric);
    if (!id || !dev || !met) {
        free(id);
        free(dev);
        free(met);
        return -1;
    }
    sc->records[sc->n_records] = (struct record){
        .id = id,
        .device = dev,
        .metric = met,
        .akind = (size_t)ak,
        .open = open,
        .close = strcmp(al->state, "close") == 0,
        .start_ts = al->start_ts,
        .end_ts = al->end_ts < al->start_ts ? al->start_ts : al->end_ts,
        .arrival = sc->n_records,
    };
    sc->n_records++;
    return 0;
}

static const char *opt_string(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int tg_sim_score_add_alert_json(struct tg_sim_score *sc, const void *value, size_t len)
{
    json_t *doc = json_loadb(value, len, 0, NULL);
    if (!doc || !json_is_object(doc)) {
        json_decref(doc);
        sc->undecodable++;
        return 1;
    }
    json_t *start = json_object_get(doc, "start_ts"), *end = json_object_get(doc, "end_ts");
    if (!json_is_integer(start)) {
        json_decref(doc);
        sc->undecodable++;
        return 1;
    }
    struct tg_sim_score_alert al = {
        .id = opt_string(doc, "id"),
        .device = opt_string(doc, "device"),
        .metric = opt_string(doc, "metric"),
        .kind = opt_string(doc, "kind"),
        .state = opt_string(doc, "state"),
        .start_ts = json_integer_value(start),
        .end_ts = json_is_integer(end) ? json_integer_value(end) : json_integer_value(start),
    };
    int rc = tg_sim_score_add_alert(sc, &al);
    json_decref(doc);
    return rc;
}

void tg_sim_score_undecodable(struct tg_sim_score *sc)
{
    sc->undecodable++;
}

void tg_sim_score_set_since(struct tg_sim_score *sc, int64_t since_ms)
{
    sc->has_since = true;
    sc->since_ms = since_ms;
}

void tg_sim_score_set_exposure(struct tg_sim_score *sc, uint64_t devices, double duration_s)
{
    sc->has_exposure = true;
    sc->devices = devices;
    sc->duration_s = duration_s;
}

/* --- matching ------------------------------------------------------------------------------ */

static int cmp_label(const void *a, const void *b)
{
    const struct label *x = a, *y = b;
    int c = strcmp(x->device, y->device);
    if (c)
        return c;
    return (x->start_ts > y->start_ts) - (x->start_ts < y->start_ts);
}

static int cmp_record(const void *a, const void *b)
{
    const struct record *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c)
        return c;
    return (x->arrival > y->arrival) - (x->arrival < y->arrival);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* First label of device in the sorted labels, or n_labels. */
static size_t first_label_of(const struct tg_sim_score *sc, const char *device)
{
    size_t lo = 0, hi = sc->n_labels;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(sc->labels[mid].device, device) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool is_silence_incident(const struct record *head, const struct tg_sim_score *sc)
{
    return strcmp(sc->akinds[head->akind].name, "silence") == 0 ||
           strcmp(head->metric, "*") == 0;
}

/* The label an incident (device, metric, silence or not, start) matches, or -1. */
static long match_incident(const struct tg_sim_score *sc, const struct record *head,
                           int64_t start)
{
    bool silence = is_silence_incident(head, sc);
    long best = -1;
    int64_t best_dist = INT64_MAX;
    for (size_t i = first_label_of(sc, head->device);
         i < sc->n_labels && strcmp(sc->labels[i].device, head->device) == 0; i++) {
        const struct label *l = &sc->labels[i];
        if (silence != (l->kind == TG_ANOMALY_SILENCE))
            continue;
        if (!silence && strcmp(l->metric, head->metric) != 0)
            continue;
        if (start < l->start_ts - sc->slack_ms || start > l->end_ts + sc->slack_ms)
            continue;
        int64_t dist = start < l->start_ts ? l->start_ts - start
                       : start > l->end_ts ? start - l->end_ts
                                           : 0;
        if (dist < best_dist) { /* labels are in start order: ties keep the earlier */
            best_dist = dist;
            best = (long)i;
        }
    }
    return best;
}

static int64_t nearest_rank(const int64_t *sorted, size_t n, double p)
{
    size_t rank = (size_t)ceil(p * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

static double ratio(uint64_t num, uint64_t den)
{
    return den ? (double)num / (double)den : NAN;
}

static void finish_kind(struct tg_sim_score_kind *k, int64_t *delays, size_t n_delays)
{
    k->recall = ratio(k->detected, k->labels);
    k->precision = ratio(k->detected, k->detected + k->false_alerts);
    /* 2TP / (2TP + FP + FN): the harmonic mean of the two where both exist, and 0 (not
     * undefined) for a kind with labels but no detection and no false alert. */
    uint64_t missed = k->labels - k->detected;
    k->f1 = ratio(2 * k->detected, 2 * k->detected + k->false_alerts + missed);
    k->has_delay = n_delays > 0;
    if (n_delays) {
        qsort(delays, n_delays, sizeof *delays, cmp_i64);
        k->delay_p50_ms = nearest_rank(delays, n_delays, 0.5);
        k->delay_p90_ms = nearest_rank(delays, n_delays, 0.9);
    }
}

int tg_sim_score_finish(struct tg_sim_score *sc, struct tg_sim_score_result *res)
{
    memset(res, 0, sizeof *res);
    int rc = -1;
    int64_t *delays = NULL;
    if (sc->finished)
        return -1;
    sc->finished = true;
    if (sc->n_labels)
        qsort(sc->labels, sc->n_labels, sizeof *sc->labels, cmp_label);
    if (sc->n_records)
        qsort(sc->records, sc->n_records, sizeof *sc->records, cmp_record);

    res->records = sc->n_records + sc->undecodable + sc->before_since;
    res->undecodable = sc->undecodable;
    res->before_since = sc->before_since;
    for (size_t i = 0; i < sc->n_records;) {
        /* One incident: records[i .. j). Its identity is its open record's, else its first. */
        size_t j = i;
        const struct record *head = NULL;
        int64_t start = INT64_MAX, end = INT64_MIN;
        unsigned opens = 0;
        bool closed = false;
        while (j < sc->n_records && strcmp(sc->records[j].id, sc->records[i].id) == 0) {
            const struct record *r = &sc->records[j];
            if (r->open) {
                opens++;
                if (!head)
                    head = r;
            }
            closed |= r->close;
            if (r->start_ts < start)
                start = r->start_ts;
            if (r->end_ts > end)
                end = r->end_ts;
            j++;
        }
        if (!head)
            head = &sc->records[i];
        res->incidents++;
        res->reopened += opens > 1;
        struct alert_kind *ak = &sc->akinds[head->akind];
        ak->incidents++;
        long m = match_incident(sc, head, start);
        if (m >= 0) {
            struct label *l = &sc->labels[m];
            if (!l->detected || start < l->first_start)
                l->first_start = start;
            l->detected = true;
            res->kind[l->kind].incidents++;
            res->matched_incidents++;
            ak->matched++;
            ak->per_label_kind[l->kind]++;
        } else if (!closed && is_silence_incident(head, sc)) {
            /* A silence that never ended: the device stopped sending and never came back,
             * which is what every device does when the run ends (a worker's sweep then
             * reports it). A live device's readings would have closed it. */
            res->silent_at_end++;
        } else {
            ak->false_alerts++;
            res->all.false_alerts++;
            struct false_incident *f =
                grow(sc->falses, &sc->cap_falses, sc->n_falses + 1, sizeof *f);
            if (!f)
                goto cleanup;
            sc->falses = f;
            sc->falses[sc->n_falses++] = (struct false_incident){
                .head = (size_t)(head - sc->records), .start = start, .end = end,
                .closed = closed};
        }
        i = j;
    }

    /* False incidents charged to the label kind their alert kind matched most often. */
    for (size_t a = 0; a < sc->n_akinds; a++) {
        const struct alert_kind *ak = &sc->akinds[a];
        if (!ak->false_alerts)
            continue;
        int best = -1;
        for (int k = 0; k < TG_ANOMALY_KINDS; k++)
            if (ak->per_label_kind[k] && (best < 0 || ak->per_label_kind[k] >
                                                          ak->per_label_kind[best]))
                best = k;
        if (best < 0)
            res->false_unattributed += ak->false_alerts;
        else
            res->kind[best].false_alerts += ak->false_alerts;
    }

    delays = malloc((sc->n_labels ? sc->n_labels : 1) * sizeof *delays);
    if (!delays)
        goto cleanup;
    double labelled_ms = 0;
    for (int k = 0; k < TG_ANOMALY_KINDS; k++) {
        size_t n = 0;
        for (size_t i = 0; i < sc->n_labels; i++) {
            const struct label *l = &sc->labels[i];
            if ((int)l->kind != k)
                continue;
            res->kind[k].labels++;
            labelled_ms += (double)(l->end_ts - l->start_ts) + 2.0 * (double)sc->slack_ms;
            if (l->detected) {
                res->kind[k].detected++;
                delays[n++] = l->first_start - l->start_ts;
            }
        }
        finish_kind(&res->kind[k], delays, n);
        res->all.labels += res->kind[k].labels;
        res->all.detected += res->kind[k].detected;
        res->all.incidents += res->kind[k].incidents;
    }
    size_t n = 0;
    for (size_t i = 0; i < sc->n_labels; i++)
        if (sc->labels[i].detected)
            delays[n++] = sc->labels[i].first_start - sc->labels[i].start_ts;
    finish_kind(&res->all, delays, n);
    res->extra_incidents = res->matched_incidents - res->all.detected;

    res->has_exposure = sc->has_exposure;
    res->device_hours = res->clean_device_hours = res->false_per_device_hour = NAN;
    if (sc->has_exposure) {
        res->device_hours = (double)sc->devices * sc->duration_s / 3600.0;
        res->clean_device_hours = res->device_hours - labelled_ms / 3600000.0;
        if (res->clean_device_hours < 0)
            res->clean_device_hours = 0;
        if (res->clean_device_hours > 0)
            res->false_per_device_hour =
                (double)res->all.false_alerts / res->clean_device_hours;
    }
    rc = 0;
cleanup:
    free(delays);
    return rc;
}

void tg_sim_score_each_alert_kind(const struct tg_sim_score *sc, tg_sim_score_alert_kind_fn fn,
                                  void *ud)
{
    for (size_t i = 0; i < sc->n_akinds; i++) {
        const struct alert_kind *ak = &sc->akinds[i];
        if (ak->incidents)
            fn(ud, ak->name, ak->incidents, ak->matched, ak->false_alerts);
    }
}

void tg_sim_score_each_missed(const struct tg_sim_score *sc, tg_sim_score_missed_fn fn, void *ud)
{
    for (size_t i = 0; i < sc->n_labels; i++) {
        const struct label *l = &sc->labels[i];
        if (!l->detected)
            fn(ud, l->device, l->metric, l->kind, l->start_ts, l->end_ts);
    }
}

void tg_sim_score_each_false(const struct tg_sim_score *sc, tg_sim_score_false_fn fn, void *ud)
{
    for (size_t i = 0; i < sc->n_falses; i++) {
        const struct record *r = &sc->records[sc->falses[i].head];
        int64_t start = sc->falses[i].start;
        /* The device's label nearest in time, whatever its metric: what the alert may have
         * been about, which is what one wants to know when tuning. */
        const struct label *near = NULL;
        int64_t near_dist = INT64_MAX;
        for (size_t k = first_label_of(sc, r->device);
             k < sc->n_labels && strcmp(sc->labels[k].device, r->device) == 0; k++) {
            const struct label *l = &sc->labels[k];
            int64_t d = start < l->start_ts ? l->start_ts - start
                        : start > l->end_ts ? start - l->end_ts
                                            : 0;
            if (d < near_dist) {
                near_dist = d;
                near = l;
            }
        }
        struct tg_sim_score_false f = {
            .device = r->device,
            .metric = r->metric,
            .alert_kind = sc->akinds[r->akind].name,
            .start_ts = start,
            .end_ts = sc->falses[i].end,
            .closed = sc->falses[i].closed,
            .has_near = near != NULL,
        };
        if (near) {
            f.near_metric = near->metric;
            f.near_kind = near->kind;
            f.near_start_ts = near->start_ts;
            f.near_end_ts = near->end_ts;
        }
        fn(ud, &f);
    }
}

/* --- verdict ------------------------------------------------------------------------------- */

static void append(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void append(char *why, size_t whylen, const char *fmt, ...)
{
    size_t used = strlen(why);
    if (used + 1 >= whylen)
        return;
    if (used) {
        snprintf(why + used, whylen - used, "; ");
        used = strlen(why);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + used, whylen - used, fmt, ap);
    va_end(ap);
}

bool tg_sim_score_verdict(const struct tg_sim_score_result *res,
                          const struct tg_sim_score_floors *floors, char *why, size_t whylen)
{
    if (whylen)
        why[0] = '\0';
    bool ok = true;
    /* Nothing measured is a failure whatever the floors: never "recall 1.0 of 0". */
    if (res->all.labels == 0) {
        append(why, whylen, "no labels: the run injected no anomaly, nothing was measured");
        ok = false;
    } else if (res->records - res->undecodable - res->before_since == 0) {
        append(why, whylen, "no alert record read (%" PRIu64 " labels): is the worker running?",
               res->all.labels);
        ok = false;
    }
    if (!isnan(floors->min_recall)) {
        for (int k = 0; k < TG_ANOMALY_KINDS; k++) {
            const struct tg_sim_score_kind *kd = &res->kind[k];
            if (kd->labels && !(kd->recall >= floors->min_recall)) {
                append(why, whylen, "recall of %s %.3f < %g",
                       tg_anomaly_kind_name((enum tg_anomaly_kind)k), kd->recall,
                       floors->min_recall);
                ok = false;
            }
        }
    }
    if (!isnan(floors->min_f1) && !(res->all.f1 >= floors->min_f1)) {
        append(why, whylen, "F1 %.3f < %g", res->all.f1, floors->min_f1);
        ok = false;
    }
    if (!isnan(floors->max_false_per_device_hour) &&
        !(res->false_per_device_hour <= floors->max_false_per_device_hour)) {
        append(why, whylen, "false alerts per device-hour %.4f > %g",
               res->false_per_device_hour, floors->max_false_per_device_hour);
        ok = false;
    }
    return ok;
}
