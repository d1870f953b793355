/*
 * seqset.h - a set of sequence numbers as sorted, disjoint, non-touching inclusive ranges.
 *
 * The one implementation the simulator's ledger (what each device took, released, dropped)
 * and the audit (which seqs reached the telemetry topic and the DLQ) share. A device's seqs
 * arrive almost in order, so a set is usually a handful of ranges: appending the next seq is
 * O(1), any other add, remove or lookup a binary search (plus a memmove when a range is
 * split or two are joined). Memory follows the number of gaps, not the largest seq, so an
 * absurd seq (2^63) costs one range, not a bitmap up to it.
 *
 * A value type so that sets can live inside per-boot arrays: zero-initialize one
 * (struct tg_seqset s = {0}) to get an empty set and release it with tg_seqset_free(). The
 * fields are private to seqset.c; read the ranges with tg_seqset_n_ranges() and
 * tg_seqset_range(). Not synchronized: one thread at a time per set.
 */
#ifndef TG_SIM_SEQSET_H
#define TG_SIM_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tg_seqset_range {
    uint64_t lo, hi; /* inclusive */
};

struct tg_seqset {
    struct tg_seqset_range *r; /* private */
    size_t n, cap;             /* private */
};

/* Frees the ranges; the set is empty (and reusable) afterwards. */
void tg_seqset_free(struct tg_seqset *s);

bool tg_seqset_contains(const struct tg_seqset *s, uint64_t seq);

/* True when some seq in lo..hi (inclusive) is in the set. */
bool tg_seqset_intersects(const struct tg_seqset *s, uint64_t lo, uint64_t hi);

/* Adds seq. 1 when added, 0 when it was there, -1 when out of memory (set unchanged). */
int tg_seqset_add(struct tg_seqset *s, uint64_t seq);

/* Removes seq. 1 when removed, 0 when absent, -1 when out of memory (splitting a range needs
 * one more slot; set unchanged). */
int tg_seqset_remove(struct tg_seqset *s, uint64_t seq);

/* Appends lo..hi above every seq in the set, not touching the last range (lo > last hi + 1):
 * for readers of a written set, which check that order themselves. 0, or -1 when out of
 * memory or the order does not hold (errno ENOMEM or EINVAL; set unchanged). */
int tg_seqset_append_range(struct tg_seqset *s, uint64_t lo, uint64_t hi);

/* How many seqs the set holds. */
uint64_t tg_seqset_count(const struct tg_seqset *s);

/* The ranges, ascending: i < tg_seqset_n_ranges(s). */
size_t tg_seqset_n_ranges(const struct tg_seqset *s);
struct tg_seqset_range tg_seqset_range(const struct tg_seqset *s, size_t i);

/* Calls fn for every seq in the set, ascending, until fn returns false; then returns false
 * (true when fn saw every seq). fn must not change the set. */
typedef bool (*tg_seqset_visit_fn)(void *ud, uint64_t seq);
bool tg_seqset_each(const struct tg_seqset *s, tg_seqset_visit_fn fn, void *ud);

#endif
