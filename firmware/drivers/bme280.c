/*
 * bme280.c - BME280 driver: register access, calibration, forced-mode sampling and the
 * datasheet's integer compensation (Bosch BST-BME280-DS002, section 4.2.3 and 8.2).
 */
#include "bme280.h"

#include <stdbool.h>
#include <stdint.h>

enum {
    REG_CALIB_00 = 0x88, /* 0x88..0xA1: dig_T1..dig_P9, dig_H1 */
    REG_CHIP_ID = 0xD0,
    REG_RESET = 0xE0,
    REG_CALIB_26 = 0xE1, /* 0xE1..0xE7: dig_H2..dig_H6 */
    REG_CTRL_HUM = 0xF2,
    REG_STATUS = 0xF3,
    REG_CTRL_MEAS = 0xF4,
    REG_CONFIG = 0xF5,
    REG_DATA = 0xF7, /* 0xF7..0xFE: press[3], temp[3], hum[2] */
};

#define CHIP_ID 0x60
#define RESET_WORD 0xB6
#define STATUS_MEASURING 0x08
#define STATUS_IM_UPDATE 0x01
#define OSRS_X1 1u
#define MODE_SLEEP 0u
#define MODE_FORCED 1u
#define MODE_MASK 3u
#define CTRL_MEAS(mode) ((uint8_t)((OSRS_X1 << 5) | (OSRS_X1 << 2) | (mode)))
/* The chip reports a skipped measurement with these raw values. */
#define ADC_SKIPPED_20BIT 0x80000
#define ADC_SKIPPED_16BIT 0x8000

struct bme280 {
    uint8_t addr;
    uint16_t dig_t1;
    int16_t dig_t2, dig_t3;
    uint16_t dig_p1;
    int16_t dig_p2, dig_p3, dig_p4, dig_p5, dig_p6, dig_p7, dig_p8, dig_p9;
    uint8_t dig_h1, dig_h3;
    int16_t dig_h2, dig_h4, dig_h5;
    int8_t dig_h6;
};

static int read_regs(const struct tg_hal *hal, uint8_t addr, uint8_t reg, uint8_t *buf, size_t n)
{
    return hal->i2c_transfer(hal->ctx, addr, &reg, 1, buf, n);
}

static int write_reg(const struct tg_hal *hal, uint8_t addr, uint8_t reg, uint8_t value)
{
    const uint8_t wr[2] = {reg, value};
    return hal->i2c_transfer(hal->ctx, addr, wr, sizeof wr, NULL, 0);
}

static uint16_t le_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static int16_t le_s16(const uint8_t *p)
{
    return (int16_t)le_u16(p);
}

/*
 * Polls the status register until none of busy_mask's bits is set, tolerating NACKs: right
 * after a soft reset the chip does not answer for up to 2 ms.
 */
static int wait_status_clear(const struct tg_hal *hal, uint8_t addr, uint8_t busy_mask)
{
    uint64_t deadline = hal->mono_ms(hal->ctx) + TG_BME280_WAIT_MS;
    for (;;) {
        uint8_t status;
        if (read_regs(hal, addr, REG_STATUS, &status, 1) == 0 && (status & busy_mask) == 0)
            return 0;
        if (hal->mono_ms(hal->ctx) >= deadline)
            return -1;
    }
}

/*
 * Waits for the end of a forced conversion. The status "measuring" bit alone is not enough:
 * it may not be set yet when polled right after the trigger. ctrl_meas's mode bits, however,
 * read back "forced" from the moment we write them until the chip returns to sleep at the end
 * of the conversion, so both are checked in one two-byte read (0xF3, 0xF4).
 */
static int wait_conversion(const struct tg_hal *hal, uint8_t addr)
{
    uint64_t deadline = hal->mono_ms(hal->ctx) + TG_BME280_WAIT_MS;
    for (;;) {
        uint8_t regs[2];
        if (read_regs(hal, addr, REG_STATUS, regs, sizeof regs) != 0)
            return -1;
        if ((regs[0] & STATUS_MEASURING) == 0 && (regs[1] & MODE_MASK) == MODE_SLEEP)
            return 0;
        if (hal->mono_ms(hal->ctx) >= deadline)
            return -1;
    }
}

