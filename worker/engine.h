/*
 * engine.h - the worker's stream processor: readings in, alerts and aggregates out.
 *
 * The engine is everything of tidegate-worker that does not touch Kafka: per-series state
 * (device, metric), the detectors and their combined anomaly score, the alert lifecycle
 * (open / update / close), event-time tumbling windows with a per-partition watermark, and
 * the encoding of that state as snapshots. The Kafka side (consumer group, transactions,
 * the state topic) lives in worker/consumer*.c and drives an engine through this contract;
 * `tidegate-worker replay` drives the same engine from a CSV file, so offline and streaming
 * results are the same code.
 *
 * Determinism (what exactly-once rests on): given the same snapshots restored and the same
 * readings offered in the same order per partition, an engine emits the same outputs, byte
 * for byte, in the same order. Nothing in tg_engine_process() reads a clock; wall-clock
 * behaviour (silence) happens only in tg_engine_sweep(), whose alerts carry keys and times
 * derived from event times, never from now_ms.
 *
 * Partitions: series belong to the input partition their readings came from (the gateway
 * keys by device, so a device lives in one partition). The watermark is per partition.
 * A partition must be added (tg_engine_partition_add) before readings of it are offered,
 * and dropping it forgets all its series without emitting anything.
 *
 * Snapshots: the state of one series, and the partition's own state (watermark, counters),
 * each encode to one (key, value) pair for the compacted topic `telemetry.worker.state`:
 *   key   "<partition>/<device>/<metric>" for a series, "<partition>/" for the partition
 *   value a versioned binary encoding (engine-defined), or NULL (len 0) as a tombstone for a
 *         series the engine evicted
 * Restoring every pair of a partition (latest value per key, tombstones skipped) and then
 * offering the readings after the snapshot's offsets gives the same outputs as an engine that
 * never stopped.
 *
 * Threads: an engine is not synchronized; one thread owns it (the worker's consumer thread,
 * or replay's main thread). The emit callback runs on that thread, inside the call that
 * caused it, and must not call back into the engine.
 */
#ifndef TG_WORKER_ENGINE_H
#define TG_WORKER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "record.h"

/* ------------------------------------------------------------------------------------------
 * Configuration: the engine's part of the worker's INI schema.
 */

/* Schema entries of the engine's sections ([detect], [rules.N], [window], [alert], ...),
 * concatenated into the worker's schema by worker_config.c. Static; n in *n. */
const struct tg_config_key *tg_engine_config_keys(size_t *n);

struct tg_engine_config;

/* Builds the engine's configuration from a loaded config whose schema includes
 * tg_engine_config_keys(). Cross-key problems (a pattern that cannot compile, a threshold
 * out of order) are reported like any config error, naming the key, in err (NUL-terminated,
 * errlen bytes at most); returns NULL then (or when out of memory). */
struct tg_engine_config *tg_engine_config_from(const struct tg_config *cfg, char *err,
                                               size_t errlen);
void tg_engine_config_destroy(struct tg_engine_config *ec); /* NULL is a no-op */

/* Sets the hole limit, ms of event time (0, the default: off). A partition whose highest
 * event time jumps by more than this had a hole: no device of it produced a record then (a
 * frozen source, a gateway restart, readings lost upstream). The hole is counted
 * (partition_gaps) and kept in the partition's state, and a series' gap that arrives
 * afterwards is judged for silence without its overlap with the partition's recent holes
 * (each widened by the limit either side, for device clocks off from the partition's).
 * The worker sets [worker] stall_after_ms here, so that "the partition stopped" means the
 * same on the sweep's clock and in event time; replay leaves it off (a CSV is one series
 * and says nothing of its partition: every gap in it is its own). Call before engines are
 * made over ec; every engine restoring a partition's state must use the same limit. */
void tg_engine_config_set_partition_hole_ms(struct tg_engine_config *ec, int64_t ms);

/* ------------------------------------------------------------------------------------------
 * Outputs
 */

enum tg_engine_output_kind {
    TG_ENGINE_ALERT,     /* for telemetry.anomalies */
    TG_ENGINE_AGGREGATE, /* for telemetry.agg.1m */
};

/* One output record. Every pointer is valid only during the emit callback. */
struct tg_engine_output {
    enum tg_engine_output_kind kind;
    int32_t partition;       /* the input partition whose series produced it */
    const char *key;         /* Kafka key: the device id (alerts and aggregates alike) */
    size_t key_len;
    const char *value;       /* JSON document */
    size_t value_len;
    int64_t ts_ms;           /* Kafka timestamp: event time (window end, alert point time) */
    const char *alert_id;    /* alerts: deterministic id "<device>/<metric>/<detector>/<start_ts>",
                              * also sent as a header; NULL for aggregates */
    const char *alert_kind;  /* alerts: the dominant detector's kind ("level", "shift", "rate",
                              * "stuck", "silence", "seasonal"); NULL for aggregates */
    const char *alert_state; /* alerts: "open", "update" or "close"; NULL for aggregates */
};

typedef void (*tg_engine_emit_fn)(void *ud, const struct tg_engine_output *out);

/* Per-point hook for replay and tests: called once per (reading, metric) processed, after
 * scoring. alert_state is "open"/"update"/"close" when that point changed or continued an
 * alert, else "". */
struct tg_engine_point {
    int32_t partition;
    const char *device;
    const char *metric;
    int64_t ts_ms;
    double value;
    double score;            /* combined anomaly score in [0, 1] */
    const char *alert_state;
};
typedef void (*tg_engine_point_fn)(void *ud, const struct tg_engine_point *pt);

