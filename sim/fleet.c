/*
 * fleet.c - the simulator's event loop (see fleet.h).
 */
#include "fleet.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <mosquitto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "boot_state.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "sim_metrics.h"
#include "sim_rand.h"
#include "timerq.h"

#define MAX_EVENTS 512
#define FD_RESERVE 128          /* descriptors beyond one per device: epoll, files, HTTP */
#define PROGRESS_TTY_MS 1000
#define PROGRESS_LOG_MS 10000
#define OUTBOX_SCAN_MS 1000
#define CLOSE_FLUSH_MS 2000     /* how long DISCONNECTs get to leave at the end */

enum phase { PHASE_RUN, PHASE_DRAIN, PHASE_DONE };

struct fleet {
    const struct tg_sim_run_options *opt;
    struct tg_sim_clock clock;
    struct tg_metrics *metrics;
    struct tg_sim_metrics sm;
    struct tg_metrics_http *http;
    struct tg_ledger *ledger;
    uint64_t *boots; /* per device: its boot in this run (boot_state.h) */
    FILE *labels;
    char *labels_tmp;
    uint64_t labels_written;
    bool labels_failed;
    int epoll_fd;
    int signal_fd;
    struct tg_sim_device **devs;
    uint32_t n_devs;
    uint32_t n_started;
    struct tg_timerq *timers;
    uint64_t rng;               /* churn and storm choices */
    unsigned signals;
    enum phase phase;
    uint64_t start_ms;
    uint64_t run_end_ms;
    uint64_t drain_end_ms;
    uint64_t next_churn_ms;
    bool storm_done;
    uint64_t next_outbox_scan_ms;
    unsigned outbox_total;
    /* progress */
    bool tty;
    uint64_t next_progress_ms;
    uint64_t last_progress_ms;
    uint64_t last_pub, last_rel;
    uint64_t all_connected_ms;  /* when every device was first connected at once; 0: not yet */
};

void tg_sim_run_options_init(struct tg_sim_run_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->broker_port = 1883;
    opt->devices = 10000;
    opt->rate_hz = 1.0;
    opt->duration_s = 60.0;
    opt->seed = 1;
    opt->connect_rate = 2000.0;
    opt->storm_at_s = -1.0;
    opt->drain_s = 15.0;
    opt->keepalive_s = 60;
}

unsigned tg_sim_outbox_slots(double rate_hz)
{
    double slots = ceil(30.0 * rate_hz);
    if (slots < 8)
        return 8;
    if (slots > 64)
        return 64;
    return (unsigned)slots;
}

static void update_clock(struct fleet *fl)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fl->clock.mono_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    clock_gettime(CLOCK_REALTIME, &ts);
    fl->clock.wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Each device needs one socket (device.c keeps libmosquitto from opening its socketpair). */
