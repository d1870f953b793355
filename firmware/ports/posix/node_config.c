/*
 * node_config.c - tidegate-node's schema, the [sensor.NAME] sections, and the checks
 * common/config.h cannot make on its own.
 */
#include "node_config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bme280.h"
#include "log.h"
#include "node.h"
#include "record.h"
#include "sht3x.h"
#include "util.h"
#include "sim_sensor.h"

#define SENSOR_NAME_MAX 32
#define KEY_MIN_BYTES 16 /* the gateway's keys file takes 16..64 bytes */
#define ERRORS_MAX 20

/* The keys every file has. Units are in the names; defaults suit a small Linux board. */
static const struct tg_config_key base_schema[] = {
    TG_CFG_STR("node", "device_id", "",
               "device id, [A-Za-z0-9_.-]{1,64}: MQTT client id and topic telemetry/<id>"),
    TG_CFG_STR("node", "state_dir", "/var/lib/tidegate-node",
               "directory for the boot counter (created 0700 if missing)"),
    TG_CFG_STR("node", "hmac_key_file", "",
               "HMAC-SHA256 key, hex or raw, 16..64 bytes, not world-readable; empty: unsigned"),
    TG_CFG_INT("node", "outbox_slots", "1024", 1, TG_NODE_MAX_OUTBOX_SLOTS,
               "readings kept while unconfirmed (the oldest is dropped beyond)"),
    TG_CFG_SIZE("node", "max_payload_bytes", "256", 64, 4096,
                "largest encoded payload, signature included (bytes)"),
    TG_CFG_MS("node", "backoff_min_ms", "1000", 10, 3600000, "first reconnect delay (ms)"),
    TG_CFG_MS("node", "backoff_max_ms", "60000", 10, 3600000, "largest reconnect delay (ms)"),
    TG_CFG_BOOL("node", "durable_acks", "false",
                "keep each reading until the gateway acknowledges it durable on "
                "<ack_topic_prefix><device_id> (the gateway's [ack] enabled), not just until "
                "the broker's PUBACK: a gateway or broker crash then loses nothing"),
    TG_CFG_MS("node", "ack_timeout_ms", "15000", 100, 3600000,
              "durable_acks: when the oldest reading sent waits this long (ms) for its ack, "
              "everything unacknowledged is sent again"),
    TG_CFG_STR("node", "ack_topic_prefix", "ack/",
               "durable_acks: the gateway's [ack] topic_prefix"),
    TG_CFG_MS("node", "shutdown_flush_ms", "2000", 0, 60000,
              "on SIGTERM, how long to wait for the broker to confirm the outbox (ms)"),
    TG_CFG_STR("mqtt", "host", "127.0.0.1", "MQTT broker host name or address"),
    TG_CFG_INT("mqtt", "port", "1883", 1, 65535, "MQTT broker TCP port (TLS: usually 8883)"),
    TG_CFG_STR("mqtt", "username", "", "MQTT user name; empty: none"),
    TG_CFG_STR("mqtt", "password", "", "MQTT password; empty: none"),
    TG_CFG_STR("mqtt", "tls_ca", "", "CA certificate file (PEM) enabling TLS; empty: plain TCP"),
    TG_CFG_STR("mqtt", "tls_cert", "", "client certificate file (PEM); empty: none"),
    TG_CFG_STR("mqtt", "tls_key", "", "client private key file (PEM); empty: none"),
    TG_CFG_MS("mqtt", "keepalive_ms", "30000", 5000, 3600000, "MQTT keepalive interval (ms)"),
    TG_CFG_ENUM("log", "level", "info", tg_log_level_choices, "error, warn, info or debug"),
    TG_CFG_STR("log", "debug", "", "subsystems with debug output (node,mqtt,hal), or all"),
};
#define BASE_KEYS (sizeof base_schema / sizeof base_schema[0])
#define SENSOR_KEYS 4

struct driver_entry {
    const char *name;
    const struct tg_sensor_driver *driver;
    int default_addr; /* -1: none */
    bool on_i2c;
};

static const struct driver_entry drivers[] = {
    {"bme280", &tg_bme280_driver, TG_BME280_ADDR_PRIMARY, true},
    {"sht3x", &tg_sht3x_driver, TG_SHT3X_ADDR_PRIMARY, true},
    {"sim", &tg_sim_sensor_driver, 0x00, false},
};
#define N_DRIVERS (sizeof drivers / sizeof drivers[0])

