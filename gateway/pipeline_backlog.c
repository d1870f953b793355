/*
 * pipeline_backlog.c - the record store: segments, their bitmaps, the produce cursor and
 * the delivery reports (see pipeline_internal.h for how the pipeline's files divide).
 *
 * Every record (telemetry or dead letter) gets a rid, one more than the previous, and lives
 * in a segment: the open segment takes new records; it is sealed at each commit or when full.
 * Segments form one list in rid order. Per segment two bitmaps over its rid range say which
 * records are done (confirmed by Kafka, dead-lettered onward, dropped, or never stored in
 * this copy) and which are in flight (handed to librdkafka, outcome pending). A segment's
 * data is resident (a struct tg_segment) or, once journaled, may be evicted and read back
 * when the produce cursor reaches it.
 *
 * The produce cursor walks the list in rid order and hands each record that is neither done
 * nor in flight to librdkafka, until librdkafka's bounded queue is full. So the FIFO is global:
 * live records queue behind a backlog instead of overtaking it, which is what keeps each
 * device's order through an outage, its drain and a restart; ingestion goes on meanwhile (the
 * loop interleaves taking messages and producing), so neither starves the other. A retriable
 * failure (librdkafka destroyed or fenced) moves the cursor back to the failed record.
 */
#include "pipeline_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Makes room for `bits` bits in both bitmaps (new bits clear). */
tg_err pipeline__seg_reserve_bits(struct seg *s, size_t bits)
{
    if (bits <= s->bits_cap)
        return TG_OK;
    size_t cap = s->bits_cap ? s->bits_cap : 1024;
    while (cap < bits)
        cap *= 2;
    uint8_t *d = realloc(s->done, bitmap_bytes(cap));
    if (!d)
        return TG_ERR_NOMEM;
    s->done = d;
    uint8_t *f = realloc(s->inflight, bitmap_bytes(cap));
    if (!f)
        return TG_ERR_NOMEM;
    s->inflight = f;
    size_t old = bitmap_bytes(s->bits_cap);
    memset(d + old, 0, bitmap_bytes(cap) - old);
    memset(f + old, 0, bitmap_bytes(cap) - old);
    s->bits_cap = cap;
    return TG_OK;
}

void pipeline__seg_free(struct seg *s)
{
    if (!s)
        return;
    tg_segment_destroy(s->data);
    free(s->done);
    free(s->inflight);
    free(s);
}

/* ------------------------------------------------------------------------------------------
 * the segment list
 */

void pipeline__list_append(struct tg_pipeline *pl, struct seg *s)
{
    s->prev = pl->tail;
    s->next = NULL;
    if (pl->tail)
        pl->tail->next = s;
    else
        pl->head = s;
    pl->tail = s;
}

void pipeline__drop_data(struct tg_pipeline *pl, struct seg *s)
{
    if (!s->data)
        return;
    pl->resident_bytes -= tg_segment_raw_bytes(s->data);
    tg_segment_destroy(s->data);
    s->data = NULL;
}

void pipeline__list_remove(struct tg_pipeline *pl, struct seg *s)
{
    if (pl->cur == s) {
        pl->cur = s->next;
        pl->cur_rid = s->next ? s->next->first_rid : pl->next_rid;
    }
    if (pl->find_hint == s)
        pl->find_hint = NULL;
    if (s->prev)
        s->prev->next = s->next;
    else
        pl->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        pl->tail = s->prev;
    pipeline__drop_data(pl, s);
    pipeline__seg_free(s);
}

/* The segment whose range holds rid, or NULL. Deliveries come back nearly in produce order,
 * so the hint (the last segment found) or its successor is almost always the answer. */
struct seg *pipeline__find_seg(struct tg_pipeline *pl, uint64_t rid)
{
    struct seg *h = pl->find_hint;
    for (int i = 0; h && i < 2; i++, h = h->next)
        if (rid >= h->first_rid && rid <= h->last_rid)
            return pl->find_hint = h;
    for (struct seg *s = pl->head; s; s = s->next)
        if (rid >= s->first_rid && rid <= s->last_rid)
            return pl->find_hint = s;
    return NULL;
}

/* The open segment, creating it when needed. */
static struct seg *open_seg(struct tg_pipeline *pl, int64_t rx_ms)
{
    struct seg *t = pl->tail;
    if (t && !t->sealed)
        return t;
    struct seg *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->data = tg_segment_new(pl->segment_bytes);
    if (!s->data || pipeline__seg_reserve_bits(s, 1) != TG_OK) {
        pipeline__seg_free(s);
        return NULL;
    }
    s->first_rid = pl->next_rid;
    s->last_rid = pl->next_rid - 1;
    s->created_ms = rx_ms;
    pipeline__list_append(pl, s);
    if (!pl->cur) {
        pl->cur = s;
        pl->cur_rid = s->first_rid;
    }
    return s;
}

