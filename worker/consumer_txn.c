/*
 * consumer_txn.c - the worker's transactions: outputs, snapshots and offsets committed as one.
 *
 * One transaction is open at all times. Outputs are produced into it as the engine emits
 * them; every commit interval consumer__txn_commit() flushes them, sends the consumed offsets
 * to the transaction (rd_kafka_send_offsets_to_transaction, with the group's metadata, so a
 * worker that lost its partitions in a rebalance cannot commit for them), adds for each
 * partition that moved an offset marker ("<p>/@offset" = the next offset whose outputs are
 * not committed) to partition p of the state topic, and commits. Then a new one begins.
 *
 * Checkpoints: a partition's state is written only every [worker] snapshot_interval_ms (and
 * on assignment, revoke, SIGTERM, and in the transaction of a sweep that changed it): its
 * series that changed since its last checkpoint, then a checkpoint marker "<p>/@ckpt" = the
 * offset that state covers, before the offset marker. A series that changes with every
 * reading is written once per interval instead of once per commit. The restore
 * (consumer_state.c) takes the state before the last offset marker, which is the last
 * checkpoint's, seeks to the checkpoint's offset, and processes the records from there to
 * the offset marker again with their outputs suppressed: the engine is deterministic, so it
 * arrives at the state the previous owner had, having emitted nothing twice. A partition that
 * moves thus replays at most one snapshot interval of its records. The sweep is the one
 * thing a replay cannot redo (it runs on the wall clock), hence the checkpoint in the sweep's
 * own transaction.
 *
 * Why the marker, when the offsets are committed anyway: a restore reads the state topic and
 * must know where that state stops, so it can ignore snapshots written after the last
 * committed marker and resume exactly there. On a real cluster the marker and the committed
 * offset are written by the same transaction and always agree. librdkafka 2.0.2's mock
 * cluster (tidegate-devkafka) accepts TxnOffsetCommit but stores nothing, shows records of
 * open and aborted transactions to read_committed readers and never fences: there the marker
 * is what lets a partition resume where its state was taken (see the README).
 *
 * Why outputs are flushed before the snapshots and markers are produced: on a cluster
 * without isolation (the mock), a worker killed mid-commit leaves a prefix of what it sent;
 * flushing first makes "marker visible" imply "outputs visible", so nothing is lost there
 * either. On a real cluster it only costs one round trip per commit interval.
 *
 * Failure: an error that requires abort aborts; a fatal one (fenced by a newer producer with
 * the same transactional.id) replaces the producer. Either way the engine's state is now
 * ahead of what is committed, so rewind_needed makes the loop restore every partition it
 * holds and seek back to its marker (consumer__rewind): exactly what a rebalance would do.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumer_internal.h"
#include "log.h"

#define REPLACE_TIMEOUT_MS 5000 /* per attempt when replacing a failed producer */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

