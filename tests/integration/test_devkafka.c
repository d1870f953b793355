/*
 * test_devkafka.c - tidegate-devkafka as its users see it: kcat and librdkafka clients
 * producing and consuming, outages through signals and stdin commands, clean shutdown, and
 * the topics it creates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define DELIVERY_TIMEOUT_MS 30000
#define CONSUME_TIMEOUT_MS 30000
#define KCAT_TIMEOUT_MS 30000
/* How long the producer is watched during the outage to see that nothing is delivered. */
#define OUTAGE_OBSERVE_MS 2000

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

/* ---- librdkafka clients ---- */

static rd_kafka_t *new_client(rd_kafka_type_t type, const char *bootstrap,
                              const char *const kv[], void *opaque,
                              void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                              void (*error_cb)(rd_kafka_t *, int, const char *, void *))
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                                       sizeof errstr),
                     RD_KAFKA_CONF_OK);
    for (size_t i = 0; kv && kv[i]; i += 2) {
        if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
            fail_msg("%s=%s: %s", kv[i], kv[i + 1], errstr);
    }
    rd_kafka_conf_set_opaque(conf, opaque);
    if (dr_cb)
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    if (error_cb)
        rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    if (!rk)
        fail_msg("rd_kafka_new: %s", errstr);
    return rk;
}

/* Topic -> partition count from a metadata request for all topics; 0 when absent. */
static int partition_count(const struct rd_kafka_metadata *md, const char *topic,
                           int *replicas)
{
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) == 0 && !md->topics[i].err) {
            if (replicas)
                *replicas = md->topics[i].partition_cnt > 0
                                ? md->topics[i].partitions[0].replica_cnt
                                : 0;
            return md->topics[i].partition_cnt;
        }
    }
    return 0;
}

static const struct rd_kafka_metadata *fetch_metadata(rd_kafka_t *rk)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (err)
        fail_msg("metadata: %s", rd_kafka_err2str(err));
    return md;
}

/* ---- (a) kcat round trip ---- */

static void test_kcat_round_trip(void **state)
{
    (void)state;
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    const char *bs = tg_harness_devkafka_bootstrap(dk);

    const char *produce[] = {"kcat", "-b", bs, "-P", "-t", "telemetry", "-k", "key", NULL};
    const char *input = "m1\nm2\nm3\n";
    int status = tg_harness_run(produce, input, strlen(input), NULL, KCAT_TIMEOUT_MS);
    assert_true(tg_harness_exited_ok(status));

    const char *consume[] = {"kcat", "-b", bs, "-C", "-t", "telemetry", "-o", "beginning",
                             "-e", "-q", "-f", "%k=%s\\n", NULL};
    char *out = NULL;
    status = tg_harness_run(consume, NULL, 0, &out, KCAT_TIMEOUT_MS);
    assert_true(tg_harness_exited_ok(status));
    assert_non_null(out);
    /* one key, so one partition, so this exact order */
    assert_string_equal(out, "key=m1\nkey=m2\nkey=m3\n");
    free(out);

    tg_harness_devkafka_destroy(dk);
}

/* ---- (b) producer through an outage ---- */

#define OUTAGE_KEYS 3
#define OUTAGE_MSGS 31 /* message 0 before the outage, 1..30 during it */

struct outage_producer {
    rd_kafka_t *rk;
    int reports;                   /* delivery reports received */
    int failed;                    /* ... of which failed */
    rd_kafka_resp_err_t first_err;
    bool reported[OUTAGE_MSGS];
    int want;                      /* reports to wait for */
    int64_t all_down_ms;           /* when the client reported all brokers down, or 0 */
};

static void outage_dr(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    struct outage_producer *op = opaque;
    size_t i = (size_t)(uintptr_t)msg->_private;
    assert_true(i < OUTAGE_MSGS);
    assert_false(op->reported[i]);
    op->reported[i] = true;
    op->reports++;
    if (msg->err) {
        if (!op->failed)
            op->first_err = msg->err;
        op->failed++;
    }
}

static void outage_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    struct outage_producer *op = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && !op->all_down_ms)
        op->all_down_ms = tg_harness_now_ms();
    (void)reason;
}

static bool outage_reports_cond(void *ud)
{
    struct outage_producer *op = ud;
    rd_kafka_poll(op->rk, 0);
    return op->reports >= op->want;
}

static const char *const outage_keys[OUTAGE_KEYS] = {"dev-a", "dev-b", "dev-c"};

