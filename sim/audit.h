/*
 * audit.h - `tidegate-sim audit`: what reached Kafka, compared with what the fleet sent.
 *
 *   tidegate-sim audit --brokers LIST --ledger FILE [--topic T] [--dlq-topic T] [--timeout S]
 *                      [--json] [--follow] [--from-end] [--clock-slack S]
 *
 * tg_sim_audit_main() is the command (sim/main.c dispatches to it). It consumes the
 * telemetry topic (and the DLQ topic) from the beginning with librdkafka, up to every
 * partition's high watermark, feeds every record to the comparison below, and prints the
 * report; exit 0 when the run passes (below), 1 when it fails, 2 on usage or setup errors.
 *
 * The comparison (struct tg_sim_audit) knows nothing of Kafka, so it is tested on synthetic
 * input. Records may arrive before the ledger exists (--follow audits while the run is still
 * going; the ledger is written at its end): the audit keeps, per (device, boot), which seqs it
 * saw, and compares with the ledger when one is set.
 *
 * Definitions (per device and boot; the ledger's fates are in ledger.h):
 *   delivered    a RELEASED reading present in the topic (counted once)
 *   lost         a RELEASED reading absent from the topic, unless dead-lettered with cause
 *   dead-lettered a RELEASED reading found only in the DLQ, with reason clock_skew, that the
 *                ledger says was taken with a skewed clock: rejected on purpose, not a
 *                failure. Found only in the DLQ for any other reason, or without that fault
 *                on that very reading, it is lost (counted as "rejected" too)
 *   duplicated   every copy of a (device, boot, seq) after its first
 *   reordered    a first copy whose seq is below the highest seq seen before it for the same
 *                (device, boot) on the same partition, and that the gateway received (gw_ts)
 *                before that higher one: the pipeline changed the order it was given
 *   resent       such a first copy that the gateway received after the higher one or in the
 *                same millisecond (gw_ts has ms resolution, and a node sends a new reading
 *                and its resends in one burst): the node
 *                sent it again (durable acks: it was lost on the way, or its ack was, while
 *                newer ones got through), so it arrives late; not reordering, not a failure
 *                (records without gw_ts count as reordered)
 *   other run    a record of a ledger device with another boot than the one the run gave
 *                the device (each run boots every device once, boot_state.h), or that the
 *                gateway received (gw_ts) more than the clock slack before the run started:
 *                another run's, neither delivered nor a duplicate; reported, not a failure
 *   unexpected   a reading of a ledger device, of this run's boot, that the ledger never
 *                saw taken (with a ledger that has no boots: any boot)
 *   foreign      records of devices not in the ledger (another fleet): reported only
 *   unconfirmed  taken but not confirmed when the run ended: may or may not arrive, counted
 *                apart, never a failure; likewise readings DROPPED on the device
 *   DLQ          records by reason header; payloads that do not decode as a native reading
 *                are matched one for one, per device, with the malformed payloads the ledger
 *                says that device published (by tg_ledger_payload_hash): a missing one is a
 *                failure, extra ones (an earlier run's) are not
 *
 * A run fails when it released nothing, when none of its devices connected, or when any
 * reading is lost, duplicated, reordered or unexpected, or a malformed payload is missing
 * from the DLQ (with --dlq-topic).
 *   latency      device time (record ts) to the Kafka LogAppendTime when the topic has it,
 *                else to the time the audit received the record (only for records that
 *                arrived while the audit was caught up); devices with injected clock skew
 *                are left out
 *
 * Threads: one audit is used from one thread.
 */
#ifndef TG_SIM_AUDIT_H
#define TG_SIM_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ledger.h"

/* The command: argv[0] is the command's name ("audit"), options follow. */
int tg_sim_audit_main(int argc, char **argv);

struct tg_sim_audit;

struct tg_sim_audit *tg_sim_audit_new(void);
void tg_sim_audit_destroy(struct tg_sim_audit *au);

/* One telemetry record, decoded from the canonical value. */
struct tg_sim_audit_rec {
    const char *device;   /* NUL-terminated; copied */
    uint64_t boot, seq;
    int32_t partition;
    int64_t ts_ms;        /* device time */
    int64_t gw_ts_ms;     /* gateway time, or -1 when the record has none */
    int64_t end_ms;       /* when it reached Kafka (LogAppendTime) or the audit; -1: do not
                           * use this record for latency */
};

/* Adds a telemetry record. 0, or -1 when out of memory. */
int tg_sim_audit_telemetry(struct tg_sim_audit *au, const struct tg_sim_audit_rec *rec);

/* A telemetry record that is not a canonical record with device, boot and seq. */
void tg_sim_audit_undecodable(struct tg_sim_audit *au);

