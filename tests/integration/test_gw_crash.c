/*
 * test_gw_crash.c - guarantee: kill -9 under load. The journal file passes SQLite's
 * integrity check; after a restart every reading that reached the gateway more than one
 * commit interval (journal.commit_interval_ms, durable mode) before the kill is delivered,
 * and so is everything published after it (the broker holds it for the gateway's persistent
 * session); duplicates are limited to readings confirmed just before the kill; the restarted
 * gateway keeps working.
 *
 * "Reached the gateway" is measured from outside: one publisher, one broker, one gateway
 * connection keep the plan's order, so once tidegate_messages_received_total reads R, the
 * first R readings of the plan have arrived. The test scrapes it until the kill, and a
 * reading's arrival time is bounded by the end of the first scrape that counted it (later
 * than the true arrival, so the check errs on the gateway's side). SLACK_MS on top of the
 * commit interval covers a commit that takes a while. "Published after the kill" means after
 * the killed gateway was reaped: a reading published while kill -9 was under way may still
 * have reached the dying gateway and be lost with its last commit interval (seen under
 * qemu-user on one core), so only its arrival, if a scrape counted it, says it must survive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gateway_fixture.h"

#define DEVICES 100
#define SEQS 60
#define READINGS (DEVICES * SEQS)
#define RATE 1500              /* readings per second: the plan takes 4 s */
#define KILL_AT 3000           /* readings published before kill -9 */
#define COMMIT_INTERVAL_MS 200
#define SLACK_MS 300           /* see the header comment */
#define DUP_WINDOW_MS 1000     /* Kafka latency allowed on top of the commit interval */
#define POST_DEVICES 10
#define POST_SEQS 10
#define WAIT_MS 60000

/* Scrapes of tidegate_messages_received_total before the kill: when each ended, and what it
 * read. arrived_by[i] is the end of the first scrape that counted plan reading i (in publish
 * order, i = seq * DEVICES + dev), or -1. */
struct arrivals {
    struct tg_gw *gw;
    struct tg_gw_pub *pub;
    int want_progress;
    int counted;                  /* readings whose arrival is bounded so far */
    int64_t dead_ms;              /* when kill -9 had reaped the gateway */
    int64_t arrived_by[READINGS];
};

static bool sample_until_progress(void *ud)
{
    struct arrivals *ar = ud;
    double received = tg_gw_metric(ar->gw, "tidegate_messages_received_total", NULL);
    int64_t now = tg_harness_now_ms();
    if (!isnan(received)) {
        int r = received > READINGS ? READINGS : (int)received;
        for (; ar->counted < r; ar->counted++)
            ar->arrived_by[ar->counted] = now;
    }
    return tg_gw_pub_plan_progress(ar->pub) >= ar->want_progress;
}

/* A reading must survive the kill unless it may have reached the gateway within the bound. */
static bool must_survive(const struct arrivals *ar, int dev, int seq, int64_t kill_ms)
{
    if (tg_gw_pub_sent_ms(ar->pub, dev, seq) > ar->dead_ms)
        return true; /* published once the gateway was dead: the broker held it */
    int64_t arrived = ar->arrived_by[seq * DEVICES + dev];
    return arrived >= 0 && arrived < kill_ms - (COMMIT_INTERVAL_MS + SLACK_MS);
}

struct survivors {
    struct tg_gw_consumer *c;
    const struct arrivals *ar;
    const struct tg_gw_plan *plan;
    int64_t kill_ms;
    int missing;
};

static bool survivors_delivered(void *ud)
{
    struct survivors *s = ud;
    tg_gw_consumer_read(s->c, 0, 500);
    struct tg_gw_audit audit;
    tg_gw_audit_run_quiet(s->c, s->plan, &audit);
    s->missing = 0;
    for (int dev = 0; dev < DEVICES; dev++) {
        for (int seq = 0; seq < SEQS; seq++) {
            if (!tg_gw_audit_copies(&audit, dev, seq) &&
                must_survive(s->ar, dev, seq, s->kill_ms))
                s->missing++;
        }
    }
    tg_gw_audit_free(&audit);
    return s->missing == 0;
}

