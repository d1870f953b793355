/*
 * test_worker_bigckpt.c - a checkpoint that outgrows a transaction (issue 9's worker).
 *
 * A flood of new device ids (one record each, produced straight to the input topic) makes
 * every partition's next checkpoint as large as its number of series. The worker spreads
 * such a checkpoint over transactions of at most [worker] checkpoint_max_records snapshot
 * records (consumer_txn.c), so no transaction grows with the flood. Checked:
 *   1. every partition's checkpoint completes (a @ckpt marker at the input's end, followed by
 *      its offset marker), without an abort;
 *   2. no committed transaction carried more than the bound (the histogram
 *      tidegate_worker_transaction_state_records: all of them in the bucket le="1000" for a
 *      bound of 900, while a partition holds 2,000 series), and the parts were counted;
 *   3. a second worker restores every series of the spread checkpoints;
 *   4. an orphaned spread checkpoint (a @begin and snapshots, then an offset marker without
 *      the @ckpt: its owner died between two of its transactions and the next owner went on)
 *      is dropped by the restore: the third worker restores exactly as many series;
 *   5. the same flood processed with no checkpoint yet, then SIGTERM: the stop's commit
 *      spreads every partition's checkpoint, exits 0, and a next worker restores it all.
 *
 * Arguments: "real" runs it on the real Kafka broker tier. For measurements by hand,
 * TG_BIGCKPT_SERIES (default 12,000), TG_BIGCKPT_MAX_RECORDS (default 900; a huge value
 * gives the single transaction of before) and TG_BIGCKPT_SNAPSHOT_MS (snapshot_interval_ms,
 * default 1000) change the flood, the bound and the interval; the figures are
 * printed (README, "State and snapshots").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "worker_fixture.h"

#define PARTITIONS WFX_PARTITIONS

static bool g_real;

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : def;
}

/* What the state topic says about each partition, read in order. */
struct state_view {
    int64_t ckpt[PARTITIONS];      /* the last @ckpt followed by an @offset, or -1 */
    int64_t pending_ckpt[PARTITIONS];
    int64_t offset[PARTITIONS];    /* the last @offset, or -1 */
    char *series_key;              /* one series snapshot of partition 0 (key, value) */
    void *series_value;
    size_t series_value_len;
};

static bool has_suffix(const rd_kafka_message_t *msg, const char *suffix)
{
    size_t n = strlen(suffix);
    return msg->key && msg->key_len > n &&
           memcmp((const char *)msg->key + msg->key_len - n, suffix, n) == 0;
}

static int64_t value_offset(const rd_kafka_message_t *msg)
{
    char buf[32];
    size_t len = msg->len < sizeof buf - 1 ? msg->len : sizeof buf - 1;
    memcpy(buf, msg->payload ? msg->payload : "", len);
    buf[len] = '\0';
    return strtoll(buf, NULL, 10);
}

static void view_record(struct state_view *sv, const rd_kafka_message_t *msg)
{
    int32_t p = msg->partition;
    if (p < 0 || p >= PARTITIONS || !msg->key)
        return;
    if (has_suffix(msg, "/@ckpt")) {
        sv->pending_ckpt[p] = value_offset(msg);
    } else if (has_suffix(msg, "/@offset")) {
        sv->offset[p] = value_offset(msg);
        if (sv->pending_ckpt[p] >= 0)
            sv->ckpt[p] = sv->pending_ckpt[p];
        sv->pending_ckpt[p] = -1;
    } else if (p == 0 && !sv->series_key && msg->payload && msg->len > 0 &&
               memchr(msg->key, '@', msg->key_len) == NULL && msg->key_len > 3) {
        sv->series_key = strndup(msg->key, msg->key_len);
        sv->series_value = malloc(msg->len);
        assert_non_null(sv->series_value);
        memcpy(sv->series_value, msg->payload, msg->len);
        sv->series_value_len = msg->len;
    }
}

static void view_free(struct state_view *sv)
{
    free(sv->series_key);
    free(sv->series_value);
    memset(sv, 0, sizeof *sv);
}

