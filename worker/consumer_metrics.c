/*
 * consumer_metrics.c - the worker's tidegate_worker_* metrics.
 *
 * Alerts and aggregates are counted when the transaction that carries them commits, so the
 * counters match what read_committed consumers of the output topics see; records consumed are
 * counted as they are processed (again after a rewind). Engine counters (late records,
 * evictions) and gauges (series, state bytes) follow the engine's stats after each commit.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>

#include "consumer_internal.h"

const char *const consumer__kinds[CONSUMER_KINDS] = {"level",    "shift",   "rate",
                                                     "stuck",    "silence", "seasonal",
                                                     "predict",  "other"};
const char *const consumer__states[CONSUMER_STATES] = {"open", "update", "close"};

#define MOVED_HELP "Partitions that moved to or from this worker"

void consumer__metrics_register(struct tg_consumer *cs, struct tg_metrics *r)
{
    struct consumer_metrics *m = &cs->m;
    m->registry = r;
    /* The counters, one row each: where the handle goes, name, help and at most one label
     * (label NULL: none; it then ends the label list at once). A row without a place
     * registers the family only, so that it shows from the start. */
    const struct {
        struct tg_counter **counter;
        const char *name, *help, *label, *value;
    } counters[] = {
        {&m->consumed, "tidegate_worker_records_consumed_total",
         "Records of the input topic processed (again after a rewind)", NULL, NULL},
        {NULL, "tidegate_worker_records_invalid_total",
         "Records consumed that the worker could not use, by reason (counted and skipped)",
         "reason", "malformed"},
        {&m->late, "tidegate_worker_late_records_total",
         "Points older than their partition's watermark: counted, not merged into windows",
         NULL, NULL},
        {&m->evicted, "tidegate_worker_series_evicted_total",
         "Series forgotten after [engine] series_idle_ms without data", NULL, NULL},
        {&m->refused, "tidegate_worker_series_refused_total",
         "Points of new series neither scored nor aggregated: [engine] max_series reached",
         NULL, NULL},
        {&m->aggregates, "tidegate_worker_aggregates_total",
         "Window aggregates committed to the aggregates topic", NULL, NULL},
        {&m->commits, "tidegate_worker_transaction_commits_total",
         "Transactions committed (outputs, snapshots and offsets)", NULL, NULL},
        {&m->aborts, "tidegate_worker_transaction_aborts_total",
         "Transactions aborted; each is followed by a rewind to the last commit", NULL, NULL},
        {&m->fenced, "tidegate_worker_producer_replaced_total",
         "Transactional producers replaced after a fatal error (fenced by another process "
         "with the same instance id)", NULL, NULL},
        {&m->snapshot_records, "tidegate_worker_state_snapshots_total",
         "Snapshot records committed to the state topic (tombstones included)", NULL, NULL},
        {&m->snapshot_bytes, "tidegate_worker_state_snapshot_bytes_total",
         "Key and value bytes of committed snapshot records", NULL, NULL},
        {&m->checkpoints, "tidegate_worker_state_checkpoints_total",
         "Partition checkpoints committed (the partition's changed series and a checkpoint "
         "marker)", NULL, NULL},
        {&m->checkpoint_parts, "tidegate_worker_state_checkpoint_parts_total",
         "Transactions that carried part of a checkpoint too large for one ([worker] "
         "checkpoint_max_records, checkpoint_max_bytes)", NULL, NULL},
        {&m->replayed, "tidegate_worker_records_replayed_total",
         "Records processed again after a restore, between the partition's checkpoint and its "
         "committed offset, with their outputs suppressed", NULL, NULL},
        {&m->suppressed, "tidegate_worker_outputs_suppressed_total",
         "Outputs of replayed records not produced again (an earlier owner committed them)",
         NULL, NULL},
        {&m->stalls, "tidegate_worker_partition_stalls_total",
         "Gaps longer than stall_after_ms between two records of a partition (counted when "
         "records flow again); silence judgement paused during them", NULL, NULL},
        {&m->partition_gaps, "tidegate_worker_partition_gaps_total",
         "Holes in a partition's event time: no record of it for more than stall_after_ms "
         "of event time (one upstream event); its series' gaps over a hole are not reported "
         "as silence", NULL, NULL},
        {&m->restored_records, "tidegate_worker_state_records_read_total",
         "Records read from the state topic by restores", NULL, NULL},
        {&m->restore_errors, "tidegate_worker_state_restore_errors_total",
         "State records that did not restore (the series starts cold)", NULL, NULL},
        {&m->restore_timeouts, "tidegate_worker_state_restore_timeouts_total",
         "Restores that gave up waiting for an open transaction on the state topic", NULL,
         NULL},
        {&m->assigned_total, "tidegate_worker_partitions_moved_total", MOVED_HELP, "change",
         "assigned"},
        {&m->revoked_total, "tidegate_worker_partitions_moved_total", MOVED_HELP, "change",
         "revoked"},
        {&m->lost_total, "tidegate_worker_partitions_moved_total", MOVED_HELP, "change", "lost"},
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        struct tg_counter *c = tg_metrics_counter(r, counters[i].name, counters[i].help,
                                                  counters[i].label, counters[i].value, NULL);
        if (counters[i].counter)
            *counters[i].counter = c;
    }
    const struct {
        struct tg_gauge **gauge;
        const char *name, *help;
    } gauges[] = {
        {&m->stalled, "tidegate_worker_partitions_stalled",
         "Held partitions whose devices' quiet time is paused now: no record for "
         "stall_after_ms"},
        {&m->behind, "tidegate_worker_partitions_behind",
         "Held partitions the worker is behind on (more than a sweep) or replaying: their "
         "devices' quiet time follows the partition's event time, not the wall clock"},
        {&m->series, "tidegate_worker_series", "Series (device, metric) in state"},
        {&m->state_bytes, "tidegate_worker_state_bytes", "Memory held by series state"},
        {&m->partitions, "tidegate_worker_partitions_assigned",
         "Input partitions this worker holds"},
    };
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
        *gauges[i].gauge = tg_metrics_gauge(r, gauges[i].name, gauges[i].help, NULL);
    for (int k = 0; k < CONSUMER_KINDS; k++)
        for (int s = 0; s < CONSUMER_STATES; s++)
            m->alerts[k][s] = tg_metrics_counter(
                r, "tidegate_worker_alerts_total",
                "Alert records committed to the alerts topic, by kind and state", "kind",
                consumer__kinds[k], "state", consumer__states[s], NULL);
    static const double restore_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                            0.5,   1,     2.5,  5,     10,   30,  60};
    m->restore_seconds = tg_metrics_histogram(
        r, "tidegate_worker_state_restore_seconds",
        "Time to restore the state of the partitions of one assignment or rewind",
        restore_bounds, sizeof restore_bounds / sizeof restore_bounds[0], NULL);
    m->commit_seconds = tg_metrics_histogram(
        r, "tidegate_worker_transaction_commit_seconds",
        "Time to commit one transaction (flush, snapshots, offsets, commit)", NULL, 0, NULL);
    /* What [worker] checkpoint_max_records bounds: a user sees here whether checkpoints are
     * being spread and how large the transactions are. */
    static const double txn_record_bounds[] = {10, 100, 1000, 10000, 20000, 100000, 1000000};
    m->txn_snapshot_records = tg_metrics_histogram(
        r, "tidegate_worker_transaction_state_records",
        "State-topic records (snapshots, tombstones, markers) of one committed transaction",
        txn_record_bounds, sizeof txn_record_bounds / sizeof txn_record_bounds[0], NULL);
    m->latency = tg_metrics_histogram(
        r, "tidegate_worker_processing_latency_seconds",
        "From a record's timestamp (the device's event time) to its processing", NULL, 0, NULL);
}

