/*
 * pipeline_ingest.c - one received message to records: decode, validate, dedup, canonical
 * encoding; a rejected payload becomes a dead letter with its reason (see pipeline.h).
 */
#include "pipeline_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_canonical.h"
#include "gateway_config.h"
#include "log.h"

/* While the journal is full under drop_newest, new records are dropped on arrival. */
static bool refuse_new(struct tg_pipeline *pl)
{
    if (pl->overflow != TG_OVERFLOW_DROP_NEWEST || !atomic_load(&pl->full))
        return false;
    tg_counter_inc(pl->m.dropped_full);
    return true;
}

/* A dead letter: the original payload with headers saying where it came from and why. */
void pipeline__dead_letter(struct tg_pipeline *pl, const char *topic, size_t topic_len,
                           const char *device, const uint8_t *payload, size_t len, int64_t rx_ms,
                           tg_err why, const char *text)
{
    if (refuse_new(pl))
        return;
    uint8_t aux[DLQ_HEADERS_MAX];
    size_t aux_len = 0;
    const char *reason = tg_err_reason(why);
    /* Headers in a fixed buffer, the ones a consumer routes on first: reason and device
     * always fit; the topic (tg_pipeline_offer() lets up to 1 KiB through) is cut to the room
     * left rather than lost. */
    (void)tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "reason", reason, strlen(reason));
    (void)tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "device-id", device, strlen(device));
    (void)tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "reason-text", text,
                                 strnlen(text, 400));
    if (topic_len) {
        size_t room = sizeof aux - aux_len - 20 - strlen("mqtt-topic"); /* headers_put's bound */
        (void)tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "mqtt-topic", topic,
                                     topic_len < room ? topic_len : room);
    }
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
    pipeline__append_record(pl, &rec);
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

/* Durable acks: every reading of d with a seq is settled with record rid. */
static void ack_track_all(struct tg_pipeline *pl, const char *device, size_t dev_len,
                          const struct tg_decoded *d, uint64_t rid)
{
    for (size_t i = 0; i < d->n_readings; i++)
        if (d->readings[i].has_seq)
            tg_acker_track(pl->ack, device, dev_len, d->readings[i].boot, d->readings[i].seq,
                           rid);
}

/* Durable acks: the readings the dedup window called duplicates (the caller made sure none
 * was out of the window) are repeats: the node did not get their ack. */
static void ack_repeats(struct tg_pipeline *pl, const char *device, size_t dev_len,
                        const struct tg_decoded *d)
{
    for (size_t i = 0; i < d->n_readings; i++)
        if (!pl->fresh[i] && d->readings[i].has_seq)
            tg_acker_repeat(pl->ack, device, dev_len, d->readings[i].boot, d->readings[i].seq);
}

/* One received message, from topic to records. */
void pipeline__process_message(struct tg_pipeline *pl, const struct tg_qmsg *msg)
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
    bool decoded = rc == TG_OK;
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
        uint64_t dlq_rid = pl->next_rid;
        pipeline__dead_letter(pl, msg->topic, msg->topic_len, device, msg->payload,
                              msg->payload_len, msg->rx_ms, rc, text);
        /* A dead letter settles the readings it carries: the node must not resend them
         * forever. (The payload decoded but failed validation; one that did not decode
         * names no seq to acknowledge.) */
        if (pl->ack && pl->next_rid != dlq_rid && decoded)
            ack_track_all(pl, device, dev_len, &d, pl->next_rid - 1);
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
    if (pl->ack && after.out_of_window == before.out_of_window)
        ack_repeats(pl, device, dev_len, &d);
    for (size_t i = 0; i < d.n_readings; i++) {
        if (!pl->fresh[i])
            continue;
        if (refuse_new(pl)) {
            if (pl->ack)
                tg_acker_refused(pl->ack, device, dev_len);
            continue;
        }
        size_t len;
        if ((rc = encode_reading(pl, &d.readings[i], now, &len)) != TG_OK) {
            /* The decoder only lets finite numbers through, so this is memory. */
            TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "pipeline", 10000, "cannot encode: %s",
                               tg_strerror(rc));
            tg_counter_inc(pl->m.dropped_full);
            if (pl->ack)
                tg_acker_refused(pl->ack, device, dev_len);
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
        uint64_t rid = pipeline__append_record(pl, &rec);
        if (rid)
            pipeline__reconcile_track(pl, &d.readings[i], rid);
        if (pl->ack && !rid)
            tg_acker_refused(pl->ack, device, dev_len);
        else if (pl->ack && d.readings[i].has_seq)
            tg_acker_track(pl->ack, device, dev_len, d.readings[i].boot, d.readings[i].seq, rid);
    }
}

/* Takes up to max messages off the ingress queue. */
int pipeline__take_ingress(struct tg_pipeline *pl, int max)
{
    int n = 0;
    struct tg_qmsg msg;
    while (n < max && tg_queue_peek(pl->q, &msg)) {
        pipeline__process_message(pl, &msg);
        tg_queue_pop(pl->q);
        n++;
    }
    return n;
}
