/*
 * node.h - the sensor-node firmware core: one device's whole behaviour.
 *
 * The same code runs on a real sensor node (firmware/ports/posix, or a microcontroller port)
 * and inside every device of tidegate-sim. It
 *   - schedules sampling per sensor (each sensor its own period),
 *   - encodes each sample as a native CBOR payload (common/codec_native.h: libcbor's encoder),
 *   - signs it with HMAC-SHA256 (mbedtls) when the node has a key,
 *   - keeps every reading in a bounded outbox until its delivery is confirmed, sending oldest
 *     first; when the outbox is full the oldest reading is dropped and reported,
 *   - reconnects with capped exponential backoff and full jitter.
 * boot is loaded from the HAL's key/value store and incremented at each tg_node_start(); seq
 *   starts at 0 at each boot and never repeats within it.
 *
 * Memory: all state lives in the storage the caller passes to tg_node_init() (static memory
 * on a microcontroller, one malloc per device in the simulator); nothing is allocated later.
 *
 * Delivery confirmation, one of two, chosen by tg_node_config.durable_acks:
 *   - off: a reading leaves the outbox at the broker's PUBACK (tg_node_transport_acked). A
 *     crash of the gateway, or of a broker without persistence, loses what it held.
 *   - on (design.md 5.7): the reading stays in the outbox after PUBACK until the gateway's
 *     durable acknowledgement (ack_msg.h, on ack/<device_id>, which the port subscribes to and
 *     hands to tg_node_ack_received) covers it. When the oldest reading sent waits longer than
 *     ack_timeout_ms for that, every unacknowledged reading is sent again, oldest first (also
 *     at each reconnect); the gateway's dedup drops the repeats.
 *   Either way the release happens in one place in node.c.
 *
 * Threads: a node is driven from one thread; the HAL callbacks run inside these calls.
 */
#ifndef TG_NODE_H
#define TG_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hal.h"
#include "sensor.h"

#define TG_NODE_MAX_SENSORS 8
#define TG_NODE_DEVICE_ID_MAX 64 /* same rule as the gateway: [A-Za-z0-9_.-]{1,64} */
#define TG_NODE_KEY_MAX 64       /* HMAC key bytes */
#define TG_NODE_MAX_OUTBOX_SLOTS 65534 /* outbox slot indices are 16-bit */

struct tg_node_config {
    const char *device_id;       /* copied */
    const uint8_t *hmac_key;     /* copied; NULL or key_len 0: payloads are not signed */
    size_t hmac_key_len;
    unsigned outbox_slots;       /* readings kept while unconfirmed (>= 1) */
    size_t max_payload_bytes;    /* bytes of one encoded payload, signature included; 0 = 256 */
    uint32_t backoff_min_ms;     /* first reconnect delay; 0 = 1000 */
    uint32_t backoff_max_ms;     /* cap of the exponential backoff; 0 = 60000 */
    bool durable_acks;           /* keep readings until the gateway's ack (see above) */
    uint32_t ack_timeout_ms;     /* durable_acks: resend after this long without one; 0 = 15000 */
};

struct tg_node_stats {
    uint64_t taken;              /* readings sampled and encoded */
    uint64_t published;          /* publish calls accepted by the transport (re-sends included) */
    uint64_t released;           /* readings confirmed and removed from the outbox */
    uint64_t dropped;            /* readings pushed out of a full outbox */
    uint64_t sample_errors;      /* sensor reads that failed */
    uint64_t connects;           /* connection attempts started */
    uint64_t acks;               /* durable acks taken (durable_acks; undecodable ones not) */
    uint64_t ack_timeouts;       /* times the oldest reading waited ack_timeout_ms: resent all */
    uint64_t resent;             /* publishes of readings already published once */
    unsigned outbox_used;        /* readings in the outbox now */
    bool connected;
};

struct tg_node;

/* Bytes of storage a node with this config needs (alignment: max_align_t). 0 when the config
 * is invalid (bad device id, key too long, outbox_slots 0, backoff_min > backoff_max). */
size_t tg_node_storage_size(const struct tg_node_config *cfg);

/* Builds a node in storage[0..size) (size >= tg_node_storage_size(cfg)); hal is copied.
 * Returns the node (which is storage), or NULL when the config is invalid or size too small. */
struct tg_node *tg_node_init(void *storage, size_t size, const struct tg_node_config *cfg,
                             const struct tg_hal *hal);

/* Adds a sensor before tg_node_start(): driver state (driver->state_size bytes, owned by the
 * caller, alive as long as the node), its bus address and sampling period (>= 1 ms). The
 * driver's init runs in tg_node_start(). Returns 0, or -1 when TG_NODE_MAX_SENSORS are in use. */
int tg_node_add_sensor(struct tg_node *node, const struct tg_sensor_driver *driver, void *state,
                       uint8_t addr, uint32_t period_ms);

/* Loads and increments the boot counter (stored before any reading is taken), inits every
 * sensor, and starts the first connection attempt. Returns 0, or -1 when the boot counter
 * cannot be stored or a sensor's init fails. */
int tg_node_start(struct tg_node *node);

/* Does what is due now: samples sensors whose period came, publishes outbox readings not yet
 * sent (oldest first) while connected, starts a reconnect when its backoff delay passed.
 * Returns the ms until something is due next (0: call again now). */
uint32_t tg_node_poll(struct tg_node *node);

/* Stops sampling for good (shutdown): tg_node_poll() then only sends what the outbox holds
 * and reconnects, so a port can drain the outbox before it exits. */
void tg_node_stop_sampling(struct tg_node *node);

/* Transport events, called by the port (never from inside a HAL callback). up: connected, the
 * unconfirmed readings are sent again, oldest first. down: the connection failed or was lost,
 * a reconnect is scheduled after the backoff delay. acked: the broker confirmed token. */
void tg_node_transport_up(struct tg_node *node);
void tg_node_transport_down(struct tg_node *node);
void tg_node_transport_acked(struct tg_node *node, uint32_t token);

/* A durable acknowledgement (ack_msg.h) arrived from the gateway (called by the port, never
 * from inside a HAL callback). Releases every reading of the current boot it covers, sent or
 * not. Returns 0, or -1 when the bytes are not an ack message (nothing released); an ack for
 * another boot is taken and releases nothing. Ignored (0) when durable_acks is off. */
int tg_node_ack_received(struct tg_node *node, const uint8_t *payload, size_t len);

uint64_t tg_node_boot(const struct tg_node *node);
const char *tg_node_device_id(const struct tg_node *node);
void tg_node_get_stats(const struct tg_node *node, struct tg_node_stats *out);

#endif