tg_err consumer__producer_start(struct tg_consumer *cs, int init_timeout_ms, char *err,
                                size_t errlen)
{
    rd_kafka_conf_t *conf = consumer__conf_new(cs, err, errlen);
    if (!conf)
        return TG_ERR_CONFIG;
    char timeout[24], linger[24];
    snprintf(timeout, sizeof timeout, "%" PRId64, cs->txn_timeout_ms);
    snprintf(linger, sizeof linger, "%" PRId64, tg_config_get_ms(cs->cfg, "kafka", "linger_ms"));
    const char *const props[][2] = {
        /* Stable per instance: a restarted worker fences its previous self and aborts the
         * transaction that self left open. */
        {"transactional.id", cs->transactional_id},
        {"transaction.timeout.ms", timeout},
        {"linger.ms", linger},
        {"compression.codec", tg_config_get_str(cs->cfg, "kafka", "compression")},
        /* The Java client's partitioner: alerts of a device land where JVM tools expect. */
        {"partitioner", "murmur2_random"},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (consumer__conf_set(conf, props[i][0], props[i][1], err, errlen) != TG_OK) {
            rd_kafka_conf_destroy(conf);
            return TG_ERR_CONFIG;
        }
    /* [kafka.rdkafka] last, as for the other clients. */
    if (consumer__conf_passthrough(cs, conf, err, errlen) != TG_OK) {
        rd_kafka_conf_destroy(conf);
        return TG_ERR_CONFIG;
    }
    tg_err e = TG_OK;
    char why[512];
    cs->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!cs->producer) {
        snprintf(err, errlen, "kafka producer: %s", why);
        rd_kafka_conf_destroy(conf); /* rd_kafka_new() takes it only on success */
        return TG_ERR_CONFIG;
    }
    rd_kafka_error_t *error = rd_kafka_init_transactions(cs->producer, init_timeout_ms);
    if (error) {
        snprintf(err, errlen, "initialising transactions (transactional.id %s): %s",
                 cs->transactional_id, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rd_kafka_destroy(cs->producer);
        cs->producer = NULL;
        atomic_store(&cs->health, HEALTH_NO_TXN);
        e = TG_ERR_UNAVAILABLE;
    }
    cs->txn_open = false;
    return e;
}

tg_err consumer__txn_begin(struct tg_consumer *cs)
{
    rd_kafka_error_t *error = rd_kafka_begin_transaction(cs->producer);
    if (error) {
        TG_LOG_ERROR("txn", "cannot begin a transaction: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return TG_ERR_UNAVAILABLE;
    }
    cs->txn_open = true;
    cs->txn_work = false;
    cs->txn_failed = false;
    memset(cs->txn_alerts, 0, sizeof cs->txn_alerts);
    cs->txn_aggregates = 0;
    cs->txn_snapshot_records = cs->txn_snapshot_bytes = 0;
    return TG_OK;
}

/* A fatal producer error (fenced, or broken beyond repair): a new producer with the same
 * transactional.id, which bumps the epoch and fences whoever else holds it. While the cluster
 * cannot be reached this retries every second; a stop request ends that (false: broken). */
static bool replace_producer(struct tg_consumer *cs)
{
    atomic_store(&cs->health, HEALTH_PRODUCER_FATAL);
    tg_counter_inc(cs->m.fenced);
    if (cs->producer) {
        rd_kafka_purge(cs->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_destroy(cs->producer);
        cs->producer = NULL;
    }
    cs->txn_open = false;
    char err[512];
    if (cs->stop && atomic_load(cs->stop)) {
        TG_LOG_ERROR("txn", "stopping without a producer");
        cs->broken = true;
        return false;
    }
    /* Short attempts, so that a stop request is seen soon during an outage. */
    while (consumer__producer_start(cs, REPLACE_TIMEOUT_MS, err, sizeof err) != TG_OK) {
        if (cs->stop && atomic_load(cs->stop)) {
            TG_LOG_ERROR("txn", "%s; stopping without a producer", err);
            cs->broken = true;
            return false;
        }
        TG_LOG_ERROR("txn", "%s; retrying", err);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    atomic_store(&cs->health, HEALTH_OK);
    return true;
}

/* Fenced: a newer producer with our transactional.id exists, i.e. another process runs with
 * our instance_id (a restarted copy of us, or a configuration mistake). Fencing it back would
 * make the two take turns forever without progress, so this one steps aside: the loop ends,
 * the worker leaves the group (its partitions move to the other) and exits with status 1. */
static bool fenced(struct tg_consumer *cs, const rd_kafka_error_t *error)
{
    if (!error)
        return false;
    rd_kafka_resp_err_t code = rd_kafka_error_code(error);
    if (code != RD_KAFKA_RESP_ERR__FENCED && code != RD_KAFKA_RESP_ERR_PRODUCER_FENCED &&
        code != RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH)
        return false;
    /* The cluster answers the same when it aborted a transaction of ours that outlived
     * transaction_timeout_ms (it bumps the epoch): a checkpoint too large for the cluster's
     * pace, which checkpoint_max_records bounds (README). */
    TG_LOG_ERROR("txn", "fenced: another process runs with instance_id %s (transactional.id %s); "
                        "stopping. Every worker needs its own [worker] instance_id. (If not: "
                        "the cluster aborted a transaction that outlived transaction_timeout_ms "
                        "(%" PRId64 " ms); lower [worker] checkpoint_max_records)",
                 cs->instance_id, cs->transactional_id, cs->txn_timeout_ms);
    atomic_store(&cs->health, HEALTH_FENCED);
    cs->broken = true;
    cs->txn_open = false;
    return true;
}

/* After a failed transaction: aborted (or the producer replaced), a new one begun, and the
 * loop told to rewind. */
static void after_failure(struct tg_consumer *cs, rd_kafka_error_t *error)
{
    tg_counter_inc(cs->m.aborts);
    cs->rewind_needed = true;
    if (fenced(cs, error))
        return;
    if (error && rd_kafka_error_is_fatal(error)) {
        TG_LOG_ERROR("txn", "producer failed fatally (%s): replacing it",
                     rd_kafka_error_string(error));
        if (!replace_producer(cs))
            return;
    } else if (cs->txn_open) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(cs->producer, (int)cs->txn_timeout_ms);
        if (ae) {
            bool f = fenced(cs, ae);
            if (!f)
                TG_LOG_ERROR("txn", "abort failed (%s): replacing the producer",
                             rd_kafka_error_string(ae));
            rd_kafka_error_destroy(ae);
            if (f || !replace_producer(cs))
                return;
        }
    }
    cs->txn_open = false;
    while (consumer__txn_begin(cs) != TG_OK)
        if (!replace_producer(cs))
            return;
}

void consumer__txn_abort(struct tg_consumer *cs, const char *why)
{
    TG_LOG_INFO("txn", "aborting the open transaction: %s", why);
    after_failure(cs, NULL);
}

struct snap_ctx {
    struct tg_consumer *cs;
    tg_err err;
};

static bool want_partition(void *ud, int32_t partition)
{
    struct tg_consumer *cs = ud;
    return partition >= 0 && partition < cs->n_slots && cs->slots[partition].ckpt_now;
}

/* The offset the outputs are committed up to: a replay does not move it back. */
static int64_t output_offset(const struct consumer_slot *slot)
{
    return slot->next_offset > slot->replay_until ? slot->next_offset : slot->replay_until;
}

/* Chooses the partitions this commit checkpoints (slot->ckpt_now); true when there is one. */
static bool choose_checkpoints(struct tg_consumer *cs, int64_t now_ms)
{
    bool any = false;
    for (int32_t p = 0; p < cs->n_slots; p++) {
        struct consumer_slot *slot = &cs->slots[p];
        slot->ckpt_now = slot->assigned && slot->position_known && slot->state_changed &&
                         (slot->ckpt_due || now_ms >= slot->next_ckpt_ms ||
                          cs->snapshot_interval_ms == 0);
        any |= slot->ckpt_now;
    }
    return any;
}

static void produce_snapshot(void *ud, int32_t partition, const void *key, size_t key_len,
                             const void *value, size_t value_len)
{
    struct snap_ctx *sc = ud;
    tg_err e = consumer__produce(sc->cs, sc->cs->state_topic, partition, key, key_len,
                                 value_len ? value : NULL, value_len, 0, NULL);
    if (e != TG_OK)
        sc->err = e;
    sc->cs->txn_snapshot_records++;
    sc->cs->txn_snapshot_bytes += key_len + value_len;
}

/* Produces the marker "<p><suffix>" = offset into the open transaction. */
static tg_err produce_marker(struct tg_consumer *cs, int32_t p, const char *suffix,
                             int64_t offset)
{
    char key[32], value[32];
    int klen = snprintf(key, sizeof key, "%" PRId32 "%s", p, suffix);
    int vlen = snprintf(value, sizeof value, "%" PRId64, offset);
    cs->txn_snapshot_records++;
    cs->txn_snapshot_bytes += (uint64_t)(klen + vlen);
    return consumer__produce(cs, cs->state_topic, p, key, (size_t)klen, value, (size_t)vlen, 0,
                             NULL);
}

/* After a partition's checkpoint committed. */
static void checkpoint_done(struct tg_consumer *cs, struct consumer_slot *slot, int64_t now_ms)
{
    slot->ckpt_now = slot->ckpt_split = slot->ckpt_due = slot->state_changed = false;
    /* On its schedule (which keeps partitions apart), unless it fell behind; an early
     * checkpoint (assign, sweep) leaves the schedule as it was. */
    if (now_ms >= slot->next_ckpt_ms) {
        slot->next_ckpt_ms += cs->snapshot_interval_ms;
        if (slot->next_ckpt_ms <= now_ms)
            slot->next_ckpt_ms = now_ms + cs->snapshot_interval_ms;
    }
    tg_counter_inc(cs->m.checkpoints);
}

static bool want_one(void *ud, int32_t partition)
{
    return partition == *(const int32_t *)ud;
}

static tg_err commit_retrying(struct tg_consumer *cs, int timeout_ms, rd_kafka_error_t **error)
{
    /* A retriable error (a timeout) leaves the commit in progress: calling again resumes it. */
    for (int attempt = 0;; attempt++) {
        *error = rd_kafka_commit_transaction(cs->producer, timeout_ms);
        if (!*error || !rd_kafka_error_is_retriable(*error) || attempt >= 2 ||
            (cs->stop && atomic_load(cs->stop)))
            break;
        TG_LOG_WARN("txn", "commit: %s; retrying", rd_kafka_error_string(*error));
        rd_kafka_error_destroy(*error);
    }
    return *error ? TG_ERR_UNAVAILABLE : TG_OK;
}

/* The checkpoints of partitions marked ckpt_split, each in transactions of at most
 * checkpoint_max_records/_bytes snapshot records, right after the transaction that committed
 * the outputs and offsets up to them: nothing is processed in between, so every part holds
 * the state at the same offset. The first part opens with "<p>/@begin"; the last one ends
 * with the checkpoint marker and the offset marker (and sends the partition's offset again
 * with the group's metadata, so a worker that lost the partition meanwhile cannot complete
 * it). A restore that finds a @begin not followed by its @ckpt before the next offset marker
 * (the worker died between two parts) drops those snapshots and uses the checkpoint before.
 *
 * What this gives up: a sweep's outputs committed in the first transaction whose checkpoint
 * is then not completed are redone by the next owner's own sweep (README). Runs with a
 * transaction open; leaves one open. */
static tg_err commit_split_checkpoints(struct tg_consumer *cs, int timeout_ms)
{
    rd_kafka_error_t *error = NULL;
    rd_kafka_topic_partition_list_t *offsets = NULL;
    for (int32_t p = 0; p < cs->n_slots; p++) {
        struct consumer_slot *slot = &cs->slots[p];
        if (!slot->ckpt_split)
            continue;
        bool first = true, more = true;
        while (more) {
            double t0 = mono_s();
            if (!cs->txn_open || cs->txn_failed)
                goto fail;
            if (first && produce_marker(cs, p, CONSUMER_BEGIN_KEY, slot->next_offset) != TG_OK)
                goto fail;
            first = false;
            struct snap_ctx sc = {cs, TG_OK};
            more = tg_engine_snapshot_dirty_max(cs->en, want_one, &p,
                                                (size_t)cs->ckpt_max_records,
                                                (size_t)cs->ckpt_max_bytes, produce_snapshot, &sc);
            if (sc.err != TG_OK)
                goto fail;
            if (!more) {
                if (produce_marker(cs, p, CONSUMER_CKPT_KEY, slot->next_offset) != TG_OK ||
                    produce_marker(cs, p, CONSUMER_OFFSET_KEY, output_offset(slot)) != TG_OK)
                    goto fail;
                offsets = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(offsets, cs->input_topic, p)->offset =
                    output_offset(slot);
                rd_kafka_consumer_group_metadata_t *cgmd =
                    rd_kafka_consumer_group_metadata(cs->consumer);
                error = rd_kafka_send_offsets_to_transaction(cs->producer, offsets, cgmd,
                                                             timeout_ms);
                rd_kafka_consumer_group_metadata_destroy(cgmd);
                rd_kafka_topic_partition_list_destroy(offsets);
                offsets = NULL;
                if (error)
                    goto fail;
            }
            if (commit_retrying(cs, timeout_ms, &error) != TG_OK)
                goto fail;
            cs->txn_open = false;
            TG_LOG_DEBUG("txn", "committed part of the checkpoint of %s[%" PRId32 "]: %" PRIu64
                         " records, %" PRIu64 " bytes in %.1f ms%s",
                         cs->input_topic, p, cs->txn_snapshot_records, cs->txn_snapshot_bytes,
                         (mono_s() - t0) * 1e3, more ? "" : " (the last)");
            tg_counter_inc(cs->m.commits);
            tg_counter_inc(cs->m.checkpoint_parts);
            tg_histogram_observe(cs->m.commit_seconds, mono_s() - t0);
            consumer__metrics_committed(cs);
            if (!more)
                checkpoint_done(cs, slot, (int64_t)(mono_s() * 1000));
            if (consumer__txn_begin(cs) != TG_OK)
                goto fail;
        }
    }
    return TG_OK;
fail:
    TG_LOG_WARN("txn", "checkpoint transaction failed%s%s: aborting and rewinding to the last "
                "commit", error ? ": " : "", error ? rd_kafka_error_string(error) : "");
    for (int32_t p = 0; p < cs->n_slots; p++)
        cs->slots[p].ckpt_split = false; /* the rewind restores and checkpoints again */
    after_failure(cs, error);
    if (error)
        rd_kafka_error_destroy(error);
    return TG_ERR_UNAVAILABLE;
}

/* The test hook TIDEGATE_TEST_STALE_GENERATION (consumer_internal.h): returns the group
 * metadata to send, cur itself or, for the first commits after the generation changed, the
 * metadata from before the change (cur is then destroyed). The broker refuses those with
 * ILLEGAL_GENERATION, as it refuses a commit that races a rebalance. */
static rd_kafka_consumer_group_metadata_t *
test_group_metadata(struct tg_consumer *cs, rd_kafka_consumer_group_metadata_t *cur)
{
    void *bytes = NULL;
    size_t len = 0;
    rd_kafka_error_t *error = rd_kafka_consumer_group_metadata_write(cur, &bytes, &len);
    if (error) {
        rd_kafka_error_destroy(error);
        return cur;
    }
    bool changed = cs->test_md && (len != cs->test_md_len || memcmp(bytes, cs->test_md, len));
    if (changed && cs->test_stale_left < 0)
        cs->test_stale_left = cs->test_stale_commits;
    if (changed && cs->test_stale_left > 0) {
        rd_kafka_consumer_group_metadata_t *stale = NULL;
        error = rd_kafka_consumer_group_metadata_read(&stale, cs->test_md, cs->test_md_len);
        rd_kafka_mem_free(NULL, bytes);
        if (error) {
            rd_kafka_error_destroy(error);
            return cur;
        }
        cs->test_stale_left--;
        TG_LOG_INFO("txn", "test hook: sending offsets with the group's previous generation");
        rd_kafka_consumer_group_metadata_destroy(cur);
        return stale;
    }
    if (cs->test_md)
        rd_kafka_mem_free(NULL, cs->test_md);
    cs->test_md = bytes;
    cs->test_md_len = len;
    cs->test_stale_left = -1;
    return cur;
}

tg_err consumer__txn_commit(struct tg_consumer *cs, int timeout_ms)
{
    double t0 = mono_s();
    bool ckpt = cs->txn_open && choose_checkpoints(cs, (int64_t)(t0 * 1000));
    if (!cs->txn_open || (!cs->txn_work && !ckpt))
        return TG_OK; /* nothing produced, consumed or to checkpoint: the empty transaction
                       * stays open */
    rd_kafka_error_t *error = NULL;
    rd_kafka_topic_partition_list_t *offsets = NULL;
    if (cs->txn_failed)
        goto fail;
    /* Outputs before state (see the top of this file). */
    rd_kafka_resp_err_t fe = rd_kafka_flush(cs->producer, timeout_ms);
    if (fe) {
        TG_LOG_WARN("txn", "flushing outputs: %s", rd_kafka_err2str(fe));
        goto fail;
    }
    double t_flushed = mono_s();
    /* The offsets next, before the state: a commit that raced a rebalance is refused here
     * (ILLEGAL_GENERATION), and then nothing is queued or in flight. Snapshots and markers
     * produced before it had to be purged by the abort, and librdkafka 2.0.2 then failed the
     * next transaction as well ("skipped sequence numbers") or spent the whole transaction
     * timeout aborting. In one transaction the order changes nothing that readers see. */
    offsets = rd_kafka_topic_partition_list_new(8);
    for (int32_t p = 0; p < cs->n_slots; p++) {
        const struct consumer_slot *slot = &cs->slots[p];
        if (slot->assigned && slot->position_known && slot->advanced)
            rd_kafka_topic_partition_list_add(offsets, cs->input_topic, p)->offset =
                output_offset(slot);
    }
    if (offsets->cnt > 0) {
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(cs->consumer);
        if (cs->test_stale_commits > 0 && !(cs->stop && atomic_load(cs->stop)))
            cgmd = test_group_metadata(cs, cgmd); /* not the last commit of a SIGTERM */
        error = rd_kafka_send_offsets_to_transaction(cs->producer, offsets, cgmd, timeout_ms);
        rd_kafka_consumer_group_metadata_destroy(cgmd);
        if (error)
            goto fail;
    }
    /* A checkpoint too large for one transaction (a flood of new series) is left out of this
     * one, which commits the outputs and offsets, and written by the transactions that
     * follow (commit_split_checkpoints). One that fits goes here, as a whole. */
    bool split = false;
    if (ckpt && tg_engine_snapshot_pending(cs->en, want_partition, cs) > cs->ckpt_max_records)
        for (int32_t p = 0; p < cs->n_slots; p++) {
            struct consumer_slot *slot = &cs->slots[p];
            if (slot->ckpt_now)
                split = slot->ckpt_split = true;
            slot->ckpt_now = false;
        }
    struct snap_ctx sc = {cs, TG_OK};
    if (ckpt && !split) {
        /* Opens each checkpoint: a restore drops the snapshots of an earlier one that never
         * completed (consumer_state.c). */
        for (int32_t p = 0; p < cs->n_slots; p++)
            if (cs->slots[p].ckpt_now &&
                produce_marker(cs, p, CONSUMER_BEGIN_KEY, cs->slots[p].next_offset) != TG_OK)
                goto fail;
        tg_engine_snapshot_dirty_if(cs->en, want_partition, cs, produce_snapshot, &sc);
    }
    if (sc.err != TG_OK)
        goto fail;
    /* Markers for every held partition that advanced or is checkpointed: a restore takes
     * the state before the last offset marker and ignores what follows it. The checkpoint
     * marker goes first, so a visible offset marker (on a cluster without isolation) implies
     * the checkpoint before it is complete. */
    for (int32_t p = 0; p < cs->n_slots; p++) {
        struct consumer_slot *slot = &cs->slots[p];
        if (!slot->assigned || !slot->position_known || (!slot->advanced && !slot->ckpt_now))
            continue;
        if (slot->ckpt_now &&
            produce_marker(cs, p, CONSUMER_CKPT_KEY, slot->next_offset) != TG_OK)
            goto fail;
        if (produce_marker(cs, p, CONSUMER_OFFSET_KEY, output_offset(slot)) != TG_OK)
            goto fail;
    }
    double t_offsets = mono_s();
    if (commit_retrying(cs, timeout_ms, &error) != TG_OK)
        goto fail;
    cs->txn_open = false;
    int64_t now_ms = (int64_t)(mono_s() * 1000);
    for (int32_t p = 0; p < cs->n_slots; p++) {
        struct consumer_slot *slot = &cs->slots[p];
        slot->advanced = false;
        if (slot->ckpt_now)
            checkpoint_done(cs, slot, now_ms);
    }
    double t_end = mono_s();
    TG_LOG_DEBUG("txn", "committed: flush %.1f ms, %" PRIu64 " snapshots, markers and %d offsets "
                 "offsets %.1f ms, commit %.1f ms",
                 (t_flushed - t0) * 1e3, cs->txn_snapshot_records, offsets->cnt,
                 (t_offsets - t_flushed) * 1e3, (t_end - t_offsets) * 1e3);
    tg_counter_inc(cs->m.commits);
    tg_histogram_observe(cs->m.commit_seconds, mono_s() - t0);
    consumer__metrics_committed(cs);
    rd_kafka_topic_partition_list_destroy(offsets);
    if (consumer__txn_begin(cs) != TG_OK) {
        for (int32_t p = 0; p < cs->n_slots; p++)
            cs->slots[p].ckpt_split = false;
        after_failure(cs, NULL);
        return TG_OK;
    }
    return split ? commit_split_checkpoints(cs, timeout_ms) : TG_OK;
fail:
    for (int32_t p = 0; p < cs->n_slots; p++)
        cs->slots[p].ckpt_split = false;
    TG_LOG_WARN("txn", "transaction failed%s%s: aborting and rewinding to the last commit",
                error ? ": " : "", error ? rd_kafka_error_string(error) : "");
    after_failure(cs, error);
    if (error)
        rd_kafka_error_destroy(error);
    if (offsets) /* NULL when the flush failed */
        rd_kafka_topic_partition_list_destroy(offsets);
    return TG_ERR_UNAVAILABLE;
}

tg_err consumer__rewind(struct tg_consumer *cs)
{
    cs->rewind_needed = false;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
    for (int32_t p = 0; p < cs->n_slots; p++)
        if (cs->slots[p].assigned)
            rd_kafka_topic_partition_list_add(parts, cs->input_topic, p);
    tg_err e = TG_OK;
    if (parts->cnt > 0) {
        TG_LOG_INFO("txn", "rewinding %d partition%s to the last committed transaction",
                    parts->cnt, parts->cnt == 1 ? "" : "s");
        e = consumer__restore(cs, parts);
        if (e == TG_OK) {
            rd_kafka_error_t *error =
                rd_kafka_seek_partitions(cs->consumer, parts, (int)cs->txn_timeout_ms);
            if (error) {
                TG_LOG_ERROR("txn", "seeking back: %s", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
                e = TG_ERR_UNAVAILABLE;
            }
            for (int i = 0; i < parts->cnt; i++) {
                struct consumer_slot *slot = consumer__slot(cs, parts->elems[i].partition);
                if (parts->elems[i].err)
                    TG_LOG_ERROR("txn", "seeking %s[%" PRId32 "]: %s", cs->input_topic,
                                 parts->elems[i].partition, rd_kafka_err2str(parts->elems[i].err));
                consumer__slot_start(cs, slot, parts->elems[i].offset);
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return e;
}
