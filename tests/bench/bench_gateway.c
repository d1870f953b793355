/*
 * bench_gateway: the tidegate daemon end to end, against a real Mosquitto and
 * tidegate-devkafka on loopback, next to the ceiling and floor of a bare libmosquitto
 * subscriber under the same load. Prints figures; it is not a test and asserts nothing.
 *
 *   bench_gateway [--publishers K] [--devices N] [--rate MSGS|max] [--duration S]
 *                 [--warmup S] [--mode durable|spill] [--board FILE] [--connections N]
 *                 [--outage S] [--inflight N] [--no-ceiling] [--tidegate PATH]
 *                 [--set section.key=value]... [--plugin PATH | --no-plugin]
 *                 [--payload json|cbor]
 *
 * It starts Mosquitto and tidegate-devkafka (3 brokers, telemetry with 12 partitions) in a
 * temporary directory, then runs the same load twice, each time from a fresh publisher
 * process (K connections, QoS1, DEVICES devices spread over them, paced to RATE or, with
 * `max`, keeping INFLIGHT messages in flight per connection, for DURATION seconds; readings
 * in JSON of about 120 bytes, issue 14's load, or with --payload cbor native CBOR of about
 * 103 bytes):
 *
 *   1. the ceiling: a bare libmosquitto subscriber (its own process, the gateway's number of
 *      connections, MQTT v5, QoS1) that counts messages and does nothing else: its msg/s is
 *      what any libmosquitto-based gateway can take, its CPU per message the receive floor;
 *   2. the gateway: tidegate with a generated config (journal in the temporary directory,
 *      metrics on a free port), while a Kafka consumer in this process reads the telemetry
 *      topic from its end and timestamps every record;
 *   3. the plugin (issue 14): a second Mosquitto loading tidegate_mosq.so with the same
 *      config (less the [mqtt] client keys) and a journal of its own, under the same load:
 *      the broker's CPU per message then includes the whole pipeline, and is set beside the
 *      broker + daemon of pass 2 (both measured in this run).
 *
 * Rates, CPU, I/O and latency are taken over the steady window: from WARMUP seconds after the
 * first message until the publisher stops (or, with --outage, until the outage begins).
 * With --outage S, every Kafka broker goes down for S seconds in the middle of the run, and
 * the drain that follows is measured: the journal backlog at recovery divided by the time
 * until tidegate_journal_records is back to its pre-outage level (which includes the time
 * the gateway takes to reconnect), and the delivery rate from the first delivery after
 * recovery until then (backlog plus live traffic).
 *
 * CPU comes from /proc/<pid>/stat (utime + stime, every thread), peak memory from VmHWM in
 * /proc/<pid>/status, disk writes from write_bytes in /proc/<pid>/io, which counts what the
 * process dirtied in the page cache for a block device (not the filesystem's own journal).
 *
 * Everything stays on 127.0.0.1, every phase has a deadline, and every child process is
 * stopped at the end (the harness kills them if this program dies).
 *
 * This file holds the options and main; each pass and the report have a file of their own,
 * listed in bench_gw_run.h, and the tools they use are in bench_gw.h.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <math.h>
#include <mosquitto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench_gw_run.h"

/* ------------------------------------------------------------------------------------------
 * Small helpers
 */

/* Set by SIGINT/SIGTERM: every loop and wait gives up, and the normal cleanup stops what
 * was started. */
volatile sig_atomic_t bgw_interrupted;

static void on_interrupt(int sig)
{
    bgw_interrupted = 1;
}

static void raise_nofile(void)
{
    /* Many connections in a handful of processes: lift the soft limit to the hard one (the
     * children inherit it). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "bench_gateway: cannot raise RLIMIT_NOFILE: %s\n", strerror(errno));
    }
}

/* The value of "key\t: value" in /proc/cpuinfo style text, copied to out. */
static void cpuinfo_field(const char *key, char *out, size_t size)
{
    snprintf(out, size, "unknown");
    char *info = bgw_read_small_file("/proc/cpuinfo");
    if (!info)
        return;
    for (char *line = strtok(info, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, key, strlen(key)) != 0)
            continue;
        char *colon = strchr(line, ':');
        if (colon) {
            snprintf(out, size, "%s", colon + 1 + (colon[1] == ' '));
            break;
        }
    }
    free(info);
}

static void print_command_line(int argc, char **argv)
{
    printf("command:");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool plain = *a != '\0';
        for (const char *p = a; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        "-_./=:,+@%", *p))
                plain = false;
        if (plain) {
            printf(" %s", a);
        } else {
            printf(" '");
            for (const char *p = a; *p; p++)
                if (*p == '\'')
                    printf("'\\''");
                else
                    putchar(*p);
            printf("'");
        }
    }
    printf("\n");
}

