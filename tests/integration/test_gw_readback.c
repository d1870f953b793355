/*
 * test_gw_readback.c - no duplicates after kill -9 (issue 12): at start the gateway reads
 * back what its last run sent to Kafka after its last saved point (reconcile_kafka.h), so
 *   - journal_copy_in_kafka: a journal row Kafka confirmed, whose "done" mark the killed
 *     gateway had not committed, is not sent again;
 *   - resend_after_kill: a reading Kafka confirmed after the last save of the dedup window,
 *     sent again by its node (its ack was lost with the gateway), is a duplicate, not a
 *     new record.
 * A commit interval of a minute keeps the killed run from committing anything after its
 * start, which is what a kill -9 just after a confirmation looks like. Both fail with
 * --set kafka.reconcile_on_start=false (TG_READBACK_OFF=1 runs them so: they must fail).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "gateway_fixture.h"

#define DEVICES 20
#define SEQS 10
#define READINGS (DEVICES * SEQS)
#define WAIT_MS 60000

static struct tg_gw *new_gateway(int commit_interval_ms, const char **sets)
{
    const struct tg_gw_opts opts = {.commit_interval_ms = commit_interval_ms, .sets = sets};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    return gw;
}

static struct tg_gw *start_gateway(void)
{
    static const char *sets_on[] = {"journal.dedup_save_interval_ms=3600000", NULL};
    static const char *sets_off[] = {"journal.dedup_save_interval_ms=3600000",
                                     "kafka.reconcile_on_start=false", NULL};
    return new_gateway(60000, getenv("TG_READBACK_OFF") ? sets_off : sets_on);
}

static struct tg_gw_pub *new_pub(struct tg_gw *gw)
{
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "readback-pub");
    assert_non_null(pub);
    return pub;
}

/* The plan every test but journal_backlog_memory publishes: DEVICES x SEQS readings. */
static struct tg_gw_plan plan_of(const char *prefix, int first_seq)
{
    return (struct tg_gw_plan){.prefix = prefix, .devices = DEVICES, .seqs = SEQS,
                               .first_seq = first_seq, .boot = 1};
}

/* Waits until the counter `metric` (0 at each start of the gateway) reaches n. */
static void wait_count(struct tg_gw *gw, const char *metric, int n)
{
    assert_true(tg_gw_wait_metric(gw, metric, NULL, TG_GW_EQ, n, WAIT_MS));
}

static void publish(struct tg_gw_pub *pub, const struct tg_gw_plan *plan)
{
    assert_int_equal(tg_gw_pub_plan_start(pub, plan), 0);
    assert_int_equal(tg_gw_pub_plan_join(pub), 0);
    assert_true(tg_gw_pub_wait_acked(pub, WAIT_MS));
}

/* The gateway took all READINGS of plan (it may not have sent them). */
static void publish_received(struct tg_gw *gw, struct tg_gw_pub *pub,
                             const struct tg_gw_plan *plan)
{
    publish(pub, plan);
    wait_count(gw, "tidegate_messages_received_total", READINGS);
}

/* Kafka confirmed all READINGS of plan, and the gateway is killed before it commits them. */
static void send_and_kill(struct tg_gw *gw, struct tg_gw_pub *pub,
                          const struct tg_gw_plan *plan)
{
    publish(pub, plan);
    wait_count(gw, "tidegate_messages_delivered_total", READINGS);
    assert_int_equal(tg_gw_tidegate_kill9(gw), 0);
}

