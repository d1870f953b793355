/*
 * worker_config.c - the worker's keys, defaults and bounds (see worker_config.h).
 *
 * The schema is the worker's table followed by the engine's, concatenated once into a static
 * array: tg_config_new() borrows its schema for the config's lifetime.
 */
#include "worker_config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"
#include "record.h"

static const char *const offset_resets[] = {"earliest", "latest", NULL};
static const char *const kafka_codecs[] = {"zstd", "lz4", "snappy", "gzip", "none", NULL};

static const struct tg_config_key worker_schema[] = {
    /* [worker] */
    TG_CFG_STR("worker", "instance_id", "",
               "this worker's stable name, [A-Za-z0-9_.-]{1,64}; its transactional.id is "
               "tidegate-worker-<instance_id>, so two running workers must never share it; "
               "empty: the host name"),
    TG_CFG_MS("worker", "shutdown_timeout_ms", "10000", 100, 600000,
              "on SIGTERM, how long (ms) committing the last transaction and leaving the group "
              "may take"),
    TG_CFG_MS("worker", "sweep_interval_ms", "1000", 10, 60000,
              "how often (ms, wall clock) series are swept for silence"),
    TG_CFG_MS("worker", "snapshot_interval_ms", "10000", 0, 3600000,
              "how often (ms) a partition's changed series are written to the state topic (a "
              "checkpoint; also on revoke and on SIGTERM); a partition that moves replays the "
              "records since its last checkpoint with their outputs suppressed. 0: every "
              "transaction"),
    TG_CFG_INT("worker", "checkpoint_max_records", "20000", 1, 100000000,
               "most snapshot records one transaction carries; a partition's checkpoint with "
               "more (a flood of new series) is spread over several transactions of its own, "
               "so no transaction outgrows transaction_timeout_ms or the producer's queue"),
    TG_CFG_SIZE("worker", "checkpoint_max_bytes", "16M", 1, TG_GIB(1),
                "most key and value bytes of snapshot records one transaction of a spread "
                "checkpoint carries"),
    TG_CFG_MS("worker", "stall_after_ms", "2000", 100, 600000,
              "a partition with no record for this long (ms) is stalled: its devices' quiet "
              "time stops until records flow again, so an upstream outage is not silence; keep "
              "it below (silence_factor - 1) x the shortest device period. The same span of "
              "event time with no record of a partition is a hole in its data, not silence "
              "of its devices"),
    TG_CFG_MS("worker", "max_future_ms", "3600000", 0, INT64_C(31536000000),
              "a record whose event time is more than this (ms) ahead of the worker's clock is "
              "refused (records_invalid_total{reason=\"clock_skew\"}): one record dated years "
              "ahead would otherwise move its partition's watermark there, making every later "
              "reading late and evicting every series of the partition as idle. 0: no limit"),
    /* [log] */
    TG_CFG_ENUM("log", "level", "info", tg_log_level_choices,
                "least severe level written to stderr"),
    TG_CFG_STR("log", "debug", "",
               "subsystems whose debug lines are written, comma-separated (consumer, txn, "
               "restore) or \"all\""),
    /* [kafka] */
    TG_CFG_STR("kafka", "brokers", "127.0.0.1:9092", "bootstrap brokers, host:port,..."),
    TG_CFG_STR("kafka", "group_id", "tidegate-anomaly",
               "consumer group: every worker of one deployment uses the same"),
    TG_CFG_STR("kafka", "client_id", "tidegate-worker", "Kafka client.id"),
    TG_CFG_STR("kafka", "input_topic", "telemetry", "topic of canonical telemetry records"),
    TG_CFG_STR("kafka", "alerts_topic", "telemetry.anomalies", "topic for alerts"),
    TG_CFG_STR("kafka", "aggregates_topic", "telemetry.agg.1m", "topic for window aggregates"),
    TG_CFG_STR("kafka", "state_topic", "telemetry.worker.state",
               "compacted topic of series snapshots; needs at least as many partitions as "
               "input_topic (partition p holds the state of input partition p)"),
    TG_CFG_MS("kafka", "commit_interval_ms", "100", 10, 60000,
              "how often (ms) a transaction commits outputs, snapshots and offsets: the "
              "latency of outputs, and what an abort re-processes"),
    TG_CFG_MS("kafka", "transaction_timeout_ms", "10000", 1000, 900000,
              "transaction.timeout.ms: how long (ms) the cluster waits before aborting the "
              "open transaction of a worker that died; partitions it held resume after that"),
    TG_CFG_MS("kafka", "session_timeout_ms", "10000", 1000, 3600000,
              "session.timeout.ms: how long (ms) the group waits for a silent worker before "
              "moving its partitions (a real cluster refuses less than its "
              "group.min.session.timeout.ms, 6000 by default)"),
    TG_CFG_MS("kafka", "restore_timeout_ms", "30000", 1000, 3600000,
              "how long (ms) restoring a partition's state may wait for an unfinished "
              "transaction on the state topic to be resolved before going on with what is "
              "committed"),
    TG_CFG_ENUM("kafka", "auto_offset_reset", "earliest", offset_resets,
                "where a partition with no committed offset and no snapshot starts"),
    TG_CFG_ENUM("kafka", "compression", "lz4", kafka_codecs,
                "compression of alerts, aggregates and snapshots"),
    TG_CFG_MS("kafka", "linger_ms", "5", 0, 1000,
              "how long (ms) the producer waits to fill a batch; below commit_interval_ms"),
    TG_CFG_PASSTHROUGH("kafka.rdkafka",
                       "librdkafka properties (CONFIGURATION.md) for all three clients, applied "
                       "last: SASL, SSL, ..."),
    /* [metrics] */
    TG_CFG_STR("metrics", "listen", "127.0.0.1:9465",
               "address:port of the Prometheus endpoint (/metrics, /healthz); empty: off"),
};

