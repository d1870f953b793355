/*
 * main.c - tidegate-worker: command line, configuration, signals, and the order in which the
 * parts start and stop.
 *
 *   tidegate-worker -c FILE [-b BOARD_FILE] [--set section.key=value]... [--check-config]
 *   tidegate-worker replay --csv FILE [...]      (the detectors offline: see replay.h)
 *
 * Start: config (defaults < board < file < --set; any error names file, line and key and
 * exits 1 before anything else happens), the engine's configuration, the metrics endpoint,
 * then the Kafka side (consumer.c), which initialises transactions and joins the group.
 *
 * Stop (SIGTERM or SIGINT): the consume loop finishes the record in hand, commits the open
 * transaction and leaves the group, so the partitions move to the other workers at once;
 * exit 0. SIGKILL at any moment costs nothing either: the open transaction is aborted by the
 * cluster and the next owner resumes from the last commit (README, "Guarantees").
 *
 * Signals are blocked in every thread and taken with sigwait() on a thread of their own,
 * which sets the stop flag the loop reads, and exits the process (status 1) if the stop takes
 * longer than 2 x [worker] shutdown_timeout_ms + 2 s (a cluster that does not answer) or a
 * second signal comes.
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "config_cli.h"
#include "consumer.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "replay.h"
#include "worker_config.h"

#ifndef TG_VERSION
#define TG_VERSION "unknown"
#endif

enum { EXIT_CONFIG = 1, EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tidegate-worker -c FILE [-b BOARD_FILE] [--set section.key=value]...\n"
            "                       [--check-config] [--version]\n"
            "       tidegate-worker replay --csv FILE [--metric NAME] [...]   (replay --help)\n"
            "\n"
            "  -c, --config FILE      worker configuration (INI)\n"
            "  -b, --board FILE       board file: defaults the config file overrides\n"
            "  -s, --set SEC.KEY=VAL  override one key (repeatable; wins over both files)\n"
            "      --check-config     validate, print the effective configuration, exit\n"
            "      --version          print versions and exit\n"
            "  -h, --help             this text\n");
}

struct signals {
    sigset_t set;
    atomic_bool stop;   /* read by the consume loop */
    atomic_bool done;   /* run() returned: the signal thread may end */
    int64_t watchdog_ms;
};

/* Takes the first SIGTERM/SIGINT and sets the stop flag. Then it guards the stop: the loop
 * commits and leaves within shutdown_timeout_ms when Kafka answers, but a cluster that does
 * not answer could hold it for longer (a commit in progress, a producer being replaced); past
 * watchdog_ms, or at a second signal, the process exits with status 1. Nothing is lost that
 * way: what was not committed is processed again by the partitions' next owner. */
