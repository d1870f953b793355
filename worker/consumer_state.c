/*
 * consumer_state.c - state that moves with partitions: rebalances and restores.
 *
 * Partition p of the state topic holds the snapshots of input partition p: series snapshots
 * "<p>/<device>/<metric>", the engine's partition state "<p>/", tombstones for evicted series,
 * written at checkpoints and followed by a checkpoint marker "<p>/@ckpt", and at the end of
 * each committed transaction that moved p an offset marker "<p>/@offset". A restore reads
 * partition p from the beginning (read_committed) to its end, keeps for each key the latest
 * value written before the last offset marker (snapshots are written only at checkpoints, so
 * that is the last checkpoint's state), and hands those to the engine (tombstones skipped);
 * processing then resumes at the checkpoint's offset, and the records from there up to the
 * offset marker's are processed with their outputs suppressed (consumer.c): they were
 * committed with that marker. Without a checkpoint marker (a state topic written before they
 * existed, when every commit wrote every change) the offset marker is the checkpoint too.
 * Records after the last offset marker belong to a transaction that never committed (visible
 * only on a cluster without isolation, such as the mock) and are ignored, so state and
 * position always come from committed transactions.
 *
 * The end: the high watermark queried before reading. On a real cluster a transaction left
 * open by a worker that died keeps the read_committed end (the last stable offset) below the
 * high watermark until the cluster aborts it (transaction_timeout_ms); the restore waits for
 * that, up to [kafka] restore_timeout_ms, because the snapshots the next owner writes would
 * otherwise sit behind it, invisible to a later restore.
 *
 * Rebalances are cooperative (incremental): an assign restores only the partitions added, a
 * revoke commits the open transaction first (so what was processed for them is committed
 * with their offsets before another worker takes them) and then forgets them. Lost partitions
 * (the group moved on without us) cannot be committed for: the transaction is aborted and the
 * partitions we keep are rewound.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumer_internal.h"
#include "log.h"
#include "state_fold.h"
#include "worker_config.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The restore of one partition. */
struct prestore {
    int32_t partition;
    int64_t hi;          /* high watermark when the restore began */
    bool done;
    int64_t resume;      /* the last offset marker's offset, or -1 */
    int64_t ckpt;        /* the checkpoint marker's offset that preceded it, or -1 */
    int64_t ckpt_seen;   /* the latest checkpoint marker read so far, or -1 */
    bool in_ckpt;        /* a @begin was read and its @ckpt not yet */
    struct tg_state_fold *fold; /* latest value per key; committed = before the last marker */
    uint64_t records;    /* snapshot records read (tombstones included) */
    char prefix[16];     /* "<p>/" */
    size_t prefix_len;
};

struct apply_ctx {
    struct tg_consumer *cs;
    size_t restored;
    uint64_t *bad;
};

static void apply_one(void *ud, const char *key, size_t key_len, const void *value,
                      size_t value_len)
{
    struct apply_ctx *ac = ud;
    if (tg_engine_restore(ac->cs->en, key, key_len, value, value_len) == TG_OK)
        ac->restored++;
    else
        (*ac->bad)++;
}

/* Hands the latest committed value of each key to the engine (tombstones drop it), in the
 * order the keys were last written. Returns the number of pairs restored; malformed ones are
 * counted in *bad. */
static size_t prestore_apply(struct tg_consumer *cs, struct prestore *pr, uint64_t *bad)
{
    if (!pr->fold)
        return 0;
    struct apply_ctx ac = {cs, 0, bad};
    if (tg_state_fold_foreach(pr->fold, apply_one, &ac) == (size_t)-1)
        TG_LOG_ERROR("restore", "out of memory restoring partition %" PRId32, pr->partition);
    return ac.restored;
}

/* Whether msg's key is partition pr's marker "<p><suffix>". */
static bool is_marker(const struct prestore *pr, const rd_kafka_message_t *msg,
                      const char *suffix)
{
    size_t n = strlen(suffix);
    return msg->key_len == pr->prefix_len - 1 + n &&
           memcmp((const char *)msg->key + pr->prefix_len - 1, suffix, n) == 0;
}

