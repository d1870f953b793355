/*
 * audit_compare.c - the comparison of `tidegate-sim audit` (audit.h): what reached Kafka
 * against the ledger. It knows nothing of Kafka, so it is unit-tested on synthetic input.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "audit_internal.h"
#include "strmap.h"

bool audit__problem(const struct adev *dev)
{
    return dev->ledger >= 0 && (dev->lost || dev->duplicated || dev->reordered ||
                                dev->unexpected || dev->dlq_missing);
}

void tg_sim_audit_clock_slack(struct tg_sim_audit *au, int64_t slack_ms)
{
    au->clock_slack_ms = slack_ms;
}

int audit__grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap : 8;
    while (cap2 < need)
        cap2 *= 2;
    void *q = realloc(*p, cap2 * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = cap2;
    return 0;
}

struct tg_sim_audit *tg_sim_audit_new(void)
{
    struct tg_sim_audit *au = calloc(1, sizeof(struct tg_sim_audit));
    if (!au)
        return NULL;
    au->clock_slack_ms = TG_SIM_AUDIT_DEFAULT_CLOCK_SLACK_MS;
    if (!(au->index = tg_strmap_new())) {
        free(au);
        return NULL;
    }
    return au;
}

void tg_sim_audit_destroy(struct tg_sim_audit *au)
{
    if (!au)
        return;
    for (size_t d = 0; d < au->n_devs; d++) {
        struct adev *dev = &au->devs[d];
        for (size_t b = 0; b < dev->n_boots; b++) {
            tg_seqset_free(&dev->boots[b].seen);
            tg_seqset_free(&dev->boots[b].dlq);
        }
        free(dev->boots);
        free(dev->dlq_hashes);
        free(dev->id);
    }
    free(au->devs);
    tg_strmap_destroy(au->index);
    free(au->dlq);
    for (size_t i = 0; i < au->n_reasons; i++)
        free(au->reasons[i].reason);
    free(au->reasons);
    free(au->samples);
    free(au);
}

/* ------------------------------------------------------------------------------------------
 * Devices and the seqs seen
 */

/* The audit's device for id, created on first sight. -1 when out of memory. */
static long device_get(struct tg_sim_audit *au, const char *id)
{
    uint32_t d;
    if (tg_strmap_get(au->index, id, strlen(id), &d))
        return (long)d;
    if (au->n_devs >= UINT32_MAX - 1)
        return -1;
    if (audit__grow((void **)&au->devs, &au->cap_devs, au->n_devs + 1, sizeof *au->devs) != 0)
        return -1;
    struct adev *dev = &au->devs[au->n_devs];
    *dev = (struct adev){.id = strdup(id), .ledger = -1};
    if (!dev->id)
        return -1;
    if (au->lg)
        dev->ledger = tg_ledger_find_device(au->lg, id);
    if (tg_strmap_put(au->index, id, strlen(id), (uint32_t)au->n_devs) != TG_OK) {
        free(dev->id);
        return -1;
    }
    return (long)au->n_devs++;
}

static struct seen_boot *boot_find(const struct adev *dev, uint64_t boot)
{
    for (size_t b = dev->n_boots; b-- > 0;)
        if (dev->boots[b].boot == boot)
            return &dev->boots[b];
    return NULL;
}

static struct seen_boot *boot_get(struct adev *dev, uint64_t boot)
{
    struct seen_boot *sb = boot_find(dev, boot);
    if (sb)
        return sb;
    if (audit__grow((void **)&dev->boots, &dev->cap_boots, dev->n_boots + 1,
                    sizeof *dev->boots) != 0)
        return NULL;
    sb = &dev->boots[dev->n_boots++];
    *sb = (struct seen_boot){.boot = boot};
    return sb;
}

/* ------------------------------------------------------------------------------------------
 * Input
 */

/* A record of a ledger device that another run sent: the simulator gives each device one
 * boot per run (boot_state.h), so another boot than the ledger's is another run's (earlier:
 * lower; later, when an older ledger is audited: higher); and a record the gateway received
 * before this run started is an earlier run's even with the same boot (the boot state was
 * lost). With --follow, records read before the ledger appeared are judged by their boot
 * only. */
