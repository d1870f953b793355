/*
 * test_chaos_disk_full.c - the journal's filesystem fills up during a Kafka outage, then space
 * returns, then Kafka does. Runs on either Kafka tier (TG_KAFKA_TIER; CMake registers a
 * _real variant).
 *
 * The filesystem is a tmpfs of TMPFS_SMALL mounted in a private mount namespace that the test
 * process makes for itself (unshare(CLONE_NEWNS) before any thread exists; the gateway is its
 * child and inherits it), so nothing outside the test sees the mount. "Space returns" is a
 * remount of the same tmpfs with TMPFS_LARGE. Without the privilege to mount (no root, no
 * user namespaces) the test fails and says so rather than skipping in silence.
 *
 * What the README promises ("Disk full" under Operations): a commit that fails with
 * SQLITE_FULL is rolled back whole, /healthz answers 503, the overflow policy applies as if
 * the journal were at its cap, the records stay in memory, and the gateway resumes by itself
 * when space returns. Checked per policy:
 *   backpressure  the gateway stops reading MQTT (tidegate_mqtt_paused), drops nothing; after
 *                 space and Kafka return every reading is in Kafka exactly once, in order;
 *   drop_newest   readings that arrive while the disk is full are dropped and counted
 *                 (dropped{reason="journal_full"}); delivered + dropped = published, Kafka
 *                 holds exactly the delivered ones once each, in order, every device's
 *                 oldest reading among them; afterwards new readings are taken and
 *                 delivered again;
 *   drop_oldest   the same accounting, with every device's newest reading kept.
 * For all three, what the gateway holds while the disk is full stays within HELD_MARGIN of
 * what the disk held.
 * Each case prints what it lost (dropped) and duplicated and how long recovery took.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "chaos.h"

#define DEVICES 100
#ifndef SEQS
#define SEQS 300
#endif
#define READINGS (DEVICES * SEQS)
#define RATE 5000                 /* readings per second: the plan takes 6 s */
#define TMPFS_SMALL "size=512k"
#define TMPFS_LARGE "size=64m"
/* While the disk is full, what the gateway holds (tidegate_journal_records) must stay within
 * what the disk held when it filled, plus what arrives in two commit intervals (200 ms, the
 * fixture's) and what the hand-off queue holds (mqtt.queue_bytes, 512 KiB: about 4,500 of
 * these ~120-byte messages): the readings beyond that are held back by the broker or
 * dropped by the policy, not piled up in memory where no kill -9 would spare them. */
#define HELD_MARGIN (RATE * 2 * 200 / 1000 + 4500)
#define POST_DEVICES 10
#define POST_SEQS 20
#define WAIT_MS 30000

static bool have_namespace;
static char namespace_error[256];

/* Runs in main() before cmocka or any thread: a process with several threads cannot unshare
 * its mount namespace. */
static void private_namespace(void)
{
    if (unshare(CLONE_NEWNS) != 0) {
        snprintf(namespace_error, sizeof namespace_error, "unshare(CLONE_NEWNS): %s",
                 strerror(errno));
        return;
    }
    /* Mounts made here must not propagate back to the host's namespace. */
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        snprintf(namespace_error, sizeof namespace_error, "making / private: %s",
                 strerror(errno));
        return;
    }
    have_namespace = true;
}

struct disk {
    char *dir;
    char journal[600];
};

static void disk_mount(struct disk *d)
{
    if (!have_namespace)
        fail_msg("cannot mount a size-limited filesystem here (%s): run the chaos suite as "
                 "root or where user namespaces are allowed", namespace_error);
    d->dir = tg_harness_tmpdir_new("chaos-disk");
    assert_non_null(d->dir);
    if (mount("tidegate-chaos", d->dir, "tmpfs", MS_NOSUID | MS_NODEV,
              TMPFS_SMALL ",mode=0700") != 0)
        fail_msg("mount tmpfs on %s: %s", d->dir, strerror(errno));
    snprintf(d->journal, sizeof d->journal, "%s/journal.db", d->dir);
}

static void disk_grow(struct disk *d)
{
    if (mount("tidegate-chaos", d->dir, "tmpfs", MS_REMOUNT | MS_NOSUID | MS_NODEV,
              TMPFS_LARGE) != 0)
        fail_msg("remount %s with %s: %s", d->dir, TMPFS_LARGE, strerror(errno));
}

static void disk_done(struct disk *d)
{
    if (umount2(d->dir, MNT_DETACH) != 0)
        fprintf(stderr, "umount %s: %s\n", d->dir, strerror(errno));
    tg_harness_tmpdir_done(d->dir);
    d->dir = NULL;
}

static bool unhealthy(void *ud)
{
    return tg_gw_http_get(ud, "/healthz", NULL) == 503;
}

