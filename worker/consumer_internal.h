/*
 * consumer_internal.h - what the files of the worker's Kafka side share.
 *
 *   consumer.c          the clients' configuration, the consume loop, decoding, emitting
 *   consumer_txn.c      the transaction: begin, produce snapshots and offset markers, commit,
 *                       abort, and the rewind that follows an abort
 *   consumer_state.c    rebalances and restoring a partition's state from the state topic
 *   consumer_metrics.c  the tidegate_worker_* metrics
 *
 * Everything here runs on the consumer thread (the one in tg_consumer_run()), including the
 * rebalance callback, which librdkafka calls from inside rd_kafka_consumer_poll().
 */
#ifndef TG_WORKER_CONSUMER_INTERNAL_H
#define TG_WORKER_CONSUMER_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "consumer.h"
#include "engine.h"
#include "metrics.h"

/* Alert kinds and states counted separately; a kind the engine adds later counts as "other". */
enum { CONSUMER_KINDS = 8, CONSUMER_STATES = 3 };
extern const char *const consumer__kinds[CONSUMER_KINDS];
extern const char *const consumer__states[CONSUMER_STATES];

/* Suffix of the offset marker's key in the state topic: "<partition>/@offset". '@' is not a
 * device id character, so it never collides with a series key "<partition>/<device>/...". */
#define CONSUMER_OFFSET_KEY "/@offset"
/* Suffix of the checkpoint marker's key: "<partition>/@ckpt" = the offset the partition's
 * snapshots before it cover (see consumer_txn.c). */
#define CONSUMER_CKPT_KEY "/@ckpt"
/* Suffix of the marker that opens a checkpoint: "<partition>/@begin" = the offset it will
 * cover. A checkpoint larger than [worker] checkpoint_max_records/_bytes spans several
 * transactions between its @begin and its @ckpt; a restore drops the snapshots of one that
 * never reached its @ckpt (consumer_state.c). */
#define CONSUMER_BEGIN_KEY "/@begin"

/* One partition of the input topic, indexed by partition number. */
struct consumer_slot {
    bool assigned;
    bool advanced;         /* records processed since the last commit */
    bool position_known;   /* next_offset is a real offset (not "wherever the reset points") */
    int64_t end_seen;      /* highest offset + 1 of a record fetched: a floor of the end */
    int64_t next_offset;   /* the next record to process (the state's position) */
    struct tg_gauge *lag;  /* tidegate_worker_consumer_lag_records{partition}; NULL until
                            * first assigned */

    /* Checkpoints (consumer_txn.c). */
    bool state_changed;    /* engine state of the partition changed since its checkpoint */
    bool ckpt_due;         /* checkpoint at the next commit (assigned, swept, revoked, stop) */
    bool ckpt_now;         /* chosen for the commit in progress */
    bool ckpt_split;       /* ... too large for it: written in transactions of its own */
    int64_t next_ckpt_ms;  /* monotonic ms when the periodic checkpoint is due */
    int64_t replay_until;  /* outputs of the records below were committed by an earlier
                            * owner: they are processed again with outputs suppressed */

    /* The partition's clock for the silence sweep (consumer.c): wall time with stalls cut
     * out. flow_ms is the clock at last_record_mono (monotonic ms of the last record). */
    int64_t flow_ms, last_record_mono;
    int64_t hi_at_sweep;   /* the partition's end as cached at the previous sweep */
    /* The clock handed to the sweep (consumer__sweep): it follows the flow clock while the
     * worker keeps up, and the partition's event time (never faster than the flow clock)
     * while it is behind. clock_flow and clock_event are the flow clock and the engine's
     * highest event time of the partition at the previous sweep; event_credit is event time
     * processed while behind that the clock has not yet taken. */
    int64_t silence_clock, clock_flow, clock_event, event_credit;
    bool clock_event_known;
};

/* Most event time a behind partition's silence clock may hold in credit (ms): event time runs
 * ahead of the flow clock while a backlog is read faster than real time, and a device whose
 * clock is far ahead moves the partition's highest event time in one jump; neither may later
 * let the clock run at the flow clock's pace once the worker is slower than real time. */
#ifndef CONSUMER_EVENT_CREDIT_MAX_MS
#define CONSUMER_EVENT_CREDIT_MAX_MS 10000
#endif

struct consumer_metrics {
    struct tg_counter *consumed, *restored_records, *restore_errors, *restore_timeouts;
    struct tg_counter *commits, *aborts, *fenced, *late, *evicted, *refused, *aggregates;
    struct tg_counter *snapshot_records, *snapshot_bytes, *assigned_total, *revoked_total,
        *lost_total;
    struct tg_counter *checkpoints, *checkpoint_parts, *replayed, *suppressed, *stalls;
    struct tg_counter *partition_gaps;
    struct tg_gauge *stalled, *behind;
    struct tg_counter *alerts[CONSUMER_KINDS][CONSUMER_STATES];
    struct tg_gauge *series, *state_bytes, *partitions;
    struct tg_histogram *restore_seconds, *commit_seconds, *latency, *txn_snapshot_records;
    struct tg_metrics *registry;
};

enum consumer_health {
    HEALTH_OK = 0,
    HEALTH_STARTING,
    HEALTH_PRODUCER_FATAL,
    HEALTH_NO_TXN,
    HEALTH_FENCED,
};

struct tg_consumer {
    const struct tg_config *cfg; /* borrowed: outlives the consumer */
    char instance_id[72];
    char transactional_id[96];
    const char *input_topic, *alerts_topic, *aggregates_topic, *state_topic; /* in cfg */
    int64_t commit_interval_ms, sweep_interval_ms, txn_timeout_ms, restore_timeout_ms,
        shutdown_timeout_ms, session_timeout_ms, snapshot_interval_ms, stall_after_ms,
        max_future_ms;
    /* Bounds of one transaction's snapshot records ([worker] checkpoint_max_records and
     * checkpoint_max_bytes): a larger checkpoint is spread over several (consumer_txn.c). */
    uint64_t ckpt_max_records, ckpt_max_bytes;
    int offset_reset;                      /* enum tg_worker_offset_reset */

