/*
 * devkafka.c - tidegate-devkafka: a local Kafka-protocol cluster for development, demos and
 * tests.
 *
 * No Kafka broker can be installed on the development machines, so this program hosts
 * librdkafka's mock cluster (rdkafka_mock.h) in a process of its own: N brokers listening on
 * ephemeral loopback ports that speak the real Kafka protocol, so kcat, the gateway and the
 * worker connect to it exactly as they would to a real cluster.
 *
 * Outages are the point of having it. SIGUSR1 takes every broker down, SIGUSR2 brings them all
 * back, and commands on stdin do the same per broker and add response latency. In librdkafka
 * 2.0.2 a broker that is down has its established connections closed and its listening socket
 * replaced by one that is bound but not listening: a client sees "connection refused" (not a
 * hang), and the port stays reserved, so the broker comes back on the same address. Before
 * it closes them, Produce requests are refused and the responses already queued sent, so that
 * no batch is stored twice (drain_before_down).
 *
 * Signals are taken through a signalfd and stdin is read by the same poll() loop; nothing is
 * done in a signal handler. They are blocked before librdkafka starts its threads, so no
 * thread ever takes one asynchronously.
 *
 * Retention: the mock keeps at most 5 MiB of record batches per partition (batch bytes as the
 * producer sent them, i.e. after compression) and drops the oldest batches beyond that;
 * librdkafka 2.0.2 has no knob for it. See the --help text.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "config.h" /* tg_parse_int */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROG "tidegate-devkafka"

#define BROKERS_MAX 32
#define TOPICS_MAX 64
#define TOPIC_NAME_MAX 249          /* Kafka's own limit */
#define PARTITIONS_MAX 1024
#define RTT_MS_MAX 600000
#define READY_TIMEOUT_MS 10000      /* until every broker accepts TCP and answers Metadata */
#define COMMAND_LINE_MAX 256

struct topic_spec {
    char name[TOPIC_NAME_MAX + 1];
    int partitions;
};

struct broker {
    int32_t id;
    char host[64];
    int port;
    bool up;
    int rtt_ms;
};

/* librdkafka 2.0.2's mock cluster thread can miss the wake-up for an operation (topic create,
 * broker up/down/rtt, destroy) queued just after it answered the previous one: it drains its
 * wake-up pipe after serving its queue, so the new operation waits for the next poll()
 * timeout, 1 s. Back-to-back operations hit this often (creating four topics took up to 3 s).
 * The mock thread serves its queue whenever poll() returns, and it polls the brokers'
 * listening sockets: so while an operation is pending, this thread connects to every broker
 * that is up, every WAKER_INTERVAL_MS, and the pending operation is served within that. An
 * operation that finds no broker up (e.g. "up all" during a full outage) can still take 1 s. */
#define WAKER_INTERVAL_MS 10

struct waker {
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;            /* signalled when an operation starts, or on stop */
    bool pending;                   /* an operation is in progress */
    bool stop;
    int n_ports;
    int ports[BROKERS_MAX];         /* listening ports of the brokers up when it started */
};

struct devkafka {
    rd_kafka_t *rk;                 /* bookkeeping handle the mock cluster lives in */
    rd_kafka_mock_cluster_t *mc;
    char *bootstrap_file;           /* written once ready, removed on clean exit */
    bool bootstrap_file_written;
    int n_brokers;
    struct broker brokers[BROKERS_MAX];
    int n_topics;
    struct topic_spec topics[TOPICS_MAX];
    struct waker waker;
};

