/*
 * ack.c - per-device durable views and the readings on their way to durability (ack.h).
 *
 * Readings wait in a ring ordered by rid (the order the pipeline appends records). A
 * commit settles a prefix of it; a Kafka confirmation or a drop settles one entry, found by
 * binary search, and leaves a hole that is popped once it reaches the front. Devices live
 * in a slab indexed by id through a strmap (common/strmap.h); devices whose view is due sit
 * in a list.
 */
#include "ack.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "record.h"
#include "strmap.h"

#define NONE UINT32_MAX
#define PREFIX_MAX 128

struct dev {
    char id[TG_DEVICE_ID_MAX + 1];
    bool has_boot;
    bool due;       /* in the due list */
    bool distrust;  /* tg_acker_refused(): repeats are never taken as durable */
    struct tg_ack_msg view;
    int64_t last_sent_ms;
    bool sent_once;
    /* readings of this device waiting in the ring, and the seq span of those of pboot */
    uint32_t waiting;
    uint64_t pboot, pmin, pmax;
};

enum { W_WAITING = 0, W_DONE };

struct wait {
    uint64_t rid, boot, seq;
    uint32_t dev;
    uint8_t state;
};

struct tg_acker {
    char prefix[PREFIX_MAX + 1];
    size_t prefix_len;
    int64_t min_interval_ms;
    size_t max_devices;
    bool trust_repeats;
    tg_ack_publish_fn publish;
    void *publish_ud;

    struct dev *devs;
    size_t n_devs, cap_devs;
    struct tg_strmap *index; /* id -> index in devs */

    struct wait *ring;
    size_t ring_cap, ring_head, ring_len; /* ring_cap: power of two */

    uint32_t *due;
    size_t n_due, cap_due;

    struct tg_acker_stats st;
    struct tg_counter *c_sent, *c_failed, *c_gaps, *c_untracked;
    struct tg_gauge *g_due, *g_waiting, *g_devices;
};

tg_err tg_acker_new(const struct tg_ack_opts *opts, struct tg_metrics *metrics,
                    struct tg_acker **out)
{
    *out = NULL;
    size_t plen = opts->topic_prefix ? strlen(opts->topic_prefix) : 0;
    if (plen > PREFIX_MAX || opts->max_devices == 0)
        return TG_ERR_USAGE;
    struct tg_acker *ak = calloc(1, sizeof *ak);
    if (!ak)
        return TG_ERR_NOMEM;
    memcpy(ak->prefix, opts->topic_prefix ? opts->topic_prefix : "", plen + 1);
    ak->prefix_len = plen;
    ak->min_interval_ms = opts->min_interval_ms;
    ak->max_devices = opts->max_devices;
    ak->trust_repeats = opts->trust_repeats;
    ak->index = tg_strmap_new();
    ak->ring_cap = 1024;
    ak->ring = malloc(ak->ring_cap * sizeof *ak->ring);
    if (!ak->index || !ak->ring) {
        tg_acker_destroy(ak);
        return TG_ERR_NOMEM;
    }
    if (metrics) {
        ak->c_sent = tg_metrics_counter(metrics, "tidegate_acks_sent_total",
                                        "Durable acknowledgements published to devices", NULL);
        ak->c_failed = tg_metrics_counter(metrics, "tidegate_acks_failed_total",
                                          "Durable acknowledgements that could not be queued "
                                          "for the MQTT connection (the node resends)",
                                          NULL);
        ak->c_gaps = tg_metrics_counter(metrics, "tidegate_ack_gaps_skipped_total",
                                        "Oldest gaps folded into a device's cumulative ack "
                                        "point because it had too many",
                                        NULL);
        ak->c_untracked = tg_metrics_counter(metrics, "tidegate_ack_untracked_total",
                                             "Readings of devices beyond ack.max_devices: "
                                             "never acknowledged",
                                             NULL);
        ak->g_due = tg_metrics_gauge(metrics, "tidegate_ack_devices_pending",
                                     "Devices whose acknowledgement waits for its minimum "
                                     "interval or the next commit",
                                     NULL);
        ak->g_waiting = tg_metrics_gauge(metrics, "tidegate_ack_readings_waiting",
                                         "Readings taken and not yet durable", NULL);
        ak->g_devices = tg_metrics_gauge(metrics, "tidegate_ack_devices",
                                         "Devices the acker follows", NULL);
    }
    *out = ak;
    return TG_OK;
}

