/*
 * tidegate-topics: creates the Kafka topics tidegate uses, on a cluster that does not create
 * them by itself (auto.create.topics.enable=false, as production clusters and the real-broker
 * test tier run). See usage() for the contract. scripts/demo --kafka-real runs it; the test
 * harness creates the same topics with its own Admin API code (harness_kafka.c), so that the
 * tests do not rest on this tool being right.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "config.h" /* tg_parse_int */

#define PROG "tidegate-topics"
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define PARTITIONS_MAX 10000
#define DEFAULT_TIMEOUT_MS 30000

struct topic {
    const char *name;
    int partitions; /* 0: the telemetry count */
    const char *config_key, *config_value; /* one topic config, or NULL */
};

/* The worker's state topic follows telemetry's partitioning: a worker's state for an input
 * partition lives in the state partition of the same number (design.md, section 8). */
static const struct topic topics[] = {
    {"telemetry", 0, NULL, NULL},
    {"telemetry.dlq", 3, NULL, NULL},
    {"telemetry.anomalies", 6, NULL, NULL},
    {"telemetry.agg.1m", 6, NULL, NULL},
    {"telemetry.worker.state", 0, "cleanup.policy", "compact"},
};
#define N_TOPICS (sizeof topics / sizeof topics[0])

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROG " --brokers HOST:PORT[,...] [--partitions N] [--replication R]\n"
            "                       [--timeout-ms MS]\n"
            "\n"
            "Creates the topics tidegate uses, for clusters that do not auto-create topics:\n"
            "  telemetry               N partitions (--partitions, default 6)\n"
            "  telemetry.dlq           3\n"
            "  telemetry.anomalies     6\n"
            "  telemetry.agg.1m        6\n"
            "  telemetry.worker.state  N, cleanup.policy=compact (the worker's state)\n"
            "Topics that exist are left as they are and reported with their partition count.\n"
            "Then waits until every partition of them has a leader.\n"
            "\n"
            "  --brokers LIST      bootstrap servers\n"
            "  --partitions N      partitions of telemetry and telemetry.worker.state, 1-%d\n"
            "  --replication R     replication factor (default: min(3, brokers in the cluster))\n"
            "  --timeout-ms MS     for the whole run (default %d)\n"
            "  -h, --help          this text\n"
            "\n"
            "exit status: 0 every topic exists with its partitions led; 1 a topic could not be\n"
            "created or led in time (the broker's error is printed); 2 usage error.\n",
            PARTITIONS_MAX, DEFAULT_TIMEOUT_MS);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (--help)\n", stderr);
    exit(EXIT_USAGE);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Partitions of topic, with *led set when every one has a leader: 0 when the cluster has no
 * such topic, -1 when the cluster did not answer. *brokers gets the cluster's broker count. */
static int describe(rd_kafka_t *rk, const char *topic, int timeout_ms, bool *led, int *brokers)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int partitions = -1;
    *led = false;
    if (!rkt)
        return -1;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
        const struct rd_kafka_metadata_topic *mt = &md->topics[0];
        if (brokers)
            *brokers = md->broker_cnt;
        if (mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            partitions = 0;
        } else if (mt->err == RD_KAFKA_RESP_ERR_NO_ERROR ||
                   mt->err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) {
            partitions = mt->partition_cnt;
            *led = partitions > 0;
            for (int p = 0; p < mt->partition_cnt; p++) {
                if (mt->partitions[p].err || mt->partitions[p].leader < 0)
                    *led = false;
            }
        }
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return partitions;
}

