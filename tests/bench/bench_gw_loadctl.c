/*
 * bench_gw_loadctl.c - the parent's side of bench_gateway's publisher child (bench_gw_load.c
 * has the child's side and the line protocol): start it, let it go, read its lines, wait for
 * its end.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bench_gw_run.h"

int bgw_read_line(struct tg_harness_proc *proc, char *buf, size_t size, int timeout_ms,
                     const char *what)
{
    int n = tg_harness_proc_read_line(proc, buf, size, timeout_ms);
    if (n < 0)
        fprintf(stderr, "bench_gateway: no %s from %s within %d ms (log: %s)\n", what,
                tg_harness_proc_name(proc), timeout_ms, tg_harness_proc_stderr_path(proc));
    return n;
}

/* Starts a publisher process and waits until every connection is up. */
int bgw_load_start(struct bgw_ctx *cx, struct bgw_load *ld, const char *name)
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
                                port, conns, devices, rate, dur, inflight, boot,
                                cx->o.json ? "json" : "cbor", NULL};
    ld->proc = tg_harness_proc_start(cx->dir, name, argv, NULL,
                                     TG_HARNESS_PROC_STDIN_PIPE | TG_HARNESS_PROC_STDOUT_PIPE);
    if (!ld->proc)
        return -1;
    char line[256];
    if (bgw_read_line(ld->proc, line, sizeof line, LINE_TIMEOUT_MS, "ready line") < 0)
        return -1;
    if (strcmp(line, "ready") != 0) {
        fprintf(stderr, "bench_gateway: publisher: %s\n", line);
        return -1;
    }
    return 0;
}

int bgw_load_go(struct bgw_load *ld)
{
    char line[256];
    if (tg_harness_proc_write(ld->proc, "go\n") < 0 ||
        bgw_read_line(ld->proc, line, sizeof line, LINE_TIMEOUT_MS, "start") < 0 ||
        sscanf(line, "started %" SCNd64, &ld->start_wall_us) != 1) {
        fprintf(stderr, "bench_gateway: the publisher did not start\n");
        return -1;
    }
    ld->start_mono_us = bgw_mono_us();
    return 0;
}

/* Takes one line from the publisher if one comes within timeout_ms. Returns 0, or -1 when
 * the publisher failed or died. */
int bgw_load_poll(struct bgw_load *ld, int timeout_ms)
{
    char line[256];
    if (bgw_interrupted) {
        fprintf(stderr, "bench_gateway: bgw_interrupted\n");
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
int bgw_load_finish(struct bgw_load *ld)
{
    int64_t deadline = bgw_mono_us() + DONE_TIMEOUT_MS * INT64_C(1000);
    while (!ld->done) {
        if (bgw_mono_us() > deadline) {
            fprintf(stderr, "bench_gateway: the publisher did not finish\n");
            return -1;
        }
        if (bgw_load_poll(ld, 100) < 0)
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

double bgw_load_rate(const struct bgw_load *ld)
{
    return ld->elapsed_us > 0 ? (double)ld->sent / bgw_secs(ld->elapsed_us) : 0;
}
