/*
 * main.c - the tidegate daemon: command line, configuration, signals, and the order in which
 * the parts start and stop.
 *
 *   tidegate -c FILE [-b BOARD_FILE] [--set section.key=value]... [--check-config] [--version]
 *
 * Start: config (defaults < board < file < --set; any error names file, line and key and
 * exits 1 before anything else happens), then the pipeline (journal, dedup window, backlog,
 * Kafka producer), the metrics endpoint, and last the MQTT ingress, so nothing is taken from
 * the broker before it can be kept.
 *
 * Stop (SIGTERM or SIGINT): the reverse. The ingress stops reading and hands on what it
 * already received; the pipeline takes all of it (past the journal's cap if need be), waits
 * for Kafka to confirm what is in flight until gateway.shutdown_timeout_ms after the signal,
 * and commits everything else to the journal; exit 0. A second SIGTERM or SIGINT ends the wait
 * for Kafka at once (the commit still happens); a third, or a stop still unfinished
 * STOP_GRACE_MS after the timeout, exits 1 at once: the journal keeps its last commit.
 * SIGHUP re-reads the device keys file.
 *
 * Under systemd (Type=notify, service_notify.h) it says READY=1 once the journal is recovered
 * and the first MQTT connection is up, pings the watchdog from the pipeline thread together
 * with a STATUS= line, and says STOPPING=1 at SIGTERM.
 *
 * Signals are blocked in every thread and taken synchronously here with sigwait(), so no
 * handler runs in the middle of a library call.
 */
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#include <sys/utsname.h>
#include <librdkafka/rdkafka.h>
#include <malloc.h>
#include <mosquitto.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board_detect.h"
#include "config.h"
#include "config_cli.h"
#include "gateway_config.h"
#include "ingress_mqtt.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "pipeline.h"
#include "service_notify.h"

/* Where the packaged board files are (gateway/CMakeLists.txt sets it from the install prefix). */
#ifndef TG_BOARDS_DIR
#define TG_BOARDS_DIR "/usr/share/tidegate/boards"
#endif

#ifndef TG_VERSION
#define TG_VERSION "unknown"
#endif

enum { EXIT_CONFIG = 1, EXIT_USAGE = 2 };

/* After gateway.shutdown_timeout_ms, how long the final commit may take before the process
 * gives up on it (the systemd unit's TimeoutStopSec covers both, with room to spare). */
#define STOP_GRACE_MS 10000

/* Durable acks (ack.h) leave through the ingress's MQTT connection. The pipeline starts
 * before the ingress exists, so the route learns it later; until then acks are dropped
 * (counted), which costs a node a resend, not a reading. QoS 0: each ack repeats everything
 * the previous one said, so a lost one is repaired by the next, and the broker keeps no
 * state or retries for 10,000 subscribers that may be offline. */
static _Atomic(struct tg_ingress *) ack_ingress;

static int publish_ack(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
    (void)ud;
    struct tg_ingress *in = atomic_load(&ack_ingress);
    return in && tg_ingress_publish(in, topic, payload, len, 0) == TG_OK ? 0 : -1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tidegate -c FILE [-b BOARD_FILE] [--set section.key=value]...\n"
            "                [--check-config] [--version]\n"
            "\n"
            "  -c, --config FILE      gateway configuration (INI)\n"
            "  -b, --board FILE       board file: hardware defaults the config file overrides;\n"
            "                         without it, the file for this board is chosen from\n"
            "                         " TG_BOARDS_DIR " by /proc/device-tree/model,\n"
            "                         else the generic file of this architecture\n"
            "  -s, --set SEC.KEY=VAL  override one key (repeatable; wins over both files)\n"
            "      --check-config     validate, print the effective configuration, exit\n"
            "      --version          print versions and exit\n"
            "  -h, --help             this text\n");
}

static void print_version(void)
{
    int maj, min, rev;
    mosquitto_lib_version(&maj, &min, &rev);
    printf("tidegate %s\nlibrdkafka %s\nlibmosquitto %d.%d.%d\nsqlite %s\n", TG_VERSION,
           rd_kafka_version_str(), maj, min, rev, sqlite3_libversion());
}