void pipeline__update_oldest(struct tg_pipeline *pl)
{
    int64_t oldest = 0;
    for (struct seg *s = pl->head; s; s = s->next)
        if (s->n_open) {
            oldest = s->created_ms;
            break;
        }
    atomic_store_explicit(&pl->oldest_rx_ms, oldest, memory_order_relaxed);
}

/* Sets bit i of s's done bitmap (it was clear) and keeps the counts in step. */
void pipeline__set_done_bit(struct tg_pipeline *pl, struct seg *s, size_t i)
{
    bit_set(s->done, i);
    s->n_open--;
    pl->open_records--;
    if (s->persisted)
        s->done_dirty = true;
}

/* Marks rid done (delivered, dead-lettered onward or dropped). A segment nobody needs any
 * more goes at once if it was never journaled; a journaled one is deleted at the commit. */
void pipeline__mark_done(struct tg_pipeline *pl, struct seg *s, uint64_t rid)
{
    size_t i = (size_t)(rid - s->first_rid);
    if (bit_get(s->done, i))
        return;
    pipeline__set_done_bit(pl, s, i);
    if (s->persisted || s->n_open || s->n_inflight)
        return;
    /* A fully confirmed open segment is sealed early once it is big, so that at steady state
     * memory holds about one linger's worth of records, not a commit interval's. */
    if (!s->sealed && tg_segment_raw_bytes(s->data) >= EARLY_SEAL_BYTES)
        s->sealed = true;
    if (seg_finished(s))
        pipeline__list_remove(pl, s);
}
/* ------------------------------------------------------------------------------------------
 * taking records in
 */

/* Appends one record to the open segment (sealing it when full). Returns its rid, or 0 when
 * out of memory (the record is then counted dropped: nothing else can be done with it). */
uint64_t pipeline__append_record(struct tg_pipeline *pl, struct tg_jrecord *rec)
{
    struct seg *s = open_seg(pl, rec->rx_ms);
    if (!s)
        goto nomem;
    rec->rid = pl->next_rid;
    size_t before = tg_segment_raw_bytes(s->data);
    tg_err rc = tg_segment_append(s->data, rec);
    if (rc == TG_ERR_FULL) {
        s->sealed = true;
        if (!(s = open_seg(pl, rec->rx_ms)))
            goto nomem;
        before = 0;
        rc = tg_segment_append(s->data, rec);
    }
    if (rc != TG_OK || pipeline__seg_reserve_bits(s, seg_range(s) + 1) != TG_OK)
        goto nomem;
    pl->resident_bytes += tg_segment_raw_bytes(s->data) - before;
    pl->appended_raw += tg_segment_raw_bytes(s->data) - before;
    s->last_rid = pl->next_rid++;
    s->n_open++;
    pl->open_records++;
    /* While Kafka keeps up, a segment is sealed once it holds EARLY_SEAL_BYTES, so that it
     * is freed as soon as Kafka has confirmed its records: memory then holds about a linger's
     * worth of records, not a commit interval's (2-3 MB at 10,000 msg/s). While Kafka is down
     * or behind, segments grow to journal.segment_bytes, which compress better on disk. */
    if (tg_segment_raw_bytes(s->data) >= EARLY_SEAL_BYTES && pl->eg && tg_egress_up(pl->eg) &&
        !pl->egress_full)
        s->sealed = true;
    /* Whatever Kafka's state, a segment stays a small part of the cap (SEGMENTS_PER_CAP):
     * the overflow policies work in whole segments. */
    if ((double)tg_segment_raw_bytes(s->data) * pl->ratio >= pl->seal_stored_bytes)
        s->sealed = true;
    return rec->rid;
nomem:
    TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "pipeline", 10000,
                       "out of memory: dropping a record of device %.*s", (int)rec->key_len,
                       (const char *)rec->key);
    tg_counter_inc(pl->m.dropped_full);
    return 0;
}
/* ------------------------------------------------------------------------------------------
 * producing
 */

/* Reads a journaled segment's records back. On a corrupt row the records are counted
 * dropped: nothing else can be done with them, and the rest of the journal is unaffected. */