static int raise_fd_limit(uint32_t devices)
{
    rlim_t need = (rlim_t)devices + FD_RESERVE;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        TG_LOG_ERROR("sim", "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur >= need)
        return 0;
    struct rlimit want = {.rlim_cur = need, .rlim_max = rl.rlim_max >= need ? rl.rlim_max : need};
    if (setrlimit(RLIMIT_NOFILE, &want) == 0)
        return 0;
    TG_LOG_ERROR("sim",
                 "%" PRIu32 " devices need %llu open files, but the limit is %llu (hard %llu) and "
                 "cannot be raised: %s; raise it (ulimit -Hn, or LimitNOFILE=) or use fewer devices",
                 devices, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
                 (unsigned long long)rl.rlim_max, strerror(errno));
    return -1;
}

/* --- labels ----------------------------------------------------------------------------- */

static void write_label(void *ud, const struct tg_anomaly_label *lb)
{
    struct fleet *fl = ud;
    if (!fl->labels || fl->labels_failed)
        return;
    /* Device ids and metric names are [A-Za-z0-9_.-] (the gateway's rule): no escaping. */
    if (fprintf(fl->labels,
                "{\"device\":\"%s\",\"metric\":\"%s\",\"kind\":\"%s\",\"start_ts\":%" PRId64
                ",\"end_ts\":%" PRId64 "}\n",
                lb->device, lb->metric, tg_anomaly_kind_name(lb->kind), lb->start_ts,
                lb->end_ts) < 0) {
        fl->labels_failed = true;
        TG_LOG_ERROR("sim", "writing %s: %s", fl->labels_tmp, strerror(errno));
        return;
    }
    fl->labels_written++;
}

static int open_labels(struct fleet *fl)
{
    const char *path = fl->opt->labels_path;
    size_t n = strlen(path) + 8;
    fl->labels_tmp = malloc(n);
    if (!fl->labels_tmp)
        return -1;
    snprintf(fl->labels_tmp, n, "%s.tmp", path);
    fl->labels = fopen(fl->labels_tmp, "w");
    if (!fl->labels) {
        TG_LOG_ERROR("sim", "cannot create %s: %s", fl->labels_tmp, strerror(errno));
        return -1;
    }
    return 0;
}

/* Written to a temporary file during the run and renamed at the end, so that a reader never
 * sees a half-written label file under the final name. */
static int close_labels(struct fleet *fl)
{
    if (!fl->labels)
        return 0;
    /* The errno of the first failure, saved where it happens: the calls after it (fclose,
     * unlink) would overwrite it. */
    int err = 0;
    if (fflush(fl->labels) != 0 || fsync(fileno(fl->labels)) != 0)
        err = errno;
    if (fclose(fl->labels) != 0 && err == 0)
        err = errno;
    fl->labels = NULL;
    if (fl->labels_failed) {
        /* write_label() said why when it happened. */
        TG_LOG_ERROR("sim", "labels %s not written: a write failed during the run",
                     fl->opt->labels_path);
        unlink(fl->labels_tmp);
        return -1;
    }
    if (err == 0 && rename(fl->labels_tmp, fl->opt->labels_path) != 0)
        err = errno;
    if (err != 0) {
        TG_LOG_ERROR("sim", "cannot write labels %s: %s", fl->opt->labels_path, strerror(err));
        unlink(fl->labels_tmp);
        return -1;
    }
    /* Make the rename itself durable, as tg_ledger_write() does. A directory that cannot be
     * opened (no read permission) is not worth failing for: the file is complete either way. */
    char *copy = strdup(fl->opt->labels_path);
    if (!copy) {
        TG_LOG_ERROR("sim", "labels %s: out of memory", fl->opt->labels_path);
        return -1;
    }
    FILE *d = fopen(dirname(copy), "r");
    if (d) {
        if (fsync(fileno(d)) != 0 && errno != EINVAL)
            err = errno;
        fclose(d);
    }
    free(copy);
    if (err != 0) {
        TG_LOG_ERROR("sim", "cannot sync the directory of labels %s: %s", fl->opt->labels_path,
                     strerror(err));
        return -1;
    }
    TG_LOG_INFO("sim", "labels: %" PRIu64 " anomalies written to %s", fl->labels_written,
                fl->opt->labels_path);
    return 0;
}

/* --- setup ------------------------------------------------------------------------------ */

static int setup_signals(struct fleet *fl)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    /* Blocked before any thread starts (the metrics exporter), so only the signalfd sees them. */
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    fl->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fl->signal_fd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    return epoll_ctl(fl->epoll_fd, EPOLL_CTL_ADD, fl->signal_fd, &ev);
}

/* Every device's boot for this run, advanced in the state directory (boot_state.h). */
static int advance_boots(struct fleet *fl)
{
    const struct tg_sim_run_options *opt = fl->opt;
    char dir[4096], err[512];
    const char *state_dir = opt->state_dir;
    if (!state_dir) {
        if (tg_sim_boots_default_dir(opt->ledger_path, dir, sizeof dir, err, sizeof err) != 0) {
            TG_LOG_ERROR("sim", "%s", err);
            return -1;
        }
        state_dir = dir;
    }
    char (*ids)[16] = calloc(opt->devices, sizeof *ids);
    const char **id_ptrs = calloc(opt->devices, sizeof *id_ptrs);
    fl->boots = calloc(opt->devices, sizeof *fl->boots);
    int rc = -1;
    if (!ids || !id_ptrs || !fl->boots) {
        TG_LOG_ERROR("sim", "out of memory for %" PRIu32 " devices", opt->devices);
        goto cleanup;
    }
    for (uint32_t i = 0; i < opt->devices; i++) {
        snprintf(ids[i], sizeof ids[i], "sim-%05" PRIu32, i + 1);
        id_ptrs[i] = ids[i];
    }
    if (tg_sim_boots_advance(state_dir, id_ptrs, opt->devices, fl->boots, err, sizeof err) !=
        0) {
        TG_LOG_ERROR("sim", "boot counters: %s", err);
        goto cleanup;
    }
    TG_LOG_INFO("sim", "boot counters in %s/%s: this run's devices boot at %" PRIu64
                       "%s",
                state_dir, TG_SIM_BOOTS_FILE, fl->boots[0],
                opt->devices > 1 ? " (the first device)" : "");
    rc = 0;
cleanup:
    free(ids);
    free(id_ptrs);
    return rc;
}

