/* Unit tests for the worker engine (worker/engine.c, engine_config.c, snapshot.c): config
 * errors, windows and the watermark with out-of-order input, the alert lifecycle, and the
 * determinism of snapshot + restore. Detector behaviour is in test_detect.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "test_engine_util.h"

#define TG_ENGINE_SNAPSHOT_MAX_TEST 2048

/* ---- config ------------------------------------------------------------------------------ */

static void config_defaults_build(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    assert_non_null(ec);
    tg_engine_config_destroy(ec);
}

/* Loads ini from a file and builds the engine config, which must fail with an error that
 * names "<file>:<line_key>" (line_key is "LINE: [SECTION] KEY: ...") and holds also, if
 * given. */
static void expect_config_error(const char *ini, const char *line_key, const char *also)
{
    char path[] = "/tmp/test_engine_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, ini, strlen(ini)), (ssize_t)strlen(ini));
    close(fd);
    size_t n;
    const struct tg_config_key *keys = tg_engine_config_keys(&n);
    struct tg_config *cfg = tg_config_new(keys, n);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, path), TG_OK);
    char err[512];
    struct tg_engine_config *ec = tg_engine_config_from(cfg, err, sizeof err);
    assert_null(ec);
    char want[256];
    snprintf(want, sizeof want, "%s:%s", path, line_key);
    if (!strstr(err, want) || (also && !strstr(err, also)))
        fail_msg("error was: %s", err);
    tg_config_destroy(cfg);
    unlink(path);
}

static void config_bad_number_names_file_line_key(void **state)
{
    (void)state;
    expect_config_error("[detect]\nlevel = on\n\n[rules.2]\nmatch = temp*\nshift_threshold = lots\n",
                        "6: [rules.2] shift_threshold: expected a number", "\"lots\"");
}

/* drift_min is a size in the metric's unit: negative or not a number is refused with
 * file:line:key; 0 (off) and a positive size load. */
static void config_drift_min_names_file_line_key(void **state)
{
    (void)state;
    static const char *const bad[] = {"-0.5", "wide", "nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char ini[128];
        snprintf(ini, sizeof ini, "[rules.3]\nmatch = humidity*\ndrift_min = %s\n", bad[i]);
        expect_config_error(ini, "3: [rules.3] drift_min: expected a number >= 0", NULL);
    }
    char err[512];
    const char *ok[] = {"rules.1.match=temp*", "rules.1.drift_min=0.6", "detect.drift_min=0", NULL};
    struct tg_engine_config *ec = make_config(ok, err, sizeof err);
    if (!ec)
        fail_msg("%s", err);
    tg_engine_config_destroy(ec);
}

static void config_lateness_beyond_window_refused(void **state)
{
    (void)state;
    char err[512];
    const char *sets[] = {"window.size_ms=10000", "window.allowed_lateness_ms=20000", NULL};
    assert_null(make_config(sets, err, sizeof err));
    assert_non_null(strstr(err, "--set: [window] allowed_lateness_ms"));
    const char *bad[] = {"alert.threshold=1.5", NULL};
    assert_null(make_config(bad, err, sizeof err));
    assert_non_null(strstr(err, "[alert] threshold"));
}

/* ---- windows ----------------------------------------------------------------------------- */