static void kill9_loses_at_most_one_commit_interval(void **state)
{
    (void)state;
    const struct tg_gw_opts opts = {.commit_interval_ms = COMMIT_INTERVAL_MS,
                                    .mqtt_flags = 0};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "gw-test-pub");
    assert_non_null(pub);

    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED};
    struct arrivals *ar = malloc(sizeof *ar);
    assert_non_null(ar);
    ar->gw = gw;
    ar->pub = pub;
    ar->want_progress = KILL_AT;
    ar->counted = 0;
    ar->dead_ms = 0; /* set at the kill */
    for (int i = 0; i < READINGS; i++)
        ar->arrived_by[i] = -1;
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_true(tg_harness_wait_until(sample_until_progress, ar, WAIT_MS));

    int64_t kill_ms = tg_harness_now_ms();
    assert_int_equal(tg_gw_tidegate_kill9(gw), 0);
    ar->dead_ms = tg_harness_now_ms();
    int published_at_kill = tg_gw_pub_plan_progress(pub);

    char result[512];
    int integrity = tg_gw_journal_integrity(tg_gw_journal_path(gw), result, sizeof result);
    fprintf(stderr, "killed after %d readings published, %d known to have reached the gateway "
            "(the last scrape ended %lld ms before the kill, reaped %lld ms after it); "
            "PRAGMA integrity_check: %s\n",
            published_at_kill, ar->counted,
            (long long)(ar->counted ? kill_ms - ar->arrived_by[ar->counted - 1] : -1),
            (long long)(ar->dead_ms - kill_ms), result);
    assert_int_equal(integrity, 0);

    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    fprintf(stderr, "restarted and ready %lld ms after the kill\n",
            (long long)(tg_harness_now_ms() - kill_ms));
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));

    /* Every reading outside the loss bound arrives. */
    struct tg_gw_consumer *c = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_TOPIC);
    assert_non_null(c);
    struct survivors s = {c, ar, &plan, kill_ms, 0};
    if (!tg_harness_wait_until(survivors_delivered, &s, WAIT_MS)) {
        tg_gw_print_log_tail(gw, 40);
        fail_msg("%d readings outside the loss bound never reached Kafka", s.missing);
    }
    /* Then the gateway settles, and Kafka is read to its end. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    tg_gw_consumer_read(c, 0, WAIT_MS);

    struct tg_gw_audit audit;
    tg_gw_audit_run(c, &plan, &audit);
    tg_gw_audit_print("crash", &audit);
    /* Times before the kill, from the publisher's side: when the broker acknowledged it. */
    int lost = 0, lost_outside = 0, dup_readings = 0, dup_outside = 0;
    int64_t lost_earliest = 0, dup_earliest = 0;
    for (int dev = 0; dev < DEVICES; dev++) {
        for (int seq = 0; seq < SEQS; seq++) {
            int copies = tg_gw_audit_copies(&audit, dev, seq);
            int64_t sent = tg_gw_pub_sent_ms(pub, dev, seq);
            int64_t acked = tg_gw_pub_acked_ms(pub, dev, seq);
            int64_t before_kill = kill_ms - (acked >= 0 ? acked : sent);
            if (copies == 0) {
                lost++;
                if (must_survive(ar, dev, seq, kill_ms)) {
                    if (++lost_outside <= 5)
                        fprintf(stderr, "lost outside the bound: dev %d seq %d, acknowledged "
                                "by the broker %lld ms and counted by the gateway %lld ms "
                                "before the kill\n", dev, seq, (long long)before_kill,
                                (long long)(kill_ms - ar->arrived_by[seq * DEVICES + dev]));
                }
                if (before_kill > lost_earliest)
                    lost_earliest = before_kill;
            } else if (copies > 1) {
                dup_readings++;
                if (sent > ar->dead_ms || before_kill > COMMIT_INTERVAL_MS + DUP_WINDOW_MS)
                    dup_outside++;
                if (before_kill > dup_earliest)
                    dup_earliest = before_kill;
            }
        }
    }
    fprintf(stderr, "observed: %d of %d readings lost (the oldest acknowledged by the broker "
            "%lld ms before the kill; bound %d ms + %d ms slack after reaching the gateway), "
            "%d readings duplicated (the oldest acknowledged %lld ms before the kill), "
            "%d duplicates outside %d + %d ms\n",
            lost, READINGS, (long long)lost_earliest, COMMIT_INTERVAL_MS, SLACK_MS,
            dup_readings, (long long)dup_earliest, dup_outside, COMMIT_INTERVAL_MS,
            DUP_WINDOW_MS);
    assert_int_equal(lost_outside, 0);
    assert_int_equal(dup_outside, 0);
    assert_int_equal(audit.foreign, 0);
    assert_int_equal(audit.bad, 0);
    assert_int_equal(audit.misplaced, 0);
    assert_int_equal(audit.out_of_order, 0);
    tg_gw_audit_free(&audit);

    /* The restarted gateway keeps working: a fresh set of readings, all delivered. */
    const struct tg_gw_plan post = {.prefix = "post", .devices = POST_DEVICES,
                                    .seqs = POST_SEQS, .boot = 1, .format = TG_GW_MIXED};
    double delivered = tg_gw_metric(gw, "tidegate_messages_delivered_total", NULL);
    assert_int_equal(tg_gw_pub_plan_start(pub, &post), 0);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  delivered + POST_DEVICES * POST_SEQS, WAIT_MS));
    tg_gw_consumer_read(c, tg_gw_consumer_count(c) + POST_DEVICES * POST_SEQS, WAIT_MS);
    tg_gw_audit_run(c, &post, &audit);
    tg_gw_audit_print("after restart", &audit);
    assert_int_equal(audit.distinct, POST_DEVICES * POST_SEQS);
    assert_int_equal(audit.duplicates, 0);
    assert_int_equal(audit.bad, 0);
    assert_int_equal(audit.misplaced, 0);
    assert_int_equal(audit.out_of_order, 0);
    tg_gw_audit_free(&audit);
    tg_gw_consumer_destroy(c);

    /* And a graceful stop leaves a journal that checks out too. */
    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    assert_int_equal(tg_gw_journal_integrity(tg_gw_journal_path(gw), result, sizeof result), 0);
    tg_gw_destroy(gw);
    free(ar);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(kill9_loses_at_most_one_commit_interval, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
