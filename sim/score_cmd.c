/*
 * score_cmd.c - the `tidegate-sim score` command (score.h): options, reading the alerts topic
 * with librdkafka, and the exit status. The comparison itself is score.c.
 *
 * Reading to the end: the end of every partition is taken once, when the command starts, and
 * each partition is read until its position reaches it. The consumer is read_committed, so
 * records of aborted worker transactions are never counted, and the end it is told is the
 * last stable offset: what was committed when score started, without the records of a
 * transaction still open (they may yet be aborted). So score never waits for the worker; run
 * it once the worker has committed what it should have (scripts/quality waits for that).
 * --timeout-ms bounds the reading itself; a partition whose end was not reached in time makes
 * the report incomplete: that is a setup error, not a score.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "kafka_read.h"
#include "score.h"

#define PROG "tidegate-sim score"
#define EXIT_FLOOR 1
#define EXIT_SETUP 2
#define POLL_MS 100
#define META_TIMEOUT_MS 10000

struct opts {
    const char *labels, *brokers, *topic;
    bool json, from_beginning, has_since;
    int64_t since_ms, timeout_ms, slack_ms, details;
    uint64_t devices;
    double duration_s;
    struct tg_sim_score_floors floors;
};

struct part {
    int64_t end; /* the high watermark when the command started */
    bool done;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tidegate-sim score --labels FILE --brokers LIST [options]\n"
            "\n"
            "Matches the worker's alerts (telemetry.anomalies) with the labels of a\n"
            "`tidegate-sim run --labels FILE`: recall, precision, F1 and detection delay per\n"
            "anomaly kind, false alerts per device-hour.\n"
            "\n"
            "  --labels FILE              the run's labels (required)\n"
            "  --brokers LIST             Kafka bootstrap servers (required)\n"
            "  --topic T                  alerts topic (telemetry.anomalies)\n"
            "  --devices N                devices of the run   } both, for false alerts per\n"
            "  --duration-s S             the run's --duration } device-hour\n"
            "  --match-slack-ms N         tolerance around a label's interval (30000)\n"
            "  --from-beginning           read every record the topic holds (the default)\n"
            "  --since-ms T               only alerts whose start_ts >= T (ms since the epoch),\n"
            "                             reading from the first record with that timestamp:\n"
            "                             for a topic that holds several runs\n"
            "  --timeout-ms N             longest wait to reach the end of every partition\n"
            "                             (30000)\n"
            "  --min-recall X             fail unless every kind with labels has recall >= X\n"
            "  --min-f1 X                 fail unless the overall F1 >= X\n"
            "  --max-false-per-device-hour X  fail unless false alerts per device-hour <= X\n"
            "  --details N                list at most N missed labels and N false alerts,\n"
            "                             with the label nearest to each false alert (10)\n"
            "  --json                     the report as one JSON object\n"
            "\n"
            "Exit status: 0 report produced and every floor met, 1 a floor not met or nothing\n"
            "measured (no labels, or no alert read while labels exist), 2 usage or setup error.\n");
}

static int bad_value(const char *opt, const char *text, const char *expected)
{
    fprintf(stderr, PROG ": %s: expected %s, got \"%s\"\n", opt, expected, text);
    return -1;
}

static int parse_double(const char *opt, const char *text, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < lo || v > hi) {
        char expected[96];
        snprintf(expected, sizeof expected, "a number from %g to %g", lo, hi);
        return bad_value(opt, text, expected);
    }
    *out = v;
    return 0;
}

static int parse_i64(const char *opt, const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        char expected[96];
        snprintf(expected, sizeof expected, "an integer from %" PRId64 " to %" PRId64, lo, hi);
        return bad_value(opt, text, expected);
    }
    *out = v;
    return 0;
}

enum {
    OPT_LABELS = 256,
    OPT_BROKERS,
    OPT_TOPIC,
    OPT_JSON,
    OPT_FROM_BEGINNING,
    OPT_SINCE,
    OPT_TIMEOUT,
    OPT_SLACK,
    OPT_DEVICES,
    OPT_DURATION,
    OPT_MIN_RECALL,
    OPT_MIN_F1,
    OPT_MAX_FALSE,
    OPT_DETAILS,
};