struct tg_port_config {
    char *path;
    struct tg_config *cfg;
    struct tg_config_key *schema;
    size_t n_sensors;
    char (*sensor_names)[SENSOR_NAME_MAX + 1];
    char (*sensor_sections)[SENSOR_NAME_MAX + 8];
    struct tg_port_sensor *sensors;
    uint8_t key[TG_NODE_KEY_MAX];
    size_t key_len;
    char *errors;
    size_t errors_len;
    unsigned n_errors;
    bool loaded;
};

struct tg_port_config *tg_port_config_new(void)
{
    return calloc(1, sizeof(struct tg_port_config));
}

void tg_port_config_destroy(struct tg_port_config *pc)
{
    if (!pc)
        return;
    tg_config_destroy(pc->cfg);
    /* The key is secret: do not leave it in freed memory. explicit_bzero is not optimized
     * away. */
    explicit_bzero(pc->key, sizeof pc->key);
    free(pc->schema);
    free(pc->sensor_names);
    free(pc->sensor_sections);
    free(pc->sensors);
    free(pc->errors);
    free(pc->path);
    free(pc);
}

static void add_error(struct tg_port_config *pc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends text (one or more lines; a final newline is optional) to the error report. */
static void append_errors(struct tg_port_config *pc, const char *text)
{
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n')
        n--;
    char *grown = realloc(pc->errors, pc->errors_len + n + 2);
    if (!grown)
        return; /* the load fails all the same; only this text is lost */
    pc->errors = grown;
    memcpy(pc->errors + pc->errors_len, text, n);
    pc->errors_len += n;
    pc->errors[pc->errors_len++] = '\n';
    pc->errors[pc->errors_len] = '\0';
}

static void add_error(struct tg_port_config *pc, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    if (pc->n_errors++ >= ERRORS_MAX)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    append_errors(pc, line);
}

static size_t schema_len(const struct tg_port_config *pc)
{
    return BASE_KEYS + pc->n_sensors * SENSOR_KEYS;
}

/* An error about [section] key, located where its value came from: "FILE:LINE", "--set",
 * or the file itself when the key was not set at all. */
static void key_error(struct tg_port_config *pc, const char *section, const char *key,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void key_error(struct tg_port_config *pc, const char *section, const char *key,
                      const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* A key that was never set has no line: point at a key of its section that was set
     * (the section's driver line, tls_cert next to a missing tls_key), else the file. */
    const char *origin = tg_config_origin(pc->cfg, section, key);
    for (size_t i = 0; strcmp(origin, "default") == 0 && i < schema_len(pc); i++)
        if (strcmp(pc->schema[i].section, section) == 0)
            origin = tg_config_origin(pc->cfg, section, pc->schema[i].key);
    if (strcmp(origin, "default") == 0)
        origin = pc->path;
    add_error(pc, "%s: [%s] %s: %s", origin, section, key, what);
}

static bool sensor_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > SENSOR_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) ||
              name[i] == '_'))
            return false;
    return true;
}

/*
 * First pass over the file: the [sensor.NAME] section headers, which decide the schema. Only
 * headers are looked at; everything else (and any header this pass misreads) is judged by
 * the real load. An unreadable file is left to the real load to report.
 */
static void scan_sensor_sections(struct tg_port_config *pc)
{
    FILE *f = fopen(pc->path, "r");
    if (!f)
        return;
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        if (strncmp(s, "[sensor.", 8) != 0)
            continue;
        char *name = s + 8;
        char *end = strchr(name, ']');
        if (!end)
            continue;
        size_t len = (size_t)(end - name);
        if (!sensor_name_valid(name, len)) {
            add_error(pc, "%s:%d: [sensor.%.*s]: a sensor name is 1 to %d of [a-z0-9_]",
                      pc->path, lineno, (int)(len > 64 ? 64 : len), name, SENSOR_NAME_MAX);
            continue;
        }
        bool seen = false;
        for (size_t i = 0; i < pc->n_sensors; i++)
            if (strlen(pc->sensor_names[i]) == len &&
                memcmp(pc->sensor_names[i], name, len) == 0)
                seen = true;
        if (seen)
            continue; /* a repeated section: the real load judges its keys */
        if (pc->n_sensors == TG_NODE_MAX_SENSORS) {
            add_error(pc, "%s:%d: [sensor.%.*s]: at most %d sensors", pc->path, lineno,
                      (int)len, name, TG_NODE_MAX_SENSORS);
            continue;
        }
        memcpy(pc->sensor_names[pc->n_sensors], name, len);
        pc->sensor_names[pc->n_sensors][len] = '\0';
        snprintf(pc->sensor_sections[pc->n_sensors], sizeof pc->sensor_sections[0],
                 "sensor.%s", pc->sensor_names[pc->n_sensors]);
        pc->n_sensors++;
    }
    if (ferror(f))
        add_error(pc, "%s: read error: %s", pc->path, strerror(errno));
    (void)fclose(f); /* read-only: nothing to lose on close */
}