static void windows_tumble_with_out_of_order_input(void **state)
{
    (void)state;
    char err[512];
    const char *sets[] = {"window.size_ms=60000", "window.allowed_lateness_ms=5000", NULL};
    struct tg_engine_config *ec = make_config(sets, err, sizeof err);
    assert_non_null(ec);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    assert_int_equal(tg_engine_partition_add(en, 3), TG_OK);
    /* Window [0, 60 s): 10 s, 30 s, then 62 s opens the next window; 58 s is 4 s behind the
     * highest time and within the lateness: merged into the first window. */
    assert_int_equal(feed(en, 3, "d1", "t", 10000, 1.0), TG_OK);
    assert_int_equal(feed(en, 3, "d1", "t", 30000, 5.0), TG_OK);
    assert_int_equal(feed(en, 3, "d1", "t", 62000, 7.0), TG_OK);
    assert_int_equal(feed(en, 3, "d1", "t", 58000, 3.0), TG_OK);
    assert_int_equal(r.aggregates, 0);
    /* 66 s: watermark 61 s passes the end of window 1. 50 s is now later than the
     * watermark: counted, not merged. */
    assert_int_equal(feed(en, 3, "d2", "t", 66000, 2.0), TG_OK);
    assert_int_equal(r.aggregates, 1);
    assert_string_equal(r.lines[0], "G {\"device\":\"d1\",\"metric\":\"t\",\"window_start\":0,"
                                    "\"window_end\":60000,\"count\":3,\"min\":1,\"max\":5,"
                                    "\"mean\":3,\"last\":3}");
    assert_int_equal(feed(en, 3, "d1", "t", 50000, 100.0), TG_OK);
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    assert_int_equal(st.late_records, 1);
    assert_int_equal(st.backward_ts, 2); /* 58 s and 50 s, behind d1's 62 s */
    assert_int_equal(r.aggregates, 1);
    /* Flush (replay's end of input): the open windows of d1 and d2, sorted by device. */
    tg_engine_flush(en);
    assert_int_equal(r.aggregates, 3);
    assert_non_null(strstr(r.lines[1], "\"device\":\"d1\""));
    assert_non_null(strstr(r.lines[1], "\"count\":1,\"min\":7"));
    assert_non_null(strstr(r.lines[2], "\"device\":\"d2\""));
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

static void windows_emit_in_key_order_and_per_partition(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en, 0);
    tg_engine_partition_add(en, 1);
    const char *devs[] = {"zz", "aa", "mm", "bb"};
    for (int i = 0; i < 4; i++)
        feed(en, 0, devs[i], "x", 1000 + i, i);
    feed(en, 1, "p1dev", "x", 1000, 1);
    /* Partition 1's watermark moves: only its own window closes. */
    feed(en, 1, "p1dev", "x", 70000, 1);
    assert_int_equal(r.aggregates, 1);
    assert_non_null(strstr(r.lines[0], "p1dev"));
    feed(en, 0, "zz", "x", 70000, 1);
    assert_int_equal(r.aggregates, 5);
    const char *order[] = {"\"aa\"", "\"bb\"", "\"mm\"", "\"zz\""};
    for (int i = 0; i < 4; i++)
        assert_non_null(strstr(r.lines[1 + i], order[i]));
    /* Reading for an untracked partition, or with an absurd time: refused. */
    assert_int_equal(feed(en, 9, "d", "x", 1, 1), TG_ERR_USAGE);
    assert_int_equal(feed(en, 1, "d", "x", INT64_MAX, 1), TG_ERR_OUT_OF_RANGE);
    assert_int_equal(feed(en, 1, "d", "x", INT64_MIN, 1), TG_ERR_OUT_OF_RANGE);
    struct tg_metric none[1];
    struct tg_reading empty = {.device = "d", .ts_ms = 1, .n_metrics = 0, .metrics = none};
    assert_int_equal(tg_engine_process(en, 1, &empty), TG_ERR_MISSING_FIELD);
    assert_int_equal(feed(en, 1, "", "x", 1, 1), TG_ERR_BAD_NAME);
    assert_int_equal(feed(en, 1, "a/b", "x", 1, 1), TG_ERR_BAD_NAME);
    assert_int_equal(feed(en, 1, "d", "", 1, 1), TG_ERR_BAD_NAME);
    assert_int_equal(feed(en, 1, "d", "x", 1, 1e200), TG_ERR_OUT_OF_RANGE);
    tg_engine_partition_drop(en, 0);
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    assert_int_equal(st.series, 1);
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

/* ---- alert lifecycle --------------------------------------------------------------------- */

static void spike_is_one_alert_open_then_close(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en, 0);
    struct rng g = {42};
    int64_t ts = 1700000000000;
    for (int i = 0; i < 2000; i++, ts += 1000) {
        double v = 20 + 0.3 * rng_gauss(&g);
        if (i == 1500)
            v += 6;
        feed(en, 0, "dev", "temp", ts, v);
    }
    size_t opens = rec_count(&r, "A open"), closes = rec_count(&r, "A close");
    if (opens != 1 || closes != 1)
        rec_dump(&r, 20);
    assert_int_equal(opens, 1);
    assert_int_equal(closes, 1);
    char want[128];
    snprintf(want, sizeof want, "A open dev/temp/level/%lld ", (long long)(1700000000000 + 1500000));
    size_t i = 0;
    while (strncmp(r.lines[i], "A open", 6) != 0)
        i++;
    if (strncmp(r.lines[i], want, strlen(want)) != 0)
        fail_msg("open line: %s", r.lines[i]);
    assert_non_null(strstr(r.lines[i], "\"state\":\"open\""));
    assert_non_null(strstr(r.lines[i], "\"detectors\":{\"level\":"));
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

/* ---- snapshots and determinism ----------------------------------------------------------- */

/* A stream with everything in it: several devices and metrics, noise, a spike, a shift, a
 * flatline, a gap, out-of-order and late points. Point k of it, deterministic. */
static void stream_point(int k, const char **device, const char **metric, int64_t *ts,
                         double *value)
{
    static const char *const devs[] = {"a", "b", "c"};
    static const char *const mets[] = {"temp", "hum"};
    struct rng g = {(uint64_t)k * 7919 + 1};
    int d = k % 3, m = (k / 3) % 2;
    int step = k / 6;
    *device = devs[d];
    *metric = mets[m];
    *ts = 1700000000000 + (int64_t)step * 1000 + d * 10;
    if (k % 97 == 5)
        *ts -= 3000; /* out of order, within the lateness */
    if (k % 211 == 7)
        *ts -= 30000; /* late */
    if (d == 2 && step > 600 && step < 700)
        *ts += 3600000; /* device c jumps an hour ahead for a while */
    double v = (m ? 50 : 20) + 0.5 * rng_gauss(&g);
    if (step == 400)
        v += 10;
    if (d == 1 && step > 800 && step < 900)
        v += 4;
    if (d == 0 && m == 0 && step > 1000 && step < 1100)
        v = 20.25;
    *value = v;
}

static void restored_engine_continues_byte_for_byte(void **state)
{
    (void)state;
    char err[512];
    const char *sets[] = {"detect.seasonal=on", "alert.update_interval_ms=5000", NULL};
    struct tg_engine_config *ec = make_config(sets, err, sizeof err);
    assert_non_null(ec);
    const int total = 1200 * 6, cut = 530 * 6 + 2;
    /* Reference: one engine, never stopped. */
    struct rec ref = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &ref);
    tg_engine_partition_add(en, 0);
    for (int k = 0; k < total; k++) {
        const char *dev, *met;
        int64_t ts;
        double v;
        stream_point(k, &dev, &met, &ts, &v);
        feed(en, 0, dev, met, ts, v);
        if (k % 1000 == 999)
            tg_engine_sweep(en, ts + 1000);
    }
    tg_engine_flush(en);
    tg_engine_destroy(en);

    /* The same input, snapshots taken now and then; the engine dies at `cut` and a new one
     * restores the latest snapshot (taken at cut) and goes on. */
    struct rec a = {0}, b = {0};
    struct store st = {0};
    en = tg_engine_new(ec, rec_emit, &a);
    tg_engine_partition_add(en, 0);
    for (int k = 0; k < cut; k++) {
        const char *dev, *met;
        int64_t ts;
        double v;
        stream_point(k, &dev, &met, &ts, &v);
        feed(en, 0, dev, met, ts, v);
        if (k % 1000 == 999)
            tg_engine_sweep(en, ts + 1000);
        if (k % 333 == 0)
            tg_engine_snapshot_dirty(en, store_put, &st);
    }
    tg_engine_snapshot_dirty(en, store_put, &st);
    tg_engine_destroy(en);
    en = tg_engine_new(ec, rec_emit, &b);
    tg_engine_partition_add(en, 0);
    store_restore_all(en, &st);
    for (int k = cut; k < total; k++) {
        const char *dev, *met;
        int64_t ts;
        double v;
        stream_point(k, &dev, &met, &ts, &v);
        feed(en, 0, dev, met, ts, v);
        if (k % 1000 == 999)
            tg_engine_sweep(en, ts + 1000);
    }
    tg_engine_flush(en);
    tg_engine_destroy(en);

    assert_true(ref.alerts >= 4); /* the stream does hold incidents */
    assert_true(ref.aggregates > 50);
    assert_int_equal(a.n + b.n, ref.n);
    for (size_t i = 0; i < ref.n; i++) {
        const char *got = i < a.n ? a.lines[i] : b.lines[i - a.n];
        if (strcmp(got, ref.lines[i]) != 0)
            fail_msg("output %zu differs:\n  ref %s\n  got %s", i, ref.lines[i], got);
    }
    rec_free(&ref);
    rec_free(&a);
    rec_free(&b);
    store_free(&st);
    tg_engine_config_destroy(ec);
}