static void handle_state_record(struct tg_consumer *cs, struct prestore *pr,
                                const rd_kafka_message_t *msg, uint64_t *bad)
{
    if (!msg->key || msg->key_len < pr->prefix_len ||
        memcmp(msg->key, pr->prefix, pr->prefix_len) != 0) {
        (*bad)++; /* not of this partition: written by something else */
        return;
    }
    bool is_ckpt = is_marker(pr, msg, CONSUMER_CKPT_KEY);
    bool is_begin = is_marker(pr, msg, CONSUMER_BEGIN_KEY);
    if (is_ckpt || is_begin || is_marker(pr, msg, CONSUMER_OFFSET_KEY)) {
        char buf[32];
        size_t len = msg->len < sizeof buf - 1 ? msg->len : sizeof buf - 1;
        memcpy(buf, msg->payload ? msg->payload : "", len);
        buf[len] = '\0';
        char *end;
        errno = 0;
        long long off = strtoll(buf, &end, 10);
        if (len == 0 || len != msg->len || *end || errno || off < 0) {
            (*bad)++;
            return;
        }
        if (is_begin) {
            /* A checkpoint opens; snapshots still pending belong to one that never reached
             * its @ckpt (its owner died between two of its transactions): dropped. */
            tg_state_fold_rollback(pr->fold);
            pr->in_ckpt = true;
            return;
        }
        if (is_ckpt) {
            pr->ckpt_seen = off; /* counts once an offset marker follows it */
            pr->in_ckpt = false;
            return;
        }
        pr->resume = off;
        pr->ckpt = pr->ckpt_seen;
        /* An offset marker inside an open checkpoint: the next owner's, after a checkpoint
         * spread over several transactions stopped half-way. Its snapshots are dropped. */
        if (pr->in_ckpt)
            tg_state_fold_rollback(pr->fold);
        else
            tg_state_fold_commit(pr->fold);
        pr->in_ckpt = false;
        return;
    }
    pr->records++;
    if (tg_state_fold_put(pr->fold, msg->key, msg->key_len, msg->payload,
                          msg->payload ? msg->len : 0) != TG_OK)
        (*bad)++;
    (void)cs;
}

/* A marker beyond the input partition's end does not belong to this input topic: it was
 * recreated (its offsets start again at 0) while the state topic kept the old one's markers,
 * or something else wrote the state topic. Resuming there would skip every record up to that
 * offset without a word (the consumer would reset to auto_offset_reset, and the records
 * below the marker would then be taken for ones fetched before a seek). The markers are
 * dropped and counted; the partition resumes as if it had none (the group's committed
 * offset, else auto_offset_reset), with the series state it restored. */
/* Returns false when the cluster did not answer (the caller then checks no further: each
 * query would wait as long again). */
static bool markers_check(struct tg_consumer *cs, struct prestore *pr, uint64_t *bad)
{
    if (pr->resume < 0 && pr->ckpt < 0)
        return true;
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(cs->restorer, cs->input_topic,
                                                             pr->partition, &lo, &hi, 10000);
    if (e) {
        TG_LOG_WARN("restore", "watermarks of %s[%" PRId32 "]: %s: markers not checked",
                    cs->input_topic, pr->partition, rd_kafka_err2str(e));
        return false;
    }
    if (pr->resume <= hi && pr->ckpt <= hi)
        return true;
    TG_LOG_WARN("restore",
                "%s[%" PRId32 "]: the state's offset marker (%" PRId64 ") or checkpoint (%" PRId64
                ") is beyond the end of %s[%" PRId32 "] (%" PRId64 "): the input topic was "
                "recreated, or something else wrote the state topic; ignoring the markers",
                cs->state_topic, pr->partition, pr->resume, pr->ckpt, cs->input_topic,
                pr->partition, hi);
    pr->resume = pr->ckpt = -1;
    (*bad)++;
    return true;
}

