/*
 * test_chaos_kafka_errors.c - Kafka answers produce requests with errors (injected by
 * tidegate-devkafka's "error" command, librdkafka's mock error stacks) while devices publish.
 * For each error: what the gateway does, and whether delivery stays exactly once.
 *
 *   not_leader     NOT_LEADER_FOR_PARTITION: librdkafka refreshes its metadata and retries
 *                  the batch (idempotent producer: no duplicate); the gateway sees nothing.
 *   timed_out      REQUEST_TIMED_OUT: retried the same way.
 *   unknown_topic  UNKNOWN_TOPIC_OR_PART: retried after a metadata refresh.
 *   topic_gone     Metadata answers UNKNOWN_TOPIC_OR_PART for telemetry for 3 s (devkafka's
 *                  topic-error; not_leader answers make librdkafka ask at once), as if the
 *                  topic had been deleted and created again: librdkafka holds the records
 *                  until the topic is back.
 *   leader_moves   no error: every telemetry partition's leader moves to broker 2, then a
 *                  second later to broker 3 (devkafka's leader command); the old leader
 *                  answers NOT_LEADER_FOR_PARTITION and librdkafka follows the move.
 *                  For these five every reading must be in Kafka exactly once, in
 *                  per-device order, nothing dead-lettered or dropped.
 *   too_large      MSG_SIZE_TOO_LARGE: permanent. librdkafka fails the batch; the gateway
 *                  dead-letters each reading of it (its canonical record on telemetry.dlq,
 *                  reason too_large) and goes on. Every reading must then be in exactly one
 *                  place: telemetry (once, in order) or the DLQ (once), or counted in
 *                  dropped{reason="kafka_rejected"} when the dead letter was refused too.
 *
 * One request in flight per broker connection (kafka.rdkafka.max.in.flight=1, librdkafka's
 * default is 5): librdkafka 2.0.2's mock cluster checks an idempotent producer's id and epoch
 * but not its sequence numbers, so while one request is answered with an error the next one
 * in flight is appended anyway; librdkafka then takes the later acknowledgement as proof
 * that the earlier batch was persisted too (a real broker would have answered
 * OUT_OF_ORDER_SEQUENCE_NUMBER) and reports it delivered. A bare librdkafka producer shows
 * the same with devkafka (README, "Chaos suite"), so with several requests in flight these
 * errors would measure the mock, not the gateway.
 *
 * ERRORS_PER_BROKER errors are queued on every broker once PUBLISH_FIRST readings have been
 * published; the test waits until the brokers have used all of them up, so each error was
 * really answered. It prints what was lost, duplicated and dead-lettered per error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos.h"

#define DEVICES 50
#define SEQS 80
#define READINGS (DEVICES * SEQS)
#define RATE 2000                /* readings per second: the plan takes 2 s */
#define PUBLISH_FIRST 1000
#define ERRORS_PER_BROKER 3
#define USED_UP_WAIT_MS 5000
#define TOPIC_GONE_MS 3000
#define LEADER_STAY_MS 1000
#define WAIT_MS 30000

struct error_case {
    const char *error;           /* devkafka's name for it */
    bool permanent;              /* the cluster will never take the batch */
    bool topic_gone;             /* Metadata says the topic is unknown for TOPIC_GONE_MS */
    bool leader_moves;           /* no error: every partition's leader moves, twice */
};

struct consumed {
    struct tg_harness_devkafka *dk;
    long left;
};

static bool errors_used_up(void *ud)
{
    struct consumed *cs = ud;
    char reply[128];
    if (tg_harness_devkafka_cmd(cs->dk, "errors all produce", reply, sizeof reply) != 0)
        return false;
    cs->left = strtol(reply + 2, NULL, 10);
    return cs->left == 0;
}

struct settled {
    struct tg_gw *gw;
    double delivered, dead_lettered, rejected, held;
};

static bool all_accounted(void *ud)
{
    struct settled *st = ud;
    st->delivered = tg_gw_metric(st->gw, "tidegate_messages_delivered_total", NULL);
    st->dead_lettered = tg_gw_metric(st->gw, "tidegate_dlq_delivered_total", NULL);
    st->rejected =
        tg_gw_metric(st->gw, "tidegate_messages_dropped_total", "reason=\"kafka_rejected\"");
    st->held = tg_gw_metric(st->gw, "tidegate_journal_records", NULL);
    return st->held == 0 && st->delivered + st->dead_lettered + st->rejected >= READINGS;
}