static void restore_refuses_garbage(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en, 1);
    const unsigned char junk[] = {1, 2, 3, 4, 5};
    assert_int_equal(tg_engine_restore(en, "1/dev/temp", 10, junk, sizeof junk),
                     TG_ERR_MALFORMED);
    assert_int_equal(tg_engine_restore(en, "1/", 2, junk, sizeof junk), TG_ERR_MALFORMED);
    assert_int_equal(tg_engine_restore(en, "x/dev/temp", 10, junk, sizeof junk),
                     TG_ERR_MALFORMED);
    assert_int_equal(tg_engine_restore(en, "1/dev", 5, junk, sizeof junk), TG_ERR_MALFORMED);
    assert_int_equal(tg_engine_restore(en, "2/dev/temp", 10, junk, sizeof junk), TG_ERR_USAGE);
    assert_int_equal(tg_engine_restore(en, "1/dev/temp", 10, NULL, 0), TG_OK); /* tombstone */
    /* A truncated real snapshot is refused too. */
    feed(en, 1, "dev", "temp", 1000, 1);
    struct store st = {0};
    tg_engine_snapshot_dirty(en, store_put, &st);
    assert_int_equal(st.n, 2);
    for (size_t i = 0; i < st.n; i++)
        assert_int_equal(tg_engine_restore(en, st.v[i].key, st.v[i].key_len, st.v[i].value,
                                           st.v[i].value_len - 1),
                         TG_ERR_MALFORMED);
    /* A value that decodes but holds what the engine never writes: an event time far
     * beyond its range (bytes 40..47: last_ts, see snapshot.c), or a NaN mean. */
    for (size_t i = 0; i < st.n; i++) {
        if (st.v[i].key_len < 3)
            continue;
        unsigned char bad[TG_ENGINE_SNAPSHOT_MAX_TEST];
        assert_true(st.v[i].value_len <= sizeof bad);
        memcpy(bad, st.v[i].value, st.v[i].value_len);
        memset(bad + 40, 0xff, 7);
        bad[47] = 0x7f;
        assert_int_equal(tg_engine_restore(en, st.v[i].key, st.v[i].key_len, bad,
                                           st.v[i].value_len),
                         TG_ERR_MALFORMED);
        memcpy(bad, st.v[i].value, st.v[i].value_len);
        memset(bad + 56, 0xff, 8); /* shift_mean: a NaN */
        assert_int_equal(tg_engine_restore(en, st.v[i].key, st.v[i].key_len, bad,
                                           st.v[i].value_len),
                         TG_ERR_MALFORMED);
        memcpy(bad, st.v[i].value, st.v[i].value_len);
        memset(bad + 172, 0xff, 8); /* drift_var (detect_drift.c): a NaN */
        assert_int_equal(tg_engine_restore(en, st.v[i].key, st.v[i].key_len, bad,
                                           st.v[i].value_len),
                         TG_ERR_MALFORMED);
        /* A version 2 value (before the drift test's fields) is refused, not misread. */
        memcpy(bad, st.v[i].value, st.v[i].value_len);
        bad[0] = 2;
        assert_int_equal(tg_engine_restore(en, st.v[i].key, st.v[i].key_len, bad,
                                           st.v[i].value_len - 32),
                         TG_ERR_MALFORMED);
        /* And the untouched value still restores. */
        assert_int_equal(tg_engine_restore(en, st.v[i].key, st.v[i].key_len, st.v[i].value,
                                           st.v[i].value_len),
                         TG_OK);
    }
    struct tg_engine_stats s;
    tg_engine_stats(en, &s);
    assert_int_equal(s.series, 1);
    store_free(&st);
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