static int read_calibration(struct bme280 *dev, const struct tg_hal *hal)
{
    uint8_t c[26], h[7];
    if (read_regs(hal, dev->addr, REG_CALIB_00, c, sizeof c) != 0 ||
        read_regs(hal, dev->addr, REG_CALIB_26, h, sizeof h) != 0)
        return -1;
    dev->dig_t1 = le_u16(&c[0]);
    dev->dig_t2 = le_s16(&c[2]);
    dev->dig_t3 = le_s16(&c[4]);
    dev->dig_p1 = le_u16(&c[6]);
    dev->dig_p2 = le_s16(&c[8]);
    dev->dig_p3 = le_s16(&c[10]);
    dev->dig_p4 = le_s16(&c[12]);
    dev->dig_p5 = le_s16(&c[14]);
    dev->dig_p6 = le_s16(&c[16]);
    dev->dig_p7 = le_s16(&c[18]);
    dev->dig_p8 = le_s16(&c[20]);
    dev->dig_p9 = le_s16(&c[22]);
    /* c[24] (0xA0) is unused. */
    dev->dig_h1 = c[25];
    dev->dig_h2 = le_s16(&h[0]);
    dev->dig_h3 = h[2];
    /* dig_H4 and dig_H5 are 12-bit signed values sharing the nibbles of 0xE5. */
    dev->dig_h4 = (int16_t)(((int16_t)(int8_t)h[3] * 16) | (h[4] & 0x0F));
    dev->dig_h5 = (int16_t)(((int16_t)(int8_t)h[5] * 16) | (h[4] >> 4));
    dev->dig_h6 = (int8_t)h[6];
    /* An all-zero or all-ones dig_T1/dig_P1 means the NVM did not read back: dividing by the
     * pressure compensation's var1 would then be meaningless. */
    if (dev->dig_t1 == 0 || dev->dig_p1 == 0 || dev->dig_t1 == 0xFFFF || dev->dig_p1 == 0xFFFF)
        return -1;
    return 0;
}

static int bme280_init(void *state, const struct tg_hal *hal, uint8_t addr)
{
    struct bme280 *dev = state;
    uint8_t id;

    if (hal->i2c_transfer == NULL)
        return -1;
    dev->addr = addr;
    if (read_regs(hal, addr, REG_CHIP_ID, &id, 1) != 0 || id != CHIP_ID)
        return -1;
    /* A reset puts every register in a known state, whatever a previous run left. */
    if (write_reg(hal, addr, REG_RESET, RESET_WORD) != 0)
        return -1;
    if (wait_status_clear(hal, addr, STATUS_IM_UPDATE) != 0)
        return -1;
    if (read_calibration(dev, hal) != 0)
        return -1;
    /* ctrl_hum takes effect only with the next write of ctrl_meas, hence this order. */
    if (write_reg(hal, addr, REG_CTRL_HUM, OSRS_X1) != 0 ||
        write_reg(hal, addr, REG_CONFIG, 0x00) != 0 ||
        write_reg(hal, addr, REG_CTRL_MEAS, CTRL_MEAS(MODE_SLEEP)) != 0)
        return -1;
    return 0;
}

/*
 * The datasheet's compensation (section 8.2, "32 bit" temperature and humidity, "64 bit"
 * pressure), with one change: left shifts of values that may be negative are written as
 * multiplications, which C defines and the compiler turns back into shifts.
 */

/* Temperature in 0.01 degC; *t_fine feeds the other two. Computed in 64 bits: the
 * datasheet's 32-bit products overflow for raw values a real chip never reports but a bus
 * glitch can; such a result fails the plausibility check in bme280_read. */
static int64_t compensate_t(const struct bme280 *dev, int32_t adc_t, int64_t *t_fine)
{
    int64_t var1 = (((int64_t)(adc_t >> 3) - (int64_t)dev->dig_t1 * 2) * dev->dig_t2) >> 11;
    int64_t d = (int64_t)(adc_t >> 4) - dev->dig_t1;
    int64_t var2 = (((d * d) >> 12) * dev->dig_t3) >> 14;
    *t_fine = var1 + var2;
    return (*t_fine * 5 + 128) >> 8;
}