static tg_err build_schema(struct tg_port_config *pc)
{
    size_t n = schema_len(pc);
    pc->schema = calloc(n, sizeof *pc->schema);
    if (!pc->schema)
        return TG_ERR_NOMEM;
    memcpy(pc->schema, base_schema, sizeof base_schema);
    for (size_t i = 0; i < pc->n_sensors; i++) {
        const char *sec = pc->sensor_sections[i];
        struct tg_config_key keys[SENSOR_KEYS] = {
            TG_CFG_STR(sec, "driver", "", "bme280, sht3x or sim"),
            TG_CFG_INT(sec, "bus", "1", 0, 255, "I2C bus number: /dev/i2c-<bus>"),
            TG_CFG_STR(sec, "address", "",
                       "7-bit I2C address, 0x08..0x77 (default: bme280 0x76, sht3x 0x44)"),
            TG_CFG_MS(sec, "period_ms", "1000", 1, 86400000, "sampling period (ms)"),
        };
        memcpy(&pc->schema[BASE_KEYS + i * SENSOR_KEYS], keys, sizeof keys);
    }
    pc->cfg = tg_config_new(pc->schema, n);
    return pc->cfg ? TG_OK : TG_ERR_NOMEM;
}

/* "0x76", "0X76" or "118". */
static bool parse_address(const char *text, uint8_t *addr)
{
    char *end;
    if (!isdigit((unsigned char)text[0]))
        return false;
    errno = 0;
    unsigned long v = strtoul(text, &end, 0);
    if (errno != 0 || *end != '\0' || v < 0x08 || v > 0x77)
        return false;
    *addr = (uint8_t)v;
    return true;
}

static void check_sensors(struct tg_port_config *pc)
{
    if (pc->n_sensors == 0) {
        add_error(pc, "%s: no [sensor.NAME] section: a node needs at least one sensor", pc->path);
        return;
    }
    for (size_t i = 0; i < pc->n_sensors; i++) {
        const char *sec = pc->sensor_sections[i];
        struct tg_port_sensor *ps = &pc->sensors[i];
        const char *driver = tg_config_get_str(pc->cfg, sec, "driver");
        const struct driver_entry *de = NULL;
        for (size_t d = 0; d < N_DRIVERS; d++)
            if (strcmp(drivers[d].name, driver) == 0)
                de = &drivers[d];
        if (!de) {
            char choices[64] = "";
            for (size_t d = 0; d < N_DRIVERS; d++)
                snprintf(choices + strlen(choices), sizeof choices - strlen(choices), "%s%s",
                         d ? ", " : "", drivers[d].name);
            key_error(pc, sec, "driver", "expected one of %s, got \"%s\"", choices, driver);
            continue;
        }
        ps->name = pc->sensor_names[i];
        ps->driver = de->driver;
        ps->on_i2c = de->on_i2c;
        ps->bus = (unsigned)tg_config_get_int(pc->cfg, sec, "bus");
        ps->period_ms = (uint32_t)tg_config_get_ms(pc->cfg, sec, "period_ms");
        const char *addr = tg_config_get_str(pc->cfg, sec, "address");
        if (addr[0] == '\0') {
            ps->addr = (uint8_t)(de->default_addr >= 0 ? de->default_addr : 0);
        } else if (!parse_address(addr, &ps->addr)) {
            key_error(pc, sec, "address",
                      "expected a 7-bit I2C address between 0x08 and 0x77 (e.g. 0x76), got \"%s\"",
                      addr);
            continue;
        }
        if (!de->on_i2c)
            continue;
        /* The HAL addresses a device by its address alone (hal.h), so one address must name
         * one device across all buses. */
        for (size_t j = 0; j < i; j++) {
            const struct tg_port_sensor *other = &pc->sensors[j];
            if (!other->on_i2c || other->addr != ps->addr)
                continue;
            if (other->bus == ps->bus)
                key_error(pc, sec, "address", "0x%02x on bus %u is already [sensor.%s]",
                          ps->addr, ps->bus, other->name);
            else
                key_error(pc, sec, "address",
                          "0x%02x is already [sensor.%s] on bus %u: one address can be used on "
                          "one bus only",
                          ps->addr, other->name, other->bus);
        }
    }
}

