/*
 * pipeline.c - decode, validate, dedup, journal and ship, on one thread (see pipeline.h).
 *
 * The record store. Every record (telemetry or dead letter) gets a rid, one more than the
 * previous, and lives in a segment: the open segment takes new records; it is sealed at each
 * commit or when full. Segments form one list in rid order. Per segment two bitmaps over its
 * rid range say which records are done (confirmed by Kafka, dead-lettered onward, dropped, or
 * never stored in this copy) and which are in flight (handed to librdkafka, outcome pending).
 * A segment's data is resident (a struct tg_segment) or, once journaled, may be evicted and
 * read back when the produce cursor reaches it.
 *
 * The produce cursor walks the list in rid order and hands each record that is neither done
 * nor in flight to librdkafka, until librdkafka's bounded queue is full. So the FIFO is global:
 * live records queue behind a backlog instead of overtaking it, which is what keeps each
 * device's order through an outage, its drain and a restart; ingestion goes on meanwhile (the
 * loop interleaves taking messages and producing), so neither starves the other. A retriable
 * failure (librdkafka destroyed or fenced) moves the cursor back to the failed record.
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
 * commit; see apply_overflow().
 */
#include "pipeline.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "codec.h"
#include "codec_canonical.h"
#include "dedup.h"
#include "egress_kafka.h"
#include "gateway_config.h"
#include "journal.h"
#include "gateway_limits.h"
#include "log.h"
#include "queue.h"
#include "segment.h"
#include "validate.h"

/* Dead letters keep at most this much of an oversized payload (Kafka's default message size
 * limit is 1 MB; the DLQ is for diagnosis). */
#define DLQ_PAYLOAD_MAX TG_DLQ_PAYLOAD_MAX /* gateway_limits.h */
/* Work done per loop turn before looking at the other side. */
#define TAKE_BATCH 256
#define PRODUCE_BATCH 2048
/* While Kafka keeps up, the open segment is sealed at this size, to be freed once confirmed
 * (and a fully confirmed one too, whatever Kafka's state). */
#define EARLY_SEAL_BYTES (32 * 1024)
/* Longest sleep, so that stats and a full librdkafka queue are looked at regularly. */
#define MAX_SLEEP_MS 100

struct seg {
    struct seg *prev, *next;
    uint64_t first_rid, last_rid; /* range; last_rid < first_rid while the open segment is empty */
    struct tg_segment *data;      /* resident records, or NULL (read back from the journal) */
    uint8_t *done;                /* bit per rid of the range */
    uint8_t *inflight;            /* bit per rid of the range */
    size_t bits_cap;              /* bits allocated in both bitmaps */
    size_t n_open;                /* rids of the range neither done */
    size_t n_inflight;
    size_t produce_idx;           /* resident data: index of the next record to look at */
    int64_t created_ms;           /* receive time of the first record */
    enum tg_codec_id codec;       /* journal row: codec and serialized size, to read it back */
    uint32_t stored_raw_bytes;
    uint32_t stored_bytes;        /* compressed size of the row */
    bool sealed;
    bool persisted;               /* a journal row exists */
    bool done_dirty;              /* done bits changed since the row was written */
    bool tx_new;                  /* row written by the transaction in progress */
};

struct reject {
    uint64_t rid;
    tg_err err;
};

struct pipeline_metrics {
    struct tg_counter *received, *delivered, *duplicate, *dlq_delivered;
    struct tg_counter *out_of_window, *new_epochs; /* dedup verdicts besides duplicate */
    struct tg_counter *dropped_full, *dropped_rejected, *dropped_corrupt;
    struct tg_counter *invalid[TG_ERR__COUNT];
    struct tg_gauge *records, *bytes, *kafka_up, *segments;
    struct tg_histogram *e2e, *commit_seconds;
    struct tg_counter *commits, *journal_written;
};

struct tg_pipeline {
    /* configuration */
    const struct tg_config *cfg;
    char gateway_id[256];
    int kafka_format;
    int mode;
    int overflow;
    uint64_t max_bytes;
    int64_t commit_interval_ms;
    enum tg_codec_id codec;
    int zstd_level;
    size_t segment_bytes;
    size_t memory_bytes;
    int64_t dedup_save_interval_ms;
    size_t max_payload_bytes;
    struct tg_egress_opts egress_opts;
    const char **rdkafka_conf;
    size_t rdkafka_conf_n;

    /* parts */
    struct tg_queue *q;
    struct tg_decoder *dec;
    struct tg_validate *val;
    struct tg_dedup *dd;
    struct tg_journal *jr;
    struct tg_egress *eg;
    struct tg_metrics *metrics;
    struct pipeline_metrics m;

    /* record store */
    struct seg *head, *tail;      /* tail is the open segment, or NULL */
    struct seg *find_hint;
    struct seg *cur;              /* produce cursor: segment ... */
    uint64_t cur_rid;             /* ... and the next rid to consider */
    uint64_t next_rid;
    size_t open_records;          /* records not done, all segments */
    size_t resident_bytes;        /* raw bytes of resident data */
    size_t appended_raw;          /* raw bytes appended since the last commit */
    double ratio;                 /* compressed / raw bytes of the last segments written */
    bool egress_full;             /* librdkafka's queue said full; cleared by a delivery */
    struct reject *rejects;
    size_t n_rejects, cap_rejects;

    /* scratch */
    uint8_t *enc;
    size_t enc_cap;
    bool *fresh;

    /* state shared with other threads */
    atomic_bool full;             /* journal at its cap (or disk full) */
    bool full_logged;             /* the state last logged */
    bool refusing;                /* drop_newest refused readings; full until rows go */
    uint64_t refused_at_bytes;    /* journal data bytes when it last refused */
    atomic_bool healthy;
    atomic_bool stop;
    atomic_bool reload;
    atomic_llong oldest_rx_ms;    /* receive time of the oldest open record; 0: none */
    int64_t reports_ms;           /* wall clock when the delivery reports being served came */
    pthread_t thread;
    bool started, joined;
    tg_err exit_status;
    int64_t shutdown_timeout_ms;
    int64_t wake_coalesce_ms;     /* after a wake-up by a message, let more arrive this long */

    int64_t next_commit_ms;
    int64_t next_dedup_save_ms;
};

