/*
 * audit_kafka.c - the command `tidegate-sim audit` (audit.h): consumes the telemetry and DLQ
 * topics with librdkafka, decodes each record and feeds it to the comparison
 * (audit_compare.c), then prints the report (audit_report.c).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "audit.h"
#include "codec.h"
#include "codec_canonical_decode.h"
#include "kafka_read.h"
#include "ledger.h"

/* ------------------------------------------------------------------------------------------
 * The command: consume the topics, decode, compare, report
 */

#define PROG "tidegate-sim audit"
#define EXIT_MISMATCH 1
#define EXIT_SETUP 2
#define POLL_MS 100
#define LEDGER_CHECK_MS 200
#define PROGRESS_MS 10000
#define ERROR_LOG_MS 5000
#define DRAIN_MS 10000 /* longest wait to read every partition to its high watermark */

struct opts {
    const char *brokers, *topic, *ledger, *dlq_topic;
    double timeout_s, idle_s, clock_slack_s;
    size_t max_devices;
    bool json, follow, from_end;
};

struct part_state {
    int64_t next_offset; /* the offset expected next: a higher one means records were gone */
    int64_t live_from;   /* records from this offset on were appended after the audit
                          * started: their receipt time measures latency */
    int64_t eof_offset;  /* where the partition's last end-of-partition event was, -1: none */
    int64_t end_target;  /* the high watermark to read up to before stopping, -1: unknown */
};

struct topic_state {
    const char *name;
    bool is_dlq;
    int partitions;
    struct part_state *parts;
};

struct command {
    struct opts o;
    rd_kafka_t *rk;
    struct topic_state topics[2];
    int n_topics;
    struct tg_sim_audit *au;
    struct tg_ledger *lg;
    struct tg_decoder *dec;             /* DLQ payloads: device payloads */
    struct tg_canonical_decoder *cdec;  /* telemetry records */
    bool latency_source_known;
    int64_t last_error_log_ms;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tidegate-sim audit --brokers LIST --ledger FILE [--topic T] [--dlq-topic T]\n"
            "                          [--timeout S] [--idle S] [--json] [--follow] [--from-end]\n"
            "                          [--max-devices N] [--clock-slack S]\n"
            "\n"
            "Reads the telemetry topic (and the DLQ topic) from the beginning and compares it\n"
            "with the ledger a `tidegate-sim run --ledger FILE` wrote: delivered, lost,\n"
            "duplicated, reordered and unexpected readings per device, DLQ records by reason,\n"
            "end-to-end latency. Exit 0 when the run released readings, its devices connected,\n"
            "and nothing released is lost, duplicated, reordered or unexpected (and, with\n"
            "--dlq-topic, every malformed payload is in the DLQ); 1 otherwise, or when the\n"
            "topics could not be read to their end; 2 on usage or setup errors.\n"
            "\n"
            "  --brokers LIST     Kafka bootstrap servers, host:port[,host:port...]\n"
            "  --ledger FILE      the run's ledger\n"
            "  --topic T          telemetry topic (default telemetry)\n"
            "  --dlq-topic T      dead-letter topic to check against the malformed count\n"
            "  --timeout S        give up waiting for missing readings S seconds after the\n"
            "                     ledger is loaded (default 60)\n"
            "  --idle S           stop once everything expected arrived and nothing came for\n"
            "                     S seconds (default 1); then every partition is still read\n"
            "                     to its high watermark, so late duplicates are seen\n"
            "  --clock-slack S    how far the gateway's clock may be behind this host's: a\n"
            "                     record the gateway received (gw_ts) more than S before the\n"
            "                     run started is an earlier run's (default 2)\n"
            "  --follow           start before or during the run: consume while waiting for\n"
            "                     the ledger file to appear (the run writes it at its end);\n"
            "                     latency is then measured live\n"
            "  --from-end         skip what the topics hold now (a cluster with earlier runs'\n"
            "                     data); with --follow, start the audit before the run\n"
            "  --json             print one JSON object instead of the summary\n"
            "  --max-devices N    problem devices detailed in the report (default 20)\n"
            "  -h, --help         this text\n");
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= 0) || v > 1e6)
        return false;
    *out = v;
    return true;
}

