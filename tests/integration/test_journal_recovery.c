/* Integration test of the journal's defences (issue 11, part B) through the pipeline, against
 * tidegate-devkafka, without MQTT: corrupt rows at start are dropped on their own and
 * counted while the rest is delivered (a row whose records lie outside its rid range used
 * to overflow the pipeline's bitmaps); a second pipeline on the same journal is refused; the
 * WAL stays within its bound under load and is gone after a clean stop; an oversized
 * payload's dead letter states the configured limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <cmocka.h>

#include "gateway_config.h"
#include "harness.h"
#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "segment.h"

struct env {
    struct tg_harness_devkafka *dk;
    char *dir;
    char journal[512];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct gw {
    struct tg_config *cfg;
    struct tg_metrics *m;
    struct tg_pipeline *pl;
};

static struct tg_config *make_config(struct env *e, const char *const *extra)
{
    struct tg_config *cfg = tg_gateway_config_new();
    assert_non_null(cfg);
    char kv[1024];
    snprintf(kv, sizeof kv, "kafka.brokers=%s", tg_harness_devkafka_bootstrap(e->dk));
    assert_int_equal(tg_config_set(cfg, kv), TG_OK);
    snprintf(kv, sizeof kv, "journal.path=%s", e->journal);
    assert_int_equal(tg_config_set(cfg, kv), TG_OK);
    const char *const common[] = {"journal.commit_interval_ms=100", "kafka.linger_ms=5",
                                  "gateway.id=gw-test", "gateway.shutdown_timeout_ms=5000", NULL};
    for (const char *const *s = common; *s; s++)
        assert_int_equal(tg_config_set(cfg, *s), TG_OK);
    for (const char *const *s = extra; s && *s; s++)
        if (tg_config_set(cfg, *s) != TG_OK)
            fail_msg("%s: %s", *s, tg_config_error(cfg));
    return cfg;
}

/* Starts a pipeline; returns its error (err filled) instead of failing when it cannot. */
static tg_err gw_try_start(struct env *e, struct gw *g, const char *const *extra, char *err,
                           size_t errlen)
{
    g->cfg = make_config(e, extra);
    g->m = tg_metrics_new();
    tg_err rc = tg_pipeline_new(g->cfg, g->m, &g->pl, err, errlen);
    if (rc != TG_OK) {
        tg_metrics_destroy(g->m);
        tg_config_destroy(g->cfg);
        return rc;
    }
    assert_int_equal(tg_pipeline_start(g->pl), TG_OK);
    return TG_OK;
}

static void gw_start(struct env *e, struct gw *g, const char *const *extra)
{
    char err[1024];
    if (gw_try_start(e, g, extra, err, sizeof err) != TG_OK)
        fail_msg("tg_pipeline_new: %s", err);
}

static void gw_stop(struct gw *g)
{
    assert_int_equal(tg_pipeline_stop(g->pl, 5000), TG_OK);
    tg_pipeline_destroy(g->pl);
    tg_metrics_destroy(g->m);
    tg_config_destroy(g->cfg);
}

static double metric_l(struct gw *g, const char *name, const char *label, const char *value)
{
    double v = label ? tg_metrics_find_value(g->m, name, label, value, NULL)
                     : tg_metrics_find_value(g->m, name, NULL);
    return v != v ? 0 : v;
}

static double metric(struct gw *g, const char *name) { return metric_l(g, name, NULL, NULL); }

struct wait_metric {
    struct gw *g;
    const char *name;
    double at_least;
};

static bool metric_reached(void *ud)
{
    struct wait_metric *w = ud;
    return metric(w->g, w->name) >= w->at_least;
}

static void wait_metric(struct gw *g, const char *name, double at_least, int timeout_ms)
{
    struct wait_metric w = {g, name, at_least};
    if (!tg_harness_wait_until(metric_reached, &w, timeout_ms))
        fail_msg("%s stayed at %g, expected >= %g", name, metric(g, name), at_least);
}

static char *consume(struct env *e, const char *topic, const char *fmt, int expect)
{
    char count[32];
    snprintf(count, sizeof count, "%d", expect);
    const char *const argv[] = {"kcat", "-C", "-b", tg_harness_devkafka_bootstrap(e->dk), "-t",
                                topic, "-o", "beginning", "-c", count, "-e", "-q", "-f", fmt,
                                NULL};
    char *out = NULL;
    int st = tg_harness_run(argv, NULL, 0, &out, 30000);
    assert_true(tg_harness_exited_ok(st));
    return out;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    e->dk = tg_harness_devkafka_start(NULL);
    e->dir = tg_harness_tmpdir_new("journal-recovery");
    if (!e->dk || !e->dir)
        return -1;
    snprintf(e->journal, sizeof e->journal, "%s/journal.db", e->dir);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    tg_harness_devkafka_destroy(e->dk);
    tg_harness_tmpdir_done(e->dir);
    free(e);
    return 0;
}

