/*
 * bench_readback.c - what the read-back at start (reconcile_kafka.h, issue 12) costs the
 * restarted gateway: N readings are delivered to Kafka by a gateway whose dedup window (and
 * with it the Kafka offsets it saves) was last saved at its start; it is killed with -9 and
 * started again, and the new process reads all N back before it sends anything. Printed: how
 * long the read-back took (from the restart to tidegate_kafka_readback_found_total = N) and
 * the restarted process's peak RSS (VmHWM) once it is done, with nothing else to do.
 *
 *   bench_readback [--readings N] [--set SECTION.KEY=VALUE]...
 *
 * Mosquitto, devkafka and tidegate as the integration tests start them (gateway_fixture.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway_fixture.h"

#define DEVICES 1000
#define SETS_MAX 16
#define WAIT_MS 180000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "VmHWM" or "VmRSS" of pid in MB, or -1. */
static double status_mb(pid_t pid, const char *field)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *text = tg_harness_read_file(path);
    if (!text)
        return -1;
    double mb = -1;
    const char *p = strstr(text, field);
    unsigned long kb;
    if (p && sscanf(p + strlen(field), ": %lu kB", &kb) == 1)
        mb = (double)kb / 1024.0;
    free(text);
    return mb;
}

int main(int argc, char **argv)
{
    int readings = 100000;
    const char *sets[SETS_MAX + 2] = {"journal.dedup_save_interval_ms=3600000"};
    size_t n_sets = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--readings") == 0 && i + 1 < argc) {
            readings = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && n_sets < SETS_MAX) {
            sets[n_sets++] = argv[++i];
        } else {
            fprintf(stderr, "usage: bench_readback [--readings N] [--set S.K=V]...\n");
            return 2;
        }
    }
    if (readings < DEVICES)
        readings = DEVICES;
    const int seqs = readings / DEVICES;
    readings = seqs * DEVICES;

    int status = 1;
    const struct tg_gw_opts opts = {.commit_interval_ms = 1000, .sets = sets};
    struct tg_gw *gw = tg_gw_new(&opts);
    struct tg_gw_pub *pub = gw ? tg_gw_pub_new(gw, "readback-bench") : NULL;
    if (!pub) {
        fprintf(stderr, "bench_readback: cannot start mosquitto, devkafka and tidegate\n");
        goto out;
    }
    const struct tg_gw_plan plan = {.prefix = "rb", .devices = DEVICES, .seqs = seqs,
                                    .boot = 1, .format = TG_GW_JSON, .noise = true};
    if (tg_gw_pub_plan_start(pub, &plan) != 0 || tg_gw_pub_plan_join(pub) != 0 ||
        !tg_gw_pub_wait_acked(pub, WAIT_MS) ||
        !tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ, readings,
                           WAIT_MS)) {
        fprintf(stderr, "bench_readback: the first run did not deliver %d readings\n",
                readings);
        goto out;
    }
    double first_hwm = status_mb(tg_harness_proc_pid(tg_gw_tidegate_proc(gw)), "VmHWM");
    if (tg_gw_tidegate_kill9(gw) != 0)
        goto out;
    int64_t t0 = now_ms();
    if (tg_gw_tidegate_start(gw) != 0)
        goto out;
    pid_t pid = tg_harness_proc_pid(tg_gw_tidegate_proc(gw));
    if (!tg_gw_wait_metric(gw, "tidegate_kafka_readback_found_total", NULL, TG_GW_EQ, readings,
                           WAIT_MS)) {
        fprintf(stderr, "bench_readback: the restart found %g of %d readings\n",
                tg_gw_metric(gw, "tidegate_kafka_readback_found_total", NULL), readings);
        goto out;
    }
    int64_t took = now_ms() - t0;
    printf("read back %d readings (%d devices, JSON with noise) after kill -9\n", readings,
           DEVICES);
    printf("  restart to read-back done:          %.2f s (%.0f readings/s)\n",
           (double)took / 1000.0, (double)readings * 1000.0 / (double)(took ? took : 1));
    printf("  restarted gateway peak RSS (VmHWM): %.1f MB\n", status_mb(pid, "VmHWM"));
    /* The gateway counts the readings found after it freed the read-back's buffers. */
    printf("  its RSS after the read-back (VmRSS): %.1f MB\n", status_mb(pid, "VmRSS"));
    printf("  first run's peak RSS (it took them): %.1f MB\n", first_hwm);
    status = tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)) ? 0 : 1;
out:
    tg_gw_pub_destroy(pub);
    tg_gw_destroy(gw);
    return status;
}
