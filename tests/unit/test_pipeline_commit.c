/*
 * test_pipeline_commit.c - the pipeline's commit and overflow code (pipeline_commit.c) and
 * its dead letters (pipeline_ingest.c), driven step by step without the pipeline thread,
 * against a stub egress (stub_egress.c) and a real journal in a temp dir. Journal failures
 * are injected by wrapping the journal calls the pipeline makes (-Wl,--wrap).
 *
 *   journal_error_is_full_*  a journal that fails with an I/O error (not disk full) counts as
 *                            full for the overflow policy: backpressure refuses offers,
 *                            drop_oldest bounds what waits in memory (issue 11);
 *   disk_full_drop_oldest    a full disk under drop_oldest: the oldest journaled rows go to
 *                            make room, and once none is left what waits in memory stays
 *                            within a commit interval's arrivals (durable mode), the oldest
 *                            dropped and counted; before, it piled up without bound;
 *   drop_oldest_failed_tx    a drop_oldest transaction that fails changes nothing: no record
 *                            is marked done in memory while its row stays, so the next commit
 *                            drops them for real and a restart finds no orphans (issue 11);
 *   dlq_headers_long_topic   a dead letter from a ~980-byte topic keeps its reason and
 *                            device-id headers (issue 11);
 *   missing_topic_parks      records for a topic the producer says is missing are passed
 *                            over, the other topic's go on, health says why; once the topic
 *                            is back (also after an error that came and went between two
 *                            looks) the passed-over records are sent (issue 11);
 *   spill_journals_parked    in spill mode, records waiting for a missing topic are
 *                            journaled like any backlog, not kept in memory only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway_config.h"
#include "pipeline_internal.h"
#include "stub_egress.h"
#include "unit_tmp.h"

/* ---- journal faults ---------------------------------------------------------------------- */

static struct {
    tg_err put, set_done, del;
} fault;

tg_err __real_tg_journal_put(struct tg_journal *jr, const struct tg_jseg_meta *meta,
                             const uint8_t *data, size_t len);
tg_err __wrap_tg_journal_put(struct tg_journal *jr, const struct tg_jseg_meta *meta,
                             const uint8_t *data, size_t len);
tg_err __real_tg_journal_set_done(struct tg_journal *jr, uint64_t id, const uint8_t *bits,
                                  size_t len);
tg_err __wrap_tg_journal_set_done(struct tg_journal *jr, uint64_t id, const uint8_t *bits,
                                  size_t len);
tg_err __real_tg_journal_delete(struct tg_journal *jr, uint64_t id);
tg_err __wrap_tg_journal_delete(struct tg_journal *jr, uint64_t id);

tg_err __wrap_tg_journal_put(struct tg_journal *jr, const struct tg_jseg_meta *meta,
                             const uint8_t *data, size_t len)
{
    return fault.put ? fault.put : __real_tg_journal_put(jr, meta, data, len);
}

tg_err __wrap_tg_journal_set_done(struct tg_journal *jr, uint64_t id, const uint8_t *bits,
                                  size_t len)
{
    return fault.set_done ? fault.set_done : __real_tg_journal_set_done(jr, id, bits, len);
}

tg_err __wrap_tg_journal_delete(struct tg_journal *jr, uint64_t id)
{
    return fault.del ? fault.del : __real_tg_journal_delete(jr, id);
}

/* ---- fixture ----------------------------------------------------------------------------- */

struct fx {
    char dir[TG_UNIT_PATH_MAX];
    char path[TG_UNIT_PATH_MAX];
    struct tg_config *cfg;
    struct tg_metrics *metrics;
    struct tg_pipeline *pl;
    int seq;
};

static int64_t wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fx_set(struct fx *f, const char *assignment)
{
    assert_int_equal(tg_config_set(f->cfg, assignment), TG_OK);
}

