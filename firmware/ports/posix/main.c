/*
 * main.c - tidegate-node, the sensor-node agent for Linux boards: the firmware core
 * (firmware/core/node.h) with the POSIX HAL, the libmosquitto transport and real sensors.
 *
 *   tidegate-node -c FILE [--set section.key=value]... [--check-config] [--version]
 *
 * Start: configuration (any error names file, line and key, exit 1 before anything else),
 * the state directory (boot counter), the I2C buses, a probe of every sensor (so a missing
 * one is named), then the core: tg_node_start() stores the new boot and connects.
 *
 * Run: one thread. tg_node_poll() samples and publishes; libmosquitto runs in the same
 * thread for as long as the core has nothing due; the transport's events (connected, lost,
 * PUBACK) are handed to the core after each network round, never from inside a HAL call.
 *
 * Stop (SIGTERM or SIGINT): sampling stops (the core is no longer polled), the transport
 * keeps running until the broker has confirmed every reading of the outbox or
 * node.shutdown_flush_ms passed, and the node exits 0. Readings still unconfirmed then are
 * lost (the outbox lives in memory) and counted in the last log line.
 */
#include <mosquitto.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_cli.h"
#include "hal_posix.h"
#include "log.h"
#include "node.h"
#include "node_config.h"
#include "transport_mosquitto.h"

#ifndef TG_VERSION
#define TG_VERSION "unknown"
#endif

enum { EXIT_CONFIG = 1, EXIT_USAGE = 2 };

/* The longest the loop sleeps: bounds how late libmosquitto's keepalive work runs and how
 * late a signal that lands just before a wait is noticed. */
#define MAX_WAIT_MS 1000
/* At most one stats line this often (ms), when something changed. */
#define STATS_LOG_MS 600000

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    stop_requested = sig;
}

/* Everything the HAL callbacks reach, behind the core's one ctx pointer. */
struct port {
    struct tg_posix_hal *ph;
    struct tg_mqtt_transport *tr;
};

static int64_t hal_wall_ms(void *ctx)
{
    return tg_posix_hal_wall_ms();
}

static uint64_t hal_mono_ms(void *ctx)
{
    return tg_posix_hal_mono_ms();
}

static uint32_t hal_random_u32(void *ctx)
{
    return tg_posix_hal_random_u32();
}

static bool hal_kv_load(void *ctx, const char *key, uint64_t *value)
{
    const struct port *port = ctx;
    return tg_posix_hal_kv_load(port->ph, key, value);
}

static int hal_kv_store(void *ctx, const char *key, uint64_t value)
{
    const struct port *port = ctx;
    return tg_posix_hal_kv_store(port->ph, key, value);
}

static int hal_transport_connect(void *ctx)
{
    const struct port *port = ctx;
    return tg_mqtt_transport_connect(port->tr);
}

static int hal_transport_publish(void *ctx, const uint8_t *payload, size_t len, uint32_t *token)
{
    const struct port *port = ctx;
    return tg_mqtt_transport_publish(port->tr, payload, len, token);
}

static int hal_i2c_transfer(void *ctx, uint8_t addr, const uint8_t *wr, size_t wr_len,
                            uint8_t *rd, size_t rd_len)
{
    const struct port *port = ctx;
    return tg_posix_hal_i2c_transfer(port->ph, addr, wr, wr_len, rd, rd_len);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tidegate-node -c FILE [--set section.key=value]... [--check-config]\n"
            "                     [--version]\n"
            "  -c, --config FILE      node configuration (INI)\n"
            "  -s, --set S.K=V        override one key (after the file)\n"
            "      --check-config     validate, print the effective configuration, exit\n"
            "      --version          print the version and exit\n");
}

static int setup_logging(const struct tg_config *cfg)
{
    tg_log_level level;
    if (tg_log_level_parse(tg_config_get_str(cfg, "log", "level"), &level) != TG_OK)
        return -1; /* the schema's enum already checked it */
    tg_log_set_level(level);
    if (tg_log_enable_debug(tg_config_get_str(cfg, "log", "debug")) != TG_OK) {
        fprintf(stderr, "tidegate-node: configuration error:\n%s: [log] debug: expected a "
                "comma-separated list of subsystems (node, mqtt, hal) or \"all\", got \"%s\"\n",
                tg_config_origin(cfg, "log", "debug"), tg_config_get_str(cfg, "log", "debug"));
        return -1;
    }
    return 0;
}