static void finish(struct tg_gw *gw, struct tg_gw_pub *pub)
{
    tg_gw_pub_destroy(pub);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

/* Everything the gateway holds is settled; Kafka then holds each reading of plan once. */
static void assert_exactly_once(struct tg_gw *gw, const struct tg_gw_plan *plan,
                                const char *label)
{
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    assert_true(tg_gw_kafka_exactly_once(gw, plan, READINGS, label, 5000));
}

static void journal_copy_in_kafka(void **state)
{
    (void)state;
    struct tg_gw *gw = start_gateway();
    struct tg_gw_pub *pub = new_pub(gw);
    const struct tg_gw_plan plan = plan_of("rb", 0);
    /* Kafka away: the readings wait, and the stop journals them. */
    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    publish_received(gw, pub, &plan);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    /* The next run sends them; Kafka confirms; the kill comes before any commit marks them
     * done. */
    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    wait_count(gw, "tidegate_messages_delivered_total", READINGS);
    assert_int_equal(tg_gw_tidegate_kill9(gw), 0);
    /* The run after it finds them in Kafka and does not send them again. */
    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    assert_exactly_once(gw, &plan, "journal copy already in Kafka");
    assert_true(tg_gw_metric_is(gw, "tidegate_kafka_readback_skipped_total", NULL, TG_GW_EQ,
                                READINGS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ, 0));
    finish(gw, pub);
}

static void resend_after_kill(void **state)
{
    (void)state;
    struct tg_gw *gw = start_gateway();
    struct tg_gw_pub *pub = new_pub(gw);
    const struct tg_gw_plan plan = plan_of("rs", 0);
    /* Confirmed, never in a saved dedup window: killed. */
    send_and_kill(gw, pub, &plan);
    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    /* The nodes resend everything (no ack reached them). */
    publish_received(gw, pub, &plan);
    assert_exactly_once(gw, &plan, "resend after kill -9");
    assert_true(tg_gw_metric_is(gw, "tidegate_kafka_readback_found_total", NULL, TG_GW_EQ,
                                READINGS));
    finish(gw, pub);
}

/* Kafka away: readings journaled, never sent, the dedup window never saved after them;
 * kill -9; the nodes resend them (no ack reached them). The journal runs ahead of the saved
 * window, so the restarted gateway learns the journal's readings before taking any message:
 * the resends are duplicates, and Kafka gets each reading once. (Not a read-back case:
 * nothing of them is in Kafka.) */
static void resend_of_journaled(void **state)
{
    (void)state;
    /* Commits every 200 ms journal the readings; the dedup window is saved once, at start. */
    static const char *sets[] = {"journal.dedup_save_interval_ms=3600000", NULL};
    struct tg_gw *gw = new_gateway(200, sets);
    struct tg_gw_pub *pub = new_pub(gw);
    const struct tg_gw_plan plan = plan_of("rj", 0);
    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    publish_received(gw, pub, &plan);
    /* Journaled: a commit follows the last reading taken unless the one under way (or
     * done) when the count was read had it already; a commit happens only when something
     * changed, so the wait may rightly time out. */
    double commits = tg_gw_metric(gw, "tidegate_journal_commits_total", NULL);
    (void)tg_gw_wait_metric(gw, "tidegate_journal_commits_total", NULL, TG_GW_GE, commits + 1,
                            2000);
    assert_true(tg_gw_metric_is(gw, "tidegate_journal_records", NULL, TG_GW_EQ, READINGS));
    assert_int_equal(tg_gw_tidegate_kill9(gw), 0);
    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    publish_received(gw, pub, &plan); /* the nodes resend: no ack reached them */
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_duplicate_total", NULL, TG_GW_EQ,
                                READINGS));
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    assert_exactly_once(gw, &plan, "resend of journaled readings");
    finish(gw, pub);
}

/* A cluster that lets the gateway write but not read the topic (a producer-only ACL: WRITE
 * and DESCRIBE, no READ): every fetch of the read-back is refused. That is no reason to
 * send nothing, ever: the gateway gives the read-back up (a reading may then reach Kafka
 * twice, never be lost) and sends. Dev tier only (the refusal is injected). */
static void read_refused(void **state)
{
    (void)state;
    /* The marks are saved once, when the first run's read-back ends (before it sends):
     * killed after sending, it leaves all it sent past them for the next start to read. */
    static const char *sets[] = {"journal.dedup_save_interval_ms=3600000", NULL};
    struct tg_gw *gw = new_gateway(60000, sets);
    if (!tg_gw_devkafka(gw)) {
        tg_gw_destroy(gw);
        skip();
    }
    struct tg_gw_pub *pub = new_pub(gw);
    /* A first run sends, and is killed. */
    const struct tg_gw_plan first = plan_of("ra", 0);
    send_and_kill(gw, pub, &first);
    char reply[256];
    assert_int_equal(tg_harness_devkafka_cmd(tg_gw_devkafka(gw),
                                             "error all fetch TOPIC_AUTHORIZATION_FAILED 1000",
                                             reply, sizeof reply),
                     0);
    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    const struct tg_gw_plan second = plan_of("rb", 0);
    publish(pub, &second);
    /* (what the journal kept of the first run goes again: duplicates, the price) */
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  READINGS, 20000));
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, 20000));
    assert_int_equal(tg_gw_log_count(gw, "grant READ on topic"), 1); /* and says why */
    finish(gw, pub);
}

/* Peak resident memory of the running tidegate, in bytes (0 if unknown). */
static long long tidegate_hwm_bytes(struct tg_gw *gw)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status",
             (int)tg_harness_proc_pid(tg_gw_tidegate_proc(gw)));
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

#define BACKLOG_DEVICES 100
#define BACKLOG_SEQS 3000
#define BACKLOG (BACKLOG_DEVICES * BACKLOG_SEQS)
/* Fewer bytes than any canonical record of the plan takes uncompressed. */
#define RECORD_RAW_MIN 100

/* A journal backlog at start: the dedup window learns each of its readings, and the segments
 * it reads for that must not all stay in memory (journal.memory_bytes bounds what is
 * resident; the journal's cap is far larger: 2G on a Raspberry Pi 3B with 1 GB of RAM).
 * The restarted gateway's peak RSS, Kafka still away, stays within a quarter of the
 * backlog's raw size above what the first run peaked at while taking the same readings
 * (holding the whole backlog resident at start fails this by far). */
