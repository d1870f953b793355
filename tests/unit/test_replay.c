/* Unit tests for `tidegate-worker replay` (worker/replay.c): its output equals what the
 * engine computes for the same series offered as readings (the streaming path), and bad
 * lines are reported with file:line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "replay.h"
#include "test_engine_util.h"

struct expect {
    char *buf;
    size_t len;
    FILE *f;
    const char *ts_text, *v_text;
};

static void expect_point(void *ud, const struct tg_engine_point *pt)
{
    struct expect *ex = ud;
    if (strcmp(pt->device, "replay") != 0)
        return; /* a partition mate's */
    fprintf(ex->f, "%s,%s,%.6f,%s\n", ex->ts_text, ex->v_text, pt->score, pt->alert_state);
}

/* Counts the silence alerts opened for the replayed series' device. */
static void count_silence(void *ud, const struct tg_engine_output *out)
{
    size_t *n = ud;
    *n += out->kind == TG_ENGINE_ALERT && strcmp(out->alert_kind, "silence") == 0 &&
          strcmp(out->alert_state, "open") == 0 && out->key_len == 6 &&
          memcmp(out->key, "replay", 6) == 0;
}

static char *read_all(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

/* Replay against the streaming path. With hole_ms, the streaming engine runs as the worker
 * does, with a hole limit (stall_after_ms); with mates, the series has a partition mate
 * reporting every second, so that its partition never has a hole. Replay sets no limit (a
 * CSV says nothing of its partition), and its per-point output is the same in every case:
 * silence is judged in alerts, never in a point's score or state. What the limit changes is
 * whether the hour of silence is alerted: yes while the partition flows, no when the series
 * is alone on it (its gap is the partition's hole). */
static void check_replay_equals_streaming(int64_t hole_ms, bool mates)
{
    char path[] = "/tmp/test_replay_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *csv = fdopen(fd, "w");
    fprintf(csv, "timestamp,value\n");
    /* The same rows, also offered to an engine directly. */
    enum { N = 4000 };
    static char ts_text[N][32], v_text[N][32];
    struct rng g = {31};
    int64_t ts = INT64_C(1704067200000); /* 2024-01-01 00:00:00 UTC */
    for (int i = 0; i < N; i++) {
        ts += 10000;
        int64_t row_ts = ts;
        if (i % 101 == 50)
            row_ts -= 25000; /* backward */
        double v = 20 + 0.4 * rng_gauss(&g);
        if (i == 1000)
            v += 9; /* spike */
        if (i >= 2000 && i < 2050)
            v += 3; /* shift */
        if (i >= 3000 && i < 3040)
            v = 21.0; /* stuck */
        if (i == 3500)
            ts += 3600000; /* an hour of silence */
        if (i % 2) {
            time_t t = (time_t)(row_ts / 1000);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(ts_text[i], sizeof ts_text[i], "%Y-%m-%d %H:%M:%S", &tm);
        } else {
            snprintf(ts_text[i], sizeof ts_text[i], "%lld", (long long)row_ts);
        }
        snprintf(v_text[i], sizeof v_text[i], "%.17g", v);
        fprintf(csv, "%s,%s\n", ts_text[i], v_text[i]);
    }
    fclose(csv);

    /* Streaming: readings of device "replay", metric "level", partition 0. */
    char err[256];
    const char *sets[] = {"alert.update_interval_ms=0", NULL};
    struct tg_engine_config *ec = make_config(sets, err, sizeof err);
    assert_non_null(ec);
    struct expect ex = {0};
    ex.f = open_memstream(&ex.buf, &ex.len);
    fprintf(ex.f, "timestamp,value,anomaly_score,alert_state\n");
    tg_engine_config_set_partition_hole_ms(ec, hole_ms);
    size_t silences = 0;
    struct tg_engine *en = tg_engine_new(ec, count_silence, &silences);
    tg_engine_set_point_hook(en, expect_point, &ex);
    tg_engine_partition_add(en, 0);
    int64_t mate_ts = INT64_C(1704067200000);
    for (int i = 0; i < N; i++) {
        ex.ts_text = ts_text[i];
        ex.v_text = v_text[i];
        int64_t row_ts = strchr(ts_text[i], '-') ? 0 : atoll(ts_text[i]);
        if (!row_ts) {
            struct tm tm = {0};
            strptime(ts_text[i], "%Y-%m-%d %H:%M:%S", &tm);
            row_ts = (int64_t)timegm(&tm) * 1000;
        }
        for (; mates && mate_ts + 1000 <= row_ts; mate_ts += 1000) {
            struct tg_metric mm = {.name = "level", .value = 5};
            struct tg_reading mr = {.device = "mate", .ts_ms = mate_ts + 1000, .n_metrics = 1,
                                    .metrics = &mm};
            assert_int_equal(tg_engine_process(en, 0, &mr), TG_OK);
        }
        struct tg_metric m = {.name = "level", .value = strtod(v_text[i], NULL)};
        struct tg_reading rd = {.device = "replay", .ts_ms = row_ts, .n_metrics = 1, .metrics = &m};
        assert_int_equal(tg_engine_process(en, 0, &rd), TG_OK);
    }
    fclose(ex.f);
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    if (hole_ms && !mates) {
        assert_true(st.partition_gaps > 0);
        assert_int_equal(silences, 0);
    } else {
        assert_int_equal(st.partition_gaps, 0);
        assert_true(silences >= 1);
    }
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);

    /* Offline. */
    size_t n;
    const struct tg_config_key *keys = tg_engine_config_keys(&n);
    char *argv[] = {"replay", "--csv", path, "--metric", "level", "--set",
                    "alert.update_interval_ms=0", NULL};
    FILE *out = tmpfile(), *errf = tmpfile();
    assert_int_equal(tg_worker_replay_run(7, argv, keys, n, out, errf), 0);
    char *got = read_all(out);
    char *got_err = read_all(errf);
    /* Only the count of the rows offered out of order on purpose above. */
    if (!strstr(got_err, "lines not scored") || strchr(got_err, '\n') != got_err + strlen(got_err) - 1)
        fail_msg("stderr: %s", got_err);
    if (strcmp(got, ex.buf) != 0) {
        size_t i = 0;
        while (got[i] == ex.buf[i])
            i++;
        fail_msg("replay differs at byte %zu:\n got  %.120s\n want %.120s", i, got + i, ex.buf + i);
    }
    /* And the series did hold incidents, each visible in the alert_state column. */
    assert_non_null(strstr(got, ",open\n"));
    assert_non_null(strstr(got, ",close\n"));
    assert_int_equal(strlen(got), ex.len);
    free(got);
    free(got_err);
    free(ex.buf);
    fclose(out);
    fclose(errf);
    unlink(path);
}