void tg_acker_destroy(struct tg_acker *ak)
{
    if (!ak)
        return;
    free(ak->devs);
    tg_strmap_destroy(ak->index);
    free(ak->ring);
    free(ak->due);
    free(ak);
}

void tg_acker_set_publisher(struct tg_acker *ak, tg_ack_publish_fn fn, void *ud)
{
    ak->publish = fn;
    ak->publish_ud = ud;
}

static uint32_t find_dev(const struct tg_acker *ak, const char *id, size_t n)
{
    uint32_t i;
    return tg_strmap_get(ak->index, id, n, &i) ? i : NONE;
}

/* The device's index, added when new; NONE beyond max_devices or out of memory. */
static uint32_t get_dev(struct tg_acker *ak, const char *id, size_t n)
{
    if (n == 0 || n > TG_DEVICE_ID_MAX)
        return NONE;
    uint32_t i = find_dev(ak, id, n);
    if (i != NONE)
        return i;
    if (ak->n_devs >= ak->max_devices)
        return NONE;
    if (ak->n_devs == ak->cap_devs) {
        size_t cap = ak->cap_devs ? ak->cap_devs * 2 : 256;
        if (cap > ak->max_devices)
            cap = ak->max_devices;
        struct dev *nd = realloc(ak->devs, cap * sizeof *nd);
        if (!nd)
            return NONE;
        ak->devs = nd;
        ak->cap_devs = cap;
    }
    i = (uint32_t)ak->n_devs;
    if (tg_strmap_put(ak->index, id, n, i) != TG_OK)
        return NONE;
    ak->n_devs++;
    struct dev *d = &ak->devs[i];
    memset(d, 0, sizeof *d);
    memcpy(d->id, id, n);
    d->id[n] = '\0';
    return i;
}

static void make_due(struct tg_acker *ak, uint32_t i)
{
    struct dev *d = &ak->devs[i];
    if (d->due)
        return;
    if (ak->n_due == ak->cap_due) {
        size_t cap = ak->cap_due ? ak->cap_due * 2 : 256;
        uint32_t *nd = realloc(ak->due, cap * sizeof *nd);
        if (!nd)
            return; /* the next repeat makes it due again */
        ak->due = nd;
        ak->cap_due = cap;
    }
    ak->due[ak->n_due++] = i;
    d->due = true;
}

/* Folds the ranges that join the cumulative point into it. */
static void absorb(struct tg_ack_msg *v)
{
    while (v->n_ranges > 0 && v->has_upto && v->ranges[0].lo <= v->upto + 1) {
        if (v->ranges[0].hi > v->upto)
            v->upto = v->ranges[0].hi;
        memmove(&v->ranges[0], &v->ranges[1], (v->n_ranges - 1) * sizeof v->ranges[0]);
        v->n_ranges--;
    }
}

/* Adds seq to the view: true when the view changed. */
static bool view_add(struct tg_acker *ak, struct tg_ack_msg *v, uint64_t seq)
{
    if (tg_ack_msg_covers(v, v->boot, seq))
        return false;
    if ((v->has_upto && seq == v->upto + 1) || (!v->has_upto && seq == 0)) {
        v->has_upto = true;
        v->upto = seq;
        absorb(v);
        return true;
    }
    /* Into the sorted ranges, one slot more than a message holds, merging neighbours. */
    struct tg_ack_range r[TG_ACK_MAX_RANGES + 1];
    unsigned n = 0, k = 0;
    while (k < v->n_ranges && v->ranges[k].hi + 1 < seq)
        r[n++] = v->ranges[k++];
    struct tg_ack_range cur = {seq, seq};
    if (k < v->n_ranges && v->ranges[k].hi + 1 == seq)
        cur.lo = v->ranges[k++].lo;
    if (k < v->n_ranges && v->ranges[k].lo == seq + 1)
        cur.hi = v->ranges[k++].hi;
    r[n++] = cur;
    while (k < v->n_ranges)
        r[n++] = v->ranges[k++];
    unsigned first = 0;
    if (n > TG_ACK_MAX_RANGES) {
        /* Too many gaps: the oldest is taken as settled (see ack.h). */
        v->has_upto = true;
        v->upto = r[0].hi;
        first = 1;
        ak->st.gaps_skipped++;
        if (ak->c_gaps)
            tg_counter_inc(ak->c_gaps);
    }
    v->n_ranges = n - first;
    memcpy(v->ranges, &r[first], v->n_ranges * sizeof r[0]);
    absorb(v);
    return true;
}

