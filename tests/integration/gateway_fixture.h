/*
 * gateway_fixture.h - the tidegate daemon under test, with what surrounds it in the field: a
 * Mosquitto broker and a Kafka cluster, an MQTT publisher of device readings, a Kafka consumer
 * that reads back what the gateway delivered, and a scraper of the gateway's /metrics. The
 * guarantee tests (test_gw_*.c) are written against these.
 *
 * Kafka comes in two tiers (README, "Two Kafka tiers"), chosen by tg_gw_opts.kafka_tier or,
 * when that is TG_GW_KAFKA_ENV, by the environment variable TG_KAFKA_TIER=dev|real (unset:
 * dev), so that CMake can register one test program twice:
 *   dev   tidegate-devkafka (harness.h): 3 brokers, telemetry with 12 partitions, outages by
 *         closing every broker's listener inside the running process; starts in milliseconds;
 *   real  an Apache Kafka 4.x broker (harness_kafka.h): one KRaft node, telemetry with 6
 *         partitions and the other topics created up front (no auto-creation), outages by
 *         stopping the broker process (SIGTERM) and starting it again on the same port.
 * Tests written against tg_gw_bootstrap(), tg_gw_kafka_outage_begin()/_end() and
 * tg_gw_telemetry_partitions() run on both; tg_gw_devkafka() and tg_gw_kafka() reach the
 * tier-specific controls (each NULL in the other tier).
 *
 * The daemon is configured through a generated INI file in the fixture's temp dir (free
 * ports, the journal in the temp dir, a short commit interval, Kafka linger 5 ms) plus any
 * number of `--set section.key=value` overrides from the test.
 *
 * Threads: everything here is called from the test's main thread (harness.h: children must
 * be started by it), except what the publisher runs on its own threads (its libmosquitto
 * loop, and the thread that publishes a plan in the background).
 *
 * Failures: functions print why to stderr (prefix "gw-fixture: ", with the tail of the
 * daemon's log where that helps) and return NULL, false or -1; tests assert on the result.
 * After a failed test, tg_gw_reap_all() from the cmocka teardown stops background publishers
 * and every child process.
 */
#ifndef TG_GATEWAY_FIXTURE_H
#define TG_GATEWAY_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "harness_kafka.h"
#include "record.h" /* TG_DEVICE_ID_MAX */

/* Topics of both tiers' default clusters. */
#define TG_GW_TOPIC "telemetry"
#define TG_GW_DLQ_TOPIC "telemetry.dlq"
#define TG_GW_GATEWAY_ID "gw-test"

/* ------------------------------------------------------------------------------------------
 * Kafka's partitioner, written from the Java client's definition (Utils.murmur2 and
 * toPositive(murmur2(key)) % partitions): the independent reference for placement.
 */
int32_t tg_gw_java_murmur2(const void *data, size_t len);
int tg_gw_java_partition(const char *key, int partitions);

/* ------------------------------------------------------------------------------------------
 * The fixture: Mosquitto + devkafka + tidegate
 */

enum tg_gw_kafka_tier {
    TG_GW_KAFKA_ENV = 0, /* TG_KAFKA_TIER from the environment ("dev" when unset) */
    TG_GW_KAFKA_DEV,     /* tidegate-devkafka */
    TG_GW_KAFKA_REAL,    /* Apache Kafka (harness_kafka.h) */
};

/* How tidegate runs (README, "In the broker"): chosen by tg_gw_opts.mode or, when that is
 * TG_GW_MODE_ENV, by the environment variable TG_GW_MODE=daemon|plugin (unset: daemon), so
 * that CMake registers one test program in both modes (<test>_plugin).
 *   daemon  the tidegate process, subscribed to the fixture's Mosquitto;
 *   plugin  Mosquitto loading tidegate_mosq.so (path in TG_PLUGIN_PATH) with the same INI
 *           (plugin_opt_config) and the test's sets (plugin_opt_set). "tidegate" below is then
 *           the broker process: tg_gw_tidegate_start/kill9/term act on Mosquitto, and
 *           tg_gw_log_path() is the broker's log. TG_PLUGIN_PRELOAD, when set, becomes the
 *           broker's LD_PRELOAD (an ASan-built plugin in an uninstrumented broker). */
enum tg_gw_mode {
    TG_GW_MODE_ENV = 0,
    TG_GW_MODE_DAEMON,
    TG_GW_MODE_PLUGIN,
};