static void replay_equals_streaming(void **state)
{
    (void)state;
    check_replay_equals_streaming(0, false);
}

static void replay_equals_streaming_with_the_hole_limit(void **state)
{
    (void)state;
    check_replay_equals_streaming(2000, true);  /* the partition flows: silence alerted */
    check_replay_equals_streaming(2000, false); /* alone: every gap a hole, none alerted */
}

static void replay_reports_bad_lines_with_file_and_line(void **state)
{
    (void)state;
    char path[] = "/tmp/test_replay_XXXXXX";
    int fd = mkstemp(path);
    FILE *csv = fdopen(fd, "w");
    fprintf(csv, "timestamp,value\n2024-01-01 00:00:00,1\n\n# note\n2024-01-01 00:00:10,abc\n");
    fclose(csv);
    size_t n;
    const struct tg_config_key *keys = tg_engine_config_keys(&n);
    char *argv[] = {"replay", "--csv", path, NULL};
    FILE *out = tmpfile(), *errf = tmpfile();
    assert_int_equal(tg_worker_replay_run(3, argv, keys, n, out, errf), 1);
    char *e = read_all(errf);
    char want[128];
    snprintf(want, sizeof want, "%s:5: expected 'timestamp,value'", path);
    if (!strstr(e, want))
        fail_msg("stderr: %s", e);
    free(e);
    fclose(out);
    fclose(errf);
    /* Usage and config errors: exit status 2. */
    char *bad[] = {"replay", "--csv", path, "--set", "alert.threshold=2", NULL};
    out = tmpfile();
    errf = tmpfile();
    assert_int_equal(tg_worker_replay_run(5, bad, keys, n, out, errf), 2);
    e = read_all(errf);
    assert_non_null(strstr(e, "[alert] threshold"));
    free(e);
    /* A metric name the engine could not take: a usage error before any line is read. */
    static char long_name[1100];
    memset(long_name, 'm', sizeof long_name - 1);
    char *bad_metric[] = {"replay", "--csv", path, "--metric", long_name, NULL};
    fclose(out);
    fclose(errf);
    out = tmpfile();
    errf = tmpfile();
    assert_int_equal(tg_worker_replay_run(5, bad_metric, keys, n, out, errf), 2);
    e = read_all(errf);
    if (!strstr(e, "--metric 'mmm") || !strstr(e, "too long"))
        fail_msg("stderr: %s", e);
    free(e);
    fclose(out);
    fclose(errf);
    out = tmpfile();
    errf = tmpfile();
    char *none[] = {"replay", NULL};
    assert_int_equal(tg_worker_replay_run(1, none, keys, n, out, errf), 2);
    fclose(out);
    fclose(errf);
    unlink(path);
}

