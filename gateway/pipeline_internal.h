/*
 * pipeline_internal.h - what the pipeline's files share (not an API: see pipeline.h).
 *
 * The pipeline is one object on one thread, split by concern:
 *   pipeline.c          the thread loop, the API, metrics and the producer's life
 *   pipeline_ingest.c   a received message to records: decode, validate, dedup, encode,
 *                       dead letters
 *   pipeline_backlog.c  the record store: segments, their done/in-flight bitmaps, the produce
 *                       cursor, delivery reports and refused records
 *   pipeline_commit.c   the group commit with the overflow policies, eviction, and recovery
 *                       of the journal at start
 * Functions named pipeline__verb() cross those files; everything here runs on the pipeline
 * thread (or before it starts / after it joined), unless a field says otherwise.
 */
#ifndef TG_PIPELINE_INTERNAL_H
#define TG_PIPELINE_INTERNAL_H

#include "pipeline.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ack.h"
#include "codec.h"
#include "dedup.h"
#include "egress_kafka.h"
#include "gateway_limits.h"
#include "journal.h"
#include "queue.h"
#include "reconcile_kafka.h"
#include "segment.h"
#include "strmap.h"
#include "validate.h"

/* Dead letters keep at most this much of an oversized payload (Kafka's default message size
 * limit is 1 MB; the DLQ is for diagnosis). */
#define DLQ_PAYLOAD_MAX TG_DLQ_PAYLOAD_MAX /* gateway_limits.h */
/* Room for a dead letter's headers: reason, device id, reason text (<= 400 bytes) and the
 * MQTT topic (tg_pipeline_offer() cuts topics to 1 KiB), each with its length prefixes. */
#define DLQ_HEADERS_MAX 2048
/* Work done per loop turn before looking at the other side. */
#define TAKE_BATCH 256
#define PRODUCE_BATCH 2048
/* While Kafka keeps up, the open segment is sealed at this size, to be freed once confirmed
 * (and a fully confirmed one too, whatever Kafka's state). */
#define EARLY_SEAL_BYTES (32 * 1024)
/* The open segment is sealed once its compressed size (at the last segments' ratio) reaches
 * journal.max_bytes / this. The overflow policies keep or drop whole segments: a segment near
 * the cap (a late commit, a small cap) would make drop_oldest drop the whole journal and
 * drop_newest refuse a whole commit's arrivals. */
#define SEGMENTS_PER_CAP 8
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
    struct tg_counter *reconcile_found, *reconcile_skipped; /* reconcile_kafka.h */
    struct tg_gauge *topic_available[2]; /* per record kind */
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
    struct tg_acker *ack;         /* durable acks to nodes (ack.h); NULL: [ack] enabled = false */
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
    double seal_stored_bytes;     /* max_bytes / SEGMENTS_PER_CAP */
    bool egress_full;             /* librdkafka's queue said full; cleared by a delivery, or
                                   * when nothing is in flight (no delivery would come) */
    /* Per record kind (TG_JREC_TELEMETRY, TG_JREC_DLQ): the Kafka error that says its topic
     * is missing or refused (0: usable), as last seen from the producer, and the lowest rid
     * the cursor passed over because of it (0: none), where it goes back once the topic is
     * usable again. So a missing topic holds back only its own records. */
    int topic_err[2];
    uint64_t parked_rid[2];
    atomic_int topic_err_shared[2]; /* topic_err for /healthz (any thread) */
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
    atomic_bool stopping;         /* tg_pipeline_begin_stop(): take everything offered */
    atomic_bool hurry;            /* tg_pipeline_hurry(): stop waiting for Kafka */
    atomic_llong stop_deadline_ms; /* monotonic end of the wait for Kafka; 0: not set */
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

    /* Reading back what the last run sent (reconcile_kafka.h, pipeline_reconcile.c). Nothing
     * is produced until phase is RECONCILE_DONE. kmarks: per partition of the telemetry
     * topic, the highest offset known confirmed (-1: none), saved with the dedup window. */
    enum { RECONCILE_OFF, RECONCILE_NEED, RECONCILE_RUNNING, RECONCILE_APPLIED,
           RECONCILE_DONE } reconcile_phase;
    struct tg_reconcile *rcl;
    bool marks_loaded;            /* the journal held saved marks: read back from them */
    int64_t *kmarks;
    size_t n_kmarks;
    bool force_state_save;        /* save the dedup window and marks at the next commit */
    struct tg_strmap *rb_open;    /* while reading back: open records by identity -> */
    uint64_t *rb_rids;            /* ... their rids */
    size_t n_rb_rids, cap_rb_rids;
    size_t rb_taken;              /* readings found taken so far (tg_reconcile_take) */
    size_t rb_found, rb_skipped;  /* readings found, and open copies marked done */
    int64_t rb_now_ms, rb_next_checkpoint_ms;

    /* tg_pipeline_set_heartbeat() */
    tg_pipeline_heartbeat_fn heartbeat_fn;
    void *heartbeat_ud;
    int64_t heartbeat_interval_ms;
    int64_t next_heartbeat_ms;
};