static int create_devices(struct fleet *fl)
{
    const struct tg_sim_run_options *opt = fl->opt;
    fl->devs = calloc(opt->devices, sizeof *fl->devs);
    fl->timers = tg_timerq_new(opt->devices);
    if (!fl->devs || !fl->timers) {
        TG_LOG_ERROR("sim", "out of memory for %" PRIu32 " devices", opt->devices);
        return -1;
    }
    double period = 1000.0 / opt->rate_hz;
    uint32_t period_ms = period < 1 ? 1 : (uint32_t)llround(period);
    unsigned slots = tg_sim_outbox_slots(opt->rate_hz);
    for (uint32_t i = 0; i < opt->devices; i++) {
        char id[32];
        snprintf(id, sizeof id, "sim-%05" PRIu32, i + 1);
        int idx = fl->ledger ? tg_ledger_add_device(fl->ledger, id) : (int)i;
        if (idx != (int)i ||
            (fl->ledger && tg_ledger_set_boot(fl->ledger, idx, fl->boots[i]) != 0)) {
            TG_LOG_ERROR("sim", "ledger: cannot add device %s", id);
            return -1;
        }
        /* Which devices are skewed depends on the seed only, not on the run's timing. */
        uint64_t pick = tg_sim_stream_seed(opt->seed, i, TG_SIM_STREAM_FLEET);
        struct tg_sim_device_config cfg = {
            .index = i,
            .device_id = id,
            .seed = opt->seed,
            .host = opt->broker_host,
            .port = opt->broker_port,
            .keepalive_s = opt->keepalive_s,
            .period_ms = period_ms,
            .outbox_slots = slots,
            .durable_acks = opt->durable_acks,
            .ack_timeout_ms = opt->ack_timeout_ms,
            .anomaly_rate = opt->anomaly_rate,
            .malformed = opt->malformed,
            .duplicates = opt->duplicates,
            .skewed = opt->skew > 0 && tg_sim_rand_unit(&pick) < opt->skew,
            .boot = fl->boots[i],
            .clock = &fl->clock,
            .epoll_fd = fl->epoll_fd,
            .ledger = fl->ledger,
            .metrics = &fl->sm,
            .on_label = opt->labels_path ? write_label : NULL,
            .label_ud = fl,
        };
        char err[256];
        fl->devs[i] = tg_sim_device_new(&cfg, err, sizeof err);
        if (!fl->devs[i]) {
            TG_LOG_ERROR("sim", "%s", err);
            return -1;
        }
        fl->n_devs++;
    }
    tg_gauge_set(fl->sm.devices, (double)fl->n_devs);
    return 0;
}

/* --- the loop's parts ------------------------------------------------------------------- */

static void ramp(struct fleet *fl, uint64_t now)
{
    if (fl->n_started >= fl->n_devs)
        return;
    double elapsed_s = (double)(now - fl->start_ms) / 1000.0;
    double allowed = floor(elapsed_s * fl->opt->connect_rate) + 1;
    while (fl->n_started < fl->n_devs && (double)fl->n_started < allowed) {
        uint32_t i = fl->n_started++;
        if (tg_sim_device_start(fl->devs[i]) != 0)
            TG_LOG_WARN("sim", "device %s failed to start", tg_sim_device_id(fl->devs[i]));
        tg_timerq_set(fl->timers, i, now);
    }
    tg_gauge_set(fl->sm.started, (double)fl->n_started);
}

