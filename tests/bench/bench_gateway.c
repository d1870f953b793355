/*
 * bench_gateway: the tidegate daemon end to end, against a real Mosquitto and
 * tidegate-devkafka on loopback, next to the ceiling and floor of a bare libmosquitto
 * subscriber under the same load. Prints figures; it is not a test and asserts nothing.
 *
 *   bench_gateway [--publishers K] [--devices N] [--rate MSGS|max] [--duration S]
 *                 [--warmup S] [--mode durable|spill] [--board FILE] [--connections N]
 *                 [--outage S] [--inflight N] [--no-ceiling] [--tidegate PATH]
 *                 [--set section.key=value]... [--plugin PATH | --no-plugin]
 *
 * It starts Mosquitto and tidegate-devkafka (3 brokers, telemetry with 12 partitions) in a
 * temporary directory, then runs the same load twice, each time from a fresh publisher
 * process (K connections, QoS1, DEVICES devices spread over them, paced to RATE or, with
 * `max`, keeping INFLIGHT messages in flight per connection, for DURATION seconds):
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

#include "bench_gw.h"
#include "harness.h"

#define TOPIC_FILTER "telemetry/+"
#define KAFKA_TOPIC "telemetry"
#define READY_TIMEOUT_MS 30000
#define LINE_TIMEOUT_MS 20000
#define DONE_TIMEOUT_MS 30000        /* publisher: last PUBACKs after the duration */
#define CATCHUP_TIMEOUT_MS 120000    /* subscriber/gateway: delivering what was published */
#define DRAIN_TIMEOUT_MS 300000      /* after an outage: journal back to its normal level */
#define STOP_TIMEOUT_MS 30000        /* SIGTERM to exit */
#define TMPFS_MAGIC_VALUE 0x01021994

/* Targets of the gateway issue, reported as met or not. */
#define TARGET_CEILING_SHARE 0.90
#define TARGET_CPU_US 5.0
#define TARGET_RSS_KB (16 * 1024)
#define TARGET_WRITE_B 32.0
#define TARGET_P99_MS 50.0
#define TARGET_DRAIN 50000.0
#define TARGET_RATE 10000

enum mode { MODE_DURABLE, MODE_SPILL };

struct opts {
    unsigned publishers;
    unsigned devices;
    uint64_t rate; /* 0 = max */
    double duration_s;
    double warmup_s;
    enum mode mode;
    const char *board;
    unsigned connections;
    double outage_s;
    unsigned inflight;
    bool ceiling;
    const char *tidegate;
    const char **sets;
    size_t n_sets;
    const char *plugin;  /* tidegate_mosq.so, or NULL: no plugin pass */
};

/* What one run of the load gave, and its state while it runs. */
struct load {
    struct tg_harness_proc *proc;
    int64_t start_mono_us, start_wall_us;
    bool published, done;
    int64_t published_mono_us;
    uint64_t sent, bytes, acked;
    int64_t elapsed_us;
};

/* A snapshot taken at the edges of a window. */
struct snap {
    int64_t mono_us, wall_us;
    struct bgw_proc_sample proc;   /* the measured process: bare subscriber or tidegate */
    struct bgw_proc_sample broker;
    uint64_t sub_count;            /* bare subscriber */
    bool metrics_ok;               /* tidegate */
    double received, delivered, journal_records;
    bool hist_ok;
    struct bgw_hist e2e;
};

struct ceiling_result {
    bool ran;
    double pub_rate, window_s, msgs_per_s, cpu_us, cpu_share, broker_cpu_us;
    uint64_t published, received_total;
    double behind;  /* published but not yet received when publishing stopped */
    bool complete;
    long hwm_kb;
};

struct gateway_result {
    bool ran;
    double pub_rate, window_s, received_per_s, delivered_per_s, cpu_us, cpu_share, broker_cpu_us;
    uint64_t published;
    double behind;
    double received_total, delivered_total;
    bool complete;
    uint64_t kafka_records;
    bool io_ok;
    double write_b, write_b_run, cancelled_b_run, wchar_b, rchar_b, read_b;
    long hwm_kb, hwm_run_kb;
    size_t lat_n;
    double lat_p50, lat_p99, lat_max;
    bool hist_ok, hist_p99_beyond;
    double hist_p50, hist_p99;
    int exit_status;
    /* outage */
    bool outage_ran, drained;
    double baseline_records, backlog, backlog_max, reconnect_s, drain_s, drain_rate;
    double drain_delivered_rate; /* from the first delivery after recovery to the end */
    uint64_t consumer_errors;
};

struct ctx {
    struct opts o;
    const char *self;          /* this executable, for the --role children */
    char *dir;                 /* temporary directory */
    char *tidegate;            /* tidegate binary */
    struct tg_harness_mosquitto *mq;
    struct tg_harness_devkafka *dk;
    pid_t broker_pid;
    uint64_t boot;             /* device boot counter of this run; each pass adds one */
    double payload_avg;
    bool disk_is_tmpfs;
};

/* ------------------------------------------------------------------------------------------
 * Small helpers
 */

/* Set by SIGINT/SIGTERM: every loop and wait gives up, and the normal cleanup stops what
 * was started. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    interrupted = 1;
}

static double secs(int64_t us)
{
    return (double)us / 1e6;
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

static char *read_small_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&buf, &cap, '\0', f);
    fclose(f);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* The value of "key\t: value" in /proc/cpuinfo style text, copied to out. */
