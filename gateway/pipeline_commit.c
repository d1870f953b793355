/*
 * pipeline_commit.c - the journal side of the pipeline: the group commit, the cap and its
 * overflow policies, eviction of resident data, and recovery at start.
 *
 * Commits (every commit_interval_ms, one SQLite transaction):
 *   1. the open segment is sealed;
 *   2. each segment not yet journaled is written as a compressed copy holding only its records
 *      not yet done (durable mode; in spill mode only while Kafka is down or behind, or memory
 *      is short) with its done bitmap; a segment whose records are all done costs nothing;
 *   3. journaled segments whose done bitmap changed get it updated, or are deleted when all
 *      their records are done (the row goes only once Kafka confirmed every record in it:
 *      design.md 5.1);
 *   4. the dedup window, every dedup_save_interval_ms.
 * So at steady state Kafka confirms nearly everything before the commit and the journal
 * writes only the few records in flight at that instant.
 *
 * The cap (journal.max_bytes, on compressed segment data) and its overflow policy apply at the
 * commit; see apply_drop_oldest() and the end of pipeline__commit().
 */
#include "pipeline_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "codec_canonical_decode.h"
#include "gateway_config.h"
#include "log.h"

/* Writes s (its records not yet done) as a journal row with its done bitmap. *blob_bytes
 * gets the compressed size. TG_ERR_FULL: over the cap under drop_newest (nothing written). */
static tg_err persist_seg(struct tg_pipeline *pl, struct seg *s, bool may_refuse,
                          size_t written_before, size_t *blob_bytes)
{
    struct tg_segment *copy = tg_segment_new(SIZE_MAX);
    if (!copy)
        return TG_ERR_NOMEM;
    size_t cnt = tg_segment_count(s->data);
    tg_err rc = TG_OK;
    for (size_t idx = 0; idx < cnt && rc == TG_OK; idx++) {
        struct tg_jrecord rec;
        tg_segment_get(s->data, idx, &rec);
        if (!bit_get(s->done, (size_t)(rec.rid - s->first_rid)))
            rc = tg_segment_append(copy, &rec);
    }
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    if (rc == TG_OK)
        rc = tg_segment_compress(copy, pl->codec, pl->zstd_level, &blob, &blob_len);
    if (rc == TG_OK && may_refuse &&
        tg_journal_data_bytes(pl->jr) + written_before + blob_len > pl->max_bytes)
        rc = TG_ERR_FULL;
    if (rc == TG_OK) {
        struct tg_jseg_meta meta = {
            .id = s->first_rid,
            .first_rid = s->first_rid,
            .last_rid = s->last_rid,
            .n_records = (uint32_t)tg_segment_count(copy),
            .created_ms = s->created_ms,
            .codec = pl->codec,
            .raw_bytes = (uint32_t)tg_segment_raw_bytes(copy),
            .data_bytes = (uint32_t)blob_len,
        };
        rc = tg_journal_put(pl->jr, &meta, blob, blob_len);
        if (rc == TG_OK)
            rc = tg_journal_set_done(pl->jr, s->first_rid, s->done, bitmap_bytes(seg_range(s)));
        if (rc == TG_OK) {
            s->codec = pl->codec;
            s->stored_raw_bytes = meta.raw_bytes;
            s->stored_bytes = (uint32_t)blob_len;
            *blob_bytes = blob_len;
            if (meta.raw_bytes)
                pl->ratio = (double)blob_len / meta.raw_bytes;
        }
    }
    free(blob);
    tg_segment_destroy(copy);
    return rc;
}

static void log_journal_error(struct tg_pipeline *pl, const char *what, tg_err rc)
{
    TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "journal", 10000, "%s failed: %s (%s)", what,
                       tg_strerror(rc), tg_journal_errmsg(pl->jr));
}

/* Whether s must be journaled at this commit. Durable: always. Spill: when Kafka is down or
 * behind, or when what waits unjournaled exceeds memory_bytes (oldest segments first). */