/* ------------------------------------------------------------------------------------------
 * small helpers
 */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool bit_get(const uint8_t *bm, size_t i) { return bm[i >> 3] & (1u << (i & 7)); }
static void bit_set(uint8_t *bm, size_t i) { bm[i >> 3] |= (uint8_t)(1u << (i & 7)); }
static void bit_clear(uint8_t *bm, size_t i) { bm[i >> 3] &= (uint8_t)~(1u << (i & 7)); }

static size_t seg_range(const struct seg *s)
{
    return s->last_rid >= s->first_rid ? (size_t)(s->last_rid - s->first_rid + 1) : 0;
}

static size_t bitmap_bytes(size_t bits) { return (bits + 7) / 8; }

/* Makes room for `bits` bits in both bitmaps (new bits clear). */
static tg_err seg_reserve_bits(struct seg *s, size_t bits)
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

static void seg_free(struct seg *s)
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

static void list_append(struct tg_pipeline *pl, struct seg *s)
{
    s->prev = pl->tail;
    s->next = NULL;
    if (pl->tail)
        pl->tail->next = s;
    else
        pl->head = s;
    pl->tail = s;
}

static void drop_data(struct tg_pipeline *pl, struct seg *s)
{
    if (!s->data)
        return;
    pl->resident_bytes -= tg_segment_raw_bytes(s->data);
    tg_segment_destroy(s->data);
    s->data = NULL;
}

static void list_remove(struct tg_pipeline *pl, struct seg *s)
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
    drop_data(pl, s);
    seg_free(s);
}

/* The segment whose range holds rid, or NULL. Deliveries come back nearly in produce order,
 * so the hint (the last segment found) or its successor is almost always the answer. */
static struct seg *find_seg(struct tg_pipeline *pl, uint64_t rid)
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
    if (!s->data || seg_reserve_bits(s, 1) != TG_OK) {
        seg_free(s);
        return NULL;
    }
    s->first_rid = pl->next_rid;
    s->last_rid = pl->next_rid - 1;
    s->created_ms = rx_ms;
    list_append(pl, s);
    if (!pl->cur) {
        pl->cur = s;
        pl->cur_rid = s->first_rid;
    }
    return s;
}

static void update_oldest(struct tg_pipeline *pl)
{
    int64_t oldest = 0;
    for (struct seg *s = pl->head; s; s = s->next)
        if (s->n_open) {
            oldest = s->created_ms;
            break;
        }
    atomic_store_explicit(&pl->oldest_rx_ms, oldest, memory_order_relaxed);
}

/* True once nothing in s is waiting: every record done, none in flight. A finished segment
 * leaves the list: at once if it was never journaled, after its row's delete otherwise. */
static bool seg_finished(const struct seg *s)
{
    return s->sealed && s->n_open == 0 && s->n_inflight == 0;
}

/* Sets bit i of s's done bitmap (it was clear) and keeps the counts in step. */
static void set_done_bit(struct tg_pipeline *pl, struct seg *s, size_t i)
{
    bit_set(s->done, i);
    s->n_open--;
    pl->open_records--;
    if (s->persisted)
        s->done_dirty = true;
}

/* Marks rid done (delivered, dead-lettered onward or dropped). A segment nobody needs any
 * more goes at once if it was never journaled; a journaled one is deleted at the commit. */
static void mark_done(struct tg_pipeline *pl, struct seg *s, uint64_t rid)
{
    size_t i = (size_t)(rid - s->first_rid);
    if (bit_get(s->done, i))
        return;
    set_done_bit(pl, s, i);
    if (s->persisted || s->n_open || s->n_inflight)
        return;
    /* A fully confirmed open segment is sealed early once it is big, so that at steady state
     * memory holds about one linger's worth of records, not a commit interval's. */
    if (!s->sealed && tg_segment_raw_bytes(s->data) >= EARLY_SEAL_BYTES)
        s->sealed = true;
    if (seg_finished(s))
        list_remove(pl, s);
}

/* ------------------------------------------------------------------------------------------
 * taking records in
 */

/* Appends one record to the open segment (sealing it when full). Returns its rid, or 0 when
 * out of memory (the record is then counted dropped: nothing else can be done with it). */
static uint64_t append_record(struct tg_pipeline *pl, struct tg_jrecord *rec)
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
    if (rc != TG_OK || seg_reserve_bits(s, seg_range(s) + 1) != TG_OK)
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
    return rec->rid;
nomem:
    TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "pipeline", 10000,
                       "out of memory: dropping a record of device %.*s", (int)rec->key_len,
                       (const char *)rec->key);
    tg_counter_inc(pl->m.dropped_full);
    return 0;
}

/* While the journal is full under drop_newest, new records are dropped on arrival. */
static bool refuse_new(struct tg_pipeline *pl)
{
    if (pl->overflow != TG_OVERFLOW_DROP_NEWEST || !atomic_load(&pl->full))
        return false;
    tg_counter_inc(pl->m.dropped_full);
    return true;
}

/* A dead letter: the original payload with headers saying where it came from and why. */
static void dead_letter(struct tg_pipeline *pl, const char *topic, size_t topic_len,
                        const char *device, const uint8_t *payload, size_t len, int64_t rx_ms,
                        tg_err why, const char *text)
{
    if (refuse_new(pl))
        return;
    uint8_t aux[1024];
    size_t aux_len = 0;
    const char *reason = tg_err_reason(why);
    /* Headers are best effort in a fixed buffer: a huge topic loses its header, not the
     * record. */
    if (topic_len)
        (void)tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "mqtt-topic", topic, topic_len);
    (void)tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "device-id", device, strlen(device));
    (void)tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "reason", reason, strlen(reason));
    (void)tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "reason-text", text,
                                 strnlen(text, 400));
    struct tg_jrecord rec = {
        .kind = TG_JREC_DLQ,
        .ts_ms = rx_ms,
        .rx_ms = rx_ms,
        .key = (const uint8_t *)device,
        .key_len = strlen(device),
        .value = payload,
        .value_len = len < DLQ_PAYLOAD_MAX ? len : DLQ_PAYLOAD_MAX,
        .aux = aux,
        .aux_len = aux_len,
    };
    append_record(pl, &rec);
}