static void idle_series_are_evicted_with_a_tombstone(void **state)
{
    (void)state;
    char err[512];
    const char *sets[] = {"engine.series_idle_ms=7200000", NULL};
    struct tg_engine_config *ec = make_config(sets, err, sizeof err);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en, 0);
    struct rng g = {77};
    int64_t ts = 1700000000000;
    /* "gone" varies, then sticks with an alert open (flatline), then stops reporting;
     * "busy" reports every 10 s for five hours. */
    for (int i = 0; i < 300; i++, ts += 10000) {
        feed(en, 0, "gone", "t", ts, 20 + rng_gauss(&g));
        feed(en, 0, "busy", "t", ts, 20 + rng_gauss(&g));
    }
    for (int i = 0; i < 15; i++, ts += 10000) {
        feed(en, 0, "gone", "t", ts, 5);
        feed(en, 0, "busy", "t", ts, 20 + rng_gauss(&g));
    }
    assert_int_equal(rec_count(&r, "A open gone/t/"), 1);
    struct store st = {0};
    tg_engine_snapshot_dirty(en, store_put, &st);
    for (int i = 0; i < 5 * 360; i++, ts += 10000)
        feed(en, 0, "busy", "t", ts, 20 + rng_gauss(&g));
    struct tg_engine_stats s;
    tg_engine_stats(en, &s);
    assert_int_equal(s.series_evicted, 1);
    assert_int_equal(s.series, 1);
    /* Its open alert was closed when it was forgotten, not left open forever... */
    assert_int_equal(rec_count(&r, "A close gone/t/"), 1);
    /* ...and the state topic gets a tombstone for it. */
    tg_engine_snapshot_dirty(en, store_put, &st);
    bool found = false;
    for (size_t i = 0; i < st.n; i++)
        if (st.v[i].key_len == 8 && memcmp(st.v[i].key, "0/gone/t", 8) == 0) {
            assert_int_equal(st.v[i].value_len, 0);
            found = true;
        }
    assert_true(found);
    store_free(&st);
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

