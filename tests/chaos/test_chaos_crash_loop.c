/*
 * test_chaos_crash_loop.c - kill -9 of the gateway every 2-5 s (seeded), KILLS times, under a
 * steady load, with a Kafka outage across one of the kills. Runs on either Kafka tier
 * (TG_KAFKA_TIER; CMake registers a _real variant).
 *
 * After every kill: the journal (a copy of it, with its WAL) passes PRAGMA integrity_check,
 * and the gateway is started again; its own start-up check must not find it corrupt either.
 *
 * What the README promises for kill -9, and how it is checked:
 *   - lost: at most the readings received in the last commit interval before a kill (plus
 *     the hand-off queue). From outside, a reading's arrival at the gateway is bounded by its
 *     PUBACK to the publisher: one broker, a gateway that keeps up, so every reading missing
 *     from Kafka at the end must have been acknowledged to its publisher within
 *     COMMIT_INTERVAL_MS + LOSS_MARGIN_MS before some kill (or at most ACK_AFTER_KILL_MS after
 *     it: the PUBACK and the forward to the gateway leave the broker together). Kills are
 *     timed from the moment the restarted gateway is ready, so the broker's backlog of the
 *     down time has been taken long before the next kill.
 *   - duplicated: none. Readings Kafka confirmed in the last commit interval before a kill
 *     (their done mark was not committed) used to be sent again; the restarted gateway now
 *     reads back what its last run sent after its last saved point and does not
 *     (reconcile_kafka.h, kafka.reconcile_on_start).
 *   - nothing else: everything else reaches Kafka, once, in per-device order, on the right
 *     partition, and the journal is empty at the end.
 * This is the variant for nodes without durable acks (PUBACK releases a reading, so a kill
 * still loses the last commit interval); test_chaos_crash_loop_acks.c is the one with them,
 * where nothing at all is lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "chaos.h"

#define DEVICES 100
#define RATE 1000                /* readings per second */
#define KILLS 6
/* Between kills: the restarted gateway is ready within ~100 ms and has taken the broker's
 * backlog of its down time long before the next kill, and the loss windows of two kills
 * (COMMIT_INTERVAL_MS + LOSS_MARGIN_MS) never meet. */
#define KILL_MIN_MS 2000
#define KILL_MAX_MS 5000
#define OUTAGE_KILL 2            /* the Kafka outage begins before this kill, ends after it */
#define COMMIT_INTERVAL_MS 200
#define LOSS_MARGIN_MS 300
#define ACK_AFTER_KILL_MS 50
/* To size the plan so that the load lasts through the last kill: a restart to ready, and
 * the Kafka outage's end (devkafka listens again at once; the real broker takes seconds to
 * start again). More only makes the test publish on after the last kill. */
#define RESTART_ESTIMATE_MS 1000 /* with the read-back at start */
#define OUTAGE_END_ESTIMATE_MS 1500
#define OUTAGE_END_ESTIMATE_REAL_MS 8000
#define WAIT_MS 30000
#define DEFAULT_SEED 20261203u

struct kill {
    int64_t at_ms;
    int64_t ready_after_ms;     /* kill to ready again */
};

struct survivors {
    struct tg_gw_consumer *c;
    const struct tg_gw_plan *plan;
    struct tg_gw_pub *pub;
    const struct kill *kills;
    int missing;
};

/* The kill whose loss window covers a reading acknowledged at acked_ms, or -1. */
static int excusing_kill(const struct kill *kills, int64_t acked_ms)
{
    for (int k = 0; k < KILLS; k++) {
        if (acked_ms >= kills[k].at_ms - (COMMIT_INTERVAL_MS + LOSS_MARGIN_MS) &&
            acked_ms <= kills[k].at_ms + ACK_AFTER_KILL_MS)
            return k;
    }
    return -1;
}

static bool survivors_delivered(void *ud)
{
    struct survivors *s = ud;
    tg_gw_consumer_read(s->c, 0, 300);
    struct tg_gw_audit audit;
    tg_gw_audit_run_quiet(s->c, s->plan, &audit);
    s->missing = 0;
    for (int dev = 0; dev < s->plan->devices; dev++) {
        for (int seq = 0; seq < s->plan->seqs; seq++) {
            if (!tg_gw_audit_copies(&audit, dev, seq) &&
                excusing_kill(s->kills, tg_gw_pub_acked_ms(s->pub, dev, seq)) < 0)
                s->missing++;
        }
    }
    tg_gw_audit_free(&audit);
    return s->missing == 0;
}