static const struct topic_spec default_topics[] = {
    {"telemetry", 12},
    {"telemetry.dlq", 3},
    {"telemetry.anomalies", 6},
    {"telemetry.agg.1m", 6},
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROG " [--brokers N] [--topic NAME:PARTITIONS]... [--bootstrap-file PATH]\n"
            "\n"
            "Runs a local Kafka-protocol cluster (librdkafka's mock cluster) on loopback ports.\n"
            "\n"
            "  --brokers N              number of brokers, 1-%d (default 3)\n"
            "  --topic NAME:PARTITIONS  create this topic; repeat for several. Giving any --topic\n"
            "                           REPLACES the default list, which is telemetry:12,\n"
            "                           telemetry.dlq:3, telemetry.anomalies:6, telemetry.agg.1m:6.\n"
            "                           Replication factor is min(brokers, 3). Other topics are\n"
            "                           auto-created with 4 partitions when a client asks for them.\n"
            "  --bootstrap-file PATH    also write the bootstrap list to PATH (atomically, via a\n"
            "                           temporary file and rename); removed again on clean exit\n"
            "  -h, --help               show this help\n"
            "\n"
            "Once every broker accepts connections, the bootstrap list (host:port,...) is printed\n"
            "as the first line of stdout.\n"
            "\n"
            "Outages:\n"
            "  SIGUSR1   take every broker down: connections are closed (once the responses\n"
            "            already queued are sent) and new ones refused\n"
            "  SIGUSR2   bring every broker back up, on the same ports\n"
            "  SIGTERM, SIGINT, SIGHUP  stop cleanly (exit status 0)\n"
            "\n"
            "Commands on stdin, one per line, each answered with one line on stdout,\n"
            "'ok ...' or 'error: ...'. EOF on stdin does not stop the cluster.\n"
            "  down <id|all>        take broker(s) down\n"
            "  up <id|all>          bring broker(s) back up\n"
            "  rtt <id|all> <ms>    delay every response of broker(s) by ms (0 to clear)\n"
            "  error <id|all> <api> <error> [count [rtt_ms]]\n"
            "                       the broker(s) answer their next count (default 1) requests\n"
            "                       of type api with error, each after rtt_ms (default 0).\n"
            "                       api: produce, fetch, listoffsets, metadata, offsetcommit,\n"
            "                       offsetfetch, findcoordinator, joingroup, heartbeat,\n"
            "                       syncgroup, apiversions, initproducerid, or an ApiKey number.\n"
            "                       error: not_leader, timed_out, unknown_topic, too_large,\n"
            "                       disconnect (close the connection instead of answering),\n"
            "                       none (only the delay), any librdkafka error name\n"
            "                       (NOT_ENOUGH_REPLICAS, ...) or a Kafka error code\n"
            "  errors <id|all> <api>  'ok N': injected errors not consumed yet\n"
            "  topic-error <topic> <error|none>  Metadata answers carry error for topic\n"
            "  leader <topic> <partition|all> <id|none>\n"
            "                       move partition leadership (none: leaderless) of a topic\n"
            "                       created at start\n"
            "  status               one line: id:state:host:port:rtt for every broker\n"
            "  help                 list the commands\n"
            "\n"
            "Limits of the mock (librdkafka 2.0.2): each partition keeps at most 5 MiB of record\n"
            "batches (as sent, i.e. compressed) and silently drops the oldest beyond that. Use\n"
            "compression (lz4/zstd) or more partitions for long runs. Data lives in memory only.\n"
            "\n"
            "Exit status: 0 on a clean stop, 1 when the cluster cannot start, 2 on usage errors.\n",
            BROKERS_MAX);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry '" PROG " --help'.\n", stderr);
    exit(2);
}

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    va_list ap;
    fputs("devkafka: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Replies go to stdout, one line each, flushed: a test reads them through a pipe. A reader
 * that has gone away is not our problem (SIGPIPE is ignored, the cluster keeps running). */
static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

/* tg_parse_int() for the longs of options and commands. */
static bool parse_int(const char *s, long min, long max, long *out)
{
    int64_t v;
    if (tg_parse_int(s, min, max, &v) != TG_OK)
        return false;
    *out = (long)v;
    return true;
}

static bool topic_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > TOPIC_NAME_MAX)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static void add_topic(struct devkafka *dk, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    if (!colon)
        usage_error("--topic '%s': expected NAME:PARTITIONS", arg);
    size_t len = (size_t)(colon - arg);
    if (!topic_name_valid(arg, len))
        usage_error("--topic '%s': topic name must be 1-%d characters of [A-Za-z0-9._-]", arg,
                    TOPIC_NAME_MAX);
    long partitions;
    if (!parse_int(colon + 1, 1, PARTITIONS_MAX, &partitions))
        usage_error("--topic '%s': partitions must be an integer from 1 to %d", arg,
                    PARTITIONS_MAX);
    for (int i = 0; i < dk->n_topics; i++) {
        if (strlen(dk->topics[i].name) == len && memcmp(dk->topics[i].name, arg, len) == 0)
            usage_error("--topic '%.*s' given twice", (int)len, arg);
    }
    if (dk->n_topics == TOPICS_MAX)
        usage_error("at most %d --topic options", TOPICS_MAX);
    struct topic_spec *ts = &dk->topics[dk->n_topics++];
    memcpy(ts->name, arg, len);
    ts->name[len] = '\0';
    ts->partitions = (int)partitions;
}

static void parse_args(struct devkafka *dk, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"bootstrap-file", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long brokers = 3;
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            if (!parse_int(optarg, 1, BROKERS_MAX, &brokers))
                usage_error("--brokers '%s': expected an integer from 1 to %d", optarg,
                            BROKERS_MAX);
            break;
        case 't':
            add_topic(dk, optarg);
            break;
        case 'f':
            if (optarg[0] == '\0')
                usage_error("--bootstrap-file: empty path");
            dk->bootstrap_file = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case ':':
            usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);

    dk->n_brokers = (int)brokers;
    if (dk->n_topics == 0) {
        dk->n_topics = (int)(sizeof default_topics / sizeof default_topics[0]);
        memcpy(dk->topics, default_topics, sizeof default_topics);
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* librdkafka's log lines, minus the warning that the bookkeeping handle has no
 * bootstrap.servers: it never connects anywhere, it only hosts the mock cluster. */
static void rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers"))
        return;
    fprintf(stderr, "devkafka: rdkafka %s: %s\n", fac, buf);
}

