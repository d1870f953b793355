/*
 * reconcile_kafka.h - at start, what an earlier run of this gateway already put in Kafka
 * that its journal and dedup window do not know (issue 12: zero duplicates after kill -9).
 *
 * A kill -9 leaves two kinds of readings that Kafka holds and the restarted gateway would
 * take or send again:
 *   - journal rows whose "done" mark the dead gateway had not committed: Kafka confirmed
 *     them after the last commit, and the journal sends them again;
 *   - readings Kafka confirmed after the last save of the dedup window: with durable acks
 *     their node never got the ack and resends them, and the restored window takes them as
 *     new.
 * Both were confirmed after the last save of the dedup window, so both lie past the offsets
 * the pipeline saves with that window (per partition of the telemetry topic, the highest
 * offset Kafka had confirmed to the gateway at that instant: delivery reports come in offset
 * order per partition, so everything confirmed later lies above it). This module reads each
 * partition from there to its end as of the start, keeps the readings whose canonical record
 * names this gateway, and hands them to the pipeline, which feeds them to the dedup window,
 * marks done the journal's copies and sends nothing before that.
 *
 * A partition the saved state does not name (none saved yet, or the topic grew) is read from
 * its beginning; at most max_records records are read in all (beyond that the rest is
 * skipped, logged, and tg_reconcile_truncated() says so: a possible duplicate, never a loss).
 * The end offsets found at the start are the next run's starting point until the pipeline
 * saves newer ones.
 *
 * The work runs on its own thread (metadata, watermark and fetch calls block); it waits for
 * the cluster as long as it takes (a restart during an outage), retrying every second.
 * Threads: tg_reconcile_start/_done/_take/_destroy and the accessors are called by one thread
 * (the pipeline's); the accessors other than _take only once _done() said true.
 */
#ifndef TG_RECONCILE_KAFKA_H
#define TG_RECONCILE_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "record.h"

/* Most records one start reads back (about 10 s of 10,000 msg/s traffic, the default
 * dedup save interval, many times over). */
#ifndef TG_RECONCILE_MAX_RECORDS
#define TG_RECONCILE_MAX_RECORDS 2000000
#endif

/* Most open journal records indexed for the read-back at a start (about 80 bytes each).
 * The produce cursor sends oldest first, so what a killed run may have put in Kafka is at the
 * front of its backlog: the oldest this many are indexed, the rest (never sent, after a long
 * outage) are not. */
#ifndef TG_RECONCILE_INDEX_MAX
#define TG_RECONCILE_INDEX_MAX 200000
#endif

struct tg_reconcile_opts {
    const char *brokers;
    const char *topic;           /* the telemetry topic */
    const char *gateway_id;      /* the canonical records' "gateway" that are ours */
    const char *const *rdkafka_conf; /* [kafka.rdkafka] pass-through (security settings) */
    /* Per partition, the last offset the previous run saved as confirmed (-1: none, read
     * from the beginning). read false: nothing is read back, only the end offsets are
     * learnt (a journal that never saved any: nothing of an earlier run can be missed). */
    const int64_t *marks;
    size_t n_marks;
    bool read;
    size_t max_records;
};

struct tg_reconcile;

/* Starts the thread; copies what it needs of opts. TG_ERR_NOMEM. */
tg_err tg_reconcile_start(const struct tg_reconcile_opts *opts, struct tg_reconcile **out);

/* True once the work is finished (the results below are then fixed). */
bool tg_reconcile_done(struct tg_reconcile *rc);

/* Checkpoint, while the thread still reads (or after): calls fn for the readings found
 * since the from-th (fn runs under the reader's lock: keep it short and do not call back),
 * copies into pos[0..pos_cap) the last offset read per partition (-1: none; every reading
 * at or below it was passed to fn, now or at an earlier call) and returns the count to pass
 * as from next time. A long read-back thus makes progress that a kill cannot undo: the
 * pipeline saves the positions with the dedup window (pipeline_reconcile.c). */
size_t tg_reconcile_take(struct tg_reconcile *rc, size_t from,
                         void (*fn)(void *ud, const struct tg_reading *r), void *ud,
                         int64_t *pos, size_t pos_cap, size_t *n_pos);

/* The identity the dedup window uses, as a key: (device, boot, seq), or (device, ts) without
 * a seq. Its length (0: does not fit cap). */
size_t tg_reconcile_identity(const struct tg_reading *r, char *buf, size_t cap);

/* Readings of this gateway found past the marks. i < tg_reconcile_found(). out->device
 * points into rc; out has no metrics. */
size_t tg_reconcile_found(const struct tg_reconcile *rc);
void tg_reconcile_reading(const struct tg_reconcile *rc, size_t i, struct tg_reading *out);

/* Whether a reading with r's identity ((device, boot, seq), or (device, ts) without a seq)
 * was found. */
bool tg_reconcile_contains(const struct tg_reconcile *rc, const struct tg_reading *r);

/* Per partition, the last offset present at the start (-1: empty); *ends valid until
 * destroy. Returns the number of partitions (0: the topic does not exist). */
size_t tg_reconcile_ends(const struct tg_reconcile *rc, const int64_t **ends);

/* True when the reading was cut short: max_records; the cluster refused this reader
 * (TOPIC_/CLUSTER_AUTHORIZATION_FAILED: no READ on the topic), which gives it up at once;
 * or a partition's end offset stayed unknown (no leader) for a few attempts while the
 * cluster answered, and that partition was skipped. Each logged: waiting would hold
 * sending for ever. Records read in all. */
bool tg_reconcile_truncated(const struct tg_reconcile *rc);
uint64_t tg_reconcile_records_read(const struct tg_reconcile *rc);

/* Finished: frees everything. Still running: tells the thread to stop and returns at once
 * (the thread frees everything when it ends, after at most one blocking librdkafka call),
 * so a stop never waits on an unreachable cluster. NULL-safe. */
void tg_reconcile_destroy(struct tg_reconcile *rc);

#endif
