/*
 * bench_gw_ceiling.c - bench_gateway's pass 1: a bare libmosquitto subscriber (its own
 * process, bench_gateway --role sub) under the load, whose msg/s is the ceiling of any
 * libmosquitto-based gateway and whose CPU per message is the receive floor.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench_gw_run.h"

static int sub_count(struct tg_harness_proc *sub, uint64_t *out)
{
    char line[128];
    if (tg_harness_proc_write(sub, "count\n") < 0 ||
        bgw_read_line(sub, line, sizeof line, 5000, "count") < 0 ||
        sscanf(line, "count %" SCNu64, out) != 1)
        return -1;
    return 0;
}

static int sub_snap(struct bgw_ctx *cx, struct tg_harness_proc *sub, struct bgw_snap *s)
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
    if (bgw_interrupted || sub_count(sc->sub, &sc->seen) < 0) {
        sc->failed = true;
        return true;
    }
    return sc->seen >= sc->target;
}

int bgw_run_ceiling(struct bgw_ctx *cx, struct bgw_ceiling_result *res)
{
    int rc = -1;
    struct bgw_load ld = {0};
    char port[16], conns[16];
    snprintf(port, sizeof port, "%d", tg_harness_mosquitto_port(cx->mq));
    snprintf(conns, sizeof conns, "%u", cx->o.connections);
    const char *const argv[] = {cx->self, "--role", "sub", tg_harness_mosquitto_host(cx->mq),
                                port, conns, TOPIC_FILTER, "1", NULL};
    struct tg_harness_proc *sub = tg_harness_proc_start(
        cx->dir, "bare-subscriber", argv, NULL,
        TG_HARNESS_PROC_STDIN_PIPE | TG_HARNESS_PROC_STDOUT_PIPE);
    char line[128];
    if (!sub || bgw_read_line(sub, line, sizeof line, READY_TIMEOUT_MS, "ready line") < 0 ||
        strcmp(line, "ready") != 0)
        goto cleanup;
    printf("pass 1: bare subscriber (pid %ld) ...\n", (long)tg_harness_proc_pid(sub));
    fflush(stdout);

    struct bgw_snap s0, s1;
    bool have_s0 = false;
    if (bgw_load_start(cx, &ld, "publisher-ceiling") < 0 || bgw_load_go(&ld) < 0)
        goto cleanup;
    int64_t window_from = ld.start_mono_us + (int64_t)(cx->o.warmup_s * 1e6);
    while (!ld.published) {
        if (bgw_load_poll(&ld, 20) < 0)
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
    if (bgw_load_finish(&ld) < 0)
        goto cleanup;

    /* What the broker queued for a subscriber slower than the publishers still has to
     * arrive before the next pass starts. */
    struct sub_catchup sc = {.sub = sub, .target = ld.acked};
    tg_harness_wait_until(sub_caught_up, &sc, CATCHUP_TIMEOUT_MS);
    if (sc.failed)
        goto cleanup;

    double window = bgw_secs(s1.mono_us - s0.mono_us);
    double msgs = (double)(s1.sub_count - s0.sub_count);
    *res = (struct bgw_ceiling_result){
        .ran = true,
        .pub_rate = bgw_load_rate(&ld),
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