/* CreateTopics for the topics marked in want. Returns how many failed (printed). */
static int create(rd_kafka_t *rk, const bool *want, int telemetry_partitions, int replication,
                  int timeout_ms)
{
    char errstr[512];
    rd_kafka_NewTopic_t *nts[N_TOPICS];
    size_t n = 0;
    int failed = 0;
    for (size_t i = 0; i < N_TOPICS; i++) {
        if (!want[i])
            continue;
        int partitions = topics[i].partitions ? topics[i].partitions : telemetry_partitions;
        nts[n] = rd_kafka_NewTopic_new(topics[i].name, partitions, replication, errstr,
                                       sizeof errstr);
        if (!nts[n]) {
            fprintf(stderr, PROG ": %s: %s\n", topics[i].name, errstr);
            failed++;
            continue;
        }
        if (topics[i].config_key &&
            rd_kafka_NewTopic_set_config(nts[n], topics[i].config_key, topics[i].config_value)) {
            fprintf(stderr, PROG ": %s: cannot set %s\n", topics[i].name, topics[i].config_key);
            rd_kafka_NewTopic_destroy(nts[n]);
            failed++;
            continue;
        }
        n++;
    }
    if (n == 0)
        return failed;

    rd_kafka_queue_t *queue = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_operation_timeout(options, timeout_ms, errstr, sizeof errstr);
    rd_kafka_CreateTopics(rk, nts, n, options, queue);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, timeout_ms + 1000);
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, PROG ": CreateTopics: %s\n",
                ev ? rd_kafka_event_error_string(ev) : "no answer in time");
        failed += (int)n;
    } else {
        size_t n_results = 0;
        const rd_kafka_topic_result_t **results = rd_kafka_CreateTopics_result_topics(
            rd_kafka_event_CreateTopics_result(ev), &n_results);
        for (size_t i = 0; i < n_results; i++) {
            rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
            const char *name = rd_kafka_topic_result_name(results[i]);
            /* Someone else created it meanwhile: what was wanted is there. */
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR ||
                err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                printf("%s: created\n", name);
                continue;
            }
            const char *msg = rd_kafka_topic_result_error_string(results[i]);
            fprintf(stderr, PROG ": %s: %s (%s)\n", name, rd_kafka_err2name(err),
                    msg ? msg : "");
            failed++;
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_queue_destroy(queue);
    for (size_t i = 0; i < n; i++)
        rd_kafka_NewTopic_destroy(nts[i]);
    return failed;
}

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)fac;
    if (level <= 3) /* errors only: connection refused etc. say why nothing answers */
        fprintf(stderr, PROG ": librdkafka: %s\n", buf);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"partitions", required_argument, NULL, 'p'},
        {"replication", required_argument, NULL, 'r'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *brokers = NULL;
    int64_t partitions = 6, replication = 0, timeout_ms = DEFAULT_TIMEOUT_MS;
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            brokers = optarg;
            break;
        case 'p':
            if (tg_parse_int(optarg, 1, PARTITIONS_MAX, &partitions) != TG_OK)
                usage_error("--partitions '%s': expected an integer from 1 to %d", optarg,
                            PARTITIONS_MAX);
            break;
        case 'r':
            if (tg_parse_int(optarg, 1, 100, &replication) != TG_OK)
                usage_error("--replication '%s': expected an integer from 1 to 100", optarg);
            break;
        case 't':
            if (tg_parse_int(optarg, 100, 3600000, &timeout_ms) != TG_OK)
                usage_error("--timeout-ms '%s': expected 100 to 3600000", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            usage_error("%s needs a value", argv[optind - 1]);
        default:
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (!brokers || !*brokers)
        usage_error("--brokers is required");

    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        usage_error("--brokers '%s': %s", brokers, errstr);
    }
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, PROG ": %s\n", errstr);
        return EXIT_FAILED;
    }

    long long deadline = now_ms() + timeout_ms;
    bool want[N_TOPICS] = {false};
    int n_want = 0, brokers_seen = 0, rc = EXIT_FAILED;
    for (size_t i = 0; i < N_TOPICS; i++) {
        bool led;
        int left = (int)(deadline - now_ms());
        int have = describe(rk, topics[i].name, left > 0 ? left : 1, &led, &brokers_seen);
        if (have < 0) {
            fprintf(stderr, PROG ": no metadata from %s within %lld ms\n", brokers,
                    (long long)timeout_ms);
            goto done;
        }
        if (have > 0) {
            int asked = topics[i].partitions ? topics[i].partitions : (int)partitions;
            printf("%s: exists, %d partitions%s\n", topics[i].name, have,
                   have != asked ? " (not changed: partitions decide placement)" : "");
        } else {
            want[i] = true;
            n_want++;
        }
    }
    if (replication == 0)
        replication = brokers_seen < 3 ? (brokers_seen > 0 ? brokers_seen : 1) : 3;
    if (n_want > 0 &&
        create(rk, want, (int)partitions, (int)replication, (int)(deadline - now_ms())) > 0)
        goto done;

    /* Created is not yet usable: a producer that starts now must find every leader. */
    for (size_t i = 0; i < N_TOPICS; i++) {
        bool led = false;
        while (!led && now_ms() < deadline) {
            int left = (int)(deadline - now_ms());
            if (describe(rk, topics[i].name, left < 2000 ? left : 2000, &led, NULL) < 0 ||
                !led)
                sleep_ms(100);
        }
        if (!led) {
            fprintf(stderr, PROG ": %s: partitions without a leader after %lld ms\n",
                    topics[i].name, (long long)timeout_ms);
            goto done;
        }
    }
    rc = 0;
done:
    rd_kafka_destroy(rk);
    return rc;
}
