/*
 * consumer.c - the worker's consume loop: the clients' configuration, records in, outputs out.
 *
 * The loop polls the group consumer, decodes each record (JSON or CBOR by its content-type
 * header, through common/'s canonical decoder) and offers it to the engine, whose outputs are
 * produced into the open transaction as they are emitted. Every [kafka] commit_interval_ms
 * the transaction is committed with the consumed offsets, and every [worker]
 * snapshot_interval_ms with a checkpoint of each partition's changed state (consumer_txn.c).
 * Records a partition's previous owner already committed outputs for (those after its last
 * checkpoint) are processed again with their outputs suppressed. Every [worker]
 * sweep_interval_ms the engine is swept for silent series, on each partition's own clock.
 * Rebalances happen inside rd_kafka_consumer_poll() (consumer_state.c).
 *
 * Silence or stall: a device is silent only while its partition keeps flowing. Each partition
 * has a clock that follows the wall clock between records but credits a gap between two of
 * its records with at most [worker] stall_after_ms: when nothing arrives for longer (the
 * gateway cannot reach Kafka and holds its backlog, the whole fleet behind one gateway is
 * cut off), the clock stops, and so does every device's quiet time. The backlog that follows
 * fills the gap in event time, so nothing looks silent afterwards either. When nothing fills
 * it (the source froze, readings were lost upstream), the engine sees the partition's event
 * time jump by more than the same limit (tg_engine_config_set_partition_hole_ms, set from
 * stall_after_ms in main.c) and judges the gaps its series report on arrival without that
 * hole (engine_hole.c).
 *
 * Silence while behind: on a partition the worker is behind on (it did not process, by one
 * sweep, what was there at the previous one) the records keep coming but their event times
 * are old, and a worker slower than real time would see every device pause on the wall clock.
 * There the clock follows the partition's event time instead (the engine's highest event time
 * of it), never running faster than the flow clock: quiet time is then measured in the time
 * of the data, so catching up raises no false alert and a device that really stopped is
 * still reported while the worker is behind. A partition being replayed is not swept (its
 * outputs were committed by an earlier owner, and a sweep cannot be replayed).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec_canonical_decode.h"
#include "consumer_internal.h"
#include "log.h"
#include "worker_config.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

tg_err consumer__conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                          size_t errlen)
{
    char why[512];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        /* Never the value: [kafka.rdkafka] pairs come through here, credentials among them,
         * and librdkafka's text may quote it. */
        tg_config_scrub(why, sizeof why, value);
        snprintf(err, errlen, "kafka property %s: %s (the value is not shown)", name, why);
        return TG_ERR_CONFIG;
    }
    return TG_OK;
}

struct pair_ctx {
    rd_kafka_conf_t *conf;
    char *err;
    size_t errlen;
};

static tg_err set_pair(void *arg, const char *key, const char *value, const char *origin)
{
    struct pair_ctx *pc = arg;
    tg_err e = consumer__conf_set(pc->conf, key, value, pc->err, pc->errlen);
    if (e != TG_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", pc->err);
        snprintf(pc->err, pc->errlen, "%s: [kafka.rdkafka] %s", origin, why);
    }
    return e;
}

/* librdkafka's own log lines, through ours (tag "rdkafka"), at the matching level. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    tg_log_level lv = level <= 3 ? TG_LOG_LEVEL_ERROR
                      : level == 4 ? TG_LOG_LEVEL_WARN
                      : level <= 6 ? TG_LOG_LEVEL_INFO
                                   : TG_LOG_LEVEL_DEBUG;
    TG_LOG_RATELIMITED(lv, "rdkafka", 1000, "%s: %s", fac, buf);
}

/* What all three clients share: brokers, client id, our log callback; the [kafka.rdkafka]
 * pass-through goes last, by each caller, after its own properties. */
