/*
 * test_worker_kafka_txn.c - what the cluster really does with transactions, checked rather
 * than assumed, on both tiers: the worker's design (offset markers in the state topic,
 * restores that stop at the last marker) rests on these answers.
 *
 * One transactional producer and the group metadata of a consumer in group "probe":
 *   1. a transaction that produces A1, A2 and sends offset 42 for input[0], then aborts;
 *   2. one that produces B1 and sends offset 7 for input[1], then commits;
 *   3. one that produces C1 and stays open;
 *   4. a second producer with the same transactional.id initialises transactions, and the
 *      first then tries to commit its open transaction.
 * A read_committed reader and the group's committed offsets say what happened.
 *
 *                                   real Kafka           librdkafka 2.0.2 mock (devkafka)
 *   records read_committed sees     B1                   A1 A2 B1 C1 (no isolation)
 *   group offsets after 1 and 2     input[1] = 7         none (TxnOffsetCommit not stored)
 *   old producer's commit after 4   fails, fatal         succeeds (no fencing)
 *
 * If a librdkafka upgrade changes a mock answer, this test fails and the README's account of
 * devkafka must change with it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "harness_kafka.h"

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *bs, const char *const kv[])
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(c, "bootstrap.servers", bs, err, sizeof err),
                     RD_KAFKA_CONF_OK);
    for (; kv && *kv; kv += 2)
        if (rd_kafka_conf_set(c, kv[0], kv[1], err, sizeof err) != RD_KAFKA_CONF_OK)
            fail_msg("%s: %s", kv[0], err);
    rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof err);
    if (!rk)
        fail_msg("rd_kafka_new: %s", err);
    return rk;
}

static void ok(rd_kafka_error_t *error, const char *what)
{
    if (error)
        fail_msg("%s: %s", what, rd_kafka_error_string(error));
}

static void produce(rd_kafka_t *p, const char *value)
{
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("probe.out"), RD_KAFKA_V_PARTITION(0),
                                       RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    /* Sent before the transaction ends, so an abort has something on the broker to hide. */
    assert_int_equal(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void send_offset(rd_kafka_t *p, rd_kafka_consumer_group_metadata_t *gm, int32_t part,
                        int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "probe.in", part)->offset = offset;
    ok(rd_kafka_send_offsets_to_transaction(p, l, gm, 30000), "send offsets");
    rd_kafka_topic_partition_list_destroy(l);
}

/* The values read_committed shows in probe.out[0], space-separated. Reads until a little
 * after the first end of partition: the open transaction keeps the real end below the high
 * watermark, so there is no later end to wait for. */
static void read_committed(const char *bs, char *out, size_t outlen)
{
    static const char *const kv[] = {"group.id", "probe-reader", "isolation.level",
                                     "read_committed", "enable.partition.eof", "true",
                                     "fetch.wait.max.ms", "10", NULL};
    rd_kafka_t *c = client(RD_KAFKA_CONSUMER, bs, kv);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "probe.out", 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(c, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);
    out[0] = '\0';
    size_t used = 0;
    int64_t deadline = tg_harness_now_ms() + 30000, eof_at = 0;
    while (tg_harness_now_ms() < deadline && (!eof_at || tg_harness_now_ms() < eof_at + 1000)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (!eof_at)
                eof_at = tg_harness_now_ms();
        } else if (!m->err && used < outlen) {
            used += (size_t)snprintf(out + used, outlen - used, "%s%.*s", used ? " " : "",
                                     (int)m->len, (const char *)m->payload);
        }
        rd_kafka_message_destroy(m);
    }
    assert_true(eof_at > 0);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
}

