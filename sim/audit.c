/*
 * audit.c - `tidegate-sim audit` (audit.h). Two halves: the comparison of what reached Kafka
 * with the ledger (struct tg_sim_audit), which knows nothing of Kafka and is unit-tested on
 * synthetic input; and, below the "command" marker, the command that consumes the topics with
 * librdkafka, decodes the canonical records and feeds them to the comparison.
 *
 * Memory: per (device, boot) a bitmap of the seqs seen (a bit per seq from 0 to the highest
 * seen: 10,000 devices x 3,600 seqs is 4.5 MB), so duplicates are found in O(1) whatever the
 * order. Seqs at or above SEQ_BITMAP_LIMIT (no simulated device gets there) go to a small
 * sorted array instead, so one absurd seq cannot make the audit allocate gigabytes. The seqs
 * of released readings found in the DLQ are kept the same way, per (device, boot).
 */
#include "audit.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "codec.h"
#include "codec_canonical_decode.h"
#include "util.h"

#define SEQ_BITMAP_LIMIT (UINT64_C(1) << 26) /* 8 MB of bitmap for one (device, boot) at most */
#define LOST_RANGES_KEPT 4                   /* per device, for the report */

struct seq_range {
    uint64_t boot, lo, hi;
};

/* A set of seqs: the bitmap, and the sorted array for seqs past it. */
struct seq_set {
    uint64_t *bits;
    size_t words;
    uint64_t *big; /* sorted seqs >= SEQ_BITMAP_LIMIT */
    size_t n_big, cap_big;
};

struct seen_boot {
    uint64_t boot;
    struct seq_set seen; /* seqs in the telemetry topic */
    /* Seqs whose payload is in the DLQ. A reading is validated before it is deduplicated, so
     * one rejected on purpose can be dead-lettered more than once (an injected duplicate, a
     * QoS 1 re-send): completeness counts it once, by this set. */
    struct seq_set dlq;
    /* For reordering: the highest seq seen so far and the partition it came on. */
    bool any;
    int32_t partition;
    uint64_t max_seq;
};

struct adev {
    char *id;
    int ledger; /* index in the ledger, -1 when not in it (or no ledger yet) */
    struct seen_boot *boots;
    size_t n_boots, cap_boots;
    uint64_t records, duplicated, reordered;
    /* Set by tg_sim_audit_finish(). */
    uint64_t delivered, lost, dead_lettered, unexpected, unconfirmed_arrived, dropped_arrived;
    struct seq_range lost_ranges[LOST_RANGES_KEPT];
    size_t n_lost_ranges; /* ranges found; only the first LOST_RANGES_KEPT are kept */
};

struct dlq_reading {
    uint32_t dev;
    uint64_t boot, seq;
};

struct reason_count {
    char *reason;
    uint64_t n;
};

struct sample {
    uint32_t dev;
    int64_t latency_ms;    /* INT64_MIN: not measured */
    int64_t gw_latency_ms; /* INT64_MIN: no gw_ts */
};

struct percentiles {
    uint64_t n;
    double p50, p90, p99, max;
};

struct tg_sim_audit {
    const struct tg_ledger *lg;
    struct tg_ledger_totals totals;

    struct adev *devs;
    size_t n_devs, cap_devs;
    uint32_t *index; /* open addressing: device index + 1, 0 = empty */
    size_t index_cap;

    uint64_t records, undecodable, duplicated, reordered, offset_gaps;
    uint64_t released_seen; /* distinct released readings seen, once a ledger is set */
    uint64_t released_dlq;  /* distinct released readings in the DLQ and not (yet) in the
                             * telemetry topic, once a ledger is set */

    bool expect_dlq;
    uint64_t dlq_records, dlq_malformed;
    struct dlq_reading *dlq;
    size_t n_dlq, cap_dlq;
    struct reason_count *reasons;
    size_t n_reasons, cap_reasons;

    bool log_append_time;
    uint64_t backlog_records;
    struct sample *samples;
    size_t n_samples, cap_samples;

    bool finished;
    struct tg_sim_audit_result res;
    struct percentiles gw_latency;
    uint64_t skewed_devices, skewed_samples;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
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
    return calloc(1, sizeof(struct tg_sim_audit));
}

void tg_sim_audit_destroy(struct tg_sim_audit *au)
{
    if (!au)
        return;
    for (size_t d = 0; d < au->n_devs; d++) {
        struct adev *dev = &au->devs[d];
        for (size_t b = 0; b < dev->n_boots; b++) {
            free(dev->boots[b].seen.bits);
            free(dev->boots[b].seen.big);
            free(dev->boots[b].dlq.bits);
            free(dev->boots[b].dlq.big);
        }
        free(dev->boots);
        free(dev->id);
    }
    free(au->devs);
    free(au->index);
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

static size_t index_slot(const struct tg_sim_audit *au, const char *id)
{
    size_t mask = au->index_cap - 1;
    size_t slot = tg_hash_fnv1a(id, strlen(id)) & mask;
    while (au->index[slot] != 0 && strcmp(au->devs[au->index[slot] - 1].id, id) != 0)
        slot = (slot + 1) & mask;
    return slot;
}

static int index_grow(struct tg_sim_audit *au)
{
    size_t cap = au->index_cap ? au->index_cap * 2 : 256;
    uint32_t *old = au->index;
    size_t old_cap = au->index_cap;
    au->index = calloc(cap, sizeof *au->index);
    if (!au->index) {
        au->index = old;
        return -1;
    }
    au->index_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] != 0)
            au->index[index_slot(au, au->devs[old[i] - 1].id)] = old[i];
    free(old);
    return 0;
}