/* Pressure in Pa as Q24.8 (value / 256 = Pa); 0 when the calibration makes it undefined. */
static uint32_t compensate_p(const struct bme280 *dev, int32_t adc_p, int32_t t_fine)
{
    int64_t var1 = (int64_t)t_fine - 128000;
    int64_t var2 = var1 * var1 * (int64_t)dev->dig_p6;
    var2 = var2 + var1 * (int64_t)dev->dig_p5 * ((int64_t)1 << 17);
    var2 = var2 + (int64_t)dev->dig_p4 * ((int64_t)1 << 35);
    var1 = ((var1 * var1 * (int64_t)dev->dig_p3) >> 8) +
           var1 * (int64_t)dev->dig_p2 * ((int64_t)1 << 12);
    var1 = ((((int64_t)1 << 47) + var1) * (int64_t)dev->dig_p1) >> 33;
    if (var1 == 0)
        return 0;
    int64_t p = 1048576 - adc_p;
    p = ((p * ((int64_t)1 << 31) - var2) * 3125) / var1;
    var1 = ((int64_t)dev->dig_p9 * (p >> 13) * (p >> 13)) >> 25;
    var2 = ((int64_t)dev->dig_p8 * p) >> 19;
    p = ((p + var1 + var2) >> 8) + (int64_t)dev->dig_p7 * 16;
    return (uint32_t)p;
}

/* Relative humidity in %RH as Q22.10 (value / 1024 = %RH), clamped to 0..100. */
static uint32_t compensate_h(const struct bme280 *dev, int32_t adc_h, int32_t t_fine)
{
    int32_t v = t_fine - 76800;
    v = ((((adc_h * 16384) - ((int32_t)dev->dig_h4 * 1048576) - ((int32_t)dev->dig_h5 * v)) +
          16384) >> 15) *
        (((((((v * (int32_t)dev->dig_h6) >> 10) *
             (((v * (int32_t)dev->dig_h3) >> 11) + 32768)) >> 10) + 2097152) *
              (int32_t)dev->dig_h2 + 8192) >> 14);
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * (int32_t)dev->dig_h1) >> 4);
    if (v < 0)
        v = 0;
    if (v > 419430400)
        v = 419430400;
    return (uint32_t)(v >> 12);
}

static int bme280_read(void *state, const struct tg_hal *hal, struct tg_sensor_sample *out)
{
    const struct bme280 *dev = state;
    uint8_t d[8];

    /* Forced mode: one conversion, then the chip sleeps until the next trigger. */
    if (write_reg(hal, dev->addr, REG_CTRL_MEAS, CTRL_MEAS(MODE_FORCED)) != 0)
        return -1;
    if (wait_conversion(hal, dev->addr) != 0)
        return -1;
    /* One burst read, so the three values come from the same conversion (the chip's shadow
     * registers are held for the duration of a burst). */
    if (read_regs(hal, dev->addr, REG_DATA, d, sizeof d) != 0)
        return -1;

    int32_t adc_p = (int32_t)(((uint32_t)d[0] << 12) | ((uint32_t)d[1] << 4) | (d[2] >> 4));
    int32_t adc_t = (int32_t)(((uint32_t)d[3] << 12) | ((uint32_t)d[4] << 4) | (d[5] >> 4));
    int32_t adc_h = (int32_t)(((uint32_t)d[6] << 8) | d[7]);
    if (adc_t == ADC_SKIPPED_20BIT || adc_p == ADC_SKIPPED_20BIT || adc_h == ADC_SKIPPED_16BIT)
        return -1;

    int64_t t_fine;
    int64_t t = compensate_t(dev, adc_t, &t_fine);
    /* Outside the chip's operating range (-40..85 degC) the raw value is garbage, and the
     * pressure and humidity formulas are only defined for a real t_fine. */
    if (t < -4000 || t > 8500)
        return -1;
    uint32_t p = compensate_p(dev, adc_p, (int32_t)t_fine);
    uint32_t h = compensate_h(dev, adc_h, (int32_t)t_fine);
    if (p == 0)
        return -1;

    out->n = 3;
    out->names[0] = "temperature_c";
    out->values[0] = (double)t / 100.0;
    out->names[1] = "humidity_pct";
    out->values[1] = h / 1024.0;
    out->names[2] = "pressure_hpa";
    out->values[2] = p / 25600.0; /* Q24.8 Pa -> hPa */
    return 0;
}

const struct tg_sensor_driver tg_bme280_driver = {
    .name = "bme280",
    .state_size = sizeof(struct bme280),
    .init = bme280_init,
    .read = bme280_read,
};
