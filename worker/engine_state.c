/*
 * engine_state.c - the engine's state over time: snapshots out (the dirty list and
 * tombstones), snapshots in (restore), and the eviction of idle series. The encoding itself
 * is snapshot.c's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

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
void engine__evict_idle(struct tg_engine *en, int32_t partition, int64_t watermark)
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
    qsort_r(ev.v, ev.n, sizeof *ev.v, engine__series_cmp, (void *)en->ec);
    for (size_t i = 0; i < ev.n; i++) {
        struct series *s = ev.v[i];
        const struct detect_params *dp = engine__params(en->ec, s->rule);
        if (s->flags & SERIES_ALERT) {
            struct alert_point ap = {.state = "close", .kind = (enum detector)s->alert_kind,
                                     .start_ts = s->alert_start, .end_ts = s->alert_last_over,
                                     .ts = s->last_ts, .value = s->last_value,
                                     .baseline = s->shift_mean, .calib = 1};
            engine__emit_alert(en, s, &ap);
        }
        if (s->flags & SERIES_SILENCE) {
            struct alert_point ap = {.state = "close", .kind = DET_SILENCE,
                                     .start_ts = s->silence_start, .end_ts = watermark,
                                     .ts = watermark, .value = s->last_value,
                                     .baseline = s->last_value, .calib = 1};
            engine__emit_alert(en, s, &ap);
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

void tg_engine_snapshot_dirty(struct tg_engine *en, tg_engine_snapshot_fn fn, void *ud)
{
    tg_engine_snapshot_dirty_max(en, NULL, NULL, 0, 0, fn, ud);
}

void tg_engine_snapshot_dirty_if(struct tg_engine *en, tg_engine_partition_pred want,
                                 void *want_ud, tg_engine_snapshot_fn fn, void *ud)
{
    tg_engine_snapshot_dirty_max(en, want, want_ud, 0, 0, fn, ud);
}

size_t tg_engine_snapshot_pending(const struct tg_engine *en, tg_engine_partition_pred want,
                                  void *want_ud)
{
    size_t n = 0;
    for (size_t p = 0; p < en->n_parts; p++)
        n += en->parts[p].tracked && en->parts[p].dirty && (!want || want(want_ud, (int32_t)p));
    for (size_t i = 0; i < en->n_tombs; i++)
        n += !want || want(want_ud, en->tombs[i].partition);
    for (size_t i = 0; i < en->n_dirty; i++)
        n += !want || want(want_ud, en->dirty[i]->partition);
    return n;
}

/* Partitions not chosen keep their place on the dirty list and their tombstones, in order, so
 * a later call still hands over everything that changed since their last snapshot. The same
 * holds for what a bound leaves over: tombstones go out before any series, so a series
 * evicted and seen again is never written before its tombstone, whatever the bound. */
bool tg_engine_snapshot_dirty_max(struct tg_engine *en, tg_engine_partition_pred want,
                                  void *want_ud, size_t max_records, size_t max_bytes,
                                  tg_engine_snapshot_fn fn, void *ud)
{
    unsigned char buf[TG_ENGINE_SNAPSHOT_MAX];
    char key[32 + TG_DEVICE_ID_MAX + 1];
    size_t records = 0, bytes = 0;
    bool more = false;
/* The bound is reached: what is left waits for the next call. */
#define SNAP_FULL()                                                                          \
    ((max_records && records >= max_records) || (max_bytes && bytes >= max_bytes))
    for (size_t p = 0; p < en->n_parts; p++) {
        struct partition_state *ps = &en->parts[p];
        if (!ps->tracked || !ps->dirty || (want && !want(want_ud, (int32_t)p)))
            continue;
        if (SNAP_FULL()) {
            more = true;
            continue;
        }
        int kn = snprintf(key, sizeof key, "%zu/", p);
        size_t len = snapshot__encode_partition(ps, buf);
        fn(ud, (int32_t)p, key, (size_t)kn, buf, len);
        records++;
        bytes += (size_t)kn + len;
        ps->dirty = false;
    }
    size_t kept = 0;
    for (size_t i = 0; i < en->n_tombs; i++) {
        struct tombstone *t = &en->tombs[i];
        if (want && !want(want_ud, t->partition)) {
            en->tombs[kept++] = *t;
            continue;
        }
        if (SNAP_FULL()) {
            en->tombs[kept++] = *t;
            more = true;
            continue;
        }
        fn(ud, t->partition, t->key, t->len, NULL, 0);
        records++;
        bytes += t->len;
        free(t->key);
    }
    en->n_tombs = kept;
    struct jbuf kb = {0};
    kept = 0;
    for (size_t i = 0; i < en->n_dirty; i++) {
        struct series *s = en->dirty[i];
        if (want && !want(want_ud, s->partition)) {
            en->dirty[kept++] = s;
            continue;
        }
        /* A series after a tombstone left over waits too, so the order holds. */
        if (SNAP_FULL() || more) {
            en->dirty[kept++] = s;
            more = true;
            continue;
        }
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
        records++;
        bytes += kb.len + len;
    }
#undef SNAP_FULL
    jbuf__free(&kb);
    en->n_dirty = kept;
    return more;
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
    struct partition_state *ps = engine__part_get(en, (int32_t)p);
    if (!ps)
        return TG_ERR_USAGE;
    if (value_len == 0)
        return TG_OK; /* a tombstone: nothing to restore */
    const char *device = slash + 1;
    if (device == end) {
        return snapshot__decode_partition(value, value_len, ps);
    }
    const char *slash2 = memchr(device, '/', (size_t)(end - device));
    if (!slash2 || !tg_device_id_valid(device, (size_t)(slash2 - device)) || slash2 + 1 == end)
        return TG_ERR_MALFORMED;
    const char *metric = slash2 + 1;
    size_t dev_len = (size_t)(slash2 - device), metric_len = (size_t)(end - metric);
    if (memchr(metric, '\0', metric_len))
        return TG_ERR_MALFORMED;
    char mname[METRIC_NAME_MAX + 1];
    if (metric_len > METRIC_NAME_MAX)
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
    struct series *s = engine__series_get(
        en, (int32_t)p, device, dev_len,
        series_table__hash_metric(series_table__hash_device(device, dev_len), (int32_t)p, mname,
                                  metric_len),
        mname, metric_len, &created);
    if (!s) {
        free(tmp);
        return series_table__count(en->st) >= en->ec->max_series ? TG_ERR_FULL : TG_ERR_NOMEM;
    }
    /* Copy the state, keeping the identity the table set. */
    uint32_t hash = s->hash;
    uint8_t dirty = s->flags & SERIES_DIRTY, lines = s->lines;
    memcpy(s, tmp, sizeof *s);
    s->lines = lines;
    s->sweep_seen_ts = s->sweep_seen_wall = 0;
    size_t kb = series__key_bytes(dev_len, metric_len);
    memcpy(s->tail + kb, tmp->tail + kb,
           dp->ring_bytes + dp->seasonal_bytes + dp->predict_bytes);
    s->hash = hash;
    s->partition = (int32_t)p;
    s->dev_len = (uint16_t)dev_len;
    s->metric_len = (uint16_t)metric_len;
    s->rule = (uint8_t)rule;
    s->flags = (uint8_t)((s->flags & ~SERIES_DIRTY) | dirty);
    free(tmp);
    for (int w = 0; w < TG_ENGINE_SERIES_WINDOWS; w++)
        if (s->win[w].count && engine__bucket_add(ps, s->win[w].start + en->ec->window_ms, s) != TG_OK)
            return TG_ERR_NOMEM;
    return TG_OK;
}
