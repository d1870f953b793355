/*
 * egress_kafka.h - ships journal records to Kafka with librdkafka.
 *
 * An idempotent producer (acks=all): librdkafka retries internally and keeps per-partition
 * order across retries, so a record is either confirmed once, in order, or reported failed.
 * Records are keyed by device id and partitioned with murmur2_random (the Java client's
 * placement), timestamped with the device's event time, and carry content-type and
 * schema-version headers; dead letters go to the DLQ topic with their reason headers.
 *
 * The outcome of every accepted record comes back exactly once through the delivery
 * callback, on the thread that calls tg_egress_poll(): TG_OK when the cluster has it,
 * a retriable error (keep the record, send it again) or a permanent one (the cluster will
 * never take it: dead-letter or drop it).
 *
 * librdkafka's local queue is bounded by queue_max_kbytes / queue_max_messages (never its
 * 1 GiB default): when full, tg_egress_produce() says TG_ERR_FULL and the caller keeps the
 * record in its journal. Messages never time out locally (message.timeout.ms = 0): while
 * the cluster is away they wait in order instead of failing out of order.
 *
 * Not thread-safe: one owner thread (the pipeline thread). librdkafka's own threads only
 * log through tg_log, which is thread-safe.
 */
#ifndef TG_EGRESS_KAFKA_H
#define TG_EGRESS_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "segment.h"

struct tg_egress_opts {
    const char *brokers;        /* bootstrap.servers */
    const char *topic;          /* telemetry topic */
    const char *dlq_topic;      /* dead-letter topic */
    const char *client_id;
    const char *compression;    /* compression.codec: zstd, lz4, snappy, gzip, none */
    int compression_level;      /* compression.level: -1 = the codec's default */
    const char *content_type;   /* of telemetry values: application/json or application/cbor */
    int linger_ms;
    int batch_num_messages;
    int queue_max_kbytes;
    int queue_max_messages;     /* also the number of in-flight slots */
    int stats_interval_ms;      /* how often broker state is refreshed for tg_egress_up() */
    /* [kafka.rdkafka] pass-through: NULL-terminated array of key, value, key, value...
     * applied last, so it overrides everything above. */
    const char *const *rdkafka_conf;
};

/* Outcome of one record. rid and ts_ms are those given to tg_egress_produce(). */
typedef void (*tg_egress_delivery_fn)(void *ud, uint64_t rid, enum tg_jrecord_kind kind,
                                      int64_t ts_ms, tg_err result, const char *reason);

struct tg_egress;

/* Creates the producer. On a bad librdkafka property the error names it (e.g.
 * `[kafka.rdkafka] foo: No such configuration property: "foo"`). */
tg_err tg_egress_new(const struct tg_egress_opts *opts, tg_egress_delivery_fn fn, void *ud,
                     struct tg_egress **out, char *err, size_t errlen);

/* Checks opts as tg_egress_new() would (every librdkafka property, the pass-through ones
 * included) without creating a producer or touching the network: for --check-config. */
tg_err tg_egress_check_opts(const struct tg_egress_opts *opts, char *err, size_t errlen);

/* Stops at once: records not yet confirmed are reported through the delivery callback as
 * TG_ERR_UNAVAILABLE (retriable) before this returns. NULL-safe. */
void tg_egress_destroy(struct tg_egress *eg);

/* Hands one record to librdkafka (bytes are copied). TG_ERR_FULL: the local queue is full,
 * try later; a permanent error (e.g. TG_ERR_TOO_LARGE) means the record can never be sent.
 * No delivery callback follows an error return. */
tg_err tg_egress_produce(struct tg_egress *eg, const struct tg_jrecord *rec);

/* Serves delivery reports and broker state events, waiting up to timeout_ms for the first.
 * Returns the number of events served. */
int tg_egress_poll(struct tg_egress *eg, int timeout_ms);

/* A file descriptor that becomes readable when tg_egress_poll() has work, for poll(2). */
int tg_egress_fd(const struct tg_egress *eg);

/* Records handed to librdkafka and not yet reported. */
size_t tg_egress_in_flight(const struct tg_egress *eg);

/* Whether at least one broker of the cluster is connected (from librdkafka's statistics,
 * refreshed every stats_interval_ms, and from delivery outcomes as they arrive). */
bool tg_egress_up(const struct tg_egress *eg);

/* True once librdkafka raised a fatal error (e.g. the idempotent producer lost its epoch):
 * the instance must be destroyed and created again. */
bool tg_egress_fatal(const struct tg_egress *eg);

/* 0 while the topic of records of this kind takes records as far as known; else the Kafka
 * error code that said it is missing or not ours to write (UNKNOWN_TOPIC_OR_PART,
 * TOPIC_AUTHORIZATION_FAILED, ...). Set by a produce or delivery failing so (which then
 * reports TG_ERR_UNAVAILABLE), cleared when the cluster's metadata lists the topic again. A
 * probe thread asks the cluster about both topics at creation and every few seconds, so a
 * missing topic is known before the first record for it, and a created one is seen soon.
 * Any thread. */
int tg_egress_topic_error(const struct tg_egress *eg, enum tg_jrecord_kind kind);

/* The name of a code from tg_egress_topic_error() (librdkafka's, e.g. "UNKNOWN_TOPIC_OR_PART"). */
const char *tg_egress_error_name(int code);

/* Per partition of the telemetry topic, the highest offset Kafka confirmed to this
 * instance (-1: none yet). Returns the number of partitions *marks covers; valid until the
 * next tg_egress_poll() or destroy. Delivery reports come in offset order per partition, so
 * a record confirmed later lies above its partition's mark (reconcile_kafka.h). */
size_t tg_egress_confirmed_offsets(const struct tg_egress *eg, const int64_t **marks);

/* Waits up to timeout_ms for every in-flight record to be reported. TG_ERR_TIMEOUT when
 * some remain. */
tg_err tg_egress_flush(struct tg_egress *eg, int timeout_ms);

#endif