tg_err pipeline__load_seg(struct tg_pipeline *pl, struct seg *s)
{
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    tg_err rc = tg_journal_read(pl->jr, s->first_rid, &blob, &blob_len);
    if (rc == TG_OK)
        rc = pipeline__load_seg_blob(pl, s, blob, blob_len);
    free(blob);
    return rc;
}

tg_err pipeline__load_seg_blob(struct tg_pipeline *pl, struct seg *s, const uint8_t *blob,
                               size_t blob_len)
{
    struct tg_segment *data = tg_segment_new(pl->segment_bytes);
    if (!data)
        return TG_ERR_NOMEM;
    tg_err rc = tg_segment_load(data, s->codec, blob, blob_len, s->stored_raw_bytes,
                                s->first_rid, s->last_rid);
    if (rc != TG_OK) {
        tg_segment_destroy(data);
        return rc;
    }
    s->data = data;
    s->produce_idx = 0;
    pl->resident_bytes += tg_segment_raw_bytes(data);
    return TG_OK;
}

/* Index of the first resident record with rid >= rid. */
static size_t lower_bound(const struct tg_segment *data, uint64_t rid)
{
    size_t lo = 0, hi = tg_segment_count(data);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct tg_jrecord rec;
        tg_segment_get(data, mid, &rec);
        if (rec.rid < rid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Drops the records of s that are neither done nor in flight, counting them in dropped.
 * s stays in the list (the caller decides when a finished segment goes). */
size_t pipeline__drop_open_records(struct tg_pipeline *pl, struct seg *s,
                                   struct tg_counter *dropped)
{
    size_t n = 0;
    for (size_t i = 0, range = seg_range(s); i < range && s->n_open > s->n_inflight; i++) {
        if (bit_get(s->done, i) || bit_get(s->inflight, i))
            continue;
        pipeline__set_done_bit(pl, s, i);
        if (pl->ack)
            tg_acker_lost(pl->ack, s->first_rid + i);
        n++;
    }
    tg_counter_add(dropped, n);
    return n;
}

/* Records of s that are neither done nor in flight are dropped as corrupt (unreadable row). */
static void drop_unreadable(struct tg_pipeline *pl, struct seg *s, tg_err why)
{
    TG_LOG_ERROR("journal", "segment %llu (rids %llu..%llu) cannot be read back (%s): %zu "
                 "records dropped",
                 (unsigned long long)s->first_rid, (unsigned long long)s->first_rid,
                 (unsigned long long)s->last_rid, tg_strerror(why), s->n_open - s->n_inflight);
    pipeline__drop_open_records(pl, s, pl->m.dropped_corrupt);
    if (seg_finished(s) && !s->persisted)
        pipeline__list_remove(pl, s);
}

/* A record librdkafka will never take (or the cluster refused): queued for the DLQ. */
static void queue_reject(struct tg_pipeline *pl, struct seg *s, uint64_t rid, tg_err err)
{
    if (pl->n_rejects == pl->cap_rejects) {
        size_t cap = pl->cap_rejects ? pl->cap_rejects * 2 : 16;
        struct reject *r = realloc(pl->rejects, cap * sizeof *r);
        if (!r) {
            tg_counter_inc(pl->m.dropped_rejected);
            if (pl->ack)
                tg_acker_lost(pl->ack, rid);
            pipeline__mark_done(pl, s, rid);
            return;
        }
        pl->rejects = r;
        pl->cap_rejects = cap;
    }
    /* Held as in flight until turned into a dead letter, so the cursor skips it. */
    size_t i = (size_t)(rid - s->first_rid);
    bit_set(s->inflight, i);
    s->n_inflight++;
    pl->rejects[pl->n_rejects++] = (struct reject){rid, err};
}

/* Moves the cursor back to rid (a retriable failure): it is produced again, in order. */
static void rewind_to(struct tg_pipeline *pl, struct seg *s, uint64_t rid)
{
    if (!pl->cur || rid < pl->cur_rid) {
        pl->cur = s;
        pl->cur_rid = rid;
        s->produce_idx = SIZE_MAX;
    }
}

/* Remembers that the cursor passed over rid (left open) because its topic is unusable. */
static void park(struct tg_pipeline *pl, enum tg_jrecord_kind kind, uint64_t rid)
{
    int k = kind == TG_JREC_DLQ; /* a kind read back from disk is not trusted as an index */
    if (!pl->parked_rid[k] || rid < pl->parked_rid[k])
        pl->parked_rid[k] = rid;
}

/* Takes the producer's word on a topic's state: logs and publishes a change. */
static void set_topic_state(struct tg_pipeline *pl, int k, int err)
{
    if (err == pl->topic_err[k])
        return;
    const char *topic = k == TG_JREC_DLQ ? pl->egress_opts.dlq_topic : pl->egress_opts.topic;
    if (err)
        TG_LOG_ERROR("kafka", "topic %s cannot take records (%s): its %s wait in the journal "
                              "until it exists and is writable; the %s topic goes on",
                     topic, tg_egress_error_name(err),
                     k == TG_JREC_DLQ ? "dead letters" : "readings",
                     k == TG_JREC_DLQ ? "telemetry" : "dead-letter");
    else
        TG_LOG_INFO("kafka", "topic %s takes records again: sending what waited for it", topic);
    pl->topic_err[k] = err;
    atomic_store(&pl->topic_err_shared[k], err);
    tg_gauge_set(pl->m.topic_available[k], err ? 0 : 1);
}

void pipeline__check_topics(struct tg_pipeline *pl)
{
    for (int k = 0; k < 2 && pl->eg; k++) {
        set_topic_state(pl, k, tg_egress_topic_error(pl->eg, (enum tg_jrecord_kind)k));
        /* Also when the error came and went between two looks (a delivery parked a record
         * on it): whatever was passed over goes again. */
        uint64_t rid = pl->parked_rid[k];
        if (pl->topic_err[k] || !rid)
            continue;
        pl->parked_rid[k] = 0;
        struct seg *s = pipeline__find_seg(pl, rid);
        if (!s) /* its segment went (dropped by the overflow policy): start over */
            for (s = pl->head; s && s->last_rid < rid; s = s->next)
                ;
        if (s)
            rewind_to(pl, s, rid < s->first_rid ? s->first_rid : rid);
    }
}

/* Hands records to librdkafka from the cursor on, up to budget. Returns how many. */
int pipeline__produce_step(struct tg_pipeline *pl, int budget)
{
    int n = 0;
    while (n < budget && pl->eg && !pl->egress_full && pl->cur) {
        struct seg *s = pl->cur;
        if (pl->cur_rid > s->last_rid || s->n_open == s->n_inflight) {
            if (!s->sealed) {
                if (pl->cur_rid <= s->last_rid)
                    pl->cur_rid = s->last_rid + 1;
                break; /* the open segment: wait for more */
            }
            if (!s->next) {
                pl->cur_rid = s->last_rid + 1;
                break;
            }
            pl->cur = s->next;
            pl->cur_rid = s->next->first_rid;
            continue;
        }
        if (!s->data) {
            tg_err rc = pipeline__load_seg(pl, s);
            if (rc != TG_OK) {
                if (tg_err_retriable(rc) && rc != TG_ERR_IO)
                    break; /* memory: try again later */
                pl->cur_rid = s->last_rid + 1;
                drop_unreadable(pl, s, rc);
                continue;
            }
            s->produce_idx = SIZE_MAX;
        }
        size_t cnt = tg_segment_count(s->data);
        size_t idx = s->produce_idx;
        struct tg_jrecord rec;
        if (idx >= cnt || (tg_segment_get(s->data, idx, &rec), rec.rid != pl->cur_rid))
            idx = lower_bound(s->data, pl->cur_rid);
        for (; idx < cnt && n < budget; idx++) {
            tg_segment_get(s->data, idx, &rec);
            size_t bi = (size_t)(rec.rid - s->first_rid);
            if (!bit_get(s->done, bi) && !bit_get(s->inflight, bi)) {
                int k = rec.kind == TG_JREC_DLQ;
                tg_err rc = pl->topic_err[k] ? TG_ERR_UNAVAILABLE
                                             : tg_egress_produce(pl->eg, &rec);
                int terr = rc != TG_OK && rc != TG_ERR_FULL && tg_err_retriable(rc)
                               ? tg_egress_topic_error(pl->eg, rec.kind)
                               : 0;
                if (pl->topic_err[k] || terr) {
                    /* Its topic is missing or refused: pass it over, the other topic's
                     * records behind it go on. (No rewind here: the cursor is ours.) */
                    if (terr)
                        set_topic_state(pl, k, terr);
                    park(pl, rec.kind, rec.rid);
                } else if (rc == TG_ERR_FULL || (rc != TG_OK && tg_err_retriable(rc))) {
                    pl->egress_full = true;
                    break;
                } else if (rc == TG_OK) {
                    bit_set(s->inflight, bi);
                    s->n_inflight++;
                    n++;
                } else {
                    queue_reject(pl, s, rec.rid, rc);
                }
            }
            pl->cur_rid = rec.rid + 1;
        }
        s->produce_idx = idx;
        if (idx >= cnt && !pl->egress_full && pl->cur_rid <= s->last_rid)
            pl->cur_rid = s->last_rid + 1;
        if (!s->sealed)
            break;
    }
    return n;
}

void pipeline__on_delivery(void *ud, uint64_t rid, enum tg_jrecord_kind kind, int64_t ts_ms,
                           tg_err result, const char *reason)
{
    struct tg_pipeline *pl = ud;
    pl->egress_full = false;
    struct seg *s = pipeline__find_seg(pl, rid);
    if (!s) {
        TG_LOG_ERROR("pipeline", "delivery report for unknown record %llu",
                     (unsigned long long)rid);
        return;
    }
    size_t i = (size_t)(rid - s->first_rid);
    if (bit_get(s->inflight, i)) {
        bit_clear(s->inflight, i);
        s->n_inflight--;
    }
    if (result == TG_OK) {
        if (kind == TG_JREC_TELEMETRY) {
            tg_counter_inc(pl->m.delivered);
            tg_histogram_observe(pl->m.e2e, (double)(pl->reports_ms - ts_ms) / 1000.0);
        } else {
            tg_counter_inc(pl->m.dlq_delivered);
        }
        if (pl->ack)
            tg_acker_confirmed(pl->ack, rid);
        pipeline__mark_done(pl, s, rid);
    } else if (tg_err_retriable(result) && pl->eg && tg_egress_topic_error(pl->eg, kind)) {
        park(pl, kind, rid); /* sent again once its topic is usable (check_topics) */
    } else if (tg_err_retriable(result)) {
        rewind_to(pl, s, rid);
    } else if (kind == TG_JREC_TELEMETRY) {
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "kafka", 10000,
                           "Kafka refused record %llu for good (%s): dead-lettering it",
                           (unsigned long long)rid, reason ? reason : tg_strerror(result));
        queue_reject(pl, s, rid, result);
    } else {
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "kafka", 10000,
                           "Kafka refused dead letter %llu for good (%s): dropped",
                           (unsigned long long)rid, reason ? reason : tg_strerror(result));
        tg_counter_inc(pl->m.dropped_rejected);
        if (pl->ack)
            tg_acker_lost(pl->ack, rid);
        pipeline__mark_done(pl, s, rid);
    }
}