static uint64_t next_ramp_ms(const struct fleet *fl)
{
    if (fl->n_started >= fl->n_devs)
        return UINT64_MAX;
    double at_s = (double)fl->n_started / fl->opt->connect_rate;
    return fl->start_ms + (uint64_t)ceil(at_s * 1000.0);
}

static void schedule_churn(struct fleet *fl, uint64_t now)
{
    double per_ms = fl->opt->churn * fl->n_devs / 3600000.0; /* fleet-wide Poisson rate */
    fl->next_churn_ms = per_ms > 0 ? now + 1 + (uint64_t)tg_sim_rand_exp(&fl->rng, 1.0 / per_ms)
                                   : UINT64_MAX;
}

static void churn(struct fleet *fl, uint64_t now)
{
    while (now >= fl->next_churn_ms) {
        if (fl->n_started > 0) {
            struct tg_sim_device *dev = fl->devs[tg_sim_rand_below(&fl->rng, fl->n_started)];
            bool abrupt = tg_sim_rand_chance(&fl->rng, 0.5);
            if (tg_sim_device_drop(dev, abrupt)) {
                tg_counter_inc(fl->sm.churns);
                tg_timerq_set(fl->timers, tg_sim_device_index(dev), now);
            }
        }
        schedule_churn(fl, fl->next_churn_ms);
    }
}

static void storm(struct fleet *fl, uint64_t now)
{
    fl->storm_done = true;
    unsigned dropped = 0;
    for (uint32_t i = 0; i < fl->n_devs; i++)
        if (tg_sim_device_drop(fl->devs[i], true)) {
            dropped++;
            tg_timerq_set(fl->timers, i, now);
        }
    tg_counter_inc(fl->sm.storms);
    TG_LOG_INFO("sim", "storm: %u connected devices dropped their connections at once", dropped);
}

static void poll_due(struct fleet *fl, uint64_t now)
{
    uint32_t i;
    /* Bounded, so that a device that keeps asking for 0 ms cannot starve the sockets. */
    for (uint32_t n = 0; n < fl->n_devs + 1 && tg_timerq_pop_due(fl->timers, now, &i); n++) {
        uint32_t wait = tg_sim_device_poll(fl->devs[i]);
        tg_timerq_set(fl->timers, i, now + wait);
    }
}

static void scan_outboxes(struct fleet *fl, uint64_t now, bool force)
{
    if (!force && now < fl->next_outbox_scan_ms)
        return;
    fl->next_outbox_scan_ms = now + (fl->phase == PHASE_DRAIN ? 100 : OUTBOX_SCAN_MS);
    unsigned total = 0;
    for (uint32_t i = 0; i < fl->n_started; i++)
        total += tg_sim_device_outbox_used(fl->devs[i]);
    fl->outbox_total = total;
    tg_gauge_set(fl->sm.outbox, (double)total);
}

static uint64_t counter(struct tg_counter *c)
{
    return tg_counter_value(c);
}

static void progress(struct fleet *fl, uint64_t now, bool final)
{
    if (!final && now < fl->next_progress_ms)
        return;
    double dt = (double)(now - fl->last_progress_ms) / 1000.0;
    uint64_t pub = counter(fl->sm.pub_readings) + counter(fl->sm.pub_malformed) +
                   counter(fl->sm.pub_duplicates);
    uint64_t rel = counter(fl->sm.released);
    double pub_rate = dt > 0 ? (double)(pub - fl->last_pub) / dt : 0;
    double rel_rate = dt > 0 ? (double)(rel - fl->last_rel) / dt : 0;
    fl->last_pub = pub;
    fl->last_rel = rel;
    fl->last_progress_ms = now;
    fl->next_progress_ms = now + (fl->tty ? PROGRESS_TTY_MS : PROGRESS_LOG_MS);
    uint64_t errors = counter(fl->sm.connect_failures) + counter(fl->sm.publish_errors);
    unsigned connected = (unsigned)tg_gauge_value(fl->sm.connected);
    double t = (double)(now - fl->start_ms) / 1000.0;
    const char *phase = fl->phase == PHASE_RUN ? "run" : "drain";
    if (fl->tty) {
        fprintf(stderr,
                "\r\033[K[%s %6.1fs] connected %u/%" PRIu32 "  publish %.0f/s  acked %.0f/s  "
                "acked total %" PRIu64 "  outbox %u  errors %" PRIu64 "%s",
                phase, t, connected, fl->n_devs, pub_rate, rel_rate, rel, fl->outbox_total,
                errors, final ? "\n" : "");
        fflush(stderr);
    } else {
        TG_LOG_INFO("sim",
                    "%s %.0fs: connected %u/%" PRIu32 ", publish %.0f/s, acked %.0f/s (%" PRIu64
                    " total), outbox %u, errors %" PRIu64,
                    phase, t, connected, fl->n_devs, pub_rate, rel_rate, rel, fl->outbox_total,
                    errors);
    }
}