rd_kafka_conf_t *consumer__conf_new(struct tg_consumer *cs, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char client_id[160];
    snprintf(client_id, sizeof client_id, "%s-%s", tg_config_get_str(cs->cfg, "kafka", "client_id"),
             cs->instance_id);
    if (consumer__conf_set(conf, "bootstrap.servers",
                           tg_config_get_str(cs->cfg, "kafka", "brokers"), err, errlen) != TG_OK ||
        consumer__conf_set(conf, "client.id", client_id, err, errlen) != TG_OK ||
        /* After an outage, reconnect within a second rather than librdkafka's 10 s. */
        consumer__conf_set(conf, "reconnect.backoff.max.ms", "1000", err, errlen) != TG_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    return conf;
}

/* Applies [kafka.rdkafka] to conf, last, so that it can override any of our properties. */
tg_err consumer__conf_passthrough(struct tg_consumer *cs, rd_kafka_conf_t *conf, char *err,
                                size_t errlen)
{
    struct pair_ctx pc = {conf, err, errlen};
    return tg_config_foreach_pair(cs->cfg, "kafka.rdkafka", set_pair, &pc);
}

struct consumer_slot *consumer__slot(struct tg_consumer *cs, int32_t partition)
{
    if (partition < 0)
        return NULL;
    if (partition >= cs->n_slots) {
        int32_t n = cs->n_slots ? cs->n_slots : 16;
        while (n <= partition)
            n *= 2;
        struct consumer_slot *s = realloc(cs->slots, (size_t)n * sizeof *s);
        if (!s)
            return NULL;
        memset(s + cs->n_slots, 0, (size_t)(n - cs->n_slots) * sizeof *s);
        cs->slots = s;
        cs->n_slots = n;
    }
    return &cs->slots[partition];
}

tg_err consumer__produce(struct tg_consumer *cs, const char *topic, int32_t partition,
                         const void *key, size_t key_len, const void *value, size_t value_len,
                         int64_t ts_ms, rd_kafka_headers_t *hdrs)
{
    /* librdkafka's queue holds what is not yet sent; when it is full, serving the producer
     * for a moment makes room (the commit interval bounds how much a transaction holds). */
    rd_kafka_vu_t vus[8];
    size_t n = 0;
    vus[n].vtype = RD_KAFKA_VTYPE_TOPIC;
    vus[n++].u.cstr = topic;
    vus[n].vtype = RD_KAFKA_VTYPE_PARTITION;
    vus[n++].u.i32 = partition;
    vus[n].vtype = RD_KAFKA_VTYPE_KEY;
    vus[n].u.mem.ptr = (void *)key;
    vus[n++].u.mem.size = key_len;
    vus[n].vtype = RD_KAFKA_VTYPE_VALUE;
    vus[n].u.mem.ptr = (void *)value;
    vus[n++].u.mem.size = value_len;
    vus[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vus[n++].u.i = RD_KAFKA_MSG_F_COPY;
    if (ts_ms > 0) {
        vus[n].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
        vus[n++].u.i64 = ts_ms;
    }
    if (hdrs) {
        vus[n].vtype = RD_KAFKA_VTYPE_HEADERS;
        vus[n++].u.headers = hdrs;
    }
    for (int attempt = 0;; attempt++) {
        rd_kafka_error_t *error = rd_kafka_produceva(cs->producer, vus, n);
        rd_kafka_resp_err_t e = error ? rd_kafka_error_code(error) : RD_KAFKA_RESP_ERR_NO_ERROR;
        if (error)
            rd_kafka_error_destroy(error);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            return TG_OK; /* the headers are the message's now */
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || attempt >= 1000) {
            if (hdrs)
                rd_kafka_headers_destroy(hdrs);
            TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "txn", 1000, "cannot produce to %s: %s",
                               topic, rd_kafka_err2str(e));
            cs->txn_failed = true;
            return TG_ERR_UNAVAILABLE;
        }
        rd_kafka_poll(cs->producer, 10);
    }
}

static int kind_index(const char *kind)
{
    for (int i = 0; i < CONSUMER_KINDS - 1; i++)
        if (kind && strcmp(kind, consumer__kinds[i]) == 0)
            return i;
    return CONSUMER_KINDS - 1;
}