static tg_err encode_reading(struct tg_pipeline *pl, const struct tg_reading *rd, int64_t gw_ts,
                             size_t *len)
{
    for (;;) {
        tg_err rc = pl->kafka_format == TG_KAFKA_CBOR
                        ? tg_codec_canonical_cbor(rd, pl->gateway_id, gw_ts, pl->enc,
                                                  pl->enc_cap, len)
                        : tg_codec_canonical_json(rd, pl->gateway_id, gw_ts, (char *)pl->enc,
                                                  pl->enc_cap, len);
        if (rc != TG_ERR_FULL)
            return rc;
        size_t cap = *len + 256;
        uint8_t *p = realloc(pl->enc, cap);
        if (!p)
            return TG_ERR_NOMEM;
        pl->enc = p;
        pl->enc_cap = cap;
    }
}

/* One received message, from topic to records. */
static void process_message(struct tg_pipeline *pl, const struct tg_qmsg *msg)
{
    tg_counter_inc(pl->m.received);
    /* The device id is the topic's last level; the decoder checks it. */
    const char *slash = memrchr(msg->topic, '/', msg->topic_len);
    const char *dev = slash ? slash + 1 : msg->topic;
    size_t dev_len = msg->topic_len - (size_t)(dev - msg->topic);
    char device[TG_DEVICE_ID_MAX + 2];
    if (dev_len > TG_DEVICE_ID_MAX + 1)
        dev_len = TG_DEVICE_ID_MAX + 1; /* still invalid, and bounded */
    memcpy(device, dev, dev_len);
    device[dev_len] = '\0';

    /* The receive time stands for "now" (SenML relative times, clock skew, gw_ts): it is
     * what a reading waiting in the hand-off queue should be judged by, and it saves a clock
     * read per message. */
    int64_t now = msg->rx_ms;
    struct tg_decoded d;
    char why[256];
    tg_err rc = tg_decoder_decode(pl->dec, TG_FORMAT_AUTO, device, msg->payload, msg->payload_len,
                                  now, &d);
    const char *text = why;
    if (rc != TG_OK) {
        text = tg_decoder_error(pl->dec);
        /* The ingress and tg_pipeline_offer() cut an oversized payload to
         * max(max_payload_bytes + 1, DLQ_PAYLOAD_MAX) bytes: at that length the size is not
         * the payload's, so only the limit is stated. */
        if (rc == TG_ERR_TOO_LARGE && (msg->payload_len == pl->max_payload_bytes + 1 ||
                                       msg->payload_len >= DLQ_PAYLOAD_MAX)) {
            snprintf(why, sizeof why,
                     "payload larger than the limit of %zu bytes (the dead letter keeps the first "
                     "%zu bytes)",
                     pl->max_payload_bytes,
                     msg->payload_len < DLQ_PAYLOAD_MAX ? msg->payload_len : (size_t)DLQ_PAYLOAD_MAX);
            text = why;
        }
    } else {
        rc = tg_validate_payload(pl->val, device, &d, now, why, sizeof why);
    }
    if (rc != TG_OK) {
        tg_counter_inc(pl->m.invalid[rc]);
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "validate", 10000, "rejected payload on %.*s: %s: %s",
                           (int)msg->topic_len, msg->topic, tg_err_reason(rc), text);
        dead_letter(pl, msg->topic, msg->topic_len, device, msg->payload, msg->payload_len,
                    msg->rx_ms, rc, text);
        return;
    }

    struct tg_dedup_stats before, after;
    tg_dedup_stats(pl->dd, &before);
    tg_dedup_check_all(pl->dd, d.readings, d.n_readings, now, pl->fresh);
    tg_dedup_stats(pl->dd, &after);
    if (after.duplicates > before.duplicates)
        tg_counter_add(pl->m.duplicate, after.duplicates - before.duplicates);
    if (after.out_of_window > before.out_of_window)
        tg_counter_add(pl->m.out_of_window, after.out_of_window - before.out_of_window);
    if (after.new_epochs > before.new_epochs) {
        uint64_t from = 0, to = 0;
        tg_dedup_last_epoch(pl->dd, &from, &to);
        tg_counter_add(pl->m.new_epochs, after.new_epochs - before.new_epochs);
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "pipeline", 10000,
                           "device %s: boot went back from %llu to %llu (re-flashed?): taken "
                           "as a new epoch",
                           device, (unsigned long long)from, (unsigned long long)to);
    }
    for (size_t i = 0; i < d.n_readings; i++) {
        if (!pl->fresh[i] || refuse_new(pl))
            continue;
        size_t len;
        if ((rc = encode_reading(pl, &d.readings[i], now, &len)) != TG_OK) {
            /* The decoder only lets finite numbers through, so this is memory. */
            TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "pipeline", 10000, "cannot encode: %s",
                               tg_strerror(rc));
            tg_counter_inc(pl->m.dropped_full);
            continue;
        }
        struct tg_jrecord rec = {
            .kind = TG_JREC_TELEMETRY,
            .ts_ms = d.readings[i].ts_ms,
            .rx_ms = msg->rx_ms,
            .key = (const uint8_t *)device,
            .key_len = dev_len,
            .value = pl->enc,
            .value_len = len,
        };
        append_record(pl, &rec);
    }
}

