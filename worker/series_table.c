/*
 * series_table.c - the engine's series, by (partition, device, metric): open addressing with
 * linear probing over an array of pointers, kept at most half full, doubling as it grows.
 *
 * A slot holds the series' pointer and its hash, so a probe that meets another key usually
 * rejects it without touching that series' memory (with 100,000 series, a cache miss). Series are allocated one by one (their size depends on the rule), so their
 * addresses stay put when the table grows: the window lists and the dirty list hold them.
 */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "util.h"

/* 16 bytes: the hash rejects most other keys, and what to prefetch of the series (its first
 * bytes and, by rule, the seasonal bucket of the point's time) comes from the slot alone, no
 * dependent load on the series. */
struct slot {
    struct series *s;
    uint32_t hash;
    uint16_t pf_bytes; /* the series' pf_bytes; 0: empty slot */
    uint8_t rule;
    uint8_t pf_bucket;
};

struct series_table {
    struct slot *slots;
    uint32_t mask; /* capacity - 1 */
    size_t count;
};

struct series_table *series_table__new(void)
{
    struct series_table *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->slots = calloc(1024, sizeof *st->slots);
    if (!st->slots) {
        free(st);
        return NULL;
    }
    st->mask = 1023;
    return st;
}

void series_table__destroy(struct series_table *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i <= st->mask; i++)
        free(st->slots[i].s);
    free(st->slots);
    free(st);
}

/* Hashing reads eight bytes at a time (a byte-at-a-time FNV took as long as a detector):
 * whole words, then the last eight bytes again (overlapping) for a tail; the length is mixed
 * in so that ("ab", "c") and ("a", "bc") differ. The values are never stored outside the
 * table (snapshots are keyed by name), so the function may change between versions and
 * differ between byte orders. */
#define HASH_K UINT64_C(0x9e3779b97f4a7c15)

static uint64_t word_at(const char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

static uint64_t hash_bytes(uint64_t h, const char *p, size_t n)
{
    h = (h ^ n) * HASH_K;
    if (n >= 8) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            h = (h ^ word_at(p + i)) * HASH_K;
            h ^= h >> 29;
        }
        if (i < n) {
            h = (h ^ word_at(p + n - 8)) * HASH_K;
            h ^= h >> 29;
        }
        return h;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)(unsigned char)p[i] << (8 * i);
    h = (h ^ w) * HASH_K;
    return h ^ (h >> 29);
}

