/*
 * record.h - the telemetry record model shared by every part of tidegate.
 *
 * A reading is what one device measured at one instant: a set of named numeric metrics,
 * the device's event time, and, for native payloads, the (boot, seq) pair that identifies
 * it. A payload decodes into one reading (native) or several (SenML packs with several
 * resolved times).
 *
 * These are plain value structs on purpose: they are the data model, not objects. The
 * strings they point to are owned by whoever produced them (for decoded payloads, the
 * decoder's arena: valid until the decoder's next call), never by the reading itself.
 */
#ifndef TG_RECORD_H
#define TG_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Device ids are [A-Za-z0-9_.-]{1,64}: the MQTT topic level after "telemetry/". */
#define TG_DEVICE_ID_MAX 64

/* Bytes of an HMAC-SHA256 payload signature. */
#define TG_SIG_LEN 32

struct tg_metric {
    const char *name;  /* NUL-terminated, non-empty */
    const char *unit;  /* NUL-terminated unit (SenML "u"/"bu"), or NULL when none */
    double value;      /* always finite */
};

struct tg_reading {
    const char *device;          /* NUL-terminated device id */
    bool has_seq;                /* native payloads: boot and seq are set; SenML: false */
    uint64_t boot;               /* device restart counter */
    uint64_t seq;                /* sequence number within the boot */
    int64_t ts_ms;               /* device event time, ms since the Unix epoch */
    size_t n_metrics;
    const struct tg_metric *metrics;
};

/* True when id matches [A-Za-z0-9_.-]{1,64} (len bytes, not necessarily NUL-terminated). */
bool tg_device_id_valid(const char *id, size_t len);

#endif
