/*
 * engine.c - the worker's stream processor (engine.h): series lookup, the per-partition
 * watermark and tumbling windows, the alert lifecycle, the silence sweep and the dirty list
 * that snapshots are made from. The detectors are in detect.c, the table in series_table.c,
 * the state encoding in snapshot.c.
 *
 * Windows: a series holds at most two open windows (allowed lateness is at most one window
 * long, so only the window being filled and the one before it can take records). Each
 * partition keeps, per open window end, the list of series with a window ending there; when
 * the watermark passes an end, that list is sorted by (device, metric) and emitted. Sorting
 * makes the order a function of the input alone, not of where series sit in the hash table,
 * which differs after a restore: that is what keeps restored engines byte-identical.
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
#include "engine_json.h"

struct wbucket {
    int64_t end; /* window end shared by the listed series */
    struct series **v;
    size_t n, cap;
};

struct partition_state {
    bool tracked;
    bool has_max;  /* max_ts is set: the watermark exists */
    bool dirty;    /* max_ts changed since the last snapshot */
    int64_t max_ts;
    struct wbucket *buckets; /* by ascending end */
    size_t n_buckets, cap_buckets;
};

struct tombstone {
    int32_t partition;
    char *key; /* "<partition>/<device>/<metric>" */
    size_t len;
};

struct tg_engine {
    const struct tg_engine_config *ec;
    tg_engine_emit_fn emit;
    void *emit_ud;
    tg_engine_point_fn point_fn;
    void *point_ud;
    struct series_table *st;
    struct partition_state *parts; /* indexed by partition number */
    size_t n_parts;
    struct series **dirty;
    size_t n_dirty, cap_dirty;
    struct tombstone *tombs; /* keys of evicted series, for the next snapshot */
    size_t n_tombs, cap_tombs;
    size_t series_bytes;
    struct tg_engine_stats stats;
    struct jbuf out;
    char idbuf[TG_DEVICE_ID_MAX + 4 * 64 + 64];
    char *id;      /* alert id: idbuf, or heap when the metric name is long */
    size_t id_cap;
};

/* ---- helpers ------------------------------------------------------------------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static struct partition_state *part_get(struct tg_engine *en, int32_t partition)
{
    if (partition < 0 || (size_t)partition >= en->n_parts || !en->parts[partition].tracked)
        return NULL;
    return &en->parts[partition];
}

static void mark_dirty(struct tg_engine *en, struct series *s)
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

static tg_err bucket_add(struct partition_state *ps, int64_t end, struct series *s)
{
    size_t i = 0;
    while (i < ps->n_buckets && ps->buckets[i].end < end)
        i++;
    if (i == ps->n_buckets || ps->buckets[i].end != end) {
        if (ps->n_buckets == ps->cap_buckets) {
            size_t cap = ps->cap_buckets ? ps->cap_buckets * 2 : 4;
            struct wbucket *b = realloc(ps->buckets, cap * sizeof *b);
            if (!b)
                return TG_ERR_NOMEM;
            ps->buckets = b;
            ps->cap_buckets = cap;
        }
        memmove(&ps->buckets[i + 1], &ps->buckets[i], (ps->n_buckets - i) * sizeof *ps->buckets);
        ps->buckets[i] = (struct wbucket){.end = end};
        ps->n_buckets++;
    }
    struct wbucket *b = &ps->buckets[i];
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct series **v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return TG_ERR_NOMEM;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = s;
    return TG_OK;
}

static void part_free(struct partition_state *ps)
{
    for (size_t i = 0; i < ps->n_buckets; i++)
        free(ps->buckets[i].v);
    free(ps->buckets);
    *ps = (struct partition_state){0};
}

/* ---- outputs ------------------------------------------------------------------------------ */

