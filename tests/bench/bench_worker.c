/*
 * bench_worker.c - tidegate-worker end to end through tidegate-devkafka: records per second
 * of one worker with a transaction every 100 ms, and its consumer lag under a steady 10,000
 * records/s.
 *
 *   bench_worker [--devices N] [--seconds S] [--rate R] [--lag-seconds T] [--real]
 *                [--snapshot-interval-ms MS] [--lag-only]
 *
 * --real runs it on the real Kafka broker tier (harness_kafka.h) instead of devkafka.
 *
 * Throughput: N devices x S seconds of canonical JSON records (one metric each) are produced
 * into `telemetry` (12 partitions) first; then one worker starts, and the time from its
 * assignment until it has processed every record and committed (its lag gauge, set after
 * each commit, is 0 everywhere; then the state topic's markers are checked) is the figure,
 * with the worker's CPU per record from /proc/<pid>/stat. Then a second worker takes every partition, and the
 * time it spends restoring their state (tidegate_worker_state_restore_seconds) is printed.
 *
 * Lag: a fresh cluster and worker; records are fed at R records/s (N devices, one reading
 * each per N/R seconds of real time) for T seconds, and the worker's
 * tidegate_worker_consumer_lag_records (summed over partitions) is sampled every second.
 * Flat means it does not grow with time. The state topic's volume over those T seconds
 * (tidegate_worker_state_snapshot_bytes_total: keys and values of snapshots and markers) is
 * printed as bytes/s: what a steady input of R records/s costs the state topic.
 *
 * --snapshot-interval-ms sets the worker's [worker] snapshot_interval_ms (0: a snapshot of
 * every changed series in every transaction, the behaviour before that key existed), so one
 * run can show both sides.
 *
 * Everything shares the machine's cores: the producer, devkafka and the worker. Compare only
 * figures taken in one run. Uses the integration fixture (worker_fixture.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "harness_kafka.h"
#include "worker_fixture.h"

#define PARTS 12

static double cpu_seconds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *s = tg_harness_read_file(path);
    if (!s)
        return NAN;
    const char *p = strrchr(s, ')');
    unsigned long utime = 0, stime = 0;
    /* Fields after the command: state(3) ... utime(14) stime(15). */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                     &stime) != 2) {
        free(s);
        return NAN;
    }
    free(s);
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The cluster: devkafka, or with --real the real broker tier (harness_kafka.h). */
struct cluster {
    struct tg_harness_devkafka *dk;
    struct tg_harness_kafka *kf;
    const char *bootstrap;
};

static struct cluster cluster(bool real)
{
    struct cluster cl = {0};
    if (real) {
        static const char *const compact[] = {"cleanup.policy=compact", NULL};
        cl.kf = tg_harness_kafka_start(PARTS, 0);
        if (!cl.kf || tg_harness_kafka_create_topic(cl.kf, "a.anomalies", 6, NULL) != 0 ||
            tg_harness_kafka_create_topic(cl.kf, "a.agg", 6, NULL) != 0 ||
            tg_harness_kafka_create_topic(cl.kf, "a.state", PARTS, compact) != 0) {
            fprintf(stderr, "bench_worker: cannot start the Kafka broker\n");
            exit(2);
        }
        cl.bootstrap = tg_harness_kafka_bootstrap(cl.kf);
        return cl;
    }
    const char *args[] = {"--brokers", "1", "--topic", "telemetry:12", "--topic",
                          "a.anomalies:6", "--topic", "a.agg:6", "--topic", "a.state:12", NULL};
    cl.dk = tg_harness_devkafka_start(args);
    if (!cl.dk) {
        fprintf(stderr, "bench_worker: cannot start devkafka\n");
        exit(2);
    }
    cl.bootstrap = tg_harness_devkafka_bootstrap(cl.dk);
    return cl;
}

static void cluster_destroy(struct cluster *cl)
{
    tg_harness_devkafka_destroy(cl->dk);
    tg_harness_kafka_destroy(cl->kf);
}

static double lag_sum(const struct wfx_worker *w)
{
    char *body = wfx_scrape(w);
    double sum = 0;
    for (int p = 0; p < PARTS; p++) {
        char name[96];
        snprintf(name, sizeof name, "tidegate_worker_consumer_lag_records{partition=\"%d\"}", p);
        double v = wfx_metric(body, name);
        if (!isnan(v))
            sum += v;
    }
    free(body);
    return sum;
}

/* [worker] lines for the worker's config, or NULL for the defaults; and what they say. */
static const char *worker_extra;
static char worker_extra_what[64] = "snapshot_interval_ms default";

