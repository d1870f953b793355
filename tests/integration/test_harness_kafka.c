/*
 * test_harness_kafka.c - the real Kafka tier's own promises (harness_kafka.h): the broker
 * starts on free ports with tidegate's topics (partition counts, the compacted state topic),
 * creates no topic because a client asked for it, keeps its records across a SIGTERM stop
 * and a restart on the same port, and recovers them after kill -9. And tidegate-topics, the
 * tool that creates the same topics outside the tests (scripts/demo --kafka-real), on a
 * broker started without them. And compaction, which devkafka never does, with a broker
 * property of the test's own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <librdkafka/rdkafka.h>

#include "harness.h"
#include "harness_kafka.h"

#define WAIT_MS 30000

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static void count_delivered(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        (*(int *)opaque)++;
}

/* A client of the broker; with delivered, a producer that counts acknowledged records. */
static rd_kafka_t *client(rd_kafka_type_t type, const char *bootstrap, const char *extra_key,
                          const char *extra_value, int *delivered)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof errstr) ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr) ||
        (type == RD_KAFKA_CONSUMER &&
         (rd_kafka_conf_set(conf, "group.id", "test-harness-kafka", errstr, sizeof errstr) ||
          rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof errstr))) ||
        (extra_key && rd_kafka_conf_set(conf, extra_key, extra_value, errstr, sizeof errstr))) {
        fprintf(stderr, "conf: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (delivered) {
        rd_kafka_conf_set_dr_msg_cb(conf, count_delivered);
        rd_kafka_conf_set_opaque(conf, delivered);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Produces n records to topic, keyed "dev-<first + i>" or all with key when not NULL, each
 * valued {"seq":<first + i>}; returns how many the broker acknowledged. */
static int produce_keyed(const char *bootstrap, const char *topic, int n, int first,
                         const char *fixed_key)
{
    int delivered = 0;
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, bootstrap, "message.timeout.ms", "3000",
                            &delivered);
    if (!rk)
        return -1;
    for (int i = 0; i < n; i++) {
        char key[32], value[64];
        snprintf(key, sizeof key, "%s", fixed_key ? fixed_key : "");
        if (!fixed_key)
            snprintf(key, sizeof key, "dev-%04d", first + i);
        snprintf(value, sizeof value, "{\"seq\":%d}", first + i);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE(value, strlen(value)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_END);
        if (err)
            fprintf(stderr, "produce: %s\n", rd_kafka_err2str(err));
    }
    rd_kafka_flush(rk, WAIT_MS);
    rd_kafka_destroy(rk);
    return delivered;
}

static int produce(const char *bootstrap, const char *topic, int n, int first)
{
    return produce_keyed(bootstrap, topic, n, first, NULL);
}

/* Records in every partition of topic, read from the beginning to the end. -1 on failure.
 * With key, *n_key gets how many records carry it and last_value (size bytes) the value of
 * the last of them. */
static int read_records(const char *bootstrap, const char *topic, int partitions,
                        const char *key, int *n_key, char *last_value, size_t size)
{
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, bootstrap, NULL, NULL, NULL);
    if (!rk)
        return -1;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    int count = 0, at_end = 0;
    if (rd_kafka_assign(rk, parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        count = -1;
    int64_t deadline = tg_harness_now_ms() + WAIT_MS;
    while (count >= 0 && at_end < partitions && tg_harness_now_ms() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
        if (!msg)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            at_end++;
        else if (msg->err)
            fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(msg));
        else
            count++;
        if (!msg->err && key && msg->key && msg->key_len == strlen(key) &&
            memcmp(msg->key, key, msg->key_len) == 0) {
            (*n_key)++;
            snprintf(last_value, size, "%.*s", (int)msg->len, (const char *)msg->payload);
        }
        rd_kafka_message_destroy(msg);
    }
    if (at_end < partitions) {
        fprintf(stderr, "count_records: only %d of %d partitions read to the end\n", at_end,
                partitions);
        count = -1;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return count;
}

static int count_records(const char *bootstrap, const char *topic, int partitions)
{
    return read_records(bootstrap, topic, partitions, NULL, NULL, NULL, 0);
}

/* The value of a topic config as the broker describes it, malloc'd, or NULL. */
static char *topic_config(const char *bootstrap, const char *topic, const char *name)
{
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, bootstrap, NULL, NULL, NULL);
    if (!rk)
        return NULL;
    char *value = NULL;
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_queue_t *queue = rd_kafka_queue_new(rk);
    rd_kafka_DescribeConfigs(rk, &res, 1, NULL, queue);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, WAIT_MS);
    if (ev && !rd_kafka_event_error(ev)) {
        size_t n_res = 0, n_cfg = 0;
        const rd_kafka_ConfigResource_t **rs = rd_kafka_DescribeConfigs_result_resources(
            rd_kafka_event_DescribeConfigs_result(ev), &n_res);
        const rd_kafka_ConfigEntry_t **cfgs = n_res == 1 ? rd_kafka_ConfigResource_configs(rs[0],
                                                                                   &n_cfg)
                                                         : NULL;
        for (size_t i = 0; i < n_cfg; i++) {
            if (strcmp(rd_kafka_ConfigEntry_name(cfgs[i]), name) == 0 &&
                rd_kafka_ConfigEntry_value(cfgs[i]))
                value = strdup(rd_kafka_ConfigEntry_value(cfgs[i]));
        }
    } else {
        fprintf(stderr, "DescribeConfigs %s: %s\n", topic,
                ev ? rd_kafka_event_error_string(ev) : "no answer");
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(queue);
    rd_kafka_ConfigResource_destroy(res);
    rd_kafka_destroy(rk);
    return value;
}

static void broker_topics_restart_and_crash(void **state)
{
    (void)state;
    int64_t t0 = tg_harness_now_ms();
    struct tg_harness_kafka *kf = tg_harness_kafka_start(0, 0);
    assert_non_null(kf);
    fprintf(stderr, "start with topics: %lld ms\n", (long long)(tg_harness_now_ms() - t0));
    const char *bootstrap = tg_harness_kafka_bootstrap(kf);
    char expect_bootstrap[64];
    snprintf(expect_bootstrap, sizeof expect_bootstrap, "127.0.0.1:%d",
             tg_harness_kafka_port(kf));
    assert_string_equal(bootstrap, expect_bootstrap);

    /* tidegate's topics, as harness_kafka.h lists them */
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry"),
                     TG_HARNESS_KAFKA_TELEMETRY_PARTITIONS);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.dlq"), 3);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.anomalies"), 6);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.agg.1m"), 6);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.worker.state"),
                     TG_HARNESS_KAFKA_TELEMETRY_PARTITIONS);
    char *policy = topic_config(bootstrap, "telemetry.worker.state", "cleanup.policy");
    assert_non_null(policy);
    assert_string_equal(policy, "compact");
    free(policy);
    policy = topic_config(bootstrap, "telemetry", "cleanup.policy");
    assert_non_null(policy);
    assert_string_equal(policy, "delete");
    free(policy);

    /* No auto-creation: a producer's write to a missing topic fails and creates nothing. */
    assert_int_equal(produce(bootstrap, "no.such.topic", 1, 0), 0);
    assert_int_equal(tg_harness_kafka_partitions(kf, "no.such.topic"), -1);
    /* ...and topics the test asks for are created, with their configs. */
    const char *const retention[] = {"retention.ms=60000", NULL};
    assert_int_equal(tg_harness_kafka_create_topic(kf, "test.extra", 2, retention), 0);
    assert_int_equal(tg_harness_kafka_partitions(kf, "test.extra"), 2);
    assert_int_equal(tg_harness_kafka_create_topic(kf, "test.extra", 2, NULL), -1);

    assert_int_equal(produce(bootstrap, "telemetry", 10, 0), 10);
    assert_int_equal(count_records(bootstrap, "telemetry", 6), 10);

    /* SIGTERM: the port refuses connections, then the restart serves the same records on
     * the same port. */
    t0 = tg_harness_now_ms();
    assert_int_equal(tg_harness_kafka_stop(kf), 0);
    assert_false(tg_harness_kafka_running(kf));
    assert_int_equal(tg_harness_tcp_probe("127.0.0.1", tg_harness_kafka_port(kf)),
                     ECONNREFUSED);
    assert_int_equal(tg_harness_kafka_restart(kf), 0);
    fprintf(stderr, "stop + restart: %lld ms\n", (long long)(tg_harness_now_ms() - t0));
    assert_string_equal(tg_harness_kafka_bootstrap(kf), expect_bootstrap);
    assert_true(tg_harness_kafka_running(kf));
    assert_int_equal(count_records(bootstrap, "telemetry", 6), 10);

    /* kill -9: the restart recovers the logs; nothing acknowledged is lost, and the broker
     * takes writes again. */
    assert_int_equal(produce(bootstrap, "telemetry", 10, 10), 10);
    t0 = tg_harness_now_ms();
    assert_int_equal(tg_harness_kafka_kill9(kf), 0);
    assert_false(tg_harness_kafka_running(kf));
    assert_int_equal(tg_harness_kafka_restart(kf), 0);
    fprintf(stderr, "kill -9 + restart: %lld ms\n", (long long)(tg_harness_now_ms() - t0));
    assert_int_equal(count_records(bootstrap, "telemetry", 6), 20);
    assert_int_equal(produce(bootstrap, "telemetry", 5, 20), 5);
    assert_int_equal(count_records(bootstrap, "telemetry", 6), 25);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.worker.state"),
                     TG_HARNESS_KAFKA_TELEMETRY_PARTITIONS);

    tg_harness_kafka_destroy(kf);
}

