/*
 * pipeline.h - the gateway's one entry point: raw messages in, Kafka records out.
 *
 * A front-end (today the MQTT subscriber, ingress_mqtt.c; later a Mosquitto plugin) offers
 * each received message with tg_pipeline_offer(). The message is copied into a bounded queue
 * and everything else happens on the pipeline's own thread, in this order for each message:
 *
 *   decode (codec.h) -> validate (validate.h) -> dedup (dedup.h) -> canonical record
 *   -> journal segment (segment.h, journal.h) -> Kafka (egress_kafka.h)
 *
 * A rejected payload becomes a dead-letter record with its reason; it is journaled and sent
 * like telemetry, to the DLQ topic. Records leave in arrival order (one FIFO across devices,
 * which keeps each device's order through outages, drains and restarts). A record is
 * forgotten only after Kafka confirmed it.
 *
 * Durability (journal.mode), with C = journal.commit_interval_ms:
 *   durable  every C ms, every record not yet confirmed by Kafka is committed to the
 *            journal (SQLite, fsynced). Records Kafka confirmed within C cost no write.
 *            A crash loses at most the records received in the last C ms.
 *   spill    records are committed only while Kafka is down or more than journal.memory_bytes
 *            wait unconfirmed; a crash loses what waited in memory (at most memory_bytes).
 *   SIGTERM (tg_pipeline_stop) loses nothing in either mode.
 *
 * Threads: tg_pipeline_offer() from ONE producer thread; the rest from the thread that made
 * the pipeline (main), except where noted.
 */
#ifndef TG_PIPELINE_H
#define TG_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ack.h"
#include "config.h"
#include "error.h"
#include "metrics.h"

struct tg_pipeline;

/* Builds the pipeline from a loaded gateway config: opens and checks the journal (a corrupt
 * file is moved aside and logged), restores the dedup window, finds the undelivered backlog
 * (sent again first, oldest first), creates the Kafka producer and registers the metrics.
 * Errors name the config key or file in err. */
tg_err tg_pipeline_new(const struct tg_config *cfg, struct tg_metrics *metrics,
                       struct tg_pipeline **out, char *err, size_t errlen);

/* The checks tg_pipeline_new() makes that need more than the schema (device keys file and
 * ranges, every librdkafka property), without opening the journal or touching the network:
 * for --check-config. Errors name file, line and key in err. */
tg_err tg_pipeline_check_config(const struct tg_config *cfg, char *err, size_t errlen);

/* Starts the pipeline thread. */
tg_err tg_pipeline_start(struct tg_pipeline *pl);

/* The entry point (producer thread): copies one message in. TG_ERR_FULL when there is no
 * room now (the queue is full, or the journal is at its cap with overflow = backpressure):
 * keep the message and offer it again later. Matches tg_ingress_sink_fn. */
tg_err tg_pipeline_offer(void *pl, const char *topic, size_t topic_len, const uint8_t *payload,
                         size_t payload_len, int64_t rx_ms);

/* The first step of a stop, before the producer (ingress) is stopped: from now on
 * tg_pipeline_offer() takes every message (the journal may pass its cap for them: they were
 * acknowledged to the broker, and refusing them would make the ingress's stop wait for room
 * that only Kafka can make), and the wait for Kafka in tg_pipeline_stop() ends timeout_ms
 * from now. Any thread. */
void tg_pipeline_begin_stop(struct tg_pipeline *pl, int64_t timeout_ms);

/* Cuts the wait for Kafka in tg_pipeline_stop() short (a second SIGTERM): what is not
 * confirmed is committed to the journal at once. Any thread. */
void tg_pipeline_hurry(struct tg_pipeline *pl);

/* Graceful stop; call after the producer stopped offering. Processes everything offered,
 * waits up to timeout_ms (counted from tg_pipeline_begin_stop() when that came first) for
 * Kafka to confirm what is in flight, commits everything not confirmed to the journal (also
 * in spill mode) with the dedup window, and joins the thread.
 * TG_OK, or TG_ERR_IO when the final commit failed (then the journal holds the state of the
 * previous commit). */
tg_err tg_pipeline_stop(struct tg_pipeline *pl, int64_t timeout_ms);

/* Frees (stopping first if needed, with a zero timeout). NULL-safe. */
void tg_pipeline_destroy(struct tg_pipeline *pl);

/* For /healthz (any thread): false while the journal cannot be written or a Kafka topic
 * (telemetry or dead letters) is missing or not writable by us; then reason (len bytes, may
 * be NULL when len is 0) says which. */
bool tg_pipeline_health(const struct tg_pipeline *pl, char *reason, size_t len);
bool tg_pipeline_healthy(const struct tg_pipeline *pl); /* tg_pipeline_health() without reason */

/* A liveness signal for a service watchdog (main.c: systemd's WATCHDOG=1 and STATUS=): fn is
 * called on the pipeline thread every interval_ms or so while the thread turns (idle, under
 * load and during the stop's wait for Kafka), with the backlog as it stands: records not yet
 * confirmed by Kafka, compressed bytes journaled, age of the oldest in ms (0: none), and
 * whether a Kafka broker is connected. A thread stuck anywhere stops calling it, which is the
 * point. fn must be quick and must not call into the pipeline. Set before tg_pipeline_start();
 * fn NULL: none. */
typedef void (*tg_pipeline_heartbeat_fn)(void *ud, uint64_t backlog_records,
                                         uint64_t journal_bytes, int64_t oldest_age_ms,
                                         bool kafka_up);
void tg_pipeline_set_heartbeat(struct tg_pipeline *pl, int64_t interval_ms,
                               tg_pipeline_heartbeat_fn fn, void *ud);

/* Durable acks (ack.h, [ack] enabled): where the pipeline thread publishes them, usually
 * the ingress's MQTT connection (tg_ingress_publish). Before tg_pipeline_start(). Without a
 * publisher, or with [ack] enabled = false, no ack is sent. */
void tg_pipeline_set_ack_publisher(struct tg_pipeline *pl, tg_ack_publish_fn fn, void *ud);

/* Set reload requests from a signal handler (async-signal-safe): the pipeline thread re-reads
 * the device keys file. */
void tg_pipeline_request_reload(struct tg_pipeline *pl);

#endif
