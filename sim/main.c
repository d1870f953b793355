/*
 * main.c - tidegate-sim: `run` drives the simulated fleet (fleet.h), `audit` compares what
 * reached Kafka with the run's ledger (audit.h, when built).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "log.h"
#include "score.h"
#ifdef TG_SIM_HAVE_AUDIT
#include "audit.h"
#endif

#define PROG "tidegate-sim"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROG " run --broker HOST:PORT [options]\n"
            "       " PROG " audit --brokers LIST --ledger FILE [options]   (" PROG
            " audit --help)\n"
            "       " PROG " score --brokers LIST --labels FILE [options]   (" PROG
            " score --help)\n"
            "\n"
            "run: simulated sensor nodes, each its own MQTT connection running the firmware core,\n"
            "publishing QoS1 readings to telemetry/<device id> (ids sim-00001, sim-00002, ...).\n"
            "\n"
            "  --broker HOST:PORT     Mosquitto to connect to (required; [v6addr]:port works)\n"
            "  --devices N            number of devices (default 10000)\n"
            "  --rate HZ              readings per second per device (default 1)\n"
            "  --duration S           seconds of sampling (default 60)\n"
            "  --seed N               seed of every random choice (default 1): same seed, same\n"
            "                         devices, signals, anomalies and faults\n"
            "  --ledger FILE          write what each device sent (the audit's ground truth)\n"
            "  --labels FILE          write each injected anomaly as a JSON line\n"
            "                         {\"device\",\"metric\",\"kind\",\"start_ts\",\"end_ts\"} (ms)\n"
            "  --anomaly-rate R       anomalies per device-hour (default 0): spike, level_shift,\n"
            "                         drift, stuck, noise_burst, silence\n"
            "  --malformed F          probability (0..1) that a reading's publish is followed by a\n"
            "                         malformed payload (truncated CBOR, wrong types, bad JSON)\n"
            "  --duplicates F         probability (0..1) that a reading is published twice\n"
            "  --skew F               fraction (0..1) of devices whose clock is off by 10..240 s\n"
            "                         (within the gateway's default limits) and steps back a few\n"
            "                         seconds now and then (out-of-order timestamps)\n"
            "  --connect-rate R       devices started per second (default 2000)\n"
            "  --churn R              connection drops per device-hour (default 0)\n"
            "  --storm[=S]            every device drops its connection at once, at S seconds\n"
            "                         (default: half of --duration)\n"
            "  --drain S              at the end, wait up to S seconds for outboxes to empty\n"
            "                         (default 15)\n"
            "  --durable-acks         devices keep each reading until the gateway's durable\n"
            "                         ack (ack/<id>) covers it, not just the broker's PUBACK;\n"
            "                         the ledger then counts a reading released at that ack\n"
            "  --ack-timeout MS       with --durable-acks: resend what is unacknowledged when\n"
            "                         the oldest reading waited this long (default 15000)\n"
            "  --metrics-listen ADDR  serve tidegate_sim_* metrics, e.g. 127.0.0.1:9465\n"
            "  --state-dir DIR        where the devices' boot counters are kept between runs\n"
            "                         (file tidegate-sim.boots): each run boots every device\n"
            "                         at its last boot + 1, as a real node does. Default: the\n"
            "                         --ledger file's directory, else\n"
            "                         $XDG_STATE_HOME/tidegate-sim (~/.local/state/tidegate-sim)\n"
            "  --log-level LEVEL      error, warn, info (default), debug\n"
            "\n"
            "Exit status: 0 run completed and files written, 1 setup or write error, 2 usage.\n");
}

static int bad_value(const char *opt, const char *text, const char *expected)
{
    fprintf(stderr, PROG " run: %s: expected %s, got \"%s\"\n", opt, expected, text);
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

static int parse_u64(const char *opt, const char *text, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v < lo || v > hi) {
        char expected[96];
        snprintf(expected, sizeof expected, "an integer from %" PRIu64 " to %" PRIu64, lo, hi);
        return bad_value(opt, text, expected);
    }
    *out = v;
    return 0;
}

/* "host:port" or "[v6]:port"; host points into buf. */
static int parse_broker(const char *text, char *buf, size_t size, const char **host, int *port)
{
    if (strlen(text) >= size)
        return bad_value("--broker", text, "HOST:PORT");
    snprintf(buf, size, "%s", text);
    char *colon = strrchr(buf, ':');
    if (!colon || colon == buf)
        return bad_value("--broker", text, "HOST:PORT");
    *colon = '\0';
    uint64_t p;
    if (parse_u64("--broker port", colon + 1, 1, 65535, &p) != 0)
        return -1;
    char *h = buf;
    if (h[0] == '[') {
        size_t n = strlen(h);
        if (n < 3 || h[n - 1] != ']')
            return bad_value("--broker", text, "[ADDRESS]:PORT");
        h[n - 1] = '\0';
        h++;
    }
    *host = h;
    *port = (int)p;
    return 0;
}

enum {
    OPT_BROKER = 256,
    OPT_DEVICES,
    OPT_RATE,
    OPT_DURATION,
    OPT_SEED,
    OPT_LEDGER,
    OPT_LABELS,
    OPT_ANOMALY_RATE,
    OPT_MALFORMED,
    OPT_DUPLICATES,
    OPT_SKEW,
    OPT_CONNECT_RATE,
    OPT_CHURN,
    OPT_STORM,
    OPT_DRAIN,
    OPT_METRICS_LISTEN,
    OPT_LOG_LEVEL,
    OPT_STATE_DIR,
    OPT_DURABLE_ACKS,
    OPT_ACK_TIMEOUT,
};