static bool other_run(const struct tg_sim_audit *au, const struct adev *dev, uint64_t boot,
                      int64_t gw_ts_ms)
{
    uint64_t run_boot = tg_ledger_device_boot(au->lg, dev->ledger);
    if (run_boot != 0 && boot != run_boot)
        return true;
    return au->has_run && gw_ts_ms != -1 && gw_ts_ms < au->run_start_ms - au->clock_slack_ms;
}

int tg_sim_audit_telemetry(struct tg_sim_audit *au, const struct tg_sim_audit_rec *rec)
{
    long d = device_get(au, rec->device);
    if (d < 0)
        return -1;
    struct adev *dev = &au->devs[d];
    au->records++;
    dev->records++;
    if (au->lg && dev->ledger >= 0 && other_run(au, dev, rec->boot, rec->gw_ts_ms)) {
        /* Not this run's: neither delivered nor a duplicate of this run's reading. */
        dev->other_runs++;
        au->other_runs++;
        return 0;
    }
    struct seen_boot *sb = boot_get(dev, rec->boot);
    if (!sb)
        return -1;
    int added = tg_seqset_add(&sb->seen, rec->seq);
    if (added < 0)
        return -1;
    sb->records++;
    if (added == 0) {
        /* A later copy is a duplicate, and only that: it is not also counted as reordered. */
        dev->duplicated++;
        au->duplicated++;
        sb->duplicated++;
        return 0;
    }
    if (sb->any && sb->partition == rec->partition && rec->seq < sb->max_seq) {
        /* Received by the gateway after the higher seq, or in the same millisecond (the
         * receive time's resolution: a node sends a new reading and its resends in one
         * burst): the node sent it again later (its first copy was lost on the way); the
         * pipeline kept the order it was given. */
        if (rec->gw_ts_ms != -1 && sb->max_gw_ts != -1 && rec->gw_ts_ms >= sb->max_gw_ts) {
            dev->resent++;
            sb->resent++;
        } else {
            dev->reordered++;
            au->reordered++;
            sb->reordered++;
        }
    }
    if (!sb->any || sb->partition != rec->partition || rec->seq > sb->max_seq) {
        sb->any = true;
        sb->partition = rec->partition;
        sb->max_seq = rec->seq;
        sb->max_gw_ts = rec->gw_ts_ms;
    }
    if (au->lg && dev->ledger >= 0 &&
        tg_ledger_fate(au->lg, dev->ledger, rec->boot, rec->seq) == TG_LEDGER_RELEASED) {
        au->released_seen++;
        /* Dead-lettered first (e.g. one copy rejected, a later one accepted after the clock
         * moved): counted once, as delivered now. */
        if (tg_seqset_contains(&sb->dlq, rec->seq))
            au->released_dlq--;
    }
    if (rec->end_ms != -1 || rec->gw_ts_ms != -1) {
        if (audit__grow((void **)&au->samples, &au->cap_samples, au->n_samples + 1,
                        sizeof *au->samples) != 0)
            return -1;
        au->samples[au->n_samples++] = (struct sample){
            .dev = (uint32_t)d,
            .latency_ms = rec->end_ms != -1 ? rec->end_ms - rec->ts_ms : INT64_MIN,
            .gw_latency_ms = rec->gw_ts_ms != -1 ? rec->gw_ts_ms - rec->ts_ms : INT64_MIN,
        };
    }
    return 0;
}

void tg_sim_audit_undecodable(struct tg_sim_audit *au)
{
    au->undecodable++;
}

static bool dlq_is_released(const struct tg_sim_audit *au, const struct dlq_reading *r)
{
    const struct adev *dev = &au->devs[r->dev];
    return dev->ledger >= 0 &&
           tg_ledger_fate(au->lg, dev->ledger, r->boot, r->seq) == TG_LEDGER_RELEASED;
}

/* Counts the DLQ payload at dev->dlq_hashes[i] as matched when no more copies of it came
 * before it than the device published malformed payloads with that hash. */