struct tg_gw_opts {
    enum tg_gw_kafka_tier kafka_tier;
    enum tg_gw_mode mode;
    unsigned mqtt_flags;          /* tg_harness_mosquitto_start() flags, e.g. persistence */
    const char *mqtt_extra_conf;  /* extra mosquitto.conf lines; NULL: a queue large enough
                                   * that the broker never drops what the gateway has not
                                   * taken yet ("max_queued_messages 1000000") */
    int connections;              /* mqtt.connections; 0: 1 */
    int commit_interval_ms;       /* journal.commit_interval_ms; 0: 200 */
    const char *extra_ini;        /* appended to the generated INI (sections it has not) */
    const char *const *sets;      /* NULL-terminated "section.key=value" for --set, or NULL */
    bool ready_unhealthy;         /* ready without /healthz answering 200 (any answer will
                                   * do): for tests of what makes it answer 503 */
};

struct tg_gw;

/* Starts Mosquitto, the Kafka tier (devkafka: 3 brokers, default topics; real: one broker,
 * tidegate's topics) and tidegate, and waits until the daemon is ready (tg_gw_ready()). NULL
 * on failure, also for a TG_KAFKA_TIER that is neither dev nor real. opts may be NULL. */
struct tg_gw *tg_gw_new(const struct tg_gw_opts *opts);

/* Stops tidegate (SIGTERM), Kafka and Mosquitto and removes the temp dir. NULL is a no-op. */
void tg_gw_destroy(struct tg_gw *gw);

/* The tier this fixture runs (TG_GW_KAFKA_DEV or TG_GW_KAFKA_REAL), and its name. */
enum tg_gw_kafka_tier tg_gw_kafka_tier(const struct tg_gw *gw);
const char *tg_gw_kafka_tier_name(const struct tg_gw *gw); /* "dev" or "real" */

/* The mode this fixture runs (TG_GW_MODE_DAEMON or TG_GW_MODE_PLUGIN). */
enum tg_gw_mode tg_gw_mode(const struct tg_gw *gw);
bool tg_gw_plugin(const struct tg_gw *gw); /* tg_gw_mode() == TG_GW_MODE_PLUGIN */

/* Partitions the tier's cluster gave the telemetry topic: the count placement is checked
 * against (devkafka 12, real TG_HARNESS_KAFKA_TELEMETRY_PARTITIONS). */
int tg_gw_telemetry_partitions(const struct tg_gw *gw);

/* A whole-cluster outage. dev: every devkafka broker stops listening (the process lives on);
 * real: the broker process is stopped with SIGTERM (its controlled shutdown). Returns 0 once
 * the bootstrap port refuses connections, else -1. */
int tg_gw_kafka_outage_begin(struct tg_gw *gw);

/* The end of it. dev: the brokers listen again; real: the broker process starts again on the
 * same port with the same data, and is back when it answers metadata with every partition
 * led. 0, or -1. */
int tg_gw_kafka_outage_end(struct tg_gw *gw);

const char *tg_gw_dir(const struct tg_gw *gw);
const char *tg_gw_bootstrap(const struct tg_gw *gw);
const char *tg_gw_journal_path(const struct tg_gw *gw);
const char *tg_gw_log_path(const struct tg_gw *gw);     /* tidegate's stderr, all runs */
int tg_gw_commit_interval_ms(const struct tg_gw *gw);
int tg_gw_metrics_port(const struct tg_gw *gw);
struct tg_harness_mosquitto *tg_gw_mosquitto(const struct tg_gw *gw);
struct tg_harness_devkafka *tg_gw_devkafka(const struct tg_gw *gw); /* NULL in the real tier */
struct tg_harness_kafka *tg_gw_kafka(const struct tg_gw *gw);       /* NULL in the dev tier */

/* Ready: GET /healthz answers 200 (any answer with ready_unhealthy) and
 * tidegate_mqtt_connections equals mqtt.connections (plugin mode:
 * tidegate_mode_info{mode="plugin"} is 1). */
bool tg_gw_ready(struct tg_gw *gw);

/* Starts tidegate again (after a kill or a stop) with the same config, journal and metrics
 * port, and waits until it is ready (deadline 30 s). 0, or -1 (its log tail is printed). */
int tg_gw_tidegate_start(struct tg_gw *gw);

/* kill -9 and reap. 0, or -1 when no daemon runs or it could not be reaped. */
int tg_gw_tidegate_kill9(struct tg_gw *gw);

/* SIGTERM and wait up to timeout_ms (then SIGKILL). Returns the waitpid() status (see
 * tg_harness_exited_ok()), or -1 when no daemon ran or it could not be reaped. */