static void probe(const char *bs, bool real)
{
    static const char *const pkv[] = {"transactional.id", "probe-tx", "transaction.timeout.ms",
                                      "60000", NULL};
    static const char *const ckv[] = {"group.id", "probe", "enable.auto.commit", "false", NULL};
    rd_kafka_t *p = client(RD_KAFKA_PRODUCER, bs, pkv);
    rd_kafka_t *gc = client(RD_KAFKA_CONSUMER, bs, ckv);
    rd_kafka_consumer_group_metadata_t *gm = rd_kafka_consumer_group_metadata(gc);
    ok(rd_kafka_init_transactions(p, 60000), "init");

    ok(rd_kafka_begin_transaction(p), "begin 1");
    produce(p, "A1");
    produce(p, "A2");
    send_offset(p, gm, 0, 42);
    ok(rd_kafka_abort_transaction(p, 30000), "abort 1");

    ok(rd_kafka_begin_transaction(p), "begin 2");
    produce(p, "B1");
    send_offset(p, gm, 1, 7);
    ok(rd_kafka_commit_transaction(p, 30000), "commit 2");

    ok(rd_kafka_begin_transaction(p), "begin 3");
    produce(p, "C1");

    char seen[256];
    read_committed(bs, seen, sizeof seen);
    rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(q, "probe.in", 0);
    rd_kafka_topic_partition_list_add(q, "probe.in", 1);
    assert_int_equal(rd_kafka_committed(gc, q, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t off0 = q->elems[0].offset, off1 = q->elems[1].offset;
    rd_kafka_topic_partition_list_destroy(q);

    rd_kafka_t *p2 = client(RD_KAFKA_PRODUCER, bs, pkv);
    ok(rd_kafka_init_transactions(p2, 60000), "init of the second producer");
    rd_kafka_error_t *old = rd_kafka_commit_transaction(p, 30000);
    bool fenced = old && rd_kafka_error_is_fatal(old);
    fprintf(stderr, "%s: read_committed sees \"%s\"; committed offsets input[0]=%lld "
                    "input[1]=%lld; old producer %s\n",
            real ? "real Kafka" : "devkafka", seen, (long long)off0, (long long)off1,
            old ? rd_kafka_error_string(old) : "committed");
    if (old)
        rd_kafka_error_destroy(old);

    if (real) {
        assert_string_equal(seen, "B1");
        assert_int_equal(off0, RD_KAFKA_OFFSET_INVALID);
        assert_int_equal(off1, 7);
        assert_true(fenced);
    } else {
        assert_string_equal(seen, "A1 A2 B1 C1");
        assert_int_equal(off0, RD_KAFKA_OFFSET_INVALID);
        assert_int_equal(off1, RD_KAFKA_OFFSET_INVALID);
        assert_false(fenced);
    }
    rd_kafka_consumer_group_metadata_destroy(gm);
    rd_kafka_destroy(p2);
    rd_kafka_destroy(p);
    rd_kafka_destroy(gc);
}

static void test_devkafka(void **state)
{
    (void)state;
    const char *args[] = {"--brokers", "1", "--topic", "probe.out:1", "--topic", "probe.in:2",
                          NULL};
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(args);
    assert_non_null(dk);
    probe(tg_harness_devkafka_bootstrap(dk), false);
    tg_harness_devkafka_destroy(dk);
}

static void test_real_kafka(void **state)
{
    (void)state;
    struct tg_harness_kafka *kf = tg_harness_kafka_start(0, TG_HARNESS_KAFKA_NO_TOPICS);
    assert_non_null(kf);
    assert_int_equal(tg_harness_kafka_create_topic(kf, "probe.out", 1, NULL), 0);
    assert_int_equal(tg_harness_kafka_create_topic(kf, "probe.in", 2, NULL), 0);
    probe(tg_harness_kafka_bootstrap(kf), true);
    tg_harness_kafka_destroy(kf);
}

/* argv[1] "real": the real Kafka tier (label kafka-real). */
int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "real") == 0) {
        const struct CMUnitTest real[] = {cmocka_unit_test_teardown(test_real_kafka, teardown)};
        return cmocka_run_group_tests(real, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test_teardown(test_devkafka, teardown)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
