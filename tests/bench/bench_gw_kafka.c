/*
 * bench_gw_kafka.c - end-to-end latency as a downstream consumer sees it.
 *
 * A librdkafka consumer is assigned every partition of the telemetry topic at its end (no
 * consumer group join, no commits) and, on its own thread, timestamps each record when the
 * application gets it. The record timestamp is the device's event time (the gateway produces
 * with timestamp = device ts, and a topic with CreateTime keeps it), so now - timestamp is
 * the whole path: publisher -> broker -> gateway -> Kafka -> consumer. Device timestamps
 * are whole milliseconds, cut down when the reading was made, which adds 0.5 ms on average.
 */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_gw.h"

/* Fetch settings that keep the consumer's own share of the latency small: the broker answers
 * a fetch as soon as there is one byte, or after 10 ms. */
#define CONSUMER_FETCH_WAIT_MS "10"
#define META_TIMEOUT_MS 10000
/* Samples kept; beyond it (an hour at 100k msg/s would not fit) records are counted only. */
#define SAMPLES_MAX (64u * 1024 * 1024)

struct sample {
    int64_t ts_ms;
    float latency_ms;
};

struct bgw_consumer {
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *parts;
    int n_parts;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_uint_fast64_t errors;
    /* Written by the consumer thread; the count is read by others under the lock. */
    pthread_mutex_t lock;
    struct sample *samples;
    size_t n_samples, cap_samples;
    uint64_t dropped_samples;
};

/* An outage makes librdkafka log every refused connection; the bench's output is the
 * table, and the outage is deliberate. */
static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
}