static inline int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline bool bit_get(const uint8_t *bm, size_t i) { return bm[i >> 3] & (1u << (i & 7)); }
static inline void bit_set(uint8_t *bm, size_t i) { bm[i >> 3] |= (uint8_t)(1u << (i & 7)); }
static inline void bit_clear(uint8_t *bm, size_t i) { bm[i >> 3] &= (uint8_t)~(1u << (i & 7)); }

static inline size_t seg_range(const struct seg *s)
{
    return s->last_rid >= s->first_rid ? (size_t)(s->last_rid - s->first_rid + 1) : 0;
}

static inline size_t bitmap_bytes(size_t bits) { return (bits + 7) / 8; }

/* True once nothing in s is waiting: every record done, none in flight. A finished segment
 * leaves the list: at once if it was never journaled, after its row's delete otherwise. */
static inline bool seg_finished(const struct seg *s)
{
    return s->sealed && s->n_open == 0 && s->n_inflight == 0;
}

/* ------------------------------------------------------------------------------------------
 * pipeline_backlog.c: the record store
 */

/* Makes room for `bits` bits in both of s's bitmaps (new bits clear). */
tg_err pipeline__seg_reserve_bits(struct seg *s, size_t bits);
/* Frees a segment that is not (or no longer) in the list. NULL-safe. */
void pipeline__seg_free(struct seg *s);
void pipeline__list_append(struct tg_pipeline *pl, struct seg *s);
/* Unlinks s (moving the cursor past it) and frees it. */
void pipeline__list_remove(struct tg_pipeline *pl, struct seg *s);
/* Frees s's resident records (a journaled segment is read back when needed). */
void pipeline__drop_data(struct tg_pipeline *pl, struct seg *s);
/* The segment whose range holds rid, or NULL. */
struct seg *pipeline__find_seg(struct tg_pipeline *pl, uint64_t rid);
/* Publishes the receive time of the oldest open record (for the metrics thread). */
void pipeline__update_oldest(struct tg_pipeline *pl);
/* Sets bit i of s's done bitmap (it was clear) and keeps the counts in step. */
void pipeline__set_done_bit(struct tg_pipeline *pl, struct seg *s, size_t i);
/* Marks rid done; a segment nobody needs any more goes at once if never journaled. */
void pipeline__mark_done(struct tg_pipeline *pl, struct seg *s, uint64_t rid);
/* Appends one record to the open segment; its rid, or 0 when it was dropped (memory). */
uint64_t pipeline__append_record(struct tg_pipeline *pl, struct tg_jrecord *rec);
/* Reads a journaled segment's records back into memory. */
tg_err pipeline__load_seg(struct tg_pipeline *pl, struct seg *s);
/* The same from its stored data already at hand (the start-up scan hands it over). */
tg_err pipeline__load_seg_blob(struct tg_pipeline *pl, struct seg *s, const uint8_t *blob,
                               size_t blob_len);
/* Marks done the records of s that are neither done nor in flight, counting them in dropped.
 * Returns how many. s stays in the list. */
