/*
 * kafka_read.c - the Kafka consumer, partition count and watermarks that `tidegate-sim audit`
 * and `tidegate-sim score` share (kafka_read.h).
 */
#include "kafka_read.h"

#include <stdio.h>

rd_kafka_t *tg_sim_kafka_consumer_new(const char *prog, const char *brokers, const char *name,
                                      const char *const *extra,
                                      void (*error_cb)(rd_kafka_t *rk, int err,
                                                       const char *reason, void *opaque),
                                      void *opaque)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *const common[] = {"bootstrap.servers", brokers,
                                  "group.id", name,
                                  "client.id", name,
                                  "enable.auto.commit", "false",
                                  "enable.auto.offset.store", "false",
                                  "enable.partition.eof", "true",
                                  "auto.offset.reset", "earliest",
                                  "log_level", "2",
                                  NULL};
    const char *const *lists[] = {common, extra};
    for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++)
        for (const char *const *kv = lists[l]; kv && kv[0]; kv += 2)
            if (rd_kafka_conf_set(conf, kv[0], kv[1], errstr, sizeof errstr) !=
                RD_KAFKA_CONF_OK) {
                fprintf(stderr, "%s: %s=%s: %s\n", prog, kv[0], kv[1], errstr);
                rd_kafka_conf_destroy(conf);
                return NULL;
            }
    if (error_cb)
        rd_kafka_conf_set_error_cb(conf, error_cb);
    if (opaque)
        rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "%s: %s\n", prog, errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    /* conf belongs to the handle now */
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

int tg_sim_kafka_partitions(rd_kafka_t *rk, const char *prog, const char *topic,
                            int timeout_ms)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return -1;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err) {
        fprintf(stderr, "%s: metadata of topic %s: %s\n", prog, topic, rd_kafka_err2str(err));
        return -1;
    }
    int n = -1;
    if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        n = 0;
    else if (md->topic_cnt != 1 || md->topics[0].err)
        fprintf(stderr, "%s: topic %s: %s\n", prog, topic,
                md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err) : "no metadata");
    else
        n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

rd_kafka_resp_err_t tg_sim_kafka_watermarks(rd_kafka_t *rk, const char *topic, int n,
                                            int timeout_ms, bool stop_at_error, int64_t *lo,
                                            int64_t *hi, int *failed)
{
    rd_kafka_resp_err_t first = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int p = 0; p < n; p++) {
        int64_t low, high;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high, timeout_ms);
        if (err) {
            low = high = -1;
            if (!first) {
                first = err;
                if (failed)
                    *failed = p;
            }
        }
        if (lo)
            lo[p] = low;
        hi[p] = high;
        if (err && stop_at_error)
            break;
    }
    return first;
}
