/*
 * dedup.h - drops readings the gateway has already taken (design.md 5.5).
 *
 * MQTT QoS1 redelivers a message whose PUBACK was lost, and a node's outbox resends what it
 * was not sure got through, so the same reading can arrive several times. This module keeps
 * a small, bounded state per device and answers "new or seen before?" for each reading.
 *
 * Native readings are identified by (device, boot, seq). Per device the state is the
 * current boot, the highest seq seen in it, a 64-bit window of which of the 64 seqs below
 * the highest have been seen, and the newest device time (ts, to the second) taken in it.
 * Each check has one of three verdicts: new, duplicate (seen before), or out of window
 * (too old to tell: dropped like a duplicate, but counted apart, since it may be a reading
 * never delivered):
 *   - seq above the highest: new; the window slides up.
 *   - seq equal to the highest, or inside the window and already seen: duplicate.
 *   - seq inside the window and not yet seen (out-of-order arrival): new, once.
 *   - seq more than 64 below the highest: OUT OF WINDOW. Nothing about it is remembered any
 *     more, and a node sends in seq order, so something that old is far more likely a stale
 *     redelivery than a reading never delivered.
 *   - a higher boot: the device restarted; the window starts afresh, and the previous boot
 *     and its highest seq are kept so that the old boot's tail (the outbox draining after a
 *     reboot) is taken: a reading of the previous boot is new if its seq is above the highest
 *     seen for that boot (which then rises), a duplicate if equal, else out of window. Only
 *     ONE previous boot is kept. (After a new epoch, below, a boot up to the one the device
 *     went back from whose ts is more than the grace OLDER than the current boot's newest is
 *     a late copy from the abandoned epoch: out of window.)
 *   - any older boot: out of window, unless its ts is more than the epoch grace
 *     (tg_dedup_set_epoch_grace, default 10 s) NEWER than the newest reading of the current
 *     boot. Then the node's boot counter went backwards (re-flashed, its state lost) and it
 *     is a NEW EPOCH: the reading is new, the lower boot becomes the current one, and
 *     stats.new_epochs counts it. A stale copy of an old boot's reading carries an old time,
 *     so it never starts an epoch; readings of the new epoch sent within the grace are out
 *     of window. Times come from the readings, so a replay still decides the same way.
 *
 * SenML readings carry no seq and are identified by (device, ts). Per device the state is
 * the highest ts seen and up to TG_DEDUP_SENML_RECENT more recent times below it (as 32-bit
 * offsets from the highest):
 *   - ts equal to a remembered time: duplicate.
 *   - ts above the highest: new.
 *   - ts below the highest and not remembered: new (and remembered) while fewer than
 *     TG_DEDUP_SENML_RECENT are remembered, or when it is newer than the oldest remembered
 *     (which is then forgotten); older than everything remembered: DUPLICATE, as is a ts more
 *     than 2^32 ms (49.7 days) below the highest.
 *   So two readings of one device with the same time are one reading, and SenML packs must
 *   arrive roughly in time order; within one pack, order does not matter when the pack goes
 *   through tg_dedup_check_all(), which takes its readings in time order.
 * A device that switches between native and SenML payloads starts afresh in the new form.
 *
 * Bounds: at most max_devices devices are tracked; a new device beyond that evicts the one
 * seen least recently (an O(1) LRU list), whose next reading then counts as new. Entries live
 * in one slab that grows geometrically (from min(max_devices, 256) entries, doubling) up to
 * max_devices, with a chained hash table over it: once the slab has reached its working size
 * no check allocates, except to copy the id of a new device when it is longer than 24 bytes.
 * Each device costs TG_DEDUP_ENTRY_BYTES (80) in the slab plus 4 to 8 bytes of hash buckets:
 * at most 88 bytes per device, plus, for an id longer than 24 bytes only, a malloc'd copy of
 * it (up to 64 bytes, 80 with malloc's overhead), freed when the device is evicted or
 * forgotten.
 *
 * Restarts: tg_dedup_save() writes a compact, versioned, checksummed snapshot that
 * tg_dedup_load() restores; the pipeline keeps it in the journal's state table.
 *
 * Threads: not synchronized. A dedup belongs to the pipeline thread, which makes every call.
 */
#ifndef TG_DEDUP_H
#define TG_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "record.h"

/* Seqs below the highest whose arrival is remembered (native readings). */
#define TG_DEDUP_WINDOW 64
/* Times below the highest that are remembered (SenML readings). */
#define TG_DEDUP_SENML_RECENT 8
/* Largest max_devices accepted. */
#define TG_DEDUP_MAX_DEVICES (1u << 24)
/* Bytes of one device's slab entry (ids longer than 24 bytes also take a separate copy). */
#define TG_DEDUP_ENTRY_BYTES 80
/* Default of tg_dedup_set_epoch_grace(). */
#define TG_DEDUP_DEFAULT_EPOCH_GRACE_MS 10000

struct tg_dedup;

enum tg_dedup_verdict {
    TG_DEDUP_NEW = 0,
    TG_DEDUP_DUPLICATE,     /* seen before */
    TG_DEDUP_OUT_OF_WINDOW, /* older than what the state remembers: dropped, counted apart */
};

/* Counts since tg_dedup_new() (not saved in snapshots). */
struct tg_dedup_stats {
    uint64_t duplicates;
    uint64_t out_of_window;
    uint64_t new_epochs; /* boots that went backwards and were taken as a new epoch */
};

