/*
 * engine.c - the worker's stream processor (engine.h): the engine object, partitions, series
 * lookup, the per-partition watermark, the alert lifecycle and the silence sweep. Windows are
 * in engine_window.c, output records in engine_output.c, snapshots, restore and eviction in
 * engine_state.c, the detectors in detect.c, the table in series_table.c, the state encoding
 * in snapshot.c.
 *
 * Order of work for one reading: the late check against the watermark before the reading;
 * then the watermark advances and the windows it passes are emitted; then each metric is
 * merged into its window (unless late) and scored, emitting alerts.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

void engine__mark_dirty(struct tg_engine *en, struct series *s)
{
    if (s->flags & SERIES_DIRTY)
        return;
    if (en->n_dirty == en->cap_dirty) {
        size_t cap = en->cap_dirty ? en->cap_dirty * 2 : 256;
        struct series **v = realloc(en->dirty, cap * sizeof *v);
        if (!v)
            return; /* stays clean: its next change tries again */
        en->dirty = v;
        en->cap_dirty = cap;
    }
    en->dirty[en->n_dirty++] = s;
    s->flags |= SERIES_DIRTY;
}

/* ---- engine ------------------------------------------------------------------------------- */

struct tg_engine *tg_engine_new(const struct tg_engine_config *ec, tg_engine_emit_fn emit,
                                void *ud)
{
    struct tg_engine *en = calloc(1, sizeof *en);
    if (!en)
        return NULL;
    en->ec = ec;
    en->emit = emit;
    en->emit_ud = ud;
    en->id = en->idbuf;
    en->id_cap = sizeof en->idbuf;
    en->st = series_table__new();
    if (!en->st) {
        tg_engine_destroy(en);
        return NULL;
    }
    return en;
}

void tg_engine_destroy(struct tg_engine *en)
{
    if (!en)
        return;
    series_table__destroy(en->st);
    for (size_t i = 0; i < en->n_parts; i++)
        engine__part_free(&en->parts[i]);
    free(en->parts);
    free(en->dirty);
    for (size_t i = 0; i < en->n_tombs; i++)
        free(en->tombs[i].key);
    free(en->tombs);
    jbuf__free(&en->out);
    if (en->id != en->idbuf)
        free(en->id);
    free(en);
}

void tg_engine_set_point_hook(struct tg_engine *en, tg_engine_point_fn fn, void *ud)
{
    en->point_fn = fn;
    en->point_ud = ud;
}

tg_err tg_engine_partition_add(struct tg_engine *en, int32_t partition)
{
    if (partition < 0)
        return TG_ERR_USAGE;
    if ((size_t)partition >= en->n_parts) {
        size_t n = (size_t)partition + 1;
        if (n < en->n_parts * 2)
            n = en->n_parts * 2;
        struct partition_state *p = realloc(en->parts, n * sizeof *p);
        if (!p)
            return TG_ERR_NOMEM;
        memset(p + en->n_parts, 0, (n - en->n_parts) * sizeof *p);
        en->parts = p;
        en->n_parts = n;
    }
    en->parts[partition].tracked = true;
    return TG_OK;
}

bool tg_engine_partition_max_ts(struct tg_engine *en, int32_t partition, int64_t *max_ts)
{
    struct partition_state *ps = engine__part_get(en, partition);
    if (!ps || !ps->has_max)
        return false;
    *max_ts = ps->max_ts;
    return true;
}

struct drop_ctx {
    struct tg_engine *en;
    int32_t partition;
};

static bool in_partition(void *ud, struct series *s)
{
    struct drop_ctx *dc = ud;
    if (s->partition != dc->partition)
        return false;
    dc->en->series_bytes -= series__size(engine__params(dc->en->ec, s->rule), s->dev_len,
                                         s->metric_len);
    return true;
}