static bool must_write(struct tg_pipeline *pl, bool final, bool kafka_behind,
                       size_t *unjournaled_bytes, const struct seg *s)
{
    if (final || pl->mode == TG_JOURNAL_DURABLE || kafka_behind)
        return true;
    if (*unjournaled_bytes <= pl->memory_bytes)
        return false;
    *unjournaled_bytes -= tg_segment_raw_bytes(s->data);
    return true;
}

/* drop_oldest: removes the oldest journaled records (not those librdkafka already holds)
 * until the journal is back under its cap and, when the disk is full, until the rows gone
 * make room for need bytes (what waits to be journaled). Its own transaction, after the
 * commit. Memory follows the journal only once that transaction is committed: marking
 * records done first and then failing to write it would leave rows that count against the
 * cap, are never deleted, and come back at the next start although counted dropped.
 * Returns the stored bytes of the rows it removed. */
static uint64_t apply_drop_oldest(struct tg_pipeline *pl, uint64_t need)
{
    if (pl->overflow != TG_OVERFLOW_DROP_OLDEST)
        return 0;
    /* Rows whose remaining records are all in librdkafka's hands go as soon as those are
     * confirmed: count them as gone, or the policy would eat ever newer segments while
     * they wait (those records are bounded by kafka.queue_max_kbytes). The journal's own
     * count moves only at the commit, so track what this transaction frees as well. */
    uint64_t used = tg_journal_data_bytes(pl->jr);
    for (struct seg *p = pl->head; p; p = p->next)
        if (p->persisted && p->n_open == p->n_inflight)
            used -= p->stored_bytes < used ? p->stored_bytes : used;
    if (used <= pl->max_bytes && !need)
        return 0;
    if (tg_journal_begin(pl->jr) != TG_OK)
        return 0;
    uint64_t freed = 0;
    size_t dropped = 0;
    tg_err rc = TG_OK;
    struct seg **victims = NULL;
    size_t n_victims = 0, cap_victims = 0;
    uint8_t *bits = NULL;
    size_t bits_cap = 0;
    for (struct seg *s = pl->head; s && rc == TG_OK && (used > pl->max_bytes || freed < need);
         s = s->next) {
        if (!s->persisted || s->n_open <= s->n_inflight)
            continue;
        /* The row's done bitmap as it will be: everything done but what is in flight. */
        size_t nb = bitmap_bytes(seg_range(s));
        if (nb > bits_cap) {
            uint8_t *b = realloc(bits, nb);
            if (!b) {
                rc = TG_ERR_NOMEM;
                break;
            }
            bits = b;
            bits_cap = nb;
        }
        if (n_victims == cap_victims) {
            size_t cap = cap_victims ? cap_victims * 2 : 16;
            struct seg **v = realloc(victims, cap * sizeof *v);
            if (!v) {
                rc = TG_ERR_NOMEM;
                break;
            }
            victims = v;
            cap_victims = cap;
        }
        for (size_t i = 0; i < nb; i++)
            bits[i] = (uint8_t)(s->done[i] | ~s->inflight[i]);
        rc = s->n_inflight == 0
                 ? tg_journal_delete(pl->jr, s->first_rid)
                 : tg_journal_set_done(pl->jr, s->first_rid, bits, nb);
        victims[n_victims++] = s;
        used -= s->stored_bytes < used ? s->stored_bytes : used;
        freed += s->stored_bytes;
    }
    free(bits);
    if (rc == TG_OK)
        rc = tg_journal_commit(pl->jr);
    else
        tg_journal_rollback(pl->jr);
    if (rc == TG_OK) {
        for (size_t k = 0; k < n_victims; k++) {
            dropped += pipeline__drop_open_records(pl, victims[k], pl->m.dropped_full);
            victims[k]->done_dirty = false;
        }
    }
    free(victims);
    if (rc != TG_OK) {
        /* Nothing changed: the next commit tries again. */
        log_journal_error(pl, "dropping the oldest segments", rc);
        return 0;
    }
    TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "journal", 10000,
                       "journal at its cap (%llu bytes): dropped the %zu oldest readings",
                       (unsigned long long)pl->max_bytes, dropped);
    for (struct seg *s = pl->head; s;) {
        struct seg *next = s->next;
        if (s->persisted && seg_finished(s))
            pipeline__list_remove(pl, s);
        s = next;
    }
    return freed;
}