/* The audit's device for id, created on first sight. -1 when out of memory. */
static long device_get(struct tg_sim_audit *au, const char *id)
{
    if (au->index_cap) {
        uint32_t v = au->index[index_slot(au, id)];
        if (v != 0)
            return (long)v - 1;
    }
    if (au->n_devs >= UINT32_MAX - 1)
        return -1;
    if ((au->n_devs + 1) * 2 > au->index_cap && index_grow(au) != 0)
        return -1;
    if (grow((void **)&au->devs, &au->cap_devs, au->n_devs + 1, sizeof *au->devs) != 0)
        return -1;
    struct adev *dev = &au->devs[au->n_devs];
    *dev = (struct adev){.id = strdup(id), .ledger = -1};
    if (!dev->id)
        return -1;
    if (au->lg)
        dev->ledger = tg_ledger_find_device(au->lg, id);
    au->index[index_slot(au, id)] = (uint32_t)(au->n_devs + 1);
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
    if (grow((void **)&dev->boots, &dev->cap_boots, dev->n_boots + 1, sizeof *dev->boots) != 0)
        return NULL;
    sb = &dev->boots[dev->n_boots++];
    *sb = (struct seen_boot){.boot = boot};
    return sb;
}

static size_t big_search(const struct seq_set *sb, uint64_t seq)
{
    size_t lo = 0, hi = sb->n_big;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sb->big[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool seen_has(const struct seq_set *sb, uint64_t seq)
{
    if (seq < SEQ_BITMAP_LIMIT) {
        size_t w = (size_t)(seq / 64);
        return w < sb->words && (sb->bits[w] >> (seq % 64) & 1);
    }
    size_t i = big_search(sb, seq);
    return i < sb->n_big && sb->big[i] == seq;
}

/* Marks seq seen. Returns 1 when new, 0 when seen before, -1 when out of memory. */
static int seen_add(struct seq_set *sb, uint64_t seq)
{
    if (seq < SEQ_BITMAP_LIMIT) {
        size_t w = (size_t)(seq / 64);
        if (w >= sb->words) {
            size_t words = sb->words ? sb->words : 16;
            while (words <= w)
                words *= 2;
            uint64_t *bits = realloc(sb->bits, words * sizeof *bits);
            if (!bits)
                return -1;
            memset(bits + sb->words, 0, (words - sb->words) * sizeof *bits);
            sb->bits = bits;
            sb->words = words;
        }
        uint64_t mask = UINT64_C(1) << (seq % 64);
        if (sb->bits[w] & mask)
            return 0;
        sb->bits[w] |= mask;
        return 1;
    }
    size_t i = big_search(sb, seq);
    if (i < sb->n_big && sb->big[i] == seq)
        return 0;
    if (grow((void **)&sb->big, &sb->cap_big, sb->n_big + 1, sizeof *sb->big) != 0)
        return -1;
    memmove(&sb->big[i + 1], &sb->big[i], (sb->n_big - i) * sizeof *sb->big);
    sb->big[i] = seq;
    sb->n_big++;
    return 1;
}

/* Calls fn for every seq seen in sb, ascending. */
static void seen_each(const struct seq_set *sb, void (*fn)(void *ud, uint64_t seq), void *ud)
{
    for (size_t w = 0; w < sb->words; w++)
        for (uint64_t bits = sb->bits[w]; bits; bits &= bits - 1)
            fn(ud, (uint64_t)w * 64 + (uint64_t)__builtin_ctzll(bits));
    for (size_t i = 0; i < sb->n_big; i++)
        fn(ud, sb->big[i]);
}

/* ------------------------------------------------------------------------------------------
 * Input
 */

int tg_sim_audit_telemetry(struct tg_sim_audit *au, const struct tg_sim_audit_rec *rec)
{
    long d = device_get(au, rec->device);
    if (d < 0)
        return -1;
    struct adev *dev = &au->devs[d];
    struct seen_boot *sb = boot_get(dev, rec->boot);
    if (!sb)
        return -1;
    int added = seen_add(&sb->seen, rec->seq);
    if (added < 0)
        return -1;
    au->records++;
    dev->records++;
    if (added == 0) {
        /* A later copy is a duplicate, and only that: it is not also counted as reordered. */
        dev->duplicated++;
        au->duplicated++;
        return 0;
    }
    if (sb->any && sb->partition == rec->partition && rec->seq < sb->max_seq) {
        dev->reordered++;
        au->reordered++;
    }
    if (!sb->any || sb->partition != rec->partition || rec->seq > sb->max_seq) {
        sb->any = true;
        sb->partition = rec->partition;
        sb->max_seq = rec->seq;
    }
    if (au->lg && dev->ledger >= 0 &&
        tg_ledger_fate(au->lg, dev->ledger, rec->boot, rec->seq) == TG_LEDGER_RELEASED) {
        au->released_seen++;
        /* Dead-lettered first (e.g. one copy rejected, a later one accepted after the clock
         * moved): counted once, as delivered now. */
        if (seen_has(&sb->dlq, rec->seq))
            au->released_dlq--;
    }
    if (rec->end_ms != -1 || rec->gw_ts_ms != -1) {
        if (grow((void **)&au->samples, &au->cap_samples, au->n_samples + 1,
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

int tg_sim_audit_dlq(struct tg_sim_audit *au, const char *reason, const char *device,
                     bool is_reading, uint64_t boot, uint64_t seq)
{
    if (!reason)
        reason = "(none)";
    size_t i;
    for (i = 0; i < au->n_reasons; i++)
        if (strcmp(au->reasons[i].reason, reason) == 0)
            break;
    if (i == au->n_reasons) {
        if (grow((void **)&au->reasons, &au->cap_reasons, au->n_reasons + 1,
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
        return 0;
    }
    long d = device_get(au, device);
    if (d < 0 || grow((void **)&au->dlq, &au->cap_dlq, au->n_dlq + 1, sizeof *au->dlq) != 0)
        return -1;
    au->dlq[au->n_dlq] = (struct dlq_reading){(uint32_t)d, boot, seq};
    au->n_dlq++;
    struct seen_boot *sb = boot_get(&au->devs[d], boot);
    if (!sb)
        return -1;
    int added = seen_add(&sb->dlq, seq);
    if (added < 0)
        return -1;
    /* Once per (device, boot, seq), and not when it is in the telemetry topic already. */
    if (added == 1 && au->lg && !seen_has(&sb->seen, seq) &&
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
    const struct seq_set *skip; /* seqs not to count (NULL: none) */
    uint64_t boot;
    uint64_t n;
};

static void count_released_fn(void *ud, uint64_t seq)
{
    struct count_released *cr = ud;
    if ((!cr->skip || !seen_has(cr->skip, seq)) &&
        tg_ledger_fate(cr->au->lg, cr->dev->ledger, cr->boot, seq) == TG_LEDGER_RELEASED)
        cr->n++;
}

int tg_sim_audit_set_ledger(struct tg_sim_audit *au, const struct tg_ledger *lg)
{
    if (au->lg) {
        errno = EINVAL;
        return -1;
    }
    au->lg = lg;
    tg_ledger_totals(lg, &au->totals);
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
        for (size_t b = 0; b < dev->n_boots; b++) {
            const struct seen_boot *sb = &dev->boots[b];
            struct count_released cr = {au, dev, NULL, sb->boot, 0};
            seen_each(&sb->seen, count_released_fn, &cr);
            au->released_seen += cr.n;
            /* Dead-lettered and not delivered, each once. */
            cr = (struct count_released){au, dev, &sb->seen, sb->boot, 0};
            seen_each(&sb->dlq, count_released_fn, &cr);
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
    return !au->expect_dlq || au->dlq_malformed >= au->totals.malformed;
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

static bool dlq_has(const struct tg_sim_audit *au, uint32_t dev, uint64_t boot, uint64_t seq)
{
    struct dlq_reading key = {dev, boot, seq};
    return au->n_dlq > 0 && bsearch(&key, au->dlq, au->n_dlq, sizeof *au->dlq, dlq_cmp) != NULL;
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
    if (w->sb && seen_has(&w->sb->seen, seq))
        w->dev->delivered++;
    else if (dlq_has(w->au, w->dev_index, boot, seq))
        w->dev->dead_lettered++;
    else
        note_lost(w->dev, boot, seq);
    return true;
}

struct seen_walk {
    const struct tg_ledger *lg;
    struct adev *dev;
    uint64_t boot;
};

static void seen_fn(void *ud, uint64_t seq)
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
        .duplicated = au->duplicated,
        .reordered = au->reordered,
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
        for (size_t b = 0; b < dev->n_boots; b++) {
            struct seen_walk w = {au->lg, dev, dev->boots[b].boot};
            seen_each(&dev->boots[b].seen, seen_fn, &w);
        }
        r->delivered += dev->delivered;
        r->lost += dev->lost;
        r->dead_lettered += dev->dead_lettered;
        r->unexpected += dev->unexpected;
        r->unconfirmed_arrived += dev->unconfirmed_arrived;
        r->dropped_arrived += dev->dropped_arrived;
        if (dev->lost || dev->duplicated || dev->reordered || dev->unexpected)
            r->problem_devices++;
        if (dev->ledger >= 0) {
            struct tg_ledger_faults faults;
            tg_ledger_device_faults(au->lg, dev->ledger, &faults);
            if (faults.skewed > 0)
                au->skewed_devices++;
        }
    }
    r->unconfirmed_missing = au->totals.unconfirmed > r->unconfirmed_arrived
                                 ? au->totals.unconfirmed - r->unconfirmed_arrived
                                 : 0;
    if (au->expect_dlq && au->totals.malformed > au->dlq_malformed)
        r->dlq_missing = au->totals.malformed - au->dlq_malformed;
    if (latency_figures(au) != 0)
        return -1;
    r->ok = r->lost == 0 && r->duplicated == 0 && r->dlq_missing == 0;
    *out = *r;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Reports
 */

static double pct(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 100.0;
}

static void print_ranges(const struct adev *dev, FILE *out)
{
    size_t shown = dev->n_lost_ranges < LOST_RANGES_KEPT ? dev->n_lost_ranges : LOST_RANGES_KEPT;
    for (size_t i = 0; i < shown; i++) {
        const struct seq_range *r = &dev->lost_ranges[i];
        fprintf(out, "%s%" PRIu64 ":%" PRIu64, i ? "," : " ", r->boot, r->lo);
        if (r->hi != r->lo)
            fprintf(out, "-%" PRIu64, r->hi);
    }
    if (dev->n_lost_ranges > shown)
        fprintf(out, ",...");
}

static const char *latency_source(const struct tg_sim_audit *au)
{
    return au->log_append_time ? "kafka_log_append_time" : "audit_receive_time";
}

void tg_sim_audit_print_text(const struct tg_sim_audit *au,
                             const struct tg_sim_audit_context *ctx, size_t max_devices,
                             FILE *out)
{
    const struct tg_sim_audit_result *r = &au->res;
    const struct tg_ledger_totals *t = &au->totals;
    fprintf(out, "tidegate-sim audit: topic %s (%d partitions) against %s\n", ctx->topic,
            ctx->partitions, ctx->ledger_path);
    fprintf(out, "  stopped:      after %.1f s: %s\n", ctx->elapsed_s, ctx->stopped);
    fprintf(out,
            "  ledger:       %zu devices; %" PRIu64 " readings released, %" PRIu64
            " unconfirmed, %" PRIu64 " dropped on devices; injected: %" PRIu64
            " malformed, %" PRIu64 " duplicate publishes, %" PRIu64 " skewed\n",
            t->devices, t->released, t->unconfirmed, t->dropped, t->malformed, t->duplicates,
            t->skewed);
    fprintf(out, "  kafka:        %" PRIu64 " records in %s", r->records, ctx->topic);
    if (ctx->dlq_topic)
        fprintf(out, ", %" PRIu64 " in %s", r->dlq_records, ctx->dlq_topic);
    fprintf(out, "\n");
    fprintf(out, "  delivered:    %" PRIu64 " of %" PRIu64 " released (%.3f%%)\n", r->delivered,
            t->released, pct(r->delivered, t->released));
    fprintf(out, "  lost:         %" PRIu64 "\n", r->lost);
    fprintf(out, "  duplicated:   %" PRIu64 "\n", r->duplicated);
    fprintf(out, "  reordered:    %" PRIu64 "\n", r->reordered);
    fprintf(out, "  unexpected:   %" PRIu64 " (readings the ledger never saw taken)\n",
            r->unexpected);
    if (r->undecodable)
        fprintf(out, "  undecodable:  %" PRIu64 " records are not canonical readings\n",
                r->undecodable);
    if (r->dead_lettered)
        fprintf(out, "  dead-lettered: %" PRIu64 " released readings were rejected into the DLQ\n",
                r->dead_lettered);
    fprintf(out,
            "  unconfirmed:  %" PRIu64 " arrived, %" PRIu64
            " did not (the run ended before the broker confirmed them: not a failure)\n",
            r->unconfirmed_arrived, r->unconfirmed_missing);
    if (t->dropped || r->dropped_arrived)
        fprintf(out, "  dropped:      %" PRIu64 " on devices (outbox full), %" PRIu64
                     " of them arrived anyway\n",
                t->dropped, r->dropped_arrived);
    if (ctx->dlq_topic) {
        fprintf(out, "  dlq:          %" PRIu64 " records", r->dlq_records);
        for (size_t i = 0; i < au->n_reasons; i++)
            fprintf(out, "%s%s %" PRIu64, i ? ", " : " (", au->reasons[i].reason,
                    au->reasons[i].n);
        const char *verdict = r->dlq_missing                     ? "MISSING"
                              : r->dlq_malformed == t->malformed ? "match"
                                                                 : "more than published";
        fprintf(out, "%s; %" PRIu64 " malformed payloads for %" PRIu64 " published: %s\n",
                au->n_reasons ? ")" : "", r->dlq_malformed, t->malformed, verdict);
    } else {
        fprintf(out, "  dlq:          not read (--dlq-topic)\n");
    }
    if (r->offset_gaps)
        fprintf(out, "  WARNING:      %" PRIu64 " records were gone from the topic before the "
                     "audit read them (retention): losses may be the cluster's, not the "
                     "pipeline's\n",
                r->offset_gaps);
    if (r->latency_samples) {
        fprintf(out,
                "  latency:      device time -> %s: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max "
                "%.0f ms (%" PRIu64 " readings",
                au->log_append_time ? "Kafka append (LogAppendTime)"
                                    : "audit receipt (the topic keeps CreateTime)",
                r->latency_p50_ms, r->latency_p90_ms, r->latency_p99_ms, r->latency_max_ms,
                r->latency_samples);
        if (au->backlog_records)
            fprintf(out, "; %" PRIu64 " read from a backlog left out", au->backlog_records);
        fprintf(out, ")\n");
    } else {
        fprintf(out, "  latency:      not measured (no record arrived while the audit was "
                     "following: use --follow during the run)\n");
    }
    if (au->gw_latency.n)
        fprintf(out,
                "  to gateway:   device time -> gateway receipt (gw_ts): p50 %.0f ms, p90 %.0f "
                "ms, p99 %.0f ms, max %.0f ms\n",
                au->gw_latency.p50, au->gw_latency.p90, au->gw_latency.p99, au->gw_latency.max);
    if (au->skewed_devices)
        fprintf(out, "                (%" PRIu64 " devices with a skewed clock left out)\n",
                au->skewed_devices);
    if (r->problem_devices) {
        fprintf(out, "  problem devices: %zu", r->problem_devices);
        if (r->problem_devices > max_devices)
            fprintf(out, " (first %zu shown)", max_devices);
        fprintf(out, "\n");
        size_t shown = 0;
        for (size_t d = 0; d < au->n_devs && shown < max_devices; d++) {
            const struct adev *dev = &au->devs[d];
            if (!(dev->lost || dev->duplicated || dev->reordered || dev->unexpected))
                continue;
            shown++;
            fprintf(out, "    %-20s lost %" PRIu64, dev->id, dev->lost);
            if (dev->lost) {
                fprintf(out, " (boot:seq");
                print_ranges(dev, out);
                fprintf(out, ")");
            }
            fprintf(out, ", duplicated %" PRIu64 ", reordered %" PRIu64 ", unexpected %" PRIu64
                         "%s\n",
                    dev->duplicated, dev->reordered, dev->unexpected,
                    dev->ledger < 0 ? " (not in the ledger)" : "");
        }
    }
    fprintf(out, "RESULT: %s\n",
            r->ok ? "PASS (nothing lost, nothing duplicated)"
                  : "FAIL (readings lost or duplicated, or dead letters missing)");
}

static json_t *percentiles_json(uint64_t n, double p50, double p90, double p99, double max)
{
    if (n == 0)
        return json_null();
    return json_pack("{s:I,s:f,s:f,s:f,s:f}", "samples", (json_int_t)n, "p50", p50, "p90",
                     p90, "p99", p99, "max", max);
}

int tg_sim_audit_print_json(const struct tg_sim_audit *au,
                            const struct tg_sim_audit_context *ctx, size_t max_devices,
                            FILE *out)
{
    const struct tg_sim_audit_result *r = &au->res;
    const struct tg_ledger_totals *t = &au->totals;
    int rc = -1;
    json_t *reasons = json_object();
    json_t *devices = json_array();
    json_t *root = NULL;
    if (!reasons || !devices)
        goto cleanup;
    for (size_t i = 0; i < au->n_reasons; i++)
        if (json_object_set_new(reasons, au->reasons[i].reason,
                                json_integer((json_int_t)au->reasons[i].n)) != 0)
            goto cleanup;
    size_t shown = 0;
    for (size_t d = 0; d < au->n_devs && shown < max_devices; d++) {
        const struct adev *dev = &au->devs[d];
        if (!(dev->lost || dev->duplicated || dev->reordered || dev->unexpected))
            continue;
        shown++;
        json_t *lost = json_array();
        size_t kept = dev->n_lost_ranges < LOST_RANGES_KEPT ? dev->n_lost_ranges
                                                            : LOST_RANGES_KEPT;
        for (size_t i = 0; lost && i < kept; i++)
            json_array_append_new(lost, json_pack("{s:I,s:I,s:I}", "boot",
                                                  (json_int_t)dev->lost_ranges[i].boot, "from",
                                                  (json_int_t)dev->lost_ranges[i].lo, "to",
                                                  (json_int_t)dev->lost_ranges[i].hi));
        json_t *o = json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:o*}", "device", dev->id,
                              "in_ledger", dev->ledger >= 0, "delivered",
                              (json_int_t)dev->delivered, "lost", (json_int_t)dev->lost,
                              "duplicated", (json_int_t)dev->duplicated, "reordered",
                              (json_int_t)dev->reordered, "unexpected",
                              (json_int_t)dev->unexpected, "lost_ranges", lost);
        if (!o || json_array_append_new(devices, o) != 0)
            goto cleanup;
    }
    root = json_pack(
        "{s:b,s:s,s:f,s:s,s:s,s:i,s:s?,"
        "s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I},"
        "s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
        "s:{s:b,s:I,s:I,s:I,s:I,s:I,s:o},"
        "s:{s:s,s:o,s:I},s:o,s:I,s:I,s:o}",
        "ok", r->ok, "stopped", ctx->stopped, "elapsed_s", ctx->elapsed_s, "ledger",
        ctx->ledger_path, "topic", ctx->topic, "partitions", ctx->partitions, "dlq_topic",
        ctx->dlq_topic,
        "expected", "devices", (json_int_t)t->devices, "released", (json_int_t)t->released,
        "unconfirmed", (json_int_t)t->unconfirmed, "dropped", (json_int_t)t->dropped,
        "malformed", (json_int_t)t->malformed, "duplicates", (json_int_t)t->duplicates,
        "skewed", (json_int_t)t->skewed,
        "records", (json_int_t)r->records, "delivered", (json_int_t)r->delivered, "lost",
        (json_int_t)r->lost, "duplicated", (json_int_t)r->duplicated, "reordered",
        (json_int_t)r->reordered, "unexpected", (json_int_t)r->unexpected, "undecodable",
        (json_int_t)r->undecodable, "dead_lettered", (json_int_t)r->dead_lettered,
        "unconfirmed_arrived", (json_int_t)r->unconfirmed_arrived, "unconfirmed_missing",
        (json_int_t)r->unconfirmed_missing, "dropped_arrived", (json_int_t)r->dropped_arrived,
        "offset_gaps", (json_int_t)r->offset_gaps,
        "dlq", "read", ctx->dlq_topic != NULL, "records", (json_int_t)r->dlq_records,
        "malformed", (json_int_t)r->dlq_malformed, "malformed_expected",
        (json_int_t)t->malformed, "readings", (json_int_t)r->dlq_readings, "missing",
        (json_int_t)r->dlq_missing, "by_reason", reasons,
        "latency_ms", "source", latency_source(au), "device_to_kafka",
        percentiles_json(r->latency_samples, r->latency_p50_ms, r->latency_p90_ms,
                         r->latency_p99_ms, r->latency_max_ms),
        "backlog_records_left_out", (json_int_t)au->backlog_records,
        "latency_to_gateway_ms",
        percentiles_json(au->gw_latency.n, au->gw_latency.p50, au->gw_latency.p90,
                         au->gw_latency.p99, au->gw_latency.max),
        "skewed_devices_left_out", (json_int_t)au->skewed_devices, "problem_devices",
        (json_int_t)r->problem_devices, "devices", devices);
    reasons = devices = NULL; /* json_pack's "o" took them, also when it failed */
    if (!root)
        goto cleanup;
    if (json_dumpf(root, out, JSON_COMPACT | JSON_REAL_PRECISION(10)) != 0 ||
        fputc('\n', out) == EOF)
        goto cleanup;
    rc = 0;
cleanup:
    json_decref(reasons);
    json_decref(devices);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * The command: consume the topics, decode, compare, report
 */

#define PROG "tidegate-sim audit"
#define EXIT_MISMATCH 1
#define EXIT_SETUP 2
#define POLL_MS 100
#define LEDGER_CHECK_MS 200
#define PROGRESS_MS 10000
#define ERROR_LOG_MS 5000

struct opts {
    const char *brokers, *topic, *ledger, *dlq_topic;
    double timeout_s, idle_s;
    size_t max_devices;
    bool json, follow, from_end;
};

struct part_state {
    int64_t next_offset; /* the offset expected next: a higher one means records were gone */
    int64_t live_from;   /* records from this offset on were appended after the audit
                          * started: their receipt time measures latency */
};

struct topic_state {
    const char *name;
    bool is_dlq;
    int partitions;
    struct part_state *parts;
};

struct command {
    struct opts o;
    rd_kafka_t *rk;
    struct topic_state topics[2];
    int n_topics;
    struct tg_sim_audit *au;
    struct tg_ledger *lg;
    struct tg_decoder *dec;             /* DLQ payloads: device payloads */
    struct tg_canonical_decoder *cdec;  /* telemetry records */
    bool latency_source_known;
    int64_t last_error_log_ms;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tidegate-sim audit --brokers LIST --ledger FILE [--topic T] [--dlq-topic T]\n"
            "                          [--timeout S] [--idle S] [--json] [--follow] [--from-end]\n"
            "                          [--max-devices N]\n"
            "\n"
            "Reads the telemetry topic (and the DLQ topic) from the beginning and compares it\n"
            "with the ledger a `tidegate-sim run --ledger FILE` wrote: delivered, lost,\n"
            "duplicated, reordered and unexpected readings per device, DLQ records by reason,\n"
            "end-to-end latency. Exit 0 when nothing released is lost and nothing duplicated\n"
            "(and, with --dlq-topic, every malformed payload is in the DLQ), 1 otherwise,\n"
            "2 on usage or setup errors.\n"
            "\n"
            "  --brokers LIST     Kafka bootstrap servers, host:port[,host:port...]\n"
            "  --ledger FILE      the run's ledger\n"
            "  --topic T          telemetry topic (default telemetry)\n"
            "  --dlq-topic T      dead-letter topic to check against the malformed count\n"
            "  --timeout S        give up waiting for missing readings S seconds after the\n"
            "                     ledger is loaded (default 60)\n"
            "  --idle S           stop once everything expected arrived and nothing came for\n"
            "                     S seconds (default 1)\n"
            "  --follow           start before or during the run: consume while waiting for\n"
            "                     the ledger file to appear (the run writes it at its end);\n"
            "                     latency is then measured live\n"
            "  --from-end         skip what the topics hold now (a cluster with earlier runs'\n"
            "                     data); with --follow, start the audit before the run\n"
            "  --json             print one JSON object instead of the summary\n"
            "  --max-devices N    problem devices detailed in the report (default 20)\n"
            "  -h, --help         this text\n");
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= 0) || v > 1e6)
        return false;
    *out = v;
    return true;
}

/* 0 parsed, 1 --help, -1 usage error (reported). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum { OPT_BROKERS = 256, OPT_TOPIC, OPT_LEDGER, OPT_DLQ, OPT_TIMEOUT, OPT_IDLE, OPT_JSON,
           OPT_FOLLOW, OPT_FROM_END, OPT_MAX_DEVICES };
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"ledger", required_argument, NULL, OPT_LEDGER},
        {"dlq-topic", required_argument, NULL, OPT_DLQ},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"idle", required_argument, NULL, OPT_IDLE},
        {"json", no_argument, NULL, OPT_JSON},
        {"follow", no_argument, NULL, OPT_FOLLOW},
        {"from-end", no_argument, NULL, OPT_FROM_END},
        {"max-devices", required_argument, NULL, OPT_MAX_DEVICES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct opts){.topic = "telemetry", .timeout_s = 60, .idle_s = 1, .max_devices = 20};
    optind = 1; /* the dispatcher may have run getopt already */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case OPT_BROKERS: o->brokers = optarg; break;
        case OPT_TOPIC: o->topic = optarg; break;
        case OPT_LEDGER: o->ledger = optarg; break;
        case OPT_DLQ: o->dlq_topic = optarg; break;
        case OPT_TIMEOUT:
            if (!parse_seconds(optarg, &o->timeout_s)) {
                fprintf(stderr, PROG ": --timeout: expected seconds, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case OPT_IDLE:
            if (!parse_seconds(optarg, &o->idle_s)) {
                fprintf(stderr, PROG ": --idle: expected seconds, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case OPT_JSON: o->json = true; break;
        case OPT_FOLLOW: o->follow = true; break;
        case OPT_FROM_END: o->from_end = true; break;
        case OPT_MAX_DEVICES:
            errno = 0;
            o->max_devices = (size_t)strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end != '\0' || optarg[0] == '-') {
                fprintf(stderr, PROG ": --max-devices: expected a count, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case 'h': return 1;
        case ':':
            fprintf(stderr, PROG ": %s needs an argument (--help)\n", argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, PROG ": unknown option \"%s\" (--help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (!o->brokers || !o->ledger) {
        fprintf(stderr, PROG ": --brokers and --ledger are required (--help)\n");
        return -1;
    }
    if (o->dlq_topic && strcmp(o->dlq_topic, o->topic) == 0) {
        fprintf(stderr, PROG ": --dlq-topic must differ from --topic\n");
        return -1;
    }
    return 0;
}

static const char *header_value(const rd_kafka_message_t *msg, const char *name, char *buf,
                                size_t size)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *val;
    size_t len;
    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, &val, &len) != RD_KAFKA_RESP_ERR_NO_ERROR || !val)
        return NULL;
    snprintf(buf, size, "%.*s", (int)len, (const char *)val);
    return buf;
}

/* ---- consuming ---- */

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    struct command *cmd = opaque;
    /* Brokers going away and coming back (an outage test) repeat this every backoff: the
     * first line tells the story, the rest are rate-limited. */
    int64_t now = clock_ms(CLOCK_MONOTONIC);
    if (now - cmd->last_error_log_ms < ERROR_LOG_MS &&
        err != RD_KAFKA_RESP_ERR__FATAL)
        return;
    cmd->last_error_log_ms = now;
    fprintf(stderr, PROG ": kafka: %s: %s\n", rd_kafka_err2name((rd_kafka_resp_err_t)err),
            reason);
}

static int topic_partitions(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return -1;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err) {
        fprintf(stderr, PROG ": metadata of topic %s: %s\n", topic, rd_kafka_err2str(err));
        return -1;
    }
    int n = -1;
    if (md->topic_cnt == 1 && !md->topics[0].err)
        n = md->topics[0].partition_cnt;
    else if (md->topic_cnt == 1)
        fprintf(stderr, PROG ": topic %s: %s\n", topic, rd_kafka_err2str(md->topics[0].err));
    rd_kafka_metadata_destroy(md);
    if (n == 0) {
        fprintf(stderr, PROG ": topic %s has no partitions\n", topic);
        n = -1;
    }
    return n;
}

static int consumer_start(struct command *cmd)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* No offsets are ever committed: the audit reads everything each time and leaves no trace
     * in the cluster beyond its (unused) group id. */
    const char *kv[] = {"bootstrap.servers", cmd->o.brokers,
                        "group.id", "tidegate-sim-audit",
                        "client.id", "tidegate-sim-audit",
                        "enable.auto.commit", "false",
                        "enable.auto.offset.store", "false",
                        "enable.partition.eof", "true",
                        "auto.offset.reset", "earliest",
                        /* Without it a fetch that finds nothing waits 500 ms (the mock
                         * cluster does not answer early when records arrive), which would
                         * be most of the latency measured. */
                        "fetch.wait.max.ms", "10",
                        /* After an outage librdkafka backs off up to 10 s between
                         * reconnects: the audit would then measure its own reconnect as
                         * pipeline latency. The gateway uses the same 1 s cap. */
                        "reconnect.backoff.max.ms", "1000",
                        "log_level", "2",
                        NULL};
    for (size_t i = 0; kv[i]; i += 2)
        if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
            fprintf(stderr, PROG ": %s=%s: %s\n", kv[i], kv[i + 1], errstr);
            rd_kafka_conf_destroy(conf);
            return -1;
        }
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    rd_kafka_conf_set_opaque(conf, cmd);
    cmd->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!cmd->rk) {
        fprintf(stderr, PROG ": %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* conf belongs to the handle now */
    rd_kafka_poll_set_consumer(cmd->rk);

    cmd->topics[cmd->n_topics++] = (struct topic_state){.name = cmd->o.topic};
    if (cmd->o.dlq_topic)
        cmd->topics[cmd->n_topics++] = (struct topic_state){.name = cmd->o.dlq_topic,
                                                            .is_dlq = true};
    int total = 0;
    for (int t = 0; t < cmd->n_topics; t++) {
        struct topic_state *ts = &cmd->topics[t];
        ts->partitions = topic_partitions(cmd->rk, ts->name);
        if (ts->partitions < 0)
            return -1;
        ts->parts = calloc((size_t)ts->partitions, sizeof *ts->parts);
        if (!ts->parts)
            return -1;
        total += ts->partitions;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(total);
    if (!list)
        return -1;
    int rc = -1;
    for (int t = 0; t < cmd->n_topics; t++) {
        struct topic_state *ts = &cmd->topics[t];
        for (int p = 0; p < ts->partitions; p++) {
            /* The end now: what is below it was there before the audit started. With
             * --from-end the audit starts there exactly (OFFSET_END would be resolved at
             * the first fetch, and a run started in between could slip records past). */
            int64_t lo, hi;
            rd_kafka_resp_err_t err =
                rd_kafka_query_watermark_offsets(cmd->rk, ts->name, p, &lo, &hi, 10000);
            if (err && cmd->o.from_end) {
                fprintf(stderr, PROG ": end offset of %s[%d]: %s\n", ts->name, p,
                        rd_kafka_err2str(err));
                goto cleanup;
            }
            /* Unknown end: the partition's first EOF will tell (handle_message). */
            ts->parts[p].live_from = err ? INT64_MAX : hi;
            int64_t start = RD_KAFKA_OFFSET_BEGINNING;
            if (cmd->o.from_end) {
                start = hi;
                ts->parts[p].next_offset = hi;
            }
            rd_kafka_topic_partition_list_add(list, ts->name, p)->offset = start;
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(cmd->rk, list);
    if (err) {
        fprintf(stderr, PROG ": assign: %s\n", rd_kafka_err2str(err));
        goto cleanup;
    }
    rc = 0;
cleanup:
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

static struct topic_state *topic_of(struct command *cmd, const rd_kafka_message_t *msg,
                                    struct part_state **part)
{
    const char *name = rd_kafka_topic_name(msg->rkt);
    for (int t = 0; t < cmd->n_topics; t++) {
        struct topic_state *ts = &cmd->topics[t];
        if (strcmp(ts->name, name) == 0 && msg->partition >= 0 &&
            msg->partition < ts->partitions) {
            *part = &ts->parts[msg->partition];
            return ts;
        }
    }
    return NULL;
}

static int handle_telemetry(struct command *cmd, const rd_kafka_message_t *msg,
                            struct part_state *part)
{
    rd_kafka_timestamp_type_t tstype;
    int64_t kafka_ts = rd_kafka_message_timestamp(msg, &tstype);
    bool append_time = tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME;
    if (!cmd->latency_source_known) {
        tg_sim_audit_latency_source(cmd->au, append_time);
        cmd->latency_source_known = true;
    }
    char ct[64];
    const char *ctv = header_value(msg, "content-type", ct, sizeof ct);
    struct tg_reading rd;
    struct tg_canonical_extra extra;
    if (!msg->payload ||
        tg_canonical_decode(cmd->cdec, msg->payload, msg->len,
                            tg_canonical_content_type(ctv, ctv ? strlen(ctv) : 0), &rd,
                            &extra) != TG_OK ||
        !rd.has_seq) {
        tg_sim_audit_undecodable(cmd->au);
        return 0;
    }
    struct tg_sim_audit_rec rec = {.device = rd.device, .boot = rd.boot, .seq = rd.seq,
                                   .partition = msg->partition, .ts_ms = rd.ts_ms,
                                   .gw_ts_ms = extra.gateway ? extra.gw_ts_ms : -1,
                                   .end_ms = -1};
    if (append_time) {
        rec.end_ms = kafka_ts;
    } else if (msg->offset >= part->live_from) {
        rec.end_ms = clock_ms(CLOCK_REALTIME);
    } else {
        /* Read from what the topic held when the audit started: when it arrived is unknown. */
        tg_sim_audit_backlog_record(cmd->au);
    }
    return tg_sim_audit_telemetry(cmd->au, &rec);
}

static int handle_dlq(struct command *cmd, const rd_kafka_message_t *msg)
{
    char reason[64], device[TG_DEVICE_ID_MAX + 1];
    const char *r = header_value(msg, "reason", reason, sizeof reason);
    const char *dev = header_value(msg, "device-id", device, sizeof device);
    if (!dev && msg->key && msg->key_len <= TG_DEVICE_ID_MAX) {
        snprintf(device, sizeof device, "%.*s", (int)msg->key_len, (const char *)msg->key);
        dev = device;
    }
    /* A payload that decodes as a native reading was rejected for what it says (clock skew,
     * range, signature), not for its form: it is one of the ledger's readings. */
    struct tg_decoded out;
    bool is_reading = dev && msg->payload &&
                      tg_decoder_decode(cmd->dec, TG_FORMAT_AUTO, dev, msg->payload, msg->len,
                                        clock_ms(CLOCK_REALTIME), &out) == TG_OK &&
                      out.format == TG_FORMAT_NATIVE && out.n_readings == 1 &&
                      out.readings[0].has_seq;
    return tg_sim_audit_dlq(cmd->au, r, dev, is_reading, is_reading ? out.readings[0].boot : 0,
                            is_reading ? out.readings[0].seq : 0);
}

/* 0 handled, -1 fatal. *activity is set when a record was read. */
static int handle_message(struct command *cmd, const rd_kafka_message_t *msg, bool *activity)
{
    struct part_state *part = NULL;
    struct topic_state *ts = msg->rkt ? topic_of(cmd, msg, &part) : NULL;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        if (part && msg->offset < part->live_from)
            part->live_from = msg->offset;
        return 0;
    }
    if (msg->err) {
        if (msg->err == RD_KAFKA_RESP_ERR__FATAL || rd_kafka_fatal_error(cmd->rk, NULL, 0)) {
            char why[256];
            rd_kafka_fatal_error(cmd->rk, why, sizeof why);
            fprintf(stderr, PROG ": kafka: fatal: %s\n", why);
            return -1;
        }
        kafka_error_cb(cmd->rk, msg->err, rd_kafka_message_errstr(msg), cmd);
        return 0;
    }
    if (!ts)
        return 0;
    *activity = true;
    if (msg->offset > part->next_offset)
        tg_sim_audit_offset_gap(cmd->au, msg->partition, msg->offset - part->next_offset);
    if (msg->offset >= part->next_offset)
        part->next_offset = msg->offset + 1;
    int rc = ts->is_dlq ? handle_dlq(cmd, msg) : handle_telemetry(cmd, msg, part);
    if (rc != 0)
        fprintf(stderr, PROG ": out of memory\n");
    return rc;
}

static int load_ledger(struct command *cmd)
{
    char err[512];
    cmd->lg = tg_ledger_read(cmd->o.ledger, err, sizeof err);
    if (!cmd->lg) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    if (tg_sim_audit_set_ledger(cmd->au, cmd->lg) != 0) {
        fprintf(stderr, PROG ": out of memory\n");
        return -1;
    }
    return 0;
}

static void command_cleanup(struct command *cmd)
{
    if (cmd->rk) {
        rd_kafka_assign(cmd->rk, NULL);
        rd_kafka_consumer_close(cmd->rk);
        rd_kafka_destroy(cmd->rk);
    }
    for (int t = 0; t < cmd->n_topics; t++)
        free(cmd->topics[t].parts);
    tg_sim_audit_destroy(cmd->au);
    tg_ledger_destroy(cmd->lg);
    tg_decoder_destroy(cmd->dec);
    tg_canonical_decoder_destroy(cmd->cdec);
}

int tg_sim_audit_main(int argc, char **argv)
{
    struct command cmd = {0};
    int rc = parse_opts(argc, argv, &cmd.o);
    if (rc > 0) {
        usage(stdout);
        return 0;
    }
    if (rc < 0)
        return EXIT_SETUP; /* parse_opts said what is wrong */
    rc = EXIT_SETUP;
    int64_t start_ms = clock_ms(CLOCK_MONOTONIC);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        perror(PROG ": sigaction");
        return EXIT_SETUP;
    }
    cmd.au = tg_sim_audit_new();
    cmd.dec = tg_decoder_new(NULL);
    cmd.cdec = tg_canonical_decoder_new(NULL);
    if (!cmd.au || !cmd.dec || !cmd.cdec) {
        fprintf(stderr, PROG ": out of memory\n");
        goto cleanup;
    }
    tg_sim_audit_expect_dlq(cmd.au, cmd.o.dlq_topic != NULL);
    /* Without --follow the ledger must be there before anything is consumed. */
    struct stat st;
    if (!cmd.o.follow && load_ledger(&cmd) != 0)
        goto cleanup;
    if (consumer_start(&cmd) != 0)
        goto cleanup;
    fprintf(stderr, PROG ": consuming %s (%d partitions)", cmd.topics[0].name,
            cmd.topics[0].partitions);
    if (cmd.n_topics > 1)
        fprintf(stderr, " and %s (%d)", cmd.topics[1].name, cmd.topics[1].partitions);
    fprintf(stderr, " from the %s%s\n", cmd.o.from_end ? "end" : "beginning",
            cmd.lg ? "" : "; waiting for the ledger");

    const int64_t timeout_ms = (int64_t)(cmd.o.timeout_s * 1000);
    const int64_t idle_ms = (int64_t)(cmd.o.idle_s * 1000);
    int64_t now = clock_ms(CLOCK_MONOTONIC);
    int64_t deadline = cmd.lg ? now + timeout_ms : INT64_MAX;
    int64_t last_record_ms = now, next_ledger_check = now, next_progress = now + PROGRESS_MS;
    const char *stopped = NULL;
    while (!stopped) {
        if (stop_signal) {
            stopped = "interrupted";
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(cmd.rk, POLL_MS);
        if (msg) {
            bool activity = false;
            int hr = handle_message(&cmd, msg, &activity);
            rd_kafka_message_destroy(msg);
            if (hr != 0)
                goto cleanup;
            if (activity)
                last_record_ms = clock_ms(CLOCK_MONOTONIC);
        }
        now = clock_ms(CLOCK_MONOTONIC);
        if (!cmd.lg && now >= next_ledger_check) {
            next_ledger_check = now + LEDGER_CHECK_MS;
            /* The run writes the ledger with a rename: once the name exists it is whole. */
            if (stat(cmd.o.ledger, &st) == 0) {
                if (load_ledger(&cmd) != 0)
                    goto cleanup;
                fprintf(stderr, PROG ": ledger %s loaded\n", cmd.o.ledger);
                deadline = now + timeout_ms;
            }
        }
        if (now >= next_progress) {
            next_progress = now + PROGRESS_MS;
            fprintf(stderr, PROG ": %" PRIu64 " records read%s\n",
                    tg_sim_audit_records(cmd.au),
                    cmd.lg ? "" : ", waiting for the ledger");
        }
        if (cmd.lg && tg_sim_audit_complete(cmd.au) && now - last_record_ms >= idle_ms)
            stopped = "everything expected arrived and the topics were idle";
        else if (now >= deadline)
            stopped = "timeout (not everything expected arrived)";
    }
    if (!cmd.lg) {
        fprintf(stderr, PROG ": stopped before the ledger %s appeared\n", cmd.o.ledger);
        goto cleanup;
    }
    struct tg_sim_audit_result res;
    if (tg_sim_audit_finish(cmd.au, &res) != 0) {
        fprintf(stderr, PROG ": out of memory\n");
        goto cleanup;
    }
    struct tg_sim_audit_context ctx = {
        .topic = cmd.topics[0].name,
        .dlq_topic = cmd.o.dlq_topic,
        .ledger_path = cmd.o.ledger,
        .partitions = cmd.topics[0].partitions,
        .stopped = stopped,
        .elapsed_s = (double)(clock_ms(CLOCK_MONOTONIC) - start_ms) / 1000.0,
    };
    if (cmd.o.json) {
        if (tg_sim_audit_print_json(cmd.au, &ctx, cmd.o.max_devices, stdout) != 0) {
            fprintf(stderr, PROG ": cannot write the JSON report\n");
            goto cleanup;
        }
    } else {
        tg_sim_audit_print_text(cmd.au, &ctx, cmd.o.max_devices, stdout);
    }
    if (fflush(stdout) != 0) {
        perror(PROG ": stdout");
        goto cleanup;
    }
    rc = res.ok ? 0 : EXIT_MISMATCH;
cleanup:
    command_cleanup(&cmd);
    return rc;
}