void tg_engine_partition_drop(struct tg_engine *en, int32_t partition)
{
    struct partition_state *ps = engine__part_get(en, partition);
    if (!ps)
        return;
    engine__part_free(ps);
    /* The dirty list must not keep pointers to series about to be freed. */
    size_t k = 0;
    for (size_t i = 0; i < en->n_dirty; i++)
        if (en->dirty[i]->partition != partition)
            en->dirty[k++] = en->dirty[i];
    en->n_dirty = k;
    k = 0;
    for (size_t i = 0; i < en->n_tombs; i++) {
        if (en->tombs[i].partition == partition)
            free(en->tombs[i].key);
        else
            en->tombs[k++] = en->tombs[i];
    }
    en->n_tombs = k;
    struct drop_ctx dc = {en, partition};
    series_table__remove_if(en->st, in_partition, &dc);
}

/* A new series of (partition, device, metric), cold, in the table; NULL when the table is
 * at max_series or out of memory. */
static struct series *series_create(struct tg_engine *en, int32_t partition, const char *device,
                                    size_t dev_len, uint32_t h, const char *metric,
                                    size_t metric_len)
{
    if (series_table__count(en->st) >= en->ec->max_series || dev_len > UINT16_MAX ||
        metric_len > UINT16_MAX)
        return NULL;
    int rule = engine__rule_for(en->ec, metric);
    const struct detect_params *dp = engine__params(en->ec, rule);
    size_t size = series__size(dp, dev_len, metric_len);
    struct series *s = calloc(1, size);
    if (!s)
        return NULL;
    s->hash = h;
    s->partition = partition;
    s->dev_len = (uint16_t)dev_len;
    s->metric_len = (uint16_t)metric_len;
    s->rule = (uint8_t)rule;
    s->lines = (uint8_t)((size + 63) / 64 < 255 ? (size + 63) / 64 : 255);
    detect__reset(s, dp);
    char *key = (char *)s->tail;
    memcpy(key, device, dev_len);
    key[dev_len] = '\0';
    memcpy(key + dev_len + 1, metric, metric_len);
    key[dev_len + 1 + metric_len] = '\0';
    if (series_table__insert(en->st, s) != TG_OK) {
        free(s);
        return NULL;
    }
    en->series_bytes += size;
    return s;
}

struct series *engine__series_get(struct tg_engine *en, int32_t partition, const char *device,
                                 size_t dev_len, uint32_t h, const char *metric,
                                 size_t metric_len, bool *created)
{
    struct series *s =
        series_table__find(en->st, en->ec, h, partition, device, dev_len, metric, metric_len);
    *created = false;
    if (s)
        return s;
    s = series_create(en, partition, device, dev_len, h, metric, metric_len);
    *created = s != NULL;
    return s;
}

static int64_t period_round(const struct series *s)
{
    return (int64_t)llround(s->period_ms);
}

/* Samples before the usual period is known well enough to call a pause silence: the period
 * estimate needs a few steps, not a detector's whole warm-up. */
#define SILENCE_MIN_SAMPLES 5

/* Largest metric value the engine scores (no sensor comes near it). */
#define VALUE_LIMIT 1e100

/* Event times the engine accepts, in ms either side of the epoch. */
#define TS_LIMIT (INT64_C(1) << 53)

/* Whether the silence detector may judge s: it knows the series' usual period. */
static bool silence_ready(const struct series *s, const struct detect_params *dp)
{
    return dp->on[DET_SILENCE] && (s->flags & SERIES_HAS_LAST) && s->period_ms > 0 &&
           s->n >= SILENCE_MIN_SAMPLES;
}

static void silence_open(struct tg_engine *en, struct series *s, int64_t start)
{
    s->flags |= SERIES_SILENCE;
    s->silence_start = start;
    struct alert_point ap = {.state = "open", .kind = DET_SILENCE, .start_ts = start,
                             .end_ts = start, .ts = start, .value = s->last_value,
                             .baseline = s->last_value, .score = 1, .calib = 1};
    engine__emit_alert(en, s, &ap);
    engine__mark_dirty(en, s);
}

/* A sample at ts arrived after s->last_ts: ends an open silence, or reports a gap the sweep
 * did not see (replay has no sweep; a worker may have been down) as a whole incident. Both
 * give the alert the same id, since its start comes from the series' state alone. The gap
 * is judged without the time its whole partition had no record (engine_hole.c): a hole
 * upstream is not this device's silence, while a device quiet well beyond it still is. */
