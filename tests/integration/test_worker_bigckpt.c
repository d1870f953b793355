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

/* One record of the state topic, read in order (a wfx_read_topic callback). */
static void view_record(void *ud, const rd_kafka_message_t *msg)
{
    struct state_view *sv = ud;
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
    wfx_read_topic(bs, topic, view_record, sv);
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

/* A cluster (real Kafka or devkafka, per the argument) and a new scratch directory *dir, with
 * one second of event time in the input topic: one record of each of series devices, a new
 * series each. The input's high watermarks into hi. */
static struct wfx_cluster *flood_start(const char *dir_name, long series, char **dir, int64_t *hi)
{
    struct wfx_cluster *cl = wfx_cluster_start(g_real);
    const char *bs = wfx_cluster_bootstrap(cl);
    *dir = tg_harness_tmpdir_new(dir_name);
    assert_non_null(*dir);
    struct wfx_input in = {.n_devices = (int)series, .base_ts_ms = wfx_recent_base_ms(60)};
    assert_int_equal(wfx_produce(bs, "telemetry", &in, 0, 1), (size_t)series);
    assert_int_equal(wfx_watermarks(bs, "telemetry", hi, PARTITIONS), PARTITIONS);
    return cl;
}

/* A next owner (worker name in dir) restores every series of the flood and the partition
 * states from the state topic, then stops cleanly. Returned for wfx_worker_destroy. */
static struct wfx_worker *next_owner_restores_all(const char *dir, const char *name,
                                                  const char *bs, const char *extra, long series,
                                                  int timeout_ms)
{
    struct wfx_worker *w = wfx_worker_start(dir, name, name, bs, "tidegate-anomaly", "a.", extra);
    assert_true(tg_harness_wait_until(restored_logged, w, timeout_ms));
    long restored = restored_series(w);
    fprintf(stderr, "%s restored %ld\n", name, restored);
    assert_int_equal(restored, series + PARTITIONS);
    assert_true(tg_harness_exited_ok(wfx_worker_stop(w)));
    return w;
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
    char *dir;
    int64_t hi[PARTITIONS];
    struct wfx_cluster *cl = flood_start("worker-bigckpt", series, &dir, hi);
    const char *bs = wfx_cluster_bootstrap(cl);

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
    struct wfx_worker *w2 = next_owner_restores_all(dir, "w2", bs, extra, series, 60000);

    /* An orphaned spread checkpoint is dropped. */
    view_read(bs, "a.state", &sv);
    append_orphan(bs, &sv);
    struct wfx_worker *w3 = next_owner_restores_all(dir, "w3", bs, extra, series, 60000);

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
    char *dir;
    int64_t hi[PARTITIONS];
    struct wfx_cluster *cl = flood_start("worker-bigckpt-stop", series, &dir, hi);
    const char *bs = wfx_cluster_bootstrap(cl);
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
    struct wfx_worker *w2 = next_owner_restores_all(dir, "w2", bs, extra, series, 120000);
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
