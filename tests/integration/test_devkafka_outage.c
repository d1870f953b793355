/*
 * test_devkafka_outage.c - an outage of tidegate-devkafka never stores a batch twice.
 *
 * librdkafka 2.0.2's mock cluster appends a Produce request's records when it reads the
 * request and writes the response on a later turn of its loop; taking a broker down closed
 * the connection in between, the idempotent producer sent the unanswered batch again, and
 * the mock, which does not check a non-transactional producer's sequence numbers, stored it a
 * second time (tools/devkafka.c, drain_before_down). That was the cause of the duplicates
 * test_gw_acks_plugin's ingress_full_resent showed once in many runs (issue 14).
 *
 * Here one idempotent producer, configured as the gateway's egress on devkafka (acks=all,
 * one request in flight, no local timeout), produces without pause from its own thread while
 * the main thread takes every broker down and up OUTAGES times, each time after the producer
 * has had DELIVERIES_BETWEEN deliveries. A 5 ms RTT on every broker holds each response
 * long enough that, before the fix, most outages caught one (40 to 94 duplicated records in
 * 15 outages of a scratch run; 0 after). Then every record is read back: each of the
 * messages delivered is in the topic exactly once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define TOPIC "t"
#define PARTITIONS 6
#define OUTAGES 12
#define DELIVERIES_BETWEEN 300
#define PRODUCE_GAP_US 1000 /* pacing of the load, about 1,000 messages/s */
#define MESSAGES_MAX 200000 /* bound on the load if something stalls */
#define WAIT_MS 30000

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

struct load {
    rd_kafka_t *rk;
    pthread_t thread;
    atomic_bool stop;
    atomic_long produced, delivered, failed;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    struct load *ld = opaque;
    if (msg->err) {
        atomic_fetch_add(&ld->failed, 1);
        fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(msg->err));
    } else {
        atomic_fetch_add(&ld->delivered, 1);
    }
}

/* Produces "m-<i>" for i = 0, 1, ... every PRODUCE_GAP_US until told to stop. */
static void *load_main(void *arg)
{
    struct load *ld = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (long i = 0; i < MESSAGES_MAX && !atomic_load(&ld->stop); i++) {
        char value[32];
        int len = snprintf(value, sizeof value, "m-%ld", i);
        while (rd_kafka_producev(ld->rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(value, len),
                                 RD_KAFKA_V_VALUE(value, len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR)
            rd_kafka_poll(ld->rk, 10); /* queue full: let deliveries free it */
        atomic_store(&ld->produced, i + 1);
        rd_kafka_poll(ld->rk, 0);
        next.tv_nsec += PRODUCE_GAP_US * 1000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    return NULL;
}

struct delivered_want {
    struct load *ld;
    long n;
};

static bool delivered_cond(void *ud)
{
    struct delivered_want *w = ud;
    return atomic_load(&w->ld->delivered) >= w->n;
}

/* Reads every partition of TOPIC from its start to its high watermark; counts[i] gets the
 * number of records whose value is "m-<i>" (i < n); returns the records read. */
static long read_back(const char *bootstrap, int *counts, long n)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[] = {"bootstrap.servers", bootstrap, "group.id", "test-devkafka-outage",
                        "enable.auto.commit", "false", NULL};
    for (int i = 0; kv[i]; i += 2)
        assert_int_equal(rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr),
                         RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    long want = 0;
    for (int p = 0; p < PARTITIONS; p++) {
        int64_t lo, hi;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, TOPIC, p, &lo, &hi, WAIT_MS),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        want += hi - lo;
        rd_kafka_topic_partition_list_add(parts, TOPIC, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    assert_int_equal(rd_kafka_assign(rk, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    long got = 0;
    int64_t deadline = tg_harness_now_ms() + WAIT_MS;
    while (got < want && tg_harness_now_ms() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg)
            continue;
        if (!msg->err) {
            got++;
            long i = -1;
            char value[32];
            if (msg->len < sizeof value) {
                memcpy(value, msg->payload, msg->len);
                value[msg->len] = '\0';
                if (sscanf(value, "m-%ld", &i) == 1 && i >= 0 && i < n)
                    counts[i]++;
            }
        }
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (got < want)
        fail_msg("read %ld of the %ld records in the topic within %d ms", got, want, WAIT_MS);
    return got;
}

static void outages_store_each_batch_once(void **state)
{
    (void)state;
    const char *args[] = {"--topic", TOPIC ":6", NULL};
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(args);
    assert_non_null(dk);
    assert_int_equal(tg_harness_devkafka_cmd(dk, "rtt all 5", NULL, 0), 0);

    struct load ld = {0};
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[] = {"bootstrap.servers", tg_harness_devkafka_bootstrap(dk),
                        "enable.idempotence", "true", "acks", "all", "max.in.flight", "1",
                        "message.timeout.ms", "0", "linger.ms", "5",
                        /* back within 100 ms of each outage's end: the test stays short */
                        "reconnect.backoff.ms", "10", "reconnect.backoff.max.ms", "100", NULL};
    for (int i = 0; kv[i]; i += 2)
        assert_int_equal(rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr),
                         RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &ld);
    ld.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(ld.rk);
    assert_int_equal(pthread_create(&ld.thread, NULL, load_main, &ld), 0);

    for (int k = 0; k < OUTAGES; k++) {
        struct delivered_want w = {&ld, atomic_load(&ld.delivered) + DELIVERIES_BETWEEN};
        if (!tg_harness_wait_until(delivered_cond, &w, WAIT_MS))
            fail_msg("outage %d: %ld delivered, expected %ld within %d ms", k,
                     atomic_load(&ld.delivered), w.n, WAIT_MS);
        assert_int_equal(tg_harness_devkafka_outage_begin(dk), 0);
        assert_int_equal(tg_harness_devkafka_outage_end(dk), 0);
    }
    atomic_store(&ld.stop, true);
    pthread_join(ld.thread, NULL);
    assert_int_equal(rd_kafka_flush(ld.rk, WAIT_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
    long n = atomic_load(&ld.produced);
    assert_int_equal(atomic_load(&ld.delivered), n);
    assert_int_equal(atomic_load(&ld.failed), 0);
    rd_kafka_destroy(ld.rk);

    int *counts = calloc((size_t)n, sizeof *counts);
    assert_non_null(counts);
    long records = read_back(tg_harness_devkafka_bootstrap(dk), counts, n);
    long missing = 0, twice = 0;
    for (long i = 0; i < n; i++) {
        if (counts[i] == 0)
            missing++;
        else if (counts[i] > 1)
            twice += counts[i] - 1;
    }
    fprintf(stderr, "%d outages: %ld messages produced and delivered, %ld records in the topic, "
                    "%ld missing, %ld extra copies\n",
            OUTAGES, n, records, missing, twice);
    free(counts);
    assert_int_equal(missing, 0);
    assert_int_equal(twice, 0);
    assert_int_equal(records, n);
    tg_harness_devkafka_destroy(dk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(outages_store_each_batch_once, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