static struct tg_config_key *schema;
static size_t schema_len;
static pthread_once_t schema_once = PTHREAD_ONCE_INIT;

/* Held for the life of the process (every config borrows it), so never freed. */
static void build_schema(void)
{
    size_t n_engine = 0;
    const struct tg_config_key *engine = tg_engine_config_keys(&n_engine);
    size_t n_own = sizeof worker_schema / sizeof worker_schema[0];
    schema = malloc((n_own + n_engine) * sizeof *schema);
    if (!schema)
        return;
    memcpy(schema, worker_schema, sizeof worker_schema);
    if (n_engine)
        memcpy(schema + n_own, engine, n_engine * sizeof *schema);
    schema_len = n_own + n_engine;
}

const struct tg_config_key *tg_worker_config_schema(size_t *n)
{
    pthread_once(&schema_once, build_schema);
    *n = schema_len;
    return schema;
}

struct tg_config *tg_worker_config_new(void)
{
    pthread_once(&schema_once, build_schema);
    if (!schema)
        return NULL;
    return tg_config_new(schema, schema_len);
}

tg_err tg_worker_config_check(const struct tg_config *cfg, char *instance_id, size_t id_size,
                              char *err, size_t errlen)
{
    size_t used = 0;
    err[0] = '\0';
#define PROBLEM(sec, key, ...)                                                                 \
    do {                                                                                       \
        if (used < errlen) {                                                                   \
            int n_ = snprintf(err + used, errlen - used, "%s: [%s] %s: ",                     \
                              tg_config_origin(cfg, sec, key), sec, key);                      \
            if (n_ > 0 && (size_t)n_ < errlen - used) {                                        \
                used += (size_t)n_;                                                            \
                n_ = snprintf(err + used, errlen - used, __VA_ARGS__);                         \
                used += n_ > 0 ? (size_t)n_ : 0;                                               \
                if (used < errlen - 1) {                                                       \
                    err[used++] = '\n';                                                        \
                    err[used] = '\0';                                                          \
                }                                                                              \
            }                                                                                  \
            if (used >= errlen)                                                                \
                used = errlen - 1;                                                             \
        }                                                                                      \
    } while (0)

    const char *id = tg_config_get_str(cfg, "worker", "instance_id");
    char host[256] = "";
    if (!*id) {
        if (gethostname(host, sizeof host - 1) != 0)
            host[0] = '\0';
        id = host;
    }
    if (!tg_device_id_valid(id, strlen(id)))
        PROBLEM("worker", "instance_id",
                "expected [A-Za-z0-9_.-]{1,64} (the host name when empty), got \"%s\"", id);
    else
        snprintf(instance_id, id_size, "%s", id);

    static const char *const topics[] = {"input_topic", "alerts_topic", "aggregates_topic",
                                         "state_topic"};
    for (size_t i = 0; i < 4; i++) {
        const char *ti = tg_config_get_str(cfg, "kafka", topics[i]);
        if (!*ti) {
            PROBLEM("kafka", topics[i], "expected a topic name, got nothing");
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(ti, tg_config_get_str(cfg, "kafka", topics[j])) == 0)
                PROBLEM("kafka", topics[i], "\"%s\" is also [kafka] %s", ti, topics[j]);
    }
    if (!*tg_config_get_str(cfg, "kafka", "group_id"))
        PROBLEM("kafka", "group_id", "expected a consumer group name, got nothing");
    if (tg_config_get_ms(cfg, "kafka", "linger_ms") >=
        tg_config_get_ms(cfg, "kafka", "commit_interval_ms"))
        PROBLEM("kafka", "linger_ms", "expected less than [kafka] commit_interval_ms (%lld)",
                (long long)tg_config_get_ms(cfg, "kafka", "commit_interval_ms"));
#undef PROBLEM
    return used ? TG_ERR_CONFIG : TG_OK;
}
