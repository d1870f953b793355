/*
 * egress_kafka.c - librdkafka producer for telemetry and dead-letter records.
 *
 * In-flight bookkeeping: every produced message carries, as its opaque, a pointer to a slot
 * of a fixed table (sized by queue_max_messages) holding its rid, kind and timestamp. A rid
 * is 64 bits and a pointer may be 32 (armhf), so the rid cannot travel in the opaque itself;
 * the slot table also means no allocation of ours per message.
 */
#include "egress_kafka.h"

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define SCHEMA_VERSION "1"
/* How often the probe thread asks the cluster about both topics, and how long it waits for
 * an answer: it runs beside the pipeline, but tg_egress_destroy() waits for the request in
 * progress, so the wait is short. */
#define TOPIC_PROBE_INTERVAL_MS 5000
#define TOPIC_PROBE_TIMEOUT_MS 1000

struct slot {
    uint64_t rid;
    int64_t ts_ms;
    enum tg_jrecord_kind kind;
    int next_free;
};

struct tg_egress {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    rd_kafka_topic_t *rkt_dlq;
    rd_kafka_queue_t *mainq;
    int pipe_rd, pipe_wr;
    char content_type[64];

    tg_egress_delivery_fn fn;
    void *ud;

    struct slot *slots;
    int n_slots;
    int free_head;   /* freed slots, reused first */
    int fresh;       /* slots[fresh..n_slots) were never used */
    size_t in_flight;

    bool up;
    bool fatal;

    /* Per partition of the telemetry topic, the highest offset confirmed (-1: none). */
    int64_t *marks;
    size_t n_marks;

    /* Per record kind: 0 while its topic takes records as far as we know, else the Kafka
     * error that said it is missing or refused to us. Written by the pipeline thread (a
     * produce or delivery error) and the probe thread (metadata), read by both. */
    atomic_int topic_err[2];
    pthread_t probe;
    bool probe_running;
    pthread_mutex_t probe_mu;
    pthread_cond_t probe_cv;
    bool probe_stop;
};

/* Errors that say a topic is missing or not ours to write: waiting will not help until an
 * operator creates it or grants access, and the other topic must not wait with it. */
static bool topic_error(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        return true;
    default:
        return false;
    }
}

static void note_topic_error(struct tg_egress *eg, enum tg_jrecord_kind kind,
                             rd_kafka_resp_err_t err)
{
    if (topic_error(err))
        atomic_store(&eg->topic_err[kind == TG_JREC_DLQ], (int)err);
}

static tg_err set_prop(rd_kafka_conf_t *conf, const char *section, const char *key,
                       const char *val, char *err, size_t errlen)
{
    char rkerr[512];
    if (rd_kafka_conf_set(conf, key, val, rkerr, sizeof rkerr) != RD_KAFKA_CONF_OK) {
        /* Never the value: it may be a credential (a key, a password, a JAAS line). */
        tg_config_scrub(rkerr, sizeof rkerr, val);
        snprintf(err, errlen, "%s %s: %s", section, key, rkerr);
        return TG_ERR_CONFIG;
    }
    return TG_OK;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug. Connection failures (FAIL)
     * are what an outage looks like, expected and already counted: a warning, not an error. */
    if (level <= 3 && strcmp(fac, "FAIL") == 0)
        level = 4;
    tg_log_level lvl = level <= 3   ? TG_LOG_LEVEL_ERROR
                       : level == 4 ? TG_LOG_LEVEL_WARN
                       : level <= 6 ? TG_LOG_LEVEL_INFO
                                    : TG_LOG_LEVEL_DEBUG;
    TG_LOG(lvl, "kafka", "librdkafka %s: %s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    struct tg_egress *eg = opaque;
    rd_kafka_resp_err_t err = (rd_kafka_resp_err_t)code;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        eg->up = false;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof why);
        eg->fatal = true;
        TG_LOG_ERROR("kafka", "fatal producer error, the producer will be recreated: %s", why);
        return;
    }
    TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "kafka", 10000, "%s: %s", rd_kafka_err2name(err),
                       reason);
}

/* Broker state from the statistics JSON: up when any real broker (nodeid >= 0; bootstrap
 * entries have -1) is in state "UP". Runs on the polling thread. */
