/*
 * device.h - one simulated sensor node: the firmware core (node.h) with a HAL implemented by
 * the simulator, its own non-blocking libmosquitto client, the simulated sensor wrapped by the
 * anomaly injector, and the device's faults.
 *
 * HAL: wall clock = the fleet's clock plus the device's skew (faults.h); monotonic clock = the
 * fleet's; random = the device's own stream; kv = a few numbers in memory (the boot counter,
 * seeded from the state kept between runs, boot_state.h);
 * transport = the MQTT client (clean session, client id = device id, QoS1 to
 * telemetry/<device id>; with durable_acks also subscribed QoS 0 to ack/<device id>, whose
 * messages go to tg_node_ack_received()); observe = the ledger and the metrics. No I2C bus.
 *
 * The fleet's event loop drives it: tg_sim_device_poll() when its time comes (the return value
 * says when next), tg_sim_device_io() when epoll reports its socket. The device keeps its own
 * socket registered in the fleet's epoll set (data.ptr = the device).
 *
 * Each (re)connection starts from a fresh client state (mosquitto_reinitialise): the firmware
 * core re-sends every unconfirmed reading itself on a new connection, so libmosquitto must not
 * also retransmit its old queue; the gateway would drop such copies, but they would confuse
 * the PUBACK-to-reading mapping.
 *
 * Threads: the fleet's loop thread only.
 */
#ifndef TG_SIM_DEVICE_H
#define TG_SIM_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anomaly.h"
#include "node.h"
#include "sim_metrics.h"

struct tg_ledger;
struct tg_sim_device;

/* The fleet's clock, read by every device; updated once per loop iteration so that all HAL
 * calls inside one poll see the same time (a reading's ts then equals the time the anomaly
 * wrapper saw). */
struct tg_sim_clock {
    int64_t wall_ms;  /* CLOCK_REALTIME */
    uint64_t mono_ms; /* CLOCK_MONOTONIC */
};

struct tg_sim_device_config {
    uint32_t index;              /* ledger device index */
    const char *device_id;       /* copied */
    uint64_t seed;               /* the run's seed; the device derives its streams from it */
    const char *host;            /* broker, numeric address (not copied) */
    int port;
    int keepalive_s;
    uint32_t period_ms;          /* sampling period */
    unsigned outbox_slots;
    bool durable_acks;           /* subscribe to ack/<device id>; release at the gateway's ack */
    uint32_t ack_timeout_ms;     /* 0: the core's default */
    double anomaly_rate;         /* anomalies per device-hour */
    double malformed;            /* probability of a malformed publish beside each reading publish */
    double duplicates;           /* probability of publishing a reading twice */
    bool skewed;                 /* this device's clock is skewed (faults.h) */
    uint64_t boot;               /* the boot counter this run starts the node at (its stored
                                  * one, boot_state.h, plus one); 0 or 1: the first boot */
    const struct tg_sim_clock *clock;
    int epoll_fd;
    struct tg_ledger *ledger;    /* may be NULL */
    struct tg_sim_metrics *metrics;
    tg_anomaly_label_fn on_label; /* may be NULL */
    void *label_ud;
};

/* Builds the device (node, sensor, client); nothing connects yet. NULL with a message in err
 * on failure. */
struct tg_sim_device *tg_sim_device_new(const struct tg_sim_device_config *cfg, char *err,
                                        size_t errlen);

/* Closes the connection (no DISCONNECT) and frees everything. NULL is a no-op. */
void tg_sim_device_destroy(struct tg_sim_device *dev);

/* Starts the node: boot counter, sensor init, first connection attempt. 0 or -1. */
int tg_sim_device_start(struct tg_sim_device *dev);
bool tg_sim_device_started(const struct tg_sim_device *dev);

/* Does what is due: keepalive, clock steps, the node's sampling/sending/reconnecting. Returns
 * the ms until it wants to be polled again. */
uint32_t tg_sim_device_poll(struct tg_sim_device *dev);

/* Handles epoll events on the device's socket. Returns true when the device wants a poll now
 * (its connection came up or went down). */
bool tg_sim_device_io(struct tg_sim_device *dev, uint32_t events);

/* Drops the connection as a network fault would (abrupt = shutdown of the socket, no
 * DISCONNECT) or cleanly (DISCONNECT). The node notices and reconnects after its backoff.
 * False when it was not connected. */
bool tg_sim_device_drop(struct tg_sim_device *dev, bool abrupt);

/* End of the run: no more samples (closes a running anomaly and emits its label). */
void tg_sim_device_stop_sampling(struct tg_sim_device *dev);

/* Sends DISCONNECT if connected (end of run); the socket closes once it is written. */
void tg_sim_device_disconnect(struct tg_sim_device *dev);

/* True while a DISCONNECT or other output waits to be written. */
bool tg_sim_device_want_write(const struct tg_sim_device *dev);

bool tg_sim_device_connected(const struct tg_sim_device *dev);
unsigned tg_sim_device_outbox_used(const struct tg_sim_device *dev);
const char *tg_sim_device_id(const struct tg_sim_device *dev);
uint32_t tg_sim_device_index(const struct tg_sim_device *dev);
void tg_sim_device_stats(const struct tg_sim_device *dev, struct tg_node_stats *out);

/* The anomaly wrapper's state (tests force anomalies through it). */
void *tg_sim_device_anomaly_state(struct tg_sim_device *dev);

#endif
