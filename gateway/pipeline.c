/*
 * pipeline.c - the pipeline's thread loop and its API (see pipeline.h); the record store,
 * ingest and commit live in pipeline_backlog.c, pipeline_ingest.c and pipeline_commit.c,
 * which share pipeline_internal.h.
 */
#include "pipeline_internal.h"

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

#include "gateway_config.h"
#include "log.h"

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
    pm->reconcile_found = tg_metrics_counter(
        m, "tidegate_kafka_readback_found_total",
        "Readings of this gateway found in Kafka past the last saved point at a start (fed "
        "to the dedup window: a node's resend of one is a duplicate)",
        NULL);
    pm->reconcile_skipped = tg_metrics_counter(
        m, "tidegate_kafka_readback_skipped_total",
        "Journal records not sent again at a start because Kafka already held them", NULL);
    const char *topic_help = "1 while the topic takes records as far as known, 0 while the "
                             "cluster says it is missing or not writable by us";
    pm->topic_available[TG_JREC_TELEMETRY] = tg_metrics_gauge(
        m, "tidegate_kafka_topic_available", topic_help, "kind", "telemetry", "topic",
        tg_config_get_str(pl->cfg, "kafka", "topic"), NULL);
    pm->topic_available[TG_JREC_DLQ] = tg_metrics_gauge(
        m, "tidegate_kafka_topic_available", topic_help, "kind", "dlq", "topic",
        tg_config_get_str(pl->cfg, "kafka", "dlq_topic"), NULL);
    for (int k = 0; k < 2; k++)
        tg_gauge_set(pm->topic_available[k], 1);
}