size_t pipeline__drop_open_records(struct tg_pipeline *pl, struct seg *s,
                                   struct tg_counter *dropped);
/* Hands records to the producer from the cursor on, up to budget. Returns how many. */
int pipeline__produce_step(struct tg_pipeline *pl, int budget);
/* The producer's delivery callback (tg_egress_delivery_fn; ud is the pipeline). */
void pipeline__on_delivery(void *ud, uint64_t rid, enum tg_jrecord_kind kind, int64_t ts_ms,
                           tg_err result, const char *reason);
/* Turns the records Kafka refused for good into dead letters. */
void pipeline__handle_rejects(struct tg_pipeline *pl);
/* Follows the producer's view of both topics: logs and publishes a change, and sends again
 * what waited for a topic that became usable. */
void pipeline__check_topics(struct tg_pipeline *pl);

/* ------------------------------------------------------------------------------------------
 * pipeline_ingest.c: messages to records
 */

/* One received message, from topic to records. */
void pipeline__process_message(struct tg_pipeline *pl, const struct tg_qmsg *msg);
/* Takes up to max messages off the hand-off queue. Returns how many. */
int pipeline__take_ingress(struct tg_pipeline *pl, int max);
/* Appends a dead letter: the payload (cut to DLQ_PAYLOAD_MAX) with headers saying where it
 * came from and why. */
void pipeline__dead_letter(struct tg_pipeline *pl, const char *topic, size_t topic_len,
                           const char *device, const uint8_t *payload, size_t len,
                           int64_t rx_ms, tg_err why, const char *text);

/* ------------------------------------------------------------------------------------------
 * pipeline_commit.c: the journal side
 */

/* One group commit, with the overflow policy and eviction after it. final: shutdown, write
 * every open record whatever the mode or the cap. */
tg_err pipeline__commit(struct tg_pipeline *pl, bool final);
/* At start: rebuilds the segment list from the journal and restores the dedup window. */
tg_err pipeline__recover(struct tg_pipeline *pl, char *err, size_t errlen);

/* ------------------------------------------------------------------------------------------
 * pipeline_reconcile.c: what the last run sent that the journal does not know
 */

/* Loads the saved marks (at recover). */
void pipeline__marks_load(struct tg_pipeline *pl);
/* Takes the producer's confirmed offsets into kmarks (before a save, before the producer
 * goes). */
void pipeline__marks_merge(struct tg_pipeline *pl);
/* Writes kmarks into the transaction in progress (with the dedup window). */
tg_err pipeline__marks_save(struct tg_pipeline *pl);
/* Starts the read-back, or applies its result once in. Each loop turn. */
void pipeline__reconcile_step(struct tg_pipeline *pl);
/* At start, within the recovery scan (pipeline__recover), after the dedup window is restored:
 * every open telemetry record of the journal is decoded once, from the data the scan read;
 * the window learns its reading (the journal runs ahead of the saved window: a resend of a
 * journaled reading is then a duplicate), and with reconcile_on_start it is indexed by
 * identity for the read-back. _begin makes that index when it is wanted; _seg takes one
 * resident segment (cd: a canonical decoder, now: wall ms). */
struct tg_canonical_decoder;
void pipeline__journal_readings_begin(struct tg_pipeline *pl);
void pipeline__journal_readings_seg(struct tg_pipeline *pl, struct seg *s,
                                    struct tg_canonical_decoder *cd, int64_t now);
/* A reading taken while the read-back runs became record rid (pipeline_ingest.c). */
void pipeline__reconcile_track(struct tg_pipeline *pl, const struct tg_reading *r, uint64_t rid);
/* Frees the read-back's state (a stop, or destroy). */
void pipeline__reconcile_free(struct tg_pipeline *pl);
/* True while nothing may be produced. */
static inline bool pipeline__reconcile_holds(const struct tg_pipeline *pl)
{
    return pl->reconcile_phase != RECONCILE_OFF && pl->reconcile_phase != RECONCILE_DONE;
}

#endif