static int state_index(const char *state)
{
    for (int i = 0; i < CONSUMER_STATES; i++)
        if (state && strcmp(state, consumer__states[i]) == 0)
            return i;
    return -1;
}

void consumer__emit(void *ud, const struct tg_engine_output *out)
{
    struct tg_consumer *cs = ud;
    if (cs->suppress) {
        /* A replayed record: an earlier owner committed this very output (the engine is
         * deterministic) with the offsets that cover it. */
        tg_counter_inc(cs->m.suppressed);
        return;
    }
    if (cs->in_sweep) {
        /* The sweep changed the series on the wall clock, which a replay cannot redo: the
         * partition's checkpoint goes into this very transaction. */
        struct consumer_slot *slot = consumer__slot(cs, out->partition);
        if (slot) {
            slot->ckpt_due = true;
            slot->state_changed = true;
        }
    }
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(2);
    rd_kafka_header_add(hdrs, "content-type", -1, "application/json", -1);
    const char *topic = cs->aggregates_topic;
    if (out->kind == TG_ENGINE_ALERT) {
        topic = cs->alerts_topic;
        if (out->alert_id)
            rd_kafka_header_add(hdrs, "alert-id", -1, out->alert_id, -1);
        int st = state_index(out->alert_state);
        if (st >= 0)
            cs->txn_alerts[kind_index(out->alert_kind)][st]++;
    } else {
        cs->txn_aggregates++;
    }
    cs->txn_work = true;
    /* Key = device: one device's outputs stay in order in one partition. */
    consumer__produce(cs, topic, RD_KAFKA_PARTITION_UA, out->key, out->key_len, out->value,
                      out->value_len, out->ts_ms, hdrs);
}

/* The canonical record in msg as a reading, by its content-type header (sniffed when absent). */
static tg_err decode(struct tg_canonical_decoder *dec, const rd_kafka_message_t *msg,
                     struct tg_reading *rd)
{
    int cbor = -1;
    rd_kafka_headers_t *hdrs = NULL;
    const void *v;
    size_t vlen;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(hdrs, "content-type", &v, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR)
        cbor = tg_canonical_content_type(v, vlen);
    if (!msg->payload)
        return TG_ERR_MALFORMED;
    return tg_canonical_decode(dec, msg->payload, msg->len, cbor, rd, NULL);
}

static void handle_message(struct tg_consumer *cs, struct tg_canonical_decoder *dec,
                           rd_kafka_message_t *msg)
{
    if (msg->err) {
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            return;
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "consumer", 5000, "consumer: %s",
                           rd_kafka_message_errstr(msg));
        return;
    }
    struct consumer_slot *slot = consumer__slot(cs, msg->partition);
    if (slot && msg->offset + 1 > slot->end_seen)
        slot->end_seen = msg->offset + 1;
    /* A record fetched before a seek or a revoke is not ours to process any more. */
    if (!slot || !slot->assigned || msg->offset < slot->next_offset)
        return;
    if (cs->test_delay_ms > 0 && access(cs->test_slow_file, F_OK) == 0) {
        struct timespec nap = {cs->test_delay_ms / 1000, (cs->test_delay_ms % 1000) * 1000000};
        nanosleep(&nap, NULL);
    }
    tg_counter_inc(cs->m.consumed);
    int64_t mono = mono_ms(), gap = mono - slot->last_record_mono;
    if (gap > cs->stall_after_ms) {
        tg_counter_inc(cs->m.stalls); /* one ends here */
        gap = cs->stall_after_ms;
    }
    if (gap > 0)
        slot->flow_ms += gap;
    slot->last_record_mono = mono;
    cs->suppress = msg->offset < slot->replay_until;
    if (cs->suppress)
        tg_counter_inc(cs->m.replayed);
    struct tg_reading rd;
    tg_err e = decode(dec, msg, &rd);
    /* The one admission check on the worker's clock (the engine reads none): an event time
     * far in the future would become the partition's watermark, which its snapshot keeps.
     * The gateway refuses readings more than [validate] max_skew_ms ahead of its clock, so
     * only another producer or a broken clock gets here. A record judged again after a
     * rewind is judged on a later clock: only one that was within seconds of the limit could
     * be refused once and taken the second time. */
    if (e == TG_OK && cs->max_future_ms > 0 && rd.ts_ms > wall_ms() + cs->max_future_ms)
        e = TG_ERR_CLOCK_SKEW;
    if (e == TG_OK)
        e = tg_engine_process(cs->en, msg->partition, &rd);
    cs->suppress = false;
    if (e != TG_OK) {
        tg_counter_inc(tg_metrics_counter(cs->m.registry, "tidegate_worker_records_invalid_total",
                                          "Records consumed that the worker could not use, by "
                                          "reason (counted and skipped)",
                                          "reason", tg_err_reason(e), NULL));
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "consumer", 5000,
                           "skipping record %s[%" PRId32 "]@%" PRId64 ": %s", cs->input_topic,
                           msg->partition, msg->offset, tg_strerror(e));
    } else {
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
        if (ts > 0)
            tg_histogram_observe(cs->m.latency, (double)(wall_ms() - ts) / 1000.0);
    }
    slot->next_offset = msg->offset + 1;
    slot->advanced = true;
    slot->position_known = true;
    slot->state_changed = true;
    cs->txn_work = true;
}