/* (boot, seq) of device i is durable. */
static void settle(struct tg_acker *ak, uint32_t i, uint64_t boot, uint64_t seq)
{
    struct dev *d = &ak->devs[i];
    if (!d->has_boot || boot > d->view.boot) {
        /* A new boot: the node's earlier boots left with its RAM; follow only this one. */
        memset(&d->view, 0, sizeof d->view);
        d->view.boot = boot;
        d->has_boot = true;
    } else if (boot < d->view.boot) {
        return;
    }
    if (view_add(ak, &d->view, seq))
        make_due(ak, i);
}

static struct wait *ring_at(struct tg_acker *ak, size_t k)
{
    return &ak->ring[(ak->ring_head + k) & (ak->ring_cap - 1)];
}

static void pop_done(struct tg_acker *ak)
{
    while (ak->ring_len > 0 && ring_at(ak, 0)->state == W_DONE) {
        ak->ring_head = (ak->ring_head + 1) & (ak->ring_cap - 1);
        ak->ring_len--;
    }
}

/* Takes entry w out of the wait: settles it (durable) or forgets it (lost). */
static void finish(struct tg_acker *ak, struct wait *w, bool durable)
{
    struct dev *d = &ak->devs[w->dev];
    d->waiting--;
    w->state = W_DONE;
    if (durable)
        settle(ak, w->dev, w->boot, w->seq);
}

void tg_acker_track(struct tg_acker *ak, const char *device, size_t device_len, uint64_t boot,
                    uint64_t seq, uint64_t rid)
{
    uint32_t i = get_dev(ak, device, device_len);
    if (i == NONE) {
        ak->st.untracked++;
        if (ak->c_untracked)
            tg_counter_inc(ak->c_untracked);
        return;
    }
    if (ak->ring_len == ak->ring_cap) {
        /* Grow and unwrap: the ring stays ordered by rid from ring_head. */
        size_t cap = ak->ring_cap * 2;
        struct wait *nr = malloc(cap * sizeof *nr);
        if (!nr) {
            ak->st.untracked++; /* never acknowledged: the node resends it */
            return;
        }
        for (size_t k = 0; k < ak->ring_len; k++)
            nr[k] = *ring_at(ak, k);
        free(ak->ring);
        ak->ring = nr;
        ak->ring_cap = cap;
        ak->ring_head = 0;
    }
    *ring_at(ak, ak->ring_len++) =
        (struct wait){.rid = rid, .boot = boot, .seq = seq, .dev = i, .state = W_WAITING};
    struct dev *d = &ak->devs[i];
    if (d->waiting == 0 || d->pboot != boot) {
        if (d->waiting > 0) { /* two boots waiting: no span tells them apart */
            d->pmin = 0;
            d->pmax = UINT64_MAX;
        } else {
            d->pmin = d->pmax = seq;
        }
        d->pboot = boot;
    } else {
        if (seq < d->pmin)
            d->pmin = seq;
        if (seq > d->pmax)
            d->pmax = seq;
    }
    d->waiting++;
}

/* The waiting entry for rid, or NULL. */
static struct wait *find_wait(struct tg_acker *ak, uint64_t rid)
{
    size_t lo = 0, hi = ak->ring_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ring_at(ak, mid)->rid < rid)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == ak->ring_len)
        return NULL;
    struct wait *w = ring_at(ak, lo);
    return w->rid == rid && w->state == W_WAITING ? w : NULL;
}

void tg_acker_confirmed(struct tg_acker *ak, uint64_t rid)
{
    struct wait *w = find_wait(ak, rid);
    if (w) {
        finish(ak, w, true);
        pop_done(ak);
    }
}

void tg_acker_lost(struct tg_acker *ak, uint64_t rid)
{
    struct wait *w = find_wait(ak, rid);
    if (w) {
        finish(ak, w, false);
        pop_done(ak);
    }
}

void tg_acker_durable_below(struct tg_acker *ak, uint64_t limit)
{
    while (ak->ring_len > 0 && ring_at(ak, 0)->rid < limit) {
        struct wait *w = ring_at(ak, 0);
        if (w->state == W_WAITING)
            finish(ak, w, true);
        ak->ring_head = (ak->ring_head + 1) & (ak->ring_cap - 1);
        ak->ring_len--;
    }
    pop_done(ak);
}

