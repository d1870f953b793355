/*
 * bench_gw_run.h - what bench_gateway's passes share (bench_gateway.c says what it measures):
 *
 *   bench_gateway.c     options, the environment line, main: starts the broker and devkafka,
 *                       runs the passes in order and prints the reports
 *   bench_gw_loadctl.c  the parent's side of a publisher child: start, go, its lines, its end
 *   bench_gw_ceiling.c  pass 1: the bare libmosquitto subscriber (ceiling and receive floor)
 *   bench_gw_daemon.c   pass 2: the tidegate daemon, with a Kafka outage when asked
 *   bench_gw_plugin.c   pass 3: Mosquitto loading tidegate_mosq.so under the same load
 *   bench_gw_report.c   the tables printed after passes 2 and 3
 *
 * Single-threaded: everything here runs on the bench's main thread. Names carry the prefix
 * bgw_, like bench_gw.h's.
 */
#ifndef BENCH_GW_RUN_H
#define BENCH_GW_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench_gw.h"
#include "harness.h"

#define TOPIC_FILTER "telemetry/+"
#define KAFKA_TOPIC "telemetry"
#define READY_TIMEOUT_MS 30000
#define LINE_TIMEOUT_MS 20000
#define DONE_TIMEOUT_MS 30000        /* publisher: last PUBACKs after the duration */
#define CATCHUP_TIMEOUT_MS 120000    /* subscriber/gateway: delivering what was published */
#define DRAIN_TIMEOUT_MS 300000      /* after an outage: journal back to its normal level */
#define STOP_TIMEOUT_MS 30000        /* SIGTERM to exit */
#define TMPFS_MAGIC_VALUE 0x01021994

/* Targets of the gateway issue, reported as met or not. */
#define TARGET_CEILING_SHARE 0.90
#define TARGET_CPU_US 5.0
#define TARGET_RSS_KB (16 * 1024)
#define TARGET_WRITE_B 32.0
#define TARGET_P99_MS 50.0
#define TARGET_DRAIN 50000.0
#define TARGET_RATE 10000

enum bgw_mode { MODE_DURABLE, MODE_SPILL };

struct bgw_opts {
    unsigned publishers;
    unsigned devices;
    uint64_t rate; /* 0 = max */
    double duration_s;
    double warmup_s;
    enum bgw_mode mode;
    const char *board;
    unsigned connections;
    double outage_s;
    unsigned inflight;
    bool ceiling;
    const char *tidegate;
    const char **sets;
    size_t n_sets;
    const char *plugin;  /* tidegate_mosq.so, or NULL: no plugin pass */
    bool json;           /* --payload json (default): JSON readings, else native CBOR */
};

/* What one run of the load gave, and its state while it runs. */
struct bgw_load {
    struct tg_harness_proc *proc;
    int64_t start_mono_us, start_wall_us;
    bool published, done;
    int64_t published_mono_us;
    uint64_t sent, bytes, acked;
    int64_t elapsed_us;
};

/* A snapshot taken at the edges of a window. */
struct bgw_snap {
    int64_t mono_us, wall_us;
    struct bgw_proc_sample proc;   /* the measured process: bare subscriber or tidegate */
    struct bgw_proc_sample broker;
    uint64_t sub_count;            /* bare subscriber */
    bool metrics_ok;               /* tidegate */
    double received, delivered, journal_records;
    double refused;                /* plugin: dropped{reason="ingress_full"}, a full hand-off
                                    * queue (lost: the bench's publishers resend nothing) */
    bool hist_ok;
    struct bgw_hist e2e;
};

struct bgw_ceiling_result {
    bool ran;
    double pub_rate, window_s, msgs_per_s, cpu_us, cpu_share, broker_cpu_us;
    uint64_t published, received_total;
    double behind;  /* published but not yet received when publishing stopped */
    bool complete;
    long hwm_kb;
};