static bool malformed_matches(const struct tg_sim_audit *au, const struct adev *dev, size_t i)
{
    uint64_t h = dev->dlq_hashes[i], copies = 0;
    for (size_t k = 0; k <= i; k++)
        copies += dev->dlq_hashes[k] == h;
    return copies <= tg_ledger_malformed_count(au->lg, dev->ledger, h);
}

int tg_sim_audit_dlq(struct tg_sim_audit *au, const char *reason, const char *device,
                     bool is_reading, uint64_t boot, uint64_t seq, uint64_t payload_hash)
{
    if (!reason)
        reason = "(none)";
    size_t i;
    for (i = 0; i < au->n_reasons; i++)
        if (strcmp(au->reasons[i].reason, reason) == 0)
            break;
    if (i == au->n_reasons) {
        if (audit__grow((void **)&au->reasons, &au->cap_reasons, au->n_reasons + 1,
                        sizeof *au->reasons) != 0)
            return -1;
        au->reasons[i] = (struct reason_count){.reason = strdup(reason)};
        if (!au->reasons[i].reason)
            return -1;
        au->n_reasons++;
    }
    au->reasons[i].n++;
    au->dlq_records++;
    if (!is_reading || !device) {
        au->dlq_malformed++;
        if (!device)
            return 0; /* whose it is is unknown: it matches nothing the ledger expects */
        long d = device_get(au, device);
        if (d < 0)
            return -1;
        struct adev *dev = &au->devs[d];
        if (audit__grow((void **)&dev->dlq_hashes, &dev->cap_dlq_hashes, dev->n_dlq_hashes + 1,
                        sizeof *dev->dlq_hashes) != 0)
            return -1;
        dev->dlq_hashes[dev->n_dlq_hashes++] = payload_hash;
        if (au->lg && dev->ledger >= 0 && malformed_matches(au, dev, dev->n_dlq_hashes - 1))
            au->malformed_matched++;
        return 0;
    }
    long d = device_get(au, device);
    if (d < 0 ||
        audit__grow((void **)&au->dlq, &au->cap_dlq, au->n_dlq + 1, sizeof *au->dlq) != 0)
        return -1;
    au->dlq[au->n_dlq] = (struct dlq_reading){(uint32_t)d, (uint32_t)i, boot, seq};
    au->n_dlq++;
    struct seen_boot *sb = boot_get(&au->devs[d], boot);
    if (!sb)
        return -1;
    int added = tg_seqset_add(&sb->dlq, seq);
    if (added < 0)
        return -1;
    /* Once per (device, boot, seq), and not when it is in the telemetry topic already. */
    if (added == 1 && au->lg && !tg_seqset_contains(&sb->seen, seq) &&
        dlq_is_released(au, &au->dlq[au->n_dlq - 1]))
        au->released_dlq++;
    return 0;
}

void tg_sim_audit_expect_dlq(struct tg_sim_audit *au, bool expect)
{
    au->expect_dlq = expect;
}

void tg_sim_audit_offset_gap(struct tg_sim_audit *au, int32_t partition, int64_t missing)
{
    (void)partition;
    if (missing > 0)
        au->offset_gaps += (uint64_t)missing;
}

void tg_sim_audit_latency_source(struct tg_sim_audit *au, bool log_append_time)
{
    au->log_append_time = log_append_time;
}

void tg_sim_audit_backlog_record(struct tg_sim_audit *au)
{
    au->backlog_records++;
}

uint64_t tg_sim_audit_records(const struct tg_sim_audit *au)
{
    return au->records + au->dlq_records;
}

struct count_released {
    const struct tg_sim_audit *au;
    const struct adev *dev;
    const struct tg_seqset *skip; /* seqs not to count (NULL: none) */
    uint64_t boot;
    uint64_t n;
};

static bool count_released_fn(void *ud, uint64_t seq)
{
    struct count_released *cr = ud;
    if ((!cr->skip || !tg_seqset_contains(cr->skip, seq)) &&
        tg_ledger_fate(cr->au->lg, cr->dev->ledger, cr->boot, seq) == TG_LEDGER_RELEASED)
        cr->n++;
    return true;
}