static int on_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    (void)rk;
    struct tg_egress *eg = opaque;
    json_error_t jerr;
    json_t *root = json_loadb(json, json_len, 0, &jerr);
    if (!root)
        return 0;
    json_t *brokers = json_object_get(root, "brokers");
    const char *name;
    json_t *b;
    bool any_up = false;
    json_object_foreach(brokers, name, b)
    {
        json_t *id = json_object_get(b, "nodeid");
        const char *st = json_string_value(json_object_get(b, "state"));
        if (json_is_integer(id) && json_integer_value(id) >= 0 && st && strcmp(st, "UP") == 0)
            any_up = true;
    }
    eg->up = any_up;
    json_decref(root);
    return 0; /* librdkafka frees json */
}

/* Maps a delivery error to a tg_err: permanent when the cluster will never accept the
 * record as it is, retriable otherwise (brokers down, leader moves, purges at shutdown). */
static tg_err map_delivery_error(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return TG_OK;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return TG_ERR_TOO_LARGE;
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return TG_ERR_MALFORMED;
    default:
        return TG_ERR_UNAVAILABLE;
    }
}

static void slot_free(struct tg_egress *eg, struct slot *s)
{
    s->next_free = eg->free_head;
    eg->free_head = (int)(s - eg->slots);
    eg->in_flight--;
}

/* Follows the highest confirmed offset per partition (reconcile_kafka.h says why). */
static void note_confirmed(struct tg_egress *eg, size_t partition, int64_t offset)
{
    if (partition >= eg->n_marks) {
        size_t n = partition + 1;
        int64_t *m = realloc(eg->marks, n * sizeof *m);
        if (!m)
            return; /* the mark stays lower: the next start reads back a little more */
        for (size_t p = eg->n_marks; p < n; p++)
            m[p] = -1;
        eg->marks = m;
        eg->n_marks = n;
    }
    if (offset > eg->marks[partition])
        eg->marks[partition] = offset;
}

size_t tg_egress_confirmed_offsets(const struct tg_egress *eg, const int64_t **marks)
{
    *marks = eg->marks;
    return eg->n_marks;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    struct tg_egress *eg = opaque;
    struct slot *s = msg->_private;
    tg_err result = map_delivery_error(msg->err);
    if (result == TG_OK)
        eg->up = true;
    uint64_t rid = s->rid;
    int64_t ts = s->ts_ms;
    enum tg_jrecord_kind kind = s->kind;
    slot_free(eg, s);
    if (result == TG_OK && kind == TG_JREC_TELEMETRY && msg->partition >= 0)
        note_confirmed(eg, (size_t)msg->partition, msg->offset);
    note_topic_error(eg, kind, msg->err);
    eg->fn(eg->ud, rid, kind, ts, result, result == TG_OK ? NULL : rd_kafka_err2str(msg->err));
}

/* The producer configuration: our fixed properties, then the [kafka.rdkafka] pass-through.
 * A property librdkafka refuses is named in err. */
