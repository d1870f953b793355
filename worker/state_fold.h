/*
 * state_fold.h - the latest committed value of each key of one state-topic partition, as a
 * restore reads it (consumer_state.c).
 *
 * A restore reads the partition from its beginning. Kafka compacts a topic only now and then,
 * and never its active segment, so the log holds many versions of each key: every checkpoint
 * writes each series that changed (README, "State that moves with its partition"). The fold
 * keeps one value per key, so a restore's memory follows the number of series, not the length
 * of the uncompacted log (a tombstone storm or hours of checkpoints cost nothing more).
 *
 * Values put since the last commit (an offset marker) are pending: a commit makes them the
 * keys' committed values; pending ones never committed (a transaction that did not commit,
 * visible on a cluster without isolation) are never handed out. A NULL or empty value is a
 * tombstone: the key is then absent from what tg_state_fold_foreach() hands out.
 *
 * Threads: one thread at a time.
 */
#ifndef TG_STATE_FOLD_H
#define TG_STATE_FOLD_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct tg_state_fold;

/* An empty fold, or NULL when out of memory. */
struct tg_state_fold *tg_state_fold_new(void);

/* Frees the fold and every value it holds. NULL is a no-op. */
void tg_state_fold_destroy(struct tg_state_fold *sf);

/* Records that key now has value (copied; NULL or value_len 0: a tombstone), pending until the
 * next commit. TG_ERR_NOMEM when out of memory (the fold is unchanged). */
tg_err tg_state_fold_put(struct tg_state_fold *sf, const void *key, size_t key_len,
                         const void *value, size_t value_len);

/* Everything put so far becomes committed (an offset marker was read). */
void tg_state_fold_commit(struct tg_state_fold *sf);

/* Everything put since the last commit is forgotten: a checkpoint that never completed (its
 * first transactions committed, its last one not; consumer_state.c). */
void tg_state_fold_rollback(struct tg_state_fold *sf);

/* Keys held (committed or pending), and the bytes of keys and values held. */
size_t tg_state_fold_keys(const struct tg_state_fold *sf);
size_t tg_state_fold_bytes(const struct tg_state_fold *sf);

/* Calls fn once for each key whose committed value is not a tombstone, in the order in which
 * the keys were last put (among committed puts). Returns the number of calls, or (size_t)-1
 * when out of memory (then fn was not called). */
typedef void (*tg_state_fold_fn)(void *ud, const char *key, size_t key_len, const void *value,
                                 size_t value_len);
size_t tg_state_fold_foreach(const struct tg_state_fold *sf, tg_state_fold_fn fn, void *ud);

#endif