static void run_case(const struct error_case *ec)
{
    const char *const sets[] = {"kafka.rdkafka.max.in.flight=1", NULL};
    const struct tg_gw_opts opts = {.kafka_tier = TG_GW_KAFKA_DEV, .sets = sets};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "chaos-pub");
    assert_non_null(pub);
    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_true(tg_gw_pub_wait_progress(pub, PUBLISH_FIRST, WAIT_MS));

    char cmd[128], reply[256];
    struct tg_harness_devkafka *dk = tg_gw_devkafka(gw);
    if (ec->topic_gone) {
        /* The topic looks deleted to whoever refreshes its metadata: the not_leader answers
         * make librdkafka refresh at once rather than at its next periodic refresh. */
        assert_int_equal(tg_harness_devkafka_cmd(dk, "topic-error " TG_GW_TOPIC
                                                 " unknown_topic", reply, sizeof reply), 0);
    }
    if (ec->leader_moves) {
        assert_int_equal(tg_harness_devkafka_cmd(dk, "leader " TG_GW_TOPIC " all 2", reply,
                                                 sizeof reply), 0);
        tg_chaos_pause_until(tg_harness_now_ms() + LEADER_STAY_MS, NULL, NULL);
        assert_int_equal(tg_harness_devkafka_cmd(dk, "leader " TG_GW_TOPIC " all 3", reply,
                                                 sizeof reply), 0);
    } else {
        snprintf(cmd, sizeof cmd, "error all produce %s %d", ec->error, ERRORS_PER_BROKER);
        assert_int_equal(tg_harness_devkafka_cmd(dk, cmd, reply, sizeof reply), 0);
    }
    int64_t injected = tg_harness_now_ms();
    if (ec->topic_gone) {
        tg_chaos_pause_until(injected + TOPIC_GONE_MS, NULL, NULL);
        assert_int_equal(tg_harness_devkafka_cmd(dk, "topic-error " TG_GW_TOPIC " none", reply,
                                                 sizeof reply), 0);
    }
    /* A broker answers its errors only as produce requests reach it; once the plan is
     * published and delivered, none may come. So this waits while the load lasts (and a
     * little after), and requires that errors were answered, not necessarily all of them. */
    struct consumed cs = {dk, -1};
    int64_t used_up_ms = -1;
    if (tg_harness_wait_until(errors_used_up, &cs, USED_UP_WAIT_MS))
        used_up_ms = tg_harness_now_ms() - injected;
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    struct settled st = {.gw = gw};
    if (!tg_harness_wait_until(all_accounted, &st, WAIT_MS)) {
        tg_gw_print_log_tail(gw, 30);
        fail_msg("%s: delivered %g + dead-lettered %g + rejected %g < %d (journal_records %g)",
                 ec->error, st.delivered, st.dead_lettered, st.rejected, READINGS, st.held);
    }
    int64_t settled_ms = tg_harness_now_ms() - injected;
    errors_used_up(&cs);
    int answered = ec->leader_moves ? 0 : 3 * ERRORS_PER_BROKER - (int)cs.left;

    struct tg_gw_audit tele, dlq;
    struct tg_gw_consumer *c = tg_chaos_audit(gw, &plan, (size_t)st.delivered, WAIT_MS, &tele);
    assert_non_null(c);
    struct tg_gw_consumer *d = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_DLQ_TOPIC);
    assert_non_null(d);
    tg_gw_consumer_read(d, (size_t)st.dead_lettered, WAIT_MS);
    tg_gw_audit_run_quiet(d, &plan, &dlq);
    tg_gw_audit_print(ec->error, &tele);

    /* Every reading in exactly one place. */
    int nowhere = 0, both = 0, dlq_dups = 0, wrong_reason = 0;
    for (int dev = 0; dev < DEVICES; dev++) {
        for (int seq = 0; seq < SEQS; seq++) {
            int t = tg_gw_audit_copies(&tele, dev, seq);
            int q = tg_gw_audit_copies(&dlq, dev, seq);
            nowhere += t + q == 0;
            if (t + q == 0 && nowhere <= 10) {
                char id[80];
                tg_gw_plan_device(&plan, dev, id, sizeof id);
                fprintf(stderr, "%s: dev %d seq %d nowhere (partition %d, published %lld ms "
                        "after the injection)\n", ec->error, dev, seq,
                        tg_gw_java_partition(id, 12),
                        (long long)(tg_gw_pub_sent_ms(pub, dev, seq) - injected));
            }
            both += t > 0 && q > 0;
            dlq_dups += q > 1 ? q - 1 : 0;
        }
    }
    for (size_t i = 0; i < tg_gw_consumer_count(d); i++) {
        const char *reason = tg_gw_record_header(tg_gw_consumer_record(d, i), "reason");
        if (!reason || strcmp(reason, "too_large") != 0)
            wrong_reason++;
    }
    char label[64];
    snprintf(label, sizeof label, "kafka_error_%s",
             ec->topic_gone ? "topic_gone" : ec->leader_moves ? "leader_moves" : ec->error);
    tg_chaos_summary(label, nowhere, tele.duplicates + dlq_dups + both,
                     "%d readings, %d of %d errors answered (all of them %lld ms after the "
                     "injection; -1: not all), all "
                     "accounted for after %lld ms: delivered %g, dead-lettered %g (%zu on the "
                     "DLQ, %d with another reason), dropped kafka_rejected %g, gateway log lines "
                     "naming Kafka errors %d", READINGS, answered,
                     3 * ERRORS_PER_BROKER, (long long)used_up_ms, (long long)settled_ms,
                     st.delivered, st.dead_lettered, tg_gw_consumer_count(d), wrong_reason,
                     st.rejected, tg_gw_log_count(gw, "[kafka]"));
    assert_true(answered > 0 || ec->leader_moves);
    /* The fault took effect: the gateway saw its topic gone (and come back). */
    if (ec->topic_gone)
        assert_true(tg_gw_log_count(gw, "cannot take records") > 0);
    assert_int_equal(tele.duplicates, 0);
    assert_int_equal(tele.foreign, 0);
    assert_int_equal(tele.bad, 0);
    assert_int_equal(tele.misplaced, 0);
    assert_int_equal(tele.out_of_order, 0);
    assert_int_equal(both, 0);
    assert_int_equal(dlq_dups, 0);
    assert_int_equal(wrong_reason, 0);
    if (ec->permanent) {
        assert_true(nowhere <= (int)st.rejected);
        assert_int_equal(tele.distinct + dlq.distinct + (int)st.rejected, READINGS);
    } else {
        assert_int_equal(nowhere, 0);
        assert_int_equal(tele.distinct, READINGS);
        assert_int_equal((int)tg_gw_consumer_count(d), 0);
        assert_true(st.rejected == 0);
    }
    tg_gw_audit_free(&tele);
    tg_gw_audit_free(&dlq);
    tg_gw_consumer_destroy(c);
    tg_gw_consumer_destroy(d);

    /* The gateway is still healthy and delivering. */
    assert_int_equal(tg_gw_http_get(gw, "/healthz", NULL), 200);
    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