int tg_gw_tidegate_term(struct tg_gw *gw, int timeout_ms);

bool tg_gw_tidegate_running(struct tg_gw *gw);

/* The running (or last) tidegate process, for signals of the test's own (NULL: none). */
struct tg_harness_proc *tg_gw_tidegate_proc(struct tg_gw *gw);

/* Prints the last `lines` lines of tidegate's log to stderr. */
void tg_gw_print_log_tail(const struct tg_gw *gw, int lines);

/* Counts lines of tidegate's log that contain needle. */
int tg_gw_log_count(const struct tg_gw *gw, const char *needle);

/* Kills background publishers and every child process (for cmocka teardowns). */
void tg_gw_reap_all(void);

/* A cmocka teardown that calls tg_gw_reap_all(): cmocka_unit_test_teardown(test, tg_gw_teardown). */
int tg_gw_teardown(void **state);

/* ------------------------------------------------------------------------------------------
 * Metrics
 */

/* HTTP GET of path on the metrics port (loopback). Returns the status code and sets *body
 * (malloc'd, NUL-terminated; may be NULL when not wanted), or -1 when the request failed. */
int tg_gw_http_get(const struct tg_gw *gw, const char *path, char **body);

/* Finds a sample in a Prometheus text body. labels: NULL sums every series of the name;
 * otherwise a comma-separated list of label="value" pairs that the series must all carry
 * (e.g. "reason=\"malformed\""). Returns true and *value when at least one series matched. */
bool tg_gw_sample(const char *body, const char *name, const char *labels, double *value);

/* Scrapes /metrics and returns the sample (as tg_gw_sample), 0 when no series matched, or
 * NAN when the scrape failed. */
double tg_gw_metric(const struct tg_gw *gw, const char *name, const char *labels);

enum tg_gw_cmp { TG_GW_EQ, TG_GW_GE, TG_GW_GT, TG_GW_LE, TG_GW_LT };

/* One scrape: true when metric <cmp> value holds, else prints the value and returns false
 * (for assert_true(), whose own message would not show the value). */
bool tg_gw_metric_is(const struct tg_gw *gw, const char *name, const char *labels,
                     enum tg_gw_cmp cmp, double value);

/* Waits until metric <cmp> value holds (deadline timeout_ms). On timeout prints the last value
 * seen and the log tail, and returns false. */
bool tg_gw_wait_metric(struct tg_gw *gw, const char *name, const char *labels,
                       enum tg_gw_cmp cmp, double value, int timeout_ms);

/* tg_gw_metric() and tg_gw_wait_metric() for a tidegate the fixture did not start (one that
 * never becomes ready, say), by its metrics port on 127.0.0.1. The wait prints the last
 * value on timeout; the caller prints that daemon's log. */
double tg_gw_metric_at(int metrics_port, const char *name, const char *labels);
bool tg_gw_wait_metric_at(int metrics_port, const char *name, const char *labels,
                          enum tg_gw_cmp cmp, double value, int timeout_ms);

/* ------------------------------------------------------------------------------------------
 * The journal file
 */

/* Opens path with SQLite and runs PRAGMA integrity_check. Returns 0 when it answered "ok";
 * else -1, with the answer (or the open error) in result. */
int tg_gw_journal_integrity(const char *path, char *result, size_t result_size);

/* ------------------------------------------------------------------------------------------
 * Publisher: device readings over MQTT QoS1 (libmosquitto, its own loop thread)
 */

enum tg_gw_format { TG_GW_JSON, TG_GW_CBOR, TG_GW_MIXED /* even devices JSON, odd CBOR */ };

/* D devices x N seqs: device ids "<prefix>-%04d" (0 .. devices-1), seqs first_seq ..
 * first_seq + seqs - 1, published seq by seq, each seq for every device (round robin), with
 * ts = the wall clock at publishing and one metric "temp" = tg_gw_plan_temp(dev, seq); with
 * noise, a second metric "noise" of 53 random-looking bits, which makes readings compress
 * about as badly as real sensor data (the journal is compressed). */
struct tg_gw_plan {
    const char *prefix;   /* NULL: "dev" */
    int devices;
    int seqs;
    int first_seq;
    uint64_t boot;        /* 0: 1 */
    int rate;             /* readings per second; 0: as fast as the client takes them */
    enum tg_gw_format format;
    bool noise;
};

/* The value the plan publishes for (dev, seq): within -40..125. */
double tg_gw_plan_temp(int dev, int seq);
/* Formats the device id of dev into buf (>= TG_DEVICE_ID_MAX + 1 bytes); returns buf. */
char *tg_gw_plan_device(const struct tg_gw_plan *plan, int dev, char *buf, size_t size);

