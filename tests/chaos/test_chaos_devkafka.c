/*
 * test_chaos_devkafka.c - tidegate-devkafka's fault-injection commands (error, errors,
 * topic-error) do what --help says, seen from a plain librdkafka client: the chaos tests
 * rely on them.
 *
 *   - "error 1 produce <error> N" makes broker 1 answer its next N produce requests with that
 *     error: a producer without retries gets exactly that error in its delivery report (or,
 *     for the errors librdkafka handles itself, success once they are used up),
 *     "errors 1 produce" counts down to 0, and the next record is stored;
 *   - "error all produce none 1 <ms>" delays the answer by at least that long;
 *   - "topic-error <topic> unknown_topic" makes metadata for the topic fail, "none" clears it;
 *   - "leader <topic> 0 none" leaves a partition without a leader (a record for it waits),
 *     "leader <topic> all 1" gives it one again (the record is stored);
 *   - malformed commands are refused with "error: ...".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define TOPIC "chaos"
#define DELAY_MS 400
#define LEADERLESS_MS 1000

struct report {
    int done;
    rd_kafka_resp_err_t err;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    struct report *r = msg->_private;
    r->err = msg->err;
    r->done = 1;
}

static rd_kafka_t *producer(const char *bootstrap)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* No retries and no idempotence: the injected error reaches the delivery report. */
    const char *kv[] = {"bootstrap.servers", bootstrap, "retries", "0", "linger.ms", "0",
                        "enable.idempotence", "false", "acks", "all",
                        "message.timeout.ms", "20000", "log_level", "3", NULL};
    for (size_t i = 0; kv[i]; i += 2)
        assert_int_equal(rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr),
                         RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    return rk;
}

/* Produces one record to partition 0 (led by broker 1 in a 1-broker cluster) and waits for
 * its report. Returns the report's error and the time it took in *took_ms. */
static rd_kafka_resp_err_t produce_one(rd_kafka_t *rk, int64_t *took_ms)
{
    struct report r = {0, RD_KAFKA_RESP_ERR_NO_ERROR};
    int64_t t0 = tg_harness_now_ms();
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                                       RD_KAFKA_V_VALUE("v", 1), RD_KAFKA_V_OPAQUE(&r),
                                       RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    while (!r.done && tg_harness_now_ms() - t0 < 20000)
        rd_kafka_poll(rk, 50);
    assert_true(r.done);
    if (took_ms)
        *took_ms = tg_harness_now_ms() - t0;
    return r.err;
}

static long errors_left(struct tg_harness_devkafka *dk)
{
    char reply[64];
    assert_int_equal(tg_harness_devkafka_cmd(dk, "errors 1 produce", reply, sizeof reply), 0);
    return strtol(reply + 2, NULL, 10);
}