static void silence_on_sample(struct tg_engine *en, const struct partition_state *ps,
                              struct series *s, const struct detect_params *dp, int64_t ts)
{
    if (!(s->flags & SERIES_SILENCE)) {
        if (!silence_ready(s, dp))
            return;
        double limit = dp->silence_factor * s->period_ms;
        int64_t gap = ts - s->last_ts;
        if ((double)gap <= limit)
            return;
        if (ps->n_holes && (double)(gap - engine__hole_overlap(en, ps, s->last_ts, ts)) <= limit)
            return;
        silence_open(en, s, s->last_ts + period_round(s));
    }
    int64_t end = ts - period_round(s);
    if (end < s->silence_start)
        end = s->silence_start;
    struct alert_point ap = {.state = "close", .kind = DET_SILENCE,
                             .start_ts = s->silence_start, .end_ts = end, .ts = ts,
                             .value = s->last_value, .baseline = s->last_value, .score = 0,
                             .calib = 1};
    engine__emit_alert(en, s, &ap);
    s->flags &= (uint8_t)~SERIES_SILENCE;
    engine__mark_dirty(en, s);
}

/* The alert lifecycle of one scored point; returns the point's alert state. */
static const char *alert_step(struct tg_engine *en, struct series *s, int64_t ts, double x,
                              const struct detect_result *res, double calib)
{
    const struct tg_engine_config *ec = en->ec;
    bool over = res->scored && res->score >= ec->alert_threshold;
    /* Most points of most series: no alert open and none opening. */
    if (!(s->flags & SERIES_ALERT) && !over)
        return "";
    struct alert_point ap = {.ts = ts, .value = x, .score = res->score, .res = res,
                             .calib = calib};
    if (!(s->flags & SERIES_ALERT)) {
        s->flags |= SERIES_ALERT;
        detect__opened(s, engine__params(ec, s->rule), res->r);
        s->alert_kind = (uint8_t)res->dominant;
        s->alert_start = s->alert_last_over = s->alert_last_emit = ts;
        s->quiet = 0;
        ap.state = "open";
    } else if (res->score >= ec->close_threshold) {
        if (over)
            s->alert_last_over = ts;
        s->quiet = 0;
        if (ts - s->alert_last_emit < ec->update_interval_ms)
            return "update";
        s->alert_last_emit = ts;
        ap.state = "update";
    } else {
        if (s->quiet < UINT32_MAX)
            s->quiet++;
        if (s->quiet < (uint32_t)ec->quiet_samples || ts - s->alert_last_over < ec->quiet_ms)
            return "update";
        s->flags &= (uint8_t)~SERIES_ALERT;
        ap.state = "close";
    }
    ap.kind = (enum detector)s->alert_kind;
    ap.start_ts = s->alert_start;
    ap.end_ts = s->alert_last_over;
    ap.baseline = res->baseline[res->dominant];
    if (ap.baseline == 0 && res->ratio[res->dominant] == 0)
        ap.baseline = s->shift_mean;
    engine__emit_alert(en, s, &ap);
    return ap.state;
}

static void point_hook(struct tg_engine *en, int32_t partition, const struct series *s,
                       const char *device, const char *metric, int64_t ts, double x,
                       double score, const char *state)
{
    (void)s;
    if (!en->point_fn)
        return;
    struct tg_engine_point pt = {.partition = partition, .device = device, .metric = metric,
                                 .ts_ms = ts, .value = x, .score = score, .alert_state = state};
    en->point_fn(en->point_ud, &pt);
}

