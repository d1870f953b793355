/*
 * bench_sim.c - the simulator's capacity and cost: tidegate-sim run against a Mosquitto this
 * program starts, N devices (default 10,000) at 1 Hz. Prints the time to connect every
 * device, the simulator's CPU (% of one core, from /proc/<pid>/stat over a steady-state
 * window after every device connected), its resident memory, and the publish rate it kept
 * up (from its own /metrics). Targets (issue 4): <= 25% of one core, <= 10 s to connect
 * 10,000 devices.
 *
 *   bench_sim [--devices N] [--rate HZ] [--window S] [--connect-rate R]
 *
 * The open-files limit is raised here so that Mosquitto (a child, it inherits it) can accept
 * N connections; its config lifts max_connections.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

struct proc_sample {
    double cpu_s; /* utime + stime */
    long rss_kb;
    long hwm_kb;
};

static int sample_proc(pid_t pid, struct proc_sample *out)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *stat = tg_harness_read_file(path);
    if (!stat)
        return -1;
    /* Fields after the command name, which is in parentheses and may contain spaces. */
    char *p = strrchr(stat, ')');
    unsigned long utime = 0, stime = 0;
    int rc = p ? sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                        &stime)
               : 0;
    free(stat);
    if (rc != 2)
        return -1;
    out->cpu_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *status = tg_harness_read_file(path);
    if (!status)
        return -1;
    char *rss = strstr(status, "VmRSS:");
    char *hwm = strstr(status, "VmHWM:");
    out->rss_kb = rss ? strtol(rss + 6, NULL, 10) : -1;
    out->hwm_kb = hwm ? strtol(hwm + 6, NULL, 10) : -1;
    free(status);
    return 0;
}

/* The value of a sample line "name value" or "name{labels} value" in a /metrics body. */
static double metric_value(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = body; (p = strstr(p, series)) != NULL; p += n) {
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return NAN;
}

static double scrape(int port, const char *series)
{
    char *body = NULL;
    if (tg_harness_http_get(port, "/metrics", 2000, &body) != 200) {
        free(body);
        return NAN;
    }
    double v = metric_value(body, series);
    free(body);
    return v;
}

struct connected_wait {
    int port;
    double devices;
};