static void emit_aggregate(struct tg_engine *en, struct series *s, const struct series_window *w)
{
    const struct detect_params *dp = engine__params(en->ec, s->rule);
    struct jbuf *jb = &en->out;
    jbuf__reset(jb);
    jbuf__lit(jb, "{");
    jbuf__key(jb, "device", true);
    jbuf__str(jb, series__device(s, dp), s->dev_len);
    jbuf__key(jb, "metric", false);
    jbuf__str(jb, series__metric(s, dp), s->metric_len);
    jbuf__key(jb, "window_start", false);
    jbuf__i64(jb, w->start);
    jbuf__key(jb, "window_end", false);
    jbuf__i64(jb, w->start + en->ec->window_ms);
    jbuf__key(jb, "count", false);
    jbuf__i64(jb, w->count);
    jbuf__key(jb, "min", false);
    jbuf__num(jb, w->min);
    jbuf__key(jb, "max", false);
    jbuf__num(jb, w->max);
    jbuf__key(jb, "mean", false);
    jbuf__num(jb, w->sum / w->count);
    jbuf__key(jb, "last", false);
    jbuf__num(jb, w->last);
    jbuf__lit(jb, "}");
    if (jb->oom)
        return;
    en->stats.aggregates++;
    struct tg_engine_output out = {
        .kind = TG_ENGINE_AGGREGATE,
        .partition = s->partition,
        .key = series__device(s, dp),
        .key_len = s->dev_len,
        .value = jb->data,
        .value_len = jb->len,
        .ts_ms = w->start + en->ec->window_ms,
    };
    en->emit(en->emit_ud, &out);
}

/* Builds the alert id "<device>/<metric>/<kind>/<start_ts>" in en->id. */
static const char *make_id(struct tg_engine *en, const struct series *s,
                           const struct detect_params *dp, enum detector kind, int64_t start)
{
    size_t need = (size_t)s->dev_len + s->metric_len + 64;
    if (need > en->id_cap) {
        char *p = en->id == en->idbuf ? malloc(need) : realloc(en->id, need);
        if (!p)
            return NULL;
        en->id = p;
        en->id_cap = need;
    }
    snprintf(en->id, en->id_cap, "%.*s/%.*s/%s/%" PRId64, (int)s->dev_len,
             series__device(s, dp), (int)s->metric_len, series__metric(s, dp),
             detect__name(kind), start);
    return en->id;
}

struct alert_point {
    const char *state;
    enum detector kind;
    int64_t start_ts, end_ts, ts;
    double value, baseline, score;
    const struct detect_result *res; /* NULL: no detector detail (silence) */
    double calib;
};

static void emit_alert(struct tg_engine *en, struct series *s, const struct alert_point *ap)
{
    const struct detect_params *dp = engine__params(en->ec, s->rule);
    const char *id = make_id(en, s, dp, ap->kind, ap->start_ts);
    if (!id)
        return;
    struct jbuf *jb = &en->out;
    jbuf__reset(jb);
    jbuf__lit(jb, "{");
    jbuf__key(jb, "id", true);
    jbuf__str(jb, id, strlen(id));
    jbuf__key(jb, "device", false);
    jbuf__str(jb, series__device(s, dp), s->dev_len);
    jbuf__key(jb, "metric", false);
    jbuf__str(jb, series__metric(s, dp), s->metric_len);
    jbuf__key(jb, "kind", false);
    jbuf__lit(jb, "\"");
    jbuf__lit(jb, detect__name(ap->kind));
    jbuf__lit(jb, "\"");
    jbuf__key(jb, "state", false);
    jbuf__lit(jb, "\"");
    jbuf__lit(jb, ap->state);
    jbuf__lit(jb, "\"");
    jbuf__key(jb, "detectors", false);
    jbuf__lit(jb, "{");
    bool first = true;
    if (ap->res) {
        /* The detectors that fired at this point, each with its own score. */
        for (int d = 0; d < DET__COUNT; d++) {
            double sc = detect__score(ap->res->ratio[d] / ap->calib);
            if (sc < en->ec->alert_threshold && d != ap->res->dominant)
                continue;
            if (ap->res->ratio[d] <= 0)
                continue;
            jbuf__key(jb, detect__name((enum detector)d), first);
            jbuf__num(jb, sc);
            first = false;
        }
    } else {
        jbuf__key(jb, detect__name(ap->kind), true);
        jbuf__num(jb, ap->score);
    }
    jbuf__lit(jb, "}");
    jbuf__key(jb, "score", false);
    jbuf__num(jb, ap->score);
    jbuf__key(jb, "value", false);
    jbuf__num(jb, ap->value);
    jbuf__key(jb, "baseline", false);
    jbuf__num(jb, ap->baseline);
    jbuf__key(jb, "start_ts", false);
    jbuf__i64(jb, ap->start_ts);
    jbuf__key(jb, "end_ts", false);
    jbuf__i64(jb, ap->end_ts);
    jbuf__key(jb, "ts", false);
    jbuf__i64(jb, ap->ts);
    jbuf__lit(jb, "}");
    if (jb->oom)
        return;
    if (ap->state[0] == 'o')
        en->stats.alerts_open++;
    else if (ap->state[0] == 'u')
        en->stats.alerts_update++;
    else
        en->stats.alerts_close++;
    struct tg_engine_output out = {
        .kind = TG_ENGINE_ALERT,
        .partition = s->partition,
        .key = series__device(s, dp),
        .key_len = s->dev_len,
        .value = jb->data,
        .value_len = jb->len,
        .ts_ms = ap->ts,
        .alert_id = id,
        .alert_kind = detect__name(ap->kind),
        .alert_state = ap->state,
    };
    en->emit(en->emit_ud, &out);
}