static int run_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, OPT_BROKER},
        {"devices", required_argument, NULL, OPT_DEVICES},
        {"rate", required_argument, NULL, OPT_RATE},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"seed", required_argument, NULL, OPT_SEED},
        {"ledger", required_argument, NULL, OPT_LEDGER},
        {"labels", required_argument, NULL, OPT_LABELS},
        {"anomaly-rate", required_argument, NULL, OPT_ANOMALY_RATE},
        {"malformed", required_argument, NULL, OPT_MALFORMED},
        {"duplicates", required_argument, NULL, OPT_DUPLICATES},
        {"skew", required_argument, NULL, OPT_SKEW},
        {"connect-rate", required_argument, NULL, OPT_CONNECT_RATE},
        {"churn", required_argument, NULL, OPT_CHURN},
        {"storm", optional_argument, NULL, OPT_STORM},
        {"drain", required_argument, NULL, OPT_DRAIN},
        {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"durable-acks", no_argument, NULL, OPT_DURABLE_ACKS},
        {"ack-timeout", required_argument, NULL, OPT_ACK_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct tg_sim_run_options opt;
    tg_sim_run_options_init(&opt);
    char broker_buf[256];
    bool have_broker = false, storm = false, storm_at_given = false;
    uint64_t u;
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKER:
            rc = parse_broker(optarg, broker_buf, sizeof broker_buf, &opt.broker_host,
                              &opt.broker_port);
            have_broker = rc == 0;
            break;
        case OPT_DEVICES:
            rc = parse_u64("--devices", optarg, 1, 1000000, &u);
            opt.devices = (uint32_t)u;
            break;
        case OPT_RATE:
            rc = parse_double("--rate", optarg, 0.001, 1000, &opt.rate_hz);
            break;
        case OPT_DURATION:
            rc = parse_double("--duration", optarg, 0, 31536000, &opt.duration_s);
            break;
        case OPT_SEED:
            rc = parse_u64("--seed", optarg, 0, UINT64_MAX, &opt.seed);
            break;
        case OPT_LEDGER:
            opt.ledger_path = optarg;
            break;
        case OPT_LABELS:
            opt.labels_path = optarg;
            break;
        case OPT_ANOMALY_RATE:
            rc = parse_double("--anomaly-rate", optarg, 0, 3600000, &opt.anomaly_rate);
            break;
        case OPT_MALFORMED:
            rc = parse_double("--malformed", optarg, 0, 1, &opt.malformed);
            break;
        case OPT_DUPLICATES:
            rc = parse_double("--duplicates", optarg, 0, 1, &opt.duplicates);
            break;
        case OPT_SKEW:
            rc = parse_double("--skew", optarg, 0, 1, &opt.skew);
            break;
        case OPT_CONNECT_RATE:
            rc = parse_double("--connect-rate", optarg, 0.001, 1000000, &opt.connect_rate);
            break;
        case OPT_CHURN:
            rc = parse_double("--churn", optarg, 0, 3600000, &opt.churn);
            break;
        case OPT_STORM:
            storm = true;
            if (optarg) {
                storm_at_given = true;
                rc = parse_double("--storm", optarg, 0, 31536000, &opt.storm_at_s);
            }
            break;
        case OPT_DRAIN:
            rc = parse_double("--drain", optarg, 0, 3600, &opt.drain_s);
            break;
        case OPT_METRICS_LISTEN:
            opt.metrics_listen = optarg;
            break;
        case OPT_STATE_DIR:
            opt.state_dir = optarg;
            break;
        case OPT_DURABLE_ACKS:
            opt.durable_acks = true;
            break;
        case OPT_ACK_TIMEOUT: {
            double ms;
            rc = parse_double("--ack-timeout", optarg, 100, 3600000, &ms);
            opt.ack_timeout_ms = (uint32_t)ms;
            break;
        }
        case OPT_LOG_LEVEL: {
            tg_log_level level;
            if (tg_log_level_parse(optarg, &level) != TG_OK)
                rc = bad_value("--log-level", optarg, "error, warn, info or debug");
            else
                tg_log_set_level(level);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, PROG " run: %s needs an argument\n", argv[optind - 1]);
            rc = -1;
            break;
        default:
            fprintf(stderr, PROG " run: unknown option \"%s\"\n", argv[optind - 1]);
            rc = -1;
            break;
        }
    }
    if (rc != 0)
        return 2;
    if (optind < argc) {
        fprintf(stderr, PROG " run: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!have_broker) {
        fprintf(stderr, PROG " run: --broker HOST:PORT is required\n");
        return 2;
    }
    if (storm && !storm_at_given)
        opt.storm_at_s = opt.duration_s / 2.0;
    return tg_sim_run(&opt);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "run") == 0)
        return run_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "audit") == 0) {
#ifdef TG_SIM_HAVE_AUDIT
        return tg_sim_audit_main(argc - 1, argv + 1);
#else
        fprintf(stderr, PROG ": audit is not part of this build\n");
        return 2;
#endif
    }
    if (strcmp(argv[1], "score") == 0)
        return tg_sim_score_main(argc - 1, argv + 1);
    fprintf(stderr, PROG ": unknown command \"%s\" (run, audit, score)\n", argv[1]);
    usage(stderr);
    return 2;
}
