/*
 * hal.h - what the firmware core needs from the board it runs on.
 *
 * The core (node.h) is portable C: it makes no operating-system call and allocates nothing.
 * Everything it needs from the outside world comes through this table of functions, which a
 * port fills in: firmware/ports/posix for Linux sensor boards, sim/ for each simulated device,
 * a bare-metal port for a microcontroller. Every function gets the port's ctx pointer back.
 *
 * Threads: the core calls these only from inside its own entry points (tg_node_*), on the
 * caller's thread; none of them may call back into the core.
 */
#ifndef TG_HAL_H
#define TG_HAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What happened to one reading, for a port that wants to know (the simulator's ledger). */
enum tg_node_event {
    TG_NODE_EV_TAKEN = 1,   /* sampled, encoded and put in the outbox */
    TG_NODE_EV_RELEASED,    /* left the outbox: the delivery it waited for is confirmed */
    TG_NODE_EV_DROPPED,     /* pushed out of a full outbox before it was confirmed: lost */
};

struct tg_hal {
    void *ctx;

    /* Wall clock in ms since the Unix epoch: the reading's "ts". May jump (NTP, skew). */
    int64_t (*wall_ms)(void *ctx);
    /* Monotonic ms from any origin: schedules and backoff. Never goes backwards, and advances
     * during a call that waits (drivers poll a conversion until a mono_ms() deadline). */
    uint64_t (*mono_ms)(void *ctx);
    /* 32 random bits: backoff jitter. Need not be cryptographic. */
    uint32_t (*random_u32)(void *ctx);

    /* Persistent key/value store of small numbers (the boot counter). kv_load returns false
     * when the key has never been stored; kv_store returns 0 once the value is durable. */
    bool (*kv_load)(void *ctx, const char *key, uint64_t *value);
    int (*kv_store)(void *ctx, const char *key, uint64_t value);

    /* Transport (MQTT in both ports), asynchronous:
     * - connect starts a connection attempt and returns 0, or -1 when it cannot even start;
     *   the port later calls tg_node_transport_up() or tg_node_transport_down().
     * - publish sends one QoS1 message to the device's telemetry topic and returns 0 with
     *   *token set to what the port will pass to tg_node_transport_acked() once the broker
     *   confirms it, or -1 (not connected, buffer full): the core keeps the reading and
     *   tries again later. */
    int (*transport_connect)(void *ctx);
    int (*transport_publish)(void *ctx, const uint8_t *payload, size_t len, uint32_t *token);

    /* Sensor bus: one I2C transaction to the 7-bit address addr: write wr_len bytes, then
     * (repeated start) read rd_len bytes; either length may be 0. Returns 0, or -1 on a NACK
     * or bus error. NULL when the board has no I2C bus. */
    int (*i2c_transfer)(void *ctx, uint8_t addr, const uint8_t *wr, size_t wr_len, uint8_t *rd,
                        size_t rd_len);

    /* Optional (may be NULL): told what happened to each reading. */
    void (*observe)(void *ctx, enum tg_node_event ev, uint64_t boot, uint64_t seq);
};

#endif