/* Hands the transport's events to the core, in the order they happened. */
static void deliver_events(struct tg_mqtt_transport *tr, struct tg_node *node)
{
    enum tg_mqtt_event ev;
    uint32_t token;
    while ((ev = tg_mqtt_transport_next_event(tr, &token)) != TG_MQTT_EV_NONE) {
        switch (ev) {
        case TG_MQTT_EV_UP: tg_node_transport_up(node); break;
        case TG_MQTT_EV_DOWN: tg_node_transport_down(node); break;
        case TG_MQTT_EV_ACKED: tg_node_transport_acked(node, token); break;
        case TG_MQTT_EV_DURABLE_ACK: {
            size_t len;
            const uint8_t *msg = tg_mqtt_transport_ack_message(tr, token, &len);
            if (msg && tg_node_ack_received(node, msg, len) != 0)
                TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "mqtt", 60000,
                                   "a message on the ack topic is not an ack: ignored");
            break;
        }
        case TG_MQTT_EV_NONE: break;
        }
    }
}

static void log_stats(const struct tg_node *node, const char *when)
{
    struct tg_node_stats st;
    tg_node_get_stats(node, &st);
    TG_LOG_INFO("node",
                "%s: boot %llu, taken %llu, published %llu, confirmed %llu, dropped %llu, "
                "sample errors %llu, connects %llu, outbox %u, %s",
                when, (unsigned long long)tg_node_boot(node), (unsigned long long)st.taken,
                (unsigned long long)st.published, (unsigned long long)st.released,
                (unsigned long long)st.dropped, (unsigned long long)st.sample_errors,
                (unsigned long long)st.connects, st.outbox_used,
                st.connected ? "connected" : "not connected");
}

/* Warns, at most once a minute, when readings were dropped or samples failed since the last
 * look: the volume is in the stats line, the warning tells that something is wrong. */
static void watch_losses(const struct tg_node *node, struct tg_node_stats *seen)
{
    struct tg_node_stats st;
    tg_node_get_stats(node, &st);
    if (st.dropped > seen->dropped)
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "node", 60000,
                           "outbox full: %llu readings dropped so far (oldest first)",
                           (unsigned long long)st.dropped);
    if (st.sample_errors > seen->sample_errors)
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "node", 60000,
                           "sensor reads failing: %llu failed samples so far",
                           (unsigned long long)st.sample_errors);
    *seen = st;
}

/*
 * Probes each I2C sensor once with a scratch state before the core starts, so that a sensor
 * that is absent or of the wrong kind is reported by name: tg_node_start() can only say that
 * one of them failed. The drivers' init is idempotent (a soft reset and register reads).
 */
static int probe_sensors(const struct tg_port_config *pc, const struct tg_hal *hal)
{
    int rc = 0;
    for (size_t i = 0; i < tg_port_config_sensor_count(pc); i++) {
        const struct tg_port_sensor *ps = tg_port_config_sensor(pc, i);
        if (!ps->on_i2c)
            continue;
        void *scratch = calloc(1, ps->driver->state_size ? ps->driver->state_size : 1);
        if (!scratch) {
            TG_LOG_ERROR("node", "out of memory");
            return -1;
        }
        if (ps->driver->init(scratch, hal, ps->addr) != 0) {
            TG_LOG_ERROR("node", "[sensor.%s]: no %s answers at 0x%02x on /dev/i2c-%u "
                         "(wiring, address, or another chip there)",
                         ps->name, ps->driver->name, ps->addr, ps->bus);
            rc = -1;
        }
        free(scratch);
    }
    return rc;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: the wait in the loop must return at once. */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A broken connection must be an error return, not the end of the process. */
    signal(SIGPIPE, SIG_IGN);
}