void consumer__slot_start(struct tg_consumer *cs, struct consumer_slot *slot, int64_t offset)
{
    slot->advanced = false;
    slot->position_known = offset >= 0;
    slot->next_offset = slot->position_known ? offset : 0;
    /* The first commit checkpoints what the partition's records change from here on: a
     * later owner then replays from here rather than from the previous owner's checkpoint,
     * and a state topic written before checkpoints existed gets its first one. */
    slot->ckpt_due = true;
    slot->state_changed = false;
    /* Partitions assigned together checkpoint at eighths of the interval apart, so that
     * their periodic checkpoints do not all land in one commit. */
    int32_t p = (int32_t)(slot - cs->slots);
    slot->next_ckpt_ms = mono_ms() + cs->snapshot_interval_ms * (1 + p % 8) / 8;
    slot->flow_ms = wall_ms();
    slot->last_record_mono = mono_ms();
    slot->hi_at_sweep = 0;
    /* A new clock: the partition's series are new or restored, so none was seen by a sweep. */
    slot->silence_clock = slot->clock_flow = slot->flow_ms;
    slot->event_credit = 0;
    slot->clock_event_known = false;
}

/* Advances slot's silence clock to this sweep (see the top of this file): by the flow clock's
 * step while the worker keeps up; while it is behind, by no more than the event time
 * processed since (event_credit), nor than the flow clock's step. */
static void silence_clock_step(struct tg_consumer *cs, struct consumer_slot *slot, int32_t p,
                               int64_t flow_now, bool behind)
{
    int64_t step = flow_now - slot->clock_flow;
    if (step < 0)
        step = 0;
    slot->clock_flow = flow_now;
    int64_t ev;
    if (tg_engine_partition_max_ts(cs->en, p, &ev)) {
        if (slot->clock_event_known && ev > slot->clock_event)
            slot->event_credit += ev - slot->clock_event;
        if (!slot->clock_event_known || ev > slot->clock_event)
            slot->clock_event = ev;
        slot->clock_event_known = true;
    }
    if (!behind || cs->test_behind_wall) {
        slot->event_credit = 0;
    } else {
        if (step > slot->event_credit)
            step = slot->event_credit;
        slot->event_credit -= step;
        if (slot->event_credit > CONSUMER_EVENT_CREDIT_MAX_MS)
            slot->event_credit = CONSUMER_EVENT_CREDIT_MAX_MS;
    }
    slot->silence_clock += step;
}

