/*
 * test_gw_consumer.c - the guarantee tests' Kafka reader (tg_gw_consumer_read in
 * gateway_fixture.c) cannot miss records: a call reads everything a producer had confirmed
 * before it began, whatever earlier calls on the same consumer saw. test_gw_crash polls one
 * consumer with want 0 until the survivors arrive; when its first call found the topic at
 * its end before the restarted gateway sent anything (the read-back at start holds sending
 * back, for seconds under qemu), the old reader never fetched again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

#include "gateway_fixture.h"
#include "harness.h"

#define READ_TIMEOUT_MS 20000
#define FLUSH_TIMEOUT_MS 30000
#define FIRST 5
#define LATER 7
#define MORE 3

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

/* Produces n records with keys tag-0 .. tag-(n-1) (spread over the partitions) and waits
 * until the cluster has confirmed them all (acks=all). */
static void produce(const char *bootstrap, const char *tag, int n)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[] = {"bootstrap.servers", bootstrap, "acks", "all", "linger.ms", "0",
                        "log_level", "3", NULL};
    for (size_t i = 0; kv[i]; i += 2)
        assert_int_equal(rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr),
                         RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    for (int i = 0; i < n; i++) {
        char key[64], value[64];
        snprintf(key, sizeof key, "%s-%d", tag, i);
        snprintf(value, sizeof value, "{\"n\":%d}", i);
        assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TG_GW_TOPIC),
                                           RD_KAFKA_V_KEY(key, strlen(key)),
                                           RD_KAFKA_V_VALUE(value, strlen(value)),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_END),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    assert_int_equal(rd_kafka_flush(rk, FLUSH_TIMEOUT_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_outq_len(rk), 0);
    rd_kafka_destroy(rk);
}

/* A consumer that has read the topic to its end once still reads what comes after, on a
 * call that wants nothing in particular (want 0), and on one that wants a count. */
static void read_after_end_sees_new_records(void **state)
{
    (void)state;
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    const char *bootstrap = tg_harness_devkafka_bootstrap(dk);

    produce(bootstrap, "first", FIRST);
    struct tg_gw_consumer *c = tg_gw_consumer_new(bootstrap, TG_GW_TOPIC);
    assert_non_null(c);
    assert_int_equal(tg_gw_consumer_read(c, 0, READ_TIMEOUT_MS), FIRST);
    /* At the end of every partition now; an empty call changes nothing. */
    assert_int_equal(tg_gw_consumer_read(c, 0, READ_TIMEOUT_MS), FIRST);

    produce(bootstrap, "later", LATER);
    size_t got = tg_gw_consumer_read(c, 0, READ_TIMEOUT_MS);
    fprintf(stderr, "after %d more records were confirmed, a read with want 0 has %zu of %d\n",
            LATER, got, FIRST + LATER);
    assert_int_equal(got, FIRST + LATER);

    produce(bootstrap, "more", MORE);
    assert_int_equal(tg_gw_consumer_read(c, 1, READ_TIMEOUT_MS), FIRST + LATER + MORE);

    /* Each record once, none invented. */
    int first = 0, later = 0, more = 0;
    for (size_t i = 0; i < tg_gw_consumer_count(c); i++) {
        const struct tg_gw_record *rec = tg_gw_consumer_record(c, i);
        assert_non_null(rec->key);
        first += strncmp(rec->key, "first-", 6) == 0;
        later += strncmp(rec->key, "later-", 6) == 0;
        more += strncmp(rec->key, "more-", 5) == 0;
    }
    assert_int_equal(first, FIRST);
    assert_int_equal(later, LATER);
    assert_int_equal(more, MORE);

    tg_gw_consumer_destroy(c);
    tg_harness_devkafka_destroy(dk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(read_after_end_sees_new_records, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