/* 0 parsed, 1 --help, -1 usage error (reported). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum { OPT_BROKERS = 256, OPT_TOPIC, OPT_LEDGER, OPT_DLQ, OPT_TIMEOUT, OPT_IDLE, OPT_JSON,
           OPT_FOLLOW, OPT_FROM_END, OPT_MAX_DEVICES, OPT_CLOCK_SLACK };
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"ledger", required_argument, NULL, OPT_LEDGER},
        {"dlq-topic", required_argument, NULL, OPT_DLQ},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"idle", required_argument, NULL, OPT_IDLE},
        {"json", no_argument, NULL, OPT_JSON},
        {"follow", no_argument, NULL, OPT_FOLLOW},
        {"from-end", no_argument, NULL, OPT_FROM_END},
        {"max-devices", required_argument, NULL, OPT_MAX_DEVICES},
        {"clock-slack", required_argument, NULL, OPT_CLOCK_SLACK},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct opts){.topic = "telemetry", .timeout_s = 60, .idle_s = 1, .max_devices = 20,
                       .clock_slack_s = TG_SIM_AUDIT_DEFAULT_CLOCK_SLACK_MS / 1000.0};
    optind = 1; /* the dispatcher may have run getopt already */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case OPT_BROKERS: o->brokers = optarg; break;
        case OPT_TOPIC: o->topic = optarg; break;
        case OPT_LEDGER: o->ledger = optarg; break;
        case OPT_DLQ: o->dlq_topic = optarg; break;
        case OPT_TIMEOUT:
            if (!parse_seconds(optarg, &o->timeout_s)) {
                fprintf(stderr, PROG ": --timeout: expected seconds, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case OPT_IDLE:
            if (!parse_seconds(optarg, &o->idle_s)) {
                fprintf(stderr, PROG ": --idle: expected seconds, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case OPT_CLOCK_SLACK:
            if (!parse_seconds(optarg, &o->clock_slack_s)) {
                fprintf(stderr, PROG ": --clock-slack: expected seconds, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case OPT_JSON: o->json = true; break;
        case OPT_FOLLOW: o->follow = true; break;
        case OPT_FROM_END: o->from_end = true; break;
        case OPT_MAX_DEVICES:
            errno = 0;
            o->max_devices = (size_t)strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end != '\0' || optarg[0] == '-') {
                fprintf(stderr, PROG ": --max-devices: expected a count, got \"%s\"\n", optarg);
                return -1;
            }
            break;
        case 'h': return 1;
        case ':':
            fprintf(stderr, PROG ": %s needs an argument (--help)\n", argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, PROG ": unknown option \"%s\" (--help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (!o->brokers || !o->ledger) {
        fprintf(stderr, PROG ": --brokers and --ledger are required (--help)\n");
        return -1;
    }
    if (o->dlq_topic && strcmp(o->dlq_topic, o->topic) == 0) {
        fprintf(stderr, PROG ": --dlq-topic must differ from --topic\n");
        return -1;
    }
    return 0;
}

static const char *header_value(const rd_kafka_message_t *msg, const char *name, char *buf,
                                size_t size)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *val;
    size_t len;
    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, &val, &len) != RD_KAFKA_RESP_ERR_NO_ERROR || !val)
        return NULL;
    snprintf(buf, size, "%.*s", (int)len, (const char *)val);
    return buf;
}

/* ---- consuming ---- */

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    struct command *cmd = opaque;
    /* Brokers going away and coming back (an outage test) repeat this every backoff: the
     * first line tells the story, the rest are rate-limited. */
    int64_t now = clock_ms(CLOCK_MONOTONIC);
    if (now - cmd->last_error_log_ms < ERROR_LOG_MS &&
        err != RD_KAFKA_RESP_ERR__FATAL)
        return;
    cmd->last_error_log_ms = now;
    fprintf(stderr, PROG ": kafka: %s: %s\n", rd_kafka_err2name((rd_kafka_resp_err_t)err),
            reason);
}

/* Partition count of topic, or -1 (said why): the audit needs the topic to exist. */
static int topic_partitions(rd_kafka_t *rk, const char *topic)
{
    int n = tg_sim_kafka_partitions(rk, PROG, topic, 10000);
    if (n == 0)
        fprintf(stderr, PROG ": topic %s does not exist or has no partitions\n", topic);
    return n > 0 ? n : -1;
}