static void crash_loop(void **state)
{
    (void)state;
    struct tg_chaos_rand rnd;
    tg_chaos_rand_init(&rnd, DEFAULT_SEED, "crash loop");
    const struct tg_gw_opts opts = {.commit_interval_ms = COMMIT_INTERVAL_MS};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    int interval_ms[KILLS];
    int64_t total_ms = 1000 + (tg_gw_kafka_tier(gw) == TG_GW_KAFKA_REAL
                                   ? OUTAGE_END_ESTIMATE_REAL_MS
                                   : OUTAGE_END_ESTIMATE_MS);
    for (int k = 0; k < KILLS; k++) {
        interval_ms[k] = tg_chaos_rand_range(&rnd, KILL_MIN_MS, KILL_MAX_MS);
        total_ms += interval_ms[k] + RESTART_ESTIMATE_MS;
    }
    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES,
                                    .seqs = (int)(total_ms * RATE / 1000 / DEVICES),
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED};
    const int readings = plan.devices * plan.seqs;
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "chaos-pub");
    assert_non_null(pub);
    struct tg_chaos_series *delivered =
        tg_chaos_series_new(gw, "tidegate_messages_delivered_total");
    assert_non_null(delivered);
    struct kill kills[KILLS];
    int64_t outage_ms = 0, outage_begin = 0;

    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    int64_t ready_ms = tg_harness_now_ms();
    for (int k = 0; k < KILLS; k++) {
        int64_t kill_at = ready_ms + interval_ms[k];
        if (k == OUTAGE_KILL) {
            tg_chaos_series_until(delivered, ready_ms + interval_ms[k] / 2);
            assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
            outage_begin = tg_harness_now_ms();
        }
        tg_chaos_series_until(delivered, kill_at);
        tg_chaos_series_sample(delivered);
        kills[k].at_ms = tg_harness_now_ms();
        char what[128];
        snprintf(what, sizeof what, "kill %d of %d after %d ms (%d readings published)%s",
                 k + 1, KILLS, interval_ms[k], tg_gw_pub_plan_progress(pub),
                 k == OUTAGE_KILL ? " during the Kafka outage" : "");
        assert_int_equal(tg_chaos_kill9_check(gw, what), 0);
        tg_chaos_series_reset(delivered);
        assert_int_equal(tg_gw_tidegate_start(gw), 0);
        ready_ms = tg_harness_now_ms();
        kills[k].ready_after_ms = ready_ms - kills[k].at_ms;
        if (k == OUTAGE_KILL) {
            tg_chaos_series_until(delivered, ready_ms + 1000);
            assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
            outage_ms = tg_harness_now_ms() - outage_begin;
            /* The next kill is timed from Kafka's return, not from the restart before it: the
             * real broker takes seconds to come back, and a kill at the moment it answers
             * would find thousands of readings sent and not yet confirmed, which no bound
             * on what was confirmed before the kill covers. */
            ready_ms = tg_harness_now_ms();
        }
    }
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    int64_t drain_from = tg_harness_now_ms();

    /* Every reading outside the loss windows arrives; then the journal empties. */
    struct tg_gw_consumer *c = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_TOPIC);
    assert_non_null(c);
    struct survivors sv = {c, &plan, pub, kills, 0};
    /* On a timeout the audit below says which readings are missing. */
    if (!tg_harness_wait_until(survivors_delivered, &sv, WAIT_MS))
        fprintf(stderr, "%d readings outside every loss window still missing after %d ms\n",
                sv.missing, WAIT_MS);
    else
        assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0,
                                      WAIT_MS));
    int64_t drained_ms = tg_harness_now_ms() - drain_from;
    tg_gw_consumer_read(c, 0, 5000);

    struct tg_gw_audit audit;
    tg_gw_audit_run(c, &plan, &audit);
    tg_gw_audit_print("crash loop", &audit);
    int lost = 0, lost_outside = 0, dup_readings = 0, per_kill_lost[KILLS] = {0};
    for (int dev = 0; dev < plan.devices; dev++) {
        for (int seq = 0; seq < plan.seqs; seq++) {
            int copies = tg_gw_audit_copies(&audit, dev, seq);
            if (copies > 1)
                dup_readings++;
            if (copies)
                continue;
            lost++;
            int64_t acked = tg_gw_pub_acked_ms(pub, dev, seq);
            int k = excusing_kill(kills, acked);
            if (k >= 0) {
                per_kill_lost[k]++;
            } else if (++lost_outside <= 5) {
                int64_t nearest = INT64_MAX;
                for (int j = 0; j < KILLS; j++) {
                    int64_t d = kills[j].at_ms - acked;
                    if (llabs(d) < llabs(nearest))
                        nearest = d;
                }
                fprintf(stderr, "lost outside every window: dev %d seq %d, acknowledged %lld ms "
                        "before the nearest kill\n", dev, seq, (long long)nearest);
            }
        }
    }
    int64_t ready_max = 0;
    for (int k = 0; k < KILLS; k++) {
        if (kills[k].ready_after_ms > ready_max)
            ready_max = kills[k].ready_after_ms;
        fprintf(stderr, "kill %d: lost %d, ready again after %lld ms\n", k + 1,
                per_kill_lost[k], (long long)kills[k].ready_after_ms);
    }
    tg_chaos_summary("crash_loop", lost, audit.duplicates,
                     "%d readings, %d kills, lost outside the %d+%d ms windows %d, "
                     "integrity ok after every kill, restart to ready <= %lld ms, Kafka outage "
                     "%lld ms, drained %lld ms after the last publish",
                     readings, KILLS, COMMIT_INTERVAL_MS, LOSS_MARGIN_MS, lost_outside,
                     (long long)ready_max, (long long)outage_ms, (long long)drained_ms);
    assert_int_equal(lost_outside, 0);
    assert_int_equal(audit.duplicates, 0);
    assert_int_equal(dup_readings, 0);
    assert_int_equal(audit.foreign, 0);
    assert_int_equal(audit.bad, 0);
    assert_int_equal(audit.misplaced, 0);
    assert_int_equal(audit.out_of_order, 0);
    tg_gw_audit_free(&audit);
    tg_gw_consumer_destroy(c);

    tg_chaos_series_destroy(delivered);
    tg_gw_pub_destroy(pub);
    assert_int_equal(tg_chaos_finish_clean(gw), 0);
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(crash_loop, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