/* Writes one journal row: records with rids rid0.. rid0+n-1 (values "v-<rid>", device key
 * "dev-<rid % 3>"), stored under meta, which the caller may make lie. */
static void put_row(struct tg_journal *jr, struct tg_jseg_meta meta, uint64_t rid0, int n,
                    int64_t raw_delta)
{
    struct tg_segment *seg = tg_segment_new(1 << 20);
    assert_non_null(seg);
    for (int i = 0; i < n; i++) {
        char key[16], val[32];
        uint64_t rid = rid0 + (uint64_t)i;
        snprintf(key, sizeof key, "dev-%u", (unsigned)(rid % 3));
        snprintf(val, sizeof val, "v-%llu", (unsigned long long)rid);
        struct tg_jrecord rec = {.rid = rid, .kind = TG_JREC_TELEMETRY, .ts_ms = now_ms(),
                                 .rx_ms = now_ms(), .key = (const uint8_t *)key,
                                 .key_len = strlen(key), .value = (const uint8_t *)val,
                                 .value_len = strlen(val)};
        assert_int_equal(tg_segment_append(seg, &rec), TG_OK);
    }
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_segment_compress(seg, TG_CODEC_ZSTD, 3, &blob, &len), TG_OK);
    meta.codec = TG_CODEC_ZSTD;
    meta.n_records = (uint32_t)n;
    meta.created_ms = now_ms();
    meta.raw_bytes = (uint32_t)((int64_t)tg_segment_raw_bytes(seg) + raw_delta);
    meta.data_bytes = (uint32_t)len;
    assert_int_equal(tg_journal_put(jr, &meta, blob, len), TG_OK);
    free(blob);
    tg_segment_destroy(seg);
}

/* Rows a damaged disk could hold, between good ones: the gateway starts, sends the good
 * rows, and drops and counts the bad ones. */
static void corrupt_rows_dropped_rest_delivered(void **state)
{
    struct env *e = *state;
    struct tg_journal *jr = NULL;
    bool moved;
    char err[1024];
    assert_int_equal(tg_journal_open(e->journal, NULL, &jr, &moved, err, sizeof err), TG_OK);
    assert_int_equal(tg_journal_begin(jr), TG_OK);
    /* good: rids 1..10 */
    put_row(jr, (struct tg_jseg_meta){.id = 1, .first_rid = 1, .last_rid = 10}, 1, 10, 0);
    /* claims rids 11..20, holds 100..109: indexing its bitmap by them overflowed the heap */
    put_row(jr, (struct tg_jseg_meta){.id = 11, .first_rid = 11, .last_rid = 20}, 100, 10, 0);
    /* a stored size that does not match the data */
    put_row(jr, (struct tg_jseg_meta){.id = 21, .first_rid = 21, .last_rid = 30}, 21, 10,
            50 << 20);
    /* an inverted rid range: the journal itself drops the row */
    put_row(jr, (struct tg_jseg_meta){.id = 31, .first_rid = 31, .last_rid = 5}, 31, 5, 0);
    /* good: rids 41..50 */
    put_row(jr, (struct tg_jseg_meta){.id = 41, .first_rid = 41, .last_rid = 50}, 41, 10, 0);
    assert_int_equal(tg_journal_commit(jr), TG_OK);
    tg_journal_close(jr);

    struct gw g;
    gw_start(e, &g, NULL);
    /* the cursor passes rows 11 and 21 before it reaches row 41 */
    wait_metric(&g, "tidegate_messages_delivered_total", 20, 30000);
    assert_int_equal(metric_l(&g, "tidegate_messages_dropped_total", "reason", "journal_corrupt"),
                     20);
    assert_int_equal(metric(&g, "tidegate_journal_corrupt_rows_total"), 1);
    gw_stop(&g);

    char *out = consume(e, "telemetry", "%s\\n", 20);
    for (int rid = 1; rid <= 50; rid++) {
        char want[32];
        snprintf(want, sizeof want, "v-%d\n", rid);
        bool good = rid <= 10 || rid >= 41;
        if (good != (strstr(out, want) != NULL))
            fail_msg("rid %d %s:\n%s", rid, good ? "missing" : "sent", out);
    }
    free(out);

    /* Nothing of the bad rows is left for the next start. */
    gw_start(e, &g, NULL);
    assert_int_equal(metric(&g, "tidegate_journal_records"), 0);
    assert_int_equal(metric(&g, "tidegate_journal_corrupt_rows_total"), 0);
    gw_stop(&g);
}