/* 0 parsed, 1 help, -1 error (said why). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"labels", required_argument, NULL, OPT_LABELS},
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"json", no_argument, NULL, OPT_JSON},
        {"from-beginning", no_argument, NULL, OPT_FROM_BEGINNING},
        {"since-ms", required_argument, NULL, OPT_SINCE},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"match-slack-ms", required_argument, NULL, OPT_SLACK},
        {"devices", required_argument, NULL, OPT_DEVICES},
        {"duration-s", required_argument, NULL, OPT_DURATION},
        {"min-recall", required_argument, NULL, OPT_MIN_RECALL},
        {"min-f1", required_argument, NULL, OPT_MIN_F1},
        {"max-false-per-device-hour", required_argument, NULL, OPT_MAX_FALSE},
        {"details", required_argument, NULL, OPT_DETAILS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct opts){
        .details = 10,
        .topic = "telemetry.anomalies",
        .timeout_ms = 30000,
        .slack_ms = 30000,
        .floors = {NAN, NAN, NAN},
    };
    bool has_duration = false;
    int64_t v;
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LABELS:
            o->labels = optarg;
            break;
        case OPT_BROKERS:
            o->brokers = optarg;
            break;
        case OPT_TOPIC:
            o->topic = optarg;
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_FROM_BEGINNING:
            o->from_beginning = true;
            break;
        case OPT_SINCE:
            rc = parse_i64("--since-ms", optarg, 0, INT64_MAX / 2, &o->since_ms);
            o->has_since = true;
            break;
        case OPT_TIMEOUT:
            rc = parse_i64("--timeout-ms", optarg, 1, 86400000, &o->timeout_ms);
            break;
        case OPT_SLACK:
            rc = parse_i64("--match-slack-ms", optarg, 0, 86400000, &o->slack_ms);
            break;
        case OPT_DEVICES:
            rc = parse_i64("--devices", optarg, 1, 100000000, &v);
            o->devices = (uint64_t)v;
            break;
        case OPT_DURATION:
            rc = parse_double("--duration-s", optarg, 0.001, 31536000, &o->duration_s);
            has_duration = true;
            break;
        case OPT_MIN_RECALL:
            rc = parse_double("--min-recall", optarg, 0, 1, &o->floors.min_recall);
            break;
        case OPT_MIN_F1:
            rc = parse_double("--min-f1", optarg, 0, 1, &o->floors.min_f1);
            break;
        case OPT_MAX_FALSE:
            rc = parse_double("--max-false-per-device-hour", optarg, 0, 1e9,
                              &o->floors.max_false_per_device_hour);
            break;
        case OPT_DETAILS:
            rc = parse_i64("--details", optarg, 0, 1000000, &o->details);
            break;
        case 'h':
            return 1;
        case ':':
            fprintf(stderr, PROG ": %s needs an argument\n", argv[optind - 1]);
            rc = -1;
            break;
        default:
            fprintf(stderr, PROG ": unknown option \"%s\"\n", argv[optind - 1]);
            rc = -1;
            break;
        }
    }
    if (rc != 0)
        return -1;
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (!o->labels || !o->brokers) {
        fprintf(stderr, PROG ": --labels FILE and --brokers LIST are required\n");
        return -1;
    }
    if (o->from_beginning && o->has_since) {
        fprintf(stderr, PROG ": --from-beginning and --since-ms exclude each other\n");
        return -1;
    }
    if ((o->devices != 0) != has_duration) {
        fprintf(stderr, PROG ": --devices and --duration-s go together (the run's exposure)\n");
        return -1;
    }
    if (!isnan(o->floors.max_false_per_device_hour) && !o->devices) {
        fprintf(stderr, PROG ": --max-false-per-device-hour needs --devices and --duration-s\n");
        return -1;
    }
    return 0;
}

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    fprintf(stderr, PROG ": kafka: %s: %s\n", rd_kafka_err2name((rd_kafka_resp_err_t)err),
            reason);
}

static rd_kafka_t *consumer_new(const struct opts *o)
{
    static const char *const extra[] = {
        /* The worker writes alerts in transactions: count only committed ones. */
        "isolation.level", "read_committed",
        "fetch.wait.max.ms", "50",
        NULL};
    /* Assigned partitions, no offsets committed: scoring leaves nothing in the cluster. */
    return tg_sim_kafka_consumer_new(PROG, o->brokers, "tidegate-sim-score", extra,
                                     kafka_error_cb, NULL);
}