/* ---- windows ------------------------------------------------------------------------------ */

static int series_cmp(const void *a, const void *b, void *arg)
{
    const struct tg_engine_config *ec = arg;
    const struct series *x = *(struct series *const *)a, *y = *(struct series *const *)b;
    const struct detect_params *dx = engine__params(ec, x->rule), *dy = engine__params(ec, y->rule);
    /* "<device>\0<metric>" compares as device first, then metric. */
    size_t lx = (size_t)x->dev_len + 1 + x->metric_len, ly = (size_t)y->dev_len + 1 + y->metric_len;
    int c = memcmp(series__device(x, dx), series__device(y, dy), lx < ly ? lx : ly);
    if (c)
        return c;
    return lx < ly ? -1 : lx > ly;
}

/* Emits and forgets the windows of the first bucket of ps. */
static void close_first_bucket(struct tg_engine *en, struct partition_state *ps)
{
    struct wbucket b = ps->buckets[0];
    ps->n_buckets--;
    memmove(&ps->buckets[0], &ps->buckets[1], ps->n_buckets * sizeof *ps->buckets);
    qsort_r(b.v, b.n, sizeof *b.v, series_cmp, (void *)en->ec);
    for (size_t i = 0; i < b.n; i++) {
        struct series *s = b.v[i];
        for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++) {
            struct series_window *w = &s->win[k];
            /* A series restored twice may be listed twice: its second entry finds no window. */
            if (w->count && w->start + en->ec->window_ms == b.end) {
                emit_aggregate(en, s, w);
                w->count = 0;
                mark_dirty(en, s);
            }
        }
    }
    free(b.v);
}

static void close_windows(struct tg_engine *en, struct partition_state *ps, int64_t watermark)
{
    while (ps->n_buckets && ps->buckets[0].end <= watermark)
        close_first_bucket(en, ps);
}

static void window_merge(struct tg_engine *en, struct partition_state *ps, struct series *s,
                         int64_t ts, double x)
{
    int64_t start = floor_div(ts, en->ec->window_ms) * en->ec->window_ms;
    struct series_window *w = NULL, *free_slot = NULL;
    for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++) {
        if (s->win[k].count && s->win[k].start == start)
            w = &s->win[k];
        else if (!s->win[k].count && !free_slot)
            free_slot = &s->win[k];
    }
    if (!w) {
        if (!free_slot) {
            /* Cannot happen while lateness <= window (checked at config time): both slots
             * hold windows the watermark has not passed, so one of them contains ts. */
            en->stats.late_records++;
            return;
        }
        if (bucket_add(ps, start + en->ec->window_ms, s) != TG_OK)
            return;
        w = free_slot;
        *w = (struct series_window){.start = start, .last_ts = ts, .min = x, .max = x,
                                    .last = x};
    }
    if (x < w->min)
        w->min = x;
    if (x > w->max)
        w->max = x;
    w->sum += x;
    w->count++;
    if (ts >= w->last_ts) { /* ties: the later arrival is the last */
        w->last_ts = ts;
        w->last = x;
    }
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
        part_free(&en->parts[i]);
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
    struct partition_state *ps = part_get(en, partition);
    if (!ps)
        return;
    part_free(ps);
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