/* Reads the state topic (read_committed) from the beginning to its end. */
static void view_read(const char *bs, const char *topic, struct state_view *sv)
{
    view_free(sv);
    for (int p = 0; p < PARTITIONS; p++)
        sv->ckpt[p] = sv->pending_ckpt[p] = sv->offset[p] = -1;
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *kv[][2] = {{"bootstrap.servers", bs},       {"group.id", "bigckpt-reader"},
                           {"isolation.level", "read_committed"},
                           {"enable.partition.eof", "true"}, {"enable.auto.commit", "false"},
                           {"fetch.wait.max.ms", "10"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        assert_int_equal(rd_kafka_conf_set(c, kv[i][0], kv[i][1], err, sizeof err),
                         RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
    assert_non_null(rk);
    int64_t hi[PARTITIONS];
    bool done[PARTITIONS];
    int pending = 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++) {
        int64_t lo;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], 10000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        done[p] = hi[p] <= lo;
        if (!done[p]) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            pending++;
        }
    }
    assert_int_equal(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t deadline = tg_harness_now_ms() + 60000;
    while (pending > 0) {
        if (tg_harness_now_ms() > deadline)
            fail_msg("reading %s: %d partitions not at their end after 60 s", topic, pending);
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg)
            continue;
        int32_t p = msg->partition;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            int64_t lo2, hi2;
            if (rd_kafka_get_watermark_offsets(rk, topic, p, &lo2, &hi2) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR &&
                hi2 > hi[p])
                hi[p] = hi2;
            if (!done[p] && msg->offset >= hi[p]) {
                done[p] = true;
                pending--;
            }
        } else if (msg->err) {
            fail_msg("reading %s: %s", topic, rd_kafka_message_errstr(msg));
        } else {
            view_record(sv, msg);
        }
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

struct ckpt_wait {
    const char *bs;
    const int64_t *hi;
    struct state_view *sv;
};

/* Every partition with input has a complete checkpoint at its end. */
static bool checkpoints_complete(void *ud)
{
    struct ckpt_wait *cw = ud;
    view_read(cw->bs, "a.state", cw->sv);
    for (int p = 0; p < PARTITIONS; p++)
        if (cw->hi[p] > 0 && cw->sv->ckpt[p] < cw->hi[p])
            return false;
    return true;
}

/* The sum of "restored N series snapshot" over the worker's log, once it logged one per
 * assignment covering all partitions (a single worker in its group gets them at once). */
static long restored_series(const struct wfx_worker *w)
{
    FILE *f = fopen(tg_harness_proc_stderr_path(w->proc), "r");
    assert_non_null(f);
    char line[1024];
    long sum = 0;
    while (fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "restored ");
        long n;
        if (at && strstr(at, "series snapshot") && sscanf(at, "restored %ld", &n) == 1)
            sum += n;
    }
    fclose(f);
    return sum;
}

static bool restored_logged(void *ud)
{
    const struct wfx_worker *w = ud;
    return tg_harness_file_contains(tg_harness_proc_stderr_path(w->proc), "series snapshot");
}

/* Appends, without a transaction, an orphaned spread checkpoint to partition 0 of the state
 * topic: @begin, one snapshot under a series key no device has, and an offset marker equal
 * to the partition's current one (a next owner that committed without a checkpoint). */
static void append_orphan(const char *bs, const struct state_view *sv)
{
    assert_non_null(sv->series_key);
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(c, "bootstrap.servers", bs, err, sizeof err),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    assert_non_null(rk);
    char off[32];
    snprintf(off, sizeof off, "%lld", (long long)sv->offset[0]);
    const char *orphan_key = "0/orphan-device/temp";
    struct {
        const char *key;
        const void *value;
        size_t len;
    } recs[] = {{"0/@begin", off, strlen(off)},
                {orphan_key, sv->series_value, sv->series_value_len},
                {"0/@offset", off, strlen(off)}};
    for (size_t i = 0; i < sizeof recs / sizeof recs[0]; i++)
        assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("a.state"),
                                           RD_KAFKA_V_PARTITION(0),
                                           RD_KAFKA_V_KEY(recs[i].key, strlen(recs[i].key)),
                                           RD_KAFKA_V_VALUE((void *)recs[i].value, recs[i].len),
                                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                           RD_KAFKA_V_END),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(rk);
}