struct tg_gauge *consumer__lag_gauge(struct tg_consumer *cs, int32_t partition)
{
    char p[16];
    snprintf(p, sizeof p, "%" PRId32, partition);
    return tg_metrics_gauge(cs->m.registry, "tidegate_worker_consumer_lag_records",
                            "Records of the input partition not yet processed by this worker "
                            "(0 for partitions it does not hold)",
                            "partition", p, NULL);
}

void consumer__metrics_committed(struct tg_consumer *cs)
{
    struct consumer_metrics *m = &cs->m;
    for (int k = 0; k < CONSUMER_KINDS; k++)
        for (int s = 0; s < CONSUMER_STATES; s++)
            if (cs->txn_alerts[k][s])
                tg_counter_add(m->alerts[k][s], cs->txn_alerts[k][s]);
    tg_counter_add(m->aggregates, cs->txn_aggregates);
    tg_counter_add(m->snapshot_records, cs->txn_snapshot_records);
    tg_counter_add(m->snapshot_bytes, cs->txn_snapshot_bytes);
    tg_histogram_observe(m->txn_snapshot_records, (double)cs->txn_snapshot_records);
    struct tg_engine_stats st;
    tg_engine_stats(cs->en, &st);
    if (st.late_records > cs->last_stats.late_records)
        tg_counter_add(m->late, st.late_records - cs->last_stats.late_records);
    if (st.series_evicted > cs->last_stats.series_evicted)
        tg_counter_add(m->evicted, st.series_evicted - cs->last_stats.series_evicted);
    if (st.series_refused > cs->last_stats.series_refused)
        tg_counter_add(m->refused, st.series_refused - cs->last_stats.series_refused);
    if (st.partition_gaps > cs->last_stats.partition_gaps)
        tg_counter_add(m->partition_gaps, st.partition_gaps - cs->last_stats.partition_gaps);
    tg_gauge_set(m->series, (double)st.series);
    tg_gauge_set(m->state_bytes, (double)st.state_bytes);
    cs->last_stats = st;
}

void consumer__metrics_lag(struct tg_consumer *cs)
{
    for (int32_t p = 0; p < cs->n_slots; p++) {
        struct consumer_slot *slot = &cs->slots[p];
        if (!slot->assigned || !slot->lag)
            continue;
        int64_t lo, hi;
        /* The end cached from the last fetch response (no request to the cluster); when there
         * is none, the end of what was fetched, so the gauge never stays at an old value. */
        if (rd_kafka_get_watermark_offsets(cs->consumer, cs->input_topic, p, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < slot->end_seen)
            hi = slot->end_seen;
        tg_gauge_set(slot->lag, (double)(hi > slot->next_offset ? hi - slot->next_offset : 0));
    }
}