static bool tcp_accepts(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* Asks the cluster for its metadata through an ordinary client, as any user would. Fills
 * dk->brokers (id, host, port) and checks every topic's partition count. Returns 0 when the
 * cluster is complete, -1 (with *why set) when it is not (yet). */
static int probe_metadata(struct devkafka *dk, const char *bootstraps, int timeout_ms,
                          char *why, size_t why_size)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_t *probe = NULL;
    int rc = -1;

    rd_kafka_conf_set_log_cb(conf, rdkafka_log);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        snprintf(why, why_size, "probe config: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    probe = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!probe) {
        snprintf(why, why_size, "probe client: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    conf = NULL; /* owned by probe now */

    rd_kafka_resp_err_t err = rd_kafka_metadata(probe, 1, NULL, &md, timeout_ms);
    if (err) {
        snprintf(why, why_size, "metadata request: %s", rd_kafka_err2str(err));
        goto out;
    }
    if (md->broker_cnt != dk->n_brokers) {
        snprintf(why, why_size, "metadata lists %d brokers, expected %d", md->broker_cnt,
                 dk->n_brokers);
        goto out;
    }
    for (int i = 0; i < md->broker_cnt; i++) {
        struct broker *b = &dk->brokers[i];
        b->id = md->brokers[i].id;
        snprintf(b->host, sizeof b->host, "%s", md->brokers[i].host);
        b->port = md->brokers[i].port;
        b->up = true;
        b->rtt_ms = 0;
    }
    /* keep brokers sorted by id for status lines */
    for (int i = 1; i < dk->n_brokers; i++) {
        for (int j = i; j > 0 && dk->brokers[j - 1].id > dk->brokers[j].id; j--) {
            struct broker tmp = dk->brokers[j];
            dk->brokers[j] = dk->brokers[j - 1];
            dk->brokers[j - 1] = tmp;
        }
    }
    for (int t = 0; t < dk->n_topics; t++) {
        const struct topic_spec *ts = &dk->topics[t];
        int found = -1;
        for (int i = 0; i < md->topic_cnt; i++) {
            if (strcmp(md->topics[i].topic, ts->name) == 0)
                found = i;
        }
        if (found < 0 || md->topics[found].err ||
            md->topics[found].partition_cnt != ts->partitions) {
            snprintf(why, why_size, "topic %s missing or incomplete in metadata", ts->name);
            goto out;
        }
    }
    rc = 0;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(probe);
    return rc;
}

/* Ready means: every broker accepts a TCP connection and a client gets complete metadata. */
static int wait_ready(struct devkafka *dk, const char *bootstraps)
{
    int64_t deadline = now_ms() + READY_TIMEOUT_MS;
    char why[512] = "timed out";

    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        if (probe_metadata(dk, bootstraps, (int)(left < 2000 ? left : 2000), why,
                           sizeof why) == 0) {
            bool all = true;
            for (int i = 0; i < dk->n_brokers; i++) {
                if (!tcp_accepts(dk->brokers[i].host, dk->brokers[i].port)) {
                    snprintf(why, sizeof why, "broker %d (%s:%d) refuses connections",
                             (int)dk->brokers[i].id, dk->brokers[i].host, dk->brokers[i].port);
                    all = false;
                }
            }
            if (all)
                return 0;
        }
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL); /* retry pacing, not synchronization */
    }
    logmsg("cluster not ready after %d ms: %s", READY_TIMEOUT_MS, why);
    return -1;
}

static void *waker_main(void *arg)
{
    struct waker *wk = arg;
    pthread_mutex_lock(&wk->lock);
    while (!wk->stop) {
        if (!wk->pending) {
            pthread_cond_wait(&wk->cond, &wk->lock);
            continue;
        }
        /* give the operation its chance to complete normally first */
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += WAKER_INTERVAL_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&wk->cond, &wk->lock, &until) != ETIMEDOUT || !wk->pending)
            continue;
        int n_ports = wk->n_ports, ports[BROKERS_MAX];
        memcpy(ports, wk->ports, sizeof ports);
        pthread_mutex_unlock(&wk->lock);
        for (int i = 0; i < n_ports; i++)
            tcp_accepts("127.0.0.1", ports[i]);
        pthread_mutex_lock(&wk->lock);
    }
    pthread_mutex_unlock(&wk->lock);
    return NULL;
}

static int waker_start(struct waker *wk)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        goto fail;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&wk->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        goto fail;
    if (pthread_mutex_init(&wk->lock, NULL) != 0) {
        pthread_cond_destroy(&wk->cond);
        goto fail;
    }
    if (pthread_create(&wk->thread, NULL, waker_main, wk) != 0) {
        pthread_mutex_destroy(&wk->lock);
        pthread_cond_destroy(&wk->cond);
        goto fail;
    }
    wk->started = true;
    return 0;
fail:
    logmsg("cannot start the waker thread");
    return -1;
}

static void waker_stop(struct waker *wk)
{
    if (!wk->started)
        return;
    pthread_mutex_lock(&wk->lock);
    wk->stop = true;
    pthread_cond_signal(&wk->cond);
    pthread_mutex_unlock(&wk->lock);
    pthread_join(wk->thread, NULL);
    pthread_cond_destroy(&wk->cond);
    pthread_mutex_destroy(&wk->lock);
    wk->started = false;
}

