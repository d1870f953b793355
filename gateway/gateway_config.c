/*
 * gateway_config.c - the gateway's keys, defaults and bounds (see gateway_config.h).
 *
 * The defaults suit a mid-range board (a Raspberry Pi 4B); the files in boards/ move the
 * hardware-dependent ones (queue sizes, journal cap and mode, commit interval, codec,
 * connections) for the others.
 */
#include "gateway_config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ingress_topic.h"
#include "kafka_guard.h"
#include "log.h"
#include "metrics_http.h"
#include "validate.h"

static const char *const journal_modes[] = {"durable", "spill", NULL};
static const char *const overflow_policies[] = {"backpressure", "drop_oldest", "drop_newest",
                                                NULL};
static const char *const journal_codecs[] = {"zstd", "lz4", "none", NULL};
static const char *const kafka_formats[] = {"json", "cbor", NULL};
static const char *const kafka_codecs[] = {"zstd", "lz4", "snappy", "gzip", "none", NULL};

static const struct tg_config_key gateway_schema[] = {
    /* [gateway] */
    TG_CFG_STR("gateway", "id", "",
               "this gateway's name in every Kafka record (\"gateway\" field); empty: host name"),
    TG_CFG_MS("gateway", "shutdown_timeout_ms", "10000", 0, 600000,
              "on SIGTERM, how long (ms) to wait for in-flight Kafka deliveries; what is not "
              "confirmed by then stays in the journal for the next start"),
    TG_CFG_MS("gateway", "wake_coalesce_ms", "5", 0, 100,
              "after a message wakes the pipeline, how long (ms) it lets more arrive before "
              "taking them: fewer wake-ups (CPU per message) for at most this much latency"),
    /* [log] */
    TG_CFG_ENUM("log", "level", "info", tg_log_level_choices,
                "least severe level written to stderr"),
    TG_CFG_STR("log", "debug", "",
               "subsystems whose debug lines are written, comma-separated (mqtt, pipeline, "
               "journal, kafka, validate) or \"all\""),
    /* [mqtt] */
    TG_CFG_STR("mqtt", "host", "127.0.0.1", "MQTT broker host name or address"),
    TG_CFG_INT("mqtt", "port", "1883", 1, 65535, "MQTT broker TCP port"),
    TG_CFG_STR("mqtt", "client_id", "tidegate",
               "MQTT client id, stable across restarts so the broker keeps the session; with "
               "connections > 1, connection i uses <client_id>-<i>"),
    TG_CFG_STR("mqtt", "topic", "telemetry/+",
               "topic filter to subscribe; the device id is the topic's last level, so the only "
               "wildcard allowed is a '+' as the last level ('#' is refused); "
               "$share/<group>/<filter> is subscribed to as written, keeping that group"),
    TG_CFG_INT("mqtt", "qos", "1", 1, 2, "subscription QoS, 1 or 2: the broker holds what is not "
               "acknowledged (0 would lose what is in flight at a crash)"),
    TG_CFG_INT("mqtt", "connections", "1", 1, 64,
               "MQTT connections; above 1 they share one MQTT v5 shared subscription"),
    TG_CFG_STR("mqtt", "share_group", "tidegate",
               "shared subscription group ($share/<group>/<topic>) when connections > 1 and "
               "the topic names no group of its own"),
    TG_CFG_SIZE("mqtt", "max_packet_bytes", "2M", TG_KIB(64), TG_MIB(256),
                "MQTT 5 Maximum Packet Size announced in CONNECT (bytes): the broker drops "
                "larger messages instead of sending them; at least validate.max_payload_bytes "
                "+ 2K"),
    TG_CFG_STR("mqtt", "username", "", "MQTT user name; empty: none"),
    TG_CFG_STR("mqtt", "password", "", "MQTT password; empty: none"),
    TG_CFG_STR("mqtt", "tls_ca", "", "CA certificate file (PEM) enabling TLS; empty: plain TCP"),
    TG_CFG_STR("mqtt", "tls_cert", "", "client certificate file (PEM) for TLS; empty: none"),
    TG_CFG_STR("mqtt", "tls_key", "", "client private key file (PEM) for TLS; empty: none"),
    TG_CFG_MS("mqtt", "keepalive_ms", "30000", 5000, 3600000,
              "MQTT keep-alive interval (ms, whole seconds on the wire)"),
    TG_CFG_MS("mqtt", "session_expiry_ms", "604800000", 0, INT64_C(4294967295000),
              "how long (ms) the broker keeps the session and its queued messages while the "
              "gateway is away"),
    TG_CFG_MS("mqtt", "reconnect_min_ms", "500", 10, 600000,
              "first reconnect delay (ms); doubles per failure, with jitter"),
    TG_CFG_MS("mqtt", "reconnect_max_ms", "30000", 10, 3600000, "largest reconnect delay (ms)"),
    TG_CFG_SIZE("mqtt", "queue_bytes", "512K", TG_KIB(64), TG_GIB(1),
                "hand-off queue between the MQTT thread and the pipeline (bytes); when full, "
                "the gateway stops reading from the broker"),
    /* [kafka] */
    TG_CFG_STR("kafka", "brokers", "127.0.0.1:9092", "bootstrap brokers, host:port,..."),
    TG_CFG_STR("kafka", "topic", "telemetry", "topic for telemetry records"),
    TG_CFG_STR("kafka", "dlq_topic", "telemetry.dlq", "topic for rejected payloads"),
    TG_CFG_STR("kafka", "client_id", "tidegate", "Kafka client.id"),
    TG_CFG_ENUM("kafka", "compression", "zstd", kafka_codecs, "batch compression codec"),
    TG_CFG_INT("kafka", "compression_level", "1", -1, 22,
               "codec level (-1: the codec's own default); 1 is the fastest and needs the least "
               "memory, which matters more on a board than a few percent of ratio"),
    TG_CFG_ENUM("kafka", "format", "json", kafka_formats,
                "encoding of the canonical record in Kafka values"),
    TG_CFG_MS("kafka", "linger_ms", "20", 0, 60000,
              "how long (ms) librdkafka waits to fill a batch"),
    TG_CFG_INT("kafka", "batch_num_messages", "10000", 1, 1000000,
               "most records in one batch"),
    TG_CFG_INT("kafka", "queue_max_kbytes", "8192", 64, 2097151,
               "librdkafka's local queue (KiB): records handed over and not yet confirmed"),
    TG_CFG_INT("kafka", "queue_max_messages", "50000", 100, 10000000,
               "most records handed to librdkafka and not yet confirmed"),
    TG_CFG_MS("kafka", "stats_interval_ms", "1000", 100, 60000,
              "how often (ms) broker connection state is refreshed (tidegate_kafka_up)"),
    TG_CFG_BOOL("kafka", "reconcile_on_start", "true",
                "at start, read back from the telemetry topic what the last run sent after "
                "its last saved point, and send nothing before: readings Kafka confirmed just "
                "before a kill -9 are then neither sent again from the journal nor taken "
                "again from a node's resend (no duplicates)"),
    TG_CFG_PASSTHROUGH("kafka.rdkafka",
                       "librdkafka properties (CONFIGURATION.md), applied last: SASL, SSL, "
                       "...; those that would switch off a guarantee are refused (see "
                       "\"Configuration refusals\")"),
    /* [journal] */
    TG_CFG_STR("journal", "path", "/var/lib/tidegate/journal.db",
               "SQLite journal file; must not be empty. <path>.lock beside it keeps a second "
               "gateway off the same journal"),
    TG_CFG_ENUM("journal", "mode", "durable", journal_modes,
                "durable: every reading not yet confirmed by Kafka is committed to disk each "
                "commit interval; spill: only when Kafka is behind or down"),
    TG_CFG_SIZE("journal", "max_bytes", "256M", TG_KIB(64), TG_GIB(64),
                "cap on compressed journal data plus the SQLite WAL's share (an eighth, at most "
                "4 MiB) (bytes); at the cap the overflow policy applies"),
    TG_CFG_ENUM("journal", "overflow", "backpressure", overflow_policies,
                "at the cap: stop reading MQTT (the broker holds messages), or drop the oldest "
                "or the newest readings (counted)"),
    TG_CFG_MS("journal", "commit_interval_ms", "1000", 10, 60000,
              "group-commit interval (ms): what kill -9 or power loss can lose at most"),
    TG_CFG_ENUM("journal", "codec", "zstd", journal_codecs, "segment compression"),
    TG_CFG_INT("journal", "zstd_level", "3", 1, 19, "zstd level for segments"),
    TG_CFG_SIZE("journal", "segment_bytes", "1M", TG_KIB(16), TG_MIB(64),
                "most uncompressed bytes in one journal segment"),
    TG_CFG_SIZE("journal", "memory_bytes", "4M", TG_KIB(256), TG_GIB(4),
                "readings held in memory (uncompressed bytes) before journaled ones are "
                "evicted and read back from disk as the backlog drains; in spill mode also "
                "how much may wait in memory unjournaled"),
    TG_CFG_INT("journal", "dedup_devices", "100000", 1, 16777216,
               "devices whose recent (boot, seq) the dedup window remembers"),
    TG_CFG_MS("journal", "dedup_save_interval_ms", "10000", 100, 3600000,
              "how often (ms) the dedup window is saved in the journal"),
    TG_CFG_MS("journal", "dedup_epoch_grace_ms", "10000", 0, 86400000,
              "a node whose boot counter went back (re-flashed) is heard again once its "
              "readings are this much (ms, device time) newer than its old boot's newest; "
              "until then they count as out of the dedup window"),
    /* [validate] */
    TG_CFG_SIZE("validate", "max_payload_bytes", "4096", 64, TG_MIB(1),
                "largest payload accepted (bytes); larger ones are dead-lettered"),
    TG_CFG_INT("validate", "max_metrics", "64", 1, 4096, "most metrics in one reading"),
    TG_CFG_INT("validate", "max_readings", "64", 1, 4096, "most readings in one SenML pack"),
    TG_VALIDATE_CONFIG_KEYS,
    /* [ack] (durable acknowledgements to nodes, ack.h) */
    TG_CFG_BOOL("ack", "enabled", "false",
                "publish to each device which of its readings are durable (journal commit or "
                "Kafka confirmation), so nodes with durable acks keep them until then"),
    TG_CFG_STR("ack", "topic_prefix", "ack/",
               "acks go to <topic_prefix><device_id>; no wildcards"),
    TG_CFG_MS("ack", "min_interval_ms", "5000", 0, 60000,
              "least time (ms) between two acks to one device (they are cumulative: a later "
              "one says everything an earlier one said); each ack costs the broker about what "
              "a reading does, so at 1 Hz this keeps acks to a fifth of the traffic; nodes' "
              "ack_timeout_ms must be well above it"),
    TG_CFG_INT("ack", "max_devices", "100000", 1, 16777216,
               "devices followed (about 150 bytes each); readings of further devices are "
               "never acknowledged (tidegate_ack_untracked_total)"),
    /* [metrics] */
    TG_CFG_STR("metrics", "listen", "127.0.0.1:9464",
               "address:port of the Prometheus endpoint (/metrics, /healthz); empty: off"),
};