static void check_readable(struct tg_port_config *pc, const char *section, const char *key)
{
    const char *path = tg_config_get_str(pc->cfg, section, key);
    if (path[0] && access(path, R_OK) != 0)
        key_error(pc, section, key, "cannot read \"%s\": %s", path, strerror(errno));
}

/*
 * The key file holds the key either as hex digits (whitespace around them ignored: an
 * editor's final newline) or as the raw bytes. It must not be readable by every user: a
 * leaked key lets anyone forge this device's readings.
 */
static void load_key(struct tg_port_config *pc)
{
    const char *path = tg_config_get_str(pc->cfg, "node", "hmac_key_file");
    uint8_t buf[2 * TG_NODE_KEY_MAX + 16];
    size_t n = 0;
    if (path[0] == '\0')
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        key_error(pc, "node", "hmac_key_file", "cannot open \"%s\": %s", path, strerror(errno));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        key_error(pc, "node", "hmac_key_file", "cannot stat \"%s\": %s", path, strerror(errno));
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode)) {
        key_error(pc, "node", "hmac_key_file", "\"%s\" is not a regular file", path);
        goto cleanup;
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        key_error(pc, "node", "hmac_key_file",
                  "\"%s\" is accessible by every user (mode %04o): refusing the key; "
                  "chmod 600 it",
                  path, (unsigned)(st.st_mode & 07777));
        goto cleanup;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            key_error(pc, "node", "hmac_key_file", "cannot read \"%s\": %s", path,
                      strerror(errno));
            goto cleanup;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == sizeof buf)
            break;
    }
    if (n == sizeof buf) {
        key_error(pc, "node", "hmac_key_file", "\"%s\" is too long for a key of at most %d bytes",
                  path, TG_NODE_KEY_MAX);
        goto cleanup;
    }
    size_t lo = 0, hi = n;
    while (lo < hi && isspace(buf[lo]))
        lo++;
    while (hi > lo && isspace(buf[hi - 1]))
        hi--;
    bool is_hex = hi > lo && (hi - lo) % 2 == 0;
    for (size_t i = lo; is_hex && i < hi; i++)
        is_hex = tg_hex_digit((char)buf[i]) >= 0;
    if (is_hex) {
        pc->key_len = (hi - lo) / 2;
        if (pc->key_len > TG_NODE_KEY_MAX)
            pc->key_len = TG_NODE_KEY_MAX + 1; /* reported below */
        for (size_t i = 0; i < pc->key_len && i < TG_NODE_KEY_MAX; i++)
            pc->key[i] = (uint8_t)(tg_hex_digit((char)buf[lo + 2 * i]) * 16 +
                                   tg_hex_digit((char)buf[lo + 2 * i + 1]));
    } else {
        pc->key_len = n;
        if (n <= TG_NODE_KEY_MAX)
            memcpy(pc->key, buf, n);
    }
    if (pc->key_len < KEY_MIN_BYTES || pc->key_len > TG_NODE_KEY_MAX) {
        key_error(pc, "node", "hmac_key_file",
                  "\"%s\": expected a key of %d to %d bytes (as hex digits or raw bytes)", path,
                  KEY_MIN_BYTES, TG_NODE_KEY_MAX);
        explicit_bzero(pc->key, sizeof pc->key);
        pc->key_len = 0;
    }
cleanup:
    explicit_bzero(buf, sizeof buf);
    close(fd);
}

