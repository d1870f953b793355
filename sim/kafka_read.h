/*
 * kafka_read.h - what the simulator's two Kafka readers share: `tidegate-sim audit`
 * (audit_kafka.c, the telemetry and DLQ topics) and `tidegate-sim score` (score_cmd.c, the
 * worker's alerts). Both read topics from the start by assigning every partition themselves,
 * commit nothing, and know where a partition ends by its high watermark.
 *
 * Messages go to stderr, each beginning with the command's name (prog). Threads: the
 * command's main thread.
 */
#ifndef TG_SIM_KAFKA_READ_H
#define TG_SIM_KAFKA_READ_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

/* A consumer of brokers with group.id and client.id `name` that commits no offset and stores
 * none (it leaves nothing in the cluster beyond an unused group id), reports the end of each
 * partition (enable.partition.eof), starts where nothing is stored at the earliest offset and
 * logs only errors of its own; extra: more "key", "value" pairs (NULL-terminated, may be
 * NULL). error_cb and opaque go to the configuration when not NULL. Its poll queue is the
 * consumer's (rd_kafka_consumer_poll). NULL when a setting or the handle fails (said why). */
rd_kafka_t *tg_sim_kafka_consumer_new(const char *prog, const char *brokers, const char *name,
                                      const char *const *extra,
                                      void (*error_cb)(rd_kafka_t *rk, int err,
                                                       const char *reason, void *opaque),
                                      void *opaque);

/* The partition count of topic (metadata, waiting up to timeout_ms); 0 when the cluster says
 * the topic does not exist (the caller says what that means), -1 on any other error (said
 * why). */
int tg_sim_kafka_partitions(rd_kafka_t *rk, const char *prog, const char *topic,
                            int timeout_ms);

/* The low and high watermarks of partitions 0 .. n-1 of topic, each asked with timeout_ms
 * (a read_committed consumer is given the last stable offset as the high one). A partition
 * whose query fails gets -1 in lo[p] and hi[p] (lo may be NULL); the first error is returned,
 * with its partition in *failed when failed is not NULL, and with stop_at_error the later
 * partitions are not asked (their entries are left as they were). RD_KAFKA_RESP_ERR_NO_ERROR
 * when every partition answered. */
rd_kafka_resp_err_t tg_sim_kafka_watermarks(rd_kafka_t *rk, const char *topic, int n,
                                            int timeout_ms, bool stop_at_error, int64_t *lo,
                                            int64_t *hi, int *failed);

#endif