/* A DLQ record: its reason header (NULL: none), the device (NULL when unknown), and when its
 * payload decodes as a native reading, its boot and seq; else payload_hash (the payload's
 * tg_ledger_payload_hash) names it. 0, or -1 when out of memory. */
int tg_sim_audit_dlq(struct tg_sim_audit *au, const char *reason, const char *device,
                     bool is_reading, uint64_t boot, uint64_t seq, uint64_t payload_hash);

/* How far the gateway's clock (gw_ts) may be behind the simulator's before a record received
 * "before the run started" counts as an earlier run's. Default below. */
#define TG_SIM_AUDIT_DEFAULT_CLOCK_SLACK_MS 2000
void tg_sim_audit_clock_slack(struct tg_sim_audit *au, int64_t slack_ms);

/* The DLQ topic is being read: its count is checked against the ledger's malformed count. */
void tg_sim_audit_expect_dlq(struct tg_sim_audit *au, bool expect);

/* Records of a partition were gone before the audit read them (its first offset was above 0,
 * or offsets jumped): a retention limit, not the pipeline, may explain missing readings. */
void tg_sim_audit_offset_gap(struct tg_sim_audit *au, int32_t partition, int64_t missing);

/* How end_ms was measured, for the report: true = Kafka LogAppendTime. Also counts records
 * left out of latency because they were read from a backlog. */
void tg_sim_audit_latency_source(struct tg_sim_audit *au, bool log_append_time);
void tg_sim_audit_backlog_record(struct tg_sim_audit *au);

/* Sets the ledger to compare with (borrowed: it must outlive the audit). Once. 0 or -1. */
int tg_sim_audit_set_ledger(struct tg_sim_audit *au, const struct tg_ledger *lg);

/* True when a ledger is set and everything it expects arrived: every released reading
 * delivered or dead-lettered, and with expect_dlq as many malformed payloads in the DLQ as
 * were published. */
bool tg_sim_audit_complete(const struct tg_sim_audit *au);

/* Records read so far (telemetry + DLQ). */
uint64_t tg_sim_audit_records(const struct tg_sim_audit *au);

/* The outcome. tg_sim_audit_finish() needs the ledger; call it once, after the last record. */
struct tg_sim_audit_result {
    uint64_t records;            /* telemetry records read */
    uint64_t undecodable;        /* telemetry records that are not canonical records */
    uint64_t delivered;          /* released readings present (once) */
    uint64_t lost;
    uint64_t rejected;           /* of lost: found only in the DLQ, with no fault to explain it */
    uint64_t dead_lettered;
    uint64_t duplicated;
    uint64_t reordered;
    uint64_t resent;             /* late first copies the node sent again (above) */
    uint64_t unexpected;
    uint64_t other_runs;         /* records of ledger devices from another run */
    uint64_t foreign;            /* records of devices not in the ledger */
    size_t foreign_devices;
    size_t never_connected;      /* ledger devices the broker never accepted */
    uint64_t unconfirmed_arrived, unconfirmed_missing;
    uint64_t dropped_arrived;
    uint64_t dlq_records, dlq_malformed, dlq_readings;
    uint64_t dlq_missing;        /* malformed payloads published and not in the DLQ */
    uint64_t offset_gaps;        /* records gone before they were read (retention) */
    size_t problem_devices;      /* devices with lost, duplicated, reordered or unexpected */
    uint64_t latency_samples;
    double latency_p50_ms, latency_p90_ms, latency_p99_ms, latency_max_ms;
    bool nothing_released;       /* the ledger released no reading */
    bool none_connected;         /* no device of the ledger ever connected */
    bool ok;                     /* the run passes (see the rules above) */
};
int tg_sim_audit_finish(struct tg_sim_audit *au, struct tg_sim_audit_result *out);

/* What the report says about the run around the comparison. */
struct tg_sim_audit_context {
    const char *topic;
    const char *dlq_topic;   /* NULL when not read */
    const char *ledger_path;
    int partitions;
    const char *stopped;     /* why consuming stopped, e.g. "complete", "timeout" */
    double elapsed_s;
};

/* The report after tg_sim_audit_finish(): a human summary (per-device detail for at most
 * max_devices problem devices), or one JSON object (a line). */
void tg_sim_audit_print_text(const struct tg_sim_audit *au,
                             const struct tg_sim_audit_context *ctx, size_t max_devices,
                             FILE *out);
int tg_sim_audit_print_json(const struct tg_sim_audit *au,
                            const struct tg_sim_audit_context *ctx, size_t max_devices,
                            FILE *out);

#endif