static void check_values(struct tg_port_config *pc)
{
    const char *id = tg_config_get_str(pc->cfg, "node", "device_id");
    if (id[0] == '\0')
        key_error(pc, "node", "device_id", "required: the device id, [A-Za-z0-9_.-]{1,64}");
    else if (!tg_device_id_valid(id, strlen(id)))
        key_error(pc, "node", "device_id", "expected [A-Za-z0-9_.-]{1,64}, got \"%s\"", id);
    if (tg_config_get_str(pc->cfg, "node", "state_dir")[0] == '\0')
        key_error(pc, "node", "state_dir", "required: a directory for the boot counter");
    if (tg_config_get_ms(pc->cfg, "node", "backoff_min_ms") >
        tg_config_get_ms(pc->cfg, "node", "backoff_max_ms"))
        key_error(pc, "node", "backoff_min_ms", "must not exceed backoff_max_ms (%s)",
                  tg_config_get_str(pc->cfg, "node", "backoff_max_ms"));
    bool has_ca = tg_config_get_str(pc->cfg, "mqtt", "tls_ca")[0] != '\0';
    bool has_cert = tg_config_get_str(pc->cfg, "mqtt", "tls_cert")[0] != '\0';
    bool has_key = tg_config_get_str(pc->cfg, "mqtt", "tls_key")[0] != '\0';
    if (has_cert != has_key)
        key_error(pc, "mqtt", has_cert ? "tls_key" : "tls_cert",
                  "tls_cert and tls_key go together: set both or neither");
    if ((has_cert || has_key) && !has_ca)
        key_error(pc, "mqtt", "tls_ca", "a client certificate needs TLS: set tls_ca too");
    check_readable(pc, "mqtt", "tls_ca");
    check_readable(pc, "mqtt", "tls_cert");
    check_readable(pc, "mqtt", "tls_key");
    if (tg_config_get_str(pc->cfg, "mqtt", "password")[0] != '\0' &&
        tg_config_get_str(pc->cfg, "mqtt", "username")[0] == '\0')
        key_error(pc, "mqtt", "password", "a password needs a username");
    check_sensors(pc);
    load_key(pc);
}

tg_err tg_port_config_load(struct tg_port_config *pc, const char *path,
                           const char *const *sets, size_t n_sets)
{
    if (pc->loaded)
        return TG_ERR_USAGE;
    pc->loaded = true;
    pc->path = strdup(path);
    pc->sensor_names = calloc(TG_NODE_MAX_SENSORS, sizeof *pc->sensor_names);
    pc->sensor_sections = calloc(TG_NODE_MAX_SENSORS, sizeof *pc->sensor_sections);
    pc->sensors = calloc(TG_NODE_MAX_SENSORS, sizeof *pc->sensors);
    if (!pc->path || !pc->sensor_names || !pc->sensor_sections || !pc->sensors)
        return TG_ERR_NOMEM;
    scan_sensor_sections(pc);
    if (pc->n_errors)
        return TG_ERR_CONFIG;
    tg_err err = build_schema(pc);
    if (err != TG_OK)
        return err;
    err = tg_config_load_file(pc->cfg, TG_CONFIG_FILE, path);
    if (err == TG_ERR_CONFIG) {
        pc->n_errors++;
        append_errors(pc, tg_config_error(pc->cfg));
        return err;
    }
    if (err != TG_OK)
        return err;
    for (size_t i = 0; i < n_sets; i++) {
        err = tg_config_set(pc->cfg, sets[i]);
        if (err == TG_ERR_CONFIG) {
            pc->n_errors++;
            append_errors(pc, tg_config_error(pc->cfg));
        } else if (err != TG_OK)
            return err;
    }
    if (pc->n_errors)
        return TG_ERR_CONFIG;
    check_values(pc);
    return pc->n_errors ? TG_ERR_CONFIG : TG_OK;
}

const char *tg_port_config_error(const struct tg_port_config *pc)
{
    return pc->errors ? pc->errors : "";
}

const struct tg_config *tg_port_config_values(const struct tg_port_config *pc)
{
    return pc->cfg;
}

size_t tg_port_config_sensor_count(const struct tg_port_config *pc)
{
    return pc->n_sensors;
}

const struct tg_port_sensor *tg_port_config_sensor(const struct tg_port_config *pc, size_t i)
{
    return &pc->sensors[i];
}

const uint8_t *tg_port_config_hmac_key(const struct tg_port_config *pc, size_t *len)
{
    *len = pc->key_len;
    return pc->key;
}

tg_err tg_port_config_dump(const struct tg_port_config *pc, FILE *out)
{
    return tg_config_dump_redacted(pc->cfg, out);
}
