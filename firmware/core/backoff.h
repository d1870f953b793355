/*
 * backoff.h - reconnect delays: capped exponential backoff with full jitter.
 *
 * The n-th consecutive failed attempt (n = 0 for the first) waits a random time in
 * [0, ceiling(n)], where ceiling(n) = min_ms * 2^n, capped at max_ms. Full jitter spreads
 * the reconnects of many devices that lost the broker at the same instant (a broker restart,
 * the simulator's --storm) over the whole window instead of letting them arrive in waves.
 *
 * Pure functions: no state, any thread.
 */
#ifndef TG_BACKOFF_H
#define TG_BACKOFF_H

#include <stdint.h>

/* min_ms * 2^attempt, capped at max_ms (min_ms <= max_ms); never overflows. */
uint32_t tg_backoff_ceiling_ms(uint32_t min_ms, uint32_t max_ms, unsigned attempt);

/* A delay uniformly spread over [0, tg_backoff_ceiling_ms(min_ms, max_ms, attempt)], drawn
 * from 32 random bits. */
uint32_t tg_backoff_delay_ms(uint32_t min_ms, uint32_t max_ms, unsigned attempt,
                             uint32_t random_bits);

#endif