/* Turns telemetry records Kafka refused into dead letters (their canonical value, reason
 * "kafka_rejected"-style code), then forgets the originals. */
void pipeline__handle_rejects(struct tg_pipeline *pl)
{
    for (size_t k = 0; k < pl->n_rejects; k++) {
        struct reject r = pl->rejects[k];
        struct seg *s = pipeline__find_seg(pl, r.rid);
        if (!s)
            continue;
        size_t i = (size_t)(r.rid - s->first_rid);
        bit_clear(s->inflight, i);
        s->n_inflight--;
        if (!s->data && pipeline__load_seg(pl, s) != TG_OK) {
            tg_counter_inc(pl->m.dropped_rejected);
            if (pl->ack)
                tg_acker_lost(pl->ack, r.rid);
            pipeline__mark_done(pl, s, r.rid);
            continue;
        }
        long idx = tg_segment_find(s->data, r.rid);
        if (idx >= 0) {
            struct tg_jrecord rec;
            tg_segment_get(s->data, (size_t)idx, &rec);
            /* Copies: the dead letter may land in this very segment, whose buffer may move. */
            char device[TG_DEVICE_ID_MAX + 1];
            size_t dl = rec.key_len < TG_DEVICE_ID_MAX ? rec.key_len : TG_DEVICE_ID_MAX;
            memcpy(device, rec.key, dl);
            device[dl] = '\0';
            uint8_t *value = malloc(rec.value_len ? rec.value_len : 1);
            if (value) {
                memcpy(value, rec.value, rec.value_len);
                char text[160];
                snprintf(text, sizeof text, "Kafka refused the canonical record: %s",
                         tg_strerror(r.err));
                pipeline__dead_letter(pl, "", 0, device, value, rec.value_len, rec.rx_ms, r.err,
                                      text);
                free(value);
            } else {
                tg_counter_inc(pl->m.dropped_rejected);
                if (pl->ack)
                    tg_acker_lost(pl->ack, r.rid);
            }
        }
        pipeline__mark_done(pl, s, r.rid);
    }
    pl->n_rejects = 0;
}