int tg_sim_audit_set_ledger(struct tg_sim_audit *au, const struct tg_ledger *lg)
{
    if (au->lg) {
        errno = EINVAL;
        return -1;
    }
    au->lg = lg;
    tg_ledger_totals(lg, &au->totals);
    au->has_run = tg_ledger_run(lg, &au->run_start_ms, &au->run_end_ms);
    /* Every device of the ledger gets an entry, so one that delivered nothing is reported. */
    size_t n = tg_ledger_device_count(lg);
    for (size_t i = 0; i < n; i++)
        if (device_get(au, tg_ledger_device_id(lg, (int)i)) < 0)
            return -1;
    /* Records that came before the ledger (--follow): count what they complete. */
    for (size_t d = 0; d < au->n_devs; d++) {
        struct adev *dev = &au->devs[d];
        dev->ledger = tg_ledger_find_device(lg, dev->id);
        if (dev->ledger < 0)
            continue;
        for (size_t i = 0; i < dev->n_dlq_hashes; i++)
            if (malformed_matches(au, dev, i))
                au->malformed_matched++;
        uint64_t run_boot = tg_ledger_device_boot(lg, dev->ledger);
        for (size_t b = 0; b < dev->n_boots; b++) {
            struct seen_boot *sb = &dev->boots[b];
            if (run_boot != 0 && sb->boot != run_boot) {
                /* Another run's boot: take its records back out of this run's counts. */
                sb->other_run = true;
                dev->other_runs += sb->records;
                au->other_runs += sb->records;
                dev->duplicated -= sb->duplicated;
                au->duplicated -= sb->duplicated;
                dev->reordered -= sb->reordered;
                au->reordered -= sb->reordered;
                dev->resent -= sb->resent;
                continue;
            }
            struct count_released cr = {au, dev, NULL, sb->boot, 0};
            tg_seqset_each(&sb->seen, count_released_fn, &cr);
            au->released_seen += cr.n;
            /* Dead-lettered and not delivered, each once. */
            cr = (struct count_released){au, dev, &sb->seen, sb->boot, 0};
            tg_seqset_each(&sb->dlq, count_released_fn, &cr);
            au->released_dlq += cr.n;
        }
    }
    return 0;
}

bool tg_sim_audit_complete(const struct tg_sim_audit *au)
{
    if (!au->lg)
        return false;
    if (au->released_seen + au->released_dlq < au->totals.released)
        return false;
    return !au->expect_dlq || au->malformed_matched >= au->totals.malformed;
}

/* ------------------------------------------------------------------------------------------
 * The comparison
 */

