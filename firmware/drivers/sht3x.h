/*
 * sht3x.h - Sensirion SHT30/SHT31/SHT35 temperature / humidity sensor over I2C (sensor.h).
 *
 * Each sample is one single-shot measurement with high repeatability and clock stretching
 * disabled (command 0x2400): the chip NACKs the read header until the conversion is done
 * (at most 15.5 ms), so the driver polls the read, bounded by hal->mono_ms() (deadline
 * TG_SHT3X_WAIT_MS). Every 16-bit word is checked with the chip's CRC-8; a sample with a bad
 * CRC is a failed read, never a wrong value.
 *
 * Metrics: temperature_c (degC), humidity_pct (%RH).
 *
 * Pure C, no allocation, no OS call: builds for the Cortex-M footprint target as well.
 */
#ifndef TG_SHT3X_H
#define TG_SHT3X_H

#include <stddef.h>
#include <stdint.h>

#include "sensor.h"

/* ADDR pin to GND: 0x44; ADDR to VDD: 0x45. */
#define TG_SHT3X_ADDR_PRIMARY 0x44
#define TG_SHT3X_ADDR_SECONDARY 0x45

/* Longest wait for a reset or a conversion, in ms (high repeatability: 15.5 ms at most). */
#define TG_SHT3X_WAIT_MS 50

extern const struct tg_sensor_driver tg_sht3x_driver;

/* The chip's CRC-8 over len bytes: polynomial 0x31, initial value 0xFF, no reflection, no
 * final XOR (datasheet section 4.12: crc8(0xBE, 0xEF) = 0x92). Exposed for tests. */
uint8_t tg_sht3x_crc8(const uint8_t *data, size_t len);

#endif
