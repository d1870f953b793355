/*
 * sim_rand.h - the simulator's deterministic random numbers: splitmix64 to derive independent
 * streams from (run seed, device, purpose), xorshift64* for each stream. Never libc's rand():
 * libmosquitto reseeds it, and a run must be repeatable from --seed alone.
 *
 * Header-only (static inline): every stream is a uint64_t the caller owns; any thread, as long
 * as each stream is used by one.
 */
#ifndef TG_SIM_RAND_H
#define TG_SIM_RAND_H

#include <math.h>
#include <stdint.h>

/* What a stream is for, mixed into its seed so that streams of one device are independent. */
enum tg_sim_stream {
    TG_SIM_STREAM_SENSOR = 1,
    TG_SIM_STREAM_ANOMALY,
    TG_SIM_STREAM_FAULTS,
    TG_SIM_STREAM_HAL,
    TG_SIM_STREAM_FLEET,
};

static inline uint64_t tg_sim_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* The seed of stream `purpose` of device `index` in a run seeded with `seed`; never 0. */
static inline uint64_t tg_sim_stream_seed(uint64_t seed, uint64_t index, enum tg_sim_stream purpose)
{
    uint64_t x = seed;
    uint64_t a = tg_sim_splitmix64(&x);
    x = a ^ (index * UINT64_C(0xd1b54a32d192ed03));
    uint64_t b = tg_sim_splitmix64(&x);
    x = b ^ ((uint64_t)purpose * UINT64_C(0x8cb92ba72f3d8dd7));
    uint64_t out = tg_sim_splitmix64(&x);
    return out ? out : 1;
}

/* xorshift64*: *state must not be 0. */
static inline uint64_t tg_sim_rand_u64(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * UINT64_C(0x2545f4914f6cdd1d);
}

/* Uniform in [0, 1). */
static inline double tg_sim_rand_unit(uint64_t *state)
{
    return (double)(tg_sim_rand_u64(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform in [lo, hi). */
static inline double tg_sim_rand_range(uint64_t *state, double lo, double hi)
{
    return lo + (hi - lo) * tg_sim_rand_unit(state);
}

/* Uniform integer in [0, n), n > 0 (the modulo bias is below 2^-40 for the n used here). */
static inline uint32_t tg_sim_rand_below(uint64_t *state, uint32_t n)
{
    return (uint32_t)(tg_sim_rand_u64(state) >> 32) % n;
}

/* True with probability p (p <= 0: never, p >= 1: always). */
static inline int tg_sim_rand_chance(uint64_t *state, double p)
{
    return tg_sim_rand_unit(state) < p;
}

/* Exponentially distributed with the given mean: the gap to the next event of a Poisson
 * process. */
static inline double tg_sim_rand_exp(uint64_t *state, double mean)
{
    return -mean * log(1.0 - tg_sim_rand_unit(state));
}

/* Approximately standard normal (Irwin-Hall of 4 uniforms, unit variance, within +-3.46). */
static inline double tg_sim_rand_gauss(uint64_t *state)
{
    double sum = 0;
    for (int i = 0; i < 4; i++)
        sum += tg_sim_rand_unit(state);
    return (sum - 2.0) * 1.7320508075688772;
}

#endif