struct tg_config *tg_gateway_config_new(void)
{
    return tg_config_new(gateway_schema, sizeof gateway_schema / sizeof gateway_schema[0]);
}

/* Room for the topic and the PUBLISH header next to a payload at the limit. */
#define PACKET_OVERHEAD_BYTES 2048

/* Problems found by tg_gateway_config_check, one per line, in the caller's buffer. */
struct problems {
    char *err;
    size_t errlen, used;
};

static void add_problem(struct problems *pb, const char *origin, const char *section,
                        const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void add_problem(struct problems *pb, const char *origin, const char *section,
                        const char *key, const char *fmt, ...)
{
    int n = snprintf(pb->err + pb->used, pb->errlen - pb->used, "%s%s: [%s] %s: ",
                     pb->used ? "\n" : "", origin, section, key);
    if (n > 0 && (size_t)n < pb->errlen - pb->used)
        pb->used += (size_t)n;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(pb->err + pb->used, pb->errlen - pb->used, fmt, ap);
    va_end(ap);
    if (n > 0)
        pb->used = (size_t)n < pb->errlen - pb->used ? pb->used + (size_t)n : pb->errlen - 1;
}

struct rdkafka_ctx {
    struct problems *pb;
    tg_err nomem;
};

/* One [kafka.rdkafka] pair: known to librdkafka, and no guarantee switched off. */
static tg_err check_rdkafka_pair(void *arg, const char *key, const char *value,
                                 const char *origin)
{
    struct rdkafka_ctx *ctx = arg;
    char why[1024];
    tg_err e = tg_kafka_guard_check(key, value, why, sizeof why);
    if (e == TG_ERR_NOMEM)
        ctx->nomem = e;
    else if (e != TG_OK)
        add_problem(ctx->pb, origin, "kafka.rdkafka",
                    strlen(key) <= 48 ? key : "(a name too long to be a property)", "%s", why);
    return TG_OK; /* on to the next pair: every problem in one go */
}

/* An empty or blank list, or an entry with nothing in it ("a:9092,,b:9092"). */
static bool brokers_ok(const char *brokers)
{
    const char *p = brokers;
    do {
        size_t len = strcspn(p, ",");
        bool blank = true;
        for (size_t i = 0; i < len && blank; i++)
            blank = isspace((unsigned char)p[i]);
        if (blank)
            return false;
        p += len;
    } while (*p++ == ',');
    return true;
}

/* [mqtt] share_group with several connections: a valid group name when the topic names no
 * group of its own; when it does ("$share/<group>/..."), the topic's group is the one used,
 * and a share_group set to another name is a contradiction the user should settle. */
static void check_share_group(const struct tg_config *cfg, struct problems *pb,
                              const char *topic)
{
    if (tg_config_get_int(cfg, "mqtt", "connections") <= 1)
        return;
    const char *share_group = tg_config_get_str(cfg, "mqtt", "share_group");
    const char *origin = tg_config_origin(cfg, "mqtt", "share_group");
    const char *own;
    size_t own_len;
    (void)tg_ingress_topic_filter(topic, &own, &own_len);
    if (!own) {
        if (!tg_ingress_share_group_ok(share_group, strlen(share_group)))
            add_problem(pb, origin, "mqtt", "share_group",
                        "\"%s\" cannot name a shared subscription group (needed with "
                        "connections > 1): expected a non-empty name without '/', '+' or '#'",
                        share_group);
    } else if (strcmp(origin, "default") != 0 &&
               (strlen(share_group) != own_len || strncmp(share_group, own, own_len) != 0)) {
        add_problem(pb, origin, "mqtt", "share_group",
                    "\"%s\" contradicts the group \"%.*s\" of [mqtt] topic \"%s\" (%s): the "
                    "connections subscribe to the topic as written; remove share_group, or "
                    "write the topic without \"$share/<group>/\"",
                    share_group, (int)own_len, own, topic,
                    tg_config_origin(cfg, "mqtt", "topic"));
    }
}

tg_err tg_gateway_config_check(const struct tg_config *cfg, char *err, size_t errlen)
{
    struct problems pb = {.err = err, .errlen = errlen};
    err[0] = '\0';
#define PROBLEM(section, key, ...) \
    add_problem(&pb, tg_config_origin(cfg, section, key), section, key, __VA_ARGS__)

    if (!*tg_config_get_str(cfg, "journal", "path"))
        PROBLEM("journal", "path",
                "must not be empty: SQLite would use a temporary database and nothing would "
                "survive a restart");
    char why[512];
    const char *mqtt_topic = tg_config_get_str(cfg, "mqtt", "topic");
    if (tg_ingress_topic_check(mqtt_topic, why, sizeof why) != TG_OK)
        PROBLEM("mqtt", "topic", "%s", why);
    else
        check_share_group(cfg, &pb, mqtt_topic);
    uint64_t payload = tg_config_get_size(cfg, "validate", "max_payload_bytes");
    uint64_t packet = tg_config_get_size(cfg, "mqtt", "max_packet_bytes");
    if (packet < payload + PACKET_OVERHEAD_BYTES)
        PROBLEM("mqtt", "max_packet_bytes",
                "expected at least validate.max_payload_bytes + %d (%llu), got %llu: the broker "
                "would drop payloads the gateway accepts",
                PACKET_OVERHEAD_BYTES, (unsigned long long)(payload + PACKET_OVERHEAD_BYTES),
                (unsigned long long)packet);

    if (!brokers_ok(tg_config_get_str(cfg, "kafka", "brokers")))
        PROBLEM("kafka", "brokers", "expected host:port[,host:port...], got an empty list or "
                                    "an empty entry");
    const char *topic = tg_config_get_str(cfg, "kafka", "topic");
    const char *dlq = tg_config_get_str(cfg, "kafka", "dlq_topic");
    if (!*topic)
        PROBLEM("kafka", "topic", "expected a topic name, got nothing");
    if (!*dlq)
        PROBLEM("kafka", "dlq_topic", "expected a topic name, got nothing");
    else if (strcmp(topic, dlq) == 0)
        PROBLEM("kafka", "dlq_topic", "must differ from [kafka] topic: dead letters (raw "
                                      "payloads) would be mixed into the telemetry stream");

    const char *listen = tg_config_get_str(cfg, "metrics", "listen");
    if (*listen && !tg_metrics_http_check_listen(listen, why, sizeof why))
        PROBLEM("metrics", "listen", "%s", why);

    struct rdkafka_ctx ctx = {.pb = &pb, .nomem = TG_OK};
    (void)tg_config_foreach_pair(cfg, "kafka.rdkafka", check_rdkafka_pair, &ctx);
    if (ctx.nomem != TG_OK)
        return ctx.nomem;

    const char *ack_prefix = tg_config_get_str(cfg, "ack", "topic_prefix");
    if (!*ack_prefix || strpbrk(ack_prefix, "+#") || strlen(ack_prefix) > 128)
        PROBLEM("ack", "topic_prefix",
                "expected a topic prefix of 1 to 128 bytes without '+' or '#', got \"%s\"",
                ack_prefix);
#undef PROBLEM
    return pb.used ? TG_ERR_CONFIG : TG_OK;
}