tg_err tg_engine_process(struct tg_engine *en, int32_t partition, const struct tg_reading *rd)
{
    struct partition_state *ps = engine__part_get(en, partition);
    if (!ps)
        return TG_ERR_USAGE;
    en->stats.readings++;
    if (rd->n_metrics == 0)
        return TG_ERR_MISSING_FIELD;
    int64_t ts = rd->ts_ms;
    size_t dev_len = strlen(rd->device);
    uint32_t dev_hash = series_table__hash_device(rd->device, dev_len);
    /* Hash every metric first and prefetch in two stages, so that the cache misses of a
     * reading's series (one each, in a table larger than the cache) overlap with each other
     * and with the checks and the watermark's work below. */
    enum { BATCH = 16 };
    uint32_t hashes[BATCH];
    size_t metric_lens[BATCH];
    size_t batch = rd->n_metrics < BATCH ? rd->n_metrics : BATCH;
    for (size_t i = 0; i < batch; i++) {
        metric_lens[i] = strlen(rd->metrics[i].name);
        hashes[i] = series_table__hash_metric(dev_hash, partition, rd->metrics[i].name,
                                              metric_lens[i]);
        series_table__prefetch_slot(en->st, hashes[i]);
    }
    /* Window and alert arithmetic adds windows and periods to event times: keep them far
     * from overflow (2^53 ms is 285,000 years; the gateway's clock check is much tighter). */
    if (ts > TS_LIMIT || ts < -TS_LIMIT)
        return TG_ERR_OUT_OF_RANGE;
    /* Only what a snapshot key can carry and restore reads back: a valid device id and
     * metric names of 1..METRIC_NAME_MAX bytes (the gateway's limit is far lower). */
    if (!tg_device_id_valid(rd->device, dev_len))
        return TG_ERR_BAD_NAME;
    for (size_t i = 0; i < rd->n_metrics; i++) {
        size_t len = i < batch ? metric_lens[i] : strlen(rd->metrics[i].name);
        if (len == 0 || len > METRIC_NAME_MAX)
            return TG_ERR_BAD_NAME;
        /* Squares of values and their differences must stay finite in the detectors. */
        if (!(fabs(rd->metrics[i].value) <= VALUE_LIMIT))
            return TG_ERR_OUT_OF_RANGE;
    }
    bool late = ps->has_max && ts < ps->max_ts - en->ec->lateness_ms;
    if (!ps->has_max || ts > ps->max_ts) {
        bool had = ps->has_max;
        int64_t old_wm = ps->max_ts - en->ec->lateness_ms, wm = ts - en->ec->lateness_ms;
        engine__hole_note(en, ps, partition, ts);
        ps->has_max = true;
        ps->max_ts = ts;
        ps->dirty = true;
        engine__close_windows(en, ps, wm);
        if (had && en->ec->series_idle_ms > 0 &&
            engine__floor_div(wm, EVICT_CHECK_MS) != engine__floor_div(old_wm, EVICT_CHECK_MS))
            engine__evict_idle(en, partition, wm);
    }
    for (size_t i = 0; i < batch; i++)
        series_table__prefetch_series(en->st, hashes[i]);
    for (size_t i = 0; i < rd->n_metrics; i++) {
        const struct tg_metric *m = &rd->metrics[i];
        en->stats.points++;
        size_t metric_len = i < batch ? metric_lens[i] : strlen(m->name);
        uint32_t h = i < batch ? hashes[i]
                               : series_table__hash_metric(dev_hash, partition, m->name, metric_len);
        /* (engine__series_get's two steps, without its call on every point) */
        struct series *s = series_table__find(en->st, en->ec, h, partition, rd->device, dev_len,
                                              m->name, metric_len);
        if (!s)
            s = series_create(en, partition, rd->device, dev_len, h, m->name, metric_len);
        if (!s) {
            en->stats.series_refused++;
            point_hook(en, partition, NULL, rd->device, m->name, ts, m->value, 0, "");
            continue;
        }
        engine__mark_dirty(en, s);
        if (late)
            en->stats.late_records++;
        else
            engine__window_merge(en, ps, s, ts, m->value);
        const struct detect_params *dp = engine__params(en->ec, s->rule);
        if ((s->flags & SERIES_HAS_LAST) && ts <= s->last_ts) {
            /* Backward or repeated time: the detectors' state is a function of time order,
             * so the point is neither scored nor learned. */
            en->stats.backward_ts++;
            point_hook(en, partition, s, rd->device, m->name, ts, m->value, 0, "");
            continue;
        }
        if (s->flags & SERIES_HAS_LAST)
            silence_on_sample(en, ps, s, dp, ts);
        double calib = s->calib < 1 ? 1.0 : s->calib;
        struct detect_result res;
        detect__point(s, dp, ts, m->value, &res);
        /* The score costs an exp2 (4 % of a point's instructions with the call), and is
         * read only by the point hook (replay), by an open alert, and where the ratio may
         * cross the alert threshold; anywhere else it is under the threshold for certain
         * (quiet_ratio) and alert_step returns at once. */
        if (en->point_fn || (s->flags & SERIES_ALERT) || !(res.r < en->ec->quiet_ratio))
            res.score = detect__score(res.r);
        const char *state = alert_step(en, s, ts, m->value, &res, calib);
        point_hook(en, partition, s, rd->device, m->name, ts, m->value, res.score, state);
    }
    return TG_OK;
}