/* The end of partition p as cached from the last fetch response, or -1. */
static int64_t cached_end(struct tg_consumer *cs, int32_t p)
{
    int64_t lo, hi;
    if (rd_kafka_get_watermark_offsets(cs->consumer, cs->input_topic, p, &lo, &hi) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    return hi;
}

void consumer__sweep(struct tg_consumer *cs)
{
    if (cs->n_slots <= 0)
        return;
    int64_t *clocks = realloc(cs->sweep_clocks, (size_t)cs->n_slots * sizeof *clocks);
    if (!clocks)
        return; /* the next sweep tries again */
    cs->sweep_clocks = clocks;
    int64_t mono = mono_ms();
    int stalled = 0, behind = 0;
    for (int32_t p = 0; p < cs->n_slots; p++) {
        struct consumer_slot *slot = &cs->slots[p];
        clocks[p] = -1;
        if (!slot->assigned)
            continue;
        int64_t gap = mono - slot->last_record_mono;
        bool flowing = gap <= cs->stall_after_ms;
        if (gap > cs->stall_after_ms)
            gap = cs->stall_after_ms;
        int64_t end = cached_end(cs, p);
        bool caught_up = slot->next_offset >= slot->hi_at_sweep;
        if (end > slot->hi_at_sweep)
            slot->hi_at_sweep = end;
        bool replaying = slot->next_offset < slot->replay_until;
        stalled += !flowing;
        behind += !caught_up || replaying;
        silence_clock_step(cs, slot, p, slot->flow_ms + (gap > 0 ? gap : 0),
                           !caught_up || replaying);
        if (!replaying)
            clocks[p] = slot->silence_clock;
    }
    tg_gauge_set(cs->m.stalled, stalled);
    tg_gauge_set(cs->m.behind, behind);
    cs->in_sweep = true;
    tg_engine_sweep_clocks(cs->en, clocks, (size_t)cs->n_slots, wall_ms());
    cs->in_sweep = false;
}

tg_err tg_consumer_run(struct tg_consumer *cs, atomic_bool *stop)
{
    tg_err rc = TG_OK;
    struct tg_canonical_decoder *dec = tg_canonical_decoder_new(NULL);
    if (!dec)
        return TG_ERR_NOMEM;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, cs->input_topic, RD_KAFKA_PARTITION_UA);
    cs->subscribed = true;
    rd_kafka_resp_err_t ke = rd_kafka_subscribe(cs->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (ke) {
        TG_LOG_ERROR("consumer", "cannot subscribe to %s: %s", cs->input_topic,
                     rd_kafka_err2str(ke));
        tg_canonical_decoder_destroy(dec);
        return TG_ERR_UNAVAILABLE;
    }
    if ((rc = consumer__txn_begin(cs)) != TG_OK) {
        tg_canonical_decoder_destroy(dec);
        return rc;
    }
    atomic_store(&cs->health, HEALTH_OK);
    cs->stop = stop;
    int64_t now = mono_ms();
    int64_t next_commit = now + cs->commit_interval_ms;
    int64_t next_sweep = now + cs->sweep_interval_ms;
    while (!atomic_load(stop)) {
        int64_t wait = (next_commit < next_sweep ? next_commit : next_sweep) - now;
        if (wait > 100) /* look at the stop flag often */
            wait = 100;
        if (wait < 0)
            wait = 0;
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(cs->consumer, (int)wait);
        if (cs->broken) {
            rc = TG_ERR_UNAVAILABLE;
            if (msg)
                rd_kafka_message_destroy(msg);
            break;
        }
        if (cs->rewind_needed) {
            /* An abort (in a rebalance or a commit) left the engine ahead of what is
             * committed: this record will be fetched again from the rewound position. */
            if (msg)
                rd_kafka_message_destroy(msg);
            msg = NULL;
            if (consumer__rewind(cs) != TG_OK) {
                rc = TG_ERR_UNAVAILABLE;
                break;
            }
        }
        if (msg) {
            handle_message(cs, dec, msg);
            rd_kafka_message_destroy(msg);
        }
        now = mono_ms();
        /* Silence is judged on each partition's clock, which stops while the partition is
         * stalled (see the top of this file). */
        if (now >= next_sweep) {
            consumer__sweep(cs);
            next_sweep = now + cs->sweep_interval_ms;
        }
        if (now >= next_commit) {
            rd_kafka_poll(cs->producer, 0); /* serve delivery events */
            consumer__txn_commit(cs, (int)cs->txn_timeout_ms);
            consumer__metrics_lag(cs);
            now = mono_ms();
            next_commit = now + cs->commit_interval_ms;
        }
    }
    tg_canonical_decoder_destroy(dec);
    /* Finish what was processed, then leave: the revoke callback commits anything the last
     * moment added and drops the partitions, so they move to other workers at once instead of
     * after the session timeout. */
    TG_LOG_INFO("consumer", "stopping: %sleaving group %s",
                cs->broken || cs->rewind_needed ? "" : "committing and ",
                tg_config_get_str(cs->cfg, "kafka", "group_id"));
    /* What could not be committed is processed again by the partitions' next owner: nothing
     * is lost, but the exit status says the last transaction did not commit. A checkpoint
     * of every partition held spares the next owners a replay. */
    for (int32_t p = 0; p < cs->n_slots; p++)
        cs->slots[p].ckpt_due = cs->slots[p].assigned;
    if (cs->rewind_needed || cs->broken ||
        consumer__txn_commit(cs, (int)cs->shutdown_timeout_ms) != TG_OK)
        rc = TG_ERR_UNAVAILABLE;
    ke = rd_kafka_consumer_close(cs->consumer);
    if (ke)
        TG_LOG_WARN("consumer", "leaving the group: %s", rd_kafka_err2str(ke));
    if (cs->txn_open && !cs->broken) {
        /* Empty unless the last commit failed: nothing was produced since. */
        rd_kafka_error_t *error = rd_kafka_abort_transaction(cs->producer,
                                                             (int)cs->shutdown_timeout_ms);
        if (error) {
            TG_LOG_WARN("txn", "ending the last transaction: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
        cs->txn_open = false;
    }
    return rc;
}

bool tg_consumer_healthy(struct tg_consumer *cs, char *reason, size_t len)
{
    switch (atomic_load(&cs->health)) {
    case HEALTH_OK: return true;
    case HEALTH_STARTING: snprintf(reason, len, "starting"); return false;
    case HEALTH_PRODUCER_FATAL:
        snprintf(reason, len, "the transactional producer failed and is being replaced");
        return false;
    case HEALTH_FENCED:
        snprintf(reason, len, "fenced by another process with the same instance_id");
        return false;
    default: snprintf(reason, len, "transactions cannot be initialised"); return false;
    }
}

/* Partition count of topic, or -1 (with err) when the cluster does not know it. */
static int topic_partitions(rd_kafka_t *rk, const char *topic, char *err, size_t errlen)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (!rkt) {
        snprintf(err, errlen, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    if (e)
        snprintf(err, errlen, "metadata of topic %s: %s", topic, rd_kafka_err2str(e));
    else if (md->topic_cnt != 1 || md->topics[0].err)
        snprintf(err, errlen, "topic %s: %s", topic,
                 rd_kafka_err2str(md->topic_cnt ? md->topics[0].err
                                                : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
    else
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

static tg_err make_consumer(struct tg_consumer *cs, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = consumer__conf_new(cs, err, errlen);
    if (!conf)
        return TG_ERR_CONFIG;
    char session[24];
    snprintf(session, sizeof session, "%" PRId64, cs->session_timeout_ms);
    const char *const props[][2] = {
        {"group.id", tg_config_get_str(cs->cfg, "kafka", "group_id")},
        /* Cooperative: a rebalance moves only the partitions that change owner; the others
         * keep flowing (no stop-the-world revoke of everything). */
        {"partition.assignment.strategy", "cooperative-sticky"},
        /* Only what other workers (or our own earlier self) committed: the input is written
         * transactionally by nobody today, but the restore and the outputs depend on it. */
        {"isolation.level", "read_committed"},
        /* Offsets are committed only inside our transactions. */
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", cs->offset_reset == TG_WORKER_RESET_LATEST ? "latest" : "earliest"},
        {"session.timeout.ms", session},
        {"heartbeat.interval.ms", cs->session_timeout_ms >= 3000 ? "1000" : "300"},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (consumer__conf_set(conf, props[i][0], props[i][1], err, errlen) != TG_OK)
            goto fail;
    if (consumer__conf_passthrough(cs, conf, err, errlen) != TG_OK)
        goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, consumer__rebalance_cb);
    rd_kafka_conf_set_opaque(conf, cs);
    char why[512];
    cs->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!cs->consumer) {
        snprintf(err, errlen, "kafka consumer: %s", why);
        goto fail;
    }
    conf = NULL; /* rd_kafka_new() took it */
    rd_kafka_poll_set_consumer(cs->consumer);
    return TG_OK;
fail:
    rd_kafka_conf_destroy(conf);
    return TG_ERR_CONFIG;
}

/* The restorer: no group, read_committed, reports the end of each partition. */
static tg_err make_restorer(struct tg_consumer *cs, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = consumer__conf_new(cs, err, errlen);
    if (!conf)
        return TG_ERR_CONFIG;
    char group[300];
    snprintf(group, sizeof group, "%s.restore", tg_config_get_str(cs->cfg, "kafka", "group_id"));
    const char *const props[][2] = {
        {"group.id", group}, /* never joined: partitions are assigned by hand */
        {"isolation.level", "read_committed"},
        {"enable.auto.commit", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "earliest"},
        /* The end of a partition shows as a fetch that returns nothing; by default the broker
         * holds such a fetch for 500 ms, which would be most of a small restore. */
        {"fetch.wait.max.ms", "10"},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (consumer__conf_set(conf, props[i][0], props[i][1], err, errlen) != TG_OK)
            goto fail;
    if (consumer__conf_passthrough(cs, conf, err, errlen) != TG_OK)
        goto fail;
    char why[512];
    cs->restorer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!cs->restorer) {
        snprintf(err, errlen, "kafka restore consumer: %s", why);
        goto fail;
    }
    rd_kafka_poll_set_consumer(cs->restorer);
    return TG_OK;
fail:
    rd_kafka_conf_destroy(conf);
    return TG_ERR_CONFIG;
}

tg_err tg_consumer_new(const struct tg_config *cfg, const char *instance_id,
                       const struct tg_engine_config *ec, struct tg_metrics *metrics,
                       struct tg_consumer **out, char *err, size_t errlen)
{
    *out = NULL;
    tg_err e = TG_ERR_NOMEM;
    struct tg_consumer *cs = calloc(1, sizeof *cs);
    if (!cs) {
        snprintf(err, errlen, "out of memory");
        return TG_ERR_NOMEM;
    }
    atomic_init(&cs->health, HEALTH_STARTING);
    cs->cfg = cfg;
    snprintf(cs->instance_id, sizeof cs->instance_id, "%s", instance_id);
    snprintf(cs->transactional_id, sizeof cs->transactional_id, "tidegate-worker-%s",
             instance_id);
    cs->input_topic = tg_config_get_str(cfg, "kafka", "input_topic");
    cs->alerts_topic = tg_config_get_str(cfg, "kafka", "alerts_topic");
    cs->aggregates_topic = tg_config_get_str(cfg, "kafka", "aggregates_topic");
    cs->state_topic = tg_config_get_str(cfg, "kafka", "state_topic");
    cs->commit_interval_ms = tg_config_get_ms(cfg, "kafka", "commit_interval_ms");
    cs->txn_timeout_ms = tg_config_get_ms(cfg, "kafka", "transaction_timeout_ms");
    cs->session_timeout_ms = tg_config_get_ms(cfg, "kafka", "session_timeout_ms");
    cs->restore_timeout_ms = tg_config_get_ms(cfg, "kafka", "restore_timeout_ms");
    cs->offset_reset = tg_config_get_enum(cfg, "kafka", "auto_offset_reset");
    cs->sweep_interval_ms = tg_config_get_ms(cfg, "worker", "sweep_interval_ms");
    cs->shutdown_timeout_ms = tg_config_get_ms(cfg, "worker", "shutdown_timeout_ms");
    cs->snapshot_interval_ms = tg_config_get_ms(cfg, "worker", "snapshot_interval_ms");
    cs->ckpt_max_records = (uint64_t)tg_config_get_int(cfg, "worker", "checkpoint_max_records");
    cs->ckpt_max_bytes = tg_config_get_size(cfg, "worker", "checkpoint_max_bytes");
    cs->stall_after_ms = tg_config_get_ms(cfg, "worker", "stall_after_ms");
    cs->max_future_ms = tg_config_get_ms(cfg, "worker", "max_future_ms");
    const char *hook = getenv("TIDEGATE_TEST_SLOW_FILE");
    if (hook && *hook) {
        cs->test_slow_file = hook;
        hook = getenv("TIDEGATE_TEST_RECORD_DELAY_MS");
        cs->test_delay_ms = hook ? strtoll(hook, NULL, 10) : 0;
    }
    hook = getenv("TIDEGATE_TEST_BEHIND_CLOCK");
    cs->test_behind_wall = hook && strcmp(hook, "wall") == 0;
    hook = getenv("TIDEGATE_TEST_STALE_GENERATION");
    cs->test_stale_commits = hook ? atoi(hook) : 0;
    cs->test_stale_left = -1;
    consumer__metrics_register(cs, metrics);

    if (!(cs->en = tg_engine_new(ec, consumer__emit, cs))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    e = TG_ERR_CONFIG;
    if (make_consumer(cs, err, errlen) != TG_OK || make_restorer(cs, err, errlen) != TG_OK)
        goto fail;
    e = TG_ERR_UNAVAILABLE;
    int n_in = topic_partitions(cs->restorer, cs->input_topic, err, errlen);
    if (n_in < 0)
        goto fail;
    int n_state = topic_partitions(cs->restorer, cs->state_topic, err, errlen);
    if (n_state < 0)
        goto fail;
    if (n_state < n_in) {
        snprintf(err, errlen,
                 "topic %s has %d partitions, fewer than the %d of %s: partition p of the state "
                 "topic holds the state of input partition p (create it with as many)",
                 cs->state_topic, n_state, n_in, cs->input_topic);
        e = TG_ERR_CONFIG;
        goto fail;
    }
    if ((e = consumer__producer_start(cs, CONSUMER_INIT_TIMEOUT_MS, err, errlen)) != TG_OK)
        goto fail;
    *out = cs;
    return TG_OK;
fail:
    tg_consumer_destroy(cs);
    return e;
}

void tg_consumer_destroy(struct tg_consumer *cs)
{
    if (!cs)
        return;
    /* tg_consumer_run() closed it (leaving the group); a consumer that never ran has nothing
     * to close, and closing here would call the rebalance callback on a half-torn state.
     * One that subscribed but was stopped before its first assignment is left as it is:
     * librdkafka before 2.3.0 asserts in rd_kafka_destroy() on the cooperative-sticky
     * assignor's state, which only exists after an assignment (librdkafka issue 4312, fixed
     * by PR 4381), and so aborted about every second worker stopped while it joined its
     * group (a second on a real broker, several on devkafka). It has left the group; the
     * process is about to exit, which frees it. */
    if (cs->consumer && (cs->group_assigned || !cs->subscribed)) {
        rd_kafka_destroy_flags(cs->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    } else if (cs->consumer) {
        static rd_kafka_t *parked; /* reachable until exit, for leak checkers */
        parked = cs->consumer;
        TG_LOG_DEBUG("consumer", "not destroying the group consumer %s: never assigned "
                                 "(librdkafka issue 4312)", rd_kafka_name(parked));
    }
    if (cs->restorer) {
        rd_kafka_consumer_close(cs->restorer);
        rd_kafka_destroy(cs->restorer);
    }
    if (cs->producer)
        rd_kafka_destroy(cs->producer);
    tg_engine_destroy(cs->en);
    free(cs->sweep_clocks);
    if (cs->test_md)
        rd_kafka_mem_free(NULL, cs->test_md);
    free(cs->slots);
    free(cs);
}