static int run(const struct tg_port_config *pc)
{
    const struct tg_config *cfg = tg_port_config_values(pc);
    int status = EXIT_FAILURE;
    struct port port = {0};
    void *storage = NULL;
    void *states[TG_NODE_MAX_SENSORS] = {0};
    size_t n_sensors = tg_port_config_sensor_count(pc);
    bool lib_init = false;

    install_signals();
    if (mosquitto_lib_init() != MOSQ_ERR_SUCCESS) {
        TG_LOG_ERROR("mqtt", "cannot initialise libmosquitto");
        goto cleanup;
    }
    lib_init = true;

    port.ph = tg_posix_hal_new(tg_config_get_str(cfg, "node", "state_dir"));
    if (!port.ph)
        goto cleanup;
    for (size_t i = 0; i < n_sensors; i++) {
        const struct tg_port_sensor *ps = tg_port_config_sensor(pc, i);
        if (ps->on_i2c && tg_posix_hal_attach_i2c(port.ph, ps->bus, ps->addr) != 0)
            goto cleanup;
    }
    const char *device_id = tg_config_get_str(cfg, "node", "device_id");
    char ack_topic[300];
    snprintf(ack_topic, sizeof ack_topic, "%s%s", tg_config_get_str(cfg, "node", "ack_topic_prefix"),
             device_id);
    const struct tg_mqtt_transport_config tcfg = {
        .device_id = device_id,
        .host = tg_config_get_str(cfg, "mqtt", "host"),
        .port = (int)tg_config_get_int(cfg, "mqtt", "port"),
        .username = tg_config_get_str(cfg, "mqtt", "username"),
        .password = tg_config_get_str(cfg, "mqtt", "password"),
        .tls_ca = tg_config_get_str(cfg, "mqtt", "tls_ca"),
        .tls_cert = tg_config_get_str(cfg, "mqtt", "tls_cert"),
        .tls_key = tg_config_get_str(cfg, "mqtt", "tls_key"),
        .keepalive_s = (int)((tg_config_get_ms(cfg, "mqtt", "keepalive_ms") + 999) / 1000),
        .ack_topic = tg_config_get_bool(cfg, "node", "durable_acks") ? ack_topic : NULL,
    };
    port.tr = tg_mqtt_transport_new(&tcfg);
    if (!port.tr) {
        TG_LOG_ERROR("mqtt", "out of memory");
        goto cleanup;
    }

    const struct tg_hal hal = {
        .ctx = &port,
        .wall_ms = hal_wall_ms,
        .mono_ms = hal_mono_ms,
        .random_u32 = hal_random_u32,
        .kv_load = hal_kv_load,
        .kv_store = hal_kv_store,
        .transport_connect = hal_transport_connect,
        .transport_publish = hal_transport_publish,
        .i2c_transfer = hal_i2c_transfer,
        .observe = NULL,
    };
    size_t key_len;
    const uint8_t *key = tg_port_config_hmac_key(pc, &key_len);
    const struct tg_node_config ncfg = {
        .device_id = device_id,
        .hmac_key = key_len ? key : NULL,
        .hmac_key_len = key_len,
        .outbox_slots = (unsigned)tg_config_get_int(cfg, "node", "outbox_slots"),
        .max_payload_bytes = (size_t)tg_config_get_size(cfg, "node", "max_payload_bytes"),
        .backoff_min_ms = (uint32_t)tg_config_get_ms(cfg, "node", "backoff_min_ms"),
        .backoff_max_ms = (uint32_t)tg_config_get_ms(cfg, "node", "backoff_max_ms"),
        .durable_acks = tg_config_get_bool(cfg, "node", "durable_acks"),
        .ack_timeout_ms = (uint32_t)tg_config_get_ms(cfg, "node", "ack_timeout_ms"),
    };
    size_t size = tg_node_storage_size(&ncfg);
    if (size == 0) {
        TG_LOG_ERROR("node", "the core refused the configuration");
        goto cleanup;
    }
    storage = malloc(size); /* malloc's alignment is max_align_t's, as the core requires */
    struct tg_node *node = storage ? tg_node_init(storage, size, &ncfg, &hal) : NULL;
    if (!node) {
        TG_LOG_ERROR("node", storage ? "the core refused the configuration" : "out of memory");
        goto cleanup;
    }
    if (probe_sensors(pc, &hal) != 0)
        goto cleanup;
    for (size_t i = 0; i < n_sensors; i++) {
        const struct tg_port_sensor *ps = tg_port_config_sensor(pc, i);
        /* Zero-filled: the sim driver then seeds itself from the HAL's randomness. */
        states[i] = calloc(1, ps->driver->state_size ? ps->driver->state_size : 1);
        if (!states[i]) {
            TG_LOG_ERROR("node", "out of memory");
            goto cleanup;
        }
        if (tg_node_add_sensor(node, ps->driver, states[i], ps->addr, ps->period_ms) != 0) {
            TG_LOG_ERROR("node", "too many sensors");
            goto cleanup;
        }
    }
    if (tg_node_start(node) != 0) {
        TG_LOG_ERROR("node", "cannot start: the boot counter could not be stored in %s, or a "
                     "sensor failed its initialisation",
                     tg_config_get_str(cfg, "node", "state_dir"));
        goto cleanup;
    }
    TG_LOG_INFO("node", "started %s: boot %llu, %zu sensor%s, broker %s:%d%s, %s", device_id,
                (unsigned long long)tg_node_boot(node), n_sensors, n_sensors == 1 ? "" : "s",
                tcfg.host, tcfg.port, tcfg.tls_ca[0] ? " (TLS)" : "",
                key_len ? "signed" : "unsigned");

    struct tg_node_stats seen = {0};
    uint64_t next_stats_ms = tg_posix_hal_mono_ms() + STATS_LOG_MS;
    while (!stop_requested) {
        uint32_t due_ms = tg_node_poll(node);
        deliver_events(port.tr, node);
        tg_mqtt_transport_run(port.tr, due_ms < MAX_WAIT_MS ? (int)due_ms : MAX_WAIT_MS);
        deliver_events(port.tr, node);
        watch_losses(node, &seen);
        if (tg_posix_hal_mono_ms() >= next_stats_ms) {
            log_stats(node, "running");
            next_stats_ms += STATS_LOG_MS;
        }
    }

    /* Stop: no more samples; what is in the outbox (sent or not yet) gets until the deadline
     * to be confirmed, on the connection we have or a new one. */
    tg_node_stop_sampling(node);
    uint64_t deadline = tg_posix_hal_mono_ms() + (uint64_t)tg_config_get_ms(cfg, "node",
                                                                             "shutdown_flush_ms");
    TG_LOG_INFO("node", "stopping (signal %d): flushing the outbox", (int)stop_requested);
    for (;;) {
        struct tg_node_stats st;
        tg_node_get_stats(node, &st);
        uint64_t now = tg_posix_hal_mono_ms();
        if (st.outbox_used == 0 || now >= deadline)
            break;
        uint64_t left = deadline - now;
        uint32_t due_ms = tg_node_poll(node);
        deliver_events(port.tr, node);
        uint64_t wait = due_ms < left ? due_ms : left;
        tg_mqtt_transport_run(port.tr, wait < 100 ? (int)wait : 100);
        deliver_events(port.tr, node);
    }
    struct tg_node_stats st;
    tg_node_get_stats(node, &st);
    if (st.outbox_used)
        TG_LOG_WARN("node", "%u readings were not confirmed by the %s and are lost",
                    st.outbox_used,
                    tg_config_get_bool(cfg, "node", "durable_acks") ? "gateway" : "broker");
    log_stats(node, "stopped");
    status = EXIT_SUCCESS;
cleanup:
    tg_mqtt_transport_destroy(port.tr);
    for (size_t i = 0; i < TG_NODE_MAX_SENSORS; i++)
        free(states[i]);
    free(storage);
    tg_posix_hal_destroy(port.ph);
    if (lib_init)
        mosquitto_lib_cleanup();
    return status;
}