    struct tg_engine *en;
    rd_kafka_t *consumer, *producer, *restorer;

    struct consumer_slot *slots;
    int32_t n_slots;

    /* The open transaction. */
    bool txn_open;
    bool txn_work;      /* something was produced or consumed since it began */
    bool txn_failed;    /* a produce call failed: it can only abort */
    bool rewind_needed; /* an abort made the engine's state newer than what is committed */
    bool suppress;      /* the record being processed is replayed: its outputs were committed */
    bool in_sweep;      /* inside tg_engine_sweep_clocks(): outputs come from the sweep */
    int64_t *sweep_clocks; /* per partition, n_slots of them */
    /* Test hooks, from the environment at start (README, "Silence, or a stall upstream"):
     * TIDEGATE_TEST_RECORD_DELAY_MS sleeps that long before each record while the file
     * TIDEGATE_TEST_SLOW_FILE exists (a worker slower than its input), and
     * TIDEGATE_TEST_BEHIND_CLOCK=wall judges behind partitions on the flow clock (the control
     * run of test_worker_lag). */
    int64_t test_delay_ms;
    const char *test_slow_file;
    bool test_behind_wall;
    /* TIDEGATE_TEST_STALE_GENERATION=N: after each change of the group's generation, the
     * next N commits that send offsets send them with the group metadata from before the
     * change, as a commit racing a rebalance does (consumer_txn.c; test_worker_rebalance).
     * test_md is the metadata last sent legitimately (rd_kafka_mem_free()); test_stale_left
     * is -1 outside such a run of commits. */
    int test_stale_commits, test_stale_left;
    void *test_md;
    size_t test_md_len;
    uint64_t txn_alerts[CONSUMER_KINDS][CONSUMER_STATES];
    uint64_t txn_aggregates;
    uint64_t txn_snapshot_records, txn_snapshot_bytes;

    atomic_bool *stop;  /* tg_consumer_run()'s stop flag: waits that may be long look at it */
    bool broken;        /* the producer could not be replaced before a stop: give up */

    struct tg_engine_stats last_stats; /* as of the last metrics update */
    struct consumer_metrics m;
    _Atomic int health;                /* enum consumer_health */
    bool subscribed;                   /* tg_consumer_run() subscribed the group consumer */
    bool group_assigned;               /* ... and it has had an assignment (even empty) */
};

/* consumer.c */
rd_kafka_conf_t *consumer__conf_new(struct tg_consumer *cs, char *err, size_t errlen);
/* Applies [kafka.rdkafka] to conf, last, so that it can override our properties. */
tg_err consumer__conf_passthrough(struct tg_consumer *cs, rd_kafka_conf_t *conf, char *err,
                                  size_t errlen);
tg_err consumer__conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                          size_t errlen);
/* The slot of partition p, grown as needed; NULL when out of memory. */
struct consumer_slot *consumer__slot(struct tg_consumer *cs, int32_t partition);
/* The engine's emit callback: produces one output into the open transaction. */
void consumer__emit(void *ud, const struct tg_engine_output *out);
/* Produces with retries while librdkafka's queue is full. */
tg_err consumer__produce(struct tg_consumer *cs, const char *topic, int32_t partition,
                         const void *key, size_t key_len, const void *value, size_t value_len,
                         int64_t ts_ms, rd_kafka_headers_t *hdrs);

/* Sets up a slot for a partition just assigned or rewound, at offset (negative: unknown). */
void consumer__slot_start(struct tg_consumer *cs, struct consumer_slot *slot, int64_t offset);
/* Sweeps the engine for silence on each held partition's clock (see consumer.c). */
void consumer__sweep(struct tg_consumer *cs);

/* consumer_txn.c */
tg_err consumer__producer_start(struct tg_consumer *cs, int init_timeout_ms, char *err,
                                size_t errlen);
#define CONSUMER_INIT_TIMEOUT_MS 60000 /* at start: the cluster may be starting too */
tg_err consumer__txn_begin(struct tg_consumer *cs);
/* Commits the open transaction if it holds anything (snapshots, offset markers, offsets).
 * On failure the transaction is aborted and rewind_needed set; returns the error. */
tg_err consumer__txn_commit(struct tg_consumer *cs, int timeout_ms);
/* Aborts the open transaction (if any) and sets rewind_needed. */
void consumer__txn_abort(struct tg_consumer *cs, const char *why);
/* After an abort: every assigned partition's state restored and its position rewound to what
 * the last committed transaction recorded. Begins a new transaction. */
tg_err consumer__rewind(struct tg_consumer *cs);

/* consumer_state.c */
void consumer__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque);
/* Drops and restores the engine state of the input partitions in parts and sets each
 * element's offset to where processing resumes (an explicit offset, or BEGINNING/END by
 * [kafka] auto_offset_reset). */
tg_err consumer__restore(struct tg_consumer *cs, rd_kafka_topic_partition_list_t *parts);

/* consumer_metrics.c */
void consumer__metrics_register(struct tg_consumer *cs, struct tg_metrics *registry);
struct tg_gauge *consumer__lag_gauge(struct tg_consumer *cs, int32_t partition);
/* After a commit: the transaction's alert and aggregate counts, the engine's stats, lags. */
void consumer__metrics_committed(struct tg_consumer *cs);
void consumer__metrics_lag(struct tg_consumer *cs);

#endif
