/*
 * strmap.h - a small hash map from strings to 32-bit values.
 *
 * The index the gateway's validator (device keys, metric ranges) and the simulator's ledger
 * and audit (devices) each had their own copy of: a name to the position of its entry in
 * the caller's array. Keys are copied into the map (one arena, no allocation per key); keys
 * are byte strings with a length, so a caller can look up a slice of a larger buffer (a
 * topic level, a payload field) without copying it first. Open addressing with linear
 * probing on FNV-1a (tg_hash_fnv1a: no adversary picks these keys), kept at most half full.
 * There is no removal: every user builds its index and then only adds and looks up.
 *
 * Threads: not synchronized. Lookups on a map nobody changes may run on any threads.
 */
#ifndef TG_STRMAP_H
#define TG_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct tg_strmap;

/* An empty map; NULL when out of memory. */
struct tg_strmap *tg_strmap_new(void);

/* Frees the map and its copies of the keys. NULL is a no-op. */
void tg_strmap_destroy(struct tg_strmap *m);

/* True, with *value when value is not NULL, when key (len bytes) is in the map. */
bool tg_strmap_get(const struct tg_strmap *m, const char *key, size_t len, uint32_t *value);

/* Maps key (len bytes, copied) to value, replacing the value of a key already there.
 * TG_OK, or TG_ERR_NOMEM with the map unchanged. */
tg_err tg_strmap_put(struct tg_strmap *m, const char *key, size_t len, uint32_t value);

/* How many keys the map holds. */
size_t tg_strmap_count(const struct tg_strmap *m);

#endif