struct health {
    struct tg_pipeline *pl;
    struct tg_ingress *in;
};

static bool health_check(void *ud, char *reason, size_t len)
{
    struct health *h = ud;
    return tg_pipeline_health(h->pl, reason, len);
}

/* What the service manager is told (service_notify.h). The heartbeat runs on the pipeline
 * thread, so a stuck pipeline stops the watchdog pings; main sends READY=1 and STOPPING=1. */
struct service {
    struct tg_notify *notify;   /* NULL: not under a manager that listens */
    bool watchdog;
    _Atomic(struct tg_ingress *) in; /* NULL until the ingress exists */
    int connections;
    atomic_bool ready;
    const char *stall_file;     /* test hook, see service_heartbeat() */
};

/* Longest time between two STATUS= lines (the watchdog may want pings more often). */
#define STATUS_INTERVAL_MS 2000

static void service_heartbeat(void *ud, uint64_t backlog_records, uint64_t journal_bytes,
                              int64_t oldest_age_ms, bool kafka_up)
{
    struct service *sv = ud;
    /* Test hook (README, "The service under systemd"): while the file named by
     * TIDEGATE_TEST_STALL_FILE exists, the pipeline thread hangs here as a deadlocked one
     * would; "<file>.stalled" tells the test it has. */
    if (sv->stall_file && access(sv->stall_file, F_OK) == 0) {
        char marker[4096];
        snprintf(marker, sizeof marker, "%s.stalled", sv->stall_file);
        FILE *f = fopen(marker, "w");
        if (f)
            fclose(f);
        TG_LOG_WARN("main", "test hook: the pipeline thread stalls while %s exists",
                    sv->stall_file);
        struct timespec tick = {.tv_nsec = 10 * 1000000L};
        while (access(sv->stall_file, F_OK) == 0)
            nanosleep(&tick, NULL);
    }
    struct tg_ingress *in = atomic_load(&sv->in);
    char msg[512];
    snprintf(msg, sizeof msg,
             "%sSTATUS=%smqtt %d/%d connected, kafka %s, backlog %llu records (%llu bytes "
             "journaled), oldest %lld.%lld s",
             sv->watchdog ? "WATCHDOG=1\n" : "",
             atomic_load(&sv->ready) ? "" : "starting, waiting for the MQTT broker: ",
             in ? tg_ingress_connected(in) : 0, sv->connections, kafka_up ? "up" : "down",
             (unsigned long long)backlog_records, (unsigned long long)journal_bytes,
             (long long)(oldest_age_ms / 1000), (long long)(oldest_age_ms % 1000 / 100));
    tg_notify_send(sv->notify, msg);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The stop sequence runs on its own thread, so that main goes on taking signals. */
struct stopper {
    struct tg_ingress *in;
    struct tg_pipeline *pl;
    int64_t timeout_ms;
    tg_err rc;
    atomic_bool done;
};

static void *stopper_main(void *arg)
{
    struct stopper *st = arg;
    /* Reverse order: stop taking, then finish what was taken. */
    tg_ingress_stop(st->in);
    st->rc = tg_pipeline_stop(st->pl, st->timeout_ms);
    atomic_store(&st->done, true);
    return NULL;
}

/* A stop bounded in time whatever the parts do: see the top of the file. */
static tg_err stop_bounded(struct tg_ingress *in, struct tg_pipeline *pl, int64_t timeout_ms,
                           const sigset_t *sigs)
{
    int64_t start = mono_ms();
    tg_pipeline_begin_stop(pl, timeout_ms);
    struct stopper st = {.in = in, .pl = pl, .timeout_ms = timeout_ms};
    pthread_t th;
    if (pthread_create(&th, NULL, stopper_main, &st) != 0) {
        stopper_main(&st);
        return st.rc;
    }
    int64_t give_up = start + timeout_ms + STOP_GRACE_MS;
    int signals = 1;
    while (!atomic_load(&st.done)) {
        struct timespec tick = {.tv_nsec = 50 * 1000000L};
        int sig = sigtimedwait(sigs, NULL, &tick);
        int64_t now = mono_ms();
        if (sig == SIGTERM || sig == SIGINT) {
            if (++signals == 2) {
                TG_LOG_WARN("main", "%s again: not waiting for Kafka any more, committing what "
                                    "is held to the journal",
                            sig == SIGTERM ? "SIGTERM" : "SIGINT");
                tg_pipeline_hurry(pl);
                if (now + STOP_GRACE_MS < give_up)
                    give_up = now + STOP_GRACE_MS;
            } else {
                TG_LOG_ERROR("main", "%s a third time: exiting now; the journal keeps its last "
                                     "commit",
                             sig == SIGTERM ? "SIGTERM" : "SIGINT");
                _exit(EXIT_FAILURE);
            }
        }
        if (now >= give_up) {
            TG_LOG_ERROR("main", "the stop is not done %d ms after gateway.shutdown_timeout_ms: "
                                 "exiting now; the journal keeps its last commit",
                         STOP_GRACE_MS);
            _exit(EXIT_FAILURE);
        }
    }
    pthread_join(th, NULL);
    return st.rc;
}

/*
 * Without -b: the board file that matches this board (board_detect.h), said on stderr either
 * way, since which hardware defaults apply decides journal and Kafka behaviour. The
 * environment can point the search elsewhere (TIDEGATE_BOARDS_DIR, TIDEGATE_DT_MODEL: tests,
 * a board with an unusual device tree). None found: the built-in defaults, as before.
 * Writes the chosen path into path (empty: none).
 */
static void detect_board(char *path, size_t pathlen)
{
    const char *dir = getenv("TIDEGATE_BOARDS_DIR");
    const char *model = getenv("TIDEGATE_DT_MODEL");
    struct utsname un;
    const char *machine = uname(&un) == 0 ? un.machine : "";
    char why[1024];
    tg_err rc = tg_board_detect(dir && *dir ? dir : TG_BOARDS_DIR,
                                model && *model ? model : TG_BOARD_MODEL_PATH, machine, path,
                                pathlen, why, sizeof why);
    if (rc == TG_OK)
        TG_LOG_INFO("main", "board file %s (%s; -b chooses another)", path, why);
    else
        TG_LOG_INFO("main", "no board file (%s): the built-in defaults apply; -b chooses one",
                    why);
}

static int run(const struct tg_config *cfg)
{
    int status = EXIT_FAILURE;
    char err[1024] = "";
    struct tg_metrics *metrics = tg_metrics_new();
    struct tg_pipeline *pl = NULL;
    struct tg_ingress *in = NULL;
    struct tg_metrics_http *http = NULL;
    struct health health = {0};
    struct service sv = {.connections = (int)tg_config_get_int(cfg, "mqtt", "connections")};
    if (!metrics) {
        fprintf(stderr, "tidegate: out of memory\n");
        return EXIT_FAILURE;
    }
    sv.notify = tg_notify_new();

    /* glibc gives each thread that allocates its own arena (64 MiB of address space, and
     * pages that stay resident after use); librdkafka alone runs a thread per broker. Two
     * arenas keep the resident size small on a 512 MB board at no measurable cost: the hot
     * path barely allocates. */
    mallopt(M_ARENA_MAX, 2);

    /* Every thread created from here on inherits this mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Which front-end feeds the pipeline (the plugin sets mode="plugin", plugin_mosq.c). */
    tg_gauge_set(tg_metrics_gauge(metrics, "tidegate_mode_info",
                                  "How the pipeline is fed: daemon (MQTT subscriber) or plugin "
                                  "(inside Mosquitto)",
                                  "mode", "daemon", NULL),
                 1);
    if (tg_pipeline_new(cfg, metrics, &pl, err, sizeof err) != TG_OK) {
        TG_LOG_ERROR("main", "cannot start: %s", err);
        goto out;
    }
    if (sv.notify) {
        /* Pings at a third of the timeout, as sd_watchdog_enabled(3) advises at most half. */
        int64_t watchdog_ms = tg_notify_watchdog_ms(sv.notify);
        int64_t every = watchdog_ms > 0 && watchdog_ms / 3 < STATUS_INTERVAL_MS
                            ? (watchdog_ms / 3 > 0 ? watchdog_ms / 3 : 1)
                            : STATUS_INTERVAL_MS;
        sv.watchdog = watchdog_ms > 0;
        const char *stall = getenv("TIDEGATE_TEST_STALL_FILE");
        sv.stall_file = stall && *stall ? stall : NULL;
        tg_pipeline_set_heartbeat(pl, every, service_heartbeat, &sv);
    }
    tg_pipeline_set_ack_publisher(pl, publish_ack, NULL);
    if (tg_pipeline_start(pl) != TG_OK) {
        TG_LOG_ERROR("main", "cannot start the pipeline thread");
        goto out;
    }
    health.pl = pl;
    const char *listen = tg_config_get_str(cfg, "metrics", "listen");
    if (*listen &&
        !(http = tg_metrics_http_start(metrics, listen, health_check, &health, err, sizeof err))) {
        TG_LOG_ERROR("main", "%s: [metrics] listen: %s", tg_config_origin(cfg, "metrics", "listen"),
                     err);
        goto out;
    }
    struct tg_ingress_opts io = {
        .host = tg_config_get_str(cfg, "mqtt", "host"),
        .port = (int)tg_config_get_int(cfg, "mqtt", "port"),
        .client_id = tg_config_get_str(cfg, "mqtt", "client_id"),
        .topic = tg_config_get_str(cfg, "mqtt", "topic"),
        .qos = (int)tg_config_get_int(cfg, "mqtt", "qos"),
        .connections = (int)tg_config_get_int(cfg, "mqtt", "connections"),
        .share_group = tg_config_get_str(cfg, "mqtt", "share_group"),
        .username = tg_config_get_str(cfg, "mqtt", "username"),
        .password = tg_config_get_str(cfg, "mqtt", "password"),
        .tls_ca = tg_config_get_str(cfg, "mqtt", "tls_ca"),
        .tls_cert = tg_config_get_str(cfg, "mqtt", "tls_cert"),
        .tls_key = tg_config_get_str(cfg, "mqtt", "tls_key"),
        .keepalive_ms = tg_config_get_ms(cfg, "mqtt", "keepalive_ms"),
        .session_expiry_ms = tg_config_get_ms(cfg, "mqtt", "session_expiry_ms"),
        .reconnect_min_ms = tg_config_get_ms(cfg, "mqtt", "reconnect_min_ms"),
        .reconnect_max_ms = tg_config_get_ms(cfg, "mqtt", "reconnect_max_ms"),
        .max_payload_bytes = tg_config_get_size(cfg, "validate", "max_payload_bytes"),
        .max_packet_bytes = (uint32_t)tg_config_get_size(cfg, "mqtt", "max_packet_bytes"),
    };
    if (tg_ingress_new(&io, tg_pipeline_offer, pl, metrics, &in, err, sizeof err) != TG_OK) {
        TG_LOG_ERROR("main", "cannot start the MQTT ingress: %s", err);
        goto out;
    }
    atomic_store(&ack_ingress, in);
    if (tg_ingress_start(in) != TG_OK) /* it logs why */
        goto out;
    health.in = in;
    atomic_store(&sv.in, in);
    TG_LOG_INFO("main", "tidegate %s running: mqtt %s:%d (%d connection%s), kafka %s, journal %s "
                        "(%s), metrics %s",
                TG_VERSION, io.host, io.port, io.connections, io.connections == 1 ? "" : "s",
                tg_config_get_str(cfg, "kafka", "brokers"),
                tg_config_get_str(cfg, "journal", "path"),
                tg_config_get_str(cfg, "journal", "mode"), *listen ? listen : "off");

    for (;;) {
        int sig;
        if (sv.notify && !atomic_load(&sv.ready)) {
            /* READY=1 waits for the first MQTT connection: until then the gateway takes no
             * readings, and systemd's "started" should mean that it does. */
            struct timespec tick = {.tv_nsec = 100 * 1000000L};
            sig = sigtimedwait(&sigs, NULL, &tick);
            if (sig < 0) {
                if (tg_ingress_connected(in) > 0) {
                    atomic_store(&sv.ready, true);
                    tg_notify_send(sv.notify, "READY=1\nSTATUS=running: MQTT connected");
                    TG_LOG_INFO("main", "told systemd: ready (journal recovered, MQTT connected)");
                }
                continue;
            }
        } else if (sigwait(&sigs, &sig) != 0) {
            continue;
        }
        if (sig == SIGHUP) {
            TG_LOG_INFO("main", "SIGHUP: reloading the device keys");
            tg_pipeline_request_reload(pl);
            continue;
        }
        TG_LOG_INFO("main", "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        tg_notify_send(sv.notify, "STOPPING=1\nSTATUS=stopping: waiting for Kafka, then the "
                                  "final journal commit");
        break;
    }
    status = stop_bounded(in, pl, tg_config_get_ms(cfg, "gateway", "shutdown_timeout_ms"), &sigs) ==
                     TG_OK
                 ? EXIT_SUCCESS
                 : EXIT_FAILURE;
out:
    /* Reverse order: stop taking, then finish what was taken (no-ops after stop_bounded). */
    if (in)
        tg_ingress_stop(in);
    if (pl && tg_pipeline_stop(pl, tg_config_get_ms(cfg, "gateway", "shutdown_timeout_ms")) !=
                  TG_OK)
        status = EXIT_FAILURE;
    tg_metrics_http_stop(http);
    atomic_store(&ack_ingress, NULL); /* the pipeline thread has ended */
    tg_ingress_destroy(in);
    tg_pipeline_destroy(pl); /* joins the thread that runs service_heartbeat() */
    tg_notify_destroy(sv.notify);
    tg_metrics_destroy(metrics);
    if (status == EXIT_SUCCESS)
        TG_LOG_INFO("main", "stopped");
    return status;
}

int main(int argc, char **argv)
{
    struct tg_config *cfg = tg_gateway_config_new();
    struct tg_config_cli *cli = tg_config_cli_new("tidegate", TG_CONFIG_CLI_BOARD, argc);
    int status = EXIT_CONFIG;
    if (!cfg || !cli) {
        fprintf(stderr, "tidegate: out of memory\n");
        status = EXIT_FAILURE;
        goto out;
    }
    switch (tg_config_cli_parse(cli, argc, argv)) {
    case TG_CONFIG_CLI_RUN: break;
    case TG_CONFIG_CLI_VERSION:
        print_version();
        status = EXIT_SUCCESS;
        goto out;
    case TG_CONFIG_CLI_HELP:
        usage(stdout);
        status = EXIT_SUCCESS;
        goto out;
    case TG_CONFIG_CLI_USAGE:
        usage(stderr);
        status = EXIT_USAGE;
        goto out;
    }
    char detected[4096] = "";
    if (!tg_config_cli_board_path(cli))
        detect_board(detected, sizeof detected);
    if (tg_config_cli_load(cli, cfg, detected[0] ? detected : NULL) != TG_OK)
        goto out;
    if (tg_config_cli_setup_logging(cli, cfg) != 0)
        goto out;
    {
        char err[2048];
        if (tg_gateway_config_check(cfg, err, sizeof err) != TG_OK) {
            fprintf(stderr, "tidegate: configuration error:\n%s\n", err);
            goto out;
        }
    }
    if (tg_config_cli_checking(cli)) {
        /* A normal start makes the same checks in tg_pipeline_new(); only here are they made
         * without starting anything. */
        char err[1024];
        if (tg_pipeline_check_config(cfg, err, sizeof err) != TG_OK) {
            fprintf(stderr, "tidegate: configuration error:\n%s\n", err);
            goto out;
        }
        status = tg_config_cli_dumped(cli, tg_config_dump_redacted(cfg, stdout));
        goto out;
    }
    status = run(cfg);
out:
    tg_config_cli_destroy(cli);
    tg_config_destroy(cfg);
    return status;
}