static void update_gauges(struct tg_pipeline *pl)
{
    pipeline__update_oldest(pl);
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
    if (tg_egress_new(&pl->egress_opts, pipeline__on_delivery, pl, &pl->eg, err, sizeof err) !=
        TG_OK) {
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
    pipeline__marks_merge(pl);
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
    int work = take ? pipeline__take_ingress(pl, TAKE_BATCH) : 0;
    /* No delivery report will clear a full queue with nothing in it: look again. */
    if (pl->egress_full && pl->eg && tg_egress_in_flight(pl->eg) == 0)
        pl->egress_full = false;
    pipeline__check_topics(pl);
    if (work)
        check_backpressure(pl);
    if (pl->n_rejects)
        pipeline__handle_rejects(pl);
    if (!pl->eg)
        make_egress(pl);
    pipeline__reconcile_step(pl);
    if (!pipeline__reconcile_holds(pl))
        work += pipeline__produce_step(pl, PRODUCE_BATCH);
    if (pl->eg) {
        work += poll_reports(pl, 0);
        if (tg_egress_fatal(pl->eg))
            replace_egress(pl);
    }
    int64_t now = mono_ms();
    if (now >= pl->next_commit_ms) {
        (void)pipeline__commit(pl, false);
        pl->next_commit_ms = now + pl->commit_interval_ms;
        if (pl->ack) /* at most one ack per device per commit */
            tg_acker_flush(pl->ack, now);
    }
    update_gauges(pl);
    if (pl->heartbeat_fn && now >= pl->next_heartbeat_ms) {
        int64_t oldest = atomic_load_explicit(&pl->oldest_rx_ms, memory_order_relaxed);
        int64_t age = oldest ? wall_ms() - oldest : 0;
        pl->heartbeat_fn(pl->heartbeat_ud, pl->open_records, tg_journal_data_bytes(pl->jr),
                         age > 0 ? age : 0, pl->eg && tg_egress_up(pl->eg));
        pl->next_heartbeat_ms = now + pl->heartbeat_interval_ms;
    }
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
    int64_t deadline = atomic_load(&pl->stop_deadline_ms);
    TG_LOG_INFO("pipeline", "stopping: %zu records not yet confirmed by Kafka",
                pl->open_records);
    while (pl->open_records > 0 && mono_ms() < deadline && !atomic_load(&pl->hurry) && pl->eg &&
           tg_egress_up(pl->eg) && !pipeline__reconcile_holds(pl) &&
           (tg_egress_in_flight(pl->eg) > 0 || (!pl->parked_rid[0] && !pl->parked_rid[1]))) {
        turn(pl, false);
        if (pl->eg)
            poll_reports(pl, 20);
    }
    /* A read-back still under way is dropped: the saved marks stay, and the next start
     * reads back from them again. */
    pipeline__reconcile_free(pl);
    pipeline__marks_merge(pl);
    tg_egress_destroy(pl->eg);
    pl->eg = NULL;
    pl->exit_status = pipeline__commit(pl, true);
    TG_LOG_INFO("pipeline", "stopped: %zu records kept in the journal for the next start",
                pl->open_records);
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * the API
 */

void tg_pipeline_set_heartbeat(struct tg_pipeline *pl, int64_t interval_ms,
                               tg_pipeline_heartbeat_fn fn, void *ud)
{
    pl->heartbeat_fn = fn;
    pl->heartbeat_ud = ud;
    pl->heartbeat_interval_ms = interval_ms > 0 ? interval_ms : 1000;
    pl->next_heartbeat_ms = 0; /* the first turn calls it */
}

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
    pl->seal_stored_bytes = (double)pl->max_bytes / SEGMENTS_PER_CAP;
    if (moved_aside)
        TG_LOG_ERROR("journal", "%s failed its check and was moved aside (.corrupt-*); started "
                                "a fresh journal",
                     path);
    register_metrics(pl);
    if ((rc = tg_acker_from_config(cfg, metrics, &pl->ack)) != TG_OK)
        goto fail;
    /* Also teaches the dedup window the journaled readings, in the same pass. */
    if ((rc = pipeline__recover(pl, err, errlen)) != TG_OK)
        goto fail;
    if (tg_config_get_bool(cfg, "kafka", "reconcile_on_start")) {
        pipeline__marks_load(pl);
        pl->reconcile_phase = RECONCILE_NEED;
    }

    if ((rc = fill_egress_opts(pl)) != TG_OK)
        goto fail;
    if ((rc = tg_egress_new(&pl->egress_opts, pipeline__on_delivery, pl, &pl->eg, err,
                            errlen)) != TG_OK)
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
    /* Once stopping, what the ingress still holds was acknowledged to the broker: take it,
     * past the cap if need be (the final commit writes it), or the stop would wait for room
     * that only Kafka can make. */
    if (pl->overflow == TG_OVERFLOW_BACKPRESSURE &&
        atomic_load_explicit(&pl->full, memory_order_relaxed) &&
        !atomic_load_explicit(&pl->stopping, memory_order_relaxed))
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

void tg_pipeline_begin_stop(struct tg_pipeline *pl, int64_t timeout_ms)
{
    long long none = 0;
    atomic_compare_exchange_strong(&pl->stop_deadline_ms, &none, mono_ms() + timeout_ms);
    atomic_store(&pl->stopping, true);
}

void tg_pipeline_hurry(struct tg_pipeline *pl) { atomic_store(&pl->hurry, true); }

tg_err tg_pipeline_stop(struct tg_pipeline *pl, int64_t timeout_ms)
{
    if (!pl->started || pl->joined)
        return pl->exit_status;
    tg_pipeline_begin_stop(pl, timeout_ms); /* no-op when called already */
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
    pipeline__reconcile_free(pl);
    free(pl->kmarks);
    tg_egress_destroy(pl->eg);
    pl->eg = NULL;
    while (pl->head)
        pipeline__list_remove(pl, pl->head);
    tg_journal_close(pl->jr);
    tg_dedup_destroy(pl->dd);
    tg_acker_destroy(pl->ack);
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
    return tg_pipeline_health(pl, NULL, 0);
}

bool tg_pipeline_health(const struct tg_pipeline *pl, char *reason, size_t len)
{
    struct tg_pipeline *p = (struct tg_pipeline *)pl;
    if (!atomic_load(&p->healthy)) {
        if (len)
            snprintf(reason, len, "the journal cannot be written");
        return false;
    }
    for (int k = 0; k < 2; k++) {
        int err = atomic_load(&p->topic_err_shared[k]);
        if (err) {
            if (len)
                snprintf(reason, len, "Kafka topic %s cannot take records (%s)",
                         tg_config_get_str(pl->cfg, "kafka", k == TG_JREC_DLQ ? "dlq_topic"
                                                                               : "topic"),
                         tg_egress_error_name(err));
            return false;
        }
    }
    return true;
}

void tg_pipeline_set_ack_publisher(struct tg_pipeline *pl, tg_ack_publish_fn fn, void *ud)
{
    if (pl->ack)
        tg_acker_set_publisher(pl->ack, fn, ud);
}

void tg_pipeline_request_reload(struct tg_pipeline *pl) { atomic_store(&pl->reload, true); }
