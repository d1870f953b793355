/*
 * test_gw_overflow.c - guarantee: overflow is bounded, visible and chosen. With Kafka down and
 * journal.max_bytes at its minimum (64 KiB), far more readings are published than fit; each
 * policy must then do what it says, count what it drops, and deliver the rest exactly once
 * when Kafka returns:
 *   backpressure  the gateway stops taking from MQTT (the broker holds the messages); nothing
 *                 is dropped, everything is delivered in the end;
 *   drop_newest   readings arriving while the journal is full are dropped: per device the
 *                 delivered seqs are the oldest ones (0 .. k-1);
 *   drop_oldest   the oldest journaled readings (not those already handed to librdkafka) make
 *                 room: per device the newest readings are delivered.
 * In plugin mode (TG_GW_MODE=plugin) backpressure cannot hold messages in the broker: the
 * plugin refuses what arrives while the journal is at its cap (README, "In the broker"), so
 * there it behaves much as drop_newest, counted as dropped{reason="ingress_full"}, without
 * drop_newest's promise of which readings survive (a momentarily full hand-off queue refuses
 * too, before the cap).
 * drop_newest and drop_oldest are run a second time with commits further apart than the cap's
 * worth of arrivals (a late commit): the journal must still hold about its cap, not a few
 * readings (the policies work in whole segments, so a segment must stay small against the cap).
 * In every policy delivered + dropped{reason="journal_full"|"ingress_full"} == readings
 * published, Kafka
 * holds exactly the delivered ones, without duplicates, in per-device order, and the journal
 * data never exceeds the cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_fixture.h"

#define DEVICES 100
#define SEQS 120
#define READINGS (DEVICES * SEQS)
#define RATE 4000              /* readings per second: the plan takes 3 s */
#define MAX_BYTES 65536
#define COMMIT_INTERVAL_MS 200
/* A commit interval in which more arrives than the cap holds (4,000 readings, 100-160 KB
 * compressed): what a slow or starved pipeline thread sees when a commit comes late. The
 * policies must still keep about a cap's worth, not drop it all. */
#define LONG_COMMIT_INTERVAL_MS 1000
/* The journal learns that it is at the cap when it commits, so it may pass the cap by what
 * arrives in one commit interval, at most this many bytes a reading (README: ~20 B with zstd,
 * ~36 B with lz4; the noise metric makes readings compress about that badly). */
#define READING_BYTES_MAX 40
#define OVERSHOOT_MAX(commit_ms) (RATE * (commit_ms) / 1000 * READING_BYTES_MAX)
/* Under qemu-user (scripts/test --arch sets TG_TEST_EMULATED) a commit itself takes several
 * times longer, so the time between two commits, and what arrives in it, grows: the ARM
 * tiers measured 118-122 KB against the native 60 KB. The allowance doubles there; a journal
 * that ignored its cap would still hold all 12,000 readings (about 300 KB) and fail. */
static int overshoot_max(int commit_ms)
{
    const char *e = getenv("TG_TEST_EMULATED");
    bool emulated = e && *e && strcmp(e, "0") != 0;
    return (emulated ? 2 : 1) * OVERSHOOT_MAX(commit_ms);
}
/* librdkafka's queue is kept small so that drop_oldest has journaled readings to drop
 * rather than ones already handed over (the minimum the config allows). */
#define KAFKA_QUEUE_MAX "100"
#define WAIT_MS 60000

enum policy { BACKPRESSURE, DROP_NEWEST, DROP_OLDEST };
static const char *const policy_names[] = {"backpressure", "drop_newest", "drop_oldest"};

/* Largest journal_bytes seen while polling, for the cap check. */
struct peak {
    struct tg_gw *gw;
    double journal_bytes;
    enum policy policy;
};

static void sample_peak(struct peak *pk)
{
    double b = tg_gw_metric(pk->gw, "tidegate_journal_bytes", NULL);
    if (b > pk->journal_bytes)
        pk->journal_bytes = b;
}

/* backpressure at the cap: the ingress has stopped reading (tidegate_mqtt_paused). */
static bool paused(void *ud)
{
    struct peak *pk = ud;
    sample_peak(pk);
    return tg_gw_metric(pk->gw, "tidegate_mqtt_paused", NULL) >= 1;
}

/* drop policies at the cap: everything published was taken, and each reading taken is either
 * held in the journal or counted as dropped. */
static bool settled(void *ud)
{
    struct peak *pk = ud;
    sample_peak(pk);
    double received = tg_gw_metric(pk->gw, "tidegate_messages_received_total", NULL);
    double held = tg_gw_metric(pk->gw, "tidegate_journal_records", NULL);
    double dropped =
        tg_gw_metric(pk->gw, "tidegate_messages_dropped_total", "reason=\"journal_full\"");
    /* plugin mode: what was refused never reached the pipeline (0 for the daemon) */
    double refused =
        tg_gw_metric(pk->gw, "tidegate_messages_dropped_total", "reason=\"ingress_full\"");
    return received + refused == READINGS && held + dropped == received;
}

