/*
 * sensor.h - the interface every sensor driver implements (firmware/drivers/).
 *
 * A driver is a const table of functions plus the size of its per-instance state, which the
 * caller provides (no allocation). The core samples each sensor on its own period; a sample
 * yields up to TG_SENSOR_MAX_METRICS named values, which become one reading ("m" map).
 */
#ifndef TG_SENSOR_H
#define TG_SENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "hal.h"

#define TG_SENSOR_MAX_METRICS 8

struct tg_sensor_sample {
    unsigned n;                                 /* metrics set, at most TG_SENSOR_MAX_METRICS */
    const char *names[TG_SENSOR_MAX_METRICS];   /* static strings, e.g. "temperature_c" */
    double values[TG_SENSOR_MAX_METRICS];       /* finite */
};

struct tg_sensor_driver {
    const char *name;      /* "bme280", "sht3x", "sim" */
    size_t state_size;     /* bytes of state the caller provides, suitably aligned (max_align_t) */
    /* Probes and configures the device at addr on hal's bus. Returns 0, or -1 (absent, bus error,
     * wrong chip id). */
    int (*init)(void *state, const struct tg_hal *hal, uint8_t addr);
    /* Takes one sample. Returns 0, or -1 on a bus error (the core skips this sample). */
    int (*read)(void *state, const struct tg_hal *hal, struct tg_sensor_sample *out);
};

#endif