static int consumer_start(struct command *cmd)
{
    static const char *const extra[] = {
        /* Without it a fetch that finds nothing waits 500 ms (the mock cluster does not
         * answer early when records arrive), which would be most of the latency measured. */
        "fetch.wait.max.ms", "10",
        /* After an outage librdkafka backs off up to 10 s between reconnects: the audit
         * would then measure its own reconnect as pipeline latency. The gateway uses the
         * same 1 s cap. */
        "reconnect.backoff.max.ms", "1000",
        NULL};
    /* No offsets are ever committed: the audit reads everything each time and leaves no trace
     * in the cluster beyond its (unused) group id. */
    cmd->rk = tg_sim_kafka_consumer_new(PROG, cmd->o.brokers, "tidegate-sim-audit", extra,
                                        kafka_error_cb, cmd);
    if (!cmd->rk)
        return -1;

    cmd->topics[cmd->n_topics++] = (struct topic_state){.name = cmd->o.topic};
    if (cmd->o.dlq_topic)
        cmd->topics[cmd->n_topics++] = (struct topic_state){.name = cmd->o.dlq_topic,
                                                            .is_dlq = true};
    int total = 0;
    for (int t = 0; t < cmd->n_topics; t++) {
        struct topic_state *ts = &cmd->topics[t];
        ts->partitions = topic_partitions(cmd->rk, ts->name);
        if (ts->partitions < 0)
            return -1;
        ts->parts = calloc((size_t)ts->partitions, sizeof *ts->parts);
        if (!ts->parts)
            return -1;
        total += ts->partitions;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(total);
    int64_t *hi = calloc((size_t)total, sizeof *hi);
    int rc = -1;
    if (!list || !hi)
        goto cleanup;
    for (int t = 0; t < cmd->n_topics; t++) {
        struct topic_state *ts = &cmd->topics[t];
        /* The end now: what is below it was there before the audit started. With --from-end
         * the audit starts there exactly (OFFSET_END would be resolved at the first fetch,
         * and a run started in between could slip records past). */
        int failed = 0;
        rd_kafka_resp_err_t err = tg_sim_kafka_watermarks(cmd->rk, ts->name, ts->partitions,
                                                          10000, cmd->o.from_end, NULL, hi,
                                                          &failed);
        if (err && cmd->o.from_end) {
            fprintf(stderr, PROG ": end offset of %s[%d]: %s\n", ts->name, failed,
                    rd_kafka_err2str(err));
            goto cleanup;
        }
        for (int p = 0; p < ts->partitions; p++) {
            /* Unknown end (-1): the partition's first EOF will tell (handle_message). */
            ts->parts[p].live_from = hi[p] < 0 ? INT64_MAX : hi[p];
            ts->parts[p].eof_offset = -1;
            ts->parts[p].end_target = -1;
            int64_t start = RD_KAFKA_OFFSET_BEGINNING;
            if (cmd->o.from_end) {
                start = hi[p];
                ts->parts[p].next_offset = hi[p];
            }
            rd_kafka_topic_partition_list_add(list, ts->name, p)->offset = start;
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(cmd->rk, list);
    if (err) {
        fprintf(stderr, PROG ": assign: %s\n", rd_kafka_err2str(err));
        goto cleanup;
    }
    rc = 0;
cleanup:
    free(hi);
    if (list)
        rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

static struct topic_state *topic_of(struct command *cmd, const rd_kafka_message_t *msg,
                                    struct part_state **part)
{
    const char *name = rd_kafka_topic_name(msg->rkt);
    for (int t = 0; t < cmd->n_topics; t++) {
        struct topic_state *ts = &cmd->topics[t];
        if (strcmp(ts->name, name) == 0 && msg->partition >= 0 &&
            msg->partition < ts->partitions) {
            *part = &ts->parts[msg->partition];
            return ts;
        }
    }
    return NULL;
}

static int handle_telemetry(struct command *cmd, const rd_kafka_message_t *msg,
                            struct part_state *part)
{
    rd_kafka_timestamp_type_t tstype;
    int64_t kafka_ts = rd_kafka_message_timestamp(msg, &tstype);
    bool append_time = tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME;
    if (!cmd->latency_source_known) {
        tg_sim_audit_latency_source(cmd->au, append_time);
        cmd->latency_source_known = true;
    }
    char ct[64];
    const char *ctv = header_value(msg, "content-type", ct, sizeof ct);
    struct tg_reading rd;
    struct tg_canonical_extra extra;
    if (!msg->payload ||
        tg_canonical_decode(cmd->cdec, msg->payload, msg->len,
                            tg_canonical_content_type(ctv, ctv ? strlen(ctv) : 0), &rd,
                            &extra) != TG_OK ||
        !rd.has_seq) {
        tg_sim_audit_undecodable(cmd->au);
        return 0;
    }
    struct tg_sim_audit_rec rec = {.device = rd.device, .boot = rd.boot, .seq = rd.seq,
                                   .partition = msg->partition, .ts_ms = rd.ts_ms,
                                   .gw_ts_ms = extra.gateway ? extra.gw_ts_ms : -1,
                                   .end_ms = -1};
    if (append_time) {
        rec.end_ms = kafka_ts;
    } else if (msg->offset >= part->live_from) {
        rec.end_ms = clock_ms(CLOCK_REALTIME);
    } else {
        /* Read from what the topic held when the audit started: when it arrived is unknown. */
        tg_sim_audit_backlog_record(cmd->au);
    }
    return tg_sim_audit_telemetry(cmd->au, &rec);
}

static int handle_dlq(struct command *cmd, const rd_kafka_message_t *msg)
{
    char reason[64], device[TG_DEVICE_ID_MAX + 1];
    const char *r = header_value(msg, "reason", reason, sizeof reason);
    const char *dev = header_value(msg, "device-id", device, sizeof device);
    if (!dev && msg->key && msg->key_len <= TG_DEVICE_ID_MAX) {
        snprintf(device, sizeof device, "%.*s", (int)msg->key_len, (const char *)msg->key);
        dev = device;
    }
    /* A payload that decodes as a native reading was rejected for what it says (clock skew,
     * range, signature), not for its form: it is one of the ledger's readings. */
    struct tg_decoded out;
    bool is_reading = dev && msg->payload &&
                      tg_decoder_decode(cmd->dec, TG_FORMAT_AUTO, dev, msg->payload, msg->len,
                                        clock_ms(CLOCK_REALTIME), &out) == TG_OK &&
                      out.format == TG_FORMAT_NATIVE && out.n_readings == 1 &&
                      out.readings[0].has_seq;
    uint64_t hash = tg_ledger_payload_hash(msg->payload ? msg->payload : "",
                                           msg->payload ? msg->len : 0);
    return tg_sim_audit_dlq(cmd->au, r, dev, is_reading, is_reading ? out.readings[0].boot : 0,
                            is_reading ? out.readings[0].seq : 0, hash);
}

/* 0 handled, -1 fatal. *activity is set when a record was read. */
static int handle_message(struct command *cmd, const rd_kafka_message_t *msg, bool *activity)
{
    struct part_state *part = NULL;
    struct topic_state *ts = msg->rkt ? topic_of(cmd, msg, &part) : NULL;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        if (part && msg->offset < part->live_from)
            part->live_from = msg->offset;
        if (part && msg->offset > part->eof_offset)
            part->eof_offset = msg->offset;
        return 0;
    }
    if (msg->err) {
        if (msg->err == RD_KAFKA_RESP_ERR__FATAL || rd_kafka_fatal_error(cmd->rk, NULL, 0)) {
            char why[256];
            rd_kafka_fatal_error(cmd->rk, why, sizeof why);
            fprintf(stderr, PROG ": kafka: fatal: %s\n", why);
            return -1;
        }
        kafka_error_cb(cmd->rk, msg->err, rd_kafka_message_errstr(msg), cmd);
        return 0;
    }
    if (!ts)
        return 0;
    *activity = true;
    if (msg->offset > part->next_offset)
        tg_sim_audit_offset_gap(cmd->au, msg->partition, msg->offset - part->next_offset);
    if (msg->offset >= part->next_offset)
        part->next_offset = msg->offset + 1;
    int rc = ts->is_dlq ? handle_dlq(cmd, msg) : handle_telemetry(cmd, msg, part);
    if (rc != 0)
        fprintf(stderr, PROG ": out of memory\n");
    return rc;
}

/* Sets every partition's end target to its high watermark now: what the audit reads up to
 * before it stops, so that a duplicate appended late, in a partition the audit had no more
 * reason to wait for, is still seen. 0, or -1 when a watermark cannot be had (retry). */
static int ends_fetch(struct command *cmd)
{
    for (int t = 0; t < cmd->n_topics; t++) {
        struct topic_state *ts = &cmd->topics[t];
        int64_t *hi = calloc((size_t)ts->partitions, sizeof *hi);
        if (!hi)
            return -1;
        /* Short: it is retried every poll until the drain's deadline. */
        rd_kafka_resp_err_t err =
            tg_sim_kafka_watermarks(cmd->rk, ts->name, ts->partitions, 2000, true, NULL, hi,
                                    NULL);
        for (int p = 0; p < ts->partitions && !err; p++)
            ts->parts[p].end_target = hi[p];
        free(hi);
        if (err)
            return -1;
    }
    return 0;
}

/* Partitions not yet read up to their end target (all of them while it is unknown). */
static int ends_missing(const struct command *cmd)
{
    int missing = 0;
    for (int t = 0; t < cmd->n_topics; t++) {
        const struct topic_state *ts = &cmd->topics[t];
        for (int p = 0; p < ts->partitions; p++) {
            const struct part_state *ps = &ts->parts[p];
            int64_t at = ps->next_offset > ps->eof_offset ? ps->next_offset : ps->eof_offset;
            if (ps->end_target < 0 || at < ps->end_target)
                missing++;
        }
    }
    return missing;
}

static int load_ledger(struct command *cmd)
{
    char err[512];
    cmd->lg = tg_ledger_read(cmd->o.ledger, err, sizeof err);
    if (!cmd->lg) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    if (tg_sim_audit_set_ledger(cmd->au, cmd->lg) != 0) {
        fprintf(stderr, PROG ": out of memory\n");
        return -1;
    }
    return 0;
}

static void command_cleanup(struct command *cmd)
{
    if (cmd->rk) {
        rd_kafka_assign(cmd->rk, NULL);
        rd_kafka_consumer_close(cmd->rk);
        rd_kafka_destroy(cmd->rk);
    }
    for (int t = 0; t < cmd->n_topics; t++)
        free(cmd->topics[t].parts);
    tg_sim_audit_destroy(cmd->au);
    tg_ledger_destroy(cmd->lg);
    tg_decoder_destroy(cmd->dec);
    tg_canonical_decoder_destroy(cmd->cdec);
}

int tg_sim_audit_main(int argc, char **argv)
{
    struct command cmd = {0};
    int rc = parse_opts(argc, argv, &cmd.o);
    if (rc > 0) {
        usage(stdout);
        return 0;
    }
    if (rc < 0)
        return EXIT_SETUP; /* parse_opts said what is wrong */
    rc = EXIT_SETUP;
    int64_t start_ms = clock_ms(CLOCK_MONOTONIC);
    char stopped_text[256];
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        perror(PROG ": sigaction");
        return EXIT_SETUP;
    }
    cmd.au = tg_sim_audit_new();
    cmd.dec = tg_decoder_new(NULL);
    cmd.cdec = tg_canonical_decoder_new(NULL);
    if (!cmd.au || !cmd.dec || !cmd.cdec) {
        fprintf(stderr, PROG ": out of memory\n");
        goto cleanup;
    }
    tg_sim_audit_expect_dlq(cmd.au, cmd.o.dlq_topic != NULL);
    tg_sim_audit_clock_slack(cmd.au, (int64_t)(cmd.o.clock_slack_s * 1000));
    /* Without --follow the ledger must be there before anything is consumed. */
    struct stat st;
    if (!cmd.o.follow && load_ledger(&cmd) != 0)
        goto cleanup;
    if (consumer_start(&cmd) != 0)
        goto cleanup;
    fprintf(stderr, PROG ": consuming %s (%d partitions)", cmd.topics[0].name,
            cmd.topics[0].partitions);
    if (cmd.n_topics > 1)
        fprintf(stderr, " and %s (%d)", cmd.topics[1].name, cmd.topics[1].partitions);
    fprintf(stderr, " from the %s%s\n", cmd.o.from_end ? "end" : "beginning",
            cmd.lg ? "" : "; waiting for the ledger");

    const int64_t timeout_ms = (int64_t)(cmd.o.timeout_s * 1000);
    const int64_t idle_ms = (int64_t)(cmd.o.idle_s * 1000);
    int64_t now = clock_ms(CLOCK_MONOTONIC);
    int64_t deadline = cmd.lg ? now + timeout_ms : INT64_MAX;
    int64_t last_record_ms = now, next_ledger_check = now, next_progress = now + PROGRESS_MS;
    const char *stopped = NULL, *why = NULL;
    bool draining = false, targets_known = false;
    int64_t drain_deadline = 0;
    int unread = 0;
    while (!stopped) {
        if (stop_signal) {
            stopped = "interrupted";
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(cmd.rk, POLL_MS);
        if (msg) {
            bool activity = false;
            int hr = handle_message(&cmd, msg, &activity);
            rd_kafka_message_destroy(msg);
            if (hr != 0)
                goto cleanup;
            if (activity)
                last_record_ms = clock_ms(CLOCK_MONOTONIC);
        }
        now = clock_ms(CLOCK_MONOTONIC);
        if (!cmd.lg && now >= next_ledger_check) {
            next_ledger_check = now + LEDGER_CHECK_MS;
            /* The run writes the ledger with a rename: once the name exists it is whole. */
            if (stat(cmd.o.ledger, &st) == 0) {
                if (load_ledger(&cmd) != 0)
                    goto cleanup;
                fprintf(stderr, PROG ": ledger %s loaded\n", cmd.o.ledger);
                deadline = now + timeout_ms;
            }
        }
        if (now >= next_progress) {
            next_progress = now + PROGRESS_MS;
            fprintf(stderr, PROG ": %" PRIu64 " records read%s\n",
                    tg_sim_audit_records(cmd.au),
                    cmd.lg ? "" : ", waiting for the ledger");
        }
        if (!draining) {
            if (cmd.lg && tg_sim_audit_complete(cmd.au) && now - last_record_ms >= idle_ms)
                why = "everything expected arrived and the topics were idle";
            else if (now >= deadline)
                why = "timeout (not everything expected arrived)";
            if (why) {
                /* Not yet: first read every partition to where it ends now. */
                draining = true;
                drain_deadline = now + DRAIN_MS;
            }
        }
        if (draining) {
            if (!targets_known)
                targets_known = ends_fetch(&cmd) == 0;
            unread = ends_missing(&cmd);
            if (unread == 0) {
                stopped = why;
            } else if (now >= drain_deadline) {
                snprintf(stopped_text, sizeof stopped_text,
                         "%s; %d partitions could not be read to their end", why, unread);
                stopped = stopped_text;
            }
        }
    }
    if (!cmd.lg) {
        fprintf(stderr, PROG ": stopped before the ledger %s appeared\n", cmd.o.ledger);
        goto cleanup;
    }
    struct tg_sim_audit_result res;
    if (tg_sim_audit_finish(cmd.au, &res) != 0) {
        fprintf(stderr, PROG ": out of memory\n");
        goto cleanup;
    }
    struct tg_sim_audit_context ctx = {
        .topic = cmd.topics[0].name,
        .dlq_topic = cmd.o.dlq_topic,
        .ledger_path = cmd.o.ledger,
        .partitions = cmd.topics[0].partitions,
        .stopped = stopped,
        .elapsed_s = (double)(clock_ms(CLOCK_MONOTONIC) - start_ms) / 1000.0,
    };
    if (cmd.o.json) {
        if (tg_sim_audit_print_json(cmd.au, &ctx, cmd.o.max_devices, stdout) != 0) {
            fprintf(stderr, PROG ": cannot write the JSON report\n");
            goto cleanup;
        }
    } else {
        tg_sim_audit_print_text(cmd.au, &ctx, cmd.o.max_devices, stdout);
    }
    if (fflush(stdout) != 0) {
        perror(PROG ": stdout");
        goto cleanup;
    }
    /* A partition not read to its end may hide a duplicate: that is no pass. */
    rc = res.ok && draining && unread == 0 ? 0 : EXIT_MISMATCH;
cleanup:
    command_cleanup(&cmd);
    return rc;
}

