/*
 * test_driver_replay.h - a fake I2C bus for driver tests that replays a recorded transcript.
 *
 * A transcript (tests/unit/data/drivers/, one file per scenario) lists the bus transactions
 * a driver must make, in order, one per line:
 *
 *     ADDR | WRITTEN | READ BACK [| REPEAT]
 *
 * ADDR is the 7-bit address in hex; WRITTEN the bytes the driver must write (hex, "-" for
 * none); READ BACK the bytes the device answers (hex, "-" for none), or "nack:N" for an
 * N-byte read (N may be 0) that the device NACKs, so the transfer fails. REPEAT (default 1)
 * repeats the line. '#' starts a comment.
 *
 * Any deviation fails the test at once with the line number: another address, other bytes
 * written, another read length, a transaction past the end. tg_replay_finish() fails when
 * transactions are left over. Each transaction takes 1 ms of the fake monotonic clock, as
 * bus time, so a driver's polling deadline is reached after a fixed number of transactions.
 */
#ifndef TG_TEST_DRIVER_REPLAY_H
#define TG_TEST_DRIVER_REPLAY_H

#include "hal.h"

struct tg_replay;

/* Loads $TG_TEST_DATA/drivers/<name> (fails the test when it cannot) and fills *hal with the
 * fake: i2c_transfer replays, mono_ms is the bus time, wall_ms/random_u32 are fixed. */
struct tg_replay *tg_replay_new(const char *name, struct tg_hal *hal);

/* Fails the test when transactions of the transcript were not made; then frees. */
void tg_replay_finish(struct tg_replay *rp);

/* Fails the test unless |got - want| <= eps (cmocka's float assertion works in float). */
#define assert_near(got, want, eps) tg_replay_assert_near((got), (want), (eps), __FILE__, __LINE__)
void tg_replay_assert_near(double got, double want, double eps, const char *file, int line);

#endif