static void injected_errors_reach_the_client(void **state)
{
    (void)state;
    const char *const args[] = {"--brokers", "1", "--topic", TOPIC ":1", NULL};
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(args);
    assert_non_null(dk);
    rd_kafka_t *rk = producer(tg_harness_devkafka_bootstrap(dk));
    assert_int_equal(produce_one(rk, NULL), RD_KAFKA_RESP_ERR_NO_ERROR);

    /* librdkafka re-sends a batch refused with not_leader or unknown_topic after refreshing
     * its metadata, whatever "retries" says: the client sees success once both injected
     * errors are used up. The others reach the delivery report, one per request. */
    static const struct {
        const char *name;
        rd_kafka_resp_err_t err;
        bool resent_by_librdkafka;
    } cases[] = {
        {"not_leader", RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, true},
        {"unknown_topic", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, true},
        {"timed_out", RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, false},
        {"too_large", RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, false},
        {"NOT_ENOUGH_REPLICAS", RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, false},
        {"19", RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[96];
        snprintf(cmd, sizeof cmd, "error 1 produce %s 2", cases[i].name);
        assert_int_equal(tg_harness_devkafka_cmd(dk, cmd, NULL, 0), 0);
        assert_int_equal(errors_left(dk), 2);
        rd_kafka_resp_err_t got = produce_one(rk, NULL);
        fprintf(stderr, "%s: delivery report %s\n", cases[i].name, rd_kafka_err2name(got));
        if (cases[i].resent_by_librdkafka) {
            assert_int_equal(got, RD_KAFKA_RESP_ERR_NO_ERROR);
        } else {
            assert_int_equal(got, cases[i].err);
            assert_int_equal(errors_left(dk), 1);
            assert_int_equal(produce_one(rk, NULL), cases[i].err);
        }
        assert_int_equal(errors_left(dk), 0);
        assert_int_equal(produce_one(rk, NULL), RD_KAFKA_RESP_ERR_NO_ERROR);
    }

    /* Only a delay. */
    char cmd[96];
    snprintf(cmd, sizeof cmd, "error all produce none 1 %d", DELAY_MS);
    assert_int_equal(tg_harness_devkafka_cmd(dk, cmd, NULL, 0), 0);
    int64_t took = 0;
    assert_int_equal(produce_one(rk, &took), RD_KAFKA_RESP_ERR_NO_ERROR);
    fprintf(stderr, "none with %d ms: delivered after %lld ms\n", DELAY_MS, (long long)took);
    assert_true(took >= DELAY_MS);

    /* Metadata error for the topic, then cleared. */
    assert_int_equal(tg_harness_devkafka_cmd(dk, "topic-error " TOPIC " unknown_topic", NULL, 0),
                     0);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, TOPIC, NULL);
    const struct rd_kafka_metadata *md = NULL;
    assert_int_equal(rd_kafka_metadata(rk, 0, rkt, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(md->topic_cnt, 1);
    assert_int_equal(md->topics[0].err, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
    rd_kafka_metadata_destroy(md);
    assert_int_equal(tg_harness_devkafka_cmd(dk, "topic-error " TOPIC " none", NULL, 0), 0);
    assert_int_equal(rd_kafka_metadata(rk, 0, rkt, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(md->topics[0].err, RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);

    /* Leadership: leaderless, the record waits; led again, it is stored. */
    assert_int_equal(tg_harness_devkafka_cmd(dk, "leader " TOPIC " 0 none", NULL, 0), 0);
    struct report r = {0, RD_KAFKA_RESP_ERR_NO_ERROR};
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                                       RD_KAFKA_V_VALUE("w", 1), RD_KAFKA_V_OPAQUE(&r),
                                       RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t t0 = tg_harness_now_ms();
    while (tg_harness_now_ms() - t0 < LEADERLESS_MS)
        rd_kafka_poll(rk, 50);
    assert_false(r.done);
    assert_int_equal(tg_harness_devkafka_cmd(dk, "leader " TOPIC " all 1", NULL, 0), 0);
    while (!r.done && tg_harness_now_ms() - t0 < 20000)
        rd_kafka_poll(rk, 50);
    assert_true(r.done);
    assert_int_equal(r.err, RD_KAFKA_RESP_ERR_NO_ERROR);

    /* Malformed commands are refused, and the cluster keeps answering. */
    static const char *const bad[] = {
        "error",                        "error 1",
        "error 1 produce",              "error 9 produce not_leader",
        "error 1 nosuchapi not_leader", "error 1 produce nosucherror",
        "error 1 produce not_leader 0", "error 1 produce not_leader 1 -5",
        "error 1 produce not_leader 1 5 extra",
        "errors 1",                     "errors 1 nosuchapi",
        "topic-error",                  "topic-error " TOPIC,
        "topic-error " TOPIC " nosucherror",
        "leader",                       "leader " TOPIC,
        "leader " TOPIC " 0",           "leader nosuchtopic 0 1",
        "leader " TOPIC " 1 1",         "leader " TOPIC " 0 9",
        "leader " TOPIC " all 1 extra",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char reply[512];
        if (tg_harness_devkafka_cmd(dk, bad[i], reply, sizeof reply) == 0)
            fail_msg("'%s' was accepted: %s", bad[i], reply);
    }
    assert_int_equal(errors_left(dk), 0);
    assert_int_equal(produce_one(rk, NULL), RD_KAFKA_RESP_ERR_NO_ERROR);

    rd_kafka_destroy(rk);
    assert_true(tg_harness_exited_ok(tg_harness_devkafka_stop(dk)));
    tg_harness_devkafka_destroy(dk);
}

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(injected_errors_reach_the_client, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