/* Counters the worker exports as metrics (all monotonic except series). */
struct tg_engine_stats {
    uint64_t readings;        /* readings offered */
    uint64_t points;          /* (reading, metric) pairs scored */
    uint64_t late_records;    /* points older than the watermark: counted, not merged */
    uint64_t backward_ts;     /* points older than their series' last point (handled, counted) */
    uint64_t alerts_open, alerts_update, alerts_close;
    uint64_t aggregates;
    uint64_t series;          /* series in state now */
    uint64_t series_evicted;
    size_t state_bytes;       /* memory held by series state now */
    uint64_t series_refused;  /* points of new series not tracked: [engine] max_series reached */
    uint64_t partition_gaps;  /* holes noted: a partition's event time jumped by more than the
                               * hole limit (tg_engine_config_set_partition_hole_ms) */
};

/* ------------------------------------------------------------------------------------------
 * The engine
 */

struct tg_engine;

/* A new engine over ec (borrowed: must outlive the engine) that sends every output to
 * emit(ud, ...). Returns NULL when out of memory. */
struct tg_engine *tg_engine_new(const struct tg_engine_config *ec, tg_engine_emit_fn emit,
                                void *ud);
void tg_engine_destroy(struct tg_engine *en); /* NULL is a no-op */

/* Installs (or, with fn NULL, removes) the per-point hook. */
void tg_engine_set_point_hook(struct tg_engine *en, tg_engine_point_fn fn, void *ud);

/* Starts tracking partition with empty state (no-op if already tracked). */
tg_err tg_engine_partition_add(struct tg_engine *en, int32_t partition);

/* Forgets partition and every series of it, emitting nothing. No-op if untracked. */
void tg_engine_partition_drop(struct tg_engine *en, int32_t partition);

/* The highest event time seen on partition (before lateness: the watermark's base) into
 * *max_ts; false when the partition is untracked or has seen no reading. The worker's silence
 * clock follows it while the worker is behind on the partition. */
bool tg_engine_partition_max_ts(struct tg_engine *en, int32_t partition, int64_t *max_ts);

/* Restores one snapshot pair read from the state topic. The partition (parsed from the key)
 * must have been added. TG_ERR_MALFORMED (or another permanent error) for a pair that does
 * not decode: the caller counts it and goes on; the series then starts cold. */
tg_err tg_engine_restore(struct tg_engine *en, const void *key, size_t key_len,
                         const void *value, size_t value_len);

/* Processes one reading consumed from partition (event time rd->ts_ms), emitting alerts and
 * any windows the advanced watermark closes. Permanent error for a reading the engine cannot
 * use (no metrics, an event time beyond +-2^53 ms, an invalid device id, a metric name
 * empty or over 1023 bytes, a value beyond +-1e100); the caller counts it and goes on. */
tg_err tg_engine_process(struct tg_engine *en, int32_t partition, const struct tg_reading *rd);

/* Wall-clock sweep, now_ms in ms since the epoch: opens silence alerts for series quiet for
 * more than k times their usual period (and closes nothing else). Call it every second or so.
 * Quiet time is wall time since a sweep last saw the series receive a reading, so devices
 * whose clocks are off are judged fairly; the alerts' ids and times are event times. */
void tg_engine_sweep(struct tg_engine *en, int64_t now_ms);

/* The same with one clock per partition (ms, clocks[p] for partition p, n of them; NULL:
 * now_ms for all): the worker passes a clock that stops while a partition is stalled (no
 * records arrive, or the worker is behind on it), so a stall upstream is not silence of every
 * device. A partition whose clock is <= 0, or beyond n, is not swept this time. */
void tg_engine_sweep_clocks(struct tg_engine *en, const int64_t *clocks, size_t n, int64_t now_ms);

/* Hands every (key, value) pair whose state changed since the previous call (or since
 * restore) to fn, partition state included, tombstones for evicted series, then forgets that
 * they changed. The worker calls it right before committing a transaction and produces the
 * pairs into that transaction. */
typedef void (*tg_engine_snapshot_fn)(void *ud, int32_t partition, const void *key,
                                      size_t key_len, const void *value, size_t value_len);
void tg_engine_snapshot_dirty(struct tg_engine *en, tg_engine_snapshot_fn fn, void *ud);

/* The same for the partitions want(want_ud, partition) chooses (all when want is NULL); the
 * others' changes stay pending for a later call. The worker snapshots a partition only at
 * its checkpoints, so between two of them a series is written once however often it
 * changed. */
typedef bool (*tg_engine_partition_pred)(void *ud, int32_t partition);
void tg_engine_snapshot_dirty_if(struct tg_engine *en, tg_engine_partition_pred want,
                                 void *want_ud, tg_engine_snapshot_fn fn, void *ud);

/* The same, bounded: stops once max_records records or max_bytes key and value bytes have
 * been handed out (0: no bound; at least one record goes out per call) and returns true when
 * changes of the chosen partitions are left for a later call, in their order. The worker
 * spreads a checkpoint too large for one transaction over several this way. */
bool tg_engine_snapshot_dirty_max(struct tg_engine *en, tg_engine_partition_pred want,
                                  void *want_ud, size_t max_records, size_t max_bytes,
                                  tg_engine_snapshot_fn fn, void *ud);

/* How many records tg_engine_snapshot_dirty_if() would hand out now (partition states,
 * tombstones and changed series of the chosen partitions). */
size_t tg_engine_snapshot_pending(const struct tg_engine *en, tg_engine_partition_pred want,
                                  void *want_ud);

/* Emits, for every tracked partition, the windows that are still open, as if the watermark
 * had passed them: for replay's end of input only (the streaming worker never flushes). */
void tg_engine_flush(struct tg_engine *en);

void tg_engine_stats(const struct tg_engine *en, struct tg_engine_stats *out);

#endif