struct bgw_gateway_result {
    bool ran;
    double pub_rate, window_s, received_per_s, delivered_per_s, cpu_us, cpu_share, broker_cpu_us;
    uint64_t published;
    double behind;
    double received_total, delivered_total;
    bool complete;
    uint64_t kafka_records;
    bool io_ok;
    double write_b, write_b_run, cancelled_b_run, wchar_b, rchar_b, read_b;
    long hwm_kb, hwm_run_kb;
    size_t lat_n;
    double lat_p50, lat_p99, lat_max;
    bool hist_ok, hist_p99_beyond;
    double hist_p50, hist_p99;
    int exit_status;
    /* outage */
    bool outage_ran, drained;
    double baseline_records, backlog, backlog_max, reconnect_s, drain_s, drain_rate;
    double drain_delivered_rate; /* from the first delivery after recovery to the end */
    uint64_t consumer_errors;
};

struct bgw_ctx {
    struct bgw_opts o;
    const char *self;          /* this executable, for the --role children */
    char *dir;                 /* temporary directory */
    char *tidegate;            /* tidegate binary */
    struct tg_harness_mosquitto *mq;
    struct tg_harness_devkafka *dk;
    pid_t broker_pid;
    uint64_t boot;             /* device boot counter of this run; each pass adds one */
    double payload_avg;
    bool disk_is_tmpfs;
};

/* The daemon or the plugin's broker under measurement. */
struct bgw_gateway {
    struct tg_harness_proc *proc;
    pid_t pid;
    int metrics_port;
    bool exited;
};

struct bgw_plugin_result {
    bool ran;
    double pub_rate, window_s, received_per_s, delivered_per_s, broker_cpu_us, cpu_share;
    uint64_t published;
    double delivered_total;
    double refused_total;  /* ingress_full over the whole pass */
    bool complete;
    long hwm_kb;
    bool stopped_clean;
};

/* Set by SIGINT/SIGTERM: every loop and wait gives up, and the normal cleanup stops what
 * was started. */
extern volatile sig_atomic_t bgw_interrupted;

static inline double bgw_secs(int64_t us)
{
    return (double)us / 1e6;
}

/* ------------------------------------------------------------------------------------------
 * The publisher child (bench_gw_loadctl.c)
 */

/* One line from a child within timeout_ms; -1 (and why, on stderr) when none came. */
int bgw_read_line(struct tg_harness_proc *proc, char *buf, size_t size, int timeout_ms,
                  const char *what);

/* Starts a publisher process and waits until every connection is up. */
int bgw_load_start(struct bgw_ctx *cx, struct bgw_load *ld, const char *name);

/* Tells it to start publishing; notes when it did. */
int bgw_load_go(struct bgw_load *ld);

/* Takes one line from the publisher if one comes within timeout_ms. Returns 0, or -1 when
 * the publisher failed or died. */
int bgw_load_poll(struct bgw_load *ld, int timeout_ms);

/* After "published": waits for the publisher's last acknowledgements and its exit. */
int bgw_load_finish(struct bgw_load *ld);

/* Messages per second the publisher sent over its whole run. */
double bgw_load_rate(const struct bgw_load *ld);

/* ------------------------------------------------------------------------------------------
 * The gateway's metrics and process (bench_gw_daemon.c), for passes 2 and 3
 */

/* Scrapes /metrics into s (metrics_ok false when the scrape failed). */
void bgw_gw_scrape(struct bgw_gateway *gw, struct bgw_snap *s);

/* A snapshot: clocks, the gateway's and the broker's /proc figures, and a scrape. */
void bgw_gw_snap(struct bgw_ctx *cx, struct bgw_gateway *gw, struct bgw_snap *s);

struct bgw_gw_catchup {
    struct bgw_gateway *gw;
    double target;
    struct bgw_snap s;
};

/* tg_harness_wait_until() condition (ud: struct bgw_gw_catchup): the gateway delivered
 * target messages (less those the plugin refused: they never will be), or it exited, or the
 * bench was interrupted. */
bool bgw_gw_delivered_cond(void *ud);

/* ------------------------------------------------------------------------------------------
 * The passes and their reports
 */

int bgw_run_ceiling(struct bgw_ctx *cx, struct bgw_ceiling_result *res);
int bgw_run_gateway(struct bgw_ctx *cx, struct bgw_gateway_result *res);
int bgw_run_plugin(struct bgw_ctx *cx, struct bgw_plugin_result *res);

void bgw_report(const struct bgw_ctx *cx, const struct bgw_ceiling_result *cr,
                const struct bgw_gateway_result *gr);
void bgw_report_plugin(const struct bgw_gateway_result *gr, const struct bgw_plugin_result *pr);

#endif