/* The series of (partition, device, metric), created (cold) when new; NULL when the table
 * is at max_series or out of memory. */
static struct series *series_get(struct tg_engine *en, int32_t partition, const char *device,
                                 size_t dev_len, uint32_t h, const char *metric,
                                 size_t metric_len, bool *created)
{
    struct series *s =
        series_table__find(en->st, en->ec, h, partition, device, dev_len, metric, metric_len);
    *created = false;
    if (s)
        return s;
    if (series_table__count(en->st) >= en->ec->max_series || dev_len > UINT16_MAX ||
        metric_len > UINT16_MAX)
        return NULL;
    int rule = engine__rule_for(en->ec, metric);
    const struct detect_params *dp = engine__params(en->ec, rule);
    size_t size = series__size(dp, dev_len, metric_len);
    s = calloc(1, size);
    if (!s)
        return NULL;
    s->hash = h;
    s->partition = partition;
    s->dev_len = (uint16_t)dev_len;
    s->metric_len = (uint16_t)metric_len;
    s->rule = (uint8_t)rule;
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
    *created = true;
    return s;
}

static int64_t period_round(const struct series *s)
{
    return (int64_t)llround(s->period_ms);
}

/* Samples before the usual period is known well enough to call a pause silence: the period
 * estimate needs a few steps, not a detector's whole warm-up. */
#define SILENCE_MIN_SAMPLES 5

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
    emit_alert(en, s, &ap);
    mark_dirty(en, s);
}

/* A sample at ts arrived after s->last_ts: ends an open silence, or reports a gap the sweep
 * did not see (replay has no sweep; a worker may have been down) as a whole incident. Both
 * give the alert the same id, since its start comes from the series' state alone. */