/*
 * A dedup tracking at most max_devices devices (1..TG_DEDUP_MAX_DEVICES; TG_ERR_USAGE
 * otherwise). TG_ERR_NOMEM when out of memory. On success *out belongs to the caller.
 */
tg_err tg_dedup_new(size_t max_devices, struct tg_dedup **out);

/* Frees dd. NULL is a no-op. */
void tg_dedup_destroy(struct tg_dedup *dd);

/*
 * True when r is new, and records it; false when it is a duplicate (the rules above). r is
 * only read during the call; r->device must be a valid device id (tg_device_id_valid), as
 * the decoder guarantees. now_ms is the gateway's clock, kept as the state's "as of" time
 * (tg_dedup_as_of_ms(), saved in snapshots); the decision itself depends only on the
 * reading, so a replay of the same readings always decides the same way. Never allocates
 * once the slab has grown to the number of active devices; if growing fails, the least
 * recently seen device is evicted instead, so a check never fails. Likewise, when the copy of
 * a new device's id longer than 24 bytes cannot be allocated, the reading is taken as new
 * without tracking the device (the same as for an id outside the contract): a possible
 * duplicate let through rather than a reading lost.
 */
bool tg_dedup_check(struct tg_dedup *dd, const struct tg_reading *r, int64_t now_ms);

/* tg_dedup_check() with the verdict: new, duplicate or out of window. */
enum tg_dedup_verdict tg_dedup_classify(struct tg_dedup *dd, const struct tg_reading *r,
                                        int64_t now_ms);

/* How much newer (device time, ms; whole seconds count) a reading of a lower boot must be
 * than the current boot's newest before it starts a new epoch (the rules above). >= 0. */
void tg_dedup_set_epoch_grace(struct tg_dedup *dd, int64_t grace_ms);

void tg_dedup_stats(const struct tg_dedup *dd, struct tg_dedup_stats *out);

/* The boots of the latest new epoch (for a log line); false when there was none. */
bool tg_dedup_last_epoch(const struct tg_dedup *dd, uint64_t *from_boot, uint64_t *to_boot);

/*
 * tg_dedup_check() for each of the n readings of one payload, taken in ascending ts order
 * (ties in the given order) so that a SenML pack listed newest-first is not mistaken for
 * stale data. fresh[i] is set for readings[i]. Returns the number of new readings. Sorting
 * uses a fixed stack array: packs of more than 256 readings are taken in the given order.
 */
size_t tg_dedup_check_all(struct tg_dedup *dd, const struct tg_reading *readings, size_t n,
                          int64_t now_ms, bool *fresh);

/* Forgets everything about device (NUL-terminated id); its next reading counts as new.
 * True when the device was tracked. For an operator whose node's boot counter was reset. */
bool tg_dedup_forget(struct tg_dedup *dd, const char *device);

/* Number of devices tracked. */
size_t tg_dedup_devices(const struct tg_dedup *dd);

/* The latest now_ms given to a check, or restored by a load (INT64_MIN: none yet): how old a
 * restored state is, for the pipeline's startup log. */
int64_t tg_dedup_as_of_ms(const struct tg_dedup *dd);

/* True when the state changed since the last tg_dedup_save() or tg_dedup_load(): a new
 * reading, an eviction or a forget (a duplicate only refreshes LRU order, which is not
 * worth a save on its own). The pipeline skips saving an unchanged state. */
bool tg_dedup_dirty(const struct tg_dedup *dd);

/*
 * Writes a snapshot of the whole state into *blob (malloc'd; the caller frees it) of *len
 * bytes, and clears the dirty flag. Devices are written least recently seen first, so a load
 * restores LRU order as well. Format (version 2), all integers little-endian or LEB128:
 *
 *   "TGDD" | u8 version=2 | u8 0 | zigzag varint as-of ms | varint device count |
 *   per device: u8 bytes shared with the previous id | u8 suffix length | suffix |
 *               u8 kind (1 native, 2 native with previous boot, 3 SenML, 4 native with the
 *                        boot it went back from; native + 16: the window is stored inverted) |
 *     native:   varint boot | varint seq | varint window or ~window, whichever is smaller |
 *               varint newest time: 0 unknown, else 1 + zigzag(as-of s - newest ts in s)
 *               (absent in version 1, which still loads) |
 *               [kind 2: varint boot - prev_boot | varint prev_seq]
 *               [kind 4: varint left boot - boot | varint the left boot's highest seq]
 *     SenML:    zigzag varint max ts | u8 n | n x varint offset delta (ascending) |
 *   u32 CRC-32 (IEEE) of everything before it
 *
 * Ids share prefixes and in-order traffic has an all-ones window (~window = 0, one byte), so
 * a device typically costs 10 to 13 bytes (tests/bench/bench_dedup.c measures it).
 * TG_ERR_NOMEM when out of memory (dd unchanged, still dirty).
 */
tg_err tg_dedup_save(struct tg_dedup *dd, uint8_t **blob, size_t *len);

/*
 * Replaces dd's state with the snapshot blob[0..len). A snapshot with more devices than
 * max_devices keeps the most recently seen ones. TG_ERR_INTERNAL when the blob is not a
 * well-formed snapshot (bad magic, unknown version, truncated, checksum mismatch, invalid
 * field): dd is then left empty, which only means the first reading of every device counts
 * as new. TG_ERR_NOMEM (the copy of a long id could not be allocated) likewise leaves dd
 * empty. Never reads outside blob[0..len).
 */
tg_err tg_dedup_load(struct tg_dedup *dd, const uint8_t *blob, size_t len);

#endif
