/*
 * series_table.c - the engine's series, by (partition, device, metric): open addressing with
 * linear probing over an array of pointers, kept at most half full, doubling as it grows.
 *
 * A slot is one pointer, and the series carries its hash, so a probe compares hashes before
 * touching keys. Series are allocated one by one (their size depends on the rule), so their
 * addresses stay put when the table grows: the window lists and the dirty list hold them.
 */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "util.h"

struct series_table {
    struct series **slots;
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
        free(st->slots[i]);
    free(st->slots);
    free(st);
}

uint32_t series_table__hash(int32_t partition, const char *device, size_t dev_len,
                            const char *metric, size_t metric_len)
{
    /* FNV-1a over device, a separator and metric, then the partition mixed in. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < dev_len; i++)
        h = (h ^ (unsigned char)device[i]) * 16777619u;
    h = (h ^ 0xffu) * 16777619u;
    for (size_t i = 0; i < metric_len; i++)
        h = (h ^ (unsigned char)metric[i]) * 16777619u;
    h ^= (uint32_t)partition * 0x9e3779b1u;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h;
}

struct series *series_table__find(const struct series_table *st, const struct tg_engine_config *ec,
                                  uint32_t hash, int32_t partition, const char *device,
                                  size_t dev_len, const char *metric, size_t metric_len)
{
    for (uint32_t i = hash & st->mask;; i = (i + 1) & st->mask) {
        struct series *s = st->slots[i];
        if (!s)
            return NULL;
        if (s->hash != hash || s->partition != partition || s->dev_len != dev_len ||
            s->metric_len != metric_len)
            continue;
        const struct detect_params *dp = engine__params(ec, s->rule);
        if (memcmp(series__device(s, dp), device, dev_len) == 0 &&
            memcmp(series__metric(s, dp), metric, metric_len) == 0)
            return s;
    }
}

static void place(struct series **slots, uint32_t mask, struct series *s)
{
    uint32_t i = s->hash & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = s;
}

static tg_err resize(struct series_table *st, uint32_t capacity)
{
    struct series **slots = calloc(capacity, sizeof *slots);
    if (!slots)
        return TG_ERR_NOMEM;
    for (uint32_t i = 0; i <= st->mask; i++)
        if (st->slots[i])
            place(slots, capacity - 1, st->slots[i]);
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
        if (st->slots[i])
            fn(ud, st->slots[i]);
}

void series_table__remove_if(struct series_table *st, bool (*pred)(void *ud, struct series *s),
                             void *ud)
{
    /* Removing from a linear-probing table leaves holes in probe chains; rather than shift
     * entries back one by one, rebuild the chains: removal is rare (a partition revoked). */
    size_t kept = 0;
    for (uint32_t i = 0; i <= st->mask; i++) {
        struct series *s = st->slots[i];
        if (!s)
            continue;
        if (pred(ud, s)) {
            free(s);
            st->slots[i] = NULL;
        } else {
            kept++;
        }
    }
    st->count = kept;
    struct series **old = st->slots;
    struct series **slots = calloc((size_t)st->mask + 1, sizeof *slots);
    if (!slots) {
        /* Out of memory: re-place in the old array, compacting it in place. Collect the
         * survivors at its front first, then clear the rest and place them again. */
        size_t n = 0;
        for (uint32_t i = 0; i <= st->mask; i++)
            if (old[i]) {
                struct series *s = old[i];
                old[i] = NULL;
                old[n++] = s;
            }
        struct series **tmp = old;
        for (size_t i = 0; i < n; i++) {
            struct series *s = tmp[i];
            tmp[i] = NULL;
            /* Slots before i are placed already or empty; i..n-1 hold the rest: place
             * each one only into an empty slot, which never overwrites an unplaced one
             * because those sit at [i+1, n) and are taken until moved. */
            place(tmp, st->mask, s);
        }
        return;
    }
    for (uint32_t i = 0; i <= st->mask; i++)
        if (old[i])
            place(slots, st->mask, old[i]);
    free(old);
    st->slots = slots;
}