/* Brackets every mock operation: see struct waker. */
static void mock_op_begin(struct devkafka *dk)
{
    struct waker *wk = &dk->waker;
    if (!wk->started)
        return;
    pthread_mutex_lock(&wk->lock);
    wk->n_ports = 0;
    for (int i = 0; i < dk->n_brokers; i++) {
        if (dk->brokers[i].up && dk->brokers[i].port > 0)
            wk->ports[wk->n_ports++] = dk->brokers[i].port;
    }
    wk->pending = true;
    pthread_cond_signal(&wk->cond);
    pthread_mutex_unlock(&wk->lock);
}

static void mock_op_end(struct devkafka *dk)
{
    struct waker *wk = &dk->waker;
    if (!wk->started)
        return;
    pthread_mutex_lock(&wk->lock);
    wk->pending = false;
    pthread_mutex_unlock(&wk->lock);
}

/* Until the metadata probe has filled in the broker table: the bootstrap list names every
 * broker's port, which is all the waker needs. */
static void brokers_from_bootstraps(struct devkafka *dk, const char *bootstraps)
{
    const char *p = bootstraps;
    for (int i = 0; i < dk->n_brokers && p && *p; i++) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *colon = memrchr(p, ':', (size_t)(end - p));
        dk->brokers[i].id = i + 1;
        snprintf(dk->brokers[i].host, sizeof dk->brokers[i].host, "%.*s",
                 colon ? (int)(colon - p) : 0, p);
        dk->brokers[i].port = colon ? atoi(colon + 1) : 0;
        dk->brokers[i].up = true;
        p = comma ? comma + 1 : NULL;
    }
}

