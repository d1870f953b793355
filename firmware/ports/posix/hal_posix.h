/*
 * hal_posix.h - the firmware HAL (hal.h) on Linux, without the transport (transport_mosquitto.h):
 * clocks, randomness, the key/value store, I2C.
 *
 *   - clocks: clock_gettime(CLOCK_REALTIME / CLOCK_MONOTONIC);
 *   - random: getrandom(2), non-blocking (jitter needs no cryptographic quality, but must
 *     differ between the nodes that all lost the same broker at once);
 *   - key/value: a small text file <state_dir>/kv ("key value" lines), replaced atomically
 *     on every store (write kv.tmp, fsync, rename, fsync the directory), so a power cut
 *     leaves the old or the new file, never a torn one; a lock file keeps a second
 *     tidegate-node off the same state (two nodes sharing a boot counter would repeat
 *     (boot, seq) pairs);
 *   - I2C: /dev/i2c-<bus> with ioctl(I2C_RDWR), write then read with a repeated start. The
 *     HAL addresses a device by its address alone, so each address is bound to one bus with
 *     tg_posix_hal_attach_i2c().
 *
 * Threads: one thread (the node's).
 */
#ifndef TG_HAL_POSIX_H
#define TG_HAL_POSIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tg_posix_hal;

/* Creates state_dir if missing (mode 0700), takes its lock and reads its kv file. Returns
 * NULL (the reason logged) when one of those fails. */
struct tg_posix_hal *tg_posix_hal_new(const char *state_dir);

/* Closes the I2C buses and releases the lock. NULL is a no-op. */
void tg_posix_hal_destroy(struct tg_posix_hal *ph);

/* Binds addr to /dev/i2c-<bus>, opening the bus on first use. Returns 0, or -1 (logged). */
int tg_posix_hal_attach_i2c(struct tg_posix_hal *ph, unsigned bus, uint8_t addr);

/* The hal.h entries of the same names (main.c puts them in the node's struct tg_hal). */
int64_t tg_posix_hal_wall_ms(void);
uint64_t tg_posix_hal_mono_ms(void);
uint32_t tg_posix_hal_random_u32(void);
bool tg_posix_hal_kv_load(struct tg_posix_hal *ph, const char *key, uint64_t *value);
int tg_posix_hal_kv_store(struct tg_posix_hal *ph, const char *key, uint64_t value);
int tg_posix_hal_i2c_transfer(struct tg_posix_hal *ph, uint8_t addr, const uint8_t *wr,
                              size_t wr_len, uint8_t *rd, size_t rd_len);

#endif
