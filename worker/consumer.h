/*
 * consumer.h - tidegate-worker's Kafka side: a consumer group member that feeds the engine and
 * commits its outputs, its state and its consumed offsets in Kafka transactions.
 *
 * One struct tg_consumer owns three librdkafka clients:
 *   - the group consumer (group [kafka] group_id, cooperative-sticky, read_committed, manual
 *     offsets) of the input topic;
 *   - a transactional producer (transactional.id "tidegate-worker-<instance_id>") that writes
 *     alerts, aggregates, the engine's dirty snapshots and one offset marker per partition,
 *     and commits the consumed offsets with them, every [kafka] commit_interval_ms;
 *   - a group-less "restorer" that reads a partition's snapshots back from the state topic
 *     when the partition is assigned (or after an aborted transaction).
 * See consumer_internal.h for how the parts split into files, and the README's worker
 * section for the guarantees.
 *
 * Threads: tg_consumer_run() runs on the calling thread (the worker's main loop) and owns the
 * engine and all three clients; rebalance callbacks run inside it. tg_consumer_healthy() may be
 * called from any thread (the metrics exporter's).
 */
#ifndef TG_WORKER_CONSUMER_H
#define TG_WORKER_CONSUMER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "engine.h"
#include "error.h"
#include "metrics.h"

struct tg_consumer;

/* Creates the clients from cfg (worker schema; instance_id as tg_worker_config_check() gave
 * it) and an engine over ec (borrowed, must outlive the consumer), registers the worker's
 * metrics in metrics, initialises transactions (fencing an earlier process with the same
 * instance id) and checks the topics (the state topic needs at least as many partitions as
 * the input topic). Nothing is consumed yet. On failure returns an error with a sentence in
 * err and *out NULL. */
tg_err tg_consumer_new(const struct tg_config *cfg, const char *instance_id,
                       const struct tg_engine_config *ec, struct tg_metrics *metrics,
                       struct tg_consumer **out, char *err, size_t errlen);

/* Joins the group and processes records until *stop becomes true; then commits the open
 * transaction and leaves the group cleanly (what it held moves to the other workers at once).
 * TG_OK after a clean stop; an error when the clients failed beyond repair. */
tg_err tg_consumer_run(struct tg_consumer *cs, atomic_bool *stop);

/* False with a one-line reason when the worker cannot do its job (its producer failed
 * fatally, the group was lost for longer than the session timeout). Any thread. */
bool tg_consumer_healthy(struct tg_consumer *cs, char *reason, size_t len);

/* Destroys the clients and the engine without committing anything. NULL is a no-op. */
void tg_consumer_destroy(struct tg_consumer *cs);

#endif