/* Two gateways on one journal would both send its backlog. */
static void second_gateway_refused(void **state)
{
    struct env *e = *state;
    struct gw g1, g2;
    gw_start(e, &g1, NULL);
    char err[1024] = "";
    assert_int_equal(gw_try_start(e, &g2, NULL, err, sizeof err), TG_ERR_CONFIG);
    if (!strstr(err, "is in use by another process"))
        fail_msg("unexpected error: %s", err);
    gw_stop(&g1);
    gw_start(e, &g2, NULL); /* the lock went with the first one */
    gw_stop(&g2);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Kafka down for the first part (every commit journals segments), then up (the backlog
 * drains: every commit deletes them): after every commit the WAL is within its share of
 * journal.max_bytes (an eighth: 64 KiB of 512 KiB here), and a clean stop removes it.
 * Prints the bytes on disk per reading. */
static void offer_n(struct gw *g, int from, int to, const char *wal, long *wal_max)
{
    for (int i = from; i < to; i++) {
        char topic[64], payload[160];
        int tl = snprintf(topic, sizeof topic, "telemetry/dev-%d", i % 50);
        int pl = snprintf(payload, sizeof payload,
                          "{\"seq\":%d,\"boot\":1,\"ts\":%lld,\"m\":{\"temp\":%d.%d,\"n\":%d}}",
                          i / 50, (long long)now_ms(), i % 40, i % 10, i * 7919);
        int64_t deadline = tg_harness_now_ms() + 30000;
        while (tg_pipeline_offer(g->pl, topic, (size_t)tl, (const uint8_t *)payload, (size_t)pl,
                                 now_ms()) != TG_OK) {
            if (tg_harness_now_ms() > deadline)
                fail_msg("reading %d not taken within 30 s", i);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        /* The gauge is the WAL's size after each commit: during one, the WAL holds that
         * whole transaction, which may pass the bound until the commit truncates it. */
        (void)wal;
        if (i % 100 == 0) {
            long sz = (long)metric(g, "tidegate_journal_wal_bytes");
            if (sz > *wal_max)
                *wal_max = sz;
        }
    }
}

static void wal_bounded(void **state)
{
    struct env *e = *state;
    enum { N = 30000, DOWN = 20000, BOUND = 64 * 1024 };
    struct gw g;
    const char *const sets[] = {"journal.max_bytes=512K", NULL};
    gw_start(e, &g, sets);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", e->journal);
    long wal_max = 0;
    assert_int_equal(tg_harness_devkafka_outage_begin(e->dk), 0);
    offer_n(&g, 0, DOWN, wal, &wal_max);
    wait_metric(&g, "tidegate_journal_commits_total",
                metric(&g, "tidegate_journal_commits_total") + 2, 10000);
    double journaled = metric(&g, "tidegate_journal_written_bytes_total");
    assert_int_equal(tg_harness_devkafka_outage_end(e->dk), 0);
    offer_n(&g, DOWN, N, wal, &wal_max);
    wait_metric(&g, "tidegate_messages_delivered_total", N, 60000);
    double gauge = metric(&g, "tidegate_journal_wal_bytes");
    long db = file_size(e->journal), w = file_size(wal);
    fprintf(stderr, "%d readings, %d during an outage (%.0f segment bytes journaled): journal "
                    "%ld bytes, WAL %ld bytes at the end, %ld the largest after a commit: %.1f "
                    "bytes on disk per reading\n",
            N, DOWN, journaled, db, w, wal_max, (double)(db + (w > 0 ? w : 0)) / N);
    assert_true(journaled > BOUND); /* the WAL had more than its bound to hold */
    assert_true(wal_max <= BOUND);
    assert_true(gauge <= BOUND);
    gw_stop(&g);
    assert_true(file_size(wal) <= 0);
}

/* The dead letter of an oversized payload states the configured limit, not the length it
 * was cut to (it always said 65536 bytes). */
static void too_large_reason_states_limit(void **state)
{
    struct env *e = *state;
    struct gw g;
    gw_start(e, &g, NULL); /* validate.max_payload_bytes = 4096 */
    size_t len = 100 * 1024;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, 'x', len);
    assert_int_equal(tg_pipeline_offer(g.pl, "telemetry/dev-big", 17, (const uint8_t *)big, len,
                                       now_ms()),
                     TG_OK);
    free(big);
    wait_metric(&g, "tidegate_dlq_delivered_total", 1, 30000);
    gw_stop(&g);
    char *out = consume(e, "telemetry.dlq", "%h\\n", 1);
    if (!strstr(out, "reason-text=payload larger than the limit of 4096 bytes (the dead letter "
                     "keeps the first 65536 bytes)"))
        fail_msg("reason text: %s", out);
    free(out);
}

int main(void)
{
    tg_log_set_level(TG_LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(corrupt_rows_dropped_rest_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(second_gateway_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(wal_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(too_large_reason_states_limit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
