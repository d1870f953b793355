/*
 * bme280.h - Bosch BME280 temperature / humidity / pressure sensor over I2C (sensor.h).
 *
 * The driver checks the chip id (0x60), soft-resets the chip, reads its calibration, and then
 * takes each sample in forced mode (oversampling x1 for all three, IIR filter off: the
 * datasheet's "weather monitoring" setting, about 9 ms per measurement and nearly no
 * self-heating), converting with the datasheet's integer compensation formulas.
 *
 * Metrics: temperature_c (degC), humidity_pct (%RH), pressure_hpa (hPa).
 *
 * The HAL has no sleep, so waiting for the reset and the conversion polls the chip over the
 * bus until it is done, bounded by hal->mono_ms() (deadline TG_BME280_WAIT_MS).
 *
 * Pure C, no allocation, no OS call: builds for the Cortex-M footprint target as well.
 */
#ifndef TG_BME280_H
#define TG_BME280_H

#include "sensor.h"

/* SDO pin to GND: 0x76; SDO to VDDIO: 0x77. */
#define TG_BME280_ADDR_PRIMARY 0x76
#define TG_BME280_ADDR_SECONDARY 0x77

/* Longest wait for a reset or a conversion, in ms (a forced x1/x1/x1 conversion takes at most
 * 9.3 ms, the start-up after reset 2 ms). */
#define TG_BME280_WAIT_MS 50

extern const struct tg_sensor_driver tg_bme280_driver;

#endif
