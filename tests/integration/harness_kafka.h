/*
 * harness_kafka.h - the second Kafka tier of the integration tests: a real Apache Kafka 4.x
 * broker (one KRaft node, broker and controller in one JVM) on free loopback ports, started
 * through tests/kafka/kafka-broker with the jars that scripts/install-deps fetched from Maven
 * Central. Unlike tidegate-devkafka (harness.h) it does not auto-create topics
 * (auto.create.topics.enable=false), compacts, keeps what retention says, runs transactions
 * and consumer groups for real, takes seconds to start and a few hundred MiB of memory.
 *
 * Threads, cleanup and errors as in harness.h: call from the test's main thread; the broker
 * is a harness child process (killed with the test, reaped by tg_harness_reap_all()), its
 * temp dir is kept for inspection when the test does not reach _destroy(); failures print why
 * ("harness: kafka: ...", with the broker's log) and return NULL or -1.
 *
 * Where the broker comes from: the launcher TG_KAFKA_BROKER (environment) or the source
 * tree's tests/kafka/kafka-broker (compiled in); the jars TG_KAFKA_LIB or the launcher's
 * default, <source>/build/kafka/lib. A missing JRE or missing jars fail the start with a
 * message that says to run scripts/install-deps: the real tier is never skipped silently.
 */
#ifndef TG_HARNESS_KAFKA_H
#define TG_HARNESS_KAFKA_H

#include <stdbool.h>

#include "harness.h"

/* Default partition count of the telemetry topic (and of telemetry.worker.state, whose
 * partitions follow telemetry's so that a worker's state moves with its input partition). */
#define TG_HARNESS_KAFKA_TELEMETRY_PARTITIONS 6

/* Flags for tg_harness_kafka_start(). */
#define TG_HARNESS_KAFKA_NO_TOPICS 0x1u /* create no topic (tests of missing topics): the
                                         * test creates what it wants with _create_topic() */

struct tg_harness_kafka;

/* Starts the broker in a fresh temp dir on two free loopback ports (clients, controller),
 * waits until it answers metadata with itself as a live broker, and, unless
 * TG_HARNESS_KAFKA_NO_TOPICS, creates tidegate's topics with the Admin API (replication 1):
 *   telemetry              telemetry_partitions (0: TG_HARNESS_KAFKA_TELEMETRY_PARTITIONS)
 *   telemetry.dlq          3
 *   telemetry.anomalies    6
 *   telemetry.agg.1m       6
 *   telemetry.worker.state telemetry's count, cleanup.policy=compact
 * and waits until every partition of them has a leader. Deadline 120 s in all (a JVM on two
 * busy cores); a port taken before the broker bound it is retried on new ports. NULL on
 * failure. Typical start: a few seconds. */
struct tg_harness_kafka *tg_harness_kafka_start(int telemetry_partitions, unsigned flags);

/* The same with broker properties of the test's own: extra_properties is NULL or lines of
 * server.properties ("log.cleaner.backoff.ms=500\n..."), appended after the launcher's (a
 * later line wins), kept for restarts. For what a topic config cannot set, e.g. how often the
 * log cleaner looks for work. */
struct tg_harness_kafka *tg_harness_kafka_start_with(int telemetry_partitions, unsigned flags,
                                                     const char *extra_properties);

/* "127.0.0.1:<port>" (the same across restarts). */
const char *tg_harness_kafka_bootstrap(const struct tg_harness_kafka *kf);
int tg_harness_kafka_port(const struct tg_harness_kafka *kf);
int tg_harness_kafka_controller_port(const struct tg_harness_kafka *kf);
/* The temp dir: server.properties, data/ (the log dirs), kafka.stderr (the broker's log,
 * appended to across restarts). */
const char *tg_harness_kafka_dir(const struct tg_harness_kafka *kf);
const char *tg_harness_kafka_log_path(const struct tg_harness_kafka *kf);
/* The broker's process while it runs, NULL while it is stopped. */
struct tg_harness_proc *tg_harness_kafka_proc(const struct tg_harness_kafka *kf);
bool tg_harness_kafka_running(struct tg_harness_kafka *kf);

/* Creates topic with partitions and replication factor 1; configs is NULL or a NULL-
 * terminated list of "key=value" topic configs (e.g. "cleanup.policy=compact",
 * "retention.ms=60000"). Waits until every partition has a leader (deadline 30 s). 0, or -1
 * (also when the topic exists). */
int tg_harness_kafka_create_topic(struct tg_harness_kafka *kf, const char *topic,
                                  int partitions, const char *const configs[]);

/* Partitions of topic as the broker's metadata says (once every one has a leader), or -1 at
 * once when the broker answers that it has no such topic, or after 10 s without an answer. */
int tg_harness_kafka_partitions(struct tg_harness_kafka *kf, const char *topic);

/* An outage the way operators cause one: SIGTERM, and wait (deadline 60 s, then SIGKILL)
 * for the JVM to exit after its controlled shutdown (logs flushed, clean-shutdown marker
 * written). Then the ports refuse connections. Returns 0 when it exited by itself, -1 if it
 * had to be killed or was not running. */
int tg_harness_kafka_stop(struct tg_harness_kafka *kf);

/* A crash: SIGKILL and reap. The next start recovers the logs. 0, or -1 if not running. */
int tg_harness_kafka_kill9(struct tg_harness_kafka *kf);

/* Stops the broker if it runs (as _stop), then starts it again on the SAME ports with the
 * same data dir (topics and records kept), and waits until it answers metadata and every
 * partition of the topics it had has a leader again (deadline 120 s). 0, or -1 (e.g. a
 * port was taken meanwhile; the log is printed). */
int tg_harness_kafka_restart(struct tg_harness_kafka *kf);

/* Stops the broker (SIGTERM, SIGKILL after 60 s) and removes its temp dir. NULL is a no-op. */
void tg_harness_kafka_destroy(struct tg_harness_kafka *kf);

#endif