/* TG_BIGCKPT_ONLY=spread or =stop runs one of the two (measurements by hand). */
static bool wanted(const char *name)
{
    const char *only = getenv("TG_BIGCKPT_ONLY");
    return !only || !*only || strcmp(only, name) == 0;
}

static void test_flood_checkpoint_spread(void **state)
{
    (void)state;
    if (!wanted("spread"))
        skip();
    long series = env_long("TG_BIGCKPT_SERIES", 12000);
    long max_records = env_long("TG_BIGCKPT_MAX_RECORDS", 900);
    long snapshot_ms = env_long("TG_BIGCKPT_SNAPSHOT_MS", 1000);
    struct wfx_cluster *cl = wfx_cluster_start(g_real);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-bigckpt");
    assert_non_null(dir);
    /* One second of event time: one record of each device, a new series each. */
    struct wfx_input in = {.n_devices = (int)series, .base_ts_ms = wfx_recent_base_ms(60)};
    assert_int_equal(wfx_produce(bs, "telemetry", &in, 0, 1), (size_t)series);
    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);

    char extra[256];
    snprintf(extra, sizeof extra,
             "[worker]\nsnapshot_interval_ms = %ld\ncheckpoint_max_records = %ld\n"
             "[engine]\nmax_series = %ld\n",
             snapshot_ms, max_records, series + 1000);
    int64_t t0 = tg_harness_now_ms();
    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "tidegate-anomaly", "a.", extra);
    struct state_view sv = {0};
    struct ckpt_wait cw = {bs, hi, &sv};
    assert_true(tg_harness_wait_until(checkpoints_complete, &cw, 110000));
    int64_t t_done = tg_harness_now_ms();

    char *body = wfx_scrape(w);
    double aborts = wfx_metric(body, "tidegate_worker_transaction_aborts_total");
    double parts = wfx_metric(body, "tidegate_worker_state_checkpoint_parts_total");
    double txns = wfx_metric(body, "tidegate_worker_transaction_state_records_count");
    double small = wfx_metric(body, "tidegate_worker_transaction_state_records_bucket{le=\"1000\"}");
    double commit_s = wfx_metric(body, "tidegate_worker_transaction_commit_seconds_sum");
    double commits = wfx_metric(body, "tidegate_worker_transaction_commit_seconds_count");
    double snaps = wfx_metric(body, "tidegate_worker_state_snapshots_total");
    double snap_bytes = wfx_metric(body, "tidegate_worker_state_snapshot_bytes_total");
    fprintf(stderr,
            "bigckpt (%s): %ld series, bound %ld: checkpoints complete %.1f s after start; "
            "%.0f transactions (%.0f checkpoint parts, %.0f with <= 1000 state records), "
            "commit time %.3f s total, mean %.1f ms; %.0f state records, %.1f MB; %.0f aborts\n",
            g_real ? "real Kafka" : "devkafka", series, max_records, (double)(t_done - t0) / 1e3,
            txns, parts, small, commit_s, commits > 0 ? commit_s / commits * 1e3 : 0, snaps,
            snap_bytes / 1e6, aborts);
    /* The distribution of commit times, for the README's figures. */
    for (const char *line = body; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (strncmp(line, "tidegate_worker_transaction_commit_seconds_bucket",
                    strlen("tidegate_worker_transaction_commit_seconds_bucket")) == 0 ||
            strncmp(line, "tidegate_worker_transaction_state_records_bucket",
                    strlen("tidegate_worker_transaction_state_records_bucket")) == 0)
            fprintf(stderr, "  %.*s\n", (int)len, line);
        line = nl ? nl + 1 : NULL;
    }
    free(body);
    assert_true(aborts == 0);
    if (max_records < 1000 && series / PARTITIONS > 1000) {
        assert_true(parts >= (double)(series / max_records));
        assert_true(small == txns); /* no transaction above the bound */
    }
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w)));

    /* A next owner restores every series (and the 6 partition states). */
    struct wfx_worker *w2 = wfx_worker_start(dir, "w2", "w2", bs, "tidegate-anomaly", "a.", extra);
    assert_true(tg_harness_wait_until(restored_logged, w2, 60000));
    long restored = restored_series(w2);
    fprintf(stderr, "w2 restored %ld\n", restored);
    assert_int_equal(restored, series + PARTITIONS);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w2)));

    /* An orphaned spread checkpoint is dropped. */
    view_read(bs, "a.state", &sv);
    append_orphan(bs, &sv);
    struct wfx_worker *w3 = wfx_worker_start(dir, "w3", "w3", bs, "tidegate-anomaly", "a.", extra);
    assert_true(tg_harness_wait_until(restored_logged, w3, 60000));
    restored = restored_series(w3);
    fprintf(stderr, "w3 restored %ld\n", restored);
    assert_int_equal(restored, series + PARTITIONS);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w3)));

    view_free(&sv);
    wfx_worker_destroy(w);
    wfx_worker_destroy(w2);
    wfx_worker_destroy(w3);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

