/*
 * node_config.h - tidegate-node's configuration: the INI file, checked before anything starts.
 *
 * Built on common/config.h (same syntax, same layering with --set, same error format naming
 * file, line, section and key). What config.h cannot express by itself is done here:
 *   - sensors are sections named by the user, [sensor.NAME]: the file is scanned for them
 *     first and the schema is extended with their keys (driver, bus, address, period_ms);
 *   - checks across keys and on the world outside: device id syntax, TLS files readable,
 *     cert and key given together, the HMAC key file (hex or raw, 16..64 bytes, not readable
 *     by every user), I2C address clashes, backoff bounds.
 * Every problem is reported as "FILE:LINE: [section] key: what was expected".
 *
 * Threads: startup only, one thread.
 */
#ifndef TG_NODE_CONFIG_H
#define TG_NODE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "sensor.h"

/* One [sensor.NAME] section, checked. */
struct tg_port_sensor {
    const char *name;                       /* NAME, owned by the configuration */
    const struct tg_sensor_driver *driver;  /* bme280, sht3x or sim */
    bool on_i2c;                            /* false: needs no bus (sim) */
    unsigned bus;                           /* /dev/i2c-<bus>, when on_i2c */
    uint8_t addr;                           /* 7-bit I2C address (sim: seeds the signals) */
    uint32_t period_ms;
};

struct tg_port_config;

/* An empty configuration. NULL when out of memory. */
struct tg_port_config *tg_port_config_new(void);

/* Frees pc; the HMAC key is wiped first. NULL is a no-op. */
void tg_port_config_destroy(struct tg_port_config *pc);

/*
 * Loads path, then applies the --set assignments ("section.key=value"), then checks
 * everything, including reading the HMAC key file. Once only per object. TG_OK, or
 * TG_ERR_CONFIG with every problem in tg_port_config_error(), or TG_ERR_NOMEM.
 */
tg_err tg_port_config_load(struct tg_port_config *pc, const char *path,
                           const char *const *sets, size_t n_sets);

/* The problems of a failed load, one per line. */
const char *tg_port_config_error(const struct tg_port_config *pc);

/* The values, for tg_config_get_*() on the [node], [mqtt] and [log] keys. */
const struct tg_config *tg_port_config_values(const struct tg_port_config *pc);

size_t tg_port_config_sensor_count(const struct tg_port_config *pc);
const struct tg_port_sensor *tg_port_config_sensor(const struct tg_port_config *pc, size_t i);

/* The HMAC key read from [node] hmac_key_file (*len = 0 when none is configured). The bytes
 * belong to pc and are wiped by tg_port_config_destroy(). */
const uint8_t *tg_port_config_hmac_key(const struct tg_port_config *pc, size_t *len);

/* Writes the effective configuration for people (tg_config_dump_redacted: the MQTT password
 * is not shown). */
tg_err tg_port_config_dump(const struct tg_port_config *pc, FILE *out);

#endif