/* Temporary file + rename: a reader sees either no file or the whole line. */
static int write_bootstrap_file(const char *path, const char *bootstraps)
{
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp)
        return -1;
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());

    int rc = -1;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        logmsg("cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    bool ok = fprintf(f, "%s\n", bootstraps) > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        logmsg("cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        logmsg("cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    return rc;
}

static struct broker *find_broker(struct devkafka *dk, int32_t id)
{
    for (int i = 0; i < dk->n_brokers; i++) {
        if (dk->brokers[i].id == id)
            return &dk->brokers[i];
    }
    return NULL;
}

/* The Kafka protocol's ProduceRequest. */
#define API_PRODUCE 0
/* Produce requests refused while a broker goes down (drain_before_down): more than can arrive
 * in the few milliseconds it takes; those left are cleared once the broker is down. */
#define DOWN_FENCE_ERRORS 4096
/* Longest wait for responses a broker's RTT holds back before it goes down: "down" must not
 * take a minute because "rtt all 60000" was set; beyond this, a held response may still be
 * dropped (and its batch stored twice). */
#define DOWN_DRAIN_MAX_MS 1000

/*
 * librdkafka 2.0.2's mock appends a Produce request's records to the partition log as it
 * reads the request, and queues the response, which goes out on a later turn of its loop
 * (after the broker's RTT). rd_kafka_mock_broker_set_down() closes the connections at once,
 * dropping a queued response whose records are already in the log: the producer, which never
 * got an answer, sends the batch again, and the mock, which checks the idempotent producer's
 * sequence numbers only for transactional producers (rd_kafka_mock_validate_records), stores
 * it a second time, right behind the first copy. A real broker would recognise the retry and
 * store nothing. These were the 2 duplicates test_gw_acks_plugin saw once in many runs (and
 * likely the 2 test_chaos_fleet saw once in CI): none of the gateway's making
 * (test_devkafka_outage).
 *
 * So an outage is taken in three steps. From now on every Produce request is answered with a
 * retriable error (NOT_ENOUGH_REPLICAS: nothing is appended, and the producer keeps the batch
 * and sends it again after the outage); the responses already queued are let out, which
 * takes the longest RTT set on a broker and then two turns of the mock's loop (each marked
 * by a synchronous operation that changes nothing: the first may be served in the turn that
 * queued the last response, the second is served in a later turn, after that response was
 * written; an RTT above DOWN_DRAIN_MAX_MS is waited for only that long); and only then are
 * the connections closed. The refusals go on the cluster's
 * error stack; a broker with Produce errors of its own ("error" command) answers from those
 * first, so there the fence holds only once they are used up.
 */
static rd_kafka_resp_err_t drain_before_down(struct devkafka *dk, int32_t id)
{
    static rd_kafka_resp_err_t fence[DOWN_FENCE_ERRORS];
    for (size_t i = 0; i < DOWN_FENCE_ERRORS; i++)
        fence[i] = RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS;
    rd_kafka_mock_push_request_errors_array(dk->mc, API_PRODUCE, DOWN_FENCE_ERRORS, fence);

    int rtt_ms = 0;
    struct broker *marker = NULL; /* the broker whose RTT the no-op operations set again */
    for (int i = 0; i < dk->n_brokers; i++) {
        if (id != -1 && dk->brokers[i].id != id)
            continue;
        if (!marker)
            marker = &dk->brokers[i];
        if (dk->brokers[i].rtt_ms > rtt_ms)
            rtt_ms = dk->brokers[i].rtt_ms;
    }
    if (rtt_ms > DOWN_DRAIN_MAX_MS)
        rtt_ms = DOWN_DRAIN_MAX_MS;
    if (rtt_ms > 0) { /* the mock holds each response that long; nothing to wait on */
        struct timespec ts = {rtt_ms / 1000, (long)(rtt_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int turn = 0; marker && turn < 2 && !err; turn++) {
        mock_op_begin(dk);
        err = rd_kafka_mock_broker_set_rtt(dk->mc, marker->id, marker->rtt_ms);
        mock_op_end(dk);
    }
    return err;
}

/* Sets up/down for one broker (id) or all (id == -1). Returns the librdkafka error. */
static rd_kafka_resp_err_t set_state(struct devkafka *dk, int32_t id, bool up,
                                     const char *cause)
{
    rd_kafka_resp_err_t err = up ? RD_KAFKA_RESP_ERR_NO_ERROR : drain_before_down(dk, id);
    if (!err) {
        mock_op_begin(dk);
        err = up ? rd_kafka_mock_broker_set_up(dk->mc, id)
                 : rd_kafka_mock_broker_set_down(dk->mc, id);
        mock_op_end(dk);
    }
    if (!up) /* down, or failed: let Produce requests through again (see drain_before_down) */
        rd_kafka_mock_clear_request_errors(dk->mc, API_PRODUCE);
    if (err)
        return err;
    for (int i = 0; i < dk->n_brokers; i++) {
        if (id == -1 || dk->brokers[i].id == id)
            dk->brokers[i].up = up;
    }
    if (id == -1)
        logmsg("all brokers %s (%s)", up ? "up" : "down", cause);
    else
        logmsg("broker %d %s (%s)", (int)id, up ? "up" : "down", cause);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t set_rtt(struct devkafka *dk, int32_t id, int rtt_ms)
{
    mock_op_begin(dk);
    rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_rtt(dk->mc, id, rtt_ms);
    mock_op_end(dk);
    if (err)
        return err;
    for (int i = 0; i < dk->n_brokers; i++) {
        if (id == -1 || dk->brokers[i].id == id)
            dk->brokers[i].rtt_ms = rtt_ms;
    }
    if (id == -1)
        logmsg("all brokers rtt %d ms", rtt_ms);
    else
        logmsg("broker %d rtt %d ms", (int)id, rtt_ms);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Parses "<id|all>" into a broker id or -1 for all; replies with an error when invalid. */
static bool parse_target(struct devkafka *dk, const char *word, int32_t *id)
{
    long v;
    if (!word) {
        reply("error: missing broker id (a number or 'all')");
        return false;
    }
    if (strcmp(word, "all") == 0) {
        *id = -1;
        return true;
    }
    if (!parse_int(word, 0, INT32_MAX, &v) || !find_broker(dk, (int32_t)v)) {
        reply("error: no broker '%s' (brokers are 1-%d, or 'all')", word, dk->n_brokers);
        return false;
    }
    *id = (int32_t)v;
    return true;
}

/* Kafka protocol request types (ApiKey) that error injection can name. */
static const struct {
    const char *name;
    int16_t key;
} api_names[] = {
    {"produce", 0},          {"fetch", 1},          {"listoffsets", 2},
    {"metadata", 3},         {"offsetcommit", 8},   {"offsetfetch", 9},
    {"findcoordinator", 10}, {"joingroup", 11},     {"heartbeat", 12},
    {"syncgroup", 14},       {"apiversions", 18},   {"initproducerid", 22},
};

/* Short names for the errors the chaos tests inject; any librdkafka error name
 * (rd_kafka_err2name(), e.g. NOT_ENOUGH_REPLICAS or _TRANSPORT) or number works too. */
static const struct {
    const char *name;
    rd_kafka_resp_err_t err;
} error_aliases[] = {
    {"none", RD_KAFKA_RESP_ERR_NO_ERROR},
    {"not_leader", RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION},
    {"timed_out", RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT},
    {"unknown_topic", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART},
    {"too_large", RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE},
    {"disconnect", RD_KAFKA_RESP_ERR__TRANSPORT},
};

static bool parse_api(const char *word, int16_t *key)
{
    long v;
    if (!word)
        return false;
    for (size_t i = 0; i < sizeof api_names / sizeof api_names[0]; i++) {
        if (strcasecmp(word, api_names[i].name) == 0) {
            *key = api_names[i].key;
            return true;
        }
    }
    if (!parse_int(word, 0, INT16_MAX, &v))
        return false;
    *key = (int16_t)v;
    return true;
}

static bool parse_error(const char *word, rd_kafka_resp_err_t *err)
{
    long v;
    if (!word)
        return false;
    for (size_t i = 0; i < sizeof error_aliases / sizeof error_aliases[0]; i++) {
        if (strcasecmp(word, error_aliases[i].name) == 0) {
            *err = error_aliases[i].err;
            return true;
        }
    }
    const struct rd_kafka_err_desc *descs;
    size_t n;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++) {
        if (descs[i].name && strcasecmp(word, descs[i].name) == 0) {
            *err = descs[i].code;
            return true;
        }
    }
    if (!parse_int(word, -200, 1000, &v))
        return false;
    *err = (rd_kafka_resp_err_t)v;
    return true;
}

/* "error <id|all> <api> <error> [count [rtt_ms]]": pushes count (error, rtt) entries onto the
 * error stack of each target broker for that request type. The broker answers its next count
 * such requests with them, in order, whatever partition they are for; _TRANSPORT
 * ("disconnect") closes the client's connection instead of answering. These calls take the
 * cluster's lock directly (no operation for the mock thread), so no waker is needed. */
static void cmd_error(struct devkafka *dk, char *args[5])
{
    int32_t id;
    int16_t api;
    rd_kafka_resp_err_t err;
    long count = 1, rtt_ms = 0;
    if (!parse_target(dk, args[0], &id))
        return;
    if (!parse_api(args[1], &api) || !parse_error(args[2], &err) ||
        (args[3] && !parse_int(args[3], 1, 100000, &count))) {
        reply("error: usage: error <id|all> <api> <error> [count [rtt_ms]]; api is a name "
              "(produce, fetch, metadata, ...) or number, error a name (not_leader, timed_out, "
              "unknown_topic, too_large, disconnect, none, or librdkafka's) or number, count "
              "1-100000");
        return;
    }
    if (args[4] && !parse_int(args[4], 0, RTT_MS_MAX, &rtt_ms)) {
        reply("error: rtt_ms from 0 to %d", RTT_MS_MAX);
        return;
    }
    for (int i = 0; i < dk->n_brokers; i++) {
        if (id != -1 && dk->brokers[i].id != id)
            continue;
        for (long k = 0; k < count; k++) {
            rd_kafka_resp_err_t perr = rd_kafka_mock_broker_push_request_error_rtts(
                dk->mc, dk->brokers[i].id, api, 1, err, (int)rtt_ms);
            if (perr) {
                reply("error: broker %d: %s", (int)dk->brokers[i].id, rd_kafka_err2str(perr));
                return;
            }
        }
    }
    logmsg("%s: next %ld %s request(s) answered with %s after %ld ms", args[0], count, args[1],
           rd_kafka_err2name(err), rtt_ms);
    reply("ok");
}

/* "errors <id|all> <api>": "ok N", the injected errors not consumed yet (summed). */
static void cmd_errors_left(struct devkafka *dk, const char *target, const char *api_word)
{
    int32_t id;
    int16_t api;
    if (!parse_target(dk, target, &id))
        return;
    if (!parse_api(api_word, &api)) {
        reply("error: usage: errors <id|all> <api>");
        return;
    }
    size_t total = 0;
    for (int i = 0; i < dk->n_brokers; i++) {
        if (id != -1 && dk->brokers[i].id != id)
            continue;
        size_t cnt = 0;
        rd_kafka_resp_err_t err =
            rd_kafka_mock_broker_error_stack_cnt(dk->mc, dk->brokers[i].id, api, &cnt);
        if (err) {
            reply("error: broker %d: %s", (int)dk->brokers[i].id, rd_kafka_err2str(err));
            return;
        }
        total += cnt;
    }
    reply("ok %zu", total);
}

/* "topic-error <topic> <error>": Metadata answers for topic carry error (none clears it), e.g.
 * unknown_topic: the topic looks deleted to clients that refresh their metadata. */
static void cmd_topic_error(struct devkafka *dk, const char *topic, const char *error_word)
{
    rd_kafka_resp_err_t err;
    if (!topic || !topic_name_valid(topic, strlen(topic)) || !parse_error(error_word, &err)) {
        reply("error: usage: topic-error <topic> <error|none>");
        return;
    }
    rd_kafka_mock_topic_set_error(dk->mc, topic, err);
    logmsg("topic %s: metadata error %s", topic, rd_kafka_err2name(err));
    reply("ok");
}

/* "leader <topic> <partition|all> <id|none>": moves the partition leadership (a cluster
 * operation, so the waker serves it). Clients find out as a real cluster's do: their next
 * request to the old leader is answered NOT_LEADER_FOR_PARTITION and they refresh their
 * metadata. Only topics created at start are accepted, since the mock would create any
 * other name it is given. */
static void cmd_leader(struct devkafka *dk, const char *topic, const char *part_word,
                       const char *broker_word)
{
    const struct topic_spec *ts = NULL;
    for (int i = 0; topic && i < dk->n_topics; i++) {
        if (strcmp(dk->topics[i].name, topic) == 0)
            ts = &dk->topics[i];
    }
    long part = -1, broker = -1;
    bool all = part_word && strcmp(part_word, "all") == 0;
    if (!ts || !part_word || !broker_word ||
        (!all && !parse_int(part_word, 0, ts ? ts->partitions - 1 : 0, &part)) ||
        (strcmp(broker_word, "none") != 0 &&
         (!parse_int(broker_word, 0, INT32_MAX, &broker) || !find_broker(dk, (int32_t)broker)))) {
        reply("error: usage: leader <topic> <partition|all> <broker id|none>, for a topic "
              "created at start");
        return;
    }
    int first = all ? 0 : (int)part, last = all ? ts->partitions - 1 : (int)part;
    mock_op_begin(dk);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int p = first; p <= last && !err; p++)
        err = rd_kafka_mock_partition_set_leader(dk->mc, ts->name, p, (int32_t)broker);
    mock_op_end(dk);
    if (err) {
        reply("error: %s", rd_kafka_err2str(err));
        return;
    }
    logmsg("topic %s partition %s: leader %s", ts->name, part_word, broker_word);
    reply("ok");
}

static void cmd_status(struct devkafka *dk)
{
    char line[BROKERS_MAX * 96 + 8];
    size_t off = (size_t)snprintf(line, sizeof line, "ok");
    for (int i = 0; i < dk->n_brokers && off < sizeof line; i++) {
        const struct broker *b = &dk->brokers[i];
        off += (size_t)snprintf(line + off, sizeof line - off, " %d:%s:%s:%d:rtt=%dms",
                                (int)b->id, b->up ? "up" : "down", b->host, b->port,
                                b->rtt_ms);
    }
    reply("%s", line);
}

static void handle_command(struct devkafka *dk, char *line)
{
    char *save = NULL;
    char *verb = strtok_r(line, " \t\r", &save);
    if (!verb)
        return; /* blank line: nothing to answer */
    char *arg1 = strtok_r(NULL, " \t\r", &save);
    char *arg2 = strtok_r(NULL, " \t\r", &save);
    char *extra = strtok_r(NULL, " \t\r", &save);
    char *arg4 = extra ? strtok_r(NULL, " \t\r", &save) : NULL;
    char *arg5 = arg4 ? strtok_r(NULL, " \t\r", &save) : NULL;
    char *arg6 = arg5 ? strtok_r(NULL, " \t\r", &save) : NULL;
    int32_t id;
    rd_kafka_resp_err_t err;

    if (strcmp(verb, "down") == 0 || strcmp(verb, "up") == 0) {
        if (!parse_target(dk, arg1, &id))
            return;
        if (arg2) {
            reply("error: usage: %s <id|all>", verb);
            return;
        }
        err = set_state(dk, id, verb[0] == 'u', "command");
        if (err)
            reply("error: %s", rd_kafka_err2str(err));
        else
            reply("ok");
    } else if (strcmp(verb, "rtt") == 0) {
        long ms;
        if (!parse_target(dk, arg1, &id))
            return;
        if (!arg2 || extra || !parse_int(arg2, 0, RTT_MS_MAX, &ms)) {
            reply("error: usage: rtt <id|all> <ms>, ms from 0 to %d", RTT_MS_MAX);
            return;
        }
        err = set_rtt(dk, id, (int)ms);
        if (err)
            reply("error: %s", rd_kafka_err2str(err));
        else
            reply("ok");
    } else if (strcmp(verb, "error") == 0) {
        char *args[5] = {arg1, arg2, extra, arg4, arg5};
        if (arg6 || !arg1 || !arg2 || !extra)
            reply("error: usage: error <id|all> <api> <error> [count [rtt_ms]]");
        else
            cmd_error(dk, args);
    } else if (strcmp(verb, "errors") == 0) {
        if (!arg2 || extra)
            reply("error: usage: errors <id|all> <api>");
        else
            cmd_errors_left(dk, arg1, arg2);
    } else if (strcmp(verb, "topic-error") == 0) {
        if (!arg2 || extra)
            reply("error: usage: topic-error <topic> <error|none>");
        else
            cmd_topic_error(dk, arg1, arg2);
    } else if (strcmp(verb, "leader") == 0) {
        if (arg4)
            reply("error: usage: leader <topic> <partition|all> <broker id|none>");
        else
            cmd_leader(dk, arg1, arg2, extra);
    } else if (strcmp(verb, "status") == 0) {
        if (arg1)
            reply("error: usage: status");
        else
            cmd_status(dk);
    } else if (strcmp(verb, "help") == 0) {
        reply("ok commands: down <id|all>, up <id|all>, rtt <id|all> <ms>, "
              "error <id|all> <api> <error> [count [rtt_ms]], errors <id|all> <api>, "
              "topic-error <topic> <error|none>, leader <topic> <partition|all> <id|none>, "
              "status, help");
    } else {
        reply("error: unknown command '%s' (commands: down, up, rtt, error, errors, "
              "topic-error, leader, status, help)", verb);
    }
}

/* Line assembly for stdin. A line longer than COMMAND_LINE_MAX is answered with an error and
 * skipped up to its newline. */
struct line_reader {
    char buf[COMMAND_LINE_MAX + 1];
    size_t len;
    bool overflow;
};

/* Reads what stdin has. Returns false on EOF or error: stop polling stdin. */
static bool read_stdin(struct devkafka *dk, struct line_reader *lr)
{
    char chunk[512];
    ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0) {
        if (n < 0)
            logmsg("stdin: %s; no more commands", strerror(errno));
        return false;
    }
    for (ssize_t i = 0; i < n; i++) {
        char c = chunk[i];
        if (c == '\n') {
            if (lr->overflow) {
                reply("error: command longer than %d bytes", COMMAND_LINE_MAX);
            } else {
                lr->buf[lr->len] = '\0';
                handle_command(dk, lr->buf);
            }
            lr->len = 0;
            lr->overflow = false;
        } else if (lr->len < COMMAND_LINE_MAX) {
            lr->buf[lr->len++] = c;
        } else {
            lr->overflow = true;
        }
    }
    return true;
}

/* Returns true when the program should stop. */
static bool handle_signal(struct devkafka *dk, int sfd)
{
    struct signalfd_siginfo si;
    ssize_t n = read(sfd, &si, sizeof si);
    if (n != (ssize_t)sizeof si)
        return false;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    switch (si.ssi_signo) {
    case SIGUSR1:
        err = set_state(dk, -1, false, "SIGUSR1");
        break;
    case SIGUSR2:
        err = set_state(dk, -1, true, "SIGUSR2");
        break;
    default:
        logmsg("%s: stopping", strsignal((int)si.ssi_signo));
        return true;
    }
    if (err)
        logmsg("%s failed: %s", si.ssi_signo == SIGUSR1 ? "down" : "up", rd_kafka_err2str(err));
    return false;
}

static int run(struct devkafka *dk, int sfd)
{
    struct line_reader lr = {.len = 0};
    bool stdin_open = true;

    for (;;) {
        struct pollfd pfd[2] = {
            {.fd = sfd, .events = POLLIN},
            {.fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN},
        };
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            logmsg("poll: %s", strerror(errno));
            return 1;
        }
        if (pfd[0].revents & POLLIN) {
            if (handle_signal(dk, sfd))
                return 0;
        }
        if (pfd[1].revents & POLLNVAL) {
            stdin_open = false;
        } else if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            /* EOF only ends the commands; the cluster runs until a signal stops it */
            stdin_open = read_stdin(dk, &lr);
            if (!stdin_open)
                logmsg("stdin closed: no more commands; still running until SIGTERM/SIGINT");
        }
    }
}

