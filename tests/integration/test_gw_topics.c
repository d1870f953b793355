/*
 * test_gw_topics.c - a missing Kafka topic is reported and holds back only its own records
 * (issue 11). The dead-letter topic is made unusable: on the real tier (no auto-creation) it
 * is configured to a topic that does not exist; on devkafka, whose topics auto-create, its
 * metadata answers UNKNOWN_TOPIC_OR_PART (`topic-error`). Then:
 *   - tidegate_kafka_topic_available{kind="dlq"} is 0, /healthz answers 503 naming the topic,
 *     and the log says so;
 *   - bad payloads are dead-lettered but wait, and every good reading published after them is
 *     still delivered (before the fix the first dead letter stopped all output);
 *   - once the topic exists (is created / its error cleared) the waiting dead letters are
 *     delivered, the gauge is 1 and /healthz answers 200 again.
 * And the other way round (devkafka only, which can answer TOPIC_AUTHORIZATION_FAILED): the
 * telemetry topic refused, readings wait in the journal while dead letters are delivered;
 * once access is back every reading is delivered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_fixture.h"

#define ABSENT_DLQ "telemetry.dlq.absent"
#define BAD_PAYLOADS 5
#define GOOD_DEVICES 10
#define GOOD_SEQS 20
#define GOOD_READINGS (GOOD_DEVICES * GOOD_SEQS)
#define WAIT_MS 30000

static const char *dlq_labels = "kind=\"dlq\"";

static void test_missing_dlq_topic(void **state)
{
    (void)state;
    bool real = false;
    {
        const char *tier = getenv("TG_KAFKA_TIER");
        real = tier && strcmp(tier, "real") == 0;
    }
    const char *sets_real[] = {"kafka.dlq_topic=" ABSENT_DLQ, NULL};
    /* librdkafka fails a record for a topic that does not exist after this long (default
     * 30 s); short here so that the stall it caused before the fix shows within the test. */
    struct tg_gw_opts opts = {.sets = real ? sets_real : NULL, .ready_unhealthy = true,
                              .extra_ini = "[kafka.rdkafka]\n"
                                           "topic.metadata.propagation.max.ms = 1000\n"};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    const char *dlq_topic = real ? ABSENT_DLQ : TG_GW_DLQ_TOPIC;
    if (!real) {
        char reply[256];
        assert_int_equal(tg_harness_devkafka_cmd(tg_gw_devkafka(gw),
                                                 "topic-error " TG_GW_DLQ_TOPIC " unknown_topic",
                                                 reply, sizeof reply),
                         0);
        /* The gateway learns it from its next look at the topics' metadata. */
        assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_topic_available", dlq_labels, TG_GW_EQ,
                                      0, WAIT_MS));
    }

    /* Dead letters first, then good readings: the good ones all get through. */
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "topics-pub");
    assert_non_null(pub);
    for (int i = 0; i < BAD_PAYLOADS; i++)
        assert_int_equal(tg_gw_pub_send(pub, "bad-01", "{not json", 9), 0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_invalid_total", NULL, TG_GW_EQ,
                                  BAD_PAYLOADS, WAIT_MS));
    /* Published over 2 s, past the first dead letter's failure. */
    const struct tg_gw_plan plan = {.prefix = "good", .devices = GOOD_DEVICES, .seqs = GOOD_SEQS,
                                    .first_seq = 1, .rate = 100};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ,
                                  GOOD_READINGS, WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_dlq_delivered_total", NULL, TG_GW_EQ, 0));
    /* The dead letters wait (journal_records counts them), nothing is dropped. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, BAD_PAYLOADS,
                                  WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));

    /* Reported: metric, /healthz, log. */
    assert_true(tg_gw_metric_is(gw, "tidegate_kafka_topic_available", "kind=\"telemetry\"",
                                TG_GW_EQ, 1));
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_topic_available", dlq_labels, TG_GW_EQ, 0,
                                  WAIT_MS));
    char *body = NULL;
    assert_int_equal(tg_gw_http_get(gw, "/healthz", &body), 503);
    assert_non_null(body);
    assert_non_null(strstr(body, dlq_topic));
    free(body);
    assert_true(tg_gw_log_count(gw, "cannot take records") >= 1);

    /* The topic comes: what waited is delivered, and health is back. */
    if (real) {
        assert_int_equal(tg_harness_kafka_create_topic(tg_gw_kafka(gw), ABSENT_DLQ, 1, NULL), 0);
    } else {
        char reply[256];
        assert_int_equal(tg_harness_devkafka_cmd(tg_gw_devkafka(gw),
                                                 "topic-error " TG_GW_DLQ_TOPIC " none", reply,
                                                 sizeof reply),
                         0);
    }
    assert_true(tg_gw_wait_metric(gw, "tidegate_dlq_delivered_total", NULL, TG_GW_EQ,
                                  BAD_PAYLOADS, 60000));
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_topic_available", dlq_labels, TG_GW_EQ, 1,
                                  WAIT_MS));
    assert_int_equal(tg_gw_http_get(gw, "/healthz", NULL), 200);
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ,
                                GOOD_READINGS));

    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

static void test_unauthorized_telemetry_topic(void **state)
{
    (void)state;
    const char *tier = getenv("TG_KAFKA_TIER");
    if (tier && strcmp(tier, "real") == 0)
        skip(); /* the real broker runs without an authorizer */
    struct tg_gw_opts opts = {.kafka_tier = TG_GW_KAFKA_DEV, .ready_unhealthy = true};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    char reply[256];
    assert_int_equal(tg_harness_devkafka_cmd(tg_gw_devkafka(gw),
                                             "topic-error " TG_GW_TOPIC
                                             " TOPIC_AUTHORIZATION_FAILED",
                                             reply, sizeof reply),
                     0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_topic_available", "kind=\"telemetry\"",
                                  TG_GW_EQ, 0, WAIT_MS));

    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "topics-pub2");
    assert_non_null(pub);
    const struct tg_gw_plan plan = {.prefix = "good", .devices = GOOD_DEVICES, .seqs = GOOD_SEQS,
                                    .first_seq = 1};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    for (int i = 0; i < BAD_PAYLOADS; i++)
        assert_int_equal(tg_gw_pub_send(pub, "bad-01", "{not json", 9), 0);
    /* Dead letters behind the waiting readings are delivered. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_dlq_delivered_total", NULL, TG_GW_EQ,
                                  BAD_PAYLOADS, WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ, 0));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, GOOD_READINGS,
                                  WAIT_MS));
    char *body = NULL;
    assert_int_equal(tg_gw_http_get(gw, "/healthz", &body), 503);
    assert_non_null(body);
    assert_non_null(strstr(body, "TOPIC_AUTHORIZATION_FAILED"));
    free(body);

    /* Access granted: every reading goes, once. */
    assert_int_equal(tg_harness_devkafka_cmd(tg_gw_devkafka(gw), "topic-error " TG_GW_TOPIC " none",
                                             reply, sizeof reply),
                     0);
    assert_true(tg_gw_kafka_exactly_once(gw, &plan, GOOD_READINGS, "after the refusal", 60000));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", NULL, TG_GW_EQ, 0));

    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_missing_dlq_topic, tg_gw_teardown),
        cmocka_unit_test_teardown(test_unauthorized_telemetry_topic, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