/* Partition count of topic; 0 when the topic does not exist, -1 on error (said why). */
static int topic_partitions(rd_kafka_t *rk, const char *topic)
{
    int n = tg_sim_kafka_partitions(rk, PROG, topic, META_TIMEOUT_MS);
    if (n == 0)
        fprintf(stderr, PROG ": topic %s does not exist: no alert was ever written\n", topic);
    return n;
}

/* Takes every partition's end and assigns the partitions that have something to read.
 * Returns the number of partitions still to read, or -1 (said why). */
static int assign_partitions(rd_kafka_t *rk, const struct opts *o, struct part *parts, int n)
{
    int pending = -1;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n ? n : 1);
    rd_kafka_topic_partition_list_t *times = rd_kafka_topic_partition_list_new(n ? n : 1);
    if (!list || !times)
        goto cleanup;
    int64_t *lo = calloc((size_t)(n ? n : 1), sizeof *lo);
    int64_t *hi = calloc((size_t)(n ? n : 1), sizeof *hi);
    if (!lo || !hi) {
        free(lo);
        free(hi);
        goto cleanup;
    }
    /* For a read_committed consumer the high watermark is the last stable offset. */
    int failed = 0;
    rd_kafka_resp_err_t err =
        tg_sim_kafka_watermarks(rk, o->topic, n, META_TIMEOUT_MS, true, lo, hi, &failed);
    if (err) {
        fprintf(stderr, PROG ": end offset of %s[%d]: %s\n", o->topic, failed,
                rd_kafka_err2str(err));
        free(lo);
        free(hi);
        goto cleanup;
    }
    for (int p = 0; p < n; p++) {
        parts[p].end = hi[p];
        rd_kafka_topic_partition_list_add(times, o->topic, p)->offset = o->since_ms;
    }
    free(hi);
    if (o->has_since && n > 0) {
        /* The first record whose timestamp (the alert's event time) is >= since. */
        err = rd_kafka_offsets_for_times(rk, times, META_TIMEOUT_MS);
        if (err) {
            fprintf(stderr, PROG ": offsets for --since-ms: %s\n", rd_kafka_err2str(err));
            free(lo);
            goto cleanup;
        }
    }
    pending = 0;
    for (int p = 0; p < n; p++) {
        int64_t start = lo[p];
        if (o->has_since) {
            const rd_kafka_topic_partition_t *tp = &times->elems[p];
            /* -1 (OFFSET_END): no record that recent. */
            start = tp->err || tp->offset < 0 ? parts[p].end : tp->offset;
        }
        if (start >= parts[p].end) {
            parts[p].done = true;
            continue;
        }
        rd_kafka_topic_partition_list_add(list, o->topic, p)->offset = start;
        pending++;
    }
    free(lo);
    err = rd_kafka_assign(rk, list);
    if (err) {
        fprintf(stderr, PROG ": assign: %s\n", rd_kafka_err2str(err));
        pending = -1;
    }
cleanup:
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
    if (times)
        rd_kafka_topic_partition_list_destroy(times);
    return pending;
}

