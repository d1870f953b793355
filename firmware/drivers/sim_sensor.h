/*
 * sim_sensor.h - a simulated environmental sensor ("sim" driver, sensor.h): the signals every
 * device of tidegate-sim reports, and what `driver = sim` gives tidegate-node on a board
 * without real sensors.
 *
 * Metrics, each with per-device offsets drawn from the seed:
 *   temperature_c  daily cycle (peak in the device's afternoon) around a base of 8..26 degC,
 *                  amplitude 2..7 degC, plus slowly wandering (AR(1)) and white noise
 *   humidity_pct   35..75 %RH base, falling as the temperature rises, noise; within 3..100
 *   pressure_hpa   917..1013 hPa (the device's altitude), a multi-day weather swing of a few
 *                  hPa, the 12-hour atmospheric tide, noise
 *   battery_v      3.70..4.15 V at the first sample, decaying by 5..30 mV per day to 3.0 V
 *   vibration_g    a machine-like signal: three sines (periods of seconds, minutes, tens of
 *                  minutes) plus noise, around 0
 * Values are rounded to a real sensor's resolution (0.01, or 0.001 V, 0.0001 g).
 *
 * Time comes from hal->wall_ms(): the cycle follows the device's clock, skew included.
 *
 * Determinism: the parameters and the noise come from the driver's own PRNG (splitmix64 for
 * the parameters, xorshift64* for the noise), never from libc's rand(). The same seed and the
 * same sequence of wall_ms values give the same samples, on every platform.
 *
 * Seeding: call tg_sim_sensor_set_seed() on the state before the driver's init (the
 * simulator derives one seed per device). A state that was zero-filled instead takes its seed
 * from hal->random_u32() and the bus address at init. Any other content is not allowed.
 *
 * Pure C, no allocation, no OS call and no libm (its own sine): builds for the Cortex-M
 * footprint target like the other drivers.
 */
#ifndef TG_SIM_SENSOR_H
#define TG_SIM_SENSOR_H

#include <stdint.h>

#include "sensor.h"

#define TG_SIM_SENSOR_METRICS 5

extern const struct tg_sensor_driver tg_sim_sensor_driver;

/* Stores the seed in a driver state of tg_sim_sensor_driver.state_size bytes; the driver's
 * init then derives the device's parameters from it. */
void tg_sim_sensor_set_seed(void *state, uint64_t seed);

/* sin(2 * pi * cycles), to about 1e-9, without libm (shared with the simulator's tests). */
double tg_sim_sensor_sin_cycles(double cycles);

#endif
