/*
 * fleet.h - `tidegate-sim run`: N simulated devices (device.h) on one event loop.
 *
 * One thread, one epoll set over every device's MQTT socket plus a signalfd; a timer queue
 * (timerq.h) says which device is due next. Devices start at connect_rate per second; the
 * process raises its open-files limit to what N needs. Faults the fleet injects itself:
 * churn (a device drops its connection now and then, half of the time abruptly, half with a
 * DISCONNECT) and the storm (every connected device drops at once, abruptly).
 *
 * Before the first device starts, each device's boot counter advances in the state directory
 * (boot_state.h), so every run of a fleet uses new boots, as restarted real nodes do; the
 * ledger records each device's boot and the run's wall-clock start and end.
 *
 * The run ends after duration_s (or at SIGINT/SIGTERM): sampling stops, the outboxes get up to
 * drain_s to empty, the devices disconnect, then the ledger and the labels are written. A
 * second signal skips the drain. Progress: one live line on a terminal (stderr), otherwise a
 * log line every 10 s.
 */
#ifndef TG_SIM_FLEET_H
#define TG_SIM_FLEET_H

#include <stdbool.h>
#include <stdint.h>

struct tg_sim_run_options {
    const char *broker_host;   /* address or name; a name is resolved at every connect */
    int broker_port;
    uint32_t devices;          /* default 10000 */
    double rate_hz;            /* readings per second per device; default 1 */
    double duration_s;         /* default 60 */
    uint64_t seed;             /* default 1 */
    const char *ledger_path;   /* NULL: no ledger */
    const char *state_dir;     /* boot counters kept between runs (boot_state.h); NULL: the
                                * default of tg_sim_boots_default_dir() */
    const char *labels_path;   /* NULL: no labels */
    double anomaly_rate;       /* anomalies per device-hour; default 0 */
    double malformed;          /* malformed publishes per reading publish, 0..1 */
    double duplicates;         /* duplicate publishes per reading publish, 0..1 */
    double skew;               /* fraction of devices with a skewed clock, 0..1 */
    double connect_rate;       /* device starts per second; default 2000 */
    double churn;              /* connection drops per device-hour; default 0 */
    double storm_at_s;         /* < 0: no storm; else seconds after the start */
    double drain_s;            /* longest wait for outboxes at the end; default 15 */
    const char *metrics_listen;/* NULL: no metrics endpoint */
    int keepalive_s;           /* default 60 */
    bool durable_acks;         /* devices wait for the gateway's durable acks (node.h) */
    uint32_t ack_timeout_ms;   /* 0: the core's default */
};

/* Fills in the defaults (no broker). */
void tg_sim_run_options_init(struct tg_sim_run_options *opt);

/* Runs the simulation. Returns the process exit status: 0 when the run completed and its
 * files were written, 1 on a setup error (message logged) or a failed write. */
int tg_sim_run(const struct tg_sim_run_options *opt);

/* Outbox slots per device for a sampling rate: 30 s of readings, within 8..64. */
unsigned tg_sim_outbox_slots(double rate_hz);

#endif
