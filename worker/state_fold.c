/*
 * state_fold.c - see state_fold.h. One entry per key in an open-addressing table of entry
 * indices; each entry holds its committed value and, when the key was put since the last
 * commit, its pending one. A commit walks only the entries put since the previous one.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "state_fold.h"

struct value {
    void *data;    /* NULL: a tombstone */
    size_t len;
    uint64_t seq;  /* when it was put: the order of tg_state_fold_foreach() */
};

struct entry {
    char *key;
    size_t key_len;
    uint64_t hash;
    struct value committed, pending;
    bool has_committed, has_pending;
};

struct tg_state_fold {
    struct entry *entries;
    size_t n, cap;
    size_t *slots;       /* entry index + 1, 0: empty */
    size_t n_slots;      /* a power of two, at least twice n */
    size_t *pending;     /* entries with has_pending */
    size_t n_pending, cap_pending;
    uint64_t seq;
    size_t bytes;
};

static uint64_t hash_key(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211u;
    }
    return h;
}

struct tg_state_fold *tg_state_fold_new(void)
{
    return calloc(1, sizeof(struct tg_state_fold));
}

void tg_state_fold_destroy(struct tg_state_fold *sf)
{
    if (!sf)
        return;
    for (size_t i = 0; i < sf->n; i++) {
        free(sf->entries[i].key);
        free(sf->entries[i].committed.data);
        free(sf->entries[i].pending.data);
    }
    free(sf->entries);
    free(sf->slots);
    free(sf->pending);
    free(sf);
}

static size_t *slot_of(const struct tg_state_fold *sf, const char *key, size_t key_len,
                       uint64_t h)
{
    size_t mask = sf->n_slots - 1, i = (size_t)h & mask;
    while (sf->slots[i]) {
        const struct entry *e = &sf->entries[sf->slots[i] - 1];
        if (e->hash == h && e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
            break;
        i = (i + 1) & mask;
    }
    return &sf->slots[i];
}

static bool grow_slots(struct tg_state_fold *sf)
{
    size_t n = sf->n_slots ? sf->n_slots * 2 : 256;
    size_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return false;
    free(sf->slots);
    sf->slots = slots;
    sf->n_slots = n;
    for (size_t i = 0; i < sf->n; i++)
        *slot_of(sf, sf->entries[i].key, sf->entries[i].key_len, sf->entries[i].hash) = i + 1;
    return true;
}

static bool grow(void **v, size_t *cap, size_t size)
{
    size_t n = *cap ? *cap * 2 : 256;
    void *p = realloc(*v, n * size);
    if (!p)
        return false;
    *v = p;
    *cap = n;
    return true;
}

tg_err tg_state_fold_put(struct tg_state_fold *sf, const void *key, size_t key_len,
                         const void *value, size_t value_len)
{
    if (!value)
        value_len = 0;
    /* Room first, so that a failure leaves the fold as it was. */
    if ((sf->n + 1) * 2 > sf->n_slots && !grow_slots(sf))
        return TG_ERR_NOMEM;
    if (sf->n == sf->cap && !grow((void **)&sf->entries, &sf->cap, sizeof *sf->entries))
        return TG_ERR_NOMEM;
    if (sf->n_pending == sf->cap_pending &&
        !grow((void **)&sf->pending, &sf->cap_pending, sizeof *sf->pending))
        return TG_ERR_NOMEM;
    void *copy = NULL;
    if (value_len) {
        if (!(copy = malloc(value_len)))
            return TG_ERR_NOMEM;
        memcpy(copy, value, value_len);
    }
    uint64_t h = hash_key(key, key_len);
    size_t *slot = slot_of(sf, key, key_len, h);
    struct entry *e;
    if (*slot) {
        e = &sf->entries[*slot - 1];
    } else {
        char *k = malloc(key_len + 1);
        if (!k) {
            free(copy);
            return TG_ERR_NOMEM;
        }
        memcpy(k, key, key_len);
        k[key_len] = '\0';
        e = &sf->entries[sf->n];
        memset(e, 0, sizeof *e);
        e->key = k;
        e->key_len = key_len;
        e->hash = h;
        *slot = ++sf->n;
        sf->bytes += key_len + 1;
    }
    if (e->has_pending) {
        sf->bytes -= e->pending.len;
        free(e->pending.data);
    } else {
        e->has_pending = true;
        sf->pending[sf->n_pending++] = (size_t)(e - sf->entries);
    }
    e->pending = (struct value){copy, value_len, ++sf->seq};
    sf->bytes += value_len;
    return TG_OK;
}

void tg_state_fold_commit(struct tg_state_fold *sf)
{
    for (size_t i = 0; i < sf->n_pending; i++) {
        struct entry *e = &sf->entries[sf->pending[i]];
        if (e->has_committed) {
            sf->bytes -= e->committed.len;
            free(e->committed.data);
        }
        e->committed = e->pending;
        e->has_committed = true;
        e->pending = (struct value){NULL, 0, 0};
        e->has_pending = false;
    }
    sf->n_pending = 0;
}

void tg_state_fold_rollback(struct tg_state_fold *sf)
{
    for (size_t i = 0; i < sf->n_pending; i++) {
        struct entry *e = &sf->entries[sf->pending[i]];
        sf->bytes -= e->pending.len;
        free(e->pending.data);
        e->pending = (struct value){NULL, 0, 0};
        e->has_pending = false;
    }
    sf->n_pending = 0;
}

size_t tg_state_fold_keys(const struct tg_state_fold *sf)
{
    return sf->n;
}

size_t tg_state_fold_bytes(const struct tg_state_fold *sf)
{
    return sf->bytes;
}

static int by_seq(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
    return x->committed.seq < y->committed.seq ? -1 : x->committed.seq > y->committed.seq;
}

size_t tg_state_fold_foreach(const struct tg_state_fold *sf, tg_state_fold_fn fn, void *ud)
{
    size_t n = 0;
    for (size_t i = 0; i < sf->n; i++)
        n += sf->entries[i].has_committed && sf->entries[i].committed.data;
    if (n == 0)
        return 0;
    const struct entry **v = malloc(n * sizeof *v);
    if (!v)
        return (size_t)-1;
    n = 0;
    for (size_t i = 0; i < sf->n; i++)
        if (sf->entries[i].has_committed && sf->entries[i].committed.data)
            v[n++] = &sf->entries[i];
    qsort(v, n, sizeof *v, by_seq);
    for (size_t i = 0; i < n; i++)
        fn(ud, v[i]->key, v[i]->key_len, v[i]->committed.data, v[i]->committed.len);
    free(v);
    return n;
}