/* Takes up to max messages off the ingress queue. */
static int take_ingress(struct tg_pipeline *pl, int max)
{
    int n = 0;
    struct tg_qmsg msg;
    while (n < max && tg_queue_peek(pl->q, &msg)) {
        process_message(pl, &msg);
        tg_queue_pop(pl->q);
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------------------------------
 * producing
 */

/* Reads a journaled segment's records back. On a corrupt row the records are counted
 * dropped: nothing else can be done with them, and the rest of the journal is unaffected. */
static tg_err load_seg(struct tg_pipeline *pl, struct seg *s)
{
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    tg_err rc = tg_journal_read(pl->jr, s->first_rid, &blob, &blob_len);
    struct tg_segment *data = NULL;
    if (rc == TG_OK) {
        data = tg_segment_new(pl->segment_bytes);
        if (!data)
            rc = TG_ERR_NOMEM;
    }
    if (rc == TG_OK)
        rc = tg_segment_load(data, s->codec, blob, blob_len, s->stored_raw_bytes, s->first_rid,
                             s->last_rid);
    free(blob);
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
static size_t drop_open_records(struct tg_pipeline *pl, struct seg *s, struct tg_counter *dropped)
{
    size_t n = 0;
    for (size_t i = 0, range = seg_range(s); i < range && s->n_open > s->n_inflight; i++) {
        if (bit_get(s->done, i) || bit_get(s->inflight, i))
            continue;
        set_done_bit(pl, s, i);
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
    drop_open_records(pl, s, pl->m.dropped_corrupt);
    if (seg_finished(s) && !s->persisted)
        list_remove(pl, s);
}

/* A record librdkafka will never take (or the cluster refused): queued for the DLQ. */
static void queue_reject(struct tg_pipeline *pl, struct seg *s, uint64_t rid, tg_err err)
{
    if (pl->n_rejects == pl->cap_rejects) {
        size_t cap = pl->cap_rejects ? pl->cap_rejects * 2 : 16;
        struct reject *r = realloc(pl->rejects, cap * sizeof *r);
        if (!r) {
            tg_counter_inc(pl->m.dropped_rejected);
            mark_done(pl, s, rid);
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

/* Hands records to librdkafka from the cursor on, up to budget. Returns how many. */
static int produce_step(struct tg_pipeline *pl, int budget)
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
            tg_err rc = load_seg(pl, s);
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
                tg_err rc = tg_egress_produce(pl->eg, &rec);
                if (rc == TG_ERR_FULL || (rc != TG_OK && tg_err_retriable(rc))) {
                    pl->egress_full = true;
                    break;
                }
                if (rc == TG_OK) {
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

/* Moves the cursor back to rid (a retriable failure): it is produced again, in order. */
static void rewind_to(struct tg_pipeline *pl, struct seg *s, uint64_t rid)
{
    if (!pl->cur || rid < pl->cur_rid) {
        pl->cur = s;
        pl->cur_rid = rid;
        s->produce_idx = SIZE_MAX;
    }
}

static void on_delivery(void *ud, uint64_t rid, enum tg_jrecord_kind kind, int64_t ts_ms,
                        tg_err result, const char *reason)
{
    struct tg_pipeline *pl = ud;
    pl->egress_full = false;
    struct seg *s = find_seg(pl, rid);
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
        mark_done(pl, s, rid);
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
        mark_done(pl, s, rid);
    }
}

/* Turns telemetry records Kafka refused into dead letters (their canonical value, reason
 * "kafka_rejected"-style code), then forgets the originals. */
static void handle_rejects(struct tg_pipeline *pl)
{
    for (size_t k = 0; k < pl->n_rejects; k++) {
        struct reject r = pl->rejects[k];
        struct seg *s = find_seg(pl, r.rid);
        if (!s)
            continue;
        size_t i = (size_t)(r.rid - s->first_rid);
        bit_clear(s->inflight, i);
        s->n_inflight--;
        if (!s->data && load_seg(pl, s) != TG_OK) {
            tg_counter_inc(pl->m.dropped_rejected);
            mark_done(pl, s, r.rid);
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
                dead_letter(pl, "", 0, device, value, rec.value_len, rec.rx_ms, r.err, text);
                free(value);
            } else {
                tg_counter_inc(pl->m.dropped_rejected);
            }
        }
        mark_done(pl, s, r.rid);
    }
    pl->n_rejects = 0;
}

/* ------------------------------------------------------------------------------------------
 * commits
 */

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
 * until the journal is back under its cap. Its own transaction, after the commit. */
static void apply_drop_oldest(struct tg_pipeline *pl, bool disk_full)
{
    if (pl->overflow != TG_OVERFLOW_DROP_OLDEST)
        return;
    /* Rows whose remaining records are all in librdkafka's hands go as soon as those are
     * confirmed: count them as gone, or the policy would eat ever newer segments while
     * they wait (those records are bounded by kafka.queue_max_kbytes). The journal's own
     * count moves only at the commit, so track what this transaction frees as well. */
    uint64_t used = tg_journal_data_bytes(pl->jr);
    for (struct seg *p = pl->head; p; p = p->next)
        if (p->persisted && p->n_open == p->n_inflight)
            used -= p->stored_bytes < used ? p->stored_bytes : used;
    if (used <= pl->max_bytes && !disk_full)
        return;
    if (tg_journal_begin(pl->jr) != TG_OK)
        return;
    size_t dropped = 0;
    tg_err rc = TG_OK;
    struct seg *s = pl->head;
    while (s && rc == TG_OK && (used > pl->max_bytes || disk_full)) {
        struct seg *next = s->next;
        if (s->persisted && s->n_open > s->n_inflight) {
            dropped += drop_open_records(pl, s, pl->m.dropped_full);
            used -= s->stored_bytes < used ? s->stored_bytes : used;
            if (s->n_open == 0) {
                rc = tg_journal_delete(pl->jr, s->first_rid);
            } else {
                rc = tg_journal_set_done(pl->jr, s->first_rid, s->done,
                                         bitmap_bytes(seg_range(s)));
            }
            s->done_dirty = false;
            disk_full = false; /* one segment's room is enough to go on */
        }
        s = next;
    }
    if (rc == TG_OK)
        rc = tg_journal_commit(pl->jr);
    else
        tg_journal_rollback(pl->jr);
    if (rc != TG_OK)
        log_journal_error(pl, "dropping the oldest segments", rc);
    TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "journal", 10000,
                       "journal at its cap (%llu bytes): dropped the %zu oldest readings",
                       (unsigned long long)pl->max_bytes, dropped);
    for (s = pl->head; s;) {
        struct seg *next = s->next;
        if (rc == TG_OK && s->persisted && seg_finished(s))
            list_remove(pl, s);
        s = next;
    }
}

/* Frees resident data of journaled segments while over memory_bytes: first what the cursor
 * has passed, then the newest (read back when the cursor gets there). */
static void evict(struct tg_pipeline *pl)
{
    for (struct seg *s = pl->head; s && pl->resident_bytes > pl->memory_bytes; s = s->next)
        if (s->persisted && s->data && s->last_rid < pl->cur_rid && s != pl->cur)
            drop_data(pl, s);
    for (struct seg *s = pl->tail; s && pl->resident_bytes > pl->memory_bytes; s = s->prev)
        if (s->persisted && s->data && s != pl->cur)
            drop_data(pl, s);
}

/* One group commit (see the top of the file). final: shutdown, write everything. */
static tg_err commit(struct tg_pipeline *pl, bool final)
{
    int64_t t0 = mono_ms();
    struct seg *t = pl->tail;
    if (t && !t->sealed && seg_range(t) > 0)
        t->sealed = true;

    bool kafka_behind = !pl->eg || !tg_egress_up(pl->eg) || pl->egress_full;
    size_t unjournaled = 0;
    for (struct seg *s = pl->head; s; s = s->next)
        if (s->sealed && !s->persisted && s->n_open)
            unjournaled += tg_segment_raw_bytes(s->data);

    bool changed = false, refused = false, disk_full = false;
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
                drop_open_records(pl, s, pl->m.dropped_full);
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
    if (rc == TG_OK && tg_dedup_dirty(pl->dd) && (final || now >= pl->next_dedup_save_ms)) {
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
                list_remove(pl, s);
            s = next;
        }
        atomic_store(&pl->healthy, true);
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
        atomic_store(&pl->healthy, false);
    }
    apply_drop_oldest(pl, disk_full);
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
    bool full = disk_full || pl->refusing || data_bytes >= pl->max_bytes;
    if (full != pl->full_logged)
        TG_LOG_WARN("journal", full ? "journal full (%llu of %llu bytes): overflow policy %s applies"
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

static tg_err recover_seg(void *ud, const struct tg_jseg_meta *meta, const uint8_t *done,
                          size_t done_len)
{
    struct tg_pipeline *pl = ud;
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
    if (seg_reserve_bits(s, range ? range : 1) != TG_OK) {
        seg_free(s);
        return TG_ERR_NOMEM;
    }
    list_append(pl, s);
    if (done) {
        memcpy(s->done, done, done_len < bitmap_bytes(range) ? done_len : bitmap_bytes(range));
    } else {
        /* No bitmap: every rid not stored in the row is done. */
        memset(s->done, 0xff, bitmap_bytes(range));
        tg_err lr = load_seg(pl, s); /* rids checked to lie in the row's range */
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
    if (meta->last_rid + 1 > pl->next_rid)
        pl->next_rid = meta->last_rid + 1;
    return TG_OK;
}

static tg_err recover(struct tg_pipeline *pl, char *err, size_t errlen)
{
    tg_err rc = tg_journal_scan(pl->jr, recover_seg, pl);
    if (rc != TG_OK) {
        snprintf(err, errlen, "%s: cannot read the journal: %s (%s)",
                 tg_config_get_str(pl->cfg, "journal", "path"), tg_strerror(rc),
                 tg_journal_errmsg(pl->jr));
        return rc;
    }
    pl->cur = pl->head;
    pl->cur_rid = pl->head ? pl->head->first_rid : pl->next_rid;
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
    if (pl->head)
        TG_LOG_INFO("journal", "%zu undelivered records in %llu segments, oldest received %lld s "
                               "ago: sending them first",
                    pl->open_records, (unsigned long long)tg_journal_segments(pl->jr),
                    (long long)((wall_ms() - pl->head->created_ms) / 1000));
    return TG_OK;
}

/* ------------------------------------------------------------------------------------------
 * metrics
 */

static double oldest_age_seconds(void *ud)
{
    struct tg_pipeline *pl = ud;
    int64_t oldest = atomic_load_explicit(&pl->oldest_rx_ms, memory_order_relaxed);
    if (!oldest)
        return 0;
    int64_t age = wall_ms() - oldest;
    return age > 0 ? (double)age / 1000.0 : 0;
}

static void register_metrics(struct tg_pipeline *pl)
{
    struct tg_metrics *m = pl->metrics;
    struct pipeline_metrics *pm = &pl->m;
    pm->received = tg_metrics_counter(m, "tidegate_messages_received_total",
                                      "MQTT messages taken by the pipeline", NULL);
    pm->delivered = tg_metrics_counter(m, "tidegate_messages_delivered_total",
                                       "Readings Kafka confirmed (acks=all)", NULL);
    pm->duplicate = tg_metrics_counter(m, "tidegate_messages_duplicate_total",
                                       "Readings dropped as already taken (device, boot, seq)",
                                       NULL);
    pm->out_of_window = tg_metrics_counter(
        m, "tidegate_dedup_out_of_window_total",
        "Readings dropped as older than the dedup window remembers (not known duplicates)",
        NULL);
    pm->new_epochs = tg_metrics_counter(
        m, "tidegate_dedup_new_epochs_total",
        "Devices whose boot counter went back and were taken as a new epoch", NULL);
    pm->dlq_delivered = tg_metrics_counter(m, "tidegate_dlq_delivered_total",
                                           "Dead letters Kafka confirmed", NULL);
    const char *dropped_help = "Readings and dead letters dropped, by reason";
    pm->dropped_full = tg_metrics_counter(m, "tidegate_messages_dropped_total", dropped_help,
                                          "reason", "journal_full", NULL);
    pm->dropped_rejected = tg_metrics_counter(m, "tidegate_messages_dropped_total", dropped_help,
                                              "reason", "kafka_rejected", NULL);
    pm->dropped_corrupt = tg_metrics_counter(m, "tidegate_messages_dropped_total", dropped_help,
                                             "reason", "journal_corrupt", NULL);
    for (int e = TG_ERR_TOO_LARGE; e < TG_ERR__COUNT; e++)
        pm->invalid[e] = tg_metrics_counter(m, "tidegate_messages_invalid_total",
                                            "Payloads rejected to the dead-letter topic, by reason",
                                            "reason", tg_err_reason((tg_err)e), NULL);
    /* Codes outside the payload range cannot come from decode or validate; map them to one
     * series anyway so a surprise is counted, not a crash. */
    for (int e = 0; e < TG_ERR_TOO_LARGE; e++)
        pm->invalid[e] = pm->invalid[TG_ERR_MALFORMED];
    pm->records = tg_metrics_gauge(m, "tidegate_journal_records",
                                   "Records held (in memory or journaled) not yet confirmed by "
                                   "Kafka",
                                   NULL);
    pm->bytes = tg_metrics_gauge(m, "tidegate_journal_bytes",
                                 "Compressed bytes of journaled segments (what journal.max_bytes "
                                 "caps)",
                                 NULL);
    pm->segments = tg_metrics_gauge(m, "tidegate_journal_segments", "Journaled segments", NULL);
    tg_metrics_gauge_fn(m, "tidegate_journal_oldest_age_seconds",
                        "Age of the oldest record not yet confirmed by Kafka", oldest_age_seconds,
                        pl, NULL);
    pm->kafka_up = tg_metrics_gauge(m, "tidegate_kafka_up",
                                    "1 while a Kafka broker is connected, else 0", NULL);
    pm->e2e = tg_metrics_histogram(m, "tidegate_e2e_latency_seconds",
                                   "Device time to Kafka acknowledgement", NULL, 0, NULL);
    pm->commit_seconds = tg_metrics_histogram(m, "tidegate_journal_commit_seconds",
                                              "Duration of a journal group commit", NULL, 0, NULL);
    pm->commits = tg_metrics_counter(m, "tidegate_journal_commits_total",
                                     "Journal transactions committed", NULL);
    pm->journal_written = tg_metrics_counter(m, "tidegate_journal_written_bytes_total",
                                             "Compressed segment bytes written to the journal",
                                             NULL);
}

static void update_gauges(struct tg_pipeline *pl)
{
    update_oldest(pl);
    tg_gauge_set(pl->m.records, (double)pl->open_records);
    tg_gauge_set(pl->m.bytes, (double)tg_journal_data_bytes(pl->jr));
    tg_gauge_set(pl->m.segments, (double)tg_journal_segments(pl->jr));
    tg_gauge_set(pl->m.kafka_up, pl->eg && tg_egress_up(pl->eg) ? 1 : 0);
}

/* ------------------------------------------------------------------------------------------
 * the thread
 */

static void make_egress(struct tg_pipeline *pl)
{
    char err[512];
    if (tg_egress_new(&pl->egress_opts, on_delivery, pl, &pl->eg, err, sizeof err) != TG_OK) {
        pl->eg = NULL;
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "kafka", 10000, "cannot create the producer: %s",
                           err);
    }
}

/* A fatal librdkafka error (e.g. the idempotent producer was fenced): start a new producer.
 * Destroying the old one reports what it held as retriable, which rewinds the cursor, so
 * those records are produced again, in order. */
static void replace_egress(struct tg_pipeline *pl)
{
    TG_LOG_ERROR("kafka", "fatal producer error: starting a new producer");
    tg_egress_destroy(pl->eg);
    pl->eg = NULL;
    pl->egress_full = false;
    make_egress(pl);
}

/* Serves librdkafka's delivery reports. One clock read for the batch: the latency histogram
 * has millisecond buckets at best, and reports come in batches per produce response. */
static int poll_reports(struct tg_pipeline *pl, int timeout_ms)
{
    pl->reports_ms = wall_ms();
    return tg_egress_poll(pl->eg, timeout_ms);
}

/* Sleeps until a message or a delivery report arrives or timeout_ms pass. True when woken
 * by a message. */
static bool sleep_for_work(struct tg_pipeline *pl, int timeout_ms)
{
    if (!tg_queue_prepare_wait(pl->q))
        return false;
    struct pollfd fds[2] = {{.fd = tg_queue_fd(pl->q), .events = POLLIN}};
    nfds_t n = 1;
    if (pl->eg)
        fds[n++] = (struct pollfd){.fd = tg_egress_fd(pl->eg), .events = POLLIN};
    if (poll(fds, n, timeout_ms) > 0 && (fds[0].revents & POLLIN)) {
        tg_queue_ack_wakeup(pl->q);
        return !atomic_load(&pl->stop);
    }
    return false;
}

/* Under backpressure, refuse new messages as soon as what waits for the next commit would
 * take the journal past its cap, rather than one commit late: this keeps the overshoot to
 * what the hand-off queue holds. */
static void check_backpressure(struct tg_pipeline *pl)
{
    if (pl->overflow != TG_OVERFLOW_BACKPRESSURE || atomic_load(&pl->full) ||
        !pl->eg || (tg_egress_up(pl->eg) && !pl->egress_full))
        return;
    double expected = (double)tg_journal_data_bytes(pl->jr) + pl->ratio * (double)pl->appended_raw;
    if (expected >= (double)pl->max_bytes)
        atomic_store(&pl->full, true);
}

/* One turn of the loop: take, produce, serve reports, commit when due. Returns the work done. */
static int turn(struct tg_pipeline *pl, bool take)
{
    int work = take ? take_ingress(pl, TAKE_BATCH) : 0;
    if (work)
        check_backpressure(pl);
    if (pl->n_rejects)
        handle_rejects(pl);
    if (!pl->eg)
        make_egress(pl);
    work += produce_step(pl, PRODUCE_BATCH);
    if (pl->eg) {
        work += poll_reports(pl, 0);
        if (tg_egress_fatal(pl->eg))
            replace_egress(pl);
    }
    int64_t now = mono_ms();
    if (now >= pl->next_commit_ms) {
        (void)commit(pl, false);
        pl->next_commit_ms = now + pl->commit_interval_ms;
    }
    update_gauges(pl);
    return work;
}

static void *pipeline_main(void *arg)
{
    struct tg_pipeline *pl = arg;
    while (!atomic_load(&pl->stop) || tg_queue_messages(pl->q) > 0) {
        if (atomic_exchange(&pl->reload, false)) {
            char err[1024];
            if (tg_validate_reload_keys(pl->val, err, sizeof err) != TG_OK)
                TG_LOG_ERROR("validate", "keeping the device keys in use: %s", err);
            else
                TG_LOG_INFO("validate", "reloaded %zu device keys", tg_validate_keys(pl->val));
        }
        if (turn(pl, true) == 0) {
            int64_t wait = pl->next_commit_ms - mono_ms();
            if (sleep_for_work(pl, wait < 0 ? 0 : wait > MAX_SLEEP_MS ? MAX_SLEEP_MS : (int)wait)) {
                /* Woken by a message: let more arrive before taking them. At 10,000
                 * messages/s a 5 ms window turns ~1,500 wake-ups a second (each a poll, an
                 * eventfd read and two context switches) into ~200, for at most
                 * gateway.wake_coalesce_ms of latency; under load the loop never sleeps. */
                struct timespec ts = {pl->wake_coalesce_ms / 1000,
                                      (long)(pl->wake_coalesce_ms % 1000) * 1000000L};
                if (pl->wake_coalesce_ms > 0)
                    nanosleep(&ts, NULL);
            }
        }
    }

    /* Shutdown: everything offered has been taken. Give Kafka up to the timeout to confirm
     * what is pending (not when it is down: waiting would only delay the stop), then stop
     * the producer and journal whatever it has not confirmed. */
    int64_t deadline = mono_ms() + pl->shutdown_timeout_ms;
    TG_LOG_INFO("pipeline", "stopping: %zu records not yet confirmed by Kafka",
                pl->open_records);
    while (pl->open_records > 0 && mono_ms() < deadline && pl->eg && tg_egress_up(pl->eg)) {
        turn(pl, false);
        if (pl->eg)
            poll_reports(pl, 20);
    }
    tg_egress_destroy(pl->eg);
    pl->eg = NULL;
    pl->exit_status = commit(pl, true);
    TG_LOG_INFO("pipeline", "stopped: %zu records kept in the journal for the next start",
                pl->open_records);
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * the API
 */

/* The [kafka.rdkafka] pairs as the NULL-terminated key, value array egress wants. */
static tg_err collect_rdkafka(void *arg, const char *key, const char *value, const char *origin)
{
    (void)origin;
    struct tg_pipeline *pl = arg;
    const char **v = realloc(pl->rdkafka_conf, (pl->rdkafka_conf_n + 3) * sizeof *v);
    if (!v)
        return TG_ERR_NOMEM;
    pl->rdkafka_conf = v;
    v[pl->rdkafka_conf_n++] = key;
    v[pl->rdkafka_conf_n++] = value;
    v[pl->rdkafka_conf_n] = NULL;
    return TG_OK;
}

/* The producer's options from [kafka] and [kafka.rdkafka]. */
static tg_err fill_egress_opts(struct tg_pipeline *pl)
{
    const struct tg_config *cfg = pl->cfg;
    tg_err rc = tg_config_foreach_pair(cfg, "kafka.rdkafka", collect_rdkafka, pl);
    if (rc != TG_OK)
        return rc;
    int format = tg_config_get_enum(cfg, "kafka", "format");
    pl->egress_opts = (struct tg_egress_opts){
        .brokers = tg_config_get_str(cfg, "kafka", "brokers"),
        .topic = tg_config_get_str(cfg, "kafka", "topic"),
        .dlq_topic = tg_config_get_str(cfg, "kafka", "dlq_topic"),
        .client_id = tg_config_get_str(cfg, "kafka", "client_id"),
        .compression = tg_config_get_str(cfg, "kafka", "compression"),
        .compression_level = (int)tg_config_get_int(cfg, "kafka", "compression_level"),
        .content_type = format == TG_KAFKA_CBOR ? "application/cbor" : "application/json",
        .linger_ms = (int)tg_config_get_ms(cfg, "kafka", "linger_ms"),
        .batch_num_messages = (int)tg_config_get_int(cfg, "kafka", "batch_num_messages"),
        .queue_max_kbytes = (int)tg_config_get_int(cfg, "kafka", "queue_max_kbytes"),
        .queue_max_messages = (int)tg_config_get_int(cfg, "kafka", "queue_max_messages"),
        .stats_interval_ms = (int)tg_config_get_ms(cfg, "kafka", "stats_interval_ms"),
        .rdkafka_conf = pl->rdkafka_conf,
    };
    return TG_OK;
}

tg_err tg_pipeline_check_config(const struct tg_config *cfg, char *err, size_t errlen)
{
    struct tg_pipeline *pl = calloc(1, sizeof *pl);
    if (!pl)
        return TG_ERR_NOMEM;
    pl->cfg = cfg;
    struct tg_validate *val = NULL;
    tg_err rc = tg_validate_from_config(cfg, &val, err, errlen);
    tg_validate_destroy(val);
    if (rc == TG_OK && (rc = fill_egress_opts(pl)) == TG_OK)
        rc = tg_egress_check_opts(&pl->egress_opts, err, errlen);
    free(pl->rdkafka_conf);
    free(pl);
    return rc;
}

/* Creates the journal's directory (one level) when missing, so a fresh install or a dev
 * config with a relative path just works; anything else is left to the open's error. */
static void make_parent_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return;
    *slash = '\0';
    if (mkdir(dir, 0750) == 0)
        TG_LOG_INFO("journal", "created directory %s", dir);
}

tg_err tg_pipeline_new(const struct tg_config *cfg, struct tg_metrics *metrics,
                       struct tg_pipeline **out, char *err, size_t errlen)
{
    *out = NULL;
    struct tg_pipeline *pl = calloc(1, sizeof *pl);
    if (!pl)
        return TG_ERR_NOMEM;
    tg_err rc = TG_ERR_NOMEM;
    pl->cfg = cfg;
    pl->metrics = metrics;
    atomic_init(&pl->healthy, true);
    pl->next_rid = 1;
    pl->ratio = 0.25; /* until the first segment is written */

    const char *id = tg_config_get_str(cfg, "gateway", "id");
    if (*id)
        snprintf(pl->gateway_id, sizeof pl->gateway_id, "%s", id);
    else if (gethostname(pl->gateway_id, sizeof pl->gateway_id - 1) != 0)
        snprintf(pl->gateway_id, sizeof pl->gateway_id, "tidegate");
    pl->kafka_format = tg_config_get_enum(cfg, "kafka", "format");
    pl->mode = tg_config_get_enum(cfg, "journal", "mode");
    pl->overflow = tg_config_get_enum(cfg, "journal", "overflow");
    pl->max_bytes = tg_config_get_size(cfg, "journal", "max_bytes");
    pl->commit_interval_ms = tg_config_get_ms(cfg, "journal", "commit_interval_ms");
    (void)tg_codec_id_parse(tg_config_get_str(cfg, "journal", "codec"), &pl->codec);
    pl->zstd_level = (int)tg_config_get_int(cfg, "journal", "zstd_level");
    pl->segment_bytes = tg_config_get_size(cfg, "journal", "segment_bytes");
    pl->memory_bytes = tg_config_get_size(cfg, "journal", "memory_bytes");
    pl->dedup_save_interval_ms = tg_config_get_ms(cfg, "journal", "dedup_save_interval_ms");
    pl->shutdown_timeout_ms = tg_config_get_ms(cfg, "gateway", "shutdown_timeout_ms");
    pl->wake_coalesce_ms = tg_config_get_ms(cfg, "gateway", "wake_coalesce_ms");
    pl->max_payload_bytes = tg_config_get_size(cfg, "validate", "max_payload_bytes");

    struct tg_codec_limits limits = tg_codec_limits_default();
    limits.max_payload_bytes = pl->max_payload_bytes;
    limits.max_metrics = (unsigned)tg_config_get_int(cfg, "validate", "max_metrics");
    limits.max_readings = (unsigned)tg_config_get_int(cfg, "validate", "max_readings");
    if (!(pl->dec = tg_decoder_new(&limits)))
        goto fail;
    if (!(pl->fresh = calloc(limits.max_readings, sizeof *pl->fresh)))
        goto fail;
    if (!(pl->enc = malloc(pl->enc_cap = 1024)))
        goto fail;
    /* Room for the largest entry offer() makes, twice over, whatever queue_bytes says. */
    size_t biggest = tg_queue_entry_bytes(1024, pl->max_payload_bytes + 1 > DLQ_PAYLOAD_MAX
                                                    ? pl->max_payload_bytes + 1
                                                    : DLQ_PAYLOAD_MAX);
    size_t qcap = tg_config_get_size(cfg, "mqtt", "queue_bytes");
    if (!(pl->q = tg_queue_new(qcap > 4 * biggest ? qcap : 4 * biggest)))
        goto fail;
    if ((rc = tg_validate_from_config(cfg, &pl->val, err, errlen)) != TG_OK)
        goto fail;
    if ((rc = tg_dedup_new((size_t)tg_config_get_int(cfg, "journal", "dedup_devices"), &pl->dd)) !=
        TG_OK)
        goto fail;
    tg_dedup_set_epoch_grace(pl->dd, tg_config_get_ms(cfg, "journal", "dedup_epoch_grace_ms"));

    const char *path = tg_config_get_str(cfg, "journal", "path");
    make_parent_dir(path);
    bool moved_aside = false;
    struct tg_journal_opts jo = {.max_bytes = pl->max_bytes, .metrics = metrics};
    if ((rc = tg_journal_open(path, &jo, &pl->jr, &moved_aside, err, errlen)) != TG_OK)
        goto fail;
    pl->max_bytes -= tg_journal_wal_bound(pl->jr); /* the WAL's share of the cap */
    if (moved_aside)
        TG_LOG_ERROR("journal", "%s failed its check and was moved aside (.corrupt-*); started "
                                "a fresh journal",
                     path);
    register_metrics(pl);
    if ((rc = recover(pl, err, errlen)) != TG_OK)
        goto fail;

    if ((rc = fill_egress_opts(pl)) != TG_OK)
        goto fail;
    if ((rc = tg_egress_new(&pl->egress_opts, on_delivery, pl, &pl->eg, err, errlen)) != TG_OK)
        goto fail;
    pl->next_commit_ms = mono_ms() + pl->commit_interval_ms;
    pl->next_dedup_save_ms = mono_ms() + pl->dedup_save_interval_ms;
    update_gauges(pl);
    *out = pl;
    return TG_OK;
fail:
    if (rc == TG_ERR_NOMEM && err && errlen)
        snprintf(err, errlen, "out of memory");
    tg_pipeline_destroy(pl);
    return rc;
}

tg_err tg_pipeline_start(struct tg_pipeline *pl)
{
    if (pthread_create(&pl->thread, NULL, pipeline_main, pl) != 0)
        return TG_ERR_NOMEM;
    pl->started = true;
    return TG_OK;
}

tg_err tg_pipeline_offer(void *ud, const char *topic, size_t topic_len, const uint8_t *payload,
                         size_t payload_len, int64_t rx_ms)
{
    struct tg_pipeline *pl = ud;
    if (pl->overflow == TG_OVERFLOW_BACKPRESSURE &&
        atomic_load_explicit(&pl->full, memory_order_relaxed))
        return TG_ERR_FULL;
    /* Oversized payloads are cut to what the dead letter keeps (still over the limit, so the
     * decoder rejects them as too_large); an absurd topic is cut so that its device id is
     * empty, hence rejected as bad_name. */
    if (payload_len > pl->max_payload_bytes) {
        size_t keep = pl->max_payload_bytes + 1 > DLQ_PAYLOAD_MAX ? pl->max_payload_bytes + 1
                                                                  : DLQ_PAYLOAD_MAX;
        if (payload_len > keep)
            payload_len = keep;
    }
    char cut[1024];
    if (topic_len > sizeof cut) {
        memcpy(cut, topic, sizeof cut - 1);
        cut[sizeof cut - 1] = '/';
        topic = cut;
        topic_len = sizeof cut;
    }
    tg_err rc = tg_queue_push(pl->q, topic, topic_len, payload, payload_len, rx_ms);
    return rc == TG_OK ? TG_OK : TG_ERR_FULL;
}

tg_err tg_pipeline_stop(struct tg_pipeline *pl, int64_t timeout_ms)
{
    if (!pl->started || pl->joined)
        return pl->exit_status;
    pl->shutdown_timeout_ms = timeout_ms;
    atomic_store(&pl->stop, true);
    /* Wake a sleeping pipeline: an empty push would be a message, so poke the eventfd the
     * queue sleeps on directly. */
    uint64_t one = 1;
    ssize_t w = write(tg_queue_fd(pl->q), &one, sizeof one);
    (void)w;
    pthread_join(pl->thread, NULL);
    pl->joined = true;
    return pl->exit_status;
}

void tg_pipeline_destroy(struct tg_pipeline *pl)
{
    if (!pl)
        return;
    if (pl->started && !pl->joined)
        (void)tg_pipeline_stop(pl, 0);
    tg_egress_destroy(pl->eg);
    pl->eg = NULL;
    while (pl->head)
        list_remove(pl, pl->head);
    tg_journal_close(pl->jr);
    tg_dedup_destroy(pl->dd);
    tg_validate_destroy(pl->val);
    tg_queue_destroy(pl->q);
    tg_decoder_destroy(pl->dec);
    free(pl->fresh);
    free(pl->enc);
    free(pl->rejects);
    free(pl->rdkafka_conf);
    free(pl);
}

bool tg_pipeline_healthy(const struct tg_pipeline *pl)
{
    return atomic_load(&((struct tg_pipeline *)pl)->healthy);
}

void tg_pipeline_request_reload(struct tg_pipeline *pl) { atomic_store(&pl->reload, true); }