static void throughput(bool real, int devices, int seconds)
{
    struct cluster cl = cluster(real);
    const char *bs = cl.bootstrap;
    char *dir = tg_harness_tmpdir_new("bench-worker");
    struct wfx_input in = {.n_devices = devices, .base_ts_ms = wfx_recent_base_ms(seconds)};
    size_t n = wfx_produce(bs, "telemetry", &in, 0, seconds);
    int64_t hi[PARTS];
    wfx_watermarks(bs, "telemetry", hi, PARTS);

    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "bench", "a.", worker_extra);
    wfx_worker_wait_assigned(w, 60000);
    double cpu0 = cpu_seconds(tg_harness_proc_pid(w->proc));
    int64_t t0 = tg_harness_now_ms(), t1 = 0;
    /* Done when every record was processed and the commit after it is through: the lag is
     * 0 on every partition (the gauge is set after each commit). /metrics every 20 ms is
     * cheap; the state topic is read once afterwards to confirm. */
    while (tg_harness_now_ms() - t0 < 600000) {
        usleep(20000);
        char *b = wfx_scrape(w);
        double consumed = wfx_metric(b, "tidegate_worker_records_consumed_total");
        free(b);
        if (consumed >= (double)n && lag_sum(w) == 0) {
            t1 = tg_harness_now_ms();
            break;
        }
    }
    double cpu1 = cpu_seconds(tg_harness_proc_pid(w->proc));
    if (!t1 || !wfx_wait_processed(bs, "a.state", hi, PARTS, 60000)) {
        fprintf(stderr, "bench_worker: not processed within 600 s\n");
        exit(1);
    }
    char *body = wfx_scrape(w);
    double commits = wfx_metric(body, "tidegate_worker_transaction_commits_total");
    double commit_s = wfx_metric(body, "tidegate_worker_transaction_commit_seconds_sum");
    double aggs = wfx_metric(body, "tidegate_worker_aggregates_total");
    double snaps = wfx_metric(body, "tidegate_worker_state_snapshots_total");
    double snap_bytes = wfx_metric(body, "tidegate_worker_state_snapshot_bytes_total");
    double series = wfx_metric(body, "tidegate_worker_series");
    double state_bytes = wfx_metric(body, "tidegate_worker_state_bytes");
    free(body);
    wfx_worker_stop(w);

    /* Restore: a second worker takes every partition and restores its state. */
    struct wfx_worker *w2 = wfx_worker_start(dir, "w2", "w2", bs, "bench", "a.", worker_extra);
    wfx_worker_wait_assigned(w2, 60000);
    double restore_s = NAN, restored = NAN;
    for (int i = 0; i < 600 && !(restored > 0); i++) {
        usleep(100000);
        char *b2 = wfx_scrape(w2);
        if (wfx_metric(b2, "tidegate_worker_state_restore_seconds_count") >= 1) {
            restore_s = wfx_metric(b2, "tidegate_worker_state_restore_seconds_sum");
            restored = wfx_metric(b2, "tidegate_worker_state_records_read_total");
        }
        free(b2);
    }
    wfx_worker_stop(w2);
    wfx_worker_destroy(w2);
    /* /metrics is polled every 20 ms: the figure is a little pessimistic. */
    double secs = (double)(t1 - t0) / 1000.0;
    printf("throughput on %s: %zu records (%d devices x %d s, 1 metric) through one worker\n",
           real ? "a real Kafka broker" : "devkafka", n, devices, seconds);
    printf("  wall            %.2f s from assignment to the last commit\n", secs);
    printf("  records/s       %.0f\n", (double)n / secs);
    printf("  worker CPU      %.2f s, %.2f us per record\n", cpu1 - cpu0,
           (cpu1 - cpu0) * 1e6 / (double)n);
    printf("  transactions    %.0f commits (%.1f ms each on average)\n", commits,
           commits > 0 ? commit_s * 1000.0 / commits : 0.0);
    printf("  outputs         %.0f aggregates; %.0f snapshot records, %.1f bytes each\n", aggs,
           snaps, snaps > 0 ? snap_bytes / snaps : 0.0);
    printf("  state           %.0f series, %.0f bytes (%.0f per series)\n", series, state_bytes,
           series > 0 ? state_bytes / series : 0.0);
    printf("  restore         %.3f s for all %d partitions (%.0f state records read) by a second "
           "worker\n", restore_s, PARTS, restored);
    wfx_worker_destroy(w);
    cluster_destroy(&cl);
    tg_harness_tmpdir_done(dir);
}

