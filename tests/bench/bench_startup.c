/* bench_startup: what the gateway reads of its journal when it starts with a backlog.
 *
 *   bench_startup [readings] [memory_bytes]     (defaults 1000000 and 4M, the default)
 *
 * Writes a backlog of that many readings (50 devices, values that compress badly) through
 * the pipeline with Kafka down (the stub egress), then measures each step of the start-up on
 * the journal it left: opening it (PRAGMA quick_check), the recovery scan (row metadata, done
 * bitmaps and data), and tg_pipeline_new as a whole (open, and the recovery scan that also
 * teaches the dedup window the journaled readings). For each: the bytes read from the journal's files
 * (rchar of /proc/self/io, so reads the SQLite page cache answers do not count; the OS page
 * cache is warm, this is not a cold-disk figure) and the time. The journal's size is printed
 * beside them, so "read N times over" can be seen. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gateway_config.h"
#include "journal.h"
#include "pipeline_internal.h"
#include "stub_egress.h"

/* CPU time of this process: the machine may be shared, and the reads hit the OS page cache,
 * so CPU seconds say more than wall time here. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Bytes this process has read through read()/pread() so far. */
static long long rchar(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    long long v = -1;
    char line[128];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "rchar: %lld", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

static struct tg_config *config(const char *journal, const char *memory_bytes)
{
    struct tg_config *cfg = tg_gateway_config_new();
    char set[1024];
    snprintf(set, sizeof set, "journal.path=%s", journal);
    if (!cfg || tg_config_set(cfg, set) != TG_OK || tg_config_set(cfg, "gateway.id=bench") ||
        tg_config_set(cfg, "journal.max_bytes=4G") != TG_OK)
        return NULL;
    snprintf(set, sizeof set, "journal.memory_bytes=%s", memory_bytes);
    if (tg_config_set(cfg, set) != TG_OK)
        return NULL;
    return cfg;
}

static int write_backlog(struct tg_config *cfg, long readings)
{
    struct tg_metrics *m = tg_metrics_new();
    struct tg_pipeline *pl = NULL;
    char err[512] = "";
    if (!m || tg_pipeline_new(cfg, m, &pl, err, sizeof err) != TG_OK) {
        fprintf(stderr, "bench_startup: tg_pipeline_new: %s\n", err);
        return -1;
    }
    stub_egress_set_up(stub_egress(), false); /* Kafka down: all of it stays journaled */
    for (long i = 0; i < readings; i++) {
        char topic[64], payload[160];
        int tl = snprintf(topic, sizeof topic, "telemetry/dev-%03ld", i % 50);
        int len = snprintf(payload, sizeof payload,
                           "{\"seq\":%ld,\"boot\":1,\"ts\":%lld,\"m\":{\"t\":%.9f,\"u\":%u}}",
                           i / 50, (long long)wall_ms(),
                           (double)((unsigned)i * 2654435761u % 100000) / 997.0,
                           (unsigned)i * 2246822519u);
        if (tg_pipeline_offer(pl, topic, (size_t)tl, (const uint8_t *)payload, (size_t)len,
                              wall_ms()) != TG_OK) {
            fprintf(stderr, "bench_startup: offer %ld refused\n", i);
            return -1;
        }
        pipeline__take_ingress(pl, 1000);
        if (i % 20000 == 19999 && pipeline__commit(pl, false) != TG_OK)
            return -1;
    }
    int rc = pipeline__commit(pl, true) == TG_OK ? 0 : -1;
    tg_pipeline_destroy(pl);
    tg_metrics_destroy(m);
    return rc;
}

static tg_err count_row(void *ud, const struct tg_jseg_meta *meta, const uint8_t *done,
                        size_t done_len, const uint8_t *data, size_t data_len)
{
    (void)meta;
    (void)done;
    (void)done_len;
    (void)data;
    (void)data_len;
    ++*(long *)ud;
    return TG_OK;
}

int main(int argc, char **argv)
{
    long readings = argc > 1 ? atol(argv[1]) : 1000000;
    const char *memory_bytes = argc > 2 ? argv[2] : "4M";
    char dir[] = "/tmp/tg-bench-startup-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char journal[256], wal[280];
    snprintf(journal, sizeof journal, "%s/journal.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", journal);
    struct tg_config *cfg = config(journal, memory_bytes);
    if (!cfg || write_backlog(cfg, readings) != 0)
        return 1;
    long long size = file_size(journal) + file_size(wal);

    char err[512] = "";
    long long r0 = rchar();
    double t0 = now_s();
    struct tg_journal *jr = NULL;
    bool moved = false;
    if (tg_journal_open(journal, NULL, &jr, &moved, err, sizeof err) != TG_OK) {
        fprintf(stderr, "bench_startup: open: %s\n", err);
        return 1;
    }
    long long r1 = rchar();
    double t1 = now_s();
    long rows = 0;
    if (tg_journal_scan(jr, count_row, &rows) != TG_OK)
        return 1;
    long long r2 = rchar();
    double t2 = now_s();
    tg_journal_close(jr);

    struct tg_metrics *m = tg_metrics_new();
    struct tg_pipeline *pl = NULL;
    long long r3 = rchar();
    double t3 = now_s();
    if (tg_pipeline_new(cfg, m, &pl, err, sizeof err) != TG_OK) {
        fprintf(stderr, "bench_startup: tg_pipeline_new: %s\n", err);
        return 1;
    }
    long long r4 = rchar();
    double t4 = now_s();

    printf("backlog: %ld readings in %ld segment rows, journal %.1f MiB, memory_bytes %s\n",
           readings, rows, (double)size / 1048576, memory_bytes);
    printf("open (quick_check):      read %8.1f MiB (%.2fx the journal) in %.3f CPU s\n",
           (double)(r1 - r0) / 1048576, (double)(r1 - r0) / (double)size, t1 - t0);
    printf("recovery scan alone:     read %8.1f MiB (%.2fx) in %.3f CPU s\n",
           (double)(r2 - r1) / 1048576, (double)(r2 - r1) / (double)size, t2 - t1);
    printf("tg_pipeline_new, whole:  read %8.1f MiB (%.2fx) in %.3f CPU s\n",
           (double)(r4 - r3) / 1048576, (double)(r4 - r3) / (double)size, t4 - t3);
    tg_pipeline_destroy(pl);
    tg_metrics_destroy(m);
    tg_config_destroy(cfg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