static int dlq_cmp(const void *a, const void *b)
{
    const struct dlq_reading *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    if (x->boot != y->boot)
        return x->boot < y->boot ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

enum dlq_verdict { DLQ_ABSENT, DLQ_EXCUSED, DLQ_UNEXPLAINED };

/* Whether a released reading is in the DLQ, and if so whether the ledger explains it: the
 * only rejection the simulator provokes on a reading is clock_skew, for a reading it took
 * with a skewed clock. Any other rejection of a released reading is the pipeline's loss.
 * au->dlq is sorted (tg_sim_audit_finish). */
static enum dlq_verdict dlq_verdict(const struct tg_sim_audit *au, const struct adev *dev,
                                    uint32_t dev_index, uint64_t boot, uint64_t seq)
{
    struct dlq_reading key = {.dev = dev_index, .boot = boot, .seq = seq};
    const struct dlq_reading *hit =
        au->n_dlq > 0 ? bsearch(&key, au->dlq, au->n_dlq, sizeof *au->dlq, dlq_cmp) : NULL;
    if (!hit)
        return DLQ_ABSENT;
    if (!tg_ledger_is_skewed(au->lg, dev->ledger, boot, seq))
        return DLQ_UNEXPLAINED;
    /* every copy of it in the DLQ, found around the one bsearch hit */
    size_t at = (size_t)(hit - au->dlq), lo = at, hi = at + 1;
    while (lo > 0 && dlq_cmp(&au->dlq[lo - 1], &key) == 0)
        lo--;
    while (hi < au->n_dlq && dlq_cmp(&au->dlq[hi], &key) == 0)
        hi++;
    for (size_t i = lo; i < hi; i++)
        if (strcmp(au->reasons[au->dlq[i].reason].reason, "clock_skew") == 0)
            return DLQ_EXCUSED;
    return DLQ_UNEXPLAINED;
}

struct released_walk {
    struct tg_sim_audit *au;
    struct adev *dev;
    uint32_t dev_index;
    struct seen_boot *sb; /* cache for the current boot */
    uint64_t sb_boot;
    bool sb_valid;
};

static void note_lost(struct adev *dev, uint64_t boot, uint64_t seq)
{
    dev->lost++;
    if (dev->n_lost_ranges > 0 && dev->n_lost_ranges <= LOST_RANGES_KEPT) {
        struct seq_range *last = &dev->lost_ranges[dev->n_lost_ranges - 1];
        if (last->boot == boot && last->hi + 1 == seq) {
            last->hi = seq;
            return;
        }
    }
    if (dev->n_lost_ranges < LOST_RANGES_KEPT)
        dev->lost_ranges[dev->n_lost_ranges] = (struct seq_range){boot, seq, seq};
    dev->n_lost_ranges++;
}

static bool released_fn(void *ud, uint64_t boot, uint64_t seq)
{
    struct released_walk *w = ud;
    if (!w->sb_valid || w->sb_boot != boot) {
        w->sb = boot_find(w->dev, boot);
        w->sb_boot = boot;
        w->sb_valid = true;
    }
    if (w->sb && tg_seqset_contains(&w->sb->seen, seq)) {
        w->dev->delivered++;
        return true;
    }
    switch (dlq_verdict(w->au, w->dev, w->dev_index, boot, seq)) {
    case DLQ_EXCUSED:
        w->dev->dead_lettered++;
        break;
    case DLQ_UNEXPLAINED:
        w->dev->rejected++;
        note_lost(w->dev, boot, seq);
        break;
    case DLQ_ABSENT:
        note_lost(w->dev, boot, seq);
        break;
    }
    return true;
}

struct seen_walk {
    const struct tg_ledger *lg;
    struct adev *dev;
    uint64_t boot;
};

static bool seen_fn(void *ud, uint64_t seq)
{
    struct seen_walk *w = ud;
    enum tg_ledger_fate fate =
        w->dev->ledger >= 0 ? tg_ledger_fate(w->lg, w->dev->ledger, w->boot, seq)
                            : TG_LEDGER_UNKNOWN;
    switch (fate) {
    case TG_LEDGER_RELEASED:
        break; /* counted by the walk over the ledger */
    case TG_LEDGER_UNCONFIRMED:
        w->dev->unconfirmed_arrived++;
        break;
    case TG_LEDGER_DROPPED:
        w->dev->dropped_arrived++;
        break;
    case TG_LEDGER_UNKNOWN:
        w->dev->unexpected++;
        break;
    }
    return true;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentiles of v[0..n), which is sorted in place. */
static struct percentiles percentiles_of(int64_t *v, size_t n)
{
    struct percentiles p = {.n = n};
    if (n == 0)
        return p; /* also keeps v, which may be empty, away from qsort */
    qsort(v, n, sizeof *v, cmp_i64);
    double q[3] = {0.50, 0.90, 0.99};
    double *dst[3] = {&p.p50, &p.p90, &p.p99};
    for (int i = 0; i < 3; i++) {
        size_t rank = (size_t)(q[i] * (double)n + 0.999999);
        if (rank < 1)
            rank = 1;
        if (rank > n)
            rank = n;
        *dst[i] = (double)v[rank - 1];
    }
    p.max = (double)v[n - 1];
    return p;
}

static int latency_figures(struct tg_sim_audit *au)
{
    int64_t *lat = malloc((au->n_samples ? au->n_samples : 1) * sizeof *lat);
    int64_t *gw = malloc((au->n_samples ? au->n_samples : 1) * sizeof *gw);
    if (!lat || !gw) {
        free(lat);
        free(gw);
        return -1;
    }
    size_t n_lat = 0, n_gw = 0;
    for (size_t i = 0; i < au->n_samples; i++) {
        const struct sample *s = &au->samples[i];
        const struct adev *dev = &au->devs[s->dev];
        if (dev->ledger >= 0) {
            struct tg_ledger_faults faults;
            tg_ledger_device_faults(au->lg, dev->ledger, &faults);
            if (faults.skewed > 0) {
                au->skewed_samples++;
                continue;
            }
        }
        if (s->latency_ms != INT64_MIN)
            lat[n_lat++] = s->latency_ms;
        if (s->gw_latency_ms != INT64_MIN)
            gw[n_gw++] = s->gw_latency_ms;
    }
    struct percentiles p = percentiles_of(lat, n_lat);
    au->res.latency_samples = p.n;
    au->res.latency_p50_ms = p.p50;
    au->res.latency_p90_ms = p.p90;
    au->res.latency_p99_ms = p.p99;
    au->res.latency_max_ms = p.max;
    au->gw_latency = percentiles_of(gw, n_gw);
    free(lat);
    free(gw);
    return 0;
}

int tg_sim_audit_finish(struct tg_sim_audit *au, struct tg_sim_audit_result *out)
{
    if (!au->lg || au->finished) {
        errno = EINVAL;
        return -1;
    }
    au->finished = true;
    if (au->n_dlq > 0)
        qsort(au->dlq, au->n_dlq, sizeof *au->dlq, dlq_cmp);
    struct tg_sim_audit_result *r = &au->res;
    *r = (struct tg_sim_audit_result){
        .records = au->records,
        .undecodable = au->undecodable,
        .other_runs = au->other_runs,
        .dlq_records = au->dlq_records,
        .dlq_malformed = au->dlq_malformed,
        .dlq_readings = au->n_dlq,
        .offset_gaps = au->offset_gaps,
    };
    for (size_t d = 0; d < au->n_devs; d++) {
        struct adev *dev = &au->devs[d];
        if (dev->ledger >= 0) {
            struct released_walk w = {.au = au, .dev = dev, .dev_index = (uint32_t)d};
            tg_ledger_each_released(au->lg, dev->ledger, released_fn, &w);
        }
        if (dev->ledger < 0) {
            /* another fleet's device on the topic: reported, not judged */
            r->foreign += dev->records;
            r->foreign_devices++;
            continue;
        }
        for (size_t b = 0; b < dev->n_boots; b++) {
            if (dev->boots[b].other_run)
                continue;
            struct seen_walk w = {au->lg, dev, dev->boots[b].boot};
            tg_seqset_each(&dev->boots[b].seen, seen_fn, &w);
        }
        struct tg_ledger_faults faults;
        tg_ledger_device_faults(au->lg, dev->ledger, &faults);
        if (au->expect_dlq) {
            uint64_t matched = 0;
            for (size_t i = 0; i < dev->n_dlq_hashes; i++)
                matched += malformed_matches(au, dev, i);
            dev->dlq_missing = faults.malformed > matched ? faults.malformed - matched : 0;
        }
        r->delivered += dev->delivered;
        r->lost += dev->lost;
        r->rejected += dev->rejected;
        r->dead_lettered += dev->dead_lettered;
        r->duplicated += dev->duplicated;
        r->reordered += dev->reordered;
        r->resent += dev->resent;
        r->unexpected += dev->unexpected;
        r->unconfirmed_arrived += dev->unconfirmed_arrived;
        r->dropped_arrived += dev->dropped_arrived;
        r->dlq_missing += dev->dlq_missing;
        if (audit__problem(dev))
            r->problem_devices++;
        if (faults.connected == 0)
            r->never_connected++;
        if (faults.skewed > 0)
            au->skewed_devices++;
    }
    r->unconfirmed_missing = au->totals.unconfirmed > r->unconfirmed_arrived
                                 ? au->totals.unconfirmed - r->unconfirmed_arrived
                                 : 0;
    if (latency_figures(au) != 0)
        return -1;
    /* A run that released nothing, or whose devices never reached the broker, shows nothing
     * about the pipeline: it fails rather than pass with 0 of 0. */
    r->nothing_released = au->totals.released == 0;
    r->none_connected = au->totals.connected_devices == 0;
    r->ok = !r->nothing_released && !r->none_connected && r->lost == 0 && r->duplicated == 0 &&
            r->reordered == 0 && r->unexpected == 0 && r->dlq_missing == 0;
    *out = *r;
    return 0;
}