static void lag(bool real, int devices, int rate, int lag_seconds)
{
    struct cluster cl = cluster(real);
    const char *bs = cl.bootstrap;
    char *dir = tg_harness_tmpdir_new("bench-worker-lag");
    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "bench", "a.", worker_extra);
    wfx_worker_wait_assigned(w, 60000);
    /* One second of event time per devices/rate seconds of real time. */
    int pace_ms = (int)((int64_t)devices * 1000 / rate);
    int event_seconds = lag_seconds * 1000 / pace_ms;
    struct wfx_input in = {.n_devices = devices, .base_ts_ms = wfx_recent_base_ms(event_seconds)};
    double cpu0 = cpu_seconds(tg_harness_proc_pid(w->proc));
    char *b0 = wfx_scrape(w);
    double snap_bytes0 = wfx_metric(b0, "tidegate_worker_state_snapshot_bytes_total");
    double snaps0 = wfx_metric(b0, "tidegate_worker_state_snapshots_total");
    free(b0);
    int64_t t0 = tg_harness_now_ms();
    struct wfx_feed *feed = wfx_feed_start(bs, "telemetry", &in, 0, event_seconds, pace_ms);
    printf("lag on %s: %d records/s (%d devices) for %d s into one worker; lag each second:\n ",
           real ? "a real Kafka broker" : "devkafka", rate, devices, lag_seconds);
    double max_lag = 0, sum_lag = 0;
    int samples = 0;
    for (int s = 1; s <= lag_seconds; s++) {
        int64_t due = t0 + (int64_t)s * 1000;
        while (tg_harness_now_ms() < due)
            usleep(20000);
        double l = lag_sum(w);
        printf(" %.0f", l);
        fflush(stdout);
        max_lag = l > max_lag ? l : max_lag;
        sum_lag += l;
        samples++;
    }
    size_t n = wfx_feed_join(feed);
    double fed_s = (double)(tg_harness_now_ms() - t0) / 1000.0;
    double cpu1 = cpu_seconds(tg_harness_proc_pid(w->proc));
    char *b1 = wfx_scrape(w);
    double snap_bytes1 = wfx_metric(b1, "tidegate_worker_state_snapshot_bytes_total");
    double snaps1 = wfx_metric(b1, "tidegate_worker_state_snapshots_total");
    double consumed = wfx_metric(b1, "tidegate_worker_records_consumed_total");
    free(b1);
    printf("\n  fed             %zu records in %.1f s (%.0f/s)\n", n, fed_s, (double)n / fed_s);
    printf("  lag             mean %.0f, max %.0f records (%.0f ms of input at the rate)\n",
           sum_lag / samples, max_lag, max_lag * 1000.0 / rate);
    printf("  worker CPU      %.1f%% of one core, %.2f us per record\n",
           (cpu1 - cpu0) * 100.0 / fed_s, (cpu1 - cpu0) * 1e6 / (double)n);
    printf("  state topic     %.0f bytes/s, %.0f records/s (%s; %.0f records consumed)\n",
           (snap_bytes1 - snap_bytes0) / fed_s, (snaps1 - snaps0) / fed_s,
           worker_extra_what, consumed);
    wfx_worker_stop(w);
    wfx_worker_destroy(w);
    cluster_destroy(&cl);
    tg_harness_tmpdir_done(dir);
}

int main(int argc, char **argv)
{
    int devices = 1000, seconds = 200, rate = 10000, lag_seconds = 30;
    bool real = false, lag_only = false;
    static char extra[96];
    static const struct option opts[] = {{"devices", required_argument, NULL, 'd'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"rate", required_argument, NULL, 'r'},
                                         {"lag-seconds", required_argument, NULL, 'l'},
                                         {"real", no_argument, NULL, 'K'},
                                         {"snapshot-interval-ms", required_argument, NULL, 'S'},
                                         {"lag-only", no_argument, NULL, 'L'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': devices = atoi(optarg); break;
        case 's': seconds = atoi(optarg); break;
        case 'r': rate = atoi(optarg); break;
        case 'l': lag_seconds = atoi(optarg); break;
        case 'K': real = true; break;
        case 'S':
            snprintf(extra, sizeof extra, "[worker]\nsnapshot_interval_ms = %d\n", atoi(optarg));
            worker_extra = extra;
            snprintf(worker_extra_what, sizeof worker_extra_what, "snapshot_interval_ms %d",
                     atoi(optarg));
            break;
        case 'L': lag_only = true; break;
        default:
            fprintf(stderr, "usage: bench_worker [--devices N] [--seconds S] [--rate R] "
                            "[--lag-seconds T] [--real] [--snapshot-interval-ms MS] [--lag-only]\n");
            return 2;
        }
    }
    if (devices < 1 || seconds < 1 || rate < 1 || lag_seconds < 1 || devices * 1000 / rate < 1) {
        fprintf(stderr, "bench_worker: bad arguments\n");
        return 2;
    }
    if (!lag_only)
        throughput(real, devices, seconds);
    lag(real, devices, rate, lag_seconds);
    return 0;
}