/* The whole flood processed before any checkpoint, then SIGTERM: the stop's commit carries
 * every partition's checkpoint (a rolling restart after a flood). */
static void test_flood_checkpoint_at_stop(void **state)
{
    (void)state;
    if (!wanted("stop"))
        skip();
    long series = env_long("TG_BIGCKPT_SERIES", 12000);
    long max_records = env_long("TG_BIGCKPT_MAX_RECORDS", 900);
    struct wfx_cluster *cl = wfx_cluster_start(g_real);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-bigckpt-stop");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = (int)series, .base_ts_ms = wfx_recent_base_ms(60)};
    assert_int_equal(wfx_produce(bs, "telemetry", &in, 0, 1), (size_t)series);
    int64_t hi[PARTITIONS];
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    char extra[256];
    snprintf(extra, sizeof extra,
             "[worker]\nsnapshot_interval_ms = 3600000\ncheckpoint_max_records = %ld\n"
             "[engine]\nmax_series = %ld\n",
             max_records, series + 1000);
    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "tidegate-anomaly", "a.", extra);
    assert_true(wfx_wait_processed(bs, "a.state", hi, PARTITIONS, 200000));
    int64_t t0 = tg_harness_now_ms();
    int status = wfx_worker_stop(w);
    int64_t t_stop = tg_harness_now_ms();
    struct state_view sv = {0};
    view_read(bs, "a.state", &sv);
    int complete = 0;
    for (int p = 0; p < PARTITIONS; p++)
        complete += hi[p] > 0 && sv.ckpt[p] >= hi[p];
    fprintf(stderr, "bigckpt stop (%s): %ld series, bound %ld: SIGTERM took %.1f s, exit %s, "
                    "%d of %d partitions checkpointed at their end\n",
            g_real ? "real Kafka" : "devkafka", series, max_records,
            (double)(t_stop - t0) / 1e3, tg_harness_exited_ok(status) ? "ok" : "not ok",
            complete, PARTITIONS);
    assert_true(tg_harness_exited_ok(status));
    assert_int_equal(complete, PARTITIONS);
    struct wfx_worker *w2 = wfx_worker_start(dir, "w2", "w2", bs, "tidegate-anomaly", "a.", extra);
    assert_true(tg_harness_wait_until(restored_logged, w2, 120000));
    long restored = restored_series(w2);
    fprintf(stderr, "w2 restored %ld\n", restored);
    assert_int_equal(restored, series + PARTITIONS);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w2)));
    view_free(&sv);
    wfx_worker_destroy(w);
    wfx_worker_destroy(w2);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

int main(int argc, char **argv)
{
    g_real = argc > 1 && strcmp(argv[1], "real") == 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_flood_checkpoint_spread, teardown),
        cmocka_unit_test_teardown(test_flood_checkpoint_at_stop, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
