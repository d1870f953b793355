/*
 * sim_metrics.c - registration of the tidegate_sim_* metrics (see sim_metrics.h).
 */
#include "sim_metrics.h"

#include <stddef.h>

void tg_sim_metrics_register(struct tg_metrics *m, struct tg_sim_metrics *sm)
{
    sm->devices = tg_metrics_gauge(m, "tidegate_sim_devices", "Simulated devices configured",
                                   (const char *)NULL);
    sm->started = tg_metrics_gauge(m, "tidegate_sim_devices_started",
                                   "Simulated devices started so far (connection ramp)",
                                   (const char *)NULL);
    sm->connected = tg_metrics_gauge(m, "tidegate_sim_devices_connected",
                                     "Simulated devices with an MQTT session up",
                                     (const char *)NULL);
    sm->outbox = tg_metrics_gauge(m, "tidegate_sim_outbox_readings",
                                  "Readings waiting in device outboxes for a broker confirmation",
                                  (const char *)NULL);
    sm->connects = tg_metrics_counter(m, "tidegate_sim_connects_total",
                                      "MQTT connection attempts started by simulated devices",
                                      (const char *)NULL);
    sm->connect_failures = tg_metrics_counter(m, "tidegate_sim_connect_failures_total",
                                              "MQTT connection attempts that failed",
                                              (const char *)NULL);
    sm->disconnects = tg_metrics_counter(m, "tidegate_sim_disconnects_total",
                                         "MQTT sessions that ended (lost, churn or storm)",
                                         (const char *)NULL);
    sm->taken = tg_metrics_counter(m, "tidegate_sim_readings_taken_total",
                                   "Readings sampled and encoded by the firmware core",
                                   (const char *)NULL);
    sm->released = tg_metrics_counter(m, "tidegate_sim_readings_released_total",
                                      "Readings confirmed by the broker and released from the outbox",
                                      (const char *)NULL);
    sm->dropped = tg_metrics_counter(m, "tidegate_sim_readings_dropped_total",
                                     "Readings pushed out of a full device outbox (lost on the device)",
                                     (const char *)NULL);
    const char *help_pub = "MQTT publishes by simulated devices, by payload kind";
    sm->pub_readings = tg_metrics_counter(m, "tidegate_sim_publishes_total", help_pub, "kind",
                                          "reading", (const char *)NULL);
    sm->pub_malformed = tg_metrics_counter(m, "tidegate_sim_publishes_total", help_pub, "kind",
                                           "malformed", (const char *)NULL);
    sm->pub_duplicates = tg_metrics_counter(m, "tidegate_sim_publishes_total", help_pub, "kind",
                                            "duplicate", (const char *)NULL);
    sm->publish_errors = tg_metrics_counter(m, "tidegate_sim_publish_errors_total",
                                            "Publishes the MQTT client refused (not connected, "
                                            "connection failing)",
                                            (const char *)NULL);
    const char *help_faults = "Injected faults confirmed by the broker or applied, by kind";
    sm->malformed_acked = tg_metrics_counter(m, "tidegate_sim_faults_total", help_faults, "kind",
                                             "malformed", (const char *)NULL);
    sm->duplicates_acked = tg_metrics_counter(m, "tidegate_sim_faults_total", help_faults, "kind",
                                              "duplicate", (const char *)NULL);
    sm->skewed = tg_metrics_counter(m, "tidegate_sim_faults_total", help_faults, "kind",
                                    "skewed_reading", (const char *)NULL);
    sm->churns = tg_metrics_counter(m, "tidegate_sim_faults_total", help_faults, "kind", "churn",
                                    (const char *)NULL);
    sm->storms = tg_metrics_counter(m, "tidegate_sim_faults_total", help_faults, "kind", "storm",
                                    (const char *)NULL);
    for (int k = 0; k < TG_ANOMALY_KINDS; k++)
        sm->anomalies[k] = tg_metrics_counter(m, "tidegate_sim_anomalies_total",
                                              "Anomalies injected into sensor signals, by kind",
                                              "kind", tg_anomaly_kind_name((enum tg_anomaly_kind)k),
                                              (const char *)NULL);
    sm->ledger_errors = tg_metrics_counter(m, "tidegate_sim_ledger_errors_total",
                                           "Ledger updates that failed (out of memory)",
                                           (const char *)NULL);
}
