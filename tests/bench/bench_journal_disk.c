/*
 * bench_journal_disk.c - bytes the journal keeps on disk per reading, WAL included.
 *
 * The pipeline (no MQTT) against tidegate-devkafka: RATE readings a second from DEVICES
 * devices for SECONDS seconds with Kafka up, then the same with Kafka down (every commit
 * journals), then up again until the backlog drains. After each phase it prints the sizes of
 * the journal file and its WAL, and at the end the same after a clean stop. Uses only the
 * pipeline's public API, so the same file builds against an older tree for a before/after.
 *   bench_journal_disk [SECONDS [RATE [MAX_BYTES]]]   defaults 10 s, 5000 readings/s, 256M
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "gateway_config.h"
#include "harness.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"

enum { DEVICES = 100 };

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long size_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

static void report(const char *phase, const char *db, long readings)
{
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", db);
    long d = size_of(db), w = size_of(wal);
    printf("%-28s readings %8ld  journal %9ld B  WAL %9ld B  total %6.1f B/reading\n", phase,
           readings, d, w, readings ? (double)(d + w) / (double)readings : 0.0);
}

/* Offers readings at rate/s for seconds; returns how many were taken. */
static long run_phase(struct tg_pipeline *pl, long from, int seconds, int rate)
{
    long n = 0, total = (long)seconds * rate;
    int64_t start = tg_harness_now_ms();
    while (n < total) {
        long due = (long)((tg_harness_now_ms() - start) * rate / 1000);
        if (n >= due) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        long i = from + n;
        char topic[64], payload[160];
        int tl = snprintf(topic, sizeof topic, "telemetry/dev-%ld", i % DEVICES);
        int len = snprintf(payload, sizeof payload,
                           "{\"seq\":%ld,\"boot\":1,\"ts\":%lld,\"m\":{\"temp\":%ld.%ld,"
                           "\"hum\":%ld}}",
                           i / DEVICES, (long long)wall_ms(), 15 + i % 20, i % 10, 30 + i % 50);
        if (tg_pipeline_offer(pl, topic, (size_t)tl, (const uint8_t *)payload, (size_t)len,
                              wall_ms()) == TG_OK)
            n++;
    }
    return n;
}

struct want {
    struct tg_metrics *m;
    double delivered;
};

static bool drained(void *ud)
{
    struct want *w = ud;
    return tg_metrics_find_value(w->m, "tidegate_messages_delivered_total", NULL) >= w->delivered;
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    int rate = argc > 2 ? atoi(argv[2]) : 5000;
    const char *max_bytes = argc > 3 ? argv[3] : "256M";
    tg_log_set_level(TG_LOG_LEVEL_ERROR);
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    char *dir = tg_harness_tmpdir_new("bench-journal");
    if (!dk || !dir) {
        fprintf(stderr, "cannot start devkafka\n");
        return 1;
    }
    char db[512], kv[700];
    snprintf(db, sizeof db, "%s/journal.db", dir);
    struct tg_config *cfg = tg_gateway_config_new();
    snprintf(kv, sizeof kv, "kafka.brokers=%s", tg_harness_devkafka_bootstrap(dk));
    tg_config_set(cfg, kv);
    snprintf(kv, sizeof kv, "journal.path=%s", db);
    tg_config_set(cfg, kv);
    tg_config_set(cfg, "gateway.id=bench");
    snprintf(kv, sizeof kv, "journal.max_bytes=%s", max_bytes);
    if (tg_config_set(cfg, kv) != TG_OK) {
        fprintf(stderr, "%s\n", tg_config_error(cfg));
        return 2;
    }
    struct tg_metrics *m = tg_metrics_new();
    struct tg_pipeline *pl = NULL;
    char err[1024];
    if (tg_pipeline_new(cfg, m, &pl, err, sizeof err) != TG_OK ||
        tg_pipeline_start(pl) != TG_OK) {
        fprintf(stderr, "pipeline: %s\n", err);
        return 1;
    }
    printf("journal: commit_interval_ms %s, max_bytes %s; %d readings/s, %d s per phase, %d "
           "devices\n",
           tg_config_get_str(cfg, "journal", "commit_interval_ms"),
           tg_config_get_str(cfg, "journal", "max_bytes"), rate, seconds, DEVICES);
    long n = run_phase(pl, 0, seconds, rate);
    struct want w = {m, (double)n};
    tg_harness_wait_until(drained, &w, 60000);
    report("Kafka up", db, n);
    tg_harness_devkafka_outage_begin(dk);
    n += run_phase(pl, n, seconds, rate);
    report("+ Kafka down", db, n);
    tg_harness_devkafka_outage_end(dk);
    w.delivered = (double)n;
    tg_harness_wait_until(drained, &w, 120000);
    report("+ backlog drained", db, n);
    tg_pipeline_stop(pl, 5000);
    tg_pipeline_destroy(pl);
    report("after a clean stop", db, n);
    tg_metrics_destroy(m);
    tg_config_destroy(cfg);
    tg_harness_devkafka_destroy(dk);
    tg_harness_tmpdir_done(dir);
    return 0;
}