static void handle_signal(struct fleet *fl, uint64_t now)
{
    struct signalfd_siginfo si;
    while (read(fl->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        fl->signals++;
        if (fl->phase == PHASE_RUN) {
            if (fl->tty)
                fputc('\n', stderr);
            TG_LOG_INFO("sim", "signal %u: stopping early", si.ssi_signo);
            fl->run_end_ms = now; /* the loop moves to the drain */
        } else if (fl->phase == PHASE_DRAIN) {
            if (fl->tty)
                fputc('\n', stderr);
            TG_LOG_INFO("sim", "second signal: skipping the drain");
            fl->drain_end_ms = now;
        }
    }
}

static void begin_drain(struct fleet *fl, uint64_t now)
{
    fl->phase = PHASE_DRAIN;
    for (uint32_t i = 0; i < fl->n_devs; i++)
        tg_sim_device_stop_sampling(fl->devs[i]);
    fl->drain_end_ms = now + (uint64_t)(fl->opt->drain_s * 1000.0);
    scan_outboxes(fl, now, true);
    if (fl->tty)
        fputc('\n', stderr);
    TG_LOG_INFO("sim", "sampling stopped; waiting up to %.0f s for %u readings in outboxes",
                fl->opt->drain_s, fl->outbox_total);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static void dispatch(struct fleet *fl, struct epoll_event *events, int n, uint64_t now)
{
    for (int k = 0; k < n; k++) {
        struct tg_sim_device *dev = events[k].data.ptr;
        if (!dev) {
            handle_signal(fl, now);
            continue;
        }
        if (tg_sim_device_io(dev, events[k].events))
            tg_timerq_set(fl->timers, tg_sim_device_index(dev), now);
    }
}

static void main_loop(struct fleet *fl)
{
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        update_clock(fl);
        uint64_t now = fl->clock.mono_ms;
        if (fl->phase == PHASE_RUN && now >= fl->run_end_ms)
            begin_drain(fl, now);
        if (fl->phase == PHASE_DRAIN) {
            scan_outboxes(fl, now, false);
            if (fl->outbox_total == 0 || now >= fl->drain_end_ms)
                break;
        }
        if (fl->phase == PHASE_RUN) {
            ramp(fl, now);
            churn(fl, now);
            if (!fl->storm_done && fl->opt->storm_at_s >= 0 &&
                now >= fl->start_ms + (uint64_t)(fl->opt->storm_at_s * 1000.0))
                storm(fl, now);
            scan_outboxes(fl, now, false);
            if (!fl->all_connected_ms && (uint32_t)tg_gauge_value(fl->sm.connected) == fl->n_devs) {
                fl->all_connected_ms = now;
                if (fl->tty)
                    fputc('\n', stderr);
                TG_LOG_INFO("sim", "all %" PRIu32 " devices connected after %.2f s", fl->n_devs,
                            (double)(now - fl->start_ms) / 1000.0);
            }
        }
        poll_due(fl, now);
        progress(fl, now, false);

        uint64_t wake = min_u64(fl->next_progress_ms, fl->next_outbox_scan_ms);
        uint32_t id;
        uint64_t due;
        if (tg_timerq_peek(fl->timers, &id, &due))
            wake = min_u64(wake, due);
        if (fl->phase == PHASE_RUN) {
            wake = min_u64(wake, fl->run_end_ms);
            wake = min_u64(wake, next_ramp_ms(fl));
            wake = min_u64(wake, fl->next_churn_ms);
        } else {
            wake = min_u64(wake, fl->drain_end_ms);
        }
        int timeout = wake <= now ? 0 : (int)min_u64(wake - now, 1000);
        int n = epoll_wait(fl->epoll_fd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            TG_LOG_ERROR("sim", "epoll_wait: %s", strerror(errno));
            break;
        }
        if (n > 0) {
            update_clock(fl);
            dispatch(fl, events, n, fl->clock.mono_ms);
        }
    }
}

/* End of the run: DISCONNECT every session and give the packets a moment to leave, so the
 * broker sees clean goodbyes rather than 10,000 lost connections. */
static void close_all(struct fleet *fl)
{
    for (uint32_t i = 0; i < fl->n_devs; i++)
        tg_sim_device_disconnect(fl->devs[i]);
    struct epoll_event events[MAX_EVENTS];
    update_clock(fl);
    uint64_t deadline = fl->clock.mono_ms + CLOSE_FLUSH_MS;
    for (;;) {
        bool pending = false;
        for (uint32_t i = 0; i < fl->n_devs && !pending; i++)
            pending = tg_sim_device_want_write(fl->devs[i]);
        update_clock(fl);
        if (!pending || fl->clock.mono_ms >= deadline)
            break;
        int n = epoll_wait(fl->epoll_fd, events, MAX_EVENTS, 50);
        for (int k = 0; k < n; k++) {
            struct tg_sim_device *dev = events[k].data.ptr;
            if (dev)
                tg_sim_device_io(dev, events[k].events & ~(uint32_t)EPOLLIN);
        }
    }
}

static void summary(struct fleet *fl)
{
    struct tg_sim_metrics *sm = &fl->sm;
    TG_LOG_INFO("sim",
                "done: %" PRIu32 " devices, %" PRIu64 " readings taken, %" PRIu64
                " confirmed by the broker, %u unconfirmed, %" PRIu64 " dropped from full outboxes",
                fl->n_devs, counter(sm->taken), counter(sm->released), fl->outbox_total,
                counter(sm->dropped));
    uint64_t anomalies = 0;
    for (int k = 0; k < TG_ANOMALY_KINDS; k++)
        anomalies += counter(sm->anomalies[k]);
    TG_LOG_INFO("sim",
                "faults: %" PRIu64 " malformed and %" PRIu64 " duplicate publishes confirmed, %" PRIu64
                " skewed readings, %" PRIu64 " churn drops, %" PRIu64 " storms, %" PRIu64
                " anomalies; %" PRIu64 " connection attempts, %" PRIu64 " failed, %" PRIu64
                " sessions ended",
                counter(sm->malformed_acked), counter(sm->duplicates_acked), counter(sm->skewed),
                counter(sm->churns), counter(sm->storms), anomalies, counter(sm->connects),
                counter(sm->connect_failures), counter(sm->disconnects));
    uint64_t acks = 0, ack_timeouts = 0, resent = 0;
    for (uint32_t i = 0; i < fl->n_devs; i++) {
        struct tg_node_stats st;
        if (!fl->devs[i])
            continue;
        tg_sim_device_stats(fl->devs[i], &st);
        acks += st.acks;
        ack_timeouts += st.ack_timeouts;
        resent += st.resent;
    }
    /* What the durable acks cost the nodes (tests quote "resent N" per fault). */
    if (acks || resent)
        TG_LOG_INFO("sim",
                    "durable acks: %" PRIu64 " taken, %" PRIu64 " ack timeouts, resent %" PRIu64
                    " readings",
                    acks, ack_timeouts, resent);
    if (counter(sm->ledger_errors))
        TG_LOG_ERROR("sim", "%" PRIu64 " ledger updates failed (out of memory): the ledger is "
                            "incomplete",
                     counter(sm->ledger_errors));
}

static void fleet_free(struct fleet *fl)
{
    if (fl->devs)
        for (uint32_t i = 0; i < fl->n_devs; i++)
            tg_sim_device_destroy(fl->devs[i]);
    free(fl->devs);
    tg_timerq_destroy(fl->timers);
    if (fl->labels) {
        fclose(fl->labels);
        unlink(fl->labels_tmp);
    }
    free(fl->labels_tmp);
    tg_metrics_http_stop(fl->http);
    tg_metrics_destroy(fl->metrics);
    tg_ledger_destroy(fl->ledger);
    free(fl->boots);
    if (fl->signal_fd >= 0)
        close(fl->signal_fd);
    if (fl->epoll_fd >= 0)
        close(fl->epoll_fd);
}

int tg_sim_run(const struct tg_sim_run_options *opt)
{
    struct fleet fleet = {.opt = opt, .epoll_fd = -1, .signal_fd = -1};
    struct fleet *fl = &fleet;
    int status = 1;
    bool lib_init = false;

    if (raise_fd_limit(opt->devices) != 0)
        goto cleanup;
    fl->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (fl->epoll_fd < 0 || setup_signals(fl) != 0) {
        TG_LOG_ERROR("sim", "epoll/signalfd setup: %s", strerror(errno));
        goto cleanup;
    }
    fl->metrics = tg_metrics_new();
    if (!fl->metrics) {
        TG_LOG_ERROR("sim", "out of memory");
        goto cleanup;
    }
    tg_sim_metrics_register(fl->metrics, &fl->sm);
    if (opt->metrics_listen) {
        char err[256];
        fl->http = tg_metrics_http_start(fl->metrics, opt->metrics_listen, NULL, NULL, err,
                                         sizeof err);
        if (!fl->http) {
            TG_LOG_ERROR("sim", "%s", err);
            goto cleanup;
        }
        TG_LOG_INFO("sim", "metrics on http://%s/metrics", opt->metrics_listen);
    }
    if (opt->ledger_path) {
        fl->ledger = tg_ledger_new();
        if (!fl->ledger) {
            TG_LOG_ERROR("sim", "out of memory");
            goto cleanup;
        }
    }
    if (opt->labels_path && open_labels(fl) != 0)
        goto cleanup;
    if (mosquitto_lib_init() != MOSQ_ERR_SUCCESS) {
        TG_LOG_ERROR("sim", "mosquitto_lib_init failed");
        goto cleanup;
    }
    lib_init = true;
    update_clock(fl);
    if (advance_boots(fl) != 0 || create_devices(fl) != 0)
        goto cleanup;
    int64_t run_start_wall_ms = fl->clock.wall_ms;

    update_clock(fl);
    fl->rng = tg_sim_stream_seed(opt->seed, 0, TG_SIM_STREAM_FLEET) ^ UINT64_C(0x5bd1e995);
    fl->start_ms = fl->clock.mono_ms;
    fl->run_end_ms = fl->start_ms + (uint64_t)(opt->duration_s * 1000.0);
    fl->last_progress_ms = fl->start_ms;
    fl->tty = isatty(STDERR_FILENO) == 1;
    fl->next_progress_ms = fl->start_ms + (fl->tty ? PROGRESS_TTY_MS : PROGRESS_LOG_MS);
    schedule_churn(fl, fl->start_ms);
    TG_LOG_INFO("sim",
                "%" PRIu32 " devices -> %s:%d, %.3g readings/s each, %.0f s, seed %" PRIu64
                ", connect rate %.0f/s",
                opt->devices, opt->broker_host, opt->broker_port, opt->rate_hz, opt->duration_s,
                opt->seed, opt->connect_rate);

    main_loop(fl);
    update_clock(fl);
    scan_outboxes(fl, fl->clock.mono_ms, true);
    progress(fl, fl->clock.mono_ms, true);
    close_all(fl);
    fl->phase = PHASE_DONE;
    summary(fl);

    status = 0;
    if (fl->ledger) {
        update_clock(fl);
        tg_ledger_set_run(fl->ledger, run_start_wall_ms, fl->clock.wall_ms);
        if (tg_ledger_write(fl->ledger, opt->ledger_path) != 0) {
            TG_LOG_ERROR("sim", "cannot write ledger %s: %s", opt->ledger_path, strerror(errno));
            status = 1;
        } else {
            TG_LOG_INFO("sim", "ledger written to %s", opt->ledger_path);
        }
    }
    if (close_labels(fl) != 0)
        status = 1;

cleanup:
    fleet_free(fl);
    if (lib_init)
        mosquitto_lib_cleanup();
    return status;
}
