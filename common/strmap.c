/*
 * strmap.c - string to uint32 hash map (see strmap.h).
 *
 * A slot holds the key's hash, so that probing compares bytes only on a full hash match,
 * and the key's place in the arena. The table is a power of two, at most half full; the
 * arena only grows (there is no removal), and is moved by realloc, so slots hold offsets.
 */
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define FIRST_SLOTS 16        /* power of two */
#define FIRST_ARENA_BYTES 256

struct slot {
    uint32_t hash;
    uint32_t value;
    size_t key_off; /* in the arena; SIZE_MAX: empty slot */
    size_t key_len;
};

struct tg_strmap {
    struct slot *slots;
    size_t n_slots, count;
    char *arena;
    size_t arena_used, arena_cap;
};

static struct slot *alloc_slots(size_t n)
{
    struct slot *slots = malloc(n * sizeof *slots);
    if (slots)
        for (size_t i = 0; i < n; i++)
            slots[i].key_off = SIZE_MAX;
    return slots;
}

struct tg_strmap *tg_strmap_new(void)
{
    struct tg_strmap *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->slots = alloc_slots(FIRST_SLOTS);
    m->arena = malloc(FIRST_ARENA_BYTES); /* never NULL, so offsets into it are always valid */
    if (!m->slots || !m->arena) {
        tg_strmap_destroy(m);
        return NULL;
    }
    m->n_slots = FIRST_SLOTS;
    m->arena_cap = FIRST_ARENA_BYTES;
    return m;
}

void tg_strmap_destroy(struct tg_strmap *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m->arena);
    free(m);
}

/* The slot holding key, or the empty slot where it would go. */
static struct slot *probe(const struct tg_strmap *m, const char *key, size_t len, uint32_t hash)
{
    size_t mask = m->n_slots - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct slot *s = &m->slots[i];
        if (s->key_off == SIZE_MAX)
            return s;
        if (s->hash == hash && s->key_len == len &&
            (len == 0 || memcmp(m->arena + s->key_off, key, len) == 0))
            return s;
    }
}

bool tg_strmap_get(const struct tg_strmap *m, const char *key, size_t len, uint32_t *value)
{
    const struct slot *s = probe(m, key, len, tg_hash_fnv1a(key, len));
    if (s->key_off == SIZE_MAX)
        return false;
    if (value)
        *value = s->value;
    return true;
}

static bool grow_slots(struct tg_strmap *m)
{
    size_t n = m->n_slots * 2;
    struct slot *slots = alloc_slots(n);
    if (!slots)
        return false;
    struct slot *old = m->slots;
    size_t old_n = m->n_slots;
    m->slots = slots;
    m->n_slots = n;
    for (size_t i = 0; i < old_n; i++) {
        if (old[i].key_off == SIZE_MAX)
            continue;
        struct slot *s = probe(m, m->arena + old[i].key_off, old[i].key_len, old[i].hash);
        *s = old[i];
    }
    free(old);
    return true;
}

tg_err tg_strmap_put(struct tg_strmap *m, const char *key, size_t len, uint32_t value)
{
    uint32_t hash = tg_hash_fnv1a(key, len);
    struct slot *s = probe(m, key, len, hash);
    if (s->key_off != SIZE_MAX) {
        s->value = value;
        return TG_OK;
    }
    /* Reserve everything first, so that a failure leaves the map as it was. */
    if (m->arena_used + len > m->arena_cap) {
        size_t cap = m->arena_cap;
        while (cap < m->arena_used + len)
            cap *= 2;
        char *arena = realloc(m->arena, cap);
        if (!arena)
            return TG_ERR_NOMEM;
        m->arena = arena;
        m->arena_cap = cap;
    }
    if ((m->count + 1) * 2 > m->n_slots) {
        if (!grow_slots(m))
            return TG_ERR_NOMEM;
        s = probe(m, key, len, hash);
    }
    if (len)
        memcpy(m->arena + m->arena_used, key, len);
    *s = (struct slot){.hash = hash, .value = value, .key_off = m->arena_used, .key_len = len};
    m->arena_used += len;
    m->count++;
    return TG_OK;
}

size_t tg_strmap_count(const struct tg_strmap *m)
{
    return m->count;
}