struct bgw_consumer *bgw_consumer_new(const char *bootstrap, const char *topic, char *err,
                                      size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_conf_t *conf = NULL;
    struct bgw_consumer *kc = calloc(1, sizeof *kc);
    if (!kc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&kc->lock, NULL);
    conf = rd_kafka_conf_new();
    if (!conf) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    char id[64];
    snprintf(id, sizeof id, "bench-gateway-%ld", (long)getpid());
    const char *props[][2] = {
        {"bootstrap.servers", bootstrap},
        {"group.id", id}, /* required by rd_kafka_consumer_poll; assign() joins no group */
        {"client.id", "bench-gateway-latency"},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"fetch.wait.max.ms", CONSUMER_FETCH_WAIT_MS},
        {"fetch.min.bytes", "1"},
        {"reconnect.backoff.max.ms", "1000"},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], err, errlen) != RD_KAFKA_CONF_OK)
            goto fail;
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    kc->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
    if (!kc->rk)
        goto fail;
    conf = NULL; /* owned by rk now */

    rkt = rd_kafka_topic_new(kc->rk, topic, NULL);
    if (!rkt) {
        snprintf(err, errlen, "rd_kafka_topic_new: %s", rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(kc->rk, 0, rkt, &md, META_TIMEOUT_MS);
    if (kerr || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1) {
        snprintf(err, errlen, "metadata of topic %s: %s", topic,
                 rd_kafka_err2str(kerr ? kerr : md->topic_cnt == 1 ? md->topics[0].err
                                                                    : RD_KAFKA_RESP_ERR__FAIL));
        goto fail;
    }
    kc->n_parts = md->topics[0].partition_cnt;
    kc->parts = rd_kafka_topic_partition_list_new(kc->n_parts);
    for (int p = 0; p < kc->n_parts; p++) {
        int64_t low, high;
        kerr = rd_kafka_query_watermark_offsets(kc->rk, topic, p, &low, &high, META_TIMEOUT_MS);
        if (kerr) {
            snprintf(err, errlen, "watermarks of %s [%d]: %s", topic, p, rd_kafka_err2str(kerr));
            goto fail;
        }
        rd_kafka_topic_partition_list_add(kc->parts, topic, p)->offset = high;
    }
    kerr = rd_kafka_assign(kc->rk, kc->parts);
    if (kerr) {
        snprintf(err, errlen, "assign: %s", rd_kafka_err2str(kerr));
        goto fail;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return kc;

fail:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (conf)
        rd_kafka_conf_destroy(conf);
    bgw_consumer_destroy(kc);
    return NULL;
}

static void add_sample(struct bgw_consumer *kc, int64_t ts_ms, int64_t now_us)
{
    pthread_mutex_lock(&kc->lock);
    if (kc->n_samples == kc->cap_samples) {
        size_t cap = kc->cap_samples ? kc->cap_samples * 2 : 65536;
        struct sample *grown = cap <= SAMPLES_MAX ? realloc(kc->samples, cap * sizeof *grown)
                                                  : NULL;
        if (!grown) {
            kc->dropped_samples++;
            pthread_mutex_unlock(&kc->lock);
            return;
        }
        kc->samples = grown;
        kc->cap_samples = cap;
    }
    kc->samples[kc->n_samples++] =
        (struct sample){.ts_ms = ts_ms, .latency_ms = (float)((double)now_us / 1000.0 -
                                                              (double)ts_ms)};
    pthread_mutex_unlock(&kc->lock);
}

static void *consume_thread(void *ud)
{
    struct bgw_consumer *kc = ud;
    while (!atomic_load(&kc->stop)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(kc->rk, 100);
        if (!msg)
            continue;
        int64_t now_us = bgw_wall_us();
        if (msg->err) {
            /* an outage shows here as transport errors; partition EOF is not enabled */
            atomic_fetch_add(&kc->errors, 1);
        } else {
            rd_kafka_timestamp_type_t tstype;
            int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
            if (ts >= 0)
                add_sample(kc, ts, now_us);
        }
        rd_kafka_message_destroy(msg);
    }
    return NULL;
}

int bgw_consumer_start(struct bgw_consumer *kc)
{
    if (pthread_create(&kc->thread, NULL, consume_thread, kc) != 0)
        return -1;
    kc->started = true;
    return 0;
}

uint64_t bgw_consumer_count(struct bgw_consumer *kc, int64_t from_ms)
{
    uint64_t n = 0;
    pthread_mutex_lock(&kc->lock);
    for (size_t i = 0; i < kc->n_samples; i++)
        n += kc->samples[i].ts_ms >= from_ms;
    n += kc->dropped_samples;
    pthread_mutex_unlock(&kc->lock);
    return n;
}

void bgw_consumer_stop(struct bgw_consumer *kc)
{
    if (!kc || !kc->started)
        return;
    atomic_store(&kc->stop, true);
    pthread_join(kc->thread, NULL);
    kc->started = false;
}

size_t bgw_consumer_latency(struct bgw_consumer *kc, int64_t from_ms, int64_t to_ms,
                            double *p50, double *p99, double *max)
{
    size_t n = 0;
    float *v = malloc((kc->n_samples ? kc->n_samples : 1) * sizeof *v);
    if (!v) {
        *p50 = *p99 = *max = -1;
        return 0;
    }
    for (size_t i = 0; i < kc->n_samples; i++)
        if (kc->samples[i].ts_ms >= from_ms && kc->samples[i].ts_ms < to_ms)
            v[n++] = kc->samples[i].latency_ms;
    *p50 = bgw_quantile_sorted(v, n, 0.50, false);
    *p99 = bgw_quantile_sorted(v, n, 0.99, true);
    *max = bgw_quantile_sorted(v, n, 1.0, true);
    free(v);
    return n;
}

int bgw_consumer_partitions(const struct bgw_consumer *kc)
{
    return kc->n_parts;
}

uint64_t bgw_consumer_errors(struct bgw_consumer *kc)
{
    return atomic_load(&kc->errors);
}

void bgw_consumer_destroy(struct bgw_consumer *kc)
{
    if (!kc)
        return;
    bgw_consumer_stop(kc);
    if (kc->rk) {
        rd_kafka_consumer_close(kc->rk);
        rd_kafka_destroy(kc->rk);
    }
    if (kc->parts)
        rd_kafka_topic_partition_list_destroy(kc->parts);
    free(kc->samples);
    pthread_mutex_destroy(&kc->lock);
    free(kc);
}