static void print_environment(void)
{
    char model[128];
    cpuinfo_field("model name", model, sizeof model);
    struct utsname un;
    char *loadavg = bgw_read_small_file("/proc/loadavg");
    if (loadavg)
        loadavg[strcspn(loadavg, " ")] = '\0'; /* the 1-minute figure */
    printf("machine: %ld CPUs (%s), Linux %s, load average %s at start\n",
           sysconf(_SC_NPROCESSORS_ONLN), model, uname(&un) == 0 ? un.release : "?",
           loadavg ? loadavg : "?");
    free(loadavg);

    char *mosq_out = NULL;
    const char *const argv[] = {"mosquitto", "-h", NULL};
    tg_harness_run(argv, NULL, 0, &mosq_out, 5000);
    if (mosq_out)
        mosq_out[strcspn(mosq_out, "\n")] = '\0';
    int maj, min, rev;
    mosquitto_lib_version(&maj, &min, &rev);
    printf("versions: %s (broker), libmosquitto %d.%d.%d, librdkafka %s\n",
           mosq_out && *mosq_out ? mosq_out : "mosquitto: unknown", maj, min, rev,
           rd_kafka_version_str());
    free(mosq_out);
}

/* ------------------------------------------------------------------------------------------
 * main
 */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_gateway [options]\n"
            "  --publishers K      publisher connections (10)\n"
            "  --devices N         devices, spread over the connections (10000)\n"
            "  --rate R|max        total msg/s, or max: keep --inflight per connection (10000)\n"
            "  --duration S        publishing time, seconds (20)\n"
            "  --warmup S          seconds at the start not counted (2)\n"
            "  --mode durable|spill  journal.mode of the gateway (durable)\n"
            "  --board FILE        board file passed to tidegate -b\n"
            "  --connections N     mqtt.connections of the gateway (and the bare subscriber) (1)\n"
            "  --outage S          take Kafka down for S seconds mid-run, measure the drain (0)\n"
            "  --inflight N        in-flight QoS1 messages per publisher at --rate max (20)\n"
            "  --no-ceiling        skip the bare-subscriber pass\n"
            "  --tidegate PATH     the daemon (default: <build>/bin/tidegate)\n"
            "  --set S.K=V         passed to tidegate as --set (repeatable), and to the plugin\n"
            "  --plugin PATH       tidegate_mosq.so for pass 3 (default: the one built)\n"
            "  --no-plugin         skip pass 3\n"
            "  --payload json|cbor readings as JSON (~120 B) or native CBOR (~103 B) (json)\n");
}

static bool parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return false;
    *out = (unsigned)v;
    return true;
}

