/*
 * timerq.h - when each simulated device next needs attention: an indexed binary min-heap of
 * (due time, device index), so the event loop finds the next due device in O(1) and moves a
 * device's time in O(log N), instead of scanning 10,000 devices on every wake-up.
 *
 * Threads: one (the fleet's event loop).
 */
#ifndef TG_SIM_TIMERQ_H
#define TG_SIM_TIMERQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tg_timerq;

/* A queue for ids 0 .. capacity-1, initially empty. NULL when out of memory. */
struct tg_timerq *tg_timerq_new(uint32_t capacity);
void tg_timerq_destroy(struct tg_timerq *q);

/* Sets id's due time (ms, any monotonic origin), inserting it if it is not queued. */
void tg_timerq_set(struct tg_timerq *q, uint32_t id, uint64_t due_ms);

/* Removes id if queued. */
void tg_timerq_remove(struct tg_timerq *q, uint32_t id);

/* The earliest entry, without removing it. False when empty. */
bool tg_timerq_peek(const struct tg_timerq *q, uint32_t *id, uint64_t *due_ms);

/* Removes and returns the earliest entry if it is due at now_ms. False otherwise. */
bool tg_timerq_pop_due(struct tg_timerq *q, uint64_t now_ms, uint32_t *id);

/* Whether id is queued, and its due time. */
bool tg_timerq_get(const struct tg_timerq *q, uint32_t id, uint64_t *due_ms);

size_t tg_timerq_size(const struct tg_timerq *q);

#endif