/* Config with the journal in a temp dir and the given extra settings. */
static void fx_config(struct fx *f, const char *const *sets)
{
    assert_int_equal(tg_unit_tmpdir_new(f->dir, sizeof f->dir, "plcommit"), 0);
    tg_unit_path(f->path, sizeof f->path, f->dir, "journal.db");
    f->cfg = tg_gateway_config_new();
    assert_non_null(f->cfg);
    char set[TG_UNIT_PATH_MAX + 16];
    snprintf(set, sizeof set, "journal.path=%s", f->path);
    fx_set(f, set);
    fx_set(f, "gateway.id=gw-unit");
    for (size_t i = 0; sets && sets[i]; i++)
        fx_set(f, sets[i]);
}

static void fx_open(struct fx *f)
{
    f->metrics = tg_metrics_new();
    assert_non_null(f->metrics);
    char err[512] = "";
    tg_err rc = tg_pipeline_new(f->cfg, f->metrics, &f->pl, err, sizeof err);
    if (rc != TG_OK)
        fail_msg("tg_pipeline_new: %s", err);
}

/* Destroys the pipeline without a final commit (what a crash right after the last commit
 * leaves). */
static void fx_close(struct fx *f)
{
    tg_pipeline_destroy(f->pl);
    f->pl = NULL;
    tg_metrics_destroy(f->metrics);
    f->metrics = NULL;
}

static void fx_free(struct fx *f)
{
    fx_close(f);
    tg_config_destroy(f->cfg);
    assert_int_equal(tg_unit_tmpdir_remove(f->dir), 0); /* the journal, its -wal and -shm */
}

/* Offers n readings (n devices round robin, values that compress badly) and takes them. */
static void feed(struct fx *f, int n)
{
    for (int i = 0; i < n; i++) {
        char topic[64], payload[160];
        int seq = f->seq++;
        int tl = snprintf(topic, sizeof topic, "telemetry/dev-%03d", seq % 50);
        int pl_len = snprintf(payload, sizeof payload,
                              "{\"seq\":%d,\"boot\":1,\"ts\":%lld,\"m\":{\"t\":%.9f,\"u\":%u}}",
                              seq / 50, (long long)wall_now(),
                              (double)((unsigned)seq * 2654435761u % 100000) / 997.0,
                              (unsigned)seq * 2246822519u);
        assert_int_equal(tg_pipeline_offer(f->pl, topic, (size_t)tl, (const uint8_t *)payload,
                                           (size_t)pl_len, wall_now()),
                         TG_OK);
        pipeline__take_ingress(f->pl, 1000);
    }
}

static uint64_t dropped_full(const struct fx *f) { return tg_counter_value(f->pl->m.dropped_full); }