int main(int argc, char **argv)
{
    int status = EXIT_CONFIG;
    struct tg_port_config *pc = NULL;
    struct tg_config_cli *cli = tg_config_cli_new("tidegate-node", 0, argc);
    if (!cli) {
        fprintf(stderr, "tidegate-node: out of memory\n");
        return EXIT_FAILURE;
    }
    switch (tg_config_cli_parse(cli, argc, argv)) {
    case TG_CONFIG_CLI_RUN: break;
    case TG_CONFIG_CLI_VERSION:
        printf("tidegate-node %s\n", TG_VERSION);
        status = EXIT_SUCCESS;
        goto out;
    case TG_CONFIG_CLI_HELP:
        usage(stdout);
        status = EXIT_SUCCESS;
        goto out;
    case TG_CONFIG_CLI_USAGE:
        usage(stderr);
        status = EXIT_USAGE;
        goto out;
    }
    pc = tg_port_config_new();
    if (!pc) {
        fprintf(stderr, "tidegate-node: out of memory\n");
        status = EXIT_FAILURE;
        goto out;
    }
    /* The node's own loader, not tg_config_cli_load(): its schema grows with the sensor
     * sections the file declares, so the file is read before the schema is complete. */
    size_t n_sets;
    const char *const *sets = tg_config_cli_sets(cli, &n_sets);
    tg_err err = tg_port_config_load(pc, tg_config_cli_config_path(cli), sets, n_sets);
    if (err == TG_ERR_CONFIG) {
        fprintf(stderr, "tidegate-node: configuration error:\n%s", tg_port_config_error(pc));
        goto out;
    }
    if (err != TG_OK) {
        fprintf(stderr, "tidegate-node: cannot load the configuration: %s\n", tg_strerror(err));
        goto out;
    }
    if (setup_logging(tg_port_config_values(pc)) != 0)
        goto out;
    if (tg_config_cli_checking(cli)) {
        status = tg_config_cli_dumped(cli, tg_port_config_dump(pc, stdout));
        goto out;
    }
    status = run(pc);
out:
    tg_port_config_destroy(pc);
    tg_config_cli_destroy(cli);
    return status;
}
