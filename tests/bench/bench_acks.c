/*
 * bench_acks.c - what durable acknowledgements (issue 12) cost, side by side in one run:
 * tidegate-sim (N devices, default 10,000 x 1 Hz) -> Mosquitto -> tidegate -> devkafka,
 * first without acks (gateway [ack] enabled = false, devices release at PUBACK), then with
 * them ([ack] enabled = true, tidegate-sim --durable-acks), each on a fresh broker, gateway and
 * cluster. Over a steady window after every device connected it prints, per mode, the CPU of
 * the broker and of the gateway (us per reading received, and % of one core), the readings
 * and ack messages per second, and the simulator's outbox occupancy (readings waiting, mean
 * per device), then the with/without ratio of broker + gateway CPU (issue 12's target: within
 * 10%).
 *
 *   bench_acks [--devices N] [--rate HZ] [--window S] [--min-interval MS[,MS...]]
 *
 * One run without acks, then one with acks per [ack] min_interval_ms given (default
 * 200,5000,10000); nodes use a 30 s ack timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "gateway_fixture.h"

struct cpu {
    double broker_s, gateway_s;
};

static double proc_cpu_s(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *stat = tg_harness_read_file(path);
    if (!stat)
        return -1;
    char *p = strrchr(stat, ')');
    unsigned long utime = 0, stime = 0;
    int rc = p ? sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                        &stime)
               : 0;
    free(stat);
    return rc == 2 ? (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK) : -1;
}

/* A metric's value in a /metrics text (first series of that name), or -1. */
static double text_metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && (p[n] == ' ' || p[n] == '{')) {
            const char *v = strchr(p, ' ');
            return v ? strtod(v + 1, NULL) : -1;
        }
    }
    return -1;
}

static double sim_metric(int port, const char *name)
{
    char *body = NULL;
    if (tg_harness_http_get(port, "/metrics", 5000, &body) != 200 || !body) {
        free(body);
        return -1;
    }
    double v = text_metric(body, name);
    free(body);
    return v;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

struct result {
    double rx_per_s, acks_per_s, broker_us, gateway_us, broker_pct, gateway_pct;
    double outbox_mean, outbox_max_total;
};

static int run_mode(bool acks, int min_interval_ms, int devices, double rate, int window_s,
                    struct result *r)
{
    memset(r, 0, sizeof *r);
    char ini[128];
    snprintf(ini, sizeof ini, "[ack]\nenabled = true\nmin_interval_ms = %d\n", min_interval_ms);
    const struct tg_gw_opts opts = {
        .mqtt_extra_conf = "max_connections -1\nmax_queued_messages 1000000\n",
        .commit_interval_ms = 1000, /* the default of a gateway's config */
        .extra_ini = acks ? ini : NULL,
    };
    struct tg_gw *gw = tg_gw_new(&opts);
    if (!gw)
        return -1;
    int sim_port = tg_harness_free_port();
    char sim[1024], broker[64], devs[16], rate_s[32], duration[16], listen[64];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(tg_gw_mosquitto(gw)),
             tg_harness_mosquitto_port(tg_gw_mosquitto(gw)));
    snprintf(devs, sizeof devs, "%d", devices);
    snprintf(rate_s, sizeof rate_s, "%g", rate);
    snprintf(duration, sizeof duration, "%d", window_s + 40);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", sim_port);
    const char *argv_off[] = {sim, "run", "--broker", broker, "--devices", devs, "--rate", rate_s,
                              "--duration", duration, "--metrics-listen", listen, "--drain", "0",
                              NULL};
    const char *argv_on[] = {sim, "run", "--broker", broker, "--devices", devs, "--rate", rate_s,
                             "--duration", duration, "--metrics-listen", listen, "--drain", "0",
                             "--durable-acks", "--ack-timeout", "30000", NULL};
    struct tg_harness_proc *run =
        tg_harness_proc_start(tg_gw_dir(gw), "sim-run", acks ? argv_on : argv_off, NULL, 0);
    if (!run) {
        tg_gw_destroy(gw);
        return -1;
    }
    /* Steady state: every device connected, then 10 s more for the connect burst to pass. */
    int64_t deadline = tg_harness_now_ms() + 120000;
    while (sim_metric(sim_port, "tidegate_sim_devices_connected") < devices &&
           tg_harness_now_ms() < deadline)
        pause_ms(500);
    pause_ms(10000);
    pid_t bpid = tg_harness_proc_pid(tg_harness_mosquitto_proc(tg_gw_mosquitto(gw)));
    pid_t gpid = tg_harness_proc_pid(tg_gw_tidegate_proc(gw));
    double b0 = proc_cpu_s(bpid), g0 = proc_cpu_s(gpid);
    double rx0 = tg_gw_metric(gw, "tidegate_messages_received_total", NULL);
    double ak0 = acks ? tg_gw_metric(gw, "tidegate_acks_sent_total", NULL) : 0;
    int64_t t0 = tg_harness_now_ms();
    double outbox_sum = 0, outbox_max = 0;
    int samples = 0;
    while (tg_harness_now_ms() < t0 + window_s * 1000) {
        pause_ms(1000);
        double ob = sim_metric(sim_port, "tidegate_sim_outbox_readings");
        if (ob >= 0) {
            outbox_sum += ob;
            if (ob > outbox_max)
                outbox_max = ob;
            samples++;
        }
    }
    double secs = (double)(tg_harness_now_ms() - t0) / 1000.0;
    if (getenv("BENCH_ACKS_DEBUG")) {
        char *body = NULL;
        tg_harness_http_get(tg_gw_metrics_port(gw), "/metrics", 5000, &body);
        fprintf(stderr, "%s\n", body ? body : "(no metrics)");
        free(body);
        char path[1200];
        snprintf(path, sizeof path, "%s", tg_harness_proc_stderr_path(tg_gw_tidegate_proc(gw)));
        char *log = tg_harness_read_file(path);
        fprintf(stderr, "gateway log:\n%s\n", log ? log : "");
        free(log);
    }
    double b1 = proc_cpu_s(bpid), g1 = proc_cpu_s(gpid);
    double rx = tg_gw_metric(gw, "tidegate_messages_received_total", NULL) - rx0;
    double ak = acks ? tg_gw_metric(gw, "tidegate_acks_sent_total", NULL) - ak0 : 0;
    r->rx_per_s = rx / secs;
    r->acks_per_s = ak / secs;
    r->broker_us = (b1 - b0) / rx * 1e6;
    r->gateway_us = (g1 - g0) / rx * 1e6;
    r->broker_pct = (b1 - b0) / secs * 100;
    r->gateway_pct = (g1 - g0) / secs * 100;
    r->outbox_mean = samples ? outbox_sum / samples / devices : 0;
    r->outbox_max_total = outbox_max;
    tg_harness_proc_signal(run, SIGINT);
    int status;
    (void)tg_harness_proc_wait(run, 30000, &status);
    tg_harness_proc_destroy(run);
    tg_gw_destroy(gw);
    return 0;
}