static tg_err build_conf(const struct tg_egress_opts *opts, rd_kafka_conf_t **out, char *err,
                         size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        snprintf(err, errlen, "kafka: out of memory");
        return TG_ERR_NOMEM;
    }
    char num[5][24];
    snprintf(num[0], sizeof num[0], "%d", opts->linger_ms);
    snprintf(num[1], sizeof num[1], "%d", opts->batch_num_messages);
    snprintf(num[2], sizeof num[2], "%d", opts->queue_max_kbytes);
    snprintf(num[3], sizeof num[3], "%d", opts->queue_max_messages);
    snprintf(num[4], sizeof num[4], "%d", opts->compression_level);
    char stats[24];
    snprintf(stats, sizeof stats, "%d", opts->stats_interval_ms);
    const char *const props[][2] = {
        {"bootstrap.servers", opts->brokers},
        {"client.id", opts->client_id},
        /* Idempotence implies acks=all, bounded in-flight requests and ordered retries:
         * what "delete only after Kafka confirms" and per-device order rest on. */
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"compression.codec", opts->compression},
        /* librdkafka makes a new compressor per batch. At zstd's default level 3 that is a
         * ~768 KB table memset per batch (hundreds of batches/s across partitions); level 1
         * halves the CPU per batch and the memory, for about the same ratio on small batches. */
        {"compression.level", num[4]},
        {"linger.ms", num[0]},
        {"batch.num.messages", num[1]},
        {"queue.buffering.max.kbytes", num[2]},
        {"queue.buffering.max.messages", num[3]},
        /* Never fail a message for being old: during an outage messages wait in order; the
         * journal, not a timer, decides what is kept. */
        {"message.timeout.ms", "0"},
        /* The Java client's partitioner, so that JVM consumers agree on placement. */
        {"partitioner", "murmur2_random"},
        {"statistics.interval.ms", stats},
        /* librdkafka backs off up to 10 s between reconnects; after an outage that is up to
         * 10 s of backlog not draining. 1 s is still gentle on a cluster. */
        {"reconnect.backoff.max.ms", "1000"},
    };
    tg_err e = TG_OK;
    for (size_t i = 0; e == TG_OK && i < sizeof props / sizeof props[0]; i++)
        e = set_prop(conf, "[kafka]", props[i][0], props[i][1], err, errlen);
    for (const char *const *kv = opts->rdkafka_conf; e == TG_OK && kv && kv[0]; kv += 2)
        e = set_prop(conf, "[kafka.rdkafka]", kv[0], kv[1], err, errlen);
    if (e != TG_OK) {
        rd_kafka_conf_destroy(conf);
        return e;
    }
    *out = conf;
    return TG_OK;
}

tg_err tg_egress_check_opts(const struct tg_egress_opts *opts, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf;
    tg_err e = build_conf(opts, &conf, err, errlen);
    if (e == TG_OK)
        rd_kafka_conf_destroy(conf);
    return e;
}

/* One metadata request for the topics the producer knows (our two). A topic the cluster
 * lists without error is usable again (the answer also refreshes librdkafka's own view, so
 * its produce calls stop failing); no answer (cluster down) changes nothing. */
static void probe_topics(struct tg_egress *eg)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(eg->rk, 0, NULL, &md, TOPIC_PROBE_TIMEOUT_MS) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    const char *names[2] = {rd_kafka_topic_name(eg->rkt), rd_kafka_topic_name(eg->rkt_dlq)};
    for (int i = 0; i < md->topic_cnt; i++)
        for (int k = 0; k < 2; k++)
            if (strcmp(md->topics[i].topic, names[k]) == 0) {
                rd_kafka_resp_err_t err = md->topics[i].err;
                atomic_store(&eg->topic_err[k], topic_error(err) ? (int)err : 0);
            }
    rd_kafka_metadata_destroy(md);
}

/* The probe thread: checks both topics at start, then every TOPIC_PROBE_INTERVAL_MS, until
 * tg_egress_destroy(). */