static void outage_produce(struct outage_producer *op, int i)
{
    char value[64];
    const char *key = outage_keys[i % OUTAGE_KEYS];
    int len = snprintf(value, sizeof value, "%s:%d", key, i / OUTAGE_KEYS);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        op->rk, RD_KAFKA_V_TOPIC("telemetry"), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE(value, (size_t)len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i), RD_KAFKA_V_END);
    assert_int_equal(err, RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* Reads every partition of topic from the beginning to its end and checks that each key's
 * values are key:0, key:1, ... exactly once, in order. Returns the number of records. */
static int consume_and_check(const char *bootstrap, const char *topic, int partitions,
                             const int *per_key_expected)
{
    const char *kv[] = {"group.id", "tg-test-checker", "enable.auto.commit", "false",
                        "enable.partition.eof", "true", NULL};
    rd_kafka_t *rk = new_client(RD_KAFKA_CONSUMER, bootstrap, kv, NULL, NULL, NULL);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);

    int next_seq[OUTAGE_KEYS] = {0};
    int eofs = 0, records = 0;
    int64_t deadline = tg_harness_now_ms() + CONSUME_TIMEOUT_MS;
    while (eofs < partitions) {
        if (tg_harness_now_ms() > deadline)
            fail_msg("only %d of %d partitions read to the end within %d ms", eofs,
                     partitions, CONSUME_TIMEOUT_MS);
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eofs++;
        } else if (msg->err) {
            fail_msg("consume: %s", rd_kafka_message_errstr(msg));
        } else {
            char value[64];
            snprintf(value, sizeof value, "%.*s", (int)msg->len, (const char *)msg->payload);
            int k;
            for (k = 0; k < OUTAGE_KEYS; k++) {
                if (msg->key_len == strlen(outage_keys[k]) &&
                    memcmp(msg->key, outage_keys[k], msg->key_len) == 0)
                    break;
            }
            assert_true(k < OUTAGE_KEYS);
            char expected[64];
            snprintf(expected, sizeof expected, "%s:%d", outage_keys[k], next_seq[k]);
            assert_string_equal(value, expected); /* exactly once, in order, per key */
            next_seq[k]++;
            records++;
        }
        rd_kafka_message_destroy(msg);
    }
    for (int k = 0; k < OUTAGE_KEYS; k++)
        assert_int_equal(next_seq[k], per_key_expected[k]);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return records;
}

static void test_producer_outage(void **state)
{
    (void)state;
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    const char *bs = tg_harness_devkafka_bootstrap(dk);

    struct outage_producer op = {.want = 1};
    const char *kv[] = {"acks", "all", "enable.idempotence", "true", "linger.ms", "5",
                        "reconnect.backoff.ms", "50", "reconnect.backoff.max.ms", "500",
                        NULL};
    op.rk = new_client(RD_KAFKA_PRODUCER, bs, kv, &op, outage_dr, outage_error);

    /* before: delivered */
    outage_produce(&op, 0);
    assert_true(tg_harness_wait_until(outage_reports_cond, &op, DELIVERY_TIMEOUT_MS));
    assert_int_equal(op.failed, 0);

    /* outage: every broker port refuses connections */
    int64_t down_at = tg_harness_now_ms();
    assert_int_equal(tg_harness_devkafka_outage_begin(dk), 0);
    for (int id = 1; id <= tg_harness_devkafka_broker_count(dk); id++)
        assert_int_equal(tg_harness_tcp_probe("127.0.0.1",
                                              tg_harness_devkafka_broker_port(dk, id)),
                         ECONNREFUSED);

    /* during: accepted by the client, never reported, still queued */
    for (int i = 1; i < OUTAGE_MSGS; i++)
        outage_produce(&op, i);
    int64_t observe_until = tg_harness_now_ms() + OUTAGE_OBSERVE_MS;
    while (tg_harness_now_ms() < observe_until)
        rd_kafka_poll(op.rk, 100);
    assert_int_equal(op.reports, 1);
    assert_true(rd_kafka_outq_len(op.rk) >= OUTAGE_MSGS - 1);
    if (op.all_down_ms)
        print_message("producer reported all brokers down %lld ms after SIGUSR1\n",
                      (long long)(op.all_down_ms - down_at));

    /* after: everything queued is delivered */
    int64_t up_at = tg_harness_now_ms();
    assert_int_equal(tg_harness_devkafka_outage_end(dk), 0);
    op.want = OUTAGE_MSGS;
    assert_true(tg_harness_wait_until(outage_reports_cond, &op, DELIVERY_TIMEOUT_MS));
    print_message("backlog of %d delivered %lld ms after SIGUSR2\n", OUTAGE_MSGS - 1,
                  (long long)(tg_harness_now_ms() - up_at));
    if (op.failed)
        fail_msg("%d deliveries failed, first: %s", op.failed, rd_kafka_err2str(op.first_err));
    assert_int_equal(rd_kafka_outq_len(op.rk), 0);
    rd_kafka_destroy(op.rk);

    const int per_key[OUTAGE_KEYS] = {11, 10, 10}; /* i % 3 over 0..30 */
    assert_int_equal(consume_and_check(bs, "telemetry", 12, per_key), OUTAGE_MSGS);

    tg_harness_devkafka_destroy(dk);
}