static void cpuinfo_field(const char *key, char *out, size_t size)
{
    snprintf(out, size, "unknown");
    char *info = read_small_file("/proc/cpuinfo");
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
    char *loadavg = read_small_file("/proc/loadavg");
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
 * The publisher child
 */

static int read_line(struct tg_harness_proc *proc, char *buf, size_t size, int timeout_ms,
                     const char *what)
{
    int n = tg_harness_proc_read_line(proc, buf, size, timeout_ms);
    if (n < 0)
        fprintf(stderr, "bench_gateway: no %s from %s within %d ms (log: %s)\n", what,
                tg_harness_proc_name(proc), timeout_ms, tg_harness_proc_stderr_path(proc));
    return n;
}

/* Starts a publisher process and waits until every connection is up. */
static int load_start(struct ctx *cx, struct load *ld, const char *name)
{
    memset(ld, 0, sizeof *ld);
    char port[16], conns[16], devices[16], rate[32], dur[32], inflight[16], boot[32];
    snprintf(port, sizeof port, "%d", tg_harness_mosquitto_port(cx->mq));
    snprintf(conns, sizeof conns, "%u", cx->o.publishers);
    snprintf(devices, sizeof devices, "%u", cx->o.devices);
    snprintf(rate, sizeof rate, "%" PRIu64, cx->o.rate);
    snprintf(dur, sizeof dur, "%.0f", cx->o.duration_s * 1000);
    snprintf(inflight, sizeof inflight, "%u", cx->o.inflight);
    snprintf(boot, sizeof boot, "%" PRIu64, ++cx->boot);
    const char *const argv[] = {cx->self, "--role", "pub", tg_harness_mosquitto_host(cx->mq),
                                port, conns, devices, rate, dur, inflight, boot, NULL};
    ld->proc = tg_harness_proc_start(cx->dir, name, argv, NULL,
                                     TG_HARNESS_PROC_STDIN_PIPE | TG_HARNESS_PROC_STDOUT_PIPE);
    if (!ld->proc)
        return -1;
    char line[256];
    if (read_line(ld->proc, line, sizeof line, LINE_TIMEOUT_MS, "ready line") < 0)
        return -1;
    if (strcmp(line, "ready") != 0) {
        fprintf(stderr, "bench_gateway: publisher: %s\n", line);
        return -1;
    }
    return 0;
}

static int load_go(struct load *ld)
{
    char line[256];
    if (tg_harness_proc_write(ld->proc, "go\n") < 0 ||
        read_line(ld->proc, line, sizeof line, LINE_TIMEOUT_MS, "start") < 0 ||
        sscanf(line, "started %" SCNd64, &ld->start_wall_us) != 1) {
        fprintf(stderr, "bench_gateway: the publisher did not start\n");
        return -1;
    }
    ld->start_mono_us = bgw_mono_us();
    return 0;
}

/* Takes one line from the publisher if one comes within timeout_ms. Returns 0, or -1 when
 * the publisher failed or died. */
static int load_poll(struct load *ld, int timeout_ms)
{
    char line[256];
    if (interrupted) {
        fprintf(stderr, "bench_gateway: interrupted\n");
        return -1;
    }
    int n = tg_harness_proc_read_line(ld->proc, line, sizeof line, timeout_ms);
    if (n < 0) {
        if (!ld->done && !tg_harness_proc_running(ld->proc)) {
            fprintf(stderr, "bench_gateway: the publisher exited early (log: %s)\n",
                    tg_harness_proc_stderr_path(ld->proc));
            return -1;
        }
        return 0;
    }
    if (sscanf(line, "published sent=%" SCNu64 " bytes=%" SCNu64 " elapsed_us=%" SCNd64,
               &ld->sent, &ld->bytes, &ld->elapsed_us) == 3) {
        ld->published = true;
        ld->published_mono_us = bgw_mono_us();
    } else if (sscanf(line, "done sent=%" SCNu64 " acked=%" SCNu64, &ld->sent, &ld->acked) == 2) {
        ld->done = true;
    } else {
        fprintf(stderr, "bench_gateway: publisher: %s\n", line);
        if (strncmp(line, "error", 5) == 0)
            return -1;
    }
    return 0;
}

/* After "published": waits for the publisher's last acknowledgements and its exit. */
static int load_finish(struct load *ld)
{
    int64_t deadline = bgw_mono_us() + DONE_TIMEOUT_MS * INT64_C(1000);
    while (!ld->done) {
        if (bgw_mono_us() > deadline) {
            fprintf(stderr, "bench_gateway: the publisher did not finish\n");
            return -1;
        }
        if (load_poll(ld, 100) < 0)
            return -1;
    }
    int status;
    if (tg_harness_proc_wait(ld->proc, 10000, &status) < 0 || !tg_harness_exited_ok(status)) {
        fprintf(stderr, "bench_gateway: the publisher did not exit cleanly\n");
        return -1;
    }
    if (ld->acked < ld->sent)
        fprintf(stderr, "bench_gateway: only %" PRIu64 " of %" PRIu64 " messages acknowledged\n",
                ld->acked, ld->sent);
    return 0;
}

static double load_rate(const struct load *ld)
{
    return ld->elapsed_us > 0 ? (double)ld->sent / secs(ld->elapsed_us) : 0;
}

/* ------------------------------------------------------------------------------------------
 * Pass 1: the bare subscriber
 */

static int sub_count(struct tg_harness_proc *sub, uint64_t *out)
{
    char line[128];
    if (tg_harness_proc_write(sub, "count\n") < 0 ||
        read_line(sub, line, sizeof line, 5000, "count") < 0 ||
        sscanf(line, "count %" SCNu64, out) != 1)
        return -1;
    return 0;
}

static int sub_snap(struct ctx *cx, struct tg_harness_proc *sub, struct snap *s)
{
    memset(s, 0, sizeof *s);
    s->mono_us = bgw_mono_us();
    s->wall_us = bgw_wall_us();
    bgw_proc_sample(tg_harness_proc_pid(sub), &s->proc);
    bgw_proc_sample(cx->broker_pid, &s->broker);
    return sub_count(sub, &s->sub_count);
}

struct sub_catchup {
    struct tg_harness_proc *sub;
    uint64_t target, seen;
    bool failed;
};

static bool sub_caught_up(void *ud)
{
    struct sub_catchup *sc = ud;
    if (interrupted || sub_count(sc->sub, &sc->seen) < 0) {
        sc->failed = true;
        return true;
    }
    return sc->seen >= sc->target;
}

static int run_ceiling(struct ctx *cx, struct ceiling_result *res)
{
    int rc = -1;
    struct load ld = {0};
    char port[16], conns[16];
    snprintf(port, sizeof port, "%d", tg_harness_mosquitto_port(cx->mq));
    snprintf(conns, sizeof conns, "%u", cx->o.connections);
    const char *const argv[] = {cx->self, "--role", "sub", tg_harness_mosquitto_host(cx->mq),
                                port, conns, TOPIC_FILTER, "1", NULL};
    struct tg_harness_proc *sub = tg_harness_proc_start(
        cx->dir, "bare-subscriber", argv, NULL,
        TG_HARNESS_PROC_STDIN_PIPE | TG_HARNESS_PROC_STDOUT_PIPE);
    char line[128];
    if (!sub || read_line(sub, line, sizeof line, READY_TIMEOUT_MS, "ready line") < 0 ||
        strcmp(line, "ready") != 0)
        goto cleanup;
    printf("pass 1: bare subscriber (pid %ld) ...\n", (long)tg_harness_proc_pid(sub));
    fflush(stdout);

    struct snap s0, s1;
    bool have_s0 = false;
    if (load_start(cx, &ld, "publisher-ceiling") < 0 || load_go(&ld) < 0)
        goto cleanup;
    int64_t window_from = ld.start_mono_us + (int64_t)(cx->o.warmup_s * 1e6);
    while (!ld.published) {
        if (load_poll(&ld, 20) < 0)
            goto cleanup;
        if (!have_s0 && bgw_mono_us() >= window_from) {
            if (sub_snap(cx, sub, &s0) < 0)
                goto cleanup;
            have_s0 = true;
        }
    }
    if (!have_s0 || sub_snap(cx, sub, &s1) < 0)
        goto cleanup;
    long hwm = bgw_proc_status_kb(tg_harness_proc_pid(sub), "VmHWM");
    if (load_finish(&ld) < 0)
        goto cleanup;

    /* What the broker queued for a subscriber slower than the publishers still has to
     * arrive before the next pass starts. */
    struct sub_catchup sc = {.sub = sub, .target = ld.acked};
    tg_harness_wait_until(sub_caught_up, &sc, CATCHUP_TIMEOUT_MS);
    if (sc.failed)
        goto cleanup;

    double window = secs(s1.mono_us - s0.mono_us);
    double msgs = (double)(s1.sub_count - s0.sub_count);
    *res = (struct ceiling_result){
        .ran = true,
        .pub_rate = load_rate(&ld),
        .window_s = window,
        .msgs_per_s = msgs / window,
        .cpu_us = msgs > 0 ? (s1.proc.cpu_s - s0.proc.cpu_s) * 1e6 / msgs : NAN,
        .cpu_share = (s1.proc.cpu_s - s0.proc.cpu_s) / window,
        .broker_cpu_us = msgs > 0 ? (s1.broker.cpu_s - s0.broker.cpu_s) * 1e6 / msgs : NAN,
        .published = ld.sent,
        .behind = (double)ld.sent - (double)s1.sub_count,
        .received_total = sc.seen,
        .complete = sc.seen >= ld.sent,
        .hwm_kb = hwm,
    };
    cx->payload_avg = ld.sent ? (double)ld.bytes / (double)ld.sent : 0;
    rc = 0;

cleanup:
    if (sub) {
        tg_harness_proc_write(sub, "quit\n");
        tg_harness_proc_close_stdin(sub);
        tg_harness_proc_stop(sub, 5000);
    }
    tg_harness_proc_destroy(sub);
    tg_harness_proc_destroy(ld.proc);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Pass 2: tidegate
 */

struct gateway {
    struct tg_harness_proc *proc;
    pid_t pid;
    int metrics_port;
    bool exited;
};

static int write_config(struct ctx *cx, const char *path, int metrics_port)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_gateway: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f,
            "# generated by bench_gateway\n"
            "[gateway]\nid = bench\n"
            "[mqtt]\nhost = %s\nport = %d\nclient_id = tidegate-bench\ntopic = %s\nqos = 1\n"
            "connections = %u\n"
            "[kafka]\nbrokers = %s\ntopic = %s\n"
            "[journal]\npath = %s/journal.db\nmode = %s\n"
            "[metrics]\nlisten = 127.0.0.1:%d\n",
            tg_harness_mosquitto_host(cx->mq), tg_harness_mosquitto_port(cx->mq), TOPIC_FILTER,
            cx->o.connections, tg_harness_devkafka_bootstrap(cx->dk), KAFKA_TOPIC, cx->dir,
            cx->o.mode == MODE_DURABLE ? "durable" : "spill", metrics_port);
    if (fclose(f) != 0) {
        fprintf(stderr, "bench_gateway: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Scrapes /metrics into s (metrics_ok false when the scrape failed). */
static void gw_scrape(struct gateway *gw, struct snap *s)
{
    int status = 0;
    char *text = bgw_http_get(gw->metrics_port, "/metrics", 5000, &status);
    s->metrics_ok = text && status == 200;
    if (s->metrics_ok) {
        s->received = bgw_metric_sum(text, "tidegate_messages_received_total", NULL);
        s->delivered = bgw_metric_sum(text, "tidegate_messages_delivered_total", NULL);
        s->journal_records = bgw_metric_sum(text, "tidegate_journal_records", NULL);
        s->hist_ok = bgw_metric_hist(text, "tidegate_e2e_latency_seconds", &s->e2e);
    }
    free(text);
}

static void gw_snap(struct ctx *cx, struct gateway *gw, struct snap *s)
{
    memset(s, 0, sizeof *s);
    s->mono_us = bgw_mono_us();
    s->wall_us = bgw_wall_us();
    bgw_proc_sample(gw->pid, &s->proc);
    bgw_proc_sample(cx->broker_pid, &s->broker);
    gw_scrape(gw, s);
}

struct gw_ready {
    struct gateway *gw;
    unsigned connections;
    bool exited;
    bool kafka_seen;
};

/* Ready: /healthz answers 200, every MQTT connection is up, and Kafka is reachable. */
static bool gw_ready_cond(void *ud)
{
    struct gw_ready *rd = ud;
    if (interrupted || !tg_harness_proc_running(rd->gw->proc)) {
        rd->exited = true;
        return true;
    }
    int status = 0;
    char *text = bgw_http_get(rd->gw->metrics_port, "/healthz", 2000, &status);
    bool healthy = text && status == 200;
    free(text);
    if (!healthy)
        return false;
    text = bgw_http_get(rd->gw->metrics_port, "/metrics", 2000, &status);
    if (!text || status != 200) {
        free(text);
        return false;
    }
    bool found_conns, found_kafka;
    double conns = bgw_metric_sum(text, "tidegate_mqtt_connections", &found_conns);
    double kafka_up = bgw_metric_sum(text, "tidegate_kafka_up", &found_kafka);
    free(text);
    rd->kafka_seen = found_kafka;
    return found_conns && conns == rd->connections && (!found_kafka || kafka_up >= 1);
}

static void print_log_tail(const char *path)
{
    char *log = read_small_file(path);
    if (!log)
        return;
    size_t len = strlen(log);
    const char *from = len > 3000 ? log + len - 3000 : log;
    fprintf(stderr, "--- last lines of %s ---\n%s\n---\n", path, from);
    free(log);
}

static int gw_start(struct ctx *cx, struct gateway *gw)
{
    char conf[PATH_MAX];
    snprintf(conf, sizeof conf, "%s/gateway.ini", cx->dir);
    /* The metrics port is free when we pick it but someone may take it before tidegate binds
     * it: try a few. */
    for (int attempt = 0; attempt < 3; attempt++) {
        memset(gw, 0, sizeof *gw);
        gw->metrics_port = tg_harness_free_port();
        if (gw->metrics_port < 0 || write_config(cx, conf, gw->metrics_port) < 0)
            return -1;
        const char **argv = calloc(8 + 2 * cx->o.n_sets, sizeof *argv);
        if (!argv)
            return -1;
        size_t n = 0;
        argv[n++] = cx->tidegate;
        argv[n++] = "-c";
        argv[n++] = conf;
        if (cx->o.board) {
            argv[n++] = "-b";
            argv[n++] = cx->o.board;
        }
        for (size_t i = 0; i < cx->o.n_sets; i++) {
            argv[n++] = "--set";
            argv[n++] = cx->o.sets[i];
        }
        argv[n] = NULL;
        gw->proc = tg_harness_proc_start(cx->dir, "tidegate", argv, NULL, 0);
        free(argv);
        if (!gw->proc)
            return -1;
        gw->pid = tg_harness_proc_pid(gw->proc);
        struct gw_ready rd = {.gw = gw, .connections = cx->o.connections};
        bool ok = tg_harness_wait_until(gw_ready_cond, &rd, READY_TIMEOUT_MS);
        if (ok && !rd.exited) {
            if (!rd.kafka_seen)
                fprintf(stderr, "bench_gateway: tidegate has no tidegate_kafka_up metric\n");
            return 0;
        }
        if (!rd.exited) {
            fprintf(stderr, "bench_gateway: tidegate not ready within %d ms\n",
                    READY_TIMEOUT_MS);
            print_log_tail(tg_harness_proc_stderr_path(gw->proc));
            tg_harness_proc_destroy(gw->proc);
            gw->proc = NULL;
            return -1;
        }
        fprintf(stderr, "bench_gateway: tidegate exited during startup\n");
        print_log_tail(tg_harness_proc_stderr_path(gw->proc));
        bool port_taken = tg_harness_file_contains(tg_harness_proc_stderr_path(gw->proc),
                                                   "in use");
        tg_harness_proc_destroy(gw->proc);
        gw->proc = NULL;
        if (!port_taken)
            break;
    }
    return -1;
}

struct gw_catchup {
    struct gateway *gw;
    double target;
    struct snap s;
};

static bool gw_delivered_cond(void *ud)
{
    struct gw_catchup *gc = ud;
    gw_scrape(gc->gw, &gc->s);
    return (gc->s.metrics_ok && gc->s.delivered >= gc->target) || interrupted ||
           !tg_harness_proc_running(gc->gw->proc);
}

struct kafka_catchup {
    struct bgw_consumer *kc;
    int64_t from_ms;
    uint64_t target, seen;
};

static bool kafka_cond(void *ud)
{
    struct kafka_catchup *kq = ud;
    kq->seen = bgw_consumer_count(kq->kc, kq->from_ms);
    return kq->seen >= kq->target || interrupted;
}

enum outage_phase { OUT_NONE, OUT_BEFORE, OUT_DOWN, OUT_DRAIN, OUT_DONE };

static int run_gateway(struct ctx *cx, struct gateway_result *res)
{
    int rc = -1;
    struct gateway gw = {0};
    struct load ld = {0};
    struct bgw_consumer *kc = NULL;
    char err[512];
    memset(res, 0, sizeof *res);

    if (gw_start(cx, &gw) < 0)
        goto cleanup;
    printf("pass 2: tidegate (pid %ld, metrics on 127.0.0.1:%d) ...\n", (long)gw.pid,
           gw.metrics_port);
    fflush(stdout);
    struct snap s_ready, s0, s1, s_end;
    gw_snap(cx, &gw, &s_ready);
    /* The publisher is forked before the consumer's threads exist. */
    if (load_start(cx, &ld, "publisher-gateway") < 0)
        goto cleanup;
    kc = bgw_consumer_new(tg_harness_devkafka_bootstrap(cx->dk), KAFKA_TOPIC, err, sizeof err);
    if (!kc) {
        fprintf(stderr, "bench_gateway: Kafka consumer: %s\n", err);
        goto cleanup;
    }
    if (bgw_consumer_start(kc) < 0 || load_go(&ld) < 0)
        goto cleanup;

    bool have_s0 = false, have_s1 = false;
    int64_t window_from = ld.start_mono_us + (int64_t)(cx->o.warmup_s * 1e6);
    enum outage_phase phase = cx->o.outage_s > 0 ? OUT_BEFORE : OUT_NONE;
    /* The outage sits in the middle of what the publishing time leaves after the warm-up
     * and a few seconds of steady state (checked in main), so that the steady window comes
     * first and live traffic continues during the drain. */
    int64_t outage_us = (int64_t)(cx->o.outage_s * 1e6);
    double before_s = fmax(cx->o.warmup_s + 5, (cx->o.duration_s - cx->o.outage_s) / 2);
    int64_t outage_at = ld.start_mono_us + (int64_t)(before_s * 1e6);
    int64_t out_begin = 0, recovered = 0, first_delivery = 0, drained_at = 0, next_scrape = 0;
    double baseline = 0, backlog = 0, backlog_max = 0, delivered_at_recovery = 0;
    double delivered_at_first = 0, delivered_at_drained = 0;

    for (;;) {
        if (load_poll(&ld, phase == OUT_NONE || phase == OUT_DONE ? 50 : 20) < 0)
            goto cleanup;
        int64_t now = bgw_mono_us();
        if (!tg_harness_proc_running(gw.proc)) {
            fprintf(stderr, "bench_gateway: tidegate exited during the run\n");
            print_log_tail(tg_harness_proc_stderr_path(gw.proc));
            gw.exited = true;
            goto cleanup;
        }
        if (!have_s0 && now >= window_from) {
            gw_snap(cx, &gw, &s0);
            have_s0 = true;
        }
        struct snap m;
        switch (phase) {
        case OUT_NONE:
        case OUT_DONE:
            break;
        case OUT_BEFORE:
            /* the journal's normal level with Kafka up, sampled twice a second (scrapes cost
             * the gateway CPU, so not more often inside the steady window) */
            if (have_s0 && now >= next_scrape) {
                gw_scrape(&gw, &m);
                if (m.metrics_ok && m.journal_records > baseline)
                    baseline = m.journal_records;
                next_scrape = now + 500000;
            }
            if (now >= outage_at) {
                gw_snap(cx, &gw, &s1);
                have_s1 = true;
                res->hwm_kb = bgw_proc_status_kb(gw.pid, "VmHWM");
                if (tg_harness_devkafka_outage_begin(cx->dk) < 0)
                    goto cleanup;
                out_begin = bgw_mono_us();
                phase = OUT_DOWN;
                printf("  Kafka down at %.1f s\n", secs(out_begin - ld.start_mono_us));
                fflush(stdout);
            }
            break;
        case OUT_DOWN:
            if (now >= out_begin + outage_us) {
                if (tg_harness_devkafka_outage_end(cx->dk) < 0)
                    goto cleanup;
                recovered = bgw_mono_us();
                gw_scrape(&gw, &m);
                delivered_at_recovery = m.delivered;
                backlog = backlog_max = m.journal_records;
                phase = OUT_DRAIN;
                printf("  Kafka up at %.1f s, %.0f records in the journal\n",
                       secs(recovered - ld.start_mono_us), m.journal_records);
                fflush(stdout);
            }
            break;
        case OUT_DRAIN:
            if (now >= next_scrape) {
                next_scrape = now + 50000;
                gw_scrape(&gw, &m);
                if (!m.metrics_ok)
                    break;
                if (m.journal_records > backlog_max)
                    backlog_max = m.journal_records;
                if (!first_delivery && m.delivered > delivered_at_recovery) {
                    first_delivery = now;
                    delivered_at_first = m.delivered;
                }
                if (first_delivery && m.journal_records <= fmax(2 * baseline, 1000)) {
                    drained_at = now;
                    delivered_at_drained = m.delivered;
                    phase = OUT_DONE;
                    printf("  journal drained at %.1f s\n", secs(now - ld.start_mono_us));
                    fflush(stdout);
                } else if (now - recovered > DRAIN_TIMEOUT_MS * INT64_C(1000)) {
                    fprintf(stderr, "bench_gateway: the journal did not drain within %d s\n",
                            DRAIN_TIMEOUT_MS / 1000);
                    phase = OUT_DONE;
                }
            }
            break;
        }
        if (ld.published && !have_s1) {
            gw_snap(cx, &gw, &s1);
            have_s1 = true;
            res->hwm_kb = bgw_proc_status_kb(gw.pid, "VmHWM");
        }
        if (ld.published && (phase == OUT_NONE || phase == OUT_DONE))
            break;
        if (ld.published && phase == OUT_BEFORE) {
            fprintf(stderr, "bench_gateway: publishing ended before the outage\n");
            break;
        }
    }
    if (!have_s0 || !have_s1)
        goto cleanup;
    if (load_finish(&ld) < 0)
        goto cleanup;

    /* Everything published should reach Kafka: wait for it, with a deadline. */
    struct gw_catchup gc = {.gw = &gw, .target = (double)ld.acked};
    tg_harness_wait_until(gw_delivered_cond, &gc, CATCHUP_TIMEOUT_MS);
    int64_t pub_from_ms = ld.start_wall_us / 1000 - 1;
    struct kafka_catchup kq = {.kc = kc, .from_ms = pub_from_ms, .target = ld.acked};
    tg_harness_wait_until(kafka_cond, &kq, 15000);

    gw_snap(cx, &gw, &s_end);
    res->hwm_run_kb = bgw_proc_status_kb(gw.pid, "VmHWM");
    res->exit_status = tg_harness_proc_stop(gw.proc, STOP_TIMEOUT_MS);
    gw.exited = true;
    bgw_consumer_stop(kc);

    double window = secs(s1.mono_us - s0.mono_us);
    double received = s1.received - s0.received;
    double delivered = s1.delivered - s0.delivered;
    double cpu = s1.proc.cpu_s - s0.proc.cpu_s;
    res->ran = true;
    res->pub_rate = load_rate(&ld);
    res->published = ld.sent;
    res->behind = (double)ld.sent - s1.received;
    res->window_s = window;
    if (ld.sent)
        cx->payload_avg = (double)ld.bytes / (double)ld.sent;
    res->received_per_s = received / window;
    res->delivered_per_s = delivered / window;
    res->cpu_us = delivered > 0 ? cpu * 1e6 / delivered : NAN;
    res->cpu_share = cpu / window;
    res->broker_cpu_us = received > 0 ? (s1.broker.cpu_s - s0.broker.cpu_s) * 1e6 / received
                                      : NAN;
    res->received_total = s_end.received - s_ready.received;
    res->delivered_total = s_end.delivered - s_ready.delivered;
    res->complete = res->delivered_total >= (double)ld.sent;
    res->kafka_records = kq.seen;
    res->io_ok = s0.proc.io_ok && s1.proc.io_ok && s_end.proc.io_ok && s_ready.proc.io_ok;
    if (res->io_ok && received > 0) {
        res->write_b = (double)(s1.proc.write_bytes - s0.proc.write_bytes) / received;
        res->wchar_b = (double)(s1.proc.wchar - s0.proc.wchar) / received;
        res->rchar_b = (double)(s1.proc.rchar - s0.proc.rchar) / received;
        res->read_b = (double)(s1.proc.read_bytes - s0.proc.read_bytes) / received;
    }
    if (res->io_ok && res->received_total > 0) {
        res->write_b_run =
            (double)(s_end.proc.write_bytes - s_ready.proc.write_bytes) / res->received_total;
        res->cancelled_b_run = (double)(s_end.proc.cancelled_write_bytes -
                                        s_ready.proc.cancelled_write_bytes) /
                               res->received_total;
    }
    /* Readings made in the last second before an outage are still on their way when it
     * begins: they belong to the outage, not to the steady state. */
    int64_t lat_to_ms = s1.wall_us / 1000 - (cx->o.outage_s > 0 ? 1000 : 0);
    res->lat_n = bgw_consumer_latency(kc, s0.wall_us / 1000, lat_to_ms, &res->lat_p50,
                                      &res->lat_p99, &res->lat_max);
    struct bgw_hist h;
    res->hist_ok = s0.hist_ok && s1.hist_ok && bgw_hist_delta(&s1.e2e, &s0.e2e, &h);
    if (res->hist_ok) {
        bool beyond50;
        res->hist_p50 = bgw_hist_quantile(&h, 0.50, &beyond50) * 1000;
        res->hist_p99 = bgw_hist_quantile(&h, 0.99, &res->hist_p99_beyond) * 1000;
    }
    res->consumer_errors = bgw_consumer_errors(kc);
    if (cx->o.outage_s > 0) {
        res->outage_ran = recovered > 0;
        res->drained = drained_at > 0;
        res->baseline_records = baseline;
        res->backlog = backlog;
        res->backlog_max = backlog_max;
        if (first_delivery)
            res->reconnect_s = secs(first_delivery - recovered);
        if (drained_at) {
            res->drain_s = secs(drained_at - recovered);
            res->drain_rate = backlog / res->drain_s;
            if (drained_at > first_delivery)
                res->drain_delivered_rate = (delivered_at_drained - delivered_at_first) /
                                            secs(drained_at - first_delivery);
        }
    }
    rc = 0;

cleanup:
    if (rc < 0 && gw.proc && !gw.exited)
        print_log_tail(tg_harness_proc_stderr_path(gw.proc));
    bgw_consumer_destroy(kc);
    tg_harness_proc_destroy(ld.proc);
    tg_harness_proc_destroy(gw.proc);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Pass 3: the plugin in a broker of its own
 */

struct plugin_result {
    bool ran;
    double pub_rate, window_s, received_per_s, delivered_per_s, broker_cpu_us, cpu_share;
    uint64_t published;
    double delivered_total;
    bool complete;
    long hwm_kb;
    bool stopped_clean;
};

/* Ready: /healthz answers 200 and Kafka is reachable (no MQTT connection to wait for). */
static bool plugin_ready_cond(void *ud)
{
    struct gateway *gw = ud;
    if (interrupted || !tg_harness_proc_running(gw->proc))
        return true;
    int status = 0;
    char *text = bgw_http_get(gw->metrics_port, "/healthz", 2000, &status);
    bool healthy = text && status == 200;
    free(text);
    if (!healthy)
        return false;
    text = bgw_http_get(gw->metrics_port, "/metrics", 2000, &status);
    bool found = false;
    double up = text && status == 200 ? bgw_metric_sum(text, "tidegate_kafka_up", &found) : 0;
    free(text);
    return found && up >= 1;
}

static struct tg_harness_mosquitto *plugin_broker_start(struct ctx *cx, int metrics_port)
{
    char ini[PATH_MAX];
    snprintf(ini, sizeof ini, "%s/plugin.ini", cx->dir);
    FILE *f = fopen(ini, "w");
    if (!f)
        return NULL;
    fprintf(f,
            "# generated by bench_gateway (plugin pass)\n"
            "[gateway]\nid = bench\n"
            "[mqtt]\ntopic = %s\n"
            "[kafka]\nbrokers = %s\ntopic = %s\n"
            "[journal]\npath = %s/journal-plugin.db\nmode = %s\n"
            "[metrics]\nlisten = 127.0.0.1:%d\n",
            TOPIC_FILTER, tg_harness_devkafka_bootstrap(cx->dk), KAFKA_TOPIC, cx->dir,
            cx->o.mode == MODE_DURABLE ? "durable" : "spill", metrics_port);
    if (fclose(f) != 0)
        return NULL;
    size_t cap = 4096 + strlen(cx->o.plugin) + (cx->o.board ? strlen(cx->o.board) : 0);
    for (size_t i = 0; i < cx->o.n_sets; i++)
        cap += strlen(cx->o.sets[i]) + 32;
    char *conf = malloc(cap);
    if (!conf)
        return NULL;
    /* The broker settings of pass 2's broker, plus the plugin. */
    size_t len = (size_t)snprintf(conf, cap,
                                  "max_queued_messages 10000000\nmax_queued_bytes 0\n"
                                  "max_inflight_messages 20\n"
                                  "plugin %s\nplugin_opt_config %s\n",
                                  cx->o.plugin, ini);
    if (cx->o.board)
        len += (size_t)snprintf(conf + len, cap - len, "plugin_opt_board %s\n", cx->o.board);
    for (size_t i = 0; i < cx->o.n_sets; i++)
        len += (size_t)snprintf(conf + len, cap - len, "plugin_opt_set %s\n", cx->o.sets[i]);
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, conf);
    free(conf);
    return mq;
}

static int run_plugin(struct ctx *cx, struct plugin_result *res)
{
    int rc = -1;
    struct load ld = {0};
    struct gateway gw = {0};
    memset(res, 0, sizeof *res);
    struct tg_harness_mosquitto *daemon_mq = cx->mq;
    pid_t daemon_broker = cx->broker_pid;

    gw.metrics_port = tg_harness_free_port();
    struct tg_harness_mosquitto *mq = gw.metrics_port > 0 ? plugin_broker_start(cx, gw.metrics_port)
                                                          : NULL;
    if (!mq)
        goto cleanup;
    /* The load and the snapshots follow this broker for the pass. */
    cx->mq = mq;
    gw.proc = tg_harness_mosquitto_proc(mq);
    gw.pid = cx->broker_pid = tg_harness_proc_pid(gw.proc);
    if (!tg_harness_wait_until(plugin_ready_cond, &gw, READY_TIMEOUT_MS) ||
        !tg_harness_proc_running(gw.proc)) {
        fprintf(stderr, "bench_gateway: the plugin is not ready\n");
        print_log_tail(tg_harness_mosquitto_log_path(mq));
        goto cleanup;
    }
    printf("pass 3: mosquitto with tidegate_mosq.so (pid %ld, metrics on 127.0.0.1:%d) ...\n",
           (long)gw.pid, gw.metrics_port);
    fflush(stdout);
    struct snap s0, s1, s_ready, s_end;
    gw_snap(cx, &gw, &s_ready);
    if (load_start(cx, &ld, "publisher-plugin") < 0 || load_go(&ld) < 0)
        goto cleanup;
    bool have_s0 = false;
    int64_t window_from = ld.start_mono_us + (int64_t)(cx->o.warmup_s * 1e6);
    for (;;) {
        if (load_poll(&ld, 50) < 0)
            goto cleanup;
        if (!tg_harness_proc_running(gw.proc)) {
            fprintf(stderr, "bench_gateway: the plugin's broker exited during the run\n");
            goto cleanup;
        }
        if (!have_s0 && bgw_mono_us() >= window_from) {
            gw_snap(cx, &gw, &s0);
            have_s0 = true;
        }
        if (ld.published)
            break;
    }
    gw_snap(cx, &gw, &s1);
    res->hwm_kb = bgw_proc_status_kb(gw.pid, "VmHWM");
    if (!have_s0 || load_finish(&ld) < 0)
        goto cleanup;
    struct gw_catchup gc = {.gw = &gw, .target = (double)ld.acked};
    tg_harness_wait_until(gw_delivered_cond, &gc, CATCHUP_TIMEOUT_MS);
    gw_snap(cx, &gw, &s_end);

    double window = secs(s1.mono_us - s0.mono_us);
    double received = s1.received - s0.received;
    res->ran = true;
    res->pub_rate = load_rate(&ld);
    res->published = ld.sent;
    res->window_s = window;
    res->received_per_s = received / window;
    res->delivered_per_s = (s1.delivered - s0.delivered) / window;
    res->broker_cpu_us =
        received > 0 ? (s1.broker.cpu_s - s0.broker.cpu_s) * 1e6 / received : NAN;
    res->cpu_share = (s1.broker.cpu_s - s0.broker.cpu_s) / window;
    res->delivered_total = s_end.delivered - s_ready.delivered;
    res->complete = res->delivered_total >= (double)ld.sent;
    rc = 0;

cleanup:
    tg_harness_proc_destroy(ld.proc);
    cx->mq = daemon_mq;
    cx->broker_pid = daemon_broker;
    if (mq) {
        /* SIGTERM: the plugin's clean stop (journal committed, deliveries awaited) */
        res->stopped_clean = tg_harness_mosquitto_stop(mq) == 0;
        tg_harness_mosquitto_destroy(mq);
    }
    return rc;
}

static void report_plugin(const struct gateway_result *gr, const struct plugin_result *pr)
{
    printf("\n-- plugin mode (tidegate_mosq.so inside Mosquitto), same load --\n");
    printf("published %" PRIu64 " at %.0f msg/s; window %.1f s: received %.0f msg/s, delivered "
           "%.0f msg/s; delivered in all %.0f (%s); stopped %s\n",
           pr->published, pr->pub_rate, pr->window_s, pr->received_per_s, pr->delivered_per_s,
           pr->delivered_total, pr->complete ? "complete" : "INCOMPLETE",
           pr->stopped_clean ? "cleanly" : "NOT cleanly");
    printf("broker + plugin CPU per message: %.2f us (%.0f%% of a core); peak RSS %ld kB\n",
           pr->broker_cpu_us, pr->cpu_share * 100, pr->hwm_kb);
    if (gr->ran) {
        double daemon_path = gr->broker_cpu_us + gr->cpu_us;
        printf("daemon path (broker %.2f us + tidegate %.2f us): %.2f us per message\n",
               gr->broker_cpu_us, gr->cpu_us, daemon_path);
        printf("plugin path / daemon path: %.2f\n", pr->broker_cpu_us / daemon_path);
    }
}

/* ------------------------------------------------------------------------------------------
 * Report
 */

static const char *verdict(bool measured, bool met)
{
    return !measured ? "not measured" : met ? "met" : "NOT met";
}

static void row(const char *figure, const char *bare, const char *gateway, const char *target)
{
    printf("  %-48s %15s %16s   %s\n", figure, bare, gateway, target);
}

/* v with the given decimals, "-" when it is not a number. */
static char *num(char *buf, size_t size, int decimals, double v)
{
    if (isnan(v))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.*f", decimals, v);
    return buf;
}

static void report(const struct ctx *cx, const struct ceiling_result *cr,
                   const struct gateway_result *gr)
{
    const struct opts *o = &cx->o;
    char a[64], b[64], t[160];
    const char *rate_note = o->rate == TARGET_RATE ? "" : " (target is for 10,000 msg/s)";
    bool outage = gr->ran && o->outage_s > 0;

    printf("\nload: %u publisher connections (MQTT 3.1.1, QoS1), %u devices, ", o->publishers,
           o->devices);
    if (o->rate)
        printf("%" PRIu64 " msg/s paced", o->rate);
    else
        printf("as fast as %u in-flight messages per connection allow", o->inflight);
    printf(", %.0f s, native CBOR payloads of %.0f B on average\n", o->duration_s,
           cx->payload_avg);
    printf("gateway: %u MQTT connection(s), journal %s, %s%s%s\n", o->connections,
           o->mode == MODE_DURABLE ? "durable" : "spill", o->board ? "board " : "no board file",
           o->board ? o->board : "", o->n_sets ? ", with --set overrides" : "");
    printf("steady window: from %.0f s after the first message until %s:", o->warmup_s,
           outage ? "Kafka goes down" : "the publisher stops");
    if (cr->ran)
        printf(" %.1f s (bare subscriber)", cr->window_s);
    if (gr->ran)
        printf(" %.1f s (tidegate)", gr->window_s);
    printf("\n");
    if (cx->disk_is_tmpfs)
        printf("warning: the temporary directory is on tmpfs, where write_bytes counts nothing: "
               "set TMPDIR to a directory on disk\n");
    printf("\n");
    row("figure (steady window unless it says otherwise)", "bare subscriber", "tidegate",
        "target");
    row("published, whole run (msg/s)", cr->ran ? num(a, sizeof a, 0, cr->pub_rate) : "-",
        gr->ran ? num(b, sizeof b, 0, gr->pub_rate) : "-", "");
    row("received (msg/s)", cr->ran ? num(a, sizeof a, 0, cr->msgs_per_s) : "-",
        gr->ran ? num(b, sizeof b, 0, gr->received_per_s) : "-", "");
    if (!outage)
        row("not yet received when publishing stopped", cr->ran ? num(a, sizeof a, 0, cr->behind)
                                                                  : "-",
            gr->ran ? num(b, sizeof b, 0, gr->behind) : "-", "");
    row("delivered to Kafka (msg/s)", "-",
        gr->ran ? num(b, sizeof b, 0, gr->delivered_per_s) : "-", "");
    if (gr->ran && cr->ran) {
        double share = gr->delivered_per_s / cr->msgs_per_s;
        snprintf(t, sizeof t, ">= %.0f%%: %s%s", TARGET_CEILING_SHARE * 100,
                 verdict(true, share >= TARGET_CEILING_SHARE),
                 o->rate ? " (paced: both take the offered rate; --rate max tests the ceiling)"
                         : "");
        row("delivered / bare-subscriber received", "100%",
            (snprintf(b, sizeof b, "%.1f%%", share * 100), b), t);
    }
    row("CPU per message, total (us)", cr->ran ? num(a, sizeof a, 1, cr->cpu_us) : "-",
        gr->ran ? num(b, sizeof b, 1, gr->cpu_us) : "-", "");
    if (gr->ran && cr->ran) {
        double own = gr->cpu_us - cr->cpu_us;
        snprintf(t, sizeof t, "<= %.0f us: %s%s", TARGET_CPU_US,
                 verdict(true, own <= TARGET_CPU_US), rate_note);
        row("CPU per message above the receive floor (us)", "(the floor)",
            num(b, sizeof b, 1, own), t);
    }
    row("CPU used (cores)", cr->ran ? num(a, sizeof a, 2, cr->cpu_share) : "-",
        gr->ran ? num(b, sizeof b, 2, gr->cpu_share) : "-", "");
    row("broker CPU per message (us)", cr->ran ? num(a, sizeof a, 1, cr->broker_cpu_us) : "-",
        gr->ran ? num(b, sizeof b, 1, gr->broker_cpu_us) : "-", "");
    if (gr->ran)
        snprintf(t, sizeof t, "<= 16 MB: %s%s",
                 verdict(gr->hwm_kb >= 0, gr->hwm_kb >= 0 && gr->hwm_kb <= TARGET_RSS_KB),
                 rate_note);
    row("peak RSS, VmHWM (MB)", cr->ran ? num(a, sizeof a, 1, (double)cr->hwm_kb / 1024) : "-",
        gr->ran ? num(b, sizeof b, 1, (double)gr->hwm_kb / 1024) : "-", gr->ran ? t : "");
    if (outage)
        row("  same, whole run incl. outage and drain (MB)", "-",
            num(b, sizeof b, 1, (double)gr->hwm_run_kb / 1024), "");
    if (gr->ran && gr->io_ok) {
        if (o->mode == MODE_DURABLE)
            snprintf(t, sizeof t, "<= %.0f B (durable): %s%s", TARGET_WRITE_B,
                     verdict(true, gr->write_b <= TARGET_WRITE_B), rate_note);
        else
            snprintf(t, sizeof t, "(the target is for durable mode)");
        row("disk write_bytes per message (B)", "-", num(b, sizeof b, 1, gr->write_b), t);
        row(outage ? "  same, whole run incl. outage, start, stop (B)"
                   : "  same, whole run incl. start and stop (B)",
            "-", num(b, sizeof b, 1, gr->write_b_run), "");
        if (gr->cancelled_b_run > 0)
            row("  cancelled_write_bytes, whole run (B)", "-",
                num(b, sizeof b, 1, gr->cancelled_b_run), "");
        row("wchar / rchar per message (B)", "-",
            (snprintf(b, sizeof b, "%.0f / %.0f", gr->wchar_b, gr->rchar_b), b), "");
        row("disk read_bytes per message (B)", "-", num(b, sizeof b, 1, gr->read_b), "");
    } else if (gr->ran) {
        row("disk write_bytes per message (B)", "-", "no /proc/pid/io", "");
    }
    if (gr->ran) {
        snprintf(t, sizeof t, "p99 <= %.0f ms: %s%s", TARGET_P99_MS,
                 verdict(gr->lat_n > 0, gr->lat_n > 0 && gr->lat_p99 <= TARGET_P99_MS),
                 rate_note);
        if (gr->lat_n > 0)
            snprintf(b, sizeof b, "%.1f / %.1f", gr->lat_p50, gr->lat_p99);
        row("e2e latency p50 / p99, Kafka consumer (ms)", "-", gr->lat_n ? b : "-", t);
        row("  max (ms), and records in the window", "-",
            (snprintf(b, sizeof b, "%.0f, %zu", gr->lat_max, gr->lat_n), b), "");
        if (gr->hist_ok)
            snprintf(b, sizeof b, "%.1f / %s%.1f", gr->hist_p50, gr->hist_p99_beyond ? ">" : "",
                     gr->hist_p99);
        row("e2e latency p50 / p99, gateway histogram (ms)", "-", gr->hist_ok ? b : "-", "");
    }
    if (cr->ran)
        snprintf(a, sizeof a, "%" PRIu64 "/%" PRIu64, cr->received_total, cr->published);
    if (gr->ran)
        snprintf(b, sizeof b, "%.0f/%" PRIu64, gr->delivered_total, gr->published);
    row("received (delivered) / published, whole run", cr->ran ? a : "-", gr->ran ? b : "-",
        (cr->ran && !cr->complete) || (gr->ran && !gr->complete) ? "INCOMPLETE" : "");
    if (gr->ran) {
        snprintf(b, sizeof b, "%" PRIu64 "/%" PRIu64, gr->kafka_records, gr->published);
        row("records the Kafka consumer read / published", "-", b, "");
        snprintf(b, sizeof b, "%s",
                 gr->exit_status >= 0 && tg_harness_exited_ok(gr->exit_status) ? "exit 0"
                                                                               : "NOT clean");
        row("tidegate stop on SIGTERM", "-", b, "");
    }
    if (gr->ran && o->outage_s > 0 && gr->outage_ran) {
        printf("\noutage: every Kafka broker down for %.0f s, publishing going on\n",
               o->outage_s);
        row("journal records before the outage (max)", "-",
            num(b, sizeof b, 0, gr->baseline_records), "");
        row("backlog at recovery (journal records)", "-", num(b, sizeof b, 0, gr->backlog), "");
        row("  highest during the drain", "-", num(b, sizeof b, 0, gr->backlog_max), "");
        row("first delivery after recovery (s)", "-", num(b, sizeof b, 2, gr->reconnect_s), "");
        if (gr->drained) {
            row("drain time, recovery to normal level (s)", "-",
                num(b, sizeof b, 2, gr->drain_s), "");
            snprintf(t, sizeof t, ">= %.0f msg/s: %s", TARGET_DRAIN,
                     verdict(true, gr->drain_rate >= TARGET_DRAIN));
            row("drain rate, backlog / drain time (msg/s)", "-",
                num(b, sizeof b, 0, gr->drain_rate), t);
            row("  delivered/s from first delivery to drained", "-",
                num(b, sizeof b, 0, gr->drain_delivered_rate), "(backlog + live traffic)");
        } else {
            row("drain", "-", "did not finish", "");
        }
    }
    printf("\nCPU per message: utime+stime over the window / messages (delivered ones, for "
           "tidegate);\nthe receive floor is the bare subscriber's figure from the same run. "
           "On a shared machine\nthe figures move from run to run: compare runs, not digits.\n");
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
            "  --no-plugin         skip pass 3\n");
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

static int parse_opts(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.publishers = 10, .devices = 10000, .rate = 10000, .duration_s = 20,
                       .warmup_s = 2, .mode = MODE_DURABLE, .connections = 1, .inflight = 20,
                       .ceiling = true,
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
    struct ctx cx = {0};
    if (parse_opts(argc, argv, &cx.o) < 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    raise_nofile();
    struct sigaction sa = {.sa_handler = on_interrupt};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int status = 1;
    struct ceiling_result cr = {0};
    struct gateway_result gr = {0};
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

    if (cx.o.ceiling && run_ceiling(&cx, &cr) < 0) {
        fprintf(stderr, "bench_gateway: the bare-subscriber pass failed\n");
        goto cleanup;
    }
    if (have_gateway && run_gateway(&cx, &gr) < 0) {
        fprintf(stderr, "bench_gateway: the tidegate pass failed (logs in %s)\n", cx.dir);
        goto cleanup;
    }
    report(&cx, &cr, &gr);
    if (cx.o.plugin && access(cx.o.plugin, R_OK) == 0) {
        struct plugin_result pr;
        if (run_plugin(&cx, &pr) < 0) {
            fprintf(stderr, "bench_gateway: the plugin pass failed (logs in %s)\n", cx.dir);
            goto cleanup;
        }
        report_plugin(&gr, &pr);
    } else if (cx.o.plugin) {
        printf("note: %s not found: the plugin pass is skipped\n", cx.o.plugin);
    }
    status = 0;

cleanup:
    tg_harness_devkafka_destroy(cx.dk);
    tg_harness_mosquitto_destroy(cx.mq);
    if (status == 0 || interrupted)
        tg_harness_tmpdir_done(cx.dir); /* on failure the harness keeps it and says where */
    else
        free(cx.dir);
    free(cx.tidegate);
    free(cx.o.sets);
    return status;
}