struct tg_gw_pub;

/* A publisher connected to the fixture's broker (persistent session under client_id, so that
 * messages not yet acknowledged are sent again after a broker restart; it reconnects on its
 * own). NULL on failure. */
struct tg_gw_pub *tg_gw_pub_new(struct tg_gw *gw, const char *client_id);

/* Stops its threads, disconnects and frees. NULL is a no-op. */
void tg_gw_pub_destroy(struct tg_gw_pub *pub);

/* Publishes one payload QoS1 to telemetry/<device> (waits up to 20 s for a connection when
 * the client is disconnected). 0 or -1. */
int tg_gw_pub_send(struct tg_gw_pub *pub, const char *device, const void *payload, size_t len);

/* Encodes one reading like the plan does (JSON or CBOR) into buf; returns its length or -1. */
int tg_gw_encode_reading(enum tg_gw_format format, uint64_t boot, uint64_t seq, int64_t ts_ms,
                         const char *metric, double value, uint8_t *buf, size_t cap);

/* Publishes plan on a background thread (one plan at a time per publisher). 0 or -1. */
int tg_gw_pub_plan_start(struct tg_gw_pub *pub, const struct tg_gw_plan *plan);

/* Waits for the background plan to be published (not acknowledged). 0, or -1 when a publish
 * failed. */
int tg_gw_pub_plan_join(struct tg_gw_pub *pub);

/* Readings of the current plan handed to libmosquitto so far (any thread). */
int tg_gw_pub_plan_progress(struct tg_gw_pub *pub);

/* Waits until the broker acknowledged every message published so far. */
bool tg_gw_pub_wait_acked(struct tg_gw_pub *pub, int timeout_ms);

/* Waits until the background plan has published at least `want` readings. */
bool tg_gw_pub_wait_progress(struct tg_gw_pub *pub, int want, int timeout_ms);

int tg_gw_pub_sent(struct tg_gw_pub *pub);
int tg_gw_pub_acked(struct tg_gw_pub *pub);

/* For reading (dev, seq) of the current plan: monotonic ms (tg_harness_now_ms) when it was
 * handed to libmosquitto, and when the broker acknowledged it; -1 when not (yet). */
int64_t tg_gw_pub_sent_ms(struct tg_gw_pub *pub, int dev, int seq);
int64_t tg_gw_pub_acked_ms(struct tg_gw_pub *pub, int dev, int seq);

/* ------------------------------------------------------------------------------------------
 * Consumer: what Kafka holds (librdkafka, every partition from the beginning)
 */

struct tg_gw_header {
    char *name;
    char *value;      /* NUL-terminated copy; value_len bytes */
    size_t value_len;
};

/* One Kafka record as a consumer sees it, plus the canonical JSON value parsed (when it is). */
struct tg_gw_record {
    int32_t partition;
    int64_t offset;
    char *key;             /* NUL-terminated copy, or NULL when the record has none */
    int64_t timestamp;     /* ms, -1 when none */
    uint8_t *value;
    size_t value_len;
    struct tg_gw_header *headers;
    size_t n_headers;
    bool canonical;        /* value parsed as the canonical record with every field below */
    char device[80];
    uint64_t boot, seq;
    int64_t ts, gw_ts;
    char gateway[80];
    bool has_temp;
    double temp;
};

/* The first header named name (its NUL-terminated value), or NULL. */
const char *tg_gw_record_header(const struct tg_gw_record *rec, const char *name);

struct tg_gw_consumer;

/* A consumer assigned every partition of topic from the beginning. NULL on failure. */
struct tg_gw_consumer *tg_gw_consumer_new(const char *bootstrap, const char *topic);
void tg_gw_consumer_destroy(struct tg_gw_consumer *c);

int tg_gw_consumer_partitions(const struct tg_gw_consumer *c);

/* Reads until at least want records have been read in total and every partition has been
 * read up to the end offset its leader reported when the call began (so every record a
 * producer had confirmed by then is read, whatever earlier calls saw), or timeout_ms passed.
 * Returns how many records have been read in total. */
size_t tg_gw_consumer_read(struct tg_gw_consumer *c, size_t want, int timeout_ms);

size_t tg_gw_consumer_count(const struct tg_gw_consumer *c);
const struct tg_gw_record *tg_gw_consumer_record(const struct tg_gw_consumer *c, size_t i);

/* ------------------------------------------------------------------------------------------
 * Audit of delivered telemetry against a plan
 */