/* Raw bytes of resident data not yet in the journal. */
static size_t unjournaled_bytes(const struct tg_pipeline *pl)
{
    size_t n = 0;
    for (const struct seg *s = pl->head; s; s = s->next)
        if (!s->persisted && s->data)
            n += tg_segment_raw_bytes(s->data);
    return n;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void journal_error_is_full_backpressure(void **state)
{
    (void)state;
    struct fx f = {0};
    const char *sets[] = {"journal.overflow=backpressure", NULL};
    fx_config(&f, sets);
    fx_open(&f);
    stub_egress_set_up(stub_egress(), false); /* Kafka down: everything must be journaled */
    feed(&f, 100);

    fault.put = TG_ERR_IO; /* EIO, a read-only remount: not "disk full" */
    assert_int_equal(pipeline__commit(f.pl, false), TG_ERR_IO);
    fault.put = TG_OK;
    assert_false(tg_pipeline_healthy(f.pl));
    /* The journal cannot keep what comes: the policy applies as at the cap. */
    const char *topic = "telemetry/dev-001";
    const char *payload = "{\"seq\":999,\"boot\":1,\"ts\":1,\"m\":{\"t\":1}}";
    assert_int_equal(tg_pipeline_offer(f.pl, topic, strlen(topic), (const uint8_t *)payload,
                                       strlen(payload), wall_now()),
                     TG_ERR_FULL);

    /* The journal works again: so does ingestion. */
    assert_int_equal(pipeline__commit(f.pl, false), TG_OK);
    assert_true(tg_pipeline_healthy(f.pl));
    assert_int_equal(tg_pipeline_offer(f.pl, topic, strlen(topic), (const uint8_t *)payload,
                                       strlen(payload), wall_now()),
                     TG_OK);
    fx_free(&f);
}

static void journal_error_is_full_drop_oldest(void **state)
{
    (void)state;
    struct fx f = {0};
    const char *sets[] = {"journal.overflow=drop_oldest", "journal.memory_bytes=256k",
                          "journal.segment_bytes=16k", NULL};
    fx_config(&f, sets);
    fx_open(&f);
    stub_egress_set_up(stub_egress(), false);

    fault.put = TG_ERR_IO;
    for (int round = 0; round < 20; round++) {
        feed(&f, 500);
        assert_int_equal(pipeline__commit(f.pl, false), TG_ERR_IO);
    }
    fault.put = TG_OK;
    size_t waiting = unjournaled_bytes(f.pl);
    fprintf(stderr, "after 20 failed commits: %zu bytes wait unjournaled, %llu dropped\n",
            waiting, (unsigned long long)dropped_full(&f));
    /* Bounded by memory_bytes, plus what one commit interval brought (< 100 KiB here). */
    assert_true(waiting <= 256 * 1024 + 100 * 1024);
    assert_true(dropped_full(&f) > 0);
    /* Every reading is accounted for: held or counted dropped. */
    assert_int_equal(f.pl->open_records + dropped_full(&f), 20 * 500);
    fx_free(&f);
}

static void disk_full_drop_oldest(void **state)
{
    (void)state;
    struct fx f = {0};
    const char *sets[] = {"journal.overflow=drop_oldest", "journal.segment_bytes=16k", NULL};
    fx_config(&f, sets);
    fx_open(&f);
    stub_egress_set_up(stub_egress(), false);
    for (int round = 0; round < 5; round++) {
        feed(&f, 500);
        assert_int_equal(pipeline__commit(f.pl, false), TG_OK);
    }
    uint64_t journaled = tg_journal_data_bytes(f.pl->jr);
    assert_true(journaled > 0);

    fault.put = TG_ERR_FULL; /* SQLITE_FULL: no new row fits */
    size_t peak = 0;
    for (int round = 0; round < 20; round++) {
        feed(&f, 500);
        assert_int_equal(pipeline__commit(f.pl, false), TG_ERR_FULL);
        size_t waiting = unjournaled_bytes(f.pl);
        if (waiting > peak)
            peak = waiting;
    }
    fault.put = TG_OK;
    fprintf(stderr, "disk full: journal %llu -> %llu bytes, at most %zu bytes waited in memory, "
            "%llu dropped\n",
            (unsigned long long)journaled, (unsigned long long)tg_journal_data_bytes(f.pl->jr),
            peak, (unsigned long long)dropped_full(&f));
    /* The journaled rows made room first... */
    assert_true(tg_journal_data_bytes(f.pl->jr) < journaled);
    /* ...then memory held about one commit's arrivals (500 readings, < 100 KiB raw). */
    assert_true(peak <= 2 * 100 * 1024);
    assert_true(dropped_full(&f) > 0);
    assert_int_equal(f.pl->open_records + dropped_full(&f), 25 * 500);
    /* Space returns: the next commit journals what is held. */
    assert_int_equal(pipeline__commit(f.pl, false), TG_OK);
    assert_int_equal(unjournaled_bytes(f.pl), 0);
    fx_free(&f);
}

static void drop_oldest_failed_tx(void **state)
{
    (void)state;
    struct fx f = {0};
    const char *sets[] = {"journal.overflow=drop_oldest", "journal.max_bytes=64k",
                          "journal.segment_bytes=16k", NULL};
    fx_config(&f, sets);
    fx_open(&f);
    stub_egress_set_up(stub_egress(), false);
    const uint64_t cap = 64 * 1024;

    /* Fill the journal until the policy has dropped something. */
    for (int round = 0; round < 100 && dropped_full(&f) == 0; round++) {
        feed(&f, 300);
        assert_int_equal(pipeline__commit(f.pl, false), TG_OK);
    }
    assert_true(dropped_full(&f) > 0);
    assert_true(tg_journal_data_bytes(f.pl->jr) <= cap);

    /* The next drop's transaction fails (the commits themselves write new rows). */
    uint64_t dropped_before = dropped_full(&f);
    /* Deletes only: set_done would fail the commits themselves (each new row's bitmap). */
    fault.del = TG_ERR_IO;
    for (int round = 0; round < 20 && tg_journal_data_bytes(f.pl->jr) <= cap; round++) {
        feed(&f, 300);
        (void)pipeline__commit(f.pl, false);
    }
    fault.del = TG_OK;
    assert_true(tg_journal_data_bytes(f.pl->jr) > cap);
    fprintf(stderr, "after the failed drop: journal %llu bytes (cap %llu), %zu records held, "
            "%llu dropped\n",
            (unsigned long long)tg_journal_data_bytes(f.pl->jr), (unsigned long long)cap,
            f.pl->open_records, (unsigned long long)dropped_full(&f));
    /* Nothing was dropped, since nothing could be. */
    assert_int_equal(dropped_full(&f), dropped_before);

    /* The next commit drops for real, and the journal is back under its cap. */
    assert_int_equal(pipeline__commit(f.pl, false), TG_OK);
    fprintf(stderr, "after the next commit: journal %llu bytes, %zu records held\n",
            (unsigned long long)tg_journal_data_bytes(f.pl->jr), f.pl->open_records);
    assert_true(dropped_full(&f) > dropped_before);
    assert_true(tg_journal_data_bytes(f.pl->jr) <= cap);
    /* Memory and journal agree: a restart finds exactly the records held, no orphans. */
    size_t held = f.pl->open_records;
    fx_close(&f);
    fx_open(&f);
    assert_int_equal(f.pl->open_records, held);
    fx_free(&f);
}

static void dlq_headers_long_topic(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_config(&f, NULL);
    fx_open(&f);
    /* A 980-byte topic (its last level, the device id, valid) and a payload that is not JSON. */
    char topic[981];
    size_t tl = 0;
    for (; tl < 980 - sizeof "/dev-7"; tl++)
        topic[tl] = (tl % 2) ? '/' : 'a';
    tl += (size_t)snprintf(topic + tl, sizeof topic - tl, "/dev-7");
    assert_int_equal(tg_pipeline_offer(f.pl, topic, tl, (const uint8_t *)"{oops", 5, wall_now()),
                     TG_OK);
    assert_int_equal(pipeline__take_ingress(f.pl, 10), 1);

    struct seg *s = f.pl->tail;
    assert_non_null(s);
    assert_int_equal(tg_segment_count(s->data), 1);
    struct tg_jrecord rec;
    tg_segment_get(s->data, 0, &rec);
    assert_int_equal(rec.kind, TG_JREC_DLQ);
    bool reason = false, device = false, mqtt_topic = false;
    size_t pos = 0, name_len, value_len;
    const char *name;
    const uint8_t *value;
    while (tg_jrecord_headers_next(rec.aux, rec.aux_len, &pos, &name, &name_len, &value,
                                   &value_len)) {
        if (name_len == 6 && memcmp(name, "reason", 6) == 0)
            reason = value_len == strlen("malformed") && memcmp(value, "malformed", 9) == 0;
        if (name_len == 9 && memcmp(name, "device-id", 9) == 0)
            device = value_len == 5 && memcmp(value, "dev-7", 5) == 0;
        if (name_len == 10 && memcmp(name, "mqtt-topic", 10) == 0)
            mqtt_topic = value_len > 0 && memcmp(value, topic, value_len) == 0;
    }
    assert_true(reason);
    assert_true(device);
    assert_true(mqtt_topic); /* kept, possibly cut */
    fx_free(&f);
}

static void offer_bad(struct fx *f)
{
    const char *topic = "telemetry/bad-1";
    assert_int_equal(tg_pipeline_offer(f->pl, topic, strlen(topic), (const uint8_t *)"{x", 2,
                                       wall_now()),
                     TG_OK);
    pipeline__take_ingress(f->pl, 10);
}

static void missing_topic_parks(void **state)
{
    (void)state;
    struct fx f = {0};
    fx_config(&f, NULL);
    fx_open(&f);
    struct tg_egress *eg = stub_egress();
    stub_egress_set_topic_error(eg, TG_JREC_DLQ, 3 /* UNKNOWN_TOPIC_OR_PART */);
    offer_bad(&f); /* a dead letter first: before the fix it stopped everything behind it */
    feed(&f, 10);
    pipeline__check_topics(f.pl);
    pipeline__produce_step(f.pl, 100);
    assert_int_equal(stub_egress_pending(eg), 10); /* the telemetry, not the dead letter */
    stub_egress_deliver_all(eg, TG_OK);
    assert_int_equal(f.pl->open_records, 1);
    char why[256];
    assert_false(tg_pipeline_health(f.pl, why, sizeof why));
    assert_non_null(strstr(why, "telemetry.dlq"));
    assert_int_equal(tg_gauge_value(f.pl->m.topic_available[TG_JREC_DLQ]), 0);

    /* More of both while the topic is missing: the same. */
    offer_bad(&f);
    feed(&f, 5);
    pipeline__produce_step(f.pl, 100);
    assert_int_equal(stub_egress_pending(eg), 5);
    stub_egress_deliver_all(eg, TG_OK);

    /* The topic appears: both dead letters go, oldest first. */
    stub_egress_set_topic_error(eg, TG_JREC_DLQ, 0);
    pipeline__check_topics(f.pl);
    pipeline__produce_step(f.pl, 100);
    assert_int_equal(stub_egress_pending(eg), 2);
    stub_egress_deliver_all(eg, TG_OK);
    assert_int_equal(f.pl->open_records, 0);
    assert_true(tg_pipeline_health(f.pl, why, sizeof why));
    assert_int_equal(tg_gauge_value(f.pl->m.topic_available[TG_JREC_DLQ]), 1);

    /* An error that comes and goes between two looks: the dead letter it failed is sent
     * again all the same. */
    offer_bad(&f);
    pipeline__produce_step(f.pl, 100);
    assert_int_equal(stub_egress_pending(eg), 1);
    stub_egress_set_topic_error(eg, TG_JREC_DLQ, 3);
    stub_egress_deliver_all(eg, TG_ERR_UNAVAILABLE);
    stub_egress_set_topic_error(eg, TG_JREC_DLQ, 0);
    pipeline__check_topics(f.pl);
    pipeline__produce_step(f.pl, 100);
    assert_int_equal(stub_egress_pending(eg), 1);
    stub_egress_deliver_all(eg, TG_OK);
    assert_int_equal(f.pl->open_records, 0);
    fx_free(&f);
}

static void spill_journals_parked(void **state)
{
    (void)state;
    struct fx f = {0};
    const char *sets[] = {"journal.mode=spill", NULL};
    fx_config(&f, sets);
    fx_open(&f);
    struct tg_egress *eg = stub_egress();
    stub_egress_set_topic_error(eg, TG_JREC_DLQ, 3);
    pipeline__check_topics(f.pl);
    offer_bad(&f);
    feed(&f, 10);
    pipeline__produce_step(f.pl, 100);
    stub_egress_deliver_all(eg, TG_OK);
    assert_int_equal(pipeline__commit(f.pl, false), TG_OK);
    /* Kafka is up and keeps up, memory is far from short: only the waiting dead letter
     * makes the commit write. */
    assert_int_equal(tg_journal_segments(f.pl->jr), 1);
    assert_int_equal(f.pl->open_records, 1);
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(journal_error_is_full_backpressure),
        cmocka_unit_test(journal_error_is_full_drop_oldest),
        cmocka_unit_test(disk_full_drop_oldest),
        cmocka_unit_test(drop_oldest_failed_tx),
        cmocka_unit_test(dlq_headers_long_topic),
        cmocka_unit_test(missing_topic_parks),
        cmocka_unit_test(spill_journals_parked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