static bool all_connected(void *ud)
{
    struct connected_wait *w = ud;
    return scrape(w->port, "tidegate_sim_devices_connected") >= w->devices;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    unsigned devices = 10000;
    double rate = 1.0, window_s = 20.0, connect_rate = 2000.0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--devices") == 0)
            devices = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && strcmp(argv[i], "--rate") == 0)
            rate = strtod(argv[++i], NULL);
        else if (i + 1 < argc && strcmp(argv[i], "--window") == 0)
            window_s = strtod(argv[++i], NULL);
        else if (i + 1 < argc && strcmp(argv[i], "--connect-rate") == 0)
            connect_rate = strtod(argv[++i], NULL);
        else {
            fprintf(stderr, "usage: bench_sim [--devices N] [--rate HZ] [--window S] "
                            "[--connect-rate R]\n");
            return 2;
        }
    }
    if (devices == 0 || rate <= 0 || window_s <= 0 || connect_rate <= 0) {
        fprintf(stderr, "bench_sim: bad arguments\n");
        return 2;
    }

    rlim_t need = (rlim_t)devices + 1024; /* the broker's side: one socket per device */
    struct rlimit rl = {.rlim_cur = need, .rlim_max = need};
    struct rlimit cur;
    if (getrlimit(RLIMIT_NOFILE, &cur) == 0 && cur.rlim_max > need)
        rl.rlim_max = cur.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "bench_sim: cannot raise the open-files limit to %llu: %s\n",
                (unsigned long long)need, strerror(errno));
        return 1;
    }

    int status = 1;
    struct tg_harness_mosquitto *mq = NULL;
    struct tg_harness_proc *sim = NULL;
    char *dir = NULL;
    char conf[128];
    snprintf(conf, sizeof conf, "max_connections -1\nmax_queued_messages 1000\n");
    mq = tg_harness_mosquitto_start(0, conf);
    dir = tg_harness_tmpdir_new("bench-sim");
    int mport = tg_harness_free_port();
    if (!mq || !dir || mport < 0)
        goto out;

    char bin[512], broker[64], ndev[32], hz[32], dur[32], crate[32], listen[64];
    snprintf(bin, sizeof bin, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(broker, sizeof broker, "127.0.0.1:%d", tg_harness_mosquitto_port(mq));
    snprintf(ndev, sizeof ndev, "%u", devices);
    snprintf(hz, sizeof hz, "%g", rate);
    double max_connect_s = devices / connect_rate + 30;
    snprintf(dur, sizeof dur, "%.0f", max_connect_s + window_s + 5);
    snprintf(crate, sizeof crate, "%g", connect_rate);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", mport);
    const char *args[] = {bin, "run", "--broker", broker, "--devices", ndev, "--rate", hz,
                          "--duration", dur, "--connect-rate", crate, "--metrics-listen", listen,
                          "--drain", "5", "--state-dir", dir, NULL};
    int64_t t0 = tg_harness_now_ms();
    sim = tg_harness_proc_start(dir, "tidegate-sim", args, NULL, 0);
    if (!sim)
        goto out;
    struct connected_wait cw = {.port = mport, .devices = devices};
    if (!tg_harness_wait_until(all_connected, &cw, (int)(max_connect_s * 1000))) {
        fprintf(stderr, "bench_sim: not every device connected within %.0f s; see %s\n",
                max_connect_s, tg_harness_proc_stderr_path(sim));
        goto out;
    }
    double connect_s = (double)(tg_harness_now_ms() - t0) / 1000.0;
    /* The simulator's own figure, measured from its first connect. */
    char *log = tg_harness_read_file(tg_harness_proc_stderr_path(sim));
    double sim_connect_s = NAN;
    const char *at = log ? strstr(log, "devices connected after ") : NULL;
    if (at)
        sim_connect_s = strtod(at + strlen("devices connected after "), NULL);
    free(log);

    sleep_ms(2000); /* let the ramp's last samples settle into the steady rhythm */
    struct proc_sample a, b, ba, bb;
    pid_t spid = tg_harness_proc_pid(sim);
    pid_t bpid = tg_harness_proc_pid(tg_harness_mosquitto_proc(mq));
    double pub_a = scrape(mport, "tidegate_sim_publishes_total{kind=\"reading\"}");
    double rel_a = scrape(mport, "tidegate_sim_readings_released_total");
    int64_t w0 = tg_harness_now_ms();
    if (sample_proc(spid, &a) != 0 || sample_proc(bpid, &ba) != 0)
        goto out;
    sleep_ms((int)(window_s * 1000));
    if (sample_proc(spid, &b) != 0 || sample_proc(bpid, &bb) != 0)
        goto out;
    double pub_b = scrape(mport, "tidegate_sim_publishes_total{kind=\"reading\"}");
    double rel_b = scrape(mport, "tidegate_sim_readings_released_total");
    double w = (double)(tg_harness_now_ms() - w0) / 1000.0;

    double cpu_pct = 100.0 * (b.cpu_s - a.cpu_s) / w;
    double broker_pct = 100.0 * (bb.cpu_s - ba.cpu_s) / w;
    double pub_rate = (pub_b - pub_a) / w;
    double rel_rate = (rel_b - rel_a) / w;
    printf("tidegate-sim: %u devices at %g Hz, connect rate %g/s (window %.1f s)\n", devices,
           rate, connect_rate, w);
    printf("  time to connect all        %.2f s (simulator's own count: %.2f s)   target <= 10 s\n",
           connect_s, sim_connect_s);
    printf("  simulator CPU              %.1f%% of one core (%.1f us per reading)   target <= 25%%\n",
           cpu_pct, pub_rate > 0 ? 1e6 * (b.cpu_s - a.cpu_s) / (pub_rate * w) : NAN);
    printf("  simulator RSS              %.1f MB now, %.1f MB peak\n", b.rss_kb / 1024.0,
           b.hwm_kb / 1024.0);
    printf("  publish rate               %.0f readings/s (expected %.0f), %.0f confirmed/s\n",
           pub_rate, devices * rate, rel_rate);
    printf("  broker (mosquitto) CPU     %.1f%% of one core, RSS %.1f MB\n", broker_pct,
           bb.rss_kb / 1024.0);
    status = 0;

out:
    if (sim) {
        tg_harness_proc_stop(sim, 20000);
        tg_harness_proc_destroy(sim);
    }
    if (status == 0)
        tg_harness_tmpdir_done(dir);
    else if (dir)
        fprintf(stderr, "bench_sim: logs kept in %s\n", dir);
    tg_harness_mosquitto_destroy(mq);
    return status;
}