static bool healthy(void *ud)
{
    return tg_gw_http_get(ud, "/healthz", NULL) == 200;
}

enum policy { BACKPRESSURE, DROP_NEWEST, DROP_OLDEST };
static const char *const policy_names[] = {"backpressure", "drop_newest", "drop_oldest"};

struct accounted {
    struct tg_gw *gw;
    double expected;
    double delivered, dropped, held;
};

static bool all_accounted(void *ud)
{
    struct accounted *a = ud;
    a->delivered = tg_gw_metric(a->gw, "tidegate_messages_delivered_total", NULL);
    a->dropped = tg_gw_metric(a->gw, "tidegate_messages_dropped_total", "reason=\"journal_full\"");
    a->held = tg_gw_metric(a->gw, "tidegate_journal_records", NULL);
    return a->held == 0 && a->delivered + a->dropped == a->expected;
}

static bool taken_all(void *ud)
{
    struct accounted *a = ud;
    double received = tg_gw_metric(a->gw, "tidegate_messages_received_total", NULL);
    a->held = tg_gw_metric(a->gw, "tidegate_journal_records", NULL);
    a->dropped = tg_gw_metric(a->gw, "tidegate_messages_dropped_total", "reason=\"journal_full\"");
    return received == a->expected && a->held + a->dropped == a->expected;
}

