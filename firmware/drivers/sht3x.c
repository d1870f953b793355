/*
 * sht3x.c - SHT3x driver: single-shot measurement, CRC check and conversion (Sensirion
 * "Datasheet SHT3x-DIS", sections 4.3, 4.12 and 4.13).
 */
#include "sht3x.h"

#include <stdint.h>

/* Commands are 16 bits, sent MSB first. */
#define CMD_MEASURE_HIGH_NOSTRETCH 0x2400u
#define CMD_SOFT_RESET 0x30A2u
#define CMD_READ_STATUS 0xF32Du
#define CMD_CLEAR_STATUS 0x3041u

struct sht3x {
    uint8_t addr;
};

uint8_t tg_sht3x_crc8(const uint8_t *data, size_t len)
{
    uint8_t crc = 0xFF;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (uint8_t)((crc & 0x80) ? (crc << 1) ^ 0x31 : crc << 1);
    }
    return crc;
}

static int send_command(const struct tg_hal *hal, uint8_t addr, uint16_t cmd)
{
    const uint8_t wr[2] = {(uint8_t)(cmd >> 8), (uint8_t)(cmd & 0xFF)};
    return hal->i2c_transfer(hal->ctx, addr, wr, sizeof wr, NULL, 0);
}

/* Checks the CRC of the word at p[0..1] (CRC in p[2]) and returns it in *word. */
static int take_word(const uint8_t *p, uint16_t *word)
{
    if (tg_sht3x_crc8(p, 2) != p[2])
        return -1;
    *word = (uint16_t)((p[0] << 8) | p[1]);
    return 0;
}

/*
 * Reads n bytes once the chip answers: it NACKs its address while busy (after a reset or
 * during a conversion), so a NACK means "not yet" until the deadline.
 */
static int read_when_ready(const struct tg_hal *hal, uint8_t addr, uint8_t *buf, size_t n)
{
    uint64_t deadline = hal->mono_ms(hal->ctx) + TG_SHT3X_WAIT_MS;
    for (;;) {
        if (hal->i2c_transfer(hal->ctx, addr, NULL, 0, buf, n) == 0)
            return 0;
        if (hal->mono_ms(hal->ctx) >= deadline)
            return -1;
    }
}

static int sht3x_init(void *state, const struct tg_hal *hal, uint8_t addr)
{
    struct sht3x *dev = state;
    uint8_t status[3];
    uint16_t word;

    if (hal->i2c_transfer == NULL)
        return -1;
    dev->addr = addr;
    /* A soft reset stops a periodic mode a previous program may have left running (in which
     * the chip would reject single-shot commands). The first NACK means nobody is there. */
    if (send_command(hal, addr, CMD_SOFT_RESET) != 0)
        return -1;
    /* The chip is back after at most 1.5 ms; the status register with a valid CRC proves it
     * is an SHT3x answering, not some other device at the address. */
    uint64_t deadline = hal->mono_ms(hal->ctx) + TG_SHT3X_WAIT_MS;
    while (send_command(hal, addr, CMD_READ_STATUS) != 0) {
        if (hal->mono_ms(hal->ctx) >= deadline)
            return -1;
    }
    if (read_when_ready(hal, addr, status, sizeof status) != 0 || take_word(status, &word) != 0)
        return -1;
    /* Clear the reset flag so that a later status read would show a new, unexpected reset. */
    if (send_command(hal, addr, CMD_CLEAR_STATUS) != 0)
        return -1;
    return 0;
}

static int sht3x_read(void *state, const struct tg_hal *hal, struct tg_sensor_sample *out)
{
    const struct sht3x *dev = state;
    uint8_t d[6];
    uint16_t raw_t, raw_rh;

    if (send_command(hal, dev->addr, CMD_MEASURE_HIGH_NOSTRETCH) != 0)
        return -1;
    if (read_when_ready(hal, dev->addr, d, sizeof d) != 0)
        return -1;
    if (take_word(&d[0], &raw_t) != 0 || take_word(&d[3], &raw_rh) != 0)
        return -1;

    /* Section 4.13: T = -45 + 175 * S_T / (2^16 - 1), RH = 100 * S_RH / (2^16 - 1). */
    out->n = 2;
    out->names[0] = "temperature_c";
    out->values[0] = -45.0 + 175.0 * raw_t / 65535.0;
    out->names[1] = "humidity_pct";
    out->values[1] = 100.0 * raw_rh / 65535.0;
    return 0;
}

const struct tg_sensor_driver tg_sht3x_driver = {
    .name = "sht3x",
    .state_size = sizeof(struct sht3x),
    .init = sht3x_init,
    .read = sht3x_read,
};
