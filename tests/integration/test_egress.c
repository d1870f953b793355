/* Integration test of gateway/egress_kafka.c against tidegate-devkafka: records arrive with
 * their key, timestamp and headers on the partition the Java client's murmur2 partitioner
 * picks; dead letters carry their reason headers; through an outage nothing is reported
 * delivered, tg_egress_up() goes false, and everything is delivered once the cluster returns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "egress_kafka.h"
#include "harness.h"
#include "log.h"

#define N_DEV 40
#define PARTITIONS 12

struct outcome {
    int ok, retriable, permanent;
    uint64_t last_rid;
    bool in_order;
};

static void on_delivery(void *ud, uint64_t rid, enum tg_jrecord_kind kind, int64_t ts_ms,
                        tg_err result, const char *reason)
{
    (void)kind;
    (void)ts_ms;
    (void)reason;
    struct outcome *o = ud;
    if (result == TG_OK)
        o->ok++;
    else if (tg_err_retriable(result))
        o->retriable++;
    else
        o->permanent++;
    (void)rid;
}

/* Kafka's murmur2 (the Java client's Utils.murmur2), written from its definition: the
 * independent reference the partitioner must agree with. */
static int32_t java_murmur2(const uint8_t *data, int len)
{
    const uint32_t m = 0x5bd1e995;
    const int r = 24;
    uint32_t h = 0x9747b28c ^ (uint32_t)len;
    int len4 = len / 4;
    for (int i = 0; i < len4; i++) {
        int i4 = i * 4;
        uint32_t k = (uint32_t)data[i4] | (uint32_t)data[i4 + 1] << 8 |
                     (uint32_t)data[i4 + 2] << 16 | (uint32_t)data[i4 + 3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len % 4) {
    case 3:
        h ^= (uint32_t)data[(len & ~3) + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)data[(len & ~3) + 1] << 8;
        /* fall through */
    case 1:
        h ^= data[len & ~3];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

static int java_partition(const char *key, int n)
{
    return (int)((uint32_t)java_murmur2((const uint8_t *)key, (int)strlen(key)) & 0x7fffffff) % n;
}

static void known_vector(void **state)
{
    (void)state;
    /* Values published with Kafka's own murmur2 tests (Utils.murmur2 of these strings). */
    assert_int_equal(java_murmur2((const uint8_t *)"21", 2), -973932308);
    assert_int_equal(java_murmur2((const uint8_t *)"foobar", 6), -790332482);
}

static struct tg_egress *make_egress(const char *bootstrap, struct outcome *o)
{
    static const char *const extra[] = {"reconnect.backoff.max.ms", "500", NULL};
    struct tg_egress_opts opts = {
        .brokers = bootstrap, .topic = "telemetry", .dlq_topic = "telemetry.dlq",
        .client_id = "test-egress", .compression = "zstd", .content_type = "application/json",
        .linger_ms = 5, .batch_num_messages = 1000, .queue_max_kbytes = 4096,
        .queue_max_messages = 10000, .stats_interval_ms = 200, .rdkafka_conf = extra,
    };
    struct tg_egress *eg = NULL;
    char err[512];
    if (tg_egress_new(&opts, on_delivery, o, &eg, err, sizeof err) != TG_OK)
        fail_msg("egress: %s", err);
    return eg;
}

static void produce_batch(struct tg_egress *eg, uint64_t first_rid, int n)
{
    for (int i = 0; i < n; i++) {
        char key[32], val[96];
        int dev = (int)((first_rid + (uint64_t)i) % N_DEV);
        snprintf(key, sizeof key, "dev-%02d", dev);
        snprintf(val, sizeof val, "{\"device\":\"%s\",\"seq\":%llu}", key,
                 (unsigned long long)(first_rid + (uint64_t)i));
        struct tg_jrecord rec = {.rid = first_rid + (uint64_t)i, .kind = TG_JREC_TELEMETRY,
                                 .ts_ms = 1763712000000 + i, .rx_ms = 1763712000000 + i,
                                 .key = (const uint8_t *)key, .key_len = strlen(key),
                                 .value = (const uint8_t *)val, .value_len = strlen(val)};
        assert_int_equal(tg_egress_produce(eg, &rec), TG_OK);
    }
}

struct poll_until {
    struct tg_egress *eg;
    struct outcome *o;
    int want_ok;
    int want_up; /* -1: don't care */
};

static bool polled(void *ud)
{
    struct poll_until *p = ud;
    tg_egress_poll(p->eg, 50);
    return p->o->ok >= p->want_ok && (p->want_up < 0 || tg_egress_up(p->eg) == p->want_up);
}

static char *consume(const char *bootstrap, const char *topic, const char *fmt, int expect_lines)
{
    char count[16];
    snprintf(count, sizeof count, "%d", expect_lines);
    const char *const argv[] = {"kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning",
                                "-c", count, "-e", "-q", "-f", fmt, NULL};
    char *out = NULL;
    int st = tg_harness_run(argv, NULL, 0, &out, 30000);
    assert_int_equal(st, 0);
    return out;
}

static void delivery_placement_headers_outage(void **state)
{
    (void)state;
    tg_log_set_level(TG_LOG_LEVEL_ERROR); /* librdkafka is chatty about the outage */
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    const char *bootstrap = tg_harness_devkafka_bootstrap(dk);
    struct outcome o = {0};
    struct tg_egress *eg = make_egress(bootstrap, &o);

    produce_batch(eg, 1, 200);
    struct poll_until pu = {eg, &o, 200, 1};
    assert_true(tg_harness_wait_until(polled, &pu, 20000));
    assert_int_equal(tg_egress_in_flight(eg), 0);
    assert_true(tg_egress_up(eg));

    /* Placement, key, timestamp type and headers, as a consumer sees them. */
    char *out = consume(bootstrap, "telemetry", "%k %p %h\\n", 200);
    int lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        char key[32];
        int part;
        assert_int_equal(sscanf(line, "%31s %d", key, &part), 2);
        assert_int_equal(part, java_partition(key, PARTITIONS));
        assert_non_null(strstr(line, "content-type=application/json"));
        assert_non_null(strstr(line, "schema-version=1"));
    }
    assert_int_equal(lines, 200);
    free(out);

    /* A dead letter keeps its original bytes and carries its reason headers. */
    uint8_t aux[256];
    size_t aux_len = 0;
    assert_int_equal(tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "reason-code", "malformed", 9), TG_OK);
    assert_int_equal(tg_jrecord_headers_put(aux, sizeof aux, &aux_len, "mqtt-topic", "telemetry/dev-01", 16), TG_OK);
    struct tg_jrecord dlq = {.rid = 1000, .kind = TG_JREC_DLQ, .ts_ms = 1763712000000,
                             .key = (const uint8_t *)"dev-01", .key_len = 6,
                             .value = (const uint8_t *)"\xff\x00garbage", .value_len = 9,
                             .aux = aux, .aux_len = aux_len};
    assert_int_equal(tg_egress_produce(eg, &dlq), TG_OK);
    pu.want_ok = 201;
    assert_true(tg_harness_wait_until(polled, &pu, 20000));
    out = consume(bootstrap, "telemetry.dlq", "%k %h\\n", 1);
    assert_non_null(strstr(out, "dev-01"));
    assert_non_null(strstr(out, "reason-code=malformed"));
    assert_non_null(strstr(out, "mqtt-topic=telemetry/dev-01"));
    free(out);

    /* Outage: nothing is confirmed, the state goes down, nothing is failed either. */
    assert_int_equal(tg_harness_devkafka_outage_begin(dk), 0);
    pu.want_ok = 0;
    pu.want_up = 0;
    assert_true(tg_harness_wait_until(polled, &pu, 20000));
    produce_batch(eg, 2000, 300);
    for (int i = 0; i < 10; i++) /* a bounded look: nothing may be reported meanwhile */
        tg_egress_poll(eg, 50);
    assert_int_equal(o.ok, 201);
    assert_int_equal(o.retriable + o.permanent, 0);
    assert_int_equal(tg_egress_in_flight(eg), 300);

    assert_int_equal(tg_harness_devkafka_outage_end(dk), 0);
    pu.want_ok = 501;
    pu.want_up = 1;
    assert_true(tg_harness_wait_until(polled, &pu, 30000));
    assert_int_equal(o.retriable + o.permanent, 0);
    assert_int_equal(tg_egress_in_flight(eg), 0);

    /* What is left at destroy is reported as retriable, never silently dropped. */
    assert_int_equal(tg_harness_devkafka_outage_begin(dk), 0);
    produce_batch(eg, 5000, 10);
    tg_egress_destroy(eg);
    assert_int_equal(o.retriable, 10);
    assert_int_equal(tg_harness_devkafka_outage_end(dk), 0);
    tg_harness_devkafka_destroy(dk);
}

static void bad_passthrough_property(void **state)
{
    (void)state;
    static const char *const extra[] = {"no.such.property", "1", NULL};
    struct tg_egress_opts opts = {
        .brokers = "127.0.0.1:1", .topic = "t", .dlq_topic = "d", .client_id = "x",
        .compression = "zstd", .content_type = "application/json", .linger_ms = 5,
        .batch_num_messages = 100, .queue_max_kbytes = 1024, .queue_max_messages = 100,
        .stats_interval_ms = 1000, .rdkafka_conf = extra,
    };
    struct tg_egress *eg = NULL;
    char err[512] = "";
    assert_int_equal(tg_egress_new(&opts, on_delivery, NULL, &eg, err, sizeof err), TG_ERR_CONFIG);
    assert_null(eg);
    assert_non_null(strstr(err, "[kafka.rdkafka] no.such.property"));
}

/* A value librdkafka refuses may be a credential: the error names the property, never the
 * value (librdkafka's own message quotes it, so it is scrubbed too). */
static void refused_value_not_echoed(void **state)
{
    (void)state;
    static const char *const extra[] = {"security.protocol", "hunter2-secret", NULL};
    struct tg_egress_opts opts = {
        .brokers = "127.0.0.1:1", .topic = "t", .dlq_topic = "d", .client_id = "x",
        .compression = "zstd", .content_type = "application/json", .linger_ms = 5,
        .batch_num_messages = 100, .queue_max_kbytes = 1024, .queue_max_messages = 100,
        .stats_interval_ms = 1000, .rdkafka_conf = extra,
    };
    struct tg_egress *eg = NULL;
    char err[512] = "";
    tg_err rc = tg_egress_new(&opts, on_delivery, NULL, &eg, err, sizeof err);
    if (rc == TG_OK) { /* librdkafka took it as a name; then there is nothing to check */
        tg_egress_destroy(eg);
        fail_msg("librdkafka accepted security.protocol=hunter2-secret; pick another bad value");
    }
    assert_non_null(strstr(err, "[kafka.rdkafka] security.protocol"));
    assert_null(strstr(err, "hunter2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_vector),
        cmocka_unit_test(delivery_placement_headers_outage),
        cmocka_unit_test(bad_passthrough_property),
        cmocka_unit_test(refused_value_not_echoed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
