/*
 * util.h - small helpers shared by several modules: hashing for in-memory tables, sizing,
 * and hex digits. Pure functions, any thread.
 */
#ifndef TG_UTIL_H
#define TG_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a, 32 bits: for hash tables keyed by short ids where no adversary picks the keys
 * (the broker's ACL ties device ids to credentials). */
uint32_t tg_hash_fnv1a(const char *data, size_t len);

/* The smallest power of two >= n (1 for n == 0). n must be <= 2^31. */
uint32_t tg_pow2_at_least(uint32_t n);

/* Value of one hex digit (either case), or -1. */
int tg_hex_digit(char c);

#endif