/* Raw bytes of the records that wait to be journaled (sealed segments never written). */
static size_t unjournaled_raw(const struct tg_pipeline *pl)
{
    size_t n = 0;
    for (const struct seg *s = pl->head; s; s = s->next)
        if (s->sealed && !s->persisted && s->n_open && s->data)
            n += tg_segment_raw_bytes(s->data);
    return n;
}

/* drop_oldest while the journal cannot take what waits (an I/O error, a read-only remount,
 * or a full disk with no journaled row left to drop): the cap cannot bound what waits in
 * memory, so this does, at what the mode promises a crash may cost: the last commit
 * interval's arrivals (durable), journal.memory_bytes (spill). Beyond it the oldest records
 * go, counted as at the cap; the newest are kept. */
static void drop_oldest_unjournaled(struct tg_pipeline *pl)
{
    size_t bound = pl->mode == TG_JOURNAL_DURABLE ? pl->appended_raw : pl->memory_bytes;
    size_t unjournaled = unjournaled_raw(pl);
    size_t dropped = 0;
    for (struct seg *s = pl->head; s && unjournaled > bound;) {
        struct seg *next = s->next;
        if (!s->persisted && s->sealed && s->data && s->n_open > s->n_inflight) {
            unjournaled -= tg_segment_raw_bytes(s->data);
            dropped += pipeline__drop_open_records(pl, s, pl->m.dropped_full);
            if (seg_finished(s))
                pipeline__list_remove(pl, s);
        }
        s = next;
    }
    if (dropped)
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "journal", 10000,
                           "the journal cannot take what waits: dropped the %zu oldest "
                           "readings held in memory (%zu bytes left)",
                           dropped, unjournaled);
}

/* Frees resident data of journaled segments while over memory_bytes: first what the cursor
 * has passed, then the newest (read back when the cursor gets there). */
static void evict(struct tg_pipeline *pl)
{
    for (struct seg *s = pl->head; s && pl->resident_bytes > pl->memory_bytes; s = s->next)
        if (s->persisted && s->data && s->last_rid < pl->cur_rid && s != pl->cur)
            pipeline__drop_data(pl, s);
    for (struct seg *s = pl->tail; s && pl->resident_bytes > pl->memory_bytes; s = s->prev)
        if (s->persisted && s->data && s != pl->cur)
            pipeline__drop_data(pl, s);
}

/* Durable acks: every record below the returned rid is in a journaled segment (or was
 * confirmed or dropped, which the acker learnt one by one). Records of segments not journaled
 * (spill mode, or Kafka confirmed all of them first) are left to Kafka's confirmation. */
static uint64_t durable_limit(const struct tg_pipeline *pl)
{
    for (const struct seg *s = pl->head; s; s = s->next)
        if (!s->persisted)
            return s->first_rid;
    return pl->next_rid;
}

