/*
 * engine_window.c - event-time tumbling windows. Each partition keeps, per open window end,
 * the series with a window ending there; when the watermark passes an end, that list is
 * sorted by (device, metric) and emitted. Sorting makes the order a function of the input
 * alone, not of where series sit in the hash table (which differs after a restore).
 *
 * A series holds at most two open windows: allowed lateness is at most one window long, so
 * only the window being filled and the one before it can take records.
 */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

tg_err engine__bucket_add(struct partition_state *ps, int64_t end, struct series *s)
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

void engine__part_free(struct partition_state *ps)
{
    for (size_t i = 0; i < ps->n_buckets; i++)
        free(ps->buckets[i].v);
    free(ps->buckets);
    *ps = (struct partition_state){0};
}

int engine__series_cmp(const void *a, const void *b, void *arg)
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
    qsort_r(b.v, b.n, sizeof *b.v, engine__series_cmp, (void *)en->ec);
    for (size_t i = 0; i < b.n; i++) {
        struct series *s = b.v[i];
        for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++) {
            struct series_window *w = &s->win[k];
            /* A series restored twice may be listed twice: its second entry finds no window. */
            if (w->count && w->start + en->ec->window_ms == b.end) {
                engine__emit_aggregate(en, s, w);
                w->count = 0;
                engine__mark_dirty(en, s);
            }
        }
    }
    free(b.v);
}

void engine__close_windows(struct tg_engine *en, struct partition_state *ps, int64_t watermark)
{
    while (ps->n_buckets && ps->buckets[0].end <= watermark)
        close_first_bucket(en, ps);
}

void engine__window_merge(struct tg_engine *en, struct partition_state *ps, struct series *s,
                         int64_t ts, double x)
{
    int64_t window_ms = en->ec->window_ms;
    struct series_window *w = NULL, *free_slot = NULL;
    /* Most points fall in a window the series already has open: found without dividing
     * (a 64-bit division per point is a measurable part of its cost). */
    for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++)
        if (s->win[k].count && ts >= s->win[k].start && ts - s->win[k].start < window_ms)
            w = &s->win[k];
    if (!w) {
        int64_t start = engine__floor_div(ts, window_ms) * window_ms;
        for (int k = 0; k < TG_ENGINE_SERIES_WINDOWS; k++)
            if (!s->win[k].count && !free_slot)
                free_slot = &s->win[k];
        if (!free_slot) {
            /* Cannot happen while lateness <= window (checked at config time): both slots
             * hold windows the watermark has not passed, so one of them contains ts. */
            en->stats.late_records++;
            return;
        }
        if (engine__bucket_add(ps, start + en->ec->window_ms, s) != TG_OK)
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