struct drained {
    struct tg_gw *gw;
    double delivered, dropped, held;
};

static bool all_accounted(void *ud)
{
    struct drained *d = ud;
    d->delivered = tg_gw_metric(d->gw, "tidegate_messages_delivered_total", NULL);
    d->dropped = tg_gw_metric(d->gw, "tidegate_messages_dropped_total", "reason=\"journal_full\"") +
                 tg_gw_metric(d->gw, "tidegate_messages_dropped_total", "reason=\"ingress_full\"");
    d->held = tg_gw_metric(d->gw, "tidegate_journal_records", NULL);
    return d->held == 0 && d->delivered + d->dropped == READINGS;
}

static void run_policy(enum policy policy, int commit_interval_ms)
{
    const char *name = policy_names[policy];
    char overflow[64];
    snprintf(overflow, sizeof overflow, "journal.overflow=%s", name);
    const char *const sets[] = {"journal.max_bytes=64k", overflow,
                                "kafka.queue_max_messages=" KAFKA_QUEUE_MAX, NULL};
    const struct tg_gw_opts opts = {.sets = sets, .commit_interval_ms = commit_interval_ms};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "gw-test-pub");
    assert_non_null(pub);

    /* Kafka is down from the start: nothing can leave the journal. */
    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 0, 20000));

    /* Published at a steady rate, so that the cap is reached part-way through and the policy
     * shows in what is kept. */
    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED,
                                    .noise = true};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    /* The broker acknowledges all of them whatever the gateway does. */
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));

    struct peak pk = {.gw = gw, .policy = policy};
    bool refuses = policy == BACKPRESSURE && tg_gw_plugin(gw);
    if (refuses) {
        if (!tg_harness_wait_until(settled, &pk, 30000)) {
            tg_gw_print_log_tail(gw, 30);
            fail_msg("plugin backpressure: received %g, refused %g: not all of %d readings "
                     "accounted for",
                     tg_gw_metric(gw, "tidegate_messages_received_total", NULL),
                     tg_gw_metric(gw, "tidegate_messages_dropped_total",
                                  "reason=\"ingress_full\""),
                     READINGS);
        }
        double refused =
            tg_gw_metric(gw, "tidegate_messages_dropped_total", "reason=\"ingress_full\"");
        fprintf(stderr, "plugin backpressure: refused %g of %d readings\n", refused, READINGS);
        assert_true(refused > 0);
    } else if (policy == BACKPRESSURE) {
        if (!tg_harness_wait_until(paused, &pk, 30000)) {
            tg_gw_print_log_tail(gw, 30);
            fail_msg("backpressure: tidegate_mqtt_paused never became 1 (received %g)",
                     tg_gw_metric(gw, "tidegate_messages_received_total", NULL));
        }
        double received = tg_gw_metric(gw, "tidegate_messages_received_total", NULL);
        fprintf(stderr, "backpressure: paused after taking %g of %d readings\n", received,
                READINGS);
        assert_true(received < READINGS);
    } else if (!tg_harness_wait_until(settled, &pk, 30000)) {
        tg_gw_print_log_tail(gw, 30);
        fail_msg("%s: received %g, journal_records %g, dropped %g: not all of %d readings "
                 "accounted for", name,
                 tg_gw_metric(gw, "tidegate_messages_received_total", NULL),
                 tg_gw_metric(gw, "tidegate_journal_records", NULL),
                 tg_gw_metric(gw, "tidegate_messages_dropped_total", NULL), READINGS);
    }
    sample_peak(&pk);
    double held = tg_gw_metric(gw, "tidegate_journal_records", NULL);
    double dropped_full =
        tg_gw_metric(gw, "tidegate_messages_dropped_total", "reason=\"journal_full\"");
    fprintf(stderr, "%s at the cap (commit every %d ms): journal_records %g, journal_bytes peak "
            "%g (cap %d, + %d allowed for one commit interval), dropped %g\n", name,
            commit_interval_ms, held, pk.journal_bytes, MAX_BYTES,
            overshoot_max(commit_interval_ms), dropped_full);
    assert_true(pk.journal_bytes >= MAX_BYTES / 2);
    assert_true(pk.journal_bytes <= MAX_BYTES + overshoot_max(commit_interval_ms));
    if (policy == BACKPRESSURE)
        assert_true(dropped_full == 0);
    else
        assert_true(dropped_full > 0);

    /* Kafka returns: what was kept drains (and, with backpressure, what the broker held). */
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    struct drained d = {.gw = gw};
    if (!tg_harness_wait_until(all_accounted, &d, WAIT_MS)) {
        tg_gw_print_log_tail(gw, 30);
        fail_msg("%s: delivered %g + dropped %g != %d published (journal_records %g)", name,
                 d.delivered, d.dropped, READINGS, d.held);
    }
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total", "reason=\"kafka_rejected\"",
                                TG_GW_EQ, 0));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_duplicate_total", NULL, TG_GW_EQ, 0));
    assert_true(tg_gw_metric_is(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 1));
    fprintf(stderr, "%s: delivered %g, dropped %g\n", name, d.delivered, d.dropped);

    struct tg_gw_consumer *c = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_TOPIC);
    assert_non_null(c);
    size_t delivered = (size_t)d.delivered;
    size_t records = tg_gw_consumer_read(c, delivered, WAIT_MS);
    struct tg_gw_audit audit;
    tg_gw_audit_run(c, &plan, &audit);
    tg_gw_audit_print(name, &audit);
    assert_int_equal(records, delivered);
    assert_int_equal(audit.distinct, (int)delivered);
    assert_int_equal(audit.missing, (int)d.dropped);
    assert_int_equal(audit.duplicates, 0);
    assert_int_equal(audit.foreign, 0);
    assert_int_equal(audit.bad, 0);
    assert_int_equal(audit.misplaced, 0);
    assert_int_equal(audit.out_of_order, 0);

    /* Which readings survived, per device. */
    int early_total = 0, min_kept = SEQS, max_kept = 0;
    for (int dev = 0; dev < DEVICES; dev++) {
        int kept = 0, prefix = 0, suffix = 0;
        while (prefix < SEQS && tg_gw_audit_copies(&audit, dev, prefix))
            prefix++;
        while (suffix < SEQS - prefix && tg_gw_audit_copies(&audit, dev, SEQS - 1 - suffix))
            suffix++;
        for (int seq = 0; seq < SEQS; seq++)
            kept += tg_gw_audit_copies(&audit, dev, seq) ? 1 : 0;
        min_kept = kept < min_kept ? kept : min_kept;
        max_kept = kept > max_kept ? kept : max_kept;
        switch (policy) {
        case BACKPRESSURE:
            /* plugin: which ones were refused is not asserted (a momentarily full hand-off
             * queue refuses too, before the journal is at its cap); the counts are, above */
            if (!refuses)
                assert_int_equal(kept, SEQS);
            break;
        case DROP_NEWEST:
            /* the oldest ones: 0 .. k-1, nothing after a gap */
            if (prefix != kept)
                fail_msg("drop_newest: device %d kept %d readings, not seqs 0..%d", dev, kept,
                         kept - 1);
            break;
        case DROP_OLDEST:
            /* the newest ones, plus those librdkafka already held when their segment was
             * dropped (mostly the oldest, handed over before the cap; a slot freed during the
             * outage can take a later one), which drop_oldest never drops */
            if (suffix == 0)
                fail_msg("drop_oldest: device %d kept %d readings: %d oldest, none of the newest",
                         dev, kept, prefix);
            early_total += kept - suffix;
            break;
        }
    }
    fprintf(stderr, "%s: readings kept per device %d..%d; kept outside the newest run (held by "
            "librdkafka) %d\n", name, min_kept, max_kept, early_total);
    /* How many librdkafka held is printed, not asserted: slots it frees during the outage
     * can take later records, so the bound is not the queue size alone. */
    tg_gw_audit_free(&audit);
    tg_gw_consumer_destroy(c);

    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

static void overflow_backpressure(void **state)
{
    (void)state;
    run_policy(BACKPRESSURE, COMMIT_INTERVAL_MS);
}

static void overflow_drop_newest(void **state)
{
    (void)state;
    run_policy(DROP_NEWEST, COMMIT_INTERVAL_MS);
}

static void overflow_drop_newest_late_commit(void **state)
{
    (void)state;
    run_policy(DROP_NEWEST, LONG_COMMIT_INTERVAL_MS);
}

static void overflow_drop_oldest(void **state)
{
    (void)state;
    run_policy(DROP_OLDEST, COMMIT_INTERVAL_MS);
}

static void overflow_drop_oldest_late_commit(void **state)
{
    (void)state;
    run_policy(DROP_OLDEST, LONG_COMMIT_INTERVAL_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(overflow_backpressure, tg_gw_teardown),
        cmocka_unit_test_teardown(overflow_drop_newest, tg_gw_teardown),
        cmocka_unit_test_teardown(overflow_drop_oldest, tg_gw_teardown),
        cmocka_unit_test_teardown(overflow_drop_newest_late_commit, tg_gw_teardown),
        cmocka_unit_test_teardown(overflow_drop_oldest_late_commit, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