static int run_topics_tool(const char *bootstrap, const char *partitions, char **out)
{
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/tidegate-topics", tg_harness_bin_dir());
    const char *argv[] = {bin, "--brokers", bootstrap, "--partitions", partitions, NULL};
    int status = tg_harness_run(argv, NULL, 0, out, WAIT_MS + 10000);
    if (out && *out)
        fprintf(stderr, "tidegate-topics:\n%s", *out);
    return status;
}

static void topics_tool_creates_what_is_missing(void **state)
{
    (void)state;
    struct tg_harness_kafka *kf = tg_harness_kafka_start(0, TG_HARNESS_KAFKA_NO_TOPICS);
    assert_non_null(kf);
    const char *bootstrap = tg_harness_kafka_bootstrap(kf);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry"), -1);
    /* One topic made beforehand with another count: left alone, and reported. */
    assert_int_equal(tg_harness_kafka_create_topic(kf, "telemetry.dlq", 1, NULL), 0);

    char *out = NULL;
    assert_true(tg_harness_exited_ok(run_topics_tool(bootstrap, "4", &out)));
    assert_non_null(strstr(out, "telemetry: created"));
    assert_non_null(strstr(out, "telemetry.dlq: exists, 1 partitions (not changed"));
    free(out);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry"), 4);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.dlq"), 1);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.anomalies"), 6);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.agg.1m"), 6);
    assert_int_equal(tg_harness_kafka_partitions(kf, "telemetry.worker.state"), 4);
    char *policy = topic_config(bootstrap, "telemetry.worker.state", "cleanup.policy");
    assert_non_null(policy);
    assert_string_equal(policy, "compact");
    free(policy);

    /* Again: everything exists, nothing changes, success. */
    out = NULL;
    assert_true(tg_harness_exited_ok(run_topics_tool(bootstrap, "4", &out)));
    assert_null(strstr(out, "created"));
    free(out);

    /* A bad command line is a usage error, a cluster that does not answer a failure. */
    int status = run_topics_tool(bootstrap, "0", NULL);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    assert_int_equal(tg_harness_kafka_stop(kf), 0);
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/tidegate-topics", tg_harness_bin_dir());
    const char *argv[] = {bin, "--brokers", bootstrap, "--timeout-ms", "1000", NULL};
    status = tg_harness_run(argv, NULL, 0, NULL, WAIT_MS);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);

    tg_harness_kafka_destroy(kf);
}