uint32_t series_table__hash_device(const char *device, size_t dev_len)
{
    uint64_t h = hash_bytes(UINT64_C(0xcbf29ce484222325), device, dev_len);
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

uint32_t series_table__hash_metric(uint32_t device_hash, int32_t partition, const char *metric,
                                   size_t metric_len)
{
    uint64_t h = hash_bytes(((uint64_t)(uint32_t)partition << 32) | device_hash, metric,
                            metric_len);
    /* murmur3's finalizer: every input bit reaches the low bits that pick the slot */
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return (uint32_t)h;
}

uint32_t series_table__hash(int32_t partition, const char *device, size_t dev_len,
                            const char *metric, size_t metric_len)
{
    return series_table__hash_metric(series_table__hash_device(device, dev_len), partition,
                                     metric, metric_len);
}

/* Whether the n bytes at a and b are equal: eight at a time with one branch at the end (a
 * key is 10 to 30 bytes: memcmp's call and size dispatch cost more than the comparison). */
static inline bool bytes_equal(const char *a, const char *b, size_t n)
{
    if (n < 8)
        return memcmp(a, b, n) == 0;
    uint64_t diff = (word_at(a) ^ word_at(b)) | (word_at(a + n - 8) ^ word_at(b + n - 8));
    for (size_t i = 8; i + 8 < n; i += 8) /* (none up to 16 bytes) */
        diff |= word_at(a + i) ^ word_at(b + i);
    return diff == 0;
}

struct series *series_table__find(const struct series_table *st, const struct tg_engine_config *ec,
                                  uint32_t hash, int32_t partition, const char *device,
                                  size_t dev_len, const char *metric, size_t metric_len)
{
    for (uint32_t i = hash & st->mask;; i = (i + 1) & st->mask) {
        struct series *s = st->slots[i].s;
        if (!s)
            return NULL;
        if (st->slots[i].hash != hash || s->partition != partition || s->dev_len != dev_len ||
            s->metric_len != metric_len)
            continue;
        const struct detect_params *dp = engine__params(ec, s->rule);
        if (bytes_equal(series__device(s, dp), device, dev_len) &&
            bytes_equal(series__metric(s, dp), metric, metric_len))
            return s;
    }
}

void series_table__prefetch_slot(const struct series_table *st, uint32_t hash)
{
    __builtin_prefetch(&st->slots[hash & st->mask]);
}

void series_table__prefetch_series(const struct series_table *st,
                                   const struct tg_engine_config *ec, uint32_t hash,
                                   int32_t tod)
{
    const struct slot *sl = &st->slots[hash & st->mask];
    if (sl->hash != hash || sl->pf_bytes == 0)
        return;
    /* The lines of its hot bytes (SERIES_HOT .. pf_bytes: header, key, level window). */
    const char *p = (const char *)sl->s, *hot = p + SERIES_HOT;
    unsigned n = (sl->pf_bytes - (unsigned)SERIES_HOT + 63u) / 64u;
    /* Up to 12 lines by a jump into straight-line prefetches, a third of a loop's
     * instructions; any beyond (long names, predict) one by one. The jump's target depends on
     * the rule and the key's length alone, so the predictor learns it. */
    unsigned k = n < 12 ? n : 12;
    /* entered at case k: lines 0, 1, ... k-1 (k-1 is `last`), in the order scoring reads */
    const char *last = hot + 64 * (k - 1);
    switch (k) {
    case 12: __builtin_prefetch(last - 64 * 11); /* fall through */
    case 11: __builtin_prefetch(last - 64 * 10); /* fall through */
    case 10: __builtin_prefetch(last - 64 * 9); /* fall through */
    case 9: __builtin_prefetch(last - 64 * 8); /* fall through */
    case 8: __builtin_prefetch(last - 64 * 7); /* fall through */
    case 7: __builtin_prefetch(last - 64 * 6); /* fall through */
    case 6: __builtin_prefetch(last - 64 * 5); /* fall through */
    case 5: __builtin_prefetch(last - 64 * 4); /* fall through */
    case 4: __builtin_prefetch(last - 64 * 3); /* fall through */
    case 3: __builtin_prefetch(last - 64 * 2); /* fall through */
    case 2: __builtin_prefetch(last - 64 * 1); /* fall through */
    default: __builtin_prefetch(last); break;
    }
    for (unsigned i = 12; i < n; i++)
        __builtin_prefetch(hot + 64 * i);
    /* malloc aligns to 16, not 64: the bytes may reach one line further than n lines. */
    __builtin_prefetch(p + sl->pf_bytes - 1);
    if (sl->pf_bucket) {
        /* The one bucket this point's time of day reads, right after those bytes. */
        const struct detect_params *dp = engine__params(ec, sl->rule);
        __builtin_prefetch(p + sl->pf_bytes +
                           (size_t)detect__bucket_index(dp, tod) * sizeof(struct seasonal_bucket));
    }
}

static void place(struct slot *slots, uint32_t mask, struct series *s)
{
    uint32_t i = s->hash & mask;
    while (slots[i].s)
        i = (i + 1) & mask;
    slots[i] = (struct slot){s, s->hash, s->pf_bytes, s->rule, s->pf_bucket};
}

static tg_err resize(struct series_table *st, uint32_t capacity)
{
    struct slot *slots = calloc(capacity, sizeof *slots);
    if (!slots)
        return TG_ERR_NOMEM;
    for (uint32_t i = 0; i <= st->mask; i++)
        if (st->slots[i].s)
            place(slots, capacity - 1, st->slots[i].s);
    free(st->slots);
    st->slots = slots;
    st->mask = capacity - 1;
    return TG_OK;
}

tg_err series_table__insert(struct series_table *st, struct series *s)
{
    if ((st->count + 1) * 2 > (size_t)st->mask + 1) {
        if (st->mask >= (UINT32_MAX >> 1))
            return TG_ERR_FULL;
        tg_err err = resize(st, (st->mask + 1) * 2);
        if (err != TG_OK)
            return err;
    }
    place(st->slots, st->mask, s);
    st->count++;
    return TG_OK;
}

size_t series_table__count(const struct series_table *st)
{
    return st->count;
}

size_t series_table__bytes(const struct series_table *st)
{
    return ((size_t)st->mask + 1) * sizeof *st->slots;
}

void series_table__foreach(struct series_table *st, void (*fn)(void *ud, struct series *s),
                           void *ud)
{
    for (uint32_t i = 0; i <= st->mask; i++)
        if (st->slots[i].s)
            fn(ud, st->slots[i].s);
}

/* Empties slot hole of a linear-probing table without breaking any probe chain (backward
 * shift deletion): each later element of the run that may live at the hole (its home is not
 * between the hole and itself) moves into it, and the hole moves on to where it was. */
static void shift_back(struct series_table *st, uint32_t hole)
{
    for (uint32_t j = hole;;) {
        j = (j + 1) & st->mask;
        if (!st->slots[j].s)
            break;
        uint32_t home = st->slots[j].hash & st->mask;
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays)
            continue;
        st->slots[hole] = st->slots[j];
        hole = j;
    }
    st->slots[hole] = (struct slot){0};
}

void series_table__remove_if(struct series_table *st, bool (*pred)(void *ud, struct series *s),
                             void *ud)
{
    /* Start right after an empty slot (the table is at most half full): no probe run
     * crosses it, so elements only ever shift into the slot being examined or later ones,
     * and each is examined once after it settles. No allocation: this cannot fail. */
    uint32_t cap = st->mask + 1, start = 0;
    while (st->slots[start].s)
        start++;
    for (uint32_t n = 1; n <= cap; n++) {
        uint32_t i = (start + n) & st->mask;
        while (st->slots[i].s && pred(ud, st->slots[i].s)) {
            free(st->slots[i].s);
            st->count--;
            shift_back(st, i);
        }
    }
}