static void series_beyond_max_series_are_counted_not_tracked(void **state)
{
    (void)state;
    char err[512];
    const char *sets[] = {"engine.max_series=2", NULL};
    struct tg_engine_config *ec = make_config(sets, err, sizeof err);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en, 0);
    struct tg_metric ms[3] = {{.name = "a", .value = 1}, {.name = "b", .value = 2},
                              {.name = "c", .value = 3}};
    struct tg_reading rd = {.device = "d", .ts_ms = 1000, .n_metrics = 3, .metrics = ms};
    assert_int_equal(tg_engine_process(en, 0, &rd), TG_OK);
    rd.ts_ms = 2000;
    assert_int_equal(tg_engine_process(en, 0, &rd), TG_OK);
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    assert_int_equal(st.series, 2);
    assert_int_equal(st.series_refused, 2);
    assert_int_equal(st.points, 6);
    /* A snapshot of a third series is refused as well, and says why. */
    struct store sn = {0};
    tg_engine_snapshot_dirty(en, store_put, &sn);
    tg_engine_partition_add(en, 1);
    for (size_t i = 0; i < sn.n; i++)
        if (sn.v[i].key_len > 2) {
            char key[64];
            snprintf(key, sizeof key, "1/%.*s", (int)sn.v[i].key_len - 2, sn.v[i].key + 2);
            assert_int_equal(tg_engine_restore(en, key, strlen(key), sn.v[i].value,
                                               sn.v[i].value_len),
                             TG_ERR_FULL);
        }
    store_free(&sn);
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