static bool parse_secs(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static int parse_opts(int argc, char **argv, struct bgw_opts *o)
{
    *o = (struct bgw_opts){.publishers = 10, .devices = 10000, .rate = 10000, .duration_s = 20,
                       .warmup_s = 2, .mode = MODE_DURABLE, .connections = 1, .inflight = 20,
                       .ceiling = true, .json = true,
#ifdef TG_PLUGIN_DEFAULT
                       .plugin = TG_PLUGIN_DEFAULT
#endif
    };
    static const struct option longopts[] = {
        {"publishers", required_argument, NULL, 'k'}, {"devices", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'r'},       {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},     {"mode", required_argument, NULL, 'm'},
        {"board", required_argument, NULL, 'b'},      {"connections", required_argument, NULL, 'c'},
        {"outage", required_argument, NULL, 'o'},     {"inflight", required_argument, NULL, 'i'},
        {"no-ceiling", no_argument, NULL, 'C'},       {"tidegate", required_argument, NULL, 't'},
        {"set", required_argument, NULL, 's'},        {"help", no_argument, NULL, 'h'},
        {"plugin", required_argument, NULL, 'P'},     {"no-plugin", no_argument, NULL, 'N'},
        {"payload", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    o->sets = calloc((size_t)argc, sizeof *o->sets);
    if (!o->sets)
        return -1;
    int c, idx = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        bool ok = true;
        unsigned u;
        switch (c) {
        case 'k': ok = parse_uint(optarg, 1, 10000, &o->publishers); break;
        case 'n': ok = parse_uint(optarg, 1, 1000000, &o->devices); break;
        case 'r':
            if (strcmp(optarg, "max") == 0)
                o->rate = 0;
            else if ((ok = parse_uint(optarg, 1, 10000000, &u)))
                o->rate = u;
            break;
        case 'd': ok = parse_secs(optarg, 1, 3600, &o->duration_s); break;
        case 'w': ok = parse_secs(optarg, 0, 600, &o->warmup_s); break;
        case 'm':
            if (strcmp(optarg, "durable") == 0)
                o->mode = MODE_DURABLE;
            else if (strcmp(optarg, "spill") == 0)
                o->mode = MODE_SPILL;
            else
                ok = false;
            break;
        case 'b': o->board = optarg; break;
        case 'c': ok = parse_uint(optarg, 1, 64, &o->connections); break;
        case 'o': ok = parse_secs(optarg, 0, 3600, &o->outage_s); break;
        case 'i': ok = parse_uint(optarg, 1, 65535, &o->inflight); break;
        case 'C': o->ceiling = false; break;
        case 't': o->tidegate = optarg; break;
        case 's': o->sets[o->n_sets++] = optarg; break;
        case 'P': o->plugin = optarg; break;
        case 'N': o->plugin = NULL; break;
        case 'p':
            if (strcmp(optarg, "json") == 0)
                o->json = true;
            else if (strcmp(optarg, "cbor") == 0)
                o->json = false;
            else
                ok = false;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (!ok) {
            fprintf(stderr, "bench_gateway: bad value for --%s: '%s'\n", longopts[idx].name,
                    optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench_gateway: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->devices < o->publishers) {
        fprintf(stderr, "bench_gateway: --devices must be at least --publishers\n");
        return -1;
    }
    if (o->duration_s < o->warmup_s + 1) {
        fprintf(stderr, "bench_gateway: --duration must exceed --warmup by 1 s at least\n");
        return -1;
    }
    if (o->outage_s > 0 &&
        fmax(o->warmup_s + 5, (o->duration_s - o->outage_s) / 2) + o->outage_s >
            o->duration_s - 1) {
        fprintf(stderr, "bench_gateway: --duration %.0f is too short for --outage %.0f: it "
                        "needs the warm-up, 5 s of steady state and 1 s after the outage "
                        "(e.g. --duration %.0f)\n",
                o->duration_s, o->outage_s, o->warmup_s + 5 + o->outage_s + 10);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--role") == 0) {
        if (strcmp(argv[2], "pub") == 0)
            return bgw_publisher_main(argc - 3, argv + 3);
        if (strcmp(argv[2], "sub") == 0)
            return bgw_subscriber_main(argc - 3, argv + 3);
        fprintf(stderr, "bench_gateway: unknown role '%s'\n", argv[2]);
        return 2;
    }
    struct bgw_ctx cx = {0};
    if (parse_opts(argc, argv, &cx.o) < 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    raise_nofile();
    struct sigaction sa = {.sa_handler = on_interrupt};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int status = 1;
    struct bgw_ceiling_result cr = {0};
    struct bgw_gateway_result gr = {0};
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "bench_gateway: /proc/self/exe: %s\n", strerror(errno));
        goto cleanup;
    }
    self[n] = '\0';
    cx.self = self;
    if (cx.o.tidegate)
        cx.tidegate = strdup(cx.o.tidegate);
    else if (asprintf(&cx.tidegate, "%s/tidegate", tg_harness_bin_dir()) < 0)
        cx.tidegate = NULL;
    if (!cx.tidegate)
        goto cleanup;
    cx.boot = (uint64_t)(bgw_wall_us() / 1000000) * 4; /* fresh (boot, seq) per run and pass */

    printf("== bench_gateway ==\n");
    print_command_line(argc, argv);
    print_environment();
    bool have_gateway = access(cx.tidegate, X_OK) == 0;
    if (!have_gateway)
        printf("note: %s not found: the tidegate pass is skipped\n", cx.tidegate);

    cx.dir = tg_harness_tmpdir_new("bench-gw");
    if (!cx.dir)
        goto cleanup;
    struct statfs sfs;
    cx.disk_is_tmpfs = statfs(cx.dir, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC_VALUE;
    /* Room for every message the publishers can get ahead of a slow subscriber (the queue
     * only lives for one pass); 20 in flight to a subscriber, as Mosquitto's default. */
    cx.mq = tg_harness_mosquitto_start(0, "max_queued_messages 10000000\n"
                                          "max_queued_bytes 0\n"
                                          "max_inflight_messages 20\n");
    if (!cx.mq)
        goto cleanup;
    cx.broker_pid = tg_harness_proc_pid(tg_harness_mosquitto_proc(cx.mq));
    cx.dk = tg_harness_devkafka_start(NULL); /* 3 brokers, telemetry with 12 partitions */
    if (!cx.dk)
        goto cleanup;
    printf("mosquitto on 127.0.0.1:%d, devkafka at %s, work dir %s\n",
           tg_harness_mosquitto_port(cx.mq), tg_harness_devkafka_bootstrap(cx.dk), cx.dir);

    if (cx.o.ceiling && bgw_run_ceiling(&cx, &cr) < 0) {
        fprintf(stderr, "bench_gateway: the bare-subscriber pass failed\n");
        goto cleanup;
    }
    if (have_gateway && bgw_run_gateway(&cx, &gr) < 0) {
        fprintf(stderr, "bench_gateway: the tidegate pass failed (logs in %s)\n", cx.dir);
        goto cleanup;
    }
    bgw_report(&cx, &cr, &gr);
    if (cx.o.plugin && access(cx.o.plugin, R_OK) == 0) {
        struct bgw_plugin_result pr;
        if (bgw_run_plugin(&cx, &pr) < 0) {
            fprintf(stderr, "bench_gateway: the plugin pass failed (logs in %s)\n", cx.dir);
            goto cleanup;
        }
        bgw_report_plugin(&gr, &pr);
    } else if (cx.o.plugin) {
        printf("note: %s not found: the plugin pass is skipped\n", cx.o.plugin);
    }
    status = 0;

cleanup:
    tg_harness_devkafka_destroy(cx.dk);
    tg_harness_mosquitto_destroy(cx.mq);
    if (status == 0 || bgw_interrupted)
        tg_harness_tmpdir_done(cx.dir); /* on failure the harness keeps it and says where */
    else
        free(cx.dir);
    free(cx.tidegate);
    free(cx.o.sets);
    return status;
}
