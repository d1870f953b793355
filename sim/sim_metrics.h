/*
 * sim_metrics.h - the simulator's Prometheus metrics (tidegate_sim_*), registered once in a
 * common/metrics.h registry and updated by the event loop (lock-free atomics), read back for
 * the progress line and served by --metrics-listen.
 *
 * The bundle is a plain struct of handles: the devices and the fleet update them directly, and
 * the registry owns them (valid until tg_metrics_destroy()).
 */
#ifndef TG_SIM_METRICS_H
#define TG_SIM_METRICS_H

#include "anomaly.h"
#include "metrics.h"

struct tg_sim_metrics {
    struct tg_gauge *devices;            /* devices configured */
    struct tg_gauge *started;            /* devices started (ramp) */
    struct tg_gauge *connected;          /* MQTT sessions up now */
    struct tg_gauge *outbox;             /* readings waiting in outboxes (updated each second) */
    struct tg_counter *connects;         /* connection attempts */
    struct tg_counter *connect_failures; /* attempts refused or failed */
    struct tg_counter *disconnects;      /* sessions that ended (lost, churn, storm) */
    struct tg_counter *taken;            /* readings sampled */
    struct tg_counter *released;         /* readings confirmed by the broker (PUBACK) */
    struct tg_counter *dropped;          /* readings pushed out of a full outbox */
    struct tg_counter *pub_readings;     /* publishes of readings (re-sends included) */
    struct tg_counter *pub_malformed;    /* malformed payloads published */
    struct tg_counter *pub_duplicates;   /* duplicate payloads published */
    struct tg_counter *publish_errors;   /* publish calls the client refused */
    struct tg_counter *malformed_acked;  /* malformed payloads the broker confirmed (ledger) */
    struct tg_counter *duplicates_acked; /* duplicates the broker confirmed (ledger) */
    struct tg_counter *skewed;           /* readings taken with a skewed clock */
    struct tg_counter *churns;           /* churn disconnects injected */
    struct tg_counter *storms;           /* storms injected */
    struct tg_counter *anomalies[TG_ANOMALY_KINDS];
    struct tg_counter *ledger_errors;    /* ledger updates that failed (out of memory) */
};

/* Registers every series in m and fills sm. Registration only aborts on a programming error
 * (metrics.h), so there is no failure to report. */
void tg_sim_metrics_register(struct tg_metrics *m, struct tg_sim_metrics *sm);

#endif