static void *probe_main(void *arg)
{
    struct tg_egress *eg = arg;
    pthread_mutex_lock(&eg->probe_mu);
    while (!eg->probe_stop) {
        pthread_mutex_unlock(&eg->probe_mu);
        probe_topics(eg);
        pthread_mutex_lock(&eg->probe_mu);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += TOPIC_PROBE_INTERVAL_MS / 1000;
        while (!eg->probe_stop &&
               pthread_cond_timedwait(&eg->probe_cv, &eg->probe_mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&eg->probe_mu);
    return NULL;
}

static tg_err probe_start(struct tg_egress *eg)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return TG_ERR_NOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&eg->probe_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return TG_ERR_NOMEM;
    if (pthread_mutex_init(&eg->probe_mu, NULL) != 0) {
        pthread_cond_destroy(&eg->probe_cv);
        return TG_ERR_NOMEM;
    }
    if (pthread_create(&eg->probe, NULL, probe_main, eg) != 0) {
        pthread_mutex_destroy(&eg->probe_mu);
        pthread_cond_destroy(&eg->probe_cv);
        return TG_ERR_NOMEM;
    }
    eg->probe_running = true;
    return TG_OK;
}

static void probe_stop(struct tg_egress *eg)
{
    if (!eg->probe_running)
        return;
    pthread_mutex_lock(&eg->probe_mu);
    eg->probe_stop = true;
    pthread_cond_signal(&eg->probe_cv);
    pthread_mutex_unlock(&eg->probe_mu);
    pthread_join(eg->probe, NULL);
    pthread_mutex_destroy(&eg->probe_mu);
    pthread_cond_destroy(&eg->probe_cv);
    eg->probe_running = false;
}

tg_err tg_egress_new(const struct tg_egress_opts *opts, tg_egress_delivery_fn fn, void *ud,
                     struct tg_egress **out, char *err, size_t errlen)
{
    *out = NULL;
    struct tg_egress *eg = calloc(1, sizeof *eg);
    if (!eg) {
        snprintf(err, errlen, "kafka: out of memory");
        return TG_ERR_NOMEM;
    }
    rd_kafka_conf_t *conf;
    tg_err e = build_conf(opts, &conf, err, errlen);
    if (e != TG_OK) {
        free(eg);
        return e;
    }
    eg->pipe_rd = eg->pipe_wr = -1;
    eg->fn = fn;
    eg->ud = ud;
    snprintf(eg->content_type, sizeof eg->content_type, "%s", opts->content_type);

    rd_kafka_conf_set_opaque(conf, eg);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_log_cb(conf, on_log);

    eg->n_slots = opts->queue_max_messages;
    eg->slots = calloc((size_t)eg->n_slots, sizeof *eg->slots);
    if (!eg->slots) {
        snprintf(err, errlen, "kafka: out of memory for %d in-flight slots", eg->n_slots);
        rd_kafka_conf_destroy(conf);
        free(eg);
        return TG_ERR_NOMEM;
    }
    /* Slots are handed out from the never-used tail only when no freed one is left, so the
     * pages of the array (1.2 MB at the default 50,000) become resident only as deep as the
     * in-flight count ever went, usually a few hundred records. */
    eg->free_head = -1;
    eg->fresh = 0;

    char rkerr[512];
    eg->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, rkerr, sizeof rkerr);
    if (!eg->rk) {
        snprintf(err, errlen, "kafka: cannot create producer: %s", rkerr);
        rd_kafka_conf_destroy(conf);
        tg_egress_destroy(eg);
        return TG_ERR_CONFIG;
    }
    conf = NULL; /* owned by eg->rk now */

    eg->rkt = rd_kafka_topic_new(eg->rk, opts->topic, NULL);
    eg->rkt_dlq = rd_kafka_topic_new(eg->rk, opts->dlq_topic, NULL);
    int fds[2];
    if (!eg->rkt || !eg->rkt_dlq || pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "kafka: cannot set up topics or event pipe: %s",
                 rd_kafka_err2str(rd_kafka_last_error()));
        tg_egress_destroy(eg);
        return TG_ERR_INTERNAL;
    }
    eg->pipe_rd = fds[0];
    eg->pipe_wr = fds[1];
    eg->mainq = rd_kafka_queue_get_main(eg->rk);
    rd_kafka_queue_io_event_enable(eg->mainq, eg->pipe_wr, "1", 1);
    if (probe_start(eg) != TG_OK) {
        snprintf(err, errlen, "kafka: cannot start the topic probe thread");
        tg_egress_destroy(eg);
        return TG_ERR_NOMEM;
    }
    *out = eg;
    return TG_OK;
}