/* Reads until every assigned partition reached its end. Returns 0, or -1 (said why). */
static int read_alerts(rd_kafka_t *rk, const struct opts *o, struct part *parts, int n,
                       int pending, struct tg_sim_score *sc)
{
    const int64_t deadline = mono_ms() + o->timeout_ms;
    while (pending > 0) {
        if (stop_signal) {
            fprintf(stderr, PROG ": interrupted\n");
            return -1;
        }
        if (mono_ms() >= deadline) {
            fprintf(stderr, PROG ": the end of %d partition(s) was not reached within %" PRId64
                    " ms (an unreachable or overloaded broker?):",
                    pending, o->timeout_ms);
            for (int p = 0; p < n; p++)
                if (!parts[p].done)
                    fprintf(stderr, " %s[%d] (end %" PRId64 ")", o->topic, p, parts[p].end);
            fprintf(stderr, "\n");
            return -1;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, POLL_MS);
        if (!msg)
            continue;
        int p = msg->partition;
        bool ours = msg->rkt && p >= 0 && p < n && !parts[p].done &&
                    strcmp(rd_kafka_topic_name(msg->rkt), o->topic) == 0;
        int rc = 0;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* Past the last committed record: with transactions the end offset is a control
             * record's, which read_committed skips, so EOF is the sign, not the last offset. */
            if (ours && msg->offset >= parts[p].end) {
                parts[p].done = true;
                pending--;
            }
        } else if (msg->err) {
            if (rd_kafka_fatal_error(rk, NULL, 0)) {
                char why[256];
                rd_kafka_fatal_error(rk, why, sizeof why);
                fprintf(stderr, PROG ": kafka: fatal: %s\n", why);
                rc = -1;
            } else {
                fprintf(stderr, PROG ": kafka: %s\n", rd_kafka_message_errstr(msg));
            }
        } else if (ours && msg->offset < parts[p].end) {
            int ar = 1;
            if (msg->payload)
                ar = tg_sim_score_add_alert_json(sc, msg->payload, msg->len);
            else
                tg_sim_score_undecodable(sc);
            if (ar < 0) {
                fprintf(stderr, PROG ": out of memory\n");
                rc = -1;
            }
            if (msg->offset + 1 >= parts[p].end) {
                parts[p].done = true;
                pending--;
            }
        }
        rd_kafka_message_destroy(msg);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int tg_sim_score_main(int argc, char **argv)
{
    struct opts o;
    int prc = parse_opts(argc, argv, &o);
    if (prc > 0) {
        usage(stdout);
        return 0;
    }
    if (prc < 0)
        return EXIT_SETUP;
    int rc = EXIT_SETUP;
    rd_kafka_t *rk = NULL;
    struct part *parts = NULL;
    struct tg_sim_score *sc = tg_sim_score_new(o.slack_ms);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        perror(PROG ": sigaction");
        goto cleanup;
    }
    if (!sc) {
        fprintf(stderr, PROG ": out of memory\n");
        goto cleanup;
    }
    char err[512];
    if (tg_sim_score_load_labels(sc, o.labels, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": labels %s\n", err);
        goto cleanup;
    }
    if (o.devices)
        tg_sim_score_set_exposure(sc, o.devices, o.duration_s);
    if (o.has_since)
        tg_sim_score_set_since(sc, o.since_ms);
    rk = consumer_new(&o);
    if (!rk)
        goto cleanup;
    int n = topic_partitions(rk, o.topic);
    if (n < 0)
        goto cleanup;
    parts = calloc((size_t)(n ? n : 1), sizeof *parts);
    if (!parts) {
        fprintf(stderr, PROG ": out of memory\n");
        goto cleanup;
    }
    int pending = assign_partitions(rk, &o, parts, n);
    if (pending < 0 || read_alerts(rk, &o, parts, n, pending, sc) != 0)
        goto cleanup;

    struct tg_sim_score_result res;
    if (tg_sim_score_finish(sc, &res) != 0) {
        fprintf(stderr, PROG ": out of memory\n");
        goto cleanup;
    }
    char why[1024];
    bool pass = tg_sim_score_verdict(&res, &o.floors, why, sizeof why);
    struct tg_sim_score_context ctx = {
        .topic = o.topic,
        .labels_path = o.labels,
        .partitions = n,
        .slack_ms = o.slack_ms,
        .devices = o.devices,
        .duration_s = o.duration_s,
        .floors = &o.floors,
        .pass = pass,
        .why = why,
        .details = (unsigned)o.details,
    };
    int pr = o.json ? tg_sim_score_print_json(sc, &res, &ctx, stdout)
                    : tg_sim_score_print_text(sc, &res, &ctx, stdout);
    if (pr != 0 || fflush(stdout) != 0) {
        fprintf(stderr, PROG ": cannot write the report\n");
        goto cleanup;
    }
    rc = pass ? 0 : EXIT_FLOOR;
cleanup:
    if (rk) {
        rd_kafka_assign(rk, NULL);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    free(parts);
    tg_sim_score_destroy(sc);
    return rc;
}