struct compacted {
    const char *bootstrap;
    int n_key;
    char last[64];
};

static bool compacted_cond(void *ud)
{
    struct compacted *cp = ud;
    cp->n_key = 0;
    int total = read_records(cp->bootstrap, "test.compact", 1, "sensor", &cp->n_key, cp->last,
                             sizeof cp->last);
    return total >= 0 && cp->n_key == 1;
}

/* What devkafka can never show: the log cleaner keeps only the latest record of a key. The
 * broker gets its own property through tg_harness_kafka_start_with() (the cleaner looks for
 * work every 200 ms instead of 15 s); the topic rolls its segment after 100 ms and is worth
 * cleaning at once. 200 values of one key, then a record of another key after the segment's
 * time is up (a segment rolls on the next append, and only closed segments are cleaned):
 * in the end one record of the key is left, the last one written. */
static void compaction_keeps_the_latest_value(void **state)
{
    (void)state;
    struct tg_harness_kafka *kf =
        tg_harness_kafka_start_with(0, TG_HARNESS_KAFKA_NO_TOPICS, "log.cleaner.backoff.ms=200");
    assert_non_null(kf);
    const char *bootstrap = tg_harness_kafka_bootstrap(kf);
    const char *const configs[] = {"cleanup.policy=compact", "segment.ms=100",
                                   "min.cleanable.dirty.ratio=0.01", "min.compaction.lag.ms=0",
                                   NULL};
    assert_int_equal(tg_harness_kafka_create_topic(kf, "test.compact", 1, configs), 0);
    assert_int_equal(produce_keyed(bootstrap, "test.compact", 200, 0, "sensor"), 200);
    struct compacted cp = {.bootstrap = bootstrap};
    assert_int_equal(read_records(bootstrap, "test.compact", 1, "sensor", &cp.n_key, cp.last,
                                  sizeof cp.last),
                     200);
    int64_t t0 = tg_harness_now_ms();
    /* Appends after segment.ms roll the segment that holds the 200; keep appending until
     * the cleaner has done its work (each append is a chance to roll). */
    bool done = false;
    for (int i = 0; !done && tg_harness_now_ms() - t0 < WAIT_MS; i++) {
        char other[32];
        snprintf(other, sizeof other, "other-%d", i);
        assert_int_equal(produce_keyed(bootstrap, "test.compact", 1, 1000 + i, other), 1);
        done = tg_harness_wait_until(compacted_cond, &cp, 1000);
    }
    fprintf(stderr, "compaction: %d record(s) of the key left after %lld ms, last %s\n",
            cp.n_key, (long long)(tg_harness_now_ms() - t0), cp.last);
    assert_true(done);
    assert_int_equal(cp.n_key, 1);
    assert_string_equal(cp.last, "{\"seq\":199}");
    tg_harness_kafka_destroy(kf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(broker_topics_restart_and_crash, teardown),
        cmocka_unit_test_teardown(topics_tool_creates_what_is_missing, teardown),
        cmocka_unit_test_teardown(compaction_keeps_the_latest_value, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