void tg_egress_destroy(struct tg_egress *eg)
{
    if (!eg)
        return;
    probe_stop(eg);
    if (eg->rk) {
        /* Fail everything still queued or in flight, and report it, so the caller keeps
         * those records; nothing is dropped on the floor. */
        rd_kafka_purge(eg->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        while (eg->in_flight > 0 && rd_kafka_outq_len(eg->rk) > 0)
            rd_kafka_poll(eg->rk, 100);
        rd_kafka_poll(eg->rk, 0);
    }
    if (eg->mainq) {
        rd_kafka_queue_io_event_enable(eg->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(eg->mainq);
    }
    if (eg->rkt)
        rd_kafka_topic_destroy(eg->rkt);
    if (eg->rkt_dlq)
        rd_kafka_topic_destroy(eg->rkt_dlq);
    if (eg->rk)
        rd_kafka_destroy(eg->rk);
    if (eg->pipe_rd >= 0)
        close(eg->pipe_rd);
    if (eg->pipe_wr >= 0)
        close(eg->pipe_wr);
    free(eg->slots);
    free(eg->marks);
    free(eg);
}

static tg_err map_produce_error(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return TG_OK;
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return TG_ERR_FULL;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        return TG_ERR_TOO_LARGE;
    default:
        return TG_ERR_UNAVAILABLE;
    }
}

tg_err tg_egress_produce(struct tg_egress *eg, const struct tg_jrecord *rec)
{
    if (eg->free_head < 0 && eg->fresh == eg->n_slots)
        return TG_ERR_FULL;
    struct slot *s = &eg->slots[eg->free_head >= 0 ? eg->free_head : eg->fresh];
    rd_kafka_resp_err_t err;

    if (rec->kind == TG_JREC_TELEMETRY) {
        err = rd_kafka_producev(
            eg->rk, RD_KAFKA_V_RKT(eg->rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(rec->key, rec->key_len),
            RD_KAFKA_V_VALUE((void *)rec->value, rec->value_len),
            RD_KAFKA_V_TIMESTAMP(rec->ts_ms),
            RD_KAFKA_V_HEADER("content-type", eg->content_type, -1),
            RD_KAFKA_V_HEADER("schema-version", SCHEMA_VERSION, -1), RD_KAFKA_V_OPAQUE(s),
            RD_KAFKA_V_END);
    } else {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
        rd_kafka_header_add(hdrs, "content-type", -1, "application/octet-stream", -1);
        size_t pos = 0, name_len, value_len;
        const char *name;
        const uint8_t *value;
        while (tg_jrecord_headers_next(rec->aux, rec->aux_len, &pos, &name, &name_len, &value,
                                       &value_len))
            rd_kafka_header_add(hdrs, name, (ssize_t)name_len, value, (ssize_t)value_len);
        err = rd_kafka_producev(
            eg->rk, RD_KAFKA_V_RKT(eg->rkt_dlq), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(rec->key, rec->key_len),
            RD_KAFKA_V_VALUE((void *)rec->value, rec->value_len),
            RD_KAFKA_V_TIMESTAMP(rec->ts_ms), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(s),
            RD_KAFKA_V_END);
        if (err)
            rd_kafka_headers_destroy(hdrs); /* ownership passes only on success */
    }
    if (err) {
        note_topic_error(eg, rec->kind, err);
        return map_produce_error(err);
    }
    s->rid = rec->rid;
    s->ts_ms = rec->ts_ms;
    s->kind = rec->kind;
    if (eg->free_head >= 0)
        eg->free_head = s->next_free;
    else
        eg->fresh++;
    eg->in_flight++;
    return TG_OK;
}

int tg_egress_poll(struct tg_egress *eg, int timeout_ms)
{
    char drain[64];
    while (read(eg->pipe_rd, drain, sizeof drain) > 0)
        ;
    return rd_kafka_poll(eg->rk, timeout_ms);
}

int tg_egress_fd(const struct tg_egress *eg) { return eg->pipe_rd; }

size_t tg_egress_in_flight(const struct tg_egress *eg) { return eg->in_flight; }

bool tg_egress_up(const struct tg_egress *eg) { return eg->up; }

bool tg_egress_fatal(const struct tg_egress *eg) { return eg->fatal; }

int tg_egress_topic_error(const struct tg_egress *eg, enum tg_jrecord_kind kind)
{
    return atomic_load(&((struct tg_egress *)eg)->topic_err[kind == TG_JREC_DLQ]);
}

const char *tg_egress_error_name(int code) { return rd_kafka_err2name((rd_kafka_resp_err_t)code); }

tg_err tg_egress_flush(struct tg_egress *eg, int timeout_ms)
{
    rd_kafka_resp_err_t err = rd_kafka_flush(eg->rk, timeout_ms);
    rd_kafka_poll(eg->rk, 0);
    return err == RD_KAFKA_RESP_ERR_NO_ERROR && eg->in_flight == 0 ? TG_OK : TG_ERR_TIMEOUT;
}