/* ---- (c) stdin commands ---- */

static int64_t timed_metadata_ms(rd_kafka_t *rk)
{
    const struct rd_kafka_metadata *md = NULL;
    int64_t t0 = tg_harness_now_ms();
    assert_int_equal(rd_kafka_metadata(rk, 0, NULL, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t took = tg_harness_now_ms() - t0;
    rd_kafka_metadata_destroy(md);
    return took;
}

static void test_stdin_commands(void **state)
{
    (void)state;
    char reply[1024], expected[256];
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    int port1 = tg_harness_devkafka_broker_port(dk, 1);
    int port2 = tg_harness_devkafka_broker_port(dk, 2);

    /* status lists brokers in id order with the bootstrap ports */
    assert_int_equal(tg_harness_devkafka_cmd(dk, "status", reply, sizeof reply), 0);
    snprintf(expected, sizeof expected, " 1:up:127.0.0.1:%d:rtt=0ms ", port1);
    assert_non_null(strstr(reply, expected));

    /* "ok" means done: the port refuses at once, the others still accept */
    assert_int_equal(tg_harness_devkafka_cmd(dk, "down 1", reply, sizeof reply), 0);
    assert_string_equal(reply, "ok");
    assert_int_equal(tg_harness_tcp_probe("127.0.0.1", port1), ECONNREFUSED);
    assert_int_equal(tg_harness_tcp_probe("127.0.0.1", port2), 0);
    assert_int_equal(tg_harness_devkafka_cmd(dk, "status", reply, sizeof reply), 0);
    snprintf(expected, sizeof expected, " 1:down:127.0.0.1:%d:", port1);
    assert_non_null(strstr(reply, expected));

    assert_int_equal(tg_harness_devkafka_cmd(dk, "up 1", reply, sizeof reply), 0);
    assert_string_equal(reply, "ok");
    assert_int_equal(tg_harness_tcp_probe("127.0.0.1", port1), 0);

    /* rtt delays every response */
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER, tg_harness_devkafka_bootstrap(dk), NULL,
                                NULL, NULL, NULL);
    timed_metadata_ms(rk); /* connect first, so only the request is timed below */
    assert_int_equal(tg_harness_devkafka_cmd(dk, "rtt all 50", reply, sizeof reply), 0);
    assert_string_equal(reply, "ok");
    int64_t slow = timed_metadata_ms(rk);
    print_message("metadata request with rtt 50 ms took %lld ms\n", (long long)slow);
    assert_true(slow >= 45);
    assert_int_equal(tg_harness_devkafka_cmd(dk, "rtt all 0", reply, sizeof reply), 0);
    rd_kafka_destroy(rk);

    /* bad commands are answered, not fatal */
    static const char *const bad[] = {"frobnicate", "down 99", "down", "up one",
                                      "rtt all fast", "rtt 1", "status please"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tg_harness_devkafka_cmd(dk, bad[i], reply, sizeof reply), -1);
        if (strncmp(reply, "error: ", 7) != 0)
            fail_msg("'%s' answered '%s'", bad[i], reply);
    }
    assert_int_equal(tg_harness_devkafka_cmd(dk, "status", reply, sizeof reply), 0);
    assert_null(strstr(reply, "down"));
    assert_null(strstr(reply, "rtt=50ms"));

    tg_harness_devkafka_destroy(dk);
}