static void run_policy(enum policy policy)
{
    const char *name = policy_names[policy];
    struct disk d = {0};
    disk_mount(&d);
    char path_set[700], overflow_set[64];
    snprintf(path_set, sizeof path_set, "journal.path=%s", d.journal);
    snprintf(overflow_set, sizeof overflow_set, "journal.overflow=%s", name);
    /* drop_oldest never drops what librdkafka holds; its queue is kept small (as in
     * test_gw_overflow) so that there are journaled readings to drop. */
    const char *const sets[] = {path_set, overflow_set, "kafka.queue_max_messages=100", NULL};
    const struct tg_gw_opts opts = {.sets = sets};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "chaos-pub");
    assert_non_null(pub);

    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 0, 20000));

    const struct tg_gw_plan plan = {.prefix = "dev", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .rate = RATE, .format = TG_GW_MIXED,
                                    .noise = true};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    if (!tg_harness_wait_until(unhealthy, gw, WAIT_MS)) {
        tg_gw_print_log_tail(gw, 20);
        fail_msg("%s: the disk never filled up (/healthz stayed 200)", name);
    }
    int64_t full_ms = tg_harness_now_ms();
    double received_at_full = tg_gw_metric(gw, "tidegate_messages_received_total", NULL);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
    assert_true(tg_gw_log_count(gw, "full") > 0);

    struct accounted a = {.gw = gw, .expected = READINGS};
    if (policy == BACKPRESSURE) {
        assert_true(tg_gw_wait_metric(gw, "tidegate_mqtt_paused", NULL, TG_GW_EQ, 1, WAIT_MS));
        assert_true(tg_gw_metric_is(gw, "tidegate_messages_received_total", NULL, TG_GW_LT,
                                    READINGS));
    } else if (!tg_harness_wait_until(taken_all, &a, WAIT_MS)) {
        tg_gw_print_log_tail(gw, 20);
        fail_msg("%s: held %g + dropped %g != %d published", a.held, a.dropped,
                 READINGS);
    }
    double held_full = tg_gw_metric(gw, "tidegate_journal_records", NULL);
    double received_full = tg_gw_metric(gw, "tidegate_messages_received_total", NULL);
    double dropped_full =
        tg_gw_metric(gw, "tidegate_messages_dropped_total", "reason=\"journal_full\"");
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ, 0));
    if (policy == BACKPRESSURE)
        assert_true(dropped_full == 0);
    else
        assert_true(dropped_full > 0);
    fprintf(stderr, "%s: disk full after %g readings; by the end of the plan %g taken, %g "
            "dropped, %g held (bound %g), /healthz 503\n", name, received_at_full,
            received_full, dropped_full, held_full, received_at_full + HELD_MARGIN);
    assert_true(held_full <= received_at_full + HELD_MARGIN);

    /* Space returns while Kafka is still down: the journal takes writes again. */
    disk_grow(&d);
    int64_t grown_ms = tg_harness_now_ms();
    assert_true(tg_harness_wait_until(healthy, gw, WAIT_MS));
    int64_t healthy_after = tg_harness_now_ms() - grown_ms;
    int64_t resumed_after = -1;
    if (policy == BACKPRESSURE) {
        /* everything the broker held is taken and journaled */
        if (!tg_harness_wait_until(taken_all, &a, WAIT_MS)) {
            tg_gw_print_log_tail(gw, 20);
            fail_msg("backpressure: after space returned, held %g + dropped %g != %d", a.held,
                     a.dropped, READINGS);
        }
        resumed_after = tg_harness_now_ms() - grown_ms;
        assert_true(tg_gw_metric_is(gw, "tidegate_mqtt_paused", NULL, TG_GW_EQ, 0));
    }

    /* Kafka returns: everything kept drains. */
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    int64_t kafka_ms = tg_harness_now_ms();
    if (!tg_harness_wait_until(all_accounted, &a, WAIT_MS * 2)) {
        tg_gw_print_log_tail(gw, 20);
        fail_msg("%s: delivered %g + dropped %g != %d (held %g)", name, a.delivered, a.dropped,
                 READINGS, a.held);
    }
    int64_t drained_after = tg_harness_now_ms() - kafka_ms;

    struct tg_gw_audit audit;
    struct tg_gw_consumer *c = tg_chaos_audit(gw, &plan, (size_t)a.delivered, WAIT_MS, &audit);
    assert_non_null(c);
    tg_gw_audit_print(name, &audit);
    char label[64];
    snprintf(label, sizeof label, "disk_full_%s", name);
    tg_chaos_summary(label, audit.missing, audit.duplicates,
                     "%d published, dropped{journal_full} %g, disk full after %g taken (%lld ms "
                     "into the plan), /healthz 200 again %lld ms after space returned, the "
                     "broker's backlog taken %lld ms after (-1: not held), Kafka backlog drained "
                     "in %lld ms",
                     READINGS, a.dropped, received_at_full,
                     (long long)(full_ms - (tg_gw_pub_sent_ms(pub, 0, 0))),
                     (long long)healthy_after, (long long)resumed_after,
                     (long long)drained_after);
    assert_int_equal(audit.distinct, (int)a.delivered);
    assert_int_equal(audit.missing, (int)a.dropped);
    assert_int_equal(audit.duplicates, 0);
    assert_int_equal(audit.foreign, 0);
    assert_int_equal(audit.bad, 0);
    assert_int_equal(audit.misplaced, 0);
    assert_int_equal(audit.out_of_order, 0);
    if (policy == BACKPRESSURE)
        assert_int_equal(audit.distinct, READINGS);
    /* Which end survived: drop_newest keeps each device's oldest reading, drop_oldest its
     * newest. */
    int wrong_end = 0;
    for (int dev = 0; dev < DEVICES; dev++) {
        if (policy == DROP_NEWEST && !tg_gw_audit_copies(&audit, dev, 0))
            wrong_end++;
        if (policy == DROP_OLDEST && !tg_gw_audit_copies(&audit, dev, SEQS - 1))
            wrong_end++;
    }
    if (wrong_end)
        fail_msg("%s: %d devices lost the reading the policy keeps", name, wrong_end);
    tg_gw_audit_free(&audit);

    /* And it keeps working: new readings are taken and delivered, none dropped. */
    const struct tg_gw_plan post = {.prefix = "post", .devices = POST_DEVICES,
                                    .seqs = POST_SEQS, .boot = 1, .format = TG_GW_JSON};
    assert_int_equal(tg_gw_pub_plan_start(pub, &post), 0);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    a.expected = READINGS + POST_DEVICES * POST_SEQS;
    assert_true(tg_harness_wait_until(all_accounted, &a, WAIT_MS));
    tg_gw_consumer_read(c, tg_gw_consumer_count(c) + POST_DEVICES * POST_SEQS, WAIT_MS);
    tg_gw_audit_run(c, &post, &audit);
    assert_true(tg_chaos_plan_exactly_once(&audit, POST_DEVICES * POST_SEQS));
    assert_true(dropped_full <= a.dropped);
    tg_gw_audit_free(&audit);
    tg_gw_consumer_destroy(c);

    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    char result[512];
    assert_int_equal(tg_gw_journal_integrity(d.journal, result, sizeof result), 0);
    tg_gw_destroy(gw);
    disk_done(&d);
}

static void disk_full_backpressure(void **state)
{
    (void)state;
    run_policy(BACKPRESSURE);
}

static void disk_full_drop_newest(void **state)
{
    (void)state;
    run_policy(DROP_NEWEST);
}

/* This case found that readings piled up in memory without bound (fixed in the pipeline:
 * "drop_oldest on a full disk keeps memory bounded"). */
static void disk_full_drop_oldest(void **state)
{
    (void)state;
    run_policy(DROP_OLDEST);
}

int main(void)
{
    private_namespace();
    /* TG_CHAOS_ONLY=disk_full_drop_newest runs one case (cmocka's test filter) */
    if (getenv("TG_CHAOS_ONLY"))
        cmocka_set_test_filter(getenv("TG_CHAOS_ONLY"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(disk_full_backpressure, tg_gw_teardown),
        cmocka_unit_test_teardown(disk_full_drop_newest, tg_gw_teardown),
        cmocka_unit_test_teardown(disk_full_drop_oldest, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