static void journal_backlog_memory(void **state)
{
    (void)state;
    static const char *sets[] = {"journal.memory_bytes=1M", "kafka.reconcile_on_start=false",
                                 NULL};
    struct tg_gw *gw = new_gateway(200, sets);
    struct tg_gw_pub *pub = new_pub(gw);
    const struct tg_gw_plan plan = {.prefix = "rm", .devices = BACKLOG_DEVICES,
                                    .seqs = BACKLOG_SEQS, .boot = 1};
    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    publish(pub, &plan);
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, BACKLOG,
                                  WAIT_MS));
    long long first = tidegate_hwm_bytes(gw);
    assert_true(first > 0);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    assert_true(tg_gw_metric_is(gw, "tidegate_journal_records", NULL, TG_GW_EQ, BACKLOG));
    long long again = tidegate_hwm_bytes(gw);
    printf("peak RSS: %lld KiB taking %d readings, %lld KiB at the start after (raw backlog "
           "> %d KiB)\n",
           first / 1024, BACKLOG, again / 1024, BACKLOG * RECORD_RAW_MIN / 1024);
#ifndef __SANITIZE_ADDRESS__ /* ASan's quarantine keeps what is freed: its RSS says nothing */
    assert_true(again < first + (long long)BACKLOG * RECORD_RAW_MIN / 4);
#endif
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    finish(gw, pub);
}

/* Kafka away at a start: the read-back waits for it, and meanwhile the gateway is ready,
 * takes and journals readings, and a SIGTERM stops it at once (the wait is not for the
 * cluster); the next start, Kafka back, sends each of them once. */
static void kafka_down_at_start(void **state)
{
    (void)state;
    struct tg_gw *gw = start_gateway();
    struct tg_gw_pub *pub = new_pub(gw);
    const struct tg_gw_plan first = plan_of("rk", 0);
    publish(pub, &first);
    wait_count(gw, "tidegate_messages_delivered_total", READINGS);
    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    assert_int_equal(tg_gw_tidegate_kill9(gw), 0);
    assert_int_equal(tg_gw_tidegate_start(gw), 0); /* ready, the read-back waiting */
    const struct tg_gw_plan second = plan_of("rk", SEQS);
    const struct tg_gw_plan both = {.prefix = "rk", .devices = DEVICES, .seqs = 2 * SEQS,
                                    .boot = 1};
    publish_received(gw, pub, &second);
    /* Well within shutdown_timeout_ms (10 s) plus the harness's margin. */
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 12000)));
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    assert_true(tg_gw_kafka_exactly_once(gw, &both, 2 * READINGS,
                                         "before, and while Kafka was away", 5000));
    finish(gw, pub);
}

/* One partition of the telemetry topic without a leader at a start (its broker lost), the
 * rest of the cluster fine: the producer can send everything that goes elsewhere, and the
 * read-back must not hold all of it back for as long as the partition stays away (the
 * journal would fill and the overflow policy apply). It reads what it can, skips that
 * partition after a few tries (a possible duplicate, never a loss), and sending starts.
 * Dev tier only (leadership is moved by devkafka). */
static void partition_leaderless(void **state)
{
    (void)state;
    struct tg_gw *gw = start_gateway();
    if (!tg_gw_devkafka(gw)) {
        tg_gw_destroy(gw);
        skip();
    }
    struct tg_gw_pub *pub = new_pub(gw);
    const struct tg_gw_plan first = plan_of("rp", 0);
    send_and_kill(gw, pub, &first);
    char reply[256];
    assert_int_equal(tg_harness_devkafka_cmd(tg_gw_devkafka(gw), "leader " TG_GW_TOPIC " 0 none",
                                             reply, sizeof reply),
                     0);
    assert_int_equal(tg_gw_tidegate_start(gw), 0);
    const struct tg_gw_plan second = plan_of("rp", SEQS);
    publish(pub, &second);
    /* Every reading of a device whose partition has a leader gets through. */
    int partitions = tg_gw_telemetry_partitions(gw), elsewhere = 0;
    for (int d = 0; d < DEVICES; d++) {
        char dev[TG_DEVICE_ID_MAX + 1];
        if (tg_gw_java_partition(tg_gw_plan_device(&second, d, dev, sizeof dev), partitions))
            elsewhere += SEQS;
    }
    assert_true(elsewhere > 0 && elsewhere < READINGS);
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  elsewhere, 30000));
    assert_int_equal(tg_harness_devkafka_cmd(tg_gw_devkafka(gw), "leader " TG_GW_TOPIC " 0 1",
                                             reply, sizeof reply),
                     0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_journal_records", NULL, TG_GW_EQ, 0, WAIT_MS));
    finish(gw, pub);
}

/* argv[1], if given: run only the tests whose name matches it (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(journal_copy_in_kafka, tg_gw_teardown),
        cmocka_unit_test_teardown(resend_after_kill, tg_gw_teardown),
        cmocka_unit_test_teardown(resend_of_journaled, tg_gw_teardown),
        cmocka_unit_test_teardown(read_refused, tg_gw_teardown),
        cmocka_unit_test_teardown(journal_backlog_memory, tg_gw_teardown),
        cmocka_unit_test_teardown(kafka_down_at_start, tg_gw_teardown),
        cmocka_unit_test_teardown(partition_leaderless, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