tg_err consumer__restore(struct tg_consumer *cs, rd_kafka_topic_partition_list_t *parts)
{
    int64_t t0 = mono_ms();
    int n = parts->cnt;
    struct prestore *prs = calloc((size_t)(n ? n : 1), sizeof *prs);
    rd_kafka_topic_partition_list_t *state = rd_kafka_topic_partition_list_new(n ? n : 1);
    tg_err rc = TG_OK;
    uint64_t bad = 0;
    size_t restored = 0;
    if (!prs) {
        rd_kafka_topic_partition_list_destroy(state);
        return TG_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        struct prestore *pr = &prs[i];
        int32_t p = parts->elems[i].partition;
        pr->partition = p;
        pr->resume = pr->ckpt = pr->ckpt_seen = -1;
        pr->prefix_len = (size_t)snprintf(pr->prefix, sizeof pr->prefix, "%" PRId32 "/", p);
        if (!(pr->fold = tg_state_fold_new())) {
            rc = TG_ERR_NOMEM;
            goto out;
        }
        struct consumer_slot *slot = consumer__slot(cs, p);
        if (slot)
            slot->replay_until = -1;
        tg_engine_partition_drop(cs->en, p);
        if (tg_engine_partition_add(cs->en, p) != TG_OK) {
            rc = TG_ERR_NOMEM;
            goto out;
        }
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(cs->restorer, cs->state_topic, p, &lo, &hi, 10000);
        if (e) {
            TG_LOG_ERROR("restore", "watermarks of %s[%" PRId32 "]: %s", cs->state_topic, p,
                         rd_kafka_err2str(e));
            rc = TG_ERR_UNAVAILABLE;
            goto out;
        }
        pr->hi = hi;
        if (hi <= lo) {
            pr->done = true; /* nothing to read */
            continue;
        }
        rd_kafka_topic_partition_list_add(state, cs->state_topic, p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    }
    if (state->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_assign(cs->restorer, state);
        if (e) {
            TG_LOG_ERROR("restore", "assigning %s: %s", cs->state_topic, rd_kafka_err2str(e));
            rc = TG_ERR_UNAVAILABLE;
            goto out;
        }
        int pending = state->cnt;
        int64_t deadline = t0 + cs->restore_timeout_ms;
        while (pending > 0) {
            if (mono_ms() >= deadline) {
                TG_LOG_WARN("restore",
                            "%d partition%s of %s not read to the end within %" PRId64
                            " ms (a transaction left open?): going on with what is committed",
                            pending, pending == 1 ? "" : "s", cs->state_topic,
                            cs->restore_timeout_ms);
                tg_counter_inc(cs->m.restore_timeouts);
                break;
            }
            rd_kafka_message_t *msg = rd_kafka_consumer_poll(cs->restorer, 100);
            if (!msg)
                continue;
            struct prestore *pr = NULL;
            for (int i = 0; i < n; i++)
                if (prs[i].partition == msg->partition)
                    pr = &prs[i];
            if (pr && !pr->done) {
                if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                    /* pr->hi came from a read_committed ListOffsets, which answers with the
                     * last stable offset; the fetch that reported this end also brought the
                     * high watermark. Below it, a transaction is still open (a dead worker's,
                     * until the cluster aborts it): wait for it, as the top of this file says. */
                    int64_t lo2, hi2;
                    if (rd_kafka_get_watermark_offsets(cs->restorer, cs->state_topic,
                                                       msg->partition, &lo2, &hi2) ==
                            RD_KAFKA_RESP_ERR_NO_ERROR &&
                        hi2 > pr->hi)
                        pr->hi = hi2;
                    if (msg->offset >= pr->hi) {
                        pr->done = true;
                        pending--;
                    }
                } else if (msg->err) {
                    TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "restore", 5000, "reading %s: %s",
                                       cs->state_topic, rd_kafka_message_errstr(msg));
                } else {
                    handle_state_record(cs, pr, msg, &bad);
                    tg_counter_inc(cs->m.restored_records);
                }
            }
            rd_kafka_message_destroy(msg);
        }
        rd_kafka_assign(cs->restorer, NULL);
    }

    for (int i = 0; i < n; i++)
        if (!markers_check(cs, &prs[i], &bad))
            break;
    /* Where each partition resumes: its marker, else the group's committed offset (a state
     * topic that was emptied), else [kafka] auto_offset_reset. */
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_new(n ? n : 1);
    for (int i = 0; i < n; i++)
        if (prs[i].resume < 0)
            rd_kafka_topic_partition_list_add(committed, cs->input_topic, prs[i].partition);
    if (committed->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_committed(cs->consumer, committed, 10000);
        if (e)
            TG_LOG_WARN("restore", "committed offsets: %s", rd_kafka_err2str(e));
    }
    for (int i = 0; i < n; i++) {
        struct prestore *pr = &prs[i];
        restored += prestore_apply(cs, pr, &bad);
        int64_t off = pr->resume, replay_until = -1;
        if (off >= 0 && pr->ckpt >= 0 && pr->ckpt < off) {
            /* Resume at the checkpoint the state covers; replay up to the offset marker. */
            replay_until = off;
            off = pr->ckpt;
        }
        struct consumer_slot *slot = consumer__slot(cs, pr->partition);
        if (slot)
            slot->replay_until = replay_until;
        if (off < 0) {
            rd_kafka_topic_partition_t *c =
                rd_kafka_topic_partition_list_find(committed, cs->input_topic, pr->partition);
            if (c && !c->err && c->offset >= 0)
                off = c->offset;
        }
        if (off < 0)
            off = cs->offset_reset == TG_WORKER_RESET_LATEST ? RD_KAFKA_OFFSET_END
                                                             : RD_KAFKA_OFFSET_BEGINNING;
        parts->elems[i].offset = off;
        TG_LOG_DEBUG("restore", "%s[%" PRId32 "]: %" PRIu64 " snapshot records of %zu keys "
                     "(%zu bytes held), resuming at %" PRId64 ", outputs suppressed up to %" PRId64,
                     cs->state_topic, pr->partition, pr->records, tg_state_fold_keys(pr->fold),
                     tg_state_fold_bytes(pr->fold), off, replay_until);
    }
    rd_kafka_topic_partition_list_destroy(committed);