/* ---- (d) clean stop ---- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 4096);
    if (buf)
        buf[fread(buf, 1, 4095, f)] = '\0';
    fclose(f);
    return buf;
}

static void test_sigterm_exits_zero(void **state)
{
    (void)state;
    char *dir = tg_harness_tmpdir_new("bootstrap-file");
    assert_non_null(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/bootstrap", dir);
    const char *args[] = {"--bootstrap-file", path, NULL};
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(args);
    assert_non_null(dk);
    const char *bs = tg_harness_devkafka_bootstrap(dk);

    /* the file holds the same line, complete, once the first line is out */
    char *content = slurp(path);
    assert_non_null(content);
    char expected[2100];
    snprintf(expected, sizeof expected, "%s\n", bs);
    assert_string_equal(content, expected);
    free(content);

    /* EOF on stdin does not stop the cluster */
    struct tg_harness_proc *proc = tg_harness_devkafka_proc(dk);
    tg_harness_proc_close_stdin(proc);
    const char *list[] = {"kcat", "-b", bs, "-L", NULL};
    char *out = NULL;
    assert_true(tg_harness_exited_ok(tg_harness_run(list, NULL, 0, &out, KCAT_TIMEOUT_MS)));
    assert_non_null(strstr(out, "3 brokers"));
    free(out);
    assert_true(tg_harness_proc_running(proc));

    int status = tg_harness_devkafka_stop(dk);
    assert_true(tg_harness_exited_ok(status));
    struct stat st;
    assert_int_equal(stat(path, &st), -1); /* removed on a clean exit */

    tg_harness_devkafka_destroy(dk);
    tg_harness_tmpdir_done(dir);
}

/* ---- (e) topics ---- */

static void test_default_topics(void **state)
{
    (void)state;
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER, tg_harness_devkafka_bootstrap(dk), NULL,
                                NULL, NULL, NULL);
    const struct rd_kafka_metadata *md = fetch_metadata(rk);
    int replicas = 0;
    assert_int_equal(md->broker_cnt, 3);
    assert_int_equal(partition_count(md, "telemetry", &replicas), 12);
    assert_int_equal(replicas, 3);
    assert_int_equal(partition_count(md, "telemetry.dlq", NULL), 3);
    assert_int_equal(partition_count(md, "telemetry.anomalies", NULL), 6);
    assert_int_equal(partition_count(md, "telemetry.agg.1m", NULL), 6);
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    tg_harness_devkafka_destroy(dk);
}

static void test_custom_topics_replace_defaults(void **state)
{
    (void)state;
    const char *args[] = {"--brokers", "1", "--topic", "orders:5", "--topic", "audit:1", NULL};
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(args);
    assert_non_null(dk);
    assert_int_equal(tg_harness_devkafka_broker_count(dk), 1);
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER, tg_harness_devkafka_bootstrap(dk), NULL,
                                NULL, NULL, NULL);
    const struct rd_kafka_metadata *md = fetch_metadata(rk);
    int replicas = 0;
    assert_int_equal(md->broker_cnt, 1);
    assert_int_equal(partition_count(md, "orders", &replicas), 5);
    assert_int_equal(replicas, 1);
    assert_int_equal(partition_count(md, "audit", NULL), 1);
    assert_int_equal(partition_count(md, "telemetry", NULL), 0);
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    tg_harness_devkafka_destroy(dk);
}

static void test_usage_errors_exit_2(void **state)
{
    (void)state;
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/tidegate-devkafka", tg_harness_bin_dir());
    const char *const cases[][4] = {
        {bin, "--brokers", "0", NULL},
        {bin, "--topic", "nopartitions", NULL},
        {bin, "--topic", "bad/name:3", NULL},
        {bin, "--no-such-option", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int status = tg_harness_run(cases[i], NULL, 0, NULL, 10000);
        assert_true(status != -1 && WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 2);
    }
    const char *help[] = {bin, "--help", NULL};
    char *out = NULL;
    assert_true(tg_harness_exited_ok(tg_harness_run(help, NULL, 0, &out, 10000)));
    assert_non_null(strstr(out, "REPLACES the default list"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_kcat_round_trip, teardown),
        cmocka_unit_test_teardown(test_producer_outage, teardown),
        cmocka_unit_test_teardown(test_stdin_commands, teardown),
        cmocka_unit_test_teardown(test_sigterm_exits_zero, teardown),
        cmocka_unit_test_teardown(test_default_topics, teardown),
        cmocka_unit_test_teardown(test_custom_topics_replace_defaults, teardown),
        cmocka_unit_test_teardown(test_usage_errors_exit_2, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