struct sweep_ctx {
    struct tg_engine *en;
    int64_t now_ms;
    const int64_t *clocks; /* per partition, or NULL: now_ms for all */
    size_t n_clocks;
    struct series **v;
    size_t n, cap;
};

static void sweep_one(void *ud, struct series *s)
{
    struct sweep_ctx *sc = ud;
    const struct detect_params *dp = engine__params(sc->en->ec, s->rule);
    int64_t now = sc->now_ms;
    if (sc->clocks) {
        if (s->partition < 0 || (size_t)s->partition >= sc->n_clocks ||
            sc->clocks[s->partition] <= 0)
            return; /* not judged now: its quiet time neither starts nor grows */
        now = sc->clocks[s->partition];
    }
    /* Quiet time is measured on the wall clock (or the partition's clock) from when the sweep
     * last saw the series move, not as now - last_ts: a device whose clock is minutes behind
     * (the gateway lets some skew through) would otherwise look silent after every reading. */
    if (s->last_ts != s->sweep_seen_ts || s->sweep_seen_wall == 0) {
        s->sweep_seen_ts = s->last_ts;
        s->sweep_seen_wall = now;
        return;
    }
    if ((s->flags & SERIES_SILENCE) || !silence_ready(s, dp) ||
        (double)(now - s->sweep_seen_wall) <= dp->silence_factor * s->period_ms)
        return;
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 64;
        struct series **v = realloc(sc->v, cap * sizeof *v);
        if (!v)
            return; /* the next sweep finds it again */
        sc->v = v;
        sc->cap = cap;
    }
    sc->v[sc->n++] = s;
}

static int sweep_cmp(const void *a, const void *b, void *arg)
{
    const struct series *x = *(struct series *const *)a, *y = *(struct series *const *)b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return engine__series_cmp(a, b, arg);
}

void tg_engine_sweep(struct tg_engine *en, int64_t now_ms)
{
    tg_engine_sweep_clocks(en, NULL, 0, now_ms);
}

void tg_engine_sweep_clocks(struct tg_engine *en, const int64_t *clocks, size_t n, int64_t now_ms)
{
    struct sweep_ctx sc = {.en = en, .now_ms = now_ms, .clocks = clocks, .n_clocks = n};
    series_table__foreach(en->st, sweep_one, &sc);
    /* Slot order differs between engines with the same state; emit in key order. */
    if (sc.n)
        qsort_r(sc.v, sc.n, sizeof *sc.v, sweep_cmp, (void *)en->ec);
    for (size_t i = 0; i < sc.n; i++)
        silence_open(en, sc.v[i], sc.v[i]->last_ts + period_round(sc.v[i]));
    free(sc.v);
}

void tg_engine_flush(struct tg_engine *en)
{
    for (size_t p = 0; p < en->n_parts; p++)
        if (en->parts[p].tracked)
            engine__close_windows(en, &en->parts[p], INT64_MAX);
}

void tg_engine_stats(const struct tg_engine *en, struct tg_engine_stats *out)
{
    *out = en->stats;
    out->series = series_table__count(en->st);
    size_t bytes = en->series_bytes + series_table__bytes(en->st) +
                   en->cap_dirty * sizeof *en->dirty + en->n_parts * sizeof *en->parts;
    for (size_t p = 0; p < en->n_parts; p++) {
        const struct partition_state *ps = &en->parts[p];
        bytes += ps->cap_buckets * sizeof *ps->buckets;
        for (size_t i = 0; i < ps->n_buckets; i++)
            bytes += ps->buckets[i].cap * sizeof *ps->buckets[i].v;
    }
    out->state_bytes = bytes;
}