/* A bounded snapshot (a checkpoint spread over transactions) hands out, over its calls, the
 * same records in the same order as one unbounded call, at most max_records per call, and
 * leaves other partitions' changes alone. */
struct counted {
    struct store st;
    size_t calls_records;
    char order[8192];
};

static void counted_put(void *ud, int32_t partition, const void *key, size_t key_len,
                        const void *value, size_t value_len)
{
    struct counted *c = ud;
    c->calls_records++;
    size_t used = strlen(c->order);
    snprintf(c->order + used, sizeof c->order - used, "%.*s;", (int)key_len, (const char *)key);
    store_put(&c->st, partition, key, key_len, value, value_len);
}

static bool only_p0(void *ud, int32_t partition)
{
    (void)ud;
    return partition == 0;
}

static void bounded_snapshot_equals_unbounded(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    struct rec r = {0};
    struct tg_engine *a = tg_engine_new(ec, rec_emit, &r), *b = tg_engine_new(ec, rec_emit, &r);
    for (int32_t p = 0; p < 2; p++) {
        tg_engine_partition_add(a, p);
        tg_engine_partition_add(b, p);
    }
    char dev[16];
    for (int d = 0; d < 23; d++) {
        snprintf(dev, sizeof dev, "d%02d", d);
        for (int32_t p = 0; p < 2; p++) {
            feed(a, p, dev, "t", 1000 + d, d);
            feed(b, p, dev, "t", 1000 + d, d);
        }
    }
    struct counted whole = {0}, parts = {0};
    assert_false(tg_engine_snapshot_dirty_max(a, only_p0, NULL, 0, 0, counted_put, &whole));
    assert_int_equal(tg_engine_snapshot_pending(b, only_p0, NULL), 24);
    int calls = 0;
    bool more = true;
    while (more) {
        size_t before = parts.calls_records;
        more = tg_engine_snapshot_dirty_max(b, only_p0, NULL, 5, 0, counted_put, &parts);
        assert_true(parts.calls_records - before <= 5);
        calls++;
    }
    assert_int_equal(calls, 5); /* 24 records: the partition state and 23 series */
    assert_string_equal(parts.order, whole.order);
    assert_int_equal(parts.st.n, whole.st.n);
    for (size_t i = 0; i < whole.st.n; i++) {
        assert_int_equal(parts.st.v[i].value_len, whole.st.v[i].value_len);
        assert_memory_equal(parts.st.v[i].value, whole.st.v[i].value, whole.st.v[i].value_len);
    }
    /* Partition 1's changes are all still there, and a byte bound stops as well. */
    assert_int_equal(tg_engine_snapshot_pending(b, NULL, NULL), 24);
    struct counted one = {0};
    assert_true(tg_engine_snapshot_dirty_max(b, NULL, NULL, 0, 1, counted_put, &one));
    assert_int_equal(one.calls_records, 1);
    assert_int_equal(tg_engine_snapshot_pending(b, NULL, NULL), 23);
    store_free(&whole.st);
    store_free(&parts.st);
    store_free(&one.st);
    tg_engine_destroy(a);
    tg_engine_destroy(b);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

/* Metric names are any UTF-8 the gateway accepts: quotes, backslashes, control characters
 * and slashes must survive the JSON outputs and the snapshot keys. */
static void odd_metric_names_survive_json_and_snapshots(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en, 4);
    const char *name = "a/\"b\"\\c\td\u00e9";
    feed(en, 4, "dev.1", name, 1000, 1.5);
    struct store st = {0};
    tg_engine_snapshot_dirty(en, store_put, &st);
    tg_engine_flush(en);
    assert_int_equal(r.aggregates, 1);
    json_error_t jerr;
    json_t *doc = json_loads(r.lines[0] + 2, 0, &jerr);
    if (!doc)
        fail_msg("not JSON (%s): %s", jerr.text, r.lines[0]);
    assert_string_equal(json_string_value(json_object_get(doc, "metric")), name);
    assert_string_equal(json_string_value(json_object_get(doc, "device")), "dev.1");
    json_decref(doc);
    /* The snapshot's key holds the name as is, and a new engine takes it back. */
    struct tg_engine *en2 = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en2, 4);
    for (size_t i = 0; i < st.n; i++)
        assert_int_equal(tg_engine_restore(en2, st.v[i].key, st.v[i].key_len, st.v[i].value,
                                           st.v[i].value_len),
                         TG_OK);
    struct tg_engine_stats s2;
    tg_engine_stats(en2, &s2);
    assert_int_equal(s2.series, 1);
    size_t before = r.aggregates;
    tg_engine_flush(en2); /* the restored open window, under the same name */
    assert_int_equal(r.aggregates, before + 1);
    assert_string_equal(r.lines[r.n - 1], r.lines[0]);
    store_free(&st);
    tg_engine_destroy(en2);
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