/* One group commit (see the top of the file). final: shutdown, write everything. */
tg_err pipeline__commit(struct tg_pipeline *pl, bool final)
{
    int64_t t0 = mono_ms();
    struct seg *t = pl->tail;
    if (t && !t->sealed && seg_range(t) > 0)
        t->sealed = true;

    /* Records waiting for a missing topic are behind as well: spill mode journals them. */
    bool kafka_behind = !pl->eg || !tg_egress_up(pl->eg) || pl->egress_full ||
                        pl->parked_rid[TG_JREC_TELEMETRY] || pl->parked_rid[TG_JREC_DLQ];
    size_t unjournaled = 0;
    for (struct seg *s = pl->head; s; s = s->next)
        if (s->sealed && !s->persisted && s->n_open)
            unjournaled += tg_segment_raw_bytes(s->data);

    bool changed = false, refused = false, disk_full = false, journal_down = false;
    size_t written = 0;
    tg_err rc = tg_journal_begin(pl->jr);
    for (struct seg *s = pl->head; s && rc == TG_OK; s = s->next) {
        if (!s->sealed || (!s->persisted && s->n_open == 0))
            continue;
        if (!s->persisted) {
            if (!must_write(pl, final, kafka_behind, &unjournaled, s))
                continue;
            bool may_refuse = !final && pl->overflow == TG_OVERFLOW_DROP_NEWEST;
            size_t blob_bytes = 0;
            tg_err wr = refused && may_refuse ? TG_ERR_FULL
                                              : persist_seg(pl, s, may_refuse, written, &blob_bytes);
            if (wr == TG_ERR_FULL && may_refuse) {
                /* drop_newest: what does not fit is dropped, newest first (this segment and
                 * every later one). */
                refused = true;
                pipeline__drop_open_records(pl, s, pl->m.dropped_full);
                continue;
            }
            rc = wr;
            if (rc == TG_OK) {
                s->persisted = true; /* undone below if the commit fails */
                s->tx_new = true;
                s->done_dirty = false;
                written += blob_bytes;
                changed = true;
            }
        } else if (s->done_dirty) {
            rc = s->n_open == 0 ? tg_journal_delete(pl->jr, s->first_rid)
                                : tg_journal_set_done(pl->jr, s->first_rid, s->done,
                                                      bitmap_bytes(seg_range(s)));
            changed = true;
        }
    }
    int64_t now = mono_ms();
    bool state_saved = false;
    if (rc == TG_OK && (tg_dedup_dirty(pl->dd) || pl->force_state_save) &&
        (final || now >= pl->next_dedup_save_ms || pl->force_state_save)) {
        /* The Kafka offsets go with the window, taken at the same instant: every reading
         * Kafka confirmed below them is in this window (pipeline_reconcile.c). */
        pipeline__marks_merge(pl);
        uint8_t *blob;
        size_t len;
        if (tg_dedup_save(pl->dd, &blob, &len) == TG_OK) {
            /* Compressed: ids share prefixes and windows repeat, ~4x smaller (the whole
             * window is rewritten at each save, so this is most of the steady-state
             * bytes the journal writes). Level 1: for a 1 MB snapshot (10,000 devices) its
             * tables take ~0.5 MB less than level 3's, and this runs on a memory peak
             * (snapshot, its compressed copy, SQLite's pages). */
            size_t cap = ZSTD_compressBound(len);
            void *z = malloc(cap);
            size_t zlen = z ? ZSTD_compress(z, cap, blob, len, 1) : 0;
            if (z && !ZSTD_isError(zlen))
                rc = tg_journal_state_put(pl->jr, "dedup.zst", z, zlen);
            else
                rc = tg_journal_state_put(pl->jr, "dedup.zst", "", 0);
            free(z);
            free(blob);
            if (rc == TG_OK)
                rc = pipeline__marks_save(pl);
            state_saved = rc == TG_OK;
            changed = true;
        }
        pl->next_dedup_save_ms = now + pl->dedup_save_interval_ms;
    }
    if (rc == TG_OK)
        rc = changed ? tg_journal_commit(pl->jr) : (tg_journal_rollback(pl->jr), TG_OK);
    else
        tg_journal_rollback(pl->jr);

    if (rc == TG_OK) {
        for (struct seg *s = pl->head; s;) {
            struct seg *next = s->next;
            s->tx_new = false;
            if (s->persisted && s->done_dirty)
                s->done_dirty = false;
            if (seg_finished(s)) /* journaled ones: their row was deleted just now */
                pipeline__list_remove(pl, s);
            s = next;
        }
        atomic_store(&pl->healthy, true);
        if (state_saved) {
            pl->force_state_save = false;
            /* The read-back's marks are on disk: this run may send now. */
            if (pl->reconcile_phase == RECONCILE_APPLIED)
                pl->reconcile_phase = RECONCILE_DONE;
        }
        if (pl->ack)
            tg_acker_durable_below(pl->ack, durable_limit(pl));
        tg_counter_add(pl->m.journal_written, written);
        if (changed) {
            tg_counter_inc(pl->m.commits);
            tg_histogram_observe(pl->m.commit_seconds, (double)(mono_ms() - t0) / 1000.0);
        }
    } else {
        /* Nothing of this transaction is stored: the segments stay in memory, unjournaled,
         * and the next commit tries again. */
        for (struct seg *s = pl->head; s; s = s->next)
            if (s->tx_new)
                s->persisted = s->tx_new = false;
        log_journal_error(pl, final ? "final commit" : "commit", rc);
        disk_full = rc == TG_ERR_FULL;
        journal_down = true;
        atomic_store(&pl->healthy, false);
    }
    /* drop_oldest: at the cap, or with a full disk to make room for what waits (its
     * compressed size estimated from the last segments written). */
    uint64_t need = disk_full ? (uint64_t)(pl->ratio * (double)unjournaled_raw(pl)) + 1 : 0;
    uint64_t freed = apply_drop_oldest(pl, need);
    if (journal_down && pl->overflow == TG_OVERFLOW_DROP_OLDEST && (!disk_full || freed < need))
        drop_oldest_unjournaled(pl);
    /* drop_newest: once a commit has refused readings, the journal stays full until rows are
     * deleted (Kafka confirmed some). Otherwise a later, smaller commit could fit where the
     * refused one did not, and a device's kept readings would have a gap: its newest kept
     * reading must follow its oldest dropped one. */
    uint64_t data_bytes = tg_journal_data_bytes(pl->jr);
    if (refused) {
        pl->refusing = true;
        pl->refused_at_bytes = data_bytes;
    } else if (pl->refusing && data_bytes < pl->refused_at_bytes) {
        pl->refusing = false;
    }
    /* A journal that cannot be written (disk full, EIO, read-only) is full for the policy:
     * otherwise what it cannot keep would pile up in memory without bound. */
    bool full = journal_down || pl->refusing || data_bytes >= pl->max_bytes;
    if (full != pl->full_logged)
        TG_LOG_WARN("journal", full ? "journal full or failing (%llu of %llu bytes): overflow "
                                      "policy %s applies"
                                    : "journal below its cap again (%llu of %llu bytes, %s)",
                    (unsigned long long)tg_journal_data_bytes(pl->jr),
                    (unsigned long long)pl->max_bytes,
                    tg_config_get_str(pl->cfg, "journal", "overflow"));
    atomic_store(&pl->full, full);
    pl->full_logged = full;
    pl->appended_raw = 0;
    evict(pl);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * start-up: what the journal holds
 */

/* The recovery scan's state: the pipeline, and for the journaled readings' pass a canonical
 * decoder (NULL: no pass, as when it could not be made) and the time it judges them at. */
struct recovery {
    struct tg_pipeline *pl;
    struct tg_canonical_decoder *cd;
    int64_t now;
};

/* One stored row: its segment rebuilt from the metadata and done bitmap, and, when it has
 * open records, its data taken from what the scan read (data), so that the journaled
 * readings are learned without reading the file again. */
static tg_err recover_seg(void *ud, const struct tg_jseg_meta *meta, const uint8_t *done,
                          size_t done_len, const uint8_t *data, size_t data_len)
{
    struct recovery *rv = ud;
    struct tg_pipeline *pl = rv->pl;
    struct seg *s = calloc(1, sizeof *s);
    if (!s)
        return TG_ERR_NOMEM;
    s->first_rid = meta->first_rid;
    s->last_rid = meta->last_rid;
    s->created_ms = meta->created_ms;
    s->codec = meta->codec;
    s->stored_raw_bytes = meta->raw_bytes;
    s->stored_bytes = meta->data_bytes;
    s->sealed = s->persisted = true;
    size_t range = seg_range(s);
    if (pipeline__seg_reserve_bits(s, range ? range : 1) != TG_OK) {
        pipeline__seg_free(s);
        return TG_ERR_NOMEM;
    }
    pipeline__list_append(pl, s);
    if (done) {
        memcpy(s->done, done, done_len < bitmap_bytes(range) ? done_len : bitmap_bytes(range));
    } else {
        /* No bitmap: every rid not stored in the row is done. */
        memset(s->done, 0xff, bitmap_bytes(range));
        /* rids checked to lie in the row's range */
        tg_err lr = pipeline__load_seg_blob(pl, s, data, data_len);
        if (lr == TG_OK) {
            for (size_t i = 0; i < tg_segment_count(s->data); i++) {
                struct tg_jrecord rec;
                tg_segment_get(s->data, i, &rec);
                bit_clear(s->done, (size_t)(rec.rid - s->first_rid));
            }
        } else if (lr == TG_ERR_NOMEM) {
            return lr;
        } else { /* a corrupt row: its records are lost, counted, and the rest goes on */
            TG_LOG_ERROR("journal", "segment %llu cannot be read back (%s): %u records dropped",
                         (unsigned long long)s->first_rid, tg_strerror(lr), meta->n_records);
            tg_counter_add(pl->m.dropped_corrupt, meta->n_records);
        }
    }
    for (size_t i = 0; i < range; i++)
        if (!bit_get(s->done, i))
            s->n_open++;
    pl->open_records += s->n_open;
    if (s->n_open == 0)
        s->done_dirty = true; /* deleted at the first commit */
    if (s->n_open > 0 && rv->cd) {
        tg_err lr = s->data ? TG_OK : pipeline__load_seg_blob(pl, s, data, data_len);
        if (lr == TG_ERR_NOMEM)
            return lr;
        if (lr == TG_OK) /* else it is read again when produced: a possible duplicate */
            pipeline__journal_readings_seg(pl, s, rv->cd, rv->now);
    }
    /* A backlog can be far larger than memory (journal.max_bytes against
     * journal.memory_bytes): past the bound the data goes again, and is read again when its
     * turn to be sent comes. */
    if (s->data && pl->resident_bytes > pl->memory_bytes)
        pipeline__drop_data(pl, s);
    if (meta->last_rid + 1 > pl->next_rid)
        pl->next_rid = meta->last_rid + 1;
    return TG_OK;
}

tg_err pipeline__recover(struct tg_pipeline *pl, char *err, size_t errlen)
{
    /* The saved dedup window first: the journaled readings are learned on top of it. */
    void *blob = NULL;
    size_t len = 0;
    if (tg_journal_state_get(pl->jr, "dedup.zst", &blob, &len) == TG_OK) {
        unsigned long long raw = ZSTD_getFrameContentSize(blob, len);
        void *plain = raw < (1ull << 31) ? malloc(raw ? raw : 1) : NULL;
        size_t got = plain ? ZSTD_decompress(plain, raw, blob, len) : 0;
        tg_err lr = plain && !ZSTD_isError(got) ? tg_dedup_load(pl->dd, plain, got)
                                                : TG_ERR_INTERNAL;
        free(plain);
        if (lr != TG_OK)
            TG_LOG_WARN("pipeline", "the saved dedup window is unreadable: starting afresh "
                                    "(a redelivered reading may pass once)");
        free(blob);
    }
    pipeline__journal_readings_begin(pl);
    struct recovery rv = {pl, tg_canonical_decoder_new(NULL), wall_ms()};
    tg_err rc = tg_journal_scan(pl->jr, recover_seg, &rv);
    tg_canonical_decoder_destroy(rv.cd);
    if (rc != TG_OK) {
        snprintf(err, errlen, "%s: cannot read the journal: %s (%s)",
                 tg_config_get_str(pl->cfg, "journal", "path"), tg_strerror(rc),
                 tg_journal_errmsg(pl->jr));
        return rc;
    }
    pl->cur = pl->head;
    pl->cur_rid = pl->head ? pl->head->first_rid : pl->next_rid;
    if (pl->head)
        TG_LOG_INFO("journal", "%zu undelivered records in %llu segments, oldest received %lld s "
                               "ago: sending them first",
                    pl->open_records, (unsigned long long)tg_journal_segments(pl->jr),
                    (long long)((wall_ms() - pl->head->created_ms) / 1000));
    return TG_OK;
}