out:
    for (int i = 0; i < n; i++)
        tg_state_fold_destroy(prs[i].fold);
    free(prs);
    rd_kafka_topic_partition_list_destroy(state);
    if (bad)
        tg_counter_add(cs->m.restore_errors, bad);
    double secs = (double)(mono_ms() - t0) / 1000.0;
    tg_histogram_observe(cs->m.restore_seconds, secs);
    TG_LOG_INFO("restore", "restored %zu series snapshot%s of %d partition%s in %.3f s", restored,
                restored == 1 ? "" : "s", n, n == 1 ? "" : "s", secs);
    return rc;
}

static void assign(struct tg_consumer *cs, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts)
{
    tg_counter_add(cs->m.assigned_total, (uint64_t)parts->cnt);
    if (parts->cnt > 0 && consumer__restore(cs, parts) != TG_OK) {
        /* Unrecoverable for these partitions now: do not take them, so the group can give
         * them to a worker that can (or to us again at the next rebalance). */
        TG_LOG_ERROR("restore", "cannot restore %d partition%s: not taking them", parts->cnt,
                     parts->cnt == 1 ? "" : "s");
        for (int i = 0; i < parts->cnt; i++)
            tg_engine_partition_drop(cs->en, parts->elems[i].partition);
        return;
    }
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        struct consumer_slot *slot = consumer__slot(cs, p);
        if (!slot)
            continue;
        slot->assigned = true;
        consumer__slot_start(cs, slot, parts->elems[i].offset);
        if (!slot->lag)
            slot->lag = consumer__lag_gauge(cs, p);
    }
    rd_kafka_error_t *error = rd_kafka_incremental_assign(rk, parts);
    if (error) {
        TG_LOG_ERROR("consumer", "incremental assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

static void revoke(struct tg_consumer *cs, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts)
{
    bool lost = rd_kafka_assignment_lost(rk);
    tg_counter_add(lost ? cs->m.lost_total : cs->m.revoked_total, (uint64_t)parts->cnt);
    if (lost) {
        if (cs->txn_open && cs->txn_work)
            consumer__txn_abort(cs, "partitions lost to the group");
    } else if (!cs->rewind_needed && !cs->broken) {
        /* Commit what was processed of them (and of the others: one transaction) before
         * another worker starts from their committed offsets, with a checkpoint of their
         * state, so the next owner has nothing to replay. */
        for (int i = 0; i < parts->cnt; i++) {
            struct consumer_slot *slot = consumer__slot(cs, parts->elems[i].partition);
            if (slot && slot->assigned)
                slot->ckpt_due = true;
        }
        consumer__txn_commit(cs, (int)cs->txn_timeout_ms);
    }
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        tg_engine_partition_drop(cs->en, p);
        struct consumer_slot *slot = consumer__slot(cs, p);
        if (slot) {
            slot->assigned = false;
            slot->advanced = false;
            if (slot->lag)
                tg_gauge_set(slot->lag, 0);
        }
    }
    rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, parts);
    if (error) {
        TG_LOG_ERROR("consumer", "incremental unassign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

void consumer__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct tg_consumer *cs = opaque;
    char list[512] = "";
    size_t used = 0;
    for (int i = 0; i < parts->cnt && used < sizeof list - 16; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%" PRId32, i ? "," : "",
                                 parts->elems[i].partition);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        cs->group_assigned = true; /* the assignor's state exists from here on */
        /* A cooperative rebalance that adds nothing still calls this, with an empty list. */
        if (parts->cnt > 0)
            TG_LOG_INFO("consumer", "assigned %s[%s]", cs->input_topic, list);
        assign(cs, rk, parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        TG_LOG_INFO("consumer", "%s %s[%s]", rd_kafka_assignment_lost(rk) ? "lost" : "revoked",
                    cs->input_topic, list);
        revoke(cs, rk, parts);
    } else {
        TG_LOG_ERROR("consumer", "rebalance: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
    int assigned = 0;
    for (int32_t p = 0; p < cs->n_slots; p++)
        assigned += cs->slots[p].assigned;
    tg_gauge_set(cs->m.partitions, assigned);
}