static void print(const char *mode, const struct result *r)
{
    printf("%-20s %9.0f %9.0f %10.2f %10.2f %8.1f %8.1f %12.2f %10.0f\n", mode, r->rx_per_s,
           r->acks_per_s, r->broker_us, r->gateway_us, r->broker_pct, r->gateway_pct,
           r->outbox_mean, r->outbox_max_total);
}

int main(int argc, char **argv)
{
    int devices = 10000, window_s = 20;
    double rate = 1;
    char intervals[256] = "200,5000,10000";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--devices") == 0)
            devices = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rate") == 0)
            rate = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--window") == 0)
            window_s = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--min-interval") == 0)
            snprintf(intervals, sizeof intervals, "%s", argv[i + 1]);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = (rlim_t)devices * 2 + 1024;
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || want < rl.rlim_max ? want : rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct result off = {0}, on[8];
    int ms[8], n = 0;
    for (char *tok = strtok(intervals, ","); tok && n < 8; tok = strtok(NULL, ","))
        ms[n++] = atoi(tok);
    if (!getenv("BENCH_ACKS_ONLY") && run_mode(false, 0, devices, rate, window_s, &off) != 0) {
        fprintf(stderr, "bench_acks: the run without acks failed\n");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (run_mode(true, ms[i], devices, rate, window_s, &on[i]) != 0) {
            fprintf(stderr, "bench_acks: the run with acks failed\n");
            return 1;
        }
    }
    printf("durable acks, %d devices x %g Hz, %d s window, commit 1000 ms, node ack timeout "
           "30 s\n",
           devices, rate, window_s);
    printf("%-20s %9s %9s %10s %10s %8s %8s %12s %10s\n", "mode", "rx/s", "acks/s",
           "broker_us", "gw_us", "broker%", "gw%", "outbox/dev", "outbox_max");
    print("without acks", &off);
    double before = off.broker_us + off.gateway_us;
    for (int i = 0; i < n; i++) {
        char label[64];
        snprintf(label, sizeof label, "acks, min %d ms", ms[i]);
        print(label, &on[i]);
    }
    for (int i = 0; i < n; i++) {
        double after = on[i].broker_us + on[i].gateway_us;
        printf("min_interval_ms %d: broker + gateway CPU per reading %.2f -> %.2f us (%+.1f%%)\n",
               ms[i], before, after, (after - before) / before * 100);
    }
    tg_gw_reap_all();
    return 0;
}