void tg_acker_repeat(struct tg_acker *ak, const char *device, size_t device_len, uint64_t boot,
                     uint64_t seq)
{
    uint32_t i = find_dev(ak, device, device_len);
    struct dev *d = i == NONE ? NULL : &ak->devs[i];
    if (d && d->has_boot && tg_ack_msg_covers(&d->view, boot, seq)) {
        make_due(ak, i); /* the node missed the ack: send it again */
        return;
    }
    if (d && d->waiting > 0 && (d->pboot != boot || (seq >= d->pmin && seq <= d->pmax)))
        return; /* probably waiting for its commit: acknowledged then */
    if (!ak->trust_repeats || (d && d->distrust))
        return;
    /* Taken by an earlier run of the gateway (the dedup window came from the journal). */
    if (i == NONE)
        i = get_dev(ak, device, device_len);
    if (i != NONE)
        settle(ak, i, boot, seq);
}

void tg_acker_settle(struct tg_acker *ak, const char *device, size_t device_len, uint64_t boot,
                     uint64_t seq)
{
    uint32_t i = get_dev(ak, device, device_len);
    if (i != NONE)
        settle(ak, i, boot, seq);
}

void tg_acker_refused(struct tg_acker *ak, const char *device, size_t device_len)
{
    uint32_t i = get_dev(ak, device, device_len);
    if (i != NONE)
        ak->devs[i].distrust = true;
}

void tg_acker_flush(struct tg_acker *ak, int64_t now_ms)
{
    char topic[PREFIX_MAX + TG_DEVICE_ID_MAX + 1];
    uint8_t buf[TG_ACK_MSG_MAX_BYTES];
    memcpy(topic, ak->prefix, ak->prefix_len);
    size_t keep = 0;
    for (size_t k = 0; k < ak->n_due; k++) {
        uint32_t i = ak->due[k];
        struct dev *d = &ak->devs[i];
        if (!ak->publish || (d->sent_once && now_ms - d->last_sent_ms < ak->min_interval_ms)) {
            ak->due[keep++] = i;
            continue;
        }
        d->due = false;
        d->sent_once = true;
        d->last_sent_ms = now_ms;
        size_t len = tg_ack_msg_encode(&d->view, buf, sizeof buf);
        size_t id_len = strlen(d->id);
        memcpy(topic + ak->prefix_len, d->id, id_len + 1);
        if (len > 0 && ak->publish(ak->publish_ud, topic, buf, len) == 0) {
            ak->st.sent++;
            if (ak->c_sent)
                tg_counter_inc(ak->c_sent);
        } else {
            ak->st.publish_failed++;
            if (ak->c_failed)
                tg_counter_inc(ak->c_failed);
        }
    }
    ak->n_due = keep;
    if (ak->g_due) {
        tg_gauge_set(ak->g_due, (double)ak->n_due);
        tg_gauge_set(ak->g_waiting, (double)ak->ring_len);
        tg_gauge_set(ak->g_devices, (double)ak->n_devs);
    }
}

void tg_acker_stats(const struct tg_acker *ak, struct tg_acker_stats *out)
{
    *out = ak->st;
    out->devices = ak->n_devs;
    out->devices_due = ak->n_due;
    out->readings_waiting = ak->ring_len;
}

bool tg_acker_view(const struct tg_acker *ak, const char *device, struct tg_ack_msg *out)
{
    uint32_t i = find_dev(ak, device, strlen(device));
    if (i == NONE || !ak->devs[i].has_boot)
        return false;
    *out = ak->devs[i].view;
    return true;
}

tg_err tg_acker_from_config(const struct tg_config *cfg, struct tg_metrics *metrics,
                            struct tg_acker **out)
{
    *out = NULL;
    if (!tg_config_get_bool(cfg, "ack", "enabled"))
        return TG_OK;
    /* In durable mode the dedup window saved in the journal never runs ahead of it, so a
     * repeat the window knows was committed; in spill mode it may have died in memory. */
    struct tg_ack_opts o = {
        .topic_prefix = tg_config_get_str(cfg, "ack", "topic_prefix"),
        .min_interval_ms = tg_config_get_ms(cfg, "ack", "min_interval_ms"),
        .max_devices = (size_t)tg_config_get_int(cfg, "ack", "max_devices"),
        .trust_repeats = strcmp(tg_config_get_str(cfg, "journal", "mode"), "durable") == 0,
    };
    return tg_acker_new(&o, metrics, out);
}