static void *signal_thread(void *arg)
{
    struct signals *sg = arg;
    int sig;
    while (sigwait(&sg->set, &sig) != 0)
        ;
    if (atomic_load(&sg->done))
        return NULL; /* run() woke us to end */
    TG_LOG_INFO("main", "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    atomic_store(&sg->stop, true);
    struct timespec ts = {(time_t)(sg->watchdog_ms / 1000), (long)(sg->watchdog_ms % 1000) * 1000000};
    int r;
    do
        r = sigtimedwait(&sg->set, NULL, &ts);
    while (r < 0 && errno == EINTR);
    if (atomic_load(&sg->done))
        return NULL;
    if (r < 0)
        TG_LOG_ERROR("main", "still not stopped %lld ms after the signal: exiting now; what was "
                             "not committed is processed again by the next owner",
                     (long long)sg->watchdog_ms);
    else
        TG_LOG_ERROR("main", "second signal: exiting now; what was not committed is processed "
                             "again by the next owner");
    _exit(EXIT_FAILURE);
}

static bool health_check(void *ud, char *reason, size_t len)
{
    return tg_consumer_healthy(ud, reason, len);
}

static int run(const struct tg_config *cfg, const struct tg_engine_config *ec,
               const char *instance_id)
{
    int status = EXIT_FAILURE;
    char err[1024] = "";
    struct tg_metrics *metrics = tg_metrics_new();
    struct tg_consumer *cs = NULL;
    struct tg_metrics_http *http = NULL;
    static struct signals sg;
    pthread_t sig_thread;
    bool sig_started = false;
    if (!metrics) {
        fprintf(stderr, "tidegate-worker: out of memory\n");
        return EXIT_FAILURE;
    }
    sigemptyset(&sg.set);
    sigaddset(&sg.set, SIGTERM);
    sigaddset(&sg.set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sg.set, NULL); /* inherited by every thread from here on */
    signal(SIGPIPE, SIG_IGN);
    atomic_init(&sg.stop, false);
    atomic_init(&sg.done, false);
    sg.watchdog_ms = 2 * tg_config_get_ms(cfg, "worker", "shutdown_timeout_ms") + 2000;
    if (pthread_create(&sig_thread, NULL, signal_thread, &sg) != 0) {
        TG_LOG_ERROR("main", "cannot start the signal thread");
        goto out;
    }
    sig_started = true;

    if (tg_consumer_new(cfg, instance_id, ec, metrics, &cs, err, sizeof err) != TG_OK) {
        TG_LOG_ERROR("main", "cannot start: %s", err);
        goto out;
    }
    const char *listen = tg_config_get_str(cfg, "metrics", "listen");
    if (*listen &&
        !(http = tg_metrics_http_start(metrics, listen, health_check, cs, err, sizeof err))) {
        TG_LOG_ERROR("main", "%s: [metrics] listen: %s", tg_config_origin(cfg, "metrics", "listen"),
                     err);
        goto out;
    }
    TG_LOG_INFO("main", "tidegate-worker %s running: instance %s, group %s, %s -> %s, %s "
                        "(state %s), kafka %s, metrics %s",
                TG_VERSION, instance_id, tg_config_get_str(cfg, "kafka", "group_id"),
                tg_config_get_str(cfg, "kafka", "input_topic"),
                tg_config_get_str(cfg, "kafka", "alerts_topic"),
                tg_config_get_str(cfg, "kafka", "aggregates_topic"),
                tg_config_get_str(cfg, "kafka", "state_topic"),
                tg_config_get_str(cfg, "kafka", "brokers"), *listen ? listen : "off");
    if (tg_consumer_run(cs, &sg.stop) == TG_OK)
        status = EXIT_SUCCESS;
out:
    tg_metrics_http_stop(http);
    tg_consumer_destroy(cs);
    if (sig_started) {
        atomic_store(&sg.done, true);
        pthread_kill(sig_thread, SIGTERM); /* blocked, so sigwait() or sigtimedwait() takes it */
        pthread_join(sig_thread, NULL);
    }
    tg_metrics_destroy(metrics);
    if (status == EXIT_SUCCESS)
        TG_LOG_INFO("main", "stopped");
    return status;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "replay") == 0) {
        /* The whole worker schema, so that replay -c takes the same worker.ini. */
        size_t n;
        const struct tg_config_key *schema = tg_worker_config_schema(&n);
        if (!schema) {
            fprintf(stderr, "tidegate-worker: out of memory\n");
            return EXIT_FAILURE;
        }
        return tg_worker_replay_run(argc - 1, argv + 1, schema, n, stdout, stderr);
    }

    struct tg_engine_config *ec = NULL;
    struct tg_config *cfg = tg_worker_config_new();
    struct tg_config_cli *cli = tg_config_cli_new("tidegate-worker", TG_CONFIG_CLI_BOARD, argc);
    int status = EXIT_CONFIG;
    if (!cfg || !cli) {
        fprintf(stderr, "tidegate-worker: out of memory\n");
        status = EXIT_FAILURE;
        goto out;
    }
    switch (tg_config_cli_parse(cli, argc, argv)) {
    case TG_CONFIG_CLI_RUN: break;
    case TG_CONFIG_CLI_VERSION:
        printf("tidegate-worker %s\nlibrdkafka %s\n", TG_VERSION, rd_kafka_version_str());
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
    if (tg_config_cli_load(cli, cfg, NULL) != TG_OK)
        goto out;
    if (tg_config_cli_setup_logging(cli, cfg) != 0)
        goto out;
    char err[2048], instance_id[72] = "";
    if (tg_worker_config_check(cfg, instance_id, sizeof instance_id, err, sizeof err) != TG_OK) {
        fprintf(stderr, "tidegate-worker: configuration error:\n%s", err);
        goto out;
    }
    if (!(ec = tg_engine_config_from(cfg, err, sizeof err))) {
        fprintf(stderr, "tidegate-worker: configuration error:\n%s\n",
                *err ? err : "out of memory");
        goto out;
    }
    /* One limit for "the partition stopped": the sweep's clock stops after it, and a jump
     * of the partition's event time beyond it is a hole, not every device's silence. */
    tg_engine_config_set_partition_hole_ms(ec, tg_config_get_ms(cfg, "worker", "stall_after_ms"));
    if (tg_config_cli_checking(cli)) {
        status = tg_config_cli_dumped(cli, tg_config_dump_redacted(cfg, stdout));
        goto out;
    }
    status = run(cfg, ec, instance_id);
out:
    tg_config_cli_destroy(cli);
    tg_engine_config_destroy(ec);
    tg_config_destroy(cfg);
    return status;
}