/* Dropping a partition removes its series from the table; every other series must still be
 * found afterwards (a lost one would start cold under the same key, its open alert never
 * closing). Many series, so that probe chains are long and mixed across partitions. */
static void dropping_a_partition_keeps_every_other_series_findable(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    enum { DEVICES = 20000, PARTS = 6 };
    for (int p = 0; p < PARTS; p++)
        tg_engine_partition_add(en, p);
    char id[16];
    for (int round = 0; round < 2; round++) {
        for (int d = 0; d < DEVICES; d++) {
            if (round == 1 && d % PARTS == 0)
                continue;
            snprintf(id, sizeof id, "d%05d", d);
            assert_int_equal(feed(en, d % PARTS, id, "t", 1000 + round * 1000, 1), TG_OK);
        }
        if (round == 0)
            tg_engine_partition_drop(en, 0);
        struct tg_engine_stats st;
        tg_engine_stats(en, &st);
        /* After the drop, and again after every survivor got a reading: no survivor was
         * lost and recreated. */
        assert_int_equal(st.series, DEVICES - (DEVICES + PARTS - 1) / PARTS);
    }
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_defaults_build),
        cmocka_unit_test(config_bad_number_names_file_line_key),
        cmocka_unit_test(config_drift_min_names_file_line_key),
        cmocka_unit_test(config_lateness_beyond_window_refused),
        cmocka_unit_test(windows_tumble_with_out_of_order_input),
        cmocka_unit_test(windows_emit_in_key_order_and_per_partition),
        cmocka_unit_test(spike_is_one_alert_open_then_close),
        cmocka_unit_test(restored_engine_continues_byte_for_byte),
        cmocka_unit_test(restore_refuses_garbage),
        cmocka_unit_test(idle_series_are_evicted_with_a_tombstone),
        cmocka_unit_test(series_beyond_max_series_are_counted_not_tracked),
        cmocka_unit_test(bounded_snapshot_equals_unbounded),
        cmocka_unit_test(odd_metric_names_survive_json_and_snapshots),
        cmocka_unit_test(dropping_a_partition_keeps_every_other_series_findable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