struct tg_gw_audit {
    int devices, seqs;
    uint8_t *copies;       /* [dev * seqs + (seq - first_seq)]: records of that reading */
    int distinct;          /* readings of the plan present at least once */
    int missing;           /* readings of the plan absent */
    int duplicates;        /* extra copies */
    int foreign;           /* records not of the plan (other prefix, boot, seq range) */
    int bad;               /* not canonical, or key/timestamp/headers/gateway/temp wrong */
    int misplaced;         /* not on the Java client's murmur2 partition */
    int out_of_order;      /* a device's seq not above its previous one in offset order */
    int partitions;
};

/* Reads the telemetry topic from the beginning (up to wait_ms for `expected` records),
 * audits it against plan and prints the audit under label: true when Kafka holds exactly
 * `expected` records, each reading of the plan once (tg_gw_audit_exactly_once). */
bool tg_gw_kafka_exactly_once(const struct tg_gw *gw, const struct tg_gw_plan *plan,
                              int expected, const char *label, int wait_ms);

/* True when Kafka held exactly `expected` readings of the plan, each once, none foreign,
 * malformed, misplaced or out of order; otherwise prints which count is off. */
bool tg_gw_audit_exactly_once(const struct tg_gw_audit *audit, int expected);

/* Checks every record of c against plan (records of other devices count as foreign). Prints
 * the first few problems of each kind. Free with tg_gw_audit_free(). */
void tg_gw_audit_run(const struct tg_gw_consumer *c, const struct tg_gw_plan *plan,
                     struct tg_gw_audit *audit);
/* The same without printing, for polling. */
void tg_gw_audit_run_quiet(const struct tg_gw_consumer *c, const struct tg_gw_plan *plan,
                           struct tg_gw_audit *audit);
/* Copies of (dev, seq) that Kafka holds; seq_index = seq - plan.first_seq. */
int tg_gw_audit_copies(const struct tg_gw_audit *audit, int dev, int seq_index);
void tg_gw_audit_print(const char *label, const struct tg_gw_audit *audit);
void tg_gw_audit_free(struct tg_gw_audit *audit);

/* ------------------------------------------------------------------------------------------
 * The simulator's fleet (gateway_fixture_sim.c): what tests that run `tidegate-sim run` into
 * the fixture's gateway and judge it with `tidegate-sim audit --json` share.
 */

struct json_t; /* jansson's json_t: the tests that use the report link jansson */

/* Raises this process's soft open-files limit to at least want; children inherit it, and
 * Mosquitto holds a connection per simulated device. 0, or -1 (printed) when the hard limit
 * is below want or setrlimit() fails. */
int tg_gw_raise_open_files(unsigned long want);

/* Starts `tidegate-sim audit --follow --json` on the fixture's telemetry and DLQ topics with
 * the fleet's ledger (its stdout is <dir>/audit.stdout), and waits (deadline 30 s) until it
 * says on stderr that it is consuming: from then on nothing the fleet publishes escapes it.
 * timeout_s is the audit's --timeout. NULL on failure (its log is printed). */
struct tg_harness_proc *tg_gw_sim_audit_start(struct tg_gw *gw, const char *ledger,
                                              int timeout_s);

/* Waits up to timeout_ms for `tidegate-sim run` (started by the test as run) to exit. 0 when
 * it exited with status 0; -1 when it did not exit in time or failed, with its stderr printed
 * ("tidegate-sim run failed: ..."). When log is not NULL, *log is then its stderr (malloc'd,
 * the caller frees; NULL when unreadable), where the run's summary line is; after a failure
 * *log is NULL. */
int tg_gw_sim_run_wait(struct tg_harness_proc *run, int timeout_ms, char **log);

/* N from "resent N" in the run's summary line (its log, above): the readings the nodes sent
 * again, what durable acks cost them. -1 when log is NULL or has no such line. */
long long tg_gw_sim_run_resent(const char *log);

/* The audit's JSON report, read from its stdout once it has exited with status (printed along
 * with the report). NULL when it is missing or not JSON (the audit's log is printed). Free
 * with json_decref(). */
struct json_t *tg_gw_sim_audit_report(const struct tg_harness_proc *audit, int status);

/* The integer at obj.key1, or at obj.key1.key2 when key2 is not NULL. When it is absent or
 * not an integer, prints which and returns -1 (no count of the report is negative, so the
 * test's assertion on it fails). */
long long tg_gw_json_int(const struct json_t *obj, const char *key1, const char *key2);

#endif