int main(int argc, char **argv)
{
    struct devkafka dk = {.rk = NULL};
    char errstr[256];
    int rc = 1;
    int sfd = -1;
    sigset_t sigs;

    parse_args(&dk, argc, argv);

    /* Block before librdkafka creates threads, so they inherit the mask and every one of
     * these signals is delivered only through the signalfd. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &sigs, NULL) != 0) {
        logmsg("sigprocmask: %s", strerror(errno));
        return 1;
    }
    sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sfd < 0) {
        logmsg("signalfd: %s", strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, rdkafka_log);
    dk.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!dk.rk) {
        logmsg("cannot create the bookkeeping handle: %s", errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    conf = NULL; /* owned by dk.rk */

    dk.mc = rd_kafka_mock_cluster_new(dk.rk, dk.n_brokers);
    if (!dk.mc) {
        logmsg("cannot create the mock cluster");
        goto out;
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(dk.mc);
    brokers_from_bootstraps(&dk, bootstraps);
    if (waker_start(&dk.waker) != 0)
        goto out;

    int replication = dk.n_brokers < 3 ? dk.n_brokers : 3;
    for (int i = 0; i < dk.n_topics; i++) {
        mock_op_begin(&dk);
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(dk.mc, dk.topics[i].name,
                                                             dk.topics[i].partitions,
                                                             replication);
        mock_op_end(&dk);
        if (err) {
            logmsg("cannot create topic %s: %s", dk.topics[i].name, rd_kafka_err2str(err));
            goto out;
        }
    }

    if (wait_ready(&dk, bootstraps) != 0)
        goto out;

    /* The file first: whoever has read the stdout line may rely on the file too. */
    if (dk.bootstrap_file) {
        if (write_bootstrap_file(dk.bootstrap_file, bootstraps) != 0)
            goto out;
        dk.bootstrap_file_written = true;
    }
    reply("%s", bootstraps);
    logmsg("%d brokers up at %s (replication factor %d)", dk.n_brokers, bootstraps, replication);
    for (int i = 0; i < dk.n_topics; i++)
        logmsg("topic %s: %d partition%s", dk.topics[i].name, dk.topics[i].partitions,
               dk.topics[i].partitions == 1 ? "" : "s");

    rc = run(&dk, sfd);

out:
    if (dk.bootstrap_file_written)
        unlink(dk.bootstrap_file);
    if (dk.mc) {
        mock_op_begin(&dk);
        rd_kafka_mock_cluster_destroy(dk.mc);
        mock_op_end(&dk);
    }
    waker_stop(&dk.waker);
    if (dk.rk)
        rd_kafka_destroy(dk.rk);
    if (sfd >= 0)
        close(sfd);
    if (rc == 0)
        logmsg("stopped");
    return rc;
}