/* Runs replay over text; returns its exit status, *out_text and *err_text (to free). */
static int replay_text(const char *text, char **out_text, char **err_text)
{
    char path[] = "/tmp/test_replay_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *csv = fdopen(fd, "w");
    fputs(text, csv);
    fclose(csv);
    size_t n;
    const struct tg_config_key *keys = tg_engine_config_keys(&n);
    char *argv[] = {"replay", "--csv", path, NULL};
    FILE *out = tmpfile(), *errf = tmpfile();
    int rc = tg_worker_replay_run(3, argv, keys, n, out, errf);
    *out_text = read_all(out);
    *err_text = read_all(errf);
    fclose(out);
    fclose(errf);
    unlink(path);
    return rc;
}

/* Input a spreadsheet or a hand edit produces: a byte order mark, CRLF, a first row with a
 * mistake, dates that do not exist. No row of data is dropped in silence, and no timestamp
 * is moved to another day. */
static void replay_refuses_what_it_cannot_read_exactly(void **state)
{
    (void)state;
    char *out, *err;
    /* A BOM before the first row of data (no header): the row is data, not a header. */
    assert_int_equal(replay_text("\xEF\xBB\xBF" "1700000000000,1.5\r\n1700000001000,1.6\r\n", &out,
                                 &err), 0);
    assert_non_null(strstr(out, "\n1700000000000,1.5,"));
    assert_non_null(strstr(out, "\n1700000001000,1.6,"));
    free(out);
    free(err);
    /* A BOM before a header, with CRLF. */
    assert_int_equal(replay_text("\xEF\xBB\xBF" "timestamp,value\r\n2024-02-29 00:00:00,1\r\n", &out,
                                 &err), 0);
    assert_non_null(strstr(out, "\n2024-02-29 00:00:00,1,"));
    free(out);
    free(err);
    /* Rows that must stop replay with FILE:LINE, each alone: a bad first row is not a
     * header; month 13; February 31 and 29 of a common year; a negative hour; hex. */
    static const char *const bad[] = {
        "2026-13-01 00:00:00,1\n2026-01-01 00:00:01,2\n",
        "timestamp,value\n2026-02-31 00:00:01,2\n",
        "timestamp,value\n2023-02-29 00:00:00,2\n",
        "timestamp,value\n2026-01-01 -1:00:00,1\n",
        "timestamp,value\n2026-01-01 +1:00:00,1\n",
        "timestamp,value\n1700000000000,0x10\n",
    };
    static const char *const where[] = {":1: expected", ":2: expected", ":2: expected",
                                        ":2: expected", ":2: expected", ":2: expected"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (replay_text(bad[i], &out, &err) != 1 || !strstr(err, where[i]))
            fail_msg("case %zu: stdout '%s' stderr '%s'", i, out, err);
        free(out);
        free(err);
    }
    /* Lines not later than the one before: echoed with score 0, and counted on stderr. */
    assert_int_equal(replay_text("timestamp,value\n1000,1\n2000,2\n2000,3\n1500,4\n3000,5\n",
                                 &out, &err), 0);
    assert_non_null(strstr(out, "\n1500,4,0.000000,\n"));
    if (!strstr(err, ": 2 lines not scored: timestamp not after the line before"))
        fail_msg("stderr: %s", err);
    free(out);
    free(err);
    /* An event time the engine cannot take is reported as such. */
    assert_int_equal(replay_text("timestamp,value\n-9007199254740993,1\n", &out, &err), 1);
    assert_non_null(strstr(err, ":2: not processed"));
    assert_non_null(strstr(err, "2^53"));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replay_equals_streaming),
        cmocka_unit_test(replay_equals_streaming_with_the_hole_limit),
        cmocka_unit_test(replay_reports_bad_lines_with_file_and_line),
        cmocka_unit_test(replay_refuses_what_it_cannot_read_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
