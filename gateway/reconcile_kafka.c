/*
 * reconcile_kafka.c - reading back what an earlier run put in Kafka (reconcile_kafka.h).
 *
 * One consumer without offset commits, assigned each partition of the telemetry topic at the
 * saved mark + 1, read up to the end offset seen at the start: records appended later are
 * not this gateway's earlier run's (it is dead, and this run sends nothing before the
 * result is in).
 */
#include "reconcile_kafka.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "codec_canonical_decode.h"
#include "log.h"
#include "strmap.h"

#define RETRY_MS 1000
/* Each blocking call's bound: a stop waits for at most one of them. */
#define CALL_TIMEOUT_MS 1000
/* A fetch that makes no progress this long starts the attempt over. */
#define STALL_MS 30000
/* The consumer's prefetch (make_consumer() says why it is bounded; tests/bench/
 * bench_readback.c measures the trade: smaller reads back slower). */
#define READ_QUEUE_MESSAGES "20000"
#define READ_QUEUE_KBYTES "16384"
#define FETCH_MAX_BYTES "16777216"
#define PARTITION_FETCH_BYTES "1048576"
/* Attempts that found the cluster answering but a partition's end offset unknown (no leader:
 * its broker is away) before that partition is skipped: the producer can send to the others
 * meanwhile, and holding all of it for one partition's outage would fill the journal. */
#define SKIP_AFTER_TRIES 5


struct found {
    char device[TG_DEVICE_ID_MAX + 1];
    bool has_seq;
    uint64_t boot, seq;
    int64_t ts_ms;
};

struct tg_reconcile {
    /* copies of the options */
    char *brokers, *topic, *gateway_id;
    char **conf;     /* key, value, ..., NULL */
    int64_t *marks;
    size_t n_marks;
    bool read;
    size_t max_records;

    pthread_t thread;
    bool started;
    atomic_bool stop;
    /* Who frees: RUNNING until the thread ends, then FINISHED (the owner joins and frees);
     * ABANDONED when the owner gave up waiting (a stop): the thread frees on its way out,
     * so that a librdkafka call stuck on an unreachable cluster cannot hold a stop. */
    atomic_int state;

    /* results: found and pos under mu (the owner takes them while the thread reads); the
     * rest written by the thread before state says FINISHED */
    pthread_mutex_t mu;
    struct found *found;
    size_t n_found, cap_found;
    int64_t *pos;    /* per partition, the last offset read (-1: none yet) */
    size_t n_pos;
    struct tg_strmap *index;
    int64_t *ends;
    size_t n_ends;
    bool truncated;
    bool refused;    /* the cluster refused this reader for good: given up */
    int partial_tries; /* attempts that failed on one partition's end offset */
    uint64_t records_read;
    char why[160];   /* the last attempt's failure */
};

enum { RUNNING, FINISHED, ABANDONED };

/* The cluster answers but will never let this reader read the topic (a producer-only ACL:
 * WRITE and DESCRIBE without READ). Waiting would hold sending for ever: the read-back is
 * given up instead (a possible duplicate, never a loss). */
static bool refusal(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
           err == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED;
}

/* Gives up: TG_OK, as a read cut short (the owner applies what was found). */
static tg_err give_up(struct tg_reconcile *rc, const char *what, rd_kafka_resp_err_t err)
{
    snprintf(rc->why, sizeof rc->why, "%s: %s", what, rd_kafka_err2str(err));
    rc->refused = true;
    rc->truncated = true;
    return TG_OK;
}

static void free_all(struct tg_reconcile *rc);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits ms unless told to stop. True when told to stop. */
static bool pause_or_stop(struct tg_reconcile *rc, int ms)
{
    for (int waited = 0; waited < ms; waited += 50) {
        if (atomic_load(&rc->stop))
            return true;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&rc->stop);
}