static void silence_on_sample(struct tg_engine *en, struct series *s,
                              const struct detect_params *dp, int64_t ts)
{
    if (!(s->flags & SERIES_SILENCE)) {
        if (!silence_ready(s, dp) || (double)(ts - s->last_ts) <= dp->silence_factor * s->period_ms)
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
    emit_alert(en, s, &ap);
    s->flags &= (uint8_t)~SERIES_SILENCE;
    mark_dirty(en, s);
}

/* The alert lifecycle of one scored point; returns the point's alert state. */
static const char *alert_step(struct tg_engine *en, struct series *s, int64_t ts, double x,
                              const struct detect_result *res, double calib)
{
    const struct tg_engine_config *ec = en->ec;
    bool over = res->scored && res->score >= ec->alert_threshold;
    struct alert_point ap = {.ts = ts, .value = x, .score = res->score, .res = res,
                             .calib = calib};
    if (!(s->flags & SERIES_ALERT)) {
        if (!over)
            return "";
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
    emit_alert(en, s, &ap);
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

/* ---- eviction ---------------------------------------------------------------------------- */

#define EVICT_CHECK_MS INT64_C(3600000) /* event time between two eviction scans */

struct evict_ctx {
    struct tg_engine *en;
    int32_t partition;
    int64_t before; /* evict series whose last reading is older */
    struct series **v;
    size_t n, cap;
};

static bool idle(const struct evict_ctx *ev, const struct series *s)
{
    if (s->partition != ev->partition || !(s->flags & SERIES_HAS_LAST) ||
        s->last_ts >= ev->before)
        return false;
    for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++)
        if (s->win[k].count)
            return false; /* its window closes first; the next scan takes it */
    return true;
}

static void evict_collect(void *ud, struct series *s)
{
    struct evict_ctx *ev = ud;
    if (!idle(ev, s) || ev->n == ev->cap)
        return;
    ev->v[ev->n++] = s;
}

static bool evict_pred(void *ud, struct series *s)
{
    struct evict_ctx *ev = ud;
    if (!idle(ev, s))
        return false;
    ev->en->series_bytes -= series__size(engine__params(ev->en->ec, s->rule), s->dev_len,
                                         s->metric_len);
    ev->en->stats.series_evicted++;
    return true;
}

/* Forgets the series of ps that have been idle for series_idle_ms of event time: their open
 * alerts close (in key order, like every output), a tombstone replaces their snapshot. Runs
 * when the watermark enters a new hour, so when it runs depends on the input alone. */
static void evict_idle(struct tg_engine *en, int32_t partition, int64_t watermark)
{
    struct evict_ctx ev = {.en = en, .partition = partition,
                           .before = watermark - en->ec->series_idle_ms};
    ev.cap = series_table__count(en->st);
    ev.v = malloc((ev.cap ? ev.cap : 1) * sizeof *ev.v);
    if (!ev.v)
        return; /* the next scan tries again */
    series_table__foreach(en->st, evict_collect, &ev);
    if (ev.n == 0) {
        free(ev.v);
        return;
    }
    size_t need = en->n_tombs + ev.n;
    if (need > en->cap_tombs) {
        struct tombstone *t = realloc(en->tombs, need * sizeof *t);
        if (!t) {
            free(ev.v);
            return;
        }
        en->tombs = t;
        en->cap_tombs = need;
    }
    qsort_r(ev.v, ev.n, sizeof *ev.v, series_cmp, (void *)en->ec);
    for (size_t i = 0; i < ev.n; i++) {
        struct series *s = ev.v[i];
        const struct detect_params *dp = engine__params(en->ec, s->rule);
        if (s->flags & SERIES_ALERT) {
            struct alert_point ap = {.state = "close", .kind = (enum detector)s->alert_kind,
                                     .start_ts = s->alert_start, .end_ts = s->alert_last_over,
                                     .ts = s->last_ts, .value = s->last_value,
                                     .baseline = s->shift_mean, .calib = 1};
            emit_alert(en, s, &ap);
        }
        if (s->flags & SERIES_SILENCE) {
            struct alert_point ap = {.state = "close", .kind = DET_SILENCE,
                                     .start_ts = s->silence_start, .end_ts = watermark,
                                     .ts = watermark, .value = s->last_value,
                                     .baseline = s->last_value, .calib = 1};
            emit_alert(en, s, &ap);
        }
        struct jbuf kb = {0};
        char pfx[16];
        int pn = snprintf(pfx, sizeof pfx, "%" PRId32 "/", s->partition);
        jbuf__raw(&kb, pfx, (size_t)pn);
        jbuf__raw(&kb, series__device(s, dp), s->dev_len);
        jbuf__raw(&kb, "/", 1);
        jbuf__raw(&kb, series__metric(s, dp), s->metric_len);
        if (!kb.oom)
            en->tombs[en->n_tombs++] = (struct tombstone){partition, kb.data, kb.len};
        else
            jbuf__free(&kb);
    }
    free(ev.v);
    /* The dirty list must not keep pointers to series about to be freed. */
    size_t k = 0;
    for (size_t i = 0; i < en->n_dirty; i++) {
        struct series *s = en->dirty[i];
        if (idle(&ev, s))
            s->flags &= (uint8_t)~SERIES_DIRTY;
        else
            en->dirty[k++] = s;
    }
    en->n_dirty = k;
    series_table__remove_if(en->st, evict_pred, &ev);
}

tg_err tg_engine_process(struct tg_engine *en, int32_t partition, const struct tg_reading *rd)
{
    struct partition_state *ps = part_get(en, partition);
    if (!ps)
        return TG_ERR_USAGE;
    en->stats.readings++;
    if (rd->n_metrics == 0)
        return TG_ERR_MISSING_FIELD;
    int64_t ts = rd->ts_ms;
    bool late = ps->has_max && ts < ps->max_ts - en->ec->lateness_ms;
    if (!ps->has_max || ts > ps->max_ts) {
        bool had = ps->has_max;
        int64_t old_wm = ps->max_ts - en->ec->lateness_ms, wm = ts - en->ec->lateness_ms;
        ps->has_max = true;
        ps->max_ts = ts;
        ps->dirty = true;
        close_windows(en, ps, wm);
        if (had && en->ec->series_idle_ms > 0 &&
            floor_div(wm, EVICT_CHECK_MS) != floor_div(old_wm, EVICT_CHECK_MS))
            evict_idle(en, partition, wm);
    }
    size_t dev_len = strlen(rd->device);
    uint32_t dev_hash = series_table__hash_device(rd->device, dev_len);
    /* Hash every metric first and prefetch in two stages, so that the cache misses of a
     * reading's series (one each, in a table larger than the cache) overlap. */
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
    for (size_t i = 0; i < batch; i++)
        series_table__prefetch_series(en->st, hashes[i]);
    for (size_t i = 0; i < rd->n_metrics; i++) {
        const struct tg_metric *m = &rd->metrics[i];
        en->stats.points++;
        bool created;
        size_t metric_len = i < batch ? metric_lens[i] : strlen(m->name);
        uint32_t h = i < batch ? hashes[i]
                               : series_table__hash_metric(dev_hash, partition, m->name, metric_len);
        struct series *s = series_get(en, partition, rd->device, dev_len, h, m->name, metric_len,
                                      &created);
        if (!s) {
            en->stats.series_refused++;
            point_hook(en, partition, NULL, rd->device, m->name, ts, m->value, 0, "");
            continue;
        }
        mark_dirty(en, s);
        if (late)
            en->stats.late_records++;
        else
            window_merge(en, ps, s, ts, m->value);
        const struct detect_params *dp = engine__params(en->ec, s->rule);
        if ((s->flags & SERIES_HAS_LAST) && ts <= s->last_ts) {
            /* Backward or repeated time: the detectors' state is a function of time order,
             * so the point is neither scored nor learned. */
            en->stats.backward_ts++;
            point_hook(en, partition, s, rd->device, m->name, ts, m->value, 0, "");
            continue;
        }
        if (s->flags & SERIES_HAS_LAST)
            silence_on_sample(en, s, dp, ts);
        double calib = s->calib < 1 ? 1.0 : s->calib;
        struct detect_result res;
        detect__point(s, dp, ts, m->value, &res);
        const char *state = alert_step(en, s, ts, m->value, &res, calib);
        point_hook(en, partition, s, rd->device, m->name, ts, m->value, res.score, state);
    }
    return TG_OK;
}

struct sweep_ctx {
    struct tg_engine *en;
    int64_t now_ms;
    struct series **v;
    size_t n, cap;
};

static void sweep_one(void *ud, struct series *s)
{
    struct sweep_ctx *sc = ud;
    const struct detect_params *dp = engine__params(sc->en->ec, s->rule);
    if ((s->flags & SERIES_SILENCE) || !silence_ready(s, dp) ||
        (double)(sc->now_ms - s->last_ts) <= dp->silence_factor * s->period_ms)
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
    return series_cmp(a, b, arg);
}

void tg_engine_sweep(struct tg_engine *en, int64_t now_ms)
{
    struct sweep_ctx sc = {.en = en, .now_ms = now_ms};
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
            close_windows(en, &en->parts[p], INT64_MAX);
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

/* ---- snapshots ---------------------------------------------------------------------------- */

void tg_engine_snapshot_dirty(struct tg_engine *en, tg_engine_snapshot_fn fn, void *ud)
{
    unsigned char buf[TG_ENGINE_SNAPSHOT_MAX];
    char key[32 + TG_DEVICE_ID_MAX + 1];
    for (size_t p = 0; p < en->n_parts; p++) {
        struct partition_state *ps = &en->parts[p];
        if (!ps->tracked || !ps->dirty)
            continue;
        int kn = snprintf(key, sizeof key, "%zu/", p);
        size_t len = snapshot__encode_partition(ps->max_ts, ps->has_max, buf);
        fn(ud, (int32_t)p, key, (size_t)kn, buf, len);
        ps->dirty = false;
    }
    for (size_t i = 0; i < en->n_tombs; i++) {
        struct tombstone *t = &en->tombs[i];
        fn(ud, t->partition, t->key, t->len, NULL, 0);
        free(t->key);
    }
    en->n_tombs = 0;
    struct jbuf kb = {0};
    for (size_t i = 0; i < en->n_dirty; i++) {
        struct series *s = en->dirty[i];
        const struct detect_params *dp = engine__params(en->ec, s->rule);
        jbuf__reset(&kb);
        char pfx[16];
        int pn = snprintf(pfx, sizeof pfx, "%" PRId32 "/", s->partition);
        jbuf__raw(&kb, pfx, (size_t)pn);
        jbuf__raw(&kb, series__device(s, dp), s->dev_len);
        jbuf__raw(&kb, "/", 1);
        jbuf__raw(&kb, series__metric(s, dp), s->metric_len);
        s->flags &= (uint8_t)~SERIES_DIRTY;
        if (kb.oom)
            continue;
        size_t len = snapshot__encode_series(s, dp, buf);
        fn(ud, s->partition, kb.data, kb.len, buf, len);
    }
    jbuf__free(&kb);
    en->n_dirty = 0;
}

tg_err tg_engine_restore(struct tg_engine *en, const void *key, size_t key_len,
                         const void *value, size_t value_len)
{
    const char *k = key, *end = k + key_len;
    const char *slash = memchr(k, '/', key_len);
    if (!slash || slash == k || slash - k > 10)
        return TG_ERR_MALFORMED;
    int64_t p = 0;
    for (const char *c = k; c < slash; c++) {
        if (*c < '0' || *c > '9')
            return TG_ERR_MALFORMED;
        p = p * 10 + (*c - '0');
    }
    if (p > INT32_MAX)
        return TG_ERR_MALFORMED;
    struct partition_state *ps = part_get(en, (int32_t)p);
    if (!ps)
        return TG_ERR_USAGE;
    if (value_len == 0)
        return TG_OK; /* a tombstone: nothing to restore */
    const char *device = slash + 1;
    if (device == end) {
        int64_t max_ts;
        bool has_max;
        tg_err err = snapshot__decode_partition(value, value_len, &max_ts, &has_max);
        if (err != TG_OK)
            return err;
        ps->max_ts = max_ts;
        ps->has_max = has_max;
        return TG_OK;
    }
    const char *slash2 = memchr(device, '/', (size_t)(end - device));
    if (!slash2 || !tg_device_id_valid(device, (size_t)(slash2 - device)) || slash2 + 1 == end)
        return TG_ERR_MALFORMED;
    const char *metric = slash2 + 1;
    size_t dev_len = (size_t)(slash2 - device), metric_len = (size_t)(end - metric);
    if (memchr(metric, '\0', metric_len))
        return TG_ERR_MALFORMED;
    char mname[1024];
    if (metric_len >= sizeof mname)
        return TG_ERR_MALFORMED;
    memcpy(mname, metric, metric_len);
    mname[metric_len] = '\0';

    /* Decode into a scratch series first: a value that does not decode leaves the existing
     * series (if any) as it was. */
    int rule = engine__rule_for(en->ec, mname);
    const struct detect_params *dp = engine__params(en->ec, rule);
    size_t size = series__size(dp, dev_len, metric_len);
    struct series *tmp = calloc(1, size);
    if (!tmp)
        return TG_ERR_NOMEM;
    tmp->rule = (uint8_t)rule;
    tmp->dev_len = (uint16_t)dev_len;
    tmp->metric_len = (uint16_t)metric_len;
    detect__reset(tmp, dp);
    tg_err err = snapshot__decode_series(tmp, dp, value, value_len);
    if (err != TG_OK) {
        free(tmp);
        return err;
    }
    bool created;
    struct series *s = series_get(
        en, (int32_t)p, device, dev_len,
        series_table__hash_metric(series_table__hash_device(device, dev_len), (int32_t)p, mname,
                                  metric_len),
        mname, metric_len, &created);
    if (!s) {
        free(tmp);
        return TG_ERR_NOMEM;
    }
    /* Copy the state, keeping the identity the table set. */
    uint32_t hash = s->hash;
    uint8_t dirty = s->flags & SERIES_DIRTY;
    memcpy(s, tmp, sizeof *s);
    size_t kb = series__key_bytes(dev_len, metric_len);
    memcpy(s->tail + kb, tmp->tail + kb, dp->ring_bytes + dp->seasonal_bytes);
    s->hash = hash;
    s->partition = (int32_t)p;
    s->dev_len = (uint16_t)dev_len;
    s->metric_len = (uint16_t)metric_len;
    s->rule = (uint8_t)rule;
    s->flags = (uint8_t)((s->flags & ~SERIES_DIRTY) | dirty);
    free(tmp);
    for (int w = 0; w < TG_ENGINE_SERIES_WINDOWS; w++)
        if (s->win[w].count && bucket_add(ps, s->win[w].start + en->ec->window_ms, s) != TG_OK)
            return TG_ERR_NOMEM;
    return TG_OK;
}
