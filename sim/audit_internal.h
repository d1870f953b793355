/*
 * audit_internal.h - what the files of `tidegate-sim audit` share and nobody else uses.
 *
 *   audit_compare.c  the comparison (struct tg_sim_audit): devices, the seqs seen, the rules
 *   audit_report.c   the text and JSON reports of a finished comparison
 *   audit_kafka.c    the command: consume the topics, decode, feed the comparison, report
 *
 * Memory: per (device, boot) the set of seqs seen, as ranges (seqset.h, the ledger's own
 * kind of set): a device's records arrive nearly in order, so that is a few ranges per boot
 * whatever the run's length, a duplicate is found by a binary search, and one absurd seq
 * costs one range. The seqs of released readings found in the DLQ are kept the same way.
 */
#ifndef TG_SIM_AUDIT_INTERNAL_H
#define TG_SIM_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "ledger.h"
#include "seqset.h"
#include "strmap.h"

#define LOST_RANGES_KEPT 4                   /* per device, for the report */

struct seq_range {
    uint64_t boot, lo, hi;
};

struct seen_boot {
    uint64_t boot;
    struct tg_seqset seen; /* seqs in the telemetry topic */
    /* Seqs whose payload is in the DLQ. A reading is validated before it is deduplicated, so
     * one rejected on purpose can be dead-lettered more than once (an injected duplicate, a
     * QoS 1 re-send): completeness counts it once, by this set. */
    struct tg_seqset dlq;
    /* For reordering: the highest seq seen so far, the partition it came on and when the
     * gateway received it (gw_ts, -1: unknown). */
    bool any;
    int32_t partition;
    uint64_t max_seq;
    int64_t max_gw_ts;
    /* What the records of this boot counted, so that a boot found to be an earlier run's
     * once the ledger arrives (--follow) can be taken back out. */
    uint64_t records, duplicated, reordered, resent;
    bool other_run; /* not the boot the ledger gave the device for this run */
};

struct adev {
    char *id;
    int ledger; /* index in the ledger, -1 when not in it (or no ledger yet) */
    struct seen_boot *boots;
    size_t n_boots, cap_boots;
    uint64_t records, duplicated, reordered, resent, other_runs;
    /* Hashes (tg_ledger_payload_hash) of this device's DLQ payloads that are not readings:
     * matched one for one with the malformed payloads the ledger says it published. */
    uint64_t *dlq_hashes;
    size_t n_dlq_hashes, cap_dlq_hashes;
    /* Set by tg_sim_audit_finish(). */
    uint64_t delivered, lost, dead_lettered, unexpected, unconfirmed_arrived, dropped_arrived;
    uint64_t rejected;       /* of lost: released readings found only in the DLQ, no fault */
    uint64_t dlq_missing;    /* malformed payloads published and not in the DLQ */
    struct seq_range lost_ranges[LOST_RANGES_KEPT];
    size_t n_lost_ranges; /* ranges found; only the first LOST_RANGES_KEPT are kept */
};

struct dlq_reading {
    uint32_t dev;
    uint32_t reason; /* index in reasons */
    uint64_t boot, seq;
};

struct reason_count {
    char *reason;
    uint64_t n;
};

struct sample {
    uint32_t dev;
    int64_t latency_ms;    /* INT64_MIN: not measured */
    int64_t gw_latency_ms; /* INT64_MIN: no gw_ts */
};

struct percentiles {
    uint64_t n;
    double p50, p90, p99, max;
};

struct tg_sim_audit {
    const struct tg_ledger *lg;
    struct tg_ledger_totals totals;

    struct adev *devs;
    size_t n_devs, cap_devs;
    struct tg_strmap *index; /* device id -> index in devs */

    uint64_t records, undecodable, duplicated, reordered, offset_gaps, other_runs, foreign;
    uint64_t released_seen; /* distinct released readings seen, once a ledger is set */
    uint64_t released_dlq;  /* distinct released readings in the DLQ and not (yet) in the
                             * telemetry topic, once a ledger is set */

    bool expect_dlq;
    uint64_t dlq_records, dlq_malformed;
    uint64_t malformed_matched; /* DLQ payloads matched with a published malformed one */
    int64_t clock_slack_ms;     /* tg_sim_audit_clock_slack() */
    bool has_run;               /* the ledger says when the run started */
    int64_t run_start_ms, run_end_ms;
    struct dlq_reading *dlq;
    size_t n_dlq, cap_dlq;
    struct reason_count *reasons;
    size_t n_reasons, cap_reasons;

    bool log_append_time;
    uint64_t backlog_records;
    struct sample *samples;
    size_t n_samples, cap_samples;

    bool finished;
    struct tg_sim_audit_result res;
    struct percentiles gw_latency;
    uint64_t skewed_devices, skewed_samples;
};

/* Grows *p (an array of elem-byte items, *cap of them) to hold need. 0, or -1 when out of
 * memory (the array is unchanged). */
int audit__grow(void **p, size_t *cap, size_t need, size_t elem);

/* True when a device of the ledger lost, duplicated, reordered, got unexpected readings or
 * misses dead letters: the devices the reports detail. */
bool audit__problem(const struct adev *dev);

#endif