static size_t identity(char *buf, size_t cap, const char *device, bool has_seq, uint64_t boot,
                       uint64_t seq, int64_t ts_ms)
{
    int n = has_seq ? snprintf(buf, cap, "%s/s%llu/%llu", device, (unsigned long long)boot,
                               (unsigned long long)seq)
                    : snprintf(buf, cap, "%s/t%lld", device, (long long)ts_ms);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t tg_reconcile_identity(const struct tg_reading *r, char *buf, size_t cap)
{
    return identity(buf, cap, r->device, r->has_seq, r->boot, r->seq, r->ts_ms);
}

static void add_found(struct tg_reconcile *rc, const struct tg_reading *r)
{
    char key[TG_DEVICE_ID_MAX + 64];
    size_t klen = identity(key, sizeof key, r->device, r->has_seq, r->boot, r->seq, r->ts_ms);
    if (!klen || tg_strmap_get(rc->index, key, klen, NULL))
        return;
    if (rc->n_found == rc->cap_found) {
        size_t cap = rc->cap_found ? rc->cap_found * 2 : 1024;
        struct found *f = realloc(rc->found, cap * sizeof *f);
        if (!f)
            return; /* a possible duplicate, not a loss */
        rc->found = f;
        rc->cap_found = cap;
    }
    if (tg_strmap_put(rc->index, key, klen, (uint32_t)rc->n_found) != TG_OK)
        return;
    struct found *f = &rc->found[rc->n_found++];
    snprintf(f->device, sizeof f->device, "%s", r->device);
    f->has_seq = r->has_seq;
    f->boot = r->boot;
    f->seq = r->seq;
    f->ts_ms = r->ts_ms;
}

/* librdkafka's own lines: the cluster being away is what the retry loop is for, so they
 * go to debug output (the pipeline logs one line when it waits). */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk, (void)level;
    TG_LOG_DEBUG("kafka", "reconcile: %s: %s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk, (void)opaque;
    TG_LOG_DEBUG("kafka", "reconcile: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err),
                 reason);
}

static rd_kafka_t *make_consumer(struct tg_reconcile *rc)
{
    char errstr[512];
    char client[300];
    snprintf(client, sizeof client, "tidegate-reconcile-%s", rc->gateway_id);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    /* The pass-through first (security settings; producer-only keys are ignored by a
     * consumer), then what this reader needs. */
    for (size_t i = 0; rc->conf && rc->conf[i] && rc->conf[i + 1]; i += 2)
        (void)rd_kafka_conf_set(conf, rc->conf[i], rc->conf[i + 1], errstr, sizeof errstr);
    /* Partitions are assigned by hand and no offset is ever committed; librdkafka's
     * consumer still wants a group id. */
    const char *kv[] = {"bootstrap.servers", rc->brokers,
                        "group.id", client,
                        "client.id", client,
                        "enable.auto.commit", "false",
                        "enable.auto.offset.store", "false",
                        "enable.partition.eof", "true",
                        "fetch.wait.max.ms", "10",
                        /* librdkafka prefetches up to 100,000 messages or 64 MiB per
                         * partition by default: a whole read-back at once, several times
                         * the gateway's steady size. This reader decodes as it goes; a
                         * smaller queue costs it fetch round trips (time before sending
                         * starts), a larger one memory. */
                        "queued.min.messages", READ_QUEUE_MESSAGES,
                        "queued.max.messages.kbytes", READ_QUEUE_KBYTES,
                        "fetch.max.bytes", FETCH_MAX_BYTES,
                        "max.partition.fetch.bytes", PARTITION_FETCH_BYTES,
                        "reconnect.backoff.max.ms", "1000",
                        "log_level", "3",
                        NULL};
    for (size_t i = 0; kv[i]; i += 2)
        if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
            TG_LOG_ERROR("kafka", "reconcile: %s=%s: %s", kv[i], kv[i + 1], errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        TG_LOG_ERROR("kafka", "reconcile: cannot create a consumer: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* The topic's partition count: > 0, 0 when the topic does not exist, -1 on a failure to
 * retry (cluster unreachable), -2 when the cluster refuses it to us (refusal()). */
static int partition_count(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return -1;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, CALL_TIMEOUT_MS);
    rd_kafka_topic_destroy(rkt);
    if (err)
        return -1;
    int n = -1;
    if (md->topic_cnt == 1) {
        rd_kafka_resp_err_t terr = md->topics[0].err;
        if (terr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            n = 0;
        else if (refusal(terr))
            n = -2;
        else if (!terr)
            n = md->topics[0].partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    return n;
}

/* One read of [start, end) of every partition. TG_OK, TG_ERR_UNAVAILABLE (try again). */
static tg_err read_back(struct tg_reconcile *rc, rd_kafka_t *rk,
                        struct tg_canonical_decoder *cd, const int64_t *start, size_t n)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    size_t open = 0;
    for (size_t p = 0; p < n; p++)
        if (start[p] < rc->ends[p] + 1) {
            rd_kafka_topic_partition_list_add(list, rc->topic, (int32_t)p)->offset = start[p];
            open++;
        }
    tg_err res = TG_OK;
    bool open_assigned = open > 0;
    rd_kafka_resp_err_t aerr = open ? rd_kafka_assign(rk, list) : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (aerr) {
        snprintf(rc->why, sizeof rc->why, "assign: %s", rd_kafka_err2str(aerr));
        res = TG_ERR_UNAVAILABLE;
    }
    rd_kafka_topic_partition_list_destroy(list);
    bool *closed = calloc(n, sizeof *closed);
    if (!closed)
        return TG_ERR_NOMEM;
    pthread_mutex_lock(&rc->mu);
    if (rc->n_pos < n) {
        int64_t *pos = realloc(rc->pos, n * sizeof *pos);
        if (pos) {
            for (size_t p = rc->n_pos; p < n; p++)
                pos[p] = -1;
            rc->pos = pos;
            rc->n_pos = n;
        }
    }
    pthread_mutex_unlock(&rc->mu);
    int64_t progress_ms = now_ms();
    while (res == TG_OK && open > 0 && !atomic_load(&rc->stop)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg) {
            if (now_ms() - progress_ms > STALL_MS) {
                snprintf(rc->why, sizeof rc->why, "no progress reading for %d s",
                         STALL_MS / 1000);
                res = TG_ERR_UNAVAILABLE;
            }
            continue;
        }
        size_t p = (size_t)msg->partition;
        bool eof = msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        if (msg->err && !eof) {
            if (refusal(msg->err)) {
                res = give_up(rc, "fetch", msg->err);
                rd_kafka_message_destroy(msg);
                break;
            }
            if (msg->err == RD_KAFKA_RESP_ERR__FATAL) {
                snprintf(rc->why, sizeof rc->why, "%s", rd_kafka_message_errstr(msg));
                res = TG_ERR_UNAVAILABLE;
            }
            rd_kafka_message_destroy(msg);
            continue; /* transport errors: librdkafka retries */
        }
        progress_ms = now_ms();
        if (!eof && p < n && !closed[p] && msg->offset <= rc->ends[p]) {
            rc->records_read++;
            struct tg_reading r;
            struct tg_canonical_extra extra;
            bool ours = msg->payload &&
                        tg_canonical_decode(cd, msg->payload, msg->len, -1, &r, &extra) ==
                            TG_OK &&
                        extra.gateway && strcmp(extra.gateway, rc->gateway_id) == 0;
            /* The reading and the position move together: the owner may take both as a
             * checkpoint at any time (tg_reconcile_take). */
            pthread_mutex_lock(&rc->mu);
            if (ours)
                add_found(rc, &r);
            if (p < rc->n_pos && msg->offset > rc->pos[p])
                rc->pos[p] = msg->offset;
            pthread_mutex_unlock(&rc->mu);
        }
        if (p < n && !closed[p] && (eof || msg->offset >= rc->ends[p])) {
            closed[p] = true;
            open--;
        }
        rd_kafka_message_destroy(msg);
        if (rc->records_read >= rc->max_records && open > 0) {
            rc->truncated = true;
            break;
        }
    }
    free(closed);
    if (open_assigned)
        (void)rd_kafka_assign(rk, NULL);
    if (atomic_load(&rc->stop))
        return TG_ERR_UNAVAILABLE;
    return res;
}

/* One attempt: partitions, end offsets, the read. TG_OK when finished. */
static tg_err attempt(struct tg_reconcile *rc, rd_kafka_t *rk, struct tg_canonical_decoder *cd)
{
    int parts = partition_count(rk, rc->topic);
    if (parts == -2)
        return give_up(rc, "metadata", RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    if (parts < 0) {
        snprintf(rc->why, sizeof rc->why, "no metadata for topic %s", rc->topic);
        return TG_ERR_UNAVAILABLE;
    }
    free(rc->ends);
    rc->ends = NULL;
    rc->n_ends = 0;
    if (parts == 0)
        return TG_OK; /* no topic: nothing of ours is in it */
    int64_t *ends = malloc((size_t)parts * sizeof *ends);
    int64_t *start = malloc((size_t)parts * sizeof *start);
    tg_err res = ends && start ? TG_OK : TG_ERR_NOMEM;
    for (int p = 0; p < parts && res == TG_OK; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, rc->topic, p, &lo, &hi, CALL_TIMEOUT_MS);
        if (refusal(err)) {
            res = give_up(rc, "end offsets", err);
            break;
        }
        if (err && rc->partial_tries >= SKIP_AFTER_TRIES) {
            /* Not read: its mark stays (ends -1 moves nothing), and what the last run sent
             * to it may be sent again; never lost. */
            TG_LOG_WARN("kafka", "read-back: skipping %s[%d] (end offset: %s): what the last "
                                 "run sent to it may reach Kafka twice",
                        rc->topic, p, rd_kafka_err2str(err));
            ends[p] = -1;
            start[p] = 0;
            rc->truncated = true;
            continue;
        }
        if (err) {
            snprintf(rc->why, sizeof rc->why, "end offset of %s[%d]: %s", rc->topic, p,
                     rd_kafka_err2str(err));
            rc->partial_tries++;
            res = TG_ERR_UNAVAILABLE;
            break;
        }
        ends[p] = hi - 1;
        int64_t from = (size_t)p < rc->n_marks && rc->marks[p] >= 0 ? rc->marks[p] + 1 : lo;
        start[p] = !rc->read ? hi : from < lo ? lo : from;
    }
    if (res == TG_OK && !rc->refused) {
        rc->ends = ends;
        rc->n_ends = (size_t)parts;
        ends = NULL;
        res = read_back(rc, rk, cd, start, (size_t)parts);
    }
    free(ends);
    free(start);
    return res;
}

static void *reconcile_main(void *arg)
{
    struct tg_reconcile *rc = arg;
    struct tg_canonical_decoder *cd = tg_canonical_decoder_new(NULL);
    rd_kafka_t *rk = NULL;
    bool logged = false;
    while (!atomic_load(&rc->stop)) {
        if (!rk)
            rk = make_consumer(rc);
        tg_err res = rk && cd ? attempt(rc, rk, cd) : TG_ERR_NOMEM;
        if (res == TG_OK && rc->refused)
            TG_LOG_ERROR("kafka", "cannot read back what the last run sent (%s): sending "
                                  "without it, so a reading may reach Kafka twice; grant "
                                  "READ on topic %s (README, kafka.reconcile_on_start)",
                         rc->why, rc->topic);
        if (res == TG_OK)
            break;
        if (!atomic_load(&rc->stop)) {
            if (!logged)
                TG_LOG_WARN("kafka", "cannot read back what the last run sent yet (%s): "
                                     "sending waits, and this is tried every second",
                            res == TG_ERR_UNAVAILABLE ? rc->why : tg_strerror(res));
            else
                TG_LOG_DEBUG("kafka", "reconcile: %s",
                             res == TG_ERR_UNAVAILABLE ? rc->why : tg_strerror(res));
            logged = true;
        }
        if (pause_or_stop(rc, RETRY_MS))
            break;
    }
    if (rk) /* no group joined: no consumer close (it would wait for a coordinator) */
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    tg_canonical_decoder_destroy(cd);
    int running = RUNNING;
    if (!atomic_compare_exchange_strong(&rc->state, &running, FINISHED))
        free_all(rc); /* abandoned: nobody else will */
    return NULL;
}

static char *dup_str(const char *s) { return s ? strdup(s) : strdup(""); }

tg_err tg_reconcile_start(const struct tg_reconcile_opts *opts, struct tg_reconcile **out)
{
    *out = NULL;
    struct tg_reconcile *rc = calloc(1, sizeof *rc);
    if (!rc)
        return TG_ERR_NOMEM;
    rc->brokers = dup_str(opts->brokers);
    rc->topic = dup_str(opts->topic);
    rc->gateway_id = dup_str(opts->gateway_id);
    rc->read = opts->read;
    rc->max_records = opts->max_records ? opts->max_records : TG_RECONCILE_MAX_RECORDS;
    rc->index = tg_strmap_new();
    size_t nconf = 0;
    while (opts->rdkafka_conf && opts->rdkafka_conf[nconf])
        nconf++;
    rc->conf = calloc(nconf + 1, sizeof *rc->conf);
    if (opts->n_marks) {
        rc->marks = malloc(opts->n_marks * sizeof *rc->marks);
        if (rc->marks) {
            memcpy(rc->marks, opts->marks, opts->n_marks * sizeof *rc->marks);
            rc->n_marks = opts->n_marks;
        }
    }
    bool ok = rc->brokers && rc->topic && rc->gateway_id && rc->index && rc->conf &&
              (!opts->n_marks || rc->marks);
    for (size_t i = 0; ok && i < nconf; i++)
        ok = (rc->conf[i] = strdup(opts->rdkafka_conf[i])) != NULL;
    atomic_init(&rc->stop, false);
    atomic_init(&rc->state, RUNNING);
    pthread_mutex_init(&rc->mu, NULL);
    if (!ok || pthread_create(&rc->thread, NULL, reconcile_main, rc) != 0) {
        tg_reconcile_destroy(rc);
        return TG_ERR_NOMEM;
    }
    rc->started = true;
    *out = rc;
    return TG_OK;
}

bool tg_reconcile_done(struct tg_reconcile *rc) { return atomic_load(&rc->state) == FINISHED; }

size_t tg_reconcile_found(const struct tg_reconcile *rc) { return rc->n_found; }

void tg_reconcile_reading(const struct tg_reconcile *rc, size_t i, struct tg_reading *out)
{
    const struct found *f = &rc->found[i];
    *out = (struct tg_reading){.device = f->device, .has_seq = f->has_seq, .boot = f->boot,
                               .seq = f->seq, .ts_ms = f->ts_ms};
}

bool tg_reconcile_contains(const struct tg_reconcile *rc, const struct tg_reading *r)
{
    char key[TG_DEVICE_ID_MAX + 64];
    size_t klen = identity(key, sizeof key, r->device, r->has_seq, r->boot, r->seq, r->ts_ms);
    return klen && tg_strmap_get(rc->index, key, klen, NULL);
}

size_t tg_reconcile_ends(const struct tg_reconcile *rc, const int64_t **ends)
{
    *ends = rc->ends;
    return rc->n_ends;
}

bool tg_reconcile_truncated(const struct tg_reconcile *rc) { return rc->truncated; }

uint64_t tg_reconcile_records_read(const struct tg_reconcile *rc) { return rc->records_read; }

void tg_reconcile_destroy(struct tg_reconcile *rc)
{
    if (!rc)
        return;
    if (rc->started) {
        atomic_store(&rc->stop, true);
        int running = RUNNING;
        if (atomic_compare_exchange_strong(&rc->state, &running, ABANDONED)) {
            pthread_detach(rc->thread); /* it frees rc when it ends */
            return;
        }
        pthread_join(rc->thread, NULL);
    }
    free_all(rc);
}

size_t tg_reconcile_take(struct tg_reconcile *rc, size_t from,
                         void (*fn)(void *ud, const struct tg_reading *r), void *ud,
                         int64_t *pos, size_t pos_cap, size_t *n_pos)
{
    pthread_mutex_lock(&rc->mu);
    size_t n = rc->n_found;
    for (size_t i = from; i < n; i++) {
        struct tg_reading r;
        tg_reconcile_reading(rc, i, &r);
        fn(ud, &r);
    }
    size_t np = rc->n_pos < pos_cap ? rc->n_pos : pos_cap;
    if (np) /* no partitions known yet: rc->pos may be NULL */
        memcpy(pos, rc->pos, np * sizeof *pos);
    *n_pos = np;
    pthread_mutex_unlock(&rc->mu);
    return n;
}

static void free_all(struct tg_reconcile *rc)
{
    pthread_mutex_destroy(&rc->mu);
    free(rc->pos);
    for (size_t i = 0; rc->conf && rc->conf[i]; i++)
        free(rc->conf[i]);
    free(rc->conf);
    free(rc->brokers);
    free(rc->topic);
    free(rc->gateway_id);
    free(rc->marks);
    free(rc->found);
    tg_strmap_destroy(rc->index);
    free(rc->ends);
    free(rc);
}
