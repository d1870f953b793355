/*
 * ledger.h - what the simulated fleet sent: the ground truth `tidegate-sim audit` checks Kafka
 * against.
 *
 * During a run the simulator records, per device, each reading's fate as the firmware core
 * reports it (hal.h: taken, released, dropped), and each injected fault. At the end of the run
 * the ledger is written to a file; the audit reads it back.
 *
 * Expected in Kafka's telemetry topic, exactly once and in seq order per (device, boot): every
 * reading that was RELEASED (the broker confirmed it). A reading TAKEN but neither released nor
 * dropped when the run ended is "unconfirmed": it may or may not arrive, and the audit counts it
 * apart. A DROPPED reading was lost on the device (outbox overflow), not in the pipeline.
 * Every malformed payload published is expected once in the DLQ topic.
 *
 * The file is compact: seqs are stored as ranges, so 10,000 devices x 1 hour is a few MB
 * at most. It is text, one line per fact, documented in ledger.c; first line
 * "tidegate-sim-ledger 1".
 *
 * Threads: a ledger is used from one thread.
 */
#ifndef TG_LEDGER_H
#define TG_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hal.h"

struct tg_ledger;

struct tg_ledger *tg_ledger_new(void);
void tg_ledger_destroy(struct tg_ledger *lg);

/* Registers a device and returns its index (0, 1, ...), used by the calls below. The id is
 * copied. Returns -1 when out of memory, or when the id is not a valid device id
 * ([A-Za-z0-9_.-]{1,64}) or is already registered. */
int tg_ledger_add_device(struct tg_ledger *lg, const char *device_id);

/* One reading's fate (the firmware core's observe callback, hal.h). Seqs of one (device,
 * boot) arrive in increasing order for TAKEN; RELEASED and DROPPED may come in any order. */
int tg_ledger_reading(struct tg_ledger *lg, int device, enum tg_node_event ev, uint64_t boot,
                      uint64_t seq);

/* Faults injected on this device: one malformed payload published (and confirmed by the
 * broker), identified by tg_ledger_payload_hash() of its bytes; one reading published again
 * as a duplicate; one reading (boot, seq) taken with a skewed clock. */
int tg_ledger_malformed(struct tg_ledger *lg, int device, uint64_t payload_hash);
int tg_ledger_duplicate(struct tg_ledger *lg, int device);
int tg_ledger_skewed(struct tg_ledger *lg, int device, uint64_t boot, uint64_t seq);

/* 64-bit FNV-1a of a payload: how the ledger and the audit name a malformed payload. */
uint64_t tg_ledger_payload_hash(const void *payload, size_t len);

/* The broker accepted a connection of the device (CONNACK 0). */
int tg_ledger_connected(struct tg_ledger *lg, int device);

/* The boot counter this run gave the device (its persisted boot + 1, sim/boot_state.h):
 * readings of lower boots in Kafka are an earlier run's. 0 = unknown. */
int tg_ledger_set_boot(struct tg_ledger *lg, int device, uint64_t boot);
uint64_t tg_ledger_device_boot(const struct tg_ledger *lg, int device);

/* The run's wall-clock start and end (ms since the epoch); false when the file has none. */
void tg_ledger_set_run(struct tg_ledger *lg, int64_t start_ms, int64_t end_ms);
bool tg_ledger_run(const struct tg_ledger *lg, int64_t *start_ms, int64_t *end_ms);

/* Writes the ledger to path (a temporary file renamed into place). Returns 0 or -1 (errno). */
int tg_ledger_write(const struct tg_ledger *lg, const char *path);

/* Reads a ledger file. NULL on error, with a message naming the file and line in err. */
struct tg_ledger *tg_ledger_read(const char *path, char *err, size_t err_size);

/* --- reading back (the audit) -------------------------------------------------------- */

struct tg_ledger_totals {
    size_t devices;
    uint64_t released;      /* readings expected in Kafka */
    uint64_t unconfirmed;   /* taken, neither released nor dropped at the end of the run */
    uint64_t dropped;       /* lost on the device: outbox overflow */
    uint64_t malformed;     /* expected in the DLQ */
    uint64_t duplicates;    /* duplicate publishes injected (the gateway must remove them) */
    uint64_t skewed;        /* readings taken with a skewed clock */
    size_t connected_devices; /* devices the broker accepted a connection of */
};
void tg_ledger_totals(const struct tg_ledger *lg, struct tg_ledger_totals *out);

size_t tg_ledger_device_count(const struct tg_ledger *lg);
const char *tg_ledger_device_id(const struct tg_ledger *lg, int device);
/* Index of a device id, or -1. */
int tg_ledger_find_device(const struct tg_ledger *lg, const char *device_id);

/* The faults injected on one device (tg_ledger_malformed() etc.): the audit leaves devices
 * with a skewed clock out of its latency figures. */
struct tg_ledger_faults {
    uint64_t malformed, duplicates, skewed;
    uint64_t connected; /* connections accepted (not a fault; counted alike) */
};
void tg_ledger_device_faults(const struct tg_ledger *lg, int device,
                             struct tg_ledger_faults *out);

/* What one (device, boot, seq) is in the ledger. */
enum tg_ledger_fate {
    TG_LEDGER_UNKNOWN = 0, /* never taken */
    TG_LEDGER_RELEASED,
    TG_LEDGER_UNCONFIRMED,
    TG_LEDGER_DROPPED,
};
enum tg_ledger_fate tg_ledger_fate(const struct tg_ledger *lg, int device, uint64_t boot,
                                   uint64_t seq);

/* True when that reading was taken with a skewed clock (tg_ledger_skewed()). */
bool tg_ledger_is_skewed(const struct tg_ledger *lg, int device, uint64_t boot, uint64_t seq);

/* How many malformed payloads with this hash the device published. */
uint64_t tg_ledger_malformed_count(const struct tg_ledger *lg, int device, uint64_t payload_hash);

/* Calls fn for every released reading of the device, in (boot, seq) order; stops early when
 * fn returns false. */
typedef bool (*tg_ledger_visit_fn)(void *ud, uint64_t boot, uint64_t seq);
void tg_ledger_each_released(const struct tg_ledger *lg, int device, tg_ledger_visit_fn fn,
                             void *ud);

#endif