static void error_not_leader(void **state)
{
    (void)state;
    run_case(&(struct error_case){"not_leader", false, false, false});
}

static void error_timed_out(void **state)
{
    (void)state;
    run_case(&(struct error_case){"timed_out", false, false, false});
}

static void error_unknown_topic(void **state)
{
    (void)state;
    run_case(&(struct error_case){"unknown_topic", false, false, false});
}

static void error_topic_gone(void **state)
{
    (void)state;
    run_case(&(struct error_case){"not_leader", false, true, false});
}

static void error_leader_moves(void **state)
{
    (void)state;
    run_case(&(struct error_case){"leader_moves", false, false, true});
}

static void error_too_large(void **state)
{
    (void)state;
    run_case(&(struct error_case){"too_large", true, false, false});
}

int main(void)
{
    /* TG_CHAOS_ONLY=error_too_large runs one case (cmocka's test filter, * allowed) */
    if (getenv("TG_CHAOS_ONLY"))
        cmocka_set_test_filter(getenv("TG_CHAOS_ONLY"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(error_not_leader, tg_gw_teardown),
        cmocka_unit_test_teardown(error_timed_out, tg_gw_teardown),
        cmocka_unit_test_teardown(error_unknown_topic, tg_gw_teardown),
        cmocka_unit_test_teardown(error_topic_gone, tg_gw_teardown),
        cmocka_unit_test_teardown(error_leader_moves, tg_gw_teardown),
        cmocka_unit_test_teardown(error_too_large, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
